//! `kill -9` at seeded random moments of ingest, block cut and upload (and the
//! compactions that the overlaps left by crashes cause), repeated for 20 rounds on one
//! data directory and bucket: every acknowledged sample is answered exactly once
//! afterwards, and every block in the bucket opens with promtool.
//! `STRATA_CRASH_ROUNDS` and `STRATA_CRASH_SEED` set a longer soak by hand.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_testkit::http::{encode, get, post};
use strata_testkit::strata::{series, write_request, StrataProc};

const SERIES: usize = 10;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Milliseconds between batches' timestamps for 20 rounds (fewer for more rounds).
/// Pushes outrun the clock on a fast machine (CI pushed 7,200 batches in 9 s); the push
/// loop waits for the clock rather than send a batch from the future, so this only sets
/// how far ahead of the clock a fast machine gets before it is throttled.
const STEP_20_ROUNDS: i64 = 20;

/// Batch `k`: one sample per series at `t0 + k * step`, value `k`.
fn batch(t0: i64, step: i64, k: i64) -> strata_proto::prometheus::WriteRequest {
    write_request(
        (0..SERIES)
            .map(|s| {
                series(
                    &[("__name__", "crash_rounds"), ("s", &s.to_string())],
                    &[(t0 + k * step, k as f64)],
                )
            })
            .collect(),
    )
}

/// Per series: the timestamps answered over the whole range.
fn answered(p: &StrataProc, t0: i64, t1: i64) -> Vec<BTreeSet<i64>> {
    // the raw samples: a range vector at the end of the range
    let url = format!(
        "{}/api/v1/query?query={}&time={}",
        p.url(),
        encode(&format!("crash_rounds[{}s]", (t1 - t0) / 1000 + 1)),
        t1 as f64 / 1000.0
    );
    let (status, body) = get(&url).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = vec![BTreeSet::new(); SERIES];
    for r in v["data"]["result"].as_array().unwrap() {
        let s: usize = r["metric"]["s"].as_str().unwrap().parse().unwrap();
        for pt in r["values"].as_array().unwrap() {
            let t = (pt[0].as_f64().unwrap() * 1000.0).round() as i64;
            assert!(
                out[s].insert(t),
                "sample at {t} of series {s} answered twice"
            );
        }
    }
    out
}

fn promtool_list(bucket: &Path) {
    let dir = bucket.join("anonymous");
    if !dir.exists() {
        return;
    }
    let promtool = strata_testkit::procs::find_program("promtool", "apt-get install -y prometheus");
    let out = Command::new(promtool)
        .args(["tsdb", "list"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool cannot open the bucket's blocks: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn acknowledged_samples_survive_seeded_kill_9_rounds() {
    let rounds: usize = std::env::var("STRATA_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261204);
    let mut rng = SmallRng::seed_from_u64(seed);
    let step = (STEP_20_ROUNDS * 20 / rounds.max(1) as i64).clamp(1, STEP_20_ROUNDS);
    let tmp = tempfile::tempdir().unwrap();
    let (bucket, cfg) = strata_testkit::strata::filesystem_bucket(tmp.path());
    let mut strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1s",
            "--compactor.interval=1s",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    let t0 = now_ms() - 30 * 60_000;
    let mut acked: BTreeSet<i64> = BTreeSet::new();
    let mut sent: BTreeSet<i64> = BTreeSet::new();
    let mut k = 0i64;
    for round in 0..rounds {
        // this round's kill comes after a seeded delay, while batches stream in and,
        // on some rounds, a flush (block cut + upload) runs
        let delay = Duration::from_millis(rng.random_range(50..800));
        let flush_at = rng.random_bool(0.6).then(|| rng.random_range(0..400u64));
        let pid = strata.pid();
        let killed = Arc::new(AtomicBool::new(false));
        let killer = {
            let killed = killed.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                killed.store(true, Ordering::SeqCst);
            })
        };
        let flusher = flush_at.map(|ms| {
            let url = format!("{}/ingester/flush", strata.url());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(ms));
                let _ = post(&url, &[], b"");
            })
        });
        while !killed.load(Ordering::SeqCst) {
            // never a batch from the future, however fast this machine pushes
            if t0 + k * step >= now_ms() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            sent.insert(k);
            let body = strata_proto::encode_write_request(&batch(t0, step, k));
            match post(
                &format!("{}/api/v1/push", strata.url()),
                &[
                    ("Content-Encoding", "snappy"),
                    ("Content-Type", "application/x-protobuf"),
                ],
                &body,
            ) {
                Ok((200, _)) => {
                    acked.insert(k);
                }
                // refused or cut off by the kill, or a 5xx: not acknowledged
                Err(_) => {}
                Ok((s, _)) if s >= 500 => {}
                Ok((s, body)) => panic!("round {round}: unexpected {s}: {body}"),
            }
            k += 1;
        }
        killer.join().unwrap();
        if let Some(f) = flusher {
            f.join().unwrap();
        }
        strata.kill9();
        strata.respawn();
        strata
            .wait_ready()
            .unwrap_or_else(|log| panic!("round {round}: restart failed:\n{log}"));
        promtool_list(&bucket);
    }
    // let the last uploads and compactions settle, then check every series
    let (s, body) = strata.flush();
    assert_eq!(s, 200, "{body}");
    let got = answered(&strata, t0, t0 + k * step);
    let acked_t: BTreeSet<i64> = acked.iter().map(|k| t0 + k * step).collect();
    let sent_t: BTreeSet<i64> = sent.iter().map(|k| t0 + k * step).collect();
    for (s, ts) in got.iter().enumerate() {
        let lost: Vec<_> = acked_t.difference(ts).collect();
        assert!(
            lost.is_empty(),
            "series {s}: acknowledged samples lost: {lost:?}"
        );
        let invented: Vec<_> = ts.difference(&sent_t).collect();
        assert!(
            invented.is_empty(),
            "series {s}: samples never sent: {invented:?}"
        );
    }
    promtool_list(&bucket);
    let blocks = std::fs::read_dir(bucket.join("anonymous"))
        .map(|rd| {
            rd.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().join("meta.json").exists())
            })
            .count()
        })
        .unwrap_or(0);
    println!(
        "{rounds} rounds (seed {seed}): {} batches sent, {} acknowledged, all answered once; {blocks} blocks in the bucket",
        sent.len(),
        acked.len()
    );
}
