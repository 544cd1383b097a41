//! TLS on the object-store client, per the objstore YAML (Thanos's S3 `insecure: false`
//! and `http_config.tls_config`): a real s3s-fs behind a TLS-terminating proxy written
//! here (tokio-rustls, certificates made by `openssl`), once with server TLS only and
//! once asking for a client certificate (mutual TLS).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use strata_testkit::s3::S3Server;
use strata_testkit::strata::{series, write_request, StrataProc};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS proxy to `upstream` on a free port with `dir`'s server certificate; with
/// `client_ca`, a client must present a certificate from `dir`'s CA. Returns the port.
fn tls_proxy(rt: &tokio::runtime::Runtime, dir: &Path, upstream: String, client_ca: bool) -> u16 {
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_ca {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("ca.crt")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = Arc::new(builder.with_single_cert(certs, key).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                // a failed handshake is the client's error to report, not ours
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    port
}

/// An objstore YAML for the proxy on `port`, with `tls` lines under `tls_config`.
fn yaml(s3: &S3Server, port: u16, tls: &[(&str, &Path)]) -> String {
    let plain = s3.objstore_yaml("strata");
    let mut y = plain
        .replace(&s3.endpoint(), &format!("127.0.0.1:{port}"))
        .replace("insecure: true", "insecure: false");
    y.push_str("  max_retries: 1\n");
    if !tls.is_empty() {
        y.push_str("  http_config:\n    tls_config:\n");
        for (k, v) in tls {
            y.push_str(&format!("      {k}: {}\n", v.display()));
        }
    }
    y
}

/// `strata tools bucket ls` with `yaml`: (success, stdout + stderr).
fn bucket_ls(yaml: &str) -> (bool, String) {
    let out = Command::new(strata_testkit::procs::strata_bin())
        .args(["tools", "bucket", "ls", "--objstore.config", yaml])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_object_store_client_speaks_tls_and_mutual_tls_per_the_objstore_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    strata_testkit::tls::certificates(&certs);
    let s3 = S3Server::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tls_port = tls_proxy(&rt, &certs, s3.endpoint(), false);
    let mtls_port = tls_proxy(&rt, &certs, s3.endpoint(), true);
    let ca = certs.join("ca.crt");
    let (cert, key) = (certs.join("client.crt"), certs.join("client.key"));

    // server TLS: with the CA the bucket answers; without it the error names the
    // certificate the client could not verify
    let (ok, out) = bucket_ls(&yaml(&s3, tls_port, &[("ca_file", &ca)]));
    assert!(ok, "{out}");
    let (ok, out) = bucket_ls(&yaml(&s3, tls_port, &[]));
    println!("without the CA: {out}");
    assert!(!ok, "{out}");
    assert!(
        out.contains("invalid peer certificate") && out.contains("UnknownIssuer"),
        "{out}"
    );
    // insecure_skip_verify accepts it, as Thanos's
    let skip = yaml(&s3, tls_port, &[]) + "  http_config:\n    insecure_skip_verify: true\n";
    let (ok, out) = bucket_ls(&skip);
    assert!(ok, "{out}");

    // mutual TLS: without a client certificate the handshake is refused ...
    let (ok, out) = bucket_ls(&yaml(&s3, mtls_port, &[("ca_file", &ca)]));
    println!("mTLS without a client certificate: {out}");
    assert!(!ok, "{out}");
    assert!(out.contains("CertificateRequired"), "{out}");
    // ... and with one, strata all ships its blocks through the proxy
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(
        &cfg,
        yaml(
            &s3,
            mtls_port,
            &[("ca_file", &ca), ("cert_file", &cert), ("key_file", &key)],
        ),
    )
    .unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1h",
            &format!("--objstore.config-file={}", cfg.display()),
        ],
    );
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let req = write_request(vec![series(&[("__name__", "tls_m")], &[(t, 1.0)])]);
    assert_eq!(strata.push(None, &req).0, 200);
    let (status, body) = strata.flush();
    assert_eq!(status, 200, "{body}");
    let tenant = s3.data_dir().join("strata").join("anonymous");
    let blocks: Vec<_> = std::fs::read_dir(&tenant)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("meta.json").exists())
        .collect();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
}
