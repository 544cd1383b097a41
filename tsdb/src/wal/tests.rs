use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::record::{frame_into, record_crc, write_header};
use super::*;
use crate::labels::Labels;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Uncompressed, so tests can predict frame bytes; the compression tests use
/// [`opts_c`].
fn opts(segment_size: u64, fsync: FsyncPolicy) -> WalOptions {
    opts_c(segment_size, fsync, WalCompression::None)
}

fn opts_c(segment_size: u64, fsync: FsyncPolicy, compression: WalCompression) -> WalOptions {
    WalOptions {
        segment_size,
        fsync,
        compression,
    }
}

/// A comparable form: floats as bits.
#[derive(Debug, PartialEq, Eq)]
enum Norm {
    Series(Vec<(u64, String)>),
    Samples(Vec<(u64, i64, u64)>),
    /// Other kinds: the kind and the encoded payload.
    Encoded(u8, Vec<u8>),
}

fn norm(r: &RecordOwned) -> Norm {
    match r {
        RecordOwned::Series(s) => {
            Norm::Series(s.iter().map(|(r, l)| (*r, l.to_string())).collect())
        }
        RecordOwned::Samples(s) => {
            Norm::Samples(s.iter().map(|(r, t, v)| (*r, *t, v.to_bits())).collect())
        }
        other => {
            let mut b = Vec::new();
            other.encode(&mut b);
            Norm::Encoded(other.kind() as u8, b)
        }
    }
}

/// The borrowed record of `r`; `series` holds the borrowed entries of a Series record.
fn as_record<'a>(r: &'a RecordOwned, series: &'a [(u64, &'a Labels)]) -> Record<'a> {
    match r {
        RecordOwned::Series(_) => Record::Series { entries: series },
        RecordOwned::Samples(s) => Record::Samples { entries: s },
        RecordOwned::OooSamples(s) => Record::OooSamples { entries: s },
        RecordOwned::Exemplars(e) => Record::Exemplars { entries: e },
        RecordOwned::Histograms {
            custom_buckets,
            entries,
        } => Record::Histograms {
            custom_buckets: *custom_buckets,
            entries,
        },
        RecordOwned::FloatHistograms {
            custom_buckets,
            entries,
        } => Record::FloatHistograms {
            custom_buckets: *custom_buckets,
            entries,
        },
    }
}

fn series_entries(r: &RecordOwned) -> Vec<(u64, &Labels)> {
    match r {
        RecordOwned::Series(s) => s.iter().map(|(r, l)| (*r, l)).collect(),
        _ => Vec::new(),
    }
}

fn norms(rs: &[RecordOwned]) -> Vec<Norm> {
    rs.iter().map(norm).collect()
}

fn log_owned(wal: &mut Wal, r: &RecordOwned) {
    let e = series_entries(r);
    wal.log(&as_record(r, &e)).unwrap()
}

fn frame_owned(r: &RecordOwned) -> Vec<u8> {
    let mut buf = Vec::new();
    let e = series_entries(r);
    frame_into(&mut buf, &as_record(r, &e)).unwrap();
    buf
}

fn raw_frame(version: u8, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    write_header(
        &mut b,
        version,
        kind,
        payload.len() as u32,
        record_crc(kind, payload),
    );
    b.extend_from_slice(payload);
    b
}

fn series_rec(first: u64, n: u64) -> RecordOwned {
    RecordOwned::Series(
        (first..first + n)
            .map(|r| {
                (
                    r,
                    Labels::from_pairs([
                        ("__name__", "http_requests_total".to_string()),
                        ("instance", format!("host-{r}:9100")),
                        ("job", "node".to_string()),
                        ("utf8", "ünïcödé ✓".to_string()),
                    ]),
                )
            })
            .collect(),
    )
}

fn samples_rec(seed: u64, n: usize) -> RecordOwned {
    let specials = [
        STALE_NAN,
        f64::NAN.to_bits(),
        0x7ff8_dead_beef_0001, // NaN with payload
        (-0.0f64).to_bits(),
        f64::INFINITY.to_bits(),
        f64::NEG_INFINITY.to_bits(),
        1, // subnormal
        1.5f64.to_bits(),
    ];
    RecordOwned::Samples(
        (0..n)
            .map(|i| {
                let k = seed.wrapping_mul(31).wrapping_add(i as u64);
                let r = match k % 7 {
                    0 => u64::MAX - k,
                    1 => 0,
                    _ => k % 1000,
                };
                let t = match k % 11 {
                    0 => i64::MIN + k as i64,
                    1 => i64::MAX - k as i64,
                    2 => -(k as i64) * 15_000,
                    _ => 1_700_000_000_000 + (k as i64) * 15_000,
                };
                let v = f64::from_bits(specials[(k % specials.len() as u64) as usize]);
                (r, t, v)
            })
            .collect(),
    )
}

fn workload(n: u64) -> Vec<RecordOwned> {
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                series_rec(i * 10, 1 + i % 4)
            } else {
                samples_rec(i, 1 + (i % 40) as usize)
            }
        })
        .collect()
}

fn replay_all(dir: &Path) -> Result<(Vec<RecordOwned>, ReplayStats)> {
    let mut out = Vec::new();
    let mut interner = Interner::new();
    let stats = replay(dir, &mut interner, |r| {
        out.push(r);
        Ok(())
    })?;
    Ok((out, stats))
}

fn seg(dir: &Path, i: u64) -> PathBuf {
    dir.join(segment_name(i))
}

#[test]
fn round_trip_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let recs = workload(300);
    let mut wal = Wal::open(&dir, opts(4096, FsyncPolicy::Never)).unwrap();
    for r in &recs {
        log_owned(&mut wal, r);
    }
    assert!(
        wal.current_segment() >= 3,
        "segments: {}",
        wal.current_segment()
    );
    assert_eq!(wal.stats().records, 300);
    let on_disk: u64 = list_dir(&dir)
        .unwrap()
        .segments
        .iter()
        .map(|(_, p)| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(wal.size(), on_disk);
    assert_eq!(wal.bytes_written(), on_disk);
    for (_, p) in list_dir(&dir).unwrap().segments {
        assert!(fs::metadata(&p).unwrap().len() <= 4096, "{}", p.display());
    }
    drop(wal);

    let (got, stats) = replay_all(&dir).unwrap();
    assert_eq!(norms(&got), norms(&recs));
    assert_eq!(stats.records, 300);
    assert_eq!(stats.truncated, None);
    assert_eq!(
        stats.segments,
        list_dir(&dir).unwrap().segments.len() as u64
    );
    let want_samples: usize = recs
        .iter()
        .map(|r| {
            if let RecordOwned::Samples(s) = r {
                s.len()
            } else {
                0
            }
        })
        .sum();
    assert_eq!(stats.samples, want_samples as u64);
    // the stale marker's exact bits survived
    assert!(got.iter().any(
        |r| matches!(r, RecordOwned::Samples(s) if s.iter().any(|x| x.2.to_bits() == STALE_NAN))
    ));
}

#[test]
fn decoded_labels_are_interned() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(tmp.path(), WalOptions::default()).unwrap();
    log_owned(&mut wal, &series_rec(1, 3));
    drop(wal);
    let mut interner = Interner::new();
    let mut all = Vec::new();
    replay(tmp.path(), &mut interner, |r| {
        all.push(r);
        Ok(())
    })
    .unwrap();
    let RecordOwned::Series(s) = &all[0] else {
        panic!()
    };
    let a = &s[0].1.as_slice()[0].name;
    let b = &s[1].1.as_slice()[0].name;
    assert!(crate::labels::Symbol::ptr_eq(a, b));
    // 4 names + 3 values shared by all series + 3 instance values
    assert_eq!(interner.len(), 4 + 3 + 3);
}

#[test]
fn samples_encoding_is_compact_and_owned_matches_borrowed() {
    let entries: Vec<(u64, i64, f64)> = (0..1000)
        .map(|i| (100 + i % 50, 1_700_000_000_000 + i as i64 * 10, i as f64))
        .collect();
    let mut a = Vec::new();
    Record::Samples { entries: &entries }.encode(&mut a);
    assert!(a.len() < 1000 * 12, "{} bytes", a.len());
    let mut b = Vec::new();
    RecordOwned::Samples(entries.clone()).encode(&mut b);
    assert_eq!(a, b);
    let got = RecordOwned::decode(RecordKind::Samples, &a, &mut Interner::new()).unwrap();
    assert_eq!(norm(&got), norm(&RecordOwned::Samples(entries)));
    // empty records round-trip too
    for r in [RecordOwned::Samples(vec![]), RecordOwned::Series(vec![])] {
        let mut buf = Vec::new();
        r.encode(&mut buf);
        assert_eq!(
            RecordOwned::decode(r.kind(), &buf, &mut Interner::new()).unwrap(),
            r
        );
    }
}

#[test]
fn decode_rejects_bad_payloads() {
    let mut i = Interner::new();
    let mut buf = Vec::new();
    series_rec(1, 2).encode(&mut buf);
    buf.push(0);
    assert!(RecordOwned::decode(RecordKind::Series, &buf, &mut i).is_err());
    // unsorted labels
    let mut p = Vec::new();
    crate::varint::put_uvarint(&mut p, 1);
    crate::varint::put_uvarint(&mut p, 7);
    crate::varint::put_uvarint(&mut p, 2);
    for s in ["b", "1", "a", "2"] {
        crate::varint::put_uvarint(&mut p, s.len() as u64);
        p.extend_from_slice(s.as_bytes());
    }
    assert_eq!(
        RecordOwned::decode(RecordKind::Series, &p, &mut i)
            .unwrap_err()
            .0,
        "label names not sorted and unique"
    );
    // a count far larger than the payload must not allocate it
    let mut p = Vec::new();
    crate::varint::put_uvarint(&mut p, u64::MAX);
    assert!(RecordOwned::decode(RecordKind::Samples, &p, &mut i).is_err());
    assert!(RecordOwned::decode(RecordKind::Series, &p, &mut i).is_err());
    // varint errors keep their texts through crate::varint
    let truncated = [0x80u8];
    let overflow = [0xffu8; 10];
    for (p, want) in [
        (&truncated[..], "truncated varint"),
        (&overflow[..], "varint overflows 64 bits"),
    ] {
        assert_eq!(
            RecordOwned::decode(RecordKind::Samples, p, &mut i),
            Err(DecodeError(want))
        );
    }
}

/// Write `n` records in one segment; returns (segment path, file bytes, start of last record).
fn single_segment(dir: &Path, recs: &[RecordOwned]) -> (PathBuf, Vec<u8>, u64) {
    let mut wal = Wal::open(dir, opts(DEFAULT_SEGMENT_SIZE, FsyncPolicy::Never)).unwrap();
    for r in &recs[..recs.len() - 1] {
        log_owned(&mut wal, r);
    }
    let last_start = wal.bytes_written();
    log_owned(&mut wal, &recs[recs.len() - 1]);
    assert_eq!(wal.current_segment(), 0);
    drop(wal);
    let p = seg(dir, 0);
    let bytes = fs::read(&p).unwrap();
    (p, bytes, last_start)
}

#[test]
fn torn_tail_at_every_offset_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recs = workload(20);
    let (p, bytes, last_start) = single_segment(dir, &recs);
    assert!(bytes.len() as u64 - last_start > HEADER_LEN as u64);

    // a cut exactly at the record boundary is a clean log
    fs::write(&p, &bytes[..last_start as usize]).unwrap();
    let (got, stats) = replay_all(dir).unwrap();
    assert_eq!(norms(&got), norms(&recs[..19]));
    assert_eq!(stats.truncated, None);

    for cut in last_start + 1..bytes.len() as u64 {
        fs::write(&p, &bytes[..cut as usize]).unwrap();
        let (got, stats) = replay_all(dir).unwrap();
        assert_eq!(norms(&got), norms(&recs[..19]), "cut at {cut}");
        assert_eq!(
            stats.truncated,
            Some((p.clone(), last_start)),
            "cut at {cut}"
        );
        assert_eq!(fs::metadata(&p).unwrap().len(), last_start);
        // replay after repair is clean
        let (again, stats) = replay_all(dir).unwrap();
        assert_eq!(again.len(), 19);
        assert_eq!(stats.truncated, None);
    }
}

#[test]
fn garbage_after_last_record_is_truncated_and_writing_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recs = workload(20);
    let (p, bytes, _) = single_segment(dir, &recs);
    let full = bytes.len() as u64;

    let mut huge_len = raw_frame(FRAME_VERSION, 2, b"x");
    huge_len[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_crc = raw_frame(FRAME_VERSION, 2, b"payload");
    bad_crc[6] ^= 1;
    let garbages: Vec<Vec<u8>> = vec![
        vec![0u8; 4096], // zero-filled tail (power loss)
        vec![0u8; 3],    // partial header
        (0..1000u32).map(|i| (i * 7919 % 251) as u8).collect(), // noise
        huge_len,
        bad_crc,
        raw_frame(7, 1, b"unknown version, half written")[..20].to_vec(),
    ];
    for g in &garbages {
        let mut b = bytes.clone();
        b.extend_from_slice(g);
        fs::write(&p, &b).unwrap();
        let (got, stats) = replay_all(dir).unwrap();
        assert_eq!(norms(&got), norms(&recs));
        assert_eq!(stats.truncated, Some((p.clone(), full)));
        assert_eq!(fs::metadata(&p).unwrap().len(), full);
    }

    // reopen (after replay, as the ingester does), write more, replay old + new
    let more = workload(5);
    let mut wal = Wal::open(dir, opts(DEFAULT_SEGMENT_SIZE, FsyncPolicy::Always)).unwrap();
    assert_eq!(wal.current_segment(), 1);
    for r in &more {
        log_owned(&mut wal, r);
    }
    drop(wal);
    let (got, stats) = replay_all(dir).unwrap();
    let mut want = recs.clone();
    want.extend(more);
    assert_eq!(norms(&got), norms(&want));
    assert_eq!(stats.segments, 2);
}

#[test]
fn torn_tail_before_empty_segments_is_still_repaired() {
    // the ingester opened the WAL (creating an empty segment) before replaying
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recs = workload(10);
    let (p, bytes, last_start) = single_segment(dir, &recs);
    fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    let wal = Wal::open(dir, WalOptions::default()).unwrap();
    assert_eq!(wal.current_segment(), 1);
    drop(wal);
    let (got, stats) = replay_all(dir).unwrap();
    assert_eq!(norms(&got), norms(&recs[..9]));
    assert_eq!(stats.truncated, Some((p, last_start)));
    // and the empty segment is reused by the next open
    assert_eq!(
        Wal::open(dir, WalOptions::default())
            .unwrap()
            .current_segment(),
        1
    );
}

#[test]
fn corruption_in_older_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recs = workload(100);
    let mut wal = Wal::open(dir, opts(2048, FsyncPolicy::Never)).unwrap();
    for r in &recs {
        log_owned(&mut wal, r);
    }
    assert!(wal.current_segment() >= 2);
    drop(wal);
    let p0 = seg(dir, 0);
    let orig = fs::read(&p0).unwrap();
    let second = frame_owned(&recs[0]).len() as u64;

    // a flipped bit in the second record's payload
    let mut b = orig.clone();
    b[second as usize + HEADER_LEN + 1] ^= 0x10;
    fs::write(&p0, &b).unwrap();
    match replay_all(dir) {
        Err(Error::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, p0);
            assert_eq!(offset, second);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("want Corrupt, got {other:?}"),
    }
    // a truncated older segment
    fs::write(&p0, &orig[..orig.len() - 1]).unwrap();
    assert!(matches!(replay_all(dir), Err(Error::Corrupt { file, .. }) if file == p0));
    // nothing was truncated by the failed replays
    assert_eq!(fs::metadata(&p0).unwrap().len(), orig.len() as u64 - 1);

    // a checksummed payload that does not decode is corruption even in the last segment
    fs::write(&p0, &orig).unwrap();
    let last = list_dir(dir).unwrap().segments.last().unwrap().clone();
    let mut b = fs::read(&last.1).unwrap();
    let off = b.len() as u64;
    b.extend(raw_frame(FRAME_VERSION, RecordKind::Samples as u8, &[5, 1]));
    fs::write(&last.1, &b).unwrap();
    match replay_all(dir) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (last.1.clone(), off))
        }
        other => panic!("want Corrupt, got {other:?}"),
    }
}

#[test]
fn missing_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::open(dir, opts(1024, FsyncPolicy::Never)).unwrap();
    for r in &workload(60) {
        log_owned(&mut wal, r);
    }
    assert!(wal.current_segment() >= 3);
    drop(wal);
    fs::remove_file(seg(dir, 1)).unwrap();
    let err = replay_all(dir).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, .. } if *file == seg(dir, 2)),
        "{err}"
    );
}

#[test]
fn unknown_version_and_kind_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recs = workload(4);
    let (p, mut bytes, _) = single_segment(dir, &recs[..2]);
    bytes.extend(raw_frame(9, 1, b"a record from the future"));
    bytes.extend(raw_frame(FRAME_VERSION, 99, b"a kind from the future"));
    bytes.extend(raw_frame(200, 0, b""));
    bytes.extend(frame_owned(&recs[2]));
    bytes.extend(frame_owned(&recs[3]));
    fs::write(&p, &bytes).unwrap();
    let (got, stats) = replay_all(dir).unwrap();
    assert_eq!(norms(&got), norms(&recs));
    assert_eq!(stats.skipped_unknown_version, 2);
    assert_eq!(stats.skipped_unknown_kind, 1);
    assert_eq!(stats.records, 4);
    assert_eq!(stats.truncated, None);
}

#[test]
fn oversized_record_gets_its_own_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::open(dir, opts(256, FsyncPolicy::Never)).unwrap();
    let small = samples_rec(1, 2);
    let big = samples_rec(2, 500);
    log_owned(&mut wal, &small);
    log_owned(&mut wal, &big);
    log_owned(&mut wal, &small);
    assert_eq!(wal.current_segment(), 2);
    assert!(fs::metadata(seg(dir, 1)).unwrap().len() > 256);
    drop(wal);
    let (got, _) = replay_all(dir).unwrap();
    assert_eq!(norms(&got), norms(&[small.clone(), big, small]));
}

#[test]
fn fsync_policy_and_group_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = workload(10);
    let entries: Vec<Vec<(u64, i64, f64)>> = recs
        .iter()
        .filter_map(|r| {
            if let RecordOwned::Samples(s) = r {
                Some(s.clone())
            } else {
                None
            }
        })
        .collect();
    let batch: Vec<Record> = entries
        .iter()
        .map(|e| Record::Samples { entries: e })
        .collect();

    let mut wal = Wal::open(
        tmp.path().join("a"),
        opts(DEFAULT_SEGMENT_SIZE, FsyncPolicy::Always),
    )
    .unwrap();
    let f0 = wal.fsyncs();
    wal.log_batch(&batch).unwrap();
    assert_eq!(wal.fsyncs(), f0 + 1, "one fsync per batch");
    wal.log(&batch[0]).unwrap();
    assert_eq!(wal.fsyncs(), f0 + 2);
    wal.sync().unwrap();
    assert_eq!(wal.fsyncs(), f0 + 2, "nothing to sync");
    wal.append(&batch).unwrap();
    assert_eq!(wal.fsyncs(), f0 + 2, "append never syncs");
    wal.sync().unwrap();
    assert_eq!(wal.fsyncs(), f0 + 3);
    assert!(wal.last_fsync_duration() > std::time::Duration::ZERO);

    let mut wal = Wal::open(
        tmp.path().join("b"),
        opts(DEFAULT_SEGMENT_SIZE, FsyncPolicy::Never),
    )
    .unwrap();
    let f0 = wal.fsyncs();
    wal.log_batch(&batch).unwrap();
    wal.log(&batch[0]).unwrap();
    assert_eq!(wal.fsyncs(), f0);
    drop(wal);
    let (got, _) = replay_all(&tmp.path().join("b")).unwrap();
    assert_eq!(got.len(), batch.len() + 1);
}

#[test]
fn open_continues_in_a_new_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert_eq!(
        Wal::open(dir, WalOptions::default())
            .unwrap()
            .current_segment(),
        0
    );
    // nothing written: the empty segment is reused
    let mut wal = Wal::open(dir, WalOptions::default()).unwrap();
    assert_eq!(wal.current_segment(), 0);
    log_owned(&mut wal, &samples_rec(0, 3));
    assert_eq!(wal.cut_segment().unwrap(), 1);
    assert_eq!(
        wal.cut_segment().unwrap(),
        1,
        "an empty segment is not cut again"
    );
    drop(wal);
    let wal = Wal::open(dir, WalOptions::default()).unwrap();
    assert_eq!(wal.current_segment(), 1);
    drop(wal);
    assert_eq!(replay_all(dir).unwrap().0.len(), 1);
    // replaying a directory that does not exist yields nothing
    let (got, stats) = replay_all(&dir.join("nope")).unwrap();
    assert!(got.is_empty());
    assert_eq!(stats, ReplayStats::default());
}

fn checkpoint_owned(wal: &mut Wal, recs: &[RecordOwned]) -> u64 {
    let series: Vec<Vec<(u64, &Labels)>> = recs.iter().map(series_entries).collect();
    wal.checkpoint(recs.iter().zip(&series).map(|(r, s)| as_record(r, s)))
        .unwrap()
}

#[test]
fn checkpoint_replaces_covered_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::open(dir, opts(2048, FsyncPolicy::Always)).unwrap();
    for r in &workload(80) {
        log_owned(&mut wal, r);
    }
    let before = wal.current_segment();
    assert!(before >= 2);

    // the head keeps a few series and the samples it still needs
    let kept = vec![series_rec(1, 3), samples_rec(7, 20), samples_rec(8, 3)];
    let n = checkpoint_owned(&mut wal, &kept);
    assert_eq!(n, before + 1);
    assert_eq!(wal.current_segment(), n);
    let l = list_dir(dir).unwrap();
    assert_eq!(
        l.checkpoints.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![n]
    );
    assert_eq!(l.segments.iter().map(|s| s.0).collect::<Vec<_>>(), vec![n]);
    assert!(l.tmp.is_empty());
    assert!(dir.join(format!("checkpoint.{n:08}/00000000")).exists());

    let later = workload(7);
    for r in &later {
        log_owned(&mut wal, r);
    }
    let on_disk: u64 = fs::metadata(seg(dir, n)).unwrap().len()
        + fs::metadata(dir.join(format!("checkpoint.{n:08}/00000000")))
            .unwrap()
            .len();
    assert_eq!(wal.size(), on_disk);

    let (got, stats) = replay_all(dir).unwrap();
    let mut want = kept.clone();
    want.extend(later.iter().cloned());
    assert_eq!(norms(&got), norms(&want));
    assert_eq!(stats.checkpoint, Some(n));
    assert_eq!(stats.segments, 1);

    // a second checkpoint removes the first; an empty checkpoint is valid
    let n2 = wal.checkpoint(std::iter::empty()).unwrap();
    assert_eq!(n2, n + 1);
    let l = list_dir(dir).unwrap();
    assert_eq!(
        l.checkpoints.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![n2]
    );
    assert_eq!(l.segments.iter().map(|s| s.0).collect::<Vec<_>>(), vec![n2]);
    drop(wal);
    let (got, stats) = replay_all(dir).unwrap();
    assert!(got.is_empty());
    assert_eq!(stats.checkpoint, Some(n2));
}

/// A flush right after a periodic head cut checkpoints twice with nothing written in
/// between: the second gets the next number and replaces the first (it used to fail
/// with "checkpoint.N already exists").
#[test]
fn checkpoint_twice_with_nothing_written_between() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::open(dir, opts(2048, FsyncPolicy::Always)).unwrap();
    for r in &workload(20) {
        log_owned(&mut wal, r);
    }
    let first = vec![series_rec(1, 3), samples_rec(7, 20)];
    let n = checkpoint_owned(&mut wal, &first);
    let second = vec![series_rec(1, 2)];
    let n2 = checkpoint_owned(&mut wal, &second);
    assert_eq!(n2, n + 1);
    let l = list_dir(dir).unwrap();
    assert_eq!(
        l.checkpoints.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![n2]
    );
    assert_eq!(l.segments.iter().map(|s| s.0).collect::<Vec<_>>(), vec![n2]);
    drop(wal);
    let (got, stats) = replay_all(dir).unwrap();
    assert_eq!(norms(&got), norms(&second));
    assert_eq!(stats.checkpoint, Some(n2));
}

#[test]
fn large_checkpoint_spans_several_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::open(dir, opts(1024, FsyncPolicy::Never)).unwrap();
    let kept = workload(50);
    let n = checkpoint_owned(&mut wal, &kept);
    assert!(dir.join(format!("checkpoint.{n:08}/00000002")).exists());
    drop(wal);
    let (got, _) = replay_all(dir).unwrap();
    assert_eq!(norms(&got), norms(&kept));
}

#[test]
fn crash_before_checkpoint_rename_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recs = workload(40);
    let mut wal = Wal::open(dir, opts(1024, FsyncPolicy::Always)).unwrap();
    for r in &recs {
        log_owned(&mut wal, r);
    }
    // simulate: cut, then crash while writing checkpoint.N.tmp
    let n = wal.cut_segment().unwrap();
    drop(wal);
    let t = dir.join(format!("checkpoint.{n:08}.tmp"));
    fs::create_dir(&t).unwrap();
    let mut partial = frame_owned(&series_rec(1, 1));
    partial.truncate(partial.len() / 2);
    fs::write(t.join("00000000"), &partial).unwrap();

    let (got, stats) = replay_all(dir).unwrap();
    assert_eq!(norms(&got), norms(&recs));
    assert_eq!(stats.checkpoint, None);

    let mut wal = Wal::open(dir, opts(1024, FsyncPolicy::Always)).unwrap();
    assert!(!t.exists(), "stale .tmp removed on open");
    // and a checkpoint now works
    let kept = vec![series_rec(1, 2)];
    let n2 = checkpoint_owned(&mut wal, &kept);
    assert!(n2 >= n);
    drop(wal);
    assert_eq!(norms(&replay_all(dir).unwrap().0), norms(&kept));
}

#[test]
fn crash_after_checkpoint_rename_before_deletes_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::open(dir, opts(1024, FsyncPolicy::Always)).unwrap();
    let first = workload(30);
    for r in &first {
        log_owned(&mut wal, r);
    }
    let cp1 = vec![series_rec(1, 5)];
    let n1 = checkpoint_owned(&mut wal, &cp1);
    let second = workload(30);
    for r in &second {
        log_owned(&mut wal, r);
    }
    // keep copies of everything the next checkpoint will delete
    let saved: Vec<(PathBuf, Vec<u8>)> = list_dir(dir)
        .unwrap()
        .segments
        .iter()
        .map(|(_, p)| (p.clone(), fs::read(p).unwrap()))
        .collect();
    let cp1_dir = dir.join(format!("checkpoint.{n1:08}"));
    let cp1_bytes = fs::read(cp1_dir.join("00000000")).unwrap();

    let cp2 = vec![series_rec(1, 5), samples_rec(3, 10)];
    let n2 = checkpoint_owned(&mut wal, &cp2);
    let third = workload(3);
    for r in &third {
        log_owned(&mut wal, r);
    }
    drop(wal);

    // "crash" in the middle of the deletes: put back the old checkpoint and some
    // covered segments
    fs::create_dir(&cp1_dir).unwrap();
    fs::write(cp1_dir.join("00000000"), &cp1_bytes).unwrap();
    for (p, b) in saved.iter().step_by(2) {
        if !p.exists() {
            fs::write(p, b).unwrap();
        }
    }
    let mut want = cp2.clone();
    want.extend(third.iter().cloned());
    let (got, stats) = replay_all(dir).unwrap();
    assert_eq!(norms(&got), norms(&want));
    assert_eq!(stats.checkpoint, Some(n2));

    // open finishes the deletes
    let wal = Wal::open(dir, WalOptions::default()).unwrap();
    let l = list_dir(dir).unwrap();
    assert_eq!(l.checkpoints.len(), 1);
    assert!(l.segments.iter().all(|(i, _)| *i >= n2));
    drop(wal);
    assert_eq!(norms(&replay_all(dir).unwrap().0), norms(&want));
}

#[test]
fn checkpoint_without_its_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::open(dir, WalOptions::default()).unwrap();
    log_owned(&mut wal, &samples_rec(1, 1));
    let n = wal.checkpoint(std::iter::empty()).unwrap();
    drop(wal);
    fs::remove_file(seg(dir, n)).unwrap();
    assert!(matches!(replay_all(dir), Err(Error::Corrupt { .. })));
}

fn replay_is_ok_or_corrupt(dir: &Path) -> std::result::Result<(), TestCaseError> {
    match replay_all(dir) {
        Ok(_) | Err(Error::Corrupt { .. }) => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!("unexpected error: {e}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_bytes_as_last_segment_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(seg(tmp.path(), 0), &bytes).unwrap();
        // the only segment is the last one: any damage is a torn tail
        let (_, stats) = replay_all(tmp.path()).unwrap();
        if let Some((_, off)) = stats.truncated {
            prop_assert_eq!(fs::metadata(seg(tmp.path(), 0)).unwrap().len(), off);
        }
    }

    #[test]
    fn random_bytes_as_older_segment_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(seg(tmp.path(), 0), &bytes).unwrap();
        fs::write(seg(tmp.path(), 1), frame_owned(&samples_rec(1, 3))).unwrap();
        replay_is_ok_or_corrupt(tmp.path())?;
    }

    #[test]
    fn random_checksummed_payloads_never_panic(
        kind in 0u8..4,
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = raw_frame(FRAME_VERSION, kind, &payload);
        b.extend(tail);
        fs::write(seg(tmp.path(), 0), &b).unwrap();
        replay_is_ok_or_corrupt(tmp.path())?;
    }

    #[test]
    fn samples_round_trip(entries in proptest::collection::vec((any::<u64>(), any::<i64>(), any::<u64>()), 0..64)) {
        let e: Vec<(u64, i64, f64)> = entries.iter().map(|&(r, t, v)| (r, t, f64::from_bits(v))).collect();
        let mut buf = Vec::new();
        Record::Samples { entries: &e }.encode(&mut buf);
        let got = RecordOwned::decode(RecordKind::Samples, &buf, &mut Interner::new()).unwrap();
        let RecordOwned::Samples(got) = got else { panic!() };
        let got: Vec<(u64, i64, u64)> = got.iter().map(|&(r, t, v)| (r, t, v.to_bits())).collect();
        prop_assert_eq!(got, entries);
    }

    #[test]
    fn series_round_trip(sets in proptest::collection::vec(
        (any::<u64>(), proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "\\PC{1,12}", 0..6)),
        0..16,
    )) {
        let owned: Vec<(u64, Labels)> = sets.iter().map(|(r, m)| (*r, Labels::from_pairs(m.iter()))).collect();
        let rec = RecordOwned::Series(owned);
        let mut buf = Vec::new();
        rec.encode(&mut buf);
        let got = RecordOwned::decode(RecordKind::Series, &buf, &mut Interner::new()).unwrap();
        prop_assert_eq!(got, rec);
    }
}

// ---- compression ----------------------------------------------------------------------

const ALL_COMPRESSIONS: [WalCompression; 3] = [
    WalCompression::None,
    WalCompression::Snappy,
    WalCompression::Zstd,
];

/// The version byte and offset of every frame in a segment file.
fn frame_versions(p: &Path) -> Vec<(u64, u8)> {
    let b = fs::read(p).unwrap();
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + HEADER_LEN <= b.len() {
        let len = u32::from_le_bytes(b[off + 2..off + 6].try_into().unwrap()) as usize;
        out.push((off as u64, b[off]));
        off += HEADER_LEN + len;
    }
    out
}

fn all_versions(dir: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    for (_, p) in list_dir(dir).unwrap().segments {
        v.extend(frame_versions(&p).into_iter().map(|(_, v)| v));
    }
    v
}

/// What remote write of one scrape looks like: consecutive refs, one timestamp, counter
/// values that grow slowly.
fn scrape_rec(scrape: i64, series: u64) -> RecordOwned {
    RecordOwned::Samples(
        (0..series)
            .map(|r| {
                (
                    r,
                    1_700_000_000_000 + scrape * 15_000,
                    (r * 1000 + scrape as u64 * (r % 7)) as f64,
                )
            })
            .collect(),
    )
}

fn version_of(c: WalCompression) -> u8 {
    match c {
        WalCompression::None => FRAME_VERSION,
        WalCompression::Snappy => FRAME_VERSION_SNAPPY,
        WalCompression::Zstd => FRAME_VERSION_ZSTD,
    }
}

#[test]
fn every_compression_round_trips_segments_and_checkpoints() {
    for c in ALL_COMPRESSIONS {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut recs = workload(150);
        recs.extend((0..20).map(|i| scrape_rec(i, 300)));
        let mut wal = Wal::open(dir, opts_c(8192, FsyncPolicy::Never, c)).unwrap();
        for r in &recs[..100] {
            log_owned(&mut wal, r);
        }
        // the checkpoint carries the first 100 records, written under the same setting
        checkpoint_owned(&mut wal, &recs[..100]);
        for r in &recs[100..] {
            log_owned(&mut wal, r);
        }
        assert!(wal.current_segment() >= 2, "{c:?}");
        drop(wal);

        let (got, stats) = replay_all(dir).unwrap();
        assert_eq!(norms(&got), norms(&recs), "{c:?}");
        assert_eq!(stats.truncated, None);
        assert_eq!(stats.skipped_unknown_version, 0);
        let l = list_dir(dir).unwrap();
        let mut versions = all_versions(dir);
        versions.extend(all_versions(&l.checkpoints.last().unwrap().1));
        // every frame is either compressed with the setting or stored plain because
        // compressing did not shrink it; the scrapes always shrink
        assert!(
            versions
                .iter()
                .all(|v| *v == version_of(c) || *v == FRAME_VERSION),
            "{c:?}: {versions:?}"
        );
        assert!(versions.contains(&version_of(c)), "{c:?}: {versions:?}");
    }
}

#[test]
fn mixed_compression_across_restarts_replays_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut all = Vec::new();
    let order = [
        WalCompression::Zstd,
        WalCompression::None,
        WalCompression::Snappy,
        WalCompression::Zstd,
        WalCompression::Snappy,
        WalCompression::None,
    ];
    for (i, c) in order.into_iter().enumerate() {
        // each restart replays what the earlier settings wrote, then writes its own
        let (got, stats) = replay_all(dir).unwrap();
        assert_eq!(norms(&got), norms(&all), "restart {i} ({c:?})");
        assert_eq!(stats.truncated, None);
        let mut wal = Wal::open(dir, opts_c(4096, FsyncPolicy::Never, c)).unwrap();
        let mut recs = workload(20 + i as u64);
        recs.extend((0..5).map(|s| scrape_rec(s + 10 * i as i64, 100)));
        for r in &recs {
            log_owned(&mut wal, r);
        }
        all.extend(recs);
        if i == 2 {
            // a checkpoint under snappy of everything so far; segments after it mix on
            checkpoint_owned(&mut wal, &all);
        }
    }
    let (got, _) = replay_all(dir).unwrap();
    assert_eq!(norms(&got), norms(&all));
    let l = list_dir(dir).unwrap();
    assert_eq!(l.checkpoints.len(), 1);
    assert!(all_versions(&l.checkpoints[0].1).contains(&FRAME_VERSION_SNAPPY));
    let versions = all_versions(dir);
    for v in [FRAME_VERSION, FRAME_VERSION_SNAPPY, FRAME_VERSION_ZSTD] {
        assert!(versions.contains(&v), "version {v} missing: {versions:?}");
    }
}

#[test]
fn compression_shrinks_the_wal() {
    let mut sizes = Vec::new();
    for c in ALL_COMPRESSIONS {
        let tmp = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(
            tmp.path(),
            opts_c(DEFAULT_SEGMENT_SIZE, FsyncPolicy::Never, c),
        )
        .unwrap();
        log_owned(&mut wal, &series_rec(0, 1000));
        for s in 0..20 {
            log_owned(&mut wal, &scrape_rec(s, 1000));
        }
        assert_eq!(wal.bytes_written(), wal.size());
        sizes.push(wal.bytes_written());
    }
    // 28 bytes per sample uncompressed; repetitive scrapes compress well
    assert!(sizes[1] < sizes[0], "{sizes:?}");
    assert!(sizes[2] < sizes[1], "{sizes:?}");
}

#[test]
fn a_record_that_does_not_shrink_is_stored_plain() {
    for c in [WalCompression::Snappy, WalCompression::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(tmp.path(), opts_c(1 << 20, FsyncPolicy::Never, c)).unwrap();
        let empty = RecordOwned::Samples(Vec::new());
        log_owned(&mut wal, &empty);
        log_owned(&mut wal, &scrape_rec(0, 200));
        drop(wal);
        assert_eq!(
            all_versions(tmp.path()),
            vec![FRAME_VERSION, version_of(c)],
            "{c:?}"
        );
        let (got, _) = replay_all(tmp.path()).unwrap();
        assert_eq!(norms(&got), norms(&[empty, scrape_rec(0, 200)]));
    }
}

#[test]
fn torn_compressed_tail_at_every_offset_is_truncated() {
    for c in [WalCompression::Snappy, WalCompression::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let recs: Vec<RecordOwned> = (0..4).map(|s| scrape_rec(s, 50)).collect();
        let mut wal = Wal::open(dir, opts_c(1 << 20, FsyncPolicy::Never, c)).unwrap();
        for r in &recs[..3] {
            log_owned(&mut wal, r);
        }
        let last_start = wal.bytes_written();
        log_owned(&mut wal, &recs[3]);
        drop(wal);
        let p = seg(dir, 0);
        let bytes = fs::read(&p).unwrap();
        assert_eq!(bytes[last_start as usize], version_of(c));
        for cut in last_start + 1..bytes.len() as u64 {
            fs::write(&p, &bytes[..cut as usize]).unwrap();
            let (got, stats) = replay_all(dir).unwrap();
            assert_eq!(norms(&got), norms(&recs[..3]), "{c:?} cut at {cut}");
            assert_eq!(stats.truncated, Some((p.clone(), last_start)));
        }
    }
}

#[test]
fn corrupt_compressed_frame_is_caught_by_the_crc() {
    for c in [WalCompression::Snappy, WalCompression::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let recs: Vec<RecordOwned> = (0..40).map(|s| scrape_rec(s, 50)).collect();
        let mut wal = Wal::open(dir, opts_c(1024, FsyncPolicy::Never, c)).unwrap();
        for r in &recs {
            log_owned(&mut wal, r);
        }
        assert!(wal.current_segment() >= 2, "{c:?}");
        drop(wal);

        // damage inside an older segment's second (compressed) frame: an error naming it
        let p0 = seg(dir, 0);
        let orig = fs::read(&p0).unwrap();
        let frames = frame_versions(&p0);
        let (off, v) = frames[1];
        assert_eq!(v, version_of(c));
        let mut b = orig.clone();
        b[off as usize + HEADER_LEN + 3] ^= 0x04;
        fs::write(&p0, &b).unwrap();
        match replay_all(dir) {
            Err(Error::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!((file, offset), (p0.clone(), off), "{c:?}");
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("{c:?}: want Corrupt, got {other:?}"),
        }
        fs::write(&p0, &orig).unwrap();

        // the same damage in the last segment's last frame: a torn tail, cut off
        let (_, last) = list_dir(dir).unwrap().segments.last().unwrap().clone();
        let frames = frame_versions(&last);
        let (off, _) = *frames.last().unwrap();
        let mut b = fs::read(&last).unwrap();
        let n = b.len();
        b[n - 2] ^= 0x80;
        fs::write(&last, &b).unwrap();
        let (got, stats) = replay_all(dir).unwrap();
        assert_eq!(stats.truncated, Some((last.clone(), off)), "{c:?}");
        assert_eq!(norms(&got), norms(&recs[..recs.len() - 1]), "{c:?}");
    }
}

#[test]
fn checksummed_compressed_payload_that_does_not_decompress_is_corrupt() {
    for v in [FRAME_VERSION_SNAPPY, FRAME_VERSION_ZSTD] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (p, mut b, _) = single_segment(dir, &workload(3));
        let off = b.len() as u64;
        // a valid zstd magic with a broken frame, and a snappy length over its input
        let junk: &[u8] = if v == FRAME_VERSION_ZSTD {
            &[0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x10, 0xff, 0xff, 0xff]
        } else {
            &[0x80, 0x80, 0x04, 0x00]
        };
        b.extend(raw_frame(v, RecordKind::Samples as u8, junk));
        fs::write(&p, &b).unwrap();
        match replay_all(dir) {
            Err(Error::Corrupt { file, offset, .. }) => assert_eq!((file, offset), (p, off)),
            other => panic!("version {v}: want Corrupt, got {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_checksummed_compressed_payloads_never_panic(
        version in 1u8..=3,
        kind in 1u8..3,
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(seg(tmp.path(), 0), raw_frame(version, kind, &payload)).unwrap();
        replay_is_ok_or_corrupt(tmp.path())?;
    }

    #[test]
    fn compressed_frames_round_trip(
        c in prop_oneof![Just(WalCompression::Snappy), Just(WalCompression::Zstd)],
        entries in proptest::collection::vec((0u64..50, any::<i64>(), any::<u64>()), 0..200),
    ) {
        let e: Vec<(u64, i64, f64)> = entries.iter().map(|&(r, t, v)| (r, t, f64::from_bits(v))).collect();
        let tmp = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(tmp.path(), opts_c(1 << 20, FsyncPolicy::Never, c)).unwrap();
        wal.log(&Record::Samples { entries: &e }).unwrap();
        drop(wal);
        let (got, _) = replay_all(tmp.path()).unwrap();
        prop_assert_eq!(norms(&got), norms(&[RecordOwned::Samples(e)]));
    }
}

// ---- native histogram records (types 7-10) --------------------------------------------

fn hist(i: i64) -> crate::histogram::Histogram {
    use crate::histogram::{CounterResetHint, Histogram, Span};
    Histogram {
        counter_reset_hint: if i == 0 {
            CounterResetHint::CounterReset
        } else {
            CounterResetHint::NotCounterReset
        },
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: 2,
        count: 12 + 3 * i as u64,
        sum: if i == 5 {
            f64::from_bits(STALE_NAN)
        } else {
            0.25 * i as f64
        },
        positive_spans: vec![
            Span {
                offset: -2,
                length: 2,
            },
            Span {
                offset: 3,
                length: 1,
            },
        ],
        negative_spans: vec![Span {
            offset: 0,
            length: 1,
        }],
        positive_buckets: vec![4, -1, i],
        negative_buckets: vec![3],
        custom_values: vec![],
    }
}

fn histogram_recs() -> Vec<RecordOwned> {
    use crate::histogram::{FloatHistogram, Span};
    let ints: Vec<RefHistogram> = (0..40)
        .map(|i| (i as u64 % 3 + 7, 1000 * i, hist(i)))
        .collect();
    let floats: Vec<RefFloatHistogram> = (0..20)
        .map(|i| (9, 500 * i - 3, hist(i).to_float()))
        .collect();
    let custom = FloatHistogram {
        schema: -53,
        count: 3.5,
        sum: 1.0,
        positive_spans: vec![Span {
            offset: 0,
            length: 2,
        }],
        positive_buckets: vec![1.5, 2.0],
        custom_values: vec![0.1, 0.5, 2.5],
        ..Default::default()
    };
    let mut int_custom = hist(1);
    int_custom.schema = -53;
    int_custom.negative_spans.clear();
    int_custom.negative_buckets.clear();
    int_custom.custom_values = vec![1.0, 2.0, 4.0, 8.0, 16.0];
    vec![
        series_rec(7, 3),
        RecordOwned::Histograms {
            custom_buckets: false,
            entries: ints,
        },
        RecordOwned::FloatHistograms {
            custom_buckets: false,
            entries: floats,
        },
        RecordOwned::Histograms {
            custom_buckets: true,
            entries: vec![(8, 5, int_custom)],
        },
        RecordOwned::FloatHistograms {
            custom_buckets: true,
            entries: vec![(8, 6, custom)],
        },
        RecordOwned::Histograms {
            custom_buckets: false,
            entries: vec![],
        },
    ]
}

#[test]
fn histogram_records_use_prometheus_record_types() {
    let kinds: Vec<u8> = histogram_recs()[1..5]
        .iter()
        .map(|r| r.kind() as u8)
        .collect();
    assert_eq!(kinds, [7, 8, 9, 10]);
    for k in 7..=10 {
        assert_eq!(RecordKind::from_u8(k).map(|k| k as u8), Some(k));
    }
}

#[test]
fn histogram_records_round_trip_every_compression() {
    for c in [
        WalCompression::None,
        WalCompression::Snappy,
        WalCompression::Zstd,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let recs = histogram_recs();
        let mut wal = Wal::open(&dir, opts_c(2048, FsyncPolicy::Never, c)).unwrap();
        for r in &recs {
            log_owned(&mut wal, r);
        }
        drop(wal);
        let (got, stats) = replay_all(&dir).unwrap();
        assert_eq!(norms(&got), norms(&recs), "{c:?}");
        assert_eq!(stats.histograms, 40 + 20 + 1 + 1);
        // the stale marker's bits, the deltas, the hints and custom bounds survive
        let RecordOwned::Histograms { entries, .. } = &got[1] else {
            panic!("{:?}", got[1]);
        };
        assert_eq!(entries[5].2.sum.to_bits(), STALE_NAN);
        assert_eq!(entries[3], (7, 3000, hist(3)));
        let RecordOwned::FloatHistograms { entries, .. } = &got[4] else {
            panic!();
        };
        assert_eq!(entries[0].2.custom_values, [0.1, 0.5, 2.5]);
    }
}

/// One histogram's bytes as Prometheus's `record.EncodeHistogram` lays them out.
#[test]
fn histogram_payload_matches_prometheus_layout() {
    use crate::histogram::{Histogram, Span};
    let h = Histogram {
        schema: -1,
        zero_threshold: 0.5,
        zero_count: 1,
        count: 3,
        sum: 2.0,
        positive_spans: vec![Span {
            offset: -1,
            length: 1,
        }],
        positive_buckets: vec![2],
        ..Default::default()
    };
    let mut b = Vec::new();
    RecordOwned::Histograms {
        custom_buckets: false,
        entries: vec![(5, 100, h)],
    }
    .encode(&mut b);
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &[1u8, 5, 0xc8, 0x01][..],                        // n=1, base ref 5, base t 100
        &[0, 0],                                            // ref, t deltas
        &[0, 1],                                            // hint unknown, schema -1 (zigzag)
        &0.5f64.to_bits().to_be_bytes(),                    // zero threshold BE64
        &[1, 3],                                            // zero count, count uvarints
        &2.0f64.to_bits().to_be_bytes(),                    // sum BE64
        &[1, 1, 1],                                         // 1 positive span: offset -1, length 1
        &[0],                                               // no negative spans
        &[1, 4],                                            // 1 positive bucket: delta 2
        &[0],                                               // no negative buckets
    ]
    .concat();
    assert_eq!(b, want);
}

#[test]
fn damaged_histogram_payloads_are_errors_not_panics() {
    let mut i = Interner::new();
    for r in &histogram_recs()[1..] {
        let mut b = Vec::new();
        r.encode(&mut b);
        for n in 0..b.len() {
            // a strict prefix never decodes to the same record, and never panics
            if let Ok(got) = RecordOwned::decode(r.kind(), &b[..n], &mut i) {
                assert_ne!(norm(&got), norm(r));
            }
        }
        let mut big = b.clone();
        big.extend_from_slice(&[0xff; 12]);
        assert!(RecordOwned::decode(r.kind(), &big, &mut i).is_err());
    }
    // a list length larger than the payload is refused before allocating
    let p = [
        1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff,
        0xff, 0x7f,
    ];
    assert!(RecordOwned::decode(RecordKind::HistogramSamples, &p, &mut i).is_err());
}
