//! Completed head chunks on disk, out of the process's memory: Prometheus ≥ 2.19's
//! `chunks_head/`. When a series closes a chunk, its bytes and a CRC32C are written
//! with one `pwrite` at an offset reserved in the current segment file (fixed maximum
//! size, 128 MiB by default, then the next segment); the series keeps only where they
//! are. An open XOR chunk gets a reservation early ([`ChunkFiles::reserve`]) and its
//! settled bytes go out as it grows ([`ChunkFiles::write_at`]); its close finishes it
//! in place, so it is read like any other chunk. Each chunk's record starts with
//! [`PREFIX_LEN`] bytes the series gives (the record of its chunk before this one), so
//! a series keeps only its newest closed chunk's record in memory and reads the older
//! ones from disk as it walks back.
//!
//! Queries read through a read-only shared memory map of each segment, made when the
//! segment is created and as long as the segment's maximum size (as Prometheus maps its
//! head chunk files): a chunk is a slice of the map, no syscall, no copy, no allocation.
//! Passes over the whole head (block cuts, checkpoints) read with `pread` instead
//! ([`Reader::read`] without `mapped`), so they do not leave every page mapped.
//! The map covers bytes not written yet, but a chunk is only read once its `pwrite`
//! returned, so every page read lies inside the file (a page past a file's end would be
//! `SIGBUS`; only a file cut short from outside the process can cause that, as for
//! Prometheus and this crate's mapped block files). A segment whose map cannot be made
//! is read with `pread` instead. Touched pages of the map count in the process's RSS
//! as file pages (`RssFile`), page cache the kernel can drop, not anonymous memory.
//! Each read checks the chunk's CRC: pages may have been evicted and read back from a
//! disk since the write, and the check costs ≈ 1.5% of a `select`.
//!
//! A segment is deleted once the head has truncated past every chunk in it (each
//! segment remembers the newest sample time written to it); readers still holding its
//! chunks keep its map (and the deleted file's pages) until they drop them. The files
//! are a cache of the head, never the only copy of a sample: the WAL holds everything
//! since the last checkpoint, so [`ChunkFiles::open`] deletes whatever a previous
//! process left and WAL replay writes the chunks anew. Hence the private format: per
//! chunk the series' [`PREFIX_LEN`]-byte prefix, its bytes, then a big-endian CRC32C of
//! prefix and bytes; no file header.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use bytes::Bytes;

use crate::error::{Error, Result};

/// Default maximum size of a segment file (Prometheus's `MaxHeadChunkFileSize`).
pub const DEFAULT_SEGMENT_BYTES: u32 = 128 * 1024 * 1024;

/// Highest segment number: a series keeps it in 24 bits (at 128 MiB a segment, 2 PiB
/// written in one process's life); past it chunks stay in memory.
pub(super) const MAX_SEGMENT_SEQ: u32 = 0xff_fffe;

/// Bytes after each chunk's data: the CRC32C of its prefix and data.
pub(super) const CRC_LEN: usize = 4;

/// Bytes before each chunk's data: whatever the series keeps there (the record of its
/// chunk before this one), covered by the CRC.
pub(super) const PREFIX_LEN: usize = 24;

/// The CRC32C (as written after a chunk) of a record whose first bytes are `front`
/// (the prefix and the chunk's two-byte sample count) and whose other `rest_len` bytes
/// have the CRC32C `rest_crc` (computed as they were written out, before the count was
/// final).
pub(super) fn crc_of_parts(front: &[u8], rest_crc: u32, rest_len: usize) -> [u8; CRC_LEN] {
    crc32c::crc32c_combine(crc32c::crc32c(front), rest_crc, rest_len).to_be_bytes()
}

/// Where a written chunk is: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkLoc {
    pub seg: u32,
    pub off: u32,
}

struct Segment {
    file: File,
    path: PathBuf,
    /// The whole segment's read-only map (see the module doc); `None` when it could not
    /// be made: reads `pread` then.
    map: Option<Bytes>,
    /// Newest sample time of any chunk written to it.
    max_t: AtomicI64,
    /// Bytes reserved in it.
    bytes: AtomicU64,
}

impl Segment {
    /// `len` bytes at `off`: a slice of the map with `mapped` (when there is one), else
    /// a `pread` copy, which leaves the map's pages out of the process's RSS.
    fn read(&self, off: u32, len: usize, mapped: bool) -> Result<Bytes> {
        let start = off as usize;
        match self.map.as_ref().filter(|_| mapped) {
            Some(map) if start + len <= map.len() => Ok(map.slice(start..start + len)),
            Some(_) => Err(Error::corrupt(
                &self.path,
                u64::from(off),
                "head chunk past the end of its segment",
            )),
            None => {
                let mut buf = vec![0u8; len];
                self.file
                    .read_exact_at(&mut buf, u64::from(off))
                    .map_err(|e| Error::io(&self.path, e))?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

/// The segment being written and its next free offset.
struct Current {
    seg: Option<Arc<Segment>>,
    seq: u32,
    next: u32,
}

/// A head's chunk files: see the module doc.
pub(super) struct ChunkFiles {
    dir: PathBuf,
    segment_bytes: u32,
    current: Mutex<Current>,
    /// Every live segment by number (the current one included).
    segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// Bytes written to the live segments.
    disk_bytes: AtomicU64,
    /// Chunks that could not be written (kept in memory instead).
    write_failures: AtomicU64,
    /// Map new segments (tests turn it off to cover the `pread` path).
    map_segments: bool,
    /// Segments that could not be mapped (read with `pread`).
    map_failures: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ChunkFiles {
    /// Use `dir` for chunk files: whatever is in it is deleted first (the WAL replay
    /// that follows writes the chunks again). Segments hold at most `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u32) -> Result<ChunkFiles> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(dir, e)),
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(ChunkFiles {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1024),
            current: Mutex::new(Current {
                seg: None,
                seq: 0,
                next: 0,
            }),
            segments: RwLock::default(),
            disk_bytes: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            map_segments: true,
            map_failures: AtomicU64::new(0),
        })
    }

    /// As [`open`](Self::open), but segments are read with `pread`, never mapped (the
    /// path taken when a map cannot be made).
    #[cfg(test)]
    pub fn open_unmapped(dir: &Path, segment_bytes: u32) -> Result<ChunkFiles> {
        Ok(ChunkFiles {
            map_segments: false,
            ..Self::open(dir, segment_bytes)?
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of chunk data (and their checksums) in the live segments.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    /// Number of the segment new chunks go to (0 before the first); every later one
    /// is higher.
    pub fn current_seq(&self) -> u32 {
        lock(&self.current).seq
    }

    /// Write one chunk record (`prefix`, then `data`) whose newest sample is at
    /// `max_t`; returns where the record is. The offset is reserved under a short lock;
    /// the write itself runs outside it, so series closing chunks at the same time
    /// write in parallel.
    pub fn write(&self, prefix: &[u8; PREFIX_LEN], data: &[u8], max_t: i64) -> Result<ChunkLoc> {
        let body = PREFIX_LEN + data.len();
        let len = body + CRC_LEN;
        let (seg, loc) = self.reserve_in(len, max_t)?;
        // one write of prefix + data + CRC; a chunk is ~1 KiB, so the copy stays on the
        // stack
        let mut stack = [0u8; 4096];
        let mut heap = Vec::new();
        let buf = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap[..]
        };
        buf[..PREFIX_LEN].copy_from_slice(prefix);
        buf[PREFIX_LEN..body].copy_from_slice(data);
        let crc = crc32c::crc32c(&buf[..body]).to_be_bytes();
        buf[body..].copy_from_slice(&crc);
        seg.file
            .write_all_at(buf, u64::from(loc.off))
            .map_err(|e| Error::io(&seg.path, e))?;
        Ok(loc)
    }

    /// Reserve `len` bytes (a chunk's prefix, data and CRC) for a chunk still being
    /// written, all of whose samples are at or before `max_t`: the head's open chunk,
    /// whose settled bytes go out with [`write_at`](Self::write_at) as it grows. The
    /// segment is kept until truncation passes `max_t`.
    pub fn reserve(&self, len: usize, max_t: i64) -> Result<ChunkLoc> {
        self.reserve_in(len, max_t).map(|(_, loc)| loc)
    }

    /// Write `data` at `at` bytes into the reservation at `loc` (its prefix first; no
    /// CRC: the caller writes the record's CRC after its last byte, see
    /// [`crc_of_parts`]).
    pub fn write_at(&self, loc: ChunkLoc, at: usize, data: &[u8]) -> Result<()> {
        let seg = self.segment(loc.seg)?;
        seg.file
            .write_all_at(data, u64::from(loc.off) + at as u64)
            .map_err(|e| Error::io(&seg.path, e))
    }

    /// The first `len` bytes of a reservation as written so far (no CRC to check):
    /// a slice of the segment's map with `mapped`, else a `pread` copy.
    pub fn read_part(&self, loc: ChunkLoc, len: usize, mapped: bool) -> Result<Bytes> {
        self.segment(loc.seg)?.read(loc.off, len, mapped)
    }

    fn segment(&self, seq: u32) -> Result<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segments.get(&seq).cloned().ok_or_else(|| self.deleted(seq))
    }

    fn deleted(&self, seq: u32) -> Error {
        Error::Invalid(format!(
            "head chunk segment {seq} in {} was deleted while still referenced",
            self.dir.display()
        ))
    }

    /// `len` bytes reserved in the current segment (the next one when they do not fit),
    /// counted as written.
    fn reserve_in(&self, len: usize, max_t: i64) -> Result<(Arc<Segment>, ChunkLoc)> {
        let mut cur = lock(&self.current);
        let fits = |cur: &Current| {
            cur.seg.is_some() && u64::from(cur.next) + len as u64 <= u64::from(self.segment_bytes)
        };
        if !fits(&cur) {
            if len as u64 > u64::from(self.segment_bytes) {
                return Err(Error::Invalid(format!(
                    "a head chunk of {} bytes is larger than a chunk segment",
                    len - CRC_LEN - PREFIX_LEN
                )));
            }
            // numbered from 1, as Prometheus's
            let seq = cur.seq + 1;
            if seq > MAX_SEGMENT_SEQ {
                return Err(Error::Invalid(format!(
                    "{}: no head chunk segment numbers left",
                    self.dir.display()
                )));
            }
            let path = self.dir.join(format!("{seq:06}"));
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let map = if self.map_segments {
                self.map(&file, &path)
            } else {
                None
            };
            let seg = Arc::new(Segment {
                file,
                path,
                map,
                max_t: AtomicI64::new(i64::MIN),
                bytes: AtomicU64::new(0),
            });
            self.segments
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(seq, seg.clone());
            *cur = Current {
                seg: Some(seg),
                seq,
                next: 0,
            };
        }
        let seg = cur.seg.clone().expect("a segment is open");
        seg.max_t.fetch_max(max_t, Ordering::Relaxed);
        seg.bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.disk_bytes.fetch_add(len as u64, Ordering::Relaxed);
        let loc = ChunkLoc {
            seg: cur.seq,
            off: cur.next,
        };
        cur.next += len as u32;
        Ok((seg, loc))
    }

    /// A read-only map of a new segment's whole size, or `None` when it cannot be made
    /// (logged the first time and then at every power of two, not per segment).
    fn map(&self, file: &File, path: &Path) -> Option<Bytes> {
        // SAFETY: the map is read-only and this process only ever appends to the file
        // (`pwrite` at reserved offsets, never truncating it); a chunk is read only
        // after its write returned, so the pages read lie inside the file. Only a file
        // cut short from outside would fault, as with Prometheus's maps of these files.
        let m = unsafe {
            memmap2::MmapOptions::new()
                .len(self.segment_bytes as usize)
                .map(file)
        };
        match m {
            Ok(m) => Some(Bytes::from_owner(m)),
            Err(e) => {
                let n = self.map_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(path = %path.display(), error = %e, failures = n,
                        "cannot map a head chunk segment: reading it with pread");
                }
                None
            }
        }
    }

    /// A reader of chunks: holds the segment list for a series' reads.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            files: self,
            segments: self.segments.read().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Delete the segments numbered below `below_seq` whose chunks all end before
    /// `mint`. `below_seq` is [`current_seq`](Self::current_seq) taken before the head
    /// dropped its chunks older than `mint`: every chunk in such a segment was in a
    /// series then, so it is gone now. Returns how many were deleted.
    pub fn truncate(&self, mint: i64, below_seq: u32) -> usize {
        let gone: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
            let seqs: Vec<u32> = segments
                .range(..below_seq)
                .filter(|(_, s)| s.max_t.load(Ordering::Relaxed) < mint)
                .map(|(k, _)| *k)
                .collect();
            seqs.iter().filter_map(|k| segments.remove(k)).collect()
        };
        for s in &gone {
            self.disk_bytes
                .fetch_sub(s.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            if let Err(e) = std::fs::remove_file(&s.path) {
                tracing::warn!(path = %s.path.display(), error = %e, "cannot delete a head chunk segment");
            }
        }
        gone.len()
    }

    /// Count a chunk [`write`](Self::write) refused (the series keeps it in memory);
    /// logged the first time and then at every power of two, not per chunk.
    pub fn note_write_failure(&self, e: &Error) {
        let n = self.write_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(dir = %self.dir.display(), error = %e, failures = n,
                "cannot write a completed head chunk to disk: kept in memory");
        }
    }

    /// Chunks [`write`](Self::write) refused so far.
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }
}

/// Reads chunks from a head's chunk files ([`ChunkFiles::reader`]).
pub(super) struct Reader<'a> {
    files: &'a ChunkFiles,
    segments: RwLockReadGuard<'a, BTreeMap<u32, Arc<Segment>>>,
}

impl Reader<'_> {
    fn segment(&self, seq: u32) -> Result<&Segment> {
        self.segments
            .get(&seq)
            .map(|s| &**s)
            .ok_or_else(|| self.files.deleted(seq))
    }

    /// The record at `loc` whose data is `len` bytes, checked against its CRC: the data
    /// and the prefix. With `mapped` the data is a slice of the segment's map (shared,
    /// no copy), else (or when the segment has no map) read with `pread` into a buffer
    /// of its own, which leaves the map's pages out of the process's RSS.
    pub fn read(&self, loc: ChunkLoc, len: u32, mapped: bool) -> Result<(Bytes, [u8; PREFIX_LEN])> {
        let seg = self.segment(loc.seg)?;
        let body = PREFIX_LEN + len as usize;
        let rec = seg.read(loc.off, body + CRC_LEN, mapped)?;
        let mut want = [0u8; CRC_LEN];
        want.copy_from_slice(&rec[body..]);
        if crc32c::crc32c(&rec[..body]).to_be_bytes() != want {
            return Err(Error::corrupt(
                &seg.path,
                u64::from(loc.off),
                "head chunk checksum mismatch",
            ));
        }
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&rec[..PREFIX_LEN]);
        Ok((rec.slice(PREFIX_LEN..body), prefix))
    }

    /// The prefix of the record at `loc` alone (not checked: the CRC covers the whole
    /// record; the caller checks what it reads is plausible).
    pub fn read_prefix(&self, loc: ChunkLoc, mapped: bool) -> Result<[u8; PREFIX_LEN]> {
        let seg = self.segment(loc.seg)?;
        let mut prefix = [0u8; PREFIX_LEN];
        if mapped && seg.map.is_some() {
            prefix.copy_from_slice(&seg.read(loc.off, PREFIX_LEN, true)?);
        } else {
            // into the stack: truncation reads a prefix per closed chunk
            seg.file
                .read_exact_at(&mut prefix, u64::from(loc.off))
                .map_err(|e| Error::io(&seg.path, e))?;
        }
        Ok(prefix)
    }

    /// The error for a record at `loc` whose prefix does not fit the series.
    pub fn corrupt(&self, loc: ChunkLoc, what: &str) -> Error {
        match self.segments.get(&loc.seg) {
            Some(seg) => Error::corrupt(&seg.path, u64::from(loc.off), what),
            None => self.files.deleted(loc.seg),
        }
    }
}
