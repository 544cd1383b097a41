//! `strata-fuzz`: long fuzzing runs by hand.
//!
//! ```text
//! cargo run --release -p strata-fuzz -- [TARGET|all] [--iterations N] [--seed S]
//! ```
//!
//! Targets run one after another, each on a thread with the stack PromQL evaluation
//! needs. Panics are written to `fuzz/crashes/<target>/<hash>` (then kept as
//! regression inputs by `cargo test -p strata-fuzz`), and the run exits 1.

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut which = "all".to_string();
    let mut iterations: u64 = 1_000_000;
    let mut seed = strata_fuzz::clock_seed();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iterations" => {
                iterations = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(iterations)
            }
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(seed),
            "-h" | "--help" => {
                println!("usage: strata-fuzz [TARGET|all] [--iterations N] [--seed S]");
                for t in strata_fuzz::targets::all() {
                    println!("  {}", t.name);
                }
                return ExitCode::SUCCESS;
            }
            t => which = t.to_string(),
        }
    }
    let targets: Vec<_> = strata_fuzz::targets::all()
        .into_iter()
        .filter(|t| which == "all" || t.name == which)
        .collect();
    if targets.is_empty() {
        eprintln!("unknown target {which:?} (--help lists them)");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for t in targets {
        let name = t.name;
        let began = Instant::now();
        let report = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let kept: Vec<Vec<u8>> = strata_fuzz::kept_inputs(t.name)
                    .into_iter()
                    .map(|(_, b)| b)
                    .collect();
                let _quiet = strata_fuzz::QuietPanics::new();
                let began = Instant::now();
                strata_fuzz::fuzz(&t, &kept, iterations, seed, |r| {
                    eprintln!(
                        "{}: {} inputs ({:.0}/s), corpus {}, signals {}, crashes {}",
                        t.name,
                        r.inputs,
                        r.inputs as f64 / began.elapsed().as_secs_f64(),
                        r.corpus,
                        r.signals,
                        r.crashes.len()
                    )
                })
            })
            .expect("spawn fuzz thread")
            .join()
            .expect("fuzz thread");
        let secs = began.elapsed().as_secs_f64();
        println!(
            "{name}: {} inputs in {secs:.1}s ({:.0}/s), seed {seed}, corpus {}, signals {}, crashes {}",
            report.inputs,
            report.inputs as f64 / secs,
            report.corpus,
            report.signals,
            report.crashes.len()
        );
        for c in &report.crashes {
            failed = true;
            let dir = strata_fuzz::dir("crashes", name);
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(strata_fuzz::input_name(&c.input));
            let _ = std::fs::write(&path, &c.input);
            println!("  crash: {} ({})", c.message, path.display());
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
