//! Running the real `strata` binary as a server, and talking remote write to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

use crate::http::{get, post};
use crate::procs::{free_port, strata_bin, ChildGuard};

/// A `strata <component>` process on loopback ports, killed on drop.
pub struct StrataProc {
    pub proc: ChildGuard,
    pub http_port: u16,
    pub grpc_port: u16,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    log: PathBuf,
}

impl StrataProc {
    /// `strata all --data-dir DIR` plus `extra` flags; waits for `/-/ready`.
    pub fn start_all(data_dir: &Path, extra: &[&str]) -> StrataProc {
        let mut args = vec![
            "all".to_string(),
            format!("--data-dir={}", data_dir.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start(data_dir, args, free_port(), free_port())
    }

    /// `strata <args…>` with `--http-address` and `--grpc-address` on free ports; waits
    /// for `/-/ready`.
    pub fn start_with_grpc(data_dir: &Path, args: &[&str]) -> StrataProc {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::start(data_dir, args, free_port(), free_port())
    }

    /// `strata <args…>` with `--http-address` only (components without gRPC).
    pub fn start_http_only(data_dir: &Path, args: &[&str]) -> StrataProc {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::start(data_dir, args, free_port(), 0)
    }

    fn start(data_dir: &Path, args: Vec<String>, http_port: u16, grpc_port: u16) -> StrataProc {
        // A port found free a moment ago can be taken by a concurrent test before the
        // process binds it: on "address in use", start again on fresh ports.
        let (mut http_port, mut grpc_port) = (http_port, grpc_port);
        for attempt in 0.. {
            match Self::try_start(data_dir, &args, http_port, grpc_port) {
                Ok(p) => return p,
                Err(log) if attempt < 5 && log.contains("in use") => {
                    http_port = free_port();
                    if grpc_port != 0 {
                        grpc_port = free_port();
                    }
                }
                Err(log) => panic!("strata exited before it was ready:\n{log}"),
            }
        }
        unreachable!()
    }

    fn try_start(
        data_dir: &Path,
        args: &[String],
        http_port: u16,
        grpc_port: u16,
    ) -> Result<StrataProc, String> {
        let mut p = Self::spawn(data_dir, args, http_port, grpc_port);
        p.wait_ready()?;
        Ok(p)
    }

    /// `strata <args…>` on the given ports, not waiting for it: cluster members are
    /// ready only once a majority of them runs, so they start together.
    pub fn spawn(data_dir: &Path, args: &[String], http_port: u16, grpc_port: u16) -> StrataProc {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.join(format!("strata-{http_port}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(strata_bin());
        cmd.args(args)
            .arg(format!("--http-address=127.0.0.1:{http_port}"));
        if grpc_port != 0 {
            cmd.arg(format!("--grpc-address=127.0.0.1:{grpc_port}"));
        }
        cmd.stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f));
        let proc = ChildGuard::spawn("strata", &mut cmd);
        StrataProc {
            proc,
            http_port,
            grpc_port,
            data_dir: data_dir.into(),
            args: args.to_vec(),
            log,
        }
    }

    /// Poll `/-/ready`; `Err(log)` if the process exits first.
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/-/ready", self.url());
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((200, _)) = crate::http::get(&url) {
                return Ok(());
            }
            if self.proc.alive().is_err() {
                return Err(std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "strata not ready at {url} after 120 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start again with the same flags and ports, without waiting for readiness.
    pub fn respawn(&mut self) {
        self.proc.kill();
        let me = Self::spawn(&self.data_dir, &self.args, self.http_port, self.grpc_port);
        drop(std::mem::replace(self, me));
    }

    /// SIGTERM, then wait for the process to exit (up to `timeout`); its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.proc.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.proc.child.try_wait() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "strata did not stop within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP / SIGCONT: a frozen process holds its ports but answers nothing (a
    /// partition, as its peers see it).
    pub fn freeze(&self, frozen: bool) {
        let pid = self.proc.child.id().to_string();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let _ = Command::new("kill").args([sig, &pid]).status();
    }

    /// Start again with the same flags and ports (after `kill`).
    pub fn restart(&mut self) {
        self.proc.kill();
        let me = Self::start(
            &self.data_dir,
            self.args.clone(),
            self.http_port,
            self.grpc_port,
        );
        // the old process is already dead: dropping its guard only reaps it again
        drop(std::mem::replace(self, me));
    }

    /// The process id (for signals sent from another thread).
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        self.proc.kill();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POST a remote-write request; returns (status, body).
    pub fn push(&self, tenant: Option<&str>, req: &WriteRequest) -> (u16, String) {
        self.push_raw(tenant, &strata_proto::encode_write_request(req))
    }

    pub fn push_raw(&self, tenant: Option<&str>, body: &[u8]) -> (u16, String) {
        let mut h = vec![
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ];
        if let Some(t) = tenant {
            h.push(("X-Scope-OrgID", t));
        }
        post(&format!("{}/api/v1/push", self.url()), &h, body)
            .unwrap_or_else(|e| panic!("push: {e}"))
    }

    /// `POST /ingester/flush`.
    pub fn flush(&self) -> (u16, String) {
        post(&format!("{}/ingester/flush", self.url()), &[], b"")
            .unwrap_or_else(|e| panic!("flush: {e}"))
    }

    /// The value of an unlabelled metric (or the sum over its series) on `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = get(&format!("{}/metrics", self.url())).unwrap();
        metric_sum(&body, name)
    }
}

/// Sum of every sample of `name` in a text exposition (`name` or `name{...}`).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let n = series.split('{').next()?;
            (n == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A series for a write request.
pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(t, v)| Sample {
                value: v,
                timestamp: t,
            })
            .collect(),
        ..Default::default()
    }
}

pub fn write_request(ts: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries: ts,
        ..Default::default()
    }
}

/// A filesystem bucket at `dir/bucket` and its `--objstore.config-file` at
/// `dir/bucket.yml`: (bucket directory, config file).
pub fn filesystem_bucket(dir: &Path) -> (PathBuf, PathBuf) {
    let bucket = dir.join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let cfg = dir.join("bucket.yml");
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        bucket.display()
    );
    std::fs::write(&cfg, yaml).unwrap();
    (bucket, cfg)
}
