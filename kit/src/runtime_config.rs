//! The runtime configuration file (`--runtime-config.file`, Mimir's `overrides:` shape):
//! per-tenant limits every component reads from the same file, re-read every
//! `--runtime-config.reload-period` without a restart. One struct holds every key any
//! component knows, so a file good for the ingester is good for the querier and the
//! compactor too (an unknown key is an error everywhere, naming it). A file that cannot
//! be read or parsed keeps the last good configuration and says why (the log and
//! `strata_runtime_config_last_reload_successful`). Each component maps a tenant's
//! entry onto its own limits; a key left out keeps that component's flag.
//!
//! ```yaml
//! overrides:
//!   tenant-a:
//!     ingestion_rate: 50000                       # ingester
//!     compactor_blocks_retention_period: 30d      # compactor
//!     max_fetched_series_per_query: 100000        # querier
//!     max_query_lookback: 90d                     # querier and query frontend
//!     max_total_query_length: 30d                 # query frontend
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::Deserialize;

use crate::metrics::{Gauge, Registry};

/// `--runtime-config.*` (Mimir's names).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RuntimeConfigArgs {
    /// YAML file with per-tenant overrides (Mimir's `overrides:` shape), re-read
    /// periodically.
    #[arg(long = "runtime-config.file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How often the runtime configuration file is re-read.
    #[arg(long = "runtime-config.reload-period", value_name = "DURATION", default_value = "10s", value_parser = crate::parse_duration_ms)]
    pub reload_period_ms: i64,
}

/// One tenant's overrides, Mimir's YAML keys where Mimir has the limit; absent keys
/// keep the flag's value. Durations are written as Mimir writes them (`30m`, `90d`).
/// A new key: a field here, then the component that applies it maps it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    // --- ingester: ingestion
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion_burst_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_global_series_per_user: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_global_series_per_metric: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label_names_per_series: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label_name_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label_value_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_native_histogram_buckets: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    pub out_of_order_time_window: Option<i64>,
    // --- ingester: the cardinality guard (Strata's own; no peer has it)
    /// `--ingester.cardinality-guard.max-new-series-per-metric` (0 = off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cardinality_guard_max_new_series_per_metric: Option<usize>,
    /// `--ingester.cardinality-guard.window`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    pub cardinality_guard_window: Option<i64>,
    // --- compactor
    /// Blocks whose newest sample is older are deleted, at every resolution (0 =
    /// forever); in place of the `--retention.resolution-*` flags for this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    pub compactor_blocks_retention_period: Option<i64>,
    // --- querier
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fetched_series_per_query: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fetched_chunk_bytes_per_query: Option<u64>,
    /// How far back this tenant's queries read (0 = no limit): a start before
    /// `now - max_query_lookback` is moved up to it, in the querier (every read) and
    /// the query frontend (range queries). In place of `--querier.max-query-lookback`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    pub max_query_lookback: Option<i64>,
    // --- query frontend
    /// Longest range (end - start) of a range query; 0 = no limit. In place of
    /// `--query-frontend.max-total-query-length` for this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    pub max_total_query_length: Option<i64>,
}

/// Durations in and out of the YAML as `30m`.
mod duration {
    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let s = String::deserialize(d)?;
        crate::parse_duration_ms(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: serde::Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::format_duration_ms(v.unwrap_or(0)))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    #[serde(default)]
    overrides: HashMap<String, TenantOverrides>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeConfigError {
    #[error("--runtime-config.file {path}: {msg}")]
    Load { path: PathBuf, msg: String },
}

fn load(path: &Path) -> Result<HashMap<String, TenantOverrides>, RuntimeConfigError> {
    let err = |msg: String| RuntimeConfigError::Load {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    if text.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let cfg: FileContents = yaml_serde::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok(cfg.overrides)
}

/// The overrides in force, shared by every component of a process (`strata all` opens
/// one and hands it to each).
pub struct RuntimeConfig {
    current: RwLock<Arc<HashMap<String, TenantOverrides>>>,
    file: Option<PathBuf>,
    /// Whether the last reload succeeded (1) or failed (0).
    pub last_reload_ok: Gauge,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl RuntimeConfig {
    /// Read the file once (a bad file stops start-up) and re-read it every
    /// `--runtime-config.reload-period` from then on. Registers
    /// `strata_runtime_config_last_reload_successful`.
    pub fn open(
        args: &RuntimeConfigArgs,
        registry: &Registry,
    ) -> Result<Arc<RuntimeConfig>, RuntimeConfigError> {
        let gauge = registry.gauge(
            "strata_runtime_config_last_reload_successful",
            "Whether the last reload of --runtime-config.file succeeded (1) or failed (0).",
        );
        let rc = Self::open_with_gauge(args, gauge)?;
        rc.watch(Duration::from_millis(args.reload_period_ms.max(0) as u64));
        Ok(rc)
    }

    /// Read the file once, without re-reading it; `gauge` says how reloads go.
    pub fn open_with_gauge(
        args: &RuntimeConfigArgs,
        gauge: Gauge,
    ) -> Result<Arc<RuntimeConfig>, RuntimeConfigError> {
        let initial = match &args.file {
            Some(p) => load(p)?,
            None => HashMap::new(),
        };
        gauge.set(1.0);
        Ok(Arc::new(RuntimeConfig {
            current: RwLock::new(Arc::new(initial)),
            file: args.file.clone(),
            last_reload_ok: gauge,
        }))
    }

    /// No file: every tenant keeps the flags (tests, and components run without one).
    pub fn none() -> Arc<RuntimeConfig> {
        Arc::new(RuntimeConfig {
            current: RwLock::new(Arc::new(HashMap::new())),
            file: None,
            last_reload_ok: Registry::new()
                .gauge("strata_runtime_config_last_reload_successful", "unused"),
        })
    }

    /// Re-read the file every `period` on a thread of its own, for as long as the
    /// configuration is in use.
    pub fn watch(self: &Arc<Self>, period: Duration) {
        if self.file.is_none() {
            return;
        }
        let weak: Weak<RuntimeConfig> = Arc::downgrade(self);
        let period = period.max(Duration::from_millis(100));
        let _ = std::thread::Builder::new()
            .name("runtime-config".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(rc) = weak.upgrade() else { return };
                rc.reload();
            });
    }

    /// Re-read the file now; on failure keep the last good configuration.
    pub fn reload(&self) {
        let Some(path) = &self.file else { return };
        match load(path) {
            Ok(next) => {
                let mut g = self.current.write().unwrap_or_else(|p| p.into_inner());
                if **g != next {
                    tracing::info!(tenants = next.len(), "runtime configuration reloaded");
                    *g = Arc::new(next);
                }
                self.last_reload_ok.set(1.0);
            }
            Err(e) => {
                tracing::error!(error = %e, "runtime configuration not reloaded; keeping the last good one");
                self.last_reload_ok.set(0.0);
            }
        }
    }

    /// `tenant`'s entry now (every key `None` without one).
    pub fn tenant(&self, tenant: &str) -> TenantOverrides {
        let g = self.current.read().unwrap_or_else(|p| p.into_inner());
        g.get(tenant).cloned().unwrap_or_default()
    }

    /// The configuration in force, as YAML (Mimir's `/runtime_config`).
    pub fn to_yaml(&self) -> String {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            overrides: BTreeMap<&'a str, &'a TenantOverrides>,
        }
        let g = self.current.read().unwrap_or_else(|p| p.into_inner());
        let overrides = g.iter().map(|(k, v)| (k.as_str(), v)).collect();
        yaml_serde::to_string(&Out { overrides }).unwrap_or_default()
    }

    /// `GET /runtime_config`: the overrides in force (Mimir's endpoint), for the
    /// components that serve no other route of their own with it.
    pub fn routes(self: &Arc<Self>) -> axum::Router {
        let rc = self.clone();
        axum::Router::new().route(
            "/runtime_config",
            axum::routing::get(move || {
                let body = rc.to_yaml();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_keeps_the_last_good_one_and_every_component_key_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.yml");
        std::fs::write(
            &path,
            "overrides:\n  a:\n    ingestion_rate: 5\n    compactor_blocks_retention_period: 30d\n    max_fetched_series_per_query: 7\n    cardinality_guard_window: 5m\n    max_query_lookback: 2h\n",
        )
        .unwrap();
        let args = RuntimeConfigArgs {
            file: Some(path.clone()),
            reload_period_ms: 10_000,
        };
        let reg = Registry::new();
        let g = reg.gauge("strata_test_runtime_ok", "test");
        let rc = RuntimeConfig::open_with_gauge(&args, g).unwrap();
        let a = rc.tenant("a");
        assert_eq!(a.ingestion_rate, Some(5.0));
        assert_eq!(a.compactor_blocks_retention_period, Some(30 * 86_400_000));
        assert_eq!(a.max_fetched_series_per_query, Some(7));
        assert_eq!(a.cardinality_guard_window, Some(300_000));
        assert_eq!(a.max_query_lookback, Some(2 * 3_600_000));
        assert_eq!(rc.tenant("b"), TenantOverrides::default());
        // an unknown key is an error naming it; the last good configuration stays
        std::fs::write(&path, "overrides:\n  a:\n    ingestion_rat: 9\n").unwrap();
        rc.reload();
        assert_eq!(rc.last_reload_ok.get(), 0.0);
        assert_eq!(rc.tenant("a").ingestion_rate, Some(5.0));
        std::fs::write(
            &path,
            "overrides:\n  b:\n    max_label_names_per_series: 3\n",
        )
        .unwrap();
        rc.reload();
        assert_eq!(rc.last_reload_ok.get(), 1.0);
        assert_eq!(rc.tenant("a"), TenantOverrides::default());
        assert_eq!(rc.tenant("b").max_label_names_per_series, Some(3));
        assert!(
            rc.to_yaml().contains("max_label_names_per_series: 3"),
            "{}",
            rc.to_yaml()
        );
        let e = load(&dir.path().join("missing.yml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--runtime-config.file"), "{e}");
        let e = yaml_serde::from_str::<FileContents>("overrides:\n  a:\n    ingestion_rat: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ingestion_rat"), "{e}");
    }

    /// The example in `docs/operations.md` parses, with every key it shows.
    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../docs/operations.md");
        let from = doc.find("## Per-tenant overrides").expect("the section");
        let block = &doc[from..];
        let start = block.find("```yaml\n").expect("a yaml block") + 8;
        let yaml = &block[start..start + block[start..].find("```").unwrap()];
        let cfg: FileContents = yaml_serde::from_str(yaml).unwrap();
        let a = &cfg.overrides["team-a"];
        assert_eq!(a.compactor_blocks_retention_period, Some(90 * 86_400_000));
        assert_eq!(a.max_fetched_chunk_bytes_per_query, Some(1_000_000_000));
        assert_eq!(a.cardinality_guard_window, Some(600_000));
        assert_eq!(a.max_total_query_length, Some(32 * 86_400_000));
        assert_eq!(a.max_query_lookback, Some(90 * 86_400_000));
    }
}
