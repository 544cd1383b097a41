//! Golden `--help` output: every flag change shows up in review as a diff of
//! `tests/testdata/help/*.txt`. Regenerate with `UPDATE_GOLDEN=1`.

use std::path::PathBuf;

use strata_testkit::procs::{run, run_ok, strata};

const COMMANDS: &[&[&str]] = &[
    &[],
    &["all"],
    &["ingester"],
    &["querier"],
    &["ruler"],
    &["query-frontend"],
    &["compactor"],
    &["sidecar"],
    &["tools"],
    &["tools", "tsdb"],
    &["tools", "tsdb", "create-blocks-from", "openmetrics"],
    &["tools", "tsdb", "dump"],
    &["tools", "tsdb", "analyze"],
    &["tools", "bucket", "ls"],
    &["tools", "bucket", "mark"],
    &["tools", "rules", "test"],
];

#[test]
fn help_is_golden() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/help");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatched = Vec::new();
    for cmd in COMMANDS {
        let help = run_ok(strata().args(*cmd).arg("--help").env("COLUMNS", "100"));
        let name = if cmd.is_empty() {
            "strata".to_string()
        } else {
            format!("strata-{}", cmd.join("-"))
        };
        let path = dir.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &help).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != help {
            mismatched.push(format!("{}:\n{help}", path.display()));
        }
    }
    assert!(
        mismatched.is_empty(),
        "help changed (run with UPDATE_GOLDEN=1 if intended):\n{}",
        mismatched.join("\n")
    );
}

#[test]
fn components_refuse_bad_config_clearly() {
    // a required flag missing: clap's usage error names it
    let out = run(strata().arg("compactor"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--objstore.config-file"));
    // a sidecar pointed at a directory that does not exist
    let out = run(strata().args(["sidecar", "--tsdb.path=/nonexistent/prometheus"]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tsdb.path") && err.contains("/nonexistent/prometheus"),
        "{err}"
    );
    // an object store file that does not exist
    let out = run(strata().args(["querier", "--objstore.config-file=/nonexistent.yml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yml"));
}

#[test]
fn bad_flag_is_a_usage_error() {
    let out = run(strata().args(["tools", "tsdb", "dump", "--no-such-flag"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
