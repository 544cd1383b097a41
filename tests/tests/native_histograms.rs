//! Native histograms end to end on the real binaries: `strata tools loadgen
//! --native-histograms` sends the same remote-write stream (integer histograms, schema 3,
//! growing counters, new buckets now and then) to a real Prometheus 2.42 started with
//! `--enable-feature=native-histograms` and to `strata all`; raw selectors and
//! histogram functions answer the same in both. Histograms acknowledged before a
//! `kill -9` answer the same after the restart (WAL replay).

use std::process::Command;

use serde_json::Value;
use strata_proto::prometheus::histogram::Count;
use strata_proto::prometheus::read_request::ResponseType;
use strata_proto::prometheus::{
    chunk, label_matcher, ChunkedReadResponse, ChunkedSeries, LabelMatcher, Query, ReadRequest,
    ReadResponse,
};
use strata_proto::Message;
use strata_testkit::http::{encode, get_json, post_bytes};
use strata_testkit::procs::{strata_bin, Prometheus};
use strata_testkit::strata::StrataProc;

const HIST: &str = "loadgen_metric_2_seconds";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Run loadgen against `url`: 30 series (10 native histograms), 40 scrapes 15 s apart
/// ending at `end`; the same arguments give the same requests.
fn loadgen(url: &str, protocol: &str, end: i64) {
    let out = Command::new(strata_bin())
        .args(["tools", "loadgen", "--native-histograms", "--url", url])
        .args(["--protocol", protocol, "--series", "30", "--metrics", "3"])
        .args(["--scrapes", "40", "--interval", "15s", "--shards", "2"])
        .args(["--end-time", &end.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["samples_sent"], 1200, "{report}");
    assert_eq!(report["samples_failed"], 0, "{report}");
}

fn strata_query(s: &StrataProc, expr: &str, t: i64) -> Value {
    let v = get_json(&format!(
        "{}/api/v1/query?query={}&time={}.{:03}",
        s.url(),
        encode(expr),
        t / 1000,
        t % 1000
    ));
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"].clone()
}

/// A number of the JSON answer (strings hold floats).
fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => match s.as_str() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            s => s.parse().unwrap(),
        },
        v => v.as_f64().unwrap(),
    }
}

/// An instant vector as (labels, timestamp, float or histogram numbers), sorted.
fn normalize(result: &Value) -> Vec<(String, f64, Vec<f64>)> {
    let mut out: Vec<(String, f64, Vec<f64>)> = result
        .as_array()
        .unwrap_or_else(|| panic!("not a vector: {result}"))
        .iter()
        .map(|s| {
            let labels = s["metric"].to_string();
            if let Some(h) = s.get("histogram") {
                let body = &h[1];
                let mut v = vec![num(&body["count"]), num(&body["sum"])];
                for b in body["buckets"].as_array().cloned().unwrap_or_default() {
                    v.extend(b.as_array().unwrap().iter().map(num));
                }
                (labels, num(&h[0]), v)
            } else {
                (labels, num(&s["value"][0]), vec![num(&s["value"][1])])
            }
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Prometheus 3's `histogram_quantile` of a native histogram's JSON body (positive
/// buckets only): the rank's bucket, interpolated exponentially inside it (linearly
/// in the zero bucket). Also the bucket's bounds.
fn quantile_exponential(q: f64, body: &Value) -> (f64, (f64, f64)) {
    let buckets: Vec<(f64, f64, f64)> = body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (num(&b[1]), num(&b[2]), num(&b[3])))
        .collect();
    let total: f64 = buckets.iter().map(|b| b.2).sum();
    let rank = q * total;
    let mut seen = 0.0;
    for &(lo, hi, c) in &buckets {
        if seen + c >= rank {
            let frac = (rank - seen) / c;
            let v = if lo > 0.0 {
                lo * (hi / lo).powf(frac)
            } else {
                lo + (hi - lo) * frac
            };
            return (v, (lo, hi));
        }
        seen += c;
    }
    panic!("rank {rank} beyond the buckets of {body}");
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn assert_same(expr: &str, prom: &Value, strata: &Value) {
    let (p, s) = (normalize(prom), normalize(strata));
    let same = p.len() == s.len()
        && p.iter().zip(&s).all(|(a, b)| {
            a.0 == b.0
                && a.1 == b.1
                && a.2.len() == b.2.len()
                && a.2.iter().zip(&b.2).all(|(x, y)| close(*x, *y))
        });
    assert!(same, "{expr}\nprometheus: {prom}\nstrata:     {strata}");
}

/// The queries compared, each with whether it must answer something.
const QUERIES: &[&str] = &[
    HIST,
    "histogram_count(rate(loadgen_metric_2_seconds[5m]))",
    "sum(rate(loadgen_metric_2_seconds[5m]))",
    "histogram_sum(loadgen_metric_2_seconds)",
    "sum(rate(loadgen_metric_0_total[5m]))",
];

#[test]
fn native_histograms_answer_as_prometheus_does() {
    let tmp = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(
        &tmp.path().join("prom"),
        "global:\n  scrape_interval: 1h\n",
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=native-histograms",
        ],
    );
    let mut strata =
        StrataProc::start_all(&tmp.path().join("strata"), &["--tsdb.ship-interval=1h"]);
    let end = now_ms() - 60_000;
    loadgen(&format!("{}/api/v1/write", prom.url()), "1.0", end);
    loadgen(&format!("{}/api/v1/push", strata.url()), "1.0", end);

    // between two scrapes: Prometheus 2.42's ranges include their start, 3's (and
    // ours) do not; no sample sits on a range's edge here
    let at = end + 7_000;
    let mut answers = Vec::new();
    for q in QUERIES {
        let want = prom.query(q, at);
        assert!(
            !want.as_array().unwrap().is_empty(),
            "Prometheus answered nothing for {q}"
        );
        let got = strata_query(&strata, q, at);
        assert_same(q, &want, &got);
        answers.push(want);
    }
    // histogram_quantile: Prometheus 3 (and Strata) interpolate exponentially within a
    // native bucket where 2.42 interpolated linearly, so the quantile is checked against
    // 2.42's own sum(rate(...)) buckets with 3's rule, and 2.42's answer must fall in
    // the same bucket
    let q = "histogram_quantile(0.9, sum(rate(loadgen_metric_2_seconds[5m])))";
    let got = num(&strata_query(&strata, q, at)[0]["value"][1]);
    let (want, (lo, hi)) = quantile_exponential(0.9, &answers[2][0]["histogram"][1]);
    assert!(close(got, want), "{q}: strata {got}, expected {want}");
    let old = num(&prom.query(q, at)[0]["value"][1]);
    assert!(
        old > lo && old <= hi,
        "{q}: 2.42 answered {old}, outside ({lo}, {hi}]"
    );
    // the raw selector answers 10 histograms, not floats
    let raw = normalize(&answers[0]);
    assert_eq!(raw.len(), 10);
    assert!(answers[0][0].get("histogram").is_some(), "{}", answers[0]);

    // over the Store API: a querier reading the ingester's histogram chunks over gRPC,
    // and a global querier reading that querier's re-encoded chunks
    let local = StrataProc::start_with_grpc(
        &tmp.path().join("local"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", strata.grpc_port),
        ],
    );
    let global = StrataProc::start_http_only(
        &tmp.path().join("global"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", local.grpc_port),
        ],
    );
    for (q, want) in QUERIES.iter().zip(&answers) {
        assert_same(q, want, &strata_query(&local, q, at));
        assert_same(q, want, &strata_query(&global, q, at));
    }
    drop((local, global));

    // a sidecar in front of Prometheus passes its histogram chunks (read over
    // streamed remote read) through the Store API
    let side = StrataProc::start_with_grpc(
        &tmp.path().join("side"),
        &[
            "sidecar",
            &format!("--prometheus.url={}", prom.url()),
            &format!("--tsdb.path={}", prom.data_dir.display()),
            "--label=source=\"prom\"",
        ],
    );
    let via_side = StrataProc::start_http_only(
        &tmp.path().join("via-side"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", side.grpc_port),
        ],
    );
    for q in [
        "sum(rate(loadgen_metric_2_seconds[5m]))",
        "histogram_count(sum(loadgen_metric_2_seconds))",
    ] {
        assert_same(q, &prom.query(q, at), &strata_query(&via_side, q, at));
    }
    drop((side, via_side));

    // acknowledged histograms survive kill -9: the same answers after the restart
    strata.kill9();
    strata.restart();
    for (q, want) in QUERIES.iter().zip(&answers) {
        assert_same(q, want, &strata_query(&strata, q, at));
    }
}

/// Remote write 2.0 carries the same histograms (Prometheus 2.42 cannot send 2.0: its
/// answers over the 1.0 stream are the reference).
#[test]
fn remote_write_2_histograms_match_1() {
    let tmp = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(
        &tmp.path().join("prom"),
        "global:\n  scrape_interval: 1h\n",
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=native-histograms",
        ],
    );
    let strata = StrataProc::start_all(&tmp.path().join("strata"), &["--tsdb.ship-interval=1h"]);
    let end = now_ms() - 60_000;
    loadgen(&format!("{}/api/v1/write", prom.url()), "1.0", end);
    loadgen(&format!("{}/api/v1/push", strata.url()), "2.0", end);
    let at = end + 7_000;
    for q in &QUERIES[..2] {
        assert_same(q, &prom.query(q, at), &strata_query(&strata, q, at));
    }
    let written = strata.metric("strata_ingester_ingested_histogram_samples_total");
    assert_eq!(written, 400.0);

    // remote read: SAMPLES answers carry the histograms, streamed answers carry them
    // as float histogram chunks; both hold the same 10 series of 40 samples
    let samples = remote_read(&strata, end, ResponseType::Samples);
    let ReadBody::Samples(resp) = samples else {
        panic!()
    };
    let series = &resp.results[0].timeseries;
    assert_eq!(series.len(), 10);
    let from_samples: Vec<Vec<(i64, f64, f64)>> = series
        .iter()
        .map(|ts| {
            assert!(ts.samples.is_empty());
            ts.histograms
                .iter()
                .map(|h| {
                    let Some(Count::CountFloat(c)) = h.count else {
                        panic!("{h:?}")
                    };
                    (h.timestamp, c, h.sum)
                })
                .collect()
        })
        .collect();
    assert!(from_samples.iter().all(|s| s.len() == 40));
    // the newest count of each series is what Prometheus answers for it
    let raw = normalize(&prom.query(HIST, at));
    let mut newest: Vec<f64> = from_samples.iter().map(|s| s[39].1).collect();
    let mut want: Vec<f64> = raw.iter().map(|r| r.2[0]).collect();
    newest.sort_by(f64::total_cmp);
    want.sort_by(f64::total_cmp);
    assert_eq!(newest, want);

    let ReadBody::Streamed(frames) = remote_read(&strata, end, ResponseType::StreamedXorChunks)
    else {
        panic!()
    };
    let mut from_chunks: Vec<Vec<(i64, f64, f64)>> = Vec::new();
    for s in frames {
        let mut out = Vec::new();
        for c in &s.chunks {
            assert_eq!(c.r#type, chunk::Encoding::FloatHistogram as i32, "{c:?}");
            strata_tsdb::histogram::decode_chunk_float(
                strata_tsdb::chunkenc::Encoding::FloatHistogram,
                &c.data,
                &mut out,
            )
            .unwrap();
        }
        from_chunks.push(out.iter().map(|(t, h)| (*t, h.count, h.sum)).collect());
    }
    let mut from_samples = from_samples;
    for v in [&mut from_chunks, &mut from_samples] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    assert_eq!(from_chunks, from_samples);
}

enum ReadBody {
    Samples(ReadResponse),
    Streamed(Vec<ChunkedSeries>),
}

/// A remote read of the native histogram metric over the 40 scrapes before `end`.
fn remote_read(s: &StrataProc, end: i64, rt: ResponseType) -> ReadBody {
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: end - 40 * 15_000,
            end_timestamp_ms: end,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Eq as i32,
                name: "__name__".into(),
                value: HIST.into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![rt as i32],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let (code, _, bytes) = post_bytes(
        &format!("{}/api/v1/read", s.url()),
        &[("Content-Encoding", "snappy")],
        &body,
    )
    .unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&bytes));
    if rt == ResponseType::Samples {
        let raw = snap::raw::Decoder::new().decompress_vec(&bytes).unwrap();
        return ReadBody::Samples(ReadResponse::decode(raw.as_slice()).unwrap());
    }
    let mut buf = &bytes[..];
    let mut out: Vec<ChunkedSeries> = Vec::new();
    while !buf.is_empty() {
        let (mut len, mut i) = (0usize, 0usize);
        loop {
            let b = buf[i];
            len |= usize::from(b & 0x7f) << (7 * i);
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let msg = &buf[i + 4..i + 4 + len];
        let frame = ChunkedReadResponse::decode(msg).unwrap();
        // a series split over frames repeats its labels
        for cs in frame.chunked_series {
            match out.last_mut() {
                Some(last) if last.labels == cs.labels => last.chunks.extend(cs.chunks),
                _ => out.push(cs),
            }
        }
        buf = &buf[i + 4 + len..];
    }
    ReadBody::Streamed(out)
}
