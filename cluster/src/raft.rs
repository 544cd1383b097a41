//! The replicated KV on openraft: its log, vote and snapshots on disk under
//! `--cluster.data-dir`, its RPCs over our gRPC port (`strata.cluster.v1.Cluster`).
//!
//! On disk:
//! * `log`: newline-delimited JSON, one entry (or a purge marker) a line, fsynced
//!   before raft is told an append is durable; a torn last line (a crash mid-write, so
//!   never acknowledged) is dropped on load. Truncation and purging rewrite the file
//!   (tmp + rename): they are rare and the log is small (a snapshot every few hundred
//!   entries).
//! * `vote.json`, `committed.json`, `snapshot.json`: written tmp + rename + fsync.
//!
//! The state machine lives in memory and is rebuilt on start from the snapshot plus
//! the log up to the saved commit index.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{LogState, RaftLogReader, RaftSnapshotBuilder, RaftStorage, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strata_proto::cluster::cluster_client::ClusterClient;
use strata_proto::cluster::{RaftKind, RaftRequest};
use tonic::transport::Channel;

use crate::state::{ClusterState, Command, Reply};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Strata's raft: commands on [`ClusterState`], nodes addressed by gRPC address.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// The state machine, shared with readers (the ring, the HA tracker).
#[derive(Debug, Default)]
pub struct StateMachine {
    pub(crate) inner: RwLock<SmInner>,
    /// Bumped on every apply; readers cache derived views (the ring) by it.
    pub(crate) version: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct SmInner {
    pub state: ClusterState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

impl StateMachine {
    /// Read the state.
    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(|p| p.into_inner()).state)
    }

    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[derive(Serialize, Deserialize)]
enum LogLine {
    Entry(Entry<TypeConfig>),
    Purged(LogId<NodeId>),
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

struct LogInner {
    dir: PathBuf,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    file: File,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    snapshot: Option<StoredSnapshot>,
    snapshot_seq: u64,
}

/// The raft storage: log, vote, snapshots and the state machine.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<LogInner>>,
    pub(crate) sm: Arc<StateMachine>,
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::new(&e)).into()
}

/// Write `bytes` to `dir/name` atomically (tmp, fsync, rename, fsync dir).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, crate::Error> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| crate::Error::Corrupt {
                path: path.to_path_buf(),
                msg: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::Error::io(path, e)),
    }
}

impl Store {
    /// Open (or create) the raft storage in `dir` and rebuild the state machine from
    /// the snapshot.
    pub fn open(dir: &Path) -> Result<Store, crate::Error> {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
        let vote = read_json(&dir.join("vote.json"))?;
        let committed = read_json(&dir.join("committed.json"))?;
        let snapshot: Option<StoredSnapshot> = read_json(&dir.join("snapshot.json"))?;
        let sm = Arc::new(StateMachine::default());
        if let Some(s) = &snapshot {
            let state: ClusterState =
                serde_json::from_slice(&s.data).map_err(|e| crate::Error::Corrupt {
                    path: dir.join("snapshot.json"),
                    msg: e.to_string(),
                })?;
            let mut g = sm.inner.write().unwrap_or_else(|p| p.into_inner());
            g.state = state;
            g.last_applied = s.meta.last_log_id;
            g.membership = s.meta.last_membership.clone();
        }
        let log_path = dir.join("log");
        let mut log = BTreeMap::new();
        let mut last_purged = None;
        if let Ok(f) = File::open(&log_path) {
            let lines: Vec<String> = BufReader::new(f)
                .lines()
                .collect::<Result<_, _>>()
                .map_err(|e| crate::Error::io(&log_path, e))?;
            let n = lines.len();
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_str::<LogLine>(line) {
                    Ok(LogLine::Entry(e)) => {
                        log.insert(e.log_id.index, e);
                    }
                    Ok(LogLine::Purged(id)) => {
                        log.retain(|&k, _| k > id.index);
                        last_purged = Some(id);
                    }
                    // a torn last line was never acknowledged
                    Err(_) if i + 1 == n => {
                        tracing::warn!(path = %log_path.display(), "raft log: dropped a torn last line");
                    }
                    Err(e) => {
                        return Err(crate::Error::Corrupt {
                            path: log_path,
                            msg: format!("line {}: {e}", i + 1),
                        })
                    }
                }
            }
        }
        let mut inner = LogInner {
            dir: dir.to_path_buf(),
            log,
            file: OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| crate::Error::io(&log_path, e))?,
            last_purged,
            vote,
            committed,
            snapshot,
            snapshot_seq: 0,
        };
        // Rewrite once so a torn tail is gone before new lines are appended after it.
        inner
            .rewrite()
            .map_err(|e| crate::Error::io(&log_path, e))?;
        Ok(Store {
            inner: Arc::new(Mutex::new(inner)),
            sm,
        })
    }

    /// The last commit index saved by raft.
    pub fn committed(&self) -> Option<LogId<NodeId>> {
        self.lock().committed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LogInner {
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut buf = Vec::new();
        if let Some(p) = &self.last_purged {
            serde_json::to_writer(&mut buf, &LogLine::Purged(*p))?;
            buf.push(b'\n');
        }
        for e in self.log.values() {
            serde_json::to_writer(&mut buf, &LogLine::Entry(e.clone()))?;
            buf.push(b'\n');
        }
        write_atomic(&self.dir, "log", &buf)?;
        self.file = OpenOptions::new().append(true).open(self.dir.join("log"))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for Store {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let g = self.lock();
        Ok(g.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Store {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, last_applied, membership) = {
            let g = self.sm.inner.read().unwrap_or_else(|p| p.into_inner());
            (
                serde_json::to_vec(&g.state).map_err(io_read)?,
                g.last_applied,
                g.membership.clone(),
            )
        };
        let mut inner = self.lock();
        inner.snapshot_seq += 1;
        let snapshot_id = match &last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshot_seq),
            None => format!("--{}", inner.snapshot_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(io_write)?;
        write_atomic(&inner.dir, "snapshot.json", &bytes).map_err(io_write)?;
        inner.snapshot = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[allow(deprecated)]
impl RaftStorage<TypeConfig> for Store {
    type LogReader = Store;
    type SnapshotBuilder = Store;

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        let b = serde_json::to_vec(vote).map_err(io_write)?;
        write_atomic(&g.dir, "vote.json", &b).map_err(io_write)?;
        g.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        let b = serde_json::to_vec(&committed).map_err(io_write)?;
        write_atomic(&g.dir, "committed.json", &b).map_err(io_write)?;
        g.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
    }

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let g = self.lock();
        let last = g
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(g.last_purged);
        Ok(LogState {
            last_purged_log_id: g.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn append_to_log<I>(&mut self, entries: I) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut g = self.lock();
        let mut buf = Vec::new();
        let mut new = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, &LogLine::Entry(e.clone())).map_err(io_write)?;
            buf.push(b'\n');
            new.push(e);
        }
        g.file.write_all(&buf).map_err(io_write)?;
        g.file.sync_data().map_err(io_write)?;
        for e in new {
            g.log.insert(e.log_id.index, e);
        }
        Ok(())
    }

    async fn delete_conflict_logs_since(
        &mut self,
        log_id: LogId<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        g.log.retain(|&k, _| k < log_id.index);
        g.rewrite().map_err(io_write)
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        g.log.retain(|&k, _| k > log_id.index);
        g.last_purged = Some(log_id);
        g.rewrite().map_err(io_write)
    }

    async fn last_applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let g = self.sm.inner.read().unwrap_or_else(|p| p.into_inner());
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<TypeConfig>],
    ) -> Result<Vec<Reply>, StorageError<NodeId>> {
        let mut out = Vec::with_capacity(entries.len());
        {
            let mut g = self.sm.inner.write().unwrap_or_else(|p| p.into_inner());
            for e in entries {
                g.last_applied = Some(e.log_id);
                match &e.payload {
                    EntryPayload::Blank => out.push(Reply::Ok),
                    EntryPayload::Normal(cmd) => {
                        let r = g.state.apply(cmd);
                        out.push(r);
                    }
                    EntryPayload::Membership(m) => {
                        g.membership = StoredMembership::new(Some(e.log_id), m.clone());
                        out.push(Reply::Ok);
                    }
                }
            }
        }
        self.sm.bump();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&data).map_err(io_read)?;
        {
            let mut g = self.sm.inner.write().unwrap_or_else(|p| p.into_inner());
            g.state = state;
            g.last_applied = meta.last_log_id;
            g.membership = meta.last_membership.clone();
        }
        self.sm.bump();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let bytes = serde_json::to_vec(&stored).map_err(io_write)?;
        let mut inner = self.lock();
        write_atomic(&inner.dir, "snapshot.json", &bytes).map_err(io_write)?;
        inner.snapshot = Some(stored);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let g = self.lock();
        Ok(g.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

/// Connections to peers, one lazily connected channel per address.
#[derive(Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<BTreeMap<String, Channel>>>,
}

impl Network {
    /// A client for `addr` (`host:port`), sharing one HTTP/2 connection per peer.
    pub fn client(
        &self,
        addr: &str,
    ) -> Result<ClusterClient<Channel>, strata_kit::grpc_tls::GrpcTlsError> {
        let mut g = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get(addr) {
            return Ok(ClusterClient::new(c.clone()));
        }
        let ch = strata_kit::grpc_tls::endpoint(addr)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        g.insert(addr.to_string(), ch.clone());
        Ok(ClusterClient::new(ch))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConn {
        PeerConn {
            target,
            node: node.clone(),
            net: self.clone(),
        }
    }
}

pub struct PeerConn {
    target: NodeId,
    node: BasicNode,
    net: Network,
}

type RpcErr<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl PeerConn {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RaftKind,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .net
            .client(&self.node.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let call = client.raft(RaftRequest {
            kind: kind as i32,
            payload: payload.into(),
        });
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "raft RPC timed out");
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(status)) => return Err(RPCError::Unreachable(Unreachable::new(&status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        let res: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(RaftKind::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(RaftKind::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(RaftKind::Vote, &rpc, option.hard_ttl()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_vote_and_snapshot_survive_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let lid = |term, index| LogId::new(openraft::CommittedLeaderId::new(term, 1), index);
        let entry = |term, index, cmd: Option<Command>| Entry::<TypeConfig> {
            log_id: lid(term, index),
            payload: match cmd {
                Some(c) => EntryPayload::Normal(c),
                None => EntryPayload::Blank,
            },
        };
        let rm = |id: &str| Some(Command::Remove { id: id.into() });
        s.append_to_log(vec![
            entry(1, 1, None),
            entry(1, 2, rm("a")),
            entry(1, 3, rm("b")),
        ])
        .await
        .unwrap();
        s.save_vote(&Vote::new(1, 7)).await.unwrap();
        s.delete_conflict_logs_since(lid(1, 3)).await.unwrap();
        s.append_to_log(vec![entry(2, 3, rm("c"))]).await.unwrap();
        s.purge_logs_upto(lid(1, 1)).await.unwrap();
        drop(s);
        // a crash mid-append leaves half a line
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("log"))
            .unwrap();
        f.write_all(b"{\"Entry\":{\"log_id\"").unwrap();
        drop(f);

        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(1, 7)));
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(1, 1)));
        assert_eq!(st.last_log_id, Some(lid(2, 3)));
        let got = s.try_get_log_entries(0..10).await.unwrap();
        let idx: Vec<(u64, u64)> = got
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect();
        assert_eq!(idx, vec![(1, 2), (2, 3)]);
        // appends after a torn tail land on a line of their own
        s.append_to_log(vec![entry(2, 4, None)]).await.unwrap();
        drop(s);
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.try_get_log_entries(4..5).await.unwrap().len(), 1);

        // snapshot of the state machine, restored on open
        s.apply_to_state_machine(&[entry(2, 3, rm("x"))])
            .await
            .unwrap();
        let snap = s.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(lid(2, 3)));
        drop(s);
        let mut s = Store::open(dir.path()).unwrap();
        let (applied, _) = s.last_applied_state().await.unwrap();
        assert_eq!(applied, Some(lid(2, 3)));
        assert!(s.get_current_snapshot().await.unwrap().is_some());
    }
}
