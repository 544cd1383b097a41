//! `type: GCS`: bucket and service-account credentials (inline JSON or a file).

use std::sync::Arc;

use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::Attributes;
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::error::{Error, Result};

use super::http::{retry_config, HttpConfig};
use super::{nullable, required, Built, PutSettings, DEFAULT_PART_SIZE};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GcsConfig {
    #[serde(default, deserialize_with = "nullable")]
    bucket: String,
    /// The service account's JSON key, inline (not a path), as in Thanos.
    #[serde(default, deserialize_with = "nullable")]
    service_account: String,
    #[serde(default, deserialize_with = "nullable")]
    http_config: HttpConfig,
    #[serde(default, deserialize_with = "nullable")]
    max_retries: usize,
    #[serde(default, deserialize_with = "nullable")]
    no_auth: bool,
    // gRPC transport and upload chunking knobs of Google's Go client.
    #[serde(default, rename = "use_grpc")]
    _use_grpc: Option<IgnoredAny>,
    #[serde(default, rename = "grpc_conn_pool_size")]
    _grpc_conn_pool_size: Option<IgnoredAny>,
    #[serde(default, rename = "chunk_size_bytes")]
    _chunk_size_bytes: Option<IgnoredAny>,
}

impl GcsConfig {
    pub(super) fn build(self) -> Result<Built> {
        required("config.bucket", &self.bucket, "the GCS bucket name")?;
        // Without an inline key: GOOGLE_SERVICE_ACCOUNT*, GOOGLE_APPLICATION_CREDENTIALS,
        // then the metadata server, like Google's default credentials in Thanos.
        let mut builder = GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(&self.bucket)
            .with_client_options(self.http_config.client_options(false)?);
        if let Some(c) = self.http_config.tls_connector(false)? {
            builder = builder.with_http_connector(c);
        }
        if !self.service_account.trim().is_empty() {
            check_inline_json_key(&self.service_account)
                .map_err(|m| Error::config("config.service_account", m))?;
            builder = builder.with_service_account_key(&self.service_account);
        }
        if self.no_auth {
            builder = builder.with_skip_signature(true);
        }
        if let Some(retry) = retry_config(self.max_retries) {
            builder = builder.with_retry(retry);
        }
        let store = builder.build().map_err(|e| {
            let field = if self.service_account.trim().is_empty() {
                "config"
            } else {
                "config.service_account"
            };
            Error::config(field, e.to_string())
        })?;
        Ok(Built {
            store: Arc::new(store),
            name: format!("gcs:{}", self.bucket),
            settings: PutSettings {
                part_size: Some(DEFAULT_PART_SIZE),
                attributes: Attributes::new(),
            },
        })
    }
}

/// A cheap shape check so a path or a truncated paste gets a clear message before the
/// credential parser's.
fn check_inline_json_key(text: &str) -> std::result::Result<(), String> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(
            "expected the service account's JSON key inline (starting with `{`), not a file path"
                .to_string(),
        );
    }
    Ok(())
}
