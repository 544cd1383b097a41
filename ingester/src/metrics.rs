//! The ingester's self-monitoring metrics, built from the registry passed in.

use strata_kit::metrics::{Counter, CounterVec, GaugeVec, Histogram, Registry};

#[derive(Clone)]
pub struct IngesterMetrics {
    pub received_samples: Counter,
    pub received_series: Counter,
    pub accepted_samples: Counter,
    pub ingested_histogram_samples: CounterVec,
    /// Mimir's `cortex_ingester_tsdb_out_of_order_samples_appended_total`.
    pub ooo_samples: CounterVec,
    pub rejected_samples: CounterVec,
    pub rejected_requests: CounterVec,
    pub series_created: Counter,
    pub head_series: GaugeVec,
    pub wal_size: GaugeVec,
    pub wal_fsync_duration: Histogram,
    pub blocks_cut: Counter,
    pub blocks_shipped: Counter,
    pub upload_failures: Counter,
    pub ha_deduped_samples: Counter,
    pub ha_elected_changes: Counter,
    pub wal_replay_unknown_series_samples: Counter,
    pub store_series_frames: Counter,
    pub store_series_backpressure_waits: Counter,
    pub metadata_received: Counter,
    pub metadata_dropped: Counter,
    pub exemplars_appended: Counter,
    pub exemplars_rejected: CounterVec,
    pub cardinality_guard_refused: CounterVec,
}

impl IngesterMetrics {
    pub fn new(r: &Registry) -> Self {
        IngesterMetrics {
            received_samples: r.counter(
                "strata_ingester_received_samples_total",
                "Samples received in remote-write requests.",
            ),
            received_series: r.counter(
                "strata_ingester_received_series_total",
                "Time series received in remote-write requests.",
            ),
            accepted_samples: r.counter(
                "strata_ingester_ingested_samples_total",
                "Samples appended to the head and the WAL.",
            ),
            ingested_histogram_samples: r.counter_vec(
                "strata_ingester_ingested_histogram_samples_total",
                "Native histogram samples appended to the head and the WAL, per tenant.",
                &["tenant"],
            ),
            ooo_samples: r.counter_vec(
                "strata_ingester_tsdb_out_of_order_samples_appended_total",
                "Float samples accepted out of order (inside --tsdb.out-of-order-time-window), per tenant.",
                &["tenant"],
            ),
            rejected_samples: r.counter_vec(
                "strata_ingester_rejected_samples_total",
                "Samples refused, by reason.",
                &["reason"],
            ),
            rejected_requests: r.counter_vec(
                "strata_ingester_rejected_requests_total",
                "Whole requests refused before decoding, by reason.",
                &["reason"],
            ),
            series_created: r.counter(
                "strata_ingester_series_created_total",
                "Series created in heads.",
            ),
            head_series: r.gauge_vec(
                "strata_ingester_head_series",
                "Active series in the head, per tenant.",
                &["tenant"],
            ),
            wal_size: r.gauge_vec(
                "strata_ingester_wal_size_bytes",
                "Bytes of WAL segments and checkpoint on disk, per tenant.",
                &["tenant"],
            ),
            wal_fsync_duration: r.histogram(
                "strata_ingester_wal_fsync_duration_seconds",
                "Duration of WAL fsyncs (one per group commit).",
                &[
                    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ],
            ),
            blocks_cut: r.counter("strata_ingester_blocks_cut_total", "Blocks cut from heads."),
            blocks_shipped: r.counter(
                "strata_ingester_blocks_shipped_total",
                "Blocks uploaded to the bucket.",
            ),
            upload_failures: r.counter(
                "strata_ingester_block_upload_failures_total",
                "Failed shipping rounds (retried).",
            ),
            ha_deduped_samples: r.counter(
                "strata_ingester_ha_deduped_samples_total",
                "Samples of a non-elected HA replica, answered 202 and dropped.",
            ),
            ha_elected_changes: r.counter(
                "strata_ingester_ha_elected_replica_changes_total",
                "HA clusters whose elected replica was set or changed.",
            ),
            wal_replay_unknown_series_samples: r.counter(
                "strata_ingester_wal_replay_unknown_series_samples_total",
                "Samples dropped on WAL replay because no series record preceded them (should stay 0).",
            ),
            store_series_frames: r.counter(
                "strata_ingester_store_series_frames_total",
                "Series frames produced for Store API Series answers.",
            ),
            store_series_backpressure_waits: r.counter(
                "strata_ingester_store_series_backpressure_waits_total",
                "Times a Store API Series answer's producer waited for a slow client.",
            ),
            metadata_received: r.counter(
                "strata_ingester_metadata_received_total",
                "Metric metadata entries received in remote-write requests and kept.",
            ),
            metadata_dropped: r.counter(
                "strata_ingester_metadata_dropped_total",
                "Metric metadata entries dropped (no family name, or over --ingester.max-metadata-per-user).",
            ),
            exemplars_appended: r.counter(
                "strata_ingester_exemplars_appended_total",
                "Exemplars stored (WAL and exemplar storage).",
            ),
            exemplars_rejected: r.counter_vec(
                "strata_ingester_exemplars_rejected_total",
                "Exemplars not stored, by reason (duplicates are not counted).",
                &["reason"],
            ),
            cardinality_guard_refused: r.counter_vec(
                "strata_cardinality_guard_refused_series_total",
                "New series refused by the cardinality guard, by tenant, metric and exploding label.",
                &["tenant", "metric", "label"],
            ),
        }
    }
}
