//! Per-series validation of incoming remote-write data, with Mimir's limits, flag names
//! and error messages, so operators who know Mimir's runbooks recognise them.

use std::fmt;

use clap::Args;

/// Limits applied per tenant. Flag names are Mimir's.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Per-tenant ingestion rate limit in samples per second (0 = unlimited).
    #[arg(long = "distributor.ingestion-rate-limit", default_value_t = 0.0)]
    pub ingestion_rate: f64,
    /// Per-tenant burst size in samples (defaults to one second of the rate, at least 1000).
    #[arg(long = "distributor.ingestion-burst-size", default_value_t = 0)]
    pub ingestion_burst: u64,
    /// Maximum size in bytes of a remote-write request body (compressed).
    #[arg(long = "distributor.max-recv-msg-size", default_value_t = 100 << 20)]
    pub max_recv_msg_size: usize,
    /// Maximum in-memory (active) series per tenant (0 = unlimited).
    #[arg(
        long = "ingester.max-global-series-per-user",
        default_value_t = 150_000
    )]
    pub max_series_per_user: usize,
    /// Maximum active series per metric name per tenant (0 = unlimited).
    #[arg(long = "ingester.max-global-series-per-metric", default_value_t = 0)]
    pub max_series_per_metric: usize,
    /// Maximum number of label names per series.
    #[arg(long = "validation.max-label-names-per-series", default_value_t = 30)]
    pub max_label_names_per_series: usize,
    /// Maximum length of a label name.
    #[arg(long = "validation.max-length-label-name", default_value_t = 1024)]
    pub max_label_name_length: usize,
    /// Maximum length of a label value.
    #[arg(long = "validation.max-length-label-value", default_value_t = 2048)]
    pub max_label_value_length: usize,
    /// How far ahead of the ingester's clock a sample's timestamp may be; later samples
    /// are refused (one sample from the future would otherwise move the head's window).
    #[arg(long = "validation.create-grace-period", value_name = "DURATION", default_value = "10m", value_parser = strata_kit::parse_duration_ms)]
    pub create_grace_period_ms: i64,
    /// How long a push may take, from its arrival to its answer (reading, decoding,
    /// storing, forwarding to the other owners): past it the answer is 503 and the
    /// request's work stops before anything of it is logged, so the retry is safe.
    #[arg(long = "distributor.push-timeout", value_name = "DURATION", default_value = "30s", value_parser = strata_kit::parse_duration_ms)]
    pub push_timeout_ms: i64,
    /// Maximum number of buckets of a native histogram sample (0 = no limit). Over it,
    /// the sample's resolution is reduced until it fits (see
    /// --validation.reduce-native-histogram-over-max-buckets).
    #[arg(long = "validation.max-native-histogram-buckets", default_value_t = 0)]
    pub max_native_histogram_buckets: usize,
    /// Reduce the resolution of a native histogram sample over
    /// --validation.max-native-histogram-buckets instead of refusing it.
    #[arg(
        long = "validation.reduce-native-histogram-over-max-buckets",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub reduce_native_histogram_over_max_buckets: bool,
    /// How far behind the tenant's newest sample a float sample may be and still be
    /// accepted out of order (0 = out-of-order samples are refused). Prometheus's
    /// `storage.tsdb.out_of_order_time_window`, Mimir's
    /// `-ingester.out-of-order-time-window`; native histograms stay in order only.
    #[arg(long = "tsdb.out-of-order-time-window", alias = "ingester.out-of-order-time-window", value_name = "DURATION", default_value = "0s", value_parser = strata_kit::parse_duration_ms)]
    pub out_of_order_time_window_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ingestion_rate: 0.0,
            ingestion_burst: 0,
            max_recv_msg_size: 100 << 20,
            max_series_per_user: 150_000,
            max_series_per_metric: 0,
            max_label_names_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            create_grace_period_ms: 10 * 60 * 1000,
            push_timeout_ms: 30_000,
            max_native_histogram_buckets: 0,
            reduce_native_histogram_over_max_buckets: true,
            out_of_order_time_window_ms: 0,
        }
    }
}

/// Why a series (or a sample of it) was refused. `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesError {
    MissingMetricName,
    InvalidMetricName(String),
    InvalidLabelName(String),
    DuplicateLabelName(String),
    LabelNameTooLong(String),
    LabelValueTooLong {
        name: String,
        len: usize,
    },
    TooManyLabels(usize),
    UnsortedLabels(String),
    PerUserSeriesLimit,
    PerMetricSeriesLimit,
    /// A new series refused by the cardinality guard.
    CardinalityGuard(Box<crate::cardinality::Refusal>),
    OutOfOrder {
        t: i64,
        last: i64,
    },
    TooOld {
        t: i64,
        min_valid: i64,
    },
    DuplicateTimestamp {
        t: i64,
    },
    /// Older than the series' newest sample and beyond the out-of-order window.
    TooOldForWindow {
        t: i64,
        window_ms: i64,
    },
    /// Later than the ingester's clock plus `--validation.create-grace-period`.
    TooFarInFuture {
        t: i64,
        grace_ms: i64,
    },
    /// A native histogram sample refused by validation or the bucket limit.
    Histogram(crate::histograms::HistogramError),
}

impl SeriesError {
    /// Short stable reason, used as the `reason` label of rejection metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SeriesError::MissingMetricName => "missing_metric_name",
            SeriesError::InvalidMetricName(_) => "metric_name_invalid",
            SeriesError::InvalidLabelName(_) => "label_invalid",
            SeriesError::DuplicateLabelName(_) => "duplicate_label_names",
            SeriesError::LabelNameTooLong(_) => "label_name_too_long",
            SeriesError::LabelValueTooLong { .. } => "label_value_too_long",
            SeriesError::TooManyLabels(_) => "max_label_names_per_series",
            SeriesError::UnsortedLabels(_) => "labels_not_sorted",
            SeriesError::PerUserSeriesLimit => "per_user_series_limit",
            SeriesError::PerMetricSeriesLimit => "per_metric_series_limit",
            SeriesError::CardinalityGuard(_) => "cardinality_guard",
            SeriesError::OutOfOrder { .. } => "sample_out_of_order",
            SeriesError::TooOld { .. } | SeriesError::TooOldForWindow { .. } => "sample_too_old",
            SeriesError::DuplicateTimestamp { .. } => "new_value_for_timestamp",
            SeriesError::TooFarInFuture { .. } => "too_far_in_future",
            SeriesError::Histogram(e) => e.reason(),
        }
    }

    /// Mimir's stable error ID, so runbooks can be searched.
    pub fn id(&self) -> &'static str {
        match self {
            SeriesError::MissingMetricName => "err-mimir-missing-metric-name",
            SeriesError::InvalidMetricName(_) => "err-mimir-metric-name-invalid",
            SeriesError::InvalidLabelName(_) => "err-mimir-label-invalid",
            SeriesError::DuplicateLabelName(_) => "err-mimir-duplicate-label-names",
            SeriesError::LabelNameTooLong(_) => "err-mimir-label-name-too-long",
            SeriesError::LabelValueTooLong { .. } => "err-mimir-label-value-too-long",
            SeriesError::TooManyLabels(_) => "err-mimir-max-label-names-per-series",
            SeriesError::UnsortedLabels(_) => "err-mimir-labels-not-sorted",
            SeriesError::PerUserSeriesLimit => "err-mimir-max-series-per-user",
            SeriesError::PerMetricSeriesLimit => "err-mimir-max-series-per-metric",
            SeriesError::CardinalityGuard(_) => "err-strata-cardinality-guard",
            SeriesError::OutOfOrder { .. } => "err-mimir-sample-out-of-order",
            SeriesError::TooOld { .. } => "err-mimir-sample-too-old",
            SeriesError::TooOldForWindow { .. } => "err-mimir-sample-timestamp-too-old",
            SeriesError::DuplicateTimestamp { .. } => "err-mimir-sample-duplicate-timestamp",
            SeriesError::TooFarInFuture { .. } => "err-mimir-too-far-in-future",
            SeriesError::Histogram(e) => e.id(),
        }
    }
}

impl fmt::Display for SeriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeriesError::MissingMetricName => write!(f, "received a series without a metric name"),
            SeriesError::InvalidMetricName(n) => write!(f, "received a series with invalid metric name: '{n}'"),
            SeriesError::InvalidLabelName(n) => write!(f, "received a series with an invalid label: '{n}'"),
            SeriesError::DuplicateLabelName(n) => write!(f, "received a series with duplicate label name, label: '{n}'"),
            SeriesError::LabelNameTooLong(n) => write!(
                f,
                "received a series whose label name length exceeds the limit, label: '{n}' (the limit is set by --validation.max-length-label-name)"
            ),
            SeriesError::LabelValueTooLong { name, len } => write!(
                f,
                "received a series whose label value length of {len} exceeds the limit, label: '{name}' (the limit is set by --validation.max-length-label-value)"
            ),
            SeriesError::TooManyLabels(n) => write!(
                f,
                "received a series whose number of labels ({n}) exceeds the limit (the limit is set by --validation.max-label-names-per-series)"
            ),
            SeriesError::UnsortedLabels(n) => write!(f, "received a series where the label names are not sorted, label: '{n}'"),
            SeriesError::PerUserSeriesLimit => write!(
                f,
                "per-user series limit reached: the tenant has too many active series; reduce the cardinality or raise the limit (--ingester.max-global-series-per-user)"
            ),
            SeriesError::PerMetricSeriesLimit => write!(
                f,
                "per-metric series limit reached: this metric has too many active series; reduce its cardinality or raise the limit (--ingester.max-global-series-per-metric)"
            ),
            SeriesError::CardinalityGuard(r) => write!(
                f,
                "cardinality guard: metric {:?} gained more than {} new series within {}, most of them new values of label {:?} ({} distinct); new series with a new value of {:?} (here {:?}) are refused until a window passes without that growth, while existing series and new series with known values of {:?} are accepted (--ingester.cardinality-guard.max-new-series-per-metric)",
                r.metric,
                r.new_series.saturating_sub(1),
                strata_kit::format_duration_ms(r.window_ms),
                r.label,
                r.distinct_values,
                r.label,
                r.value,
                r.label
            ),
            SeriesError::OutOfOrder { t, last } => write!(
                f,
                "the sample has been rejected because another sample with a more recent timestamp has already been ingested and out-of-order samples are not allowed (timestamp {t}, last {last})"
            ),
            SeriesError::TooOld { t, min_valid } => write!(
                f,
                "the sample has been rejected because its timestamp is too old (timestamp {t}, minimum accepted {min_valid})"
            ),
            SeriesError::TooOldForWindow { t, window_ms } => write!(
                f,
                "the sample has been rejected because another sample with a more recent timestamp has already been ingested and this sample is beyond the out-of-order time window of {} (timestamp {t}; the window is set by --tsdb.out-of-order-time-window)",
                strata_kit::format_duration_ms(*window_ms)
            ),
            SeriesError::Histogram(e) => write!(f, "{e}"),
            SeriesError::TooFarInFuture { t, grace_ms } => write!(
                f,
                "received a sample whose timestamp is too far in the future, timestamp: {t} (more than {} after the ingester's clock; the limit is set by --validation.create-grace-period)",
                strata_kit::format_duration_ms(*grace_ms)
            ),
            SeriesError::DuplicateTimestamp { t } => write!(
                f,
                "the sample has been rejected because another sample with the same timestamp, but a different value, has already been ingested (timestamp {t})"
            ),
        }?;
        write!(f, " ({})", self.id())
    }
}

fn valid_metric_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// Prometheus's (UTF-8-less) label name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub use strata_kit::labels::valid_label_name;

/// Validate one series' labels as they arrive (any order). Returns the metric name.
pub fn validate_labels<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    limits: &Limits,
) -> Result<&'a str, SeriesError> {
    let mut metric = None;
    let mut count = 0usize;
    let mut names: smallvec_names::Names<'a> = smallvec_names::Names::default();
    // Names in strictly increasing order (as Prometheus sends them) cannot repeat: the
    // set is only consulted once a name is out of order.
    let mut prev: Option<&str> = None;
    let mut sorted = true;
    for (name, value) in labels {
        count += 1;
        if name == "__name__" {
            if !valid_metric_name(value) {
                return Err(SeriesError::InvalidMetricName(value.to_string()));
            }
            metric = Some(value);
        } else if !valid_label_name(name) {
            return Err(SeriesError::InvalidLabelName(name.to_string()));
        }
        check_lengths(name, value, limits)?;
        if sorted && prev.is_some_and(|p| p >= name) {
            sorted = false;
        }
        if !sorted && names.contains(name) {
            return Err(SeriesError::DuplicateLabelName(name.to_string()));
        }
        names.push(name);
        prev = Some(name);
    }
    let metric = metric.ok_or(SeriesError::MissingMetricName)?;
    if count > limits.max_label_names_per_series {
        return Err(SeriesError::TooManyLabels(count));
    }
    Ok(metric)
}

/// The length limits on one label.
fn check_lengths(name: &str, value: &str, limits: &Limits) -> Result<(), SeriesError> {
    if name.len() > limits.max_label_name_length {
        return Err(SeriesError::LabelNameTooLong(name.to_string()));
    }
    if value.len() > limits.max_label_value_length {
        return Err(SeriesError::LabelValueTooLong {
            name: name.to_string(),
            len: value.len(),
        });
    }
    Ok(())
}

/// [`validate_labels`] for a label set the head already holds (found from these exact
/// pairs): the character and duplicate rules held when the series was created and
/// cannot change, so only the limits (which a runtime configuration can lower) are
/// checked, in the same order, giving the error `validate_labels` would give.
pub fn validate_known_labels(labels: &[(&str, &str)], limits: &Limits) -> Result<(), SeriesError> {
    for (name, value) in labels {
        check_lengths(name, value, limits)?;
    }
    if labels.len() > limits.max_label_names_per_series {
        return Err(SeriesError::TooManyLabels(labels.len()));
    }
    Ok(())
}

/// A tiny set of label names for duplicate detection without allocating for the usual
/// handful of labels.
mod smallvec_names {
    #[derive(Default)]
    pub struct Names<'a> {
        inline: [&'a str; 16],
        len: usize,
        spill: Vec<&'a str>,
    }

    impl<'a> Names<'a> {
        pub fn contains(&self, n: &str) -> bool {
            self.inline[..self.len.min(16)].contains(&n) || self.spill.contains(&n)
        }

        pub fn push(&mut self, n: &'a str) {
            if self.len < 16 {
                self.inline[self.len] = n;
            } else {
                self.spill.push(n);
            }
            self.len += 1;
        }
    }
}

pub use strata_kit::tenant::validate_tenant;

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pairs: &[(&'static str, &'static str)]) -> Result<&'static str, SeriesError> {
        validate_labels(pairs.iter().copied(), &Limits::default())
    }

    #[test]
    fn label_rules() {
        assert_eq!(v(&[("__name__", "up"), ("job", "x")]), Ok("up"));
        assert_eq!(v(&[("job", "x")]), Err(SeriesError::MissingMetricName));
        assert!(matches!(
            v(&[("__name__", "1up")]),
            Err(SeriesError::InvalidMetricName(_))
        ));
        assert!(matches!(
            v(&[("__name__", "up"), ("a-b", "1")]),
            Err(SeriesError::InvalidLabelName(_))
        ));
        assert!(matches!(
            v(&[("__name__", "up"), ("a", "1"), ("a", "2")]),
            Err(SeriesError::DuplicateLabelName(_))
        ));
        let long = Box::leak("x".repeat(3000).into_boxed_str());
        assert!(matches!(
            v(&[("__name__", "up"), ("a", long)]),
            Err(SeriesError::LabelValueTooLong { .. })
        ));
        let many: Vec<(&str, &str)> = std::iter::once(("__name__", "m"))
            .chain((0..40).map(|i| (&*Box::leak(format!("l{i}").into_boxed_str()), "v")))
            .collect();
        assert_eq!(
            validate_labels(many.iter().copied(), &Limits::default()),
            Err(SeriesError::TooManyLabels(41))
        );
    }

    #[test]
    fn known_labels_check_the_limits_only() {
        let limits = Limits {
            max_label_names_per_series: 2,
            max_label_value_length: 3,
            ..Limits::default()
        };
        let ok = [("__name__", "up"), ("job", "abc")];
        assert_eq!(validate_known_labels(&ok, &limits), Ok(()));
        assert_eq!(
            validate_known_labels(&[("__name__", "up"), ("job", "abcd")], &limits),
            Err(SeriesError::LabelValueTooLong {
                name: "job".into(),
                len: 4
            })
        );
        let three = [("__name__", "up"), ("a", "1"), ("b", "2")];
        // the same error as the full check, which a lowered limit gives an old series
        assert_eq!(
            validate_known_labels(&three, &limits),
            validate_labels(three.iter().copied(), &limits).map(|_| ())
        );
        // unsorted names are still checked for duplicates by the full check
        assert!(matches!(
            v(&[("__name__", "up"), ("b", "1"), ("a", "2"), ("b", "3")]),
            Err(SeriesError::DuplicateLabelName(n)) if n == "b"
        ));
        assert_eq!(v(&[("b", "1"), ("__name__", "up"), ("a", "2")]), Ok("up"));
    }

    #[test]
    fn messages_name_the_flag() {
        assert!(SeriesError::PerUserSeriesLimit
            .to_string()
            .contains("(--ingester.max-global-series-per-user)"));
        // Strata's flags have two dashes; Mimir's one-dash spelling is no flag here
        for e in [
            SeriesError::PerMetricSeriesLimit,
            SeriesError::LabelNameTooLong("x".into()),
            SeriesError::LabelValueTooLong {
                name: "x".into(),
                len: 9,
            },
            SeriesError::TooManyLabels(3),
            SeriesError::TooFarInFuture { t: 1, grace_ms: 1 },
        ] {
            let m = e.to_string();
            assert!(m.contains(" --") || m.contains("(--"), "{m}");
            assert!(!m.contains(" -v") && !m.contains("(-i"), "{m}");
        }
        assert!(SeriesError::TooManyLabels(3)
            .to_string()
            .contains("err-mimir-max-label-names-per-series"));
    }

    #[test]
    fn tenants() {
        assert!(validate_tenant("team-a").is_ok());
        for bad in ["", "..", ".", "a/b", &"x".repeat(151)] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
    }
}
