//! Blocks the compactor made from native histogram blocks, opened by the real
//! Prometheus 2.42 (`--enable-feature=native-histograms`): a horizontally compacted
//! block answers `histogram_count`, `histogram_sum` and `rate` exactly as the input
//! blocks did, and the block deduplicated from an HA pair's overlapping blocks answers
//! the penalty-merged replicas' histograms. A querier reads a block downsampled to 5m
//! (histogram chunks kept raw) and answers its histograms as from the raw block.

use std::path::Path;

use strata_compactor::{Compactor, CompactorConfig};
use strata_objstore::Bucket;
use strata_testkit::http::{encode, get};
use strata_testkit::procs::Prometheus;
use strata_testkit::strata::StrataProc;
use strata_tsdb::block::{BlockWriter, MetaExtra};
use strata_tsdb::dedup::{cut_samples, merge_pair_samples, Sample};
use strata_tsdb::histogram::{Histogram, Span};
use strata_tsdb::labels::Labels;
use strata_tsdb::meta::{BlockMeta, ThanosMeta};
use ulid::Ulid;

const H: i64 = 60 * 60 * 1000;
const STEP: i64 = 30_000;
const TENANT: &str = "t";

/// 8h aligned (the compactor's second level), in 2023.
fn t0() -> i64 {
    (1_700_000_000_000 / (8 * H)) * (8 * H)
}

/// A counter histogram at scrape `k`: resets every 400 scrapes, a bucket appearing
/// half-way through each cycle (re-coded chunks).
fn hist(k: i64) -> Histogram {
    let c = k % 400;
    let mut abs = vec![c, 2 * c + 1];
    let mut spans = vec![Span {
        offset: 0,
        length: 2,
    }];
    if c >= 200 {
        abs.push(c / 2);
        spans.push(Span {
            offset: 1,
            length: 1,
        });
    }
    let mut prev = 0;
    let deltas = abs
        .iter()
        .map(|a| {
            let d = a - prev;
            prev = *a;
            d
        })
        .collect();
    Histogram {
        schema: 1,
        zero_threshold: 2f64.powi(-128),
        zero_count: 1,
        count: 1 + abs.iter().sum::<i64>() as u64,
        sum: 1.5 * c as f64,
        positive_spans: spans,
        positive_buckets: deltas,
        ..Default::default()
    }
}

fn nh() -> Labels {
    Labels::from_pairs([("__name__", "nh"), ("job", "api")])
}

/// Write a block of `samples` in `[min, max)` into `dir` and upload it.
async fn block(
    bucket: &Bucket,
    dir: &Path,
    samples: &[(i64, Sample)],
    min: i64,
    max: i64,
    ext: &[(&str, &str)],
) -> Ulid {
    let ulid = Ulid::new();
    let mut w = BlockWriter::new(dir, ulid).unwrap();
    let part: Vec<(i64, Sample)> = samples
        .iter()
        .filter(|(t, _)| (min..max).contains(t))
        .cloned()
        .collect();
    w.add_series(nh(), cut_samples(&part, 2 * H)).unwrap();
    w.finish(Some(MetaExtra {
        min_time: Some(min),
        max_time: Some(max),
        compaction: None,
        thanos: Some(ThanosMeta {
            labels: ext
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source: "test".into(),
            ..Default::default()
        }),
    }))
    .unwrap();
    bucket
        .upload_dir(dir.join(ulid.to_string()), &format!("{TENANT}/{ulid}"))
        .await
        .unwrap();
    ulid
}

fn value(r: &serde_json::Value) -> String {
    assert_eq!(r.as_array().map(Vec::len), Some(1), "{r}");
    r[0]["value"][1].as_str().unwrap().to_string()
}

fn start(dir: &Path) -> Prometheus {
    Prometheus::start(
        dir,
        "global:\n  scrape_interval: 1h\n",
        &["--enable-feature=native-histograms"],
    )
}

#[test]
fn prometheus_2_42_reads_compacted_histogram_blocks_as_their_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(tmp.path().join("bucket")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t0 = t0();
    let before = tmp.path().join("before");
    let ha_in = tmp.path().join("ha-in");

    // Stream "h": five 2h blocks (the first four compact to 8h).
    let all: Vec<(i64, Sample)> = (0..10 * H / STEP)
        .map(|k| (t0 + k * STEP, Sample::Histogram(hist(k))))
        .collect();
    for k in 0..5 {
        rt.block_on(block(
            &bucket,
            &before,
            &all,
            t0 + k * 2 * H,
            t0 + (k + 1) * 2 * H,
            &[("cluster", "h")],
        ));
    }
    // Stream "ha": an HA pair over the same 2h, each with a gap, b 5 s behind.
    let replica = |offset: i64, gap: std::ops::Range<i64>| -> Vec<(i64, Sample)> {
        (0..2 * H / STEP)
            .filter(|k| !gap.contains(k))
            .map(|k| (t0 + k * STEP + offset, Sample::Histogram(hist(k))))
            .collect()
    };
    let a = replica(0, 40..80);
    let b = replica(5000, 150..190);
    for (s, r) in [(&a, "a"), (&b, "b")] {
        rt.block_on(block(
            &bucket,
            &ha_in,
            s,
            t0,
            t0 + 2 * H,
            &[("cluster", "ha"), ("replica", r)],
        ));
    }

    let compactor = Compactor::new(
        bucket.clone(),
        CompactorConfig {
            data_dir: tmp.path().join("compactor"),
            delete_delay: std::time::Duration::ZERO,
            lock_lease: std::time::Duration::ZERO,
            replica_labels: vec!["replica".into()],
            ..Default::default()
        },
        &strata_kit::metrics::Registry::new(),
    );
    let r = rt.block_on(compactor.run_once()).unwrap();
    assert!(r.halted_streams.is_empty(), "{:?}", r.halted_streams);
    assert_eq!(r.compactions, 2, "{r:?}");

    // Download the compacted blocks: the 8h one (plus the untouched fifth 2h block) and
    // the deduplicated one, each into its own Prometheus data dir.
    let after = tmp.path().join("after");
    let dedup = tmp.path().join("dedup");
    for m in rt.block_on(bucket.list_blocks(TENANT)).unwrap() {
        let meta = BlockMeta::from_json(&m.meta_json, Path::new("meta.json")).unwrap();
        if m.deletion_marked {
            continue;
        }
        let cluster = meta.thanos.as_ref().unwrap().labels["cluster"].clone();
        let to = if cluster == "h" { &after } else { &dedup };
        rt.block_on(bucket.download_dir(
            &format!("{TENANT}/{}", meta.ulid),
            to.join(meta.ulid.to_string()),
        ))
        .unwrap();
    }

    let queries = [
        "histogram_count(nh)",
        "histogram_sum(nh)",
        "histogram_count(rate(nh[5m]))",
    ];
    let times: Vec<i64> = (20..10 * H / STEP)
        .step_by(37)
        .map(|k| t0 + k * STEP + 1000)
        .collect();
    let answers = |dir: &Path| -> Vec<String> {
        let mut prom = start(dir);
        let mut out = Vec::new();
        for &t in &times {
            for q in queries {
                out.push(format!("{q}@{t}={}", value(&prom.query(q, t))));
            }
        }
        prom.stop();
        out
    };
    let want = answers(&before);
    // the inputs answer what was written (so "the same as before" is not vacuous)
    for (i, &t) in times.iter().enumerate() {
        let k = (t - t0) / STEP;
        let count = hist(k).count as f64;
        assert_eq!(
            want[i * queries.len()],
            format!("histogram_count(nh)@{t}={count}")
        );
    }
    assert_eq!(answers(&after), want);

    // The deduplicated block answers the penalty-merged replicas sample by sample.
    let merged = merge_pair_samples(&a, &b);
    assert!(merged.len() >= (2 * H / STEP) as usize - 2);
    let mut prom = start(&dedup);
    for (t, s) in merged.iter().step_by(7) {
        let Sample::Histogram(h) = s else {
            unreachable!()
        };
        let got = value(&prom.query("histogram_count(nh)", *t));
        assert_eq!(got, format!("{}", h.count as f64), "t={t}");
        let got = value(&prom.query("histogram_sum(nh)", *t));
        assert_eq!(got, format!("{}", h.sum), "t={t}");
    }
    // inside either replica's gap the other one answers
    for k in [60, 170] {
        let t = t0 + k * STEP + 6000;
        assert_eq!(
            value(&prom.query("histogram_count(nh)", t)),
            format!("{}", hist(k).count as f64),
            "k={k}"
        );
    }
    prom.stop();
}

/// `strata_querier_bucket_blocks_read_total{resolution}` of a querier.
fn blocks_read(q: &StrataProc, res: &str) -> f64 {
    let (_, body) = get(&format!("{}/metrics", q.url())).unwrap();
    let line = format!("strata_querier_bucket_blocks_read_total{{resolution=\"{res}\"}}");
    body.lines()
        .find_map(|l| l.strip_prefix(&line).and_then(|x| x.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A 48h raw block downsampled to 5m keeps its histogram chunks raw: the querier, asked
/// for 5m data, reads the 5m block and answers `histogram_count`/`histogram_sum`/`rate`
/// exactly as from the raw block.
///
/// A series that switches from floats to histograms keeps both in the 5m block: its
/// float aggregates answer beside its histograms.
///
/// (The querier's downsampled read path once decoded every part to floats and dropped
/// the histograms beside them, so the 5m answer was empty; then it dropped the float
/// aggregates of a series whose part also held histograms.)
#[test]
fn querier_answers_histograms_from_a_downsampled_block() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket_dir = tmp.path().join("bucket");
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        bucket_dir.display()
    );
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let bucket = Bucket::from_yaml(&yaml).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t0 = (1_700_000_000_000 / (48 * H)) * (48 * H);
    let step = 60_000;
    let all: Vec<(i64, Sample)> = (0..48 * H / step)
        .map(|k| (t0 + k * step, Sample::Histogram(hist(k))))
        .collect();
    // the querier's tenant: anonymous
    let blocks = tmp.path().join("blocks");
    let ulid = Ulid::new();
    let mut w = BlockWriter::new(&blocks, ulid).unwrap();
    let mut chunks = Vec::new();
    for k in 0..24 {
        let part: Vec<(i64, Sample)> = all
            .iter()
            .filter(|(t, _)| (t0 + k * 2 * H..t0 + (k + 1) * 2 * H).contains(t))
            .cloned()
            .collect();
        chunks.extend(cut_samples(&part, 2 * H));
    }
    w.add_series(nh(), chunks).unwrap();
    // `mixed`: floats for the first day, histograms for the second (its 5m series holds
    // float aggregate chunks and raw histogram chunks)
    let mixed: Vec<(i64, Sample)> = all
        .iter()
        .map(|(t, s)| match (t - t0) / step {
            k if k < 24 * H / step => (*t, Sample::Float(k as f64)),
            _ => (*t, s.clone()),
        })
        .collect();
    let mut chunks = Vec::new();
    for k in 0..24 {
        let part: Vec<(i64, Sample)> = mixed
            .iter()
            .filter(|(t, _)| (t0 + k * 2 * H..t0 + (k + 1) * 2 * H).contains(t))
            .cloned()
            .collect();
        chunks.extend(cut_samples(&part, 2 * H));
    }
    w.add_series(
        Labels::from_pairs([("__name__", "mixed"), ("job", "api")]),
        chunks,
    )
    .unwrap();
    w.finish(Some(MetaExtra {
        min_time: Some(t0),
        max_time: Some(t0 + 48 * H),
        compaction: None,
        thanos: Some(ThanosMeta {
            labels: [("cluster".to_string(), "d".to_string())].into(),
            source: "test".into(),
            ..Default::default()
        }),
    }))
    .unwrap();
    rt.block_on(bucket.upload_dir(blocks.join(ulid.to_string()), &format!("anonymous/{ulid}")))
        .unwrap();
    let compactor = Compactor::new(
        bucket.clone(),
        CompactorConfig {
            data_dir: tmp.path().join("compactor"),
            delete_delay: std::time::Duration::ZERO,
            lock_lease: std::time::Duration::ZERO,
            ..Default::default()
        },
        &strata_kit::metrics::Registry::new(),
    );
    let r = rt.block_on(compactor.run_once()).unwrap();
    assert_eq!(r.downsamplings, 1, "{r:?}");

    let q = StrataProc::start_http_only(
        &tmp.path().join("q"),
        &[
            "querier",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    let ask = |expr: &str, t: i64, res: &str| -> String {
        let url = format!(
            "{}/api/v1/query?query={}&time={}&max_source_resolution={res}",
            q.url(),
            encode(expr),
            t / 1000
        );
        let (code, body) = get(&url).unwrap();
        assert_eq!(code, 200, "{expr} ({res}): {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        value(&v["data"]["result"])
    };
    for k in [30, 700, 1500, 2800] {
        let t = t0 + k * step;
        for expr in [
            "histogram_count(nh)",
            "histogram_sum(nh)",
            "histogram_count(rate(nh[10m]))",
        ] {
            let raw = ask(expr, t, "0s");
            let before = blocks_read(&q, "5m");
            let five = ask(expr, t, "5m");
            assert!(blocks_read(&q, "5m") > before, "{expr}: 5m block not read");
            assert_eq!(five, raw, "{expr} at k={k}");
            if expr == "histogram_count(nh)" {
                assert_eq!(raw, format!("{}", hist(k).count as f64));
            }
        }
    }
    // the series switching kinds keeps its float aggregates beside its histograms
    for (expr, k, want) in [
        ("max_over_time(mixed[1d])", 1500, "1439".to_string()),
        (
            "histogram_count(mixed)",
            2800,
            format!("{}", hist(2800).count as f64),
        ),
    ] {
        let t = t0 + k * step;
        assert_eq!(ask(expr, t, "0s"), want, "{expr} raw");
        assert_eq!(ask(expr, t, "5m"), want, "{expr} at 5m");
    }
}
