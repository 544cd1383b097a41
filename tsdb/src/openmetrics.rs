//! A parser for the OpenMetrics text format as `promtool tsdb create-blocks-from
//! openmetrics` reads it: `# TYPE/HELP/UNIT` metadata, samples with optional timestamps
//! (seconds, fractional allowed) and exemplars (ignored), and the mandatory `# EOF`.
//!
//! It yields borrowed entries so a caller parsing gigabytes allocates only for series it
//! has not seen before.

use crate::error::{Error, Result};

/// One sample line, borrowing from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// 1-based line number, for error messages.
    pub line: usize,
    pub name: &'a str,
    /// Label pairs as written; values are still escaped (see [`unescape`]).
    pub labels: Vec<(&'a str, &'a str)>,
    pub value: f64,
    /// Milliseconds, converted as Prometheus does (`int64(seconds * 1000)`).
    pub timestamp_ms: Option<i64>,
}

/// Prometheus replaces every NaN it parses with this one (value.NormalNaN).
pub const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// Iterates over the samples of an OpenMetrics document.
pub struct Parser<'a> {
    lines: std::iter::Enumerate<std::str::Split<'a, char>>,
    saw_eof: bool,
}

impl<'a> Parser<'a> {
    pub fn new(input: &'a str) -> Self {
        Parser {
            lines: input.split('\n').enumerate(),
            saw_eof: false,
        }
    }

    fn err(line: usize, msg: impl std::fmt::Display) -> Error {
        Error::Invalid(format!("openmetrics line {line}: {msg}"))
    }

    /// The next sample; `Ok(None)` at a clean `# EOF`.
    pub fn next_sample(&mut self) -> Result<Option<Sample<'a>>> {
        loop {
            let Some((i, raw)) = self.lines.next() else {
                if self.saw_eof {
                    return Ok(None);
                }
                return Err(Error::Invalid(
                    "openmetrics: data does not end with # EOF".into(),
                ));
            };
            let line_no = i + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if self.saw_eof {
                if line.is_empty() {
                    continue;
                }
                return Err(Self::err(line_no, "unexpected data after # EOF"));
            }
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                if rest.trim() == "EOF" {
                    self.saw_eof = true;
                    continue;
                }
                let mut words = rest.trim_start().splitn(3, ' ');
                // Comments other than metadata are tolerated, as in the text format.
                if let Some("TYPE" | "HELP" | "UNIT") = words.next() {
                    if words.next().is_none_or(|n| n.is_empty()) {
                        return Err(Self::err(line_no, "metadata line without a metric name"));
                    }
                }
                continue;
            }
            return parse_sample(line, line_no).map(Some);
        }
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn parse_sample(line: &str, line_no: usize) -> Result<Sample<'_>> {
    let b = line.as_bytes();
    let err = |m: &str| Parser::err(line_no, format!("{m}: {line:?}"));
    if b.is_empty() || !is_name_start(b[0]) {
        return Err(err("expected a metric name"));
    }
    let mut i = 1;
    while i < b.len() && is_name_char(b[i]) {
        i += 1;
    }
    let name = &line[..i];
    let mut labels = Vec::new();
    if i < b.len() && b[i] == b'{' {
        i += 1;
        loop {
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i < b.len() && b[i] == b'}' {
                i += 1;
                break;
            }
            let start = i;
            if i >= b.len() || !(b[i].is_ascii_alphabetic() || b[i] == b'_') {
                return Err(err("expected a label name"));
            }
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let lname = &line[start..i];
            if i >= b.len() || b[i] != b'=' {
                return Err(err("expected '=' after label name"));
            }
            i += 1;
            if i >= b.len() || b[i] != b'"' {
                return Err(err("expected '\"' to open a label value"));
            }
            i += 1;
            let vstart = i;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(err("unterminated label value"));
            }
            labels.push((lname, &line[vstart..i]));
            i += 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(err("expected ',' or '}' after a label")),
            }
        }
    }
    if i >= b.len() || b[i] != b' ' {
        return Err(err("expected a space before the value"));
    }
    let rest = line[i..].trim_start();
    // An exemplar starts at " # "; everything after it is ignored.
    let rest = match rest.find(" #") {
        Some(p) => &rest[..p],
        None => rest,
    };
    let mut parts = rest.split_ascii_whitespace();
    let value = parts
        .next()
        .ok_or_else(|| err("expected a value"))
        .and_then(|v| parse_float(v).ok_or_else(|| err("invalid value")))?;
    let value = if value.is_nan() {
        f64::from_bits(NORMAL_NAN_BITS)
    } else {
        value
    };
    let timestamp_ms = match parts.next() {
        None => None,
        Some(t) => {
            let secs = parse_float(t).ok_or_else(|| err("invalid timestamp"))?;
            if !secs.is_finite() {
                return Err(err("invalid timestamp"));
            }
            Some((secs * 1000.0) as i64)
        }
    };
    if parts.next().is_some() {
        return Err(err("unexpected text after the timestamp"));
    }
    Ok(Sample {
        line: line_no,
        name,
        labels,
        value,
        timestamp_ms,
    })
}

/// Parse a float the way Go's `strconv.ParseFloat` accepts the values exporters write.
pub fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    s.parse::<f64>().ok()
}

/// Undo the label value escapes `\\`, `\"` and `\n`.
pub fn unescape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains('\\') {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str) -> Result<Vec<Sample<'_>>> {
        let mut p = Parser::new(input);
        let mut v = Vec::new();
        while let Some(s) = p.next_sample()? {
            v.push(s);
        }
        Ok(v)
    }

    #[test]
    fn parses_samples_and_metadata() {
        let s = all("# HELP x help text\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"z\"} 3.5 1700000015.5\ny -Inf\nz NaN 1 # {trace=\"t\"} 1 2\n# EOF\n").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].labels, vec![("a", "1"), ("b", "q\\\"z")]);
        assert_eq!(unescape(s[0].labels[1].1), "q\"z");
        assert_eq!(s[0].timestamp_ms, Some(1_700_000_015_500));
        assert_eq!(s[1].value, f64::NEG_INFINITY);
        assert_eq!(s[1].timestamp_ms, None);
        assert_eq!(s[2].value.to_bits(), NORMAL_NAN_BITS);
        assert_eq!(s[2].timestamp_ms, Some(1000));
    }

    #[test]
    fn requires_eof() {
        let e = all("x 1 1\n").unwrap_err();
        assert!(e.to_string().contains("# EOF"), "{e}");
        let e = all("# EOF\nx 1 1\n").unwrap_err();
        assert!(e.to_string().contains("after # EOF"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let e = all("x 1 1\nx{a=1} 2 2\n# EOF\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = all("x abc\n# EOF\n").unwrap_err();
        assert!(e.to_string().contains("invalid value"), "{e}");
    }

    #[test]
    fn go_style_timestamp_truncation() {
        let s = all("x 1 1700000030.001\n# EOF\n").unwrap();
        assert_eq!(s[0].timestamp_ms, Some((1700000030.001f64 * 1000.0) as i64));
    }
}
