//! Rule groups: Prometheus's schedule (evaluation timestamps spread over the interval by
//! `hash(file, name)`, missed iterations skipped), rules evaluated in order with each
//! one's results written before the next runs, stale markers for series a rule stopped
//! producing, notifications, `for` state restored from `ALERTS_FOR_STATE` after the
//! second evaluation of a first load, and the [`Manager`] that loads rule files,
//! reloads them (all or nothing: a broken file keeps the old rules running) and
//! carries state across reloads as Prometheus's `CopyState` does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_tsdb::labels::Labels;

use crate::metrics::RulerMetrics;
use crate::notifier::{Notifier, NotifyAlert};
use crate::rulefmt::{RuleDef, RuleGroup};
use crate::rules::{AlertingRule, EvalCtx, Health, Rule};
use crate::{now_ms, Appender, Error, QueryEngine, Sample, STALE_NAN};

/// What every group shares.
pub struct Env {
    pub engine: Arc<dyn QueryEngine>,
    pub appender: Arc<dyn Appender>,
    pub notifier: Option<Arc<Notifier>>,
    /// `--label`: added to written series and to alerts (their own labels win).
    pub external_labels: BTreeMap<String, String>,
    /// Base of alerts' `generatorURL` and `$externalURL`.
    pub external_url: String,
    pub resend_delay_ms: i64,
    /// `--rules.alert.for-outage-tolerance` (1h).
    pub outage_tolerance_ms: i64,
    /// `--rules.alert.for-grace-period` (10m).
    pub for_grace_period_ms: i64,
    pub metrics: RulerMetrics,
}

/// One loaded group and its evaluation state.
#[derive(Debug, Clone)]
pub struct Group {
    pub tenant: String,
    pub file: String,
    pub name: String,
    pub interval_ms: i64,
    pub limit: usize,
    pub query_offset_ms: i64,
    pub rules: Vec<Rule>,
    defs: Vec<RuleDef>,
    series_in_prev: Vec<HashSet<Labels>>,
    stale_series: Vec<Labels>,
    /// Evaluation timestamp of the last evaluation (ms; 0 = never) and its duration.
    pub last_eval: i64,
    pub eval_duration: Duration,
    should_restore: bool,
}

impl Group {
    pub fn new(
        tenant: &str,
        file: &str,
        g: &RuleGroup,
        default_interval_ms: i64,
        default_offset_ms: i64,
        first_load: bool,
    ) -> Group {
        Group {
            tenant: tenant.to_string(),
            file: file.to_string(),
            name: g.name.clone(),
            interval_ms: g
                .interval_ms
                .filter(|&i| i > 0)
                .unwrap_or(default_interval_ms)
                .max(1),
            limit: g.limit,
            query_offset_ms: g.query_offset_ms.unwrap_or(default_offset_ms),
            rules: g
                .rules
                .iter()
                .map(|d| Rule::from_def(d, !first_load))
                .collect(),
            defs: g.rules.clone(),
            series_in_prev: vec![HashSet::new(); g.rules.len()],
            stale_series: Vec::new(),
            last_eval: 0,
            eval_duration: Duration::ZERO,
            should_restore: first_load,
        }
    }

    /// Prometheus's `GroupKey`: `file;name`.
    pub fn key(&self) -> String {
        format!("{};{}", self.file, self.name)
    }

    fn same_config(&self, o: &Group) -> bool {
        self.interval_ms == o.interval_ms
            && self.limit == o.limit
            && self.query_offset_ms == o.query_offset_ms
            && self.defs == o.defs
    }

    /// Prometheus's `EvalTimestamp`: the latest instant `<= now` (ns) on this group's
    /// grid, which is offset from multiples of the interval by `hash(file, name)`.
    pub fn eval_timestamp_ns(&self, now_ns: i128) -> i128 {
        let interval = self.interval_ms as i128 * 1_000_000;
        let h =
            crate::hash::labels_hash([("file", self.file.as_str()), ("name", self.name.as_str())]);
        let offset = (h % interval as u64) as i128;
        let adj = now_ns - offset;
        let base = adj - adj.rem_euclid(interval);
        base + offset
    }

    /// Take over state from the group this one replaces (`CopyState`): rules matched by
    /// name and labels keep their previous series and active alerts; series of rules
    /// that went away are marked stale at the next evaluation.
    pub fn copy_state(&mut self, from: &Group) {
        self.last_eval = from.last_eval;
        self.eval_duration = from.eval_duration;
        let key = |r: &Rule| {
            let labels = match r {
                Rule::Recording(x) => &x.labels,
                Rule::Alerting(x) => &x.labels,
            };
            format!("{}{labels:?}", r.name())
        };
        let mut map: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in from.rules.iter().enumerate() {
            map.entry(key(r)).or_default().push(i);
        }
        for (i, r) in self.rules.iter_mut().enumerate() {
            let Some(idx) = map.get_mut(&key(r)) else {
                continue;
            };
            if idx.is_empty() {
                continue;
            }
            let fi = idx.remove(0);
            self.series_in_prev[i] = from.series_in_prev[fi].clone();
            if let (Rule::Alerting(ar), Rule::Alerting(far)) = (r, &from.rules[fi]) {
                ar.active
                    .extend(far.active.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        self.stale_series = from.stale_series.clone();
        for (k, idx) in map {
            let _ = k;
            for fi in idx {
                self.stale_series
                    .extend(from.series_in_prev[fi].iter().cloned());
            }
        }
    }

    fn with_external(&self, env: &Env, mut v: Vec<Sample>) -> Vec<Sample> {
        if env.external_labels.is_empty() {
            return v;
        }
        for s in &mut v {
            for (k, val) in &env.external_labels {
                if s.labels.get(k).is_none() {
                    s.labels = s.labels.with(k, val);
                }
            }
        }
        v
    }

    async fn write(&self, env: &Env, samples: Vec<Sample>) {
        if samples.is_empty() {
            return;
        }
        let n = samples.len();
        let samples = self.with_external(env, samples);
        match env.appender.append(&self.tenant, samples).await {
            Ok(()) => env.metrics.samples_written.inc_by(n as u64),
            Err(e) => {
                env.metrics.write_failures.inc();
                tracing::warn!(group = %self.name, file = %self.file, tenant = %self.tenant, error = %e, "writing rule results failed");
            }
        }
    }

    /// Evaluate every rule at `ts` (ms), in order.
    pub async fn eval(&mut self, env: &Env, ts: i64) {
        let began = Instant::now();
        let key = self.key();
        let query_ts = ts - self.query_offset_ms;
        for i in 0..self.rules.len() {
            let ctx = EvalCtx {
                engine: &*env.engine,
                tenant: &self.tenant,
                external_labels: &env.external_labels,
                external_url: &env.external_url,
            };
            let t0 = Instant::now();
            let res = self.rules[i].eval(&ctx, ts, query_ts, self.limit).await;
            let st = self.rules[i].status_mut();
            st.last_eval = ts;
            st.eval_duration = t0.elapsed();
            let vector = match res {
                Ok(v) => {
                    st.health = Health::Ok;
                    st.last_error.clear();
                    v
                }
                Err(e) => {
                    st.health = Health::Err;
                    st.last_error = e.to_string();
                    env.metrics.evaluation_failures.with(&[&key]).inc();
                    tracing::warn!(group = %self.name, file = %self.file, rule = %self.rules[i].name(), index = i, error = %e, "evaluating rule failed");
                    continue;
                }
            };
            if let Rule::Alerting(ar) = &mut self.rules[i] {
                send_alerts(env, ar, ts, self.interval_ms);
            }
            let mut returned = HashSet::with_capacity(vector.len());
            for s in &vector {
                returned.insert(s.labels.clone());
            }
            let mut out = vector;
            for l in &self.series_in_prev[i] {
                if !returned.contains(l) {
                    out.push(Sample::float(
                        l.clone(),
                        query_ts,
                        f64::from_bits(STALE_NAN),
                    ));
                }
            }
            self.write(env, out).await;
            self.series_in_prev[i] = returned;
        }
        if !self.stale_series.is_empty() {
            let stale: Vec<Sample> = std::mem::take(&mut self.stale_series)
                .into_iter()
                .map(|labels| Sample::float(labels, query_ts, f64::from_bits(STALE_NAN)))
                .collect();
            self.write(env, stale).await;
        }
        self.eval_duration = began.elapsed();
        self.last_eval = ts;
        env.metrics.evaluations.with(&[&key]).inc();
        env.metrics
            .evaluation_duration
            .with(&[&key])
            .observe(self.eval_duration.as_secs_f64());
        env.metrics
            .last_evaluation
            .with(&[&key])
            .set(ts as f64 / 1000.0);
    }

    /// Restore `for` state (Prometheus's `RestoreForState`) at `ts` (ms): an alert
    /// active again after a restart keeps the time it was already pending, if the
    /// outage was within the tolerance, and waits at least the grace period.
    pub async fn restore_for_state(&mut self, env: &Env, ts: i64) {
        let mint = ts - env.outage_tolerance_ms;
        for r in &mut self.rules {
            let Rule::Alerting(ar) = r else { continue };
            if ar.for_ms < env.for_grace_period_ms {
                ar.restored = true;
                continue;
            }
            let keys: Vec<Labels> = ar.active.keys().cloned().collect();
            for k in keys {
                let labels = {
                    let a = &ar.active[&k];
                    let mut l = ar.for_state_labels(a);
                    for (n, v) in &env.external_labels {
                        if l.get(n).is_none() {
                            l = l.with(n, v);
                        }
                    }
                    l
                };
                let last = match env
                    .engine
                    .last_sample(&self.tenant, &labels, mint, ts)
                    .await
                {
                    Ok(Some(x)) => x,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(alert = %ar.name, error = %e, "restoring for state: query failed");
                        continue;
                    }
                };
                let (t, v) = last;
                if crate::is_stale(v) {
                    continue;
                }
                let down_at = t.div_euclid(1000) * 1000;
                let mut restored_active_at = (v as i64) * 1000;
                let spent = down_at - restored_active_at;
                let remaining = ar.for_ms - spent;
                if remaining <= 0 {
                    // Was firing before the restart: keep its ActiveAt.
                } else if remaining < env.for_grace_period_ms {
                    restored_active_at = ts + env.for_grace_period_ms - ar.for_ms;
                } else {
                    restored_active_at += ts - down_at;
                }
                if let Some(a) = ar.active.get_mut(&k) {
                    tracing::debug!(alert = %ar.name, labels = %a.labels, active_at = restored_active_at, "restored for state");
                    a.active_at = restored_active_at;
                }
            }
            ar.restored = true;
        }
    }

    /// Stale markers at `t` for every series the group wrote last.
    fn all_series_stale(&self, t: i64) -> Vec<Sample> {
        self.series_in_prev
            .iter()
            .flatten()
            .map(|l| Sample::float(l.clone(), t, f64::from_bits(STALE_NAN)))
            .collect()
    }
}

fn send_alerts(env: &Env, ar: &mut AlertingRule, ts: i64, interval_ms: i64) {
    let alerts = ar.alerts_to_send(ts, env.resend_delay_ms, interval_ms);
    let Some(n) = &env.notifier else { return };
    if alerts.is_empty() {
        return;
    }
    let generator = format!(
        "{}/graph?g0.expr={}&g0.tab=1",
        env.external_url,
        query_escape(&ar.expr)
    );
    let out = alerts
        .into_iter()
        .map(|a| NotifyAlert {
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.fired_at,
            ends_at: if a.resolved_at != 0 {
                a.resolved_at
            } else {
                a.valid_until
            },
            generator_url: generator.clone(),
        })
        .collect();
    n.send(out);
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            b' ' => o.push('+'),
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

// ---------------------------------------------------------------------------------
// Running groups

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Sleep until wall-clock `t_ns`; false if `stop` fired first.
async fn sleep_until_ns(t_ns: i128, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    let wait = (t_ns - now_ns()).max(0) as u64;
    let slept = tokio::select! {
        _ = tokio::time::sleep(Duration::from_nanos(wait)) => true,
        _ = stop.wait_for(|s| *s) => false,
    };
    slept && !*stop.borrow()
}

async fn run_group(
    mut g: Group,
    env: Arc<Env>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    snapshot: Arc<Mutex<Arc<Group>>>,
) -> Group {
    let interval_ns = g.interval_ms as i128 * 1_000_000;
    let key = g.key();
    let mut eval_ts = g.eval_timestamp_ns(now_ns()) + interval_ns;
    if !sleep_until_ns(eval_ts, &mut stop).await {
        return g;
    }
    let publish = |g: &Group| {
        *snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(g.clone());
    };
    g.eval(&env, (eval_ts / 1_000_000) as i64).await;
    publish(&g);
    let mut evals = 1;
    loop {
        if !sleep_until_ns(eval_ts + interval_ns, &mut stop).await {
            return g;
        }
        let missed = ((now_ns() - eval_ts) / interval_ns - 1).max(0);
        if missed > 0 {
            env.metrics
                .iterations_missed
                .with(&[&key])
                .inc_by(missed as u64);
        }
        eval_ts += (missed + 1) * interval_ns;
        g.eval(&env, (eval_ts / 1_000_000) as i64).await;
        evals += 1;
        if evals == 2 && g.should_restore {
            g.restore_for_state(&env, now_ms()).await;
            g.should_restore = false;
        }
        publish(&g);
    }
}

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Group>,
    snapshot: Arc<Mutex<Arc<Group>>>,
    config: Group,
}

/// Where rules come from: a tenant and rule-file globs.
#[derive(Debug, Clone)]
pub struct RuleSource {
    pub tenant: String,
    pub globs: Vec<String>,
}

/// Loads rule files and runs their groups.
pub struct Manager {
    env: Arc<Env>,
    sources: Mutex<Vec<RuleSource>>,
    /// Mimir's layout: `<dir>/<tenant>/<file>.y(a)ml`, read at each (re)load.
    tenant_dir: Option<std::path::PathBuf>,
    default_tenant: String,
    default_interval_ms: i64,
    default_offset_ms: i64,
    running: tokio::sync::Mutex<BTreeMap<(String, String, String), Running>>,
    loaded_once: std::sync::atomic::AtomicBool,
}

impl Manager {
    pub fn new(
        env: Arc<Env>,
        sources: Vec<RuleSource>,
        tenant_dir: Option<std::path::PathBuf>,
        default_interval_ms: i64,
        default_offset_ms: i64,
    ) -> Arc<Manager> {
        let default_tenant = sources.first().map_or_else(
            || strata_kit::tenant::DEFAULT_TENANT.to_string(),
            |s| s.tenant.clone(),
        );
        Arc::new(Manager {
            env,
            sources: Mutex::new(sources),
            tenant_dir,
            default_tenant,
            default_interval_ms,
            default_offset_ms,
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            loaded_once: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn env(&self) -> &Arc<Env> {
        &self.env
    }

    /// The default tenant (the first source's).
    pub fn tenant(&self) -> &str {
        &self.default_tenant
    }

    /// Every rule file with its tenant, globs expanded; parse errors as promtool
    /// prints them.
    pub fn load(&self) -> Result<Vec<(String, String, RuleGroup)>, Error> {
        let mut files: Vec<(String, String)> = Vec::new();
        let mut errs = Vec::new();
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for s in &sources {
            for pat in &s.globs {
                let literal = !pat.contains(['*', '?', '[']);
                match glob::glob(pat) {
                    Ok(paths) => {
                        let mut found: Vec<String> = paths
                            .filter_map(|p| p.ok())
                            .map(|p| p.to_string_lossy().into_owned())
                            .collect();
                        found.sort();
                        if found.is_empty() && literal {
                            errs.push(format!("{pat}: open {pat}: no such file or directory"));
                        }
                        files.extend(found.into_iter().map(|f| (s.tenant.clone(), f)));
                    }
                    Err(e) => errs.push(format!("{pat}: invalid glob: {e}")),
                }
            }
        }
        if let Some(dir) = &self.tenant_dir {
            match std::fs::read_dir(dir) {
                Ok(rd) => {
                    let mut tenants: Vec<_> = rd
                        .filter_map(|e| e.ok())
                        .filter(|e| e.path().is_dir())
                        .collect();
                    tenants.sort_by_key(|e| e.file_name());
                    for t in tenants {
                        let tenant = t.file_name().to_string_lossy().into_owned();
                        let mut fs: Vec<String> = std::fs::read_dir(t.path())
                            .into_iter()
                            .flatten()
                            .filter_map(|e| e.ok())
                            .map(|e| e.path())
                            .filter(|p| {
                                p.is_file()
                                    && p.extension().is_some_and(|x| x == "yml" || x == "yaml")
                            })
                            .map(|p| p.to_string_lossy().into_owned())
                            .collect();
                        fs.sort();
                        files.extend(fs.into_iter().map(|f| (tenant.clone(), f)));
                    }
                }
                Err(e) => errs.push(format!("{}: {e}", dir.display())),
            }
        }
        let mut out = Vec::new();
        for (tenant, f) in files {
            match crate::rulefmt::parse_file(&f) {
                Ok(gs) => out.extend(
                    gs.groups
                        .into_iter()
                        .map(|g| (tenant.clone(), f.clone(), g)),
                ),
                Err(e) => errs.extend(e),
            }
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(Error::RuleFiles(errs))
        }
    }

    /// (Re)load the rule files. On error nothing changes.
    pub async fn reload(&self) -> Result<(), Error> {
        let loaded = match self.load() {
            Ok(l) => l,
            Err(e) => {
                self.env.metrics.config_last_reload_successful.set(0.0);
                return Err(e);
            }
        };
        let first = !self
            .loaded_once
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        let mut running = self.running.lock().await;
        let mut new_keys = HashSet::new();
        for (tenant, file, rg) in loaded {
            let key = (tenant.clone(), file.clone(), rg.name.clone());
            new_keys.insert(key.clone());
            let mut g = Group::new(
                &tenant,
                &file,
                &rg,
                self.default_interval_ms,
                self.default_offset_ms,
                first,
            );
            if let Some(old) = running.get(&key) {
                if old.config.same_config(&g) {
                    continue;
                }
            }
            if let Some(old) = running.remove(&key) {
                let _ = old.stop.send(true);
                if let Ok(prev) = old.task.await {
                    g.copy_state(&prev);
                }
            }
            self.env
                .metrics
                .group_rules
                .with(&[&g.key()])
                .set(g.rules.len() as f64);
            running.insert(key, self.start(g));
        }
        let gone: Vec<_> = running
            .keys()
            .filter(|k| !new_keys.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(old) = running.remove(&k) {
                let _ = old.stop.send(true);
                if let Ok(prev) = old.task.await {
                    // Prometheus waits two intervals (a renamed rule takes over its
                    // series first), then marks the removed group's series stale.
                    let env = self.env.clone();
                    let t = now_ms();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(2 * prev.interval_ms as u64))
                            .await;
                        prev.write(&env, prev.all_series_stale(t)).await;
                    });
                }
            }
        }
        self.env.metrics.config_last_reload_successful.set(1.0);
        self.env
            .metrics
            .config_last_reload_success_timestamp
            .set(now_ms() as f64 / 1000.0);
        Ok(())
    }

    fn start(&self, g: Group) -> Running {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let snapshot = Arc::new(Mutex::new(Arc::new(g.clone())));
        let task = tokio::spawn(run_group(g.clone(), self.env.clone(), rx, snapshot.clone()));
        Running {
            stop: tx,
            task,
            snapshot,
            config: g,
        }
    }

    /// Stop every group (after its evaluation in progress).
    pub async fn stop(&self) {
        let mut running = self.running.lock().await;
        for (_, r) in std::mem::take(&mut *running) {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    }

    /// The groups as of their last evaluation, by tenant, file and name.
    pub async fn groups(&self) -> Vec<Arc<Group>> {
        self.running
            .lock()
            .await
            .values()
            .map(|r| r.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxFuture;

    /// Answers with `series` (when set) and records the query times.
    #[derive(Default)]
    struct Fake {
        series: Mutex<Vec<Labels>>,
        queried_at: Mutex<Vec<i64>>,
        written: Mutex<Vec<Sample>>,
    }

    impl QueryEngine for Fake {
        fn instant<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            t: i64,
        ) -> BoxFuture<'a, Result<Vec<Sample>, Error>> {
            self.queried_at.lock().unwrap().push(t);
            let v = self
                .series
                .lock()
                .unwrap()
                .iter()
                .map(|l| Sample::float(l.clone(), t, 1.0))
                .collect();
            Box::pin(async move { Ok(v) })
        }
    }

    impl Appender for Fake {
        fn append<'a>(&'a self, _: &'a str, s: Vec<Sample>) -> BoxFuture<'a, Result<(), Error>> {
            self.written.lock().unwrap().extend(s);
            Box::pin(async { Ok(()) })
        }
    }

    struct Forward(Arc<Fake>);

    impl Appender for Forward {
        fn append<'a>(&'a self, t: &'a str, s: Vec<Sample>) -> BoxFuture<'a, Result<(), Error>> {
            self.0.append(t, s)
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn query_offset_and_stale_markers() {
        let fake = Arc::new(Fake::default());
        let env = Env {
            engine: fake.clone(),
            appender: Arc::new(Forward(fake.clone())),
            notifier: None,
            external_labels: BTreeMap::from([("cluster".to_string(), "eu".to_string())]),
            external_url: String::new(),
            resend_delay_ms: 60_000,
            outage_tolerance_ms: 3_600_000,
            for_grace_period_ms: 600_000,
            metrics: RulerMetrics::new(&strata_kit::metrics::Registry::new()),
        };
        let rg = crate::rulefmt::parse(
            "groups:\n- name: g\n  query_offset: 30s\n  rules:\n  - record: r\n    expr: x\n",
        )
        .unwrap()
        .groups
        .remove(0);
        let mut g = Group::new("t", "f.yml", &rg, 60_000, 0, false);
        *fake.series.lock().unwrap() = vec![
            Labels::from_pairs([("a", "1")]),
            Labels::from_pairs([("a", "2")]),
        ];
        g.eval(&env, 120_000).await;
        assert_eq!(*fake.queried_at.lock().unwrap(), [90_000]);
        {
            let w = fake.written.lock().unwrap();
            assert_eq!(w.len(), 2);
            assert!(w.iter().all(|s| s.t == 90_000
                && s.labels.get("__name__") == Some("r")
                && s.labels.get("cluster") == Some("eu")));
        }
        fake.written.lock().unwrap().clear();
        fake.series.lock().unwrap().pop();
        g.eval(&env, 180_000).await;
        let w = fake.written.lock().unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        let stale: Vec<&Sample> = w.iter().filter(|s| crate::is_stale(s.v)).collect();
        assert_eq!(stale.len(), 1, "the series that went away is marked stale");
        assert_eq!(stale[0].labels.get("a"), Some("2"));
        assert_eq!(stale[0].t, 150_000);
    }

    #[test]
    fn evaluation_instants_are_spread_by_file_and_name() {
        let rg = crate::rulefmt::RuleGroup {
            name: "g".into(),
            ..Default::default()
        };
        let a = Group::new("t", "/a.yml", &rg, 60_000, 0, false);
        let t = a.eval_timestamp_ns(1_700_000_000_123_000_000);
        let offset = (crate::hash::labels_hash([("file", "/a.yml"), ("name", "g")])
            % 60_000_000_000) as i128;
        assert_eq!((t - offset).rem_euclid(60_000_000_000), 0);
        assert!(t <= 1_700_000_000_123_000_000 && t > 1_700_000_000_123_000_000 - 60_000_000_000);
    }
}
