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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use strata_objstore::Bucket;
use strata_store::StoreError;
use strata_tsdb::chunkenc::{append_xor_in_range, Encoding, XorIter};
use strata_tsdb::chunks::{parse_chunk, segment_file_name, unpack_ref, ParsedChunk};
use strata_tsdb::downsample::{AggrChunk, AggrType, CounterSeries, RES_1H, RES_5M, RES_RAW};
use strata_tsdb::index::{ChunkMeta, IndexReader};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;
use strata_tsdb::meta::{visible_blocks, BlockMeta};
use strata_tsdb::postings::postings_for_matchers;
use ulid::Ulid;

use crate::stats::Counter;

/// Bytes read past the last chunk of a batch: Thanos's estimate of a chunk's maximum
/// size; a longer chunk is fetched again on its own.
const CHUNK_SIZE_ESTIMATE: u64 = 16 * 1024;
/// Chunks closer than this are fetched in one range read.
const RANGE_GAP: u64 = 64 * 1024;
/// Range reads in flight per block.
const RANGE_CONCURRENCY: usize = 8;

/// A tenant's visible blocks and when they were listed.
type Listing = (std::time::Instant, Arc<Vec<BlockMeta>>);

/// A chunk as read from a segment: encoding and data.
type RawChunk = (Encoding, bytes::Bytes);

/// A series as a source returns it: labels and samples sorted by time.
pub type SeriesData = (Labels, Vec<(i64, f64)>);

/// One block's parsed index plus the sizes of its chunk segments.
struct BlockIndex {
    reader: IndexReader,
    /// Size of `chunks/NNNNNN` by 0-based segment index.
    segments: Vec<u64>,
    bytes: u64,
}

/// A cached index weighs its parsed size, so the cache is bounded by bytes.
#[derive(Clone)]
struct IndexWeight;

impl quick_cache::Weighter<Ulid, Arc<BlockIndex>> for IndexWeight {
    fn weight(&self, _: &Ulid, idx: &Arc<BlockIndex>) -> u64 {
        idx.bytes.max(1)
    }
}

type IndexCache = quick_cache::sync::Cache<Ulid, Arc<BlockIndex>, IndexWeight>;

/// The bucket as a source of series.
pub struct BucketReader {
    bucket: Bucket,
    cache: IndexCache,
    /// Block indexes read from the bucket (cache misses that loaded one).
    index_loads: AtomicU64,
    /// The visible blocks per tenant and when they were listed.
    listings: Mutex<HashMap<String, Listing>>,
    listing_ttl: std::time::Duration,
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
            index_loads: AtomicU64::new(0),
            listings: Mutex::new(HashMap::new()),
            listing_ttl,
        }
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The tenant's readable blocks overlapping `[mint, maxt]`.
    pub async fn blocks(
        &self,
        tenant: &str,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<BlockMeta>, StoreError> {
        let listed = self.listing(tenant, &Counter::unaccounted()).await?;
        Ok(listed
            .iter()
            .filter(|m| resolution(m) == RES_RAW && m.max_time > mint && m.min_time <= maxt)
            .cloned()
            .collect())
    }

    /// The blocks to read for `[mint, maxt]` with resolutions up to `max_resolution`,
    /// each with the inclusive time range it answers for (see [`plan_blocks`]).
    pub async fn plan(
        &self,
        tenant: &str,
        mint: i64,
        maxt: i64,
        max_resolution: i64,
    ) -> Result<Vec<PlannedBlock>, StoreError> {
        let listed = self.listing(tenant, &Counter::unaccounted()).await?;
        Ok(plan_blocks(&listed, mint, maxt, max_resolution))
    }

    async fn listing(
        &self,
        tenant: &str,
        count: &Counter,
    ) -> Result<Arc<Vec<BlockMeta>>, StoreError> {
        if !self.listing_ttl.is_zero() {
            let l = self.listings.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, metas)) = l.get(tenant) {
                if at.elapsed() < self.listing_ttl {
                    return Ok(metas.clone());
                }
            }
        }
        let refs = self
            .bucket
            .list_blocks(tenant)
            .await
            .map_err(StoreError::from)?;
        // One listing, then each block's meta.json.
        count.object_reads(1 + refs.len(), refs.iter().map(|r| r.meta_json.len()).sum());
        let mut metas = Vec::with_capacity(refs.len());
        for r in refs {
            let name = PathBuf::from(format!("{tenant}/{}/meta.json", r.ulid));
            match BlockMeta::from_json(&r.meta_json, &name) {
                Ok(m) => metas.push((m, r.deletion_marked)),
                // One bad meta.json must not hide every other block.
                Err(e) => {
                    tracing::warn!(block = %r.ulid, error = %e, "skipping block with unreadable meta.json")
                }
            }
        }
        let visible = Arc::new(visible_blocks(metas));
        if !self.listing_ttl.is_zero() {
            self.listings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    tenant.to_string(),
                    (std::time::Instant::now(), visible.clone()),
                );
        }
        Ok(visible)
    }

    /// The block's index: cached, else read once however many queries miss it at the
    /// same time (the others wait for it; if the read fails, the next one tries).
    #[cfg(test)]
    async fn index(&self, tenant: &str, meta: &BlockMeta) -> Result<Arc<BlockIndex>, StoreError> {
        self.index_counted(tenant, meta, &Counter::unaccounted())
            .await
    }

    /// The block's index (see [`BucketReader::index`]); a read from the bucket is
    /// counted into `count`.
    async fn index_counted(
        &self,
        tenant: &str,
        meta: &BlockMeta,
        count: &Counter,
    ) -> Result<Arc<BlockIndex>, StoreError> {
        let guard = match self.cache.get_value_or_guard_async(&meta.ulid).await {
            Ok(idx) => return Ok(idx),
            Err(guard) => guard,
        };
        let idx = Arc::new(self.load_index(tenant, meta, count).await?);
        self.index_loads.fetch_add(1, Ordering::Relaxed);
        // Err: the placeholder is gone (the cache was cleared meanwhile); the index still
        // serves this read.
        let _ = guard.insert(idx.clone());
        Ok(idx)
    }

    async fn load_index(
        &self,
        tenant: &str,
        meta: &BlockMeta,
        count: &Counter,
    ) -> Result<BlockIndex, StoreError> {
        let dir = format!("{tenant}/{}", meta.ulid);
        let path = format!("{dir}/index");
        let (data, listing) = futures::future::join(
            self.bucket.get(&path),
            self.bucket.list(&format!("{dir}/chunks")),
        )
        .await;
        let data = data.map_err(StoreError::from)?;
        let listing = listing.map_err(StoreError::from)?;
        // The index, and the listing of its chunk segments.
        count.object_reads(2, data.len());
        let reader = IndexReader::new(data, &path).map_err(StoreError::from)?;
        let mut segs: Vec<(u32, u64)> = listing
            .iter()
            .filter_map(|(p, size)| {
                let name = p.rsplit('/').next()?;
                let n: u32 = name.parse().ok()?;
                Some((n.checked_sub(1)?, *size))
            })
            .collect();
        segs.sort_unstable();
        let mut segments = Vec::new();
        for (i, size) in segs {
            if i as usize != segments.len() {
                return Err(StoreError::Corrupt(format!(
                    "block {dir}: chunk segment {} missing",
                    segment_file_name(segments.len() as u32)
                )));
            }
            segments.push(size);
        }
        let bytes = reader.size();
        Ok(BlockIndex {
            reader,
            segments,
            bytes,
        })
    }

    /// Number of block indexes in the cache (for tests and metrics).
    pub fn cached_indexes(&self) -> usize {
        self.cache.len()
    }

    /// Block indexes read from the bucket so far (for tests and metrics).
    pub fn index_loads(&self) -> u64 {
        self.index_loads.load(Ordering::Relaxed)
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
        Ok(self
            .series_at(tenant, matchers, mint, maxt, skip_chunks, RES_RAW, None)
            .await?
            .series)
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
        let mut plan = plan_blocks(&listed, wide, maxt, max_resolution);
        if early {
            plan.retain_mut(|p| {
                p.mint = p.mint.max(mint.saturating_sub(resolution(&p.meta)));
                p.mint <= p.maxt
            });
        }
        let per_block = futures::future::join_all(plan.iter().map(|p| {
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
            )
        }))
        .await;
        let mut blocks_read = Vec::with_capacity(plan.len());
        let mut downsampled = Vec::new();
        let mut pieces: Vec<(i64, Vec<SeriesData>)> = Vec::with_capacity(plan.len());
        for (p, r) in plan.iter().zip(per_block) {
            let res = resolution(&p.meta);
            blocks_read.push(res);
            if res != RES_RAW {
                downsampled.push((p.mint, p.maxt));
            }
            pieces.push((p.mint, r?));
        }
        let series = if downsampled.is_empty() || skip_chunks {
            pieces.into_iter().flat_map(|(_, s)| s).collect()
        } else {
            join_pieces(pieces, aggr == Aggr::Counter)
        };
        Ok(BucketSeries {
            series,
            blocks_read,
            downsampled,
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
    ) -> Result<Vec<SeriesData>, StoreError> {
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
            if !chunks.is_empty() {
                // Counted before any chunk is read: a series limit stops the read here.
                count.series(&labels)?;
                series.push((labels, chunks));
            }
        }
        if skip_chunks {
            return Ok(series
                .into_iter()
                .map(|(l, _)| (add_external(l, &ext), Vec::new()))
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
                if *enc != Encoding::Xor {
                    continue; // histogram chunks: not decodable to float samples
                }
                if let Err(e) = append_xor_in_range(data, mint, maxt, &mut samples) {
                    return Err(StoreError::Corrupt(format!(
                        "block {dir}: series {labels}: chunk {:#x}: {e}",
                        c.chunk_ref
                    )));
                }
                count.samples(samples.len() - before)?;
            }
            if !samples.is_empty() {
                out.push((add_external(labels, &ext), samples));
            }
        }
        Ok(out)
    }

    /// Fetch the chunks `refs` of block `dir`: (encoding byte, data) by ref.
    async fn fetch_chunks(
        &self,
        dir: &str,
        segments: &[u64],
        mut refs: Vec<u64>,
        count: &Counter,
    ) -> Result<HashMap<u64, RawChunk>, StoreError> {
        refs.sort_unstable();
        refs.dedup();
        // Batch by segment: (segment, start, end, refs in it).
        let mut batches: Vec<(u32, u64, u64, Vec<u64>)> = Vec::new();
        for r in refs {
            let (seg, off) = unpack_ref(r);
            let off = u64::from(off);
            let Some(&size) = segments.get(seg as usize) else {
                return Err(StoreError::Corrupt(format!(
                    "block {dir}: chunk {r:#x} in missing segment {}",
                    segment_file_name(seg)
                )));
            };
            if off >= size {
                return Err(StoreError::Corrupt(format!(
                    "block {dir}: chunk {r:#x} beyond the end of segment {}",
                    segment_file_name(seg)
                )));
            }
            let end = (off + CHUNK_SIZE_ESTIMATE).min(size);
            match batches.last_mut() {
                Some(b) if b.0 == seg && off <= b.2 + RANGE_GAP => {
                    b.2 = b.2.max(end);
                    b.3.push(r);
                }
                _ => batches.push((seg, off, end, vec![r])),
            }
        }
        let results: Vec<Result<Vec<(u64, RawChunk)>, StoreError>> = futures::stream::iter(batches)
            .map(|(seg, start, end, refs)| async move {
                let path = format!("{dir}/chunks/{}", segment_file_name(seg));
                let size = segments[seg as usize];
                let buf = self
                    .bucket
                    .get_range(&path, start..end)
                    .await
                    .map_err(StoreError::from)?;
                count.object_read(buf.len());
                let mut got = Vec::with_capacity(refs.len());
                for r in refs {
                    let off = u64::from(unpack_ref(r).1);
                    let rel = (off - start) as usize;
                    let at = buf.get(rel..).unwrap_or_default();
                    let chunk = match parse_chunk(at, Path::new(&path), off)
                        .map_err(|e| corrupt_chunk(dir, &e))?
                    {
                        ParsedChunk::Chunk(enc, range) => {
                            (enc, buf.slice(rel + range.start..rel + range.end))
                        }
                        ParsedChunk::Needs(total) => {
                            self.fetch_long_chunk(dir, &path, off, size, total, count)
                                .await?
                        }
                    };
                    // Chunk bytes count as they arrive: past the limit, no more reads.
                    count.chunk(chunk.1.len())?;
                    got.push((r, chunk));
                }
                Ok(got)
            })
            .buffer_unordered(RANGE_CONCURRENCY)
            .collect()
            .await;
        let mut out = HashMap::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// A chunk longer than its batch's read: read on its own, `needs` bytes from `off`
    /// (as the bytes read so far say), bounded by the segment's size and
    /// [`MAX_CHUNK_READ`] so a corrupt length cannot ask for gigabytes.
    async fn fetch_long_chunk(
        &self,
        dir: &str,
        path: &str,
        off: u64,
        size: u64,
        mut needs: u64,
        count: &Counter,
    ) -> Result<RawChunk, StoreError> {
        // Twice at most: the length field itself may have been cut off the first time.
        for _ in 0..2 {
            let range = long_chunk_range(off, needs, size)
                .map_err(|why| corrupt_chunk(dir, &strata_tsdb::Error::corrupt(path, off, why)))?;
            let one = self
                .bucket
                .get_range(path, range)
                .await
                .map_err(StoreError::from)?;
            count.object_read(one.len());
            match parse_chunk(&one, Path::new(path), off).map_err(|e| corrupt_chunk(dir, &e))? {
                ParsedChunk::Chunk(enc, r) => return Ok((enc, one.slice(r))),
                ParsedChunk::Needs(n) => needs = n,
            }
        }
        Err(corrupt_chunk(
            dir,
            &strata_tsdb::Error::corrupt(path, off, "chunk length keeps growing"),
        ))
    }
}

/// Longest chunk a range read fetches. Prometheus's chunks hold at most a few KiB (120
/// samples; histogram and aggregate chunks a few times that); a length beyond this is
/// taken for corruption rather than read.
pub const MAX_CHUNK_READ: u64 = 16 << 20;

/// The byte range to read for a chunk at `off` that needs `needs` bytes, in a segment of
/// `size` bytes; the reason it is corrupt when that cannot be right.
fn long_chunk_range(off: u64, needs: u64, size: u64) -> Result<std::ops::Range<u64>, String> {
    if needs > MAX_CHUNK_READ {
        return Err(format!(
            "chunk length claims {needs} bytes, more than the {MAX_CHUNK_READ}-byte limit on a chunk"
        ));
    }
    match off.checked_add(needs) {
        Some(end) if end <= size => Ok(off..end),
        _ => Err(format!(
            "chunk runs past the end of the segment ({size} bytes): it needs {needs} bytes"
        )),
    }
}

/// A corrupt chunk as the query reports it: the block and the file and offset.
fn corrupt_chunk(dir: &str, e: &strata_tsdb::Error) -> StoreError {
    StoreError::Corrupt(format!("block {dir}: {e}"))
}

/// One block of a read plan and the inclusive time range it answers for.
#[derive(Debug, Clone)]
pub struct PlannedBlock {
    pub meta: BlockMeta,
    pub mint: i64,
    pub maxt: i64,
}

/// What [`BucketReader::series_at`] read.
#[derive(Debug, Default)]
pub struct BucketSeries {
    pub series: Vec<SeriesData>,
    /// The resolution (ms) of every block read.
    pub blocks_read: Vec<i64>,
    /// Time ranges (inclusive) answered from downsampled blocks.
    pub downsampled: Vec<(i64, i64)>,
}

/// The resolutions the bucket can hold, coarsest first.
const RESOLUTIONS: [i64; 3] = [RES_1H, RES_5M, RES_RAW];

/// Which blocks answer `[mint, maxt]` at resolutions up to `max_resolution`: per stream
/// (blocks with the same external labels), the coarsest allowed resolution where it has
/// blocks, finer resolutions only for the time ranges it leaves uncovered (Thanos's
/// `getFor`). Each planned block answers for a range disjoint from the other
/// resolutions' ranges in its stream.
pub fn plan_blocks(
    blocks: &[BlockMeta],
    mint: i64,
    maxt: i64,
    max_resolution: i64,
) -> Vec<PlannedBlock> {
    let resolutions: Vec<i64> = RESOLUTIONS
        .iter()
        .copied()
        .filter(|r| *r <= max_resolution.max(0))
        .collect();
    let mut streams: std::collections::BTreeMap<Vec<(String, String)>, Vec<&BlockMeta>> =
        Default::default();
    for b in blocks {
        if b.max_time > mint && b.min_time <= maxt {
            let mut k = external_labels(b);
            k.sort();
            streams.entry(k).or_default().push(b);
        }
    }
    let mut out = Vec::new();
    for bs in streams.values() {
        plan_stream(bs, mint, maxt, &resolutions, &mut out);
    }
    out
}

fn plan_stream(
    blocks: &[&BlockMeta],
    mint: i64,
    maxt: i64,
    resolutions: &[i64],
    out: &mut Vec<PlannedBlock>,
) {
    let Some((&res, finer)) = resolutions.split_first() else {
        return;
    };
    if mint > maxt {
        return;
    }
    let mut here: Vec<&BlockMeta> = blocks
        .iter()
        .copied()
        .filter(|b| resolution(b) == res && b.max_time > mint && b.min_time <= maxt)
        .collect();
    here.sort_by_key(|b| (b.min_time, b.max_time));
    let mut cur = mint;
    for b in here {
        if b.min_time > cur {
            plan_stream(blocks, cur, b.min_time - 1, finer, out);
        }
        out.push(PlannedBlock {
            meta: b.clone(),
            mint: b.min_time.max(mint),
            maxt: (b.max_time - 1).min(maxt),
        });
        cur = cur.max(b.max_time);
    }
    if cur <= maxt {
        plan_stream(blocks, cur, maxt, finer, out);
    }
}

/// The aggregate(s) of a downsampled chunk a function reads (Thanos's `aggrsFromFunc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggr {
    Min,
    Max,
    Count,
    Sum,
    Counter,
    /// sum / count per window.
    Average,
}

impl Aggr {
    pub fn for_func(func: Option<&str>) -> Aggr {
        let f = func.unwrap_or("");
        if f == "min" || f.starts_with("min_") {
            Aggr::Min
        } else if f == "max" || f.starts_with("max_") {
            Aggr::Max
        } else if f == "count" || f.starts_with("count_") {
            Aggr::Count
        } else if f.starts_with("sum_") {
            Aggr::Sum
        } else if matches!(f, "rate" | "increase" | "irate" | "resets") {
            Aggr::Counter
        } else {
            Aggr::Average
        }
    }
}

/// Append the samples of aggregate chunk `data` in `[mint, maxt]` as `aggr` reads them.
/// Counter samples are appended as stored (reset adjustment happens over the whole
/// series, see [`join_pieces`]).
fn aggr_samples(
    data: &[u8],
    aggr: Aggr,
    res: i64,
    continues: bool,
    mint: i64,
    maxt: i64,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), String> {
    let c = AggrChunk::new(data).map_err(|e| e.to_string())?;
    // A chunk's last window is stamped with its last raw sample's time, every other
    // window with the window's end: stamp them all with the window's end. And a counter
    // sub-chunk starts with the chunk's first raw sample: after the series' first
    // chunk it is left out (the next window's value, relative to it, carries its
    // increase; a reset is still seen against the previous chunk's last raw value).
    // Either would make a rate over a window at a chunk boundary see more increase than
    // its time span (+1.8% for a 1h rate over 5m data from 1m samples).
    // `continues`: the block answers after an earlier piece of the query's range.
    let first_counter = out.is_empty() && !continues;
    let keep = |t: i64| t >= mint && t <= maxt;
    let bad = |t: AggrType, e: &str| format!("aggregate chunk: {t:?}: {e}");
    match aggr {
        Aggr::Min | Aggr::Max | Aggr::Count | Aggr::Sum | Aggr::Counter => {
            let t = match aggr {
                Aggr::Min => AggrType::Min,
                Aggr::Max => AggrType::Max,
                Aggr::Count => AggrType::Count,
                Aggr::Sum => AggrType::Sum,
                _ => AggrType::Counter,
            };
            let Some(d) = c.get(t) else { return Ok(()) };
            let mut it = XorIter::new(d);
            out.reserve(it.num_samples());
            let mut stamp = WindowStamp::new(res);
            let mut first = true;
            for (ts, v) in it.by_ref() {
                let ts = if t == AggrType::Counter && first {
                    first = false;
                    if !first_counter {
                        continue;
                    }
                    // The series' first counter sample keeps its raw timestamp.
                    ts
                } else {
                    stamp.end(ts)
                };
                if keep(ts) {
                    out.push((ts, v));
                }
            }
            if let Some(e) = it.err() {
                return Err(bad(t, e));
            }
        }
        Aggr::Average => {
            let (Some(sd), cd) = (c.get(AggrType::Sum), c.get(AggrType::Count)) else {
                if let Some(cd) = c.get(AggrType::Count) {
                    let mut ci = XorIter::new(cd);
                    ci.by_ref().for_each(drop);
                    if let Some(e) = ci.err() {
                        return Err(bad(AggrType::Count, e));
                    }
                }
                return Ok(());
            };
            let Some(cd) = cd else {
                // No count: no window can be averaged; still check the sum decodes.
                let mut si = XorIter::new(sd);
                si.by_ref().for_each(drop);
                return si.err().map_or(Ok(()), |e| Err(bad(AggrType::Sum, e)));
            };
            let at = out.len();
            if !average_lockstep(sd, cd, res, &keep, out).map_err(|(t, e)| bad(t, &e))? {
                // Sum and count disagree on their windows (not written by a Thanos-style
                // downsampler): match them up by time instead.
                out.truncate(at);
                average_merge(sd, cd, res, &keep, out).map_err(|(t, e)| bad(t, &e))?;
            }
        }
    }
    Ok(())
}

/// A decoding error of one sub-chunk.
type SubErr = (AggrType, String);

/// Averages of a chunk whose sum and count sub-chunks hold the same windows (Thanos
/// writes every aggregate for every window): both decoded side by side, one stamp.
/// `Ok(false)` as soon as their timestamps differ.
fn average_lockstep(
    sd: &[u8],
    cd: &[u8],
    res: i64,
    keep: &impl Fn(i64) -> bool,
    out: &mut Vec<(i64, f64)>,
) -> Result<bool, SubErr> {
    let (mut si, mut ci) = (XorIter::new(sd), XorIter::new(cd));
    out.reserve(si.num_samples());
    let mut stamp = WindowStamp::new(res);
    let same = loop {
        match (si.next(), ci.next()) {
            (Some((ts, s)), Some((tc, cv))) if ts == tc => {
                let t = stamp.end(ts);
                if cv > 0.0 && keep(t) {
                    out.push((t, s / cv));
                }
            }
            (None, None) => break true,
            _ => break false,
        }
    };
    if let Some(e) = si.err() {
        return Err((AggrType::Sum, e.to_string()));
    }
    if let Some(e) = ci.err() {
        return Err((AggrType::Count, e.to_string()));
    }
    Ok(same)
}

/// Averages of a chunk whose sum and count windows may differ: a window without both
/// is left out.
fn average_merge(
    sd: &[u8],
    cd: &[u8],
    res: i64,
    keep: &impl Fn(i64) -> bool,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), SubErr> {
    let (mut si, mut ci) = (XorIter::new(sd), XorIter::new(cd));
    let (mut ss, mut cs) = (WindowStamp::new(res), WindowStamp::new(res));
    let mut cur: Option<(i64, f64)> = None;
    let mut count_done = false;
    for (t, s) in si.by_ref() {
        let t = ss.end(t);
        while !count_done && cur.is_none_or(|c| c.0 < t) {
            match ci.next() {
                Some((ct, cv)) => cur = Some((cs.end(ct), cv)),
                None => {
                    count_done = true;
                    cur = None;
                }
            }
        }
        if let Some((ct, cv)) = cur {
            if ct == t && cv > 0.0 && keep(t) {
                out.push((t, s / cv));
            }
        }
    }
    if let Some(e) = si.err() {
        return Err((AggrType::Sum, e.to_string()));
    }
    ci.by_ref().for_each(drop);
    if let Some(e) = ci.err() {
        return Err((AggrType::Count, e.to_string()));
    }
    Ok(())
}

/// Stamps a sample with the end of its `res`-wide window (`t - t % res + res - 1`;
/// unchanged when `res` is 0), without a division while samples fall in consecutive
/// windows.
struct WindowStamp {
    res: i64,
    /// The last window end handed out (`None`: none yet).
    last: Option<i64>,
}

impl WindowStamp {
    fn new(res: i64) -> Self {
        WindowStamp { res, last: None }
    }

    #[inline]
    fn end(&mut self, t: i64) -> i64 {
        if self.res <= 0 {
            return t;
        }
        if let Some(pe) = self.last {
            if t == pe {
                return pe;
            }
            if let Some(next) = pe.checked_add(self.res) {
                if t > pe && t <= next {
                    self.last = Some(next);
                    return next;
                }
            }
        }
        let e = t - t.rem_euclid(self.res) + self.res - 1;
        self.last = Some(e);
        e
    }
}

/// Join per-block pieces (each starting at the `i64`, pieces of one stream disjoint in
/// time) into one sample list per series. For counters the joined list is made
/// monotonic (Thanos's `ApplyCounterResetsSeriesIterator`: a drop is a reset; a repeated
/// timestamp carries a chunk's last raw value) and then shifted so it ends at the last
/// raw value, so it lines up with raw samples that follow it from other sources.
fn join_pieces(mut pieces: Vec<(i64, Vec<SeriesData>)>, counter: bool) -> Vec<SeriesData> {
    pieces.sort_by_key(|p| p.0);
    let mut by_series: std::collections::BTreeMap<Labels, Vec<(i64, f64)>> = Default::default();
    for (_, part) in pieces {
        for (l, s) in part {
            let e = by_series.entry(l).or_default();
            let last = e.last().map(|p| p.0);
            match last {
                // Overlapping blocks of one resolution: keep time order.
                Some(lt) => {
                    if s.first().is_some_and(|p| p.0 > lt) {
                        e.extend_from_slice(&s);
                    } else {
                        e.extend(s.into_iter().filter(|p| p.0 > lt));
                    }
                }
                None => *e = s,
            }
        }
    }
    by_series
        .into_iter()
        .map(|(l, s)| {
            if !counter {
                let mut s = s;
                s.dedup_by_key(|p| p.0);
                return (l, s);
            }
            let last_raw = s.iter().rev().find(|p| !p.1.is_nan()).map(|p| p.1);
            let mut cs = CounterSeries::default();
            cs.push_chunk(&s);
            let mut out = cs.out;
            if let (Some(raw), Some(&(_, adj))) = (last_raw, out.last()) {
                let shift = raw - adj;
                if shift != 0.0 {
                    for p in &mut out {
                        p.1 += shift;
                    }
                }
            }
            (l, out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tsdb::meta::{ThanosDownsample, ThanosMeta};

    fn ds_meta(min: i64, max: i64, res: i64) -> BlockMeta {
        let mut m = BlockMeta::new(Ulid::new(), min, max);
        m.thanos = Some(ThanosMeta {
            downsample: ThanosDownsample { resolution: res },
            ..Default::default()
        });
        m
    }

    #[test]
    fn plan_prefers_coarsest_allowed_and_fills_gaps_without_overlap() {
        const D: i64 = 24 * 3_600_000;
        let raw = ds_meta(0, 30 * D, RES_RAW);
        let m5 = ds_meta(0, 30 * D, RES_5M);
        let h1 = ds_meta(0, 28 * D, RES_1H);
        let blocks = vec![raw.clone(), m5.clone(), h1.clone()];
        let summary = |max_res| {
            plan_blocks(&blocks, D, 30 * D - 1, max_res)
                .into_iter()
                .map(|p| (resolution(&p.meta), p.mint, p.maxt))
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(0), vec![(0, D, 30 * D - 1)]);
        assert_eq!(summary(12 * 60_000), vec![(RES_5M, D, 30 * D - 1)]);
        assert_eq!(
            summary(RES_1H),
            vec![(RES_1H, D, 28 * D - 1), (RES_5M, 28 * D, 30 * D - 1)]
        );
        // Without the 5m block the raw one fills the gap.
        let blocks = vec![raw, h1];
        let p: Vec<_> = plan_blocks(&blocks, D, 30 * D - 1, RES_1H)
            .into_iter()
            .map(|p| (resolution(&p.meta), p.mint, p.maxt))
            .collect();
        assert_eq!(p, vec![(RES_1H, D, 28 * D - 1), (0, 28 * D, 30 * D - 1)]);
    }

    #[test]
    fn aggregate_per_function() {
        assert_eq!(Aggr::for_func(Some("rate")), Aggr::Counter);
        assert_eq!(Aggr::for_func(Some("increase")), Aggr::Counter);
        assert_eq!(Aggr::for_func(Some("max_over_time")), Aggr::Max);
        assert_eq!(Aggr::for_func(Some("min_over_time")), Aggr::Min);
        assert_eq!(Aggr::for_func(Some("sum_over_time")), Aggr::Sum);
        assert_eq!(Aggr::for_func(Some("count_over_time")), Aggr::Count);
        assert_eq!(Aggr::for_func(Some("avg_over_time")), Aggr::Average);
        assert_eq!(Aggr::for_func(None), Aggr::Average);
    }

    /// Averages come from sum / count per window: side by side when both sub-chunks
    /// hold the same windows, matched by time when they do not (a window missing from
    /// either is left out); a zero count gives no point.
    #[test]
    fn averages_from_sum_and_count() {
        use strata_tsdb::chunkenc::XorChunk;
        use strata_tsdb::downsample::encode_aggr;
        let chunk = |pts: &[(i64, f64)]| {
            let mut c = XorChunk::new();
            for &(t, v) in pts {
                c.append(t, v);
            }
            c
        };
        let r = RES_5M;
        let avg = |sum: &[(i64, f64)], count: &[(i64, f64)]| {
            let (s, c) = (chunk(sum), chunk(count));
            let data = encode_aggr([Some(&c), Some(&s), None, None, None]);
            let mut out = Vec::new();
            aggr_samples(&data, Aggr::Average, r, false, 0, i64::MAX, &mut out).unwrap();
            out
        };
        // Same windows (stamped at the raw samples' times, read at the windows' ends).
        let sum = [(r - 10, 10.0), (2 * r - 10, 30.0), (3 * r - 10, 8.0)];
        let count = [(r - 10, 2.0), (2 * r - 10, 3.0), (3 * r - 10, 0.0)];
        assert_eq!(avg(&sum, &count), [(r - 1, 5.0), (2 * r - 1, 10.0)]);
        // The count lacks the second window: that window has no average.
        let count = [(r - 10, 2.0), (3 * r - 10, 4.0)];
        assert_eq!(avg(&sum, &count), [(r - 1, 5.0), (3 * r - 1, 2.0)]);
        // No count at all: nothing.
        let s = chunk(&sum);
        let data = encode_aggr([None, Some(&s), None, None, None]);
        let mut out = Vec::new();
        aggr_samples(&data, Aggr::Average, r, false, 0, i64::MAX, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn counter_pieces_join_across_blocks_and_resets() {
        use strata_tsdb::downsample::downsample_raw;
        // 1m samples for 4h, reset at 2h30; two 2h 5m-blocks.
        let raw: Vec<(i64, f64)> = (0..240)
            .map(|i| {
                (
                    i * 60_000,
                    if i < 150 { i as f64 } else { (i - 150) as f64 },
                )
            })
            .collect();
        let l = Labels::from_pairs([("__name__", "c")]);
        let mut pieces = Vec::new();
        for (lo, hi, continues) in [
            (0, 2 * 3_600_000 - 1, false),
            (2 * 3_600_000, 4 * 3_600_000 - 1, true),
        ] {
            let part: Vec<(i64, f64)> = raw
                .iter()
                .copied()
                .filter(|p| p.0 >= lo && p.0 <= hi)
                .collect();
            let mut s = Vec::new();
            for c in downsample_raw(&part, RES_5M) {
                aggr_samples(&c.data, Aggr::Counter, RES_5M, continues, lo, hi, &mut s).unwrap();
            }
            pieces.push((lo, vec![(l.clone(), s)]));
        }
        let joined = join_pieces(pieces, true);
        let s = &joined[0].1;
        assert!(
            s.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{s:?}"
        );
        // Total increase 149 + 89, and the series ends at the last raw value.
        assert_eq!(s.last().unwrap().1 - s[0].1, 238.0);
        assert_eq!(s.last().unwrap().1, 89.0);
        // Uniform window stamps after the first sample.
        assert!(s[1..].iter().all(|p| (p.0 + 1) % RES_5M == 0), "{s:?}");
    }

    /// A segment of chunks as the ingester writes it, in a real filesystem bucket at
    /// `t/<ULID>/chunks/000001`: the bucket, the block's dir, the segment bytes and the
    /// chunk refs.
    fn segment_in_bucket(
        chunks: &[(Encoding, Vec<u8>)],
    ) -> (tempfile::TempDir, String, Vec<u8>, Vec<u64>) {
        use strata_tsdb::chunks::ChunkWriter;
        let tmp = tempfile::tempdir().unwrap();
        let dir = format!("t/{}", Ulid::new());
        let cdir = tmp.path().join(&dir).join("chunks");
        let mut w = ChunkWriter::create(&cdir).unwrap();
        let refs = chunks
            .iter()
            .map(|(e, d)| w.write(*e, d).unwrap())
            .collect();
        w.finish().unwrap();
        let seg = std::fs::read(cdir.join("000001")).unwrap();
        (tmp, dir, seg, refs)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    /// Both readers of one segment: the bucket's range reads and tsdb's reader of a
    /// whole segment. Either both give the same chunks, or both refuse the block.
    fn both_paths_agree(tmp: &Path, dir: &str, seg: &[u8], refs: &[u64]) -> Result<(), String> {
        let path = format!("{dir}/chunks/000001");
        std::fs::write(tmp.join(&path), seg).unwrap();
        let local = strata_tsdb::chunks::ChunkReader::from_segments(vec![(
            PathBuf::from(&path),
            bytes::Bytes::copy_from_slice(seg),
        )])
        .unwrap();
        let want: Result<Vec<(Encoding, Vec<u8>)>, String> = refs
            .iter()
            .map(|r| {
                local
                    .chunk(*r)
                    .map(|(e, d)| (e, d.to_vec()))
                    .map_err(|e| e.to_string())
            })
            .collect();
        let reader = BucketReader::new(
            Bucket::filesystem(tmp).unwrap(),
            1 << 20,
            std::time::Duration::ZERO,
        );
        let got = rt().block_on(reader.fetch_chunks(
            dir,
            &[seg.len() as u64],
            refs.to_vec(),
            &Counter::unaccounted(),
        ));
        match (want, got) {
            (Ok(want), Ok(got)) => {
                for (r, w) in refs.iter().zip(want) {
                    let (e, d) = &got[r];
                    if (*e, &d[..]) != (w.0, &w.1[..]) {
                        return Err(format!("chunk {r:#x} differs"));
                    }
                }
                Ok(())
            }
            (Err(_), Err(e)) => {
                // The error names the block, the segment and a chunk's offset.
                // A corrupt chunk is corrupt, not a reason to retry.
                if e.kind() == strata_store::ErrorKind::Corrupt
                    && e.message()
                        .starts_with(&format!("block {dir}: {path}: corrupt at offset "))
                {
                    Ok(())
                } else {
                    Err(format!("unhelpful error: {e}"))
                }
            }
            (w, g) => Err(format!(
                "paths disagree: local {w:?}, bucket {:?}",
                g.map(|m| m.len())
            )),
        }
    }

    fn test_chunks() -> Vec<(Encoding, Vec<u8>)> {
        use strata_tsdb::chunkenc::XorChunk;
        let mut v = Vec::new();
        for i in 0..6i64 {
            let mut c = XorChunk::new();
            for j in 0..(20 * i + 1) {
                c.append(j * 15_000, (i * j) as f64);
            }
            v.push((Encoding::Xor, c.into_bytes()));
        }
        // Longer than the batch read's estimate: read again on its own.
        v.push((Encoding::Xor, (0..40_000u32).map(|i| i as u8).collect()));
        v.push((Encoding::Xor, vec![0, 0]));
        v
    }

    #[test]
    fn intact_chunks_read_the_same_both_ways() {
        let (tmp, dir, seg, refs) = segment_in_bucket(&test_chunks());
        both_paths_agree(tmp.path(), &dir, &seg, &refs).unwrap();
    }

    /// Before the one parser, a length near `u64::MAX` overflowed (a panic) and others
    /// asked the object store for gigabytes.
    #[test]
    fn corrupt_length_is_an_error_naming_the_block_and_offset() {
        let (tmp, dir, seg, refs) = segment_in_bucket(&test_chunks());
        let at = refs[2] as usize;
        for len in [
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            vec![0x80, 0x80, 0x80, 0x80, 0x04], // 1 GiB
            vec![0x80, 0x80, 0x80, 0x10],       // 32 MiB
        ] {
            let mut bad = seg.clone();
            bad[at..at + len.len()].copy_from_slice(&len);
            both_paths_agree(tmp.path(), &dir, &bad, &refs).unwrap();
            let reader = BucketReader::new(
                Bucket::filesystem(tmp.path()).unwrap(),
                1 << 20,
                std::time::Duration::ZERO,
            );
            let e = rt()
                .block_on(reader.fetch_chunks(
                    &dir,
                    &[bad.len() as u64],
                    refs.clone(),
                    &Counter::unaccounted(),
                ))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("block {dir}: ")) && e.contains(&format!("offset {at}:")),
                "{e}"
            );
        }
    }

    #[test]
    fn long_chunk_reads_are_bounded() {
        assert_eq!(long_chunk_range(8, 100, 1000), Ok(8..108));
        assert_eq!(long_chunk_range(900, 100, 1000), Ok(900..1000));
        assert!(long_chunk_range(901, 100, 1000)
            .unwrap_err()
            .contains("past the end"));
        assert!(long_chunk_range(8, u64::MAX, u64::MAX)
            .unwrap_err()
            .contains("limit"));
        assert!(long_chunk_range(u64::MAX, 16, u64::MAX).is_err());
        let big = MAX_CHUNK_READ + 1;
        assert!(long_chunk_range(8, big, 1 << 40)
            .unwrap_err()
            .contains("limit"));
    }

    /// A real block (one series) in a filesystem bucket at `t/<ULID>`.
    fn block_in_bucket(bucket_dir: &Path) -> BlockMeta {
        use strata_tsdb::block::BlockWriter;
        use strata_tsdb::chunkenc::ChunkCutter;
        let tenant_dir = bucket_dir.join("t");
        std::fs::create_dir_all(&tenant_dir).unwrap();
        let ulid = Ulid::new();
        let mut w = BlockWriter::new(&tenant_dir, ulid).unwrap();
        let mut c = ChunkCutter::new(7_200_000);
        for t in 0..100 {
            c.append(t * 15_000, t as f64);
        }
        w.add_series(Labels::from_pairs([("__name__", "up")]), c.finish())
            .unwrap();
        w.finish(None).unwrap();
        BlockMeta::read(&tenant_dir.join(ulid.to_string())).unwrap()
    }

    /// Queries that miss one block's index at the same time read it once: the first
    /// reads, the others wait for it (before: every miss read and parsed it).
    #[test]
    fn concurrent_misses_read_an_index_once() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = block_in_bucket(tmp.path());
        let reader = BucketReader::new(
            Bucket::filesystem(tmp.path()).unwrap(),
            1 << 30,
            std::time::Duration::ZERO,
        );
        // join_all polls each once before any read can finish: sixteen misses at once.
        let got = rt().block_on(futures::future::join_all(
            (0..16).map(|_| reader.index("t", &meta)),
        ));
        assert!(got.iter().all(|r| r.is_ok()));
        assert!(got
            .windows(2)
            .all(|w| Arc::ptr_eq(w[0].as_ref().unwrap(), w[1].as_ref().unwrap())));
        assert_eq!(reader.index_loads(), 1);
        assert_eq!(reader.cached_indexes(), 1);
        rt().block_on(reader.index("t", &meta)).unwrap();
        assert_eq!(reader.index_loads(), 1);
    }

    /// A failed read is not cached and does not poison the waiters: each tries itself.
    #[test]
    fn failed_index_reads_are_not_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = block_in_bucket(tmp.path());
        let index = tmp.path().join(format!("t/{}/index", meta.ulid));
        let good = std::fs::read(&index).unwrap();
        std::fs::write(&index, b"not an index").unwrap();
        let reader = BucketReader::new(
            Bucket::filesystem(tmp.path()).unwrap(),
            1 << 30,
            std::time::Duration::ZERO,
        );
        let got = rt().block_on(futures::future::join_all(
            (0..4).map(|_| reader.index("t", &meta)),
        ));
        assert!(got.iter().all(|r| r.is_err()));
        assert_eq!(reader.cached_indexes(), 0);
        std::fs::write(&index, good).unwrap();
        rt().block_on(reader.index("t", &meta)).unwrap();
        assert_eq!((reader.index_loads(), reader.cached_indexes()), (1, 1));
    }

    /// The cache holds what fits its byte limit, evicting to make room.
    #[test]
    fn index_cache_is_bounded_by_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let metas: Vec<BlockMeta> = (0..3).map(|_| block_in_bucket(tmp.path())).collect();
        let one = {
            let r = BucketReader::new(
                Bucket::filesystem(tmp.path()).unwrap(),
                1 << 30,
                std::time::Duration::ZERO,
            );
            rt().block_on(r.index("t", &metas[0])).unwrap().bytes
        };
        // Room for two indexes, not three.
        let reader = BucketReader::new(
            Bucket::filesystem(tmp.path()).unwrap(),
            2 * one + one / 2,
            std::time::Duration::ZERO,
        );
        for m in &metas {
            rt().block_on(reader.index("t", m)).unwrap();
        }
        assert_eq!(reader.index_loads(), 3);
        assert!(reader.cached_indexes() <= 2, "{}", reader.cached_indexes());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// Corrupted bytes anywhere after the segment header (flipped bytes, a random
        /// length at a chunk's start): never a panic, and the bucket's range reads agree
        /// with tsdb's reader of the whole segment.
        #[test]
        fn corrupt_segments_read_alike_both_ways(
            flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255), 0..4),
            length in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 1..11))),
        ) {
            let (tmp, dir, seg, refs) = segment_in_bucket(&test_chunks());
            let mut bad = seg.clone();
            for (i, x) in flips {
                let pos = 8 + i.index(bad.len() - 8);
                bad[pos] ^= x;
            }
            if let Some((i, len)) = length {
                let at = refs[i.index(refs.len())] as usize;
                let n = len.len().min(bad.len() - at);
                bad[at..at + n].copy_from_slice(&len[..n]);
            }
            let r = both_paths_agree(tmp.path(), &dir, &bad, &refs);
            proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }
}
