//! Planning: which blocks form a stream (group), which blocks of a group to compact next
//! (Thanos's `tsdbBasedPlanner`), and which blocks another block already covers.

use std::collections::{BTreeMap, HashSet};

use strata_tsdb::meta::BlockMeta;
use ulid::Ulid;

/// Thanos's default `--compaction.block-ranges`: 2h, 8h, 2d, 14d.
pub const DEFAULT_RANGES: [i64; 4] = [
    2 * 3_600_000,
    8 * 3_600_000,
    48 * 3_600_000,
    14 * 24 * 3_600_000,
];

/// A block's resolution (`thanos.downsample.resolution`; 0 = raw).
pub fn resolution(m: &BlockMeta) -> i64 {
    m.resolution()
}

/// A block's external labels without the replica (dedup) labels.
pub fn stream_labels(m: &BlockMeta, replica_labels: &[String]) -> BTreeMap<String, String> {
    m.thanos
        .as_ref()
        .map(|t| {
            t.labels
                .iter()
                .filter(|(k, _)| !replica_labels.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The stream key of a block: tenant, resolution and external labels minus replica
/// labels, e.g. `tenant-a@0@{cluster="eu"}`.
pub fn group_key(tenant: &str, m: &BlockMeta, replica_labels: &[String]) -> String {
    let labels: Vec<String> = stream_labels(m, replica_labels)
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{tenant}@{}@{{{}}}", resolution(m), labels.join(","))
}

/// Blocks (of `metas`, none deletion-marked) that no reader needs, so they can be
/// marked for deletion: exactly those [`strata_tsdb::meta::superseded`] names, the rule
/// by which the querier skips them. In ULID order.
pub fn covered(metas: &[BlockMeta]) -> Vec<Ulid> {
    let mut v: Vec<Ulid> = strata_tsdb::meta::superseded(metas).into_iter().collect();
    v.sort();
    v
}

/// The next blocks of one group to compact, or nothing (Thanos's planner): first any
/// overlapping blocks (vertical compaction), else the first level range (after the
/// smallest) with two or more blocks that fill it or lie before the newest block.
/// The newest block is never picked unless it overlaps, leaving room for late uploads.
/// `metas` must be sorted by min time; blocks in `no_compact` are never picked.
pub fn plan(ranges: &[i64], metas: &[BlockMeta], no_compact: &HashSet<Ulid>) -> Vec<BlockMeta> {
    let usable: Vec<BlockMeta> = metas
        .iter()
        .filter(|m| !no_compact.contains(&m.ulid))
        .cloned()
        .collect();
    let overlapping = select_overlapping(&usable);
    if !overlapping.is_empty() {
        return overlapping;
    }
    if metas.is_empty() {
        return Vec::new();
    }
    let without_newest = &metas[..metas.len() - 1];
    select_metas(ranges, no_compact, without_newest)
}

fn select_overlapping(metas: &[BlockMeta]) -> Vec<BlockMeta> {
    if metas.len() < 2 {
        return Vec::new();
    }
    let mut out: Vec<BlockMeta> = Vec::new();
    let mut global_max = metas[0].max_time;
    for (i, m) in metas[1..].iter().enumerate() {
        if m.min_time < global_max {
            if out.is_empty() {
                out.push(metas[i].clone());
            }
            out.push(m.clone());
        } else if !out.is_empty() {
            break;
        }
        global_max = global_max.max(m.max_time);
    }
    out
}

fn split_by_range(metas: &[BlockMeta], tr: i64) -> Vec<&[BlockMeta]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < metas.len() {
        let m = &metas[i];
        let t0 = tr * m.min_time.div_euclid(tr);
        if m.max_time > t0 + tr {
            i += 1;
            continue;
        }
        let start = i;
        while i < metas.len() && metas[i].max_time <= t0 + tr {
            i += 1;
        }
        if i > start {
            out.push(&metas[start..i]);
        }
    }
    out
}

fn select_metas(ranges: &[i64], no_compact: &HashSet<Ulid>, metas: &[BlockMeta]) -> Vec<BlockMeta> {
    let Some(newest) = metas.last() else {
        return Vec::new();
    };
    for &iv in ranges.iter().skip(1) {
        'parts: for p in split_by_range(metas, iv) {
            if p.iter().any(|m| m.compaction.failed) || p.len() < 2 {
                continue 'parts;
            }
            let mint = p[0].min_time;
            let maxt = p[p.len() - 1].max_time;
            if maxt - mint != iv && maxt > newest.min_time {
                continue;
            }
            let mut last_excluded = 0;
            for (i, m) in p.iter().enumerate() {
                if !no_compact.contains(&m.ulid) {
                    continue;
                }
                if i - last_excluded > 1 {
                    return p[last_excluded..i].to_vec();
                }
                last_excluded = i + 1;
            }
            if p.len() - last_excluded > 1 {
                return p[last_excluded..].to_vec();
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn meta(min_h: i64, max_h: i64) -> BlockMeta {
        BlockMeta::new(Ulid::new(), min_h * H, max_h * H)
    }

    #[test]
    fn plans_level_ranges_and_keeps_newest() {
        let ms: Vec<BlockMeta> = (0..5).map(|i| meta(2 * i, 2 * i + 2)).collect();
        let p = plan(&DEFAULT_RANGES, &ms, &HashSet::new());
        assert_eq!(p.len(), 4, "first 8h range is full");
        let ms3 = &ms[..3];
        assert!(plan(&DEFAULT_RANGES, ms3, &HashSet::new()).is_empty());
        // no-compact in the middle splits the range
        let nc: HashSet<Ulid> = [ms[1].ulid].into();
        let p = plan(&DEFAULT_RANGES, &ms, &nc);
        assert_eq!(
            p.iter().map(|m| m.ulid).collect::<Vec<_>>(),
            vec![ms[2].ulid, ms[3].ulid]
        );
    }

    #[test]
    fn overlapping_first() {
        let ms = vec![meta(0, 2), meta(1, 3), meta(4, 6)];
        let p = plan(&DEFAULT_RANGES, &ms, &HashSet::new());
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].ulid, ms[1].ulid);
    }

    #[test]
    fn covered_blocks() {
        let a = meta(0, 2);
        let b = meta(2, 4);
        let mut c = meta(0, 4);
        c.compaction.level = 2;
        c.compaction.sources = vec![a.ulid, b.ulid];
        let cov = covered(&[a.clone(), b.clone(), c.clone()]);
        let mut want = vec![a.ulid, b.ulid];
        want.sort();
        assert_eq!(cov, want);
        let mut d = c.clone();
        d.ulid = Ulid::new();
        d.thanos = Some(strata_tsdb::meta::ThanosMeta {
            downsample: strata_tsdb::meta::ThanosDownsample {
                resolution: 300_000,
            },
            ..Default::default()
        });
        assert!(covered(&[a, d]).is_empty(), "resolutions are separate");
    }
}
