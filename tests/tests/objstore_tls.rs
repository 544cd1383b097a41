//! TLS on the object-store client, per the objstore YAML (Thanos's S3 `insecure: false`
//! and `http_config.tls_config`): a real s3s-fs behind a TLS-terminating proxy written
//! here (tokio-rustls, certificates made by `openssl`), once with server TLS only and
//! once asking for a client certificate (mutual TLS); `server_name` against a
//! certificate that names neither the endpoint's IP nor localhost.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use strata_testkit::s3::S3Server;
use strata_testkit::strata::{series, write_request, StrataProc};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS proxy on a free port.
struct Proxy {
    port: u16,
    /// The server name (SNI) of every ClientHello received, `None` for a hello without.
    sni: Arc<Mutex<Vec<Option<String>>>>,
}

impl Proxy {
    /// Asserts every ClientHello since the last call (at least one) had the SNI `name`.
    fn assert_sni(&self, name: Option<&str>) {
        let sni = std::mem::take(&mut *self.sni.lock().unwrap());
        assert!(
            !sni.is_empty() && sni.iter().all(|s| s.as_deref() == name),
            "SNI {sni:?}, expected {name:?}"
        );
    }
}

/// A TLS proxy to `upstream` with `dir`'s certificate `<cert>.crt`; with `client_ca`, a
/// client must present a certificate from `dir`'s CA.
fn tls_proxy(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    cert: &str,
    upstream: String,
    client_ca: bool,
) -> Proxy {
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(dir.join(format!("{cert}.crt")))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{cert}.key"))).unwrap();
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
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let sni = Arc::new(Mutex::new(Vec::new()));
    let seen = sni.clone();
    rt.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (config, upstream, seen) = (config.clone(), upstream.clone(), seen.clone());
            tokio::spawn(async move {
                let accept = tokio_rustls::LazyConfigAcceptor::new(Default::default(), client);
                let Ok(start) = accept.await else {
                    return;
                };
                let name = start.client_hello().server_name().map(str::to_owned);
                seen.lock().unwrap().push(name);
                // a failed handshake is the client's error to report, not ours
                let Ok(mut tls) = start.into_stream(config).await else {
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    Proxy { port, sni }
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

/// A real S3 server, a runtime for the proxies and certificates: the CA's, `server`
/// (127.0.0.1, localhost), `client`, and `named`, whose only name is `s3.strata.test`.
struct Fixture {
    tmp: tempfile::TempDir,
    certs: std::path::PathBuf,
    s3: S3Server,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    strata_testkit::tls::certificates(&certs);
    strata_testkit::tls::signed_certificate(&certs, "named", "subjectAltName=DNS:s3.strata.test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Fixture {
        tmp,
        certs,
        s3: S3Server::start(),
        rt,
    }
}

#[test]
fn the_object_store_client_speaks_tls_and_mutual_tls_per_the_objstore_yaml() {
    let Fixture { tmp, certs, s3, rt } = fixture();
    let tls_port = tls_proxy(&rt, &certs, "server", s3.endpoint(), false).port;
    let mtls_port = tls_proxy(&rt, &certs, "server", s3.endpoint(), true).port;
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
    ships_a_block(
        tmp.path(),
        &s3,
        yaml(
            &s3,
            mtls_port,
            &[("ca_file", &ca), ("cert_file", &cert), ("key_file", &key)],
        ),
    );
}

/// `strata all` with the objstore YAML `yaml` ships its one block to `s3`.
fn ships_a_block(dir: &Path, s3: &S3Server, yaml: String) {
    let cfg = dir.join("bucket.yml");
    std::fs::write(&cfg, yaml).unwrap();
    let strata = StrataProc::start_all(
        &dir.join("strata"),
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

/// Go's `tls.Config.ServerName`, as Thanos reads `tls_config.server_name`: the name sent
/// as SNI and the name the certificate must hold, whatever host the endpoint names.
#[test]
fn tls_config_server_name_is_the_sni_and_the_name_the_certificate_must_hold() {
    let Fixture { tmp, certs, s3, rt } = fixture();
    let tls = tls_proxy(&rt, &certs, "named", s3.endpoint(), false);
    let mtls = tls_proxy(&rt, &certs, "named", s3.endpoint(), true);
    let ca = certs.join("ca.crt");
    let (cert, key) = (certs.join("client.crt"), certs.join("client.key"));
    let name = Path::new("s3.strata.test");

    // without server_name the endpoint's 127.0.0.1 is verified, which the certificate
    // does not name (and an IP goes as no SNI)
    let (ok, out) = bucket_ls(&yaml(&s3, tls.port, &[("ca_file", &ca)]));
    println!("without server_name: {out}");
    assert!(!ok, "{out}");
    assert!(
        out.contains(r#"certificate not valid for name "127.0.0.1""#)
            && out.contains("s3.strata.test"),
        "{out}"
    );
    tls.assert_sni(None);

    // a server_name the certificate does not hold is refused, and it went as the SNI
    let wrong = [
        ("ca_file", ca.as_path()),
        ("server_name", Path::new("other.strata.test")),
    ];
    let (ok, out) = bucket_ls(&yaml(&s3, tls.port, &wrong));
    println!("a wrong server_name: {out}");
    assert!(!ok, "{out}");
    assert!(
        out.contains(r#"certificate not valid for name "other.strata.test""#),
        "{out}"
    );
    tls.assert_sni(Some("other.strata.test"));

    // the certificate's name: the bucket answers, over the endpoint's IP
    let (ok, out) = bucket_ls(&yaml(
        &s3,
        tls.port,
        &[("ca_file", &ca), ("server_name", name)],
    ));
    assert!(ok, "{out}");
    tls.assert_sni(Some("s3.strata.test"));
    // insecure_skip_verify still wins: neither the CA nor the name is checked, and
    // server_name still goes as the SNI (as Go's InsecureSkipVerify with ServerName)
    let skip = yaml(
        &s3,
        tls.port,
        &[("server_name", Path::new("other.strata.test"))],
    ) + "    insecure_skip_verify: true\n";
    let (ok, out) = bucket_ls(&skip);
    assert!(ok, "{out}");
    tls.assert_sni(Some("other.strata.test"));

    // with mutual TLS too, strata all ships its block through the proxy
    ships_a_block(
        tmp.path(),
        &s3,
        yaml(
            &s3,
            mtls.port,
            &[
                ("ca_file", &ca),
                ("cert_file", &cert),
                ("key_file", &key),
                ("server_name", name),
            ],
        ),
    );
    mtls.assert_sni(Some("s3.strata.test"));
}
