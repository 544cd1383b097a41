//! The HTTP skeleton every component serves: `GET /metrics`, `GET /-/healthy`,
//! `GET /-/ready`, and a request-duration histogram over all routes.
//!
//! A component merges its own routes, instruments the result once, and serves it:
//!
//! ```no_run
//! use axum::routing::get;
//! use strata_kit::http::{self, Readiness, ServerState};
//! use strata_kit::metrics::Registry;
//! use strata_kit::shutdown::Shutdown;
//!
//! # async fn run() -> Result<(), http::ServeError> {
//! let registry = Registry::with_process_metrics();
//! let readiness = Readiness::new();
//! let state = ServerState::new(&registry, readiness.clone());
//! let mine = axum::Router::new().route("/api/v1/status", get(|| async { "fine" }));
//! let app = http::instrument(http::router(state.clone()).merge(mine), &state);
//! readiness.set_ready();
//! http::serve("0.0.0.0:10902".parse().unwrap(), app, Shutdown::with_signals()).await
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::{HistogramVec, Registry, LATENCY_BUCKETS, TEXT_CONTENT_TYPE};
use crate::shutdown::Shutdown;

mod lenient;
mod tls;
mod web;
mod webconfig;

pub use lenient::LenientIo;
pub use web::CorsOrigin;
pub use webconfig::{set_web_config, WebConfig, WebConfigError};

/// Whether the component can take traffic; `/-/ready` answers 503 with the reason until
/// [`Readiness::set_ready`]. Clones share the flag.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<Mutex<Option<String>>>);

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready, with reason "starting".
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Some("starting".into()))))
    }

    pub fn set_ready(&self) {
        *self.lock() = None;
    }

    /// Mark not ready; `reason` is the body of the 503 (e.g. "replaying WAL").
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.lock() = Some(reason.into());
    }

    pub fn is_ready(&self) -> bool {
        self.lock().is_none()
    }

    /// `Ok` when ready, else the reason.
    pub fn check(&self) -> Result<(), String> {
        match &*self.lock() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// HTTP server metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// `strata_http_request_duration_seconds{handler,method,code}`
    pub request_duration: HistogramVec,
}

impl HttpMetrics {
    /// Register the HTTP metrics in `registry` (once per registry).
    pub fn new(registry: &Registry) -> Self {
        Self {
            request_duration: registry.histogram_vec(
                "strata_http_request_duration_seconds",
                "Time spent answering HTTP requests, by route pattern, method and status code.",
                LATENCY_BUCKETS,
                &["handler", "method", "code"],
            ),
        }
    }
}

/// What the skeleton's handlers need. Build it once per process (it registers the HTTP
/// metrics) and clone it.
#[derive(Clone, Debug)]
pub struct ServerState {
    pub registry: Registry,
    pub readiness: Readiness,
    pub metrics: HttpMetrics,
    /// Origins the API answers cross-origin requests from (all by default).
    pub cors_origin: CorsOrigin,
}

impl ServerState {
    /// Registers [`HttpMetrics`] in `registry`; panics if that was already done.
    pub fn new(registry: &Registry, readiness: Readiness) -> Self {
        Self {
            registry: registry.clone(),
            readiness,
            metrics: HttpMetrics::new(registry),
            cors_origin: CorsOrigin::default(),
        }
    }

    /// Answer cross-origin API requests only from origins matching `origin`
    /// [`--web.cors.origin`].
    pub fn with_cors_origin(mut self, origin: CorsOrigin) -> Self {
        self.cors_origin = origin;
        self
    }
}

/// `GET /metrics`, `GET /-/healthy`, `GET /-/ready` and the process status endpoints
/// ([`crate::status`]), not yet instrumented: merge your routes into it, then wrap the
/// whole router once with [`instrument`].
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .with_state(state)
        .merge(crate::status::routes())
}

/// Time every request of `router` into `strata_http_request_duration_seconds`, labelled
/// by the matched route pattern (`/api/v1/series`, not the raw path, so the label set
/// stays bounded; requests that match no route are `handler="unmatched"`), method and
/// status code. Call once on the final router: routes merged afterwards are not timed.
/// Also gzips answers for clients that accept it and sets CORS headers on `/api/`.
pub fn instrument(router: Router, state: &ServerState) -> Router {
    router
        .layer(middleware::from_fn(web::gzip))
        .layer(middleware::from_fn_with_state(
            state.cors_origin.clone(),
            web::cors,
        ))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), track))
}

async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let handler = match req.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().to_owned(),
        None => "unmatched".to_owned(),
    };
    let method = method_label(req.method());
    let resp = next.run(req).await;
    m.request_duration
        .with(&[&handler, method, resp.status().as_str()])
        .observe_since(start);
    resp
}

/// Methods outside the standard set share one label value, bounding cardinality.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

async fn metrics(State(state): State<ServerState>) -> Response {
    (
        [(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)],
        state.registry.encode(),
    )
        .into_response()
}

async fn healthy() -> &'static str {
    "OK"
}

async fn ready(State(state): State<ServerState>) -> Response {
    match state.readiness.check() {
        Ok(()) => "OK".into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response(),
    }
}

/// Why the HTTP server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken, not local, or not permitted.
    #[error("cannot listen on HTTP address {addr} (--http-address): {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The server failed while running.
    #[error("HTTP server on {addr}: {error}")]
    Serve {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// A bound HTTP listener, ready to serve. Binding first lets a caller learn the port
/// when it asked for port 0, and fail fast before starting other work.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    grace_period: Option<Duration>,
}

impl Server {
    /// Bind `addr`; the error names the address and the flag that sets it.
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| ServeError::Bind { addr, error })?;
        let addr = listener
            .local_addr()
            .map_err(|error| ServeError::Bind { addr, error })?;
        Ok(Self {
            listener,
            addr,
            grace_period: None,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// After shutdown fires, wait at most `grace` for in-flight requests, then drop the
    /// remaining connections (Thanos's `--http-grace-period`). Without it, wait for all.
    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = Some(grace);
        self
    }

    /// Serve `router` until `shutdown` fires and in-flight requests finish (or the grace
    /// period runs out).
    pub async fn serve(self, router: Router, shutdown: Shutdown) -> Result<(), ServeError> {
        let addr = self.addr;
        let web = webconfig::global();
        let router = match &web {
            Some(w) => router.layer(middleware::from_fn_with_state(w.clone(), webconfig::guard)),
            None => router,
        };
        let result = match web.and_then(|w| w.tls.clone()) {
            Some(tls) => {
                tracing::info!(%addr, "listening for HTTPS");
                let listener = tls::TlsListener::new(self.listener, tls, addr);
                run(listener, router, &shutdown, self.grace_period, addr).await
            }
            None => {
                tracing::info!(%addr, "listening for HTTP");
                let listener = lenient::LenientListener(self.listener);
                run(listener, router, &shutdown, self.grace_period, addr).await
            }
        };
        result.map_err(|error| ServeError::Serve { addr, error })?;
        tracing::info!(%addr, "HTTP server stopped");
        Ok(())
    }
}

/// Serve until `shutdown`, then wait for in-flight requests (at most `grace`).
async fn run<L>(
    listener: L,
    router: Router,
    shutdown: &Shutdown,
    grace: Option<Duration>,
    addr: SocketAddr,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    // `into_make_service` clones the router (an `Arc`) per connection; serving the
    // `Router` itself re-applies its state to every route and layer per connection,
    // a quarter of a small query's CPU when clients do not keep connections alive.
    let graceful = axum::serve(listener, router.into_make_service())
        .with_graceful_shutdown(shutdown.clone().wait_owned());
    match grace {
        None => graceful.await,
        Some(grace) => {
            let deadline = async {
                shutdown.wait().await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                r = graceful => r,
                _ = deadline => {
                    tracing::warn!(%addr, ?grace, "HTTP grace period over; dropping open connections");
                    Ok(())
                }
            }
        }
    }
}

/// Bind `addr` and serve `router` until `shutdown` fires; see [`Server`].
pub async fn serve(addr: SocketAddr, router: Router, shutdown: Shutdown) -> Result<(), ServeError> {
    Server::bind(addr).await?.serve(router, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A minimal HTTP/1.1 client: (status, headers lowercased, body).
    async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        request(addr, "GET", path).await
    }

    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    struct Running {
        addr: SocketAddr,
        shutdown: Shutdown,
        task: tokio::task::JoinHandle<Result<(), ServeError>>,
        readiness: Readiness,
        registry: Registry,
    }

    async fn start() -> Running {
        let registry = Registry::new();
        let readiness = Readiness::new();
        let state = ServerState::new(&registry, readiness.clone());
        let mine = Router::new().route("/api/v1/label/{name}/values", get(|| async { "[]" }));
        let app = instrument(router(state.clone()).merge(mine), &state);
        let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(server.serve(app, shutdown.clone()));
        Running {
            addr,
            shutdown,
            task,
            readiness,
            registry,
        }
    }

    #[tokio::test]
    async fn endpoints() {
        let r = start().await;

        let (status, _, body) = http_get(r.addr, "/-/healthy").await;
        assert_eq!((status, body.as_str()), (200, "OK"));

        let (status, _, body) = http_get(r.addr, "/-/ready").await;
        assert_eq!((status, body.as_str()), (503, "not ready: starting"));
        r.readiness.set_not_ready("replaying WAL");
        let (status, _, body) = http_get(r.addr, "/-/ready").await;
        assert_eq!((status, body.as_str()), (503, "not ready: replaying WAL"));
        r.readiness.set_ready();
        let (status, _, body) = http_get(r.addr, "/-/ready").await;
        assert_eq!((status, body.as_str()), (200, "OK"));

        let (status, _, _) = http_get(r.addr, "/api/v1/label/job/values").await;
        assert_eq!(status, 200);
        let (status, _, _) = http_get(r.addr, "/api/v1/label/instance/values").await;
        assert_eq!(status, 200);
        let (status, _, _) = http_get(r.addr, "/nope").await;
        assert_eq!(status, 404);
        let (status, _, _) = request(r.addr, "POST", "/-/healthy").await;
        assert_eq!(status, 405);

        let (status, head, body) = http_get(r.addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        let count = |labels: &str| -> u64 {
            let prefix = format!("strata_http_request_duration_seconds_count{{{labels}}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
                .parse()
                .unwrap()
        };
        assert_eq!(count(r#"handler="/-/healthy",method="GET",code="200""#), 1);
        assert_eq!(count(r#"handler="/-/ready",method="GET",code="503""#), 2);
        assert_eq!(count(r#"handler="/-/ready",method="GET",code="200""#), 1);
        // The route pattern, not the path: one series for both label names.
        assert_eq!(
            count(r#"handler="/api/v1/label/{name}/values",method="GET",code="200""#),
            2
        );
        assert_eq!(count(r#"handler="unmatched",method="GET",code="404""#), 1);
        assert_eq!(count(r#"handler="/-/healthy",method="POST",code="405""#), 1);
        assert_eq!(
            r.registry
                .encode()
                .matches("# TYPE strata_http_request_duration_seconds")
                .count(),
            1
        );

        r.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), r.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let r = start().await;
        assert_eq!(http_get(r.addr, "/-/healthy").await.0, 200);
        r.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), r.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(r.addr).await.is_err(),
            "still listening"
        );
    }

    #[tokio::test]
    async fn grace_period_bounds_shutdown() {
        let registry = Registry::new();
        let state = ServerState::new(&registry, Readiness::new());
        let slow = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        );
        let app = instrument(router(state.clone()).merge(slow), &state);
        let server = Server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
            .with_grace_period(Duration::from_millis(100));
        let addr = server.local_addr();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(server.serve(app, shutdown.clone()));
        let stuck = tokio::spawn(async move { http_get(addr, "/slow").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        stuck.abort();
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = Server::bind(addr).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()), "{msg}");
        assert!(msg.contains("--http-address"), "{msg}");
        assert!(msg.to_lowercase().contains("in use"), "{msg}");
        let err = serve(addr, Router::new(), Shutdown::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ServeError::Bind { .. }), "{err}");
    }
}
