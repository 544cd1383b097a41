//! Queries that must not take the querier down or hold its slots: nested thousands
//! deep, syntax errors, and queries that time out or whose client goes away while a
//! store is still answering.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use strata_kit::metrics::Registry;
use strata_proto::store::store_server::{Store, StoreServer};
use strata_proto::store::{
    InfoRequest, InfoResponse, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest,
    LabelValuesResponse, SeriesRequest, SeriesResponse,
};
use strata_querier::{Querier, QuerierConfig};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------
// A Store API server that never answers `Series` for the metric `slow`, and counts the
// `Series` calls it is still serving: a call the querier gave up on is dropped by tonic
// when the querier resets the stream.

#[derive(Clone, Default)]
struct SlowStore {
    serving: Arc<AtomicUsize>,
}

struct Serving(Arc<AtomicUsize>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl Store for SlowStore {
    async fn info(
        &self,
        _: GrpcRequest<InfoRequest>,
    ) -> Result<GrpcResponse<InfoResponse>, Status> {
        Ok(GrpcResponse::new(InfoResponse {
            min_time: i64::MIN,
            max_time: i64::MAX,
            ..Default::default()
        }))
    }

    type SeriesStream = tokio_stream::Iter<std::vec::IntoIter<Result<SeriesResponse, Status>>>;

    async fn series(
        &self,
        r: GrpcRequest<SeriesRequest>,
    ) -> Result<GrpcResponse<Self::SeriesStream>, Status> {
        let slow = r.get_ref().matchers.iter().any(|m| m.value == "slow");
        if slow {
            self.serving.fetch_add(1, Ordering::SeqCst);
            let _serving = Serving(self.serving.clone());
            std::future::pending::<()>().await;
        }
        Ok(GrpcResponse::new(tokio_stream::iter(Vec::new())))
    }

    async fn label_names(
        &self,
        _: GrpcRequest<LabelNamesRequest>,
    ) -> Result<GrpcResponse<LabelNamesResponse>, Status> {
        Ok(GrpcResponse::new(LabelNamesResponse::default()))
    }

    async fn label_values(
        &self,
        _: GrpcRequest<LabelValuesRequest>,
    ) -> Result<GrpcResponse<LabelValuesResponse>, Status> {
        Ok(GrpcResponse::new(LabelValuesResponse::default()))
    }
}

async fn serve(store: SlowStore) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StoreServer::new(store))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

// ---------------------------------------------------------------------------------------
// HTTP helpers

struct Api {
    router: axum::Router,
    registry: Registry,
}

fn api(cfg: QuerierConfig) -> Api {
    let registry = Registry::new();
    let querier = Querier::new(cfg, &registry).unwrap();
    Api {
        router: querier.routes(),
        registry,
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Api {
    /// POST (the queries are too long for a URL) a form to `/api/v1/query`.
    fn query(&self, form: String) -> impl std::future::Future<Output = (StatusCode, String)> {
        let router = self.router.clone();
        async move {
            let req = Request::builder()
                .method("POST")
                .uri("/api/v1/query")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form))
                .unwrap();
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    }

    async fn instant(&self, q: &str) -> (StatusCode, serde_json::Value) {
        let (s, b) = self
            .query(format!("query={}&time=1700000000", enc(q)))
            .await;
        (
            s,
            serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}")),
        )
    }

    fn gauge(&self, name: &str) -> f64 {
        let m = self.registry.encode();
        let line = m
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} not in\n{m}"));
        line[name.len() + 1..].trim().parse().unwrap()
    }
}

/// Poll `cond` until it holds, failing after 20 s (a bound, not a schedule).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < until, "still not: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_bad_data(s: StatusCode, v: &serde_json::Value, needle: &str) {
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["errorType"], "bad_data", "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.starts_with("invalid parameter \"query\": "), "{e}");
    assert!(e.contains(needle), "{e}");
}

// ---------------------------------------------------------------------------------------
// Tests

/// The probe's queries used to overflow a worker's stack and abort the process; now
/// each is a 400 naming the limit, and the deepest accepted queries are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_queries_are_refused_and_the_limit_is_answered() {
    let a = api(QuerierConfig::default());
    let nested = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    let limit = "expression nested more than 1000 levels deep (operators and brackets; the limit is --query.max-depth)";
    for q in [
        vec!["1"; 1_500].join("+"),
        nested("abs(", "x", ")", 1_500),
        nested("sum(", "x", ")", 2_000),
        nested("max_over_time((", "x", ")[5m:1m])", 1_000),
    ] {
        let (s, v) = a.instant(&q).await;
        assert_bad_data(s, &v, limit);
    }
    // At the limit: parsed and evaluated on the query thread's stack.
    let (s, v) = a.instant(&vec!["1"; 1_000].join("+")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["result"][1], "1000");
    let (s, v) = a.instant(&nested("sum(", "x", ")", 999)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The query thread frees its slot just after it sends the answer.
    eventually("no query in flight", || {
        a.gauge("strata_querier_queries_in_flight") == 0.0
    })
    .await;

    // The flag sets the limit.
    let a = api(QuerierConfig {
        max_depth: 10,
        ..Default::default()
    });
    let (s, v) = a.instant(&["1"; 12].join("+")).await;
    assert_bad_data(
        s,
        &v,
        "1:22: parse error: expression nested more than 10 levels deep",
    );
    let (s, _) = a.instant(&["1"; 10].join("+")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_errors_say_what_and_where() {
    let a = api(QuerierConfig::default());
    let (s, v) = a.instant("1 +").await;
    assert_bad_data(s, &v, "");
    assert_eq!(
        v["error"],
        "invalid parameter \"query\": 1:4: parse error: unexpected end of input"
    );
    let (s, v) = a.instant("rate(x[999999999999y])").await;
    assert_bad_data(
        s,
        &v,
        r#"1:8: parse error: duration "999999999999y" out of range"#,
    );
}

/// A query stuck on a store past its `timeout` answers 503 and stops: its store read
/// is abandoned and its slot (`--query.max-concurrent=1`) serves the next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_query_stops_and_frees_its_slot() {
    let store = SlowStore::default();
    let addr = serve(store.clone()).await;
    let a = api(QuerierConfig {
        endpoints: vec![addr],
        max_concurrent: 1,
        ..Default::default()
    });
    let (s, b) = a
        .query("query=slow&time=1700000000&timeout=300ms".into())
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(
        b,
        r#"{"status":"error","errorType":"timeout","error":"query timed out in query execution"}"#
    );
    eventually("the store read is abandoned", || {
        store.serving.load(Ordering::SeqCst) == 0
    })
    .await;
    eventually("no query in flight", || {
        a.gauge("strata_querier_queries_in_flight") == 0.0
    })
    .await;
    let (s, v) = a.instant("fast").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A client that goes away mid-query (its request future dropped, as axum does on
/// disconnect) stops the work: store read abandoned, slot free, nothing in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_query_stops_and_frees_its_slot() {
    let store = SlowStore::default();
    let addr = serve(store.clone()).await;
    let a = api(QuerierConfig {
        endpoints: vec![addr],
        max_concurrent: 1,
        ..Default::default()
    });
    let req = tokio::spawn(a.query("query=slow&time=1700000000".into()));
    eventually("the query reaches the store", || {
        store.serving.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(a.gauge("strata_querier_queries_in_flight"), 1.0);
    req.abort();
    assert!(req.await.unwrap_err().is_cancelled());
    eventually("the store read is abandoned", || {
        store.serving.load(Ordering::SeqCst) == 0
    })
    .await;
    eventually("no query in flight", || {
        a.gauge("strata_querier_queries_in_flight") == 0.0
    })
    .await;
    let (s, v) = a.instant("fast").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
