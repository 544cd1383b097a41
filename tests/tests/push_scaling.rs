//! Push cost is linear in the series of a request, and a push that takes too long is
//! answered 503 (`--distributor.push-timeout`) with nothing of it stored.

use strata_testkit::strata::{series, write_request, StrataProc};

/// A snappy-compressed `WriteRequest` of `n` series with no labels and no samples: two
/// bytes a series on the wire, so millions fit in a small body.
fn empty_series_body(n: usize) -> Vec<u8> {
    let raw: Vec<u8> = std::iter::repeat_n([0x0au8, 0x00], n).flatten().collect();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// 2M empty series in a ~200 KB body: walking the request per lookup batch made this
/// quadratic (minutes in a debug build); linear, it is answered well within the
/// client's 60 s timeout even by a debug build.
#[test]
fn two_million_empty_series_are_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let all = StrataProc::start_all(tmp.path(), &["--tsdb.ship-interval=1h"]);
    let n = 2_000_000;
    let body = empty_series_body(n);
    assert!(body.len() < 400 << 10, "{}", body.len());
    let (code, msg) = all.push_raw(None, &body);
    // Mimir's answer: each series lacks a metric name; nothing is stored.
    assert_eq!(code, 400, "{msg}");
    assert!(
        msg.contains("0 of 0 samples in 2000000 series were rejected (0 missing_metric_name)"),
        "{msg}"
    );
    assert_eq!(
        all.metric("strata_ingester_received_series_total"),
        n as f64
    );
}

#[test]
fn a_push_over_the_timeout_is_503_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // No 2M-series request is decoded and checked within a millisecond.
    let all = StrataProc::start_all(
        tmp.path(),
        &["--tsdb.ship-interval=1h", "--distributor.push-timeout=1ms"],
    );
    let t = now_ms();
    let mut raw = strata_proto::encode_write_request(&write_request(vec![series(
        &[("__name__", "late")],
        &[(t, 1.0)],
    )]));
    // the sample's series first, then 2M empty ones after it
    raw = snap::raw::Decoder::new().decompress_vec(&raw).unwrap();
    raw.extend(std::iter::repeat_n([0x0au8, 0x00], 2_000_000).flatten());
    let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    let (code, msg) = all.push_raw(None, &body);
    assert_eq!(code, 503, "{msg}");
    assert!(msg.contains("--distributor.push-timeout"), "{msg}");
    assert_eq!(
        all.metric("strata_ingester_rejected_requests_total"),
        1.0,
        "one time-out, counted once"
    );
    assert_eq!(all.metric("strata_ingester_ingested_samples_total"), 0.0);
}
