//! One query's cost and limits: series, chunks and chunk bytes fetched, samples decoded,
//! object-store requests and bytes, per source, counted as the data arrives so a limit
//! stops the fetch before the data is held (Mimir's query limiter).
//!
//! Counting is a few relaxed atomic adds per series or chunk, never per sample.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// The error a count returns: a limit is [`StoreError::Limit`].
pub use strata_store::StoreError;
use strata_tsdb::labels::Labels;

/// The per-query limits; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryLimits {
    /// Distinct series fetched from all sources [`--querier.max-fetched-series-per-query`].
    pub max_series: u64,
    /// Chunk bytes fetched from all sources [`--querier.max-fetched-chunk-bytes-per-query`].
    pub max_chunk_bytes: u64,
    /// [`--query.max-samples`]: counted by the engine as Prometheus does (points held
    /// per step); here it bounds the raw samples one selector may fetch, at
    /// [`FETCH_SAMPLES_FACTOR`] times it. 0 for the series and label APIs and remote read
    /// (which has its own sample limit).
    pub max_samples: u64,
}

/// Mimir's advice after a limit (`limiter.cardinalityStrategy`).
const STRATEGY: &str = "Consider reducing the time range and/or number of series selected by the query. One way to reduce the number of selected series is to add more label matchers to the query";

/// Mimir's message for `--querier.max-fetched-series-per-query`.
pub fn max_series_message(limit: u64) -> String {
    format!("the query exceeded the maximum number of series (limit: {limit} series) (err-mimir-max-series-per-query). {STRATEGY}. Otherwise, to adjust the related per-tenant limit, configure --querier.max-fetched-series-per-query, or contact your service administrator.")
}

/// Mimir's message for `--querier.max-fetched-chunk-bytes-per-query`.
pub fn max_chunk_bytes_message(limit: u64) -> String {
    format!("the query exceeded the aggregated chunks size limit (limit: {limit} bytes) (err-mimir-max-chunks-bytes-per-query). {STRATEGY}. Otherwise, to adjust the related per-tenant limit, configure --querier.max-fetched-chunk-bytes-per-query, or contact your service administrator.")
}

/// How many times `--query.max-samples` raw samples one selector may fetch. The limit
/// itself is Prometheus's: the engine counts the points held at once (a selector's
/// points per step, a range function's window of one series, the outputs so far), so
/// a selector may fetch far more raw samples than that (a 30-day window at a 1 h step).
/// Prometheus streams those from memory-mapped chunks; Strata holds a selector's chunks
/// (encoded, ≈ 1.3 B a sample) while the engine evaluates it, so their count is bounded
/// too, refused with the same message before they are held: the one place a query
/// Prometheus answers is refused (at the 50M default, a selector over 500M samples).
pub const FETCH_SAMPLES_FACTOR: u64 = 10;

/// Prometheus's `ErrTooManySamples` text.
pub const TOO_MANY_SAMPLES: &str =
    "query processing would load too many samples into memory in query execution";

/// What one source (an endpoint, the bucket) cost a query.
#[derive(Debug, Default)]
pub struct SourceCost {
    series: AtomicU64,
    chunks: AtomicU64,
    chunk_bytes: AtomicU64,
    samples: AtomicU64,
    object_requests: AtomicU64,
    object_bytes: AtomicU64,
}

/// A snapshot of [`SourceCost`] (or of their sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Series answered (a series from two sources counts twice).
    pub series: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    /// Samples in the chunks fetched (a chunk straddling the asked range's edge counts
    /// whole: it is fetched and held whole) and samples decoded by the source.
    pub samples: u64,
    /// Object-store requests (index, listing, chunk range reads) and bytes read.
    pub object_requests: u64,
    pub object_bytes: u64,
}

impl SourceCost {
    fn get(&self) -> Cost {
        Cost {
            series: self.series.load(Relaxed),
            chunks: self.chunks.load(Relaxed),
            chunk_bytes: self.chunk_bytes.load(Relaxed),
            samples: self.samples.load(Relaxed),
            object_requests: self.object_requests.load(Relaxed),
            object_bytes: self.object_bytes.load(Relaxed),
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.series += o.series;
        self.chunks += o.chunks;
        self.chunk_bytes += o.chunk_bytes;
        self.samples += o.samples;
        self.object_requests += o.object_requests;
        self.object_bytes += o.object_bytes;
    }
}

/// One query's counters and limits, shared by every source it reads.
#[derive(Debug, Default)]
pub struct QueryCost {
    limits: QueryLimits,
    /// Hashes of the series seen, only kept with a series limit (as Mimir: a series from
    /// several replicas counts once).
    unique: Mutex<HashSet<u64, BuildHasherDefault<IdHasher>>>,
    chunk_bytes: AtomicU64,
    /// Samples loaded by the selector being fetched ([`QueryCost::begin_select`]).
    select_samples: AtomicU64,
    sources: Mutex<Vec<(String, Arc<SourceCost>)>>,
    /// The first limit this query hit: the query fails with it, whichever source saw it.
    tripped: std::sync::OnceLock<String>,
}

impl QueryCost {
    pub fn new(limits: QueryLimits) -> Arc<Self> {
        Arc::new(QueryCost {
            limits,
            ..Default::default()
        })
    }

    pub fn limits(&self) -> QueryLimits {
        self.limits
    }

    /// The counter of source `name` (created on first use).
    pub fn source(self: &Arc<Self>, name: &str) -> Counter {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let src = match s.iter().find(|(n, _)| n == name) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Arc::new(SourceCost::default());
                s.push((name.to_string(), c.clone()));
                c
            }
        };
        Counter {
            query: self.clone(),
            src,
        }
    }

    /// A new selector is fetched: `--query.max-samples` bounds each selector's samples.
    pub fn begin_select(&self) {
        self.select_samples.store(0, Relaxed);
    }

    /// The message of the first limit the query hit.
    pub fn tripped(&self) -> Option<&str> {
        self.tripped.get().map(String::as_str)
    }

    fn trip(&self, msg: String) -> StoreError {
        let _ = self.tripped.set(msg.clone());
        StoreError::Limit(msg)
    }

    /// Cost per source, in the order the sources were first used.
    pub fn per_source(&self) -> Vec<(String, Cost)> {
        let s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().map(|(n, c)| (n.clone(), c.get())).collect()
    }

    /// Cost of all sources together.
    pub fn total(&self) -> Cost {
        let mut t = Cost::default();
        for (_, c) in self.per_source() {
            t += c;
        }
        t
    }
}

/// Counts one source's data into its query, checking the limits.
#[derive(Debug, Clone)]
pub struct Counter {
    query: Arc<QueryCost>,
    src: Arc<SourceCost>,
}

impl Counter {
    /// A counter of a query without limits, for reads nobody accounts for.
    pub fn unaccounted() -> Counter {
        QueryCost::new(QueryLimits::default()).source("")
    }

    /// A series arrived.
    pub fn series(&self, labels: &Labels) -> Result<(), StoreError> {
        self.src.series.fetch_add(1, Relaxed);
        let max = self.query.limits.max_series;
        if max == 0 {
            return Ok(());
        }
        // Fixed keys: the same labels from two sources must give the same hash.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        labels.hash(&mut h);
        let mut seen = self.query.unique.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(h.finish());
        if seen.len() as u64 > max {
            return Err(self.query.trip(max_series_message(max)));
        }
        Ok(())
    }

    /// A chunk of `bytes` arrived.
    pub fn chunk(&self, bytes: usize) -> Result<(), StoreError> {
        self.chunks(1, bytes)
    }

    /// `n` chunks of `bytes` together arrived (one update of the shared counters for a
    /// batch: every source's reader threads add to the same ones).
    pub fn chunks(&self, n: usize, bytes: usize) -> Result<(), StoreError> {
        let b = bytes as u64;
        self.src.chunks.fetch_add(n as u64, Relaxed);
        self.src.chunk_bytes.fetch_add(b, Relaxed);
        let total = self.query.chunk_bytes.fetch_add(b, Relaxed) + b;
        let max = self.query.limits.max_chunk_bytes;
        if max > 0 && total > max {
            return Err(self.query.trip(max_chunk_bytes_message(max)));
        }
        Ok(())
    }

    /// `n` samples were decoded.
    pub fn samples(&self, n: usize) -> Result<(), StoreError> {
        let n = n as u64;
        self.src.samples.fetch_add(n, Relaxed);
        let total = self.query.select_samples.fetch_add(n, Relaxed) + n;
        let max = self
            .query
            .limits
            .max_samples
            .saturating_mul(FETCH_SAMPLES_FACTOR);
        if max > 0 && total > max {
            return Err(self.query.trip(TOO_MANY_SAMPLES.into()));
        }
        Ok(())
    }

    /// An object-store request that read `bytes`.
    pub fn object_read(&self, bytes: usize) {
        self.object_reads(1, bytes);
    }

    /// `requests` object-store requests that read `bytes` together.
    pub fn object_reads(&self, requests: usize, bytes: usize) {
        self.src.object_requests.fetch_add(requests as u64, Relaxed);
        self.src.object_bytes.fetch_add(bytes as u64, Relaxed);
    }
}

/// The series hashes are already well mixed: the set need not hash them again.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_from_two_sources_counts_once_against_the_limit() {
        let q = QueryCost::new(QueryLimits {
            max_series: 1,
            ..Default::default()
        });
        let (a, b) = (q.source("a"), q.source("b"));
        let l = Labels::from_pairs([("__name__", "x")]);
        a.series(&l).unwrap();
        b.series(&l).unwrap();
        let e = b
            .series(&Labels::from_pairs([("__name__", "y")]))
            .unwrap_err();
        assert_eq!(e.to_string(), max_series_message(1));
        assert_eq!(q.total().series, 3);
        assert_eq!(
            q.per_source()[0],
            (
                "a".into(),
                Cost {
                    series: 1,
                    ..Default::default()
                }
            )
        );
    }

    #[test]
    fn chunk_bytes_and_samples_trip_past_their_limits() {
        let q = QueryCost::new(QueryLimits {
            max_chunk_bytes: 100,
            max_samples: 10,
            ..Default::default()
        });
        let c = q.source("a");
        c.chunk(100).unwrap();
        assert!(c
            .chunk(1)
            .unwrap_err()
            .to_string()
            .contains("(limit: 100 bytes)"));
        // A selector may fetch FETCH_SAMPLES_FACTOR times the limit (the engine
        // counts the limit itself as Prometheus does).
        c.samples(10 * FETCH_SAMPLES_FACTOR as usize).unwrap();
        assert!(c.samples(1).is_err());
        // Each selector has the whole budget.
        q.begin_select();
        c.samples(10).unwrap();
        assert_eq!(q.total().samples, 10 * FETCH_SAMPLES_FACTOR + 11);
    }
}
