//! The cache of parsed block indexes: bounded by bytes, one read per block however
//! many queries miss it at once, failed reads not cached.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use strata_store::StoreError;
use strata_tsdb::chunks::segment_file_name;
use strata_tsdb::index::IndexReader;
use strata_tsdb::meta::BlockMeta;
use ulid::Ulid;

use crate::stats::Counter;

use super::BucketReader;

/// One block's parsed index plus the sizes of its chunk segments.
pub(super) struct BlockIndex {
    pub(super) reader: IndexReader,
    /// Size of `chunks/NNNNNN` by 0-based segment index.
    pub(super) segments: Vec<u64>,
    bytes: u64,
}

/// A cached index weighs its parsed size, so the cache is bounded by bytes.
#[derive(Clone)]
pub(super) struct IndexWeight;

impl quick_cache::Weighter<Ulid, Arc<BlockIndex>> for IndexWeight {
    fn weight(&self, _: &Ulid, idx: &Arc<BlockIndex>) -> u64 {
        idx.bytes.max(1)
    }
}

pub(super) type IndexCache = quick_cache::sync::Cache<Ulid, Arc<BlockIndex>, IndexWeight>;

impl BucketReader {
    /// The block's index: cached, else read once however many queries miss it at the
    /// same time (the others wait for it; if the read fails, the next one tries).
    #[cfg(test)]
    async fn index(&self, tenant: &str, meta: &BlockMeta) -> Result<Arc<BlockIndex>, StoreError> {
        self.index_counted(tenant, meta, &Counter::unaccounted())
            .await
    }

    /// The block's index (see [`BucketReader::index`]); a read from the bucket is
    /// counted into `count`.
    pub(super) async fn index_counted(
        &self,
        tenant: &str,
        meta: &BlockMeta,
        count: &Counter,
    ) -> Result<Arc<BlockIndex>, StoreError> {
        let guard = match self.cache.get_value_or_guard_async(&meta.ulid).await {
            Ok(idx) => return Ok(idx),
            Err(guard) => guard,
        };
        let idx = Arc::new(self.load_index(tenant, meta, count).await?);
        self.index_loads.fetch_add(1, Ordering::Relaxed);
        // Err: the placeholder is gone (the cache was cleared meanwhile); the index still
        // serves this read.
        let _ = guard.insert(idx.clone());
        Ok(idx)
    }

    async fn load_index(
        &self,
        tenant: &str,
        meta: &BlockMeta,
        count: &Counter,
    ) -> Result<BlockIndex, StoreError> {
        let dir = format!("{tenant}/{}", meta.ulid);
        let path = format!("{dir}/index");
        let (data, listing) = futures::future::join(
            self.bucket.get(&path),
            self.bucket.list(&format!("{dir}/chunks")),
        )
        .await;
        let data = data.map_err(StoreError::from)?;
        let listing = listing.map_err(StoreError::from)?;
        // The index, and the listing of its chunk segments.
        count.object_reads(2, data.len());
        let reader = IndexReader::new(data, &path).map_err(StoreError::from)?;
        let mut segs: Vec<(u32, u64)> = listing
            .iter()
            .filter_map(|(p, size)| {
                let name = p.rsplit('/').next()?;
                let n: u32 = name.parse().ok()?;
                Some((n.checked_sub(1)?, *size))
            })
            .collect();
        segs.sort_unstable();
        let mut segments = Vec::new();
        for (i, size) in segs {
            if i as usize != segments.len() {
                return Err(StoreError::Corrupt(format!(
                    "block {dir}: chunk segment {} missing",
                    segment_file_name(segments.len() as u32)
                )));
            }
            segments.push(size);
        }
        let bytes = reader.size();
        Ok(BlockIndex {
            reader,
            segments,
            bytes,
        })
    }

    /// Number of block indexes in the cache (for tests and metrics).
    pub fn cached_indexes(&self) -> usize {
        self.cache.len()
    }

    /// Block indexes read from the bucket so far (for tests and metrics).
    pub fn index_loads(&self) -> u64 {
        self.index_loads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::rt;
    use super::*;
    use std::path::Path;
    use strata_objstore::Bucket;
    use strata_tsdb::labels::Labels;

    /// A real block (one series) in a filesystem bucket at `t/<ULID>`.
    fn block_in_bucket(bucket_dir: &Path) -> BlockMeta {
        use strata_tsdb::block::BlockWriter;
        use strata_tsdb::chunkenc::ChunkCutter;
        let tenant_dir = bucket_dir.join("t");
        std::fs::create_dir_all(&tenant_dir).unwrap();
        let ulid = Ulid::new();
        let mut w = BlockWriter::new(&tenant_dir, ulid).unwrap();
        let mut c = ChunkCutter::new(7_200_000);
        for t in 0..100 {
            c.append(t * 15_000, t as f64);
        }
        w.add_series(Labels::from_pairs([("__name__", "up")]), c.finish())
            .unwrap();
        w.finish(None).unwrap();
        BlockMeta::read(&tenant_dir.join(ulid.to_string())).unwrap()
    }

    /// Queries that miss one block's index at the same time read it once: the first
    /// reads, the others wait for it (before: every miss read and parsed it).
    #[test]
    fn concurrent_misses_read_an_index_once() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = block_in_bucket(tmp.path());
        let reader = BucketReader::new(
            Bucket::filesystem(tmp.path()).unwrap(),
            1 << 30,
            std::time::Duration::ZERO,
        );
        // join_all polls each once before any read can finish: sixteen misses at once.
        let got = rt().block_on(futures::future::join_all(
            (0..16).map(|_| reader.index("t", &meta)),
        ));
        assert!(got.iter().all(|r| r.is_ok()));
        assert!(got
            .windows(2)
            .all(|w| Arc::ptr_eq(w[0].as_ref().unwrap(), w[1].as_ref().unwrap())));
        assert_eq!(reader.index_loads(), 1);
        assert_eq!(reader.cached_indexes(), 1);
        rt().block_on(reader.index("t", &meta)).unwrap();
        assert_eq!(reader.index_loads(), 1);
    }

    /// A failed read is not cached and does not poison the waiters: each tries itself.
    #[test]
    fn failed_index_reads_are_not_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = block_in_bucket(tmp.path());
        let index = tmp.path().join(format!("t/{}/index", meta.ulid));
        let good = std::fs::read(&index).unwrap();
        std::fs::write(&index, b"not an index").unwrap();
        let reader = BucketReader::new(
            Bucket::filesystem(tmp.path()).unwrap(),
            1 << 30,
            std::time::Duration::ZERO,
        );
        let got = rt().block_on(futures::future::join_all(
            (0..4).map(|_| reader.index("t", &meta)),
        ));
        assert!(got.iter().all(|r| r.is_err()));
        assert_eq!(reader.cached_indexes(), 0);
        std::fs::write(&index, good).unwrap();
        rt().block_on(reader.index("t", &meta)).unwrap();
        assert_eq!((reader.index_loads(), reader.cached_indexes()), (1, 1));
    }

    /// The cache holds what fits its byte limit, evicting to make room.
    #[test]
    fn index_cache_is_bounded_by_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let metas: Vec<BlockMeta> = (0..3).map(|_| block_in_bucket(tmp.path())).collect();
        let one = {
            let r = BucketReader::new(
                Bucket::filesystem(tmp.path()).unwrap(),
                1 << 30,
                std::time::Duration::ZERO,
            );
            rt().block_on(r.index("t", &metas[0])).unwrap().bytes
        };
        // Room for two indexes, not three.
        let reader = BucketReader::new(
            Bucket::filesystem(tmp.path()).unwrap(),
            2 * one + one / 2,
            std::time::Duration::ZERO,
        );
        for m in &metas {
            rt().block_on(reader.index("t", m)).unwrap();
        }
        assert_eq!(reader.index_loads(), 3);
        assert!(reader.cached_indexes() <= 2, "{}", reader.cached_indexes());
    }
}
