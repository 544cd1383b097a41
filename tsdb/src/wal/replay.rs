//! Reading a WAL directory back: the latest checkpoint, then the segments after it.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::record::{known_version, record_crc, FrameDecoder, Header, HEADER_LEN};
use super::{list_dir, RecordKind, RecordOwned};
use crate::error::{Error, Result};
use crate::labels::Interner;

/// What [`replay`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records handed to the callback (checkpoint and segments).
    pub records: u64,
    /// Series entries in those records.
    pub series: u64,
    /// Sample entries in those records.
    pub samples: u64,
    /// Native histogram sample entries (integer and float) in those records.
    pub histograms: u64,
    /// Where a torn tail was cut off: the last segment and its new length.
    pub truncated: Option<(PathBuf, u64)>,
    /// Records of a frame version this code does not know, skipped.
    pub skipped_unknown_version: u64,
    /// Records of a known version but a kind this code does not know, skipped.
    pub skipped_unknown_kind: u64,
    /// WAL segments read (not counting the checkpoint's).
    pub segments: u64,
    /// The checkpoint read first, if any.
    pub checkpoint: Option<u64>,
}

/// Replay the WAL in `dir`: the latest checkpoint's records, then those of every segment
/// numbered at or above it, in order, each passed to `f` (whose error aborts replay).
/// A missing directory replays as empty.
///
/// A torn record at the end of the last non-empty segment (an incomplete header or
/// payload, or a checksum mismatch) is cut off, the file truncated to the last good
/// offset and a warning logged; replay then succeeds. The same damage anywhere else, a
/// checksummed payload that does not decode, or a gap in segment numbers is
/// [`Error::Corrupt`] naming the file and offset.
pub fn replay(
    dir: impl AsRef<Path>,
    interner: &mut Interner,
    mut f: impl FnMut(RecordOwned) -> Result<()>,
) -> Result<ReplayStats> {
    let dir = dir.as_ref();
    let mut stats = ReplayStats::default();
    if !dir.exists() {
        return Ok(stats);
    }
    let listing = list_dir(dir)?;
    let mut r = Reader {
        interner,
        payload: Vec::new(),
        decoder: FrameDecoder::new(),
        stats: &mut stats,
    };

    let cp = listing.checkpoints.last().cloned();
    if let Some((n, cp_dir)) = &cp {
        r.stats.checkpoint = Some(*n);
        let segs = list_dir(cp_dir)?.segments;
        check_contiguous(&segs, Some(0), cp_dir)?;
        for (_, p) in &segs {
            r.read_segment(p, false, &mut f)?;
        }
    }

    let first = cp.as_ref().map(|(n, _)| *n);
    let segs: Vec<(u64, PathBuf)> = listing
        .segments
        .into_iter()
        .filter(|(n, _)| first.is_none_or(|cp| *n >= cp))
        .collect();
    check_contiguous(&segs, first, dir)?;
    // a crash can only tear the segment written last; trailing empty segments come from
    // opens after it that wrote nothing
    let mut last_nonempty = None;
    for (n, p) in &segs {
        if file_len(p)? > 0 {
            last_nonempty = Some(*n);
        }
    }
    for (n, p) in &segs {
        r.read_segment(p, Some(*n) == last_nonempty, &mut f)?;
        r.stats.segments += 1;
    }
    Ok(stats)
}

/// Segments must be numbered without gaps, starting at `first` when given.
fn check_contiguous(segs: &[(u64, PathBuf)], first: Option<u64>, dir: &Path) -> Result<()> {
    let mut want = first;
    for (n, p) in segs {
        if let Some(w) = want {
            if *n != w {
                return Err(Error::corrupt(
                    p,
                    0,
                    format!("WAL segment {w:08} missing (found {n:08} next)"),
                ));
            }
        }
        want = Some(n + 1);
    }
    if let (true, Some(w)) = (segs.is_empty(), first) {
        // a checkpoint is renamed into place only after the segment it names exists,
        // and a checkpoint directory always holds at least segment 0
        return Err(Error::corrupt(
            dir.join(super::segment_name(w)),
            0,
            "WAL segment missing",
        ));
    }
    Ok(())
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len())
}

struct Reader<'i, 's> {
    interner: &'i mut Interner,
    payload: Vec<u8>,
    decoder: FrameDecoder,
    stats: &'s mut ReplayStats,
}

impl Reader<'_, '_> {
    /// Read every record of one segment. With `tolerate_torn_tail`, the first bad frame
    /// ends the segment, which is truncated there.
    fn read_segment(
        &mut self,
        path: &Path,
        tolerate_torn_tail: bool,
        f: &mut impl FnMut(RecordOwned) -> Result<()>,
    ) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut rd = BufReader::with_capacity(1 << 20, file);
        let mut off = 0u64;
        while off < len {
            let bad = |reason: &str| -> Result<()> {
                if !tolerate_torn_tail {
                    return Err(Error::corrupt(path, off, reason));
                }
                tracing::warn!(
                    file = %path.display(),
                    offset = off,
                    discarded_bytes = len - off,
                    reason,
                    "WAL: torn record at the end of the last segment; truncating"
                );
                let w = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                w.set_len(off).map_err(|e| Error::io(path, e))?;
                w.sync_all().map_err(|e| Error::io(path, e))?;
                Ok(())
            };
            if len - off < HEADER_LEN as u64 {
                bad("incomplete record header")?;
                self.stats.truncated = Some((path.to_path_buf(), off));
                return Ok(());
            }
            let mut h = [0u8; HEADER_LEN];
            rd.read_exact(&mut h).map_err(|e| Error::io(path, e))?;
            let h = Header::parse(&h);
            if u64::from(h.len) > len - off - HEADER_LEN as u64 {
                bad("record length exceeds the file")?;
                self.stats.truncated = Some((path.to_path_buf(), off));
                return Ok(());
            }
            self.payload.resize(h.len as usize, 0);
            rd.read_exact(&mut self.payload)
                .map_err(|e| Error::io(path, e))?;
            if record_crc(h.kind, &self.payload) != h.crc {
                bad("record checksum mismatch")?;
                self.stats.truncated = Some((path.to_path_buf(), off));
                return Ok(());
            }
            let rec_off = off;
            off += HEADER_LEN as u64 + u64::from(h.len);
            if !known_version(h.version) {
                self.stats.skipped_unknown_version += 1;
                continue;
            }
            let Some(kind) = RecordKind::from_u8(h.kind) else {
                self.stats.skipped_unknown_kind += 1;
                continue;
            };
            // every version may appear in any mix: each frame says how it is stored
            let rec = self
                .decoder
                .payload(h.version, &self.payload)
                .and_then(|p| RecordOwned::decode(kind, p, self.interner))
                .map_err(|e| Error::corrupt(path, rec_off, e.0))?;
            self.stats.records += 1;
            match &rec {
                RecordOwned::Series(s) => self.stats.series += s.len() as u64,
                RecordOwned::Samples(s) | RecordOwned::OooSamples(s) => {
                    self.stats.samples += s.len() as u64
                }
                RecordOwned::Exemplars(_) => {}
                RecordOwned::Histograms { entries, .. } => {
                    self.stats.histograms += entries.len() as u64
                }
                RecordOwned::FloatHistograms { entries, .. } => {
                    self.stats.histograms += entries.len() as u64
                }
            }
            f(rec)?;
        }
        Ok(())
    }
}
