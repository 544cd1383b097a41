//! The out-of-order window (`--tsdb.out-of-order-time-window`, per tenant through the
//! runtime overrides) on the real binary: shuffled samples up to the window behind the
//! newest are answered at once and in order, survive `kill -9` (those older than the
//! last cut block too), and after two flushes (the second one's blocks overlapping the
//! first's, one of them holding only samples older than the first's floor) and a
//! compactor pass `promtool tsdb dump` of the bucket's one block equals the sorted input
//! with no duplicates. Outside the window, and without one, the refusals are today's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use strata_testkit::http::{encode, get};
use strata_testkit::procs::{promtool, promtool_dump, run_ok};
use strata_testkit::strata::{series, write_request, StrataProc};

const MIN: i64 = 60_000;
const STEP: i64 = 10_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A fixed pseudo-random permutation of `v`.
fn shuffled<T>(mut v: Vec<T>, seed: u64) -> Vec<T> {
    v.shuffle(&mut SmallRng::seed_from_u64(seed));
    v
}

/// Push `samples` of series `ooo{s=…}` a few at a time, in the order given; every push
/// must be accepted.
fn push_all(p: &StrataProc, tenant: Option<&str>, s: &str, samples: &[(i64, f64)]) {
    for part in samples.chunks(7) {
        let (code, body) = p.push(
            tenant,
            &write_request(vec![series(&[("__name__", "ooo"), ("s", s)], part)]),
        );
        assert_eq!(code, 200, "{part:?}: {body}");
    }
}

/// The raw samples of `ooo` per series `s` over the 100 minutes before `at`.
fn answered(p: &StrataProc, tenant: &str, at: i64) -> BTreeMap<String, Vec<(i64, f64)>> {
    let url = format!(
        "{}/api/v1/query?query={}&time={}",
        p.url(),
        encode("ooo[100m]"),
        at as f64 / 1000.0
    );
    let (status, body) =
        strata_testkit::http::get_with(&url, &[("X-Scope-OrgID", tenant)]).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = BTreeMap::new();
    for r in v["data"]["result"].as_array().unwrap() {
        let s = r["metric"]["s"].as_str().unwrap().to_string();
        let pts = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pt| {
                (
                    (pt[0].as_f64().unwrap() * 1000.0).round() as i64,
                    pt[1].as_str().unwrap().parse::<f64>().unwrap(),
                )
            })
            .collect();
        out.insert(s, pts);
    }
    out
}

/// Blocks of `tenant` in the bucket that are not marked for deletion.
fn live_blocks(bucket: &Path, tenant: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(bucket.join(tenant)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("meta.json").exists() && !p.join("deletion-mark.json").exists())
        .collect();
    out.sort();
    out
}

/// `promtool tsdb dump` of these blocks: per series `s`, the samples in dump order.
/// `promtool tsdb analyze` must read each of them too.
fn dumped(blocks: &[PathBuf]) -> BTreeMap<String, Vec<(i64, f64)>> {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("wal")).unwrap();
    for b in blocks {
        let id = b.file_name().unwrap();
        strata_testkit::procs::copy_dir(b, &tmp.path().join(id));
        let out = run_ok(
            Command::new(promtool())
                .args(["tsdb", "analyze"])
                .arg(tmp.path())
                .arg(id),
        );
        assert!(out.contains("Series: 2"), "{out}");
    }
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for line in promtool_dump(tmp.path()).lines() {
        // {__name__="ooo", s="a"} 1.5 1700000000000
        let Some((labels, rest)) = line.rsplit_once('}') else {
            continue;
        };
        let s = labels
            .split("s=\"")
            .nth(1)
            .and_then(|x| x.split('"').next())
            .unwrap_or_else(|| panic!("no s label: {line}"))
            .to_string();
        let mut f = rest.split_whitespace();
        let v: f64 = f.next().unwrap().parse().unwrap();
        let t: i64 = f.next().unwrap().parse().unwrap();
        out.entry(s).or_default().push((t, v));
    }
    out
}

#[test]
fn out_of_order_window_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (bucket, cfg) = strata_testkit::strata::filesystem_bucket(tmp.path());
    let mut strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.out-of-order-time-window=90m",
            "--tsdb.ship-interval=1s",
            "--compactor.interval=1s",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    // the newest sample a minute ago, unless that puts a 2 h block boundary inside the
    // 90 minutes before it: then a minute before the boundary (the flushes and the
    // compaction below then stay inside one 2 h range)
    let now = now_ms() / 1000 * 1000;
    let boundary = now.div_euclid(120 * MIN) * 120 * MIN;
    let newest = if now - boundary >= 92 * MIN {
        now - MIN
    } else {
        boundary - MIN
    };
    // every 10 s over the 90 minutes up to the newest sample; the newest goes first,
    // the rest in a shuffled order, the even steps before a flush, the odd ones after
    // (a flush keeps half a block, 1 h, appendable: the odd steps older than that are
    // older than the flushed block's floor)
    let all: Vec<(i64, f64)> = (0..=540)
        .map(|i| (newest - 90 * MIN + i * STEP, i as f64 * 0.5))
        .collect();
    let (newest_s, rest) = all.split_last().unwrap();
    let even: Vec<_> = rest.iter().copied().step_by(2).collect();
    let odd: Vec<_> = rest.iter().copied().skip(1).step_by(2).collect();
    for s in ["a", "b"] {
        push_all(&strata, None, s, &[*newest_s]);
    }
    push_all(&strata, None, "a", &shuffled(even.clone(), 1));
    push_all(&strata, None, "b", &shuffled(even.clone(), 2));
    let mut want: Vec<(i64, f64)> = even.iter().chain([newest_s]).copied().collect();
    want.sort_by_key(|s| s.0);
    // answered at once, sorted
    let got = answered(&strata, "anonymous", newest);
    assert_eq!(got["a"], want);
    assert_eq!(got["b"], want);

    // the same sample again is accepted; another value at a held timestamp is not
    push_all(&strata, None, "a", &[even[3]]);
    let (code, body) = strata.push(
        None,
        &write_request(vec![series(
            &[("__name__", "ooo"), ("s", "a")],
            &[(even[3].0, 1e9)],
        )]),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("another sample with the same timestamp, but a different value"),
        "{body}"
    );
    // beyond the window
    let (code, body) = strata.push(
        None,
        &write_request(vec![series(
            &[("__name__", "ooo"), ("s", "a")],
            &[(newest - 90 * MIN - 1, 1.0)],
        )]),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("beyond the out-of-order time window of 1h30m"),
        "{body}"
    );
    assert!(
        strata.metric("strata_ingester_tsdb_out_of_order_samples_appended_total")
            >= 2.0 * even.len() as f64
    );

    // cut and ship; then the odd steps (and repeats of flushed samples) land in a block
    // overlapping the first, which the compactor merges
    let (code, body) = strata.flush();
    assert_eq!(code, 200, "{body}");
    push_all(&strata, None, "a", &shuffled(odd.clone(), 3));
    push_all(&strata, None, "b", &shuffled(odd.clone(), 4));
    push_all(&strata, None, "a", &even[..5]);
    assert_eq!(answered(&strata, "anonymous", newest)["a"], all);
    let (code, body) = strata.flush();
    assert_eq!(code, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let merged = loop {
        let live = live_blocks(&bucket, "anonymous");
        let metas: Vec<serde_json::Value> = live
            .iter()
            .map(|b| {
                serde_json::from_str(&std::fs::read_to_string(b.join("meta.json")).unwrap())
                    .unwrap()
            })
            .collect();
        // the first flush's block, the second's block of samples older than the first's
        // floor, and its block of the newer ones
        if metas.len() == 1 && metas[0]["compaction"]["sources"].as_array().unwrap().len() == 3 {
            break live;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no single compacted block after 60 s: {metas:#?}\n{}",
            strata.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let dump = dumped(&merged);
    assert_eq!(dump.len(), 2);
    assert_eq!(dump["a"], all, "series a: sorted input, no duplicates");
    assert_eq!(dump["b"], all, "series b: sorted input, no duplicates");
    assert_eq!(answered(&strata, "anonymous", newest)["b"], all);
    let ts: BTreeSet<i64> = dump["a"].iter().map(|s| s.0).collect();
    assert_eq!(ts.len(), all.len());

    // kill -9 with out-of-order samples in the head (a new series, all but its newest
    // sample out of order, those over an hour old older than the floor): none lost.
    // Last, as the dead process's compactor lock holds the bucket for a while.
    push_all(&strata, None, "c", &[*newest_s]);
    push_all(&strata, None, "c", &shuffled(rest.to_vec(), 5));
    strata.kill9();
    strata.respawn();
    strata.wait_ready().unwrap();
    assert_eq!(answered(&strata, "anonymous", newest)["c"], all);
    println!(
        "{} samples per series, out of order; compacted block {} holds them once",
        all.len(),
        merged[0].display()
    );
}

#[test]
fn no_window_refuses_as_before_and_a_tenant_override_opens_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("runtime.yml");
    std::fs::write(
        &cfg,
        "overrides:\n  late:\n    out_of_order_time_window: 10m\n",
    )
    .unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[&format!("--runtime-config.file={}", cfg.display())],
    );
    let newest = now_ms() / 1000 * 1000 - MIN;
    for tenant in ["anonymous", "late"] {
        push_all(&strata, Some(tenant), "a", &[(newest, 1.0)]);
    }
    let older = |t: i64| {
        write_request(vec![series(
            &[("__name__", "ooo"), ("s", "a")],
            &[(t, 2.0)],
        )])
    };
    // no window (the default): today's refusal
    let (code, body) = strata.push(Some("anonymous"), &older(newest - MIN));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("out-of-order samples are not allowed (timestamp"),
        "{body}"
    );
    // the overridden tenant has a 10 minute window
    let (code, body) = strata.push(Some("late"), &older(newest - MIN));
    assert_eq!(code, 200, "{body}");
    let (code, body) = strata.push(Some("late"), &older(newest - 11 * MIN));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("beyond the out-of-order time window of 10m"),
        "{body}"
    );
    // a series twice in one request: its second occurrence is checked against the first
    let labels = [("__name__", "ooo"), ("s", "a")];
    let (code, body) = strata.push(
        Some("late"),
        &write_request(vec![
            series(&labels, &[(newest - 2 * MIN, 5.0)]),
            series(&labels, &[(newest - 2 * MIN, 6.0)]),
        ]),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("the same timestamp, but a different value"),
        "{body}"
    );
    assert_eq!(
        answered(&strata, "late", newest)["a"],
        vec![(newest - 2 * MIN, 5.0), (newest - MIN, 2.0), (newest, 1.0)]
    );
    assert_eq!(
        answered(&strata, "anonymous", newest)["a"],
        vec![(newest, 1.0)]
    );
    let (_, cfg) = get(&format!("{}/runtime_config", strata.url())).unwrap();
    assert!(cfg.contains("out_of_order_time_window: 10m"), "{cfg}");
}
