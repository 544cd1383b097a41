//! HA dedup through the real binary: two replicas of a counter, each with its own gaps,
//! stored as blocks in the bucket; the querier with `--query.replica-label replica` gives
//! one series with no gap and no doubled sample, and `rate` over it equals Prometheus's
//! `rate` over the complete series.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;
use strata_testkit::http::{encode, get};
use strata_testkit::procs::{copy_dir, run_ok, strata, Prometheus};
use strata_testkit::strata::StrataProc;

const START: i64 = 1_699_999_200_000; // 2h-aligned, even
const STEP: i64 = 15_000;
const N: i64 = 12 * 60; // 3 h

fn value(i: i64) -> f64 {
    // a counter with a reset in the middle
    if i < 400 {
        (i * 3) as f64
    } else {
        ((i - 400) * 2) as f64
    }
}

/// OpenMetrics for the samples not in any of the `gaps` (index ranges).
fn openmetrics(gaps: &[(i64, i64)]) -> String {
    let mut s = String::from("# TYPE ha_requests counter\n");
    for i in 0..N {
        if gaps.iter().any(|(a, b)| i >= *a && i < *b) {
            continue;
        }
        let t = START + i * STEP;
        writeln!(
            s,
            "ha_requests_total{{job=\"api\"}} {} {}.{:03}",
            value(i),
            t / 1000,
            t % 1000
        )
        .unwrap();
    }
    s.push_str("# EOF\n");
    s
}

/// Blocks for `text` under `dir`, with `labels` as the Thanos external labels.
fn blocks(tmp: &Path, name: &str, text: &str, labels: Option<Value>) -> std::path::PathBuf {
    let input = tmp.join(format!("{name}.om"));
    std::fs::write(&input, text).unwrap();
    let out = tmp.join(name);
    run_ok(
        strata()
            .args(["tools", "tsdb", "create-blocks-from", "openmetrics", "-q"])
            .arg(&input)
            .arg(&out),
    );
    if let Some(l) = labels {
        for e in std::fs::read_dir(&out).unwrap() {
            let p = e.unwrap().path().join("meta.json");
            let mut m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            m["thanos"] =
                serde_json::json!({"labels": l, "downsample": {"resolution": 0}, "source": "test"});
            std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
        }
    }
    out
}

fn result(url: &str) -> Vec<Value> {
    let (status, body) = get(url).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"].as_array().unwrap().clone()
}

#[test]
fn deduplicated_replicas_equal_one_complete_replica() {
    let tmp = tempfile::tempdir().unwrap();
    // replica a misses 10 min, replica b misses 5 min and 30 min elsewhere
    let a = blocks(
        tmp.path(),
        "a",
        &openmetrics(&[(120, 160)]),
        Some(serde_json::json!({"cluster": "c1", "replica": "a"})),
    );
    let b = blocks(
        tmp.path(),
        "b",
        &openmetrics(&[(360, 380), (480, 600)]),
        Some(serde_json::json!({"cluster": "c1", "replica": "b"})),
    );
    let full = blocks(tmp.path(), "full", &openmetrics(&[]), None);

    let bucket = tmp.path().join("bucket");
    copy_dir(&a, &bucket.join("anonymous"));
    copy_dir(&b, &bucket.join("anonymous"));
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(
        &cfg,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ),
    )
    .unwrap();
    let querier = StrataProc::start_http_only(
        &tmp.path().join("querier"),
        &[
            "querier",
            "--query.replica-label=replica",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    copy_dir(&full, &tmp.path().join("prom"));
    let prom = Prometheus::start(&tmp.path().join("prom"), "global: {}\n", &[]);

    // raw samples: one series, no gap, no doubles
    let end = START + N * STEP - STEP + 1; // odd ms, just after the last sample
    let q = format!(
        "/api/v1/query?query={}&time={}.{:03}",
        encode("ha_requests_total[3h]"),
        end / 1000,
        end % 1000
    );
    let ours = result(&format!("{}{q}", querier.url()));
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(
        ours[0]["metric"],
        serde_json::json!({"__name__": "ha_requests_total", "cluster": "c1", "job": "api"})
    );
    let values = ours[0]["values"].as_array().unwrap();
    let theirs = result(&format!("{}{q}", prom.url()));
    assert_eq!(values.len() as i64, N, "a gap or a doubled sample");
    assert_eq!(values, theirs[0]["values"].as_array().unwrap());

    // without dedup both replicas come back, each with its gaps
    let raw = result(&format!("{}{q}&dedup=false", querier.url()));
    assert_eq!(raw.len(), 2);

    // rate over the deduplicated series = Prometheus's rate over the complete one
    let rq = format!(
        "/api/v1/query_range?query={}&start={}.001&end={}.001&step=60",
        encode("rate(ha_requests_total[5m])"),
        (START + 600_000) / 1000,
        (START + N * STEP - 60_000) / 1000
    );
    let ours = result(&format!("{}{rq}", querier.url()));
    let theirs = result(&format!("{}{rq}", prom.url()));
    assert_eq!(ours.len(), 1);
    let (o, t) = (
        ours[0]["values"].as_array().unwrap(),
        theirs[0]["values"].as_array().unwrap(),
    );
    assert_eq!(o.len(), t.len());
    for (x, y) in o.iter().zip(t) {
        assert_eq!(x[0], y[0]);
        let (xv, yv): (f64, f64) = (
            x[1].as_str().unwrap().parse().unwrap(),
            y[1].as_str().unwrap().parse().unwrap(),
        );
        assert!(
            (xv - yv).abs() <= 1e-9 * xv.abs().max(yv.abs()),
            "rate at {}: {xv} vs {yv}",
            x[0]
        );
    }
}
