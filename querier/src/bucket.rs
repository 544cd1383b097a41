//! Reading a tenant's blocks straight from the bucket: list `<tenant>/<ULID>/meta.json`,
//! keep the blocks a query can use, read each block's `index` (cached per ULID, bounded
//! by bytes) and fetch only the chunks the query needs by byte ranges of
//! `chunks/NNNNNN`, nearby chunks batched into one range read.
//!
//! Blocks left out: marked for deletion, downsampled (the engine reads raw samples),
//! outside the query's time range, and blocks that are sources of another block in the
//! listing (compacted or deduplicated into it: the compacted one wins, never both).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use strata_objstore::Bucket;
use strata_tsdb::chunkenc::{Encoding, XorIter};
use strata_tsdb::chunks::{segment_file_name, unpack_ref};
use strata_tsdb::index::{ChunkMeta, IndexReader};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;
use strata_tsdb::meta::BlockMeta;
use strata_tsdb::postings::postings_for_matchers;
use ulid::Ulid;

/// Bytes read past the last chunk of a batch: Thanos's estimate of a chunk's maximum
/// size; a longer chunk is fetched again on its own.
const CHUNK_SIZE_ESTIMATE: u64 = 16 * 1024;
/// Chunks closer than this are fetched in one range read.
const RANGE_GAP: u64 = 64 * 1024;
/// Range reads in flight per block.
const RANGE_CONCURRENCY: usize = 8;

/// A tenant's visible blocks and when they were listed.
type Listing = (std::time::Instant, Arc<Vec<BlockMeta>>);

/// A chunk as read from a segment: encoding byte and data.
type RawChunk = (u8, bytes::Bytes);

/// A series as a source returns it: labels and samples sorted by time.
pub type SeriesData = (Labels, Vec<(i64, f64)>);

/// One block's parsed index plus the sizes of its chunk segments.
struct BlockIndex {
    reader: IndexReader,
    /// Size of `chunks/NNNNNN` by 0-based segment index.
    segments: Vec<u64>,
    bytes: u64,
}

#[derive(Default)]
struct IndexCache {
    entries: HashMap<Ulid, (Arc<BlockIndex>, u64)>,
    bytes: u64,
    tick: u64,
}

/// The bucket as a source of series.
pub struct BucketReader {
    bucket: Bucket,
    cache: Mutex<IndexCache>,
    cache_limit: u64,
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

/// The blocks of `metas` worth reading: not marked for deletion, raw resolution, and not
/// a source of another listed block with a superset of sources at a higher level (or with
/// strictly more sources).
pub fn visible_blocks(metas: Vec<(BlockMeta, bool)>) -> Vec<BlockMeta> {
    let live: Vec<BlockMeta> = metas
        .into_iter()
        .filter(|(m, deleted)| !deleted && resolution(m) == 0)
        .map(|(m, _)| m)
        .collect();
    let sources: Vec<HashSet<Ulid>> = live
        .iter()
        .map(|m| {
            let mut s: HashSet<Ulid> = m.compaction.sources.iter().copied().collect();
            if s.is_empty() {
                s.insert(m.ulid);
            }
            s
        })
        .collect();
    live.iter()
        .enumerate()
        .filter(|(i, b)| {
            !live.iter().enumerate().any(|(j, a)| {
                j != *i
                    && sources[*i].is_subset(&sources[j])
                    && (a.compaction.level > b.compaction.level
                        || sources[j].len() > sources[*i].len())
            })
        })
        .map(|(_, b)| b.clone())
        .collect()
}

fn resolution(m: &BlockMeta) -> i64 {
    m.thanos.as_ref().map_or(0, |t| t.downsample.resolution)
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
        BucketReader {
            bucket,
            cache: Mutex::new(IndexCache::default()),
            cache_limit,
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
    ) -> Result<Vec<BlockMeta>, String> {
        let listed = self.listing(tenant).await?;
        Ok(listed
            .iter()
            .filter(|m| m.max_time > mint && m.min_time <= maxt)
            .cloned()
            .collect())
    }

    async fn listing(&self, tenant: &str) -> Result<Arc<Vec<BlockMeta>>, String> {
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
            .map_err(|e| e.to_string())?;
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

    async fn index(&self, tenant: &str, meta: &BlockMeta) -> Result<Arc<BlockIndex>, String> {
        {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            c.tick += 1;
            let tick = c.tick;
            if let Some((idx, used)) = c.entries.get_mut(&meta.ulid) {
                *used = tick;
                return Ok(idx.clone());
            }
        }
        let dir = format!("{tenant}/{}", meta.ulid);
        let path = format!("{dir}/index");
        let (data, listing) = futures::future::join(
            self.bucket.get(&path),
            self.bucket.list(&format!("{dir}/chunks")),
        )
        .await;
        let data = data.map_err(|e| e.to_string())?;
        let listing = listing.map_err(|e| e.to_string())?;
        let reader = IndexReader::new(data, &path).map_err(|e| e.to_string())?;
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
                return Err(format!(
                    "block {dir}: chunk segment {} missing",
                    segment_file_name(segments.len() as u32)
                ));
            }
            segments.push(size);
        }
        let bytes = reader.size();
        let idx = Arc::new(BlockIndex {
            reader,
            segments,
            bytes,
        });
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.tick += 1;
        let tick = c.tick;
        if let Some((old, _)) = c.entries.insert(meta.ulid, (idx.clone(), tick)) {
            c.bytes -= old.bytes;
        }
        c.bytes += idx.bytes;
        while c.bytes > self.cache_limit && c.entries.len() > 1 {
            let Some((&victim, _)) = c
                .entries
                .iter()
                .filter(|(u, _)| **u != meta.ulid)
                .min_by_key(|(_, (_, used))| *used)
            else {
                break;
            };
            if let Some((old, _)) = c.entries.remove(&victim) {
                c.bytes -= old.bytes;
            }
        }
        Ok(idx)
    }

    /// Number of block indexes in the cache (for tests and metrics).
    pub fn cached_indexes(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// Series of the tenant's blocks matching `matchers` with data in `[mint, maxt]`, with
    /// external labels added; samples too unless `skip_chunks`. One entry per block and
    /// series: the caller merges.
    pub async fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
    ) -> Result<Vec<SeriesData>, String> {
        let blocks = self.blocks(tenant, mint, maxt).await?;
        let per_block = futures::future::join_all(
            blocks
                .iter()
                .map(|m| self.block_series(tenant, m, matchers, mint, maxt, skip_chunks)),
        )
        .await;
        let mut out = Vec::new();
        for r in per_block {
            out.extend(r?);
        }
        Ok(out)
    }

    async fn block_series(
        &self,
        tenant: &str,
        meta: &BlockMeta,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
    ) -> Result<Vec<SeriesData>, String> {
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
        let idx = self.index(tenant, meta).await?;
        let ir = &idx.reader;
        let refs = postings_for_matchers(ir, &local).map_err(|e| e.to_string())?;
        let mut series: Vec<(Labels, Vec<ChunkMeta>)> = Vec::new();
        for r in refs {
            let (labels, mut chunks) = ir.series(r).map_err(|e| e.to_string())?;
            chunks.retain(|c| c.overlaps(mint, maxt));
            if !chunks.is_empty() {
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
        let chunks = self.fetch_chunks(&dir, &idx.segments, wanted).await?;
        let mut out = Vec::with_capacity(series.len());
        for (labels, metas) in series {
            let mut samples = Vec::new();
            for c in &metas {
                let Some((enc, data)) = chunks.get(&c.chunk_ref) else {
                    return Err(format!("block {dir}: chunk {:#x} not fetched", c.chunk_ref));
                };
                if *enc != Encoding::Xor as u8 {
                    continue; // histogram chunks: not decodable to float samples
                }
                let mut it = XorIter::new(data);
                for (t, v) in it.by_ref() {
                    if t > maxt {
                        break;
                    }
                    if t >= mint {
                        samples.push((t, v));
                    }
                }
                if let Some(e) = it.err() {
                    return Err(format!(
                        "block {dir}: series {labels}: chunk {:#x}: {e}",
                        c.chunk_ref
                    ));
                }
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
    ) -> Result<HashMap<u64, RawChunk>, String> {
        refs.sort_unstable();
        refs.dedup();
        // Batch by segment: (segment, start, end, refs in it).
        let mut batches: Vec<(u32, u64, u64, Vec<u64>)> = Vec::new();
        for r in refs {
            let (seg, off) = unpack_ref(r);
            let off = u64::from(off);
            let Some(&size) = segments.get(seg as usize) else {
                return Err(format!(
                    "block {dir}: chunk {r:#x} in missing segment {}",
                    segment_file_name(seg)
                ));
            };
            if off >= size {
                return Err(format!(
                    "block {dir}: chunk {r:#x} beyond the end of segment {}",
                    segment_file_name(seg)
                ));
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
        let results: Vec<Result<Vec<(u64, RawChunk)>, String>> = futures::stream::iter(batches)
            .map(|(seg, start, end, refs)| async move {
                let path = format!("{dir}/chunks/{}", segment_file_name(seg));
                let buf = self
                    .bucket
                    .get_range(&path, start..end)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut got = Vec::with_capacity(refs.len());
                for r in refs {
                    let off = u64::from(unpack_ref(r).1);
                    let rel = (off - start) as usize;
                    let chunk = match parse_chunk(&buf[rel..], &path, off)? {
                        Parsed::Chunk(enc, range) => {
                            (enc, buf.slice(rel + range.start..rel + range.end))
                        }
                        Parsed::Needs(total) => {
                            let one = self
                                .bucket
                                .get_range(&path, off..off + total)
                                .await
                                .map_err(|e| e.to_string())?;
                            match parse_chunk(&one, &path, off)? {
                                Parsed::Chunk(enc, range) => (enc, one.slice(range)),
                                Parsed::Needs(_) => {
                                    return Err(format!("{path}: chunk at {off} is truncated"))
                                }
                            }
                        }
                    };
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
}

#[derive(Debug)]
enum Parsed {
    /// Encoding byte and the data's byte range in the buffer (CRC verified).
    Chunk(u8, std::ops::Range<usize>),
    /// The chunk needs this many bytes from its start.
    Needs(u64),
}

/// Parse `len uvarint | encoding | data | crc32c` at the start of `b`.
fn parse_chunk(b: &[u8], path: &str, off: u64) -> Result<Parsed, String> {
    let mut len: u64 = 0;
    let mut n = 0usize;
    loop {
        let Some(&byte) = b.get(n) else {
            return Ok(Parsed::Needs(n as u64 + 16));
        };
        if n >= 10 {
            return Err(format!("{path}: invalid chunk length at {off}"));
        }
        len |= u64::from(byte & 0x7f) << (7 * n);
        n += 1;
        if byte < 0x80 {
            break;
        }
    }
    let total = n as u64 + 1 + len + 4;
    if (b.len() as u64) < total {
        return Ok(Parsed::Needs(total));
    }
    let body = &b[n..n + 1 + len as usize];
    let crc = &b[n + body.len()..n + body.len() + 4];
    let want = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let got = crc32c::crc32c(body);
    if want != got {
        return Err(format!(
            "{path}: chunk at {off}: checksum mismatch: stored {want:08x}, computed {got:08x}"
        ));
    }
    Ok(Parsed::Chunk(body[0], n + 1..n + body.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tsdb::meta::{BlockMetaCompaction, ThanosDownsample, ThanosMeta};

    fn meta(ulid: Ulid, level: u32, sources: &[Ulid]) -> BlockMeta {
        let mut m = BlockMeta::new(ulid, 0, 1000);
        m.compaction = BlockMetaCompaction {
            level,
            sources: sources.to_vec(),
            ..Default::default()
        };
        m
    }

    #[test]
    fn compacted_block_hides_its_sources() {
        let (a, b, c, d) = (Ulid::new(), Ulid::new(), Ulid::new(), Ulid::new());
        let metas = vec![
            (meta(a, 1, &[a]), false),
            (meta(b, 1, &[b]), false),
            (meta(c, 2, &[a, b]), false),
            (meta(d, 1, &[d]), true),
        ];
        let v: Vec<Ulid> = visible_blocks(metas).iter().map(|m| m.ulid).collect();
        assert_eq!(v, vec![c]);

        // A compacted block marked for deletion no longer hides its sources.
        let metas = vec![(meta(a, 1, &[a]), false), (meta(c, 2, &[a, b]), true)];
        let v: Vec<Ulid> = visible_blocks(metas).iter().map(|m| m.ulid).collect();
        assert_eq!(v, vec![a]);
    }

    #[test]
    fn downsampled_blocks_are_not_read_as_raw() {
        let (a, b) = (Ulid::new(), Ulid::new());
        let mut down = meta(b, 1, &[a]);
        down.thanos = Some(ThanosMeta {
            downsample: ThanosDownsample {
                resolution: 300_000,
            },
            ..Default::default()
        });
        let v: Vec<Ulid> = visible_blocks(vec![(meta(a, 1, &[a]), false), (down, false)])
            .iter()
            .map(|m| m.ulid)
            .collect();
        assert_eq!(v, vec![a]);
    }

    #[test]
    fn chunk_parsing() {
        let data = [0u8, 1, 2, 3];
        let mut body = vec![Encoding::Xor as u8];
        body.extend_from_slice(&data);
        let mut b = vec![data.len() as u8];
        b.extend_from_slice(&body);
        b.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        match parse_chunk(&b, "x", 8).unwrap() {
            Parsed::Chunk(enc, r) => {
                assert_eq!(enc, Encoding::Xor as u8);
                assert_eq!(&b[r], &data);
            }
            Parsed::Needs(_) => panic!("complete"),
        }
        assert!(matches!(
            parse_chunk(&b[..5], "x", 8).unwrap(),
            Parsed::Needs(10)
        ));
        b[3] ^= 1;
        assert!(parse_chunk(&b, "x", 8).unwrap_err().contains("checksum"));
    }
}
