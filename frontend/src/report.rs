//! What each query cost, kept per tenant for `/api/v1/status/queries`: the most
//! expensive of a tenant's recent queries (the last [`RECENT`] it ran), most samples
//! first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Queries kept per tenant.
pub const RECENT: usize = 200;

/// One finished query and its cost.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRecord {
    pub query: String,
    /// Range (seconds), or 0 for a proxied request.
    pub start: f64,
    pub end: f64,
    pub step: f64,
    /// Unix seconds when the answer was sent.
    pub finished_at: f64,
    pub status: u16,
    pub wall_seconds: f64,
    pub queue_wait_seconds: f64,
    pub downstream_seconds: f64,
    pub parts: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub downstream_requests: u64,
    pub retries: u64,
    pub series_fetched: u64,
    pub chunks_fetched: u64,
    pub chunk_bytes_fetched: u64,
    pub samples_fetched: u64,
    pub object_store_requests: u64,
    pub object_store_bytes: u64,
    pub total_queryable_samples: u64,
}

/// The recent queries of every tenant.
#[derive(Debug, Default)]
pub struct Report {
    tenants: Mutex<HashMap<String, VecDeque<QueryRecord>>>,
}

impl Report {
    pub fn add(&self, tenant: &str, r: QueryRecord) {
        let mut t = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let q = t.entry(tenant.to_string()).or_default();
        if q.len() == RECENT {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// The `limit` most expensive recent queries of `tenant`: most samples fetched
    /// first, then longest.
    pub fn top(&self, tenant: &str, limit: usize) -> Vec<QueryRecord> {
        let t = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<QueryRecord> = t
            .get(tenant)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| {
            b.samples_fetched
                .cmp(&a.samples_fetched)
                .then(b.wall_seconds.total_cmp(&a.wall_seconds))
        });
        v.truncate(limit);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_expensive_first_and_bounded() {
        let r = Report::default();
        for i in 0..(RECENT + 10) {
            r.add(
                "t",
                QueryRecord {
                    query: format!("q{i}"),
                    samples_fetched: (i % 7) as u64,
                    wall_seconds: i as f64,
                    ..Default::default()
                },
            );
        }
        r.add("other", QueryRecord::default());
        let top = r.top("t", 3);
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].samples_fetched, 6);
        assert!(top[0].wall_seconds > top[1].wall_seconds);
        assert!(r.top("t", 1000).len() == RECENT);
        assert!(r.top("nobody", 5).is_empty());
    }
}
