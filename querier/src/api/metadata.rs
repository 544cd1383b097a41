//! `/api/v1/metadata` and `/api/v1/query_exemplars` over the fan-out: the ingesters
//! keep both (see `strata_ingester::{metadata, exemplars}`); answers have Prometheus's
//! parameters, errors and JSON.

use promql_parser::label::{MatchOp as PMatchOp, Matcher as PMatcher};
use promql_parser::parser::{Expr, VectorSelector};
use strata_proto::metadata::{ExemplarsRequest, MatcherSet, MetricMetadataRequest};
use strata_tsdb::labels::METRIC_NAME;
use strata_tsdb::matcher::MatchOp;

use super::*;

/// `limit` / `limit_per_metric`: absent is -1; not an integer is Prometheus's error.
fn int_param(p: &Params, name: &str) -> Result<i64, ApiError> {
    let v = p.get(name);
    if v.is_empty() {
        return Ok(-1);
    }
    v.parse::<i64>()
        .map_err(|_| ApiError::bad_data(format!("{name} must be a number")))
}

pub(super) async fn metadata(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let start = Instant::now();
    let r = async {
        let p = Params::parse(&headers, raw.as_deref(), &[])?;
        let limit = int_param(&p, "limit")?;
        let per_metric = int_param(&p, "limit_per_metric")?;
        let tenant = tenant_of(&headers)?;
        let opts = q.default_fetch_options(&tenant);
        let req = MetricMetadataRequest {
            metric: p.get("metric").to_string(),
            limit,
            limit_per_metric: per_metric,
        };
        let (all, warnings) = q
            .sources
            .metadata(&opts, req)
            .await
            .map_err(storage_error)?;
        // As Prometheus: at most `limit` families (0: none), `limit_per_metric`
        // entries each when positive.
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut out = String::from("{");
        for (i, (name, metas)) in all.iter().take(take).enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(&mut out, name);
            out.push_str(":[");
            let keep = usize::try_from(per_metric)
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or(usize::MAX);
            for (j, (kind, help, unit)) in metas.iter().take(keep).enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str("{\"type\":");
                write_str(&mut out, kind);
                out.push_str(",\"help\":");
                write_str(&mut out, help);
                out.push_str(",\"unit\":");
                write_str(&mut out, unit);
                out.push('}');
            }
            out.push(']');
        }
        out.push('}');
        Ok(ok(&out, &warnings))
    }
    .await;
    finish(&q, "metadata", start, r)
}

/// The matcher sets of every vector selector in `expr` (Prometheus's
/// `parser.ExtractSelectors`; a selector with `or` groups gives one set per group).
fn selectors(
    expr: &Expr,
    out: &mut Vec<Vec<strata_tsdb::matcher::Matcher>>,
) -> Result<(), ApiError> {
    match expr {
        Expr::VectorSelector(vs) => selector_sets(vs, out)?,
        Expr::MatrixSelector(ms) => selector_sets(&ms.vs, out)?,
        Expr::Aggregate(a) => {
            selectors(&a.expr, out)?;
            if let Some(p) = &a.param {
                selectors(p, out)?;
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out)?,
        Expr::Binary(b) => {
            selectors(&b.lhs, out)?;
            selectors(&b.rhs, out)?;
        }
        Expr::Paren(p) => selectors(&p.expr, out)?,
        Expr::Subquery(s) => selectors(&s.expr, out)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                selectors(a, out)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
    Ok(())
}

fn selector_sets(
    vs: &VectorSelector,
    out: &mut Vec<Vec<strata_tsdb::matcher::Matcher>>,
) -> Result<(), ApiError> {
    let conv = |m: &PMatcher| {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::RegexMatch,
            PMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
        };
        Matcher::new(op, m.name.clone(), m.value.clone())
            .map_err(|e| ApiError::bad_data(e.to_string()))
    };
    let groups: Vec<&Vec<PMatcher>> = if vs.matchers.or_matchers.is_empty() {
        vec![&vs.matchers.matchers]
    } else {
        vs.matchers.or_matchers.iter().collect()
    };
    for g in groups {
        let mut ms: Vec<Matcher> = vs
            .name
            .iter()
            .map(|n| Matcher::equal(METRIC_NAME, n.clone()))
            .collect();
        for m in g {
            ms.push(conv(m)?);
        }
        out.push(ms);
    }
    Ok(())
}

pub(super) async fn exemplars(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let r = async {
        let p = Params::parse(&headers, raw.as_deref(), &body)?;
        let tenant = tenant_of(&headers)?;
        let start = time_param(&p, "start", MIN_TIME_MS)?;
        let end = time_param(&p, "end", MAX_TIME_MS)?;
        if end < start {
            return Err(ApiError::bad_data(
                "end timestamp must not be before start timestamp",
            ));
        }
        // Prometheus gives this endpoint's parse errors without the parameter's name
        let expr = Engine::new(q.engine_options())
            .parse(p.get("query"))
            .map_err(|e| ApiError::bad_data(e.to_string()))?;
        let mut sets = Vec::new();
        selectors(&expr, &mut sets)?;
        let req = ExemplarsRequest {
            matcher_sets: sets
                .iter()
                .map(|ms| MatcherSet {
                    matchers: strata_store::matchers_to_proto(ms),
                })
                .collect(),
            start,
            end,
        };
        let opts = q.default_fetch_options(&tenant);
        let (ans, warnings) = q
            .sources
            .exemplars(&opts, req)
            .await
            .map_err(storage_error)?;
        let mut out = String::from("[");
        for (i, s) in ans.series.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let series = Labels::from_pairs(s.series_labels.iter().map(|l| (&l.name, &l.value)));
            out.push_str("{\"seriesLabels\":");
            write_labels(&mut out, &series);
            out.push_str(",\"exemplars\":[");
            for (j, e) in s.exemplars.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let l = Labels::from_pairs(e.labels.iter().map(|l| (&l.name, &l.value)));
                out.push_str("{\"labels\":");
                write_labels(&mut out, &l);
                out.push_str(",\"value\":\"");
                write_value(&mut out, e.value);
                out.push_str("\",\"timestamp\":");
                write_ts(&mut out, e.timestamp);
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push(']');
        Ok(ok(&out, &warnings))
    }
    .await;
    finish(&q, "query_exemplars", start, r)
}
