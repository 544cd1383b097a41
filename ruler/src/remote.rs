//! The ruler's HTTP clients: a [`QueryEngine`] over the Prometheus query API of one or
//! more queriers (`--query`, tried in order until one answers, as Thanos's ruler does)
//! and an [`Appender`] that sends remote write 1.0 (snappy protobuf) to the ingest
//! path, with the tenant in `X-Scope-OrgID`, retrying 5xx, 429 and network errors.

use std::time::Duration;

use strata_proto::prometheus::{
    BucketSpan, Histogram, Label, Sample as PbSample, TimeSeries, WriteRequest,
};
use strata_tsdb::labels::Labels;

use crate::{Appender, BoxFuture, Error, QueryEngine, Sample};

/// Queries over HTTP.
#[derive(Debug, Clone)]
pub struct HttpQueryEngine {
    urls: Vec<String>,
    client: reqwest::Client,
    timeout: Duration,
}

impl HttpQueryEngine {
    pub fn new(urls: Vec<String>, timeout: Duration) -> HttpQueryEngine {
        HttpQueryEngine {
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            client: reqwest::Client::new(),
            timeout,
        }
    }

    async fn query_one(
        &self,
        base: &str,
        tenant: &str,
        expr: &str,
        t: i64,
    ) -> Result<Vec<Sample>, Error> {
        let body = format!(
            "query={}&time={}",
            crate::group::query_escape(expr),
            format_args!("{}.{:03}", t.div_euclid(1000), t.rem_euclid(1000))
        );
        let resp = self
            .client
            .post(format!("{base}/api/v1/query"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Scope-OrgID", tenant)
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Query(format!("{base}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::Query(format!("{base}: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| Error::Query(format!("{base}: {status}: {}", text.trim())))?;
        if v["status"] != "success" {
            return Err(Error::Query(
                v["error"].as_str().unwrap_or(text.trim()).to_string(),
            ));
        }
        parse_result(&v["data"], t)
    }
}

fn parse_value(s: &serde_json::Value) -> f64 {
    match s.as_str() {
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(x) => x.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

fn parse_result(data: &serde_json::Value, t: i64) -> Result<Vec<Sample>, Error> {
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let labels = Labels::from_pairs(
                    s["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))),
                );
                match s.get("histogram") {
                    Some(h) => Ok(Sample {
                        h: Some(Box::new(parse_histogram(&h[1]).map_err(|e| {
                            Error::Query(format!("rule result {labels}: histogram: {e}"))
                        })?)),
                        ..Sample::float(labels, t, 0.0)
                    }),
                    None => Ok(Sample::float(labels, t, parse_value(&s["value"][1]))),
                }
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample::float(
            Labels::new(),
            t,
            parse_value(&data["result"][1]),
        )]),
        _ => Err(Error::Query("rule result is not a vector or scalar".into())),
    }
}

/// A native histogram from the query API's JSON (`{"count","sum","buckets"}`, buckets
/// as `[boundary_rule, lower, upper, count]`), back into spans and counts.
fn parse_histogram(h: &serde_json::Value) -> Result<strata_promql::FloatHistogram, String> {
    let mut buckets = Vec::new();
    for b in h["buckets"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
    {
        let rule = b[0].as_u64().ok_or_else(|| format!("bad bucket {b}"))?;
        buckets.push(strata_promql::histogram::Bucket {
            lower: parse_value(&b[1]),
            upper: parse_value(&b[2]),
            count: parse_value(&b[3]),
            lower_inclusive: rule == 1 || rule == 3,
            upper_inclusive: rule == 0 || rule == 3,
        });
    }
    strata_promql::histogram::from_buckets(
        parse_value(&h["count"]),
        parse_value(&h["sum"]),
        &buckets,
    )
}

impl QueryEngine for HttpQueryEngine {
    fn instant<'a>(
        &'a self,
        tenant: &'a str,
        expr: &'a str,
        t: i64,
    ) -> BoxFuture<'a, Result<Vec<Sample>, Error>> {
        Box::pin(async move {
            let mut last = Error::Query("no --query URL".into());
            for u in &self.urls {
                match self.query_one(u, tenant, expr, t).await {
                    Ok(v) => return Ok(v),
                    // A query the engine refused fails the same everywhere.
                    Err(e) if !e.to_string().starts_with(u.as_str()) => return Err(e),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }
}

/// Remote write 1.0 to `url` (`…/api/v1/push`).
#[derive(Debug, Clone)]
pub struct RemoteWriter {
    url: String,
    client: reqwest::Client,
    timeout: Duration,
}

impl RemoteWriter {
    pub fn new(url: String, timeout: Duration) -> RemoteWriter {
        RemoteWriter {
            url,
            client: reqwest::Client::new(),
            timeout,
        }
    }
}

/// The remote write body of `samples`, one series per label set (native histogram
/// samples as float histograms, with the engine's counter-reset hint).
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    let mut by_series: std::collections::BTreeMap<&Labels, TimeSeries> = Default::default();
    for s in samples {
        let ts = by_series.entry(&s.labels).or_default();
        match &s.h {
            Some(h) => ts.histograms.push(histogram_proto(s.t, h)),
            None => ts.samples.push(PbSample {
                value: s.v,
                timestamp: s.t,
            }),
        }
    }
    let req = WriteRequest {
        timeseries: by_series
            .into_iter()
            .map(|(l, mut ts)| {
                ts.samples.sort_by_key(|s| s.timestamp);
                ts.histograms.sort_by_key(|h| h.timestamp);
                ts.labels = l
                    .iter()
                    .map(|l| Label {
                        name: l.name.to_string(),
                        value: l.value.to_string(),
                    })
                    .collect();
                ts
            })
            .collect(),
        ..Default::default()
    };
    strata_proto::encode_write_request(&req)
}

/// Remote write's message for a float histogram (Prometheus's
/// `FloatHistogramToHistogramProto`).
fn histogram_proto(t: i64, h: &strata_promql::FloatHistogram) -> Histogram {
    use strata_proto::prometheus::histogram::{Count, ZeroCount};
    let spans = |s: &[strata_tsdb::histogram::Span]| {
        s.iter()
            .map(|s| BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    Histogram {
        count: Some(Count::CountFloat(h.count)),
        zero_count: Some(ZeroCount::ZeroCountFloat(h.zero_count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        positive_spans: spans(&h.positive_spans),
        positive_counts: h.positive_buckets.clone(),
        negative_spans: spans(&h.negative_spans),
        negative_counts: h.negative_buckets.clone(),
        reset_hint: h.counter_reset_hint as i32,
        custom_values: h.custom_values.clone(),
        timestamp: t,
        ..Default::default()
    }
}

impl Appender for RemoteWriter {
    fn append<'a>(
        &'a self,
        tenant: &'a str,
        samples: Vec<Sample>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let body = encode(&samples);
            let mut backoff = Duration::from_millis(100);
            let mut last = String::new();
            for _ in 0..4 {
                let r = self
                    .client
                    .post(&self.url)
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .header("User-Agent", "strata-ruler")
                    .header("X-Scope-OrgID", tenant)
                    .timeout(self.timeout)
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => return Ok(()),
                    Ok(resp) => {
                        let status = resp.status();
                        let text = resp.text().await.unwrap_or_default();
                        last = format!("{}: {status}: {}", self.url, text.trim());
                        // Prometheus's rule: only 5xx and 429 are worth retrying.
                        if status.is_client_error() && status.as_u16() != 429 {
                            return Err(Error::Write(last));
                        }
                    }
                    Err(e) => last = format!("{}: {e}", self.url),
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(Error::Write(last))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_parse() {
        let v: serde_json::Value = serde_json::from_str(r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1,"+Inf"]}]}"#).unwrap();
        let r = parse_result(&v, 5).unwrap();
        assert_eq!(r[0].labels.get("job"), Some("a"));
        assert_eq!(r[0].v, f64::INFINITY);
        let v: serde_json::Value =
            serde_json::from_str(r#"{"resultType":"scalar","result":[1,"2"]}"#).unwrap();
        assert_eq!(parse_result(&v, 5).unwrap()[0].v, 2.0);
        // a native histogram: schema 0 bucket 1 (1, 2] and a zero bucket
        let h: serde_json::Value = serde_json::from_str(r#"{"resultType":"vector","result":[{"metric":{"job":"a"},"histogram":[1,{"count":"3","sum":"3","buckets":[[3,"-0.001","0.001","1"],[0,"1","2","2"]]}]}]}"#).unwrap();
        let r = parse_result(&h, 5).unwrap();
        let got = r[0].h.as_deref().unwrap();
        assert_eq!((r[0].v, got.schema, got.zero_threshold), (0.0, 0, 0.001));
        assert_eq!((got.count, got.sum, got.zero_count), (3.0, 3.0, 1.0));
        assert_eq!(got.positive_buckets, [2.0]);
        assert_eq!(got.positive_spans[0].offset, 1);
        let bad: serde_json::Value = serde_json::from_str(r#"{"resultType":"vector","result":[{"metric":{"job":"a"},"histogram":[1,{"count":"2","sum":"3","buckets":[[0,"1","3","2"]]}]}]}"#).unwrap();
        let e = parse_result(&bad, 5).unwrap_err().to_string();
        assert!(e.contains(r#"rule result {job="a"}: histogram"#), "{e}");
        let v: serde_json::Value =
            serde_json::from_str(r#"{"resultType":"string","result":[1,"x"]}"#).unwrap();
        assert!(parse_result(&v, 5).is_err());
    }
}
