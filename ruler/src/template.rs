//! Go `text/template` as Prometheus uses it in alert labels and annotations: actions
//! and trim markers, pipelines, variables (`$labels`, `$value`, `$externalLabels`,
//! `$externalURL`, `$`), `if`/`else if`/`else`, `range` (with `else`), `with`,
//! comments, and Prometheus's function map (`humanize*`, `query`, `first`, `value`,
//! `label`, `printf`, `title`, `toUpper`, `match`, `reReplaceAll`, …) with Go's
//! comparison and logic builtins. No crate implements Go templates for our toolchain
//! with closures for functions (`query` needs the rule's query engine), hence this
//! interpreter of the subset rule files use.
//!
//! Options as Prometheus sets them: `missingkey=zero` (a missing label is empty).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Map(BTreeMap<String, Val>),
    List(Vec<Val>),
    /// One element of a `query` result: `.Labels`, `.Value`.
    Sample(BTreeMap<String, String>, f64),
}

impl Val {
    fn truth(&self) -> bool {
        match self {
            Val::Nil => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::Map(m) => !m.is_empty(),
            Val::List(l) => !l.is_empty(),
            Val::Sample(..) => true,
        }
    }

    /// `fmt.Sprint`.
    fn print(&self, out: &mut String) {
        match self {
            Val::Nil => out.push_str("<no value>"),
            Val::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Float(f) => out.push_str(&strata_tsdb::labels::go_format_g(*f)),
            Val::Str(s) => out.push_str(s),
            Val::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.print(out);
                }
                out.push(']');
            }
            Val::List(l) => {
                out.push('[');
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.print(out);
                }
                out.push(']');
            }
            Val::Sample(l, v) => {
                out.push_str("&{map[");
                for (i, (k, x)) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{k}:{x}");
                }
                let _ = write!(out, "] {}}}", strata_tsdb::labels::go_format_g(*v));
            }
        }
    }

    fn to_text(&self) -> String {
        let mut s = String::new();
        self.print(&mut s);
        s
    }

    fn type_name(&self) -> &'static str {
        match self {
            Val::Nil => "nil",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float64",
            Val::Str(_) => "string",
            Val::Map(_) => "map[string]string",
            Val::List(_) => "template.queryResult",
            Val::Sample(..) => "*template.sample",
        }
    }

    /// Prometheus's `convertToFloat`.
    fn to_float(&self) -> Result<f64, String> {
        match self {
            Val::Float(f) => Ok(*f),
            Val::Int(i) => Ok(*i as f64),
            Val::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
            v => Err(format!("can't convert {} to float", v.type_name())),
        }
    }

    fn from_labels(m: &BTreeMap<String, String>) -> Val {
        Val::Map(
            m.iter()
                .map(|(k, v)| (k.clone(), Val::Str(v.clone())))
                .collect(),
        )
    }
}

/// Runs `query` for the template's `query` function: `(expr) -> [(labels, value)]`.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> QueryResult;

/// A `query` result: each sample's labels and value.
pub type QueryResult = Result<Vec<(BTreeMap<String, String>, f64)>, String>;

/// What an alert's templates see.
#[derive(Debug, Clone, Default)]
pub struct AlertData {
    pub labels: BTreeMap<String, String>,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
    pub value: f64,
}

/// Expand `text` for an alert as Prometheus does (`$labels`, `$externalLabels`,
/// `$externalURL`, `$value` defined). On error: `<error expanding template: …>`.
pub fn expand_alert(name: &str, text: &str, data: &AlertData, query: QueryFn) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    let result = Template::parse(&format!("__alert_{name}"), text).and_then(|t| {
        let root = Val::Map(BTreeMap::from([
            ("Labels".to_string(), Val::from_labels(&data.labels)),
            (
                "ExternalLabels".to_string(),
                Val::from_labels(&data.external_labels),
            ),
            (
                "ExternalURL".to_string(),
                Val::Str(data.external_url.clone()),
            ),
            ("Value".to_string(), Val::Float(data.value)),
        ]));
        let vars = vec![
            ("$".to_string(), root.clone()),
            ("$labels".to_string(), Val::from_labels(&data.labels)),
            (
                "$externalLabels".to_string(),
                Val::from_labels(&data.external_labels),
            ),
            (
                "$externalURL".to_string(),
                Val::Str(data.external_url.clone()),
            ),
            ("$value".to_string(), Val::Float(data.value)),
        ];
        t.execute(root, vars, query, &data.external_url)
    });
    match result {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(alert = name, error = %e, "expanding alert template failed");
            format!("<error expanding template: {e}>")
        }
    }
}

// ---------------------------------------------------------------------------------
// Syntax

#[derive(Debug, Clone)]
enum Arg {
    /// `.A.B` (empty: `.`).
    Field(Vec<String>),
    /// `$x.A.B`.
    Var(String, Vec<String>),
    Func(String),
    Lit(Val),
    /// `( pipeline ).A.B`.
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone)]
struct Pipeline {
    decl: Vec<String>,
    /// `=` rather than `:=`.
    assign: bool,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    nodes: Vec<Node>,
}

/// One `{{ … }}` or text piece, with its line.
enum Piece {
    Text(String),
    Action(String, usize),
}

const FUNCS: &[&str] = &[
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    "slice",
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "stripPort",
    "stripDomain",
    "toDuration",
    "now",
];

impl Template {
    /// Parse; the error is Go's shape: `template: NAME:LINE: message`.
    pub fn parse(name: &str, text: &str) -> Result<Template, String> {
        let pieces = lex(text).map_err(|(line, m)| format!("template: {name}:{line}: {m}"))?;
        let mut p = Parser {
            pieces,
            pos: 0,
            name: name.to_string(),
            vars: vec![vec![
                "$".to_string(),
                "$labels".to_string(),
                "$externalLabels".to_string(),
                "$externalURL".to_string(),
                "$value".to_string(),
            ]],
        };
        let (nodes, end) = p.list()?;
        if let Some((kw, line)) = end {
            return Err(format!("template: {name}:{line}: unexpected {{{{{kw}}}}}"));
        }
        Ok(Template {
            name: name.to_string(),
            nodes,
        })
    }

    fn execute(
        &self,
        dot: Val,
        vars: Vec<(String, Val)>,
        query: QueryFn,
        external_url: &str,
    ) -> Result<String, String> {
        let mut ex = Exec {
            vars,
            query,
            external_url,
            out: String::new(),
        };
        ex.nodes(&self.nodes, &dot)
            .map_err(|e| format!("template: {}: {e}", self.name))?;
        Ok(ex.out)
    }

    /// Execute with `dot` and no variables but `$` (tests and `promtool`-style uses).
    pub fn execute_with(&self, dot: Val, query: QueryFn) -> Result<String, String> {
        self.execute(dot.clone(), vec![("$".into(), dot)], query, "")
    }
}

fn lex(text: &str) -> Result<Vec<Piece>, (usize, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut line = 1;
    while let Some(i) = rest.find("{{") {
        let mut t = &rest[..i];
        let after = &rest[i + 2..];
        let trim_left =
            after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            t = t.trim_end();
        }
        line += rest[..i].matches('\n').count();
        if !t.is_empty() {
            out.push(Piece::Text(t.to_string()));
        }
        let body_start = if trim_left { 1 } else { 0 };
        let Some(j) = find_close(after) else {
            return Err((line, "unclosed action".to_string()));
        };
        let mut body = &after[body_start..j];
        let mut close = j + 2;
        let trim_right = body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-");
        if trim_right {
            body = &body[..body.len() - 1];
        }
        let b = body.trim();
        if !(b.starts_with("/*") && b.ends_with("*/")) {
            out.push(Piece::Action(b.to_string(), line));
        }
        line += after[..j].matches('\n').count();
        rest = &after[close..];
        if trim_right {
            let trimmed = rest.trim_start();
            line += rest[..rest.len() - trimmed.len()].matches('\n').count();
            close = 0;
            rest = &rest[close..];
            rest = rest.trim_start();
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// The `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(Val),
    Pipe,
    LParen,
    RParen(Vec<String>),
    Declare,
    Assign,
    Comma,
}

fn tokens(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let fields = |b: &[char], i: &mut usize| -> Vec<String> {
        let mut f = Vec::new();
        while *i < b.len() && b[*i] == '.' {
            *i += 1;
            let st = *i;
            while *i < b.len() && (b[*i].is_alphanumeric() || b[*i] == '_') {
                *i += 1;
            }
            if st == *i {
                break;
            }
            f.push(b[st..*i].iter().collect());
        }
        f
    };
    while i < b.len() {
        let c = b[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '|' => {
                out.push(Tok::Pipe);
                i += 1
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                i += 1;
                out.push(Tok::RParen(fields(&b, &mut i)));
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            ':' if b.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1
            }
            '.' => {
                if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    let st = i;
                    i += 1;
                    while i < b.len() && (b[i].is_ascii_digit() || b[i] == 'e') {
                        i += 1;
                    }
                    let t: String = b[st..i].iter().collect();
                    out.push(Tok::Lit(Val::Float(
                        t.parse().map_err(|_| format!("bad number syntax: {t:?}"))?,
                    )));
                    continue;
                }
                let f = fields(&b, &mut i);
                if f.is_empty() {
                    i += 1;
                }
                out.push(Tok::Field(f));
            }
            '$' => {
                let st = i;
                i += 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                let name: String = b[st..i].iter().collect();
                out.push(Tok::Var(name, fields(&b, &mut i)));
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = b.get(i) else {
                        return Err("unterminated quoted string".into());
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = b.get(i).copied().unwrap_or('\\');
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                        c => s.push(c),
                    }
                }
                out.push(Tok::Lit(Val::Str(s)));
            }
            '`' => {
                let st = i + 1;
                i += 1;
                while i < b.len() && b[i] != '`' {
                    i += 1;
                }
                if i >= b.len() {
                    return Err("unterminated raw quoted string".into());
                }
                out.push(Tok::Lit(Val::Str(b[st..i].iter().collect())));
                i += 1;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let st = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == '.'
                        || ((b[i] == '-' || b[i] == '+') && matches!(b[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let t: String = b[st..i].iter().collect();
                if let Ok(n) = t.parse::<i64>() {
                    out.push(Tok::Lit(Val::Int(n)));
                } else if let Ok(f) = t.parse::<f64>() {
                    out.push(Tok::Lit(Val::Float(f)));
                } else {
                    return Err(format!("bad number syntax: {t:?}"));
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let st = i;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                let w: String = b[st..i].iter().collect();
                out.push(match w.as_str() {
                    "true" => Tok::Lit(Val::Bool(true)),
                    "false" => Tok::Lit(Val::Bool(false)),
                    "nil" => Tok::Lit(Val::Nil),
                    _ => Tok::Ident(w),
                });
            }
            c => return Err(format!("unexpected {c:?} in command")),
        }
    }
    Ok(out)
}

struct Parser {
    pieces: Vec<Piece>,
    pos: usize,
    name: String,
    vars: Vec<Vec<String>>,
}

impl Parser {
    fn err(&self, line: usize, m: impl std::fmt::Display) -> String {
        format!("template: {}:{line}: {m}", self.name)
    }

    /// Nodes up to an `end`/`else…` (returned with its line) or the end of input.
    #[allow(clippy::type_complexity)]
    fn list(&mut self) -> Result<(Vec<Node>, Option<(String, usize)>), String> {
        let mut nodes = Vec::new();
        while self.pos < self.pieces.len() {
            let i = self.pos;
            self.pos += 1;
            let (body, line) = match &self.pieces[i] {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t.clone()));
                    continue;
                }
                Piece::Action(b, l) => (b.clone(), *l),
            };
            let word = body.split_whitespace().next().unwrap_or("");
            match word {
                "end" | "else" => return Ok((nodes, Some((body, line)))),
                "if" | "range" | "with" => {
                    let rest = body[word.len()..].trim().to_string();
                    nodes.push(self.control(word, &rest, line)?);
                }
                "define" | "template" | "block" | "break" | "continue" => {
                    return Err(self.err(line, format!("{word} is not supported in rule templates")))
                }
                "" => return Err(self.err(line, "missing value for command")),
                _ => {
                    let p = self.pipeline(&body, line)?;
                    nodes.push(Node::Action(p));
                }
            }
        }
        Ok((nodes, None))
    }

    fn control(&mut self, word: &str, rest: &str, line: usize) -> Result<Node, String> {
        self.vars.push(Vec::new());
        let pipe = self.pipeline(rest, line)?;
        let (body, end) = self.list()?;
        let mut else_ = Vec::new();
        let mut branches = vec![(pipe.clone(), body.clone())];
        let mut end = end;
        loop {
            match end {
                None => return Err(self.err(line, format!("unexpected EOF in {word}"))),
                Some((kw, l)) if kw == "end" => {
                    let _ = l;
                    break;
                }
                Some((kw, l)) => {
                    let after = kw["else".len()..].trim().to_string();
                    if word == "if" && after.starts_with("if ") {
                        let p = self.pipeline(after[2..].trim(), l)?;
                        let (b, e) = self.list()?;
                        branches.push((p, b));
                        end = e;
                        continue;
                    }
                    if !after.is_empty() {
                        return Err(self.err(l, format!("unexpected {after:?} in else")));
                    }
                    let (b, e) = self.list()?;
                    else_ = b;
                    match e {
                        Some((kw, _)) if kw == "end" => break,
                        _ => {
                            return Err(self.err(
                                l,
                                format!(
                                    "expected end; found {:?}",
                                    e.map(|x| x.0).unwrap_or_default()
                                ),
                            ))
                        }
                    }
                }
            }
        }
        self.vars.pop();
        Ok(match word {
            "if" => Node::If(branches, else_),
            "range" => Node::Range(pipe, body, else_),
            _ => Node::With(pipe, body, else_),
        })
    }

    fn pipeline(&mut self, s: &str, line: usize) -> Result<Pipeline, String> {
        let toks = tokens(s).map_err(|m| self.err(line, m))?;
        let mut i = 0;
        let mut decl = Vec::new();
        let mut assign = false;
        // `$x :=`, `$i, $e :=`, `$x =`
        let mut j = 0;
        let mut names = Vec::new();
        while let Some(Tok::Var(n, f)) = toks.get(j) {
            if !f.is_empty() {
                break;
            }
            names.push(n.clone());
            j += 1;
            if toks.get(j) == Some(&Tok::Comma) {
                j += 1;
                continue;
            }
            break;
        }
        match toks.get(j) {
            Some(Tok::Declare) if !names.is_empty() => {
                decl = names;
                i = j + 1;
            }
            Some(Tok::Assign) if !names.is_empty() => {
                decl = names;
                assign = true;
                i = j + 1;
            }
            _ => {}
        }
        let p = self.cmds(&toks, &mut i, line, false)?;
        if i < toks.len() {
            return Err(self.err(line, format!("unexpected {:?} in operand", toks[i])));
        }
        if !assign {
            if let Some(scope) = self.vars.last_mut() {
                scope.extend(decl.iter().cloned());
            }
        }
        Ok(Pipeline {
            decl,
            assign,
            cmds: p,
        })
    }

    fn cmds(
        &self,
        toks: &[Tok],
        i: &mut usize,
        line: usize,
        nested: bool,
    ) -> Result<Vec<Vec<Arg>>, String> {
        let mut cmds = Vec::new();
        let mut cur = Vec::new();
        while *i < toks.len() {
            let t = toks[*i].clone();
            *i += 1;
            match t {
                Tok::Pipe => {
                    if cur.is_empty() {
                        return Err(self.err(line, "missing command"));
                    }
                    cmds.push(std::mem::take(&mut cur));
                }
                Tok::RParen(_) if nested => {
                    *i -= 1;
                    break;
                }
                Tok::RParen(_) => return Err(self.err(line, "unexpected right paren")),
                Tok::LParen => {
                    let inner = self.cmds(toks, i, line, true)?;
                    let Some(Tok::RParen(f)) = toks.get(*i) else {
                        return Err(self.err(line, "unclosed left paren"));
                    };
                    *i += 1;
                    cur.push(Arg::Sub(
                        Box::new(Pipeline {
                            decl: vec![],
                            assign: false,
                            cmds: inner,
                        }),
                        f.clone(),
                    ));
                }
                Tok::Field(f) => cur.push(Arg::Field(f)),
                Tok::Var(n, f) => {
                    if !self.vars.iter().any(|s| s.contains(&n)) {
                        return Err(self.err(line, format!("undefined variable \"{n}\"")));
                    }
                    cur.push(Arg::Var(n, f))
                }
                Tok::Ident(n) => {
                    if !FUNCS.contains(&n.as_str()) {
                        return Err(self.err(line, format!("function \"{n}\" not defined")));
                    }
                    cur.push(Arg::Func(n))
                }
                Tok::Lit(v) => cur.push(Arg::Lit(v)),
                t => return Err(self.err(line, format!("unexpected {t:?} in command"))),
            }
        }
        if cur.is_empty() {
            return Err(self.err(line, "missing value for command"));
        }
        cmds.push(cur);
        Ok(cmds)
    }
}

// ---------------------------------------------------------------------------------
// Execution

struct Exec<'a> {
    vars: Vec<(String, Val)>,
    query: QueryFn<'a>,
    external_url: &'a str,
    out: String,
}

fn field(v: &Val, f: &[String]) -> Result<Val, String> {
    let mut cur = v.clone();
    for name in f {
        cur = match cur {
            Val::Map(m) => m.get(name).cloned().unwrap_or(Val::Str(String::new())),
            Val::Sample(l, v) => match name.as_str() {
                "Labels" => Val::from_labels(&l),
                "Value" => Val::Float(v),
                _ => {
                    return Err(format!(
                        "can't evaluate field {name} in type *template.sample"
                    ))
                }
            },
            Val::Nil => return Err(format!("nil pointer evaluating interface {{}}.{name}")),
            other => {
                return Err(format!(
                    "can't evaluate field {name} in type {}",
                    other.type_name()
                ))
            }
        };
    }
    Ok(cur)
}

impl Exec<'_> {
    fn nodes(&mut self, nodes: &[Node], dot: &Val) -> Result<(), String> {
        let mark = self.vars.len();
        for n in nodes {
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        v.print(&mut self.out);
                    }
                }
                Node::If(branches, else_) => {
                    let mut done = false;
                    for (p, body) in branches {
                        let m = self.vars.len();
                        if self.pipeline(p, dot)?.truth() {
                            self.nodes(body, dot)?;
                            self.vars.truncate(m);
                            done = true;
                            break;
                        }
                        self.vars.truncate(m);
                    }
                    if !done {
                        self.nodes(else_, dot)?;
                    }
                }
                Node::With(p, body, else_) => {
                    let m = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    if v.truth() {
                        self.nodes(body, &v)?;
                    } else {
                        self.nodes(else_, dot)?;
                    }
                    self.vars.truncate(m);
                }
                Node::Range(p, body, else_) => {
                    let m = self.vars.len();
                    let v = self.eval_cmds(&p.cmds, dot)?;
                    let items: Vec<(Val, Val)> = match v {
                        Val::List(l) => l
                            .into_iter()
                            .enumerate()
                            .map(|(i, x)| (Val::Int(i as i64), x))
                            .collect(),
                        Val::Map(mp) => mp.into_iter().map(|(k, x)| (Val::Str(k), x)).collect(),
                        Val::Int(n) => (0..n).map(|i| (Val::Int(i), Val::Int(i))).collect(),
                        Val::Nil => vec![],
                        other => {
                            return Err(format!("range can't iterate over {}", other.to_text()))
                        }
                    };
                    if items.is_empty() {
                        self.nodes(else_, dot)?;
                    }
                    for (k, x) in items {
                        let m2 = self.vars.len();
                        match p.decl.as_slice() {
                            [e] => self.vars.push((e.clone(), x.clone())),
                            [i, e] => {
                                self.vars.push((i.clone(), k));
                                self.vars.push((e.clone(), x.clone()));
                            }
                            _ => {}
                        }
                        self.nodes(body, &x)?;
                        self.vars.truncate(m2);
                    }
                    self.vars.truncate(m);
                }
            }
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Val) -> Result<Val, String> {
        let v = self.eval_cmds(&p.cmds, dot)?;
        if p.assign {
            for name in &p.decl {
                if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    slot.1 = v.clone();
                }
            }
        } else {
            for name in &p.decl {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn eval_cmds(&mut self, cmds: &[Vec<Arg>], dot: &Val) -> Result<Val, String> {
        let mut prev: Option<Val> = None;
        for c in cmds {
            prev = Some(self.command(c, dot, prev)?);
        }
        Ok(prev.unwrap_or(Val::Nil))
    }

    fn arg(&mut self, a: &Arg, dot: &Val) -> Result<Val, String> {
        match a {
            Arg::Field(f) => field(dot, f),
            Arg::Var(n, f) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(x, _)| x == n)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("undefined variable: {n}"))?;
                field(&v, f)
            }
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Func(name) => self.call(name, vec![]),
            Arg::Sub(p, f) => {
                let v = self.eval_cmds(&p.cmds, dot)?;
                field(&v, f)
            }
        }
    }

    fn command(&mut self, c: &[Arg], dot: &Val, prev: Option<Val>) -> Result<Val, String> {
        match &c[0] {
            Arg::Func(name) => {
                let mut args = Vec::with_capacity(c.len());
                for a in &c[1..] {
                    args.push(self.arg(a, dot)?);
                }
                args.extend(prev);
                self.call(name, args)
            }
            a => {
                if c.len() > 1 || prev.is_some() {
                    return Err(format!("can't give argument to non-function {a:?}"));
                }
                self.arg(a, dot)
            }
        }
    }

    fn call(&mut self, name: &str, args: Vec<Val>) -> Result<Val, String> {
        let n = args.len();
        let want = |k: usize| -> Result<(), String> {
            if n == k {
                Ok(())
            } else {
                Err(format!(
                    "error calling {name}: wrong number of args for {name}: want {k} got {n}"
                ))
            }
        };
        let num = |i: usize| {
            args[i]
                .to_float()
                .map_err(|e| format!("error calling {name}: {e}"))
        };
        let s = |i: usize| args[i].to_text();
        Ok(match name {
            "and" => {
                for a in &args {
                    if !a.truth() {
                        return Ok(a.clone());
                    }
                }
                args.last().cloned().unwrap_or(Val::Nil)
            }
            "or" => {
                for a in &args {
                    if a.truth() {
                        return Ok(a.clone());
                    }
                }
                args.last().cloned().unwrap_or(Val::Nil)
            }
            "not" => {
                want(1)?;
                Val::Bool(!args[0].truth())
            }
            "len" => {
                want(1)?;
                Val::Int(match &args[0] {
                    Val::Str(x) => x.len(),
                    Val::List(l) => l.len(),
                    Val::Map(m) => m.len(),
                    v => return Err(format!("error calling len: len of type {}", v.type_name())),
                } as i64)
            }
            "index" => {
                let mut v = args.first().cloned().unwrap_or(Val::Nil);
                for k in &args[1..] {
                    v = match (&v, k) {
                        (Val::Map(m), k) => m
                            .get(&k.to_text())
                            .cloned()
                            .unwrap_or(Val::Str(String::new())),
                        (Val::List(l), Val::Int(i)) => {
                            l.get(*i as usize).cloned().ok_or_else(|| {
                                format!("error calling index: index out of range: {i}")
                            })?
                        }
                        _ => return Err("error calling index: cannot index".into()),
                    };
                }
                v
            }
            "print" => {
                let mut o = String::new();
                for (i, a) in args.iter().enumerate() {
                    // Sprint adds spaces between operands when neither is a string.
                    if i > 0 && !matches!(a, Val::Str(_)) && !matches!(args[i - 1], Val::Str(_)) {
                        o.push(' ');
                    }
                    a.print(&mut o);
                }
                Val::Str(o)
            }
            "println" => {
                let v: Vec<String> = args.iter().map(Val::to_text).collect();
                Val::Str(v.join(" ") + "\n")
            }
            "printf" => {
                if n == 0 {
                    return Err("error calling printf: wrong number of args".into());
                }
                Val::Str(go_sprintf(&s(0), &args[1..]))
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                if n < 2 {
                    return Err(format!(
                        "error calling {name}: missing argument for comparison"
                    ));
                }
                let cmp = |a: &Val, b: &Val| -> Result<std::cmp::Ordering, String> {
                    match (a, b) {
                        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
                        (Val::Bool(x), Val::Bool(y)) if matches!(name, "eq" | "ne") => Ok(x.cmp(y)),
                        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
                            let (x, y) = (a.to_float()?, b.to_float()?);
                            x.partial_cmp(&y)
                                .ok_or_else(|| "NaN comparison".to_string())
                        }
                        _ => Err(format!(
                            "error calling {name}: incompatible types for comparison"
                        )),
                    }
                };
                if name == "eq" {
                    // eq a b c…: a equals any of the others.
                    let mut any = false;
                    for b in &args[1..] {
                        any |= cmp(&args[0], b).unwrap_or(std::cmp::Ordering::Less).is_eq();
                    }
                    return Ok(Val::Bool(any));
                }
                want(2)?;
                let o = cmp(&args[0], &args[1]);
                Val::Bool(match name {
                    "ne" => !o.unwrap_or(std::cmp::Ordering::Less).is_eq(),
                    "lt" => o?.is_lt(),
                    "le" => o?.is_le(),
                    "gt" => o?.is_gt(),
                    _ => o?.is_ge(),
                })
            }
            "html" | "safeHtml" => Val::Str(
                args.iter()
                    .map(Val::to_text)
                    .collect::<String>()
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&#34;")
                    .replace('\'', "&#39;"),
            )
            .pipe_if(name == "safeHtml", || Val::Str(s(0))),
            "js" => Val::Str(
                s(0).replace('\\', "\\\\")
                    .replace('\'', "\\'")
                    .replace('"', "\\\""),
            ),
            "urlquery" => Val::Str(url_escape(
                &args.iter().map(Val::to_text).collect::<String>(),
            )),
            "query" => {
                want(1)?;
                let res = (self.query)(&s(0)).map_err(|e| format!("error calling query: {e}"))?;
                Val::List(res.into_iter().map(|(l, v)| Val::Sample(l, v)).collect())
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    Val::List(l) if !l.is_empty() => l[0].clone(),
                    _ => {
                        return Err(
                            "error calling first: first() called on vector with no elements".into(),
                        )
                    }
                }
            }
            "label" => {
                want(2)?;
                match &args[1] {
                    Val::Sample(l, _) => Val::Str(l.get(&s(0)).cloned().unwrap_or_default()),
                    _ => return Err("error calling label: not a sample".into()),
                }
            }
            "value" => {
                want(1)?;
                match &args[0] {
                    Val::Sample(_, v) => Val::Float(*v),
                    _ => return Err("error calling value: not a sample".into()),
                }
            }
            "strvalue" => {
                want(1)?;
                match &args[0] {
                    Val::Sample(l, _) => Val::Str(l.get("__value__").cloned().unwrap_or_default()),
                    _ => return Err("error calling strvalue: not a sample".into()),
                }
            }
            "sortByLabel" => {
                want(2)?;
                let key = s(0);
                let mut l = match &args[1] {
                    Val::List(l) => l.clone(),
                    _ => return Err("error calling sortByLabel: not a query result".into()),
                };
                let lab = |v: &Val| match v {
                    Val::Sample(l, _) => l.get(&key).cloned().unwrap_or_default(),
                    _ => String::new(),
                };
                l.sort_by_key(lab);
                Val::List(l)
            }
            "args" => Val::Map(
                args.iter()
                    .enumerate()
                    .map(|(i, a)| (format!("arg{i}"), a.clone()))
                    .collect(),
            ),
            "match" => {
                want(2)?;
                let re =
                    regex::Regex::new(&s(0)).map_err(|e| format!("error calling match: {e}"))?;
                Val::Bool(re.is_match(&s(1)))
            }
            "reReplaceAll" => {
                want(3)?;
                let re = regex::Regex::new(&s(0))
                    .map_err(|e| format!("error calling reReplaceAll: {e}"))?;
                Val::Str(re.replace_all(&s(2), s(1).as_str()).into_owned())
            }
            "title" => {
                want(1)?;
                let mut o = String::new();
                let mut prev_letter = false;
                for c in s(0).chars() {
                    if !prev_letter && c.is_alphabetic() {
                        o.extend(c.to_uppercase());
                    } else {
                        o.push(c);
                    }
                    prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
                }
                Val::Str(o)
            }
            "toUpper" => Val::Str(s(0).to_uppercase()),
            "toLower" => Val::Str(s(0).to_lowercase()),
            "graphLink" => Val::Str(format!("/graph?g0.expr={}&g0.tab=0", url_escape(&s(0)))),
            "tableLink" => Val::Str(format!("/graph?g0.expr={}&g0.tab=1", url_escape(&s(0)))),
            "externalURL" => Val::Str(self.external_url.to_string()),
            "pathPrefix" => Val::Str(
                self.external_url
                    .split_once("://")
                    .and_then(|(_, r)| r.find('/').map(|i| r[i..].to_string()))
                    .unwrap_or_default(),
            ),
            "stripPort" => {
                let h = s(0);
                Val::Str(match h.rsplit_once(':') {
                    Some((a, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                        a.trim_start_matches('[').trim_end_matches(']').to_string()
                    }
                    _ => h,
                })
            }
            "stripDomain" => {
                let h = s(0);
                let (host, port) = match h.rsplit_once(':') {
                    Some((a, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                        (a.to_string(), format!(":{p}"))
                    }
                    _ => (h.clone(), String::new()),
                };
                if host.parse::<std::net::IpAddr>().is_ok() {
                    Val::Str(h)
                } else {
                    Val::Str(format!("{}{port}", host.split('.').next().unwrap_or("")))
                }
            }
            "humanize" => Val::Str(humanize(num(0)?)),
            "humanize1024" => Val::Str(humanize1024(num(0)?)),
            "humanizeDuration" => Val::Str(humanize_duration(num(0)?)),
            "humanizePercentage" => Val::Str(format!("{}%", go_g(num(0)? * 100.0, 4))),
            "humanizeTimestamp" => {
                let v = num(0)?;
                if !v.is_finite() {
                    Val::Str(go_g(v, 4))
                } else {
                    Val::Str(go_time_string(v))
                }
            }
            "toTime" => Val::Str(go_time_string(num(0)?)),
            "parseDuration" | "toDuration" => {
                let ms = strata_kit::duration::parse_ms(&s(0))
                    .map_err(|e| format!("error calling {name}: {e}"))?;
                Val::Float(ms as f64 / 1000.0)
            }
            "slice" => args.first().cloned().unwrap_or(Val::Nil),
            "now" => Val::Float(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            ),
            _ => return Err(format!("function \"{name}\" not defined")),
        })
    }
}

trait PipeIf {
    fn pipe_if(self, c: bool, f: impl FnOnce() -> Self) -> Self;
}

impl PipeIf for Val {
    fn pipe_if(self, c: bool, f: impl FnOnce() -> Self) -> Self {
        if c {
            f()
        } else {
            self
        }
    }
}

fn url_escape(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            b' ' => o.push('+'),
            _ => {
                let _ = write!(o, "%{b:02X}");
            }
        }
    }
    o
}

/// Go's `%.{prec}g`.
pub fn go_g(v: f64, prec: usize) -> String {
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
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let p = prec.max(1);
    let e = format!("{:.*e}", p - 1, v);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let m = trim_zeros(mant);
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn humanize(mut v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g(v, 4);
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_g(v, 4))
}

fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_g(v, 4);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_g(v, 4))
}

fn humanize_duration(mut v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, 4);
    }
    if v == 0.0 {
        return format!("{}s", go_g(v, 4));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", go_g(v, 4));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_g(v, 4))
}

/// `fmt.Sprint(time.Time)` in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn go_time_string(secs: f64) -> String {
    // Prometheus goes through model.Time: whole milliseconds.
    let ms = ((secs * 1e9) as i64).div_euclid(1_000_000);
    let s = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let days = s.div_euclid(86_400);
    let rem = s.rem_euclid(86_400);
    let (y, mo, d) = strata_kit::date::civil_from_days(days);
    let mut out = format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    if frac > 0 {
        let f = format!("{frac:03}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

/// Go's `fmt.Sprintf` for the verbs rule templates use: `%s %v %d %f %g %e %q %x %%`,
/// with flags, width and precision.
pub fn go_sprintf(f: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut it = f.chars().peekable();
    let mut ai = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&c) = it.peek() {
            if "+-# 0".contains(c) {
                flags.push(c);
                it.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&c) = it.peek() {
            if c.is_ascii_digit() {
                width.push(c);
                it.next();
            } else {
                break;
            }
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&c) = it.peek() {
                if c.is_ascii_digit() {
                    p.push(c);
                    it.next();
                } else {
                    break;
                }
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(ai) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        ai += 1;
        let bad = || format!("%!{verb}({}={})", arg.type_name(), arg.to_text());
        let body = match (verb, arg) {
            ('v', _) | ('s', Val::Str(_)) => arg.to_text(),
            ('s', Val::Float(_) | Val::Int(_) | Val::Bool(_)) => bad(),
            ('s', _) => arg.to_text(),
            ('q', Val::Str(s)) => {
                let mut q = String::new();
                let _ = strata_tsdb::labels::go_quote(&mut q, s);
                q
            }
            ('d', Val::Int(i)) => i.to_string(),
            ('f' | 'F', Val::Float(_) | Val::Int(_)) => {
                let v = arg.to_float().unwrap_or(0.0);
                let p = prec.unwrap_or(6);
                if v.is_finite() {
                    format!("{v:.p$}")
                } else {
                    go_g(v, 1)
                }
            }
            ('e', Val::Float(_) | Val::Int(_)) => {
                let v = arg.to_float().unwrap_or(0.0);
                let e = format!("{v:.*e}", prec.unwrap_or(6));
                let (m, x) = e.split_once('e').unwrap_or((&e, "0"));
                let x: i32 = x.parse().unwrap_or(0);
                format!("{m}e{}{:02}", if x < 0 { '-' } else { '+' }, x.abs())
            }
            ('g', Val::Float(_) | Val::Int(_)) => {
                let v = arg.to_float().unwrap_or(0.0);
                match prec {
                    Some(p) => go_g(v, p),
                    None => strata_tsdb::labels::go_format_g(v),
                }
            }
            ('x', Val::Int(i)) => format!("{i:x}"),
            ('x', Val::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            _ => bad(),
        };
        let body = if flags.contains('+')
            && matches!(verb, 'd' | 'f' | 'g' | 'e')
            && !body.starts_with('-')
        {
            format!("+{body}")
        } else {
            body
        };
        let w: usize = width.parse().unwrap_or(0);
        let len = body.chars().count();
        if len < w {
            let pad = w - len;
            if flags.contains('-') {
                out.push_str(&body);
                out.extend(std::iter::repeat_n(' ', pad));
            } else if flags.contains('0') && matches!(verb, 'd' | 'f' | 'g' | 'e') {
                let (sign, digits) = match body.strip_prefix(['-', '+']) {
                    Some(d) => (&body[..1], d),
                    None => ("", body.as_str()),
                };
                out.push_str(sign);
                out.extend(std::iter::repeat_n('0', pad));
                out.push_str(digits);
            } else {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(&body);
            }
        } else {
            out.push_str(&body);
        }
    }
    if ai < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[ai..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.to_text()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_query(_: &str) -> QueryResult {
        Err("no query".into())
    }

    fn expand(text: &str, value: f64) -> String {
        let data = AlertData {
            labels: BTreeMap::from([
                ("instance".into(), "host-1:9100".into()),
                ("job".into(), "node".into()),
            ]),
            external_labels: BTreeMap::from([("cluster".into(), "eu".into())]),
            external_url: "http://ruler.example/prefix".into(),
            value,
        };
        expand_alert("A", text, &data, &no_query)
    }

    #[test]
    fn prometheus_examples() {
        assert_eq!(
            expand("{{ $labels.instance }} down", 1.0),
            "host-1:9100 down"
        );
        assert_eq!(
            expand("{{ .Labels.job }}/{{ $externalLabels.cluster }}", 1.0),
            "node/eu"
        );
        assert_eq!(expand("{{ $labels.missing }}x", 1.0), "x");
        assert_eq!(expand("{{ $value }}", 1234567.0), "1.234567e+06");
        assert_eq!(expand("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(expand("{{ humanize 0.0012 }}", 0.0), "1.2m");
        assert_eq!(expand("{{ $value | humanize1024 }}", 1048576.0), "1Mi");
        assert_eq!(
            expand("{{ humanizeDuration $value }}", 90061.0),
            "1d 1h 1m 1s"
        );
        assert_eq!(expand("{{ humanizeDuration $value }}", 0.25), "250ms");
        assert_eq!(expand("{{ humanizePercentage $value }}", 0.1234), "12.34%");
        assert_eq!(
            expand("{{ humanizeTimestamp $value }}", 1435065584.128),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(expand("{{ printf \"%.2f\" $value }}", 3.14259), "3.14");
        assert_eq!(
            expand("{{ printf \"%s\" $labels.job | toUpper }}", 0.0),
            "NODE"
        );
        assert_eq!(expand("{{ title \"hello world\" }}", 0.0), "Hello World");
        assert_eq!(
            expand(
                "{{ if gt $value 80.0 }}high{{ else if gt $value 50.0 }}mid{{ else }}low{{ end }}",
                60.0
            ),
            "mid"
        );
        assert_eq!(
            expand("{{- $x := \"a\" -}} {{ $x }}{{ $x = \"b\" }}{{ $x }}", 0.0),
            "ab"
        );
        assert_eq!(
            expand(
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                0.0
            ),
            "instance=host-1:9100;job=node;"
        );
        assert_eq!(
            expand("{{ with $labels.job }}job {{ . }}{{ end }}", 0.0),
            "job node"
        );
        assert_eq!(
            expand(
                "{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}",
                0.0
            ),
            "host-1"
        );
        assert_eq!(expand("{{ $labels.instance | stripPort }}", 0.0), "host-1");
        assert_eq!(
            expand("{{ externalURL }}{{ pathPrefix }}", 0.0),
            "http://ruler.example/prefix/prefix"
        );
        assert_eq!(expand("{{/* comment */}}ok", 0.0), "ok");
        assert_eq!(expand("{{ first 1 }}", 0.0), "<error expanding template: template: __alert_A: error calling first: first() called on vector with no elements>");
    }

    #[test]
    fn query_functions() {
        let q = |e: &str| -> QueryResult {
            assert_eq!(e, "up");
            Ok(vec![
                (BTreeMap::from([("instance".into(), "b".into())]), 0.0),
                (BTreeMap::from([("instance".into(), "a".into())]), 1.0),
            ])
        };
        let data = AlertData::default();
        let e = |t: &str| expand_alert("A", t, &data, &q);
        assert_eq!(e("{{ query \"up\" | first | value }}"), "0");
        assert_eq!(
            e("{{ with query \"up\" }}{{ . | first | label \"instance\" }}{{ end }}"),
            "b"
        );
        assert_eq!(e("{{ range query \"up\" | sortByLabel \"instance\" }}{{ .Labels.instance }}={{ .Value }} {{ end }}"), "a=1 b=0 ");
        assert_eq!(e("{{ (query \"up\" | first).Labels.instance }}"), "b");
    }

    #[test]
    fn parse_errors_name_template_and_line() {
        let e = Template::parse("__alert_X", "a\n{{ nope }}").unwrap_err();
        assert_eq!(e, "template: __alert_X:2: function \"nope\" not defined");
        assert!(Template::parse("t", "{{ if true }}x")
            .unwrap_err()
            .contains("unexpected EOF"));
        assert!(Template::parse("t", "{{ $x }}")
            .unwrap_err()
            .contains("undefined variable \"$x\""));
        assert!(Template::parse("t", "{{ .x")
            .unwrap_err()
            .contains("unclosed action"));
    }

    #[test]
    fn go_formats() {
        assert_eq!(go_g(1234.5, 4), "1234");
        assert_eq!(go_g(12345.0, 4), "1.234e+04");
        assert_eq!(go_g(0.00001234, 4), "1.234e-05");
        assert_eq!(
            go_sprintf(
                "%5.1f|%-4d|%03d|%v",
                &[
                    Val::Float(3.14259),
                    Val::Int(7),
                    Val::Int(5),
                    Val::Str("x".into())
                ]
            ),
            "  3.1|7   |005|x"
        );
        assert_eq!(go_sprintf("%d", &[Val::Float(1.0)]), "%!d(float64=1)");
    }
}
