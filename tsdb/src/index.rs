//! The block `index` file, format v2, as Prometheus writes and reads it
//! (`tsdb/docs/format/index.md`):
//!
//! ```text
//! magic 0xBAAAD700 <4b> | version 2 <1b>
//! symbol table | series (16-byte aligned) | label indices | postings
//! | label offset table | postings offset table | TOC
//! ```
//!
//! Every section carries a CRC32-Castagnoli of its body. A series' reference is its
//! byte offset divided by 16; postings lists hold those references, so a sorted postings
//! list is also sorted by label set.
//!
//! [`IndexReader`] works over [`bytes::Bytes`] (a file mmap, a whole-object read, ...) and
//! bounds-checks every structure: a truncated or corrupt index yields
//! [`Error::Corrupt`](crate::Error::Corrupt) naming the file and byte offset, never a
//! panic.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::labels::{Interner, Label, Labels, Symbol};

pub const INDEX_FILENAME: &str = "index";
pub const MAGIC_INDEX: u32 = 0xBAAA_D700;
pub const FORMAT_V1: u8 = 1;
pub const FORMAT_V2: u8 = 2;
/// Same layout as v2 for everything this reader touches.
pub const FORMAT_V3: u8 = 3;
const HEADER_LEN: usize = 5;
const SERIES_ALIGN: u64 = 16;
/// Six 8-byte offsets and a CRC.
pub const TOC_LEN: usize = 6 * 8 + 4;

/// Where a series' chunk lives and what time range it covers (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChunkMeta {
    pub min_time: i64,
    pub max_time: i64,
    /// `segment index << 32 | offset` in `chunks/`.
    pub chunk_ref: u64,
}

impl ChunkMeta {
    pub fn new(min_time: i64, max_time: i64, chunk_ref: u64) -> Self {
        ChunkMeta {
            min_time,
            max_time,
            chunk_ref,
        }
    }

    /// Whether the chunk overlaps `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_time <= maxt && mint <= self.max_time
    }
}

/// The table of contents at the end of the index: start offsets of each section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Toc {
    pub symbols: u64,
    pub series: u64,
    pub label_indices: u64,
    pub label_indices_table: u64,
    pub postings: u64,
    pub postings_table: u64,
}

// ---------------------------------------------------------------------------------------
// Encoding helpers (Go's encoding/binary varints).

pub(crate) use crate::varint::{put_uvarint, put_varint};

fn put_uvarint_str(b: &mut Vec<u8>, s: &str) {
    crate::varint::put_uvarint_bytes(b, s.as_bytes());
}

/// A bounds-checked decoder over a byte slice whose first byte sits at `base` in `file`.
pub(crate) struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
    base: u64,
    file: &'a Path,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(b: &'a [u8], base: u64, file: &'a Path) -> Self {
        Dec {
            b,
            pos: 0,
            base,
            file,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.b.len()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }

    /// Absolute file offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn err(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(self.file, self.offset(), reason)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "need {n} bytes, {} left in section",
                self.remaining()
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn be32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn be64(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    #[inline]
    pub(crate) fn uvarint(&mut self) -> Result<u64> {
        match crate::varint::uvarint(self.b.get(self.pos..).unwrap_or_default()) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(e) => Err(self.err(e.to_string())),
        }
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<i64> {
        Ok(crate::varint::unzigzag(self.uvarint()?))
    }

    pub(crate) fn uvarint32(&mut self) -> Result<u32> {
        let at = self.offset();
        let v = self.uvarint()?;
        u32::try_from(v)
            .map_err(|_| Error::corrupt(self.file, at, format!("value {v} overflows 32 bits")))
    }

    pub(crate) fn uvarint_bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| self.err("length overflows"))?;
        self.bytes(n)
    }

    pub(crate) fn uvarint_str(&mut self) -> Result<&'a str> {
        let at = self.offset();
        let b = self.uvarint_bytes()?;
        std::str::from_utf8(b).map_err(|_| Error::corrupt(self.file, at, "string is not UTF-8"))
    }
}

// ---------------------------------------------------------------------------------------
// Writer

/// Writes an index in format v2.
///
/// Usage: [`IndexWriter::create`] (or [`IndexWriter::new`] over any `Write`) with every
/// label name and value the series will use; [`add_series`](Self::add_series) in
/// strictly increasing label-set order; [`finish`](Self::finish). The series section
/// streams to the writer; postings (4 bytes per label of each series) are held in
/// memory until `finish`.
pub struct IndexWriter<W: Write> {
    w: W,
    name: PathBuf,
    pos: u64,
    sym_ids: HashMap<Symbol, u32>,
    sym_strs: Vec<Symbol>,
    toc: Toc,
    last_series: Option<Labels>,
    /// (name symbol << 32 | value symbol) → series refs
    postings: HashMap<u64, Vec<u32>>,
    all: Vec<u32>,
    buf: Vec<u8>,
}

impl IndexWriter<BufWriter<File>> {
    /// Create the index file at `path` (truncating any existing one).
    pub fn create<S: AsRef<str>>(
        path: &Path,
        symbols: impl IntoIterator<Item = S>,
    ) -> Result<Self> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        Self::new(BufWriter::with_capacity(1 << 20, f), path, symbols)
    }

    /// Finish, flush and fsync the file; returns its size.
    pub fn finish_file(self) -> Result<u64> {
        let name = self.name.clone();
        let (w, size) = self.finish_inner()?;
        let f = w
            .into_inner()
            .map_err(|e| Error::io(&name, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&name, e))?;
        Ok(size)
    }
}

impl<W: Write> IndexWriter<W> {
    /// Start an index on `w`; `name` labels errors. `symbols` must be strictly ascending
    /// (byte order) and hold every label name and value of the series to come.
    pub fn new<S: AsRef<str>>(
        w: W,
        name: impl Into<PathBuf>,
        symbols: impl IntoIterator<Item = S>,
    ) -> Result<Self> {
        let mut iw = IndexWriter {
            w,
            name: name.into(),
            pos: 0,
            sym_ids: HashMap::new(),
            sym_strs: Vec::new(),
            toc: Toc::default(),
            last_series: None,
            postings: HashMap::new(),
            all: Vec::new(),
            buf: Vec::with_capacity(1 << 16),
        };
        let mut head = Vec::with_capacity(HEADER_LEN);
        head.extend_from_slice(&MAGIC_INDEX.to_be_bytes());
        head.push(FORMAT_V2);
        iw.write(&head)?;

        // Symbol table: len <4b> | count <4b> | entries | CRC over count+entries
        let mut body = vec![0u8; 4];
        let mut n: u32 = 0;
        for s in symbols {
            let s = s.as_ref();
            if let Some(last) = iw.sym_strs.last() {
                if s <= &**last {
                    return Err(Error::Invalid(format!(
                        "index symbols out of order: {s:?} after {last:?}"
                    )));
                }
            }
            let sym = Symbol::new(s);
            iw.sym_ids.insert(sym.clone(), n);
            iw.sym_strs.push(sym);
            n = n
                .checked_add(1)
                .ok_or_else(|| Error::Invalid("more than 2^32 symbols".into()))?;
            put_uvarint_str(&mut body, s);
        }
        body[..4].copy_from_slice(&n.to_be_bytes());
        iw.toc.symbols = iw.pos;
        iw.write_section(&body)?;
        iw.toc.series = iw.pos;
        Ok(iw)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(|e| Error::io(&self.name, e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, align: u64) -> Result<()> {
        let r = self.pos % align;
        if r != 0 {
            let zeros = [0u8; 16];
            self.write(&zeros[..(align - r) as usize])?;
        }
        Ok(())
    }

    /// `len <4b> | body | CRC32C(body) <4b>`
    fn write_section(&mut self, body: &[u8]) -> Result<()> {
        let len = u32::try_from(body.len()).map_err(|_| {
            Error::Invalid(format!(
                "index section of {} bytes exceeds 4GiB",
                body.len()
            ))
        })?;
        self.write(&len.to_be_bytes())?;
        self.write(body)?;
        self.write(&crc32c::crc32c(body).to_be_bytes())
    }

    fn sym(&self, s: &str) -> Result<u32> {
        self.sym_ids.get(s).copied().ok_or_else(|| {
            Error::Invalid(format!("symbol {s:?} missing from the index symbol table"))
        })
    }

    /// Add the next series (label sets strictly increasing) with its chunks, which must
    /// be in time order without overlap. Returns the series reference.
    pub fn add_series(&mut self, labels: &Labels, chunks: &[ChunkMeta]) -> Result<u64> {
        if labels.is_empty() {
            return Err(Error::Invalid("series without labels".into()));
        }
        if let Some(last) = &self.last_series {
            if labels <= last {
                return Err(Error::Invalid(format!(
                    "out-of-order series added with label set {labels}, last label set {last}"
                )));
            }
        }
        for (i, c) in chunks.iter().enumerate() {
            if c.max_time < c.min_time {
                return Err(Error::Invalid(format!(
                    "series {labels}: chunk maxT {} is less than minT {}",
                    c.max_time, c.min_time
                )));
            }
            if i > 0 && c.min_time <= chunks[i - 1].max_time {
                return Err(Error::Invalid(format!(
                    "series {labels}: chunk minT {} is not higher than previous chunk maxT {}",
                    c.min_time,
                    chunks[i - 1].max_time
                )));
            }
        }
        self.pad(SERIES_ALIGN)?;
        let sref = self.pos / SERIES_ALIGN;
        let sref32 = u32::try_from(sref)
            .map_err(|_| Error::Invalid("index exceeds 64GiB of series".into()))?;

        let mut body = std::mem::take(&mut self.buf);
        body.clear();
        put_uvarint(&mut body, labels.len() as u64);
        for l in labels {
            let n = self.sym(&l.name)?;
            let v = self.sym(&l.value)?;
            put_uvarint(&mut body, u64::from(n));
            put_uvarint(&mut body, u64::from(v));
            self.postings
                .entry((u64::from(n) << 32) | u64::from(v))
                .or_default()
                .push(sref32);
        }
        put_uvarint(&mut body, chunks.len() as u64);
        if let Some(first) = chunks.first() {
            put_varint(&mut body, first.min_time);
            put_uvarint(
                &mut body,
                first.max_time.wrapping_sub(first.min_time) as u64,
            );
            put_uvarint(&mut body, first.chunk_ref);
            let mut t0 = first.max_time;
            let mut ref0 = first.chunk_ref as i64;
            for c in &chunks[1..] {
                put_uvarint(&mut body, c.min_time.wrapping_sub(t0) as u64);
                put_uvarint(&mut body, c.max_time.wrapping_sub(c.min_time) as u64);
                put_varint(&mut body, (c.chunk_ref as i64).wrapping_sub(ref0));
                t0 = c.max_time;
                ref0 = c.chunk_ref as i64;
            }
        }
        let mut head = Vec::with_capacity(10);
        put_uvarint(&mut head, body.len() as u64);
        let crc = crc32c::crc32c(&body);
        let res = self
            .write(&head)
            .and_then(|_| self.write(&body))
            .and_then(|_| self.write(&crc.to_be_bytes()));
        self.buf = body;
        res?;
        self.all.push(sref32);
        self.last_series = Some(labels.clone());
        Ok(sref)
    }

    /// Write label indices, postings, both offset tables and the TOC; returns the
    /// underlying writer (flushed).
    pub fn finish(self) -> Result<W> {
        Ok(self.finish_inner()?.0)
    }

    fn finish_inner(mut self) -> Result<(W, u64)> {
        let mut keys: Vec<u64> = self.postings.keys().copied().collect();
        keys.sort_unstable(); // symbol ids order like their strings

        // Label indices: one per label name, listing its values' symbol refs.
        self.toc.label_indices = self.pos;
        let mut label_index_offsets: Vec<(u32, u64)> = Vec::new();
        let mut i = 0;
        while i < keys.len() {
            let name = (keys[i] >> 32) as u32;
            let mut j = i;
            while j < keys.len() && (keys[j] >> 32) as u32 == name {
                j += 1;
            }
            self.pad(4)?;
            label_index_offsets.push((name, self.pos));
            let mut body = Vec::with_capacity(8 + 4 * (j - i));
            body.extend_from_slice(&1u32.to_be_bytes());
            body.extend_from_slice(&((j - i) as u32).to_be_bytes());
            for k in &keys[i..j] {
                body.extend_from_slice(&(*k as u32).to_be_bytes());
            }
            self.write_section(&body)?;
            i = j;
        }

        // Postings, the all-series list `""=""` first, each aligned to 4 bytes.
        self.pad(4)?;
        self.toc.postings = self.pos;
        let mut offset_table = Vec::with_capacity(64 + keys.len() * 16);
        offset_table.extend_from_slice(&((keys.len() + 1) as u32).to_be_bytes());
        let all = std::mem::take(&mut self.all);
        self.write_postings("", "", &all, &mut offset_table)?;
        for k in &keys {
            let list = self.postings.remove(k).expect("key present");
            let name = self.sym_strs[(*k >> 32) as usize].clone();
            let value = self.sym_strs[(*k as u32) as usize].clone();
            self.write_postings(&name, &value, &list, &mut offset_table)?;
        }

        // Label offset table.
        self.toc.label_indices_table = self.pos;
        let mut body = Vec::with_capacity(4 + label_index_offsets.len() * 16);
        body.extend_from_slice(&(label_index_offsets.len() as u32).to_be_bytes());
        for (name, off) in &label_index_offsets {
            put_uvarint(&mut body, 1);
            put_uvarint_str(&mut body, &self.sym_strs[*name as usize]);
            put_uvarint(&mut body, *off);
        }
        self.write_section(&body)?;

        // Postings offset table.
        self.toc.postings_table = self.pos;
        self.write_section(&offset_table)?;

        // TOC.
        let t = self.toc;
        let mut toc = Vec::with_capacity(TOC_LEN);
        for v in [
            t.symbols,
            t.series,
            t.label_indices,
            t.label_indices_table,
            t.postings,
            t.postings_table,
        ] {
            toc.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c::crc32c(&toc);
        toc.extend_from_slice(&crc.to_be_bytes());
        self.write(&toc)?;
        self.w.flush().map_err(|e| Error::io(&self.name, e))?;
        Ok((self.w, self.pos))
    }

    fn write_postings(
        &mut self,
        name: &str,
        value: &str,
        refs: &[u32],
        offset_table: &mut Vec<u8>,
    ) -> Result<()> {
        self.pad(4)?;
        put_uvarint(offset_table, 2);
        put_uvarint_str(offset_table, name);
        put_uvarint_str(offset_table, value);
        put_uvarint(offset_table, self.pos);
        let mut body = std::mem::take(&mut self.buf);
        body.clear();
        body.reserve(4 + refs.len() * 4);
        body.extend_from_slice(&(refs.len() as u32).to_be_bytes());
        for r in refs {
            body.extend_from_slice(&r.to_be_bytes());
        }
        let res = self.write_section(&body);
        self.buf = body;
        res
    }
}

// ---------------------------------------------------------------------------------------
// Reader

struct NameEntry {
    name: Box<str>,
    /// Range into `values`.
    start: u32,
    end: u32,
}

struct ValueEntry {
    /// Absolute offset and length of the value's bytes in the postings offset table.
    pos: u64,
    len: u32,
    postings: u64,
}

/// A postings list as the index stores it: big-endian `u32` series references.
#[derive(Clone, Copy, Debug)]
pub struct RawPostings<'a> {
    refs: &'a [u8],
    /// The list's offset in the index (to decode it checked, or name it in errors).
    off: u64,
}

impl RawPostings<'_> {
    pub fn len(&self) -> usize {
        self.refs.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    #[inline]
    pub fn get(&self, i: usize) -> u64 {
        let b = &self.refs[i * 4..i * 4 + 4];
        u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The first index `>= lo` whose reference is `>= x` (or `len()`): galloping, so a
    /// walk through ascending `x` costs about `log` of each gap.
    #[inline]
    pub fn seek(&self, mut lo: usize, x: u64) -> usize {
        let n = self.len();
        if lo >= n || self.get(lo) >= x {
            return lo;
        }
        let mut step = 1usize;
        let mut hi = lo + 1;
        while hi < n && self.get(hi) < x {
            lo = hi;
            step <<= 1;
            hi = lo.saturating_add(step);
        }
        // self.get(lo) < x <= self.get(hi) (or hi >= n)
        let (mut a, mut b) = (lo + 1, hi.min(n));
        while a < b {
            let mid = a + (b - a) / 2;
            if self.get(mid) < x {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        a
    }
}

/// Reads an index (format v2/v3) from memory.
pub struct IndexReader {
    data: Bytes,
    name: PathBuf,
    version: u8,
    toc: Toc,
    /// Offset of the symbol table's body (after its `len`).
    sym_base: u64,
    /// Offset of each symbol's entry, relative to `sym_base`.
    sym_offsets: Vec<u32>,
    /// Decoded symbols, shared by every series read from this index.
    sym_cache: Vec<OnceLock<Symbol>>,
    names: Vec<NameEntry>,
    values: Vec<ValueEntry>,
    all_postings: Option<u64>,
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader")
            .field("name", &self.name)
            .field("size", &self.data.len())
            .field("version", &self.version)
            .field("toc", &self.toc)
            .finish_non_exhaustive()
    }
}

impl IndexReader {
    /// Map the file at `path` and read it.
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let data = if len == 0 {
            Bytes::new()
        } else {
            // SAFETY: block files are immutable once written; nothing truncates or
            // rewrites an index while a reader maps it (Prometheus relies on the same).
            let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path, e))?;
            Bytes::from_owner(m)
        };
        Self::new(data, path)
    }

    /// Read an index held in memory; `name` (usually the file path) labels errors.
    pub fn new(data: Bytes, name: impl Into<PathBuf>) -> Result<Self> {
        let name = name.into();
        let len = data.len();
        if len < HEADER_LEN + TOC_LEN {
            return Err(Error::corrupt(
                &name,
                0,
                format!("index too small: {len} bytes"),
            ));
        }
        let magic = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        if magic != MAGIC_INDEX {
            return Err(Error::corrupt(
                &name,
                0,
                format!("invalid magic number {magic:#x}"),
            ));
        }
        let version = data[4];
        if version != FORMAT_V2 && version != FORMAT_V3 {
            return Err(Error::corrupt(
                &name,
                4,
                format!("unsupported index format version {version}"),
            ));
        }

        // TOC
        let toc_off = len - TOC_LEN;
        let tb = &data[toc_off..];
        let want = u32::from_be_bytes(tb[48..52].try_into().expect("4 bytes"));
        let got = crc32c::crc32c(&tb[..48]);
        if want != got {
            return Err(Error::corrupt(
                &name,
                toc_off as u64,
                format!("TOC checksum mismatch: stored {want:#010x}, computed {got:#010x}"),
            ));
        }
        let mut d = Dec::new(&tb[..48], toc_off as u64, &name);
        let toc = Toc {
            symbols: d.be64()?,
            series: d.be64()?,
            label_indices: d.be64()?,
            label_indices_table: d.be64()?,
            postings: d.be64()?,
            postings_table: d.be64()?,
        };
        for (what, v) in [
            ("symbols", toc.symbols),
            ("series", toc.series),
            ("label indices", toc.label_indices),
            ("label offset table", toc.label_indices_table),
            ("postings", toc.postings),
            ("postings offset table", toc.postings_table),
        ] {
            if v > toc_off as u64 {
                return Err(Error::corrupt(
                    &name,
                    toc_off as u64,
                    format!("TOC: {what} offset {v} beyond the TOC at {toc_off}"),
                ));
            }
        }

        let mut r = IndexReader {
            data,
            name,
            version,
            toc,
            sym_base: 0,
            sym_offsets: Vec::new(),
            sym_cache: Vec::new(),
            names: Vec::new(),
            values: Vec::new(),
            all_postings: None,
        };
        r.load_symbols()?;
        r.load_postings_table()?;
        Ok(r)
    }

    /// `len <4b> | body | CRC <4b>` at `off`: the body, checksum verified.
    fn section(&self, off: u64, what: &str) -> Result<(&[u8], u64)> {
        let len = self.data.len() as u64;
        let corrupt = |reason: String| Error::corrupt(&self.name, off, reason);
        if off.checked_add(4).is_none_or(|e| e > len) {
            return Err(corrupt(format!(
                "{what}: section start beyond end of file ({len} bytes)"
            )));
        }
        let o = off as usize;
        let l = u64::from(u32::from_be_bytes(
            self.data[o..o + 4].try_into().expect("4 bytes"),
        ));
        let body_end = off + 4 + l;
        if body_end + 4 > len {
            return Err(corrupt(format!(
                "{what}: section of {l} bytes runs past end of file ({len} bytes)"
            )));
        }
        let body = &self.data[o + 4..body_end as usize];
        let be = body_end as usize;
        let want = u32::from_be_bytes(self.data[be..be + 4].try_into().expect("4 bytes"));
        let got = crc32c::crc32c(body);
        if want != got {
            return Err(corrupt(format!(
                "{what}: checksum mismatch: stored {want:#010x}, computed {got:#010x}"
            )));
        }
        Ok((body, off + 4))
    }

    fn load_symbols(&mut self) -> Result<()> {
        if self.toc.symbols == 0 {
            return Ok(());
        }
        let (body, base) = self.section(self.toc.symbols, "symbol table")?;
        let mut d = Dec::new(body, base, &self.name);
        let cnt = d.be32()? as usize;
        let mut offs = Vec::with_capacity(cnt.min(body.len()));
        for _ in 0..cnt {
            offs.push((d.offset() - base) as u32);
            d.uvarint_bytes()?;
        }
        self.sym_base = base;
        self.sym_cache = (0..offs.len()).map(|_| OnceLock::new()).collect();
        self.sym_offsets = offs;
        Ok(())
    }

    fn load_postings_table(&mut self) -> Result<()> {
        if self.toc.postings_table == 0 {
            return Ok(());
        }
        let (body, base) = self.section(self.toc.postings_table, "postings offset table")?;
        let mut d = Dec::new(body, base, &self.name);
        let cnt = d.be32()? as usize;
        let mut names: Vec<NameEntry> = Vec::new();
        let mut values: Vec<ValueEntry> = Vec::with_capacity(cnt.min(body.len() / 4));
        let mut last: Option<(&[u8], &[u8])> = None;
        let mut all_postings = None;
        for _ in 0..cnt {
            let at = d.offset();
            let keys = d.uvarint()?;
            if keys != 2 {
                return Err(Error::corrupt(
                    &self.name,
                    at,
                    format!("unexpected number of keys for postings offset table {keys}"),
                ));
            }
            let n = d.uvarint_bytes()?;
            let v = d.uvarint_bytes()?;
            let vpos = d.offset() - v.len() as u64;
            let off = d.uvarint()?;
            let nstr = std::str::from_utf8(n)
                .map_err(|_| Error::corrupt(&self.name, at, "label name is not UTF-8"))?;
            if std::str::from_utf8(v).is_err() {
                return Err(Error::corrupt(&self.name, vpos, "label value is not UTF-8"));
            }
            if let Some(l) = last {
                if (n, v) <= l {
                    return Err(Error::corrupt(
                        &self.name,
                        at,
                        "postings offset table is not sorted by label name and value",
                    ));
                }
            }
            last = Some((n, v));
            if n.is_empty() {
                if v.is_empty() {
                    all_postings = Some(off);
                }
                continue;
            }
            if names.last().is_none_or(|e| *e.name != *nstr) {
                let i = values.len() as u32;
                names.push(NameEntry {
                    name: nstr.into(),
                    start: i,
                    end: i,
                });
            }
            values.push(ValueEntry {
                pos: vpos,
                len: v.len() as u32,
                postings: off,
            });
            names.last_mut().expect("pushed above").end = values.len() as u32;
        }
        self.names = names;
        self.values = values;
        self.all_postings = all_postings;
        Ok(())
    }

    /// The file (or object) name used in errors.
    pub fn name(&self) -> &Path {
        &self.name
    }

    pub fn version(&self) -> u8 {
        self.version
    }

    pub fn toc(&self) -> &Toc {
        &self.toc
    }

    /// Size of the index in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn num_symbols(&self) -> usize {
        self.sym_offsets.len()
    }

    /// Symbol number `i`.
    pub fn symbol(&self, i: u32) -> Result<&str> {
        let Some(&off) = self.sym_offsets.get(i as usize) else {
            return Err(Error::corrupt(
                &self.name,
                self.sym_base,
                format!(
                    "unknown symbol reference {i} ({} symbols)",
                    self.sym_offsets.len()
                ),
            ));
        };
        let start = self.sym_base + u64::from(off);
        // The offsets were validated against the section when loaded.
        let mut d = Dec::new(&self.data[start as usize..], start, &self.name);
        d.uvarint_str()
    }

    fn symbol_shared(&self, i: u32) -> Result<Symbol> {
        let cell = self.sym_cache.get(i as usize);
        if let Some(s) = cell.and_then(OnceLock::get) {
            return Ok(s.clone());
        }
        let s = Symbol::new(self.symbol(i)?);
        let cell = cell.expect("symbol() checked the index");
        let _ = cell.set(s);
        Ok(cell.get().expect("just set").clone())
    }

    /// Every symbol, sorted.
    pub fn symbols(&self) -> impl Iterator<Item = Result<&str>> + '_ {
        (0..self.sym_offsets.len() as u32).map(|i| self.symbol(i))
    }

    /// Label names present in the index, sorted.
    pub fn label_names(&self) -> Vec<&str> {
        self.names.iter().map(|n| &*n.name).collect()
    }

    fn name_entry(&self, name: &str) -> Option<&NameEntry> {
        self.names
            .binary_search_by(|e| (*e.name).cmp(name))
            .ok()
            .map(|i| &self.names[i])
    }

    fn value_bytes(&self, v: &ValueEntry) -> &[u8] {
        &self.data[v.pos as usize..v.pos as usize + v.len as usize]
    }

    fn value_str(&self, v: &ValueEntry) -> Result<&str> {
        std::str::from_utf8(self.value_bytes(v))
            .map_err(|_| Error::corrupt(&self.name, v.pos, "label value is not UTF-8"))
    }

    fn values_of(&self, name: &str) -> &[ValueEntry] {
        match self.name_entry(name) {
            Some(e) => &self.values[e.start as usize..e.end as usize],
            None => &[],
        }
    }

    /// Values of label `name`, sorted (empty when the name is absent).
    pub fn label_values(&self, name: &str) -> Result<Vec<&str>> {
        self.values_of(name)
            .iter()
            .map(|v| self.value_str(v))
            .collect()
    }

    /// Series references with `name="value"` (empty when none).
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>> {
        let vals = self.values_of(name);
        match vals.binary_search_by(|v| self.value_bytes(v).cmp(value.as_bytes())) {
            Ok(i) => self.read_postings(vals[i].postings),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Every series reference in the index, sorted.
    pub fn all_postings(&self) -> Result<Vec<u64>> {
        match self.all_postings {
            Some(off) => self.read_postings(off),
            None => Ok(Vec::new()),
        }
    }

    /// The union of the postings of every value of `name` for which `pred` holds.
    ///
    /// The predicate runs over the label's value list first; when it accepts every
    /// value of a label every series carries (`{__name__=~".+"}`, `job=~".*x.*"` where
    /// all jobs match) the answer is the all-series list, read once instead of merging
    /// one list per value.
    pub fn postings_matching(
        &self,
        name: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<Vec<u64>> {
        let values = self.values_of(name);
        let mut picked = Vec::with_capacity(values.len());
        for v in values {
            if pred(self.value_str(v)?) {
                picked.push(v.postings);
            }
        }
        if picked.len() == values.len() && !picked.is_empty() {
            if let Some(all) = self.all_postings {
                let mut total = 0u64;
                for &off in &picked {
                    total += u64::from(self.postings_len(off)?);
                }
                // Each series holds a label once: the lists are disjoint, so equal
                // sizes mean the union is every series.
                if total == u64::from(self.postings_len(all)?) {
                    return self.read_postings(all);
                }
            }
        }
        let lists = picked
            .into_iter()
            .map(|off| self.read_postings(off))
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::postings::merge(&lists))
    }

    /// The number of entries of the postings list at `off`, without reading it.
    fn postings_len(&self, off: u64) -> Result<u32> {
        let (body, base) = self.section(off, "postings list")?;
        Dec::new(body, base, &self.name).be32()
    }

    /// The union of the postings of the listed values of `name`.
    pub fn postings_for_values(&self, name: &str, values: &[&str]) -> Result<Vec<u64>> {
        let mut lists = Vec::with_capacity(values.len());
        for v in values {
            let p = self.postings(name, v)?;
            if !p.is_empty() {
                lists.push(p);
            }
        }
        Ok(crate::postings::merge(&lists))
    }

    /// The postings list of `name="value"` read in place (checksum verified, entries
    /// not decoded); `None` when the index has no such pair. An equality matcher's list
    /// can hold most of a block while the query keeps a few of its series: searching
    /// it where it lies beats decoding it whole.
    pub fn postings_raw(&self, name: &str, value: &str) -> Result<Option<RawPostings<'_>>> {
        let vals = self.values_of(name);
        let Ok(i) = vals.binary_search_by(|v| self.value_bytes(v).cmp(value.as_bytes())) else {
            return Ok(None);
        };
        let off = vals[i].postings;
        let (body, _) = self.section(off, "postings list")?;
        let n = body
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
        if n.is_none_or(|n| body.len() != 4 + 4 * n) {
            return Err(Error::corrupt(
                &self.name,
                off,
                format!("postings list section of {} bytes", body.len()),
            ));
        }
        Ok(Some(RawPostings {
            refs: &body[4..],
            off,
        }))
    }

    /// A [`RawPostings`] decoded and checked strictly increasing.
    pub fn decode_postings(&self, raw: RawPostings<'_>) -> Result<Vec<u64>> {
        self.read_postings(raw.off)
    }

    fn read_postings(&self, off: u64) -> Result<Vec<u64>> {
        let (body, base) = self.section(off, "postings list")?;
        let mut d = Dec::new(body, base, &self.name);
        let n = d.be32()? as usize;
        if body.len() != 4 + 4 * n {
            return Err(Error::corrupt(
                &self.name,
                off,
                format!(
                    "postings list of {n} entries in a section of {} bytes",
                    body.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(n);
        let mut last: Option<u32> = None;
        for c in body[4..].chunks_exact(4) {
            let r = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            if last.is_some_and(|l| r <= l) {
                return Err(Error::corrupt(
                    &self.name,
                    off,
                    "postings list is not strictly increasing",
                ));
            }
            last = Some(r);
            out.push(u64::from(r));
        }
        Ok(out)
    }

    /// The label set and chunk metas of series `series_ref`.
    pub fn series(&self, series_ref: u64) -> Result<(Labels, Vec<ChunkMeta>)> {
        self.decode_series(series_ref, &mut |i| self.symbol_shared(i))
    }

    /// As [`series`](Self::series), with strings shared through `interner` (e.g. across
    /// the blocks of one query).
    pub fn series_with(
        &self,
        series_ref: u64,
        interner: &mut Interner,
    ) -> Result<(Labels, Vec<ChunkMeta>)> {
        self.decode_series(series_ref, &mut |i| Ok(interner.intern(self.symbol(i)?)))
    }

    fn decode_series(
        &self,
        series_ref: u64,
        sym: &mut dyn FnMut(u32) -> Result<Symbol>,
    ) -> Result<(Labels, Vec<ChunkMeta>)> {
        let end = self.data.len() - TOC_LEN;
        let off = match series_ref.checked_mul(SERIES_ALIGN) {
            Some(o) if o >= self.toc.series && o < end as u64 => o,
            _ => {
                return Err(Error::corrupt(
                    &self.name,
                    self.toc.series,
                    format!("series reference {series_ref} outside the series section"),
                ))
            }
        };
        let mut d = Dec::new(&self.data[off as usize..end], off, &self.name);
        let l = d.uvarint()?;
        let l = usize::try_from(l).map_err(|_| d.err("series length overflows"))?;
        let base = d.offset();
        let body = d.bytes(l)?;
        let want = d.be32()?;
        let got = crc32c::crc32c(body);
        if want != got {
            return Err(Error::corrupt(
                &self.name,
                off,
                format!("series {series_ref}: checksum mismatch: stored {want:#010x}, computed {got:#010x}"),
            ));
        }
        let mut d = Dec::new(body, base, &self.name);
        let k = d.uvarint()?;
        let mut labels: Vec<Label> = Vec::with_capacity((k as usize).min(body.len() / 2));
        for _ in 0..k {
            let at = d.offset();
            let n = d.uvarint32()?;
            let v = d.uvarint32()?;
            let name = sym(n)?;
            let value = sym(v)?;
            if labels.last().is_some_and(|p| p.name >= name) {
                return Err(Error::corrupt(
                    &self.name,
                    at,
                    format!("series {series_ref}: label names not sorted"),
                ));
            }
            labels.push(Label { name, value });
        }
        let k = d.uvarint()?;
        let mut chunks = Vec::with_capacity((k as usize).min(d.remaining() / 3 + 1));
        if k > 0 {
            let t0 = d.varint()?;
            let maxt = (d.uvarint()? as i64).wrapping_add(t0);
            let mut r = d.uvarint()? as i64;
            chunks.push(ChunkMeta::new(t0, maxt, r as u64));
            let mut t0 = maxt;
            for _ in 1..k {
                let mint = (d.uvarint()? as i64).wrapping_add(t0);
                let maxt = (d.uvarint()? as i64).wrapping_add(mint);
                r = r.wrapping_add(d.varint()?);
                t0 = maxt;
                chunks.push(ChunkMeta::new(mint, maxt, r as u64));
            }
        }
        Ok((Labels::from_sorted_unchecked(labels), chunks))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::matcher::{MatchOp, Matcher};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// An in-memory index of `n` series `{__name__="m<i%3>", i="<i>", [even="yes"]}`
    /// with two chunks each.
    pub(crate) fn build_index(series: &[Labels]) -> Vec<u8> {
        let mut sorted = series.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut syms = BTreeSet::new();
        for s in &sorted {
            for l in s {
                syms.insert(l.name.to_string());
                syms.insert(l.value.to_string());
            }
        }
        let mut w = IndexWriter::new(Vec::new(), "index", &syms).unwrap();
        for (i, s) in sorted.iter().enumerate() {
            let i = i as i64;
            let c = [
                ChunkMeta::new(i * 10, i * 10 + 5, 8 + i as u64 * 100),
                ChunkMeta::new(i * 10 + 6, i * 10 + 9, 8 + i as u64 * 100 + 50),
            ];
            w.add_series(s, &c).unwrap();
        }
        w.finish().unwrap()
    }

    pub(crate) fn sample_series(n: usize) -> Vec<Labels> {
        (0..n)
            .map(|i| {
                let mut p = vec![
                    ("__name__".to_string(), format!("m{}", i % 3)),
                    ("i".to_string(), format!("{i}")),
                ];
                if i % 2 == 0 {
                    p.push(("even".into(), "yes".into()));
                }
                Labels::from_pairs(p)
            })
            .collect()
    }

    #[test]
    fn varints_match_go() {
        let mut b = Vec::new();
        put_uvarint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
        b.clear();
        put_varint(&mut b, -1);
        assert_eq!(b, [0x01]);
        b.clear();
        put_varint(&mut b, i64::MIN);
        put_uvarint(&mut b, u64::MAX);
        let mut d = Dec::new(&b, 0, Path::new("x"));
        assert_eq!(d.varint().unwrap(), i64::MIN);
        assert_eq!(d.uvarint().unwrap(), u64::MAX);
        assert!(d.is_empty());
        let over = [0xff; 10];
        assert!(Dec::new(&over, 0, Path::new("x")).uvarint().is_err());
    }

    #[test]
    fn layout_matches_format() {
        let idx = build_index(&sample_series(5));
        assert_eq!(&idx[..4], &[0xBA, 0xAA, 0xD7, 0x00]);
        assert_eq!(idx[4], 2);
        let r = IndexReader::new(Bytes::from(idx.clone()), "index").unwrap();
        let t = *r.toc();
        assert_eq!(t.symbols, 5);
        assert!(t.symbols < t.series);
        assert!(t.series <= t.label_indices);
        assert!(t.label_indices <= t.postings);
        assert!(t.postings < t.label_indices_table);
        assert!(t.label_indices_table < t.postings_table);
        assert_eq!(t.postings % 4, 0);
        // Series are 16-byte aligned: refs * 16 are offsets into the series section.
        for r0 in r.all_postings().unwrap() {
            assert!(r0 * 16 >= t.series && r0 * 16 < t.label_indices);
        }
        // First label index is `__name__`: 1 name, 3 entries (symbols of m0, m1, m2).
        let li = t.label_indices as usize;
        let li = li + (4 - li % 4) % 4;
        let len = u32::from_be_bytes(idx[li..li + 4].try_into().unwrap());
        assert_eq!(len, 20);
        assert_eq!(&idx[li + 4..li + 8], &1u32.to_be_bytes());
        assert_eq!(&idx[li + 8..li + 12], &3u32.to_be_bytes());
        let m0 = r.symbols().position(|s| s.unwrap() == "m0").unwrap() as u32;
        assert_eq!(&idx[li + 12..li + 16], &m0.to_be_bytes());
        // Label offset table holds the three names.
        let lt = t.label_indices_table as usize;
        assert_eq!(&idx[lt + 4..lt + 8], &3u32.to_be_bytes());
        // Postings offset table starts with the all-postings key "" "".
        let pt = t.postings_table as usize;
        assert_eq!(&idx[pt + 8..pt + 11], &[2, 0, 0]);
    }

    #[test]
    fn reader_round_trip() {
        let series = sample_series(100);
        let idx = build_index(&series);
        let r = IndexReader::new(Bytes::from(idx), "index").unwrap();
        let mut sorted = series.clone();
        sorted.sort();

        let syms: Vec<&str> = r.symbols().collect::<Result<_>>().unwrap();
        assert!(syms.windows(2).all(|w| w[0] < w[1]));
        assert!(syms.contains(&"__name__") && syms.contains(&"yes") && syms.contains(&"99"));
        assert_eq!(r.label_names(), vec!["__name__", "even", "i"]);
        assert_eq!(r.label_values("__name__").unwrap(), vec!["m0", "m1", "m2"]);
        assert_eq!(r.label_values("even").unwrap(), vec!["yes"]);
        assert!(r.label_values("nope").unwrap().is_empty());

        let all = r.all_postings().unwrap();
        assert_eq!(all.len(), 100);
        for (i, sref) in all.iter().enumerate() {
            let (l, c) = r.series(*sref).unwrap();
            assert_eq!(l, sorted[i]);
            let i = i as i64;
            assert_eq!(
                c,
                vec![
                    ChunkMeta::new(i * 10, i * 10 + 5, 8 + i as u64 * 100),
                    ChunkMeta::new(i * 10 + 6, i * 10 + 9, 8 + i as u64 * 100 + 50)
                ]
            );
            let mut int = Interner::new();
            assert_eq!(
                r.series_with(*sref, &mut int).unwrap().0,
                sorted[i as usize]
            );
        }
        let m1 = r.postings("__name__", "m1").unwrap();
        assert_eq!(m1.len(), 33);
        for s in &m1 {
            assert_eq!(r.series(*s).unwrap().0.get("__name__"), Some("m1"));
        }
        assert_eq!(r.postings("even", "yes").unwrap().len(), 50);
        assert!(r.postings("even", "no").unwrap().is_empty());
        assert!(r.postings("zzz", "yes").unwrap().is_empty());
        assert_eq!(
            r.postings_for_values("__name__", &["m0", "m2", "nope"])
                .unwrap()
                .len(),
            67
        );
        assert_eq!(
            r.postings_matching("i", |v| v.starts_with('9'))
                .unwrap()
                .len(),
            11
        );
        // Symbol strings are shared between series of the same index.
        let (a, _) = r.series(all[0]).unwrap();
        let (b, _) = r.series(all[3]).unwrap();
        assert!(Symbol::ptr_eq(&a.as_slice()[0].name, &b.as_slice()[0].name));
    }

    #[test]
    fn writer_rejects_bad_input() {
        let syms = ["__name__", "a", "b"];
        let mut w = IndexWriter::new(Vec::new(), "index", syms).unwrap();
        let b = Labels::from_pairs([("__name__", "b")]);
        let a = Labels::from_pairs([("__name__", "a")]);
        w.add_series(&b, &[]).unwrap();
        assert!(w.add_series(&a, &[]).is_err(), "out of order");
        assert!(w.add_series(&b, &[]).is_err(), "duplicate");
        let c = Labels::from_pairs([("__name__", "c")]);
        assert!(w.add_series(&c, &[]).is_err(), "unknown symbol");
        assert!(IndexWriter::new(Vec::new(), "index", ["b", "a"]).is_err());
        let mut w = IndexWriter::new(Vec::new(), "index", syms).unwrap();
        let overlap = [ChunkMeta::new(0, 10, 0), ChunkMeta::new(10, 20, 5)];
        assert!(w.add_series(&a, &overlap).is_err());
    }

    #[test]
    fn empty_index_reads() {
        let w = IndexWriter::new(Vec::new(), "index", Vec::<String>::new()).unwrap();
        let idx = w.finish().unwrap();
        let r = IndexReader::new(Bytes::from(idx), "index").unwrap();
        assert!(r.all_postings().unwrap().is_empty());
        assert!(r.label_names().is_empty());
        assert_eq!(r.num_symbols(), 0);
    }

    #[test]
    fn corruption_is_reported_with_file_and_offset() {
        let idx = build_index(&sample_series(20));
        let r = IndexReader::new(Bytes::from(idx.clone()), "/blocks/X/index").unwrap();
        let sref = r.all_postings().unwrap()[3];
        let off = sref * 16;

        // Flip a byte inside that series' body.
        let mut bad = idx.clone();
        bad[off as usize + 3] ^= 0x40;
        let r = IndexReader::new(Bytes::from(bad), "/blocks/X/index").unwrap();
        let e = r.series(sref).unwrap_err();
        match &e {
            Error::Corrupt {
                file,
                offset,
                reason,
            } => {
                assert_eq!(file, Path::new("/blocks/X/index"));
                assert_eq!(*offset, off);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains("/blocks/X/index"));
        assert!(e.to_string().contains(&off.to_string()));

        // Truncation: the TOC no longer checks out.
        for cut in [0, 4, 30, idx.len() / 2, idx.len() - 1] {
            let e = IndexReader::new(Bytes::copy_from_slice(&idx[..cut]), "index").unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert!(e.to_string().starts_with("index: corrupt at offset"), "{e}");
        }

        // Symbol table damage is found at open.
        let mut bad = idx.clone();
        bad[12] ^= 1;
        let e = IndexReader::new(Bytes::from(bad), "index").unwrap_err();
        assert!(e.to_string().contains("symbol table"), "{e}");

        // A reference into the middle of nowhere.
        let r = IndexReader::new(Bytes::from(idx), "index").unwrap();
        assert!(r.series(u64::MAX).is_err());
        assert!(r.series(0).is_err());
        assert!(r.series(sref + 1).is_err());
    }

    fn exercise(r: &IndexReader) {
        let _ = r.symbols().count();
        for n in r.label_names() {
            if let Ok(vals) = r.label_values(n) {
                for v in vals {
                    let _ = r.postings(n, v);
                }
            }
        }
        if let Ok(all) = r.all_postings() {
            for s in all {
                let _ = r.series(s);
                let _ = r.series_with(s, &mut Interner::new());
            }
        }
        let ms = [
            Matcher::new(MatchOp::RegexMatch, "i", "1.*").unwrap(),
            Matcher::new(MatchOp::NotEqual, "even", "yes").unwrap(),
        ];
        let _ = crate::postings::postings_for_matchers(r, &ms);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn damaged_index_never_panics(
            cut in 0usize..4000,
            flips in proptest::collection::vec((0usize..4000, 1u8..=255), 0..4),
        ) {
            static IDX: OnceLock<Vec<u8>> = OnceLock::new();
            let idx = IDX.get_or_init(|| build_index(&sample_series(40)));
            let mut b = idx.clone();
            for (pos, x) in flips {
                let p = pos % b.len();
                b[p] ^= x;
            }
            if cut < b.len() && cut % 3 == 0 {
                b.truncate(cut);
            }
            if let Ok(r) = IndexReader::new(Bytes::from(b), "index") {
                exercise(&r);
            }
        }

        #[test]
        fn raw_postings_seek_as_partition_point(
            set in proptest::collection::btree_set(0u32..5000, 0..400),
            probes in proptest::collection::vec(0u64..5100, 0..50),
            lo in 0usize..420,
        ) {
            let v: Vec<u64> = set.iter().map(|&x| u64::from(x)).collect();
            let bytes: Vec<u8> = set.iter().flat_map(|x| x.to_be_bytes()).collect();
            let raw = RawPostings { refs: &bytes, off: 0 };
            prop_assert_eq!(raw.len(), v.len());
            for x in probes {
                let lo = lo.min(v.len());
                let want = lo + v[lo..].partition_point(|&r| r < x);
                prop_assert_eq!(raw.seek(lo, x), want, "seek({}, {})", lo, x);
            }
        }
    }
}
