//! The read-only endpoints a Prometheus answers that are not queries:
//! `/api/v1/format_query` and `/api/v1/parse_query` (the expression pretty-printed, and
//! as the syntax tree Prometheus 3's UI draws), `/api/v1/targets` (empty: the querier
//! scrapes nothing), `/api/v1/rules` and `/api/v1/alerts` (those of the `--ruler.url`
//! rulers, merged; empty without one), and a JSON 404 for any other `/api/v1/` path.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector,
};
use serde_json::{json, Value};
use strata_promql::Engine;

use super::{ok, ApiError, Params};
use crate::Querier;

/// Parse `query` as the query endpoints do (same errors) and answer `data(expr)`.
fn answer_parsed(
    q: &Querier,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &[u8],
    data: fn(&Expr) -> String,
) -> Response {
    let parsed = Params::parse(headers, raw, body).and_then(|p| {
        Engine::new(q.engine_options())
            .parse(p.get("query"))
            .map_err(|e| ApiError::from_query(&e))
    });
    match parsed {
        Ok(expr) => ok(&data(&expr), &[]),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn format_query(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    answer_parsed(&q, &headers, raw.as_deref(), &body, |e| {
        Value::String(e.prettify()).to_string()
    })
}

pub(super) async fn parse_query(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    answer_parsed(&q, &headers, raw.as_deref(), &body, |e| ast(e).to_string())
}

pub(super) async fn targets() -> Response {
    ok(r#"{"activeTargets":[],"droppedTargets":[]}"#, &[])
}

pub(super) async fn rules(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    from_rulers(&q, &headers, raw.as_deref(), "rules", "groups").await
}

pub(super) async fn alerts(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    from_rulers(&q, &headers, raw.as_deref(), "alerts", "alerts").await
}

/// `/api/v1/{path}` of every `--ruler.url` (same query string and tenant), the `key`
/// lists of their answers concatenated. A ruler that does not answer becomes a warning,
/// as a failing store does under partial response. Without rulers: an empty list.
async fn from_rulers(
    q: &Querier,
    headers: &HeaderMap,
    raw: Option<&str>,
    path: &str,
    key: &str,
) -> Response {
    let mut items: Vec<Value> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    if !q.config.ruler_urls.is_empty() {
        let client = reqwest::Client::new();
        let asks = q.config.ruler_urls.iter().map(|base| {
            let mut url = format!("{}/api/v1/{path}", base.trim_end_matches('/'));
            if let Some(r) = raw.filter(|r| !r.is_empty()) {
                url.push('?');
                url.push_str(r);
            }
            let mut req = client.get(url).timeout(std::time::Duration::from_secs(10));
            for h in ["x-scope-orgid", "thanos-tenant"] {
                if let Some(v) = headers.get(h) {
                    req = req.header(h, v.clone());
                }
            }
            async move {
                let resp = req.send().await.map_err(|e| format!("{base}: {e}"))?;
                let status = resp.status();
                let body = resp.bytes().await.map_err(|e| format!("{base}: {e}"))?;
                if !status.is_success() {
                    return Err(format!(
                        "{base}: {status}: {}",
                        String::from_utf8_lossy(&body).trim()
                    ));
                }
                let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{base}: {e}"))?;
                Ok::<Value, String>(v)
            }
        });
        for r in futures::future::join_all(asks).await {
            match r {
                Ok(v) => items.extend(v["data"][key].as_array().cloned().unwrap_or_default()),
                Err(e) => warnings.push(format!("ruler {e}")),
            }
        }
    }
    let data = json!({ key: items });
    ok(&data.to_string(), &warnings)
}

/// Any other `/api/v1/` path: an error object in Prometheus's shape instead of an empty
/// 404.
pub(super) async fn not_found(uri: Uri) -> Response {
    ApiError {
        error_type: "not_found",
        status: 404,
        message: format!("unknown API endpoint {}", uri.path()),
    }
    .into_response()
}

// ---------------------------------------------------------------------------------------
// The syntax tree in Prometheus's JSON (web/api/v1 `translateAST`); keys come out sorted,
// as Go's maps marshal.

fn ast(e: &Expr) -> Value {
    match e {
        Expr::Aggregate(a) => {
            let (grouping, without) = match &a.modifier {
                Some(LabelModifier::Include(l)) => (l.labels.clone(), false),
                Some(LabelModifier::Exclude(l)) => (l.labels.clone(), true),
                None => (Vec::new(), false),
            };
            json!({
                "type": "aggregation",
                "op": a.op.to_string(),
                "expr": ast(&a.expr),
                "param": a.param.as_deref().map_or(Value::Null, ast),
                "grouping": grouping,
                "without": without,
            })
        }
        Expr::Binary(b) => {
            let vectors =
                b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            let matching = match (&b.modifier, vectors) {
                (_, false) => Value::Null,
                (m, true) => {
                    let (labels, on) = match m.as_ref().and_then(|m| m.matching.as_ref()) {
                        Some(LabelModifier::Include(l)) => (l.labels.clone(), true),
                        Some(LabelModifier::Exclude(l)) => (l.labels.clone(), false),
                        None => (Vec::new(), false),
                    };
                    let set_op = b.op.to_string();
                    let set_op = matches!(set_op.as_str(), "and" | "or" | "unless");
                    let (card, include) = match m.as_ref().map(|m| &m.card) {
                        Some(VectorMatchCardinality::ManyToOne(l)) => {
                            ("many-to-one", l.labels.clone())
                        }
                        Some(VectorMatchCardinality::OneToMany(l)) => {
                            ("one-to-many", l.labels.clone())
                        }
                        Some(VectorMatchCardinality::ManyToMany) => ("many-to-many", Vec::new()),
                        _ if set_op => ("many-to-many", Vec::new()),
                        _ => ("one-to-one", Vec::new()),
                    };
                    json!({
                        "card": card,
                        "labels": labels,
                        "on": on,
                        "include": include,
                        "fillValues": {"lhs": null, "rhs": null},
                    })
                }
            };
            json!({
                "type": "binaryExpr",
                "op": b.op.to_string(),
                "lhs": ast(&b.lhs),
                "rhs": ast(&b.rhs),
                "matching": matching,
                "bool": b.modifier.as_ref().is_some_and(|m| m.return_bool),
            })
        }
        Expr::Call(c) => json!({
            "type": "call",
            "func": {
                "name": c.func.name,
                "argTypes": c.func.arg_types.iter().map(value_type).collect::<Vec<_>>(),
                "variadic": c.func.variadic,
                "returnType": value_type(&c.func.return_type),
            },
            "args": c.args.args.iter().map(|a| ast(a)).collect::<Vec<_>>(),
        }),
        Expr::MatrixSelector(m) => {
            let mut v = selector(&m.vs, "matrixSelector");
            v["range"] = json!(m.range.as_millis() as i64);
            v
        }
        Expr::Subquery(s) => json!({
            "type": "subquery",
            "expr": ast(&s.expr),
            "range": s.range.as_millis() as i64,
            "offset": offset_ms(&s.offset),
            "step": s.step.map_or(0, |d| d.as_millis() as i64),
            "timestamp": timestamp(&s.at),
            "startOrEnd": start_or_end(&s.at),
            "alignEvalTime": false,
        }),
        Expr::NumberLiteral(n) => json!({"type": "numberLiteral", "val": go_float(n.val)}),
        Expr::Paren(p) => json!({"type": "parenExpr", "expr": ast(&p.expr)}),
        Expr::StringLiteral(s) => json!({"type": "stringLiteral", "val": s.val}),
        Expr::Unary(u) => json!({"type": "unaryExpr", "op": "-", "expr": ast(&u.expr)}),
        Expr::VectorSelector(vs) => selector(vs, "vectorSelector"),
        Expr::Extension(_) => Value::Null,
    }
}

fn selector(vs: &VectorSelector, kind: &str) -> Value {
    // Prometheus lists the metric name as the first matcher
    let mut matchers: Vec<Value> = Vec::new();
    if let Some(name) = &vs.name {
        matchers.push(json!({"name": "__name__", "value": name, "type": "="}));
    }
    matchers.extend(vs.matchers.matchers.iter().map(matcher));
    json!({
        "type": kind,
        "name": vs.name.clone().unwrap_or_default(),
        "offset": offset_ms(&vs.offset),
        "matchers": matchers,
        "timestamp": timestamp(&vs.at),
        "startOrEnd": start_or_end(&vs.at),
        "anchored": false,
        "smoothed": false,
    })
}

fn matcher(m: &Matcher) -> Value {
    let op = match m.op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    };
    json!({"name": m.name, "value": m.value, "type": op})
}

fn value_type(t: &ValueType) -> &'static str {
    match t {
        ValueType::Vector => "vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "matrix",
        ValueType::String => "string",
    }
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

fn timestamp(at: &Option<AtModifier>) -> Value {
    match at {
        Some(AtModifier::At(t)) => {
            let ms = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_millis() as i64,
                Err(e) => -(e.duration().as_millis() as i64),
            };
            json!(ms)
        }
        _ => Value::Null,
    }
}

fn start_or_end(at: &Option<AtModifier>) -> Value {
    match at {
        Some(AtModifier::Start) => json!("start"),
        Some(AtModifier::End) => json!("end"),
        _ => Value::Null,
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`: shortest digits, never an exponent.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    // Rust's Display is shortest round-trip and never uses an exponent either
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(q: &str) -> Value {
        ast(&Engine::new(strata_promql::EngineOptions::default())
            .parse(q)
            .unwrap())
    }

    #[test]
    fn trees_in_prometheus_shape() {
        let t = tree(r#"sum by (job) (rate(http_requests_total{code=~"5.."}[5m] offset 1m))"#);
        assert_eq!(t["type"], "aggregation");
        assert_eq!(t["op"], "sum");
        assert_eq!(t["grouping"], json!(["job"]));
        assert_eq!(t["without"], false);
        let call = &t["expr"];
        assert_eq!(call["func"]["name"], "rate");
        assert_eq!(call["func"]["argTypes"], json!(["matrix"]));
        assert_eq!(call["func"]["returnType"], "vector");
        let m = &call["args"][0];
        assert_eq!(m["type"], "matrixSelector");
        assert_eq!(m["range"], 300_000);
        assert_eq!(m["offset"], 60_000);
        assert_eq!(
            m["matchers"],
            json!([
                {"name": "__name__", "value": "http_requests_total", "type": "="},
                {"name": "code", "value": "5..", "type": "=~"},
            ])
        );
        let b = tree("a / on(x) group_left(y) b");
        assert_eq!(b["matching"]["card"], "many-to-one");
        assert_eq!(b["matching"]["on"], true);
        assert_eq!(b["matching"]["labels"], json!(["x"]));
        assert_eq!(b["matching"]["include"], json!(["y"]));
        assert_eq!(tree("a and b")["matching"]["card"], "many-to-many");
        assert_eq!(tree("1 + 2")["matching"], Value::Null);
        assert_eq!(tree("1e21")["val"], "1000000000000000000000");
        assert_eq!(tree("x @ end()")["startOrEnd"], "end");
        assert_eq!(tree("x @ 100")["timestamp"], 100_000);
    }
}
