//! The ingester: receives Prometheus remote write for many tenants, makes every
//! acknowledged sample durable in a per-tenant WAL, keeps recent data in an in-memory
//! head that queries read through the Store API, cuts the head into Prometheus-format
//! blocks every `--tsdb.block-duration`, and ships them to the bucket under
//! `<tenant>/<ULID>/` (meta.json last).
//!
//! On disk, under `--tsdb.path`: `tenants/<tenant>/wal/` (segments and checkpoints),
//! `tenants/<tenant>/blocks/<ULID>/` (local blocks, kept `--tsdb.retention` after upload)
//! and `tenants/<tenant>/shipper.json` (what is uploaded).

pub mod cardinality;
pub mod distributor;
pub mod exemplars;
pub mod grpc;
pub mod ha;
pub mod histograms;
pub mod metadata;
mod metrics;
pub mod otlp;
pub mod overrides;
pub mod push;
pub mod ratelimit;
mod ring_page;
pub mod rw_extras;
pub mod status;
pub mod tenant;
pub mod validate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::{Args, ValueEnum};
use strata_kit::metrics::Registry;
use strata_kit::shutdown::Shutdown;
use strata_objstore::Bucket;
use strata_tsdb::wal::{FsyncPolicy, WalCompression, WalOptions};

pub use metrics::IngesterMetrics;
use tenant::{Tenant, TenantDb};
pub use validate::Limits;

/// The tenant of requests without a tenant header.
pub use strata_kit::tenant::DEFAULT_TENANT;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tsdb(#[from] strata_tsdb::Error),
    #[error(transparent)]
    Objstore(#[from] strata_objstore::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WalFsync {
    /// Before a push is acknowledged (group-committed per request): acknowledged samples
    /// survive power loss.
    Always,
    /// Never on the write path: acknowledged samples survive a process crash (the OS has
    /// them), not necessarily power loss.
    Never,
}

/// How WAL records are compressed (Prometheus 2.51's `--storage.tsdb.wal-compression-type`).
/// Replay reads every setting, so it can be changed across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WalCompressionType {
    /// zstd (level 1): the fewest bytes per sample.
    Zstd,
    /// snappy: Prometheus's default.
    Snappy,
    /// Uncompressed.
    None,
}

/// Ingester flags (Thanos/Mimir names).
#[derive(Debug, Clone, Args)]
pub struct IngesterArgs {
    /// Data directory: per-tenant WAL, head and local blocks (and the default bucket).
    #[arg(
        long = "tsdb.path",
        visible_alias = "data-dir",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// Length of a block cut from the head.
    #[arg(long = "tsdb.block-duration", default_value = "2h", value_parser = strata_kit::parse_duration_ms)]
    pub block_duration_ms: i64,
    /// How long local blocks are kept after upload (they keep serving queries).
    #[arg(long = "tsdb.retention", default_value = "6h", value_parser = strata_kit::parse_duration_ms)]
    pub retention_ms: i64,
    /// When the WAL is fsynced: `always` (survives power loss) or `never` (survives a
    /// process crash).
    #[arg(long = "tsdb.wal-fsync", value_enum, default_value_t = WalFsync::Always)]
    pub wal_fsync: WalFsync,
    /// Maximum size of a WAL segment file.
    #[arg(long = "tsdb.wal-segment-size", default_value_t = 128 << 20)]
    pub wal_segment_size: u64,
    /// Compression of WAL records and checkpoints. A WAL written with any setting is
    /// replayed under any other.
    #[arg(
        long = "tsdb.wal-compression-type",
        visible_alias = "storage.tsdb.wal-compression-type",
        value_enum,
        default_value_t = WalCompressionType::Zstd
    )]
    pub wal_compression: WalCompressionType,
    /// How often the head is checked for blocks to cut and local blocks are shipped.
    #[arg(long = "tsdb.ship-interval", default_value = "30s", value_parser = strata_kit::parse_duration_ms)]
    pub ship_interval_ms: i64,
    /// Path to a YAML file with the object store configuration (Thanos's format).
    /// Default: a FILESYSTEM bucket in `<tsdb.path>/bucket`.
    #[arg(long = "objstore.config-file")]
    pub objstore_config_file: Option<PathBuf>,
    /// External label `name="value"` added to the meta.json of every block (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub runtime_config: overrides::RuntimeConfigArgs,
    #[command(flatten)]
    pub cardinality_guard: cardinality::GuardArgs,
    #[command(flatten)]
    pub ha: ha::HaArgs,
    #[command(flatten)]
    pub metadata: metadata::MetadataArgs,
    #[command(flatten)]
    pub exemplars: exemplars::ExemplarArgs,
    #[command(flatten)]
    pub otlp: otlp::OtlpArgs,
}

/// `name="value"` (Thanos's `--label` syntax).
pub use strata_kit::labels::parse_label;

impl IngesterArgs {
    pub fn wal_options(&self) -> WalOptions {
        WalOptions {
            segment_size: self.wal_segment_size,
            fsync: match self.wal_fsync {
                WalFsync::Always => FsyncPolicy::Always,
                WalFsync::Never => FsyncPolicy::Never,
            },
            compression: match self.wal_compression {
                WalCompressionType::Zstd => WalCompression::Zstd,
                WalCompressionType::Snappy => WalCompression::Snappy,
                WalCompressionType::None => WalCompression::None,
            },
        }
    }

    /// The bucket: the configured one, or a FILESYSTEM bucket under the data dir.
    pub fn bucket(&self) -> Result<Bucket> {
        match &self.objstore_config_file {
            Some(f) => Ok(Bucket::from_config_file(f)?),
            None => Ok(Bucket::filesystem(self.data_dir.join("bucket"))?),
        }
    }
}

pub struct Ingester {
    pub config: IngesterArgs,
    pub metrics: IngesterMetrics,
    pub bucket: Bucket,
    pub ha: ha::HaTracker,
    /// Set once this ingester is in a ring: pushes go to each series' owners.
    pub distributor: OnceLock<Arc<distributor::Distributor>>,
    /// Per-tenant limits (`--runtime-config.file` over the limit flags).
    pub overrides: Arc<overrides::Overrides>,
    tenants: RwLock<HashMap<String, Tenant>>,
}

impl Ingester {
    /// Open the data directory and replay every tenant's WAL.
    pub fn open(
        config: IngesterArgs,
        bucket: Bucket,
        registry: &Registry,
    ) -> Result<Arc<Ingester>> {
        if config.block_duration_ms <= 0 {
            return Err(Error::Invalid(
                "--tsdb.block-duration must be positive".into(),
            ));
        }
        let tenants_dir = config.data_dir.join("tenants");
        std::fs::create_dir_all(&tenants_dir).map_err(|e| Error::io(&tenants_dir, e))?;
        let runtime = overrides::RuntimeConfig::open(&config.runtime_config, registry)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let overrides = overrides::Overrides::new(
            config.limits.clone(),
            config.cardinality_guard.clone(),
            runtime,
        );
        let ing = Arc::new(Ingester {
            overrides,
            metrics: IngesterMetrics::new(registry),
            ha: ha::HaTracker::new(config.ha.clone()),
            distributor: OnceLock::new(),
            config,
            bucket,
            tenants: RwLock::new(HashMap::new()),
        });
        for e in std::fs::read_dir(&tenants_dir).map_err(|e| Error::io(&tenants_dir, e))? {
            let e = e.map_err(|e| Error::io(&tenants_dir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            if validate::validate_tenant(&name).is_ok() && e.path().is_dir() {
                ing.tenant(&name)?;
            }
        }
        Ok(ing)
    }

    /// The tenant's storage, opened (WAL replayed) on first use.
    pub fn tenant(&self, id: &str) -> Result<Tenant> {
        if let Some(t) = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(t.clone());
        }
        let mut g = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = g.get(id) {
            return Ok(t.clone());
        }
        let dir = self.config.data_dir.join("tenants").join(id);
        let limits = self.overrides.limits(id);
        let limiter = ratelimit::TokenBucket::new(limits.ingestion_rate, limits.ingestion_burst);
        let (db, stats) = TenantDb::open(
            id,
            &dir,
            self.config.block_duration_ms,
            self.config.wal_options(),
            limiter,
            self.config.labels.clone(),
            self.config.exemplars.max_exemplars,
        )?;
        if stats.unknown_series_samples > 0 {
            self.metrics
                .wal_replay_unknown_series_samples
                .inc_by(stats.unknown_series_samples);
            tracing::warn!(
                tenant = id,
                samples = stats.unknown_series_samples,
                "WAL replay dropped samples whose series record was missing"
            );
        }
        if let Some((file, offset)) = &stats.truncated {
            tracing::warn!(tenant = id, file = %file.display(), offset, "WAL had a torn last record (crash mid-write); truncated it");
        }
        tracing::info!(
            tenant = id,
            series = stats.series,
            samples = stats.samples,
            local_blocks = stats.local_blocks,
            took_ms = stats.took.as_millis() as u64,
            "opened tenant"
        );
        self.metrics
            .head_series
            .with(&[id])
            .set(db.head.num_series() as f64);
        let t = Arc::new(db);
        g.insert(id.to_string(), t.clone());
        Ok(t)
    }

    /// Tenants opened so far.
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut v: Vec<Tenant> = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The tenant if it has been opened (queries for unknown tenants see nothing).
    pub fn existing_tenant(&self, id: &str) -> Option<Tenant> {
        self.tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Cut blocks (all of the head when `all`) and upload pending blocks, every tenant.
    /// Upload errors are returned after every tenant was tried; cut blocks stay on disk
    /// and are retried by the background loop.
    pub async fn cut_and_ship(self: &Arc<Self>, all: bool) -> Result<usize> {
        let mut shipped = 0;
        let mut first_err = None;
        for t in self.tenants() {
            let t2 = t.clone();
            // One tenant's failure must not stop the others' cuts and uploads.
            let cut = match tokio::task::spawn_blocking(move || t2.cut_blocks(all)).await {
                Ok(Ok(cut)) => cut,
                Ok(Err(e)) => {
                    tracing::warn!(tenant = %t.id, error = %e, "cutting blocks failed");
                    first_err.get_or_insert(Error::Invalid(format!("tenant {}: {e}", t.id)));
                    Vec::new()
                }
                Err(e) => {
                    first_err.get_or_insert(Error::Invalid(format!(
                        "tenant {}: cut task failed: {e}",
                        t.id
                    )));
                    Vec::new()
                }
            };
            self.metrics.blocks_cut.inc_by(cut.len() as u64);
            for m in &cut {
                tracing::info!(tenant = %t.id, ulid = %m.ulid, min_time = m.min_time, max_time = m.max_time, series = m.stats.num_series, samples = m.stats.num_samples, "cut block");
            }
            self.metrics
                .head_series
                .with(&[&t.id])
                .set(t.head.num_series() as f64);
            match t.ship(&self.bucket).await {
                Ok(u) => {
                    for ulid in &u {
                        tracing::info!(tenant = %t.id, %ulid, "uploaded block");
                    }
                    self.metrics.blocks_shipped.inc_by(u.len() as u64);
                    shipped += u.len();
                }
                Err(e) => {
                    self.metrics.upload_failures.inc();
                    tracing::warn!(tenant = %t.id, error = %e, "block upload failed; will retry");
                    first_err.get_or_insert(Error::Invalid(format!("tenant {}: {e}", t.id)));
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            if let Err(e) = t.apply_retention(self.config.retention_ms, now) {
                tracing::warn!(tenant = %t.id, error = %e, "local retention failed");
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(shipped),
        }
    }

    /// The background loop: cut and ship every `--tsdb.ship-interval`, retrying failed
    /// uploads with backoff, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let base = Duration::from_millis(self.config.ship_interval_ms.max(100) as u64);
        let mut wait = base;
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            // While the bucket is down, retry with backoff (1 s doubling to 1 min); the
            // WAL and the local blocks hold the data meanwhile.
            wait = match self.cut_and_ship(false).await {
                Ok(_) => {
                    failures = 0;
                    base
                }
                Err(_) => {
                    failures = (failures + 1).min(6);
                    let wait = Duration::from_secs(1 << failures).min(Duration::from_secs(60));
                    tracing::warn!(retry_in = ?wait, "shipping round failed; backing off");
                    wait
                }
            };
        }
    }

    /// Fsync every tenant's WAL (on shutdown).
    pub fn sync_all(&self) {
        for t in self.tenants() {
            if let Err(e) = t.lock_write().wal.sync() {
                tracing::error!(tenant = %t.id, error = %e, "WAL fsync at shutdown failed");
            }
        }
    }

    /// The ingester's own answers to query API paths (metadata of this ingester), for a
    /// standalone ingester; `strata all` serves these paths from its querier.
    pub fn query_routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/metadata", get(metadata::http_metadata))
            .route("/prometheus/api/v1/metadata", get(metadata::http_metadata))
            .with_state(self.clone())
    }

    /// HTTP routes of the ingester, to merge into the component's router.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/push", post(push::push))
            .route("/api/v1/receive", post(push::push))
            .route("/otlp/v1/metrics", post(otlp::push))
            .route("/ingester/flush", post(flush))
            .route("/runtime_config", get(runtime_config))
            .route("/distributor/ha_tracker", get(ha_tracker_status))
            .route("/ingester/ring", get(ring_page::ring_page))
            .route("/cluster/raft", get(ring_page::raft_status))
            .route("/api/v1/status/tsdb", get(status::tsdb_status))
            .route("/prometheus/api/v1/status/tsdb", get(status::tsdb_status))
            .with_state(self.clone())
    }
}

/// `GET /runtime_config`: the per-tenant overrides in force (Mimir's endpoint).
async fn runtime_config(State(ing): State<Arc<Ingester>>) -> Response {
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        ing.overrides.to_yaml(),
    )
        .into_response()
}

/// `GET /distributor/ha_tracker`: the elected replica of every HA cluster (JSON).
async fn ha_tracker_status(State(ing): State<Arc<Ingester>>) -> Response {
    let now = std::time::Instant::now();
    let rows: Vec<serde_json::Value> = ing
        .ha
        .elections(now)
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "tenant": e.tenant,
                "cluster": e.cluster,
                "elected": e.replica,
                "secondsSinceLastSample": e.idle.as_secs_f64(),
            })
        })
        .collect();
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "enabled": ing.ha.args.enabled, "elections": rows }).to_string(),
    )
        .into_response()
}

/// `POST /ingester/flush`: cut everything in every head into blocks and upload them.
async fn flush(State(ing): State<Arc<Ingester>>) -> Response {
    match ing.cut_and_ship(true).await {
        Ok(n) => (StatusCode::OK, format!("flushed; {n} blocks uploaded\n")).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("flush cut the head into local blocks but the upload failed (retried in the background): {e}\n"),
        )
            .into_response(),
    }
}
