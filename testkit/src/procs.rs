//! Locating and running the real programs: the `strata` binary, `promtool`, `prometheus`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `strata` binary built in this workspace's target directory. The test command
/// builds it before running the tests.
pub fn strata_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STRATA_BIN") {
        return PathBuf::from(p);
    }
    // tests run from target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("strata");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p strata` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// Find a program on PATH, or fail the test saying how to install it.
pub fn find_program(name: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    let home_cargo = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cargo/bin")
        .join(name);
    if home_cargo.is_file() {
        return home_cargo;
    }
    panic!("`{name}` not found on PATH; {install_hint} (scripts/test installs it)");
}

pub fn promtool() -> PathBuf {
    find_program("promtool", "install Debian's `prometheus` package")
}

pub fn prometheus_bin() -> PathBuf {
    find_program("prometheus", "install Debian's `prometheus` package")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run a command to completion, capturing output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Run a command and return its stdout, failing the test (with stderr) on a non-zero exit.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// `strata …` as a command.
pub fn strata() -> Command {
    Command::new(strata_bin())
}

/// A child process killed when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        ChildGuard {
            child,
            name: name.into(),
        }
    }

    /// `Err` once the process has exited.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited: {status}", self.name)),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Prometheus server on a loopback port.
pub struct Prometheus {
    pub proc: ChildGuard,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl Prometheus {
    /// Start `prometheus` with `config` (YAML text) on `data_dir`, plus `extra` flags, and
    /// wait until `/-/ready` answers.
    pub fn start(data_dir: &Path, config: &str, extra: &[&str]) -> Prometheus {
        // A port found free can be taken by a concurrent test before Prometheus binds it:
        // on "address already in use", try again on another port.
        for _ in 0..5 {
            if let Some(p) = Self::try_start_on(data_dir, config, extra, free_port()) {
                return p;
            }
        }
        Self::start_on(data_dir, config, extra, free_port())
    }

    fn try_start_on(
        data_dir: &Path,
        config: &str,
        extra: &[&str],
        port: u16,
    ) -> Option<Prometheus> {
        let logf = data_dir.join("prometheus.log");
        let r = std::panic::catch_unwind(|| Self::start_on(data_dir, config, extra, port));
        match r {
            Ok(p) => Some(p),
            Err(e) => {
                let log = std::fs::read_to_string(&logf).unwrap_or_default();
                if log.contains("address already in use") {
                    None
                } else {
                    std::panic::resume_unwind(e)
                }
            }
        }
    }

    /// As [`Prometheus::start`] on a given port; `{port}` in `config` is replaced by it
    /// (for a Prometheus that scrapes itself).
    pub fn start_on(data_dir: &Path, config: &str, extra: &[&str], port: u16) -> Prometheus {
        std::fs::create_dir_all(data_dir).unwrap();
        let cfg = data_dir.join("prometheus-test.yml");
        std::fs::write(&cfg, config.replace("{port}", &port.to_string())).unwrap();
        let log = std::fs::File::create(data_dir.join("prometheus.log")).unwrap();
        let mut cmd = Command::new(prometheus_bin());
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data_dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=100y")
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut proc = ChildGuard::spawn("prometheus", &mut cmd);
        let url = format!("http://127.0.0.1:{port}/-/ready");
        crate::http::wait_ready(&url, Duration::from_secs(60), "prometheus", || proc.alive());
        Prometheus {
            proc,
            port,
            data_dir: data_dir.into(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait for a clean exit (Prometheus flushes remote-write queues then).
    pub fn stop(&mut self) {
        let pid = self.proc.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.proc.child.wait();
    }

    /// `/api/v1/query` at `time` (ms); returns the `data.result` array.
    pub fn query(&self, expr: &str, time_ms: i64) -> serde_json::Value {
        let url = format!(
            "{}/api/v1/query?query={}&time={}.{:03}",
            self.url(),
            crate::http::encode(expr),
            time_ms.div_euclid(1000),
            time_ms.rem_euclid(1000)
        );
        let v = crate::http::get_json(&url);
        assert_eq!(v["status"], "success", "{url}: {v}");
        v["data"]["result"].clone()
    }
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// `promtool tsdb dump` of a directory of blocks. promtool 2.42 opens the directory as a
/// database and wants a `wal/` there, so the blocks are dumped from a scratch copy.
pub fn promtool_dump(blocks_dir: &Path) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    copy_dir(blocks_dir, &db);
    std::fs::create_dir_all(db.join("wal")).unwrap();
    run_ok(Command::new(promtool()).args(["tsdb", "dump"]).arg(&db))
}
