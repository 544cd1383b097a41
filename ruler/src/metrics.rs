//! The ruler's metrics (`strata_ruler_*`), built from the registry passed in.

use strata_kit::metrics::{Counter, CounterVec, Gauge, GaugeVec, HistogramVec, Registry};

#[derive(Debug, Clone)]
pub struct RulerMetrics {
    /// Per group (`rule_group` = `file;name`, Prometheus's key).
    pub evaluations: CounterVec,
    pub evaluation_failures: CounterVec,
    pub evaluation_duration: HistogramVec,
    pub iterations_missed: CounterVec,
    pub last_evaluation: GaugeVec,
    pub group_rules: GaugeVec,
    pub write_failures: Counter,
    pub samples_written: Counter,
    pub notifications_sent: CounterVec,
    pub notifications_errors: CounterVec,
    pub notifications_dropped: Counter,
    pub notifications_queue_length: Gauge,
    pub notifications_queue_capacity: Gauge,
    pub alertmanagers_discovered: Gauge,
    pub config_last_reload_successful: Gauge,
    pub config_last_reload_success_timestamp: Gauge,
}

impl RulerMetrics {
    pub fn new(r: &Registry) -> Self {
        RulerMetrics {
            evaluations: r.counter_vec(
                "strata_ruler_evaluations_total",
                "Rule evaluations, per rule group.",
                &["rule_group"],
            ),
            evaluation_failures: r.counter_vec(
                "strata_ruler_evaluation_failures_total",
                "Rule evaluations that failed (query error, limit, duplicate series), per rule group.",
                &["rule_group"],
            ),
            evaluation_duration: r.histogram_vec(
                "strata_ruler_group_evaluation_duration_seconds",
                "Time to evaluate a whole rule group.",
                &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0],
                &["rule_group"],
            ),
            iterations_missed: r.counter_vec(
                "strata_ruler_group_iterations_missed_total",
                "Group evaluations skipped because the previous one was too slow.",
                &["rule_group"],
            ),
            last_evaluation: r.gauge_vec(
                "strata_ruler_group_last_evaluation_timestamp_seconds",
                "When the group was last evaluated (its evaluation timestamp).",
                &["rule_group"],
            ),
            group_rules: r.gauge_vec(
                "strata_ruler_group_rules",
                "Rules in the group.",
                &["rule_group"],
            ),
            write_failures: r.counter(
                "strata_ruler_remote_write_failures_total",
                "Writes of rule results to the ingest path that failed after retries.",
            ),
            samples_written: r.counter(
                "strata_ruler_samples_written_total",
                "Samples (results, ALERTS, ALERTS_FOR_STATE, stale markers) written to the ingest path.",
            ),
            notifications_sent: r.counter_vec(
                "strata_ruler_notifications_total",
                "Alerts sent to an Alertmanager.",
                &["alertmanager"],
            ),
            notifications_errors: r.counter_vec(
                "strata_ruler_notifications_errors_total",
                "Alerts that could not be sent to an Alertmanager (after retries).",
                &["alertmanager"],
            ),
            notifications_dropped: r.counter(
                "strata_ruler_notifications_dropped_total",
                "Alerts dropped: the queue was full, or no Alertmanager took them.",
            ),
            notifications_queue_length: r.gauge(
                "strata_ruler_notifications_queue_length",
                "Alerts waiting to be sent.",
            ),
            notifications_queue_capacity: r.gauge(
                "strata_ruler_notifications_queue_capacity",
                "Capacity of the notification queue.",
            ),
            alertmanagers_discovered: r.gauge(
                "strata_ruler_notifications_alertmanagers_discovered",
                "Alertmanagers notified.",
            ),
            config_last_reload_successful: r.gauge(
                "strata_ruler_config_last_reload_successful",
                "Whether the last rule reload succeeded (1) or was refused (0).",
            ),
            config_last_reload_success_timestamp: r.gauge(
                "strata_ruler_config_last_reload_success_timestamp_seconds",
                "When rules were last loaded successfully.",
            ),
        }
    }
}
