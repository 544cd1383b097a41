//! The querier: Prometheus's HTTP query API (`/api/v1/query`, `query_range`, `series`,
//! `labels`, `label/<name>/values`, …, also under `/prometheus`) answered over the
//! global view: every Store API endpoint (`--endpoint`: ingesters, sidecars) and the
//! bucket, asked in parallel, merged per series, HA replicas deduplicated
//! (`--query.replica-label`), evaluated by [`strata_promql::Engine`].
//!
//! * [`api`]: the HTTP handlers, parameter parsing and Prometheus's exact JSON.
//! * [`fanout`]: the [`Storage`](strata_promql::Storage) over endpoints and bucket.
//! * [`bucket`]: blocks read straight from the bucket by range reads.
//! * [`dedup`]: Thanos's penalty-based replica deduplication.
//!
//! ```no_run
//! use strata_kit::metrics::Registry;
//! use strata_querier::{Querier, QuerierConfig};
//!
//! let registry = Registry::new();
//! let cfg = QuerierConfig {
//!     endpoints: vec!["127.0.0.1:10901".into()],
//!     replica_labels: vec!["replica".into()],
//!     ..QuerierConfig::default()
//! };
//! let querier = Querier::new(cfg, &registry).unwrap();
//! let routes: axum::Router = querier.routes();
//! ```

use std::sync::Arc;
use std::time::Duration;

use strata_kit::metrics::Registry;
use strata_objstore::Bucket;
use strata_promql::EngineOptions;

pub mod api;
pub mod bucket;
pub mod dedup;
pub mod fanout;
pub mod metrics;
mod query_threads;
mod read;
pub mod ring;
pub mod series;
pub mod shard;
pub mod stats;
pub mod storeapi;
pub mod ui;

use fanout::{Endpoint, Sources};

/// The tenant of requests that name none.
pub use strata_kit::tenant::DEFAULT_TENANT;

/// Everything the querier is configured with (the `strata querier` flags).
#[derive(Debug, Clone)]
pub struct QuerierConfig {
    /// Store API endpoints, `HOST:PORT` (or a URI) [`--endpoint`, `--store`].
    pub endpoints: Vec<String>,
    /// The bucket to read blocks from [`--objstore.config-file`]; `None`: endpoints only.
    pub bucket: Option<Bucket>,
    /// Compression of Store API calls to endpoints and ring members
    /// [`--grpc-compression`].
    pub grpc_compression: fanout::GrpcCompression,
    /// Labels that tell HA replicas apart [`--query.replica-label`].
    pub replica_labels: Vec<String>,
    /// Wall-clock limit per query [`--query.timeout`].
    pub timeout: Duration,
    /// Samples one query may hold [`--query.max-samples`].
    pub max_samples: usize,
    /// Distinct series one request may fetch from all sources; 0: unlimited
    /// [`--querier.max-fetched-series-per-query`].
    pub max_fetched_series: u64,
    /// Chunk bytes one request may fetch from all sources; 0: unlimited
    /// [`--querier.max-fetched-chunk-bytes-per-query`].
    pub max_fetched_chunk_bytes: u64,
    /// How far back queries read; a start before `now - max_query_lookback` is moved
    /// up to it, a request wholly before it answers empty; zero: no limit
    /// [`--querier.max-query-lookback`]. A tenant's `max_query_lookback` overrides it.
    pub max_query_lookback: Duration,
    /// Queries slower than this are logged with their cost; zero: none
    /// [`--query.log-slow-queries-over`].
    pub log_slow_queries_over: Duration,
    /// Queries evaluated at once; more wait [`--query.max-concurrent`].
    pub max_concurrent: usize,
    /// Lookback of instant selectors [`--query.lookback-delta`].
    pub lookback_delta: Duration,
    /// Deepest expression accepted, counting brackets and operators; deeper queries
    /// get 400 before they are parsed [`--query.max-depth`].
    pub max_depth: usize,
    /// Delayed `__name__` removal, off as in Prometheus 3
    /// [`--enable-feature=promql-delayed-name-removal`].
    pub delayed_name_removal: bool,
    /// Default of the `partial_response` parameter [`--query.partial-response`].
    pub partial_response: bool,
    /// Without `max_source_resolution`, read downsampled data when the step allows
    /// (`auto`), else raw [`--query.auto-downsampling`].
    pub auto_downsampling: bool,
    /// Deadline for one store's answer; `None`: the query timeout
    /// [`--store.response-timeout`].
    pub store_timeout: Option<Duration>,
    /// Bytes of block indexes kept in memory.
    pub index_cache_bytes: u64,
    /// Bytes of chunk segments kept in memory; 0: none
    /// [`--store.chunks-cache.max-size-bytes`].
    pub chunks_cache_bytes: u64,
    /// How long a tenant's listing of bucket blocks is reused before listing again
    /// (zero: on every request) [`--sync-block-duration`].
    pub block_listing_ttl: Duration,
    /// Endpoints served by this same process (the ingester in `strata all`), by
    /// address: their series are read in process, not through gRPC.
    pub local_stores: Vec<(String, Arc<dyn fanout::LocalStore>)>,
    /// Cluster members (gRPC `host:port`) to ask for the ring; every healthy ingester
    /// on it is read [`--ingester.ring.peers`, `--cluster.peers`].
    pub ring_peers: Vec<String>,
    /// Samples a `SAMPLES` remote-read answer may hold over all of its queries; 0: no
    /// limit [`--storage.remote.read-sample-limit`].
    pub remote_read_sample_limit: usize,
    /// Remote-read requests served at once, more wait; 0: no limit
    /// [`--storage.remote.read-concurrent-limit`].
    pub remote_read_concurrent_limit: usize,
    /// Largest message of a streamed remote-read frame
    /// [`--storage.remote.read-max-bytes-in-frame`].
    pub remote_read_max_bytes_in_frame: usize,
    /// Rulers (base URLs) whose `/api/v1/rules` and `/api/v1/alerts` are merged into
    /// the querier's [`--ruler.url`].
    pub ruler_urls: Vec<String>,
    /// Per-tenant query limits over the flags' [`--runtime-config.file`]; `strata all`
    /// shares the ingester's.
    pub runtime_config: Arc<strata_kit::runtime_config::RuntimeConfig>,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        QuerierConfig {
            endpoints: Vec::new(),
            bucket: None,
            grpc_compression: fanout::GrpcCompression::None,
            replica_labels: Vec::new(),
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            max_fetched_series: 0,
            max_fetched_chunk_bytes: 0,
            max_query_lookback: Duration::ZERO,
            log_slow_queries_over: Duration::from_secs(5),
            max_concurrent: 20,
            lookback_delta: Duration::from_secs(300),
            max_depth: EngineOptions::default().max_depth,
            delayed_name_removal: false,
            partial_response: true,
            auto_downsampling: true,
            store_timeout: None,
            index_cache_bytes: 256 << 20,
            chunks_cache_bytes: 256 << 20,
            block_listing_ttl: Duration::from_secs(10),
            local_stores: Vec::new(),
            ring_peers: Vec::new(),
            // Prometheus's defaults.
            remote_read_sample_limit: 50_000_000,
            remote_read_concurrent_limit: 10,
            remote_read_max_bytes_in_frame: 1 << 20,
            ruler_urls: Vec::new(),
            runtime_config: strata_kit::runtime_config::RuntimeConfig::none(),
        }
    }
}

/// Why the querier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The querier: configuration, sources, engine limits and metrics. Serve it with
/// [`Querier::routes`].
#[derive(Debug)]
pub struct Querier {
    pub(crate) config: QuerierConfig,
    pub(crate) sources: Arc<Sources>,
    pub(crate) limiter: tokio::sync::Semaphore,
    /// `--storage.remote.read-concurrent-limit` (`None`: no limit); shared with the
    /// producer of a streamed answer, which holds its slot until the last frame.
    pub(crate) read_limiter: Option<Arc<tokio::sync::Semaphore>>,
    pub(crate) metrics: metrics::QuerierMetrics,
    /// The threads queries are evaluated on, with the stack `max_depth` needs.
    pub(crate) query_threads: query_threads::QueryThreads,
}

impl Querier {
    /// Check the configuration and register the querier's metrics in `registry`. No
    /// connection is made: endpoints are dialled on first use.
    pub fn new(config: QuerierConfig, registry: &Registry) -> Result<Arc<Querier>, Error> {
        if config.max_concurrent == 0 {
            return Err(Error::Config(
                "--query.max-concurrent must be at least 1".into(),
            ));
        }
        if config.remote_read_max_bytes_in_frame == 0 {
            return Err(Error::Config(
                "--storage.remote.read-max-bytes-in-frame must be at least 1".into(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(Error::Config("--query.timeout must be positive".into()));
        }
        for e in &config.endpoints {
            if e.is_empty() {
                return Err(Error::Config("--endpoint: empty address".into()));
            }
        }
        for l in &config.replica_labels {
            if !api::valid_label_name(l) {
                return Err(Error::Config(format!(
                    "--query.replica-label: invalid label name {l:?}"
                )));
            }
        }
        let metrics = metrics::QuerierMetrics::new(registry);
        let sources = Arc::new(Sources {
            endpoints: config
                .endpoints
                .iter()
                .map(|a| {
                    let mut e = Endpoint::new(a.clone()).with_compression(config.grpc_compression);
                    if let Some((_, l)) = config.local_stores.iter().find(|(addr, _)| addr == a) {
                        e = e.with_local(l.clone());
                    }
                    Arc::new(e)
                })
                .collect(),
            ring: (!config.ring_peers.is_empty()).then(|| {
                ring::RingEndpoints::new(config.ring_peers.clone(), config.grpc_compression)
            }),
            bucket: config.bucket.clone().map(|b| {
                bucket::BucketReader::new(b, config.index_cache_bytes, config.block_listing_ttl)
                    .with_chunks_cache(config.chunks_cache_bytes)
            }),
            metrics: metrics.clone(),
        });
        let stack_size = EngineOptions {
            max_depth: config.max_depth,
            ..EngineOptions::default()
        }
        .stack_size();
        Ok(Arc::new(Querier {
            limiter: tokio::sync::Semaphore::new(config.max_concurrent),
            query_threads: query_threads::QueryThreads::new(stack_size),
            read_limiter: (config.remote_read_concurrent_limit > 0).then(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    config.remote_read_concurrent_limit,
                ))
            }),
            config,
            sources,
            metrics,
        }))
    }

    pub fn config(&self) -> &QuerierConfig {
        &self.config
    }

    /// Run `job` on one of the kept query threads (the engine's stack, off the
    /// runtime's workers), as HTTP queries are: for in-process callers such as the
    /// ruler. A panic in `job` drops what it owns (e.g. its answer's sender).
    pub fn run_on_query_thread(&self, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        self.query_threads.run(job)
    }

    /// The ring discovery, when `ring_peers` were given.
    pub fn ring(&self) -> Option<&Arc<ring::RingEndpoints>> {
        self.sources.ring.as_ref()
    }

    /// The engine settings the flags give.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            lookback_delta_ms: self.config.lookback_delta.as_millis() as i64,
            max_samples: self.config.max_samples,
            timeout: self.config.timeout,
            max_depth: self.config.max_depth,
            delayed_name_removal: self.config.delayed_name_removal,
        }
    }

    /// What a request for `tenant` without query parameters gets: the flags' partial
    /// response and replica labels, raw data.
    pub fn default_fetch_options(&self, tenant: &str) -> fanout::FetchOptions {
        fanout::FetchOptions {
            tenant: tenant.to_string(),
            partial_response: self.config.partial_response,
            replica_labels: Some(self.config.replica_labels.clone()),
            max_resolution_ms: 0,
            timeout: self.config.store_timeout.unwrap_or(self.config.timeout),
            cost: stats::QueryCost::new(self.fetch_limits(tenant)),
            min_time: self.min_query_time(tenant),
        }
    }

    /// The oldest time `tenant` may read now: `now - max_query_lookback` (its
    /// runtime-configuration entry over the flag), `i64::MIN` without a limit. Mimir's
    /// querier clamps every read's start to it; so does the fan-out with this.
    pub fn min_query_time(&self, tenant: &str) -> i64 {
        let lookback = self
            .config
            .runtime_config
            .tenant(tenant)
            .max_query_lookback
            .unwrap_or(self.config.max_query_lookback.as_millis() as i64);
        if lookback <= 0 {
            return i64::MIN;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        now.saturating_sub(lookback)
    }

    /// `tenant`'s per-request fetch limits: its runtime-configuration entry
    /// (`max_fetched_series_per_query`, `max_fetched_chunk_bytes_per_query`) over the
    /// flags; no sample limit (PromQL queries add theirs).
    pub fn fetch_limits(&self, tenant: &str) -> stats::QueryLimits {
        let o = self.config.runtime_config.tenant(tenant);
        stats::QueryLimits {
            max_series: o
                .max_fetched_series_per_query
                .unwrap_or(self.config.max_fetched_series),
            max_chunk_bytes: o
                .max_fetched_chunk_bytes_per_query
                .unwrap_or(self.config.max_fetched_chunk_bytes),
            max_samples: 0,
        }
    }

    /// The engine's [`Storage`](strata_promql::Storage) over every source for one
    /// query (e.g. for rule evaluation). Call `select` off the runtime's worker threads
    /// (`spawn_blocking`): it blocks on `handle`.
    pub fn storage(
        &self,
        opts: fanout::FetchOptions,
        handle: tokio::runtime::Handle,
    ) -> fanout::FanoutStorage {
        fanout::FanoutStorage::new(self.sources.clone(), opts, handle)
    }

    /// The API routes, at `/api/v1/…` and `/prometheus/api/v1/…`. Merge into the kit
    /// router (which adds `/metrics`, `/-/healthy`, `/-/ready`) and instrument once.
    pub fn routes(self: &Arc<Self>) -> axum::Router {
        let api = api::router(self.clone());
        axum::Router::new()
            .merge(api.clone())
            .nest("/prometheus", api)
            .merge(ui::routes())
    }
}

pub use strata_kit::tenant::validate_tenant;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_rule() {
        assert!(validate_tenant("team-a").is_ok());
        assert!(validate_tenant("anonymous").is_ok());
        for bad in ["", "..", ".", "a/b", "a b", &"x".repeat(151)] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_checks() {
        let reg = Registry::new();
        let bad = QuerierConfig {
            max_concurrent: 0,
            ..Default::default()
        };
        assert!(Querier::new(bad, &reg).is_err());
        let bad = QuerierConfig {
            replica_labels: vec!["a-b".into()],
            ..Default::default()
        };
        assert!(Querier::new(bad, &reg).is_err());
    }
}
