//! The object-store client for `http_config.tls_config.server_name`, as Go's
//! `tls.Config.ServerName` in Thanos: the name sent as SNI and the name the server's
//! certificate must hold, whatever host the endpoint URL names. reqwest takes both
//! from the URL, so this client is hyper's with hyper-rustls's fixed server name,
//! serving `object_store` through its `HttpService`.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use object_store::client::{
    HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse, HttpResponseBody,
    HttpService,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, Result};

/// `object_store`'s default connect timeout, which its own client applies.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the client is built from; the PEM files are already read.
pub(super) struct Settings<'a> {
    pub server_name: &'a str,
    /// `ca_file`'s certificates, trusted besides the system's roots (as reqwest does).
    pub ca_pem: Option<&'a [u8]>,
    /// `cert_file` and `key_file` (mutual TLS).
    pub identity: Option<(&'a [u8], &'a [u8])>,
    /// False for `insecure_skip_verify`: any certificate, `server_name` still the SNI.
    pub verify: bool,
    pub allow_http: bool,
    pub idle_timeout: Option<Duration>,
    pub max_idle_per_host: usize,
    /// The whole request, up to the last byte of the response body.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub(super) struct ServerNameClient {
    client: Client<HttpsConnector<TcpConnector>, HttpRequestBody>,
    timeout: Duration,
}

fn field(f: &str) -> String {
    format!("config.http_config.tls_config.{f}")
}

impl ServerNameClient {
    pub(super) fn new(s: &Settings) -> Result<Self> {
        let name = ServerName::try_from(s.server_name.to_owned()).map_err(|e| {
            Error::config(field("server_name"), format!("{:?}: {e}", s.server_name))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        // unreadable system certificates are skipped, as reqwest does
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(pem) = s.ca_pem {
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::config(field("ca_file"), e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::config(field("ca_file"), e.to_string()))?;
                n += 1;
            }
            if n == 0 {
                return Err(Error::config(field("ca_file"), "no PEM certificate in it"));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(field("server_name"), e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match s.identity {
            None => builder.with_no_client_auth(),
            Some((cert_pem, key_pem)) => {
                let certs = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::config(field("cert_file"), e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| Error::config(field("key_file"), e.to_string()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| Error::config(field("cert_file"), e.to_string()))?
            }
        };
        if !s.verify {
            let verifier = Arc::new(SkipVerify(provider));
            config.dangerous().set_certificate_verifier(verifier);
        }
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // HTTP/1.1 offered by ALPN, as reqwest's client for object_store (http1_only)
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let resolver = Arc::new(FixedServerNameResolver::new(name));
        let https = HttpsConnector::new(tcp, config, !s.allow_http, resolver);
        let mut client = Client::builder(TokioExecutor::new());
        client.pool_timer(TokioTimer::new());
        if let Some(idle) = s.idle_timeout {
            client.pool_idle_timeout(idle);
        }
        if s.max_idle_per_host > 0 {
            client.pool_max_idle_per_host(s.max_idle_per_host);
        }
        Ok(Self {
            client: client.build(https),
            timeout: s.timeout,
        })
    }
}

/// `insecure_skip_verify`, as Go's: any certificate chain for any name, while the
/// handshake's signature must still be made by the presented certificate's key.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[async_trait::async_trait]
impl HttpService for ServerNameClient {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let res = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Ok(res) => res.map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    error_kind(&e)
                };
                HttpError::new(kind, e)
            })?,
            Err(_) => return Err(timed_out(self.timeout)),
        };
        let (parts, body) = res.into_parts();
        let body = DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout: self.timeout,
        };
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

fn timed_out(after: Duration) -> HttpError {
    HttpError::new(
        HttpErrorKind::Timeout,
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("request timed out after {after:?}"),
        ),
    )
}

/// The kind `object_store` retries by, from the hyper and I/O errors in `e`'s chain
/// (as `object_store` refines reqwest's errors).
fn error_kind(e: &(dyn StdError + 'static)) -> HttpErrorKind {
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            if e.is_closed() || e.is_incomplete_message() || e.is_body_write_aborted() {
                return HttpErrorKind::Request;
            }
            if e.is_timeout() {
                return HttpErrorKind::Timeout;
            }
        }
        if let Some(e) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match e.kind() {
                K::TimedOut => return HttpErrorKind::Timeout,
                K::ConnectionAborted | K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof => {
                    return HttpErrorKind::Interrupted
                }
                _ => {}
            }
        }
        source = e.source();
    }
    HttpErrorKind::Unknown
}

/// A response body that fails once the request's deadline passes, so a stalled body
/// read ends as reqwest's total timeout ends it.
struct DeadlineBody {
    body: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, HttpError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(|e| HttpError::new(error_kind(&e), e))));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(timed_out(self.timeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
