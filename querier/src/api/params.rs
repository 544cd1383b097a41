//! Request parameters: Go's form semantics, times, durations, booleans, limits,
//! `match[]` selectors, the tenant.

use super::*;

/// Form values of a request: the POST form body (if form-encoded) first, then the URL
/// query, as Go's `Request.Form`.
#[derive(Debug, Default, Clone)]
pub struct Params(pub(super) Vec<(String, String)>);

impl Params {
    pub fn parse(
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Params, ApiError> {
        let bad = |e: serde_urlencoded::de::Error| {
            ApiError::bad_data(format!("error parsing form values: {e}"))
        };
        let mut v: Vec<(String, String)> = Vec::new();
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if form && !body.is_empty() {
            v.extend(serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(bad)?);
        }
        if let Some(q) = query {
            v.extend(serde_urlencoded::from_str::<Vec<(String, String)>>(q).map_err(bad)?);
        }
        Ok(Params(v))
    }

    /// The first value of `name`, "" when absent (Go's `FormValue`).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Prometheus's `parseTime`: unix seconds (float, rounded to ms) or RFC 3339; → ms.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && f.abs() < 9.2e15 {
            let secs = f.trunc();
            let frac = ((f - secs) * 1000.0).round();
            return Ok(secs as i64 * 1000 + frac as i64);
        }
    }
    if let Ok(t) = strata_kit::date::parse_rfc3339_ms(s) {
        return Ok(t);
    }
    match s {
        MIN_TIME_FORMATTED => Ok(MIN_TIME_MS),
        MAX_TIME_FORMATTED => Ok(MAX_TIME_MS),
        _ => Err(format!("cannot parse {} to a valid timestamp", go_quote(s))),
    }
}

/// Prometheus's `parseDuration`: float seconds or a Prometheus duration; → ns.
pub fn parse_duration_ns(s: &str) -> Result<i64, String> {
    use strata_kit::duration::{parse_api_ns, ApiDurationError};
    parse_api_ns(s).map_err(|e| match e {
        ApiDurationError::Overflow => format!(
            "cannot parse {} to a valid duration. It overflows int64",
            go_quote(s)
        ),
        ApiDurationError::Invalid(_) => {
            format!("cannot parse {} to a valid duration", go_quote(s))
        }
    })
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_bool(param: &str, s: &str) -> Result<bool, ApiError> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ApiError::bad_data(format!(
            "'{param}' parameter: strconv.ParseBool: parsing {}: invalid syntax",
            go_quote(s)
        ))),
    }
}

pub(super) fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    let v = p.get(name);
    if v.is_empty() {
        return Ok(default);
    }
    parse_time(v)
        .map_err(|e| ApiError::invalid_param(name, format!("Invalid time value for '{name}': {e}")))
}

pub(super) fn limit_param(p: &Params) -> Result<usize, ApiError> {
    let v = p.get("limit");
    if v.is_empty() {
        return Ok(0);
    }
    let n: i64 = v.parse().map_err(|_| {
        ApiError::invalid_param(
            "limit",
            format!("strconv.Atoi: parsing {}: invalid syntax", go_quote(v)),
        )
    })?;
    if n < 0 {
        return Err(ApiError::invalid_param(
            "limit",
            "limit must be non-negative",
        ));
    }
    Ok(n as usize)
}

pub(super) fn matchers_param(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut sets = Vec::new();
    for m in p.all("match[]") {
        let ms = parse_selector(m).map_err(|e| ApiError::invalid_param("match[]", e))?;
        if ms.iter().all(|m| m.matches("")) {
            return Err(ApiError::invalid_param(
                "match[]",
                "match[] must contain at least one non-empty matcher",
            ));
        }
        sets.push(ms);
    }
    Ok(sets)
}

/// Prometheus's label name rule.
pub use strata_kit::labels::valid_label_name;

/// The tenant: `X-Scope-OrgID`, else `THANOS-TENANT`, else `anonymous`.
pub fn tenant_of(headers: &HeaderMap) -> Result<String, ApiError> {
    strata_kit::tenant::tenant_from_headers(headers).map_err(ApiError::bad_data)
}
