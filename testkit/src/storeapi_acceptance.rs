//! One acceptance suite for every Store API server (Thanos's
//! `pkg/store/acceptance_test.go` pattern): the same data set, the same requests and the
//! same expected answers for the ingester, the sidecar, the querier's own Store API and
//! the querier's in-process read of `strata all`, so the paths cannot drift apart.
//!
//! A test builds its server from [`DataSet`] (loading [`DataSet::series_of`] its own
//! way), describes it as a [`Server`], and calls [`run`]. Where a server legitimately
//! answers differently, the difference is a field of [`Server`] (its external labels,
//! the tenants it serves) that the expectation of each case takes into account, not a
//! looser comparison.
//!
//! What every answer is checked for, beyond the expected series: series sorted and
//! unique, labels sorted, raw XOR chunks only, each chunk's min/max time equal to its
//! first/last sample, chunks in time order without overlap, every chunk overlapping
//! the requested range, and every decoded sample one that was written.

use std::collections::{BTreeMap, BTreeSet};

use strata_proto::prometheus::{label_matcher, Label, LabelMatcher, Sample, TimeSeries};
use strata_proto::store::store_client::StoreClient;
use strata_proto::store::{
    chunk, series_response, LabelNamesRequest, LabelValuesRequest, SeriesRequest,
};
use tonic::Code;

/// The tenant most data belongs to (the one a single-tenant server serves).
pub const TENANT_A: &str = "team-a";
/// A second tenant, whose data must stay invisible to [`TENANT_A`] and back.
pub const TENANT_B: &str = "team-b";
/// Samples per full-length series, [`STEP_MS`] apart: more than one 120-sample chunk.
pub const SAMPLES: i64 = 200;
pub const STEP_MS: i64 = 10_000;
/// Samples before `base + SPLIT_MS` can be loaded apart from the rest (e.g. into a
/// block, the rest into the head): series `early` lies wholly before, `late` wholly
/// after, the others on both sides.
pub const SPLIT_MS: i64 = 1_000_000;

/// One series of the data set, named by a short id the cases refer to.
#[derive(Debug, Clone)]
pub struct FixtureSeries {
    pub id: &'static str,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

/// The series every server under test is loaded with, per tenant.
#[derive(Debug, Clone)]
pub struct DataSet {
    /// Timestamp of the first sample (ms).
    pub base: i64,
    pub tenants: Vec<(&'static str, Vec<FixtureSeries>)>,
}

impl DataSet {
    /// The data set with its first sample at `base` (ms). Pick a `base` an hour or so
    /// before now: servers refuse samples from the future and may refuse very old ones.
    pub fn new(base: i64) -> DataSet {
        let mk = |id, k: i64, labels: &[(&str, &str)], from: i64, to: i64| {
            let mut labels: Vec<(String, String)> = labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            labels.sort();
            FixtureSeries {
                id,
                labels,
                // distinct values per series, so a mix-up between series shows
                samples: (from..to)
                    .map(|i| (base + i * STEP_MS, (k * 1000 + i) as f64 * 0.5))
                    .collect(),
            }
        };
        let split = SPLIT_MS / STEP_MS;
        let a = vec![
            mk(
                "up_api_a",
                1,
                &[
                    ("__name__", "up"),
                    ("job", "api"),
                    ("instance", "a:1"),
                    ("env", "prod"),
                ],
                0,
                SAMPLES,
            ),
            mk(
                "up_api_b",
                2,
                &[("__name__", "up"), ("job", "api"), ("instance", "b:1")],
                0,
                SAMPLES,
            ),
            mk(
                "up_db",
                3,
                &[
                    ("__name__", "up"),
                    ("job", "db"),
                    ("instance", "c:1"),
                    ("env", "dev"),
                ],
                0,
                SAMPLES,
            ),
            mk(
                "req_200",
                4,
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("code", "200"),
                    ("path", "/v1/ö"),
                ],
                0,
                SAMPLES,
            ),
            mk(
                "req_500",
                5,
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("code", "500"),
                    ("path", "/v1/ö"),
                ],
                0,
                SAMPLES,
            ),
            mk(
                "early",
                6,
                &[
                    ("__name__", "batch_runs"),
                    ("job", "batch"),
                    ("phase", "early"),
                ],
                0,
                50,
            ),
            mk(
                "late",
                7,
                &[
                    ("__name__", "batch_runs"),
                    ("job", "batch"),
                    ("phase", "late"),
                    ("late_only", "yes"),
                ],
                split,
                SAMPLES,
            ),
        ];
        // Same labels as one of A's series, other values: a leak would be seen.
        let b = vec![
            mk(
                "b_up",
                101,
                &[
                    ("__name__", "up"),
                    ("job", "api"),
                    ("instance", "a:1"),
                    ("env", "prod"),
                ],
                0,
                SAMPLES,
            ),
            mk(
                "b_only",
                102,
                &[("__name__", "only_b"), ("job", "b")],
                0,
                SAMPLES,
            ),
        ];
        DataSet {
            base,
            tenants: vec![(TENANT_A, a), (TENANT_B, b)],
        }
    }

    /// The last sample's timestamp of a full-length series.
    pub fn last(&self) -> i64 {
        self.base + (SAMPLES - 1) * STEP_MS
    }

    /// The series of `tenant` (none for a tenant the data set lacks).
    pub fn series_of(&self, tenant: &str) -> &[FixtureSeries] {
        self.tenants
            .iter()
            .find(|(t, _)| *t == tenant)
            .map_or(&[][..], |(_, s)| s)
    }

    /// A remote-write request with the samples of `tenant` whose timestamp `keep`
    /// accepts (series left without samples are left out).
    pub fn write_request(
        &self,
        tenant: &str,
        keep: impl Fn(i64) -> bool,
    ) -> strata_proto::prometheus::WriteRequest {
        let timeseries = self
            .series_of(tenant)
            .iter()
            .filter_map(|s| {
                let samples: Vec<Sample> = s
                    .samples
                    .iter()
                    .filter(|(t, _)| keep(*t))
                    .map(|&(timestamp, value)| Sample { value, timestamp })
                    .collect();
                (!samples.is_empty()).then(|| TimeSeries {
                    labels: s
                        .labels
                        .iter()
                        .map(|(name, value)| Label {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    samples,
                    ..Default::default()
                })
            })
            .collect();
        strata_proto::prometheus::WriteRequest {
            timeseries,
            ..Default::default()
        }
    }
}

/// Which tenants a server answers for.
#[derive(Debug, Clone)]
pub enum Tenants {
    /// Any tenant; a request naming none is for `anonymous` (ingester, querier).
    Any,
    /// Only this one (the sidecar: one Prometheus is one tenant); a request naming none
    /// is for it, a request for another tenant finds nothing.
    Single(String),
}

/// A Store API server under test.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    /// `http://host:port` of its gRPC server.
    pub url: String,
    /// Labels the server adds to every series it answers with (the sidecar's
    /// Prometheus external labels), sorted.
    pub external_labels: Vec<(String, String)>,
    pub tenants: Tenants,
}

impl Server {
    /// The tenant whose data a request for `tenant` may see (`None`: nobody's).
    fn effective_tenant<'a>(&'a self, tenant: Option<&'a str>) -> Option<&'a str> {
        match (&self.tenants, tenant) {
            (Tenants::Any, t) => Some(t.unwrap_or("anonymous")),
            (Tenants::Single(own), None) => Some(own),
            (Tenants::Single(own), Some(t)) => (own == t).then_some(t),
        }
    }

    /// A series' labels as this server answers them: external labels added.
    fn labels_of(&self, s: &FixtureSeries) -> Vec<(String, String)> {
        let mut l = s.labels.clone();
        for (n, v) in &self.external_labels {
            if !l.iter().any(|(x, _)| x == n) {
                l.push((n.clone(), v.clone()));
            }
        }
        l.sort();
        l
    }

    fn has_external(&self, name: &str, value: &str) -> bool {
        self.external_labels
            .iter()
            .any(|(n, v)| n == name && v == value)
    }
}

type Matchers = Vec<LabelMatcher>;

fn m(op: label_matcher::Type, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: op as i32,
        name: name.into(),
        value: value.into(),
    }
}
fn eq(n: &str, v: &str) -> LabelMatcher {
    m(label_matcher::Type::Eq, n, v)
}
fn neq(n: &str, v: &str) -> LabelMatcher {
    m(label_matcher::Type::Neq, n, v)
}
fn re(n: &str, v: &str) -> LabelMatcher {
    m(label_matcher::Type::Re, n, v)
}
fn nre(n: &str, v: &str) -> LabelMatcher {
    m(label_matcher::Type::Nre, n, v)
}

/// What a case expects: the ids of the series (of the effective tenant) whose data in
/// the range make up the answer, or an error code.
#[derive(Debug, Clone)]
enum Expect {
    Ids(Vec<&'static str>),
    Error(Code),
}

fn ids(v: &[&'static str]) -> Expect {
    Expect::Ids(v.to_vec())
}

/// A request of the suite, against whichever of the three calls.
struct Case {
    name: String,
    tenant: Option<&'static str>,
    matchers: Matchers,
    mint: i64,
    maxt: i64,
    expect: Expect,
}

/// The series cases, each with whether it asks for labels only (`skip_chunks`).
fn series_cases(d: &DataSet, s: &Server) -> Vec<(Case, bool)> {
    let (b, last) = (d.base, d.last());
    let all = (b - 3_600_000, last + 3_600_000);
    let mut v = Vec::new();
    let mut add = |name: &str, tenant, matchers, (mint, maxt): (i64, i64), expect| {
        v.push((
            Case {
                name: name.into(),
                tenant,
                matchers,
                mint,
                maxt,
                expect,
            },
            false,
        ))
    };
    let a = Some(TENANT_A);
    let ups = ids(&["up_api_a", "up_api_b", "up_db"]);
    let everything = ids(&[
        "up_api_a", "up_api_b", "up_db", "req_200", "req_500", "early", "late",
    ]);
    // matchers
    add("name =", a, vec![eq("__name__", "up")], all, ups.clone());
    add(
        "= and !=",
        a,
        vec![eq("__name__", "up"), neq("job", "api")],
        all,
        ids(&["up_db"]),
    );
    add(
        "=~ on the name and a label",
        a,
        vec![re("__name__", "http_.*"), re("code", "2..")],
        all,
        ids(&["req_200"]),
    );
    add(
        "!~",
        a,
        vec![eq("__name__", "up"), nre("instance", "(a|b):1")],
        all,
        ids(&["up_db"]),
    );
    add(
        "=~ is anchored",
        a,
        vec![eq("__name__", "up"), re("job", "ap")],
        all,
        ids(&[]),
    );
    add(
        "= \"\" selects series without the label",
        a,
        vec![eq("__name__", "up"), eq("env", "")],
        all,
        ids(&["up_api_b"]),
    );
    add(
        "!= \"\" selects series with the label",
        a,
        vec![eq("__name__", "up"), neq("env", "")],
        all,
        ids(&["up_api_a", "up_db"]),
    );
    add(
        "=~ matching the empty value too",
        a,
        vec![eq("__name__", "up"), re("env", "prod|")],
        all,
        ids(&["up_api_a", "up_api_b"]),
    );
    add(
        "!~ \"\" selects series with the label",
        a,
        vec![eq("__name__", "up"), nre("env", "")],
        all,
        ids(&["up_api_a", "up_db"]),
    );
    add(
        "!~ \".*\" matches nothing",
        a,
        vec![eq("__name__", "up"), nre("env", ".*")],
        all,
        ids(&[]),
    );
    add(
        "=~ matching nothing",
        a,
        vec![re("__name__", "nomatch.*")],
        all,
        ids(&[]),
    );
    add(
        "=~ .+ matching everything",
        a,
        vec![re("__name__", ".+")],
        all,
        everything.clone(),
    );
    add(
        "no name matcher",
        a,
        vec![re("job", ".+")],
        all,
        everything.clone(),
    );
    add(
        "a label no series has, = \"\"",
        a,
        vec![eq("__name__", "up"), eq("nosuch", "")],
        all,
        ups.clone(),
    );
    add(
        "a label no series has, = value",
        a,
        vec![eq("__name__", "up"), eq("nosuch", "x")],
        all,
        ids(&[]),
    );
    add(
        "non-ASCII value",
        a,
        vec![eq("path", "/v1/ö")],
        all,
        ids(&["req_200", "req_500"]),
    );
    // A server with external labels has them on every series, so matchers see them.
    add(
        "= on an external label (cluster=\"c1\")",
        a,
        vec![eq("__name__", "up"), eq("cluster", "c1")],
        all,
        if s.has_external("cluster", "c1") {
            ups.clone()
        } else {
            ids(&[])
        },
    );
    add(
        "!= on an external label (cluster!=\"c1\")",
        a,
        vec![eq("__name__", "up"), neq("cluster", "c1")],
        all,
        if s.has_external("cluster", "c1") {
            ids(&[])
        } else {
            ups.clone()
        },
    );
    add(
        "invalid regex",
        a,
        vec![re("job", "(")],
        all,
        Expect::Error(Code::InvalidArgument),
    );
    add(
        "only matchers that match the empty value",
        a,
        vec![eq("env", "")],
        all,
        ids(&["up_api_b", "req_200", "req_500", "early", "late"]),
    );
    add("no matchers", a, vec![], all, everything.clone());
    // time ranges: both ends inclusive
    add(
        "range inside, ends on samples",
        a,
        vec![eq("__name__", "up")],
        (b + 100_000, b + 200_000),
        ups.clone(),
    );
    add(
        "range ending on the first sample",
        a,
        vec![eq("__name__", "up")],
        (b - 3_600_000, b),
        ups.clone(),
    );
    add(
        "range starting on the last sample",
        a,
        vec![eq("__name__", "up")],
        (last, last + 3_600_000),
        ups.clone(),
    );
    add(
        "range wholly before",
        a,
        vec![eq("__name__", "up")],
        (b - 7_200_000, b - 1),
        ids(&[]),
    );
    add(
        "range wholly after",
        a,
        vec![eq("__name__", "up")],
        (last + 1, last + 7_200_000),
        ids(&[]),
    );
    add(
        "range in the gap between two series",
        a,
        vec![eq("job", "batch")],
        (b + 600_000, b + 900_000),
        ids(&[]),
    );
    add(
        "range over the ends of two series",
        a,
        vec![eq("job", "batch")],
        (b + 400_000, b + SPLIT_MS + 100_000),
        ids(&["early", "late"]),
    );
    add(
        "range across the split (block and head)",
        a,
        vec![eq("__name__", "up")],
        (b + SPLIT_MS - 55_000, b + SPLIT_MS + 45_000),
        ups.clone(),
    );
    // tenants
    add(
        "tenant B sees its own data only",
        Some(TENANT_B),
        vec![eq("__name__", "up")],
        all,
        ids(&["b_up"]),
    );
    add(
        "tenant B: A's metric",
        Some(TENANT_B),
        vec![eq("__name__", "http_requests_total")],
        all,
        ids(&[]),
    );
    add(
        "tenant A: B's metric",
        a,
        vec![eq("__name__", "only_b")],
        all,
        ids(&[]),
    );
    add(
        "an unknown tenant sees nothing",
        Some("nobody"),
        vec![re("__name__", ".+")],
        all,
        ids(&[]),
    );
    add(
        "no tenant header",
        None,
        vec![eq("__name__", "up")],
        all,
        ups.clone(),
    );
    add(
        "invalid tenant",
        Some("a/b"),
        vec![eq("__name__", "up")],
        all,
        Expect::Error(Code::InvalidArgument),
    );
    add(
        "invalid tenant (..)",
        Some(".."),
        vec![eq("__name__", "up")],
        all,
        Expect::Error(Code::InvalidArgument),
    );
    // With skip_chunks: the same series, labels only.
    let mut skipped: Vec<(Case, bool)> = v
        .iter()
        .filter(|(c, _)| {
            matches!(
                c.name.as_str(),
                "name ="
                    | "range in the gap between two series"
                    | "range ending on the first sample"
            )
        })
        .map(|(c, _)| {
            (
                Case {
                    name: format!("{} (skip_chunks)", c.name),
                    tenant: c.tenant,
                    matchers: c.matchers.clone(),
                    mint: c.mint,
                    maxt: c.maxt,
                    expect: c.expect.clone(),
                },
                true,
            )
        })
        .collect();
    v.append(&mut skipped);
    v
}

/// Label-name cases: the expected names are those of the listed series (plus the
/// server's external labels when any series is listed).
fn label_cases(d: &DataSet) -> Vec<Case> {
    let (b, last) = (d.base, d.last());
    let all = (b - 3_600_000, last + 3_600_000);
    let a = Some(TENANT_A);
    let everything = ids(&[
        "up_api_a", "up_api_b", "up_db", "req_200", "req_500", "early", "late",
    ]);
    let c = |name: &str, tenant, matchers, (mint, maxt): (i64, i64), expect| Case {
        name: name.into(),
        tenant,
        matchers,
        mint,
        maxt,
        expect,
    };
    vec![
        c("no matchers", a, vec![], all, everything.clone()),
        c(
            "with a matcher",
            a,
            vec![eq("job", "batch")],
            all,
            ids(&["early", "late"]),
        ),
        c(
            "with = \"\"",
            a,
            vec![eq("__name__", "up"), eq("env", "")],
            all,
            ids(&["up_api_b"]),
        ),
        c(
            "with a regex matching nothing",
            a,
            vec![re("__name__", "nomatch.*")],
            all,
            ids(&[]),
        ),
        c(
            "no matchers, a range before the late series",
            a,
            vec![],
            (b + 100_000, b + 200_000),
            ids(&[
                "up_api_a", "up_api_b", "up_db", "req_200", "req_500", "early",
            ]),
        ),
        c(
            "with a matcher, a range between its series",
            a,
            vec![eq("job", "batch")],
            (b + 600_000, b + 900_000),
            ids(&[]),
        ),
        c(
            "no matchers, a range wholly after",
            a,
            vec![],
            (last + 1, last + 7_200_000),
            ids(&[]),
        ),
        c(
            "tenant B",
            Some(TENANT_B),
            vec![],
            all,
            ids(&["b_up", "b_only"]),
        ),
        c("an unknown tenant", Some("nobody"), vec![], all, ids(&[])),
        c("no tenant header", None, vec![], all, everything),
        c(
            "an empty range (start after end)",
            a,
            vec![],
            (last, b),
            ids(&[]),
        ),
        c(
            "invalid tenant",
            Some("a/b"),
            vec![],
            all,
            Expect::Error(Code::InvalidArgument),
        ),
        c(
            "invalid regex",
            a,
            vec![re("job", "(")],
            all,
            Expect::Error(Code::InvalidArgument),
        ),
    ]
}

/// Label names whose values are asked for with each label case.
const VALUE_LABELS: [&str; 6] = ["__name__", "job", "env", "phase", "late_only", "cluster"];

/// One decoded series of an answer.
#[derive(Debug, PartialEq)]
struct Got {
    labels: Vec<(String, String)>,
    samples: Vec<(i64, u64)>,
}

fn request<T>(msg: T, tenant: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = tenant {
        r.metadata_mut()
            .insert("x-scope-orgid", t.parse().expect("ascii tenant"));
    }
    r
}

/// Run every case against `server`, loaded with `data`; panics listing every case
/// that failed (not just the first), so one run shows all the drift.
pub fn run(server: &Server, data: &DataSet) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let failures = rt.block_on(run_async(server, data));
    assert!(
        failures.is_empty(),
        "{}: {} case(s) failed:\n{}",
        server.name,
        failures.len(),
        failures.join("\n")
    );
}

async fn run_async(server: &Server, data: &DataSet) -> Vec<String> {
    let mut client = StoreClient::connect(server.url.clone())
        .await
        .unwrap_or_else(|e| panic!("{}: connect {}: {e}", server.name, server.url))
        .max_decoding_message_size(256 << 20);
    let mut failures = Vec::new();
    for (case, skip_chunks) in series_cases(data, server) {
        if let Err(e) = series_case(&mut client, server, data, &case, skip_chunks).await {
            failures.push(format!("series, {}: {e}", case.name));
        }
    }
    for case in label_cases(data) {
        if let Err(e) = names_case(&mut client, server, data, &case).await {
            failures.push(format!("label names, {}: {e}", case.name));
        }
        for label in VALUE_LABELS {
            if let Err(e) = values_case(&mut client, server, data, &case, label).await {
                failures.push(format!("label values of {label}, {}: {e}", case.name));
            }
        }
    }
    failures
}

/// The fixture series a case's ids name, as `server` should see them.
fn expected_series<'a>(
    server: &Server,
    data: &'a DataSet,
    tenant: Option<&str>,
    ids: &[&str],
) -> Vec<&'a FixtureSeries> {
    let Some(t) = server.effective_tenant(tenant) else {
        return Vec::new();
    };
    let series = data.series_of(t);
    if series.is_empty() {
        // a tenant without data (`anonymous`, `nobody`): nothing, whatever the case lists
        return Vec::new();
    }
    ids.iter()
        .map(|id| {
            series
                .iter()
                .find(|s| s.id == *id)
                .unwrap_or_else(|| panic!("case names {id}, not a series of {t}"))
        })
        .collect()
}

/// Compare a call's result with an expected error code; `Ok(None)` when a value is
/// expected instead.
fn check_error<T>(
    got: &Result<T, tonic::Status>,
    expect: &Expect,
) -> Result<Option<Vec<&'static str>>, String> {
    match (got, expect) {
        (Err(s), Expect::Error(code)) if s.code() == *code => Ok(None),
        (Err(s), Expect::Error(code)) => Err(format!("want {code:?}, got {s:?}")),
        (Ok(_), Expect::Error(code)) => Err(format!("want {code:?}, got an answer")),
        (Err(s), Expect::Ids(_)) => Err(format!("unexpected error {s:?}")),
        (Ok(_), Expect::Ids(ids)) => Ok(Some(ids.clone())),
    }
}

async fn series_case(
    client: &mut StoreClient<tonic::transport::Channel>,
    server: &Server,
    data: &DataSet,
    case: &Case,
    skip_chunks: bool,
) -> Result<(), String> {
    let req = SeriesRequest {
        min_time: case.mint,
        max_time: case.maxt,
        matchers: case.matchers.clone(),
        skip_chunks,
        ..Default::default()
    };
    // An error may come as the call's status or as the stream's first item.
    let got = match client.series(request(req, case.tenant)).await {
        Ok(resp) => {
            let mut stream = resp.into_inner();
            let mut frames = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break Ok(frames),
                    Err(e) => break Err(e),
                }
            }
        }
        Err(e) => Err(e),
    };
    let Some(ids) = check_error(&got, &case.expect)? else {
        return Ok(());
    };
    let frames = got.expect("checked");
    let mut series = Vec::new();
    for f in frames {
        match f.result {
            Some(series_response::Result::Series(s)) => series.push(s),
            Some(series_response::Result::Warning(w)) => {
                return Err(format!("warning (partial answer): {w}"))
            }
            _ => {}
        }
    }
    let mut got = Vec::new();
    for s in &series {
        let labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        if !labels.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(format!("labels not sorted or not unique: {labels:?}"));
        }
        if skip_chunks && !s.chunks.is_empty() {
            return Err(format!("{labels:?}: chunks despite skip_chunks"));
        }
        let mut samples: Vec<(i64, f64)> = Vec::new();
        for c in &s.chunks {
            let Some(raw) = &c.raw else {
                return Err(format!("{labels:?}: a chunk without raw data"));
            };
            if raw.r#type != chunk::Encoding::Xor as i32 {
                return Err(format!("{labels:?}: chunk encoding {}", raw.r#type));
            }
            let decoded: Vec<(i64, f64)> = strata_tsdb::chunkenc::XorIter::new(&raw.data).collect();
            let (Some(first), Some(lst)) = (decoded.first(), decoded.last()) else {
                return Err(format!("{labels:?}: an empty chunk"));
            };
            if (first.0, lst.0) != (c.min_time, c.max_time) {
                return Err(format!(
                    "{labels:?}: chunk says [{}, {}], holds [{}, {}]",
                    c.min_time, c.max_time, first.0, lst.0
                ));
            }
            if c.max_time < case.mint || c.min_time > case.maxt {
                return Err(format!(
                    "{labels:?}: chunk [{}, {}] outside the range [{}, {}]",
                    c.min_time, c.max_time, case.mint, case.maxt
                ));
            }
            if samples.last().is_some_and(|p| p.0 >= first.0) {
                return Err(format!(
                    "{labels:?}: chunks overlap or are out of order at {}",
                    first.0
                ));
            }
            samples.extend(decoded);
        }
        got.push((labels, samples));
    }
    if !got.windows(2).all(|w| w[0].0 < w[1].0) {
        let order: Vec<_> = got.iter().map(|g| &g.0).collect();
        return Err(format!("series not sorted or not unique: {order:?}"));
    }
    // Every decoded sample, in range or not, must be one that was written.
    let tenant_data = server
        .effective_tenant(case.tenant)
        .map_or(&[][..], |t| data.series_of(t));
    for (labels, samples) in &got {
        let Some(src) = tenant_data.iter().find(|s| &server.labels_of(s) == labels) else {
            return Err(format!("a series never written: {labels:?}"));
        };
        let written: BTreeMap<i64, u64> =
            src.samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
        if let Some(bad) = samples
            .iter()
            .find(|(t, v)| written.get(t) != Some(&v.to_bits()))
        {
            return Err(format!("{labels:?}: sample {bad:?} was never written"));
        }
    }
    let in_range = |s: &[(i64, f64)]| -> Vec<(i64, u64)> {
        s.iter()
            .filter(|(t, _)| *t >= case.mint && *t <= case.maxt)
            .map(|(t, v)| (*t, v.to_bits()))
            .collect()
    };
    let got: Vec<Got> = got
        .iter()
        .map(|(labels, samples)| Got {
            labels: labels.clone(),
            samples: if skip_chunks {
                Vec::new()
            } else {
                in_range(samples)
            },
        })
        .collect();
    let mut want: Vec<Got> = expected_series(server, data, case.tenant, &ids)
        .into_iter()
        .map(|s| Got {
            labels: server.labels_of(s),
            samples: if skip_chunks {
                Vec::new()
            } else {
                in_range(&s.samples)
            },
        })
        .collect();
    want.sort_by(|a, b| a.labels.cmp(&b.labels));
    if got != want {
        return Err(format!("\n  want {}\n  got  {}", show(&want), show(&got)));
    }
    Ok(())
}

/// A short form of series for failure messages: labels and sample count and span.
fn show(v: &[Got]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|g| {
            let l: Vec<String> = g.labels.iter().map(|(n, v)| format!("{n}={v}")).collect();
            match (g.samples.first(), g.samples.last()) {
                (Some(f), Some(l2)) => format!(
                    "{{{}}} {} samples [{}, {}]",
                    l.join(","),
                    g.samples.len(),
                    f.0,
                    l2.0
                ),
                _ => format!("{{{}}} no samples", l.join(",")),
            }
        })
        .collect();
    format!("[{}]", parts.join("; "))
}

async fn names_case(
    client: &mut StoreClient<tonic::transport::Channel>,
    server: &Server,
    data: &DataSet,
    case: &Case,
) -> Result<(), String> {
    let req = LabelNamesRequest {
        start: case.mint,
        end: case.maxt,
        matchers: case.matchers.clone(),
        ..Default::default()
    };
    let got = client
        .label_names(request(req, case.tenant))
        .await
        .map(|r| r.into_inner());
    let Some(ids) = check_error(&got, &case.expect)? else {
        return Ok(());
    };
    let got = got.expect("checked");
    if !got.warnings.is_empty() {
        return Err(format!("warnings (partial answer): {:?}", got.warnings));
    }
    let want: BTreeSet<String> = expected_series(server, data, case.tenant, &ids)
        .into_iter()
        .flat_map(|s| server.labels_of(s).into_iter().map(|(n, _)| n))
        .collect();
    let want: Vec<String> = want.into_iter().collect();
    if got.names != want {
        return Err(format!("want {want:?}, got {:?}", got.names));
    }
    Ok(())
}

async fn values_case(
    client: &mut StoreClient<tonic::transport::Channel>,
    server: &Server,
    data: &DataSet,
    case: &Case,
    label: &str,
) -> Result<(), String> {
    let req = LabelValuesRequest {
        label: label.into(),
        start: case.mint,
        end: case.maxt,
        matchers: case.matchers.clone(),
        ..Default::default()
    };
    let got = client
        .label_values(request(req, case.tenant))
        .await
        .map(|r| r.into_inner());
    let Some(ids) = check_error(&got, &case.expect)? else {
        return Ok(());
    };
    let got = got.expect("checked");
    if !got.warnings.is_empty() {
        return Err(format!("warnings (partial answer): {:?}", got.warnings));
    }
    let want: BTreeSet<String> = expected_series(server, data, case.tenant, &ids)
        .into_iter()
        .filter_map(|s| {
            server
                .labels_of(s)
                .into_iter()
                .find(|(n, _)| n == label)
                .map(|(_, v)| v)
        })
        .collect();
    let want: Vec<String> = want.into_iter().collect();
    if got.values != want {
        return Err(format!("want {want:?}, got {:?}", got.values));
    }
    Ok(())
}
