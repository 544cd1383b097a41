//! Chunk reads by byte ranges of `chunks/NNNNNN`: nearby chunks batched into one
//! range read, long chunks fetched again on their own (bounded), corrupt ones an
//! error naming the block.

use std::collections::HashMap;
use std::path::Path;

use futures::StreamExt;
use strata_store::StoreError;
use strata_tsdb::chunkenc::Encoding;
use strata_tsdb::chunks::{parse_chunk, segment_file_name, unpack_ref, ParsedChunk};

use crate::stats::Counter;

use super::chunk_cache::Pieces;
use super::BucketReader;

/// Bytes read past the last chunk of a batch: Thanos's estimate of a chunk's maximum
/// size; a longer chunk is fetched again on its own.
const CHUNK_SIZE_ESTIMATE: u64 = 16 * 1024;
/// Chunks closer than this are fetched in one range read.
const RANGE_GAP: u64 = 64 * 1024;
/// Range reads in flight per block.
const RANGE_CONCURRENCY: usize = 8;

/// A chunk as read from a segment: encoding and data.
type RawChunk = (Encoding, bytes::Bytes);

impl BucketReader {
    /// Fetch the chunks `refs` of block `dir`: (encoding byte, data) by ref.
    pub(super) async fn fetch_chunks(
        &self,
        dir: &str,
        segments: &[u64],
        mut refs: Vec<u64>,
        count: &Counter,
    ) -> Result<HashMap<u64, RawChunk>, StoreError> {
        refs.sort_unstable();
        refs.dedup();
        let n_refs = refs.len();
        // Batch by segment: (segment, start, end, refs in it).
        let mut batches: Vec<(u32, u64, u64, Vec<u64>)> = Vec::new();
        for r in refs {
            let (seg, off) = unpack_ref(r);
            let off = u64::from(off);
            let Some(&size) = segments.get(seg as usize) else {
                return Err(StoreError::Corrupt(format!(
                    "block {dir}: chunk {r:#x} in missing segment {}",
                    segment_file_name(seg)
                )));
            };
            if off >= size {
                return Err(StoreError::Corrupt(format!(
                    "block {dir}: chunk {r:#x} beyond the end of segment {}",
                    segment_file_name(seg)
                )));
            }
            let end = (off + CHUNK_SIZE_ESTIMATE).min(size);
            match batches.last_mut() {
                Some(b) if b.0 == seg && off <= b.2 + RANGE_GAP => {
                    b.2 = b.2.max(end);
                    b.3.push(r);
                }
                _ => batches.push((seg, off, end, vec![r])),
            }
        }
        // Batches whose bytes are all cached are parsed here, without a future each: a
        // small query over hot blocks spent more on the futures than on the chunks.
        let mut out = HashMap::with_capacity(n_refs);
        let mut paths: Vec<(u32, String)> = Vec::new();
        let mut missed = Vec::new();
        'batch: for (seg, start, end, refs) in batches {
            let path = match paths.iter().find(|(s, _)| *s == seg) {
                Some((_, p)) => p,
                None => {
                    paths.push((seg, format!("{dir}/chunks/{}", segment_file_name(seg))));
                    &paths[paths.len() - 1].1
                }
            };
            let Some(pieces) = self.cached_pieces(path, start..end) else {
                missed.push((seg, start, end, refs));
                continue;
            };
            let held = end.min(pieces.end());
            let mut got = Vec::with_capacity(refs.len());
            for &r in &refs {
                let off = u64::from(unpack_ref(r).1);
                match parse_in(&pieces, off, held, path).map_err(|e| corrupt_chunk(dir, &e))? {
                    Ok(chunk) => got.push((r, chunk)),
                    // a chunk longer than the batch's read: the whole batch goes the
                    // slow way
                    Err(_) => {
                        missed.push((seg, start, end, refs));
                        continue 'batch;
                    }
                }
            }
            count.chunks(got.len(), got.iter().map(|(_, c)| c.1.len()).sum())?;
            out.extend(got);
        }
        let results: Vec<Result<Vec<(u64, RawChunk)>, StoreError>> = futures::stream::iter(missed)
            .map(|(seg, start, end, refs)| async move {
                let path = format!("{dir}/chunks/{}", segment_file_name(seg));
                let size = segments[seg as usize];
                let pieces = self.chunk_pieces(&path, start..end, size, count).await?;
                // the batch's bytes as read: a chunk's bytes past `end` are not its
                let held = end.min(pieces.end());
                let mut got = Vec::with_capacity(refs.len());
                for r in refs {
                    let off = u64::from(unpack_ref(r).1);
                    let chunk = match parse_in(&pieces, off, held, &path)
                        .map_err(|e| corrupt_chunk(dir, &e))?
                    {
                        Ok(chunk) => chunk,
                        Err(total) => {
                            self.fetch_long_chunk(dir, &path, off, size, total, count)
                                .await?
                        }
                    };
                    // Chunk bytes count as they arrive: past the limit, no more reads.
                    count.chunk(chunk.1.len())?;
                    got.push((r, chunk));
                }
                Ok(got)
            })
            .buffer_unordered(RANGE_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// A chunk longer than its batch's read: read on its own, `needs` bytes from `off`
    /// (as the bytes read so far say), bounded by the segment's size and
    /// [`MAX_CHUNK_READ`] so a corrupt length cannot ask for gigabytes.
    async fn fetch_long_chunk(
        &self,
        dir: &str,
        path: &str,
        off: u64,
        size: u64,
        mut needs: u64,
        count: &Counter,
    ) -> Result<RawChunk, StoreError> {
        // Twice at most: the length field itself may have been cut off the first time.
        for _ in 0..2 {
            let range = long_chunk_range(off, needs, size)
                .map_err(|why| corrupt_chunk(dir, &strata_tsdb::Error::corrupt(path, off, why)))?;
            let one = self.chunk_range(path, range, size, count).await?;
            match parse_chunk(&one, Path::new(path), off).map_err(|e| corrupt_chunk(dir, &e))? {
                ParsedChunk::Chunk(enc, r) => return Ok((enc, one.slice(r))),
                ParsedChunk::Needs(n) => needs = n,
            }
        }
        Err(corrupt_chunk(
            dir,
            &strata_tsdb::Error::corrupt(path, off, "chunk length keeps growing"),
        ))
    }
}

/// The chunk at `off` from the batch's `pieces` (bytes up to `held`): a slice of the
/// piece holding it, copied only when it crosses into the next piece; `Err` with the
/// bytes it needs when they run past `held`.
fn parse_in(
    pieces: &Pieces,
    off: u64,
    held: u64,
    path: &str,
) -> strata_tsdb::Result<Result<RawChunk, u64>> {
    let mut at = pieces.tail(off);
    if off + at.len() as u64 > held {
        at.truncate((held.saturating_sub(off)) as usize);
    }
    // Twice at most: a length cut off at the piece's end, then the whole chunk.
    for _ in 0..3 {
        match parse_chunk(&at, Path::new(path), off)? {
            ParsedChunk::Chunk(enc, r) => return Ok(Ok((enc, at.slice(r)))),
            ParsedChunk::Needs(total) if off.saturating_add(total) <= held => {
                at = pieces.range(off..off + total);
            }
            ParsedChunk::Needs(total) => return Ok(Err(total)),
        }
    }
    Err(strata_tsdb::Error::corrupt(
        path,
        off,
        "chunk length keeps growing",
    ))
}

/// Longest chunk a range read fetches. Prometheus's chunks hold at most a few KiB (120
/// samples; histogram and aggregate chunks a few times that); a length beyond this is
/// taken for corruption rather than read.
pub const MAX_CHUNK_READ: u64 = 16 << 20;

/// The byte range to read for a chunk at `off` that needs `needs` bytes, in a segment of
/// `size` bytes; the reason it is corrupt when that cannot be right.
fn long_chunk_range(off: u64, needs: u64, size: u64) -> Result<std::ops::Range<u64>, String> {
    if needs > MAX_CHUNK_READ {
        return Err(format!(
            "chunk length claims {needs} bytes, more than the {MAX_CHUNK_READ}-byte limit on a chunk"
        ));
    }
    match off.checked_add(needs) {
        Some(end) if end <= size => Ok(off..end),
        _ => Err(format!(
            "chunk runs past the end of the segment ({size} bytes): it needs {needs} bytes"
        )),
    }
}

/// A corrupt chunk as the query reports it: the block and the file and offset.
fn corrupt_chunk(dir: &str, e: &strata_tsdb::Error) -> StoreError {
    StoreError::Corrupt(format!("block {dir}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::rt;
    use super::*;
    use crate::stats::{QueryCost, QueryLimits};
    use std::path::PathBuf;
    use strata_objstore::Bucket;
    use ulid::Ulid;

    /// A segment of chunks as the ingester writes it, in a real filesystem bucket at
    /// `t/<ULID>/chunks/000001`: the bucket, the block's dir, the segment bytes and the
    /// chunk refs.
    fn segment_in_bucket(
        chunks: &[(Encoding, Vec<u8>)],
    ) -> (tempfile::TempDir, String, Vec<u8>, Vec<u64>) {
        use strata_tsdb::chunks::ChunkWriter;
        let tmp = tempfile::tempdir().unwrap();
        let dir = format!("t/{}", Ulid::new());
        let cdir = tmp.path().join(&dir).join("chunks");
        let mut w = ChunkWriter::create(&cdir).unwrap();
        let refs = chunks
            .iter()
            .map(|(e, d)| w.write(*e, d).unwrap())
            .collect();
        w.finish().unwrap();
        let seg = std::fs::read(cdir.join("000001")).unwrap();
        (tmp, dir, seg, refs)
    }

    /// Both readers of one segment: the bucket's range reads and tsdb's reader of a
    /// whole segment. Either both give the same chunks, or both refuse the block.
    fn both_paths_agree(tmp: &Path, dir: &str, seg: &[u8], refs: &[u64]) -> Result<(), String> {
        let path = format!("{dir}/chunks/000001");
        std::fs::write(tmp.join(&path), seg).unwrap();
        let local = strata_tsdb::chunks::ChunkReader::from_segments(vec![(
            PathBuf::from(&path),
            bytes::Bytes::copy_from_slice(seg),
        )])
        .unwrap();
        let want: Result<Vec<(Encoding, Vec<u8>)>, String> = refs
            .iter()
            .map(|r| {
                local
                    .chunk(*r)
                    .map(|(e, d)| (e, d.to_vec()))
                    .map_err(|e| e.to_string())
            })
            .collect();
        // without the chunks cache, and with it (chunks sliced out of its subranges,
        // or copied where they straddle two)
        for cache in [0, 1 << 20] {
            let reader = BucketReader::new(
                Bucket::filesystem(tmp).unwrap(),
                1 << 20,
                std::time::Duration::ZERO,
            )
            .with_chunks_cache(cache);
            // With the cache the second read is answered from it (batches parsed
            // without a read), and must agree as the first did.
            let cost = std::sync::Arc::new(QueryCost::new(QueryLimits::default()));
            let count = cost.source("bucket");
            let mut before = cost.total();
            for read in ["first", "second"] {
                let got = rt().block_on(reader.fetch_chunks(
                    dir,
                    &[seg.len() as u64],
                    refs.to_vec(),
                    &count,
                ));
                agree(dir, &path, &want, refs, got)
                    .map_err(|e| format!("cache {cache}, {read} read: {e}"))?;
                let now = cost.total();
                if want.is_ok() {
                    let mut uniq = refs.to_vec();
                    uniq.sort_unstable();
                    uniq.dedup();
                    if now.chunks - before.chunks != uniq.len() as u64 {
                        return Err(format!("cache {cache}, {read} read: chunks miscounted"));
                    }
                    if cache > 0
                        && read == "second"
                        && now.object_requests != before.object_requests
                    {
                        return Err("the second read went to the bucket".into());
                    }
                }
                before = now;
            }
        }
        Ok(())
    }

    type Fetched = Result<HashMap<u64, RawChunk>, StoreError>;

    fn agree(
        dir: &str,
        path: &str,
        want: &Result<Vec<(Encoding, Vec<u8>)>, String>,
        refs: &[u64],
        got: Fetched,
    ) -> Result<(), String> {
        match (want, got) {
            (Ok(want), Ok(got)) => {
                for (r, w) in refs.iter().zip(want) {
                    let (e, d) = &got[r];
                    if (*e, &d[..]) != (w.0, &w.1[..]) {
                        return Err(format!("chunk {r:#x} differs"));
                    }
                }
                Ok(())
            }
            (Err(_), Err(e)) => {
                // The error names the block, the segment and a chunk's offset.
                // A corrupt chunk is corrupt, not a reason to retry.
                if e.kind() == strata_store::ErrorKind::Corrupt
                    && e.message()
                        .starts_with(&format!("block {dir}: {path}: corrupt at offset "))
                {
                    Ok(())
                } else {
                    Err(format!("unhelpful error: {e}"))
                }
            }
            (w, g) => Err(format!(
                "paths disagree: local {w:?}, bucket {:?}",
                g.map(|m| m.len())
            )),
        }
    }

    fn test_chunks() -> Vec<(Encoding, Vec<u8>)> {
        use strata_tsdb::chunkenc::XorChunk;
        let mut v = Vec::new();
        for i in 0..6i64 {
            let mut c = XorChunk::new();
            for j in 0..(20 * i + 1) {
                c.append(j * 15_000, (i * j) as f64);
            }
            v.push((Encoding::Xor, c.into_bytes()));
        }
        // Longer than the batch read's estimate: read again on its own.
        v.push((Encoding::Xor, (0..40_000u32).map(|i| i as u8).collect()));
        v.push((Encoding::Xor, vec![0, 0]));
        v
    }

    #[test]
    fn intact_chunks_read_the_same_both_ways() {
        let (tmp, dir, seg, refs) = segment_in_bucket(&test_chunks());
        both_paths_agree(tmp.path(), &dir, &seg, &refs).unwrap();
    }

    /// Chunks across several of the cache's 16000-byte subranges, some straddling two
    /// (copied out) and the rest sliced from one, read as the whole segment says.
    #[test]
    fn chunks_straddling_cached_subranges_read_the_same() {
        use strata_tsdb::chunkenc::XorChunk;
        let chunks: Vec<(Encoding, Vec<u8>)> = (0..400i64)
            .map(|i| {
                let mut c = XorChunk::new();
                for j in 0..(i % 120 + 1) {
                    c.append(j * 15_000 + i, (i * j) as f64 * 0.37);
                }
                (Encoding::Xor, c.into_bytes())
            })
            .collect();
        let (tmp, dir, seg, refs) = segment_in_bucket(&chunks);
        assert!(seg.len() as u64 > 3 * super::super::chunk_cache::SUBRANGE);
        both_paths_agree(tmp.path(), &dir, &seg, &refs).unwrap();
    }

    /// Before the one parser, a length near `u64::MAX` overflowed (a panic) and others
    /// asked the object store for gigabytes.
    #[test]
    fn corrupt_length_is_an_error_naming_the_block_and_offset() {
        let (tmp, dir, seg, refs) = segment_in_bucket(&test_chunks());
        let at = refs[2] as usize;
        for len in [
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            vec![0x80, 0x80, 0x80, 0x80, 0x04], // 1 GiB
            vec![0x80, 0x80, 0x80, 0x10],       // 32 MiB
        ] {
            let mut bad = seg.clone();
            bad[at..at + len.len()].copy_from_slice(&len);
            both_paths_agree(tmp.path(), &dir, &bad, &refs).unwrap();
            let reader = BucketReader::new(
                Bucket::filesystem(tmp.path()).unwrap(),
                1 << 20,
                std::time::Duration::ZERO,
            );
            let e = rt()
                .block_on(reader.fetch_chunks(
                    &dir,
                    &[bad.len() as u64],
                    refs.clone(),
                    &Counter::unaccounted(),
                ))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("block {dir}: ")) && e.contains(&format!("offset {at}:")),
                "{e}"
            );
        }
    }

    #[test]
    fn long_chunk_reads_are_bounded() {
        assert_eq!(long_chunk_range(8, 100, 1000), Ok(8..108));
        assert_eq!(long_chunk_range(900, 100, 1000), Ok(900..1000));
        assert!(long_chunk_range(901, 100, 1000)
            .unwrap_err()
            .contains("past the end"));
        assert!(long_chunk_range(8, u64::MAX, u64::MAX)
            .unwrap_err()
            .contains("limit"));
        assert!(long_chunk_range(u64::MAX, 16, u64::MAX).is_err());
        let big = MAX_CHUNK_READ + 1;
        assert!(long_chunk_range(8, big, 1 << 40)
            .unwrap_err()
            .contains("limit"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// Corrupted bytes anywhere after the segment header (flipped bytes, a random
        /// length at a chunk's start): never a panic, and the bucket's range reads agree
        /// with tsdb's reader of the whole segment.
        #[test]
        fn corrupt_segments_read_alike_both_ways(
            flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255), 0..4),
            length in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 1..11))),
        ) {
            let (tmp, dir, seg, refs) = segment_in_bucket(&test_chunks());
            let mut bad = seg.clone();
            for (i, x) in flips {
                let pos = 8 + i.index(bad.len() - 8);
                bad[pos] ^= x;
            }
            if let Some((i, len)) = length {
                let at = refs[i.index(refs.len())] as usize;
                let n = len.len().min(bad.len() - at);
                bad[at..at + n].copy_from_slice(&len[..n]);
            }
            let r = both_paths_agree(tmp.path(), &dir, &bad, &refs);
            proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }
}
