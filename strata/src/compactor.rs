//! `strata compactor`: compaction, offline dedup, downsampling and retention over the
//! bucket, with Thanos's flag names and default port (10902).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use strata_compactor::{Compactor, CompactorConfig};
use strata_kit::http::{instrument, router, Readiness, Server, ServerState};
use strata_kit::metrics::Registry;
use strata_kit::parse_duration_ms;
use strata_kit::runtime_config::RuntimeConfig;
use strata_kit::shutdown::Shutdown;
use strata_kit::HttpArgs;
use strata_objstore::Bucket;

/// `strata compactor`.
#[derive(Debug, Args)]
pub struct CompactorCmd {
    #[command(flatten)]
    http: HttpArgs,
    /// Object store configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file", value_name = "FILE")]
    pub objstore_config_file: PathBuf,
    /// Scratch directory for blocks being compacted or downsampled.
    #[arg(long = "data-dir", value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Keep running, one pass every --wait-interval; without it, run one pass and exit.
    #[arg(short = 'w', long = "wait")]
    pub wait: bool,
    /// Pause between passes with --wait.
    #[arg(long = "wait-interval", value_name = "DURATION", default_value = "5m", value_parser = parse_duration_ms)]
    pub wait_interval_ms: i64,
    #[command(flatten)]
    pub compactor: CompactorArgs,
    /// Per-tenant retention (`compactor_blocks_retention_period`).
    #[command(flatten)]
    pub runtime_config: strata_kit::runtime_config::RuntimeConfigArgs,
}

/// The compaction flags, for `strata compactor` (and `strata all`).
#[derive(Debug, Clone, Args)]
pub struct CompactorArgs {
    /// Level ranges blocks are compacted into, smallest first, comma-separated.
    #[arg(long = "compaction.block-ranges", value_name = "DURATIONS", value_delimiter = ',', default_value = "2h,8h,2d,14d", value_parser = parse_duration_ms)]
    pub block_ranges: Vec<i64>,
    /// Label that tells HA replicas apart; their blocks are merged into one
    /// deduplicated stream with the querier's penalty algorithm (repeatable).
    #[arg(
        id = "dedup_replica_labels",
        long = "deduplication.replica-label",
        value_name = "NAME"
    )]
    pub replica_labels: Vec<String>,
    /// Do not downsample (raw → 5m → 1h).
    #[arg(long = "downsampling.disable")]
    pub downsampling_disable: bool,
    /// How long to keep raw data; 0d = forever.
    #[arg(long = "retention.resolution-raw", value_name = "DURATION", default_value = "0d", value_parser = parse_duration_ms)]
    pub retention_raw_ms: i64,
    /// How long to keep 5m downsampled data; 0d = forever.
    #[arg(long = "retention.resolution-5m", value_name = "DURATION", default_value = "0d", value_parser = parse_duration_ms)]
    pub retention_5m_ms: i64,
    /// How long to keep 1h downsampled data; 0d = forever.
    #[arg(long = "retention.resolution-1h", value_name = "DURATION", default_value = "0d", value_parser = parse_duration_ms)]
    pub retention_1h_ms: i64,
    /// How long a block marked for deletion stays in the bucket before it is deleted
    /// (queriers and store gateways may still read it).
    #[arg(long = "delete-delay", value_name = "DURATION", default_value = "48h", value_parser = parse_duration_ms)]
    pub delete_delay_ms: i64,
}

impl CompactorArgs {
    /// The compactor's configuration with scratch space in `data_dir`.
    pub fn config(&self, data_dir: PathBuf, interval: Duration) -> anyhow::Result<CompactorConfig> {
        let c = CompactorConfig {
            data_dir,
            block_ranges: self.block_ranges.clone(),
            replica_labels: self.replica_labels.clone(),
            downsampling: !self.downsampling_disable,
            retention_raw: self.retention_raw_ms,
            retention_5m: self.retention_5m_ms,
            retention_1h: self.retention_1h_ms,
            delete_delay: Duration::from_millis(self.delete_delay_ms.max(0) as u64),
            interval,
            // Long enough that a live holder always renews in time; short enough that a
            // dead one is replaced within minutes.
            lock_lease: (interval * 3).max(Duration::from_secs(300)),
        };
        c.validate().map_err(anyhow::Error::msg)?;
        Ok(c)
    }
}

pub fn run_compactor(cmd: CompactorCmd) -> anyhow::Result<ExitCode> {
    let bucket =
        Bucket::from_config_file(&cmd.objstore_config_file).context("--objstore.config-file")?;
    let interval = Duration::from_millis(cmd.wait_interval_ms.max(0) as u64);
    let config = cmd.compactor.config(cmd.data_dir.clone(), interval)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let registry = Registry::with_process_metrics();
        let shutdown = Shutdown::with_signals();
        tracing::info!(bucket = %bucket, wait = cmd.wait, "starting compactor");
        let runtime = RuntimeConfig::open(&cmd.runtime_config, &registry)?;
        let compactor =
            Compactor::new(bucket, config, &registry).with_runtime_config(runtime.clone());
        if !cmd.wait {
            let r = compactor.run_once().await;
            compactor.release_lock().await;
            let r = r.context("compaction pass")?;
            if let Some(holder) = r.lock_held_by {
                anyhow::bail!("another compactor holds this bucket ({holder}); nothing done");
            }
            return Ok(ExitCode::SUCCESS);
        }
        let http = Server::bind(cmd.http.http_address)
            .await?
            .with_grace_period(cmd.http.grace_period());
        let readiness = Readiness::new();
        let state = ServerState::new(&registry, readiness.clone());
        let app = instrument(router(state.clone()).merge(runtime.routes()), &state);
        readiness.set_ready();
        let server = tokio::spawn(http.serve(app, shutdown.clone()));
        compactor.run_forever(shutdown.clone()).await;
        shutdown.trigger();
        server.await??;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
