//! Prometheus remote read (`POST /api/v1/read`, also under `/prometheus`): a Prometheus
//! that keeps its own config adds Strata as a `remote_read` endpoint and its queries
//! reach the global view (ingesters, sidecars, the bucket, HA pairs deduplicated).
//! Answers with the response type the client lists first: `SAMPLES` (one
//! snappy-compressed `ReadResponse`; what Prometheus 2.x asks for) or
//! `STREAMED_XOR_CHUNKS` (frames of `ChunkedReadResponse` with the samples as XOR
//! chunks; what Prometheus 3 and Thanos prefer).
//!
//! Bounds, with Prometheus's flags: at most `--storage.remote.read-concurrent-limit`
//! requests are served at once (more wait); a `SAMPLES` answer holds at most
//! `--storage.remote.read-sample-limit` samples over all of the request's queries; a
//! streamed answer holds one query's series at a time and is written to the client
//! frame by frame (at most `--storage.remote.read-max-bytes-in-frame` each) as it is
//! produced, the producer waiting while the client is slow.
//!
//! Native histograms: `SAMPLES` answers carry them in `histograms` (as float
//! histograms); streamed answers re-cut a series with histograms into XOR, histogram
//! and float histogram chunks with the head's rules, each with its encoding.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use strata_proto::prometheus::{
    chunk, read_request::ResponseType, Chunk, ChunkedReadResponse, ChunkedSeries, Label,
    QueryResult, ReadRequest, Sample, TimeSeries,
};
use strata_proto::Message;
use strata_tsdb::chunkenc::{ChunkCutter, Encoding};
use strata_tsdb::histogram::FloatHistogram;
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;
use strata_tsdb::varint::{put_uvarint, uvarint_len};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::api::{tenant_of, ApiError};
use crate::fanout::FetchOptions;
use crate::Querier;

/// Largest decompressed request accepted (Prometheus's own limit on the read path).
const MAX_REQUEST_BYTES: usize = 32 << 20;
/// Frames produced ahead of the client: the producer waits when these are unread.
const FRAMES_AHEAD: usize = 2;

fn text(status: u16, msg: impl Into<String>) -> ApiError {
    ApiError {
        error_type: if status == 400 {
            "bad_data"
        } else {
            "execution"
        },
        status,
        message: msg.into(),
    }
}

/// One series of a read answer: floats and native histograms.
type ReadSeries = (Labels, Vec<(i64, f64)>, Vec<(i64, FloatHistogram)>);

/// One query's series, merged and deduplicated, decoded.
fn fetch_series(
    q: &Querier,
    h: &tokio::runtime::Handle,
    opts: &FetchOptions,
    ms: &[Matcher],
    mint: i64,
    maxt: i64,
) -> Result<Vec<ReadSeries>, ApiError> {
    let f = h
        .block_on(q.sources.fetch_lazy(opts, ms, mint, maxt, None, false))
        .map_err(|e| text(422, e.0))?;
    let mut out = Vec::with_capacity(f.series.len());
    for (l, s) in f.series {
        let mut hists = Vec::new();
        s.decode_histograms_to(&mut hists);
        hists.retain(|(t, _)| *t >= mint && *t <= maxt);
        let floats = s
            .decode()
            .map_err(|e| text(422, format!("series {l}: chunk data: {e}")))?;
        if !floats.is_empty() || !hists.is_empty() {
            out.push((l, floats, hists));
        }
    }
    Ok(out)
}

/// A float histogram as remote write/read's message (Prometheus's
/// `FloatHistogramToHistogramProto`).
fn histogram_proto(t: i64, h: &FloatHistogram) -> strata_proto::prometheus::Histogram {
    use strata_proto::prometheus::histogram::{Count, ZeroCount};
    let spans = |s: &[strata_tsdb::histogram::Span]| {
        s.iter()
            .map(|s| strata_proto::prometheus::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    strata_proto::prometheus::Histogram {
        count: Some(Count::CountFloat(h.count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(ZeroCount::ZeroCountFloat(h.zero_count)),
        negative_spans: spans(&h.negative_spans),
        negative_counts: h.negative_buckets.clone(),
        positive_spans: spans(&h.positive_spans),
        positive_counts: h.positive_buckets.clone(),
        reset_hint: h.counter_reset_hint as i32,
        timestamp: t,
        custom_values: h.custom_values.clone(),
        ..Default::default()
    }
}

/// Prometheus's answer (and status) past `--storage.remote.read-sample-limit`.
fn over_sample_limit(limit: usize) -> ApiError {
    text(400, format!("exceeded sample limit ({limit})"))
}

pub(crate) async fn remote_read(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let r = read_inner(&q, &headers, &body).await;
    q.record("read", start, &r);
    // Errors as plain text: Prometheus's remote-read client shows the body as is.
    r.unwrap_or_else(|e| {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.message,
        )
            .into_response()
    })
}

type Queries = Vec<(Vec<Matcher>, i64, i64)>;

async fn read_inner(
    q: &Arc<Querier>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let tenant = tenant_of(headers)?;
    let len = snap::raw::decompress_len(body).map_err(|e| text(400, format!("snappy: {e}")))?;
    if len > MAX_REQUEST_BYTES {
        return Err(text(
            400,
            format!(
                "decompressed read request is {len} bytes, over the limit of {MAX_REQUEST_BYTES}"
            ),
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| text(400, format!("snappy: {e}")))?;
    let req = ReadRequest::decode(raw.as_slice())
        .map_err(|e| text(400, format!("decoding read request: {e}")))?;
    // The first accepted type (both are served); none listed means SAMPLES.
    let streamed = req.accepted_response_types.first().copied()
        == Some(ResponseType::StreamedXorChunks as i32);
    let mut queries = Vec::with_capacity(req.queries.len());
    for (i, query) in req.queries.iter().enumerate() {
        let ms = strata_store::matchers_from_proto(&query.matchers)
            .map_err(|e| text(400, format!("query {i}: {}", e.message())))?;
        queries.push((ms, query.start_timestamp_ms, query.end_timestamp_ms));
    }
    let opts = q.default_fetch_options(&tenant);
    let slot = read_slot(q).await;
    if streamed {
        streamed_answer(q, opts, queries, slot).await
    } else {
        samples_answer(q, opts, queries, slot).await
    }
}

/// A `--storage.remote.read-concurrent-limit` slot (`None`: no limit), counted in
/// `strata_querier_remote_reads_waiting` while waited for.
async fn read_slot(q: &Querier) -> Option<OwnedSemaphorePermit> {
    let sem = q.read_limiter.clone()?;
    if let Ok(p) = sem.clone().try_acquire_owned() {
        return Some(p);
    }
    struct Waiting<'a>(&'a Querier);
    impl Drop for Waiting<'_> {
        // Also when the client goes away while waiting (the future is dropped).
        fn drop(&mut self) {
            self.0.metrics.remote_reads_waiting.dec();
        }
    }
    q.metrics.remote_reads_waiting.inc();
    let _waiting = Waiting(q);
    // The semaphore is never closed.
    sem.acquire_owned().await.ok()
}

/// `SAMPLES`: one snappy-compressed `ReadResponse`. Each query's result is encoded as
/// soon as it is fetched, and the samples are counted over the whole request, so at
/// most one query's series and the limit's worth of encoded samples are in memory.
async fn samples_answer(
    q: &Arc<Querier>,
    opts: FetchOptions,
    queries: Queries,
    slot: Option<OwnedSemaphorePermit>,
) -> Result<Response, ApiError> {
    let limit = q.config.remote_read_sample_limit;
    let compressed = q
        .blocking(move |q, h| -> Result<Vec<u8>, ApiError> {
            let _slot = slot;
            let mut encoded = Vec::new();
            let mut total = 0usize;
            for (ms, mint, maxt) in &queries {
                let series = fetch_series(q, h, &opts, ms, *mint, *maxt)?;
                total += series
                    .iter()
                    .map(|(_, s, hs)| s.len() + hs.len())
                    .sum::<usize>();
                if limit > 0 && total > limit {
                    return Err(over_sample_limit(limit));
                }
                let result = QueryResult {
                    timeseries: series
                        .into_iter()
                        .map(|(labels, samples, hists)| TimeSeries {
                            labels: strata_store::labels_to_proto(&labels),
                            samples: samples
                                .into_iter()
                                .map(|(timestamp, value)| Sample { value, timestamp })
                                .collect(),
                            histograms: hists.iter().map(|(t, h)| histogram_proto(*t, h)).collect(),
                            ..Default::default()
                        })
                        .collect(),
                };
                append_query_result(&mut encoded, &result);
            }
            snap::raw::Encoder::new()
                .compress_vec(&encoded)
                .map_err(|e| text(500, format!("snappy: {e}")))
        })
        .await??;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-protobuf"),
            (header::CONTENT_ENCODING, "snappy"),
        ],
        compressed,
    )
        .into_response())
}

/// Appends `result` to an encoded `ReadResponse` as its next `results` (field 1): the
/// bytes `ReadResponse { results }.encode_to_vec()` gives, one query at a time.
fn append_query_result(out: &mut Vec<u8>, result: &QueryResult) {
    const RESULTS_TAG: u8 = (1 << 3) | 2; // field 1, length-delimited
    out.push(RESULTS_TAG);
    result
        .encode_length_delimited(out)
        .expect("a Vec grows as needed");
}

/// `STREAMED_XOR_CHUNKS`: a producer on a blocking thread fetches one query at a time
/// and sends its frames through a channel of [`FRAMES_AHEAD`] frames that the HTTP body
/// reads, so it waits for a slow client and stops when the client goes away. A failure
/// before the first frame is an error answer; after it, the body is cut short (the
/// status is sent) and the client sees a broken stream.
async fn streamed_answer(
    q: &Arc<Querier>,
    opts: FetchOptions,
    queries: Queries,
    slot: Option<OwnedSemaphorePermit>,
) -> Result<Response, ApiError> {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, ApiError>>(FRAMES_AHEAD);
    let max_bytes = q.config.remote_read_max_bytes_in_frame;
    let producer_q = q.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let q = producer_q;
        for (qi, (ms, mint, maxt)) in queries.iter().enumerate() {
            let series = match fetch_series(&q, &handle, &opts, ms, *mint, *maxt) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut send = |frame: Vec<u8>| tx.blocking_send(Ok(frame.into())).is_ok();
            for (labels, samples, hists) in series {
                let labels = strata_store::labels_to_proto(&labels);
                let ok = if hists.is_empty() {
                    series_frames(qi as i64, labels, &samples, max_bytes, &mut send)
                } else {
                    let chunks = mixed_chunks(samples, hists);
                    chunk_frames(qi as i64, labels, chunks, max_bytes, &mut send)
                };
                if !ok {
                    return; // the client went away
                }
            }
        }
    });
    let first = match rx.recv().await {
        Some(Err(e)) => return Err(e),
        first => first,
    };
    let frames = futures::stream::unfold((first, rx), |(pending, mut rx)| async move {
        let item = match pending {
            Some(item) => item,
            None => rx.recv().await?,
        };
        let item = item.map_err(|e| {
            tracing::warn!(error = %e.message, "remote read: stream cut short");
            std::io::Error::other(e.message)
        });
        Some((item, (None, rx)))
    });
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse",
        )],
        Body::from_stream(frames),
    )
        .into_response())
}

/// The frames of one series, as Prometheus writes them: one series per frame (its
/// remote-read client reads only a frame's first series), its samples cut into XOR
/// chunks as a TSDB cuts them, a series longer than a frame split over several frames
/// that repeat its labels. A frame's message is at most `max_bytes` unless one chunk
/// and the labels alone are larger. Each frame is `uvarint length | CRC32C
/// (big-endian) | ChunkedReadResponse`, handed to `send`; false when `send` is (the
/// client is gone). A series without samples gives no frame.
fn series_frames(
    query_index: i64,
    labels: Vec<Label>,
    samples: &[(i64, f64)],
    max_bytes: usize,
    send: &mut impl FnMut(Vec<u8>) -> bool,
) -> bool {
    if samples.is_empty() {
        return true;
    }
    let mut cutter = ChunkCutter::new(2 * 3_600_000);
    for &(t, v) in samples {
        cutter.append(t, v);
    }
    let chunks = cutter.finish().into_iter().map(|c| Chunk {
        min_time_ms: c.min_time,
        max_time_ms: c.max_time,
        r#type: chunk::Encoding::Xor as i32,
        data: c.data.into(),
    });
    chunk_frames(query_index, labels, chunks, max_bytes, send)
}

/// A series with native histograms as chunks of each kind, with their encodings.
fn mixed_chunks(
    floats: Vec<(i64, f64)>,
    hists: Vec<(i64, FloatHistogram)>,
) -> impl Iterator<Item = Chunk> {
    crate::series::cut_mixed(floats, hists)
        .into_iter()
        .map(|c| Chunk {
            min_time_ms: c.min_time,
            max_time_ms: c.max_time,
            r#type: match c.encoding {
                Encoding::Histogram => chunk::Encoding::Histogram,
                Encoding::FloatHistogram => chunk::Encoding::FloatHistogram,
                _ => chunk::Encoding::Xor,
            } as i32,
            data: c.data.into(),
        })
}

/// [`series_frames`] of chunks already cut.
fn chunk_frames(
    query_index: i64,
    labels: Vec<Label>,
    chunks_in: impl Iterator<Item = Chunk>,
    max_bytes: usize,
    send: &mut impl FnMut(Vec<u8>) -> bool,
) -> bool {
    // Sizes of the message's fields, to fill a frame without encoding it twice.
    let field = |len: usize| 1 + uvarint_len(len as u64) + len;
    let index_len = if query_index == 0 {
        0
    } else {
        1 + uvarint_len(query_index as u64)
    };
    let labels_len: usize = labels.iter().map(|l| field(l.encoded_len())).sum();
    let (mut chunks, mut series_len) = (Vec::new(), labels_len);
    for chunk in chunks_in {
        let add = field(chunk.encoded_len());
        if !chunks.is_empty() && index_len + field(series_len + add) > max_bytes {
            let full = std::mem::take(&mut chunks);
            if !send(frame(query_index, labels.clone(), full)) {
                return false;
            }
            series_len = labels_len;
        }
        series_len += add;
        chunks.push(chunk);
    }
    send(frame(query_index, labels, chunks))
}

fn frame(query_index: i64, labels: Vec<Label>, chunks: Vec<Chunk>) -> Vec<u8> {
    let msg = ChunkedReadResponse {
        chunked_series: vec![ChunkedSeries { labels, chunks }],
        query_index,
    }
    .encode_to_vec();
    let mut out = Vec::with_capacity(msg.len() + 14);
    put_uvarint(&mut out, msg.len() as u64);
    out.extend_from_slice(&crc32c::crc32c(&msg).to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::prometheus::ReadResponse;

    #[test]
    fn results_appended_one_by_one_are_a_read_response() {
        let results = vec![
            QueryResult {
                timeseries: vec![TimeSeries {
                    labels: vec![Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    }],
                    samples: vec![Sample {
                        value: 1.0,
                        timestamp: 5,
                    }],
                    ..Default::default()
                }],
            },
            QueryResult::default(),
        ];
        let mut out = Vec::new();
        for r in &results {
            append_query_result(&mut out, r);
        }
        assert_eq!(out, ReadResponse { results }.encode_to_vec());
    }

    /// Frames hold one series each, stay within the byte limit, and decode back to the
    /// series' samples in order; their length prefix and CRC are right.
    #[test]
    fn long_series_are_split_within_the_frame_limit() {
        let labels = vec![
            Label {
                name: "__name__".into(),
                value: "x".repeat(100),
            },
            Label {
                name: "job".into(),
                value: "a".into(),
            },
        ];
        let samples: Vec<(i64, f64)> = (0..5_000)
            .map(|i| (i * 15_000, (i as f64 * 1.37).sin()))
            .collect();
        for (max_bytes, query_index) in [(1_000, 0), (4_096, 3), (1 << 20, 1), (10, 0)] {
            let mut frames = Vec::new();
            assert!(series_frames(
                query_index,
                labels.clone(),
                &samples,
                max_bytes,
                &mut |f| {
                    frames.push(f);
                    true
                }
            ));
            let mut got = Vec::new();
            for f in &frames {
                let (len, n) = strata_tsdb::varint::uvarint(f).unwrap();
                let msg = &f[n + 4..];
                assert_eq!(msg.len() as u64, len);
                assert_eq!(crc32c::crc32c(msg).to_be_bytes(), f[n..n + 4]);
                let r = ChunkedReadResponse::decode(msg).unwrap();
                assert_eq!(r.query_index, query_index);
                assert_eq!(r.chunked_series.len(), 1);
                let s = &r.chunked_series[0];
                assert_eq!(s.labels, labels);
                // Over the limit only as a single chunk that cannot be split further.
                assert!(msg.len() <= max_bytes || s.chunks.len() == 1, "{max_bytes}");
                for c in &s.chunks {
                    got.extend(strata_tsdb::chunkenc::XorIter::new(&c.data));
                }
            }
            assert_eq!(got, samples, "{max_bytes}");
            if max_bytes == 1 << 20 {
                assert_eq!(frames.len(), 1);
            } else {
                assert!(frames.len() > 5, "{max_bytes}: {}", frames.len());
            }
        }
        // No samples, no frame; a gone client stops the series.
        assert!(series_frames(
            0,
            labels.clone(),
            &[],
            1000,
            &mut |_| unreachable!()
        ));
        let mut sent = 0;
        assert!(!series_frames(0, labels, &samples, 1000, &mut |_| {
            sent += 1;
            false
        }));
        assert_eq!(sent, 1);
    }
}
