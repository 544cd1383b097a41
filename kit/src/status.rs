//! Facts about the running process that every component serves in Prometheus's shapes:
//! `/api/v1/status/flags` (each flag and its effective value), `/api/v1/status/config`
//! (the same, as YAML: Strata is configured by flags, so they are its configuration) and
//! `/api/v1/status/runtimeinfo`.
//!
//! The binary records its flags once at start-up with [`set_flags`]; flags are
//! process-wide, so they are kept process-wide.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

static FLAGS: OnceLock<BTreeMap<String, String>> = OnceLock::new();
static STARTED_MS: OnceLock<i64> = OnceLock::new();

/// Record the process's flags (long name without dashes → value as given or defaulted)
/// and its start time. Later calls are ignored.
pub fn set_flags(flags: BTreeMap<String, String>) {
    started_ms();
    let _ = FLAGS.set(flags);
}

/// The recorded flags (empty when [`set_flags`] was never called, e.g. in library tests).
pub fn flags() -> &'static BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    FLAGS.get().unwrap_or(&EMPTY)
}

fn started_ms() -> i64 {
    *STARTED_MS.get_or_init(now_ms)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The three routes; merged into every component's router by [`crate::http::router`].
pub(crate) fn routes() -> Router {
    started_ms();
    Router::new()
        .route("/api/v1/status/flags", get(flags_handler))
        .route("/api/v1/status/config", get(config_handler))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo_handler))
}

fn success(data: serde_json::Value) -> Response {
    // Prometheus's key order: status first
    let body = format!(r#"{{"status":"success","data":{data}}}"#);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn flags_handler() -> Response {
    success(serde_json::to_value(flags()).unwrap_or_default())
}

/// The flags as a YAML mapping, values quoted so every value reads back as a string.
pub fn config_yaml() -> String {
    let mut out = String::new();
    for (k, v) in flags() {
        out.push_str(k);
        out.push_str(": ");
        // a JSON string is a valid YAML double-quoted scalar
        out.push_str(&serde_json::Value::String(v.clone()).to_string());
        out.push('\n');
    }
    out
}

async fn config_handler() -> Response {
    success(serde_json::json!({ "yaml": config_yaml() }))
}

async fn runtimeinfo_handler() -> Response {
    let started = started_ms();
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let retention = ["tsdb.retention", "retention.resolution-raw"]
        .iter()
        .find_map(|k| flags().get(*k))
        .cloned()
        .unwrap_or_default();
    // Prometheus's keys; the Go runtime's are answered with their nearest Rust facts
    // (threads for goroutines, usable cores for GOMAXPROCS).
    success(serde_json::json!({
        "startTime": strata_time::date::format_rfc3339_ms(started),
        "CWD": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
        "reloadConfigSuccess": true,
        "lastConfigTime": strata_time::date::format_rfc3339_ms(started / 1000 * 1000).replace(".000Z", "Z"),
        "corruptionCount": 0,
        "goroutineCount": threads,
        "GOMAXPROCS": cores,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": retention,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_yaml_quotes_every_value() {
        let mut f = BTreeMap::new();
        f.insert("a.b".to_string(), "x: \"y\"".to_string());
        f.insert("c".to_string(), String::new());
        set_flags(f);
        assert_eq!(config_yaml(), "a.b: \"x: \\\"y\\\"\"\nc: \"\"\n");
    }
}
