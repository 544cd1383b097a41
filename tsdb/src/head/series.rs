//! One in-memory series: its interned labels, compact closed chunks and the open chunk
//! being appended to, with Prometheus's chunk-cutting rules. A series may hold float and
//! histogram samples: one chunk list in time order, each chunk of one encoding (XOR,
//! histogram or float histogram); a sample of another kind than the open chunk's cuts it.
//!
//! A head with a directory writes each chunk as it closes to its chunk files
//! ([`ChunkFiles`], `chunks_head/`) and keeps only where it is (the open XOR chunk's
//! settled bytes go there as it grows, see [`Spill`]); a read takes each
//! chunk as a slice of its segment's memory map (no copy, no allocation). Without a directory (or when a
//! write fails) the closed chunks' bytes sit back to back in one immutable [`Bytes`] per
//! series, so a query takes them as reference-counted slices (no copy, no allocation
//! per chunk) while the series keeps one allocation for all of them.
//!
//! A series holds only its newest closed chunk's record ([`ClosedChunk`]): each closed
//! chunk, on disk or in memory, is stored after the record of the chunk before it
//! ([`PREFIX_LEN`] bytes), so reads walk back from the newest ([`Walk`]). A 2-hour
//! series so keeps 24 bytes for its 3–4 closed chunks instead of a list of them.

use std::sync::Mutex;

use bytes::Bytes;

use crate::chunkenc::{
    compute_chunk_end_time, range_for_timestamp, EncodedChunk, Encoding, XorChunk, XorIter,
    MAX_BYTES_PER_XOR_CHUNK, SAMPLES_PER_CHUNK,
};
use crate::histogram::chunk::{
    AppendOutcome, MIN_SAMPLES_PER_HISTOGRAM_CHUNK, TARGET_BYTES_PER_HISTOGRAM_CHUNK,
};
use crate::histogram::{
    FloatHistogram, FloatHistogramChunk, FloatHistogramIter, Histogram, HistogramChunk,
    HistogramIter,
};

use super::chunk_files::{
    crc_of_parts, ChunkFiles, ChunkLoc, Reader, CRC_LEN, MAX_SEGMENT_SEQ, PREFIX_LEN,
};
use super::ooo::OooState;
use super::{AppendError, HistogramSample};
use crate::error::{Error, Result};

/// Where a series' closed chunks go: the head's chunk files, or (`None`) memory.
pub(super) type Files<'a> = Option<&'a ChunkFiles>;

/// How a read takes closed chunks from the chunk files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// Slices of the segments' maps: queries (no syscall or copy; the pages touched
    /// stay in RSS as file pages while the segment lives).
    Map,
    /// Copies read with `pread`: passes over the whole head (block cuts, WAL
    /// checkpoints) and the ingest-time duplicate check, which would otherwise map
    /// every page of the files into the process's RSS.
    Copy,
}

/// The segment number of a chunk whose bytes are in the series' `closed_data`.
const IN_MEMORY: u32 = MAX_SEGMENT_SEQ + 1;

/// Longest span of a chunk (`max_t - min_t`, ms) a [`ClosedChunk`] holds: series cut
/// chunks at multiples of a chunk range no longer than this (≈ 49 days).
const MAX_CHUNK_SPAN: i64 = u32::MAX as i64;

/// A chunk that is no longer appended to: its time range and where its record is: at
/// `pos` in chunk file segment `seg`, or at logical offset `pos` of the series'
/// in-memory records (`Rare::closed_data`). A record is the [`ClosedChunk`] before it
/// in the series ([`to_bytes`](Self::to_bytes), [`PREFIX_LEN`] bytes), then the chunk's
/// `len` bytes exactly as they go into a block's `chunks/` segment (on disk then a
/// CRC). 24 bytes, and a series holds only its newest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClosedChunk {
    pub min_t: i64,
    /// `max_t - min_t`.
    span: u32,
    pos: u32,
    len: u32,
    /// Segment number (low 24 bits; [`IN_MEMORY`]) and encoding (high 8 bits).
    seg_enc: u32,
}

impl ClosedChunk {
    /// No chunk (the prefix of a series' first chunk).
    const NONE: ClosedChunk = ClosedChunk {
        min_t: 0,
        span: 0,
        pos: 0,
        len: 0,
        seg_enc: 0,
    };

    /// As stored in front of the next chunk's bytes.
    fn to_bytes(self) -> [u8; PREFIX_LEN] {
        let mut b = [0u8; PREFIX_LEN];
        b[..8].copy_from_slice(&self.min_t.to_le_bytes());
        for (i, x) in [self.span, self.pos, self.len, self.seg_enc]
            .into_iter()
            .enumerate()
        {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    fn from_bytes(b: &[u8; PREFIX_LEN]) -> Self {
        let u = |i: usize| u32::from_le_bytes(b[8 + 4 * i..12 + 4 * i].try_into().unwrap());
        ClosedChunk {
            min_t: i64::from_le_bytes(b[..8].try_into().unwrap()),
            span: u(0),
            pos: u(1),
            len: u(2),
            seg_enc: u(3),
        }
    }

    pub fn max_t(&self) -> i64 {
        self.min_t + i64::from(self.span)
    }

    pub fn encoding(&self) -> Encoding {
        // written from an `Encoding` below
        Encoding::from_u8((self.seg_enc >> 24) as u8).unwrap_or(Encoding::None)
    }

    fn seg(&self) -> u32 {
        self.seg_enc & 0xff_ffff
    }

    fn in_memory(&self) -> bool {
        self.seg() == IN_MEMORY
    }

    fn loc(&self) -> ChunkLoc {
        ChunkLoc {
            seg: self.seg(),
            off: self.pos,
        }
    }
}

/// Steps through a series' closed chunks from the newest back, reading each one's
/// record for the one before it ([`SeriesState::walk`]).
struct Walk<'a> {
    st: &'a SeriesState,
    reader: Option<Reader<'a>>,
    via: Via,
    cur: ClosedChunk,
    left: u32,
}

impl Walk<'_> {
    /// The chunk the walk is at; `None` past the oldest.
    fn current(&self) -> Option<ClosedChunk> {
        (self.left > 0).then_some(self.cur)
    }

    /// Move to the chunk before the current one; with `data` the current one's bytes
    /// are read (CRC-checked on disk) and returned. Only `Some` current chunk steps.
    fn step(&mut self, data: bool) -> Result<Option<Bytes>> {
        let c = self.cur;
        self.left -= 1;
        if !data && self.left == 0 {
            return Ok(None);
        }
        let (bytes, prefix) = if c.in_memory() {
            let rec = self.st.mem_record(&c)?;
            let prefix: [u8; PREFIX_LEN] = rec[..PREFIX_LEN].try_into().expect("a prefix");
            (data.then(|| rec.slice(PREFIX_LEN..)), prefix)
        } else {
            let r = self.reader.as_ref().ok_or_else(|| {
                Error::Invalid("a head chunk is on disk but the head has no chunk files".into())
            })?;
            let mapped = self.via == Via::Map;
            if data {
                let (b, p) = r.read(c.loc(), c.len, mapped)?;
                (Some(b), p)
            } else {
                (None, r.read_prefix(c.loc(), mapped)?)
            }
        };
        if self.left > 0 {
            let prev = ClosedChunk::from_bytes(&prefix);
            // chunks are in time order and never empty: anything else is damage
            if prev.len == 0 || prev.max_t() >= c.min_t || prev.encoding() == Encoding::None {
                let what = "head chunk record names no plausible chunk before it";
                return Err(match &self.reader {
                    Some(r) if !c.in_memory() => r.corrupt(c.loc(), what),
                    _ => Error::Invalid(what.into()),
                });
            }
            self.cur = prev;
        }
        Ok(bytes)
    }
}

/// A chunk selected from the head: a closed chunk's bytes are shared with the head
/// (a reference-count bump), the open chunk's are a copy taken under the series lock.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadChunk {
    pub min_time: i64,
    pub max_time: i64,
    pub encoding: Encoding,
    pub data: Bytes,
}

impl HeadChunk {
    /// A copy as an owned [`EncodedChunk`].
    pub fn to_encoded(&self) -> EncodedChunk {
        EncodedChunk {
            min_time: self.min_time,
            max_time: self.max_time,
            encoding: self.encoding,
            data: self.data.to_vec(),
        }
    }
}

impl From<EncodedChunk> for HeadChunk {
    fn from(c: EncodedChunk) -> Self {
        HeadChunk {
            min_time: c.min_time,
            max_time: c.max_time,
            encoding: c.encoding,
            data: Bytes::from(c.data),
        }
    }
}

/// `last_v` while the newest sample is a histogram: [`check_sample`](super::check_sample)
/// then refuses a float at its timestamp (unless the float has exactly these bits, a NaN
/// payload no client sends; the head's own check still refuses that one).
pub const HISTOGRAM_LAST_BITS: u64 = 0x7ff4_6869_7374_6f67;

/// The kind of the newest sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LastKind {
    Float,
    Histogram,
    FloatHistogram,
}

/// The open histogram chunk of either encoding.
pub(super) enum HistChunk {
    Int(HistogramChunk),
    Float(FloatHistogramChunk),
}

impl HistChunk {
    fn bytes(&self) -> &[u8] {
        match self {
            HistChunk::Int(c) => c.bytes(),
            HistChunk::Float(c) => c.bytes(),
        }
    }

    fn num_samples(&self) -> usize {
        match self {
            HistChunk::Int(c) => c.num_samples(),
            HistChunk::Float(c) => c.num_samples(),
        }
    }

    fn encoding(&self) -> Encoding {
        match self {
            HistChunk::Int(_) => Encoding::Histogram,
            HistChunk::Float(_) => Encoding::FloatHistogram,
        }
    }

    fn capacity(&self) -> usize {
        match self {
            HistChunk::Int(c) => c.capacity(),
            HistChunk::Float(c) => c.capacity(),
        }
    }
}

/// A series' histogram state: the open histogram chunk (if the newest chunk is one) and
/// the newest histogram (for the duplicate rule). Boxed so float-only series pay one
/// pointer.
pub(super) struct HistState {
    open: Option<HistChunk>,
    /// Prometheus's `histogramChunkHasComputedEndTime`.
    end_computed: bool,
    last_int: Histogram,
    last_float: FloatHistogram,
}

/// A histogram sample of either kind, borrowed.
#[derive(Clone, Copy)]
pub(super) enum HistRef<'a> {
    Int(&'a Histogram),
    Float(&'a FloatHistogram),
}

impl HistRef<'_> {
    fn kind(self) -> LastKind {
        match self {
            HistRef::Int(_) => LastKind::Histogram,
            HistRef::Float(_) => LastKind::FloatHistogram,
        }
    }
}

/// Prometheus's `computeChunkEndTime(start, cur, maxT, ratioToFull)`.
fn compute_chunk_end_time_ratio(start: i64, cur: i64, max_t: i64, ratio_to_full: f64) -> i64 {
    let n = (max_t - start) as f64 / ((cur - start + 1) as f64 * ratio_to_full);
    if n <= 1.0 {
        return max_t;
    }
    (start as f64 + (max_t - start) as f64 / n.floor()) as i64
}

/// `last_t` of a series that never had a sample.
pub(super) const NO_SAMPLES: i64 = i64::MIN;

/// The head cuts before an append once a chunk is larger than this (as
/// [`crate::chunkenc::ChunkCutter`] does): room for one maximal sample is left.
const MAX_BYTES_BEFORE_APPEND: usize = MAX_BYTES_PER_XOR_CHUNK - 19;

/// Settled bytes of the open XOR chunk that go to the chunk files once it holds this
/// many (see [`Spill`]): the open chunk then never outgrows the [`OPEN_CHUNK_BYTES`] it
/// starts with, instead of growing to the whole chunk's size (an append grows the
/// buffer when its settled bytes plus the encoder's 40 bytes of slack exceed it; before
/// an append there are at most 55: 55 + 40 < 96). A counter's chunk (≈ 330 bytes) so
/// takes about six writes and the close's two; 88 (a 128-byte buffer) took four and
/// 32 bytes more per series.
const SPILL_AT: usize = 56;

/// The buffer an open XOR chunk of the head starts with: a 112-byte glibc chunk.
const OPEN_CHUNK_BYTES: usize = 96;

const _: () = assert!(SPILL_AT - 1 + XorChunk::SLACK < OPEN_CHUNK_BYTES);

/// Bytes a reservation for an open chunk never exceeds: the largest XOR chunk.
const MAX_RESERVATION: usize = PREFIX_LEN + MAX_BYTES_PER_XOR_CHUNK + 32 + CRC_LEN;

/// Where the open XOR chunk's front bytes are written while it is still open: a
/// reservation of `cap` bytes at `loc` in the chunk files, made at the first spill and
/// sized from the chunk's bytes per sample so far (moved to a larger one in the rare
/// case the chunk outgrows it). The closed chunk is then complete in place: its tail,
/// its CRC and its sample count (which every append rewrote) are written when it
/// closes. `seg == 0` (segments are numbered from 1): no reservation. Packed (14
/// bytes, 2-aligned) so that the series state fits a smaller allocation. `loc` is the
/// record's start: the chunk's bytes follow its [`PREFIX_LEN`]-byte prefix.
#[derive(Clone, Copy)]
#[repr(C, packed(2))]
struct Spill {
    seg: u32,
    off: u32,
    /// CRC32C of the written chunk bytes after the first two (the sample count).
    crc: u32,
    /// The reservation's size, and [`STOPPED`] once a write failed: the rest of this
    /// chunk stays in memory.
    cap_stopped: u16,
}

const STOPPED: u16 = 0x8000;

impl Spill {
    const NONE: Spill = Spill {
        seg: 0,
        off: 0,
        crc: 0,
        cap_stopped: 0,
    };

    fn loc(self) -> ChunkLoc {
        ChunkLoc {
            seg: self.seg,
            off: self.off,
        }
    }

    fn cap(self) -> usize {
        usize::from(self.cap_stopped & !STOPPED)
    }

    fn stopped(self) -> bool {
        self.cap_stopped & STOPPED != 0
    }
}

/// The parts of a series' state few series have, boxed together ([`SeriesState::rare`]).
#[derive(Default)]
struct Rare {
    /// The records (prefix and bytes) of the closed chunks kept in memory (a head
    /// without chunk files, or a failed write), in their order. Rebuilt (exact size)
    /// when such a chunk closes or is truncated, which happens every ~120 samples:
    /// cheaper than an allocation per chunk kept, and never changed in place, so
    /// readers share it.
    closed_data: Option<Bytes>,
    /// The logical offset of `closed_data`'s first byte: records keep their offsets
    /// when truncation drops the ones before them (a record on disk may name one).
    mem_base: u32,
    /// Histogram state, from the first histogram sample on.
    hist: Option<Box<HistState>>,
    /// Out-of-order float samples, from the first one on.
    ooo: Option<Box<OooState>>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.closed_data.is_none() && self.hist.is_none() && self.ooo.is_none()
    }
}

pub(super) struct MemSeries {
    /// Ids into the head's [`SymbolTable`](super::symbols::SymbolTable).
    pub labels: super::symbols::LabelIds,
    pub state: Mutex<SeriesState>,
}

impl MemSeries {
    pub fn new(labels: super::symbols::LabelIds) -> Self {
        MemSeries {
            labels,
            state: Mutex::new(SeriesState::new()),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SeriesState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The mutable part of a series.
pub(super) struct SeriesState {
    /// The newest closed chunk. Closed chunks never overlap and are all before the
    /// open chunk; the older ones are read from the records ([`Walk`]). Left as it is
    /// when truncation drops every closed chunk: the open chunk's written prefix (and
    /// its CRC) holds it.
    newest: ClosedChunk,
    /// Closed chunks: `newest` and the ones before it.
    n_closed: u32,
    /// What few series have (closed chunks kept in memory, histograms, out-of-order
    /// samples): one pointer for all three, `None` while none is there.
    rare: Option<Box<Rare>>,
    /// The open chunk; `None` before the first sample and after truncation emptied it.
    /// With chunk files its settled front bytes are written out as it grows ([`Spill`]).
    head: Option<XorChunk>,
    spill: Spill,
    /// First timestamp of the open chunk.
    head_min_t: i64,
    /// The open chunk is cut before a sample at or after this time.
    next_at: i64,
    /// Timestamp and value bits of the newest sample ([`NO_SAMPLES`] before the first).
    last_t: i64,
    last_v: u64,
    last_kind: LastKind,
    /// Set by a truncation that found a series which never had a sample; the next one
    /// collects it (one grace period between `get_or_create` and the first append).
    pub gc_marked: bool,
}

/// What an accepted append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Appended {
    /// Stored; `new_chunk` when it opened a chunk.
    Stored { new_chunk: bool },
    /// Same timestamp and value as the newest sample: ignored.
    Duplicate,
}

impl SeriesState {
    /// A detached series state for [`super::cut_chunks`].
    pub(super) fn new_for_cut() -> Self {
        Self::new()
    }

    fn new() -> Self {
        SeriesState {
            newest: ClosedChunk::NONE,
            n_closed: 0,
            rare: None,
            head: None,
            spill: Spill::NONE,
            head_min_t: 0,
            next_at: 0,
            last_t: NO_SAMPLES,
            last_v: 0,
            last_kind: LastKind::Float,
            gc_marked: false,
        }
    }

    pub fn last_t(&self) -> i64 {
        self.last_t
    }

    /// Timestamp and value bits of the newest sample, if any.
    pub fn last(&self) -> Option<(i64, u64)> {
        (self.last_t != NO_SAMPLES).then_some((self.last_t, self.last_v))
    }

    fn closed_data(&self) -> Option<&Bytes> {
        self.rare.as_ref().and_then(|r| r.closed_data.as_ref())
    }

    fn hist(&self) -> Option<&HistState> {
        self.rare.as_ref().and_then(|r| r.hist.as_deref())
    }

    fn ooo(&self) -> Option<&OooState> {
        self.rare.as_ref().and_then(|r| r.ooo.as_deref())
    }

    /// The rare parts, made when first needed.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Drop the rare parts' box once nothing is in it.
    fn tidy_rare(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// The records of the closed chunks kept in memory.
    fn mem_data(&self) -> &[u8] {
        self.closed_data().map_or(&[], |b| &b[..])
    }

    fn mem_base(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.mem_base)
    }

    /// Closed chunk `c`'s record (prefix and bytes), which is in memory.
    fn mem_record(&self, c: &ClosedChunk) -> Result<Bytes> {
        let start = c.pos.wrapping_sub(self.mem_base()) as usize;
        let range = start..start + PREFIX_LEN + c.len as usize;
        match self.closed_data() {
            Some(b) if c.pos >= self.mem_base() && range.end <= b.len() => Ok(b.slice(range)),
            _ => Err(Error::Invalid(
                "a head chunk kept in memory is not among the series' records".into(),
            )),
        }
    }

    /// A walk over the closed chunks from the newest back.
    fn walk<'a>(&'a self, files: Files<'a>, via: Via) -> Walk<'a> {
        Walk {
            st: self,
            reader: files.filter(|_| self.n_closed > 0).map(ChunkFiles::reader),
            via,
            cur: self.newest,
            left: self.n_closed,
        }
    }

    /// Append a completed chunk to the closed ones: written to the chunk files when
    /// the head has them (kept in memory if that fails), else kept in memory.
    fn push_closed(
        &mut self,
        files: Files<'_>,
        min_t: i64,
        max_t: i64,
        encoding: Encoding,
        data: &[u8],
    ) {
        let len = u32::try_from(data.len()).expect("a chunk stays under 4 GiB");
        let prefix = self.newest.to_bytes();
        let mut on_disk = None;
        if let Some(f) = files {
            match f.write(&prefix, data, max_t) {
                Ok(loc) => on_disk = Some(loc),
                Err(e) => f.note_write_failure(&e),
            }
        }
        let (pos, seg) = match on_disk {
            Some(loc) => (loc.off, loc.seg),
            None => {
                let old = self.mem_data();
                let mut buf = Vec::with_capacity(old.len() + PREFIX_LEN + data.len());
                buf.extend_from_slice(old);
                buf.extend_from_slice(&prefix);
                buf.extend_from_slice(data);
                let pos = u32::try_from(old.len())
                    .ok()
                    .and_then(|p| p.checked_add(self.mem_base()))
                    .filter(|p| p.checked_add(PREFIX_LEN as u32 + len).is_some())
                    .expect("a series' closed chunks stay under 4 GiB");
                // len == capacity: the `Bytes` takes the buffer without another allocation
                self.rare_mut().closed_data = Some(Bytes::from(buf));
                (pos, IN_MEMORY)
            }
        };
        self.push_record(min_t, max_t, encoding, pos, len, seg);
    }

    /// Make the chunk whose record is at `pos` in segment `seg` the newest closed one
    /// (its prefix holds the one that was).
    fn push_record(
        &mut self,
        min_t: i64,
        max_t: i64,
        encoding: Encoding,
        pos: u32,
        len: u32,
        seg: u32,
    ) {
        self.newest = ClosedChunk {
            min_t,
            span: u32::try_from(max_t - min_t)
                .expect("chunks are cut within a chunk range of at most MAX_CHUNK_SPAN"),
            pos,
            len,
            seg_enc: seg | (encoding as u32) << 24,
        };
        self.n_closed += 1;
    }

    /// Whether a chunk is open.
    fn has_open(&self) -> bool {
        self.head.is_some() || self.open_hist().is_some()
    }

    /// A copy of the open chunk, if any: (encoding, bytes). The front bytes an open
    /// XOR chunk wrote to the chunk files are read back ([`Via`]) and its sample count
    /// set, so the copy is the whole chunk as it stands.
    fn open_copy(&self, files: Files<'_>, via: Via) -> Result<Option<(Encoding, Bytes)>> {
        match (&self.head, self.open_hist()) {
            (Some(h), _) => self
                .xor_copy(files, via, h)
                .map(|d| Some((Encoding::Xor, d))),
            (None, Some(h)) => Ok(Some((h.encoding(), Bytes::copy_from_slice(h.bytes())))),
            (None, None) => Ok(None),
        }
    }

    /// A copy of the whole open XOR chunk `h` (this series' open chunk, taken out or not).
    fn xor_copy(&self, files: Files<'_>, via: Via, h: &XorChunk) -> Result<Bytes> {
        if h.spilled() == 0 {
            return Ok(Bytes::copy_from_slice(h.held()));
        }
        let f = files.ok_or_else(|| {
            Error::Invalid("an open head chunk is on disk but the head has no chunk files".into())
        })?;
        let front = f.read_part(self.spill.loc(), PREFIX_LEN + h.spilled(), via == Via::Map)?;
        let mut data = Vec::with_capacity(h.len());
        data.extend_from_slice(&front[PREFIX_LEN..]);
        data.extend_from_slice(h.held());
        data[..2].copy_from_slice(&h.header());
        Ok(Bytes::from(data))
    }

    /// Write the open XOR chunk's settled bytes to the chunk files once there are
    /// [`SPILL_AT`] of them ([`Spill`]); a failed write keeps the rest of the chunk in
    /// memory.
    #[inline]
    fn maybe_spill(&mut self, files: Files<'_>) {
        let (Some(f), Some(h)) = (files, &self.head) else {
            return;
        };
        if h.settled() < SPILL_AT || self.spill.stopped() {
            return;
        }
        let written = h.spilled();
        if let Err(e) = self.spill_front(f) {
            // counted once per chunk: with nothing written yet, by the close's write
            if written > 0 {
                f.note_write_failure(&e);
            }
            self.spill.cap_stopped |= STOPPED;
        }
    }

    #[cold]
    #[inline(never)]
    fn spill_front(&mut self, f: &ChunkFiles) -> Result<()> {
        let h = self.head.as_ref().expect("an open chunk");
        let (at, n) = (h.spilled(), h.settled());
        if self.spill.seg == 0 {
            // room for the whole chunk at the rate so far (120 samples, a quarter more),
            // as most chunks end at 120 samples
            let per = h.len() as f64 / h.num_samples().max(1) as f64;
            let est = (per * SAMPLES_PER_CHUNK as f64 * 1.25) as usize + 64;
            let cap = PREFIX_LEN
                + est.clamp(at + n + 64, MAX_RESERVATION - PREFIX_LEN - CRC_LEN)
                + CRC_LEN;
            let loc = f.reserve(cap, self.spill_max_t())?;
            self.spill = Spill {
                seg: loc.seg,
                off: loc.off,
                crc: 0,
                cap_stopped: cap as u16,
            };
        } else if PREFIX_LEN + at + n + CRC_LEN > self.spill.cap() {
            self.move_spill(f, at, MAX_RESERVATION)?;
        }
        let prefix = self.newest.to_bytes();
        let h = self.head.as_mut().expect("an open chunk");
        let bytes = &h.held()[..n];
        if at == 0 {
            // the record's prefix (the newest closed chunk, which stays so until this
            // chunk closes) with the first bytes
            let mut buf = [0u8; PREFIX_LEN + SPILL_AT + 64];
            buf[..PREFIX_LEN].copy_from_slice(&prefix);
            buf[PREFIX_LEN..PREFIX_LEN + n].copy_from_slice(bytes);
            f.write_at(self.spill.loc(), 0, &buf[..PREFIX_LEN + n])?;
        } else {
            f.write_at(self.spill.loc(), PREFIX_LEN + at, bytes)?;
        }
        // the CRC covers the chunk after its sample count, which is written at the end
        let counted = if at == 0 { &bytes[2.min(n)..] } else { bytes };
        self.spill.crc = crc32c::crc32c_append(self.spill.crc, counted);
        h.drop_front(n);
        Ok(())
    }

    /// Every sample of the open chunk is before `next_at` (it is cut at that time): a
    /// bound for the segment's newest sample time, which decides when truncation may
    /// delete it.
    fn spill_max_t(&self) -> i64 {
        self.next_at.saturating_sub(1).max(self.last_t)
    }

    /// Move the open chunk's prefix and `at` written front bytes to a new reservation
    /// of `cap` bytes.
    fn move_spill(&mut self, f: &ChunkFiles, at: usize, cap: usize) -> Result<()> {
        let front = f.read_part(self.spill.loc(), PREFIX_LEN + at, false)?;
        let loc = f.reserve(cap, self.spill_max_t())?;
        f.write_at(loc, 0, &front)?;
        self.spill.seg = loc.seg;
        self.spill.off = loc.off;
        self.spill.cap_stopped = cap as u16;
        Ok(())
    }

    /// Close the open XOR chunk `h` (taken out of `self.head`) into the closed ones.
    fn close_xor(&mut self, files: Files<'_>, h: &XorChunk) {
        let (min_t, max_t) = (self.head_min_t, self.last_t);
        if h.spilled() == 0 {
            // a reservation made but never written to is left behind, as at truncation
            self.spill = Spill::NONE;
            self.push_closed(files, min_t, max_t, Encoding::Xor, h.held());
            return;
        }
        let f = files.expect("a chunk with bytes on disk has chunk files");
        // after a failed write (counted then), the rest is not tried
        let written = !self.spill.stopped()
            && self
                .finish_spilled(f, h)
                .inspect_err(|e| f.note_write_failure(e))
                .is_ok();
        if written {
            let loc = self.spill.loc();
            let len = u32::try_from(h.len()).expect("a chunk stays under 4 GiB");
            self.push_record(min_t, max_t, Encoding::Xor, loc.off, len, loc.seg);
        } else {
            // the whole chunk in memory instead, its front read back
            match self.xor_copy(files, Via::Copy, h) {
                // push_closed's memory path (no files: no second write is tried)
                Ok(data) => self.push_closed(None, min_t, max_t, Encoding::Xor, &data),
                Err(e) => tracing::error!(error = %e, min_t, max_t,
                    "cannot read back a head chunk's front bytes: its samples are only in the WAL"),
            }
        }
        self.spill = Spill::NONE;
    }

    /// Write the rest of a spilled chunk, its CRC and its sample count in place.
    fn finish_spilled(&mut self, f: &ChunkFiles, h: &XorChunk) -> Result<()> {
        if PREFIX_LEN + h.len() + CRC_LEN > self.spill.cap() {
            self.move_spill(f, h.spilled(), PREFIX_LEN + h.len() + CRC_LEN)?;
        }
        let tail = h.held();
        // the prefix as the first spill wrote it: `newest` has not changed since
        let mut front = [0u8; PREFIX_LEN + 2];
        front[..PREFIX_LEN].copy_from_slice(&self.newest.to_bytes());
        front[PREFIX_LEN..].copy_from_slice(&h.header());
        let crc = crc_of_parts(
            &front,
            crc32c::crc32c_append(self.spill.crc, tail),
            h.len() - 2,
        );
        let mut buf = [0u8; MAX_RESERVATION];
        let n = tail.len() + CRC_LEN;
        buf[..tail.len()].copy_from_slice(tail);
        buf[tail.len()..n].copy_from_slice(&crc);
        f.write_at(self.spill.loc(), PREFIX_LEN + h.spilled(), &buf[..n])?;
        f.write_at(self.spill.loc(), PREFIX_LEN, &h.header())
    }

    /// The in-order chunks overlapping `[mint, maxt]` (both inclusive), oldest first:
    /// closed ones shared or read from disk, the open one copied.
    fn chunks_in(
        &self,
        files: Files<'_>,
        via: Via,
        mint: i64,
        maxt: i64,
        out: &mut Vec<HeadChunk>,
    ) -> Result<()> {
        let start = out.len();
        let mut w = self.walk(files, via);
        while let Some(c) = w.current() {
            if c.max_t() < mint {
                break;
            }
            if let Some(data) = w.step(c.min_t <= maxt)? {
                out.push(HeadChunk {
                    min_time: c.min_t,
                    max_time: c.max_t(),
                    encoding: c.encoding(),
                    data,
                });
            }
        }
        // walked newest first
        out[start..].reverse();
        if self.has_open() && self.last_t >= mint && self.head_min_t <= maxt {
            if let Some((encoding, data)) = self.open_copy(files, via)? {
                out.push(HeadChunk {
                    min_time: self.head_min_t,
                    max_time: self.last_t,
                    encoding,
                    data,
                });
            }
        }
        Ok(())
    }

    fn open_hist(&self) -> Option<&HistChunk> {
        self.hist().and_then(|h| h.open.as_ref())
    }

    /// Whether no chunk is left.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
            && self.n_closed == 0
            && self.open_hist().is_none()
            && self.ooo_span().is_none()
    }

    /// The oldest sample time held, if any, given the oldest closed chunk's start.
    fn min_t_with(&self, oldest_closed: Option<i64>) -> Option<i64> {
        let in_order = match oldest_closed {
            Some(t) => Some(t),
            None if self.has_open() => Some(self.head_min_t),
            None => None,
        };
        match (in_order, self.ooo_span()) {
            (Some(a), Some((b, _))) => Some(a.min(b)),
            (a, b) => a.or(b.map(|b| b.0)),
        }
    }

    fn ooo_span(&self) -> Option<(i64, i64)> {
        self.ooo().and_then(|o| o.span())
    }

    /// Whether out-of-order samples overlap `[mint, maxt]`.
    fn ooo_overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.ooo_span()
            .is_some_and(|(lo, hi)| hi >= mint && lo <= maxt)
    }

    /// [`append`](Self::append), and with `ooo` a sample older than the newest one goes
    /// to the out-of-order buffer (the caller checked the window) instead of being
    /// refused.
    #[inline]
    pub fn append_with(
        &mut self,
        files: Files<'_>,
        t: i64,
        v: f64,
        chunk_range: i64,
        ooo: bool,
    ) -> Result<Appended, AppendError> {
        match self.append(files, t, v, chunk_range) {
            Err(AppendError::OutOfOrder { .. }) if ooo => self.insert_ooo(files, t, v),
            r => r,
        }
    }

    /// Prometheus's rule for an out-of-order float at `t`: `Ok(true)` to store it,
    /// `Ok(false)` when a sample with these value bits is held at `t` already (accepted,
    /// nothing stored), an error when one with another value is.
    pub fn check_ooo(&self, files: Files<'_>, t: i64, v_bits: u64) -> Result<bool, AppendError> {
        let held = self
            .in_order_value_at(files, t)
            .or_else(|| self.ooo().and_then(|o| o.value_at(t)));
        match held {
            None => Ok(true),
            Some(b) if b == v_bits => Ok(false),
            Some(_) => Err(AppendError::DuplicateTimestamp {
                t,
                last_t: self.last_t,
            }),
        }
    }

    /// Value bits of the in-order float sample at `t`, if any (one chunk decoded).
    /// A histogram there gives [`HISTOGRAM_LAST_BITS`], so a float at its timestamp is
    /// a duplicate. A chunk that cannot be read from disk is logged and taken as holding
    /// no sample at `t`: the out-of-order sample is then kept, and on a read of both
    /// the in-order sample wins the tie, so nothing acknowledged is lost.
    fn in_order_value_at(&self, files: Files<'_>, t: i64) -> Option<u64> {
        let warn = |e: Error| {
            tracing::warn!(error = %e, "cannot read a head chunk for an out-of-order duplicate check");
        };
        // the closed chunk holding `t`: the oldest one ending at or after it
        let mut closed = None;
        if self.n_closed > 0 && self.newest.max_t() >= t {
            let mut w = self.walk(files, Via::Copy);
            let found = loop {
                match w.current() {
                    Some(c) if c.max_t() >= t && c.min_t <= t => {
                        break w.step(true).map(|d| d.map(|d| (c.encoding(), d)));
                    }
                    Some(c) if c.max_t() >= t => {
                        if let Err(e) = w.step(false) {
                            break Err(e);
                        }
                    }
                    // in a gap between chunks, or before the oldest
                    _ => break Ok(None),
                }
            };
            match found {
                Ok(Some(c)) => closed = Some(c),
                Ok(None) => return None,
                Err(e) => {
                    warn(e);
                    return None;
                }
            }
        }
        let (encoding, data) = match closed {
            Some(c) => c,
            None if self.head_min_t <= t => match self.open_copy(files, Via::Copy) {
                Ok(open) => open?,
                Err(e) => {
                    warn(e);
                    return None;
                }
            },
            None => return None,
        };
        let data = &data[..];
        let at_t = |ts: &mut dyn Iterator<Item = i64>| ts.take_while(|x| *x <= t).any(|x| x == t);
        match encoding {
            Encoding::Xor => XorIter::new(data)
                .take_while(|s| s.0 <= t)
                .find(|s| s.0 == t)
                .map(|s| s.1.to_bits()),
            Encoding::Histogram => {
                at_t(&mut HistogramIter::new(data).map(|s| s.0)).then_some(HISTOGRAM_LAST_BITS)
            }
            Encoding::FloatHistogram => {
                at_t(&mut FloatHistogramIter::new(data).map(|s| s.0)).then_some(HISTOGRAM_LAST_BITS)
            }
            _ => None,
        }
    }

    /// Store `t` in the out-of-order buffer whatever the series' newest sample (for a
    /// sample below the head's floor), after the duplicate rule.
    pub fn insert_ooo(
        &mut self,
        files: Files<'_>,
        t: i64,
        v: f64,
    ) -> Result<Appended, AppendError> {
        if !self.check_ooo(files, t, v.to_bits())? {
            return Ok(Appended::Duplicate);
        }
        self.rare_mut()
            .ooo
            .get_or_insert_with(Box::default)
            .insert(t, v);
        self.gc_marked = false;
        // not counted as a head chunk (Prometheus counts OOO chunks apart)
        Ok(Appended::Stored { new_chunk: false })
    }

    /// The samples in `[mint, maxt]`, in-order and out-of-order merged: sorted, one per
    /// timestamp (an in-order sample wins a tie), re-cut into chunks.
    fn merged_chunks(
        &self,
        files: Files<'_>,
        via: Via,
        mint: i64,
        maxt: i64,
        chunk_range: i64,
    ) -> Result<Vec<EncodedChunk>> {
        use crate::dedup::Sample;
        let mut in_order: Vec<(i64, Sample)> = Vec::new();
        let mut chunks = Vec::new();
        self.chunks_in(files, via, mint, maxt, &mut chunks)?;
        for c in &chunks {
            let (lo, hi, encoding, data) = (c.min_time, c.max_time, c.encoding, &c.data[..]);
            let keep = |t: &i64| *t >= mint && *t <= maxt;
            match encoding {
                Encoding::Xor => in_order.extend(
                    XorIter::new(data)
                        .filter(|s| keep(&s.0))
                        .map(|(t, v)| (t, Sample::Float(v))),
                ),
                _ => {
                    let c = EncodedChunk {
                        min_time: lo,
                        max_time: hi,
                        encoding,
                        data: data.to_vec(),
                    };
                    // the head wrote these chunks: they decode
                    let all =
                        crate::dedup::decode_samples(std::slice::from_ref(&c)).unwrap_or_default();
                    in_order.extend(all.into_iter().filter(|s| keep(&s.0)));
                }
            }
        }
        let mut ooo = Vec::new();
        if let Some(o) = self.ooo() {
            o.samples_in(mint, maxt, &mut ooo);
        }
        let ooo = ooo
            .into_iter()
            .map(|(t, v)| (t, Sample::Float(v)))
            .collect();
        let merged = crate::dedup::merge_by_time(vec![in_order, ooo]);
        Ok(super::cut_chunks(&merged, chunk_range))
    }

    /// Prometheus's per-series checks and chunk cutting. `chunk_range` > 0.
    #[inline]
    pub fn append(
        &mut self,
        files: Files<'_>,
        t: i64,
        v: f64,
        chunk_range: i64,
    ) -> Result<Appended, AppendError> {
        // a chunk then spans less than a `ClosedChunk` holds
        let chunk_range = chunk_range.min(MAX_CHUNK_SPAN);
        let vb = v.to_bits();
        if !super::check_sample(self.last(), t, vb)? {
            if self.last_kind != LastKind::Float {
                return Err(AppendError::DuplicateTimestamp {
                    t,
                    last_t: self.last_t,
                });
            }
            return Ok(Appended::Duplicate);
        }
        if self.hist().is_some() {
            // a float after histograms: the histogram chunk is complete
            self.close_hist(files);
        }
        let mut new_chunk = true;
        if let Some(h) = &self.head {
            let n = h.num_samples();
            let mut cut = h.len() > MAX_BYTES_BEFORE_APPEND;
            if !cut {
                if n == SAMPLES_PER_CHUNK / 4 {
                    self.next_at =
                        compute_chunk_end_time(self.head_min_t, self.last_t, self.next_at);
                }
                cut = t >= self.next_at || n >= SAMPLES_PER_CHUNK;
            }
            if cut {
                // the next chunk writes into this one's buffer (see `XorChunk::clear`)
                let mut h = self.head.take().expect("open chunk");
                self.close_xor(files, &h);
                h.clear();
                self.head = Some(h);
            } else {
                new_chunk = false;
            }
        }
        if new_chunk {
            self.head_min_t = t;
            self.next_at = range_for_timestamp(t, chunk_range);
        }
        self.head
            .get_or_insert_with(|| XorChunk::with_buffer(OPEN_CHUNK_BYTES))
            .append(t, v);
        self.maybe_spill(files);
        self.last_t = t;
        self.last_v = vb;
        self.last_kind = LastKind::Float;
        self.gc_marked = false;
        Ok(Appended::Stored { new_chunk })
    }

    /// Prometheus's rule for a histogram at `t`: `Ok(false)` for an exact duplicate of
    /// the newest sample (accepted, nothing stored), an error for an older timestamp or
    /// another value at the newest timestamp (a float there included).
    pub(super) fn check_histogram(&self, t: i64, h: HistRef<'_>) -> Result<bool, AppendError> {
        if self.last_t == NO_SAMPLES || t > self.last_t {
            return Ok(true);
        }
        let last_t = self.last_t;
        if t < last_t {
            return Err(AppendError::OutOfOrder { t, last_t });
        }
        let equal = match (h, self.hist()) {
            (HistRef::Int(h), Some(s)) if self.last_kind == LastKind::Histogram => {
                h.equals(&s.last_int)
            }
            (HistRef::Float(h), Some(s)) if self.last_kind == LastKind::FloatHistogram => {
                h.equals(&s.last_float)
            }
            _ => false,
        };
        if equal {
            Ok(false)
        } else {
            Err(AppendError::DuplicateTimestamp { t, last_t })
        }
    }

    /// Append a histogram with the per-series checks and Prometheus's cutting rules for
    /// histogram chunks (`histogramsAppendPreprocessor` + `AppendHistogram`): a new
    /// chunk when the open one is of another encoding, at the chunk-range boundary
    /// re-predicted once the chunk reaches a quarter of 1 KiB, at 2 KiB, and (by the
    /// appender) on a counter reset or a layout change; new buckets re-code the chunk.
    pub(super) fn append_histogram(
        &mut self,
        files: Files<'_>,
        t: i64,
        h: HistRef<'_>,
        chunk_range: i64,
    ) -> Result<Appended, AppendError> {
        let chunk_range = chunk_range.min(MAX_CHUNK_SPAN);
        if !self.check_histogram(t, h)? {
            return Ok(Appended::Duplicate);
        }
        self.close_head(files);
        // taken out while chunks are closed into `self`, put back below
        let mut st = self
            .rare
            .as_mut()
            .and_then(|r| r.hist.take())
            .unwrap_or_else(|| {
                Box::new(HistState {
                    open: None,
                    end_computed: false,
                    last_int: Histogram::default(),
                    last_float: FloatHistogram::default(),
                })
            });
        let same_kind = matches!(
            (&st.open, h),
            (Some(HistChunk::Int(_)), HistRef::Int(_))
                | (Some(HistChunk::Float(_)), HistRef::Float(_))
        );
        let mut prev: Option<HistChunk> = None;
        let prev_min_t = self.head_min_t;
        let mut created = false;
        if !same_kind {
            // another encoding (or none) open: it is complete
            if let Some(c) = st.open.take() {
                self.push_closed(files, self.head_min_t, self.last_t, c.encoding(), c.bytes());
            }
            created = true;
        } else if let Some(c) = &st.open {
            let n = c.num_samples();
            let bytes = c.bytes().len();
            let target = TARGET_BYTES_PER_HISTOGRAM_CHUNK;
            let next_range_start = if st.end_computed {
                range_for_timestamp(self.head_min_t, chunk_range)
            } else {
                self.next_at
            };
            if !st.end_computed && bytes >= target / 4 {
                let ratio = target as f64 / bytes as f64;
                self.next_at =
                    compute_chunk_end_time_ratio(self.head_min_t, self.last_t, self.next_at, ratio);
                st.end_computed = true;
            }
            let cut = ((t >= self.next_at || bytes >= target * 2)
                && (n >= MIN_SAMPLES_PER_HISTOGRAM_CHUNK || t >= next_range_start))
                // the header cannot count more
                || n >= usize::from(u16::MAX) - 1;
            if cut {
                prev = st.open.take();
                created = true;
            }
        }
        if created {
            st.end_computed = false;
            self.head_min_t = t;
            self.next_at = range_for_timestamp(t, chunk_range);
            st.open = Some(match h {
                HistRef::Int(_) => HistChunk::Int(HistogramChunk::new()),
                HistRef::Float(_) => HistChunk::Float(FloatHistogramChunk::new()),
            });
        }
        let open = st.open.as_mut().expect("opened above");
        let cut_to = match (open, h) {
            (HistChunk::Int(c), HistRef::Int(h)) => {
                let p = match &prev {
                    Some(HistChunk::Int(p)) => Some(p),
                    _ => None,
                };
                match c.append(p, t, h) {
                    AppendOutcome::NewChunk(n) => Some(HistChunk::Int(n)),
                    AppendOutcome::Appended | AppendOutcome::Recoded => None,
                }
            }
            (HistChunk::Float(c), HistRef::Float(h)) => {
                let p = match &prev {
                    Some(HistChunk::Float(p)) => Some(p),
                    _ => None,
                };
                match c.append(p, t, h) {
                    AppendOutcome::NewChunk(n) => Some(HistChunk::Float(n)),
                    AppendOutcome::Appended | AppendOutcome::Recoded => None,
                }
            }
            _ => unreachable!("the open chunk matches the sample's kind"),
        };
        let old = cut_to.map(|n| st.open.replace(n).expect("open"));
        if let Some(p) = prev {
            self.push_closed(files, prev_min_t, self.last_t, p.encoding(), p.bytes());
        }
        if let Some(old) = old {
            self.push_closed(
                files,
                self.head_min_t,
                self.last_t,
                old.encoding(),
                old.bytes(),
            );
            self.head_min_t = t;
            // Prometheus keeps histogramChunkHasComputedEndTime here (only its append
            // preprocessor resets it)
            self.next_at = range_for_timestamp(t, chunk_range);
            created = true;
        }
        match h {
            HistRef::Int(h) => st.last_int.clone_from(h),
            HistRef::Float(h) => st.last_float.clone_from(h),
        }
        self.rare_mut().hist = Some(st);
        self.last_kind = h.kind();
        self.last_t = t;
        self.last_v = HISTOGRAM_LAST_BITS;
        self.gc_marked = false;
        Ok(Appended::Stored { new_chunk: created })
    }

    fn close_hist(&mut self, files: Files<'_>) {
        let Some(c) = self
            .rare
            .as_mut()
            .and_then(|r| r.hist.as_mut())
            .and_then(|st| st.open.take())
        else {
            return;
        };
        self.push_closed(files, self.head_min_t, self.last_t, c.encoding(), c.bytes());
    }

    fn close_head(&mut self, files: Files<'_>) {
        let Some(h) = self.head.take() else { return };
        self.close_xor(files, &h);
    }

    /// Drop every chunk that ends before `mint`; returns how many were dropped and the
    /// oldest sample time left (in order or out of order). The closed chunks
    /// kept are found by reading their records back from the newest (a `pread` of a
    /// prefix per chunk kept); when one cannot be read, all are kept (logged) and the
    /// oldest time left is taken as `mint`.
    pub fn truncate_before(&mut self, files: Files<'_>, mint: i64) -> (usize, Option<i64>) {
        let mut keep = 0u32;
        let mut oldest_kept = None;
        // the oldest in-memory chunk kept: its record and those after it stay
        let mut mem_from = None;
        let mut w = self.walk(files, Via::Copy);
        while let Some(c) = w.current() {
            if c.max_t() < mint {
                break;
            }
            keep += 1;
            oldest_kept = Some(c.min_t);
            if c.in_memory() {
                mem_from = Some(c.pos);
            }
            if let Err(e) = w.step(false) {
                tracing::error!(error = %e, "cannot read a head chunk's record to truncate the series: its closed chunks are kept");
                keep = self.n_closed;
                oldest_kept = Some(mint);
                mem_from = Some(self.mem_base());
                break;
            }
        }
        drop(w);
        let mut removed = (self.n_closed - keep) as usize;
        self.n_closed = keep;
        if let Some(len) = self.closed_data().map(|b| b.len() as u32) {
            let base = self.mem_base();
            let new_base = mem_from.unwrap_or(base + len);
            if new_base > base {
                // copied, not sliced: a slice would keep the dropped chunks' bytes alive
                let rest = &self.mem_data()[(new_base - base) as usize..];
                let rest = (!rest.is_empty()).then(|| Bytes::copy_from_slice(rest));
                let r = self.rare_mut();
                r.closed_data = rest;
                r.mem_base = new_base;
            }
        }
        if self.head.is_some() && self.last_t < mint {
            self.head = None;
            // its reservation is left behind: the segment goes once truncation passes it
            self.spill = Spill::NONE;
            removed += 1;
        }
        let last_t = self.last_t;
        if let Some(r) = self.rare.as_mut() {
            if let Some(st) = r.hist.as_mut() {
                if st.open.is_some() && last_t < mint {
                    st.open = None;
                    removed += 1;
                }
            }
            if let Some(o) = r.ooo.as_mut() {
                o.truncate_before(mint);
                if o.is_empty() {
                    r.ooo = None;
                }
            }
        }
        self.tidy_rare();
        (removed, self.min_t_with(oldest_kept))
    }

    /// Whether any chunk has samples in `[mint, maxt]`: the closed chunks' records are
    /// read back from the newest only as far as `mint` (a read error says yes, so the
    /// read of the chunks reports it).
    pub fn has_chunks_overlapping(&self, files: Files<'_>, mint: i64, maxt: i64) -> bool {
        if self.ooo_overlaps(mint, maxt)
            || (self.has_open() && self.last_t >= mint && self.head_min_t <= maxt)
        {
            return true;
        }
        let mut w = self.walk(files, Via::Map);
        while let Some(c) = w.current() {
            if c.max_t() < mint {
                return false;
            }
            if c.min_t <= maxt || w.step(false).is_err() {
                return true;
            }
        }
        false
    }

    /// The chunks overlapping `[mint, maxt]` (both inclusive): closed ones shared (or
    /// read from disk), the open one copied. With out-of-order samples in the range,
    /// the samples in it are merged and re-cut into new chunks, so readers always get
    /// sorted, non-overlapping chunks.
    pub fn chunks_overlapping(
        &self,
        files: Files<'_>,
        mint: i64,
        maxt: i64,
        chunk_range: i64,
        out: &mut Vec<HeadChunk>,
    ) -> Result<()> {
        if self.ooo_overlaps(mint, maxt) {
            out.extend(
                self.merged_chunks(files, Via::Map, mint, maxt, chunk_range)?
                    .into_iter()
                    .map(HeadChunk::from),
            );
            return Ok(());
        }
        self.chunks_in(files, Via::Map, mint, maxt, out)
    }

    /// Chunks holding exactly the samples in `[mint, maxt)`: chunks inside the range are
    /// copied as they are, chunks straddling a bound are re-encoded; out-of-order
    /// samples in the range are merged in (the whole range re-cut).
    pub fn chunks_for_block(
        &self,
        files: Files<'_>,
        mint: i64,
        maxt: i64,
        chunk_range: i64,
    ) -> Result<Vec<EncodedChunk>> {
        if maxt <= mint {
            return Ok(Vec::new());
        }
        if self.ooo_overlaps(mint, maxt - 1) {
            return self.merged_chunks(files, Via::Copy, mint, maxt - 1, chunk_range);
        }
        let mut out = Vec::new();
        let mut chunks = Vec::new();
        self.chunks_in(files, Via::Copy, mint, maxt - 1, &mut chunks)?;
        for c in &chunks {
            let (lo, hi, encoding, data) = (c.min_time, c.max_time, c.encoding, &c.data[..]);
            if lo >= mint && hi < maxt {
                out.push(EncodedChunk {
                    min_time: lo,
                    max_time: hi,
                    encoding,
                    data: data.to_vec(),
                });
                continue;
            }
            match encoding {
                Encoding::Histogram | Encoding::FloatHistogram => {
                    out.extend(rechunk_histograms(encoding, data, mint, maxt));
                    continue;
                }
                _ => {}
            }
            let mut c = XorChunk::new();
            let (mut first, mut last) = (i64::MAX, i64::MIN);
            for (t, v) in XorIter::new(data) {
                if t >= mint && t < maxt {
                    c.append(t, v);
                    first = first.min(t);
                    last = t;
                }
            }
            if c.num_samples() > 0 {
                let mut data = c.into_bytes();
                data.shrink_to_fit();
                out.push(EncodedChunk {
                    min_time: first,
                    max_time: last,
                    encoding: Encoding::Xor,
                    data,
                });
            }
        }
        Ok(out)
    }

    /// Appends the float samples with timestamp `>= since` to `out`, out-of-order ones
    /// merged in: sorted, one per timestamp.
    pub fn samples_since(
        &self,
        files: Files<'_>,
        since: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<()> {
        let start = out.len();
        let mut chunks = Vec::new();
        self.chunks_in(files, Via::Copy, since, i64::MAX, &mut chunks)?;
        for c in chunks.iter().filter(|c| c.encoding == Encoding::Xor) {
            out.extend(XorIter::new(&c.data).filter(|(t, _)| *t >= since));
        }
        if let Some(o) = self.ooo() {
            o.samples_in(since, i64::MAX, out);
            // stable: an in-order sample stays first at a tie and wins it
            out[start..].sort_by_key(|s| s.0);
            let mut merged = out.split_off(start);
            merged.dedup_by_key(|s| s.0);
            out.extend(merged);
        }
        Ok(())
    }

    /// Appends the out-of-order samples with timestamp `< before` to `out`, sorted.
    pub fn ooo_samples_before(&self, before: i64, out: &mut Vec<(i64, f64)>) {
        if let Some(o) = self.ooo() {
            o.samples_in(i64::MIN, before.saturating_sub(1), out);
        }
    }

    /// Appends the histogram samples with timestamp `>= since` to `out`, as written.
    pub fn histograms_since(
        &self,
        files: Files<'_>,
        since: i64,
        out: &mut Vec<(i64, HistogramSample)>,
    ) -> Result<()> {
        if self.hist().is_none() {
            return Ok(());
        }
        let mut chunks = Vec::new();
        self.chunks_in(files, Via::Copy, since, i64::MAX, &mut chunks)?;
        for c in &chunks {
            let data = &c.data[..];
            match c.encoding {
                Encoding::Histogram => out.extend(
                    HistogramIter::new(data)
                        .filter(|(t, _)| *t >= since)
                        .map(|(t, h)| (t, HistogramSample::Histogram(h))),
                ),
                Encoding::FloatHistogram => out.extend(
                    FloatHistogramIter::new(data)
                        .filter(|(t, _)| *t >= since)
                        .map(|(t, h)| (t, HistogramSample::FloatHistogram(h))),
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// Encoded bytes of the closed chunks (in memory, in the chunk files), walked back
    /// through their records (a `pread` per chunk on disk: for gauges, not hot paths).
    fn closed_bytes(&self, files: Files<'_>) -> (usize, usize) {
        let (mut mem, mut disk) = (0, 0);
        let mut w = self.walk(files, Via::Copy);
        while let Some(c) = w.current() {
            if c.in_memory() {
                mem += c.len as usize;
            } else {
                disk += c.len as usize;
            }
            if w.step(false).is_err() {
                break;
            }
        }
        (mem, disk)
    }

    /// Memory accounting in one walk over the closed chunks: (encoded bytes of every
    /// chunk in memory, the open one's used part and out-of-order ones included;
    /// encoded bytes in the chunk files, the closed chunks there and the open chunk's
    /// written front; other heap bytes owned, the in-memory chunks' record prefixes
    /// and the open chunk's spare room among them).
    pub fn memory(&self, files: Files<'_>) -> (usize, usize, usize) {
        let (mem, disk) = self.closed_bytes(files);
        let chunk = mem
            + self.head.as_ref().map_or(0, |h| h.held().len())
            + self.open_hist().map_or(0, |h| h.bytes().len())
            + self.ooo().map_or(0, |o| o.data_bytes());
        let disk = disk + self.head.as_ref().map_or(0, XorChunk::spilled);
        (chunk, disk, self.overhead_bytes(mem))
    }

    /// Heap bytes owned besides chunk data, given the in-memory closed chunks' bytes
    /// (their records' prefixes are the rest of `closed_data`).
    fn overhead_bytes(&self, mem_closed: usize) -> usize {
        self.mem_data().len().saturating_sub(mem_closed)
            + self
                .rare
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Rare>())
            + self.ooo().map_or(0, |o| o.overhead_bytes())
            + self
                .head
                .as_ref()
                .map_or(0, |h| h.capacity() - h.held().len())
            + self.hist().map_or(0, |st| {
                std::mem::size_of::<HistState>()
                    + st.open
                        .as_ref()
                        .map_or(0, |c| c.capacity().saturating_sub(c.bytes().len()))
                    + st.last_int.positive_buckets.capacity() * 8
                    + st.last_int.negative_buckets.capacity() * 8
                    + st.last_float.positive_buckets.capacity() * 8
                    + st.last_float.negative_buckets.capacity() * 8
            })
    }
}

fn rechunk_histograms(encoding: Encoding, data: &[u8], mint: i64, maxt: i64) -> Vec<EncodedChunk> {
    crate::histogram::chunk::rechunk_in_range(encoding, data, mint, maxt)
        .into_iter()
        .map(|(min_time, max_time, data)| EncodedChunk {
            min_time,
            max_time,
            encoding,
            data,
        })
        .collect()
}
