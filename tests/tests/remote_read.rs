//! Remote read: a real Prometheus 2.42 with Strata as its `remote_read` endpoint answers
//! queries from data only Strata holds (its own config, nothing else changed), over
//! instant and range queries, with Strata's HA dedup applied; bad requests get a 400
//! naming what was wrong.

use strata_testkit::http::{encode, get_json, post};
use strata_testkit::procs::Prometheus;
use strata_testkit::strata::{series, write_request, StrataProc};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn prometheus_reads_strata_through_remote_read() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &["--tsdb.ship-interval=1h", "--query.replica-label=replica"],
    );
    // Ten minutes of an HA pair's samples that only Strata has.
    let t0 = (now_ms() - 15 * 60_000) / 1000 * 1000;
    let pts: Vec<(i64, f64)> = (0..40).map(|i| (t0 + i * 15_000, i as f64)).collect();
    let req = write_request(vec![
        series(
            &[
                ("__name__", "legacy_jobs_total"),
                ("queue", "a"),
                ("replica", "r1"),
            ],
            &pts,
        ),
        series(
            &[
                ("__name__", "legacy_jobs_total"),
                ("queue", "a"),
                ("replica", "r2"),
            ],
            &pts,
        ),
        series(
            &[("__name__", "legacy_jobs_total"), ("queue", "b")],
            &pts[..10],
        ),
    ]);
    assert_eq!(strata.push(None, &req).0, 200);

    let cfg = format!(
        "global:\n  scrape_interval: 1h\nremote_read:\n  - url: {}/api/v1/read\n    read_recent: true\n",
        strata.url()
    );
    let prom = Prometheus::start(&tmp.path().join("prom"), &cfg, &[]);

    // Instant: both queues, the pair deduplicated to one series without `replica`.
    let at = (t0 + 39 * 15_000) as f64 / 1000.0;
    let v = get_json(&format!(
        "{}/api/v1/query?query={}&time={at}",
        prom.url(),
        encode("legacy_jobs_total")
    ));
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "queue b ended long before: {v}");
    assert_eq!(result[0]["metric"]["queue"], "a", "{v}");
    assert!(result[0]["metric"].get("replica").is_none(), "{v}");
    assert_eq!(result[0]["value"][1], "39", "{v}");

    // Range: every sample of queue b, computed by Prometheus's engine over Strata's data.
    let v = get_json(&format!(
        "{}/api/v1/query_range?query={}&start={}&end={at}&step=15",
        prom.url(),
        encode("legacy_jobs_total{queue=\"b\"} * 2"),
        t0 / 1000
    ));
    let values = v["data"]["result"][0]["values"].as_array().unwrap().clone();
    assert!(values.len() >= 10, "{v}");
    assert_eq!(values[9][1], "18", "{v}");

    // Bad requests say what was wrong.
    let url = format!("{}/api/v1/read", strata.url());
    let (code, body) = post(&url, &[("Content-Encoding", "snappy")], b"not snappy").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("snappy"), "{body}");
    let (code, body) = post(
        &url,
        &[],
        &snap::raw::Encoder::new()
            .compress_vec(b"\xff\xff\xff")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("read request"), "{body}");
}
