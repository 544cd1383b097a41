//! `--http.config` (Prometheus's web configuration file) on the real binary: HTTPS with a
//! certificate from a test CA (made with `openssl`), client certificates required,
//! basic auth against a bcrypt hash, configured response headers. The client is `curl`,
//! so the handshakes are a real TLS stack's, not ours talking to ourselves.
//! `--auth.tenant-from-basic-auth-user` makes each basic-auth user its own tenant.

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

/// `strata all` flags with `d/data` and `--http.config d/web.yml`, then `extra`.
fn all_with_web_config(d: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "all".to_string(),
        format!("--data-dir={}", d.join("data").display()),
        format!("--http.config={}", d.join("web.yml").display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
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
    let args = all_with_web_config(d, &[]);
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
    let err = start_up_error(dir.path(), &format!("--http.config={}", web.display()));
    assert!(
        err.contains("--http.config") && err.contains("not a bcrypt hash"),
        "{err}"
    );
    // the tenant of a basic-auth user, without basic-auth users to take it from
    let err = start_up_error(dir.path(), "--auth.tenant-from-basic-auth-user");
    assert!(
        err.contains("--auth.tenant-from-basic-auth-user: needs basic_auth_users in --http.config"),
        "{err}"
    );
}

/// What `strata all` with `flag` says on stderr when it stops at start-up (exit 1).
fn start_up_error(dir: &Path, flag: &str) -> String {
    let out = Command::new(strata_testkit::procs::strata_bin())
        .args([
            "all",
            &format!("--data-dir={}", dir.join("d").display()),
            flag,
        ])
        .arg(format!("--http-address=127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--auth.tenant-from-basic-auth-user`: each basic-auth user is its own tenant on every
/// path of `strata all` (writes and reads). Alice writes without a tenant header and
/// reads her series back; Bob, with the same query, sees nothing; Bob naming Alice's
/// tenant (in `X-Scope-OrgID` or `THANOS-TENANT`) is refused with 403 and a message
/// saying why, on reads and writes; the same through a standalone query frontend and
/// querier.
#[test]
fn each_basic_auth_user_is_its_own_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (alice, bob) = (
        bcrypt::hash("a-pw", 4).unwrap(),
        bcrypt::hash("b-pw", 4).unwrap(),
    );
    std::fs::write(
        d.join("web.yml"),
        format!("basic_auth_users:\n  alice: '{alice}'\n  bob: '{bob}'\n"),
    )
    .unwrap();
    let port = free_port();
    let args = all_with_web_config(d, &["--auth.tenant-from-basic-auth-user"]);
    let mut s = StrataProc::spawn(&d.join("data"), &args, port, free_port());
    let base = format!("http://127.0.0.1:{port}");
    let ready = |s: &mut StrataProc| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while curl(d, &format!("{}/-/ready", s.url()), &["-u", "alice:a-pw"]).1 != 200 {
            s.proc
                .alive()
                .unwrap_or_else(|e| panic!("strata exited: {e}\n{}", s.log()));
            assert!(Instant::now() < deadline, "not ready:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    ready(&mut s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let body = strata_proto::encode_write_request(&strata_testkit::strata::write_request(vec![
        strata_testkit::strata::series(&[("__name__", "diary_pages")], &[(now, 42.0)]),
    ]));
    std::fs::write(d.join("push.bin"), body).unwrap();
    let push = |user: &str, extra: &[&str]| {
        let mut a = vec![
            "-u",
            user,
            "-H",
            "Content-Encoding: snappy",
            "-H",
            "Content-Type: application/x-protobuf",
            "--data-binary",
            "@push.bin",
        ];
        a.extend(extra);
        curl(d, &format!("{base}/api/v1/push"), &a)
    };
    let query = |user: &str, extra: &[&str]| {
        let mut a = vec!["-u", user];
        a.extend(extra);
        curl(d, &format!("{base}/api/v1/query?query=diary_pages"), &a)
    };
    let (_, code, text) = push("alice:a-pw", &[]);
    assert!((200..300).contains(&code), "{text}");
    let (_, code, text) = query("alice:a-pw", &[]);
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains(r#""value":["#) && text.contains(r#""42"]"#),
        "{text}"
    );
    // naming one's own tenant is fine
    let (_, code, text) = query("alice:a-pw", &["-H", "X-Scope-OrgID: alice"]);
    assert!(code == 200 && text.contains(r#""42"]"#), "{text}");
    // Bob's tenant is Bob: the same query finds nothing
    let (_, code, text) = query("bob:b-pw", &[]);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains(r#""result":[]"#), "{text}");
    // and Bob cannot reach Alice's tenant by naming it, to read or to write
    for header in ["X-Scope-OrgID: alice", "THANOS-TENANT: alice"] {
        let (_, code, text) = query("bob:b-pw", &["-H", header]);
        assert_eq!(code, 403, "{header}: {text}");
        assert!(
            text.contains(r#"user "bob" may not use tenant "alice""#)
                && text.contains("--auth.tenant-from-basic-auth-user"),
            "{text}"
        );
        assert_eq!(push("bob:b-pw", &["-H", header]).1, 403, "{header}");
    }
    assert_eq!(query("bob:wrong", &[]).1, 401);

    // a query frontend in front of a querier (over `strata all`'s Store API), both
    // with the flag: the frontend binds the tenant and forwards the credentials
    let flags = |cmd: &str| {
        vec![
            cmd.to_string(),
            format!("--http.config={}", d.join("web.yml").display()),
            "--auth.tenant-from-basic-auth-user".to_string(),
        ]
    };
    let mut q_args = flags("querier");
    q_args.push(format!("--endpoint=127.0.0.1:{}", s.grpc_port));
    let mut querier = StrataProc::spawn(&d.join("querier"), &q_args, free_port(), 0);
    ready(&mut querier);
    let mut fe_args = flags("query-frontend");
    fe_args.push(format!("--query-frontend.downstream-url={}", querier.url()));
    let mut frontend = StrataProc::spawn(&d.join("frontend"), &fe_args, free_port(), 0);
    ready(&mut frontend);
    let range = |user: &str, extra: &[&str]| {
        let mut a = vec!["-u", user];
        a.extend(extra);
        let url = format!(
            "{}/api/v1/query_range?query=diary_pages&start={}&end={}&step=60",
            frontend.url(),
            now / 1000 - 600,
            now / 1000 + 60
        );
        curl(d, &url, &a)
    };
    let (_, code, text) = range("alice:a-pw", &[]);
    assert!(code == 200 && text.contains(r#""42"]"#), "{text}");
    let (_, code, text) = range("bob:b-pw", &[]);
    assert!(code == 200 && text.contains(r#""result":[]"#), "{text}");
    let (_, code, text) = range("bob:b-pw", &["-H", "X-Scope-OrgID: alice"]);
    assert_eq!(code, 403, "{text}");
}
