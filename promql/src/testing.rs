//! An in-memory [`Storage`] for tests and the conformance runner.

use std::collections::BTreeMap;
use std::sync::Mutex;

use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;

use crate::{SelectHints, Storage, StorageError, StorageSeries};

/// Series kept in memory, sorted by labels; samples sorted by time.
#[derive(Debug, Default)]
pub struct MemStorage {
    series: Mutex<BTreeMap<Labels, Vec<(i64, f64)>>>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add samples to a series (merged by timestamp; a repeated timestamp keeps the
    /// new value).
    pub fn add(&self, labels: Labels, samples: impl IntoIterator<Item = (i64, f64)>) {
        let mut g = self.series.lock().unwrap();
        let s = g.entry(labels).or_default();
        s.extend(samples);
        s.sort_by_key(|p| p.0);
        let mut out: Vec<(i64, f64)> = Vec::with_capacity(s.len());
        for p in s.drain(..) {
            match out.last_mut() {
                Some(l) if l.0 == p.0 => *l = p,
                _ => out.push(p),
            }
        }
        *s = out;
    }

    pub fn clear(&self) {
        self.series.lock().unwrap().clear();
    }

    pub fn len(&self) -> usize {
        self.series.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Storage for MemStorage {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        _hints: &SelectHints,
    ) -> Result<Vec<StorageSeries>, StorageError> {
        let g = self.series.lock().unwrap();
        let mut out = Vec::new();
        for (labels, samples) in g.iter() {
            if !matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            {
                continue;
            }
            let lo = samples.partition_point(|p| p.0 < mint);
            let hi = samples.partition_point(|p| p.0 <= maxt);
            if lo >= hi {
                continue;
            }
            out.push(StorageSeries {
                labels: labels.clone(),
                samples: samples[lo..hi].to_vec(),
                resolution: 0,
            });
        }
        Ok(out)
    }
}
