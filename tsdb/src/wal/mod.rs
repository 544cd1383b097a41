//! The write-ahead log: one per tenant, in its own directory.
//!
//! The ingester appends every remote-write request's series and samples here and
//! acknowledges the request only after [`Wal::log`] / [`Wal::log_batch`] returned. On
//! start it calls [`replay`] (or [`Wal::replay_and_open`]) to rebuild the in-memory head.
//!
//! # Guarantees
//!
//! * **Process crash** (`kill -9`, panic, OOM kill): every acknowledged record survives,
//!   under either [`FsyncPolicy`]. A record is handed to the kernel with `write(2)` before
//!   `log` returns, and the kernel's page cache outlives the process.
//! * **Power loss / kernel crash**: only what was fsynced survives.
//!   - [`FsyncPolicy::Always`]: `log`/`log_batch` return after `fdatasync`, so every
//!     acknowledged record survives. Batch several requests through one
//!     [`Wal::log_batch`] (or [`Wal::append`] … [`Wal::sync`]) to pay one fsync for all.
//!   - [`FsyncPolicy::Never`]: the OS decides when data reaches the disk (typically
//!     within ~30 s on Linux); acknowledged records written since then may be lost.
//!     Finished segments are still fsynced when a new one is cut, and checkpoints are
//!     always fsynced.
//! * A crash mid-write leaves at most one torn record, at the end of the last segment;
//!   [`replay`] truncates it away (with a warning) and succeeds. Damage anywhere else is
//!   reported as [`Error::Corrupt`] naming the file and byte offset; nothing is silently
//!   skipped except records of a newer frame version or unknown kind, which are counted.
//! * Replay may yield a record twice around a checkpoint (once from the checkpoint,
//!   once from a segment that survived a crash mid-checkpoint); the head tolerates equal
//!   duplicate samples.
//!
//! # Layout
//!
//! ```text
//! <dir>/00000000 00000001 …         segments, at most `segment_size` bytes each (a record
//!                                   larger than that gets a segment of its own); a
//!                                   record never spans two segments
//! <dir>/checkpoint.NNNNNNNN/00000000…  records covering every segment below NNNNNNNN
//! <dir>/checkpoint.NNNNNNNN.tmp/    a checkpoint being written; ignored, removed on open
//! ```
//!
//! Record framing: `[version u8][kind u8][len u32 LE][crc32c(kind ++ stored payload) u32 LE]
//! [stored payload]`, version 1 uncompressed, 2 snappy, 3 zstd ([`WalCompression`]
//! picks what is written; replay reads every version in any mix, so the setting can
//! change between restarts). Payload encodings are documented in `wal/record.rs` (see
//! [`Record`]). Only one [`Wal`] may have a directory open at a time (not enforced by a
//! lock).

mod histogram;
mod record;
mod replay;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use histogram::{RefFloatHistogram, RefHistogram};
pub use record::{
    DecodeError, Record, RecordKind, RecordOwned, FRAME_VERSION, FRAME_VERSION_SNAPPY,
    FRAME_VERSION_ZSTD, HEADER_LEN, ZSTD_LEVEL,
};
pub use replay::{replay, ReplayStats};

use crate::error::{Error, Result};
use crate::labels::Interner;
use record::FrameEncoder;

/// Default maximum segment size, as in Prometheus.
pub const DEFAULT_SEGMENT_SIZE: u64 = 128 << 20;

/// When the writer calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Before [`Wal::log`] / [`Wal::log_batch`] return: acknowledged data survives
    /// power loss.
    #[default]
    Always,
    /// Never on the write path (only on segment cut and checkpoint): acknowledged data
    /// survives a process crash, not necessarily power loss.
    Never,
}

/// How record payloads are written (segments and checkpoints). Reading does not depend
/// on it: every frame says how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalCompression {
    /// Frame version 1.
    None,
    /// Frame version 2: snappy (Prometheus's default WAL compression).
    Snappy,
    /// Frame version 3: zstd at [`ZSTD_LEVEL`]. The default: the fewest bytes per
    /// sample at a CPU cost close to snappy's (BENCHMARKS.md, "WAL compression").
    #[default]
    Zstd,
}

/// Options for [`Wal::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is cut when the next record would make the current one larger.
    pub segment_size: u64,
    pub fsync: FsyncPolicy,
    pub compression: WalCompression,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::Always,
            compression: WalCompression::default(),
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records written since open.
    pub records: u64,
    /// Framed bytes written since open (segments and checkpoints).
    pub bytes_written: u64,
    /// `fsync`/`fdatasync` calls since open (files and directories).
    pub fsyncs: u64,
    /// Duration of the last data fsync of a segment.
    pub last_fsync: Duration,
    /// The segment being written.
    pub segment: u64,
    /// Bytes on disk: segments plus the current checkpoint.
    pub size: u64,
}

/// The WAL writer. Not thread-safe by itself: the ingester puts it behind a mutex and
/// batches concurrent requests into one [`Wal::log_batch`].
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    file: File,
    seg_path: PathBuf,
    seg_index: u64,
    seg_offset: u64,
    /// Scratch buffer: framed records waiting for one `write` call.
    buf: Vec<u8>,
    /// Frames (and compresses) records into `buf` and checkpoints.
    encoder: FrameEncoder,
    /// Bytes were written to the current segment since its last fsync.
    unsynced: bool,
    /// Set after an I/O failure that leaves the on-disk state unknown.
    poisoned: Option<String>,
    stats: WalStats,
    /// Test hook: the next [`Wal::append`] fails as a write error would.
    #[cfg(any(test, feature = "fault-injection"))]
    fail_next_append: bool,
}

impl Wal {
    /// Open or create the WAL in `dir`. Writing always continues in a fresh segment (an
    /// empty last segment is reused), so a torn tail is never appended to. Removes
    /// leftovers of interrupted checkpoints: `*.tmp` directories, checkpoints older than
    /// the latest and segments it covers.
    ///
    /// Call [`replay`] before writing anything (or use [`Wal::replay_and_open`]).
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        let dir = dir.as_ref().to_path_buf();
        if opts.segment_size == 0 {
            return Err(Error::Invalid("WAL segment_size must be > 0".into()));
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut fsyncs = 0;
        let listing = list_dir(&dir)?;
        let mut removed = false;
        for tmp in &listing.tmp {
            remove_any(tmp)?;
            removed = true;
        }
        let latest_cp = listing.checkpoints.last().map(|(n, _)| *n);
        if let Some(cp) = latest_cp {
            for (n, p) in &listing.checkpoints {
                if *n < cp {
                    remove_any(p)?;
                    removed = true;
                }
            }
            for (n, p) in &listing.segments {
                if *n < cp {
                    remove_any(p)?;
                    removed = true;
                }
            }
        }
        if removed {
            fsync_dir(&dir)?;
            fsyncs += 1;
        }
        let last = listing
            .segments
            .iter()
            .rfind(|(n, _)| latest_cp.is_none_or(|cp| *n >= cp));
        let (file, seg_path, seg_index) = match last {
            Some((n, p)) if file_len(p)? == 0 => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map_err(|e| Error::io(p, e))?;
                (f, p.clone(), *n)
            }
            _ => {
                let next = last
                    .map(|(n, _)| n + 1)
                    .unwrap_or(0)
                    .max(latest_cp.unwrap_or(0));
                let (f, p) = create_segment(&dir, next)?;
                fsyncs += 1;
                (f, p, next)
            }
        };
        let size = dir_size(&dir)?;
        let encoder = FrameEncoder::new(opts.compression)?;
        Ok(Wal {
            dir,
            opts,
            encoder,
            file,
            seg_path,
            seg_index,
            seg_offset: 0,
            buf: Vec::with_capacity(64 << 10),
            unsynced: false,
            poisoned: None,
            #[cfg(any(test, feature = "fault-injection"))]
            fail_next_append: false,
            stats: WalStats {
                fsyncs,
                segment: seg_index,
                size,
                ..WalStats::default()
            },
        })
    }

    /// [`replay`] then [`Wal::open`]: the order the ingester needs on start.
    pub fn replay_and_open(
        dir: impl AsRef<Path>,
        opts: WalOptions,
        interner: &mut Interner,
        f: impl FnMut(RecordOwned) -> Result<()>,
    ) -> Result<(Wal, ReplayStats)> {
        let stats = replay(dir.as_ref(), interner, f)?;
        let wal = Wal::open(dir, opts)?;
        Ok((wal, stats))
    }

    /// Write one record, then fsync if the policy is [`FsyncPolicy::Always`]. When this
    /// returns `Ok` the record may be acknowledged.
    pub fn log(&mut self, rec: &Record<'_>) -> Result<()> {
        self.log_batch(std::slice::from_ref(rec))
    }

    /// Write all records with as few `write` calls as segment boundaries allow, then
    /// fsync once if the policy is [`FsyncPolicy::Always`]: group commit for several
    /// requests.
    pub fn log_batch(&mut self, recs: &[Record<'_>]) -> Result<()> {
        self.append(recs)?;
        if self.opts.fsync == FsyncPolicy::Always {
            self.sync()?;
        }
        Ok(())
    }

    /// Write records to the OS without fsync, whatever the policy (they survive a
    /// process crash). Follow with [`Wal::sync`] before acknowledging when power-loss
    /// durability is wanted.
    pub fn append(&mut self, recs: &[Record<'_>]) -> Result<()> {
        self.check_poisoned()?;
        #[cfg(any(test, feature = "fault-injection"))]
        if std::mem::take(&mut self.fail_next_append) {
            return Err(Error::io(
                &self.seg_path,
                std::io::Error::other("injected WAL write failure"),
            ));
        }
        self.buf.clear();
        for rec in recs {
            let start = self.buf.len();
            self.encoder.frame_into(&mut self.buf, rec)?;
            let end = self.buf.len() as u64;
            if self.seg_offset + end > self.opts.segment_size && self.seg_offset + start as u64 > 0
            {
                // the record does not fit: flush what precedes it, then start a segment
                self.write_out(start)?;
                self.buf.drain(..start);
                self.cut()?;
            }
            self.stats.records += 1;
        }
        let n = self.buf.len();
        self.write_out(n)
    }

    /// Make the next [`Wal::append`] fail with an I/O error without writing anything,
    /// as a full disk would: a real write error cannot be caused reliably in a test.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn fail_next_append(&mut self) {
        self.fail_next_append = true;
    }

    /// Refuse every later write: for a failed fsync done outside the writer (group
    /// commit), after which the kernel may have dropped pages written since the last
    /// good sync, so nothing after it can be acknowledged until a restart replays.
    pub fn poison(&mut self, why: impl Into<String>) {
        self.poisoned.get_or_insert(why.into());
    }

    /// A handle on the current segment for an `fdatasync` outside the writer's lock
    /// (group commit): everything appended before this call is durable once
    /// `sync_data` on the handle returns. Segments cut earlier were fsynced by the cut.
    pub fn sync_handle(&self) -> Result<File> {
        self.check_poisoned()?;
        self.file
            .try_clone()
            .map_err(|e| Error::io(&self.seg_path, e))
    }

    /// `fdatasync` the current segment if anything was written since the last sync.
    pub fn sync(&mut self) -> Result<()> {
        self.check_poisoned()?;
        if !self.unsynced {
            return Ok(());
        }
        let t = Instant::now();
        if let Err(e) = self.file.sync_data() {
            // after a failed fsync the kernel may have dropped the dirty pages: nothing
            // written since the last good sync can be trusted any more
            self.poisoned = Some(format!("fsync failed: {e}"));
            return Err(Error::io(&self.seg_path, e));
        }
        self.stats.last_fsync = t.elapsed();
        self.stats.fsyncs += 1;
        self.unsynced = false;
        Ok(())
    }

    /// Finish the current segment (fsynced) and start the next one; returns its number.
    /// An empty current segment is kept and returned as is.
    pub fn cut_segment(&mut self) -> Result<u64> {
        self.check_poisoned()?;
        if self.seg_offset > 0 {
            self.cut()?;
        }
        Ok(self.seg_index)
    }

    /// Write a checkpoint of `records` covering every segment before a newly cut one,
    /// then delete those segments and older checkpoints. Returns the checkpoint's number
    /// (the first segment it does not cover).
    ///
    /// `records` must carry everything the head still needs from the covered segments
    /// (live series, and samples not yet in a block). A crash at any point leaves a
    /// directory that replays completely.
    pub fn checkpoint<'a>(&mut self, records: impl IntoIterator<Item = Record<'a>>) -> Result<u64> {
        self.check_poisoned()?;
        let mut n = self.cut_segment()?;
        if self.dir.join(format!("checkpoint.{n:08}")).exists() {
            // Nothing was written since the last checkpoint (the current segment is
            // empty), e.g. a flush right after a periodic head cut: cut anyway, so this
            // checkpoint gets a fresh number and replaces that one the usual way.
            self.cut()?;
            n = self.seg_index;
        }
        let name = format!("checkpoint.{n:08}");
        let final_dir = self.dir.join(&name);
        let tmp_dir = self.dir.join(format!("{name}.tmp"));
        if final_dir.exists() {
            return Err(Error::Invalid(format!(
                "{} already exists",
                final_dir.display()
            )));
        }
        if tmp_dir.exists() {
            remove_any(&tmp_dir)?;
        }
        fs::create_dir(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
        self.write_checkpoint_segments(&tmp_dir, records)?;
        fsync_dir(&tmp_dir)?;
        fs::rename(&tmp_dir, &final_dir).map_err(|e| Error::io(&tmp_dir, e))?;
        // the rename must be durable before anything it replaces is deleted
        fsync_dir(&self.dir)?;
        self.stats.fsyncs += 2;

        let listing = list_dir(&self.dir)?;
        let mut failed = false;
        for (i, p) in listing.segments.iter().chain(&listing.checkpoints) {
            if *i < n {
                if let Err(e) = remove_any(p) {
                    // not fatal: replay ignores them and the next open retries
                    tracing::warn!(path = %p.display(), error = %e, "WAL: cannot delete file covered by checkpoint");
                    failed = true;
                }
            }
        }
        if !failed {
            // best effort; a lost unlink is redone by the next open
            if fsync_dir(&self.dir).is_ok() {
                self.stats.fsyncs += 1;
            }
        }
        self.stats.size = dir_size(&self.dir)?;
        Ok(n)
    }

    fn write_checkpoint_segments<'a>(
        &mut self,
        dir: &Path,
        records: impl IntoIterator<Item = Record<'a>>,
    ) -> Result<()> {
        let mut index = 0u64;
        let (f, mut path) = new_file(dir, index)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut offset = 0u64;
        let mut frame = Vec::new();
        for rec in records {
            frame.clear();
            self.encoder.frame_into(&mut frame, &rec)?;
            if offset > 0 && offset + frame.len() as u64 > self.opts.segment_size {
                self.finish_checkpoint_file(w, &path)?;
                index += 1;
                let (f, p) = new_file(dir, index)?;
                w = BufWriter::with_capacity(1 << 20, f);
                path = p;
                offset = 0;
            }
            w.write_all(&frame).map_err(|e| Error::io(&path, e))?;
            offset += frame.len() as u64;
            self.stats.bytes_written += frame.len() as u64;
            self.stats.records += 1;
        }
        self.finish_checkpoint_file(w, &path)
    }

    fn finish_checkpoint_file(&mut self, w: BufWriter<File>, path: &Path) -> Result<()> {
        let f = w
            .into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(path, e))?;
        self.stats.fsyncs += 1;
        Ok(())
    }

    /// Write `self.buf[..n]` to the current segment. A failed write is rolled back
    /// (the segment truncated to its previous end); if even that fails the WAL refuses
    /// further writes.
    fn write_out(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.buf[..n]) {
            let off = self.seg_offset;
            let rolled = self
                .file
                .set_len(off)
                .and_then(|_| self.file.seek(SeekFrom::Start(off)).map(|_| ()));
            if let Err(e2) = rolled {
                self.poisoned = Some(format!(
                    "write failed ({e}) and rolling back to offset {off} failed ({e2})"
                ));
            }
            return Err(Error::io(&self.seg_path, e));
        }
        self.seg_offset += n as u64;
        self.stats.bytes_written += n as u64;
        self.stats.size += n as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Fsync the current segment and open the next.
    fn cut(&mut self) -> Result<()> {
        self.sync()?;
        let next = self.seg_index + 1;
        let (f, p) = create_segment(&self.dir, next)?;
        self.stats.fsyncs += 1;
        self.file = f;
        self.seg_path = p;
        self.seg_index = next;
        self.seg_offset = 0;
        self.unsynced = false;
        self.stats.segment = next;
        Ok(())
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            None => Ok(()),
            Some(why) => Err(Error::io(
                &self.seg_path,
                std::io::Error::other(format!("WAL unusable after earlier failure: {why}")),
            )),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> WalOptions {
        self.opts
    }

    /// The number of the segment being written.
    pub fn current_segment(&self) -> u64 {
        self.seg_index
    }

    /// Bytes on disk: segments plus the current checkpoint.
    pub fn size(&self) -> u64 {
        self.stats.size
    }

    pub fn bytes_written(&self) -> u64 {
        self.stats.bytes_written
    }

    pub fn fsyncs(&self) -> u64 {
        self.stats.fsyncs
    }

    pub fn last_fsync_duration(&self) -> Duration {
        self.stats.last_fsync
    }

    pub fn stats(&self) -> WalStats {
        self.stats
    }
}

// ---- directory helpers ----------------------------------------------------------------

pub(crate) fn segment_name(i: u64) -> String {
    format!("{i:08}")
}

/// `NNNNNNNN` (at least 8 digits).
fn parse_index(s: &str) -> Option<u64> {
    if s.len() >= 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Sorted by number.
    pub segments: Vec<(u64, PathBuf)>,
    /// Finished checkpoints, sorted by number.
    pub checkpoints: Vec<(u64, PathBuf)>,
    /// Interrupted checkpoints.
    pub tmp: Vec<PathBuf>,
}

pub(crate) fn list_dir(dir: &Path) -> Result<Listing> {
    let mut l = Listing::default();
    for ent in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        let ft = ent.file_type().map_err(|e| Error::io(ent.path(), e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if ft.is_file() {
            if let Some(n) = parse_index(name) {
                l.segments.push((n, ent.path()));
            }
        } else if ft.is_dir() {
            if let Some(rest) = name.strip_prefix("checkpoint.") {
                if let Some(num) = rest.strip_suffix(".tmp") {
                    if parse_index(num).is_some() {
                        l.tmp.push(ent.path());
                    }
                } else if let Some(n) = parse_index(rest) {
                    l.checkpoints.push((n, ent.path()));
                }
            }
        }
    }
    l.segments.sort();
    l.checkpoints.sort();
    Ok(l)
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(fs::metadata(p).map_err(|e| Error::io(p, e))?.len())
}

/// Segments plus the latest checkpoint's files.
fn dir_size(dir: &Path) -> Result<u64> {
    let l = list_dir(dir)?;
    let mut size = 0;
    for (_, p) in &l.segments {
        size += file_len(p)?;
    }
    if let Some((_, cp)) = l.checkpoints.last() {
        for (_, p) in list_dir(cp)?.segments {
            size += file_len(&p)?;
        }
    }
    Ok(size)
}

fn new_file(dir: &Path, index: u64) -> Result<(File, PathBuf)> {
    let p = dir.join(segment_name(index));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    Ok((f, p))
}

/// Create segment `index` (or take over an empty file of that name, left by a cut that
/// failed half-way) and make its directory entry durable.
fn create_segment(dir: &Path, index: u64) -> Result<(File, PathBuf)> {
    let p = dir.join(segment_name(index));
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    let len = f.metadata().map_err(|e| Error::io(&p, e))?.len();
    if len != 0 {
        return Err(Error::Invalid(format!(
            "{}: new WAL segment already exists with {len} bytes",
            p.display()
        )));
    }
    fsync_dir(dir)?;
    Ok((f, p))
}

fn remove_any(p: &Path) -> Result<()> {
    let r = if p.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
