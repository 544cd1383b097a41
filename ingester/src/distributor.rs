//! The write path of a cluster: any ingester that receives a remote write acts as the
//! distributor (as Thanos Receive's router does). It hashes each series onto the ring,
//! sends each owner its part (in process for itself, over gRPC for the others) and
//! answers 2xx only when, for every series, a quorum of its owners (2 of 3) has stored
//! it in their WAL.
//!
//! An owner's 4xx is the client's error (its valid samples were still stored) and is
//! what the client gets; 5xx, timeouts and unreachable or UNHEALTHY owners count
//! against quorum; without quorum the answer is 5xx, which Prometheus retries. A retry
//! after a partial success is harmless: owners that already have a sample answer it as
//! a duplicate of the same value (no error), and the querier collapses the replicas'
//! identical samples into one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use strata_cluster::ring::shard_key;
use strata_cluster::Node;
use strata_kit::metrics::{Counter, CounterVec, HistogramVec, Registry};
use strata_proto::ingester::ingester_client::IngesterClient;
use strata_proto::ingester::ingester_server::{Ingester as IngesterRpc, IngesterServer};
use strata_proto::ingester::{PushReply, PushRequest};
use strata_proto::WriteRequestRef;
use tonic::transport::Channel;
use tonic::{Request, Response as GrpcResponse, Status};

use crate::push::{ingest_ref, text};
use crate::Ingester;

#[derive(Clone)]
struct DistributorMetrics {
    forwarded_samples: Counter,
    forwarded_requests: CounterVec,
    quorum_failures: Counter,
    peer_latency: HistogramVec,
    replicated_samples: Counter,
}

impl DistributorMetrics {
    fn new(r: &Registry) -> Self {
        DistributorMetrics {
            forwarded_samples: r.counter(
                "strata_distributor_forwarded_samples_total",
                "Samples sent to other ingesters that own their series.",
            ),
            forwarded_requests: r.counter_vec(
                "strata_distributor_forwarded_requests_total",
                "Requests forwarded to owners, by result (ok, client_error, failed, unhealthy).",
                &["result"],
            ),
            quorum_failures: r.counter(
                "strata_distributor_quorum_failures_total",
                "Remote-write requests answered 5xx because some series reached no quorum of owners.",
            ),
            peer_latency: r.histogram_vec(
                "strata_distributor_forward_duration_seconds",
                "Time for an owner to answer a forwarded write, by peer.",
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                &["peer"],
            ),
            replicated_samples: r.counter(
                "strata_distributor_replicated_samples_total",
                "Sample copies stored by owners (local and remote) for acknowledged requests.",
            ),
        }
    }
}

/// Splits requests by owner and collects a quorum (see the module docs).
pub struct Distributor {
    pub node: Arc<Node>,
    pub replication_factor: usize,
    pub zone_awareness: bool,
    pub timeout: Duration,
    clients: Mutex<HashMap<String, IngesterClient<Channel>>>,
    metrics: DistributorMetrics,
}

impl std::fmt::Debug for Distributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributor")
            .field("replication_factor", &self.replication_factor)
            .finish()
    }
}

/// What one owner said about its part.
#[derive(Debug)]
enum OwnerResult {
    /// Stored (2xx) or refused as the client's fault (4xx): counts toward quorum.
    Answered {
        status: u16,
        message: String,
        accepted: u64,
    },
    /// 5xx, timeout, unreachable, unhealthy: counts against quorum.
    Failed(String),
}

impl Distributor {
    pub fn new(
        node: Arc<Node>,
        replication_factor: usize,
        zone_awareness: bool,
        timeout: Duration,
        registry: &Registry,
    ) -> Self {
        Distributor {
            node,
            replication_factor: replication_factor.max(1),
            zone_awareness,
            timeout,
            clients: Mutex::new(HashMap::new()),
            metrics: DistributorMetrics::new(registry),
        }
    }

    fn quorum(&self) -> usize {
        self.replication_factor / 2 + 1
    }

    fn client(&self, addr: &str) -> Result<IngesterClient<Channel>, String> {
        let mut g = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get(addr) {
            return Ok(c.clone());
        }
        let ch = strata_kit::grpc_tls::endpoint(addr)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            // a forwarded request is often megabytes: HTTP/2's 64 KiB default windows
            // would stall it on flow-control round trips
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            .connect_lazy();
        let c = IngesterClient::new(ch)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20);
        g.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Store `req` on the owners of its series and answer the client. Runs on a
    /// blocking thread (the local part is appended here while the remote parts fly).
    pub fn distribute(
        &self,
        ing: &Ingester,
        tenant: &str,
        req: &WriteRequestRef<'_>,
        extras: &crate::rw_extras::Extras<'_>,
    ) -> Response {
        let ring = self.node.ring();
        let me = ring.index_of(&self.node.config.name);
        let rf = self.replication_factor;
        let quorum = self.quorum();
        // One owner for everything (a cluster of one): no hashing, no copies.
        if ring.instances().len() == 1 && rf == 1 && me == Some(0) {
            return match ingest_ref(ing, tenant, req) {
                Ok(o) => {
                    let written = crate::exemplars::ingest(ing, tenant, req, extras, None);
                    let mut resp = o.into_response();
                    resp.extensions_mut()
                        .insert(crate::exemplars::ExemplarsWritten(written));
                    resp
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("push failed: {e}"),
                ),
            };
        }
        if ring.is_empty() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the ring has no ingesters yet (still forming); retry",
            );
        }
        // owners[i * rf .. i * rf + n_i]: the ring indexes owning series i
        let n = req.len();
        let mut owners: Vec<u32> = Vec::with_capacity(n * rf);
        let mut counts: Vec<u8> = Vec::with_capacity(n);
        // by ring index: a Vec, not a map (this runs for every series)
        let mut per_owner: Vec<Vec<usize>> = vec![Vec::new(); ring.instances().len()];
        let mut buf = Vec::with_capacity(rf);
        for (i, (pairs, _)) in req.iter().enumerate() {
            ring.replicas(shard_key(tenant, pairs), rf, self.zone_awareness, &mut buf);
            if buf.len() < quorum {
                self.metrics.quorum_failures.inc();
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "at least {quorum} live replicas required, could only find {} ACTIVE ingesters in the ring (--ingester.ring.replication-factor={rf})",
                        buf.len()
                    ),
                );
            }
            counts.push(buf.len() as u8);
            for &o in &buf {
                owners.push(o as u32);
                per_owner[o].push(i);
            }
            owners.extend(std::iter::repeat_n(u32::MAX, rf - buf.len()));
        }

        // Remote parts first, so they travel while the local part is appended.
        let handle = tokio::runtime::Handle::current();
        let now = strata_cluster::now_ms();
        let mut encoded: Option<(Vec<u8>, Vec<usize>, Vec<usize>)> = None;
        let mut pending = Vec::new();
        let mut results: Vec<Option<OwnerResult>> = (0..per_owner.len()).map(|_| None).collect();
        for (owner, series) in per_owner.iter().enumerate() {
            if series.is_empty() {
                continue;
            }
            if Some(owner) == me {
                continue;
            }
            let inst = &ring.instances()[owner];
            if !inst.is_healthy(now, self.node.config.heartbeat_timeout_ms) {
                self.metrics.forwarded_requests.with(&["unhealthy"]).inc();
                results[owner] = Some(OwnerResult::Failed(format!(
                    "{} is UNHEALTHY (no heartbeat)",
                    inst.id
                )));
                continue;
            }
            // Encode every series once; each owner's body is a concatenation of slices.
            let (all, offsets, sample_counts) = encoded.get_or_insert_with(|| {
                let mut all = Vec::new();
                let mut offsets = Vec::with_capacity(n + 1);
                let mut sample_counts = Vec::with_capacity(n);
                for (i, (_, samples)) in req.iter().enumerate() {
                    offsets.push(all.len());
                    sample_counts.push(samples.len());
                    req.encode_series(i, &mut all);
                }
                offsets.push(all.len());
                (all, offsets, sample_counts)
            });
            let mut body =
                Vec::with_capacity(series.iter().map(|&i| offsets[i + 1] - offsets[i]).sum());
            let mut samples = 0usize;
            for &i in series {
                body.extend_from_slice(&all[offsets[i]..offsets[i + 1]]);
                samples += sample_counts[i];
            }
            crate::exemplars::encode_forwarded(&mut body, req, extras, series);
            self.metrics.forwarded_samples.inc_by(samples as u64);
            let client = self.client(&inst.addr);
            let peer = inst.id.clone();
            let timeout = self.timeout;
            let latency = self.metrics.peer_latency.with(&[&peer]);
            let tenant = tenant.to_string();
            pending.push((
                owner,
                handle.spawn(async move {
                    let mut client = match client {
                        Ok(c) => c,
                        Err(e) => return OwnerResult::Failed(format!("{peer}: {e}")),
                    };
                    let start = Instant::now();
                    let call = client.push(PushRequest {
                        tenant,
                        write_request: body.into(),
                    });
                    let r = tokio::time::timeout(timeout, call).await;
                    latency.observe_since(start);
                    match r {
                        Err(_) => OwnerResult::Failed(format!(
                            "{peer}: no answer within {timeout:?} (--distributor.remote-timeout)"
                        )),
                        Ok(Err(s)) => OwnerResult::Failed(format!("{peer}: {}", s.message())),
                        Ok(Ok(r)) => {
                            let r = r.into_inner();
                            if r.status >= 500 {
                                OwnerResult::Failed(format!("{peer}: {}", r.message.trim_end()))
                            } else {
                                OwnerResult::Answered {
                                    status: r.status as u16,
                                    message: r.message,
                                    accepted: r.accepted_samples,
                                }
                            }
                        }
                    }
                }),
            ));
        }
        if let Some(me) = me {
            if let Some(series) = per_owner.get(me).filter(|s| !s.is_empty()) {
                let part = req.subset(series);
                let r = match ingest_ref(ing, tenant, &part) {
                    Ok(o) => {
                        crate::exemplars::ingest(ing, tenant, req, extras, Some(series));
                        let accepted = o.accepted_samples as u64;
                        let (status, message) = o.status_message();
                        if status.is_server_error() {
                            OwnerResult::Failed(message)
                        } else {
                            OwnerResult::Answered {
                                status: status.as_u16(),
                                message,
                                accepted,
                            }
                        }
                    }
                    Err(e) => OwnerResult::Failed(format!("{}: {e}", self.node.config.name)),
                };
                results[me] = Some(r);
            }
        }
        for (owner, h) in pending {
            let r = handle
                .block_on(h)
                .unwrap_or_else(|e| OwnerResult::Failed(format!("forward task failed: {e}")));
            let label = match &r {
                OwnerResult::Answered { status, .. } if *status < 300 => "ok",
                OwnerResult::Answered { .. } => "client_error",
                OwnerResult::Failed(_) => "failed",
            };
            self.metrics.forwarded_requests.with(&[label]).inc();
            results[owner] = Some(r);
        }

        // Quorum per series.
        let mut failed_series = 0usize;
        for i in 0..n {
            let ok = owners[i * rf..i * rf + counts[i] as usize]
                .iter()
                .filter(|&&o| {
                    matches!(
                        results.get(o as usize).and_then(Option::as_ref),
                        Some(OwnerResult::Answered { .. })
                    )
                })
                .count();
            if ok < quorum {
                failed_series += 1;
            }
        }
        if failed_series > 0 {
            self.metrics.quorum_failures.inc();
            let mut why: Vec<String> = results
                .iter()
                .flatten()
                .filter_map(|r| match r {
                    OwnerResult::Failed(e) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            why.sort();
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "failed to store {failed_series} of {n} series on a quorum of ingesters ({quorum} of {rf} needed): {}",
                    why.join("; ")
                ),
            );
        }
        self.metrics.replicated_samples.inc_by(
            results
                .iter()
                .flatten()
                .map(|r| match r {
                    OwnerResult::Answered { accepted, .. } => *accepted,
                    OwnerResult::Failed(_) => 0,
                })
                .sum(),
        );
        // The client's error, if any owner found one: 429 before 400 (a retry may help).
        let mut worst: Option<(u16, &str)> = None;
        for r in results.iter().flatten() {
            if let OwnerResult::Answered {
                status, message, ..
            } = r
            {
                if *status >= 400 && worst.is_none_or(|(s, _)| *status == 429 && s != 429) {
                    worst = Some((*status, message));
                }
            }
        }
        match worst {
            Some((s, m)) => text(
                StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST),
                m,
            ),
            None => StatusCode::OK.into_response(),
        }
    }
}

/// The `strata.ingester.v1.Ingester` gRPC service: an owner's side of a forwarded
/// write.
pub struct PushService {
    ing: Arc<Ingester>,
}

impl PushService {
    pub fn new(ing: Arc<Ingester>) -> Self {
        PushService { ing }
    }

    pub fn into_server(self) -> IngesterServer<PushService> {
        IngesterServer::new(self)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

#[tonic::async_trait]
impl IngesterRpc for PushService {
    async fn push(&self, req: Request<PushRequest>) -> Result<GrpcResponse<PushReply>, Status> {
        let req = req.into_inner();
        crate::validate::validate_tenant(&req.tenant).map_err(Status::invalid_argument)?;
        let ing = self.ing.clone();
        let reply = tokio::task::spawn_blocking(move || {
            let decoded = match strata_proto::decode_write_request_ref(&req.write_request) {
                Ok(d) => d,
                Err(e) => {
                    return PushReply {
                        status: 400,
                        message: format!("failed to decode the forwarded write request: {e}"),
                        accepted_samples: 0,
                    }
                }
            };
            match ingest_ref(&ing, &req.tenant, &decoded) {
                Ok(o) => {
                    // exemplars travel as exemplar-only series after the samples
                    let extras = if decoded.num_extras() > 0 {
                        crate::rw_extras::scan_v1(
                            &req.write_request,
                            ing.config.exemplars.max_exemplars > 0,
                        )
                    } else {
                        crate::rw_extras::Extras::default()
                    };
                    crate::exemplars::ingest(&ing, &req.tenant, &decoded, &extras, None);
                    let accepted_samples = o.accepted_samples as u64;
                    let (status, message) = o.status_message();
                    PushReply {
                        status: status.as_u16() as u32,
                        message,
                        accepted_samples,
                    }
                }
                Err(e) => PushReply {
                    status: 500,
                    message: format!("push failed: {e}"),
                    accepted_samples: 0,
                },
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(GrpcResponse::new(reply))
    }
}
