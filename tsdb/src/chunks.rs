//! A block's chunk segment files, `chunks/000001`, `chunks/000002`, … in the format of
//! Prometheus's `tsdb/docs/format/chunks.md`:
//!
//! ```text
//! segment: magic 0x85BD40DD <4 bytes BE> | version 1 <1 byte> | padding <3 bytes> | chunk…
//! chunk:   len <uvarint> | encoding <1 byte> | data <len bytes> | CRC32-C(encoding + data) <4 bytes BE>
//! ```
//!
//! A [`ChunkRef`] packs the segment's index (0-based, in file-name order) into the upper
//! 32 bits and the chunk's byte offset in that file into the lower 32 bits.

use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::Mmap;

use crate::chunkenc::Encoding;
use crate::error::{Error, Result};

/// Chunk reference as Prometheus stores it in the index: segment file sequence (0-based index, files are named
/// from 000001) in the upper 32 bits, byte offset in the file in the lower 32 bits.
pub type ChunkRef = u64;

/// Prometheus's `DefaultChunkSegmentSize`.
pub const SEGMENT_MAX_SIZE: u64 = 512 * 1024 * 1024;

/// Magic number at the start of every segment file.
pub const MAGIC_CHUNKS: u32 = 0x85BD_40DD;
/// The only segment format version.
pub const CHUNKS_FORMAT_V1: u8 = 1;
/// Magic, version and 3 bytes of padding.
pub const SEGMENT_HEADER_SIZE: u64 = 8;

/// Prometheus reserves `binary.MaxVarintLen32` bytes for the length when deciding
/// whether a chunk still fits into the current segment.
const MAX_CHUNK_LEN_FIELD_SIZE: u64 = 5;
const CRC_SIZE: u64 = 4;
use crate::varint::MAX_LEN as MAX_VARINT_LEN;

const WRITE_BUFFER_SIZE: usize = 8 * 1024 * 1024;

/// Builds a [`ChunkRef`] from a 0-based segment index and a byte offset.
#[inline]
pub fn chunk_ref(segment: u32, offset: u32) -> ChunkRef {
    (segment as u64) << 32 | offset as u64
}

/// Splits a [`ChunkRef`] into (0-based segment index, byte offset).
#[inline]
pub fn unpack_ref(r: ChunkRef) -> (u32, u32) {
    ((r >> 32) as u32, r as u32)
}

/// The file name of the segment with 0-based index `index`: `000001` for 0.
pub fn segment_file_name(index: u32) -> String {
    format!("{:06}", index as u64 + 1)
}

struct OpenSegment {
    path: PathBuf,
    w: BufWriter<File>,
    /// Bytes written to the segment so far, header included.
    n: u64,
}

/// Writes chunks into numbered segment files, starting a new one before a chunk would
/// push the current one past the segment size (a chunk larger than that gets a segment
/// of its own). Segments are created on the first write, so a block without chunks has
/// an empty `chunks/` directory, as Prometheus's has.
pub struct ChunkWriter {
    dir: PathBuf,
    segment_size: u64,
    cur: Option<OpenSegment>,
    /// Number of segments created so far.
    segments: u32,
}

impl fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("dir", &self.dir)
            .field("segments", &self.segments)
            .finish()
    }
}

impl ChunkWriter {
    /// `dir` = `<block>/chunks`, created if missing. Existing segment files are never
    /// overwritten (creating one that exists fails).
    pub fn create(dir: &Path) -> Result<Self> {
        Self::with_segment_size(dir, SEGMENT_MAX_SIZE)
    }

    /// Like [`ChunkWriter::create`] with a smaller segment size (tests, tools).
    /// Sizes above 4 GiB are clamped, as chunk offsets are 32-bit.
    pub fn with_segment_size(dir: &Path, segment_size: u64) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(ChunkWriter {
            dir: dir.to_path_buf(),
            segment_size: segment_size.min(u32::MAX as u64),
            cur: None,
            segments: 0,
        })
    }

    /// Appends a chunk and returns its reference. Buffered: the data reaches the file
    /// by [`ChunkWriter::finish`] at the latest.
    pub fn write(&mut self, encoding: Encoding, data: &[u8]) -> Result<ChunkRef> {
        let len = data.len() as u64;
        if len > u32::MAX as u64 - 64 {
            return Err(Error::Invalid(format!("chunk of {len} bytes is too large")));
        }
        let max_size = MAX_CHUNK_LEN_FIELD_SIZE + 1 + len + CRC_SIZE;
        let need_cut = match &self.cur {
            None => true,
            Some(s) => s.n > SEGMENT_HEADER_SIZE && s.n + max_size > self.segment_size,
        };
        if need_cut {
            self.cut()?;
        }
        let seq = self.segments - 1;
        let Some(seg) = self.cur.as_mut() else {
            unreachable!("cut() opens a segment");
        };
        let offset = seg.n;
        if offset > u32::MAX as u64 {
            return Err(Error::Invalid(format!(
                "{}: segment offset {offset} exceeds 32 bits",
                seg.path.display()
            )));
        }

        let mut head = [0u8; 11];
        let mut i = 0;
        let mut x = len;
        while x >= 0x80 {
            head[i] = x as u8 | 0x80;
            x >>= 7;
            i += 1;
        }
        head[i] = x as u8;
        head[i + 1] = encoding as u8;
        let head = &head[..i + 2];
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[encoding as u8]), data);

        let io = |e| Error::io(&seg.path, e);
        seg.w.write_all(head).map_err(io)?;
        seg.w.write_all(data).map_err(io)?;
        seg.w.write_all(&crc.to_be_bytes()).map_err(io)?;
        seg.n += head.len() as u64 + len + CRC_SIZE;
        Ok(chunk_ref(seq, offset as u32))
    }

    /// Finishes the current segment (if any) and opens the next one with its header.
    fn cut(&mut self) -> Result<()> {
        if let Some(seg) = self.cur.take() {
            finalize(seg)?;
        }
        let path = self.dir.join(segment_file_name(self.segments));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut w = BufWriter::with_capacity(WRITE_BUFFER_SIZE, file);
        let mut header = [0u8; SEGMENT_HEADER_SIZE as usize];
        header[..4].copy_from_slice(&MAGIC_CHUNKS.to_be_bytes());
        header[4] = CHUNKS_FORMAT_V1;
        w.write_all(&header).map_err(|e| Error::io(&path, e))?;
        self.cur = Some(OpenSegment {
            path,
            w,
            n: SEGMENT_HEADER_SIZE,
        });
        self.segments += 1;
        Ok(())
    }

    /// Flushes and fsyncs the segment files and the directory.
    pub fn finish(mut self) -> Result<()> {
        if let Some(seg) = self.cur.take() {
            finalize(seg)?;
        }
        let d = File::open(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        d.sync_all().map_err(|e| Error::io(&self.dir, e))
    }
}

fn finalize(seg: OpenSegment) -> Result<()> {
    let OpenSegment { path, w, .. } = seg;
    let file = w
        .into_inner()
        .map_err(|e| Error::io(&path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(&path, e))
}

enum SegmentData {
    Mmap(Mmap),
    Bytes(Bytes),
}

impl Deref for SegmentData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SegmentData::Mmap(m) => m,
            SegmentData::Bytes(b) => b,
        }
    }
}

/// Reads chunks from a block's segment files, memory-mapped, or from segments already
/// in memory. Every chunk's CRC is verified on access.
pub struct ChunkReader {
    segments: Vec<(PathBuf, SegmentData)>,
    size: u64,
}

impl fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let segs: Vec<_> = self
            .segments
            .iter()
            .map(|(p, d)| (p.as_path(), d.len()))
            .collect();
        f.debug_struct("ChunkReader")
            .field("segments", &segs)
            .finish()
    }
}

impl ChunkReader {
    /// Opens every segment file (names that are decimal numbers, in numeric order) in
    /// `dir` and checks its header.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(seq) = name.parse::<u64>() else {
                continue;
            };
            files.push((seq, entry.path()));
        }
        files.sort();
        let mut segments = Vec::with_capacity(files.len());
        for (_, path) in files {
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            if len < SEGMENT_HEADER_SIZE {
                return Err(short_header(&path, len));
            }
            // SAFETY: segment files of a block are immutable once the block is written;
            // nothing in Strata writes to or truncates them while they are open. (The same
            // assumption Prometheus makes when it mmaps them.)
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            segments.push((path, SegmentData::Mmap(map)));
        }
        Self::new(segments)
    }

    /// Also a constructor from in-memory segments (for object-storage range reads later).
    /// The paths name the segments in errors; their order gives the segment indexes.
    pub fn from_segments(segments: Vec<(PathBuf, bytes::Bytes)>) -> Result<Self> {
        Self::new(
            segments
                .into_iter()
                .map(|(p, b)| (p, SegmentData::Bytes(b)))
                .collect(),
        )
    }

    fn new(segments: Vec<(PathBuf, SegmentData)>) -> Result<Self> {
        let mut size = 0;
        for (path, data) in &segments {
            if data.len() < SEGMENT_HEADER_SIZE as usize {
                return Err(short_header(path, data.len() as u64));
            }
            let magic = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            if magic != MAGIC_CHUNKS {
                return Err(Error::corrupt(
                    path,
                    0,
                    format!("invalid magic number {magic:#010x}, want {MAGIC_CHUNKS:#010x}"),
                ));
            }
            if data[4] != CHUNKS_FORMAT_V1 {
                return Err(Error::corrupt(
                    path,
                    4,
                    format!("invalid chunk format version {}", data[4]),
                ));
            }
            size += data.len() as u64;
        }
        Ok(ChunkReader { segments, size })
    }

    /// The chunk at `r`: its encoding and data (borrowed from the segment). Verifies
    /// CRC32-Castagnoli over encoding byte + data; errors name the file and the chunk's
    /// byte offset.
    pub fn chunk(&self, r: ChunkRef) -> Result<(Encoding, &[u8])> {
        let (seg, off) = unpack_ref(r);
        let Some((path, data)) = self.segments.get(seg as usize) else {
            return Err(Error::Invalid(format!(
                "chunk reference {r:#x}: segment index {seg} out of range ({} segments)",
                self.segments.len()
            )));
        };
        let b: &[u8] = data;
        let off = off as u64;
        let corrupt = |reason: String| Error::corrupt(path, off, reason);
        if off < SEGMENT_HEADER_SIZE {
            return Err(corrupt(
                "chunk reference points into the segment header".into(),
            ));
        }
        let rest = b.get(off as usize..).unwrap_or(&[]);
        if rest.is_empty() {
            return Err(corrupt(format!(
                "chunk reference beyond the end of the segment ({} bytes)",
                b.len()
            )));
        }
        match parse_chunk(rest, path, off)? {
            ParsedChunk::Chunk(enc, range) => Ok((enc, &rest[range])),
            // The whole rest of the segment is here: a chunk needing more is cut off.
            ParsedChunk::Needs(total) => Err(corrupt(format!(
                "chunk runs past the end of the segment ({} bytes): it needs {total} bytes",
                b.len()
            ))),
        }
    }

    /// Total bytes of all segments.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of segments.
    pub fn num_segments(&self) -> usize {
        self.segments.len()
    }
}

/// What [`parse_chunk`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedChunk {
    /// A complete chunk whose CRC matched: its encoding and its data's byte range in
    /// the buffer.
    Chunk(Encoding, Range<usize>),
    /// The buffer holds only the chunk's first bytes: it needs this many from its start
    /// (a lower bound when even the length field is cut off). Whoever reads by ranges
    /// must bound this before asking for it: it comes from the (maybe corrupt) file.
    Needs(u64),
}

/// Parses `len <uvarint> | encoding | data | CRC32-C` at the start of `b`, the bytes of
/// segment `file` from offset `off` on (the whole rest of a segment, or a prefix of it
/// from a range read). The one chunk parser: memory-mapped segments and the querier's
/// range reads both use it, so both reject damage the same way. Errors are
/// [`Error::Corrupt`] naming `file` and `off`; no length, however corrupt, panics.
pub fn parse_chunk(b: &[u8], file: &Path, off: u64) -> Result<ParsedChunk> {
    let corrupt = |reason: String| Error::corrupt(file, off, reason);
    let (len, n) = match uvarint(b) {
        Some(v) => v,
        // Every byte so far continues the varint: the length itself is cut off.
        None if b.len() < MAX_VARINT_LEN && b.iter().all(|&x| x >= 0x80) => {
            return Ok(ParsedChunk::Needs(MAX_VARINT_LEN as u64 + 1 + CRC_SIZE));
        }
        None => return Err(corrupt("invalid chunk length".into())),
    };
    // `len` is whatever the file says: add with overflow checks.
    let Some(total) = len.checked_add(n as u64 + 1 + CRC_SIZE) else {
        return Err(corrupt(format!("invalid chunk length {len}")));
    };
    if total > b.len() as u64 {
        return Ok(ParsedChunk::Needs(total));
    }
    let end = total as usize - CRC_SIZE as usize;
    let body = &b[n..end];
    let sum = &b[end..end + CRC_SIZE as usize];
    let want = u32::from_be_bytes([sum[0], sum[1], sum[2], sum[3]]);
    let got = crc32c::crc32c(body);
    if got != want {
        return Err(corrupt(format!(
            "chunk checksum mismatch: stored {want:08x}, computed {got:08x}"
        )));
    }
    let enc = Encoding::from_u8(body[0])
        .ok_or_else(|| corrupt(format!("unknown chunk encoding {}", body[0])))?;
    Ok(ParsedChunk::Chunk(enc, n + 1..end))
}

fn short_header(path: &Path, len: u64) -> Error {
    Error::corrupt(
        path,
        0,
        format!("segment of {len} bytes is shorter than its {SEGMENT_HEADER_SIZE}-byte header"),
    )
}

/// Go's `binary.Uvarint` (the shared one), `None` if truncated or overflowing.
#[inline]
fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    crate::varint::uvarint(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkenc::XorChunk;
    use proptest::prelude::*;

    fn xor_chunk(n: i64, seed: i64) -> Vec<u8> {
        let mut c = XorChunk::new();
        for i in 0..n {
            c.append(seed + i * 15_000, (i * seed) as f64 * 0.25);
        }
        c.into_bytes()
    }

    fn expect_corrupt(r: Result<impl fmt::Debug>, file: &Path, offset: u64) -> String {
        match r {
            Err(Error::Corrupt {
                file: f,
                offset: o,
                reason,
            }) => {
                assert_eq!(f, file);
                assert_eq!(o, offset, "{reason}");
                reason
            }
            other => panic!("want Corrupt at {}:{offset}, got {other:?}", file.display()),
        }
    }

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn exact_segment_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = dir.path().join("chunks");
        let mut w = ChunkWriter::create(&cdir).unwrap();
        let data = [0u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let r = w.write(Encoding::Xor, &data).unwrap();
        w.finish().unwrap();
        assert_eq!(r, 8);
        let file = fs::read(cdir.join("000001")).unwrap();
        let mut want = vec![0x85, 0xBD, 0x40, 0xDD, 1, 0, 0, 0, 12, 1];
        want.extend_from_slice(&data);
        let mut crc_in = vec![1u8];
        crc_in.extend_from_slice(&data);
        want.extend_from_slice(&crc32c::crc32c(&crc_in).to_be_bytes());
        assert_eq!(file, want);
    }

    #[test]
    fn roundtrip_and_segment_cutting() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = dir.path().join("chunks");
        let mut w = ChunkWriter::with_segment_size(&cdir, 1000).unwrap();
        let mut written = Vec::new();
        for i in 0..100 {
            let data = xor_chunk(1 + i % 120, i);
            let enc = if i % 10 == 3 {
                Encoding::Histogram
            } else {
                Encoding::Xor
            };
            let r = w.write(enc, &data).unwrap();
            written.push((r, enc, data));
        }
        // A chunk larger than the segment size gets a segment of its own.
        let big = vec![7u8; 3000];
        let rbig = w.write(Encoding::FloatHistogram, &big).unwrap();
        let rafter = w.write(Encoding::Xor, &[0, 0]).unwrap();
        w.finish().unwrap();
        assert_eq!(unpack_ref(rbig).1, 8);
        assert_eq!(unpack_ref(rafter), (unpack_ref(rbig).0 + 1, 8));
        assert_eq!(written[0].0, 8);

        let rd = ChunkReader::open(&cdir).unwrap();
        let nseg = unpack_ref(rafter).0 as usize + 1;
        assert!(nseg > 5);
        assert_eq!(rd.num_segments(), nseg);
        let mut total = 0;
        for i in 0..nseg as u32 {
            let p = cdir.join(segment_file_name(i));
            let len = fs::metadata(&p).unwrap().len();
            assert!(len <= 1000 || i == unpack_ref(rbig).0, "{i}: {len}");
            total += len;
        }
        assert_eq!(rd.size(), total);
        for (r, enc, data) in &written {
            assert_eq!(rd.chunk(*r).unwrap(), (*enc, &data[..]));
        }
        assert_eq!(
            rd.chunk(rbig).unwrap(),
            (Encoding::FloatHistogram, &big[..])
        );
        assert_eq!(rd.chunk(rafter).unwrap(), (Encoding::Xor, &[0u8, 0][..]));

        // The same through in-memory segments.
        let segs = (0..nseg as u32)
            .map(|i| {
                let p = cdir.join(segment_file_name(i));
                let b = Bytes::from(fs::read(&p).unwrap());
                (p, b)
            })
            .collect();
        let mem = ChunkReader::from_segments(segs).unwrap();
        assert_eq!(mem.size(), rd.size());
        for (r, enc, data) in &written {
            assert_eq!(mem.chunk(*r).unwrap(), (*enc, &data[..]));
        }
        assert!(matches!(
            mem.chunk(chunk_ref(nseg as u32, 8)),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn every_flipped_byte_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = dir.path().join("chunks");
        let mut w = ChunkWriter::create(&cdir).unwrap();
        let a = xor_chunk(120, 3);
        let b = xor_chunk(50, 5);
        let ra = w.write(Encoding::Xor, &a).unwrap();
        let rb = w.write(Encoding::Xor, &b).unwrap();
        w.finish().unwrap();
        let path = cdir.join("000001");
        let orig = fs::read(&path).unwrap();
        for pos in (rb as usize)..orig.len() {
            let mut bad = orig.clone();
            bad[pos] ^= 0x5a;
            let rd = ChunkReader::from_segments(vec![(path.clone(), Bytes::from(bad))]).unwrap();
            assert_eq!(rd.chunk(ra).unwrap(), (Encoding::Xor, &a[..]));
            expect_corrupt(rd.chunk(rb), &path, rb);
        }
        // On disk, through mmap.
        let mut bad = orig.clone();
        bad[ra as usize + 20] ^= 1;
        fs::write(&path, &bad).unwrap();
        let rd = ChunkReader::open(&cdir).unwrap();
        let reason = expect_corrupt(rd.chunk(ra), &path, ra);
        assert!(reason.contains("checksum"), "{reason}");
        assert!(rd.chunk(rb).is_ok());
        let msg = rd.chunk(ra).unwrap_err().to_string();
        assert!(
            msg.contains("000001") && msg.contains(&ra.to_string()),
            "{msg}"
        );
    }

    #[test]
    fn truncated_bad_magic_bad_version() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = dir.path().join("chunks");
        let mut w = ChunkWriter::create(&cdir).unwrap();
        let r = w.write(Encoding::Xor, &xor_chunk(120, 1)).unwrap();
        w.finish().unwrap();
        let path = cdir.join("000001");
        let orig = fs::read(&path).unwrap();

        // Truncated inside the chunk.
        fs::write(&path, &orig[..orig.len() - 3]).unwrap();
        let rd = ChunkReader::open(&cdir).unwrap();
        let reason = expect_corrupt(rd.chunk(r), &path, 8);
        assert!(reason.contains("past the end"), "{reason}");
        // Truncated inside the header.
        fs::write(&path, &orig[..5]).unwrap();
        expect_corrupt(ChunkReader::open(&cdir), &path, 0);
        fs::write(&path, b"").unwrap();
        expect_corrupt(ChunkReader::open(&cdir), &path, 0);
        // Bad magic, bad version.
        let mut bad = orig.clone();
        bad[1] = 0;
        fs::write(&path, &bad).unwrap();
        expect_corrupt(ChunkReader::open(&cdir), &path, 0);
        let mut bad = orig.clone();
        bad[4] = 2;
        fs::write(&path, &bad).unwrap();
        expect_corrupt(ChunkReader::open(&cdir), &path, 4);

        // References off the data.
        fs::write(&path, &orig).unwrap();
        let rd = ChunkReader::open(&cdir).unwrap();
        expect_corrupt(rd.chunk(3), &path, 3);
        expect_corrupt(rd.chunk(orig.len() as u64), &path, orig.len() as u64);
        expect_corrupt(rd.chunk(u32::MAX as u64), &path, u32::MAX as u64);
    }

    #[test]
    fn open_ignores_other_files_and_orders_numerically() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = dir.path().join("chunks");
        let mut w = ChunkWriter::with_segment_size(&cdir, 64).unwrap();
        let refs: Vec<_> = (0..12u8)
            .map(|i| w.write(Encoding::Xor, &[i; 40]).unwrap())
            .collect();
        w.finish().unwrap();
        fs::write(cdir.join("notes.txt"), b"x").unwrap();
        fs::write(cdir.join("+1"), b"x").unwrap();
        // Renaming to unpadded numbers keeps numeric order (10 sorts after 9).
        for i in 0..12u32 {
            fs::rename(
                cdir.join(segment_file_name(i)),
                cdir.join((i + 1).to_string()),
            )
            .unwrap();
        }
        let rd = ChunkReader::open(&cdir).unwrap();
        assert_eq!(rd.num_segments(), 12);
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(unpack_ref(*r), (i as u32, 8));
            assert_eq!(rd.chunk(*r).unwrap(), (Encoding::Xor, &[i as u8; 40][..]));
        }
        // An empty directory is a block without chunks.
        let empty = dir.path().join("empty");
        ChunkWriter::create(&empty).unwrap().finish().unwrap();
        let rd = ChunkReader::open(&empty).unwrap();
        assert_eq!((rd.size(), rd.num_segments()), (0, 0));
        assert!(rd.chunk(8).is_err());
        // The writer refuses to overwrite existing segments.
        let mut w = ChunkWriter::create(&cdir).unwrap();
        fs::write(cdir.join("000001"), b"keep").unwrap();
        assert!(matches!(
            w.write(Encoding::Xor, &[0, 0]),
            Err(Error::Io { .. })
        ));
    }

    fn framed(enc: u8, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        let mut x = data.len() as u64;
        while x >= 0x80 {
            b.push(x as u8 | 0x80);
            x >>= 7;
        }
        b.push(x as u8);
        b.push(enc);
        b.extend_from_slice(data);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[enc]), data);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn parse_chunk_prefixes_and_absurd_lengths() {
        let p = Path::new("t/01J/chunks/000001");
        let data = xor_chunk(120, 7);
        let b = framed(Encoding::Xor as u8, &data);
        let ParsedChunk::Chunk(enc, r) = parse_chunk(&b, p, 8).unwrap() else {
            panic!("complete chunk");
        };
        assert_eq!((enc, &b[r]), (Encoding::Xor, &data[..]));
        for k in 0..b.len() {
            match parse_chunk(&b[..k], p, 8).unwrap() {
                ParsedChunk::Needs(n) => assert!(n > k as u64, "{k}: {n}"),
                c => panic!("prefix of {k} bytes parsed as {c:?}"),
            }
        }
        // A length of u64::MAX (and others near it) must not overflow.
        for len in [u64::MAX, u64::MAX - 3, 1 << 63] {
            let mut b = Vec::new();
            let mut x = len;
            while x >= 0x80 {
                b.push(x as u8 | 0x80);
                x >>= 7;
            }
            b.push(x as u8);
            b.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
            match parse_chunk(&b, p, 99) {
                Err(Error::Corrupt { file, offset, .. }) => {
                    assert_eq!((file.as_path(), offset), (p, 99))
                }
                Ok(ParsedChunk::Needs(n)) => assert!(n > b.len() as u64),
                other => panic!("{len}: {other:?}"),
            }
        }
        // Eleven continuation bytes: not a length at all.
        let reason = expect_corrupt(parse_chunk(&[0xff; 11], p, 8), p, 8);
        assert!(reason.contains("length"), "{reason}");
        // Unknown encoding with a good CRC.
        let reason = expect_corrupt(parse_chunk(&framed(9, &[0, 0]), p, 8), p, 8);
        assert!(reason.contains("encoding 9"), "{reason}");
    }

    proptest! {
        #[test]
        fn garbage_segments_never_panic(
            segs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..3),
            valid_header in any::<bool>(),
            refs in prop::collection::vec((0u32..4, 0u32..220), 0..20),
        ) {
            let segs = segs
                .into_iter()
                .enumerate()
                .map(|(i, mut s)| {
                    if valid_header && s.len() >= 8 {
                        s[..4].copy_from_slice(&MAGIC_CHUNKS.to_be_bytes());
                        s[4] = 1;
                    }
                    (PathBuf::from(segment_file_name(i as u32)), Bytes::from(s))
                })
                .collect();
            if let Ok(rd) = ChunkReader::from_segments(segs) {
                for (s, o) in refs {
                    let _ = rd.chunk(chunk_ref(s, o));
                }
            }
        }

        /// A prefix of any bytes parses as a prefix of what the whole parses as: a range
        /// read that fetched too little asks for more, never misreads or panics.
        #[test]
        fn parse_chunk_prefix_agrees_with_whole(
            b in prop::collection::vec(any::<u8>(), 0..64),
            small_len in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut b = b;
            if small_len && !b.is_empty() {
                b[0] &= 0x3f;
            }
            let p = Path::new("000001");
            let whole = parse_chunk(&b, p, 8);
            let k = cut.index(b.len() + 1);
            let part = parse_chunk(&b[..k], p, 8);
            match (&whole, &part) {
                (Ok(ParsedChunk::Chunk(_, r)), Ok(ParsedChunk::Needs(n))) => {
                    prop_assert!(*n > k as u64 && r.end < b.len() + 1)
                }
                (Ok(ParsedChunk::Chunk(..)), _) => prop_assert_eq!(
                    format!("{whole:?}"),
                    format!("{part:?}")
                ),
                (Ok(ParsedChunk::Needs(n)), Ok(ParsedChunk::Needs(m))) => {
                    prop_assert!(*m > k as u64 && *n > b.len() as u64)
                }
                (Ok(ParsedChunk::Needs(_)), other) => {
                    prop_assert!(false, "prefix {k}: {other:?}")
                }
                (Err(_), _) => {}
            }
        }

        #[test]
        fn valid_segment_with_random_refs(refs in prop::collection::vec(any::<u64>(), 0..50), flip in any::<prop::sample::Index>()) {
            let mut seg = vec![0x85, 0xBD, 0x40, 0xDD, 1, 0, 0, 0];
            for i in 0..5 {
                let data = xor_chunk(10 * i + 1, i);
                seg.push(data.len() as u8 | 0x80);
                seg.push((data.len() >> 7) as u8);
                seg.push(1);
                let crc = crc32c::crc32c_append(crc32c::crc32c(&[1]), &data);
                seg.extend_from_slice(&data);
                seg.extend_from_slice(&crc.to_be_bytes());
            }
            let i = 8 + flip.index(seg.len() - 8);
            seg[i] ^= 0xff;
            let rd = ChunkReader::from_segments(vec![("000001".into(), Bytes::from(seg))]).unwrap();
            for r in refs {
                let _ = rd.chunk(r);
                let _ = rd.chunk(r & 0xff);
            }
        }
    }
}
