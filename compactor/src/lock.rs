//! One compactor per bucket. Thanos asks its users to run exactly one; `strata all`
//! runs a compactor in every process, so two of them on one bucket must not both
//! work. A lease object at the bucket's root names the holder and its last heartbeat;
//! another compactor waits until the lease lapses (the holder died) and then takes it.
//! The holder renews it while a pass runs and deletes it when it stops.
//!
//! A compactor restarted after `kill -9` need not wait out the lease its dead
//! predecessor left: a lease from this host is taken over at once (through the same
//! conditional writes) when its holder is provably gone, see [`BucketLock::predecessor`].
//!
//! Every change of the lease is a conditional write, so of two compactors racing for
//! it exactly one wins:
//! - a free lease is created only if absent (`If-None-Match: *`; a hard link on a
//!   local filesystem);
//! - renewing it, or taking over a lapsed or unreadable one, writes only if the object
//!   is still the version read (`If-Match` on S3, generation/ETag match on GCS and
//!   Azure).
//!
//! Fallback where the store cannot compare versions (a local filesystem, see
//! `object_store`'s `LocalFileSystem`): a takeover first creates a marker object named
//! after the lapsed version (`Absent`, which the filesystem does atomically), so one
//! compactor alone may replace that version; a renewal overwrites after checking that
//! the lease read is still ours. The one window left is a holder that missed its
//! renewals for a whole lease renewing at the instant another takes over; were both
//! to work for one pass, nothing is lost: their results overlap and the next pass
//! merges them.
//!
//! After each write the lease is read back, [`SETTLE`] later: some S3-compatible servers
//! check `If-None-Match`/`If-Match` before they write rather than atomically (s3s-fs
//! 0.14 does: two racers both pass the check and both write; our tests saw two holders
//! in every run without this), and others ignore the headers. A write that passed its
//! check has landed by then, so the last writer is the one every racer reads back and
//! the others yield, as in the plain write-then-read this replaced. It costs one GET and
//! a quarter second per pass and per renewal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_objstore::{Bucket, ObjectVersion, PutCondition};

use crate::marks::now_secs;
use crate::Error;

/// The lease object, at the bucket's root (not a tenant: tenants are directories, and
/// the name is reserved so no tenant takes it).
pub const LOCK_OBJECT: &str = strata_kit::tenant::COMPACTOR_LOCK_OBJECT;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder (random per process).
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Unix seconds of the last renewal.
    pub heartbeat: i64,
    /// The holder's pid namespace (`/proc/self/ns/pid`), so that a pid is only
    /// looked up in the namespace it belongs to; empty where unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pid_ns: String,
}

impl std::fmt::Display for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {}, id {})", self.host, self.pid, self.id)
    }
}

/// Whether this compactor holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    Ours,
    /// Another compactor's lease, still live.
    Theirs(Lease),
}

/// Prefix of the fallback's takeover markers (next to [`LOCK_OBJECT`], at the root).
const TAKEOVER_PREFIX: &str = "strata-compactor-lock.takeover-";
/// How long after writing the lease it is read back: far longer than a small PUT that
/// already passed its condition takes to land, far shorter than any lease.
pub const SETTLE: Duration = Duration::from_millis(250);
/// In the compactor's data directory: the id of the lease it holds (see
/// [`BucketLock::with_state_dir`]).
const STATE_FILE: &str = "compactor-lease-id";
/// Times a take looks again after losing a race to a writer that then vanished.
const ATTEMPTS: usize = 3;

#[derive(Debug)]
pub struct BucketLock {
    bucket: Bucket,
    me: Lease,
    lease: Duration,
    /// The store refused a version-conditional write: use the fallback from now on.
    no_update: AtomicBool,
    /// Where the id of the lease this compactor holds is recorded, so that the next
    /// process on the same data directory knows the lease as its predecessor's.
    state_file: Option<PathBuf>,
    /// The id a previous process on this data directory held the lease under.
    predecessor_id: Option<String>,
    /// Whether `state_file` names our id yet.
    recorded: AtomicBool,
}

impl BucketLock {
    pub fn new(bucket: Bucket, lease: Duration) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown".into());
        BucketLock {
            bucket,
            me: Lease {
                id: ulid::Ulid::new().to_string(),
                host,
                pid: std::process::id(),
                heartbeat: 0,
                pid_ns: std::fs::read_link("/proc/self/ns/pid")
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            },
            lease,
            no_update: AtomicBool::new(false),
            state_file: None,
            predecessor_id: None,
            recorded: AtomicBool::new(false),
        }
    }

    /// Record the lease's id in `dir` (the compactor's data directory, which one live
    /// process uses at a time), and recognise the id a previous process left there.
    pub fn with_state_dir(mut self, dir: &Path) -> Self {
        let file = dir.join(STATE_FILE);
        self.predecessor_id = std::fs::read_to_string(&file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && *s != self.me.id);
        self.state_file = Some(file);
        self
    }

    /// Whether `l`, a live-looking lease, was left by a dead predecessor of this
    /// process, so that waiting it out would only delay the restart. Only leases from
    /// this host qualify, and only when the holder is provably gone:
    /// - it names our pid namespace and a pid that no longer exists there (our own pid
    ///   is alive: another lock in this very process, as in tests, is no predecessor);
    /// - or it names another pid namespace (a restarted container), so its pid cannot
    ///   be checked, and its id is the one the previous process on our data directory
    ///   recorded (a container that keeps its volume).
    ///
    /// A pid is never judged across pid namespaces: containers sharing the host's name
    /// (host networking) are all pid 1 in namespaces of their own, and must not take
    /// each other's leases. A restarted container with a fresh namespace and no kept
    /// data directory therefore waits for the lapse, as a lease from another host does.
    fn predecessor(&self, l: &Lease) -> bool {
        if l.id == self.me.id || l.host != self.me.host {
            return false;
        }
        let same_ns = !l.pid_ns.is_empty() && l.pid_ns == self.me.pid_ns;
        if same_ns {
            // The pid can be checked: whatever the data directory says, a live pid
            // (another process sharing our data directory, say) is waited out.
            return !pid_alive(l.pid);
        }
        self.predecessor_id.as_deref() == Some(l.id.as_str())
    }

    /// Note in the state file that we hold the lease (once per process).
    fn record(&self) {
        let Some(file) = &self.state_file else { return };
        if self.recorded.load(Ordering::Relaxed) {
            return;
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(file, &self.me.id)) {
            Ok(()) => self.recorded.store(true, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "could not record the compactor lease's id; a restart waits out this lease")
            }
        }
    }

    /// The lease as stored, with its version; `None` if there is none. An unreadable
    /// lease (a torn write) is `Some((None, version))`: anyone may replace it.
    async fn read(&self) -> Result<Option<(Option<Lease>, ObjectVersion)>, Error> {
        match self.bucket.get_versioned(LOCK_OBJECT).await {
            Ok((b, v)) => Ok(Some((serde_json::from_slice(&b).ok(), v))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn body(&self) -> Bytes {
        let mut me = self.me.clone();
        me.heartbeat = now_secs();
        serde_json::to_vec_pretty(&me)
            .expect("lease serializes")
            .into()
    }

    fn live(&self, l: &Lease) -> bool {
        let age = now_secs().saturating_sub(l.heartbeat);
        age >= 0 && (age as u64) < self.lease.as_secs().max(1)
    }

    /// Take or renew the lease, unless another compactor holds it and is alive. With
    /// a zero lease there is no lock: always ours, nothing written.
    pub async fn take(&self) -> Result<Taken, Error> {
        if self.lease.is_zero() {
            return Ok(Taken::Ours);
        }
        for _ in 0..ATTEMPTS {
            if let Some(taken) = self.try_take().await? {
                if taken == Taken::Ours {
                    self.record();
                }
                return Ok(taken);
            }
        }
        Err(Error::Other(format!(
            "the compactor lease {LOCK_OBJECT} changed under {ATTEMPTS} attempts in a row to take it"
        )))
    }

    /// One attempt; `None` when a race was lost and the lease must be read again.
    async fn try_take(&self) -> Result<Option<Taken>, Error> {
        let Some((current, version)) = self.read().await? else {
            return match self.write(PutCondition::Absent).await? {
                true => self.verify().await,
                false => Ok(None),
            };
        };
        let ours = match &current {
            Some(l) if l.id == self.me.id => true,
            Some(l) if self.live(l) && !self.predecessor(l) => {
                return Ok(Some(Taken::Theirs(l.clone())))
            }
            _ => false,
        };
        let succeeds = current.as_ref().filter(|l| !ours && self.live(l));
        let taken = self.replace(ours, version).await?;
        if let (Some(l), Some(Taken::Ours)) = (succeeds, &taken) {
            tracing::info!(holder = %l, "took over the compactor lease of a dead predecessor on this host without waiting for it to lapse");
        }
        Ok(taken)
    }

    /// Writes our lease over the `version` read: a renewal when `ours`, else a takeover.
    async fn replace(&self, ours: bool, version: ObjectVersion) -> Result<Option<Taken>, Error> {
        if !self.no_update.load(Ordering::Relaxed) {
            match self.write(PutCondition::Unchanged(version.clone())).await {
                Ok(true) => return self.verify().await,
                Ok(false) => return Ok(None),
                Err(Error::Bucket(e)) if e.is_unsupported() => {
                    tracing::info!(bucket = %self.bucket, "the store cannot compare object versions; the compactor lease uses its takeover markers");
                    self.no_update.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        if ours {
            self.bucket.put(LOCK_OBJECT, self.body()).await?;
            return self.verify().await;
        }
        self.take_over(&version).await
    }

    /// The fallback's takeover of a lapsed (or unreadable) lease at `version`.
    async fn take_over(&self, version: &ObjectVersion) -> Result<Option<Taken>, Error> {
        let tag: String = version
            .e_tag()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if tag.is_empty() {
            return Err(Error::Other(format!(
                "the store gives {LOCK_OBJECT} no ETag; the compactor lease cannot be taken over safely"
            )));
        }
        let marker = format!("{TAKEOVER_PREFIX}{tag}");
        match self
            .bucket
            .put_if(&marker, self.body(), PutCondition::Absent)
            .await
        {
            Ok(()) => {}
            // Another compactor is taking this version over; the marker holds its lease
            // (gone once it is done: then the lease itself names it).
            Err(e) if e.is_conflict() => {
                return match self.bucket.get(&marker).await {
                    Ok(b) => Ok(serde_json::from_slice(&b).ok().map(Taken::Theirs)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
        // A compactor that read this version long ago may win the marker after it was
        // removed: the lease must still be the version read.
        let result = match self.read().await? {
            Some((_, now)) if &now == version => {
                self.bucket.put(LOCK_OBJECT, self.body()).await?;
                self.verify().await
            }
            _ => Ok(None),
        };
        self.bucket.delete(&marker).await?;
        result
    }

    /// Writes our lease under `condition`; `false` if another writer got there first.
    async fn write(&self, condition: PutCondition) -> Result<bool, Error> {
        match self
            .bucket
            .put_if(LOCK_OBJECT, self.body(), condition.clone())
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            // No conditional create at all (S3 with conditional puts disabled): write,
            // and let the read-back decide.
            Err(e) if e.is_unsupported() && condition == PutCondition::Absent => {
                self.bucket.put(LOCK_OBJECT, self.body()).await?;
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn verify(&self) -> Result<Option<Taken>, Error> {
        tokio::time::sleep(SETTLE).await;
        Ok(match self.read().await? {
            Some((Some(l), _)) if l.id == self.me.id => Some(Taken::Ours),
            Some((Some(l), _)) => Some(Taken::Theirs(l)),
            _ => None,
        })
    }

    /// Renew a lease this compactor holds (during a long pass). `Theirs` when another
    /// compactor took it over meanwhile (this one missed its renewals for a whole
    /// lease).
    pub async fn renew(&self) -> Result<Taken, Error> {
        self.take().await
    }

    /// Give the lease up if it is ours, so another compactor need not wait it out.
    pub async fn release(&self) -> Result<(), Error> {
        if self.lease.is_zero() {
            return Ok(());
        }
        if matches!(self.read().await?, Some((Some(l), _)) if l.id == self.me.id) {
            self.bucket.delete(LOCK_OBJECT).await?;
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// This compactor's identity in the lease.
    pub fn id(&self) -> &str {
        &self.me.id
    }
}

/// Whether `pid` names a process in our pid namespace. Where `/proc` is missing the
/// answer is "alive": a lease is then only waited out, never wrongly taken.
fn pid_alive(pid: u32) -> bool {
    !Path::new("/proc/self").exists() || Path::new(&format!("/proc/{pid}")).exists()
}
