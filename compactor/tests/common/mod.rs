//! Helpers the compactor's integration tests share: writing and uploading a block,
//! listing the live blocks, a compactor config for one test bucket.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use strata_compactor::{CompactorConfig, PassReport};
use strata_objstore::Bucket;
use strata_tsdb::block::{BlockWriter, MetaExtra};
use strata_tsdb::meta::{BlockMeta, ThanosDownsample, ThanosMeta};
use ulid::Ulid;

/// Write a block covering `[min, max)` with external labels `ext` (series added by
/// `add`) and upload it to `tenant`; the local copy is removed.
pub async fn upload_block(
    bucket: &Bucket,
    tmp: &Path,
    tenant: &str,
    range: (i64, i64),
    ext: &[(&str, &str)],
    add: impl FnOnce(&mut BlockWriter),
) -> Ulid {
    upload_block_at(bucket, tmp, tenant, range, (ext, 0), add).await
}

/// [`upload_block`] of a block at downsampling `resolution` (ms; 0 for raw).
pub async fn upload_block_at(
    bucket: &Bucket,
    tmp: &Path,
    tenant: &str,
    (min, max): (i64, i64),
    (ext, resolution): (&[(&str, &str)], i64),
    add: impl FnOnce(&mut BlockWriter),
) -> Ulid {
    let ulid = Ulid::new();
    let mut w = BlockWriter::new(tmp, ulid).unwrap();
    add(&mut w);
    let thanos = ThanosMeta {
        labels: ext
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        source: "test".into(),
        downsample: ThanosDownsample { resolution },
        ..Default::default()
    };
    w.finish(Some(MetaExtra {
        min_time: Some(min),
        max_time: Some(max),
        compaction: None,
        thanos: Some(thanos),
    }))
    .unwrap();
    bucket
        .upload_dir(tmp.join(ulid.to_string()), &format!("{tenant}/{ulid}"))
        .await
        .unwrap();
    std::fs::remove_dir_all(tmp.join(ulid.to_string())).unwrap();
    ulid
}

pub fn resolution(m: &BlockMeta) -> i64 {
    m.thanos.as_ref().map_or(0, |t| t.downsample.resolution)
}

/// Blocks without a deletion mark, by resolution then min time.
pub async fn live_metas(bucket: &Bucket, tenant: &str) -> Vec<BlockMeta> {
    let mut v: Vec<BlockMeta> = bucket
        .list_blocks(tenant)
        .await
        .unwrap()
        .iter()
        .filter(|r| !r.deletion_marked)
        .map(|r| BlockMeta::from_json(&r.meta_json, Path::new("meta.json")).unwrap())
        .collect();
    v.sort_by_key(|m| (resolution(m), m.min_time));
    v
}

/// One compactor per test bucket: no lease (the crash test starts a second compactor
/// after the first "died" mid-pass, which a lease would make wait it out).
pub fn config(dir: &Path) -> CompactorConfig {
    CompactorConfig {
        data_dir: dir.to_path_buf(),
        delete_delay: std::time::Duration::ZERO,
        lock_lease: std::time::Duration::ZERO,
        ..Default::default()
    }
}

/// One pass of a fresh compactor with `cfg`; asserts no stream halted.
pub async fn one_pass(bucket: &Bucket, cfg: CompactorConfig) -> PassReport {
    let c = strata_compactor::Compactor::new(
        bucket.clone(),
        cfg,
        &strata_kit::metrics::Registry::new(),
    );
    let r = c.run_once().await.unwrap();
    assert!(r.halted_streams.is_empty(), "{:?}", r.halted_streams);
    r
}
