//! The README's tour, pasted: a real Prometheus with the README's `remote_write` block
//! writes to `strata all`, then every shell block of "A short tour" runs as written
//! (only `localhost:9009` becomes the test's port; `docker-compose` needs an engine
//! this machine lacks and is left out), each one line by line under `bash -e`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_testkit::http::{encode, get_json};
use strata_testkit::procs::{strata_bin, Prometheus};
use strata_testkit::strata::StrataProc;

/// The fenced blocks of `lang` in the README section titled `section`.
fn blocks(readme: &str, section: &str, lang: &str) -> Vec<String> {
    let start = readme.find(section).expect("section");
    let rest = &readme[start + section.len()..];
    let rest = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = rest[at..].find(&fence) {
        let body = at + i + fence.len();
        let end = body + rest[body..].find("```").expect("closing fence");
        out.push(rest[body..end].to_string());
        at = end + 3;
    }
    out
}

#[test]
fn readme_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let strata = StrataProc::start_all(&work.join("data"), &[]);
    let here = format!("127.0.0.1:{}", strata.http_port);
    let subst = |s: &str| s.replace("localhost:9009", &here);

    // Prometheus with the README's remote_write block, scraping itself
    let yaml: Vec<String> = blocks(&readme, "## A short tour", "yaml")
        .into_iter()
        .filter(|b| b.contains("remote_write"))
        .collect();
    assert_eq!(yaml.len(), 1, "one prometheus.yml block");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{{port}}']\n{}",
        subst(&yaml[0])
    );
    let _prom = Prometheus::start(&work.join("prom"), &config, &[]);
    // the README's query needs two scrapes of Prometheus's own metrics in Strata
    let probe = format!(
        "{}/api/v1/query?query={}",
        strata.url(),
        encode("sum(rate(prometheus_http_requests_total[5m]))")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_json(&probe)["data"]["result"]
        .as_array()
        .is_none_or(|r| r.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "no remote-written samples in Strata"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let bin_dir = strata_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = String::new();
    let scripts = blocks(&readme, "## A short tour", "sh");
    assert!(scripts.len() >= 3, "{scripts:?}");
    for script in scripts {
        let script: String = subst(&script)
            .lines()
            .filter(|l| !l.trim_start().starts_with("docker-compose"))
            .collect::<Vec<_>>()
            .join("\n");
        let out = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &script])
            .current_dir(work)
            .env("PATH", &path)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "README block failed ({}):\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        outputs.push_str(&stdout);
    }
    // what each command should have shown
    let expect = [
        // loadgen's report, the cardinality list, a query answer with a value
        "\"status\":\"success\"",
        "\"resultType\":\"vector\",\"result\":[{",
        "\"resultType\":\"matrix\"",
        // dump of the backfilled block, bucket listing, the marker written
        "{__name__=\"http_requests_total\", job=\"api\"} 1 1700000000000",
        "TENANT",
    ];
    for e in expect {
        assert!(outputs.contains(e), "missing {e:?} in:\n{outputs}");
    }
    let marked = std::fs::read_dir(work.join("data/bucket/anonymous"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|b| b.path().join("no-compact-mark.json").exists());
    assert!(marked, "no block carries the no-compact mark");
}
