//! `strata ingester` and `strata all`: wiring of the ingester's HTTP and gRPC servers.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
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
    #[command(flatten)]
    ingester: IngesterArgs,
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
    query: crate::querier::QuerierArgs,
    #[command(flatten)]
    compactor: crate::compactor::CompactorArgs,
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
        None,
    )
}

pub fn run_all(cmd: AllCmd) -> anyhow::Result<ExitCode> {
    let compactor = cmd.compactor.config(
        cmd.ingester.data_dir.join("compactor"),
        std::time::Duration::from_millis(cmd.compactor_interval_ms.max(1000) as u64),
    )?;
    let all = AllExtras {
        query: cmd.query,
        compactor,
    };
    serve(
        cmd.http.http_address,
        cmd.http.grace_period(),
        cmd.grpc.grpc_address,
        cmd.ingester,
        Some(all),
    )
}

/// What `strata all` runs beside the ingester.
struct AllExtras {
    query: crate::querier::QuerierArgs,
    compactor: strata_compactor::CompactorConfig,
}

fn serve(
    http_addr: std::net::SocketAddr,
    grace: std::time::Duration,
    grpc_addr: std::net::SocketAddr,
    args: IngesterArgs,
    all: Option<AllExtras>,
) -> anyhow::Result<ExitCode> {
    let component = if all.is_some() { "all" } else { "ingester" };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let registry = Registry::with_process_metrics();
        let shutdown = Shutdown::with_signals();
        // Bind both ports before the (possibly long) WAL replay, so a port clash fails
        // at once with the flag's name.
        let http = Server::bind(http_addr).await?.with_grace_period(grace);
        let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("cannot listen on gRPC address {grpc_addr} (--grpc-address)"))?;
        let bucket = args.bucket().context("object store")?;
        tracing::info!(component, bucket = %bucket, data_dir = %args.data_dir.display(), "starting");
        let querier_bucket = bucket.clone();
        let reg = registry.clone();
        let ing: Arc<Ingester> = tokio::task::spawn_blocking(move || Ingester::open(args, bucket, &reg))
            .await?
            .context("open ingester data")?;
        let readiness = Readiness::new();
        let state = ServerState::new(&registry, readiness.clone());
        let mut app = router(state.clone()).merge(ing.routes());
        let mut compactor_task = None;
        if let Some(AllExtras { query: q, compactor }) = all {
            let c = strata_compactor::Compactor::new(querier_bucket.clone(), compactor, &registry);
            let sd = shutdown.clone();
            compactor_task = Some(tokio::spawn(async move { c.run_forever(sd).await }));
            // In one process the querier reads the ingester (its head and local blocks)
            // in process, and the bucket; overlaps are merged, not doubled. The gRPC
            // port still answers label requests and other queriers.
            let local = std::net::SocketAddr::from(([127, 0, 0, 1], grpc_listener.local_addr()?.port()));
            let mut config = q.config(vec![local.to_string()], Some(querier_bucket))?;
            config.local_stores = vec![(local.to_string(), Arc::new(LocalIngester(ing.clone())))];
            let querier = strata_querier::Querier::new(config, &registry).context("querier")?;
            app = app.merge(querier.routes());
        }
        let app = instrument(app, &state);

        let grpc_shutdown = shutdown.clone();
        let grpc = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StoreService::new(ing.clone()).into_server())
                .serve_with_incoming_shutdown(
                    crate::nodelay(grpc_listener),
                    grpc_shutdown.wait_owned(),
                ),
        );
        tracing::info!(addr = %grpc_addr, "listening for gRPC");
        let bg = tokio::spawn(ing.clone().run(shutdown.clone()));
        readiness.set_ready();
        let served = http.serve(app, shutdown.clone()).await;
        shutdown.trigger();
        let _ = bg.await;
        if let Some(t) = compactor_task {
            let _ = t.await;
        }
        if let Ok(Err(e)) = grpc.await {
            tracing::error!(error = %e, "gRPC server failed");
        }
        ing.sync_all();
        tracing::info!("stopped");
        served?;
        Ok(ExitCode::SUCCESS)
    })
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

    fn external_labels(&self) -> Vec<(String, String)> {
        self.0.config.labels.clone()
    }
}
