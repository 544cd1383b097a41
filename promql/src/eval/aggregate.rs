//! Aggregations (`sum`, `topk`, `count_values`, `quantile`, …): grouping, the
//! per-(group, step) cells for streaming `sum`/`avg`/`count`/`group`/`min`/`max`,
//! and the step-by-step path.

use std::collections::HashMap;

use promql_parser::parser::token::*;
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};
use strata_tsdb::labels::{Labels, METRIC_NAME};

use crate::functions as f;
use crate::FloatHistogram;

use super::{
    cmp_nan_last, exec, for_each_step, unwrap_parens, valid_label_name, Ctx, Evaluator, Out,
    RawSeries, Result, Series, Val,
};

/// The group of a series with `labels` under `by (names)` / `without (names)`, and
/// whether the group's name is to be dropped later.
fn group_key(labels: &Labels, drop_name: bool, by: bool, names: &[String]) -> (Labels, bool) {
    // The key is the series' own labels filtered (sorted already, symbols shared): no
    // copy of the whole set first, and nothing interned again. `without` always drops
    // the name; `by` keeps it only when listed, and then the series still owes its
    // delayed removal.
    let named = |l: &strata_tsdb::labels::Label| names.iter().any(|n| **n == *l.name);
    let key: Vec<_> = if by {
        labels.iter().filter(|l| named(l)).cloned().collect()
    } else {
        labels
            .iter()
            .filter(|l| &*l.name != METRIC_NAME && !named(l))
            .cloned()
            .collect()
    };
    let key = Labels::from_sorted_unchecked(key);
    let drop = by && drop_name && key.get(METRIC_NAME).is_some();
    (key, drop)
}

/// Most (group, step) cells a [`CellAgg`] allocates (≈40 bytes each).
const STREAM_CELLS: usize = 4 << 20;

/// `sum`/`avg`/`count`/`group`/`min`/`max` accumulated per (group, step) cell as series
/// arrive one by one, so they need not all be held at every step. Within a cell the
/// values are added in series order, as the step-by-step path adds them: the answer is
/// the same to the bit.
pub(super) struct CellAgg<'a> {
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
    pub(super) fn fits<'l>(&self, series: impl Iterator<Item = (&'l Labels, bool)>) -> bool {
        let keys: std::collections::HashSet<Labels> = series
            .map(|(l, d)| group_key(l, d, self.by, self.names).0)
            .collect();
        keys.len().saturating_mul(self.n) <= STREAM_CELLS
    }

    /// One series' points (at step times, in order).
    pub(super) fn add(&mut self, labels: &Labels, drop_name: bool, pts: &[(i64, f64)]) {
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
                hists: Vec::new(),
            });
        }
        out
    }
}

impl Evaluator<'_> {
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
        raw: Vec<RawSeries>,
        refs: &[i64],
        ctx: Ctx,
    ) -> Result<std::result::Result<Val, Vec<RawSeries>>> {
        let mut acc = CellAgg::new(op, by, names, ctx);
        // The cells hold floats: series with histogram samples go the step-by-step way.
        if raw.iter().any(|s| s.has_hists()) || !acc.fits(raw.iter().map(|s| (&s.labels, false))) {
            return Ok(Err(raw));
        }
        let mut pts = Vec::new();
        let mut buf = Vec::new();
        let mut total = 0usize;
        for s in raw {
            self.check_time()?;
            pts.clear();
            // One series decoded at a time into `buf`, dropped once in the cells.
            let pts_in = self.load_for_steps(&s, &mut buf, refs)?;
            self.steps_of(pts_in, refs, ctx, false, &mut pts);
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

    pub(super) fn eval_aggregate(&mut self, a: &AggregateExpr, ctx: Ctx) -> Result<Val> {
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
                if op == T_QUANTILE {
                    if let Some(&bad) = param.iter().find(|x| !(0.0..=1.0).contains(*x)) {
                        self.warn(super::anno::invalid_quantile(bad));
                    }
                }
            }
        }
        // grouping
        let (by, names): (bool, Vec<String>) = match &a.modifier {
            None => (true, vec![]),
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
        };
        let streamable = matches!(op, T_SUM | T_AVG | T_COUNT | T_GROUP | T_MIN | T_MAX);
        let mut input = match unwrap_parens(&a.expr) {
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

        if op == T_LIMITK && input.iter().any(|s| !s.hists.is_empty()) {
            // limitk keeps samples of either kind: the first k series (in input order)
            // of each group with a sample at the step.
            let mut taken = vec![0usize; ng];
            let mut res: Vec<Series> = input
                .iter()
                .map(|s| Series {
                    labels: s.labels.clone(),
                    drop_name: s.drop_name,
                    pts: Vec::new(),
                    hists: Vec::new(),
                })
                .collect();
            let (mut fc, mut hc) = (vec![0usize; input.len()], vec![0usize; input.len()]);
            for (i, &k) in param.iter().enumerate().take(n) {
                let t = ctx.ts(i);
                let k = if k < 1.0 { 0 } else { k as i64 as usize };
                taken.iter_mut().for_each(|x| *x = 0);
                for (si, s) in input.iter().enumerate() {
                    let f = s.pts.get(fc[si]).filter(|p| p.0 == t).copied();
                    let h = s.hists.get(hc[si]).filter(|p| p.0 == t);
                    if f.is_none() && h.is_none() {
                        continue;
                    }
                    let g = member[si];
                    let keep = taken[g] < k;
                    taken[g] += 1;
                    if let Some(p) = f {
                        fc[si] += 1;
                        if keep {
                            res[si].pts.push(p);
                        }
                    }
                    if let Some(p) = h {
                        hc[si] += 1;
                        if keep {
                            res[si].hists.push(p.clone());
                        }
                    }
                }
            }
            res.retain(|s| !s.is_empty());
            return Ok(Val::Vector(res));
        }

        // Histogram samples: counted by count/group, added up by sum/avg (apart from the
        // floats, see `merge_hists`), ignored by the others.
        let mut hist_groups: Vec<Vec<(i64, FloatHistogram)>> = Vec::new();
        // count_values: each histogram sample's value as Prometheus prints it, by step.
        let mut hist_values: HashMap<i64, Vec<(usize, String)>> = HashMap::new();
        if input.iter().any(|s| !s.hists.is_empty()) {
            match op {
                T_COUNT | T_GROUP => {
                    for s in &mut input {
                        if !s.hists.is_empty() {
                            let hs = std::mem::take(&mut s.hists);
                            s.pts.extend(hs.into_iter().map(|(t, _)| (t, 0.0)));
                            s.pts.sort_by_key(|p| p.0);
                        }
                    }
                }
                T_SUM | T_AVG => {
                    let mut annos = self.annos.borrow_mut();
                    hist_groups = sum_hists(&input, &member, ng, op == T_AVG, &mut annos);
                    for s in &mut input {
                        s.hists.clear();
                    }
                }
                _ => {
                    let what = match op {
                        T_MIN => "min",
                        T_MAX => "max",
                        T_TOPK => "topk",
                        T_BOTTOMK => "bottomk",
                        T_STDDEV => "stddev",
                        T_STDVAR => "stdvar",
                        T_QUANTILE => "quantile",
                        _ => "",
                    };
                    if !what.is_empty() {
                        self.info(super::anno::ignored_in_aggregation(what));
                    }
                    if op == T_COUNT_VALUES {
                        for (si, s) in input.iter().enumerate() {
                            for (t, h) in &s.hists {
                                hist_values
                                    .entry(*t)
                                    .or_default()
                                    .push((si, crate::histogram::to_go_string(h)));
                            }
                        }
                    }
                    for s in &mut input {
                        s.hists.clear();
                    }
                }
            }
        }

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
                            top_k(g, k, op == T_TOPK);
                            g.drain(..k).collect()
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
                        hists: Vec::new(),
                    });
                }
            } else {
                for (si, pts) in outs.into_iter().enumerate() {
                    if !pts.is_empty() {
                        res.push(Series {
                            labels: input[si].labels.clone(),
                            drop_name: input[si].drop_name,
                            pts,
                            hists: Vec::new(),
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
                let hv = hist_values.get(&t).map(|v| v.as_slice()).unwrap_or(&[]);
                let values = samples
                    .iter()
                    .map(|&(si, x)| (si, f::format_float_f(x)))
                    .chain(hv.iter().cloned());
                for (si, x) in values {
                    let l = groups[member[si]].0.with(&label, &x);
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
                hists: Vec::new(),
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
        if !hist_groups.is_empty() {
            for (o, hs) in out.iter_mut().zip(hist_groups) {
                if merge_hists(o, hs) {
                    self.warn(super::anno::mixed_floats_histograms_aggregation());
                }
            }
        }
        out.retain(|s| !s.is_empty());
        self.check_series(&out)?;
        Ok(Val::Vector(out))
    }
}

/// Per group, the sum (or with `avg` the mean) of its histogram samples at each step;
/// a step where histograms with exponential and custom buckets meet has none.
fn sum_hists(
    input: &[Series],
    member: &[usize],
    ng: usize,
    avg: bool,
    annos: &mut super::Annotations,
) -> Vec<Vec<(i64, FloatHistogram)>> {
    use std::collections::BTreeMap;
    // Per group and step: the histograms in input order (None once exponential and
    // custom buckets meet).
    let mut acc: Vec<BTreeMap<i64, Option<Vec<&FloatHistogram>>>> = vec![BTreeMap::new(); ng];
    for (si, s) in input.iter().enumerate() {
        for (t, h) in &s.hists {
            let cell = acc[member[si]]
                .entry(*t)
                .or_insert_with(|| Some(Vec::new()));
            if let Some(v) = cell {
                if v.first().is_some_and(|f| {
                    crate::histogram::uses_custom(f) != crate::histogram::uses_custom(h)
                }) {
                    annos.warn(super::anno::mixed_exponential_custom(""));
                    *cell = None;
                } else {
                    v.push(h);
                }
            }
        }
    }
    acc.into_iter()
        .map(|g| {
            g.into_iter()
                .filter_map(|(t, c)| {
                    let hs = c?;
                    note_sum(&hs, annos);
                    let h = if avg {
                        crate::histogram::mean_of(&hs)?
                    } else {
                        crate::histogram::sum_of(hs.iter().copied(), false)?
                    };
                    Some((t, h))
                })
                .collect()
        })
        .collect()
}

/// Adds a group's histogram results to its float results; a step with both has neither
/// (Prometheus drops a group mixing floats and histograms).
fn merge_hists(o: &mut Series, hs: Vec<(i64, FloatHistogram)>) -> bool {
    if hs.is_empty() {
        return false;
    }
    let mut clash = std::collections::HashSet::new();
    for (t, h) in hs {
        if o.pts.binary_search_by_key(&t, |p| p.0).is_ok() {
            clash.insert(t);
        } else {
            o.hists.push((t, h));
        }
    }
    if !clash.is_empty() {
        o.pts.retain(|p| !clash.contains(&p.0));
    }
    !clash.is_empty()
}

/// Puts the `k` first of `g` in `topk` (`top`) or `bottomk` order at its front, in
/// that order (the rest of `g` is left unspecified); ties keep input order (series
/// index), NaN last. A partial selection (O(n)) and a sort of the `k` picked, not a
/// sort of the whole group per step.
fn top_k(g: &mut [(usize, f64)], k: usize, top: bool) {
    let cmp = |a: &(usize, f64), b: &(usize, f64)| cmp_nan_last(a.1, b.1, top).then(a.0.cmp(&b.0));
    if k == 0 {
        return;
    }
    if k <= SMALL_K && k < g.len() {
        // One pass keeping the k best in order: most candidates lose to the k-th
        // with one comparison, where a selection moves every element around.
        let mut best: [(usize, f64); SMALL_K] = [(0, 0.0); SMALL_K];
        let mut n = 0;
        for &x in g.iter() {
            if n == k {
                if cmp(&x, &best[k - 1]).is_ge() {
                    continue;
                }
                n -= 1;
            }
            let at = best[..n].partition_point(|b| cmp(b, &x).is_lt());
            best.copy_within(at..n, at + 1);
            best[at] = x;
            n += 1;
        }
        g[..k].copy_from_slice(&best[..k]);
        return;
    }
    if k < g.len() {
        g.select_nth_unstable_by(k - 1, cmp);
    }
    g[..k].sort_unstable_by(cmp);
}

/// Up to this `k`, [`top_k`] keeps the best in a small sorted array.
const SMALL_K: usize = 16;

/// A stable per-series number in [0, 1) for `limit_ratio`.
fn ratio_hash(l: &Labels) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    l.hash(&mut h);
    (h.finish() as f64) / (u64::MAX as f64 + 1.0)
}

/// Annotations of a sum of histograms (aggregation or `*_over_time`): conflicting
/// counter-reset hints, custom bounds reconciled.
pub(super) fn note_sum(hs: &[&FloatHistogram], annos: &mut super::Annotations) {
    use strata_tsdb::histogram::CounterResetHint as H;
    // Prometheus tracks whether any input said reset and any said not-reset (gauges
    // and unknown hints aside)
    let hint = |x: H| hs.iter().any(|h| h.counter_reset_hint == x);
    if hint(H::CounterReset) && hint(H::NotCounterReset) {
        annos.warn(super::anno::counter_reset_collision("aggregation"));
    }
    if hs.first().is_some_and(|f| {
        crate::histogram::uses_custom(f) && hs.iter().any(|h| h.custom_values != f.custom_values)
    }) {
        annos.info(super::anno::mismatched_custom_buckets("aggregation"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The small-k pass and the selection pick what a full sort puts first, in its
    /// order, NaNs and ties (by series index) included.
    #[test]
    fn top_k_is_the_head_of_a_full_sort() {
        let mut seed = 7u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let len = 1 + (rnd() % 60) as usize;
            let g: Vec<(usize, f64)> = (0..len)
                .map(|i| {
                    let v = match rnd() % 8 {
                        0 => f64::NAN,
                        1 => 1.0, // ties
                        _ => (rnd() % 1000) as f64 - 500.0,
                    };
                    (i * 3 + round % 3, v)
                })
                .collect();
            for top in [true, false] {
                let mut want = g.clone();
                want.sort_by(|a, b| cmp_nan_last(a.1, b.1, top).then(a.0.cmp(&b.0)));
                for k in [1, 2, 5, SMALL_K, SMALL_K + 1, len] {
                    let k = k.min(len);
                    let mut got = g.clone();
                    top_k(&mut got, k, top);
                    let key = |v: &[(usize, f64)]| -> Vec<(usize, u64)> {
                        v.iter().map(|p| (p.0, p.1.to_bits())).collect()
                    };
                    assert_eq!(key(&got[..k]), key(&want[..k]), "k {k} top {top}");
                }
            }
        }
    }
}
