//! `strata tools …`: offline work on blocks and buckets, shaped like promtool's and
//! Thanos's tools so users know them.

mod bucket;
mod loadgen;
mod progress;
mod synth;
mod tsdb;

use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ToolsArgs {
    #[command(subcommand)]
    command: ToolsCommand,
}

#[derive(Debug, Subcommand)]
enum ToolsCommand {
    /// Work on local TSDB blocks (as `promtool tsdb`).
    Tsdb(tsdb::TsdbArgs),
    /// Inspect a bucket (as `thanos tools bucket`).
    Bucket(bucket::BucketArgs),
    /// Rule unit tests (as `promtool test rules`).
    Rules(crate::ruler::RulesArgs),
    /// Send a deterministic remote-write load (avalanche-like) and report throughput.
    Loadgen(loadgen::LoadgenArgs),
}

pub fn run(args: &ToolsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ToolsCommand::Tsdb(a) => tsdb::run(a),
        ToolsCommand::Bucket(a) => bucket::run(a),
        ToolsCommand::Loadgen(a) => loadgen::run(a),
        ToolsCommand::Rules(a) => crate::ruler::run_rules_tool(a),
    }
}
