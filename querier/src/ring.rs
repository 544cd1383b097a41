//! Ingesters found on the ring: the querier asks any of `--ingester.ring.peers` (or
//! `--cluster.peers`) for the ring every few seconds and reads every healthy member,
//! beside its `--endpoint`s. With replication factor RF and write quorum RF/2+1, every
//! acknowledged sample is on at least quorum owners, so up to RF − quorum members may
//! fail without the answer losing data: those failures are not errors.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use strata_cluster::node::RingView;
use strata_cluster::ring::InstanceState;
use strata_proto::cluster::cluster_client::ClusterClient;
use strata_proto::cluster::RingRequest;

use crate::fanout::Endpoint;

/// The ring members to read, refreshed in the background.
#[derive(Debug)]
pub struct RingEndpoints {
    peers: Vec<String>,
    compression: crate::fanout::GrpcCompression,
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Members to read now.
    endpoints: Vec<Arc<Endpoint>>,
    /// Members that may fail without losing data.
    tolerated_failures: usize,
    /// Every member seen, by address (connections are kept).
    known: HashMap<String, Arc<Endpoint>>,
}

impl RingEndpoints {
    pub fn new(peers: Vec<String>, compression: crate::fanout::GrpcCompression) -> Arc<Self> {
        Arc::new(RingEndpoints {
            peers,
            compression,
            state: RwLock::new(State::default()),
        })
    }

    /// Members to read and how many may fail.
    pub fn current(&self) -> (Vec<Arc<Endpoint>>, usize) {
        let g = self.state.read().unwrap_or_else(|p| p.into_inner());
        (g.endpoints.clone(), g.tolerated_failures)
    }

    /// Ask the peers, in order, until one answers; keep the last view otherwise.
    /// Ask every peer at once and keep the freshest answer (the one furthest along the
    /// raft log); keep the last view when none answers.
    pub async fn refresh(&self) -> Result<usize, String> {
        let asks = self.peers.iter().map(|addr| async move {
            let ch = strata_kit::grpc_tls::endpoint(addr)
                .map_err(|e| format!("{addr}: {e}"))?
                .connect_timeout(Duration::from_secs(1))
                .connect_lazy();
            let mut c = ClusterClient::new(ch);
            let reply =
                match tokio::time::timeout(Duration::from_secs(3), c.ring(RingRequest {})).await {
                    Ok(Ok(r)) => r.into_inner(),
                    Ok(Err(s)) => return Err(format!("{addr}: {}", s.message())),
                    Err(_) => return Err(format!("{addr}: timed out")),
                };
            serde_json::from_slice::<RingView>(&reply.members).map_err(|e| format!("{addr}: {e}"))
        });
        let mut best: Option<RingView> = None;
        let mut last = String::from("no --ingester.ring.peers");
        for r in futures::future::join_all(asks).await {
            match r {
                Ok(v)
                    if best
                        .as_ref()
                        .is_none_or(|b| v.applied_index > b.applied_index) =>
                {
                    best = Some(v)
                }
                Ok(_) => {}
                Err(e) => last = e,
            }
        }
        match best {
            Some(v) => Ok(self.apply(&v)),
            None => Err(last),
        }
    }

    fn apply(&self, view: &RingView) -> usize {
        let now = strata_cluster::now_ms();
        let mut g = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut endpoints = Vec::new();
        for m in &view.members {
            // JOINING members hold nothing yet; UNHEALTHY ones are skipped like dead ones.
            if m.state == InstanceState::Joining || !m.is_healthy(now, view.heartbeat_timeout_ms) {
                continue;
            }
            let ep = g
                .known
                .entry(m.addr.clone())
                .or_insert_with(|| {
                    Arc::new(Endpoint::new(m.addr.clone()).with_compression(self.compression))
                })
                .clone();
            endpoints.push(ep);
        }
        let rf = view.replication_factor.max(1);
        g.tolerated_failures = rf - (rf / 2 + 1);
        g.endpoints = endpoints;
        g.endpoints.len()
    }

    /// Refresh every `period` until the runtime ends.
    pub fn spawn_refresh(self: &Arc<Self>, period: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(r) = me.upgrade() else { break };
                if let Err(e) = r.refresh().await {
                    tracing::warn!(error = %e, "ring: could not refresh the ingester list; keeping the last one");
                }
                drop(r);
                tokio::time::sleep(period).await;
            }
        });
    }
}
