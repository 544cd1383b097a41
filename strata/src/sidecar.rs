//! `strata sidecar`: wiring of the sidecar's HTTP and gRPC servers and its shipper.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use strata_kit::http::{instrument, router, Readiness, Server, ServerState};
use strata_kit::metrics::Registry;
use strata_kit::shutdown::Shutdown;
use strata_kit::{GrpcArgs, HttpArgs};
use strata_objstore::Bucket;
use strata_sidecar::grpc::StoreService;
use strata_sidecar::{Sidecar, SidecarArgs};

#[derive(Debug, Args)]
pub struct SidecarCmd {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    grpc: GrpcArgs,
    #[command(flatten)]
    sidecar: SidecarArgs,
}

pub fn run_sidecar(cmd: SidecarCmd) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let registry = Registry::with_process_metrics();
        let shutdown = Shutdown::with_signals();
        let http = Server::bind(cmd.http.http_address).await?.with_grace_period(cmd.http.grace_period());
        let grpc_addr = cmd.grpc.grpc_address;
        let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("cannot listen on gRPC address {grpc_addr} (--grpc-address)"))?;
        let bucket = match &cmd.sidecar.objstore_config_file {
            Some(f) => Some(Bucket::from_config_file(f).context("--objstore.config-file")?),
            None => None,
        };
        let sc = Sidecar::new(cmd.sidecar.clone(), &registry)?;
        // Wait for Prometheus to answer; refuse to start when it has no external labels.
        let mut logged = false;
        loop {
            match sc.configure().await {
                Ok(()) => break,
                Err(strata_sidecar::Error::Prometheus(e)) => {
                    if !logged {
                        tracing::warn!(error = %e, "waiting for Prometheus");
                        logged = true;
                    }
                    tokio::select! {
                        _ = shutdown.wait() => return Ok(ExitCode::SUCCESS),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let readiness = Readiness::new();
        readiness.set_not_ready("Prometheus not checked yet");
        let state = ServerState::new(&registry, readiness.clone());
        let app = instrument(router(state.clone()), &state);
        tokio::spawn(sc.clone().watch_prometheus(readiness, shutdown.clone()));
        let shipper = match bucket {
            Some(b) => {
                tracing::info!(bucket = %b, tsdb_path = %sc.args.tsdb_path.display(), "shipping blocks");
                Some(tokio::spawn(sc.clone().run_shipper(b, shutdown.clone())))
            }
            None => {
                tracing::info!("no --objstore.config-file: blocks are not uploaded");
                None
            }
        };
        let grpc = tokio::spawn(
            strata_kit::grpc_tls::server_builder()?
                .add_service(crate::compressed_store_server(
                    StoreService::new(sc.clone()).into_server(),
                ))
                .serve_with_incoming_shutdown(
                    crate::nodelay(grpc_listener),
                    shutdown.clone().wait_owned(),
                ),
        );
        tracing::info!(addr = %grpc_addr, "listening for gRPC");
        let served = http.serve(app, shutdown.clone()).await;
        shutdown.trigger();
        if let Some(s) = shipper {
            let _ = s.await;
        }
        let _ = grpc.await;
        served?;
        Ok(ExitCode::SUCCESS)
    })
}
