//! Streamed (chunks decoded per series as the engine consumes them) and eager
//! (decoded samples from storage) evaluation give the same outcome on every case of
//! Prometheus's upstream test files and Strata's own: the same passes (each checked
//! against the file's expected values) and the same failures, message for message.

use std::path::PathBuf;

use strata_promql::promqltest::{run_script_on, test_files, upstream_test_dir, Outcome};
use strata_promql::testing::MemStorage;

#[test]
fn streamed_and_eager_evaluation_agree_on_every_test_file() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut all = test_files(&manifest.join("tests/testdata"));
    all.extend(
        upstream_test_dir(&manifest)
            .map(|d| test_files(&d))
            .unwrap_or_default(),
    );
    let mut compared = 0;
    for path in all {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let none = Default::default();
        let streamed = run_script_on(MemStorage::new(), &name, &text, &none);
        let eager = run_script_on(MemStorage::decoded(), &name, &text, &none);
        assert_eq!(streamed.cases.len(), eager.cases.len(), "{name}");
        for (s, e) in streamed.cases.iter().zip(&eager.cases) {
            assert_eq!(
                (s.line, &s.outcome),
                (e.line, &e.outcome),
                "{name}:{} {}",
                s.line,
                s.query
            );
            compared += usize::from(matches!(s.outcome, Outcome::Pass));
        }
    }
    assert!(compared > 500, "only {compared} passing cases compared");
}
