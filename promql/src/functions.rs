//! Pure numeric helpers behind PromQL functions and aggregations, written to match
//! Prometheus's Go implementation bit for bit where it matters (Kahan summation,
//! `extrapolatedRate`, `BucketQuantile`).

use strata_time::date;

/// Neumaier-improved Kahan summation step (Prometheus's `kahanSumInc`).
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// `rate`, `increase` and `delta` over the samples of one window `(range_end - range, range_end]`.
pub fn extrapolated_rate(
    samples: &[(i64, f64)],
    range_end: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    extrapolated_rate_with(samples, range_end, range_ms, is_counter, true, is_rate)
}

/// Whether some sample is below the one before it (a counter reset, for `rate`).
pub fn has_resets(samples: &[(i64, f64)]) -> bool {
    samples.windows(2).any(|w| w[1].1 < w[0].1)
}

/// [`extrapolated_rate`]; `may_reset` false says the caller found no reset in the
/// series the window is a slice of ([`has_resets`], once per series), so each window's
/// scan for resets, which would add nothing, is skipped: the same result.
pub fn extrapolated_rate_with(
    samples: &[(i64, f64)],
    range_end: i64,
    range_ms: i64,
    is_counter: bool,
    may_reset: bool,
    is_rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let range_start = range_end - range_ms;
    let n1 = samples.len() - 1;
    let (first_t, first_v) = samples[0];
    let last_t = samples[n1].0;
    let mut result = samples[n1].1 - first_v;
    if is_counter && may_reset {
        let mut prev = first_v;
        for &(_, v) in &samples[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut duration_to_start = (first_t - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled_interval = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled_interval / n1 as f64;
    let threshold = avg_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    if duration_to_start >= threshold {
        duration_to_start = avg_between / 2.0;
    }
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let duration_to_zero = sampled_interval * (first_v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    extrapolate_to += duration_to_start;
    if duration_to_end >= threshold {
        duration_to_end = avg_between / 2.0;
    }
    extrapolate_to += duration_to_end;
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `rate` / `increase` over downsampled counter points, each the counter's value at the
/// end of its `res`-wide window. The window's increase is measured from `before`, the
/// last point before the window, when that lies within one resolution of the window's
/// start: with ranges aligned to the resolution that is the exact increase over the
/// range, where extrapolating from the points inside needs two of them (a 1h range over
/// 1h data holds one). Stretched to the whole range only while the data reaches its
/// last resolution window. Without such a point: [`extrapolated_rate`].
pub fn downsampled_rate(
    before: Option<(i64, f64)>,
    samples: &[(i64, f64)],
    range_end: i64,
    range_ms: i64,
    res: i64,
    is_rate: bool,
) -> Option<f64> {
    let Some(first) = before.filter(|p| p.0 > range_end - range_ms - res) else {
        return extrapolated_rate(samples, range_end, range_ms, true, is_rate);
    };
    let &(last_t, last_v) = samples.last()?;
    let mut result = last_v - first.1;
    let mut prev = first.1;
    for &(_, v) in samples {
        if v < prev {
            result += prev;
        }
        prev = v;
    }
    let measured = (last_t - first.0) as f64;
    if measured <= 0.0 {
        return None;
    }
    if range_end - last_t < res {
        result *= range_ms as f64 / measured;
    }
    Some(if is_rate {
        result / (range_ms as f64 / 1000.0)
    } else {
        result
    })
}

/// `irate` / `idelta`: the last two samples of the window.
pub fn instant_value(samples: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (lt, lv) = samples[samples.len() - 1];
    let (pt, pv) = samples[samples.len() - 2];
    let mut dv = if is_rate && lv < pv { lv } else { lv - pv };
    if !is_rate && lv < pv {
        dv = lv - pv;
    }
    let dt = lt - pt;
    if dt == 0 {
        return None;
    }
    if is_rate {
        dv /= dt as f64 / 1000.0;
    }
    Some(dv)
}

/// Least-squares fit (Prometheus's `linearRegression`), x in seconds relative to
/// `intercept_time`.
pub fn linear_regression(samples: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = samples[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in samples.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// Mean with Kahan summation, switching to an incremental mean on overflow
/// (`avg_over_time` and `avg`).
#[derive(Debug, Default, Clone)]
pub struct MeanAcc {
    sum: f64,
    c: f64,
    mean: f64,
    count: f64,
    incremental: bool,
}

impl MeanAcc {
    pub fn add(&mut self, v: f64) {
        if self.count == 0.0 {
            self.sum = v;
            self.count = 1.0;
            return;
        }
        self.count += 1.0;
        if !self.incremental {
            let (ns, nc) = kahan_inc(v, self.sum, self.c);
            if !ns.is_infinite() {
                self.sum = ns;
                self.c = nc;
                return;
            }
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.c /= self.count - 1.0;
        }
        let q = (self.count - 1.0) / self.count;
        (self.mean, self.c) = kahan_inc(v / self.count, q * self.mean, q * self.c);
    }
    pub fn value(&self) -> f64 {
        if self.incremental {
            self.mean + self.c
        } else {
            self.sum / self.count + self.c / self.count
        }
    }
}

/// Kahan sum of values.
pub fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for v in vals {
        (s, c) = kahan_inc(v, s, c);
    }
    s + c
}

/// Population variance as `stdvar_over_time` computes it.
pub fn variance_over_time(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for v in vals {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Go's `sort` order for values used by quantiles: NaN first, then ascending.
pub fn sort_nan_first(v: &mut [f64]) {
    v.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap(),
    });
}

/// Prometheus's `quantile` (linear interpolation between closest ranks).
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    sort_nan_first(values);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (n - 1.0).min(lower + 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `almost.Equal`.
pub fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// One classic histogram bucket: upper bound and cumulative count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// Prometheus's `BucketQuantile` over classic `le` buckets, and whether a bucket's
/// count had to be raised to its predecessor's (a real decrease, not a rounding
/// difference: Prometheus then adds the "fixed for monotonicity" info).
pub fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    if buckets.is_empty() {
        return (f64::NAN, false);
    }
    let Some(out) = sorted_coalesced(buckets) else {
        return (f64::NAN, false);
    };
    *buckets = out;
    // ensure monotonicity, ignoring tiny deltas
    let mut forced = false;
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) || curr < prev {
            forced |= !almost_equal(prev, curr, 1e-12);
            b.count = prev;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return (f64::NAN, false);
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let nb = buckets.len() - 1;
    let b = (0..nb).find(|&i| buckets[i].count >= rank).unwrap_or(nb);
    if b == nb {
        return (buckets[nb - 1].upper_bound, forced);
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return (buckets[0].upper_bound, forced);
    }
    let mut bucket_start = 0.0;
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    (
        bucket_start + (bucket_end - bucket_start) * (rank / count),
        forced,
    )
}

/// Classic buckets sorted by upper bound, those with the same bound added up (Go's
/// `coalesceBuckets`); `None` without a `+Inf` bucket.
fn sorted_coalesced(buckets: &mut [Bucket]) -> Option<Vec<Bucket>> {
    buckets.sort_by(|a, b| {
        a.upper_bound
            .partial_cmp(&b.upper_bound)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if buckets[buckets.len() - 1].upper_bound != f64::INFINITY {
        return None;
    }
    let mut out: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match out.last_mut() {
            Some(last) if last.upper_bound == b.upper_bound => last.count += b.count,
            _ => out.push(*b),
        }
    }
    Some(out)
}

/// Prometheus's `BucketFraction`: the share of observations in `(lower, upper]` of
/// classic `le` buckets, interpolated linearly within a bucket.
pub fn bucket_fraction(lower: f64, upper: f64, buckets: &mut [Bucket]) -> f64 {
    if buckets.is_empty() {
        return f64::NAN;
    }
    let Some(bs) = sorted_coalesced(buckets) else {
        return f64::NAN;
    };
    let count = bs[bs.len() - 1].count;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut lower_bound = if bs[0].upper_bound <= 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    for (i, b) in bs.iter().enumerate() {
        if i > 0 {
            lower_bound = bs[i - 1].upper_bound;
        }
        let upper_bound = b.upper_bound;
        let interp = |v: f64| {
            if lower_bound == f64::NEG_INFINITY {
                return b.count;
            }
            rank + (b.count - rank) * (v - lower_bound) / (upper_bound - lower_bound)
        };
        if !lower_set && lower_bound >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            lower_rank = interp(lower);
            lower_set = true;
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            upper_rank = interp(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = b.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

/// `double_exponential_smoothing` (formerly `holt_winters`).
pub fn double_exp_smoothing(samples: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    let l = samples.len();
    if l < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, samples[0].1);
    let mut b = samples[1].1 - samples[0].1;
    for (i, &(_, v)) in samples.iter().enumerate().skip(1) {
        let x = sf * v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// Civil date (year, month 1-12, day 1-31), hour, minute and day number from Unix
/// seconds, UTC.
pub fn civil(secs: i64) -> (i64, u32, u32, u32, u32, i64) {
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = date::civil_from_days(days);
    (
        y,
        m,
        d,
        (sod / 3600) as u32,
        ((sod % 3600) / 60) as u32,
        days,
    )
}

/// The date functions (`year`, `month`, …) of Unix seconds `v`.
pub fn date_fn(name: &str, v: f64) -> f64 {
    // Go converts with int64(f): saturating-ish behaviour differs, but NaN/Inf are rare.
    let secs = if v.is_nan() {
        i64::MIN / 1000
    } else {
        v as i64
    };
    let (y, m, d, h, min, days) = civil(secs);
    match name {
        "year" => y as f64,
        "month" => m as f64,
        "day_of_month" => d as f64,
        "hour" => h as f64,
        "minute" => min as f64,
        "day_of_week" => ((days + 4).rem_euclid(7)) as f64,
        "day_of_year" => (days - date::days_from_civil(y, 1, 1) + 1) as f64,
        "days_in_month" => date::days_in_month(y, m) as f64,
        _ => f64::NAN,
    }
}

/// Natural-order string comparison (Prometheus's `natsort.Compare` used by
/// `sort_by_label`): runs of digits compare numerically.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        let (ca, cb) = (ab[i], bb[j]);
        if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
            let o = (i - si).cmp(&(j - sj));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if ca != cb {
                return ca.cmp(&cb);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)` (used by `count_values`).
pub fn format_float_f(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_extrapolates_to_window_edges() {
        // counter rising 10 per minute, window (0, 5m] at 5m, samples at 1m..5m
        let s: Vec<(i64, f64)> = (1..=5).map(|i| (i * 60_000, (i * 10) as f64)).collect();
        let inc = extrapolated_rate(&s, 300_000, 300_000, true, false).unwrap();
        // sampled 4m, 1m to start (< 1.1*avg) → extrapolate, zero point at 1m → 1m
        assert!((inc - 50.0).abs() < 1e-9, "{inc}");
        let r = extrapolated_rate(&s, 300_000, 300_000, true, true).unwrap();
        assert!((r - 50.0 / 300.0).abs() < 1e-12);
    }

    #[test]
    fn downsampled_rate_measures_from_the_point_before() {
        const H: i64 = 3_600_000;
        // 1h points at window ends; a reset between the second and third.
        let pts = [(H - 1, 100.0), (2 * H - 1, 160.0), (3 * H - 1, 30.0)];
        // One point in (2h, 3h]: increase from the 2h point, across the reset: 30.
        let inc = downsampled_rate(Some(pts[1]), &pts[2..], 3 * H, H, H, false).unwrap();
        assert_eq!(inc, 30.0);
        let rate = downsampled_rate(Some(pts[1]), &pts[2..], 3 * H, H, H, true).unwrap();
        assert!((rate - 30.0 / 3600.0).abs() < 1e-12, "{rate}");
        // Two points in (1h, 3h]: from the 1h point, 60 + 30, not extrapolated further.
        let inc = downsampled_rate(Some(pts[0]), &pts[1..], 3 * H, 2 * H, H, false).unwrap();
        assert_eq!(inc, 90.0);
        // The point before lies more than a resolution before the range (a gap): the
        // points inside are extrapolated as Prometheus does; one alone gives nothing.
        assert!(downsampled_rate(Some(pts[0]), &pts[2..], 3 * H, H, H, false).is_none());
        assert_eq!(
            downsampled_rate(Some((-H, 50.0)), &pts[1..], 3 * H, 2 * H, H, false),
            extrapolated_rate(&pts[1..], 3 * H, 2 * H, true, false)
        );
        // The data stops before the range's last window: not stretched to the end.
        let inc = downsampled_rate(Some(pts[0]), &pts[1..2], 4 * H, 3 * H, H, false).unwrap();
        assert_eq!(inc, 60.0);
    }

    /// Skipping the reset scan of a series without resets changes nothing; one reset
    /// anywhere in the series keeps every window's scan.
    #[test]
    fn rate_without_resets_skips_the_scan_alike() {
        let s: Vec<(i64, f64)> = (0..40)
            .map(|i| (i * 15_000 + 7, (i * i) as f64 * 0.1 + 3.0))
            .collect();
        assert!(!has_resets(&s));
        for end in (60_000..600_000).step_by(30_000) {
            let w: Vec<(i64, f64)> = s
                .iter()
                .copied()
                .filter(|p| p.0 > end - 300_000 && p.0 <= end)
                .collect();
            for rate in [false, true] {
                let a = extrapolated_rate(&w, end, 300_000, true, rate);
                let b = extrapolated_rate_with(&w, end, 300_000, true, false, rate);
                assert_eq!(a.map(f64::to_bits), b.map(f64::to_bits));
            }
        }
        let mut r = s.clone();
        r[20].1 = 0.0;
        assert!(has_resets(&r));
        assert!(!has_resets(&[(1, f64::NAN), (2, 1.0), (3, f64::NAN)]));
    }

    #[test]
    fn rate_handles_counter_reset_and_zero_clamp() {
        let s = vec![(60_000, 100.0), (120_000, 110.0), (180_000, 5.0)];
        // increase = 5 - 100 + 110 = 15 over 2m sampled
        let v = extrapolated_rate(&s, 180_000, 180_000, true, false).unwrap();
        // start gap 1m (< 1.1m) extrapolated, but zero point at 2m*100/15 > 1m so 1m used
        assert!((v - 15.0 * 3.0 / 2.0).abs() < 1e-9, "{v}");
        // zero clamp: counter starting near 0
        let s = vec![(240_000, 1.0), (300_000, 11.0)];
        let v = extrapolated_rate(&s, 300_000, 300_000, true, false).unwrap();
        // avg 60s, start gap 240s >= 66s → 30s, zero point 6s → 6s; end 0
        assert!((v - 10.0 * 66.0 / 60.0).abs() < 1e-9, "{v}");
        assert!(extrapolated_rate(&s[..1], 300_000, 300_000, true, false).is_none());
    }

    #[test]
    fn histogram_quantile_classic() {
        let mut b = vec![
            Bucket {
                upper_bound: 0.1,
                count: 10.0,
            },
            Bucket {
                upper_bound: 0.2,
                count: 20.0,
            },
            Bucket {
                upper_bound: f64::INFINITY,
                count: 20.0,
            },
        ];
        assert!((bucket_quantile(0.5, &mut b).0 - 0.1).abs() < 1e-12);
        let mut b = vec![
            Bucket {
                upper_bound: 1.0,
                count: 5.0,
            },
            Bucket {
                upper_bound: 2.0,
                count: 3.0,
            }, // non-monotonic, fixed to 5
            Bucket {
                upper_bound: f64::INFINITY,
                count: 10.0,
            },
        ];
        // rank 9 falls in +Inf bucket → upper bound of second-highest
        assert_eq!(bucket_quantile(0.9, &mut b), (2.0, true));
        let mut no_inf = vec![Bucket {
            upper_bound: 1.0,
            count: 5.0,
        }];
        assert!(bucket_quantile(0.5, &mut no_inf).0.is_nan());
        let mut b = vec![Bucket {
            upper_bound: f64::INFINITY,
            count: 5.0,
        }];
        assert!(bucket_quantile(0.5, &mut b).0.is_nan());
        assert_eq!(bucket_quantile(2.0, &mut b).0, f64::INFINITY);
    }

    #[test]
    fn dates_and_natsort() {
        assert_eq!(date_fn("year", 0.0), 1970.0);
        assert_eq!(date_fn("day_of_week", 0.0), 4.0);
        assert_eq!(date_fn("days_in_month", 951_782_400.0), 29.0); // 2000-02-29
        assert_eq!(date_fn("day_of_year", 951_782_400.0), 60.0);
        assert_eq!(date_fn("day_of_year", 978_307_199.0), 366.0); // 2000-12-31T23:59:59
        assert_eq!(date_fn("day_of_year", 4_107_542_400.0), 60.0); // 2100-03-01, not leap
        assert_eq!(date_fn("days_in_month", 4_107_542_400.0), 31.0);
        assert_eq!(natural_cmp("a10", "a9"), std::cmp::Ordering::Greater);
        assert_eq!(natural_cmp("a1", "a1b"), std::cmp::Ordering::Less);
    }
}
