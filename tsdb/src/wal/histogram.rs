//! Payloads of the native histogram WAL records, with Prometheus's record types: 7
//! (integer histogram samples), 8 (float histogram samples), 9 and 10 (the same with
//! custom buckets, schema -53, kept apart so that a reader without custom buckets skips
//! them whole).
//!
//! ```text
//! uvarint(n) [ uvarint(base_ref) varint(base_t)
//!              { varint(ref - base_ref) varint(t - base_t) histogram } ]
//! ```
//!
//! The frame around it and the base/delta header are Strata's (as for float samples);
//! each `histogram` is laid out exactly as Prometheus's `record.EncodeHistogram` /
//! `EncodeFloatHistogram`: hint byte, varint schema, BE64 zero threshold, zero count and
//! count (uvarints for integer histograms, BE64 floats otherwise), BE64 sum,
//! uvarint-counted positive then negative spans (varint offset, uvarint length),
//! uvarint-counted positive then negative buckets (varint deltas / BE64 floats), and
//! for schema -53 the uvarint-counted BE64 custom bounds.

use super::record::DecodeError;
use crate::histogram::{is_custom_buckets, CounterResetHint, FloatHistogram, Histogram, Span};
use crate::varint::{self, put_uvarint, put_varint};

/// An integer histogram sample of series `ref` at `t` (ms).
pub type RefHistogram = (u64, i64, Histogram);
/// A float histogram sample of series `ref` at `t` (ms).
pub type RefFloatHistogram = (u64, i64, FloatHistogram);

pub(crate) fn encode_histograms(buf: &mut Vec<u8>, entries: &[RefHistogram]) {
    encode_entries(buf, entries, |buf, h| {
        buf.push(h.counter_reset_hint as u8);
        put_varint(buf, i64::from(h.schema));
        buf.extend_from_slice(&h.zero_threshold.to_bits().to_be_bytes());
        put_uvarint(buf, h.zero_count);
        put_uvarint(buf, h.count);
        buf.extend_from_slice(&h.sum.to_bits().to_be_bytes());
        put_spans(buf, &h.positive_spans);
        put_spans(buf, &h.negative_spans);
        for b in [&h.positive_buckets, &h.negative_buckets] {
            put_uvarint(buf, b.len() as u64);
            for d in b {
                put_varint(buf, *d);
            }
        }
        put_custom(buf, h.schema, &h.custom_values);
    })
}

pub(crate) fn encode_float_histograms(buf: &mut Vec<u8>, entries: &[RefFloatHistogram]) {
    encode_entries(buf, entries, |buf, h| {
        buf.push(h.counter_reset_hint as u8);
        put_varint(buf, i64::from(h.schema));
        for f in [h.zero_threshold, h.zero_count, h.count, h.sum] {
            buf.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        put_spans(buf, &h.positive_spans);
        put_spans(buf, &h.negative_spans);
        for b in [&h.positive_buckets, &h.negative_buckets] {
            put_floats(buf, b);
        }
        put_custom(buf, h.schema, &h.custom_values);
    })
}

fn encode_entries<H>(
    buf: &mut Vec<u8>,
    entries: &[(u64, i64, H)],
    mut enc: impl FnMut(&mut Vec<u8>, &H),
) {
    put_uvarint(buf, entries.len() as u64);
    let Some((base_ref, base_t, _)) = entries.first() else {
        return;
    };
    put_uvarint(buf, *base_ref);
    put_varint(buf, *base_t);
    for (r, t, h) in entries {
        put_varint(buf, r.wrapping_sub(*base_ref) as i64);
        put_varint(buf, t.wrapping_sub(*base_t));
        enc(buf, h);
    }
}

fn put_spans(buf: &mut Vec<u8>, spans: &[Span]) {
    put_uvarint(buf, spans.len() as u64);
    for s in spans {
        put_varint(buf, i64::from(s.offset));
        put_uvarint(buf, u64::from(s.length));
    }
}

fn put_floats(buf: &mut Vec<u8>, v: &[f64]) {
    put_uvarint(buf, v.len() as u64);
    for f in v {
        buf.extend_from_slice(&f.to_bits().to_be_bytes());
    }
}

fn put_custom(buf: &mut Vec<u8>, schema: i32, custom: &[f64]) {
    if is_custom_buckets(schema) {
        put_floats(buf, custom);
    }
}

/// A reader over one payload.
pub(crate) struct Dec<'a> {
    b: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Dec<'a> {
        Dec { b, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let (x, n) = varint::uvarint(self.b.get(self.pos..).unwrap_or_default())?;
        self.pos += n;
        Ok(x)
    }

    fn varint(&mut self) -> Result<i64, DecodeError> {
        Ok(varint::unzigzag(self.uvarint()?))
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .b
            .get(self.pos)
            .ok_or(DecodeError("truncated payload"))?;
        self.pos += 1;
        Ok(b)
    }

    fn be_f64(&mut self) -> Result<f64, DecodeError> {
        let b = self
            .b
            .get(self.pos..self.pos + 8)
            .ok_or(DecodeError("truncated payload"))?;
        self.pos += 8;
        Ok(f64::from_bits(u64::from_be_bytes(
            b.try_into().expect("8 bytes"),
        )))
    }

    /// A list length, bounded by what is left (each element takes at least `min` bytes).
    fn len(&mut self, min: usize) -> Result<usize, DecodeError> {
        let n = self.uvarint()?;
        if n > (self.remaining() / min) as u64 {
            return Err(DecodeError("histogram list length exceeds payload"));
        }
        Ok(n as usize)
    }

    fn spans(&mut self) -> Result<Vec<Span>, DecodeError> {
        let n = self.len(2)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let offset = i32::try_from(self.varint()?)
                .map_err(|_| DecodeError("histogram span offset out of range"))?;
            let length = u32::try_from(self.uvarint()?)
                .map_err(|_| DecodeError("histogram span length out of range"))?;
            out.push(Span { offset, length });
        }
        Ok(out)
    }

    fn floats(&mut self) -> Result<Vec<f64>, DecodeError> {
        let n = self.len(8)?;
        (0..n).map(|_| self.be_f64()).collect()
    }

    /// The counter reset hint and the schema that start every histogram.
    fn header(&mut self) -> Result<(CounterResetHint, i32), DecodeError> {
        let hint = CounterResetHint::from_u8(self.byte()?)
            .ok_or(DecodeError("unknown counter reset hint"))?;
        let schema = i32::try_from(self.varint()?)
            .map_err(|_| DecodeError("histogram schema out of range"))?;
        Ok((hint, schema))
    }
}

fn decode_entries<H>(
    d: &mut Dec<'_>,
    mut dec: impl FnMut(&mut Dec<'_>) -> Result<H, DecodeError>,
) -> Result<Vec<(u64, i64, H)>, DecodeError> {
    let n = d.uvarint()?;
    if n == 0 {
        return Ok(Vec::new());
    }
    // an entry takes at least 2 + 1 + 1 + 8 + 1 + 1 + 8 + 4 bytes
    if n > (d.remaining() / 26) as u64 {
        return Err(DecodeError("histogram count exceeds payload"));
    }
    let base_ref = d.uvarint()?;
    let base_t = d.varint()?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let dr = d.varint()?;
        let dt = d.varint()?;
        let h = dec(d)?;
        out.push((base_ref.wrapping_add(dr as u64), base_t.wrapping_add(dt), h));
    }
    Ok(out)
}

pub(crate) fn decode_histograms(d: &mut Dec<'_>) -> Result<Vec<RefHistogram>, DecodeError> {
    decode_entries(d, |d| {
        let (counter_reset_hint, schema) = d.header()?;
        let zero_threshold = d.be_f64()?;
        let zero_count = d.uvarint()?;
        let count = d.uvarint()?;
        let sum = d.be_f64()?;
        let positive_spans = d.spans()?;
        let negative_spans = d.spans()?;
        let mut buckets = [Vec::new(), Vec::new()];
        for b in &mut buckets {
            let n = d.len(1)?;
            b.reserve(n);
            for _ in 0..n {
                b.push(d.varint()?);
            }
        }
        let [positive_buckets, negative_buckets] = buckets;
        let custom_values = if is_custom_buckets(schema) {
            d.floats()?
        } else {
            Vec::new()
        };
        Ok(Histogram {
            counter_reset_hint,
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            positive_spans,
            negative_spans,
            positive_buckets,
            negative_buckets,
            custom_values,
        })
    })
}

pub(crate) fn decode_float_histograms(
    d: &mut Dec<'_>,
) -> Result<Vec<RefFloatHistogram>, DecodeError> {
    decode_entries(d, |d| {
        let (counter_reset_hint, schema) = d.header()?;
        let zero_threshold = d.be_f64()?;
        let zero_count = d.be_f64()?;
        let count = d.be_f64()?;
        let sum = d.be_f64()?;
        let positive_spans = d.spans()?;
        let negative_spans = d.spans()?;
        let positive_buckets = d.floats()?;
        let negative_buckets = d.floats()?;
        let custom_values = if is_custom_buckets(schema) {
            d.floats()?
        } else {
            Vec::new()
        };
        Ok(FloatHistogram {
            counter_reset_hint,
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            positive_spans,
            negative_spans,
            positive_buckets,
            negative_buckets,
            custom_values,
        })
    })
}
