//! Metric metadata and exemplars end to end: a real Prometheus 2.42 scrapes an
//! OpenMetrics target (HELP, TYPE, UNIT and exemplars) and remote-writes to `strata
//! all` with `metadata_config` and `send_exemplars`; Strata's `/api/v1/metadata` and
//! `/api/v1/query_exemplars` answer what that Prometheus answers, per tenant, and
//! still do after a kill -9 and restart. (Debian's Prometheus 2.42 does not send
//! `remote_write.headers`, so its writes land in the default tenant.)

use std::time::{Duration, Instant};

use strata_testkit::http::{encode, get_with};
use strata_testkit::procs::Prometheus;
use strata_testkit::strata::StrataProc;

/// An OpenMetrics target: three families (counter, histogram with a unit, gauge with a
/// unit), exemplars with fixed timestamps (so every scrape repeats the same ones and
/// Prometheus stores each once).
const EXPOSITION: &str = r#"# HELP demo_requests Requests handled.
# TYPE demo_requests counter
demo_requests_total{path="/a"} 42 # {trace_id="abc"} 1.0 1700000000.000
demo_requests_total{path="/b"} 7 # {trace_id="def",span_id="12"} 2.5 1700000001.500
# HELP demo_latency_seconds Request latency.
# TYPE demo_latency_seconds histogram
# UNIT demo_latency_seconds seconds
demo_latency_seconds_bucket{le="0.1"} 3 # {trace_id="ghi"} 0.05 1700000002.250
demo_latency_seconds_bucket{le="+Inf"} 5 # {trace_id="jkl"} 0.7 1700000003.000
demo_latency_seconds_sum 1.5
demo_latency_seconds_count 5
# HELP demo_temperature_celsius Room temperature.
# TYPE demo_temperature_celsius gauge
# UNIT demo_temperature_celsius celsius
demo_temperature_celsius 21.5
# EOF
"#;

/// Serve [`EXPOSITION`] as `application/openmetrics-text` on a loopback port.
fn openmetrics_target() -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{EXPOSITION}",
                EXPOSITION.len()
            );
        }
    });
    port
}

fn get_data(url: &str, tenant: &str) -> serde_json::Value {
    let (code, body) = get_with(url, &[("X-Scope-OrgID", tenant)]).unwrap();
    assert_eq!(code, 200, "{url}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{url}: {v}");
    v["data"].clone()
}

/// Exemplar answers sorted by series labels (both servers list series in map order).
fn sorted(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(a) = v.as_array_mut() {
        a.sort_by_key(|s| s["seriesLabels"].to_string());
    }
    v
}

fn poll<T: PartialEq + std::fmt::Debug>(what: &str, mut f: impl FnMut() -> (T, T)) -> T {
    let start = Instant::now();
    loop {
        let (a, b) = f();
        if a == b {
            return a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{what}: never equal:\nstrata:     {a:?}\nprometheus: {b:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn metadata_and_exemplars_equal_prometheus() {
    let tmp = tempfile::tempdir().unwrap();
    let mut strata = StrataProc::start_all(&tmp.path().join("strata"), &[]);
    let target = openmetrics_target();
    let config = format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: demo
    static_configs:
      - targets: ['127.0.0.1:{target}']
remote_write:
  - url: {}/api/v1/push
    send_exemplars: true
    metadata_config:
      send: true
      send_interval: 1s
    queue_config:
      batch_send_deadline: 1s
"#,
        strata.url()
    );
    let mut prom = Prometheus::start(
        &tmp.path().join("prom"),
        &config,
        &["--enable-feature=exemplar-storage"],
    );

    // metadata: the whole answer, then each parameter
    let meta =
        |base: &str, tenant: &str, q: &str| get_data(&format!("{base}/api/v1/metadata{q}"), tenant);
    let all = poll("metadata", || {
        let p = meta(&prom.url(), "", "");
        let s = meta(&strata.url(), "anonymous", "");
        // wait until Prometheus has scraped at least once
        if p.as_object().is_none_or(|o| o.len() < 3) {
            return (serde_json::Value::Null, serde_json::json!(0));
        }
        (s, p)
    });
    assert_eq!(
        all["demo_latency_seconds"],
        serde_json::json!([{"type": "histogram", "help": "Request latency.", "unit": "seconds"}])
    );
    assert_eq!(all["demo_requests"][0]["type"], "counter");
    for q in [
        "?metric=demo_requests",
        "?metric=nope",
        "?limit=0",
        "?limit_per_metric=1",
    ] {
        assert_eq!(
            meta(&strata.url(), "anonymous", q),
            meta(&prom.url(), "", q),
            "{q}"
        );
    }
    // `limit=2`: two of the three families (which two is up to each server)
    let two = meta(&strata.url(), "anonymous", "?limit=2");
    assert_eq!(two.as_object().unwrap().len(), 2, "{two}");
    let (code, body) = get_with(&format!("{}/api/v1/metadata?limit=x", strata.url()), &[]).unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("limit must be a number"), "{body}");
    // another tenant sees nothing
    assert_eq!(meta(&strata.url(), "team-b", ""), serde_json::json!({}));

    // exemplars over the whole range and a narrow one
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let ranges = [
        format!("start=1699999990&end={now_s}"),
        "start=1700000001.5&end=1700000002.25".to_string(),
    ];
    let exemplars = |base: &str, tenant: &str, query: &str, range: &str| {
        sorted(get_data(
            &format!(
                "{base}/api/v1/query_exemplars?query={}&{range}",
                encode(query)
            ),
            tenant,
        ))
    };
    let q = r#"demo_requests_total or rate(demo_latency_seconds_bucket[1m])"#;
    let got = poll("exemplars", || {
        let p = exemplars(&prom.url(), "", q, &ranges[0]);
        if p.as_array().is_none_or(|a| a.len() < 4) {
            return (serde_json::Value::Null, serde_json::json!(0));
        }
        (exemplars(&strata.url(), "anonymous", q, &ranges[0]), p)
    });
    assert_eq!(got.as_array().unwrap().len(), 4, "{got}");
    let narrow = exemplars(&strata.url(), "anonymous", q, &ranges[1]);
    assert_eq!(narrow, exemplars(&prom.url(), "", q, &ranges[1]));
    assert_eq!(narrow.as_array().unwrap().len(), 2, "{narrow}");
    let one = exemplars(
        &strata.url(),
        "anonymous",
        r#"demo_requests_total{path="/b"}"#,
        &ranges[0],
    );
    assert_eq!(
        one,
        serde_json::json!([{
            "seriesLabels": {"__name__": "demo_requests_total", "instance": format!("127.0.0.1:{target}"), "job": "demo", "path": "/b"},
            "exemplars": [{"labels": {"span_id": "12", "trace_id": "def"}, "value": "2.5", "timestamp": 1700000001.5}]
        }])
    );
    assert_eq!(
        exemplars(&strata.url(), "team-b", q, &ranges[0]),
        serde_json::json!([])
    );

    // both survive kill -9: metadata from its file, exemplars from the WAL
    prom.stop();
    let meta_before = meta(&strata.url(), "anonymous", "");
    let ex_before = exemplars(&strata.url(), "anonymous", q, &ranges[0]);
    strata.kill9();
    strata.restart();
    assert_eq!(meta(&strata.url(), "anonymous", ""), meta_before);
    assert_eq!(
        exemplars(&strata.url(), "anonymous", q, &ranges[0]),
        ex_before
    );
}

/// POST with curl to see the answer's headers: (status, lowercased head).
fn post_head(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, body).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--data-binary"])
        .arg(format!("@{}", f.display()))
        .args(["-H", &format!("Content-Type: {content_type}")])
        .args([
            "-H",
            "Content-Encoding: snappy",
            "-H",
            "X-Scope-OrgID: v2",
            url,
        ])
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

/// Remote write 2.0's per-series metadata (named after the series without a
/// histogram's `_count`) and exemplars, and the `Exemplars-Written` count (a duplicate
/// is accepted, not written again).
#[test]
fn remote_write_2_metadata_and_exemplars() {
    use strata_proto::write_v2;
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(tmp.path(), &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let symbols = [
        "",
        "__name__",
        "rpc_seconds_count",
        "job",
        "api",
        "trace_id",
        "t1",
        "Calls.",
        "seconds",
    ];
    let req = |t: i64| write_v2::Request {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        timeseries: vec![write_v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![write_v2::Sample {
                value: 3.0,
                timestamp: t,
            }],
            exemplars: vec![write_v2::Exemplar {
                labels_refs: vec![5, 6],
                value: 0.25,
                timestamp: t,
            }],
            metadata: Some(write_v2::Metadata {
                r#type: write_v2::metadata::MetricType::Histogram as i32,
                help_ref: 7,
                unit_ref: 8,
            }),
            ..Default::default()
        }],
    };
    let url = format!("{}/api/v1/push", s.url());
    let ct = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    let body = strata_proto::encode_snappy_message(&req(now));
    let (status, head) = post_head(&url, ct, &body);
    assert!((200..300).contains(&status), "{head}");
    assert!(
        head.contains("x-prometheus-remote-write-exemplars-written: 1"),
        "{head}"
    );
    let (_, head) = post_head(&url, ct, &body);
    assert!(
        head.contains("x-prometheus-remote-write-exemplars-written: 0"),
        "{head}"
    );
    assert_eq!(
        get_data(&format!("{}/api/v1/metadata", s.url()), "v2"),
        serde_json::json!({"rpc_seconds": [{"type": "histogram", "help": "Calls.", "unit": "seconds"}]})
    );
    let ex = get_data(
        &format!(
            "{}/api/v1/query_exemplars?query=rpc_seconds_count&start=0&end={}",
            s.url(),
            now / 1000 + 60
        ),
        "v2",
    );
    assert_eq!(
        ex[0]["exemplars"][0]["labels"],
        serde_json::json!({"trace_id": "t1"})
    );
    assert_eq!(ex[0]["exemplars"][0]["value"], "0.25");
}

/// A standalone ingester and a querier that reads it over gRPC (not in process):
/// metadata and exemplars arrive through the `strata.metadata.v1` services; the
/// ingester answers `/api/v1/metadata` itself too.
#[test]
fn querier_reads_metadata_and_exemplars_over_grpc() {
    use strata_proto::prometheus::{metric_metadata::MetricType, Exemplar, Label, MetricMetadata};
    use strata_testkit::strata::{series, write_request};
    let tmp = tempfile::tempdir().unwrap();
    let ing = StrataProc::start_with_grpc(
        &tmp.path().join("ing"),
        &[
            "ingester",
            &format!("--tsdb.path={}", tmp.path().join("ing").display()),
        ],
    );
    let q = StrataProc::start_http_only(
        &tmp.path().join("q"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", ing.grpc_port),
        ],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut s = series(&[("__name__", "jobs_total"), ("queue", "a")], &[(now, 1.0)]);
    s.exemplars = vec![Exemplar {
        labels: vec![Label {
            name: "trace_id".into(),
            value: "abc".into(),
        }],
        value: 1.0,
        timestamp: now,
    }];
    let mut req = write_request(vec![s]);
    req.metadata = vec![MetricMetadata {
        r#type: MetricType::Counter as i32,
        metric_family_name: "jobs".into(),
        help: "Jobs done.".into(),
        unit: String::new(),
    }];
    let (code, body) = ing.push(Some("t"), &req);
    assert_eq!(code, 200, "{body}");
    let want = serde_json::json!({"jobs": [{"type": "counter", "help": "Jobs done.", "unit": ""}]});
    assert_eq!(get_data(&format!("{}/api/v1/metadata", q.url()), "t"), want);
    assert_eq!(
        get_data(&format!("{}/api/v1/metadata", ing.url()), "t"),
        want
    );
    assert_eq!(
        get_data(&format!("{}/api/v1/metadata", q.url()), "other"),
        serde_json::json!({})
    );
    let ex = get_data(
        &format!(
            "{}/api/v1/query_exemplars?query={}&start=0&end={}",
            q.url(),
            encode(r#"jobs_total{queue="a"}"#),
            now / 1000 + 60
        ),
        "t",
    );
    assert_eq!(
        ex[0]["seriesLabels"],
        serde_json::json!({"__name__": "jobs_total", "queue": "a"})
    );
    assert_eq!(ex[0]["exemplars"][0]["labels"]["trace_id"], "abc");
}
