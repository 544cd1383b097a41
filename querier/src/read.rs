//! Prometheus remote read (`POST /api/v1/read`, also under `/prometheus`): a Prometheus
//! that keeps its own config adds Strata as a `remote_read` endpoint and its queries
//! reach the global view (ingesters, sidecars, the bucket, HA pairs deduplicated).
//! Answers with the `SAMPLES` response type (snappy-compressed `ReadResponse`), the one
//! Prometheus's own remote-read client asks for.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use strata_proto::prometheus::{QueryResult, ReadRequest, ReadResponse, Sample, TimeSeries};
use strata_proto::Message;

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
    // `accepted_response_types` is not consulted: streamed chunks are not served, so
    // the answer is SAMPLES, which every remote-read client reads.
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
