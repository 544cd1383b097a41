//! The ruler: Prometheus recording and alerting rules evaluated over Strata's global
//! view, as `strata ruler` and inside `strata all`.
//!
//! * [`rulefmt`]: rule files and `promtool check rules`'s checks and messages.
//! * [`rules`]: one rule's evaluation with Prometheus's semantics (alert states,
//!   `for`, `keep_firing_for`, `ALERTS`/`ALERTS_FOR_STATE`, `limit`, restoring `for`).
//! * [`group`]: a group's schedule (Prometheus's evaluation timestamps), writing results
//!   and stale markers, and the [`group::Manager`] that loads, reloads and runs groups.
//! * [`template`]: Go templates in labels and annotations with Prometheus's functions.
//! * [`notifier`]: Alertmanager v2 notifications (resend, batching, bounded queue).
//! * [`remote`]: the [`QueryEngine`] and [`Appender`] over HTTP (a querier's query
//!   API, remote write 1.0 to the ingest path); `strata all` provides in-process ones.
//! * [`api`]: `/api/v1/rules` and `/api/v1/alerts` in Prometheus's JSON.
//! * [`unittest`]: `promtool test rules` files (`strata tools rules test`).

use std::future::Future;
use std::pin::Pin;

use strata_promql::FloatHistogram;
use strata_tsdb::labels::Labels;

pub mod api;
pub mod group;
pub mod hash;
pub mod metrics;
pub mod notifier;
pub mod remote;
pub mod rulefmt;
pub mod rules;
pub mod template;
pub mod unittest;

/// A boxed future, so the query and write interfaces are object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One element of an instant vector: a float, or a native histogram (`h`; `v` is then
/// 0, the float Prometheus's rules see for a histogram sample: an alert on one fires
/// with `$value` 0, a recording rule writes the histogram).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
    pub h: Option<Box<FloatHistogram>>,
}

impl Sample {
    /// A float sample.
    pub fn float(labels: Labels, t: i64, v: f64) -> Sample {
        Sample {
            labels,
            t,
            v,
            h: None,
        }
    }
}

/// An engine's answer at `t` as the samples a rule evaluates.
pub fn samples_from_value(value: strata_promql::Value, t: i64) -> Result<Vec<Sample>, Error> {
    match value {
        strata_promql::Value::Vector(v) => Ok(v
            .into_iter()
            .map(|s| Sample {
                labels: s.labels,
                t,
                v: if s.h.is_some() { 0.0 } else { s.v },
                h: s.h,
            })
            .collect()),
        strata_promql::Value::Scalar { v, .. } => Ok(vec![Sample::float(Labels::new(), t, v)]),
        _ => Err(Error::Query("rule result is not a vector or scalar".into())),
    }
}

/// Why the ruler failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule file does not load; the messages are promtool's, one per line.
    #[error("{}", .0.join("\n"))]
    RuleFiles(Vec<String>),
    /// The query engine answered with an error.
    #[error("{0}")]
    Query(String),
    /// Writing results through the ingest path failed.
    #[error("remote write: {0}")]
    Write(String),
    /// A configuration value is invalid.
    #[error("{0}")]
    Config(String),
}

/// Where rules are evaluated: the querier's engine in process, or a querier's HTTP API.
pub trait QueryEngine: Send + Sync {
    /// Evaluate `expr` at `t` (ms) for `tenant`; a scalar result is one sample with no
    /// labels (Prometheus's `EngineQueryFunc`), a string result an error.
    fn instant<'a>(
        &'a self,
        tenant: &'a str,
        expr: &'a str,
        t: i64,
    ) -> BoxFuture<'a, Result<Vec<Sample>, Error>>;

    /// The last sample at or before `maxt` and after `mint` of the series with exactly
    /// these labels (restoring `for` from `ALERTS_FOR_STATE`). Storage that keeps stale
    /// markers returns them (the alert was resolved); the default, through PromQL, sees
    /// only real samples.
    fn last_sample<'a>(
        &'a self,
        tenant: &'a str,
        labels: &'a Labels,
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Option<(i64, f64)>, Error>> {
        Box::pin(async move {
            let mut sel = String::from("{");
            for (i, l) in labels.iter().enumerate() {
                if i > 0 {
                    sel.push(',');
                }
                sel.push_str(&l.name);
                sel.push('=');
                let _ = strata_tsdb::labels::go_quote(&mut sel, &l.value);
            }
            let range_s = ((maxt - mint) / 1000).max(1);
            sel.push_str(&format!("}}[{range_s}s]"));
            // The timestamp of the last sample and its value, as two instant vectors.
            let t = self
                .instant(tenant, &format!("timestamp(last_over_time({sel}))"), maxt)
                .await?;
            let v = self
                .instant(tenant, &format!("last_over_time({sel})"), maxt)
                .await?;
            let same = |s: &Sample| s.labels.len() + 1 == labels.len();
            Ok(
                match (t.iter().find(|s| same(s)), v.iter().find(|s| same(s))) {
                    (Some(t), Some(v)) => Some(((t.v * 1000.0).round() as i64, v.v)),
                    _ => None,
                },
            )
        })
    }
}

/// Where results go: the ingest path, per tenant.
pub trait Appender: Send + Sync {
    fn append<'a>(
        &'a self,
        tenant: &'a str,
        samples: Vec<Sample>,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// Prometheus's stale marker.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod value_tests {
    use super::*;

    #[test]
    fn histogram_results_are_histogram_samples_and_floats_floats() {
        let labels = Labels::from_pairs([("job", "a")]);
        let sample = |h| strata_promql::VectorSample {
            labels: labels.clone(),
            t: 5,
            v: 2.0,
            h,
        };
        let ok = samples_from_value(strata_promql::Value::Vector(vec![sample(None)]), 5).unwrap();
        assert_eq!(ok, vec![Sample::float(labels.clone(), 5, 2.0)]);
        let h = Box::new(FloatHistogram {
            count: 3.0,
            ..Default::default()
        });
        let got = samples_from_value(
            strata_promql::Value::Vector(vec![sample(Some(h.clone()))]),
            5,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![Sample {
                labels,
                t: 5,
                v: 0.0,
                h: Some(h)
            }]
        );
    }
}
