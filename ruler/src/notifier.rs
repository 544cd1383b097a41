//! Notifications to Alertmanager's v2 API (`POST /api/v2/alerts`), as Prometheus's
//! notifier sends them: external labels added (an alert's own labels win), a bounded
//! queue that drops the oldest alerts when full, batches of at most 64 alerts sent to
//! every Alertmanager at once. A failed request is retried (with backoff, within the
//! send timeout); an alert no Alertmanager took counts as dropped, and the rule resends
//! it after the resend delay anyway.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_tsdb::labels::Labels;

use crate::metrics::RulerMetrics;
use crate::Error;

/// Prometheus's `maxBatchSize`.
pub const MAX_BATCH_SIZE: usize = 64;

/// An alert as sent to Alertmanager. Times in ms; 0 = unset.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyAlert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub generator_url: String,
}

/// One Alertmanager: the base URL (`http://host:9093`, with a path prefix if any) and
/// its request timeout.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    pub url: String,
    pub timeout: Duration,
}

impl Alertmanager {
    fn endpoint(&self) -> String {
        format!("{}/api/v2/alerts", self.url.trim_end_matches('/'))
    }
}

/// Thanos's `--alertmanagers.config-file`: `alertmanagers: [{static_configs, scheme,
/// path_prefix, timeout, api_version}]` (only v2 and static addresses).
pub fn parse_alertmanagers_config(text: &str) -> Result<Vec<Alertmanager>, Error> {
    let doc: yaml_serde::Value = yaml_serde::from_str(text)
        .map_err(|e| Error::Config(format!("alertmanagers config: {e}")))?;
    let mut out = Vec::new();
    let Some(list) = doc.get("alertmanagers").and_then(|v| v.as_sequence()) else {
        return Err(Error::Config(
            "alertmanagers config: no `alertmanagers` list".into(),
        ));
    };
    for am in list {
        let scheme = am.get("scheme").and_then(|v| v.as_str()).unwrap_or("http");
        let prefix = am.get("path_prefix").and_then(|v| v.as_str()).unwrap_or("");
        let timeout = match am.get("timeout").and_then(|v| v.as_str()) {
            Some(t) => strata_kit::duration::parse_ms(t)
                .map_err(|e| Error::Config(format!("alertmanagers config: timeout: {e}")))?,
            None => 10_000,
        };
        if let Some(v) = am.get("api_version").and_then(|v| v.as_str()) {
            if v != "v2" {
                return Err(Error::Config(format!("alertmanagers config: api_version {v:?}: only v2 is supported (Alertmanager removed v1)")));
            }
        }
        let statics = am
            .get("static_configs")
            .and_then(|v| v.as_sequence())
            .cloned()
            .unwrap_or_default();
        for s in statics {
            let Some(addr) = s.as_str() else { continue };
            let addr = addr
                .trim_start_matches("dns+")
                .trim_start_matches("dnssrv+");
            out.push(Alertmanager {
                url: format!(
                    "{scheme}://{addr}{}",
                    if prefix.is_empty() || prefix.starts_with('/') {
                        prefix.to_string()
                    } else {
                        format!("/{prefix}")
                    }
                ),
                timeout: Duration::from_millis(timeout as u64),
            });
        }
    }
    Ok(out)
}

pub struct Notifier {
    queue: Mutex<VecDeque<NotifyAlert>>,
    capacity: usize,
    more: tokio::sync::Notify,
    alertmanagers: Vec<Alertmanager>,
    external_labels: BTreeMap<String, String>,
    client: reqwest::Client,
    metrics: RulerMetrics,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("alertmanagers", &self.alertmanagers)
            .finish()
    }
}

impl Notifier {
    pub fn new(
        alertmanagers: Vec<Alertmanager>,
        capacity: usize,
        external_labels: BTreeMap<String, String>,
        metrics: RulerMetrics,
    ) -> Arc<Notifier> {
        metrics.notifications_queue_capacity.set(capacity as f64);
        metrics
            .alertmanagers_discovered
            .set(alertmanagers.len() as f64);
        Arc::new(Notifier {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            more: tokio::sync::Notify::new(),
            alertmanagers,
            external_labels,
            client: reqwest::Client::new(),
            metrics,
        })
    }

    /// Queue alerts (Prometheus's `Notifier.Send`).
    pub fn send(&self, mut alerts: Vec<NotifyAlert>) {
        for a in &mut alerts {
            for (k, v) in &self.external_labels {
                if a.labels.get(k).is_none() {
                    a.labels = a.labels.with(k, v);
                }
            }
        }
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if alerts.len() > self.capacity {
            let d = alerts.len() - self.capacity;
            alerts.drain(..d);
            tracing::warn!(
                dropped = d,
                "alert batch larger than queue capacity, dropping alerts"
            );
            self.metrics.notifications_dropped.inc_by(d as u64);
        }
        let over = (q.len() + alerts.len()).saturating_sub(self.capacity);
        if over > 0 {
            q.drain(..over);
            self.metrics.notifications_dropped.inc_by(over as u64);
        }
        q.extend(alerts);
        self.metrics.notifications_queue_length.set(q.len() as f64);
        drop(q);
        self.more.notify_one();
    }

    pub fn queue_len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn next_batch(&self) -> Vec<NotifyAlert> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.len().min(MAX_BATCH_SIZE);
        let b: Vec<NotifyAlert> = q.drain(..n).collect();
        self.metrics.notifications_queue_length.set(q.len() as f64);
        b
    }

    /// Send queued alerts until `shutdown`; what is queued then is still sent.
    pub async fn run(self: Arc<Self>, shutdown: strata_kit::shutdown::Shutdown) {
        loop {
            tokio::select! {
                _ = self.more.notified() => {}
                _ = shutdown.wait() => {
                    while self.queue_len() > 0 {
                        let b = self.next_batch();
                        self.send_all(&b).await;
                    }
                    return;
                }
            }
            loop {
                let b = self.next_batch();
                if b.is_empty() {
                    break;
                }
                self.send_all(&b).await;
            }
        }
    }

    /// Send one batch to every Alertmanager at once; true if one took it.
    async fn send_all(&self, batch: &[NotifyAlert]) -> bool {
        if self.alertmanagers.is_empty() {
            return false;
        }
        let body = encode_alerts(batch);
        let sends = self.alertmanagers.iter().map(|am| {
            let body = body.clone();
            async move {
                let ok = self.post_with_retries(am, body).await;
                let label = am.url.as_str();
                if ok {
                    self.metrics
                        .notifications_sent
                        .with(&[label])
                        .inc_by(batch.len() as u64);
                } else {
                    self.metrics
                        .notifications_errors
                        .with(&[label])
                        .inc_by(batch.len() as u64);
                }
                ok
            }
        });
        let results = futures::future::join_all(sends).await;
        let any = results.into_iter().any(|x| x);
        if !any {
            self.metrics
                .notifications_dropped
                .inc_by(batch.len() as u64);
        }
        any
    }

    async fn post_with_retries(&self, am: &Alertmanager, body: String) -> bool {
        let deadline = tokio::time::Instant::now() + am.timeout;
        let mut backoff = Duration::from_millis(100);
        for attempt in 0..3 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let r = self
                .client
                .post(am.endpoint())
                .header("Content-Type", "application/json")
                .header("User-Agent", "strata-ruler")
                .timeout(left)
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => return true,
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    tracing::warn!(alertmanager = %am.url, %status, body = %text.trim(), attempt, "sending alerts failed");
                    if status.is_client_error() {
                        return false; // a retry cannot fix a bad request
                    }
                }
                Err(e) => {
                    tracing::warn!(alertmanager = %am.url, error = %e, attempt, "sending alerts failed")
                }
            }
            tokio::time::sleep(
                backoff.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
            )
            .await;
            backoff *= 4;
        }
        false
    }
}

/// Alertmanager v2's `postableAlerts` JSON.
pub fn encode_alerts(alerts: &[NotifyAlert]) -> String {
    let mut arr = Vec::with_capacity(alerts.len());
    for a in alerts {
        let labels: serde_json::Map<String, serde_json::Value> = a
            .labels
            .iter()
            .map(|l| {
                (
                    l.name.to_string(),
                    serde_json::Value::String(l.value.to_string()),
                )
            })
            .collect();
        let ann: serde_json::Map<String, serde_json::Value> = a
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let mut o = serde_json::Map::new();
        o.insert("labels".into(), labels.into());
        o.insert("annotations".into(), ann.into());
        if a.starts_at != 0 {
            o.insert("startsAt".into(), crate::api::rfc3339(a.starts_at).into());
        }
        if a.ends_at != 0 {
            o.insert("endsAt".into(), crate::api::rfc3339(a.ends_at).into());
        }
        o.insert("generatorURL".into(), a.generator_url.clone().into());
        arr.push(serde_json::Value::Object(o));
    }
    serde_json::Value::Array(arr).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_drops_oldest_and_batches_by_64() {
        let reg = strata_kit::metrics::Registry::new();
        let m = RulerMetrics::new(&reg);
        let n = Notifier::new(
            vec![],
            100,
            BTreeMap::from([("cluster".into(), "eu".into())]),
            m.clone(),
        );
        let alert = |i: usize| NotifyAlert {
            labels: Labels::from_pairs([("alertname", "A"), ("i", &i.to_string())]),
            annotations: BTreeMap::new(),
            starts_at: 1,
            ends_at: 2,
            generator_url: String::new(),
        };
        n.send((0..150).map(alert).collect());
        assert_eq!(n.queue_len(), 100);
        assert_eq!(m.notifications_dropped.get(), 50.0);
        let b = n.next_batch();
        assert_eq!(b.len(), 64);
        assert_eq!(b[0].labels.get("i"), Some("50"), "the oldest were dropped");
        assert_eq!(b[0].labels.get("cluster"), Some("eu"));
        assert_eq!(n.next_batch().len(), 36);
    }

    #[test]
    fn config_file() {
        let ams = parse_alertmanagers_config("alertmanagers:\n- static_configs: [\"am1:9093\", \"am2:9093\"]\n  scheme: http\n  path_prefix: /am\n  timeout: 5s\n  api_version: v2\n").unwrap();
        assert_eq!(ams.len(), 2);
        assert_eq!(ams[1].endpoint(), "http://am2:9093/am/api/v2/alerts");
        assert_eq!(ams[0].timeout, Duration::from_secs(5));
        assert!(parse_alertmanagers_config(
            "alertmanagers:\n- static_configs: [a]\n  api_version: v1\n"
        )
        .is_err());
    }
}
