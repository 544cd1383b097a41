//! `deploy/`: the compose file is valid, its alert rules load and name real metrics,
//! and its topology runs: every Strata and Prometheus service of
//! `deploy/docker-compose.yml` is started as a local process with the file's own
//! commands and config files (service names, ports and mounted paths rewritten to
//! loopback ports and temporary directories), and the querier then answers for the HA
//! pair (deduplicated) and for the sidecar's Prometheus.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::http::{encode, get, get_json};
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
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    let strings = |v: Option<&serde_yaml::Value>| -> Vec<String> {
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

    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.procs {
            let log = std::fs::read_to_string(self.tmp.path().join(format!("{name}.log")))
                .unwrap_or_default();
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

/// Start every local service in dependency order; `Err(log)` when one exits before it
/// is ready.
fn try_start_topology(services: &BTreeMap<String, Service>) -> Result<Topology, String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut ports = BTreeMap::new();
    for (name, s) in services {
        for p in listen_ports(s) {
            ports.insert((name.clone(), p), free_port());
        }
    }
    let hosts = |text: &str, own: Option<&str>| -> String {
        let mut t = text.to_string();
        for ((svc, p), local) in &ports {
            t = t.replace(&format!("{svc}:{p}"), &format!("127.0.0.1:{local}"));
            if own == Some(svc.as_str()) {
                t = t.replace(&format!("0.0.0.0:{p}"), &format!("127.0.0.1:{local}"));
            }
        }
        t
    };
    // Start in dependency order.
    let mut order: Vec<&String> = Vec::new();
    let mut placed: BTreeSet<&String> = BTreeSet::new();
    while order.len() < services.len() {
        let before = order.len();
        for (name, s) in services {
            if !placed.contains(name) && s.depends_on.iter().all(|d| placed.iter().any(|p| *p == d))
            {
                order.push(name);
                placed.insert(name);
            }
        }
        assert!(order.len() > before, "depends_on has a cycle");
    }
    let mut topo = Topology {
        procs: Vec::new(),
        ports: ports.clone(),
        tmp,
    };
    for name in order {
        let s = &services[name];
        let program = if s.image.starts_with("strata") {
            strata_bin()
        } else if s.image.starts_with("prom/prometheus") {
            prometheus_bin()
        } else {
            continue; // e.g. grafana: no local binary (the test asserts which).
        };
        let root = topo.tmp.path().join(name);
        // Mounts: named volumes shared between services, bind mounts copied with
        // their text rewritten. Longest container path first.
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
        let mut proc = ChildGuard::spawn(name, &mut cmd);
        let http: u16 = s
            .command
            .iter()
            .find(|a| a.contains("http-address=") || a.contains("web.listen-address="))
            .and_then(|a| a.rsplit(':').next()?.parse().ok())
            .expect("an HTTP address");
        let ready = format!("{}/-/ready", topo.url(name, http));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(get(&ready), Ok((200, _))) {
            if proc.alive().is_err() {
                let log = std::fs::read_to_string(topo.tmp.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                return Err(format!("{name} exited:\n{log}"));
            }
            assert!(Instant::now() < deadline, "{name} not ready at {ready}");
            std::thread::sleep(Duration::from_millis(50));
        }
        topo.procs.push((name.clone(), proc));
    }
    Ok(topo)
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

#[test]
fn compose_topology_runs_as_local_processes() {
    let services = services();
    let local: BTreeSet<&str> = services
        .iter()
        .filter(|(_, s)| s.image.starts_with("strata") || s.image.starts_with("prom/prometheus"))
        .map(|(n, _)| n.as_str())
        .collect();
    let others: Vec<&str> = services
        .keys()
        .map(String::as_str)
        .filter(|n| !local.contains(n))
        .collect();
    // Only Grafana has no local stand-in; a new service must be added here knowingly.
    assert_eq!(others, ["grafana"]);
    let topo = start_topology(&services);
    let querier = topo.url("querier", 10902);
    let query = |q: &str, extra: &str| {
        get_json(&format!(
            "{querier}/api/v1/query?query={}{extra}",
            encode(q)
        ))
    };

    // The HA pair remote-writes through the ingester: deduplicated, one series per
    // target and no replica label; without dedup both replicas show.
    let strata_targets = 4;
    let up = eventually(
        Duration::from_secs(90),
        "both replicas' `up` via the ingester",
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
    let dedup = result(&query("up{job=\"strata\"}", ""));
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

    // The dashboard: every panel's query is answered by the querier (Grafana's
    // `$__rate_interval` stood in for) and names served metrics.
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
        let (code, body) = get(&format!("{querier}/api/v1/query?query={}", encode(&q))).unwrap();
        assert_eq!(code, 200, "dashboard query {q}: {body}");
    }
    served("the dashboard", &exprs.join("\n"));
}
