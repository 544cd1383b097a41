//! The querier reads downsampled data: 30 days of raw blocks (1-minute samples, 60
//! counters and 60 gauges), downsampled by the compactor library to 5m and 1h (raw kept),
//! queried at a 1h step with `max_source_resolution` raw vs `auto` (5m at a 1h step) vs
//! `1h`: the answers agree within 1%, and the resolution used shows in
//! `strata_querier_bucket_blocks_read_total{resolution}`.

use std::collections::BTreeMap;
use std::time::Instant;

use strata_compactor::{Compactor, CompactorConfig};
use strata_objstore::Bucket;
use strata_testkit::http::{encode, get};
use strata_testkit::strata::StrataProc;
use strata_tsdb::block::{BlockWriter, MetaExtra};
use strata_tsdb::chunkenc::ChunkCutter;
use strata_tsdb::labels::Labels;
use strata_tsdb::meta::ThanosMeta;
use ulid::Ulid;

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
const D: i64 = 24 * H;
const TENANT: &str = "anonymous";

fn counter(i: usize, t: i64) -> f64 {
    // A steady rate per series plus a wobble, reset to 0 every 5 days (staggered, off
    // the hour).
    let per_min = 1.0 + i as f64 * 0.37;
    let wobble = ((t / MIN) as f64 * 0.7 + i as f64).sin().abs() * 0.3 * per_min;
    let since_reset = (t + i as i64 * 7 * H + 17 * MIN) % (5 * D);
    (since_reset / MIN) as f64 * per_min + wobble
}

fn gauge(i: usize, t: i64) -> f64 {
    let day = (t as f64 / D as f64 + i as f64 / 10.0) * std::f64::consts::TAU;
    500.0 + 10.0 * i as f64 + 50.0 * day.sin() + ((t / MIN) as f64 * 1.3).sin()
}

fn write_block(
    tmp: &std::path::Path,
    min: i64,
    max: i64,
    interval: i64,
    n: usize,
) -> (Ulid, std::path::PathBuf) {
    let ulid = Ulid::new();
    let mut w = BlockWriter::new(tmp, ulid).unwrap();
    let mut series: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
    for i in 0..n {
        let idx = format!("{i:03}");
        let ts: Vec<i64> = (min / interval..max / interval)
            .map(|m| m * interval)
            .collect();
        series.push((
            Labels::from_pairs([("__name__", "req_total"), ("i", idx.as_str())]),
            ts.iter().map(|&t| (t, counter(i, t))).collect(),
        ));
        series.push((
            Labels::from_pairs([("__name__", "temp"), ("i", idx.as_str())]),
            ts.iter().map(|&t| (t, gauge(i, t))).collect(),
        ));
    }
    series.sort_by(|a, b| a.0.cmp(&b.0));
    for (l, s) in series {
        let mut c = ChunkCutter::new(2 * H);
        for (t, v) in s {
            c.append(t, v);
        }
        w.add_series(l, c.finish()).unwrap();
    }
    w.finish(Some(MetaExtra {
        min_time: Some(min),
        max_time: Some(max),
        compaction: None,
        thanos: Some(ThanosMeta {
            labels: [("cluster".to_string(), "c1".to_string())].into(),
            source: "test".into(),
            ..Default::default()
        }),
    }))
    .unwrap();
    (ulid, tmp.join(ulid.to_string()))
}

type Answer = BTreeMap<String, Vec<(i64, f64)>>;

fn query_range(p: &StrataProc, q: &str, start: i64, end: i64, res: &str) -> (Answer, f64) {
    let url = format!(
        "{}/api/v1/query_range?query={}&start={}&end={}&step=3600{}",
        p.url(),
        encode(q),
        start / 1000,
        end / 1000,
        if res.is_empty() {
            String::new()
        } else {
            format!("&max_source_resolution={res}")
        }
    );
    let t0 = Instant::now();
    let (code, body) = get(&url).unwrap();
    let took = t0.elapsed().as_secs_f64();
    assert_eq!(code, 200, "{q} ({res}): {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = Answer::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let key = s["metric"].to_string();
        let pts = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    (p[0].as_f64().unwrap() * 1000.0) as i64,
                    p[1].as_str().unwrap().parse::<f64>().unwrap(),
                )
            })
            .collect();
        out.insert(key, pts);
    }
    (out, took)
}

fn blocks_read(p: &StrataProc) -> BTreeMap<String, f64> {
    let (_, body) = get(&format!("{}/metrics", p.url())).unwrap();
    ["raw", "5m", "1h"]
        .iter()
        .map(|r| {
            let line = format!("strata_querier_bucket_blocks_read_total{{resolution=\"{r}\"}}");
            let v = body
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&line)
                        .and_then(|x| x.trim().parse::<f64>().ok())
                })
                .unwrap_or(0.0);
            (r.to_string(), v)
        })
        .collect()
}

/// Every series and step of `got` within `tol` (relative) of `want`; the same series
/// and at least 95% of the steps present.
fn assert_close(q: &str, res: &str, want: &Answer, got: &Answer, tol: f64) {
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{q} ({res}): series differ"
    );
    let mut worst = 0.0f64;
    let mut worst_at = (String::new(), 0i64, 0.0f64, 0.0f64);
    for (k, w) in want {
        let g: BTreeMap<i64, f64> = got[k].iter().copied().collect();
        let mut matched = 0;
        for &(t, wv) in w {
            let Some(&gv) = g.get(&t) else { continue };
            matched += 1;
            let rel = (gv - wv).abs() / wv.abs().max(1e-9);
            if rel > worst {
                worst = rel;
                worst_at = (k.clone(), t, wv, gv);
            }
            assert!(
                rel <= tol,
                "{q} ({res}) {k} at {t}: raw {wv} vs {gv} ({:.3}%)",
                rel * 100.0
            );
        }
        assert!(
            matched * 100 >= w.len() * 95,
            "{q} ({res}) {k}: {matched} of {} steps",
            w.len()
        );
    }
    eprintln!(
        "{q} ({res}): worst relative difference {:.4}% ({} at {}: raw {} vs {})",
        worst * 100.0,
        worst_at.0,
        worst_at.1,
        worst_at.2,
        worst_at.3
    );
}

/// 30 days of `n` counters and `n` gauges sampled every `interval` ms, in a FILESYSTEM
/// bucket as raw blocks plus the compactor's 5m and 1h blocks, and a querier on it.
/// Returns the querier, the first timestamp and the end.
fn setup(tmp: &std::path::Path, interval: i64, n: usize) -> (StrataProc, i64, i64) {
    let bucket_dir = tmp.join("bucket");
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        bucket_dir.display()
    );
    let cfg = tmp.join("bucket.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let bucket = Bucket::from_yaml(&yaml).unwrap();

    // 30 days from a 14d-aligned start: two 14d raw blocks and one of 2d.
    let t0 = 1_700_000_000_000 / (14 * D) * (14 * D);
    let end = t0 + 30 * D;
    let blocks = tmp.join("blocks");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (a, b) in [
        (t0, t0 + 14 * D),
        (t0 + 14 * D, t0 + 28 * D),
        (t0 + 28 * D, end),
    ] {
        let (ulid, dir) = write_block(&blocks, a, b, interval, n);
        rt.block_on(bucket.upload_dir(&dir, &format!("{TENANT}/{ulid}")))
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Downsample (raw kept: retention forever).
    let registry = strata_kit::metrics::Registry::new();
    let compactor = Compactor::new(
        bucket.clone(),
        CompactorConfig {
            data_dir: tmp.join("compactor"),
            delete_delay: std::time::Duration::ZERO,
            ..Default::default()
        },
        &registry,
    );
    let mut downsamplings = 0;
    for _ in 0..4 {
        let r = rt.block_on(compactor.run_once()).unwrap();
        downsamplings += r.downsamplings;
        if r.downsamplings == 0 && r.compactions == 0 {
            break;
        }
    }
    // 3 raw → 5m, the two 14d 5m blocks → 1h.
    assert_eq!(downsamplings, 5);

    let q = StrataProc::start_http_only(
        &tmp.join("q"),
        &[
            "querier",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    (q, t0, end)
}

/// 1-minute raw samples, 60 counters and 60 gauges.
#[test]
fn querier_reads_downsampled_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, t0, end) = setup(tmp.path(), MIN, 60);
    let start = t0 + D;
    let queries = [
        ("sum(rate(req_total[1h]))", &["auto", "5m", "1h"][..]),
        ("sum(increase(req_total[1h]))", &["auto", "5m", "1h"][..]),
        ("max_over_time(temp[1d])", &["auto", "5m", "1h"][..]),
        ("avg_over_time(temp[1h])", &["auto", "5m", "1h"][..]),
    ];
    for (query, resolutions) in queries {
        let before = blocks_read(&q);
        let (raw, raw_s) = query_range(&q, query, start, end, "0s");
        let after = blocks_read(&q);
        assert!(
            after["raw"] > before["raw"]
                && after["5m"] == before["5m"]
                && after["1h"] == before["1h"]
        );
        assert!(!raw.is_empty(), "{query}: no raw answer");
        for res in resolutions {
            let before = blocks_read(&q);
            let (got, s) = query_range(&q, query, start, end, res);
            let after = blocks_read(&q);
            let used: Vec<&str> = ["raw", "5m", "1h"]
                .into_iter()
                .filter(|r| after[*r] > before[*r])
                .collect();
            eprintln!("{query} max_source_resolution={res}: {s:.3}s (raw {raw_s:.3}s), blocks read at {used:?}");
            match *res {
                // auto at a 1h step is 5m (12m ≥ 5m > 1h): every block 5m, no raw.
                "auto" | "5m" => assert_eq!(used, ["5m"], "{query} {res}"),
                // 1h blocks cover 28 days; the last 2 days only have 5m.
                "1h" => assert_eq!(used, ["5m", "1h"], "{query} {res}"),
                _ => unreachable!(),
            }
            assert_close(query, res, &raw, &got, 0.01);
        }
    }
    // Unset means auto.
    let (a, _) = query_range(&q, "avg_over_time(temp[1h])", start, end, "auto");
    let before = blocks_read(&q);
    let (b, _) = query_range(&q, "avg_over_time(temp[1h])", start, end, "");
    assert_eq!(a, b);
    assert!(blocks_read(&q)["5m"] > before["5m"]);
    // Thanos's `--query.auto-downsampling=false`: unset means raw; `auto` still works.
    let raw_q = StrataProc::start_http_only(
        &tmp.path().join("q-raw"),
        &[
            "querier",
            &format!(
                "--objstore.config-file={}",
                tmp.path().join("bucket.yml").display()
            ),
            "--query.auto-downsampling=false",
        ],
    );
    let before = blocks_read(&raw_q);
    query_range(&raw_q, "avg_over_time(temp[1h])", start, end, "");
    let after = blocks_read(&raw_q);
    assert!(after["raw"] > before["raw"] && after["5m"] == before["5m"]);
    query_range(&raw_q, "avg_over_time(temp[1h])", start, end, "auto");
    assert!(blocks_read(&raw_q)["5m"] > after["5m"]);
    // An instant query reads raw data.
    let before = blocks_read(&q);
    let (code, body) = get(&format!(
        "{}/api/v1/query?query=temp&time={}",
        q.url(),
        end / 1000 - 60
    ))
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(blocks_read(&q)["raw"] > before["raw"]);
}

/// The speed-up, for a documented timing run (run it with a release build):
/// `cargo build --release -p strata && cargo test --release -p strata-tests --test
/// downsampled -- --ignored --nocapture`. 30 days of 15s samples (Prometheus's default
/// scrape interval), 50 counters and 50 gauges; best of 5 per query and resolution.
#[test]
#[ignore]
fn downsampled_speedup() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, t0, end) = setup(tmp.path(), 15_000, 50);
    let start = t0 + D;
    for query in [
        "sum(rate(req_total[1h]))",
        "max_over_time(temp[1d])",
        "avg_over_time(temp[1h])",
    ] {
        // Best of 5, the resolutions taking turns so a slow spell of this shared
        // machine hits them alike.
        let (mut raw, mut auto, mut h) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            raw = raw.min(query_range(&q, query, start, end, "0s").1);
            auto = auto.min(query_range(&q, query, start, end, "auto").1);
            h = h.min(query_range(&q, query, start, end, "1h").1);
        }
        let (want, _) = query_range(&q, query, start, end, "0s");
        for res in ["auto", "1h"] {
            let (got, _) = query_range(&q, query, start, end, res);
            assert_close(query, res, &want, &got, 0.01);
        }
        eprintln!(
            "BENCH {query}: raw {:.1} ms, auto(5m) {:.1} ms ({:.1}x), 1h {:.1} ms ({:.1}x)",
            raw * 1e3,
            auto * 1e3,
            raw / auto,
            h * 1e3,
            raw / h
        );
    }
}
