//! The query frontend: it stands in front of one or more queriers and serves the same
//! Prometheus HTTP API. Range queries are split by interval (a day by default) and the
//! parts run in parallel, each answered from the results cache where it can be; every
//! request downstream waits in a per-tenant fair queue; everything that is not a range
//! query is passed through unchanged. Each query's cost (the parts' `stats=all` summed,
//! plus cache hits, queue wait and wall time per stage) is answered with `stats=all`,
//! logged when slow, and kept for `/api/v1/status/queries`.
//!
//! `split` cuts queries, `response` reads and merges answers, `cache` keeps extents,
//! `queue` is the fair queue, `downstream` talks to the queriers and `report` keeps the
//! recent queries' costs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use strata_kit::metrics::{Counter, CounterVec, HistogramVec, Registry, LATENCY_BUCKETS};
use strata_kit::runtime_config::RuntimeConfig;

pub mod cache;
pub mod downstream;
pub mod queue;
pub mod report;
pub mod response;
pub mod shard;
pub mod split;

use cache::{add_extent, assemble, gaps, Extent, ResultsCache};
use downstream::{forwardable, part_headers, Answer, Downstream};
use queue::FairQueue;
use report::{QueryRecord, Report};
use response::{decode, encode, merge_stats, Matrix, Merger, Series};
use shard::ShardPlan;
use split::{shape, split, RangeQuery};

/// The frontend's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
}

/// The frontend's settings (flags in `strata query-frontend` and `strata all`).
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// `--query-range.split-interval`; 0 turns splitting (and caching) off.
    pub split_interval_ms: i64,
    /// `--query-range.align-range-with-step`.
    pub align_with_step: bool,
    /// `--query-frontend.max-parallelism`: parts of one query in flight at once.
    pub max_parallelism: usize,
    /// `--query-range.max-retries`: attempts after the first on a 5xx or no answer.
    pub max_retries: usize,
    /// `--query-range.max-freshness`: answers newer than this are never cached.
    pub max_freshness_ms: i64,
    /// `--query-range.results-cache.max-size-bytes`; 0 turns the cache off.
    pub results_cache_max_bytes: u64,
    /// `--query-frontend.max-outstanding-requests-per-tenant`; 0 is unbounded.
    pub max_outstanding_per_tenant: usize,
    /// `--query-frontend.max-concurrent`: requests in flight to the downstreams.
    pub max_concurrent: usize,
    /// `--query-frontend.log-queries-longer-than`; zero logs none.
    pub log_queries_longer_than: Duration,
    /// Longest wait for one downstream answer.
    pub downstream_timeout: Duration,
    /// `--query-frontend.query-sharding-total-shards`: shards of each split part of a
    /// shardable query; 0 or 1 turns sharding off.
    pub query_sharding_total_shards: usize,
    /// `--query-frontend.query-sharding-max-sharded-queries`: shard queries of one
    /// query at most (parts times shards; fewer shards per part beyond); 0 = no bound.
    pub query_sharding_max_sharded_queries: usize,
    /// `--query-frontend.max-total-query-length`: a range query spanning more is
    /// refused (400) before it is split; 0 = no limit. A tenant's
    /// `max_total_query_length` in the runtime configuration overrides it.
    pub max_total_query_length_ms: i64,
    /// `--querier.max-query-lookback`: a range query's start before `now - lookback` is
    /// moved up to it (onto the query's step grid) before the length check and the
    /// split; a query wholly before it answers empty. 0 = no limit. A tenant's
    /// `max_query_lookback` in the runtime configuration overrides it.
    pub max_query_lookback_ms: i64,
    /// Per-tenant overrides (`--runtime-config.file`), read at every query.
    pub runtime_config: Arc<RuntimeConfig>,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            split_interval_ms: 86_400_000,
            align_with_step: false,
            max_parallelism: 14,
            max_retries: 5,
            max_freshness_ms: 600_000,
            results_cache_max_bytes: 256 << 20,
            max_outstanding_per_tenant: 100,
            max_concurrent: 20,
            log_queries_longer_than: Duration::from_secs(5),
            downstream_timeout: Duration::from_secs(300),
            query_sharding_total_shards: 0,
            query_sharding_max_sharded_queries: 128,
            max_total_query_length_ms: 0,
            max_query_lookback_ms: 0,
            runtime_config: RuntimeConfig::none(),
        }
    }
}

#[derive(Clone, Debug)]
struct Metrics {
    queries: CounterVec,
    duration: HistogramVec,
    parts: Counter,
    hits: Counter,
    misses: Counter,
    retries: Counter,
    discarded: CounterVec,
    slow: Counter,
    sharded_rewrites: Counter,
    shard_queries: Counter,
}

impl Metrics {
    fn new(reg: &Registry) -> Metrics {
        Metrics {
            queries: reg.counter_vec(
                "strata_query_frontend_queries_total",
                "Requests the query frontend answered, by operation (query_range, proxy) and HTTP status code.",
                &["op", "code"],
            ),
            duration: reg.histogram_vec(
                "strata_query_frontend_query_duration_seconds",
                "Time to answer a request at the query frontend, by operation.",
                LATENCY_BUCKETS,
                &["op"],
            ),
            parts: reg.counter(
                "strata_query_frontend_split_queries_total",
                "Parts range queries were split into.",
            ),
            hits: reg.counter(
                "strata_query_frontend_results_cache_hits_total",
                "Split parts answered entirely from the results cache.",
            ),
            misses: reg.counter(
                "strata_query_frontend_results_cache_misses_total",
                "Split parts that needed at least one downstream request.",
            ),
            retries: reg.counter(
                "strata_query_frontend_retries_total",
                "Downstream requests sent again after a 5xx answer or no answer (--query-range.max-retries).",
            ),
            discarded: reg.counter_vec(
                "strata_query_frontend_discarded_requests_total",
                "Requests refused because their tenant's queue was full (--query-frontend.max-outstanding-requests-per-tenant).",
                &["tenant"],
            ),
            slow: reg.counter(
                "strata_query_frontend_slow_queries_total",
                "Queries over --query-frontend.log-queries-longer-than.",
            ),
            sharded_rewrites: reg.counter(
                "strata_query_frontend_query_sharding_rewrites_succeeded_total",
                "Range queries run as shards (--query-frontend.query-sharding-total-shards).",
            ),
            shard_queries: reg.counter(
                "strata_query_frontend_sharded_queries_total",
                "Shard queries sent downstream (each split part of a sharded query, per shard).",
            ),
        }
    }
}

/// The query frontend.
pub struct Frontend {
    config: FrontendConfig,
    downstream: Downstream,
    queue: FairQueue,
    cache: Option<ResultsCache>,
    report: Report,
    metrics: Metrics,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Frontend {
    pub fn new(
        config: FrontendConfig,
        downstream: Downstream,
        registry: &Registry,
    ) -> Result<Arc<Frontend>, Error> {
        if config.split_interval_ms < 0 || config.max_freshness_ms < 0 {
            return Err(Error::Config(
                "--query-range.split-interval and --query-range.max-freshness must not be negative"
                    .into(),
            ));
        }
        let cache = (config.results_cache_max_bytes > 0)
            .then(|| ResultsCache::new(config.results_cache_max_bytes));
        let fe = Arc::new(Frontend {
            queue: FairQueue::new(config.max_concurrent, config.max_outstanding_per_tenant),
            cache,
            report: Report::default(),
            metrics: Metrics::new(registry),
            downstream,
            config,
        });
        let q = fe.queue.clone();
        registry.gauge_fn(
            "strata_query_frontend_queue_length",
            "Downstream requests waiting in the per-tenant queues.",
            move || q.total_waiting() as f64,
        );
        let weak = Arc::downgrade(&fe);
        registry.gauge_fn(
            "strata_query_frontend_results_cache_bytes",
            "Bytes held by the results cache (--query-range.results-cache.max-size-bytes).",
            move || {
                weak.upgrade()
                    .and_then(|f| f.cache.as_ref().map(|c| c.bytes() as f64))
                    .unwrap_or(0.0)
            },
        );
        Ok(fe)
    }

    /// `query_range` (also under `/prometheus`), `/api/v1/status/queries`, and every
    /// other path passed through to the downstreams.
    pub fn routes(self: &Arc<Self>) -> Router {
        let api = Router::new()
            .route("/api/v1/query_range", get(range).post(range))
            .route("/api/v1/status/queries", get(status_queries));
        Router::new()
            .merge(api.clone())
            .nest("/prometheus", api)
            .fallback(proxy)
            .with_state(self.clone())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The tenant a request names (`X-Scope-OrgID`, then `THANOS-TENANT`), else the
/// default one. The queriers validate it; the frontend only keys queues and caches.
fn tenant_of(headers: &HeaderMap) -> String {
    strata_kit::tenant::TENANT_HEADERS
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .filter(|t| !t.is_empty())
        .unwrap_or(strata_kit::tenant::DEFAULT_TENANT)
        .to_string()
}

/// The request's parameters: the query string, then a form body (as Go's `FormValue`,
/// the body's values come later and win).
fn form_params(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = query
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        if let Ok(b) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            p.extend(b);
        }
    }
    p
}

fn error_response(status: u16, error_type: &str, message: &str) -> Response {
    let body = json!({"status": "error", "errorType": error_type, "error": message}).to_string();
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A downstream answer passed back as it came, without hop-by-hop headers.
fn passthrough(a: Answer) -> Response {
    let mut r = Response::new(Body::from(a.body));
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
    *r.headers_mut() = forwardable(&a.headers);
    r
}

/// A querier's 503 for a query over its time limit (Prometheus's `timeout` type).
fn is_timeout(a: &Answer) -> bool {
    a.status == 503 && a.body.windows(21).any(|w| w == br#""errorType":"timeout""#)
}

/// Why a request could not be answered from downstream.
enum Failure {
    /// The tenant's queue is full.
    TooMany,
    /// A downstream answer that is not a success, passed back as it is.
    Answer(Answer),
    /// No downstream answered, or its answer could not be read.
    Unavailable(String),
}

impl Failure {
    fn into_response(self, fe: &Frontend, tenant: &str) -> Response {
        match self {
            Failure::TooMany => {
                fe.metrics.discarded.with(&[tenant]).inc();
                error_response(429, "too_many_requests", queue::TOO_MANY_OUTSTANDING)
            }
            Failure::Answer(a) => passthrough(a),
            Failure::Unavailable(m) => error_response(502, "unavailable", &m),
        }
    }
}

/// Time spent and requests made on behalf of one query.
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    queue: Duration,
    downstream: Duration,
    requests: u64,
    retries: u64,
    shard_queries: u64,
}

impl Frontend {
    /// Mimir's refusal of a range query of `length_ms` over `tenant`'s
    /// `max_total_query_length` (the runtime configuration's, else the flag's; 0 = off).
    fn too_long(&self, tenant: &str, length_ms: i64) -> Option<String> {
        let limit = self.tenant_limit(
            tenant,
            |o| o.max_total_query_length,
            self.config.max_total_query_length_ms,
        );
        (limit > 0 && length_ms > limit).then(|| {
            // Go's time.Duration form, as Mimir prints both.
            format!(
                "the total query time range exceeds the limit (query length: {}, limit: {}) (err-mimir-max-total-query-length). To adjust the related per-tenant limit, configure -query-frontend.max-total-query-length, or contact your service administrator.",
                strata_kit::format_go_duration_ms(length_ms),
                strata_kit::format_go_duration_ms(limit)
            )
        })
    }

    /// `tenant`'s oldest readable time now (`now - max_query_lookback`, the runtime
    /// configuration's over the flag's), `None` without a limit.
    fn min_query_time(&self, tenant: &str) -> Option<i64> {
        let lookback = self.tenant_limit(
            tenant,
            |o| o.max_query_lookback,
            self.config.max_query_lookback_ms,
        );
        (lookback > 0).then(|| now_ms().saturating_sub(lookback))
    }

    /// `tenant`'s runtime-configuration value of a key (`key` picks it), else `flag`.
    fn tenant_limit(
        &self,
        tenant: &str,
        key: fn(&strata_kit::runtime_config::TenantOverrides) -> Option<i64>,
        flag: i64,
    ) -> i64 {
        key(&self.config.runtime_config.tenant(tenant)).unwrap_or(flag)
    }

    /// Send a request through the fair queue, retrying 5xx answers and failed sends.
    async fn send(
        &self,
        tenant: &str,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
        spent: &Mutex<Spent>,
    ) -> Result<Answer, Failure> {
        let mut attempt = 0;
        loop {
            let queued = Instant::now();
            let permit = self
                .queue
                .acquire(tenant)
                .await
                .map_err(|_| Failure::TooMany)?;
            let sent = Instant::now();
            let r = self
                .downstream
                .send(
                    method.clone(),
                    path_and_query,
                    headers.clone(),
                    body.clone(),
                )
                .await;
            drop(permit);
            {
                let mut s = spent.lock().unwrap_or_else(|e| e.into_inner());
                s.queue += sent - queued;
                s.downstream += sent.elapsed();
                s.requests += 1;
                s.retries += u64::from(attempt > 0);
            }
            let failure = match r {
                Ok(a) if a.status < 500 => return Ok(a),
                // A query that ran out of time would only run out of time again.
                Ok(a) if is_timeout(&a) => return Err(Failure::Answer(a)),
                Ok(a) => Failure::Answer(a),
                Err(e) => Failure::Unavailable(format!("no answer from the querier: {e}")),
            };
            if attempt >= self.config.max_retries {
                return Err(failure);
            }
            attempt += 1;
            self.metrics.retries.inc();
        }
    }

    /// One range `[start, end]` of `q` from downstream: as shards when it is sharded.
    async fn fetch(&self, ctx: &QueryCtx<'_>, start: i64, end: i64) -> Result<Matrix, Failure> {
        if let Some((plan, n)) = &ctx.shard {
            if let Some(m) = self.fetch_sharded(ctx, plan, *n, start, end).await? {
                return Ok(m);
            }
        }
        self.fetch_query(ctx, &ctx.q.query, start, end).await
    }

    /// `[start, end]` of `query` (the client's, or a shard's) from downstream.
    async fn fetch_query(
        &self,
        ctx: &QueryCtx<'_>,
        query: &str,
        start: i64,
        end: i64,
    ) -> Result<Matrix, Failure> {
        let body = Bytes::from(ctx.q.part_form_of(query, start, end));
        let a = self
            .send(
                &ctx.tenant,
                Method::POST,
                ctx.path,
                &ctx.headers,
                body,
                &ctx.spent,
            )
            .await?;
        if a.status != 200 {
            return Err(Failure::Answer(a));
        }
        decode(&a.body).map_err(|e| Failure::Unavailable(e.to_string()))
    }

    /// `[start, end]` as `n` shard queries in parallel, combined; `None` when a shard
    /// answered with native histograms, which are not combined here (the range is then
    /// asked unsharded).
    async fn fetch_sharded(
        &self,
        ctx: &QueryCtx<'_>,
        plan: &ShardPlan,
        n: u64,
        start: i64,
        end: i64,
    ) -> Result<Option<Matrix>, Failure> {
        let queries: Vec<Vec<String>> = (0..n).map(|i| plan.shard_queries(i, n)).collect();
        let sent: u64 = queries.iter().map(|q| q.len() as u64).sum();
        self.metrics.shard_queries.inc_by(sent);
        ctx.spent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shard_queries += sent;
        let answers = futures::future::try_join_all(queries.iter().map(|qs| {
            futures::future::try_join_all(qs.iter().map(|q| async move {
                // Mimir's max-parallelism bounds parts and shards in flight together, so
                // one sharded query never fills its tenant's queue by itself.
                let _slot = ctx.shard_slots.acquire().await;
                self.fetch_query(ctx, q, start, end).await
            }))
        }))
        .await?;
        let mut out = Matrix::default();
        let mut shards = Vec::with_capacity(answers.len());
        for shard in answers {
            let mut per_query = Vec::with_capacity(shard.len());
            for mut m in shard {
                if m.series.iter().any(|s| !s.histograms.is_empty()) {
                    return Ok(None);
                }
                if let Some(st) = m.stats.take() {
                    match &mut out.stats {
                        None => out.stats = Some(st),
                        Some(acc) => merge_stats(acc, &st),
                    }
                }
                for w in m.warnings {
                    if !out.warnings.contains(&w) {
                        out.warnings.push(w);
                    }
                }
                for i in m.infos {
                    if !out.infos.contains(&i) {
                        out.infos.push(i);
                    }
                }
                per_query.push(m.series);
            }
            shards.push(per_query);
        }
        out.series = plan.combine(shards);
        Ok(Some(out))
    }

    /// One split part: from the cache where it covers, from downstream for the rest.
    async fn part(&self, ctx: &QueryCtx<'_>, start: i64, end: i64) -> Result<PartOut, Failure> {
        let step = ctx.q.step;
        let cache = self.cache.as_ref().filter(|_| ctx.cacheable);
        let Some(cache) = cache else {
            let m = self.fetch(ctx, start, end).await?;
            return Ok(PartOut {
                series: m.series,
                warnings: m.warnings,
                infos: m.infos,
                stats: m.stats.into_iter().collect(),
                hit: false,
            });
        };
        let key = ctx.cache_key(start, self.config.split_interval_ms);
        // An extent's infos may come from any of its steps: it answers only a part it
        // lies wholly inside, so that every info answered is one the part would give
        // (the others are left out, and replaced by what is fetched now).
        let mut extents = cache.get(&key);
        extents.retain(|x| x.matrix.infos.is_empty() || (x.start >= start && x.end <= end));
        let missing = gaps(&extents, start, end, step);
        let hit = missing.is_empty();
        let mut fetched = Vec::with_capacity(missing.len());
        let mut out = PartOut {
            hit,
            ..PartOut::default()
        };
        for x in extents.iter().filter(|x| x.start <= end && x.end >= start) {
            out.infos.extend(x.matrix.infos.iter().cloned());
        }
        // Only answers without warnings (a partial answer must not outlive its cause),
        // and only up to the freshness bound, are kept, with their infos (whole ones
        // only: an info of a cut answer may come from the part cut off).
        let mut keep = Vec::with_capacity(missing.len());
        for (s, e) in missing {
            let mut m = self.fetch(ctx, s, e).await?;
            keep.push(m.warnings.is_empty().then(|| m.infos.clone()));
            out.stats.extend(m.stats.take());
            out.warnings.append(&mut m.warnings);
            out.infos.append(&mut m.infos);
            fetched.push((s, e, Arc::new(m)));
        }
        out.series = assemble(&extents, &fetched, start, end, step).finish();
        let mut changed = false;
        for ((s, e, m), keep) in fetched.iter().zip(keep) {
            let Some(infos) = keep else {
                continue;
            };
            // The piece's last step (its end need not be on the step grid).
            let last = s + (e - s) / step * step;
            let until = ctx.max_cache_time.min(last);
            if until < *s {
                continue;
            }
            let until = s + (until - s) / step * step;
            if until < last && !infos.is_empty() {
                continue;
            }
            let kept = Matrix {
                series: m.cut(*s, until),
                infos,
                ..Matrix::default()
            };
            extents = add_extent(extents, Extent::new(*s, until, kept), step);
            changed = true;
        }
        if changed {
            cache.put(key, extents);
        }
        Ok(out)
    }
}

/// One part's answer.
#[derive(Default)]
struct PartOut {
    series: Vec<Series>,
    warnings: Vec<String>,
    infos: Vec<String>,
    stats: Vec<Value>,
    hit: bool,
}

/// What every part of one query shares.
struct QueryCtx<'a> {
    tenant: String,
    q: &'a RangeQuery,
    path: &'a str,
    headers: HeaderMap,
    cacheable: bool,
    /// Newest time an answer may be cached for (now minus the freshness window).
    max_cache_time: i64,
    spent: Mutex<Spent>,
    /// The query's shard plan and shards per part, when it is sharded.
    shard: Option<(ShardPlan, u64)>,
    /// Shard queries of this query in flight at once (`--query-frontend.max-parallelism`).
    shard_slots: tokio::sync::Semaphore,
}

impl QueryCtx<'_> {
    /// Tenant, query, step, grid offset, other parameters, and the interval the part
    /// belongs to (Cortex's key plus what else changes an answer).
    fn cache_key(&self, start: i64, interval: i64) -> String {
        let q = self.q;
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.tenant,
            q.query,
            q.step,
            q.start.rem_euclid(q.step),
            interval,
            start.div_euclid(interval),
            q.key_params()
        )
    }
}

async fn range(
    State(fe): State<Arc<Frontend>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let began = Instant::now();
    let params = form_params(uri.query(), &headers, &body);
    let Some(mut q) = RangeQuery::parse(&params) else {
        // Not a query the frontend can split: the querier answers it, errors included.
        return proxy(State(fe), method, OriginalUri(uri), headers, body).await;
    };
    let tenant = tenant_of(&headers);
    // Mimir's limits middleware: the lookback first (a query wholly before it is
    // answered empty, not refused; an earlier start moves up, staying on the client's
    // step grid so every point answered is one it asked for), then the length, both
    // before alignment and splitting.
    if let Some(min) = fe.min_query_time(&tenant) {
        if q.start < min {
            q.start += (min - q.start).div_euclid(q.step) * q.step;
            if q.start < min {
                q.start += q.step;
            }
        }
        if q.end < q.start {
            fe.finish("query_range", began, 200);
            let body = encode(&[], None, &[], &[]);
            return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
    }
    if let Some(message) = fe.too_long(&tenant, q.end - q.start) {
        let r = error_response(400, "bad_data", &message);
        fe.finish("query_range", began, 400);
        return r;
    }
    if fe.config.align_with_step {
        q.align_with_step();
    }
    let sh = shape(&q.query);
    let interval = if !sh.splittable() {
        0
    } else {
        fe.config.split_interval_ms
    };
    let parts = split(q.start, q.end, q.step, interval);
    fe.metrics.parts.inc_by(parts.len() as u64);
    let shard = fe.shard_plan(&q.query, parts.len());
    let ctx = QueryCtx {
        tenant: tenant.clone(),
        q: &q,
        path: uri.path(),
        headers: part_headers(&headers),
        cacheable: interval > 0 && !sh.negative_offset,
        max_cache_time: now_ms() - fe.config.max_freshness_ms,
        spent: Mutex::new(Spent::default()),
        shard,
        shard_slots: tokio::sync::Semaphore::new(fe.config.max_parallelism.max(1)),
    };
    let split_done = began.elapsed();
    let (fe_ref, ctx_ref) = (&*fe, &ctx);
    let answers: Result<Vec<PartOut>, Failure> = futures::stream::iter(
        parts
            .iter()
            .copied()
            .map(move |(s, e)| fe_ref.part(ctx_ref, s, e)),
    )
    .buffered(fe.config.max_parallelism.max(1))
    .try_collect()
    .await;
    let parts_done = began.elapsed();
    let answers = match answers {
        Ok(a) => a,
        Err(f) => {
            let r = f.into_response(&fe, &tenant);
            fe.finish("query_range", began, r.status().as_u16());
            return r;
        }
    };
    let merge_began = Instant::now();
    let mut merger = Merger::default();
    let mut stats: Option<Value> = None;
    let (mut warnings, mut infos) = (Vec::new(), Vec::new());
    let (mut hits, mut misses) = (0u64, 0u64);
    for a in answers {
        if ctx.cacheable {
            if a.hit {
                hits += 1;
            } else {
                misses += 1;
            }
        }
        merger.add(a.series);
        for s in &a.stats {
            match &mut stats {
                None => stats = Some(s.clone()),
                Some(acc) => merge_stats(acc, s),
            }
        }
        for w in a.warnings {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        for i in a.infos {
            if !infos.contains(&i) {
                infos.push(i);
            }
        }
    }
    fe.metrics.hits.inc_by(hits);
    fe.metrics.misses.inc_by(misses);
    let series = merger.finish();
    let spent = *ctx.spent.lock().unwrap_or_else(|e| e.into_inner());
    let mut stats = stats.unwrap_or_else(
        || json!({"timings": {}, "samples": {"totalQueryableSamples": 0, "peakSamples": 0}}),
    );
    let merge_time = merge_began.elapsed();
    let frontend = json!({
        "parts": parts.len(),
        "cacheHits": hits,
        "cacheMisses": misses,
        "downstreamRequests": spent.requests,
        "shards": ctx.shard.as_ref().map_or(0, |s| s.1),
        "shardedQueries": spent.shard_queries,
        "retries": spent.retries,
        "queueWaitSeconds": spent.queue.as_secs_f64(),
        "downstreamSeconds": spent.downstream.as_secs_f64(),
        "splitSeconds": split_done.as_secs_f64(),
        "partsSeconds": (parts_done - split_done).as_secs_f64(),
        "mergeSeconds": merge_time.as_secs_f64(),
        "totalSeconds": began.elapsed().as_secs_f64(),
    });
    if let Value::Object(o) = &mut stats {
        o.insert("frontend".into(), frontend);
    }
    let body = encode(&series, q.stats.then_some(&stats), &warnings, &infos);
    let record = record_of(
        &q,
        &stats,
        &spent,
        parts.len(),
        hits,
        misses,
        began.elapsed(),
    );
    fe.log_query(&tenant, &record);
    fe.report.add(&tenant, record);
    fe.finish("query_range", began, 200);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The cost record of a finished range query, from its summed statistics.
fn record_of(
    q: &RangeQuery,
    stats: &Value,
    spent: &Spent,
    parts: usize,
    hits: u64,
    misses: u64,
    wall: Duration,
) -> QueryRecord {
    let s = &stats["strata"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    QueryRecord {
        query: q.query.clone(),
        start: q.start as f64 / 1000.0,
        end: q.end as f64 / 1000.0,
        step: q.step as f64 / 1000.0,
        finished_at: now_ms() as f64 / 1000.0,
        status: 200,
        wall_seconds: wall.as_secs_f64(),
        queue_wait_seconds: spent.queue.as_secs_f64(),
        downstream_seconds: spent.downstream.as_secs_f64(),
        parts: parts as u64,
        cache_hits: hits,
        cache_misses: misses,
        downstream_requests: spent.requests,
        retries: spent.retries,
        series_fetched: n(&s["seriesFetched"]),
        chunks_fetched: n(&s["chunksFetched"]),
        chunk_bytes_fetched: n(&s["chunkBytesFetched"]),
        samples_fetched: n(&s["samplesFetched"]),
        object_store_requests: n(&s["objectStoreRequests"]),
        object_store_bytes: n(&s["objectStoreBytes"]),
        total_queryable_samples: n(&stats["samples"]["totalQueryableSamples"]),
    }
}

impl Frontend {
    /// The shard plan of `query` and the shards each of its `parts` gets: Mimir's
    /// total shards, fewer when parts times shards would pass the bound of sharded
    /// queries; `None` when it is off, the query does not shard, or one shard is left.
    fn shard_plan(&self, query: &str, parts: usize) -> Option<(ShardPlan, u64)> {
        let total = self.config.query_sharding_total_shards;
        if total < 2 {
            return None;
        }
        let max = self.config.query_sharding_max_sharded_queries;
        let n = if max > 0 {
            total.min(max / parts.max(1))
        } else {
            total
        };
        if n < 2 {
            return None;
        }
        let plan = ShardPlan::of(query)?;
        self.metrics.sharded_rewrites.inc();
        Some((plan, n as u64))
    }

    fn finish(&self, op: &str, began: Instant, code: u16) {
        self.metrics.queries.with(&[op, &code.to_string()]).inc();
        self.metrics.duration.with(&[op]).observe_since(began);
    }

    /// Every query at debug level; those over `--query-frontend.log-queries-longer-than`
    /// as a warning, with their cost.
    fn log_query(&self, tenant: &str, r: &QueryRecord) {
        let over = self.config.log_queries_longer_than;
        let slow = !over.is_zero() && r.wall_seconds >= over.as_secs_f64();
        if slow {
            self.metrics.slow.inc();
        }
        macro_rules! log {
            ($level:ident, $msg:literal) => {
                tracing::$level!(
                    tenant,
                    query = %r.query,
                    start = r.start,
                    end = r.end,
                    step = r.step,
                    wall_seconds = r.wall_seconds,
                    queue_wait_seconds = r.queue_wait_seconds,
                    downstream_seconds = r.downstream_seconds,
                    parts = r.parts,
                    cache_hits = r.cache_hits,
                    cache_misses = r.cache_misses,
                    retries = r.retries,
                    series_fetched = r.series_fetched,
                    chunks_fetched = r.chunks_fetched,
                    chunk_bytes_fetched = r.chunk_bytes_fetched,
                    samples_fetched = r.samples_fetched,
                    object_store_requests = r.object_store_requests,
                    object_store_bytes = r.object_store_bytes,
                    $msg
                )
            };
        }
        if slow {
            log!(warn, "slow query");
        } else {
            log!(debug, "query stats");
        }
    }
}

/// Everything but range queries: through the queue to a querier, headers and body as
/// they came (`Accept-Encoding` included: a compressed answer comes back compressed).
async fn proxy(
    State(fe): State<Arc<Frontend>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let began = Instant::now();
    let tenant = tenant_of(&headers);
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let spent = Mutex::new(Spent::default());
    let r = match fe
        .send(&tenant, method, pq, &forwardable(&headers), body, &spent)
        .await
    {
        Ok(a) => passthrough(a),
        Err(f) => f.into_response(&fe, &tenant),
    };
    fe.finish("proxy", began, r.status().as_u16());
    r
}

/// `GET /api/v1/status/queries`: the calling tenant's most expensive recent queries
/// (`limit`, default 10), most samples fetched first.
async fn status_queries(
    State(fe): State<Arc<Frontend>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let tenant = tenant_of(&headers);
    let params = form_params(uri.query(), &headers, &[]);
    let limit = params
        .iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(10);
    let top = fe.report.top(&tenant, limit);
    let body = json!({"status": "success", "data": {"tenant": tenant, "queries": top}});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
