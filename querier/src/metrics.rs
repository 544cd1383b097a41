//! The querier's self-metrics, built from the registry it is handed.

use strata_kit::metrics::{CounterVec, Gauge, HistogramVec, Registry, LATENCY_BUCKETS};

#[derive(Clone, Debug)]
pub struct QuerierMetrics {
    /// `strata_querier_queries_total{endpoint,status}`: API requests by API endpoint
    /// (`query`, `query_range`, `series`, ...) and outcome (`success` or the error type).
    pub queries: CounterVec,
    /// `strata_querier_query_duration_seconds{endpoint}`.
    pub duration: HistogramVec,
    /// `strata_querier_store_request_failures_total{store}`: failed requests to a Store
    /// API endpoint (its address) or the bucket (`bucket`).
    pub store_failures: CounterVec,
    /// `strata_querier_bucket_blocks_read_total{resolution}`: bucket blocks read for
    /// series, by resolution (`raw`, `5m`, `1h`): shows which resolution answered.
    pub bucket_blocks: CounterVec,
    /// `strata_querier_queries_limited_total{limit}`: requests refused by a per-query
    /// limit (`max_fetched_series`, `max_fetched_chunk_bytes`, `max_samples`).
    pub limited: CounterVec,
    /// `strata_querier_slow_queries_total`: queries over `--query.log-slow-queries-over`.
    pub slow: strata_kit::metrics::Counter,
    /// `strata_querier_queries_in_flight`: queries evaluating now.
    pub in_flight: Gauge,
    /// `strata_querier_queries_waiting`: queries waiting for `--query.max-concurrent`.
    pub waiting: Gauge,
    /// `strata_querier_remote_reads_waiting`: remote-read requests waiting for
    /// `--storage.remote.read-concurrent-limit`.
    pub remote_reads_waiting: Gauge,
}

impl QuerierMetrics {
    pub fn new(reg: &Registry) -> Self {
        QuerierMetrics {
            queries: reg.counter_vec(
                "strata_querier_queries_total",
                "Querier API requests, by API endpoint and status (success or the Prometheus error type).",
                &["endpoint", "status"],
            ),
            duration: reg.histogram_vec(
                "strata_querier_query_duration_seconds",
                "Time to answer querier API requests, by API endpoint.",
                LATENCY_BUCKETS,
                &["endpoint"],
            ),
            store_failures: reg.counter_vec(
                "strata_querier_store_request_failures_total",
                "Failed requests to a Store API endpoint (by address) or the bucket (store=\"bucket\").",
                &["store"],
            ),
            bucket_blocks: reg.counter_vec(
                "strata_querier_bucket_blocks_read_total",
                "Bucket blocks read for series, by resolution (raw, 5m, 1h).",
                &["resolution"],
            ),
            limited: reg.counter_vec(
                "strata_querier_queries_limited_total",
                "Requests refused by a per-query limit, by limit (max_fetched_series, max_fetched_chunk_bytes, max_samples).",
                &["limit"],
            ),
            slow: reg.counter(
                "strata_querier_slow_queries_total",
                "Queries that took longer than --query.log-slow-queries-over (each is logged).",
            ),
            in_flight: reg.gauge(
                "strata_querier_queries_in_flight",
                "PromQL queries being evaluated.",
            ),
            waiting: reg.gauge(
                "strata_querier_queries_waiting",
                "PromQL queries waiting for a slot (--query.max-concurrent).",
            ),
            remote_reads_waiting: reg.gauge(
                "strata_querier_remote_reads_waiting",
                "Remote-read requests waiting for a slot (--storage.remote.read-concurrent-limit).",
            ),
        }
    }
}
