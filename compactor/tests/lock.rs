//! The bucket's compactor lease against real stores: a local filesystem (conditional
//! create only: the takeover-marker fallback) and a real S3 server (s3s-fs: `If-None-Match`
//! and `If-Match`).

use std::time::Duration;

use bytes::Bytes;
use strata_compactor::lock::{BucketLock, Lease, Taken, LOCK_OBJECT};
use strata_objstore::Bucket;
use strata_testkit::s3::S3Server;

const LEASE: Duration = Duration::from_secs(60);
/// Compactors racing in each round.
const RACERS: usize = 4;
/// Rounds per race test: each round is a fresh race, so an unsafe take shows up.
const ROUNDS: usize = 6;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A lease its holder stopped renewing `age` seconds ago.
async fn put_lease(bucket: &Bucket, id: &str, age: i64) {
    let l = Lease {
        id: id.into(),
        host: "gone".into(),
        pid: 1,
        heartbeat: now() - age,
        pid_ns: String::new(),
    };
    let body = serde_json::to_vec(&l).unwrap();
    bucket.put(LOCK_OBJECT, Bytes::from(body)).await.unwrap();
}

async fn holder(bucket: &Bucket) -> String {
    let b = bucket.get(LOCK_OBJECT).await.unwrap();
    serde_json::from_slice::<Lease>(&b).unwrap().id
}

/// `RACERS` compactors take at once; exactly one holds the lease, the lease object
/// names it, and every other one sees it as the holder.
async fn race(bucket: &Bucket) {
    let locks: Vec<BucketLock> = (0..RACERS)
        .map(|_| BucketLock::new(bucket.clone(), LEASE))
        .collect();
    let takes = locks.iter().map(|l| l.take());
    let results: Vec<Taken> = futures::future::join_all(takes)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let winners: Vec<&BucketLock> = locks
        .iter()
        .zip(&results)
        .filter(|(_, t)| **t == Taken::Ours)
        .map(|(l, _)| l)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one holder: {results:?}");
    let winner = winners[0].id();
    assert_eq!(holder(bucket).await, winner);
    // A loser names a racer: the winner, or (on a server that checks a condition
    // before it writes rather than atomically, as s3s-fs does) a racer whose write
    // landed and was overwritten; never itself.
    let ids: Vec<&str> = locks.iter().map(|l| l.id()).collect();
    for (lock, t) in locks.iter().zip(&results) {
        if let Taken::Theirs(l) = t {
            assert!(ids.contains(&l.id.as_str()) && l.id != lock.id(), "{l:?}");
        }
    }
    // Nothing but the lease is left at the root (no takeover marker).
    let objects: Vec<String> = bucket
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(objects, vec![LOCK_OBJECT.to_string()]);
}

async fn races(bucket: Bucket) {
    for round in 0..ROUNDS {
        // A free lease, then one whose holder died.
        bucket.delete(LOCK_OBJECT).await.unwrap();
        race(&bucket).await;
        put_lease(&bucket, &format!("dead-{round}"), 3600).await;
        race(&bucket).await;
        // An unreadable lease (a torn write) counts as lapsed.
        bucket
            .put(LOCK_OBJECT, Bytes::from_static(b"{\"id\": \"tor"))
            .await
            .unwrap();
        race(&bucket).await;
    }
}

/// A live lease is respected; its holder renews it; a holder that missed its renewals
/// for a whole lease finds it taken over and says so; release removes only one's own.
async fn lifecycle(bucket: Bucket) {
    let a = BucketLock::new(bucket.clone(), LEASE);
    let b = BucketLock::new(bucket.clone(), LEASE);
    assert_eq!(a.take().await.unwrap(), Taken::Ours);
    assert!(matches!(b.take().await.unwrap(), Taken::Theirs(l) if l.id == a.id()));
    assert_eq!(a.renew().await.unwrap(), Taken::Ours);
    assert_eq!(holder(&bucket).await, a.id());

    // `a` stalls past its lease: its last heartbeat is old.
    put_lease(&bucket, a.id(), 3600).await;
    assert_eq!(b.take().await.unwrap(), Taken::Ours);
    assert!(matches!(a.renew().await.unwrap(), Taken::Theirs(l) if l.id == b.id()));
    assert_eq!(holder(&bucket).await, b.id());

    a.release().await.unwrap();
    assert_eq!(holder(&bucket).await, b.id(), "not a's to release");
    b.release().await.unwrap();
    assert!(!bucket.exists(LOCK_OBJECT).await.unwrap());
    assert_eq!(a.take().await.unwrap(), Taken::Ours);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filesystem_racers_for_a_free_or_lapsed_lease_end_with_one_holder() {
    let dir = tempfile::tempdir().unwrap();
    races(Bucket::filesystem(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_racers_for_a_free_or_lapsed_lease_end_with_one_holder() {
    let s3 = S3Server::start();
    races(Bucket::from_yaml(&s3.objstore_yaml("strata")).unwrap()).await;
}

#[tokio::test]
async fn filesystem_lease_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    lifecycle(Bucket::filesystem(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn s3_lease_lifecycle() {
    let s3 = S3Server::start();
    lifecycle(Bucket::from_yaml(&s3.objstore_yaml("strata")).unwrap()).await;
}

/// The lease `lock` wrote, as stored.
async fn stored(bucket: &Bucket) -> Lease {
    serde_json::from_slice(&bucket.get(LOCK_OBJECT).await.unwrap()).unwrap()
}

/// A pid that existed a moment ago and no longer does.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// A fresh lease left by a dead process of this host (a `kill -9`ed predecessor) is
/// taken over at once; one from another host, another pid namespace or a live pid is
/// waited out; a lease from another pid namespace whose id the previous process on our
/// data directory recorded is taken over.
async fn predecessors(bucket: Bucket) {
    let a = BucketLock::new(bucket.clone(), LEASE);
    assert_eq!(a.take().await.unwrap(), Taken::Ours);
    let mine = stored(&bucket).await;
    assert!(!mine.pid_ns.is_empty(), "{mine:?}");
    let put = |l: Lease| {
        let bucket = bucket.clone();
        async move {
            let body = serde_json::to_vec(&l).unwrap();
            bucket.put(LOCK_OBJECT, Bytes::from(body)).await.unwrap();
        }
    };
    let b = BucketLock::new(bucket.clone(), LEASE);
    // live pid (this process, through `a`): waited out
    assert!(matches!(b.take().await.unwrap(), Taken::Theirs(l) if l.id == a.id()));
    let dead = Lease {
        id: "predecessor".into(),
        pid: dead_pid(),
        ..mine.clone()
    };
    for other in [
        Lease {
            host: "elsewhere".into(),
            ..dead.clone()
        },
        Lease {
            pid_ns: "pid:[1]".into(),
            ..dead.clone()
        },
    ] {
        put(other.clone()).await;
        assert_eq!(b.take().await.unwrap(), Taken::Theirs(other));
    }
    put(dead).await;
    assert_eq!(b.take().await.unwrap(), Taken::Ours);
    assert_eq!(holder(&bucket).await, b.id());

    // the id recorded in the data directory marks a predecessor whose pid cannot be
    // checked (another pid namespace: a restarted container), never a live pid
    let dir = tempfile::tempdir().unwrap();
    let c = BucketLock::new(bucket.clone(), LEASE).with_state_dir(dir.path());
    b.release().await.unwrap();
    assert_eq!(c.take().await.unwrap(), Taken::Ours);
    let d = BucketLock::new(bucket.clone(), LEASE);
    assert!(matches!(d.take().await.unwrap(), Taken::Theirs(l) if l.id == c.id()));
    let restarted = BucketLock::new(bucket.clone(), LEASE).with_state_dir(dir.path());
    assert!(
        matches!(restarted.take().await.unwrap(), Taken::Theirs(l) if l.id == c.id()),
        "c's pid is alive"
    );
    let in_old_container = Lease {
        pid_ns: "pid:[1]".into(),
        ..stored(&bucket).await
    };
    put(in_old_container).await;
    assert!(
        matches!(d.take().await.unwrap(), Taken::Theirs(l) if l.id == c.id()),
        "not d's predecessor"
    );
    assert_eq!(restarted.take().await.unwrap(), Taken::Ours);
    assert_eq!(holder(&bucket).await, restarted.id());
}

#[tokio::test]
async fn filesystem_dead_predecessor_on_this_host_is_taken_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    predecessors(Bucket::filesystem(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn s3_dead_predecessor_on_this_host_is_taken_over_at_once() {
    let s3 = S3Server::start();
    predecessors(Bucket::from_yaml(&s3.objstore_yaml("strata")).unwrap()).await;
}
