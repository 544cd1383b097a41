//! `deploy/`: the compose file is valid, its alert rules load and name real metrics,
//! and its topology runs: every Strata and Prometheus service of
//! `deploy/docker-compose.yml` is started as a local process with the file's own
//! commands and config files (service names, ports and mounted paths rewritten to
//! loopback ports and temporary directories; services that depend on nothing not yet
//! started start together, so the three ingesters form their raft cluster as in
//! compose). Then: every ingester's ring shows three ACTIVE members in three zones at
//! their advertised addresses with one raft leader; the queriers answer for the HA pair
//! (deduplicated) and for the sidecar's Prometheus, both the same; every Strata
//! component is scraped `up`; the query frontend in front of both queriers answers
//! range queries as a querier does (split and sharded); the alert rules evaluate and the
//! dashboard's queries answer through the frontend, naming only served metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::http::{encode, get, get_json, get_with};
use strata_testkit::procs::{
    find_program, free_port, prometheus_bin, promtool, run, strata_bin, ChildGuard,
};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `docker-compose config -q` accepts the file (Debian's docker-compose 1.29; there is
/// no Docker engine here, so the images are not run — see the topology test).
#[test]
fn compose_file_is_valid() {
    let dc = find_program(
        "docker-compose",
        "apt-get install docker-compose (scripts/test does)",
    );
    let out = run(Command::new(dc)
        .arg("-f")
        .arg(deploy_dir().join("docker-compose.yml"))
        .args(["config", "-q"]));
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The alert rules pass `promtool check rules`.
#[test]
fn alert_rules_are_valid() {
    let out = run(Command::new(promtool())
        .args(["check", "rules"])
        .arg(deploy_dir().join("rules/strata.yml")));
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One compose service, after YAML merge keys are applied.
#[derive(Debug)]
struct Service {
    image: String,
    command: Vec<String>,
    volumes: Vec<String>,
    depends_on: Vec<String>,
}

fn services() -> BTreeMap<String, Service> {
    let text = std::fs::read_to_string(deploy_dir().join("docker-compose.yml")).unwrap();
    let mut doc: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    let strings = |v: Option<&yaml_serde::Value>| -> Vec<String> {
        v.and_then(|v| v.as_sequence())
            .map(|s| {
                s.iter()
                    .map(|x| x.as_str().expect("a string").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    doc["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                Service {
                    image: v["image"].as_str().unwrap_or("").to_string(),
                    command: strings(v.get("command")),
                    volumes: strings(v.get("volumes")),
                    depends_on: strings(v.get("depends_on")),
                },
            )
        })
        .collect()
}

/// Replace whole path tokens `from` (followed by `/`, a quote, whitespace or the end;
/// preceded by the start, `=`, whitespace or a quote) with `to`.
fn replace_path(s: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(from) {
        let before = rest[..i].chars().last();
        let after = rest[i + from.len()..].chars().next();
        let starts = before.is_none_or(|c| c == '=' || c == '"' || c == '\'' || c.is_whitespace());
        let ends = after.is_none_or(|c| c == '/' || c == '"' || c == '\'' || c.is_whitespace());
        out.push_str(&rest[..i]);
        out.push_str(if starts && ends { to } else { from });
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

/// The compose topology as local processes.
struct Topology {
    procs: Vec<(String, ChildGuard)>,
    /// (service, container port) → loopback port.
    ports: BTreeMap<(String, u16), u16>,
    tmp: tempfile::TempDir,
}

impl Topology {
    fn url(&self, service: &str, port: u16) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.ports[&(service.to_string(), port)]
        )
    }

    /// Every process still runs.
    fn assert_alive(&mut self) {
        let mut dead = Vec::new();
        for (name, p) in &mut self.procs {
            if let Err(e) = p.alive() {
                dead.push(format!("{name}: {e}"));
            }
        }
        assert!(dead.is_empty(), "{dead:?}\n{}", self.logs());
    }

    /// The last lines of every service's log (started or not yet ready).
    fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        for file in files {
            let name = file.file_stem().unwrap().to_string_lossy();
            let log = std::fs::read_to_string(&file).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!("--- {name}\n"));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// A service's listening ports: `--*address=0.0.0.0:P`.
fn listen_ports(s: &Service) -> Vec<u16> {
    s.command
        .iter()
        .filter(|a| a.contains("address=0.0.0.0:"))
        .filter_map(|a| a.rsplit(':').next()?.parse().ok())
        .collect()
}

/// [`try_start_topology`], again on fresh ports when a concurrent test took one of
/// them between choosing it and binding it.
fn start_topology(services: &BTreeMap<String, Service>) -> Topology {
    for attempt in 0.. {
        match try_start_topology(services) {
            Ok(t) => return t,
            Err(log) if attempt < 5 && log.to_lowercase().contains("in use") => continue,
            Err(log) => panic!("the topology did not start:\n{log}"),
        }
    }
    unreachable!()
}

/// `text` with every `service:port` of the file replaced by its loopback address (and,
/// for the service `own`, its `0.0.0.0:port` listen addresses too).
fn rewrite_hosts(ports: &BTreeMap<(String, u16), u16>, text: &str, own: Option<&str>) -> String {
    let mut t = text.to_string();
    for ((svc, p), local) in ports {
        t = t.replace(&format!("{svc}:{p}"), &format!("127.0.0.1:{local}"));
        if own == Some(svc.as_str()) {
            t = t.replace(&format!("0.0.0.0:{p}"), &format!("127.0.0.1:{local}"));
        }
    }
    t
}

/// The services in start waves: a wave holds every service whose `depends_on` have all
/// started in earlier waves. A wave's members start together (three ingesters are ready
/// only once a majority of their raft voters runs).
fn start_waves(services: &BTreeMap<String, Service>) -> Vec<Vec<&str>> {
    let mut waves: Vec<Vec<&str>> = Vec::new();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    while placed.len() < services.len() {
        let wave: Vec<&str> = services
            .iter()
            .filter(|(n, s)| {
                !placed.contains(n.as_str())
                    && s.depends_on.iter().all(|d| placed.contains(d.as_str()))
            })
            .map(|(n, _)| n.as_str())
            .collect();
        assert!(!wave.is_empty(), "depends_on has a cycle");
        placed.extend(wave.iter().copied());
        waves.push(wave);
    }
    waves
}

/// Start every local service, wave by wave; `Err(log)` when one exits before it is
/// ready.
fn try_start_topology(services: &BTreeMap<String, Service>) -> Result<Topology, String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut ports = BTreeMap::new();
    for (name, s) in services {
        for p in listen_ports(s) {
            ports.insert((name.clone(), p), free_port());
        }
    }
    let mut topo = Topology {
        procs: Vec::new(),
        ports,
        tmp,
    };
    for wave in start_waves(services) {
        let mut started: Vec<(String, ChildGuard, String)> = Vec::new();
        for name in wave {
            if let Some((proc, ready)) = spawn_service(&topo, name, &services[name]) {
                started.push((name.to_string(), proc, ready));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        for (name, mut proc, ready) in started {
            while !matches!(get(&ready), Ok((200, _))) {
                if proc.alive().is_err() {
                    let log = std::fs::read_to_string(topo.tmp.path().join(format!("{name}.log")))
                        .unwrap_or_default();
                    return Err(format!("{name} exited:\n{log}\n{}", topo.logs()));
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} not ready at {ready}\n{}",
                    topo.logs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            topo.procs.push((name, proc));
        }
    }
    Ok(topo)
}

/// Start one service as a local process with the file's command and mounts rewritten;
/// the process and its readiness URL, or `None` for a service with no local binary.
fn spawn_service(topo: &Topology, name: &str, s: &Service) -> Option<(ChildGuard, String)> {
    let program = if s.image.starts_with("strata") {
        strata_bin()
    } else if s.image.starts_with("prom/prometheus") {
        prometheus_bin()
    } else if s.image.starts_with("prom/alertmanager") {
        find_program(
            "prometheus-alertmanager",
            "apt-get install prometheus-alertmanager",
        )
    } else {
        return None; // e.g. grafana: no local binary (the test asserts which).
    };
    let hosts = |text: &str, own: Option<&str>| rewrite_hosts(&topo.ports, text, own);
    let root = topo.tmp.path().join(name);
    // Mounts: named volumes shared between services, bind mounts copied with their text
    // rewritten. Longest container path first.
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut binds: Vec<(PathBuf, PathBuf)> = Vec::new();
    for v in &s.volumes {
        let mut parts = v.split(':');
        let (src, dst) = (parts.next().unwrap(), parts.next().unwrap());
        if let Some(rel) = src.strip_prefix("./") {
            let host = root.join("binds").join(dst.trim_start_matches('/'));
            binds.push((deploy_dir().join(rel), host.clone()));
            mounts.push((dst.to_string(), host));
        } else {
            let host = topo.tmp.path().join("volumes").join(src);
            std::fs::create_dir_all(&host).unwrap();
            mounts.push((dst.to_string(), host));
        }
    }
    mounts.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));
    let paths = |text: &str| -> String {
        let mut t = text.to_string();
        for (dst, host) in &mounts {
            t = replace_path(&t, dst, &host.display().to_string());
        }
        t
    };
    for (from, to) in &binds {
        let files: Vec<PathBuf> = if from.is_dir() {
            std::fs::read_dir(from)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect()
        } else {
            vec![from.clone()]
        };
        for f in files {
            let dest = if from.is_dir() {
                to.join(f.file_name().unwrap())
            } else {
                to.clone()
            };
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            let text = std::fs::read_to_string(&f).unwrap();
            std::fs::write(&dest, hosts(&paths(&text), None)).unwrap();
        }
    }
    let args: Vec<String> = s
        .command
        .iter()
        .map(|a| {
            let a = hosts(&paths(a), Some(name));
            // Absolute paths inside the container that nothing mounts.
            match a.split_once("=/") {
                Some((flag, p)) if !a.contains(&*topo.tmp.path().to_string_lossy()) => {
                    format!("{flag}={}", root.join("fs").join(p).display())
                }
                _ => a,
            }
        })
        .collect();
    std::fs::create_dir_all(&root).unwrap();
    let log = std::fs::File::create(topo.tmp.path().join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(program);
    cmd.args(&args)
        .stdout(log.try_clone().unwrap())
        .stderr(Stdio::from(log));
    let proc = ChildGuard::spawn(name, &mut cmd);
    let http: u16 = s
        .command
        .iter()
        .find(|a| a.contains("http-address=") || a.contains("web.listen-address="))
        .and_then(|a| a.rsplit(':').next()?.parse().ok())
        .expect("an HTTP address");
    Some((proc, format!("{}/-/ready", topo.url(name, http))))
}

/// Poll `f` until it returns `Some` or `timeout` passes.
fn eventually<T>(
    timeout: Duration,
    what: &str,
    topo: &Topology,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n{}",
            topo.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn result(v: &Value) -> Vec<Value> {
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Services whose command runs `strata <component>`.
fn components<'a>(services: &'a BTreeMap<String, Service>, component: &str) -> Vec<&'a str> {
    services
        .iter()
        .filter(|(_, s)| {
            s.image.starts_with("strata") && s.command.first().is_some_and(|c| c == component)
        })
        .map(|(n, _)| n.as_str())
        .collect()
}

/// The value of flag `--name=` in a service's command.
fn flag<'a>(s: &'a Service, name: &str) -> Option<&'a str> {
    s.command
        .iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
}

/// The compose file has the topology of the issue: three ingesters in three zones on one
/// ring, each advertising its own service, two queriers reading the ring and the sidecar,
/// a query frontend in front of both, Grafana reading the frontend.
fn check_shape(services: &BTreeMap<String, Service>) -> (Vec<&str>, Vec<&str>) {
    let ingesters = components(services, "ingester");
    let queriers = components(services, "querier");
    assert_eq!(ingesters, ["ingester-1", "ingester-2", "ingester-3"]);
    assert_eq!(queriers, ["querier-1", "querier-2"]);
    let peers: BTreeSet<&str> = ingesters
        .iter()
        .map(|i| flag(&services[*i], "cluster.peers").expect("--cluster.peers"))
        .collect();
    assert_eq!(peers.len(), 1, "the ingesters' seed sets differ: {peers:?}");
    let zones: BTreeSet<&str> = ingesters
        .iter()
        .map(|i| flag(&services[*i], "ingester.ring.instance-zone").expect("a zone"))
        .collect();
    assert_eq!(zones.len(), 3, "{zones:?}");
    for i in &ingesters {
        let s = &services[*i];
        assert!(
            s.command
                .iter()
                .any(|a| a == "--ingester.ring.zone-awareness-enabled"),
            "{i}: zone awareness"
        );
        assert_eq!(
            flag(s, "cluster.advertise-address"),
            Some(format!("{i}:10901").as_str())
        );
        let data = s
            .volumes
            .iter()
            .find(|v| v.ends_with(":/data"))
            .expect("a data volume");
        assert_eq!(data, &format!("{i}:/data"), "{i}: its own data volume");
    }
    for q in &queriers {
        let s = &services[*q];
        let ring = flag(s, "ingester.ring.peers").expect("--ingester.ring.peers");
        for i in &ingesters {
            assert!(ring.contains(&format!("{i}:10901")), "{q}: {ring}");
        }
        assert_eq!(flag(s, "endpoint"), Some("sidecar:10901"), "{q}");
        assert_eq!(flag(s, "query.replica-label"), Some("replica"), "{q}");
    }
    // One query frontend, in front of both queriers.
    assert_eq!(components(services, "query-frontend"), ["query-frontend"]);
    let downstream = flag(&services["query-frontend"], "query-frontend.downstream-url")
        .expect("--query-frontend.downstream-url");
    for q in &queriers {
        assert!(
            downstream.contains(&format!("http://{q}:10902")),
            "{downstream}"
        );
    }
    // Grafana's data source is the frontend.
    let ds: yaml_serde::Value = yaml_serde::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/provisioning/datasources/strata.yml"))
            .unwrap(),
    )
    .unwrap();
    let url = ds["datasources"][0]["url"].as_str().unwrap();
    assert_eq!(url, "http://query-frontend:10902", "Grafana's data source");
    (ingesters, queriers)
}

/// Instant query `q` at `time` (seconds) on a Prometheus-API server; its result sorted
/// by labels, asserting success and no warnings (no store was skipped).
fn instant(url: &str, q: &str, time: f64, extra: &str) -> Vec<Value> {
    let v = get_json(&format!(
        "{url}/api/v1/query?query={}&time={time:.3}{extra}",
        encode(q)
    ));
    assert_eq!(v["status"], "success", "{q}: {v}");
    assert!(v.get("warnings").is_none(), "{q} on {url}: {v}");
    let mut r = result(&v);
    r.sort_by_key(|s| s["metric"].to_string());
    r
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn compose_topology_runs_as_local_processes() {
    let services = services();
    let local: BTreeSet<&str> = services
        .iter()
        .filter(|(_, s)| {
            s.image.starts_with("strata")
                || s.image.starts_with("prom/prometheus")
                || s.image.starts_with("prom/alertmanager")
        })
        .map(|(n, _)| n.as_str())
        .collect();
    let others: Vec<&str> = services
        .keys()
        .map(String::as_str)
        .filter(|n| !local.contains(n))
        .collect();
    // Only Grafana has no local stand-in; a new service must be added here knowingly.
    assert_eq!(others, ["grafana"]);
    let (ingesters, queriers) = check_shape(&services);
    let strata_services = services
        .values()
        .filter(|s| s.image.starts_with("strata"))
        .count();
    let mut topo = start_topology(&services);
    let querier = topo.url("querier-1", 10902);

    // The ring, as every ingester sees it: three ACTIVE members in three zones, each at
    // the address it advertises (its service's gRPC port), replication factor 3; one
    // raft leader they agree on.
    for i in &ingesters {
        let (code, body) = get_with(
            &format!("{}/ingester/ring", topo.url(i, 10902)),
            &[("Accept", "application/json")],
        )
        .unwrap();
        assert_eq!(code, 200, "{i}: {body}");
        let ring: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ring["replicationFactor"], 3, "{ring}");
        assert_eq!(ring["zoneAwareness"], true, "{ring}");
        let members = ring["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{i}: {ring}");
        let zones: BTreeSet<&str> = members
            .iter()
            .map(|m| m["zone"].as_str().unwrap())
            .collect();
        assert_eq!(zones.len(), 3, "{i}: {ring}");
        for m in members {
            assert_eq!(m["status"], "ACTIVE", "{i}: {ring}");
            let id = m["id"].as_str().unwrap();
            let grpc = topo.ports[&(id.to_string(), 10901)];
            assert_eq!(m["address"], format!("127.0.0.1:{grpc}"), "{i}: {ring}");
        }
        // The page for a person.
        let (code, html) = get(&format!("{}/ingester/ring", topo.url(i, 10902))).unwrap();
        assert_eq!(code, 200, "{html}");
        assert!(html.matches("ACTIVE").count() >= 3, "{html}");
    }
    let leaders: BTreeSet<String> = ingesters
        .iter()
        .map(|i| {
            eventually(Duration::from_secs(30), "a raft leader", &topo, || {
                let r = get_json(&format!("{}/cluster/raft", topo.url(i, 10902)));
                r["leader"]["id"].as_str().map(str::to_string)
            })
        })
        .collect();
    assert_eq!(leaders.len(), 1, "{leaders:?}");

    // The HA pair remote-writes through two of the ingesters, which replicate every
    // series to its three owners: deduplicated, one series per target and no replica
    // label (and no doubling by replication); without dedup both replicas show.
    let strata_targets = strata_services;
    let query = |q: &str, extra: &str| {
        get_json(&format!(
            "{querier}/api/v1/query?query={}{extra}",
            encode(q)
        ))
    };
    let up = eventually(
        Duration::from_secs(90),
        "both replicas' `up` of every Strata component via the ingesters",
        &topo,
        || {
            let all = result(&query("up{job=\"strata\"}", "&dedup=false"));
            let replicas: BTreeSet<String> = all
                .iter()
                .filter_map(|s| s["metric"]["replica"].as_str().map(str::to_string))
                .collect();
            (all.len() == 2 * strata_targets && replicas.len() == 2).then_some(all)
        },
    );
    assert!(
        up.iter().all(|s| s["metric"]["cluster"] == "demo"),
        "{up:?}"
    );
    let t = now_s();
    let dedup = instant(&querier, "up{job=\"strata\"}", t, "");
    assert_eq!(dedup.len(), strata_targets, "{dedup:?}");
    for s in &dedup {
        assert!(s["metric"].get("replica").is_none(), "{s}");
        // Every Strata component serves /metrics that Prometheus can scrape.
        assert_eq!(s["value"][1], "1", "{s}");
    }

    // The third Prometheus is read through its sidecar (it does not remote-write).
    eventually(
        Duration::from_secs(90),
        "prometheus-c's `up` via the sidecar",
        &topo,
        || {
            let c = result(&query("up{cluster=\"demo-c\"}", ""));
            (c.len() >= 2).then_some(())
        },
    );

    // Both queriers answer the same: the same stores found (the ring, the sidecar, the
    // bucket), the same series and values, deduplicated or not, at a time a few
    // seconds back (remote write has delivered up to it).
    let same = || {
        let t = now_s() - 10.0;
        for q in [
            "up",
            "count by (job, replica) (up)",
            "sum by (instance) (strata_ring_members)",
        ] {
            for extra in ["", "&dedup=false"] {
                let answers: Vec<Vec<Value>> = queriers
                    .iter()
                    .map(|name| instant(&topo.url(name, 10902), q, t, extra))
                    .collect();
                if answers[0].is_empty() || answers[0] != answers[1] {
                    return Err(format!("{q}{extra}: {:?} vs {:?}", answers[0], answers[1]));
                }
            }
        }
        Ok(())
    };
    eventually(
        Duration::from_secs(30),
        "both queriers answer the same",
        &topo,
        || same().ok(),
    );
    // Once they agree they keep agreeing (not a passing coincidence).
    if let Err(e) = same() {
        panic!("the queriers differ: {e}");
    }

    // The query frontend answers range queries as the querier does: split (10-minute
    // parts here) and sharded four ways, over a window remote write has delivered.
    let frontend = topo.url("query-frontend", 10902);
    let range = |base: &str, q: &str, end: f64| -> Value {
        get_json(&format!(
            "{base}/api/v1/query_range?query={}&start={:.3}&end={end:.3}&step=15&stats=all",
            encode(q),
            end - 1200.0,
        ))
    };
    let sharded = "count by (job, instance) (up)";
    let (via_frontend, direct) = eventually(
        Duration::from_secs(30),
        "the frontend's range answer equals the querier's",
        &topo,
        || {
            // Up to a few seconds back (remote write has delivered that far); again
            // if a sample arrived between the two answers.
            let end = now_s() - 5.0;
            let a = range(&frontend, sharded, end);
            let b = range(&querier, sharded, end);
            (a["status"] == "success"
                && !result(&b).is_empty()
                && a["data"]["result"] == b["data"]["result"])
                .then_some((a, b))
        },
    );
    assert!(result(&direct).len() >= strata_targets, "{direct}");
    let fs = &via_frontend["data"]["stats"]["frontend"];
    assert_eq!(fs["shards"], 4, "{via_frontend}");
    assert!(fs["parts"].as_u64().unwrap() >= 1, "{via_frontend}");

    // The ingester the pair writes through forwards to the other owners.
    let forwarded = |name: &str| -> f64 {
        let (_, body) = get(&format!("{}/metrics", topo.url(name, 10902))).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix("strata_distributor_forwarded_samples_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        forwarded("ingester-1") > 0.0,
        "ingester-1 forwarded nothing"
    );

    // The alert rules load in the Prometheus servers and evaluate without errors, and
    // every metric they name is served by some Strata component.
    let prom_a = topo.url("prometheus-a", 9090);
    let rules = eventually(Duration::from_secs(60), "rules evaluated", &topo, || {
        let r = get_json(&format!("{prom_a}/api/v1/rules"));
        let rules: Vec<Value> = r["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (!rules.is_empty()
            && rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            }))
        .then_some(rules)
    });
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    // The cluster's alerts are loaded, and a healthy cluster fires none of them.
    let cluster_alerts: Vec<&Value> = rules
        .iter()
        .filter(|r| {
            r["name"].as_str().is_some_and(|n| {
                [
                    "StrataDistributorQuorumFailures",
                    "StrataRingMembersUnhealthy",
                    "StrataNoRaftLeader",
                ]
                .contains(&n)
            })
        })
        .collect();
    assert_eq!(cluster_alerts.len(), 3, "{rules:?}");
    for r in cluster_alerts {
        assert_ne!(r["state"], "firing", "{r}");
    }
    let mut exposition = String::new();
    for (name, s) in &services {
        if s.image.starts_with("strata") {
            let (code, body) = get(&format!("{}/metrics", topo.url(name, 10902))).unwrap();
            assert_eq!(code, 200, "{name}");
            exposition.push_str(&body);
        }
    }
    let served = |what: &str, text: &str| {
        let named: BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("strata_"))
            .collect();
        assert!(named.len() >= 6, "{what}: {named:?}");
        for m in named {
            let family = m.strip_suffix("_bucket").unwrap_or(m);
            assert!(
                exposition.contains(&format!("# TYPE {family} ")),
                "{what} names {m}, which no Strata component serves"
            );
        }
    };
    let rules_text = std::fs::read_to_string(deploy_dir().join("rules/strata.yml")).unwrap();
    served("the alert rules", &rules_text);

    // The dashboard: every panel's query is answered through the frontend, Grafana's
    // data source (`$__rate_interval` stood in for), and names served metrics.
    let dash_text =
        std::fs::read_to_string(deploy_dir().join("grafana/dashboards/strata-overview.json"))
            .unwrap();
    let dash: Value = serde_json::from_str(&dash_text).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for e in &exprs {
        let q = e.replace("$__rate_interval", "1m");
        let (code, body) = get(&format!("{frontend}/api/v1/query?query={}", encode(&q))).unwrap();
        assert_eq!(code, 200, "dashboard query {q}: {body}");
    }
    served("the dashboard", &exprs.join("\n"));
    // The cluster panels show the cluster: three ACTIVE members, one raft leader.
    let active = eventually(
        Duration::from_secs(60),
        "the ring members' metric via the querier",
        &topo,
        || {
            let r = result(&query("max by (state) (strata_ring_members)", ""));
            r.iter()
                .find(|s| s["metric"]["state"] == "ACTIVE")
                .map(|s| s["value"][1].clone())
        },
    );
    assert_eq!(active, "3");
    let leaders = result(&query("sum(strata_raft_is_leader)", ""));
    assert_eq!(leaders[0]["value"][1], "1", "{leaders:?}");

    // No component died along the way.
    topo.assert_alive();
}
