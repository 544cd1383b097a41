//! Prometheus rule files (`rulefmt`): parsing and the checks `promtool check rules`
//! makes, with its messages (`FILE: LINE:COL: group "g", rule N, "name": …`).
//!
//! The values come from `yaml_serde`; the line and column of each node, which Go's
//! `yaml.v3` gives and the messages carry, from [`locate`], a small indexer of block-style
//! YAML (rule files are written that way; a node it cannot place is reported at `0:0`,
//! as Go reports a field that is absent).

use std::collections::BTreeMap;

use yaml_serde::Value;

/// A parsed rule file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleGroups {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleGroup {
    pub name: String,
    /// `interval`; `None`: the global evaluation interval.
    pub interval_ms: Option<i64>,
    /// `query_offset` (Prometheus 2.53+); `None`: the global default.
    pub query_offset_ms: Option<i64>,
    /// `limit`: at most this many series (recording) or alerts (alerting) per rule; 0 =
    /// none.
    pub limit: usize,
    pub rules: Vec<RuleDef>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleDef {
    pub record: String,
    pub alert: String,
    pub expr: String,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl RuleDef {
    /// The rule's name: `alert` or `record`.
    pub fn name(&self) -> &str {
        if self.alert.is_empty() {
            &self.record
        } else {
            &self.alert
        }
    }
}

/// Parse and check a rule file's text. The errors are promtool's, without the leading
/// `FILE: ` (see [`parse_file`]).
pub fn parse(text: &str) -> Result<RuleGroups, Vec<String>> {
    let doc: Value = match yaml_serde::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let m = yaml_error(&e.to_string());
            // Go decodes twice (the rules, then the node tree): the error comes twice.
            return Err(vec![m.clone(), m]);
        }
    };
    let tree = locate(text);
    let mut unmarshal = Vec::new();
    let groups = decode(&doc, &tree, &mut unmarshal);
    if let Some(f) = unmarshal.iter().find(|e| e.starts_with(FATAL)) {
        return Err(vec![f[FATAL.len()..].to_string()]);
    }
    if !unmarshal.is_empty() {
        let mut m = String::from("yaml: unmarshal errors:");
        for u in unmarshal {
            m.push_str("\n  ");
            m.push_str(&u);
        }
        return Err(vec![m]);
    }
    let errs = validate(&groups, &tree);
    if errs.is_empty() {
        Ok(groups)
    } else {
        Err(errs)
    }
}

/// A libyaml error as Go's yaml.v3 words it: `yaml: line N: problem`, N being the
/// 0-based line of the context (else of the problem), one more for scanner errors.
fn yaml_error(msg: &str) -> String {
    let line_of = |s: &str| -> Option<usize> {
        let i = s.find(" at line ")?;
        s[i + 9..].split(' ').next()?.parse().ok()
    };
    let (problem_part, context_part) = match msg.split_once(", while ") {
        Some((p, c)) => (p, Some(c)),
        None => (msg, None),
    };
    let problem = problem_part
        .split(" at line ")
        .next()
        .unwrap_or(problem_part);
    let pline = line_of(problem_part).unwrap_or(0);
    let cline = context_part.map(|c| line_of(c).unwrap_or(pline));
    let parser_error = context_part.is_some_and(|c| c.starts_with("parsing"))
        || problem.starts_with("did not find expected")
        || problem.starts_with("block sequence entries");
    let scanner = !parser_error;
    let zero_based = |l: usize| l.saturating_sub(1);
    let mut line = match cline {
        Some(l) if zero_based(l) != 0 => zero_based(l),
        _ => zero_based(pline),
    };
    if scanner && line != 0 {
        line += 1;
    }
    if line == 0 {
        format!("yaml: {problem}")
    } else {
        format!("yaml: line {line}: {problem}")
    }
}

/// [`parse`] a file; each error is prefixed with the file name, as promtool prints it.
pub fn parse_file(path: &str) -> Result<RuleGroups, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![format!(
            "{path}: {}",
            match e.kind() {
                std::io::ErrorKind::NotFound => format!("open {path}: no such file or directory"),
                _ => e.to_string(),
            }
        )]
    })?;
    parse(&text).map_err(|errs| errs.into_iter().map(|e| format!("{path}: {e}")).collect())
}

/// Marks an error that stops Go's decoder at once (a custom unmarshaler's), reported
/// alone and without the `unmarshal errors` header.
const FATAL: &str = "\0fatal:";

// ---------------------------------------------------------------------------------
// Decoding (yaml.v3 with KnownFields: unknown fields and wrong types are unmarshal
// errors, all reported together)

fn decode(doc: &Value, tree: &Node, errs: &mut Vec<String>) -> RuleGroups {
    let mut out = RuleGroups::default();
    let Some(map) = doc.as_mapping() else {
        if !doc.is_null() {
            errs.push(format!(
                "line {}: cannot unmarshal {} into rulefmt.RuleGroups",
                tree.pos().0.max(1),
                go_kind(doc)
            ));
        }
        return out;
    };
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        let at = tree.get(key);
        match key {
            "groups" => {
                let Some(seq) = v.as_sequence() else {
                    if !v.is_null() {
                        errs.push(format!(
                            "line {}: cannot unmarshal {} into []rulefmt.RuleGroup",
                            at.map_or(0, |n| n.pos().0),
                            go_kind(v)
                        ));
                    }
                    continue;
                };
                for (j, g) in seq.iter().enumerate() {
                    let gnode = at.and_then(|n| n.item(j));
                    out.groups.push(decode_group(g, gnode, errs));
                }
            }
            _ => errs.push(format!(
                "line {}: field {key} not found in type rulefmt.RuleGroups",
                tree.key_line(key)
            )),
        }
    }
    out
}

/// How Go's yaml names a value in `cannot unmarshal` errors: the tag, and a scalar's
/// text in backquotes.
fn go_kind(v: &Value) -> String {
    match v {
        Value::Sequence(_) | Value::Mapping(_) | Value::Null => go_tag(v).to_string(),
        _ => format!("{} `{}`", go_tag(v), scalar_string(v).unwrap_or_default()),
    }
}

fn go_tag(v: &Value) -> &'static str {
    match v {
        Value::Sequence(_) => "!!seq",
        Value::Mapping(_) => "!!map",
        Value::String(_) => "!!str",
        Value::Number(n) if n.is_f64() => "!!float",
        Value::Number(_) => "!!int",
        Value::Bool(_) => "!!bool",
        _ => "!!null",
    }
}

/// A scalar as Go's yaml decodes it into a string field.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn decode_duration(v: &Value, line: usize, errs: &mut Vec<String>, field_ty: &str) -> Option<i64> {
    match scalar_string(v) {
        Some(s) if s.is_empty() => None,
        Some(s) => match strata_kit::duration::parse_ms(&s) {
            Ok(ms) => Some(ms),
            Err(_) => {
                // model.Duration's UnmarshalYAML error aborts decoding in Go.
                let _ = line;
                errs.push(format!("{FATAL}not a valid duration string: {s:?}"));
                None
            }
        },
        None => {
            errs.push(format!(
                "line {line}: cannot unmarshal {} into {field_ty}",
                go_kind(v)
            ));
            None
        }
    }
}

fn decode_group(g: &Value, node: Option<&Node>, errs: &mut Vec<String>) -> RuleGroup {
    let mut out = RuleGroup::default();
    let line_of = |k: &str| node.map_or(0, |n| n.key_line(k));
    let Some(map) = g.as_mapping() else {
        errs.push(format!(
            "line {}: cannot unmarshal {} into rulefmt.RuleGroup",
            node.map_or(0, |n| n.pos().0),
            go_kind(g)
        ));
        return out;
    };
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        let line = line_of(key);
        match key {
            "name" => match scalar_string(v) {
                Some(s) => out.name = s,
                None => errs.push(format!(
                    "line {line}: cannot unmarshal {} into string",
                    go_kind(v)
                )),
            },
            "interval" => out.interval_ms = decode_duration(v, line, errs, "model.Duration"),
            "query_offset" => {
                out.query_offset_ms = decode_duration(v, line, errs, "model.Duration")
            }
            "limit" => match v {
                Value::Number(n) if n.as_u64().is_some() => {
                    out.limit = n.as_u64().unwrap_or(0) as usize
                }
                Value::Null => {}
                _ => errs.push(format!(
                    "line {line}: cannot unmarshal {} into int",
                    go_kind(v)
                )),
            },
            "rules" => {
                let Some(seq) = v.as_sequence() else {
                    if !v.is_null() {
                        errs.push(format!(
                            "line {line}: cannot unmarshal {} into []rulefmt.RuleNode",
                            go_kind(v)
                        ));
                    }
                    continue;
                };
                let rnode = node.and_then(|n| n.get("rules"));
                for (i, r) in seq.iter().enumerate() {
                    out.rules
                        .push(decode_rule(r, rnode.and_then(|n| n.item(i)), errs));
                }
            }
            _ => errs.push(format!(
                "line {line}: field {key} not found in type rulefmt.RuleGroup"
            )),
        }
    }
    out
}

fn decode_rule(r: &Value, node: Option<&Node>, errs: &mut Vec<String>) -> RuleDef {
    let mut out = RuleDef::default();
    let line_of = |k: &str| node.map_or(0, |n| n.key_line(k));
    let Some(map) = r.as_mapping() else {
        errs.push(format!(
            "line {}: cannot unmarshal {} into rulefmt.RuleNode",
            node.map_or(0, |n| n.pos().0),
            go_kind(r)
        ));
        return out;
    };
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        let line = line_of(key);
        let mut string = |dst: &mut String| match scalar_string(v) {
            Some(s) => *dst = s,
            None => errs.push(format!(
                "line {line}: cannot unmarshal {} into string",
                go_kind(v)
            )),
        };
        match key {
            "record" => string(&mut out.record),
            "alert" => string(&mut out.alert),
            "expr" => string(&mut out.expr),
            "for" => out.for_ms = decode_duration(v, line, errs, "model.Duration").unwrap_or(0),
            "keep_firing_for" => {
                out.keep_firing_for_ms =
                    decode_duration(v, line, errs, "model.Duration").unwrap_or(0)
            }
            "labels" | "annotations" => {
                let mut m = BTreeMap::new();
                match v {
                    Value::Mapping(map) => {
                        for (lk, lv) in map {
                            match (scalar_string(lk), scalar_string(lv)) {
                                (Some(a), Some(b)) => {
                                    m.insert(a, b);
                                }
                                _ => errs.push(format!(
                                    "line {line}: cannot unmarshal {} into string",
                                    go_kind(lv)
                                )),
                            }
                        }
                    }
                    Value::Null => {}
                    _ => errs.push(format!(
                        "line {line}: cannot unmarshal {} into map[string]string",
                        go_kind(v)
                    )),
                }
                if key == "labels" {
                    out.labels = m;
                } else {
                    out.annotations = m;
                }
            }
            _ => errs.push(format!(
                "line {line}: field {key} not found in type rulefmt.RuleNode"
            )),
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Validation (rulefmt's RuleGroups.Validate and RuleNode.Validate)

fn validate(groups: &RuleGroups, tree: &Node) -> Vec<String> {
    let mut errs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let gnodes = tree.get("groups");
    for (j, g) in groups.groups.iter().enumerate() {
        let gnode = gnodes.and_then(|n| n.item(j));
        let (gl, gc) = gnode.map_or((0, 0), |n| n.pos());
        if g.name.is_empty() {
            errs.push(format!("{gl}:{gc}: Groupname must not be empty"));
        }
        if !seen.insert(g.name.as_str()) {
            errs.push(format!(
                "{gl}:{gc}: groupname: \"{}\" is repeated in the same file",
                g.name
            ));
        }
        let rnodes = gnode.and_then(|n| n.get("rules"));
        for (i, r) in g.rules.iter().enumerate() {
            let rnode = rnodes.and_then(|n| n.item(i));
            let at = |k: &str| rnode.and_then(|n| n.get(k)).map_or((0, 0), |n| n.pos());
            for (pos, alt, e) in validate_rule(r, &at) {
                let mut m = String::new();
                if let Some((l, c)) = pos {
                    m.push_str(&format!("{l}:{c}: "));
                }
                if let Some((l, c)) = alt {
                    m.push_str(&format!("{l}:{c}: "));
                }
                let mut q = String::new();
                let _ = strata_tsdb::labels::go_quote(&mut q, r.name());
                let mut gq = String::new();
                let _ = strata_tsdb::labels::go_quote(&mut gq, &g.name);
                m.push_str(&format!("group {gq}, rule {}, {q}: {e}", i + 1));
                errs.push(m);
            }
        }
    }
    errs
}

type Pos = (usize, usize);

fn validate_rule(r: &RuleDef, at: &dyn Fn(&str) -> Pos) -> Vec<(Option<Pos>, Option<Pos>, String)> {
    let mut out = Vec::new();
    if !r.record.is_empty() && !r.alert.is_empty() {
        out.push((
            Some(at("record")),
            Some(at("alert")),
            "only one of 'record' and 'alert' must be set".to_string(),
        ));
    }
    if r.record.is_empty() && r.alert.is_empty() {
        out.push((
            Some(at("record")),
            None,
            "one of 'record' or 'alert' must be set".to_string(),
        ));
    }
    if r.expr.is_empty() {
        out.push((
            Some(at("expr")),
            None,
            "field 'expr' must be set in rule".to_string(),
        ));
    } else if let Err(e) = promql_parser::parser::parse(&r.expr) {
        out.push((
            Some(at("expr")),
            None,
            format!("could not parse expression: {e}"),
        ));
    }
    if !r.record.is_empty() {
        if !r.annotations.is_empty() {
            out.push((
                Some(at("record")),
                None,
                "invalid field 'annotations' in recording rule".to_string(),
            ));
        }
        if r.for_ms != 0 {
            out.push((
                Some(at("record")),
                None,
                "invalid field 'for' in recording rule".to_string(),
            ));
        }
        if r.keep_firing_for_ms != 0 {
            out.push((
                Some(at("record")),
                None,
                "invalid field 'keep_firing_for' in recording rule".to_string(),
            ));
        }
        if !valid_metric_name(&r.record) {
            out.push((
                Some(at("record")),
                None,
                format!("invalid recording rule name: {}", r.record),
            ));
        }
    }
    for k in r.labels.keys() {
        if !strata_kit::labels::valid_label_name(k) || k == "__name__" {
            out.push((None, None, format!("invalid label name: {k}")));
        }
    }
    for k in r.annotations.keys() {
        if !strata_kit::labels::valid_label_name(k) {
            out.push((None, None, format!("invalid annotation name: {k}")));
        }
    }
    if !r.alert.is_empty() {
        let name = format!("__alert_{}", r.alert);
        for (what, m) in [("label", &r.labels), ("annotation", &r.annotations)] {
            for (k, v) in m {
                if let Err(e) = crate::template::Template::parse(&name, v) {
                    out.push((None, None, format!("{what} {k:?}: {e}")));
                }
            }
        }
    }
    out
}

/// `model.IsValidMetricName`: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

// ---------------------------------------------------------------------------------
// Positions: a block-style YAML indexer

/// A YAML node's position (1-based line and column, as Go's yaml.v3 reports) and, for
/// mappings and sequences, its children.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar(Pos),
    /// Keys with the key's line and the value's node.
    Map(Pos, Vec<(String, usize, Node)>),
    Seq(Pos, Vec<Node>),
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar(p) | Node::Map(p, _) | Node::Seq(p, _) => *p,
        }
    }

    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(_, kv) => kv.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n),
            _ => None,
        }
    }

    fn key_line(&self, key: &str) -> usize {
        match self {
            Node::Map(_, kv) => kv
                .iter()
                .find(|(k, _, _)| k == key)
                .map_or(0, |(_, l, _)| *l),
            _ => 0,
        }
    }

    fn item(&self, i: usize) -> Option<&Node> {
        match self {
            Node::Seq(_, items) => items.get(i),
            _ => None,
        }
    }
}

/// One line of content: 0-based index, column (0-based) where the content starts, the
/// content.
struct Line<'a> {
    no: usize,
    col: usize,
    text: &'a str,
}

/// Index the block structure of `text` (flow collections and anything unusual are
/// kept as scalars).
pub fn locate(text: &str) -> Node {
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter_map(|(no, l)| {
            let trimmed = l.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
                return None;
            }
            Some(Line {
                no,
                col: l.len() - trimmed.len(),
                text: strip_comment(trimmed),
            })
        })
        .collect();
    let mut i = 0;
    if lines.is_empty() {
        return Node::Scalar((0, 0));
    }
    let first = (lines[0].no, lines[0].col, lines[0].text);
    node_at(&lines, &mut i, first, 0)
}

/// The text before a ` #` comment that is outside quotes.
fn strip_comment(s: &str) -> &str {
    let (mut sq, mut dq) = (false, false);
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'\'' if !dq => sq = !sq,
            b'"' if !sq => dq = !dq,
            b'#' if !sq && !dq && i > 0 && b[i - 1].is_ascii_whitespace() => {
                return s[..i].trim_end()
            }
            _ => {}
        }
    }
    s.trim_end()
}

/// The mapping key at the start of `s`, with the offset of the value after `: `.
fn split_key(s: &str) -> Option<(&str, usize)> {
    if s.starts_with('"') || s.starts_with('\'') || s.starts_with('{') || s.starts_with('[') {
        return None;
    }
    let b = s.as_bytes();
    for i in 0..b.len() {
        if b[i] == b':' && (i + 1 == b.len() || b[i + 1] == b' ') {
            let mut v = i + 1;
            while v < b.len() && b[v] == b' ' {
                v += 1;
            }
            return Some((&s[..i], v));
        }
    }
    None
}

/// Parse the node whose first line is `head` (line, column, text; a virtual line when
/// it follows a `- `), continuing on `lines[*i + 1..]` deeper than `parent_col` (a
/// sequence may sit at its key's column).
fn node_at(lines: &[Line], i: &mut usize, head: (usize, usize, &str), parent_col: usize) -> Node {
    let (no, col, text) = head;
    let pos = (no + 1, col + 1);
    if text == "-" || text.starts_with("- ") {
        let mut items = Vec::new();
        let mut cur = Some(head);
        while let Some((no, col, text)) = cur {
            let rest = text[1..].trim_start();
            let item_col = col + (text.len() - rest.len());
            if rest.is_empty() {
                // The item is on the following lines.
                if *i + 1 < lines.len() && lines[*i + 1].col > col {
                    *i += 1;
                    let l = &lines[*i];
                    items.push(node_at(lines, i, (l.no, l.col, l.text), col));
                } else {
                    items.push(Node::Scalar((no + 1, item_col + 1)));
                }
            } else {
                items.push(node_at(lines, i, (no, item_col, rest), col));
            }
            cur = None;
            if *i + 1 < lines.len() {
                let n = &lines[*i + 1];
                if n.col == col && (n.text == "-" || n.text.starts_with("- ")) {
                    *i += 1;
                    cur = Some((n.no, n.col, n.text));
                }
            }
        }
        return Node::Seq(pos, items);
    }
    if let Some((_, _)) = split_key(text) {
        let mut kv = Vec::new();
        let mut cur = Some(head);
        while let Some((no, kcol, text)) = cur {
            let Some((key, voff)) = split_key(text) else {
                break;
            };
            let key = key.trim().to_string();
            let value = &text[voff..];
            let node = if value.is_empty() {
                match lines.get(*i + 1) {
                    Some(n)
                        if n.col > kcol
                            || (n.col == kcol && (n.text == "-" || n.text.starts_with("- "))) =>
                    {
                        *i += 1;
                        node_at(lines, i, (n.no, n.col, n.text), kcol)
                    }
                    _ => Node::Scalar((0, 0)),
                }
            } else {
                // A scalar, possibly continued (block scalars, folded plain lines) on
                // deeper lines.
                while lines.get(*i + 1).is_some_and(|n| n.col > kcol) {
                    *i += 1;
                }
                Node::Scalar((no + 1, kcol + voff + 1))
            };
            kv.push((key, no + 1, node));
            cur = None;
            if let Some(n) = lines.get(*i + 1) {
                if n.col == kcol && split_key(n.text).is_some() {
                    *i += 1;
                    cur = Some((n.no, n.col, n.text));
                }
            }
        }
        let _ = parent_col;
        return Node::Map(pos, kv);
    }
    while lines.get(*i + 1).is_some_and(|n| n.col > col) {
        *i += 1;
    }
    Node::Scalar(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
groups:
  - name: g
    interval: 30s
    limit: 10
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels:
          team: a
      - alert: Down
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        annotations:
          summary: "{{ $labels.instance }} down"
"#;

    #[test]
    fn parses_a_good_file() {
        let g = parse(GOOD).unwrap();
        assert_eq!(g.groups.len(), 1);
        let grp = &g.groups[0];
        assert_eq!(grp.interval_ms, Some(30_000));
        assert_eq!(grp.limit, 10);
        assert_eq!(grp.rules[0].record, "job:up:sum");
        assert_eq!(grp.rules[0].labels["team"], "a");
        assert_eq!(grp.rules[1].for_ms, 300_000);
        assert_eq!(grp.rules[1].keep_firing_for_ms, 60_000);
    }

    #[test]
    fn positions_follow_yaml_v3() {
        let t = locate(GOOD);
        let g = t.get("groups").unwrap().item(0).unwrap();
        assert_eq!(g.pos(), (3, 5));
        let r = g.get("rules").unwrap().item(1).unwrap();
        assert_eq!(r.get("alert").unwrap().pos(), (11, 16));
        assert_eq!(r.get("expr").unwrap().pos(), (12, 15));
    }

    #[test]
    fn messages_are_promtools() {
        let bad = "groups:\n- name: g\n  rules:\n  - record: a-b\n    expr: up\n  - alert: x\n    expr: up\n    foo: 1\n";
        let e = parse(bad).unwrap_err();
        assert_eq!(
            e,
            vec!["yaml: unmarshal errors:\n  line 8: field foo not found in type rulefmt.RuleNode"]
        );
        let bad = "groups:\n- name: g\n  rules:\n  - record: a-b\n    expr: up\n- name: g\n  rules:\n  - expr: up\n";
        let e = parse(bad).unwrap_err();
        assert_eq!(
            e,
            vec![
                "4:13: group \"g\", rule 1, \"a-b\": invalid recording rule name: a-b",
                "6:3: groupname: \"g\" is repeated in the same file",
                "0:0: group \"g\", rule 1, \"\": one of 'record' or 'alert' must be set",
            ]
        );
    }
}
