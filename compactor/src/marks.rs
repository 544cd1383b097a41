//! Thanos's block marker files (`pkg/block/metadata/markers.go`), byte-compatible:
//! `deletion-mark.json` and `no-compact-mark.json` inside the block's directory.

use serde::{Deserialize, Serialize};
use strata_objstore::{Bucket, DELETION_MARK, NO_COMPACT_MARK};
use ulid::Ulid;

use crate::Error;

/// `deletion-mark.json`: the block goes away once `deletion_time + --delete-delay` has
/// passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionMark {
    pub id: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    /// Unix seconds.
    pub deletion_time: i64,
}

/// `no-compact-mark.json`: the block is left out of compaction and downsampling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoCompactMark {
    pub id: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    /// Unix seconds.
    pub no_compact_time: i64,
    pub reason: String,
}

/// The reason our compactor writes for a block it cannot read (Mimir's `critical`).
pub const NO_COMPACT_REASON_CORRUPT: &str = "critical";

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Write `deletion-mark.json` for `tenant/ulid` (overwrites: a repeated mark is harmless,
/// but keeps the first mark's time when one is already there).
pub async fn mark_for_deletion(
    bucket: &Bucket,
    tenant: &str,
    ulid: Ulid,
    details: &str,
) -> Result<(), Error> {
    let path = format!("{tenant}/{ulid}/{DELETION_MARK}");
    if bucket.exists(&path).await? {
        return Ok(());
    }
    let m = DeletionMark {
        id: ulid.to_string(),
        version: 1,
        details: details.to_string(),
        deletion_time: now_secs(),
    };
    let body = serde_json::to_vec_pretty(&m).expect("marks serialize");
    bucket.put(&path, body.into()).await?;
    Ok(())
}

/// Write `no-compact-mark.json` for `tenant/ulid`.
pub async fn mark_no_compact(
    bucket: &Bucket,
    tenant: &str,
    ulid: Ulid,
    reason: &str,
    details: &str,
) -> Result<(), Error> {
    let m = NoCompactMark {
        id: ulid.to_string(),
        version: 1,
        details: details.to_string(),
        no_compact_time: now_secs(),
        reason: reason.to_string(),
    };
    let body = serde_json::to_vec_pretty(&m).expect("marks serialize");
    bucket
        .put(&format!("{tenant}/{ulid}/{NO_COMPACT_MARK}"), body.into())
        .await?;
    Ok(())
}

/// Read a block's deletion mark; `None` when absent or unreadable (a partial write).
pub async fn read_deletion_mark(
    bucket: &Bucket,
    tenant: &str,
    ulid: Ulid,
) -> Result<Option<DeletionMark>, Error> {
    match bucket
        .get(&format!("{tenant}/{ulid}/{DELETION_MARK}"))
        .await
    {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thanos_shapes() {
        let d: DeletionMark = serde_json::from_str(
            r#"{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","deletion_time":1600000000,"version":1}"#,
        )
        .unwrap();
        assert_eq!(d.deletion_time, 1_600_000_000);
        let n = NoCompactMark {
            id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            version: 1,
            details: "index: checksum".into(),
            no_compact_time: 5,
            reason: NO_COMPACT_REASON_CORRUPT.into(),
        };
        let v: serde_json::Value = serde_json::to_value(&n).unwrap();
        assert_eq!(v["reason"], "critical");
        assert_eq!(v["no_compact_time"], 5);
        assert_eq!(v["version"], 1);
    }
}
