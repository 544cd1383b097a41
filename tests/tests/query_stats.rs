//! The real `strata all`: `stats=all` counts exactly what was ingested and read, and a
//! query over `--query.max-samples` is refused before the samples are held (the
//! process's resident set barely grows).

use std::time::{SystemTime, UNIX_EPOCH};

use strata_testkit::http::{encode, get};
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
/// is the one before the flush.
#[test]
fn a_flushed_block_is_read_once_after_the_listing_refreshes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(&tmp.path().join("strata"), &[]);
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
    // Poll until the querier's block listing (refreshed every 10 s) has the block.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let after = loop {
        let (code, b) = query(&s, q, end);
        assert_eq!(code, 200, "{b}");
        if source(&b, "bucket ").is_some_and(|s| s["seriesFetched"] != 0) {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bucket never served the flushed block: {b}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
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
