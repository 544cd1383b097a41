//! One compactor per bucket. Thanos asks its users to run exactly one; `strata all`
//! runs a compactor in every process, so two of them on one bucket must not both
//! work. A lease object at the bucket's root names the holder and its last heartbeat;
//! another compactor waits until the lease lapses (the holder died) and then takes it.
//! The holder renews it while a pass runs and deletes it when it stops.
//!
//! Object stores offer no compare-and-swap everywhere, so a take is written and read
//! back: of two compactors taking a free lease at once, the one whose write is not the
//! last sees the other's and yields. (Were both to work for one pass anyway, nothing is
//! lost: their results overlap and the next pass merges them.)

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_objstore::Bucket;

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

#[derive(Debug)]
pub struct BucketLock {
    bucket: Bucket,
    me: Lease,
    lease: Duration,
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
            },
            lease,
        }
    }

    async fn read(&self) -> Result<Option<Lease>, Error> {
        match self.bucket.get(LOCK_OBJECT).await {
            // An unreadable lease (a torn write) counts as none.
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn write(&self) -> Result<(), Error> {
        let mut me = self.me.clone();
        me.heartbeat = now_secs();
        let body = serde_json::to_vec_pretty(&me).expect("lease serializes");
        self.bucket.put(LOCK_OBJECT, body.into()).await?;
        Ok(())
    }

    /// Take or renew the lease, unless another compactor holds it and is alive. With
    /// a zero lease there is no lock: always ours, nothing written.
    pub async fn take(&self) -> Result<Taken, Error> {
        if self.lease.is_zero() {
            return Ok(Taken::Ours);
        }
        if let Some(l) = self.read().await? {
            let age = now_secs().saturating_sub(l.heartbeat);
            if l.id != self.me.id && age >= 0 && (age as u64) < self.lease.as_secs().max(1) {
                return Ok(Taken::Theirs(l));
            }
        }
        self.write().await?;
        match self.read().await? {
            Some(l) if l.id != self.me.id => Ok(Taken::Theirs(l)),
            _ => Ok(Taken::Ours),
        }
    }

    /// Renew a lease this compactor holds (during a long pass).
    pub async fn renew(&self) -> Result<(), Error> {
        if self.lease.is_zero() {
            return Ok(());
        }
        self.write().await
    }

    /// Give the lease up if it is ours, so another compactor need not wait it out.
    pub async fn release(&self) -> Result<(), Error> {
        if self.lease.is_zero() {
            return Ok(());
        }
        if matches!(self.read().await?, Some(l) if l.id == self.me.id) {
            self.bucket.delete(LOCK_OBJECT).await?;
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }
}
