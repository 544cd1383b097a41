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

/// `strata all`'s querier reads its ingester in process; a separate `strata querier`
/// reads the same ingester over gRPC. Both answer alike: over the head, over head and
/// local blocks overlapping it, with the ingester's external labels, per tenant.
#[test]
fn in_process_reads_match_grpc_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let all = StrataProc::start_all(
        &tmp.path().join("all"),
        &["--tsdb.ship-interval=1h", "--label=site=eu"],
    );
    let remote = StrataProc::start_http_only(
        &tmp.path().join("q"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", all.grpc_port),
        ],
    );
    let t = now_ms() - 60_000;
    let push = |from: i64, n: i64| {
        let s: Vec<(i64, f64)> = (from..from + n).map(|i| (t + i * 1000, i as f64)).collect();
        let req = write_request(vec![
            series(&[("__name__", "cpu"), ("core", "0")], &s),
            series(&[("__name__", "cpu"), ("core", "1")], &s[..s.len() / 2]),
        ]);
        assert_eq!(all.push(Some("team-a"), &req).0, 200);
    };
    let answer = |p: &StrataProc, tenant: &str| {
        let url = format!(
            "{}/api/v1/query_range?query={}&start={}&end={}&step=1",
            p.url(),
            strata_testkit::http::encode("cpu"),
            t / 1000,
            t / 1000 + 59
        );
        let (code, body) =
            strata_testkit::http::get_with(&url, &[("X-Scope-OrgID", tenant)]).unwrap();
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].clone()
    };
    push(0, 30);
    let head = answer(&all, "team-a");
    assert_eq!(head.as_array().unwrap().len(), 2, "{head}");
    assert_eq!(head[0]["metric"]["site"], "eu", "{head}");
    assert_eq!(head, answer(&remote, "team-a"));
    // A local block, then more samples in the head after it.
    assert_eq!(all.flush().0, 200);
    push(30, 30);
    let both = answer(&all, "team-a");
    assert!(both[0]["values"].as_array().unwrap().len() >= 59, "{both}");
    assert_eq!(both[0]["values"][58][1], "58", "{both}");
    assert_eq!(both, answer(&remote, "team-a"));
    assert_eq!(answer(&all, "team-b"), serde_json::json!([]));
    assert_eq!(answer(&remote, "team-b"), serde_json::json!([]));
}

/// A querier serves the Store API (`--grpc-address`, as Thanos's querier): a global
/// querier listing it with `--endpoint` answers what it answers, deduplicated by it,
/// labels included.
#[test]
fn querier_serves_the_store_api_to_a_global_querier() {
    let tmp = tempfile::tempdir().unwrap();
    let all = StrataProc::start_all(&tmp.path().join("all"), &["--tsdb.ship-interval=1h"]);
    let t = now_ms() - 60_000;
    let s: Vec<(i64, f64)> = (0..30).map(|i| (t + i * 1000, i as f64)).collect();
    let req = write_request(vec![
        series(
            &[("__name__", "jobs"), ("queue", "a"), ("replica", "r1")],
            &s,
        ),
        series(
            &[("__name__", "jobs"), ("queue", "a"), ("replica", "r2")],
            &s,
        ),
        series(&[("__name__", "jobs"), ("queue", "b")], &s[..10]),
    ]);
    assert_eq!(all.push(None, &req).0, 200);
    let local = StrataProc::start_with_grpc(
        &tmp.path().join("local"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", all.grpc_port),
            "--query.replica-label=replica",
        ],
    );
    let global = StrataProc::start_http_only(
        &tmp.path().join("global"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", local.grpc_port),
        ],
    );
    let answer = |p: &StrataProc, path: &str| {
        let (code, body) = strata_testkit::http::get(&format!("{}{path}", p.url())).unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"].clone()
    };
    let q = format!(
        "/api/v1/query_range?query=jobs&start={}&end={}&step=1",
        t / 1000,
        t / 1000 + 29
    );
    let via_global = answer(&global, &q);
    let result = via_global["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{via_global}");
    assert!(
        result.iter().all(|s| s["metric"].get("replica").is_none()),
        "{via_global}"
    );
    assert_eq!(via_global, answer(&local, &q));
    assert_eq!(
        answer(&global, "/api/v1/label/queue/values"),
        serde_json::json!(["a", "b"])
    );
    assert!(answer(&global, "/api/v1/labels")
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("queue")));
}
