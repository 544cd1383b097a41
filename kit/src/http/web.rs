//! What Prometheus's web server does around every answer: gzip when the client accepts
//! it (Grafana and browsers do; a range answer of 600 KB shrinks about tenfold), and
//! CORS headers on the API for origins matching `--web.cors.origin`, with `OPTIONS`
//! answered 204.

use std::io::Write;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use regex::Regex;

/// Bodies below this are sent as they are: gzip would save nothing worth the CPU.
const GZIP_MIN: usize = 1024;

/// Compress the answer with gzip when the request accepts it and the body is text.
pub(super) async fn gzip(req: Request, next: Next) -> Response {
    let accepts = req
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .any(|v| v.to_str().is_ok_and(accepts_gzip));
    let resp = next.run(req).await;
    if !accepts || resp.headers().contains_key(header::CONTENT_ENCODING) || !is_text(&resp) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "reading an answer to compress it failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if bytes.len() < GZIP_MIN {
        return Response::from_parts(parts, Body::from(bytes));
    }
    // level 1: most of the saving at a fraction of the default level's CPU
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    let compressed = match enc.write_all(&bytes).and_then(|()| enc.finish()) {
        Ok(c) => c,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(compressed))
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip;q=0` refuses it).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        if !(coding.eq_ignore_ascii_case("gzip") || coding == "*") {
            return false;
        }
        !parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f64>().ok())
                .is_some_and(|q| q == 0.0)
        })
    })
}

fn is_text(resp: &Response) -> bool {
    let Some(ct) = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    ct.starts_with("application/json")
        || ct.starts_with("text/")
        || ct.starts_with("application/javascript")
        || ct.starts_with("application/openmetrics-text")
}

/// The origins the API answers cross-origin requests from [`--web.cors.origin`].
#[derive(Debug, Clone)]
pub struct CorsOrigin {
    // Shared: axum clones the state per request, and cloning a `Regex` builds a new
    // matcher cache pool each time.
    re: std::sync::Arc<Regex>,
    any: bool,
}

impl CorsOrigin {
    /// Anchored as Prometheus anchors it: the whole origin must match.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        Ok(CorsOrigin {
            re: std::sync::Arc::new(Regex::new(&format!("^(?:{pattern})$"))?),
            any: pattern == ".*",
        })
    }
}

impl Default for CorsOrigin {
    /// Prometheus's default: every origin.
    fn default() -> Self {
        CorsOrigin::new(".*").expect("static regex")
    }
}

/// CORS headers on `/api/` answers to requests with an `Origin`, and `OPTIONS` on the
/// API answered 204 with them, as Prometheus's API does.
pub(super) async fn cors(State(origin): State<CorsOrigin>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let from = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let Some(from) = from else {
        return resp;
    };
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Accept, Authorization, Content-Type, Origin"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Date"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if origin.any {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else if origin.re.is_match(&from) {
        if let Ok(v) = HeaderValue::from_str(&from) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_acceptance() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=1.0, *;q=0.5"));
        assert!(accepts_gzip("GZIP"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip("br, deflate"));
    }

    #[test]
    fn origin_is_anchored() {
        let o = CorsOrigin::new("https://grafana\\.example").unwrap();
        assert!(o.re.is_match("https://grafana.example"));
        assert!(!o.re.is_match("https://grafana.example.evil"));
        assert!(!o.any);
        assert!(CorsOrigin::default().any);
    }
}
