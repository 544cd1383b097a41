//! `--http.config` (Prometheus's web configuration file) on the real binary: HTTPS with a
//! certificate from a test CA (made with `openssl`), client certificates required,
//! basic auth against a bcrypt hash, configured response headers. The client is `curl`,
//! so the handshakes are a real TLS stack's, not ours talking to ourselves.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_testkit::procs::free_port;
use strata_testkit::strata::StrataProc;
use strata_testkit::tls::certificates;

/// `curl` against the server: (exit code, HTTP status or 0, response head and body).
fn curl(dir: &Path, url: &str, extra: &[&str]) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .current_dir(dir)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (out.status.code().unwrap_or(-1), code, text)
}

#[test]
fn https_client_certificates_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let hash = bcrypt::hash("s3cret", 6).unwrap();
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
             basic_auth_users:\n  alice: '{hash}'\n\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let args = vec![
        "all".to_string(),
        format!("--data-dir={}", d.join("data").display()),
        format!("--http.config={}", d.join("web.yml").display()),
    ];
    let mut s = StrataProc::spawn(&d.join("data"), &args, port, free_port());
    let base = format!("https://127.0.0.1:{port}");
    let good = [
        "--cacert",
        "ca.crt",
        "--cert",
        "client.crt",
        "--key",
        "client.key",
    ];
    let auth = ["-u", "alice:s3cret"];
    let with = |extra: &[&str]| -> Vec<String> {
        good.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    // ready over HTTPS with credentials
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = with(&auth);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        if curl(d, &format!("{base}/-/ready"), &a).1 == 200 {
            break;
        }
        s.proc
            .alive()
            .unwrap_or_else(|e| panic!("strata exited: {e}\n{}", s.log()));
        assert!(
            Instant::now() < deadline,
            "not ready over HTTPS:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let run = |extra: &[&str]| {
        let a = with(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        curl(d, &format!("{base}/api/v1/query?query=1"), &a)
    };
    // the right certificate and password: the answer, with the configured header
    let (_, code, text) = run(&auth);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains(r#""status":"success""#), "{text}");
    assert!(
        text.to_lowercase().contains("x-frame-options: deny"),
        "{text}"
    );
    // no or wrong credentials: 401 asking for Basic auth
    for extra in [&[][..], &["-u", "alice:wrong"], &["-u", "bob:s3cret"]] {
        let (_, code, text) = run(extra);
        assert_eq!(code, 401, "{extra:?}: {text}");
        assert!(
            text.to_lowercase().contains("www-authenticate: basic"),
            "{text}"
        );
    }
    // no client certificate: the handshake is refused, nothing is answered
    let (exit, code, text) = curl(
        d,
        &format!("{base}/api/v1/query?query=1"),
        &["--cacert", "ca.crt", "-u", "alice:s3cret"],
    );
    assert!(
        exit != 0 && code == 0,
        "answered without a client certificate: {text}"
    );
    // a client that does not trust the CA refuses the server
    let (exit, _, _) = curl(
        d,
        &format!("{base}/-/healthy"),
        &["--cert", "client.crt", "--key", "client.key"],
    );
    assert_eq!(exit, 60, "curl should fail certificate verification");
    // plain HTTP on the TLS port gets no answer
    let (_, code, _) = curl(d, &format!("http://127.0.0.1:{port}/-/healthy"), &[]);
    assert_ne!(code, 200);
}

#[test]
fn a_broken_web_config_stops_start_up_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  alice: not-a-hash\n").unwrap();
    let out = Command::new(strata_testkit::procs::strata_bin())
        .args([
            "all",
            &format!("--data-dir={}", dir.path().join("d").display()),
        ])
        .arg(format!("--http.config={}", web.display()))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--http.config") && err.contains("not a bcrypt hash"),
        "{err}"
    );
}
