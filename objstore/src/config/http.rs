//! HTTP settings the cloud providers share (Thanos's `exthttp.HTTPConfig`): timeouts,
//! TLS, retries, and Prometheus durations.

use std::time::Duration;

use object_store::{Certificate, ClientOptions, RetryConfig};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::error::{Error, Result};

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
        for (field, value) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
            if !value.is_empty() {
                return Err(Error::config(
                    format!("config.http_config.tls_config.{field}"),
                    "client certificates (mutual TLS) are not supported",
                ));
            }
        }
        if !tls.server_name.is_empty() {
            tracing::warn!(
                server_name = %tls.server_name,
                "objstore config: http_config.tls_config.server_name is ignored; the endpoint's host name is verified"
            );
        }
        Ok(options)
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
