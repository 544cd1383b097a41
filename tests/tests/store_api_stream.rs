//! The ingester's Store API streams a `Series` answer as it is produced: a client that
//! stops reading stops the producer (a bounded channel fed by a blocking task), so a
//! large answer is never built whole in memory.

use std::time::{Duration, Instant};

use strata_proto::prometheus::{label_matcher, LabelMatcher};
use strata_proto::store::store_client::StoreClient;
use strata_proto::store::{series_response, SeriesRequest};
use strata_testkit::strata::{series, write_request, StrataProc};

const SERIES: usize = 40_000;

#[test]
fn a_slow_client_stops_the_series_producer() {
    let tmp = tempfile::tempdir().unwrap();
    let all = StrataProc::start_all(tmp.path(), &["--tsdb.ship-interval=1h"]);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // ~1 KB a frame, ~40 MB in all: more than the transport and socket buffers hold.
    let pad = "x".repeat(1000);
    let ids: Vec<String> = (0..SERIES).map(|i| format!("{i:06}")).collect();
    let req = write_request(
        ids.iter()
            .map(|id| {
                series(
                    &[("__name__", "wide"), ("id", id), ("pad", &pad)],
                    &[(t, 1.0)],
                )
            })
            .collect(),
    );
    let (code, msg) = all.push(None, &req);
    assert_eq!(code, 200, "{msg}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut stream = rt.block_on(async {
        let mut c = StoreClient::connect(format!("http://127.0.0.1:{}", all.grpc_port))
            .await
            .unwrap();
        let req = tonic::Request::new(SeriesRequest {
            min_time: 0,
            max_time: i64::MAX,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Eq as i32,
                name: "__name__".into(),
                value: "wide".into(),
            }],
            ..Default::default()
        });
        c.series(req).await.unwrap().into_inner()
    });
    let first = rt.block_on(stream.message()).unwrap().unwrap();
    assert!(matches!(
        first.result,
        Some(series_response::Result::Series(_))
    ));

    // The client now reads nothing (this thread drives its runtime only when it asks
    // for a message): the producer must come to wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while all.metric("strata_ingester_store_series_backpressure_waits_total") < 1.0 {
        assert!(Instant::now() < deadline, "the producer never waited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let produced = all.metric("strata_ingester_store_series_frames_total");
    assert!(
        produced < SERIES as f64,
        "all {produced} frames produced while the client read one"
    );

    let mut received = 1;
    while let Some(m) = rt.block_on(stream.message()).unwrap() {
        if let Some(series_response::Result::Series(_)) = m.result {
            received += 1;
        }
    }
    assert_eq!(received, SERIES);
    assert_eq!(
        all.metric("strata_ingester_store_series_frames_total"),
        SERIES as f64
    );
}
