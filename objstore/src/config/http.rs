//! HTTP settings the cloud providers share (Thanos's `exthttp.HTTPConfig`): timeouts,
//! TLS, retries, and Prometheus durations.

use std::time::Duration;

use object_store::client::{HttpClient, HttpConnector};
use object_store::{Certificate, ClientOptions, RetryConfig};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::error::{Error, Result};

use super::server_name::{ServerNameClient, Settings};
use super::{nullable, REQUEST_TIMEOUT};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpConfig {
    #[serde(default, deserialize_with = "nullable")]
    idle_conn_timeout: String,
    #[serde(default, deserialize_with = "nullable")]
    insecure_skip_verify: bool,
    #[serde(default, deserialize_with = "nullable")]
    max_idle_conns_per_host: usize,
    #[serde(default, deserialize_with = "nullable")]
    tls_config: TlsConfig,
    // Go transport tuning without an `object_store` counterpart.
    #[serde(default, rename = "response_header_timeout")]
    _response_header_timeout: Option<IgnoredAny>,
    #[serde(default, rename = "tls_handshake_timeout")]
    _tls_handshake_timeout: Option<IgnoredAny>,
    #[serde(default, rename = "expect_continue_timeout")]
    _expect_continue_timeout: Option<IgnoredAny>,
    #[serde(default, rename = "max_idle_conns")]
    _max_idle_conns: Option<IgnoredAny>,
    #[serde(default, rename = "max_conns_per_host")]
    _max_conns_per_host: Option<IgnoredAny>,
    #[serde(default, rename = "force_attempt_http2")]
    _force_attempt_http2: Option<IgnoredAny>,
    #[serde(default, rename = "disable_compression")]
    _disable_compression: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    #[serde(default, deserialize_with = "nullable")]
    ca_file: String,
    #[serde(default, deserialize_with = "nullable")]
    cert_file: String,
    #[serde(default, deserialize_with = "nullable")]
    key_file: String,
    #[serde(default, deserialize_with = "nullable")]
    server_name: String,
    #[serde(default, deserialize_with = "nullable")]
    insecure_skip_verify: bool,
}

impl HttpConfig {
    pub(super) fn client_options(&self, allow_http: bool) -> Result<ClientOptions> {
        let mut options = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_allow_http(allow_http);
        if self.insecure_skip_verify || self.tls_config.insecure_skip_verify {
            options = options.with_allow_invalid_certificates(true);
        }
        if !self.idle_conn_timeout.is_empty() {
            let idle = parse_duration(&self.idle_conn_timeout)
                .map_err(|m| Error::config("config.http_config.idle_conn_timeout", m))?;
            options = options.with_pool_idle_timeout(idle);
        }
        if self.max_idle_conns_per_host > 0 {
            options = options.with_pool_max_idle_per_host(self.max_idle_conns_per_host);
        }
        let tls = &self.tls_config;
        if !tls.ca_file.is_empty() {
            let field = "config.http_config.tls_config.ca_file";
            let pem = std::fs::read(&tls.ca_file)
                .map_err(|e| Error::config(field, format!("reading {}: {e}", tls.ca_file)))?;
            let certs = Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::config(field, format!("{}: {e}", tls.ca_file)))?;
            for cert in certs {
                options = options.with_root_certificate(cert);
            }
        }
        Ok(options)
    }
}

/// A client for what `object_store`'s options cannot express: a client certificate
/// (`tls_config.cert_file`/`key_file`, mutual TLS) or `tls_config.server_name`. Built with
/// the same settings `client_options` gives `object_store`.
#[derive(Debug)]
pub(super) struct TlsConnector(HttpClient);

impl HttpConnector for TlsConnector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(self.0.clone())
    }
}

impl HttpConfig {
    /// The connector when `tls_config` names a client certificate or a server name,
    /// `None` otherwise (the builder's own client then applies `client_options`).
    pub(super) fn tls_connector(&self, allow_http: bool) -> Result<Option<TlsConnector>> {
        let tls = &self.tls_config;
        let field = |f: &str| format!("config.http_config.tls_config.{f}");
        let files = match (tls.cert_file.is_empty(), tls.key_file.is_empty()) {
            (true, true) => None,
            (false, false) => Some((&tls.cert_file, &tls.key_file)),
            (true, false) => {
                return Err(Error::config(
                    field("cert_file"),
                    "key_file is set without it",
                ))
            }
            (false, true) => {
                return Err(Error::config(
                    field("key_file"),
                    "cert_file is set without it",
                ))
            }
        };
        let skip_verify = self.insecure_skip_verify || tls.insecure_skip_verify;
        let server_name = !tls.server_name.is_empty();
        if files.is_none() && !server_name {
            return Ok(None);
        }
        let read = |f: &str, path: &str| {
            std::fs::read(path).map_err(|e| Error::config(field(f), format!("reading {path}: {e}")))
        };
        let identity = match files {
            Some((cert, key)) => Some((read("cert_file", cert)?, read("key_file", key)?)),
            None => None,
        };
        let ca_pem = match tls.ca_file.is_empty() {
            true => None,
            false => Some(read("ca_file", &tls.ca_file)?),
        };
        let idle_timeout = match self.idle_conn_timeout.is_empty() {
            true => None,
            false => Some(
                parse_duration(&self.idle_conn_timeout)
                    .map_err(|m| Error::config("config.http_config.idle_conn_timeout", m))?,
            ),
        };
        if server_name {
            let client = ServerNameClient::new(&Settings {
                server_name: &tls.server_name,
                ca_pem: ca_pem.as_deref(),
                identity: identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
                // insecure_skip_verify wins: nothing is verified, server_name is the SNI
                verify: !skip_verify,
                allow_http,
                idle_timeout,
                max_idle_per_host: self.max_idle_conns_per_host,
                timeout: REQUEST_TIMEOUT,
            })?;
            return Ok(Some(TlsConnector(HttpClient::new(client))));
        }
        let Some(((cert, key), (mut pem, key_pem))) = files.zip(identity) else {
            return Ok(None);
        };
        pem.push(b'\n');
        pem.extend(key_pem);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| Error::config(field("cert_file"), format!("{cert} with {key}: {e}")))?;
        let mut b = reqwest::Client::builder()
            .identity(identity)
            .timeout(REQUEST_TIMEOUT)
            .https_only(!allow_http)
            // compression would break Content-Length, which sizes objects (as object_store)
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate();
        if skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(idle) = idle_timeout {
            b = b.pool_idle_timeout(idle);
        }
        if self.max_idle_conns_per_host > 0 {
            b = b.pool_max_idle_per_host(self.max_idle_conns_per_host);
        }
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::config(field("ca_file"), format!("{}: {e}", tls.ca_file)))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| Error::config(field("cert_file"), e.to_string()))?;
        Ok(Some(TlsConnector(HttpClient::new(client))))
    }
}

/// A Prometheus duration (`90s`, `1m30s`, `500ms`), as Thanos reads `model.Duration`.
pub(super) fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    strata_time::duration::parse_ms(s.trim())
        .map(|ms| Duration::from_millis(ms as u64))
        .map_err(|e| e.to_string())
}

pub(super) fn retry_config(max_retries: usize) -> Option<RetryConfig> {
    (max_retries > 0).then(|| RetryConfig {
        max_retries,
        ..RetryConfig::default()
    })
}
