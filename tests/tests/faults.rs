//! Faults a long-term store meets in production, each caused for real against the real
//! binary: the data disk full (a size-limited tmpfs) and a slow object store (a
//! delaying TCP proxy in front of a real S3 server). The object store stopped under
//! steady ingest (killed and restarted s3s-fs) is `the_object_store_stopped_under_steady_ingest_loses_nothing`;
//! one flush during an outage is `ingester.rs`'s `bucket_outage_during_flush_loses_nothing`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_testkit::http::{encode, get};
use strata_testkit::s3::S3Server;
use strata_testkit::strata::{series, write_request, StrataProc};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A tmpfs of `mb` MiB mounted on `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` when this machine does not let us mount (no CAP_SYS_ADMIN).
    fn mount(dir: &Path, mb: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the filesystem of `dir` with a ballast file until fewer than `leave` bytes are
/// free.
fn fill(dir: &Path, leave: u64) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    loop {
        let free = free_bytes(dir);
        if free <= leave {
            break;
        }
        let n = (free - leave).min(block.len() as u64) as usize;
        if f.write_all(&block[..n]).is_err() {
            break;
        }
    }
    f.sync_all().ok();
    path
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// 200 series with one sample each at `t`, values `k`.
fn batch(t: i64, k: usize) -> strata_proto::prometheus::WriteRequest {
    write_request(
        (0..200)
            .map(|s| {
                let id = format!("{s:04}-{}", "x".repeat(60));
                series(
                    &[("__name__", "disk_full"), ("series", &id)],
                    &[(t, k as f64)],
                )
            })
            .collect(),
    )
}

fn count_samples(p: &StrataProc, t0: i64, t1: i64) -> f64 {
    let q = format!("sum(count_over_time(disk_full[{}ms]))", t1 - t0 + 1000);
    let url = format!(
        "{}/api/v1/query?query={}&time={}",
        p.url(),
        encode(&q),
        (t1 + 1) as f64 / 1000.0
    );
    let (status, body) = get(&url).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"][0]["value"][1]
        .as_str()
        .map_or(0.0, |s| s.parse().unwrap())
}

#[test]
fn a_full_disk_refuses_writes_with_5xx_and_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let Some(_fs) = Tmpfs::mount(&data, 24) else {
        // without the capability the fault cannot be caused; say so loudly
        eprintln!("SKIPPED: a_full_disk…: mounting a tmpfs needs CAP_SYS_ADMIN");
        return;
    };
    let mut strata = StrataProc::start_all(
        &data.join("strata"),
        &["--tsdb.ship-interval=1h", "--tsdb.wal-fsync=never"],
    );
    let t0 = now_ms() - 10 * 60_000;
    // some accepted data first
    let mut acked = 0usize;
    for k in 0..5 {
        let (s, body) = strata.push(None, &batch(t0 + k as i64 * 1000, k));
        assert_eq!(s, 200, "{body}");
        acked += 200;
    }
    let ballast = fill(&data, 64 << 10);

    // writes until the disk refuses one: a 5xx naming the cause, never a 2xx that
    // was not stored
    let mut refused = None;
    let mut k = 5;
    while refused.is_none() && k < 5000 {
        let (s, body) = strata.push(None, &batch(t0 + k as i64 * 1000, k));
        match s {
            200 => acked += 200,
            500..=599 => refused = Some((s, body)),
            other => panic!("unexpected status {other}: {body}"),
        }
        k += 1;
    }
    let (status, body) = refused.expect("the full disk never refused a write");
    assert!(
        body.contains("No space left on device") || body.contains("os error 28"),
        "{status}: {body}"
    );
    assert!(strata.log().is_empty() || !strata.log().contains("panicked"));
    // what was acknowledged is still answered
    let last = t0 + (k as i64 - 1) * 1000;
    assert_eq!(count_samples(&strata, t0, last), acked as f64);

    // space returns: writes are accepted again, without a restart
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = strata.push(None, &batch(t0 + k as i64 * 1000, k));
        if s == 200 {
            acked += 200;
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {s} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // and the WAL written across the fault replays whole after kill -9
    strata.kill9();
    strata.respawn();
    strata
        .wait_ready()
        .unwrap_or_else(|log| panic!("restart after a full disk failed:\n{log}"));
    assert_eq!(
        count_samples(&strata, t0, t0 + k as i64 * 1000),
        acked as f64,
        "acknowledged samples lost or doubled across the full disk and kill -9"
    );
}

/// A TCP proxy to `upstream` that holds every chunk of bytes for `delay`.
fn slow_proxy(rt: &tokio::runtime::Runtime, upstream: String, delay: Duration) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    rt.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pipe(cr, sw, delay), pipe(sr, cw, delay));
            });
        }
    });
    addr
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

#[test]
fn a_slow_object_store_makes_queries_time_out_not_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start();
    let yaml = s3.objstore_yaml("strata");
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1h",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    let t0 = now_ms() - 30 * 60_000;
    for k in 0..10 {
        assert_eq!(
            strata.push(None, &batch(t0 + k * 15_000, k as usize)).0,
            200
        );
    }
    let (s, body) = strata.flush();
    assert_eq!(s, 200, "{body}");

    // a querier reading the bucket through a proxy that holds every packet 2 s
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let proxy = slow_proxy(&rt, s3.endpoint(), Duration::from_secs(2));
    let slow_cfg = tmp.path().join("slow.yml");
    std::fs::write(&slow_cfg, yaml.replace(&s3.endpoint(), &proxy)).unwrap();
    let q = StrataProc::start_http_only(
        &tmp.path().join("q"),
        &[
            "querier",
            &format!("--objstore.config-file={}", slow_cfg.display()),
            "--query.timeout=3s",
        ],
    );
    let url = |partial: bool| {
        format!(
            "{}/api/v1/query?query={}&time={}&partial_response={partial}",
            q.url(),
            encode("count(disk_full)"),
            (t0 + 150_000) as f64 / 1000.0
        )
    };
    // partial responses on (Thanos's default): the answer comes when the store's
    // time is up, with a warning naming the store, instead of hanging
    let began = Instant::now();
    let (status, body) = get(&url(true)).unwrap();
    println!(
        "slow object store, partial: {status} after {:?}: {body}",
        began.elapsed()
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("bucket s3:strata: no response within 3s"),
        "{body}"
    );
    // partial responses off: the query fails with the same reason (422 `execution`,
    // as Prometheus answers a storage error)
    let began = Instant::now();
    let (status, body) = get(&url(false)).unwrap();
    println!(
        "slow object store, strict: {status} after {:?}: {body}",
        began.elapsed()
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("bucket s3:strata: no response within 3s"),
        "{body}"
    );
}

fn bucket_blocks(bucket: &Path, tenant: &str) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(bucket.join(tenant)) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("meta.json").exists())
        .collect();
    v.sort();
    v
}

#[test]
fn corrupted_chunks_and_index_in_the_bucket_cost_only_their_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let (bucket, cfg) = strata_testkit::strata::filesystem_bucket(tmp.path());
    let mut strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1h",
            "--compactor.interval=1h",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    // the in-process compactor's first pass (at start) must be over before blocks
    // exist, or it compacts them before they are damaged; the next is an hour away
    strata_testkit::poll("first compaction pass", Duration::from_secs(30), || {
        strata.log().contains("compaction pass done").then_some(())
    });
    // four blocks, one flush each: three in one 20-minute window, a newer one after it
    // (so that the compactor, run with 10m,20m ranges, compacts the first three: after
    // it marks whichever damaged block it opens first, two remain to compact, and the
    // other damaged one is opened too)
    const W: i64 = 20 * 60_000;
    let t0 = (now_ms() - 60 * 60_000) / W * W;
    for (job, t) in [
        ("first", t0),
        ("extra", t0 + W / 4),
        ("second", t0 + W / 2),
        ("third", t0 + 2 * W),
    ] {
        let req = write_request(
            (0..20)
                .map(|s| {
                    series(
                        &[
                            ("__name__", "corrupt_test"),
                            ("job", job),
                            ("s", &s.to_string()),
                        ],
                        &(0..20)
                            .map(|k| (t + k * 15_000, k as f64))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect(),
        );
        assert_eq!(strata.push(None, &req).0, 200);
        let (s, body) = strata.flush();
        assert_eq!(s, 200, "{body}");
    }
    let blocks = bucket_blocks(&bucket, "anonymous");
    assert_eq!(blocks.len(), 4, "{blocks:?}");
    // flip bytes in the middle of the first block's chunk data
    let seg = blocks[0].join("chunks").join("000001");
    let mut data = std::fs::read(&seg).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&seg, &data).unwrap();
    let bad = blocks[0].file_name().unwrap().to_string_lossy().to_string();
    // and cut the third block's index short
    let index = blocks[2].join("index");
    let len = std::fs::metadata(&index).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(len * 2 / 3)
        .unwrap();
    let bad_index = blocks[2].file_name().unwrap().to_string_lossy().to_string();

    let q = StrataProc::start_http_only(
        &tmp.path().join("q"),
        &[
            "querier",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    let url = format!(
        "{}/api/v1/query?query={}&time={}",
        q.url(),
        encode("count by (job) (count_over_time(corrupt_test[2h]))"),
        (t0 + 3 * W) as f64 / 1000.0
    );
    let (status, body) = get(&url).unwrap();
    println!("{status}: {body}");
    assert_eq!(status, 200, "{body}");
    // the intact block's series are all there, and the warnings name the bad blocks
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let jobs: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        jobs,
        vec![
            ("extra".to_string(), "20".to_string()),
            ("third".to_string(), "20".to_string())
        ],
        "{body}"
    );
    for name in [&bad, &bad_index] {
        assert!(
            body.contains(name.as_str()),
            "the warnings must name block {name}: {body}"
        );
    }

    // the compactor marks it no-compact instead of failing every pass (the one in
    // `strata all` holds the bucket's lock: stop it first)
    strata.terminate(Duration::from_secs(20));
    for l in strata.log().lines().filter(|l| l.contains("compact")) {
        println!("all: {l}");
    }
    assert!(
        !blocks[0].join("no-compact-mark.json").exists(),
        "marked before the compactor ran"
    );
    let out = Command::new(strata_testkit::procs::strata_bin())
        .args(["compactor", "--objstore.config-file"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(tmp.path().join("compactor"))
        .arg("--compaction.block-ranges=10m,20m")
        .output()
        .unwrap();
    println!("compactor: {}", String::from_utf8_lossy(&out.stderr));
    for (b, name) in [(&blocks[0], &bad), (&blocks[2], &bad_index)] {
        assert!(
            b.join("no-compact-mark.json").exists(),
            "no no-compact mark on {name}"
        );
    }
}

/// `sum(count_over_time(outage_m[..]))` over `[t0, t1]` as `q` answers it: the value
/// (0 when empty) and the raw body (for its warnings).
fn count_outage(q: &StrataProc, t0: i64, t1: i64) -> (u16, f64, String) {
    let expr = format!("sum(count_over_time(outage_m[{}ms]))", t1 - t0 + 1);
    let url = format!(
        "{}/api/v1/query?query={}&time={}",
        q.url(),
        encode(&expr),
        t1 as f64 / 1000.0
    );
    let (status, body) = get(&url).unwrap();
    let n = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(String::from)
        })
        .map_or(0.0, |s| s.parse().unwrap());
    (status, n, body)
}

/// The S3 server killed for a while under steady ingest (`STRATA_S3_OUTAGE_SECS`, 20 s
/// by default; set it to minutes for a soak by hand): every push is answered 200, the
/// shipper's failed rounds are counted and spaced out by its backoff, uploads resume
/// when S3 is back on the same port and directory, and every acknowledged sample is in
/// the bucket exactly once. A querier over the bucket answers with a warning, not an
/// error, while S3 is down.
#[test]
fn the_object_store_stopped_under_steady_ingest_loses_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let outage = Duration::from_secs(
        std::env::var("STRATA_S3_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    const SERIES: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start();
    // one retry inside a request: an attempt fails in well under a second, and the
    // ingester's own backoff spaces the attempts out
    let yaml = s3
        .objstore_yaml("strata")
        .replace("config:\n", "config:\n  max_retries: 1\n");
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1s",
            "--tsdb.block-duration=10s",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    let q = StrataProc::start_http_only(
        &tmp.path().join("q"),
        &[
            "querier",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    let t_start = now_ms();
    let acked = AtomicU64::new(0);
    let refused = std::sync::Mutex::new(Vec::<String>::new());
    let stop = AtomicBool::new(false);
    let last_t = AtomicU64::new(0);
    let (failures_down, shipped_before) = std::thread::scope(|scope| {
        // steady ingest: a sample for each series every 100 ms, timestamps increasing
        scope.spawn(|| {
            let mut t = t_start;
            while !stop.load(Ordering::Relaxed) {
                t = now_ms().max(t + 1);
                let req = write_request(
                    (0..SERIES)
                        .map(|s| {
                            series(
                                &[("__name__", "outage_m"), ("s", &s.to_string())],
                                &[(t, s as f64)],
                            )
                        })
                        .collect(),
                );
                let (status, body) = strata.push(None, &req);
                if status == 200 {
                    acked.fetch_add(SERIES as u64, Ordering::Relaxed);
                    last_t.store(t as u64, Ordering::Relaxed);
                } else {
                    refused.lock().unwrap().push(format!("{status}: {body}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // blocks reach the bucket before the outage
        strata_testkit::poll("a first upload", Duration::from_secs(60), || {
            (strata.metric("strata_ingester_blocks_shipped_total") >= 1.0).then_some(())
        });
        let shipped_before = strata.metric("strata_ingester_blocks_shipped_total");
        let failures_before = strata.metric("strata_ingester_block_upload_failures_total");
        s3.stop();
        let down_at = Instant::now();
        // while S3 is down, a querier over the bucket answers with a warning
        let (status, _, body) = count_outage(&q, t_start, now_ms());
        println!("bucket querier, S3 down: {status}: {body}");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"warnings\""), "no warning: {body}");
        // and strata all answers every acknowledged sample from its local copy
        let t_now = last_t.load(Ordering::Relaxed) as i64;
        let want = acked.load(Ordering::Relaxed) as f64;
        let (status, n, body) = count_outage(&strata, t_start, t_now);
        assert_eq!(status, 200, "{body}");
        assert!(
            n >= want,
            "strata all lost samples while S3 is down: {n} < {want}: {body}"
        );
        while down_at.elapsed() < outage {
            std::thread::sleep(Duration::from_millis(500));
        }
        let failures_down =
            strata.metric("strata_ingester_block_upload_failures_total") - failures_before;
        s3.restart();
        // uploads resume on their own
        strata_testkit::poll("uploads to resume", Duration::from_secs(90), || {
            (strata.metric("strata_ingester_blocks_shipped_total") > shipped_before).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        (failures_down, shipped_before)
    });
    let refused = refused.into_inner().unwrap();
    assert!(refused.is_empty(), "pushes refused: {refused:?}");
    println!(
        "outage {outage:?}: {failures_down} failed shipping rounds, {} samples acknowledged, {} blocks shipped before, {} after",
        acked.load(Ordering::Relaxed),
        shipped_before,
        strata.metric("strata_ingester_blocks_shipped_total")
    );
    assert!(
        strata.log().contains("block upload failed; will retry")
            && strata.log().contains("shipping round failed; backing off"),
        "{}",
        strata.log()
    );
    // several rounds failed, spaced out by the backoff (1 s apart without it)
    assert!(failures_down >= 2.0, "{failures_down} failed rounds");
    assert!(
        failures_down <= outage.as_secs_f64() / 2.0,
        "{failures_down} failed rounds in {outage:?}: no backoff"
    );
    let (s, body) = strata.flush();
    assert_eq!(s, 200, "{body}");
    // everything acknowledged is in the bucket, once: the bucket-only querier sees it
    // (its block listing is cached for 10 s)
    let want = acked.load(Ordering::Relaxed) as f64;
    let t_end = last_t.load(Ordering::Relaxed) as i64;
    let mut last = (0, 0.0, String::new());
    strata_testkit::poll(
        "every sample in the bucket",
        Duration::from_secs(60),
        || {
            last = count_outage(&q, t_start, t_end);
            (last.1 == want && !last.2.contains("\"warnings\"")).then_some(())
        },
    );
    assert_eq!(last.1, want, "{}", last.2);
}
