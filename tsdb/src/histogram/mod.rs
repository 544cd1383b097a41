//! Prometheus's native (sparse, exponential) histograms: the sample types, with the
//! field meanings of Prometheus's `model/histogram` so that chunk encodings, WAL records,
//! remote write and PromQL all share one representation.
//!
//! A [`Histogram`] is what integer-counted sources (remote write, the histogram chunk
//! encoding) carry: bucket counts delta-encoded. A [`FloatHistogram`] holds absolute
//! float counts; PromQL computes on it.
//!
//! [`chunk`] holds Prometheus's two histogram chunk encodings (byte-identical), and
//! [`decode_chunk_float`] / [`decode_chunk`] decode a stored chunk of either encoding
//! for read paths.

mod bits;
pub mod chunk;
mod meta;
#[cfg(test)]
mod tests_chunk;

use crate::chunkenc::Encoding;
pub use chunk::{
    AppendOutcome, CounterResetHeader, FloatHistogramChunk, FloatHistogramIter, HistogramChunk,
    HistogramIter,
};

/// Why histogram chunk data could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("histogram chunk data ends early")]
    Truncated,
    #[error("invalid histogram chunk data: {0}")]
    Invalid(&'static str),
    #[error("histogram chunk has unsupported schema {0}")]
    UnsupportedSchema(i32),
    #[error("{0} chunks do not hold histograms")]
    NotHistogram(Encoding),
}

/// Schema of histograms with custom (explicit) bucket boundaries (`CustomBucketsSchema`).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// Exponential schemas range from `EXPONENTIAL_SCHEMA_MIN` (base 2^16) to
/// `EXPONENTIAL_SCHEMA_MAX` (base 2^(2^-8)).
pub const EXPONENTIAL_SCHEMA_MIN: i32 = -4;
pub const EXPONENTIAL_SCHEMA_MAX: i32 = 8;

/// Prometheus's `CounterResetHint`, with its numeric values (they are encoded in chunks).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CounterResetHint {
    #[default]
    Unknown = 0,
    CounterReset = 1,
    NotCounterReset = 2,
    Gauge = 3,
}

impl CounterResetHint {
    pub fn from_u8(b: u8) -> Option<CounterResetHint> {
        match b {
            0 => Some(CounterResetHint::Unknown),
            1 => Some(CounterResetHint::CounterReset),
            2 => Some(CounterResetHint::NotCounterReset),
            3 => Some(CounterResetHint::Gauge),
            _ => None,
        }
    }
}

/// A run of `length` consecutive buckets starting `offset` buckets after the end of the
/// previous span (or at bucket index `offset` for the first span).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

/// An integer histogram; bucket counts are deltas (first bucket absolute, then each
/// bucket's difference to the previous one, across spans).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub counter_reset_hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub negative_spans: Vec<Span>,
    pub positive_buckets: Vec<i64>,
    pub negative_buckets: Vec<i64>,
    /// Upper bounds of the custom buckets (only with [`CUSTOM_BUCKETS_SCHEMA`]).
    pub custom_values: Vec<f64>,
}

/// A float histogram; bucket counts are absolute.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    pub counter_reset_hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub negative_spans: Vec<Span>,
    pub positive_buckets: Vec<f64>,
    pub negative_buckets: Vec<f64>,
    /// Upper bounds of the custom buckets (only with [`CUSTOM_BUCKETS_SCHEMA`]).
    pub custom_values: Vec<f64>,
}

/// Whether `schema` is the custom-buckets schema.
pub fn is_custom_buckets(schema: i32) -> bool {
    schema == CUSTOM_BUCKETS_SCHEMA
}

/// Whether `schema` is one Prometheus accepts.
pub fn is_valid_schema(schema: i32) -> bool {
    is_custom_buckets(schema) || (EXPONENTIAL_SCHEMA_MIN..=EXPONENTIAL_SCHEMA_MAX).contains(&schema)
}

/// `frac * 2^exp`, as Go's `math.Ldexp`: exact across the whole range (large exponents
/// are applied in steps so no intermediate power overflows early). Bucket bounds and
/// the zero threshold encoding use it.
pub fn ldexp(frac: f64, exp: i64) -> f64 {
    let mut f = frac;
    let mut e = exp;
    while e > 1000 {
        f *= 2f64.powi(1000);
        e -= 1000;
        if f.is_infinite() {
            return f;
        }
    }
    while e < -1000 {
        f *= 2f64.powi(-1000);
        e += 1000;
        if f == 0.0 {
            return f;
        }
    }
    f * 2f64.powi(e as i32)
}

impl Histogram {
    /// Prometheus's `Histogram.Equals`: same values (sum compared by bits, so two stale
    /// markers are equal) and the same buckets, however the spans split them. The
    /// counter-reset hint is not compared.
    pub fn equals(&self, o: &Histogram) -> bool {
        self.schema == o.schema
            && self.count == o.count
            && self.sum.to_bits() == o.sum.to_bits()
            && (!is_custom_buckets(self.schema) || self.custom_values == o.custom_values)
            && self.zero_threshold == o.zero_threshold
            && self.zero_count == o.zero_count
            && meta::spans_match(&self.negative_spans, &o.negative_spans)
            && self.negative_buckets == o.negative_buckets
            && meta::spans_match(&self.positive_spans, &o.positive_spans)
            && self.positive_buckets == o.positive_buckets
    }

    /// The histogram with absolute float counts (Prometheus's `ToFloat`).
    pub fn to_float(&self) -> FloatHistogram {
        FloatHistogram {
            counter_reset_hint: self.counter_reset_hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count as f64,
            count: self.count as f64,
            sum: self.sum,
            positive_spans: self.positive_spans.clone(),
            negative_spans: self.negative_spans.clone(),
            positive_buckets: deltas_to_absolute(&self.positive_buckets),
            negative_buckets: deltas_to_absolute(&self.negative_buckets),
            custom_values: self.custom_values.clone(),
        }
    }
}

impl FloatHistogram {
    /// Prometheus's `FloatHistogram.Equals` (counts and buckets compared by bits).
    pub fn equals(&self, o: &FloatHistogram) -> bool {
        let bits_eq = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        self.schema == o.schema
            && self.count.to_bits() == o.count.to_bits()
            && self.sum.to_bits() == o.sum.to_bits()
            && (!is_custom_buckets(self.schema) || self.custom_values == o.custom_values)
            && self.zero_threshold == o.zero_threshold
            && self.zero_count.to_bits() == o.zero_count.to_bits()
            && meta::spans_match(&self.negative_spans, &o.negative_spans)
            && bits_eq(&self.negative_buckets, &o.negative_buckets)
            && meta::spans_match(&self.positive_spans, &o.positive_spans)
            && bits_eq(&self.positive_buckets, &o.positive_buckets)
    }
}

/// Decode every sample of a histogram chunk (`Encoding::Histogram` or
/// `Encoding::FloatHistogram`) as float histograms, appended to `out`: what PromQL
/// computes on. Integer histograms are converted (Prometheus's `AtFloatHistogram`).
/// On an error the samples before it are kept in `out`.
pub fn decode_chunk_float(
    encoding: Encoding,
    data: &[u8],
    out: &mut Vec<(i64, FloatHistogram)>,
) -> Result<(), DecodeError> {
    match encoding {
        Encoding::Histogram => {
            let mut it = HistogramIter::new(data);
            out.reserve(it.num_samples());
            loop {
                let mut fh = FloatHistogram::default();
                match it.next_float_into(&mut fh) {
                    Some(t) => out.push((t, fh)),
                    None => break,
                }
            }
            it.err().cloned().map_or(Ok(()), Err)
        }
        Encoding::FloatHistogram => {
            let mut it = FloatHistogramIter::new(data);
            out.reserve(it.num_samples());
            out.extend(it.by_ref());
            it.err().cloned().map_or(Ok(()), Err)
        }
        e => Err(DecodeError::NotHistogram(e)),
    }
}

/// Decode an integer histogram chunk (`Encoding::Histogram`) as it was written,
/// appended to `out`.
pub fn decode_chunk(data: &[u8], out: &mut Vec<(i64, Histogram)>) -> Result<(), DecodeError> {
    let mut it = HistogramIter::new(data);
    out.reserve(it.num_samples());
    out.extend(it.by_ref());
    it.err().cloned().map_or(Ok(()), Err)
}

/// A stored histogram chunk's samples in `[mint, maxt]` decoded as float histograms
/// (for range-restricted reads); same contract as [`decode_chunk_float`].
pub fn decode_chunk_float_in_range(
    encoding: Encoding,
    data: &[u8],
    mint: i64,
    maxt: i64,
    out: &mut Vec<(i64, FloatHistogram)>,
) -> Result<(), DecodeError> {
    let mut tail = Vec::new();
    let r = decode_chunk_float(encoding, data, &mut tail);
    out.extend(tail.into_iter().filter(|(t, _)| *t >= mint && *t <= maxt));
    r
}

fn deltas_to_absolute(deltas: &[i64]) -> Vec<f64> {
    let mut cur = 0i64;
    deltas
        .iter()
        .map(|d| {
            cur = cur.wrapping_add(*d);
            cur as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldexp_as_go() {
        assert_eq!(ldexp(0.5, 1), 1.0);
        assert_eq!(ldexp(1.0, -1074), f64::from_bits(1)); // the smallest subnormal
        assert_eq!(ldexp(1.0, 1023), 2f64.powi(1023));
        assert_eq!(ldexp(1.0, 1024), f64::INFINITY);
        assert_eq!(ldexp(1.0, -1075), 0.0);
        assert_eq!(ldexp(1.0, i64::from(i32::MAX) << 4), f64::INFINITY);
        assert_eq!(ldexp(-1.0, -(i64::from(i32::MAX) << 4)), -0.0);
    }

    #[test]
    fn to_float_accumulates_deltas() {
        let h = Histogram {
            schema: 0,
            count: 9,
            sum: 12.5,
            zero_count: 1,
            positive_spans: vec![
                Span {
                    offset: 0,
                    length: 2,
                },
                Span {
                    offset: 1,
                    length: 1,
                },
            ],
            positive_buckets: vec![2, 1, -2],
            ..Default::default()
        };
        let f = h.to_float();
        assert_eq!(f.positive_buckets, vec![2.0, 3.0, 1.0]);
        assert_eq!(f.count, 9.0);
        assert_eq!(f.zero_count, 1.0);
        assert!(is_valid_schema(8) && is_valid_schema(-53) && !is_valid_schema(9));
    }
}
