//! The sidecar runs next to a Prometheus that keeps its own TSDB. It uploads that
//! Prometheus's finished blocks to the bucket (external labels added to `meta.json`,
//! `source: sidecar`, meta.json last, never twice) and serves its recent data over the
//! Store API through Prometheus's remote-read endpoint, so a querier has the global view
//! and long-term storage without remote_write.

pub mod grpc;
pub mod prom;
pub mod shipper;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use clap::Args;
use strata_kit::http::Readiness;
use strata_kit::metrics::{Counter, Gauge, Registry};
use strata_kit::shutdown::Shutdown;
use strata_objstore::Bucket;

use prom::PromClient;
use shipper::Shipper;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("prometheus: {0}")]
    Prometheus(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Tsdb(#[from] strata_tsdb::Error),
    #[error(transparent)]
    Objstore(#[from] strata_objstore::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Sidecar flags (Thanos's names).
#[derive(Debug, Clone, Args)]
pub struct SidecarArgs {
    /// URL of the Prometheus this sidecar serves.
    #[arg(long = "prometheus.url", default_value = "http://localhost:9090")]
    pub prometheus_url: String,
    /// Prometheus's data directory (its `--storage.tsdb.path`), where finished blocks appear.
    #[arg(long = "tsdb.path", default_value = "./data")]
    pub tsdb_path: PathBuf,
    /// Path to a YAML file with the object store configuration (Thanos's format). Without
    /// it, blocks are not uploaded (Store API only).
    #[arg(long = "objstore.config-file")]
    pub objstore_config_file: Option<PathBuf>,
    /// External label `name="value"` to use when Prometheus has none configured
    /// (repeatable); Prometheus's own `global.external_labels` win on conflict.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Tenant the blocks are uploaded for (`<tenant>/<ULID>/` in the bucket).
    #[arg(long = "tenant", default_value = "anonymous")]
    pub tenant: String,
    /// How often Prometheus's directory is checked for new blocks.
    #[arg(long = "shipper.interval", default_value = "30s", value_parser = strata_kit::parse_duration_ms)]
    pub ship_interval_ms: i64,
    /// Also upload compacted blocks (level > 1). Prometheus should not compact (min and
    /// max block duration equal), so by default only level-1 blocks are shipped.
    #[arg(long = "shipper.upload-compacted")]
    pub upload_compacted: bool,
}

/// `name="value"` or `name=value`.
pub use strata_kit::labels::parse_label;

pub struct Metrics {
    pub syncs: Counter,
    pub uploads: Counter,
    pub upload_failures: Counter,
    pub last_upload: Gauge,
    pub prometheus_up: Gauge,
}

impl Metrics {
    fn new(r: &Registry) -> Self {
        Metrics {
            syncs: r.counter(
                "strata_sidecar_shipper_syncs_total",
                "Shipping rounds run (successful or not).",
            ),
            uploads: r.counter(
                "strata_sidecar_uploads_total",
                "Blocks uploaded to the bucket.",
            ),
            upload_failures: r.counter(
                "strata_sidecar_upload_failures_total",
                "Failed shipping rounds (retried).",
            ),
            last_upload: r.gauge(
                "strata_sidecar_last_successful_upload_time_seconds",
                "Unix time of the last block uploaded.",
            ),
            prometheus_up: r.gauge(
                "strata_sidecar_prometheus_up",
                "1 when Prometheus answers /-/ready.",
            ),
        }
    }
}

pub struct Sidecar {
    pub args: SidecarArgs,
    pub prom: PromClient,
    pub tenant: String,
    pub metrics: Metrics,
    labels: RwLock<BTreeMap<String, String>>,
}

impl Sidecar {
    pub fn new(args: SidecarArgs, registry: &Registry) -> Result<Arc<Sidecar>> {
        if !args.tsdb_path.is_dir() {
            return Err(Error::Config(format!(
                "--tsdb.path {} is not a directory (it must be Prometheus's --storage.tsdb.path)",
                args.tsdb_path.display()
            )));
        }
        Ok(Arc::new(Sidecar {
            prom: PromClient::new(&args.prometheus_url)?,
            tenant: args.tenant.clone(),
            metrics: Metrics::new(registry),
            labels: RwLock::new(BTreeMap::new()),
            args,
        }))
    }

    pub fn external_labels(&self) -> BTreeMap<String, String> {
        self.labels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Read Prometheus's external labels and block durations. Fails when there are no
    /// external labels at all: a block without them cannot be told apart from its HA twin.
    pub async fn configure(&self) -> Result<()> {
        let mut labels: BTreeMap<String, String> = self.args.labels.iter().cloned().collect();
        labels.extend(self.prom.external_labels().await?);
        if labels.is_empty() {
            return Err(Error::Config(format!(
                "Prometheus at {} has no external labels and no --label was given: blocks without external labels cannot be told apart from those of another Prometheus (e.g. its HA twin); set global.external_labels in prometheus.yml (e.g. cluster and replica) or pass --label 'name=\"value\"'",
                self.prom.url()
            )));
        }
        match self.prom.block_durations().await {
            Ok((min, max)) if !min.is_empty() && min != max => tracing::error!(
                min_block_duration = %min,
                max_block_duration = %max,
                "Prometheus's --storage.tsdb.min-block-duration and --storage.tsdb.max-block-duration differ: Prometheus will compact blocks the sidecar has already uploaded (only level-1 blocks are shipped); set both to 2h as Thanos requires"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read Prometheus's flags"),
        }
        tracing::info!(labels = ?labels, "external labels");
        *self.labels.write().unwrap_or_else(|p| p.into_inner()) = labels;
        Ok(())
    }

    fn shipper(&self) -> Shipper {
        Shipper {
            tsdb_path: self.args.tsdb_path.clone(),
            tenant: self.tenant.clone(),
            external_labels: self.external_labels(),
            upload_compacted: self.args.upload_compacted,
        }
    }

    /// One shipping round.
    pub async fn ship_once(&self, bucket: &Bucket) -> Result<usize> {
        let r = self.ship_round(bucket).await;
        self.metrics.syncs.inc();
        r
    }

    async fn ship_round(&self, bucket: &Bucket) -> Result<usize> {
        match self.shipper().sync(bucket).await {
            Ok(done) => {
                if !done.is_empty() {
                    self.metrics.uploads.inc_by(done.len() as u64);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    self.metrics.last_upload.set(now);
                }
                Ok(done.len())
            }
            Err(e) => {
                self.metrics.upload_failures.inc();
                Err(e)
            }
        }
    }

    /// Ship until shutdown, backing off while the bucket is down.
    pub async fn run_shipper(self: Arc<Self>, bucket: Bucket, shutdown: Shutdown) {
        let base = Duration::from_millis(self.args.ship_interval_ms.max(100) as u64);
        let mut wait = Duration::ZERO; // blocks present at start go up at once
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = match self.ship_once(&bucket).await {
                Ok(_) => {
                    failures = 0;
                    base
                }
                Err(e) => {
                    failures = (failures + 1).min(6);
                    tracing::warn!(error = %e, "block upload failed; will retry");
                    Duration::from_secs(1 << failures)
                        .min(Duration::from_secs(60))
                        .min(base.max(Duration::from_secs(1)))
                }
            };
        }
    }

    /// Track Prometheus's readiness in `/-/ready` and the `prometheus_up` gauge.
    pub async fn watch_prometheus(self: Arc<Self>, readiness: Readiness, shutdown: Shutdown) {
        loop {
            if self.prom.ready().await {
                self.metrics.prometheus_up.set(1.0);
                readiness.set_ready();
            } else {
                self.metrics.prometheus_up.set(0.0);
                readiness.set_not_ready(format!("Prometheus at {} is not ready", self.prom.url()));
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
}
