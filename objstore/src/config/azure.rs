//! `type: AZURE`: storage account, container, endpoint and credentials.

use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;
use object_store::Attributes;
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::error::{Error, Result};

use super::http::{retry_config, HttpConfig};
use super::{nullable, required, Built, PutSettings, DEFAULT_PART_SIZE};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AzureConfig {
    #[serde(default, deserialize_with = "nullable")]
    storage_account: String,
    #[serde(default, deserialize_with = "nullable")]
    storage_account_key: String,
    #[serde(default, deserialize_with = "nullable")]
    storage_connection_string: String,
    #[serde(default, deserialize_with = "nullable")]
    container: String,
    /// Host suffix after the account name (`blob.core.windows.net`), or a full URL.
    #[serde(default, deserialize_with = "nullable")]
    endpoint: String,
    #[serde(default, deserialize_with = "nullable")]
    az_tenant_id: String,
    #[serde(default, deserialize_with = "nullable")]
    client_id: String,
    #[serde(default, deserialize_with = "nullable")]
    client_secret: String,
    #[serde(default, deserialize_with = "nullable")]
    user_assigned_id: String,
    #[serde(default, deserialize_with = "nullable")]
    max_retries: usize,
    #[serde(default, deserialize_with = "nullable")]
    http_config: HttpConfig,
    // Accepted for compatibility; no effect here.
    #[serde(default, rename = "storage_create_container")]
    _storage_create_container: Option<IgnoredAny>,
    #[serde(default, rename = "reader_config")]
    _reader_config: Option<IgnoredAny>,
    #[serde(default, rename = "pipeline_config")]
    _pipeline_config: Option<IgnoredAny>,
    #[serde(default, rename = "msi_resource")]
    _msi_resource: Option<IgnoredAny>,
    #[serde(default, rename = "azure_storage_account_type")]
    _azure_storage_account_type: Option<IgnoredAny>,
}

impl AzureConfig {
    pub(super) fn build(mut self) -> Result<Built> {
        if !self.storage_connection_string.is_empty() {
            if !self.storage_account_key.is_empty() {
                return Err(Error::config(
                    "config.storage_connection_string",
                    "storage_account_key and storage_connection_string cannot both be set",
                ));
            }
            self.apply_connection_string()?;
        }
        required(
            "config.storage_account",
            &self.storage_account,
            "the storage account name",
        )?;
        required(
            "config.container",
            &self.container,
            "the blob container name",
        )?;
        let oauth = [&self.az_tenant_id, &self.client_id, &self.client_secret];
        if oauth.iter().any(|v| !v.is_empty()) && oauth.iter().any(|v| v.is_empty()) {
            return Err(Error::config(
                "config.az_tenant_id",
                "az_tenant_id, client_id and client_secret must be set together",
            ));
        }
        if !self.user_assigned_id.is_empty()
            && (!self.storage_account_key.is_empty() || !self.client_id.is_empty())
        {
            return Err(Error::config(
                "config.user_assigned_id",
                "user_assigned_id cannot be combined with storage_account_key or client_id",
            ));
        }
        let endpoint = self.endpoint.trim().trim_end_matches('/');
        let (url, allow_http) =
            if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
                (endpoint.to_string(), endpoint.starts_with("http://"))
            } else {
                let suffix = if endpoint.is_empty() {
                    "blob.core.windows.net"
                } else {
                    endpoint
                };
                (format!("https://{}.{suffix}", self.storage_account), false)
            };
        // AZURE_* variables supply workload-identity and other credentials when the YAML
        // has none; the account, container and endpoint always come from the YAML.
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_account(&self.storage_account)
            .with_container_name(&self.container)
            .with_endpoint(url)
            .with_client_options(self.http_config.client_options(allow_http)?);
        if let Some(c) = self.http_config.tls_connector(allow_http)? {
            builder = builder.with_http_connector(c);
        }
        if !self.storage_account_key.is_empty() {
            builder = builder.with_access_key(&self.storage_account_key);
        }
        if !self.client_secret.is_empty() {
            builder = builder.with_client_secret_authorization(
                &self.client_id,
                &self.client_secret,
                &self.az_tenant_id,
            );
        }
        if !self.user_assigned_id.is_empty() {
            builder = builder.with_client_id(&self.user_assigned_id);
        }
        if let Some(retry) = retry_config(self.max_retries) {
            builder = builder.with_retry(retry);
        }
        let store = builder.build().map_err(|e| {
            let field = if self.storage_account_key.is_empty() {
                "config"
            } else {
                "config.storage_account_key"
            };
            Error::config(field, e.to_string())
        })?;
        Ok(Built {
            store: Arc::new(store),
            name: format!("azure:{}/{}", self.storage_account, self.container),
            settings: PutSettings {
                part_size: Some(DEFAULT_PART_SIZE),
                attributes: Attributes::new(),
            },
        })
    }

    /// Fills account, key and endpoint from `AccountName=…;AccountKey=…;…`.
    fn apply_connection_string(&mut self) -> Result<()> {
        let mut protocol = "https";
        let mut suffix = None;
        let mut blob_endpoint = None;
        for part in self
            .storage_connection_string
            .split(';')
            .filter(|p| !p.trim().is_empty())
        {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                Error::config(
                    "config.storage_connection_string",
                    format!("expected key=value pairs separated by ';', found {part:?}"),
                )
            })?;
            match key.trim() {
                "AccountName" if self.storage_account.is_empty() => {
                    self.storage_account = value.to_string()
                }
                "AccountKey" => self.storage_account_key = value.to_string(),
                "DefaultEndpointsProtocol" => {
                    protocol = if value == "http" { "http" } else { "https" }
                }
                "EndpointSuffix" => suffix = Some(value.to_string()),
                "BlobEndpoint" => blob_endpoint = Some(value.to_string()),
                _ => {}
            }
        }
        if self.endpoint.is_empty() {
            if let Some(url) = blob_endpoint {
                self.endpoint = url;
            } else if let Some(suffix) = suffix {
                self.endpoint = format!("{protocol}://{}.blob.{suffix}", self.storage_account);
            }
        }
        Ok(())
    }
}
