//! Native histogram samples of a remote write: converted from the request's borrowed
//! view into the head's types, held to Mimir's bucket limit
//! (`--validation.max-native-histogram-buckets`, resolution reduced rather than the
//! sample refused when `--validation.reduce-native-histogram-over-max-buckets`), and
//! validated with Prometheus's `model/histogram` rules and error texts.

use std::fmt;

use strata_proto::HistogramView;
use strata_tsdb::histogram::{
    is_custom_buckets, CounterResetHint, FloatHistogram, Histogram, Span, CUSTOM_BUCKETS_SCHEMA,
    EXPONENTIAL_SCHEMA_MAX, EXPONENTIAL_SCHEMA_MIN,
};

/// Schemas above [`EXPONENTIAL_SCHEMA_MAX`] up to this one are reserved for higher
/// resolutions: Prometheus reduces them to the maximum instead of refusing them.
const EXPONENTIAL_SCHEMA_MAX_RESERVED: i32 = 52;

/// A histogram sample as the head takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum HistSample {
    Int(Histogram),
    Float(FloatHistogram),
}

impl HistSample {
    pub fn schema(&self) -> i32 {
        match self {
            HistSample::Int(h) => h.schema,
            HistSample::Float(h) => h.schema,
        }
    }

    /// Buckets on both sides (what Mimir's bucket limit counts).
    pub fn bucket_count(&self) -> usize {
        match self {
            HistSample::Int(h) => h.positive_buckets.len() + h.negative_buckets.len(),
            HistSample::Float(h) => h.positive_buckets.len() + h.negative_buckets.len(),
        }
    }

    /// The sum is Prometheus's stale marker: the series ends here.
    pub fn is_stale(&self) -> bool {
        let sum = match self {
            HistSample::Int(h) => h.sum,
            HistSample::Float(h) => h.sum,
        };
        sum.to_bits() == STALE_NAN
    }
}

/// Prometheus's stale marker bits.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Why a histogram sample was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistogramError {
    /// Prometheus's `Validate` failed; `kind` picks Mimir's error ID.
    Invalid { kind: InvalidKind, msg: String },
    /// More buckets than `--validation.max-native-histogram-buckets`, reduction off.
    TooManyBuckets { buckets: usize, limit: usize },
    /// More buckets than the limit even at the lowest resolution (or custom buckets).
    NotReducible { buckets: usize, limit: usize },
    /// A schema Prometheus does not know.
    InvalidSchema(i32),
}

/// Which Prometheus validation error, for Mimir's error IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    CountMismatch,
    CountNotBigEnough,
    NegativeBucketCount,
    SpanNegativeOffset,
    SpansBucketsMismatch,
    /// Custom-bucket rules and a negative count: no Mimir ID of their own.
    Other,
}

impl HistogramError {
    /// The `reason` label of rejection metrics (Mimir's ID with `_`).
    pub fn reason(&self) -> &'static str {
        match self {
            HistogramError::Invalid { kind, .. } => match kind {
                InvalidKind::CountMismatch => "native_histogram_count_mismatch",
                InvalidKind::CountNotBigEnough => "native_histogram_count_not_big_enough",
                InvalidKind::NegativeBucketCount => "native_histogram_negative_bucket_count",
                InvalidKind::SpanNegativeOffset => "native_histogram_span_negative_offset",
                InvalidKind::SpansBucketsMismatch => "native_histogram_spans_buckets_mismatch",
                InvalidKind::Other => "invalid_native_histogram",
            },
            HistogramError::TooManyBuckets { .. } => "max_native_histogram_buckets",
            HistogramError::NotReducible { .. } => "not_reducible_native_histogram",
            HistogramError::InvalidSchema(_) => "invalid_native_histogram_schema",
        }
    }

    /// Mimir's error ID.
    pub fn id(&self) -> &'static str {
        match self {
            HistogramError::Invalid { kind, .. } => match kind {
                InvalidKind::CountMismatch => "err-mimir-native-histogram-count-mismatch",
                InvalidKind::CountNotBigEnough => "err-mimir-native-histogram-count-not-big-enough",
                InvalidKind::NegativeBucketCount => {
                    "err-mimir-native-histogram-negative-bucket-count"
                }
                InvalidKind::SpanNegativeOffset => {
                    "err-mimir-native-histogram-span-negative-offset"
                }
                InvalidKind::SpansBucketsMismatch => {
                    "err-mimir-native-histogram-spans-buckets-mismatch"
                }
                InvalidKind::Other => "err-strata-invalid-native-histogram",
            },
            HistogramError::TooManyBuckets { .. } => "err-mimir-max-native-histogram-buckets",
            HistogramError::NotReducible { .. } => "err-mimir-not-reducible-native-histogram",
            HistogramError::InvalidSchema(_) => "err-mimir-invalid-native-histogram-schema",
        }
    }
}

impl fmt::Display for HistogramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistogramError::Invalid { msg, .. } => write!(f, "invalid native histogram: {msg}"),
            HistogramError::TooManyBuckets { buckets, limit } => write!(
                f,
                "received a native histogram sample with too many buckets, buckets: {buckets}, limit: {limit} (the limit is set by --validation.max-native-histogram-buckets)"
            ),
            HistogramError::NotReducible { buckets, limit } => write!(
                f,
                "received a native histogram sample with too many buckets and cannot reduce, buckets: {buckets}, limit: {limit} (the limit is set by --validation.max-native-histogram-buckets)"
            ),
            HistogramError::InvalidSchema(s) => write!(
                f,
                "received a native histogram sample with an invalid schema: {s} (histogram has an invalid schema, which must be between {EXPONENTIAL_SCHEMA_MIN} and {EXPONENTIAL_SCHEMA_MAX} for exponential buckets, or {CUSTOM_BUCKETS_SCHEMA} for custom buckets)"
            ),
        }
    }
}

/// The request's histogram as the head's type: an integer histogram unless the sender
/// set `count_float` (Prometheus's `IsFloatHistogram`).
pub fn from_view(v: &HistogramView<'_>) -> HistSample {
    let spans = |s: &[strata_proto::SpanRef]| {
        s.iter()
            .map(|s| Span {
                offset: s.offset,
                length: s.length,
            })
            .collect::<Vec<_>>()
    };
    let hint = u8::try_from(v.h.reset_hint)
        .ok()
        .and_then(CounterResetHint::from_u8)
        .unwrap_or_default();
    let custom = if is_custom_buckets(v.h.schema) {
        v.custom_values().to_vec()
    } else {
        Vec::new()
    };
    if v.is_float() {
        HistSample::Float(FloatHistogram {
            counter_reset_hint: hint,
            schema: v.h.schema,
            zero_threshold: v.h.zero_threshold,
            zero_count: v.zero_count_float(),
            count: v.count_float(),
            sum: v.h.sum,
            positive_spans: spans(v.positive_spans()),
            negative_spans: spans(v.negative_spans()),
            positive_buckets: v.positive_counts().to_vec(),
            negative_buckets: v.negative_counts().to_vec(),
            custom_values: custom,
        })
    } else {
        HistSample::Int(Histogram {
            counter_reset_hint: hint,
            schema: v.h.schema,
            zero_threshold: v.h.zero_threshold,
            zero_count: v.zero_count_int(),
            count: v.count_int(),
            sum: v.h.sum,
            positive_spans: spans(v.positive_spans()),
            negative_spans: spans(v.negative_spans()),
            positive_buckets: v.positive_deltas().to_vec(),
            negative_buckets: v.negative_deltas().to_vec(),
            custom_values: custom,
        })
    }
}

/// Mimir's distributor checks, then Prometheus's `Validate`: the schema is known
/// (reserved higher resolutions are reduced to the maximum, as Prometheus does), a
/// sample over `max_buckets` (0 = no limit) is reduced in resolution until it fits
/// when `reduce` (else refused), and the result must be a valid histogram.
pub fn prepare(h: &mut HistSample, max_buckets: usize, reduce: bool) -> Result<(), HistogramError> {
    let schema = h.schema();
    if !is_custom_buckets(schema) {
        if schema > EXPONENTIAL_SCHEMA_MAX && schema <= EXPONENTIAL_SCHEMA_MAX_RESERVED {
            reduce_resolution(h, EXPONENTIAL_SCHEMA_MAX);
        } else if !(EXPONENTIAL_SCHEMA_MIN..=EXPONENTIAL_SCHEMA_MAX).contains(&schema) {
            return Err(HistogramError::InvalidSchema(schema));
        }
    }
    if max_buckets > 0 {
        let buckets = h.bucket_count();
        if buckets > max_buckets {
            if !reduce {
                return Err(HistogramError::TooManyBuckets {
                    buckets,
                    limit: max_buckets,
                });
            }
            // spans must add up before buckets are merged along them
            validate(h)?;
            while h.bucket_count() > max_buckets {
                let s = h.schema();
                if is_custom_buckets(s) || s <= EXPONENTIAL_SCHEMA_MIN {
                    return Err(HistogramError::NotReducible {
                        buckets,
                        limit: max_buckets,
                    });
                }
                reduce_resolution(h, s - 1);
            }
        }
    }
    validate(h)
}

fn invalid(kind: InvalidKind, msg: String) -> HistogramError {
    HistogramError::Invalid { kind, msg }
}

fn check_spans(side: &str, spans: &[Span], n: usize, custom: bool) -> Result<(), HistogramError> {
    let mut need = 0usize;
    for (i, s) in spans.iter().enumerate() {
        if (i > 0 || custom) && s.offset < 0 {
            return Err(invalid(
                InvalidKind::SpanNegativeOffset,
                format!(
                    "{side}: span number {} with offset {}: histogram has a span whose offset is negative",
                    i + 1,
                    s.offset
                ),
            ));
        }
        need += s.length as usize;
    }
    if need != n {
        return Err(invalid(
            InvalidKind::SpansBucketsMismatch,
            format!("{side}: spans need {need} buckets, have {n} buckets: histogram spans specify different number of buckets than provided"),
        ));
    }
    Ok(())
}

fn negative_bucket(side: &str, i: usize, c: impl fmt::Display) -> HistogramError {
    invalid(
        InvalidKind::NegativeBucketCount,
        format!(
            "{side}: bucket number {} has observation count of {c}: histogram has a bucket whose observation count is negative",
            i + 1
        ),
    )
}

fn check_custom(bounds: &[f64], spans: &[Span]) -> Result<(), HistogramError> {
    let other = |m: String| invalid(InvalidKind::Other, format!("custom buckets: {m}"));
    let mut prev = f64::NEG_INFINITY;
    for (i, &b) in bounds.iter().enumerate() {
        if b.is_nan() {
            return Err(other("histogram custom bounds must not be NaN".into()));
        }
        if i > 0 && b <= prev {
            return Err(other(format!(
                "previous bound is {prev:.6} and current is {b:.6}: histogram custom bounds must be in strictly increasing order"
            )));
        }
        prev = b;
    }
    if prev == f64::INFINITY {
        return Err(other(
            "last +Inf bound must not be explicitly defined: histogram custom bounds must be finite".into(),
        ));
    }
    let total: i64 = spans
        .iter()
        .map(|s| i64::from(s.length) + i64::from(s.offset))
        .sum();
    if (bounds.len() as i64 + 1) < total {
        return Err(other(format!(
            "only {} custom bounds defined which is insufficient to cover total span length of {total}: histogram custom bounds are too few",
            bounds.len()
        )));
    }
    Ok(())
}

/// The custom-bucket rules both kinds share.
fn check_custom_side(
    custom_values: &[f64],
    positive_spans: &[Span],
    positive_buckets: usize,
    zero_count_is_zero: bool,
    zero_threshold: f64,
    negative: bool,
) -> Result<(), HistogramError> {
    let other = |m: &str| Err(invalid(InvalidKind::Other, m.to_string()));
    check_spans("custom buckets", positive_spans, positive_buckets, true)?;
    check_custom(custom_values, positive_spans)?;
    if !zero_count_is_zero {
        return other("custom buckets: must have zero count of 0");
    }
    if zero_threshold != 0.0 {
        return other("custom buckets: must have zero threshold of 0");
    }
    if negative {
        return other("custom buckets: must not have negative spans or buckets");
    }
    Ok(())
}

/// What both kinds share: the layout (schema, spans against bucket counts, custom
/// bounds, zero bucket of custom-bucket histograms).
struct Layout<'a> {
    schema: i32,
    custom_values: &'a [f64],
    positive_spans: &'a [Span],
    positive_n: usize,
    negative_spans: &'a [Span],
    negative_n: usize,
    zero_count_is_zero: bool,
    zero_threshold: f64,
}

impl Layout<'_> {
    /// Prometheus's `Validate` checks of the layout, in its order.
    fn check(&self) -> Result<(), HistogramError> {
        if is_custom_buckets(self.schema) {
            return check_custom_side(
                self.custom_values,
                self.positive_spans,
                self.positive_n,
                self.zero_count_is_zero,
                self.zero_threshold,
                !self.negative_spans.is_empty() || self.negative_n > 0,
            );
        }
        check_spans("positive side", self.positive_spans, self.positive_n, false)?;
        check_spans("negative side", self.negative_spans, self.negative_n, false)?;
        if !self.custom_values.is_empty() {
            return Err(invalid(
                InvalidKind::Other,
                "histogram with exponential schema must not have custom bounds".into(),
            ));
        }
        Ok(())
    }
}

/// Prometheus's `Histogram.Validate` / `FloatHistogram.Validate`.
pub fn validate(h: &HistSample) -> Result<(), HistogramError> {
    match h {
        HistSample::Int(h) => {
            Layout {
                schema: h.schema,
                custom_values: &h.custom_values,
                positive_spans: &h.positive_spans,
                positive_n: h.positive_buckets.len(),
                negative_spans: &h.negative_spans,
                negative_n: h.negative_buckets.len(),
                zero_count_is_zero: h.zero_count == 0,
                zero_threshold: h.zero_threshold,
            }
            .check()?;
            let total = sum_deltas("negative side", &h.negative_buckets)?
                .wrapping_add(sum_deltas("positive side", &h.positive_buckets)?);
            let in_buckets = total.wrapping_add(h.zero_count);
            if h.sum.is_nan() {
                if in_buckets > h.count {
                    return Err(invalid(
                        InvalidKind::CountNotBigEnough,
                        format!("{in_buckets} observations found in buckets, but the Count field is {}: histogram's observation count should be at least the number of observations found in the buckets", h.count),
                    ));
                }
            } else if in_buckets != h.count {
                return Err(invalid(
                    InvalidKind::CountMismatch,
                    format!("{in_buckets} observations found in buckets, but the Count field is {}: histogram's observation count should equal the number of observations found in the buckets (in absence of NaN)", h.count),
                ));
            }
            Ok(())
        }
        HistSample::Float(h) => {
            Layout {
                schema: h.schema,
                custom_values: &h.custom_values,
                positive_spans: &h.positive_spans,
                positive_n: h.positive_buckets.len(),
                negative_spans: &h.negative_spans,
                negative_n: h.negative_buckets.len(),
                zero_count_is_zero: h.zero_count == 0.0,
                zero_threshold: h.zero_threshold,
            }
            .check()?;
            if let Some(i) = h.negative_buckets.iter().position(|c| *c < 0.0) {
                return Err(negative_bucket("negative side", i, h.negative_buckets[i]));
            }
            if h.zero_count < 0.0 {
                return Err(invalid(
                    InvalidKind::NegativeBucketCount,
                    format!("zero bucket has observation count of {}: histogram has a bucket whose observation count is negative", h.zero_count),
                ));
            }
            if h.count < 0.0 {
                return Err(invalid(
                    InvalidKind::Other,
                    format!(
                        "observation count is {}: histogram's observation count is negative",
                        h.count
                    ),
                ));
            }
            if let Some(i) = h.positive_buckets.iter().position(|c| *c < 0.0) {
                return Err(negative_bucket("positive side", i, h.positive_buckets[i]));
            }
            Ok(())
        }
    }
}

/// The total of delta-encoded counts, refusing a negative absolute count.
fn sum_deltas(side: &str, deltas: &[i64]) -> Result<u64, HistogramError> {
    let mut cur = 0i64;
    let mut total = 0u64;
    for (i, d) in deltas.iter().enumerate() {
        cur = cur.wrapping_add(*d);
        if cur < 0 {
            return Err(negative_bucket(side, i, cur));
        }
        total = total.wrapping_add(cur as u64);
    }
    Ok(total)
}

/// Prometheus's `targetIdx`: the bucket at `idx` under `schema` lands in this bucket
/// of a schema `change` lower (exponential schemas: 2^change buckets merge into one).
fn target_idx(idx: i32, change: i32) -> i32 {
    ((idx - 1) >> change) + 1
}

/// Merge buckets down to `target` schema (Prometheus's `ReduceResolution`), on
/// absolute counts.
fn reduce_spans<T: Copy + std::ops::AddAssign>(
    spans: &[Span],
    counts: &[T],
    change: i32,
) -> (Vec<Span>, Vec<T>) {
    let mut out_spans: Vec<Span> = Vec::new();
    let mut out: Vec<T> = Vec::new();
    let mut idx = 0i32;
    let mut last_target = 0i32;
    let mut k = 0usize;
    for s in spans {
        idx += s.offset;
        for _ in 0..s.length {
            let Some(&c) = counts.get(k) else {
                return (out_spans, out);
            };
            let t = target_idx(idx, change);
            match out_spans.last_mut() {
                None => {
                    out_spans.push(Span {
                        offset: t,
                        length: 1,
                    });
                    out.push(c);
                }
                Some(_) if t == last_target => {
                    *out.last_mut().expect("a bucket per span") += c;
                }
                Some(last) if t == last_target + 1 => {
                    last.length += 1;
                    out.push(c);
                }
                Some(_) => {
                    out_spans.push(Span {
                        offset: t - last_target - 1,
                        length: 1,
                    });
                    out.push(c);
                }
            }
            last_target = t;
            idx += 1;
            k += 1;
        }
    }
    (out_spans, out)
}

fn to_absolute(deltas: &[i64]) -> Vec<i64> {
    let mut cur = 0i64;
    deltas
        .iter()
        .map(|d| {
            cur = cur.wrapping_add(*d);
            cur
        })
        .collect()
}

fn to_deltas(abs: &[i64]) -> Vec<i64> {
    let mut prev = 0i64;
    abs.iter()
        .map(|a| {
            let d = a.wrapping_sub(prev);
            prev = *a;
            d
        })
        .collect()
}

/// Lower an exponential histogram's schema to `target` (no-op if not lower).
pub fn reduce_resolution(h: &mut HistSample, target: i32) {
    let change = h.schema() - target;
    if change <= 0 || is_custom_buckets(h.schema()) {
        return;
    }
    match h {
        HistSample::Int(h) => {
            let (ps, pb) =
                reduce_spans(&h.positive_spans, &to_absolute(&h.positive_buckets), change);
            let (ns, nb) =
                reduce_spans(&h.negative_spans, &to_absolute(&h.negative_buckets), change);
            h.positive_spans = ps;
            h.positive_buckets = to_deltas(&pb);
            h.negative_spans = ns;
            h.negative_buckets = to_deltas(&nb);
            h.schema = target;
        }
        HistSample::Float(h) => {
            let (ps, pb) = reduce_spans(&h.positive_spans, &h.positive_buckets, change);
            let (ns, nb) = reduce_spans(&h.negative_spans, &h.negative_buckets, change);
            h.positive_spans = ps;
            h.positive_buckets = pb;
            h.negative_spans = ns;
            h.negative_buckets = nb;
            h.schema = target;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: i32, length: u32) -> Span {
        Span { offset, length }
    }

    fn int(schema: i32, spans: Vec<Span>, deltas: Vec<i64>, zero: u64) -> HistSample {
        let total: i64 = to_absolute(&deltas).iter().sum();
        HistSample::Int(Histogram {
            schema,
            zero_count: zero,
            count: total as u64 + zero,
            sum: 10.0,
            positive_spans: spans,
            positive_buckets: deltas,
            ..Default::default()
        })
    }

    #[test]
    fn prometheus_validation_rules() {
        assert_eq!(
            validate(&int(3, vec![span(-2, 2), span(1, 1)], vec![1, 1, -1], 2)),
            Ok(())
        );
        // spans vs buckets
        let e = validate(&int(3, vec![span(0, 3)], vec![1, 1], 0)).unwrap_err();
        assert_eq!(e.reason(), "native_histogram_spans_buckets_mismatch");
        assert!(
            e.to_string()
                .contains("positive side: spans need 3 buckets, have 2 buckets"),
            "{e}"
        );
        assert!(e.id().starts_with("err-mimir-"));
        // negative absolute count from deltas
        let e = validate(&int(3, vec![span(0, 2)], vec![1, -2], 0)).unwrap_err();
        assert_eq!(e.reason(), "native_histogram_negative_bucket_count");
        assert!(
            e.to_string()
                .contains("bucket number 2 has observation count of -1"),
            "{e}"
        );
        // a later span with a negative offset
        let e = validate(&int(3, vec![span(0, 1), span(-1, 1)], vec![1, 0], 0)).unwrap_err();
        assert_eq!(e.reason(), "native_histogram_span_negative_offset");
        // count must equal the buckets' total unless the sum is NaN
        let mut h = int(0, vec![span(0, 1)], vec![3], 1);
        if let HistSample::Int(h) = &mut h {
            h.count = 3;
        }
        let e = validate(&h).unwrap_err();
        assert_eq!(e.reason(), "native_histogram_count_mismatch");
        assert!(
            e.to_string()
                .contains("4 observations found in buckets, but the Count field is 3"),
            "{e}"
        );
        if let HistSample::Int(h) = &mut h {
            h.sum = f64::NAN;
        }
        assert_eq!(
            validate(&h).unwrap_err().reason(),
            "native_histogram_count_not_big_enough"
        );
        if let HistSample::Int(h) = &mut h {
            h.count = 9;
        }
        assert_eq!(validate(&h), Ok(()));
        // a stale marker: no buckets, sum the stale NaN
        let stale = HistSample::Int(Histogram {
            sum: f64::from_bits(STALE_NAN),
            ..Default::default()
        });
        assert_eq!(validate(&stale), Ok(()));
        assert!(stale.is_stale());
        // floats: negative counts refused
        let f = HistSample::Float(FloatHistogram {
            count: 1.0,
            positive_spans: vec![span(0, 1)],
            positive_buckets: vec![-1.0],
            ..Default::default()
        });
        assert_eq!(
            validate(&f).unwrap_err().reason(),
            "native_histogram_negative_bucket_count"
        );
        // schema range
        let mut bad = int(9, vec![], vec![], 0);
        if let HistSample::Int(h) = &mut bad {
            h.schema = 53;
        }
        let e = prepare(&mut bad, 0, true).unwrap_err();
        assert_eq!(e, HistogramError::InvalidSchema(53));
        assert!(e.to_string().contains("must be between -4 and 8"), "{e}");
    }

    #[test]
    fn custom_buckets_rules() {
        let ok = HistSample::Float(FloatHistogram {
            schema: -53,
            count: 3.0,
            positive_spans: vec![span(0, 3)],
            positive_buckets: vec![1.0, 1.0, 1.0],
            custom_values: vec![0.1, 1.0],
            ..Default::default()
        });
        assert_eq!(validate(&ok), Ok(()));
        let mut few = ok.clone();
        if let HistSample::Float(h) = &mut few {
            h.custom_values = vec![0.1];
        }
        assert!(validate(&few)
            .unwrap_err()
            .to_string()
            .contains("custom bounds are too few"));
        let mut unsorted = ok.clone();
        if let HistSample::Float(h) = &mut unsorted {
            h.custom_values = vec![1.0, 0.1];
        }
        assert!(validate(&unsorted)
            .unwrap_err()
            .to_string()
            .contains("strictly increasing"));
        // too many buckets with custom bounds cannot be reduced
        let mut h = ok.clone();
        assert_eq!(
            prepare(&mut h, 2, true),
            Err(HistogramError::NotReducible {
                buckets: 3,
                limit: 2
            })
        );
    }

    #[test]
    fn bucket_limit_reduces_resolution_as_mimir() {
        // schema 1: buckets 1..=8 (indexes), counts 1..=8
        let mut h = int(1, vec![span(1, 8)], vec![1, 1, 1, 1, 1, 1, 1, 1], 0);
        let want_count = 36;
        assert_eq!(
            prepare(&mut h.clone(), 4, false),
            Err(HistogramError::TooManyBuckets {
                buckets: 8,
                limit: 4
            })
        );
        prepare(&mut h, 4, true).unwrap();
        let HistSample::Int(r) = &h else { panic!() };
        // schema 0 merges index pairs (1,2)->1, (3,4)->2, …: 4 buckets
        assert_eq!(r.schema, 0);
        assert_eq!(r.positive_spans, vec![span(1, 4)]);
        assert_eq!(to_absolute(&r.positive_buckets), vec![3, 7, 11, 15]);
        assert_eq!(r.count, want_count);
        // down to the minimum schema and still too many: not reducible
        let mut wide = int(
            -3,
            vec![span(0, 1), span(100, 1), span(200, 1)],
            vec![1, 0, 0],
            0,
        );
        assert!(matches!(
            prepare(&mut wide, 1, true),
            Err(HistogramError::NotReducible { .. })
        ));
        // schemas above 8 (reserved) are reduced to 8
        let mut fine = int(8, vec![span(-3, 4)], vec![1, 0, 0, 0], 0);
        if let HistSample::Int(h) = &mut fine {
            h.schema = 10;
        }
        prepare(&mut fine, 0, true).unwrap();
        assert_eq!(fine.schema(), 8);
        let HistSample::Int(f) = &fine else { panic!() };
        assert_eq!(
            f.count,
            to_absolute(&f.positive_buckets).iter().sum::<i64>() as u64
        );
    }

    #[test]
    fn reduce_resolution_matches_prometheus_example() {
        // Prometheus's TestReduceResolutionHistogram case, integer and float
        let spans = vec![span(0, 4), span(0, 0), span(3, 2)];
        let mut h = int(0, spans.clone(), vec![1, 2, -2, 1, -1, 0], 0);
        reduce_resolution(&mut h, -1);
        let HistSample::Int(r) = &h else { panic!() };
        assert_eq!(r.positive_spans, vec![span(0, 3), span(1, 1)]);
        assert_eq!(r.positive_buckets, vec![1, 3, -2, 0]);
        let mut f = HistSample::Float(FloatHistogram {
            count: 9.0,
            positive_spans: spans,
            positive_buckets: vec![1.0, 3.0, 1.0, 2.0, 1.0, 1.0],
            ..Default::default()
        });
        reduce_resolution(&mut f, -1);
        let HistSample::Float(r) = &f else { panic!() };
        assert_eq!(r.positive_spans, vec![span(0, 3), span(1, 1)]);
        assert_eq!(r.positive_buckets, vec![1.0, 4.0, 2.0, 2.0]);
        assert_eq!(r.schema, -1);
    }
}
