//! A `strata all` restarted after `kill -9` takes over the compactor lease its dead
//! predecessor left instead of waiting for it to lapse (hours, with an hourly
//! compactor).

use std::time::Duration;

use strata_testkit::strata::{filesystem_bucket, StrataProc};

const TAKEOVER: &str = "took over the compactor lease of a dead predecessor";
const PASS_DONE: &str = "compaction pass done";

#[test]
fn restart_after_kill9_takes_over_its_own_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let (bucket, cfg) = filesystem_bucket(tmp.path());
    // an hourly compactor: its lease is 3h, far longer than this test may wait
    let mut strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--compactor.interval=1h",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    strata_testkit::poll("first compaction pass", Duration::from_secs(60), || {
        strata.log().contains(PASS_DONE).then_some(())
    });
    let lease = std::fs::read_to_string(bucket.join("strata-compactor-lock.json")).unwrap();
    assert!(
        lease.contains(&format!("\"pid\": {}", strata.pid())),
        "{lease}"
    );

    strata.kill9();
    let before = strata.log().len();
    strata.restart();
    let after = || strata.log()[before..].to_string();
    let log = strata_testkit::poll(
        "compaction pass after restart",
        Duration::from_secs(60),
        || {
            let log = after();
            (log.contains(PASS_DONE) || log.contains("another compactor holds")).then_some(log)
        },
    );
    assert!(log.contains(TAKEOVER), "{log}");
    assert!(log.contains(PASS_DONE), "{log}");
    assert!(!log.contains("another compactor holds"), "{log}");
    let lease = std::fs::read_to_string(bucket.join("strata-compactor-lock.json")).unwrap();
    assert!(
        lease.contains(&format!("\"pid\": {}", strata.pid())),
        "{lease}"
    );
    // no takeover marker left behind
    let markers: Vec<_> = std::fs::read_dir(&bucket)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("takeover"))
        .collect();
    assert!(markers.is_empty(), "{markers:?}");
}
