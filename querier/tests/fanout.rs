//! The querier against real parts: an in-process tonic Store API server over in-memory
//! series and a FILESYSTEM bucket holding blocks written by `BlockWriter`, exercised
//! through the HTTP routes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use strata_kit::metrics::Registry;
use strata_objstore::Bucket;
use strata_promql::{SelectHints, Storage};
use strata_proto::prometheus::{label_matcher, Label};
use strata_proto::store::store_server::{Store, StoreServer};
use strata_proto::store::{
    chunk, series_response, AggrChunk, Chunk, InfoRequest, InfoResponse, LabelNamesRequest,
    LabelNamesResponse, LabelSet, LabelValuesRequest, LabelValuesResponse, Series, SeriesRequest,
    SeriesResponse,
};
use strata_querier::{Querier, QuerierConfig};
use strata_tsdb::block::{BlockWriter, MetaExtra};
use strata_tsdb::chunkenc::{ChunkCutter, XorChunk};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::{MatchOp, Matcher};
use strata_tsdb::meta::{BlockMeta, BlockMetaCompaction};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tower::ServiceExt;
use ulid::Ulid;

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 15_000;

type Data = Vec<(Labels, Vec<(i64, f64)>)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// `n` samples every 15 s from `T0 + offset`, value = index.
fn samples(n: i64, offset: i64) -> Vec<(i64, f64)> {
    (0..n).map(|i| (T0 + offset + i * STEP, i as f64)).collect()
}

// ---------------------------------------------------------------------------------------
// An in-memory Store API server

#[derive(Clone, Default)]
struct MemStore {
    /// tenant → series
    data: Arc<HashMap<String, Data>>,
    ext: Vec<(String, String)>,
}

fn tenant<T>(r: &GrpcRequest<T>) -> String {
    r.metadata()
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_string()
}

fn matchers(ms: &[strata_proto::prometheus::LabelMatcher]) -> Vec<Matcher> {
    ms.iter()
        .map(|m| {
            let op = match label_matcher::Type::try_from(m.r#type).unwrap() {
                label_matcher::Type::Eq => MatchOp::Equal,
                label_matcher::Type::Neq => MatchOp::NotEqual,
                label_matcher::Type::Re => MatchOp::RegexMatch,
                label_matcher::Type::Nre => MatchOp::RegexNoMatch,
            };
            Matcher::new(op, m.name.clone(), m.value.clone()).unwrap()
        })
        .collect()
}

impl MemStore {
    fn matching(&self, tenant: &str, ms: &[Matcher], mint: i64, maxt: i64) -> Data {
        self.data
            .get(tenant)
            .into_iter()
            .flatten()
            .filter(|(l, _)| ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
            .map(|(l, s)| {
                (
                    l.clone(),
                    s.iter()
                        .copied()
                        .filter(|(t, _)| *t >= mint && *t <= maxt)
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }
}

#[tonic::async_trait]
impl Store for MemStore {
    async fn info(
        &self,
        _r: GrpcRequest<InfoRequest>,
    ) -> Result<GrpcResponse<InfoResponse>, Status> {
        let labels: Vec<Label> = self
            .ext
            .iter()
            .map(|(n, v)| Label {
                name: n.clone(),
                value: v.clone(),
            })
            .collect();
        Ok(GrpcResponse::new(InfoResponse {
            labels: labels.clone(),
            min_time: i64::MIN,
            max_time: i64::MAX,
            label_sets: if labels.is_empty() {
                vec![]
            } else {
                vec![LabelSet { labels }]
            },
            ..Default::default()
        }))
    }

    type SeriesStream = tokio_stream::Iter<std::vec::IntoIter<Result<SeriesResponse, Status>>>;

    async fn series(
        &self,
        r: GrpcRequest<SeriesRequest>,
    ) -> Result<GrpcResponse<Self::SeriesStream>, Status> {
        let tenant = tenant(&r);
        let req = r.into_inner();
        let frames: Vec<_> = self
            .matching(
                &tenant,
                &matchers(&req.matchers),
                req.min_time,
                req.max_time,
            )
            .into_iter()
            .map(|(l, s)| {
                let mut c = XorChunk::new();
                for &(t, v) in &s {
                    c.append(t, v);
                }
                let chunks = if req.skip_chunks {
                    vec![]
                } else {
                    vec![AggrChunk {
                        min_time: s[0].0,
                        max_time: s[s.len() - 1].0,
                        raw: Some(Chunk {
                            r#type: chunk::Encoding::Xor as i32,
                            data: bytes::Bytes::copy_from_slice(c.bytes()),
                            hash: 0,
                        }),
                        ..Default::default()
                    }]
                };
                Ok(SeriesResponse {
                    result: Some(series_response::Result::Series(Series {
                        labels: l
                            .iter()
                            .map(|l| Label {
                                name: l.name.to_string(),
                                value: l.value.to_string(),
                            })
                            .collect(),
                        chunks,
                    })),
                })
            })
            .collect();
        Ok(GrpcResponse::new(tokio_stream::iter(frames)))
    }

    async fn label_names(
        &self,
        r: GrpcRequest<LabelNamesRequest>,
    ) -> Result<GrpcResponse<LabelNamesResponse>, Status> {
        let tenant = tenant(&r);
        let req = r.into_inner();
        let mut names: Vec<String> = self
            .matching(&tenant, &[], req.start, req.end)
            .iter()
            .flat_map(|(l, _)| l.iter().map(|l| l.name.to_string()).collect::<Vec<_>>())
            .collect();
        names.sort();
        names.dedup();
        Ok(GrpcResponse::new(LabelNamesResponse {
            names,
            ..Default::default()
        }))
    }

    async fn label_values(
        &self,
        r: GrpcRequest<LabelValuesRequest>,
    ) -> Result<GrpcResponse<LabelValuesResponse>, Status> {
        let tenant = tenant(&r);
        let req = r.into_inner();
        let mut values: Vec<String> = self
            .matching(&tenant, &[], req.start, req.end)
            .iter()
            .filter_map(|(l, _)| l.get(&req.label).map(str::to_string))
            .collect();
        values.sort();
        values.dedup();
        Ok(GrpcResponse::new(LabelValuesResponse {
            values,
            ..Default::default()
        }))
    }
}

async fn serve_store(store: MemStore) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StoreServer::new(store))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

/// An address nothing listens on.
async fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap().to_string();
    drop(l);
    a
}

// ---------------------------------------------------------------------------------------
// Blocks in a FILESYSTEM bucket

async fn upload_block(
    bucket: &Bucket,
    scratch: &Path,
    tenant: &str,
    data: &Data,
    compaction: Option<BlockMetaCompaction>,
    ulid: Ulid,
) -> BlockMeta {
    let mut w = BlockWriter::new(scratch, ulid).unwrap();
    for (l, s) in data {
        let mut c = ChunkCutter::new(2 * 3600 * 1000);
        for &(t, v) in s {
            c.append(t, v);
        }
        w.add_series(l.clone(), c.finish()).unwrap();
    }
    let meta = w
        .finish(Some(MetaExtra {
            compaction,
            ..Default::default()
        }))
        .unwrap();
    bucket
        .upload_dir(scratch.join(ulid.to_string()), &format!("{tenant}/{ulid}"))
        .await
        .unwrap();
    meta
}

fn compaction(level: u32, sources: &[Ulid]) -> Option<BlockMetaCompaction> {
    Some(BlockMetaCompaction {
        level,
        sources: sources.to_vec(),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------
// HTTP helpers

struct Api {
    router: axum::Router,
    registry: Registry,
    querier: Arc<Querier>,
}

fn api(cfg: QuerierConfig) -> Api {
    let registry = Registry::new();
    let querier = Querier::new(cfg, &registry).unwrap();
    Api {
        router: querier.routes(),
        registry,
        querier,
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, String) {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if method == "POST" {
            b = b.header("content-type", "application/x-www-form-urlencoded");
        }
        let resp = self
            .router
            .clone()
            .oneshot(b.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(ct.as_deref(), Some("application/json"), "{uri}");
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get(&self, uri: &str) -> (StatusCode, String) {
        self.call("GET", uri, &[], "").await
    }

    async fn get_as(&self, tenant: &str, uri: &str) -> (StatusCode, String) {
        self.call("GET", uri, &[("X-Scope-OrgID", tenant)], "")
            .await
    }

    async fn json(&self, tenant: &str, uri: &str) -> serde_json::Value {
        let (status, body) = self.get_as(tenant, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        serde_json::from_str(&body).unwrap()
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

/// `__name__` values of a `/api/v1/series` answer.
fn names(v: &serde_json::Value) -> Vec<String> {
    let mut n: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["__name__"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

fn engine_works() -> bool {
    struct Empty;
    impl Storage for Empty {
        fn select(
            &self,
            _: &[Matcher],
            _: i64,
            _: i64,
            _: &SelectHints,
        ) -> Result<Vec<strata_promql::StorageSeries>, strata_promql::StorageError> {
            Ok(vec![])
        }
    }
    let ok = strata_promql::Engine::new(Default::default())
        .instant(&Empty, "1", 0)
        .is_ok();
    eprintln!("engine works: {ok}");
    ok
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_shapes_errors_prefix_and_post() {
    let a = api(QuerierConfig::default());

    let (s, b) = a.get("/api/v1/status/buildinfo").await;
    assert_eq!(s, 200);
    assert!(
        b.starts_with(r#"{"status":"success","data":{"version":""#),
        "{b}"
    );
    assert_eq!(
        a.get("/api/v1/metadata").await.1,
        r#"{"status":"success","data":{}}"#
    );
    assert_eq!(
        a.get("/api/v1/query_exemplars?query=up").await.1,
        r#"{"status":"success","data":[]}"#
    );

    let cases: &[(&str, u16, &str)] = &[
        ("/api/v1/query_range?query=up&start=10&end=5&step=1", 400, "end timestamp must not be before start time"),
        ("/api/v1/query_range?query=up&start=0&end=5&step=0", 400, "zero or negative query resolution step widths are not accepted. Try a positive integer"),
        ("/api/v1/query_range?query=up&start=0&end=5&step=-1s", 400, r#"invalid parameter \"step\": cannot parse \"-1s\" to a valid duration"#),
        ("/api/v1/query_range?query=up&start=0&end=11001&step=1", 400, "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"),
        ("/api/v1/query_range?query=up&start=x&end=5&step=1", 400, r#"invalid parameter \"start\": cannot parse \"x\" to a valid timestamp"#),
        ("/api/v1/query_range?query=up&start=1&step=1", 400, r#"invalid parameter \"end\": cannot parse \"\" to a valid timestamp"#),
        ("/api/v1/query?query=up&time=y", 400, r#"invalid parameter \"time\": Invalid time value for 'time': cannot parse \"y\" to a valid timestamp"#),
        ("/api/v1/query?query=up&timeout=z", 400, r#"invalid parameter \"timeout\": cannot parse \"z\" to a valid duration"#),
        ("/api/v1/query?query=", 400, r#"invalid parameter \"query\": 1:1: parse error: no expression found in input"#),
        ("/api/v1/series", 400, "no match[] parameter provided"),
        ("/api/v1/series?match[]=%7Bjob%3D%22%22%7D", 400, r#"invalid parameter \"match[]\": match[] must contain at least one non-empty matcher"#),
        ("/api/v1/series?match[]=up&limit=-1", 400, r#"invalid parameter \"limit\": limit must be non-negative"#),
        ("/api/v1/label/a-b/values", 400, r#"invalid label name: \"a-b\""#),
        ("/api/v1/query?query=up&partial_response=maybe", 400, r#"'partial_response' parameter: strconv.ParseBool: parsing \"maybe\": invalid syntax"#),
        ("/api/v1/query?query=up&max_source_resolution=-5m", 400, r#"'max_source_resolution' parameter: cannot parse \"-5m\" to a valid duration"#),
    ];
    for (uri, status, msg) in cases {
        for prefix in ["", "/prometheus"] {
            let (s, body) = a.get(&format!("{prefix}{uri}")).await;
            assert_eq!(s.as_u16(), *status, "{uri}: {body}");
            assert_eq!(
                body,
                format!(r#"{{"status":"error","errorType":"bad_data","error":"{msg}"}}"#),
                "{uri}"
            );
        }
    }

    // POST form: the body is read (and wins over the URL).
    let (s, body) = a
        .call(
            "POST",
            "/prometheus/api/v1/query_range?step=1",
            &[],
            "query=up&start=0&end=5&step=0",
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("zero or negative"), "{body}");

    // A bad tenant is refused on every endpoint.
    for uri in [
        "/api/v1/query?query=up",
        "/api/v1/series?match[]=up",
        "/api/v1/labels",
        "/api/v1/label/job/values",
    ] {
        let (s, body) = a.get_as("a/b", uri).await;
        assert_eq!(s, 400, "{uri}");
        assert_eq!(
            body,
            r#"{"status":"error","errorType":"bad_data","error":"tenant ID 'a/b' contains unsupported character '/'"}"#
        );
    }

    // No sources: empty answers of the right shape.
    assert_eq!(
        a.get("/api/v1/series?match[]=up").await.1,
        r#"{"status":"success","data":[]}"#
    );
    assert_eq!(
        a.get("/api/v1/labels").await.1,
        r#"{"status":"success","data":[]}"#
    );
    assert_eq!(
        a.get("/prometheus/api/v1/label/job/values").await.1,
        r#"{"status":"success","data":[]}"#
    );
    if engine_works() {
        let (s, body) = a.get("/api/v1/query?query=1%2B1&time=1700000000.5").await;
        assert_eq!(
            (s.as_u16(), body.as_str()),
            (
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.500,"2"]}}"#
            )
        );
        let (s, body) = a.get("/api/v1/query?query=up&time=1700000000").await;
        assert_eq!(
            (s.as_u16(), body.as_str()),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#
            )
        );
        let (s, body) = a
            .get("/api/v1/query_range?query=1&start=0&end=30&step=15s")
            .await;
        assert_eq!(
            (s.as_u16(), body.as_str()),
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[0,"1"],[15,"1"],[30,"1"]]}]}}"#
            )
        );
        let (s, body) = a.get("/api/v1/query?query=sum(").await;
        assert_eq!(s, 400, "{body}");
        assert!(
            body.starts_with(
                r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": "#
            ),
            "{body}"
        );
    }

    let m = a.registry.encode();
    assert!(
        m.contains(r#"strata_querier_queries_total{endpoint="series",status="success"}"#),
        "{m}"
    );
    assert!(
        m.contains(r#"strata_querier_queries_total{endpoint="query_range",status="bad_data"}"#),
        "{m}"
    );
    assert!(
        m.contains("strata_querier_query_duration_seconds_bucket"),
        "{m}"
    );
}

/// Store endpoint + bucket: a series present in both (an ingester's block also shipped to
/// the bucket) is merged, never double-counted; series only in one source show up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_bucket_merge_without_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let both = labels(&[("__name__", "up"), ("job", "node")]);
    // The bucket has the first 30 samples, the store all 40 (the ingester's head plus the
    // block it shipped).
    upload_block(
        &bucket,
        &dir.path().join("scratch"),
        "team-a",
        &vec![
            (both.clone(), samples(30, 0)),
            (
                labels(&[("__name__", "old_only"), ("job", "node")]),
                samples(10, 0),
            ),
        ],
        None,
        Ulid::new(),
    )
    .await;
    let store = MemStore {
        data: Arc::new(HashMap::from([(
            "team-a".to_string(),
            vec![
                (both.clone(), samples(40, 0)),
                (
                    labels(&[("__name__", "head_only"), ("job", "node")]),
                    samples(5, 0),
                ),
            ],
        )])),
        ext: vec![],
    };
    let addr = serve_store(store).await;
    let a = api(QuerierConfig {
        endpoints: vec![addr],
        bucket: Some(bucket),
        ..Default::default()
    });

    let v = a
        .json("team-a", "/api/v1/series?match[]=%7Bjob%3D%22node%22%7D")
        .await;
    assert_eq!(names(&v), ["head_only", "old_only", "up"]);
    assert!(v.get("warnings").is_none(), "{v}");

    // The storage the engine sees: one series, 40 distinct samples.
    let storage = a.querier.storage(
        a.querier.default_fetch_options("team-a"),
        tokio::runtime::Handle::current(),
    );
    let got = tokio::task::spawn_blocking(move || {
        storage.select(
            &[Matcher::equal("__name__", "up")],
            T0,
            T0 + 3_600_000,
            &SelectHints::default(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels, both);
    assert_eq!(got[0].samples, samples(40, 0));

    let v = a.json("team-a", "/api/v1/label/__name__/values").await;
    assert_eq!(
        v["data"],
        serde_json::json!(["head_only", "old_only", "up"])
    );
    let v = a.json("team-a", "/api/v1/labels?match[]=up").await;
    assert_eq!(v["data"], serde_json::json!(["__name__", "job"]));

    if engine_works() {
        let t = (T0 + 39 * STEP) as f64 / 1000.0;
        let v = a
            .json(
                "team-a",
                &format!(
                    "/api/v1/query?query={}&time={t}",
                    enc("count_over_time(up[1h])")
                ),
            )
            .await;
        assert_eq!(v["data"]["result"][0]["value"][1], "40", "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_endpoint_is_a_warning_or_an_error() {
    let store = MemStore {
        data: Arc::new(HashMap::from([(
            "anonymous".to_string(),
            vec![(labels(&[("__name__", "up")]), samples(4, 0))],
        )])),
        ext: vec![],
    };
    let live = serve_store(store).await;
    let dead = dead_addr().await;
    let cfg = QuerierConfig {
        endpoints: vec![live, dead.clone()],
        store_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let a = api(cfg.clone());

    let v = a.json("anonymous", "/api/v1/series?match[]=up").await;
    assert_eq!(names(&v), ["up"]);
    let w = v["warnings"][0].as_str().unwrap();
    assert!(w.starts_with(&format!("endpoint {dead}: ")), "{w}");

    let (s, body) = a
        .get("/api/v1/series?match[]=up&partial_response=false")
        .await;
    assert_eq!(s, 422, "{body}");
    assert!(
        body.starts_with(&format!(
            r#"{{"status":"error","errorType":"execution","error":"endpoint {dead}: "#
        )),
        "{body}"
    );

    // The flag sets the default.
    let strict = api(QuerierConfig {
        partial_response: false,
        ..cfg
    });
    assert_eq!(strict.get("/api/v1/labels").await.0, 422);
    assert_eq!(strict.get("/api/v1/labels?partial_response=1").await.0, 200);

    if engine_works() {
        let t = (T0 + 3 * STEP) as f64 / 1000.0;
        let v = a
            .json("anonymous", &format!("/api/v1/query?query=up&time={t}"))
            .await;
        assert_eq!(v["data"]["result"][0]["value"][1], "3", "{v}");
        assert!(
            v["warnings"][0]
                .as_str()
                .unwrap()
                .starts_with(&format!("endpoint {dead}: ")),
            "{v}"
        );
        let (s, body) = a
            .get(&format!(
                "/api/v1/query?query=up&time={t}&partial_response=false"
            ))
            .await;
        assert_eq!(s, 422, "{body}");
        assert!(body.contains(r#""errorType":"execution""#), "{body}");
    }
    let m = a.registry.encode();
    assert!(
        m.contains(&format!(
            r#"strata_querier_store_request_failures_total{{store="{dead}"}}"#
        )),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_compacted_source_blocks_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let t = "anonymous";
    let s = |n: &str| vec![(labels(&[("__name__", n)]), samples(8, 0))];

    let plain = Ulid::new();
    upload_block(&bucket, &scratch, t, &s("plain"), None, plain).await;
    let deleted = Ulid::new();
    upload_block(&bucket, &scratch, t, &s("deleted"), None, deleted).await;
    bucket
        .put(
            &format!("{t}/{deleted}/deletion-mark.json"),
            bytes::Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    let (src1, src2) = (Ulid::new(), Ulid::new());
    upload_block(&bucket, &scratch, t, &s("in_source"), None, src1).await;
    upload_block(&bucket, &scratch, t, &s("in_source"), None, src2).await;
    let compacted = Ulid::new();
    upload_block(
        &bucket,
        &scratch,
        t,
        &s("compacted"),
        compaction(2, &[src1, src2]),
        compacted,
    )
    .await;

    let a = api(QuerierConfig {
        bucket: Some(bucket),
        ..Default::default()
    });
    let v = a
        .json(
            t,
            &format!("/api/v1/series?match[]={}", enc(r#"{__name__=~".+"}"#)),
        )
        .await;
    assert_eq!(names(&v), ["compacted", "plain"]);
    let v = a.json(t, "/api/v1/label/__name__/values").await;
    assert_eq!(v["data"], serde_json::json!(["compacted", "plain"]));
    // Time range: a window before the data finds nothing.
    let v = a
        .json(
            t,
            &format!(
                "/api/v1/series?match[]=plain&start=0&end={}",
                T0 / 1000 - 10
            ),
        )
        .await;
    assert_eq!(v["data"], serde_json::json!([]));
    // Samples come back through the range reads.
    let storage = a.querier.storage(
        a.querier.default_fetch_options(t),
        tokio::runtime::Handle::current(),
    );
    let got = tokio::task::spawn_blocking(move || {
        storage.select(
            &[Matcher::equal("__name__", "plain")],
            T0,
            T0 + 60_000,
            &SelectHints::default(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got[0].samples, samples(5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    for tn in ["team-a", "team-b"] {
        let series = vec![(
            labels(&[("__name__", &format!("bucket_{tn}")), ("owner", tn)]),
            samples(4, 0),
        )];
        upload_block(&bucket, &scratch, tn, &series, None, Ulid::new()).await;
    }
    let store = MemStore {
        data: Arc::new(HashMap::from([
            (
                "team-a".to_string(),
                vec![(
                    labels(&[("__name__", "store_team-a"), ("owner", "team-a")]),
                    samples(4, 0),
                )],
            ),
            (
                "team-b".to_string(),
                vec![(
                    labels(&[("__name__", "store_team-b"), ("owner", "team-b")]),
                    samples(4, 0),
                )],
            ),
        ])),
        ext: vec![],
    };
    let addr = serve_store(store).await;
    let a = api(QuerierConfig {
        endpoints: vec![addr],
        bucket: Some(bucket),
        ..Default::default()
    });
    let all = enc(r#"{__name__=~".+"}"#);
    for (me, other) in [("team-a", "team-b"), ("team-b", "team-a")] {
        let v = a.json(me, &format!("/api/v1/series?match[]={all}")).await;
        assert_eq!(names(&v), [format!("bucket_{me}"), format!("store_{me}")]);
        let v = a.json(me, "/api/v1/label/owner/values").await;
        assert_eq!(v["data"], serde_json::json!([me]));
        let v = a
            .json(me, &format!("/api/v1/label/owner/values?match[]={all}"))
            .await;
        assert_eq!(v["data"], serde_json::json!([me]));
        let v = a
            .json(
                me,
                &format!(
                    "/api/v1/series?match[]={}",
                    enc(&format!("{{owner=\"{other}\"}}"))
                ),
            )
            .await;
        assert_eq!(v["data"], serde_json::json!([]));
        // THANOS-TENANT works too.
        let (s, body) = a
            .call(
                "GET",
                "/api/v1/label/owner/values",
                &[("THANOS-TENANT", me)],
                "",
            )
            .await;
        assert_eq!(s, 200);
        assert!(body.contains(me) && !body.contains(other), "{body}");
        if engine_works() {
            let t = (T0 + 3 * STEP) as f64 / 1000.0;
            let v = a
                .json(
                    me,
                    &format!(
                        "/api/v1/query?query={}&time={t}",
                        enc(r#"count({__name__=~".+"})"#)
                    ),
                )
                .await;
            assert_eq!(v["data"]["result"][0]["value"][1], "2", "{v}");
        }
    }
    // No header: the anonymous tenant, which has nothing.
    let v = a
        .json("anonymous", &format!("/api/v1/series?match[]={all}"))
        .await;
    assert_eq!(v["data"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_replicas_are_deduplicated() {
    // Replica a misses [200s, 400s), replica b (5 s later) misses [400s, 500s).
    let a_samples: Vec<_> = samples(40, 0)
        .into_iter()
        .filter(|(t, _)| !(T0 + 200_000..T0 + 400_000).contains(t))
        .collect();
    let b_samples: Vec<_> = samples(40, 5000)
        .into_iter()
        .filter(|(t, _)| !(T0 + 400_000..T0 + 500_000).contains(t))
        .collect();
    let store = MemStore {
        data: Arc::new(HashMap::from([(
            "anonymous".to_string(),
            vec![
                (
                    labels(&[("__name__", "up"), ("replica", "a")]),
                    a_samples.clone(),
                ),
                (
                    labels(&[("__name__", "up"), ("replica", "b")]),
                    b_samples.clone(),
                ),
            ],
        )])),
        ext: vec![],
    };
    let addr = serve_store(store).await;
    let a = api(QuerierConfig {
        endpoints: vec![addr],
        replica_labels: vec!["replica".into()],
        ..Default::default()
    });

    let v = a.json("anonymous", "/api/v1/series?match[]=up").await;
    assert_eq!(v["data"], serde_json::json!([{"__name__": "up"}]));
    let v = a
        .json("anonymous", "/api/v1/series?match[]=up&dedup=false")
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    // replicaLabels[] overrides the flag: deduplicating by a label nobody has is a no-op.
    let v = a
        .json(
            "anonymous",
            &format!("/api/v1/series?match[]=up&{}=zone", enc("replicaLabels[]")),
        )
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let v = a.json("anonymous", "/api/v1/labels").await;
    assert_eq!(v["data"], serde_json::json!(["__name__"]));

    let storage = a.querier.storage(
        a.querier.default_fetch_options("anonymous"),
        tokio::runtime::Handle::current(),
    );
    let got = tokio::task::spawn_blocking(move || {
        storage.select(
            &[Matcher::equal("__name__", "up")],
            T0,
            T0 + 3_600_000,
            &SelectHints::default(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got.len(), 1);
    let s = &got[0].samples;
    let gaps: Vec<i64> = s.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        gaps.iter().all(|g| (10_000..=45_000).contains(g)),
        "{gaps:?}"
    );
    assert_eq!(s[0].0, T0);
    assert!(s.last().unwrap().0 >= T0 + 39 * STEP);

    if engine_works() {
        let t = (T0 + 39 * STEP) as f64 / 1000.0;
        let q = enc("count_over_time(up[1h])");
        let v = a
            .json("anonymous", &format!("/api/v1/query?query={q}&time={t}"))
            .await;
        assert_eq!(v["data"]["result"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(
            v["data"]["result"][0]["value"][1],
            s.len().to_string(),
            "{v}"
        );
        let v = a
            .json(
                "anonymous",
                &format!("/api/v1/query?query={q}&time={t}&dedup=false"),
            )
            .await;
        assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2, "{v}");
    }
}

/// An endpoint's advertised external labels are added to its series, so they line up
/// with the blocks it shipped (whose meta.json carries the same labels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_external_labels_are_added() {
    let store = MemStore {
        data: Arc::new(HashMap::from([(
            "anonymous".to_string(),
            vec![(labels(&[("__name__", "up")]), samples(2, 0))],
        )])),
        ext: vec![("cluster".into(), "eu1".into())],
    };
    let addr = serve_store(store).await;
    let a = api(QuerierConfig {
        endpoints: vec![addr],
        ..Default::default()
    });
    let v = a.json("anonymous", "/api/v1/series?match[]=up").await;
    assert_eq!(
        v["data"],
        serde_json::json!([{"__name__": "up", "cluster": "eu1"}])
    );
    let v = a.json("anonymous", "/api/v1/labels").await;
    assert_eq!(v["data"], serde_json::json!(["__name__", "cluster"]));
}
