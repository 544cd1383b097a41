//! Step-vectorised evaluator. Every node is evaluated once over all steps of its
//! context: selectors fetch their data once and slide over it, operators and
//! aggregations then work step by step on the children's per-step vectors.
//!
//! This module owns the evaluator's state, the per-step types and the dispatch over
//! expression kinds; each kind lives in its own file: `selectors` (storage reads,
//! instant and range selectors, subqueries), `range_functions` (`rate`, `*_over_time`,
//! …), `aggregate` (aggregations and their streaming cells), `binary` (operators and
//! vector matching) and `calls` (every other function).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr, Offset};
use strata_tsdb::labels::{Labels, METRIC_NAME};

use crate::{FloatHistogram, HistogramSamples, QueryError, Storage};

type Result<T> = std::result::Result<T, QueryError>;

mod aggregate;
mod binary;
mod calls;
mod range_functions;
mod selectors;

pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A histogram sample is a stale marker when its sum is the stale NaN.
pub fn is_stale_hist(h: &FloatHistogram) -> bool {
    is_stale(h.sum)
}

/// A histogram point at a time (Prometheus's `HPoint`).
pub type HPoint = (i64, FloatHistogram);

fn exec<T>(msg: impl Into<String>) -> Result<T> {
    Err(QueryError::Execution(msg.into()))
}

/// Prometheus's annotations (`util/annotations`), gathered while evaluating: each text
/// once. Texts are Prometheus's, without the ` (line:col)` position Prometheus appends
/// (the parser keeps no positions).
#[derive(Debug, Default)]
pub struct Annotations {
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

impl Annotations {
    pub fn warn(&mut self, msg: String) {
        if !self.warnings.contains(&msg) {
            self.warnings.push(msg);
        }
    }
    pub fn info(&mut self, msg: String) {
        if !self.infos.contains(&msg) {
            self.infos.push(msg);
        }
    }
}

/// Annotation texts (Prometheus's `util/annotations`).
pub mod anno {
    pub fn possible_non_counter(name: &str) -> String {
        format!("PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}")
    }
    pub fn ignored_in_aggregation(op: &str) -> String {
        format!("PromQL info: ignored histogram in {op} aggregation")
    }
    pub fn ignored_in_mixed_range(name: &str) -> String {
        format!("PromQL info: ignored histograms in a range containing both floats and histograms for metric name {name:?}")
    }
    pub fn incompatible_types(op: &str, l: &str, r: &str) -> String {
        format!("PromQL info: incompatible sample types encountered for binary operator {op:?}: {l} {op} {r}")
    }
    pub fn mixed_floats_histograms(name: &str) -> String {
        format!(
            "PromQL warning: encountered a mix of histograms and floats for metric name {name:?}"
        )
    }
    pub fn mixed_floats_histograms_aggregation() -> String {
        "PromQL warning: encountered a mix of histograms and floats for aggregation".into()
    }
    pub fn mixed_exponential_custom(name: &str) -> String {
        format!("PromQL warning: vector contains a mix of histograms with exponential and custom buckets schemas for metric name {name:?}")
    }
    pub fn not_counter(name: &str) -> String {
        format!("PromQL warning: this native histogram metric is not a counter: {name:?}")
    }
    pub fn not_gauge(name: &str) -> String {
        format!("PromQL warning: this native histogram metric is not a gauge: {name:?}")
    }
    /// `operation`: addition, subtraction or aggregation.
    pub fn counter_reset_collision(operation: &str) -> String {
        format!("PromQL warning: conflicting counter resets during histogram {operation}")
    }
    pub fn mismatched_custom_buckets(operation: &str) -> String {
        format!("PromQL info: mismatched custom buckets were reconciled during {operation}")
    }
    pub fn quantile_nan_result(name: &str) -> String {
        with_name(
            "PromQL info: input to histogram_quantile has NaN observations, result is NaN",
            name,
        )
    }
    pub fn quantile_forced_monotonic(name: &str) -> String {
        with_name("PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)", name)
    }
    pub fn quantile_nan_skew(name: &str) -> String {
        with_name("PromQL info: input to histogram_quantile has NaN observations, result is skewed higher", name)
    }
    pub fn fraction_nans(name: &str) -> String {
        with_name("PromQL info: input to histogram_fraction has NaN observations, which are excluded from all fractions", name)
    }
    pub fn sort_in_range_query() -> String {
        "PromQL warning: sort is ineffective for range queries since results are always ordered by labels".into()
    }
    pub fn invalid_quantile(q: f64) -> String {
        format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}",
            crate::histogram::go_g(q)
        )
    }
    pub fn bad_bucket_label(le: &str, name: &str) -> String {
        with_name(
            &format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of {le:?}"
            ),
            name,
        )
    }
    pub fn mixed_classic_native(name: &str) -> String {
        with_name(
            "PromQL warning: vector contains a mix of classic and native histograms",
            name,
        )
    }
    /// Prometheus's `maybeAddMetricName`.
    fn with_name(msg: &str, name: &str) -> String {
        if name.is_empty() {
            msg.to_string()
        } else {
            format!("{msg} for metric name {name:?}")
        }
    }
}

/// The steps a node is evaluated at.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Ctx {
    pub fn n(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            ((self.end - self.start) / self.step + 1) as usize
        }
    }
    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// One series of an instant vector evaluated over steps, or of a raw range.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    /// Delayed `__name__` removal: drop the name when the result is returned.
    pub drop_name: bool,
    /// Float points (Prometheus's `FPoint`s).
    pub pts: Vec<(i64, f64)>,
    /// Native histogram points, apart from the floats so that float-only paths never
    /// look at them; a time has a float or a histogram, not both.
    pub hists: Vec<HPoint>,
}

impl Series {
    /// Whether the series has no point at all.
    pub fn is_empty(&self) -> bool {
        self.pts.is_empty() && self.hists.is_empty()
    }

    /// Points of both kinds.
    pub fn len(&self) -> usize {
        self.pts.len() + self.hists.len()
    }
}

#[derive(Debug)]
pub enum Val {
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<Series>),
    /// A range vector (only as the root of an instant query); points are raw samples.
    Matrix(Vec<Series>),
}

/// The calls above an expression that decide whether its selectors read native
/// histograms as Prometheus's `HistogramStatsIterator` does (its
/// `detectHistogramStatsDecoding`): under `histogram_count`/`histogram_sum`/
/// `histogram_avg`, unless a subquery or `histogram_quantile(s)`/`histogram_fraction`
/// is anywhere above. That iterator re-derives an `Unknown` counter-reset hint from
/// the sample before it (the first of a chunk reads `Unknown`), so
/// `histogram_count(sum(..))` can see a reset that `sum(..)` cannot, and warn of
/// conflicting resets.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsPath {
    /// Under `histogram_count`, `histogram_sum` or `histogram_avg`.
    pub stats_only: bool,
    /// Under a subquery or a function needing whole buckets.
    pub blocked: bool,
}

impl StatsPath {
    fn decodes_stats(self) -> bool {
        self.stats_only && !self.blocked
    }
}

/// Counter-reset hints as Prometheus's `HistogramStatsIterator` yields them: an
/// `Unknown` one after another histogram becomes `CounterReset` or `NotCounterReset`
/// by comparing the two.
fn derive_stats_hints(hs: &mut [HPoint]) {
    use strata_tsdb::histogram::CounterResetHint as H;
    for i in 1..hs.len() {
        if hs[i].1.counter_reset_hint == H::Unknown {
            let reset = crate::histogram::detect_reset(&hs[i].1, &hs[i - 1].1);
            hs[i].1.counter_reset_hint = if reset {
                H::CounterReset
            } else {
                H::NotCounterReset
            };
        }
    }
}

/// A selected series, its samples decoded only when a consumer loads it
/// ([`RawSeries::load`]): consumers take one series at a time into a buffer they reuse,
/// so a selector's decoded samples are never all held at once.
pub(super) struct RawSeries {
    labels: Labels,
    drop_name: bool,
    samples: crate::Samples,
    histograms: HistogramSamples,
    /// Samples outside `[lo, hi]` are left out when loaded.
    lo: i64,
    hi: i64,
    /// Leave stale markers out (range selectors).
    drop_stale: bool,
    /// Downsampled resolution (ms, 0 raw).
    res: i64,
    /// Histogram hints as Prometheus's statistics decoding derives them ([`StatsPath`]).
    stats_hints: bool,
}

impl RawSeries {
    /// Already evaluated points (a subquery's), kept as they are.
    fn decoded(s: Series) -> Self {
        RawSeries {
            labels: s.labels,
            drop_name: s.drop_name,
            samples: crate::Samples::Decoded(s.pts),
            histograms: if s.hists.is_empty() {
                HistogramSamples::None
            } else {
                HistogramSamples::Decoded(s.hists)
            },
            lo: i64::MIN,
            hi: i64::MAX,
            drop_stale: false,
            res: 0,
            stats_hints: false,
        }
    }

    /// The series' newest sample in `[lo, hi]` (within its bounds), if any: what one
    /// instant-selector step reads, without decoding the rest from storage.
    fn load_last<'s>(
        &'s self,
        buf: &'s mut Vec<(i64, f64)>,
        lo: i64,
        hi: i64,
    ) -> Result<&'s [(i64, f64)]> {
        let (lo, hi) = (lo.max(self.lo), hi.min(self.hi));
        match &self.samples {
            crate::Samples::Decoded(v) => {
                Ok(crate::newest_in(v, lo, hi).map_or(&[], |i| &v[i..=i]))
            }
            crate::Samples::Lazy(l) => {
                l.decode_last_into(buf, lo, hi)
                    .map_err(|e| e.of_series(&self.labels))?;
                Ok(buf)
            }
        }
    }

    /// The series' samples within its bounds: a slice of samples storage returned
    /// decoded, or of `buf`, which it decodes (or filters) into.
    fn load<'s>(&'s self, buf: &'s mut Vec<(i64, f64)>) -> Result<&'s [(i64, f64)]> {
        let keep = |p: &(i64, f64)| {
            p.0 >= self.lo && p.0 <= self.hi && !(self.drop_stale && is_stale(p.1))
        };
        match &self.samples {
            crate::Samples::Decoded(v) => {
                let a = v.partition_point(|p| p.0 < self.lo);
                let b = a + v[a..].partition_point(|p| p.0 <= self.hi);
                let w = &v[a..b];
                if !(self.drop_stale && w.iter().any(|p| is_stale(p.1))) {
                    return Ok(w);
                }
                buf.clear();
                buf.extend(w.iter().filter(|p| keep(p)));
                Ok(buf)
            }
            crate::Samples::Lazy(l) => {
                l.decode_into(buf).map_err(|e| e.of_series(&self.labels))?;
                if !buf.iter().all(keep) {
                    buf.retain(keep);
                }
                Ok(buf)
            }
        }
    }

    /// Whether the series may have histogram samples.
    fn has_hists(&self) -> bool {
        !self.histograms.is_none()
    }

    /// The series' histogram samples within its bounds ([`Self::load`]'s counterpart).
    fn load_hists<'s>(&'s self, buf: &'s mut Vec<HPoint>) -> Result<&'s [HPoint]> {
        if !self.stats_hints {
            return self.load_hists_as_stored(buf);
        }
        // (a copy: only queries under histogram_count/sum/avg come here)
        let mut v = self.load_hists_as_stored(buf)?.to_vec();
        derive_stats_hints(&mut v);
        *buf = v;
        Ok(buf)
    }

    fn load_hists_as_stored<'s>(&'s self, buf: &'s mut Vec<HPoint>) -> Result<&'s [HPoint]> {
        let keep = |p: &HPoint| {
            p.0 >= self.lo && p.0 <= self.hi && !(self.drop_stale && is_stale_hist(&p.1))
        };
        match &self.histograms {
            HistogramSamples::None => Ok(&[]),
            HistogramSamples::Decoded(v) => {
                let a = v.partition_point(|p| p.0 < self.lo);
                let b = a + v[a..].partition_point(|p| p.0 <= self.hi);
                let w = &v[a..b];
                if !(self.drop_stale && w.iter().any(|p| is_stale_hist(&p.1))) {
                    return Ok(w);
                }
                buf.clear();
                buf.extend(w.iter().filter(|p| keep(p)).cloned());
                Ok(buf)
            }
            HistogramSamples::Lazy(l) => {
                l.decode_histograms_into(buf)
                    .map_err(|e| e.of_series(&self.labels))?;
                if !buf.iter().all(keep) {
                    buf.retain(keep);
                }
                Ok(buf)
            }
        }
    }
}

/// Per-step data of a range-vector argument.
struct RangeData {
    series: Vec<RawSeries>,
    /// Samples of a selector (not a subquery): loading a series counts what each step
    /// reads ([`Evaluator::load_range`]).
    selector: bool,
    range: i64,
    /// Reference (window end) time per step of the context.
    refs: Vec<i64>,
}

fn window<T>(pts: &[(i64, T)], end: i64, range: i64) -> &[(i64, T)] {
    let lo = pts.partition_point(|p| p.0 <= end.saturating_sub(range));
    let hi = pts.partition_point(|p| p.0 <= end);
    &pts[lo..hi.max(lo)]
}

/// [`window`] for steps in time order: each bound gallops forward from where the last
/// step left it, so a step costs O(log of the points it moves past), not O(log of the
/// series). Steps that go back in time start over.
#[derive(Default)]
struct Windows {
    lo: usize,
    hi: usize,
    last_end: i64,
}

impl Windows {
    fn next<'a, T>(&mut self, pts: &'a [(i64, T)], end: i64, range: i64) -> &'a [(i64, T)] {
        if end < self.last_end || self.hi > pts.len() {
            self.lo = 0;
            self.hi = 0;
        }
        self.last_end = end;
        let start = end.saturating_sub(range);
        self.lo = gallop(pts, self.lo, |t| t <= start);
        self.hi = gallop(pts, self.hi.max(self.lo), |t| t <= end);
        &pts[self.lo..self.hi]
    }
}

/// The first index at or after `from` whose timestamp fails `before` (`before` holds
/// for a prefix of `pts`, and for every index below `from`).
#[inline]
fn gallop<T>(pts: &[(i64, T)], from: usize, before: impl Fn(i64) -> bool) -> usize {
    // A step mostly moves past a point or two (a 30 s step over 15 s scrapes): look at
    // the first few one by one before galloping.
    let near = pts.len().min(from + 4);
    let mut lo = from;
    while lo < near {
        if !before(pts[lo].0) {
            return lo;
        }
        lo += 1;
    }
    let mut step = 1;
    while lo + step <= pts.len() && before(pts[lo + step - 1].0) {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(pts.len());
    lo + pts[lo..hi].partition_point(|p| before(p.0))
}

/// Builds output series keyed by label set.
#[derive(Default)]
struct Out {
    idx: HashMap<Labels, usize>,
    series: Vec<Series>,
}

impl Out {
    fn slot(&mut self, labels: Labels, drop_name: bool) -> usize {
        if let Some(&i) = self.idx.get(&labels) {
            if drop_name {
                self.series[i].drop_name = true;
            }
            return i;
        }
        let i = self.series.len();
        self.idx.insert(labels.clone(), i);
        self.series.push(Series {
            labels,
            drop_name,
            pts: Vec::new(),
            hists: Vec::new(),
        });
        i
    }
    fn push_at(&mut self, i: usize, t: i64, v: f64) -> Result<()> {
        let s = &mut self.series[i];
        if s.pts.last().is_none_or(|p| p.0 < t) && s.hists.last().is_none_or(|p| p.0 < t) {
            s.pts.push((t, v));
            return Ok(());
        }
        // Out of time order: a second input series mapped onto this label set (e.g.
        // by `label_replace`) after the first one's points were pushed. A collision at
        // any step fails, as at that step of Prometheus's evaluation; else the points
        // merge in time order.
        let at = s.pts.partition_point(|p| p.0 < t);
        if s.pts.get(at).is_some_and(|p| p.0 == t) || s.hists.iter().any(|p| p.0 == t) {
            return exec("vector cannot contain metrics with the same labelset");
        }
        s.pts.insert(at, (t, v));
        Ok(())
    }
    fn push(&mut self, labels: Labels, drop_name: bool, t: i64, v: f64) -> Result<()> {
        let i = self.slot(labels, drop_name);
        self.push_at(i, t, v)
    }
    fn push_hist_at(&mut self, i: usize, t: i64, h: FloatHistogram) -> Result<()> {
        let s = &mut self.series[i];
        if s.pts.last().is_none_or(|p| p.0 < t) && s.hists.last().is_none_or(|p| p.0 < t) {
            s.hists.push((t, h));
            return Ok(());
        }
        // Out of time order: as in `push_at`.
        let at = s.hists.partition_point(|p| p.0 < t);
        if s.hists.get(at).is_some_and(|p| p.0 == t) || s.pts.iter().any(|p| p.0 == t) {
            return exec("vector cannot contain metrics with the same labelset");
        }
        s.hists.insert(at, (t, h));
        Ok(())
    }
    fn finish(self) -> Vec<Series> {
        self.series.into_iter().filter(|s| !s.is_empty()).collect()
    }
}

/// When evaluation must stop: at the deadline (`--query.timeout`) or as soon as the
/// caller raises the cancel flag (client gone, request timed out). Checked every few
/// iterations of the hot loops: one relaxed load, one clock read.
#[derive(Clone, Copy)]
pub struct Stop<'a> {
    pub deadline: Instant,
    pub cancel: Option<&'a AtomicBool>,
}

impl Stop<'_> {
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(QueryError::Canceled("query execution"));
        }
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout("query execution"));
        }
        Ok(())
    }
}

/// Calls `f(step, t, samples)` with the samples `(series index, value)` present at
/// each step.
fn for_each_step(
    stop: Stop<'_>,
    series: &[Series],
    ctx: Ctx,
    mut func: impl FnMut(usize, i64, &[(usize, f64)]) -> Result<()>,
) -> Result<()> {
    let mut cur = vec![0usize; series.len()];
    let mut buf = Vec::new();
    for i in 0..ctx.n() {
        if i % 64 == 63 {
            stop.check()?;
        }
        let t = ctx.ts(i);
        buf.clear();
        for (si, s) in series.iter().enumerate() {
            let c = &mut cur[si];
            while *c < s.pts.len() && s.pts[*c].0 < t {
                *c += 1;
            }
            if *c < s.pts.len() && s.pts[*c].0 == t {
                buf.push((si, s.pts[*c].1));
                *c += 1;
            }
        }
        func(i, t, &buf)?;
    }
    Ok(())
}

/// Ascending (or descending with `desc`) with NaNs last either way: the order of
/// `sort`/`sort_desc` and of `bottomk`/`topk`.
fn cmp_nan_last(x: f64, y: f64, desc: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if desc => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
        _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

pub fn drop_name_labels(l: &Labels) -> Labels {
    l.without(&[METRIC_NAME])
}

/// Drops `__name__` from the series marked for it; series that then share a label set
/// become one when their points do not meet, and fail as Prometheus does when two
/// have a point at the same time. At the query's end with delayed name removal
/// (Prometheus's `cleanupMetricLabels`); without it, where a function or operator
/// dropped the name, as Prometheus's step-by-step evaluation merges what one step
/// yields under a label set (its `rangeEval`, `mergeSeriesWithSameLabelset`).
pub fn drop_marked_names(mut v: Vec<Series>) -> Result<Vec<Series>> {
    if !v.iter().any(|s| s.drop_name) {
        return Ok(v);
    }
    for s in &mut v {
        if s.drop_name {
            s.drop_name = false;
            // (nested name-dropping calls find it gone)
            if s.labels.get(METRIC_NAME).is_some() {
                s.labels = drop_name_labels(&s.labels);
            }
        }
    }
    // The common case: no two label sets meet, nothing is copied.
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    if v.iter().all(|s| seen.insert(&s.labels)) {
        return Ok(v);
    }
    drop(seen);
    let same = || exec("vector cannot contain metrics with the same labelset");
    let mut idx: HashMap<Labels, usize> = HashMap::with_capacity(v.len());
    let mut out: Vec<Series> = Vec::with_capacity(v.len());
    for mut s in v {
        let Some(&i) = idx.get(&s.labels) else {
            idx.insert(s.labels.clone(), out.len());
            out.push(s);
            continue;
        };
        let o = &mut out[i];
        // A time has one point, float or histogram, in each of the two.
        let taken = |t: i64, pts: &[(i64, f64)], hs: &[HPoint]| {
            pts.binary_search_by_key(&t, |p| p.0).is_ok()
                || hs.binary_search_by_key(&t, |p| p.0).is_ok()
        };
        if s.pts.iter().any(|p| taken(p.0, &o.pts, &o.hists))
            || s.hists.iter().any(|p| taken(p.0, &o.pts, &o.hists))
        {
            return same();
        }
        if !s.pts.is_empty() {
            o.pts.append(&mut s.pts);
            o.pts.sort_by_key(|p| p.0);
        }
        if !s.hists.is_empty() {
            o.hists.append(&mut s.hists);
            o.hists.sort_by_key(|p| p.0);
        }
    }
    Ok(out)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

pub struct Evaluator<'a> {
    pub storage: &'a dyn Storage,
    pub lookback: i64,
    pub max_samples: usize,
    pub stop: Stop<'a>,
    pub query_start: i64,
    pub query_end: i64,
    /// Step of the query in ms (0 for instant queries), for `step()`.
    pub query_step: i64,
    pub default_sub_step: i64,
    pub ticks: u32,
    /// Where the expression being evaluated sits for Prometheus's histogram statistics
    /// decoding ([`StatsPath`]).
    pub hist_stats: StatsPath,
    /// Prometheus's `totalQueryableSamples`: samples read per step (a vector selector's
    /// point, each sample of a range selector's window at each step).
    pub queryable: u64,
    /// Prometheus's `peakSamples`: the most samples held at a check.
    pub peak: std::cell::Cell<usize>,
    /// Warnings and infos for the answer.
    pub annos: std::cell::RefCell<Annotations>,
    /// [`crate::EngineOptions::delayed_name_removal`].
    pub delayed_names: bool,
}

impl<'a> Evaluator<'a> {
    fn warn(&self, msg: String) {
        self.annos.borrow_mut().warn(msg);
    }

    fn info(&self, msg: String) {
        self.annos.borrow_mut().info(msg);
    }

    /// Without delayed name removal, the name goes where a function or operator marks
    /// it dropped ([`drop_marked_names`]); with it, at the query's end.
    fn settle_names(&self, v: Vec<Series>) -> Result<Vec<Series>> {
        if self.delayed_names {
            Ok(v)
        } else {
            drop_marked_names(v)
        }
    }

    fn settle(&self, v: Val) -> Result<Val> {
        match v {
            Val::Vector(v) if !self.delayed_names => Ok(Val::Vector(drop_marked_names(v)?)),
            v => Ok(v),
        }
    }

    /// The metric name a histogram function's annotation names: none without delayed
    /// name removal, where Prometheus has dropped it before it annotates.
    fn anno_name<'l>(&self, labels: &'l Labels) -> &'l str {
        if self.delayed_names {
            labels.get(METRIC_NAME).unwrap_or("")
        } else {
            ""
        }
    }

    fn check_time(&mut self) -> Result<()> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % 16 == 1 {
            self.stop.check()?;
        }
        Ok(())
    }

    fn check_samples(&self, n: usize) -> Result<()> {
        if n > self.peak.get() {
            self.peak.set(n);
        }
        if n > self.max_samples {
            return Err(QueryError::TooManySamples);
        }
        Ok(())
    }

    /// A range selector's samples, summed over its series as they are loaded one by
    /// one, count toward `peakSamples` as if held together (the number Prometheus's
    /// matrix selector reports).
    fn note_held(&self, held: usize) {
        if held > self.peak.get() {
            self.peak.set(held);
        }
    }

    /// Series `s` of `rd` loaded into `buf` (see [`RawSeries::load`]); a selector's
    /// series count each step's window toward `totalQueryableSamples`, as Prometheus
    /// counts a sample once per step it is in.
    fn load_range<'s>(
        &mut self,
        rd: &RangeData,
        s: &'s RawSeries,
        buf: &'s mut Vec<(i64, f64)>,
    ) -> Result<&'s [(i64, f64)]> {
        let pts = s.load(buf)?;
        self.count_windows(rd, pts);
        Ok(pts)
    }

    /// A selector's samples count once per step window they are in.
    fn count_windows<T>(&mut self, rd: &RangeData, pts: &[(i64, T)]) {
        if rd.selector {
            let mut w = Windows::default();
            for &r in &rd.refs {
                self.queryable += w.next(pts, r, rd.range).len() as u64;
            }
        }
    }

    /// [`Self::load_range`] for the series' histogram samples.
    fn load_range_hists<'s>(
        &mut self,
        rd: &RangeData,
        s: &'s RawSeries,
        buf: &'s mut Vec<HPoint>,
    ) -> Result<&'s [HPoint]> {
        let pts = s.load_hists(buf)?;
        self.count_windows(rd, pts);
        Ok(pts)
    }

    fn check_series(&self, s: &[Series]) -> Result<()> {
        self.check_samples(s.iter().map(|s| s.len()).sum())
    }

    fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    fn refs(&self, ctx: Ctx, at: &Option<AtModifier>, offset: &Option<Offset>) -> Vec<i64> {
        let at = self.at_ms(at);
        let off = offset_ms(offset);
        (0..ctx.n())
            .map(|i| at.unwrap_or(ctx.ts(i)).saturating_sub(off))
            .collect()
    }

    pub fn eval(&mut self, e: &Expr, ctx: Ctx) -> Result<Val> {
        self.check_time()?;
        match e {
            Expr::Paren(p) => self.eval(&p.expr, ctx),
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; ctx.n()])),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Unary(u) => match self.eval(&u.expr, ctx)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(mut ss) => {
                    for s in &mut ss {
                        s.drop_name = true;
                        for p in &mut s.pts {
                            p.1 = -p.1;
                        }
                        for (_, h) in &mut s.hists {
                            crate::histogram::mul(h, -1.0);
                        }
                    }
                    Ok(Val::Vector(self.settle_names(ss)?))
                }
                _ => exec("unary expression only allowed on expressions of type scalar or vector"),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(
                self.eval_vector_selector(vs, ctx, false, None)?,
            )),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let rd = self.eval_range(e, ctx, None)?;
                // only meaningful for instant evaluation: the window at the (single) step
                let mut out = Vec::new();
                let mut total = 0;
                let mut buf = Vec::new();
                let mut hbuf = Vec::new();
                let mut held = 0;
                for s in &rd.series {
                    self.check_time()?;
                    let pts = self.load_range(&rd, s, &mut buf)?;
                    held += pts.len();
                    let w = window(pts, rd.refs[0], rd.range);
                    let hw = if s.has_hists() {
                        let hs = self.load_range_hists(&rd, s, &mut hbuf)?;
                        held += hs.len();
                        window(hs, rd.refs[0], rd.range)
                    } else {
                        &[]
                    };
                    if !w.is_empty() || !hw.is_empty() {
                        total += w.len() + hw.len();
                        self.queryable += (w.len() + hw.len()) as u64;
                        out.push(Series {
                            labels: s.labels.clone(),
                            drop_name: s.drop_name,
                            pts: w.to_vec(),
                            hists: hw.to_vec(),
                        });
                    }
                }
                if rd.selector {
                    self.note_held(held);
                }
                self.check_samples(total)?;
                Ok(Val::Matrix(out))
            }
            Expr::Aggregate(a) => self.eval_aggregate(a, ctx),
            Expr::Binary(b) => {
                let v = self.eval_binary(b, ctx)?;
                self.settle(v)
            }
            Expr::Call(c) => {
                let outer = self.hist_stats;
                match c.func.name {
                    "histogram_count" | "histogram_sum" | "histogram_avg" => {
                        self.hist_stats.stats_only = true;
                    }
                    "histogram_quantile" | "histogram_quantiles" | "histogram_fraction" => {
                        self.hist_stats.blocked = true;
                    }
                    _ => {}
                }
                let r = self.eval_call(c, ctx);
                self.hist_stats = outer;
                self.settle(r?)
            }
            Expr::Extension(_) => exec("extension expressions are not supported"),
        }
    }

    fn eval_vector(&mut self, e: &Expr, ctx: Ctx) -> Result<Vec<Series>> {
        match self.eval(e, ctx)? {
            Val::Vector(v) => Ok(v),
            _ => exec("expected instant vector"),
        }
    }

    /// An instant vector with its histogram samples left out (what Prometheus's float
    /// functions do with them).
    fn eval_vector_floats(&mut self, e: &Expr, ctx: Ctx) -> Result<Vec<Series>> {
        let mut v = self.eval_vector(e, ctx)?;
        if v.iter().any(|s| !s.hists.is_empty()) {
            for s in &mut v {
                s.hists.clear();
            }
            v.retain(|s| !s.pts.is_empty());
        }
        Ok(v)
    }

    fn eval_scalar(&mut self, e: &Expr, ctx: Ctx) -> Result<Vec<f64>> {
        match self.eval(e, ctx)? {
            Val::Scalar(v) => Ok(v),
            _ => exec("expected scalar"),
        }
    }

    fn eval_string(&mut self, e: &Expr, ctx: Ctx) -> Result<String> {
        match self.eval(e, ctx)? {
            Val::Str(s) => Ok(s),
            _ => exec("expected string"),
        }
    }
}

fn valid_label_name(s: &str) -> bool {
    // Prometheus 3.x accepts any valid UTF-8 non-empty label name
    !s.is_empty() && !s.contains('\u{fffd}')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The galloping cursor returns exactly what the two binary searches return, for
    /// steps forward (dense and sparse data, windows wider and narrower than the step)
    /// and for steps that go back in time.
    #[test]
    fn windows_cursor_matches_binary_search() {
        let mut seed = 7u64;
        let mut rnd = |m: i64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as i64) % m
        };
        for case in 0..200 {
            let n = rnd(300) as usize;
            let mut t = rnd(1000);
            let pts: Vec<(i64, f64)> = (0..n)
                .map(|_| {
                    t += 1 + rnd(if case % 2 == 0 { 10 } else { 500 });
                    (t, 0.0)
                })
                .collect();
            let range = 1 + rnd(3000);
            let step = 1 + rnd(700);
            let mut c = Windows::default();
            let mut end = rnd(2000);
            for k in 0..100 {
                // Now and then go back in time (an @ modifier keeps the end fixed).
                if k % 37 == 36 {
                    end -= rnd(5000);
                } else if k % 11 != 10 {
                    end += step;
                }
                assert_eq!(
                    c.next(&pts, end, range),
                    window(&pts, end, range),
                    "case {case} step {k} end {end} range {range}"
                );
            }
        }
    }
}
