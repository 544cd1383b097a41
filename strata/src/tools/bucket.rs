//! `strata tools bucket ls`: the blocks in a bucket, per tenant; `strata tools bucket
//! mark`: put or remove a deletion or no-compact mark by hand (Thanos's `tools bucket
//! mark`), e.g. on the block that halted a compactor stream.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use strata_objstore::Bucket;
use strata_tsdb::meta::BlockMeta;

use super::tsdb::fmt_ms;

#[derive(Debug, Args)]
pub struct BucketArgs {
    /// Path to a YAML file with the object store configuration (Thanos's format).
    #[arg(long = "objstore.config-file", global = true)]
    config_file: Option<PathBuf>,
    /// Object store configuration as YAML text (instead of a file).
    #[arg(
        long = "objstore.config",
        global = true,
        conflicts_with = "config_file"
    )]
    config: Option<String>,
    #[command(subcommand)]
    command: BucketCommand,
}

#[derive(Debug, Subcommand)]
enum BucketCommand {
    /// List the blocks in the bucket: tenant, time range, level, resolution, labels.
    Ls(LsArgs),
    /// Mark blocks for deletion or against compaction (or remove such a mark).
    Mark(MarkArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Marker {
    /// Deleted by the compactor after `--delete-delay`; readers skip it at once.
    #[value(name = "deletion-mark.json")]
    Deletion,
    /// Left out of compaction and downsampling; still read by queriers.
    #[value(name = "no-compact-mark.json")]
    NoCompact,
}

#[derive(Debug, Args)]
struct MarkArgs {
    /// ULID of a block to mark (repeatable).
    #[arg(long = "id", required = true)]
    ids: Vec<ulid::Ulid>,
    /// The mark to put (or remove).
    #[arg(long, value_enum)]
    marker: Marker,
    /// Why, stored in the mark (required unless --remove).
    #[arg(long, required_unless_present = "remove")]
    details: Option<String>,
    /// Remove the mark instead.
    #[arg(long)]
    remove: bool,
    /// The blocks' tenant; `-` for a bucket without tenants (Thanos's layout).
    #[arg(long, default_value = "anonymous")]
    tenant: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Wide,
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Only this tenant's blocks.
    #[arg(long)]
    tenant: Option<String>,
    /// Also list blocks marked for deletion.
    #[arg(long)]
    include_marked: bool,
}

pub fn run(args: &BucketArgs) -> anyhow::Result<ExitCode> {
    let bucket = match (&args.config_file, &args.config) {
        (Some(f), _) => Bucket::from_config_file(f)?,
        (None, Some(y)) => Bucket::from_yaml(y)?,
        (None, None) => {
            anyhow::bail!("one of --objstore.config-file or --objstore.config is required")
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match &args.command {
        BucketCommand::Ls(a) => rt.block_on(ls(&bucket, a)),
        BucketCommand::Mark(a) => rt.block_on(mark(&bucket, a)),
    }
}

async fn mark(bucket: &Bucket, a: &MarkArgs) -> anyhow::Result<ExitCode> {
    use strata_objstore::{DELETION_MARK, NO_COMPACT_MARK};
    let tenant = if a.tenant == "-" {
        ""
    } else {
        a.tenant.as_str()
    };
    let prefix = |id: &ulid::Ulid| {
        if tenant.is_empty() {
            id.to_string()
        } else {
            format!("{tenant}/{id}")
        }
    };
    let file = match a.marker {
        Marker::Deletion => DELETION_MARK,
        Marker::NoCompact => NO_COMPACT_MARK,
    };
    // Every block first: a typo in one ULID marks none.
    for id in &a.ids {
        if !bucket.exists(&format!("{}/meta.json", prefix(id))).await? {
            anyhow::bail!(
                "block {id} not found in tenant {:?} (no meta.json)",
                a.tenant
            );
        }
    }
    for id in &a.ids {
        let path = format!("{}/{file}", prefix(id));
        if a.remove {
            if bucket.exists(&path).await? {
                bucket.delete(&path).await?;
                eprintln!("removed {file} from block {id}");
            } else {
                eprintln!("block {id} has no {file}");
            }
            continue;
        }
        let details = a.details.as_deref().unwrap_or("");
        match a.marker {
            Marker::Deletion => {
                strata_compactor::marks::mark_for_deletion(bucket, tenant, *id, details).await?
            }
            Marker::NoCompact => {
                strata_compactor::marks::mark_no_compact(bucket, tenant, *id, "manual", details)
                    .await?
            }
        }
        eprintln!("marked block {id} with {file}");
    }
    Ok(ExitCode::SUCCESS)
}

struct Row {
    tenant: String,
    meta: BlockMeta,
    marked: bool,
}

async fn ls(bucket: &Bucket, a: &LsArgs) -> anyhow::Result<ExitCode> {
    // Blocks live at `<tenant>/<ULID>/`; a Thanos bucket without tenants has them at the
    // root, shown with tenant "-".
    let tenants: Vec<String> = match &a.tenant {
        Some(t) => vec![t.clone()],
        None => {
            let mut t: Vec<String> = bucket
                .list_dirs("")
                .await?
                .into_iter()
                .filter(|d| d.parse::<ulid::Ulid>().is_err())
                .collect();
            t.insert(0, String::new());
            t
        }
    };
    let mut rows = Vec::new();
    // blocks of the tenants listed before this one, for one bar over the whole bucket
    let mut before = 0;
    let mut bar = super::progress::Progress::new("bucket ls", "blocks read", 0);
    for tenant in tenants {
        let blocks = bucket
            .list_blocks_with(&tenant, &mut |done, total| {
                bar.set_total((before + total) as u64);
                bar.set((before + done) as u64);
            })
            .await?;
        before += blocks.len();
        for b in blocks {
            if b.deletion_marked && !a.include_marked {
                continue;
            }
            let path = PathBuf::from(format!("{tenant}/{}/meta.json", b.ulid));
            let meta = BlockMeta::from_json(&b.meta_json, &path)
                .with_context(|| format!("block {} of tenant {tenant:?}", b.ulid))?;
            rows.push(Row {
                tenant: if tenant.is_empty() {
                    "-".into()
                } else {
                    tenant.clone()
                },
                meta,
                marked: b.deletion_marked,
            });
        }
    }
    bar.finish();
    rows.sort_by(|x, y| {
        (&x.tenant, x.meta.min_time, x.meta.ulid).cmp(&(&y.tenant, y.meta.min_time, y.meta.ulid))
    });
    match a.output {
        Output::Json => {
            for r in &rows {
                let mut v = serde_json::to_value(&r.meta)?;
                v["tenant"] = serde_json::Value::String(r.tenant.clone());
                if r.marked {
                    v["markedForDeletion"] = serde_json::Value::Bool(true);
                }
                println!("{v}");
            }
        }
        Output::Table | Output::Wide => {
            let wide = a.output == Output::Wide;
            println!(
                "{:<12} {:<26} {:<24} {:<24} {:<12} {:<5} {:<10} {:<10} {:<12} {}",
                "TENANT",
                "ULID",
                "FROM",
                "UNTIL",
                "RANGE",
                "LEVEL",
                "RESOLUTION",
                "SERIES",
                "SAMPLES",
                if wide {
                    "LABELS / SOURCE / SOURCES"
                } else {
                    "LABELS"
                }
            );
            for r in &rows {
                let m = &r.meta;
                let th = m.thanos.clone().unwrap_or_default();
                let labels: Vec<String> =
                    th.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let res = match th.downsample.resolution {
                    0 => "raw".to_string(),
                    r => strata_kit::format_go_duration_ms(r),
                };
                let mut last = labels.join(",");
                if wide {
                    let sources: Vec<String> =
                        m.compaction.sources.iter().map(|u| u.to_string()).collect();
                    last = format!("{last} / {} / {}", th.source, sources.join(","));
                }
                if r.marked {
                    last.push_str(" (marked for deletion)");
                }
                println!(
                    "{:<12} {:<26} {:<24} {:<24} {:<12} {:<5} {:<10} {:<10} {:<12} {}",
                    r.tenant,
                    m.ulid.to_string(),
                    fmt_ms(m.min_time),
                    fmt_ms(m.max_time),
                    strata_kit::format_go_duration_ms(m.max_time - m.min_time),
                    m.compaction.level,
                    res,
                    m.stats.num_series,
                    m.stats.num_samples,
                    last
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
