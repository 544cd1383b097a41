//! Selectors: matchers, storage reads with hints, instant-vector selectors at
//! each step, range-vector selectors and subqueries.

use std::collections::HashSet;

use promql_parser::label::{MatchOp as PMatchOp, Matcher as PMatcher};
use promql_parser::parser::{Expr, SubqueryExpr, VectorSelector};
use strata_tsdb::labels::{Labels, METRIC_NAME};
use strata_tsdb::matcher::{MatchOp, Matcher};

use crate::{QueryError, SelectHints};

use super::{
    exec, gallop, is_stale, is_stale_hist, unwrap_parens, Ctx, Evaluator, HPoint, RangeData,
    RawSeries, Result, Series,
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

    /// The series of a selector in `[mint, maxt]`, sorted by labels, samples left
    /// encoded where storage allows ([`RawSeries::load`] decodes one). A downsampled
    /// series keeps one window before `mint`: `rate` measures from it.
    fn select_raw(
        &mut self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
        drop_stale: bool,
    ) -> Result<Vec<RawSeries>> {
        let sets = self.matcher_sets(vs)?;
        let several = sets.len() > 1;
        // Only several matcher sets can return a series twice; one set needs no map
        // (with 100k series the map's hashing was a tenth of a query).
        let mut seen: HashSet<Labels> = HashSet::new();
        let mut out: Vec<RawSeries> = Vec::new();
        for ms in sets {
            for s in self.storage.select_lazy(&ms, mint, maxt, hints)? {
                if several && !seen.insert(s.labels.clone()) {
                    continue;
                }
                let res = s.resolution.max(0);
                out.push(RawSeries {
                    labels: s.labels,
                    drop_name: false,
                    samples: s.samples,
                    histograms: s.histograms,
                    lo: mint.saturating_sub(res),
                    hi: maxt,
                    drop_stale,
                    res,
                    stats_hints: self.hist_stats.decodes_stats(),
                });
            }
        }
        if several || !out.windows(2).all(|w| w[0].labels < w[1].labels) {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        Ok(out)
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
        raw: Vec<RawSeries>,
        refs: &[i64],
        ctx: Ctx,
        ts_mode: bool,
    ) -> Result<Vec<Series>> {
        let mut out = Vec::with_capacity(raw.len());
        let mut total = 0;
        let mut buf = Vec::new();
        let mut hbuf = Vec::new();
        for s in raw {
            self.check_time()?;
            let mut pts = Vec::new();
            let mut hists = Vec::new();
            if s.has_hists() {
                let hs = s.load_hists(&mut hbuf)?;
                self.steps_of_mixed(
                    s.load(&mut buf)?,
                    hs,
                    refs,
                    ctx,
                    ts_mode,
                    &mut pts,
                    &mut hists,
                );
            } else {
                let pts_in = self.load_for_steps(&s, &mut buf, refs)?;
                self.steps_of(pts_in, refs, ctx, ts_mode, &mut pts);
            }
            if !pts.is_empty() || !hists.is_empty() {
                let n = pts.len() + hists.len();
                total += n;
                self.queryable += n as u64;
                self.check_samples(total)?;
                out.push(Series {
                    labels: s.labels,
                    drop_name: false,
                    pts,
                    hists,
                });
            }
        }
        Ok(out)
    }

    /// The float samples of `s` that [`Self::steps_of`] needs for steps at `refs`. When
    /// every step is at one time (an instant query, or `@`) a series' value is its
    /// newest sample in the lookback window, so storage decodes only that one.
    pub(super) fn load_for_steps<'s>(
        &self,
        s: &'s RawSeries,
        buf: &'s mut Vec<(i64, f64)>,
        refs: &[i64],
    ) -> Result<&'s [(i64, f64)]> {
        match refs.split_first() {
            Some((&r, rest)) if !s.drop_stale && rest.iter().all(|&x| x == r) => {
                let lo = r.saturating_sub(self.lookback).saturating_add(1);
                s.load_last(buf, lo, r)
            }
            _ => s.load(buf),
        }
    }

    /// The raw series an instant-vector selector reads over the context, and its
    /// reference time per step; `None` when there are no steps.
    pub(super) fn select_instant(
        &mut self,
        vs: &VectorSelector,
        ctx: Ctx,
        func: Option<&str>,
    ) -> Result<Option<(Vec<RawSeries>, Vec<i64>)>> {
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
        let raw = self.select_raw(vs, hints.start, hi, &hints, false)?;
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

    /// [`Self::steps_of`] for a series with float and histogram samples: at each step
    /// the later of the last float and the last histogram within the lookback.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn steps_of_mixed(
        &self,
        pts: &[(i64, f64)],
        hs: &[HPoint],
        refs: &[i64],
        ctx: Ctx,
        ts_mode: bool,
        out: &mut Vec<(i64, f64)>,
        hout: &mut Vec<HPoint>,
    ) {
        let (mut fi, mut hi, mut last_r) = (0usize, 0usize, i64::MIN);
        for (i, &r) in refs.iter().enumerate() {
            if r < last_r {
                fi = 0;
                hi = 0;
            }
            last_r = r;
            fi = gallop(pts, fi, |t| t <= r);
            hi = gallop(hs, hi, |t| t <= r);
            let f = fi.checked_sub(1).map(|j| &pts[j]);
            let h = hi.checked_sub(1).map(|j| &hs[j]);
            let take_hist = match (f, h) {
                (None, None) => continue,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(f), Some(h)) => h.0 > f.0,
            };
            if take_hist {
                let (t, hv) = h.expect("histogram chosen");
                if *t <= r.saturating_sub(self.lookback) || is_stale_hist(hv) {
                    continue;
                }
                if ts_mode {
                    out.push((ctx.ts(i), *t as f64 / 1000.0));
                } else {
                    hout.push((ctx.ts(i), hv.clone()));
                }
            } else {
                let (t, v) = *f.expect("float chosen");
                if t <= r.saturating_sub(self.lookback) || is_stale(v) {
                    continue;
                }
                out.push((ctx.ts(i), if ts_mode { t as f64 / 1000.0 } else { v }));
            }
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
                        selector: true,
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
                let series = self.select_raw(&ms.vs, hints.start, hi, &hints, true)?;
                Ok(RangeData {
                    series,
                    selector: true,
                    range,
                    refs,
                })
            }
            Expr::Subquery(sq) => {
                // a subquery's counter-reset detection needs whole histograms
                let outer = self.hist_stats;
                self.hist_stats.blocked = true;
                let r = self.eval_subquery(sq, ctx);
                self.hist_stats = outer;
                r
            }
            _ => exec("expected range vector"),
        }
    }

    fn eval_subquery(&mut self, sq: &SubqueryExpr, ctx: Ctx) -> Result<RangeData> {
        let range = sq.range.as_millis() as i64;
        let refs = self.refs(ctx, &sq.at, &sq.offset);
        if refs.is_empty() {
            return Ok(RangeData {
                series: vec![],
                selector: false,
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
        let mut series = if inner.n() == 0 {
            Vec::new()
        } else {
            self.eval_vector(&sq.expr, inner)?
        };
        // As Prometheus: a subquery's histograms are not consecutive samples, so their
        // (Not)CounterReset hints say nothing about them: reset detection starts over.
        for s in &mut series {
            for (_, h) in &mut s.hists {
                use strata_tsdb::histogram::CounterResetHint as H;
                if matches!(h.counter_reset_hint, H::CounterReset | H::NotCounterReset) {
                    h.counter_reset_hint = H::Unknown;
                }
            }
        }
        Ok(RangeData {
            series: series.into_iter().map(RawSeries::decoded).collect(),
            selector: false,
            range,
            refs,
        })
    }
}
