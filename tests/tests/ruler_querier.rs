//! A querier in front of a standalone ruler (`--ruler.url`): `/api/v1/rules` and
//! `/api/v1/alerts` on the querier answer what the ruler holds, in Prometheus's shape,
//! so Grafana's alerting view works against the querier; a ruler that is down becomes a
//! warning, not an error.

use std::time::Duration;

use serde_json::Value;
use strata_testkit::http::get_json;
use strata_testkit::poll;
use strata_testkit::procs::free_port;
use strata_testkit::strata::StrataProc;

const RULES: &str = r#"groups:
  - name: always
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1) > 0
        labels:
          severity: page
        annotations:
          summary: "value {{ $value }}"
      - record: job:one
        expr: vector(1)
"#;

#[test]
fn querier_merges_the_rulers_rules_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(&dir.path().join("strata"), &[]);
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let ruler = StrataProc::start_http_only(
        &dir.path().join("ruler"),
        &[
            "ruler",
            &format!("--rule-file={}", rules.display()),
            &format!("--query={}", strata.url()),
            &format!("--remote-write.url={}/api/v1/push", strata.url()),
        ],
    );
    // a second ruler URL where nothing listens
    let dead = format!("http://127.0.0.1:{}", free_port());
    let querier = StrataProc::start_http_only(
        &dir.path().join("querier"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", strata.grpc_port),
            &format!("--ruler.url={},{dead}", ruler.url()),
        ],
    );

    let firing = poll(
        "the alert fires on the ruler",
        Duration::from_secs(30),
        || {
            let a = get_json(&format!("{}/api/v1/alerts", ruler.url()));
            let alerts = a["data"]["alerts"].as_array()?.clone();
            alerts
                .iter()
                .any(|x| x["state"] == "firing")
                .then_some(alerts)
        },
    );
    let from_ruler = get_json(&format!("{}/api/v1/rules", ruler.url()));
    let q_rules = get_json(&format!("{}/api/v1/rules", querier.url()));
    let q_alerts = get_json(&format!("{}/api/v1/alerts", querier.url()));
    // the ruler's group, as the ruler answers it (times move: compare names and rules)
    let names = |v: &Value| -> Vec<(String, Vec<String>)> {
        v["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let rules = g["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| format!("{} {}", r["type"], r["name"]))
                    .collect();
                (g["name"].as_str().unwrap().to_string(), rules)
            })
            .collect()
    };
    assert_eq!(names(&q_rules), names(&from_ruler));
    assert_eq!(names(&q_rules)[0].0, "always");
    let alerts = q_alerts["data"]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), firing.len(), "{q_alerts}");
    assert_eq!(alerts[0]["labels"]["alertname"], "AlwaysFiring");
    assert_eq!(alerts[0]["annotations"]["summary"], "value 1");
    // the dead ruler: a warning naming it
    let w = q_rules["warnings"].as_array().expect("a warning");
    assert!(
        w.iter().any(|w| w.as_str().unwrap().contains(&dead)),
        "{q_rules}"
    );
    assert_eq!(q_rules["status"], "success");
}
