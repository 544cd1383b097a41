//! What every Strata component shares: log set-up (logfmt-like lines by default, JSON on
//! request), the flag types that several subcommands take, the HTTP skeleton
//! ([`http`]: `/metrics`, `/-/healthy`, `/-/ready`), the metrics registry ([`metrics`])
//! and the shutdown token ([`shutdown`]).

use clap::{Args, ValueEnum};

pub mod grpc_tls;
pub mod http;
pub mod labels;
pub mod metrics;
pub mod runtime_config;
pub mod shutdown;
pub mod status;
pub mod tenant;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// `ts=… level=… target=… msg=…` lines
    #[default]
    Logfmt,
    /// one JSON object per line
    Json,
}

/// Logging flags, shared by every subcommand (`--log.level`, `--log.format` as in Thanos).
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filtering level: error, warn, info, debug, or a tracing filter directive.
    #[arg(
        long = "log.level",
        default_value = "info",
        global = true,
        display_order = 900
    )]
    pub level: String,
    /// Log format.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt, global = true, display_order = 901)]
    pub format: LogFormat,
}

/// Define a clap `Args` struct with Thanos's HTTP server flags: `--http-address`
/// (default `0.0.0.0:<port>`), `--http-grace-period` and `--http.config` (applied
/// process-wide by the binary, see [`http::set_web_config`]). A macro rather than a
/// const-generic struct: clap's derive keeps a default value in a static that every
/// instantiation of a generic struct would share.
#[macro_export]
macro_rules! http_args {
    ($(#[$m:meta])* $vis:vis $name:ident, $port:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, clap::Args)]
        $vis struct $name {
            /// Listen host:port for HTTP endpoints.
            #[arg(long = "http-address", value_name = "ADDRESS", default_value = concat!("0.0.0.0:", $port))]
            pub http_address: std::net::SocketAddr,
            /// Time to wait after an interrupt received for HTTP Server.
            #[arg(long = "http-grace-period", value_name = "DURATION", default_value = "2m", value_parser = $crate::parse_duration_ms)]
            pub http_grace_period_ms: i64,
            /// Web configuration file (Prometheus's exporter-toolkit format): TLS, client
            /// certificates, basic auth, response headers. Read at start-up.
            #[arg(long = "http.config", value_name = "FILE")]
            pub http_config: Option<std::path::PathBuf>,
            /// With basic auth in --http.config: the authenticated user name is the
            /// tenant of every request (as X-Scope-OrgID); a request whose tenant
            /// header names another tenant is refused (403).
            #[arg(
                long = "auth.tenant-from-basic-auth-user",
                value_name = "BOOL",
                default_value_t = false,
                action = clap::ArgAction::Set,
                num_args = 0..=1,
                default_missing_value = "true"
            )]
            pub tenant_from_basic_auth_user: bool,
        }

        #[allow(dead_code)]
        impl $name {
            /// `--http-grace-period` as a [`std::time::Duration`].
            pub fn grace_period(&self) -> std::time::Duration {
                std::time::Duration::from_millis(self.http_grace_period_ms.max(0) as u64)
            }
        }
    };
}

/// As [`http_args!`] for the gRPC server: `--grpc-address`, `--grpc-grace-period` and
/// the `--grpc-server-tls-*` flags (applied process-wide, see [`grpc_tls::configure`]).
#[macro_export]
macro_rules! grpc_args {
    ($(#[$m:meta])* $vis:vis $name:ident, $port:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, clap::Args)]
        $vis struct $name {
            /// Listen host:port for gRPC endpoints.
            #[arg(long = "grpc-address", value_name = "ADDRESS", default_value = concat!("0.0.0.0:", $port))]
            pub grpc_address: std::net::SocketAddr,
            /// Time to wait after an interrupt received for GRPC Server.
            #[arg(long = "grpc-grace-period", value_name = "DURATION", default_value = "2m", value_parser = $crate::parse_duration_ms)]
            pub grpc_grace_period_ms: i64,
            #[command(flatten)]
            pub tls: $crate::grpc_tls::GrpcServerTlsArgs,
        }

        #[allow(dead_code)]
        impl $name {
            /// `--grpc-grace-period` as a [`std::time::Duration`].
            pub fn grace_period(&self) -> std::time::Duration {
                std::time::Duration::from_millis(self.grpc_grace_period_ms.max(0) as u64)
            }
        }
    };
}

http_args!(
    /// HTTP server flags with Thanos's default port, 10902.
    pub HttpArgs, 10902
);
grpc_args!(
    /// gRPC server flags with Thanos's default port, 10901.
    pub GrpcArgs, 10901
);

/// Install the global tracing subscriber; logs go to stderr so stdout stays for output
/// that tools print. Safe to call twice (the second call is ignored).
pub fn init_tracing(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match args.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Logfmt => builder.compact().try_init(),
    };
}

/// Prometheus durations and RFC 3339 dates live in `strata-time` so that crates without
/// kit's HTTP stack (strata-promql) share the one parser; re-exported here for flags.
pub use strata_time::{date, duration};

/// Flags such as `--tsdb.block-duration`: a Prometheus duration (`1d12h`, `500ms`) or a
/// plain number of seconds; in milliseconds.
pub use strata_time::duration::parse_flag_ms as parse_duration_ms;

/// Milliseconds as Go's `time.Duration` prints them (`2h0m0s`, `30.002s`): block tables,
/// as promtool's and Thanos's show them.
pub use strata_time::duration::format_go_ms as format_go_duration_ms;
/// Milliseconds as Prometheus and Mimir print a duration (`10m`, `1h30m`, `500ms`).
pub use strata_time::duration::format_ms as format_duration_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn duration_flags() {
        use clap::Parser;

        #[derive(Parser)]
        struct Cli {
            #[arg(long, value_parser = parse_duration_ms)]
            d: i64,
        }
        let d = |v: &str| Cli::try_parse_from(["x", "--d", v]).map(|c| c.d);
        assert_eq!(d("1d12h").unwrap(), 129_600_000);
        assert_eq!(d("30").unwrap(), 30_000);
        let err = d("1h1d").unwrap_err().to_string();
        assert!(err.contains("not a valid duration string"), "{err}");
        let err = d("300y").unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn server_flags() {
        use clap::Parser;

        grpc_args!(OtherGrpc, 19091);

        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            http: HttpArgs,
            #[command(flatten)]
            grpc: OtherGrpc,
        }

        // a second command with other defaults must not change the first one's
        http_args!(OtherHttp, 9009);
        #[derive(Parser)]
        struct Other {
            #[command(flatten)]
            http: OtherHttp,
        }
        let other = Other::try_parse_from(["y"]).unwrap();
        assert_eq!(other.http.http_address, "0.0.0.0:9009".parse().unwrap());

        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.http.http_address, "0.0.0.0:10902".parse().unwrap());
        assert_eq!(cli.grpc.grpc_address, "0.0.0.0:19091".parse().unwrap());
        assert_eq!(cli.http.grace_period(), Duration::from_secs(120));

        let cli = Cli::try_parse_from([
            "x",
            "--http-address=127.0.0.1:9090",
            "--grpc-address",
            "[::1]:9091",
            "--grpc-grace-period=5s",
        ])
        .unwrap();
        assert_eq!(cli.http.http_address, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(cli.grpc.grpc_address, "[::1]:9091".parse().unwrap());
        assert_eq!(cli.grpc.grace_period(), Duration::from_secs(5));
        assert!(Cli::try_parse_from(["x", "--http-address=nope"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration_ms(7_200_000), "2h");
        assert_eq!(format_duration_ms(90_500), "1m30s500ms");
        assert_eq!(format_go_duration_ms(7_200_000), "2h0m0s");
        assert_eq!(format_go_duration_ms(90_500), "1m30.5s");
    }
}
