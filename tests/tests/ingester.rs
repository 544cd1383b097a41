//! The write path end to end: real Prometheus remote_write into `strata all`, blocks in
//! the bucket read back by promtool, crash durability, bad input, limits, bucket outage.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_testkit::http::get_json;
use strata_testkit::procs::{copy_dir, free_port, promtool, promtool_dump, run_ok, Prometheus};
use strata_testkit::s3::S3Server;
use strata_testkit::strata::{metric_sum, series, write_request, StrataProc};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every block directory under `<bucket>/<tenant>/`.
fn bucket_blocks(bucket: &Path, tenant: &str) -> Vec<PathBuf> {
    let dir = bucket.join(tenant);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("meta.json").exists())
        .collect();
    v.sort();
    v
}

fn meta(block: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(block.join("meta.json")).unwrap()).unwrap()
}

/// `(series, ts, value-text)` lines of a promtool dump.
fn parse_dump(dump: &str) -> Vec<(String, i64, String)> {
    dump.lines()
        .map(|l| {
            let (series, rest) = l.rsplit_once("} ").unwrap();
            let (v, t) = rest.split_once(' ').unwrap();
            (format!("{series}}}"), t.parse().unwrap(), v.to_string())
        })
        .collect()
}

/// Copy the tenant's blocks out of the bucket into a scratch dir promtool can read.
fn dump_bucket(bucket: &Path, tenant: &str, scratch: &Path) -> String {
    let dir = scratch.join(format!("dump-{tenant}"));
    let _ = std::fs::remove_dir_all(&dir);
    for b in bucket_blocks(bucket, tenant) {
        copy_dir(&b, &dir.join(b.file_name().unwrap()));
    }
    promtool_dump(&dir)
}

#[test]
fn prometheus_remote_write_lands_in_the_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(&tmp.path().join("strata"), &["--tsdb.ship-interval=1h"]);
    let config = format!(
        r#"
global:
  scrape_interval: 1s
  external_labels: {{}}
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:{{port}}']
remote_write:
  - url: {}/api/v1/push
    queue_config:
      batch_send_deadline: 1s
"#,
        strata.url()
    );
    let mut prom = Prometheus::start_on(&tmp.path().join("prom"), &config, &[], free_port());
    let start = Instant::now();
    let mut sent = 0.0;
    // The issue asks for at least 30 s of real ingestion; poll Prometheus meanwhile.
    while start.elapsed() < Duration::from_secs(32) || sent == 0.0 {
        std::thread::sleep(Duration::from_millis(500));
        let (_, m) = strata_testkit::http::get(&format!("{}/metrics", prom.url())).unwrap();
        sent = metric_sum(&m, "prometheus_remote_storage_samples_total");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "remote write never sent samples"
        );
    }
    let (_, m) = strata_testkit::http::get(&format!("{}/metrics", prom.url())).unwrap();
    assert_eq!(
        metric_sum(&m, "prometheus_remote_storage_samples_failed_total"),
        0.0,
        "failed samples"
    );
    assert_eq!(
        metric_sum(&m, "prometheus_remote_storage_samples_dropped_total"),
        0.0,
        "dropped samples"
    );
    prom.stop(); // flushes the remote-write queue

    let (status, body) = strata.flush();
    assert_eq!(status, 200, "{body}");
    let bucket = strata.data_dir.join("bucket");
    let blocks = bucket_blocks(&bucket, "anonymous");
    assert!(!blocks.is_empty(), "no block in the bucket");

    // promtool accepts every block
    let scratch = tmp.path().join("scratch");
    for b in &blocks {
        let id = b.file_name().unwrap().to_str().unwrap();
        let db = scratch.join("analyze");
        let _ = std::fs::remove_dir_all(&db);
        copy_dir(b, &db.join(id));
        std::fs::create_dir_all(db.join("wal")).unwrap();
        let out = run_ok(
            std::process::Command::new(promtool())
                .args(["tsdb", "analyze"])
                .arg(&db)
                .arg(id),
        );
        assert!(out.contains("Series:"), "{out}");
    }

    // the samples equal what Prometheus itself stored, over the blocks' range
    let ours = parse_dump(&dump_bucket(&bucket, "anonymous", &scratch));
    let (mint, maxt) = blocks
        .iter()
        .map(|b| meta(b))
        .fold((i64::MAX, i64::MIN), |(a, z), m| {
            (
                a.min(m["minTime"].as_i64().unwrap()),
                z.max(m["maxTime"].as_i64().unwrap()),
            )
        });
    let theirs: Vec<_> = parse_dump(&promtool_dump(&prom.data_dir))
        .into_iter()
        .filter(|(_, t, _)| *t >= mint && *t < maxt)
        .collect();
    let a: BTreeSet<_> = ours.iter().cloned().collect();
    let b: BTreeSet<_> = theirs.iter().cloned().collect();
    assert!(a.len() > 1000, "only {} samples", a.len());
    assert_eq!(ours.len(), a.len(), "a sample is in the bucket twice");
    let missing: Vec<_> = b.difference(&a).take(5).collect();
    let extra: Vec<_> = a.difference(&b).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
}

#[test]
fn acknowledged_samples_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut strata =
        StrataProc::start_all(&tmp.path().join("strata"), &["--tsdb.ship-interval=1h"]);
    let url = strata.url();
    let base = now_ms() - 60_000;
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    // Sustained ingestion from a second thread: request i carries 20 series at t = base + i.
    let pusher = {
        let (acked, stop, sent) = (acked.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            for i in 0..100_000i64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = base + i;
                let ts = (0..20)
                    .map(|s| {
                        series(
                            &[("__name__", "load"), ("s", &s.to_string())],
                            &[(t, i as f64)],
                        )
                    })
                    .collect();
                let body = strata_proto::encode_write_request(&write_request(ts));
                sent.fetch_add(1, Ordering::Relaxed);
                let r = strata_testkit::http::post(
                    &format!("{url}/api/v1/push"),
                    &[("Content-Encoding", "snappy")],
                    &body,
                );
                match r {
                    Ok((200, _)) => acked.lock().unwrap().push(t),
                    Ok((s, b)) => panic!("push answered {s}: {b}"),
                    Err(_) => {} // the server is down: not acknowledged
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "pusher too slow");
        std::thread::yield_now();
    }
    // 300 samples a series: completed chunks (120 samples) are out of memory, in the
    // head's chunk files, which the restart deletes (the WAL replay rebuilds them)
    let chunks_head = strata.data_dir.join("tenants/anonymous/chunks_head/000001");
    let written = std::fs::metadata(&chunks_head).map_or(0, |m| m.len());
    assert!(written > 0, "{} holds no chunk", chunks_head.display());
    strata.kill9();
    stop.store(true, Ordering::Relaxed);
    pusher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    strata.restart();
    let (status, body) = strata.flush();
    assert_eq!(status, 200, "{body}");
    let bucket = strata.data_dir.join("bucket");
    let dump = parse_dump(&dump_bucket(&bucket, "anonymous", tmp.path()));
    let have: BTreeSet<(String, i64)> = dump.iter().map(|(s, t, _)| (s.clone(), *t)).collect();
    assert_eq!(have.len(), dump.len(), "duplicate samples after replay");
    for t in &acked {
        for s in 0..20 {
            let key = (format!("{{__name__=\"load\", s=\"{s}\"}}"), *t);
            assert!(have.contains(&key), "acknowledged sample {key:?} lost");
        }
    }
    // block stats agree with the dump: nothing stored twice across blocks
    let total: u64 = bucket_blocks(&bucket, "anonymous")
        .iter()
        .map(|b| meta(b)["stats"]["numSamples"].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, dump.len());
}

#[test]
fn bad_input_gets_its_status_and_valid_series_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1h",
            "--distributor.max-recv-msg-size=100000",
            "--validation.max-length-label-value=100",
        ],
    );
    let t = now_ms();

    let (s, b) = strata.push_raw(None, b"definitely not snappy");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("snappy"), "{b}");

    let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
    let (s, b) = strata.push_raw(None, &garbage);
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("protobuf"), "{b}");

    let (s, b) = strata.push_raw(None, &vec![0u8; 200_000]);
    assert_eq!(s, 413, "{b}");
    assert!(b.contains("max-recv-msg-size"), "{b}");

    let (s, b) = strata.push(
        Some("../etc"),
        &write_request(vec![series(&[("__name__", "x")], &[(t, 1.0)])]),
    );
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("tenant"), "{b}");

    // A mixed request: one valid series, four invalid ones.
    let long = "v".repeat(101);
    let req = write_request(vec![
        series(
            &[("__name__", "good"), ("job", "a")],
            &[(t, 1.0), (t + 1000, 2.0)],
        ),
        series(&[("job", "no-name")], &[(t, 1.0)]),
        series(&[("__name__", "bad"), ("in-valid", "x")], &[(t, 1.0)]),
        series(&[("__name__", "dup"), ("a", "1"), ("a", "2")], &[(t, 1.0)]),
        series(&[("__name__", "long"), ("a", &long)], &[(t, 1.0)]),
    ]);
    let (s, b) = strata.push(None, &req);
    assert_eq!(s, 400, "{b}");
    for want in [
        "4 of 6 samples in 5 series were rejected",
        "missing_metric_name",
        "label_invalid",
        "duplicate_label_names",
        "label_value_too_long",
        "the other 2 samples were stored",
    ] {
        assert!(b.contains(want), "response lacks {want:?}: {b}");
    }

    // Out of order and too old: 400 naming the first offending series.
    let (s, b) = strata.push(
        None,
        &write_request(vec![series(
            &[("__name__", "good"), ("job", "a")],
            &[(t + 500, 3.0)],
        )]),
    );
    assert_eq!(s, 400, "{b}");
    assert!(
        b.contains("out-of-order") && b.contains(r#"{__name__="good", job="a"}"#),
        "{b}"
    );
    let (s, b) = strata.push(
        None,
        &write_request(vec![series(
            &[("__name__", "old")],
            &[(t - 3 * 3_600_000, 1.0)],
        )]),
    );
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("too old") && b.contains("old"), "{b}");

    let status = get_json(&format!("{}/api/v1/status/tsdb", strata.url()));
    let names: Vec<&str> = status["data"]["seriesCountByMetricName"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["good"], "{status}");

    let (s, _) = strata.flush();
    assert_eq!(s, 200);
    let dump = dump_bucket(&strata.data_dir.join("bucket"), "anonymous", tmp.path());
    assert_eq!(dump.lines().count(), 2, "{dump}");
    assert!(strata.metric("strata_ingester_rejected_samples_total") >= 6.0);
}

#[test]
fn ingestion_rate_limit_is_429() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--distributor.ingestion-rate-limit=10",
            "--distributor.ingestion-burst-size=100",
        ],
    );
    let t = now_ms();
    let samples: Vec<(i64, f64)> = (0..150).map(|i| (t + i, 1.0)).collect();
    let (s, b) = strata.push(
        Some("team-a"),
        &write_request(vec![series(&[("__name__", "m")], &samples[..80])]),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = strata.push(
        Some("team-a"),
        &write_request(vec![series(&[("__name__", "m")], &samples[80..])]),
    );
    assert_eq!(s, 429, "{b}");
    assert!(b.contains("ingestion rate limit"), "{b}");
    // another tenant has its own budget
    let (s, b) = strata.push(
        Some("team-b"),
        &write_request(vec![series(&[("__name__", "m")], &samples[..80])]),
    );
    assert_eq!(s, 200, "{b}");
}

#[test]
fn series_limit_stops_a_cardinality_explosion() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1h",
            "--ingester.max-global-series-per-user=50",
            "--ingester.max-global-series-per-metric=45",
        ],
    );
    let t0 = now_ms() - 100_000;
    // 40 steady series, then every request adds 5 brand-new pod series.
    let steady: Vec<String> = (0..40).map(|i| format!("node-{i}")).collect();
    let mut rejected_requests = 0;
    for step in 0..20i64 {
        let t = t0 + step * 1000;
        let mut ts: Vec<_> = steady
            .iter()
            .map(|n| series(&[("__name__", "up"), ("instance", n)], &[(t, 1.0)]))
            .collect();
        for p in 0..5 {
            let pod = format!("pod-{step}-{p}");
            ts.push(series(
                &[("__name__", "requests_total"), ("pod", &pod)],
                &[(t, 1.0)],
            ));
        }
        let (s, b) = strata.push(None, &write_request(ts));
        if s == 400 {
            assert!(
                b.contains("max-global-series-per-user")
                    || b.contains("max-global-series-per-metric"),
                "{b}"
            );
            rejected_requests += 1;
        } else {
            assert_eq!(s, 200, "{b}");
        }
    }
    assert!(
        rejected_requests >= 17,
        "the limit never bit: {rejected_requests}"
    );
    let status = get_json(&format!("{}/api/v1/status/tsdb", strata.url()));
    assert_eq!(status["data"]["headStats"]["numSeries"], 50, "{status}");

    // every steady series kept all 20 samples
    let (s, _) = strata.flush();
    assert_eq!(s, 200);
    let dump = parse_dump(&dump_bucket(
        &strata.data_dir.join("bucket"),
        "anonymous",
        tmp.path(),
    ));
    for n in &steady {
        let key = format!("{{__name__=\"up\", instance=\"{n}\"}}");
        assert_eq!(
            dump.iter().filter(|(s, _, _)| *s == key).count(),
            20,
            "{key}"
        );
    }
}

#[test]
fn tenants_are_kept_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(&tmp.path().join("strata"), &["--tsdb.ship-interval=1h"]);
    let t = now_ms();
    assert_eq!(
        strata
            .push(
                Some("team-a"),
                &write_request(vec![series(&[("__name__", "a_only")], &[(t, 1.0)])])
            )
            .0,
        200
    );
    assert_eq!(
        strata
            .push(
                Some("team-b"),
                &write_request(vec![series(&[("__name__", "b_only")], &[(t, 1.0)])])
            )
            .0,
        200
    );
    let (s, b) =
        strata_testkit::http::get(&format!("{}/api/v1/status/tsdb", strata.url())).unwrap();
    assert_eq!(s, 200);
    assert!(
        !b.contains("a_only") && !b.contains("b_only"),
        "anonymous sees others: {b}"
    );
    assert_eq!(strata.flush().0, 200);
    let bucket = strata.data_dir.join("bucket");
    let a = dump_bucket(&bucket, "team-a", tmp.path());
    let b = dump_bucket(&bucket, "team-b", tmp.path());
    assert!(a.contains("a_only") && !a.contains("b_only"), "{a}");
    assert!(b.contains("b_only") && !b.contains("a_only"), "{b}");
}

#[test]
fn bucket_outage_during_flush_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start();
    let yaml = s3
        .objstore_yaml("strata")
        .replace("config:\n", "config:\n  max_retries: 1\n");
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1s",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    let t = now_ms() - 50_000;
    for i in 0..50 {
        let ts = (0..10)
            .map(|s| {
                series(
                    &[("__name__", "m"), ("s", &s.to_string())],
                    &[(t + i * 1000, i as f64)],
                )
            })
            .collect();
        assert_eq!(strata.push(None, &write_request(ts)).0, 200);
    }
    s3.stop();
    let (status, body) = strata.flush();
    assert_eq!(status, 503, "flush with the bucket down: {body}");
    assert!(body.contains("upload failed"), "{body}");
    // more data while the bucket is down is still accepted
    let ts = vec![series(
        &[("__name__", "m"), ("s", "late")],
        &[(t + 60_000, 1.0)],
    )];
    assert_eq!(strata.push(None, &write_request(ts)).0, 200);
    s3.restart();
    // the background loop retries; poll the bucket (through s3s-fs's directory)
    let bucket_dir = s3.data_dir().join("strata");
    let deadline = Instant::now() + Duration::from_secs(120);
    while bucket_blocks(&bucket_dir, "anonymous").is_empty() {
        assert!(
            Instant::now() < deadline,
            "upload never resumed:\n{}",
            strata.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(strata.flush().0, 200);
    let dump = parse_dump(&dump_bucket(&bucket_dir, "anonymous", tmp.path()));
    assert_eq!(dump.len(), 501, "every sample in the bucket once");
}

#[test]
fn invalid_native_histograms_are_refused_out_loud() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(&tmp.path().join("strata"), &["--tsdb.ship-interval=1h"]);
    let t = now_ms();
    let mut s = series(&[("__name__", "mixed")], &[(t, 1.0)]);
    // a count with no bucket to hold it: Prometheus's count mismatch
    s.histograms = vec![
        strata_proto::prometheus::Histogram {
            count: Some(strata_proto::prometheus::histogram::Count::CountInt(5)),
            sum: 1.0,
            timestamp: t + 1,
            ..Default::default()
        };
        2
    ];
    let (status, body) = strata.push(None, &write_request(vec![s]));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("0 observations found in buckets, but the Count field is 5")
            && body.contains("err-mimir-native-histogram-count-mismatch")
            && body.contains("2 of 3 samples"),
        "{body}"
    );
    // the float sample of the same series is stored
    let v = get_json(&format!("{}/api/v1/query?query=mixed", strata.url()));
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
}
