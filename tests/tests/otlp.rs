//! OTLP metrics end to end: the real OpenTelemetry Python SDK
//! (`opentelemetry-sdk` + `opentelemetry-exporter-otlp-proto-http`, in a venv under
//! `target/`, installed by `scripts/test` or here) pushes a counter, an up-down counter,
//! gauges and a histogram to `strata all` at `/otlp/v1/metrics` (protobuf, gzip); the
//! series and labels equal Prometheus's translation written down from its rules
//! (prometheus/otlptranslator, `UnderscoreEscapingWithSuffixes`). JSON bodies, delta
//! temporality and exponential histograms (partial success) are posted by hand.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use strata_testkit::http::{encode, get_with, post};
use strata_testkit::strata::StrataProc;

/// The venv's python, created with the two packages when missing.
fn otel_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/otel-venv");
    let py = venv.join("bin/python");
    let ok = |py: &PathBuf| {
        Command::new(py)
            .args([
                "-c",
                "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&py) {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 -m venv");
        assert!(st.success(), "python3 -m venv failed");
        let st = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "-q",
                "opentelemetry-sdk",
                "opentelemetry-exporter-otlp-proto-http",
            ])
            .status()
            .expect("pip");
        assert!(st.success(), "pip install of the OpenTelemetry SDK failed");
    }
    assert!(
        ok(&py),
        "the OpenTelemetry SDK is not importable from {py:?}"
    );
    py
}

const SDK_SCRIPT: &str = r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.version import __version__
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.metrics import Observation

url = sys.argv[1]
exporter = OTLPMetricExporter(endpoint=url + "/otlp/v1/metrics",
                              headers={"X-Scope-OrgID": "otel"},
                              compression=Compression.Gzip)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3600000)
resource = Resource.create({
    "service.name": "shop",
    "service.namespace": "demo",
    "service.instance.id": "i-1",
    "deployment.environment": "test",
    "host.name": "h1",
})
from opentelemetry.sdk.metrics.view import View, ExponentialBucketHistogramAggregation
provider = MeterProvider(resource=resource, metric_readers=[reader], views=[
    View(instrument_name="rpc.payload", aggregation=ExponentialBucketHistogramAggregation())])
meter = provider.get_meter("checkout", "1.2.3")

requests = meter.create_counter("http.server.requests", unit="{request}", description="Requests served.")
requests.add(5, {"http.method": "GET", "http.route": "/a"})
requests.add(2, {"http.method": "POST", "http.route": "/b"})

queue = meter.create_up_down_counter("queue.size", unit="{item}")
queue.add(3, {"queue": "q1"})
queue.add(-1, {"queue": "q1"})

temp = meter.create_gauge("room.temperature", unit="Cel")
temp.set(21.5, {"room": "lab"})

meter.create_observable_gauge("cpu.utilization", unit="1",
    callbacks=[lambda options: [Observation(0.25, {"cpu": "0"})]])

duration = meter.create_histogram("http.server.duration", unit="ms")
for v in (5, 50, 500):
    duration.record(v, {"http.route": "/a"})

payload = meter.create_histogram("rpc.payload", unit="By")
for v in (100, 1000, 1000, 10000):
    payload.record(v, {"rpc": "get"})

ok = provider.force_flush(30000)
provider.shutdown()
print(__version__)
sys.exit(0 if ok else 3)
"#;

fn series_of(s: &StrataProc, tenant: &str, selector: &str) -> BTreeSet<Vec<(String, String)>> {
    let (code, body) = get_with(
        &format!("{}/api/v1/series?match[]={}", s.url(), encode(selector)),
        &[("X-Scope-OrgID", tenant)],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .collect()
}

fn value(s: &StrataProc, tenant: &str, q: &str) -> f64 {
    let (code, body) = get_with(
        &format!("{}/api/v1/query?query={}", s.url(), encode(q)),
        &[("X-Scope-OrgID", tenant)],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let r = &v["data"]["result"];
    assert_eq!(r.as_array().map(Vec::len), Some(1), "{q}: {v}");
    r[0]["value"][1].as_str().unwrap().parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

/// Runs `script` with the SDK's python and `s`'s URL as its argument; its stdout.
fn run_sdk(dir: &std::path::Path, script: &str, s: &StrataProc) -> String {
    let py = otel_python();
    let path = dir.join("push.py");
    std::fs::write(&path, script).unwrap();
    let out = Command::new(&py).arg(&path).arg(s.url()).output().unwrap();
    assert!(
        out.status.success(),
        "SDK push failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn opentelemetry_sdk_series_follow_prometheus_translation() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(tmp.path(), &[]);
    let sdk_version = run_sdk(tmp.path(), SDK_SCRIPT, &s);

    // Prometheus's names: units as suffixes (`{…}` units dropped, `ms` →
    // `milliseconds`, `Cel` → `celsius`), `_total` on the monotonic counter, `_ratio` on
    // the gauge of unit 1, the up-down counter a gauge; attributes' dots as `_`;
    // `service.namespace/service.name` → job, `service.instance.id` → instance.
    let id = [("job", "demo/shop"), ("instance", "i-1")];
    let with = |name: &str, extra: &[(&str, &str)]| {
        let mut v = vec![("__name__", name)];
        v.extend(id);
        v.extend(extra);
        labels(&v)
    };
    let mut want: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
    want.insert(with(
        "http_server_requests_total",
        &[("http_method", "GET"), ("http_route", "/a")],
    ));
    want.insert(with(
        "http_server_requests_total",
        &[("http_method", "POST"), ("http_route", "/b")],
    ));
    want.insert(with("queue_size", &[("queue", "q1")]));
    want.insert(with("room_temperature_celsius", &[("room", "lab")]));
    want.insert(with("cpu_utilization_ratio", &[("cpu", "0")]));
    for suffix in ["_sum", "_count"] {
        want.insert(with(
            &format!("http_server_duration_milliseconds{suffix}"),
            &[("http_route", "/a")],
        ));
    }
    // the SDK's default explicit bounds
    for le in [
        "0", "5", "10", "25", "50", "75", "100", "250", "500", "750", "1000", "2500", "5000",
        "7500", "10000", "+Inf",
    ] {
        want.insert(with(
            "http_server_duration_milliseconds_bucket",
            &[("http_route", "/a"), ("le", le)],
        ));
    }
    // the exponential histogram: one native histogram series, no suffixes but the unit
    want.insert(with("rpc_payload_bytes", &[("rpc", "get")]));
    // target_info: the other resource attributes (the SDK adds telemetry.sdk.*)
    want.insert(with(
        "target_info",
        &[
            ("deployment_environment", "test"),
            ("host_name", "h1"),
            ("telemetry_sdk_language", "python"),
            ("telemetry_sdk_name", "opentelemetry"),
            ("telemetry_sdk_version", &sdk_version),
        ],
    ));
    let got = series_of(&s, "otel", r#"{job="demo/shop"}"#);
    assert_eq!(
        got.symmetric_difference(&want).collect::<Vec<_>>(),
        Vec::<&Vec<(String, String)>>::new(),
        "series differ from Prometheus's translation"
    );
    // values
    assert_eq!(
        value(
            &s,
            "otel",
            r#"http_server_requests_total{http_method="GET"}"#
        ),
        5.0
    );
    assert_eq!(value(&s, "otel", "queue_size"), 2.0);
    assert_eq!(value(&s, "otel", "room_temperature_celsius"), 21.5);
    assert_eq!(value(&s, "otel", "cpu_utilization_ratio"), 0.25);
    assert_eq!(
        value(&s, "otel", "http_server_duration_milliseconds_count"),
        3.0
    );
    assert_eq!(
        value(&s, "otel", "http_server_duration_milliseconds_sum"),
        555.0
    );
    for (le, n) in [("5", 1.0), ("50", 2.0), ("500", 3.0), ("+Inf", 3.0)] {
        let q = format!(r#"http_server_duration_milliseconds_bucket{{le="{le}"}}"#);
        assert_eq!(value(&s, "otel", &q), n, "{q}");
    }
    // the exponential histogram as a native histogram: count, sum, and a quantile
    // inside the bucket that holds 1000 (OTLP's buckets are (base^i, base^(i+1)])
    assert_eq!(value(&s, "otel", "histogram_count(rpc_payload_bytes)"), 4.0);
    assert_eq!(
        value(&s, "otel", "histogram_sum(rpc_payload_bytes)"),
        12100.0
    );
    let median = value(&s, "otel", "histogram_quantile(0.5, rpc_payload_bytes)");
    assert!((900.0..=1100.0).contains(&median), "median {median}");
    // metadata: type, help and unit as Prometheus records them
    let (_, body) = get_with(
        &format!(
            "{}/api/v1/metadata?metric=http_server_requests_total",
            s.url()
        ),
        &[("X-Scope-OrgID", "otel")],
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["data"]["http_server_requests_total"],
        serde_json::json!([{"type": "counter", "help": "Requests served.", "unit": ""}])
    );
    // tenant isolation
    assert!(series_of(&s, "other", r#"{job="demo/shop"}"#).is_empty());
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn otlp_json_gzip_partial_success_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(tmp.path(), &[]);
    let url = format!("{}/otlp/v1/metrics", s.url());
    let t = now_ns();
    // a summary, a cumulative sum, a delta sum and two exponential histograms: the
    // delta sum and the histogram of scale -5 are refused as a partial success, the
    // others stored (the other histogram as a native histogram)
    let body = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"api"}}}}]}},
        "scopeMetrics":[{{"metrics":[
          {{"name":"rpc.latency","unit":"s","summary":{{"dataPoints":[{{"timeUnixNano":"{t}","count":"4","sum":2.0,
             "quantileValues":[{{"quantile":0.5,"value":0.4}},{{"quantile":0.99,"value":0.9}}],
             "attributes":[{{"key":"0rpc","value":{{"stringValue":"x"}}}}]}}]}}}},
          {{"name":"bytes.sent","unit":"By","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{{"timeUnixNano":"{t}","asInt":"1024"}}]}}}},
          {{"name":"jobs.done","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{{"timeUnixNano":"{t}","asInt":"1"}},{{"timeUnixNano":"{t}","asInt":"2"}}]}}}},
          {{"name":"size","exponentialHistogram":{{"aggregationTemporality":2,"dataPoints":[{{"timeUnixNano":"{t}","count":"3","sum":6.0,"scale":0,"zeroCount":"1","positive":{{"offset":0,"bucketCounts":["1","1"]}}}}]}}}},
          {{"name":"coarse","exponentialHistogram":{{"aggregationTemporality":2,"dataPoints":[{{"timeUnixNano":"{t}","count":"1","scale":-5,"positive":{{"bucketCounts":["1"]}}}}]}}}}
        ]}}]}}]}}"#
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let (code, resp) = post(
        &url,
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("X-Scope-OrgID", "j"),
        ],
        &gz,
    )
    .unwrap();
    assert_eq!(code, 200, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "3", "{v}");
    let msg = v["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("invalid temporality") && msg.contains("jobs.done"),
        "{msg}"
    );
    assert!(
        msg.contains("coarse") && msg.contains("Scale must be >= -4, was -5"),
        "{msg}"
    );
    let got = series_of(&s, "j", r#"{job="api"}"#);
    let names: BTreeSet<String> = got
        .iter()
        .map(|l| l.iter().find(|(k, _)| k == "__name__").unwrap().1.clone())
        .collect();
    assert_eq!(
        names,
        [
            "bytes_sent_total",
            "rpc_latency_seconds",
            "rpc_latency_seconds_count",
            "rpc_latency_seconds_sum",
            "size"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    // schema 0, zero bucket 1, OTLP buckets (1,2] and (2,4] as native buckets 1 and 2
    assert_eq!(value(&s, "j", "histogram_count(size)"), 3.0);
    assert_eq!(value(&s, "j", "histogram_sum(size)"), 6.0);
    assert_eq!(value(&s, "j", "histogram_fraction(0, 2, size)"), 2.0 / 3.0);
    assert!(got.contains(&labels(&[
        ("__name__", "rpc_latency_seconds"),
        ("job", "api"),
        ("key_0rpc", "x"),
        ("quantile", "0.99"),
    ])));
    // the unit is not repeated when the name has it already
    assert_eq!(value(&s, "j", "bytes_sent_total"), 1024.0);

    // bad bodies are a 400 with a google.rpc.Status; other media types a 415
    let (code, resp) = post(
        &url,
        &[("Content-Type", "application/json")],
        b"{\"resourceMetrics\":7}",
    )
    .unwrap();
    assert_eq!(code, 400, "{resp}");
    assert!(
        resp.contains("failed to decode the OTLP metrics request"),
        "{resp}"
    );
    let (code, resp) = post(&url, &[("Content-Type", "text/plain")], b"x").unwrap();
    assert_eq!(code, 415, "{resp}");
    let (code, _) = post(
        &url,
        &[("Content-Type", "application/x-protobuf")],
        b"\xff\xff",
    )
    .unwrap();
    assert_eq!(code, 400);
}

/// `--distributor.otel-promote-scope-metadata` (Prometheus's `promote_scope_metadata`,
/// off by default: the test above sees no `otel_scope_*` label): every series of a
/// meter carries its name, version, schema URL and attributes.
#[test]
fn opentelemetry_sdk_scope_becomes_labels_when_promoted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(tmp.path(), &["--distributor.otel-promote-scope-metadata"]);
    run_sdk(
        tmp.path(),
        r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
exporter = OTLPMetricExporter(endpoint=sys.argv[1] + "/otlp/v1/metrics")
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3600000)
provider = MeterProvider(resource=Resource.create({"service.name": "shop", "service.instance.id": "i-1"}),
                         metric_readers=[reader])
meter = provider.get_meter("checkout", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0",
                           attributes={"lib.kind": "http"})
meter.create_counter("orders").add(4, {"region": "eu"})
bare = provider.get_meter("bare")
bare.create_counter("pings").add(1)
ok = provider.force_flush(30000)
provider.shutdown()
sys.exit(0 if ok else 3)
"#,
        &s,
    );
    let got = series_of(&s, "anonymous", "orders_total");
    let want: BTreeSet<_> = [labels(&[
        ("__name__", "orders_total"),
        ("job", "shop"),
        ("instance", "i-1"),
        ("region", "eu"),
        ("otel_scope_name", "checkout"),
        ("otel_scope_version", "1.2.3"),
        (
            "otel_scope_schema_url",
            "https://opentelemetry.io/schemas/1.21.0",
        ),
        ("otel_scope_lib_kind", "http"),
    ])]
    .into();
    assert_eq!(got, want);
    // a scope without version or schema URL labels only what it has
    let got = series_of(&s, "anonymous", "pings_total");
    let want: BTreeSet<_> = [labels(&[
        ("__name__", "pings_total"),
        ("job", "shop"),
        ("instance", "i-1"),
        ("otel_scope_name", "bare"),
    ])]
    .into();
    assert_eq!(got, want);
    assert_eq!(value(&s, "anonymous", "orders_total"), 4.0);
}
