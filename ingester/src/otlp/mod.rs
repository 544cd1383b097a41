//! OTLP metrics over HTTP: `POST /otlp/v1/metrics` (Mimir's path), protobuf or JSON
//! bodies, gzip or uncompressed. The request is translated with Prometheus's rules
//! ([`translate`]) into a remote write request and stored through the same path as
//! remote write (validation, HA tracker, ring, metadata, exemplars).
//!
//! Answers follow OTLP/HTTP: 200 with an `ExportMetricsServiceResponse` in the
//! request's encoding, whose `partial_success` counts the data points not stored and
//! says why (not translatable, or refused like a remote-written sample: out of order,
//! too old, invalid); other failures a `google.rpc.Status` body with the HTTP status
//! remote write would answer (400/413/415 not retryable, 429/503 retryable).

pub mod json;
pub mod translate;

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clap::Args;
use strata_proto::otlp::collector::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
use strata_proto::Message;

use crate::Ingester;

/// OTLP translation flags (Mimir's names).
#[derive(Debug, Clone, Default, Args)]
pub struct OtlpArgs {
    /// Resource attributes added as labels to every series of the resource (comma
    /// separated), besides being on `target_info`.
    #[arg(
        long = "distributor.otel-promote-resource-attributes",
        value_delimiter = ','
    )]
    pub promote_resource_attributes: Vec<String>,
    /// Keep `service.name`, `service.namespace` and `service.instance.id` as labels of
    /// `target_info` (they are always `job` and `instance`).
    #[arg(long = "distributor.otel-keep-identifying-resource-attributes")]
    pub keep_identifying_resource_attributes: bool,
    /// Label every series with its OpenTelemetry instrumentation scope:
    /// `otel_scope_name`, `otel_scope_version`, `otel_scope_schema_url` and
    /// `otel_scope_<attribute>` (Prometheus's `promote_scope_metadata`).
    #[arg(long = "distributor.otel-promote-scope-metadata")]
    pub promote_scope_metadata: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// The gRPC status code OTLP's error bodies carry for an HTTP status.
fn grpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 | 413 | 415 => 3, // INVALID_ARGUMENT
        429 => 8,             // RESOURCE_EXHAUSTED
        503 => 14,            // UNAVAILABLE
        _ => 13,              // INTERNAL
    }
}

/// An error answer: `google.rpc.Status` (code 1, message 2) in the request's encoding.
fn error(enc: Encoding, status: StatusCode, msg: impl Into<String>) -> Response {
    let msg = msg.into();
    let code = grpc_code(status);
    match enc {
        Encoding::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": code, "message": msg}).to_string(),
        )
            .into_response(),
        Encoding::Protobuf => {
            let mut b = Vec::with_capacity(msg.len() + 8);
            prost::encoding::int32::encode(1, &code, &mut b);
            prost::encoding::string::encode(2, &msg, &mut b);
            (
                status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                b,
            )
                .into_response()
        }
    }
}

fn success(enc: Encoding, rejected: u64, message: String) -> Response {
    let partial = (rejected > 0 || !message.is_empty()).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: rejected as i64,
        error_message: message.clone(),
    });
    match enc {
        Encoding::Json => {
            let body = match &partial {
                Some(p) => serde_json::json!({"partialSuccess": {
                    "rejectedDataPoints": p.rejected_data_points.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => serde_json::json!({}),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Encoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            ExportMetricsServiceResponse {
                partial_success: partial,
            }
            .encode_to_vec(),
        )
            .into_response(),
    }
}

/// `POST /otlp/v1/metrics`.
pub async fn push(State(ing): State<Arc<Ingester>>, headers: HeaderMap, body: Body) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let enc = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        _ => {
            ing.metrics
                .rejected_requests
                .with(&["bad_content_type"])
                .inc();
            return error(
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type {ct:?}: OTLP/HTTP metrics are application/x-protobuf or application/json"),
            );
        }
    };
    let tenant = match crate::push::tenant_of(&headers) {
        Ok(t) => t,
        Err(e) => return error(enc, StatusCode::BAD_REQUEST, e),
    };
    let limit = ing.config.limits.max_recv_msg_size;
    let too_large = move |ing: &Ingester| {
        ing.metrics.rejected_requests.with(&["too_large"]).inc();
        error(
            enc,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the OTLP request is larger than the allowed limit of {limit} bytes (err-mimir-distributor-max-write-message-size); raise it with --distributor.max-recv-msg-size"),
        )
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" => true,
        Some(e) => {
            ing.metrics.rejected_requests.with(&["bad_encoding"]).inc();
            return error(
                enc,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {e:?}: OTLP bodies are gzip or uncompressed"),
            );
        }
    };
    let raw = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return too_large(&ing),
    };
    let timeout_ms = ing.config.limits.push_timeout_ms;
    let deadline = (timeout_ms > 0)
        .then(|| Instant::now() + std::time::Duration::from_millis(timeout_ms as u64));
    let ing2 = ing.clone();
    let work = tokio::task::spawn_blocking(move || {
        let body = if gzip {
            let mut out = Vec::new();
            let mut d = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
            if let Err(e) = d.read_to_end(&mut out) {
                ing2.metrics.rejected_requests.with(&["bad_body"]).inc();
                return error(
                    enc,
                    StatusCode::BAD_REQUEST,
                    format!("failed to decompress the gzip body: {e}"),
                );
            }
            if out.len() > limit {
                return too_large(&ing2);
            }
            bytes::Bytes::from(out)
        } else {
            raw
        };
        handle(&ing2, &tenant, enc, &body, deadline)
    });
    match work.await {
        Ok(r) => r,
        Err(e) => error(
            enc,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("OTLP push failed: {e}"),
        ),
    }
}

/// Decode, translate and store one request. Runs on a blocking thread.
fn handle(
    ing: &Ingester,
    tenant: &str,
    enc: Encoding,
    body: &[u8],
    deadline: Option<Instant>,
) -> Response {
    let req = match enc {
        Encoding::Protobuf => {
            strata_proto::otlp::collector::ExportMetricsServiceRequest::decode(body)
                .map_err(|e| e.to_string())
        }
        Encoding::Json => json::decode(body),
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            ing.metrics.rejected_requests.with(&["bad_body"]).inc();
            return error(
                enc,
                StatusCode::BAD_REQUEST,
                format!("failed to decode the OTLP metrics request: {e}"),
            );
        }
    };
    let settings = translate::Settings {
        promote_resource_attributes: ing.config.otlp.promote_resource_attributes.clone(),
        keep_identifying_resource_attributes: ing.config.otlp.keep_identifying_resource_attributes,
        promote_scope_metadata: ing.config.otlp.promote_scope_metadata,
    };
    let t = translate::translate(&req, &settings);
    let mut messages = t.errors.clone();
    let mut rejected = t.rejected;
    if t.request.timeseries.is_empty() && t.request.metadata.is_empty() {
        return success(enc, rejected, messages.join("; "));
    }
    let raw = t.request.encode_to_vec();
    let (resp, refused) = crate::push::ingest_v1_raw(ing, tenant, &raw, deadline);
    let status = resp.status();
    if status.is_success() {
        return success(enc, rejected, messages.join("; "));
    }
    // Samples refused as remote write refuses them (the rest were stored): a partial
    // success, so the sender does not retry what a retry cannot fix.
    if let Some((n, why)) = refused {
        rejected += n as u64;
        messages.push(why);
        return success(enc, rejected, messages.join("; "));
    }
    // the body is a string in memory: its future is ready at once
    use futures::FutureExt;
    let msg = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .now_or_never()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
        .unwrap_or_default();
    error(enc, status, msg)
}
