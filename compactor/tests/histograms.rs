//! Native histograms through the compactor on a real FILESYSTEM bucket: HA replicas'
//! overlapping histogram blocks deduplicated into one stream, horizontal compaction
//! copying histogram chunks, and downsampling keeping histogram chunks raw next to the
//! float series' aggregates.

use std::collections::BTreeMap;
use std::path::Path;

mod common;

use common::{config, live_metas, one_pass, resolution};
use strata_compactor::CompactorConfig;
use strata_objstore::Bucket;
use strata_tsdb::block::Block;
use strata_tsdb::chunkenc::Encoding;
use strata_tsdb::dedup::{cut_samples, merge_pair_samples, Sample};
use strata_tsdb::downsample::{AggrChunk, AggrType, RES_5M};
use strata_tsdb::histogram::{CounterResetHint, FloatHistogram, Histogram, Span};
use strata_tsdb::labels::Labels;
use strata_tsdb::meta::BlockMeta;
use ulid::Ulid;

const H: i64 = 3_600_000;
const TENANT: &str = "tenant-h";
type Series = BTreeMap<Labels, Vec<(i64, Sample)>>;

fn deltas(abs: &[i64]) -> Vec<i64> {
    let mut prev = 0;
    abs.iter()
        .map(|a| {
            let d = a - prev;
            prev = *a;
            d
        })
        .collect()
}

/// A counter histogram at scrape `k` (growing; reset every 300 scrapes; a third bucket
/// appears in the second half of each cycle, so chunks get re-coded layouts).
fn counter(k: i64) -> Histogram {
    let c = k % 300;
    let mut pos = vec![2 * c, 3 * c + 1];
    let mut spans = vec![Span {
        offset: -1,
        length: 2,
    }];
    if c >= 150 {
        pos.push(c);
        spans.push(Span {
            offset: 3,
            length: 1,
        });
    }
    Histogram {
        schema: 2,
        zero_threshold: 2f64.powi(-128),
        zero_count: c as u64,
        count: c as u64 + pos.iter().sum::<i64>() as u64,
        sum: 0.5 * c as f64,
        positive_buckets: deltas(&pos),
        positive_spans: spans,
        ..Default::default()
    }
}

fn gauge(k: i64) -> FloatHistogram {
    let v = ((k * 37) % 11) as f64 + 0.5;
    FloatHistogram {
        counter_reset_hint: CounterResetHint::Gauge,
        schema: 0,
        count: 2.0 * v,
        sum: -v,
        positive_spans: vec![Span {
            offset: 1,
            length: 2,
        }],
        positive_buckets: vec![v, v],
        ..Default::default()
    }
}

fn name(n: &str) -> Labels {
    Labels::from_pairs([("__name__", n.to_string()), ("job", "api".to_string())])
}

/// Scrapes every `every` ms from `from` to `to` (shifted by `offset`), skipping `gap`.
fn scrapes(
    from: i64,
    to: i64,
    every: i64,
    offset: i64,
    gap: std::ops::Range<i64>,
) -> Vec<(i64, i64)> {
    (from..to)
        .step_by(every as usize)
        .map(|t| (t + offset, t / every))
        .filter(|(t, _)| !gap.contains(t))
        .collect()
}

/// A series set: an integer counter histogram, a gauge float histogram and a float.
fn series(sc: &[(i64, i64)]) -> Series {
    let mut m = Series::new();
    m.insert(
        name("nh_counter"),
        sc.iter()
            .map(|&(t, k)| (t, Sample::Histogram(counter(k))))
            .collect(),
    );
    m.insert(
        name("nh_gauge"),
        sc.iter()
            .map(|&(t, k)| (t, Sample::FloatHistogram(gauge(k))))
            .collect(),
    );
    m.insert(
        name("plain"),
        sc.iter()
            .map(|&(t, k)| (t, Sample::Float(k as f64)))
            .collect(),
    );
    m
}

async fn put_block(
    bucket: &Bucket,
    tmp: &Path,
    model: &Series,
    min: i64,
    max: i64,
    ext: &[(&str, &str)],
) -> Ulid {
    common::upload_block(bucket, tmp, TENANT, (min, max), ext, |w| {
        for (l, s) in model {
            let part: Vec<(i64, Sample)> = s
                .iter()
                .filter(|(t, _)| (min..max).contains(t))
                .cloned()
                .collect();
            w.add_series(l.clone(), cut_samples(&part, 2 * H)).unwrap();
        }
    })
    .await
}

/// What a histogram sample means, independent of its bucket layout (a re-coded chunk
/// lists empty buckets a sample did not have) and of the counter-reset hint (derived
/// from the chunk header on decode): time, count, sum, zero count, non-empty buckets.
type Key = (i64, String);

fn key(t: i64, h: &FloatHistogram) -> Key {
    let nonzero = |spans: &[Span], counts: &[f64]| {
        let mut out = Vec::new();
        let (mut idx, mut i) = (0i32, 0usize);
        for s in spans {
            idx += s.offset;
            for _ in 0..s.length {
                if counts[i] != 0.0 {
                    out.push((idx, counts[i]));
                }
                idx += 1;
                i += 1;
            }
        }
        out
    };
    (
        t,
        format!(
            "s{} c{} sum{} z{} p{:?} n{:?}",
            h.schema,
            h.count,
            h.sum,
            h.zero_count,
            nonzero(&h.positive_spans, &h.positive_buckets),
            nonzero(&h.negative_spans, &h.negative_buckets)
        ),
    )
}

fn keys(s: &[(i64, Sample)]) -> Vec<Key> {
    s.iter()
        .filter_map(|(t, s)| match s {
            Sample::Histogram(h) => Some(key(*t, &h.to_float())),
            Sample::FloatHistogram(h) => Some(key(*t, h)),
            Sample::Float(_) => None,
        })
        .collect()
}

/// Every live raw block's histogram samples per series (as keys), its float samples,
/// and the chunk encodings seen per series.
type Read = (
    BTreeMap<Labels, Vec<Key>>,
    BTreeMap<Labels, Vec<(i64, f64)>>,
    BTreeMap<Labels, Vec<Encoding>>,
);

async fn read_block(bucket: &Bucket, m: &BlockMeta, dir: &Path) -> Read {
    let bdir = dir.join(m.ulid.to_string());
    bucket
        .download_dir(&format!("{TENANT}/{}", m.ulid), &bdir)
        .await
        .unwrap();
    let b = Block::open(&bdir).unwrap();
    let (mut hs, mut fs, mut encs) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for s in b.select(&[], i64::MIN, i64::MAX).unwrap() {
        let s = s.unwrap();
        let e: Vec<Encoding> = s
            .chunks
            .iter()
            .map(|c| b.chunks().chunk(c.chunk_ref).unwrap().0)
            .collect();
        let h = b.histograms(&s, i64::MIN, i64::MAX).unwrap();
        if !h.is_empty() {
            hs.insert(
                s.labels.clone(),
                h.iter().map(|(t, h)| key(*t, h)).collect(),
            );
        }
        if e.contains(&Encoding::Xor) {
            let part = strata_tsdb::block::SeriesChunks {
                series_ref: s.series_ref,
                labels: s.labels.clone(),
                chunks: s
                    .chunks
                    .iter()
                    .zip(&e)
                    .filter(|(_, e)| **e == Encoding::Xor)
                    .map(|(c, _)| *c)
                    .collect(),
            };
            fs.insert(
                s.labels.clone(),
                b.samples(&part, i64::MIN, i64::MAX).unwrap(),
            );
        }
        encs.insert(s.labels, e);
    }
    (hs, fs, encs)
}

/// An HA pair (replica=a/b, each with its own gap, b scraping 4 s later) writes the
/// same histogram series over the same 2h: the compactor merges the overlapping blocks
/// into one whose samples are the penalty-merged replicas — every sample from one
/// replica, no scrape twice, each gap filled by the other — and keeps integer histogram
/// chunks integer (re-cut with the head's rules, a reset chunk marked as one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_histograms_deduplicate_into_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let every = 15_000;
    let a = series(&scrapes(0, 2 * H, every, 0, 20 * 60_000..35 * 60_000));
    let b = series(&scrapes(0, 2 * H, every, 4000, 70 * 60_000..90 * 60_000));
    let tmp = dir.path().join("tmp");
    put_block(
        &bucket,
        &tmp,
        &a,
        0,
        2 * H,
        &[("cluster", "eu"), ("replica", "a")],
    )
    .await;
    put_block(
        &bucket,
        &tmp,
        &b,
        0,
        2 * H,
        &[("cluster", "eu"), ("replica", "b")],
    )
    .await;

    let cfg = CompactorConfig {
        replica_labels: vec!["replica".into()],
        ..config(&dir.path().join("data"))
    };
    let r = one_pass(&bucket, cfg).await;
    assert_eq!(r.compactions, 1, "{r:?}");
    let live = live_metas(&bucket, TENANT).await;
    assert_eq!(live.len(), 1);
    assert!(!live[0]
        .thanos
        .as_ref()
        .unwrap()
        .labels
        .contains_key("replica"));
    assert!(live[0].stats.num_histogram_samples > 0);

    let (hs, fs, encs) = read_block(&bucket, &live[0], dir.path()).await;
    for n in ["nh_counter", "nh_gauge"] {
        let l = name(n);
        let want = keys(&merge_pair_samples(&a[&l], &b[&l]));
        let got = &hs[&l];
        assert_eq!(got, &want, "{n}");
        // independent of the merge code: one stream, from the replicas, gaps filled
        let (ka, kb) = (keys(&a[&l]), keys(&b[&l]));
        assert!(got.iter().all(|k| ka.contains(k) || kb.contains(k)));
        assert!(
            got.windows(2).all(|w| w[1].0 - w[0].0 >= every / 2),
            "{n}: doubled"
        );
        let max_gap = got.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap();
        assert!(max_gap <= 2 * every, "{n}: gap of {max_gap} ms not filled");
    }
    assert!(encs[&name("nh_counter")]
        .iter()
        .all(|e| *e == Encoding::Histogram));
    assert!(encs[&name("nh_gauge")]
        .iter()
        .all(|e| *e == Encoding::FloatHistogram));
    let plain = &fs[&name("plain")];
    assert!(plain.windows(2).all(|w| w[1].0 - w[0].0 >= every / 2));
    assert!(plain.len() >= (2 * H / every) as usize - 2);
}

/// Five 2h blocks of one stream: the first four compact into an 8h block whose
/// histogram chunks are the inputs' chunks copied (same encodings, same samples).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_blocks_compact_horizontally() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let every = 30_000;
    let model = series(&scrapes(0, 10 * H, every, 0, 0..0));
    let tmp = dir.path().join("tmp");
    for k in 0..5 {
        put_block(
            &bucket,
            &tmp,
            &model,
            k * 2 * H,
            (k + 1) * 2 * H,
            &[("cluster", "eu")],
        )
        .await;
    }
    let r = one_pass(&bucket, config(&dir.path().join("data"))).await;
    assert_eq!(r.compactions, 1, "{r:?}");
    let live = live_metas(&bucket, TENANT).await;
    assert_eq!(live.len(), 2);
    assert_eq!((live[0].min_time, live[0].max_time), (0, 8 * H));

    let (hs, fs, encs) = read_block(&bucket, &live[0], dir.path()).await;
    for n in ["nh_counter", "nh_gauge"] {
        let l = name(n);
        let part: Vec<(i64, Sample)> = model[&l]
            .iter()
            .filter(|(t, _)| *t < 8 * H)
            .cloned()
            .collect();
        assert_eq!(hs[&l], keys(&part), "{n}");
        // chunks copied: as many as the four inputs' chunks together
        let inputs: usize = (0..4)
            .map(|k| {
                let p: Vec<(i64, Sample)> = part
                    .iter()
                    .filter(|(t, _)| (k * 2 * H..(k + 1) * 2 * H).contains(t))
                    .cloned()
                    .collect();
                cut_samples(&p, 2 * H).len()
            })
            .sum();
        assert_eq!(encs[&l].len(), inputs, "{n}");
    }
    assert_eq!(fs[&name("plain")].len(), (8 * H / every) as usize);
}

/// A 48h raw block downsampled to 5m: the float series becomes aggregate chunks, the
/// histogram series keep their raw chunks (same samples), and a series switching from
/// floats to histograms gets aggregates for its float part and raw chunks for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downsampling_keeps_histogram_chunks_raw() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let every = 60_000;
    let sc = scrapes(0, 48 * H, every, 0, 0..0);
    let mut model = series(&sc);
    let mixed: Vec<(i64, Sample)> = sc
        .iter()
        .map(|&(t, k)| {
            if t < 24 * H {
                (t, Sample::Float(k as f64))
            } else {
                (t, Sample::Histogram(counter(k)))
            }
        })
        .collect();
    model.insert(name("mixed"), mixed.clone());
    let tmp = dir.path().join("tmp");
    put_block(&bucket, &tmp, &model, 0, 48 * H, &[("cluster", "eu")]).await;
    let r = one_pass(&bucket, config(&dir.path().join("data"))).await;
    assert_eq!(r.downsamplings, 1, "{r:?}");
    let live = live_metas(&bucket, TENANT).await;
    let five: Vec<&BlockMeta> = live.iter().filter(|m| resolution(m) == RES_5M).collect();
    assert_eq!(five.len(), 1);

    let bdir = dir.path().join("d5");
    bucket
        .download_dir(&format!("{TENANT}/{}", five[0].ulid), &bdir)
        .await
        .unwrap();
    let b = Block::open(&bdir).unwrap();
    let mut seen = 0;
    for s in b.select(&[], i64::MIN, i64::MAX).unwrap() {
        let s = s.unwrap();
        let encs: Vec<Encoding> = s
            .chunks
            .iter()
            .map(|c| b.chunks().chunk(c.chunk_ref).unwrap().0)
            .collect();
        let hist = b.histograms(&s, i64::MIN, i64::MAX).unwrap();
        let mut count = 0.0;
        for c in &s.chunks {
            let (enc, data) = b.chunks().chunk(c.chunk_ref).unwrap();
            if enc == Encoding::Aggr {
                count += AggrChunk::new(data)
                    .unwrap()
                    .samples(AggrType::Count)
                    .unwrap()
                    .iter()
                    .map(|s| s.1)
                    .sum::<f64>();
            }
        }
        let name = s.labels.get("__name__").unwrap().to_string();
        let hkeys: Vec<Key> = hist.iter().map(|(t, h)| key(*t, h)).collect();
        match name.as_str() {
            "plain" => {
                assert!(encs.iter().all(|e| *e == Encoding::Aggr), "{encs:?}");
                assert_eq!(count, sc.len() as f64);
            }
            "nh_counter" | "nh_gauge" => {
                assert!(encs.iter().all(|e| *e != Encoding::Aggr), "{encs:?}");
                assert_eq!(hkeys, keys(&model[&s.labels]), "{name}");
            }
            "mixed" => {
                let floats = mixed.iter().filter(|(t, _)| *t < 24 * H).count();
                assert_eq!(count, floats as f64);
                assert_eq!(hkeys, keys(&mixed), "{name}");
                let first_hist = encs.iter().position(|e| *e != Encoding::Aggr).unwrap();
                assert!(first_hist > 0);
                assert!(encs[first_hist..].iter().all(|e| *e == Encoding::Histogram));
            }
            other => panic!("unexpected series {other}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 4);
}

/// An HA pair remote-written into one block: the series carry the replica label
/// themselves. With `--deduplication.replica-label`, the compactor merges them into one
/// series without it, histograms included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_labelled_histogram_series_merge_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let every = 15_000;
    let a = series(&scrapes(0, 2 * H, every, 0, 10 * 60_000..30 * 60_000));
    let b = series(&scrapes(0, 2 * H, every, 3000, 60 * 60_000..75 * 60_000));
    let with = |m: &Series, r: &str| -> Series {
        m.iter()
            .map(|(l, s)| {
                let mut pairs: Vec<(String, String)> = l
                    .iter()
                    .map(|x| (x.name.to_string(), x.value.to_string()))
                    .collect();
                pairs.push(("replica".into(), r.into()));
                (Labels::from_pairs(pairs), s.clone())
            })
            .collect()
    };
    let mut both = with(&a, "a");
    both.extend(with(&b, "b"));
    let tmp = dir.path().join("tmp");
    // Two overlapping blocks of the one writer, so the stream has something to merge.
    put_block(&bucket, &tmp, &both, 0, 2 * H, &[("cluster", "eu")]).await;
    put_block(&bucket, &tmp, &both, 0, 2 * H, &[("cluster", "eu")]).await;
    let cfg = CompactorConfig {
        replica_labels: vec!["replica".into()],
        ..config(&dir.path().join("data"))
    };
    let r = one_pass(&bucket, cfg).await;
    assert_eq!(r.compactions, 1, "{r:?}");
    let live = live_metas(&bucket, TENANT).await;
    assert_eq!(live.len(), 1);
    let (hs, _, encs) = read_block(&bucket, &live[0], dir.path()).await;
    assert_eq!(encs.len(), 3, "{:?}", encs.keys().collect::<Vec<_>>());
    for n in ["nh_counter", "nh_gauge"] {
        let l = name(n);
        let got = &hs[&l];
        assert_eq!(got, &keys(&merge_pair_samples(&a[&l], &b[&l])), "{n}");
        let max_gap = got.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap();
        assert!(max_gap <= 2 * every, "{n}: gap of {max_gap} ms not filled");
    }
}

/// A 10d 5m block (float aggregates and raw histogram chunks, as the 5m pass writes
/// them) downsampled to 1h: the aggregates are aggregated again, the histogram chunks
/// carried over unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_minute_block_with_histograms_downsamples_to_1h() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let d = 24 * H;
    let sc = scrapes(0, 10 * d, 5 * 60_000, 0, 0..0);
    let model = series(&sc);
    let floats: Vec<(i64, f64)> = sc.iter().map(|&(t, k)| (t, k as f64)).collect();
    common::upload_block_at(
        &bucket,
        &dir.path().join("tmp"),
        TENANT,
        (0, 10 * d),
        (&[("cluster", "eu")], RES_5M),
        |w| {
            for n in ["nh_counter", "nh_gauge"] {
                let s = &model[&name(n)];
                let mut chunks = Vec::new();
                for k in 0..120 {
                    let part: Vec<(i64, Sample)> = s
                        .iter()
                        .filter(|(t, _)| (k * 2 * H..(k + 1) * 2 * H).contains(t))
                        .cloned()
                        .collect();
                    chunks.extend(cut_samples(&part, 2 * H));
                }
                w.add_series(name(n), chunks).unwrap();
            }
            let aggr = strata_tsdb::downsample::downsample_raw(&floats, RES_5M);
            w.add_series(name("plain"), aggr).unwrap();
        },
    )
    .await;
    let r = one_pass(&bucket, config(&dir.path().join("data"))).await;
    assert_eq!(r.downsamplings, 1, "{r:?}");
    let live = live_metas(&bucket, TENANT).await;
    let hour: Vec<&BlockMeta> = live
        .iter()
        .filter(|m| resolution(m) == strata_tsdb::downsample::RES_1H)
        .collect();
    assert_eq!(hour.len(), 1);
    let bdir = dir.path().join("d1h");
    bucket
        .download_dir(&format!("{TENANT}/{}", hour[0].ulid), &bdir)
        .await
        .unwrap();
    let b = Block::open(&bdir).unwrap();
    let mut seen = 0;
    for s in b.select(&[], i64::MIN, i64::MAX).unwrap() {
        let s = s.unwrap();
        let mut count = 0.0;
        let mut aggr = 0;
        for c in &s.chunks {
            let (enc, data) = b.chunks().chunk(c.chunk_ref).unwrap();
            if enc == Encoding::Aggr {
                aggr += 1;
                count += AggrChunk::new(data)
                    .unwrap()
                    .samples(AggrType::Count)
                    .unwrap()
                    .iter()
                    .map(|s| s.1)
                    .sum::<f64>();
            }
        }
        let hist = b.histograms(&s, i64::MIN, i64::MAX).unwrap();
        let hkeys: Vec<Key> = hist.iter().map(|(t, h)| key(*t, h)).collect();
        if s.labels == name("plain") {
            assert_eq!(aggr, s.chunks.len());
            assert_eq!(count, sc.len() as f64);
        } else {
            assert_eq!(aggr, 0);
            assert_eq!(hkeys, keys(&model[&s.labels]));
        }
        seen += 1;
    }
    assert_eq!(seen, 3);
}
