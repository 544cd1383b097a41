//! Remote read's bounds, in process over an in-memory store: the sample limit of
//! `SAMPLES` answers (over all of a request's queries, Prometheus's message), streamed
//! frames within `--storage.remote.read-max-bytes-in-frame` decoding to the same
//! series, `--storage.remote.read-concurrent-limit`, and a streamed answer produced
//! only as fast as the client reads it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use strata_kit::metrics::Registry;
use strata_proto::prometheus::{
    label_matcher, read_request::ResponseType, ChunkedReadResponse, LabelMatcher, Query,
    ReadRequest, ReadResponse,
};
use strata_proto::Message;
use strata_querier::fanout::LocalStore;
use strata_querier::{Querier, QuerierConfig};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;
use tower::ServiceExt;

type Series = Vec<(Vec<(String, String)>, Vec<(i64, f64)>)>;

/// `series` series `x{i="…"}` of `samples` samples each; with `gate`, every read waits
/// until the gate is opened.
#[derive(Debug, Default)]
struct MemStore {
    series: usize,
    samples: i64,
    reads: AtomicUsize,
    gate: Option<(Mutex<bool>, Condvar)>,
}

impl MemStore {
    fn new(series: usize, samples: i64) -> Self {
        MemStore {
            series,
            samples,
            ..Default::default()
        }
    }

    fn gated(mut self) -> Self {
        self.gate = Some((Mutex::new(false), Condvar::new()));
        self
    }

    fn open(&self) {
        let (m, c) = self.gate.as_ref().unwrap();
        *m.lock().unwrap() = true;
        c.notify_all();
    }

    fn want(&self) -> Series {
        (0..self.series)
            .map(|i| {
                let labels = vec![
                    ("__name__".to_string(), "x".to_string()),
                    ("i".to_string(), format!("{i:06}")),
                ];
                let samples = (0..self.samples)
                    .map(|t| (t * 15_000, (t as f64 * 0.37 + i as f64).sin()))
                    .collect();
                (labels, samples)
            })
            .collect()
    }
}

impl LocalStore for MemStore {
    fn series(
        &self,
        _tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        _skip_chunks: bool,
    ) -> Result<Vec<strata_querier::bucket::SeriesData>, String> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some((m, c)) = &self.gate {
            let _open = c.wait_while(m.lock().unwrap(), |open| !*open).unwrap();
        }
        Ok(self
            .want()
            .into_iter()
            .map(|(l, s)| {
                let l = Labels::from_pairs(l.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                let s = s
                    .into_iter()
                    .filter(|p| p.0 >= mint && p.0 <= maxt)
                    .collect();
                (l, s)
            })
            .filter(|(l, _)| {
                matchers
                    .iter()
                    .all(|m| m.matches(l.get(&m.name).unwrap_or("")))
            })
            .collect())
    }

    fn external_labels(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

struct Api {
    router: axum::Router,
    registry: Registry,
}

fn api(store: Arc<MemStore>, cfg: QuerierConfig) -> Api {
    let registry = Registry::new();
    let querier = Querier::new(
        QuerierConfig {
            endpoints: vec!["local:1".into()],
            local_stores: vec![("local:1".into(), store as Arc<dyn LocalStore>)],
            ..cfg
        },
        &registry,
    )
    .unwrap();
    Api {
        router: querier.routes(),
        registry,
    }
}

impl Api {
    fn gauge(&self, name: &str) -> f64 {
        let m = self.registry.encode();
        let line = m
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} not in\n{m}"));
        line[name.len() + 1..].trim().parse().unwrap()
    }

    /// POST a read request of `queries` copies of `x` over all time.
    async fn read(&self, queries: usize, streamed: bool) -> axum::response::Response {
        let query = Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: i64::MAX,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Eq as i32,
                name: "__name__".into(),
                value: "x".into(),
            }],
            hints: None,
        };
        let req = ReadRequest {
            queries: vec![query; queries],
            accepted_response_types: if streamed {
                vec![ResponseType::StreamedXorChunks as i32]
            } else {
                vec![]
            },
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        let req = Request::post("/api/v1/read")
            .header("content-encoding", "snappy")
            .body(Body::from(body))
            .unwrap();
        self.router.clone().oneshot(req).await.unwrap()
    }
}

async fn body(r: axum::response::Response) -> Vec<u8> {
    axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

fn decode_samples(b: &[u8]) -> Vec<Series> {
    let raw = snap::raw::Decoder::new().decompress_vec(b).unwrap();
    ReadResponse::decode(raw.as_slice())
        .unwrap()
        .results
        .into_iter()
        .map(|r| {
            r.timeseries
                .into_iter()
                .map(|ts| {
                    let l = ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
                    let s = ts.samples.iter().map(|s| (s.timestamp, s.value)).collect();
                    (l, s)
                })
                .collect()
        })
        .collect()
}

/// Frames of a streamed answer: (query index, the frame's message length, its series).
fn decode_frames(mut b: &[u8]) -> Vec<(i64, usize, Series)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (len, n) = strata_tsdb::varint::uvarint(b).unwrap();
        let len = len as usize;
        let msg = &b[n + 4..n + 4 + len];
        assert_eq!(crc32c::crc32c(msg).to_be_bytes(), b[n..n + 4], "checksum");
        let r = ChunkedReadResponse::decode(msg).unwrap();
        let series = r
            .chunked_series
            .into_iter()
            .map(|s| {
                let l = s.labels.into_iter().map(|l| (l.name, l.value)).collect();
                let mut samples = Vec::new();
                for c in &s.chunks {
                    samples.extend(strata_tsdb::chunkenc::XorIter::new(&c.data));
                }
                (l, samples)
            })
            .collect();
        out.push((r.query_index, len, series));
        b = &b[n + 4 + len..];
    }
    out
}

/// Poll `cond` until it holds, failing after 20 s (a bound, not a schedule).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < until, "still not: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The limit counts samples over all of a request's queries and answers with
/// Prometheus's status and text; streamed answers are not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_over_the_limit_across_queries_are_refused() {
    let store = Arc::new(MemStore::new(10, 100)); // 1,000 samples a query
    let a = api(
        store.clone(),
        QuerierConfig {
            remote_read_sample_limit: 1_500,
            ..Default::default()
        },
    );
    let r = a.read(1, false).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(decode_samples(&body(r).await), vec![store.want()]);

    let r = a.read(2, false).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        String::from_utf8(body(r).await).unwrap(),
        "exceeded sample limit (1500)"
    );

    let r = a.read(2, true).await;
    assert_eq!(r.status(), StatusCode::OK);
    let frames = decode_frames(&body(r).await);
    assert_eq!(frames.len(), 20, "one series a frame");

    // At the limit exactly: answered; 0: no limit.
    for limit in [2_000, 0] {
        let a = api(
            store.clone(),
            QuerierConfig {
                remote_read_sample_limit: limit,
                ..Default::default()
            },
        );
        let r = a.read(2, false).await;
        assert_eq!(r.status(), StatusCode::OK, "{limit}");
        assert_eq!(decode_samples(&body(r).await).len(), 2);
    }
}

/// Every frame holds one series (Prometheus's client reads only the first), its
/// message within the byte limit; joined per series and query they are the samples
/// the `SAMPLES` answer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_frames_respect_the_byte_limit_and_hold_the_same_series() {
    let store = Arc::new(MemStore::new(30, 2_000));
    let max = 2_048;
    let a = api(
        store.clone(),
        QuerierConfig {
            remote_read_max_bytes_in_frame: max,
            ..Default::default()
        },
    );
    let r = a.read(3, false).await;
    assert_eq!(r.status(), StatusCode::OK);
    let want = decode_samples(&body(r).await);
    assert_eq!(want[0], store.want());

    let r = a.read(3, true).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
    );
    let frames = decode_frames(&body(r).await);
    assert!(frames.len() > 3 * 30, "long series split: {}", frames.len());
    let mut got: Vec<Series> = vec![Vec::new(); 3];
    for (qi, len, series) in frames {
        assert!(len <= max, "frame of {len} bytes");
        assert_eq!(series.len(), 1);
        let (l, s) = series.into_iter().next().unwrap();
        let q = &mut got[qi as usize];
        match q.last_mut() {
            Some((last, samples)) if *last == l => samples.extend(s),
            _ => q.push((l, s)),
        }
    }
    assert_eq!(got, want);
}

/// Requests past `--storage.remote.read-concurrent-limit` wait (counted in
/// `strata_querier_remote_reads_waiting`) and are served when a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_concurrent_limit_wait() {
    let store = Arc::new(MemStore::new(2, 10).gated());
    let a = Arc::new(api(
        store.clone(),
        QuerierConfig {
            remote_read_concurrent_limit: 1,
            ..Default::default()
        },
    ));
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.read(1, false).await.status() }
    });
    eventually("the first read reaches the store", || {
        store.reads.load(Ordering::SeqCst) == 1
    })
    .await;
    let second = tokio::spawn({
        let a = a.clone();
        async move { a.read(1, true).await.status() }
    });
    eventually("the second read waits", || {
        a.gauge("strata_querier_remote_reads_waiting") == 1.0
    })
    .await;
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        1,
        "the second read waits"
    );
    store.open();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(second.await.unwrap(), StatusCode::OK);
    assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    assert_eq!(a.gauge("strata_querier_remote_reads_waiting"), 0.0);
}

/// A streamed answer is produced as it is read: while its client reads nothing more,
/// the producer waits holding its slot (the next request waits too, the store is not
/// read for the next query); when the client goes away the producer stops and frees
/// the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_waits_for_its_client_and_stops_without_it() {
    let store = Arc::new(MemStore::new(200, 1_000));
    let a = Arc::new(api(
        store.clone(),
        QuerierConfig {
            remote_read_concurrent_limit: 1,
            ..Default::default()
        },
    ));
    // Five queries of 200 series: 1,000 frames, of which the client reads one.
    let r = a.read(5, true).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = r.into_body().into_data_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!decode_frames(&first).is_empty());
    let next = tokio::spawn({
        let a = a.clone();
        async move { a.read(1, false).await.status() }
    });
    eventually("the next request waits for the slot", || {
        a.gauge("strata_querier_remote_reads_waiting") == 1.0
    })
    .await;
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        1,
        "the producer waits in its first query"
    );
    drop(stream);
    assert_eq!(next.await.unwrap(), StatusCode::OK);
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        2,
        "the first request stopped"
    );
}
