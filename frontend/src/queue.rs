//! The per-tenant fair queue in front of the downstream queriers: a fixed number of
//! slots (`--query-frontend.max-concurrent`) handed out round-robin across the tenants
//! waiting, first come first served within a tenant, so a tenant with a thousand parts
//! queued delays another tenant's query by at most one part per slot. A tenant's queue
//! is bounded (`--query-frontend.max-outstanding-requests-per-tenant`); past it the
//! request is refused (429), as Mimir's frontend does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Mimir's text for a full tenant queue.
pub const TOO_MANY_OUTSTANDING: &str = "too many outstanding requests";

#[derive(Debug, Default)]
struct State {
    free: usize,
    /// Tenants with waiters, in round-robin order.
    order: VecDeque<String>,
    waiting: HashMap<String, VecDeque<(u64, oneshot::Sender<Permit>)>>,
    next_id: u64,
}

/// The fair queue. Clones share it.
#[derive(Debug, Clone)]
pub struct FairQueue {
    state: Arc<Mutex<State>>,
    max_per_tenant: usize,
}

/// A slot towards the downstreams; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    queue: Option<FairQueue>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            q.release();
        }
    }
}

/// Removes a waiter that gave up (its request was cancelled) from its tenant's queue.
struct Waiting<'a> {
    queue: &'a FairQueue,
    tenant: &'a str,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut st = self.queue.lock();
        if let Some(w) = st.waiting.get_mut(self.tenant) {
            w.retain(|(id, _)| *id != self.id);
        }
    }
}

impl FairQueue {
    /// `slots` requests at once downstream (at least one); `max_per_tenant` waiting per
    /// tenant (0: unbounded).
    pub fn new(slots: usize, max_per_tenant: usize) -> FairQueue {
        FairQueue {
            state: Arc::new(Mutex::new(State {
                free: slots.max(1),
                ..State::default()
            })),
            max_per_tenant,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests of `tenant` waiting now.
    pub fn waiting(&self, tenant: &str) -> usize {
        self.lock().waiting.get(tenant).map_or(0, VecDeque::len)
    }

    /// Requests of every tenant waiting now.
    pub fn total_waiting(&self) -> usize {
        self.lock().waiting.values().map(VecDeque::len).sum()
    }

    /// Wait for a slot; `Err` at once when `tenant` already has the most requests
    /// waiting that it may.
    pub async fn acquire(&self, tenant: &str) -> Result<Permit, &'static str> {
        let (rx, id) = {
            let mut st = self.lock();
            let nobody_waits = st.order.is_empty();
            if nobody_waits && st.free > 0 {
                st.free -= 1;
                return Ok(Permit {
                    queue: Some(self.clone()),
                });
            }
            let n = st.waiting.get(tenant).map_or(0, VecDeque::len);
            if self.max_per_tenant > 0 && n >= self.max_per_tenant {
                return Err(TOO_MANY_OUTSTANDING);
            }
            let (tx, rx) = oneshot::channel();
            st.next_id += 1;
            let id = st.next_id;
            st.waiting
                .entry(tenant.to_string())
                .or_default()
                .push_back((id, tx));
            if !st.order.iter().any(|t| t == tenant) {
                st.order.push_back(tenant.to_string());
            }
            (rx, id)
        };
        let guard = Waiting {
            queue: self,
            tenant,
            id,
        };
        let permit = rx.await.map_err(|_| "the frontend is stopping");
        drop(guard);
        permit
    }

    /// A slot came back: hand it to the next tenant in turn, else keep it free.
    fn release(&self) {
        let mut st = self.lock();
        while let Some(tenant) = st.order.pop_front() {
            let Some(q) = st.waiting.get_mut(&tenant) else {
                continue;
            };
            let next = q.pop_front();
            let more = !q.is_empty();
            if more {
                st.order.push_back(tenant.clone());
            } else {
                st.waiting.remove(&tenant);
            }
            if let Some((_, tx)) = next {
                let permit = Permit {
                    queue: Some(self.clone()),
                };
                match tx.send(permit) {
                    Ok(()) => return,
                    // The waiter went away: this slot goes to the next one.
                    Err(mut p) => p.queue = None,
                }
            }
        }
        st.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_go_round_robin_and_a_full_tenant_is_refused() {
        let q = FairQueue::new(1, 3);
        let first = q.acquire("a").await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, t) in ["a", "a", "a", "b"].into_iter().enumerate() {
            let (q2, order) = (q.clone(), order.clone());
            let before = q.total_waiting();
            tasks.push(tokio::spawn(async move {
                let _p = q2.acquire(t).await.unwrap();
                order.lock().unwrap().push(format!("{t}{i}"));
            }));
            while q.total_waiting() == before {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(q.acquire("a").await.unwrap_err(), TOO_MANY_OUTSTANDING);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        // b waited behind three of a's, yet went second
        assert_eq!(*order.lock().unwrap(), vec!["a0", "b3", "a1", "a2"]);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_frees_its_place() {
        let q = FairQueue::new(1, 1);
        let p = q.acquire("a").await.unwrap();
        let waiter =
            tokio::time::timeout(std::time::Duration::from_millis(20), q.acquire("a")).await;
        assert!(waiter.is_err());
        assert_eq!(q.waiting("a"), 0);
        drop(p);
        let _again = q.acquire("a").await.unwrap();
    }
}
