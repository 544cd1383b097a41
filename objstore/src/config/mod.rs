//! Thanos's objstore YAML (`type:`, `config:`, `prefix:`) mapped onto `object_store`
//! builders.
//!
//! Every field Thanos's `FILESYSTEM`, `S3`, `GCS` and `AZURE` providers accept is accepted
//! here, so a Thanos user's file loads unchanged; unknown fields are errors, as they are
//! in Thanos (`yaml.UnmarshalStrict`). Fields that only tune Go's HTTP transport have no
//! counterpart and are ignored. Like Go's YAML decoding, `field:` with no value means the
//! field's zero value.
//!
//! This module owns the document's shape (`type`, `config`, `prefix`), the dispatch on
//! `type` and the YAML helpers the providers share; each provider's `config:` is its own
//! file (`filesystem`, `s3`, `gcs`, `azure`), and `http` holds the HTTP settings the
//! cloud providers share.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{Attributes, ObjectStore};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

use azure::AzureConfig;
use filesystem::FilesystemConfig;
use gcs::GcsConfig;
use s3::S3Config;

mod azure;
mod filesystem;
mod gcs;
mod http;
mod s3;
mod server_name;

pub(crate) use filesystem::filesystem;

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

#[cfg(test)]
mod tests {
    use super::http::parse_duration;
    use super::*;

    pub(super) fn err(yaml: &str) -> String {
        match build(yaml) {
            Ok(b) => panic!("expected an error, built {}", b.name),
            Err(e) => e.to_string(),
        }
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
    fn tls_config_server_name_and_ca_file_are_checked() {
        let s3 = "type: S3\nconfig:\n  bucket: b\n  endpoint: 127.0.0.1:9000\n  access_key: k\n  secret_key: s\n  http_config:\n    tls_config:\n";
        let msg = err(&format!("{s3}      server_name: not a name!\n"));
        assert!(
            msg.contains("config.http_config.tls_config.server_name")
                && msg.contains("not a name!"),
            "{msg}"
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "no certificate here\n").unwrap();
        let yaml = format!(
            "{s3}      server_name: s3.strata.test\n      ca_file: {}\n",
            ca.display()
        );
        let msg = err(&yaml);
        assert!(
            msg.contains("config.http_config.tls_config.ca_file")
                && msg.contains("no PEM certificate"),
            "{msg}"
        );
        build(&format!("{s3}      server_name: s3.strata.test\n")).unwrap();
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
        // Prometheus's order, no repeats, within Go's time.Duration
        for bad in ["", "s", "10", "1x", "-1s", "1.5s", "1s1m", "1s1s", "300y"] {
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
