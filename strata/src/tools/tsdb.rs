//! `strata tools tsdb create-blocks-from openmetrics | dump | analyze`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use strata_tsdb::block::{self, Block};
use strata_tsdb::labels::go_format_g;
use strata_tsdb::matcher::parse_selector;
use strata_tsdb::meta::BlockMeta;

#[derive(Debug, Args)]
pub struct TsdbArgs {
    #[command(subcommand)]
    command: TsdbCommand,
}

#[derive(Debug, Subcommand)]
enum TsdbCommand {
    /// Import samples from input and produce TSDB blocks.
    #[command(name = "create-blocks-from", subcommand)]
    CreateBlocksFrom(CreateFrom),
    /// Dump samples from a TSDB: one line per sample, `{labels} value timestamp_ms`.
    Dump(DumpArgs),
    /// Block statistics: series, samples, chunks, bytes per sample, cardinality.
    Analyze(AnalyzeArgs),
    /// Write synthetic blocks (loadgen's series) directly, for benchmarks.
    Synth(super::synth::SynthArgs),
}

#[derive(Debug, Subcommand)]
enum CreateFrom {
    /// Import samples from an OpenMetrics file (must end with `# EOF`).
    Openmetrics(OpenMetricsArgs),
}

#[derive(Debug, Args)]
struct OpenMetricsArgs {
    /// OpenMetrics file to read samples from.
    input: PathBuf,
    /// Output directory for generated blocks.
    #[arg(default_value = "data/")]
    output: PathBuf,
    /// Print human readable values.
    #[arg(short = 'r', long)]
    human_readable: bool,
    /// Do not print created blocks.
    #[arg(short, long)]
    quiet: bool,
    /// Maximum duration of created blocks (a multiple of 2h).
    #[arg(long, default_value = "2h", value_parser = strata_kit::parse_duration_ms)]
    max_block_duration: i64,
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// Database path: a directory of blocks, or one block directory.
    #[arg(default_value = "data/")]
    db_path: PathBuf,
    /// Minimum timestamp to dump (ms).
    #[arg(long, default_value_t = i64::MIN, allow_hyphen_values = true)]
    min_time: i64,
    /// Maximum timestamp to dump (ms).
    #[arg(long, default_value_t = i64::MAX, allow_hyphen_values = true)]
    max_time: i64,
    /// Series selector.
    #[arg(long = "match", default_value = "{__name__=~'(?s:.*)'}")]
    selector: String,
}

#[derive(Debug, Args)]
struct AnalyzeArgs {
    /// Database path: a directory of blocks, or one block directory.
    #[arg(default_value = "data/")]
    db_path: PathBuf,
    /// Block to analyze (default is the last block).
    block_id: Option<String>,
    /// How many items to show in each list.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

pub fn run(args: &TsdbArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        TsdbCommand::CreateBlocksFrom(CreateFrom::Openmetrics(a)) => create_from_openmetrics(a),
        TsdbCommand::Dump(a) => dump(a),
        TsdbCommand::Analyze(a) => analyze(a),
        TsdbCommand::Synth(a) => super::synth::run(a),
    }
}

fn create_from_openmetrics(a: &OpenMetricsArgs) -> anyhow::Result<ExitCode> {
    let input =
        std::fs::read_to_string(&a.input).with_context(|| format!("read {}", a.input.display()))?;
    // a sample per line that is not a comment: cheap next to parsing, and gives a bar
    let samples = input
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count() as u64;
    let mut bar = super::progress::Progress::new("parse", "samples", samples).quiet(a.quiet);
    let metas = strata_tsdb::backfill::create_blocks_from_openmetrics(
        &input,
        &a.output,
        a.max_block_duration,
        &mut |n| bar.set(n as u64),
    )
    .context("create blocks")?;
    bar.set(samples);
    bar.finish();
    if !a.quiet {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{:<27} {:<14} {:<14} {:<12} {:<12} {:<12} {:<12} SIZE",
            "BLOCK ULID",
            "MIN TIME",
            "MAX TIME",
            "DURATION",
            "NUM SAMPLES",
            "NUM CHUNKS",
            "NUM SERIES"
        )?;
        for m in &metas {
            let size = dir_size(&a.output.join(m.ulid.to_string()));
            let (min, max, size) = if a.human_readable {
                (fmt_ms(m.min_time), fmt_ms(m.max_time), human_bytes(size))
            } else {
                (
                    m.min_time.to_string(),
                    m.max_time.to_string(),
                    size.to_string(),
                )
            };
            writeln!(
                out,
                "{:<27} {:<14} {:<14} {:<12} {:<12} {:<12} {:<12} {}",
                m.ulid.to_string(),
                min,
                max,
                strata_kit::format_go_duration_ms(m.max_time - m.min_time),
                m.stats.num_samples,
                m.stats.num_chunks,
                m.stats.num_series,
                size
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Open `path` as one block (it has a meta.json) or as a directory of blocks.
fn open_db(path: &Path) -> anyhow::Result<Vec<Block>> {
    if !path.exists() {
        bail!("{}: no such directory", path.display());
    }
    if path.join("meta.json").exists() || path.join("index").exists() {
        return Ok(vec![Block::open(path)?]);
    }
    Ok(block::open_blocks(path)?)
}

fn dump(a: &DumpArgs) -> anyhow::Result<ExitCode> {
    let matchers = parse_selector(&a.selector)?;
    let blocks = open_db(&a.db_path)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = String::new();
    for s in block::merged_series_iter(&blocks, &matchers, a.min_time, a.max_time)? {
        let (labels, samples) = s?;
        let prefix = labels.to_string();
        for (t, v) in samples {
            line.clear();
            line.push_str(&prefix);
            line.push(' ');
            line.push_str(&go_format_g(v));
            line.push(' ');
            line.push_str(itoa(t, &mut [0u8; 24]));
            line.push('\n');
            if let Err(e) = out.write_all(line.as_bytes()) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(ExitCode::SUCCESS);
                }
                return Err(e.into());
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn itoa(v: i64, buf: &mut [u8; 24]) -> &str {
    use std::io::Cursor;
    let mut c = Cursor::new(&mut buf[..]);
    write!(c, "{v}").expect("24 bytes hold any i64");
    let n = c.position() as usize;
    std::str::from_utf8(&buf[..n]).expect("ascii")
}

fn analyze(a: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let blocks = open_db(&a.db_path)?;
    if blocks.is_empty() {
        bail!("{}: no blocks found", a.db_path.display());
    }
    let b = match &a.block_id {
        Some(id) => blocks
            .iter()
            .find(|b| b.meta().ulid.to_string() == *id)
            .with_context(|| format!("block {id} not found in {}", a.db_path.display()))?,
        None => blocks.last().expect("non-empty"),
    };
    let stats = strata_tsdb::analyze::analyze(b)?;
    let meta: &BlockMeta = b.meta();
    let mut out = std::io::stdout().lock();
    writeln!(out, "Block ID: {}", meta.ulid)?;
    writeln!(
        out,
        "Duration: {}",
        strata_kit::format_go_duration_ms(meta.max_time - meta.min_time)
    )?;
    writeln!(out, "Series: {}", stats.series)?;
    writeln!(out, "Samples: {}", stats.samples)?;
    writeln!(out, "Chunks: {}", stats.chunks)?;
    writeln!(out, "Index bytes: {}", stats.index_bytes)?;
    writeln!(out, "Chunk bytes: {}", stats.chunk_bytes)?;
    let bps = if stats.samples > 0 {
        stats.chunk_bytes as f64 / stats.samples as f64
    } else {
        0.0
    };
    writeln!(out, "Bytes per sample: {bps:.3} (chunks only)")?;
    writeln!(out, "Label names: {}", stats.label_names)?;
    writeln!(out, "Postings (unique label pairs): {}", stats.label_pairs)?;
    writeln!(
        out,
        "Postings entries (total label pairs): {}",
        stats.postings_entries
    )?;
    let mut section = |title: &str, items: &[(u64, String)]| -> std::io::Result<()> {
        writeln!(out, "\n{title}:")?;
        for (n, name) in items.iter().take(a.limit) {
            writeln!(out, "{n} {name}")?;
        }
        Ok(())
    };
    section("Highest cardinality metric names", &stats.series_by_metric)?;
    section("Highest cardinality labels", &stats.values_by_label)?;
    section(
        "Label names most involved in series",
        &stats.series_by_label,
    )?;
    section("Most common label pairs", &stats.series_by_pair)?;
    section(
        "Label names with highest cumulative label value length",
        &stats.value_bytes_by_label,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += dir_size(&e.path()),
                Ok(_) => n += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    n
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// Milliseconds since the epoch as RFC 3339 UTC, for the block tables.
pub use strata_kit::date::format_rfc3339_ms as fmt_ms;
