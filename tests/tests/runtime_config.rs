//! Per-tenant overrides from `--runtime-config.file` (Mimir's `overrides:` shape) on the
//! real binary: a tenant's own rate and series limits, changed without a restart, and a
//! broken file that keeps the last good configuration; the same file gives the
//! compactor a tenant's retention, the querier a tenant's query limits and the query
//! frontend a tenant's longest range query; a tenant's `max_query_lookback` in both.

use std::path::Path;
use std::time::Duration;

use strata_objstore::Bucket;
use strata_proto::prometheus::{label_matcher, Exemplar, Label, LabelMatcher};
use strata_testkit::http::{encode, get, get_with, remote_read};
use strata_testkit::strata::{series, write_request, StrataProc};
use strata_tsdb::block::{BlockWriter, MetaExtra};
use strata_tsdb::chunkenc::ChunkCutter;
use strata_tsdb::labels::Labels;
use strata_tsdb::meta::ThanosMeta;
use ulid::Ulid;

const H: i64 = 3_600_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `strata all` reading `yaml` as its runtime configuration (re-read every 200 ms);
/// the file's path, to change it.
fn all_with_runtime_config(tmp: &Path, yaml: &str) -> (StrataProc, std::path::PathBuf) {
    all_with_runtime_config_and(tmp, yaml, &[])
}

/// The same, with more flags.
fn all_with_runtime_config_and(
    tmp: &Path,
    yaml: &str,
    extra: &[&str],
) -> (StrataProc, std::path::PathBuf) {
    let cfg = tmp.join("runtime.yml");
    std::fs::write(&cfg, yaml).unwrap();
    let mut args = vec![
        format!("--runtime-config.file={}", cfg.display()),
        "--runtime-config.reload-period=200ms".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let strata = StrataProc::start_all(&tmp.join("strata"), &args);
    (strata, cfg)
}

#[test]
fn tenant_overrides_apply_and_reload_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (strata, cfg) = all_with_runtime_config(
        tmp.path(),
        "overrides:\n  tight:\n    ingestion_rate: 10\n    ingestion_burst_size: 100\n",
    );
    let t = now_ms();
    let samples: Vec<(i64, f64)> = (0..150).map(|i| (t + i, 1.0)).collect();
    let push = |tenant: &str, name: &str, n: usize| {
        strata.push(
            Some(tenant),
            &write_request(vec![series(&[("__name__", name)], &samples[..n])]),
        )
    };
    // the overridden tenant has its own rate; the others keep the flags' (unlimited)
    assert_eq!(push("tight", "m", 80).0, 200);
    let (s, b) = push("tight", "m2", 80);
    assert_eq!(s, 429, "{b}");
    assert!(b.contains("ingestion rate limit"), "{b}");
    assert_eq!(push("other", "m", 150).0, 200);

    // new limits, no restart: the rate goes, a series limit of 2 comes
    std::fs::write(
        &cfg,
        "overrides:\n  tight:\n    max_global_series_per_user: 2\n",
    )
    .unwrap();
    strata_testkit::poll("reloaded overrides", Duration::from_secs(20), || {
        let (_, body) = get(&format!("{}/runtime_config", strata.url())).unwrap();
        body.contains("max_global_series_per_user: 2").then_some(())
    });
    let (s, b) = push("tight", "a", 150);
    assert_eq!(s, 200, "the rate limit is gone: {b}");
    let (s, b) = push("tight", "b", 10);
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("per-user series limit reached"), "{b}");
    assert_eq!(push("other", "b", 10).0, 200);

    // a broken file: reload fails, said by the metric, the last good limits stay
    std::fs::write(
        &cfg,
        "overrides:\n  tight:\n    max_global_series_per_usr: 5\n",
    )
    .unwrap();
    strata_testkit::poll("failed reload", Duration::from_secs(20), || {
        (strata.metric("strata_runtime_config_last_reload_successful") == 0.0).then_some(())
    });
    let (s, b) = push("tight", "c", 10);
    assert_eq!(s, 400, "{b}");
    assert!(
        strata.log().contains("max_global_series_per_usr"),
        "the log must name the bad key"
    );
}

/// A 2h block of one series from `min`, uploaded to `tenant` in `bucket`.
fn upload_block(
    rt: &tokio::runtime::Runtime,
    bucket: &Bucket,
    tmp: &Path,
    tenant: &str,
    min: i64,
) -> Ulid {
    let ulid = Ulid::new();
    let mut w = BlockWriter::new(tmp, ulid).unwrap();
    let mut c = ChunkCutter::new(2 * H);
    for i in 0..120 {
        c.append(min + i * 60_000, i as f64);
    }
    w.add_series(
        Labels::from_pairs([("__name__", "up"), ("job", tenant)]),
        c.finish(),
    )
    .unwrap();
    w.finish(Some(MetaExtra {
        min_time: Some(min),
        max_time: Some(min + 2 * H),
        compaction: None,
        thanos: Some(ThanosMeta {
            source: "test".into(),
            ..Default::default()
        }),
    }))
    .unwrap();
    let dir = tmp.join(ulid.to_string());
    rt.block_on(bucket.upload_dir(&dir, &format!("{tenant}/{ulid}")))
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    ulid
}

/// `compactor_blocks_retention_period` per tenant: the compactor marks tenant A's
/// blocks past it for deletion and keeps tenant B's (the flags keep everything); a
/// retention given to B later, without a restart, marks B's old block at the next pass.
#[test]
fn compactor_applies_retention_per_tenant_and_reloads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket_dir = tmp.path().join("bucket");
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        bucket_dir.display()
    );
    let objstore = tmp.path().join("bucket.yml");
    std::fs::write(&objstore, &yaml).unwrap();
    let bucket = Bucket::from_yaml(&yaml).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = now_ms() / (2 * H) * (2 * H);
    let blocks = tmp.path().join("blocks");
    let old = now - 30 * 24 * H;
    let (a_old, a_new) = (
        upload_block(&rt, &bucket, &blocks, "tenant-a", old),
        upload_block(&rt, &bucket, &blocks, "tenant-a", now - 4 * H),
    );
    let b_old = upload_block(&rt, &bucket, &blocks, "tenant-b", old);
    let cfg = tmp.path().join("runtime.yml");
    std::fs::write(
        &cfg,
        "overrides:\n  tenant-a:\n    compactor_blocks_retention_period: 7d\n",
    )
    .unwrap();
    let compactor = StrataProc::start_http_only(
        &tmp.path().join("compactor"),
        &[
            "compactor",
            &format!("--objstore.config-file={}", objstore.display()),
            &format!("--data-dir={}", tmp.path().join("compactor/data").display()),
            "--wait",
            "--wait-interval=1s",
            "--downsampling.disable",
            &format!("--runtime-config.file={}", cfg.display()),
            "--runtime-config.reload-period=200ms",
        ],
    );
    let marked = |tenant: &str, u: Ulid| {
        bucket_dir
            .join(tenant)
            .join(u.to_string())
            .join("deletion-mark.json")
            .exists()
    };
    strata_testkit::poll("A's old block marked", Duration::from_secs(30), || {
        marked("tenant-a", a_old).then_some(())
    });
    // a pass that marked A's old block looked at B's too: B's is kept
    assert!(!marked("tenant-b", b_old), "B's old block marked");
    assert!(!marked("tenant-a", a_new), "A's recent block marked");
    let (_, shown) = get(&format!("{}/runtime_config", compactor.url())).unwrap();
    assert_eq!(
        compactor.metric("strata_runtime_config_last_reload_successful"),
        1.0
    );
    assert!(
        shown.contains("compactor_blocks_retention_period: 1w"),
        "{shown}"
    );

    std::fs::write(
        &cfg,
        "overrides:\n  tenant-a:\n    compactor_blocks_retention_period: 7d\n  tenant-b:\n    compactor_blocks_retention_period: 10d\n",
    )
    .unwrap();
    strata_testkit::poll(
        "B's old block marked after the reload",
        Duration::from_secs(30),
        || marked("tenant-b", b_old).then_some(()),
    );
    assert!(!marked("tenant-a", a_new), "A's recent block marked");
}

/// `max_fetched_series_per_query` and `max_fetched_chunk_bytes_per_query` per tenant in
/// the querier: tenant A trips its limit with Mimir's message, tenant B with the same
/// query and data is answered; a limit raised in the file lets A through, no restart.
#[test]
fn querier_applies_query_limits_per_tenant_and_reloads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (strata, cfg) = all_with_runtime_config(
        tmp.path(),
        "overrides:\n  tenant-a:\n    max_fetched_series_per_query: 3\n  tenant-c:\n    max_fetched_chunk_bytes_per_query: 10\n",
    );
    let t = now_ms();
    let five: Vec<_> = (0..5)
        .map(|i| {
            series(
                &[("__name__", "m"), ("i", &i.to_string())],
                &[(t - 1000, 1.0)],
            )
        })
        .collect();
    for tenant in ["tenant-a", "tenant-b", "tenant-c"] {
        assert_eq!(
            strata.push(Some(tenant), &write_request(five.clone())).0,
            200
        );
    }
    let query = |tenant: &str| {
        let url = format!(
            "{}/api/v1/query?query={}&time={}",
            strata.url(),
            encode("sum(m)"),
            t / 1000
        );
        get_with(&url, &[("X-Scope-OrgID", tenant)]).unwrap()
    };
    let (code, body) = query("tenant-a");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("the query exceeded the maximum number of series (limit: 3 series) (err-mimir-max-series-per-query)"),
        "{body}"
    );
    let (code, body) = query("tenant-c");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("err-mimir-max-chunks-bytes-per-query"),
        "{body}"
    );
    let (code, body) = query("tenant-b");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""5"]"#), "{body}");
    // the series API counts against the same limit
    let url = format!("{}/api/v1/series?match[]=m", strata.url());
    let (code, body) = get_with(&url, &[("X-Scope-OrgID", "tenant-a")]).unwrap();
    assert!(
        code >= 400 && body.contains("err-mimir-max-series-per-query"),
        "{code} {body}"
    );

    std::fs::write(
        &cfg,
        "overrides:\n  tenant-a:\n    max_fetched_series_per_query: 5\n",
    )
    .unwrap();
    strata_testkit::poll("tenant A's raised limit", Duration::from_secs(20), || {
        (query("tenant-a").0 == 200).then_some(())
    });
    assert_eq!(query("tenant-c").0, 200, "C's limit is gone");
}

/// The cardinality guard per tenant: off by the flags, on for tenant A through its
/// `cardinality_guard_max_new_series_per_metric`; the same exploding pushes are refused
/// for A and accepted for B, and turning A's guard off in the file lets A's new series
/// in again without a restart.
#[test]
fn cardinality_guard_per_tenant_and_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let (strata, cfg) = all_with_runtime_config(
        tmp.path(),
        "overrides:\n  tenant-a:\n    cardinality_guard_max_new_series_per_metric: 5\n    cardinality_guard_window: 1h\n",
    );
    let t = now_ms() - 60_000;
    let push = |tenant: &str, id: &str, k: i64| {
        let l = [("__name__", "req_total"), ("request_id", id)];
        strata.push(
            Some(tenant),
            &write_request(vec![series(&l, &[(t + k, 1.0)])]),
        )
    };
    for tenant in ["tenant-a", "tenant-b"] {
        for i in 0..6 {
            let (s, b) = push(tenant, &format!("r{i}"), i);
            assert_eq!(s, 200, "{tenant} series {i}: {b}");
        }
    }
    let (s, b) = push("tenant-a", "r-new", 10);
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("err-strata-cardinality-guard"), "{b}");
    assert!(b.contains(r#"label "request_id""#), "{b}");
    assert_eq!(push("tenant-b", "r-new", 10).0, 200, "B has no guard");

    std::fs::write(
        &cfg,
        "overrides:\n  tenant-a:\n    cardinality_guard_max_new_series_per_metric: 0\n",
    )
    .unwrap();
    strata_testkit::poll("A's guard turned off", Duration::from_secs(20), || {
        (push("tenant-a", "r-later", 20).0 == 200).then_some(())
    });
}

/// `max_total_query_length`: the flag for every tenant, a tenant's override in its
/// place (reloaded), Mimir's 400 before the query is split; in `strata all` and in
/// `strata query-frontend` (which reads the file itself).
#[test]
fn frontend_refuses_range_queries_over_the_total_query_length() {
    let tmp = tempfile::tempdir().unwrap();
    let (strata, cfg) = all_with_runtime_config_and(
        tmp.path(),
        "overrides:\n  short:\n    max_total_query_length: 1h\n  open:\n    max_total_query_length: 0s\n",
        &[
            "--query-frontend.enabled",
            "--query-frontend.max-total-query-length=1d",
        ],
    );
    let frontend = StrataProc::start_http_only(
        &tmp.path().join("fe"),
        &[
            "query-frontend",
            &format!("--query-frontend.downstream-url={}", strata.url()),
            &format!("--runtime-config.file={}", cfg.display()),
            "--runtime-config.reload-period=200ms",
        ],
    );
    let end = now_ms() / 1000 * 1000;
    let range = |url: &str, tenant: &str, hours: i64| {
        get_with(
            &format!(
                "{url}/api/v1/query_range?query=up&start={}&end={}&step=60",
                (end - hours * H) / 1000,
                end / 1000
            ),
            &[("X-Scope-OrgID", tenant)],
        )
        .map(|(c, b)| (c, serde_json::from_str::<serde_json::Value>(&b).unwrap()))
        .unwrap()
    };
    let refused = |limit: &str, length: &str| {
        let error = format!("the total query time range exceeds the limit (query length: {length}, limit: {limit}) (err-mimir-max-total-query-length). To adjust the related per-tenant limit, configure -query-frontend.max-total-query-length, or contact your service administrator.");
        (
            400,
            serde_json::json!({"status": "error", "errorType": "bad_data", "error": error}),
        )
    };
    let parts = || strata.metric("strata_query_frontend_split_queries_total");
    let before = parts();
    // the flag: 1d for every tenant without an override
    assert_eq!(
        range(&strata.url(), "anyone", 48),
        refused("24h0m0s", "48h0m0s")
    );
    // an override: shorter for one tenant, off for another
    assert_eq!(
        range(&strata.url(), "short", 2),
        refused("1h0m0s", "2h0m0s")
    );
    assert_eq!(parts(), before, "refused before splitting");
    assert_eq!(range(&strata.url(), "short", 1).0, 200);
    assert_eq!(range(&strata.url(), "anyone", 24).0, 200);
    let (c, body) = range(&strata.url(), "open", 48);
    assert_eq!(c, 200, "{body}");
    // the standalone frontend: no flag, the file's override
    assert_eq!(range(&frontend.url(), "anyone", 48).0, 200);
    assert_eq!(
        range(&frontend.url(), "short", 2),
        refused("1h0m0s", "2h0m0s")
    );

    // reloaded without a restart
    std::fs::write(
        &cfg,
        "overrides:\n  short:\n    max_total_query_length: 3h\n",
    )
    .unwrap();
    for fe in [&strata, &frontend] {
        strata_testkit::poll("reloaded limit", Duration::from_secs(20), || {
            (range(&fe.url(), "short", 2).0 == 200).then_some(())
        });
        assert_eq!(range(&fe.url(), "short", 4), refused("3h0m0s", "4h0m0s"));
    }
    let (_, shown) = get(&format!("{}/runtime_config", frontend.url())).unwrap();
    assert!(shown.contains("max_total_query_length: 3h"), "{shown}");
}

/// Series named `name` with samples in a remote-read answer for `tenant` over
/// `[start, end]`.
fn remote_read_series(base: &str, tenant: &str, name: &str, start: i64, end: i64) -> usize {
    let m = LabelMatcher {
        r#type: label_matcher::Type::Eq as i32,
        name: "__name__".into(),
        value: name.into(),
    };
    remote_read(base, tenant, start, end, vec![m]).results[0]
        .timeseries
        .iter()
        .filter(|s| !s.samples.is_empty())
        .count()
}

/// `max_query_lookback` (Mimir's limit): tenant A's data older than its lookback is
/// invisible to A on every read path (instant and range queries, series, label values,
/// exemplars, remote read) while tenant B, without the limit, reads the same data; a
/// query wholly before the lookback is answered empty, not refused. The query frontend
/// moves a range query's start up before its length check (A's 3-day query passes a
/// 1-day `--query-frontend.max-total-query-length`, B's is refused) and answers a range
/// wholly before the lookback without asking the querier. `--querier.max-query-lookback`
/// holds for a tenant without an entry. Moving the limit from A to B in the file swaps
/// what they see, without a restart.
#[test]
fn max_query_lookback_hides_older_data_per_tenant_and_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let (strata, cfg) = all_with_runtime_config_and(
        tmp.path(),
        "overrides:\n  tenant-a:\n    max_query_lookback: 1h\n",
        &[
            "--query-frontend.enabled",
            "--query-frontend.max-total-query-length=1d",
        ],
    );
    let now = now_ms() / 60_000 * 60_000;
    let old = now - 2 * H;
    for tenant in ["tenant-a", "tenant-b"] {
        let mut old_series = series(
            &[("__name__", "old_metric"), ("job", "j")],
            &(0..5).map(|i| (old + i * 60_000, 1.0)).collect::<Vec<_>>(),
        );
        old_series.exemplars = vec![Exemplar {
            labels: vec![Label {
                name: "trace_id".into(),
                value: "abc".into(),
            }],
            value: 1.0,
            timestamp: old,
        }];
        let both = series(
            &[("__name__", "m"), ("job", "j")],
            &[(old, 1.0), (old + 60_000, 2.0), (now - 60_000, 3.0)],
        );
        let (code, body) = strata.push(Some(tenant), &write_request(vec![old_series, both]));
        assert_eq!(code, 200, "{tenant}: {body}");
    }
    let get_as = |tenant: &str, path: &str| {
        let (code, body) = get_with(
            &format!("{}{path}", strata.url()),
            &[("X-Scope-OrgID", tenant)],
        )
        .unwrap();
        assert_eq!(code, 200, "{tenant} {path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let range = format!("start={}&end={}", (now - 3 * H) / 1000, now / 1000);
    // how many results each read path gives `tenant` for the old data
    let old_seen = |tenant: &str| -> Vec<usize> {
        let n = |v: serde_json::Value| v["data"]["result"].as_array().unwrap().len();
        let arr = |v: serde_json::Value| v["data"].as_array().unwrap().len();
        let instant = n(get_as(
            tenant,
            &format!(
                "/api/v1/query?query=old_metric&time={}",
                (old + 60_000) / 1000
            ),
        ));
        let series = arr(get_as(
            tenant,
            &format!("/api/v1/series?match[]=old_metric&{range}"),
        ));
        let values = get_as(
            tenant,
            &format!(
                "/api/v1/label/__name__/values?match[]={}&{range}",
                encode(r#"{job="j"}"#)
            ),
        );
        let named_old = values["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| *v == "old_metric")
            .count();
        let exemplars = arr(get_as(
            tenant,
            &format!("/api/v1/query_exemplars?query=old_metric&{range}"),
        ));
        let read = remote_read_series(&strata.url(), tenant, "old_metric", now - 3 * H, now);
        vec![instant, series, named_old, exemplars, read]
    };
    assert_eq!(
        old_seen("tenant-a"),
        vec![0; 5],
        "A reads past its lookback"
    );
    assert_eq!(old_seen("tenant-b"), vec![1; 5], "B reads everything");

    // range queries, through the frontend of `strata all`
    let query_range = |tenant: &str, q: &str, start: i64, end: i64, step: i64| {
        get_with(
            &format!(
                "{}/api/v1/query_range?query={}&start={}&end={}&step={step}",
                strata.url(),
                encode(q),
                start / 1000,
                end / 1000
            ),
            &[("X-Scope-OrgID", tenant)],
        )
        .map(|(c, b)| (c, serde_json::from_str::<serde_json::Value>(&b).unwrap()))
        .unwrap()
    };
    let points = |v: &serde_json::Value| -> Vec<i64> {
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["values"].as_array().unwrap())
            .map(|p| (p[0].as_f64().unwrap() * 1000.0) as i64)
            .collect()
    };
    let start = now - 3 * H + 17_000;
    let (code, a) = query_range("tenant-a", "m", start, now, 60);
    assert_eq!(code, 200, "{a}");
    let a = points(&a);
    assert!(!a.is_empty(), "A's recent sample");
    assert!(
        a.iter().all(|&t| t >= now - H),
        "A reads past its lookback: {a:?}"
    );
    assert!(
        a.iter().all(|&t| (t - start) % 60_000 == 0),
        "the moved start stays on the query's step grid: {a:?}"
    );
    let (_, b) = query_range("tenant-b", "m", start, now, 60);
    assert!(points(&b).iter().any(|&t| t < old + 5 * 60_000), "{b}");
    // wholly before the lookback: empty, and no part sent to the querier
    let parts = || strata.metric("strata_query_frontend_split_queries_total");
    let before = parts();
    let (code, a) = query_range("tenant-a", "old_metric", now - 3 * H, now - 90 * 60_000, 60);
    assert_eq!(
        (code, a),
        (
            200,
            serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": []}})
        )
    );
    assert_eq!(
        parts(),
        before,
        "a range wholly before the lookback is not split"
    );
    let (_, b) = query_range("tenant-b", "old_metric", now - 3 * H, now - 90 * 60_000, 60);
    assert_eq!(points(&b).len(), 9, "{b}");
    // the lookback comes before the length check, as in Mimir
    let (code, a) = query_range("tenant-a", "m", now - 72 * H, now, 600);
    assert_eq!(code, 200, "{a}");
    let (code, b) = query_range("tenant-b", "m", now - 72 * H, now, 600);
    assert_eq!(code, 400, "{b}");

    // the flag, for every tenant without an entry, in a querier of its own over the
    // Store API (range queries reach its fan-out, no frontend in between)
    let querier = StrataProc::start_with_grpc(
        &tmp.path().join("querier"),
        &[
            "querier",
            &format!("--endpoint=127.0.0.1:{}", strata.grpc_port),
            "--querier.max-query-lookback=1h",
        ],
    );
    let (code, body) = get_with(
        &format!(
            "{}/api/v1/query_range?query=m&start={}&end={}&step=60",
            querier.url(),
            start / 1000,
            now / 1000
        ),
        &[("X-Scope-OrgID", "tenant-b")],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let b = points(&serde_json::from_str(&body).unwrap());
    assert!(!b.is_empty() && b.iter().all(|&t| t >= now - H), "{b:?}");

    // the limit moves from A to B, no restart
    std::fs::write(
        &cfg,
        "overrides:\n  tenant-b:\n    max_query_lookback: 1h\n",
    )
    .unwrap();
    strata_testkit::poll("the moved lookback", Duration::from_secs(20), || {
        (old_seen("tenant-a") == vec![1; 5]).then_some(())
    });
    assert_eq!(old_seen("tenant-b"), vec![0; 5]);
    let (_, shown) = get(&format!("{}/runtime_config", strata.url())).unwrap();
    assert!(shown.contains("max_query_lookback: 1h"), "{shown}");
}
