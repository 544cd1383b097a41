//! `strata querier`: the Prometheus query API over Store API endpoints and the bucket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Args, ValueEnum};
use strata_kit::http::{instrument, router, Readiness, Server, ServerState};
use strata_kit::metrics::Registry;
use strata_kit::parse_duration_ms;
use strata_kit::runtime_config::RuntimeConfig;
use strata_kit::shutdown::Shutdown;
use strata_kit::HttpArgs;
use strata_objstore::Bucket;
use strata_querier::fanout::GrpcCompression;
use strata_querier::{Querier, QuerierConfig};

/// `strata querier`: Thanos's flag names and default port.
#[derive(Debug, Args)]
pub struct QuerierCmd {
    #[command(flatten)]
    http: HttpArgs,
    /// Store API endpoint to query, HOST:PORT: an ingester, a sidecar (repeatable).
    #[arg(long = "endpoint", visible_alias = "store", value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// Object store configuration file (Thanos objstore YAML); without it only the
    /// endpoints are queried.
    #[arg(long = "objstore.config-file", value_name = "FILE")]
    pub objstore_config_file: Option<PathBuf>,
    /// A ruler whose rules and alerts `/api/v1/rules` and `/api/v1/alerts` merge into
    /// their answers, its base URL (repeatable).
    #[arg(long = "ruler.url", value_name = "URL", value_delimiter = ',')]
    pub ruler_urls: Vec<String>,
    /// Also serve the Store API here (as Thanos's querier does), so a global querier
    /// can list this one with `--endpoint`. Off when not given.
    #[arg(long = "grpc-address", value_name = "ADDRESS")]
    pub grpc_address: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub grpc_tls: strata_kit::grpc_tls::GrpcServerTlsArgs,
    /// Cluster members to ask for the ingester ring (comma-separated `host:port` or
    /// `id=host:port`, as `--cluster.peers`): every healthy ingester on it is queried.
    #[arg(
        long = "ingester.ring.peers",
        visible_alias = "cluster.peers",
        value_delimiter = ',',
        value_name = "PEERS"
    )]
    pub ring_peers: Vec<String>,
    #[command(flatten)]
    querier: QuerierArgs,
    /// Per-tenant query limits (`max_fetched_series_per_query`, …).
    #[command(flatten)]
    runtime_config: strata_kit::runtime_config::RuntimeConfigArgs,
}

/// `--grpc-compression` values (Thanos's flag on its querier's Store API client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GrpcCompressionArg {
    None,
    Zstd,
    Gzip,
}

/// The query flags, shared by `strata querier` and `strata all`.
#[derive(Debug, Clone, Args)]
pub struct QuerierArgs {
    /// Label that tells HA replicas apart; series equal but for it are deduplicated
    /// (repeatable).
    #[arg(long = "query.replica-label", value_name = "NAME")]
    pub replica_labels: Vec<String>,
    /// Compression of the Store API calls to endpoints and ring members: requests are
    /// sent compressed and compressed answers asked for. Every Strata Store API server
    /// accepts and answers zstd and gzip.
    #[arg(long = "grpc-compression", value_enum, default_value_t = GrpcCompressionArg::None)]
    pub grpc_compression: GrpcCompressionArg,
    #[command(flatten)]
    pub grpc_client_tls: strata_kit::grpc_tls::GrpcClientTlsArgs,
    /// Maximum time to process a query.
    #[arg(long = "query.timeout", value_name = "DURATION", default_value = "2m", value_parser = parse_duration_ms)]
    pub timeout_ms: i64,
    /// Maximum number of samples a single query can load into memory.
    #[arg(
        long = "query.max-samples",
        value_name = "N",
        default_value_t = 50_000_000
    )]
    pub max_samples: usize,
    /// Maximum number of distinct series one query may fetch from all its sources
    /// (Mimir's flag); 0 = unlimited.
    #[arg(
        long = "querier.max-fetched-series-per-query",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_fetched_series: u64,
    /// Maximum bytes of chunks one query may fetch from all its sources (Mimir's
    /// flag); 0 = unlimited.
    #[arg(
        long = "querier.max-fetched-chunk-bytes-per-query",
        value_name = "BYTES",
        default_value_t = 0
    )]
    pub max_fetched_chunk_bytes: u64,
    #[command(flatten)]
    pub lookback: MaxQueryLookbackArg,
    /// Log queries that take at least this long, with what they read; 0 = none.
    #[arg(long = "query.log-slow-queries-over", value_name = "DURATION", default_value = "5s", value_parser = parse_duration_ms)]
    pub log_slow_queries_over_ms: i64,
    /// Maximum number of queries evaluated at once; more wait.
    #[arg(long = "query.max-concurrent", value_name = "N", default_value_t = 20)]
    pub max_concurrent: usize,
    /// Deepest query expression accepted (brackets and operators each count a
    /// level); deeper queries get 400. Each level reserves 32 KiB of the query
    /// thread's stack.
    #[arg(long = "query.max-depth", value_name = "N", default_value_t = 1000)]
    pub max_depth: usize,
    /// How far back an instant selector looks for a sample.
    #[arg(long = "query.lookback-delta", value_name = "DURATION", default_value = "5m", value_parser = parse_duration_ms)]
    pub lookback_delta_ms: i64,
    /// Answer with the data available (and a warning) when a store fails; the
    /// `partial_response` parameter overrides it per request.
    #[arg(
        long = "query.partial-response",
        value_name = "BOOL",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub partial_response: bool,
    /// Read downsampled data when a request does not say `max_source_resolution`
    /// (the coarsest resolution at most a fifth of the step); false: raw unless asked.
    #[arg(
        long = "query.auto-downsampling",
        value_name = "BOOL",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub auto_downsampling: bool,
    /// Maximum time to wait for one store's answer; 0 = the query timeout.
    #[arg(long = "store.response-timeout", value_name = "DURATION", default_value = "0ms", value_parser = parse_duration_ms)]
    pub store_response_timeout_ms: i64,
    /// Bytes of chunk data read from the bucket kept in memory (in 16000-byte
    /// subranges of chunk segments, least useful evicted), so queries and the query
    /// frontend's day parts reading the same blocks read them once; 0 = no cache.
    #[arg(
        long = "store.chunks-cache.max-size-bytes",
        value_name = "BYTES",
        default_value_t = 268_435_456
    )]
    pub chunks_cache_max_bytes: u64,
    /// How long a listing of the bucket's blocks is used before the next query lists
    /// the bucket again (new, compacted and deleted blocks show after at most this);
    /// 0 = list on every query that reads the bucket.
    #[arg(long = "sync-block-duration", value_name = "DURATION", default_value = "10s", value_parser = parse_duration_ms)]
    pub sync_block_duration_ms: i64,
    /// Maximum number of samples a remote-read answer of the SAMPLES type may hold, over
    /// all of its queries; 0 = no limit. Streamed answers are not limited: they hold
    /// one query at a time.
    #[arg(long = "storage.remote.read-sample-limit", value_name = "N", default_value = "5e7", value_parser = parse_count)]
    pub remote_read_sample_limit: usize,
    /// Maximum number of remote-read requests served at once; more wait. 0 = no limit.
    #[arg(
        long = "storage.remote.read-concurrent-limit",
        value_name = "N",
        default_value_t = 10
    )]
    pub remote_read_concurrent_limit: usize,
    /// Maximum number of bytes in one frame of a streamed remote-read answer (before
    /// its length and checksum); a longer series is split over frames.
    #[arg(
        long = "storage.remote.read-max-bytes-in-frame",
        value_name = "BYTES",
        default_value_t = 1_048_576,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub remote_read_max_bytes_in_frame: u64,
    /// Regex of the origins the query API answers cross-origin (CORS) requests from,
    /// anchored (Prometheus's flag and default).
    #[arg(long = "web.cors.origin", value_name = "REGEX", default_value = ".*", value_parser = parse_cors_origin)]
    pub cors_origin: strata_kit::http::CorsOrigin,
    /// Comma-separated feature names to enable (repeatable; Prometheus's flag). Valid
    /// options: promql-delayed-name-removal (keep __name__ until the end of the query
    /// on series a function or operator drops it from, instead of dropping it there:
    /// Prometheus 3's feature flag, off by default). Unknown names are warned of and
    /// ignored.
    #[arg(long = "enable-feature", value_name = "FEATURE", value_delimiter = ',')]
    pub enable_feature: Vec<String>,
}

/// The `--enable-feature` names Strata knows.
const FEATURES: &[&str] = &["promql-delayed-name-removal"];

/// Whether `--enable-feature` names `feature`; an unknown name is warned of and
/// ignored, as Prometheus does.
pub(crate) fn feature_enabled(enabled: &[String], feature: &str) -> bool {
    let mut on = false;
    for f in enabled.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
        if f == feature {
            on = true;
        } else if !FEATURES.contains(&f) {
            tracing::warn!(option = f, valid = ?FEATURES, "Unknown option for --enable-feature");
        }
    }
    on
}

/// `--querier.max-query-lookback` (Mimir's flag), shared by the querier, `strata all`
/// and `strata query-frontend`.
#[derive(Debug, Clone, Args)]
pub struct MaxQueryLookbackArg {
    /// How far back queries may read (Mimir's limit): the start of an instant, range,
    /// series, labels, exemplars or remote-read request before now minus this is
    /// moved up to it, and a request wholly before it answers empty; the query
    /// frontend moves range queries' starts too. 0 = no limit. Per tenant:
    /// `max_query_lookback` in --runtime-config.file.
    #[arg(long = "querier.max-query-lookback", value_name = "DURATION", default_value = "0", value_parser = parse_duration_ms)]
    pub max_query_lookback_ms: i64,
}

fn parse_cors_origin(s: &str) -> Result<strata_kit::http::CorsOrigin, String> {
    strata_kit::http::CorsOrigin::new(s).map_err(|e| format!("invalid regex: {e}"))
}

/// A count as Prometheus's flags take it: an integer, or a whole number in float
/// notation (`5e7`, the default Prometheus documents).
fn parse_count(s: &str) -> Result<usize, String> {
    if let Ok(n) = s.parse::<usize>() {
        return Ok(n);
    }
    match s.parse::<f64>() {
        Ok(f) if f >= 0.0 && f.fract() == 0.0 && f < usize::MAX as f64 => Ok(f as usize),
        _ => Err(format!("{s:?} is not a non-negative whole number")),
    }
}

impl QuerierArgs {
    /// The querier's configuration over these endpoints and bucket.
    pub fn config(
        &self,
        endpoints: Vec<String>,
        bucket: Option<Bucket>,
    ) -> anyhow::Result<QuerierConfig> {
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        Ok(QuerierConfig {
            endpoints,
            bucket,
            grpc_compression: match self.grpc_compression {
                GrpcCompressionArg::None => GrpcCompression::None,
                GrpcCompressionArg::Zstd => GrpcCompression::Zstd,
                GrpcCompressionArg::Gzip => GrpcCompression::Gzip,
            },
            replica_labels: self.replica_labels.clone(),
            timeout: ms(self.timeout_ms),
            max_samples: self.max_samples,
            max_fetched_series: self.max_fetched_series,
            max_fetched_chunk_bytes: self.max_fetched_chunk_bytes,
            max_query_lookback: ms(self.lookback.max_query_lookback_ms),
            log_slow_queries_over: ms(self.log_slow_queries_over_ms),
            max_concurrent: self.max_concurrent,
            lookback_delta: ms(self.lookback_delta_ms),
            max_depth: self.max_depth,
            delayed_name_removal: feature_enabled(
                &self.enable_feature,
                "promql-delayed-name-removal",
            ),
            partial_response: self.partial_response,
            auto_downsampling: self.auto_downsampling,
            store_timeout: (self.store_response_timeout_ms > 0)
                .then(|| ms(self.store_response_timeout_ms)),
            remote_read_sample_limit: self.remote_read_sample_limit,
            remote_read_concurrent_limit: self.remote_read_concurrent_limit,
            remote_read_max_bytes_in_frame: self.remote_read_max_bytes_in_frame as usize,
            chunks_cache_bytes: self.chunks_cache_max_bytes,
            block_listing_ttl: ms(self.sync_block_duration_ms),
            ..QuerierConfig::default()
        })
    }
}

pub fn run_querier(cmd: QuerierCmd) -> anyhow::Result<ExitCode> {
    let bucket = match &cmd.objstore_config_file {
        Some(f) => Some(Bucket::from_config_file(f).context("--objstore.config-file")?),
        None => None,
    };
    let mut config = cmd.querier.config(cmd.endpoints.clone(), bucket)?;
    config.ruler_urls = cmd.ruler_urls.clone();
    config.ring_peers = cmd
        .ring_peers
        .iter()
        .map(|p| {
            p.split_once('=')
                .map_or(p.as_str(), |(_, a)| a)
                .trim()
                .to_string()
        })
        .filter(|p| !p.is_empty())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let registry = Registry::with_process_metrics();
        let shutdown = Shutdown::with_signals();
        let http = Server::bind(cmd.http.http_address)
            .await?
            .with_grace_period(cmd.http.grace_period());
        tracing::info!(
            endpoints = ?config.endpoints,
            bucket = %config.bucket.as_ref().map_or("none".to_string(), |b| b.to_string()),
            replica_labels = ?config.replica_labels,
            "starting querier"
        );
        let runtime = RuntimeConfig::open(&cmd.runtime_config, &registry)?;
        config.runtime_config = runtime.clone();
        let querier = Querier::new(config, &registry).context("querier")?;
        let grpc = match cmd.grpc_address {
            None => None,
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on gRPC address {addr} (--grpc-address)")
                })?;
                tracing::info!(%addr, "serving the Store API");
                let sd = shutdown.clone();
                Some(tokio::spawn(
                    strata_kit::grpc_tls::server_builder()?
                        .add_service(crate::compressed_store_server(
                            strata_querier::storeapi::QuerierStore::new(querier.clone())
                                .into_server(),
                        ))
                        .serve_with_incoming_shutdown(crate::nodelay(listener), sd.wait_owned()),
                ))
            }
        };
        let readiness = Readiness::new();
        let state = ServerState::new(&registry, readiness.clone())
            .with_cors_origin(cmd.querier.cors_origin.clone());
        let app = instrument(
            router(state.clone())
                .merge(querier.routes())
                .merge(runtime.routes()),
            &state,
        );
        // Ready once the ring (when there is one) was read: a query before that would
        // miss every ingester.
        if let Some(ring) = querier.ring() {
            let ring = ring.clone();
            let readiness = readiness.clone();
            readiness.set_not_ready("reading the ingester ring");
            tokio::spawn(async move {
                loop {
                    match ring.refresh().await {
                        Ok(n) => {
                            tracing::info!(ingesters = n, "read the ingester ring");
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "ring: no peer answered yet"),
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                ring.spawn_refresh(Duration::from_secs(5));
                readiness.set_ready();
            });
        } else {
            readiness.set_ready();
        }
        http.serve(app, shutdown.clone()).await?;
        shutdown.trigger();
        if let Some(g) = grpc {
            g.await??;
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn counts_take_prometheus_float_notation() {
        assert_eq!(parse_count("5e7"), Ok(50_000_000));
        assert_eq!(parse_count("0"), Ok(0));
        assert_eq!(parse_count("1000"), Ok(1000));
        for bad in ["-1", "1.5", "x", "NaN", "inf", ""] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }
}
