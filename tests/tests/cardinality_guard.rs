//! The cardinality guard on the real binary: a metric whose `request_id` label explodes
//! loses only the new `request_id` series; its existing series, new series with known
//! values and other metrics keep flowing, and the refusal is said in the 400, in
//! `strata_cardinality_guard_refused_series_total` and in `/api/v1/status/tsdb`.

use strata_testkit::http::get_json;
use strata_testkit::strata::{series, write_request, StrataProc};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn an_exploding_label_loses_only_its_new_series() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &["--ingester.cardinality-guard.max-new-series-per-metric=20"],
    );
    let t = now_ms() - 60_000;
    let push = |name: &str, extra: &[(&str, &str)], k: i64| {
        let mut l = vec![("__name__", name), ("job", "api")];
        l.extend_from_slice(extra);
        strata.push(None, &write_request(vec![series(&l, &[(t + k, 1.0)])]))
    };
    // 20 new series: fine; the 21st trips the guard on the label with the most values
    for i in 0..21 {
        let id = format!("r{i}");
        let (s, b) = push("http_requests_total", &[("request_id", &id)], i);
        assert_eq!(s, 200, "series {i}: {b}");
    }
    let (s, b) = push("http_requests_total", &[("request_id", "r-new")], 100);
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("cardinality guard"), "{b}");
    assert!(b.contains(r#"label "request_id""#), "{b}");
    assert!(b.contains("err-strata-cardinality-guard"), "{b}");
    // existing series keep flowing, a known value is a new series that passes, and
    // another metric is not touched
    assert_eq!(
        push("http_requests_total", &[("request_id", "r3")], 200).0,
        200
    );
    assert_eq!(
        push(
            "http_requests_total",
            &[("request_id", "r3"), ("code", "500")],
            201
        )
        .0,
        200
    );
    assert_eq!(push("up", &[("instance", "x")], 202).0, 200);

    assert_eq!(
        strata.metric("strata_cardinality_guard_refused_series_total"),
        1.0
    );
    let status = get_json(&format!("{}/api/v1/status/tsdb", strata.url()));
    let g = &status["data"]["cardinalityGuard"][0];
    assert_eq!(g["metric"], "http_requests_total", "{status}");
    assert_eq!(g["label"], "request_id", "{status}");
    assert_eq!(g["refusedSeries"], 1, "{status}");
    assert_eq!(g["active"], true, "{status}");
}
