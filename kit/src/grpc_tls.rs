//! TLS for every gRPC server and client of the process, with Thanos's flags:
//! `--grpc-server-tls-cert|key|client-ca` on the servers (Store API, push, cluster) and
//! `--grpc-client-tls-secure|skip-verify|cert|key|ca` plus `--grpc-client-server-name`
//! on the clients (querier → endpoints and ring members, ingester → replicas and raft
//! peers). Set once at start-up by the binary, like `--http.config`: one process has one
//! identity, and call sites then need no plumbing beyond [`server_builder`] and
//! [`endpoint`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum GrpcTlsError {
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("invalid gRPC address {addr:?}: {source}")]
    Address {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("gRPC TLS configuration for {addr}: {source}")]
    Tls {
        addr: String,
        source: tonic::transport::Error,
    },
}

/// gRPC server TLS flags (Thanos's names). Without a certificate the server speaks
/// plaintext, as before.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GrpcServerTlsArgs {
    /// TLS Certificate for gRPC server, leave blank to disable TLS.
    #[arg(
        id = "grpc-server-tls-cert",
        long = "grpc-server-tls-cert",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,
    /// TLS Key for the gRPC server, leave blank to disable TLS.
    #[arg(
        id = "grpc-server-tls-key",
        long = "grpc-server-tls-key",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,
    /// TLS CA to verify clients against. If no client CA is specified, there is no
    /// client verification on server side (mTLS is off).
    #[arg(
        id = "grpc-server-tls-client-ca",
        long = "grpc-server-tls-client-ca",
        value_name = "FILE"
    )]
    pub client_ca: Option<PathBuf>,
}

/// gRPC client TLS flags (Thanos's querier names), for every outgoing gRPC call.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GrpcClientTlsArgs {
    /// Use TLS when talking to the gRPC server.
    #[arg(
        id = "grpc-client-tls-secure",
        long = "grpc-client-tls-secure",
        default_value_t = false
    )]
    pub secure: bool,
    /// Disable TLS certificate verification, i.e self signed, signed by fake CA.
    #[arg(
        id = "grpc-client-tls-skip-verify",
        long = "grpc-client-tls-skip-verify",
        default_value_t = false
    )]
    pub skip_verify: bool,
    /// TLS Certificates to use to identify this client to the server.
    #[arg(
        id = "grpc-client-tls-cert",
        long = "grpc-client-tls-cert",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,
    /// TLS Key for the client's certificate.
    #[arg(
        id = "grpc-client-tls-key",
        long = "grpc-client-tls-key",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,
    /// TLS CA Certificates to use to verify gRPC servers (default: the system's roots).
    #[arg(
        id = "grpc-client-tls-ca",
        long = "grpc-client-tls-ca",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,
    /// Server name to verify the hostname on the returned gRPC certificates. See
    /// https://tools.ietf.org/html/rfc4366#section-3.1
    #[arg(
        id = "grpc-client-server-name",
        long = "grpc-client-server-name",
        value_name = "NAME"
    )]
    pub server_name: Option<String>,
}

struct ServerTls {
    config: ServerTlsConfig,
}

struct ClientTls {
    config: ClientTlsConfig,
    skip_verify: bool,
}

static SERVER: OnceLock<ServerTls> = OnceLock::new();
static CLIENT: OnceLock<ClientTls> = OnceLock::new();

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, GrpcTlsError> {
    std::fs::read(path).map_err(|source| GrpcTlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn flag_path(flags: &std::collections::BTreeMap<String, String>, name: &str) -> Option<PathBuf> {
    flags.get(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Reads the TLS flags from the process's effective flags (as
/// `/api/v1/status/flags` lists them) and installs them for [`server_builder`] and
/// [`endpoint`]. Files are read now so that a bad path stops the start-up.
pub fn configure(flags: &std::collections::BTreeMap<String, String>) -> Result<(), GrpcTlsError> {
    let server = GrpcServerTlsArgs {
        cert: flag_path(flags, "grpc-server-tls-cert"),
        key: flag_path(flags, "grpc-server-tls-key"),
        client_ca: flag_path(flags, "grpc-server-tls-client-ca"),
    };
    let on = |name: &str| flags.get(name).is_some_and(|v| v == "true");
    let client = GrpcClientTlsArgs {
        secure: on("grpc-client-tls-secure"),
        skip_verify: on("grpc-client-tls-skip-verify"),
        cert: flag_path(flags, "grpc-client-tls-cert"),
        key: flag_path(flags, "grpc-client-tls-key"),
        ca: flag_path(flags, "grpc-client-tls-ca"),
        server_name: flags
            .get("grpc-client-server-name")
            .filter(|v| !v.is_empty())
            .cloned(),
    };
    if let Some(s) = server_config(&server)? {
        let _ = SERVER.set(s);
    }
    if let Some(c) = client_config(&client)? {
        let _ = CLIENT.set(c);
    }
    Ok(())
}

fn server_config(a: &GrpcServerTlsArgs) -> Result<Option<ServerTls>, GrpcTlsError> {
    let (cert, key) = match (&a.cert, &a.key) {
        (None, None) => {
            if a.client_ca.is_some() {
                return Err(GrpcTlsError::Config(
                    "--grpc-server-tls-client-ca needs --grpc-server-tls-cert and --grpc-server-tls-key".into(),
                ));
            }
            return Ok(None);
        }
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(GrpcTlsError::Config(
                "--grpc-server-tls-cert and --grpc-server-tls-key must be given together".into(),
            ))
        }
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read("--grpc-server-tls-cert", cert)?,
        read("--grpc-server-tls-key", key)?,
    ));
    if let Some(ca) = &a.client_ca {
        // a client CA means clients must present a certificate it signed (mTLS)
        config = config
            .client_ca_root(Certificate::from_pem(read(
                "--grpc-server-tls-client-ca",
                ca,
            )?))
            .client_auth_optional(false);
    }
    Ok(Some(ServerTls { config }))
}

fn client_config(a: &GrpcClientTlsArgs) -> Result<Option<ClientTls>, GrpcTlsError> {
    let any_detail = a.skip_verify || a.cert.is_some() || a.key.is_some() || a.ca.is_some();
    if !a.secure {
        if any_detail {
            return Err(GrpcTlsError::Config(
                "--grpc-client-tls-* flags need --grpc-client-tls-secure".into(),
            ));
        }
        return Ok(None);
    }
    let mut config = ClientTlsConfig::new();
    match (&a.cert, &a.key) {
        (None, None) => {}
        (Some(c), Some(k)) => {
            config = config.identity(Identity::from_pem(
                read("--grpc-client-tls-cert", c)?,
                read("--grpc-client-tls-key", k)?,
            ))
        }
        _ => {
            return Err(GrpcTlsError::Config(
                "--grpc-client-tls-cert and --grpc-client-tls-key must be given together".into(),
            ))
        }
    }
    if !a.skip_verify {
        config = match &a.ca {
            Some(ca) => {
                config.ca_certificate(Certificate::from_pem(read("--grpc-client-tls-ca", ca)?))
            }
            None => config.with_native_roots(),
        };
    }
    if let Some(n) = &a.server_name {
        config = config.domain_name(n.clone());
    }
    Ok(Some(ClientTls {
        config,
        skip_verify: a.skip_verify,
    }))
}

/// Whether outgoing gRPC calls use TLS (`--grpc-client-tls-secure`).
pub fn client_secure() -> bool {
    CLIENT.get().is_some()
}

/// A gRPC server builder with the process's server TLS applied (plaintext without it).
pub fn server_builder() -> Result<Server, GrpcTlsError> {
    let b = Server::builder();
    match SERVER.get() {
        None => Ok(b),
        Some(s) => b
            .tls_config(s.config.clone())
            .map_err(|source| GrpcTlsError::Tls {
                addr: "server".into(),
                source,
            }),
    }
}

/// An endpoint for `addr` (`host:port`, or a URI with a scheme) with the process's
/// client TLS applied: `https://` and the configured roots/identity when
/// `--grpc-client-tls-secure` is on, plain `http://` otherwise.
pub fn endpoint(addr: &str) -> Result<Endpoint, GrpcTlsError> {
    let client = CLIENT.get();
    let bare = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let uri = match client {
        Some(_) => format!("https://{bare}"),
        None => format!("http://{bare}"),
    };
    let ep = Endpoint::from_shared(uri).map_err(|source| GrpcTlsError::Address {
        addr: addr.to_string(),
        source,
    })?;
    let Some(c) = client else { return Ok(ep) };
    let res = if c.skip_verify {
        ep.tls_config_with_verifier(c.config.clone(), Arc::new(NoVerify::new()))
    } else {
        ep.tls_config(c.config.clone())
    };
    res.map_err(|source| GrpcTlsError::Tls {
        addr: addr.to_string(),
        source,
    })
}

/// `--grpc-client-tls-skip-verify`: accepts any server certificate (signatures of the
/// handshake are still checked, so the connection is encrypted but unauthenticated).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl NoVerify {
    fn new() -> Self {
        NoVerify(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_configured_flags_are_refused() {
        let e = server_config(&GrpcServerTlsArgs {
            cert: Some("c".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("must be given together"), "{e}");
        let e = client_config(&GrpcClientTlsArgs {
            ca: Some("ca".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(
            e.to_string().contains("need --grpc-client-tls-secure"),
            "{e}"
        );
        let e = client_config(&GrpcClientTlsArgs {
            secure: true,
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .contains("cannot read --grpc-client-tls-ca /nonexistent/ca.pem"),
            "{e}"
        );
        assert!(client_config(&GrpcClientTlsArgs::default())
            .unwrap()
            .is_none());
    }
}
