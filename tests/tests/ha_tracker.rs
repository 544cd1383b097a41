//! The HA tracker with a real Prometheus 2.42 HA pair remote-writing to `strata all`:
//! only one replica's samples are stored (no `__replica__` label, one series per
//! scraped series), the other replica's requests are answered 202 (Prometheus counts
//! no failures), and when the elected replica stops, the other takes over after the
//! failover timeout and its samples are stored.

use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::http::{encode, exporter, get, get_json};
use strata_testkit::poll;
use strata_testkit::procs::Prometheus;
use strata_testkit::strata::StrataProc;

fn prom_config(replica: &str, exporter: u16, strata: &str) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: demo\n    __replica__: {replica}\n\
         scrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: ['127.0.0.1:{exporter}']\n\
         remote_write:\n  - url: {strata}/api/v1/push\n    queue_config:\n      batch_send_deadline: 1s\n"
    )
}

fn elected(strata: &StrataProc) -> Option<String> {
    let v = get_json(&format!("{}/distributor/ha_tracker", strata.url()));
    v["elections"][0]["elected"].as_str().map(str::to_string)
}

fn prom_metric(p: &Prometheus, q: &str) -> f64 {
    let v = get_json(&format!("{}/api/v1/query?query={}", p.url(), encode(q)));
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn ha_pair_is_deduplicated_at_ingest_and_fails_over() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1h",
            "--distributor.ha-tracker.enable",
            "--distributor.ha-tracker.failover-timeout=3s",
        ],
    );
    let exp = exporter();
    let mut a = Some(Prometheus::start(
        &tmp.path().join("a"),
        &prom_config("a", exp, &strata.url()),
        &[],
    ));
    let mut b = Some(Prometheus::start(
        &tmp.path().join("b"),
        &prom_config("b", exp, &strata.url()),
        &[],
    ));

    // Both replicas write; one is elected and the other's requests are dropped.
    let first = poll("an elected replica", Duration::from_secs(30), || {
        elected(&strata)
    });
    poll(
        "the other replica deduplicated",
        Duration::from_secs(30),
        || (strata.metric("strata_ingester_ha_deduped_samples_total") > 0.0).then_some(()),
    );
    let q = format!(
        "{}/api/v1/query?query={}",
        strata.url(),
        encode("demo_jobs_total")
    );
    let v = get_json(&q);
    let series = v["data"]["result"].as_array().unwrap();
    assert_eq!(series.len(), 2, "one series per scraped series: {v}");
    for s in series {
        assert_eq!(s["metric"]["cluster"], "demo", "{s}");
        assert!(s["metric"].get("__replica__").is_none(), "{s}");
    }
    // 202 is success to Prometheus: nothing failed, nothing retried forever.
    for p in [a.as_ref().unwrap(), b.as_ref().unwrap()] {
        assert_eq!(
            prom_metric(p, "sum(prometheus_remote_storage_samples_failed_total)"),
            0.0
        );
    }

    // The elected replica stops: after the failover timeout the other one is elected
    // and its samples are stored.
    let (survivor, mut stopped) = if first == "a" {
        ("b", a.take().unwrap())
    } else {
        ("a", b.take().unwrap())
    };
    // From before the stop: Prometheus keeps sending while it shuts down, which can
    // take seconds on a loaded machine. Its last request left at most a scrape interval
    // plus a batch deadline (2 s) before the stop began, so a failover that waited its
    // 3 s timeout comes at least 1 s after it.
    let stopped_at = Instant::now();
    stopped.stop();
    poll("failover", Duration::from_secs(30), || {
        (elected(&strata)? == survivor).then_some(())
    });
    assert!(stopped_at.elapsed() >= Duration::from_secs(1));
    poll(
        "samples after the failover",
        Duration::from_secs(30),
        || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let (_, body) = get(&format!(
                "{}/api/v1/query?query={}&time={now}",
                strata.url(),
                encode("count_over_time(demo_jobs_total{queue=\"a\"}[2s])")
            ))
            .unwrap();
            let v: Value = serde_json::from_str(&body).ok()?;
            (v["data"]["result"].as_array()?.len() == 1).then_some(())
        },
    );
    let v = get_json(&q);
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2, "{v}");
}
