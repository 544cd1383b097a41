//! The real `strata query-frontend` (and `strata all --query-frontend.enabled`) in front
//! of real queriers: split and merged range answers equal Prometheus 2.42's and the
//! unsplit querier's, cold, from the cache and shifted by a step, over hours and over
//! days of blocks; cached answers stay true as samples arrive; a flooding tenant gets
//! 429 while another's queries go through; `stats=all` is the sum of the parts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use strata_testkit::gen::{openmetrics, GenSpec};
use strata_testkit::http::{encode, get, get_with};
use strata_testkit::procs::{copy_dir, promtool, run_ok, strata, Prometheus};
use strata_testkit::strata::{series, write_request, StrataProc};

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;
const D: i64 = 24 * H;

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn range_path(q: &str, start: i64, end: i64, step: i64) -> String {
    format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={}",
        encode(q),
        secs(start),
        secs(end),
        secs(step)
    )
}

/// A series' points as (time, value text), by its labels; or the error.
type Points = BTreeMap<String, Vec<(String, String)>>;

fn points(body: &str) -> Result<Points, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().ok_or("no result")? {
        let pts = s["values"]
            .as_array()
            .ok_or("no values")?
            .iter()
            .map(|p| (p[0].to_string(), p[1].as_str().unwrap_or("").to_string()))
            .collect();
        out.insert(s["metric"].to_string(), pts);
    }
    Ok(out)
}

/// Equal series and timestamps, values within 1e-9 relative (Prometheus) or exactly
/// (`exact`: the same querier, split or not).
fn differ(what: &str, ours: &str, theirs: &str, exact: bool) -> Option<String> {
    let (o, t) = match (points(ours), points(theirs)) {
        (Err(_), Err(_)) => return None,
        (Ok(o), Ok(t)) => (o, t),
        (o, t) => return Some(format!("{what}: {:?} vs {:?}", o.err(), t.err())),
    };
    if o.keys().ne(t.keys()) {
        return Some(format!(
            "{what}: series differ ({} vs {})",
            o.len(),
            t.len()
        ));
    }
    for (k, a) in &o {
        let b = &t[k];
        if a.len() != b.len() {
            return Some(format!("{what}: {k}: {} points vs {}", a.len(), b.len()));
        }
        for (x, y) in a.iter().zip(b) {
            let same = x == y
                || (!exact && x.0 == y.0 && {
                    let (p, q) = (x.1.parse::<f64>().unwrap(), y.1.parse::<f64>().unwrap());
                    (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-9 * p.abs().max(q.abs())
                });
            if !same {
                return Some(format!("{what}: {k}: {x:?} vs {y:?}"));
            }
        }
    }
    None
}

fn bucket_config(dir: &Path, bucket: &Path) -> String {
    let cfg = dir.join("bucket.yml");
    std::fs::write(
        &cfg,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ),
    )
    .unwrap();
    format!("--objstore.config-file={}", cfg.display())
}

fn start_frontend(dir: &Path, downstream: &str, extra: &[&str]) -> StrataProc {
    let mut args = vec![
        "query-frontend".to_string(),
        format!("--query-frontend.downstream-url={downstream}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    StrataProc::start_http_only(dir, &args)
}

/// Range queries whose answers depend on where a split falls if anything does: range
/// functions whose windows cross part boundaries, offsets, subqueries, `time()`,
/// aggregations and top-k, binary operations, and `@` (which runs unsplit).
fn range_corpus() -> Vec<&'static str> {
    vec![
        "http_requests_total",
        r#"http_requests_total{method=~"P.*",code!="500"}"#,
        r#"rate(http_requests_total{code="200"}[5m])"#,
        r#"increase(http_requests_total{code="200"}[17m])"#,
        r#"irate(http_requests_total{code="200"}[1h])"#,
        r#"resets(http_requests_total{code="200"}[1h])"#,
        r#"deriv(http_requests_total{code="200"}[17m])"#,
        r#"avg_over_time(temperature_celsius{zone="cpu"}[17m])"#,
        r#"max_over_time(temperature_celsius{zone="cpu"}[1h])"#,
        r#"quantile_over_time(0.9, temperature_celsius{zone="cpu"}[5m])"#,
        r#"last_over_time(temperature_celsius{zone="cpu"}[5m])"#,
        "sum by (method) (rate(http_requests_total[5m]))",
        "count without (instance, code) (http_requests_total)",
        "max by (job) (http_requests_total)",
        "stddev by (method) (rate(http_requests_total[5m]))",
        "topk(3, rate(http_requests_total[5m]))",
        "bottomk(2, sum by (instance) (rate(http_requests_total[10m])))",
        "quantile(0.5, rate(http_requests_total[5m]))",
        "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[10m])))",
        r#"sum by (instance) (rate(http_requests_total{code="500"}[5m])) / sum by (instance) (rate(http_requests_total[5m]))"#,
        "http_requests_total offset 10m",
        "rate(http_requests_total[5m] offset 30m)",
        "http_requests_total offset -5m",
        "max_over_time(rate(http_requests_total{method=\"GET\"}[5m])[30m:1m])",
        "avg_over_time(sum(rate(http_requests_total[5m]))[20m:2m])",
        "timestamp(http_requests_total{method=\"GET\"})",
        "time()",
        "vector(1)",
        "absent(nonexistent_metric)",
        r#"label_replace(http_requests_total{method="GET"}, "host", "$1", "instance", "(.*):.*")"#,
        r#"temperature_celsius{zone="cpu"} > 50"#,
        "sort_desc(sum by (method) (http_requests_total))",
    ]
}

/// The generated data set in Prometheus 2.42 and in a bucket under one querier.
fn prometheus_and_querier(tmp: &Path) -> (GenSpec, Prometheus, StrataProc) {
    let spec = GenSpec {
        extremes: false,
        ..GenSpec::default()
    };
    let (text, _) = openmetrics(&spec);
    let input = tmp.join("in.om");
    std::fs::write(&input, text).unwrap();
    let blocks = tmp.join("blocks");
    run_ok(
        Command::new(promtool())
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(&blocks),
    );
    copy_dir(&blocks, &tmp.join("prom"));
    let prom = Prometheus::start(&tmp.join("prom"), "global: {}\n", &[]);
    let bucket = tmp.join("bucket");
    copy_dir(&blocks, &bucket.join("anonymous"));
    let cfg = bucket_config(tmp, &bucket);
    let querier = StrataProc::start_http_only(&tmp.join("q"), &["querier", &cfg]);
    (spec, prom, querier)
}

#[test]
fn split_range_answers_equal_prometheus_and_the_unsplit_querier() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec, prom, querier) = prometheus_and_querier(tmp.path());
    // 20-minute parts: the corpus' 105-minute range becomes six parts.
    let fe = start_frontend(
        &tmp.path().join("fe"),
        &querier.url(),
        &["--query-range.split-interval=20m"],
    );

    let step = 97_000;
    let start = spec.start_ms + 70 * MIN + 1;
    let end = spec.start_ms + 175 * MIN + 1;
    let mut failures = Vec::new();
    let mut checked = 0;
    // cold, then from the cache, then shifted by one step (full parts reused)
    for (round, shift) in [("cold", 0), ("cached", 0), ("shifted", step)] {
        for q in range_corpus() {
            let path = range_path(q, start + shift, end + shift, step);
            let (code, ours) = get(&format!("{}{path}", fe.url())).unwrap();
            let (_, unsplit) = get(&format!("{}{path}", querier.url())).unwrap();
            let (_, theirs) = get(&format!("{}{path}", prom.url())).unwrap();
            assert!(points(&ours).is_ok() || code >= 400, "{q}: {ours}");
            failures.extend(differ(
                &format!("{round} {q} vs Prometheus"),
                &ours,
                &theirs,
                false,
            ));
            failures.extend(differ(
                &format!("{round} {q} vs unsplit"),
                &ours,
                &unsplit,
                true,
            ));
            checked += 2;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let parts = fe.metric("strata_query_frontend_split_queries_total");
    let hits = fe.metric("strata_query_frontend_results_cache_hits_total");
    let n = range_corpus().len() as f64;
    assert!(parts >= 3.0 * 5.0 * n, "only {parts} parts");
    // every part of the second round, and all but the edges of the third, were cached
    assert!(
        hits >= 5.0 * (n - 1.0) + 4.0 * (n - 1.0),
        "{hits} cache hits"
    );

    // Instant queries and the label API pass through unchanged.
    for path in [
        format!(
            "/api/v1/query?query={}&time={}",
            encode("sum(http_requests_total)"),
            secs(start)
        ),
        "/api/v1/labels".to_string(),
        format!(
            "/api/v1/series?match[]={}&start={}&end={}",
            encode("temperature_celsius"),
            secs(start),
            secs(end)
        ),
    ] {
        let (c1, a) = get(&format!("{}{path}", fe.url())).unwrap();
        let (c2, b) = get(&format!("{}{path}", querier.url())).unwrap();
        assert_eq!((c1, c2), (200, 200), "{path}: {a}");
        let (a, b): (Value, Value) = (
            serde_json::from_str(&a).unwrap(),
            serde_json::from_str(&b).unwrap(),
        );
        assert_eq!(a, b, "{path}");
    }
    // A query the querier refuses is refused the same way.
    let path = range_path("rate(", start, end, step);
    let (c1, a) = get(&format!("{}{path}", fe.url())).unwrap();
    let (c2, b) = get(&format!("{}{path}", querier.url())).unwrap();
    assert_eq!((c1, &a), (c2, &b));
    assert_eq!(c1, 400);
}

/// Aggregations the frontend shards (and a few it must not), over the generated set.
fn shard_corpus() -> Vec<&'static str> {
    vec![
        "sum(http_requests_total)",
        "sum by (method) (rate(http_requests_total[5m]))",
        "sum without (instance) (increase(http_requests_total[17m]))",
        "count(http_requests_total)",
        "count by (code) (http_requests_total > 10)",
        "min by (zone) (temperature_celsius)",
        "max without (instance) (max_over_time(temperature_celsius[1h]))",
        "avg(temperature_celsius)",
        "avg by (method) (rate(http_requests_total[5m]) * 60)",
        "group by (method) (http_requests_total)",
        "topk(3, rate(http_requests_total[5m]))",
        "topk by (method) (1, http_requests_total)",
        "bottomk(2, temperature_celsius)",
        "sum by (le) (rate(request_duration_seconds_bucket[10m]))",
        "max(max_over_time(rate(http_requests_total[5m])[30m:1m]))",
        "sum(http_requests_total offset 10m)",
        r#"sum({__name__=~"http_requests_total|temperature_celsius"})"#,
        "count(-temperature_celsius)",
        // not sharded: they combine series, or have no series
        "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[10m])))",
        "sum(rate(http_requests_total[5m])) / 2",
        "quantile(0.5, temperature_celsius)",
        "sum(vector(1))",
    ]
}

#[test]
fn sharded_range_answers_equal_prometheus_and_the_unsharded_querier() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec, prom, querier) = prometheus_and_querier(tmp.path());
    let fe = start_frontend(
        &tmp.path().join("fe"),
        &querier.url(),
        &[
            "--query-range.split-interval=30m",
            "--query-frontend.query-sharding-total-shards=4",
            "--query-range.results-cache.max-size-bytes=0",
        ],
    );
    let step = 97_000;
    let start = spec.start_ms + 70 * MIN + 1;
    let end = spec.start_ms + 175 * MIN + 1;
    let mut failures = Vec::new();
    for q in shard_corpus().into_iter().chain(range_corpus()) {
        let path = range_path(q, start, end, step);
        let (code, ours) = get(&format!("{}{path}", fe.url())).unwrap();
        let (_, unsharded) = get(&format!("{}{path}", querier.url())).unwrap();
        let (_, theirs) = get(&format!("{}{path}", prom.url())).unwrap();
        assert!(points(&ours).is_ok() || code >= 400, "{q}: {ours}");
        failures.extend(differ(&format!("{q} vs Prometheus"), &ours, &theirs, false));
        // Shards add floats in another order: equal within 1e-9, not bit for bit.
        failures.extend(differ(
            &format!("{q} vs unsharded"),
            &ours,
            &unsharded,
            false,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // 18 of the shard corpus and 4 of the range corpus shard, 4 shards in each part
    // (avg: a sum and a count per shard).
    let rewrites = fe.metric("strata_query_frontend_query_sharding_rewrites_succeeded_total");
    assert_eq!(rewrites, 18.0 + 4.0);
    let queries = (shard_corpus().len() + range_corpus().len()) as f64;
    let parts = fe.metric("strata_query_frontend_split_queries_total") / queries;
    assert!(parts >= 4.0, "{parts} parts");
    let sent = fe.metric("strata_query_frontend_sharded_queries_total");
    assert_eq!(sent, (22.0 + 2.0) * 4.0 * parts);
    // The answer says it was sharded.
    let path = range_path("sum(http_requests_total)", start, end, step) + "&stats=all";
    let (_, body) = get(&format!("{}{path}", fe.url())).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["stats"]["frontend"]["shards"], 4, "{body}");
    assert_eq!(
        v["data"]["stats"]["frontend"]["shardedQueries"], 16,
        "{body}"
    );

    // Many shards of many parts, one slot downstream and a short tenant queue: the
    // query's own shard queries (at most --query-frontend.max-parallelism in flight)
    // do not fill its queue, and the answer is the same.
    let narrow = start_frontend(
        &tmp.path().join("fe-narrow"),
        &querier.url(),
        &[
            "--query-range.split-interval=20m",
            "--query-frontend.query-sharding-total-shards=16",
            "--query-frontend.max-parallelism=4",
            "--query-frontend.max-concurrent=1",
            "--query-frontend.max-outstanding-requests-per-tenant=10",
        ],
    );
    let q = "sum by (method) (rate(http_requests_total[5m]))";
    let path = range_path(q, start, end, step);
    let (code, ours) = get(&format!("{}{path}", narrow.url())).unwrap();
    let (_, unsharded) = get(&format!("{}{path}", querier.url())).unwrap();
    assert_eq!(code, 200, "{ours}");
    assert_eq!(differ(q, &ours, &unsharded, false), None);
    assert!(narrow.metric("strata_query_frontend_sharded_queries_total") >= 16.0 * 5.0);

    // The querier's side: every series is in exactly one shard, and a shard is a part.
    let count = |q: &str| -> f64 {
        let path = format!("/api/v1/query?query={}&time={}", encode(q), secs(start));
        let (c, body) = get(&format!("{}{path}", querier.url())).unwrap();
        assert_eq!(c, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map_or(0.0, |s| s.parse().unwrap())
    };
    let all = count("count(http_requests_total)");
    let shards: Vec<f64> = (1..=3)
        .map(|i| {
            count(&format!(
                r#"count(http_requests_total{{__query_shard__="{i}_of_3"}})"#
            ))
        })
        .collect();
    assert!(all >= 6.0, "{all}");
    assert_eq!(shards.iter().sum::<f64>(), all, "{shards:?}");
    assert!(shards.iter().all(|&n| n < all), "{shards:?}");
    // The bucket reads only the shard's series (the others' chunks are not fetched).
    let fetched = |q: &str| -> u64 {
        let path = format!(
            "/api/v1/query?query={}&time={}&stats=all",
            encode(q),
            secs(start)
        );
        let (_, body) = get(&format!("{}{path}", querier.url())).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["stats"]["strata"]["seriesFetched"]
            .as_u64()
            .unwrap()
    };
    let whole = fetched("count(http_requests_total)");
    let one = fetched(r#"count(http_requests_total{__query_shard__="1_of_3"})"#);
    assert!(one < whole, "{one} of {whole} series fetched");
    // A shard label value that is not Mimir's form is an error naming it.
    let path = format!(
        "/api/v1/query?query={}",
        encode(r#"count(http_requests_total{__query_shard__="4_of_3"})"#)
    );
    let (c, body) = get(&format!("{}{path}", querier.url())).unwrap();
    assert!(c >= 400 && body.contains("invalid shard ID"), "{c} {body}");
}

#[test]
fn days_of_blocks_split_by_day_equal_the_unsplit_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let end = 1_700_006_400_000i64;
    let bucket = tmp.path().join("bucket");
    run_ok(strata().args([
        "tools",
        "tsdb",
        "synth",
        "--series=240",
        "--metrics=4",
        "--duration=3d",
        "--interval=60s",
        &format!("--end={end}"),
        &bucket.join("anonymous").display().to_string(),
    ]));
    let cfg = bucket_config(tmp.path(), &bucket);
    let querier = StrataProc::start_http_only(&tmp.path().join("q"), &["querier", &cfg]);
    let fe = start_frontend(&tmp.path().join("fe"), &querier.url(), &[]);
    let step = 5 * MIN;
    // off the day and off the step's multiples: parts start on the query's own grid
    let start = end - 3 * D + 2 * H + 17 * MIN + 7_000;
    let stop = end - 20 * MIN;
    let queries = [
        "sum by (namespace) (rate(loadgen_metric_0_total[5m]))",
        "avg_over_time(loadgen_metric_1[1h])",
        "max_over_time(sum(loadgen_metric_1)[30m:5m])",
        r#"loadgen_metric_1{namespace="ns-3"} offset 1h"#,
        "count(loadgen_metric_1 @ end())",
        "vector(time())",
    ];
    let mut failures = Vec::new();
    for (round, shift) in [("cold", 0), ("cached", 0), ("shifted", step)] {
        for q in queries {
            let path = range_path(q, start + shift, stop + shift, step);
            let (c, ours) = get(&format!("{}{path}", fe.url())).unwrap();
            let (_, unsplit) = get(&format!("{}{path}", querier.url())).unwrap();
            assert_eq!(c, 200, "{q}: {ours}");
            assert!(!points(&ours).unwrap().is_empty(), "{q}: empty");
            failures.extend(differ(&format!("{round} {q}"), &ours, &unsplit, true));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // 3 days, 3 parts per splittable query per round (the `@` query runs whole and
    // uncached); cached: every part; shifted: all but the last.
    assert_eq!(
        fe.metric("strata_query_frontend_split_queries_total"),
        3.0 * (5.0 * 3.0 + 1.0)
    );
    let hits = fe.metric("strata_query_frontend_results_cache_hits_total");
    assert_eq!(hits, 5.0 * 3.0 + 5.0 * 2.0);
}

fn push_counter(s: &StrataProc, tenant: &str, name: &str, n: usize, from: i64, to: i64) {
    let ts = (0..n)
        .map(|i| {
            let pts: Vec<(i64, f64)> = (from / 15_000..to / 15_000)
                .map(|k| (k * 15_000, (k * (i as i64 + 1)) as f64))
                .collect();
            series(&[("__name__", name), ("i", &i.to_string())], &pts)
        })
        .collect();
    let (code, body) = s.push(Some(tenant), &write_request(ts));
    assert!(code < 300, "{code} {body}");
}

fn get_tenant(url: &str, tenant: &str) -> (u16, String) {
    get_with(url, &[("X-Scope-OrgID", tenant)]).unwrap()
}

#[test]
fn cached_answers_stay_true_as_samples_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(&tmp.path().join("all"), &[]);
    let fe = start_frontend(
        &tmp.path().join("fe"),
        &s.url(),
        &[
            "--query-range.split-interval=30m",
            "--query-range.max-freshness=10m",
        ],
    );
    let now = now_ms();
    let step = MIN;
    let end = (now / step + 2) * step;
    let start = end - 2 * H;
    // Everything older than five minutes is there before the first query.
    let cut = now - 5 * MIN;
    push_counter(&s, "t1", "m", 5, start - 10 * MIN, cut);
    let queries = ["sum by (i) (rate(m[2m]))", "m", "count_over_time(m[10m])"];
    let ask = |q: &str| {
        let path = range_path(q, start, end, step);
        let a = get_tenant(&format!("{}{path}", fe.url()), "t1");
        let b = get_tenant(&format!("{}{path}", s.url()), "t1");
        assert_eq!((a.0, b.0), (200, 200), "{q}: {}", a.1);
        (a.1, b.1)
    };
    let first: Vec<String> = queries
        .iter()
        .map(|q| {
            let (a, b) = ask(q);
            assert_eq!(differ(q, &a, &b, true), None);
            a
        })
        .collect();
    assert_eq!(
        fe.metric("strata_query_frontend_results_cache_hits_total"),
        0.0
    );
    // New samples, inside the freshness window.
    push_counter(&s, "t1", "m", 5, cut, now_ms());
    for (q, before) in queries.iter().zip(&first) {
        let (a, b) = ask(q);
        assert_eq!(differ(q, &a, &b, true), None);
        assert_ne!(&a, before, "{q}: the new samples are not in the answer");
    }
    // The parts older than the window came from the cache.
    assert!(fe.metric("strata_query_frontend_results_cache_hits_total") >= 3.0 * 3.0);
    // Another tenant shares nothing with t1, cached or not.
    let (c, b) = get_tenant(
        &format!("{}{}", fe.url(), range_path("m", start, end, step)),
        "t2",
    );
    assert_eq!(c, 200);
    assert!(points(&b).unwrap().is_empty(), "{b}");
}

#[test]
fn a_flooding_tenant_gets_429_while_another_tenants_queries_go_through() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(&tmp.path().join("all"), &[]);
    let fe = start_frontend(
        &tmp.path().join("fe"),
        &s.url(),
        &[
            "--query-frontend.max-concurrent=1",
            "--query-frontend.max-outstanding-requests-per-tenant=20",
            "--query-range.results-cache.max-size-bytes=0",
            "--query-range.split-interval=10m",
        ],
    );
    let end = now_ms();
    let start = end - 2 * H;
    for t in ["heavy", "light"] {
        push_counter(&s, t, "m", 20, start, end);
    }
    // 12 parts a query: one query fits in a tenant's queue, eight at once do not.
    let url = format!(
        "{}{}",
        fe.url(),
        range_path("sum(rate(m[5m]))", start, end, 30_000)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let (url, stop, refused) = (url.clone(), stop.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut bodies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (c, b) = get_tenant(&url, "heavy");
                    if c == 429 {
                        refused.fetch_add(1, Ordering::Relaxed);
                        bodies.push(b);
                    } else {
                        assert_eq!(c, 200, "{b}");
                    }
                }
                bodies
            })
        })
        .collect();
    // Wait (bounded) until the flood is being refused, then query as another tenant.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while refused.load(Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood was never refused"
        );
        std::thread::yield_now();
    }
    let mut light = Vec::new();
    for _ in 0..5 {
        light.push(get_tenant(&url, "light"));
    }
    let refused_during = refused.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let bodies: Vec<String> = flood.into_iter().flat_map(|t| t.join().unwrap()).collect();
    for (c, b) in &light {
        assert_eq!(*c, 200, "{b}");
        assert!(!points(b).unwrap().is_empty());
    }
    assert!(refused_during > 0);
    let v: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(v["error"], "too many outstanding requests");
    assert_eq!(v["errorType"], "too_many_requests");
    let (_, m) = get(&format!("{}/metrics", fe.url())).unwrap();
    assert!(
        m.contains(r#"strata_query_frontend_discarded_requests_total{tenant="heavy"}"#),
        "{m}"
    );
    assert!(!m.contains(r#"strata_query_frontend_discarded_requests_total{tenant="light"}"#));
}

/// Cortex's split, written again here so the test does not trust the frontend's.
fn parts(start: i64, end: i64, step: i64, interval: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut s = start;
    while s <= end {
        let next_boundary = (s / interval + 1) * interval;
        let mut e = s + (next_boundary - 1 - s) / step * step;
        if e + step > end {
            e = end;
        }
        out.push((s, e));
        s = e + step;
    }
    out
}

#[test]
fn stats_all_is_the_sum_of_what_the_querier_reports_for_the_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(&tmp.path().join("all"), &[]);
    let fe = start_frontend(
        &tmp.path().join("fe"),
        &s.url(),
        &[
            "--query-range.split-interval=20m",
            "--query-range.max-freshness=0s",
        ],
    );
    let end = now_ms() - MIN;
    let start = end - 2 * H + 7_000;
    push_counter(&s, "t1", "m", 30, start - 10 * MIN, end);
    push_counter(&s, "t1", "other", 3, end - 30 * MIN, end);
    let q = "sum by (i) (rate(m[5m]))";
    let step = 45_000;
    let path = range_path(q, start, end, step) + "&stats=all";
    let (c, body) = get_tenant(&format!("{}{path}", fe.url()), "t1");
    assert_eq!(c, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let st = &v["data"]["stats"];

    let want_parts = parts(start, end, step, 20 * MIN);
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    let fields = [
        "seriesFetched",
        "chunksFetched",
        "chunkBytesFetched",
        "samplesFetched",
    ];
    let mut queryable = 0;
    for (a, b) in &want_parts {
        let p = range_path(q, *a, *b, step) + "&stats=all";
        let (c, one) = get_tenant(&format!("{}{p}", s.url()), "t1");
        assert_eq!(c, 200, "{one}");
        let one: Value = serde_json::from_str(&one).unwrap();
        for f in fields {
            *sums.entry(f).or_default() += one["data"]["stats"]["strata"][f].as_u64().unwrap();
        }
        queryable += one["data"]["stats"]["samples"]["totalQueryableSamples"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(st["frontend"]["parts"], want_parts.len(), "{st}");
    assert_eq!(st["frontend"]["cacheMisses"], want_parts.len(), "{st}");
    assert_eq!(st["frontend"]["cacheHits"], 0, "{st}");
    for f in fields {
        assert_eq!(st["strata"][f].as_u64(), Some(sums[f]), "{f}: {st}");
    }
    assert!(sums["samplesFetched"] > 0);
    assert_eq!(st["samples"]["totalQueryableSamples"], queryable, "{st}");
    assert!(st["frontend"]["totalSeconds"].as_f64().unwrap() > 0.0);
    assert!(st["timings"]["evalTotalTime"].as_f64().is_some(), "{st}");

    // Again: every part from the cache, and nothing fetched.
    let (_, body) = get_tenant(&format!("{}{path}", fe.url()), "t1");
    let again: Value = serde_json::from_str(&body).unwrap();
    let st2 = &again["data"]["stats"];
    assert_eq!(st2["frontend"]["cacheHits"], want_parts.len(), "{st2}");
    assert_eq!(st2["frontend"]["downstreamRequests"], 0, "{st2}");
    assert_eq!(st2["strata"]["samplesFetched"].as_u64().unwrap_or(0), 0);
    assert_eq!(again["data"]["result"], v["data"]["result"]);
    // Without `stats` the answer has none.
    let (_, plain) = get_tenant(
        &format!("{}{}", fe.url(), range_path(q, start, end, step)),
        "t1",
    );
    assert!(!plain.contains("\"stats\""));

    // The tenant's most expensive recent query is that one, with the same numbers.
    let (c, top) = get_tenant(&format!("{}/api/v1/status/queries", fe.url()), "t1");
    assert_eq!(c, 200, "{top}");
    let top: Value = serde_json::from_str(&top).unwrap();
    let first = &top["data"]["queries"][0];
    assert_eq!(top["data"]["tenant"], "t1");
    assert_eq!(first["query"], q);
    assert_eq!(
        first["samplesFetched"].as_u64(),
        Some(sums["samplesFetched"])
    );
    assert_eq!(first["parts"], want_parts.len());
    let (_, other) = get_tenant(&format!("{}/api/v1/status/queries", fe.url()), "t2");
    assert!(other.contains(r#""queries":[]"#), "{other}");
}

#[test]
fn strata_all_serves_range_queries_through_its_frontend() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(
        &tmp.path().join("all"),
        &[
            "--query-frontend.enabled",
            "--query-range.split-interval=30m",
        ],
    );
    let end = now_ms() - MIN;
    let start = end - 2 * H;
    push_counter(&s, "anonymous", "m", 4, start - 10 * MIN, end);
    for prefix in ["", "/prometheus"] {
        let url = format!(
            "{}{prefix}{}&stats=all",
            s.url(),
            range_path("m", start, end, MIN)
        );
        let (c, body) = get(&url).unwrap();
        assert_eq!(c, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["data"]["stats"]["frontend"]["parts"].as_u64().unwrap() >= 4,
            "{body}"
        );
        let p = points(&body).unwrap();
        assert_eq!(p.len(), 4);
        assert!(p.values().all(|pts| pts.len() == 121), "{body}");
    }
    // Everything else reaches the querier as before.
    let (c, body) = get(&format!("{}/api/v1/label/i/values", s.url())).unwrap();
    assert_eq!((c, body.contains(r#""3""#)), (200, true), "{body}");
    let (c, _) = get(&format!("{}/api/v1/status/queries", s.url())).unwrap();
    assert_eq!(c, 200);
    assert!(s.metric("strata_query_frontend_split_queries_total") >= 8.0);
}

#[test]
fn requests_to_a_dead_downstream_are_retried_on_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(&tmp.path().join("all"), &[]);
    // Nothing listens on the first URL: every other request fails there first.
    let dead = format!("http://127.0.0.1:{}", strata_testkit::procs::free_port());
    let fe = start_frontend(
        &tmp.path().join("fe"),
        &format!("{dead},{}", s.url()),
        &["--query-range.split-interval=30m"],
    );
    let end = now_ms() - MIN;
    let start = end - 2 * H;
    push_counter(&s, "anonymous", "m", 3, start - 10 * MIN, end);
    for _ in 0..3 {
        let (c, body) = get(&format!("{}{}", fe.url(), range_path("m", start, end, MIN))).unwrap();
        assert_eq!(c, 200, "{body}");
        assert_eq!(points(&body).unwrap().len(), 3);
        let (c, body) = get(&format!("{}/api/v1/labels", fe.url())).unwrap();
        assert_eq!(c, 200, "{body}");
    }
    assert!(fe.metric("strata_query_frontend_retries_total") >= 3.0);
    // With no retries left the client hears that no querier answered.
    let fe = start_frontend(
        &tmp.path().join("fe0"),
        &dead,
        &["--query-range.max-retries=0"],
    );
    let (c, body) = get(&format!("{}/api/v1/labels", fe.url())).unwrap();
    assert_eq!(c, 502, "{body}");
    assert!(body.contains("no answer from the querier"), "{body}");
}

/// The status line and headers (lower-cased) of a raw GET, and the body's length.
fn raw_get(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, Vec<(String, String)>, usize) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().to_string();
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    (status, hs, all.len() - end - 4)
}

#[test]
fn passed_through_requests_keep_their_tenant_and_encoding() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(&tmp.path().join("all"), &[]);
    let fe = start_frontend(&tmp.path().join("fe"), &s.url(), &[]);
    let end = now_ms() - MIN;
    push_counter(&s, "t1", "only_t1", 200, end - 20 * MIN, end);
    let path = format!(
        "/api/v1/series?match[]=only_t1&start={}&end={}",
        secs(end - H),
        secs(end)
    );
    let (c, body) = get_tenant(&format!("{}{path}", fe.url()), "t1");
    assert_eq!(c, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 200);
    let (_, body) = get_tenant(&format!("{}{path}", fe.url()), "t2");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"],
        serde_json::json!([])
    );
    // The querier compresses for a client that accepts gzip; the frontend passes the
    // compressed answer through as it came.
    let hdrs = [("X-Scope-OrgID", "t1"), ("Accept-Encoding", "gzip")];
    let (status, h, len) = raw_get(&fe.url(), &path, &hdrs);
    let (_, direct_h, direct_len) = raw_get(&s.url(), &path, &hdrs);
    assert!(status.contains(" 200 "), "{status}");
    let enc = |h: &[(String, String)]| {
        h.iter()
            .find(|(k, _)| k == "content-encoding")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(enc(&direct_h).as_deref(), Some("gzip"));
    assert_eq!(enc(&h).as_deref(), Some("gzip"));
    assert_eq!(len, direct_len);
    // Without it, plain JSON.
    let (_, h, len) = raw_get(&fe.url(), &path, &[("X-Scope-OrgID", "t1")]);
    assert_eq!(enc(&h), None);
    assert!(len > direct_len);
}
