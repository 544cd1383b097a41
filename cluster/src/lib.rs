//! The ingesters' cluster: who is in it, who owns which series, and the little shared
//! state that must agree across machines.
//!
//! * [`ring`]: the consistent-hash ring with replication factor and zones (Mimir's
//!   model) — pure functions, no I/O.
//! * [`state`]: the replicated state (ring members, HA-tracker elections) and how
//!   each command changes it, deterministically.
//! * [`raft`]: that state replicated by `openraft`, log and snapshots on disk, RPCs
//!   over our gRPC port.
//! * [`node`]: one member's handle: start-up checks, joining, heartbeats, leaving,
//!   writes forwarded to the leader, the gRPC service, metrics, and the views the
//!   ingester reads (the ring, elections).
//!
//! ```
//! use strata_cluster::ring::{shard_key, Ring};
//! // An empty ring owns nothing; a series' position is independent of label order.
//! let mut owners = Vec::new();
//! Ring::default().replicas(shard_key("t", &[("a", "1")]), 3, false, &mut owners);
//! assert!(owners.is_empty());
//! assert_eq!(shard_key("t", &[("a", "1"), ("b", "2")]), shard_key("t", &[("b", "2"), ("a", "1")]));
//! ```

pub mod node;
pub mod raft;
pub mod ring;
pub mod state;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use node::Node;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    /// A start-up check failed: the flags and the cluster (or the data dir) disagree.
    #[error("{0}")]
    Config(String),
    /// No raft leader could be reached in time (no majority of the seed set is up).
    #[error("no raft leader reachable: {0}")]
    NoLeader(String),
    #[error("raft: {0}")]
    Raft(String),
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

/// Cluster and ring flags (Mimir's ring names where Mimir has one).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// This node's id in the cluster (Mimir's instance id). Default: the host name.
    #[arg(
        long = "cluster.node-id",
        visible_alias = "ingester.ring.instance-id",
        value_name = "ID"
    )]
    pub cluster_node_id: Option<String>,
    /// The seed set: comma-separated `id=host:grpc-port` of the cluster's raft voters
    /// (this node among them, or a node joining them). Empty: a cluster of one.
    #[arg(long = "cluster.peers", value_name = "ID=HOST:PORT,...", value_delimiter = ',', value_parser = parse_peer)]
    pub cluster_peers: Vec<(String, String)>,
    /// Where the raft log and snapshots live. Default: `<tsdb.path>/cluster`.
    #[arg(long = "cluster.data-dir", value_name = "DIR")]
    pub cluster_data_dir: Option<PathBuf>,
    /// The gRPC address peers reach this node at. Default: `--grpc-address`, with an
    /// unspecified IP replaced by 127.0.0.1.
    #[arg(
        long = "cluster.advertise-address",
        visible_alias = "ingester.ring.instance-addr",
        value_name = "HOST:PORT"
    )]
    pub cluster_advertise_address: Option<String>,
    /// Replicas of each series. Default: 3 with `--cluster.peers`, 1 without (and in
    /// `strata all`).
    #[arg(long = "ingester.ring.replication-factor", value_name = "N")]
    pub ring_replication_factor: Option<usize>,
    /// This ingester's availability zone.
    #[arg(
        long = "ingester.ring.instance-zone",
        value_name = "ZONE",
        default_value = ""
    )]
    pub ring_zone: String,
    /// Place the replicas of each series in distinct zones.
    #[arg(long = "ingester.ring.zone-awareness-enabled", default_value_t = false)]
    pub ring_zone_awareness: bool,
    /// Tokens this ingester owns on the ring.
    #[arg(long = "ingester.ring.num-tokens", value_name = "N", default_value_t = ring::DEFAULT_NUM_TOKENS)]
    pub ring_num_tokens: usize,
    /// How often this ingester heartbeats into the ring.
    #[arg(long = "ingester.ring.heartbeat-period", value_name = "DURATION", default_value = "5s", value_parser = strata_kit::parse_duration_ms)]
    pub ring_heartbeat_period_ms: i64,
    /// A member silent for this long is UNHEALTHY: writes and reads skip it.
    #[arg(long = "ingester.ring.heartbeat-timeout", value_name = "DURATION", default_value = "1m", value_parser = strata_kit::parse_duration_ms)]
    pub ring_heartbeat_timeout_ms: i64,
    /// How long a forwarded write may take before the owner counts as failed.
    #[arg(long = "distributor.remote-timeout", value_name = "DURATION", default_value = "5s", value_parser = strata_kit::parse_duration_ms)]
    pub distributor_remote_timeout_ms: i64,
}

impl ClusterArgs {
    pub fn replication_factor(&self) -> usize {
        self.ring_replication_factor
            .unwrap_or(if self.cluster_peers.is_empty() { 1 } else { 3 })
            .max(1)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.ring_heartbeat_timeout_ms.max(0) as u64)
    }

    pub fn remote_timeout(&self) -> Duration {
        Duration::from_millis(self.distributor_remote_timeout_ms.max(1) as u64)
    }
}

/// `id=host:port`.
pub fn parse_peer(s: &str) -> Result<(String, String), String> {
    let (id, addr) = s
        .trim()
        .split_once('=')
        .ok_or_else(|| format!("peer {s:?} must look like id=host:grpc-port"))?;
    if id.is_empty() || addr.is_empty() || !addr.contains(':') {
        return Err(format!("peer {s:?} must look like id=host:grpc-port"));
    }
    Ok((id.to_string(), addr.to_string()))
}

/// Wall-clock milliseconds (the ring's heartbeats and HA timestamps are compared
/// across machines, like Mimir's).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
