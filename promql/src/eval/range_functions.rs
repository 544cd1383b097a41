//! Functions over a range vector (`rate`, `*_over_time`, …), evaluated per series
//! over each step's window, optionally straight into an aggregation's cells.

use std::collections::HashSet;

use promql_parser::parser::Expr;
use strata_tsdb::labels::{Labels, METRIC_NAME};

use crate::functions as f;
use crate::QueryError;

use super::aggregate::CellAgg;
use super::calls::absent_labels;
use super::{
    drop_name_labels, exec, unwrap_parens, Ctx, Evaluator, HPoint, Result, Series, Val, Windows,
};
use crate::histogram as hist;
use crate::FloatHistogram;

/// A range function's value over a window holding histogram samples.
enum HistOut {
    F(f64),
    H(FloatHistogram),
    /// A function on floats only: computed on the window's floats, if any.
    Floats,
}

enum HistKind {
    /// Defined on histograms (or on both kinds): `hist_window` answers.
    Histograms,
    /// Histograms are ignored: the float computation runs on the floats.
    FloatsOnly,
}

fn hist_window_kind(name: &str) -> HistKind {
    match name {
        "count_over_time"
        | "present_over_time"
        | "last_over_time"
        | "first_over_time"
        | "ts_of_last_over_time"
        | "ts_of_first_over_time"
        | "changes"
        | "resets"
        | "irate"
        | "idelta"
        | "rate"
        | "increase"
        | "delta"
        | "sum_over_time"
        | "avg_over_time" => HistKind::Histograms,
        _ => HistKind::FloatsOnly,
    }
}

/// `name` over a window with histogram samples `hw` (and floats `w`): what Prometheus
/// defines for histograms; `None` where it gives no result (mixed samples where a
/// function needs one kind, functions defined on floats only).
fn hist_window(
    name: &str,
    w: &[(i64, f64)],
    hw: &[HPoint],
    end: i64,
    range: i64,
    metric: &str,
    annos: &mut super::Annotations,
) -> Option<HistOut> {
    use strata_tsdb::histogram::CounterResetHint as H;
    let mixed = !w.is_empty();
    let last_h = &hw[hw.len() - 1];
    let first_h = &hw[0];
    match name {
        "count_over_time" => Some(HistOut::F((w.len() + hw.len()) as f64)),
        "present_over_time" => Some(HistOut::F(1.0)),
        "last_over_time" => match w.last() {
            Some(f) if f.0 > last_h.0 => Some(HistOut::F(f.1)),
            _ => Some(HistOut::H(last_h.1.clone())),
        },
        "first_over_time" => match w.first() {
            Some(f) if f.0 < first_h.0 => Some(HistOut::F(f.1)),
            _ => Some(HistOut::H(first_h.1.clone())),
        },
        "ts_of_last_over_time" => {
            let t = w.last().map_or(last_h.0, |f| f.0.max(last_h.0));
            Some(HistOut::F(t as f64 / 1000.0))
        }
        "ts_of_first_over_time" => {
            let t = w.first().map_or(first_h.0, |f| f.0.min(first_h.0));
            Some(HistOut::F(t as f64 / 1000.0))
        }
        "changes" | "resets" => {
            // Floats and histograms in time order; a change of kind counts as both.
            let mut all: Vec<(i64, Option<f64>, Option<&FloatHistogram>)> = w
                .iter()
                .map(|p| (p.0, Some(p.1), None))
                .chain(hw.iter().map(|p| (p.0, None, Some(&p.1))))
                .collect();
            all.sort_by_key(|p| p.0);
            let mut n = 0;
            for pair in all.windows(2) {
                let hit = match (pair[0], pair[1]) {
                    ((_, Some(a), _), (_, Some(b), _)) => {
                        if name == "changes" {
                            a != b && !(a.is_nan() && b.is_nan())
                        } else {
                            b < a
                        }
                    }
                    ((_, _, Some(a)), (_, _, Some(b))) => {
                        if name == "changes" {
                            !super::binary::hist_equals(a, b)
                        } else {
                            hist::detect_reset(b, a)
                        }
                    }
                    _ => true,
                };
                n += hit as usize;
            }
            Some(HistOut::F(n as f64))
        }
        "irate" | "idelta" => {
            // The last two samples, whatever their kind.
            let is_rate = name == "irate";
            let mut last: Vec<(i64, Option<f64>, Option<&HPoint>)> = w
                .iter()
                .rev()
                .take(2)
                .map(|p| (p.0, Some(p.1), None))
                .chain(hw.iter().rev().take(2).map(|p| (p.0, None, Some(p))))
                .collect();
            last.sort_by_key(|p| p.0);
            if last.len() < 2 {
                return None;
            }
            let (a, b) = (last[last.len() - 2], last[last.len() - 1]);
            match (a, b) {
                ((ta, Some(x), _), (tb, Some(y), _)) => {
                    crate::functions::instant_value(&[(ta, x), (tb, y)], is_rate).map(HistOut::F)
                }
                ((_, _, Some(p)), (_, _, Some(l))) => {
                    let gauge = |h: &FloatHistogram| h.counter_reset_hint == H::Gauge;
                    if is_rate && (gauge(&p.1) || gauge(&l.1)) {
                        annos.warn(super::anno::not_counter(metric));
                    }
                    if !(is_rate || gauge(&p.1) && gauge(&l.1)) {
                        annos.warn(super::anno::not_gauge(metric));
                    }
                    if !(is_rate && hist::detect_reset(&l.1, &p.1)) {
                        match hist::combine(&l.1, &p.1, true) {
                            Err(_) => {
                                annos.warn(super::anno::mixed_exponential_custom(metric));
                                return None;
                            }
                            Ok((_, info)) if info.custom_reconciled => {
                                annos.info(super::anno::mismatched_custom_buckets("subtraction"));
                            }
                            Ok(_) => {}
                        }
                    }
                    hist::instant_value(p, l, is_rate).map(HistOut::H)
                }
                _ => {
                    annos.warn(super::anno::mixed_floats_histograms(metric));
                    None
                }
            }
        }
        "rate" | "increase" | "delta" | "sum_over_time" | "avg_over_time" if mixed => {
            annos.warn(super::anno::mixed_floats_histograms(metric));
            None
        }
        "rate" | "increase" | "delta" => {
            let counter = name != "delta";
            if hw.len() >= 2 {
                let (first, last) = (&hw[0].1, &last_h.1);
                if counter && hw.iter().any(|p| p.1.counter_reset_hint == H::Gauge) {
                    annos.warn(super::anno::not_counter(metric));
                }
                if !counter
                    && (first.counter_reset_hint != H::Gauge || last.counter_reset_hint != H::Gauge)
                {
                    annos.warn(super::anno::not_gauge(metric));
                }
            }
            let mut notes = hist::RateNotes::default();
            let r = hist::extrapolated_rate(hw, end, range, counter, name == "rate", &mut notes);
            if r.is_none() && hw.len() >= 2 {
                annos.warn(super::anno::mixed_exponential_custom(metric));
            }
            for (done, operation) in [
                (notes.sub_reconciled, "subtraction"),
                (notes.add_reconciled, "addition"),
            ] {
                if done && r.is_some() {
                    annos.info(super::anno::mismatched_custom_buckets(operation));
                }
            }
            r.map(HistOut::H)
        }
        "sum_over_time" | "avg_over_time" => {
            let hs: Vec<&FloatHistogram> = hw.iter().map(|p| &p.1).collect();
            super::aggregate::note_sum(&hs, annos);
            if name == "sum_over_time" {
                hist::sum_of(hs.into_iter(), false).map(HistOut::H)
            } else {
                hist::mean_of(&hs).map(HistOut::H)
            }
        }
        _ => {
            if mixed {
                annos.info(super::anno::ignored_in_mixed_range(metric));
            }
            Some(HistOut::Floats)
        }
    }
}

impl Evaluator<'_> {
    /// Functions over a range vector; `None` when `name` is not one.
    pub(super) fn eval_range_function(
        &mut self,
        name: &str,
        args: &[&Expr],
        ctx: Ctx,
    ) -> Result<Option<Val>> {
        Ok(self
            .eval_range_function_into(name, args, ctx, None)?
            .map(|(v, _)| v))
    }

    /// [`Self::eval_range_function`]; with `agg`, each series' result goes into it
    /// instead of the returned vector when the groups fit (the `bool`: they did).
    pub(super) fn eval_range_function_into(
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
        if name == "quantile_over_time" {
            if let Some(&bad) = params[0].iter().find(|x| !(0.0..=1.0).contains(*x)) {
                self.warn(super::anno::invalid_quantile(bad));
            }
        }
        let rd = self.eval_range(args[range_idx], ctx, Some(name))?;
        let n = ctx.n();
        if name == "absent_over_time" {
            // Steps where some series has a sample in its window, one series at a time.
            let mut present = vec![false; n];
            let mut buf = Vec::new();
            let mut held = 0;
            for s in &rd.series {
                self.check_time()?;
                let pts = self.load_range(&rd, s, &mut buf)?;
                held += pts.len();
                let mut windows = Windows::default();
                for (i, p) in present.iter_mut().enumerate() {
                    *p |= !windows.next(pts, rd.refs[i], rd.range).is_empty();
                }
                if s.has_hists() {
                    let mut hbuf = Vec::new();
                    let hs = self.load_range_hists(&rd, s, &mut hbuf)?;
                    let mut windows = Windows::default();
                    for (i, p) in present.iter_mut().enumerate() {
                        *p |= !windows.next(hs, rd.refs[i], rd.range).is_empty();
                    }
                }
            }
            if rd.selector {
                self.note_held(held);
            }
            let pts: Vec<(i64, f64)> = (0..n)
                .filter(|&i| !present[i])
                .map(|i| (ctx.ts(i), 1.0))
                .collect();
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
                    hists: Vec::new(),
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
        // Aggregation cells hold floats: histogram results take the usual way.
        if rd.series.iter().any(|s| s.has_hists()) {
            agg = None;
        }
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
        // Without delayed name removal the name goes here, and two series whose results
        // share a label set fail, whatever their steps (Prometheus checks the whole
        // result matrix of a range-vector function): one label set per series answered.
        let mut answered: Option<HashSet<Labels>> = (!self.delayed_names).then(HashSet::new);
        // Prometheus's count: the outputs of the series done so far plus the window of
        // the series being evaluated (its points are dropped before the next series).
        let mut total = 0usize;
        let mut buf: Vec<f64> = Vec::new();
        // One series decoded at a time into `raw`, reused for the next.
        let mut raw: Vec<(i64, f64)> = Vec::new();
        let mut held = 0;
        let mut hraw: Vec<HPoint> = Vec::new();
        for s in &rd.series {
            self.check_time()?;
            let mut pts = Vec::new();
            let mut hout: Vec<HPoint> = Vec::new();
            let mut windows = Windows::default();
            let mut hwindows = Windows::default();
            let res = s.res;
            let hs: &[HPoint] = if s.has_hists() {
                let h = self.load_range_hists(&rd, s, &mut hraw)?;
                held += h.len();
                h
            } else {
                &[]
            };
            let samples = self.load_range(&rd, s, &mut raw)?;
            held += samples.len();
            let s_pts = samples;
            if matches!(name, "rate" | "increase") && !s_pts.is_empty() && !s.drop_name {
                if let Some(m) = s.labels.get(METRIC_NAME) {
                    if !["_total", "_sum", "_count", "_bucket"]
                        .iter()
                        .any(|x| m.ends_with(x))
                    {
                        self.info(super::anno::possible_non_counter(m));
                    }
                }
            }
            // A reset found nowhere in the series is in no window: each window's scan
            // for one is skipped (most counters never reset within a query).
            let may_reset = matches!(name, "rate" | "increase") && f::has_resets(s_pts);
            // `i` is the step: it indexes the refs, the parameters and the step times
            #[allow(clippy::needless_range_loop)]
            for i in 0..n {
                if i % 64 == 63 {
                    self.check_time()?;
                }
                let w = windows.next(s_pts, rd.refs[i], rd.range);
                if !hs.is_empty() {
                    let hw = hwindows.next(hs, rd.refs[i], rd.range);
                    if !hw.is_empty() {
                        if total + hw.len() > self.max_samples {
                            return Err(QueryError::TooManySamples);
                        }
                        let metric = s.labels.get(METRIC_NAME).unwrap_or("");
                        let r = {
                            let mut annos = self.annos.borrow_mut();
                            hist_window(name, w, hw, rd.refs[i], rd.range, metric, &mut annos)
                        };
                        match r {
                            Some(HistOut::F(v)) => pts.push((ctx.ts(i), v)),
                            Some(HistOut::H(h)) => hout.push((ctx.ts(i), h)),
                            // Histograms ignored: on to the floats below.
                            Some(HistOut::Floats) => {}
                            None => {}
                        }
                        if !matches!(hist_window_kind(name), HistKind::FloatsOnly) {
                            continue;
                        }
                    }
                }
                if w.is_empty() {
                    continue;
                }
                // The point before the window, for rates over downsampled data.
                let before = || windows.lo.checked_sub(1).map(|j| s_pts[j]);
                if total + w.len() > self.max_samples {
                    return Err(QueryError::TooManySamples);
                }
                let vals = || w.iter().map(|p| p.1);
                let r: Option<f64> = match name {
                    "rate" | "increase" if res > 0 => {
                        f::downsampled_rate(before(), w, rd.refs[i], rd.range, res, name == "rate")
                    }
                    "rate" => {
                        f::extrapolated_rate_with(w, rd.refs[i], rd.range, true, may_reset, true)
                    }
                    "increase" => {
                        f::extrapolated_rate_with(w, rd.refs[i], rd.range, true, may_reset, false)
                    }
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
            if !pts.is_empty() || !hout.is_empty() {
                total += pts.len() + hout.len();
                self.check_samples(total)?;
                let mut drop_name = s.drop_name || !keep_name;
                let dropped;
                let labels = match &mut answered {
                    Some(answered) => {
                        dropped = if drop_name {
                            drop_name_labels(&s.labels)
                        } else {
                            s.labels.clone()
                        };
                        drop_name = false;
                        if !answered.insert(dropped.clone()) {
                            return exec("vector cannot contain metrics with the same labelset");
                        }
                        &dropped
                    }
                    None => &s.labels,
                };
                match agg.as_deref_mut() {
                    Some(acc) => acc.add(labels, drop_name, &pts),
                    None => out.push(Series {
                        labels: labels.clone(),
                        drop_name,
                        pts,
                        hists: hout,
                    }),
                }
            }
        }
        if rd.selector {
            self.note_held(held);
        }
        Ok(Some((Val::Vector(out), streamed)))
    }
}
