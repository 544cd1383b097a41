//! One member of the cluster: opens the raft storage, checks that the flags, the data
//! dir and the peers agree, forms the cluster (the seed set initialises raft; others
//! join as learners), registers in the ring, heartbeats, leaves, and serves the
//! `strata.cluster.v1.Cluster` gRPC service.
//!
//! Writes to the KV go to the raft leader: from any node, [`Node::write`] forwards
//! them. Reads are local: every member applies the log, so a node that lost the leader
//! keeps the last ring it knew and keeps serving with it; ring changes need a majority.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use strata_kit::metrics::{Counter, CounterVec, Gauge, GaugeVec, Registry};
use strata_proto::cluster::cluster_server::{Cluster, ClusterServer};
use strata_proto::cluster::{
    HelloReply, HelloRequest, JoinReply, JoinRequest, RaftKind, RaftReply, RaftRequest, RingReply,
    RingRequest, WriteReply, WriteRequest,
};
use tonic::{Request, Response, Status};

use crate::raft::{Network, NodeId, Raft, StateMachine, Store};
use crate::ring::{generate_tokens, node_id_hash, InstanceDesc, InstanceState, Ring};
use crate::state::{ClusterState, Command, Reply};
use crate::{now_ms, Error, Result};

/// How long the leader works on a write forwarded to it (the sender waits 3 s).
const FORWARDED_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node needs to know about itself and the cluster.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    /// gRPC `host:port` peers reach this node at.
    pub addr: String,
    /// HTTP `host:port` (shown on the ring page).
    pub http_addr: String,
    /// The seed set (raft voters), `(id, addr)`. Empty: a cluster of one.
    pub peers: Vec<(String, String)>,
    pub data_dir: PathBuf,
    pub zone: String,
    pub num_tokens: usize,
    pub heartbeat_period: Duration,
    pub heartbeat_timeout_ms: i64,
    pub replication_factor: usize,
    pub zone_awareness: bool,
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq, Debug)]
struct Identity {
    node_id: String,
    cluster_id: String,
    peers: Vec<String>,
}

struct ClusterMetrics {
    term: Gauge,
    is_leader: Gauge,
    leader_changes: Counter,
    last_log_index: Gauge,
    applied_index: Gauge,
    apply_lag: Gauge,
    members: GaugeVec,
    kv_writes: CounterVec,
    heartbeat_failures: Counter,
}

impl ClusterMetrics {
    fn new(r: &Registry) -> Self {
        ClusterMetrics {
            term: r.gauge("strata_raft_term", "Current raft term of this node."),
            is_leader: r.gauge("strata_raft_is_leader", "1 when this node is the raft leader."),
            leader_changes: r.counter(
                "strata_raft_leader_changes_total",
                "Times this node saw the raft leader change.",
            ),
            last_log_index: r.gauge("strata_raft_last_log_index", "Index of the last raft log entry on this node."),
            applied_index: r.gauge(
                "strata_raft_applied_index",
                "Index of the last raft log entry applied to the state machine.",
            ),
            apply_lag: r.gauge(
                "strata_raft_apply_lag_entries",
                "Raft log entries this node has but has not applied yet.",
            ),
            members: r.gauge_vec(
                "strata_ring_members",
                "Ring members by state (UNHEALTHY: missed heartbeats for --ingester.ring.heartbeat-timeout).",
                &["state"],
            ),
            kv_writes: r.counter_vec(
                "strata_cluster_kv_writes_total",
                "Commands written to the replicated KV, by result.",
                &["result"],
            ),
            heartbeat_failures: r.counter(
                "strata_ring_heartbeat_failures_total",
                "Ring heartbeats that could not be written (no raft leader reachable).",
            ),
        }
    }
}

/// One cluster member (see the module docs).
pub struct Node {
    pub config: NodeConfig,
    pub id: NodeId,
    pub raft: Raft,
    store: Store,
    sm: Arc<StateMachine>,
    net: Network,
    cluster_id: String,
    ring_cache: Mutex<(u64, Arc<Ring>)>,
    metrics: ClusterMetrics,
    leaving: AtomicBool,
    /// Registered (so caught up at least to its own registration): only then does this
    /// node answer the ring to queriers — a node just restarted has not yet re-applied
    /// the log and would answer an empty ring.
    registered: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.config.name)
            .field("addr", &self.config.addr)
            .finish()
    }
}

/// The seed set as a sorted `id=addr` list: what every member must agree on.
fn peer_strings(peers: &[(String, String)]) -> Vec<String> {
    let mut v: Vec<String> = peers.iter().map(|(i, a)| format!("{i}={a}")).collect();
    v.sort();
    v.dedup();
    v
}

fn cluster_id_of(config: &NodeConfig) -> String {
    if config.peers.is_empty() {
        return format!("standalone:{}", config.name);
    }
    let joined = peer_strings(&config.peers).join(",");
    format!("{:016x}", node_id_hash(&joined))
}

impl Node {
    /// Check the flags against the data dir, open the raft storage and start raft. The
    /// caller then serves [`Node::service`] on its gRPC port and calls
    /// [`Node::bootstrap`] and [`Node::register`].
    pub async fn open(config: NodeConfig, registry: &Registry) -> Result<Arc<Node>> {
        let mut ids = BTreeMap::new();
        for (name, addr) in &config.peers {
            if let Some(other) = ids.insert(node_id_hash(name), name) {
                if other != name {
                    return Err(Error::Config(format!(
                        "--cluster.peers: ids {other:?} and {name:?} collide; rename one"
                    )));
                }
            }
            let same: Vec<&String> = config
                .peers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, a)| a)
                .collect();
            if same.iter().any(|a| *a != addr) {
                return Err(Error::Config(format!(
                    "--cluster.peers names {name:?} twice with different addresses"
                )));
            }
            if name == &config.name && addr != &config.addr {
                return Err(Error::Config(format!(
                    "--cluster.peers says {name:?} is at {addr}, but this node advertises {} (--cluster.advertise-address / --grpc-address)",
                    config.addr
                )));
            }
        }
        let cluster_id = cluster_id_of(&config);
        let identity = Identity {
            node_id: config.name.clone(),
            cluster_id: cluster_id.clone(),
            peers: peer_strings(&config.peers),
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::io(&config.data_dir, e))?;
        let id_path = config.data_dir.join("identity.json");
        match std::fs::read(&id_path) {
            Ok(b) => {
                let found: Identity = serde_json::from_slice(&b).map_err(|e| Error::Corrupt {
                    path: id_path.clone(),
                    msg: e.to_string(),
                })?;
                if found.node_id != identity.node_id {
                    return Err(Error::Config(format!(
                        "raft data dir {} belongs to node {:?}, not {:?} (--cluster.node-id); use that id or another --cluster.data-dir",
                        config.data_dir.display(),
                        found.node_id,
                        identity.node_id
                    )));
                }
                if found.cluster_id != identity.cluster_id {
                    return Err(Error::Config(format!(
                        "raft data dir {} is from another cluster (its peers: {}; --cluster.peers: {}); point --cluster.data-dir elsewhere or restore the peer list",
                        config.data_dir.display(),
                        if found.peers.is_empty() { "none".to_string() } else { found.peers.join(",") },
                        if identity.peers.is_empty() { "none".to_string() } else { identity.peers.join(",") },
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let b = serde_json::to_vec_pretty(&identity).expect("identity serialises");
                crate::raft::write_atomic(&config.data_dir, "identity.json", &b)
                    .map_err(|e| Error::io(&id_path, e))?;
            }
            Err(e) => return Err(Error::io(&id_path, e)),
        }

        let store = Store::open(&config.data_dir.join("raft"))?;
        let sm = store.sm.clone();
        let raft_config = openraft::Config {
            cluster_name: cluster_id.clone(),
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Raft(e.to_string()))?;
        let net = Network::default();
        let (log_store, state_machine) = openraft::storage::Adaptor::new(store.clone());
        let id = node_id_hash(&config.name);
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            net.clone(),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
        let node = Arc::new(Node {
            id,
            raft,
            store,
            sm,
            net,
            cluster_id,
            ring_cache: Mutex::new((u64::MAX, Arc::new(Ring::default()))),
            metrics: ClusterMetrics::new(registry),
            leaving: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            config,
        });
        node.clone().spawn_metrics();
        Ok(node)
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The gRPC service to add to this node's server.
    pub fn service(self: &Arc<Self>) -> ClusterServer<ClusterService> {
        ClusterServer::new(ClusterService { node: self.clone() })
    }

    fn is_seed(&self) -> bool {
        self.config.peers.is_empty()
            || self
                .config
                .peers
                .iter()
                .any(|(n, _)| n == &self.config.name)
    }

    /// Check the peers that answer, then form the cluster: a seed initialises raft with
    /// the seed set (every seed does the same, which is safe), anyone else asks the
    /// seeds to add it as a learner.
    pub async fn bootstrap(&self, deadline: Duration) -> Result<()> {
        self.check_peers().await?;
        if self.is_seed() {
            let members: BTreeMap<NodeId, BasicNode> = if self.config.peers.is_empty() {
                [(self.id, BasicNode::new(&self.config.addr))].into()
            } else {
                self.config
                    .peers
                    .iter()
                    .map(|(n, a)| (node_id_hash(n), BasicNode::new(a)))
                    .collect()
            };
            match self.raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(cluster = %self.cluster_id, "raft initialised with the seed set")
                }
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                    tracing::info!(cluster = %self.cluster_id, "raft state found; rejoining")
                }
                Err(e) => return Err(Error::Raft(e.to_string())),
            }
            return Ok(());
        }
        // A joiner: ask the seeds until one (through its leader) adds us.
        let start = Instant::now();
        let mut last = String::new();
        loop {
            for (_, addr) in &self.config.peers {
                let Ok(mut c) = self.net.client(addr) else {
                    continue;
                };
                let req = JoinRequest {
                    node_id: self.config.name.clone(),
                    address: self.config.addr.clone(),
                    cluster_id: self.cluster_id.clone(),
                };
                match tokio::time::timeout(Duration::from_secs(5), c.join(req)).await {
                    Ok(Ok(_)) => {
                        tracing::info!(via = %addr, "joined the raft cluster as a learner");
                        return Ok(());
                    }
                    Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition => {
                        return Err(Error::Config(s.message().to_string()))
                    }
                    Ok(Err(s)) => last = format!("{addr}: {}", s.message()),
                    Err(_) => last = format!("{addr}: timed out"),
                }
            }
            if start.elapsed() > deadline {
                return Err(Error::NoLeader(format!(
                    "could not join through any of --cluster.peers: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Ask every peer that answers who it is; refuse to start when the answers and our
    /// flags disagree.
    async fn check_peers(&self) -> Result<()> {
        let mine = peer_strings(&self.config.peers);
        for (name, addr) in &self.config.peers {
            if addr == &self.config.addr {
                continue;
            }
            let Ok(mut c) = self.net.client(addr) else {
                continue;
            };
            let req = HelloRequest {
                node_id: self.config.name.clone(),
                address: self.config.addr.clone(),
                cluster_id: self.cluster_id.clone(),
                peers: mine.clone(),
            };
            let reply = match tokio::time::timeout(Duration::from_secs(2), c.hello(req)).await {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition => {
                    return Err(Error::Config(s.message().to_string()))
                }
                // not up yet: it checks us when it starts
                _ => continue,
            };
            if let Some(e) = hello_mismatch(
                &self.config.name,
                &mine,
                &self.cluster_id,
                name,
                addr,
                &reply.node_id,
                &reply.cluster_id,
                &reply.peers,
            ) {
                return Err(Error::Config(e));
            }
        }
        Ok(())
    }

    /// Put this node in the ring (JOINING, with tokens), then make it ACTIVE. Fails
    /// when another live instance holds the id.
    pub async fn register(&self, deadline: Duration) -> Result<()> {
        let taken = self.sm.read(|s| {
            s.members
                .values()
                .filter(|m| m.id != self.config.name)
                .flat_map(|m| m.tokens.iter().copied())
                .collect()
        });
        let now = now_ms();
        let desc = InstanceDesc {
            id: self.config.name.clone(),
            addr: self.config.addr.clone(),
            http_addr: self.config.http_addr.clone(),
            zone: self.config.zone.clone(),
            state: InstanceState::Joining,
            tokens: generate_tokens(&self.config.name, self.config.num_tokens, &taken),
            heartbeat_ms: now,
            registered_ms: now,
        };
        let cmd = Command::Register {
            desc,
            now_ms: now,
            heartbeat_timeout_ms: self.config.heartbeat_timeout_ms,
        };
        match self.write_within(cmd, deadline).await? {
            Reply::IdInUse { addr, heartbeat_ms } => {
                return Err(Error::Config(format!(
                    "node id {:?} (--cluster.node-id) is already used by a live ingester at {addr} (last heartbeat {} ms ago); give this node another id",
                    self.config.name,
                    now_ms() - heartbeat_ms
                )))
            }
            Reply::Ok => {}
            r => return Err(Error::Raft(format!("unexpected reply to register: {r:?}"))),
        }
        self.heartbeat(Some(InstanceState::Active), deadline)
            .await?;
        self.registered.store(true, Ordering::Release);
        tracing::info!(id = %self.config.name, zone = %self.config.zone, "ring: ACTIVE");
        Ok(())
    }

    async fn heartbeat(&self, state: Option<InstanceState>, deadline: Duration) -> Result<Reply> {
        let cmd = Command::Heartbeat {
            id: self.config.name.clone(),
            addr: self.config.addr.clone(),
            now_ms: now_ms(),
            state,
        };
        self.write_within(cmd, deadline).await
    }

    /// Heartbeat every `--ingester.ring.heartbeat-period` until `stop` resolves;
    /// re-register if the ring forgot us.
    pub fn spawn_heartbeats(
        self: &Arc<Self>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let node = self.clone();
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(node.config.heartbeat_period) => {}
                }
                if node.leaving.load(Ordering::Acquire) {
                    break;
                }
                match node
                    .heartbeat(
                        None,
                        node.config.heartbeat_period.max(Duration::from_secs(2)),
                    )
                    .await
                {
                    Ok(Reply::NotMember) => {
                        tracing::warn!("ring: this node was removed; registering again");
                        if let Err(e) = node.register(Duration::from_secs(10)).await {
                            tracing::error!(error = %e, "ring: could not register again");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        node.metrics.heartbeat_failures.inc();
                        tracing::warn!(error = %e, "ring: heartbeat failed; serving with the last ring known");
                    }
                }
                node.update_member_metrics();
            }
        });
    }

    /// Leaving, step one: LEAVING in the ring (writes move to the other owners).
    pub async fn start_leaving(&self) -> Result<()> {
        self.leaving.store(true, Ordering::Release);
        self.heartbeat(Some(InstanceState::Leaving), Duration::from_secs(10))
            .await?;
        tracing::info!("ring: LEAVING");
        Ok(())
    }

    /// Leaving, step two (after the head is flushed): out of the ring.
    pub async fn finish_leaving(&self) -> Result<()> {
        self.write_within(
            Command::Remove {
                id: self.config.name.clone(),
            },
            Duration::from_secs(10),
        )
        .await?;
        tracing::info!("ring: left");
        Ok(())
    }

    /// Stop raft (after leaving, or on shutdown).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// Apply `cmd` through the raft leader, waiting up to 5 s for one.
    pub async fn write(&self, cmd: Command) -> Result<Reply> {
        self.write_within(cmd, Duration::from_secs(5)).await
    }

    pub async fn write_within(&self, cmd: Command, deadline: Duration) -> Result<Reply> {
        let start = Instant::now();
        let mut last = String::from("no leader yet");
        loop {
            // On a leader that lost its quorum (its peers stopping at the same time as
            // it) a write is never committed and client_write never returns: bound it.
            let left = deadline
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(100));
            let written =
                match tokio::time::timeout(left, self.raft.client_write(cmd.clone())).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.metrics.kv_writes.with(&["failed"]).inc();
                        return Err(Error::NoLeader(format!(
                            "the write was not committed within {deadline:?} (no quorum?)"
                        )));
                    }
                };
            match written {
                Ok(r) => {
                    self.metrics.kv_writes.with(&["ok"]).inc();
                    return Ok(r.data);
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    let leader_addr = f.leader_node.map(|n| n.addr);
                    let targets: Vec<String> = match leader_addr {
                        Some(a) => vec![a],
                        // not told of a leader yet (a joiner): any seed forwards for us
                        None if !self.is_seed() => {
                            self.config.peers.iter().map(|(_, a)| a.clone()).collect()
                        }
                        None => vec![],
                    };
                    for addr in targets {
                        match self.forward_write(&addr, &cmd).await {
                            Ok(r) => {
                                self.metrics.kv_writes.with(&["forwarded"]).inc();
                                return Ok(r);
                            }
                            Err(e) => last = e,
                        }
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() >= deadline {
                self.metrics.kv_writes.with(&["failed"]).inc();
                return Err(Error::NoLeader(last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn forward_write(&self, addr: &str, cmd: &Command) -> std::result::Result<Reply, String> {
        let mut c = self.net.client(addr).map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(cmd).map_err(|e| e.to_string())?;
        let call = c.write(WriteRequest {
            command: body.into(),
        });
        match tokio::time::timeout(Duration::from_secs(3), call).await {
            Ok(Ok(r)) => {
                serde_json::from_slice(&r.into_inner().response).map_err(|e| e.to_string())
            }
            Ok(Err(s)) => Err(format!("{addr}: {}", s.message())),
            Err(_) => Err(format!("{addr}: timed out")),
        }
    }

    /// The ring as this node knows it.
    pub fn ring(&self) -> Arc<Ring> {
        let v = self.sm.version();
        let mut g = self.ring_cache.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 != v {
            let members: Vec<InstanceDesc> =
                self.sm.read(|s| s.members.values().cloned().collect());
            *g = (v, Arc::new(Ring::new(members)));
        }
        g.1.clone()
    }

    /// Read the replicated state (as applied on this node).
    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        self.sm.read(f)
    }

    /// Whether a member is healthy now.
    pub fn is_healthy(&self, m: &InstanceDesc) -> bool {
        m.is_healthy(now_ms(), self.config.heartbeat_timeout_ms)
    }

    fn update_member_metrics(&self) {
        let now = now_ms();
        let mut counts: BTreeMap<&str, f64> = [
            ("ACTIVE", 0.0),
            ("JOINING", 0.0),
            ("LEAVING", 0.0),
            ("UNHEALTHY", 0.0),
        ]
        .into();
        self.sm.read(|s| {
            for m in s.members.values() {
                let k = if !m.is_healthy(now, self.config.heartbeat_timeout_ms) {
                    "UNHEALTHY"
                } else {
                    match m.state {
                        InstanceState::Active => "ACTIVE",
                        InstanceState::Joining => "JOINING",
                        InstanceState::Leaving => "LEAVING",
                    }
                };
                *counts.get_mut(k).expect("known state") += 1.0;
            }
        });
        for (k, v) in counts {
            self.metrics.members.with(&[k]).set(v);
        }
    }

    fn spawn_metrics(self: Arc<Self>) {
        let mut rx = self.raft.metrics();
        let weak = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            let mut leader = None;
            loop {
                {
                    let Some(node) = weak.upgrade() else { break };
                    let m = rx.borrow_and_update().clone();
                    node.metrics.term.set(m.current_term as f64);
                    node.metrics
                        .is_leader
                        .set(if m.state == ServerState::Leader {
                            1.0
                        } else {
                            0.0
                        });
                    if m.current_leader != leader {
                        if m.current_leader.is_some() {
                            node.metrics.leader_changes.inc();
                        }
                        leader = m.current_leader;
                    }
                    let last = m.last_log_index.unwrap_or(0);
                    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
                    node.metrics.last_log_index.set(last as f64);
                    node.metrics.applied_index.set(applied as f64);
                    node.metrics
                        .apply_lag
                        .set(last.saturating_sub(applied) as f64);
                    node.update_member_metrics();
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    /// `GET /cluster/raft`: leader, term, commit index, members.
    pub fn raft_status(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let names: BTreeMap<String, String> = self.sm.read(|s| {
            s.members
                .values()
                .map(|d| (d.addr.clone(), d.id.clone()))
                .collect()
        });
        let seed_names: BTreeMap<String, String> = self
            .config
            .peers
            .iter()
            .map(|(n, a)| (a.clone(), n.clone()))
            .collect();
        let name_of = |addr: &str| {
            names
                .get(addr)
                .or_else(|| seed_names.get(addr))
                .cloned()
                .unwrap_or_default()
        };
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut members = Vec::new();
        for (id, node) in membership.nodes() {
            members.push(serde_json::json!({
                "id": name_of(&node.addr),
                "raftId": id.to_string(),
                "address": node.addr,
                "voter": voters.contains(id),
                "leader": m.current_leader == Some(*id),
            }));
        }
        let leader = m
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| (l, n.addr.clone())));
        let committed = self.store_committed();
        serde_json::json!({
            "nodeId": self.config.name,
            "raftId": self.id.to_string(),
            "clusterId": self.cluster_id,
            "state": format!("{:?}", m.state),
            "term": m.current_term,
            "leader": leader.map(|(id, addr)| serde_json::json!({"id": name_of(&addr), "raftId": id.to_string(), "address": addr})),
            "commitIndex": committed,
            "lastLogIndex": m.last_log_index,
            "appliedIndex": m.last_applied.map(|l| l.index),
            "snapshotIndex": m.snapshot.map(|l| l.index),
            "members": members,
        })
    }

    fn store_committed(&self) -> Option<u64> {
        self.store.committed().map(|l| l.index)
    }
}

#[allow(clippy::too_many_arguments)]
fn hello_mismatch(
    my_name: &str,
    my_peers: &[String],
    my_cluster: &str,
    expected_name: &str,
    addr: &str,
    their_name: &str,
    their_cluster: &str,
    their_peers: &[String],
) -> Option<String> {
    if their_name == my_name {
        return Some(format!(
            "node id {my_name:?} (--cluster.node-id) is already used by the node at {addr}; every node needs its own id"
        ));
    }
    if !expected_name.is_empty() && their_name != expected_name {
        return Some(format!(
            "--cluster.peers says {addr} is {expected_name:?}, but the node there is {their_name:?}"
        ));
    }
    if their_cluster != my_cluster {
        return Some(format!(
            "--cluster.peers disagree: this node has [{}], {their_name:?} at {addr} has [{}]; give every node the same seed list",
            my_peers.join(","),
            their_peers.join(",")
        ));
    }
    None
}

/// What the `Ring` RPC answers (JSON): enough for a querier to pick the members to
/// read and how many of them may fail without losing data.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RingView {
    pub replication_factor: usize,
    pub heartbeat_timeout_ms: i64,
    /// How far this member has applied the raft log: of several answers, the
    /// furthest is the freshest ring.
    #[serde(default)]
    pub applied_index: u64,
    pub members: Vec<InstanceDesc>,
}

/// The `strata.cluster.v1.Cluster` gRPC service.
pub struct ClusterService {
    node: Arc<Node>,
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(b).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn raft(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        let raft = &self.node.raft;
        let payload = match RaftKind::try_from(req.kind).unwrap_or(RaftKind::Unspecified) {
            RaftKind::AppendEntries => {
                to_json(&raft.append_entries(from_json(&req.payload)?).await)?
            }
            RaftKind::Vote => to_json(&raft.vote(from_json(&req.payload)?).await)?,
            RaftKind::InstallSnapshot => {
                to_json(&raft.install_snapshot(from_json(&req.payload)?).await)?
            }
            RaftKind::Unspecified => return Err(Status::invalid_argument("unknown raft RPC kind")),
        };
        Ok(Response::new(RaftReply {
            payload: payload.into(),
        }))
    }

    async fn write(&self, req: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let cmd: Command = from_json(&req.into_inner().command)?;
        // Only the leader answers: a forwarded write is never forwarded again. Bounded
        // like a local write: without a quorum it would never be committed.
        let written =
            tokio::time::timeout(FORWARDED_WRITE_TIMEOUT, self.node.raft.client_write(cmd))
                .await
                .map_err(|_| {
                    Status::unavailable("the write was not committed in time (no quorum?)")
                })?;
        match written {
            Ok(r) => Ok(Response::new(WriteReply {
                response: to_json(&r.data)?.into(),
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                if let Some(n) = f.leader_node {
                    // the sender retries there
                    Err(Status::unavailable(format!(
                        "not the raft leader; the leader is at {}",
                        n.addr
                    )))
                } else {
                    Err(Status::unavailable("not the raft leader; no leader known"))
                }
            }
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let req = req.into_inner();
        let n = &self.node;
        let mine = peer_strings(&n.config.peers);
        let expected = n
            .config
            .peers
            .iter()
            .find(|(_, a)| a == &req.address)
            .map(|(name, _)| name.as_str())
            .unwrap_or("");
        if let Some(e) = hello_mismatch(
            &n.config.name,
            &mine,
            &n.cluster_id,
            expected,
            &req.address,
            &req.node_id,
            &req.cluster_id,
            &req.peers,
        ) {
            tracing::error!(peer = %req.address, "{e}");
            // The caller fails to start, with the message written from its side.
            let theirs = hello_mismatch(
                &req.node_id,
                &req.peers,
                &req.cluster_id,
                "",
                &n.config.addr,
                &n.config.name,
                &n.cluster_id,
                &mine,
            );
            return Err(Status::failed_precondition(theirs.unwrap_or(e)));
        }
        Ok(Response::new(HelloReply {
            node_id: n.config.name.clone(),
            cluster_id: n.cluster_id.clone(),
            peers: mine,
        }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let req = req.into_inner();
        let n = &self.node;
        if req.cluster_id != n.cluster_id {
            return Err(Status::failed_precondition(format!(
                "{:?} asked to join with another seed list than this cluster's ({}); give it --cluster.peers={}",
                req.node_id,
                peer_strings(&n.config.peers).join(","),
                peer_strings(&n.config.peers).join(",")
            )));
        }
        // An id held by a live member elsewhere must not take over its raft slot.
        let holder = n.read(|s| s.members.get(&req.node_id).cloned());
        if let Some(m) = holder {
            if m.addr != req.address && n.is_healthy(&m) {
                return Err(Status::failed_precondition(format!(
                    "node id {:?} (--cluster.node-id) is already used by a live ingester at {}; give this node another id",
                    req.node_id, m.addr
                )));
            }
        }
        let id = node_id_hash(&req.node_id);
        match n
            .raft
            .add_learner(id, BasicNode::new(&req.address), false)
            .await
        {
            Ok(_) => Ok(Response::new(JoinReply {})),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let Some(leader) = f.leader_node else {
                    return Err(Status::unavailable("no raft leader known; retry"));
                };
                let mut c = n
                    .net
                    .client(&leader.addr)
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                // one hop: the leader adds it
                c.join(req).await
            }
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn ring(&self, _req: Request<RingRequest>) -> Result<Response<RingReply>, Status> {
        if !self.node.registered.load(Ordering::Acquire) {
            return Err(Status::unavailable(
                "this ingester has not joined the ring yet; ask another member",
            ));
        }
        let members: Vec<InstanceDesc> = self.node.read(|s| s.members.values().cloned().collect());
        let applied_index = self
            .node
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        let view = RingView {
            replication_factor: self.node.config.replication_factor,
            heartbeat_timeout_ms: self.node.config.heartbeat_timeout_ms,
            applied_index,
            members,
        };
        Ok(Response::new(RingReply {
            members: to_json(&view)?.into(),
        }))
    }
}
