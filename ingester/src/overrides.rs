//! Per-tenant limits from a runtime configuration file (`--runtime-config.file`, Mimir's
//! `overrides:` shape), re-read every `--runtime-config.reload-period` without a
//! restart. A tenant without an entry, and every limit an entry leaves out, keeps the
//! flag's value. A file that cannot be read or parsed keeps the last good configuration
//! and says why (log and `strata_runtime_config_last_reload_successful`).
//!
//! ```yaml
//! overrides:
//!   tenant-a:
//!     ingestion_rate: 50000
//!     ingestion_burst_size: 100000
//!     max_global_series_per_user: 2000000
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::Deserialize;

use crate::validate::Limits;

/// `--runtime-config.*` (Mimir's names).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RuntimeConfigArgs {
    /// YAML file with per-tenant overrides (Mimir's `overrides:` shape), re-read
    /// periodically.
    #[arg(long = "runtime-config.file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How often the runtime configuration file is re-read.
    #[arg(long = "runtime-config.reload-period", value_name = "DURATION", default_value = "10s", value_parser = strata_kit::parse_duration_ms)]
    pub reload_period_ms: i64,
}

/// One tenant's overrides, Mimir's YAML keys; absent keys keep the flag's value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingestion_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingestion_burst_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_global_series_per_user: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_global_series_per_metric: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_label_names_per_series: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_label_name_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_label_value_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_native_histogram_buckets: Option<usize>,
    /// A duration (`30m`), as Mimir writes it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "duration_opt",
        serialize_with = "duration_out"
    )]
    pub out_of_order_time_window: Option<i64>,
}

fn duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let s = String::deserialize(d)?;
    strata_kit::parse_duration_ms(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn duration_out<S: serde::Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&strata_kit::format_duration_ms(v.unwrap_or(0)))
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeConfig {
    #[serde(default)]
    overrides: HashMap<String, TenantLimits>,
}

/// The current overrides, shared by every push.
pub struct Overrides {
    defaults: Limits,
    current: RwLock<Arc<HashMap<String, TenantLimits>>>,
    file: Option<PathBuf>,
    /// Whether the last reload succeeded (1) or failed (0).
    pub last_reload_ok: strata_kit::metrics::Gauge,
}

#[derive(Debug, thiserror::Error)]
pub enum OverridesError {
    #[error("--runtime-config.file {path}: {msg}")]
    Load { path: PathBuf, msg: String },
}

fn load(path: &Path) -> Result<HashMap<String, TenantLimits>, OverridesError> {
    let err = |msg: String| OverridesError::Load {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    if text.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let cfg: RuntimeConfig = yaml_serde::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok(cfg.overrides)
}

impl Overrides {
    /// Read the file once (a bad file stops start-up) and keep the flag defaults.
    pub fn open(
        defaults: Limits,
        args: &RuntimeConfigArgs,
        last_reload_ok: strata_kit::metrics::Gauge,
    ) -> Result<Arc<Overrides>, OverridesError> {
        let initial = match &args.file {
            Some(p) => load(p)?,
            None => HashMap::new(),
        };
        last_reload_ok.set(1.0);
        Ok(Arc::new(Overrides {
            defaults,
            current: RwLock::new(Arc::new(initial)),
            file: args.file.clone(),
            last_reload_ok,
        }))
    }

    /// Re-read the file every `period` on a thread of its own, for as long as the
    /// overrides are in use.
    pub fn watch(self: &Arc<Self>, period: Duration) {
        if self.file.is_none() {
            return;
        }
        let weak: Weak<Overrides> = Arc::downgrade(self);
        let period = period.max(Duration::from_millis(100));
        let _ = std::thread::Builder::new()
            .name("runtime-config".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(o) = weak.upgrade() else { return };
                o.reload();
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

    /// The limits that hold for `tenant` now.
    pub fn limits(&self, tenant: &str) -> Limits {
        let g = self.current.read().unwrap_or_else(|p| p.into_inner());
        let mut l = self.defaults.clone();
        if let Some(o) = g.get(tenant) {
            if let Some(v) = o.ingestion_rate {
                l.ingestion_rate = v;
            }
            if let Some(v) = o.ingestion_burst_size {
                l.ingestion_burst = v;
            }
            if let Some(v) = o.max_global_series_per_user {
                l.max_series_per_user = v;
            }
            if let Some(v) = o.max_global_series_per_metric {
                l.max_series_per_metric = v;
            }
            if let Some(v) = o.max_label_names_per_series {
                l.max_label_names_per_series = v;
            }
            if let Some(v) = o.max_label_name_length {
                l.max_label_name_length = v;
            }
            if let Some(v) = o.max_label_value_length {
                l.max_label_value_length = v;
            }
            if let Some(v) = o.max_native_histogram_buckets {
                l.max_native_histogram_buckets = v;
            }
            if let Some(v) = o.out_of_order_time_window {
                l.out_of_order_time_window_ms = v;
            }
        }
        l
    }

    /// The configuration in force, as YAML (Mimir's `/runtime_config`).
    pub fn to_yaml(&self) -> String {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            overrides: std::collections::BTreeMap<&'a str, &'a TenantLimits>,
        }
        let g = self.current.read().unwrap_or_else(|p| p.into_inner());
        let overrides = g.iter().map(|(k, v)| (k.as_str(), v)).collect();
        yaml_serde::to_string(&Out { overrides }).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_per_tenant_and_a_bad_file_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.yml");
        std::fs::write(
            &path,
            "overrides:\n  a:\n    ingestion_rate: 5\n    max_global_series_per_user: 2\n",
        )
        .unwrap();
        let args = RuntimeConfigArgs {
            file: Some(path.clone()),
            reload_period_ms: 10_000,
        };
        let reg = strata_kit::metrics::Registry::new();
        let g = reg.gauge("strata_test_runtime_ok", "test");
        let o = Overrides::open(Limits::default(), &args, g).unwrap();
        assert_eq!(o.limits("a").ingestion_rate, 5.0);
        assert_eq!(o.limits("a").max_series_per_user, 2);
        assert_eq!(
            o.limits("b").max_series_per_user,
            Limits::default().max_series_per_user
        );
        // an unknown key is an error naming it; the last good configuration stays
        std::fs::write(&path, "overrides:\n  a:\n    ingestion_rat: 9\n").unwrap();
        o.reload();
        assert_eq!(o.last_reload_ok.get(), 0.0);
        assert_eq!(o.limits("a").ingestion_rate, 5.0);
        std::fs::write(
            &path,
            "overrides:\n  b:\n    max_label_names_per_series: 3\n",
        )
        .unwrap();
        o.reload();
        assert_eq!(o.last_reload_ok.get(), 1.0);
        assert_eq!(
            o.limits("a").ingestion_rate,
            Limits::default().ingestion_rate
        );
        assert_eq!(o.limits("b").max_label_names_per_series, 3);
        assert!(
            o.to_yaml().contains("max_label_names_per_series: 3"),
            "{}",
            o.to_yaml()
        );
        let e = load(&dir.path().join("missing.yml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--runtime-config.file"), "{e}");
    }
}
