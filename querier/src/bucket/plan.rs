//! Listing a tenant's visible blocks (reused for `--store.block-listing-ttl`) and
//! planning which blocks, at which resolution, answer a time range.

use std::path::PathBuf;
use std::sync::Arc;

use strata_store::StoreError;
use strata_tsdb::downsample::{RES_1H, RES_5M, RES_RAW};
use strata_tsdb::meta::{visible_blocks, BlockMeta};

use crate::stats::Counter;

use super::{external_labels, resolution, BucketReader};

/// A tenant's visible blocks and when they were listed.
pub(super) type Listing = (std::time::Instant, Arc<Vec<BlockMeta>>);

impl BucketReader {
    /// The tenant's readable blocks overlapping `[mint, maxt]`.
    pub async fn blocks(
        &self,
        tenant: &str,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<BlockMeta>, StoreError> {
        let listed = self.listing(tenant, &Counter::unaccounted()).await?;
        Ok(listed
            .iter()
            .filter(|m| resolution(m) == RES_RAW && m.max_time > mint && m.min_time <= maxt)
            .cloned()
            .collect())
    }

    /// The blocks to read for `[mint, maxt]` with resolutions up to `max_resolution`,
    /// each with the inclusive time range it answers for (see [`plan_blocks`]).
    pub async fn plan(
        &self,
        tenant: &str,
        mint: i64,
        maxt: i64,
        max_resolution: i64,
    ) -> Result<Vec<PlannedBlock>, StoreError> {
        let listed = self.listing(tenant, &Counter::unaccounted()).await?;
        Ok(plan_blocks(&listed, mint, maxt, max_resolution))
    }

    pub(super) async fn listing(
        &self,
        tenant: &str,
        count: &Counter,
    ) -> Result<Arc<Vec<BlockMeta>>, StoreError> {
        if !self.listing_ttl.is_zero() {
            let l = self.listings.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, metas)) = l.get(tenant) {
                if at.elapsed() < self.listing_ttl {
                    return Ok(metas.clone());
                }
            }
        }
        let refs = self
            .bucket
            .list_blocks(tenant)
            .await
            .map_err(StoreError::from)?;
        // One listing, then each block's meta.json.
        count.object_reads(1 + refs.len(), refs.iter().map(|r| r.meta_json.len()).sum());
        let mut metas = Vec::with_capacity(refs.len());
        for r in refs {
            let name = PathBuf::from(format!("{tenant}/{}/meta.json", r.ulid));
            match BlockMeta::from_json(&r.meta_json, &name) {
                Ok(m) => metas.push((m, r.deletion_marked)),
                // One bad meta.json must not hide every other block.
                Err(e) => {
                    tracing::warn!(block = %r.ulid, error = %e, "skipping block with unreadable meta.json")
                }
            }
        }
        let visible = Arc::new(visible_blocks(metas));
        if !self.listing_ttl.is_zero() {
            self.listings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    tenant.to_string(),
                    (std::time::Instant::now(), visible.clone()),
                );
        }
        Ok(visible)
    }
}

/// One block of a read plan and the inclusive time range it answers for.
#[derive(Debug, Clone)]
pub struct PlannedBlock {
    pub meta: BlockMeta,
    pub mint: i64,
    pub maxt: i64,
}

/// The resolutions the bucket can hold, coarsest first.
const RESOLUTIONS: [i64; 3] = [RES_1H, RES_5M, RES_RAW];

/// Which blocks answer `[mint, maxt]` at resolutions up to `max_resolution`: per stream
/// (blocks with the same external labels), the coarsest allowed resolution where it has
/// blocks, finer resolutions only for the time ranges it leaves uncovered (Thanos's
/// `getFor`). Each planned block answers for a range disjoint from the other
/// resolutions' ranges in its stream.
pub fn plan_blocks(
    blocks: &[BlockMeta],
    mint: i64,
    maxt: i64,
    max_resolution: i64,
) -> Vec<PlannedBlock> {
    let resolutions: Vec<i64> = RESOLUTIONS
        .iter()
        .copied()
        .filter(|r| *r <= max_resolution.max(0))
        .collect();
    let mut streams: std::collections::BTreeMap<Vec<(String, String)>, Vec<&BlockMeta>> =
        Default::default();
    for b in blocks {
        if b.max_time > mint && b.min_time <= maxt {
            let mut k = external_labels(b);
            k.sort();
            streams.entry(k).or_default().push(b);
        }
    }
    let mut out = Vec::new();
    for bs in streams.values() {
        plan_stream(bs, mint, maxt, &resolutions, &mut out);
    }
    out
}

fn plan_stream(
    blocks: &[&BlockMeta],
    mint: i64,
    maxt: i64,
    resolutions: &[i64],
    out: &mut Vec<PlannedBlock>,
) {
    let Some((&res, finer)) = resolutions.split_first() else {
        return;
    };
    if mint > maxt {
        return;
    }
    let mut here: Vec<&BlockMeta> = blocks
        .iter()
        .copied()
        .filter(|b| resolution(b) == res && b.max_time > mint && b.min_time <= maxt)
        .collect();
    here.sort_by_key(|b| (b.min_time, b.max_time));
    let mut cur = mint;
    for b in here {
        if b.min_time > cur {
            plan_stream(blocks, cur, b.min_time - 1, finer, out);
        }
        out.push(PlannedBlock {
            meta: b.clone(),
            mint: b.min_time.max(mint),
            maxt: (b.max_time - 1).min(maxt),
        });
        cur = cur.max(b.max_time);
    }
    if cur <= maxt {
        plan_stream(blocks, cur, maxt, finer, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulid::Ulid;

    use strata_tsdb::meta::{ThanosDownsample, ThanosMeta};

    fn ds_meta(min: i64, max: i64, res: i64) -> BlockMeta {
        let mut m = BlockMeta::new(Ulid::new(), min, max);
        m.thanos = Some(ThanosMeta {
            downsample: ThanosDownsample { resolution: res },
            ..Default::default()
        });
        m
    }

    #[test]
    fn plan_prefers_coarsest_allowed_and_fills_gaps_without_overlap() {
        const D: i64 = 24 * 3_600_000;
        let raw = ds_meta(0, 30 * D, RES_RAW);
        let m5 = ds_meta(0, 30 * D, RES_5M);
        let h1 = ds_meta(0, 28 * D, RES_1H);
        let blocks = vec![raw.clone(), m5.clone(), h1.clone()];
        let summary = |max_res| {
            plan_blocks(&blocks, D, 30 * D - 1, max_res)
                .into_iter()
                .map(|p| (resolution(&p.meta), p.mint, p.maxt))
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(0), vec![(0, D, 30 * D - 1)]);
        assert_eq!(summary(12 * 60_000), vec![(RES_5M, D, 30 * D - 1)]);
        assert_eq!(
            summary(RES_1H),
            vec![(RES_1H, D, 28 * D - 1), (RES_5M, 28 * D, 30 * D - 1)]
        );
        // Without the 5m block the raw one fills the gap.
        let blocks = vec![raw, h1];
        let p: Vec<_> = plan_blocks(&blocks, D, 30 * D - 1, RES_1H)
            .into_iter()
            .map(|p| (resolution(&p.meta), p.mint, p.maxt))
            .collect();
        assert_eq!(p, vec![(RES_1H, D, 28 * D - 1), (0, 28 * D, 30 * D - 1)]);
    }
}
