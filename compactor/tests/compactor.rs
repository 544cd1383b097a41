//! End-to-end compactor tests on real FILESYSTEM buckets.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

mod common;

use common::{config, resolution};
use futures::stream::BoxStream;
use futures::StreamExt;
use strata_compactor::{Compactor, CompactorConfig};
use strata_kit::metrics::Registry;
use strata_objstore::object_store::{
    self, path::Path as OPath, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use strata_objstore::Bucket;
use strata_tsdb::block::{open_blocks, Block};
use strata_tsdb::chunkenc::ChunkCutter;
use strata_tsdb::downsample::{AggrChunk, AggrType, RES_5M};
use strata_tsdb::labels::Labels;
use strata_tsdb::meta::BlockMeta;
use ulid::Ulid;

const H: i64 = 3_600_000;
const TENANT: &str = "tenant-a";
type Model = BTreeMap<Labels, Vec<(i64, f64)>>;

/// Write a block holding `model`'s samples in `[min, max)` and upload it.
async fn put_block(
    bucket: &Bucket,
    tmp: &Path,
    model: &Model,
    min: i64,
    max: i64,
    ext: &[(&str, &str)],
) -> Ulid {
    common::upload_block(bucket, tmp, TENANT, (min, max), ext, |w| {
        for (l, s) in model {
            let mut c = ChunkCutter::new(2 * H);
            for &(t, v) in s.iter().filter(|(t, _)| (min..max).contains(t)) {
                c.append(t, v);
            }
            w.add_series(l.clone(), c.finish()).unwrap();
        }
    })
    .await
}

/// The raw blocks a reader reads (`strata_tsdb::meta::visible_blocks`, the querier's rule).
async fn visible(bucket: &Bucket) -> Vec<BlockMeta> {
    let refs = bucket.list_blocks(TENANT).await.unwrap();
    let metas = refs
        .iter()
        .map(|r| {
            let m = BlockMeta::from_json(&r.meta_json, Path::new("meta.json")).unwrap();
            (m, r.deletion_marked)
        })
        .collect();
    strata_tsdb::meta::visible_blocks(metas)
        .into_iter()
        .filter(|m| resolution(m) == 0)
        .collect()
}

/// Every sample of every visible block, not de-duplicated: a sample read twice shows.
async fn read_visible(bucket: &Bucket) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Model::new();
    for m in visible(bucket).await {
        let bdir = dir.path().join(m.ulid.to_string());
        bucket
            .download_dir(&format!("{TENANT}/{}", m.ulid), &bdir)
            .await
            .unwrap();
        let b = Block::open(&bdir).unwrap();
        for (l, s) in b.series_samples(&[], i64::MIN, i64::MAX).unwrap() {
            out.entry(l).or_default().extend(s);
        }
    }
    for s in out.values_mut() {
        s.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    }
    out
}

async fn live_metas(bucket: &Bucket) -> Vec<BlockMeta> {
    common::live_metas(bucket, TENANT).await
}

fn series_labels(i: usize) -> Labels {
    Labels::from_pairs([
        (
            "__name__",
            ["requests_total", "cpu", "mem"][i % 3].to_string(),
        ),
        ("instance", format!("host-{:04}", i)),
        ("job", "app".to_string()),
    ])
}

/// 14 days of 2h blocks, 1000 series, one sample every 15 minutes: compacts to Thanos's
/// level layout (the newest 2h block is kept back, so the last 2d and the 14d range stay
/// open), the raw data read through the querier's visibility rule equals the inputs
/// exactly (no sample lost or doubled), the 2d blocks are downsampled to 5m with correct
/// counts, and a second pass has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourteen_days_compact_to_level_layout() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let start = 1400 * 14 * 24 * H; // aligned to 14d
    let step = 15 * 60_000;
    let mut model = Model::new();
    for i in 0..1000 {
        let s: Vec<(i64, f64)> = (0..14 * 24 * 4)
            .map(|k| {
                (
                    start + k * step + (i as i64 % 7) * 1000,
                    (k * (i as i64 % 5 + 1)) as f64,
                )
            })
            .collect();
        model.insert(series_labels(i), s);
    }
    let tmp = dir.path().join("tmp");
    for b in 0..168 {
        put_block(
            &bucket,
            &tmp,
            &model,
            start + b * 2 * H,
            start + (b + 1) * 2 * H,
            &[("cluster", "eu")],
        )
        .await;
    }
    let registry = Registry::new();
    let c = Compactor::new(bucket.clone(), config(&dir.path().join("data")), &registry);
    let r = c.run_once().await.unwrap();
    assert_eq!(r.compactions, 41 + 6, "{r:?}");
    assert_eq!(r.downsamplings, 6, "{r:?}");
    assert!(r.halted_streams.is_empty());

    let live = live_metas(&bucket).await;
    let raw: Vec<(i64, u32)> = live
        .iter()
        .filter(|m| resolution(m) == 0)
        .map(|m| ((m.max_time - m.min_time) / H, m.compaction.level))
        .collect();
    let mut want = vec![(48, 3); 6];
    want.extend(vec![(8, 2); 5]);
    want.extend(vec![(2, 1); 4]);
    assert_eq!(raw, want);
    let five: Vec<&BlockMeta> = live.iter().filter(|m| resolution(m) == RES_5M).collect();
    assert_eq!(five.len(), 6);
    assert!(five
        .iter()
        .all(|m| m.thanos.as_ref().unwrap().labels["cluster"] == "eu"));

    // Every block marked for deletion is gone (delete delay 0): only live blocks remain.
    let all = bucket.list_blocks(TENANT).await.unwrap();
    assert_eq!(all.len(), 15 + 6);
    assert!(all.iter().all(|r| !r.deletion_marked));

    let got = read_visible(&bucket).await;
    assert!(got == model, "visible raw data differs from the inputs");

    // `tools tsdb dump` of the live raw blocks equals the union of the inputs.
    let ddir = dir.path().join("dump");
    for m in live.iter().filter(|m| resolution(m) == 0) {
        bucket
            .download_dir(
                &format!("{TENANT}/{}", m.ulid),
                ddir.join(m.ulid.to_string()),
            )
            .await
            .unwrap();
    }
    let blocks = open_blocks(&ddir).unwrap();
    let dump: Model = strata_tsdb::block::merged_series(&blocks, &[], i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .collect();
    assert!(dump == model);

    // 5m aggregates: the count over a 2d block equals the raw samples it covers.
    let d5 = dir.path().join("d5");
    let m5 = five[0];
    bucket
        .download_dir(&format!("{TENANT}/{}", m5.ulid), &d5)
        .await
        .unwrap();
    let b5 = Block::open(&d5).unwrap();
    let l0 = series_labels(0);
    let sel: Vec<_> = b5
        .select(
            &[strata_tsdb::matcher::Matcher::new(
                strata_tsdb::matcher::MatchOp::Equal,
                "instance",
                "host-0000",
            )
            .unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .unwrap()
        .map(|s| s.unwrap())
        .collect();
    assert_eq!(sel.len(), 1);
    assert_eq!(sel[0].labels, l0);
    let mut count = 0.0;
    for c in &sel[0].chunks {
        let (enc, data) = b5.chunks().chunk(c.chunk_ref).unwrap();
        assert_eq!(enc, strata_tsdb::chunkenc::Encoding::Aggr);
        count += AggrChunk::new(data)
            .unwrap()
            .samples(AggrType::Count)
            .unwrap()
            .iter()
            .map(|s| s.1)
            .sum::<f64>();
    }
    let raw_n = model[&l0]
        .iter()
        .filter(|(t, _)| (m5.min_time..m5.max_time).contains(t))
        .count();
    assert_eq!(count, raw_n as f64);

    let text = registry.encode();
    assert!(
        text.contains("strata_compactor_compactions_total 47"),
        "{text}"
    );
    assert!(
        text.contains("strata_compactor_downsamples_total{resolution=\"5m\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("strata_compactor_bucket_blocks{resolution=\"5m\"} 6"),
        "{text}"
    );

    let again = c.run_once().await.unwrap();
    assert_eq!(
        (again.compactions, again.downsamplings, again.deleted),
        (0, 0, 0)
    );
}

fn scrape(
    from: i64,
    to: i64,
    every: i64,
    offset: i64,
    gap: std::ops::Range<i64>,
) -> Vec<(i64, f64)> {
    (from..to)
        .step_by(every as usize)
        .map(|t| t + offset)
        .filter(|t| !gap.contains(t))
        .map(|t| (t, (t / 1000) as f64))
        .collect()
}

/// An HA pair (external label replica=a/b), each with its own gaps, compacts into one
/// stream without the replica label: every sample comes from one of the replicas, no
/// scrape appears twice, and each replica's gaps are filled by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_deduplicates_into_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let every = 30_000;
    let end = 10 * H;
    let mut a = Model::new();
    let mut b = Model::new();
    for i in 0..20 {
        a.insert(series_labels(i), scrape(0, end, every, 0, H..3 * H));
        b.insert(
            series_labels(i),
            scrape(0, end, every, 4000, 5 * H..6 * H + 1_800_000),
        );
    }
    let tmp = dir.path().join("tmp");
    for k in 0..5 {
        let (lo, hi) = (k * 2 * H, (k + 1) * 2 * H);
        put_block(
            &bucket,
            &tmp,
            &a,
            lo,
            hi,
            &[("cluster", "eu"), ("replica", "a")],
        )
        .await;
        put_block(
            &bucket,
            &tmp,
            &b,
            lo,
            hi,
            &[("cluster", "eu"), ("replica", "b")],
        )
        .await;
    }
    let cfg = CompactorConfig {
        replica_labels: vec!["replica".into()],
        ..config(&dir.path().join("data"))
    };
    let c = Compactor::new(bucket.clone(), cfg, &Registry::new());
    let r = c.run_once().await.unwrap();
    assert!(r.halted_streams.is_empty());
    let live = live_metas(&bucket).await;
    // 5 vertical merges of the pairs, then the first 8h range.
    assert_eq!(r.compactions, 6, "{r:?}");
    assert_eq!(live.len(), 2);
    for m in &live {
        let labels = &m.thanos.as_ref().unwrap().labels;
        assert!(!labels.contains_key("replica"));
        assert_eq!(labels["cluster"], "eu");
    }
    assert_eq!(
        (
            live[0].max_time - live[0].min_time,
            live[0].compaction.sources.len()
        ),
        (8 * H, 8)
    );
    let got = read_visible(&bucket).await;
    assert_eq!(got.len(), 20);
    for (l, s) in &got {
        let (sa, sb) = (&a[l], &b[l]);
        if let Some(w) = s.windows(2).find(|w| w[1].0 - w[0].0 < every / 2) {
            panic!("{l}: a scrape doubled: {w:?}");
        }
        let max_gap = s.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap();
        assert!(max_gap <= 3 * every, "{l}: gap of {max_gap} ms not filled");
        assert!(s.iter().all(|x| sa.contains(x) || sb.contains(x)));
        assert!(s.first().unwrap().0 < every && s.last().unwrap().0 > end - 2 * every);
        let one = (end / every) as usize;
        assert!(
            s.len() <= one + 10 && s.len() >= one - 10,
            "{} samples",
            s.len()
        );
    }
}

/// Fails every put and delete from the `n`th on, as if the process died there.
#[derive(Debug)]
struct CrashAt {
    inner: Arc<dyn ObjectStore>,
    left: Arc<AtomicI64>,
}

impl std::fmt::Display for CrashAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrashAt({})", self.inner)
    }
}

fn crashed() -> object_store::Error {
    object_store::Error::Generic {
        store: "crash",
        source: "injected crash".into(),
    }
}

impl CrashAt {
    fn tick(&self) -> object_store::Result<()> {
        if self.left.fetch_sub(1, Ordering::SeqCst) <= 1 {
            return Err(crashed());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for CrashAt {
    async fn put_opts(
        &self,
        location: &OPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.tick()?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &OPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.tick()?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &OPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<OPath>>,
    ) -> BoxStream<'static, object_store::Result<OPath>> {
        let inner = Arc::clone(&self.inner);
        let left = Arc::clone(&self.left);
        locations
            .then(move |loc| {
                let inner = Arc::clone(&inner);
                let left = Arc::clone(&left);
                async move {
                    let loc = loc?;
                    if left.fetch_sub(1, Ordering::SeqCst) <= 1 {
                        return Err(crashed());
                    }
                    inner.delete(&loc).await?;
                    Ok(loc)
                }
            })
            .boxed()
    }
    fn list(&self, prefix: Option<&OPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&OPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &OPath,
        to: &OPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.tick()?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// Crash injection: a pass is cut short at every bucket write in turn (during the
/// upload of the new block, after the upload before the deletion marks, between marks,
/// during deletion). After each crash the querier's view of the bucket holds every
/// input sample exactly once, and the next pass finishes the job to the same layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_step_leaves_bucket_consistent() {
    let root = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    for i in 0..30 {
        model.insert(series_labels(i), scrape(0, 10 * H, 60_000, i as i64, 0..0));
    }
    let mut n = 1;
    loop {
        let dir = root.path().join(format!("run-{n}"));
        let bucket = Bucket::filesystem(dir.join("bucket")).unwrap();
        let tmp = dir.join("tmp");
        for k in 0..5 {
            put_block(&bucket, &tmp, &model, k * 2 * H, (k + 1) * 2 * H, &[]).await;
        }
        assert!(read_visible(&bucket).await == model);
        let left = Arc::new(AtomicI64::new(n));
        let faulty = bucket.layered(|s| {
            Arc::new(CrashAt {
                inner: s,
                left: Arc::clone(&left),
            })
        });
        let c = Compactor::new(faulty, config(&dir.join("data")), &Registry::new());
        let crashed = c.run_once().await.is_err();
        assert!(
            read_visible(&bucket).await == model,
            "after a crash at write {n}"
        );
        let c = Compactor::new(bucket.clone(), config(&dir.join("data")), &Registry::new());
        c.run_once().await.unwrap();
        assert!(
            read_visible(&bucket).await == model,
            "after recovery from a crash at write {n}"
        );
        let live = live_metas(&bucket).await;
        let spans: Vec<i64> = live.iter().map(|m| (m.max_time - m.min_time) / H).collect();
        assert_eq!(spans, vec![8, 2], "crash at write {n}");
        assert_eq!(
            bucket.list_blocks(TENANT).await.unwrap().len(),
            2,
            "marked blocks deleted"
        );
        // Nothing half-written is left behind (interrupted deletions are finished).
        let dirs = bucket.list_dirs(TENANT).await.unwrap();
        let partial: Vec<_> = dirs
            .iter()
            .filter(|d| !live.iter().any(|m| m.ulid.to_string() == **d))
            .collect();
        // An interrupted upload of the new block (no meta.json, fresh ULID) may stay until
        // the partial-upload threshold; it is never read.
        for p in &partial {
            assert!(!bucket
                .exists(&format!("{TENANT}/{p}/meta.json"))
                .await
                .unwrap());
        }
        if !crashed {
            assert!(n > 10, "the pass makes more than 10 writes");
            break;
        }
        n += 1;
    }
}

/// A block whose index is damaged is marked no-compact with the reason (not retried
/// forever), and the rest of the stream still compacts around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_block_is_marked_no_compact() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let mut model = Model::new();
    for i in 0..10 {
        model.insert(series_labels(i), scrape(0, 10 * H, 60_000, 0, 0..0));
    }
    let tmp = dir.path().join("tmp");
    let mut ids = Vec::new();
    for k in 0..5 {
        ids.push(put_block(&bucket, &tmp, &model, k * 2 * H, (k + 1) * 2 * H, &[]).await);
    }
    bucket
        .put(
            &format!("{TENANT}/{}/index", ids[3]),
            bytes::Bytes::from_static(b"garbage"),
        )
        .await
        .unwrap();
    let c = Compactor::new(
        bucket.clone(),
        config(&dir.path().join("data")),
        &Registry::new(),
    );
    let r = c.run_once().await.unwrap();
    assert_eq!(r.marked_no_compact, 1);
    let mark = bucket
        .get(&format!("{TENANT}/{}/no-compact-mark.json", ids[3]))
        .await
        .unwrap();
    let mark: serde_json::Value = serde_json::from_slice(&mark).unwrap();
    assert_eq!(mark["id"], ids[3].to_string());
    assert_eq!(mark["version"], 1);
    assert!(
        mark["details"].as_str().unwrap().contains("index"),
        "{mark}"
    );
    // Blocks 0..3 compacted (the range is split at the excluded block).
    assert_eq!(r.compactions, 1);
    let again = c.run_once().await.unwrap();
    assert_eq!((again.compactions, again.marked_no_compact), (0, 0));
}

/// Retention per resolution marks and deletes old raw blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_raw_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut model = Model::new();
    let old = now - 30 * 24 * H;
    model.insert(series_labels(0), scrape(old, old + 2 * H, 60_000, 0, 0..0));
    let tmp = dir.path().join("tmp");
    put_block(&bucket, &tmp, &model, old, old + 2 * H, &[]).await;
    let recent = now - 4 * H;
    let mut m2 = Model::new();
    m2.insert(
        series_labels(0),
        scrape(recent, recent + 2 * H, 60_000, 0, 0..0),
    );
    let keep = put_block(&bucket, &tmp, &m2, recent, recent + 2 * H, &[]).await;
    let cfg = CompactorConfig {
        retention_raw: 7 * 24 * H,
        ..config(&dir.path().join("data"))
    };
    let c = Compactor::new(bucket.clone(), cfg, &Registry::new());
    let r = c.run_once().await.unwrap();
    assert_eq!(r.deleted, 1);
    let left: Vec<Ulid> = bucket
        .list_blocks(TENANT)
        .await
        .unwrap()
        .iter()
        .map(|b| b.ulid)
        .collect();
    assert_eq!(left, vec![keep]);
}

/// Blocks that cannot be merged (a series both with and without the replica label)
/// halt only their stream: the other stream compacts, the halt shows in the report
/// and the metrics, the halted stream is not retried while its blocks stay the same,
/// and it resumes once a human removes the culprit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmergeable_blocks_halt_only_their_stream() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let mut model = Model::new();
    for i in 0..5 {
        model.insert(series_labels(i), scrape(0, 10 * H, 60_000, 0, 0..0));
    }
    let tmp = dir.path().join("tmp");
    // Stream c1: over the same 2h, one block whose series carry the replica label
    // (remote-written by an HA pair) and one whose series do not.
    let with_replica: Model = model
        .iter()
        .map(|(l, s)| {
            let mut pairs: Vec<(String, String)> = l
                .iter()
                .map(|x| (x.name.to_string(), x.value.to_string()))
                .collect();
            pairs.push(("replica".into(), "a".into()));
            (Labels::from_pairs(pairs), s.clone())
        })
        .collect();
    put_block(&bucket, &tmp, &with_replica, 0, 2 * H, &[("cluster", "c1")]).await;
    let culprit = put_block(&bucket, &tmp, &model, 0, 2 * H, &[("cluster", "c1")]).await;
    // Stream c2: five 2h blocks; the first four compact to one 8h block.
    for k in 0..5 {
        put_block(
            &bucket,
            &tmp,
            &model,
            k * 2 * H,
            (k + 1) * 2 * H,
            &[("cluster", "c2")],
        )
        .await;
    }
    let registry = Registry::new();
    let mut cfg = config(&dir.path().join("data"));
    cfg.replica_labels = vec!["replica".to_string()];
    let c = Compactor::new(bucket.clone(), cfg, &registry);
    let metric = |name: &str| -> f64 {
        let text = registry.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(-1.0)
    };

    let r = c.run_once().await.unwrap();
    assert_eq!(r.compactions, 1, "stream c2 still compacts");
    assert_eq!(r.halted_streams.len(), 1, "{:?}", r.halted_streams);
    assert!(r.halted_streams[0].contains("c1"), "{:?}", r.halted_streams);
    assert_eq!(metric("strata_compactor_halted_streams "), 1.0);
    assert_eq!(metric("strata_compactor_halts_total "), 1.0);

    // Same blocks: not retried.
    let r = c.run_once().await.unwrap();
    assert_eq!(r.halted_streams.len(), 1);
    assert_eq!(metric("strata_compactor_halts_total "), 1.0);

    // The culprit goes: the stream resumes (one block left, nothing to merge).
    strata_compactor::marks::mark_for_deletion(&bucket, TENANT, culprit, "operator")
        .await
        .unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.halted_streams.is_empty(), "{:?}", r.halted_streams);
    assert_eq!(metric("strata_compactor_halted_streams "), 0.0);
    assert_eq!(metric("strata_compactor_halts_total "), 1.0);
}

/// Two compactors on one bucket (two `strata all` processes): one works, the other
/// waits (report, metric); when the holder stops it gives the lease up and the other
/// takes over; when a holder dies without giving it up, the other takes over once the
/// lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_compactor_per_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let mut model = Model::new();
    for i in 0..5 {
        model.insert(series_labels(i), scrape(0, 20 * H, 60_000, 0, 0..0));
    }
    let tmp = dir.path().join("tmp");
    for k in 0..5 {
        put_block(&bucket, &tmp, &model, k * 2 * H, (k + 1) * 2 * H, &[]).await;
    }
    let lease = |d: &str| CompactorConfig {
        lock_lease: std::time::Duration::from_secs(2),
        ..config(&dir.path().join(d))
    };
    let (reg_a, reg_b) = (Registry::new(), Registry::new());
    let a = Compactor::new(bucket.clone(), lease("a"), &reg_a);
    let b = Compactor::new(bucket.clone(), lease("b"), &reg_b);
    let held = |r: &Registry| {
        r.encode()
            .lines()
            .find_map(|l| l.strip_prefix("strata_compactor_lock_held "))
            .map(|v| v.trim().to_string())
    };

    let ra = a.run_once().await.unwrap();
    assert_eq!((ra.compactions, ra.lock_held_by.as_deref()), (1, None));
    assert_eq!(held(&reg_a).as_deref(), Some("1"));
    for k in 5..7 {
        put_block(&bucket, &tmp, &model, k * 2 * H, (k + 1) * 2 * H, &[]).await;
    }
    let rb = b.run_once().await.unwrap();
    assert!(rb.lock_held_by.is_some(), "{rb:?}");
    assert_eq!(rb.compactions + rb.downsamplings + rb.deleted, 0, "{rb:?}");
    assert_eq!(held(&reg_b).as_deref(), Some("0"));
    // The holder renews on its next pass.
    assert!(a.run_once().await.unwrap().lock_held_by.is_none());

    // A holder that stops gives the lease up: the other takes over at once.
    a.release_lock().await;
    assert!(!bucket
        .exists(strata_compactor::lock::LOCK_OBJECT)
        .await
        .unwrap());
    assert!(b.run_once().await.unwrap().lock_held_by.is_none());
    assert_eq!(held(&reg_b).as_deref(), Some("1"));

    // A holder that dies (b never releases): a waits until the lease lapses.
    assert!(a.run_once().await.unwrap().lock_held_by.is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if a.run_once().await.unwrap().lock_held_by.is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never lapsed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(b.run_once().await.unwrap().lock_held_by.is_some());
}
