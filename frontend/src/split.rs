//! A range query's parameters, and how it is cut into parts: Cortex's split by interval
//! (boundaries on multiples of the interval, every part's start on the query's step
//! grid), Cortex's step alignment, and the PromQL that must not be split or cached
//! (`@`, `start()`/`end()`/`range()`: they name the whole query's times).

use strata_kit::date::parse_rfc3339_ms;
use strata_kit::duration::parse_api_ns;

/// A parsed `query_range` request: its times in milliseconds and the other parameters
/// (everything but `query`, `start`, `end`, `step`, `stats`), kept to send downstream.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeQuery {
    pub query: String,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    /// The client asked for statistics (`stats` set to anything).
    pub stats: bool,
    pub other: Vec<(String, String)>,
}

/// Prometheus's limit on points per series: a longer query is passed through unsplit,
/// so the client gets the querier's own error.
const MAX_POINTS: i64 = 11_000;

impl RangeQuery {
    /// The query, or `None` when the parameters are not what the querier would accept
    /// (then the request is passed through, and the querier answers with its error).
    pub fn parse(params: &[(String, String)]) -> Option<RangeQuery> {
        let get = |k: &str| {
            params
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let query = get("query")?.to_string();
        let start = parse_time(get("start")?)?;
        let end = parse_time(get("end")?)?;
        let step_ns = parse_api_ns(get("step")?).ok()?;
        // Sub-millisecond steps cannot be split on the millisecond grid.
        if step_ns <= 0 || step_ns % 1_000_000 != 0 {
            return None;
        }
        let step = step_ns / 1_000_000;
        if end < start || (end - start) / step >= MAX_POINTS || query.trim().is_empty() {
            return None;
        }
        let stats = get("stats").is_some_and(|s| !s.is_empty());
        let other = params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "query" | "start" | "end" | "step" | "stats"))
            .cloned()
            .collect();
        Some(RangeQuery {
            query,
            start,
            end,
            step,
            stats,
            other,
        })
    }

    /// Cortex's `StepAlignMiddleware`: start and end moved down onto the step grid.
    pub fn align_with_step(&mut self) {
        self.start -= self.start.rem_euclid(self.step);
        self.end -= self.end.rem_euclid(self.step);
    }

    /// The form body of one part `[start, end]`, always asking for statistics (the
    /// frontend reports every query's cost).
    pub fn part_form(&self, start: i64, end: i64) -> String {
        self.part_form_of(&self.query, start, end)
    }

    /// [`RangeQuery::part_form`] asking `query` instead (a shard of this one).
    pub fn part_form_of(&self, query: &str, start: i64, end: i64) -> String {
        let mut pairs: Vec<(&str, String)> = vec![
            ("query", query.to_string()),
            ("start", format_seconds(start)),
            ("end", format_seconds(end)),
            ("step", format_seconds(self.step)),
            ("stats", "all".into()),
        ];
        pairs.extend(self.other.iter().map(|(k, v)| (k.as_str(), v.clone())));
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    /// The parameters other than times and stats that change an answer, for cache keys.
    pub fn key_params(&self) -> String {
        let mut p: Vec<_> = self
            .other
            .iter()
            .filter(|(k, _)| k != "timeout")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        p.sort();
        p.join("&")
    }
}

/// Cortex's `splitQuery`: parts `[start, end]` with boundaries just before multiples of
/// `interval`, each part's start on the query's step grid. One part when `interval` is 0.
pub fn split(start: i64, end: i64, step: i64, interval: i64) -> Vec<(i64, i64)> {
    if interval <= 0 {
        return vec![(start, end)];
    }
    let mut parts = Vec::new();
    let mut s = start;
    while s <= end {
        let mut e = next_interval_boundary(s, step, interval);
        if e + step > end {
            e = end;
        }
        parts.push((s, e));
        s = e + step;
    }
    parts
}

/// The last step-grid time (counting from `t`) before the next multiple of `interval`.
fn next_interval_boundary(t: i64, step: i64, interval: i64) -> i64 {
    let next = (t.div_euclid(interval) + 1) * interval;
    let target = next - (next - t) % step;
    if target == next {
        target - step
    } else {
        target
    }
}

/// What splitting and caching may do with a query, read from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// An `@` modifier pins evaluation times: split parts would see other times for
    /// `@ start()`/`@ end()`, so such a query runs whole and uncached (as Cortex).
    pub has_at: bool,
    /// A negative offset reads data after each step's time: the freshness window does
    /// not cover it, so the query is split but not cached.
    pub negative_offset: bool,
    /// A call of `start()`, `end()` or `range()` (Prometheus 3's functions of the
    /// query's range): each part would see its own range, so such a query runs whole
    /// and uncached as `@` does. (`step()` is the same in every part.)
    pub range_functions: bool,
}

impl Shape {
    /// Whether the query may be split (and its parts cached).
    pub fn splittable(&self) -> bool {
        !self.has_at && !self.range_functions
    }
}

/// Scan PromQL text outside strings and comments: `@` only appears there as the at
/// modifier, and `offset` followed by `-` is a negative offset.
pub fn shape(q: &str) -> Shape {
    let b = q.as_bytes();
    let mut out = Shape {
        has_at: false,
        negative_offset: false,
        range_functions: false,
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            quote @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != quote {
                    if b[i] == b'\\' && quote != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'@' => out.has_at = true,
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let w = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &q[w..i];
                let rest = q[i..].trim_start();
                if word.eq_ignore_ascii_case("offset") && rest.starts_with('-') {
                    out.negative_offset = true;
                }
                // A function call: a name then `(` (label names and metric names are
                // never followed by one).
                if matches!(word, "start" | "end" | "range") && rest.starts_with('(') {
                    out.range_functions = true;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// A request time: float seconds or RFC 3339, in milliseconds (as the querier reads it).
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && f.abs() < 9.2e12 {
            let secs = f.trunc();
            let frac = ((f - secs) * 1000.0).round();
            return Some(secs as i64 * 1000 + frac as i64);
        }
        return None;
    }
    parse_rfc3339_ms(s).ok()
}

/// Milliseconds as Prometheus writes timestamps: seconds, then `.mmm` when not whole.
pub fn write_seconds(out: &mut String, ms: i64) {
    use std::fmt::Write;
    if ms < 0 {
        out.push('-');
    }
    let a = ms.unsigned_abs();
    let _ = write!(out, "{}", a / 1000);
    if !a.is_multiple_of(1000) {
        let _ = write!(out, ".{:03}", a % 1000);
    }
}

fn format_seconds(ms: i64) -> String {
    let mut s = String::new();
    write_seconds(&mut s, ms);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn parts_end_before_each_day_and_start_on_the_step_grid() {
        let step = 60_000;
        let start = 3 * DAY - 2 * 3_600_000 + 7_000; // 22:00:07 of day 2
        let end = 5 * DAY + 3_600_000 + 7_000;
        let parts = split(start, end, step, DAY);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], (start, 3 * DAY - 60_000 + 7_000));
        assert_eq!(parts[1].0, 3 * DAY + 7_000);
        assert_eq!(parts[1].1, 4 * DAY - 60_000 + 7_000);
        assert_eq!(parts[3].1, end);
        // consecutive parts cover the grid without gaps or overlaps
        for w in parts.windows(2) {
            assert_eq!(w[0].1 + step, w[1].0);
        }
        for (s, e) in &parts {
            assert_eq!((s - start) % step, 0);
            assert_eq!((e - start) % step, 0);
            assert_eq!(s.div_euclid(DAY), e.div_euclid(DAY));
        }
    }

    #[test]
    fn short_and_degenerate_ranges() {
        assert_eq!(split(10, 10, 5, DAY), vec![(10, 10)]);
        assert_eq!(split(0, DAY * 3, DAY * 2, DAY).len(), 2);
        assert_eq!(split(0, 100, 1, 0), vec![(0, 100)]);
        // a step longer than the interval: one point per part
        let p = split(0, 10 * DAY, 2 * DAY, DAY);
        assert_eq!(p.len(), 6);
        assert!(p.iter().all(|(s, e)| s == e));
    }

    #[test]
    fn shifting_by_one_step_keeps_full_days_identical() {
        let step = 300_000;
        let a = split(DAY / 2, 10 * DAY + DAY / 2, step, DAY);
        let b = split(DAY / 2 + step, 10 * DAY + DAY / 2 + step, step, DAY);
        assert_eq!(a[1..a.len() - 1], b[1..b.len() - 1]);
    }

    #[test]
    fn at_modifiers_and_negative_offsets_are_found_outside_strings() {
        assert!(shape("rate(x[5m] @ end())").has_at);
        assert!(!shape(r#"x{a="@"}"#).has_at);
        assert!(!shape("x # @ in a comment").has_at);
        assert!(shape("x offset -5m").negative_offset);
        assert!(shape("x OFFSET   -1h").negative_offset);
        assert!(!shape("x offset 5m").negative_offset);
        assert!(!shape("offset_metric - 1").negative_offset);
        assert!(!shape(r#"x{a="offset -1"}"#).negative_offset);
        for q in ["start()", "vector(end ( ))", "x + range()", "x[range()]"] {
            assert!(shape(q).range_functions && !shape(q).splittable(), "{q}");
        }
        for q in [
            "step()",
            "sum by (start, end) (range)",
            r#"x{range="a"}"#,
            r#"label_replace(x, "start", "$1", "end", "(.*)")"#,
        ] {
            assert!(!shape(q).range_functions && shape(q).splittable(), "{q}");
        }
    }

    #[test]
    fn params_parse_and_align() {
        let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let mut q = RangeQuery::parse(&p(&[
            ("query", "up"),
            ("start", "100.5"),
            ("end", "1970-01-01T00:10:00Z"),
            ("step", "1m"),
            ("dedup", "false"),
        ]))
        .unwrap();
        assert_eq!((q.start, q.end, q.step), (100_500, 600_000, 60_000));
        assert_eq!(q.key_params(), "dedup=false");
        q.align_with_step();
        assert_eq!((q.start, q.end), (60_000, 600_000));
        assert!(q
            .part_form(0, 1500)
            .contains("start=0&end=1.500&step=60&stats=all"));
        assert!(RangeQuery::parse(&p(&[
            ("query", "up"),
            ("start", "1"),
            ("end", "0"),
            ("step", "1")
        ]))
        .is_none());
        assert!(RangeQuery::parse(&p(&[
            ("query", "up"),
            ("start", "0"),
            ("end", "11000"),
            ("step", "1")
        ]))
        .is_none());
        assert!(RangeQuery::parse(&p(&[
            ("query", "up"),
            ("start", "0"),
            ("end", "1"),
            ("step", "0.0001")
        ]))
        .is_none());
    }
}
