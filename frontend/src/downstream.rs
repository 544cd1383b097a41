//! Where the frontend sends requests: queriers over HTTP (`--query-frontend.downstream-url`,
//! taken in turn), or, inside `strata all`, the querier's router in the same process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Method, Request};
use bytes::Bytes;

use crate::Error;

/// A downstream answer, whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The queriers behind the frontend.
#[derive(Debug)]
pub enum Downstream {
    Http {
        client: reqwest::Client,
        urls: Vec<String>,
        next: AtomicUsize,
    },
    /// A querier's routes in this process (`strata all`).
    Local(axum::Router),
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), plus the
/// ones the frontend sets itself.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// `headers` without the hop-by-hop ones.
pub fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        if !hop_by_hop(k) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

impl Downstream {
    pub fn http(urls: Vec<String>, timeout: Duration) -> Result<Downstream, Error> {
        if urls.is_empty() {
            return Err(Error::Config(
                "no downstream querier: set --query-frontend.downstream-url".into(),
            ));
        }
        let mut clean = Vec::new();
        for u in urls {
            let u = u.trim().trim_end_matches('/').to_string();
            if !u.starts_with("http://") {
                return Err(Error::Config(format!(
                    "--query-frontend.downstream-url {u:?} must start with http://"
                )));
            }
            clean.push(u);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Downstream::Http {
            client,
            urls: clean,
            next: AtomicUsize::new(0),
        })
    }

    /// Send one request; `Err` when no answer came (connection refused, timeout).
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, String> {
        match self {
            Downstream::Http { client, urls, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % urls.len();
                let url = format!("{}{}", urls[i], path_and_query);
                let r = client
                    .request(method, &url)
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
                Ok(Answer {
                    status,
                    headers,
                    body,
                })
            }
            Downstream::Local(router) => {
                use tower::ServiceExt;
                let mut req = Request::builder()
                    .method(method)
                    .uri(path_and_query)
                    .body(Body::from(body))
                    .map_err(|e| e.to_string())?;
                *req.headers_mut() = headers;
                let resp = router
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| e.to_string())?;
                let (parts, body) = resp.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Answer {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body,
                })
            }
        }
    }
}

/// The headers of a split part's request: the client's (tenant, authorization, …)
/// without hop-by-hop ones and without `Accept-Encoding` (the frontend reads the
/// answer), with a form body.
pub fn part_headers(client: &HeaderMap) -> HeaderMap {
    let mut h = forwardable(client);
    h.remove(header::ACCEPT_ENCODING);
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    h
}
