//! Prometheus's HTTP query API with its exact parameters, error messages and JSON, plus
//! Thanos's query parameters (`dedup`, `replicaLabels[]`, `max_source_resolution`,
//! `partial_response`). GET with a query string and POST with a form body both work;
//! body values win, as in Go's `Request.FormValue`.
//!
//! This module holds the routes, errors and handlers; `json` writes the answers and
//! `params` reads the requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use strata_promql::{Engine, QueryError, QueryResult, Value};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::{parse_selector, Matcher};

use crate::fanout::{Cancel, FanoutStorage, FetchOptions};
use crate::stats::{Cost, QueryCost, QueryLimits};
use crate::Querier;

mod json;
mod metadata;
mod params;
mod status;
mod stores_blocks;

pub use json::*;
pub use params::*;

/// Prometheus's `MinTime` in ms: the earliest time `time.Time` round-trips through
/// RFC 3339; the default `start` of the series and label APIs.
pub const MIN_TIME_MS: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
/// Prometheus's `MaxTime` in ms; the default `end`.
pub const MAX_TIME_MS: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;
const MIN_TIME_FORMATTED: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_FORMATTED: &str = "292277025-08-18T07:12:54.999999999Z";

/// Points per series a range query may ask for (Prometheus's limit).
pub const MAX_POINTS: i64 = 11_000;

/// The version `/api/v1/status/buildinfo` reports: the Prometheus whose PromQL and API
/// Strata follows (3.x: left-open range windows, the lookback edge), so clients such as
/// Grafana pick 3.x behaviour. 3.5 is the long-term-support release of that line.
pub const PROMETHEUS_API_VERSION: &str = "3.5.0";

pub(crate) fn router(q: Arc<Querier>) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata::metadata))
        .route(
            "/api/v1/query_exemplars",
            get(metadata::exemplars).post(metadata::exemplars),
        )
        .route(
            "/api/v1/read",
            axum::routing::post(crate::read::remote_read),
        )
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route(
            "/api/v1/format_query",
            get(status::format_query).post(status::format_query),
        )
        .route(
            "/api/v1/parse_query",
            get(status::parse_query).post(status::parse_query),
        )
        .route("/api/v1/targets", get(status::targets))
        .route("/api/v1/rules", get(status::rules))
        .route("/api/v1/alerts", get(status::alerts))
        .route("/api/v1/stores", get(stores_blocks::stores))
        .route("/api/v1/blocks", get(stores_blocks::blocks))
        .route("/api/v1/{*rest}", axum::routing::any(status::not_found))
        .with_state(q)
}

// ---------------------------------------------------------------------------------------
// Errors

/// An API error: Prometheus's `errorType`, the HTTP status and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub error_type: &'static str,
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            error_type: "bad_data",
            status: 400,
            message: message.into(),
        }
    }

    fn invalid_param(param: &str, err: impl std::fmt::Display) -> Self {
        Self::bad_data(format!("invalid parameter {}: {err}", go_quote(param)))
    }

    fn from_query(e: &QueryError) -> Self {
        let message = match e {
            QueryError::BadData(m) if !m.starts_with("invalid parameter") => {
                format!("invalid parameter \"query\": {m}")
            }
            other => other.to_string(),
        };
        ApiError {
            error_type: e.error_type(),
            status: e.http_status(),
            message,
        }
    }

    fn into_response(self) -> Response {
        json_response(self.status, error_body(self.error_type, &self.message))
    }
}

fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl Querier {
    /// Tenant, partial response, dedup and resolution of a request.
    fn fetch_options(
        &self,
        headers: &HeaderMap,
        p: &Params,
        default_resolution_ms: i64,
    ) -> Result<FetchOptions, ApiError> {
        let tenant = tenant_of(headers)?;
        let partial_response = match p.get("partial_response") {
            "" => self.config.partial_response,
            v => parse_bool("partial_response", v)?,
        };
        let dedup = match p.get("dedup") {
            "" => true,
            v => parse_bool("dedup", v)?,
        };
        let asked: Vec<String> = p
            .all("replicaLabels[]")
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let replica_labels = if !dedup {
            None
        } else if asked.is_empty() {
            Some(self.config.replica_labels.clone())
        } else {
            Some(asked)
        };
        // `auto`: the coarsest resolution at most a fifth of the step (raw for instant
        // queries), as Thanos's `--query.auto-downsampling`; unset means `auto` unless
        // that flag is off.
        let max_resolution_ms = match p.get("max_source_resolution") {
            "" if !self.config.auto_downsampling => 0,
            "" | "auto" => default_resolution_ms,
            v => {
                let ns = parse_duration_ns(v).map_err(|e| {
                    ApiError::bad_data(format!("'max_source_resolution' parameter: {e}"))
                })?;
                if ns < 0 {
                    return Err(ApiError::bad_data(
                        "negative 'max_source_resolution' is not accepted. Try a positive integer",
                    ));
                }
                ns / 1_000_000
            }
        };
        let cost = QueryCost::new(self.fetch_limits(&tenant));
        Ok(FetchOptions {
            min_time: self.min_query_time(&tenant),
            tenant,
            partial_response,
            replica_labels,
            max_resolution_ms,
            timeout: self.config.store_timeout.unwrap_or(self.config.timeout),
            cost,
        })
    }

    /// `timeout` parameter, bounded by `--query.timeout`.
    fn query_timeout(&self, p: &Params) -> Result<Duration, ApiError> {
        let v = p.get("timeout");
        if v.is_empty() {
            return Ok(self.config.timeout);
        }
        let ns = parse_duration_ns(v).map_err(|e| ApiError::invalid_param("timeout", e))?;
        Ok(Duration::from_nanos(ns.max(0) as u64).min(self.config.timeout))
    }

    /// Evaluate on a query thread ([`crate::query_threads`]: kept between queries)
    /// once a `--query.max-concurrent` slot is free. The thread has the stack the depth
    /// limit needs (`--query.max-depth`); it holds the slot until the work stops, and
    /// the work stops soon after this request ends, however it ends (answered, timed
    /// out, or dropped when the client went away).
    async fn evaluate(
        self: &Arc<Self>,
        opts: FetchOptions,
        timeout: Duration,
        query: String,
        range: Option<(i64, i64, i64)>,
        at: i64,
    ) -> Result<(QueryResult, Exec), QueryError> {
        if query.trim().is_empty() {
            return Err(QueryError::BadData(
                "1:1: parse error: no expression found in input".into(),
            ));
        }
        let began = Instant::now();
        // Each selector's samples are counted as they arrive: `--query.max-samples`
        // stops a fetch before its samples are held, not after.
        let mut opts = opts;
        opts.cost = QueryCost::new(QueryLimits {
            max_samples: self.config.max_samples as u64,
            ..self.fetch_limits(&opts.tenant)
        });
        let cost = opts.cost.clone();
        let tenant = opts.tenant.clone();
        let q = query.clone();
        let r = self.evaluate_inner(opts, timeout, query, range, at).await;
        let exec = Exec {
            queue: r.as_ref().map_or(Duration::ZERO, |(_, queue)| *queue),
            total: began.elapsed(),
            cost,
        };
        self.log_if_slow(&tenant, &q, range, &exec, r.as_ref().err());
        r.map(|(res, _)| (res, exec))
    }

    /// A query over `--query.log-slow-queries-over` is logged with its cost.
    fn log_if_slow(
        &self,
        tenant: &str,
        query: &str,
        range: Option<(i64, i64, i64)>,
        exec: &Exec,
        err: Option<&QueryError>,
    ) {
        let over = self.config.log_slow_queries_over;
        if over.is_zero() || exec.total < over {
            return;
        }
        self.metrics.slow.inc();
        let c = exec.cost.total();
        let (start, end, step) = range.unwrap_or((0, 0, 0));
        tracing::warn!(
            tenant,
            query,
            start,
            end,
            step,
            duration_seconds = exec.total.as_secs_f64(),
            queue_seconds = exec.queue.as_secs_f64(),
            series_fetched = c.series,
            chunks_fetched = c.chunks,
            chunk_bytes_fetched = c.chunk_bytes,
            samples_fetched = c.samples,
            object_store_requests = c.object_requests,
            object_store_bytes = c.object_bytes,
            error = err.map(ToString::to_string),
            "slow query"
        );
    }

    async fn evaluate_inner(
        self: &Arc<Self>,
        opts: FetchOptions,
        timeout: Duration,
        query: String,
        range: Option<(i64, i64, i64)>,
        at: i64,
    ) -> Result<(QueryResult, Duration), QueryError> {
        let deadline = Instant::now() + timeout;
        let queued = Instant::now();
        self.metrics.waiting.inc();
        let permit = tokio::time::timeout(timeout, self.limiter.acquire()).await;
        self.metrics.waiting.dec();
        let queue = queued.elapsed();
        let Ok(Ok(permit)) = permit else {
            return Err(QueryError::Timeout("query queue"));
        };
        permit.forget();
        let slot = Slot::take(self.clone());
        let cancel = Arc::new(Cancel::default());
        let _cancel_when_done = CancelOnDrop(cancel.clone());
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut eopts = self.engine_options();
        eopts.timeout = remaining;
        let storage = Arc::new(
            FanoutStorage::new(
                self.sources.clone(),
                opts,
                tokio::runtime::Handle::current(),
            )
            .with_cancel(cancel.clone()),
        );
        let st = storage.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let flag = cancel.flag();
        self.query_threads
            .run(move || {
                let _slot = slot;
                let engine = Engine::new(eopts).with_cancel(flag);
                let r = match range {
                    Some((start, end, step)) => engine.range(&*st, &query, start, end, step),
                    None => engine.instant(&*st, &query, at),
                };
                let _ = tx.send(r);
            })
            .map_err(|e| QueryError::Execution(format!("cannot start a query thread: {e}")))?;
        // The engine stops itself at the deadline; this bounds the wait if it cannot
        // (the cancel flag then stops it).
        let mut res = match tokio::time::timeout(remaining + Duration::from_millis(100), rx).await {
            Err(_) => return Err(QueryError::Timeout("query execution")),
            Ok(Err(_)) => {
                return Err(QueryError::Execution(
                    "query evaluation ended without an answer".into(),
                ))
            }
            Ok(Ok(r)) => r?,
        };
        // The engine drains warnings itself; pick up any it left.
        for w in strata_promql::Storage::take_warnings(&*storage) {
            if !res.warnings.contains(&w) {
                res.warnings.push(w);
            }
        }
        Ok((res, queue))
    }

    /// Run `f` on a blocking thread that drives the fan-out (CPU work stays off the
    /// runtime's workers).
    pub(crate) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Querier, &tokio::runtime::Handle) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let q = self.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || f(&q, &handle))
            .await
            .map_err(|e| ApiError {
                error_type: "internal",
                status: 500,
                message: e.to_string(),
            })
    }

    pub(crate) fn record(&self, endpoint: &str, start: Instant, r: &Result<Response, ApiError>) {
        let status = match r {
            Ok(_) => "success",
            Err(e) => e.error_type,
        };
        self.metrics.queries.with(&[endpoint, status]).inc();
        self.metrics.duration.with(&[endpoint]).observe_since(start);
    }
}

/// How a query was executed: time queued for a slot, time in all, what it read.
pub(crate) struct Exec {
    queue: Duration,
    total: Duration,
    cost: Arc<QueryCost>,
}

/// A query's answer: the envelope, and as `data` the result and with `stats`
/// Prometheus's statistics (`timings`, `samples`) plus Strata's cost (`strata`: totals
/// and per source), written into one buffer.
fn query_body(res: &QueryResult, exec: &Exec, stats: bool) -> String {
    let mut out = String::with_capacity(64 + json::value_json_capacity(&res.value));
    json::success_start(&mut out);
    json::write_value_json(&mut out, &res.value);
    if stats {
        write_stats(&mut out, res, exec);
    }
    json::success_end(&mut out, &res.warnings, &res.infos);
    out
}

/// `stats` into the `data` object just written to `out`.
fn write_stats(buf: &mut String, res: &QueryResult, exec: &Exec) {
    let mut out = std::mem::take(buf); // moved, not copied, and put back below
    out.pop(); // the closing brace: `stats` goes inside `data`
    let secs = |out: &mut String, name: &str, d: Duration| {
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        write_value(out, d.as_secs_f64());
    };
    let st = &res.stats;
    out.push_str(r#","stats":{"timings":{"#);
    secs(&mut out, "evalTotalTime", st.eval_total);
    out.push(',');
    secs(&mut out, "resultSortTime", st.result_sort);
    out.push(',');
    secs(&mut out, "queryPreparationTime", st.preparation);
    out.push(',');
    secs(&mut out, "innerEvalTime", st.inner_eval);
    out.push(',');
    secs(&mut out, "execQueueTime", exec.queue);
    out.push(',');
    secs(&mut out, "execTotalTime", exec.total);
    out.push_str(r#"},"samples":{"totalQueryableSamples":"#);
    push_u64(&mut out, st.total_queryable_samples);
    out.push_str(r#","peakSamples":"#);
    push_u64(&mut out, st.peak_samples);
    out.push_str(r#"},"strata":"#);
    write_cost(&mut out, &exec.cost.total());
    out.pop();
    out.push_str(r#","sources":["#);
    for (i, (name, c)) in exec.cost.per_source().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"source":"#);
        write_str(&mut out, name);
        out.push(',');
        let mut one = String::new();
        write_cost(&mut one, c);
        out.push_str(&one[1..]);
    }
    out.push_str("]}}}");
    *buf = out;
}

/// `{"seriesFetched":…,…}`: what a query read.
fn write_cost(out: &mut String, c: &Cost) {
    let fields = [
        ("seriesFetched", c.series),
        ("chunksFetched", c.chunks),
        ("chunkBytesFetched", c.chunk_bytes),
        ("samplesFetched", c.samples),
        ("objectStoreRequests", c.object_requests),
        ("objectStoreBytes", c.object_bytes),
    ];
    out.push('{');
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(k);
        out.push_str("\":");
        push_u64(out, v);
    }
    out.push('}');
}

/// A `--query.max-concurrent` slot and the in-flight count, held by the thread doing
/// the work and given back when it ends (not when the request does).
struct Slot(Arc<Querier>);

impl Slot {
    /// Account for a permit already taken from the limiter (and forgotten).
    fn take(q: Arc<Querier>) -> Self {
        q.metrics.in_flight.inc();
        Slot(q)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
        self.0.limiter.add_permits(1);
    }
}

/// Cancels the evaluation when the request ends; a no-op if it already finished.
struct CancelOnDrop(Arc<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn finish(q: &Querier, endpoint: &str, start: Instant, r: Result<Response, ApiError>) -> Response {
    q.record(endpoint, start, &r);
    r.unwrap_or_else(ApiError::into_response)
}

fn ok(data: &str, warnings: &[String]) -> Response {
    json_response(200, success_body(data, warnings))
}

// ---------------------------------------------------------------------------------------
// Handlers

/// A handler over an `…_inner` function taking the request's headers, query string and
/// form body: the call is timed and counted under `endpoint`, errors answered in
/// Prometheus's JSON.
macro_rules! handler {
    ($name:ident, $inner:ident, $endpoint:literal) => {
        async fn $name(
            State(q): State<Arc<Querier>>,
            headers: HeaderMap,
            RawQuery(raw): RawQuery,
            body: Bytes,
        ) -> Response {
            let start = Instant::now();
            let r = $inner(&q, &headers, raw.as_deref(), &body).await;
            finish(&q, $endpoint, start, r)
        }
    };
}

handler!(query, query_inner, "query");
handler!(query_range, query_range_inner, "query_range");
handler!(series, series_inner, "series");
handler!(labels, label_names_inner, "labels");

async fn query_inner(
    q: &Arc<Querier>,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let p = Params::parse(headers, raw, body)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let ts = time_param(&p, "time", now)?;
    let timeout = q.query_timeout(&p)?;
    let opts = q.fetch_options(headers, &p, 0)?;
    let (res, exec) = q
        .evaluate(opts, timeout, p.get("query").to_string(), None, ts)
        .await
        .map_err(|e| ApiError::from_query(&e))?;
    Ok(json_response(
        200,
        query_body(&res, &exec, !p.get("stats").is_empty()),
    ))
}

async fn query_range_inner(
    q: &Arc<Querier>,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let p = Params::parse(headers, raw, body)?;
    let start = parse_time(p.get("start")).map_err(|e| ApiError::invalid_param("start", e))?;
    let end = parse_time(p.get("end")).map_err(|e| ApiError::invalid_param("end", e))?;
    if end < start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    let step_ns =
        parse_duration_ns(p.get("step")).map_err(|e| ApiError::invalid_param("step", e))?;
    if step_ns <= 0 {
        return Err(ApiError::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (i128::from(end - start) * 1_000_000) / i128::from(step_ns) > i128::from(MAX_POINTS) {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let timeout = q.query_timeout(&p)?;
    let step_ms = (step_ns / 1_000_000).max(1);
    let opts = q.fetch_options(headers, &p, step_ms / 5)?;
    let (res, exec) = q
        .evaluate(
            opts,
            timeout,
            p.get("query").to_string(),
            Some((start, end, step_ms)),
            0,
        )
        .await
        .map_err(|e| ApiError::from_query(&e))?;
    Ok(json_response(
        200,
        query_body(&res, &exec, !p.get("stats").is_empty()),
    ))
}

async fn series_inner(
    q: &Arc<Querier>,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let p = Params::parse(headers, raw, body)?;
    if p.all("match[]").is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let limit = limit_param(&p)?;
    let start = time_param(&p, "start", MIN_TIME_MS)?;
    let end = time_param(&p, "end", MAX_TIME_MS)?;
    let sets = matchers_param(&p)?;
    let opts = q.fetch_options(headers, &p, 0)?;
    let (mut all, mut warnings) = q
        .blocking(move |q, h| -> Result<_, ApiError> {
            let mut all = std::collections::BTreeSet::new();
            let mut warnings = Vec::new();
            for ms in &sets {
                let f = h
                    .block_on(q.sources.fetch(&opts, ms, start, end, None, true))
                    .map_err(storage_error)?;
                all.extend(f.series.into_iter().map(|(l, _)| l));
                warnings.extend(f.warnings);
            }
            Ok((all.into_iter().collect::<Vec<Labels>>(), warnings))
        })
        .await??;
    if limit > 0 && all.len() > limit {
        all.truncate(limit);
        warnings.push("results truncated due to limit".into());
    }
    let mut data = String::from("[");
    for (i, l) in all.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        write_labels(&mut data, l);
    }
    data.push(']');
    Ok(ok(&data, &warnings))
}

fn storage_error(e: crate::fanout::FetchError) -> ApiError {
    ApiError {
        error_type: "execution",
        status: 422,
        message: e.0,
    }
}

async fn label_names_inner(
    q: &Arc<Querier>,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    labels_inner(q, headers, raw, body, None).await
}

async fn label_values(
    State(q): State<Arc<Querier>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let start = Instant::now();
    let r = if valid_label_name(&name) {
        labels_inner(&q, &headers, raw.as_deref(), &[], Some(name)).await
    } else {
        Err(ApiError::bad_data(format!(
            "invalid label name: {}",
            go_quote(&name)
        )))
    };
    finish(&q, "label_values", start, r)
}

async fn labels_inner(
    q: &Arc<Querier>,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &[u8],
    name: Option<String>,
) -> Result<Response, ApiError> {
    let p = Params::parse(headers, raw, body)?;
    let start = time_param(&p, "start", MIN_TIME_MS)?;
    let end = time_param(&p, "end", MAX_TIME_MS)?;
    let sets = matchers_param(&p)?;
    let limit = limit_param(&p)?;
    let opts = q.fetch_options(headers, &p, 0)?;
    let (mut vals, mut warnings) = q
        .blocking(move |q, h| -> Result<_, ApiError> {
            let mut all = std::collections::BTreeSet::new();
            let mut warnings = Vec::new();
            let sets = if sets.is_empty() {
                vec![Vec::new()]
            } else {
                sets
            };
            for ms in &sets {
                let (v, w) = h
                    .block_on(q.sources.labels(&opts, name.as_deref(), ms, start, end))
                    .map_err(storage_error)?;
                all.extend(v);
                warnings.extend(w);
            }
            Ok((all.into_iter().collect::<Vec<String>>(), warnings))
        })
        .await??;
    if limit > 0 && vals.len() > limit {
        vals.truncate(limit);
        warnings.push("results truncated due to limit".into());
    }
    Ok(ok(&string_array(&vals), &warnings))
}

async fn buildinfo() -> Response {
    let mut data = String::from(r#"{"version":"#);
    write_str(&mut data, PROMETHEUS_API_VERSION);
    data.push_str(r#","revision":"","branch":"","buildUser":"","buildDate":"","goVersion":"","application":"strata","strataVersion":"#);
    write_str(&mut data, env!("CARGO_PKG_VERSION"));
    data.push('}');
    ok(&data, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_promql::{RangeSeries, VectorSample};

    #[test]
    fn values_format_like_prometheus() {
        // the exact tie as written, not its nearest shorter literal
        #[allow(clippy::excessive_precision)]
        let cases = [
            (1.0, "1"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-07"),
            (0.000001, "0.000001"),
            (123456789.125, "123456789.125"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (0.0, "0"),
            (-0.0, "-0"),
            (1e300, "1e+300"),
            (2.0f64.powi(60), "1152921504606847000"), // Go pads the shortest digits with zeros
            // Exactly between two shortest candidates: Go rounds to even.
            (-927243486562757.25, "-927243486562757.2"),
        ];
        for (v, want) in cases {
            assert_eq!(format_value(v), want, "{v:e}");
        }
    }

    /// Go's layout built from Rust's own float formatting (slow: allocates twice).
    fn format_value_slow(v: f64) -> String {
        if v.is_nan() || v.is_infinite() {
            return format_value(v);
        }
        let abs = v.abs();
        if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
            let s = format!("{v:e}");
            let (mant, exp) = s.split_once('e').expect("exponent form");
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mant}e{sign}{digits:0>2}");
        }
        format!("{v}")
    }

    proptest::proptest! {
        #[test]
        fn fast_value_format_matches_slow(bits in proptest::num::u64::ANY, small in -1e7f64..1e7, scale in -30i32..30) {
            for v in [f64::from_bits(bits), small * 10f64.powi(scale), (small * 1000.0).round() / 1000.0] {
                let (fast, slow) = (format_value(v), format_value_slow(v));
                if fast != slow {
                    // Rust's shortest digits round an exact tie up, Go's (and ryu's) to
                    // even: both read back as `v`, with as many digits.
                    proptest::prop_assert_eq!(fast.len(), slow.len(), "{} vs {}", fast, slow);
                    proptest::prop_assert_eq!(fast.parse::<f64>().ok(), Some(v), "{}", fast);
                }
            }
        }
    }

    #[test]
    fn timestamps_format_like_prometheus() {
        let f = |t| {
            let mut s = String::new();
            write_ts(&mut s, t);
            s
        };
        assert_eq!(f(1_700_000_000_123), "1700000000.123");
        assert_eq!(f(1_700_000_000_000), "1700000000");
        assert_eq!(f(1_700_000_000_120), "1700000000.120");
        assert_eq!(f(1_700_000_000_005), "1700000000.005");
        assert_eq!(f(-1500), "-1.500");
        assert_eq!(f(0), "0");
    }

    #[test]
    fn result_shapes_are_golden() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a<b>&\"c\"\n")]);
        let v = Value::Vector(vec![VectorSample {
            labels: l.clone(),
            t: 1_700_000_000_123,
            v: 1.0,
            h: None,
        }]);
        assert_eq!(
            value_json(&v),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\u003cb\u003e\u0026\"c\"\n"},"value":[1700000000.123,"1"]}]}"#
        );
        let m = Value::Matrix(vec![RangeSeries {
            labels: Labels::from_pairs([("a", "b")]),
            samples: vec![(1000, f64::NAN), (2500, f64::INFINITY)],
            histograms: Vec::new(),
        }]);
        assert_eq!(
            value_json(&m),
            r#"{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1,"NaN"],[2.500,"+Inf"]]}]}"#
        );
        assert_eq!(
            value_json(&Value::Scalar { t: 1000, v: -1e-7 }),
            r#"{"resultType":"scalar","result":[1,"-1e-07"]}"#
        );
        assert_eq!(
            value_json(&Value::String {
                t: 1001,
                s: "x\u{1}".into()
            }),
            r#"{"resultType":"string","result":[1.001,"x\u0001"]}"#
        );
        assert_eq!(
            value_json(&Value::Vector(vec![])),
            r#"{"resultType":"vector","result":[]}"#
        );
        assert_eq!(
            value_json(&Value::Matrix(vec![])),
            r#"{"resultType":"matrix","result":[]}"#
        );
        assert_eq!(
            success_body("[]", &["w1".into()]),
            r#"{"status":"success","data":[],"warnings":["w1"]}"#
        );
        assert_eq!(success_body("{}", &[]), r#"{"status":"success","data":{}}"#);
        assert_eq!(
            error_body("bad_data", "x \"y\""),
            r#"{"status":"error","errorType":"bad_data","error":"x \"y\""}"#
        );
    }

    #[test]
    fn error_types_map_to_statuses() {
        let cases = [
            (
                QueryError::BadData("1:3: parse error: x".into()),
                "bad_data",
                400,
                "invalid parameter \"query\": 1:3: parse error: x",
            ),
            (
                QueryError::Execution("many-to-many".into()),
                "execution",
                422,
                "many-to-many",
            ),
            (
                QueryError::TooManySamples,
                "execution",
                422,
                "query processing would load too many samples into memory in query execution",
            ),
            (
                QueryError::Timeout("query execution"),
                "timeout",
                503,
                "query timed out in query execution",
            ),
            (
                QueryError::Canceled("query execution"),
                "canceled",
                499,
                "query was canceled in query execution",
            ),
        ];
        for (e, typ, status, msg) in cases {
            let a = ApiError::from_query(&e);
            assert_eq!(
                (a.error_type, a.status, a.message.as_str()),
                (typ, status, msg)
            );
        }
    }

    #[test]
    fn times_parse_like_prometheus() {
        assert_eq!(parse_time("1700000000.123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.1234"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.123456Z"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_time("2023-11-15T00:13:20.5+02:00"),
            Ok(1_700_000_000_500)
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time(MIN_TIME_FORMATTED), Ok(MIN_TIME_MS));
        assert_eq!(parse_time(MAX_TIME_FORMATTED), Ok(MAX_TIME_MS));
        assert_eq!(
            parse_time("x").unwrap_err(),
            "cannot parse \"x\" to a valid timestamp"
        );
        assert!(parse_time("2023-02-30T00:00:00Z").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn durations_parse_like_prometheus() {
        assert_eq!(parse_duration_ns("15"), Ok(15_000_000_000));
        assert_eq!(parse_duration_ns("0.5"), Ok(500_000_000));
        assert_eq!(parse_duration_ns("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration_ns("5m"), Ok(300_000_000_000));
        assert_eq!(parse_duration_ns("100ms"), Ok(100_000_000));
        assert_eq!(parse_duration_ns("-1"), Ok(-1_000_000_000));
        assert_eq!(
            parse_duration_ns("x").unwrap_err(),
            "cannot parse \"x\" to a valid duration"
        );
        assert!(parse_duration_ns("1e10")
            .unwrap_err()
            .contains("overflows int64"));
        assert!(parse_duration_ns("").is_err());
        // Prometheus's model.ParseDuration rules: units in order, once, within i64 ns.
        assert!(parse_duration_ns("1s1m").is_err());
        assert!(parse_duration_ns("1.5m").is_err());
        assert!(parse_duration_ns("293y").is_err());
    }

    #[test]
    fn params_merge_body_first() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let p = Params::parse(&h, Some("query=a&match[]=x"), b"query=b%2B1&match%5B%5D=y").unwrap();
        assert_eq!(p.get("query"), "b+1");
        assert_eq!(p.all("match[]"), vec!["y", "x"]);
        assert_eq!(p.get("nope"), "");
        // Not a form: the body is ignored.
        let p = Params::parse(&HeaderMap::new(), None, b"query=b").unwrap();
        assert_eq!(p.get("query"), "");
    }

    #[test]
    fn label_names() {
        assert!(valid_label_name("job"));
        assert!(valid_label_name("__name__"));
        assert!(!valid_label_name("1a"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name(""));
    }
}
