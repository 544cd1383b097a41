//! The head: a tenant's recent samples in memory, appended to by remote write (after
//! the WAL), read by queries, and cut into 2 h Prometheus blocks.
//!
//! * Series live in `stripes` shards chosen by series ref, each behind its own `RwLock`,
//!   with a per-series `Mutex` for the chunk state: appends to different series take
//!   only shared locks on the shard. A second set of shards maps label-set hashes to
//!   refs for [`Head::get_or_create`].
//! * Each series holds its interned labels, its closed chunks' bytes (what a block
//!   stores) back to back in one exact-size immutable `Bytes` that readers share by
//!   reference count (a query copies only the open chunk), and one open chunk: an
//!   [`XorChunk`] for floats, cut as Prometheus does (120 samples, the size limit, and
//!   never across a multiple of the chunk range, so blocks cut cleanly), or a histogram
//!   chunk ([`crate::histogram::chunk`]) cut by Prometheus's histogram rules (1 KiB
//!   target, 2 KiB at most, 10 samples at least, counter resets and layout changes).
//!   A sample of another kind than the open chunk's cuts it, so floats and histograms
//!   of one series never share a chunk.
//! * With an out-of-order window, a float sample older than its series' newest goes to
//!   the series' out-of-order buffer (`head/ooo.rs`, Prometheus's `memSeries.ooo`); reads and
//!   block cuts merge it with the in-order chunks into sorted, unique samples, and WAL
//!   replay sends older samples there again (the WAL holds them as ordinary samples).
//! * The postings index (label name → value → sorted refs, plus all refs) sits behind
//!   its own `RwLock`.
//!
//! Lock order: hash shard → ref shard → series. The postings are taken under at most
//! a hash shard, never while a ref shard is held; the symbol table is a leaf (nothing
//! is locked while it is held, not even a series); readers take
//! the postings, release them, then visit ref shards. Only the push's batch lookup and
//! append hold several ref shards at once (read locks, in increasing order, nothing
//! else held), so they cannot close a cycle.
//!
//! ```
//! use strata_tsdb::head::{Head, HeadOptions};
//! use strata_tsdb::labels::Labels;
//! use strata_tsdb::matcher::Matcher;
//!
//! let head = Head::new(HeadOptions::default());
//! let (r, created) = head.get_or_create(&Labels::from_pairs([("__name__", "up"), ("job", "node")]));
//! assert!(created);
//! head.append(r, 1_000, 1.0).unwrap();
//! let got = head.select(&[Matcher::equal("job", "node")], 0, 2_000).unwrap();
//! assert_eq!(got.len(), 1);
//! assert_eq!(got[0].samples(), vec![(1_000, 1.0)]);
//! ```
//!
//! [`XorChunk`]: crate::chunkenc::XorChunk

mod chunk_files;
mod ooo;
mod postings;
mod series;
mod symbols;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_chunk_files;
#[cfg(test)]
mod tests_histogram;
#[cfg(test)]
mod tests_ooo;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use ulid::Ulid;

use crate::block::{BlockWriter, MetaExtra};
use crate::chunkenc::{EncodedChunk, Encoding, XorIter};
use crate::error::{Error, Result};
use crate::histogram::{decode_chunk_float, FloatHistogram, Histogram};
use crate::labels::{Label, Labels, METRIC_NAME};
use crate::matcher::Matcher;
use crate::meta::BlockMeta;

use chunk_files::ChunkFiles;
pub use chunk_files::DEFAULT_SEGMENT_BYTES as DEFAULT_CHUNK_SEGMENT_BYTES;
pub use ooo::OOO_CAPACITY;
use postings::MemPostings;
use series::{Appended, HistRef, MemSeries, NO_SAMPLES};
pub use series::{HeadChunk, HISTOGRAM_LAST_BITS};
use symbols::{LabelIds, SymbolTable};

/// Prometheus's default block / chunk range: 2 h.
pub const DEFAULT_CHUNK_RANGE_MS: i64 = 2 * 60 * 60 * 1000;

/// Configuration of a [`Head`].
#[derive(Debug, Clone)]
pub struct HeadOptions {
    /// Block length; chunks never straddle a multiple of it. Default 2 h.
    pub chunk_range_ms: i64,
    /// Number of series shards (rounded up to a power of two). Default 64.
    pub stripes: usize,
    /// How far behind the newest sample [`Head::append`] accepts an out-of-order float
    /// sample; 0 (the default) refuses them. See [`Head::set_out_of_order_window`].
    pub out_of_order_time_window_ms: i64,
    /// Where [`Head::open`] writes completed chunks (Prometheus's `chunks_head/`);
    /// `None` (the default) keeps them in memory. Whatever is in it is deleted on open.
    pub chunks_dir: Option<PathBuf>,
    /// Largest chunk file segment. Default [`DEFAULT_CHUNK_SEGMENT_BYTES`] (128 MiB).
    pub chunk_segment_bytes: u32,
}

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions {
            chunk_range_ms: DEFAULT_CHUNK_RANGE_MS,
            stripes: 64,
            out_of_order_time_window_ms: 0,
            chunks_dir: None,
            chunk_segment_bytes: DEFAULT_CHUNK_SEGMENT_BYTES,
        }
    }
}

/// A series' identity in the head (and in the WAL): assigned in increasing order,
/// never reused within a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeadSeriesRef(pub u64);

impl fmt::Display for HeadSeriesRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a sample was rejected, with what a Mimir-style message needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// No series has this ref (never created, or garbage-collected by
    /// [`Head::truncate`]: call [`Head::get_or_create`] again).
    #[error("unknown series ref {0}")]
    UnknownSeries(HeadSeriesRef),
    /// Older than [`Head::min_valid_time`] (Prometheus's `ErrOutOfBounds`).
    #[error("sample timestamp {t} is too old: the minimum valid timestamp is {min_valid_t}")]
    TooOld { t: i64, min_valid_t: i64 },
    /// Older than the series' newest sample (`ErrOutOfOrderSample`).
    #[error("sample timestamp {t} is out of order: the series' last timestamp is {last_t}")]
    OutOfOrder { t: i64, last_t: i64 },
    /// Same timestamp as a sample of the series (its newest, or with an out-of-order
    /// window any), different value (`ErrDuplicateSampleForTimestamp`).
    #[error("duplicate sample for timestamp {t} with a different value")]
    DuplicateTimestamp { t: i64, last_t: i64 },
    /// Older than the series' newest sample and beyond the out-of-order window
    /// (`ErrTooOldSample`).
    #[error("sample timestamp {t} is too old: it is beyond the out-of-order time window of {window_ms} ms")]
    TooOldForWindow { t: i64, window_ms: i64 },
}

impl AppendError {
    /// Mimir's `cortex_discarded_samples_total` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            AppendError::UnknownSeries(_) => "unknown-series",
            AppendError::TooOld { .. } | AppendError::TooOldForWindow { .. } => {
                "sample-timestamp-too-old"
            }
            AppendError::OutOfOrder { .. } => "sample-out-of-order",
            AppendError::DuplicateTimestamp { .. } => "new-value-for-timestamp",
        }
    }
}

/// Prometheus's per-series rule for a new sample `(t, v_bits)` after the series' newest
/// sample `last` (timestamp, value bits): `Ok(true)` to store it, `Ok(false)` for an exact
/// duplicate of the newest sample (accepted, nothing to store), else why it is refused.
/// The head applies it on every append; the ingester applies it before logging to the
/// WAL, so that it logs exactly what the head will then take.
#[inline]
pub fn check_sample(last: Option<(i64, u64)>, t: i64, v_bits: u64) -> Result<bool, AppendError> {
    let Some((last_t, last_v)) = last else {
        return Ok(true);
    };
    if t > last_t {
        Ok(true)
    } else if t < last_t {
        Err(AppendError::OutOfOrder { t, last_t })
    } else if v_bits == last_v {
        Ok(false)
    } else {
        Err(AppendError::DuplicateTimestamp { t, last_t })
    }
}

/// A series selected from the head with its chunks overlapping the query range, oldest
/// first: closed chunks shared with the head, the open one as a copy (a snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSeriesData {
    pub series_ref: HeadSeriesRef,
    pub labels: Labels,
    pub chunks: Vec<HeadChunk>,
}

impl HeadSeriesData {
    /// Every float sample of the chunks (not filtered to the query range).
    pub fn samples(&self) -> Vec<(i64, f64)> {
        self.chunks
            .iter()
            .filter(|c| c.encoding == Encoding::Xor)
            .flat_map(|c| XorIter::new(&c.data))
            .collect()
    }

    /// Every histogram sample of the chunks as float histograms, in time order (not
    /// filtered to the query range).
    pub fn histograms(&self) -> Vec<(i64, FloatHistogram)> {
        let mut out = Vec::new();
        for c in &self.chunks {
            if matches!(c.encoding, Encoding::Histogram | Encoding::FloatHistogram) {
                // the head wrote these chunks: they decode
                let _ = decode_chunk_float(c.encoding, &c.data, &mut out);
            }
        }
        out
    }
}

/// Cut samples of any kind (sorted by time; a repeated timestamp keeps the first) into
/// chunks with the head's rules for each kind, as one series would hold them: what a
/// merge of overlapping chunks re-cuts its merged samples with.
pub fn cut_chunks(samples: &[(i64, crate::dedup::Sample)], chunk_range: i64) -> Vec<EncodedChunk> {
    use crate::dedup::Sample;
    let mut st = series::SeriesState::new_for_cut();
    for (t, s) in samples {
        // out-of-order or repeated samples are skipped, as the head refuses them
        let _ = match s {
            Sample::Float(v) => st.append(None, *t, *v, chunk_range),
            Sample::Histogram(h) => st.append_histogram(None, *t, HistRef::Int(h), chunk_range),
            Sample::FloatHistogram(h) => {
                st.append_histogram(None, *t, HistRef::Float(h), chunk_range)
            }
        };
    }
    // all in memory: nothing to read
    st.chunks_for_block(None, i64::MIN, i64::MAX, chunk_range)
        .unwrap_or_default()
}

/// A histogram sample as the head stored it (for WAL checkpoints).
#[derive(Debug, Clone, PartialEq)]
pub enum HistogramSample {
    Histogram(Histogram),
    FloatHistogram(FloatHistogram),
}

/// The head part of Prometheus's `/api/v1/status/tsdb`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadStats {
    pub num_series: u64,
    pub num_label_pairs: u64,
    pub chunk_count: u64,
    pub min_time: i64,
    pub max_time: i64,
    /// Top `limit`, largest first (ties by name).
    pub series_count_by_metric_name: Vec<(String, u64)>,
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    /// Σ over the label's values of `len(value) × series with it`.
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    /// Named `name=value`.
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}

/// Where a head's memory goes (estimates; allocator overhead not included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadMemory {
    /// Encoded chunk data in memory: closed chunks' bytes kept in memory and the open
    /// chunks' used bytes.
    pub chunk_bytes: usize,
    /// Series structures, labels, chunk headers, open-chunk spare capacity, shard maps.
    pub series_bytes: usize,
    /// Postings lists, their hash tables and the label strings.
    pub index_bytes: usize,
    /// Closed chunks' bytes in the chunk files (`chunks_head/`): on disk, not in
    /// [`total`](Self::total).
    pub disk_chunk_bytes: usize,
}

impl HeadMemory {
    pub fn total(&self) -> usize {
        self.chunk_bytes + self.series_bytes + self.index_bytes
    }
}

/// splitmix64's finaliser: refs and label hashes as hash-map keys.
#[derive(Default, Clone, Copy)]
struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;

/// Label-set hash → ref, with the (rare) hash collisions kept aside.
#[derive(Default)]
struct HashShard {
    refs: U64Map<u64>,
    collisions: U64Map<Vec<u64>>,
}

impl HashShard {
    fn candidates(&self, h: u64) -> impl Iterator<Item = u64> + '_ {
        self.refs
            .get(&h)
            .copied()
            .into_iter()
            .chain(self.collisions.get(&h).into_iter().flatten().copied())
    }

    fn insert(&mut self, h: u64, r: u64) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.refs.entry(h) {
            e.insert(r);
        } else {
            self.collisions.entry(h).or_default().push(r);
        }
    }

    fn remove(&mut self, h: u64, r: u64) {
        if self.refs.get(&h) == Some(&r) {
            // promote a colliding series, if any
            match self.collisions.get_mut(&h).and_then(|v| v.pop()) {
                Some(other) => {
                    self.refs.insert(h, other);
                    if self.collisions.get(&h).is_some_and(|v| v.is_empty()) {
                        self.collisions.remove(&h);
                    }
                }
                None => {
                    self.refs.remove(&h);
                }
            }
        } else if let Some(v) = self.collisions.get_mut(&h) {
            v.retain(|x| *x != r);
            if v.is_empty() {
                self.collisions.remove(&h);
            }
        }
    }
}

fn hash_labels(seed: u64, labels: &[Label]) -> u64 {
    hash_label_bytes(
        seed,
        labels
            .iter()
            .map(|l| (l.name.as_bytes(), l.value.as_bytes())),
    )
}

/// A random seed for one head's label-set hashes, so label sets that collide cannot be
/// built in advance (HashDoS: each collision costs every lookup of that hash a label
/// comparison more). `RandomState` draws its keys from the OS once per thread and
/// changes them for every instance.
fn random_hash_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x243f_6a88_85a3_08d3u64)
}

/// A label set's hash: never persisted (only the head's in-memory hash shards hold it,
/// so it is seeded per head, see [`random_hash_seed`]), so it is a cheap multiply-fold
/// over 8-byte words rather than SipHash (a tenth of the push's CPU). Collisions are
/// kept apart by [`HashShard`]; each string's length is mixed in so `a="bc"` and
/// `ab="c"` differ.
#[inline]
fn hash_label_bytes<'a>(seed: u64, labels: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    let mut h = seed;
    for (n, v) in labels {
        h = hash_str(h, n);
        h = hash_str(h, v);
    }
    // spread the word mixes into the high bits the hash shard is chosen by
    folded_mul(h ^ 0x1319_8a2e_0370_7344, 0x9e37_79b9_7f4a_7c15)
}

/// 64×64 → 128-bit multiply, halves xor-ed (foldhash's and wyhash's mixer).
#[inline(always)]
fn folded_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn hash_str(mut h: u64, b: &[u8]) -> u64 {
    const K: u64 = 0xa076_1d64_78bd_642f;
    let rd8 = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let rd4 = |i: usize| u64::from(u32::from_le_bytes(b[i..i + 4].try_into().unwrap()));
    let n = b.len();
    let tail = if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            h = folded_mul(h ^ rd8(i), K);
            i += 8;
        }
        // the last 8 bytes, overlapping the word before when n is not a multiple of 8
        rd8(n - 8)
    } else if n >= 4 {
        rd4(0) | (rd4(n - 4) << 32)
    } else if n > 0 {
        u64::from(b[0]) | (u64::from(b[n / 2]) << 8) | (u64::from(b[n - 1]) << 16)
    } else {
        0
    };
    // the length in the multiplier: "0" and "10" share a tail word
    folded_mul(h ^ tail, (K ^ 0xe703_7ed1_a0b4_28db) ^ n as u64)
}

/// Start loading the cache line at `p`; never faults, whatever the address.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint: it does not fault or change memory.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Start loading every cache line of `*p`.
#[inline(always)]
fn prefetch_all<T>(p: &T) {
    let b = (p as *const T).cast::<u8>();
    let mut off = 0;
    while off < std::mem::size_of::<T>() {
        prefetch(b.wrapping_add(off));
        off += 64;
    }
    // the last line, when `*p` does not start on one
    prefetch(b.wrapping_add(std::mem::size_of::<T>().saturating_sub(1)));
}

/// An empty `Vec<U>` in `v`'s allocation (same size and alignment: collecting a
/// `vec::IntoIter` in place keeps its buffer), so a scratch buffer of borrows can be
/// kept between calls as plain words.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    const {
        assert!(std::mem::size_of::<T>() == std::mem::size_of::<U>());
        assert!(std::mem::align_of::<T>() == std::mem::align_of::<U>());
    }
    v.clear();
    v.into_iter().map(|_| unreachable!("cleared")).collect()
}

/// Whether pairs are sorted by name with unique names and no empty values, i.e. what
/// `Labels::from_pairs` would keep unchanged.
fn pairs_normalised(pairs: &[(&str, &str)]) -> bool {
    pairs.iter().all(|(_, v)| !v.is_empty()) && pairs.windows(2).all(|w| str_lt(w[0].0, w[1].0))
}

/// `a < b`, inline: label names mostly differ in their first byte, where a `memcmp`
/// call costs more than the comparison.
#[inline(always)]
fn str_lt(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match a.iter().zip(b).find(|(x, y)| x != y) {
        Some((x, y)) => x < y,
        None => a.len() < b.len(),
    }
}

/// `a == b` for the short strings of labels, inline by 8-byte words (overlapping at
/// the end) instead of a `memcmp` call per string.
#[inline(always)]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let rd8 = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap());
    let rd4 = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap());
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if rd8(a, i) != rd8(b, i) {
                return false;
            }
            i += 8;
        }
        rd8(a, n - 8) == rd8(b, n - 8)
    } else if n >= 4 {
        rd4(a, 0) == rd4(b, 0) && rd4(a, n - 4) == rd4(b, n - 4)
    } else {
        a.iter().zip(b).all(|(x, y)| x == y)
    }
}

fn labels_eq_pairs(t: &SymbolTable, labels: &LabelIds, pairs: &[(&str, &str)]) -> bool {
    labels.eq_by(pairs, |[ln, lv], (n, v)| {
        bytes_eq(t.get(lv).as_bytes(), v.as_bytes()) && bytes_eq(t.get(ln).as_bytes(), n.as_bytes())
    })
}

/// [`hash_labels`] of the label set these normalised pairs make.
fn hash_pairs(seed: u64, pairs: &[(&str, &str)]) -> u64 {
    hash_label_bytes(
        seed,
        pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
    )
}

fn rl<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn wl<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

type SeriesShard = U64Map<Box<MemSeries>>;

/// A series found by [`Head::get_many_by_pairs_with_last`] and the timestamp and value
/// bits of its newest sample (`None` before the first).
pub type SeriesWithLast = (HeadSeriesRef, Option<(i64, u64)>);

/// (shard, index, hash or ref) rows of [`Head::get_many_by_pairs`].
type LookupRows = Vec<(u32, u32, u64)>;

/// A tenant's in-memory recent data. Every method takes `&self`; share it in an `Arc`.
pub struct Head {
    chunk_range: i64,
    mask: u64,
    series: Box<[RwLock<SeriesShard>]>,
    hashes: Box<[RwLock<HashShard>]>,
    postings: RwLock<MemPostings>,
    /// The series' label strings ([`symbols`]); a leaf lock.
    symbols: RwLock<SymbolTable>,
    next_ref: AtomicU64,
    num_series: AtomicU64,
    num_chunks: AtomicU64,
    min_time: AtomicI64,
    max_time: AtomicI64,
    /// No sample older than this is accepted: the end of the last cut block.
    min_valid_block: AtomicI64,
    /// [`HeadOptions::out_of_order_time_window_ms`], changeable at run time.
    ooo_window: AtomicI64,
    /// Where closed chunks go when the head has a directory.
    files: Option<ChunkFiles>,
    /// The label-set hash's seed ([`random_hash_seed`]).
    hash_seed: u64,
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Head")
            .field("chunk_range", &self.chunk_range)
            .field("num_series", &self.num_series())
            .field("min_time", &self.min_time())
            .field("max_time", &self.max_time())
            .finish_non_exhaustive()
    }
}

impl Head {
    /// A head that keeps every chunk in memory ([`HeadOptions::chunks_dir`] is not
    /// looked at: see [`open`](Self::open)).
    ///
    /// # Panics
    /// If `chunk_range_ms <= 0`.
    pub fn new(opts: HeadOptions) -> Head {
        Self::build(opts, None)
    }

    /// A head that writes completed chunks to [`HeadOptions::chunks_dir`] (deleting what
    /// is there first: the WAL replay that follows writes them again), or keeps them in
    /// memory without one. Fails when the directory cannot be cleared or created.
    ///
    /// # Panics
    /// If `chunk_range_ms <= 0`.
    pub fn open(opts: HeadOptions) -> Result<Head> {
        let files = match &opts.chunks_dir {
            Some(dir) => Some(ChunkFiles::open(dir, opts.chunk_segment_bytes)?),
            None => None,
        };
        Ok(Self::build(opts, files))
    }

    /// The directory of the head's chunk files, if it has them.
    pub fn chunks_dir(&self) -> Option<&Path> {
        self.files.as_ref().map(|f| f.dir())
    }

    /// Completed chunks that could not be written to the chunk files (kept in memory).
    pub fn chunk_write_failures(&self) -> u64 {
        self.files.as_ref().map_or(0, |f| f.write_failures())
    }

    /// Bytes of the chunk files (`chunks_head/`) in use.
    pub fn chunk_files_bytes(&self) -> u64 {
        self.files.as_ref().map_or(0, |f| f.disk_bytes())
    }

    fn build(opts: HeadOptions, files: Option<ChunkFiles>) -> Head {
        assert!(
            opts.chunk_range_ms > 0,
            "chunk range must be positive, got {}",
            opts.chunk_range_ms
        );
        let n = opts.stripes.clamp(1, 1 << 16).next_power_of_two();
        Head {
            chunk_range: opts.chunk_range_ms,
            mask: n as u64 - 1,
            series: (0..n).map(|_| RwLock::default()).collect(),
            hashes: (0..n).map(|_| RwLock::default()).collect(),
            postings: RwLock::default(),
            symbols: RwLock::new(SymbolTable::new()),
            next_ref: AtomicU64::new(1),
            num_series: AtomicU64::new(0),
            num_chunks: AtomicU64::new(0),
            min_time: AtomicI64::new(i64::MAX),
            max_time: AtomicI64::new(i64::MIN),
            min_valid_block: AtomicI64::new(i64::MIN),
            ooo_window: AtomicI64::new(opts.out_of_order_time_window_ms.max(0)),
            files,
            hash_seed: random_hash_seed(),
        }
    }

    pub fn chunk_range_ms(&self) -> i64 {
        self.chunk_range
    }

    fn series_shard(&self, r: u64) -> &RwLock<SeriesShard> {
        &self.series[(r & self.mask) as usize]
    }

    fn hash_shard(&self, h: u64) -> &RwLock<HashShard> {
        // the low bits pick the ref shard of sequential refs; use high bits here
        &self.hashes[((h >> 32) & self.mask) as usize]
    }

    /// The series with exactly these labels among `candidates`.
    fn find(&self, shard: &HashShard, h: u64, labels: &[Label]) -> Option<u64> {
        shard.candidates(h).find(|r| {
            rl(self.series_shard(*r))
                .get(r)
                .is_some_and(|s| rl(&self.symbols).eq_labels(&s.labels, labels))
        })
    }

    /// The ref of the series with exactly these labels, without creating it (lets the
    /// ingester apply series limits before a series exists).
    pub fn get(&self, labels: &Labels) -> Option<HeadSeriesRef> {
        let h = hash_labels(self.hash_seed, labels.as_slice());
        self.find(&rl(self.hash_shard(h)), h, labels.as_slice())
            .map(HeadSeriesRef)
    }

    /// [`get`](Self::get) from raw name/value pairs, without building [`Labels`]. Only
    /// answers for pairs that are already in [`Labels`] form (sorted by name, names
    /// unique, no empty values), as Prometheus sends them; for any other input it
    /// returns `None` and the caller should fall back to [`get`](Self::get).
    pub fn get_by_pairs(&self, pairs: &[(&str, &str)]) -> Option<HeadSeriesRef> {
        if !pairs_normalised(pairs) {
            return None;
        }
        let h = hash_pairs(self.hash_seed, pairs);
        let shard = rl(self.hash_shard(h));
        let found = shard
            .candidates(h)
            .find(|r| {
                rl(self.series_shard(*r))
                    .get(r)
                    .is_some_and(|s| labels_eq_pairs(&rl(&self.symbols), &s.labels, pairs))
            })
            .map(HeadSeriesRef);
        found
    }

    /// [`get_by_pairs`](Self::get_by_pairs) for many series at once: `out[i]` is the
    /// ref of `series[i]`, or `None` when it is not found or not in [`Labels`] form (the
    /// caller falls back to [`get`](Self::get)). Takes each shard lock once per batch
    /// instead of twice per series, so the cache misses of one lookup overlap the next.
    pub fn get_many_by_pairs(
        &self,
        series: &[&[(&str, &str)]],
        out: &mut Vec<Option<HeadSeriesRef>>,
    ) {
        out.clear();
        out.resize(series.len(), None);
        self.lookup_many(series, |i, r, _| out[i] = Some(r));
    }

    /// [`get_many_by_pairs`](Self::get_many_by_pairs) that also gives each series found
    /// its newest sample (as [`last_sample`](Self::last_sample)), read while the lookup
    /// holds the series: the push path then needs no second lookup to validate.
    pub fn get_many_by_pairs_with_last(
        &self,
        series: &[&[(&str, &str)]],
        out: &mut Vec<Option<SeriesWithLast>>,
    ) {
        out.clear();
        out.resize(series.len(), None);
        self.lookup_many(series, |i, r, s| out[i] = Some((r, s.lock().last())));
    }

    /// Call `found(i, ref, series)` for each `series[i]` in the head (in [`Labels`] form,
    /// hash not colliding), in shard order.
    fn lookup_many(
        &self,
        series: &[&[(&str, &str)]],
        mut found: impl FnMut(usize, HeadSeriesRef, &MemSeries),
    ) {
        // Two (shard, index, hash-or-ref) buffers and the candidates' buffer, reused
        // across calls on this thread.
        thread_local! {
            static SCRATCH: std::cell::Cell<(LookupRows, LookupRows, Vec<usize>)> =
                const { std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new())) };
        }
        let (mut items, mut hits, cands) = SCRATCH.take();
        items.clear();
        hits.clear();
        // (hash shard, index, hash)
        items.extend(
            series
                .iter()
                .enumerate()
                .filter(|(_, p)| pairs_normalised(p))
                .map(|(i, p)| {
                    let h = hash_pairs(self.hash_seed, p);
                    (((h >> 32) & self.mask) as u32, i as u32, h)
                }),
        );
        items.sort_unstable_by_key(|x| x.0);
        // (series shard, index, ref)
        for group in items.chunk_by(|a, b| a.0 == b.0) {
            let g = rl(&self.hashes[group[0].0 as usize]);
            for &(_, i, h) in group {
                if let Some(&r) = g.refs.get(&h) {
                    // colliding hashes (rare) are left to `get`
                    if g.collisions.is_empty() || !g.collisions.contains_key(&h) {
                        hits.push(((r & self.mask) as u32, i, r));
                    }
                }
            }
        }
        hits.sort_unstable_by_key(|x| x.0);
        // The batch's series shards read-locked together (in increasing order; nothing
        // else holds two), so that each pass below starts the memory loads of the whole
        // batch before the next pass needs them: series, then its label slice, then
        // label values. Per shard the passes covered ~8 series and mostly waited.
        let guards: Vec<RwLockReadGuard<'_, SeriesShard>> = hits
            .chunk_by(|a, b| a.0 == b.0)
            .map(|group| rl(&self.series[group[0].0 as usize]))
            .collect();
        let mut cands: Vec<Option<&MemSeries>> = recycle(cands);
        for (group, g) in hits.chunk_by(|a, b| a.0 == b.0).zip(&guards) {
            cands.extend(group.iter().map(|(_, _, r)| g.get(r).map(|b| &**b)));
        }
        for s in cands.iter().flatten() {
            prefetch_all(*s);
        }
        for s in cands.iter().flatten() {
            prefetch(s.labels.as_ptr());
        }
        // taken after the series shards: the table's lock is a leaf
        let t = rl(&self.symbols);
        // `for_each`: one branch on the ids' width a series, not one a label
        for s in cands.iter().flatten() {
            s.labels.pairs().for_each(|[_, v]| prefetch(t.get(v)));
        }
        for s in cands.iter().flatten() {
            s.labels
                .pairs()
                .for_each(|[_, v]| prefetch(t.get(v).as_ptr()));
        }
        for (&(_, i, _), s) in hits.iter().zip(cands.iter_mut()) {
            if s.is_some_and(|s| !labels_eq_pairs(&t, &s.labels, series[i as usize])) {
                *s = None;
            }
        }
        // `found` may lock the series: not while holding the table
        drop(t);
        for (&(_, i, r), s) in hits.iter().zip(&cands) {
            if let Some(s) = s {
                found(i as usize, HeadSeriesRef(r), s);
            }
        }
        let cands = recycle(cands);
        drop(guards);
        SCRATCH.set((items, hits, cands));
    }

    /// The series with these labels, created if new (`true` when created). The label
    /// set should be valid (non-empty; the distributor checks): a series without labels
    /// is kept but never written to a block.
    pub fn get_or_create(&self, labels: &Labels) -> (HeadSeriesRef, bool) {
        let h = hash_labels(self.hash_seed, labels.as_slice());
        let shard = self.hash_shard(h);
        if let Some(r) = self.find(&rl(shard), h, labels.as_slice()) {
            return (HeadSeriesRef(r), false);
        }
        let mut g = wl(shard);
        if let Some(r) = self.find(&g, h, labels.as_slice()) {
            return (HeadSeriesRef(r), false);
        }
        let r = self.next_ref.fetch_add(1, Ordering::Relaxed);
        self.insert(&mut g, h, r, labels);
        (HeadSeriesRef(r), true)
    }

    /// WAL replay of a series record: create the series under `series_ref`. If the
    /// labels already exist (a repeated record) the existing ref is returned with
    /// `false`; the caller maps `series_ref` to it for the samples that follow.
    /// Later [`get_or_create`](Self::get_or_create) calls never reuse a replayed ref.
    pub fn create_with_ref(
        &self,
        series_ref: HeadSeriesRef,
        labels: &Labels,
    ) -> Result<(HeadSeriesRef, bool)> {
        let h = hash_labels(self.hash_seed, labels.as_slice());
        let mut g = wl(self.hash_shard(h));
        if let Some(r) = self.find(&g, h, labels.as_slice()) {
            return Ok((HeadSeriesRef(r), false));
        }
        if let Some(s) = rl(self.series_shard(series_ref.0)).get(&series_ref.0) {
            let other = rl(&self.symbols).labels(&s.labels);
            return Err(Error::Invalid(format!(
                "series ref {series_ref} is already {other}, cannot assign it to {labels}"
            )));
        }
        self.next_ref
            .fetch_max(series_ref.0.saturating_add(1), Ordering::Relaxed);
        self.insert(&mut g, h, series_ref.0, labels);
        Ok((series_ref, true))
    }

    /// Insert a new series; the caller holds its hash shard.
    fn insert(&self, hashes: &mut HashShard, h: u64, r: u64, labels: &Labels) {
        let (ids, interned) = {
            let mut t = wl(&self.symbols);
            let ids = t.acquire_labels(labels);
            let interned = t.label_vec(&ids);
            (ids, interned)
        };
        wl(&self.postings).add(r, &interned);
        drop(interned);
        wl(self.series_shard(r)).insert(r, Box::new(MemSeries::new(ids)));
        hashes.insert(h, r);
        self.num_series.fetch_add(1, Ordering::Relaxed);
    }

    /// The oldest timestamp a new sample may have: the end of the last cut block, and
    /// no older than half a chunk range before the newest sample (Prometheus's
    /// `appendableMinValidTime`).
    pub fn min_valid_time(&self) -> i64 {
        self.min_valid_time_at(i64::MAX)
    }

    /// [`min_valid_time`](Self::min_valid_time) with the window anchored at no later
    /// than `now_ms`: a sample from the future (a skewed clock, a bad client) then cannot
    /// push the window past samples that are in order for the present.
    pub fn min_valid_time_at(&self, now_ms: i64) -> i64 {
        let block = self.min_valid_block.load(Ordering::Relaxed);
        let max = self.max_time.load(Ordering::Relaxed);
        if max == i64::MIN {
            return block;
        }
        block.max(max.min(now_ms).saturating_sub(self.chunk_range / 2))
    }

    /// The end of the last cut block as the head sees it: nothing older is accepted, so
    /// every sample in the head is at or after it.
    pub fn min_valid_block(&self) -> i64 {
        self.min_valid_block.load(Ordering::Relaxed)
    }

    /// The out-of-order window [`append`](Self::append) applies (ms; 0 = none).
    pub fn out_of_order_window(&self) -> i64 {
        self.ooo_window.load(Ordering::Relaxed)
    }

    /// Change [`append`](Self::append)'s out-of-order window (a runtime override).
    pub fn set_out_of_order_window(&self, window_ms: i64) {
        self.ooo_window.store(window_ms.max(0), Ordering::Relaxed);
    }

    /// The oldest timestamp an out-of-order sample may have with a `window_ms` window:
    /// the window behind the newest sample (anchored at no later than `now_ms`, as
    /// [`min_valid_time_at`](Self::min_valid_time_at)). It may be older than the end of
    /// the last cut block ([`min_valid_block`](Self::min_valid_block)): such samples go
    /// to the out-of-order buffer ([`append_below_floor`](Self::append_below_floor)) and
    /// into blocks of their own overlapping the cut ones, as Prometheus's OOO blocks.
    pub fn ooo_min_valid_time_at(&self, now_ms: i64, window_ms: i64) -> i64 {
        let block = self.min_valid_block.load(Ordering::Relaxed);
        let max = self.max_time.load(Ordering::Relaxed);
        if max == i64::MIN {
            return block;
        }
        max.min(now_ms).saturating_sub(window_ms)
    }

    /// Store a validated and logged sample older than the end of the last cut block in
    /// the series' out-of-order buffer (whatever its newest sample), after the duplicate
    /// rule; with `replay`, a duplicate is skipped (`Ok(false)`), not an error.
    pub fn append_below_floor(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        v: f64,
        replay: bool,
    ) -> Result<bool, AppendError> {
        let shard = rl(self.series_shard(series_ref.0));
        let s = shard
            .get(&series_ref.0)
            .ok_or(AppendError::UnknownSeries(series_ref))?;
        let a = s.lock().insert_ooo(self.files.as_ref(), t, v);
        drop(shard);
        match a {
            Ok(a) => {
                self.note_appended(a, t);
                Ok(matches!(a, Appended::Stored { .. }))
            }
            Err(AppendError::DuplicateTimestamp { .. }) if replay => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Call `f(ref, samples)` for every series with out-of-order samples older than
    /// `before`, sorted (for WAL checkpoints: what a block cut has not taken yet).
    pub fn for_each_ooo_sample_before(
        &self,
        before: i64,
        f: impl FnMut(HeadSeriesRef, &[(i64, f64)]),
    ) {
        // out-of-order samples are in memory: nothing to read, nothing can fail
        let _ = self.for_each_series_with(
            |st, buf| {
                st.ooo_samples_before(before, buf);
                Ok(())
            },
            f,
        );
    }

    /// Call `f(ref, items)` for every series that `fill` gives items, reusing one
    /// buffer; stops at the first error of `fill` (a chunk read).
    fn for_each_series_with<T>(
        &self,
        fill: impl Fn(&series::SeriesState, &mut Vec<T>) -> Result<()>,
        mut f: impl FnMut(HeadSeriesRef, &[T]),
    ) -> Result<()> {
        let mut buf = Vec::new();
        for shard in self.series.iter() {
            let g = rl(shard);
            for (r, s) in g.iter() {
                buf.clear();
                fill(&s.lock(), &mut buf)?;
                if !buf.is_empty() {
                    f(HeadSeriesRef(*r), &buf);
                }
            }
        }
        Ok(())
    }

    /// Prometheus's rule for an out-of-order float at `t` (older than the series'
    /// newest sample) without storing it: `Ok(true)` to store it, `Ok(false)` when the
    /// series holds a sample at `t` with these value bits (accepted, nothing stored), an
    /// error when it holds one with another value. The window is the caller's.
    pub fn check_out_of_order(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        v_bits: u64,
    ) -> Result<bool, AppendError> {
        let shard = rl(self.series_shard(series_ref.0));
        let s = shard
            .get(&series_ref.0)
            .ok_or(AppendError::UnknownSeries(series_ref))?;
        let ok = s.lock().check_ooo(self.files.as_ref(), t, v_bits);
        ok
    }

    /// Timestamp and value bits of the series' newest sample (`Ok(None)` before the
    /// first): what [`check_sample`] needs to validate a sample without appending it.
    pub fn last_sample(
        &self,
        series_ref: HeadSeriesRef,
    ) -> Result<Option<(i64, u64)>, AppendError> {
        let shard = rl(self.series_shard(series_ref.0));
        let s = shard
            .get(&series_ref.0)
            .ok_or(AppendError::UnknownSeries(series_ref))?;
        let last = s.lock().last();
        Ok(last)
    }

    /// Append a sample the caller already validated (with [`check_sample`], the time
    /// window and, for one older than the series' newest, the out-of-order window and
    /// [`check_out_of_order`](Self::check_out_of_order)) and logged: no window check, so
    /// the head takes what the WAL has; an older sample goes to the series'
    /// out-of-order buffer. The per-series rule still applies; it can only fail if the
    /// caller did not hold off other writers between validating and appending.
    #[inline]
    pub fn append_validated(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        v: f64,
    ) -> Result<(), AppendError> {
        self.append_unchecked(series_ref, t, v, true).map(|_| ())
    }

    /// [`append_validated`](Self::append_validated) for many logged `(ref, t, v)`
    /// samples, taking each series shard's lock once: the samples are visited grouped
    /// by shard (a counting sort into `order`, a scratch buffer), so one series'
    /// samples keep their order. `on_err(ref, t, error)` for each refused sample.
    pub fn append_validated_many(
        &self,
        samples: &[(u64, i64, f64)],
        order: &mut Vec<u32>,
        mut on_err: impl FnMut(u64, i64, AppendError),
    ) {
        let shards = self.series.len();
        // per shard, where its samples start in `order`
        let mut start = vec![0u32; shards + 1];
        for &(r, _, _) in samples {
            start[(r & self.mask) as usize + 1] += 1;
        }
        for k in 1..=shards {
            start[k] += start[k - 1];
        }
        order.clear();
        order.resize(samples.len(), 0);
        let mut next = start.clone();
        for (i, &(r, _, _)) in samples.iter().enumerate() {
            let k = (r & self.mask) as usize;
            order[next[k] as usize] = i as u32;
            next[k] += 1;
        }
        // The request's series shards read-locked together (in increasing order, as
        // the lookup does) and every sample's series resolved first, then all of them
        // prefetched: their cache misses overlap instead of coming one per append. (A
        // pass that also prefetched each open chunk's end, where the sample is written,
        // under one more series lock per sample, measured no better.)
        thread_local! {
            static SERIES: std::cell::Cell<Vec<usize>> = const { std::cell::Cell::new(Vec::new()) };
        }
        let guards: Vec<(usize, RwLockReadGuard<'_, SeriesShard>)> = (0..shards)
            .filter(|&k| start[k] < start[k + 1])
            .map(|k| (k, rl(&self.series[k])))
            .collect();
        let mut found: Vec<Option<&MemSeries>> = recycle(SERIES.take());
        for (k, g) in &guards {
            let idx = &order[start[*k] as usize..start[*k + 1] as usize];
            found.extend(
                idx.iter()
                    .map(|&i| g.get(&samples[i as usize].0).map(|b| &**b)),
            );
        }
        for s in found.iter().flatten() {
            prefetch_all(*s);
        }
        let (mut new_chunks, mut max_t, mut min_t) = (0u64, i64::MIN, i64::MAX);
        for (&i, s) in order.iter().zip(&found) {
            let (r, t, v) = samples[i as usize];
            let a = match s {
                Some(s) => s
                    .lock()
                    .append_with(self.files.as_ref(), t, v, self.chunk_range, true),
                None => Err(AppendError::UnknownSeries(HeadSeriesRef(r))),
            };
            match a {
                Ok(Appended::Stored { new_chunk }) => {
                    new_chunks += u64::from(new_chunk);
                    max_t = max_t.max(t);
                    min_t = min_t.min(t);
                }
                Ok(_) => {}
                Err(e) => on_err(r, t, e),
            }
        }
        SERIES.set(recycle(found));
        drop(guards);
        if new_chunks > 0 {
            self.num_chunks.fetch_add(new_chunks, Ordering::Relaxed);
        }
        if max_t > self.max_time.load(Ordering::Relaxed) {
            self.max_time.fetch_max(max_t, Ordering::Relaxed);
        }
        if min_t < self.min_time.load(Ordering::Relaxed) {
            self.min_time.fetch_min(min_t, Ordering::Relaxed);
        }
    }

    /// Append one sample, with Prometheus's checks (see [`AppendError`]). A sample equal
    /// to the newest one (timestamp and value bits) is accepted and ignored. With an
    /// out-of-order window ([`HeadOptions::out_of_order_time_window_ms`]), an older
    /// sample inside it is kept apart and merged into reads and blocks.
    #[inline]
    pub fn append(&self, series_ref: HeadSeriesRef, t: i64, v: f64) -> Result<(), AppendError> {
        let min_valid_t = self.min_valid_time();
        let window = self.ooo_window.load(Ordering::Relaxed);
        if window == 0 {
            if t < min_valid_t {
                return Err(AppendError::TooOld { t, min_valid_t });
            }
            return self.append_unchecked(series_ref, t, v, false).map(|_| ());
        }
        let block = self.min_valid_block.load(Ordering::Relaxed);
        let ooo_min = self.ooo_min_valid_time_at(i64::MAX, window);
        let too_old = AppendError::TooOldForWindow {
            t,
            window_ms: window,
        };
        if t < min_valid_t.min(ooo_min) {
            return Err(too_old);
        }
        if t < block {
            return self.append_below_floor(series_ref, t, v, false).map(|_| ());
        }
        match self.append_unchecked(series_ref, t, v, t >= ooo_min) {
            Err(AppendError::OutOfOrder { .. }) => Err(too_old),
            r => r.map(|_| ()),
        }
    }

    /// [`append`](Self::append) for WAL replay: samples older than the last cut block
    /// are dropped and duplicate samples skipped, not errors (`false`). Samples older
    /// than the series' newest go to its out-of-order buffer, whatever the window now:
    /// the WAL holds only samples that were accepted (with a window, in any order).
    /// The `chunk_range / 2` bound does not apply: the WAL already accepted them.
    pub fn append_replay(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        v: f64,
    ) -> Result<bool, AppendError> {
        if t < self.min_valid_block.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match self.append_unchecked(series_ref, t, v, true) {
            Ok(a) => Ok(matches!(a, Appended::Stored { .. })),
            Err(AppendError::OutOfOrder { .. } | AppendError::DuplicateTimestamp { .. }) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn append_unchecked(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        v: f64,
        ooo: bool,
    ) -> Result<Appended, AppendError> {
        let shard = rl(self.series_shard(series_ref.0));
        let s = shard
            .get(&series_ref.0)
            .ok_or(AppendError::UnknownSeries(series_ref))?;
        let a = s
            .lock()
            .append_with(self.files.as_ref(), t, v, self.chunk_range, ooo)?;
        drop(shard);
        if let Appended::Stored { new_chunk } = a {
            if new_chunk {
                self.num_chunks.fetch_add(1, Ordering::Relaxed);
            }
            if t > self.max_time.load(Ordering::Relaxed) {
                self.max_time.fetch_max(t, Ordering::Relaxed);
            }
            if t < self.min_time.load(Ordering::Relaxed) {
                self.min_time.fetch_min(t, Ordering::Relaxed);
            }
        }
        Ok(a)
    }

    /// Append an integer histogram sample, with the same checks as
    /// [`append`](Self::append): too old, out of order, and at the newest timestamp a
    /// duplicate unless equal to the newest sample (an equal one is accepted and
    /// ignored). The chunk rules are Prometheus's for histograms (see [`crate::histogram`]).
    pub fn append_histogram(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: &Histogram,
    ) -> Result<(), AppendError> {
        let min_valid_t = self.min_valid_time();
        if t < min_valid_t {
            return Err(AppendError::TooOld { t, min_valid_t });
        }
        self.append_hist_unchecked(series_ref, t, HistRef::Int(h))
            .map(|_| ())
    }

    /// [`append_histogram`](Self::append_histogram) for float histograms.
    pub fn append_float_histogram(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: &FloatHistogram,
    ) -> Result<(), AppendError> {
        let min_valid_t = self.min_valid_time();
        if t < min_valid_t {
            return Err(AppendError::TooOld { t, min_valid_t });
        }
        self.append_hist_unchecked(series_ref, t, HistRef::Float(h))
            .map(|_| ())
    }

    /// [`append_validated`](Self::append_validated) for integer histograms: no time
    /// window check (the caller validated and logged the sample).
    pub fn append_histogram_validated(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: &Histogram,
    ) -> Result<(), AppendError> {
        self.append_hist_unchecked(series_ref, t, HistRef::Int(h))
            .map(|_| ())
    }

    /// [`append_validated`](Self::append_validated) for float histograms.
    pub fn append_float_histogram_validated(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: &FloatHistogram,
    ) -> Result<(), AppendError> {
        self.append_hist_unchecked(series_ref, t, HistRef::Float(h))
            .map(|_| ())
    }

    /// [`append_replay`](Self::append_replay) for integer histograms: samples older
    /// than the last cut block are dropped, out-of-order and duplicate ones skipped
    /// (`Ok(false)`).
    pub fn append_histogram_replay(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: &Histogram,
    ) -> Result<bool, AppendError> {
        self.replay_hist(series_ref, t, HistRef::Int(h))
    }

    /// [`append_replay`](Self::append_replay) for float histograms.
    pub fn append_float_histogram_replay(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: &FloatHistogram,
    ) -> Result<bool, AppendError> {
        self.replay_hist(series_ref, t, HistRef::Float(h))
    }

    /// The per-series rule for an integer histogram at `t` without appending it (what
    /// [`check_sample`] is for floats): `Ok(true)` to store, `Ok(false)` for an exact
    /// duplicate of the newest sample, else why it is refused. The time window is the
    /// caller's (see [`min_valid_time`](Self::min_valid_time)).
    pub fn check_histogram(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: &Histogram,
    ) -> Result<bool, AppendError> {
        self.check_hist(series_ref, t, HistRef::Int(h))
    }

    /// [`check_histogram`](Self::check_histogram) for float histograms.
    pub fn check_float_histogram(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: &FloatHistogram,
    ) -> Result<bool, AppendError> {
        self.check_hist(series_ref, t, HistRef::Float(h))
    }

    fn check_hist(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: HistRef<'_>,
    ) -> Result<bool, AppendError> {
        let shard = rl(self.series_shard(series_ref.0));
        let s = shard
            .get(&series_ref.0)
            .ok_or(AppendError::UnknownSeries(series_ref))?;
        let ok = s.lock().check_histogram(t, h);
        ok
    }

    fn replay_hist(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: HistRef<'_>,
    ) -> Result<bool, AppendError> {
        if t < self.min_valid_block.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match self.append_hist_unchecked(series_ref, t, h) {
            Ok(a) => Ok(matches!(a, Appended::Stored { .. })),
            Err(AppendError::OutOfOrder { .. } | AppendError::DuplicateTimestamp { .. }) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn append_hist_unchecked(
        &self,
        series_ref: HeadSeriesRef,
        t: i64,
        h: HistRef<'_>,
    ) -> Result<Appended, AppendError> {
        let shard = rl(self.series_shard(series_ref.0));
        let s = shard
            .get(&series_ref.0)
            .ok_or(AppendError::UnknownSeries(series_ref))?;
        let a = s
            .lock()
            .append_histogram(self.files.as_ref(), t, h, self.chunk_range)?;
        drop(shard);
        self.note_appended(a, t);
        Ok(a)
    }

    fn note_appended(&self, a: Appended, t: i64) {
        if let Appended::Stored { new_chunk } = a {
            if new_chunk {
                self.num_chunks.fetch_add(1, Ordering::Relaxed);
            }
            if t > self.max_time.load(Ordering::Relaxed) {
                self.max_time.fetch_max(t, Ordering::Relaxed);
            }
            if t < self.min_time.load(Ordering::Relaxed) {
                self.min_time.fetch_min(t, Ordering::Relaxed);
            }
        }
    }

    /// Oldest sample time in the head (`i64::MAX` when empty).
    pub fn min_time(&self) -> i64 {
        self.min_time.load(Ordering::Relaxed)
    }

    /// Newest sample time ever appended (`i64::MIN` before the first).
    pub fn max_time(&self) -> i64 {
        self.max_time.load(Ordering::Relaxed)
    }

    pub fn num_series(&self) -> usize {
        self.num_series.load(Ordering::Relaxed) as usize
    }

    /// Active series with this metric name, O(1): for per-metric series limits.
    pub fn series_count_for_metric(&self, name: &str) -> usize {
        rl(&self.postings).count(METRIC_NAME, name)
    }

    fn refs_for(&self, matchers: &[Matcher]) -> Vec<u64> {
        rl(&self.postings).for_matchers(matchers)
    }

    /// Visit the series `refs` (sorted or not), one shard lock at a time.
    fn visit(&self, refs: &[u64], mut f: impl FnMut(u64, &MemSeries)) {
        let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); self.series.len()];
        for r in refs {
            by_shard[(r & self.mask) as usize].push(*r);
        }
        for (i, rs) in by_shard.iter().enumerate() {
            if rs.is_empty() {
                continue;
            }
            let shard = rl(&self.series[i]);
            for r in rs {
                if let Some(s) = shard.get(r) {
                    f(*r, s);
                }
            }
        }
    }

    /// Series matching every matcher with chunks overlapping `[mint, maxt]` (both
    /// inclusive), sorted by labels; each carries those chunks (closed ones shared, or
    /// read from the chunk files). Fails when a chunk cannot be read from disk.
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<HeadSeriesData>> {
        if mint > maxt {
            return Ok(Vec::new());
        }
        let refs = self.refs_for(matchers);
        let mut out = Vec::new();
        let mut err = None;
        self.visit(&refs, |r, s| {
            if err.is_some() {
                return;
            }
            let mut chunks = Vec::new();
            if let Err(e) = s.lock().chunks_overlapping(
                self.files.as_ref(),
                mint,
                maxt,
                self.chunk_range,
                &mut chunks,
            ) {
                err = Some(e);
                return;
            }
            if !chunks.is_empty() {
                out.push(HeadSeriesData {
                    series_ref: HeadSeriesRef(r),
                    labels: rl(&self.symbols).labels(&s.labels),
                    chunks,
                });
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// The series [`select`](Self::select) would return, without their chunks: a
    /// caller that streams its answer takes each series' chunks
    /// ([`series_chunks`](Self::series_chunks)) just before sending it.
    pub fn select_refs(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<(HeadSeriesRef, Labels)> {
        if mint > maxt {
            return Vec::new();
        }
        let refs = self.refs_for(matchers);
        let mut out = Vec::new();
        self.visit(&refs, |r, s| {
            if s.lock()
                .has_chunks_overlapping(self.files.as_ref(), mint, maxt)
            {
                out.push((HeadSeriesRef(r), rl(&self.symbols).labels(&s.labels)));
            }
        });
        out.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// One series' chunks overlapping `[mint, maxt]` (closed ones shared or read from
    /// the chunk files, the open one copied); empty when the series is gone
    /// (garbage-collected since it was selected). Fails when a chunk cannot be read.
    pub fn series_chunks(&self, r: HeadSeriesRef, mint: i64, maxt: i64) -> Result<Vec<HeadChunk>> {
        let mut out = Vec::new();
        let shard = rl(&self.series[(r.0 & self.mask) as usize]);
        if let Some(s) = shard.get(&r.0) {
            s.lock().chunks_overlapping(
                self.files.as_ref(),
                mint,
                maxt,
                self.chunk_range,
                &mut out,
            )?;
        }
        Ok(out)
    }

    /// Label sets of the series matching `matchers` (every series for none), sorted.
    pub fn series_labels(&self, matchers: &[Matcher]) -> Vec<Labels> {
        let refs = self.refs_for(matchers);
        let mut out = Vec::with_capacity(refs.len());
        self.visit(&refs, |_, s| out.push(rl(&self.symbols).labels(&s.labels)));
        out.sort_unstable();
        out
    }

    /// Label names of the series matching `matchers` (all for none), sorted.
    pub fn label_names(&self, matchers: &[Matcher]) -> Vec<String> {
        if matchers.is_empty() {
            return rl(&self.postings).label_names();
        }
        let refs = self.refs_for(matchers);
        let mut names = std::collections::BTreeSet::new();
        self.visit(&refs, |_, s| {
            let t = rl(&self.symbols);
            s.labels.pairs().for_each(|[n, _]| {
                let n = t.get(n).as_str();
                if !names.contains(n) {
                    names.insert(n.to_string());
                }
            });
        });
        names.into_iter().collect()
    }

    /// Values of label `name` among the series matching `matchers` (all for none),
    /// sorted.
    pub fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String> {
        if matchers.is_empty() {
            return rl(&self.postings).label_values(name);
        }
        let refs = self.refs_for(matchers);
        let mut values = std::collections::BTreeSet::new();
        self.visit(&refs, |_, s| {
            let t = rl(&self.symbols);
            if let Some(v) = s.labels.value_by_name(|n| t.get(n).as_str().cmp(name)) {
                let v = t.get(v).as_str();
                if !values.contains(v) {
                    values.insert(v.to_owned());
                }
            }
        });
        values.into_iter().collect()
    }

    /// The head statistics of `/api/v1/status/tsdb`, top `limit` of each list.
    pub fn stats(&self, limit: usize) -> HeadStats {
        let p = rl(&self.postings).stats(limit);
        HeadStats {
            num_series: self.num_series.load(Ordering::Relaxed),
            num_label_pairs: p.num_label_pairs,
            chunk_count: self.num_chunks.load(Ordering::Relaxed),
            min_time: self.min_time(),
            max_time: self.max_time(),
            series_count_by_metric_name: p.series_count_by_metric_name,
            label_value_count_by_label_name: p.label_value_count_by_label_name,
            memory_in_bytes_by_label_name: p.memory_in_bytes_by_label_name,
            series_count_by_label_value_pair: p.series_count_by_label_value_pair,
        }
    }

    /// Write every series' samples with `mint <= t < maxt` as a Prometheus block under
    /// `parent` (`meta.json` range `[mint, maxt)` unless `extra` says otherwise).
    /// `None` when the range holds no sample (no block is written). The head is not
    /// changed: call [`truncate`](Self::truncate) once the block is safe.
    pub fn write_block(
        &self,
        parent: &Path,
        mint: i64,
        maxt: i64,
        extra: Option<MetaExtra>,
    ) -> Result<Option<BlockMeta>> {
        if mint >= maxt {
            return Err(Error::Invalid(format!(
                "block range [{mint}, {maxt}) is empty"
            )));
        }
        let mut w: Option<BlockWriter> = None;
        let mut batch: Vec<(Labels, Vec<EncodedChunk>)> = Vec::new();
        for shard in self.series.iter() {
            {
                let g = rl(shard);
                for s in g.values() {
                    if s.labels.is_empty() {
                        continue;
                    }
                    let chunks = s.lock().chunks_for_block(
                        self.files.as_ref(),
                        mint,
                        maxt,
                        self.chunk_range,
                    )?;
                    if !chunks.is_empty() {
                        batch.push((rl(&self.symbols).labels(&s.labels), chunks));
                    }
                }
            }
            for (labels, chunks) in batch.drain(..) {
                let w = match &mut w {
                    Some(w) => w,
                    None => w.insert(BlockWriter::new(parent, Ulid::new())?),
                };
                w.add_series(labels, chunks)?;
            }
        }
        let Some(w) = w else { return Ok(None) };
        let mut extra = extra.unwrap_or_default();
        extra.min_time.get_or_insert(mint);
        extra.max_time.get_or_insert(maxt);
        w.finish(Some(extra)).map(Some)
    }

    /// Drop every chunk that ends before `mint_keep`, refuse samples older than it from
    /// now on, and garbage-collect series left without samples (a series created but
    /// never appended to survives one truncation). Returns how many series were removed.
    pub fn truncate(&self, mint_keep: i64) -> usize {
        self.truncate_keeping_window(mint_keep, mint_keep)
    }

    /// [`truncate`](Self::truncate) that refuses samples older than `min_valid` (at most
    /// `mint_keep`) instead of `mint_keep`: after a flush cut at the newest sample,
    /// series a little behind keep their in-order samples (they go into a later block
    /// that overlaps the flushed one; compaction merges them).
    pub fn truncate_keeping_window(&self, mint_keep: i64, min_valid: i64) -> usize {
        let floor = min_valid.min(mint_keep);
        let floor = self
            .min_valid_block
            .fetch_max(floor, Ordering::Relaxed)
            .max(floor);
        // Chunk file segments from here on may get chunks pass 1 does not see.
        let first_unseen_segment = self.files.as_ref().map(|f| f.current_seq());
        // Pass 1: drop chunks, find empty series, compute the new minimum time.
        let mut candidates: Vec<(u64, u64)> = Vec::new();
        let mut new_min = i64::MAX;
        let mut dropped = 0usize;
        for shard in self.series.iter() {
            let g = rl(shard);
            for (r, s) in g.iter() {
                let mut st = s.lock();
                let (n, min_t) = st.truncate_before(self.files.as_ref(), mint_keep);
                dropped += n;
                if let Some(t) = min_t {
                    new_min = new_min.min(t);
                } else if st.last_t() == NO_SAMPLES && !st.gc_marked {
                    st.gc_marked = true;
                } else if st.last_t() < floor {
                    // the table's lock is a leaf: not taken under the series' lock
                    drop(st);
                    let l = rl(&self.symbols).label_vec(&s.labels);
                    candidates.push((*r, hash_labels(self.hash_seed, &l)));
                }
                // else: emptied by a flush but still inside the window: kept, so its
                // newest timestamp keeps refusing out-of-order and repeated samples
            }
        }
        self.num_chunks.fetch_sub(dropped as u64, Ordering::Relaxed);
        if let (Some(f), Some(seq)) = (&self.files, first_unseen_segment) {
            f.truncate(mint_keep, seq);
        }
        let _ = self
            .min_time
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                (cur < mint_keep || new_min < cur).then_some(new_min)
            });
        // Pass 2: remove them, re-checking under the write locks.
        let mut removed: Vec<(u64, Box<MemSeries>)> = Vec::new();
        for (r, h) in candidates {
            let mut hg = wl(self.hash_shard(h));
            let mut sg = wl(self.series_shard(r));
            let still_empty = sg.get(&r).is_some_and(|s| {
                let st = s.lock();
                st.is_empty() && (st.last_t() != NO_SAMPLES || st.gc_marked)
            });
            if still_empty {
                if let Some(s) = sg.remove(&r) {
                    hg.remove(h, r);
                    removed.push((r, s));
                }
            }
        }
        if removed.is_empty() {
            return 0;
        }
        let labels: Vec<Vec<Label>> = {
            let t = rl(&self.symbols);
            removed
                .iter()
                .map(|(_, s)| t.label_vec(&s.labels))
                .collect()
        };
        wl(&self.postings).remove(removed.iter().zip(&labels).map(|((r, _), l)| (*r, &l[..])));
        drop(labels);
        {
            let mut t = wl(&self.symbols);
            for (_, s) in &removed {
                t.release_labels(&s.labels);
            }
        }
        self.num_series
            .fetch_sub(removed.len() as u64, Ordering::Relaxed);
        removed.len()
    }

    /// Every series' ref and labels, by ref: what a WAL checkpoint writes.
    pub fn series_snapshot(&self) -> Vec<(HeadSeriesRef, Labels)> {
        let mut out = Vec::with_capacity(self.num_series());
        for shard in self.series.iter() {
            for (r, s) in rl(shard).iter() {
                out.push((HeadSeriesRef(*r), rl(&self.symbols).labels(&s.labels)));
            }
        }
        out.sort_unstable_by_key(|(r, _)| *r);
        out
    }

    /// Call `f(ref, samples)` for every series with samples at or after `since`, with
    /// those samples in time order (for WAL checkpoint records). Series come in no
    /// particular order; `f` runs without the series' lock.
    /// Fails when a chunk cannot be read from the chunk files.
    pub fn for_each_sample_since(
        &self,
        since: i64,
        f: impl FnMut(HeadSeriesRef, &[(i64, f64)]),
    ) -> Result<()> {
        let files = self.files.as_ref();
        self.for_each_series_with(|st, buf| st.samples_since(files, since, buf), f)
    }

    /// Call `f(ref, samples)` for every series with histogram samples at or after
    /// `since`, with those samples in time order, as stored (for WAL checkpoint
    /// records). Series come in no particular order; `f` runs without the series' lock.
    /// Fails when a chunk cannot be read from the chunk files.
    pub fn for_each_histogram_since(
        &self,
        since: i64,
        f: impl FnMut(HeadSeriesRef, &[(i64, HistogramSample)]),
    ) -> Result<()> {
        let files = self.files.as_ref();
        self.for_each_series_with(|st, buf| st.histograms_since(files, since, buf), f)
    }

    /// Approximate bytes the head holds: chunks, series, shard tables, postings and
    /// label strings. Walks every series (O(series)); meant for a gauge scraped every
    /// few seconds, not for a hot path.
    pub fn approx_memory_bytes(&self) -> usize {
        self.memory_usage().total()
    }

    /// [`approx_memory_bytes`](Self::approx_memory_bytes) by part.
    pub fn memory_usage(&self) -> HeadMemory {
        use std::mem::size_of;
        let mut m = HeadMemory {
            series_bytes: size_of::<Head>(),
            ..HeadMemory::default()
        };
        for shard in self.series.iter() {
            let g = rl(shard);
            m.series_bytes += g.capacity() * (size_of::<(u64, Box<MemSeries>)>() + 1);
            for s in g.values() {
                let st = s.lock();
                let (mem, disk, overhead) = st.memory(self.files.as_ref());
                m.chunk_bytes += mem;
                m.disk_chunk_bytes += disk;
                m.series_bytes += size_of::<MemSeries>() + s.labels.heap_bytes() + overhead;
            }
        }
        for shard in self.hashes.iter() {
            let g = rl(shard);
            m.series_bytes += g.refs.capacity() * (size_of::<(u64, u64)>() + 1);
            m.series_bytes += g
                .collisions
                .values()
                .map(|v| 40 + v.capacity() * 8)
                .sum::<usize>();
        }
        m.index_bytes = rl(&self.postings).memory_bytes();
        // the symbol table without its strings (counted with the postings keys)
        m.index_bytes += rl(&self.symbols).memory_bytes();
        m
    }
}

#[cfg(test)]
mod get_by_pairs_tests {
    use super::*;

    #[test]
    fn get_by_pairs_matches_get() {
        let head = Head::new(HeadOptions::default());
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a"), ("z", "1")]);
        let (r, _) = head.get_or_create(&l);
        let other = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        let (r2, _) = head.get_or_create(&other);
        assert_eq!(
            head.get_by_pairs(&[("__name__", "up"), ("job", "a"), ("z", "1")]),
            Some(r)
        );
        assert_eq!(
            head.get_by_pairs(&[("__name__", "up"), ("job", "b")]),
            Some(r2)
        );
        // absent, a prefix, a superset
        assert_eq!(head.get_by_pairs(&[("__name__", "up"), ("job", "c")]), None);
        assert_eq!(head.get_by_pairs(&[("__name__", "up"), ("job", "a")]), None);
        assert_eq!(
            head.get_by_pairs(&[("__name__", "up"), ("job", "b"), ("z", "1")]),
            None
        );
        // not in normal form: left to `get`
        assert_eq!(
            head.get_by_pairs(&[("job", "a"), ("__name__", "up"), ("z", "1")]),
            None
        );
        assert_eq!(
            head.get_by_pairs(&[("__name__", "up"), ("job", "b"), ("x", "")]),
            None
        );
        assert_eq!(
            head.get_by_pairs(&[("__name__", "up"), ("job", "b"), ("job", "b")]),
            None
        );
        assert_eq!(
            hash_pairs(head.hash_seed, &[("__name__", "up"), ("job", "b")]),
            hash_labels(head.hash_seed, other.as_slice())
        );
        let batch: [&[(&str, &str)]; 5] = [
            &[("__name__", "up"), ("job", "b")],
            &[("__name__", "up"), ("job", "c")],
            &[("job", "a"), ("__name__", "up"), ("z", "1")],
            &[("__name__", "up"), ("job", "a"), ("z", "1")],
            &[],
        ];
        let mut out = vec![Some(r)];
        head.get_many_by_pairs(&batch, &mut out);
        assert_eq!(out, [Some(r2), None, None, Some(r), None]);
        // many series over all shards
        let many: Vec<Vec<(String, String)>> = (0..500)
            .map(|i| {
                vec![
                    ("__name__".to_string(), "m".to_string()),
                    ("i".to_string(), i.to_string()),
                ]
            })
            .collect();
        let refs: Vec<_> = many
            .iter()
            .take(400)
            .map(|p| {
                head.get_or_create(&Labels::from_pairs(p.iter().map(|(n, v)| (n, v))))
                    .0
            })
            .collect();
        let borrowed: Vec<Vec<(&str, &str)>> = many
            .iter()
            .rev()
            .map(|p| p.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect())
            .collect();
        let slices: Vec<&[(&str, &str)]> = borrowed.iter().map(|p| p.as_slice()).collect();
        head.get_many_by_pairs(&slices, &mut out);
        let want: Vec<_> = (0..500).rev().map(|i| refs.get(i).copied()).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn label_hash_is_the_same_from_pairs_and_tells_boundaries_apart() {
        // every tail length of `hash_str` (0..=17 bytes), from pairs and from labels
        let long = "abcdefghijklmnopq";
        for seed in [0, random_hash_seed()] {
            let mut seen = std::collections::HashSet::new();
            for n in 1..=long.len() {
                for v in 0..=long.len() {
                    let pairs = [(&long[..n], &long[..v])];
                    let h = hash_pairs(seed, &pairs);
                    if v > 0 {
                        assert_eq!(h, hash_labels(seed, Labels::from_pairs(pairs).as_slice()));
                    }
                    assert!(seen.insert(h), "{pairs:?}");
                }
            }
            // where one string ends and the next starts is part of the hash
            assert_ne!(
                hash_pairs(seed, &[("a", "bc")]),
                hash_pairs(seed, &[("ab", "c")])
            );
            assert_ne!(
                hash_pairs(seed, &[("a", "b"), ("c", "d")]),
                hash_pairs(seed, &[("a", "bc"), ("", "d")])
            );
        }
    }

    #[test]
    fn label_hash_seed_differs_between_heads() {
        // A fixed seed would let label sets that collide be built in advance (HashDoS).
        let heads: Vec<Head> = (0..4).map(|_| Head::new(HeadOptions::default())).collect();
        let seeds: std::collections::HashSet<u64> = heads.iter().map(|h| h.hash_seed).collect();
        assert_eq!(seeds.len(), heads.len());
        let pairs = [("__name__", "up"), ("job", "a")];
        let hashes: std::collections::HashSet<u64> = heads
            .iter()
            .map(|h| hash_pairs(h.hash_seed, &pairs))
            .collect();
        assert_eq!(hashes.len(), heads.len());
        // each head still finds its series from pairs and from labels
        for h in &heads {
            let (r, _) = h.get_or_create(&Labels::from_pairs(pairs));
            assert_eq!(h.get_by_pairs(&pairs), Some(r));
            assert_eq!(h.get(&Labels::from_pairs(pairs)), Some(r));
        }
    }
}
