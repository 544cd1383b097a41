//! The synchronous part of a compaction: merge opened blocks series by series into a
//! [`BlockWriter`], and downsample one block into another.

use std::collections::{BTreeMap, HashSet};

use strata_tsdb::block::{Block, BlockWriter, SeriesChunks};
use strata_tsdb::chunkenc::{ChunkCutter, EncodedChunk, Encoding};
use strata_tsdb::dedup::merge_pair;
use strata_tsdb::downsample::{downsample_aggr, downsample_raw, AggrChunk};
use strata_tsdb::labels::Labels;
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

type Samples = Vec<(i64, f64)>;

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
                *slot = merge_by_time(vec![std::mem::take(slot), samples]);
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
        let merged = replicas
            .into_values()
            .reduce(|acc, s| merge_pair(&acc, &s, false))
            .unwrap_or_default();
        w.add_series(labels, cut(&merged, chunk_range))
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
    if raw.iter().any(|c| c.encoding != Encoding::Xor) {
        let l = &parts[0].1.labels;
        return Err(MergeError::Halt(format!(
            "series {l}: overlapping {} chunks cannot be merged",
            raw.iter()
                .find(|c| c.encoding != Encoding::Xor)
                .map_or("", |c| c.encoding.as_str())
        )));
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
        .map(|(_, runs)| merge_by_time(runs))
        .reduce(|acc, s| merge_pair(&acc, &s, false))
        .unwrap_or_default();
    Ok(cut(&merged, chunk_range))
}

fn decode(b: &Block, s: &SeriesChunks) -> Result<Samples, MergeError> {
    if let Some(c) = s.chunks.iter().find(|c| {
        b.chunks()
            .chunk(c.chunk_ref)
            .is_ok_and(|(e, _)| e != Encoding::Xor)
    }) {
        return Err(MergeError::Halt(format!(
            "series {}: chunk [{}, {}] is not a float chunk; cannot merge it sample by sample",
            s.labels, c.min_time, c.max_time
        )));
    }
    b.samples(s, i64::MIN, i64::MAX).map_err(corrupt(b))
}

/// Merge sorted runs by timestamp; on equal timestamps the earlier run wins.
fn merge_by_time(runs: Vec<Samples>) -> Samples {
    let mut runs: Vec<Samples> = runs.into_iter().filter(|r| !r.is_empty()).collect();
    if runs.len() <= 1 {
        return runs.pop().unwrap_or_default();
    }
    let mut all: Samples = runs.into_iter().flatten().collect();
    all.sort_by_key(|s| s.0);
    all.dedup_by_key(|s| s.0);
    all
}

fn cut(samples: &[(i64, f64)], chunk_range: i64) -> Vec<EncodedChunk> {
    let mut c = ChunkCutter::new(chunk_range.max(1));
    for &(t, v) in samples {
        c.append(t, v);
    }
    c.finish()
}

/// Downsample every series of `b` (raw or 5m) to `resolution` into `w`.
pub(crate) fn downsample_into(
    b: &Block,
    resolution: i64,
    w: &mut BlockWriter,
) -> Result<(), MergeError> {
    let in_res = crate::plan::resolution(b.meta());
    for s in b.select(&[], i64::MIN, i64::MAX).map_err(corrupt(b))? {
        let s = s.map_err(corrupt(b))?;
        let chunks = if in_res == 0 {
            let samples = b.samples(&s, i64::MIN, i64::MAX).map_err(corrupt(b))?;
            downsample_raw(&samples, resolution)
        } else {
            let mut datas = Vec::with_capacity(s.chunks.len());
            for c in &s.chunks {
                let (enc, data) = b.chunks().chunk(c.chunk_ref).map_err(corrupt(b))?;
                if enc != Encoding::Aggr {
                    return Err(MergeError::Corrupt(
                        b.meta().ulid,
                        format!("series {}: {enc} chunk in a downsampled block", s.labels),
                    ));
                }
                datas.push(data);
            }
            let parsed = datas
                .iter()
                .map(|d| AggrChunk::new(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(corrupt(b))?;
            downsample_aggr(
                &parsed,
                b.meta().min_time,
                b.meta().max_time,
                in_res,
                resolution,
            )
            .map_err(corrupt(b))?
        };
        w.add_series(s.labels, chunks)
            .map_err(|e| MergeError::Write(e.to_string()))?;
    }
    Ok(())
}
