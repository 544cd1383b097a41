//! Native histograms end to end on the real binaries: `strata tools loadgen
//! --native-histograms` sends the same remote-write stream (integer histograms, schema 3,
//! growing counters, new buckets now and then) to a real Prometheus 2.42 started with
//! `--enable-feature=native-histograms` and to `strata all`; raw selectors and
//! histogram functions answer the same in both. Histograms acknowledged before a
//! `kill -9` answer the same after the restart (WAL replay). And the issue's scrape
//! test ([`scrape`]): a Prometheus 2.42 scraping native histograms over the protobuf
//! exposition remote-writes to Strata, which answers as that Prometheus does; and
//! recording rules with histogram results ([`recording`]).

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

/// `histogram_quantile(0.9, sum(rate(<range>)))`. Prometheus 3 (and Strata) interpolate
/// exponentially within a native bucket where 2.42 interpolated linearly, so Strata's
/// quantile is checked against 2.42's own `sum(rate(<range>))` answer (`sum_rate`) with
/// 3's rule, and 2.42's quantile must fall in the same bucket.
fn check_quantile(prom: &Prometheus, strata: &StrataProc, range: &str, sum_rate: &Value, at: i64) {
    let q = format!("histogram_quantile(0.9, sum(rate({range})))");
    let got = num(&strata_query(strata, &q, at)[0]["value"][1]);
    let (want, (lo, hi)) = quantile_exponential(0.9, &sum_rate[0]["histogram"][1]);
    assert!(close(got, want), "{q}: strata {got}, expected {want}");
    let old = num(&prom.query(&q, at)[0]["value"][1]);
    assert!(
        old > lo && old <= hi,
        "{q}: 2.42 answered {old}, outside ({lo}, {hi}]"
    );
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
    check_quantile(
        &prom,
        &strata,
        "loadgen_metric_2_seconds[5m]",
        &answers[2],
        at,
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

/// The issue's scrape test: a real Prometheus 2.42 with native histograms scrapes a
/// target serving the protobuf exposition (a native histogram with zero, positive and
/// negative buckets that fill and grow between scrapes, plus a float counter) and
/// remote-writes to `strata all`; nothing is refused, and both answer the same.
mod scrape {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::Value;
    use strata_testkit::http::{encode, get, get_json};
    use strata_testkit::procs::Prometheus;
    use strata_testkit::strata::{metric_sum, StrataProc};

    use super::{assert_same, check_quantile, normalize, num, strata_query};

    /// Protobuf wire encoding, just what `io.prometheus.client.MetricFamily` needs
    /// (field numbers from Prometheus's `prompb/io/prometheus/client/metrics.proto`).
    #[derive(Default)]
    struct Pb(Vec<u8>);

    impl Pb {
        fn varint(&mut self, mut v: u64) {
            while v >= 0x80 {
                self.0.push(v as u8 | 0x80);
                v >>= 7;
            }
            self.0.push(v as u8);
        }
        fn tag(&mut self, field: u32, wire: u8) {
            self.varint(u64::from(field) << 3 | u64::from(wire));
        }
        fn uint(&mut self, field: u32, v: u64) {
            self.tag(field, 0);
            self.varint(v);
        }
        fn sint(&mut self, field: u32, v: i64) {
            self.uint(field, ((v << 1) ^ (v >> 63)) as u64);
        }
        fn double(&mut self, field: u32, v: f64) {
            self.tag(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        fn bytes(&mut self, field: u32, b: &[u8]) {
            self.tag(field, 2);
            self.varint(b.len() as u64);
            self.0.extend_from_slice(b);
        }
        fn msg(&mut self, field: u32, f: impl FnOnce(&mut Pb)) {
            let mut m = Pb::default();
            f(&mut m);
            self.bytes(field, &m.0);
        }
    }

    /// Buckets as (index, absolute count) → spans (field `span`) and deltas (`delta`).
    fn buckets(m: &mut Pb, span: u32, delta: u32, b: &[(i32, u64)]) {
        let mut prev: Option<i32> = None;
        let mut spans: Vec<(i32, u32)> = Vec::new();
        for &(i, _) in b {
            match (prev, spans.last_mut()) {
                (Some(p), Some(last)) if i == p + 1 => last.1 += 1,
                (Some(p), _) => spans.push((i - p - 1, 1)),
                (None, _) => spans.push((i, 1)),
            }
            prev = Some(i);
        }
        for (offset, len) in spans {
            m.msg(span, |s| {
                s.sint(1, i64::from(offset));
                s.uint(2, u64::from(len));
            });
        }
        let mut last = 0i64;
        for &(_, c) in b {
            m.sint(delta, c as i64 - last);
            last = c as i64;
        }
    }

    /// A `MetricFamily` of `type` (0 counter, 4 histogram) with one metric `{path="/a"}`
    /// whose value `value` writes.
    fn family(name: &str, help: &str, r#type: u64, value: impl FnOnce(&mut Pb)) -> Pb {
        let mut f = Pb::default();
        f.bytes(1, name.as_bytes());
        f.bytes(2, help.as_bytes());
        f.uint(3, r#type);
        f.msg(4, |m| {
            m.msg(1, |l| {
                l.bytes(1, b"path");
                l.bytes(2, b"/a");
            });
            value(m);
        });
        f
    }

    /// Scrape `n`'s exposition: `demo_latency_seconds`, a native histogram (schema 1,
    /// zero threshold 0.001) whose buckets fill, and gain new far buckets every fifth
    /// scrape, and `demo_requests_total`, a float counter.
    fn exposition(n: u64) -> Vec<u8> {
        let mut pos: Vec<(i32, u64)> = vec![(-1, n), (0, 2 * n), (1, 3 * n + 1), (4, n / 2)];
        for k in 0..n / 5 {
            pos.push((8 + 3 * k as i32, k + 1));
        }
        let neg: Vec<(i32, u64)> = vec![(2, n / 3), (3, n)];
        let zero = n / 4;
        let count = zero + pos.iter().chain(&neg).map(|b| b.1).sum::<u64>();
        let sum = 1.25 * n as f64 - 0.5 * (n / 3) as f64;
        let hist = family("demo_latency_seconds", "Request latency.", 4, |m| {
            m.msg(7, |h| {
                h.uint(1, count);
                h.double(2, sum);
                h.sint(5, 1);
                h.double(6, 0.001);
                h.uint(7, zero);
                buckets(h, 9, 10, &neg);
                buckets(h, 12, 13, &pos);
            });
        });
        // far from 0: 2.42 limited a float rate's extrapolation to the counter's zero
        // point before its threshold check, 3 (and Strata) after it
        let counter = family("demo_requests_total", "Requests handled.", 0, |m| {
            m.msg(3, |c| c.double(1, 1000.0 + 7.0 * n as f64));
        });
        let mut out = Pb::default();
        for f in [hist, counter] {
            out.varint(f.0.len() as u64);
            out.0.extend_from_slice(&f.0);
        }
        out.0
    }

    /// Serve [`exposition`] on a loopback port, one scrape number per request; returns
    /// the port and the number of scrapes served.
    fn protobuf_target() -> (u16, Arc<AtomicU64>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let served = Arc::new(AtomicU64::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = exposition(count.load(Ordering::SeqCst) + 1);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if s.write_all(head.as_bytes()).is_ok() && s.write_all(&body).is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        (port, served)
    }

    fn prom_metric(prom: &Prometheus, name: &str) -> f64 {
        let (_, body) = get(&format!("{}/metrics", prom.url())).unwrap();
        metric_sum(&body, name)
    }

    /// `data.result` of a query at `at` (ms), as the server answered it.
    fn raw(base: &str, expr: &str, at: i64) -> Value {
        let v = get_json(&format!(
            "{base}/api/v1/query?query={}&time={}.{:03}",
            encode(expr),
            at / 1000,
            at % 1000
        ));
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].clone()
    }

    fn wait(what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < Duration::from_secs(90), "{what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    const QUERIES: &[&str] = &[
        "demo_latency_seconds",
        "histogram_count(rate(demo_latency_seconds[1m]))",
        "histogram_sum(rate(demo_latency_seconds[1m]))",
        "sum(rate(demo_latency_seconds[1m]))",
        "sum(rate(demo_requests_total[1m]))",
        "demo_requests_total",
    ];

    #[test]
    fn scraped_native_histograms_remote_written_answer_as_prometheus() {
        let tmp = tempfile::tempdir().unwrap();
        let strata =
            StrataProc::start_all(&tmp.path().join("strata"), &["--tsdb.ship-interval=1h"]);
        let (target, served) = protobuf_target();
        let config = format!(
            r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: demo
    static_configs:
      - targets: ['127.0.0.1:{target}']
remote_write:
  - url: {}/api/v1/push
    send_native_histograms: true
    queue_config:
      batch_send_deadline: 1s
"#,
            strata.url()
        );
        let prom = Prometheus::start(
            &tmp.path().join("prom"),
            &config,
            &["--enable-feature=native-histograms"],
        );
        wait("Prometheus never scraped 12 times", || {
            served.load(Ordering::SeqCst) >= 12
        });

        // the query time: half a scrape after the second newest histogram Prometheus
        // holds, so no range edge falls on a sample (2.42's ranges include their start,
        // 3's and ours do not)
        let now = super::now_ms() + 1_000;
        let stored = raw(&prom.url(), "demo_latency_seconds[1h]", now);
        let times: Vec<i64> = stored[0]["histograms"]
            .as_array()
            .unwrap_or_else(|| panic!("no histograms stored: {stored}"))
            .iter()
            .map(|h| (num(&h[0]) * 1000.0).round() as i64)
            .collect();
        assert!(times.len() >= 10, "{stored}");
        let at = times[times.len() - 2] + 500;
        let upto = times.iter().filter(|t| **t <= at).count() as f64;

        // Prometheus's queue has sent them (polled on its own /metrics), refusing none
        wait("Prometheus never sent the histograms", || {
            prom_metric(&prom, "prometheus_remote_storage_histograms_total") >= upto
        });
        for m in [
            "prometheus_remote_storage_samples_failed_total",
            "prometheus_remote_storage_histograms_failed_total",
            "prometheus_remote_storage_samples_dropped_total",
            "prometheus_remote_storage_histograms_dropped_total",
        ] {
            assert_eq!(prom_metric(&prom, m), 0.0, "{m}");
        }
        assert!(strata.metric("strata_ingester_ingested_histogram_samples_total") >= upto);
        // the float counter travels in other batches: wait for its newest sample too
        let newest = "timestamp(demo_requests_total)";
        let want = raw(&prom.url(), newest, at);
        wait("the counter's newest sample never reached Strata", || {
            raw(&strata.url(), newest, at) == want
        });

        // the raw samples as the servers answer them: the same JSON
        let range = "demo_latency_seconds[30s]";
        let want = raw(&prom.url(), range, at);
        assert!(
            want[0]["histograms"].as_array().unwrap().len() >= 10,
            "{want}"
        );
        // (2.42 counts a batch as sent before the send returns: polled, then asserted)
        let start = Instant::now();
        while raw(&strata.url(), range, at) != want && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(raw(&strata.url(), range, at), want, "{range}");
        let body = want[0]["histograms"].as_array().unwrap().last().unwrap()[1].clone();
        assert!(body["buckets"].as_array().unwrap().len() >= 8, "{body}");
        assert!(
            num(&body["buckets"][0][1]) < 0.0,
            "negative buckets: {body}"
        );

        let mut answers = Vec::new();
        for q in QUERIES {
            let want = prom.query(q, at);
            assert!(
                !want.as_array().unwrap().is_empty(),
                "Prometheus: nothing for {q}"
            );
            assert_same(q, &want, &strata_query(&strata, q, at));
            answers.push(want);
        }
        check_quantile(&prom, &strata, "demo_latency_seconds[1m]", &answers[3], at);
        assert_eq!(normalize(&answers[0]).len(), 1);
    }
}

/// Recording rules whose results are native histograms write histogram samples, both
/// from `strata all`'s in-process ruler and from `strata ruler` over HTTP (which reads
/// the querier's histogram JSON back into buckets); Prometheus 2.42 evaluating the same
/// rule file records the same histograms.
mod recording {
    use std::time::Duration;

    use serde_json::Value;
    use strata_testkit::poll;
    use strata_testkit::procs::Prometheus;
    use strata_testkit::strata::StrataProc;

    use super::{assert_same, loadgen, now_ms, strata_query};

    const RULES: &str = r#"groups:
  - name: hist
    interval: 2s
    rules:
      - record: loadgen:hist:rate5m
        expr: sum(rate(loadgen_metric_2_seconds[5m]))
      - record: loadgen:hist:count_rate5m
        expr: histogram_count(rate(loadgen_metric_2_seconds[5m]))
      - alert: HistogramsArrive
        expr: sum(rate(loadgen_metric_2_seconds[5m]))
"#;

    /// `(t ms, value or histogram JSON)` of every sample of `name` in the minute before `at`.
    fn recorded(base: &str, name: &str, at: i64) -> Vec<(i64, Value)> {
        let r = strata_query_at(base, &format!("{name}[1m]"), at);
        let Some(s) = r.as_array().and_then(|a| a.first()) else {
            return Vec::new();
        };
        let pts = s.get("histograms").or(s.get("values")).unwrap();
        pts.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                    p[1].clone(),
                )
            })
            .collect()
    }

    fn strata_query_at(base: &str, expr: &str, at: i64) -> Value {
        let v = strata_testkit::http::get_json(&format!(
            "{base}/api/v1/query?query={}&time={}.{:03}",
            strata_testkit::http::encode(expr),
            at / 1000,
            at % 1000
        ));
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].clone()
    }

    #[test]
    fn histogram_recording_rules_write_histograms() {
        let tmp = tempfile::tempdir().unwrap();
        let rules = tmp.path().join("rules.yml");
        std::fs::write(&rules, RULES).unwrap();
        let rules = rules.to_str().unwrap().to_string();
        let prom = Prometheus::start(
            &tmp.path().join("prom"),
            &format!("global:\n  evaluation_interval: 2s\nrule_files:\n  - {rules}\n"),
            &[
                "--web.enable-remote-write-receiver",
                "--enable-feature=native-histograms",
            ],
        );
        let strata = StrataProc::start_all(
            &tmp.path().join("strata"),
            &["--tsdb.ship-interval=1h", &format!("--rule-file={rules}")],
        );
        // the stream ends a minute ago: rate(..[5m]) has data for the next minutes
        let end = now_ms() - 60_000;
        loadgen(&format!("{}/api/v1/write", prom.url()), "1.0", end);
        loadgen(&format!("{}/api/v1/push", strata.url()), "1.0", end);
        // the standalone ruler over HTTP, recording under other names
        let http_rules = tmp.path().join("http.yml");
        std::fs::write(&http_rules, RULES.replace("loadgen:hist:", "http:hist:")).unwrap();
        let ruler = StrataProc::start_http_only(
            &tmp.path().join("ruler"),
            &[
                "ruler",
                &format!("--rule-file={}", http_rules.display()),
                &format!("--query={}", strata.url()),
                &format!("--remote-write.url={}/api/v1/push", strata.url()),
            ],
        );

        // Four evaluations by each ruler
        let at = poll("three rulers recorded", Duration::from_secs(60), || {
            let at = now_ms();
            let enough = |base: &str, name: &str| recorded(base, name, at).len() >= 4;
            (enough(&prom.url(), "loadgen:hist:rate5m")
                && enough(&strata.url(), "loadgen:hist:rate5m")
                && enough(&strata.url(), "http:hist:rate5m"))
            .then_some(at)
        });

        // each recorded histogram is the expression's answer at its timestamp
        for name in ["loadgen:hist:rate5m", "http:hist:rate5m"] {
            let got = recorded(&strata.url(), name, at);
            for (t, h) in &got {
                let want = strata_query(&strata, "sum(rate(loadgen_metric_2_seconds[5m]))", *t);
                assert!(
                    h.get("count").is_some(),
                    "{name} at {t}: not a histogram: {h}"
                );
                assert_same(
                    name,
                    &want,
                    &serde_json::json!([{"metric": {}, "histogram": [*t as f64 / 1000.0, h]}]),
                );
            }
        }
        // the same rule file in Prometheus 2.42 (same evaluation instants): the same
        // histograms, and the float rule beside them
        for name in ["loadgen:hist:rate5m", "loadgen:hist:count_rate5m"] {
            let p = recorded(&prom.url(), name, at);
            let s = recorded(&strata.url(), name, at);
            let common: Vec<_> = s.iter().filter(|x| p.iter().any(|y| y.0 == x.0)).collect();
            assert!(common.len() >= 3, "{name}: Prometheus {p:?}\nStrata {s:?}");
            for (t, v) in common {
                let pv = &p.iter().find(|y| y.0 == *t).unwrap().1;
                let wrap = |v: &Value| match v.get("count") {
                    Some(_) => {
                        serde_json::json!([{"metric": {}, "histogram": [*t as f64 / 1000.0, v]}])
                    }
                    None => serde_json::json!([{"metric": {}, "value": [*t as f64 / 1000.0, v]}]),
                };
                assert_same(name, &wrap(pv), &wrap(v));
            }
        }
        // an alert on a histogram result fires (with value 0, as in Prometheus), and
        // every rule of both rulers is healthy
        let alerts = strata_query_at(&strata.url(), "ALERTS", at);
        assert_eq!(alerts.as_array().map(|a| a.len()), Some(1), "{alerts}");
        for base in [strata.url(), ruler.url()] {
            let rules = strata_testkit::http::get_json(&format!("{base}/api/v1/rules"));
            let rules = rules["data"]["groups"][0]["rules"]
                .as_array()
                .unwrap()
                .clone();
            assert_eq!(rules.len(), 3, "{rules:?}");
            assert!(rules.iter().all(|r| r["health"] == "ok"), "{rules:?}");
        }
    }
}
