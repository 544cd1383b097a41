//! Prometheus's web configuration file (`--http.config`; the exporter-toolkit format
//! that Prometheus, Alertmanager and Thanos take): TLS with optional client
//! certificates (`tls_server_config`), basic auth against bcrypt hashes
//! (`basic_auth_users`) and extra response headers (`http_server_config.headers`).
//! With `--auth.tenant-from-basic-auth-user` the authenticated user name is the
//! request's tenant: a request naming another tenant is refused (403).
//!
//! bcrypt is slow on purpose (tens of ms at cost 10); a credential that verified once
//! is remembered by its SHA-256, as exporter-toolkit caches, so only the first request
//! of a client pays.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why `--http.config` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("--http.config {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("--http.config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("--auth.tenant-from-basic-auth-user: {0}")]
    TenantFromUser(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    tls_server_config: Option<TlsFormat>,
    http_server_config: Option<HttpServerFormat>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFormat {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Go's TLS knobs: accepted for compatibility, rustls chooses safe suites itself.
    cipher_suites: Option<yaml_serde::Value>,
    curve_preferences: Option<yaml_serde::Value>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerFormat {
    /// Strata serves HTTP/1.1 only; `http2: true` is accepted and means nothing.
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// A loaded web configuration.
#[derive(Debug)]
pub struct WebConfig {
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    users: BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// `--auth.tenant-from-basic-auth-user`: the user name is the tenant.
    tenant_from_user: bool,
}

static GLOBAL: OnceLock<Arc<WebConfig>> = OnceLock::new();

/// Use `cfg` for every HTTP server of this process (the flag is process-wide: `strata
/// all` serves several components on one port). Later calls are ignored.
pub fn set_web_config(cfg: WebConfig) {
    let _ = GLOBAL.set(Arc::new(cfg));
}

pub(super) fn global() -> Option<Arc<WebConfig>> {
    GLOBAL.get().cloned()
}

impl WebConfig {
    /// Read and check `path`; certificates and keys are loaded now, so a bad file fails
    /// at start-up, not at the first connection.
    pub fn from_file(path: &Path) -> Result<WebConfig, WebConfigError> {
        let invalid = |message: String| WebConfigError::Invalid {
            path: path.into(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|error| WebConfigError::Read {
            path: path.into(),
            error,
        })?;
        let f: FileFormat = if text.trim().is_empty() {
            FileFormat::default()
        } else {
            yaml_serde::from_str(&text).map_err(|e| invalid(e.to_string()))?
        };
        // relative paths are relative to the config file, as exporter-toolkit reads them
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match f.tls_server_config {
            Some(t) => Some(Arc::new(tls_config(t, base).map_err(invalid)?)),
            None => None,
        };
        for (user, hash) in &f.basic_auth_users {
            if bcrypt::verify("", hash).is_err() {
                return Err(invalid(format!(
                    "basic_auth_users: the password of {user:?} is not a bcrypt hash"
                )));
            }
        }
        let mut headers = Vec::new();
        let http = f.http_server_config.unwrap_or_default();
        if http.http2 == Some(true) {
            tracing::info!("--http.config: http2 is ignored; Strata serves HTTP/1.1");
        }
        for (k, v) in http.headers {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|e| invalid(format!("header {k:?}: {e}")))?;
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|e| invalid(format!("header {k:?}: {e}")))?;
            headers.push((name, value));
        }
        Ok(WebConfig {
            tls,
            users: f.basic_auth_users,
            headers,
            verified: Mutex::new(HashSet::new()),
            tenant_from_user: false,
        })
    }

    /// `--auth.tenant-from-basic-auth-user`: every request's tenant becomes its
    /// authenticated user name. Refused without basic-auth users, or when a user name
    /// is not a valid tenant ID (it could never write or read).
    pub fn with_tenant_from_user(mut self) -> Result<WebConfig, WebConfigError> {
        if self.users.is_empty() {
            return Err(WebConfigError::TenantFromUser(
                "needs basic_auth_users in --http.config".into(),
            ));
        }
        for user in self.users.keys() {
            crate::tenant::validate_tenant(user).map_err(|e| {
                WebConfigError::TenantFromUser(format!(
                    "basic_auth_users: user {user:?} cannot be a tenant: {e}"
                ))
            })?;
        }
        self.tenant_from_user = true;
        Ok(self)
    }

    /// Whether `authorization` (a `Basic …` header value) names a user with the right
    /// password: the cached answer when this credential verified before, else bcrypt.
    /// (What [`guard`] does, in one call.)
    #[cfg(test)]
    fn authorized(&self, authorization: Option<&str>) -> bool {
        match self.check_cached(authorization) {
            Cached::Yes(_) => true,
            Cached::Invalid => false,
            Cached::Unknown(c) => self.verify(c),
        }
    }

    /// The cheap part of a check (decoding, SHA-256, the cache), fit for an I/O thread.
    fn check_cached(&self, authorization: Option<&str>) -> Cached {
        let Some((user, pass)) = authorization
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
        else {
            return Cached::Invalid;
        };
        let key: [u8; 32] = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [user.as_bytes(), b"\0", pass.as_bytes(), b"\0"] {
                ctx.update(part);
            }
            ctx.update(self.users.get(&user).map_or(&b""[..], |h| h.as_bytes()));
            ctx.finish().as_ref().try_into().expect("32 bytes")
        };
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if self.users.contains_key(&user) && verified.contains(&key) {
            return Cached::Yes(user);
        }
        Cached::Unknown(Credential { user, pass, key })
    }

    /// bcrypt (tens of ms): without the cache's lock held, so other requests go on.
    fn verify(&self, c: Credential) -> bool {
        // an unknown user costs a bcrypt too, so timing does not tell users apart
        let ok = match self.users.get(&c.user) {
            Some(h) => bcrypt::verify(&c.pass, h).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(&c.pass, dummy_hash());
                false
            }
        };
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(c.key);
        }
        ok
    }
}

/// A credential's standing before bcrypt.
enum Cached {
    /// Verified before: the user.
    Yes(String),
    /// No `Basic` credential, or one that does not decode.
    Invalid,
    Unknown(Credential),
}

/// A decoded credential and its cache key.
struct Credential {
    user: String,
    pass: String,
    key: [u8; 32],
}

/// A hash to verify unknown users against, made once at the usual cost.
fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| bcrypt::hash("dummy", bcrypt::DEFAULT_COST).unwrap_or_default())
}

fn tls_config(t: TlsFormat, base: &Path) -> Result<rustls::ServerConfig, String> {
    let at = |p: &Path| base.join(p);
    if t.client_allowed_sans.is_some() {
        return Err("tls_server_config: client_allowed_sans is not supported".into());
    }
    if t.cipher_suites.is_some()
        || t.curve_preferences.is_some()
        || t.prefer_server_cipher_suites.is_some()
    {
        tracing::warn!(
            "--http.config: cipher_suites, curve_preferences and prefer_server_cipher_suites \
             are ignored (rustls offers only its safe defaults)"
        );
    }
    let cert_file = t.cert_file.ok_or("tls_server_config: missing cert_file")?;
    let key_file = t.key_file.ok_or("tls_server_config: missing key_file")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(at(&cert_file))
        .and_then(|it| it.collect())
        .map_err(|e| format!("cert_file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("cert_file {}: no certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(at(&key_file))
        .map_err(|e| format!("key_file {}: {e}", key_file.display()))?;
    let version = |v: &Option<String>, default: &'static rustls::SupportedProtocolVersion| match v
        .as_deref()
    {
        None => Ok(default),
        Some("TLS12") => Ok(&rustls::version::TLS12),
        Some("TLS13") => Ok(&rustls::version::TLS13),
        Some(other) => Err(format!(
            "unsupported TLS version {other:?} (TLS12 and TLS13 are supported)"
        )),
    };
    let min = version(&t.min_version, &rustls::version::TLS12)?;
    let max = version(&t.max_version, &rustls::version::TLS13)?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let n = u16::from(v.version);
                n >= u16::from(min.version) && n <= u16::from(max.version)
            })
            .collect();
    if versions.is_empty() {
        return Err("min_version is above max_version".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca = t
                .client_ca_file
                .ok_or_else(|| format!("client_auth_type {auth} needs client_ca_file"))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(at(&ca))
                .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
            }
            let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            if auth == "VerifyClientCertIfGiven" {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
        other => {
            return Err(format!(
                "client_auth_type {other:?} is not supported (NoClientCert, \
                 VerifyClientCertIfGiven, RequireAndVerifyClientCert are)"
            ))
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file/key_file: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Basic auth (when users are configured), the tenant of the user (with
/// `--auth.tenant-from-basic-auth-user`) and the configured response headers.
pub(super) async fn guard(
    State(cfg): State<Arc<WebConfig>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !cfg.users.is_empty() {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let user = match cfg.check_cached(auth.as_deref()) {
            Cached::Yes(user) => Some(user),
            Cached::Invalid => None,
            Cached::Unknown(c) => {
                let (cfg, user) = (cfg.clone(), c.user.clone());
                // bcrypt is CPU work: off the I/O threads
                tokio::task::spawn_blocking(move || cfg.verify(c))
                    .await
                    .unwrap_or(false)
                    .then_some(user)
            }
        };
        let Some(user) = user else {
            let mut resp = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            return resp;
        };
        if cfg.tenant_from_user {
            if let Err(message) = bind_tenant(req.headers_mut(), &user) {
                return (StatusCode::FORBIDDEN, message).into_response();
            }
        }
    }
    let mut resp = next.run(req).await;
    for (k, v) in &cfg.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

/// Make `user` the request's tenant: a tenant header naming anyone else is an error
/// (the user must not reach another tenant's data by setting it); none is set to it.
fn bind_tenant(headers: &mut axum::http::HeaderMap, user: &str) -> Result<(), String> {
    for name in crate::tenant::TENANT_HEADERS {
        if let Some(v) = headers
            .get(name)
            .filter(|v| v.as_bytes() != user.as_bytes())
        {
            return Err(format!(
                "user {user:?} may not use tenant {:?} (header {name}): with \
                 --auth.tenant-from-basic-auth-user a user's tenant is its user name\n",
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
    }
    let value = HeaderValue::try_from(user).map_err(|e| format!("user {user:?}: {e}\n"))?;
    headers.insert(crate::tenant::TENANT_HEADERS[0], value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        let err = |text: &str| {
            std::fs::write(&p, text).unwrap();
            WebConfig::from_file(&p).unwrap_err().to_string()
        };
        assert!(err("tls_server_config:\n  key_file: k\n").contains("missing cert_file"));
        assert!(err("basic_auth_users:\n  alice: plain\n").contains("not a bcrypt hash"));
        assert!(err("nonsense: 1\n").contains("unknown field"));
        std::fs::write(&p, "").unwrap();
        assert!(WebConfig::from_file(&p).is_ok());
    }

    #[test]
    fn basic_auth_against_bcrypt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&p, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let c = WebConfig::from_file(&p).unwrap();
        let b = |u: &str, pw: &str| {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"));
            c.authorized(Some(&format!("Basic {v}")))
        };
        assert!(b("alice", "s3cret"));
        assert!(b("alice", "s3cret"), "cached");
        assert!(!b("alice", "wrong"));
        assert!(!b("bob", "s3cret"));
        assert!(!c.authorized(None));
        assert!(!c.authorized(Some("Bearer x")));
    }

    #[test]
    fn a_user_is_bound_to_its_tenant() {
        use axum::http::HeaderMap;
        let mut h = HeaderMap::new();
        bind_tenant(&mut h, "alice").unwrap();
        assert_eq!(h["x-scope-orgid"], "alice");
        bind_tenant(&mut h, "alice").unwrap();
        for name in ["x-scope-orgid", "thanos-tenant"] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("alice"));
            let e = bind_tenant(&mut h, "bob").unwrap_err();
            assert!(
                e.contains(r#"user "bob" may not use tenant "alice""#),
                "{e}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, "").unwrap();
        let e = WebConfig::from_file(&p).unwrap().with_tenant_from_user();
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("needs basic_auth_users"));
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&p, format!("basic_auth_users:\n  'a b': '{hash}'\n")).unwrap();
        let e = WebConfig::from_file(&p).unwrap().with_tenant_from_user();
        assert!(e.unwrap_err().to_string().contains("cannot be a tenant"));
    }
}
