//! The chunks cache: byte ranges of chunk segments kept in memory in fixed subranges
//! (Thanos's caching bucket: `chunk_subrange_size` 16000), bounded by bytes
//! (`--store.chunks-cache.max-size-bytes`). A range read asks the cache for each
//! subrange it covers and the bucket only for runs of missing ones.
//!
//! Why: the frontend's day parts of one query each read the same long chunks of the
//! same multi-day (downsampled) blocks, and a range read bridging the gaps between a
//! day's chunks reads the other days' chunks too; without a cache a 30-day query split
//! by day read its blocks up to 30 times. Subranges being read are read once however
//! many queries want them at the same time (the others wait), so parts running in
//! parallel share one read.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use strata_store::StoreError;

use crate::stats::Counter;

use super::BucketReader;

/// Bytes per cached subrange (Thanos's default `chunk_subrange_size`).
pub(super) const SUBRANGE: u64 = 16_000;

/// A subrange weighs its bytes plus its key.
#[derive(Clone)]
pub(super) struct SubrangeWeight;

impl quick_cache::Weighter<(String, u64), Bytes> for SubrangeWeight {
    fn weight(&self, k: &(String, u64), v: &Bytes) -> u64 {
        (v.len() + k.0.len() + 64) as u64
    }
}

/// A cache key looked up without building its `String`: hashes as `(String, u64)` does
/// (a tuple hashes its fields in order, and `String` hashes as its `str`).
#[derive(Hash)]
struct KeyRef<'a>(&'a str, u64);

impl quick_cache::Equivalent<(String, u64)> for KeyRef<'_> {
    fn equivalent(&self, key: &(String, u64)) -> bool {
        self.1 == key.1 && self.0 == key.0
    }
}

pub(super) type ChunksCache = quick_cache::sync::Cache<(String, u64), Bytes, SubrangeWeight>;

/// A cache of at most `bytes` (sharded: lookups come from every part of every query).
pub(super) fn new_cache(bytes: u64) -> ChunksCache {
    let opts = quick_cache::OptionsBuilder::new()
        .estimated_items_capacity((bytes / SUBRANGE).clamp(16, 1 << 20) as usize)
        .weight_capacity(bytes)
        .build()
        .expect("both capacities are set");
    ChunksCache::with_options(opts, SubrangeWeight, Default::default(), Default::default())
}

/// Consecutive pieces of a segment, as a range read returned them: the cache's
/// subranges (or one piece without a cache). A chunk inside one piece is a slice of it,
/// never a copy; only the few chunks straddling two subranges are copied out.
#[derive(Debug, Clone)]
pub(super) struct Pieces {
    /// Segment offset of the first piece's first byte.
    start: u64,
    /// Bytes in every piece but the last (a piece is found by a division, not a walk:
    /// a batch of a large selector spans thousands of subranges).
    step: u64,
    pieces: Vec<Bytes>,
}

impl Pieces {
    fn one(start: u64, b: Bytes) -> Self {
        Pieces {
            start,
            step: (b.len() as u64).max(1),
            pieces: vec![b],
        }
    }

    /// Segment offset just past the last byte held.
    pub(super) fn end(&self) -> u64 {
        match self.pieces.split_last() {
            Some((last, rest)) => self.start + rest.len() as u64 * self.step + last.len() as u64,
            None => self.start,
        }
    }

    /// The piece holding offset `off` and where it starts, if held.
    fn piece_at(&self, off: u64) -> Option<(u64, &Bytes)> {
        let i = off.checked_sub(self.start)? / self.step;
        let p = self.pieces.get(usize::try_from(i).ok()?)?;
        let at = self.start + i * self.step;
        (off < at + p.len() as u64).then_some((at, p))
    }

    /// The bytes from `off` to the end of its piece, uncopied (empty if not held).
    pub(super) fn tail(&self, off: u64) -> Bytes {
        match self.piece_at(off) {
            Some((at, p)) => p.slice((off - at) as usize..),
            None => Bytes::new(),
        }
    }

    /// Bytes `range` (clipped to what is held): a slice of one piece, or a copy when
    /// the range crosses pieces.
    pub(super) fn range(&self, range: Range<u64>) -> Bytes {
        let end = range.end.min(self.end());
        if range.start >= end {
            return Bytes::new();
        }
        let Some((at, p)) = self.piece_at(range.start) else {
            return Bytes::new();
        };
        if end <= at + p.len() as u64 {
            return p.slice((range.start - at) as usize..(end - at) as usize);
        }
        let len = (end - range.start) as usize;
        let mut out = BytesMut::with_capacity(len);
        let first = ((at - self.start) / self.step) as usize;
        let mut skip = (range.start - at) as usize;
        for p in &self.pieces[first..] {
            let want = len - out.len();
            let take = &p[skip..p.len().min(skip + want)];
            skip = 0;
            out.extend_from_slice(take);
            if out.len() == len {
                break;
            }
        }
        out.freeze()
    }
}

impl BucketReader {
    /// Bytes `range` of the chunk segment `path` of `size` bytes: through the chunks
    /// cache when there is one. Only bytes read from the bucket are counted into
    /// `count` (a cached range costs the object store nothing).
    pub(super) async fn chunk_range(
        &self,
        path: &str,
        range: Range<u64>,
        size: u64,
        count: &Counter,
    ) -> Result<Bytes, StoreError> {
        let r = range.clone();
        Ok(self.chunk_pieces(path, range, size, count).await?.range(r))
    }

    /// [`chunk_pieces`](Self::chunk_pieces) answered from the cache alone, without
    /// waiting: `None` unless every subrange of `range` is cached.
    pub(super) fn cached_pieces(&self, path: &str, range: Range<u64>) -> Option<Pieces> {
        let cache = self.chunks_cache.as_ref()?;
        if range.end <= range.start {
            return None;
        }
        let first = range.start / SUBRANGE;
        let last = (range.end - 1) / SUBRANGE;
        let mut pieces = Vec::with_capacity((last - first + 1) as usize);
        for i in first..=last {
            pieces.push(cache.get(&KeyRef(path, i))?);
        }
        Some(Pieces {
            start: first * SUBRANGE,
            step: SUBRANGE,
            pieces,
        })
    }

    /// [`BucketReader::chunk_range`] as the pieces it was read in: the cache's whole
    /// subranges covering `range` (so they may hold bytes before and after it), or the
    /// range itself without a cache. Nothing is copied.
    pub(super) async fn chunk_pieces(
        &self,
        path: &str,
        range: Range<u64>,
        size: u64,
        count: &Counter,
    ) -> Result<Pieces, StoreError> {
        let Some(cache) = self
            .chunks_cache
            .as_ref()
            .filter(|_| range.end > range.start)
        else {
            let start = range.start;
            let b = self
                .bucket
                .get_range(path, range)
                .await
                .map_err(StoreError::from)?;
            count.object_read(b.len());
            return Ok(Pieces::one(start, b));
        };
        let first = range.start / SUBRANGE;
        let last = (range.end - 1) / SUBRANGE;
        let mut pieces: Vec<Option<Bytes>> = Vec::with_capacity((last - first + 1) as usize);
        // Guards are taken in ascending order, so two reads waiting on each other's
        // subranges cannot wait in a circle.
        let mut guards = Vec::new();
        for i in first..=last {
            match cache.get_value_or_guard_async(&(path.to_string(), i)).await {
                Ok(b) => pieces.push(Some(b)),
                Err(g) => {
                    pieces.push(None);
                    guards.push((i, g));
                }
            }
        }
        // Runs of missing subranges, one range read each.
        while !guards.is_empty() {
            let mut j = 0;
            while j + 1 < guards.len() && guards[j + 1].0 == guards[j].0 + 1 {
                j += 1;
            }
            let from = guards[0].0 * SUBRANGE;
            let to = ((guards[j].0 + 1) * SUBRANGE).min(size);
            let buf = self
                .bucket
                .get_range(path, from..to)
                .await
                .map_err(StoreError::from)?;
            count.object_read(buf.len());
            if (buf.len() as u64) < to - from {
                return Err(StoreError::Corrupt(format!(
                    "{path}: {} bytes read of {from}..{to}",
                    buf.len()
                )));
            }
            for (i, g) in guards.drain(..=j) {
                let s = (i * SUBRANGE - from) as usize;
                let e = (((i + 1) * SUBRANGE).min(size) - from) as usize;
                let piece = buf.slice(s..e);
                pieces[(i - first) as usize] = Some(piece.clone());
                // Err: the cache was cleared meanwhile; the bytes are still good here.
                let _ = g.insert(piece);
            }
        }
        Ok(Pieces {
            start: first * SUBRANGE,
            step: SUBRANGE,
            pieces: pieces.into_iter().flatten().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strata_objstore::Bucket;

    use super::*;
    use crate::stats::{QueryCost, QueryLimits};

    #[test]
    fn borrowed_keys_find_owned_ones() {
        let cache = new_cache(1 << 20);
        cache.insert(
            ("t/b/chunks/000001".to_string(), 3),
            Bytes::from_static(b"x"),
        );
        assert_eq!(
            cache.get(&KeyRef("t/b/chunks/000001", 3)),
            Some(Bytes::from_static(b"x"))
        );
        assert_eq!(cache.get(&KeyRef("t/b/chunks/000001", 4)), None);
        assert_eq!(cache.get(&KeyRef("t/b/chunks/000002", 3)), None);
    }

    #[test]
    fn pieces_find_every_offset_and_range_across_piece_boundaries() {
        // Three full pieces of `step` bytes and a short last one, as a read of a
        // segment's tail returns them.
        let data: Vec<u8> = (0..34u8).collect();
        let start = 1_000;
        let p = Pieces {
            start,
            step: 10,
            pieces: data.chunks(10).map(Bytes::copy_from_slice).collect(),
        };
        assert_eq!(p.end(), start + 34);
        for off in start - 2..start + 36 {
            let want = (start..start + 34)
                .contains(&off)
                .then(|| start + (off - start) / 10 * 10);
            assert_eq!(p.piece_at(off).map(|(at, _)| at), want, "piece_at({off})");
            let tail = p.tail(off);
            match want {
                Some(at) => {
                    let i = (off - start) as usize;
                    let piece_end = ((at - start) as usize + 10).min(34);
                    assert_eq!(&tail[..], &data[i..piece_end], "tail({off})");
                }
                None => assert!(tail.is_empty(), "tail({off})"),
            }
        }
        for a in 0..=36u64 {
            for b in a..=38u64 {
                let got = p.range(start + a..start + b);
                let (ca, cb) = (a.min(34) as usize, b.min(34) as usize);
                assert_eq!(&got[..], &data[ca..cb], "range({a}..{b})");
            }
        }
        // Nothing held before the first piece.
        assert!(p.range(start - 5..start + 3).is_empty());
        let one = Pieces::one(7, Bytes::from_static(b"abcdef"));
        assert_eq!(&one.range(8..11)[..], b"bcd");
        assert_eq!(one.end(), 13);
        assert!(one.piece_at(13).is_none());
    }

    #[test]
    fn ranges_read_through_the_cache_are_the_bytes_and_cost_nothing_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let size = data.len() as u64;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reader = BucketReader::new(
            Bucket::filesystem(tmp.path()).unwrap(),
            1 << 20,
            std::time::Duration::ZERO,
        )
        .with_chunks_cache(1 << 20);
        rt.block_on(reader.bucket.put("b/chunks/000001", data.clone().into()))
            .unwrap();
        let cost = Arc::new(QueryCost::new(QueryLimits::default()));
        let count = cost.source("bucket");
        let ranges = [
            0..10,
            15_990..16_010,
            5..99_000,
            99_990..size,
            32_000..48_000,
            7..8,
        ];
        for r in ranges.iter().cloned() {
            let got = rt
                .block_on(reader.chunk_range("b/chunks/000001", r.clone(), size, &count))
                .unwrap();
            assert_eq!(&got[..], &data[r.start as usize..r.end as usize], "{r:?}");
        }
        let first = cost.total();
        // Every subrange read once: the whole object, no more.
        assert_eq!(first.object_bytes, size);
        for r in ranges.iter().cloned() {
            let got = rt
                .block_on(reader.chunk_range("b/chunks/000001", r.clone(), size, &count))
                .unwrap();
            assert_eq!(&got[..], &data[r.start as usize..r.end as usize], "{r:?}");
        }
        assert_eq!(cost.total().object_bytes, size);
        assert_eq!(cost.total().object_requests, first.object_requests);
    }

    #[test]
    fn parallel_readers_of_the_same_range_read_it_once() {
        let tmp = tempfile::tempdir().unwrap();
        let data = vec![3u8; 200_000];
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let reader = Arc::new(
            BucketReader::new(
                Bucket::filesystem(tmp.path()).unwrap(),
                1 << 20,
                std::time::Duration::ZERO,
            )
            .with_chunks_cache(1 << 20),
        );
        rt.block_on(reader.bucket.put("c", data.clone().into()))
            .unwrap();
        let cost = Arc::new(QueryCost::new(QueryLimits::default()));
        rt.block_on(async {
            let tasks: Vec<_> = (0..8u64)
                .map(|i| {
                    let (reader, count) = (reader.clone(), cost.source("bucket"));
                    // Overlapping ranges, each starting elsewhere.
                    tokio::spawn(async move {
                        let r = (i * 9_000)..(150_000 + i * 5_000);
                        let b = reader.chunk_range("c", r.clone(), 200_000, &count).await;
                        assert_eq!(b.unwrap().len() as u64, r.end - r.start);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        // Subranges 0..=11 (up to 185,000 rounded up to 192,000), each read once.
        assert_eq!(cost.total().object_bytes, 192_000);
    }
}
