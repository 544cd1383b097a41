//! The write path in process: WAL before head (an injected WAL write failure, a retry,
//! a crash), the future-timestamp limit, flushes that keep in-order writers writing,
//! remote write content types and body size checks.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use clap::Parser;
use strata_ingester::{push, Ingester, IngesterArgs};
use strata_kit::metrics::Registry;
use strata_objstore::Bucket;
use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: IngesterArgs,
}

/// Open an ingester on `dir` (a restart when it was opened before). Dropping the
/// returned ingester without a sync is what `kill -9` leaves: the WAL is written with
/// plain `write(2)` calls, nothing is buffered in the process.
fn open(dir: &Path, flags: &[&str]) -> Arc<Ingester> {
    let mut argv = vec![
        "ingester".to_string(),
        format!("--tsdb.path={}", dir.display()),
        "--tsdb.wal-fsync=never".to_string(),
    ];
    argv.extend(flags.iter().map(|f| f.to_string()));
    let cli = Cli::try_parse_from(argv).unwrap();
    let bucket = Bucket::filesystem(dir.join("bucket")).unwrap();
    Ingester::open(cli.args, bucket, &Registry::new()).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn series(name: &str, samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: vec![
            Label {
                name: "__name__".into(),
                value: name.into(),
            },
            Label {
                name: "job".into(),
                value: "test".into(),
            },
        ],
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

fn request(series: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries: series,
        metadata: vec![],
    }
}

/// Every sample of `name` in the tenant's head.
fn head_samples(ing: &Ingester, tenant: &str, name: &str) -> Vec<(i64, f64)> {
    let t = ing.tenant(tenant).unwrap();
    let got = t
        .head
        .select(&[Matcher::equal("__name__", name)], i64::MIN, i64::MAX)
        .unwrap();
    got.iter().flat_map(|s| s.samples()).collect()
}

fn status_of(out: push::Outcome) -> (StatusCode, String) {
    let resp = out.into_response();
    let status = resp.status();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = rt
        .block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn acknowledged_samples_survive_a_wal_write_error_a_retry_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    {
        let ing = open(dir.path(), &[]);
        // an existing series, logged normally
        let out = push::ingest(&ing, "team", request(vec![series("old", &[(t0, 1.0)])])).unwrap();
        assert_eq!(out.accepted_samples, 1);

        // A request with a new series and more samples for the existing one; the WAL
        // write fails, as on a full disk: the client gets an error (500) and retries.
        let req = request(vec![
            series("new", &[(t0 + 1000, 10.0), (t0 + 2000, 20.0)]),
            series("old", &[(t0 + 1000, 2.0)]),
        ]);
        ing.tenant("team")
            .unwrap()
            .lock_write()
            .wal
            .fail_next_append();
        assert!(push::ingest(&ing, "team", req.clone()).is_err());
        // nothing the WAL does not have is visible
        assert_eq!(head_samples(&ing, "team", "new"), vec![]);
        assert_eq!(head_samples(&ing, "team", "old"), vec![(t0, 1.0)]);

        let out = push::ingest(&ing, "team", req).unwrap();
        assert_eq!(out.accepted_samples, 3);
        assert!(out.first_error.is_none(), "{:?}", out.first_error);
        // one more write after the retry (its series record must not be needed again)
        let out = push::ingest(
            &ing,
            "team",
            request(vec![series("new", &[(t0 + 3000, 30.0)])]),
        )
        .unwrap();
        assert_eq!(out.accepted_samples, 1);
        // dropped without a sync or a shutdown: kill -9
    }
    let ing = open(dir.path(), &[]);
    assert_eq!(
        head_samples(&ing, "team", "new"),
        vec![(t0 + 1000, 10.0), (t0 + 2000, 20.0), (t0 + 3000, 30.0)]
    );
    assert_eq!(
        head_samples(&ing, "team", "old"),
        vec![(t0, 1.0), (t0 + 1000, 2.0)]
    );
}

#[test]
fn a_series_whose_record_failed_is_logged_with_the_next_write() {
    // The failed request creates a series; the next successful write is for another
    // series only. The pending series record must still reach the WAL before any sample
    // of it does.
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    {
        let ing = open(dir.path(), &[]);
        ing.tenant("team")
            .unwrap()
            .lock_write()
            .wal
            .fail_next_append();
        assert!(push::ingest(&ing, "team", request(vec![series("a", &[(t0, 1.0)])])).is_err());
        push::ingest(&ing, "team", request(vec![series("b", &[(t0, 2.0)])])).unwrap();
        let out = push::ingest(&ing, "team", request(vec![series("a", &[(t0, 1.0)])])).unwrap();
        assert_eq!(out.accepted_samples, 1);
    }
    let ing = open(dir.path(), &[]);
    assert_eq!(head_samples(&ing, "team", "a"), vec![(t0, 1.0)]);
    assert_eq!(head_samples(&ing, "team", "b"), vec![(t0, 2.0)]);
}

#[test]
fn replay_counts_samples_of_unknown_series() {
    let dir = tempfile::tempdir().unwrap();
    let tenant_dir = dir.path().join("t");
    {
        let mut wal = strata_tsdb::wal::Wal::open(
            tenant_dir.join("wal"),
            strata_tsdb::wal::WalOptions::default(),
        )
        .unwrap();
        let labels = Labels::from_pairs([("__name__", "known")]);
        wal.log_batch(&[
            strata_tsdb::wal::Record::Series {
                entries: &[(1, &labels)],
            },
            strata_tsdb::wal::Record::Samples {
                entries: &[(1, 1000, 1.0), (7, 1000, 1.0), (7, 2000, 2.0)],
            },
        ])
        .unwrap();
    }
    let (db, stats) = strata_ingester::tenant::TenantDb::open(
        "t",
        &tenant_dir,
        2 * 3600 * 1000,
        strata_tsdb::wal::WalOptions::default(),
        strata_ingester::ratelimit::TokenBucket::new(0.0, 0),
        vec![],
        0,
    )
    .unwrap();
    assert_eq!(stats.samples, 1);
    assert_eq!(stats.unknown_series_samples, 2);
    assert_eq!(db.head.num_series(), 1);
}

#[test]
fn samples_too_far_in_the_future_are_refused_and_block_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    {
        let ing = open(dir.path(), &[]);
        for t in [now + 3_600_000, i64::MAX] {
            let out = push::ingest(&ing, "team", request(vec![series("up", &[(t, 1.0)])])).unwrap();
            assert_eq!(out.accepted_samples, 0);
            let (status, body) = status_of(out);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(body.contains("too far in the future"), "{body}");
            assert!(body.contains("err-mimir-too-far-in-future"), "{body}");
            assert!(body.contains("--validation.create-grace-period"), "{body}");
            assert!(body.contains("1 too_far_in_future"), "{body}");
        }
        assert_eq!(head_samples(&ing, "team", "up"), vec![]);
        // within the grace period: accepted
        let out = push::ingest(
            &ing,
            "team",
            request(vec![series("up", &[(now + 60_000, 1.0)])]),
        )
        .unwrap();
        assert_eq!(status_of(out).0, StatusCode::OK);
        // the present is still writable for every other series
        let out =
            push::ingest(&ing, "team", request(vec![series("other", &[(now, 1.0)])])).unwrap();
        assert_eq!(status_of(out).0, StatusCode::OK);
    }
    let ing = open(dir.path(), &[]);
    let out = push::ingest(
        &ing,
        "team",
        request(vec![series("other", &[(now + 1000, 2.0)])]),
    )
    .unwrap();
    assert_eq!(status_of(out).0, StatusCode::OK);
    assert_eq!(
        head_samples(&ing, "team", "other"),
        vec![(now, 1.0), (now + 1000, 2.0)]
    );
}

#[test]
fn a_sample_within_the_grace_period_does_not_move_the_window() {
    // With 10-minute blocks the appendable window is 5 minutes: a sample 9 minutes
    // ahead (allowed by the default 10m grace period) must not make the present too old.
    let dir = tempfile::tempdir().unwrap();
    let ing = open(dir.path(), &["--tsdb.block-duration=10m"]);
    let now = now_ms();
    let out = push::ingest(
        &ing,
        "team",
        request(vec![series("ahead", &[(now + 540_000, 1.0)])]),
    )
    .unwrap();
    assert_eq!(status_of(out).0, StatusCode::OK);
    let out = push::ingest(&ing, "team", request(vec![series("now", &[(now, 1.0)])])).unwrap();
    let (status, body) = status_of(out);
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn a_flush_does_not_refuse_writers_a_few_seconds_behind() {
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms() - 10_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        let ing = open(dir.path(), &[]);
        push::ingest(
            &ing,
            "team",
            request(vec![
                series("fast", &[(t, 1.0)]),
                series("slow", &[(t - 5000, 1.0)]),
            ]),
        )
        .unwrap();
        rt.block_on(ing.cut_and_ship(true)).unwrap();
        // a resent sample of a flushed series is recognised, not stored twice
        let out = push::ingest(
            &ing,
            "team",
            request(vec![series("slow", &[(t - 5000, 1.0)])]),
        )
        .unwrap();
        assert_eq!(status_of(out).0, StatusCode::OK);
        // the slow writer's next sample is older than the newest flushed one
        let out = push::ingest(
            &ing,
            "team",
            request(vec![series("slow", &[(t - 4000, 2.0)])]),
        )
        .unwrap();
        let (status, body) = status_of(out);
        assert_eq!(status, StatusCode::OK, "{body}");
        let out = push::ingest(
            &ing,
            "team",
            request(vec![series("fast", &[(t + 1000, 2.0)])]),
        )
        .unwrap();
        assert_eq!(status_of(out).0, StatusCode::OK);
    }
    // after a crash the samples accepted since the flush are replayed, not dropped
    let ing = open(dir.path(), &[]);
    assert_eq!(head_samples(&ing, "team", "slow"), vec![(t - 4000, 2.0)]);
    assert_eq!(head_samples(&ing, "team", "fast"), vec![(t + 1000, 2.0)]);
    let out = push::ingest(
        &ing,
        "team",
        request(vec![series("slow", &[(t - 3000, 3.0)])]),
    )
    .unwrap();
    assert_eq!(status_of(out).0, StatusCode::OK);
    // a second flush writes them into a block overlapping the first; nothing is lost
    rt.block_on(ing.cut_and_ship(true)).unwrap();
    let blocks = strata_tsdb::block::open_blocks(&dir.path().join("tenants/team/blocks")).unwrap();
    let mut slow: Vec<i64> = Vec::new();
    for b in &blocks {
        for (_, samples) in b
            .series_samples(&[Matcher::equal("__name__", "slow")], i64::MIN, i64::MAX)
            .unwrap()
        {
            slow.extend(samples.iter().map(|(t, _)| *t));
        }
    }
    slow.sort();
    assert_eq!(slow, vec![t - 5000, t - 4000, t - 3000]);
}

#[test]
fn a_cut_keeps_samples_between_the_block_and_the_window_across_a_crash() {
    // 10-minute blocks: samples every minute over 30 minutes; a scheduled cut writes
    // two blocks and keeps minutes 20..29 in the head, of which 20..23 are older than
    // the appendable window. The WAL checkpoint must keep them all.
    let dir = tempfile::tempdir().unwrap();
    let m = 60_000;
    let b0 = (now_ms() - 40 * m).div_euclid(10 * m) * 10 * m;
    {
        let ing = open(dir.path(), &["--tsdb.block-duration=10m"]);
        for i in 0..30 {
            let out = push::ingest(
                &ing,
                "team",
                request(vec![series("up", &[(b0 + i * m, i as f64)])]),
            )
            .unwrap();
            assert_eq!(out.accepted_samples, 1, "{:?}", out.first_error);
        }
        let cut = ing.tenant("team").unwrap().cut_blocks(false).unwrap();
        assert_eq!(cut.len(), 2);
    }
    let ing = open(dir.path(), &["--tsdb.block-duration=10m"]);
    let want: Vec<(i64, f64)> = (20..30).map(|i| (b0 + i * m, i as f64)).collect();
    assert_eq!(head_samples(&ing, "team", "up"), want);
}

fn push_with(ing: &Arc<Ingester>, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, String) {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let resp = push::push(State(ing.clone()), h, Body::from(body)).await;
        let status = resp.status();
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&b).into_owned())
    })
}

#[test]
fn unknown_remote_write_content_types_are_415() {
    let dir = tempfile::tempdir().unwrap();
    let ing = open(dir.path(), &[]);
    let body =
        || strata_proto::encode_write_request(&request(vec![series("up", &[(now_ms(), 1.0)])]));
    let snappy = ("content-encoding", "snappy");
    // a message this receiver does not know: 415 naming the ones it does
    let (status, msg) = push_with(
        &ing,
        &[
            snappy,
            (
                "content-type",
                "application/x-protobuf;proto=io.prometheus.write.v3.Request",
            ),
        ],
        body(),
    );
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{msg}");
    assert!(msg.contains("prometheus.WriteRequest"), "{msg}");
    assert!(msg.contains("io.prometheus.write.v2.Request"), "{msg}");
    let (status, _) = push_with(&ing, &[snappy, ("content-type", "text/plain")], body());
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for ok in [
        None,
        Some("application/x-protobuf"),
        Some("application/x-protobuf;proto=prometheus.WriteRequest"),
        Some("application/x-protobuf; proto=prometheus.WriteRequest"),
    ] {
        let mut h = vec![snappy];
        if let Some(ct) = ok {
            h.push(("content-type", ct));
        }
        std::thread::sleep(std::time::Duration::from_millis(2)); // a new timestamp each
        let (status, msg) = push_with(&ing, &h, body());
        assert_eq!(status, StatusCode::OK, "{ok:?}: {msg}");
    }
}

#[test]
fn a_declared_length_over_the_limit_is_413_before_the_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let ing = open(dir.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, msg) = rt.block_on(async {
        // A body that never ends: reading it would hang; only the header may decide.
        let (_tx, rx) = futures::channel::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("200000000"));
        h.insert("content-encoding", HeaderValue::from_static("snappy"));
        let resp = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            push::push(State(ing.clone()), h, Body::from_stream(rx)),
        )
        .await
        .expect("the body was read instead of refused on its declared length");
        let status = resp.status();
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&b).into_owned())
    });
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{msg}");
    assert!(msg.contains("--distributor.max-recv-msg-size"), "{msg}");
}

#[test]
fn flush_is_post_only() {
    let dir = tempfile::tempdir().unwrap();
    let ing = open(dir.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = ing.routes();
    rt.spawn(async move { axum::serve(listener, app).await });
    let status_line = |method: &str| {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(
            c,
            "{method} /ingester/flush HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out.lines().next().unwrap_or("").to_string()
    };
    assert!(
        status_line("GET").contains(" 405 "),
        "{}",
        status_line("GET")
    );
    assert!(
        status_line("POST").contains(" 200 "),
        "{}",
        status_line("POST")
    );
}

#[test]
fn a_tenant_named_like_an_internal_bucket_object_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ing = open(dir.path(), &[]);
    let body = strata_proto::encode_write_request(&request(vec![series("up", &[(now_ms(), 1.0)])]));
    for name in strata_kit::tenant::RESERVED_TENANT_NAMES {
        let (status, msg) = push_with(
            &ing,
            &[("content-encoding", "snappy"), ("x-scope-orgid", name)],
            body.clone(),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
        assert!(msg.contains("reserved"), "{msg}");
    }
    assert!(ing.existing_tenant("strata-compactor-lock.json").is_none());
}

/// Frame version bytes of every record in the tenant's WAL segments.
fn wal_frame_versions(dir: &Path, tenant: &str) -> Vec<u8> {
    let wal = dir.join("tenants").join(tenant).join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    segs.sort();
    let mut out = Vec::new();
    for p in segs {
        let b = std::fs::read(&p).unwrap();
        let mut off = 0;
        while off + 10 <= b.len() {
            out.push(b[off]);
            off += 10 + u32::from_le_bytes(b[off + 2..off + 6].try_into().unwrap()) as usize;
        }
    }
    out
}

#[test]
fn wal_written_under_each_compression_replays_after_restarts_with_another() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 600_000;
    let names: Vec<String> = (0..200).map(|i| format!("m_{i}")).collect();
    // each restart changes the setting (the alias once); every earlier sample must be
    // replayed whatever wrote it
    let settings: [&[&str]; 4] = [
        &["--tsdb.wal-compression-type=zstd"],
        &["--storage.tsdb.wal-compression-type=snappy"],
        &["--tsdb.wal-compression-type=none"],
        &[],
    ];
    let mut want: Vec<Vec<(i64, f64)>> = vec![Vec::new(); names.len()];
    for (round, flags) in settings.iter().enumerate() {
        let ing = open(dir.path(), flags);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(head_samples(&ing, "team", n), want[i], "round {round}, {n}");
        }
        for k in 0..3 {
            let t = t0 + (round * 3 + k) as i64 * 15_000;
            let req = request(
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| series(n, &[(t, (i * 10 + round * 3 + k) as f64)]))
                    .collect(),
            );
            let out = push::ingest(&ing, "team", req).unwrap();
            assert_eq!(out.accepted_samples, names.len());
            for (i, w) in want.iter_mut().enumerate() {
                w.push((t, (i * 10 + round * 3 + k) as f64));
            }
        }
        // dropped without a shutdown: a crash
    }
    let ing = open(dir.path(), &[]);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(head_samples(&ing, "team", n), want[i], "{n}");
    }
    let versions = wal_frame_versions(dir.path(), "team");
    for v in [1u8, 2, 3] {
        assert!(
            versions.contains(&v),
            "frame version {v} missing: {versions:?}"
        );
    }
}
