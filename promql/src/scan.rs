//! A linear scan of the query text before and after `promql-parser` sees it.
//!
//! Before: the parser, its type checks and our evaluator recurse once per level of the
//! expression tree, and the parser's type checks re-walk chains of binary operators
//! (quadratic time), so `1+1+…` with thousands of terms, or thousands of nested calls,
//! would overflow a stack or burn CPU. The scan bounds the depth the tree can reach, in
//! O(length), before anything recursive runs. It also catches durations that overflow
//! (which the parser reports as "must be greater than 0" or panics on).
//!
//! After: the parser says only "invalid promql query" for a syntax error; the scan finds
//! what and where for the common cases, in Prometheus's `line:col: parse error: …` form.

use crate::QueryError;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Open(u8),
    Close(u8),
    Comma,
    /// An operator that can be binary (or unary `+`/`-`): each adds a tree level.
    Op,
    /// A number, or a duration inside brackets.
    Number,
    Word,
    Str,
    /// Matcher operators, `:` in subqueries, `@`, anything else.
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
}

/// Tokens of `q`, each with its byte range. Unterminated strings end the scan (the
/// parser's lexer reports them).
fn tokens(
    q: &str,
    mut each: impl FnMut(Tok, &[u8]) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    let b = q.as_bytes();
    let mut i = 0;
    // Inside `{…}` and `[…]` operators are matcher operators or durations: not tree
    // levels. Tracked here so `:` and `=` lex right.
    let mut brackets: Vec<u8> = Vec::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' | b'`' => {
                i += 1;
                loop {
                    if i >= b.len() {
                        return Ok(());
                    }
                    if b[i] == b'\\' && c != b'`' {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    if b[i - 1] == c {
                        break;
                    }
                }
                Kind::Str
            }
            b'(' | b'[' | b'{' => {
                i += 1;
                brackets.push(c);
                Kind::Open(c)
            }
            b')' | b']' | b'}' => {
                i += 1;
                brackets.pop();
                Kind::Close(c)
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b'0'..=b'9' | b'.' => {
                let hex = c == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X'));
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
                // 1e-5: the sign belongs to the number
                if !hex
                    && matches!(b[i - 1], b'e' | b'E')
                    && matches!(b.get(i), Some(b'+' | b'-'))
                    && b.get(i + 1).is_some_and(u8::is_ascii_digit)
                {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                Kind::Number
            }
            b':' if brackets.last() == Some(&b'[') => {
                i += 1;
                Kind::Other
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let in_braces = brackets.last() == Some(&b'{');
                match &q[start..i] {
                    "and" | "or" | "unless" | "atan2" if !in_braces => Kind::Op,
                    _ => Kind::Word,
                }
            }
            b'=' | b'!' | b'<' | b'>' => {
                i += 1;
                if matches!(b.get(i), Some(b'=' | b'~')) {
                    i += 1;
                }
                match (&q[start..i], brackets.last()) {
                    (_, Some(b'{')) | ("=" | "=~" | "!~" | "!", _) => Kind::Other,
                    _ => Kind::Op,
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => {
                i += 1;
                if matches!(brackets.last(), Some(b'{' | b'[')) {
                    Kind::Other
                } else {
                    Kind::Op
                }
            }
            _ => {
                i += q[i..].chars().next().map_or(1, char::len_utf8);
                Kind::Other
            }
        };
        each(
            Tok {
                kind,
                start,
                end: i,
            },
            b,
        )?;
    }
    Ok(())
}

/// `line:col` of byte offset `pos`, as Prometheus prints positions (col from 1).
fn position(q: &str, pos: usize) -> String {
    let before = &q.as_bytes()[..pos.min(q.len())];
    let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
    let col = pos
        - before
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    format!("{line}:{col}")
}

fn parse_error(q: &str, pos: usize, msg: impl std::fmt::Display) -> QueryError {
    QueryError::BadData(format!("{}: parse error: {msg}", position(q, pos)))
}

/// Refuse, before parsing, a query whose expression tree could be deeper than
/// `max_depth`, and durations that overflow. The depth counted is an upper bound of
/// the tree's: one level per open bracket and per operator in the same bracket and
/// argument (`a+b+c` is two binary nodes deep).
pub(crate) fn precheck(q: &str, max_depth: usize) -> Result<(), QueryError> {
    // Per open bracket (and the top level): operators counted in its current argument.
    let mut ops: Vec<usize> = vec![0];
    let mut open: Vec<u8> = Vec::new();
    let mut depth = 0usize;
    let mut after_offset = false;
    tokens(q, |t, b| {
        match t.kind {
            Kind::Open(c) => {
                open.push(c);
                ops.push(0);
                depth += 1;
            }
            Kind::Close(_) if open.pop().is_some() => {
                depth -= 1 + ops.pop().unwrap_or(0);
            }
            Kind::Comma => {
                let top = ops.last_mut().expect("top level");
                depth -= *top;
                *top = 0;
            }
            Kind::Op => {
                *ops.last_mut().expect("top level") += 1;
                depth += 1;
            }
            Kind::Number if open.last() == Some(&b'[') || after_offset => {
                let ds = std::str::from_utf8(&b[t.start..t.end]).unwrap_or("");
                if !duration_in_range(ds) {
                    return Err(parse_error(
                        q,
                        t.start,
                        format_args!("duration {ds:?} out of range"),
                    ));
                }
            }
            _ => {}
        }
        after_offset = match t.kind {
            Kind::Word => &b[t.start..t.end] == b"offset",
            // `offset -5m`
            Kind::Op => after_offset && b[t.start] == b'-',
            _ => false,
        };
        if depth > max_depth {
            return Err(parse_error(
                q,
                t.start,
                format_args!(
                    "expression nested more than {max_depth} levels deep (operators and brackets; the limit is --query.max-depth)"
                ),
            ));
        }
        Ok(())
    })
}

/// Whether a duration literal (`5m`, `1h30m`, `1.5`) fits Prometheus's range: at most
/// 2⁶³−1 ns. Literals that are not durations at all are left to the parser.
fn duration_in_range(ds: &str) -> bool {
    const MAX_NS: u128 = i64::MAX as u128;
    if let Ok(secs) = ds.parse::<f64>() {
        // NaN compares false both ways: refuse it explicitly
        return !secs.is_nan()
            && (secs * 1e9).partial_cmp(&(MAX_NS as f64)) != Some(std::cmp::Ordering::Greater);
    }
    let b = ds.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < b.len() {
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if s == i {
            return true;
        }
        let Ok(v) = ds[s..i].parse::<u128>() else {
            return false; // more digits than u128 holds
        };
        let u = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ns: u128 = match &ds[u..i] {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 7 * 86_400_000_000_000,
            "y" => 365 * 86_400_000_000_000,
            _ => return true,
        };
        total = match v.checked_mul(unit_ns).and_then(|x| x.checked_add(total)) {
            Some(t) if t <= MAX_NS => t,
            _ => return false,
        };
    }
    true
}

/// Whether Prometheus's lexer takes `c` outside strings and comments.
fn lexes(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_whitespace() || "_:@.+-*/%^=!<>~(){}[],\"'`#".contains(c)
}

/// `c` as Go's `%q` prints a rune.
fn go_quote_char(c: char) -> String {
    match c {
        '\\' => "'\\\\'".into(),
        '\'' => "'\\''".into(),
        c if c.is_control() => format!("'\\x{:02x}'", c as u32),
        c => format!("'{c}'"),
    }
}

/// Byte offset and quote of the first string that never closes, skipping comments.
fn unterminated_string(q: &str) -> Option<(usize, u8)> {
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'' | b'`') => {
                let start = i;
                i += 1;
                loop {
                    if i >= b.len() || (quote != b'`' && b[i] == b'\n') {
                        return Some((start, quote));
                    }
                    if b[i] == b'\\' && quote != b'`' {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    if b[i - 1] == quote {
                        break;
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// What and where for a query the parser refused without saying why; `None` when the
/// scan cannot tell.
pub(crate) fn diagnose(q: &str) -> Option<QueryError> {
    let mut open: Vec<(u8, usize)> = Vec::new();
    let mut prev: Option<Tok> = None;
    let mut found: Option<QueryError> = None;
    let r = tokens(q, |t, b| {
        let text = String::from_utf8_lossy(&b[t.start..t.end]);
        let binary_only = t.kind == Kind::Op && !matches!(&*text, "+" | "-");
        let after_operand_slot = match prev.map(|p| p.kind) {
            None => true,
            Some(Kind::Op | Kind::Comma) => true,
            Some(Kind::Open(c)) => c == b'(',
            _ => false,
        };
        match t.kind {
            Kind::Close(c) => {
                let name = match c {
                    b')' => "right parenthesis",
                    b']' => "right bracket",
                    _ => "right brace",
                };
                let want = match c {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                let unexpected = match open.pop() {
                    None => true,
                    Some((o, _)) => o != want,
                } || prev.is_some_and(|p| p.kind == Kind::Op);
                if unexpected {
                    return Err(parse_error(
                        q,
                        t.start,
                        format_args!("unexpected {name} '{}'", c as char),
                    ));
                }
            }
            Kind::Open(c) => open.push((c, t.start)),
            Kind::Op if binary_only && after_operand_slot => {
                return Err(parse_error(
                    q,
                    t.start,
                    format_args!("unexpected <op:{text}>"),
                ));
            }
            Kind::Comma if after_operand_slot => {
                return Err(parse_error(q, t.start, "unexpected \",\""));
            }
            Kind::Other => {
                if let Some(c) = q[t.start..].chars().next().filter(|&c| !lexes(c)) {
                    let inside = if open.last().is_some_and(|&(o, _)| o == b'{') {
                        " inside braces"
                    } else {
                        ""
                    };
                    return Err(parse_error(
                        q,
                        t.start,
                        format_args!("unexpected character{inside}: {}", go_quote_char(c)),
                    ));
                }
            }
            _ => {}
        }
        prev = Some(t);
        Ok(())
    });
    if let Err(e) = r {
        found = Some(e);
    }
    if found.is_some() {
        return found;
    }
    if let Some((at, quote)) = unterminated_string(q) {
        let what = if quote == b'`' {
            "unterminated raw string"
        } else {
            "unterminated quoted string"
        };
        return Some(parse_error(q, at, what));
    }
    if q.trim().is_empty() {
        return Some(parse_error(q, 0, "no expression found in input"));
    }
    let end = q.trim_end().len();
    if let Some(&(c, _)) = open.last() {
        let msg = match c {
            b'(' => "unclosed left parenthesis",
            b'[' => "unexpected end of input inside brackets",
            _ => "unexpected end of input inside braces",
        };
        return Some(parse_error(q, end, msg));
    }
    match prev.map(|p| p.kind) {
        Some(Kind::Op | Kind::Comma | Kind::Open(_)) => {
            Some(parse_error(q, end, "unexpected end of input"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(e: QueryError) -> String {
        e.to_string()
    }

    #[test]
    fn depth_counts_operators_and_brackets() {
        let plus = vec!["1"; 1500].join("+");
        assert!(precheck(&plus, 1000).is_err());
        assert!(precheck(&plus, 1499).is_ok());
        let calls = format!("{}1{}", "abs(".repeat(1500), ")".repeat(1500));
        let e = msg(precheck(&calls, 1000).unwrap_err());
        assert!(
            e.starts_with("1:4004: parse error: expression nested more than 1000 levels"),
            "{e}"
        );
        // Arguments and siblings do not add up: width is not depth.
        let wide = format!("f({})", vec!["a+b"; 5000].join(", "));
        assert!(precheck(&wide, 3).is_ok());
        let sums = vec!["sum(rate(x[5m]))"; 2000].join(" or ");
        assert!(precheck(&sums, 1000).is_err());
        // Operators inside matchers, strings and durations are not levels.
        assert!(precheck(r#"x{a!="+-*/", b=~"a|b"}[5m:1m] offset -5m"#, 2).is_ok());
        assert!(precheck("1e-5 + 1E+3", 1).is_ok());
    }

    #[test]
    fn durations_out_of_range() {
        let e = msg(precheck("rate(x[99999999999y])", 100).unwrap_err());
        assert_eq!(
            e,
            r#"1:8: parse error: duration "99999999999y" out of range"#
        );
        assert!(precheck("x offset 999999999999999999999999999999d", 100).is_err());
        assert!(precheck("x[1e30]", 100).is_err());
        assert!(precheck("x[292y]", 100).is_ok());
        assert!(precheck("x[1h30m] offset 1w", 100).is_ok());
        assert!(precheck("x[293y]", 100).is_err());
    }

    #[test]
    fn diagnoses_say_what_and_where() {
        let d = |q: &str| diagnose(q).map(msg);
        assert_eq!(
            d("1 +").as_deref(),
            Some("1:4: parse error: unexpected end of input")
        );
        assert_eq!(
            d("1 +\n").as_deref(),
            Some("1:4: parse error: unexpected end of input")
        );
        assert_eq!(
            d("sum(x").as_deref(),
            Some("1:6: parse error: unclosed left parenthesis")
        );
        assert_eq!(
            d("(1 +)").as_deref(),
            Some("1:5: parse error: unexpected right parenthesis ')'")
        );
        assert_eq!(
            d("1 + * 2").as_deref(),
            Some("1:5: parse error: unexpected <op:*>")
        );
        assert_eq!(
            d("x)").as_deref(),
            Some("1:2: parse error: unexpected right parenthesis ')'")
        );
        assert_eq!(
            d("a\n  and").as_deref(),
            Some("2:6: parse error: unexpected end of input")
        );
        assert_eq!(
            d(r#"x{a="é"} /"#).as_deref(),
            Some("1:12: parse error: unexpected end of input")
        );
        assert_eq!(d("up"), None);
        // the lexer's errors, placed
        assert_eq!(
            d("a|b").as_deref(),
            Some("1:2: parse error: unexpected character: '|'")
        );
        assert_eq!(
            d("up{a|b}").as_deref(),
            Some("1:5: parse error: unexpected character inside braces: '|'")
        );
        assert_eq!(
            d("a\\b").as_deref(),
            Some("1:2: parse error: unexpected character: '\\\\'")
        );
        assert_eq!(
            d("x`").as_deref(),
            Some("1:2: parse error: unterminated raw string")
        );
        assert_eq!(
            d(r#"up{a="b}"#).as_deref(),
            Some("1:6: parse error: unterminated quoted string")
        );
        assert_eq!(
            d("'ab").as_deref(),
            Some("1:1: parse error: unterminated quoted string")
        );
        assert_eq!(
            d("  ").as_deref(),
            Some("1:1: parse error: no expression found in input")
        );
        assert_eq!(d(r##"x{a="#"} # c"##), None);
    }
}
