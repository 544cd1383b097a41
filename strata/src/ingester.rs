//! `strata ingester` and `strata all`: wiring of the ingester's HTTP and gRPC servers.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use strata_cluster::node::NodeConfig;
use strata_cluster::{ClusterArgs, Node};
use strata_ingester::distributor::{Distributor, PushService};
use strata_ingester::grpc::StoreService;
use strata_ingester::{Ingester, IngesterArgs};
use strata_kit::http::{instrument, router, Readiness, Server, ServerState};
use strata_kit::metrics::Registry;
use strata_kit::shutdown::Shutdown;
use strata_kit::{GrpcArgs, HttpArgs};

strata_kit::http_args!(
    /// `strata all`: Mimir's monolithic HTTP port.
    pub AllHttpArgs, 9009
);
strata_kit::grpc_args!(
    /// `strata all`: Mimir's gRPC port.
    pub AllGrpcArgs, 9095
);

/// `strata ingester`: Thanos's default ports.
#[derive(Debug, Args)]
pub struct IngesterCmd {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    grpc: GrpcArgs,
    /// Replication to other ingesters and raft peers.
    #[command(flatten)]
    grpc_client_tls: strata_kit::grpc_tls::GrpcClientTlsArgs,
    #[command(flatten)]
    ingester: IngesterArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// `strata all`: one process, Mimir's monolithic HTTP port 9009 and gRPC 9095.
#[derive(Debug, Args)]
pub struct AllCmd {
    #[command(flatten)]
    http: AllHttpArgs,
    #[command(flatten)]
    grpc: AllGrpcArgs,
    #[command(flatten)]
    ingester: IngesterArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    query: crate::querier::QuerierArgs,
    #[command(flatten)]
    compactor: crate::compactor::CompactorArgs,
    /// Put the query frontend (split, results cache, fair queue) in front of this
    /// process's querier: range queries on this port go through it in process.
    #[arg(
        long = "query-frontend.enabled",
        value_name = "BOOL",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    frontend_enabled: bool,
    #[command(flatten)]
    frontend: crate::frontend::FrontendArgs,
    #[command(flatten)]
    ruler: crate::ruler::AllRulerArgs,
    /// How often the compactor runs inside `strata all`.
    #[arg(long = "compactor.interval", value_name = "DURATION", default_value = "5m", value_parser = strata_kit::parse_duration_ms)]
    compactor_interval_ms: i64,
}

pub fn run_ingester(cmd: IngesterCmd) -> anyhow::Result<ExitCode> {
    serve(
        cmd.http.http_address,
        cmd.http.grace_period(),
        cmd.grpc.grpc_address,
        cmd.ingester,
        cmd.cluster,
        None,
    )
}

pub fn run_all(cmd: AllCmd) -> anyhow::Result<ExitCode> {
    let compactor = cmd.compactor.config(
        cmd.ingester.data_dir.join("compactor"),
        std::time::Duration::from_millis(cmd.compactor_interval_ms.max(1000) as u64),
    )?;
    let all = AllExtras {
        frontend: cmd
            .frontend_enabled
            .then(|| strata_frontend::FrontendConfig {
                max_query_lookback_ms: cmd.query.lookback.max_query_lookback_ms.max(0),
                ..cmd.frontend.config()
            }),
        query: cmd.query,
        ruler: cmd.ruler,
        compactor,
    };
    serve(
        cmd.http.http_address,
        cmd.http.grace_period(),
        cmd.grpc.grpc_address,
        cmd.ingester,
        cmd.cluster,
        Some(all),
    )
}

/// What `strata all` runs beside the ingester.
struct AllExtras {
    query: crate::querier::QuerierArgs,
    /// The ruler, when `--rule-file` is given.
    ruler: crate::ruler::AllRulerArgs,
    /// The query frontend's settings when it is enabled.
    frontend: Option<strata_frontend::FrontendConfig>,
    compactor: strata_compactor::CompactorConfig,
}

/// This host's name (Mimir's default instance id).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "strata".to_string())
}

/// `addr` as peers reach it: an unspecified IP becomes loopback.
fn reachable(addr: std::net::SocketAddr) -> String {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    a.to_string()
}

fn serve(
    http_addr: std::net::SocketAddr,
    grace: std::time::Duration,
    grpc_addr: std::net::SocketAddr,
    args: IngesterArgs,
    cluster: ClusterArgs,
    all: Option<AllExtras>,
) -> anyhow::Result<ExitCode> {
    let component = if all.is_some() { "all" } else { "ingester" };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let registry = Registry::with_process_metrics();
        // A signal starts leaving the ring; the servers stop after that.
        let signals = Shutdown::with_signals();
        let shutdown = Shutdown::new();
        // Bind both ports before the (possibly long) WAL replay, so a port clash fails
        // at once with the flag's name.
        let http = Server::bind(http_addr).await?.with_grace_period(grace);
        let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("cannot listen on gRPC address {grpc_addr} (--grpc-address)"))?;
        let grpc_local = grpc_listener.local_addr()?;
        let node_config = NodeConfig {
            name: cluster.cluster_node_id.clone().unwrap_or_else(hostname),
            addr: cluster.cluster_advertise_address.clone().unwrap_or_else(|| reachable(grpc_local)),
            http_addr: reachable(http.local_addr()),
            peers: cluster.cluster_peers.clone(),
            data_dir: cluster.cluster_data_dir.clone().unwrap_or_else(|| args.data_dir.join("cluster")),
            zone: cluster.ring_zone.clone(),
            num_tokens: cluster.ring_num_tokens.max(1),
            heartbeat_period: std::time::Duration::from_millis(cluster.ring_heartbeat_period_ms.max(100) as u64),
            heartbeat_timeout_ms: cluster.ring_heartbeat_timeout_ms,
            replication_factor: cluster.replication_factor(),
            zone_awareness: cluster.ring_zone_awareness,
        };
        let in_cluster = !cluster.cluster_peers.is_empty();
        let bucket = args.bucket().context("object store")?;
        tracing::info!(component, bucket = %bucket, data_dir = %args.data_dir.display(), node = %node_config.name, "starting");
        let querier_bucket = bucket.clone();
        let reg = registry.clone();
        let ing: Arc<Ingester> = tokio::task::spawn_blocking(move || Ingester::open(args, bucket, &reg))
            .await?
            .context("open ingester data")?;
        let node = Node::open(node_config, &registry).await.context("cluster")?;
        // From now on pushes go through the ring (refused until it has members) and HA
        // elections through the KV.
        let _ = ing.distributor.set(Arc::new(Distributor::new(
            node.clone(),
            cluster.replication_factor(),
            cluster.ring_zone_awareness,
            cluster.remote_timeout(),
            &registry,
        )));
        ing.ha.use_kv(node.clone());
        let readiness = Readiness::new();
        readiness.set_not_ready("joining the ring");
        let mut state = ServerState::new(&registry, readiness.clone());
        if let Some(a) = &all {
            state = state.with_cors_origin(a.query.cors_origin.clone());
        }
        let mut app = router(state.clone()).merge(ing.routes());
        if all.is_none() {
            app = app.merge(ing.query_routes());
        }
        let mut compactor_task = None;
        let mut with_ruler = None;
        if let Some(AllExtras { query: q, ruler, compactor, frontend }) = all {
            let c = strata_compactor::Compactor::new(querier_bucket.clone(), compactor, &registry)
                .with_runtime_config(ing.overrides.runtime().clone());
            let sd = shutdown.clone();
            compactor_task = Some(tokio::spawn(async move { c.run_forever(sd).await }));
            // In one process the querier reads the ingester (its head and local blocks)
            // in process, and the bucket; overlaps are merged, not doubled. The gRPC
            // port still answers label requests and other queriers.
            let local = std::net::SocketAddr::from(([127, 0, 0, 1], grpc_local.port()));
            let mut config = q.config(vec![local.to_string()], Some(querier_bucket))?;
            config.local_stores = vec![(local.to_string(), Arc::new(LocalIngester(ing.clone())))];
            config.runtime_config = ing.overrides.runtime().clone();
            let querier = strata_querier::Querier::new(config, &registry).context("querier")?;
            with_ruler = crate::ruler::start_in_all(ruler, querier.clone(), ing.config.labels.clone(), http.local_addr(), readiness.clone(), &registry, shutdown.clone())?;
            app = match frontend {
                None => app.merge(querier.routes()),
                // The frontend serves the query API and calls the querier's router in
                // process; paths it does not handle fall through to the querier.
                Some(mut fc) => {
                    fc.runtime_config = ing.overrides.runtime().clone();
                    let ds = strata_frontend::downstream::Downstream::Local(querier.routes());
                    let fe = strata_frontend::Frontend::new(fc, ds, &registry).context("query frontend")?;
                    app.merge(fe.routes())
                }
            };
        }
        if let Some(f) = with_ruler {
            app = f(app);
        }
        let app = instrument(app, &state);

        let grpc_shutdown = shutdown.clone();
        let grpc = tokio::spawn(
            strata_kit::grpc_tls::server_builder()?
                .initial_stream_window_size(Some(8 << 20))
                .initial_connection_window_size(Some(32 << 20))
                .add_service(crate::compressed_store_server(
                    StoreService::new(ing.clone()).into_server(),
                ))
                .add_service(PushService::new(ing.clone()).into_server())
                .add_service(strata_ingester::metadata::MetadataService::new(ing.clone()).into_server())
                .add_service(strata_ingester::exemplars::ExemplarsService::new(ing.clone()).into_server())
                .add_service(node.service())
                .serve_with_incoming_shutdown(
                    crate::nodelay(grpc_listener),
                    grpc_shutdown.wait_owned(),
                ),
        );
        tracing::info!(addr = %grpc_addr, "listening for gRPC");

        // Form or join the cluster and take a place on the ring; ready after that. A
        // start-up check that fails stops the process with its message.
        let join_error: Arc<std::sync::Mutex<Option<strata_cluster::Error>>> = Default::default();
        let joiner = {
            let node = node.clone();
            let readiness = readiness.clone();
            let shutdown = shutdown.clone();
            let join_error = join_error.clone();
            tokio::spawn(async move {
                let wait = std::time::Duration::from_secs(300);
                let r = async {
                    node.bootstrap(wait).await?;
                    node.register(wait).await
                };
                let r = tokio::select! {
                    r = r => r,
                    _ = shutdown.wait() => return,
                };
                match r {
                    Ok(()) => {
                        node.spawn_heartbeats(shutdown.clone().wait_owned());
                        readiness.set_ready();
                    }
                    Err(e) => {
                        *join_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        shutdown.trigger();
                    }
                }
            })
        };
        // On a signal: LEAVING first (owners of our series move on while we still
        // answer), then stop the servers.
        let leaver = {
            let node = node.clone();
            let shutdown = shutdown.clone();
            let readiness = readiness.clone();
            let signals = signals.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = signals.wait() => {}
                    _ = shutdown.wait() => return false,
                }
                readiness.set_not_ready("leaving the ring");
                let mut left = false;
                if in_cluster && readiness_was_joined(&node) {
                    match node.start_leaving().await {
                        Ok(()) => left = true,
                        Err(e) => tracing::warn!(error = %e, "could not mark this ingester LEAVING"),
                    }
                }
                shutdown.trigger();
                left
            })
        };
        let bg = tokio::spawn(ing.clone().run(shutdown.clone()));
        let trim = tokio::spawn(trim_heap(ing.clone(), shutdown.clone()));
        let served = http.serve(app, shutdown.clone()).await;
        shutdown.trigger();
        let _ = joiner.await;
        let leaving = leaver.await.unwrap_or(false);
        let _ = bg.await;
        let _ = trim.await;
        if let Some(t) = compactor_task {
            let _ = t.await;
        }
        // A graceful gRPC stop waits for every connection to close, and cluster peers
        // stopping at the same time keep theirs to us open while they wait for ours:
        // bound the wait, then drop the server.
        let mut grpc = grpc;
        match tokio::time::timeout(std::time::Duration::from_secs(5), &mut grpc).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server failed"),
            Ok(_) => {}
            Err(_) => {
                tracing::info!("gRPC connections still open after 5 s; closing them");
                grpc.abort();
            }
        }
        ing.sync_all();
        if leaving {
            // The head goes to the bucket before this ingester leaves the ring.
            match ing.cut_and_ship(true).await {
                Ok(n) => tracing::info!(blocks = n, "flushed the head to the bucket"),
                Err(e) => tracing::error!(error = %e, "flush on leaving failed; the WAL keeps the data for a restart"),
            }
            if let Err(e) = node.finish_leaving().await {
                tracing::warn!(error = %e, "could not remove this ingester from the ring");
            }
        }
        node.shutdown().await;
        if let Some(e) = join_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(anyhow::Error::new(e).context("cluster"));
        }
        tracing::info!("stopped");
        served?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The longest the ingester lets freed memory sit in the allocator while pushes arrive.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the trim timer looks at the push counter: a second without a push is a
/// quiet spell, and what the burst before it freed goes back then.
const TRIM_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// When to hand free memory back ([`trim_heap`]): once something was pushed since the
/// last trim, at the first tick without a push (the end of a burst: a backfill, a
/// remote-write flush, a scrape interval's batch) or [`TRIM_EVERY`] after the last
/// trim under a steady stream.
#[derive(Default)]
struct TrimClock {
    /// The push counter at the last trim (`None` before the first).
    trimmed_at: Option<u64>,
    /// The push counter at the previous tick.
    seen: u64,
    /// Ticks since the last trim.
    ticks: u32,
}

impl TrimClock {
    fn tick(&mut self, pushed: u64) -> bool {
        let quiet = pushed == self.seen;
        self.seen = pushed;
        self.ticks = self.ticks.saturating_add(1);
        let due = self.trimmed_at != Some(pushed)
            && (quiet || self.ticks as u128 * TRIM_TICK.as_millis() >= TRIM_EVERY.as_millis());
        if due {
            self.trimmed_at = Some(pushed);
            self.ticks = 0;
        }
        due
    }
}

/// glibc keeps what the push path frees (grown postings lists and hash tables, request
/// buffers, blocking threads' buffers when they exit) in its arenas: after 100k series ×
/// 480 samples, ≈ 70 MB free beside ≈ 85 MB live, 40 MB of it in whole pages (session
/// 8). So `malloc_trim` returns the free pages when pushes pause and at least every
/// [`TRIM_EVERY`] while they go on ([`TrimClock`]; once after the WAL replay too)
/// (BENCHMARKS.md, "Session 8: where `strata all`'s memory goes", "Session 11").
async fn trim_heap(ing: Arc<Ingester>, shutdown: Shutdown) {
    let mut clock = TrimClock::default();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(TRIM_TICK) => {}
        }
        if !clock.tick(ing.metrics.received_series.get() as u64) {
            continue;
        }
        let took = tokio::task::spawn_blocking(|| {
            let start = std::time::Instant::now();
            strata_querier::fanout::release_free_memory();
            start.elapsed()
        })
        .await;
        if let Ok(took) = took {
            tracing::debug!(
                took_ms = took.as_secs_f64() * 1e3,
                "free heap memory returned to the kernel"
            );
        }
    }
}

/// Whether this node got as far as the ring (else there is nothing to leave).
fn readiness_was_joined(node: &Node) -> bool {
    node.read(|s| s.members.contains_key(&node.config.name))
}

/// The ingester as the in-process store of `strata all`'s querier.
struct LocalIngester(Arc<Ingester>);

impl std::fmt::Debug for LocalIngester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalIngester")
    }
}

impl strata_querier::fanout::LocalStore for LocalIngester {
    fn series(
        &self,
        tenant: &str,
        matchers: &[strata_tsdb::matcher::Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
    ) -> Result<Vec<(strata_tsdb::labels::Labels, Vec<(i64, f64)>)>, String> {
        strata_ingester::grpc::select_samples(&self.0, tenant, matchers, mint, maxt, skip_chunks)
            .map_err(|e| e.to_string())
    }

    /// Decoded one series at a time, each counted before it is decoded: a query's
    /// limits stop the read before the samples are held.
    fn series_counted(
        &self,
        tenant: &str,
        matchers: &[strata_tsdb::matcher::Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        count: &strata_querier::stats::Counter,
    ) -> Result<
        Vec<(strata_tsdb::labels::Labels, Vec<(i64, f64)>)>,
        strata_querier::stats::StoreError,
    > {
        self.series_parts(tenant, matchers, mint, maxt, skip_chunks, count)?
            .into_iter()
            .map(|(l, p)| match p.decode() {
                Ok(s) => Ok((l, s)),
                Err(e) => Err(strata_querier::stats::StoreError::Corrupt(format!(
                    "series {l}: {e}"
                ))),
            })
            .collect()
    }

    fn series_parts(
        &self,
        tenant: &str,
        matchers: &[strata_tsdb::matcher::Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        count: &strata_querier::stats::Counter,
    ) -> Result<
        Vec<(strata_tsdb::labels::Labels, strata_querier::series::Part)>,
        strata_querier::stats::StoreError,
    > {
        self.series_parts_skipping(
            tenant,
            matchers,
            mint,
            maxt,
            skip_chunks,
            count,
            &Default::default(),
        )
    }

    /// Chunks kept encoded, each counted before anything is decoded: the engine decodes
    /// a series when it consumes it. Local blocks the bucket read covers are left out.
    fn series_parts_skipping(
        &self,
        tenant: &str,
        matchers: &[strata_tsdb::matcher::Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        count: &strata_querier::stats::Counter,
        in_bucket: &strata_querier::bucket::ReadFromBucket,
    ) -> Result<
        Vec<(strata_tsdb::labels::Labels, strata_querier::series::Part)>,
        strata_querier::stats::StoreError,
    > {
        use strata_querier::series::{ChunksBuilder, Part};
        use strata_querier::stats::StoreError;
        use strata_tsdb::chunkenc::Encoding;
        let series = strata_ingester::grpc::select_chunks_skipping(
            &self.0,
            tenant,
            matchers,
            mint,
            maxt,
            skip_chunks,
            &|meta| in_bucket.covers(meta, mint, maxt),
        )
        .map_err(|e| StoreError::Other(e.to_string()))?;
        let mut out = Vec::with_capacity(series.len());
        for (labels, chunks) in series {
            count.series(&labels)?;
            let mut part = ChunksBuilder::new(count, mint, maxt);
            for c in chunks {
                let range = (c.min_time, c.max_time);
                if matches!(c.encoding, Encoding::Histogram | Encoding::FloatHistogram) {
                    count.chunk(c.data.len())?;
                    part.push_histogram(c.encoding, &c.data).map_err(|e| {
                        e.unwrap_or_else(|e| {
                            StoreError::Corrupt(format!(
                                "series {labels}: chunk [{}, {}]: {e}",
                                range.0, range.1
                            ))
                        })
                    })?;
                    continue;
                }
                if c.encoding != Encoding::Xor {
                    continue;
                }
                count.chunk(c.data.len())?;
                part.push(c.data, range).map_err(|e| {
                    e.unwrap_or_else(|e| {
                        StoreError::Corrupt(format!(
                            "series {labels}: chunk [{}, {}]: {e}",
                            range.0, range.1
                        ))
                    })
                })?;
            }
            match part
                .finish()
                .map_err(|e| StoreError::Corrupt(format!("series {labels}: {e}")))?
            {
                Some(p) => out.push((labels, p)),
                None if skip_chunks => out.push((labels, Part::Samples(Vec::new()))),
                None => {}
            }
        }
        Ok(out)
    }

    fn external_labels(&self) -> Vec<(String, String)> {
        self.0.config.labels.clone()
    }

    fn metadata(
        &self,
        tenant: &str,
        req: &strata_proto::metadata::MetricMetadataRequest,
    ) -> Result<strata_proto::metadata::MetricMetadataResponse, String> {
        let m = strata_ingester::metadata::query(
            &self.0,
            tenant,
            &req.metric,
            req.limit,
            req.limit_per_metric,
        );
        Ok(strata_ingester::metadata::to_proto(m))
    }

    fn exemplars(
        &self,
        tenant: &str,
        req: &strata_proto::metadata::ExemplarsRequest,
    ) -> Result<strata_proto::metadata::ExemplarsResponse, String> {
        strata_ingester::exemplars::answer(&self.0, tenant, req).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod trim_tests {
    use super::*;

    #[test]
    fn trims_when_pushes_pause_and_every_ten_seconds_under_a_stream() {
        let mut c = TrimClock::default();
        // start: nothing pushed yet (the WAL replay is done): one trim, then none
        assert!(c.tick(0));
        assert!(!c.tick(0));
        // a burst over three ticks, then a quiet tick: trimmed once, at the pause
        assert!(!c.tick(10));
        assert!(!c.tick(20));
        assert!(!c.tick(30));
        assert!(c.tick(30));
        assert!(!c.tick(30));
        // a steady stream: every ten ticks
        let got: Vec<bool> = (1..=25).map(|i| c.tick(30 + i)).collect();
        let at: Vec<usize> = got
            .iter()
            .enumerate()
            .filter(|x| *x.1)
            .map(|x| x.0)
            .collect();
        // ten ticks after the last trim (one quiet tick came first)
        assert_eq!(at, vec![8, 18]);
    }
}
