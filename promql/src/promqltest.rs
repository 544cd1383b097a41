//! A runner for Prometheus's data-driven PromQL tests (`promqltest/testdata/*.test`).
//! See `shared/promqltest/README.md` for the format.
//!
//! Files run on an engine set up as Prometheus's test engine (`promqltest.NewTestEngine`)
//! sets up its own: at most 10 000 samples and delayed `__name__` removal
//! (`EnableDelayedNameRemoval: true`), which the upstream files expect. A file of ours
//! holding the comment line [`IMMEDIATE_NAME_REMOVAL`] runs without it, as Prometheus
//! and Strata evaluate by default (`--enable-feature=promql-delayed-name-removal` off).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use promql_parser::parser::{self, Expr};
use strata_tsdb::labels::Labels;

use crate::eval::STALE_NAN_BITS;
use crate::functions::almost_equal;
use crate::histogram as hist;
use crate::testing::MemStorage;
use crate::{Engine, EngineOptions, FloatHistogram, Value};
use strata_tsdb::histogram::{CounterResetHint, Span};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub line: usize,
    pub query: String,
    pub outcome: Outcome,
}

#[derive(Debug, Default)]
pub struct FileReport {
    pub cases: Vec<CaseResult>,
}

impl FileReport {
    pub fn count(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for r in &self.cases {
            match r.outcome {
                Outcome::Pass => c.0 += 1,
                Outcome::Fail(_) => c.1 += 1,
                Outcome::Skip(_) => c.2 += 1,
            }
        }
        c
    }
}

/// The `*.test` files in `dir`, sorted by name (none when it cannot be read).
pub fn test_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "test"));
    v.sort();
    v
}

/// Prometheus's upstream test files: `shared/promqltest/testdata` beside or above
/// `from` (a crate's manifest directory), `None` when there is none. CI always has
/// them: there (`CI` set), their absence panics.
pub fn upstream_test_dir(from: &Path) -> Option<PathBuf> {
    let dir = from
        .ancestors()
        .flat_map(|a| {
            [
                a.join("../shared/promqltest/testdata"),
                a.join("shared/promqltest/testdata"),
            ]
        })
        .find(|d| d.is_dir());
    assert!(
        dir.is_some() || std::env::var_os("CI").is_none(),
        "promqltest: ../shared/promqltest/testdata not found"
    );
    dir
}

/// `file:line` → reason, from the checked-in skip file.
pub fn parse_skip_file(text: &str) -> HashMap<(String, usize), String> {
    let mut m = HashMap::new();
    for l in text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (loc, reason) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        if let Some((f, n)) = loc.rsplit_once(':') {
            if let Ok(n) = n.parse() {
                m.insert((f.to_string(), n), reason.trim().to_string());
            }
        }
    }
    m
}

/// Times and durations in test files (`at 10s`, `from -1m`, `load 5m`): a signed
/// Prometheus duration or seconds, parsed by the one shared parser.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    strata_time::duration::parse_signed_ms(s.trim()).map_err(|e| e.to_string())
}

pub fn parse_number(s: &str) -> Option<f64> {
    parse_number_hex(s, false)
}

fn parse_number_hex(s: &str, hex: bool) -> Option<f64> {
    let l = s.to_ascii_lowercase();
    match l.as_str() {
        "inf" | "+inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        _ => {}
    }
    let (neg, body) = match l.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, l.strip_prefix('+').unwrap_or(&l)),
    };
    if let Some(h) = body.strip_prefix("0x").filter(|_| hex) {
        let v = i64::from_str_radix(h, 16).ok()? as f64;
        return Some(if neg { -v } else { v });
    }
    if body.is_empty() || !body.chars().next().unwrap().is_ascii_digit() && !body.starts_with('.') {
        return None;
    }
    let v: f64 = body.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// One value slot of a series description: a number, a stale marker, a native
/// histogram (with whether its counter-reset hint was written out) or a gap.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    Val(f64),
    Hist(Box<FloatHistogram>, bool),
    Gap,
}

/// Value tokens of a series line: split at whitespace outside `{{…}}`.
pub fn split_values(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if rest[i..].starts_with("{{") {
            depth += 1;
            cur.push_str("{{");
            i += 2;
            continue;
        }
        if depth > 0 && rest[i..].starts_with("}}") {
            depth -= 1;
            cur.push_str("}}");
            i += 2;
            continue;
        }
        let c = rest[i..].chars().next().expect("in bounds");
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += c.len_utf8();
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parse the inside of `{{schema:1 sum:3 count:22 buckets:[5 10 7] …}}`: the histogram
/// and whether `counter_reset_hint` was given.
pub fn parse_histogram(body: &str) -> Result<(FloatHistogram, bool), String> {
    let mut h = FloatHistogram::default();
    let mut hint_set = false;
    let (mut pos, mut neg): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    let (mut off, mut noff) = (0i32, 0i32);
    let mut rest = body.trim();
    let num = |s: &str| parse_number_hex(s, true).ok_or_else(|| format!("bad number {s:?}"));
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once(':')
            .ok_or_else(|| format!("bad histogram field in {body:?}"))?;
        let key = key.trim();
        let after = after.trim_start();
        let (val, next) = if let Some(a) = after.strip_prefix('[') {
            let end = a.find(']').ok_or("unclosed [")?;
            (&a[..end], &a[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        rest = next.trim_start();
        let list = || -> Result<Vec<f64>, String> { val.split_whitespace().map(num).collect() };
        match key {
            "schema" => h.schema = num(val)? as i32,
            "sum" => h.sum = num(val)?,
            "count" => h.count = num(val)?,
            "z_bucket" => h.zero_count = num(val)?,
            "z_bucket_w" => h.zero_threshold = num(val)?,
            "buckets" => pos = list()?,
            "n_buckets" => neg = list()?,
            "offset" => off = num(val)? as i32,
            "n_offset" => noff = num(val)? as i32,
            "custom_values" => h.custom_values = list()?,
            "counter_reset_hint" => {
                hint_set = true;
                h.counter_reset_hint = match val {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    v => return Err(format!("bad counter_reset_hint {v:?}")),
                }
            }
            k => return Err(format!("unknown histogram field {k:?}")),
        }
    }
    if !pos.is_empty() {
        h.positive_spans = vec![Span {
            offset: off,
            length: pos.len() as u32,
        }];
        h.positive_buckets = pos;
    }
    if !neg.is_empty() {
        h.negative_spans = vec![Span {
            offset: noff,
            length: neg.len() as u32,
        }];
        h.negative_buckets = neg;
    }
    Ok((h, hint_set))
}

/// A histogram token: `{{…}}`, `{{…}}xN`, `{{…}}+{{…}}xN` or `{{…}}-{{…}}xN`.
fn expand_histogram(tok: &str, out: &mut Vec<Slot>) -> Result<(), String> {
    let bad = || format!("bad histogram value {tok:?}");
    let end = tok.find("}}").ok_or_else(bad)?;
    let (base, base_set) = parse_histogram(&tok[2..end])?;
    let rest = &tok[end + 2..];
    if rest.is_empty() {
        out.push(Slot::Hist(Box::new(base), base_set));
        return Ok(());
    }
    if let Some(n) = rest.strip_prefix('x') {
        let n: usize = n.parse().map_err(|_| bad())?;
        for _ in 0..=n {
            out.push(Slot::Hist(Box::new(base.clone()), base_set));
        }
        return Ok(());
    }
    let sub = rest.starts_with('-');
    let inc = rest[1..].strip_prefix("{{").ok_or_else(bad)?;
    let iend = inc.find("}}").ok_or_else(bad)?;
    let (inc_h, inc_set) = parse_histogram(&inc[..iend])?;
    let n: usize = inc[iend + 2..]
        .strip_prefix('x')
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    out.push(Slot::Hist(Box::new(base.clone()), inc_set));
    let mut cur = base;
    for _ in 0..n {
        if cur.schema > inc_h.schema {
            return Err(format!(
                "error combining histograms: cannot merge from schema {} to {}",
                inc_h.schema, cur.schema
            ));
        }
        cur = hist::combine(&cur, &inc_h, sub)
            .map_err(|_| "error combining histograms".to_string())?
            .0;
        out.push(Slot::Hist(Box::new(cur.clone()), inc_set));
    }
    Ok(())
}

/// Expand `1 2 _ 4 stale 6 _x3 7 0+10x100 1-1x3 5x2` and histogram literals.
pub fn expand_values(tokens: &[&str]) -> Result<Vec<Slot>, String> {
    let mut out = Vec::new();
    for &tok in tokens {
        if tok.starts_with("{{") {
            expand_histogram(tok, &mut out)?;
            continue;
        }
        if tok == "_" {
            out.push(Slot::Gap);
            continue;
        }
        if tok == "stale" {
            out.push(Slot::Val(f64::from_bits(STALE_NAN_BITS)));
            continue;
        }
        if let Some(v) = parse_number(tok) {
            out.push(Slot::Val(v));
            continue;
        }
        let (pre, n) = tok
            .rsplit_once('x')
            .ok_or_else(|| format!("bad value {tok:?}"))?;
        let n: usize = n.parse().map_err(|_| format!("bad value {tok:?}"))?;
        if pre == "_" {
            out.extend(std::iter::repeat_n(Slot::Gap, n));
            continue;
        }
        if let Some(v) = parse_number(pre) {
            out.extend(std::iter::repeat_n(Slot::Val(v), n + 1));
            continue;
        }
        // a+b or a-b: the operator is the first +/- after position 0 not following an exponent
        let bytes = pre.as_bytes();
        let mut split = None;
        for i in 1..bytes.len() {
            if (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E') {
                split = Some(i);
                break;
            }
        }
        let i = split.ok_or_else(|| format!("bad value {tok:?}"))?;
        let a = parse_number(&pre[..i]).ok_or_else(|| format!("bad value {tok:?}"))?;
        let mut b = parse_number(&pre[i + 1..]).ok_or_else(|| format!("bad value {tok:?}"))?;
        if bytes[i] == b'-' {
            b = -b;
        }
        let mut cur = a;
        out.push(Slot::Val(cur));
        for _ in 0..n {
            cur += b;
            out.push(Slot::Val(cur));
        }
    }
    Ok(out)
}

/// Split a series line into its label set and the value tokens.
pub fn parse_series_line(line: &str) -> Result<(Labels, Vec<String>), String> {
    let line = line.trim();
    // end of the selector part: after the matching `}` if any brace precedes whitespace
    let first_ws = line.find(char::is_whitespace).unwrap_or(line.len());
    let brace = line.find('{');
    let end = match brace {
        Some(b) if b < first_ws || line[..b].trim().is_empty() => {
            let mut in_q: Option<char> = None;
            let mut esc = false;
            let mut endi = None;
            for (i, c) in line.char_indices().skip_while(|(i, _)| *i < b) {
                if let Some(q) = in_q {
                    if esc {
                        esc = false;
                    } else if c == '\\' {
                        esc = true;
                    } else if c == q {
                        in_q = None;
                    }
                    continue;
                }
                match c {
                    '"' | '\'' | '`' => in_q = Some(c),
                    '}' => {
                        endi = Some(i + 1);
                        break;
                    }
                    _ => {}
                }
            }
            endi.ok_or("unbalanced braces")?
        }
        _ => first_ws,
    };
    let sel = &line[..end];
    let rest = &line[end..];
    let labels = parse_labels(sel)?;
    Ok((labels, split_values(rest)))
}

pub fn parse_labels(sel: &str) -> Result<Labels, String> {
    if sel.trim() == "{}" {
        return Ok(Labels::new());
    }
    match parser::parse(sel)? {
        Expr::VectorSelector(vs) => {
            let mut pairs: Vec<(String, String)> = Vec::new();
            if let Some(n) = vs.name {
                pairs.push(("__name__".into(), n));
            }
            for m in vs.matchers.matchers {
                pairs.push((m.name, m.value));
            }
            Ok(Labels::from_pairs(pairs))
        }
        _ => Err(format!("not a series selector: {sel}")),
    }
}

/// One `expect warn msg: …` / `regex: …` line.
#[derive(Debug)]
enum AnnoExpect {
    Msg(String),
    Regex(regex::Regex),
}

impl AnnoExpect {
    /// Whether annotation `got` (which carries no ` (line:col)` position: see
    /// `eval::Annotations`) matches; an expected text's position is left out of the
    /// comparison, a pattern is tried on `got` with the position `(1:1)` appended.
    fn matches(&self, got: &str) -> bool {
        match self {
            AnnoExpect::Msg(m) => strip_position(m) == got,
            AnnoExpect::Regex(r) => r.is_match(got) || r.is_match(&format!("{got} (1:1)")),
        }
    }
}

/// A pattern ending in a literal position, `… \(1:21\)`, without it: annotations
/// carry no positions, so it is left out as [`strip_position`] leaves it out of texts.
fn strip_regex_position(r: &str) -> &str {
    if let Some(open) = r.rfind(" \\(") {
        let tail = &r[open + 3..];
        if let Some(pos) = tail.strip_suffix("\\)") {
            if pos.split(':').count() == 2 && pos.split(':').all(|x| x.parse::<u32>().is_ok()) {
                return &r[..open];
            }
        }
    }
    r
}

/// `text (12:3)` → `text`.
fn strip_position(m: &str) -> &str {
    if let Some(open) = m.rfind(" (") {
        let tail = &m[open + 2..];
        if let Some(pos) = tail.strip_suffix(')') {
            if pos.split(':').count() == 2 && pos.split(':').all(|x| x.parse::<u32>().is_ok()) {
                return &m[..open];
            }
        }
    }
    m
}

/// Prometheus's `checkAnnotations`.
fn check_annotations(c: &EvalCase, warnings: &[String], infos: &[String]) -> Result<(), String> {
    if c.warn && warnings.is_empty() {
        return Err("expected warnings but got none".into());
    }
    if c.info && infos.is_empty() {
        return Err("expected info annotations but got none".into());
    }
    for (kind, exp, got) in [
        ("warn", &c.warn_expect, warnings),
        ("info", &c.info_expect, infos),
    ] {
        if exp.is_empty() {
            continue;
        }
        for e in exp.iter() {
            if !got.iter().any(|g| e.matches(g)) {
                return Err(format!("expected {kind} annotation {e:?}, found {got:?}"));
            }
        }
        for g in got {
            if !exp.iter().any(|e| e.matches(g)) {
                return Err(format!("unexpected {kind} annotation {g:?}"));
            }
        }
    }
    if c.no_warn && !warnings.is_empty() {
        return Err(format!("unexpected warnings {warnings:?}"));
    }
    if c.no_info && !infos.is_empty() {
        return Err(format!("unexpected infos {infos:?}"));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct EvalCase {
    query: String,
    range: Option<(i64, i64, i64)>,
    at: i64,
    fail: bool,
    fail_msg: Option<String>,
    fail_regex: Option<String>,
    ordered: bool,
    /// `expect warn`/`eval_warn`, `expect info`/`eval_info`: some are required.
    warn: bool,
    info: bool,
    /// Expected texts (`msg:`) or patterns (`regex:`) of warnings and infos.
    warn_expect: Vec<AnnoExpect>,
    info_expect: Vec<AnnoExpect>,
    no_warn: bool,
    no_info: bool,
    expect_string: Option<String>,
    expect_range: Option<(i64, i64, i64)>,
    results: Vec<(usize, String)>,
}

fn identifiers(q: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut cur = String::new();
    for c in q.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else if !cur.is_empty() {
            out.insert(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.insert(cur);
    }
    out
}

/// Skip rules for features this engine does not implement.
fn rule_skip(c: &EvalCase, session_skip: &Option<String>) -> Option<String> {
    if let Some(r) = session_skip {
        return Some(r.clone());
    }
    let q = &c.query;
    let ids = identifiers(q);
    for (f, why) in [
        ("info", "info() function"),
        ("fill", "binop fill modifiers"),
        ("fill_left", "binop fill modifiers"),
        ("fill_right", "binop fill modifiers"),
        ("anchored", "extended range selectors (anchored)"),
        ("smoothed", "extended range selectors (smoothed)"),
        ("start_timestamp", "start timestamps"),
        (
            "limit_ratio",
            "limit_ratio: result depends on Prometheus's label hash",
        ),
        ("__type__", "type_and_unit labels"),
        ("__unit__", "type_and_unit labels"),
        ("min_of", "duration expressions"),
        ("max_of", "duration expressions"),
    ] {
        if ids.contains(f) {
            return Some(f.to_string() + ": " + why);
        }
    }
    if !c.fail && parser::parse(q).is_err() {
        return Some("duration expressions: query not parseable by promql-parser 0.11".into());
    }
    None
}

fn go_float_eq(exp: f64, act: f64) -> bool {
    if exp.is_nan() && act.is_nan() {
        return true;
    }
    almost_equal(exp, act, 1e-6)
}

/// One result series: float points and histogram points.
struct Got {
    labels: Labels,
    floats: Vec<(i64, f64)>,
    hists: Vec<(i64, FloatHistogram)>,
}

impl Got {
    fn show(&self) -> String {
        let mut s = format!("{} {:?}", self.labels, self.floats);
        for (t, h) in &self.hists {
            s.push_str(&format!(" {}@{t}", hist_expr(h)));
        }
        s
    }
}

/// A histogram in the test files' notation, for messages.
fn hist_expr(h: &FloatHistogram) -> String {
    format!(
        "{{{{schema:{} count:{} sum:{} z_bucket:{} z_bucket_w:{} spans:{:?} buckets:{:?} n_spans:{:?} n_buckets:{:?} custom_values:{:?} hint:{:?}}}}}",
        h.schema,
        h.count,
        h.sum,
        h.zero_count,
        h.zero_threshold,
        h.positive_spans.iter().map(|s| (s.offset, s.length)).collect::<Vec<_>>(),
        h.positive_buckets,
        h.negative_spans.iter().map(|s| (s.offset, s.length)).collect::<Vec<_>>(),
        h.negative_buckets,
        h.custom_values,
        h.counter_reset_hint
    )
}

/// Prometheus's `compareNativeHistogram` on both histograms compacted: floats within
/// the tolerance, same layout, the hint only when the expectation names one.
fn hist_eq(exp: &FloatHistogram, got: &FloatHistogram, hint_set: bool) -> bool {
    let (e, g) = (hist::compact(exp), hist::compact(got));
    let buckets_eq = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| go_float_eq(*x, *y))
    };
    e.schema == g.schema
        && go_float_eq(e.count, g.count)
        && go_float_eq(e.sum, g.sum)
        && (!hist::uses_custom(&e) || e.custom_values == g.custom_values)
        && e.zero_threshold == g.zero_threshold
        && go_float_eq(e.zero_count, g.zero_count)
        && e.negative_spans == g.negative_spans
        && buckets_eq(&e.negative_buckets, &g.negative_buckets)
        && e.positive_spans == g.positive_spans
        && buckets_eq(&e.positive_buckets, &g.positive_buckets)
        && (!hint_set || e.counter_reset_hint == g.counter_reset_hint)
}

fn compare_rows(
    rows: &[(usize, String)],
    got: &[Got],
    times: Option<(i64, i64, i64)>,
    ordered: bool,
) -> Result<(), String> {
    let mut exp: Vec<(Labels, Vec<Slot>)> = Vec::new();
    for (ln, r) in rows {
        let (l, toks) = parse_series_line(r).map_err(|e| format!("line {ln}: {e}"))?;
        let t: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
        exp.push((l, expand_values(&t).map_err(|e| format!("line {ln}: {e}"))?));
    }
    if exp.len() != got.len() {
        return Err(format!(
            "expected {} series, got {}: {}",
            exp.len(),
            got.len(),
            got.iter().map(Got::show).collect::<Vec<_>>().join("; ")
        ));
    }
    let gm: HashMap<&Labels, usize> = got
        .iter()
        .enumerate()
        .map(|(i, g)| (&g.labels, i))
        .collect();
    for (ei, (l, slots)) in exp.iter().enumerate() {
        let Some(&gi) = gm.get(l) else {
            return Err(format!(
                "expected series {l} not found; got {}",
                got.iter()
                    .map(|g| g.labels.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let g = &got[gi];
        if ordered && gi != ei {
            return Err(format!("series {l} at position {gi}, expected {ei}"));
        }
        let at = |i: usize| match times {
            None => 0,
            Some((start, _, step)) => start + i as i64 * step,
        };
        let mut ef: Vec<(i64, f64)> = Vec::new();
        let mut eh: Vec<(i64, &FloatHistogram, bool)> = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            match s {
                Slot::Val(v) => ef.push((at(i), *v)),
                Slot::Hist(h, set) => eh.push((at(i), h, *set)),
                Slot::Gap => {}
            }
        }
        let fail = || {
            format!(
                "series {l}: expected {:?} and histograms [{}], got {}",
                ef,
                eh.iter()
                    .map(|(t, h, _)| format!("{}@{t}", hist_expr(h)))
                    .collect::<Vec<_>>()
                    .join(", "),
                g.show()
            )
        };
        if ef.len() != g.floats.len() || eh.len() != g.hists.len() {
            return Err(fail());
        }
        for (e, p) in ef.iter().zip(g.floats.iter()) {
            if (times.is_some() && e.0 != p.0) || !go_float_eq(e.1, p.1) {
                return Err(fail());
            }
        }
        for (e, p) in eh.iter().zip(g.hists.iter()) {
            if (times.is_some() && e.0 != p.0) || !hist_eq(e.1, &p.1, e.2) {
                return Err(fail());
            }
        }
    }
    Ok(())
}

fn run_case(engine: &Engine, st: &MemStorage, c: &EvalCase) -> Result<(), String> {
    let res = match c.range {
        Some((s, e, step)) => engine.range(st, &c.query, s, e, step),
        None => engine.instant(st, &c.query, c.at),
    };
    if c.fail {
        return match res {
            Ok(r) => Err(format!("expected error, got {:?}", r.value)),
            Err(e) => {
                let msg = e.to_string();
                if let Some(m) = &c.fail_msg {
                    if &msg != m {
                        return Err(format!("expected error {m:?}, got {msg:?}"));
                    }
                }
                if let Some(r) = &c.fail_regex {
                    let re = regex::Regex::new(r).map_err(|e| e.to_string())?;
                    if !re.is_match(&msg) {
                        return Err(format!("expected error matching {r:?}, got {msg:?}"));
                    }
                }
                Ok(())
            }
        };
    }
    let res = res.map_err(|e| format!("unexpected error: {e}"))?;
    check_annotations(c, &res.warnings, &res.infos)?;
    if let Some(s) = &c.expect_string {
        return match res.value {
            Value::String { s: got, .. } if &got == s => Ok(()),
            v => Err(format!("expected string {s:?}, got {v:?}")),
        };
    }
    match res.value {
        Value::Scalar { v, .. } => {
            if c.results.len() != 1 {
                return Err(format!("got scalar {v}, expected {} rows", c.results.len()));
            }
            let e = parse_number(c.results[0].1.trim())
                .ok_or_else(|| format!("expected {}", c.results[0].1))?;
            if !go_float_eq(e, v) {
                return Err(format!("expected scalar {e}, got {v}"));
            }
            check_range_consistency(
                engine,
                st,
                c,
                &[Got {
                    labels: Labels::new(),
                    floats: vec![(0, v)],
                    hists: vec![],
                }],
            )
        }
        Value::String { s, .. } => Err(format!("unexpected string result {s:?}")),
        Value::Vector(v) => {
            if c.range.is_some() || c.expect_range.is_some() {
                return Err("expected matrix, got vector".into());
            }
            if c.results.len() == 1 && parse_number(c.results[0].1.trim()).is_some() {
                return Err(format!("expected scalar, got vector {v:?}"));
            }
            let got: Vec<Got> = v
                .into_iter()
                .map(|s| match s.h {
                    Some(h) => Got {
                        labels: s.labels,
                        floats: vec![],
                        hists: vec![(0, *h)],
                    },
                    None => Got {
                        labels: s.labels,
                        floats: vec![(0, s.v)],
                        hists: vec![],
                    },
                })
                .collect();
            compare_rows(&c.results, &got, None, c.ordered)?;
            check_range_consistency(engine, st, c, &got)
        }
        Value::Matrix(m) => {
            let times = match (c.range, c.expect_range) {
                (Some(r), _) => r,
                (None, Some(r)) => r,
                _ => return Err("expected vector, got matrix".into()),
            };
            for w in m.windows(2) {
                if w[0].labels >= w[1].labels {
                    return Err("matrix not sorted by labels".into());
                }
            }
            let got: Vec<Got> = m
                .into_iter()
                .map(|s| Got {
                    labels: s.labels,
                    floats: s.samples,
                    hists: s.histograms,
                })
                .collect();
            compare_rows(&c.results, &got, Some(times), false)
        }
    }
}

fn is_command(l: &str) -> bool {
    matches!(
        l.split_whitespace().next().unwrap_or(""),
        "clear"
            | "load"
            | "load_with_nhcb"
            | "eval"
            | "eval_fail"
            | "eval_ordered"
            | "eval_warn"
            | "eval_info"
    )
}

/// Like upstream's runner: re-run an instant query as a range query from `t-1m` to
/// `t+1m` and check that its middle step equals the instant result.
fn check_range_consistency(
    engine: &Engine,
    st: &MemStorage,
    c: &EvalCase,
    instant: &[Got],
) -> Result<(), String> {
    let ids = identifiers(&c.query);
    if ["start", "end", "step", "range"]
        .iter()
        .any(|f| ids.contains(*f))
    {
        // these depend on the query's range, so the re-run legitimately differs
        return Ok(());
    }
    let t = c.at;
    let res = engine
        .range(st, &c.query, t - 60_000, t + 60_000, 60_000)
        .map_err(|e| format!("range re-run failed: {e}"))?;
    let Value::Matrix(m) = res.value else {
        return Err("range re-run did not return a matrix".into());
    };
    type Point = (Labels, Option<f64>, Option<FloatHistogram>);
    let mut mid: Vec<Point> = m
        .into_iter()
        .filter_map(|s| {
            let f = s.samples.iter().find(|p| p.0 == t).map(|p| p.1);
            let h = s.histograms.iter().find(|p| p.0 == t).map(|p| p.1.clone());
            (f.is_some() || h.is_some()).then(|| (s.labels.clone(), f, h))
        })
        .collect();
    let mut inst: Vec<Point> = instant
        .iter()
        .map(|g| {
            (
                g.labels.clone(),
                g.floats.first().map(|p| p.1),
                g.hists.first().map(|p| p.1.clone()),
            )
        })
        .collect();
    mid.sort_by(|a, b| a.0.cmp(&b.0));
    inst.sort_by(|a, b| a.0.cmp(&b.0));
    let same = mid.len() == inst.len()
        && mid.iter().zip(inst.iter()).all(|(a, b)| {
            a.0 == b.0
                && match (a.1, b.1) {
                    (Some(x), Some(y)) => go_float_eq(y, x),
                    (None, None) => true,
                    _ => false,
                }
                && match (&a.2, &b.2) {
                    (Some(x), Some(y)) => hist_eq(y, x, true),
                    (None, None) => true,
                    _ => false,
                }
        });
    if !same {
        return Err(format!(
            "range re-run middle step {mid:?} differs from instant result {inst:?}"
        ));
    }
    Ok(())
}

/// `load_with_nhcb`: classic `_bucket`/`_count`/`_sum` series gathered per base series
/// and timestamp, converted to custom-bucket histograms as Prometheus's `convertnhcb`
/// does (cumulative `le` counts become per-bucket counts; the count defaults to the
/// highest bucket's; a missing `+Inf` bucket is added with the count).
#[derive(Default)]
struct Nhcb {
    /// Base series → time → (`le` → cumulative count, count, sum).
    series: BTreeMap<Labels, BTreeMap<i64, NhcbPoint>>,
}

#[derive(Default)]
struct NhcbPoint {
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: f64,
}

impl Nhcb {
    fn add(&mut self, labels: &Labels, samples: &[(i64, f64)]) {
        let Some(name) = labels.get("__name__") else {
            return;
        };
        let (base, kind) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, 0)
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, 1)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, 2)
        } else {
            return;
        };
        let le = if kind == 0 {
            match labels.get("le").and_then(parse_number) {
                Some(le) if !le.is_nan() => Some(le),
                _ => return,
            }
        } else {
            None
        };
        let key = labels.without(&["le"]).with("__name__", base);
        let m = self.series.entry(key).or_default();
        for &(t, v) in samples {
            let p = m.entry(t).or_default();
            match (kind, le) {
                (0, Some(le)) => p.buckets.push((le, v)),
                (1, _) => p.count = Some(v),
                _ => p.sum = v,
            }
        }
    }

    fn store(self, st: &MemStorage) -> Result<(), String> {
        for (labels, points) in self.series {
            let mut hists = Vec::new();
            for (t, mut p) in points {
                p.buckets
                    .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
                let count = p
                    .count
                    .or_else(|| p.buckets.last().map(|b| b.1))
                    .unwrap_or(0.0);
                if p.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
                    p.buckets.push((f64::INFINITY, count));
                }
                if p.buckets.last().is_some_and(|b| b.1 != count) {
                    return Err(format!("count mismatch for {labels} at {t}"));
                }
                let mut prev = 0.0;
                let counts: Vec<(i32, f64)> = p
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let c = b.1 - prev;
                        prev = b.1;
                        (i as i32, c)
                    })
                    .collect();
                let (positive_spans, positive_buckets) = hist::build(&counts);
                let h = FloatHistogram {
                    schema: strata_tsdb::histogram::CUSTOM_BUCKETS_SCHEMA,
                    count,
                    sum: p.sum,
                    positive_spans,
                    positive_buckets,
                    custom_values: p.buckets[..p.buckets.len() - 1]
                        .iter()
                        .map(|b| b.0)
                        .collect(),
                    ..Default::default()
                };
                hists.push((t, hist::compact(&h)));
            }
            st.add_mixed(labels, Vec::new(), hists);
        }
        Ok(())
    }
}

/// The comment line that runs a test file without delayed `__name__` removal (see the
/// module doc); Prometheus's runner reads it as a comment.
pub const IMMEDIATE_NAME_REMOVAL: &str = "# strata: immediate-name-removal";

/// The engine a test file's cases run on: Prometheus's test engine's settings, less
/// delayed name removal when the file asks ([`IMMEDIATE_NAME_REMOVAL`]).
pub fn engine_options(text: &str) -> EngineOptions {
    EngineOptions {
        max_samples: 10_000,
        delayed_name_removal: !text.lines().any(|l| l.trim() == IMMEDIATE_NAME_REMOVAL),
        ..Default::default()
    }
}

/// Run every case of one test file's text.
pub fn run_script(file: &str, text: &str, skips: &HashMap<(String, usize), String>) -> FileReport {
    run_script_on(MemStorage::new(), file, text, skips)
}

/// [`run_script`] over `st` (e.g. [`MemStorage::decoded`], to compare evaluations).
pub fn run_script_on(
    st: MemStorage,
    file: &str,
    text: &str,
    skips: &HashMap<(String, usize), String>,
) -> FileReport {
    run_script_visiting(&st, file, text, skips, &mut |_| {})
}

/// An `eval` case of a test file, handed to the visitor of [`run_script_visiting`]
/// with the storage holding the file's data at that point.
#[derive(Debug, Clone)]
pub struct EvalRef<'a> {
    pub line: usize,
    pub query: &'a str,
    /// `eval range`: start, end and step (ms); `None` for `eval instant`.
    pub range: Option<(i64, i64, i64)>,
    /// `eval instant`: the evaluation time (ms).
    pub at: i64,
    /// The file expects an error.
    pub expect_fail: bool,
    /// Why this runner skips the case (a feature the engine lacks), if it does.
    pub skipped: Option<&'a str>,
    /// Counts the `load` and `clear` commands before the case: cases of one data
    /// state share the number, so a consumer knows when the data changed.
    pub state: usize,
}

/// [`run_script_on`] over a borrowed `st`, calling `visit` for every parsed `eval`
/// case (skipped ones too) before the case runs: for runners that evaluate the same
/// cases elsewhere (e.g. through the query frontend) over the same data.
pub fn run_script_visiting(
    st: &MemStorage,
    file: &str,
    text: &str,
    skips: &HashMap<(String, usize), String>,
    visit: &mut dyn FnMut(&EvalRef),
) -> FileReport {
    let mut state = 0usize;
    let opts = engine_options(text);
    let engine = Engine::new(opts);
    let mut report = FileReport::default();
    let lines: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let t = l.trim();
            (
                i + 1,
                if t.starts_with('#') {
                    String::new()
                } else {
                    t.to_string()
                },
            )
        })
        .collect();
    let mut session_skip: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        let (ln, ref l) = lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        // block: this line plus following non-empty lines
        let mut j = i + 1;
        while j < lines.len() && !lines[j].1.is_empty() && !is_command(&lines[j].1) {
            j += 1;
        }
        let block = &lines[i + 1..j];
        let word = l.split_whitespace().next().unwrap_or("");
        match word {
            "clear" => {
                st.clear();
                session_skip = None;
                state += 1;
            }
            "load" | "load_with_nhcb" => {
                state += 1;
                let interval = l.split_whitespace().nth(1).map(parse_duration_ms);
                let interval = match interval {
                    Some(Ok(v)) => v,
                    _ => {
                        report.cases.push(CaseResult {
                            line: ln,
                            query: l.clone(),
                            outcome: Outcome::Fail("bad load interval".into()),
                        });
                        i = j;
                        continue;
                    }
                };
                let mut nhcb = Nhcb::default();
                for (bln, bl) in block {
                    if bl.contains("@st")
                        || bl
                            .split_whitespace()
                            .next()
                            .is_some_and(|w| w.ends_with("@st"))
                    {
                        session_skip = Some("start timestamps (@st) in load".into());
                        continue;
                    }
                    match parse_series_line(bl).and_then(|(labels, toks)| {
                        let t: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
                        expand_values(&t).map(|v| (labels, v))
                    }) {
                        Ok((labels, vals)) => {
                            if labels.get("__type__").is_some() || labels.get("__unit__").is_some()
                            {
                                session_skip =
                                    Some("type_and_unit labels (__type__/__unit__)".into());
                            }
                            let mut samples: Vec<(i64, f64)> = Vec::new();
                            let mut hists: Vec<(i64, FloatHistogram)> = Vec::new();
                            for (k, s) in vals.into_iter().enumerate() {
                                let t = k as i64 * interval;
                                match s {
                                    Slot::Val(v) => samples.push((t, v)),
                                    Slot::Hist(h, _) => hists.push((t, *h)),
                                    Slot::Gap => {}
                                }
                            }
                            if word == "load_with_nhcb" {
                                nhcb.add(&labels, &samples);
                            }
                            if hists.is_empty() {
                                st.add(labels, samples);
                            } else {
                                st.add_mixed(labels, samples, hists);
                            }
                        }
                        Err(e) => report.cases.push(CaseResult {
                            line: *bln,
                            query: bl.clone(),
                            outcome: Outcome::Fail(format!("load: {e}")),
                        }),
                    }
                }
                if let Err(e) = nhcb.store(st) {
                    report.cases.push(CaseResult {
                        line: ln,
                        query: l.clone(),
                        outcome: Outcome::Fail(format!("load_with_nhcb: {e}")),
                    });
                }
            }
            w if w.starts_with("eval") => {
                let mut c = EvalCase::default();
                let rest = l[w.len()..].trim_start();
                match w {
                    "eval_fail" => c.fail = true,
                    "eval_ordered" => c.ordered = true,
                    "eval_warn" => c.warn = true,
                    "eval_info" => c.info = true,
                    _ => {}
                }
                let parsed = (|| -> Result<(), String> {
                    let toks: Vec<&str> = rest.splitn(2, ' ').collect();
                    match toks[0] {
                        "instant" => {
                            let r = toks.get(1).ok_or("missing time")?.trim_start();
                            let r = r.strip_prefix("at ").ok_or("expected 'at'")?.trim_start();
                            let (t, q) = r.split_once(' ').ok_or("missing query")?;
                            c.at = parse_duration_ms(t)?;
                            c.query = q.trim().to_string();
                        }
                        "range" => {
                            let r = toks.get(1).ok_or("missing range")?;
                            let p: Vec<&str> = r.splitn(7, ' ').collect();
                            if p.len() < 7 || p[0] != "from" || p[2] != "to" || p[4] != "step" {
                                return Err("bad range eval".into());
                            }
                            c.range = Some((
                                parse_duration_ms(p[1])?,
                                parse_duration_ms(p[3])?,
                                parse_duration_ms(p[5])?,
                            ));
                            c.query = p[6].trim().to_string();
                        }
                        _ => return Err("bad eval".into()),
                    }
                    for (bln, bl) in block {
                        if let Some(e) = bl.strip_prefix("expect ") {
                            let e = e.trim();
                            if let Some(f) = e.strip_prefix("fail") {
                                c.fail = true;
                                let f = f.trim();
                                if let Some(m) = f.strip_prefix("msg:") {
                                    c.fail_msg = Some(m.trim().to_string());
                                } else if let Some(r) = f.strip_prefix("regex:") {
                                    c.fail_regex = Some(r.trim().to_string());
                                }
                            } else if e.starts_with("warn") || e.starts_with("info") {
                                let warn = e.starts_with("warn");
                                let rest = e[4..].trim();
                                let exp = if let Some(m) = rest.strip_prefix("msg:") {
                                    Some(AnnoExpect::Msg(m.trim().to_string()))
                                } else if let Some(r) = rest.strip_prefix("regex:") {
                                    Some(AnnoExpect::Regex(
                                        regex::Regex::new(strip_regex_position(r.trim()))
                                            .map_err(|e| e.to_string())?,
                                    ))
                                } else {
                                    None
                                };
                                if warn {
                                    c.warn = true;
                                    c.warn_expect.extend(exp);
                                } else {
                                    c.info = true;
                                    c.info_expect.extend(exp);
                                }
                            } else if e.starts_with("no_warn") {
                                c.no_warn = true;
                            } else if e.starts_with("no_info") {
                                c.no_info = true;
                            } else if e == "ordered" {
                                c.ordered = true;
                            } else if let Some(s) = e.strip_prefix("string") {
                                c.expect_string = Some(
                                    promql_parser::util::unquote_string(s.trim())
                                        .map_err(|e| e.to_string())?,
                                );
                            } else if let Some(r) = e.strip_prefix("range vector from ") {
                                let p: Vec<&str> = r.split_whitespace().collect();
                                if p.len() != 5 || p[1] != "to" || p[3] != "step" {
                                    return Err(format!("line {bln}: bad expect range"));
                                }
                                c.expect_range = Some((
                                    parse_duration_ms(p[0])?,
                                    parse_duration_ms(p[2])?,
                                    parse_duration_ms(p[4])?,
                                ));
                            } else {
                                return Err(format!("line {bln}: unknown expectation {e}"));
                            }
                        } else if let Some(m) = bl.strip_prefix("expected_fail_message") {
                            c.fail_msg = Some(m.trim().to_string());
                        } else if let Some(r) = bl.strip_prefix("expected_fail_regexp") {
                            c.fail_regex = Some(r.trim().to_string());
                        } else {
                            c.results.push((*bln, bl.clone()));
                        }
                    }
                    Ok(())
                })();
                let skip = if parsed.is_err() {
                    None
                } else if let Some(r) = skips.get(&(file.to_string(), ln)) {
                    Some(r.clone())
                } else {
                    rule_skip(&c, &session_skip)
                };
                if parsed.is_ok() {
                    visit(&EvalRef {
                        line: ln,
                        query: &c.query,
                        range: c.range,
                        at: c.at,
                        expect_fail: c.fail,
                        skipped: skip.as_deref(),
                        state,
                    });
                }
                let outcome = if let Err(e) = parsed {
                    Outcome::Fail(format!("bad eval command: {e}"))
                } else if let Some(r) = skip {
                    Outcome::Skip(r)
                } else {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_case(&engine, st, &c)
                    }));
                    match r {
                        Ok(Ok(())) => Outcome::Pass,
                        Ok(Err(e)) => Outcome::Fail(e),
                        Err(_) => Outcome::Fail("panic".into()),
                    }
                };
                report.cases.push(CaseResult {
                    line: ln,
                    query: c.query.clone(),
                    outcome,
                });
            }
            _ => report.cases.push(CaseResult {
                line: ln,
                query: l.clone(),
                outcome: Outcome::Fail(format!("unknown command {word}")),
            }),
        }
        i = j;
    }
    report
}

/// Group skip reasons for the summary.
pub fn skip_summary<'a>(reports: impl Iterator<Item = &'a FileReport>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in reports {
        for c in &r.cases {
            if let Outcome::Skip(s) = &c.outcome {
                *m.entry(s.clone()).or_insert(0) += 1;
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_values() {
        let v = expand_values(&["1", "_", "0+10x2", "1-1x1", "5x1", "_x2", "-1+1x1"]).unwrap();
        assert_eq!(v.len(), 1 + 1 + 3 + 2 + 2 + 2 + 2);
        assert_eq!(v[2], Slot::Val(0.0));
        assert_eq!(v[4], Slot::Val(20.0));
        assert_eq!(v[6], Slot::Val(0.0));
        assert_eq!(v[11], Slot::Val(-1.0));
        assert_eq!(expand_values(&["0x10"]).unwrap().len(), 11);
    }

    #[test]
    fn parses_series_lines() {
        let (l, t) =
            parse_series_line(r#"http_requests{job="api", instance="0"}  0+10x100"#).unwrap();
        assert_eq!(l.get("job"), Some("api"));
        assert_eq!(t, vec!["0+10x100"]);
        let (l, t) = parse_series_line(r#"{} 3"#).unwrap();
        assert!(l.is_empty());
        assert_eq!(t, vec!["3"]);
    }
}
