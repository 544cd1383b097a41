//! Runs Prometheus's data-driven PromQL conformance tests
//! (`<repo>/../shared/promqltest/testdata/*.test`) against our engine.
//!
//! Cases needing features we do not implement are skipped by rule (see
//! `strata_promql::promqltest`) or listed in `tests/promqltest-skips.txt`.
//! Set `PROMQLTEST_VERBOSE=1` to list every failure and skip.

use std::path::PathBuf;

use strata_promql::promqltest::{parse_skip_file, run_script, skip_summary, Outcome};

fn testdata_dir() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for anc in manifest.ancestors() {
        let d = anc.join("../shared/promqltest/testdata");
        if d.is_dir() {
            return Some(d);
        }
        let d = anc.join("shared/promqltest/testdata");
        if d.is_dir() {
            return Some(d);
        }
    }
    None
}

#[test]
fn promql_conformance() {
    let Some(dir) = testdata_dir() else {
        // CI always has shared/ beside the clone: there, a missing suite is a failure
        assert!(
            std::env::var_os("CI").is_none(),
            "promqltest: ../shared/promqltest/testdata not found"
        );
        eprintln!("promqltest: testdata not found next to the repo; skipping");
        return;
    };
    let skip_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/promqltest-skips.txt"
    ))
    .unwrap_or_default();
    let skips = parse_skip_file(&skip_text);
    let verbose = std::env::var_os("PROMQLTEST_VERBOSE").is_some();
    let only = std::env::var("PROMQLTEST_FILE").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let mut reports = Vec::new();
    let (mut tp, mut tf, mut ts) = (0, 0, 0);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let rep = run_script(&name, &text, &skips);
        let (p, f, s) = rep.count();
        println!("{name}: {p} passed, {f} failed, {s} skipped");
        for c in &rep.cases {
            match &c.outcome {
                Outcome::Fail(m) => println!("  FAIL {name}:{} {}\n       {}", c.line, c.query, m),
                Outcome::Skip(r) if verbose => {
                    println!("  skip {name}:{} {} ({r})", c.line, c.query)
                }
                _ => {}
            }
        }
        tp += p;
        tf += f;
        ts += s;
        reports.push(rep);
    }
    println!("skip reasons:");
    for (r, n) in skip_summary(reports.iter()) {
        println!("  {n:5}  {r}");
    }
    println!("TOTAL: {tp} passed, {tf} failed, {ts} skipped");
    assert_eq!(tf, 0, "{tf} PromQL conformance cases failed");
}

/// Strata's own cases in the same format (`tests/testdata/*.test`).
#[test]
fn strata_cases() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let mut failed = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let rep = run_script(&name, &text, &Default::default());
        let (p, f, s) = rep.count();
        println!("{name}: {p} passed, {f} failed, {s} skipped");
        assert!(p > 0 && s == 0, "{name}: {p} passed, {s} skipped");
        for c in &rep.cases {
            if let Outcome::Fail(m) = &c.outcome {
                println!("  FAIL {name}:{} {}\n       {}", c.line, c.query, m);
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 0);
}
