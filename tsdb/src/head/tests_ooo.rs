//! The out-of-order window: appends, the merged read path, block cuts, truncation and
//! WAL replay (segments and checkpoints) of out-of-order samples.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::block::Block;
use crate::wal::{FsyncPolicy, Record, RecordOwned, Wal, WalCompression, WalOptions};

const MIN: i64 = 60 * 1000;
const H: i64 = 60 * MIN;

fn head(window: i64) -> super::tests::TestHead {
    super::tests::disk_head(HeadOptions {
        out_of_order_time_window_ms: window,
        ..HeadOptions::default()
    })
}

fn series(h: &Head) -> HeadSeriesRef {
    h.get_or_create(&Labels::from_pairs([("__name__", "m"), ("job", "a")]))
        .0
}

/// A fixed pseudo-random permutation of `v`.
fn shuffled<T>(mut v: Vec<T>, seed: u64) -> Vec<T> {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// Every chunk sorted inside, chunks sorted and not overlapping, no repeated timestamp.
fn assert_clean(chunks: &[HeadChunk]) {
    let mut prev = i64::MIN;
    for c in chunks {
        assert!(
            c.min_time > prev,
            "chunk at {} overlaps one ending {prev}",
            c.min_time
        );
        let ts: Vec<i64> = XorIter::new(&c.data).map(|s| s.0).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
        assert_eq!((ts[0], *ts.last().unwrap()), (c.min_time, c.max_time));
        prev = c.max_time;
    }
}

#[test]
fn shuffled_samples_inside_the_window_read_back_sorted() {
    let h = head(30 * MIN);
    let r = series(&h);
    // the newest first, then 30 min of samples every 10 s in a shuffled order
    let newest = 10 * H;
    let want: Vec<(i64, f64)> = (0..=180)
        .map(|i| (newest - 30 * MIN + i * 10_000, i as f64 * 1.5))
        .collect();
    h.append(r, newest, want.last().unwrap().1).unwrap();
    for (t, v) in shuffled(want.clone(), 7) {
        h.append(r, t, v).unwrap();
    }
    let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
    assert_eq!(got[0].samples(), want);
    assert_clean(&got[0].chunks);
    // a narrower range merges only what it covers
    let part = h.select(&[], newest - 20 * MIN, newest - 10 * MIN).unwrap();
    assert_eq!(
        part[0].samples(),
        want.iter()
            .copied()
            .filter(|s| s.0 >= newest - 20 * MIN && s.0 <= newest - 10 * MIN)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        h.series_chunks(r, i64::MIN, i64::MAX).unwrap(),
        got[0].chunks,
        "the streaming read path merges the same way"
    );
    assert_eq!(h.min_time(), newest - 30 * MIN);
    assert_eq!(h.max_time(), newest);
}

#[test]
fn duplicates_outside_window_and_no_window() {
    let h = head(10 * MIN);
    let r = series(&h);
    for t in [0, 5 * MIN, 20 * MIN] {
        h.append(r, t, t as f64).unwrap();
    }
    // out of order, inside the window
    h.append(r, 15 * MIN, 1.0).unwrap();
    // the same sample again (out-of-order buffer, in-order chunk): accepted silently
    h.append(r, 15 * MIN, 1.0).unwrap();
    h.append(r, 20 * MIN, (20 * MIN) as f64).unwrap();
    // another value at a held timestamp: refused
    assert_eq!(
        h.append(r, 15 * MIN, 2.0),
        Err(AppendError::DuplicateTimestamp {
            t: 15 * MIN,
            last_t: 20 * MIN
        })
    );
    // beyond the window (20 min - 10 min)
    assert_eq!(
        h.append(r, 10 * MIN - 1, 2.0),
        Err(AppendError::TooOldForWindow {
            t: 10 * MIN - 1,
            window_ms: 10 * MIN
        })
    );
    assert_eq!(
        h.append(r, 10 * MIN - 1, 2.0).unwrap_err().reason(),
        "sample-timestamp-too-old"
    );
    h.append(r, 10 * MIN, 3.0).unwrap();
    assert_eq!(
        h.select(&[], 0, i64::MAX).unwrap()[0].samples(),
        vec![
            (0, 0.0),
            (5 * MIN, (5 * MIN) as f64),
            (10 * MIN, 3.0),
            (15 * MIN, 1.0),
            (20 * MIN, (20 * MIN) as f64)
        ]
    );
    assert_eq!(
        h.check_out_of_order(r, 10 * MIN, 3.0f64.to_bits()),
        Ok(false)
    );
    assert_eq!(
        h.check_out_of_order(r, 11 * MIN, 3.0f64.to_bits()),
        Ok(true)
    );
    assert!(h.check_out_of_order(r, 5 * MIN, 3.0f64.to_bits()).is_err());

    // no window: today's refusals
    let h = head(0);
    let r = series(&h);
    h.append(r, 20 * MIN, 1.0).unwrap();
    assert_eq!(
        h.append(r, 15 * MIN, 1.0),
        Err(AppendError::OutOfOrder {
            t: 15 * MIN,
            last_t: 20 * MIN
        })
    );
    // and turned on at run time
    h.set_out_of_order_window(10 * MIN);
    h.append(r, 15 * MIN, 1.0).unwrap();
    assert_eq!(
        h.select(&[], 0, i64::MAX).unwrap()[0].samples(),
        vec![(15 * MIN, 1.0), (20 * MIN, 1.0)]
    );
}

#[test]
fn a_float_at_a_histogram_timestamp_is_a_duplicate() {
    use crate::histogram::Histogram;
    let h = head(10 * MIN);
    let r = series(&h);
    let hist = Histogram {
        count: 1,
        zero_count: 1,
        ..Histogram::default()
    };
    for t in [MIN, 2 * MIN] {
        h.append_histogram(r, t, &hist).unwrap();
    }
    h.append(r, 3 * MIN, 1.0).unwrap();
    assert!(matches!(
        h.append(r, 2 * MIN, 1.0),
        Err(AppendError::DuplicateTimestamp { .. })
    ));
    // between the histograms: stored out of order, read back between them
    h.append(r, MIN + 1, 5.0).unwrap();
    let got = &h.select(&[], 0, i64::MAX).unwrap()[0];
    assert_eq!(got.samples(), vec![(MIN + 1, 5.0), (3 * MIN, 1.0)]);
    assert_eq!(
        got.histograms().iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![MIN, 2 * MIN]
    );
}

#[test]
fn buffers_seal_into_chunks_and_a_block_holds_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let h = head(2 * H);
    let r = series(&h);
    let other = h
        .get_or_create(&Labels::from_pairs([("__name__", "m"), ("job", "b")]))
        .0;
    // in order every 30 s for 2 h, then every 15 s in between, shuffled: many sealed
    // out-of-order chunks overlapping the in-order ones
    let inorder: Vec<(i64, f64)> = (0..240).map(|i| (i * 30_000, i as f64)).collect();
    let late: Vec<(i64, f64)> = (0..240)
        .map(|i| (i * 30_000 + 15_000, -(i as f64)))
        .collect();
    for &(t, v) in &inorder {
        h.append(r, t, v).unwrap();
        h.append(other, t, v).unwrap();
    }
    for (t, v) in shuffled(late.clone(), 3) {
        h.append(r, t, v).unwrap();
    }
    let mut want: Vec<(i64, f64)> = inorder.iter().chain(&late).copied().collect();
    want.sort_by_key(|s| s.0);
    // the in-order chunks and the out-of-order data are counted
    let mem = h.memory_usage();
    assert!(mem.chunk_bytes + mem.disk_chunk_bytes > 240 * 16 / 2);
    let meta = h.write_block(dir.path(), 0, 2 * H, None).unwrap().unwrap();
    assert_eq!(meta.stats.num_samples, 720);
    let b = Block::open(&dir.path().join(meta.ulid.to_string())).unwrap();
    let got = b.series_samples(&[], 0, 2 * H - 1).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, want);
    assert_eq!(got[1].1, inorder);
    let sel: Vec<_> = b
        .select(&[], 0, 2 * H)
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap();
    for s in &sel {
        let chunks: Vec<HeadChunk> = s
            .chunks
            .iter()
            .map(|m| {
                let (encoding, data) = b.chunks().chunk(m.chunk_ref).unwrap();
                HeadChunk {
                    min_time: m.min_time,
                    max_time: m.max_time,
                    encoding,
                    data: bytes::Bytes::copy_from_slice(data),
                }
            })
            .collect();
        assert_clean(&chunks);
    }
    // once the block is safe, truncation drops the out-of-order data with the rest
    h.truncate(2 * H);
    assert!(h.select(&[], i64::MIN, i64::MAX).unwrap().is_empty());
    assert_eq!(h.memory_usage().chunk_bytes, 0);
    // older than the cut block but inside the window (2 h behind the newest sample):
    // kept out of order, for a block of its own overlapping the cut one (the series,
    // emptied before the floor, was collected: created again)
    let r = series(&h);
    h.append(r, 2 * H - 1, 7.0).unwrap();
    h.append(r, 2 * H - 1, 7.0).unwrap();
    assert!(matches!(
        h.append(r, 2 * H - 1, 8.0),
        Err(AppendError::DuplicateTimestamp { .. })
    ));
    assert_eq!(
        h.append(r, -15_001, 0.0),
        Err(AppendError::TooOldForWindow {
            t: -15_001,
            window_ms: 2 * H
        })
    );
    assert_eq!(h.min_time(), 2 * H - 1);
    assert_eq!(
        h.select(&[], 0, i64::MAX).unwrap()[0].samples(),
        vec![(2 * H - 1, 7.0)]
    );
    let mut below = Vec::new();
    h.for_each_ooo_sample_before(2 * H, |r, s| below.push((r, s.to_vec())));
    assert_eq!(below, vec![(r, vec![(2 * H - 1, 7.0)])]);
    let meta = h.write_block(dir.path(), 0, 2 * H, None).unwrap().unwrap();
    assert_eq!(meta.stats.num_samples, 1);
    h.truncate_keeping_window(2 * H, 2 * H);
    assert!(h.select(&[], i64::MIN, i64::MAX).unwrap().is_empty());
}

#[test]
fn truncation_keeps_newer_out_of_order_samples() {
    let h = head(H);
    let r = series(&h);
    h.append(r, 3 * H, 0.0).unwrap();
    for (t, v) in [(2 * H + 10, 1.0), (2 * H + 20, 2.0), (3 * H - 5, 3.0)] {
        h.append(r, t, v).unwrap();
    }
    for i in 0..40 {
        // fills and seals a buffer across the cut
        h.append(r, 2 * H + 100 + i * 1000, i as f64).unwrap();
    }
    let before = h.select(&[], 2 * H + 30_000, i64::MAX).unwrap()[0].samples();
    h.truncate_keeping_window(2 * H + 30_000, 2 * H + 30_000);
    assert_eq!(
        h.select(&[], i64::MIN, i64::MAX).unwrap()[0].samples(),
        before
    );
    assert_eq!(h.min_time(), before[0].0);
}

/// What the ingester logs: series, then samples in arrival order.
fn log(wal: &mut Wal, refs: &[(u64, Labels)], samples: &[(u64, i64, f64)]) {
    let entries: Vec<(u64, &Labels)> = refs.iter().map(|(r, l)| (*r, l)).collect();
    wal.append(&[
        Record::Series { entries: &entries },
        Record::Samples { entries: samples },
    ])
    .unwrap();
}

/// A new head (no window: replay takes what the WAL has) from the WAL in `dir`.
fn replayed(dir: &std::path::Path) -> super::tests::TestHead {
    let h = head(0);
    replay_into(&h, dir);
    h
}

/// Replay the WAL in `dir` into `h` as the ingester does; the kinds of the records.
fn replay_into(h: &Head, dir: &std::path::Path) -> Vec<crate::wal::RecordKind> {
    let mut kinds = Vec::new();
    let mut interner = crate::labels::Interner::new();
    crate::wal::replay(dir, &mut interner, |rec| {
        kinds.push(rec.kind());
        match rec {
            RecordOwned::Series(es) => {
                for (r, l) in es {
                    h.create_with_ref(HeadSeriesRef(r), &l)?;
                }
            }
            RecordOwned::Samples(es) => {
                for (r, t, v) in es {
                    h.append_replay(HeadSeriesRef(r), t, v).unwrap();
                }
            }
            RecordOwned::OooSamples(es) => {
                for (r, t, v) in es {
                    assert!(h.append_below_floor(HeadSeriesRef(r), t, v, true).unwrap());
                }
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    kinds
}

#[test]
fn replay_from_segments_and_checkpoint_keeps_every_out_of_order_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 4096,
        fsync: FsyncPolicy::Never,
        compression: WalCompression::None,
    };
    let mut wal = Wal::open(tmp.path(), opts).unwrap();
    let h = head(H);
    let r = series(&h);
    let labels = vec![(r.0, Labels::from_pairs([("__name__", "m"), ("job", "a")]))];
    let all: Vec<(i64, f64)> = (0..300).map(|i| (H + i * 10_000, i as f64)).collect();
    let order = shuffled(all.clone(), 11);
    // the first half goes in, through the WAL, in a shuffled order
    let mut logged = Vec::new();
    for (t, v) in &order[..150] {
        h.append(r, *t, *v).unwrap();
        logged.push((r.0, *t, *v));
    }
    log(&mut wal, &labels, &logged);
    let want = |h: &Head| h.select(&[], i64::MIN, i64::MAX).unwrap()[0].samples();
    assert_eq!(want(&replayed(tmp.path())), want(&h));

    // a checkpoint of what the head holds (sorted, merged), then the second half
    let mut ck: Vec<(u64, i64, f64)> = Vec::new();
    h.for_each_sample_since(h.min_valid_block(), |r, s| {
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
        ck.extend(s.iter().map(|(t, v)| (r.0, *t, *v)));
    })
    .unwrap();
    assert_eq!(ck.len(), 150);
    let entries: Vec<(u64, &Labels)> = labels.iter().map(|(r, l)| (*r, l)).collect();
    wal.checkpoint([
        Record::Series { entries: &entries },
        Record::Samples { entries: &ck },
    ])
    .unwrap();
    logged.clear();
    for (t, v) in &order[150..] {
        h.append(r, *t, *v).unwrap();
        logged.push((r.0, *t, *v));
    }
    log(&mut wal, &labels, &logged);
    drop(wal);
    let back = replayed(tmp.path());
    assert_eq!(want(&back), all);
    assert_eq!(want(&h), all);
    assert_clean(&back.select(&[], i64::MIN, i64::MAX).unwrap()[0].chunks);
}

#[test]
fn below_floor_records_replay_whatever_the_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 1 << 20,
        fsync: FsyncPolicy::Never,
        compression: WalCompression::None,
    };
    let mut wal = Wal::open(tmp.path(), opts).unwrap();
    let labels = Labels::from_pairs([("__name__", "m"), ("job", "a")]);
    let entries = [(1u64, &labels)];
    let below = [(1u64, 10_000i64, 1.0), (1, 5_000, 2.0)];
    let plain = [(1u64, 9_000i64, 3.0), (1, 3 * H, 4.0)];
    wal.append(&[
        Record::Series { entries: &entries },
        Record::OooSamples { entries: &below },
        Record::Samples { entries: &plain },
    ])
    .unwrap();
    drop(wal);
    // a head whose floor (from local blocks) is at 2 h
    let h = head(0);
    h.truncate(2 * H);
    let kinds = replay_into(&h, tmp.path());
    use crate::wal::RecordKind;
    assert_eq!(
        kinds,
        [
            RecordKind::Series,
            RecordKind::OooSamples,
            RecordKind::Samples
        ]
    );
    // the plain sample below the floor is one a block has; the others are kept
    assert_eq!(
        h.select(&[], i64::MIN, i64::MAX).unwrap()[0].samples(),
        vec![(5_000, 2.0), (10_000, 1.0), (3 * H, 4.0)]
    );
    // replayed twice (a checkpoint overlapping segments): skipped
    assert_eq!(
        h.append_below_floor(HeadSeriesRef(1), 5_000, 2.0, true),
        Ok(false)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a model: a sample is kept iff inside the window and its timestamp is new
    /// (an equal value at a held timestamp is accepted, another refused); reads, blocks
    /// and replay give the model's samples in order.
    #[test]
    fn matches_a_model(ops in prop::collection::vec((0i64..400, 0u8..3), 1..300), window in 1i64..200) {
        let h = head(window * 1000);
        let r = series(&h);
        let mut model: BTreeMap<i64, u64> = BTreeMap::new();
        let mut max_t = i64::MIN;
        for (t, v) in ops {
            let (t, v) = (t * 1000, f64::from(v));
            let got = h.append(r, t, v);
            // Prometheus's order: newer is in order; beyond the window is too old even
            // when it repeats a held sample; else a held timestamp must hold this value
            let want = if max_t == i64::MIN || t > max_t {
                Ok(())
            } else if t < max_t - window * 1000 {
                Err("old")
            } else {
                match model.get(&t) {
                    Some(b) if *b != v.to_bits() => Err("dup"),
                    _ => Ok(()),
                }
            };
            match (&got, want) {
                (Ok(()), Ok(())) => {
                    model.insert(t, v.to_bits());
                    max_t = max_t.max(t);
                }
                (Err(AppendError::DuplicateTimestamp { .. }), Err("dup")) => {}
                (Err(AppendError::TooOldForWindow { .. }), Err("old")) => {}
                _ => prop_assert!(false, "{t} {v}: {got:?} vs {want:?}"),
            }
        }
        let want: Vec<(i64, f64)> = model.iter().map(|(t, b)| (*t, f64::from_bits(*b))).collect();
        let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
        prop_assert_eq!(got[0].samples(), want.clone());
        assert_clean(&got[0].chunks);
        let mut since = Vec::new();
        h.for_each_sample_since(i64::MIN, |_, s| since.extend_from_slice(s)).unwrap();
        prop_assert_eq!(since, want.clone());
        let d = h.series_chunks(r, 0, 200_000).unwrap();
        let part: Vec<_> = want.iter().copied().filter(|s| s.0 <= 200_000).collect();
        // whole chunks overlapping the range (merged ones cut to it)
        let got_part: Vec<_> = d
            .iter()
            .flat_map(|c| XorIter::new(&c.data))
            .filter(|s| s.0 <= 200_000)
            .collect();
        assert_clean(&d);
        prop_assert_eq!(got_part, part);
    }
}
