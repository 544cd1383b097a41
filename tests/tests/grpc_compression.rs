//! `--grpc-compression` on the querier's Store API client against every Store API
//! server of the real binary (ingester, sidecar over a real Prometheus, a querier's own
//! Store API): the same answers with zstd, gzip and none, and the bytes a fan-out puts
//! on the wire, counted by a loopback proxy between querier and server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use strata_testkit::http::{encode, get};
use strata_testkit::procs::Prometheus;
use strata_testkit::strata::{series, write_request, StrataProc};

/// A TCP proxy to `upstream` that counts the bytes flowing each way; the listener is
/// bound before this returns.
struct CountingProxy {
    addr: String,
    to_server: Arc<AtomicU64>,
    to_client: Arc<AtomicU64>,
}

fn proxy(rt: &tokio::runtime::Runtime, upstream: String) -> CountingProxy {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let to_server = Arc::new(AtomicU64::new(0));
    let to_client = Arc::new(AtomicU64::new(0));
    let (ts, tc) = (to_server.clone(), to_client.clone());
    rt.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let (ts, tc) = (ts.clone(), tc.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let n = tokio::io::copy(&mut cr, &mut sw).await.unwrap_or(0);
                    ts.fetch_add(n, Ordering::Relaxed);
                };
                let down = async move {
                    let n = tokio::io::copy(&mut sr, &mut cw).await.unwrap_or(0);
                    tc.fetch_add(n, Ordering::Relaxed);
                };
                tokio::join!(up, down);
            });
        }
    });
    CountingProxy {
        addr,
        to_server,
        to_client,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// 2,000 series (20 metric names × 100 instances) of 40 samples at 15 s.
fn data(t0: i64) -> strata_proto::prometheus::WriteRequest {
    let mut ts = Vec::new();
    for m in 0..20 {
        for i in 0..100 {
            let name = format!("metric_{m}");
            let inst = format!("host-{i}:9100");
            let samples: Vec<(i64, f64)> = (0..40)
                .map(|k| (t0 + k * 15_000, (i * 1000 + k * (m + 1)) as f64))
                .collect();
            ts.push(series(
                &[("__name__", &name), ("instance", &inst), ("job", "node")],
                &samples,
            ));
        }
    }
    write_request(ts)
}

fn query(q: &StrataProc, expr: &str, start: i64, end: i64) -> String {
    let url = format!(
        "{}/api/v1/query_range?query={}&start={}&end={}&step=15",
        q.url(),
        encode(expr),
        start as f64 / 1000.0,
        end as f64 / 1000.0
    );
    let (status, body) = get(&url).unwrap();
    assert_eq!(status, 200, "{expr}: {body}");
    body
}

/// One querier per compression in front of `server` (through a counting proxy each):
/// equal answers, and the bytes of the Series calls that produced them.
fn compare(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    name: &str,
    server: String,
    start: i64,
    end: i64,
) -> Vec<(String, u64, u64)> {
    let mut answers = Vec::new();
    let mut bytes = Vec::new();
    for c in ["none", "zstd", "gzip"] {
        let p = proxy(rt, server.clone());
        let mut q = StrataProc::start_http_only(
            &dir.join(format!("q-{name}-{c}")),
            &[
                "querier",
                &format!("--endpoint={}", p.addr),
                &format!("--grpc-compression={c}"),
            ],
        );
        let mut got = Vec::new();
        for expr in [
            r#"{__name__=~"metric_.*"}"#,
            "sum by (job) (rate(metric_3[5m]))",
            r#"count({__name__=~".+"})"#,
        ] {
            got.push(query(&q, expr, start, end));
        }
        q.terminate(std::time::Duration::from_secs(10));
        assert!(
            got[0].contains("host-99:9100"),
            "{name}/{c}: {}",
            &got[0][..200.min(got[0].len())]
        );
        answers.push(got);
        bytes.push((
            c.to_string(),
            p.to_server.load(Ordering::Relaxed),
            p.to_client.load(Ordering::Relaxed),
        ));
    }
    assert_eq!(answers[1], answers[0], "{name}: zstd answers differ");
    assert_eq!(answers[2], answers[0], "{name}: gzip answers differ");
    println!("{name}: bytes on the wire (to server, to querier): {bytes:?}");
    // the server answered compressed (answers are deterministic, so plain answers
    // would put the same bytes on the wire); whether that is fewer bytes is measured,
    // not asserted: one series per message leaves little to compress
    assert_ne!(
        bytes[1].2, bytes[0].2,
        "{name}: zstd not negotiated: {bytes:?}"
    );
    assert_ne!(
        bytes[2].2, bytes[0].2,
        "{name}: gzip not negotiated: {bytes:?}"
    );
    bytes
}

#[test]
fn querier_with_grpc_compression_answers_the_same_from_every_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t0 = (now_ms() - 20 * 60_000) / 60_000 * 60_000;
    let (start, end) = (t0, t0 + 39 * 15_000);
    let req = data(t0);

    let ing = StrataProc::start_with_grpc(
        &dir.join("ingester"),
        &[
            "ingester",
            &format!("--tsdb.path={}", dir.join("ingester").display()),
            "--tsdb.wal-fsync=never",
        ],
    );
    let (status, body) = ing.push(None, &req);
    assert_eq!(status, 200, "{body}");
    compare(
        &rt,
        dir,
        "ingester",
        format!("127.0.0.1:{}", ing.grpc_port),
        start,
        end,
    );

    // a querier's own Store API (federation) over the ingester
    let fed = StrataProc::start_with_grpc(
        &dir.join("federation"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", ing.grpc_port),
        ],
    );
    compare(
        &rt,
        dir,
        "querier",
        format!("127.0.0.1:{}", fed.grpc_port),
        start,
        end,
    );

    let prom = Prometheus::start(
        &dir.join("prom"),
        "global:\n  external_labels:\n    cluster: c1\n",
        &["--web.enable-remote-write-receiver"],
    );
    let (status, text) = strata_testkit::http::post(
        &format!("{}/api/v1/write", prom.url()),
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ],
        &strata_proto::encode_write_request(&req),
    )
    .unwrap();
    assert_eq!(status, 204, "{text}");
    let sidecar = StrataProc::start_with_grpc(
        &dir.join("sidecar"),
        &[
            "sidecar",
            &format!("--prometheus.url={}", prom.url()),
            &format!("--tsdb.path={}", prom.data_dir.display()),
        ],
    );
    compare(
        &rt,
        dir,
        "sidecar",
        format!("127.0.0.1:{}", sidecar.grpc_port),
        start,
        end,
    );
}
