//! Per-tenant overrides from `--runtime-config.file` (Mimir's `overrides:` shape) on the
//! real binary: a tenant's own rate and series limits, changed without a restart, and a
//! broken file that keeps the last good configuration.

use std::time::Duration;

use strata_testkit::http::get;
use strata_testkit::strata::{series, write_request, StrataProc};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn tenant_overrides_apply_and_reload_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("runtime.yml");
    std::fs::write(
        &cfg,
        "overrides:\n  tight:\n    ingestion_rate: 10\n    ingestion_burst_size: 100\n",
    )
    .unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            &format!("--runtime-config.file={}", cfg.display()),
            "--runtime-config.reload-period=200ms",
        ],
    );
    let t = now_ms();
    let samples: Vec<(i64, f64)> = (0..150).map(|i| (t + i, 1.0)).collect();
    let push = |tenant: &str, name: &str, n: usize| {
        strata.push(
            Some(tenant),
            &write_request(vec![series(&[("__name__", name)], &samples[..n])]),
        )
    };
    // the overridden tenant has its own rate; the others keep the flags' (unlimited)
    assert_eq!(push("tight", "m", 80).0, 200);
    let (s, b) = push("tight", "m2", 80);
    assert_eq!(s, 429, "{b}");
    assert!(b.contains("ingestion rate limit"), "{b}");
    assert_eq!(push("other", "m", 150).0, 200);

    // new limits, no restart: the rate goes, a series limit of 2 comes
    std::fs::write(
        &cfg,
        "overrides:\n  tight:\n    max_global_series_per_user: 2\n",
    )
    .unwrap();
    strata_testkit::poll("reloaded overrides", Duration::from_secs(20), || {
        let (_, body) = get(&format!("{}/runtime_config", strata.url())).unwrap();
        body.contains("max_global_series_per_user: 2").then_some(())
    });
    let (s, b) = push("tight", "a", 150);
    assert_eq!(s, 200, "the rate limit is gone: {b}");
    let (s, b) = push("tight", "b", 10);
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("per-user series limit reached"), "{b}");
    assert_eq!(push("other", "b", 10).0, 200);

    // a broken file: reload fails, said by the metric, the last good limits stay
    std::fs::write(
        &cfg,
        "overrides:\n  tight:\n    max_global_series_per_usr: 5\n",
    )
    .unwrap();
    strata_testkit::poll("failed reload", Duration::from_secs(20), || {
        (strata.metric("strata_runtime_config_last_reload_successful") == 0.0).then_some(())
    });
    let (s, b) = push("tight", "c", 10);
    assert_eq!(s, 400, "{b}");
    assert!(
        strata.log().contains("max_global_series_per_usr"),
        "the log must name the bad key"
    );
}
