//! Per-query limits and `stats=all` through the querier's routes, over an in-process
//! Store API server and a FILESYSTEM bucket: each limit trips with its documented
//! message, and the statistics count exactly the data read.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use strata_kit::metrics::Registry;
use strata_objstore::Bucket;
use strata_proto::prometheus::Label;
use strata_proto::store::store_server::{Store, StoreServer};
use strata_proto::store::{
    chunk, series_response, AggrChunk, Chunk, InfoRequest, InfoResponse, LabelNamesRequest,
    LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, Series, SeriesRequest,
    SeriesResponse,
};
use strata_querier::stats::{max_chunk_bytes_message, max_series_message, TOO_MANY_SAMPLES};
use strata_querier::{Querier, QuerierConfig};
use strata_tsdb::block::BlockWriter;
use strata_tsdb::chunkenc::{ChunkCutter, XorChunk};
use strata_tsdb::labels::Labels;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tower::ServiceExt;

const T0: i64 = 1_700_000_000_000;
/// Series and samples per series each source holds: metric `x`, `i="0"…`.
const SERIES: usize = 10;
const SAMPLES: usize = 100;

fn data(metric: &str) -> Vec<(Labels, Vec<(i64, f64)>)> {
    (0..SERIES)
        .map(|i| {
            let l = Labels::from_pairs([("__name__", metric), ("i", &i.to_string())]);
            let s = (0..SAMPLES as i64)
                .map(|j| (T0 + j * 15_000, j as f64))
                .collect();
            (l, s)
        })
        .collect()
}

/// Answers every `Series` call with `data("x")`, one XOR chunk per series.
#[derive(Clone)]
struct FixedStore;

#[tonic::async_trait]
impl Store for FixedStore {
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
        let wants_x = r.get_ref().matchers.iter().any(|m| m.value == "x");
        let frames: Vec<_> = data("x")
            .into_iter()
            .filter(|_| wants_x)
            .map(|(l, s)| {
                let mut c = XorChunk::new();
                for &(t, v) in &s {
                    c.append(t, v);
                }
                Ok(SeriesResponse {
                    result: Some(series_response::Result::Series(Series {
                        labels: l
                            .iter()
                            .map(|l| Label {
                                name: l.name.to_string(),
                                value: l.value.to_string(),
                            })
                            .collect(),
                        chunks: vec![AggrChunk {
                            min_time: s[0].0,
                            max_time: s[s.len() - 1].0,
                            raw: Some(Chunk {
                                r#type: chunk::Encoding::Xor as i32,
                                data: bytes::Bytes::copy_from_slice(c.bytes()),
                                hash: 0,
                            }),
                            ..Default::default()
                        }],
                    })),
                })
            })
            .collect();
        Ok(GrpcResponse::new(tokio_stream::iter(frames)))
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

async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StoreServer::new(FixedStore))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

/// A FILESYSTEM bucket holding one block of `data("y")` for tenant `anonymous`.
async fn bucket(dir: &std::path::Path) -> Bucket {
    let bucket = Bucket::filesystem(dir.join("bucket")).unwrap();
    let ulid = ulid::Ulid::new();
    let scratch = dir.join("scratch");
    let mut w = BlockWriter::new(&scratch, ulid).unwrap();
    for (l, s) in data("y") {
        let mut c = ChunkCutter::new(2 * 3600 * 1000);
        for (t, v) in s {
            c.append(t, v);
        }
        w.add_series(l, c.finish()).unwrap();
    }
    w.finish(None).unwrap();
    bucket
        .upload_dir(scratch.join(ulid.to_string()), &format!("anonymous/{ulid}"))
        .await
        .unwrap();
    bucket
}

async fn get(q: &Arc<Querier>, uri: &str) -> (u16, serde_json::Value) {
    let resp = q
        .routes()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

fn querier(cfg: QuerierConfig) -> Arc<Querier> {
    Querier::new(cfg, &Registry::new()).unwrap()
}

/// An instant query at the last sample over the whole series.
fn instant(q: &str, extra: &str) -> String {
    let t = (T0 + (SAMPLES as i64 - 1) * 15_000) / 1000;
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/api/v1/query?query={enc}&time={t}{extra}")
}

/// The `stats=all` cost of the source whose name starts with `prefix`.
fn source(b: &serde_json::Value, prefix: &str) -> serde_json::Value {
    b["data"]["stats"]["strata"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {b}"))
        .clone()
}

fn assert_limit(status: u16, body: &serde_json::Value, msg: &str) {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution", "{body}");
    assert_eq!(body["error"], msg, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_trips_with_its_message_from_endpoints_and_the_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = serve().await;
    let bucket = bucket(tmp.path()).await;
    let cfg = |f: &dyn Fn(&mut QuerierConfig)| {
        let mut c = QuerierConfig {
            endpoints: vec![addr.clone()],
            bucket: Some(bucket.clone()),
            block_listing_ttl: std::time::Duration::ZERO,
            ..Default::default()
        };
        f(&mut c);
        querier(c)
    };
    // Without limits both answer.
    let q = cfg(&|_| {});
    for m in ["x", "y"] {
        let (s, b) = get(
            &q,
            &instant(&format!("count(count_over_time({m}[1h]))"), ""),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["data"]["result"][0]["value"][1], SERIES.to_string());
    }
    // Series: the endpoint (x) and the bucket (y) each hold 10.
    let q = cfg(&|c| c.max_fetched_series = 5);
    for m in ["x", "y"] {
        let (s, b) = get(&q, &instant(&format!("count_over_time({m}[1h])"), "")).await;
        assert_limit(s, &b, &max_series_message(5));
    }
    assert!(max_series_message(5).starts_with(
        "the query exceeded the maximum number of series (limit: 5 series) (err-mimir-max-series-per-query)"
    ));
    // The series API is limited alike.
    let (s, b) = get(&q, "/api/v1/series?match[]=x").await;
    assert_limit(s, &b, &max_series_message(5));
    let q = cfg(&|c| c.max_fetched_series = 10);
    let (s, b) = get(&q, &instant("count_over_time(x[1h])", "")).await;
    assert_eq!(s, 200, "{b}");
    // Chunk bytes: ten chunks of well over 10 bytes each.
    let q = cfg(&|c| c.max_fetched_chunk_bytes = 100);
    for m in ["x", "y"] {
        let (s, b) = get(&q, &instant(&format!("count_over_time({m}[1h])"), "")).await;
        assert_limit(s, &b, &max_chunk_bytes_message(100));
    }
    assert!(max_chunk_bytes_message(100).starts_with(
        "the query exceeded the aggregated chunks size limit (limit: 100 bytes) (err-mimir-max-chunks-bytes-per-query)"
    ));
    // Samples, counted as Prometheus does (the points held at once): a range selector
    // holding 1,000 samples is refused at 500, a count over the same windows (one
    // series' 100 at a time, plus 10 outputs) answers — Prometheus answers it too.
    // (This asked for `sum(count_over_time(…))` to be refused when Strata counted
    // every raw sample a selector loaded.)
    let q = cfg(&|c| c.max_samples = 500);
    for m in ["x", "y"] {
        let (s, b) = get(&q, &instant(&format!("{m}[1h]"), "")).await;
        assert_limit(s, &b, TOO_MANY_SAMPLES);
        let (s, b) = get(&q, &instant(&format!("sum(count_over_time({m}[1h]))"), "")).await;
        assert_eq!(s, 200, "{b}");
    }
    // A selector fetching more than FETCH_SAMPLES_FACTOR times the limit is refused
    // while its chunks arrive, before the engine sees them. A 1m window holds 5 samples
    // per series (15 held with the outputs), but each series' one chunk of 100 is
    // fetched (and counted) whole: 1,000 > 10 × 50 is refused, 1,000 ≤ 10 × 100 not.
    for (limit, refused) in [(50, true), (100, false)] {
        let q = cfg(&|c| c.max_samples = limit);
        for m in ["x", "y"] {
            let (s, b) = get(&q, &instant(&format!("sum(count_over_time({m}[1m]))"), "")).await;
            if refused {
                assert_limit(s, &b, TOO_MANY_SAMPLES);
            } else {
                assert_eq!(s, 200, "{b}");
            }
        }
    }
    assert_eq!(strata_querier::stats::FETCH_SAMPLES_FACTOR, 10);
    assert_eq!(
        TOO_MANY_SAMPLES,
        "query processing would load too many samples into memory in query execution"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_all_counts_the_data_read() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = serve().await;
    let bucket = bucket(tmp.path()).await;
    let q = querier(QuerierConfig {
        endpoints: vec![addr.clone()],
        bucket: Some(bucket),
        block_listing_ttl: std::time::Duration::ZERO,
        ..Default::default()
    });
    let all = (SERIES * SAMPLES) as u64;

    // From the endpoint: every sample of every series, in one chunk each.
    let (s, b) = get(&q, &instant("count_over_time(x[1h])", "&stats=all")).await;
    assert_eq!(s, 200, "{b}");
    let st = &b["data"]["stats"];
    assert_eq!(st["samples"]["totalQueryableSamples"], all, "{st}");
    assert_eq!(st["samples"]["peakSamples"], all, "{st}");
    for t in [
        "evalTotalTime",
        "resultSortTime",
        "queryPreparationTime",
        "innerEvalTime",
        "execQueueTime",
        "execTotalTime",
    ] {
        assert!(st["timings"][t].as_f64().unwrap() >= 0.0, "{t}: {st}");
    }
    assert!(
        st["timings"]["execTotalTime"].as_f64() >= st["timings"]["evalTotalTime"].as_f64(),
        "{st}"
    );
    let ep = source(&b, "endpoint ");
    assert_eq!(ep["seriesFetched"], SERIES as u64, "{ep}");
    assert_eq!(ep["chunksFetched"], SERIES as u64, "{ep}");
    assert_eq!(ep["samplesFetched"], all, "{ep}");
    assert!(
        ep["chunkBytesFetched"].as_u64().unwrap() > SERIES as u64,
        "{ep}"
    );
    assert_eq!(ep["objectStoreRequests"], 0, "{ep}");
    assert_eq!(st["strata"]["seriesFetched"], SERIES as u64, "{st}");

    // From the bucket: the same counts, plus what was read from the object store: the
    // listing and the block's meta.json, and one range read of its chunks (the index
    // was read and cached by the query above).
    let (s, b) = get(&q, &instant("count_over_time(y[1h])", "&stats=all")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["stats"]["samples"]["totalQueryableSamples"], all);
    let bk = source(&b, "bucket ");
    assert_eq!(bk["seriesFetched"], SERIES as u64, "{bk}");
    assert_eq!(bk["samplesFetched"], all, "{bk}");
    assert_eq!(bk["chunksFetched"], SERIES as u64, "{bk}");
    assert_eq!(bk["objectStoreRequests"], 3, "{bk}");
    assert!(
        bk["objectStoreBytes"].as_u64() > bk["chunkBytesFetched"].as_u64(),
        "{bk}"
    );
    assert_eq!(source(&b, "endpoint ")["seriesFetched"], 0);

    // A vector selector reads one sample per series and step (Prometheus's counting).
    let (_, b) = get(&q, &instant("x", "&stats=all")).await;
    assert_eq!(
        b["data"]["stats"]["samples"]["totalQueryableSamples"],
        SERIES as u64
    );
    let end = (T0 + (SAMPLES as i64 - 1) * 15_000) / 1000;
    let (s, b) = get(
        &q,
        &format!(
            "/api/v1/query_range?query=x&start={}&end={end}&step=60&stats=all",
            end - 240
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["stats"]["samples"]["totalQueryableSamples"],
        5 * SERIES as u64
    );
    // Without `stats`, no statistics.
    let (_, b) = get(&q, &instant("x", "")).await;
    assert!(b["data"].get("stats").is_none(), "{b}");
}

/// An in-process store (as `strata all`'s ingester) holding one local block, the same
/// block the bucket holds: it leaves the block out when the bucket's read covers it.
#[derive(Debug)]
struct LocalBlock {
    meta: strata_tsdb::meta::BlockMeta,
}

impl strata_querier::fanout::LocalStore for LocalBlock {
    fn series(
        &self,
        _tenant: &str,
        _matchers: &[strata_tsdb::matcher::Matcher],
        _mint: i64,
        _maxt: i64,
        _skip_chunks: bool,
    ) -> Result<Vec<strata_querier::bucket::SeriesData>, String> {
        unreachable!("read through series_parts_skipping")
    }

    fn series_parts_skipping(
        &self,
        _tenant: &str,
        matchers: &[strata_tsdb::matcher::Matcher],
        mint: i64,
        maxt: i64,
        _skip_chunks: bool,
        count: &strata_querier::stats::Counter,
        in_bucket: &strata_querier::bucket::ReadFromBucket,
    ) -> Result<Vec<(Labels, strata_querier::series::Part)>, strata_querier::stats::StoreError>
    {
        if in_bucket.covers(&self.meta, mint, maxt) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (l, s) in data("y") {
            if !strata_querier::bucket::labels_match(&l, matchers) {
                continue;
            }
            count.series(&l)?;
            let s: Vec<_> = s
                .into_iter()
                .filter(|p| p.0 >= mint && p.0 <= maxt)
                .collect();
            count.samples(s.len())?;
            out.push((l, strata_querier::series::Part::Samples(s)));
        }
        Ok(out)
    }

    fn external_labels(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Issue #12: a block both an in-process store and the bucket hold is read once (from
/// the bucket, planned first); when the bucket then fails to read it, the local copy
/// fills in (with a warning), as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_held_locally_and_in_the_bucket_is_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = bucket(tmp.path()).await;
    let block = std::fs::read_dir(tmp.path().join("scratch"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("meta.json").is_file())
        .unwrap();
    let meta = strata_tsdb::meta::BlockMeta::read(&block).unwrap();
    let ulid = meta.ulid;
    let q = querier(QuerierConfig {
        endpoints: vec!["local:1".into()],
        local_stores: vec![("local:1".into(), Arc::new(LocalBlock { meta }) as _)],
        bucket: Some(bucket),
        block_listing_ttl: std::time::Duration::from_secs(3600),
        chunks_cache_bytes: 0,
        ..Default::default()
    });
    let uri = instant("sum(count_over_time(y[1h]))", "&stats=all");
    let (s, b) = get(&q, &uri).await;
    assert_eq!(s, 200, "{b}");
    let answer = b["data"]["result"].clone();
    // every sample once
    assert_eq!(answer[0]["value"][1], (SERIES * SAMPLES).to_string(), "{b}");
    let st = &b["data"]["stats"]["strata"];
    assert_eq!(st["seriesFetched"], SERIES as u64, "{st}");
    assert_eq!(
        source(&b, "bucket ")["seriesFetched"],
        SERIES as u64,
        "{st}"
    );
    assert_eq!(source(&b, "endpoint ")["seriesFetched"], 0, "{st}");
    assert!(b.get("warnings").is_none(), "{b}");

    // The bucket's copy is gone (listing and index cached): the local copy answers.
    std::fs::remove_dir_all(tmp.path().join(format!("bucket/anonymous/{ulid}/chunks"))).unwrap();
    let (s, b) = get(&q, &uri).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["result"], answer, "{b}");
    assert!(
        b["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "{b}"
    );
    assert_eq!(
        source(&b, "endpoint ")["seriesFetched"],
        SERIES as u64,
        "{b}"
    );
}
