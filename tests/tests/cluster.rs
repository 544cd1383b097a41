//! The cluster: three (and four) `strata ingester` processes on a ring with replication
//! factor 3, a raft KV among them, a querier that finds them on the ring, a real S3
//! server (s3s-fs) and a real Prometheus 2.42 HA pair.
//!
//! * An ingester `kill -9`ed and restarted, then the raft leader `kill -9`ed: every
//!   sample Prometheus was answered 2xx for is queryable exactly once, during the
//!   outage and after, and the HA tracker's election survives the leader's death.
//! * A fourth ingester joins and a seed leaves (SIGTERM) under load: no acknowledged
//!   sample lost, ownership moves, the leaver's head is in the bucket.
//! * Start-up checks (peer lists that disagree, an id at two addresses, a raft data dir
//!   from another cluster) fail with clear messages; a partitioned node (its peers
//!   frozen with SIGSTOP) never acknowledges a write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use strata_testkit::http::{encode, get_json, get_with};
use strata_testkit::poll;
use strata_testkit::procs::{free_port, Prometheus};
use strata_testkit::s3::S3Server;
use strata_testkit::strata::{series, write_request, StrataProc};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Ports and flags of a cluster's members, decided before any starts (each must know
/// the seed set).
struct Plan {
    root: PathBuf,
    objstore: PathBuf,
    peers: String,
    ports: Vec<(u16, u16)>,
    extra: Vec<String>,
}

impl Plan {
    fn new(root: &Path, objstore_yaml: &str, seeds: usize, extra: &[&str]) -> Plan {
        std::fs::create_dir_all(root).unwrap();
        let objstore = root.join("objstore.yml");
        std::fs::write(&objstore, objstore_yaml).unwrap();
        let ports: Vec<(u16, u16)> = (0..seeds + 2).map(|_| (free_port(), free_port())).collect();
        let peers = (0..seeds)
            .map(|i| format!("ing-{}=127.0.0.1:{}", i + 1, ports[i].1))
            .collect::<Vec<_>>()
            .join(",");
        Plan {
            root: root.into(),
            objstore,
            peers,
            ports,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Flags of member `i` (0-based; members past the seeds join).
    fn args(&self, i: usize) -> Vec<String> {
        let mut a = vec![
            "ingester".to_string(),
            format!(
                "--tsdb.path={}",
                self.root.join(format!("ing-{}", i + 1)).display()
            ),
            format!("--cluster.node-id=ing-{}", i + 1),
            format!("--cluster.peers={}", self.peers),
            format!("--ingester.ring.instance-zone=zone-{}", i % 3 + 1),
            "--ingester.ring.zone-awareness-enabled".to_string(),
            format!("--objstore.config-file={}", self.objstore.display()),
            "--ingester.ring.heartbeat-period=1s".to_string(),
            "--ingester.ring.heartbeat-timeout=4s".to_string(),
            "--distributor.remote-timeout=2s".to_string(),
            "--tsdb.ship-interval=1h".to_string(),
        ];
        a.extend(self.extra.iter().cloned());
        a
    }

    fn spawn(&self, i: usize) -> StrataProc {
        let (h, g) = self.ports[i];
        StrataProc::spawn(
            &self.root.join(format!("ing-{}", i + 1)),
            &self.args(i),
            h,
            g,
        )
    }

    /// Start members `0..n` together and wait until every one is ready.
    fn start(&self, n: usize) -> Vec<StrataProc> {
        let mut v: Vec<StrataProc> = (0..n).map(|i| self.spawn(i)).collect();
        for p in &mut v {
            p.wait_ready()
                .unwrap_or_else(|log| panic!("ingester exited:\n{log}"));
        }
        v
    }

    fn querier(&self) -> StrataProc {
        let ring_peers = self.peers.clone();
        StrataProc::start_http_only(
            &self.root.join("querier"),
            &[
                "querier",
                &format!("--ingester.ring.peers={ring_peers}"),
                &format!("--objstore.config-file={}", self.objstore.display()),
            ],
        )
    }
}

fn raft(p: &StrataProc) -> Value {
    get_json(&format!("{}/cluster/raft", p.url()))
}

fn ring(p: &StrataProc) -> Value {
    let (code, body) = get_with(
        &format!("{}/ingester/ring", p.url()),
        &[("Accept", "application/json")],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn active_members(p: &StrataProc) -> Vec<String> {
    ring(p)["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "ACTIVE")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn elected(p: &StrataProc) -> Option<String> {
    let v = get_json(&format!("{}/distributor/ha_tracker", p.url()));
    v["elections"][0]["elected"].as_str().map(str::to_string)
}

fn prom_value(p: &Prometheus, q: &str) -> f64 {
    let v = get_json(&format!("{}/api/v1/query?query={}", p.url(), encode(q)));
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

/// Raw samples of `selector[window]` at `t_ms` as (labels without `drop`, samples
/// after `t_ms - window`), from a Prometheus-API server.
fn raw_samples(
    url: &str,
    selector: &str,
    window_s: i64,
    t_ms: i64,
    drop: &[&str],
) -> BTreeMap<String, Vec<(String, String)>> {
    let q = format!(
        "{url}/api/v1/query?query={}&time={}.{:03}",
        encode(&format!("{selector}[{window_s}s]")),
        t_ms / 1000,
        t_ms % 1000
    );
    let v = get_json(&q);
    assert_eq!(v["status"], "success", "{q}: {v}");
    assert!(v.get("warnings").is_none(), "{q}: {v}");
    let lo = t_ms - window_s * 1000;
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let mut m: BTreeMap<String, String> = serde_json::from_value(s["metric"].clone()).unwrap();
        for d in drop {
            m.remove(*d);
        }
        let key = format!("{m:?}");
        let vals: Vec<(String, String)> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| (p[0].as_f64().unwrap() * 1000.0).round() as i64 > lo)
            .map(|p| (p[0].to_string(), p[1].as_str().unwrap().to_string()))
            .collect();
        assert!(
            out.insert(key.clone(), vals).is_none(),
            "series {key} twice in one answer"
        );
    }
    out
}

fn prom_config(replica: &str, ingester: &str) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: c1\n    __replica__: {replica}\n\
         scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{{port}}']\n\
         remote_write:\n  - url: {ingester}/api/v1/push\n    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 50ms\n      max_backoff: 1s\n"
    )
}

/// How far Prometheus `p` has delivered: the newest timestamp its remote-write queue
/// had acknowledged (ms).
fn sent_up_to(p: &Prometheus) -> i64 {
    (prom_value(
        p,
        "max(prometheus_remote_storage_queue_highest_sent_timestamp_seconds)",
    ) * 1000.0) as i64
}

#[test]
fn ha_pair_through_three_ingesters_survives_kill9_and_leader_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start();
    let plan = Plan::new(
        &tmp.path().join("cluster"),
        &s3.objstore_yaml("strata"),
        3,
        &[
            "--distributor.ha-tracker.enable",
            "--distributor.ha-tracker.failover-timeout=10m",
        ],
    );
    let mut ing = plan.start(3);
    let querier = plan.querier();
    assert_eq!(active_members(&ing[0]).len(), 3, "{}", ring(&ing[0]));
    let r = ring(&ing[0]);
    assert_eq!(r["replicationFactor"], 3);
    let zones: std::collections::BTreeSet<&str> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones.len(), 3, "{r}");
    // the same page for a person
    let (code, html) =
        strata_testkit::http::get(&format!("{}/ingester/ring", ing[1].url())).unwrap();
    assert_eq!(code, 200);
    assert!(
        html.contains("<table") && html.contains("ing-3") && html.contains("zone-2"),
        "{html}"
    );

    let entry = ing[0].url();
    let a = Prometheus::start(&tmp.path().join("prom-a"), &prom_config("a", &entry), &[]);
    let b = Prometheus::start(&tmp.path().join("prom-b"), &prom_config("b", &entry), &[]);
    let winner = poll("an elected replica", Duration::from_secs(60), || {
        elected(&ing[0])
    });
    let (p, other) = if winner == "a" { (&a, "b") } else { (&b, "a") };
    let started = now_ms();
    poll(
        "samples through the querier",
        Duration::from_secs(60),
        || {
            let v = get_json(&format!(
                "{}/api/v1/query?query={}",
                querier.url(),
                encode("count(up{job=\"self\"})")
            ));
            (v["data"]["result"].as_array()?.len() == 1).then_some(())
        },
    );

    // Ingester 2 dies: writes keep being acknowledged (2 of 3), queries stay complete.
    ing[1].kill9();
    let killed_at = now_ms();
    poll(
        "writes acknowledged during the outage",
        Duration::from_secs(60),
        || (sent_up_to(p) > killed_at + 3000).then_some(()),
    );
    // a time Prometheus has delivered everything up to (new series appear as the test
    // queries Prometheus's API)
    let during = sent_up_to(p) - 1000;
    let from_querier = raw_samples(&querier.url(), "{job=\"self\"}", 5, during, &["cluster"]);
    let from_prom = raw_samples(&p.url(), "{job=\"self\"}", 5, during, &[]);
    assert!(from_prom.len() > 100, "{} series", from_prom.len());
    assert_eq!(
        from_querier.len(),
        from_prom.len(),
        "series during the outage"
    );
    ing[1].respawn();
    ing[1].wait_ready().unwrap();

    // The raft leader dies: a new leader is elected and the HA election stays.
    let before = raft(&ing[0]);
    let leader = before["leader"]["id"].as_str().unwrap().to_string();
    let term = before["term"].as_u64().unwrap();
    let li: usize = leader.trim_start_matches("ing-").parse::<usize>().unwrap() - 1;
    ing[li].kill9();
    let survivor = (li + 1) % 3;
    let after = poll("a new raft leader", Duration::from_secs(30), || {
        let v = raft(&ing[survivor]);
        let l = v["leader"]["id"].as_str()?.to_string();
        (l != leader).then_some(v)
    });
    assert!(after["term"].as_u64().unwrap() > term, "{after}");
    assert_eq!(elected(&ing[survivor]).as_deref(), Some(winner.as_str()));
    // The other replica is still refused, through the new leader's KV.
    let req = write_request(vec![series(
        &[
            ("__name__", "probe"),
            ("cluster", "c1"),
            ("__replica__", other),
        ],
        &[(now_ms(), 1.0)],
    )]);
    let (code, body) = ing[survivor].push(None, &req);
    assert_eq!(code, 202, "{body}");
    ing[li].respawn();
    ing[li].wait_ready().unwrap();

    // Everything Prometheus was answered 2xx for is there once.
    let done = now_ms();
    poll("Prometheus caught up", Duration::from_secs(120), || {
        (sent_up_to(p) > done + 2000).then_some(())
    });
    assert_eq!(
        prom_value(p, "sum(prometheus_remote_storage_samples_failed_total)"),
        0.0
    );
    let window = ((done - started) / 1000).max(10);
    // After an outage Prometheus reshards its queue: one shard may still retry an older
    // batch while another has sent newer samples, so wait (bounded) until the two
    // agree; whatever still differs then is reported sample by sample below.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (from_querier, from_prom) = loop {
        let q = raw_samples(&querier.url(), "{job=\"self\"}", window, done, &["cluster"]);
        let pm = raw_samples(&p.url(), "{job=\"self\"}", window, done, &[]);
        if q == pm || std::time::Instant::now() > deadline {
            break (q, pm);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(from_querier.len(), from_prom.len());
    let mut samples = 0;
    for (k, want) in &from_prom {
        let got = from_querier
            .get(k)
            .unwrap_or_else(|| panic!("series {k} missing"));
        assert_eq!(got, want, "series {k}");
        samples += want.len();
    }
    eprintln!(
        "{} series, {samples} samples compared; raft leader {leader} killed (term {term} -> {})",
        from_prom.len(),
        after["term"]
    );
    assert!(samples > 1000, "{samples} samples compared");
    for i in &ing {
        assert!(i.metric("strata_distributor_forwarded_samples_total") >= 0.0);
    }
    assert!(ing[0].metric("strata_distributor_forwarded_samples_total") > 0.0);
    assert!(ing[0].metric("strata_raft_term") >= 1.0);
}

/// Pushes `n` samples of `series` series each to `target`, one batch every few ms;
/// returns the samples answered 2xx, by series name.
fn load(
    target: &str,
    run: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> BTreeMap<String, Vec<i64>> {
    let mut acked: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let base = now_ms() - 60_000;
    let mut t = 0i64;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        t += 1;
        let ts = base + t * 10;
        let names: Vec<String> = (0..60).map(|i| format!("s{i}")).collect();
        let req = write_request(
            names
                .iter()
                .map(|n| {
                    series(
                        &[("__name__", "load"), ("run", run), ("s", n)],
                        &[(ts, t as f64)],
                    )
                })
                .collect(),
        );
        let (code, _) = strata_testkit::http::post(
            &format!("{target}/api/v1/push"),
            &[
                ("Content-Encoding", "snappy"),
                ("Content-Type", "application/x-protobuf"),
            ],
            &strata_proto::encode_write_request(&req),
        )
        .unwrap_or((0, String::new()));
        if code == 200 {
            for n in &names {
                acked.entry(n.clone()).or_default().push(ts);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    acked
}

#[test]
fn a_fourth_ingester_joins_and_a_seed_leaves_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start();
    let plan = Plan::new(
        &tmp.path().join("cluster"),
        &s3.objstore_yaml("strata"),
        3,
        &[],
    );
    let mut ing = plan.start(3);
    let querier = plan.querier();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let target = ing[0].url();
        let stop = stop.clone();
        std::thread::spawn(move || load(&target, "join-leave", stop))
    };
    poll("load acknowledged", Duration::from_secs(30), || {
        (ing[0].metric("strata_distributor_replicated_samples_total") > 1000.0).then_some(())
    });

    // A fourth ingester joins: ACTIVE, owns a share, receives series.
    let mut fourth = plan.spawn(3);
    fourth.wait_ready().unwrap();
    poll("four ACTIVE members", Duration::from_secs(30), || {
        (active_members(&ing[0]).len() == 4).then_some(())
    });
    let r = ring(&ing[0]);
    let share = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "ing-4")
        .unwrap()["ownership"]
        .as_f64()
        .unwrap();
    assert!(share > 10.0, "the newcomer owns {share}% of the ring");
    poll(
        "the newcomer stores series",
        Duration::from_secs(30),
        || (fourth.metric("strata_ingester_head_series") > 0.0).then_some(()),
    );
    assert!(
        raft(&fourth)["members"].as_array().unwrap().len() >= 4,
        "{}",
        raft(&fourth)
    );

    // A seed leaves: LEAVING, its head flushed to the bucket, out of the ring.
    let leaver_dir = ing[2].data_dir.clone();
    let status = ing[2].terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}: {}", ing[2].log());
    let log = ing[2].log();
    assert!(log.contains("LEAVING"), "{log}");
    assert!(log.contains("flushed the head"), "{log}");
    let shipper: Value = serde_json::from_slice(
        &std::fs::read(leaver_dir.join("tenants/anonymous/shipper.json")).unwrap(),
    )
    .unwrap();
    let uploaded = shipper["uploaded"].as_array().unwrap();
    assert!(!uploaded.is_empty(), "{shipper}");
    for u in uploaded {
        let meta = s3
            .data_dir()
            .join("strata/anonymous")
            .join(u.as_str().unwrap())
            .join("meta.json");
        assert!(meta.exists(), "{} not in the bucket", meta.display());
    }
    poll(
        "three members after the leave",
        Duration::from_secs(30),
        || {
            let m = ring(&ing[0])["members"].as_array()?.len();
            (m == 3).then_some(())
        },
    );
    poll("more load after the leave", Duration::from_secs(30), || {
        let before = ing[0].metric("strata_distributor_replicated_samples_total");
        std::thread::sleep(Duration::from_millis(500));
        (ing[0].metric("strata_distributor_replicated_samples_total") > before).then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Release);
    let acked = loader.join().unwrap();

    // Every acknowledged sample, once.
    let t = now_ms();
    let got = raw_samples(&querier.url(), "load{run=\"join-leave\"}", 600, t, &[]);
    assert_eq!(got.len(), acked.len());
    let mut total = 0;
    for (name, ts) in &acked {
        let key = got
            .keys()
            .find(|k| k.contains(&format!("\"s\": \"{name}\"")))
            .unwrap_or_else(|| panic!("series {name} missing"));
        let have: Vec<i64> = got[key]
            .iter()
            .map(|(t, _)| (t.parse::<f64>().unwrap() * 1000.0).round() as i64)
            .collect();
        // what was acknowledged is there; 5xx'd batches may be there too (partially stored)
        let mut j = 0;
        for want in ts {
            while j < have.len() && have[j] < *want {
                j += 1;
            }
            assert!(
                j < have.len() && have[j] == *want,
                "series {name}: acknowledged sample {want} missing"
            );
        }
        assert!(
            have.windows(2).all(|w| w[0] < w[1]),
            "series {name}: a sample twice"
        );
        total += ts.len();
    }
    eprintln!(
        "{} series, {total} acknowledged samples checked",
        acked.len()
    );
    assert!(total > 2000, "{total} acknowledged samples checked");
}

#[test]
fn startup_checks_and_a_partitioned_node() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::new(
        &tmp.path().join("cluster"),
        "type: FILESYSTEM\nconfig:\n  directory: BUCKET\n",
        3,
        &[],
    );
    let bucket = tmp.path().join("bucket");
    std::fs::write(
        &plan.objstore,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ),
    )
    .unwrap();
    let ing = plan.start(3);

    // A partitioned node (its peers frozen) never acknowledges.
    ing[1].freeze(true);
    ing[2].freeze(true);
    let req = write_request(vec![series(
        &[("__name__", "p"), ("i", "1")],
        &[(now_ms(), 1.0)],
    )]);
    let (code, body) = ing[0].push(None, &req);
    assert!(code >= 500, "{code} {body}");
    assert!(body.contains("quorum"), "{body}");
    ing[1].freeze(false);
    ing[2].freeze(false);
    poll(
        "writes after the partition heals",
        Duration::from_secs(30),
        || {
            let req = write_request(vec![series(
                &[("__name__", "p"), ("i", "2")],
                &[(now_ms(), 1.0)],
            )]);
            (ing[0].push(None, &req).0 == 200).then_some(())
        },
    );

    // Peer lists that disagree.
    let (h, g) = (free_port(), free_port());
    let mut args = plan.args(4);
    let wrong = format!("{},ing-9=127.0.0.1:{}", plan.peers, free_port());
    args.iter_mut()
        .filter(|a| a.starts_with("--cluster.peers="))
        .for_each(|a| *a = format!("--cluster.peers={wrong}"));
    let mut bad = StrataProc::spawn(&tmp.path().join("bad-peers"), &args, h, g);
    let log = bad
        .wait_ready()
        .expect_err("a node with another seed list started");
    assert!(log.contains("--cluster.peers disagree"), "{log}");

    // An id at two addresses.
    let (h, g) = (free_port(), free_port());
    let mut args = plan.args(4);
    args.iter_mut()
        .filter(|a| a.starts_with("--cluster.node-id="))
        .for_each(|a| *a = "--cluster.node-id=ing-2".into());
    let mut dup = StrataProc::spawn(&tmp.path().join("dup-id"), &args, h, g);
    let log = dup.wait_ready().expect_err("a node reusing an id started");
    assert!(log.contains("ing-2") && log.contains("advertises"), "{log}");

    // An id held by a live joiner, reused at another address.
    let mut fourth = plan.spawn(3);
    fourth.wait_ready().unwrap();
    let (h, g) = (free_port(), free_port());
    let twin_dir = tmp.path().join("twin");
    let mut args = plan.args(3);
    args.iter_mut()
        .filter(|a| a.starts_with("--tsdb.path="))
        .for_each(|a| *a = format!("--tsdb.path={}", twin_dir.display()));
    let mut twin = StrataProc::spawn(&twin_dir, &args, h, g);
    let log = twin.wait_ready().expect_err("a second ing-4 started");
    assert!(log.contains("already used by a live ingester"), "{log}");
    assert_eq!(active_members(&ing[0]).len(), 4, "{}", ring(&ing[0]));

    // A raft data dir from another cluster.
    let dir = tmp.path().join("other");
    let (h, g) = (free_port(), free_port());
    let mut solo = StrataProc::spawn(
        &dir,
        &[
            "ingester".into(),
            format!("--tsdb.path={}", dir.display()),
            "--cluster.node-id=ing-1".into(),
        ],
        h,
        g,
    );
    solo.wait_ready().unwrap();
    solo.terminate(Duration::from_secs(30));
    let mut again = StrataProc::spawn(
        &dir,
        &[
            "ingester".into(),
            format!("--tsdb.path={}", dir.display()),
            "--cluster.node-id=ing-1".into(),
            format!(
                "--cluster.peers=ing-1=127.0.0.1:{g},ing-2=127.0.0.1:{}",
                free_port()
            ),
        ],
        h,
        g,
    );
    let log = again
        .wait_ready()
        .expect_err("a data dir from another cluster was used");
    assert!(log.contains("from another cluster"), "{log}");
}

/// Every member stopped at once (a host shutdown, a rolling restart gone wrong): the raft
/// leader has no quorum left to take itself out of the ring by, and must still exit
/// (it waited forever for that commit before).
#[test]
fn all_members_stopped_at_once_all_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let objstore = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        dir.join("bucket").display()
    );
    let plan = Plan::new(dir, &objstore, 3, &[]);
    let mut ing = plan.start(3);
    let t = now_ms();
    let req = write_request(vec![series(&[("__name__", "m"), ("x", "1")], &[(t, 1.0)])]);
    assert_eq!(ing[0].push(None, &req).0, 200);
    for p in &ing {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &p.proc.child.id().to_string()])
            .status();
    }
    let mut flushed = 0;
    for p in &mut ing {
        let status = p.terminate(Duration::from_secs(60));
        assert!(status.success(), "{status}: {}", p.log());
        flushed += usize::from(p.log().contains("flushed the head"));
    }
    // the write was acknowledged at quorum: at least two members held the sample (the
    // third may not have, when its copy was still in flight) and flushed it
    assert!(flushed >= 2, "only {flushed} members flushed the sample");
}
