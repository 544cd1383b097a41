//! Tenant B never reads tenant A's data, and A never reads B's, on any read path: the
//! Prometheus HTTP API (query, range query, series, labels, label values, metadata,
//! exemplars, `/api/v1/status/tsdb`, the stores and blocks pages), remote read and the
//! Store API. Four topologies: `strata all` (head and bucket), a querier over its
//! Store API, a querier that reads only the bucket after a flush, and a query frontend
//! (splitting and caching range queries) in front of `strata all`. Each check also
//! asks as the owner and must find the owner's data there, so an endpoint that answers
//! nothing at all fails the test.

use strata_proto::prometheus::{
    label_matcher, Exemplar, Label, LabelMatcher, MetricMetadata, TimeSeries, WriteRequest,
};
use strata_proto::store::store_client::StoreClient;
use strata_proto::store::{LabelNamesRequest, LabelValuesRequest, SeriesRequest};
use strata_testkit::http::{encode, get_with};
use strata_testkit::strata::{series, StrataProc};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What one tenant writes; every string in it names the tenant, so any of them in an
/// answer to the other tenant is a leak.
struct Tenant {
    id: &'static str,
    /// A metric only this tenant has, with a label only it has.
    metric: &'static str,
    only_label: &'static str,
    /// The value of `owner` (a label both have) and of `shared_name`'s `owner`.
    owner: &'static str,
    help: &'static str,
    trace: &'static str,
}

const A: Tenant = Tenant {
    id: "tenant-a",
    metric: "secret_metric_of_a",
    only_label: "a_only",
    owner: "a",
    help: "help text of a",
    trace: "trace_of_a",
};
const B: Tenant = Tenant {
    id: "tenant-b",
    metric: "private_metric_of_b",
    only_label: "b_only",
    owner: "b",
    help: "help text of b",
    trace: "trace_of_b",
};

impl Tenant {
    /// One sample at `ts` of each series, an exemplar and the metric's metadata.
    fn write(&self, ts: i64) -> WriteRequest {
        let mut own = series(
            &[
                ("__name__", self.metric),
                (self.only_label, "x"),
                ("owner", self.owner),
            ],
            &[(ts, 1.0)],
        );
        own.exemplars = vec![Exemplar {
            labels: vec![Label {
                name: "trace_id".into(),
                value: self.trace.into(),
            }],
            value: 1.0,
            timestamp: ts,
        }];
        let shared: TimeSeries = series(
            &[("__name__", "shared_name"), ("owner", self.owner)],
            &[(ts, 2.0)],
        );
        WriteRequest {
            timeseries: vec![own, shared],
            metadata: vec![MetricMetadata {
                r#type: 1, // counter
                metric_family_name: self.metric.into(),
                help: self.help.into(),
                unit: String::new(),
            }],
        }
    }

    /// Whether `body` shows anything of this tenant's own data.
    fn in_text(&self, body: &str) -> bool {
        [
            self.metric,
            self.only_label,
            self.help,
            self.trace,
            self.id,
            &format!("\"{}\"", self.owner),
        ]
        .iter()
        .any(|n| body.contains(n))
    }
}

/// What a topology serves: which HTTP reads answer with a tenant's data there.
struct Topology<'a> {
    name: &'a str,
    proc: &'a StrataProc,
    /// Metadata and exemplars (not kept in blocks: absent from a bucket-only querier).
    metadata: bool,
    /// The ingester's `/api/v1/status/tsdb`.
    tsdb_status: bool,
    /// A bucket to list in `/api/v1/blocks`.
    bucket: bool,
    /// A Store API to ask.
    grpc: bool,
}

/// Every HTTP read answer for `tenant`: (path, whether the tenant's data must be in
/// it, body).
fn http_answers(top: &Topology, tenant: &str, t: i64) -> Vec<(String, bool, String)> {
    let all = encode(r#"{__name__=~".+"}"#);
    let (s, e) = ((t - 3_600_000) / 1000, t / 1000 + 60);
    let paths = [
        (format!("/api/v1/query?query={all}&time={e}"), true),
        (
            format!("/api/v1/query_range?query={all}&start={s}&end={e}&step=60"),
            true,
        ),
        (
            format!("/api/v1/series?match[]={all}&start={s}&end={e}"),
            true,
        ),
        ("/api/v1/labels".to_string(), true),
        ("/api/v1/label/__name__/values".to_string(), true),
        ("/api/v1/label/owner/values".to_string(), true),
        ("/api/v1/metadata".to_string(), top.metadata),
        (
            format!("/api/v1/query_exemplars?query={all}&start={s}&end={e}"),
            top.metadata,
        ),
        ("/api/v1/status/tsdb".to_string(), top.tsdb_status),
        ("/api/v1/blocks".to_string(), top.bucket),
        ("/api/v1/stores".to_string(), false),
    ];
    paths
        .into_iter()
        // the ingester's status and the bucket's blocks only where there are such
        .filter(|(p, _)| {
            (top.tsdb_status || !p.contains("status/tsdb")) && (top.bucket || !p.contains("blocks"))
        })
        .map(|(p, sees)| {
            let url = format!("{}{p}", top.proc.url());
            let (code, body) = get_with(&url, &[("X-Scope-OrgID", tenant)]).unwrap();
            assert_eq!(code, 200, "{} {p} as {tenant}: {body}", top.name);
            (p, sees, body)
        })
        .collect()
}

/// Remote read of everything as `tenant`, as debug text (every label in it).
fn remote_read(base: &str, tenant: &str, t: i64) -> String {
    let every = LabelMatcher {
        r#type: label_matcher::Type::Re as i32,
        name: "__name__".into(),
        value: ".+".into(),
    };
    let resp =
        strata_testkit::http::remote_read(base, tenant, t - 3_600_000, t + 60_000, vec![every]);
    format!("{resp:?}")
}

/// Series, label names and values over the Store API as `tenant`, as debug text.
fn store_api(port: u16, tenant: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = StoreClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut out = String::new();
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
            .insert("thanos-tenant", tenant.parse().unwrap());
        let mut stream = c.series(req).await.unwrap().into_inner();
        while let Some(m) = stream.message().await.unwrap() {
            out.push_str(&format!("{m:?}\n"));
        }
        let mut req = tonic::Request::new(LabelNamesRequest {
            start: 0,
            end: i64::MAX,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("thanos-tenant", tenant.parse().unwrap());
        out.push_str(&format!(
            "{:?}\n",
            c.label_names(req).await.unwrap().into_inner()
        ));
        let mut req = tonic::Request::new(LabelValuesRequest {
            label: "__name__".into(),
            start: 0,
            end: i64::MAX,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("thanos-tenant", tenant.parse().unwrap());
        out.push_str(&format!(
            "{:?}\n",
            c.label_values(req).await.unwrap().into_inner()
        ));
        out
    })
}

#[test]
fn tenants_never_read_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(tmp.path(), &["--tsdb.ship-interval=1h"]);
    let querier = StrataProc::start_with_grpc(
        &tmp.path().join("querier"),
        &["querier", &format!("--endpoint=127.0.0.1:{}", s.grpc_port)],
    );
    let objstore = tmp.path().join("bucket.yml");
    std::fs::write(
        &objstore,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            tmp.path().join("bucket").display()
        ),
    )
    .unwrap();
    let bucket_querier = StrataProc::start_with_grpc(
        &tmp.path().join("bucket-querier"),
        &[
            "querier",
            &format!("--objstore.config-file={}", objstore.display()),
        ],
    );
    // range queries split into 10m parts, every part cached: a cache that mixed up
    // tenants would answer B with A's parts
    let frontend = StrataProc::start_http_only(
        &tmp.path().join("frontend"),
        &[
            "query-frontend",
            &format!("--query-frontend.downstream-url={}", s.url()),
            "--query-range.split-interval=10m",
            "--query-range.max-freshness=0s",
        ],
    );
    let t = now_ms();
    // each tenant: one sample cut into a block and shipped, one left in the head
    for who in [&A, &B] {
        assert_eq!(s.push(Some(who.id), &who.write(t - 120_000)).0, 200);
    }
    assert_eq!(s.flush().0, 200);
    for who in [&A, &B] {
        assert_eq!(s.push(Some(who.id), &who.write(t - 60_000)).0, 200);
    }

    let topologies = [
        Topology {
            name: "strata all",
            proc: &s,
            metadata: true,
            tsdb_status: true,
            bucket: true,
            grpc: true,
        },
        Topology {
            name: "querier over the Store API",
            proc: &querier,
            metadata: true,
            tsdb_status: false,
            bucket: false,
            grpc: true,
        },
        Topology {
            name: "querier over the bucket",
            proc: &bucket_querier,
            metadata: false,
            tsdb_status: false,
            bucket: true,
            grpc: true,
        },
        Topology {
            name: "query frontend (split and cached) over strata all",
            proc: &frontend,
            metadata: true,
            tsdb_status: true,
            bucket: true,
            grpc: false,
        },
    ];
    for top in &topologies {
        for (me, other) in [(&A, &B), (&B, &A)] {
            let mut answers = http_answers(top, me.id, t);
            let read = remote_read(&top.proc.url(), me.id, t);
            answers.push(("remote read".into(), true, read));
            if top.grpc {
                answers.push((
                    "Store API".into(),
                    true,
                    store_api(top.proc.grpc_port, me.id),
                ));
            }
            for (what, sees, body) in answers {
                assert!(
                    !sees || me.in_text(&body),
                    "{} {what} as {} shows nothing of its own: {body}",
                    top.name,
                    me.id
                );
                assert!(
                    !other.in_text(&body),
                    "{} {what} as {} shows {}'s data: {body}",
                    top.name,
                    me.id,
                    other.id
                );
            }
        }
    }
    // the frontend did cache: A's range query again is answered from the cache, so B's
    // answers above (with none of A's data) came past a filled cache
    let hits = frontend.metric("strata_query_frontend_results_cache_hits_total");
    let again = http_answers(&topologies[3], A.id, t);
    let (_, _, body) = again
        .iter()
        .find(|(p, _, _)| p.contains("query_range"))
        .unwrap();
    assert!(A.in_text(body), "{body}");
    assert!(
        frontend.metric("strata_query_frontend_results_cache_hits_total") > hits,
        "the range query was not answered from the cache"
    );
}
