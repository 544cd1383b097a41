//! A series' out-of-order float samples (Prometheus's `memSeries.ooo`): samples older
//! than the series' newest one, accepted inside the out-of-order window. They wait in a
//! small sorted buffer ([`OOO_CAPACITY`] samples, Prometheus's `out_of_order_cap`
//! default) that is then XOR-encoded into a sealed chunk. Sealed chunks may overlap each
//! other and the in-order chunks; readers and block cuts merge them with the in-order
//! samples into sorted, unique samples ([`super::series::SeriesState`]).

use crate::chunkenc::{XorChunk, XorIter};

/// Samples buffered before they are encoded (Prometheus's `--storage.tsdb.out-of-order-cap`
/// default).
pub const OOO_CAPACITY: usize = 32;

/// A sealed buffer: sorted, unique samples in one XOR chunk.
struct OooChunk {
    min_t: i64,
    max_t: i64,
    data: Box<[u8]>,
}

/// The out-of-order samples of one series; no timestamp is held twice (the series
/// checks, with [`value_at`](Self::value_at), before inserting).
#[derive(Default)]
pub(super) struct OooState {
    /// Sorted by time, at most [`OOO_CAPACITY`].
    open: Vec<(i64, f64)>,
    sealed: Vec<OooChunk>,
}

impl OooState {
    /// Value bits of the sample at `t`, if this buffer holds one.
    pub fn value_at(&self, t: i64) -> Option<u64> {
        if let Ok(i) = self.open.binary_search_by_key(&t, |s| s.0) {
            return Some(self.open[i].1.to_bits());
        }
        self.sealed
            .iter()
            .filter(|c| c.min_t <= t && t <= c.max_t)
            .find_map(|c| {
                XorIter::new(&c.data)
                    .take_while(|s| s.0 <= t)
                    .find(|s| s.0 == t)
                    .map(|s| s.1.to_bits())
            })
    }

    /// Insert a sample at a timestamp not held yet.
    pub fn insert(&mut self, t: i64, v: f64) {
        if self.open.capacity() == 0 {
            self.open.reserve_exact(OOO_CAPACITY);
        }
        let i = self.open.partition_point(|s| s.0 < t);
        self.open.insert(i, (t, v));
        if self.open.len() >= OOO_CAPACITY {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if let Some(c) = encode(&self.open) {
            self.sealed.push(c);
        }
        self.open.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.sealed.is_empty()
    }

    /// Oldest and newest timestamp held.
    pub fn span(&self) -> Option<(i64, i64)> {
        let open = (self.open.first(), self.open.last());
        let mut span = match open {
            (Some(a), Some(b)) => Some((a.0, b.0)),
            _ => None,
        };
        for c in &self.sealed {
            span = Some(match span {
                Some((lo, hi)) => (lo.min(c.min_t), hi.max(c.max_t)),
                None => (c.min_t, c.max_t),
            });
        }
        span
    }

    /// Appends the samples with `mint <= t <= maxt` to `out`, sorted by time.
    pub fn samples_in(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        let start = out.len();
        for c in &self.sealed {
            if c.max_t >= mint && c.min_t <= maxt {
                out.extend(XorIter::new(&c.data).filter(|s| s.0 >= mint && s.0 <= maxt));
            }
        }
        out.extend(
            self.open
                .iter()
                .copied()
                .filter(|s| s.0 >= mint && s.0 <= maxt),
        );
        if !self.sealed.is_empty() {
            out[start..].sort_by_key(|s| s.0);
        }
    }

    /// Drop every sample older than `mint`.
    pub fn truncate_before(&mut self, mint: i64) {
        self.open.retain(|s| s.0 >= mint);
        let mut keep = Vec::with_capacity(self.sealed.len());
        let mut buf = Vec::new();
        for c in std::mem::take(&mut self.sealed) {
            if c.max_t < mint {
                continue;
            }
            if c.min_t >= mint {
                keep.push(c);
                continue;
            }
            buf.clear();
            buf.extend(XorIter::new(&c.data).filter(|s| s.0 >= mint));
            keep.extend(encode(&buf));
        }
        self.sealed = keep;
        if self.open.is_empty() {
            self.open = Vec::new();
        }
    }

    /// Encoded bytes plus the buffer's samples.
    pub fn data_bytes(&self) -> usize {
        self.sealed.iter().map(|c| c.data.len()).sum::<usize>()
            + self.open.len() * std::mem::size_of::<(i64, f64)>()
    }

    /// Other heap bytes: chunk headers and the buffer's spare room.
    pub fn overhead_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.sealed.capacity() * std::mem::size_of::<OooChunk>()
            + (self.open.capacity() - self.open.len()) * std::mem::size_of::<(i64, f64)>()
    }
}

fn encode(samples: &[(i64, f64)]) -> Option<OooChunk> {
    let (first, last) = (samples.first()?, samples.last()?);
    let mut c = XorChunk::new();
    for &(t, v) in samples {
        c.append(t, v);
    }
    Some(OooChunk {
        min_t: first.0,
        max_t: last.0,
        data: c.into_bytes().into_boxed_slice(),
    })
}
