//! The cardinality guard: when a metric of a tenant gains more than
//! `--ingester.cardinality-guard.max-new-series-per-metric` new series within
//! `--ingester.cardinality-guard.window`, the label whose values are exploding (the one
//! with the most distinct values among those new series) is found, and from then until
//! the window passes quietly only *new* series carrying a value of that label not seen
//! before are refused. Existing series, and new series with known values of the label,
//! keep flowing: a deploy that adds a `request_id` label loses the new `request_id`
//! series, not the metric. Off by default; per tenant, the runtime configuration's
//! `cardinality_guard_max_new_series_per_metric` and `cardinality_guard_window` replace
//! the flags ([`crate::overrides::Overrides::guard`]).

use std::collections::{BTreeMap, HashMap, HashSet};

/// Distinct values remembered per label and window: enough to rank the labels.
const MAX_VALUES_TRACKED: usize = 10_000;

/// `--ingester.cardinality-guard.*`.
#[derive(Debug, Clone, clap::Args)]
pub struct GuardArgs {
    /// New series per metric and tenant within the window past which the guard refuses
    /// new series that bring new values of the exploding label (0 = guard off).
    #[arg(
        long = "ingester.cardinality-guard.max-new-series-per-metric",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_new_series: usize,
    /// The guard's window.
    #[arg(long = "ingester.cardinality-guard.window", value_name = "DURATION", default_value = "10m", value_parser = strata_kit::parse_duration_ms)]
    pub window_ms: i64,
}

impl Default for GuardArgs {
    fn default() -> Self {
        GuardArgs {
            max_new_series: 0,
            window_ms: 600_000,
        }
    }
}

/// Why a new series was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub metric: String,
    pub label: String,
    pub value: String,
    pub new_series: usize,
    pub distinct_values: usize,
    pub window_ms: i64,
}

#[derive(Default)]
struct MetricWindow {
    started_ms: i64,
    new_series: usize,
    values: HashMap<String, HashSet<String>>,
    tripped: Option<Tripped>,
}

struct Tripped {
    label: String,
    known: HashSet<String>,
    distinct_values: usize,
    since_ms: i64,
}

/// What the guard has done, for `/api/v1/status/tsdb`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardState {
    pub metric: String,
    pub label: String,
    pub active: bool,
    pub since_ms: i64,
    pub refused_series: u64,
}

/// One tenant's guard (kept under its write lock).
#[derive(Default)]
pub struct Guard {
    metrics: HashMap<String, MetricWindow>,
    refused: BTreeMap<(String, String), (u64, i64)>,
}

impl Guard {
    /// Whether a new series `labels` of `metric` may be created at `now_ms`.
    /// `known_values(label)` lists the values `label` has among the metric's series
    /// already in the head (asked once, when the guard trips).
    pub fn check(
        &mut self,
        args: &GuardArgs,
        metric: &str,
        labels: &[(&str, &str)],
        now_ms: i64,
        known_values: impl FnOnce(&str) -> Vec<String>,
    ) -> Result<(), Refusal> {
        if args.max_new_series == 0 {
            return Ok(());
        }
        let w = self.metrics.entry(metric.to_string()).or_default();
        if now_ms - w.started_ms >= args.window_ms {
            // a new window; a guard that tripped stays on while the growth goes on
            let keep = w
                .tripped
                .take()
                .filter(|_| w.new_series > args.max_new_series);
            *w = MetricWindow {
                started_ms: now_ms,
                tripped: keep,
                ..Default::default()
            };
        }
        if let Some(tr) = &w.tripped {
            let value = labels
                .iter()
                .find(|(n, _)| *n == tr.label)
                .map_or("", |(_, v)| *v);
            // counted against the window so that a continuing explosion keeps it on
            w.new_series += 1;
            if !tr.known.contains(value) {
                let e = self
                    .refused
                    .entry((metric.to_string(), tr.label.clone()))
                    .or_insert((0, tr.since_ms));
                e.0 += 1;
                return Err(Refusal {
                    metric: metric.to_string(),
                    label: tr.label.clone(),
                    value: value.to_string(),
                    new_series: w.new_series,
                    distinct_values: tr.distinct_values,
                    window_ms: args.window_ms,
                });
            }
            return Ok(());
        }
        w.new_series += 1;
        for (n, v) in labels {
            if *n == "__name__" {
                continue;
            }
            let set = w.values.entry(n.to_string()).or_default();
            if set.len() < MAX_VALUES_TRACKED {
                set.insert(v.to_string());
            }
        }
        if w.new_series > args.max_new_series {
            let exploding = w
                .values
                .iter()
                .filter(|(_, vals)| vals.len() > 1)
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)));
            if let Some((label, vals)) = exploding {
                let mut known: HashSet<String> = known_values(label).into_iter().collect();
                known.extend(vals.iter().cloned());
                w.tripped = Some(Tripped {
                    label: label.clone(),
                    distinct_values: vals.len(),
                    known,
                    since_ms: now_ms,
                });
                self.refused
                    .entry((metric.to_string(), label.clone()))
                    .or_insert((0, now_ms));
            }
        }
        Ok(())
    }

    /// Every (metric, label) the guard tripped on, with its refusals.
    pub fn state(&self) -> Vec<GuardState> {
        self.refused
            .iter()
            .map(|((metric, label), (n, since))| GuardState {
                metric: metric.clone(),
                label: label.clone(),
                active: self
                    .metrics
                    .get(metric)
                    .and_then(|w| w.tripped.as_ref())
                    .is_some_and(|t| &t.label == label),
                since_ms: *since,
                refused_series: *n,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exploding_label_is_found_and_only_its_new_values_refused() {
        let args = GuardArgs {
            max_new_series: 5,
            window_ms: 60_000,
        };
        let mut g = Guard::default();
        let none = |_: &str| Vec::new();
        // five new pods, then request ids start exploding
        for i in 0..5 {
            let pod = format!("p{i}");
            g.check(
                &args,
                "http",
                &[("__name__", "http"), ("pod", &pod), ("id", "a")],
                1000,
                none,
            )
            .unwrap();
        }
        // the sixth new series trips the guard: "pod" has the most distinct values
        g.check(
            &args,
            "http",
            &[("__name__", "http"), ("pod", "p5"), ("id", "a")],
            1000,
            none,
        )
        .unwrap();
        let e = g
            .check(
                &args,
                "http",
                &[("__name__", "http"), ("pod", "p6"), ("id", "a")],
                1001,
                none,
            )
            .unwrap_err();
        assert_eq!((e.label.as_str(), e.value.as_str()), ("pod", "p6"));
        // a new series with a known pod passes; other metrics are not affected
        g.check(
            &args,
            "http",
            &[("__name__", "http"), ("pod", "p1"), ("id", "b")],
            1002,
            none,
        )
        .unwrap();
        g.check(
            &args,
            "other",
            &[("__name__", "other"), ("pod", "p9")],
            1002,
            none,
        )
        .unwrap();
        let s = g.state();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].refused_series, s[0].active), (1, true));
        // the next window follows an exploding one: still on
        assert!(g
            .check(
                &args,
                "http",
                &[("__name__", "http"), ("pod", "p7")],
                70_000,
                none
            )
            .is_err());
        // after a quiet window it is off again
        g.check(
            &args,
            "http",
            &[("__name__", "http"), ("pod", "p8")],
            140_000,
            none,
        )
        .unwrap();
        assert!(!g.state()[0].active);
        // off by default
        let off = GuardArgs::default();
        for i in 0..100 {
            let pod = format!("q{i}");
            Guard::default()
                .check(&off, "x", &[("pod", &pod)], 0, none)
                .unwrap();
        }
    }
}
