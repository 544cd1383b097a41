//! The ruler against real parts (issue 15):
//!
//! * differential: Prometheus 2.42 and `strata all --rule-file` evaluate the same rule
//!   file over the same samples (pushed to both through remote write) and their
//!   recording-rule series, `ALERTS` and `ALERTS_FOR_STATE` agree sample by sample, and
//!   an instant `ALERTS` query agrees at every evaluation step (stale markers included);
//! * end to end with a real Alertmanager: an alert fires, Alertmanager's
//!   `/api/v2/alerts` shows it with its templated labels and annotations, it resolves
//!   and the resolution reaches Alertmanager's webhook; with Alertmanager down the
//!   ruler keeps evaluating, counts errors and retries, and the alert arrives once
//!   Alertmanager is back;
//! * `strata ruler` over HTTP (`--query`, `--remote-write.url`): results written back
//!   are queryable; a broken file at reload (`POST /-/reload`, SIGHUP) is refused with
//!   promtool's messages and the old rules keep running; a removed group's series are
//!   marked stale; a broken file at start stops the ruler with promtool's messages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use strata_testkit::alertmanager::{Alertmanager, Webhook};
use strata_testkit::http::{encode, get, get_json, post};
use strata_testkit::poll;
use strata_testkit::procs::{promtool, Prometheus};
use strata_testkit::strata::{metric_sum, series, write_request, StrataProc};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn query(base: &str, expr: &str, t_ms: i64) -> Vec<Value> {
    let url = format!(
        "{base}/api/v1/query?query={}&time={}.{:03}",
        encode(expr),
        t_ms.div_euclid(1000),
        t_ms.rem_euclid(1000)
    );
    let v = get_json(&url);
    assert_eq!(v["status"], "success", "{url}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Series of a range-vector query as `labels → [(t ms, value text)]`.
fn raw_samples(base: &str, expr: &str, t_ms: i64) -> BTreeMap<String, Vec<(i64, String)>> {
    let mut out = BTreeMap::new();
    for s in query(base, expr, t_ms) {
        let pts = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.insert(s["metric"].to_string(), pts);
    }
    out
}

/// A vector result as `labels → value text`.
fn vector(base: &str, expr: &str, t_ms: i64) -> BTreeMap<String, String> {
    query(base, expr, t_ms)
        .into_iter()
        .map(|s| {
            (
                s["metric"].to_string(),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn remote_write(url: &str, body: &[u8], tenant: Option<&str>) {
    let mut h = vec![
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    if let Some(t) = tenant {
        h.push(("X-Scope-OrgID", t));
    }
    let (status, text) = post(url, &h, body).unwrap();
    assert!((200..300).contains(&status), "{url}: {status} {text}");
}

const DIFF_RULES: &str = r#"groups:
  - name: diff
    interval: 2s
    rules:
      - record: job:rule_diff_load:sum
        expr: sum by (job) (rule_diff_load)
      - record: instance:rule_diff_requests:rate10s
        expr: rate(rule_diff_requests_total[10s])
        labels:
          source: recorded
      - alert: LoadHigh
        expr: rule_diff_load > 1
        for: 4s
        keep_firing_for: 2s
        labels:
          severity: page
      - alert: LoadZero
        expr: job:rule_diff_load:sum == 0 or rule_diff_load == 0
"#;

/// Load of instance `i` at `t` (ms): square waves of different periods, so every alert
/// resolves now and then and both rulers, wherever they started, converge.
fn diff_load(i: usize, t: i64) -> f64 {
    let s = t / 1000;
    match i {
        0 => [0.0, 2.0][((s / 10) % 2) as usize],
        1 => [3.0, 1.0, 0.0][((s / 6) % 3) as usize],
        _ => [2.0, 0.0][((s / 14) % 2) as usize],
    }
}

#[test]
fn rules_agree_with_prometheus_step_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, DIFF_RULES).unwrap();
    let rules = rules.to_str().unwrap().to_string();
    // Both read the same path: Prometheus spreads groups over the interval by
    // hash(file, name) and so does the ruler, so they evaluate at the same instants.
    let prom = Prometheus::start(
        &dir.path().join("prom"),
        &format!("global:\n  evaluation_interval: 2s\nrule_files:\n  - {rules}\n"),
        &["--web.enable-remote-write-receiver"],
    );
    let strata = StrataProc::start_all(
        &dir.path().join("strata"),
        &[&format!("--rule-file={rules}")],
    );
    // One sample a second from a minute ago to three minutes ahead, identical for both.
    let now = now_ms() / 1000 * 1000;
    let mut ts = Vec::new();
    for i in 0..3 {
        let inst = format!("i{i}");
        let load: Vec<(i64, f64)> = (-60..180)
            .map(|k| (now + k * 1000, diff_load(i, now + k * 1000)))
            .collect();
        let mut c = 0.0;
        let reqs: Vec<(i64, f64)> = (-60..180)
            .map(|k: i64| {
                c += (i as f64 + 1.0) * ((k.rem_euclid(7)) as f64);
                (now + k * 1000, c)
            })
            .collect();
        ts.push(series(
            &[
                ("__name__", "rule_diff_load"),
                ("job", "j"),
                ("instance", &inst),
            ],
            &load,
        ));
        ts.push(series(
            &[
                ("__name__", "rule_diff_requests_total"),
                ("job", "j"),
                ("instance", &inst),
            ],
            &reqs,
        ));
    }
    let body = strata_proto::encode_write_request(&write_request(ts));
    remote_write(&format!("{}/api/v1/write", prom.url()), &body, None);
    remote_write(&format!("{}/api/v1/push", strata.url()), &body, None);

    // The evaluation instants of each, from the first recording rule's samples.
    let evals = |base: &str| -> Vec<i64> {
        let r = raw_samples(base, "job:rule_diff_load:sum[3m]", now_ms());
        r.values()
            .next()
            .map(|v| v.iter().map(|p| p.0).collect())
            .unwrap_or_default()
    };
    // Wait until both have run a common stretch: past the first two evaluations (no
    // ALERTS before `for` state is restored) and a full cycle of the data (24 s), then
    // 12 more steps.
    let (from, to) = poll(
        "both rulers evaluated long enough",
        Duration::from_secs(150),
        || {
            let (p, s) = (evals(&prom.url()), evals(&strata.url()));
            let (fp, fs) = (*p.first()?, *s.first()?);
            let from = fp.max(fs) + 4_000 + 42_000;
            let to = (*p.last()?).min(*s.last()?);
            (to >= from + 24_000).then_some((from, to))
        },
    );
    let p_evals: BTreeSet<i64> = evals(&prom.url())
        .into_iter()
        .filter(|t| (from..=to).contains(t))
        .collect();
    let s_evals: BTreeSet<i64> = evals(&strata.url())
        .into_iter()
        .filter(|t| (from..=to).contains(t))
        .collect();
    assert_eq!(s_evals, p_evals, "evaluation instants differ");
    assert!(p_evals.len() >= 12, "{p_evals:?}");

    // Every series the rules wrote, sample by sample over the common stretch.
    let at = to;
    let window = format!("[{}ms]", at - from + 1);
    for name in [
        "job:rule_diff_load:sum",
        "instance:rule_diff_requests:rate10s",
        "ALERTS",
        "ALERTS_FOR_STATE",
    ] {
        let expr = format!("{name}{window}");
        let p = raw_samples(&prom.url(), &expr, at);
        let s = raw_samples(&strata.url(), &expr, at);
        assert!(!p.is_empty(), "{name}: Prometheus wrote nothing");
        assert_eq!(s, p, "{name}: Strata (left) and Prometheus (right) differ");
    }
    // The alert states step by step; an instant query sees an alert that resolved
    // only if no stale marker ended its series.
    let mut seen_states = BTreeSet::new();
    for &t in &p_evals {
        let p = vector(&prom.url(), "ALERTS", t);
        let s = vector(&strata.url(), "ALERTS", t);
        assert_eq!(s, p, "ALERTS at {t}");
        for k in p.keys() {
            let v: Value = serde_json::from_str(k).unwrap();
            seen_states.insert(format!("{}/{}", v["alertname"], v["alertstate"]));
        }
    }
    // The data makes every state happen, so the comparison covered them.
    for want in [
        "\"LoadHigh\"/\"pending\"",
        "\"LoadHigh\"/\"firing\"",
        "\"LoadZero\"/\"firing\"",
    ] {
        assert!(
            seen_states.contains(want),
            "{want} never seen: {seen_states:?}"
        );
    }
}

const E2E_RULES: &str = r#"groups:
  - name: e2e
    interval: 1s
    rules:
      - record: instance:rule_e2e_up:max
        expr: max by (instance) (rule_e2e_up)
      - alert: InstanceDown
        expr: rule_e2e_up == 0
        for: 2s
        labels:
          severity: page
          team: "{{ $labels.job }}-oncall"
        annotations:
          summary: "{{ $labels.instance }} is down"
          description: '{{ $labels.instance }} of {{ $labels.job }} reports {{ printf "%.1f" $value }} ({{ $value | humanizePercentage }}) in {{ $externalLabels.cluster }}; {{ with query "count(rule_e2e_up)" }}{{ . | first | value }}{{ end }} instance(s) known'
"#;

fn find_alert<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["alertname"] == name)
}

#[test]
fn alerts_reach_alertmanager_resolve_and_survive_its_outage() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start();
    let mut am = Alertmanager::start(&dir.path().join("am"), Some(&hook.url));
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, E2E_RULES).unwrap();
    let strata = StrataProc::start_all(
        &dir.path().join("strata"),
        &[
            &format!("--rule-file={}", rules.display()),
            &format!("--alertmanagers.url={}", am.url()),
            "--resend-delay=2s",
            "--label=cluster=\"eu-1\"",
            "--alert.query-url=http://strata.example",
        ],
    );
    // A live series, its value set by the test.
    let up = Arc::new(AtomicU64::new(0f64.to_bits()));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (up, stop, url) = (up.clone(), stop.clone(), strata.url());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let v = f64::from_bits(up.load(Ordering::Relaxed));
                let req = write_request(vec![series(
                    &[
                        ("__name__", "rule_e2e_up"),
                        ("job", "db"),
                        ("instance", "db-1"),
                    ],
                    &[(now_ms(), v)],
                )]);
                let _ = post(
                    &format!("{url}/api/v1/push"),
                    &[
                        ("Content-Encoding", "snappy"),
                        ("Content-Type", "application/x-protobuf"),
                    ],
                    &strata_proto::encode_write_request(&req),
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // Fires, and reaches Alertmanager with its templates expanded.
    let a = poll(
        "InstanceDown in Alertmanager",
        Duration::from_secs(60),
        || find_alert(&am.alerts(), "InstanceDown").cloned(),
    );
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["labels"]["team"], "db-oncall", "label templates: {a}");
    assert_eq!(a["labels"]["cluster"], "eu-1", "external labels: {a}");
    assert_eq!(a["labels"]["instance"], "db-1");
    assert_eq!(a["annotations"]["summary"], "db-1 is down");
    assert_eq!(
        a["annotations"]["description"],
        "db-1 of db reports 0.0 (0%) in eu-1; 1 instance(s) known"
    );
    let gen = a["generatorURL"].as_str().unwrap();
    assert!(
        gen.starts_with("http://strata.example/graph?g0.expr="),
        "{gen}"
    );
    // The ruler's own API, in Prometheus's shape.
    let alerts = get_json(&format!("{}/api/v1/alerts", strata.url()));
    let ours = &alerts["data"]["alerts"][0];
    assert_eq!(ours["state"], "firing", "{alerts}");
    assert_eq!(ours["value"], "0e+00");
    assert_eq!(ours["annotations"]["summary"], "db-1 is down");
    let rules_api = get_json(&format!("{}/api/v1/rules", strata.url()));
    let g = &rules_api["data"]["groups"][0];
    assert_eq!(g["name"], "e2e");
    assert_eq!(g["interval"], 1.0);
    assert_eq!(g["rules"][0]["type"], "recording");
    assert_eq!(g["rules"][0]["health"], "ok");
    assert_eq!(g["rules"][1]["type"], "alerting");
    assert_eq!(g["rules"][1]["state"], "firing");
    assert_eq!(g["rules"][1]["duration"], 2.0);
    assert_eq!(g["rules"][1]["query"], "rule_e2e_up == 0");
    // Results and alert series were written through the ingest path.
    poll(
        "the recording rule's series",
        Duration::from_secs(30),
        || {
            let v = vector(&strata.url(), "instance:rule_e2e_up:max", now_ms());
            (v.len() == 1 && v.values().next().unwrap() == "0").then_some(())
        },
    );
    poll("ALERTS firing", Duration::from_secs(30), || {
        (vector(
            &strata.url(),
            "ALERTS{alertname=\"InstanceDown\",alertstate=\"firing\"}",
            now_ms(),
        )
        .len()
            == 1)
            .then_some(())
    });

    // Alertmanager notified its receiver (it sends a resolution only for an alert it
    // notified as firing).
    poll("the firing notification", Duration::from_secs(30), || {
        hook.received()
            .iter()
            .any(|n| {
                n["status"] == "firing"
                    && n["alerts"][0]["annotations"]["summary"] == "db-1 is down"
            })
            .then_some(())
    });

    // Resolves: the resolution reaches Alertmanager and its receiver.
    up.store(1f64.to_bits(), Ordering::Relaxed);
    poll("the resolved notification", Duration::from_secs(60), || {
        hook.received()
            .iter()
            .any(|n| {
                n["status"] == "resolved" && n["alerts"][0]["labels"]["alertname"] == "InstanceDown"
            })
            .then_some(())
    });
    poll(
        "InstanceDown gone from Alertmanager",
        Duration::from_secs(30),
        || {
            find_alert(&am.alerts(), "InstanceDown")
                .is_none()
                .then_some(())
        },
    );
    // Its ALERTS series ended with a stale marker: an instant query no longer sees it.
    poll("ALERTS stale", Duration::from_secs(30), || {
        vector(
            &strata.url(),
            "ALERTS{alertname=\"InstanceDown\"}",
            now_ms(),
        )
        .is_empty()
        .then_some(())
    });
    let sent_before = strata.metric("strata_ruler_notifications_total");
    assert!(
        sent_before >= 2.0,
        "firing and resolved sent: {sent_before}"
    );

    // Alertmanager down: the ruler keeps evaluating, fails to send, and retries.
    am.stop();
    up.store(0f64.to_bits(), Ordering::Relaxed);
    poll(
        "notification errors counted",
        Duration::from_secs(60),
        || (strata.metric("strata_ruler_notifications_errors_total") > 0.0).then_some(()),
    );
    let evals = strata.metric("strata_ruler_evaluations_total");
    poll(
        "evaluations continue while Alertmanager is down",
        Duration::from_secs(30),
        || (strata.metric("strata_ruler_evaluations_total") >= evals + 3.0).then_some(()),
    );
    let errors = strata.metric("strata_ruler_notifications_errors_total");
    poll("a resend is tried again", Duration::from_secs(30), || {
        (strata.metric("strata_ruler_notifications_errors_total") > errors).then_some(())
    });
    am.restart();
    let a = poll(
        "InstanceDown in Alertmanager after its restart",
        Duration::from_secs(60),
        || find_alert(&am.alerts(), "InstanceDown").cloned(),
    );
    assert_eq!(a["annotations"]["summary"], "db-1 is down");
    let (_, metrics) = get(&format!("{}/metrics", strata.url())).unwrap();
    for m in [
        "strata_ruler_notifications_dropped_total",
        "strata_ruler_notifications_queue_length",
        "strata_ruler_notifications_queue_capacity",
        "strata_ruler_group_evaluation_duration_seconds_count",
        "strata_ruler_evaluation_failures_total",
    ] {
        assert!(metrics.contains(m), "{m} not served");
    }
    assert_eq!(
        metric_sum(&metrics, "strata_ruler_evaluation_failures_total"),
        0.0
    );
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
}

/// promtool's error lines for a rule file.
fn promtool_errors(path: &Path) -> Vec<String> {
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "promtool accepted {}",
        path.display()
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    err.lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "FAILED:")
        .map(str::to_string)
        .collect()
}

const RELOAD_GOOD: &str = "groups:\n  - name: g1\n    interval: 1s\n    rules:\n      - record: rule_reload:sum\n        expr: sum(rule_reload_x)\n";
const RELOAD_BROKEN: &str = "groups:\n  - name: g1\n    interval: 1s\n    rules:\n      - record: rule-reload:sum\n        expr: sum(rule_reload_x)\n      - alert: A\n        record: b\n        expr: up\n";
const RELOAD_NEW: &str = "groups:\n  - name: g2\n    interval: 1s\n    rules:\n      - record: rule_reload:max\n        expr: max(rule_reload_x)\n";

fn group_names(ruler: &StrataProc) -> Vec<String> {
    let v = get_json(&format!("{}/api/v1/rules", ruler.url()));
    v["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn standalone_ruler_writes_back_and_reload_keeps_old_rules_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(&dir.path().join("strata"), &[]);
    let now = now_ms() / 1000 * 1000;
    let samples: Vec<(i64, f64)> = (-60..300).map(|k| (now + k * 1000, 3.0)).collect();
    let req = write_request(vec![
        series(&[("__name__", "rule_reload_x"), ("i", "a")], &samples),
        series(&[("__name__", "rule_reload_x"), ("i", "b")], &samples),
    ]);
    remote_write(
        &format!("{}/api/v1/push", strata.url()),
        &strata_proto::encode_write_request(&req),
        Some("team-a"),
    );

    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RELOAD_GOOD).unwrap();
    let rule_flag = format!("--rule-file={}", dir.path().join("*.yml").display());
    let args = [
        "ruler",
        rule_flag.as_str(),
        &format!("--query={}", strata.url()),
        &format!("--remote-write.url={}/api/v1/push", strata.url()),
        "--tenant=team-a",
    ];
    let ruler = StrataProc::start_http_only(&dir.path().join("ruler"), &args);
    let in_team_a = |expr: &str| -> Vec<Value> {
        let url = format!("{}/api/v1/query?query={}", strata.url(), encode(expr));
        let (_, body) =
            strata_testkit::http::get_with(&url, &[("X-Scope-OrgID", "team-a")]).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    };
    poll(
        "rule_reload:sum written to team-a",
        Duration::from_secs(30),
        || {
            let r = in_team_a("rule_reload:sum");
            (r.len() == 1 && r[0]["value"][1] == "6").then_some(())
        },
    );
    assert!(
        vector(&strata.url(), "rule_reload:sum", now_ms()).is_empty(),
        "written to the anonymous tenant"
    );
    assert_eq!(group_names(&ruler), ["g1"]);

    // A broken file: refused with promtool's messages, the old rules keep running.
    std::fs::write(&rules, RELOAD_BROKEN).unwrap();
    let want = promtool_errors(&rules);
    assert!(want.len() >= 2, "{want:?}");
    let (status, body) = post(&format!("{}/-/reload", ruler.url()), &[], b"").unwrap();
    assert_eq!(status, 500, "{body}");
    for line in &want {
        assert!(
            body.contains(line.as_str()),
            "reload answer lacks promtool's {line:?}:\n{body}"
        );
    }
    assert_eq!(group_names(&ruler), ["g1"]);
    assert_eq!(
        ruler.metric("strata_ruler_config_last_reload_successful"),
        0.0
    );
    let evals = ruler.metric("strata_ruler_evaluations_total");
    poll("g1 still evaluated", Duration::from_secs(30), || {
        (ruler.metric("strata_ruler_evaluations_total") >= evals + 2.0).then_some(())
    });
    // SIGHUP: the same.
    let pid = ruler.proc.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    poll("SIGHUP reload refused", Duration::from_secs(30), || {
        ruler.log().contains("reloading rules failed").then_some(())
    });
    assert_eq!(group_names(&ruler), ["g1"]);

    // A good file replaces g1 by g2; g1's series are marked stale.
    std::fs::write(&rules, RELOAD_NEW).unwrap();
    let (status, body) = post(&format!("{}/-/reload", ruler.url()), &[], b"").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(group_names(&ruler), ["g2"]);
    assert_eq!(
        ruler.metric("strata_ruler_config_last_reload_successful"),
        1.0
    );
    poll("rule_reload:max written", Duration::from_secs(30), || {
        (in_team_a("rule_reload:max").len() == 1).then_some(())
    });
    poll(
        "the removed group's series marked stale",
        Duration::from_secs(30),
        || in_team_a("rule_reload:sum").is_empty().then_some(()),
    );

    // A broken file at start: the ruler stops with promtool's messages.
    let bad_dir = dir.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = bad_dir.join("rules.yml");
    std::fs::write(&bad, RELOAD_BROKEN).unwrap();
    let want = promtool_errors(&bad);
    let out = Command::new(strata_testkit::procs::strata_bin())
        .args([
            "ruler",
            &format!("--rule-file={}", bad.display()),
            "--query=http://127.0.0.1:1",
            "--http-address=127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    for line in &want {
        assert!(
            log.contains(line.as_str()),
            "start-up error lacks promtool's {line:?}:\n{log}"
        );
    }
}

/// The shipped meta-monitoring rules pass `promtool check rules`, and every metric they
/// name exists: `strata_*` ones in Strata's sources, `prometheus_*` ones on the
/// `/metrics` of a real Prometheus 2.42 that remote-writes and notifies an Alertmanager.
#[test]
fn meta_monitoring_rules_are_valid_and_name_real_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = root.join("deploy/rules/meta-monitoring.yml");
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let names: BTreeSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("strata_") || w.starts_with("prometheus_"))
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    let mut sources = String::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let src = dir.unwrap().path().join("src");
        if let Ok(rd) = std::fs::read_dir(&src) {
            let mut stack: Vec<std::path::PathBuf> = rd.map(|e| e.unwrap().path()).collect();
            while let Some(p) = stack.pop() {
                if p.is_dir() {
                    stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                } else if p.extension().is_some_and(|e| e == "rs") {
                    sources.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(&dir.path().join("am"), None);
    let prom = Prometheus::start(
        &dir.path().join("prom"),
        &format!(
            "global:\n  scrape_interval: 1s\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [127.0.0.1:{}]\nremote_write:\n  - url: http://127.0.0.1:{{port}}/api/v1/write\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: [127.0.0.1:{{port}}]\n",
            am.port
        ),
        // It writes to itself: the sent-timestamp gauge exists once a send succeeded.
        &["--web.enable-remote-write-receiver"],
    );
    for n in names.iter().filter(|n| n.starts_with("strata_")) {
        assert!(
            sources.contains(&format!("\"{n}\"")),
            "{n}: no Strata component registers it"
        );
    }
    // Per-Alertmanager and per-queue series appear once Prometheus found them.
    let missing = || -> Vec<&str> {
        let (_, exposition) = get(&format!("{}/metrics", prom.url())).unwrap();
        names
            .iter()
            .copied()
            .filter(|n| {
                n.starts_with("prometheus_") && !exposition.contains(&format!("# TYPE {n} "))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !missing().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        missing(),
        Vec::<&str>::new(),
        "not served by Prometheus 2.42"
    );
}

const RESTORE_RULES: &str = "groups:\n  - name: restore\n    interval: 1s\n    rules:\n      - alert: RestoreDown\n        expr: rule_restore_up == 0\n        for: 40s\n";

/// The `activeAt` (ms) and state of the one `RestoreDown` alert on `/api/v1/alerts`.
fn restore_alert(strata: &StrataProc) -> Option<(i64, String)> {
    let v = get_json(&format!("{}/api/v1/alerts", strata.url()));
    let a = v["data"]["alerts"].as_array()?.first()?.clone();
    let at = strata_kit::date::parse_rfc3339_ms(a["activeAt"].as_str()?).ok()?;
    Some((at, a["state"].as_str()?.to_string()))
}

/// A restart does not reset `for`: the pending time before the restart is restored from
/// `ALERTS_FOR_STATE` (Prometheus's `RestoreForState`, here with a 2 s grace period).
#[test]
fn restart_restores_for_state() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RESTORE_RULES).unwrap();
    let mut strata = StrataProc::start_all(
        &dir.path().join("strata"),
        &[
            &format!("--rule-file={}", rules.display()),
            "--for-grace-period=2s",
        ],
    );
    let now = now_ms() / 1000 * 1000;
    let samples: Vec<(i64, f64)> = (-60..300).map(|k| (now + k * 1000, 0.0)).collect();
    let req = write_request(vec![series(
        &[("__name__", "rule_restore_up"), ("instance", "x")],
        &samples,
    )]);
    remote_write(
        &format!("{}/api/v1/push", strata.url()),
        &strata_proto::encode_write_request(&req),
        None,
    );
    // Pending for 12 s, with its ALERTS_FOR_STATE written.
    let (first_active, _) = poll(
        "RestoreDown pending for 12 s",
        Duration::from_secs(60),
        || {
            let (at, state) = restore_alert(&strata)?;
            (state == "pending" && now_ms() - at >= 12_000).then_some((at, state))
        },
    );
    assert_eq!(vector(&strata.url(), "ALERTS_FOR_STATE", now_ms()).len(), 1);
    strata.restart();
    let ready = now_ms();
    // Without restoring, activeAt would be the first evaluation after the restart; the
    // restored one keeps the 12 s already spent pending (shifted by the downtime).
    let (restored, state) = poll("activeAt restored", Duration::from_secs(60), || {
        let (at, state) = restore_alert(&strata)?;
        (at <= ready - 6_000).then_some((at, state))
    });
    assert!(restored >= first_active, "{restored} < {first_active}");
    assert_eq!(state, "pending", "40 s not yet spent");
    // The next evaluation writes the restored activeAt.
    let want = (restored / 1000).to_string();
    poll(
        "ALERTS_FOR_STATE with the restored activeAt",
        Duration::from_secs(30),
        || {
            let fs = vector(&strata.url(), "ALERTS_FOR_STATE", now_ms());
            (fs.values().next() == Some(&want)).then_some(())
        },
    );
}

/// `strata tools rules test` gives `promtool test rules`'s verdict on every unit-test
/// file of `testdata/rules-unit` (some fail on purpose: a wrong time, a wrong
/// annotation, a wrong value).
#[test]
fn rules_unit_tests_give_promtools_verdicts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rules-unit");
    let mut verdicts = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() == "rules.yml" {
            continue;
        }
        let promtool_ok = Command::new(promtool())
            .args(["test", "rules"])
            .arg(&p)
            .current_dir(&dir)
            .output()
            .unwrap()
            .status
            .success();
        let out = Command::new(strata_testkit::procs::strata_bin())
            .args(["tools", "rules", "test"])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            promtool_ok,
            "{}: promtool says {promtool_ok}; ours:\n{}{}",
            p.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        verdicts.insert(
            p.file_name().unwrap().to_string_lossy().into_owned(),
            promtool_ok,
        );
    }
    let passed = verdicts.values().filter(|v| **v).count();
    assert!(passed >= 2 && verdicts.len() - passed >= 3, "{verdicts:?}");
    // promtool 3's --enable-feature=promql-delayed-name-removal: the two rates' groups
    // keep their names until both become {}, an error.
    let out = Command::new(strata_testkit::procs::strata_bin())
        .args(["tools", "rules", "test"])
        .arg("--enable-feature=promql-delayed-name-removal")
        .arg(dir.join("pass-name-removal.yml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("vector cannot contain metrics with the same labelset"),
        "{stderr}"
    );
}
