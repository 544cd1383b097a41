//! The synchronous part of a compaction: merge opened blocks series by series into a
//! [`BlockWriter`], and downsample one block into another.
//!
//! Chunks of any encoding (XOR floats, native histograms, float histograms) are merged:
//! chunks that do not overlap are copied as they are; overlapping ones (vertical
//! compaction, HA replicas) are decoded, merged by time or by the penalty algorithm and
//! re-cut with the head's rules (`dedup::cut_samples`), so histogram chunks get the
//! counter-reset headers and sizes Prometheus's head would give them. Downsampling
//! aggregates float series; histogram chunks are kept raw (see docs/compactor.md).

use std::collections::{BTreeMap, HashSet};

use strata_tsdb::block::{Block, BlockWriter, SeriesChunks};
use strata_tsdb::chunkenc::{ChunkCutter, EncodedChunk, Encoding};
use strata_tsdb::dedup::{self, merge_pair, merge_pair_samples, Sample};
use strata_tsdb::downsample::{downsample_aggr, downsample_raw, AggrChunk};
use strata_tsdb::labels::Labels;
use strata_tsdb::tombstones::is_deleted;
use ulid::Ulid;

/// Why a merge failed.
#[derive(Debug)]
pub(crate) enum MergeError {
    /// Reading this input block failed: its index or chunks are damaged.
    Corrupt(Ulid, String),
    /// The inputs cannot be merged (the stream halts).
    Halt(String),
    /// Writing the output failed (local disk): retry later.
    Write(String),
}

type Samples = Vec<(i64, Sample)>;

/// An input of a merge: an open block and the replica it comes from (the values of the
/// replica labels among its external labels; empty without dedup).
pub(crate) struct Input<'a> {
    pub block: &'a Block,
    pub replica: String,
}

fn corrupt(b: &Block) -> impl Fn(strata_tsdb::Error) -> MergeError + '_ {
    move |e| MergeError::Corrupt(b.meta().ulid, e.to_string())
}

/// Merge `inputs` (sorted by min time: on equal timestamps the earlier input wins) into
/// `w`. Series from different replicas that are equal once `replica_labels` are removed
/// are merged with the querier's penalty algorithm. `chunk_range` drives re-cutting.
pub(crate) fn merge_into(
    inputs: &[Input<'_>],
    replica_labels: &[String],
    chunk_range: i64,
    w: &mut BlockWriter,
) -> Result<(), MergeError> {
    let strip: Vec<&str> = replica_labels.iter().map(String::as_str).collect();
    let mut iters = Vec::with_capacity(inputs.len());
    for i in inputs {
        iters.push(
            i.block
                .select(&[], i64::MIN, i64::MAX)
                .map_err(corrupt(i.block))?,
        );
    }
    let mut heads: Vec<Option<SeriesChunks>> = inputs.iter().map(|_| None).collect();
    // Series carrying a replica label themselves (e.g. remote-written HA pairs): merged
    // at the end, keyed by their labels without it.
    let mut stash: BTreeMap<Labels, BTreeMap<String, Samples>> = BTreeMap::new();
    let mut streamed: HashSet<Labels> = HashSet::new();
    loop {
        for (i, it) in iters.iter_mut().enumerate() {
            if heads[i].is_none() {
                if let Some(s) = it.next() {
                    heads[i] = Some(s.map_err(corrupt(inputs[i].block))?);
                }
            }
        }
        let Some(min) = heads.iter().flatten().map(|s| &s.labels).min().cloned() else {
            break;
        };
        let mut parts: Vec<(usize, SeriesChunks)> = Vec::new();
        for (i, h) in heads.iter_mut().enumerate() {
            if h.as_ref().is_some_and(|s| s.labels == min) {
                parts.push((i, h.take().expect("checked")));
            }
        }
        if !strip.is_empty() && strip.iter().any(|n| min.get(n).is_some()) {
            let key = min.without(&strip);
            let series_replica: Vec<&str> =
                strip.iter().map(|n| min.get(n).unwrap_or("")).collect();
            for (i, s) in &parts {
                let inp = &inputs[*i];
                let samples = decode(inp.block, s)?;
                let rep = format!("{}|{}", inp.replica, series_replica.join(","));
                let slot = stash
                    .entry(key.clone())
                    .or_default()
                    .entry(rep)
                    .or_default();
                *slot = dedup::merge_by_time(vec![std::mem::take(slot), samples]);
            }
            continue;
        }
        if !strip.is_empty() {
            streamed.insert(min.clone());
        }
        let chunks = merge_series(inputs, &parts, chunk_range)?;
        w.add_series(min, chunks)
            .map_err(|e| MergeError::Write(e.to_string()))?;
    }
    for (labels, replicas) in stash {
        if streamed.contains(&labels) {
            return Err(MergeError::Halt(format!(
                "series {labels} exists both with and without a replica label; cannot deduplicate"
            )));
        }
        let chunks = merge_replicas(replicas.into_values().collect(), chunk_range);
        w.add_series(labels, chunks)
            .map_err(|e| MergeError::Write(e.to_string()))?;
    }
    Ok(())
}

/// One series' chunks from several inputs: copied as they are when they do not overlap,
/// else decoded, merged (by timestamp, or by the penalty algorithm across replicas) and
/// cut again.
fn merge_series(
    inputs: &[Input<'_>],
    parts: &[(usize, SeriesChunks)],
    chunk_range: i64,
) -> Result<Vec<EncodedChunk>, MergeError> {
    let mut raw: Vec<EncodedChunk> = Vec::new();
    let mut tombstoned = false;
    let mut replicas: Vec<&str> = Vec::new();
    for (i, s) in parts {
        let b = inputs[*i].block;
        if !replicas.contains(&inputs[*i].replica.as_str()) {
            replicas.push(&inputs[*i].replica);
        }
        if !b.tombstones().get(s.series_ref).is_empty() {
            tombstoned = true;
        }
        for c in &s.chunks {
            let (enc, data) = b.chunks().chunk(c.chunk_ref).map_err(corrupt(b))?;
            raw.push(EncodedChunk {
                min_time: c.min_time,
                max_time: c.max_time,
                encoding: enc,
                data: data.to_vec(),
            });
        }
    }
    raw.sort_by_key(|c| c.min_time);
    let overlap = raw.windows(2).any(|w| w[1].min_time <= w[0].max_time);
    if !overlap && !tombstoned && replicas.len() < 2 {
        return Ok(raw);
    }
    // Per replica, merge by time; then replicas by penalty.
    let mut per_replica: Vec<(&str, Vec<Samples>)> = Vec::new();
    for (i, s) in parts {
        let rep = inputs[*i].replica.as_str();
        let samples = decode(inputs[*i].block, s)?;
        match per_replica.iter_mut().find(|(r, _)| *r == rep) {
            Some((_, v)) => v.push(samples),
            None => per_replica.push((rep, vec![samples])),
        }
    }
    let merged = per_replica
        .into_iter()
        .map(|(_, runs)| dedup::merge_by_time(runs))
        .collect();
    Ok(merge_replicas(merged, chunk_range))
}

/// Merge replicas of one series (each sorted by time, unique timestamps) with the
/// penalty algorithm and cut the result into chunks. Float-only series keep the float
/// path (XOR chunks cut as before); a series with any histogram sample is re-cut with
/// the head's rules, whose chunk kinds follow the samples.
fn merge_replicas(replicas: Vec<Samples>, chunk_range: i64) -> Vec<EncodedChunk> {
    let floats_only = replicas
        .iter()
        .all(|r| r.iter().all(|(_, s)| matches!(s, Sample::Float(_))));
    if floats_only {
        let merged = replicas
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|(t, s)| match s {
                        Sample::Float(v) => (t, v),
                        _ => unreachable!("checked: floats only"),
                    })
                    .collect::<Vec<_>>()
            })
            .reduce(|acc, s| merge_pair(&acc, &s, false))
            .unwrap_or_default();
        return cut(&merged, chunk_range);
    }
    let merged = replicas
        .into_iter()
        .reduce(|acc, s| merge_pair_samples(&acc, &s))
        .unwrap_or_default();
    dedup::cut_samples(&merged, chunk_range.max(1))
}

/// Every sample of a series in one block, whatever its chunks' encodings, tombstones
/// applied.
fn decode(b: &Block, s: &SeriesChunks) -> Result<Samples, MergeError> {
    let mut raw = Vec::with_capacity(s.chunks.len());
    for c in &s.chunks {
        let (encoding, data) = b.chunks().chunk(c.chunk_ref).map_err(corrupt(b))?;
        raw.push(EncodedChunk {
            min_time: c.min_time,
            max_time: c.max_time,
            encoding,
            data: data.to_vec(),
        });
    }
    let mut out = dedup::decode_samples(&raw).map_err(|e| {
        MergeError::Corrupt(
            b.meta().ulid,
            format!("series {}: chunk data: {e}", s.labels),
        )
    })?;
    let dels = b.tombstones().get(s.series_ref);
    if !dels.is_empty() {
        out.retain(|(t, _)| !is_deleted(dels, *t));
    }
    Ok(out)
}

fn cut(samples: &[(i64, f64)], chunk_range: i64) -> Vec<EncodedChunk> {
    let mut c = ChunkCutter::new(chunk_range.max(1));
    for &(t, v) in samples {
        c.append(t, v);
    }
    c.finish()
}

/// A chunk of a run of one kind (float or histogram) in a series being downsampled.
type RunChunk<'a> = (strata_tsdb::index::ChunkMeta, Encoding, &'a [u8]);

/// Downsample every series of `b` (raw or 5m) to `resolution` into `w`.
///
/// A series' chunks are taken in runs of one kind, as Thanos cuts them: runs of float
/// chunks become aggregate chunks; runs of native histogram chunks are kept raw (the
/// query path reads them in a downsampled block as in a raw one), re-cut only where
/// tombstones delete some of their samples.
pub(crate) fn downsample_into(
    b: &Block,
    resolution: i64,
    w: &mut BlockWriter,
) -> Result<(), MergeError> {
    let in_res = crate::plan::resolution(b.meta());
    let dels_of = |s: &SeriesChunks| b.tombstones().get(s.series_ref);
    for s in b.select(&[], i64::MIN, i64::MAX).map_err(corrupt(b))? {
        let s = s.map_err(corrupt(b))?;
        let mut runs: Vec<(bool, Vec<RunChunk<'_>>)> = Vec::new();
        for c in &s.chunks {
            let (enc, data) = b.chunks().chunk(c.chunk_ref).map_err(corrupt(b))?;
            let hist = matches!(enc, Encoding::Histogram | Encoding::FloatHistogram);
            match runs.last_mut() {
                Some((h, run)) if *h == hist => run.push((*c, enc, data)),
                _ => runs.push((hist, vec![(*c, enc, data)])),
            }
        }
        let several = runs.len() > 1;
        let mut chunks = Vec::new();
        for (hist, run) in runs {
            if hist {
                let raw: Vec<EncodedChunk> = run
                    .iter()
                    .map(|(c, enc, data)| EncodedChunk {
                        min_time: c.min_time,
                        max_time: c.max_time,
                        encoding: *enc,
                        data: data.to_vec(),
                    })
                    .collect();
                let dels = dels_of(&s);
                if dels.is_empty() {
                    chunks.extend(raw);
                    continue;
                }
                let mut samples = dedup::decode_samples(&raw).map_err(|e| {
                    MergeError::Corrupt(
                        b.meta().ulid,
                        format!("series {}: chunk data: {e}", s.labels),
                    )
                })?;
                samples.retain(|(t, _)| !is_deleted(dels, *t));
                // Raw chunks never span more than the head's 2h range; keep that bound.
                chunks.extend(dedup::cut_samples(&samples, 2 * 60 * 60 * 1000));
                continue;
            }
            let (mint, maxt) = if several {
                (
                    run.first().map_or(0, |c| c.0.min_time),
                    run.last().map_or(0, |c| c.0.max_time),
                )
            } else {
                (b.meta().min_time, b.meta().max_time)
            };
            if in_res == 0 {
                let part = SeriesChunks {
                    labels: s.labels.clone(),
                    series_ref: s.series_ref,
                    chunks: run.iter().map(|c| c.0).collect(),
                };
                let samples = b.samples(&part, i64::MIN, i64::MAX).map_err(corrupt(b))?;
                chunks.extend(downsample_raw(&samples, resolution));
                continue;
            }
            let mut parsed = Vec::with_capacity(run.len());
            for (_, enc, data) in &run {
                if *enc != Encoding::Aggr {
                    return Err(MergeError::Corrupt(
                        b.meta().ulid,
                        format!("series {}: {enc} chunk in a downsampled block", s.labels),
                    ));
                }
                parsed.push(AggrChunk::new(data).map_err(corrupt(b))?);
            }
            chunks.extend(
                downsample_aggr(&parsed, mint, maxt, in_res, resolution).map_err(corrupt(b))?,
            );
        }
        w.add_series(s.labels, chunks)
            .map_err(|e| MergeError::Write(e.to_string()))?;
    }
    Ok(())
}
