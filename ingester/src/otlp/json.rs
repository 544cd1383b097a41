//! OTLP/JSON (the protobuf JSON mapping OTLP specifies) into the prost messages:
//! lowerCamelCase names (the proto names are accepted too), 64-bit integers as strings
//! or numbers, enums as numbers, trace and span ids as hex, `bytesValue` as base64.
//! Unknown fields are ignored, as the specification asks.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use strata_proto::otlp::collector::ExportMetricsServiceRequest;
use strata_proto::otlp::common::{self as c, any_value};
use strata_proto::otlp::metrics::{
    self as m, exemplar, exponential_histogram_data_point, metric, number_data_point,
    summary_data_point,
};

/// Decode an OTLP/JSON `ExportMetricsServiceRequest`.
pub fn decode(body: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
    let r: Request = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(ExportMetricsServiceRequest {
        resource_metrics: r.resource_metrics.into_iter().map(Into::into).collect(),
    })
}

/// A 64-bit integer as a JSON string or number.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
        F(f64),
    }
    match N::deserialize(d)? {
        N::S(s) => s.parse().map_err(de::Error::custom),
        N::I(i) => Ok(i),
        N::F(f) if f.fract() == 0.0 => Ok(f as i64),
        N::F(f) => Err(de::Error::custom(format!("{f} is not an integer"))),
    }
}

fn uint64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        U(u64),
    }
    match N::deserialize(d)? {
        N::S(s) => s.parse().map_err(de::Error::custom),
        N::U(u) => Ok(u),
    }
}

fn uint64s<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "uint64")] u64);
    Ok(Vec::<W>::deserialize(d)?.into_iter().map(|w| w.0).collect())
}

/// A double as a number or one of protobuf JSON's strings (`"NaN"`, `"Infinity"`).
fn double<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        F(f64),
        S(String),
    }
    match N::deserialize(d)? {
        N::F(f) => Ok(f),
        N::S(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => s.parse().map_err(de::Error::custom),
        },
    }
}

fn opt_double<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    double(d).map(Some)
}

fn doubles<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "double")] f64);
    Ok(Vec::<W>::deserialize(d)?.into_iter().map(|w| w.0).collect())
}

fn hex_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
    let s = String::deserialize(d)?;
    if !s.len().is_multiple_of(2) {
        return Err(de::Error::custom(format!("{s:?} is not hex")));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map(bytes::Bytes::from)
        .map_err(|_| de::Error::custom(format!("{s:?} is not hex")))
}

fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
    let s = String::deserialize(d)?;
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for ch in s.bytes().filter(|&b| b != b'=') {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(de::Error::custom("invalid base64 in bytesValue")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(bytes::Bytes::from(out))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    #[serde(default, alias = "resource_metrics")]
    resource_metrics: Vec<ResourceMetrics>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceMetrics {
    #[serde(default)]
    resource: Option<Resource>,
    #[serde(default, alias = "scope_metrics")]
    scope_metrics: Vec<ScopeMetrics>,
    #[serde(default, alias = "schema_url")]
    schema_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScopeMetrics {
    #[serde(default)]
    scope: Option<Scope>,
    #[serde(default)]
    metrics: Vec<Metric>,
    #[serde(default, alias = "schema_url")]
    schema_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Scope {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: Option<AnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AnyValue {
    #[serde(default, alias = "string_value")]
    string_value: Option<String>,
    #[serde(default, alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(default, alias = "int_value", deserialize_with = "opt_int64")]
    int_value: Option<i64>,
    #[serde(default, alias = "double_value", deserialize_with = "opt_double")]
    double_value: Option<f64>,
    #[serde(default, alias = "array_value")]
    array_value: Option<Values>,
    #[serde(default, alias = "kvlist_value")]
    kvlist_value: Option<KvList>,
    #[serde(default, alias = "bytes_value", deserialize_with = "opt_base64")]
    bytes_value: Option<bytes::Bytes>,
}

fn opt_int64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    int64(d).map(Some)
}

fn opt_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bytes::Bytes>, D::Error> {
    base64_bytes(d).map(Some)
}

#[derive(Deserialize)]
struct Values {
    #[serde(default)]
    values: Vec<AnyValue>,
}

#[derive(Deserialize)]
struct KvList {
    #[serde(default)]
    values: Vec<KeyValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metric {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    gauge: Option<Gauge>,
    #[serde(default)]
    sum: Option<Sum>,
    #[serde(default)]
    histogram: Option<Histogram>,
    #[serde(default, alias = "exponential_histogram")]
    exponential_histogram: Option<ExpHistogram>,
    #[serde(default)]
    summary: Option<Summary>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Gauge {
    #[serde(default, alias = "data_points")]
    data_points: Vec<NumberPoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sum {
    #[serde(default, alias = "data_points")]
    data_points: Vec<NumberPoint>,
    #[serde(
        default,
        alias = "aggregation_temporality",
        deserialize_with = "temporality"
    )]
    aggregation_temporality: i32,
    #[serde(default, alias = "is_monotonic")]
    is_monotonic: bool,
}

/// An enum as its number or its name.
fn temporality<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum E {
        I(i32),
        S(String),
    }
    match E::deserialize(d)? {
        E::I(i) => Ok(i),
        E::S(s) => m::AggregationTemporality::from_str_name(&s)
            .map(|t| t as i32)
            .ok_or_else(|| de::Error::custom(format!("unknown aggregation temporality {s:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Histogram {
    #[serde(default, alias = "data_points")]
    data_points: Vec<HistogramPoint>,
    #[serde(
        default,
        alias = "aggregation_temporality",
        deserialize_with = "temporality"
    )]
    aggregation_temporality: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpHistogram {
    #[serde(default, alias = "data_points")]
    data_points: Vec<ExpHistogramPoint>,
    #[serde(
        default,
        alias = "aggregation_temporality",
        deserialize_with = "temporality"
    )]
    aggregation_temporality: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    #[serde(default, alias = "data_points")]
    data_points: Vec<SummaryPoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NumberPoint {
    #[serde(default)]
    attributes: Vec<KeyValue>,
    #[serde(default, alias = "start_time_unix_nano", deserialize_with = "uint64")]
    start_time_unix_nano: u64,
    #[serde(default, alias = "time_unix_nano", deserialize_with = "uint64")]
    time_unix_nano: u64,
    #[serde(default, alias = "as_double", deserialize_with = "opt_double")]
    as_double: Option<f64>,
    #[serde(default, alias = "as_int", deserialize_with = "opt_int64")]
    as_int: Option<i64>,
    #[serde(default)]
    exemplars: Vec<Exemplar>,
    #[serde(default)]
    flags: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpHistogramPoint {
    #[serde(default)]
    attributes: Vec<KeyValue>,
    #[serde(default, alias = "start_time_unix_nano", deserialize_with = "uint64")]
    start_time_unix_nano: u64,
    #[serde(default, alias = "time_unix_nano", deserialize_with = "uint64")]
    time_unix_nano: u64,
    #[serde(default, deserialize_with = "uint64")]
    count: u64,
    #[serde(default, deserialize_with = "opt_double")]
    sum: Option<f64>,
    #[serde(default)]
    scale: i32,
    #[serde(default, alias = "zero_count", deserialize_with = "uint64")]
    zero_count: u64,
    #[serde(default)]
    positive: Option<ExpBuckets>,
    #[serde(default)]
    negative: Option<ExpBuckets>,
    #[serde(default)]
    exemplars: Vec<Exemplar>,
    #[serde(default)]
    flags: u32,
    #[serde(default, alias = "zero_threshold", deserialize_with = "double")]
    zero_threshold: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpBuckets {
    #[serde(default)]
    offset: i32,
    #[serde(default, alias = "bucket_counts", deserialize_with = "uint64s")]
    bucket_counts: Vec<u64>,
}

impl From<ExpBuckets> for exponential_histogram_data_point::Buckets {
    fn from(b: ExpBuckets) -> Self {
        exponential_histogram_data_point::Buckets {
            offset: b.offset,
            bucket_counts: b.bucket_counts,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistogramPoint {
    #[serde(default)]
    attributes: Vec<KeyValue>,
    #[serde(default, alias = "start_time_unix_nano", deserialize_with = "uint64")]
    start_time_unix_nano: u64,
    #[serde(default, alias = "time_unix_nano", deserialize_with = "uint64")]
    time_unix_nano: u64,
    #[serde(default, deserialize_with = "uint64")]
    count: u64,
    #[serde(default, deserialize_with = "opt_double")]
    sum: Option<f64>,
    #[serde(default, alias = "bucket_counts", deserialize_with = "uint64s")]
    bucket_counts: Vec<u64>,
    #[serde(default, alias = "explicit_bounds", deserialize_with = "doubles")]
    explicit_bounds: Vec<f64>,
    #[serde(default)]
    exemplars: Vec<Exemplar>,
    #[serde(default)]
    flags: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SummaryPoint {
    #[serde(default)]
    attributes: Vec<KeyValue>,
    #[serde(default, alias = "start_time_unix_nano", deserialize_with = "uint64")]
    start_time_unix_nano: u64,
    #[serde(default, alias = "time_unix_nano", deserialize_with = "uint64")]
    time_unix_nano: u64,
    #[serde(default, deserialize_with = "uint64")]
    count: u64,
    #[serde(default, deserialize_with = "double")]
    sum: f64,
    #[serde(default, alias = "quantile_values")]
    quantile_values: Vec<Quantile>,
    #[serde(default)]
    flags: u32,
}

#[derive(Deserialize)]
struct Quantile {
    #[serde(default, deserialize_with = "double")]
    quantile: f64,
    #[serde(default, deserialize_with = "double")]
    value: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Exemplar {
    #[serde(default, alias = "filtered_attributes")]
    filtered_attributes: Vec<KeyValue>,
    #[serde(default, alias = "time_unix_nano", deserialize_with = "uint64")]
    time_unix_nano: u64,
    #[serde(default, alias = "span_id", deserialize_with = "hex_bytes")]
    span_id: bytes::Bytes,
    #[serde(default, alias = "trace_id", deserialize_with = "hex_bytes")]
    trace_id: bytes::Bytes,
    #[serde(default, alias = "as_double", deserialize_with = "opt_double")]
    as_double: Option<f64>,
    #[serde(default, alias = "as_int", deserialize_with = "opt_int64")]
    as_int: Option<i64>,
}

impl From<KeyValue> for c::KeyValue {
    fn from(kv: KeyValue) -> Self {
        c::KeyValue {
            key: kv.key,
            value: kv.value.map(Into::into),
            ..Default::default()
        }
    }
}

impl From<AnyValue> for c::AnyValue {
    fn from(v: AnyValue) -> Self {
        use any_value::Value as V;
        let value = if let Some(s) = v.string_value {
            Some(V::StringValue(s))
        } else if let Some(b) = v.bool_value {
            Some(V::BoolValue(b))
        } else if let Some(i) = v.int_value {
            Some(V::IntValue(i))
        } else if let Some(d) = v.double_value {
            Some(V::DoubleValue(d))
        } else if let Some(a) = v.array_value {
            Some(V::ArrayValue(c::ArrayValue {
                values: a.values.into_iter().map(Into::into).collect(),
            }))
        } else if let Some(kv) = v.kvlist_value {
            Some(V::KvlistValue(c::KeyValueList {
                values: kv.values.into_iter().map(Into::into).collect(),
            }))
        } else {
            v.bytes_value.map(V::BytesValue)
        };
        c::AnyValue { value }
    }
}

fn kvs(v: Vec<KeyValue>) -> Vec<c::KeyValue> {
    v.into_iter().map(Into::into).collect()
}

impl From<Exemplar> for m::Exemplar {
    fn from(e: Exemplar) -> Self {
        m::Exemplar {
            filtered_attributes: kvs(e.filtered_attributes),
            time_unix_nano: e.time_unix_nano,
            span_id: e.span_id,
            trace_id: e.trace_id,
            value: match (e.as_double, e.as_int) {
                (Some(d), _) => Some(exemplar::Value::AsDouble(d)),
                (None, Some(i)) => Some(exemplar::Value::AsInt(i)),
                _ => None,
            },
        }
    }
}

impl From<NumberPoint> for m::NumberDataPoint {
    fn from(p: NumberPoint) -> Self {
        m::NumberDataPoint {
            attributes: kvs(p.attributes),
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            exemplars: p.exemplars.into_iter().map(Into::into).collect(),
            flags: p.flags,
            value: match (p.as_double, p.as_int) {
                (Some(d), _) => Some(number_data_point::Value::AsDouble(d)),
                (None, Some(i)) => Some(number_data_point::Value::AsInt(i)),
                _ => None,
            },
        }
    }
}

impl From<Metric> for m::Metric {
    fn from(x: Metric) -> Self {
        let data = if let Some(g) = x.gauge {
            Some(metric::Data::Gauge(m::Gauge {
                data_points: g.data_points.into_iter().map(Into::into).collect(),
            }))
        } else if let Some(s) = x.sum {
            Some(metric::Data::Sum(m::Sum {
                data_points: s.data_points.into_iter().map(Into::into).collect(),
                aggregation_temporality: s.aggregation_temporality,
                is_monotonic: s.is_monotonic,
            }))
        } else if let Some(h) = x.histogram {
            Some(metric::Data::Histogram(m::Histogram {
                data_points: h
                    .data_points
                    .into_iter()
                    .map(|p| m::HistogramDataPoint {
                        attributes: kvs(p.attributes),
                        start_time_unix_nano: p.start_time_unix_nano,
                        time_unix_nano: p.time_unix_nano,
                        count: p.count,
                        sum: p.sum,
                        bucket_counts: p.bucket_counts,
                        explicit_bounds: p.explicit_bounds,
                        exemplars: p.exemplars.into_iter().map(Into::into).collect(),
                        flags: p.flags,
                        min: None,
                        max: None,
                    })
                    .collect(),
                aggregation_temporality: h.aggregation_temporality,
            }))
        } else if let Some(h) = x.exponential_histogram {
            Some(metric::Data::ExponentialHistogram(
                m::ExponentialHistogram {
                    data_points: h
                        .data_points
                        .into_iter()
                        .map(|p| m::ExponentialHistogramDataPoint {
                            attributes: kvs(p.attributes),
                            start_time_unix_nano: p.start_time_unix_nano,
                            time_unix_nano: p.time_unix_nano,
                            count: p.count,
                            sum: p.sum,
                            scale: p.scale,
                            zero_count: p.zero_count,
                            positive: p.positive.map(Into::into),
                            negative: p.negative.map(Into::into),
                            flags: p.flags,
                            exemplars: p.exemplars.into_iter().map(Into::into).collect(),
                            zero_threshold: p.zero_threshold,
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: h.aggregation_temporality,
                },
            ))
        } else {
            x.summary.map(|s| {
                metric::Data::Summary(m::Summary {
                    data_points: s
                        .data_points
                        .into_iter()
                        .map(|p| m::SummaryDataPoint {
                            attributes: kvs(p.attributes),
                            start_time_unix_nano: p.start_time_unix_nano,
                            time_unix_nano: p.time_unix_nano,
                            count: p.count,
                            sum: p.sum,
                            quantile_values: p
                                .quantile_values
                                .into_iter()
                                .map(|q| summary_data_point::ValueAtQuantile {
                                    quantile: q.quantile,
                                    value: q.value,
                                })
                                .collect(),
                            flags: p.flags,
                        })
                        .collect(),
                })
            })
        };
        m::Metric {
            name: x.name,
            description: x.description,
            unit: x.unit,
            metadata: Vec::new(),
            data,
        }
    }
}

impl From<ResourceMetrics> for m::ResourceMetrics {
    fn from(r: ResourceMetrics) -> Self {
        m::ResourceMetrics {
            resource: r.resource.map(|r| strata_proto::otlp::resource::Resource {
                attributes: kvs(r.attributes),
                ..Default::default()
            }),
            scope_metrics: r
                .scope_metrics
                .into_iter()
                .map(|s| m::ScopeMetrics {
                    scope: s.scope.map(|s| c::InstrumentationScope {
                        name: s.name,
                        version: s.version,
                        attributes: kvs(s.attributes),
                        ..Default::default()
                    }),
                    metrics: s.metrics.into_iter().map(Into::into).collect(),
                    schema_url: s.schema_url,
                })
                .collect(),
            schema_url: r.schema_url,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_json_mapping() {
        let body = br#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}},{"key":"n","value":{"intValue":"42"}}]},
          "scopeMetrics":[{"scope":{"name":"s"},"metrics":[
            {"name":"c","unit":"1","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
               {"asInt":"7","timeUnixNano":"1700000000000000000","exemplars":[{"traceId":"0af7651916cd43dd8448eb211c80319c","asDouble":1.5,"timeUnixNano":"1700000000000000000"}]}]}},
            {"name":"h","histogram":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","dataPoints":[
               {"count":"3","sum":2.5,"bucketCounts":["1","2"],"explicitBounds":[1],"timeUnixNano":1700000000000000000}]}}]}]}]}"#;
        let r = decode(body).unwrap();
        let rm = &r.resource_metrics[0];
        let attrs = &rm.resource.as_ref().unwrap().attributes;
        assert_eq!(
            attrs[1].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(42))
        );
        let ms = &rm.scope_metrics[0].metrics;
        let Some(metric::Data::Sum(s)) = &ms[0].data else {
            panic!("not a sum")
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsInt(7))
        );
        assert_eq!(s.data_points[0].time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.data_points[0].exemplars[0].trace_id.len(), 16);
        let Some(metric::Data::Histogram(h)) = &ms[1].data else {
            panic!("not a histogram")
        };
        assert_eq!(h.aggregation_temporality, 2);
        assert_eq!(h.data_points[0].bucket_counts, vec![1, 2]);
        assert!(decode(b"{\"resourceMetrics\":[{\"scopeMetrics\":[{\"metrics\":[{\"name\":\"x\",\"sum\":{\"dataPoints\":[{\"asInt\":\"x\"}]}}]}]}]}").is_err());
    }
}
