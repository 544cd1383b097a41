//! Closed chunks in the chunk files (`chunks_head/`): what a head with a directory
//! answers equals what an in-memory head answers, segments go once truncation is past
//! them, read errors surface as errors, and a failed write keeps the chunk in memory.

use super::chunk_files::{ChunkFiles, ChunkLoc, PREFIX_LEN};
use super::tests::{disk_head, TestHead};
use super::tests_histogram::hist;
use super::*;
use crate::block::Block;

const H: i64 = 60 * 60 * 1000;

fn ls(i: usize) -> Labels {
    Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())])
}

/// The same mix in both heads: floats over 5 h in 40 series, a series switching to
/// histograms, and out-of-order floats.
fn fill(h: &Head) {
    h.set_out_of_order_window(H);
    let refs: Vec<HeadSeriesRef> = (0..40).map(|i| h.get_or_create(&ls(i)).0).collect();
    for k in 0..1_200i64 {
        for (i, r) in refs.iter().enumerate() {
            let t = k * 15_000 + i as i64;
            if i == 7 && k >= 600 {
                h.append_histogram(*r, t, &hist(k as u64)).unwrap();
            } else {
                h.append(*r, t, (k * i as i64) as f64 * 0.5).unwrap();
            }
        }
    }
    // out of order, inside the window
    for k in 0..50i64 {
        h.append(refs[3], 1_150 * 15_000 + k * 1_000 + 500, -1.0)
            .unwrap();
    }
}

fn all_samples(h: &Head, since: i64) -> Vec<(HeadSeriesRef, Vec<(i64, f64)>)> {
    let mut out = Vec::new();
    h.for_each_sample_since(since, |r, s| out.push((r, s.to_vec())))
        .unwrap();
    out.sort_by_key(|x| x.0);
    out
}

/// Each series of the block cut from `[mint, maxt)`: labels and chunks as stored.
type BlockSeries = Vec<(Labels, Vec<(i64, i64, Encoding, Vec<u8>)>)>;

fn block_series(h: &Head, mint: i64, maxt: i64) -> BlockSeries {
    let dir = tempfile::tempdir().unwrap();
    let meta = h
        .write_block(dir.path(), mint, maxt, None)
        .unwrap()
        .unwrap();
    let b = Block::open(&dir.path().join(meta.ulid.to_string())).unwrap();
    b.select(&[], mint, maxt - 1)
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            let chunks = s
                .chunks
                .iter()
                .map(|c| {
                    let (enc, data) = b.chunks().chunk(c.chunk_ref).unwrap();
                    (c.min_time, c.max_time, enc, data.to_vec())
                })
                .collect();
            (s.labels, chunks)
        })
        .collect()
}

fn segment_files(h: &TestHead) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(h.chunks_dir().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_head_with_chunk_files_answers_as_one_in_memory() {
    let mem = Head::new(HeadOptions::default());
    let disk = disk_head(HeadOptions::default());
    fill(&mem);
    fill(&disk);
    let (m, d) = (mem.memory_usage(), disk.memory_usage());
    assert_eq!(m.disk_chunk_bytes, 0);
    assert!(
        d.disk_chunk_bytes > 40 * 1_000,
        "closed chunks are on disk: {d:?}"
    );
    assert!(
        d.chunk_bytes * 5 < m.chunk_bytes,
        "and not in memory: {d:?} vs {m:?}"
    );
    assert_eq!(d.chunk_bytes + d.disk_chunk_bytes, m.chunk_bytes);
    assert!(segment_files(&disk).len() > 10, "4 KiB segments");
    assert_eq!(disk.chunk_write_failures(), 0);
    for (mint, maxt) in [
        (i64::MIN, i64::MAX),
        (H, 2 * H),
        (4 * H + 1, 4 * H + 100_000),
        (2 * H + 30 * 60_000, 5 * H),
    ] {
        let a = mem.select(&[], mint, maxt).unwrap();
        let b = disk.select(&[], mint, maxt).unwrap();
        assert_eq!(a, b, "select [{mint}, {maxt}]");
        for s in &a {
            assert_eq!(
                mem.series_chunks(s.series_ref, mint, maxt).unwrap(),
                disk.series_chunks(s.series_ref, mint, maxt).unwrap()
            );
        }
    }
    assert_eq!(all_samples(&mem, 0), all_samples(&disk, 0));
    assert_eq!(all_samples(&mem, 3 * H), all_samples(&disk, 3 * H));
    let hists = |h: &Head| {
        let mut out = Vec::new();
        h.for_each_histogram_since(0, |r, s| out.push((r, s.to_vec())))
            .unwrap();
        out
    };
    assert_eq!(hists(&mem), hists(&disk));
    assert!(!hists(&disk).is_empty());
    assert_eq!(block_series(&mem, 0, 2 * H), block_series(&disk, 0, 2 * H));
    // a block range that straddles chunks and holds the out-of-order samples
    let mid = (4 * H + 30 * 60_000, 5 * H);
    assert_eq!(
        block_series(&mem, mid.0, mid.1),
        block_series(&disk, mid.0, mid.1)
    );
    // the out-of-order duplicate check reads the in-order chunk from disk
    let r = disk.get(&ls(5)).unwrap();
    let held = (15_000 * 100 + 5, (100 * 5) as f64 * 0.5);
    assert_eq!(
        disk.check_out_of_order(r, held.0, held.1.to_bits()),
        Ok(false)
    );
    assert!(disk
        .check_out_of_order(r, held.0, 1.25f64.to_bits())
        .is_err());
    assert_eq!(
        mem.check_out_of_order(r, held.0, 1.25f64.to_bits()),
        disk.check_out_of_order(r, held.0, 1.25f64.to_bits())
    );
}

/// Appends `k` at `k * 15 s` to each series for every `k` in `ks`.
fn append_counts(h: &Head, refs: &[HeadSeriesRef], ks: std::ops::Range<i64>) {
    for k in ks {
        for r in refs {
            h.append(*r, k * 15_000, k as f64).unwrap();
        }
    }
}

#[test]
fn truncation_deletes_segments_past_their_chunks() {
    let h = disk_head(HeadOptions::default());
    let refs: Vec<HeadSeriesRef> = (0..20).map(|i| h.get_or_create(&ls(i)).0).collect();
    append_counts(&h, &refs, 0..(6 * 240));
    let before = segment_files(&h);
    assert!(before.len() >= 8, "{before:?}");
    assert_eq!(before[0], "000001");
    let bytes_before = h.chunk_files_bytes();
    h.truncate(4 * H);
    let after = segment_files(&h);
    assert!(
        after.len() * 2 < before.len(),
        "{} of {} segments left",
        after.len(),
        before.len()
    );
    assert!(h.chunk_files_bytes() < bytes_before / 2);
    // the newest segments stay; what is left still reads
    assert_eq!(after.last(), before.last());
    let got = h.select(&[], 0, i64::MAX).unwrap();
    assert_eq!(got.len(), 20);
    for s in &got {
        let want: Vec<(i64, f64)> = (4 * 240..6 * 240).map(|k| (k * 15_000, k as f64)).collect();
        assert_eq!(s.samples(), want);
    }
    // past everything: every segment but the one being written goes
    append_counts(&h, &refs, (6 * 240)..(9 * 240));
    h.truncate(i64::MAX);
    h.truncate(i64::MAX);
    assert!(segment_files(&h).len() <= 1, "{:?}", segment_files(&h));
}

/// A head whose first closed chunk's bytes on disk can be damaged.
fn head_with_closed_chunks() -> (TestHead, HeadSeriesRef) {
    let h = disk_head(HeadOptions::default());
    let r = h.get_or_create(&ls(0)).0;
    for k in 0..480 {
        h.append(r, k * 15_000, k as f64).unwrap();
    }
    (h, r)
}

#[test]
fn a_damaged_or_missing_chunk_file_is_an_error_not_a_panic() {
    let (h, r) = head_with_closed_chunks();
    let seg = h.chunks_dir().unwrap().join("000001");
    // a flipped byte: the CRC finds it
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let e = h.select(&[], 0, i64::MAX).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("000001"), "{e}");
    assert!(h.series_chunks(r, 0, i64::MAX).is_err());
    assert!(h.for_each_sample_since(0, |_, _| {}).is_err());
    let dir = tempfile::tempdir().unwrap();
    assert!(h.write_block(dir.path(), 0, 2 * H, None).is_err());
    // the open chunk alone still reads
    let open = h.series_chunks(r, 479 * 15_000, i64::MAX).unwrap();
    assert_eq!(open.len(), 1);

    // cut short underneath (inside the mapped page that holds the chunks, which then
    // reads zeros past the end; a cut of whole pages would fault, as for Prometheus):
    // the CRC finds it
    let (h, r) = head_with_closed_chunks();
    let seg = h.chunks_dir().unwrap().join("000001");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(100)
        .unwrap();
    let e = h.series_chunks(r, 0, i64::MAX).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

/// The prefix `written_chunks` gives chunk `i`.
fn prefix(i: u32) -> [u8; PREFIX_LEN] {
    std::array::from_fn(|b| (b as u32 * 3 + i) as u8)
}

/// Chunk files of 4 KiB segments, mapped or read with `pread`, and 30 chunks of
/// 200–500 bytes written to them (several segments) with their locations.
fn written_chunks(mapped: bool) -> (tempfile::TempDir, ChunkFiles, Vec<(ChunkLoc, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunks_head");
    let files = if mapped {
        ChunkFiles::open(&path, 4096).unwrap()
    } else {
        ChunkFiles::open_unmapped(&path, 4096).unwrap()
    };
    let chunks: Vec<(ChunkLoc, Vec<u8>)> = (0..30u32)
        .map(|i| {
            let data: Vec<u8> = (0..200 + i * 10).map(|b| (b * 7 + i) as u8).collect();
            (files.write(&prefix(i), &data, i64::from(i)).unwrap(), data)
        })
        .collect();
    (dir, files, chunks)
}

#[test]
fn chunks_read_back_exactly_mapped_or_not() {
    for mapped in [true, false] {
        let (_dir, files, chunks) = written_chunks(mapped);
        let segs: std::collections::BTreeSet<u32> = chunks.iter().map(|c| c.0.seg).collect();
        assert!(segs.len() >= 3, "{segs:?}");
        let r = files.reader();
        for (i, (loc, data)) in chunks.iter().enumerate() {
            let (got, p) = r.read(*loc, data.len() as u32, mapped).unwrap();
            assert_eq!(&got[..], &data[..]);
            assert_eq!(p, prefix(i as u32));
            assert_eq!(r.read_prefix(*loc, mapped).unwrap(), prefix(i as u32));
        }
    }
}

#[test]
fn reads_span_finished_segments_and_the_one_being_written() {
    // a series' chunks in a finished segment and in the current one, which grows while
    // it is read: each read sees exactly what was written
    let h = disk_head(HeadOptions::default());
    let refs: Vec<HeadSeriesRef> = (0..4).map(|i| h.get_or_create(&ls(i)).0).collect();
    let mut want: Vec<Vec<(i64, f64)>> = vec![Vec::new(); refs.len()];
    for k in 0..1_000i64 {
        for (i, r) in refs.iter().enumerate() {
            // values that do not compress: chunks of ~1 KiB
            let (t, v) = (k * 15_000, ((k * 7_919 + i as i64) % 1_000) as f64 / 7.0);
            h.append(*r, t, v).unwrap();
            want[i].push((t, v));
        }
        if k % 97 == 0 {
            for (i, s) in h.select(&[], 0, i64::MAX).unwrap().iter().enumerate() {
                assert_eq!(s.samples(), want[i]);
            }
        }
    }
    assert!(segment_files(&h).len() > 3, "{:?}", segment_files(&h));
    for (i, s) in h.select(&[], 0, i64::MAX).unwrap().iter().enumerate() {
        assert_eq!(s.samples(), want[i]);
    }
}

#[test]
fn chunks_held_by_a_reader_survive_their_segment_deleted() {
    let h = disk_head(HeadOptions::default());
    let refs: Vec<HeadSeriesRef> = (0..20).map(|i| h.get_or_create(&ls(i)).0).collect();
    append_counts(&h, &refs, 0..(3 * 240));
    let held = h.select(&[], 0, i64::MAX).unwrap();
    let before = segment_files(&h);
    // every closed chunk's segment goes
    append_counts(&h, &refs, (3 * 240)..(6 * 240));
    h.truncate(5 * H);
    let after = segment_files(&h);
    assert!(
        before.iter().all(|s| !after.contains(s)),
        "{before:?} all deleted: {after:?}"
    );
    let want: Vec<(i64, f64)> = (0..3 * 240).map(|k| (k * 15_000, k as f64)).collect();
    assert_eq!(held.len(), 20);
    for s in &held {
        assert_eq!(s.samples(), want);
    }
}

/// The segment file holding the chunk at `loc`, open for writing.
fn segment_for_writing(dir: &tempfile::TempDir, loc: ChunkLoc) -> std::fs::File {
    let path = dir
        .path()
        .join("chunks_head")
        .join(format!("{:06}", loc.seg));
    std::fs::OpenOptions::new().write(true).open(path).unwrap()
}

#[test]
fn a_cut_short_segment_read_with_pread_is_an_io_error() {
    let (dir, files, chunks) = written_chunks(false);
    let (loc, data) = &chunks[0];
    segment_for_writing(&dir, *loc).set_len(100).unwrap();
    let e = files
        .reader()
        .read(*loc, data.len() as u32, true)
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    // a flipped byte in a mapped segment: the CRC finds it
    let (dir, files, chunks) = written_chunks(true);
    let (loc, data) = &chunks[1];
    let f = segment_for_writing(&dir, *loc);
    let at = u64::from(loc.off) + PREFIX_LEN as u64 + 5;
    std::os::unix::fs::FileExt::write_all_at(&f, &[data[5] ^ 1], at).unwrap();
    let e = files
        .reader()
        .read(*loc, data.len() as u32, true)
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[test]
fn a_chunk_that_cannot_be_written_stays_in_memory() {
    let h = disk_head(HeadOptions::default());
    // no directory: the first segment cannot be created
    std::fs::remove_dir_all(h.chunks_dir().unwrap()).unwrap();
    let r = h.get_or_create(&ls(0)).0;
    let want: Vec<(i64, f64)> = (0..480).map(|k| (k * 15_000, k as f64)).collect();
    for (t, v) in &want {
        h.append(r, *t, *v).unwrap();
    }
    assert_eq!(h.chunk_write_failures(), 3);
    assert_eq!(h.memory_usage().disk_chunk_bytes, 0);
    assert_eq!(h.select(&[], 0, i64::MAX).unwrap()[0].samples(), want);
    // once the directory is back, later chunks go to disk; both kinds read together
    std::fs::create_dir_all(h.chunks_dir().unwrap()).unwrap();
    let more: Vec<(i64, f64)> = (480..720).map(|k| (k * 15_000, k as f64)).collect();
    for (t, v) in &more {
        h.append(r, *t, *v).unwrap();
    }
    assert!(h.memory_usage().disk_chunk_bytes > 0);
    let all: Vec<(i64, f64)> = want.iter().chain(&more).copied().collect();
    assert_eq!(h.select(&[], 0, i64::MAX).unwrap()[0].samples(), all);
    // truncating the in-memory chunks keeps the disk ones right
    h.truncate(H);
    assert_eq!(
        h.select(&[], 0, i64::MAX).unwrap()[0].samples(),
        all[240..].to_vec()
    );
}

#[test]
fn open_clears_what_a_previous_process_left() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks_head");
    std::fs::create_dir_all(&chunks).unwrap();
    std::fs::write(chunks.join("000001"), b"old").unwrap();
    std::fs::write(chunks.join("000007"), b"old").unwrap();
    let h = Head::open(HeadOptions {
        chunks_dir: Some(chunks.clone()),
        ..HeadOptions::default()
    })
    .unwrap();
    assert_eq!(std::fs::read_dir(&chunks).unwrap().count(), 0);
    let r = h.get_or_create(&ls(0)).0;
    for k in 0..240 {
        h.append(r, k * 15_000, k as f64).unwrap();
    }
    assert_eq!(std::fs::read_dir(&chunks).unwrap().count(), 1);
    assert_eq!(h.select(&[], 0, i64::MAX).unwrap()[0].samples().len(), 240);
}

#[test]
fn concurrent_appends_and_reads_across_segments() {
    let h = std::sync::Arc::new(disk_head(HeadOptions::default()));
    let refs: Vec<HeadSeriesRef> = (0..64).map(|i| h.get_or_create(&ls(i)).0).collect();
    std::thread::scope(|s| {
        for part in refs.chunks(16) {
            let h = &h;
            s.spawn(move || {
                for k in 0..600 {
                    for r in part {
                        // no time window: the threads run at their own pace
                        h.append_validated(*r, k * 15_000, (k as u64 * r.0) as f64)
                            .unwrap();
                    }
                    if k % 100 == 0 {
                        h.select(&[], 0, i64::MAX).unwrap();
                    }
                }
            });
        }
    });
    for s in h.select(&[], 0, i64::MAX).unwrap() {
        let want: Vec<(i64, f64)> = (0..600)
            .map(|k| (k * 15_000, (k as u64 * s.series_ref.0) as f64))
            .collect();
        assert_eq!(s.samples(), want);
    }
}

#[test]
fn a_closed_chunk_is_24_bytes_and_long_spans_are_cut_to_fit() {
    assert_eq!(std::mem::size_of::<series::ClosedChunk>(), 24);
    // every active series holds one: with the label pointer and the mutex a 168-byte
    // `MemSeries`, a 176-byte glibc chunk (208 before session 10), and no list of
    // closed chunks besides (only the newest one's record)
    assert!(std::mem::size_of::<series::SeriesState>() <= 152);
    // a chunk range longer than a `ClosedChunk` spans (a merge of sparse 90-day data):
    // chunks are cut to fit, every sample kept, times exact
    use crate::dedup::Sample;
    const DAY: i64 = 24 * H;
    let samples: Vec<(i64, Sample)> = (0..=90)
        .step_by(10)
        .map(|d| (d * DAY + 1, Sample::Float(d as f64)))
        .collect();
    let chunks = cut_chunks(&samples, i64::MAX);
    assert!(chunks.len() > 1);
    let mut got = Vec::new();
    for c in &chunks {
        let s: Vec<(i64, f64)> = crate::chunkenc::XorIter::new(&c.data).collect();
        assert_eq!((c.min_time, c.max_time), (s[0].0, s[s.len() - 1].0));
        assert!(c.max_time - c.min_time <= u32::MAX as i64);
        got.extend(s);
    }
    let want: Vec<(i64, f64)> = (0..=90)
        .step_by(10)
        .map(|d| (d * DAY + 1, d as f64))
        .collect();
    assert_eq!(got, want);
}

/// xorshift values: integer-valued counters (a few bits per sample) for the first
/// `narrow` samples, then random floats (≈ 9 bytes per sample).
fn mixed_values(n: i64, narrow: i64) -> Vec<(i64, f64)> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut c = 0.0;
    (0..n)
        .map(|k| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c += (x % 10) as f64;
            let v = if k % 120 < narrow {
                c
            } else {
                f64::from_bits(x >> 2)
            };
            (k * 15_000, v)
        })
        .collect()
}

#[test]
fn the_open_chunk_is_written_out_as_it_grows() {
    // narrow values first, so the first spill reserves little and the wide values that
    // follow outgrow it (the reservation moves); every read in between must see the
    // chunk whole, as an in-memory head does
    let mem = Head::new(HeadOptions::default());
    let disk = disk_head(HeadOptions::default());
    for h in [&mem, &*disk] {
        h.set_out_of_order_window(H);
    }
    let (rm, rd) = (mem.get_or_create(&ls(0)).0, disk.get_or_create(&ls(0)).0);
    let want = mixed_values(400, 70);
    let mut held_max = 0;
    for (i, (t, v)) in want.iter().enumerate() {
        mem.append(rm, *t, *v).unwrap();
        disk.append(rd, *t, *v).unwrap();
        let d = disk.memory_usage();
        held_max = held_max.max(d.chunk_bytes);
        if i % 7 == 0 || i % 120 == 119 {
            let a = mem.select(&[], 0, i64::MAX).unwrap();
            let b = disk.select(&[], 0, i64::MAX).unwrap();
            assert_eq!(a, b, "after {} samples", i + 1);
            assert_eq!(b[0].samples(), want[..=i].to_vec());
            assert_eq!(
                d.chunk_bytes + d.disk_chunk_bytes,
                mem.memory_usage().chunk_bytes
            );
        }
    }
    // the open chunk never holds much more than SPILL_AT bytes (+ one sample) in
    // memory, where a whole chunk of wide values is ≈ 1 KiB
    assert!(held_max <= 56 + 19 + 2, "held {held_max} bytes");
    assert!(mem.memory_usage().chunk_bytes > 1_500);
    assert_eq!(disk.chunk_write_failures(), 0);
    // the out-of-order duplicate check reads a spilled open chunk: same answers
    let (t, v) = want[390];
    for h in [&mem, &*disk] {
        let r = h.get_or_create(&ls(0)).0;
        h.append(r, t, v).unwrap();
        assert!(
            h.append(r, t, v + 1.0).is_err(),
            "another value at a held timestamp"
        );
    }
    // blocks and the WAL checkpoint's view are the same too
    assert_eq!(block_series(&mem, 0, 2 * H), block_series(&disk, 0, 2 * H));
    assert_eq!(all_samples(&mem, 0), all_samples(&disk, 0));
}

#[test]
fn a_failed_write_of_an_open_chunk_keeps_every_sample() {
    // the chunk files' directory goes away while a chunk is open with its front on
    // disk: the next segment cannot be created, so moving the reservation fails and the
    // chunk stays in memory (its front read back) when it closes
    let disk = disk_head(HeadOptions::default());
    let r = disk.get_or_create(&ls(0)).0;
    let want = mixed_values(360, 70);
    for (t, v) in &want[..80] {
        disk.append(r, *t, *v).unwrap();
    }
    assert!(disk.memory_usage().disk_chunk_bytes > 0, "front written");
    // other series' open chunks take up the 4 KiB segments: this chunk's later
    // reservations need new ones
    for i in 1..10 {
        let filler = disk.get_or_create(&ls(i)).0;
        for (t, v) in mixed_values(80, 0) {
            disk.append(filler, t, v).unwrap();
        }
    }
    std::fs::remove_dir_all(disk.chunks_dir().unwrap()).unwrap();
    for (t, v) in &want[80..] {
        disk.append(r, *t, *v).unwrap();
    }
    assert!(disk.chunk_write_failures() > 0);
    let got = disk.select(
        &[Matcher::new(crate::matcher::MatchOp::Equal, "i", "0").unwrap()],
        0,
        i64::MAX,
    );
    assert_eq!(got.unwrap()[0].samples(), want);
}

/// Appends `k` at `k * 15 s` for every `k` in `ks` to each series, with values that do
/// not compress (chunks of ~1 KiB), and records them in `want`.
fn append_noisy(
    h: &Head,
    refs: &[HeadSeriesRef],
    ks: std::ops::Range<i64>,
    want: &mut [Vec<(i64, f64)>],
) {
    for k in ks {
        for (i, r) in refs.iter().enumerate() {
            let (t, v) = (k * 15_000, ((k * 7_919 + i as i64) % 1_000) as f64 / 7.0);
            h.append(*r, t, v).unwrap();
            want[i].push((t, v));
        }
    }
}

#[test]
fn closed_chunks_are_walked_back_through_their_records() {
    // a series keeps only its newest closed chunk's record; each chunk's record names
    // the one before it. Chunks on disk, then in memory (writes failing), then on disk
    // again, then after a 2-hour gap: every read, duplicate check and truncation
    // matches what was appended.
    let h = disk_head(HeadOptions::default());
    h.set_out_of_order_window(H);
    let refs: Vec<HeadSeriesRef> = (0..8).map(|i| h.get_or_create(&ls(i)).0).collect();
    let mut want = vec![Vec::new(); refs.len()];
    append_noisy(&h, &refs, 0..240, &mut want);
    assert_eq!(h.chunk_write_failures(), 0);
    // no directory: writes needing a new segment fail, those chunks stay in memory
    std::fs::remove_dir_all(h.chunks_dir().unwrap()).unwrap();
    append_noisy(&h, &refs, 240..480, &mut want);
    assert!(h.chunk_write_failures() > 4, "{}", h.chunk_write_failures());
    std::fs::create_dir_all(h.chunks_dir().unwrap()).unwrap();
    append_noisy(&h, &refs, 480..720, &mut want);
    append_noisy(&h, &refs, 1_200..1_440, &mut want);
    let mem = h.memory_usage();
    assert!(mem.disk_chunk_bytes > 8 * 4 * 900, "{mem:?}");
    // beyond the open chunks' ≤ 128 bytes each, some closed chunks of ~1 KiB
    assert!(
        mem.chunk_bytes > 8 * 128 + 3 * 900,
        "closed chunks in memory: {mem:?}"
    );

    let samples = |mint: i64, maxt: i64| -> Vec<Vec<(i64, f64)>> {
        h.select(&[], mint, maxt)
            .unwrap()
            .iter()
            .map(|s| in_range_of(&s.samples(), mint, maxt))
            .collect()
    };
    let expect = |mint: i64, maxt: i64| -> Vec<Vec<(i64, f64)>> {
        want.iter()
            .map(|w| in_range_of(w, mint, maxt))
            .filter(|w| !w.is_empty())
            .collect()
    };
    let k = |k: i64| k * 15_000;
    for (mint, maxt) in [
        (i64::MIN, i64::MAX),
        (k(100), k(500)),
        (k(250), k(260)),
        (k(700), k(1_300)),
        (k(0), k(0)),
    ] {
        assert_eq!(samples(mint, maxt), expect(mint, maxt), "[{mint}, {maxt}]");
    }
    // inside the gap: no series has a chunk there
    assert!(h.select_refs(&[], k(730), k(1_190)).is_empty());
    assert!(h.select(&[], k(730), k(1_190)).unwrap().is_empty());

    // the out-of-order duplicate check finds the sample in a chunk on disk, in memory
    // and in the open one; in the gap there is none
    let r = refs[3];
    for kk in [50, 300, 600, 1_430] {
        let (t, v) = want[3][want[3].iter().position(|s| s.0 == k(kk)).unwrap()];
        assert_eq!(h.check_out_of_order(r, t, v.to_bits()), Ok(false), "k {kk}");
        assert!(h.check_out_of_order(r, t, (v + 1.0).to_bits()).is_err());
    }
    assert_eq!(h.check_out_of_order(r, k(900), 1.0f64.to_bits()), Ok(true));

    // truncation inside the in-memory chunks, then past them: what is left is a suffix
    // holding every sample from the truncation time on
    for cut in [k(300), k(650), k(1_300)] {
        h.truncate(cut);
        let got = samples(i64::MIN, i64::MAX);
        for (g, w) in got.iter().zip(&want) {
            assert!(w.ends_with(g), "a suffix");
            assert!(g.len() < w.len());
            assert_eq!(
                g.iter().filter(|s| s.0 >= cut).count(),
                w.iter().filter(|s| s.0 >= cut).count()
            );
        }
        assert_eq!(got.len(), want.len());
        let dir = tempfile::tempdir().unwrap();
        let blocks = h.write_block(dir.path(), cut, k(1_440) + 1, None).unwrap();
        assert!(blocks.is_some());
    }
}

fn in_range_of(s: &[(i64, f64)], mint: i64, maxt: i64) -> Vec<(i64, f64)> {
    s.iter()
        .filter(|(t, _)| *t >= mint && *t <= maxt)
        .copied()
        .collect()
}
