//! Prometheus TSDB blocks on disk: [`BlockWriter`] builds one, [`Block`] reads one,
//! [`open_blocks`] finds every block in a directory and [`merged_series`] reads series
//! across blocks the way `promtool tsdb dump` prints them.
//!
//! ```text
//! <parent>/<ULID>/
//!   chunks/000001 ...   XOR chunks (see `chunks`)
//!   index               index v2 (see `index`)
//!   tombstones          deleted intervals (see `tombstones`)
//!   meta.json           (see `meta`)
//! ```
//!
//! A block is written into `<parent>/<ULID>.tmp-for-creation` and renamed into place
//! once every file is fsynced, as Prometheus does, so a crash never leaves a half-written
//! block under its final name.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use ulid::Ulid;

use crate::chunkenc::{EncodedChunk, Encoding, XorIter};
use crate::chunks::{segment_file_name, unpack_ref, ChunkReader, ChunkWriter};
use crate::error::{Error, Result};
use crate::index::{ChunkMeta, IndexReader, IndexWriter, INDEX_FILENAME};
use crate::labels::{Interner, Label, Labels};
use crate::matcher::Matcher;
use crate::meta::{sync_dir, BlockMeta, BlockMetaCompaction, BlockStats, ThanosMeta};
use crate::postings::postings_for_matchers;
use crate::tombstones::{is_deleted, Tombstones};

/// A series' labels with its samples `(timestamp ms, value)` in time order.
pub type SeriesSamples = (Labels, Vec<(i64, f64)>);

/// The chunks directory inside a block.
pub const CHUNKS_DIRNAME: &str = "chunks";
/// Suffix of the directory a block is built in before it is renamed into place.
pub const TMP_CREATION_SUFFIX: &str = ".tmp-for-creation";

/// Optional overrides for the `meta.json` a [`BlockWriter`] produces.
#[derive(Debug, Clone, Default)]
pub struct MetaExtra {
    /// Block start (inclusive); default: the earliest chunk's first timestamp.
    pub min_time: Option<i64>,
    /// Block end (exclusive); default: the latest chunk's last timestamp + 1.
    pub max_time: Option<i64>,
    /// Default: level 1, sources = [the block's ULID].
    pub compaction: Option<BlockMetaCompaction>,
    pub thanos: Option<ThanosMeta>,
}

/// Builds a block: chunks stream to `chunks/` as series are added, only label sets and
/// chunk metas stay in memory; [`finish`](Self::finish) sorts the series and writes the
/// index, tombstones and meta.json.
pub struct BlockWriter {
    parent: PathBuf,
    ulid: Ulid,
    tmp: PathBuf,
    chunks: Option<ChunkWriter>,
    series: Vec<(Labels, Vec<ChunkMeta>)>,
    interner: Interner,
    stats: BlockStats,
    min_time: i64,
    max_time: i64,
    done: bool,
}

impl std::fmt::Debug for BlockWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockWriter")
            .field("dir", &self.tmp)
            .field("series", &self.series.len())
            .finish_non_exhaustive()
    }
}

fn chunk_samples(c: &EncodedChunk) -> u64 {
    if c.encoding == Encoding::Aggr {
        return crate::downsample::aggr_num_samples(&c.data) as u64;
    }
    // Every Prometheus chunk encoding starts with its sample count, 2 bytes BE.
    match c.data.as_slice() {
        [a, b, ..] => u64::from(u16::from_be_bytes([*a, *b])),
        _ => 0,
    }
}

impl BlockWriter {
    /// Start block `ulid` under `parent` (created if missing).
    pub fn new(parent: &Path, ulid: Ulid) -> Result<Self> {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let tmp = parent.join(format!("{ulid}{TMP_CREATION_SUFFIX}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        let cdir = tmp.join(CHUNKS_DIRNAME);
        fs::create_dir_all(&cdir).map_err(|e| Error::io(&cdir, e))?;
        let chunks = ChunkWriter::create(&cdir)?;
        Ok(BlockWriter {
            parent: parent.to_path_buf(),
            ulid,
            tmp,
            chunks: Some(chunks),
            series: Vec::new(),
            interner: Interner::new(),
            stats: BlockStats::default(),
            min_time: i64::MAX,
            max_time: i64::MIN,
            done: false,
        })
    }

    pub fn ulid(&self) -> Ulid {
        self.ulid
    }

    /// Add a series with its chunks (in any order of series; chunks of one series must
    /// not overlap in time). A series added twice has its chunks combined. A series with
    /// no chunks is skipped, as Prometheus does.
    pub fn add_series(&mut self, labels: Labels, mut chunks: Vec<EncodedChunk>) -> Result<()> {
        if labels.is_empty() {
            return Err(Error::Invalid("cannot add a series without labels".into()));
        }
        if chunks.is_empty() {
            return Ok(());
        }
        chunks.sort_by_key(|c| c.min_time);
        for (i, c) in chunks.iter().enumerate() {
            if c.max_time < c.min_time || (i > 0 && c.min_time <= chunks[i - 1].max_time) {
                return Err(Error::Invalid(format!(
                    "series {labels}: chunk [{}, {}] overlaps or is inverted",
                    c.min_time, c.max_time
                )));
            }
        }
        let w = self.chunks.as_mut().expect("writer is live until finish");
        let mut metas = Vec::with_capacity(chunks.len());
        for c in &chunks {
            let r = w.write(c.encoding, &c.data)?;
            metas.push(ChunkMeta::new(c.min_time, c.max_time, r));
            let n = chunk_samples(c);
            self.stats.num_samples += n;
            match c.encoding {
                Encoding::Xor => self.stats.num_float_samples += n,
                Encoding::Histogram | Encoding::FloatHistogram => {
                    self.stats.num_histogram_samples += n
                }
                Encoding::None | Encoding::Aggr => {}
            }
            self.min_time = self.min_time.min(c.min_time);
            self.max_time = self.max_time.max(c.max_time);
        }
        self.stats.num_chunks += metas.len() as u64;
        let interned: Vec<Label> = labels
            .iter()
            .map(|l| Label {
                name: self.interner.intern(&l.name),
                value: self.interner.intern(&l.value),
            })
            .collect();
        self.series
            .push((Labels::from_sorted_unchecked(interned), metas));
        Ok(())
    }

    /// Series added so far (before merging repeats).
    pub fn num_series(&self) -> usize {
        self.series.len()
    }

    /// Write index, tombstones and meta.json, fsync, and rename the block into
    /// `<parent>/<ulid>`. Returns the meta written.
    pub fn finish(mut self, extra: Option<MetaExtra>) -> Result<BlockMeta> {
        let extra = extra.unwrap_or_default();
        let (data_min, data_max) = if self.stats.num_chunks == 0 {
            (0, -1)
        } else {
            (self.min_time, self.max_time)
        };
        let min_time = extra.min_time.unwrap_or(data_min);
        let max_time = extra.max_time.unwrap_or(data_max.saturating_add(1));
        if self.stats.num_chunks > 0 && (data_min < min_time || data_max >= max_time) {
            return Err(Error::Invalid(format!(
                "block range [{min_time}, {max_time}) does not hold its data [{data_min}, {data_max}]"
            )));
        }
        if max_time < min_time {
            return Err(Error::Invalid(format!(
                "block maxTime {max_time} before minTime {min_time}"
            )));
        }

        self.chunks
            .take()
            .expect("writer is live until finish")
            .finish()?;

        // Sort (stable: repeats keep their add order) and combine repeated series.
        let mut series = std::mem::take(&mut self.series);
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let mut merged: Vec<(Labels, Vec<ChunkMeta>)> = Vec::with_capacity(series.len());
        for (l, c) in series {
            match merged.last_mut() {
                Some((pl, pc)) if *pl == l => {
                    pc.extend(c);
                    pc.sort_by_key(|m| m.min_time);
                }
                _ => merged.push((l, c)),
            }
        }
        self.stats.num_series = merged.len() as u64;

        let syms: BTreeSet<&str> = merged
            .iter()
            .flat_map(|(l, _)| l.iter().flat_map(|l| [&*l.name, &*l.value]))
            .collect();
        let ipath = self.tmp.join(INDEX_FILENAME);
        let mut iw = IndexWriter::create(&ipath, syms)?;
        for (l, c) in &merged {
            iw.add_series(l, c)?;
        }
        iw.finish_file()?;
        drop(merged);

        Tombstones::new().write(&self.tmp)?;

        let mut meta = BlockMeta::new(self.ulid, min_time, max_time);
        meta.stats = self.stats.clone();
        if let Some(c) = extra.compaction {
            meta.compaction = c;
        }
        meta.thanos = extra.thanos;
        meta.write(&self.tmp)?;
        sync_dir(&self.tmp)?;

        let dest = self.parent.join(self.ulid.to_string());
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
        }
        fs::rename(&self.tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        self.done = true;
        sync_dir(&self.parent)?;
        Ok(meta)
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if !self.done {
            drop(self.chunks.take());
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A series selected from a block: its reference, labels and the chunks that overlap the
/// queried range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesChunks {
    pub series_ref: u64,
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
}

/// An open block: meta, mapped index, chunk segments and tombstones.
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: IndexReader,
    chunks: ChunkReader,
    tombstones: Tombstones,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("dir", &self.dir)
            .field("ulid", &self.meta.ulid.to_string())
            .field("min_time", &self.meta.min_time)
            .field("max_time", &self.meta.max_time)
            .finish_non_exhaustive()
    }
}

impl Block {
    /// Open the block in `dir`.
    pub fn open(dir: &Path) -> Result<Block> {
        Self::open_with_meta(dir, BlockMeta::read(dir)?)
    }

    /// [`open`](Self::open) with `meta` already read from `dir`.
    fn open_with_meta(dir: &Path, meta: BlockMeta) -> Result<Block> {
        let index = IndexReader::open(&dir.join(INDEX_FILENAME))?;
        let chunks = ChunkReader::open(&dir.join(CHUNKS_DIRNAME))?;
        let tombstones = Tombstones::read(dir)?;
        Ok(Block::from_parts(
            dir.to_path_buf(),
            meta,
            index,
            chunks,
            tombstones,
        ))
    }

    /// Assemble a block from parts read elsewhere (e.g. object storage); `dir` names it
    /// in errors.
    pub fn from_parts(
        dir: PathBuf,
        meta: BlockMeta,
        index: IndexReader,
        chunks: ChunkReader,
        tombstones: Tombstones,
    ) -> Block {
        Block {
            dir,
            meta,
            index,
            chunks,
            tombstones,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    pub fn index(&self) -> &IndexReader {
        &self.index
    }

    pub fn chunks(&self) -> &ChunkReader {
        &self.chunks
    }

    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// Series matching `matchers` (all series for none) in label order, each with the
    /// chunks overlapping `[mint, maxt]` (inclusive) that tombstones do not wholly
    /// delete. Series left without chunks are skipped.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Select<'_>> {
        let refs = if mint > maxt || maxt < self.meta.min_time || mint >= self.meta.max_time {
            Vec::new()
        } else {
            postings_for_matchers(&self.index, matchers)?
        };
        Ok(Select {
            block: self,
            refs: refs.into_iter(),
            mint,
            maxt,
        })
    }

    /// The samples of a selected series in `[mint, maxt]`, tombstones applied.
    /// Only float (XOR) chunks can be decoded; other encodings are an error.
    pub fn samples(&self, s: &SeriesChunks, mint: i64, maxt: i64) -> Result<Vec<(i64, f64)>> {
        let dels = self.tombstones.get(s.series_ref);
        let mut out = Vec::new();
        for c in &s.chunks {
            let (enc, data) = self.chunks.chunk(c.chunk_ref)?;
            if enc != Encoding::Xor {
                return Err(Error::Invalid(format!(
                    "block {}: series {}: {} chunks cannot be decoded to float samples",
                    self.dir.display(),
                    s.labels,
                    enc
                )));
            }
            let mut it = XorIter::new(data);
            for (t, v) in it.by_ref() {
                if t > maxt {
                    break;
                }
                if t < mint || is_deleted(dels, t) {
                    continue;
                }
                out.push((t, v));
            }
            if let Some(e) = it.err() {
                let (seg, off) = unpack_ref(c.chunk_ref);
                return Err(Error::corrupt(
                    self.dir.join(CHUNKS_DIRNAME).join(segment_file_name(seg)),
                    u64::from(off),
                    format!("series {}: chunk data: {e}", s.labels),
                ));
            }
        }
        Ok(out)
    }

    /// The histogram samples of a selected series in `[mint, maxt]` as float
    /// histograms, tombstones applied; float (XOR) chunks are skipped. Integer histogram
    /// chunks are converted as Prometheus's `AtFloatHistogram` does.
    pub fn histograms(
        &self,
        s: &SeriesChunks,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(i64, crate::histogram::FloatHistogram)>> {
        let dels = self.tombstones.get(s.series_ref);
        let mut out = Vec::new();
        for c in &s.chunks {
            let (enc, data) = self.chunks.chunk(c.chunk_ref)?;
            if !matches!(enc, Encoding::Histogram | Encoding::FloatHistogram) {
                continue;
            }
            let start = out.len();
            let r = crate::histogram::decode_chunk_float(enc, data, &mut out);
            let mut i = 0usize;
            out.retain(|(t, _)| {
                i += 1;
                i <= start || (*t >= mint && *t <= maxt && !is_deleted(dels, *t))
            });
            if let Err(e) = r {
                let (seg, off) = unpack_ref(c.chunk_ref);
                return Err(Error::corrupt(
                    self.dir.join(CHUNKS_DIRNAME).join(segment_file_name(seg)),
                    u64::from(off),
                    format!("series {}: histogram chunk data: {e}", s.labels),
                ));
            }
        }
        Ok(out)
    }

    /// Every matching series with its samples in `[mint, maxt]`, tombstones applied;
    /// series with no samples left are skipped.
    pub fn series_samples(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>> {
        let mut out = Vec::new();
        for s in self.select(matchers, mint, maxt)? {
            let s = s?;
            let samples = self.samples(&s, mint, maxt)?;
            if !samples.is_empty() {
                out.push((s.labels, samples));
            }
        }
        Ok(out)
    }
}

/// The iterator [`Block::select`] returns.
pub struct Select<'a> {
    block: &'a Block,
    refs: std::vec::IntoIter<u64>,
    mint: i64,
    maxt: i64,
}

impl Iterator for Select<'_> {
    type Item = Result<SeriesChunks>;

    fn next(&mut self) -> Option<Self::Item> {
        for r in self.refs.by_ref() {
            let (labels, mut chunks) = match self.block.index.series(r) {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            let dels = self.block.tombstones.get(r);
            chunks.retain(|c| {
                c.overlaps(self.mint, self.maxt)
                    && !dels.iter().any(|iv| iv.covers(c.min_time, c.max_time))
            });
            if chunks.is_empty() {
                continue;
            }
            return Some(Ok(SeriesChunks {
                series_ref: r,
                labels,
                chunks,
            }));
        }
        None
    }
}

/// Open every block directory (`<ULID>/`) in `dir`, skipping temporary directories
/// (`*.tmp*`) and names that are not ULIDs; sorted by minTime, then ULID. A ULID
/// directory without a readable `meta.json` is an error naming it.
pub fn open_blocks(dir: &Path) -> Result<Vec<Block>> {
    open_blocks_where(dir, |_| true)
}

/// [`open_blocks`] for the blocks whose `meta.json` `keep` accepts: the others are not
/// opened (a query that needs one block of many reads one index, not all of them).
pub fn open_blocks_where(dir: &Path, keep: impl Fn(&BlockMeta) -> bool) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.contains(".tmp") || name.parse::<Ulid>().is_err() {
            continue;
        }
        let path = e.path();
        // A block directory without meta.json is damage to report, not to skip: a
        // silent skip would make `tools tsdb dump` print less than the data holds.
        if !path.is_dir() {
            continue;
        }
        let meta = BlockMeta::read(&path)?;
        if keep(&meta) {
            out.push(Block::open_with_meta(&path, meta)?);
        }
    }
    out.sort_by_key(|b| (b.meta.min_time, b.meta.ulid));
    Ok(out)
}

/// Opened blocks of one directory, kept between queries. A block directory is immutable
/// once renamed into place, so an entry stays valid until its directory disappears;
/// reopening every block per query (meta.json parsed, index and chunks mapped) was a
/// tenth of a small query's CPU.
#[derive(Default)]
pub struct BlockCache {
    open: std::sync::Mutex<std::collections::HashMap<Ulid, std::sync::Arc<Block>>>,
}

impl BlockCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`open_blocks_where`] answered from the cache: blocks listed in `dir` and not yet
    /// cached are opened, cached blocks no longer listed are dropped (unmapped).
    pub fn blocks_where(
        &self,
        dir: &Path,
        keep: impl Fn(&BlockMeta) -> bool,
    ) -> Result<Vec<std::sync::Arc<Block>>> {
        let mut listed = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let e = e.map_err(|e| Error::io(dir, e))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.contains(".tmp") {
                continue;
            }
            let Ok(u) = name.parse::<Ulid>() else {
                continue;
            };
            listed.push((u, e.path()));
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|u, _| listed.iter().any(|(l, _)| l == u));
        let mut out = Vec::new();
        for (u, path) in listed {
            let b = match open.get(&u) {
                Some(b) => b.clone(),
                None => {
                    if !path.is_dir() {
                        continue;
                    }
                    let b = std::sync::Arc::new(Block::open(&path)?);
                    open.insert(u, b.clone());
                    b
                }
            };
            if keep(&b.meta) {
                out.push(b);
            }
        }
        drop(open);
        out.sort_by_key(|b| (b.meta.min_time, b.meta.ulid));
        Ok(out)
    }

    /// Drop the block `ulid` (before its directory is removed, so its files are
    /// unmapped).
    pub fn forget(&self, ulid: Ulid) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ulid);
    }

    /// How many blocks are open.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Series across `blocks`, in label order, each with its samples from every block merged
/// in timestamp order. On equal timestamps the sample of the block earlier in `blocks`
/// wins (pass them sorted by minTime, as [`open_blocks`] returns them).
pub struct MergedSeries<'a> {
    blocks: &'a [Block],
    iters: Vec<Select<'a>>,
    heads: Vec<Option<SeriesChunks>>,
    mint: i64,
    maxt: i64,
    failed: bool,
}

/// Streaming form of [`merged_series`]: one block series read ahead per block.
pub fn merged_series_iter<'a>(
    blocks: &'a [Block],
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
) -> Result<MergedSeries<'a>> {
    let iters = blocks
        .iter()
        .map(|b| b.select(matchers, mint, maxt))
        .collect::<Result<Vec<_>>>()?;
    let heads = (0..blocks.len()).map(|_| None).collect();
    Ok(MergedSeries {
        blocks,
        iters,
        heads,
        mint,
        maxt,
        failed: false,
    })
}

/// Every series matching `matchers` across `blocks` with samples in `[mint, maxt]`
/// (tombstones applied), sorted by labels, samples merged and de-duplicated by
/// timestamp: what `tools tsdb dump` prints.
pub fn merged_series(
    blocks: &[Block],
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
) -> Result<Vec<SeriesSamples>> {
    merged_series_iter(blocks, matchers, mint, maxt)?.collect()
}

impl Iterator for MergedSeries<'_> {
    type Item = Result<SeriesSamples>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            for (i, it) in self.iters.iter_mut().enumerate() {
                if self.heads[i].is_none() {
                    match it.next() {
                        Some(Ok(s)) => self.heads[i] = Some(s),
                        Some(Err(e)) => {
                            self.failed = true;
                            return Some(Err(e));
                        }
                        None => {}
                    }
                }
            }
            let min = self
                .heads
                .iter()
                .flatten()
                .map(|s| &s.labels)
                .min()?
                .clone();
            let mut runs: Vec<Vec<(i64, f64)>> = Vec::new();
            for i in 0..self.heads.len() {
                if self.heads[i].as_ref().is_some_and(|s| s.labels == min) {
                    let s = self.heads[i].take().expect("checked");
                    match self.blocks[i].samples(&s, self.mint, self.maxt) {
                        Ok(v) => runs.push(v),
                        Err(e) => {
                            self.failed = true;
                            return Some(Err(e));
                        }
                    }
                }
            }
            let samples = merge_samples(runs);
            if !samples.is_empty() {
                return Some(Ok((min, samples)));
            }
        }
    }
}

/// Merge sorted sample runs by timestamp; on equal timestamps the earlier run wins.
fn merge_samples(mut runs: Vec<Vec<(i64, f64)>>) -> Vec<(i64, f64)> {
    runs.retain(|r| !r.is_empty());
    if runs.len() == 1 {
        return runs.pop().expect("one run");
    }
    let mut all: Vec<(i64, f64)> = runs.into_iter().flatten().collect();
    all.sort_by_key(|s| s.0); // stable: earlier runs first among equals
    all.dedup_by_key(|s| s.0);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkenc::ChunkCutter;
    use crate::matcher::MatchOp;
    use crate::tombstones::Interval;
    use std::collections::BTreeMap;

    const STEP: i64 = 15_000;
    const RANGE: i64 = 2 * 3600 * 1000;

    type Model = BTreeMap<Labels, Vec<(i64, f64)>>;

    fn labels_for(i: usize) -> Labels {
        let mut p = vec![
            (
                "__name__".to_string(),
                ["cpu", "mem", "disk"][i % 3].to_string(),
            ),
            ("instance".to_string(), format!("host-{:03}", i % 50)),
            ("job".to_string(), ["node", "app"][i % 2].to_string()),
            ("series".to_string(), format!("{i}")),
        ];
        if i.is_multiple_of(5) {
            p.push(("env".into(), "prod".into()));
        }
        Labels::from_pairs(p)
    }

    fn samples_for(i: usize, start: i64, n: usize) -> Vec<(i64, f64)> {
        (0..n)
            .map(|k| {
                (
                    start + k as i64 * STEP + i as i64,
                    (i * 1000 + k) as f64 * 0.5,
                )
            })
            .collect()
    }

    fn encode(samples: &[(i64, f64)]) -> Vec<EncodedChunk> {
        let mut c = ChunkCutter::new(RANGE);
        for (t, v) in samples {
            assert!(c.append(*t, *v));
        }
        c.finish()
    }

    /// Write a block of `n` series (added in reverse order) with `per` samples each.
    fn write_block(parent: &Path, n: usize, start: i64, per: usize) -> (BlockMeta, Model) {
        let mut model = Model::new();
        let mut w = BlockWriter::new(parent, Ulid::new()).unwrap();
        for i in (0..n).rev() {
            let s = samples_for(i, start, per);
            w.add_series(labels_for(i), encode(&s)).unwrap();
            model.insert(labels_for(i), s);
        }
        (w.finish(None).unwrap(), model)
    }

    fn brute(
        model: &Model,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<(Labels, Vec<(i64, f64)>)> {
        model
            .iter()
            .filter(|(l, _)| ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
            .map(|(l, s)| {
                (
                    l.clone(),
                    s.iter()
                        .filter(|(t, _)| *t >= mint && *t <= maxt)
                        .copied()
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }

    fn m(op: MatchOp, n: &str, v: &str) -> Matcher {
        Matcher::new(op, n, v).unwrap()
    }

    #[test]
    fn readers_are_shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Block>();
        send_sync::<IndexReader>();
        send_sync::<Tombstones>();
    }

    #[test]
    fn round_trip_1000_series_every_matcher_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, model) = write_block(dir.path(), 1000, 1_000_000, 240);
        let bdir = dir.path().join(meta.ulid.to_string());

        // Layout and meta.
        assert!(bdir.join("chunks/000001").is_file());
        assert!(bdir.join("index").is_file());
        assert!(bdir.join("tombstones").is_file());
        assert!(bdir.join("meta.json").is_file());
        assert!(!dir
            .path()
            .join(format!("{}{TMP_CREATION_SUFFIX}", meta.ulid))
            .exists());
        assert_eq!(meta.stats.num_series, 1000);
        assert_eq!(meta.stats.num_samples, 240_000);
        assert_eq!(meta.stats.num_float_samples, 240_000);
        assert!(meta.stats.num_chunks >= 2000);
        assert_eq!(meta.min_time, 1_000_000);
        assert_eq!(meta.max_time, 1_000_000 + 239 * STEP + 999 + 1);
        assert_eq!(meta.compaction.level, 1);
        assert_eq!(meta.compaction.sources, vec![meta.ulid]);

        let b = Block::open(&bdir).unwrap();
        assert_eq!(b.meta(), &meta);
        assert_eq!(b.index().label_values("job").unwrap(), vec!["app", "node"]);

        let all_time = (i64::MIN, i64::MAX);
        let cases: Vec<(Vec<Matcher>, (i64, i64))> = vec![
            (vec![m(MatchOp::Equal, "__name__", "cpu")], all_time),
            (vec![m(MatchOp::NotEqual, "job", "node")], all_time),
            (
                vec![m(MatchOp::RegexMatch, "instance", "host-00[1-3]")],
                all_time,
            ),
            (
                vec![m(MatchOp::RegexMatch, "series", "1|22|333|nope")],
                all_time,
            ),
            (
                vec![
                    m(MatchOp::Equal, "__name__", "mem"),
                    m(MatchOp::RegexNoMatch, "instance", "host-0.*"),
                ],
                all_time,
            ),
            (
                vec![
                    m(MatchOp::Equal, "env", ""),
                    m(MatchOp::Equal, "job", "app"),
                ],
                all_time,
            ),
            (
                vec![m(MatchOp::NotEqual, "env", "")],
                (1_500_000, 2_000_000),
            ),
            (
                vec![m(MatchOp::Equal, "__name__", "disk")],
                (1_000_000 + 100 * STEP, 1_000_000 + 130 * STEP),
            ),
            (vec![m(MatchOp::Equal, "__name__", "nope")], all_time),
            (vec![], (0, 1_000_000)),
        ];
        for (ms, (mint, maxt)) in &cases {
            let want = brute(&model, ms, *mint, *maxt);
            let got = b.series_samples(ms, *mint, *maxt).unwrap();
            assert_eq!(got.len(), want.len(), "{ms:?}");
            assert_eq!(got, want, "{ms:?} [{mint}, {maxt}]");
            // select() prunes chunks to the range.
            for s in b.select(ms, *mint, *maxt).unwrap() {
                let s = s.unwrap();
                assert!(s.chunks.iter().all(|c| c.overlaps(*mint, *maxt)));
            }
        }
        assert_eq!(
            b.series_samples(&[], i64::MIN, i64::MAX).unwrap().len(),
            1000
        );
        let one = b
            .series_samples(&cases[7].0, cases[7].1 .0, cases[7].1 .1)
            .unwrap();
        assert!(!one.is_empty() && one.iter().all(|(_, s)| s.len() <= 31));
    }

    #[test]
    fn repeated_series_are_combined_and_bad_input_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BlockWriter::new(dir.path(), Ulid::new()).unwrap();
        let l = labels_for(1);
        let s = samples_for(1, 0, 300);
        w.add_series(l.clone(), encode(&s[150..])).unwrap();
        w.add_series(l.clone(), encode(&s[..150])).unwrap();
        w.add_series(labels_for(2), vec![]).unwrap(); // skipped
        assert!(w.add_series(Labels::new(), encode(&s)).is_err());
        let mut overlapping = encode(&s[..10]);
        overlapping.extend(encode(&s[5..20]));
        assert!(w.add_series(labels_for(3), overlapping).is_err());
        let meta = w.finish(None).unwrap();
        assert_eq!(meta.stats.num_series, 1);
        let b = Block::open(&dir.path().join(meta.ulid.to_string())).unwrap();
        let got = b.series_samples(&[], i64::MIN, i64::MAX).unwrap();
        assert_eq!(got, vec![(l, s)]);
    }

    #[test]
    fn meta_extra_is_written_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = samples_for(0, 7_200_000, 10);
        let mut w = BlockWriter::new(dir.path(), Ulid::new()).unwrap();
        w.add_series(labels_for(0), encode(&s)).unwrap();
        let extra = MetaExtra {
            min_time: Some(7_200_000),
            max_time: Some(14_400_000),
            compaction: None,
            thanos: Some(ThanosMeta {
                labels: [("replica".to_string(), "a".to_string())].into(),
                source: "sidecar".into(),
                ..Default::default()
            }),
        };
        let meta = w.finish(Some(extra)).unwrap();
        let back = BlockMeta::read(&dir.path().join(meta.ulid.to_string())).unwrap();
        assert_eq!(back.max_time, 14_400_000);
        assert_eq!(back.thanos.unwrap().labels["replica"], "a");

        let mut w = BlockWriter::new(dir.path(), Ulid::new()).unwrap();
        let tmp = w.tmp.clone();
        w.add_series(labels_for(0), encode(&s)).unwrap();
        let bad = MetaExtra {
            max_time: Some(7_200_001),
            ..Default::default()
        };
        assert!(w.finish(Some(bad)).is_err());
        assert!(!tmp.exists(), "failed block's tmp dir is removed");
    }

    #[test]
    fn tombstones_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, model) = write_block(dir.path(), 30, 0, 240);
        let bdir = dir.path().join(meta.ulid.to_string());
        let b = Block::open(&bdir).unwrap();
        let l0 = labels_for(0);
        let l1 = labels_for(1);
        let r0 = postings_for_matchers(b.index(), &[m(MatchOp::Equal, "series", "0")]).unwrap()[0];
        let r1 = postings_for_matchers(b.index(), &[m(MatchOp::Equal, "series", "1")]).unwrap()[0];
        let mut t = Tombstones::new();
        t.add(r0, Interval::new(10 * STEP, 20 * STEP)); // samples 10..=20 of series 0
        t.add(r1, Interval::new(i64::MIN, i64::MAX)); // all of series 1
        t.write(&bdir).unwrap();
        drop(b);

        let b = Block::open(&bdir).unwrap();
        assert_eq!(b.tombstones().total(), 2);
        let got: BTreeMap<Labels, Vec<(i64, f64)>> = b
            .series_samples(&[], i64::MIN, i64::MAX)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(got.len(), 29);
        assert!(!got.contains_key(&l1));
        let want0: Vec<(i64, f64)> = model[&l0]
            .iter()
            .filter(|(t, _)| !(10 * STEP..=20 * STEP).contains(t))
            .copied()
            .collect();
        assert_eq!(got[&l0], want0);
        assert_eq!(got[&l0].len(), 240 - 11);
        // Fully deleted series have no chunks in select().
        let sel: Vec<_> = b
            .select(&[m(MatchOp::Equal, "series", "1")], i64::MIN, i64::MAX)
            .unwrap()
            .collect();
        assert!(sel.is_empty());
    }

    #[test]
    fn corruption_and_missing_files_give_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, _) = write_block(dir.path(), 50, 0, 10);
        let bdir = dir.path().join(meta.ulid.to_string());
        let ipath = bdir.join("index");
        let orig = fs::read(&ipath).unwrap();

        // Flipped byte in the first series: CRC mismatch naming index and the offset.
        let first_series = {
            let r = IndexReader::new(bytes::Bytes::from(orig.clone()), &ipath).unwrap();
            r.all_postings().unwrap()[0] * 16
        };
        let mut bad = orig.clone();
        bad[first_series as usize + 2] ^= 0x08;
        fs::write(&ipath, &bad).unwrap();
        let b = Block::open(&bdir).unwrap();
        let e = b.series_samples(&[], i64::MIN, i64::MAX).unwrap_err();
        match &e {
            Error::Corrupt {
                file,
                offset,
                reason,
            } => {
                assert_eq!(file, &ipath);
                assert_eq!(*offset, first_series);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        drop(b);

        // Truncated index: open fails, naming the file.
        fs::write(&ipath, &orig[..orig.len() - 10]).unwrap();
        let e = Block::open(&bdir).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&*ipath.to_string_lossy()), "{e}");
        fs::write(&ipath, b"").unwrap();
        let e = Block::open(&bdir).unwrap_err();
        assert!(e.to_string().contains("index"), "{e}");
        fs::write(&ipath, &orig).unwrap();
        Block::open(&bdir).unwrap();

        // Missing meta.json.
        fs::remove_file(bdir.join("meta.json")).unwrap();
        let e = Block::open(&bdir).unwrap_err();
        assert!(
            e.to_string()
                .contains(&*bdir.join("meta.json").to_string_lossy()),
            "{e}"
        );
        // A directory that is not there at all.
        let e = Block::open(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("meta.json"), "{e}");
    }

    fn dump_lines(series: &[(Labels, Vec<(i64, f64)>)]) -> Vec<String> {
        let mut out = Vec::new();
        for (l, s) in series {
            for (t, v) in s {
                out.push(format!("{l} {} {t}", crate::labels::go_format_g(*v)));
            }
        }
        out
    }

    fn promtool(args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("promtool")
            .args(args)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "promtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8(out.stdout).unwrap())
    }

    /// Our blocks through the real promtool, and promtool's blocks through our reader.
    /// Skipped when `promtool` is not on PATH.
    #[test]
    fn promtool_interop() {
        if std::process::Command::new("promtool")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("promtool not found; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours");
        let (meta, model) = write_block(&ours, 60, 1_600_000_000_000, 300);
        // promtool 2.x's dump opens the directory as a DB and wants a WAL directory.
        fs::create_dir_all(ours.join("wal")).unwrap();
        let dump = promtool(&["tsdb", "dump", ours.to_str().unwrap()]).unwrap();
        let want: Vec<(Labels, Vec<(i64, f64)>)> = model.into_iter().collect();
        assert_eq!(dump.lines().collect::<Vec<_>>(), dump_lines(&want));
        let list = promtool(&["tsdb", "list", ours.to_str().unwrap()]).unwrap();
        assert!(
            list.contains(&meta.ulid.to_string()) && list.contains("18000"),
            "{list}"
        );
        let ulid = meta.ulid.to_string();
        let analyze = promtool(&["tsdb", "analyze", ours.to_str().unwrap(), &ulid]).unwrap();
        assert!(
            analyze.contains("Series: 60")
                && analyze.contains("Postings (unique label pairs): 116"),
            "{analyze}"
        );

        // promtool's blocks, read by us.
        let mut om = String::new();
        om.push_str("# HELP http_requests Requests.\n# TYPE http_requests counter\n");
        for k in 0..500 {
            let t = 1_600_000_000 + k * 30;
            om.push_str(&format!(
                "http_requests_total{{code=\"200\",path=\"/a\\\"b\"}} {} {t}\n",
                k as f64 * 1.5
            ));
            if k % 3 == 0 {
                om.push_str(&format!("http_requests_total{{code=\"500\"}} {k} {t}.5\n"));
            }
        }
        om.push_str("# EOF\n");
        let omf = dir.path().join("in.om");
        fs::write(&omf, om).unwrap();
        let theirs = dir.path().join("theirs");
        promtool(&[
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            omf.to_str().unwrap(),
            theirs.to_str().unwrap(),
        ])
        .unwrap();
        let blocks = open_blocks(&theirs).unwrap();
        assert!(!blocks.is_empty());
        let got = merged_series(&blocks, &[], i64::MIN, i64::MAX).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got.iter().map(|s| s.1.len()).sum::<usize>(), 500 + 167);
        fs::create_dir_all(theirs.join("wal")).unwrap();
        let dump = promtool(&["tsdb", "dump", theirs.to_str().unwrap()]).unwrap();
        assert_eq!(dump.lines().collect::<Vec<_>>(), dump_lines(&got));
        let sel = merged_series(
            &blocks,
            &[Matcher::new(MatchOp::RegexMatch, "path", "/a.*").unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .unwrap();
        assert_eq!(sel.len(), 1);
        assert_eq!(sel[0].1.len(), 500);
        assert_eq!(sel[0].1[2], (1_600_000_060_000, 3.0));
    }

    #[test]
    fn open_blocks_and_merged_series() {
        let dir = tempfile::tempdir().unwrap();
        // Block B (later) written first; A overlaps B's start with different values at
        // equal timestamps to show which wins.
        let (mb, _) = write_block(dir.path(), 20, 100 * STEP, 100);
        let mut model_a = Model::new();
        let mut w = BlockWriter::new(dir.path(), Ulid::new()).unwrap();
        for i in 0..25 {
            let s: Vec<(i64, f64)> = samples_for(i, 0, 110)
                .into_iter()
                .map(|(t, v)| (t, -v))
                .collect();
            w.add_series(labels_for(i), encode(&s)).unwrap();
            model_a.insert(labels_for(i), s);
        }
        let ma = w.finish(None).unwrap();
        // Noise the scan must skip.
        fs::create_dir_all(
            dir.path()
                .join("01ARZ3NDEKTSV4RRFFQ69G5FAV.tmp-for-creation"),
        )
        .unwrap();
        fs::create_dir_all(dir.path().join("wal")).unwrap();
        fs::write(dir.path().join("lock"), b"").unwrap();
        // A ULID directory without meta.json is reported, naming the file.
        let broken = dir.path().join("01ARZ3NDEKTSV4RRFFQ69G5FAW");
        fs::create_dir_all(&broken).unwrap();
        let Err(err) = open_blocks(dir.path()) else {
            panic!("missing meta.json is an error");
        };
        assert!(
            err.to_string()
                .contains("01ARZ3NDEKTSV4RRFFQ69G5FAW/meta.json"),
            "{err}"
        );
        fs::remove_dir(&broken).unwrap();

        let blocks = open_blocks(dir.path()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].meta().ulid, ma.ulid);
        assert_eq!(blocks[1].meta().ulid, mb.ulid);

        let got = merged_series(&blocks, &[], i64::MIN, i64::MAX).unwrap();
        assert_eq!(got.len(), 25);
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        for (l, s) in &got {
            let i: usize = l.get("series").unwrap().parse().unwrap();
            assert!(
                s.windows(2).all(|w| w[0].0 < w[1].0),
                "sorted, no duplicates"
            );
            if i < 20 {
                // A: samples 0..110, B: 100..200 → 200 distinct timestamps.
                assert_eq!(s.len(), 200);
                // Overlap 100..110 comes from A (negative values), the rest of B positive.
                assert!(s[105].1 <= 0.0);
                assert!(s[150].1 > 0.0);
            } else {
                assert_eq!(s, &model_a[l]);
            }
        }
        let some = merged_series(
            &blocks,
            &[m(MatchOp::Equal, "series", "3")],
            105 * STEP,
            120 * STEP,
        )
        .unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].1.len(), 15);
        assert_eq!(some[0].1[0].0, 105 * STEP + 3);

        let it = merged_series_iter(&blocks, &[], 0, 0).unwrap();
        assert_eq!(it.count(), 1, "only series 0 has a sample at t=0");
    }

    #[test]
    fn block_cache_opens_once_and_follows_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlockCache::new();
        assert!(cache.blocks_where(dir.path(), |_| true).unwrap().is_empty());
        let (ma, _) = write_block(dir.path(), 5, 0, 50);
        let (mb, _) = write_block(dir.path(), 5, 100 * STEP, 50);
        fs::create_dir_all(dir.path().join(format!("{}.tmp-for-creation", Ulid::new()))).unwrap();

        let all = cache.blocks_where(dir.path(), |_| true).unwrap();
        let ids: Vec<Ulid> = all.iter().map(|b| b.meta().ulid).collect();
        assert_eq!(ids, vec![ma.ulid, mb.ulid], "sorted by min time");
        assert_eq!(cache.len(), 2);

        // Filtered calls answer from the same opened blocks.
        let late = cache
            .blocks_where(dir.path(), |m| m.min_time >= 100 * STEP)
            .unwrap();
        assert_eq!(late.len(), 1);
        assert!(std::sync::Arc::ptr_eq(&late[0], &all[1]), "not reopened");
        assert_eq!(cache.len(), 2, "blocks the filter left out stay cached");

        // A block written later is found; one removed is dropped.
        let (mc, _) = write_block(dir.path(), 5, 200 * STEP, 50);
        fs::remove_dir_all(dir.path().join(ma.ulid.to_string())).unwrap();
        let now = cache.blocks_where(dir.path(), |_| true).unwrap();
        let ids: Vec<Ulid> = now.iter().map(|b| b.meta().ulid).collect();
        assert_eq!(ids, vec![mb.ulid, mc.ulid]);
        assert_eq!(cache.len(), 2);
        assert_eq!(now[0].select(&[], i64::MIN, i64::MAX).unwrap().count(), 5);

        cache.forget(mb.ulid);
        assert_eq!(cache.len(), 1);
        // A ULID directory without meta.json is still an error naming it.
        let broken = dir.path().join("01ARZ3NDEKTSV4RRFFQ69G5FAW");
        fs::create_dir_all(&broken).unwrap();
        let err = cache.blocks_where(dir.path(), |_| true).unwrap_err();
        assert!(
            err.to_string()
                .contains("01ARZ3NDEKTSV4RRFFQ69G5FAW/meta.json"),
            "{err}"
        );
    }
}
