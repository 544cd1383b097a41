//! The sidecar beside real Prometheus 2.42 servers: an HA pair end to end through the
//! querier, block shipping with external labels, and a bucket outage.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::gen::{openmetrics, GenSpec};
use strata_testkit::http::{encode, exporter, get, get_json, get_with};
use strata_testkit::procs::{free_port, promtool, run, run_ok, strata, Prometheus};
use strata_testkit::s3::S3Server;
use strata_testkit::strata::StrataProc;

fn prom_config(replica: &str, targets: &[u16]) -> String {
    let t: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: c1\n    replica: {replica}\nscrape_configs:\n  - job_name: ha\n    static_configs:\n      - targets: [{}]\n",
        t.join(", ")
    )
}

const BLOCK_FLAGS: &[&str] = &[
    "--storage.tsdb.min-block-duration=2h",
    "--storage.tsdb.max-block-duration=2h",
];

fn query(url: &str, q: &str) -> Value {
    get_json(&format!("{url}/api/v1/query?query={}", encode(q)))
}

/// Poll `q` until its single scalar-like value is `want`.
fn wait_value(url: &str, q: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = query(url, q);
        if v["data"]["result"][0]["value"][1] == want {
            return v;
        }
        assert!(Instant::now() < deadline, "{q} never became {want}: {v}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn ha_pair_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = exporter();
    let (pa, pb) = (free_port(), free_port());
    let targets = [pa, pb, exp];
    let mut prom_a = Prometheus::start_on(
        &tmp.path().join("prom-a"),
        &prom_config("a", &targets),
        BLOCK_FLAGS,
        pa,
    );
    let prom_b = Prometheus::start_on(
        &tmp.path().join("prom-b"),
        &prom_config("b", &targets),
        BLOCK_FLAGS,
        pb,
    );
    let side_a = StrataProc::start_with_grpc(
        &tmp.path().join("side-a"),
        &[
            "sidecar",
            &format!("--prometheus.url={}", prom_a.url()),
            &format!("--tsdb.path={}", prom_a.data_dir.display()),
        ],
    );
    let side_b = StrataProc::start_with_grpc(
        &tmp.path().join("side-b"),
        &[
            "sidecar",
            &format!("--prometheus.url={}", prom_b.url()),
            &format!("--tsdb.path={}", prom_b.data_dir.display()),
        ],
    );
    let querier = StrataProc::start_http_only(
        &tmp.path().join("querier"),
        &[
            "querier",
            "--query.replica-label=replica",
            &format!("--endpoint=127.0.0.1:{}", side_a.grpc_port),
            &format!("--endpoint=127.0.0.1:{}", side_b.grpc_port),
        ],
    );
    let q = querier.url();
    // three targets, scraped by both replicas: 3 series after dedup, 6 without
    wait_value(&q, "count(up)", "3");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let raw = get_json(&format!(
            "{q}/api/v1/query?query={}&dedup=false",
            encode("count(up)")
        ));
        if raw["data"]["result"][0]["value"][1] == "6" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "without dedup both replicas' 3 series: {raw}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(query(&q, "count(up)")["data"]["result"][0]["value"][1], "3");
    let jobs = wait_value(&q, "sum(demo_jobs_total)", "49");
    assert!(jobs.get("warnings").is_none(), "{jobs}");
    // the external labels are on the series; the replica label is gone after dedup
    let up = query(&q, "up");
    for s in up["data"]["result"].as_array().unwrap() {
        assert_eq!(s["metric"]["cluster"], "c1", "{s}");
        assert!(s["metric"].get("replica").is_none(), "{s}");
    }

    // one replica dies: the same answers, from the other
    prom_a.proc.kill();
    let after = query(&q, "sum(demo_jobs_total)");
    assert_eq!(after["data"]["result"][0]["value"][1], "49", "{after}");
    let count = query(&q, "count(up)");
    assert_eq!(count["data"]["result"][0]["value"][1], "3", "{count}");
    assert!(
        count["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "a down store gives a warning: {count}"
    );
}

/// Backfill 3 h of data into a Prometheus data dir before Prometheus starts.
fn backfill(data_dir: &Path, tmp: &Path) -> Vec<String> {
    let spec = GenSpec {
        min_series: 30,
        ..GenSpec::default()
    };
    let input = tmp.join("backfill.om");
    std::fs::write(&input, openmetrics(&spec).0).unwrap();
    run_ok(
        Command::new(promtool())
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(data_dir),
    );
    let mut ids: Vec<String> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 26)
        .collect();
    ids.sort();
    ids
}

fn bucket_blocks(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap())
                .filter(|e| e.path().join("meta.json").exists())
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn ships_existing_blocks_once_with_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prom");
    std::fs::create_dir_all(&data).unwrap();
    let ids = backfill(&data, tmp.path());
    assert_eq!(ids.len(), 2);
    let prom = Prometheus::start(&data, &prom_config("a", &[]), BLOCK_FLAGS);
    let bucket = tmp.path().join("bucket");
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(
        &cfg,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ),
    )
    .unwrap();
    let a = [
        "sidecar".to_string(),
        format!("--prometheus.url={}", prom.url()),
        format!("--tsdb.path={}", data.display()),
        format!("--objstore.config-file={}", cfg.display()),
        "--tenant=team-a".to_string(),
        "--shipper.interval=1s".to_string(),
    ];
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut side = StrataProc::start_with_grpc(&tmp.path().join("side"), &a);
    let tenant_dir = bucket.join("team-a");
    let deadline = Instant::now() + Duration::from_secs(60);
    while bucket_blocks(&tenant_dir) != ids {
        assert!(
            Instant::now() < deadline,
            "blocks not shipped: {:?}\n{}",
            bucket_blocks(&tenant_dir),
            side.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in &ids {
        let meta: Value =
            serde_json::from_slice(&std::fs::read(tenant_dir.join(id).join("meta.json")).unwrap())
                .unwrap();
        assert_eq!(
            meta["thanos"]["labels"],
            serde_json::json!({"cluster": "c1", "replica": "a"}),
            "{meta}"
        );
        assert_eq!(meta["thanos"]["source"], "sidecar");
        // the Prometheus block itself is untouched
        let orig: Value =
            serde_json::from_slice(&std::fs::read(data.join(id).join("meta.json")).unwrap())
                .unwrap();
        assert!(orig.get("thanos").is_none());
    }
    // a restart neither repeats nor skips: the shipper file lists both (it is written
    // after each upload completes, so it may trail the bucket by a moment)
    let uploaded = || -> usize {
        std::fs::read(data.join("thanos.shipper.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["uploaded"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    strata_testkit::poll(
        "shipper file lists both blocks",
        Duration::from_secs(30),
        || (uploaded() == 2).then_some(()),
    );
    side.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while side.metric("strata_sidecar_shipper_syncs_total") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "shipper never ran after restart:\n{}",
            side.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        side.metric("strata_sidecar_uploads_total"),
        0.0,
        "re-uploaded after restart"
    );

    // the querier reading the bucket returns what Prometheus has for those blocks
    let querier = StrataProc::start_http_only(
        &tmp.path().join("querier"),
        &[
            "querier",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    let end = GenSpec::default().start_ms + 3 * 3600 * 1000 - 1;
    for sel in [
        "http_requests_total",
        "temperature_celsius",
        "request_duration_seconds_bucket",
    ] {
        let path = format!(
            "/api/v1/query?query={}&time={}.{:03}",
            encode(&format!("{sel}[3h]")),
            end / 1000,
            end % 1000
        );
        let (_, ours) = get_with(
            &format!("{}{path}", querier.url()),
            &[("X-Scope-OrgID", "team-a")],
        )
        .unwrap();
        let ours: Value = serde_json::from_str(&ours).unwrap();
        let theirs: Value =
            serde_json::from_str(&get(&format!("{}{path}", prom.url())).unwrap().1).unwrap();
        let mut o: Vec<String> = Vec::new();
        for s in ours["data"]["result"].as_array().unwrap() {
            let mut m = s["metric"].clone();
            let m = m.as_object_mut().unwrap();
            assert_eq!(m.remove("cluster"), Some(Value::from("c1")));
            assert_eq!(m.remove("replica"), Some(Value::from("a")));
            o.push(format!("{m:?} {}", s["values"]));
        }
        let mut t: Vec<String> = theirs["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{:?} {}", s["metric"].as_object().unwrap(), s["values"]))
            .collect();
        o.sort();
        t.sort();
        assert!(!t.is_empty());
        assert_eq!(o.len(), t.len(), "{sel}: series count");
        for (a, b) in o.iter().zip(&t) {
            assert!(a == b, "{sel}: first difference:\n{a}\n{b}");
        }
    }
}

#[test]
fn bucket_outage_then_upload_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prom");
    std::fs::create_dir_all(&data).unwrap();
    let ids = backfill(&data, tmp.path());
    let prom = Prometheus::start(&data, &prom_config("b", &[]), BLOCK_FLAGS);
    let mut s3 = S3Server::start();
    let yaml = s3
        .objstore_yaml("strata")
        .replace("config:\n", "config:\n  max_retries: 1\n");
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(&cfg, yaml).unwrap();
    s3.stop();
    let side = StrataProc::start_with_grpc(
        &tmp.path().join("side"),
        &[
            "sidecar",
            &format!("--prometheus.url={}", prom.url()),
            &format!("--tsdb.path={}", data.display()),
            &format!("--objstore.config-file={}", cfg.display()),
            "--shipper.interval=1s",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while side.metric("strata_sidecar_upload_failures_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no failed upload recorded:\n{}",
            side.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    s3.restart();
    let dir = s3.data_dir().join("strata").join("anonymous");
    let deadline = Instant::now() + Duration::from_secs(120);
    while bucket_blocks(&dir) != ids {
        assert!(
            Instant::now() < deadline,
            "upload never resumed: {:?}\n{}",
            bucket_blocks(&dir),
            side.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // every file of each block made it
    for id in &ids {
        for f in ["index", "chunks/000001", "tombstones"] {
            assert_eq!(
                std::fs::read(dir.join(id).join(f)).unwrap(),
                std::fs::read(data.join(id).join(f)).unwrap(),
                "{id}/{f}"
            );
        }
    }
}

#[test]
fn refuses_to_start_without_external_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(
        &tmp.path().join("prom"),
        "global:\n  scrape_interval: 15s\n",
        &[],
    );
    let out = run(strata().args([
        "sidecar",
        &format!("--prometheus.url={}", prom.url()),
        &format!("--tsdb.path={}", prom.data_dir.display()),
        &format!("--http-address=127.0.0.1:{}", free_port()),
        &format!("--grpc-address=127.0.0.1:{}", free_port()),
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no external labels") && err.contains("--label"),
        "{err}"
    );
}

#[test]
fn unequal_block_durations_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(&tmp.path().join("prom"), &prom_config("a", &[]), &[]);
    let side = StrataProc::start_with_grpc(
        &tmp.path().join("side"),
        &[
            "sidecar",
            &format!("--prometheus.url={}", prom.url()),
            &format!("--tsdb.path={}", prom.data_dir.display()),
        ],
    );
    let log = side.log();
    assert!(
        log.contains("min-block-duration") && log.contains("max-block-duration"),
        "{log}"
    );
}
