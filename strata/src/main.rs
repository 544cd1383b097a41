//! The `strata` binary: flags, subcommands and wiring. The only `anyhow` edge.

mod alloc;
mod compactor;
mod frontend;
mod ingester;
mod querier;
mod ruler;
mod sidecar;
mod tools;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use strata_kit::LogArgs;

/// Long-term, highly available storage for Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of `all`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the ingester, querier and compactor in one process, on a local filesystem
    /// bucket by default.
    All(ingester::AllCmd),
    /// Receive remote_write, keep a WAL and head, ship blocks to the bucket.
    Ingester(ingester::IngesterCmd),
    /// Answer PromQL over ingesters, sidecars and the bucket, with HA replica dedup.
    Querier(querier::QuerierCmd),
    /// Split, cache and fairly queue queries in front of one or more queriers.
    QueryFrontend(frontend::QueryFrontendCmd),
    /// Evaluate Prometheus recording and alerting rules over the global view; send
    /// alerts to Alertmanager.
    Ruler(ruler::RulerCmd),
    /// Compact, deduplicate and downsample blocks in the bucket; apply retention.
    Compactor(compactor::CompactorCmd),
    /// Ship a Prometheus's blocks to the bucket and serve its recent data (Store API).
    Sidecar(sidecar::SidecarCmd),
    /// Offline tools for blocks and buckets, shaped like promtool's.
    Tools(tools::ToolsArgs),
}

/// glibc's malloc gives each thread that allocates an arena of its own (up to 8 per
/// core) and rarely returns their free memory: after a few large queries a querier sat
/// at 1.6 GB RSS for 200 MB of live data. Two arenas keep it near its live size
/// (`MALLOC_ARENA_MAX` in the environment still wins).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread
        // of ours exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    alloc::install_releaser();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    strata_kit::status::set_flags(effective_flags(&Cli::command(), &matches));
    strata_kit::init_tracing(&cli.log);
    // --http.config holds for every HTTP server of the process
    let tenant_from_user = strata_kit::status::flags()
        .get("auth.tenant-from-basic-auth-user")
        .is_some_and(|v| v == "true");
    if let Some(path) = strata_kit::status::flags()
        .get("http.config")
        .filter(|p| !p.is_empty())
    {
        let web = strata_kit::http::WebConfig::from_file(std::path::Path::new(path));
        match web.and_then(|c| match tenant_from_user {
            true => c.with_tenant_from_user(),
            false => Ok(c),
        }) {
            Ok(c) => strata_kit::http::set_web_config(c),
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(1);
            }
        }
    } else if tenant_from_user {
        tracing::error!(
            "--auth.tenant-from-basic-auth-user: needs basic_auth_users in --http.config"
        );
        return ExitCode::from(1);
    }
    if let Err(e) = strata_kit::grpc_tls::configure(strata_kit::status::flags()) {
        tracing::error!("{e}");
        return ExitCode::from(1);
    }
    let is_tool = matches!(cli.command, Command::Tools(_));
    let result = match cli.command {
        Command::All(cmd) => ingester::run_all(cmd),
        Command::Ingester(cmd) => ingester::run_ingester(cmd),
        Command::Tools(args) => tools::run(&args),
        Command::Querier(cmd) => querier::run_querier(cmd),
        Command::QueryFrontend(cmd) => frontend::run_query_frontend(cmd),
        Command::Ruler(cmd) => ruler::run_ruler(cmd),
        Command::Compactor(cmd) => compactor::run_compactor(cmd),
        Command::Sidecar(cmd) => sidecar::run_sidecar(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // tools talk to a terminal; components log (logfmt or JSON, as configured)
            if is_tool {
                eprintln!("error: {}", error_chain(&e));
            } else {
                tracing::error!("{}", error_chain(&e));
            }
            ExitCode::from(1)
        }
    }
}

/// Every flag of the subcommand that runs (and of its parents) with the value it has,
/// given or defaulted, as `/api/v1/status/flags` lists them: long name without dashes,
/// repeated values joined by commas, absent optional flags as "".
fn effective_flags(
    cmd: &clap::Command,
    matches: &clap::ArgMatches,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let (mut cmd, mut matches) = (cmd, matches);
    loop {
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let value = matches
                .get_raw(arg.get_id().as_str())
                .map(|vals| {
                    vals.map(|v| v.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            out.insert(long.to_string(), value);
        }
        let Some((name, sub)) = matches.subcommand() else {
            break;
        };
        let Some(next) = cmd.find_subcommand(name) else {
            break;
        };
        (cmd, matches) = (next, sub);
    }
    out
}

/// The error and its causes joined by ": ", skipping a cause whose text the message
/// before it already contains (our errors embed their source's text).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A Store API server that accepts zstd- and gzip-compressed requests and answers
/// compressed when the client asks (`grpc-accept-encoding`, e.g. a querier with
/// `--grpc-compression`); other clients get plain answers, as before.
pub(crate) fn compressed_store_server<T: strata_proto::store::store_server::Store>(
    s: strata_proto::store::store_server::StoreServer<T>,
) -> strata_proto::store::store_server::StoreServer<T> {
    use tonic::codec::CompressionEncoding::{Gzip, Zstd};
    s.accept_compressed(Zstd)
        .accept_compressed(Gzip)
        .send_compressed(Zstd)
        .send_compressed(Gzip)
}

/// Accepted gRPC connections with Nagle off: Series answers go out in several frames,
/// and Nagle plus delayed ACKs would add ~40 ms to each.
pub(crate) fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}
