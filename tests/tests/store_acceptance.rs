//! The Store API acceptance suite ([`strata_testkit::storeapi_acceptance`]) against
//! every Store API server Strata has, one test each: the ingester (head and local
//! blocks), the sidecar (the real binary over a real Prometheus's remote read), the
//! querier's own Store API (federation) and the querier reading the ingester in process
//! (`LocalStore`, as in `strata all`). The servers are real gRPC servers on loopback.

use std::sync::{Arc, OnceLock};

use clap::Parser;
use strata_ingester::grpc::StoreService;
use strata_ingester::{Ingester, IngesterArgs};
use strata_kit::metrics::Registry;
use strata_querier::storeapi::QuerierStore;
use strata_querier::{Querier, QuerierConfig};
use strata_testkit::procs::Prometheus;
use strata_testkit::storeapi_acceptance::{
    run, DataSet, Server, Tenants, SPLIT_MS, TENANT_A, TENANT_B,
};
use strata_testkit::strata::StrataProc;

/// A first sample an hour ago, on a whole minute: servers take it as recent data.
fn base() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now - 3_600_000) / 60_000 * 60_000
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    ingester: IngesterArgs,
}

/// One ingester loaded with the data set, and the three in-process servers over it,
/// built once for the tests of this file (they run in parallel).
struct Shared {
    data: DataSet,
    ingester: String,
    federation: String,
    local: String,
}

/// Serve `router` on a loopback port; the listener is bound before this returns, so
/// a client may connect at once (no readiness to wait for).
fn serve(rt: &tokio::runtime::Runtime, router: tonic::transport::server::Router) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    addr.to_string()
}

fn grpc() -> tonic::transport::Server {
    tonic::transport::Server::builder()
}

/// The ingester as `strata all`'s querier reads it in process (the binary's
/// `LocalIngester` does the same two calls).
struct LocalIngester(Arc<Ingester>);

impl std::fmt::Debug for LocalIngester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalIngester")
    }
}

impl strata_querier::fanout::LocalStore for LocalIngester {
    fn series(
        &self,
        tenant: &str,
        matchers: &[strata_tsdb::matcher::Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
    ) -> Result<Vec<(strata_tsdb::labels::Labels, Vec<(i64, f64)>)>, String> {
        strata_ingester::grpc::select_samples(&self.0, tenant, matchers, mint, maxt, skip_chunks)
            .map_err(|e| e.to_string())
    }

    fn external_labels(&self) -> Vec<(String, String)> {
        self.0.config.labels.clone()
    }
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let data = DataSet::new(base());
        // Kept for the life of the test process (the servers run until it exits).
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        let rt: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        ));
        let args = Flags::parse_from([
            "ingester".to_string(),
            format!("--tsdb.path={}", dir.join("ingester").display()),
            "--tsdb.wal-fsync=never".to_string(),
        ])
        .ingester;
        let bucket = args.bucket().unwrap();
        let ing = Ingester::open(args, bucket, &Registry::new()).unwrap();
        // Samples before the split go into a local block, the rest stay in the head:
        // most series are read from both.
        let split = data.base + SPLIT_MS;
        for tenant in [TENANT_A, TENANT_B] {
            let before = data.write_request(tenant, |t| t < split);
            let o = strata_ingester::push::ingest(&ing, tenant, before).unwrap();
            assert!(o.rejected.is_empty() && o.first_error.is_none(), "{o:?}");
            let cut = ing.tenant(tenant).unwrap().cut_blocks(true).unwrap();
            assert!(!cut.is_empty(), "no block cut for {tenant}");
            let after = data.write_request(tenant, |t| t >= split);
            let o = strata_ingester::push::ingest(&ing, tenant, after).unwrap();
            assert!(o.rejected.is_empty() && o.first_error.is_none(), "{o:?}");
        }
        let ingester = serve(
            rt,
            grpc().add_service(StoreService::new(ing.clone()).into_server()),
        );
        let querier = |local: bool| {
            let mut config = QuerierConfig {
                endpoints: vec![ingester.clone()],
                ..QuerierConfig::default()
            };
            if local {
                // As `strata all`: the endpoint is this process; series are read in
                // process, label calls without matchers still go to its gRPC port.
                config.local_stores = vec![(
                    ingester.clone(),
                    Arc::new(LocalIngester(ing.clone())) as Arc<_>,
                )];
            }
            let q = Querier::new(config, &Registry::new()).unwrap();
            serve(rt, grpc().add_service(QuerierStore::new(q).into_server()))
        };
        let federation = querier(false);
        let local = querier(true);
        Shared {
            data,
            ingester,
            federation,
            local,
        }
    })
}

fn in_process(name: &str, addr: &str) -> Server {
    Server {
        name: name.into(),
        url: format!("http://{addr}"),
        external_labels: Vec::new(),
        tenants: Tenants::Any,
    }
}

#[test]
fn ingester_store_api() {
    let s = shared();
    run(&in_process("ingester", &s.ingester), &s.data);
}

#[test]
fn querier_store_api_federation() {
    let s = shared();
    run(&in_process("querier (federation)", &s.federation), &s.data);
}

#[test]
fn querier_local_store() {
    let s = shared();
    run(&in_process("querier (LocalStore)", &s.local), &s.data);
}

#[test]
fn sidecar_store_api() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataSet::new(base());
    // The sidecar needs external labels; it adds them to every series it serves.
    let prom = Prometheus::start(
        &tmp.path().join("prom"),
        "global:\n  external_labels:\n    cluster: c1\n",
        &["--web.enable-remote-write-receiver"],
    );
    // One Prometheus is one tenant: only A's data goes in.
    let body = strata_proto::encode_write_request(&data.write_request(TENANT_A, |_| true));
    let (status, text) = strata_testkit::http::post(
        &format!("{}/api/v1/write", prom.url()),
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ],
        &body,
    )
    .unwrap();
    assert_eq!(status, 204, "remote write into Prometheus: {text}");
    let sidecar = StrataProc::start_with_grpc(
        &tmp.path().join("sidecar"),
        &[
            "sidecar",
            &format!("--prometheus.url={}", prom.url()),
            &format!("--tsdb.path={}", prom.data_dir.display()),
            &format!("--tenant={TENANT_A}"),
        ],
    );
    run(
        &Server {
            name: "sidecar".into(),
            url: format!("http://127.0.0.1:{}", sidecar.grpc_port),
            external_labels: vec![("cluster".into(), "c1".into())],
            tenants: Tenants::Single(TENANT_A.into()),
        },
        &data,
    );
}
