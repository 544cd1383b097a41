//! Reading a tenant's blocks straight from the bucket: list `<tenant>/<ULID>/meta.json`,
//! keep the blocks a query can use, read each block's `index` (cached per ULID, bounded
//! by bytes) and fetch only the chunks the query needs by byte ranges of
//! `chunks/NNNNNN`, nearby chunks batched into one range read.
//!
//! Blocks left out: outside the query's time range, and those the one visibility rule
//! ([`strata_tsdb::meta::visible_blocks`], the rule the compactor deletes by) hides:
//! marked for deletion, or superseded by a block of the same resolution that holds all
//! their sources (compacted or deduplicated into it: the compacted one wins, never both).
//!
//! Downsampled reads ([`BucketReader::series_at`]): with a maximum source resolution
//! (`max_source_resolution`), each stream of blocks (same external labels) is covered
//! per time range by the coarsest resolution allowed that has a block there, finer data
//! filling the gaps (Thanos's `getFor`), so every instant is read from exactly one
//! resolution and nothing is counted twice. An aggregate chunk is turned into float
//! samples by the aggregate the enclosing function needs (Thanos's `aggrsFromFunc`):
//! `min*`→min, `max*`→max, `count*`→count, `sum_*`→sum, `rate`/`increase`/`irate`/
//! `resets`→counter (counter resets applied across chunk and block boundaries),
//! anything else → sum/count (the window's average).
//!
//! This module owns [`BucketReader`] and the read of one block's series; the rest lives
//! in `index_cache` (parsed indexes bounded by bytes), `plan` (listing and which blocks
//! answer a range), `chunks` (range reads of chunk segments) and `downsampled`
//! (aggregate chunks to samples, joining per-block pieces).

use std::collections::HashMap;
use strata_tsdb::histogram::FloatHistogram;

use futures::StreamExt;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use strata_objstore::Bucket;
use strata_store::StoreError;
use strata_tsdb::chunkenc::Encoding;
use strata_tsdb::downsample::{RES_1H, RES_RAW};
use strata_tsdb::index::ChunkMeta;
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;
use strata_tsdb::meta::BlockMeta;
use strata_tsdb::postings::postings_for_matchers;

use crate::series::{ChunksBuilder, Part};
use crate::stats::Counter;

use downsampled::{aggr_samples, join_pieces};
use index_cache::{IndexCache, IndexWeight};
use plan::Listing;

mod chunk_cache;
mod chunks;
mod downsampled;
mod index_cache;
mod plan;

pub use chunks::MAX_CHUNK_READ;
pub use downsampled::Aggr;
pub use plan::{plan_blocks, PlannedBlock};

/// Blocks of one query read at a time.
const BLOCKS_IN_FLIGHT: usize = 8;

/// A series as a source returns it: labels and samples sorted by time.
pub type SeriesData = (Labels, Vec<(i64, f64)>);

/// The bucket as a source of series.
pub struct BucketReader {
    bucket: Bucket,
    cache: IndexCache,
    /// Subranges of chunk segments (`--store.chunks-cache.max-size-bytes`); `None`: off.
    chunks_cache: Option<chunk_cache::ChunksCache>,
    /// Block indexes read from the bucket (cache misses that loaded one).
    index_loads: AtomicU64,
    /// The visible blocks per tenant and when they were listed.
    listings: Mutex<HashMap<String, Listing>>,
    listing_ttl: std::time::Duration,
}

/// The blocks one read uses ([`BucketReader::plan_read`]).
#[derive(Debug, Clone)]
pub struct ReadPlan {
    blocks: Vec<PlannedBlock>,
    aggr: Aggr,
    /// The query's start (a downsampled counter read starts earlier).
    mint: i64,
}

impl ReadPlan {
    /// The raw blocks whose data this read answers for: every source block of each
    /// planned raw block, with the range read from it. A source that another process
    /// (the ingester of `strata all`) still holds locally need not be read there too.
    pub fn raw_sources(&self) -> ReadFromBucket {
        let mut out = HashMap::new();
        for p in self
            .blocks
            .iter()
            .filter(|p| resolution(&p.meta) == RES_RAW)
        {
            let sources = &p.meta.compaction.sources;
            // a block without sources is its own (older writers left them out)
            let own = [p.meta.ulid];
            let ids = if sources.is_empty() {
                &own[..]
            } else {
                &sources[..]
            };
            for id in ids {
                out.insert(*id, (p.mint, p.maxt));
            }
        }
        ReadFromBucket(out)
    }
}

/// Raw blocks a bucket read covers: ULID → the time range the bucket reads for the
/// planned block that holds its data ([`ReadPlan::raw_sources`]).
#[derive(Debug, Clone, Default)]
pub struct ReadFromBucket(HashMap<ulid::Ulid, (i64, i64)>);

impl ReadFromBucket {
    /// Whether the bucket read already answers for all of the local block `meta`
    /// within `[mint, maxt]` (the local read's range).
    pub fn covers(&self, meta: &BlockMeta, mint: i64, maxt: i64) -> bool {
        let Some(&(from, to)) = self.0.get(&meta.ulid) else {
            return false;
        };
        // a block's maxTime is exclusive
        meta.min_time.max(mint) >= from && (meta.max_time - 1).min(maxt) <= to
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for BucketReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketReader")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The block's downsampling resolution in ms (0: raw).
pub fn resolution(m: &BlockMeta) -> i64 {
    m.resolution()
}

/// The block's external labels (`thanos.labels`).
fn external_labels(m: &BlockMeta) -> Vec<(String, String)> {
    m.thanos
        .as_ref()
        .map(|t| {
            t.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// `labels` plus each external label it does not already have.
pub fn add_external(labels: Labels, ext: &[(String, String)]) -> Labels {
    if ext.iter().all(|(n, _)| labels.get(n).is_some()) {
        return labels;
    }
    let mut v = labels.into_vec();
    for (n, val) in ext {
        if !v.iter().any(|l| &*l.name == n) {
            v.push(strata_tsdb::labels::Label::new(n.as_str(), val.as_str()));
        }
    }
    Labels::from_vec(v)
}

/// Does the label set match every matcher (a missing label matches as "")?
pub fn labels_match(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}

impl BucketReader {
    /// `cache_limit`: bytes of parsed indexes kept in memory; `listing_ttl`: how long a
    /// tenant's block listing is reused (zero: list on every request).
    pub fn new(bucket: Bucket, cache_limit: u64, listing_ttl: std::time::Duration) -> Self {
        // One shard: a shard holds at most its share of the bytes, and an index bigger
        // than a share would never be cached; lookups are rare next to the reads they save.
        let opts = quick_cache::OptionsBuilder::new()
            .shards(1)
            .estimated_items_capacity(1024)
            .weight_capacity(cache_limit)
            .build()
            .expect("both capacities are set");
        BucketReader {
            bucket,
            cache: IndexCache::with_options(
                opts,
                IndexWeight,
                Default::default(),
                Default::default(),
            ),
            chunks_cache: None,
            index_loads: AtomicU64::new(0),
            listings: Mutex::new(HashMap::new()),
            listing_ttl,
        }
    }

    /// Keep up to `bytes` of chunk segments in memory (0: no chunks cache).
    pub fn with_chunks_cache(mut self, bytes: u64) -> Self {
        self.chunks_cache = (bytes > 0).then(|| chunk_cache::new_cache(bytes));
        self
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Series of the tenant's raw blocks matching `matchers` with data in `[mint, maxt]`,
    /// with external labels added; samples too unless `skip_chunks`. One entry per block
    /// and series: the caller merges.
    pub async fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
    ) -> Result<Vec<SeriesData>, StoreError> {
        self.series_at(tenant, matchers, mint, maxt, skip_chunks, RES_RAW, None)
            .await?
            .series
            .into_iter()
            .map(|(l, p)| Ok((l, p.decode().map_err(|e| StoreError::Corrupt(e.into()))?)))
            .collect()
    }

    /// Series matching `matchers` in `[mint, maxt]` read at resolutions up to
    /// `max_resolution` (ms; 0: raw only), aggregate chunks decoded for `func` (the
    /// function the selector is an argument of). Raw-only reads give one entry per block
    /// and series (the caller merges); with downsampled blocks in the plan, one entry per
    /// series, its pieces joined in time order.
    #[allow(clippy::too_many_arguments)]
    pub async fn series_at(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        max_resolution: i64,
        func: Option<&str>,
    ) -> Result<BucketSeries, StoreError> {
        let count = Counter::unaccounted();
        self.series_counted(
            tenant,
            matchers,
            mint,
            maxt,
            skip_chunks,
            max_resolution,
            func,
            &count,
        )
        .await
    }

    /// [`BucketReader::series_at`], counting series, chunks, samples and object-store
    /// reads into `count`, and stopping at the first limit it reports.
    #[allow(clippy::too_many_arguments)]
    pub async fn series_counted(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        max_resolution: i64,
        func: Option<&str>,
        count: &Counter,
    ) -> Result<BucketSeries, StoreError> {
        self.series_of_shard(
            tenant,
            matchers,
            mint,
            maxt,
            skip_chunks,
            max_resolution,
            func,
            count,
            None,
        )
        .await
    }

    /// [`BucketReader::series_counted`] keeping only the series of one query shard
    /// (when given): the others are dropped before their chunks are read or counted.
    #[allow(clippy::too_many_arguments)]
    pub async fn series_of_shard(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        max_resolution: i64,
        func: Option<&str>,
        count: &Counter,
        shard: Option<&ShardFilter>,
    ) -> Result<BucketSeries, StoreError> {
        let plan = self
            .plan_read(tenant, mint, maxt, skip_chunks, max_resolution, func, count)
            .await?;
        self.read_plan(plan, tenant, matchers, skip_chunks, count, shard)
            .await
    }

    /// Which blocks a read of `[mint, maxt]` uses, from the (cached) listing: what
    /// [`BucketReader::read_plan`] then reads. Planned apart so the caller knows which
    /// blocks' data the bucket answers for before any source is read.
    #[allow(clippy::too_many_arguments)]
    pub async fn plan_read(
        &self,
        tenant: &str,
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        max_resolution: i64,
        func: Option<&str>,
        count: &Counter,
    ) -> Result<ReadPlan, StoreError> {
        let aggr = Aggr::for_func(func);
        // A rate over downsampled counters measures from the point before its range:
        // plan one (coarsest) window early, then read each downsampled block from one
        // of its own windows before `mint` (raw blocks from `mint`).
        let early = aggr == Aggr::Counter && !skip_chunks;
        let wide = if early {
            mint.saturating_sub(max_resolution.clamp(0, RES_1H))
        } else {
            mint
        };
        let listed = self.listing(tenant, count).await?;
        let mut blocks = plan_blocks(&listed, wide, maxt, max_resolution);
        if early {
            blocks.retain_mut(|p| {
                p.mint = p.mint.max(mint.saturating_sub(resolution(&p.meta)));
                p.mint <= p.maxt
            });
        }
        Ok(ReadPlan { blocks, aggr, mint })
    }

    /// Read the series matching `matchers` from the blocks of `plan`.
    pub async fn read_plan(
        &self,
        plan: ReadPlan,
        tenant: &str,
        matchers: &[Matcher],
        skip_chunks: bool,
        count: &Counter,
        shard: Option<&ShardFilter>,
    ) -> Result<BucketSeries, StoreError> {
        let ReadPlan {
            blocks: plan,
            aggr,
            mint,
        } = plan;
        let blocks_read: Vec<i64> = plan.iter().map(|p| resolution(&p.meta)).collect();
        let downsampled: Vec<(i64, i64)> = plan
            .iter()
            .filter(|p| resolution(&p.meta) != RES_RAW)
            .map(|p| (p.mint, p.maxt))
            .collect();
        // A few blocks at a time, in plan order, each merged into the answer as it
        // arrives: a series read from many blocks keeps one label set, and only the
        // blocks in flight hold their index lookups.
        // (Futures made up front and run as polled: a closure inside the stream would
        // not be general enough over lifetimes for the Send checks of its callers.)
        let futs: Vec<_> = plan
            .iter()
            .map(|p| {
                let continues = p.mint > mint;
                self.block_series(
                    tenant,
                    &p.meta,
                    matchers,
                    p.mint,
                    p.maxt,
                    skip_chunks,
                    (aggr, continues),
                    count,
                    shard,
                )
            })
            .collect();
        let mut per_block = futures::stream::iter(futs).buffered(BLOCKS_IN_FLIGHT);
        // A block whose index or chunks are corrupt costs only its own series: the
        // answer comes from the other blocks, with a warning naming it (the compactor
        // marks it no-compact). Any other error fails the bucket's answer.
        let mut warnings = Vec::new();
        let mut skip_corrupt = |r: Result<Vec<(Labels, Part)>, StoreError>| match r {
            Err(e) if e.kind() == strata_store::ErrorKind::Corrupt => {
                tracing::warn!(error = %e, "skipping a corrupt block");
                warnings.push(e.to_string());
                Ok(None)
            }
            r => r.map(Some),
        };
        let series = if downsampled.is_empty() || skip_chunks {
            let mut merged: Vec<(Labels, Part)> = Vec::new();
            while let Some(r) = per_block.next().await {
                if let Some(b) = skip_corrupt(r)? {
                    merged = merge_block(merged, b)?;
                }
            }
            merged
        } else {
            // Downsampled pieces are joined across blocks sample by sample: decoded.
            // Native histograms (kept raw in downsampled blocks) ride beside the floats,
            // concatenated in plan order, the earlier block winning a shared timestamp.
            let mut decoded = Vec::with_capacity(plan.len());
            let mut hists: std::collections::BTreeMap<Labels, Vec<(i64, FloatHistogram)>> =
                Default::default();
            let mut i = 0;
            while let Some(r) = per_block.next().await {
                let Some(b) = skip_corrupt(r)? else {
                    i += 1;
                    continue;
                };
                let s: Result<Vec<SeriesData>, StoreError> = b
                    .into_iter()
                    .map(|(l, p)| {
                        let (floats, h) = p.split();
                        if !h.is_empty() {
                            // blocks arrive in plan order (`buffered` keeps it)
                            hists.entry(l.clone()).or_default().extend(h);
                        }
                        let v = floats.decode().map_err(|e| {
                            StoreError::Corrupt(format!("series {l}: chunk data: {e}"))
                        })?;
                        Ok((l, v))
                    })
                    .collect();
                decoded.push((plan[i].mint, s?));
                i += 1;
            }
            let mut out: Vec<(Labels, Part)> = join_pieces(decoded, aggr == Aggr::Counter)
                .into_iter()
                .map(|(l, s)| {
                    let mut h = hists.remove(&l).unwrap_or_default();
                    crate::series::sort_unique(&mut h);
                    (l, Part::join(Part::Samples(s), h))
                })
                .filter(|(_, p)| !p.is_empty())
                .collect();
            // series that hold only histograms
            for (l, mut h) in hists {
                crate::series::sort_unique(&mut h);
                out.push((l, Part::join(Part::Samples(Vec::new()), h)));
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        };
        Ok(BucketSeries {
            series,
            blocks_read,
            downsampled,
            warnings,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn block_series(
        &self,
        tenant: &str,
        meta: &BlockMeta,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        (aggr, continues): (Aggr, bool),
        count: &Counter,
        shard: Option<&ShardFilter>,
    ) -> Result<Vec<(Labels, Part)>, StoreError> {
        let ext = external_labels(meta);
        // Matchers on external labels are answered by the meta; the rest by the index.
        let mut local = Vec::with_capacity(matchers.len());
        for m in matchers {
            match ext.iter().find(|(n, _)| *n == m.name) {
                Some((_, v)) if !m.matches(v) => return Ok(Vec::new()),
                Some(_) => {}
                None => local.push(m.clone()),
            }
        }
        let idx = self.index_counted(tenant, meta, count).await?;
        let ir = &idx.reader;
        let refs = postings_for_matchers(ir, &local).map_err(StoreError::from)?;
        let mut series: Vec<(Labels, Vec<ChunkMeta>)> = Vec::new();
        for r in refs {
            let (labels, mut chunks) = ir.series(r).map_err(StoreError::from)?;
            chunks.retain(|c| c.overlaps(mint, maxt));
            if shard.is_some_and(|f| !f.owns(&labels, &ext)) {
                continue;
            }
            if !chunks.is_empty() {
                // Counted before any chunk is read: a series limit stops the read here.
                count.series(&labels)?;
                series.push((labels, chunks));
            }
        }
        if skip_chunks {
            return Ok(series
                .into_iter()
                .map(|(l, _)| (add_external(l, &ext), Part::Samples(Vec::new())))
                .collect());
        }
        let wanted: Vec<u64> = series
            .iter()
            .flat_map(|(_, c)| c.iter().map(|c| c.chunk_ref))
            .collect();
        let dir = format!("{tenant}/{}", meta.ulid);
        let chunks = self
            .fetch_chunks(&dir, &idx.segments, wanted, count)
            .await?;
        let mut out = Vec::with_capacity(series.len());
        for (labels, metas) in series {
            let mut samples = Vec::new();
            // Raw chunks stay encoded (slices of the range reads) until the engine
            // consumes the series.
            let mut part = ChunksBuilder::new(count, mint, maxt);
            for c in &metas {
                let Some((enc, data)) = chunks.get(&c.chunk_ref) else {
                    return Err(StoreError::Other(format!(
                        "block {dir}: chunk {:#x} not fetched",
                        c.chunk_ref
                    )));
                };
                let before = samples.len();
                if *enc == Encoding::Aggr {
                    aggr_samples(
                        data,
                        aggr,
                        resolution(meta),
                        continues,
                        mint,
                        maxt,
                        &mut samples,
                    )
                    .map_err(|e| {
                        StoreError::Corrupt(format!(
                            "block {dir}: series {labels}: chunk {:#x}: {e}",
                            c.chunk_ref
                        ))
                    })?;
                    count.samples(samples.len() - before)?;
                    continue;
                }
                if matches!(*enc, Encoding::Histogram | Encoding::FloatHistogram) {
                    part.push_histogram(*enc, data).map_err(|e| {
                        e.unwrap_or_else(|e| {
                            StoreError::Corrupt(format!(
                                "block {dir}: series {labels}: chunk {:#x}: {e}",
                                c.chunk_ref
                            ))
                        })
                    })?;
                    continue;
                }
                if *enc != Encoding::Xor {
                    continue;
                }
                part.push(data.clone(), (c.min_time, c.max_time))
                    .map_err(|e| {
                        e.unwrap_or_else(|e| {
                            StoreError::Corrupt(format!(
                                "block {dir}: series {labels}: chunk {:#x}: {e}",
                                c.chunk_ref
                            ))
                        })
                    })?;
            }
            let part = part
                .finish()
                .map_err(|e| StoreError::Corrupt(format!("block {dir}: series {labels}: {e}")))?;
            // a series switching between floats and histograms: its aggregates join
            // the floats beside the histograms
            let (part, hists) = match part.map(Part::split) {
                Some((p, h)) => (Some(p), h),
                None => (None, Vec::new()),
            };
            let part = match part {
                Some(Part::Samples(mut v)) if !samples.is_empty() => {
                    samples.append(&mut v);
                    samples.sort_by_key(|p| p.0);
                    samples.dedup_by_key(|p| p.0);
                    Some(Part::Samples(samples))
                }
                Some(p @ Part::Chunks { .. }) if !samples.is_empty() => {
                    let mut v = p.decode().map_err(|e| {
                        StoreError::Corrupt(format!("block {dir}: series {labels}: {e}"))
                    })?;
                    samples.append(&mut v);
                    Some(Part::Samples(samples))
                }
                None if !samples.is_empty() => Some(Part::Samples(samples)),
                p => p,
            };
            if let Some(p) = part.map(|p| Part::join(p, hists)) {
                out.push((add_external(labels, &ext), p));
            }
        }
        Ok(out)
    }
}

/// `acc` (sorted by labels, unique) followed by a later block's series: one linear
/// pass (a block's series come sorted by labels), each series' parts in block order.
fn merge_block(
    acc: Vec<(Labels, Part)>,
    mut next: Vec<(Labels, Part)>,
) -> Result<Vec<(Labels, Part)>, StoreError> {
    if !next.windows(2).all(|w| w[0].0 <= w[1].0) {
        next.sort_by(|a, b| a.0.cmp(&b.0)); // stable: a label set's parts keep their order
    }
    let mut out: Vec<(Labels, Part)> = Vec::with_capacity(acc.len().max(next.len()));
    let push = |out: &mut Vec<(Labels, Part)>, (l, p): (Labels, Part)| {
        match out.last_mut() {
            Some((last, prev)) if *last == l => {
                let head = std::mem::replace(prev, Part::Samples(Vec::new()));
                *prev = head
                    .extend(p)
                    .map_err(|e| StoreError::Corrupt(format!("series {l}: chunk data: {e}")))?;
            }
            _ => out.push((l, p)),
        }
        Ok::<(), StoreError>(())
    };
    let (mut a, mut b) = (acc.into_iter().peekable(), next.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.0 <= y.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let item = if take_a { a.next() } else { b.next() };
        push(&mut out, item.expect("peeked"))?;
    }
    Ok(out)
}

/// One query shard's series, pushed down from the fan-out: the shard, and the replica
/// labels its deduplication drops (the hash is over the labels the query sees).
#[derive(Debug, Clone)]
pub struct ShardFilter {
    pub shard: crate::shard::ShardSelector,
    pub replica_labels: Vec<String>,
}

impl ShardFilter {
    /// Does the series `labels` of a block with external labels `ext` belong?
    fn owns(&self, labels: &Labels, ext: &[(String, String)]) -> bool {
        let l = add_external(labels.clone(), ext);
        if self.replica_labels.is_empty() {
            return self.shard.owns(&l);
        }
        let drop: Vec<&str> = self.replica_labels.iter().map(String::as_str).collect();
        self.shard.owns(&l.without(&drop))
    }
}

/// What [`BucketReader::series_at`] read.
#[derive(Debug, Default)]
pub struct BucketSeries {
    /// Per series: decoded samples (downsampled aggregates) or raw chunks, encoded.
    pub series: Vec<(Labels, Part)>,
    /// The resolution (ms) of every block read.
    pub blocks_read: Vec<i64>,
    /// Time ranges (inclusive) answered from downsampled blocks.
    pub downsampled: Vec<(i64, i64)>,
    /// Blocks left out of the answer because they are corrupt, each naming the block.
    pub warnings: Vec<String>,
}

#[cfg(test)]
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Blocks merged one after another give each label set once, in label order, its
/// samples in block order (an earlier block's sample wins a timestamp), whatever order
/// a block's series come in.
#[test]
fn blocks_merge_in_one_pass() {
    let l = |n: &str| Labels::from_pairs([("__name__", n)]);
    let s = |v: &[(i64, f64)]| Part::Samples(v.to_vec());
    let first = vec![(l("a"), s(&[(1, 1.0)])), (l("c"), s(&[(1, 3.0)]))];
    let second = vec![
        (l("d"), s(&[(2, 4.0)])),
        (l("a"), s(&[(1, 9.0), (2, 2.0)])),
        (l("b"), s(&[(2, 5.0)])),
    ];
    let merged = merge_block(merge_block(Vec::new(), first).unwrap(), second).unwrap();
    let got: Vec<(String, Vec<(i64, f64)>)> = merged
        .into_iter()
        .map(|(l, p)| (l.get("__name__").unwrap().to_string(), p.decode().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), vec![(1, 1.0), (2, 2.0)]),
            ("b".into(), vec![(2, 5.0)]),
            ("c".into(), vec![(1, 3.0)]),
            ("d".into(), vec![(2, 4.0)]),
        ]
    );
}

/// A local block is left to the bucket only when a planned raw block holds it (as a
/// source) and the bucket reads all of the local block's part of the query's range.
#[test]
fn a_local_block_is_covered_only_by_a_planned_raw_block_reading_all_of_it() {
    let (a, b, c) = (ulid::Ulid::new(), ulid::Ulid::new(), ulid::Ulid::new());
    let mut compacted = BlockMeta::new(c, 0, 4000);
    compacted.compaction.sources = vec![a, b];
    let plan = |p_mint, p_maxt| ReadPlan {
        blocks: vec![PlannedBlock {
            meta: compacted.clone(),
            mint: p_mint,
            maxt: p_maxt,
        }],
        aggr: Aggr::for_func(None),
        mint: p_mint,
    };
    let local_a = BlockMeta::new(a, 0, 2000);
    let local_b = BlockMeta::new(b, 2000, 4000);
    let full = plan(0, 3999).raw_sources();
    assert!(full.covers(&local_a, 0, 3999));
    assert!(full.covers(&local_b, 0, 3999));
    // a block that is neither planned nor a planned block's source
    assert!(!full.covers(&BlockMeta::new(ulid::Ulid::new(), 0, 2000), 0, 3999));
    // the bucket reads only [1000, 3999]: `a`'s [0, 1000) would be lost
    let part = plan(1000, 3999).raw_sources();
    assert!(!part.covers(&local_a, 0, 3999));
    assert!(part.covers(&local_a, 1000, 3999));
    assert!(part.covers(&local_b, 0, 3999));
    // downsampled blocks cover nothing here (their ranges drop other sources' samples)
    let mut ds = plan(0, 3999);
    ds.blocks[0]
        .meta
        .thanos
        .get_or_insert_with(Default::default)
        .downsample
        .resolution = 300_000;
    assert!(ds.raw_sources().is_empty());
}
