//! `type: S3`: endpoint, region and addressing style, credentials (the YAML, else
//! `AWS_*` variables), server-side encryption, upload part size.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{Attribute, Attributes};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::error::{Error, Result};

use super::http::{retry_config, HttpConfig};
use super::{base64, nullable, required, Built, PutSettings, DEFAULT_PART_SIZE, MIN_PART_SIZE};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct S3Config {
    #[serde(default, deserialize_with = "nullable")]
    bucket: String,
    #[serde(default, deserialize_with = "nullable")]
    endpoint: String,
    #[serde(default, deserialize_with = "nullable")]
    region: String,
    #[serde(default, deserialize_with = "nullable")]
    aws_sdk_auth: bool,
    #[serde(default, deserialize_with = "nullable")]
    access_key: String,
    #[serde(default, deserialize_with = "nullable")]
    secret_key: String,
    #[serde(default, deserialize_with = "nullable")]
    session_token: String,
    #[serde(default, deserialize_with = "nullable")]
    insecure: bool,
    #[serde(default, deserialize_with = "nullable")]
    signature_version2: bool,
    #[serde(default, deserialize_with = "nullable")]
    put_user_metadata: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    http_config: HttpConfig,
    #[serde(default, deserialize_with = "nullable")]
    list_objects_version: String,
    #[serde(default, deserialize_with = "nullable")]
    bucket_lookup_type: String,
    #[serde(default, deserialize_with = "nullable")]
    disable_multipart: bool,
    #[serde(default, deserialize_with = "nullable")]
    part_size: u64,
    #[serde(default, deserialize_with = "nullable")]
    sse_config: SseConfig,
    #[serde(default, deserialize_with = "nullable")]
    sts_endpoint: String,
    #[serde(default, deserialize_with = "nullable")]
    max_retries: usize,
    // Accepted for compatibility; no effect here.
    #[serde(default, rename = "disable_dualstack")]
    _disable_dualstack: Option<IgnoredAny>,
    #[serde(default, rename = "trace")]
    _trace: Option<IgnoredAny>,
    #[serde(default, rename = "send_content_md5")]
    _send_content_md5: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SseConfig {
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    kms_key_id: String,
    #[serde(default, deserialize_with = "nullable")]
    kms_encryption_context: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    encryption_key: String,
}

/// Where and how requests go, worked out from `endpoint`, `insecure`, `region` and
/// `bucket_lookup_type`.
#[derive(Debug, PartialEq, Eq)]
struct S3Target {
    /// Base URL given to `object_store`: `scheme://host[:port]`, with the bucket as the
    /// first host label for virtual-hosted requests.
    url: String,
    virtual_hosted: bool,
    allow_http: bool,
    region: String,
}

/// `AWS_*` variables that carry credentials. Everything else `AmazonS3Builder::from_env`
/// would read (endpoint, bucket, `AWS_ENDPOINT_URL_S3`, …) is left out so the YAML stays
/// the one source of where data goes.
const AWS_CREDENTIAL_VARS: [&str; 12] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_METADATA_ENDPOINT",
    "AWS_IMDSV1_FALLBACK",
];

impl S3Config {
    fn validate(&self) -> Result<()> {
        required("config.bucket", &self.bucket, "the S3 bucket name")?;
        required(
            "config.endpoint",
            &self.endpoint,
            "host[:port] of the S3 API, e.g. s3.eu-west-1.amazonaws.com or minio:9000",
        )?;
        if self.signature_version2 {
            return Err(Error::config(
                "config.signature_version2",
                "AWS signature version 2 is not supported; remove the field to sign with version 4, which every S3-compatible store accepts",
            ));
        }
        if self.aws_sdk_auth && !self.access_key.is_empty() {
            return Err(Error::config(
                "config.aws_sdk_auth",
                "aws_sdk_auth and access_key are mutually exclusive",
            ));
        }
        if self.access_key.is_empty() != self.secret_key.is_empty() {
            let (field, other) = if self.access_key.is_empty() {
                ("config.access_key", "secret_key")
            } else {
                ("config.secret_key", "access_key")
            };
            return Err(Error::config(
                field,
                format!("missing while {other} is set; set both, or neither to take credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the instance role"),
            ));
        }
        match self.list_objects_version.as_str() {
            "" | "v2" => {}
            "v1" => tracing::warn!(
                "objstore config: list_objects_version v1 is ignored; listing uses ListObjectsV2"
            ),
            other => {
                return Err(Error::config(
                    "config.list_objects_version",
                    format!("unsupported value {other:?}; one of v1, v2"),
                ));
            }
        }
        if self.part_size != 0 && self.part_size < MIN_PART_SIZE {
            return Err(Error::config(
                "config.part_size",
                format!(
                    "{} bytes is below S3's minimum part size of {MIN_PART_SIZE} bytes (5 MiB)",
                    self.part_size
                ),
            ));
        }
        Ok(())
    }

    fn target(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<S3Target> {
        let endpoint = self.endpoint.trim();
        // Thanos takes a bare host[:port] and picks the scheme from `insecure`; a full URL
        // is accepted too and its scheme wins.
        let (scheme, host_port) = if let Some(rest) = endpoint.strip_prefix("http://") {
            ("http", rest)
        } else if let Some(rest) = endpoint.strip_prefix("https://") {
            ("https", rest)
        } else if self.insecure {
            ("http", endpoint)
        } else {
            ("https", endpoint)
        };
        let host_port = host_port.trim_end_matches('/');
        if host_port.is_empty() || host_port.contains('/') {
            return Err(Error::config(
                "config.endpoint",
                format!("{endpoint:?} must be host[:port] without a path"),
            ));
        }
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => host_port.split(':').next().unwrap_or(host_port),
        };
        let aws = host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn");
        let virtual_hosted = match self.bucket_lookup_type.as_str() {
            "path" => false,
            "virtual-hosted" => true,
            // As minio-go does: virtual-hosted on AWS, except for dotted bucket names over
            // TLS (the wildcard certificate does not cover them); path style elsewhere
            // (MinIO, Ceph, SeaweedFS, …), which is what their users expect.
            "" | "auto" => aws && !(scheme == "https" && self.bucket.contains('.')),
            other => {
                return Err(Error::config(
                    "config.bucket_lookup_type",
                    format!("unsupported value {other:?}; one of auto, virtual-hosted, path"),
                ));
            }
        };
        let url = if virtual_hosted {
            format!("{scheme}://{}.{host_port}", self.bucket)
        } else {
            format!("{scheme}://{host_port}")
        };
        let region = [
            Some(self.region.trim().to_string()).filter(|r| !r.is_empty()),
            aws.then(|| aws_region_of(host)).flatten(),
            env("AWS_REGION"),
            env("AWS_DEFAULT_REGION"),
        ]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or_else(|| "us-east-1".to_string());
        Ok(S3Target {
            url,
            virtual_hosted,
            allow_http: scheme == "http",
            region,
        })
    }

    pub(super) fn build(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Built> {
        self.validate()?;
        let target = self.target(env)?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&target.url)
            .with_virtual_hosted_style_request(target.virtual_hosted)
            .with_region(&target.region)
            .with_client_options(self.http_config.client_options(target.allow_http)?);
        if let Some(c) = self.http_config.tls_connector(target.allow_http)? {
            builder = builder.with_http_connector(c);
        }
        if self.access_key.is_empty() {
            for var in AWS_CREDENTIAL_VARS {
                if let (Some(value), Ok(key)) = (
                    env(var),
                    var.to_ascii_lowercase().parse::<AmazonS3ConfigKey>(),
                ) {
                    builder = builder.with_config(key, value);
                }
            }
        } else {
            builder = builder
                .with_access_key_id(&self.access_key)
                .with_secret_access_key(&self.secret_key);
            if !self.session_token.is_empty() {
                builder = builder.with_token(&self.session_token);
            }
        }
        if !self.sts_endpoint.is_empty() {
            builder = builder.with_config(AmazonS3ConfigKey::StsEndpoint, &self.sts_endpoint);
        }
        if let Some(retry) = retry_config(self.max_retries) {
            builder = builder.with_retry(retry);
        }
        builder = self.sse_config.apply(builder)?;
        let store = builder
            .build()
            .map_err(|e| Error::config("config", e.to_string()))?;

        let mut attributes = Attributes::new();
        for (key, value) in &self.put_user_metadata {
            // Thanos turns this one key into the storage-class header.
            let attribute = if key.eq_ignore_ascii_case("X-Amz-Storage-Class") {
                Attribute::StorageClass
            } else {
                Attribute::Metadata(key.clone().into())
            };
            attributes.insert(attribute, value.clone().into());
        }
        Ok(Built {
            store: Arc::new(store),
            name: format!("s3:{}", self.bucket),
            settings: PutSettings {
                part_size: (!self.disable_multipart).then_some(if self.part_size == 0 {
                    DEFAULT_PART_SIZE
                } else {
                    self.part_size
                }),
                attributes,
            },
        })
    }
}

/// The region named by an AWS S3 endpoint: `s3.eu-west-1.amazonaws.com`,
/// `s3-eu-west-1.amazonaws.com`, `s3.dualstack.eu-west-1.amazonaws.com`. The global
/// `s3.amazonaws.com` names none.
fn aws_region_of(host: &str) -> Option<String> {
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let last = rest.rsplit('.').next()?;
    let region = last.strip_prefix("s3-").unwrap_or(last);
    let looks_like_region = region.contains('-') && region.ends_with(|c: char| c.is_ascii_digit());
    looks_like_region.then(|| region.to_string())
}

impl SseConfig {
    fn apply(&self, builder: AmazonS3Builder) -> Result<AmazonS3Builder> {
        if !self.kms_encryption_context.is_empty() {
            return Err(Error::config(
                "config.sse_config.kms_encryption_context",
                "a KMS encryption context is not supported",
            ));
        }
        match self.kind.as_str() {
            "" => Ok(builder),
            "SSE-S3" => {
                let key: AmazonS3ConfigKey =
                    "aws_server_side_encryption"
                        .parse()
                        .map_err(|e: object_store::Error| {
                            Error::config("config.sse_config.type", e.to_string())
                        })?;
                Ok(builder.with_config(key, "AES256"))
            }
            "SSE-KMS" => {
                required(
                    "config.sse_config.kms_key_id",
                    &self.kms_key_id,
                    "required when sse_config.type is SSE-KMS",
                )?;
                Ok(builder.with_sse_kms_encryption(&self.kms_key_id))
            }
            "SSE-C" => {
                let field = "config.sse_config.encryption_key";
                required(field, &self.encryption_key, "the path of a file holding the 32-byte key, required when sse_config.type is SSE-C")?;
                let key = std::fs::read(&self.encryption_key).map_err(|e| {
                    Error::config(field, format!("reading {}: {e}", self.encryption_key))
                })?;
                if key.len() != 32 {
                    return Err(Error::config(
                        field,
                        format!(
                            "{} holds {} bytes; an SSE-C key is exactly 32 bytes",
                            self.encryption_key,
                            key.len()
                        ),
                    ));
                }
                Ok(builder.with_ssec_encryption(base64(&key)))
            }
            other => Err(Error::config(
                "config.sse_config.type",
                format!("unsupported value {other:?}; one of SSE-S3, SSE-KMS, SSE-C"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::err;
    use super::super::{build, parse, BucketConfig};
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn s3(yaml_config: &str) -> S3Config {
        parse::<BucketConfig<S3Config>>(&format!("type: S3\nconfig:\n{yaml_config}"))
            .unwrap()
            .config
    }

    #[test]
    fn s3_minio_style_is_path_style_over_http() {
        let config = s3("  bucket: blocks\n  endpoint: 127.0.0.1:9000\n  access_key: k\n  secret_key: s\n  insecure: true\n");
        let target = config.target(&no_env).unwrap();
        assert_eq!(
            target,
            S3Target {
                url: "http://127.0.0.1:9000".into(),
                virtual_hosted: false,
                allow_http: true,
                region: "us-east-1".into(),
            }
        );
        let built = config.build(&no_env).unwrap();
        assert_eq!(built.name, "s3:blocks");
        assert_eq!(built.settings.part_size, Some(DEFAULT_PART_SIZE));
    }

    #[test]
    fn s3_aws_is_virtual_hosted_with_region_from_endpoint() {
        let config = s3("  bucket: blocks\n  endpoint: s3.eu-west-1.amazonaws.com\n");
        let target = config.target(&no_env).unwrap();
        assert_eq!(target.url, "https://blocks.s3.eu-west-1.amazonaws.com");
        assert!(target.virtual_hosted && !target.allow_http);
        assert_eq!(target.region, "eu-west-1");

        // Dotted bucket names cannot use the wildcard certificate.
        let config = s3("  bucket: my.blocks\n  endpoint: s3-us-west-2.amazonaws.com\n");
        let target = config.target(&no_env).unwrap();
        assert_eq!(target.url, "https://s3-us-west-2.amazonaws.com");
        assert_eq!(target.region, "us-west-2");

        // An explicit region wins; the global endpoint falls back to the environment.
        let config = s3("  bucket: b\n  endpoint: s3.amazonaws.com\n  region: ap-south-1\n");
        assert_eq!(config.target(&no_env).unwrap().region, "ap-south-1");
        let config = s3("  bucket: b\n  endpoint: s3.amazonaws.com\n");
        let env = |k: &str| (k == "AWS_REGION").then(|| "sa-east-1".to_string());
        assert_eq!(config.target(&env).unwrap().region, "sa-east-1");

        let config =
            s3("  bucket: b\n  endpoint: minio:9000\n  bucket_lookup_type: virtual-hosted\n");
        assert_eq!(config.target(&no_env).unwrap().url, "https://b.minio:9000");
        let config = s3("  bucket: b\n  endpoint: http://minio:9000/\n");
        let target = config.target(&no_env).unwrap();
        assert_eq!(
            (target.url.as_str(), target.allow_http),
            ("http://minio:9000", true)
        );
    }

    #[test]
    fn s3_takes_credentials_from_the_environment_only_when_the_yaml_has_none() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("env-key".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("env-secret".to_string()),
            "AWS_ENDPOINT_URL_S3" => Some("http://elsewhere:1".to_string()),
            _ => None,
        };
        // Builds (static credentials from the environment, endpoint from the YAML).
        s3("  bucket: b\n  endpoint: minio:9000\n")
            .build(&env)
            .unwrap();
        for var in AWS_CREDENTIAL_VARS {
            assert!(
                var.to_ascii_lowercase()
                    .parse::<AmazonS3ConfigKey>()
                    .is_ok(),
                "{var} is not an object_store key"
            );
        }
        assert!(!AWS_CREDENTIAL_VARS.contains(&"AWS_ENDPOINT_URL_S3"));
    }

    #[test]
    fn s3_errors_name_the_field() {
        let cases = [
            ("  endpoint: e\n", "config.bucket"),
            ("  bucket: b\n", "config.endpoint"),
            ("  bucket: b\n  endpoint: e\n  signature_version2: true\n", "config.signature_version2"),
            ("  bucket: b\n  endpoint: e\n  access_key: k\n", "config.secret_key"),
            ("  bucket: b\n  endpoint: e\n  secret_key: s\n", "config.access_key"),
            ("  bucket: b\n  endpoint: e\n  bucket_lookup_type: dns\n", "config.bucket_lookup_type"),
            ("  bucket: b\n  endpoint: e\n  list_objects_version: v3\n", "config.list_objects_version"),
            ("  bucket: b\n  endpoint: e\n  part_size: 1024\n", "config.part_size"),
            ("  bucket: b\n  endpoint: e/path\n", "config.endpoint"),
            ("  bucket: b\n  endpoint: e\n  sse_config:\n    type: SSE-KMS\n", "config.sse_config.kms_key_id"),
            ("  bucket: b\n  endpoint: e\n  sse_config:\n    type: SSE-C\n", "config.sse_config.encryption_key"),
            ("  bucket: b\n  endpoint: e\n  sse_config:\n    type: AES\n", "config.sse_config.type"),
            ("  bucket: b\n  endpoint: e\n  http_config:\n    idle_conn_timeout: soon\n", "config.http_config.idle_conn_timeout"),
            ("  bucket: b\n  endpoint: e\n  http_config:\n    tls_config:\n      cert_file: c.pem\n", "config.http_config.tls_config.key_file"),
            ("  bucket: b\n  endpoint: e\n  http_config:\n    tls_config:\n      ca_file: /nonexistent/ca.pem\n", "config.http_config.tls_config.ca_file"),
        ];
        for (config, field) in cases {
            let msg = err(&format!("type: S3\nconfig:\n{config}"));
            assert!(msg.contains(field), "{field} not named in: {msg}");
        }
        let msg =
            err("type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  signature_version2: true\n");
        assert!(msg.contains("not supported"), "{msg}");
    }

    #[test]
    fn s3_accepts_a_full_thanos_config() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ssec.key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let yaml = format!(
            r#"type: S3
config:
  bucket: "thanos"
  endpoint: "minio:9000"
  region: ""
  aws_sdk_auth: false
  access_key: "k"
  insecure: true
  signature_version2: false
  secret_key: "s"
  session_token: ""
  put_user_metadata:
    X-Amz-Storage-Class: STANDARD_IA
    team: storage
  http_config:
    idle_conn_timeout: 1m30s
    response_header_timeout: 2m
    insecure_skip_verify: false
    tls_handshake_timeout: 10s
    expect_continue_timeout: 1s
    max_idle_conns: 100
    max_idle_conns_per_host: 100
    max_conns_per_host: 0
    tls_config:
      ca_file: ""
      cert_file: ""
      key_file: ""
      server_name: ""
      insecure_skip_verify: false
    disable_compression: false
  trace:
    enable: false
  list_objects_version: ""
  bucket_lookup_type: auto
  send_content_md5: true
  disable_multipart: false
  part_size: 67108864
  sse_config:
    type: "SSE-C"
    kms_key_id: ""
    kms_encryption_context: {{}}
    encryption_key: "{}"
  sts_endpoint: ""
  max_retries: 3
prefix: ""
"#,
            key.display()
        );
        let built = build(&yaml).unwrap();
        assert_eq!(
            built
                .settings
                .attributes
                .get(&Attribute::StorageClass)
                .map(|v| v.as_ref()),
            Some("STANDARD_IA")
        );
        assert_eq!(
            built
                .settings
                .attributes
                .get(&Attribute::Metadata("team".into()))
                .map(|v| v.as_ref()),
            Some("storage")
        );
        let disabled =
            build("type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  disable_multipart: true\n")
                .unwrap();
        assert_eq!(disabled.settings.part_size, None);
    }
}
