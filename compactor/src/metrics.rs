//! The compactor's metrics, built from the registry passed in.

use strata_kit::metrics::{Counter, CounterVec, Gauge, GaugeVec, Registry};

/// Handles to every compactor metric.
#[derive(Debug, Clone)]
pub struct CompactorMetrics {
    pub passes: CounterVec,
    pub last_success: Gauge,
    pub compactions: Counter,
    pub downsamplings: CounterVec,
    pub marked_for_deletion: Counter,
    pub deleted: Counter,
    pub marked_no_compact: Counter,
    pub halts: Counter,
    pub halted_streams: Gauge,
    pub lock_held: Gauge,
    pub bucket_bytes: GaugeVec,
    pub bucket_blocks: GaugeVec,
}

impl CompactorMetrics {
    pub fn new(r: &Registry) -> Self {
        CompactorMetrics {
            passes: r.counter_vec(
                "strata_compactor_passes_total",
                "Compaction passes, by result.",
                &["result"],
            ),
            last_success: r.gauge(
                "strata_compactor_last_successful_pass_timestamp_seconds",
                "Unix time the last pass without error ended.",
            ),
            compactions: r.counter(
                "strata_compactor_compactions_total",
                "Blocks written by compaction.",
            ),
            downsamplings: r.counter_vec(
                "strata_compactor_downsamples_total",
                "Blocks written by downsampling, by resolution.",
                &["resolution"],
            ),
            marked_for_deletion: r.counter(
                "strata_compactor_blocks_marked_for_deletion_total",
                "Deletion marks written.",
            ),
            deleted: r.counter(
                "strata_compactor_blocks_deleted_total",
                "Block directories deleted.",
            ),
            marked_no_compact: r.counter(
                "strata_compactor_blocks_marked_for_no_compact_total",
                "Blocks marked no-compact because they cannot be read.",
            ),
            halts: r.counter(
                "strata_compactor_halts_total",
                "Streams halted because their blocks cannot be merged.",
            ),
            halted_streams: r.gauge(
                "strata_compactor_halted_streams",
                "Streams halted until their blocks change or a restart.",
            ),
            lock_held: r.gauge(
                "strata_compactor_lock_held",
                "1 while this compactor holds the bucket's compactor lease, 0 while another does.",
            ),
            bucket_bytes: r.gauge_vec(
                "strata_compactor_bucket_bytes",
                "Bytes of live blocks in the bucket, by resolution.",
                &["resolution"],
            ),
            bucket_blocks: r.gauge_vec(
                "strata_compactor_bucket_blocks",
                "Live blocks in the bucket, by resolution.",
                &["resolution"],
            ),
        }
    }
}
