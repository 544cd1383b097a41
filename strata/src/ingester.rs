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

/// `strata ingester`: Thanos's default ports.
#[derive(Debug, Args)]
pub struct IngesterCmd {
    #[command(flatten)]
    http: HttpArgs<10902>,
    #[command(flatten)]
    grpc: GrpcArgs<10901>,
    #[command(flatten)]
    ingester: IngesterArgs,
}

/// `strata all`: one process, Mimir's monolithic HTTP port 9009 and gRPC 9095.
#[derive(Debug, Args)]
pub struct AllCmd {
    #[command(flatten)]
    http: HttpArgs<9009>,
    #[command(flatten)]
    grpc: GrpcArgs<9095>,
    #[command(flatten)]
    ingester: IngesterArgs,
}

pub fn run_ingester(cmd: IngesterCmd) -> anyhow::Result<ExitCode> {
    serve(cmd.http.http_address, cmd.http.grace_period(), cmd.grpc.grpc_address, cmd.ingester, "ingester")
}

pub fn run_all(cmd: AllCmd) -> anyhow::Result<ExitCode> {
    serve(cmd.http.http_address, cmd.http.grace_period(), cmd.grpc.grpc_address, cmd.ingester, "all")
}

fn serve(
    http_addr: std::net::SocketAddr,
    grace: std::time::Duration,
    grpc_addr: std::net::SocketAddr,
    args: IngesterArgs,
    component: &str,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
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
        let reg = registry.clone();
        let ing: Arc<Ingester> = tokio::task::spawn_blocking(move || Ingester::open(args, bucket, &reg))
            .await?
            .context("open ingester data")?;
        let readiness = Readiness::new();
        let state = ServerState::new(&registry, readiness.clone());
        let app = instrument(router(state.clone()).merge(ing.routes()), &state);

        let grpc_shutdown = shutdown.clone();
        let grpc = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StoreService::new(ing.clone()).into_server())
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                    grpc_shutdown.wait_owned(),
                ),
        );
        tracing::info!(addr = %grpc_addr, "listening for gRPC");
        let bg = tokio::spawn(ing.clone().run(shutdown.clone()));
        readiness.set_ready();
        let served = http.serve(app, shutdown.clone()).await;
        shutdown.trigger();
        let _ = bg.await;
        if let Ok(Err(e)) = grpc.await {
            tracing::error!(error = %e, "gRPC server failed");
        }
        ing.sync_all();
        tracing::info!("stopped");
        served?;
        Ok(ExitCode::SUCCESS)
    })
}
