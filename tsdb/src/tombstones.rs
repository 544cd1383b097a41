//! The `tombstones` file of a block: deleted time ranges per series.
//!
//! Layout (Prometheus `tsdb/tombstones`): magic `0x0130BA30` (4 bytes BE), format
//! version `1` (1 byte), then entries `series ref <uvarint64> | mint <varint64> |
//! maxt <varint64>`, then a CRC32-Castagnoli (4 bytes BE) over the entries (the version
//! byte excluded, as Prometheus does). Intervals are inclusive on both ends.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::index::{put_uvarint, put_varint, Dec};

pub const TOMBSTONES_FILENAME: &str = "tombstones";
pub const MAGIC_TOMBSTONE: u32 = 0x0130_BA30;
pub const TOMBSTONE_FORMAT_V1: u8 = 1;

/// A deleted time range, both ends inclusive (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub mint: i64,
    pub maxt: i64,
}

impl Interval {
    pub fn new(mint: i64, maxt: i64) -> Self {
        Interval { mint, maxt }
    }

    pub fn contains(&self, t: i64) -> bool {
        self.mint <= t && t <= self.maxt
    }

    /// Whether `[mint, maxt]` lies wholly inside this interval.
    pub fn covers(&self, mint: i64, maxt: i64) -> bool {
        self.mint <= mint && maxt <= self.maxt
    }
}

/// Whether `t` falls in any of `ivs` (sorted, non-overlapping).
pub fn is_deleted(ivs: &[Interval], t: i64) -> bool {
    // Few intervals per series in practice; binary search keeps a pathological file cheap.
    let i = ivs.partition_point(|iv| iv.maxt < t);
    i < ivs.len() && ivs[i].mint <= t
}

/// Deleted intervals by series reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tombstones {
    by_ref: BTreeMap<u64, Vec<Interval>>,
}

impl Tombstones {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an interval for a series, merging it with overlapping or adjacent ones (as
    /// Prometheus's `Intervals.Add` does). An interval with `maxt < mint` is ignored.
    pub fn add(&mut self, series_ref: u64, iv: Interval) {
        if iv.maxt < iv.mint {
            return;
        }
        let ivs = self.by_ref.entry(series_ref).or_default();
        ivs.push(iv);
        ivs.sort_unstable();
        let mut out: Vec<Interval> = Vec::with_capacity(ivs.len());
        for iv in ivs.drain(..) {
            match out.last_mut() {
                Some(last) if iv.mint <= last.maxt.saturating_add(1) => {
                    last.maxt = last.maxt.max(iv.maxt)
                }
                _ => out.push(iv),
            }
        }
        *ivs = out;
    }

    /// The deleted intervals of a series, sorted and disjoint (empty when none).
    pub fn get(&self, series_ref: u64) -> &[Interval] {
        self.by_ref
            .get(&series_ref)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Every series with deletions, in reference order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[Interval])> {
        self.by_ref.iter().map(|(r, v)| (*r, v.as_slice()))
    }

    /// The number of intervals (`stats.numTombstones`).
    pub fn total(&self) -> u64 {
        self.by_ref.values().map(|v| v.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ref.is_empty()
    }

    /// The file content (magic, version, entries, CRC).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9 + self.by_ref.len() * 12);
        b.extend_from_slice(&MAGIC_TOMBSTONE.to_be_bytes());
        b.push(TOMBSTONE_FORMAT_V1);
        for (r, ivs) in &self.by_ref {
            for iv in ivs {
                put_uvarint(&mut b, *r);
                put_varint(&mut b, iv.mint);
                put_varint(&mut b, iv.maxt);
            }
        }
        let crc = crc32c::crc32c(&b[5..]);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Parse a tombstones file; `file` names it in errors.
    pub fn decode(b: &[u8], file: &Path) -> Result<Self> {
        if b.len() < 9 {
            return Err(Error::corrupt(
                file,
                0,
                format!("tombstones file too short: {} bytes", b.len()),
            ));
        }
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC_TOMBSTONE {
            return Err(Error::corrupt(
                file,
                0,
                format!("invalid magic number {magic:#x}"),
            ));
        }
        if b[4] != TOMBSTONE_FORMAT_V1 {
            return Err(Error::corrupt(
                file,
                4,
                format!("unsupported tombstones format {}", b[4]),
            ));
        }
        let body = &b[5..b.len() - 4];
        let want = u32::from_be_bytes(b[b.len() - 4..].try_into().expect("4 bytes"));
        let got = crc32c::crc32c(body);
        if want != got {
            return Err(Error::corrupt(
                file,
                (b.len() - 4) as u64,
                format!("tombstones checksum mismatch: stored {want:#010x}, computed {got:#010x}"),
            ));
        }
        let mut t = Tombstones::new();
        let mut d = Dec::new(body, 5, file);
        while !d.is_empty() {
            let r = d.uvarint()?;
            let mint = d.varint()?;
            let maxt = d.varint()?;
            t.add(r, Interval { mint, maxt });
        }
        Ok(t)
    }

    /// Read `<dir>/tombstones`; a missing file means no deletions (as in Prometheus).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(TOMBSTONES_FILENAME);
        match fs::read(&path) {
            Ok(b) => Self::decode(&b, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Write `<dir>/tombstones` atomically (tmp, fsync, rename). Returns its size.
    pub fn write(&self, dir: &Path) -> Result<u64> {
        let path = dir.join(TOMBSTONES_FILENAME);
        let tmp: PathBuf = dir.join(format!("{TOMBSTONES_FILENAME}.tmp"));
        let data = self.encode();
        let res = (|| {
            let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(&data).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            drop(f);
            fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map(|_| data.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_prometheus_bytes() {
        // magic, version 1, no entries, CRC32C of nothing (0).
        assert_eq!(
            Tombstones::new().encode(),
            vec![0x01, 0x30, 0xBA, 0x30, 0x01, 0, 0, 0, 0]
        );
    }

    #[test]
    fn round_trip_and_merge() {
        let mut t = Tombstones::new();
        t.add(16, Interval::new(10, 20));
        t.add(16, Interval::new(21, 30)); // adjacent: merged
        t.add(16, Interval::new(100, 200));
        t.add(3, Interval::new(-5, -1));
        t.add(3, Interval::new(7, 3)); // inverted: ignored
        assert_eq!(t.get(16), &[Interval::new(10, 30), Interval::new(100, 200)]);
        assert_eq!(t.total(), 3);
        let dir = tempfile::tempdir().unwrap();
        t.write(dir.path()).unwrap();
        let back = Tombstones::read(dir.path()).unwrap();
        assert_eq!(back, t);
        assert!(is_deleted(back.get(16), 10));
        assert!(is_deleted(back.get(16), 30));
        assert!(!is_deleted(back.get(16), 31));
        assert!(is_deleted(back.get(16), 150));
        assert!(!is_deleted(back.get(16), 201));
        assert!(!is_deleted(back.get(4), 0));
    }

    #[test]
    fn missing_file_is_empty_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Tombstones::read(dir.path()).unwrap().is_empty());
        let mut t = Tombstones::new();
        t.add(1, Interval::new(1, 2));
        let mut b = t.encode();
        b[6] ^= 0xff;
        fs::write(dir.path().join("tombstones"), &b).unwrap();
        let e = Tombstones::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tombstones") && e.contains("checksum"), "{e}");
        for n in 0..b.len() {
            let _ = Tombstones::decode(&b[..n], Path::new("tombstones"));
        }
        // Valid CRC over a truncated varint: an error, not a panic.
        let mut b = vec![0x01, 0x30, 0xBA, 0x30, 0x01, 0x80];
        let crc = crc32c::crc32c(&b[5..]);
        b.extend_from_slice(&crc.to_be_bytes());
        assert!(Tombstones::decode(&b, Path::new("tombstones")).is_err());
    }
}
