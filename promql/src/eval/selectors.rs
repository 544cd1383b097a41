//! Selectors: matchers, storage reads with hints, instant-vector selectors at
//! each step, range-vector selectors and subqueries.

use std::collections::HashMap;

use promql_parser::label::{MatchOp as PMatchOp, Matcher as PMatcher};
use promql_parser::parser::{Expr, SubqueryExpr, VectorSelector};
use strata_tsdb::labels::{Labels, METRIC_NAME};
use strata_tsdb::matcher::{MatchOp, Matcher};

use crate::{QueryError, SelectHints};

use super::{
    exec, gallop, is_stale, unwrap_parens, Ctx, Evaluator, RangeData, Result, Series, Windows,
};

impl Evaluator<'_> {
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
    pub(super) fn steps_of_all(
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
    pub(super) fn select_instant(
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
    pub(super) fn steps_of(
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

    pub(super) fn eval_range(
        &mut self,
        e: &Expr,
        ctx: Ctx,
        func: Option<&str>,
    ) -> Result<RangeData> {
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
}
