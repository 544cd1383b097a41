//! The bounded fuzz run of the test suite: every kept input (corpus and past crashes)
//! of every target, then a few thousand seeded mutations each; no input may panic.
//! Long runs are by hand (`cargo run --release -p strata-fuzz`, see docs/fuzzing.md).

#[test]
fn kept_inputs_and_a_bounded_run_do_not_panic() {
    // PromQL evaluation recurses per tree level: run on a thread with room for it
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let mut failures = Vec::new();
            let _quiet = strata_fuzz::QuietPanics::new();
            for t in strata_fuzz::targets::all() {
                let kept = strata_fuzz::kept_inputs(t.name);
                for (path, input) in &kept {
                    if let Err(m) = strata_fuzz::run_one(&t, input) {
                        failures.push(format!("{}: {}: {m}", t.name, path.display()));
                    }
                }
                let extra: Vec<Vec<u8>> = kept.into_iter().map(|(_, b)| b).collect();
                // PromQL evaluates and a WAL segment goes through the filesystem: fewer
                let iterations = match t.name {
                    "promql" => 5_000,
                    "wal_segment" => 2_000,
                    _ => 20_000,
                };
                let r = strata_fuzz::fuzz(&t, &extra, iterations, 0x5eed, |_| {});
                assert_eq!(r.inputs, iterations);
                for c in r.crashes {
                    failures.push(format!(
                        "{}: {} (input {:?}, save it under fuzz/crashes/{}/)",
                        t.name,
                        c.message,
                        String::from_utf8_lossy(&c.input),
                        t.name
                    ));
                }
            }
            assert!(failures.is_empty(), "panics:\n{}", failures.join("\n"));
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_panicking_decoder_is_caught_and_reported() {
    // the harness itself must not pass on an empty implementation: a target that
    // panics on some inputs is reported with that input
    fn boom(d: &[u8]) -> u64 {
        if d.first() == Some(&b'!') {
            panic!("found the bang");
        }
        d.len() as u64
    }
    fn seeds() -> Vec<Vec<u8>> {
        vec![b"abc".to_vec()]
    }
    let t = strata_fuzz::Target {
        name: "boom",
        run: boom,
        seeds,
        dict: &[b"!"],
        max_len: 16,
    };
    let _quiet = strata_fuzz::QuietPanics::new();
    let r = strata_fuzz::fuzz(&t, &[], 5_000, 1, |_| {});
    assert_eq!(r.crashes.len(), 1, "{r:?}");
    assert_eq!(r.crashes[0].input.first(), Some(&b'!'));
    assert_eq!(r.crashes[0].message, "found the bang");
}
