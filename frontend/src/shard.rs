//! Query sharding, as Mimir's query-frontend does it: an aggregation whose answer over
//! all series equals the same aggregation over the per-shard answers is sent as `n`
//! sub-queries, each with Mimir's `__query_shard__="i_of_n"` matcher on every selector
//! (the querier keeps only the series whose label hash modulo `n` is the shard), run in
//! parallel, and the per-shard answers are combined here: `sum` and `count` add up,
//! `min`/`max` take the extreme, `group` is 1, `topk`/`bottomk` take the top `k` again
//! per step and group, `avg` is sent as `sum` and `count` and divided.
//!
//! Only the outermost aggregation is sharded, and only when what it aggregates is
//! per-series work: selectors, functions that map each series on its own (`rate`,
//! `*_over_time`, `abs`, …), subqueries of such, arithmetic with numbers. Anything that
//! combines series (another aggregation, a binary operation between two vectors,
//! `absent`, `label_replace`, `histogram_quantile`, …) leaves the query unsharded, so a
//! sharded answer is the unsharded one (up to the order floats are added in).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{self, AggregateExpr, Expr, LabelModifier, VectorSelector};

use crate::response::{Points, Series};

/// Mimir's reserved label of the shard matcher.
pub const SHARD_LABEL: &str = "__query_shard__";

/// How the per-shard answers of a sharded aggregation are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    Sum,
    Count,
    Min,
    Max,
    Group,
    /// Sum and count asked separately, divided here.
    Avg,
    TopK(i64),
    BottomK(i64),
}

/// A shardable query: the aggregation's combination and grouping, and the inner
/// expression each shard query is built from.
#[derive(Debug, Clone)]
pub struct ShardPlan {
    pub combine: Combine,
    agg: AggregateExpr,
    /// `by` (true) or `without` (false) labels, for `topk`/`bottomk` groups.
    grouping: Option<(bool, Vec<String>)>,
}

/// Functions that map each series to at most one output series on its own (so their
/// result for a shard's series is exactly the shard's part of the whole result).
const PER_SERIES_FUNCTIONS: &[&str] = &[
    "abs",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "holt_winters",
    "idelta",
    "increase",
    "irate",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "sgn",
    "sin",
    "sinh",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "timestamp",
    // the date functions only with an argument (without one they read time())
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
];

impl ShardPlan {
    /// The plan for `query`, or `None` when it is not shardable (or does not parse:
    /// the querier then answers it with its own error).
    pub fn of(query: &str) -> Option<ShardPlan> {
        let mut e = parser::parse(query).ok()?;
        while let Expr::Paren(p) = e {
            e = *p.expr;
        }
        let Expr::Aggregate(agg) = e else {
            return None;
        };
        let param = || match agg.param.as_deref().map(unparen) {
            Some(Expr::NumberLiteral(n)) if n.val.is_finite() => Some(n.val as i64),
            _ => None,
        };
        let combine = match agg.op.id() {
            token::T_SUM => Combine::Sum,
            token::T_COUNT => Combine::Count,
            token::T_MIN => Combine::Min,
            token::T_MAX => Combine::Max,
            token::T_GROUP => Combine::Group,
            token::T_AVG => Combine::Avg,
            token::T_TOPK => Combine::TopK(param()?),
            token::T_BOTTOMK => Combine::BottomK(param()?),
            _ => return None,
        };
        if !per_series(&agg.expr) || !has_selector(&agg.expr) {
            return None;
        }
        let grouping = agg.modifier.as_ref().map(|m| match m {
            LabelModifier::Include(l) => (true, l.labels.clone()),
            LabelModifier::Exclude(l) => (false, l.labels.clone()),
        });
        // Over work that drops names (`rate`, arithmetic, …), series of several metrics
        // may end up one label set, which the engine refuses (where the name goes, as
        // Prometheus 3 does by default; `topk`/`bottomk` answer the series themselves
        // with delayed name removal too) and shards holding one each cannot see.
        // Sharded only when the names stay (a bare selector) or each selector names one
        // metric.
        if !matches!(unparen(&agg.expr), Expr::VectorSelector(_))
            && !one_name_per_selector(&agg.expr)
        {
            return None;
        }
        // `by (__name__)` over work that drops the name (`rate`, …): the groups are told
        // apart by a name removed at the end, so two of them may end up one label set,
        // which the engine refuses (delayed name removal); shards would each hold one
        // and the combination would add them up instead.
        if grouping
            .as_ref()
            .is_some_and(|(by, l)| *by && l.iter().any(|n| n == "__name__"))
        {
            return None;
        }
        Some(ShardPlan {
            combine,
            agg,
            grouping,
        })
    }

    /// The queries of shard `index` (0-based) of `count`: one, or for `avg` its `sum`
    /// and its `count`.
    pub fn shard_queries(&self, index: u64, count: u64) -> Vec<String> {
        let value = format!("{}_of_{}", index + 1, count);
        let mut agg = self.agg.clone();
        add_shard_matcher(&mut agg.expr, &value);
        if self.combine == Combine::Avg {
            let mut sum = agg.clone();
            sum.op = TokenType::new(token::T_SUM);
            let mut cnt = agg;
            cnt.op = TokenType::new(token::T_COUNT);
            return vec![
                Expr::Aggregate(sum).to_string(),
                Expr::Aggregate(cnt).to_string(),
            ];
        }
        vec![Expr::Aggregate(agg).to_string()]
    }

    /// Combine the shards' answers (for `avg`: each shard's `[sum, count]`) into the
    /// answer of the whole query, sorted by labels.
    pub fn combine(&self, shards: Vec<Vec<Vec<Series>>>) -> Vec<Series> {
        match self.combine {
            Combine::TopK(k) => self.select_k(shards, k, true),
            Combine::BottomK(k) => self.select_k(shards, k, false),
            Combine::Avg => {
                let mut sums = Acc::default();
                let mut counts = Acc::default();
                for mut s in shards {
                    let c = s.pop().unwrap_or_default();
                    let m = s.pop().unwrap_or_default();
                    sums.add(m, Combine::Sum);
                    counts.add(c, Combine::Sum);
                }
                sums.finish_with(|metric, t, sum| {
                    let n = counts.get(metric, t)?;
                    Some(sum / n)
                })
            }
            c => {
                let mut acc = Acc::default();
                for s in shards.into_iter().flatten() {
                    acc.add(s, c);
                }
                acc.finish_with(|_, _, v| Some(v))
            }
        }
    }

    /// `topk`/`bottomk`: every shard's candidates at each step, the best `k` of each
    /// group kept (NaN last either way, as Prometheus's heaps order it).
    fn select_k(&self, shards: Vec<Vec<Vec<Series>>>, k: i64, top: bool) -> Vec<Series> {
        let series: Vec<Series> = shards.into_iter().flatten().flatten().collect();
        let k = k.max(0) as usize;
        // (group, time) -> (value, series index)
        let mut buckets: HashMap<(Group, i64), Vec<(f64, usize)>> = HashMap::new();
        for (i, s) in series.iter().enumerate() {
            let g = self.group_of(&s.metric);
            for j in 0..s.floats.len() {
                buckets
                    .entry((g.clone(), s.floats.ts[j]))
                    .or_default()
                    .push((s.floats.float(j), i));
            }
        }
        let mut keep: Vec<Vec<(i64, f64)>> = vec![Vec::new(); series.len()];
        for ((_, t), mut c) in buckets {
            c.sort_by(|a, b| {
                let o = match (a.0.is_nan(), b.0.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if top => b.0.total_cmp(&a.0),
                    _ => a.0.total_cmp(&b.0),
                };
                o.then(series[a.1].metric.cmp(&series[b.1].metric))
            });
            for (v, i) in c.into_iter().take(k) {
                keep[i].push((t, v));
            }
        }
        let mut out: Vec<Series> = series
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| !k.is_empty())
            .map(|(s, mut pts)| {
                pts.sort_by_key(|p| p.0);
                let mut floats = Points::default();
                for (t, v) in pts {
                    floats.push_float(t, v);
                }
                Series {
                    metric: s.metric,
                    floats,
                    histograms: Points::default(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        out
    }

    /// The group of a `topk`/`bottomk` input series: its `by` labels, or all but the
    /// `without` ones and the name.
    fn group_of(&self, m: &BTreeMap<String, String>) -> Group {
        match &self.grouping {
            None => Vec::new(),
            Some((true, by)) => m
                .iter()
                .filter(|(k, _)| by.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Some((false, without)) => m
                .iter()
                .filter(|(k, _)| *k != "__name__" && !without.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// The labels that make a `topk`/`bottomk` group.
type Group = Vec<(String, String)>;

/// Per output series, per time: the value combined so far.
#[derive(Default)]
struct Acc {
    series: HashMap<Arc<BTreeMap<String, String>>, BTreeMap<i64, f64>>,
}

impl Acc {
    fn add(&mut self, part: Vec<Series>, c: Combine) {
        for s in part {
            let into = self.series.entry(s.metric.clone()).or_default();
            for j in 0..s.floats.len() {
                let v = s.floats.float(j);
                into.entry(s.floats.ts[j])
                    .and_modify(|a| {
                        *a = match c {
                            Combine::Sum | Combine::Count => *a + v,
                            // Prometheus: a NaN is replaced by any later value.
                            Combine::Min if v < *a || a.is_nan() => v,
                            Combine::Max if v > *a || a.is_nan() => v,
                            Combine::Group => 1.0,
                            _ => *a,
                        }
                    })
                    .or_insert(v);
            }
        }
    }

    fn get(&self, metric: &BTreeMap<String, String>, t: i64) -> Option<f64> {
        self.series.get(metric)?.get(&t).copied()
    }

    fn finish_with(
        self,
        f: impl Fn(&BTreeMap<String, String>, i64, f64) -> Option<f64>,
    ) -> Vec<Series> {
        let mut out: Vec<Series> = self
            .series
            .into_iter()
            .filter_map(|(metric, pts)| {
                let mut floats = Points::default();
                for (t, v) in pts {
                    if let Some(v) = f(&metric, t, v) {
                        floats.push_float(t, v);
                    }
                }
                (!floats.is_empty()).then(|| Series {
                    metric,
                    floats,
                    histograms: Points::default(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        out
    }
}

fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// Does `e` only map each series on its own (and numbers)?
fn per_series(e: &Expr) -> bool {
    match e {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) => true,
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::Paren(p) => per_series(&p.expr),
        Expr::Unary(u) => per_series(&u.expr),
        Expr::Subquery(s) => per_series(&s.expr),
        Expr::Call(c) => {
            PER_SERIES_FUNCTIONS.contains(&c.func.name)
                && !c.args.args.is_empty()
                && c.args.args.iter().enumerate().all(|(i, a)| {
                    // The series argument is per-series work; the others are numbers.
                    per_series(a) && (i == series_arg(c.func.name) || !has_selector(a))
                })
        }
        Expr::Binary(b) => {
            // Vector with number: per series. Two vectors: their series would have to
            // meet in the same shard, which the hash over all labels does not promise.
            let (l, r) = (has_selector(&b.lhs), has_selector(&b.rhs));
            !(l && r) && per_series(&b.lhs) && per_series(&b.rhs)
        }
        Expr::Aggregate(_) | Expr::Extension(_) => false,
    }
}

/// Which argument of a per-series function is the series one.
fn series_arg(f: &str) -> usize {
    match f {
        "quantile_over_time" => 1,
        _ => 0,
    }
}

fn has_selector(e: &Expr) -> bool {
    match e {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) => true,
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => false,
        Expr::Paren(p) => has_selector(&p.expr),
        Expr::Unary(u) => has_selector(&u.expr),
        Expr::Subquery(s) => has_selector(&s.expr),
        Expr::Call(c) => c.args.args.iter().any(|a| has_selector(a)),
        Expr::Binary(b) => has_selector(&b.lhs) || has_selector(&b.rhs),
        Expr::Aggregate(a) => has_selector(&a.expr),
    }
}

/// Whether every selector in `e` names exactly one metric.
fn one_name_per_selector(e: &Expr) -> bool {
    let named = |vs: &VectorSelector| {
        vs.name.is_some()
            || (vs.matchers.or_matchers.is_empty()
                && vs
                    .matchers
                    .matchers
                    .iter()
                    .any(|m| m.name == "__name__" && m.op == MatchOp::Equal))
    };
    match e {
        Expr::VectorSelector(vs) => named(vs),
        Expr::MatrixSelector(ms) => named(&ms.vs),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => true,
        Expr::Paren(p) => one_name_per_selector(&p.expr),
        Expr::Unary(u) => one_name_per_selector(&u.expr),
        Expr::Subquery(s) => one_name_per_selector(&s.expr),
        Expr::Call(c) => c.args.args.iter().all(|a| one_name_per_selector(a)),
        Expr::Binary(b) => one_name_per_selector(&b.lhs) && one_name_per_selector(&b.rhs),
        Expr::Aggregate(a) => one_name_per_selector(&a.expr),
    }
}

fn add_shard_matcher(e: &mut Expr, value: &str) {
    let add = |vs: &mut VectorSelector| {
        let m = Matcher::new(MatchOp::Equal, SHARD_LABEL, value);
        vs.matchers.matchers.push(m.clone());
        for g in &mut vs.matchers.or_matchers {
            g.push(m.clone());
        }
    };
    match e {
        Expr::VectorSelector(vs) => add(vs),
        Expr::MatrixSelector(ms) => add(&mut ms.vs),
        Expr::Paren(p) => add_shard_matcher(&mut p.expr, value),
        Expr::Unary(u) => add_shard_matcher(&mut u.expr, value),
        Expr::Subquery(s) => add_shard_matcher(&mut s.expr, value),
        Expr::Call(c) => {
            for a in &mut c.args.args {
                add_shard_matcher(a, value);
            }
        }
        Expr::Binary(b) => {
            add_shard_matcher(&mut b.lhs, value);
            add_shard_matcher(&mut b.rhs, value);
        }
        Expr::Aggregate(a) => add_shard_matcher(&mut a.expr, value),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharded(q: &str) -> bool {
        ShardPlan::of(q).is_some()
    }

    #[test]
    fn only_exact_aggregations_are_sharded() {
        for q in [
            "sum(x)",
            "sum by (job) (rate(x[5m]))",
            "count without (i) (x > 2)",
            "max(abs(x) * 2)",
            "min by (a) (quantile_over_time(0.9, x[5m]))",
            "avg(x)",
            "group by (a) (x)",
            "topk(3, rate(x[1m]))",
            "topk(3, {a=\"1\"})",
            "topk(3, rate({__name__=\"x\", a=\"1\"}[1m]))",
            "bottomk by (a) (2, x)",
            "(sum(rate(x[5m:1m])))",
            "sum(clamp(x, 0, 1))",
        ] {
            assert!(sharded(q), "{q}");
        }
        for q in [
            "x",
            "rate(x[5m])",
            "sum(x) * 2",
            "sum(x / y)",
            "max(sum by (a) (x))",
            "quantile(0.9, x)",
            "stddev(x)",
            "count_values(\"v\", x)",
            "topk(scalar(y), x)",
            "sum(absent(x))",
            "sum(label_replace(x, \"a\", \"$1\", \"b\", \"(.*)\"))",
            "sum(histogram_quantile(0.9, x))",
            "sum(hour())",
            "sum(vector(1))",
            "sum(clamp(x, scalar(y), 1))",
            "sum by (__name__) (rate({a=\"1\"}[5m]))",
            "topk(2, rate({a=\"1\"}[5m]))",
            "bottomk(2, {__name__=~\"x|y\"} * 2)",
            "sum by (env) (rate({env=\"1\"}[5m]))",
            "count(abs({__name__=~\"x|y\"}))",
            "sum(",
        ] {
            assert!(!sharded(q), "{q}");
        }
    }

    #[test]
    fn every_selector_gets_the_shard_matcher() {
        let p =
            ShardPlan::of(r#"sum by (job) (rate(x{a="1"}[5m]) * 2 + max_over_time(x[5m:1m]) * 0)"#);
        assert!(p.is_none(), "two selectors are a vector-vector operation");
        let p = ShardPlan::of(r#"sum by (job) (rate(x{a="1"}[5m] offset 1h) * 2)"#).unwrap();
        let q = p.shard_queries(2, 4);
        assert_eq!(q.len(), 1);
        assert!(q[0].contains(r#"__query_shard__="3_of_4""#), "{}", q[0]);
        assert!(q[0].contains("offset 1h"), "{}", q[0]);
        // what is sent parses, and is again the same query shape
        assert!(ShardPlan::of(&q[0]).is_some());
        let avg = ShardPlan::of("avg without (i) (x)")
            .unwrap()
            .shard_queries(0, 2);
        assert!(avg[0].starts_with("sum without (i)"), "{avg:?}");
        assert!(avg[1].starts_with("count without (i)"), "{avg:?}");
    }

    fn series(labels: &[(&str, &str)], pts: &[(i64, f64)]) -> Series {
        let mut floats = Points::default();
        for &(t, v) in pts {
            floats.push_float(t, v);
        }
        Series {
            metric: Arc::new(
                labels
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            ),
            floats,
            histograms: Points::default(),
        }
    }

    fn values(s: &Series) -> Vec<(i64, f64)> {
        (0..s.floats.len())
            .map(|i| (s.floats.ts[i], s.floats.float(i)))
            .collect()
    }

    #[test]
    fn shards_combine_per_aggregation() {
        let a = || series(&[("job", "a")], &[(1, 1.0), (2, f64::NAN)]);
        let b = || series(&[("job", "a")], &[(1, 5.0), (2, 3.0), (3, 4.0)]);
        let sum = ShardPlan::of("sum by (job) (x)").unwrap();
        let out = sum.combine(vec![vec![vec![a()]], vec![vec![b()]]]);
        assert_eq!(out.len(), 1);
        let v = values(&out[0]);
        assert_eq!(v[0], (1, 6.0));
        assert!(v[1].1.is_nan());
        assert_eq!(v[2], (3, 4.0));
        let max = ShardPlan::of("max by (job) (x)").unwrap();
        let out = max.combine(vec![vec![vec![a()]], vec![vec![b()]]]);
        assert_eq!(values(&out[0]), vec![(1, 5.0), (2, 3.0), (3, 4.0)]);
        let avg = ShardPlan::of("avg by (job) (x)").unwrap();
        let c = |pts: &[(i64, f64)]| series(&[("job", "a")], pts);
        let out = avg.combine(vec![
            vec![vec![c(&[(1, 6.0)])], vec![c(&[(1, 2.0)])]],
            vec![vec![c(&[(1, 3.0)])], vec![c(&[(1, 1.0)])]],
        ]);
        assert_eq!(values(&out[0]), vec![(1, 3.0)]);
    }

    #[test]
    fn topk_takes_the_best_k_again_per_group_and_step() {
        let s = |i: &str, g: &str, pts: &[(i64, f64)]| {
            series(&[("__name__", "x"), ("g", g), ("i", i)], pts)
        };
        let top = ShardPlan::of("topk by (g) (1, x)").unwrap();
        let out = top.combine(vec![
            vec![vec![
                s("1", "a", &[(1, 5.0), (2, 1.0)]),
                s("3", "b", &[(1, 0.0)]),
            ]],
            vec![vec![s("2", "a", &[(1, 4.0), (2, 2.0)])]],
        ]);
        let got: Vec<(String, Vec<(i64, f64)>)> = out
            .iter()
            .map(|s| (s.metric["i"].clone(), values(s)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("1".into(), vec![(1, 5.0)]),
                ("2".into(), vec![(2, 2.0)]),
                ("3".into(), vec![(1, 0.0)]),
            ]
        );
        let bottom = ShardPlan::of("bottomk(1, x)").unwrap();
        let out = bottom.combine(vec![
            vec![vec![s("1", "a", &[(1, f64::NAN)])]],
            vec![vec![s("2", "a", &[(1, 4.0)])]],
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].metric["i"], "2");
    }
}
