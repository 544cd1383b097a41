//! One in-memory series: its interned labels, compact closed chunks and the open XOR
//! chunk being appended to, with Prometheus's chunk-cutting rule.

use std::sync::Mutex;

use crate::chunkenc::{
    compute_chunk_end_time, range_for_timestamp, EncodedChunk, Encoding, XorChunk, XorIter,
    MAX_BYTES_PER_XOR_CHUNK, SAMPLES_PER_CHUNK,
};
use crate::labels::Label;

use super::AppendError;

/// A chunk that is no longer appended to: only its time range and its bytes, exactly as
/// they go into a block's `chunks/` segment.
pub(super) struct ClosedChunk {
    pub min_t: i64,
    pub max_t: i64,
    pub data: Box<[u8]>,
}

/// `last_t` of a series that never had a sample.
pub(super) const NO_SAMPLES: i64 = i64::MIN;

/// The head cuts before an append once a chunk is larger than this (as
/// [`crate::chunkenc::ChunkCutter`] does): room for one maximal sample is left.
const MAX_BYTES_BEFORE_APPEND: usize = MAX_BYTES_PER_XOR_CHUNK - 19;

pub(super) struct MemSeries {
    pub labels: Box<[Label]>,
    pub state: Mutex<SeriesState>,
}

impl MemSeries {
    pub fn new(labels: Box<[Label]>) -> Self {
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
    /// Oldest first, never overlapping, all before the open chunk.
    closed: Box<[ClosedChunk]>,
    /// The open chunk; `None` before the first sample and after truncation emptied it.
    head: Option<XorChunk>,
    /// First timestamp of the open chunk.
    head_min_t: i64,
    /// The open chunk is cut before a sample at or after this time.
    next_at: i64,
    /// Timestamp and value bits of the newest sample ([`NO_SAMPLES`] before the first).
    last_t: i64,
    last_v: u64,
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
    fn new() -> Self {
        SeriesState {
            closed: Box::new([]),
            head: None,
            head_min_t: 0,
            next_at: 0,
            last_t: NO_SAMPLES,
            last_v: 0,
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

    /// Whether no chunk is left.
    pub fn is_empty(&self) -> bool {
        self.head.is_none() && self.closed.is_empty()
    }

    /// The oldest sample time held, if any.
    pub fn min_t(&self) -> Option<i64> {
        match (self.closed.first(), &self.head) {
            (Some(c), _) => Some(c.min_t),
            (None, Some(_)) => Some(self.head_min_t),
            (None, None) => None,
        }
    }

    /// Prometheus's per-series checks and chunk cutting. `chunk_range` > 0.
    #[inline]
    pub fn append(&mut self, t: i64, v: f64, chunk_range: i64) -> Result<Appended, AppendError> {
        let vb = v.to_bits();
        if !super::check_sample(self.last(), t, vb)? {
            return Ok(Appended::Duplicate);
        }
        if let Some(h) = &self.head {
            let n = h.num_samples();
            let mut cut = h.bytes().len() > MAX_BYTES_BEFORE_APPEND;
            if !cut {
                if n == SAMPLES_PER_CHUNK / 4 {
                    self.next_at =
                        compute_chunk_end_time(self.head_min_t, self.last_t, self.next_at);
                }
                cut = t >= self.next_at || n >= SAMPLES_PER_CHUNK;
            }
            if cut {
                self.close_head();
            }
        }
        let new_chunk = self.head.is_none();
        if new_chunk {
            self.head_min_t = t;
            self.next_at = range_for_timestamp(t, chunk_range);
        }
        self.head.get_or_insert_with(XorChunk::new).append(t, v);
        self.last_t = t;
        self.last_v = vb;
        self.gc_marked = false;
        Ok(Appended::Stored { new_chunk })
    }

    fn close_head(&mut self) {
        let Some(h) = self.head.take() else { return };
        let data = h.into_bytes().into_boxed_slice();
        let mut v = Vec::with_capacity(self.closed.len() + 1);
        v.extend(std::mem::take(&mut self.closed).into_vec());
        v.push(ClosedChunk {
            min_t: self.head_min_t,
            max_t: self.last_t,
            data,
        });
        self.closed = v.into_boxed_slice();
    }

    /// Drop every chunk that ends before `mint`; returns how many were dropped.
    pub fn truncate_before(&mut self, mint: i64) -> usize {
        let keep_from = self.closed.partition_point(|c| c.max_t < mint);
        let mut removed = keep_from;
        if keep_from > 0 {
            let v: Vec<ClosedChunk> = std::mem::take(&mut self.closed)
                .into_vec()
                .into_iter()
                .skip(keep_from)
                .collect();
            self.closed = v.into_boxed_slice();
        }
        if self.head.is_some() && self.last_t < mint {
            self.head = None;
            removed += 1;
        }
        removed
    }

    /// Every chunk, oldest first: (min_t, max_t, bytes).
    pub fn chunks(&self) -> impl Iterator<Item = (i64, i64, &[u8])> {
        self.closed
            .iter()
            .map(|c| (c.min_t, c.max_t, &*c.data))
            .chain(
                self.head
                    .as_ref()
                    .map(|h| (self.head_min_t, self.last_t, h.bytes())),
            )
    }

    /// Copies of the chunks overlapping `[mint, maxt]` (both inclusive).
    /// Whether any chunk has samples in `[mint, maxt]` (nothing copied).
    pub fn has_chunks_overlapping(&self, mint: i64, maxt: i64) -> bool {
        self.chunks().any(|(lo, hi, _)| hi >= mint && lo <= maxt)
    }

    pub fn chunks_overlapping(&self, mint: i64, maxt: i64, out: &mut Vec<EncodedChunk>) {
        for (lo, hi, data) in self.chunks() {
            if hi >= mint && lo <= maxt {
                out.push(EncodedChunk {
                    min_time: lo,
                    max_time: hi,
                    encoding: Encoding::Xor,
                    data: data.to_vec(),
                });
            }
        }
    }

    /// Chunks holding exactly the samples in `[mint, maxt)`: chunks inside the range are
    /// copied as they are, chunks straddling a bound are re-encoded.
    pub fn chunks_for_block(&self, mint: i64, maxt: i64) -> Vec<EncodedChunk> {
        let mut out = Vec::new();
        for (lo, hi, data) in self.chunks() {
            if hi < mint || lo >= maxt {
                continue;
            }
            if lo >= mint && hi < maxt {
                out.push(EncodedChunk {
                    min_time: lo,
                    max_time: hi,
                    encoding: Encoding::Xor,
                    data: data.to_vec(),
                });
                continue;
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
        out
    }

    /// Appends the samples with timestamp `>= since` to `out`.
    pub fn samples_since(&self, since: i64, out: &mut Vec<(i64, f64)>) {
        for (_, hi, data) in self.chunks() {
            if hi < since {
                continue;
            }
            out.extend(XorIter::new(data).filter(|(t, _)| *t >= since));
        }
    }

    /// Encoded bytes of every chunk (the open one's used part).
    pub fn chunk_bytes(&self) -> usize {
        self.chunks().map(|(_, _, d)| d.len()).sum()
    }

    /// Other heap bytes owned: closed-chunk headers and the open chunk's spare room.
    pub fn overhead_bytes(&self) -> usize {
        self.closed.len() * std::mem::size_of::<ClosedChunk>()
            + self.head.as_ref().map_or(0, |h| {
                let len = h.bytes().len();
                xor_buf_capacity(len) - len
            })
    }
}

/// The buffer an open [`XorChunk`] of `len` bytes holds: it starts at 128 bytes and
/// doubles while fewer than 40 spare bytes remain.
fn xor_buf_capacity(len: usize) -> usize {
    let mut cap = 128;
    while cap < len + 40 {
        cap *= 2;
    }
    cap
}
