//! The ingester's per-tenant limits from the runtime configuration file (`--runtime-config.file`, Mimir's
//! `overrides:` shape), re-read every `--runtime-config.reload-period` without a
//! restart ([`strata_kit::runtime_config`] reads the file, for every component). A tenant
//! without an entry, and every limit an entry leaves out, keeps the flag's value.
//!
//! ```yaml
//! overrides:
//!   tenant-a:
//!     ingestion_rate: 50000
//!     ingestion_burst_size: 100000
//!     max_global_series_per_user: 2000000
//! ```

use std::sync::Arc;

pub use strata_kit::runtime_config::{
    RuntimeConfig, RuntimeConfigArgs, RuntimeConfigError as OverridesError, TenantOverrides,
};

use crate::cardinality::GuardArgs;
use crate::validate::Limits;

/// The ingester's view of the runtime configuration: its flags' limits with each
/// tenant's entry laid over them.
pub struct Overrides {
    defaults: Limits,
    guard: GuardArgs,
    runtime: Arc<RuntimeConfig>,
}

impl Overrides {
    /// The ingester's limits over `runtime` (opened by the caller: `strata all` shares
    /// one with the querier and the compactor).
    pub fn new(defaults: Limits, guard: GuardArgs, runtime: Arc<RuntimeConfig>) -> Arc<Overrides> {
        Arc::new(Overrides {
            defaults,
            guard,
            runtime,
        })
    }

    /// The runtime configuration these overrides read.
    pub fn runtime(&self) -> &Arc<RuntimeConfig> {
        &self.runtime
    }

    /// The limits that hold for `tenant` now.
    pub fn limits(&self, tenant: &str) -> Limits {
        let o = self.runtime.tenant(tenant);
        let mut l = self.defaults.clone();
        fn set<T>(dst: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *dst = v;
            }
        }
        set(&mut l.ingestion_rate, o.ingestion_rate);
        set(&mut l.ingestion_burst, o.ingestion_burst_size);
        set(&mut l.max_series_per_user, o.max_global_series_per_user);
        set(&mut l.max_series_per_metric, o.max_global_series_per_metric);
        set(
            &mut l.max_label_names_per_series,
            o.max_label_names_per_series,
        );
        set(&mut l.max_label_name_length, o.max_label_name_length);
        set(&mut l.max_label_value_length, o.max_label_value_length);
        set(
            &mut l.max_native_histogram_buckets,
            o.max_native_histogram_buckets,
        );
        set(
            &mut l.out_of_order_time_window_ms,
            o.out_of_order_time_window,
        );
        l
    }

    /// The cardinality guard's settings for `tenant` now.
    pub fn guard(&self, tenant: &str) -> GuardArgs {
        let o = self.runtime.tenant(tenant);
        GuardArgs {
            max_new_series: o
                .cardinality_guard_max_new_series_per_metric
                .unwrap_or(self.guard.max_new_series),
            window_ms: o.cardinality_guard_window.unwrap_or(self.guard.window_ms),
        }
    }

    /// The configuration in force, as YAML (Mimir's `/runtime_config`).
    pub fn to_yaml(&self) -> String {
        self.runtime.to_yaml()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_entry_lays_over_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.yml");
        std::fs::write(
            &path,
            "overrides:\n  a:\n    ingestion_rate: 5\n    max_global_series_per_user: 2\n    cardinality_guard_max_new_series_per_metric: 9\n",
        )
        .unwrap();
        let args = RuntimeConfigArgs {
            file: Some(path),
            reload_period_ms: 10_000,
        };
        let reg = strata_kit::metrics::Registry::new();
        let rc = RuntimeConfig::open_with_gauge(&args, reg.gauge("strata_test_ok", "t")).unwrap();
        let o = Overrides::new(Limits::default(), GuardArgs::default(), rc);
        assert_eq!(o.limits("a").ingestion_rate, 5.0);
        assert_eq!(o.limits("a").max_series_per_user, 2);
        assert_eq!(
            o.limits("a").max_label_name_length,
            Limits::default().max_label_name_length
        );
        assert_eq!(
            o.limits("b").max_series_per_user,
            Limits::default().max_series_per_user
        );
        assert_eq!(o.guard("a").max_new_series, 9);
        assert_eq!(o.guard("a").window_ms, GuardArgs::default().window_ms);
        assert_eq!(o.guard("b").max_new_series, 0);
    }
}
