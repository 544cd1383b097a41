//! The ingester's Store API (gRPC) serves the head and, after a cut, the local blocks.

use std::collections::BTreeMap;

use strata_proto::prometheus::{label_matcher, LabelMatcher};
use strata_proto::store::store_client::StoreClient;
use strata_proto::store::{series_response, SeriesRequest};
use strata_testkit::strata::{series, write_request, StrataProc};
use strata_tsdb::chunkenc::XorIter;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Series over gRPC as `labels → samples`.
fn fetch(port: u16, tenant: &str, name: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = StoreClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut req = tonic::Request::new(SeriesRequest {
            min_time: i64::MIN,
            max_time: i64::MAX,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Eq as i32,
                name: "__name__".into(),
                value: name.into(),
            }],
            ..Default::default()
        });
        req.metadata_mut()
            .insert("x-scope-orgid", tenant.parse().unwrap());
        let mut stream = c.series(req).await.unwrap().into_inner();
        let mut out = BTreeMap::new();
        while let Some(msg) = stream.message().await.unwrap() {
            if let Some(series_response::Result::Series(s)) = msg.result {
                let key: Vec<String> = s
                    .labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect();
                let mut samples = Vec::new();
                for c in &s.chunks {
                    let raw = c.raw.as_ref().unwrap();
                    samples.extend(XorIter::new(&raw.data));
                }
                out.insert(key.join(","), samples);
            }
        }
        out
    })
}

#[test]
fn store_api_serves_head_then_local_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(&tmp.path().join("strata"), &["--tsdb.ship-interval=1h"]);
    let t = now_ms() - 10_000;
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (t + i * 1000, i as f64)).collect();
    let req = write_request(vec![
        series(&[("__name__", "cpu"), ("core", "0")], &samples),
        series(&[("__name__", "cpu"), ("core", "1")], &samples[..5]),
        series(&[("__name__", "mem")], &samples),
    ]);
    assert_eq!(strata.push(Some("team-a"), &req).0, 200);

    let head = fetch(strata.grpc_port, "team-a", "cpu");
    assert_eq!(head.len(), 2, "{head:?}");
    assert_eq!(head["__name__=cpu,core=0"], samples);
    assert_eq!(head["__name__=cpu,core=1"], samples[..5].to_vec());
    assert!(
        fetch(strata.grpc_port, "team-b", "cpu").is_empty(),
        "tenant B sees tenant A"
    );

    // after a flush the head is empty and the same samples come from the local block
    assert_eq!(strata.flush().0, 200);
    let blocks = fetch(strata.grpc_port, "team-a", "cpu");
    assert_eq!(blocks, head);
}

#[test]
fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mut strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &["--tsdb.ship-interval=1h", "--tsdb.wal-fsync=never"],
    );
    let t = now_ms() - 5_000;
    assert_eq!(
        strata
            .push(
                None,
                &write_request(vec![series(
                    &[("__name__", "m")],
                    &[(t, 1.0), (t + 1, 2.0)]
                )])
            )
            .0,
        200
    );
    let pid = strata.proc.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = strata.proc.child.wait().unwrap();
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        strata.log()
    );
    strata.restart();
    let got = fetch(strata.grpc_port, "anonymous", "m");
    assert_eq!(got["__name__=m"], vec![(t, 1.0), (t + 1, 2.0)]);
}
