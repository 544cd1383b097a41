//! `strata tools tsdb synth`: write synthetic Prometheus blocks directly (no text
//! parsing), for benchmarks that need days of data over many series. The series are the
//! same as `tools loadgen`'s: counters, gauges and classic histograms.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_tsdb::chunkenc::ChunkCutter;
use strata_tsdb::labels::Labels;

use super::loadgen::{labels_for, metric_kind, slots};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory for the blocks.
    output: PathBuf,
    /// Series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Distinct metric names.
    #[arg(long, default_value_t = 100)]
    metrics: usize,
    /// Time span ending at `--end`.
    #[arg(long, default_value = "7d", value_parser = strata_kit::parse_duration_ms)]
    duration: i64,
    /// Sample interval.
    #[arg(long, default_value = "60s", value_parser = strata_kit::parse_duration_ms)]
    interval: i64,
    /// End of the data, ms since the epoch (default: a fixed 2023 date, so runs repeat).
    #[arg(long, default_value_t = 1_700_006_400_000)]
    end: i64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const BLOCK: i64 = 2 * 3600 * 1000;

pub fn run(a: &SynthArgs) -> anyhow::Result<ExitCode> {
    if a.interval <= 0 || a.duration <= 0 || a.series == 0 {
        bail!("--series, --duration and --interval must be positive");
    }
    let slots = slots(a.series, a.metrics.max(1));
    let labels: Vec<Labels> = slots
        .iter()
        .map(|s| Labels::from_pairs(labels_for(s, 0).into_iter().map(|l| (l.name, l.value))))
        .collect();
    // sorted once; every block adds series in this order
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|x, y| labels[*x].cmp(&labels[*y]));
    let start = (a.end - a.duration).div_euclid(BLOCK) * BLOCK;
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let mut values = vec![0f64; slots.len()];
    std::fs::create_dir_all(&a.output)?;
    let mut total = 0u64;
    let mut w0 = start;
    let expected = ((a.end - start) / a.interval).max(1) as u64 * slots.len() as u64;
    let mut bar = super::progress::Progress::new("synth", "samples", expected);
    while w0 < a.end {
        let w1 = (w0 + BLOCK).min(a.end);
        let mut writer = strata_tsdb::block::BlockWriter::new(&a.output, ulid::Ulid::new())?;
        for &i in &order {
            let s = &slots[i];
            let mut cutter = ChunkCutter::new(BLOCK);
            // first sample on the interval grid at or after w0
            let mut t = w0 + (a.interval - w0.rem_euclid(a.interval)) % a.interval;
            while t < w1 {
                let v = match metric_kind(s.metric) {
                    1 => rng.random_range(0.0..100.0),
                    _ => {
                        values[i] += rng.random_range(0..10) as f64 * (s.part as f64 + 1.0);
                        values[i]
                    }
                };
                cutter.append(t, v);
                total += 1;
                t += a.interval;
            }
            writer.add_series(labels[i].clone(), cutter.finish())?;
        }
        let m = writer.finish(None)?;
        tracing::debug!(block = %m.ulid, min = m.min_time, max = m.max_time, samples = m.stats.num_samples, "synth: block written");
        bar.set(total);
        w0 = w1;
    }
    bar.finish();
    println!(
        "{total} samples in {} series written to {}",
        slots.len(),
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
