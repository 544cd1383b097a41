//! Ships Prometheus's finished blocks: each new level-1 block in `--tsdb.path` is staged
//! with hard links under `<tsdb.path>/thanos/upload/<ULID>/`, its `meta.json` gets the
//! external labels and `source: sidecar`, and it is uploaded to `<tenant>/<ULID>/` with
//! `meta.json` last. What is uploaded is recorded in `<tsdb.path>/thanos.shipper.json`
//! (Thanos's file), so restarts neither repeat nor skip a block.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_objstore::Bucket;
use strata_tsdb::meta::BlockMeta;
use ulid::Ulid;

use crate::{Error, Result};

pub const SHIPPER_FILE: &str = "thanos.shipper.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct ShipperState {
    version: u32,
    #[serde(default)]
    uploaded: Vec<String>,
}

pub struct Shipper {
    pub tsdb_path: PathBuf,
    pub tenant: String,
    pub external_labels: BTreeMap<String, String>,
    pub upload_compacted: bool,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}

impl Shipper {
    fn state_path(&self) -> PathBuf {
        self.tsdb_path.join(SHIPPER_FILE)
    }

    fn read_state(&self) -> Result<ShipperState> {
        let p = self.state_path();
        match std::fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| Error::Io(format!("{}: {e}", p.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ShipperState {
                version: 1,
                uploaded: vec![],
            }),
            Err(e) => Err(io(&p, e)),
        }
    }

    fn write_state(&self, st: &ShipperState) -> Result<()> {
        let p = self.state_path();
        let tmp = self.tsdb_path.join(format!("{SHIPPER_FILE}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(st).expect("state serialises"),
        )
        .map_err(|e| io(&tmp, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| io(&p, e))
    }

    /// Finished blocks not yet uploaded, oldest first: `<ULID>/meta.json` present, not a
    /// temporary directory, level 1 unless `upload_compacted`.
    pub fn pending(&self) -> Result<Vec<(Ulid, BlockMeta)>> {
        let st = self.read_state()?;
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.tsdb_path).map_err(|e| io(&self.tsdb_path, e))?;
        for e in rd {
            let e = e.map_err(|e| io(&self.tsdb_path, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(u) = name.parse::<Ulid>() else {
                continue;
            };
            if st.uploaded.contains(&name) || !e.path().join("meta.json").exists() {
                continue;
            }
            let meta = match BlockMeta::read(&e.path()) {
                Ok(m) => m,
                Err(err) => {
                    tracing::warn!(block = %name, error = %err, "skipping unreadable block");
                    continue;
                }
            };
            if meta.compaction.level > 1 && !self.upload_compacted {
                continue;
            }
            out.push((u, meta));
        }
        out.sort_by_key(|(u, m)| (m.min_time, *u));
        Ok(out)
    }

    /// Stage a block with hard links (copies across file systems) and the new meta.json.
    fn stage(&self, u: Ulid, meta: &BlockMeta) -> Result<PathBuf> {
        let src = self.tsdb_path.join(u.to_string());
        let dst = self
            .tsdb_path
            .join("thanos")
            .join("upload")
            .join(u.to_string());
        let _ = std::fs::remove_dir_all(&dst);
        link_tree(&src, &dst, true)?;
        let mut m = meta.clone();
        let mut th = m.thanos.take().unwrap_or_default();
        th.labels = self.external_labels.clone();
        th.source = "sidecar".into();
        m.thanos = Some(th);
        m.write(&dst)?;
        Ok(dst)
    }

    /// Upload every pending block. Stops at the first failure (the next round retries);
    /// returns the blocks uploaded.
    pub async fn sync(&self, bucket: &Bucket) -> Result<Vec<Ulid>> {
        let mut done = Vec::new();
        for (u, meta) in self.pending()? {
            let staged = self.stage(u, &meta)?;
            let res = bucket
                .upload_dir(&staged, &format!("{}/{u}", self.tenant))
                .await;
            let _ = std::fs::remove_dir_all(&staged);
            res?;
            let mut st = self.read_state()?;
            st.version = 1;
            st.uploaded.push(u.to_string());
            self.write_state(&st)?;
            tracing::info!(block = %u, min_time = meta.min_time, max_time = meta.max_time, "uploaded block");
            done.push(u);
        }
        Ok(done)
    }
}

/// Hard-link every file of `src` into `dst` (copying when linking fails), except the
/// top-level meta.json when `skip_meta`.
fn link_tree(src: &Path, dst: &Path, skip_meta: bool) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| io(dst, e))?;
    for e in std::fs::read_dir(src).map_err(|e| io(src, e))? {
        let e = e.map_err(|e| io(src, e))?;
        let from = e.path();
        let to = dst.join(e.file_name());
        if e.file_type().map_err(|e| io(&from, e))?.is_dir() {
            link_tree(&from, &to, false)?;
        } else if !(skip_meta && e.file_name() == "meta.json")
            && std::fs::hard_link(&from, &to).is_err()
        {
            std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
        }
    }
    Ok(())
}
