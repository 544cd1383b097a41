//! The public entry points: parse, evaluate step-vectorised, convert to API values.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use promql_parser::parser::{self, Expr};

use crate::eval::{drop_marked_names, Ctx, Evaluator, Stop, Val};
use crate::scan;
use crate::{
    EngineOptions, QueryError, QueryResult, QueryStats, RangeSeries, Storage, Value, VectorSample,
};

pub struct Engine {
    opts: EngineOptions,
    default_subquery_step_ms: i64,
    cancel: Option<Arc<AtomicBool>>,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine {
            opts,
            default_subquery_step_ms: 60_000,
            cancel: None,
        }
    }

    /// Stop evaluating with [`QueryError::Canceled`] soon after `flag` is set (the
    /// caller went away or gave up waiting).
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    fn canceled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// After a failed evaluation: a canceled query fails as canceled, whatever the
    /// cancellation broke on its way out (e.g. a store read cut short).
    fn outcome<T>(&self, r: Result<T, QueryError>) -> Result<T, QueryError> {
        match r {
            Err(e) if self.canceled() && !matches!(e, QueryError::Canceled(_)) => {
                Err(QueryError::Canceled("query execution"))
            }
            r => r,
        }
    }

    /// Step of subqueries written without one (`[30m:]`); Prometheus uses the global
    /// evaluation interval, 1m by default.
    pub fn with_default_subquery_step(mut self, step_ms: i64) -> Self {
        self.default_subquery_step_ms = step_ms.max(1);
        self
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Parse after [`scan::precheck`] bounded the tree's depth (the parser and the
    /// evaluator recurse per level). The parser's syntax errors carry no position
    /// ("invalid promql query", "unclosed left parenthesis"): where the scan can tell
    /// what and where, its message is given instead.
    pub fn parse(&self, query: &str) -> Result<Expr, QueryError> {
        scan::precheck(query, self.opts.max_depth)?;
        let q = rewrite_aliases(query);
        match guarded(|| parser::parse(&q).map_err(QueryError::BadData)) {
            Err(QueryError::BadData(m)) => Err(scan::diagnose(query)
                .or_else(|| scan::explain(query, &m))
                .unwrap_or_else(|| {
                    QueryError::BadData(if m.contains("parse error") {
                        m
                    } else {
                        format!("parse error: {m}")
                    })
                })),
            r => r,
        }
    }

    fn evaluator<'a>(
        &'a self,
        storage: &'a dyn Storage,
        start: i64,
        end: i64,
        step: i64,
    ) -> Evaluator<'a> {
        Evaluator {
            storage,
            lookback: self.opts.lookback_delta_ms,
            max_samples: self.opts.max_samples,
            stop: Stop {
                deadline: Instant::now()
                    .checked_add(self.opts.timeout)
                    .unwrap_or_else(|| {
                        Instant::now() + std::time::Duration::from_secs(86_400 * 365)
                    }),
                cancel: self.cancel.as_deref(),
            },
            query_start: start,
            query_end: end,
            query_step: step,
            default_sub_step: self.default_subquery_step_ms,
            ticks: 0,
            hist_stats: Default::default(),
            queryable: 0,
            peak: Default::default(),
            annos: Default::default(),
            delayed_names: self.opts.delayed_name_removal,
        }
    }

    /// Evaluate `query` at `t` (ms).
    pub fn instant(
        &self,
        storage: &dyn Storage,
        query: &str,
        t: i64,
    ) -> Result<QueryResult, QueryError> {
        let began = Instant::now();
        let expr = self.parse(query)?;
        let mut ev = self.evaluator(storage, t, t, 0);
        let evaluating = Instant::now();
        let val = guarded(|| {
            ev.eval(
                &expr,
                Ctx {
                    start: t,
                    end: t,
                    step: 1,
                },
            )
        });
        let mut warnings = storage.take_warnings();
        let annos = ev.annos.take();
        warnings.extend(annos.warnings);
        let infos = annos.infos;
        let mut stats = QueryStats {
            total_queryable_samples: ev.queryable,
            peak_samples: ev.peak.get() as u64,
            preparation: evaluating - began,
            inner_eval: evaluating.elapsed(),
            ..Default::default()
        };
        let sorting = Instant::now();
        let value = match self.outcome(val)? {
            Val::Scalar(v) => Value::Scalar { t, v: v[0] },
            Val::Str(s) => Value::String { t, s },
            Val::Vector(v) => {
                let v = drop_marked_names(v)?;
                Value::Vector(
                    v.into_iter()
                        .filter_map(|mut s| {
                            if let Some(p) = s.pts.first() {
                                Some(VectorSample {
                                    labels: s.labels,
                                    t,
                                    v: p.1,
                                    h: None,
                                })
                            } else if !s.hists.is_empty() {
                                let (_, h) = s.hists.swap_remove(0);
                                Some(VectorSample {
                                    labels: s.labels,
                                    t,
                                    v: 0.0,
                                    h: Some(Box::new(h)),
                                })
                            } else {
                                None
                            }
                        })
                        .collect(),
                )
            }
            Val::Matrix(m) => {
                let mut m = drop_marked_names(m)?;
                m.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Matrix(
                    m.into_iter()
                        .map(|s| RangeSeries {
                            labels: s.labels,
                            samples: s.pts,
                            histograms: s.hists,
                        })
                        .collect(),
                )
            }
        };
        stats.result_sort = sorting.elapsed();
        stats.eval_total = began.elapsed();
        Ok(QueryResult {
            value,
            warnings,
            infos,
            stats,
        })
    }

    /// Evaluate `query` at every step from `start` to `end` (ms, inclusive).
    pub fn range(
        &self,
        storage: &dyn Storage,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult, QueryError> {
        if step <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end < start {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        let began = Instant::now();
        let expr = self.parse(query)?;
        use promql_parser::parser::value::ValueType;
        match expr.value_type() {
            ValueType::Scalar | ValueType::Vector => {}
            vt => {
                let name = if vt == ValueType::Matrix {
                    "range vector"
                } else {
                    "string"
                };
                return Err(QueryError::BadData(format!(
                    "invalid expression type \"{name}\" for range query, must be Scalar or instant Vector"
                )));
            }
        }
        let ctx = Ctx { start, end, step };
        if ((end - start) / step) as u64 >= self.opts.max_samples as u64 {
            return Err(QueryError::TooManySamples);
        }
        let mut ev = self.evaluator(storage, start, end, step);
        let evaluating = Instant::now();
        let val = guarded(|| ev.eval(&expr, ctx));
        let mut warnings = storage.take_warnings();
        let annos = ev.annos.take();
        warnings.extend(annos.warnings);
        let infos = annos.infos;
        let mut stats = QueryStats {
            total_queryable_samples: ev.queryable,
            peak_samples: ev.peak.get() as u64,
            preparation: evaluating - began,
            inner_eval: evaluating.elapsed(),
            ..Default::default()
        };
        let mut series = match self.outcome(val)? {
            Val::Scalar(v) => vec![RangeSeries {
                labels: Default::default(),
                samples: v
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| (ctx.ts(i), x))
                    .collect(),
                histograms: Vec::new(),
            }],
            Val::Vector(v) => drop_marked_names(v)?
                .into_iter()
                .map(|s| RangeSeries {
                    labels: s.labels,
                    samples: s.pts,
                    histograms: s.hists,
                })
                .collect(),
            _ => {
                return Err(QueryError::Execution(
                    "unexpected result type for range query".into(),
                ))
            }
        };
        let sorting = Instant::now();
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        stats.result_sort = sorting.elapsed();
        stats.eval_total = began.elapsed();
        Ok(QueryResult {
            value: Value::Matrix(series),
            warnings,
            infos,
            stats,
        })
    }
}

/// Evaluation never takes the process down: a panic (a bug) becomes an execution error.
fn guarded<T>(f: impl FnOnce() -> Result<T, QueryError>) -> Result<T, QueryError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(QueryError::Execution(format!(
                "internal error during query evaluation: {msg}"
            )))
        }
    }
}

/// Function names our parser knows under their Prometheus 3 name: `holt_winters` (2.x)
/// is `double_exponential_smoothing`. Rewritten only as a call outside string literals.
fn rewrite_aliases(q: &str) -> std::borrow::Cow<'_, str> {
    const OLD: &str = "holt_winters";
    const NEW: &str = "double_exponential_smoothing";
    if !q.contains(OLD) {
        return std::borrow::Cow::Borrowed(q);
    }
    let b = q.as_bytes();
    let mut out = String::with_capacity(q.len() + 20);
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(qc) = quote {
            // Whole characters, never bytes: label values are UTF-8. An escape takes
            // the backslash and the character after it.
            let mut n = q[i..].chars().next().map_or(1, char::len_utf8);
            if c == b'\\' && qc != b'`' && i + 1 < b.len() {
                n += q[i + 1..].chars().next().map_or(0, char::len_utf8);
            } else if c == qc {
                quote = None;
            }
            out.push_str(&q[i..i + n]);
            i += n;
            continue;
        }
        if c == b'"' || c == b'\'' || c == b'`' {
            quote = Some(c);
            out.push(c as char);
            i += 1;
            continue;
        }
        let boundary =
            i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b':');
        if boundary && q[i..].starts_with(OLD) {
            let rest = q[i + OLD.len()..].trim_start();
            let after = b.get(i + OLD.len()).copied().unwrap_or(b' ');
            if rest.starts_with('(') && !(after.is_ascii_alphanumeric() || after == b'_') {
                out.push_str(NEW);
                i += OLD.len();
                continue;
            }
        }
        // copy one UTF-8 character
        let ch = q[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod alias_tests {
    use super::rewrite_aliases;

    #[test]
    fn holt_winters_is_an_alias() {
        assert_eq!(
            rewrite_aliases("holt_winters(x[5m], 0.5, 0.5)"),
            "double_exponential_smoothing(x[5m], 0.5, 0.5)"
        );
        assert_eq!(
            rewrite_aliases(r#"x{a="holt_winters("} + holt_winters (y[1m],1,1)"#),
            r#"x{a="holt_winters("} + double_exponential_smoothing (y[1m],1,1)"#
        );
        assert_eq!(rewrite_aliases("my_holt_winters(x)"), "my_holt_winters(x)");
        assert_eq!(rewrite_aliases("holt_winters_total"), "holt_winters_total");
    }

    #[test]
    fn strings_keep_their_utf8() {
        assert_eq!(
            rewrite_aliases(r#"holt_winters(x{a="é", b='日本\'語', c=`ü\`}[5m], 0.5, 0.5)"#),
            r#"double_exponential_smoothing(x{a="é", b='日本\'語', c=`ü\`}[5m], 0.5, 0.5)"#
        );
        assert_eq!(
            rewrite_aliases(r#"holt_winters(x{a="\é"}[1m],1,1)"#),
            r#"double_exponential_smoothing(x{a="\é"}[1m],1,1)"#
        );
    }
}
