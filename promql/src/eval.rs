//! Step-vectorised evaluator. Every node is evaluated once over all steps of its
//! context: selectors fetch their data once and slide over it, operators and
//! aggregations then work step by step on the children's per-step vectors.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp as PMatchOp, Matcher as PMatcher};
use promql_parser::parser::token::*;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Call, Expr, LabelModifier, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};
use strata_tsdb::labels::{Labels, METRIC_NAME};
use strata_tsdb::matcher::{MatchOp, Matcher};

use crate::functions as f;
use crate::{QueryError, SelectHints, Storage};

type Result<T> = std::result::Result<T, QueryError>;

pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

fn exec<T>(msg: impl Into<String>) -> Result<T> {
    Err(QueryError::Execution(msg.into()))
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
    pub pts: Vec<(i64, f64)>,
}

#[derive(Debug)]
pub enum Val {
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<Series>),
    /// A range vector (only as the root of an instant query); points are raw samples.
    Matrix(Vec<Series>),
}

/// Per-step data of a range-vector argument.
struct RangeData {
    series: Vec<Series>,
    /// Per series of a selector: its downsampled resolution (ms, 0 raw); empty for
    /// subqueries (all raw).
    res: Vec<i64>,
    range: i64,
    /// Reference (window end) time per step of the context.
    refs: Vec<i64>,
}

fn window(pts: &[(i64, f64)], end: i64, range: i64) -> &[(i64, f64)] {
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
    fn next<'a>(&mut self, pts: &'a [(i64, f64)], end: i64, range: i64) -> &'a [(i64, f64)] {
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
fn gallop(pts: &[(i64, f64)], from: usize, before: impl Fn(i64) -> bool) -> usize {
    let mut lo = from;
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
        });
        i
    }
    fn push_at(&mut self, i: usize, t: i64, v: f64) -> Result<()> {
        let s = &mut self.series[i];
        if let Some(last) = s.pts.last() {
            if last.0 == t {
                return exec("vector cannot contain metrics with the same labelset");
            }
        }
        s.pts.push((t, v));
        Ok(())
    }
    fn push(&mut self, labels: Labels, drop_name: bool, t: i64, v: f64) -> Result<()> {
        let i = self.slot(labels, drop_name);
        self.push_at(i, t, v)
    }
    fn finish(self) -> Vec<Series> {
        self.series
            .into_iter()
            .filter(|s| !s.pts.is_empty())
            .collect()
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

/// The group of a series with `labels` under `by (names)` / `without (names)`, and
/// whether the group's name is to be dropped later.
fn group_key(labels: &Labels, drop_name: bool, by: bool, names: &[String]) -> (Labels, bool) {
    let base = if drop_name && !(by && names.iter().any(|x| x == METRIC_NAME)) {
        drop_name_labels(labels)
    } else {
        labels.clone()
    };
    let key = if by {
        Labels::from_pairs(
            base.iter()
                .filter(|l| names.iter().any(|n| **n == *l.name))
                .map(|l| (&*l.name, &*l.value)),
        )
    } else {
        let mut ex: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        ex.push(METRIC_NAME);
        base.without(&ex)
    };
    let drop = drop_name && key.get(METRIC_NAME).is_some();
    (key, drop)
}

/// Most (group, step) cells a [`CellAgg`] allocates (≈40 bytes each).
const STREAM_CELLS: usize = 4 << 20;

/// `sum`/`avg`/`count`/`group`/`min`/`max` accumulated per (group, step) cell as series
/// arrive one by one, so they need not all be held at every step. Within a cell the
/// values are added in series order, as the step-by-step path adds them: the answer is
/// the same to the bit.
struct CellAgg<'a> {
    op: TokenId,
    by: bool,
    names: &'a [String],
    ctx: Ctx,
    n: usize,
    group_idx: HashMap<Labels, usize>,
    /// Group labels and whether their name is dropped later, in first-seen order.
    groups: Vec<(Labels, bool)>,
    cnt: Vec<f64>,
    val: Vec<f64>,
    comp: Vec<f64>,
    mean: Vec<f::MeanAcc>,
}

impl<'a> CellAgg<'a> {
    fn new(op: TokenId, by: bool, names: &'a [String], ctx: Ctx) -> Self {
        CellAgg {
            op,
            by,
            names,
            ctx,
            n: ctx.n(),
            group_idx: HashMap::new(),
            groups: Vec::new(),
            cnt: Vec::new(),
            val: Vec::new(),
            comp: Vec::new(),
            mean: Vec::new(),
        }
    }

    /// Whether the groups of these series (labels, name dropped) fit in the cells.
    fn fits<'l>(&self, series: impl Iterator<Item = (&'l Labels, bool)>) -> bool {
        let keys: std::collections::HashSet<Labels> = series
            .map(|(l, d)| group_key(l, d, self.by, self.names).0)
            .collect();
        keys.len().saturating_mul(self.n) <= STREAM_CELLS
    }

    /// One series' points (at step times, in order).
    fn add(&mut self, labels: &Labels, drop_name: bool, pts: &[(i64, f64)]) {
        let (key, drop) = group_key(labels, drop_name, self.by, self.names);
        let n = self.n;
        let gi = match self.group_idx.get(&key) {
            Some(&g) => {
                if drop {
                    self.groups[g].1 = true;
                }
                g
            }
            None => {
                let g = self.groups.len();
                self.groups.push((key.clone(), drop));
                self.group_idx.insert(key, g);
                self.cnt.resize(self.cnt.len() + n, 0.0);
                self.val.resize(self.val.len() + n, 0.0);
                if self.op == T_SUM {
                    self.comp.resize(self.comp.len() + n, 0.0);
                }
                if self.op == T_AVG {
                    self.mean.resize(self.mean.len() + n, f::MeanAcc::default());
                }
                g
            }
        };
        let base = gi * n;
        let step = self.ctx.step.max(1);
        for &(t, x) in pts {
            let c = base + ((t - self.ctx.start) / step) as usize;
            let first = self.cnt[c] == 0.0;
            self.cnt[c] += 1.0;
            match self.op {
                T_SUM => (self.val[c], self.comp[c]) = f::kahan_inc(x, self.val[c], self.comp[c]),
                T_AVG => self.mean[c].add(x),
                T_MIN if first || self.val[c] > x || self.val[c].is_nan() => self.val[c] = x,
                T_MAX if first || self.val[c] < x || self.val[c].is_nan() => self.val[c] = x,
                _ => {}
            }
        }
    }

    /// One series per group with a point, in first-seen order.
    fn finish(self) -> Vec<Series> {
        let n = self.n;
        let mut out = Vec::with_capacity(self.groups.len());
        for (gi, (labels, drop_name)) in self.groups.into_iter().enumerate() {
            let mut pts = Vec::new();
            for i in 0..n {
                let c = gi * n + i;
                if self.cnt[c] == 0.0 {
                    continue;
                }
                let v = match self.op {
                    T_SUM => self.val[c] + self.comp[c],
                    T_AVG => self.mean[c].value(),
                    T_COUNT => self.cnt[c],
                    T_GROUP => 1.0,
                    _ => self.val[c],
                };
                pts.push((self.ctx.ts(i), v));
            }
            out.push(Series {
                labels,
                drop_name,
                pts,
            });
        }
        out
    }
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
    /// Prometheus's `totalQueryableSamples`: samples read per step (a vector selector's
    /// point, each sample of a range selector's window at each step).
    pub queryable: u64,
    /// Prometheus's `peakSamples`: the most samples held at a check.
    pub peak: std::cell::Cell<usize>,
}

impl<'a> Evaluator<'a> {
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

    fn check_series(&self, s: &[Series]) -> Result<()> {
        self.check_samples(s.iter().map(|s| s.pts.len()).sum())
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
                    }
                    Ok(Val::Vector(ss))
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
                for s in rd.series {
                    let w = window(&s.pts, rd.refs[0], rd.range);
                    if !w.is_empty() {
                        total += w.len();
                        self.queryable += w.len() as u64;
                        out.push(Series {
                            labels: s.labels,
                            drop_name: s.drop_name,
                            pts: w.to_vec(),
                        });
                    }
                }
                self.check_samples(total)?;
                Ok(Val::Matrix(out))
            }
            Expr::Aggregate(a) => self.eval_aggregate(a, ctx),
            Expr::Binary(b) => self.eval_binary(b, ctx),
            Expr::Call(c) => self.eval_call(c, ctx),
            Expr::Extension(_) => exec("extension expressions are not supported"),
        }
    }

    fn eval_vector(&mut self, e: &Expr, ctx: Ctx) -> Result<Vec<Series>> {
        match self.eval(e, ctx)? {
            Val::Vector(v) => Ok(v),
            _ => exec("expected instant vector"),
        }
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

    fn matcher_sets(&self, vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>> {
        let conv = |m: &PMatcher| -> Result<Matcher> {
            let op = match m.op {
                PMatchOp::Equal => MatchOp::Equal,
                PMatchOp::NotEqual => MatchOp::NotEqual,
                PMatchOp::Re(_) => MatchOp::RegexMatch,
                PMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
            };
            Matcher::new(op, m.name.clone(), m.value.clone())
                .map_err(|e| QueryError::BadData(e.to_string()))
        };
        let mut base = Vec::new();
        if let Some(n) = &vs.name {
            base.push(Matcher::equal(METRIC_NAME, n.clone()));
        }
        let groups: Vec<&Vec<PMatcher>> = if vs.matchers.or_matchers.is_empty() {
            vec![&vs.matchers.matchers]
        } else {
            vs.matchers.or_matchers.iter().collect()
        };
        let mut out = Vec::new();
        for g in groups {
            let mut ms = base.clone();
            for m in g {
                ms.push(conv(m)?);
            }
            out.push(ms);
        }
        Ok(out)
    }

    fn select(
        &mut self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
    ) -> Result<Vec<Series>> {
        Ok(self.select_res(vs, mint, maxt, hints)?.0)
    }

    /// [`Self::select`] and each series' downsampled resolution (0 raw). A downsampled
    /// series keeps one window before `mint`: `rate` measures from it.
    fn select_res(
        &mut self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
    ) -> Result<(Vec<Series>, Vec<i64>)> {
        let sets = self.matcher_sets(vs)?;
        let several = sets.len() > 1;
        // Only several matcher sets can return a series twice; one set needs no map
        // (with 100k series the map's hashing was a tenth of a query).
        let mut seen: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<Series> = Vec::new();
        let mut res: Vec<i64> = Vec::new();
        for ms in sets {
            for s in self.storage.select(&ms, mint, maxt, hints)? {
                if several {
                    if seen.contains_key(&s.labels) {
                        continue;
                    }
                    seen.insert(s.labels.clone(), out.len());
                }
                let mut pts = s.samples;
                let lo = mint.saturating_sub(s.resolution.max(0));
                // trim in place: no second allocation per series
                if pts.first().is_some_and(|p| p.0 < lo) || pts.last().is_some_and(|p| p.0 > maxt) {
                    pts.retain(|p| p.0 >= lo && p.0 <= maxt);
                }
                out.push(Series {
                    labels: s.labels,
                    drop_name: false,
                    pts,
                });
                res.push(s.resolution.max(0));
            }
        }
        if several || !out.windows(2).all(|w| w[0].labels < w[1].labels) {
            let mut both: Vec<(Series, i64)> = out.into_iter().zip(res).collect();
            both.sort_by(|a, b| a.0.labels.cmp(&b.0.labels));
            (out, res) = both.into_iter().unzip();
        }
        Ok((out, res))
    }

    /// An instant vector selector at every step. With `ts_mode` the value is the
    /// sample's timestamp in seconds (`timestamp(selector)`).
    pub fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        ctx: Ctx,
        ts_mode: bool,
        func: Option<&str>,
    ) -> Result<Vec<Series>> {
        let Some((raw, refs)) = self.select_instant(vs, ctx, func)? else {
            return Ok(Vec::new());
        };
        self.steps_of_all(raw, &refs, ctx, ts_mode)
    }

    /// [`Self::steps_of`] for every raw series; series without a point are left out.
    fn steps_of_all(
        &mut self,
        raw: Vec<Series>,
        refs: &[i64],
        ctx: Ctx,
        ts_mode: bool,
    ) -> Result<Vec<Series>> {
        let mut out = Vec::with_capacity(raw.len());
        let mut total = 0;
        for s in raw {
            self.check_time()?;
            let mut pts = Vec::new();
            self.steps_of(&s.pts, refs, ctx, ts_mode, &mut pts);
            if !pts.is_empty() {
                total += pts.len();
                self.queryable += pts.len() as u64;
                self.check_samples(total)?;
                out.push(Series {
                    labels: s.labels,
                    drop_name: false,
                    pts,
                });
            }
        }
        Ok(out)
    }

    /// The raw series an instant-vector selector reads over the context, and its
    /// reference time per step; `None` when there are no steps.
    fn select_instant(
        &mut self,
        vs: &VectorSelector,
        ctx: Ctx,
        func: Option<&str>,
    ) -> Result<Option<(Vec<Series>, Vec<i64>)>> {
        let refs = self.refs(ctx, &vs.at, &vs.offset);
        if refs.is_empty() {
            return Ok(None);
        }
        let (lo, hi) = (*refs.iter().min().unwrap(), *refs.iter().max().unwrap());
        let hints = SelectHints {
            start: lo.saturating_sub(self.lookback).saturating_add(1),
            end: hi,
            step: if ctx.n() > 1 { ctx.step } else { 0 },
            range: 0,
            func: func.map(str::to_string),
        };
        let raw = self.select(vs, hints.start, hi, &hints)?;
        Ok(Some((raw, refs)))
    }

    /// The value of raw samples `pts` at each step (the last sample within the
    /// lookback, not stale), appended to `out` as (step time, value).
    fn steps_of(
        &self,
        pts: &[(i64, f64)],
        refs: &[i64],
        ctx: Ctx,
        ts_mode: bool,
        out: &mut Vec<(i64, f64)>,
    ) {
        // Steps go forward: the first sample after each step is found by galloping
        // from the last step's, not by a binary search over the whole series.
        let (mut idx, mut last_r) = (0usize, i64::MIN);
        for (i, &r) in refs.iter().enumerate() {
            if r < last_r {
                idx = 0;
            }
            last_r = r;
            idx = gallop(pts, idx, |t| t <= r);
            if idx == 0 {
                continue;
            }
            let (t, v) = pts[idx - 1];
            if t <= r.saturating_sub(self.lookback) || is_stale(v) {
                continue;
            }
            out.push((ctx.ts(i), if ts_mode { t as f64 / 1000.0 } else { v }));
        }
    }

    fn eval_range(&mut self, e: &Expr, ctx: Ctx, func: Option<&str>) -> Result<RangeData> {
        match unwrap_parens(e) {
            Expr::MatrixSelector(ms) => {
                let range = ms.range.as_millis() as i64;
                let refs = self.refs(ctx, &ms.vs.at, &ms.vs.offset);
                if refs.is_empty() {
                    return Ok(RangeData {
                        series: vec![],
                        res: vec![],
                        range,
                        refs,
                    });
                }
                let (lo, hi) = (*refs.iter().min().unwrap(), *refs.iter().max().unwrap());
                let hints = SelectHints {
                    start: lo.saturating_sub(range).saturating_add(1),
                    end: hi,
                    step: if ctx.n() > 1 { ctx.step } else { 0 },
                    range,
                    func: func.map(str::to_string),
                };
                let (raw, res) = self.select_res(&ms.vs, hints.start, hi, &hints)?;
                let (mut series, mut kept_res) = (Vec::with_capacity(raw.len()), Vec::new());
                let mut held = 0;
                for (mut s, r) in raw.into_iter().zip(res) {
                    s.pts.retain(|p| !is_stale(p.1));
                    held += s.pts.len();
                    // Each step reads its window (Prometheus counts a sample once per
                    // step it is in); galloping from the last step's bounds.
                    let mut w = Windows::default();
                    for &r in &refs {
                        self.queryable += w.next(&s.pts, r, range).len() as u64;
                    }
                    if !s.pts.is_empty() {
                        series.push(s);
                        kept_res.push(r);
                    }
                }
                if held > self.peak.get() {
                    self.peak.set(held);
                }
                Ok(RangeData {
                    series,
                    res: kept_res,
                    range,
                    refs,
                })
            }
            Expr::Subquery(sq) => self.eval_subquery(sq, ctx),
            _ => exec("expected range vector"),
        }
    }

    fn eval_subquery(&mut self, sq: &SubqueryExpr, ctx: Ctx) -> Result<RangeData> {
        let range = sq.range.as_millis() as i64;
        let refs = self.refs(ctx, &sq.at, &sq.offset);
        if refs.is_empty() {
            return Ok(RangeData {
                series: vec![],
                res: vec![],
                range,
                refs,
            });
        }
        let step = sq
            .step
            .map(|d| d.as_millis() as i64)
            .unwrap_or(self.default_sub_step)
            .max(1);
        let (lo, hi) = (*refs.iter().min().unwrap(), *refs.iter().max().unwrap());
        let mut start = (lo - range).div_euclid(step) * step;
        if start <= lo - range {
            start += step;
        }
        let inner = Ctx {
            start,
            end: hi,
            step,
        };
        if (hi.saturating_sub(start) / step) as u64 >= self.max_samples as u64 {
            return Err(QueryError::TooManySamples);
        }
        let series = if inner.n() == 0 {
            Vec::new()
        } else {
            self.eval_vector(&sq.expr, inner)?
        };
        Ok(RangeData {
            series,
            res: vec![],
            range,
            refs,
        })
    }

    // ---------------------------------------------------------------- calls

    fn eval_call(&mut self, c: &Call, ctx: Ctx) -> Result<Val> {
        let name = c.func.name;
        let args: Vec<&Expr> = c.args.args.iter().map(|b| b.as_ref()).collect();
        let n = ctx.n();
        match name {
            "time" => {
                return Ok(Val::Scalar(
                    (0..n).map(|i| ctx.ts(i) as f64 / 1000.0).collect(),
                ))
            }
            "pi" => return Ok(Val::Scalar(vec![std::f64::consts::PI; n])),
            "start" => return Ok(Val::Scalar(vec![self.query_start as f64 / 1000.0; n])),
            "end" => return Ok(Val::Scalar(vec![self.query_end as f64 / 1000.0; n])),
            "step" => return Ok(Val::Scalar(vec![self.query_step as f64 / 1000.0; n])),
            "range" => {
                return Ok(Val::Scalar(vec![
                    (self.query_end - self.query_start) as f64
                        / 1000.0;
                    n
                ]))
            }
            "vector" => {
                let v = self.eval_scalar(args[0], ctx)?;
                let pts = (0..n).map(|i| (ctx.ts(i), v[i])).collect();
                return Ok(Val::Vector(vec![Series {
                    labels: Labels::new(),
                    drop_name: false,
                    pts,
                }]));
            }
            "scalar" => {
                let v = self.eval_vector(args[0], ctx)?;
                let mut out = vec![f64::NAN; n];
                let mut cnt = vec![0u32; n];
                for s in &v {
                    for &(t, x) in &s.pts {
                        let i = ((t - ctx.start) / ctx.step) as usize;
                        cnt[i] += 1;
                        out[i] = x;
                    }
                }
                for i in 0..n {
                    if cnt[i] != 1 {
                        out[i] = f64::NAN;
                    }
                }
                return Ok(Val::Scalar(out));
            }
            "timestamp" => {
                if let Expr::VectorSelector(vs) = unwrap_parens(args[0]) {
                    let mut v = self.eval_vector_selector(vs, ctx, true, Some(name))?;
                    for s in &mut v {
                        s.drop_name = true;
                    }
                    return Ok(Val::Vector(v));
                }
                let mut v = self.eval_vector(args[0], ctx)?;
                for s in &mut v {
                    s.drop_name = true;
                    for p in &mut s.pts {
                        p.1 = p.0 as f64 / 1000.0;
                    }
                }
                return Ok(Val::Vector(v));
            }
            _ => {}
        }
        if let Some(r) = self.eval_range_function(name, &args, ctx)? {
            return Ok(r);
        }
        match name {
            "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn"
            | "acos" | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin"
            | "sinh" | "tan" | "tanh" | "deg" | "rad" => {
                let func: fn(f64) -> f64 = match name {
                    "abs" => f64::abs,
                    "ceil" => f64::ceil,
                    "floor" => f64::floor,
                    "exp" => f64::exp,
                    "sqrt" => f64::sqrt,
                    "ln" => f64::ln,
                    "log2" => f64::log2,
                    "log10" => f64::log10,
                    "sgn" => |x: f64| {
                        if x > 0.0 {
                            1.0
                        } else if x < 0.0 {
                            -1.0
                        } else {
                            x
                        }
                    },
                    "acos" => f64::acos,
                    "acosh" => f64::acosh,
                    "asin" => f64::asin,
                    "asinh" => f64::asinh,
                    "atan" => f64::atan,
                    "atanh" => f64::atanh,
                    "cos" => f64::cos,
                    "cosh" => f64::cosh,
                    "sin" => f64::sin,
                    "sinh" => f64::sinh,
                    "tan" => f64::tan,
                    "tanh" => f64::tanh,
                    "deg" => |x: f64| x * 180.0 / std::f64::consts::PI,
                    _ => |x: f64| x * std::f64::consts::PI / 180.0,
                };
                let mut v = self.eval_vector(args[0], ctx)?;
                for s in &mut v {
                    s.drop_name = true;
                    for p in &mut s.pts {
                        p.1 = func(p.1);
                    }
                }
                Ok(Val::Vector(v))
            }
            "round" | "clamp" | "clamp_min" | "clamp_max" => {
                let mut v = self.eval_vector(args[0], ctx)?;
                let params: Vec<Vec<f64>> = args[1..]
                    .iter()
                    .map(|a| self.eval_scalar(a, ctx))
                    .collect::<Result<_>>()?;
                for s in &mut v {
                    s.drop_name = true;
                    s.pts.retain_mut(|p| {
                        let i = ((p.0 - ctx.start) / ctx.step) as usize;
                        match name {
                            "round" => {
                                let to = params.first().map(|x| x[i]).unwrap_or(1.0);
                                let inv = 1.0 / to;
                                p.1 = (p.1 * inv + 0.5).floor() / inv;
                                true
                            }
                            "clamp" => {
                                let (lo, hi) = (params[0][i], params[1][i]);
                                if hi < lo {
                                    return false;
                                }
                                // Go's math.Max/Min: NaN in, NaN out
                                p.1 = go_min(go_max(p.1, lo), hi);
                                true
                            }
                            "clamp_min" => {
                                p.1 = go_max(p.1, params[0][i]);
                                true
                            }
                            _ => {
                                p.1 = go_min(p.1, params[0][i]);
                                true
                            }
                        }
                    });
                }
                v.retain(|s| !s.pts.is_empty());
                Ok(Val::Vector(v))
            }
            "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
            | "hour" | "minute" => {
                if args.is_empty() {
                    let pts = (0..n)
                        .map(|i| (ctx.ts(i), f::date_fn(name, (ctx.ts(i) / 1000) as f64)))
                        .collect();
                    return Ok(Val::Vector(vec![Series {
                        labels: Labels::new(),
                        drop_name: false,
                        pts,
                    }]));
                }
                let mut v = self.eval_vector(args[0], ctx)?;
                for s in &mut v {
                    s.drop_name = true;
                    for p in &mut s.pts {
                        p.1 = f::date_fn(name, p.1);
                    }
                }
                Ok(Val::Vector(v))
            }
            "sort" | "sort_desc" => {
                let mut v = self.eval_vector(args[0], ctx)?;
                // ordering only matters for instant queries: order series by their value
                let desc = name == "sort_desc";
                v.sort_by(|a, b| {
                    let first = |s: &Series| s.pts.first().map_or(f64::NAN, |p| p.1);
                    cmp_nan_last(first(a), first(b), desc)
                });
                Ok(Val::Vector(v))
            }
            "sort_by_label" | "sort_by_label_desc" => {
                let mut v = self.eval_vector(args[0], ctx)?;
                let mut names = Vec::new();
                for a in &args[1..] {
                    names.push(self.eval_string(a, ctx)?);
                }
                let desc = name == "sort_by_label_desc";
                v.sort_by(|a, b| {
                    for l in &names {
                        let (x, y) = (a.labels.get(l).unwrap_or(""), b.labels.get(l).unwrap_or(""));
                        if x == y {
                            continue;
                        }
                        let o = f::natural_cmp(x, y);
                        return if desc { o.reverse() } else { o };
                    }
                    let o = a.labels.cmp(&b.labels);
                    if desc {
                        o.reverse()
                    } else {
                        o
                    }
                });
                Ok(Val::Vector(v))
            }
            "label_replace" => {
                let v = self.eval_vector(args[0], ctx)?;
                let dst = self.eval_string(args[1], ctx)?;
                let repl = self.eval_string(args[2], ctx)?;
                let src = self.eval_string(args[3], ctx)?;
                let re_s = self.eval_string(args[4], ctx)?;
                let re = regex::Regex::new(&format!("^(?s:{re_s})$")).map_err(|e| {
                    QueryError::Execution(format!(
                        "invalid regular expression in label_replace(): {re_s}: {e}"
                    ))
                })?;
                if !valid_label_name(&dst) {
                    return exec(format!(
                        "invalid destination label name in label_replace(): {dst}"
                    ));
                }
                let mut out = Out::default();
                for s in v {
                    let sv = s.labels.get(&src).unwrap_or("");
                    let (labels, drop) = if let Some(caps) = re.captures(sv) {
                        let mut res = String::new();
                        caps.expand(&repl, &mut res);
                        let drop = if dst == METRIC_NAME {
                            false
                        } else {
                            s.drop_name
                        };
                        (s.labels.with(&dst, &res), drop)
                    } else {
                        (s.labels.clone(), s.drop_name)
                    };
                    let i = out.slot(labels, drop);
                    for (t, x) in s.pts {
                        out.push_at(i, t, x)?;
                    }
                }
                Ok(Val::Vector(out.finish()))
            }
            "label_join" => {
                let v = self.eval_vector(args[0], ctx)?;
                let dst = self.eval_string(args[1], ctx)?;
                let sep = self.eval_string(args[2], ctx)?;
                let mut srcs = Vec::new();
                for a in &args[3..] {
                    srcs.push(self.eval_string(a, ctx)?);
                }
                if !valid_label_name(&dst) {
                    return exec(format!(
                        "invalid destination label name in label_join(): {dst}"
                    ));
                }
                let mut out = Out::default();
                for s in v {
                    let joined: Vec<&str> =
                        srcs.iter().map(|l| s.labels.get(l).unwrap_or("")).collect();
                    let joined = joined.join(&sep);
                    let drop = if dst == METRIC_NAME {
                        false
                    } else {
                        s.drop_name
                    };
                    let i = out.slot(s.labels.with(&dst, &joined), drop);
                    for (t, x) in s.pts {
                        out.push_at(i, t, x)?;
                    }
                }
                Ok(Val::Vector(out.finish()))
            }
            "absent" => {
                let v = self.eval_vector(args[0], ctx)?;
                let mut present = vec![false; n];
                for s in &v {
                    for &(t, _) in &s.pts {
                        present[((t - ctx.start) / ctx.step) as usize] = true;
                    }
                }
                let labels = absent_labels(args[0]);
                let pts: Vec<(i64, f64)> = (0..n)
                    .filter(|&i| !present[i])
                    .map(|i| (ctx.ts(i), 1.0))
                    .collect();
                Ok(Val::Vector(if pts.is_empty() {
                    vec![]
                } else {
                    vec![Series {
                        labels,
                        drop_name: false,
                        pts,
                    }]
                }))
            }
            "histogram_quantile" => self.eval_histogram_quantile(&args, ctx),
            _ => exec(format!("function {name:?} is not supported")),
        }
    }

    /// Functions over a range vector; `None` when `name` is not one.
    fn eval_range_function(&mut self, name: &str, args: &[&Expr], ctx: Ctx) -> Result<Option<Val>> {
        Ok(self
            .eval_range_function_into(name, args, ctx, None)?
            .map(|(v, _)| v))
    }

    /// [`Self::eval_range_function`]; with `agg`, each series' result goes into it
    /// instead of the returned vector when the groups fit (the `bool`: they did).
    fn eval_range_function_into(
        &mut self,
        name: &str,
        args: &[&Expr],
        ctx: Ctx,
        mut agg: Option<&mut CellAgg<'_>>,
    ) -> Result<Option<(Val, bool)>> {
        let range_idx = match name {
            "quantile_over_time" => 1,
            "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "predict_linear"
            | "changes"
            | "resets"
            | "avg_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "last_over_time"
            | "first_over_time"
            | "present_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "mad_over_time"
            | "absent_over_time"
            | "double_exponential_smoothing"
            | "holt_winters"
            | "ts_of_first_over_time"
            | "ts_of_last_over_time"
            | "ts_of_min_over_time"
            | "ts_of_max_over_time" => 0,
            _ => return Ok(None),
        };
        let mut params: Vec<Vec<f64>> = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if i != range_idx {
                params.push(self.eval_scalar(a, ctx)?);
            }
        }
        let rd = self.eval_range(args[range_idx], ctx, Some(name))?;
        let n = ctx.n();
        if name == "absent_over_time" {
            let mut pts = Vec::new();
            for i in 0..n {
                let any = rd
                    .series
                    .iter()
                    .any(|s| !window(&s.pts, rd.refs[i], rd.range).is_empty());
                if !any {
                    pts.push((ctx.ts(i), 1.0));
                }
            }
            let labels = match unwrap_parens(args[0]) {
                Expr::MatrixSelector(ms) => absent_labels(&Expr::VectorSelector(ms.vs.clone())),
                _ => Labels::new(),
            };
            let v = Val::Vector(if pts.is_empty() {
                vec![]
            } else {
                vec![Series {
                    labels,
                    drop_name: false,
                    pts,
                }]
            });
            return Ok(Some((v, false)));
        }
        if name == "double_exponential_smoothing" || name == "holt_winters" {
            for (&sf, &tf) in params[0].iter().zip(&params[1]).take(n) {
                if !(sf > 0.0 && sf < 1.0) {
                    return exec(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                    ));
                }
                if !(tf > 0.0 && tf < 1.0) {
                    return exec(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                    ));
                }
            }
        }
        let keep_name = matches!(name, "last_over_time" | "first_over_time");
        if let Some(acc) = &agg {
            if !acc.fits(
                rd.series
                    .iter()
                    .map(|s| (&s.labels, s.drop_name || !keep_name)),
            ) {
                agg = None;
            }
        }
        let streamed = agg.is_some();
        let mut out = Vec::with_capacity(if streamed { 0 } else { rd.series.len() });
        let mut step_load = vec![0usize; n];
        let mut total = 0usize;
        let mut buf: Vec<f64> = Vec::new();
        for (si, s) in rd.series.iter().enumerate() {
            self.check_time()?;
            let mut pts = Vec::new();
            let mut windows = Windows::default();
            let res = rd.res.get(si).copied().unwrap_or(0);
            for i in 0..n {
                if i % 64 == 63 {
                    self.check_time()?;
                }
                let w = windows.next(&s.pts, rd.refs[i], rd.range);
                if w.is_empty() {
                    continue;
                }
                // The point before the window, for rates over downsampled data.
                let before = || windows.lo.checked_sub(1).map(|j| s.pts[j]);
                step_load[i] += w.len();
                if step_load[i] > self.max_samples {
                    return Err(QueryError::TooManySamples);
                }
                let vals = || w.iter().map(|p| p.1);
                let r: Option<f64> = match name {
                    "rate" | "increase" if res > 0 => {
                        f::downsampled_rate(before(), w, rd.refs[i], rd.range, res, name == "rate")
                    }
                    "rate" => f::extrapolated_rate(w, rd.refs[i], rd.range, true, true),
                    "increase" => f::extrapolated_rate(w, rd.refs[i], rd.range, true, false),
                    "delta" => f::extrapolated_rate(w, rd.refs[i], rd.range, false, false),
                    "irate" => f::instant_value(w, true),
                    "idelta" => f::instant_value(w, false),
                    "deriv" => (w.len() >= 2).then(|| f::linear_regression(w, w[0].0).0),
                    "predict_linear" => (w.len() >= 2).then(|| {
                        let (slope, icpt) = f::linear_regression(w, ctx.ts(i));
                        slope * params[0][i] + icpt
                    }),
                    "changes" => Some(
                        w.windows(2)
                            .filter(|p| p[0].1 != p[1].1 && !(p[0].1.is_nan() && p[1].1.is_nan()))
                            .count() as f64,
                    ),
                    "resets" => Some(w.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64),
                    "avg_over_time" => {
                        let mut m = f::MeanAcc::default();
                        vals().for_each(|v| m.add(v));
                        Some(m.value())
                    }
                    "sum_over_time" => Some(f::kahan_sum(vals())),
                    "count_over_time" => Some(w.len() as f64),
                    "present_over_time" => Some(1.0),
                    "last_over_time" => Some(w[w.len() - 1].1),
                    "first_over_time" => Some(w[0].1),
                    "ts_of_last_over_time" => Some(w[w.len() - 1].0 as f64 / 1000.0),
                    "ts_of_first_over_time" => Some(w[0].0 as f64 / 1000.0),
                    "min_over_time" | "ts_of_min_over_time" => {
                        let mut best = w[0];
                        for &p in &w[1..] {
                            if p.1 < best.1 || best.1.is_nan() {
                                best = p;
                            }
                        }
                        Some(if name == "min_over_time" {
                            best.1
                        } else {
                            best.0 as f64 / 1000.0
                        })
                    }
                    "max_over_time" | "ts_of_max_over_time" => {
                        let mut best = w[0];
                        for &p in &w[1..] {
                            if p.1 > best.1 || best.1.is_nan() {
                                best = p;
                            }
                        }
                        Some(if name == "max_over_time" {
                            best.1
                        } else {
                            best.0 as f64 / 1000.0
                        })
                    }
                    "stdvar_over_time" => Some(f::variance_over_time(vals())),
                    "stddev_over_time" => Some(f::variance_over_time(vals()).sqrt()),
                    "quantile_over_time" => {
                        buf.clear();
                        buf.extend(vals());
                        Some(f::quantile(params[0][i], &mut buf))
                    }
                    "mad_over_time" if w.iter().any(|p| p.1.is_nan()) => Some(f64::NAN),
                    "mad_over_time" => {
                        buf.clear();
                        buf.extend(vals());
                        let med = f::quantile(0.5, &mut buf);
                        for x in buf.iter_mut() {
                            *x = (*x - med).abs();
                        }
                        Some(f::quantile(0.5, &mut buf))
                    }
                    "double_exponential_smoothing" | "holt_winters" => {
                        f::double_exp_smoothing(w, params[0][i], params[1][i])
                    }
                    _ => None,
                };
                if let Some(v) = r {
                    pts.push((ctx.ts(i), v));
                }
            }
            if !pts.is_empty() {
                total += pts.len();
                self.check_samples(total)?;
                let drop_name = s.drop_name || !keep_name;
                match agg.as_deref_mut() {
                    Some(acc) => acc.add(&s.labels, drop_name, &pts),
                    None => out.push(Series {
                        labels: s.labels.clone(),
                        drop_name,
                        pts,
                    }),
                }
            }
        }
        Ok(Some((Val::Vector(out), streamed)))
    }

    fn eval_histogram_quantile(&mut self, args: &[&Expr], ctx: Ctx) -> Result<Val> {
        let q = self.eval_scalar(args[0], ctx)?;
        let v = self.eval_vector(args[1], ctx)?;
        // group series by their labels without `le` (and the name)
        let mut groups: HashMap<Labels, usize> = HashMap::new();
        let mut group_labels: Vec<(Labels, bool)> = Vec::new();
        let mut member: Vec<Option<(usize, f64)>> = Vec::with_capacity(v.len());
        for s in &v {
            let ub = match s.labels.get("le").map(parse_go_float) {
                Some(Some(ub)) => ub,
                _ => {
                    member.push(None);
                    continue;
                }
            };
            let key = s.labels.without(&["le", METRIC_NAME]);
            let gi = *groups.entry(key.clone()).or_insert_with(|| {
                group_labels.push((key, true));
                group_labels.len() - 1
            });
            member.push(Some((gi, ub)));
        }
        let mut out: Vec<Series> = group_labels
            .into_iter()
            .map(|(labels, drop_name)| Series {
                labels,
                drop_name,
                pts: Vec::new(),
            })
            .collect();
        let mut buckets: Vec<Vec<f::Bucket>> = vec![Vec::new(); out.len()];
        for_each_step(self.stop, &v, ctx, |i, t, samples| {
            for b in buckets.iter_mut() {
                b.clear();
            }
            for &(si, x) in samples {
                if let Some((gi, ub)) = member[si] {
                    buckets[gi].push(f::Bucket {
                        upper_bound: ub,
                        count: x,
                    });
                }
            }
            for (gi, b) in buckets.iter_mut().enumerate() {
                if !b.is_empty() {
                    let r = f::bucket_quantile(q[i], b);
                    out[gi].pts.push((t, r));
                }
            }
            Ok(())
        })?;
        out.retain(|s| !s.pts.is_empty());
        Ok(Val::Vector(out))
    }

    // ---------------------------------------------------------- aggregation

    /// `sum`/`avg`/`count`/`group`/`min`/`max` straight over a selector's raw series:
    /// each series' step values go into per-(group, step) cells ([`CellAgg`]) and are
    /// dropped, instead of materialising every series at every step and walking them
    /// step by step. `Err(raw)` when there would be too many cells: the caller
    /// aggregates the usual way.
    #[allow(clippy::type_complexity)]
    fn aggregate_raw(
        &mut self,
        op: TokenId,
        by: bool,
        names: &[String],
        raw: Vec<Series>,
        refs: &[i64],
        ctx: Ctx,
    ) -> Result<std::result::Result<Val, Vec<Series>>> {
        let mut acc = CellAgg::new(op, by, names, ctx);
        if !acc.fits(raw.iter().map(|s| (&s.labels, false))) {
            return Ok(Err(raw));
        }
        let mut pts = Vec::new();
        let mut total = 0usize;
        for s in raw {
            self.check_time()?;
            pts.clear();
            self.steps_of(&s.pts, refs, ctx, false, &mut pts);
            if pts.is_empty() {
                continue;
            }
            total += pts.len();
            self.queryable += pts.len() as u64;
            self.check_samples(total)?;
            acc.add(&s.labels, false, &pts);
        }
        let out = acc.finish();
        self.check_series(&out)?;
        Ok(Ok(Val::Vector(out)))
    }

    fn eval_aggregate(&mut self, a: &AggregateExpr, ctx: Ctx) -> Result<Val> {
        let op = a.op.id();
        let n = ctx.n();
        let mut count_label = None;
        let mut param: Vec<f64> = Vec::new();
        if let Some(p) = &a.param {
            if op == T_COUNT_VALUES {
                let l = self.eval_string(p, ctx)?;
                if !valid_label_name(&l) {
                    return exec(format!("invalid label name {:?}", l));
                }
                count_label = Some(l);
            } else {
                param = self.eval_scalar(p, ctx)?;
            }
        }
        // grouping
        let (by, names): (bool, Vec<String>) = match &a.modifier {
            None => (true, vec![]),
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
        };
        let streamable = matches!(op, T_SUM | T_AVG | T_COUNT | T_GROUP | T_MIN | T_MAX);
        let input = match unwrap_parens(&a.expr) {
            Expr::VectorSelector(vs) if streamable => {
                let Some((raw, refs)) = self.select_instant(vs, ctx, None)? else {
                    return Ok(Val::Vector(Vec::new()));
                };
                match self.aggregate_raw(op, by, &names, raw, &refs, ctx)? {
                    Ok(v) => return Ok(v),
                    Err(raw) => self.steps_of_all(raw, &refs, ctx, false)?,
                }
            }
            // e.g. sum by (job) (rate(x[5m])): each series' rate goes straight into
            // the cells; `absent_over_time` is not a per-series function.
            Expr::Call(c) if streamable && c.func.name != "absent_over_time" => {
                let args: Vec<&Expr> = c.args.args.iter().map(|b| b.as_ref()).collect();
                let mut acc = CellAgg::new(op, by, &names, ctx);
                match self.eval_range_function_into(c.func.name, &args, ctx, Some(&mut acc))? {
                    Some((_, true)) => {
                        let out = acc.finish();
                        self.check_series(&out)?;
                        return Ok(Val::Vector(out));
                    }
                    Some((Val::Vector(v), false)) => v,
                    _ => self.eval_vector(&a.expr, ctx)?,
                }
            }
            _ => self.eval_vector(&a.expr, ctx)?,
        };
        if matches!(op, T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO) && !input.is_empty() {
            for &k in &param {
                if k.is_nan() {
                    if op == T_LIMIT_RATIO {
                        return exec("Ratio value is NaN");
                    }
                    return exec("Parameter value is NaN");
                }
                if op != T_LIMIT_RATIO
                    && !(-9.223372036854776e18..9.223372036854776e18).contains(&k)
                {
                    return exec(format!("Scalar value {} overflows int64", k));
                }
            }
        } else if matches!(op, T_TOPK | T_BOTTOMK | T_LIMITK) {
            for &k in &param {
                if k.is_nan() {
                    return exec("Parameter value is NaN");
                }
            }
        } else if op == T_LIMIT_RATIO {
            for &k in &param {
                if k.is_nan() {
                    return exec("Ratio value is NaN");
                }
            }
        }
        let mut group_idx: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<(Labels, bool)> = Vec::new();
        let mut member = Vec::with_capacity(input.len());
        for s in &input {
            let (key, drop) = group_key(&s.labels, s.drop_name, by, &names);
            let gi = match group_idx.get(&key) {
                Some(&g) => {
                    if drop {
                        groups[g].1 = true;
                    }
                    g
                }
                None => {
                    groups.push((key.clone(), drop));
                    group_idx.insert(key, groups.len() - 1);
                    groups.len() - 1
                }
            };
            member.push(gi);
        }
        let ng = groups.len();

        if matches!(op, T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO) {
            let mut outs: Vec<Vec<(i64, f64)>> = vec![Vec::new(); input.len()];
            let mut order: Vec<usize> = Vec::new(); // order of the instant result
            let mut per_group: Vec<Vec<(usize, f64)>> = vec![Vec::new(); ng];
            for_each_step(self.stop, &input, ctx, |i, t, samples| {
                for g in per_group.iter_mut() {
                    g.clear();
                }
                for &(si, x) in samples {
                    per_group[member[si]].push((si, x));
                }
                let k = param[i];
                for g in per_group.iter_mut() {
                    let sel: Vec<(usize, f64)> = match op {
                        T_LIMITK => {
                            let k = if k < 1.0 {
                                0
                            } else {
                                (k as i64).min(g.len() as i64) as usize
                            };
                            g.iter().take(k).copied().collect()
                        }
                        T_LIMIT_RATIO => {
                            let r = k.clamp(-1.0, 1.0);
                            g.iter()
                                .filter(|(si, _)| {
                                    let h = ratio_hash(&input[*si].labels);
                                    if r >= 0.0 {
                                        h < r
                                    } else {
                                        h >= 1.0 + r
                                    }
                                })
                                .copied()
                                .collect()
                        }
                        _ => {
                            let k = if k < 1.0 {
                                0
                            } else {
                                (k as i64).min(g.len() as i64) as usize
                            };
                            let top = op == T_TOPK;
                            let mut v = g.clone();
                            v.sort_by(|a, b| cmp_nan_last(a.1, b.1, top));
                            v.truncate(k);
                            v
                        }
                    };
                    for (si, x) in sel {
                        if n == 1 {
                            order.push(si);
                        }
                        outs[si].push((t, x));
                    }
                }
                Ok(())
            })?;
            let mut res = Vec::new();
            if n == 1 {
                for si in order {
                    res.push(Series {
                        labels: input[si].labels.clone(),
                        drop_name: input[si].drop_name,
                        pts: std::mem::take(&mut outs[si]),
                    });
                }
            } else {
                for (si, pts) in outs.into_iter().enumerate() {
                    if !pts.is_empty() {
                        res.push(Series {
                            labels: input[si].labels.clone(),
                            drop_name: input[si].drop_name,
                            pts,
                        });
                    }
                }
            }
            return Ok(Val::Vector(res));
        }

        if op == T_COUNT_VALUES {
            let label = count_label.unwrap_or_default();
            let mut out = Out::default();
            for_each_step(self.stop, &input, ctx, |_, t, samples| {
                let mut counts: Vec<(Labels, f64)> = Vec::new();
                let mut cidx: HashMap<Labels, usize> = HashMap::new();
                for &(si, x) in samples {
                    let l = groups[member[si]].0.with(&label, &f::format_float_f(x));
                    match cidx.get(&l) {
                        Some(&c) => counts[c].1 += 1.0,
                        None => {
                            cidx.insert(l.clone(), counts.len());
                            counts.push((l, 1.0));
                        }
                    }
                }
                for (l, c) in counts {
                    out.push(l, false, t, c)?;
                }
                Ok(())
            })?;
            return Ok(Val::Vector(out.finish()));
        }

        #[derive(Clone, Default)]
        struct G {
            n: f64,
            v: f64,
            c: f64,
            mean: f64,
            m: f::MeanAcc,
            vals: Vec<f64>,
        }
        let mut out: Vec<Series> = groups
            .iter()
            .map(|(l, d)| Series {
                labels: l.clone(),
                drop_name: *d,
                pts: Vec::new(),
            })
            .collect();
        let mut st: Vec<G> = vec![G::default(); ng];
        for_each_step(self.stop, &input, ctx, |i, t, samples| {
            for g in st.iter_mut() {
                g.n = 0.0;
                g.v = 0.0;
                g.c = 0.0;
                g.mean = 0.0;
                g.m = f::MeanAcc::default();
                g.vals.clear();
            }
            for &(si, x) in samples {
                let g = &mut st[member[si]];
                let first = g.n == 0.0;
                g.n += 1.0;
                match op {
                    T_SUM => (g.v, g.c) = f::kahan_inc(x, g.v, g.c),
                    T_AVG => g.m.add(x),
                    T_MIN if first || g.v > x || g.v.is_nan() => g.v = x,
                    T_MAX if first || g.v < x || g.v.is_nan() => g.v = x,
                    T_STDDEV | T_STDVAR => {
                        let delta = x - g.mean;
                        g.mean += delta / g.n;
                        g.v += delta * (x - g.mean);
                    }
                    T_QUANTILE => g.vals.push(x),
                    _ => {}
                }
            }
            for (gi, g) in st.iter_mut().enumerate() {
                if g.n == 0.0 {
                    continue;
                }
                let v = match op {
                    T_SUM => g.v + g.c,
                    T_AVG => g.m.value(),
                    T_COUNT => g.n,
                    T_GROUP => 1.0,
                    T_MIN | T_MAX => g.v,
                    T_STDVAR => g.v / g.n,
                    T_STDDEV => (g.v / g.n).sqrt(),
                    T_QUANTILE => f::quantile(param[i], &mut g.vals),
                    _ => return exec(format!("unsupported aggregation {}", a.op)),
                };
                out[gi].pts.push((t, v));
            }
            Ok(())
        })?;
        out.retain(|s| !s.pts.is_empty());
        self.check_series(&out)?;
        Ok(Val::Vector(out))
    }

    // --------------------------------------------------------------- binary

    fn eval_binary(&mut self, b: &BinaryExpr, ctx: Ctx) -> Result<Val> {
        let op = b.op.id();
        let return_bool = b.modifier.as_ref().map(|m| m.return_bool).unwrap_or(false);
        if let Some(m) = &b.modifier {
            if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                return exec("fill modifiers are not supported");
            }
        }
        let lhs = self.eval(&b.lhs, ctx)?;
        let rhs = self.eval(&b.rhs, ctx)?;
        let is_cmp = matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE);
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let v = l
                    .iter()
                    .zip(r.iter())
                    .map(|(&x, &y)| {
                        let (v, keep) = elem_binop(op, x, y);
                        if is_cmp {
                            if keep {
                                1.0
                            } else {
                                0.0
                            }
                        } else {
                            v
                        }
                    })
                    .collect();
                Ok(Val::Scalar(v))
            }
            (Val::Vector(mut v), Val::Scalar(s)) | (Val::Scalar(s), Val::Vector(mut v))
                if !matches!(op, T_LAND | T_LOR | T_LUNLESS) =>
            {
                let swap = is_scalar_expr(&b.lhs);
                for ser in &mut v {
                    if !is_cmp || return_bool {
                        ser.drop_name = true;
                    }
                    ser.pts.retain_mut(|p| {
                        let i = ((p.0 - ctx.start) / ctx.step) as usize;
                        let (l, r) = if swap { (s[i], p.1) } else { (p.1, s[i]) };
                        let (mut val, keep) = elem_binop(op, l, r);
                        if is_cmp && swap {
                            val = r;
                        }
                        if return_bool {
                            p.1 = if keep { 1.0 } else { 0.0 };
                            true
                        } else if !keep {
                            false
                        } else {
                            p.1 = val;
                            true
                        }
                    });
                }
                v.retain(|s| !s.pts.is_empty());
                Ok(Val::Vector(v))
            }
            (Val::Vector(l), Val::Vector(r)) => self.vector_binop(b, op, return_bool, l, r, ctx),
            _ => exec("invalid operand types for binary operation"),
        }
    }

    fn vector_binop(
        &mut self,
        b: &BinaryExpr,
        op: TokenId,
        return_bool: bool,
        lhs: Vec<Series>,
        rhs: Vec<Series>,
        ctx: Ctx,
    ) -> Result<Val> {
        let (on, names): (bool, Vec<String>) =
            match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                None => (false, vec![]),
            };
        let card = b
            .modifier
            .as_ref()
            .map(|m| m.card.clone())
            .unwrap_or(VectorMatchCardinality::OneToOne);
        let sig = |l: &Labels| -> String {
            let mut s = String::new();
            for lab in l.iter() {
                let inc = if on {
                    names.iter().any(|n| **n == *lab.name)
                } else {
                    &*lab.name != METRIC_NAME && !names.iter().any(|n| **n == *lab.name)
                };
                if inc {
                    s.push_str(&lab.name);
                    s.push('\u{ff}');
                    s.push_str(&lab.value);
                    s.push('\u{ff}');
                }
            }
            s
        };
        let lsig: Vec<String> = lhs.iter().map(|s| sig(&s.labels)).collect();
        let rsig: Vec<String> = rhs.iter().map(|s| sig(&s.labels)).collect();
        let n = ctx.n();
        // per-step sample lists
        let lsteps = step_lists(&lhs, ctx);
        let rsteps = step_lists(&rhs, ctx);
        let mut out = Out::default();

        if matches!(op, T_LAND | T_LOR | T_LUNLESS) {
            let mut lslot: Vec<Option<usize>> = vec![None; lhs.len()];
            let mut rslot: Vec<Option<usize>> = vec![None; rhs.len()];
            for i in 0..n {
                self.check_time()?;
                let t = ctx.ts(i);
                match op {
                    T_LAND | T_LUNLESS => {
                        let rs: HashSet<&str> =
                            rsteps[i].iter().map(|&(si, _)| rsig[si].as_str()).collect();
                        for &(si, x) in &lsteps[i] {
                            let found = rs.contains(lsig[si].as_str());
                            if found == (op == T_LAND) {
                                let slot = *lslot[si].get_or_insert_with(|| {
                                    out.slot(lhs[si].labels.clone(), lhs[si].drop_name)
                                });
                                out.push_at(slot, t, x)?;
                            }
                        }
                    }
                    _ => {
                        let mut ls: HashSet<&str> = HashSet::new();
                        for &(si, x) in &lsteps[i] {
                            ls.insert(lsig[si].as_str());
                            let slot = *lslot[si].get_or_insert_with(|| {
                                out.slot(lhs[si].labels.clone(), lhs[si].drop_name)
                            });
                            out.push_at(slot, t, x)?;
                        }
                        for &(si, x) in &rsteps[i] {
                            if ls.contains(rsig[si].as_str()) {
                                continue;
                            }
                            let slot = *rslot[si].get_or_insert_with(|| {
                                out.slot(rhs[si].labels.clone(), rhs[si].drop_name)
                            });
                            out.push_at(slot, t, x)?;
                        }
                    }
                }
            }
            let res = out.finish();
            self.check_series(&res)?;
            return Ok(Val::Vector(res));
        }

        let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
        let include: Option<Vec<String>> = match &card {
            VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => {
                Some(l.labels.clone())
            }
            _ => None,
        };
        let one_to_one = include.is_none();
        let (many, one, msig, osig, msteps, osteps) = if one_to_many {
            (&rhs, &lhs, &rsig, &lsig, &rsteps, &lsteps)
        } else {
            (&lhs, &rhs, &lsig, &rsig, &lsteps, &rsteps)
        };
        let drop_for_op =
            return_bool || !matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE);
        let mut pair_slot: HashMap<(usize, usize), usize> = HashMap::new();
        for i in 0..n {
            self.check_time()?;
            let t = ctx.ts(i);
            if msteps[i].is_empty() || osteps[i].is_empty() {
                continue;
            }
            let mut omap: HashMap<&str, (usize, f64)> = HashMap::new();
            for &(si, x) in &osteps[i] {
                if let Some(&(dup, _)) = omap.get(osig[si].as_str()) {
                    let side = if one_to_many { "left" } else { "right" };
                    let ml = match_labels(&one[si].labels, on, &names);
                    let (a, b) = if one[si].labels <= one[dup].labels {
                        (si, dup)
                    } else {
                        (dup, si)
                    };
                    return exec(format!(
                        "found duplicate series for the match group {} on the {} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                        ml, side, one[a].labels, one[b].labels
                    ));
                }
                omap.insert(osig[si].as_str(), (si, x));
            }
            let mut matched: HashMap<&str, HashSet<usize>> = HashMap::new();
            for &(mi, mv) in &msteps[i] {
                let Some(&(oi, ov)) = omap.get(msig[mi].as_str()) else {
                    continue;
                };
                if one_to_one {
                    let set = matched.entry(msig[mi].as_str()).or_default();
                    if !set.is_empty() {
                        return exec("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)");
                    }
                    set.insert(usize::MAX);
                }
                let (fl, fr) = if one_to_many { (ov, mv) } else { (mv, ov) };
                let (mut val, keep) = elem_binop(op, fl, fr);
                if return_bool {
                    val = if keep { 1.0 } else { 0.0 };
                } else if !keep {
                    continue;
                }
                let slot = match pair_slot.get(&(mi, oi)) {
                    Some(&s) => s,
                    None => {
                        let ml = &many[mi].labels;
                        let mut l = ml.clone();
                        if one_to_one {
                            if on {
                                let keep: Vec<(&str, &str)> = ml
                                    .iter()
                                    .filter(|x| names.iter().any(|n| **n == *x.name))
                                    .map(|x| (&*x.name, &*x.value))
                                    .collect();
                                l = Labels::from_pairs(keep);
                            } else {
                                let ex: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                                l = l.without(&ex);
                            }
                        }
                        if let Some(inc) = &include {
                            for ln in inc {
                                let v = one[oi].labels.get(ln).unwrap_or("");
                                l = l.with(ln, v);
                            }
                        }
                        let drop =
                            (drop_for_op || many[mi].drop_name) && l.get(METRIC_NAME).is_some();
                        let s = out.slot(l, drop);
                        pair_slot.insert((mi, oi), s);
                        s
                    }
                };
                let set = matched.entry(msig[mi].as_str()).or_default();
                if !one_to_one && !set.insert(slot) {
                    return exec(
                        "multiple matches for labels: grouping labels must ensure unique matches",
                    );
                }
                out.push_at(slot, t, val)?;
            }
        }
        let res = out.finish();
        self.check_series(&res)?;
        Ok(Val::Vector(res))
    }
}

fn step_lists(series: &[Series], ctx: Ctx) -> Vec<Vec<(usize, f64)>> {
    let mut v = vec![Vec::new(); ctx.n()];
    for (si, s) in series.iter().enumerate() {
        for &(t, x) in &s.pts {
            v[((t - ctx.start) / ctx.step) as usize].push((si, x));
        }
    }
    v
}

fn match_labels(l: &Labels, on: bool, names: &[String]) -> Labels {
    let pairs: Vec<(&str, &str)> = l
        .iter()
        .filter(|x| {
            let listed = names.iter().any(|n| **n == *x.name);
            if on {
                listed
            } else {
                !listed && &*x.name != METRIC_NAME
            }
        })
        .map(|x| (&*x.name, &*x.value))
        .collect();
    Labels::from_pairs(pairs)
}

fn is_scalar_expr(e: &Expr) -> bool {
    use promql_parser::parser::value::ValueType;
    e.value_type() == ValueType::Scalar
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Prometheus's `vectorElemBinop` for floats: (value, keep).
pub fn elem_binop(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

fn valid_label_name(s: &str) -> bool {
    // Prometheus 3.x accepts any valid UTF-8 non-empty label name
    !s.is_empty() && !s.contains('\u{fffd}')
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// A stable per-series number in [0, 1) for `limit_ratio`.
fn ratio_hash(l: &Labels) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    l.hash(&mut h);
    (h.finish() as f64) / (u64::MAX as f64 + 1.0)
}

fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let mut set: Vec<(String, String)> = Vec::new();
    let mut has: HashSet<String> = HashSet::new();
    let ms: Vec<&PMatcher> = vs.matchers.matchers.iter().collect();
    for m in ms {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, PMatchOp::Equal) && !has.contains(&m.name) {
            set.retain(|(n, _)| *n != m.name);
            set.push((m.name.clone(), m.value.clone()));
            has.insert(m.name.clone());
        } else {
            set.retain(|(n, _)| *n != m.name);
        }
    }
    Labels::from_pairs(set)
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
