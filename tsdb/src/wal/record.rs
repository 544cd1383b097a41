//! WAL records: the frame every record is stored in, and the payload encodings of the
//! record kinds.
//!
//! Frame (10-byte header, then the payload):
//!
//! ```text
//! [version: u8 = 1][kind: u8][len: u32 LE][crc32c(kind ++ payload): u32 LE][payload: len bytes]
//! ```
//!
//! The header layout is fixed for every version; the version governs how the payload is
//! encoded. A reader that meets a version it does not know skips the record by `len`
//! (after checking the CRC, so a damaged version byte is never mistaken for a future
//! record).

use std::fmt;

use crate::error::{Error, Result};
use crate::labels::{Interner, Label, Labels};

/// The frame version this code writes and decodes.
pub const FRAME_VERSION: u8 = 1;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 10;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// Series references and their label sets.
    Series = 1,
    /// Float samples: (series ref, timestamp ms, value).
    Samples = 2,
}

impl RecordKind {
    pub fn from_u8(b: u8) -> Option<RecordKind> {
        match b {
            1 => Some(RecordKind::Series),
            2 => Some(RecordKind::Samples),
            _ => None,
        }
    }
}

/// A record to write, borrowing the caller's data.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// `(series ref, labels)`: declares the label set behind a ref. A ref's Series
    /// record precedes its first Samples record in the log.
    Series { entries: &'a [(u64, &'a Labels)] },
    /// `(series ref, timestamp ms, value)`.
    Samples { entries: &'a [(u64, i64, f64)] },
}

impl Record<'_> {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Series { .. } => RecordKind::Series,
            Record::Samples { .. } => RecordKind::Samples,
        }
    }

    /// Append this record's payload (no frame) to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Record::Series { entries } => {
                encode_series(buf, entries.len(), entries.iter().map(|(r, l)| (*r, *l)))
            }
            Record::Samples { entries } => encode_samples(buf, entries),
        }
    }
}

/// A record as read back, label strings interned.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOwned {
    Series(Vec<(u64, Labels)>),
    Samples(Vec<(u64, i64, f64)>),
}

impl RecordOwned {
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordOwned::Series(_) => RecordKind::Series,
            RecordOwned::Samples(_) => RecordKind::Samples,
        }
    }

    /// Append this record's payload (no frame) to `buf`; the same bytes as the
    /// borrowed [`Record`] with equal contents.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            RecordOwned::Series(e) => encode_series(buf, e.len(), e.iter().map(|(r, l)| (*r, l))),
            RecordOwned::Samples(e) => encode_samples(buf, e),
        }
    }

    /// Decode a version-1 payload of `kind`, interning label strings.
    pub fn decode(
        kind: RecordKind,
        payload: &[u8],
        interner: &mut Interner,
    ) -> Result<RecordOwned, DecodeError> {
        let mut d = Dec { b: payload, pos: 0 };
        let rec = match kind {
            RecordKind::Series => RecordOwned::Series(decode_series(&mut d, interner)?),
            RecordKind::Samples => RecordOwned::Samples(decode_samples(&mut d)?),
        };
        if d.pos != payload.len() {
            return Err(DecodeError("trailing bytes after record payload"));
        }
        Ok(rec)
    }
}

/// Why a checksummed payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Append `rec` framed (header + payload) to `buf`. On error `buf` is left as it was.
pub(crate) fn frame_into(buf: &mut Vec<u8>, rec: &Record<'_>) -> Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    rec.encode(buf);
    let body = start + HEADER_LEN;
    let Ok(len) = u32::try_from(buf.len() - body) else {
        let n = buf.len() - body;
        buf.truncate(start);
        return Err(Error::Invalid(format!(
            "WAL record payload of {n} bytes exceeds 4 GiB"
        )));
    };
    let kind = rec.kind() as u8;
    let crc = record_crc(kind, &buf[body..]);
    write_header(&mut buf[start..body], FRAME_VERSION, kind, len, crc);
    Ok(())
}

pub(crate) fn record_crc(kind: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload)
}

pub(crate) fn write_header(h: &mut [u8], version: u8, kind: u8, len: u32, crc: u32) {
    h[0] = version;
    h[1] = kind;
    h[2..6].copy_from_slice(&len.to_le_bytes());
    h[6..10].copy_from_slice(&crc.to_le_bytes());
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub version: u8,
    pub kind: u8,
    pub len: u32,
    pub crc: u32,
}

impl Header {
    pub fn parse(h: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: h[0],
            kind: h[1],
            len: u32::from_le_bytes([h[2], h[3], h[4], h[5]]),
            crc: u32::from_le_bytes([h[6], h[7], h[8], h[9]]),
        }
    }
}

// ---- payload encodings ----------------------------------------------------------------
//
// Series:  uvarint(n) { uvarint(ref) uvarint(nlabels) { uvarint(len) name uvarint(len) value } }
// Samples: uvarint(n) [ uvarint(base_ref) varint(base_t)
//                       { varint(ref - base_ref) varint(t - base_t) f64 bits LE } ]
// where base_* are the first entry's; deltas wrap, so every i64/u64 round-trips.

fn encode_series<'l>(
    buf: &mut Vec<u8>,
    n: usize,
    entries: impl Iterator<Item = (u64, &'l Labels)>,
) {
    put_uvarint(buf, n as u64);
    for (r, labels) in entries {
        put_uvarint(buf, r);
        put_uvarint(buf, labels.len() as u64);
        for l in labels {
            put_str(buf, &l.name);
            put_str(buf, &l.value);
        }
    }
}

fn encode_samples(buf: &mut Vec<u8>, entries: &[(u64, i64, f64)]) {
    put_uvarint(buf, entries.len() as u64);
    let Some(&(base_ref, base_t, _)) = entries.first() else {
        return;
    };
    // worst case per entry: 10 + 10 + 8
    buf.reserve(20 + entries.len() * 28);
    put_uvarint(buf, base_ref);
    put_varint(buf, base_t);
    for &(r, t, v) in entries {
        put_varint(buf, r.wrapping_sub(base_ref) as i64);
        put_varint(buf, t.wrapping_sub(base_t));
        buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }
}

fn decode_series(
    d: &mut Dec<'_>,
    interner: &mut Interner,
) -> Result<Vec<(u64, Labels)>, DecodeError> {
    let n = d.uvarint()?;
    // each entry takes at least 2 bytes
    if n > d.remaining() as u64 / 2 {
        return Err(DecodeError("series count exceeds payload"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let r = d.uvarint()?;
        let nl = d.uvarint()?;
        if nl > d.remaining() as u64 / 2 {
            return Err(DecodeError("label count exceeds payload"));
        }
        let mut v: Vec<Label> = Vec::with_capacity(nl as usize);
        for _ in 0..nl {
            let name = d.str()?;
            let value = d.str()?;
            if value.is_empty() {
                return Err(DecodeError("empty label value"));
            }
            if let Some(prev) = v.last() {
                if *prev.name >= *name {
                    return Err(DecodeError("label names not sorted and unique"));
                }
            }
            v.push(Label {
                name: interner.intern(name),
                value: interner.intern(value),
            });
        }
        out.push((r, Labels::from_sorted_unchecked(v)));
    }
    Ok(out)
}

fn decode_samples(d: &mut Dec<'_>) -> Result<Vec<(u64, i64, f64)>, DecodeError> {
    let n = d.uvarint()?;
    if n == 0 {
        return Ok(Vec::new());
    }
    // each entry takes at least 10 bytes
    if n > d.remaining() as u64 / 10 {
        return Err(DecodeError("sample count exceeds payload"));
    }
    let base_ref = d.uvarint()?;
    let base_t = d.varint()?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let dr = d.varint()?;
        let dt = d.varint()?;
        let v = f64::from_bits(d.u64_le()?);
        out.push((base_ref.wrapping_add(dr as u64), base_t.wrapping_add(dt), v));
    }
    Ok(out)
}

pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        buf.push(x as u8 | 0x80);
        x >>= 7;
    }
    buf.push(x as u8);
}

pub(crate) fn put_varint(buf: &mut Vec<u8>, x: i64) {
    put_uvarint(buf, ((x << 1) ^ (x >> 63)) as u64);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_uvarint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut x = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.b.get(self.pos) else {
                return Err(DecodeError("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(DecodeError("varint overflows 64 bits"));
            }
            x |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(x);
            }
        }
        Err(DecodeError("varint overflows 64 bits"))
    }

    fn varint(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvarint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError("truncated payload"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.uvarint()?;
        if n > self.remaining() as u64 {
            return Err(DecodeError("string length exceeds payload"));
        }
        std::str::from_utf8(self.bytes(n as usize)?).map_err(|_| DecodeError("label is not UTF-8"))
    }
}
