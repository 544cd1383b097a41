//! One tenant rule on every server: the same bad tenant gets the same answer — 400 with
//! the same text over HTTP, `InvalidArgument` with that text over gRPC — from the
//! ingester (push, status, Store API), the querier (HTTP API, remote read, its own Store
//! API) and the sidecar's Store API.

use strata_proto::prometheus::{label_matcher, LabelMatcher, Query, ReadRequest};
use strata_proto::store::store_client::StoreClient;
use strata_proto::store::{LabelNamesRequest, SeriesRequest};
use strata_proto::Message;
use strata_testkit::http::{get_with, post};
use strata_testkit::procs::Prometheus;
use strata_testkit::strata::{series, write_request, StrataProc};

/// The text `strata_kit::tenant` gives for each bad tenant.
const BAD: &[(&str, &str)] = &[
    ("a/b", "tenant ID 'a/b' contains unsupported character '/'"),
    ("..", "tenant ID '..' is not allowed"),
    (
        "strata-compactor-lock.json",
        "tenant ID 'strata-compactor-lock.json' is reserved: Strata keeps an object of that name at the bucket's root",
    ),
];

/// Series and LabelNames over gRPC with `tenant` in the metadata: both must be
/// InvalidArgument with `want`.
fn grpc_refuses(port: u16, tenant: &str, want: &str, server: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = StoreClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut req = tonic::Request::new(SeriesRequest {
            min_time: 0,
            max_time: i64::MAX,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Re as i32,
                name: "__name__".into(),
                value: ".+".into(),
            }],
            ..Default::default()
        });
        req.metadata_mut()
            .insert("x-scope-orgid", tenant.parse().unwrap());
        let status = match c.series(req).await {
            Err(s) => s,
            Ok(resp) => {
                // A server may refuse in the stream's first message.
                let mut stream = resp.into_inner();
                match stream.message().await {
                    Err(s) => s,
                    Ok(m) => panic!("{server} Series accepted tenant {tenant:?}: {m:?}"),
                }
            }
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{server}");
        assert_eq!(status.message(), want, "{server}");

        let mut req = tonic::Request::new(LabelNamesRequest {
            start: 0,
            end: i64::MAX,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("thanos-tenant", tenant.parse().unwrap());
        let status = c.label_names(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{server}");
        assert_eq!(status.message(), want, "{server}");
    });
}

fn http_refuses(code_body: (u16, String), want: &str, what: &str) {
    let (code, body) = code_body;
    assert_eq!(code, 400, "{what}: {body}");
    assert!(body.contains(want), "{what}: {body}");
}

#[test]
fn every_server_gives_a_bad_tenant_the_same_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let all = StrataProc::start_all(&tmp.path().join("all"), &["--tsdb.ship-interval=1h"]);
    let querier = StrataProc::start_with_grpc(
        &tmp.path().join("querier"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", all.grpc_port),
        ],
    );
    let prom = Prometheus::start(
        &tmp.path().join("prom"),
        "global:\n  external_labels:\n    replica: a\n",
        &[],
    );
    let sidecar = StrataProc::start_with_grpc(
        &tmp.path().join("sidecar"),
        &[
            "sidecar",
            &format!("--prometheus.url={}", prom.url()),
            &format!("--tsdb.path={}", prom.data_dir.display()),
        ],
    );

    let push = write_request(vec![series(&[("__name__", "m")], &[(1, 1.0)])]);
    let read = snap::raw::Encoder::new()
        .compress_vec(
            &ReadRequest {
                queries: vec![Query {
                    start_timestamp_ms: 0,
                    end_timestamp_ms: 1,
                    matchers: vec![LabelMatcher {
                        r#type: label_matcher::Type::Eq as i32,
                        name: "__name__".into(),
                        value: "m".into(),
                    }],
                    hints: None,
                }],
                accepted_response_types: vec![],
            }
            .encode_to_vec(),
        )
        .unwrap();
    for (tenant, want) in BAD {
        http_refuses(all.push(Some(tenant), &push), want, "ingester push");
        http_refuses(
            get_with(
                &format!("{}/api/v1/status/tsdb", all.url()),
                &[("X-Scope-OrgID", tenant)],
            )
            .unwrap(),
            want,
            "ingester status",
        );
        for q in [&all, &querier] {
            http_refuses(
                get_with(
                    &format!("{}/api/v1/query?query=m", q.url()),
                    &[("THANOS-TENANT", tenant)],
                )
                .unwrap(),
                want,
                "querier API",
            );
            http_refuses(
                post(
                    &format!("{}/api/v1/read", q.url()),
                    &[("Content-Encoding", "snappy"), ("X-Scope-OrgID", tenant)],
                    &read,
                )
                .unwrap(),
                want,
                "remote read",
            );
        }
        grpc_refuses(all.grpc_port, tenant, want, "ingester Store API");
        grpc_refuses(querier.grpc_port, tenant, want, "querier Store API");
        grpc_refuses(sidecar.grpc_port, tenant, want, "sidecar Store API");
    }
}
