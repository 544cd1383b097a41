//! Prometheus remote read (`POST /api/v1/read`, also under `/prometheus`): a Prometheus
//! that keeps its own config adds Strata as a `remote_read` endpoint and its queries
//! reach the global view (ingesters, sidecars, the bucket, HA pairs deduplicated).
//! Answers with the response type the client lists first: `SAMPLES` (one
//! snappy-compressed `ReadResponse`; what Prometheus 2.x asks for) or
//! `STREAMED_XOR_CHUNKS` (frames of `ChunkedReadResponse` with the samples as XOR
//! chunks; what Prometheus 3 and Thanos prefer).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use strata_proto::prometheus::{
    chunk, read_request::ResponseType, Chunk, ChunkedReadResponse, ChunkedSeries, QueryResult,
    ReadRequest, ReadResponse, Sample, TimeSeries,
};
use strata_proto::Message;
use strata_tsdb::chunkenc::ChunkCutter;

use crate::api::{tenant_of, ApiError};
use crate::Querier;

/// Largest decompressed request accepted (Prometheus's own limit on the read path).
const MAX_REQUEST_BYTES: usize = 32 << 20;

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
    let limit = q.config.max_samples;
    let results = q
        .blocking(move |q, h| -> Result<Vec<QueryResult>, ApiError> {
            let mut results = Vec::with_capacity(queries.len());
            let mut total = 0usize;
            for (ms, mint, maxt) in &queries {
                let f = h
                    .block_on(q.sources.fetch(&opts, ms, *mint, *maxt, None, false))
                    .map_err(|e| text(422, e.0))?;
                let mut timeseries = Vec::with_capacity(f.series.len());
                for (labels, samples) in f.series {
                    total += samples.len();
                    if total > limit {
                        return Err(text(400, format!("exceeded sample limit ({limit})")));
                    }
                    timeseries.push(TimeSeries {
                        labels: strata_store::labels_to_proto(&labels),
                        samples: samples
                            .into_iter()
                            .map(|(timestamp, value)| Sample { value, timestamp })
                            .collect(),
                        ..Default::default()
                    });
                }
                results.push(QueryResult { timeseries });
            }
            Ok(results)
        })
        .await??;
    if streamed {
        return Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse",
            )],
            chunked_frames(results),
        )
            .into_response());
    }
    let encoded = ReadResponse { results }.encode_to_vec();
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&encoded)
        .map_err(|e| text(500, format!("snappy: {e}")))?;
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

/// Frames of a `STREAMED_XOR_CHUNKS` answer: per query, its series in label order with
/// their samples cut into XOR chunks as a TSDB cuts them, about 1 MiB of chunks a
/// frame (a series is never split), each frame `uvarint length | CRC32C (big-endian) |
/// ChunkedReadResponse`.
fn chunked_frames(results: Vec<QueryResult>) -> Vec<u8> {
    const FRAME_BYTES: usize = 1 << 20;
    let mut out = Vec::new();
    let frame = |query_index: i64, series: Vec<ChunkedSeries>, out: &mut Vec<u8>| {
        if series.is_empty() {
            return;
        }
        let msg = ChunkedReadResponse {
            chunked_series: series,
            query_index,
        }
        .encode_to_vec();
        let mut len = msg.len() as u64;
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(&crc32c::crc32c(&msg).to_be_bytes());
        out.extend_from_slice(&msg);
    };
    for (qi, r) in results.into_iter().enumerate() {
        let (mut pending, mut bytes) = (Vec::new(), 0usize);
        for ts in r.timeseries {
            let mut cutter = ChunkCutter::new(2 * 3_600_000);
            for s in &ts.samples {
                cutter.append(s.timestamp, s.value);
            }
            let chunks: Vec<Chunk> = cutter
                .finish()
                .into_iter()
                .map(|c| Chunk {
                    min_time_ms: c.min_time,
                    max_time_ms: c.max_time,
                    r#type: chunk::Encoding::Xor as i32,
                    data: c.data.into(),
                })
                .collect();
            bytes += chunks.iter().map(|c| c.data.len()).sum::<usize>();
            pending.push(ChunkedSeries {
                labels: ts.labels,
                chunks,
            });
            if bytes >= FRAME_BYTES {
                frame(qi as i64, std::mem::take(&mut pending), &mut out);
                bytes = 0;
            }
        }
        frame(qi as i64, pending, &mut out);
    }
    out
}
