//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus's regex semantics: the
//! pattern is fully anchored and `.` matches a newline too (Prometheus 3.x).
//!
//! Common regex shapes are matched without the regex engine: `.*`, `.+`, a literal,
//! and an alternation of literals (`a|b|c`, as Grafana's multi-value variables produce).

use std::collections::HashSet;
use std::fmt;

use regex::Regex;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        })
    }
}

#[derive(Debug, Clone)]
enum Fast {
    /// `.*`
    Any,
    /// `.+`
    NonEmpty,
    /// a set of literal alternatives (one element for a plain literal)
    Set(HashSet<String>),
    Regex(Regex),
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub op: MatchOp,
    pub name: String,
    pub value: String,
    fast: Option<Fast>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op && self.name == other.name && self.value == other.value
    }
}

impl Eq for Matcher {}

impl Matcher {
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        let fast = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => Some(compile(&value)?),
            _ => None,
        };
        Ok(Matcher {
            op,
            name: name.into(),
            value,
            fast,
        })
    }

    /// Shorthand for an equality matcher, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            op: MatchOp::Equal,
            name: name.into(),
            value: value.into(),
            fast: None,
        }
    }

    /// Whether a label value (empty when the label is absent) satisfies the matcher.
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::RegexMatch => self.regex_matches(v),
            MatchOp::RegexNoMatch => !self.regex_matches(v),
        }
    }

    fn regex_matches(&self, v: &str) -> bool {
        match self.fast.as_ref().expect("regex matcher is compiled") {
            Fast::Any => true,
            Fast::NonEmpty => !v.is_empty(),
            Fast::Set(s) => s.contains(v),
            Fast::Regex(r) => r.is_match(v),
        }
    }

    /// The literal values this matcher accepts, when it accepts a finite set (`=` or a
    /// regex of literal alternatives): lets postings lookups skip scanning all values.
    pub fn set_matches(&self) -> Option<Vec<&str>> {
        match (self.op, &self.fast) {
            (MatchOp::Equal, _) => Some(vec![self.value.as_str()]),
            (MatchOp::RegexMatch, Some(Fast::Set(s))) => {
                let mut v: Vec<&str> = s.iter().map(|s| s.as_str()).collect();
                v.sort_unstable();
                Some(v)
            }
            _ => None,
        }
    }

    /// Whether the matcher accepts the empty string (and so series lacking the label).
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, self.op)?;
        crate::labels::go_quote(f, &self.value)
    }
}

const META: &[char] = &[
    '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
];

fn compile(pattern: &str) -> Result<Fast> {
    match pattern {
        ".*" => return Ok(Fast::Any),
        ".+" => return Ok(Fast::NonEmpty),
        _ => {}
    }
    // `a|b|c` of plain literals: a set lookup. A bare `|` alternative is the empty string.
    if !pattern.contains(|c: char| META.contains(&c) && c != '|') {
        return Ok(Fast::Set(pattern.split('|').map(str::to_owned).collect()));
    }
    let anchored = format!("^(?s:{pattern})$");
    Regex::new(&anchored)
        .map(Fast::Regex)
        .map_err(|e| Error::InvalidRegex {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })
}

/// Parse a series selector such as `up{job="node", instance=~"a.*"}` or
/// `{__name__=~'(?s:.*)'}` into matchers (the `--match` flag of `tsdb dump`). Values
/// may be quoted with `"`, `'` or backticks; `"` and `'` take backslash escapes.
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>> {
    let bad = |why: &str| Error::Invalid(format!("bad series selector {s:?}: {why}"));
    let s = s.trim();
    let (name, rest) = match s.find('{') {
        Some(i) => (s[..i].trim(), &s[i..]),
        None => (s, ""),
    };
    let mut out = Vec::new();
    if !name.is_empty() {
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        {
            return Err(bad("invalid metric name"));
        }
        out.push(Matcher::equal(crate::labels::METRIC_NAME, name));
    }
    if rest.is_empty() {
        if out.is_empty() {
            return Err(bad("empty selector"));
        }
        return Ok(out);
    }
    let inner = rest
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| bad("unbalanced braces"))?;
    let mut chars = inner.char_indices().peekable();
    loop {
        while chars
            .next_if(|(_, c)| c.is_whitespace() || *c == ',')
            .is_some()
        {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        while chars
            .next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
            .is_some()
        {}
        let end = chars.peek().map(|(i, _)| *i).unwrap_or(inner.len());
        let lname = &inner[start..end];
        if lname.is_empty() {
            return Err(bad("expected a label name"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let op = match (chars.next().map(|x| x.1), chars.peek().map(|x| x.1)) {
            (Some('='), Some('~')) => {
                chars.next();
                MatchOp::RegexMatch
            }
            (Some('='), _) => MatchOp::Equal,
            (Some('!'), Some('=')) => {
                chars.next();
                MatchOp::NotEqual
            }
            (Some('!'), Some('~')) => {
                chars.next();
                MatchOp::RegexNoMatch
            }
            _ => return Err(bad("expected =, !=, =~ or !~")),
        };
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let quote = match chars.next() {
            Some((_, q @ ('"' | '\'' | '`'))) => q,
            _ => return Err(bad("expected a quoted value")),
        };
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(bad("unterminated value")),
                Some((_, c)) if c == quote => break,
                Some((_, '\\')) if quote != '`' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, c)) => value.push(c),
                    None => return Err(bad("unterminated value")),
                },
                Some((_, c)) => value.push(c),
            }
        }
        out.push(Matcher::new(op, lname, value)?);
    }
    if out.is_empty() {
        return Err(bad("no matchers"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(op: MatchOp, v: &str) -> Matcher {
        Matcher::new(op, "l", v).unwrap()
    }

    #[test]
    fn anchored_regex() {
        let r = m(MatchOp::RegexMatch, "fo+");
        assert!(r.matches("foo"));
        assert!(!r.matches("xfoo"));
        assert!(!r.matches("foox"));
        let r = m(MatchOp::RegexMatch, "a|b.*");
        assert!(r.matches("a") && r.matches("bcd") && !r.matches("ab"));
    }

    #[test]
    fn dot_matches_newline() {
        assert!(m(MatchOp::RegexMatch, "a.b").matches("a\nb"));
        assert!(m(MatchOp::RegexMatch, ".*").matches("x\ny"));
    }

    #[test]
    fn fast_paths_agree_with_regex() {
        for (pat, vals) in [
            (".*", vec!["", "x", "\n"]),
            (".+", vec!["", "x"]),
            ("foo|bar|", vec!["", "foo", "bar", "baz", "foobar"]),
            ("foo", vec!["foo", "fo", ""]),
        ] {
            let fast = m(MatchOp::RegexMatch, pat);
            let slow = Regex::new(&format!("^(?s:{pat})$")).unwrap();
            for v in vals {
                assert_eq!(fast.matches(v), slow.is_match(v), "{pat} on {v:?}");
            }
        }
    }

    #[test]
    fn negative_and_empty() {
        assert!(m(MatchOp::NotEqual, "x").matches(""));
        assert!(m(MatchOp::RegexNoMatch, "x.*").matches("y"));
        assert!(m(MatchOp::RegexMatch, "x|").matches_empty());
        assert!(!m(MatchOp::RegexMatch, "x").matches_empty());
    }

    #[test]
    fn bad_regex_is_named() {
        let e = Matcher::new(MatchOp::RegexMatch, "l", "a(").unwrap_err();
        assert!(e.to_string().contains("a("), "{e}");
    }

    #[test]
    fn selectors() {
        let m = parse_selector(r#"up{job="a\"b", x=~'y.*' ,z!=`q\w`}"#).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].to_string(), r#"__name__="up""#);
        assert_eq!(m[1].value, "a\"b");
        assert_eq!(m[2].op, MatchOp::RegexMatch);
        assert_eq!(m[3].value, "q\\w");
        assert_eq!(
            parse_selector("{__name__=~'(?s:.*)'}").unwrap()[0].value,
            "(?s:.*)"
        );
        assert!(parse_selector("{a=}").is_err());
        assert!(parse_selector("{a=\"x}").is_err());
        assert!(parse_selector("").is_err());
    }

    #[test]
    fn set_matches() {
        let ba = m(MatchOp::RegexMatch, "b|a");
        let mut s = ba.set_matches().unwrap();
        s.sort();
        assert_eq!(s, vec!["a", "b"]);
        assert!(m(MatchOp::RegexMatch, "a.*").set_matches().is_none());
    }
}
