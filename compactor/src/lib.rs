//! The compactor: keeps a bucket's blocks few, large, deduplicated and downsampled.
//!
//! One pass ([`Compactor::run_once`]) does, per tenant (`<tenant>/<ULID>/` in the bucket):
//!
//! 1. **Clean-up of interrupted work.** Blocks another block covers (its sources are a
//!    subset of the other's, which is at a higher level or has more sources: a
//!    compaction that uploaded its result but crashed before marking its inputs) get a
//!    deletion mark, so a crash at any point is finished by the next pass.
//! 2. **Retention** per resolution (`--retention.resolution-raw|5m|1h`, 0 = forever),
//!    or per tenant at every resolution (`compactor_blocks_retention_period` in the
//!    runtime configuration, Mimir's key, re-read at every pass): blocks whose max time
//!    is older get a deletion mark.
//! 3. **Compaction** per stream: blocks with the same tenant, resolution and external
//!    labels minus the replica labels (`--deduplication.replica-label`). Overlapping
//!    blocks are merged first (vertical compaction; replicas of an HA pair are merged
//!    with the querier's penalty algorithm, [`strata_tsdb::dedup`]), then level ranges
//!    (`--compaction.block-ranges`, 2h → 8h → 2d → 14d) as Thanos plans them. The new
//!    block is uploaded whole (`meta.json` last) before its inputs get deletion marks.
//! 4. **Downsampling** (unless `--downsampling.disable`): raw blocks spanning ≥ 40h → 5m,
//!    5m blocks spanning ≥ 10d → 1h, aggregate chunks in Thanos's format
//!    ([`strata_tsdb::downsample`]), `thanos.downsample.resolution` set.
//! 5. **Deletion** of blocks whose deletion mark is older than `--delete-delay`
//!    (`meta.json` first), and of abandoned partial uploads.
//!
//! Failures are classified: a block whose index or chunks cannot be read gets a
//! `no-compact-mark.json` with the reason and is skipped from then on; inputs that
//! cannot be merged halt only their stream (logged, `strata_compactor_halted_streams`)
//! until its set of blocks changes;
//! bucket errors end the pass, and the next pass starts over from the bucket's state.
//!
//! ```no_run
//! # async fn f(bucket: strata_objstore::Bucket) {
//! use strata_compactor::{Compactor, CompactorConfig};
//! let registry = strata_kit::metrics::Registry::new();
//! let config = CompactorConfig { data_dir: "/var/strata/compactor".into(), ..Default::default() };
//! let compactor = Compactor::new(bucket, config, &registry);
//! compactor.run_forever(strata_kit::shutdown::Shutdown::new()).await;
//! # }
//! ```

pub mod lock;
pub mod marks;
mod merge;
mod metrics;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_kit::metrics::Registry;
use strata_kit::runtime_config::RuntimeConfig;
use strata_kit::shutdown::Shutdown;
use strata_objstore::{BlockRef, Bucket, DELETION_MARK, META_JSON};
use strata_tsdb::block::{Block, BlockWriter, MetaExtra};
use strata_tsdb::downsample::{DOWNSAMPLE_RANGE_1H, DOWNSAMPLE_RANGE_5M, RES_1H, RES_5M};
use strata_tsdb::meta::{BlockDesc, BlockMeta, BlockMetaCompaction, ThanosDownsample, ThanosMeta};
use ulid::Ulid;

use merge::{Input, MergeError};
pub use metrics::CompactorMetrics;
use plan::{group_key, resolution, stream_labels};

/// Directories without `meta.json` whose ULID is older than this are abandoned uploads
/// (Thanos's `PartialUploadThresholdAge`).
pub const PARTIAL_UPLOAD_THRESHOLD: Duration = Duration::from_secs(2 * 24 * 3600);

/// The compactor's errors: what ends a pass (the next pass retries).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bucket: {0}")]
    Bucket(#[from] strata_objstore::Error),
    #[error("{0}")]
    Tsdb(#[from] strata_tsdb::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Configuration; defaults are Thanos's.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// Scratch space for downloaded and built blocks (emptied at every pass).
    pub data_dir: PathBuf,
    /// Level ranges in ms, smallest first.
    pub block_ranges: Vec<i64>,
    /// Labels that tell HA replicas apart; their blocks are merged into one stream.
    pub replica_labels: Vec<String>,
    pub downsampling: bool,
    /// Retention per resolution in ms; 0 = forever.
    pub retention_raw: i64,
    pub retention_5m: i64,
    pub retention_1h: i64,
    /// How long a block marked for deletion stays (readers may still be using it).
    pub delete_delay: Duration,
    /// Pause between passes in [`Compactor::run_forever`].
    pub interval: Duration,
    /// How long the bucket's compactor lease lasts without a renewal: another
    /// compactor on the same bucket takes over after this when the holder died. Zero:
    /// no lease (the caller makes sure it is alone).
    pub lock_lease: Duration,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        CompactorConfig {
            data_dir: PathBuf::from("./data"),
            block_ranges: plan::DEFAULT_RANGES.to_vec(),
            replica_labels: Vec::new(),
            downsampling: true,
            retention_raw: 0,
            retention_5m: 0,
            retention_1h: 0,
            delete_delay: Duration::from_secs(48 * 3600),
            interval: Duration::from_secs(5 * 60),
            lock_lease: Duration::from_secs(5 * 60),
        }
    }
}

impl CompactorConfig {
    /// Checks the ranges: positive, increasing, each a multiple of the one before.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_ranges.is_empty() {
            return Err("--compaction.block-ranges: at least one range is needed".into());
        }
        for w in self.block_ranges.windows(2) {
            if w[0] <= 0 || w[1] <= w[0] || w[1] % w[0] != 0 {
                return Err(format!(
                    "--compaction.block-ranges: each range must be a multiple of the one before ({} then {})",
                    w[0], w[1]
                ));
            }
        }
        Ok(())
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub compactions: usize,
    pub downsamplings: usize,
    pub marked_for_deletion: usize,
    pub deleted: usize,
    pub marked_no_compact: usize,
    pub halted_streams: Vec<String>,
    /// Set when the pass did nothing because another compactor holds the bucket.
    pub lock_held_by: Option<String>,
}

/// The compactor over one bucket.
pub struct Compactor {
    bucket: Bucket,
    config: CompactorConfig,
    metrics: CompactorMetrics,
    /// Halted streams and the blocks they held when they halted: a stream stays halted
    /// until its set of blocks changes (a human deleted or marked the culprit).
    halted: Mutex<HashMap<String, BTreeSet<Ulid>>>,
    /// The one-compactor-per-bucket lease.
    lock: lock::BucketLock,
    /// Per-tenant retention (`compactor_blocks_retention_period`), read at every pass.
    runtime: Arc<RuntimeConfig>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

struct Listed {
    metas: Vec<BlockMeta>,
    deletion_marked: HashSet<Ulid>,
    no_compact: HashSet<Ulid>,
}

fn now_ms() -> i64 {
    marks::now_secs() * 1000
}

impl Compactor {
    pub fn new(bucket: Bucket, config: CompactorConfig, registry: &Registry) -> Self {
        Compactor {
            lock: lock::BucketLock::new(bucket.clone(), config.lock_lease)
                .with_state_dir(&config.data_dir),
            bucket,
            config,
            metrics: CompactorMetrics::new(registry),
            halted: Mutex::new(HashMap::new()),
            runtime: RuntimeConfig::none(),
        }
    }

    /// Read per-tenant retention from this runtime configuration (`strata all` shares
    /// the ingester's; `strata compactor` opens `--runtime-config.file`).
    pub fn with_runtime_config(mut self, runtime: Arc<RuntimeConfig>) -> Self {
        self.runtime = runtime;
        self
    }

    /// How long `tenant`'s blocks at `resolution` are kept, in ms (0: forever): the
    /// tenant's `compactor_blocks_retention_period` when the runtime configuration has
    /// one (at every resolution, as Mimir has one retention), else the flag of the
    /// resolution.
    fn retention(&self, tenant: &str, resolution: i64) -> i64 {
        if let Some(r) = self
            .runtime
            .tenant(tenant)
            .compactor_blocks_retention_period
        {
            return r;
        }
        match resolution {
            0 => self.config.retention_raw,
            RES_5M => self.config.retention_5m,
            RES_1H => self.config.retention_1h,
            _ => 0,
        }
    }

    pub fn metrics(&self) -> &CompactorMetrics {
        &self.metrics
    }

    /// Pass after pass, `config.interval` apart, until `shutdown` fires (a pass under
    /// way is finished first). Errors are logged and counted; the next pass retries.
    /// This is what `strata compactor --wait` and `strata all` run.
    pub async fn run_forever(&self, shutdown: Shutdown) {
        loop {
            if shutdown.is_triggered() {
                break;
            }
            if let Err(e) = self.run_once().await {
                tracing::error!(error = %e, "compaction pass failed; retrying after the interval");
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
        self.release_lock().await;
    }

    /// Give up the bucket's compactor lease if this compactor holds it.
    pub async fn release_lock(&self) {
        if let Err(e) = self.lock.release().await {
            tracing::warn!(error = %e, "could not release the compactor lease; another compactor waits it out");
        }
    }

    /// One pass over every tenant.
    pub async fn run_once(&self) -> Result<PassReport, Error> {
        let res = match self.lock.take().await {
            Ok(lock::Taken::Theirs(l)) => {
                self.metrics.lock_held.set(0.0);
                tracing::info!(holder = %l, "another compactor holds this bucket; this one waits");
                return Ok(PassReport {
                    lock_held_by: Some(l.to_string()),
                    ..PassReport::default()
                });
            }
            Ok(lock::Taken::Ours) => {
                self.metrics.lock_held.set(1.0);
                // Renew the lease while the pass runs (compactions can take long).
                let renew = async {
                    if self.lock.lease().is_zero() {
                        return std::future::pending().await;
                    }
                    loop {
                        tokio::time::sleep(self.lock.lease() / 3).await;
                        match self.lock.renew().await {
                            Ok(lock::Taken::Ours) => {}
                            Ok(lock::Taken::Theirs(l)) => {
                                tracing::warn!(holder = %l, "another compactor took the lease over during this pass (a renewal came later than the lease); this pass finishes, the next one waits");
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "could not renew the compactor lease")
                            }
                        }
                    }
                };
                tokio::select! {
                    r = self.pass() => r,
                    _ = renew => unreachable!("the renewal loop never ends"),
                }
            }
            Err(e) => Err(e),
        };
        match &res {
            Ok(r) => {
                self.metrics.passes.with(&["success"]).inc();
                self.metrics.last_success.set(marks::now_secs() as f64);
                tracing::info!(
                    compactions = r.compactions,
                    downsamplings = r.downsamplings,
                    marked = r.marked_for_deletion,
                    deleted = r.deleted,
                    "compaction pass done"
                );
            }
            Err(_) => self.metrics.passes.with(&["error"]).inc(),
        }
        res
    }

    async fn pass(&self) -> Result<PassReport, Error> {
        let work = self.config.data_dir.join("compact");
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(|e| Error::Io {
                path: work.clone(),
                source: e,
            })?;
        }
        let mut report = PassReport::default();
        for tenant in self.bucket.list_dirs("").await? {
            self.run_tenant(&tenant, &work, &mut report).await?;
        }
        self.update_bucket_size().await?;
        let halted = self.halted.lock().unwrap_or_else(|e| e.into_inner());
        report.halted_streams = halted.keys().cloned().collect();
        report.halted_streams.sort();
        self.metrics.halted_streams.set(halted.len() as f64);
        Ok(report)
    }

    async fn list(&self, tenant: &str) -> Result<Listed, Error> {
        let refs: Vec<BlockRef> = self.bucket.list_blocks(tenant).await?;
        let mut out = Listed {
            metas: Vec::new(),
            deletion_marked: HashSet::new(),
            no_compact: HashSet::new(),
        };
        for r in refs {
            let name = PathBuf::from(format!("{tenant}/{}/{META_JSON}", r.ulid));
            match BlockMeta::from_json(&r.meta_json, &name) {
                Ok(m) => {
                    if r.deletion_marked {
                        out.deletion_marked.insert(m.ulid);
                    }
                    if r.no_compact_marked {
                        out.no_compact.insert(m.ulid);
                    }
                    out.metas.push(m);
                }
                Err(e) => {
                    tracing::warn!(block = %r.ulid, error = %e, "skipping block with unreadable meta.json")
                }
            }
        }
        out.metas.sort_by_key(|m| (m.min_time, m.ulid));
        Ok(out)
    }

    async fn mark_deleted(
        &self,
        tenant: &str,
        ulid: Ulid,
        why: &str,
        report: &mut PassReport,
    ) -> Result<(), Error> {
        marks::mark_for_deletion(&self.bucket, tenant, ulid, why).await?;
        tracing::info!(tenant, block = %ulid, why, "marked block for deletion");
        self.metrics.marked_for_deletion.inc();
        report.marked_for_deletion += 1;
        Ok(())
    }

    /// Mark covered blocks and blocks past retention; returns the live metas.
    async fn garbage_and_retention(
        &self,
        tenant: &str,
        report: &mut PassReport,
    ) -> Result<Listed, Error> {
        let mut l = self.list(tenant).await?;
        let live: Vec<BlockMeta> = l
            .metas
            .iter()
            .filter(|m| !l.deletion_marked.contains(&m.ulid))
            .cloned()
            .collect();
        for u in plan::covered(&live) {
            self.mark_deleted(tenant, u, "source of a compacted block", report)
                .await?;
            l.deletion_marked.insert(u);
        }
        let now = now_ms();
        for m in &live {
            let keep = self.retention(tenant, resolution(m));
            if keep > 0 && m.max_time < now - keep && !l.deletion_marked.contains(&m.ulid) {
                self.mark_deleted(tenant, m.ulid, "retention", report)
                    .await?;
                l.deletion_marked.insert(m.ulid);
            }
        }
        l.metas.retain(|m| !l.deletion_marked.contains(&m.ulid));
        Ok(l)
    }

    async fn run_tenant(
        &self,
        tenant: &str,
        work: &Path,
        report: &mut PassReport,
    ) -> Result<(), Error> {
        let l = self.garbage_and_retention(tenant, report).await?;
        self.compact_tenant(tenant, work, l, report).await?;
        if self.config.downsampling {
            for (from, to, min_span) in [
                (0, RES_5M, DOWNSAMPLE_RANGE_5M),
                (RES_5M, RES_1H, DOWNSAMPLE_RANGE_1H),
            ] {
                let l = self.garbage_and_retention(tenant, report).await?;
                self.downsample_tenant(tenant, work, &l, from, to, min_span, report)
                    .await?;
            }
        }
        self.delete_marked(tenant, report).await?;
        Ok(())
    }

    async fn compact_tenant(
        &self,
        tenant: &str,
        work: &Path,
        l: Listed,
        report: &mut PassReport,
    ) -> Result<(), Error> {
        let mut groups: BTreeMap<String, Vec<BlockMeta>> = BTreeMap::new();
        for m in l.metas {
            groups
                .entry(group_key(tenant, &m, &self.config.replica_labels))
                .or_default()
                .push(m);
        }
        let mut no_compact = l.no_compact;
        for (key, mut metas) in groups {
            let blocks: BTreeSet<Ulid> = metas.iter().map(|m| m.ulid).collect();
            if self.still_halted(&key, &blocks) {
                continue;
            }
            loop {
                metas.sort_by_key(|m| (m.min_time, m.ulid));
                let p = plan::plan(&self.config.block_ranges, &metas, &no_compact);
                if p.is_empty() {
                    break;
                }
                match self.compact(tenant, work, &key, &p).await? {
                    Outcome::Done(new) => {
                        let done: HashSet<Ulid> = p.iter().map(|m| m.ulid).collect();
                        metas.retain(|m| !done.contains(&m.ulid));
                        metas.push(*new);
                        report.compactions += 1;
                        report.marked_for_deletion += done.len();
                    }
                    Outcome::Corrupt(u, why) => {
                        self.no_compact(tenant, u, &why, report).await?;
                        no_compact.insert(u);
                    }
                    Outcome::Halt(why) => {
                        self.halt(&key, &why, blocks);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn halt(&self, key: &str, why: &str, blocks: BTreeSet<Ulid>) {
        tracing::error!(
            stream = key,
            reason = why,
            "halting compaction of this stream until its blocks change (delete or mark \
             the culprit) or a restart; a human must look"
        );
        self.metrics.halts.inc();
        let mut h = self.halted.lock().unwrap_or_else(|e| e.into_inner());
        h.insert(key.to_string(), blocks);
        self.metrics.halted_streams.set(h.len() as f64);
    }

    /// Whether stream `key` is halted with exactly `blocks`; a halted stream whose
    /// blocks changed is resumed (and retried now).
    fn still_halted(&self, key: &str, blocks: &BTreeSet<Ulid>) -> bool {
        let mut h = self.halted.lock().unwrap_or_else(|e| e.into_inner());
        match h.get(key) {
            None => false,
            Some(had) if had == blocks => true,
            Some(_) => {
                h.remove(key);
                self.metrics.halted_streams.set(h.len() as f64);
                tracing::info!(
                    stream = key,
                    "the halted stream's blocks changed; resuming it"
                );
                false
            }
        }
    }

    async fn no_compact(
        &self,
        tenant: &str,
        u: Ulid,
        why: &str,
        report: &mut PassReport,
    ) -> Result<(), Error> {
        tracing::error!(tenant, block = %u, reason = why, "block cannot be read; marking it no-compact");
        marks::mark_no_compact(
            &self.bucket,
            tenant,
            u,
            marks::NO_COMPACT_REASON_CORRUPT,
            why,
        )
        .await?;
        self.metrics.marked_no_compact.inc();
        report.marked_no_compact += 1;
        Ok(())
    }

    /// Download `metas` into a fresh directory; a block that cannot be opened is Corrupt.
    async fn fetch(
        &self,
        tenant: &str,
        dir: &Path,
        metas: &[BlockMeta],
    ) -> Result<Result<Vec<Block>, (Ulid, String)>, Error> {
        let mut blocks = Vec::with_capacity(metas.len());
        for m in metas {
            let bdir = dir.join(m.ulid.to_string());
            self.bucket
                .download_dir(&format!("{tenant}/{}", m.ulid), &bdir)
                .await?;
            match Block::open(&bdir) {
                Ok(b) => blocks.push(b),
                Err(e) => return Ok(Err((m.ulid, e.to_string()))),
            }
        }
        Ok(Ok(blocks))
    }

    async fn compact(
        &self,
        tenant: &str,
        work: &Path,
        key: &str,
        p: &[BlockMeta],
    ) -> Result<Outcome, Error> {
        let start = std::time::Instant::now();
        let ulid = Ulid::new();
        let dir = work.join(ulid.to_string());
        let blocks = match self.fetch(tenant, &dir.join("in"), p).await? {
            Ok(b) => b,
            Err((u, why)) => return Ok(Outcome::Corrupt(u, why)),
        };
        let replica_labels = self.config.replica_labels.clone();
        let min_time = p.iter().map(|m| m.min_time).min().unwrap_or(0);
        let max_time = p.iter().map(|m| m.max_time).max().unwrap_or(0);
        let mut sources: Vec<Ulid> = p
            .iter()
            .flat_map(|m| {
                if m.compaction.sources.is_empty() {
                    vec![m.ulid]
                } else {
                    m.compaction.sources.clone()
                }
            })
            .collect();
        sources.sort();
        sources.dedup();
        let first = &p[0];
        let thanos = ThanosMeta {
            labels: stream_labels(first, &replica_labels),
            downsample: ThanosDownsample {
                resolution: resolution(first),
            },
            source: "compactor".into(),
            ..Default::default()
        };
        let extra = MetaExtra {
            min_time: Some(min_time),
            max_time: Some(max_time),
            compaction: Some(BlockMetaCompaction {
                level: p.iter().map(|m| m.compaction.level).max().unwrap_or(1) + 1,
                sources,
                parents: p
                    .iter()
                    .map(|m| BlockDesc {
                        ulid: m.ulid,
                        min_time: m.min_time,
                        max_time: m.max_time,
                    })
                    .collect(),
                ..Default::default()
            }),
            thanos: Some(thanos),
        };
        let out_dir = dir.join("out");
        let replicas: Vec<String> = p
            .iter()
            .map(|m| {
                let ext = m.thanos.as_ref().map(|t| &t.labels);
                replica_labels
                    .iter()
                    .map(|n| ext.and_then(|e| e.get(n)).cloned().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let chunk_range = self.config.block_ranges[0];
        let built = tokio::task::spawn_blocking({
            let out_dir = out_dir.clone();
            move || -> Result<BlockMeta, MergeError> {
                let inputs: Vec<Input<'_>> = blocks
                    .iter()
                    .zip(replicas)
                    .map(|(b, r)| Input {
                        block: b,
                        replica: r,
                    })
                    .collect();
                let mut w = BlockWriter::new(&out_dir, ulid)
                    .map_err(|e| MergeError::Write(e.to_string()))?;
                merge::merge_into(&inputs, &replica_labels, chunk_range, &mut w)?;
                w.finish(Some(extra))
                    .map_err(|e| MergeError::Write(e.to_string()))
            }
        })
        .await
        .map_err(|e| Error::Other(format!("merge task: {e}")))?;
        let meta = match built {
            Ok(m) => m,
            Err(MergeError::Corrupt(u, why)) => return Ok(Outcome::Corrupt(u, why)),
            Err(MergeError::Halt(why)) => return Ok(Outcome::Halt(why)),
            Err(MergeError::Write(why)) => {
                return Err(Error::Other(format!("writing compacted block: {why}")))
            }
        };
        self.bucket
            .upload_dir(out_dir.join(ulid.to_string()), &format!("{tenant}/{ulid}"))
            .await?;
        tracing::info!(tenant, stream = key, block = %ulid, level = meta.compaction.level, inputs = p.len(),
            took = ?start.elapsed(), "compacted blocks");
        self.metrics.compactions.inc();
        let _ = std::fs::remove_dir_all(&dir);
        for m in p {
            marks::mark_for_deletion(&self.bucket, tenant, m.ulid, "compacted").await?;
            self.metrics.marked_for_deletion.inc();
        }
        Ok(Outcome::Done(Box::new(meta)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn downsample_tenant(
        &self,
        tenant: &str,
        work: &Path,
        l: &Listed,
        from: i64,
        to: i64,
        min_span: i64,
        report: &mut PassReport,
    ) -> Result<(), Error> {
        let done: HashSet<Ulid> = l
            .metas
            .iter()
            .filter(|m| resolution(m) == to)
            .flat_map(|m| m.compaction.sources.iter().copied().chain([m.ulid]))
            .collect();
        let mut streams: HashMap<String, BTreeSet<Ulid>> = HashMap::new();
        for m in &l.metas {
            streams
                .entry(group_key(tenant, m, &self.config.replica_labels))
                .or_default()
                .insert(m.ulid);
        }
        for m in &l.metas {
            if resolution(m) != from
                || l.no_compact.contains(&m.ulid)
                || m.max_time - m.min_time < min_span
            {
                continue;
            }
            let srcs: Vec<Ulid> = if m.compaction.sources.is_empty() {
                vec![m.ulid]
            } else {
                m.compaction.sources.clone()
            };
            if srcs.iter().all(|s| done.contains(s)) {
                continue;
            }
            let key = group_key(tenant, m, &self.config.replica_labels);
            let blocks = streams.get(&key).cloned().unwrap_or_default();
            if self.still_halted(&key, &blocks) {
                continue;
            }
            match self.downsample(tenant, work, m, to).await? {
                Outcome::Done(_) => report.downsamplings += 1,
                Outcome::Corrupt(u, why) => self.no_compact(tenant, u, &why, report).await?,
                Outcome::Halt(why) => self.halt(&key, &why, blocks),
            }
        }
        Ok(())
    }

    async fn downsample(
        &self,
        tenant: &str,
        work: &Path,
        m: &BlockMeta,
        to: i64,
    ) -> Result<Outcome, Error> {
        let ulid = Ulid::new();
        let dir = work.join(ulid.to_string());
        let mut blocks = match self
            .fetch(tenant, &dir.join("in"), std::slice::from_ref(m))
            .await?
        {
            Ok(b) => b,
            Err((u, why)) => return Ok(Outcome::Corrupt(u, why)),
        };
        let block = blocks.pop().expect("one block");
        let mut thanos = m.thanos.clone().unwrap_or_default();
        thanos.downsample.resolution = to;
        thanos.source = "compactor".into();
        let extra = MetaExtra {
            min_time: Some(m.min_time),
            max_time: Some(m.max_time),
            compaction: Some(m.compaction.clone()),
            thanos: Some(thanos),
        };
        let out_dir = dir.join("out");
        let built = tokio::task::spawn_blocking({
            let out_dir = out_dir.clone();
            move || -> Result<BlockMeta, MergeError> {
                let mut w = BlockWriter::new(&out_dir, ulid)
                    .map_err(|e| MergeError::Write(e.to_string()))?;
                merge::downsample_into(&block, to, &mut w)?;
                w.finish(Some(extra))
                    .map_err(|e| MergeError::Write(e.to_string()))
            }
        })
        .await
        .map_err(|e| Error::Other(format!("downsample task: {e}")))?;
        let meta = match built {
            Ok(m) => m,
            Err(MergeError::Corrupt(u, why)) => return Ok(Outcome::Corrupt(u, why)),
            Err(MergeError::Halt(why)) => return Ok(Outcome::Halt(why)),
            Err(MergeError::Write(why)) => {
                return Err(Error::Other(format!("writing downsampled block: {why}")))
            }
        };
        self.bucket
            .upload_dir(out_dir.join(ulid.to_string()), &format!("{tenant}/{ulid}"))
            .await?;
        let res = if to == RES_5M { "5m" } else { "1h" };
        tracing::info!(tenant, source = %m.ulid, block = %ulid, resolution = res, "downsampled block");
        self.metrics.downsamplings.with(&[res]).inc();
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Outcome::Done(Box::new(meta)))
    }

    /// Delete blocks whose deletion mark is older than the delay, and partial uploads.
    async fn delete_marked(&self, tenant: &str, report: &mut PassReport) -> Result<(), Error> {
        let l = self.list(tenant).await?;
        let now = marks::now_secs();
        for u in &l.deletion_marked {
            let Some(mark) = marks::read_deletion_mark(&self.bucket, tenant, *u).await? else {
                continue;
            };
            if now - mark.deletion_time >= self.config.delete_delay.as_secs() as i64 {
                self.bucket.delete_dir(&format!("{tenant}/{u}")).await?;
                tracing::info!(tenant, block = %u, "deleted block");
                self.metrics.deleted.inc();
                report.deleted += 1;
            }
        }
        // Directories without meta.json: a deletion that was interrupted (mark still
        // there), or an upload abandoned long ago.
        let listed: HashSet<Ulid> = l.metas.iter().map(|m| m.ulid).collect();
        for name in self.bucket.list_dirs(tenant).await? {
            let Ok(u) = Ulid::from_string(&name) else {
                continue;
            };
            if listed.contains(&u) || u.to_string() != name {
                continue;
            }
            let prefix = format!("{tenant}/{name}");
            let interrupted = self
                .bucket
                .exists(&format!("{prefix}/{DELETION_MARK}"))
                .await?;
            let age_ms = now * 1000 - u.timestamp_ms() as i64;
            if interrupted || age_ms > PARTIAL_UPLOAD_THRESHOLD.as_millis() as i64 {
                self.bucket.delete_dir(&prefix).await?;
                tracing::info!(tenant, dir = %prefix, "deleted partial block directory");
                self.metrics.deleted.inc();
                report.deleted += 1;
            }
        }
        Ok(())
    }

    async fn update_bucket_size(&self) -> Result<(), Error> {
        let mut bytes: HashMap<i64, u64> = HashMap::new();
        let mut blocks: HashMap<i64, u64> = HashMap::new();
        for tenant in self.bucket.list_dirs("").await? {
            let l = self.list(&tenant).await?;
            let res: HashMap<String, i64> = l
                .metas
                .iter()
                .map(|m| (m.ulid.to_string(), resolution(m)))
                .collect();
            for m in &l.metas {
                *blocks.entry(resolution(m)).or_default() += 1;
            }
            for (path, size) in self.bucket.list(&tenant).await? {
                let Some(dir) = path.split('/').nth(1) else {
                    continue;
                };
                if let Some(r) = res.get(dir) {
                    *bytes.entry(*r).or_default() += size;
                }
            }
        }
        for (r, name) in [(0, "raw"), (RES_5M, "5m"), (RES_1H, "1h")] {
            self.metrics
                .bucket_bytes
                .with(&[name])
                .set(*bytes.get(&r).unwrap_or(&0) as f64);
            self.metrics
                .bucket_blocks
                .with(&[name])
                .set(*blocks.get(&r).unwrap_or(&0) as f64);
        }
        Ok(())
    }
}

enum Outcome {
    Done(Box<BlockMeta>),
    Corrupt(Ulid, String),
    Halt(String),
}
