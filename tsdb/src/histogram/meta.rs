//! The bucket-layout half of Prometheus's histogram chunks
//! (`tsdb/chunkenc/histogram_meta.go`): the chunk's layout header (zero threshold,
//! schema, spans, custom bounds) and the span arithmetic the appenders use to decide
//! whether a sample fits the open chunk and how to re-code the chunk when new buckets
//! appear ("inserts").

use super::bits::{put_varbit_int, put_varbit_uint, read_varbit_int, read_varbit_uint};
use super::bits::{BitReader, BitWriter};
use super::{is_custom_buckets, DecodeError, Span};

/// Prometheus's `writeHistogramChunkLayout`.
pub(crate) fn write_layout(
    w: &mut BitWriter,
    schema: i32,
    zero_threshold: f64,
    pos: &[Span],
    neg: &[Span],
    custom_values: &[f64],
) {
    put_zero_threshold(w, zero_threshold);
    put_varbit_int(w, i64::from(schema));
    put_spans(w, pos);
    put_spans(w, neg);
    if is_custom_buckets(schema) {
        put_varbit_uint(w, custom_values.len() as u64);
        for b in custom_values {
            put_custom_bound(w, *b);
        }
    }
}

/// A chunk's layout header.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Layout {
    pub schema: i32,
    pub zero_threshold: f64,
    pub pos: Vec<Span>,
    pub neg: Vec<Span>,
    pub custom_values: Vec<f64>,
}

/// Prometheus's `readHistogramChunkLayout`.
pub(crate) fn read_layout(r: &mut BitReader<'_>) -> Result<Layout, DecodeError> {
    let zero_threshold = read_zero_threshold(r)?;
    let schema = read_varbit_int(r)?;
    let schema = i32::try_from(schema).map_err(|_| DecodeError::Invalid("schema out of range"))?;
    let pos = read_spans(r)?;
    let neg = read_spans(r)?;
    let mut custom_values = Vec::new();
    if is_custom_buckets(schema) {
        let n = read_varbit_uint(r)?;
        for _ in 0..n {
            custom_values.push(read_custom_bound(r)?);
        }
    }
    Ok(Layout {
        schema,
        zero_threshold,
        pos,
        neg,
        custom_values,
    })
}

fn put_spans(w: &mut BitWriter, spans: &[Span]) {
    put_varbit_uint(w, spans.len() as u64);
    for s in spans {
        put_varbit_uint(w, u64::from(s.length));
        put_varbit_int(w, i64::from(s.offset));
    }
}

fn read_spans(r: &mut BitReader<'_>) -> Result<Vec<Span>, DecodeError> {
    let n = read_varbit_uint(r)?;
    // Every span takes at least two bits: a count beyond the data is corrupt.
    if n > 1 << 20 {
        return Err(DecodeError::Invalid("span count out of range"));
    }
    let mut spans = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let length = read_varbit_uint(r)?;
        let offset = read_varbit_int(r)?;
        spans.push(Span {
            offset: offset as i32,
            length: length as u32,
        });
    }
    Ok(spans)
}

/// Prometheus's `putZeroThreshold`: one byte for 0 and for powers of two in
/// `2^-243 ..= 2^10` (biased exponent), else 255 and the 8 bytes of the float.
fn put_zero_threshold(w: &mut BitWriter, threshold: f64) {
    if threshold == 0.0 {
        w.write_byte(0);
        return;
    }
    match frexp(threshold) {
        (frac, exp) if frac == 0.5 && (-242..=11).contains(&exp) => {
            w.write_byte((exp + 243) as u8);
        }
        _ => {
            w.write_byte(255);
            w.write_bits(threshold.to_bits(), 64);
        }
    }
}

fn read_zero_threshold(r: &mut BitReader<'_>) -> Result<f64, DecodeError> {
    Ok(match r.read_byte()? {
        0 => 0.0,
        255 => f64::from_bits(r.read_bits(64)?),
        b => super::ldexp(0.5, i64::from(b) - 243),
    })
}

/// Go's `math.Frexp` for finite non-zero values: `f = frac * 2^exp`, `frac` in
/// `[0.5, 1)` (sign kept). NaN and infinities come back unchanged with exponent 0.
fn frexp(f: f64) -> (f64, i32) {
    if f == 0.0 || !f.is_finite() {
        return (f, 0);
    }
    let (mut f, mut exp) = (f, 0i32);
    if f.abs() < f64::MIN_POSITIVE {
        // subnormal: normalise first
        f *= (1u64 << 52) as f64;
        exp = -52;
    }
    let bits = f.to_bits();
    exp += ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, exp)
}

/// Prometheus's `putCustomBound`: bounds that are whole multiples of 0.001 in
/// `0 ..= 33554.430` as a varbit of `bound*1000 + 1`, else a 0 bit and the float.
fn put_custom_bound(w: &mut BitWriter, f: f64) {
    let tf = f * 1000.0;
    let whole = {
        let i = (f * 1000.0).round() as u64;
        i as f64 / 1000.0 == f
    };
    if !(0.0..=33554430.0).contains(&tf) || !whole {
        w.write_bit(false);
        w.write_bits(f.to_bits(), 64);
        return;
    }
    put_varbit_uint(w, tf.round() as u64 + 1);
}

fn read_custom_bound(r: &mut BitReader<'_>) -> Result<f64, DecodeError> {
    match read_varbit_uint(r)? {
        0 => Ok(f64::from_bits(r.read_bits(64)?)),
        b => Ok((b - 1) as f64 / 1000.0),
    }
}

/// Number of buckets the spans describe.
pub(crate) fn count_spans(spans: &[Span]) -> usize {
    spans.iter().map(|s| s.length as usize).sum()
}

/// Prometheus's `bucketIterator`: the absolute bucket indexes the spans cover.
pub(crate) struct BucketIdx<'a> {
    spans: &'a [Span],
    span: usize,
    bucket: i64,
    idx: i64,
}

impl<'a> BucketIdx<'a> {
    pub fn new(spans: &'a [Span]) -> Self {
        let idx = -1 + spans.first().map_or(0, |s| i64::from(s.offset));
        BucketIdx {
            spans,
            span: 0,
            bucket: -1,
            idx,
        }
    }
}

impl Iterator for BucketIdx<'_> {
    type Item = i64;
    fn next(&mut self) -> Option<i64> {
        if self.span >= self.spans.len() {
            return None;
        }
        if self.bucket < i64::from(self.spans[self.span].length) - 1 {
            self.bucket += 1;
            self.idx += 1;
            return Some(self.idx);
        }
        while self.span < self.spans.len() - 1 {
            self.span += 1;
            self.idx += i64::from(self.spans[self.span].offset) + 1;
            self.bucket = 0;
            if self.spans[self.span].length == 0 {
                self.idx -= 1;
                continue;
            }
            return Some(self.idx);
        }
        // Like Go's iterator: exhausted for good once the last span is done.
        self.span = self.spans.len();
        None
    }
}

/// Whether two span lists describe the same buckets (Prometheus's `spansMatch`).
pub(crate) fn spans_match(a: &[Span], b: &[Span]) -> bool {
    BucketIdx::new(a).eq(BucketIdx::new(b))
}

/// `num` new buckets to insert before the `pos`th bucket of the original slice;
/// `bucket_idx` is the absolute index of the first of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Insert {
    pub pos: usize,
    pub num: usize,
    pub bucket_idx: i64,
}

/// Prometheus's `expandIntSpansAndBuckets` / `expandFloatSpansAndBuckets`: the inserts
/// that turn the layout `a` (with absolute counts from `a_count(i)`) into one covering
/// `b` too (forward), and the inserts into `b` for buckets of `a` that are empty
/// (backward). `None` when a bucket of `a` is missing from `b` while not empty, or a
/// bucket's count went down: a counter reset.
pub(crate) fn expand_spans_and_buckets<C: PartialOrd + Copy + Default>(
    a: &[Span],
    b: &[Span],
    mut a_counts: impl Iterator<Item = C>,
    mut b_counts: impl Iterator<Item = C>,
) -> Option<(Vec<Insert>, Vec<Insert>)> {
    let mut ai = BucketIdx::new(a);
    let mut bi = BucketIdx::new(b);
    let mut a_inserts = Vec::new();
    let mut b_inserts = Vec::new();
    let mut a_inter = Insert::default();
    let mut b_inter = Insert::default();
    let mut a_idx = ai.next();
    let mut b_idx = bi.next();
    // the counts at the current positions (positions only ever advance by one)
    let (mut a_cur, mut b_cur) = (a_counts.next(), b_counts.next());

    fn add_insert(inserts: &mut Vec<Insert>, ins: &mut Insert, other_idx: i64) {
        if ins.num == 0 {
            ins.bucket_idx = other_idx;
        } else if ins.bucket_idx + ins.num as i64 != other_idx {
            inserts.push(*ins);
            ins.num = 0;
            ins.bucket_idx = other_idx;
        }
        ins.num += 1;
    }

    loop {
        let a_first = match (a_idx, b_idx) {
            (Some(av), Some(bv)) => av.cmp(&bv),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => {
                if a_inter.num > 0 {
                    a_inserts.push(a_inter);
                }
                if b_inter.num > 0 {
                    b_inserts.push(b_inter);
                }
                return Some((a_inserts, b_inserts));
            }
        };
        match (a_first, a_idx, b_idx) {
            (std::cmp::Ordering::Equal, _, _) => {
                if a_cur? > b_cur? {
                    return None;
                }
                // advance a
                if a_inter.num > 0 {
                    a_inserts.push(a_inter);
                    a_inter.num = 0;
                }
                a_idx = ai.next();
                a_inter.pos += 1;
                a_cur = a_counts.next();
                // advance b
                if b_inter.num > 0 {
                    b_inserts.push(b_inter);
                    b_inter.num = 0;
                }
                b_idx = bi.next();
                b_inter.pos += 1;
                b_cur = b_counts.next();
            }
            (std::cmp::Ordering::Less, Some(av), _) => {
                // b misses a bucket of a: fine only when it is empty in a
                if a_cur? != C::default() {
                    return None;
                }
                add_insert(&mut b_inserts, &mut b_inter, av);
                if a_inter.num > 0 {
                    a_inserts.push(a_inter);
                    a_inter.num = 0;
                }
                a_idx = ai.next();
                a_inter.pos += 1;
                a_cur = a_counts.next();
            }
            (_, _, Some(bv)) => {
                // a misses a bucket of b
                add_insert(&mut a_inserts, &mut a_inter, bv);
                if b_inter.num > 0 {
                    b_inserts.push(b_inter);
                    b_inter.num = 0;
                }
                b_idx = bi.next();
                b_inter.pos += 1;
                b_cur = b_counts.next();
            }
            (_, _, None) => unreachable!("a is ahead only while b has buckets"),
        }
    }
}

/// Prometheus's `expandSpansBothWays` (gauge histograms): forward inserts into `a`,
/// backward inserts into `b`, and the merged spans.
pub(crate) fn expand_spans_both_ways(
    a: &[Span],
    b: &[Span],
) -> (Vec<Insert>, Vec<Insert>, Vec<Span>) {
    let mut ai = BucketIdx::new(a);
    let mut bi = BucketIdx::new(b);
    let mut f_inserts = Vec::new();
    let mut b_inserts = Vec::new();
    let mut merged = Vec::new();
    let mut last_bucket = 0i64;
    let mut f_inter = Insert::default();
    let mut b_inter = Insert::default();
    let mut av = ai.next();
    let mut bv = bi.next();
    loop {
        match (av, bv) {
            (Some(x), Some(y)) if x == y => {
                if f_inter.num > 0 {
                    f_inserts.push(f_inter);
                    f_inter.num = 0;
                }
                if b_inter.num > 0 {
                    b_inserts.push(b_inter);
                    b_inter.num = 0;
                }
                add_bucket(&mut merged, &mut last_bucket, x);
                av = ai.next();
                bv = bi.next();
                f_inter.pos += 1;
                b_inter.pos += 1;
            }
            (Some(x), Some(y)) if x < y => {
                b_inter.num += 1;
                if f_inter.num > 0 {
                    f_inserts.push(f_inter);
                    f_inter.num = 0;
                }
                add_bucket(&mut merged, &mut last_bucket, x);
                f_inter.pos += 1;
                av = ai.next();
            }
            (Some(_), Some(y)) => {
                f_inter.num += 1;
                if b_inter.num > 0 {
                    b_inserts.push(b_inter);
                    b_inter.num = 0;
                }
                add_bucket(&mut merged, &mut last_bucket, y);
                b_inter.pos += 1;
                bv = bi.next();
            }
            (Some(x), None) => {
                b_inter.num += 1;
                add_bucket(&mut merged, &mut last_bucket, x);
                av = ai.next();
            }
            (None, Some(y)) => {
                f_inter.num += 1;
                add_bucket(&mut merged, &mut last_bucket, y);
                bv = bi.next();
            }
            (None, None) => {
                if f_inter.num > 0 {
                    f_inserts.push(f_inter);
                }
                if b_inter.num > 0 {
                    b_inserts.push(b_inter);
                }
                return (f_inserts, b_inserts, merged);
            }
        }
    }
}

fn add_bucket(merged: &mut Vec<Span>, last_bucket: &mut i64, b: i64) {
    let mut offset = b - *last_bucket - 1;
    if offset == 0 && !merged.is_empty() {
        merged.last_mut().expect("not empty").length += 1;
    } else {
        if merged.is_empty() {
            offset += 1;
        }
        merged.push(Span {
            offset: offset as i32,
            length: 1,
        });
    }
    *last_bucket = b;
}

/// Bucket values an insert can fill: delta-encoded integers or absolute floats.
pub(crate) trait BucketValue:
    Copy + Default + std::ops::Add<Output = Self> + std::ops::Neg<Output = Self>
{
}
impl BucketValue for i64 {}
impl BucketValue for f64 {}

/// Prometheus's `insert`: `input` with `inserts` applied (new buckets count 0). With
/// `deltas`, values are delta-encoded and the bucket after an insert is re-based.
pub(crate) fn insert<V: BucketValue>(input: &[V], inserts: &[Insert], deltas: bool) -> Vec<V> {
    let total = input.len() + inserts.iter().map(|i| i.num).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    let mut v = V::default();
    let mut ii = 0;
    for (i, &d) in input.iter().enumerate() {
        if ii >= inserts.len() || i != inserts[ii].pos {
            out.push(d);
            v = v + d;
            continue;
        }
        let mut first = true;
        while ii < inserts.len() && i == inserts[ii].pos {
            if deltas && first {
                out.push(-v);
                first = false;
            } else {
                out.push(V::default());
            }
            for _ in 1..inserts[ii].num {
                out.push(V::default());
            }
            ii += 1;
        }
        out.push(if deltas { d + v } else { d });
        v = v + d;
    }
    while ii < inserts.len() {
        out.push(if deltas { -v } else { V::default() });
        for _ in 1..inserts[ii].num {
            out.push(V::default());
        }
        ii += 1;
        v = V::default();
    }
    out
}

/// Prometheus's `adjustForInserts`: `spans` grown by the buckets of `inserts`.
pub(crate) fn adjust_for_inserts(spans: &[Span], inserts: &[Insert]) -> Vec<Span> {
    if inserts.is_empty() {
        return spans.to_vec();
    }
    let mut merged = Vec::new();
    let mut last_bucket = 0i64;
    let mut i = 0usize;
    let mut insert_idx = inserts[0].bucket_idx;
    let mut insert_num = inserts[0].num;
    let consume = |i: &mut usize, insert_idx: &mut i64, insert_num: &mut usize| {
        *insert_num -= 1;
        if *insert_num == 0 {
            *i += 1;
            if *i < inserts.len() {
                *insert_idx = inserts[*i].bucket_idx;
                *insert_num = inserts[*i].num;
            }
        } else {
            *insert_idx += 1;
        }
    };
    let mut it = BucketIdx::new(spans);
    let mut bucket = it.next();
    while let Some(b) = bucket {
        if i < inserts.len() && insert_idx < b {
            add_bucket(&mut merged, &mut last_bucket, insert_idx);
            consume(&mut i, &mut insert_idx, &mut insert_num);
        } else {
            add_bucket(&mut merged, &mut last_bucket, b);
            bucket = it.next();
        }
    }
    while i < inserts.len() {
        add_bucket(&mut merged, &mut last_bucket, insert_idx);
        consume(&mut i, &mut insert_idx, &mut insert_num);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(v: &[(i32, u32)]) -> Vec<Span> {
        v.iter()
            .map(|&(offset, length)| Span { offset, length })
            .collect()
    }

    #[test]
    fn zero_threshold_encoding() {
        for (th, bytes) in [
            (0.0, vec![0u8]),
            (2f64.powi(-128), vec![116]),
            (1.0, vec![244]),
            (1024.0, vec![254]),
        ] {
            let mut w = BitWriter::with_header(0);
            put_zero_threshold(&mut w, th);
            assert_eq!(w.buf, bytes, "{th}");
            assert_eq!(
                read_zero_threshold(&mut BitReader::new(&w.buf)).unwrap(),
                th
            );
        }
        let mut w = BitWriter::with_header(0);
        put_zero_threshold(&mut w, 0.001);
        assert_eq!(w.buf.len(), 9);
        assert_eq!(w.buf[0], 255);
        assert_eq!(
            read_zero_threshold(&mut BitReader::new(&w.buf)).unwrap(),
            0.001
        );
        assert_eq!(frexp(8.0), (0.5, 4));
        assert_eq!(frexp(-3.0), (-0.75, 2));
    }

    #[test]
    fn bucket_iterator_skips_empty_spans() {
        let s = sp(&[(0, 2), (2, 1), (3, 0), (0, 2)]);
        assert_eq!(BucketIdx::new(&s).collect::<Vec<_>>(), vec![0, 1, 4, 8, 9]);
        assert!(spans_match(&s, &sp(&[(0, 2), (2, 1), (3, 2)])));
        assert!(!spans_match(&s, &sp(&[(0, 2), (2, 1), (4, 2)])));
    }

    // The worked example of Prometheus's expandSpansForward comment.
    #[test]
    fn expand_forward_example() {
        let a = sp(&[(0, 2), (2, 1), (3, 2), (3, 1), (1, 1)]);
        let b = sp(&[(0, 3), (1, 1), (1, 4), (3, 3)]);
        let a_abs = [6.0, 3.0, 3.0, 2.0, 4.0, 5.0, 1.0];
        let b_abs = [6.0, 3.0, 0.0, 3.0, 0.0, 0.0, 2.0, 4.0, 5.0, 0.0, 1.0];
        let (fwd, bwd) =
            expand_spans_and_buckets(&a, &b, a_abs.iter().copied(), b_abs.iter().copied()).unwrap();
        assert!(bwd.is_empty());
        assert_eq!(
            fwd.iter().map(|i| (i.pos, i.num)).collect::<Vec<_>>(),
            vec![(2, 1), (3, 2), (6, 1)]
        );
        let deltas = [6i64, -3, 0, -1, 2, 1, -4];
        assert_eq!(
            insert(&deltas, &fwd, true),
            vec![6, -3, -3, 3, -3, 0, 2, 2, 1, -5, 1]
        );
        assert_eq!(adjust_for_inserts(&a, &fwd), b);
        // a bucket that went down is a counter reset
        let mut b_abs2 = b_abs;
        b_abs2[7] = 3.0;
        assert!(
            expand_spans_and_buckets(&a, &b, a_abs.iter().copied(), b_abs2.iter().copied())
                .is_none()
        );
    }

    #[test]
    fn expand_both_ways_merges() {
        let a = sp(&[(0, 2)]);
        let b = sp(&[(1, 2)]);
        let (f, bw, merged) = expand_spans_both_ways(&a, &b);
        assert_eq!(merged, sp(&[(0, 3)]));
        assert_eq!(
            f.iter().map(|i| (i.pos, i.num)).collect::<Vec<_>>(),
            vec![(2, 1)]
        );
        assert_eq!(
            bw.iter().map(|i| (i.pos, i.num)).collect::<Vec<_>>(),
            vec![(0, 1)]
        );
        assert_eq!(insert(&[1.0, 2.0], &f, false), vec![1.0, 2.0, 0.0]);
        assert_eq!(insert(&[5.0, 7.0], &bw, false), vec![0.0, 5.0, 7.0]);
    }

    #[test]
    fn custom_bounds_round_trip() {
        let mut w = BitWriter::with_header(0);
        let bounds = [
            0.0,
            0.005,
            1.5,
            33554.43,
            33554.431,
            -1.0,
            0.0001,
            f64::INFINITY,
        ];
        write_layout(
            &mut w,
            super::super::CUSTOM_BUCKETS_SCHEMA,
            0.0,
            &[],
            &[],
            &bounds,
        );
        let l = read_layout(&mut BitReader::new(&w.buf)).unwrap();
        assert_eq!(l.custom_values, bounds);
        assert_eq!(l.schema, -53);
    }
}
