//! The HA tracker (Mimir's, same flags and answers): of a Prometheus HA pair that
//! remote-writes both replicas, only the elected replica's samples are stored; the
//! other's requests get `202 Accepted` and are dropped, halving what the pair costs.
//! The pair is told apart by two labels on the first series of a request: the cluster
//! (`--distributor.ha-tracker.cluster`, default `cluster`) and the replica
//! (`--distributor.ha-tracker.replica`, default `__replica__`). The elected replica
//! changes when it has sent nothing for `--distributor.ha-tracker.failover-timeout`;
//! accepted series are stored without the replica label.
//!
//! Elections live in this ingester's memory (there is no shared KV yet): after a restart
//! the first replica to write is elected; two ingesters behind one load balancer could
//! elect differently for a while, so point a pair at one ingester.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;

/// HA tracker flags (Mimir's names).
#[derive(Debug, Clone, Args)]
pub struct HaArgs {
    /// Deduplicate the samples of Prometheus HA pairs at ingest.
    #[arg(
        long = "distributor.ha-tracker.enable",
        visible_alias = "distributor.ha-tracker.enable-for-all-users",
        default_value_t = false
    )]
    pub enabled: bool,
    /// Label naming the HA cluster (the pair).
    #[arg(long = "distributor.ha-tracker.cluster", default_value = "cluster")]
    pub cluster_label: String,
    /// Label naming the replica within the pair; dropped from accepted series.
    #[arg(long = "distributor.ha-tracker.replica", default_value = "__replica__")]
    pub replica_label: String,
    /// Silence from the elected replica after which another replica is elected.
    #[arg(long = "distributor.ha-tracker.failover-timeout", value_name = "DURATION", default_value = "30s", value_parser = strata_kit::parse_duration_ms)]
    pub failover_timeout_ms: i64,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not from an HA pair (no cluster or no replica label): store as it is.
    NotHa,
    /// From the elected replica (elected now if `changed`): store it without the
    /// replica label.
    Accept { changed: bool },
    /// From another replica: answer 202 and drop it.
    Reject { replica: String, elected: String },
}

/// The elected replica of one tenant's cluster.
#[derive(Debug, Clone)]
struct Elected {
    replica: String,
    last_seen: Instant,
}

/// One cluster's election, as `/distributor/ha_tracker` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub tenant: String,
    pub cluster: String,
    pub replica: String,
    pub idle: Duration,
}

#[derive(Debug)]
pub struct HaTracker {
    pub args: HaArgs,
    elected: Mutex<HashMap<(String, String), Elected>>,
}

impl HaTracker {
    pub fn new(args: HaArgs) -> Self {
        HaTracker {
            args,
            elected: Mutex::new(HashMap::new()),
        }
    }

    /// The decision for a request of `tenant` whose first series has `labels`, received
    /// at `now`.
    pub fn check<'a>(
        &self,
        tenant: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: Instant,
    ) -> Decision {
        if !self.args.enabled {
            return Decision::NotHa;
        }
        let (mut cluster, mut replica) = (None, None);
        for (n, v) in labels {
            if n == self.args.cluster_label {
                cluster = Some(v);
            } else if n == self.args.replica_label {
                replica = Some(v);
            }
        }
        let (Some(cluster), Some(replica)) = (cluster, replica) else {
            return Decision::NotHa;
        };
        let timeout = Duration::from_millis(self.args.failover_timeout_ms.max(0) as u64);
        let mut g = self.elected.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_string(), cluster.to_string());
        match g.get_mut(&key) {
            Some(e) if e.replica == replica => {
                e.last_seen = now;
                Decision::Accept { changed: false }
            }
            Some(e) if now.saturating_duration_since(e.last_seen) <= timeout => Decision::Reject {
                replica: replica.to_string(),
                elected: e.replica.clone(),
            },
            Some(e) => {
                tracing::info!(
                    tenant,
                    cluster,
                    from = %e.replica,
                    to = replica,
                    "HA tracker: elected replica changed after failover timeout"
                );
                *e = Elected {
                    replica: replica.to_string(),
                    last_seen: now,
                };
                Decision::Accept { changed: true }
            }
            None => {
                g.insert(
                    key,
                    Elected {
                        replica: replica.to_string(),
                        last_seen: now,
                    },
                );
                Decision::Accept { changed: true }
            }
        }
    }

    /// Every election, sorted by tenant and cluster.
    pub fn elections(&self, now: Instant) -> Vec<Election> {
        let g = self.elected.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Election> = g
            .iter()
            .map(|((tenant, cluster), e)| Election {
                tenant: tenant.clone(),
                cluster: cluster.clone(),
                replica: e.replica.clone(),
                idle: now.saturating_duration_since(e.last_seen),
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.cluster).cmp(&(&b.tenant, &b.cluster)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> HaTracker {
        HaTracker::new(HaArgs {
            enabled: true,
            cluster_label: "cluster".into(),
            replica_label: "__replica__".into(),
            failover_timeout_ms: 30_000,
        })
    }

    #[test]
    fn first_replica_wins_until_it_goes_quiet() {
        let t = tracker();
        let t0 = Instant::now();
        let a = [("cluster", "c1"), ("__replica__", "a")];
        let b = [("cluster", "c1"), ("__replica__", "b")];
        assert_eq!(t.check("x", a, t0), Decision::Accept { changed: true });
        assert_eq!(
            t.check("x", b, t0 + Duration::from_secs(1)),
            Decision::Reject {
                replica: "b".into(),
                elected: "a".into()
            }
        );
        assert_eq!(
            t.check("x", a, t0 + Duration::from_secs(20)),
            Decision::Accept { changed: false }
        );
        // 30 s after a's last request: still a's; after that b takes over.
        assert!(matches!(
            t.check("x", b, t0 + Duration::from_secs(50)),
            Decision::Reject { .. }
        ));
        assert_eq!(
            t.check("x", b, t0 + Duration::from_secs(51)),
            Decision::Accept { changed: true }
        );
        assert!(matches!(
            t.check("x", a, t0 + Duration::from_secs(52)),
            Decision::Reject { .. }
        ));
        // Per tenant and cluster.
        assert_eq!(
            t.check("y", a, t0 + Duration::from_secs(52)),
            Decision::Accept { changed: true }
        );
        let c2 = [("cluster", "c2"), ("__replica__", "a")];
        assert_eq!(
            t.check("x", c2, t0 + Duration::from_secs(52)),
            Decision::Accept { changed: true }
        );
        assert_eq!(t.elections(t0 + Duration::from_secs(52)).len(), 3);
    }

    #[test]
    fn requests_without_both_labels_are_not_ha() {
        let t = tracker();
        let now = Instant::now();
        assert_eq!(t.check("x", [("cluster", "c1")], now), Decision::NotHa);
        assert_eq!(t.check("x", [("__replica__", "a")], now), Decision::NotHa);
        let off = HaTracker::new(HaArgs {
            enabled: false,
            ..tracker().args
        });
        assert_eq!(
            off.check("x", [("cluster", "c1"), ("__replica__", "a")], now),
            Decision::NotHa
        );
    }
}
