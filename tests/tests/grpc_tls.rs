//! gRPC TLS with Thanos's flags on the real binary: three ingesters whose Store API,
//! push replication and raft all run over mutual TLS (certificates from a test CA made
//! with `openssl`), a querier that reaches them with a client certificate, and the
//! refusals: a querier without a client certificate, and one speaking plaintext.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use strata_testkit::http::{encode, get, get_json};
use strata_testkit::procs::free_port;
use strata_testkit::strata::{series, write_request, StrataProc};
use strata_testkit::tls::certificates;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn server_tls(d: &Path) -> Vec<String> {
    vec![
        format!("--grpc-server-tls-cert={}", d.join("server.crt").display()),
        format!("--grpc-server-tls-key={}", d.join("server.key").display()),
        format!("--grpc-server-tls-client-ca={}", d.join("ca.crt").display()),
    ]
}

fn client_tls(d: &Path, with_cert: bool) -> Vec<String> {
    let mut a = vec![
        "--grpc-client-tls-secure".to_string(),
        format!("--grpc-client-tls-ca={}", d.join("ca.crt").display()),
    ];
    if with_cert {
        a.push(format!(
            "--grpc-client-tls-cert={}",
            d.join("client.crt").display()
        ));
        a.push(format!(
            "--grpc-client-tls-key={}",
            d.join("client.key").display()
        ));
    }
    a
}

/// `count(tls_test)` through `q`: the value, or the answer's warnings when it has none.
fn count(q: &StrataProc) -> Result<f64, String> {
    let url = format!(
        "{}/api/v1/query?query={}",
        q.url(),
        encode("count(tls_test)")
    );
    let (status, body) = get(&url).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match v["data"]["result"][0]["value"][1].as_str() {
        Some(s) if status == 200 => Ok(s.parse().unwrap()),
        _ => Err(body),
    }
}

fn querier(dir: &Path, name: &str, endpoints: &[String], extra: &[String]) -> StrataProc {
    let mut args = vec!["querier".to_string()];
    args.extend(endpoints.iter().map(|e| format!("--endpoint={e}")));
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    StrataProc::start_http_only(&dir.join(name), &args)
}

#[test]
fn ingesters_replicate_and_answer_over_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    certificates(d);

    // three ingesters, replication factor 3: a push to one is written to all three
    // over gRPC, and the raft that forms the ring talks gRPC too
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, (_, g))| format!("ing-{}=127.0.0.1:{g}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut ings: Vec<StrataProc> = ports
        .iter()
        .enumerate()
        .map(|(i, (h, g))| {
            let dir = d.join(format!("ing-{}", i + 1));
            std::fs::create_dir_all(&dir).unwrap();
            let mut args = vec![
                "ingester".to_string(),
                format!("--tsdb.path={}", dir.display()),
                format!("--cluster.node-id=ing-{}", i + 1),
                format!("--cluster.peers={peers}"),
                "--ingester.ring.heartbeat-period=1s".to_string(),
                "--tsdb.wal-fsync=never".to_string(),
            ];
            args.extend(server_tls(d));
            args.extend(client_tls(d, true));
            StrataProc::spawn(&dir, &args, *h, *g)
        })
        .collect();
    for p in &mut ings {
        p.wait_ready()
            .unwrap_or_else(|log| panic!("ingester did not become ready over TLS:\n{log}"));
    }

    let t0 = now_ms() - 60_000;
    let req = write_request(
        (0..10)
            .map(|i| {
                let inst = format!("host-{i}");
                series(
                    &[("__name__", "tls_test"), ("instance", &inst)],
                    &[(t0, i as f64)],
                )
            })
            .collect(),
    );
    let (status, body) = ings[0].push(None, &req);
    assert_eq!(status, 200, "push over a TLS cluster: {body}");

    // each ingester alone holds every series: replication went over mTLS
    for (i, (_, g)) in ports.iter().enumerate() {
        let ep = vec![format!("127.0.0.1:{g}")];
        let mut q = querier(d, &format!("q-{i}"), &ep, &client_tls(d, true));
        assert_eq!(count(&q), Ok(10.0), "ingester {} over mTLS", i + 1);
        q.terminate(Duration::from_secs(10));
    }

    let all: Vec<String> = ports
        .iter()
        .map(|(_, g)| format!("127.0.0.1:{g}"))
        .collect();
    // a client without a certificate is refused by the handshake
    let mut q = querier(d, "q-nocert", &all[..1], &client_tls(d, false));
    let err = count(&q).expect_err("a client without a certificate must be refused");
    assert!(err.contains("warning") || err.contains("error"), "{err}");
    let stores = get_json(&format!("{}/api/v1/stores", q.url()));
    let text = stores.to_string();
    assert!(
        !text.contains(r#""lastError":null"#),
        "endpoint must be down: {text}"
    );
    q.terminate(Duration::from_secs(10));

    // plaintext against a TLS server fails as well
    let mut q = querier(d, "q-plain", &all[..1], &[]);
    assert!(count(&q).is_err(), "plaintext must not reach a TLS server");
    q.terminate(Duration::from_secs(10));

    // the querier's own Store API over TLS (federation): a second querier reaches it
    let fed_grpc = free_port();
    let mut args = vec![
        "querier".to_string(),
        format!("--grpc-address=127.0.0.1:{fed_grpc}"),
    ];
    args.extend(all.iter().map(|e| format!("--endpoint={e}")));
    args.extend(server_tls(d));
    args.extend(client_tls(d, true));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut fed = StrataProc::start_http_only(&d.join("fed"), &args);
    let mut top = querier(
        d,
        "q-top",
        &[format!("127.0.0.1:{fed_grpc}")],
        &client_tls(d, true),
    );
    assert_eq!(count(&top), Ok(10.0), "federated querier over mTLS");
    top.terminate(Duration::from_secs(10));
    fed.terminate(Duration::from_secs(10));
    for p in &mut ings {
        p.terminate(Duration::from_secs(20));
    }
}

#[test]
fn half_given_tls_flags_stop_start_up_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(strata_testkit::procs::strata_bin())
        .args([
            "querier",
            "--http-address=127.0.0.1:0",
            "--grpc-client-tls-ca=/nonexistent/ca.crt",
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("need --grpc-client-tls-secure"), "{err}");

    let out = std::process::Command::new(strata_testkit::procs::strata_bin())
        .args([
            "querier",
            "--http-address=127.0.0.1:0",
            "--grpc-client-tls-secure",
            "--grpc-client-tls-ca=/nonexistent/ca.crt",
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read --grpc-client-tls-ca /nonexistent/ca.crt"),
        "{err}"
    );
}
