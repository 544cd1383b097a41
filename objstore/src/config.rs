//! Thanos's objstore YAML (`type:`, `config:`, `prefix:`) mapped onto `object_store`
//! builders.
//!
//! Every field Thanos's `FILESYSTEM`, `S3`, `GCS` and `AZURE` providers accept is accepted
//! here, so a Thanos user's file loads unchanged; unknown fields are errors, as they are
//! in Thanos (`yaml.UnmarshalStrict`). Fields that only tune Go's HTTP transport have no
//! counterpart and are ignored. Like Go's YAML decoding, `field:` with no value means the
//! field's zero value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{Attribute, Attributes, Certificate, ClientOptions, ObjectStore, RetryConfig};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// Objects larger than this are uploaded in parts of this size (Thanos's S3 default).
pub(crate) const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// S3's smallest part (every part but the last).
const MIN_PART_SIZE: u64 = 5 << 20;
/// Whole-request timeout. `object_store`'s 30 s default fails on a large chunk file or a
/// 64 MiB part over an ordinary link; Thanos sets no overall limit at all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const SUPPORTED_TYPES: &str = "FILESYSTEM, S3, GCS, AZURE";

/// How uploads are written, fixed by the provider config.
#[derive(Debug, Clone, Default)]
pub(crate) struct PutSettings {
    /// Files larger than this go up as a multipart upload of parts this size; `None`
    /// uploads every file in one request.
    pub part_size: Option<u64>,
    /// Attributes set on every object written (S3 `put_user_metadata`).
    pub attributes: Attributes,
}

/// A store built from a config, before the bucket-level `prefix` is applied.
pub(crate) struct Built {
    pub store: Arc<dyn ObjectStore>,
    pub name: String,
    pub settings: PutSettings,
}

/// Parses a Thanos objstore YAML document and builds its store. Building never touches
/// the network; a wrong endpoint or credential shows on the first request.
pub(crate) fn build(yaml: &str) -> Result<Built> {
    // libyaml's Rust port reads a leading byte-order mark (as Windows editors write) as
    // the start of a second document; Thanos's Go parser skips it.
    let yaml = yaml.strip_prefix('\u{feff}').unwrap_or(yaml);
    if yaml.trim().is_empty() {
        return Err(Error::ConfigSyntax {
            message: format!("empty document; expected `type:` ({SUPPORTED_TYPES}) and `config:`"),
        });
    }
    let head: BucketConfig<IgnoredAny> = parse(yaml)?;
    let kind = head.kind.trim().to_ascii_uppercase();
    let mut built = match kind.as_str() {
        "" => {
            return Err(Error::config(
                "type",
                format!("missing; one of {SUPPORTED_TYPES}"),
            ));
        }
        "FILESYSTEM" => parse::<BucketConfig<FilesystemConfig>>(yaml)?
            .config
            .build()?,
        "S3" => parse::<BucketConfig<S3Config>>(yaml)?
            .config
            .build(&env_var)?,
        "GCS" => parse::<BucketConfig<GcsConfig>>(yaml)?.config.build()?,
        "AZURE" => parse::<BucketConfig<AzureConfig>>(yaml)?.config.build()?,
        _ => {
            return Err(Error::config(
                "type",
                format!(
                    "unsupported bucket type {:?}; supported: {SUPPORTED_TYPES}",
                    head.kind
                ),
            ));
        }
    };
    let prefix = head.prefix.trim_matches('/');
    if !prefix.is_empty() {
        let path = ObjectPath::parse(prefix).map_err(|e| Error::config("prefix", e.to_string()))?;
        built.store = Arc::new(PrefixStore::new(built.store, path));
        built.name = format!("{}/{prefix}", built.name);
    }
    Ok(built)
}

/// A store on a local directory, created if missing. Empty directories left by a delete
/// are removed so that listings do not show them.
pub(crate) fn filesystem(dir: &std::path::Path) -> Result<Built> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    let store = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| Error::io(&dir, std::io::Error::other(e)))?
        .with_automatic_cleanup(true);
    Ok(Built {
        store: Arc::new(store),
        name: format!("fs:{}", dir.display()),
        settings: PutSettings {
            part_size: Some(DEFAULT_PART_SIZE),
            attributes: Attributes::new(),
        },
    })
}

fn parse<T: DeserializeOwned>(yaml: &str) -> Result<T> {
    yaml_serde::from_str(yaml).map_err(|e| Error::ConfigSyntax {
        message: e.to_string(),
    })
}

/// Standard base64 with padding (the SSE-C header format).
fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Go's YAML decoding gives an absent or null field its zero value; so does this.
fn nullable<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn required(field: &str, value: &str, what: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::config(field, format!("missing; {what}")));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "C: Default + Deserialize<'de>")
)]
struct BucketConfig<C> {
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    config: C,
    #[serde(default, deserialize_with = "nullable")]
    prefix: String,
}

// ---------------------------------------------------------------------------------------
// FILESYSTEM

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesystemConfig {
    #[serde(default, deserialize_with = "nullable")]
    directory: String,
}

impl FilesystemConfig {
    fn build(self) -> Result<Built> {
        required(
            "config.directory",
            &self.directory,
            "the directory that holds the bucket",
        )?;
        filesystem(std::path::Path::new(&self.directory))
    }
}

// ---------------------------------------------------------------------------------------
// Shared HTTP settings (Thanos's `exthttp.HTTPConfig`)

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
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
    fn client_options(&self, allow_http: bool) -> Result<ClientOptions> {
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

/// Parses a Prometheus duration (`90s`, `1m30s`, `500ms`, `2h`, `1d`, `1w`, `1y`).
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("ms", 1),
        ("m", 60 * 1000),
        ("s", 1000),
    ];
    let bad = || format!("invalid duration {s:?}; expected e.g. 90s, 1m30s or 500ms");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, scale) = UNITS
            .iter()
            .find(|(u, _)| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")))
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        millis = n
            .checked_mul(*scale)
            .and_then(|v| v.checked_add(millis))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(millis))
}

fn retry_config(max_retries: usize) -> Option<RetryConfig> {
    (max_retries > 0).then(|| RetryConfig {
        max_retries,
        ..RetryConfig::default()
    })
}

// ---------------------------------------------------------------------------------------
// S3

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Config {
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

    fn build(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Built> {
        self.validate()?;
        let target = self.target(env)?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&target.url)
            .with_virtual_hosted_style_request(target.virtual_hosted)
            .with_region(&target.region)
            .with_client_options(self.http_config.client_options(target.allow_http)?);
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

// ---------------------------------------------------------------------------------------
// GCS

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcsConfig {
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
    fn build(self) -> Result<Built> {
        required("config.bucket", &self.bucket, "the GCS bucket name")?;
        // Without an inline key: GOOGLE_SERVICE_ACCOUNT*, GOOGLE_APPLICATION_CREDENTIALS,
        // then the metadata server, like Google's default credentials in Thanos.
        let mut builder = GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(&self.bucket)
            .with_client_options(self.http_config.client_options(false)?);
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

// ---------------------------------------------------------------------------------------
// AZURE

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AzureConfig {
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
    fn build(mut self) -> Result<Built> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn err(yaml: &str) -> String {
        match build(yaml) {
            Ok(b) => panic!("expected an error, built {}", b.name),
            Err(e) => e.to_string(),
        }
    }

    fn s3(yaml_config: &str) -> S3Config {
        parse::<BucketConfig<S3Config>>(&format!("type: S3\nconfig:\n{yaml_config}"))
            .unwrap()
            .config
    }

    #[test]
    fn filesystem_parses_with_any_case_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "type: filesystem\nconfig:\n  directory: {}\nprefix: /team-a/\n",
            dir.path().display()
        );
        let built = build(&yaml).unwrap();
        assert!(built.name.ends_with("/team-a"), "{}", built.name);
        assert!(built.name.starts_with("fs:"), "{}", built.name);
    }

    #[test]
    fn filesystem_without_directory_names_the_field() {
        let msg = err("type: FILESYSTEM\nconfig: {}\n");
        assert!(msg.contains("config.directory"), "{msg}");
        let msg = err("type: FILESYSTEM\n");
        assert!(msg.contains("config.directory"), "{msg}");
        let msg = err("type: FILESYSTEM\nconfig:\n  directory:\n");
        assert!(msg.contains("config.directory"), "{msg}");
    }

    #[test]
    fn type_is_required_and_checked() {
        let msg = err("config:\n  directory: /tmp/x\n");
        assert!(
            msg.contains("field type") && msg.contains("FILESYSTEM"),
            "{msg}"
        );
        let msg = err("type: SWIFT\nconfig: {}\n");
        assert!(
            msg.contains("field type") && msg.contains("\"SWIFT\""),
            "{msg}"
        );
        let msg = err("");
        assert!(msg.contains("empty"), "{msg}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let msg = err("type: FILESYSTEM\nconfig:\n  directory: /tmp/x\nprefx: a\n");
        assert!(msg.contains("prefx"), "{msg}");
        let msg = err("type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  bukket: c\n");
        assert!(msg.contains("bukket") && msg.contains("config"), "{msg}");
        let msg = err(
            "type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  http_config:\n    idle_timeout: 1s\n",
        );
        assert!(
            msg.contains("idle_timeout") && msg.contains("http_config"),
            "{msg}"
        );
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
            ("  bucket: b\n  endpoint: e\n  http_config:\n    tls_config:\n      cert_file: c.pem\n", "config.http_config.tls_config.cert_file"),
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

    #[test]
    fn gcs_parses_and_names_bad_fields() {
        let built = build("type: GCS\nconfig:\n  bucket: blocks\n  service_account: ''\n").unwrap();
        assert_eq!(built.name, "gcs:blocks");
        let msg = err("type: gcs\nconfig:\n  service_account: ''\n");
        assert!(msg.contains("config.bucket"), "{msg}");
        let msg = err("type: GCS\nconfig:\n  bucket: b\n  service_account: /etc/gcs.json\n");
        assert!(
            msg.contains("config.service_account") && msg.contains("inline"),
            "{msg}"
        );
        let msg = err("type: GCS\nconfig:\n  bucket: b\n  service_account: |\n    {\"type\": \"service_account\"}\n");
        assert!(msg.contains("config.service_account"), "{msg}");
    }

    #[test]
    fn azure_parses_and_names_bad_fields() {
        let yaml = "type: AZURE\nconfig:\n  storage_account: acct\n  storage_account_key: a2V5\n  container: blocks\n  endpoint: blob.core.chinacloudapi.cn\n";
        assert_eq!(build(yaml).unwrap().name, "azure:acct/blocks");
        let msg = err("type: AZURE\nconfig:\n  storage_account_key: a2V5\n  container: blocks\n");
        assert!(msg.contains("config.storage_account"), "{msg}");
        let msg =
            err("type: AZURE\nconfig:\n  storage_account: acct\n  storage_account_key: a2V5\n");
        assert!(msg.contains("config.container"), "{msg}");
        let msg = err("type: AZURE\nconfig:\n  storage_account: acct\n  storage_account_key: '!!not base64'\n  container: c\n");
        assert!(msg.contains("config.storage_account_key"), "{msg}");
        let msg =
            err("type: AZURE\nconfig:\n  storage_account: acct\n  container: c\n  client_id: x\n");
        assert!(msg.contains("config.az_tenant_id"), "{msg}");

        let yaml = "type: AZURE\nconfig:\n  container: blocks\n  storage_connection_string: DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net\n";
        assert_eq!(build(yaml).unwrap().name, "azure:acct/blocks");
    }

    #[test]
    fn durations_parse_like_prometheus() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("1h1ms"),
            Ok(Duration::from_millis(3_600_001))
        );
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "10", "1x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        // A 32-byte SSE-C key, as `openssl rand -base64 32` would print it.
        assert_eq!(
            base64(&[7u8; 32]),
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
        );
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }
}

/// The YAML edge cases a change of YAML crate could move (the move from `serde_yaml` to
/// `yaml_serde` kept every one): the exact error text users see, anchors and aliases,
/// and what is refused.
#[cfg(test)]
mod yaml_tests {
    use super::*;

    fn err(yaml: &str) -> String {
        match build(yaml) {
            Ok(b) => panic!("expected an error, built {}", b.name),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unknown_and_duplicate_keys_are_named_with_their_position() {
        assert_eq!(
            err("type: FILESYSTEM\nconfig:\n  directory: /tmp/x\nprefx: a\n"),
            "objstore config: unknown field `prefx`, expected one of `type`, `config`, `prefix` at line 4 column 1"
        );
        assert_eq!(
            err("type: S3\nconfig:\n  bucket: b\n  bucket: c\n  endpoint: e\n"),
            "objstore config: config: duplicate field `bucket` at line 3 column 3"
        );
        assert_eq!(
            err("type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  insecure: yes\n"),
            "objstore config: config.insecure: invalid type: string \"yes\", expected a boolean at line 5 column 13"
        );
        assert_eq!(
            err("type: S3\nconfig:\n\tbucket: b\n"),
            "objstore config: found character that cannot start any token at line 3 column 1, while scanning for the next token"
        );
    }

    #[test]
    fn anchors_and_aliases_resolve_but_merge_keys_and_streams_do_not() {
        let built = build("type: &t S3\nconfig:\n  bucket: *t\n  endpoint: e\n").unwrap();
        assert_eq!(built.name, "s3:S3");
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "type: FILESYSTEM\nconfig: &c\n  directory: {}\nprefix: *c\n",
            dir.path().display()
        );
        assert!(
            err(&yaml).contains("prefix"),
            "a mapping alias where a string belongs"
        );
        // YAML 1.1 merge keys are not applied (Go's yaml.v2 would); the key is refused
        // by name rather than silently ignored.
        let msg = err("type: S3\nconfig:\n  <<: {bucket: b}\n  endpoint: e\n");
        assert!(msg.contains("unknown field `<<`"), "{msg}");
        let msg = err("type: S3\nconfig:\n  bucket: b\n  endpoint: e\n---\ntype: GCS\n");
        assert!(msg.contains("more than one document"), "{msg}");
        // A recursive alias is an error, never a hang.
        let msg = err("type: S3\nconfig: &a\n  bucket: [*a]\n");
        assert!(msg.starts_with("objstore config:"), "{msg}");
    }

    #[test]
    fn flow_style_tags_and_a_bom_parse() {
        build("--- !!map\ntype: !!str S3\nconfig: {bucket: b, endpoint: 'e'}\n...\n").unwrap();
        // Windows editors' byte-order mark (refused as "more than one document" before).
        build("\u{feff}type: S3\nconfig:\n  bucket: b\n  endpoint: e\n").unwrap();
        build("\u{feff}--- !!map\ntype: S3\nconfig: {bucket: b, endpoint: e}\n").unwrap();
    }
}
