//! One rule's evaluation, following Prometheus's `rules/recording.go` and
//! `rules/alerting.go`: labels applied to results, duplicate label sets refused,
//! `limit`, the pending → firing → inactive cycle with `for` and `keep_firing_for`,
//! resolved alerts kept 15 minutes for resending, the `ALERTS` and `ALERTS_FOR_STATE`
//! series (only once `for` state was restored), and when an alert needs (re)sending.

use std::collections::{BTreeMap, HashMap};

use strata_tsdb::labels::Labels;

use crate::template::{self, AlertData};
use crate::{Error, QueryEngine, Sample};

/// How long a resolved alert is kept (and resent) after it resolved.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// An alert of an alerting rule. Times in ms; 0 = never.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: f64,
    pub active_at: i64,
    pub fired_at: i64,
    pub resolved_at: i64,
    pub last_sent_at: i64,
    pub valid_until: i64,
    pub keep_firing_since: i64,
}

impl Alert {
    /// Prometheus's `needsSending`.
    pub fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        if self.resolved_at > self.last_sent_at {
            return true;
        }
        self.last_sent_at + resend_delay_ms < ts
    }
}

/// Rule health, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// What every rule keeps about its last evaluation.
#[derive(Debug, Clone)]
pub struct RuleStatus {
    pub health: Health,
    pub last_error: String,
    /// Evaluation timestamp (ms; 0 = never) and how long it took.
    pub last_eval: i64,
    pub eval_duration: std::time::Duration,
}

impl Default for RuleStatus {
    fn default() -> Self {
        RuleStatus {
            health: Health::Unknown,
            last_error: String::new(),
            last_eval: 0,
            eval_duration: std::time::Duration::ZERO,
        }
    }
}

/// What a rule evaluation needs besides the rule.
pub struct EvalCtx<'a> {
    pub engine: &'a dyn QueryEngine,
    pub tenant: &'a str,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
}

#[derive(Debug, Clone)]
pub struct RecordingRule {
    pub name: String,
    pub expr: String,
    pub labels: BTreeMap<String, String>,
    pub status: RuleStatus,
}

#[derive(Debug, Clone)]
pub struct AlertingRule {
    pub name: String,
    pub expr: String,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Alerts by label set: pending, firing, and resolved ones kept for resending.
    pub active: HashMap<Labels, Alert>,
    /// `ALERTS` is written only once `for` state was restored (or needed none).
    pub restored: bool,
    pub status: RuleStatus,
}

#[derive(Debug, Clone)]
pub enum Rule {
    Recording(RecordingRule),
    Alerting(AlertingRule),
}

impl Rule {
    pub fn from_def(d: &crate::rulefmt::RuleDef, restored: bool) -> Rule {
        if d.alert.is_empty() {
            Rule::Recording(RecordingRule {
                name: d.record.clone(),
                expr: d.expr.clone(),
                labels: d.labels.clone(),
                status: RuleStatus::default(),
            })
        } else {
            Rule::Alerting(AlertingRule {
                name: d.alert.clone(),
                expr: d.expr.clone(),
                for_ms: d.for_ms,
                keep_firing_for_ms: d.keep_firing_for_ms,
                labels: d.labels.clone(),
                annotations: d.annotations.clone(),
                active: HashMap::new(),
                restored,
                status: RuleStatus::default(),
            })
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Rule::Recording(r) => &r.name,
            Rule::Alerting(r) => &r.name,
        }
    }

    pub fn expr(&self) -> &str {
        match self {
            Rule::Recording(r) => &r.expr,
            Rule::Alerting(r) => &r.expr,
        }
    }

    pub fn status(&self) -> &RuleStatus {
        match self {
            Rule::Recording(r) => &r.status,
            Rule::Alerting(r) => &r.status,
        }
    }

    pub fn status_mut(&mut self) -> &mut RuleStatus {
        match self {
            Rule::Recording(r) => &mut r.status,
            Rule::Alerting(r) => &mut r.status,
        }
    }

    /// Evaluate at `ts`, querying at `query_ts` (`ts` minus the group's query offset);
    /// the samples to write.
    pub async fn eval(
        &mut self,
        ctx: &EvalCtx<'_>,
        ts: i64,
        query_ts: i64,
        limit: usize,
    ) -> Result<Vec<Sample>, Error> {
        match self {
            Rule::Recording(r) => r.eval(ctx, query_ts, limit).await,
            Rule::Alerting(r) => r.eval(ctx, ts, query_ts, limit).await,
        }
    }
}

/// Labels with `overrides` applied (an empty value removes the label).
fn apply(base: &Labels, overrides: impl IntoIterator<Item = (String, String)>) -> Labels {
    let mut m: BTreeMap<String, String> = base
        .iter()
        .map(|l| (l.name.to_string(), l.value.to_string()))
        .collect();
    for (k, v) in overrides {
        if v.is_empty() {
            m.remove(&k);
        } else {
            m.insert(k, v);
        }
    }
    Labels::from_pairs(m)
}

impl RecordingRule {
    async fn eval(
        &mut self,
        ctx: &EvalCtx<'_>,
        query_ts: i64,
        limit: usize,
    ) -> Result<Vec<Sample>, Error> {
        let mut v = ctx.engine.instant(ctx.tenant, &self.expr, query_ts).await?;
        for s in &mut v {
            s.labels = apply(
                &s.labels,
                std::iter::once(("__name__".to_string(), self.name.clone()))
                    .chain(self.labels.iter().map(|(k, v)| (k.clone(), v.clone()))),
            );
            s.t = query_ts;
        }
        let mut seen = std::collections::HashSet::with_capacity(v.len());
        if !v.iter().all(|s| seen.insert(&s.labels)) {
            return Err(Error::Query(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            ));
        }
        if limit > 0 && v.len() > limit {
            return Err(Error::Query(format!(
                "exceeded limit of {limit} with {} series",
                v.len()
            )));
        }
        Ok(v)
    }
}

impl AlertingRule {
    /// The `ALERTS_FOR_STATE` labels of `alert` (also those restoration looks for).
    pub fn for_state_labels(&self, alert: &Alert) -> Labels {
        alert
            .labels
            .with("__name__", "ALERTS_FOR_STATE")
            .with("alertname", &self.name)
    }

    fn alerts_sample(&self, a: &Alert, t: i64) -> Sample {
        Sample {
            labels: a
                .labels
                .with("__name__", "ALERTS")
                .with("alertname", &self.name)
                .with("alertstate", a.state.as_str()),
            t,
            v: 1.0,
            h: None,
        }
    }

    /// The rule's state: the most severe of its alerts'.
    pub fn state(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }

    async fn eval(
        &mut self,
        ctx: &EvalCtx<'_>,
        ts: i64,
        query_ts: i64,
        limit: usize,
    ) -> Result<Vec<Sample>, Error> {
        let res = ctx.engine.instant(ctx.tenant, &self.expr, query_ts).await?;
        tracing::debug!(alert = %self.name, ts, results = res.len(), "evaluated");
        let handle = tokio::runtime::Handle::current();
        let query = |q: &str| -> template::QueryResult {
            // Templates run synchronously; `query` is rare, so it may block this worker.
            let r = tokio::task::block_in_place(|| {
                handle.block_on(ctx.engine.instant(ctx.tenant, q, query_ts))
            })
            .map_err(|e| e.to_string())?;
            Ok(r.into_iter()
                .map(|s| {
                    (
                        s.labels
                            .iter()
                            .map(|l| (l.name.to_string(), l.value.to_string()))
                            .collect(),
                        s.v,
                    )
                })
                .collect())
        };
        let mut alerts: HashMap<Labels, Alert> = HashMap::with_capacity(res.len());
        for s in res {
            let data = AlertData {
                labels: s
                    .labels
                    .iter()
                    .map(|l| (l.name.to_string(), l.value.to_string()))
                    .collect(),
                external_labels: ctx.external_labels.clone(),
                external_url: ctx.external_url.to_string(),
                value: s.v,
            };
            let expand = |t: &str| template::expand_alert(&self.name, t, &data, &query);
            let labels = apply(
                &s.labels.without(&["__name__"]),
                self.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), expand(v)))
                    .chain(std::iter::once((
                        "alertname".to_string(),
                        self.name.clone(),
                    ))),
            );
            let annotations = self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), expand(v)))
                .collect();
            if alerts.contains_key(&labels) {
                return Err(Error::Query(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                ));
            }
            alerts.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations,
                    state: AlertState::Pending,
                    value: s.v,
                    active_at: ts,
                    fired_at: 0,
                    resolved_at: 0,
                    last_sent_at: 0,
                    valid_until: 0,
                    keep_firing_since: 0,
                },
            );
        }
        let result_fps: std::collections::HashSet<Labels> = alerts.keys().cloned().collect();
        for (h, a) in alerts {
            if let Some(old) = self.active.get_mut(&h) {
                if old.state != AlertState::Inactive {
                    old.value = a.value;
                    old.annotations = a.annotations;
                    continue;
                }
            }
            self.active.insert(h, a);
        }
        let mut vec = Vec::new();
        let mut num_active = 0usize;
        let mut remove = Vec::new();
        let mut keys: Vec<Labels> = self.active.keys().cloned().collect();
        keys.sort();
        for fp in keys {
            let Some(a) = self.active.get_mut(&fp) else {
                continue;
            };
            if !result_fps.contains(&fp) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && self.keep_firing_for_ms > 0 {
                    if a.keep_firing_since == 0 {
                        a.keep_firing_since = ts;
                    }
                    if ts - a.keep_firing_since < self.keep_firing_for_ms {
                        keep_firing = true;
                    }
                }
                if a.state == AlertState::Pending
                    || (a.resolved_at != 0 && ts - a.resolved_at > RESOLVED_RETENTION_MS)
                {
                    remove.push(fp.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = ts;
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = 0;
            }
            num_active += 1;
            if a.state == AlertState::Pending && ts - a.active_at >= self.for_ms {
                a.state = AlertState::Firing;
                a.fired_at = ts;
            }
            if self.restored {
                let a = a.clone();
                vec.push(self.alerts_sample(&a, query_ts));
                vec.push(Sample::float(
                    self.for_state_labels(&a),
                    query_ts,
                    (a.active_at.div_euclid(1000)) as f64,
                ));
            }
        }
        for fp in remove {
            self.active.remove(&fp);
        }
        if limit > 0 && num_active > limit {
            self.active.clear();
            return Err(Error::Query(format!(
                "exceeded limit of {limit} with {num_active} alerts"
            )));
        }
        Ok(vec)
    }

    /// Alerts to send at `ts` (Prometheus's `sendAlerts`): marks them sent and sets
    /// `valid_until` to allow for two missed evaluations or sends.
    pub fn alerts_to_send(
        &mut self,
        ts: i64,
        resend_delay_ms: i64,
        interval_ms: i64,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        let delta = resend_delay_ms.max(interval_ms);
        for a in self.active.values_mut() {
            if a.needs_sending(ts, resend_delay_ms) {
                a.last_sent_at = ts;
                a.valid_until = ts + 4 * delta;
                out.push(a.clone());
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Alerts in the API's `activeAlerts`: pending and firing.
    pub fn active_alerts(&self) -> Vec<&Alert> {
        let mut v: Vec<&Alert> = self
            .active
            .values()
            .filter(|a| a.resolved_at == 0 || a.state != AlertState::Inactive)
            .filter(|a| a.state != AlertState::Inactive)
            .collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxFuture;
    use std::sync::Mutex;

    /// Answers each query with the vector set for it.
    struct Fixed(Mutex<Vec<Sample>>);

    impl QueryEngine for Fixed {
        fn instant<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            t: i64,
        ) -> BoxFuture<'a, Result<Vec<Sample>, Error>> {
            let v: Vec<Sample> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .map(|s| Sample { t, ..s.clone() })
                .collect();
            Box::pin(async move { Ok(v) })
        }
    }

    fn rule(for_ms: i64, keep: i64) -> AlertingRule {
        AlertingRule {
            name: "HighLoad".into(),
            expr: "load > 1".into(),
            for_ms,
            keep_firing_for_ms: keep,
            labels: BTreeMap::from([("severity".into(), "page".into())]),
            annotations: BTreeMap::from([(
                "summary".into(),
                "{{ $labels.instance }} at {{ $value }}".into(),
            )]),
            active: HashMap::new(),
            restored: true,
            status: RuleStatus::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pending_firing_resolved_keep_firing() {
        let q = Fixed(Mutex::new(vec![Sample::float(
            Labels::from_pairs([("__name__", "load"), ("instance", "a")]),
            0,
            2.0,
        )]));
        let el = BTreeMap::new();
        let ctx = EvalCtx {
            engine: &q,
            tenant: "t",
            external_labels: &el,
            external_url: "",
        };
        let mut r = rule(120_000, 60_000);
        let v = r.eval(&ctx, 60_000, 60_000, 0).await.unwrap();
        assert_eq!(r.state(), AlertState::Pending);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].labels.get("alertstate"), Some("pending"));
        assert_eq!(v[0].labels.get("severity"), Some("page"));
        assert_eq!(v[0].labels.get("__name__"), Some("ALERTS"));
        assert_eq!(v[1].labels.get("__name__"), Some("ALERTS_FOR_STATE"));
        assert_eq!(v[1].v, 60.0);
        let a = r.active.values().next().unwrap();
        assert_eq!(a.annotations["summary"], "a at 2");
        assert!(
            r.alerts_to_send(60_000, 60_000, 60_000).is_empty(),
            "pending is not sent"
        );
        r.eval(&ctx, 120_000, 120_000, 0).await.unwrap();
        assert_eq!(r.state(), AlertState::Pending);
        let v = r.eval(&ctx, 180_000, 180_000, 0).await.unwrap();
        assert_eq!(r.state(), AlertState::Firing);
        assert_eq!(v[0].labels.get("alertstate"), Some("firing"));
        assert_eq!(r.alerts_to_send(180_000, 60_000, 60_000).len(), 1);
        assert!(
            r.alerts_to_send(200_000, 60_000, 60_000).is_empty(),
            "not before the resend delay"
        );
        // The condition clears: keep_firing_for holds it 1m.
        q.0.lock().unwrap().clear();
        let v = r.eval(&ctx, 240_000, 240_000, 0).await.unwrap();
        assert_eq!(r.state(), AlertState::Firing);
        assert_eq!(v.len(), 2);
        r.eval(&ctx, 300_000, 300_000, 0).await.unwrap();
        assert_eq!(r.state(), AlertState::Inactive);
        let sent = r.alerts_to_send(300_000, 60_000, 60_000);
        assert_eq!(sent.len(), 1, "the resolution is sent at once");
        assert_eq!(sent[0].resolved_at, 300_000);
        // Resent every resend delay for 15 minutes, then forgotten.
        assert_eq!(r.alerts_to_send(361_000, 60_000, 60_000).len(), 1);
        r.eval(&ctx, 300_000 + RESOLVED_RETENTION_MS + 1, 0, 0)
            .await
            .unwrap();
        assert!(r.active.is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn limit_and_duplicates() {
        let q = Fixed(Mutex::new(vec![
            Sample::float(Labels::from_pairs([("__name__", "x"), ("a", "1")]), 0, 1.0),
            Sample::float(Labels::from_pairs([("__name__", "y"), ("a", "1")]), 0, 1.0),
        ]));
        let el = BTreeMap::new();
        let ctx = EvalCtx {
            engine: &q,
            tenant: "t",
            external_labels: &el,
            external_url: "",
        };
        let mut rec = RecordingRule {
            name: "r".into(),
            expr: "x".into(),
            labels: BTreeMap::new(),
            status: RuleStatus::default(),
        };
        let e = rec.eval(&ctx, 0, 0).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "vector contains metrics with the same labelset after applying rule labels"
        );
        q.0.lock().unwrap().pop();
        q.0.lock()
            .unwrap()
            .push(Sample::float(Labels::from_pairs([("a", "2")]), 0, 1.0));
        let e = rec.eval(&ctx, 0, 1).await.unwrap_err();
        assert_eq!(e.to_string(), "exceeded limit of 1 with 2 series");
        let mut r = rule(0, 0);
        let e = r.eval(&ctx, 0, 0, 1).await.unwrap_err();
        assert_eq!(e.to_string(), "exceeded limit of 1 with 2 alerts");
        assert!(r.active.is_empty());
    }
}
