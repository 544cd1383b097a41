//! A real Alertmanager (Debian's `prometheus-alertmanager`) on a loopback port, and a
//! webhook receiver that records the notifications it sends (firing and resolved).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::procs::{find_program, free_port, ChildGuard};

/// Alertmanager, killed on drop. Its route sends every group to `webhook` (when given)
/// with 1 s group wait and interval, so notifications follow quickly.
pub struct Alertmanager {
    pub proc: ChildGuard,
    pub port: u16,
    pub dir: PathBuf,
    webhook: Option<String>,
}

impl Alertmanager {
    pub fn start(dir: &Path, webhook: Option<&str>) -> Alertmanager {
        Self::start_on(dir, webhook, free_port())
    }

    /// Start on `port` (again, after [`Alertmanager::stop`]); waits for `/-/ready`.
    pub fn start_on(dir: &Path, webhook: Option<&str>, port: u16) -> Alertmanager {
        std::fs::create_dir_all(dir).unwrap();
        let receiver = match webhook {
            Some(url) => format!(
                "receivers:\n  - name: hook\n    webhook_configs:\n      - url: {url}\n        send_resolved: true\n"
            ),
            None => "receivers:\n  - name: hook\n".to_string(),
        };
        let cfg = format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n{receiver}"
        );
        let cfg_path = dir.join("alertmanager.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("alertmanager.log"))
            .unwrap();
        let bin = find_program(
            "prometheus-alertmanager",
            "apt-get install prometheus-alertmanager",
        );
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut proc = ChildGuard::spawn("alertmanager", &mut cmd);
        crate::http::wait_ready(
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(60),
            "alertmanager",
            || proc.alive(),
        );
        Alertmanager {
            proc,
            port,
            dir: dir.into(),
            webhook: webhook.map(str::to_string),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /api/v2/alerts`: the alerts it holds that have not ended.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let v = crate::http::get_json(&format!("{}/api/v2/alerts", self.url()));
        v.as_array().cloned().unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Start again on the same port and storage.
    pub fn restart(&mut self) {
        self.proc.kill();
        let me = Self::start_on(&self.dir, self.webhook.as_deref(), self.port);
        drop(std::mem::replace(self, me));
    }
}

/// An HTTP server that keeps the JSON body of every POST (Alertmanager's webhook
/// notifications) until the process ends.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let received: Arc<Mutex<Vec<serde_json::Value>>> = Default::default();
        let r = received.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut rd = BufReader::new(s.try_clone().unwrap());
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        if rd.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            line.clear();
                            if rd.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let t = line.trim_end();
                            if t.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = t.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    len = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; len];
                        if rd.read_exact(&mut body).is_err() {
                            return;
                        }
                        if let Ok(v) = serde_json::from_slice(&body) {
                            r.lock().unwrap().push(v);
                        }
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                    }
                });
            }
        });
        Webhook { url, received }
    }

    /// Every notification so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }
}
