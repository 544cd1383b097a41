//! Prometheus's histogram chunk encodings, byte for byte: integer histograms
//! (`Encoding::Histogram`, `tsdb/chunkenc/histogram.go`) and float histograms
//! (`Encoding::FloatHistogram`, `float_histogram.go`), each with its appender (the
//! rules deciding whether a sample fits the open chunk, needs the chunk re-coded for new
//! buckets, or starts a new chunk) and its iterator.
//!
//! # Chunk data layout
//!
//! ```text
//! num_samples <u16 BE> | flags <1 byte> | layout | sample 1 | sample 2 | ...
//! flags:  top 2 bits = counter-reset header (00 unknown, 01 not a reset,
//!         10 counter reset, 11 gauge histogram); the other 6 bits are 0
//! layout: zero_threshold (1 or 9 bytes) | schema <varbit_int>
//!         | positive spans | negative spans | custom bounds (schema -53 only)
//! spans:  count <varbit_uint> then per span length <varbit_uint> offset <varbit_int>
//! ```
//!
//! Integer samples: the first stores `t`, `count`, `zero_count` (varbit), `sum` (64
//! bits) and the delta-encoded bucket counts (varbit); later ones store delta-of-deltas
//! of `t`, the counts and every bucket, and the sum XOR-coded. Float samples: the first
//! stores `t` (varbit) then count, zero count, sum and every bucket as raw 64-bit
//! floats; later ones the delta-of-delta of `t` and every float XOR-coded against its
//! own previous value and window. A stale marker (sum = Prometheus's StaleNaN) is
//! written without buckets.
//!
//! Prometheus 2.42 reads these chunks (same layout and header bits; its reader skips
//! the 3 header bytes and masks the top two flag bits), except the custom-buckets schema,
//! which is newer than 2.42.

use std::borrow::Cow;

use super::bits::{
    put_varbit_int, put_varbit_uint, read_varbit_int, read_varbit_uint, xor_read, xor_write,
    BitReader, BitWriter,
};
use super::meta::{
    adjust_for_inserts, count_spans, expand_spans_and_buckets, expand_spans_both_ways, insert,
    read_layout, write_layout, Insert, Layout,
};
use super::{
    is_custom_buckets, is_valid_schema, CounterResetHint, DecodeError, FloatHistogram, Histogram,
    Span,
};
use crate::chunkenc::is_stale_nan;

/// Bytes before the first sample: the sample count (2) and the flags byte.
pub const HEADER_SIZE: usize = 3;
/// Prometheus's `TargetBytesPerHistogramChunk`.
pub const TARGET_BYTES_PER_HISTOGRAM_CHUNK: usize = 1024;
/// Prometheus's `MinSamplesPerHistogramChunk`.
pub const MIN_SAMPLES_PER_HISTOGRAM_CHUNK: usize = 10;

/// The counter-reset header: the top two bits of a histogram chunk's third byte.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterResetHeader {
    #[default]
    Unknown = 0b0000_0000,
    NotCounterReset = 0b0100_0000,
    CounterReset = 0b1000_0000,
    Gauge = 0b1100_0000,
}

const HEADER_MASK: u8 = 0b1100_0000;

impl CounterResetHeader {
    /// The header of chunk `data` (unknown for data shorter than the header).
    pub fn of(data: &[u8]) -> CounterResetHeader {
        match data.get(2).map_or(0, |b| b & HEADER_MASK) {
            0b0100_0000 => CounterResetHeader::NotCounterReset,
            0b1000_0000 => CounterResetHeader::CounterReset,
            0b1100_0000 => CounterResetHeader::Gauge,
            _ => CounterResetHeader::Unknown,
        }
    }

    /// Prometheus's `counterResetHint`: the hint of the `num_read`th sample (1-based) of
    /// a chunk with this header. Only gauge chunks and samples after the first are
    /// certain; a first sample stays unknown since the previous chunk may be gone.
    fn hint(self, num_read: u16) -> CounterResetHint {
        if self == CounterResetHeader::Gauge {
            CounterResetHint::Gauge
        } else if num_read > 1 {
            CounterResetHint::NotCounterReset
        } else {
            CounterResetHint::Unknown
        }
    }
}

fn set_header(buf: &mut [u8], h: CounterResetHeader) {
    buf[2] = (buf[2] & !HEADER_MASK) | h as u8;
}

/// What an append did to the open chunk.
#[derive(Debug)]
pub enum AppendOutcome<C> {
    /// Appended to the chunk as it was.
    Appended,
    /// The chunk was re-coded (new buckets) and the sample appended: same chunk, new bytes.
    Recoded,
    /// The sample does not fit (counter reset, layout change, ...): it starts this new
    /// chunk, and the old one is complete.
    NewChunk(C),
}

fn stale_histogram(sum: f64) -> Histogram {
    Histogram {
        sum,
        ..Histogram::default()
    }
}

fn stale_float_histogram(sum: f64) -> FloatHistogram {
    FloatHistogram {
        sum,
        ..FloatHistogram::default()
    }
}

/// Running sums of delta-encoded buckets: their absolute counts.
fn running(deltas: &[i64]) -> impl Iterator<Item = i64> + '_ {
    deltas.iter().scan(0i64, |cur, d| {
        *cur = cur.wrapping_add(*d);
        Some(*cur)
    })
}

/// Custom bucket bounds equal (Prometheus's `CustomBucketBoundsMatch`).
fn bounds_match(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

// ---------------------------------------------------------------------------------------
// Integer histograms
// ---------------------------------------------------------------------------------------

/// An integer histogram chunk being appended to (Prometheus's `HistogramChunk` with its
/// `HistogramAppender` state).
#[derive(Clone, Debug)]
pub struct HistogramChunk {
    w: BitWriter,
    num: u16,
    schema: i32,
    zero_threshold: f64,
    p_spans: Vec<Span>,
    n_spans: Vec<Span>,
    custom_values: Vec<f64>,
    t: i64,
    cnt: u64,
    z_cnt: u64,
    t_delta: i64,
    cnt_delta: i64,
    z_cnt_delta: i64,
    p_buckets: Vec<i64>,
    n_buckets: Vec<i64>,
    p_deltas: Vec<i64>,
    n_deltas: Vec<i64>,
    sum: f64,
    leading: u8,
    trailing: u8,
}

impl Default for HistogramChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl HistogramChunk {
    pub fn new() -> Self {
        HistogramChunk {
            w: BitWriter::with_header(HEADER_SIZE),
            num: 0,
            schema: 0,
            zero_threshold: 0.0,
            p_spans: Vec::new(),
            n_spans: Vec::new(),
            custom_values: Vec::new(),
            t: i64::MIN,
            cnt: 0,
            z_cnt: 0,
            t_delta: 0,
            cnt_delta: 0,
            z_cnt_delta: 0,
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
            p_deltas: Vec::new(),
            n_deltas: Vec::new(),
            sum: 0.0,
            leading: 0xff,
            trailing: 0,
        }
    }

    /// The chunk data exactly as Prometheus's `HistogramChunk.Bytes()`.
    pub fn bytes(&self) -> &[u8] {
        &self.w.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.w.buf
    }

    /// Heap bytes held (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.w.buf.capacity()
            + (self.p_buckets.capacity() + self.n_buckets.capacity()) * 16
            + (self.p_spans.capacity() + self.n_spans.capacity()) * 8
            + self.custom_values.capacity() * 8
    }

    pub fn num_samples(&self) -> usize {
        self.num as usize
    }

    pub fn counter_reset_header(&self) -> CounterResetHeader {
        CounterResetHeader::of(&self.w.buf)
    }

    pub fn set_counter_reset_header(&mut self, h: CounterResetHeader) {
        set_header(&mut self.w.buf, h);
    }

    /// Append `h` at `t` the way Prometheus's head does (`AppendHistogram` with
    /// `appendOnly = false`): the chunk may be re-coded, or a new chunk started. `prev`
    /// is the chunk this (empty) one follows, if the head just cut it: its state sets
    /// the new chunk's counter-reset header. Timestamps must increase.
    ///
    /// # Panics
    /// When the chunk already holds `u16::MAX` samples.
    pub fn append(
        &mut self,
        prev: Option<&HistogramChunk>,
        t: i64,
        h: &Histogram,
    ) -> AppendOutcome<HistogramChunk> {
        append_sample(self, prev, t, h)
    }

    /// Prometheus's `recode`: the chunk's samples re-encoded with `inserts` applied and
    /// the new spans, header kept.
    fn recode(
        &self,
        p_ins: &[Insert],
        n_ins: &[Insert],
        p_spans: &[Span],
        n_spans: &[Span],
    ) -> Self {
        let mut c = HistogramChunk::new();
        let mut it = HistogramIter::new(self.bytes());
        let mut h = Histogram::default();
        while let Some(t) = it.next_into(&mut h) {
            h.positive_spans = p_spans.to_vec();
            h.negative_spans = n_spans.to_vec();
            if !p_ins.is_empty() {
                h.positive_buckets = insert(&h.positive_buckets, p_ins, true);
            }
            if !n_ins.is_empty() {
                h.negative_buckets = insert(&h.negative_buckets, n_ins, true);
            }
            c.append_raw(t, &h);
        }
        debug_assert!(
            it.err().is_none(),
            "re-coding our own chunk: {:?}",
            it.err()
        );
        c.set_counter_reset_header(self.counter_reset_header());
        c
    }

    /// Prometheus's `appendHistogram`: encode `h` (whose layout the caller checked).
    fn append_raw(&mut self, t: i64, h: &Histogram) {
        let stale;
        let h = if is_stale_nan(h.sum) {
            stale = stale_histogram(h.sum);
            &stale
        } else {
            h
        };
        let w = &mut self.w;
        let (mut t_delta, mut cnt_delta, mut z_cnt_delta) = (0, 0, 0);
        if self.num == 0 {
            write_layout(
                w,
                h.schema,
                h.zero_threshold,
                &h.positive_spans,
                &h.negative_spans,
                &h.custom_values,
            );
            self.schema = h.schema;
            self.zero_threshold = h.zero_threshold;
            self.p_spans.clone_from(&h.positive_spans);
            self.n_spans.clone_from(&h.negative_spans);
            self.custom_values.clone_from(&h.custom_values);
            let (np, nn) = (
                count_spans(&h.positive_spans),
                count_spans(&h.negative_spans),
            );
            self.p_buckets = vec![0; np];
            self.p_deltas = vec![0; np];
            self.n_buckets = vec![0; nn];
            self.n_deltas = vec![0; nn];
            put_varbit_int(w, t);
            put_varbit_uint(w, h.count);
            put_varbit_uint(w, h.zero_count);
            w.write_bits(h.sum.to_bits(), 64);
            for b in &h.positive_buckets {
                put_varbit_int(w, *b);
            }
            for b in &h.negative_buckets {
                put_varbit_int(w, *b);
            }
        } else {
            t_delta = t.wrapping_sub(self.t);
            cnt_delta = (h.count as i64).wrapping_sub(self.cnt as i64);
            z_cnt_delta = (h.zero_count as i64).wrapping_sub(self.z_cnt as i64);
            let t_dod = t_delta.wrapping_sub(self.t_delta);
            let (mut cnt_dod, mut z_cnt_dod) = (
                cnt_delta.wrapping_sub(self.cnt_delta),
                z_cnt_delta.wrapping_sub(self.z_cnt_delta),
            );
            if is_stale_nan(h.sum) {
                cnt_dod = 0;
                z_cnt_dod = 0;
            }
            put_varbit_int(w, t_dod);
            put_varbit_int(w, cnt_dod);
            put_varbit_int(w, z_cnt_dod);
            xor_write(w, h.sum, self.sum, &mut self.leading, &mut self.trailing);
            for (i, b) in h.positive_buckets.iter().enumerate() {
                let delta = b.wrapping_sub(self.p_buckets[i]);
                put_varbit_int(w, delta.wrapping_sub(self.p_deltas[i]));
                self.p_deltas[i] = delta;
            }
            for (i, b) in h.negative_buckets.iter().enumerate() {
                let delta = b.wrapping_sub(self.n_buckets[i]);
                put_varbit_int(w, delta.wrapping_sub(self.n_deltas[i]));
                self.n_deltas[i] = delta;
            }
        }
        self.num += 1;
        self.w.buf[..2].copy_from_slice(&self.num.to_be_bytes());
        self.t = t;
        self.cnt = h.count;
        self.z_cnt = h.zero_count;
        self.t_delta = t_delta;
        self.cnt_delta = cnt_delta;
        self.z_cnt_delta = z_cnt_delta;
        let np = h.positive_buckets.len().min(self.p_buckets.len());
        self.p_buckets[..np].copy_from_slice(&h.positive_buckets[..np]);
        let nn = h.negative_buckets.len().min(self.n_buckets.len());
        self.n_buckets[..nn].copy_from_slice(&h.negative_buckets[..nn]);
        self.sum = h.sum;
    }
}

/// Prometheus's `recodeHistogram`: backward inserts applied to `h`'s buckets.
fn recode_buckets(h: &mut Histogram, p: &[Insert], n: &[Insert]) {
    if !p.is_empty() {
        h.positive_buckets = insert(&h.positive_buckets, p, true);
    }
    if !n.is_empty() {
        h.negative_buckets = insert(&h.negative_buckets, n, true);
    }
}

fn recode_float_buckets(h: &mut FloatHistogram, p: &[Insert], n: &[Insert]) {
    if !p.is_empty() {
        h.positive_buckets = insert(&h.positive_buckets, p, false);
    }
    if !n.is_empty() {
        h.negative_buckets = insert(&h.negative_buckets, n, false);
    }
}

/// What the generic append needs from a chunk type and its sample type.
trait ChunkOps: Sized {
    type S: Clone;
    fn fresh() -> Self;
    fn num(&self) -> u16;
    fn header(&self) -> CounterResetHeader;
    fn set_hdr(&mut self, h: CounterResetHeader);
    /// The header a new chunk gets when `h` follows a gauge chunk (Prometheus's integer
    /// and float appenders differ here).
    const AFTER_GAUGE: CounterResetHeader;
    /// Whether `h`'s count (`zero`: zero-bucket count) is below the last sample's.
    fn count_dropped(&self, h: &Self::S, zero: bool) -> bool;
    /// [`expand_spans_and_buckets`] of the last sample's buckets against `h`'s,
    /// positive then negative.
    fn expand(&self, h: &Self::S) -> Option<[(Vec<Insert>, Vec<Insert>); 2]>;
    /// The header of a chunk the head cut after `prev`, from `prev.appendable(h)`:
    /// integer chunks take its header, float chunks only tell a reset from none.
    fn first_header(a: &Appendable) -> CounterResetHeader;
    fn recode(&self, p: &[Insert], n: &[Insert], ps: &[Span], ns: &[Span]) -> Self;
    fn append_raw(&mut self, t: i64, h: &Self::S);
    fn into_data(self) -> Vec<u8>;
    /// The chunk's layout: schema, zero threshold, custom bounds, spans and whether the
    /// last sample is a stale marker.
    fn layout(&self) -> (i32, f64, &[f64], &[Span], &[Span], bool);
}

/// What the generic append needs from a sample.
trait SampleOps: Clone {
    fn hint(&self) -> CounterResetHint;
    fn sum(&self) -> f64;
    fn layout(&self) -> (i32, f64, &[f64]);
    fn spans(&self) -> (&[Span], &[Span]);
    fn spans_mut(&mut self) -> (&mut Vec<Span>, &mut Vec<Span>);
    /// Prometheus's `recodeHistogram`: backward inserts applied to the buckets.
    fn recode_buckets(&mut self, p: &[Insert], n: &[Insert]);
}

impl SampleOps for Histogram {
    fn hint(&self) -> CounterResetHint {
        self.counter_reset_hint
    }
    fn sum(&self) -> f64 {
        self.sum
    }
    fn layout(&self) -> (i32, f64, &[f64]) {
        (self.schema, self.zero_threshold, &self.custom_values)
    }
    fn spans(&self) -> (&[Span], &[Span]) {
        (&self.positive_spans, &self.negative_spans)
    }
    fn spans_mut(&mut self) -> (&mut Vec<Span>, &mut Vec<Span>) {
        (&mut self.positive_spans, &mut self.negative_spans)
    }
    fn recode_buckets(&mut self, p: &[Insert], n: &[Insert]) {
        recode_buckets(self, p, n)
    }
}

impl SampleOps for FloatHistogram {
    fn hint(&self) -> CounterResetHint {
        self.counter_reset_hint
    }
    fn sum(&self) -> f64 {
        self.sum
    }
    fn layout(&self) -> (i32, f64, &[f64]) {
        (self.schema, self.zero_threshold, &self.custom_values)
    }
    fn spans(&self) -> (&[Span], &[Span]) {
        (&self.positive_spans, &self.negative_spans)
    }
    fn spans_mut(&mut self) -> (&mut Vec<Span>, &mut Vec<Span>) {
        (&mut self.positive_spans, &mut self.negative_spans)
    }
    fn recode_buckets(&mut self, p: &[Insert], n: &[Insert]) {
        recode_float_buckets(self, p, n)
    }
}

impl ChunkOps for HistogramChunk {
    type S = Histogram;
    fn fresh() -> Self {
        Self::new()
    }
    fn num(&self) -> u16 {
        self.num
    }
    fn header(&self) -> CounterResetHeader {
        self.counter_reset_header()
    }
    fn set_hdr(&mut self, h: CounterResetHeader) {
        self.set_counter_reset_header(h)
    }
    const AFTER_GAUGE: CounterResetHeader = CounterResetHeader::NotCounterReset;
    fn count_dropped(&self, h: &Histogram, zero: bool) -> bool {
        if zero {
            h.zero_count < self.z_cnt
        } else {
            h.count < self.cnt
        }
    }
    fn expand(&self, h: &Histogram) -> Option<[(Vec<Insert>, Vec<Insert>); 2]> {
        Some([
            expand_spans_and_buckets(
                &self.p_spans,
                &h.positive_spans,
                running(&self.p_buckets),
                running(&h.positive_buckets),
            )?,
            expand_spans_and_buckets(
                &self.n_spans,
                &h.negative_spans,
                running(&self.n_buckets),
                running(&h.negative_buckets),
            )?,
        ])
    }
    fn first_header(a: &Appendable) -> CounterResetHeader {
        a.hint
    }
    fn recode(&self, p: &[Insert], n: &[Insert], ps: &[Span], ns: &[Span]) -> Self {
        HistogramChunk::recode(self, p, n, ps, ns)
    }
    fn append_raw(&mut self, t: i64, h: &Histogram) {
        HistogramChunk::append_raw(self, t, h)
    }
    fn into_data(self) -> Vec<u8> {
        self.into_bytes()
    }
    fn layout(&self) -> (i32, f64, &[f64], &[Span], &[Span], bool) {
        (
            self.schema,
            self.zero_threshold,
            &self.custom_values,
            &self.p_spans,
            &self.n_spans,
            is_stale_nan(self.sum),
        )
    }
}

impl ChunkOps for FloatHistogramChunk {
    type S = FloatHistogram;
    fn fresh() -> Self {
        Self::new()
    }
    fn num(&self) -> u16 {
        self.num
    }
    fn header(&self) -> CounterResetHeader {
        self.counter_reset_header()
    }
    fn set_hdr(&mut self, h: CounterResetHeader) {
        self.set_counter_reset_header(h)
    }
    const AFTER_GAUGE: CounterResetHeader = CounterResetHeader::Unknown;
    fn count_dropped(&self, h: &FloatHistogram, zero: bool) -> bool {
        if zero {
            h.zero_count < self.z_cnt.value
        } else {
            h.count < self.cnt.value
        }
    }
    fn expand(&self, h: &FloatHistogram) -> Option<[(Vec<Insert>, Vec<Insert>); 2]> {
        Some([
            expand_spans_and_buckets(
                &self.p_spans,
                &h.positive_spans,
                self.p_buckets.iter().map(|x| x.value),
                h.positive_buckets.iter().copied(),
            )?,
            expand_spans_and_buckets(
                &self.n_spans,
                &h.negative_spans,
                self.n_buckets.iter().map(|x| x.value),
                h.negative_buckets.iter().copied(),
            )?,
        ])
    }
    fn first_header(a: &Appendable) -> CounterResetHeader {
        if a.hint == CounterResetHeader::CounterReset {
            CounterResetHeader::CounterReset
        } else {
            CounterResetHeader::NotCounterReset
        }
    }
    fn recode(&self, p: &[Insert], n: &[Insert], ps: &[Span], ns: &[Span]) -> Self {
        FloatHistogramChunk::recode(self, p, n, ps, ns)
    }
    fn append_raw(&mut self, t: i64, h: &FloatHistogram) {
        FloatHistogramChunk::append_raw(self, t, h)
    }
    fn into_data(self) -> Vec<u8> {
        self.into_bytes()
    }
    fn layout(&self) -> (i32, f64, &[f64], &[Span], &[Span], bool) {
        (
            self.schema,
            self.zero_threshold,
            &self.custom_values,
            &self.p_spans,
            &self.n_spans,
            is_stale_nan(self.sum.value),
        )
    }
}

/// Prometheus's `AppendHistogram` / `AppendFloatHistogram` (`appendOnly = false`).
fn append_sample<C: ChunkOps>(c: &mut C, prev: Option<&C>, t: i64, h: &C::S) -> AppendOutcome<C>
where
    C::S: SampleOps,
{
    assert!(c.num() < u16::MAX, "histogram chunk is full");
    if c.num() == 0 {
        c.append_raw(t, h);
        let header = match (h.hint(), prev) {
            (CounterResetHint::Gauge, _) => CounterResetHeader::Gauge,
            (CounterResetHint::CounterReset, _) => CounterResetHeader::CounterReset,
            (_, Some(p)) => C::first_header(&appendable(p, h)),
            (_, None) => CounterResetHeader::Unknown,
        };
        c.set_hdr(header);
        return AppendOutcome::Appended;
    }
    let (p_fwd, n_fwd, p_bwd, n_bwd, merged) = if h.hint() != CounterResetHint::Gauge {
        let a = appendable(c, h);
        if !a.ok || a.hint != CounterResetHeader::NotCounterReset {
            let mut n = C::fresh();
            n.set_hdr(a.hint);
            n.append_raw(t, h);
            return AppendOutcome::NewChunk(n);
        }
        (a.p_fwd, a.n_fwd, a.p_bwd, a.n_bwd, None)
    } else {
        let Some(g) = appendable_gauge(c, h) else {
            let mut n = C::fresh();
            n.set_hdr(CounterResetHeader::Gauge);
            n.append_raw(t, h);
            return AppendOutcome::NewChunk(n);
        };
        (
            g.p_fwd,
            g.n_fwd,
            g.p_bwd,
            g.n_bwd,
            Some((g.p_merged, g.n_merged)),
        )
    };
    let mut h = Cow::Borrowed(h);
    if !p_bwd.is_empty() || !n_bwd.is_empty() {
        let hm = h.to_mut();
        let (ps, ns) = hm.spans_mut();
        if let Some((pm, nm)) = merged {
            (*ps, *ns) = (pm, nm);
        } else if p_fwd.is_empty() && n_fwd.is_empty() {
            let (_, _, _, cp, cn, _) = c.layout();
            (*ps, *ns) = (cp.to_vec(), cn.to_vec());
        } else {
            *ps = adjust_for_inserts(ps, &p_bwd);
            *ns = adjust_for_inserts(ns, &n_bwd);
        }
        hm.recode_buckets(&p_bwd, &n_bwd);
    }
    if !p_fwd.is_empty() || !n_fwd.is_empty() {
        let (ps, ns) = h.spans();
        *c = c.recode(&p_fwd, &n_fwd, ps, ns);
        c.append_raw(t, &h);
        return AppendOutcome::Recoded;
    }
    c.append_raw(t, &h);
    AppendOutcome::Appended
}

/// The samples of histogram chunk `data` (either encoding) with `mint <= t < maxt`, as
/// chunks of the same encoding: `(min_t, max_t, bytes)`. Samples of one chunk fit one
/// chunk again; the counter-reset header is kept when the chunk's first sample is kept,
/// else the samples continue the chunk ("not a reset"). Gauge chunks stay gauge chunks.
pub fn rechunk_in_range(
    encoding: crate::chunkenc::Encoding,
    data: &[u8],
    mint: i64,
    maxt: i64,
) -> Vec<(i64, i64, Vec<u8>)> {
    let header = CounterResetHeader::of(data);
    match encoding {
        crate::chunkenc::Encoding::Histogram => {
            rechunk::<HistogramChunk>(HistogramIter::new(data), mint, maxt, header)
        }
        crate::chunkenc::Encoding::FloatHistogram => {
            rechunk::<FloatHistogramChunk>(FloatHistogramIter::new(data), mint, maxt, header)
        }
        _ => Vec::new(),
    }
}

fn rechunk<C: ChunkOps>(
    samples: impl Iterator<Item = (i64, C::S)>,
    mint: i64,
    maxt: i64,
    header: CounterResetHeader,
) -> Vec<(i64, i64, Vec<u8>)>
where
    C::S: SampleOps,
{
    let mut out = Vec::new();
    let mut c = C::fresh();
    let (mut first, mut last, mut kept_first) = (i64::MAX, i64::MIN, false);
    for (i, (t, h)) in samples.enumerate() {
        if t < mint || t >= maxt {
            continue;
        }
        kept_first |= i == 0;
        if c.num() == 0 {
            first = t;
        }
        if let AppendOutcome::NewChunk(n) = append_sample(&mut c, None, t, &h) {
            out.push((first, last, std::mem::replace(&mut c, n).into_data()));
            first = t;
        }
        last = t;
    }
    if c.num() > 0 {
        if header != CounterResetHeader::Gauge && out.is_empty() {
            c.set_hdr(if kept_first {
                header
            } else {
                CounterResetHeader::NotCounterReset
            });
        }
        out.push((first, last, c.into_data()));
    }
    out
}

/// Prometheus's `appendable`: whether `h` may follow the chunk's last sample, with the
/// inserts it needs, and the counter-reset header a new chunk gets if it does not (float
/// chunks: a reset, else unknown; their `counterReset` flag as a header).
fn appendable<C: ChunkOps>(c: &C, h: &C::S) -> Appendable
where
    C::S: SampleOps,
{
    let no = |hint| Appendable {
        hint,
        ..Appendable::default()
    };
    if c.num() > 0 && c.header() == CounterResetHeader::Gauge {
        return no(C::AFTER_GAUGE);
    }
    if h.hint() == CounterResetHint::CounterReset {
        return no(CounterResetHeader::CounterReset);
    }
    let ok = |[(p_fwd, p_bwd), (n_fwd, n_bwd)]: [(Vec<Insert>, Vec<Insert>); 2]| Appendable {
        p_fwd,
        n_fwd,
        p_bwd,
        n_bwd,
        ok: true,
        hint: CounterResetHeader::NotCounterReset,
    };
    if is_stale_nan(h.sum()) {
        return ok(Default::default());
    }
    let (schema, zt, custom, _, _, stale) = c.layout();
    let (hs, hzt, hcustom) = h.layout();
    if stale {
        return no(CounterResetHeader::Unknown);
    }
    if c.count_dropped(h, false) {
        return no(CounterResetHeader::CounterReset);
    }
    if hs != schema || hzt != zt {
        return no(CounterResetHeader::Unknown);
    }
    if (is_custom_buckets(hs) && !bounds_match(hcustom, custom)) || c.count_dropped(h, true) {
        return no(CounterResetHeader::CounterReset);
    }
    match c.expand(h) {
        Some(e) => ok(e),
        None => no(CounterResetHeader::CounterReset),
    }
}

/// Prometheus's `appendableGauge`; `None` when `h` needs a new chunk.
fn appendable_gauge<C: ChunkOps>(c: &C, h: &C::S) -> Option<GaugeAppendable>
where
    C::S: SampleOps,
{
    if c.num() > 0 && c.header() != CounterResetHeader::Gauge {
        return None;
    }
    if is_stale_nan(h.sum()) {
        return Some(GaugeAppendable::default());
    }
    let (schema, zt, custom, cp, cn, stale) = c.layout();
    let (hs, hzt, hcustom) = h.layout();
    if stale
        || hs != schema
        || hzt != zt
        || (is_custom_buckets(hs) && !bounds_match(hcustom, custom))
    {
        return None;
    }
    let (hp, hn) = h.spans();
    Some(GaugeAppendable::new(cp, hp, cn, hn))
}

#[derive(Default)]
struct Appendable {
    p_fwd: Vec<Insert>,
    n_fwd: Vec<Insert>,
    p_bwd: Vec<Insert>,
    n_bwd: Vec<Insert>,
    ok: bool,
    hint: CounterResetHeader,
}

#[derive(Default)]
struct GaugeAppendable {
    p_fwd: Vec<Insert>,
    n_fwd: Vec<Insert>,
    p_bwd: Vec<Insert>,
    n_bwd: Vec<Insert>,
    p_merged: Vec<Span>,
    n_merged: Vec<Span>,
}

impl GaugeAppendable {
    fn new(a_pos: &[Span], b_pos: &[Span], a_neg: &[Span], b_neg: &[Span]) -> Self {
        let (p_fwd, p_bwd, p_merged) = expand_spans_both_ways(a_pos, b_pos);
        let (n_fwd, n_bwd, n_merged) = expand_spans_both_ways(a_neg, b_neg);
        GaugeAppendable {
            p_fwd,
            n_fwd,
            p_bwd,
            n_bwd,
            p_merged,
            n_merged,
        }
    }
}

/// Decodes integer histogram chunk data (Prometheus's `histogramIterator`). Malformed
/// data ends the iteration; [`HistogramIter::err`] says why.
pub struct HistogramIter<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    header: CounterResetHeader,
    layout: Layout,
    t: i64,
    cnt: u64,
    z_cnt: u64,
    t_delta: i64,
    cnt_delta: i64,
    z_cnt_delta: i64,
    p_buckets: Vec<i64>,
    n_buckets: Vec<i64>,
    p_deltas: Vec<i64>,
    n_deltas: Vec<i64>,
    sum: f64,
    leading: u8,
    trailing: u8,
    err: Option<DecodeError>,
}

fn chunk_header(data: &[u8]) -> Result<(u16, CounterResetHeader), DecodeError> {
    if data.len() < HEADER_SIZE {
        return Err(DecodeError::Truncated);
    }
    Ok((
        u16::from_be_bytes([data[0], data[1]]),
        CounterResetHeader::of(data),
    ))
}

/// Bucket counts a layout claims, bounded by what `data` could hold (one bit each).
fn checked_layout(r: &mut BitReader<'_>) -> Result<Layout, DecodeError> {
    let l = read_layout(r)?;
    let room = r.remaining_bits();
    if !is_valid_schema(l.schema) {
        return Err(DecodeError::UnsupportedSchema(l.schema));
    }
    let n = count_spans(&l.pos) + count_spans(&l.neg);
    if n > room {
        return Err(DecodeError::Invalid("more buckets than the chunk can hold"));
    }
    Ok(l)
}

impl<'a> HistogramIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let (total, header, err) = match chunk_header(data) {
            Ok((n, h)) => (n, h, None),
            Err(e) => (0, CounterResetHeader::Unknown, Some(e)),
        };
        HistogramIter {
            r: BitReader::new(data.get(HEADER_SIZE..).unwrap_or(&[])),
            total,
            read: 0,
            header,
            layout: Layout::default(),
            t: i64::MIN,
            cnt: 0,
            z_cnt: 0,
            t_delta: 0,
            cnt_delta: 0,
            z_cnt_delta: 0,
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
            p_deltas: Vec::new(),
            n_deltas: Vec::new(),
            sum: 0.0,
            leading: 0,
            trailing: 0,
            err,
        }
    }

    /// Samples the chunk header announces.
    pub fn num_samples(&self) -> usize {
        self.total as usize
    }

    pub fn counter_reset_header(&self) -> CounterResetHeader {
        self.header
    }

    /// Why decoding stopped early, if it did.
    pub fn err(&self) -> Option<&DecodeError> {
        self.err.as_ref()
    }

    /// Decode the next sample's state; `false` at the end or on an error.
    fn advance(&mut self) -> bool {
        if self.err.is_some() || self.read == self.total {
            return false;
        }
        match self.decode_next() {
            Ok(()) => {
                self.read += 1;
                true
            }
            Err(e) => {
                self.err = Some(e);
                false
            }
        }
    }

    fn decode_next(&mut self) -> Result<(), DecodeError> {
        let r = &mut self.r;
        if self.read == 0 {
            self.layout = checked_layout(r)?;
            let (np, nn) = (count_spans(&self.layout.pos), count_spans(&self.layout.neg));
            self.p_buckets = vec![0; np];
            self.p_deltas = vec![0; np];
            self.n_buckets = vec![0; nn];
            self.n_deltas = vec![0; nn];
            self.t = read_varbit_int(r)?;
            self.cnt = read_varbit_uint(r)?;
            self.z_cnt = read_varbit_uint(r)?;
            self.sum = f64::from_bits(r.read_bits(64)?);
            for b in self.p_buckets.iter_mut().chain(self.n_buckets.iter_mut()) {
                *b = read_varbit_int(r)?;
            }
            return Ok(());
        }
        self.t_delta = self.t_delta.wrapping_add(read_varbit_int(r)?);
        self.t = self.t.wrapping_add(self.t_delta);
        self.cnt_delta = self.cnt_delta.wrapping_add(read_varbit_int(r)?);
        self.cnt = (self.cnt as i64).wrapping_add(self.cnt_delta) as u64;
        self.z_cnt_delta = self.z_cnt_delta.wrapping_add(read_varbit_int(r)?);
        self.z_cnt = (self.z_cnt as i64).wrapping_add(self.z_cnt_delta) as u64;
        xor_read(r, &mut self.sum, &mut self.leading, &mut self.trailing)?;
        if is_stale_nan(self.sum) {
            return Ok(());
        }
        for (b, d) in self
            .p_buckets
            .iter_mut()
            .zip(self.p_deltas.iter_mut())
            .chain(self.n_buckets.iter_mut().zip(self.n_deltas.iter_mut()))
        {
            *d = d.wrapping_add(read_varbit_int(r)?);
            *b = b.wrapping_add(*d);
        }
        Ok(())
    }

    /// The next sample into `h` (its vectors reused); `None` at the end or on an error.
    pub fn next_into(&mut self, h: &mut Histogram) -> Option<i64> {
        if !self.advance() {
            return None;
        }
        if is_stale_nan(self.sum) {
            *h = stale_histogram(self.sum);
            return Some(self.t);
        }
        h.counter_reset_hint = self.header.hint(self.read);
        h.schema = self.layout.schema;
        h.zero_threshold = self.layout.zero_threshold;
        h.zero_count = self.z_cnt;
        h.count = self.cnt;
        h.sum = self.sum;
        h.positive_spans.clone_from(&self.layout.pos);
        h.negative_spans.clone_from(&self.layout.neg);
        h.positive_buckets.clone_from(&self.p_buckets);
        h.negative_buckets.clone_from(&self.n_buckets);
        h.custom_values.clone_from(&self.layout.custom_values);
        Some(self.t)
    }

    /// The next sample as a float histogram into `fh`.
    pub fn next_float_into(&mut self, fh: &mut FloatHistogram) -> Option<i64> {
        if !self.advance() {
            return None;
        }
        if is_stale_nan(self.sum) {
            *fh = stale_float_histogram(self.sum);
            return Some(self.t);
        }
        fh.counter_reset_hint = self.header.hint(self.read);
        fh.schema = self.layout.schema;
        fh.zero_threshold = self.layout.zero_threshold;
        fh.zero_count = self.z_cnt as f64;
        fh.count = self.cnt as f64;
        fh.sum = self.sum;
        fh.positive_spans.clone_from(&self.layout.pos);
        fh.negative_spans.clone_from(&self.layout.neg);
        absolute_f64(&self.p_buckets, &mut fh.positive_buckets);
        absolute_f64(&self.n_buckets, &mut fh.negative_buckets);
        fh.custom_values.clone_from(&self.layout.custom_values);
        Some(self.t)
    }

    /// The timestamp of the next sample, decoding it but not materialising it.
    pub fn next_t(&mut self) -> Option<i64> {
        self.advance().then_some(self.t)
    }
}

fn absolute_f64(deltas: &[i64], out: &mut Vec<f64>) {
    out.clear();
    let mut cur = 0f64;
    out.extend(deltas.iter().map(|d| {
        cur += *d as f64;
        cur
    }));
}

impl Iterator for HistogramIter<'_> {
    type Item = (i64, Histogram);
    fn next(&mut self) -> Option<(i64, Histogram)> {
        let mut h = Histogram::default();
        self.next_into(&mut h).map(|t| (t, h))
    }
}

// ---------------------------------------------------------------------------------------
// Float histograms
// ---------------------------------------------------------------------------------------

/// A value XOR-coded against its own previous value (Prometheus's `xorValue`).
#[derive(Clone, Copy, Debug)]
struct XorValue {
    value: f64,
    leading: u8,
    trailing: u8,
}

impl XorValue {
    fn first(value: f64) -> Self {
        XorValue {
            value,
            leading: 0xff,
            trailing: 0,
        }
    }

    fn write(&mut self, w: &mut BitWriter, v: f64) {
        xor_write(w, v, self.value, &mut self.leading, &mut self.trailing);
        self.value = v;
    }

    fn read(&mut self, r: &mut BitReader<'_>) -> Result<(), DecodeError> {
        xor_read(r, &mut self.value, &mut self.leading, &mut self.trailing)
    }
}

/// A float histogram chunk being appended to (Prometheus's `FloatHistogramChunk` with
/// its `FloatHistogramAppender` state).
#[derive(Clone, Debug)]
pub struct FloatHistogramChunk {
    w: BitWriter,
    num: u16,
    schema: i32,
    zero_threshold: f64,
    p_spans: Vec<Span>,
    n_spans: Vec<Span>,
    custom_values: Vec<f64>,
    t: i64,
    t_delta: i64,
    sum: XorValue,
    cnt: XorValue,
    z_cnt: XorValue,
    p_buckets: Vec<XorValue>,
    n_buckets: Vec<XorValue>,
}

impl Default for FloatHistogramChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl FloatHistogramChunk {
    pub fn new() -> Self {
        FloatHistogramChunk {
            w: BitWriter::with_header(HEADER_SIZE),
            num: 0,
            schema: 0,
            zero_threshold: 0.0,
            p_spans: Vec::new(),
            n_spans: Vec::new(),
            custom_values: Vec::new(),
            t: i64::MIN,
            t_delta: 0,
            sum: XorValue::first(0.0),
            cnt: XorValue::first(0.0),
            z_cnt: XorValue::first(0.0),
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
        }
    }

    /// The chunk data exactly as Prometheus's `FloatHistogramChunk.Bytes()`.
    pub fn bytes(&self) -> &[u8] {
        &self.w.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.w.buf
    }

    pub fn capacity(&self) -> usize {
        self.w.buf.capacity()
            + (self.p_buckets.capacity() + self.n_buckets.capacity()) * 16
            + (self.p_spans.capacity() + self.n_spans.capacity()) * 8
            + self.custom_values.capacity() * 8
    }

    pub fn num_samples(&self) -> usize {
        self.num as usize
    }

    pub fn counter_reset_header(&self) -> CounterResetHeader {
        CounterResetHeader::of(&self.w.buf)
    }

    pub fn set_counter_reset_header(&mut self, h: CounterResetHeader) {
        set_header(&mut self.w.buf, h);
    }

    /// [`HistogramChunk::append`] for float histograms (`AppendFloatHistogram`).
    ///
    /// # Panics
    /// When the chunk already holds `u16::MAX` samples.
    pub fn append(
        &mut self,
        prev: Option<&FloatHistogramChunk>,
        t: i64,
        h: &FloatHistogram,
    ) -> AppendOutcome<FloatHistogramChunk> {
        append_sample(self, prev, t, h)
    }

    fn recode(
        &self,
        p_ins: &[Insert],
        n_ins: &[Insert],
        p_spans: &[Span],
        n_spans: &[Span],
    ) -> Self {
        let mut c = FloatHistogramChunk::new();
        let mut it = FloatHistogramIter::new(self.bytes());
        let mut h = FloatHistogram::default();
        while let Some(t) = it.next_into(&mut h) {
            h.positive_spans = p_spans.to_vec();
            h.negative_spans = n_spans.to_vec();
            if !p_ins.is_empty() {
                h.positive_buckets = insert(&h.positive_buckets, p_ins, false);
            }
            if !n_ins.is_empty() {
                h.negative_buckets = insert(&h.negative_buckets, n_ins, false);
            }
            c.append_raw(t, &h);
        }
        debug_assert!(
            it.err().is_none(),
            "re-coding our own chunk: {:?}",
            it.err()
        );
        c.set_counter_reset_header(self.counter_reset_header());
        c
    }

    /// Prometheus's `appendFloatHistogram`.
    fn append_raw(&mut self, t: i64, h: &FloatHistogram) {
        let stale;
        let h = if is_stale_nan(h.sum) {
            stale = stale_float_histogram(h.sum);
            &stale
        } else {
            h
        };
        let w = &mut self.w;
        let mut t_delta = 0;
        if self.num == 0 {
            write_layout(
                w,
                h.schema,
                h.zero_threshold,
                &h.positive_spans,
                &h.negative_spans,
                &h.custom_values,
            );
            self.schema = h.schema;
            self.zero_threshold = h.zero_threshold;
            self.p_spans.clone_from(&h.positive_spans);
            self.n_spans.clone_from(&h.negative_spans);
            self.custom_values.clone_from(&h.custom_values);
            let (np, nn) = (
                count_spans(&h.positive_spans),
                count_spans(&h.negative_spans),
            );
            self.p_buckets = (0..np)
                .map(|i| XorValue::first(h.positive_buckets.get(i).copied().unwrap_or(0.0)))
                .collect();
            self.n_buckets = (0..nn)
                .map(|i| XorValue::first(h.negative_buckets.get(i).copied().unwrap_or(0.0)))
                .collect();
            put_varbit_int(w, t);
            w.write_bits(h.count.to_bits(), 64);
            w.write_bits(h.zero_count.to_bits(), 64);
            w.write_bits(h.sum.to_bits(), 64);
            self.cnt.value = h.count;
            self.z_cnt.value = h.zero_count;
            self.sum.value = h.sum;
            for b in h.positive_buckets.iter().chain(&h.negative_buckets) {
                w.write_bits(b.to_bits(), 64);
            }
        } else {
            t_delta = t.wrapping_sub(self.t);
            put_varbit_int(w, t_delta.wrapping_sub(self.t_delta));
            self.cnt.write(w, h.count);
            self.z_cnt.write(w, h.zero_count);
            self.sum.write(w, h.sum);
            for (x, b) in self.p_buckets.iter_mut().zip(&h.positive_buckets) {
                x.write(w, *b);
            }
            for (x, b) in self.n_buckets.iter_mut().zip(&h.negative_buckets) {
                x.write(w, *b);
            }
        }
        self.num += 1;
        self.w.buf[..2].copy_from_slice(&self.num.to_be_bytes());
        self.t = t;
        self.t_delta = t_delta;
    }
}

/// Decodes float histogram chunk data (Prometheus's `floatHistogramIterator`).
pub struct FloatHistogramIter<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    header: CounterResetHeader,
    layout: Layout,
    t: i64,
    t_delta: i64,
    sum: XorValue,
    cnt: XorValue,
    z_cnt: XorValue,
    p_buckets: Vec<XorValue>,
    n_buckets: Vec<XorValue>,
    err: Option<DecodeError>,
}

impl<'a> FloatHistogramIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let (total, header, err) = match chunk_header(data) {
            Ok((n, h)) => (n, h, None),
            Err(e) => (0, CounterResetHeader::Unknown, Some(e)),
        };
        let zero = XorValue {
            value: 0.0,
            leading: 0,
            trailing: 0,
        };
        FloatHistogramIter {
            r: BitReader::new(data.get(HEADER_SIZE..).unwrap_or(&[])),
            total,
            read: 0,
            header,
            layout: Layout::default(),
            t: i64::MIN,
            t_delta: 0,
            sum: zero,
            cnt: zero,
            z_cnt: zero,
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
            err,
        }
    }

    pub fn num_samples(&self) -> usize {
        self.total as usize
    }

    pub fn counter_reset_header(&self) -> CounterResetHeader {
        self.header
    }

    pub fn err(&self) -> Option<&DecodeError> {
        self.err.as_ref()
    }

    fn advance(&mut self) -> bool {
        if self.err.is_some() || self.read == self.total {
            return false;
        }
        match self.decode_next() {
            Ok(()) => {
                self.read += 1;
                true
            }
            Err(e) => {
                self.err = Some(e);
                false
            }
        }
    }

    fn decode_next(&mut self) -> Result<(), DecodeError> {
        let r = &mut self.r;
        let zero = XorValue {
            value: 0.0,
            leading: 0,
            trailing: 0,
        };
        if self.read == 0 {
            self.layout = checked_layout(r)?;
            let (np, nn) = (count_spans(&self.layout.pos), count_spans(&self.layout.neg));
            self.p_buckets = vec![zero; np];
            self.n_buckets = vec![zero; nn];
            self.t = read_varbit_int(r)?;
            self.cnt.value = f64::from_bits(r.read_bits(64)?);
            self.z_cnt.value = f64::from_bits(r.read_bits(64)?);
            self.sum.value = f64::from_bits(r.read_bits(64)?);
            for b in self.p_buckets.iter_mut().chain(self.n_buckets.iter_mut()) {
                b.value = f64::from_bits(r.read_bits(64)?);
            }
            return Ok(());
        }
        self.t_delta = self.t_delta.wrapping_add(read_varbit_int(r)?);
        self.t = self.t.wrapping_add(self.t_delta);
        self.cnt.read(r)?;
        self.z_cnt.read(r)?;
        self.sum.read(r)?;
        if is_stale_nan(self.sum.value) {
            return Ok(());
        }
        for b in self.p_buckets.iter_mut().chain(self.n_buckets.iter_mut()) {
            b.read(r)?;
        }
        Ok(())
    }

    /// The next sample into `fh` (its vectors reused); `None` at the end or on an error.
    pub fn next_into(&mut self, fh: &mut FloatHistogram) -> Option<i64> {
        if !self.advance() {
            return None;
        }
        if is_stale_nan(self.sum.value) {
            *fh = stale_float_histogram(self.sum.value);
            return Some(self.t);
        }
        fh.counter_reset_hint = self.header.hint(self.read);
        fh.schema = self.layout.schema;
        fh.zero_threshold = self.layout.zero_threshold;
        fh.zero_count = self.z_cnt.value;
        fh.count = self.cnt.value;
        fh.sum = self.sum.value;
        fh.positive_spans.clone_from(&self.layout.pos);
        fh.negative_spans.clone_from(&self.layout.neg);
        fh.positive_buckets.clear();
        fh.positive_buckets
            .extend(self.p_buckets.iter().map(|x| x.value));
        fh.negative_buckets.clear();
        fh.negative_buckets
            .extend(self.n_buckets.iter().map(|x| x.value));
        fh.custom_values.clone_from(&self.layout.custom_values);
        Some(self.t)
    }

    pub fn next_t(&mut self) -> Option<i64> {
        self.advance().then_some(self.t)
    }
}

impl Iterator for FloatHistogramIter<'_> {
    type Item = (i64, FloatHistogram);
    fn next(&mut self) -> Option<(i64, FloatHistogram)> {
        let mut h = FloatHistogram::default();
        self.next_into(&mut h).map(|t| (t, h))
    }
}
