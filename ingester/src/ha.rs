//! The HA tracker (Mimir's, same flags and answers): of a Prometheus HA pair that
//! remote-writes both replicas, only the elected replica's samples are stored; the
//! other's requests get `202 Accepted` and are dropped, halving what the pair costs.
//! The pair is told apart by two labels on the first series of a request: the cluster
//! (`--distributor.ha-tracker.cluster`, default `cluster`) and the replica
//! (`--distributor.ha-tracker.replica`, default `__replica__`). The elected replica
//! changes when it has sent nothing for `--distributor.ha-tracker.failover-timeout`;
//! accepted series are stored without the replica label.
//!
//! In a cluster the elections live in the replicated KV (raft), like Mimir's in its KV
//! store: every ingester reads its local copy to accept or refuse, refreshes the
//! elected replica's timestamp through raft at most every
//! `--distributor.ha-tracker.update-timeout`, and elects (or fails over) through raft,
//! where the log decides one winner for the whole cluster. Without a cluster (unit
//! tests) the elections live in memory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Args;
use strata_cluster::state::{ha_key, Command, Reply};
use strata_cluster::Node;

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
    /// How stale the elected replica's timestamp in the KV may get before a sample from
    /// it refreshes it (fewer KV writes; must be well under the failover timeout).
    #[arg(long = "distributor.ha-tracker.update-timeout", value_name = "DURATION", default_value = "15s", value_parser = strata_kit::parse_duration_ms)]
    pub update_timeout_ms: i64,
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
    /// An election was needed and the cluster's KV could not be reached: 503.
    Unavailable(String),
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
    /// The cluster's KV, once this ingester is in one.
    kv: OnceLock<Arc<Node>>,
    /// Refreshes in flight, so a burst of requests sends one.
    refreshing: Arc<Mutex<HashSet<String>>>,
}

impl HaTracker {
    pub fn new(args: HaArgs) -> Self {
        HaTracker {
            args,
            elected: Mutex::new(HashMap::new()),
            kv: OnceLock::new(),
            refreshing: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Keep elections in the cluster's replicated KV from now on.
    pub fn use_kv(&self, node: Arc<Node>) {
        let _ = self.kv.set(node);
    }

    /// The decision through the KV (see the module docs). Called on a blocking thread:
    /// an election waits for raft.
    fn check_kv(&self, node: &Arc<Node>, tenant: &str, cluster: &str, replica: &str) -> Decision {
        let now = strata_cluster::now_ms();
        let key = ha_key(tenant, cluster);
        let local = node.read(|s| s.ha.get(&key).cloned());
        let elect = Command::HaElect {
            tenant: tenant.to_string(),
            cluster: cluster.to_string(),
            replica: replica.to_string(),
            now_ms: now,
            failover_timeout_ms: self.args.failover_timeout_ms,
        };
        match local {
            Some(e) if e.replica == replica => {
                if now - e.received_ms > self.args.update_timeout_ms {
                    // Refresh in the background: the failover timeout leaves room.
                    let fresh = self
                        .refreshing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.clone());
                    if fresh {
                        let node = node.clone();
                        let refreshing = self.refreshing.clone();
                        tokio::runtime::Handle::current().spawn(async move {
                            if let Err(e) = node.write(elect).await {
                                tracing::warn!(error = %e, "HA tracker: could not refresh the elected replica's timestamp");
                            }
                            refreshing.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                        });
                    }
                }
                Decision::Accept { changed: false }
            }
            Some(e) if now - e.received_ms <= self.args.failover_timeout_ms => Decision::Reject {
                replica: replica.to_string(),
                elected: e.replica,
            },
            _ => match tokio::runtime::Handle::current().block_on(node.write(elect)) {
                Ok(Reply::HaElected {
                    replica: r,
                    changed,
                }) if r == replica => {
                    if changed {
                        tracing::info!(tenant, cluster, replica, "HA tracker: elected replica");
                    }
                    Decision::Accept { changed }
                }
                Ok(Reply::HaElected { replica: r, .. }) => Decision::Reject {
                    replica: replica.to_string(),
                    elected: r,
                },
                Ok(r) => Decision::Unavailable(format!("unexpected KV reply {r:?}")),
                Err(e) => Decision::Unavailable(e.to_string()),
            },
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
        if let Some(node) = self.kv.get() {
            return self.check_kv(node, tenant, cluster, replica);
        }
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
        if let Some(node) = self.kv.get() {
            let now_ms = strata_cluster::now_ms();
            return node.read(|s| {
                s.ha.iter()
                    .map(|(k, e)| {
                        let (tenant, cluster) = k.split_once('/').unwrap_or((k.as_str(), ""));
                        Election {
                            tenant: tenant.to_string(),
                            cluster: cluster.to_string(),
                            replica: e.replica.clone(),
                            idle: Duration::from_millis((now_ms - e.received_ms).max(0) as u64),
                        }
                    })
                    .collect()
            });
        }
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
            update_timeout_ms: 15_000,
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
