//! One tenant's storage inside an ingester: WAL, head, local blocks and shipper state,
//! under `<data-dir>/tenants/<tenant>/`.
//!
//! Write order for a push, under the tenant's write lock: samples are checked against
//! the head without changing it, the accepted series and samples are written to the WAL,
//! and only then applied to the head (as Prometheus's appender commits); the WAL is
//! fsynced (per the policy) before the request is acknowledged. So the head never holds
//! a sample the WAL lacks: when the WAL write fails, the client's retry finds nothing
//! and logs everything again. A new series is created in the head before its record is
//! logged (it has no samples yet); its record waits in [`WriteState::series_buf`] until a
//! WAL write succeeds, so replay never meets samples of a series it does not know.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_tsdb::block::{open_blocks, MetaExtra};
use strata_tsdb::head::{Head, HeadOptions, HeadSeriesRef};
use strata_tsdb::labels::{Interner, Labels};
use strata_tsdb::meta::{BlockMeta, ThanosMeta};
use strata_tsdb::wal::{Record, RecordOwned, Wal, WalOptions};
use ulid::Ulid;

use crate::ratelimit::TokenBucket;
use crate::{Error, Result};

/// Thanos's shipper state file, so nothing is uploaded twice or skipped across restarts.
pub const SHIPPER_FILE: &str = "shipper.json";

/// The head's completed chunks, out of memory (Prometheus's `chunks_head/`): a cache of
/// what the WAL holds, cleared on every start.
pub const CHUNKS_HEAD_DIR: &str = "chunks_head";

#[derive(Debug, Default, Serialize, Deserialize)]
struct ShipperState {
    version: u32,
    #[serde(default)]
    uploaded: Vec<String>,
}

/// A map keyed by head series refs, looked up for every series of every push: refs
/// are small integers the client does not choose, so a multiply spreads them well
/// enough, where SipHash (the std default) cost several times the lookup itself.
pub type RefMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<RefHasher>>;

/// The hasher of [`RefMap`]: a 64-bit multiply by the golden ratio, high half folded in.
#[derive(Default, Clone, Copy)]
pub struct RefHasher(u64);

impl std::hash::Hasher for RefHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        // not used by u64 keys; correct (if slow) for anything else
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

/// Mutable write-side state, behind one lock per tenant: appends, WAL writes and block
/// cuts are serialised so a cut never races an append into the range it writes.
pub struct WriteState {
    pub wal: Wal,
    /// Count of WAL appends, for group commit: an append with sequence `n` is durable
    /// once `TenantDb::synced_seq >= n`.
    pub written_seq: u64,
    /// Series created in the head whose record is not in the WAL yet: written with the
    /// next WAL append and cleared only once that succeeded.
    pub series_buf: Vec<(u64, Labels)>,
    /// Reused buffer: the samples of one request, validated, waiting for the WAL.
    pub samples_buf: Vec<(u64, i64, f64)>,
    /// Reused: the newest accepted (timestamp, value bits) per series within the request
    /// being validated, for series that appear more than once in it.
    pub req_last: RefMap<(i64, u64)>,
    /// Reused: the order the head appends `samples_buf` in (see
    /// `Head::append_validated_many`).
    pub append_order: Vec<u32>,
    pub limiter: TokenBucket,
    /// The cardinality guard's windows (see [`crate::cardinality`]).
    pub guard: crate::cardinality::Guard,
}

pub struct TenantDb {
    pub id: String,
    pub dir: PathBuf,
    pub head: Head,
    pub write: Mutex<WriteState>,
    /// Local blocks not yet known to be in the bucket are listed in `shipper.json` once
    /// uploaded; this lock serialises shipping.
    pub ship_lock: tokio::sync::Mutex<()>,
    /// Group commit: one fsync at a time; it covers every append made before it began.
    sync_lock: Mutex<()>,
    synced_seq: std::sync::atomic::AtomicU64,
    pub block_duration_ms: i64,
    pub external_labels: Vec<(String, String)>,
    /// Metric metadata (`metadata.json`).
    pub metadata: crate::metadata::TenantMetadata,
    /// Exemplars (`--tsdb.max-exemplars`); locked after `write` when both are held.
    exemplars: Mutex<strata_tsdb::exemplars::ExemplarStore>,
    /// Local blocks opened by queries, kept open until their directory goes.
    pub block_cache: strata_tsdb::block::BlockCache,
}

/// The oldest timestamp the head accepts after a local block ending (exclusive) at
/// `block_end`. A block cut on schedule ends on a block-duration boundary and nothing
/// before its end is accepted afterwards. A flush ends its block just after the newest
/// sample (off the boundary) and keeps the appendable window (newest sample minus half a
/// block) open, so series a few seconds behind keep writing: recomputed the same way on
/// restart, so replay keeps what was accepted.
pub fn floor_after_block(block_end: i64, block_duration_ms: i64) -> i64 {
    if block_end.rem_euclid(block_duration_ms) == 0 {
        block_end
    } else {
        (block_end - 1).saturating_sub(block_duration_ms / 2)
    }
}

/// What replay found, for the log line.
#[derive(Debug, Default)]
pub struct OpenStats {
    pub series: u64,
    pub samples: u64,
    /// Native histogram samples replayed into the head.
    pub histograms: u64,
    pub truncated: Option<(PathBuf, u64)>,
    /// Samples whose series record was not in the WAL: dropped. Must stay 0; anything
    /// else is a bug in the write path, reported rather than silently skipped.
    pub unknown_series_samples: u64,
    pub local_blocks: usize,
    pub took: Duration,
}

impl TenantDb {
    /// Open (or create) a tenant's directory: read local blocks, replay the WAL into a new
    /// head (skipping samples already in a local block), then open the WAL for writing.
    pub fn open(
        id: &str,
        dir: &Path,
        block_duration_ms: i64,
        wal_opts: WalOptions,
        limiter: TokenBucket,
        external_labels: Vec<(String, String)>,
        max_exemplars: usize,
    ) -> Result<(TenantDb, OpenStats)> {
        let start = Instant::now();
        std::fs::create_dir_all(dir.join("blocks")).map_err(|e| Error::io(dir, e))?;
        // completed chunks go to `chunks_head/`, out of memory; what a previous process
        // left there is deleted (the WAL replay below writes them again)
        let head = Head::open(HeadOptions {
            chunk_range_ms: block_duration_ms,
            chunks_dir: Some(dir.join(CHUNKS_HEAD_DIR)),
            ..HeadOptions::default()
        })?;
        let blocks = open_blocks(&dir.join("blocks"))?;
        let floor = blocks
            .iter()
            .map(|b| floor_after_block(b.meta().max_time, block_duration_ms))
            .max();
        if let Some(floor) = floor {
            // samples before here are in local blocks already: replay must not re-add them
            // (and the head refuses them, as it did before the restart)
            head.truncate(floor);
        }
        let mut interner = Interner::new();
        let mut stats = OpenStats {
            local_blocks: blocks.len(),
            ..OpenStats::default()
        };
        // A series logged again under another ref (its labels already known) maps to the
        // ref the head has.
        let mut remap: HashMap<u64, u64> = HashMap::new();
        let mut exemplar_recs: Vec<strata_tsdb::exemplars::RefExemplar> = Vec::new();
        let (wal, rs) = Wal::replay_and_open(dir.join("wal"), wal_opts, &mut interner, |rec| {
            match rec {
                RecordOwned::Series(entries) => {
                    for (r, labels) in entries {
                        let (got, _) = head.create_with_ref(HeadSeriesRef(r), &labels)?;
                        if got.0 != r {
                            remap.insert(r, got.0);
                        }
                        stats.series += 1;
                    }
                }
                RecordOwned::Samples(entries) => {
                    for (r, t, v) in entries {
                        let r = remap.get(&r).copied().unwrap_or(r);
                        // Duplicates (a checkpoint overlapping segments) and samples
                        // already in a block are skipped by append_replay.
                        match head.append_replay(HeadSeriesRef(r), t, v) {
                            Ok(true) => stats.samples += 1,
                            Ok(false) => {}
                            Err(_) => stats.unknown_series_samples += 1,
                        }
                    }
                }
                RecordOwned::OooSamples(entries) => {
                    for (r, t, v) in entries {
                        let r = remap.get(&r).copied().unwrap_or(r);
                        // below the floor, whatever it is: a sample of such a record
                        // is in no block unless a crash came between a block cut and
                        // its checkpoint (then the compactor merges the copies)
                        match head.append_below_floor(HeadSeriesRef(r), t, v, true) {
                            Ok(true) => stats.samples += 1,
                            Ok(false) => {}
                            Err(_) => stats.unknown_series_samples += 1,
                        }
                    }
                }
                RecordOwned::Histograms { entries, .. } => {
                    for (r, t, h) in entries {
                        let r = remap.get(&r).copied().unwrap_or(r);
                        match head.append_histogram_replay(HeadSeriesRef(r), t, &h) {
                            Ok(true) => stats.histograms += 1,
                            Ok(false) => {}
                            Err(_) => stats.unknown_series_samples += 1,
                        }
                    }
                }
                RecordOwned::FloatHistograms { entries, .. } => {
                    for (r, t, h) in entries {
                        let r = remap.get(&r).copied().unwrap_or(r);
                        match head.append_float_histogram_replay(HeadSeriesRef(r), t, &h) {
                            Ok(true) => stats.histograms += 1,
                            Ok(false) => {}
                            Err(_) => stats.unknown_series_samples += 1,
                        }
                    }
                }
                RecordOwned::Exemplars(entries) => {
                    if max_exemplars > 0 {
                        exemplar_recs.extend(entries);
                    }
                }
            }
            Ok(())
        })?;
        let exemplars = replay_exemplars(&head, &remap, exemplar_recs, max_exemplars);
        stats.truncated = rs.truncated;
        stats.took = start.elapsed();
        let db = TenantDb {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            head,
            write: Mutex::new(WriteState {
                wal,
                written_seq: 0,
                series_buf: Vec::new(),
                samples_buf: Vec::new(),
                req_last: RefMap::default(),
                append_order: Vec::new(),
                guard: Default::default(),
                limiter,
            }),
            ship_lock: tokio::sync::Mutex::new(()),
            sync_lock: Mutex::new(()),
            synced_seq: std::sync::atomic::AtomicU64::new(0),
            block_duration_ms,
            external_labels,
            metadata: crate::metadata::TenantMetadata::open(dir)?,
            exemplars: Mutex::new(exemplars),
            block_cache: strata_tsdb::block::BlockCache::new(),
        };
        Ok((db, stats))
    }

    pub fn lock_exemplars(&self) -> MutexGuard<'_, strata_tsdb::exemplars::ExemplarStore> {
        self.exemplars.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn lock_write(&self) -> MutexGuard<'_, WriteState> {
        // A panic while holding the lock leaves the WAL in a state we cannot vouch for,
        // but the WAL itself poisons on I/O errors; recover the guard.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the append numbered `seq` durable: whoever fsyncs first covers every append
    /// made before it started, so concurrent pushes share one fsync (group commit).
    /// Returns the fsync duration when this call did one.
    pub fn sync_up_to(&self, seq: u64) -> Result<Option<Duration>> {
        use std::sync::atomic::Ordering;
        if self.synced_seq.load(Ordering::Acquire) >= seq {
            return Ok(None);
        }
        let _g = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.synced_seq.load(Ordering::Acquire) >= seq {
            return Ok(None);
        }
        let (target, file) = {
            let w = self.lock_write();
            (w.written_seq, w.wal.sync_handle()?)
        };
        let start = Instant::now();
        if let Err(e) = file.sync_data() {
            // as Wal::sync does: pages written since the last good sync may be gone, so
            // nothing may be acknowledged from this WAL until a restart replays it
            self.lock_write().wal.poison(format!("fsync failed: {e}"));
            return Err(Error::io(self.dir.join("wal"), e));
        }
        self.synced_seq.fetch_max(target, Ordering::AcqRel);
        Ok(Some(start.elapsed()))
    }

    pub fn blocks_dir(&self) -> PathBuf {
        self.dir.join("blocks")
    }

    fn meta_extra(&self) -> MetaExtra {
        let labels = self.external_labels.iter().cloned().collect();
        MetaExtra {
            thanos: Some(ThanosMeta {
                labels,
                source: "receive".into(),
                ..ThanosMeta::default()
            }),
            ..MetaExtra::default()
        }
    }

    /// Cut the head into blocks. With `all`, everything in the head is cut (flush);
    /// otherwise only block ranges the head has moved past by half a block (as
    /// Prometheus does), so late samples still land. Returns the new blocks.
    pub fn cut_blocks(&self, all: bool) -> Result<Vec<BlockMeta>> {
        let mut out = Vec::new();
        let bd = self.block_duration_ms;
        // Holding the write lock: no append can slip into a range between its block
        // being written and the head being truncated.
        let mut w = self.lock_write();
        // Out-of-order samples older than the last cut block first: blocks of their own
        // overlapping the cut ones (the compactor merges them), cut no later than the
        // next regular block (whose range starts at or after the floor, so whenever a
        // regular cut is due this is too). The loop below truncates the head, which would
        // drop them.
        let floor = self.head.min_valid_block();
        let (mint, maxt) = (self.head.min_time(), self.head.max_time());
        if mint < floor && maxt != i64::MIN {
            let due = floor.div_euclid(bd) * bd + bd + bd / 2;
            if !all && maxt < due {
                return Ok(out);
            }
            let mut a = mint.div_euclid(bd) * bd;
            while a < floor {
                let end = a.saturating_add(bd).min(floor);
                if let Some(meta) =
                    self.head
                        .write_block(&self.blocks_dir(), a, end, Some(self.meta_extra()))?
                {
                    out.push(meta);
                }
                a = end;
            }
            self.head.truncate_keeping_window(floor, floor);
        }
        loop {
            let (mint, maxt) = (self.head.min_time(), self.head.max_time());
            if mint == i64::MAX || maxt == i64::MIN || mint > maxt {
                break;
            }
            let aligned = mint.div_euclid(bd) * bd;
            // Every sample in the head is at or after the head's floor; after a flush
            // that is before the flushed block's end, so the next block overlaps it.
            let start = aligned.max(self.head.min_valid_block());
            let mut end = aligned.saturating_add(bd);
            if !all && maxt < end.saturating_add(bd / 2) {
                break;
            }
            let mut floor = end;
            if all && maxt < end {
                // A flush ends the block at the newest sample, not at the range end, and
                // keeps the head's appendable window: a series a little behind the
                // newest sample keeps its in-order samples (in a later block overlapping
                // this one; the compactor merges them).
                end = maxt + 1;
                floor = floor_after_block(end, bd);
            }
            if let Some(meta) =
                self.head
                    .write_block(&self.blocks_dir(), start, end, Some(self.meta_extra()))?
            {
                out.push(meta);
            }
            self.head.truncate_keeping_window(end, floor);
            if self.head.min_time() < end {
                // nothing left below `end` can be cut (the head's min time is stale
                // when it still reports a truncated range): stop rather than spin
                break;
            }
        }
        if !out.is_empty() {
            self.checkpoint(&mut w)?;
        }
        Ok(out)
    }

    /// Rewrite the WAL as a checkpoint of what the head still holds; older segments go.
    fn checkpoint(&self, w: &mut WriteState) -> Result<()> {
        let series = self.head.series_snapshot();
        // Everything the head holds (all of it is at or after its floor), not just the
        // appendable window: samples between the cut block's end and the window's start
        // are in no block yet.
        let since = self.head.min_valid_block();
        let mut samples: Vec<(u64, i64, f64)> = Vec::new();
        // a chunk that cannot be read fails the checkpoint: the WAL segments stay
        self.head.for_each_sample_since(since, |r, s| {
            samples.extend(s.iter().map(|(t, v)| (r.0, *t, *v)));
        })?;
        // out-of-order samples below the floor no block has taken yet (none after a cut
        // took them; kept for the records' sake), as the records they came in
        let mut below: Vec<(u64, i64, f64)> = Vec::new();
        self.head.for_each_ooo_sample_before(since, |r, s| {
            below.extend(s.iter().map(|(t, v)| (r.0, *t, *v)));
        });
        let series_entries: Vec<(u64, &Labels)> = series.iter().map(|(r, l)| (r.0, l)).collect();
        let mut recs: Vec<Record<'_>> = Vec::new();
        for chunk in series_entries.chunks(10_000) {
            recs.push(Record::Series { entries: chunk });
        }
        for chunk in samples.chunks(100_000) {
            recs.push(Record::Samples { entries: chunk });
        }
        for chunk in below.chunks(100_000) {
            recs.push(Record::OooSamples { entries: chunk });
        }
        // In time order per series, as runs of one record type (a series that switches
        // between integer and float histograms replays as it was written).
        let mut hists = crate::push::HistBuf::default();
        self.head.for_each_histogram_since(since, |r, hs| {
            use crate::histograms::HistSample;
            use strata_tsdb::head::HistogramSample;
            for (t, h) in hs {
                let h = match h {
                    HistogramSample::Histogram(h) => HistSample::Int(h.clone()),
                    HistogramSample::FloatHistogram(h) => HistSample::Float(h.clone()),
                };
                hists.push(r.0, *t, h);
            }
        })?;
        hists.records(10_000, &mut recs);
        let exemplars = checkpoint_exemplars(&self.lock_exemplars(), &series);
        for chunk in exemplars.chunks(10_000) {
            recs.push(Record::Exemplars { entries: chunk });
        }
        w.wal.checkpoint(recs)?;
        Ok(())
    }

    fn read_shipper(&self) -> Result<ShipperState> {
        let p = self.dir.join(SHIPPER_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ShipperState {
                version: 1,
                uploaded: Vec::new(),
            }),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    fn write_shipper(&self, st: &ShipperState) -> Result<()> {
        let p = self.dir.join(SHIPPER_FILE);
        let tmp = self.dir.join(format!("{SHIPPER_FILE}.tmp"));
        let data = serde_json::to_vec_pretty(st).expect("shipper state serialises");
        std::fs::write(&tmp, data).map_err(|e| Error::io(&tmp, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))?;
        Ok(())
    }

    /// Local blocks not yet uploaded, oldest first.
    pub fn pending_blocks(&self) -> Result<Vec<Ulid>> {
        let st = self.read_shipper()?;
        let mut out = Vec::new();
        for e in
            std::fs::read_dir(self.blocks_dir()).map_err(|e| Error::io(self.blocks_dir(), e))?
        {
            let e = e.map_err(|e| Error::io(self.blocks_dir(), e))?;
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(u) = name.parse::<Ulid>() else {
                continue;
            };
            if !e.path().join("meta.json").exists() || st.uploaded.contains(&name) {
                continue;
            }
            out.push(u);
        }
        out.sort();
        Ok(out)
    }

    /// Upload every pending block (`<tenant>/<ULID>/`, meta.json last) and record it in
    /// `shipper.json`. Stops at the first failure; the caller retries later.
    pub async fn ship(&self, bucket: &strata_objstore::Bucket) -> Result<Vec<Ulid>> {
        let _g = self.ship_lock.lock().await;
        let mut shipped = Vec::new();
        for u in self.pending_blocks()? {
            let dir = self.blocks_dir().join(u.to_string());
            bucket
                .upload_dir(&dir, &format!("{}/{}", self.id, u))
                .await?;
            let mut st = self.read_shipper()?;
            st.version = 1;
            st.uploaded.push(u.to_string());
            self.write_shipper(&st)?;
            shipped.push(u);
        }
        Ok(shipped)
    }

    /// Delete uploaded local blocks that ended more than `retention_ms` before the head's
    /// newest sample (or before now when the head is empty).
    pub fn apply_retention(&self, retention_ms: i64, now_ms: i64) -> Result<usize> {
        let st = self.read_shipper()?;
        let reference = if self.head.max_time() == i64::MIN {
            now_ms
        } else {
            self.head.max_time()
        };
        let mut removed = 0;
        for b in open_blocks(&self.blocks_dir())? {
            let m = b.meta();
            let m_ulid = m.ulid;
            if st.uploaded.contains(&m.ulid.to_string()) && m.max_time < reference - retention_ms {
                let dir = b.dir().to_path_buf();
                drop(b);
                self.block_cache.forget(m_ulid);
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Shared handle.
pub type Tenant = Arc<TenantDb>;

/// The exemplar store as the WAL left it: exemplar records whose series the head knows,
/// in log order (so the newest survive when there are more than the store holds).
fn replay_exemplars(
    head: &Head,
    remap: &HashMap<u64, u64>,
    recs: Vec<strata_tsdb::exemplars::RefExemplar>,
    max: usize,
) -> strata_tsdb::exemplars::ExemplarStore {
    let mut store = strata_tsdb::exemplars::ExemplarStore::new(max);
    if recs.is_empty() {
        return store;
    }
    let labels: HashMap<u64, Labels> = head
        .series_snapshot()
        .into_iter()
        .map(|(r, l)| (r.0, l))
        .collect();
    for e in recs {
        let r = remap.get(&e.series).copied().unwrap_or(e.series);
        if let Some(series) = labels.get(&r) {
            let ex = strata_tsdb::exemplars::Exemplar {
                labels: e.labels,
                value: e.value,
                ts: e.ts,
            };
            // duplicates and out-of-order ones (a checkpoint overlapping segments) are
            // refused as at ingest
            let _ = store.add(series, ex);
        }
    }
    store
}

/// The exemplar records a checkpoint carries: stored exemplars of series still in the
/// head, oldest first.
fn checkpoint_exemplars(
    store: &strata_tsdb::exemplars::ExemplarStore,
    series: &[(strata_tsdb::head::HeadSeriesRef, Labels)],
) -> Vec<strata_tsdb::exemplars::RefExemplar> {
    if store.is_empty() {
        return Vec::new();
    }
    let refs: HashMap<&Labels, u64> = series.iter().map(|(r, l)| (l, r.0)).collect();
    store
        .snapshot()
        .into_iter()
        .filter_map(|(l, e)| {
            refs.get(&l).map(|r| strata_tsdb::exemplars::RefExemplar {
                series: *r,
                ts: e.ts,
                value: e.value,
                labels: e.labels,
            })
        })
        .collect()
}
