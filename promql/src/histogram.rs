//! Native histogram arithmetic for PromQL on [`FloatHistogram`], with the semantics of
//! Prometheus's `model/histogram/float_histogram.go` (addition and subtraction with
//! schema reduction, zero-bucket reconciliation and custom-bucket rules, scaling,
//! counter-reset detection, compaction) and of `promql/quantile.go` (quantile,
//! fraction, variance over the buckets).
//!
//! Buckets are worked on as `(index, count)` lists sorted by index and turned back into
//! spans; results compare equal to Prometheus's after `Compact(0)`.

use strata_tsdb::histogram::{CounterResetHint, FloatHistogram, Span, CUSTOM_BUCKETS_SCHEMA};

/// Why two histograms cannot be combined (Prometheus's
/// `ErrHistogramsIncompatibleSchema`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncompatibleSchema;

pub fn uses_custom(h: &FloatHistogram) -> bool {
    h.schema == CUSTOM_BUCKETS_SCHEMA
}

/// `(index, count)` of every bucket the spans describe, in index order.
pub fn expand(spans: &[Span], counts: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(counts.len());
    let mut idx = 0i32;
    let mut k = 0usize;
    for s in spans {
        idx += s.offset;
        for _ in 0..s.length {
            if let Some(&c) = counts.get(k) {
                out.push((idx, c));
            }
            k += 1;
            idx += 1;
        }
    }
    out
}

/// Spans and counts for `(index, count)` buckets in index order.
pub fn build(b: &[(i32, f64)]) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut counts = Vec::with_capacity(b.len());
    let mut next: Option<i32> = None;
    for &(i, c) in b {
        match next {
            Some(n) if n == i => spans.last_mut().expect("span").length += 1,
            Some(n) => spans.push(Span {
                offset: i - n,
                length: 1,
            }),
            None => spans.push(Span {
                offset: i,
                length: 1,
            }),
        }
        counts.push(c);
        next = Some(i + 1);
    }
    (spans, counts)
}

/// Upper bound of bucket `idx` (Prometheus's `getBound`).
pub fn bound(idx: i32, schema: i32, custom: &[f64]) -> f64 {
    if schema == CUSTOM_BUCKETS_SCHEMA {
        let len = custom.len() as i32;
        return if idx >= len {
            f64::INFINITY
        } else if idx < 0 {
            f64::NEG_INFINITY
        } else {
            custom[idx as usize]
        };
    }
    if schema < 0 {
        let exp = (idx as i64) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        return strata_tsdb::histogram::ldexp(1.0, exp);
    }
    let frac_idx = idx & ((1 << schema) - 1);
    let frac = EXPONENTIAL_BOUNDS[schema as usize][frac_idx as usize];
    let exp = ((idx as i64) >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    strata_tsdb::histogram::ldexp(frac, exp)
}

/// One bucket with its bounds (Prometheus's `histogram.Bucket`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
    /// Whether the bounds are inclusive (Prometheus's boundary rule: upper-inclusive
    /// for positive buckets, lower-inclusive for negative, both for the zero bucket).
    pub lower_inclusive: bool,
    pub upper_inclusive: bool,
}

fn positive_buckets(h: &FloatHistogram) -> impl Iterator<Item = Bucket> + '_ {
    expand(&h.positive_spans, &h.positive_buckets)
        .into_iter()
        .map(move |(i, c)| Bucket {
            lower: bound(i - 1, h.schema, &h.custom_values),
            upper: bound(i, h.schema, &h.custom_values),
            count: c,
            lower_inclusive: false,
            upper_inclusive: true,
        })
}

fn negative_buckets_ascending(h: &FloatHistogram) -> Vec<Bucket> {
    let mut v: Vec<Bucket> = expand(&h.negative_spans, &h.negative_buckets)
        .into_iter()
        .map(|(i, c)| Bucket {
            lower: -bound(i, h.schema, &h.custom_values),
            upper: -bound(i - 1, h.schema, &h.custom_values),
            count: c,
            lower_inclusive: true,
            upper_inclusive: false,
        })
        .collect();
    v.reverse();
    v
}

/// Every bucket from the lowest to the highest value: negative ones, the zero bucket
/// (only when populated) and positive ones (Prometheus's `AllBucketIterator`).
pub fn all_buckets(h: &FloatHistogram) -> Vec<Bucket> {
    let zt = h.zero_threshold;
    let mut out = negative_buckets_ascending(h);
    for b in &mut out {
        if b.upper < 0.0 && b.upper > -zt {
            b.upper = -zt;
        }
    }
    if h.zero_count > 0.0 {
        out.push(Bucket {
            lower: -zt,
            upper: zt,
            count: h.zero_count,
            lower_inclusive: true,
            upper_inclusive: true,
        });
    }
    for mut b in positive_buckets(h) {
        if b.lower > 0.0 && b.lower < zt {
            b.lower = zt;
        }
        out.push(b);
    }
    out
}

/// One side's `(index, count)` buckets under a schema and the zero threshold a cut
/// bucket shows (0 when none is cut).
type FitSide = (Vec<(i32, f64)>, f64);

/// The exponential-schema histogram whose [`all_buckets`] are `buckets` (the inverse
/// of the query API's histogram JSON, for clients that read it back, such as the
/// ruler over HTTP). The schema is the highest one whose bounds are the buckets'
/// bounds, preferring one where no bucket is cut by the zero threshold (the innermost
/// bucket on each side may be: its bound towards zero is then the threshold). The
/// counter-reset hint is not in the JSON (`Unknown`); a zero threshold that cuts no
/// bucket and holds nothing is not in it either (0); custom-bucket histograms cannot be
/// told from exponential ones and are refused when their bounds fit no schema.
pub fn from_buckets(count: f64, sum: f64, buckets: &[Bucket]) -> Result<FloatHistogram, String> {
    let mut h = FloatHistogram {
        count,
        sum,
        ..Default::default()
    };
    // (bound away from zero, bound towards zero, count, positive), innermost first
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for b in buckets {
        if b.lower_inclusive && b.upper_inclusive {
            h.zero_threshold = b.upper;
            h.zero_count = b.count;
        } else if b.upper > 0.0 {
            pos.push((b.upper, b.lower, b.count));
        } else {
            neg.push((-b.lower, -b.upper, b.count));
        }
    }
    neg.reverse();
    let zero_bucket = h.zero_count > 0.0;
    // each side's (index, count) under `schema` and the threshold a cut bucket shows
    let fit = |schema: i32, cut_ok: bool| -> Option<[FitSide; 2]> {
        let scale = f64::from(schema).exp2();
        let side = |bs: &[(f64, f64, f64)]| -> Option<FitSide> {
            let mut cut = 0.0;
            let mut out = Vec::with_capacity(bs.len());
            for (k, &(far, near, c)) in bs.iter().enumerate() {
                let idx = (far.log2() * scale).round() as i32;
                if bound(idx, schema, &[]) != far {
                    return None;
                }
                let inner = bound(idx - 1, schema, &[]);
                if near != inner {
                    let cut_here = cut_ok && k == 0 && near > inner && near < far;
                    if !cut_here || (zero_bucket && near != h.zero_threshold) {
                        return None;
                    }
                    cut = near;
                }
                out.push((idx, c));
            }
            Some((out, cut))
        };
        Some([side(&pos)?, side(&neg)?])
    };
    let max = EXPONENTIAL_BOUNDS.len() as i32 - 1;
    let found = [false, true]
        .into_iter()
        .find_map(|cut_ok| (-4..=max).rev().find_map(|s| Some((s, fit(s, cut_ok)?))));
    let Some((schema, [(p, pcut), (n, ncut)])) = found else {
        return Err("bucket bounds fit no exponential schema".into());
    };
    h.schema = schema;
    if !zero_bucket {
        h.zero_threshold = pcut.max(ncut);
    }
    (h.positive_spans, h.positive_buckets) = build(&p);
    (h.negative_spans, h.negative_buckets) = build(&n);
    Ok(h)
}

fn target_idx(idx: i32, from: i32, to: i32) -> i32 {
    ((idx - 1) >> (from - to)) + 1
}

fn reduce(b: Vec<(i32, f64)>, from: i32, to: i32) -> Vec<(i32, f64)> {
    if from <= to {
        return b;
    }
    let mut out: Vec<(i32, f64)> = Vec::with_capacity(b.len());
    for (i, c) in b {
        let t = target_idx(i, from, to);
        match out.last_mut() {
            Some(l) if l.0 == t => l.1 += c,
            _ => out.push((t, c)),
        }
    }
    out
}

/// `h` at the lower resolution `schema` (Prometheus's `CopyToSchema`).
pub fn copy_to_schema(h: &FloatHistogram, schema: i32) -> FloatHistogram {
    let mut r = h.clone();
    if uses_custom(h) || schema >= h.schema {
        return r;
    }
    let (ps, pb) = build(&reduce(
        expand(&h.positive_spans, &h.positive_buckets),
        h.schema,
        schema,
    ));
    let (ns, nb) = build(&reduce(
        expand(&h.negative_spans, &h.negative_buckets),
        h.schema,
        schema,
    ));
    r.schema = schema;
    r.positive_spans = ps;
    r.positive_buckets = pb;
    r.negative_spans = ns;
    r.negative_buckets = nb;
    r
}

/// Zero count of `h` with its zero bucket widened to at least `larger`, and the
/// threshold actually needed (raised to a populated bucket's bound when `larger` falls
/// inside one).
fn zero_count_for_larger_threshold(h: &FloatHistogram, mut larger: f64) -> (f64, f64) {
    if larger == h.zero_threshold {
        return (h.zero_count, larger);
    }
    'outer: loop {
        let mut zc = h.zero_count;
        for b in positive_buckets(h) {
            if b.lower >= larger {
                break;
            }
            zc += b.count;
            if b.upper > larger {
                if b.count != 0.0 {
                    larger = b.upper;
                }
                break;
            }
        }
        for (i, c) in expand(&h.negative_spans, &h.negative_buckets) {
            let upper = -bound(i - 1, h.schema, &h.custom_values);
            let lower = -bound(i, h.schema, &h.custom_values);
            if upper <= -larger {
                break;
            }
            zc += c;
            if lower < -larger {
                if c != 0.0 {
                    larger = -lower;
                    continue 'outer;
                }
                break;
            }
        }
        return (zc, larger);
    }
}

/// Widens `h`'s zero bucket to `threshold` (a bucket boundary or a threshold within
/// unpopulated buckets), moving the buckets inside it into the zero count.
fn widen_zero_bucket(h: &mut FloatHistogram, threshold: f64) {
    if threshold == h.zero_threshold {
        return;
    }
    let (zc, t) = zero_count_for_larger_threshold(h, threshold);
    h.zero_count = zc;
    h.zero_threshold = t;
    let (schema, custom) = (h.schema, h.custom_values.clone());
    let keep = |i: i32| bound(i - 1, schema, &custom) >= t;
    let p: Vec<(i32, f64)> = expand(&h.positive_spans, &h.positive_buckets)
        .into_iter()
        .filter(|&(i, _)| keep(i))
        .collect();
    let n: Vec<(i32, f64)> = expand(&h.negative_spans, &h.negative_buckets)
        .into_iter()
        .filter(|&(i, _)| keep(i))
        .collect();
    (h.positive_spans, h.positive_buckets) = build(&p);
    (h.negative_spans, h.negative_buckets) = build(&n);
}

/// Prometheus's `adjustCounterReset`: the hint of a sum or difference; `true` on a
/// collision of CounterReset and NotCounterReset.
fn adjust_hint(h: &mut FloatHistogram, other: &FloatHistogram) -> bool {
    use CounterResetHint::*;
    let (a, b) = (h.counter_reset_hint, other.counter_reset_hint);
    if a == b || a == Gauge {
        return false;
    }
    if b == Gauge {
        h.counter_reset_hint = Gauge;
        return false;
    }
    if a == Unknown {
        return false;
    }
    h.counter_reset_hint = Unknown;
    b != Unknown
}

fn merge(a: &[(i32, f64)], b: &[(i32, f64)], sub: bool) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    let sign = if sub { -1.0 } else { 1.0 };
    while i < a.len() || j < b.len() {
        if j == b.len() || (i < a.len() && a[i].0 < b[j].0) {
            out.push(a[i]);
            i += 1;
        } else if i == a.len() || b[j].0 < a[i].0 {
            out.push((b[j].0, sign * b[j].1));
            j += 1;
        } else {
            out.push((a[i].0, a[i].1 + sign * b[j].1));
            i += 1;
            j += 1;
        }
    }
    out
}

/// Custom buckets of `counts` (with bounds `from`) mapped onto the coarser `to` bounds:
/// a bucket goes to the first target bucket whose upper bound is at least its own.
fn map_custom(b: &[(i32, f64)], from: &[f64], to: &[f64]) -> Vec<(i32, f64)> {
    let mut out: Vec<(i32, f64)> = Vec::new();
    for &(i, c) in b {
        let ub = bound(i, CUSTOM_BUCKETS_SCHEMA, from);
        let t = to.partition_point(|&x| x < ub) as i32;
        match out.iter_mut().find(|p| p.0 == t) {
            Some(p) => p.1 += c,
            None => out.push((t, c)),
        }
    }
    out.sort_by_key(|p| p.0);
    out
}

fn intersect_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(a[i]);
            i += 1;
            j += 1;
        } else if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// What [`add`]/[`sub`] noticed besides the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Combined {
    /// One operand said CounterReset, the other NotCounterReset.
    pub counter_reset_collision: bool,
    /// Custom bucket bounds differed and were reduced to those both have.
    pub custom_reconciled: bool,
}

/// `a + b` (Prometheus's `Add`), `a - b` with `sub`.
pub fn combine(
    a: &FloatHistogram,
    b: &FloatHistogram,
    sub: bool,
) -> Result<(FloatHistogram, Combined), IncompatibleSchema> {
    if uses_custom(a) != uses_custom(b) {
        return Err(IncompatibleSchema);
    }
    let mut h = a.clone();
    let mut info = Combined {
        counter_reset_collision: adjust_hint(&mut h, b),
        ..Default::default()
    };
    let sign = if sub { -1.0 } else { 1.0 };
    if uses_custom(&h) {
        h.count += sign * b.count;
        h.sum += sign * b.sum;
        let ha = expand(&h.positive_spans, &h.positive_buckets);
        let hb = expand(&b.positive_spans, &b.positive_buckets);
        let merged = if h.custom_values == b.custom_values {
            merge(&ha, &hb, sub)
        } else {
            info.custom_reconciled = true;
            let bounds = intersect_bounds(&h.custom_values, &b.custom_values);
            let ma = map_custom(&ha, &h.custom_values, &bounds);
            let mb = map_custom(&hb, &b.custom_values, &bounds);
            h.custom_values = bounds;
            merge(&ma, &mb, sub)
        };
        (h.positive_spans, h.positive_buckets) = build(&merged);
        return Ok((h, info));
    }
    // Zero buckets: both widened to the larger threshold (raised to a bucket bound
    // where it falls in a populated bucket).
    let mut other = b.clone();
    let mut t = h.zero_threshold.max(other.zero_threshold);
    loop {
        let (_, t1) = zero_count_for_larger_threshold(&h, t);
        let (_, t2) = zero_count_for_larger_threshold(&other, t1.max(t));
        let nt = t1.max(t2);
        if nt == t {
            break;
        }
        t = nt;
    }
    widen_zero_bucket(&mut h, t);
    widen_zero_bucket(&mut other, t);
    h.zero_count += sign * other.zero_count;
    h.count += sign * other.count;
    h.sum += sign * other.sum;
    let schema = h.schema.min(other.schema);
    let at = |x: &FloatHistogram, positive: bool| {
        let (spans, counts) = if positive {
            (&x.positive_spans, &x.positive_buckets)
        } else {
            (&x.negative_spans, &x.negative_buckets)
        };
        reduce(expand(spans, counts), x.schema, schema)
    };
    let (pa, pb, na, nb) = (
        at(&h, true),
        at(&other, true),
        at(&h, false),
        at(&other, false),
    );
    h.schema = schema;
    (h.positive_spans, h.positive_buckets) = build(&merge(&pa, &pb, sub));
    (h.negative_spans, h.negative_buckets) = build(&merge(&na, &nb, sub));
    Ok((h, info))
}

/// Scales every count and the sum (Prometheus's `Mul`); a negative factor makes it a
/// gauge.
pub fn mul(h: &mut FloatHistogram, f: f64) {
    h.zero_count *= f;
    h.count *= f;
    h.sum *= f;
    h.positive_buckets.iter_mut().for_each(|c| *c *= f);
    h.negative_buckets.iter_mut().for_each(|c| *c *= f);
    if f < 0.0 {
        h.counter_reset_hint = CounterResetHint::Gauge;
    }
}

/// Prometheus's `Div`: division by zero leaves no buckets.
pub fn div(h: &mut FloatHistogram, d: f64) {
    h.zero_count /= d;
    h.count /= d;
    h.sum /= d;
    if d == 0.0 {
        h.positive_buckets.clear();
        h.negative_buckets.clear();
        h.positive_spans.clear();
        h.negative_spans.clear();
        return;
    }
    h.positive_buckets.iter_mut().for_each(|c| *c /= d);
    h.negative_buckets.iter_mut().for_each(|c| *c /= d);
    if d < 0.0 {
        h.counter_reset_hint = CounterResetHint::Gauge;
    }
}

/// Drops empty buckets and merges spans (Prometheus's `Compact(0)`).
pub fn compact(h: &FloatHistogram) -> FloatHistogram {
    let mut r = h.clone();
    let p: Vec<(i32, f64)> = expand(&h.positive_spans, &h.positive_buckets)
        .into_iter()
        .filter(|p| p.1 != 0.0)
        .collect();
    let n: Vec<(i32, f64)> = expand(&h.negative_spans, &h.negative_buckets)
        .into_iter()
        .filter(|p| p.1 != 0.0)
        .collect();
    (r.positive_spans, r.positive_buckets) = build(&p);
    (r.negative_spans, r.negative_buckets) = build(&n);
    r
}

/// Whether `cur` follows a counter reset after `prev` (Prometheus's `DetectReset`).
pub fn detect_reset(cur: &FloatHistogram, prev: &FloatHistogram) -> bool {
    match cur.counter_reset_hint {
        CounterResetHint::CounterReset => return true,
        CounterResetHint::NotCounterReset => return false,
        _ => {}
    }
    if cur.count < prev.count {
        return true;
    }
    if uses_custom(cur) {
        if !uses_custom(prev) {
            return true;
        }
        if cur.custom_values != prev.custom_values {
            let bounds = intersect_bounds(&cur.custom_values, &prev.custom_values);
            let c = map_custom(
                &expand(&cur.positive_spans, &cur.positive_buckets),
                &cur.custom_values,
                &bounds,
            );
            let p = map_custom(
                &expand(&prev.positive_spans, &prev.positive_buckets),
                &prev.custom_values,
                &bounds,
            );
            return buckets_reset(&c, &p);
        }
    } else if uses_custom(prev) {
        return true;
    }
    if cur.schema > prev.schema {
        return true;
    }
    if cur.zero_threshold < prev.zero_threshold {
        return true;
    }
    let (prev_zc, t) = zero_count_for_larger_threshold(prev, cur.zero_threshold);
    if t != cur.zero_threshold {
        return true;
    }
    if cur.zero_count < prev_zc {
        return true;
    }
    // Buckets above the zero threshold, at the current schema.
    let above = |h: &FloatHistogram, spans: &[Span], counts: &[f64]| -> Vec<(i32, f64)> {
        reduce(expand(spans, counts), h.schema, cur.schema)
            .into_iter()
            .filter(|&(i, _)| bound(i, cur.schema, &[]) > cur.zero_threshold)
            .collect()
    };
    let (cp, pp) = if uses_custom(cur) {
        (
            expand(&cur.positive_spans, &cur.positive_buckets),
            expand(&prev.positive_spans, &prev.positive_buckets),
        )
    } else {
        (
            above(cur, &cur.positive_spans, &cur.positive_buckets),
            above(prev, &prev.positive_spans, &prev.positive_buckets),
        )
    };
    if buckets_reset(&cp, &pp) {
        return true;
    }
    let cn = above(cur, &cur.negative_spans, &cur.negative_buckets);
    let pn = above(prev, &prev.negative_spans, &prev.negative_buckets);
    buckets_reset(&cn, &pn)
}

/// A populated bucket of `prev` that `cur` lacks or holds less in.
fn buckets_reset(cur: &[(i32, f64)], prev: &[(i32, f64)]) -> bool {
    let mut j = 0;
    for &(i, pc) in prev {
        while j < cur.len() && cur[j].0 < i {
            j += 1;
        }
        match cur.get(j) {
            Some(&(ci, cc)) if ci == i => {
                if cc < pc {
                    return true;
                }
            }
            _ => {
                if pc != 0.0 {
                    return true;
                }
            }
        }
    }
    false
}

/// Prometheus's `HistogramQuantile`; the flag: NaN observations made the answer NaN
/// (info `NewNativeHistogramQuantileNaNResultInfo`) or skewed it (`...NaNSkewInfo`).
pub fn quantile(q: f64, h: &FloatHistogram) -> (f64, Option<QuantileNote>) {
    if q < 0.0 {
        return (f64::NEG_INFINITY, None);
    }
    if q > 1.0 {
        return (f64::INFINITY, None);
    }
    if h.count == 0.0 || q.is_nan() {
        return (f64::NAN, None);
    }
    let mut buckets = all_buckets(h);
    let forward = h.sum.is_nan() || q < 0.5;
    let mut rank = if forward {
        q * h.count
    } else {
        buckets.reverse();
        (1.0 - q) * h.count
    };
    let mut count = 0.0;
    let mut bucket = Bucket {
        lower: 0.0,
        upper: 0.0,
        count: 0.0,
        lower_inclusive: false,
        upper_inclusive: false,
    };
    let mut pos = buckets.len();
    for (k, b) in buckets.iter().enumerate() {
        bucket = *b;
        if b.count == 0.0 {
            continue;
        }
        count += b.count;
        if count >= rank {
            pos = k;
            break;
        }
    }
    let custom = uses_custom(h);
    if !custom && bucket.lower < 0.0 && bucket.upper > 0.0 {
        if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
            bucket.lower = 0.0;
        } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
            bucket.upper = 0.0;
        }
    } else if custom {
        if bucket.lower == f64::NEG_INFINITY {
            if bucket.upper <= 0.0 {
                return (bucket.upper, None);
            }
            bucket.lower = 0.0;
        } else if bucket.upper == f64::INFINITY {
            return (bucket.lower, None);
        }
    }
    if count > h.count {
        count = h.count;
    }
    if count < rank {
        if h.sum.is_nan() {
            return (f64::NAN, Some(QuantileNote::NaNResult));
        }
        return (bucket.upper, None);
    }
    if forward {
        rank -= count - bucket.count;
    } else {
        rank = count - rank;
    }
    let mut note = None;
    if h.sum.is_nan() {
        let rest: f64 = buckets.iter().skip(pos + 1).map(|b| b.count).sum();
        if count + rest < h.count {
            note = Some(QuantileNote::NaNSkew);
        }
    }
    let fraction = rank / bucket.count;
    if custom || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
        return (
            bucket.lower + (bucket.upper - bucket.lower) * fraction,
            note,
        );
    }
    let log_lower = bucket.lower.abs().log2();
    let log_upper = bucket.upper.abs().log2();
    if bucket.lower > 0.0 {
        return (
            (log_lower + (log_upper - log_lower) * fraction).exp2(),
            note,
        );
    }
    (
        -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2(),
        note,
    )
}

/// Annotations [`quantile`] and [`fraction`] can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantileNote {
    NaNResult,
    NaNSkew,
}

fn fraction_below(b: &Bucket, v: f64, linear: bool) -> f64 {
    if linear {
        return (v - b.lower) / (b.upper - b.lower);
    }
    let log_lower = b.lower.abs().log2();
    let log_upper = b.upper.abs().log2();
    let log_v = v.abs().log2();
    if v > 0.0 {
        (log_v - log_lower) / (log_upper - log_lower)
    } else {
        1.0 - (log_v - log_upper) / (log_lower - log_upper)
    }
}

/// Prometheus's `HistogramFraction`; `true` when NaN observations were left out.
pub fn fraction(lower: f64, upper: f64, h: &FloatHistogram) -> (f64, bool) {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return (f64::NAN, false);
    }
    if lower >= upper {
        return (0.0, false);
    }
    let custom = uses_custom(h);
    let buckets = all_buckets(h);
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut count = 0.0;
    let mut consumed = buckets.len();
    for (k, b0) in buckets.iter().enumerate() {
        let mut b = *b0;
        count += b.count;
        let mut zero_bucket = false;
        if b.lower <= 0.0 && b.upper >= 0.0 {
            zero_bucket = true;
            if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
                b.lower = 0.0;
            } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
                b.upper = 0.0;
            }
        }
        let interp = |v: f64, rank: f64| -> f64 {
            if custom || zero_bucket {
                if b.lower == f64::NEG_INFINITY {
                    return b.count;
                }
                rank + b.count * fraction_below(&b, v, true)
            } else {
                rank + b.count * fraction_below(&b, v, false)
            }
        };
        if !lower_set && b.lower >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && b.lower >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            consumed = k + 1;
            break;
        }
        if !lower_set && b.lower < lower && b.upper > lower {
            lower_rank = interp(lower, rank);
            lower_set = true;
        }
        if !upper_set && b.lower < upper && b.upper > upper {
            upper_rank = interp(upper, rank);
            upper_set = true;
        }
        if lower_set && upper_set {
            consumed = k + 1;
            break;
        }
        rank += b.count;
    }
    let mut nans = false;
    if h.sum.is_nan() {
        count += buckets.iter().skip(consumed).map(|b| b.count).sum::<f64>();
        nans = count < h.count;
    } else {
        count = h.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    ((upper_rank - lower_rank) / h.count, nans)
}

/// Estimated variance of the observations (Prometheus's `histogram_stdvar`).
pub fn variance(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let custom = uses_custom(h);
    let (mut v, mut c) = (0.0, 0.0);
    for b in all_buckets(h) {
        if b.count == 0.0 {
            continue;
        }
        let val = if custom {
            (b.upper + b.lower) / 2.0
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else {
            let g = (b.upper * b.lower).sqrt();
            if b.upper < 0.0 {
                -g
            } else {
                g
            }
        };
        let d = val - mean;
        (v, c) = crate::functions::kahan_inc(b.count * d * d, v, c);
    }
    (v + c) / h.count
}

/// Custom bucket bounds [`extrapolated_rate`] reconciled (each an info in Prometheus).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateNotes {
    /// In the last sample minus the first.
    pub sub_reconciled: bool,
    /// In adding back a sample before a counter reset.
    pub add_reconciled: bool,
}

/// `rate`/`increase` (`is_counter`) and `delta` of histogram samples in the window
/// `(end - range, end]` (Prometheus's `histogramRate` and `extrapolatedRate`); `None`
/// with fewer than two samples or incompatible ones. `notes` says where custom bucket
/// bounds were reconciled.
pub fn extrapolated_rate(
    hw: &[(i64, FloatHistogram)],
    end: i64,
    range: i64,
    is_counter: bool,
    is_rate: bool,
    notes: &mut RateNotes,
) -> Option<FloatHistogram> {
    if hw.len() < 2 {
        return None;
    }
    let n = hw.len();
    let last = &hw[n - 1].1;
    let mut prev = hw[0].1.clone();
    let mut custom = uses_custom(&prev);
    if is_counter {
        let second = &hw[1].1;
        if detect_reset(second, &prev) {
            prev = FloatHistogram {
                schema: second.schema,
                custom_values: second.custom_values.clone(),
                ..Default::default()
            };
            custom = uses_custom(second);
        }
    }
    if uses_custom(last) != custom {
        return None;
    }
    let mut min_schema = last.schema.min(prev.schema);
    if is_counter {
        for (_, h) in &hw[1..n - 1] {
            min_schema = min_schema.min(h.schema);
            if uses_custom(h) != custom {
                return None;
            }
        }
    }
    let (mut h, info) = combine(&copy_to_schema(last, min_schema), &prev, true).ok()?;
    notes.sub_reconciled |= info.custom_reconciled;
    if is_counter {
        let mut p = &prev;
        for (_, cur) in &hw[1..] {
            if detect_reset(cur, p) {
                let info;
                (h, info) = combine(&h, p, false).ok()?;
                notes.add_reconciled |= info.custom_reconciled;
            }
            p = cur;
        }
    }
    h.counter_reset_hint = CounterResetHint::Gauge;
    let mut h = compact(&h);
    let (first_t, last_t) = (hw[0].0, hw[n - 1].0);
    let range_start = end - range;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let mut to_end = (end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg = sampled / (n - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter && h.count > 0.0 && hw[0].1.count >= 0.0 {
        let to_zero = sampled * (hw[0].1.count / h.count);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = if sampled != 0.0 {
        (sampled + to_start + to_end) / sampled
    } else {
        1.0
    };
    if is_rate {
        factor /= range as f64 / 1000.0;
    }
    mul(&mut h, factor);
    Some(h)
}

/// `irate`/`idelta` of the last two histogram samples (Prometheus's `instantValue`).
pub fn instant_value(
    prev: &(i64, FloatHistogram),
    last: &(i64, FloatHistogram),
    is_rate: bool,
) -> Option<FloatHistogram> {
    let dt = last.0 - prev.0;
    if dt == 0 {
        return None;
    }
    let mut h = if is_rate && detect_reset(&last.1, &prev.1) {
        last.1.clone()
    } else {
        combine(&last.1, &prev.1, true).ok()?.0
    };
    if is_rate {
        div(&mut h, dt as f64 / 1000.0);
    }
    h.counter_reset_hint = CounterResetHint::Gauge;
    Some(compact(&h))
}

/// Sum of histograms (`sum_over_time`), or their mean with `avg`; `None` when
/// exponential and custom buckets meet.
pub fn sum_of<'a>(
    hs: impl Iterator<Item = &'a FloatHistogram>,
    avg: bool,
) -> Option<FloatHistogram> {
    let mut k = KahanSum::default();
    for h in hs {
        k.add(h).ok()?;
    }
    if k.n == 0.0 {
        return None;
    }
    let mut a = k.value();
    if avg {
        div(&mut a, k.n);
    }
    Some(compact(&a))
}

/// Whether a count, the sum or a bucket is infinite (Prometheus's `HasOverflow`).
pub fn has_overflow(h: &FloatHistogram) -> bool {
    !h.count.is_finite() && !h.count.is_nan()
        || h.sum.is_infinite()
        || h.zero_count.is_infinite()
        || h.positive_buckets.iter().any(|c| c.is_infinite())
        || h.negative_buckets.iter().any(|c| c.is_infinite())
}

/// `avg`/`avg_over_time` of histograms as Prometheus's `funcAvgOverTime`: the Kahan
/// sum divided by the count until adding the next histogram would overflow the sum,
/// from there an incremental mean, `mean·(n-1)/n + h/n` with its Kahan compensation
/// scaled alike (so counts near `f64::MAX` average to finite values).
pub fn mean_of(hs: &[&FloatHistogram]) -> Option<FloatHistogram> {
    let mut k = KahanSum::default();
    let mut incremental = false;
    for (i, h) in hs.iter().enumerate() {
        let n = (i + 1) as f64;
        if !incremental {
            let before = (i > 0).then(|| k.clone());
            k.add(h).ok()?;
            let Some(before) = before.filter(|_| k.overflows()) else {
                continue;
            };
            incremental = true;
            k = before;
            k.scale(1.0 / (n - 1.0));
        }
        let q = (n - 1.0) / n;
        k.scale(q);
        let mut part = (*h).clone();
        div(&mut part, n);
        k.add(&part).ok()?;
    }
    if hs.is_empty() {
        return None;
    }
    let mut a = k.value();
    if !incremental {
        div(&mut a, hs.len() as f64);
    }
    Some(compact(&a))
}

/// A running sum of histograms with Kahan compensation per field and bucket
/// (Prometheus's `KahanAdd`), for `sum`, `avg`, `sum_over_time`, `avg_over_time`.
#[derive(Debug, Clone, Default)]
pub struct KahanSum {
    /// The first histogram's layout and hint; `None` before the first.
    base: Option<FloatHistogram>,
    count: (f64, f64),
    sum: (f64, f64),
    zero: (f64, f64),
    pos: std::collections::BTreeMap<i32, (f64, f64)>,
    neg: std::collections::BTreeMap<i32, (f64, f64)>,
    pub n: f64,
}

fn kinc(x: f64, acc: &mut (f64, f64)) {
    *acc = crate::functions::kahan_inc(x, acc.0, acc.1);
}

impl KahanSum {
    /// Adds `h`; an error (and the sum unusable) when exponential and custom buckets
    /// meet.
    pub fn add(&mut self, h: &FloatHistogram) -> Result<Combined, IncompatibleSchema> {
        self.n += 1.0;
        let Some(base) = &mut self.base else {
            self.base = Some(FloatHistogram {
                positive_spans: Vec::new(),
                positive_buckets: Vec::new(),
                negative_spans: Vec::new(),
                negative_buckets: Vec::new(),
                ..h.clone()
            });
            self.count = (h.count, 0.0);
            self.sum = (h.sum, 0.0);
            self.zero = (h.zero_count, 0.0);
            self.pos = expand(&h.positive_spans, &h.positive_buckets)
                .into_iter()
                .map(|(i, c)| (i, (c, 0.0)))
                .collect();
            self.neg = expand(&h.negative_spans, &h.negative_buckets)
                .into_iter()
                .map(|(i, c)| (i, (c, 0.0)))
                .collect();
            return Ok(Combined::default());
        };
        if uses_custom(base) != uses_custom(h) {
            return Err(IncompatibleSchema);
        }
        if base.zero_threshold != h.zero_threshold
            || (uses_custom(h) && base.custom_values != h.custom_values)
        {
            // Layouts to reconcile: combine without compensation from here on.
            let cur = self.value();
            let (r, info) = combine(&cur, h, false)?;
            let n = self.n;
            *self = KahanSum::default();
            self.add(&r)?;
            self.n = n;
            return Ok(info);
        }
        let mut info = Combined {
            counter_reset_collision: adjust_hint(base, h),
            ..Default::default()
        };
        info.custom_reconciled = false;
        if h.schema < base.schema && !uses_custom(h) {
            let (from, to) = (base.schema, h.schema);
            for m in [&mut self.pos, &mut self.neg] {
                let old = std::mem::take(m);
                for (i, (v, c)) in old {
                    let e = m.entry(target_idx(i, from, to)).or_insert((0.0, 0.0));
                    kinc(v, e);
                    e.1 += c;
                }
            }
            base.schema = to;
        }
        let schema = base.schema;
        kinc(h.count, &mut self.count);
        kinc(h.sum, &mut self.sum);
        kinc(h.zero_count, &mut self.zero);
        for (m, b) in [
            (
                &mut self.pos,
                expand(&h.positive_spans, &h.positive_buckets),
            ),
            (
                &mut self.neg,
                expand(&h.negative_spans, &h.negative_buckets),
            ),
        ] {
            for (i, c) in reduce(b, h.schema, schema) {
                kinc(c, m.entry(i).or_insert((0.0, 0.0)));
            }
        }
        Ok(info)
    }

    /// Whether the running sum itself (without its compensation) has an infinite
    /// count, sum or bucket (Prometheus checks `HasOverflow` on it).
    fn overflows(&self) -> bool {
        let inf = |v: &(f64, f64)| v.0.is_infinite();
        inf(&self.count)
            || inf(&self.sum)
            || inf(&self.zero)
            || self.pos.values().any(inf)
            || self.neg.values().any(inf)
    }

    /// Every field and its compensation multiplied by `q`.
    fn scale(&mut self, q: f64) {
        let fields = [&mut self.count, &mut self.sum, &mut self.zero];
        for v in fields
            .into_iter()
            .chain(self.pos.values_mut())
            .chain(self.neg.values_mut())
        {
            v.0 *= q;
            v.1 *= q;
        }
    }

    /// The sum so far (compacted); an empty histogram before any was added.
    pub fn value(&self) -> FloatHistogram {
        let Some(base) = &self.base else {
            return FloatHistogram::default();
        };
        let mut h = base.clone();
        h.count = self.count.0 + self.count.1;
        h.sum = self.sum.0 + self.sum.1;
        h.zero_count = self.zero.0 + self.zero.1;
        let p: Vec<(i32, f64)> = self.pos.iter().map(|(i, v)| (*i, v.0 + v.1)).collect();
        let n: Vec<(i32, f64)> = self.neg.iter().map(|(i, v)| (*i, v.0 + v.1)).collect();
        (h.positive_spans, h.positive_buckets) = build(&p);
        (h.negative_spans, h.negative_buckets) = build(&n);
        compact(&h)
    }
}

/// A float as Go's `%g` prints it (shortest digits; exponent form below 1e-4 and from
/// 1e6 on, with at least two exponent digits).
pub fn go_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

/// `FloatHistogram.String()`: `{count:…, sum:…, [lower,upper):count, …}` over the
/// populated buckets, as `count_values` labels histogram samples.
pub fn to_go_string(h: &FloatHistogram) -> String {
    let mut s = format!("{{count:{}, sum:{}", go_g(h.count), go_g(h.sum));
    for b in all_buckets(h) {
        if b.count == 0.0 {
            continue;
        }
        s.push_str(&format!(
            ", {}{},{}{}:{}",
            if b.lower_inclusive { '[' } else { '(' },
            go_g(b.lower),
            go_g(b.upper),
            if b.upper_inclusive { ']' } else { ')' },
            go_g(b.count)
        ));
    }
    s.push('}');
    s
}

/// Prometheus's `exponentialBounds`: bucket bound fractions in [0.5, 1) per schema 0..=8
/// (exact to the bit, so bounds match Prometheus's).
pub(crate) const EXPONENTIAL_BOUNDS: [&[f64]; 9] = [
    &[0.5],
    &[0.5, 0.7071067811865475],
    &[
        0.5,
        0.5946035575013605,
        0.7071067811865475,
        0.8408964152537144,
    ],
    &[
        0.5,
        0.5452538663326288,
        0.5946035575013605,
        0.6484197773255048,
        0.7071067811865475,
        0.7711054127039704,
        0.8408964152537144,
        0.9170040432046711,
    ],
    &[
        0.5,
        0.5221368912137069,
        0.5452538663326288,
        0.5693943173783458,
        0.5946035575013605,
        0.620928906036742,
        0.6484197773255048,
        0.6771277734684463,
        0.7071067811865475,
        0.7384130729697496,
        0.7711054127039704,
        0.805245165974627,
        0.8408964152537144,
        0.8781260801866495,
        0.9170040432046711,
        0.9576032806985735,
    ],
    &[
        0.5,
        0.5109485743270583,
        0.5221368912137069,
        0.5335702003384117,
        0.5452538663326288,
        0.5571933712979462,
        0.5693943173783458,
        0.5818624293887887,
        0.5946035575013605,
        0.6076236799902344,
        0.620928906036742,
        0.6345254785958666,
        0.6484197773255048,
        0.6626183215798706,
        0.6771277734684463,
        0.6919549409819159,
        0.7071067811865475,
        0.7225904034885232,
        0.7384130729697496,
        0.7545822137967112,
        0.7711054127039704,
        0.7879904225539431,
        0.805245165974627,
        0.8228777390769823,
        0.8408964152537144,
        0.8593096490612387,
        0.8781260801866495,
        0.8973545375015533,
        0.9170040432046711,
        0.9370838170551498,
        0.9576032806985735,
        0.9785720620876999,
    ],
    &[
        0.5,
        0.5054446430258502,
        0.5109485743270583,
        0.5165124395106142,
        0.5221368912137069,
        0.5278225891802786,
        0.5335702003384117,
        0.5393803988785598,
        0.5452538663326288,
        0.5511912916539204,
        0.5571933712979462,
        0.5632608093041209,
        0.5693943173783458,
        0.5755946149764913,
        0.5818624293887887,
        0.5881984958251406,
        0.5946035575013605,
        0.6010783657263515,
        0.6076236799902344,
        0.6142402680534349,
        0.620928906036742,
        0.6276903785123455,
        0.6345254785958666,
        0.6414350080393891,
        0.6484197773255048,
        0.6554806057623822,
        0.6626183215798706,
        0.6698337620266515,
        0.6771277734684463,
        0.6845012114872953,
        0.6919549409819159,
        0.6994898362691555,
        0.7071067811865475,
        0.7148066691959849,
        0.7225904034885232,
        0.7304588970903234,
        0.7384130729697496,
        0.7464538641456323,
        0.7545822137967112,
        0.762799075372269,
        0.7711054127039704,
        0.7795022001189185,
        0.7879904225539431,
        0.7965710756711334,
        0.805245165974627,
        0.8140137109286738,
        0.8228777390769823,
        0.8318382901633681,
        0.8408964152537144,
        0.8500531768592616,
        0.8593096490612387,
        0.8686669176368529,
        0.8781260801866495,
        0.8876882462632604,
        0.8973545375015533,
        0.9071260877501991,
        0.9170040432046711,
        0.9269895625416926,
        0.9370838170551498,
        0.9472879907934827,
        0.9576032806985735,
        0.9680308967461471,
        0.9785720620876999,
        0.9892280131939752,
    ],
    &[
        0.5,
        0.5027149505564014,
        0.5054446430258502,
        0.5081891574554764,
        0.5109485743270583,
        0.5137229745593818,
        0.5165124395106142,
        0.5193170509806894,
        0.5221368912137069,
        0.5249720429003435,
        0.5278225891802786,
        0.5306886136446309,
        0.5335702003384117,
        0.5364674337629877,
        0.5393803988785598,
        0.5423091811066545,
        0.5452538663326288,
        0.5482145409081883,
        0.5511912916539204,
        0.5541842058618393,
        0.5571933712979462,
        0.5602188762048033,
        0.5632608093041209,
        0.5663192597993595,
        0.5693943173783458,
        0.572486072215902,
        0.5755946149764913,
        0.5787200368168754,
        0.5818624293887887,
        0.585021884841625,
        0.5881984958251406,
        0.5913923554921704,
        0.5946035575013605,
        0.5978321960199137,
        0.6010783657263515,
        0.6043421618132907,
        0.6076236799902344,
        0.6109230164863786,
        0.6142402680534349,
        0.6175755319684665,
        0.620928906036742,
        0.6243004885946023,
        0.6276903785123455,
        0.6310986751971253,
        0.6345254785958666,
        0.637970889198196,
        0.6414350080393891,
        0.6449179367033329,
        0.6484197773255048,
        0.6519406325959679,
        0.6554806057623822,
        0.659039800633032,
        0.6626183215798706,
        0.6662162735415805,
        0.6698337620266515,
        0.6734708931164728,
        0.6771277734684463,
        0.6808045103191123,
        0.6845012114872953,
        0.688217985377265,
        0.6919549409819159,
        0.6957121878859629,
        0.6994898362691555,
        0.7032879969095076,
        0.7071067811865475,
        0.7109463010845827,
        0.7148066691959849,
        0.718687998724491,
        0.7225904034885232,
        0.7265139979245261,
        0.7304588970903234,
        0.7344252166684908,
        0.7384130729697496,
        0.7424225829363761,
        0.7464538641456323,
        0.7505070348132126,
        0.7545822137967112,
        0.7586795205991071,
        0.762799075372269,
        0.7669409989204777,
        0.7711054127039704,
        0.7752924388424999,
        0.7795022001189185,
        0.7837348199827764,
        0.7879904225539431,
        0.7922691326262467,
        0.7965710756711334,
        0.8008963778413465,
        0.805245165974627,
        0.8096175675974316,
        0.8140137109286738,
        0.8184337248834821,
        0.8228777390769823,
        0.8273458838280969,
        0.8318382901633681,
        0.8363550898207981,
        0.8408964152537144,
        0.8454623996346523,
        0.8500531768592616,
        0.8546688815502312,
        0.8593096490612387,
        0.8639756154809185,
        0.8686669176368529,
        0.8733836930995842,
        0.8781260801866495,
        0.8828942179666361,
        0.8876882462632604,
        0.8925083056594671,
        0.8973545375015533,
        0.9022270839033115,
        0.9071260877501991,
        0.9120516927035263,
        0.9170040432046711,
        0.9219832844793128,
        0.9269895625416926,
        0.9320230241988943,
        0.9370838170551498,
        0.9421720895161669,
        0.9472879907934827,
        0.9524316709088368,
        0.9576032806985735,
        0.9628029718180622,
        0.9680308967461471,
        0.9732872087896164,
        0.9785720620876999,
        0.9838856116165875,
        0.9892280131939752,
        0.9945994234836328,
    ],
    &[
        0.5,
        0.5013556375251013,
        0.5027149505564014,
        0.5040779490592088,
        0.5054446430258502,
        0.5068150424757447,
        0.5081891574554764,
        0.509566998038869,
        0.5109485743270583,
        0.5123338964485679,
        0.5137229745593818,
        0.5151158188430205,
        0.5165124395106142,
        0.5179128468009786,
        0.5193170509806894,
        0.520725062344158,
        0.5221368912137069,
        0.5235525479396449,
        0.5249720429003435,
        0.526395386502313,
        0.5278225891802786,
        0.5292536613972564,
        0.5306886136446309,
        0.5321274564422321,
        0.5335702003384117,
        0.5350168559101208,
        0.5364674337629877,
        0.5379219445313954,
        0.5393803988785598,
        0.5408428074966075,
        0.5423091811066545,
        0.5437795304588847,
        0.5452538663326288,
        0.5467321995364429,
        0.5482145409081883,
        0.549700901315111,
        0.5511912916539204,
        0.5526857228508706,
        0.5541842058618393,
        0.5556867516724088,
        0.5571933712979462,
        0.5587040757836845,
        0.5602188762048033,
        0.5617377836665098,
        0.5632608093041209,
        0.564787964283144,
        0.5663192597993595,
        0.5678547070789026,
        0.5693943173783458,
        0.5709381019847808,
        0.572486072215902,
        0.5740382394200894,
        0.5755946149764913,
        0.5771552102951081,
        0.5787200368168754,
        0.5802891060137493,
        0.5818624293887887,
        0.5834400184762408,
        0.585021884841625,
        0.5866080400818185,
        0.5881984958251406,
        0.5897932637314379,
        0.5913923554921704,
        0.5929957828304968,
        0.5946035575013605,
        0.5962156912915756,
        0.5978321960199137,
        0.5994530835371903,
        0.6010783657263515,
        0.6027080545025619,
        0.6043421618132907,
        0.6059806996384005,
        0.6076236799902344,
        0.6092711149137041,
        0.6109230164863786,
        0.6125793968185725,
        0.6142402680534349,
        0.6159056423670379,
        0.6175755319684665,
        0.6192499490999082,
        0.620928906036742,
        0.622612415087629,
        0.6243004885946023,
        0.6259931389331581,
        0.6276903785123455,
        0.6293922197748583,
        0.6310986751971253,
        0.6328097572894031,
        0.6345254785958666,
        0.6362458516947014,
        0.637970889198196,
        0.6397006037528346,
        0.6414350080393891,
        0.6431741147730128,
        0.6449179367033329,
        0.6466664866145447,
        0.6484197773255048,
        0.6501778216898253,
        0.6519406325959679,
        0.6537082229673385,
        0.6554806057623822,
        0.6572577939746774,
        0.659039800633032,
        0.6608266388015788,
        0.6626183215798706,
        0.6644148621029772,
        0.6662162735415805,
        0.6680225691020727,
        0.6698337620266515,
        0.6716498655934177,
        0.6734708931164728,
        0.6752968579460171,
        0.6771277734684463,
        0.6789636531064505,
        0.6808045103191123,
        0.6826503586020058,
        0.6845012114872953,
        0.6863570825438342,
        0.688217985377265,
        0.690083933630119,
        0.6919549409819159,
        0.6938310211492645,
        0.6957121878859629,
        0.6975984549830999,
        0.6994898362691555,
        0.7013863456101023,
        0.7032879969095076,
        0.7051948041086352,
        0.7071067811865475,
        0.7090239421602076,
        0.7109463010845827,
        0.7128738720527471,
        0.7148066691959849,
        0.7167447066838943,
        0.718687998724491,
        0.7206365595643126,
        0.7225904034885232,
        0.7245495448210174,
        0.7265139979245261,
        0.7284837772007218,
        0.7304588970903234,
        0.7324393720732029,
        0.7344252166684908,
        0.7364164454346837,
        0.7384130729697496,
        0.7404151139112358,
        0.7424225829363761,
        0.7444354947621984,
        0.7464538641456323,
        0.7484777058836176,
        0.7505070348132126,
        0.7525418658117031,
        0.7545822137967112,
        0.7566280937263048,
        0.7586795205991071,
        0.7607365094544071,
        0.762799075372269,
        0.7648672334736434,
        0.7669409989204777,
        0.7690203869158282,
        0.7711054127039704,
        0.7731960915705107,
        0.7752924388424999,
        0.7773944698885442,
        0.7795022001189185,
        0.7816156449856788,
        0.7837348199827764,
        0.7858597406461707,
        0.7879904225539431,
        0.7901268813264122,
        0.7922691326262467,
        0.7944171921585818,
        0.7965710756711334,
        0.7987307989543135,
        0.8008963778413465,
        0.8030678282083853,
        0.805245165974627,
        0.8074284071024302,
        0.8096175675974316,
        0.8118126635086642,
        0.8140137109286738,
        0.8162207259936375,
        0.8184337248834821,
        0.820652723822003,
        0.8228777390769823,
        0.8251087869603088,
        0.8273458838280969,
        0.8295890460808079,
        0.8318382901633681,
        0.8340936325652911,
        0.8363550898207981,
        0.8386226785089391,
        0.8408964152537144,
        0.8431763167241966,
        0.8454623996346523,
        0.8477546807446661,
        0.8500531768592616,
        0.8523579048290255,
        0.8546688815502312,
        0.8569861239649629,
        0.8593096490612387,
        0.8616394738731368,
        0.8639756154809185,
        0.8663180910111553,
        0.8686669176368529,
        0.871022112577578,
        0.8733836930995842,
        0.8757516765159389,
        0.8781260801866495,
        0.8805069215187917,
        0.8828942179666361,
        0.8852879870317771,
        0.8876882462632604,
        0.890095013257712,
        0.8925083056594671,
        0.8949281411607002,
        0.8973545375015533,
        0.8997875124702672,
        0.9022270839033115,
        0.9046732696855155,
        0.9071260877501991,
        0.909585556079304,
        0.9120516927035263,
        0.9145245157024483,
        0.9170040432046711,
        0.9194902933879467,
        0.9219832844793128,
        0.9244830347552253,
        0.9269895625416926,
        0.92950288621441,
        0.9320230241988943,
        0.9345499949706191,
        0.9370838170551498,
        0.93962450902828,
        0.9421720895161669,
        0.9447265771954693,
        0.9472879907934827,
        0.9498563490882775,
        0.9524316709088368,
        0.9550139751351947,
        0.9576032806985735,
        0.9601996065815236,
        0.9628029718180622,
        0.9654133954938133,
        0.9680308967461471,
        0.9706554947643201,
        0.9732872087896164,
        0.9759260581154889,
        0.9785720620876999,
        0.9812252401044634,
        0.9838856116165875,
        0.9865531961276168,
        0.9892280131939752,
        0.9919100824251095,
        0.9945994234836328,
        0.9972960560854698,
    ],
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Histograms survive [`all_buckets`] → [`from_buckets`]: every schema, negative
    /// buckets, a zero bucket, and a zero threshold cutting the first buckets.
    #[test]
    fn from_buckets_inverts_all_buckets() {
        for schema in -4..=8 {
            for (zt, zc) in [(0.0, 0.0), (0.001, 3.0), (0.6, 0.0)] {
                // buckets wholly inside the zero bucket do not exist (they are merged
                // into it)
                let outside = |b: &[(i32, f64)]| -> Vec<(i32, f64)> {
                    b.iter()
                        .copied()
                        .filter(|(i, _)| bound(*i, schema, &[]) > zt)
                        .collect()
                };
                let (ps, pb) = build(&outside(&[(-3, 1.0), (0, 2.0), (1, 5.0), (7, 1.5)]));
                let (ns, nb) = build(&outside(&[(-1, 4.0), (2, 1.0)]));
                let h = FloatHistogram {
                    schema,
                    zero_threshold: zt,
                    zero_count: zc,
                    count: 14.5 + zc,
                    sum: 3.25,
                    positive_spans: ps,
                    positive_buckets: pb,
                    negative_spans: ns,
                    negative_buckets: nb,
                    ..Default::default()
                };
                let got = from_buckets(h.count, h.sum, &all_buckets(&h)).unwrap();
                // a threshold that cuts no bucket and holds nothing is not in the JSON
                let cuts = all_buckets(&h)
                    .iter()
                    .any(|b| b.lower == zt || b.upper == -zt);
                let want_zt = if zc > 0.0 || cuts { zt } else { 0.0 };
                assert_eq!(got.schema, schema, "{h:?}");
                assert_eq!(got.zero_threshold, want_zt, "{h:?}");
                let mut want = h.clone();
                want.zero_threshold = want_zt;
                assert_eq!(got, want, "schema {schema}, zero threshold {zt}");
            }
        }
        let refused = from_buckets(
            1.0,
            1.0,
            &[Bucket {
                lower: 1.0,
                upper: 3.0,
                count: 1.0,
                lower_inclusive: false,
                upper_inclusive: true,
            }],
        );
        assert!(refused.is_err(), "{refused:?}");
    }
}
