//! `/api/v1/rules` and `/api/v1/alerts` in Prometheus's JSON (field order and value
//! formats of `web/api/v1`), per tenant (`X-Scope-OrgID`), and `POST /-/reload`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use strata_tsdb::labels::Labels;

use crate::group::{Group, Manager};
use crate::rules::{Alert, Rule};

/// RFC 3339 with Go's `RFC3339Nano` trimming (`…:05Z`, `…:05.1Z`); 0 is Go's zero time.
pub fn rfc3339(ms: i64) -> String {
    if ms == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let s = strata_kit::date::format_rfc3339_ms(ms);
    let (head, frac) = s.trim_end_matches('Z').split_once('.').unwrap_or((&s, ""));
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{head}Z")
    } else {
        format!("{head}.{frac}Z")
    }
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`, as alerts' `value`.
pub fn format_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

fn str_json(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

fn labels_json(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        str_json(out, &x.name);
        out.push(':');
        str_json(out, &x.value);
    }
    out.push('}');
}

fn map_json(out: &mut String, m: &BTreeMap<String, String>) {
    out.push('{');
    for (i, (k, v)) in m.iter().filter(|(_, v)| !v.is_empty()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        str_json(out, k);
        out.push(':');
        str_json(out, v);
    }
    out.push('}');
}

fn alert_json(out: &mut String, a: &Alert) {
    out.push_str("{\"labels\":");
    labels_json(out, &a.labels);
    out.push_str(",\"annotations\":");
    map_json(out, &a.annotations);
    out.push_str(",\"state\":");
    str_json(out, a.state.as_str());
    out.push_str(",\"activeAt\":");
    str_json(out, &rfc3339(a.active_at));
    out.push_str(",\"value\":");
    str_json(out, &format_e(a.value));
    out.push('}');
}

/// The expression as Prometheus prints it (`expr.String()`).
fn query_string(expr: &str) -> String {
    promql_parser::parser::parse(expr).map_or_else(|_| expr.to_string(), |e| e.to_string())
}

#[derive(Debug, Default)]
struct Filter {
    kind: Option<String>,
    rule_names: Vec<String>,
    groups: Vec<String>,
    files: Vec<String>,
}

impl Filter {
    fn parse(q: Option<&str>) -> Filter {
        let mut f = Filter::default();
        for (k, v) in q
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
        {
            let v = percent_decode(v);
            match k {
                "type" => f.kind = Some(v),
                "rule_name[]" | "rule_name%5B%5D" => f.rule_names.push(v),
                "rule_group[]" | "rule_group%5B%5D" => f.groups.push(v),
                "file[]" | "file%5B%5D" => f.files.push(v),
                _ => {}
            }
        }
        f
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(x) => {
                        out.push(x);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `data` of `/api/v1/rules` over `groups`.
pub fn rules_json(groups: &[Arc<Group>], q: Option<&str>) -> Result<String, String> {
    let f = Filter::parse(q);
    let (want_alert, want_record) = match f.kind.as_deref() {
        None | Some("") => (true, true),
        Some("alert") => (true, false),
        Some("record") => (false, true),
        Some(other) => return Err(format!("unsupported type {other:?}")),
    };
    let mut out = String::from("{\"groups\":[");
    let mut first_group = true;
    for g in groups {
        if (!f.groups.is_empty() && !f.groups.contains(&g.name))
            || (!f.files.is_empty() && !f.files.contains(&g.file))
        {
            continue;
        }
        let mut rules = String::new();
        for r in &g.rules {
            if !f.rule_names.is_empty() && !f.rule_names.iter().any(|n| n == r.name()) {
                continue;
            }
            let st = r.status();
            let common = |out: &mut String| {
                out.push_str(",\"health\":");
                str_json(out, st.health.as_str());
                if !st.last_error.is_empty() {
                    out.push_str(",\"lastError\":");
                    str_json(out, &st.last_error);
                }
                let _ = write!(
                    out,
                    ",\"evaluationTime\":{}",
                    st.eval_duration.as_secs_f64()
                );
                out.push_str(",\"lastEvaluation\":");
                str_json(out, &rfc3339(st.last_eval));
            };
            match r {
                Rule::Alerting(ar) if want_alert => {
                    if !rules.is_empty() {
                        rules.push(',');
                    }
                    rules.push_str("{\"state\":");
                    str_json(&mut rules, ar.state().as_str());
                    rules.push_str(",\"name\":");
                    str_json(&mut rules, &ar.name);
                    rules.push_str(",\"query\":");
                    str_json(&mut rules, &query_string(&ar.expr));
                    let _ = write!(
                        rules,
                        ",\"duration\":{},\"keepFiringFor\":{}",
                        ar.for_ms as f64 / 1000.0,
                        ar.keep_firing_for_ms as f64 / 1000.0
                    );
                    rules.push_str(",\"labels\":");
                    map_json(&mut rules, &ar.labels);
                    rules.push_str(",\"annotations\":");
                    map_json(&mut rules, &ar.annotations);
                    rules.push_str(",\"alerts\":[");
                    for (i, a) in ar.active_alerts().into_iter().enumerate() {
                        if i > 0 {
                            rules.push(',');
                        }
                        alert_json(&mut rules, a);
                    }
                    rules.push(']');
                    common(&mut rules);
                    rules.push_str(",\"type\":\"alerting\"}");
                }
                Rule::Recording(rr) if want_record => {
                    if !rules.is_empty() {
                        rules.push(',');
                    }
                    rules.push_str("{\"name\":");
                    str_json(&mut rules, &rr.name);
                    rules.push_str(",\"query\":");
                    str_json(&mut rules, &query_string(&rr.expr));
                    if rr.labels.values().any(|v| !v.is_empty()) {
                        rules.push_str(",\"labels\":");
                        map_json(&mut rules, &rr.labels);
                    }
                    common(&mut rules);
                    rules.push_str(",\"type\":\"recording\"}");
                }
                _ => {}
            }
        }
        // Filters by rule leave out groups with no rule left (Prometheus 2.4x).
        if rules.is_empty() && (f.kind.is_some() || !f.rule_names.is_empty()) {
            continue;
        }
        if !first_group {
            out.push(',');
        }
        first_group = false;
        out.push_str("{\"name\":");
        str_json(&mut out, &g.name);
        out.push_str(",\"file\":");
        str_json(&mut out, &g.file);
        let _ = write!(
            out,
            ",\"rules\":[{rules}],\"interval\":{},\"limit\":{},\"evaluationTime\":{},\"lastEvaluation\":",
            g.interval_ms as f64 / 1000.0,
            g.limit,
            g.eval_duration.as_secs_f64()
        );
        str_json(&mut out, &rfc3339(g.last_eval));
        out.push('}');
    }
    out.push_str("]}");
    Ok(out)
}

/// The `data` of `/api/v1/alerts`: every pending and firing alert.
pub fn alerts_json(groups: &[Arc<Group>]) -> String {
    let mut out = String::from("{\"alerts\":[");
    let mut first = true;
    for g in groups {
        for r in &g.rules {
            let Rule::Alerting(ar) = r else { continue };
            for a in ar.active_alerts() {
                if !first {
                    out.push(',');
                }
                first = false;
                alert_json(&mut out, a);
            }
        }
    }
    out.push_str("]}");
    out
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn ok(data: String) -> Response {
    json(
        StatusCode::OK,
        format!("{{\"status\":\"success\",\"data\":{data}}}"),
    )
}

fn bad(error_type: &str, msg: &str, status: StatusCode) -> Response {
    let mut m = String::new();
    str_json(&mut m, msg);
    json(
        status,
        format!("{{\"status\":\"error\",\"errorType\":\"{error_type}\",\"error\":{m}}}"),
    )
}

async fn tenant_groups(m: &Manager, headers: &HeaderMap) -> Result<Vec<Arc<Group>>, Response> {
    let tenant = strata_kit::tenant::tenant_from_headers(headers)
        .map_err(|e| bad("bad_data", &e.to_string(), StatusCode::BAD_REQUEST))?;
    // Without a tenant header the ruler's own tenant (`--tenant`) answers.
    let tenant = if headers.contains_key("x-scope-orgid") || headers.contains_key("thanos-tenant") {
        tenant
    } else {
        m.tenant().to_string()
    };
    let mut g: Vec<Arc<Group>> = m
        .groups()
        .await
        .into_iter()
        .filter(|g| g.tenant == tenant)
        .collect();
    g.sort_by(|a, b| (&a.file, &a.name).cmp(&(&b.file, &b.name)));
    Ok(g)
}

async fn rules(
    State(m): State<Arc<Manager>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let groups = match tenant_groups(&m, &headers).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    match rules_json(&groups, q.as_deref()) {
        Ok(d) => ok(d),
        Err(e) => bad("bad_data", &e, StatusCode::BAD_REQUEST),
    }
}

async fn alerts(State(m): State<Arc<Manager>>, headers: HeaderMap) -> Response {
    match tenant_groups(&m, &headers).await {
        Ok(g) => ok(alerts_json(&g)),
        Err(r) => r,
    }
}

async fn reload(State(m): State<Arc<Manager>>) -> Response {
    match m.reload().await {
        Ok(()) => (StatusCode::OK, "").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reloading rules failed; the previous rules keep running");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to reload config: {e}\n"),
            )
                .into_response()
        }
    }
}

/// `/api/v1/rules`, `/api/v1/alerts` (also under `/prometheus`) and `POST /-/reload`.
pub fn routes(m: Arc<Manager>) -> Router {
    let api = Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts));
    Router::new()
        .merge(api.clone())
        .nest("/prometheus", api)
        .route("/-/reload", post(reload))
        .with_state(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_e(1.0), "1e+00");
        assert_eq!(format_e(1234.5), "1.2345e+03");
        assert_eq!(format_e(0.001), "1e-03");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
        assert_eq!(percent_decode("a%20b+c"), "a b c");
    }
}
