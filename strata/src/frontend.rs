//! `strata query-frontend`: the query frontend in front of one or more queriers; its
//! flags are shared with `strata all` (`--query-frontend.enabled`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Args};
use strata_frontend::downstream::Downstream;
use strata_frontend::{Frontend, FrontendConfig};
use strata_kit::http::{instrument, router, Readiness, Server, ServerState};
use strata_kit::metrics::Registry;
use strata_kit::parse_duration_ms;
use strata_kit::runtime_config::{RuntimeConfig, RuntimeConfigArgs};
use strata_kit::shutdown::Shutdown;
use strata_kit::HttpArgs;

/// `strata query-frontend`.
#[derive(Debug, Args)]
pub struct QueryFrontendCmd {
    #[command(flatten)]
    http: HttpArgs,
    /// URL of a downstream querier (`http://host:port`): repeatable or comma-separated;
    /// requests go to them in turn.
    #[arg(
        long = "query-frontend.downstream-url",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    downstream_urls: Vec<String>,
    #[command(flatten)]
    frontend: FrontendArgs,
    #[command(flatten)]
    lookback: crate::querier::MaxQueryLookbackArg,
    #[command(flatten)]
    runtime_config: RuntimeConfigArgs,
}

/// The frontend's flags, shared by `strata query-frontend` and `strata all`.
#[derive(Debug, Clone, Args)]
pub struct FrontendArgs {
    /// Split range queries by this interval (boundaries on its multiples) and run the
    /// parts in parallel; 0 disables splitting and the results cache.
    #[arg(long = "query-range.split-interval", value_name = "DURATION", default_value = "24h", value_parser = parse_duration_ms)]
    pub split_interval_ms: i64,
    /// Move the start and end of range queries down onto a multiple of their step
    /// (their answers then cache better; the times asked are changed).
    #[arg(
        long = "query-range.align-range-with-step",
        value_name = "BOOL",
        default_value_t = false,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub align_with_step: bool,
    /// Maximum number of split parts of one query run at once.
    #[arg(
        long = "query-frontend.max-parallelism",
        value_name = "N",
        default_value_t = 14
    )]
    pub max_parallelism: usize,
    /// Times a downstream request is sent again after a 5xx answer or no answer.
    #[arg(
        long = "query-range.max-retries",
        value_name = "N",
        default_value_t = 5
    )]
    pub max_retries: usize,
    /// Answers for times more recent than this are never cached (data may still
    /// arrive for them).
    #[arg(long = "query-range.max-freshness", value_name = "DURATION", default_value = "10m", value_parser = parse_duration_ms)]
    pub max_freshness_ms: i64,
    /// Bytes the in-memory results cache may hold (least recently used parts are
    /// evicted); 0 disables the cache.
    #[arg(
        long = "query-range.results-cache.max-size-bytes",
        value_name = "BYTES",
        default_value_t = 268_435_456
    )]
    pub results_cache_max_bytes: u64,
    /// Maximum number of requests of one tenant waiting in the queue; more are
    /// refused with 429.
    #[arg(
        long = "query-frontend.max-outstanding-requests-per-tenant",
        value_name = "N",
        default_value_t = 100
    )]
    pub max_outstanding_per_tenant: usize,
    /// Maximum number of requests in flight to the downstream queriers; the queue
    /// hands these slots out round-robin across tenants.
    #[arg(
        long = "query-frontend.max-concurrent",
        value_name = "N",
        default_value_t = 20
    )]
    pub downstream_max_concurrent: usize,
    /// Log queries that take at least this long, with their cost; 0 = none.
    #[arg(long = "query-frontend.log-queries-longer-than", value_name = "DURATION", default_value = "5s", value_parser = parse_duration_ms)]
    pub log_queries_longer_than_ms: i64,
    /// Shards of each split part of a shardable query (`sum`, `count`, `min`, `max`,
    /// `avg`, `group`, `topk`, `bottomk` over per-series work): each shard a query
    /// with `__query_shard__="i_of_n"` on its selectors, run in parallel and combined
    /// here; 0 or 1 = no sharding.
    #[arg(
        long = "query-frontend.query-sharding-total-shards",
        value_name = "N",
        default_value_t = 0
    )]
    pub query_sharding_total_shards: usize,
    /// Maximum number of shard queries of one query (split parts times shards); a
    /// query split into more parts gets fewer shards per part. 0 = no bound.
    #[arg(
        long = "query-frontend.query-sharding-max-sharded-queries",
        value_name = "N",
        default_value_t = 128
    )]
    pub query_sharding_max_sharded_queries: usize,
    /// Refuse (400) range queries whose end minus start is longer than this; 0 = no
    /// limit. Per tenant: `max_total_query_length` in --runtime-config.file.
    #[arg(long = "query-frontend.max-total-query-length", value_name = "DURATION", default_value = "0", value_parser = parse_duration_ms)]
    pub max_total_query_length_ms: i64,
}

impl FrontendArgs {
    pub fn config(&self) -> FrontendConfig {
        FrontendConfig {
            split_interval_ms: self.split_interval_ms,
            align_with_step: self.align_with_step,
            max_parallelism: self.max_parallelism.max(1),
            max_retries: self.max_retries,
            max_freshness_ms: self.max_freshness_ms,
            results_cache_max_bytes: self.results_cache_max_bytes,
            max_outstanding_per_tenant: self.max_outstanding_per_tenant,
            max_concurrent: self.downstream_max_concurrent.max(1),
            log_queries_longer_than: Duration::from_millis(
                self.log_queries_longer_than_ms.max(0) as u64
            ),
            query_sharding_total_shards: self.query_sharding_total_shards,
            query_sharding_max_sharded_queries: self.query_sharding_max_sharded_queries,
            max_total_query_length_ms: self.max_total_query_length_ms.max(0),
            ..FrontendConfig::default()
        }
    }
}

pub fn run_query_frontend(cmd: QueryFrontendCmd) -> anyhow::Result<ExitCode> {
    let mut config = cmd.frontend.config();
    config.max_query_lookback_ms = cmd.lookback.max_query_lookback_ms.max(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let registry = Registry::with_process_metrics();
        let shutdown = Shutdown::with_signals();
        let http = Server::bind(cmd.http.http_address)
            .await?
            .with_grace_period(cmd.http.grace_period());
        tracing::info!(downstream = ?cmd.downstream_urls, split_interval_ms = config.split_interval_ms, "starting query frontend");
        let runtime = RuntimeConfig::open(&cmd.runtime_config, &registry)?;
        config.runtime_config = runtime.clone();
        let downstream = Downstream::http(cmd.downstream_urls.clone(), config.downstream_timeout)
            .context("query frontend")?;
        let frontend = Frontend::new(config, downstream, &registry).context("query frontend")?;
        let readiness = Readiness::new();
        let state = ServerState::new(&registry, readiness.clone());
        let app = instrument(router(state.clone()).merge(runtime.routes()).merge(frontend.routes()), &state);
        readiness.set_ready();
        http.serve(app, shutdown.clone()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
