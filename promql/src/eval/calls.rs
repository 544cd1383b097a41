//! Function calls other than the range functions: `eval_call`'s dispatch,
//! `histogram_quantile`, `absent`'s labels.

use std::collections::{HashMap, HashSet};

use promql_parser::label::{MatchOp as PMatchOp, Matcher as PMatcher};
use promql_parser::parser::{Call, Expr};
use strata_tsdb::labels::{Labels, METRIC_NAME};

use crate::functions as f;
use crate::QueryError;

use super::{
    cmp_nan_last, exec, for_each_step, unwrap_parens, valid_label_name, Ctx, Evaluator, Out,
    Result, Series, Val,
};

impl Evaluator<'_> {
    pub(super) fn eval_call(&mut self, c: &Call, ctx: Ctx) -> Result<Val> {
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
                    hists: Vec::new(),
                }]));
            }
            "scalar" => {
                let v = self.eval_vector_floats(args[0], ctx)?;
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
                    if !s.hists.is_empty() {
                        s.pts
                            .extend(s.hists.drain(..).map(|(t, _)| (t, t as f64 / 1000.0)));
                        s.pts.sort_by_key(|p| p.0);
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
                let mut v = self.eval_vector_floats(args[0], ctx)?;
                for s in &mut v {
                    s.drop_name = true;
                    for p in &mut s.pts {
                        p.1 = func(p.1);
                    }
                }
                Ok(Val::Vector(v))
            }
            "round" | "clamp" | "clamp_min" | "clamp_max" => {
                let mut v = self.eval_vector_floats(args[0], ctx)?;
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
                        hists: Vec::new(),
                    }]));
                }
                let mut v = self.eval_vector_floats(args[0], ctx)?;
                for s in &mut v {
                    s.drop_name = true;
                    for p in &mut s.pts {
                        p.1 = f::date_fn(name, p.1);
                    }
                }
                Ok(Val::Vector(v))
            }
            "sort" | "sort_desc" => {
                if self.query_start != self.query_end {
                    self.warn(super::anno::sort_in_range_query());
                }
                let mut v = self.eval_vector_floats(args[0], ctx)?;
                // ordering only matters for instant queries: order series by their value
                let desc = name == "sort_desc";
                v.sort_by(|a, b| {
                    let first = |s: &Series| s.pts.first().map_or(f64::NAN, |p| p.1);
                    cmp_nan_last(first(a), first(b), desc)
                });
                Ok(Val::Vector(v))
            }
            "sort_by_label" | "sort_by_label_desc" => {
                if self.query_start != self.query_end {
                    self.warn(super::anno::sort_in_range_query());
                }
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
                    for (t, h) in s.hists {
                        out.push_hist_at(i, t, h)?;
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
                    for (t, h) in s.hists {
                        out.push_hist_at(i, t, h)?;
                    }
                }
                Ok(Val::Vector(out.finish()))
            }
            "absent" => {
                let v = self.eval_vector(args[0], ctx)?;
                let mut present = vec![false; n];
                for s in &v {
                    for t in s.pts.iter().map(|p| p.0).chain(s.hists.iter().map(|p| p.0)) {
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
                        hists: Vec::new(),
                    }]
                }))
            }
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
            | "histogram_stdvar" | "histogram_fraction" => {
                let (lo, hi) = if name == "histogram_fraction" {
                    (
                        self.eval_scalar(args[0], ctx)?,
                        self.eval_scalar(args[1], ctx)?,
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                let arg = if name == "histogram_fraction" {
                    args[2]
                } else {
                    args[0]
                };
                let mut v = self.eval_vector(arg, ctx)?;
                let mut out = Vec::new();
                if name == "histogram_fraction" && v.iter().any(|s| !s.pts.is_empty()) {
                    // Classic `le` buckets among the input.
                    let mut floats: Vec<Series> = v
                        .iter_mut()
                        .filter(|s| !s.pts.is_empty())
                        .map(|s| Series {
                            labels: s.labels.clone(),
                            drop_name: s.drop_name,
                            pts: std::mem::take(&mut s.pts),
                            hists: Vec::new(),
                        })
                        .collect();
                    let mut native: Vec<Series> = std::mem::take(&mut v)
                        .into_iter()
                        .filter(|s| !s.hists.is_empty())
                        .collect();
                    self.drop_mixed_classic_native(&mut native, &mut floats);
                    v = native;
                    out = self.classic_buckets(floats, ctx, |i, b| {
                        (f::bucket_fraction(lo[i], hi[i], b), false)
                    })?;
                }
                for s in v {
                    if s.hists.is_empty() {
                        continue;
                    }
                    let pts = s
                        .hists
                        .iter()
                        .map(|(t, h)| {
                            let i = ((t - ctx.start) / ctx.step) as usize;
                            let x = match name {
                                "histogram_count" => h.count,
                                "histogram_sum" => h.sum,
                                "histogram_avg" => h.sum / h.count,
                                "histogram_stddev" => crate::histogram::variance(h).sqrt(),
                                "histogram_stdvar" => crate::histogram::variance(h),
                                _ => {
                                    let (x, nans) = crate::histogram::fraction(lo[i], hi[i], h);
                                    if nans {
                                        self.info(super::anno::fraction_nans(
                                            self.anno_name(&s.labels),
                                        ));
                                    }
                                    x
                                }
                            };
                            (*t, x)
                        })
                        .collect();
                    out.push(Series {
                        labels: s.labels,
                        drop_name: true,
                        pts,
                        hists: Vec::new(),
                    });
                }
                Ok(Val::Vector(out))
            }
            "histogram_quantile" => self.eval_histogram_quantile(&args, ctx),
            "histogram_quantiles" => {
                // histogram_quantiles(v, "label", q1, q2, …): histogram_quantile per
                // quantile, told apart by `label` set to the quantile.
                let label = self.eval_string(args[1], ctx)?;
                if !valid_label_name(&label) {
                    return exec(format!("invalid quantile label name {label:?}"));
                }
                let mut out = Out::default();
                for q_expr in &args[2..] {
                    let q = self.eval_scalar(q_expr, ctx)?;
                    let Val::Vector(v) = self.eval_histogram_quantile(&[q_expr, args[0]], ctx)?
                    else {
                        continue;
                    };
                    for s in v {
                        for (t, x) in s.pts {
                            let i = ((t - ctx.start) / ctx.step) as usize;
                            let l = s.labels.with(&label, &openmetrics_float(q[i]));
                            let slot = out.slot(l, s.drop_name);
                            out.push_at(slot, t, x)?;
                        }
                    }
                }
                Ok(Val::Vector(out.finish()))
            }
            _ => exec(format!("function {name:?} is not supported")),
        }
    }

    fn eval_histogram_quantile(&mut self, args: &[&Expr], ctx: Ctx) -> Result<Val> {
        let q = self.eval_scalar(args[0], ctx)?;
        if let Some(&bad) = q.iter().find(|x| !(0.0..=1.0).contains(*x)) {
            self.warn(super::anno::invalid_quantile(bad));
        }
        let mut v = self.eval_vector(args[1], ctx)?;
        // Native histograms: a quantile of each histogram sample.
        let mut native: Vec<Series> = Vec::new();
        for s in &mut v {
            if s.hists.is_empty() {
                continue;
            }
            let pts = s
                .hists
                .drain(..)
                .map(|(t, h)| {
                    let i = ((t - ctx.start) / ctx.step) as usize;
                    let (x, note) = crate::histogram::quantile(q[i], &h);
                    let name = self.anno_name(&s.labels);
                    match note {
                        Some(crate::histogram::QuantileNote::NaNResult) => {
                            self.info(super::anno::quantile_nan_result(name))
                        }
                        Some(crate::histogram::QuantileNote::NaNSkew) => {
                            self.info(super::anno::quantile_nan_skew(name))
                        }
                        None => {}
                    }
                    (t, x)
                })
                .collect();
            native.push(Series {
                labels: s.labels.clone(),
                drop_name: true,
                pts,
                hists: Vec::new(),
            });
        }
        v.retain(|s| !s.pts.is_empty());
        self.drop_mixed_classic_native(&mut native, &mut v);
        let mut out = self.classic_buckets(v, ctx, |i, b| f::bucket_quantile(q[i], b))?;
        out.extend(native);
        Ok(Val::Vector(out))
    }

    /// A native histogram and classic buckets with the same labels (but `le` and the
    /// name) at one step: Prometheus answers neither at that step, with a warning. Steps
    /// where only one of them has a point are answered as usual.
    fn drop_mixed_classic_native(&self, native: &mut Vec<Series>, classic: &mut Vec<Series>) {
        if native.is_empty() || classic.is_empty() {
            return;
        }
        // The steps at which each classic group has a bucket.
        let mut bucket_steps: HashMap<Labels, HashSet<i64>> = HashMap::new();
        for s in classic.iter().filter(|s| s.labels.get("le").is_some()) {
            bucket_steps
                .entry(s.labels.without(&["le"]))
                .or_default()
                .extend(s.pts.iter().map(|p| p.0));
        }
        let mut clash: HashMap<Labels, HashSet<i64>> = HashMap::new();
        for s in native.iter_mut() {
            let Some(steps) = bucket_steps.get(&s.labels) else {
                continue;
            };
            // (The native side may already be answered as floats.)
            let hit: HashSet<i64> = s
                .hists
                .iter()
                .map(|p| p.0)
                .chain(s.pts.iter().map(|p| p.0))
                .filter(|t| steps.contains(t))
                .collect();
            if hit.is_empty() {
                continue;
            }
            self.warn(super::anno::mixed_classic_native(self.anno_name(&s.labels)));
            s.hists.retain(|p| !hit.contains(&p.0));
            s.pts.retain(|p| !hit.contains(&p.0));
            clash.insert(s.labels.clone(), hit);
        }
        if clash.is_empty() {
            return;
        }
        native.retain(|s| !s.is_empty());
        for s in classic.iter_mut() {
            if s.labels.get("le").is_none() {
                continue;
            }
            if let Some(hit) = clash.get(&s.labels.without(&["le"])) {
                s.pts.retain(|p| !hit.contains(&p.0));
            }
        }
        classic.retain(|s| !s.is_empty());
    }

    /// Classic histograms among `v` (series with an `le` label, grouped by their
    /// other labels): `f(step, buckets)` per group and step, with whether it forced
    /// the buckets monotonic (an info).
    fn classic_buckets(
        &mut self,
        v: Vec<Series>,
        ctx: Ctx,
        f: impl Fn(usize, &mut Vec<f::Bucket>) -> (f64, bool),
    ) -> Result<Vec<Series>> {
        // group series by their labels without `le` (and the name)
        let mut groups: HashMap<Labels, usize> = HashMap::new();
        let mut group_labels: Vec<(Labels, bool)> = Vec::new();
        let mut member: Vec<Option<(usize, f64)>> = Vec::with_capacity(v.len());
        for s in &v {
            let ub = match s.labels.get("le").map(parse_go_float) {
                Some(Some(ub)) => ub,
                _ => {
                    self.warn(super::anno::bad_bucket_label(
                        s.labels.get("le").unwrap_or(""),
                        self.anno_name(&s.labels),
                    ));
                    member.push(None);
                    continue;
                }
            };
            let key = s.labels.without(&["le"]);
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
                hists: Vec::new(),
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
                    let (r, forced_monotonic) = f(i, b);
                    if forced_monotonic {
                        self.info(super::anno::quantile_forced_monotonic(
                            self.anno_name(&out[gi].labels),
                        ));
                    }
                    out[gi].pts.push((t, r));
                }
            }
            Ok(())
        })?;
        out.retain(|s| !s.pts.is_empty());
        Ok(out)
    }
}

/// Prometheus's `labels.FormatOpenMetricsFloat`: Go's shortest `%g`, with `.0` after
/// an integer.
fn openmetrics_float(f: f64) -> String {
    let s = crate::histogram::go_g(f);
    if f.is_finite() && f == f.floor() && !s.contains(['e', '.']) {
        format!("{s}.0")
    } else {
        s
    }
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

fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

pub(super) fn absent_labels(e: &Expr) -> Labels {
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
