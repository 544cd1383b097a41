//! `promtool test rules`: unit-test files for rule files (`rule_files`,
//! `evaluation_interval`, `group_eval_order`, `tests` with `input_series` in the
//! expanding notation, `alert_rule_test` and `promql_expr_test`), run with the ruler's
//! own evaluation over an in-memory storage and the PromQL engine, with promtool's
//! verdicts: groups evaluated at every interval from 0 to the last evaluation time,
//! firing alerts compared at each `eval_time` (labels and annotations, in any order),
//! expressions compared sample by sample.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use strata_promql::{SelectHints, Storage, StorageError, StorageSeries};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::{MatchOp, Matcher};
use yaml_serde::Value;

use crate::group::{Env, Group};
use crate::rules::{AlertState, Rule};
use crate::{Appender, BoxFuture, Error, QueryEngine, Sample, STALE_NAN};

/// Series in memory, as the unit tests' storage.
#[derive(Debug, Default)]
struct Mem(Mutex<BTreeMap<Labels, Vec<(i64, f64)>>>);

impl Storage for Mem {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        _: &SelectHints,
    ) -> Result<Vec<StorageSeries>, StorageError> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.iter()
            .filter(|(l, _)| {
                matchers
                    .iter()
                    .all(|x| x.matches(l.get(&x.name).unwrap_or("")))
            })
            .map(|(l, s)| StorageSeries {
                labels: l.clone(),
                samples: s
                    .iter()
                    .copied()
                    .filter(|(t, _)| (mint..=maxt).contains(t))
                    .collect(),
                histograms: Vec::new(),
                resolution: 0,
            })
            .filter(|s| !s.samples.is_empty())
            .collect())
    }
}

impl Mem {
    fn add(&self, l: Labels, t: i64, v: f64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.entry(l).or_default();
        match s.binary_search_by_key(&t, |p| p.0) {
            Ok(i) => s[i].1 = v,
            Err(i) => s.insert(i, (t, v)),
        }
    }
}

struct MemEngine(Arc<Mem>, strata_promql::EngineOptions);

impl QueryEngine for MemEngine {
    fn instant<'a>(
        &'a self,
        _: &'a str,
        expr: &'a str,
        t: i64,
    ) -> BoxFuture<'a, Result<Vec<Sample>, Error>> {
        let r = strata_promql::Engine::new(self.1.clone()).instant(&*self.0, expr, t);
        Box::pin(async move {
            crate::samples_from_value(r.map_err(|e| Error::Query(e.to_string()))?.value, t)
        })
    }
}

impl Appender for Mem {
    fn append<'a>(&'a self, _: &'a str, samples: Vec<Sample>) -> BoxFuture<'a, Result<(), Error>> {
        for s in samples {
            self.add(s.labels, s.t, s.v);
        }
        Box::pin(async { Ok(()) })
    }
}

/// An `alert_rule_test`: evaluation time, alert name, expected (labels, annotations).
type AlertTest = (i64, String, Vec<(Labels, Labels)>);

struct Shared(Arc<Mem>);

impl Appender for Shared {
    fn append<'a>(&'a self, t: &'a str, samples: Vec<Sample>) -> BoxFuture<'a, Result<(), Error>> {
        self.0.append(t, samples)
    }
}

fn dur(v: &Value, default: i64) -> Result<i64, String> {
    match v.as_str() {
        None => Ok(default),
        Some(s) => strata_kit::duration::parse_ms(s).map_err(|e| format!("{s:?}: {e}")),
    }
}

/// A series description `metric{l="v"}` as labels.
fn series_labels(s: &str) -> Result<Labels, String> {
    let ms = strata_tsdb::matcher::parse_selector(s).map_err(|e| e.to_string())?;
    let mut pairs = Vec::new();
    for m in ms {
        if m.op != MatchOp::Equal {
            return Err(format!("{s}: only label=\"value\" in series"));
        }
        pairs.push((m.name, m.value));
    }
    Ok(Labels::from_pairs(pairs))
}

/// The expanding notation: `1 2 _ stale 1+2x3 5-1x2 _x3 3x2`; `None` is an omitted step.
pub fn expand_values(s: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    let num = |t: &str| -> Result<f64, String> {
        match t {
            "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
            "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
            "NaN" | "nan" => Ok(f64::NAN),
            _ => t.parse::<f64>().map_err(|_| format!("invalid value {t:?}")),
        }
    };
    for tok in s.split_whitespace() {
        if tok == "_" {
            out.push(None);
        } else if tok == "stale" {
            out.push(Some(f64::from_bits(STALE_NAN)));
        } else if let Some((head, n)) = tok.rsplit_once('x') {
            let n: usize = n
                .parse()
                .map_err(|_| format!("invalid repetition in {tok:?}"))?;
            if head == "_" {
                out.extend(std::iter::repeat_n(None, n));
                continue;
            }
            // a+b, a-b (the first sign may belong to a), or a alone.
            let split = head[1..].rfind(['+', '-']).map(|i| i + 1);
            let (a, b) = match split {
                Some(i) => (num(&head[..i])?, num(&head[i..])?),
                None => (num(head)?, 0.0),
            };
            for k in 0..=n {
                out.push(Some(a + b * k as f64));
            }
        } else {
            out.push(Some(num(tok)?));
        }
    }
    Ok(out)
}

/// Run one unit-test file; the failure messages (empty: it passed).
pub fn run_file(path: &std::path::Path) -> Vec<String> {
    run_file_with(path, &strata_promql::EngineOptions::default())
}

/// [`run_file`] on an engine with `opts` (promtool's `--enable-feature`).
pub fn run_file_with(path: &std::path::Path, opts: &strata_promql::EngineOptions) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![e.to_string()],
    };
    let doc: Value = match yaml_serde::from_str(&text) {
        Ok(v) => v,
        Err(e) => return vec![e.to_string()],
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let eval_interval = match dur(&doc["evaluation_interval"], 60_000) {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    let mut files = Vec::new();
    for f in doc["rule_files"].as_sequence().cloned().unwrap_or_default() {
        let f = f.as_str().unwrap_or_default();
        let p = dir.join(f);
        let pat = p.to_string_lossy().into_owned();
        match glob::glob(&pat) {
            Ok(g) => files.extend(
                g.filter_map(|p| p.ok())
                    .map(|p| p.to_string_lossy().into_owned()),
            ),
            Err(e) => return vec![e.to_string()],
        }
    }
    let order: Vec<String> = doc["group_eval_order"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return vec![e.to_string()],
    };
    let mut errs = Vec::new();
    for (i, t) in doc["tests"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let name = t["name"]
            .as_str()
            .map_or_else(|| format!("#{i}"), str::to_string);
        let r = rt.block_on(run_test(t, &files, &order, eval_interval, opts));
        for e in r {
            errs.push(format!("    name: {name},\n{e}"));
        }
    }
    errs
}

async fn run_test(
    t: &Value,
    files: &[String],
    order: &[String],
    eval_interval: i64,
    opts: &strata_promql::EngineOptions,
) -> Vec<String> {
    let mem = Arc::new(Mem::default());
    let interval = match dur(&t["interval"], eval_interval) {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    for s in t["input_series"].as_sequence().cloned().unwrap_or_default() {
        let labels = match series_labels(s["series"].as_str().unwrap_or_default()) {
            Ok(l) => l,
            Err(e) => return vec![e],
        };
        let values = match expand_values(s["values"].as_str().unwrap_or_default()) {
            Ok(v) => v,
            Err(e) => return vec![e],
        };
        for (k, v) in values.into_iter().enumerate() {
            if let Some(v) = v {
                mem.add(labels.clone(), k as i64 * interval, v);
            }
        }
    }
    let external: BTreeMap<String, String> = t["external_labels"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let registry = strata_kit::metrics::Registry::new();
    let env = Env {
        engine: Arc::new(MemEngine(mem.clone(), opts.clone())),
        appender: Arc::new(Shared(mem.clone())),
        notifier: None,
        external_labels: BTreeMap::new(),
        external_url: t["external_url"].as_str().unwrap_or_default().to_string(),
        resend_delay_ms: 60_000,
        outage_tolerance_ms: 3_600_000,
        for_grace_period_ms: 600_000,
        metrics: crate::metrics::RulerMetrics::new(&registry),
    };
    let env = Env {
        external_labels: external,
        ..env
    };
    let mut groups = Vec::new();
    for f in files {
        match crate::rulefmt::parse_file(f) {
            Ok(gs) => groups.extend(
                gs.groups
                    .iter()
                    .map(|g| Group::new("unit", f, g, eval_interval, 0, true)),
            ),
            Err(e) => return e,
        }
    }
    if !order.is_empty() {
        groups.sort_by_key(|g| {
            order
                .iter()
                .position(|o| *o == g.name)
                .unwrap_or(usize::MAX)
        });
    }
    let mut alert_tests: Vec<AlertTest> = Vec::new();
    for a in t["alert_rule_test"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
    {
        let at = match dur(&a["eval_time"], 0) {
            Ok(v) => v,
            Err(e) => return vec![e],
        };
        let name = a["alertname"].as_str().unwrap_or_default().to_string();
        let exp = a["exp_alerts"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let map = |v: &Value| -> Vec<(String, String)> {
                    v.as_mapping()
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| {
                                    Some((k.as_str()?.to_string(), crate_scalar(v)))
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let mut l = map(&e["exp_labels"]);
                l.push(("alertname".into(), name.clone()));
                (
                    Labels::from_pairs(l),
                    Labels::from_pairs(map(&e["exp_annotations"])),
                )
            })
            .collect();
        alert_tests.push((at, name, exp));
    }
    alert_tests.sort_by_key(|a| a.0);
    let mut maxt = alert_tests.last().map_or(0, |a| a.0);
    for p in t["promql_expr_test"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
    {
        maxt = maxt.max(dur(&p["eval_time"], 0).unwrap_or(0));
    }
    let mut errs = Vec::new();
    let mut curr = 0;
    let mut ts = 0;
    while ts <= maxt {
        for g in &mut groups {
            g.eval(&env, ts).await;
            for r in &g.rules {
                if !r.status().last_error.is_empty() {
                    errs.push(format!(
                        "    rule: {}, time: {}, err: {}",
                        r.name(),
                        strata_kit::format_duration_ms(ts),
                        r.status().last_error
                    ));
                }
            }
        }
        if !errs.is_empty() {
            return errs;
        }
        while curr < alert_tests.len()
            && ts <= alert_tests[curr].0
            && alert_tests[curr].0 < ts + eval_interval
        {
            let (at, name, exp) = &alert_tests[curr];
            let mut got: Vec<(Labels, Labels)> = Vec::new();
            if let Some(ar) = groups
                .iter()
                .flat_map(|g| g.rules.iter())
                .find_map(|r| match r {
                    Rule::Alerting(a) if a.name == *name => Some(a),
                    _ => None,
                })
            {
                for a in ar.active.values().filter(|a| a.state == AlertState::Firing) {
                    got.push((a.labels.clone(), Labels::from_pairs(a.annotations.iter())));
                }
            }
            let mut exp = exp.clone();
            got.sort();
            exp.sort();
            if got != exp {
                errs.push(format!(
                    "    alertname: {name}, time: {},\n        exp:{},\n        got:{}",
                    strata_kit::format_duration_ms(*at),
                    show(&exp),
                    show(&got)
                ));
            }
            curr += 1;
        }
        ts += eval_interval;
    }
    let engine = MemEngine(mem.clone(), opts.clone());
    for p in t["promql_expr_test"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
    {
        let expr = p["expr"].as_str().unwrap_or_default();
        let at = dur(&p["eval_time"], 0).unwrap_or(0);
        let got = match engine.instant("", expr, at).await {
            Ok(v) => v,
            Err(e) => {
                errs.push(format!(
                    "    expr: {expr:?}, time: {}, err: {e}",
                    strata_kit::format_duration_ms(at)
                ));
                continue;
            }
        };
        let mut got: Vec<(Labels, u64)> =
            got.into_iter().map(|s| (s.labels, s.v.to_bits())).collect();
        let mut exp = Vec::new();
        for s in p["exp_samples"].as_sequence().cloned().unwrap_or_default() {
            let l = match series_labels(s["labels"].as_str().unwrap_or("{}")) {
                Ok(l) => l,
                Err(_)
                    if s["labels"]
                        .as_str()
                        .is_none_or(|x| x.trim() == "{}" || x.trim().is_empty()) =>
                {
                    Labels::new()
                }
                Err(e) => {
                    errs.push(format!(
                        "    expr: {expr:?}, time: {}, err: {e}",
                        strata_kit::format_duration_ms(at)
                    ));
                    continue;
                }
            };
            let v = match &s["value"] {
                Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                v => expand_values(&crate_scalar(v))
                    .ok()
                    .and_then(|x| x.first().copied().flatten())
                    .unwrap_or(f64::NAN),
            };
            exp.push((l, v.to_bits()));
        }
        got.sort();
        exp.sort();
        if got != exp {
            errs.push(format!(
                "    expr: {expr:?}, time: {},\n        exp: {:?}\n        got: {:?}",
                strata_kit::format_duration_ms(at),
                exp.iter()
                    .map(|(l, v)| format!("{l} {}", f64::from_bits(*v)))
                    .collect::<Vec<_>>(),
                got.iter()
                    .map(|(l, v)| format!("{l} {}", f64::from_bits(*v)))
                    .collect::<Vec<_>>()
            ));
        }
    }
    errs
}

fn crate_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn show(v: &[(Labels, Labels)]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|(l, a)| format!("\n            labels: {l}, annotations: {a}"))
        .collect();
    format!("[{}]", items.join(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanding_notation() {
        let v = expand_values("1 _ 1+2x2 5-1x1 _x2 3x1 stale").unwrap();
        let f: Vec<String> = v
            .iter()
            .map(|x| {
                x.map_or("_".into(), |v| {
                    if crate::is_stale(v) {
                        "stale".into()
                    } else {
                        v.to_string()
                    }
                })
            })
            .collect();
        assert_eq!(
            f,
            ["1", "_", "1", "3", "5", "5", "4", "_", "_", "3", "3", "stale"]
        );
        assert_eq!(expand_values("-2+1x1").unwrap(), [Some(-2.0), Some(-1.0)]);
    }
}
