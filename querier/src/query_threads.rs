//! The threads PromQL queries are evaluated on, kept for the next query when one ends.
//!
//! A query runs off the runtime's workers, on a thread with the stack its depth limit
//! needs (`--query.max-depth`: ≈ 40 MiB by default). Starting such a thread per query
//! (clone, the stack and signal-stack mappings and guard pages, the stack's pages
//! faulted in again, all unmapped at exit) was a fixed cost of every query, a large
//! part of a small one's; here a thread that finished a query waits for the next one
//! and ends only after [`IDLE`] without work.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a thread waits for another query before it ends (as tokio's blocking
/// pool): a dashboard refreshing every few seconds keeps its threads.
const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// Query threads of one stack size; more start when every thread is busy (the
/// `--query.max-concurrent` slots bound how many are busy).
pub(crate) struct QueryThreads {
    stack_size: usize,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job; each takes one.
    idle: usize,
}

impl std::fmt::Debug for QueryThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state();
        f.debug_struct("QueryThreads")
            .field("stack_size", &self.stack_size)
            .field("idle", &st.idle)
            .field("queued", &st.jobs.len())
            .finish()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock and a panic in one is caught: nothing can poison
        // it, but a poisoned queue would still be consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl QueryThreads {
    pub(crate) fn new(stack_size: usize) -> Self {
        QueryThreads {
            stack_size,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Run `job` on an idle thread, or on a new one when none is idle. A panic in
    /// `job` ends the job (what it owns is dropped, e.g. its answer's sender), not the
    /// thread.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let job: Job = Box::new(job);
        {
            let mut st = self.shared.state();
            if st.idle > st.jobs.len() {
                st.jobs.push_back(job);
                drop(st);
                self.shared.work.notify_one();
                return Ok(());
            }
        }
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("strata-query".into())
            .stack_size(self.stack_size)
            .spawn(move || work(&shared, job))
            .map(drop)
    }
}

/// A thread's life: its first job, then each one it is handed until it has waited
/// [`IDLE`] for one.
fn work(shared: &Shared, first: Job) {
    let mut job = first;
    loop {
        // The default hook has printed the panic; the job's owner sees it as a dropped
        // answer.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
        let mut st = shared.state();
        st.idle += 1;
        job = loop {
            if let Some(j) = st.jobs.pop_front() {
                st.idle -= 1;
                break j;
            }
            let (s, waited) = shared
                .work
                .wait_timeout(st, IDLE)
                .unwrap_or_else(|e| e.into_inner());
            st = s;
            if waited.timed_out() && st.jobs.is_empty() {
                // Under the lock: a job queued for this thread was counted on it.
                st.idle -= 1;
                return;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn thread_id_of(pool: &QueryThreads) -> std::thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        pool.run(move || tx.send(std::thread::current().id()).unwrap())
            .unwrap();
        rx.recv().unwrap()
    }

    /// A finished query's thread runs the next one; a panic ends the job, not the
    /// thread, and what the job held is dropped.
    #[test]
    fn threads_are_kept_and_survive_panics() {
        let pool = QueryThreads::new(1 << 20);
        let first = thread_id_of(&pool);
        // The thread marks itself idle just after the job: wait until it has.
        while pool.shared.state().idle == 0 {
            std::thread::yield_now();
        }
        assert_eq!(thread_id_of(&pool), first);
        let (tx, rx) = mpsc::channel::<()>();
        pool.run(move || {
            let _held = tx;
            panic!("a query panicked");
        })
        .unwrap();
        assert!(rx.recv().is_err(), "the panicking job's sender is dropped");
        while pool.shared.state().idle == 0 {
            std::thread::yield_now();
        }
        assert_eq!(thread_id_of(&pool), first);
    }

    /// Jobs run at the same time each get a thread: none waits for another.
    #[test]
    fn busy_threads_do_not_queue_jobs() {
        let pool = QueryThreads::new(1 << 20);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (started_tx, started_rx) = mpsc::channel();
        for _ in 0..3 {
            let (r, s) = (release_rx.clone(), started_tx.clone());
            pool.run(move || {
                s.send(()).unwrap();
                let _ = r.lock().unwrap().recv();
            })
            .unwrap();
        }
        for _ in 0..3 {
            started_rx.recv().unwrap();
        }
        drop(release_tx);
    }
}
