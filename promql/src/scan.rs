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
    // what each open bracket is, and the one closed last
    let mut ctx: Vec<Bracket> = Vec::new();
    let mut closed: Option<Bracket> = None;
    let mut prev: Option<Tok> = None;
    let mut prev2: Option<Tok> = None;
    let mut found: Option<QueryError> = None;
    let r = tokens(q, |t, b| {
        let text = String::from_utf8_lossy(&b[t.start..t.end]);
        let prev_text = prev.map(|p| String::from_utf8_lossy(&b[p.start..p.end]).into_owned());
        if let Some(e) = syntax(q, t, &text, prev, prev_text.as_deref(), &mut ctx, closed) {
            return Err(e);
        }
        match t.kind {
            Kind::Open(c) => {
                let kind = match (c, prev.map(|p| p.kind), prev_text.as_deref()) {
                    (b'{', ..) => Bracket::Braces(Label::Name),
                    (b'[', ..) => Bracket::Brackets,
                    (_, Some(Kind::Word), Some(w)) if GROUPING.contains(&w) => Bracket::Modifier {
                        post: prev2.is_some_and(|p: Tok| p.kind == Kind::Close(b')')),
                    },
                    (_, Some(Kind::Word), Some(w)) if AGGREGATORS.contains(&w) => {
                        Bracket::Aggregation { grouped: false }
                    }
                    (_, Some(Kind::Close(b')')), _)
                        if closed == Some(Bracket::Modifier { post: false }) =>
                    {
                        // `sum by (a) (…)`: the body of an aggregation grouped first
                        Bracket::Aggregation { grouped: true }
                    }
                    (_, Some(Kind::Word), _) => Bracket::Call,
                    _ => Bracket::Group,
                };
                ctx.push(kind);
            }
            Kind::Close(_) => closed = ctx.pop(),
            _ => {}
        }
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
        prev2 = prev;
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
    match prev.map(|p| (p.kind, &q[p.start..p.end])) {
        Some((Kind::Op | Kind::Comma | Kind::Open(_), _)) => {
            Some(parse_error(q, end, "unexpected end of input"))
        }
        Some((Kind::Word, "by" | "without")) => Some(parse_error(
            q,
            end,
            "unexpected end of input in grouping opts, expected \"(\"",
        )),
        _ => None,
    }
}

const AGGREGATORS: [&str; 14] = [
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
];
/// Words followed by a bracketed label list.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Words that may follow an operand.
const AFTER_OPERAND: [&str; 8] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
];

/// What an open bracket belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bracket {
    /// An aggregation's body; `grouped` when `by`/`without` came before it.
    Aggregation {
        grouped: bool,
    },
    /// The label list of `by`, `without`, `on`, `ignoring`, `group_left/right`;
    /// `post` when it follows an aggregation's body (`sum(x) by (a)`).
    Modifier {
        post: bool,
    },
    Call,
    Group,
    Brackets,
    Braces(Label),
}

/// Where a label matcher inside braces is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Label {
    Name,
    /// After a name: its operator comes next (or, for a quoted metric name, `,`/`}`).
    Op {
        quoted: bool,
    },
    Value,
    /// After a value: `,` or `}`.
    Sep,
}

/// Prometheus's "unexpected …" for a token where the grammar has no place for it: two
/// operands in a row, label matchers out of order, `by`/`without` after something
/// that is not an aggregation.
fn syntax(
    q: &str,
    t: Tok,
    text: &str,
    prev: Option<Tok>,
    prev_text: Option<&str>,
    ctx: &mut [Bracket],
    closed: Option<Bracket>,
) -> Option<QueryError> {
    let describe = |t: Tok, text: &str| match t.kind {
        Kind::Word => format!("identifier {}", go_quote(text)),
        Kind::Number => format!("number {}", go_quote(text)),
        Kind::Str => format!("string {}", go_quote(text)),
        Kind::Close(c) | Kind::Open(c) => go_quote(&(c as char).to_string()),
        Kind::Comma => "\",\"".to_string(),
        _ => go_quote(text),
    };
    if t.kind == Kind::Other && !text.chars().next().is_some_and(lexes) {
        // the lexer's own error, reported by the caller
        return None;
    }
    if let Some(Bracket::Braces(state)) = ctx.last_mut() {
        let next = match (*state, t.kind) {
            (Label::Name, Kind::Word) => Ok(Label::Op { quoted: false }),
            (Label::Name, Kind::Str) => Ok(Label::Op { quoted: true }),
            (Label::Name, Kind::Close(_)) => Ok(Label::Name),
            (Label::Op { .. }, Kind::Other) if matches!(text, "=" | "!=" | "=~" | "!~") => {
                Ok(Label::Value)
            }
            (Label::Op { quoted: true }, Kind::Comma) => Ok(Label::Name),
            (Label::Op { quoted: true }, Kind::Close(_)) => Ok(Label::Name),
            (Label::Op { .. }, _) => Err("label matching operator"),
            (Label::Value, Kind::Str) => Ok(Label::Sep),
            (Label::Value, _) => Err("string"),
            (Label::Sep, Kind::Comma) => Ok(Label::Name),
            (Label::Sep, Kind::Close(_)) => Ok(Label::Sep),
            (Label::Sep, _) => Err("\",\" or \"}\""),
            (Label::Name, _) => Ok(*state),
        };
        return match next {
            Ok(n) => {
                *state = n;
                None
            }
            Err(expected) => Some(parse_error(
                q,
                t.start,
                format_args!(
                    "unexpected {} in label matching, expected {expected}",
                    describe(t, text)
                ),
            )),
        };
    }
    if matches!(ctx.last(), Some(Bracket::Brackets)) {
        return None;
    }
    let (p, pt) = (prev?, prev_text?);
    // `x @ foo`: only a number or start()/end() may follow `@`
    if pt == "@" && t.kind == Kind::Word && !matches!(text, "start" | "end") {
        return Some(parse_error(
            q,
            t.start,
            format_args!(
                "unexpected identifier {} in @, expected timestamp",
                go_quote(text)
            ),
        ));
    }
    if t.kind == Kind::Open(b'(')
        && p.kind == Kind::Close(b')')
        && closed == Some(Bracket::Modifier { post: true })
    {
        return Some(parse_error(q, t.start, "unexpected \"(\""));
    }
    if t.kind == Kind::Word && matches!(text, "by" | "without") {
        let fine = match p.kind {
            Kind::Word => AGGREGATORS.contains(&pt),
            Kind::Close(b')') => matches!(closed, Some(Bracket::Aggregation { grouped: false })),
            _ => false,
        };
        if !fine {
            return Some(parse_error(q, t.start, format_args!("unexpected <{text}>")));
        }
        return None;
    }
    let operand_end = match p.kind {
        Kind::Word => !AFTER_OPERAND.contains(&pt) && !AGGREGATORS.contains(&pt),
        Kind::Number | Kind::Str => true,
        Kind::Close(b')') => !matches!(closed, Some(Bracket::Modifier { .. })),
        Kind::Close(_) => true,
        _ => false,
    };
    let operand_start = match t.kind {
        Kind::Word => !AFTER_OPERAND.contains(&text),
        Kind::Number | Kind::Str => true,
        _ => false,
    };
    // a duration after `offset` lexes as a number: no operand ends at `offset`
    if operand_end && operand_start {
        return Some(parse_error(
            q,
            t.start,
            format_args!("unexpected {}", describe(t, text)),
        ));
    }
    None
}

/// `s` in double quotes with Go's escapes, as Prometheus quotes tokens in errors.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prometheus's wording and position for a message the parser gave without a position
/// (its type checks and argument counts); `None` when no rule fits.
pub(crate) fn explain(q: &str, msg: &str) -> Option<QueryError> {
    let root = q.len() - q.trim_start().len();
    let ty = |t: &str| {
        match t {
            "matrix" => "range vector",
            "vector" => "instant vector",
            other => other,
        }
        .to_string()
    };
    if let Some(c) = captures(msg, "expected type {} in call to function '{}', got {}") {
        let (want, func, got) = (ty(&c[0]), &c[1], ty(&c[2]));
        let at = call_args(q, func)
            .and_then(|args| {
                // a string parameter is never a function's first
                let skip = usize::from(want == "string");
                args.iter()
                    .skip(skip)
                    .find(|&&(a, b)| looks_like(&q[a..b]) == got)
                    .or(args.first())
                    .map(|a| a.0)
            })
            .unwrap_or(root);
        return Some(parse_error(
            q,
            at,
            format_args!("expected type {want} in call to function \"{func}\", got {got}"),
        ));
    }
    if let Some(c) = captures(msg, "expected type {} in aggregation expression, got {}") {
        let at = aggregation_param(q).unwrap_or(root);
        return Some(parse_error(
            q,
            at,
            format_args!(
                "expected type {} in aggregation parameter, got {}",
                ty(&c[0]),
                ty(&c[1])
            ),
        ));
    }
    for form in [
        "expected {} argument(s) in call to '{}', got {}",
        "expected at least {} argument(s) in call to '{}', got {}",
        "expected at most {} argument(s) in call to '{}', got {}",
    ] {
        if let Some(c) = captures(msg, form) {
            let at = word_before_paren(q, &c[1]).unwrap_or(root);
            let text = form
                .replacen("{}", &c[0], 1)
                .replacen("'{}'", &format!("\"{}\"", c[1]), 1);
            return Some(parse_error(q, at, text.replacen("{}", &c[2], 1)));
        }
    }
    if let Some(c) = captures(msg, "unknown function with name '{}'") {
        let at = word_before_paren(q, &c[0]).unwrap_or(root);
        return Some(parse_error(
            q,
            at,
            format_args!("unknown function with name \"{}\"", c[0]),
        ));
    }
    if let Some(c) = captures(
        msg,
        "set operator '{}' not allowed in binary scalar expression",
    ) {
        return Some(parse_error(
            q,
            root,
            format_args!(
                "set operator \"{}\" not allowed in binary scalar expression",
                c[0]
            ),
        ));
    }
    if let Some(c) = captures(
        msg,
        "unary expression only allowed on expressions of type scalar or vector, got: {}",
    ) {
        return Some(parse_error(
            q,
            root,
            format_args!(
                "unary expression only allowed on expressions of type scalar or instant vector, got \"{}\"",
                c[0]
            ),
        ));
    }
    if let Some(c) = captures(msg, "not a valid duration string: {}") {
        let at = q.find(c[0].as_str()).unwrap_or(root);
        return Some(parse_error(
            q,
            at,
            format_args!("not a valid duration string: \"{}\"", c[0]),
        ));
    }
    if msg.starts_with("unexpected end of input") {
        return Some(parse_error(q, q.trim_end().len(), msg));
    }
    if msg.starts_with("unexpected character after '!'") {
        let at = q.find('!').unwrap_or(root);
        return Some(parse_error(q, at, msg));
    }
    match msg {
        "binary expression must contain only scalar and instant vector types"
        | "vector selector must contain at least one non-empty matcher" => {
            Some(parse_error(q, root, msg))
        }
        m if m.starts_with("wrong number of arguments for aggregate expression") => {
            Some(parse_error(q, root, msg))
        }
        "comparisons between scalars must use BOOL modifier" => {
            let mut at = None;
            let _ = tokens(q, |t, b| {
                let op = &b[t.start..t.end];
                if at.is_none()
                    && t.kind == Kind::Op
                    && matches!(op, b"==" | b"!=" | b"<" | b">" | b"<=" | b">=")
                {
                    at = Some(t.start);
                }
                Ok(())
            });
            Some(parse_error(q, at.unwrap_or(root), msg))
        }
        _ => None,
    }
}

/// The `{}` holes of `form` filled from `msg`, or `None` when it does not fit.
fn captures(msg: &str, form: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = form.split("{}").collect();
    let mut rest = msg.strip_prefix(parts[0])?;
    let mut out = Vec::new();
    for (k, lit) in parts.iter().enumerate().skip(1) {
        let end = if lit.is_empty() && k == parts.len() - 1 {
            rest.len()
        } else {
            rest.find(lit)?
        };
        out.push(rest[..end].to_string());
        rest = &rest[end + lit.len()..];
    }
    rest.is_empty().then_some(out)
}

/// Byte offset of `name` where it is followed by `(` (a call or an aggregation).
fn word_before_paren(q: &str, name: &str) -> Option<usize> {
    let mut at = None;
    let mut prev: Option<Tok> = None;
    let _ = tokens(q, |t, b| {
        if let (Some(p), Kind::Open(b'(')) = (prev, t.kind) {
            if at.is_none() && p.kind == Kind::Word && &b[p.start..p.end] == name.as_bytes() {
                at = Some(p.start);
            }
        }
        prev = Some(t);
        Ok(())
    });
    at
}

/// Byte ranges of the arguments of the first call to `func`.
fn call_args(q: &str, func: &str) -> Option<Vec<(usize, usize)>> {
    let name = word_before_paren(q, func)?;
    let open = name + q[name..].find('(')?;
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    let mut last_end = open + 1;
    let mut done = false;
    let _ = tokens(&q[open..], |t, _| {
        if done {
            return Ok(());
        }
        let (a, b) = (open + t.start, open + t.end);
        match t.kind {
            Kind::Open(_) => {
                depth += 1;
                if depth == 1 {
                    return Ok(());
                }
            }
            Kind::Close(_) => {
                depth -= 1;
                if depth == 0 {
                    if let Some(s) = start.take() {
                        args.push((s, last_end));
                    }
                    done = true;
                    return Ok(());
                }
            }
            Kind::Comma if depth == 1 => {
                if let Some(s) = start.take() {
                    args.push((s, last_end));
                }
                return Ok(());
            }
            _ => {}
        }
        start.get_or_insert(a);
        last_end = b;
        Ok(())
    });
    Some(args)
}

/// The type an argument's text most likely has, in Prometheus's words.
fn looks_like(arg: &str) -> &'static str {
    let a = arg.trim();
    if a.starts_with('"') || a.starts_with('\'') || a.starts_with('`') {
        "string"
    } else if a.ends_with(']') || a.contains("] offset") || a.contains("] @") {
        "range vector"
    } else if a.parse::<f64>().is_ok() {
        "scalar"
    } else {
        "instant vector"
    }
}

/// Where the parameter of the first aggregation with one (`topk(k, …)`) starts.
fn aggregation_param(q: &str) -> Option<usize> {
    const AGG: [&str; 6] = [
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
        "limit_ratio",
    ];
    let name = AGG.iter().filter_map(|a| word_before_paren(q, a)).min()?;
    let mut at = None;
    let mut opened = false;
    let _ = tokens(&q[name..], |t, b| {
        if at.is_some() {
            return Ok(());
        }
        match t.kind {
            Kind::Open(b'(') if !opened => opened = true,
            _ if opened && !b[t.start].is_ascii_whitespace() => at = Some(name + t.start),
            _ => {}
        }
        Ok(())
    });
    at
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

    #[test]
    fn explanations_in_prometheus_words() {
        let e = |q: &str, m: &str| explain(q, m).map(msg);
        assert_eq!(
            e(
                "rate(x)",
                "expected type matrix in call to function 'rate', got vector"
            )
            .as_deref(),
            Some(
                r#"1:6: parse error: expected type range vector in call to function "rate", got instant vector"#
            )
        );
        assert_eq!(
            e("topk(x, y)", "expected type scalar in aggregation expression, got vector").as_deref(),
            Some("1:6: parse error: expected type scalar in aggregation parameter, got instant vector")
        );
        assert_eq!(
            e(
                "abs(x, y)",
                "expected 1 argument(s) in call to 'abs', got 2"
            )
            .as_deref(),
            Some(r#"1:1: parse error: expected 1 argument(s) in call to "abs", got 2"#)
        );
        assert_eq!(
            e(
                "1 < 2",
                "comparisons between scalars must use BOOL modifier"
            )
            .as_deref(),
            Some("1:3: parse error: comparisons between scalars must use BOOL modifier")
        );
        assert_eq!(
            e("x[1.5m]", "not a valid duration string: 1.5m").as_deref(),
            Some(r#"1:3: parse error: not a valid duration string: "1.5m""#)
        );
        assert_eq!(e("x", "something else"), None);
    }
}
