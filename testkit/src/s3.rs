//! A real S3 server for tests: `s3s-fs`, which serves each subdirectory of its root as
//! a bucket. Install it once with
//! `cargo install s3s-fs@0.14.1 --features binary --locked`.
//!
//! ```no_run
//! let s3 = strata_testkit::s3::S3Server::start();
//! let yaml = s3.objstore_yaml("blocks"); // type: S3, insecure: true, path style
//! # drop(yaml);
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{find_program, free_port, ChildGuard};

/// Access key every [`S3Server`] accepts.
pub const ACCESS_KEY: &str = "strata-test-access";
/// Secret key every [`S3Server`] accepts.
pub const SECRET_KEY: &str = "strata-test-secret";
/// The bucket [`S3Server::start`] creates.
pub const DEFAULT_BUCKET: &str = "strata";

const BINARY: &str = "s3s-fs";
const INSTALL: &str = "cargo install s3s-fs@0.14.1 --features binary --locked";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `s3s-fs` on 127.0.0.1 with its data in a temporary directory. Killed on
/// drop. [`S3Server::stop`] and [`S3Server::restart`] simulate an outage: the server
/// comes back on the same port with the same data.
pub struct S3Server {
    binary: PathBuf,
    port: u16,
    /// Holds `data/` (the served root) and `s3s-fs.log`.
    dir: tempfile::TempDir,
    child: Option<ChildGuard>,
}

impl S3Server {
    /// Starts a server with bucket [`DEFAULT_BUCKET`] and waits until it accepts
    /// connections. Panics if `s3s-fs` is not installed: tests that need S3 must not
    /// pass silently without it.
    pub fn start() -> Self {
        let hint = if std::env::var_os("CI").is_some() {
            format!("CI must install this real S3 server before the tests run: {INSTALL}")
        } else {
            format!("the S3 tests need this real S3 server: {INSTALL}")
        };
        let binary = find_program(BINARY, &hint);
        let dir = tempfile::Builder::new()
            .prefix("strata-s3-")
            .tempdir()
            .expect("create a temporary directory for s3s-fs");
        std::fs::create_dir(dir.path().join("data")).expect("create the s3s-fs data directory");
        let mut server = Self {
            binary,
            port: 0,
            dir,
            child: None,
        };
        server.create_bucket(DEFAULT_BUCKET);
        // A free port can be taken between probing and binding; try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("{BINARY} did not start: {last_error}");
    }

    /// `host:port`, the form Thanos's S3 `endpoint` takes.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory served as the S3 root; bucket `b`'s object `k` is file `b/k` in it.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Creates a bucket (a subdirectory of the root); existing buckets are kept.
    pub fn create_bucket(&self, bucket: &str) {
        let path = self.data_dir().join(bucket);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create bucket directory {}: {e}", path.display()));
    }

    /// A Thanos objstore config for `bucket` on this server (the bucket is created).
    pub fn objstore_yaml(&self, bucket: &str) -> String {
        self.create_bucket(bucket);
        format!(
            "type: S3\nconfig:\n  bucket: {bucket}\n  endpoint: {}\n  region: us-east-1\n  access_key: {ACCESS_KEY}\n  secret_key: {SECRET_KEY}\n  insecure: true\n",
            self.endpoint()
        )
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (and waits for it to exit); its data stays. Calling it twice is
    /// harmless.
    pub fn stop(&mut self) {
        // Dropping the guard kills and reaps the process.
        self.child = None;
    }

    /// Stops the server if it runs, then starts it again on the same port and data
    /// directory and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("{BINARY} did not restart on port {}: {e}", self.port);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open {}: {e}", self.log_path().display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = ChildGuard::spawn(
            BINARY,
            Command::new(&self.binary)
                .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(self.data_dir())
                .stdout(log)
                .stderr(Stdio::from(log_err)),
        );
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if let Err(e) = child.alive() {
                return Err(format!("{e}; log:\n{}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not accepting connections on {addr} after {READY_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Before the fields drop: the server must be gone before its directory is.
        self.stop();
    }
}
