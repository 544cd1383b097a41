//! Backfill: turn an OpenMetrics file into Prometheus blocks, as `promtool tsdb
//! create-blocks-from openmetrics` does. Samples are grouped into windows of the block
//! duration aligned to multiples of it; each window with samples becomes one block.
//!
//! The file is read once. Samples are XOR-encoded as they arrive, so memory grows with
//! the compressed data (about 1–2 bytes a sample), not with the text.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::block::BlockWriter;
use crate::chunkenc::ChunkCutter;
use crate::error::{Error, Result};
use crate::labels::{Interner, Label, Labels, METRIC_NAME};
use crate::meta::BlockMeta;
use crate::openmetrics::{unescape, Parser};

/// promtool's default and minimum block duration: 2 h.
pub const DEFAULT_BLOCK_DURATION_MS: i64 = 2 * 3600 * 1000;

struct SeriesState {
    cutter: ChunkCutter,
    last: Option<(i64, f64)>,
}

/// Progress callback: called with the number of lines parsed so far, now and then.
pub type Progress<'a> = &'a mut dyn FnMut(usize);

/// Parse `input` and write one block per window into `out_dir`. Returns the metas of the
/// blocks written, in time order.
pub fn create_blocks_from_openmetrics(
    input: &str,
    out_dir: &Path,
    block_duration_ms: i64,
    progress: Progress<'_>,
) -> Result<Vec<BlockMeta>> {
    if block_duration_ms <= 0 || block_duration_ms % DEFAULT_BLOCK_DURATION_MS != 0 {
        return Err(Error::Invalid(format!(
            "block duration must be a positive multiple of 2h, got {block_duration_ms}ms"
        )));
    }
    let mut interner = Interner::new();
    let mut series_ids: HashMap<Labels, u32> = HashMap::new();
    let mut series: Vec<Labels> = Vec::new();
    // window start → series id → state
    let mut windows: BTreeMap<i64, HashMap<u32, SeriesState>> = BTreeMap::new();
    // Chunks may span the head's range, which promtool sets to twice the block duration.
    let chunk_range = 2 * block_duration_ms;

    let mut parser = Parser::new(input);
    let mut scratch: Vec<Label> = Vec::new();
    let mut n = 0usize;
    while let Some(s) = parser.next_sample()? {
        n += 1;
        if n.is_multiple_of(100_000) {
            progress(n);
        }
        let Some(ts) = s.timestamp_ms else {
            return Err(Error::Invalid(format!(
                "openmetrics line {}: expected timestamp for series {}, got none",
                s.line, s.name
            )));
        };
        scratch.clear();
        scratch.push(Label {
            name: interner.intern(METRIC_NAME),
            value: interner.intern(s.name),
        });
        for (k, v) in &s.labels {
            scratch.push(Label {
                name: interner.intern(k),
                value: interner.intern(&unescape(v)),
            });
        }
        let labels = Labels::from_vec(scratch.clone());
        let id = match series_ids.get(&labels) {
            Some(id) => *id,
            None => {
                let id = series.len() as u32;
                series_ids.insert(labels.clone(), id);
                series.push(labels);
                id
            }
        };
        let window = ts.div_euclid(block_duration_ms) * block_duration_ms;
        let state = windows
            .entry(window)
            .or_default()
            .entry(id)
            .or_insert_with(|| SeriesState {
                cutter: ChunkCutter::new(chunk_range),
                last: None,
            });
        if let Some((lt, lv)) = state.last {
            if ts == lt {
                if lv.to_bits() == s.value.to_bits() {
                    continue;
                }
                return Err(Error::Invalid(format!(
                    "openmetrics line {}: duplicate sample for timestamp {ts} with a different value in series {}",
                    s.line, series[id as usize]
                )));
            }
            if ts < lt {
                return Err(Error::Invalid(format!(
                    "openmetrics line {}: out of order sample at {ts} (last {lt}) in series {}",
                    s.line, series[id as usize]
                )));
            }
        }
        state.cutter.append(ts, s.value);
        state.last = Some((ts, s.value));
    }
    progress(n);

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut metas = Vec::with_capacity(windows.len());
    for (_, states) in windows {
        let mut ids: Vec<(u32, SeriesState)> = states.into_iter().collect();
        ids.sort_by(|a, b| series[a.0 as usize].cmp(&series[b.0 as usize]));
        let mut w = BlockWriter::new(out_dir, ulid::Ulid::new())?;
        for (id, st) in ids {
            w.add_series(series[id as usize].clone(), st.cutter.finish())?;
        }
        metas.push(w.finish(None)?);
    }
    Ok(metas)
}
