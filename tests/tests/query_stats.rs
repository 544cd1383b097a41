//! The real `strata all`: `stats=all` counts exactly what was ingested and read, and a
//! query over `--query.max-samples` is refused before the samples are held (the
//! process's resident set barely grows).

use std::time::{SystemTime, UNIX_EPOCH};

use strata_testkit::http::{encode, get, post};
use strata_testkit::procs::Prometheus;
use strata_testkit::strata::{series, write_request, StrataProc};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn query(s: &StrataProc, q: &str, t: i64) -> (u16, serde_json::Value) {
    let url = format!(
        "{}/api/v1/query?query={}&time={}&stats=all",
        s.url(),
        encode(q),
        t as f64 / 1000.0
    );
    let (status, body) = get(&url).unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

#[test]
fn stats_all_counts_the_ingested_series_and_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(&tmp.path().join("strata"), &[]);
    let (n_series, n_samples) = (25usize, 40i64);
    let t0 = now_ms() - 3_600_000;
    let ts = (0..n_series)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..n_samples)
                .map(|j| (t0 + j * 15_000, j as f64))
                .collect();
            series(&[("__name__", "m"), ("i", &i.to_string())], &samples)
        })
        .chain([series(&[("__name__", "other")], &[(t0, 1.0)])])
        .collect();
    let (code, body) = s.push(None, &write_request(ts));
    assert!(code < 300, "{code} {body}");
    let end = t0 + (n_samples - 1) * 15_000;
    let (code, b) = query(&s, "count_over_time(m[1h])", end);
    assert_eq!(code, 200, "{b}");
    let st = &b["data"]["stats"];
    let all = n_series as u64 * n_samples as u64;
    assert_eq!(st["samples"]["totalQueryableSamples"], all, "{st}");
    assert_eq!(st["strata"]["seriesFetched"], n_series as u64, "{st}");
    assert_eq!(st["strata"]["samplesFetched"], all, "{st}");
    assert!(
        st["strata"]["chunksFetched"].as_u64().unwrap() >= n_series as u64,
        "{st}"
    );
    assert!(
        st["timings"]["execTotalTime"].as_f64().unwrap() > 0.0,
        "{st}"
    );
}

/// `VmRSS` or `VmHWM` of `pid` in bytes.
fn proc_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_query_over_max_samples_is_refused_before_memory_grows() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(
        &tmp.path().join("strata"),
        &["--query.max-samples=1000000", "--query.timeout=5m"],
    );
    // 3,000 series × 12,000 samples (36M): decoded whole they would take over 550 MB.
    let (n_series, n_samples, step) = (3_000usize, 12_000i64, 500i64);
    let t0 = now_ms() - n_samples * step - 60_000;
    for batch in 0..(n_samples / 400) {
        let ts = (0..n_series)
            .map(|i| {
                let samples: Vec<(i64, f64)> = (0..400)
                    .map(|j| {
                        let k = batch * 400 + j;
                        (t0 + k * step, k as f64)
                    })
                    .collect();
                series(&[("__name__", "big"), ("i", &i.to_string())], &samples)
            })
            .collect();
        let (code, body) = s.push(None, &write_request(ts));
        assert!(code < 300, "{code} {body}");
    }
    let pid = s.proc.child.id();
    let before = proc_kb(pid, "VmRSS:");
    // Reset the high-water mark to the current resident set.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let end = t0 + (n_samples - 1) * step;
    // Prometheus would answer this (it holds one series' 12,000-sample window at a
    // time); Strata refuses it while the chunks arrive, as a selector fetching over
    // FETCH_SAMPLES_FACTOR (10) × the limit: 36M > 10M raw samples.
    let (code, b) = query(&s, "sum(count_over_time(big[2h]))", end);
    let peak = proc_kb(pid, "VmHWM:");
    assert_eq!(code, 422, "{b}");
    assert_eq!(b["errorType"], "execution");
    assert_eq!(
        b["error"],
        "query processing would load too many samples into memory in query execution"
    );
    let growth = peak.saturating_sub(before);
    assert!(
        growth < 500 << 20,
        "resident set grew {} MB during the refused query",
        growth >> 20
    );
    // Within the limit the same data answers.
    let (code, b) = query(&s, "count(big{i=\"7\"})", end);
    assert_eq!(code, 200, "{b}");
}

/// Issue #12: after `POST /ingester/flush` the fresh block is both the ingester's local
/// block and (once the querier's listing refreshes) a bucket block. The querier reads it
/// once, from the bucket: `stats=all` counts each series and sample once, and the answer
/// is the one before the flush. `--sync-block-duration=0` lists the bucket on every
/// query, so the first query after the flush already reads the shipped block.
#[test]
fn a_flushed_block_is_read_once_after_the_listing_refreshes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(&tmp.path().join("strata"), &["--sync-block-duration=0"]);
    let (n_series, n_samples) = (20usize, 40i64);
    let t0 = now_ms() - 3_600_000;
    let ts = (0..n_series)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..n_samples)
                .map(|j| (t0 + j * 15_000, (i as i64 * j) as f64))
                .collect();
            series(&[("__name__", "m"), ("i", &i.to_string())], &samples)
        })
        .collect();
    let (code, body) = s.push(None, &write_request(ts));
    assert!(code < 300, "{code} {body}");
    let end = t0 + (n_samples - 1) * 15_000;
    let q = "sum(sum_over_time(m[1h]))";
    let (code, before) = query(&s, q, end);
    assert_eq!(code, 200, "{before}");
    let (code, body) = s.flush();
    assert!(code < 300, "{code} {body}");
    let source = |b: &serde_json::Value, prefix: &str| -> Option<serde_json::Value> {
        b["data"]["stats"]["strata"]["sources"]
            .as_array()?
            .iter()
            .find(|s| s["source"].as_str().unwrap_or("").starts_with(prefix))
            .cloned()
    };
    // The flush has shipped the block, and the listing is not cached.
    let (code, after) = query(&s, q, end);
    assert_eq!(code, 200, "{after}");
    assert!(
        source(&after, "bucket ").is_some_and(|s| s["seriesFetched"] != 0),
        "the bucket did not serve the flushed block: {after}"
    );
    assert_eq!(
        after["data"]["result"], before["data"]["result"],
        "{after} vs {before}"
    );
    let st = &after["data"]["stats"];
    let all = n_series as u64 * n_samples as u64;
    assert_eq!(st["strata"]["seriesFetched"], n_series as u64, "{st}");
    assert_eq!(st["strata"]["samplesFetched"], all, "{st}");
    assert_eq!(st["samples"]["totalQueryableSamples"], all, "{st}");
    let bucket = source(&after, "bucket ").unwrap();
    assert_eq!(bucket["seriesFetched"], n_series as u64, "{bucket}");
    if let Some(ep) = source(&after, "endpoint ") {
        assert_eq!(ep["seriesFetched"], 0, "{ep}");
    }
}

/// Issue #12: `--query.max-samples` counts what Prometheus counts (the points held at
/// once during evaluation, not every raw sample loaded): with the same limit, Prometheus
/// 2.42 and Strata answer the same queries and refuse the same ones, with the same 422.
#[test]
fn max_samples_answers_and_refuses_what_prometheus_does() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = "--query.max-samples=2000";
    let s = StrataProc::start_all(&tmp.path().join("strata"), &[limit]);
    let prom = Prometheus::start(
        &tmp.path().join("prom"),
        "global: {}\n",
        &["--web.enable-remote-write-receiver", limit],
    );
    // 10 series × 480 samples (2 h at 15 s): 4,800 raw samples.
    let (n_series, n_samples) = (10usize, 480i64);
    let t0 = (now_ms() - 2 * 3_600_000) / 1000 * 1000;
    let ts: Vec<_> = (0..n_series)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..n_samples)
                .map(|j| (t0 + j * 15_000, (i as i64 * 1000 + j) as f64))
                .collect();
            series(&[("__name__", "m"), ("i", &i.to_string())], &samples)
        })
        .collect();
    let req = write_request(ts);
    let (code, text) = s.push(None, &req);
    assert!(code < 300, "{code} {text}");
    let headers = [
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    let body = strata_proto::encode_write_request(&req);
    let (code, text) = post(&format!("{}/api/v1/write", prom.url()), &headers, &body).unwrap();
    assert!(code < 300, "{code} {text}");
    let end = t0 + (n_samples - 1) * 15_000;
    let secs = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let ask = |base: &str, q: &str, range: Option<i64>| -> (u16, serde_json::Value) {
        let url = match range {
            None => format!("{base}/api/v1/query?query={}&time={}", encode(q), secs(end)),
            Some(step) => format!(
                "{base}/api/v1/query_range?query={}&start={}&end={}&step={}",
                encode(q),
                secs(end - 7_200_000 + 15_000),
                secs(end),
                step
            ),
        };
        let (code, body) = get(&url).unwrap();
        (
            code,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
        )
    };
    // (query, range step in s, whether Prometheus answers with 2,000)
    let cases: [(&str, Option<i64>, bool); 6] = [
        // one series' 480-sample window at a time, plus 10 outputs
        ("sum(count_over_time(m[2h]))", None, true),
        // the whole matrix is held: 4,800
        ("m[2h]", None, false),
        // 10 series × 120 steps = 1,200 points
        ("sum(m)", Some(60), true),
        // 10 series × 480 steps = 4,800 points
        ("sum(m)", Some(15), false),
        // 10 × 120 outputs plus a 20-sample window
        ("sum(rate(m[5m]))", Some(60), true),
        // 10 × 480 outputs
        ("rate(m[5m])", Some(15), false),
    ];
    for (q, step, answers) in cases {
        let (pc, pb) = ask(&prom.url(), q, step);
        assert_eq!(
            pc == 200,
            answers,
            "Prometheus on {q} (step {step:?}): {pc} {pb}"
        );
        let (sc, sb) = ask(&s.url(), q, step);
        assert_eq!(
            sc, pc,
            "{q} (step {step:?}): Strata {sb} vs Prometheus {pb}"
        );
        if answers {
            assert_eq!(sb["data"]["resultType"], pb["data"]["resultType"], "{q}");
            assert_eq!(
                sb["data"]["result"].as_array().map(Vec::len),
                pb["data"]["result"].as_array().map(Vec::len),
                "{q}: {sb} vs {pb}"
            );
        } else {
            assert_eq!(sc, 422, "{sb}");
            assert_eq!(sb["errorType"], pb["errorType"], "{sb} vs {pb}");
            assert_eq!(sb["error"], pb["error"], "{sb} vs {pb}");
        }
    }
}
