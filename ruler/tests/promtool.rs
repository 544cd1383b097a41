//! Rule files are checked with `promtool check rules`'s messages: each broken file
//! here gets the same error lines from our parser as from the real promtool 2.42.
//! Where the text comes from a parser of another language (PromQL syntax errors, Go
//! template parse errors) only the part before it is compared; the file says which.

use std::process::Command;

use strata_testkit::procs::promtool;

/// promtool's error lines for `path` (after `  FAILED:`), or `None` if it passed.
fn promtool_errors(path: &str) -> Option<Vec<String>> {
    let out = Command::new(promtool())
        .args(["check", "rules", path])
        .output()
        .unwrap();
    if out.status.success() {
        return None;
    }
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let body = err
        .split_once("  FAILED:\n")
        .map_or(err.as_str(), |(_, b)| b);
    // One error per line, except yaml's multi-line unmarshal errors.
    let mut lines: Vec<String> = Vec::new();
    for l in body.lines() {
        if l.starts_with("  ") && !lines.is_empty() {
            let last = lines.last_mut().unwrap();
            last.push('\n');
            last.push_str(l);
        } else if !l.is_empty() {
            lines.push(l.to_string());
        }
    }
    Some(lines)
}

/// Cut at `marker` when present (text that comes from a foreign parser).
fn cut(s: &str, marker: Option<&str>) -> String {
    match marker.and_then(|m| s.find(m).map(|i| i + m.len())) {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

const CASES: &[(&str, &str, Option<&str>)] = &[
    ("good", "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: sum(up)\n      - alert: X\n        expr: up == 0\n        for: 5m\n        keep_firing_for: 1m\n        labels: {severity: page}\n        annotations:\n          summary: \"{{ $labels.instance }} {{ $value | humanize }}\"\n", None),
    ("bad record name", "groups:\n- name: g\n  rules:\n  - record: a-b\n    expr: up\n", None),
    ("record and alert", "groups:\n- name: g\n  rules:\n  - record: a\n    alert: b\n    expr: up\n", None),
    ("neither", "groups:\n- name: g\n  rules:\n  - expr: up\n", None),
    ("no expr", "groups:\n- name: g\n  rules:\n  - alert: A\n", None),
    ("empty and repeated group names", "groups:\n- name: \"\"\n  rules: []\n- name: x\n  rules: []\n- name: x\n  rules: []\n", None),
    ("recording rule with alert fields", "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n        for: 1m\n        annotations:\n          a: b\n", None),
    ("invalid label and annotation names", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    labels:\n      __name__: x\n", None),
    ("unknown field in rule", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    severity: page\n", None),
    ("unknown field in group", "groups:\n- name: g\n  evaluation_interval: 1m\n  rules: []\n", None),
    ("unknown top-level field", "rule_groups: []\n", None),
    ("bad duration", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    for: 5x\n", None),
    ("yaml syntax", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n   for: 1m\n", None),
    ("yaml scanner error", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up: x\n", None),
    ("tab indentation", "groups:\n\t- name: g\n", None),
    ("scalar rules", "groups:\n- name: g\n  rules: 3\n", None),
    ("bad expression", "groups:\n- name: g\n  rules:\n  - record: r\n    expr: sum(up\n", Some("could not parse expression: ")),
    ("bad template", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations:\n      summary: \"{{ nosuchfunc }}\"\n", Some("annotation \"summary\": template: __alert_A:1:")),
];

#[test]
fn messages_match_promtool() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (what, text, marker)) in CASES.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.yml"));
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        let want = promtool_errors(path);
        let got = strata_ruler::rulefmt::parse_file(path).err();
        match (want, got) {
            (None, None) => {}
            (Some(w), Some(g)) => {
                let w: Vec<String> = w.iter().map(|s| cut(s, *marker)).collect();
                let g: Vec<String> = g.iter().map(|s| cut(s, *marker)).collect();
                let (mut ws, mut gs) = (w.clone(), g.clone());
                // Go ranges over label maps in random order.
                ws.sort();
                gs.sort();
                assert_eq!(gs, ws, "{what}: ours {g:#?}\npromtool {w:#?}");
            }
            (w, g) => panic!("{what}: promtool {w:?}, ours {g:?}"),
        }
    }
}
