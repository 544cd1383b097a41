//! Split and merged answers equal the unsplit answer on every `eval` case of
//! Prometheus's upstream PromQL test files and Strata's own, through the real stack in
//! process: a real [`Querier`] whose only source is a local store serving the series the
//! file's `load` commands loaded (as `strata all` wires its ingester), and a real
//! [`Frontend`] in front of it (`Downstream::Local`, as `strata all
//! --query-frontend.enabled`), new ones for each data state between `load`/`clear`.
//!
//! Each `eval range` case is asked of the querier unsplit, then of the frontend with
//! split intervals cutting its range into about three parts and into one part per step;
//! again, now from the results cache (every part a hit); and twice a step later with the
//! end off the step grid (cached parts used in part, the new edge cached). Status,
//! `data` (series and points, exactly), warnings and infos (as sets), and error type and
//! message must all be equal. Each `eval instant` case is asked the same way as a range
//! of five minutes either side, split in about three parts. Cases that differ by nature
//! are listed in [`DIFFER`] with the reason. A second test asks every case sharded three
//! ways (`--query-frontend.query-sharding-total-shards`) against the unsharded querier.
//! The querier evaluates each file as the conformance runner does: with delayed
//! `__name__` removal, unless the file asks otherwise (`strata_promql::promqltest`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request};
use serde_json::Value;
use strata_frontend::downstream::Downstream;
use strata_frontend::split::{shape, write_seconds};
use strata_frontend::{Frontend, FrontendConfig};
use strata_kit::metrics::Registry;
use strata_promql::promqltest::{
    engine_options, run_script_visiting, test_files, upstream_test_dir, EvalRef,
};
use strata_promql::testing::MemStorage;
use strata_promql::{SelectHints, Storage};
use strata_querier::bucket::SeriesData;
use strata_querier::fanout::LocalStore;
use strata_querier::series::Part;
use strata_querier::stats::{Counter, StoreError};
use strata_querier::{Querier, QuerierConfig};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;
use tower::ServiceExt;

/// Cases whose split answer legitimately differs from the unsplit one (for at least one
/// of the split intervals), by file and line, with the reason.
const DIFFER: &[(&str, usize, &str)] = &[
    ("range_queries.test", 109, SORT_WARNING),
    ("range_queries.test", 112, SORT_WARNING),
    ("range_queries.test", 115, SORT_WARNING),
    ("range_queries.test", 118, SORT_WARNING),
    ("range_queries.test", 121, SORT_WARNING),
    ("name_label_dropping.test", 119, NAME_DROP),
    ("name_label_dropping.test", 123, NAME_DROP),
    ("name-removal-immediate.test", 196, RANGE_FUNCTION_LABELSETS),
    ("name-removal-immediate.test", 199, RANGE_FUNCTION_LABELSETS),
];

/// Prometheus warns of `sort` in a range query only when its start and end differ: split
/// into parts one step long (these cases' two steps, whatever the interval), no part
/// warns, and the merged answer lacks the warning.
const SORT_WARNING: &str = "sort warning: no one-step part warns";

/// Delayed `__name__` removal (Prometheus's experimental feature): a range query's
/// series is one per label set, its name dropped or kept as at its first step (as
/// Prometheus's range evaluation keeps it). `sum by (__name__) (a or rate(b[5m]))` is
/// `{}` all along unsplit, but a part whose steps only see `a` keeps `{__name__="a"}`.
const NAME_DROP: &str = "delayed name removal: decided at a series' first step, per part";

/// Without delayed name removal a range-vector function fails when two of its series'
/// results share a label set at any steps of the range (as in Prometheus): a part whose
/// steps see only one of them answers, and so does the merged answer.
const RANGE_FUNCTION_LABELSETS: &str =
    "range-vector function: label sets shared over the whole range, per part";

/// The test file's data as the querier's in-process store.
#[derive(Debug)]
struct FileData(Arc<MemStorage>);

impl FileData {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<strata_promql::StorageSeries>, String> {
        self.0
            .select(matchers, mint, maxt, &SelectHints::default())
            .map_err(|e| e.to_string())
    }
}

impl LocalStore for FileData {
    fn series(
        &self,
        _tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        _skip_chunks: bool,
    ) -> Result<Vec<SeriesData>, String> {
        Ok(self
            .select(matchers, mint, maxt)?
            .into_iter()
            .map(|s| (s.labels, s.samples))
            .collect())
    }

    /// With the native histograms beside the floats.
    fn series_parts(
        &self,
        _tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        _skip_chunks: bool,
        count: &Counter,
    ) -> Result<Vec<(Labels, Part)>, StoreError> {
        let mut out = Vec::new();
        for s in self
            .select(matchers, mint, maxt)
            .map_err(StoreError::Other)?
        {
            count.series(&s.labels)?;
            count.samples(s.samples.len() + s.histograms.len())?;
            let floats = Part::Samples(s.samples);
            let part = if s.histograms.is_empty() {
                floats
            } else {
                Part::Mixed {
                    floats: Box::new(floats),
                    hists: s.histograms,
                }
            };
            out.push((s.labels, part));
        }
        Ok(out)
    }

    fn external_labels(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Strata's own test files and the upstream ones (required on CI).
fn all_files() -> Vec<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut all = test_files(&manifest.join("../promql/tests/testdata"));
    all.extend(
        upstream_test_dir(&manifest)
            .map(|d| test_files(&d))
            .unwrap_or_default(),
    );
    all
}

fn seconds(ms: i64) -> String {
    let mut s = String::new();
    write_seconds(&mut s, ms);
    s
}

/// What a `query_range` answer is compared by.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    /// `resultType` and `result` on success; `errorType` and `error` on failure.
    data: Value,
    warnings: BTreeSet<String>,
    infos: BTreeSet<String>,
    /// `stats.frontend` (frontend answers only), left out of the comparison.
    frontend: Option<Value>,
}

impl Answer {
    fn same(&self, o: &Answer) -> bool {
        (self.status, &self.data, &self.warnings, &self.infos)
            == (o.status, &o.data, &o.warnings, &o.infos)
    }

    /// [`Answer::same`], float values within 1e-9 relative (shards add in another order).
    fn close(&self, o: &Answer) -> bool {
        if self.same(o) {
            return true;
        }
        let (a, b) = (&self.data["result"], &o.data["result"]);
        let (Some(a), Some(b)) = (a.as_array(), b.as_array()) else {
            return false;
        };
        (self.status, &self.warnings, &self.infos) == (o.status, &o.warnings, &o.infos)
            && self.data["resultType"] == o.data["resultType"]
            && a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x["metric"] == y["metric"]
                    && x["histograms"] == y["histograms"]
                    && close_points(&x["values"], &y["values"])
            })
    }

    fn frontend(&self, field: &str) -> u64 {
        self.frontend.as_ref().expect("stats.frontend")[field]
            .as_u64()
            .unwrap_or_else(|| panic!("stats.frontend.{field} in {:?}", self.frontend))
    }
}

/// A range query to compare: an `eval range` case, or an `eval instant` case asked over
/// five minutes either side of its time, a step a minute (as upstream's runner re-runs
/// instant cases over a minute either side).
#[derive(Debug, Clone, Copy)]
struct Case<'a> {
    line: usize,
    query: &'a str,
    start: i64,
    end: i64,
    step: i64,
    state: usize,
    /// An `eval range` case (not an instant one asked as a range).
    range: bool,
}

impl<'a> Case<'a> {
    fn of(e: &EvalRef<'a>) -> Case<'a> {
        let (start, end, step) = e.range.unwrap_or((e.at - 300_000, e.at + 300_000, 60_000));
        Case {
            line: e.line,
            query: e.query,
            start,
            end,
            step,
            state: e.state,
            range: e.range.is_some(),
        }
    }
}

/// `[t, "v"]` points at the same times with values equal or within 1e-9 relative.
fn close_points(a: &Value, b: &Value) -> bool {
    let (a, b) = (
        a.as_array().map_or(&[][..], |v| v),
        b.as_array().map_or(&[][..], |v| v),
    );
    let value = |p: &Value| p[1].as_str().and_then(|v| v.parse::<f64>().ok());
    a.len() == b.len()
        && a.iter().zip(b).all(|(p, q)| {
            p[0] == q[0]
                && (p[1] == q[1]
                    || match (value(p), value(q)) {
                        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                        _ => false,
                    })
        })
}

async fn ask(router: &axum::Router, c: &Case<'_>, stats: bool) -> Answer {
    let mut form = vec![
        ("query", c.query.to_string()),
        ("start", seconds(c.start)),
        ("end", seconds(c.end)),
        ("step", seconds(c.step)),
    ];
    if stats {
        form.push(("stats", "all".into()));
    }
    let req = Request::post("/api/v1/query_range")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    let set = |k: &str| -> BTreeSet<String> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .map(|w| w.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let data = if v["status"] == "success" {
        serde_json::json!({"resultType": v["data"]["resultType"], "result": v["data"]["result"]})
    } else {
        serde_json::json!({"errorType": v["errorType"], "error": v["error"]})
    };
    Answer {
        status,
        data,
        warnings: set("warnings"),
        infos: set("infos"),
        frontend: v["data"]["stats"].get("frontend").cloned(),
    }
}

/// Counts of what was compared, and the mismatches found.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    /// Case × split interval comparisons, each asked twice of the frontend (and once
    /// more a step later).
    compared: usize,
    /// Comparisons that failed on both paths (same error).
    errors: usize,
    /// Second asks answered with every part from the cache.
    cache_checked: usize,
    /// Not split by the frontend: an `@` modifier, `start()`, `end()`, `range()`.
    unsplit: usize,
    /// One evaluation time: nothing to split.
    single_point: usize,
    /// Split, not cached: a negative offset, or an answer with warnings.
    uncached: usize,
    known: usize,
    /// Cases the conformance runner skips (features the engine lacks): compared all
    /// the same (mostly errors on both paths).
    skipped: usize,
    mismatches: Vec<String>,
}

/// Counts of the sharded comparisons.
#[derive(Debug, Default)]
struct ShardTally {
    cases: usize,
    /// Cases the frontend sharded (the others it sends whole, split).
    sharded: usize,
    mismatches: Vec<String>,
}

/// The split intervals a case is asked with: about three parts of its range, and for
/// `eval range` cases (when different) one part per step.
fn intervals(c: &Case) -> Vec<i64> {
    let range = c.end - c.start;
    let mut v = vec![(range / 3).max(1)];
    if c.range && c.step != v[0] && c.step < range {
        v.push(c.step);
    }
    v
}

struct Stack {
    querier: axum::Router,
    /// A frontend per split interval, for the current data state (a new state, a new
    /// frontend: the results cache must not outlive the data it was filled from).
    frontends: HashMap<(i64, usize), axum::Router>,
    state: (String, usize),
}

impl Stack {
    /// `delayed_name_removal` as the conformance runner evaluates the file.
    fn new(data: Arc<MemStorage>, delayed_name_removal: bool) -> Stack {
        let querier = Querier::new(
            QuerierConfig {
                endpoints: vec!["local:1".into()],
                local_stores: vec![("local:1".into(), Arc::new(FileData(data)) as _)],
                delayed_name_removal,
                ..QuerierConfig::default()
            },
            &Registry::new(),
        )
        .unwrap();
        Stack {
            querier: querier.routes(),
            frontends: HashMap::new(),
            state: (String::new(), 0),
        }
    }

    fn frontend(&mut self, interval: i64) -> axum::Router {
        self.frontend_sharded(interval, 0)
    }

    /// The frontend splitting at `interval` and sharding shardable queries `shards` ways.
    fn frontend_sharded(&mut self, interval: i64, shards: usize) -> axum::Router {
        let querier = self.querier.clone();
        self.frontends
            .entry((interval, shards))
            .or_insert_with(|| {
                let fe = Frontend::new(
                    FrontendConfig {
                        split_interval_ms: interval,
                        query_sharding_total_shards: shards,
                        ..FrontendConfig::default()
                    },
                    Downstream::Local(querier),
                    &Registry::new(),
                )
                .unwrap();
                fe.routes()
            })
            .clone()
    }

    /// A new data state: new frontends (their caches were filled from the old data).
    fn enter(&mut self, file: &str, state: usize) {
        if self.state != (file.to_string(), state) {
            self.frontends.clear();
            self.state = (file.to_string(), state);
        }
    }

    /// `c` sharded three ways (and split in about three parts) against unsplit.
    async fn compare_sharded(&mut self, file: &str, c: &Case<'_>, t: &mut ShardTally) {
        self.enter(file, c.state);
        let at = format!("{file}:{} {}", c.line, c.query);
        let whole = ask(&self.querier, c, false).await;
        let fe = self.frontend_sharded(intervals(c)[0], 3);
        let sharded = ask(&fe, c, true).await;
        t.cases += 1;
        // (The cases that differ when split differ here too: sharded parts are split.)
        let known = DIFFER.iter().any(|(f, l, _)| *f == file && *l == c.line);
        if !known && !whole.close(&sharded) {
            t.mismatches.push(format!(
                "{at}:\n  unsharded {} {} {:?} {:?}\n  sharded   {} {} {:?} {:?}",
                whole.status,
                whole.data,
                whole.warnings,
                whole.infos,
                sharded.status,
                sharded.data,
                sharded.warnings,
                sharded.infos
            ));
        }
        if sharded.frontend.as_ref().is_some_and(|f| f["shards"] == 3) {
            t.sharded += 1;
        }
    }

    async fn compare(&mut self, file: &str, c: &Case<'_>, t: &mut Tally) {
        self.enter(file, c.state);
        t.cases += 1;
        let at = format!("{file}:{} {}", c.line, c.query);
        let known = DIFFER.iter().any(|(f, l, _)| *f == file && *l == c.line);
        let whole = ask(&self.querier, c, false).await;
        let shape = shape(c.query);
        // The window moved on by a step, its end half a step further (off the step
        // grid): parts answered from extents in part, the new edge fetched and cached.
        let shifted = (c.start + c.step <= c.end).then_some(Case {
            start: c.start + c.step,
            end: c.end + c.step + c.step / 2,
            ..*c
        });
        let shifted_whole = match &shifted {
            Some(sc) => Some(ask(&self.querier, sc, false).await),
            None => None,
        };
        let mut differed = false;
        for interval in intervals(c) {
            let fe = self.frontend(interval);
            let first = ask(&fe, c, true).await;
            let second = ask(&fe, c, true).await;
            t.compared += 1;
            let mut bad = Vec::new();
            let mut pairs = vec![
                ("split", &whole, first.clone()),
                ("from the cache", &whole, second.clone()),
            ];
            if let (Some(sc), Some(sw)) = (&shifted, &shifted_whole) {
                pairs.push(("shifted by a step", sw, ask(&fe, sc, true).await));
                pairs.push(("shifted, again", sw, ask(&fe, sc, true).await));
            }
            for (which, whole, a) in &pairs {
                if !whole.same(a) {
                    bad.push(format!(
                        "{at} (interval {interval} ms) {which}:\n  unsplit  {} {} {:?} {:?}\n  frontend {} {} {:?} {:?}\n  {:?}",
                        whole.status, whole.data, whole.warnings, whole.infos,
                        a.status, a.data, a.warnings, a.infos, a.frontend
                    ));
                }
            }
            if known {
                differed |= !bad.is_empty();
                continue;
            }
            t.mismatches.extend(bad);
            if whole.status != 200 {
                t.errors += 1;
                continue;
            }
            if first.frontend.is_none() {
                t.mismatches.push(format!(
                    "{at} (interval {interval} ms): passed through, not split"
                ));
                continue;
            }
            let parts = first.frontend("parts");
            if !shape.splittable() {
                if parts != 1 {
                    t.mismatches
                        .push(format!("{at}: sent whole, not in {parts} parts"));
                }
                t.unsplit += 1;
                continue;
            }
            if c.start == c.end {
                t.single_point += 1;
                continue;
            }
            if parts < 2 {
                t.mismatches
                    .push(format!("{at} (interval {interval} ms): {parts} part"));
            }
            if shape.negative_offset || !first.warnings.is_empty() {
                t.uncached += 1;
                continue;
            }
            // (The first ask may hit too: a file may ask the same query twice.)
            let (hits, sent) = (
                second.frontend("cacheHits"),
                second.frontend("downstreamRequests"),
            );
            if (hits, sent) != (parts, 0) {
                t.mismatches.push(format!(
                    "{at} (interval {interval} ms): the second ask hit the cache for {hits} of {parts} parts, sent {sent} requests"
                ));
            }
            let again = pairs.get(3).map(|p| &p.2);
            if let Some(again) = again.filter(|a| a.frontend.is_some() && a.warnings.is_empty()) {
                let (hits, parts) = (again.frontend("cacheHits"), again.frontend("parts"));
                if hits != parts {
                    t.mismatches.push(format!(
                        "{at} (interval {interval} ms): the shifted window asked again hit the cache for {hits} of {parts} parts"
                    ));
                }
            }
            t.cache_checked += 1;
        }
        if known {
            t.known += 1;
            if !differed {
                t.mismatches.push(format!(
                    "{at}: listed in DIFFER, but split and unsplit agree"
                ));
            }
        }
    }
}

/// Every eval case of every file with a stack over the file's data as the case sees it.
fn walk(mut f: impl FnMut(&tokio::runtime::Runtime, &mut Stack, &str, &EvalRef)) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for path in all_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let data = Arc::new(MemStorage::new());
        let delayed = engine_options(&text).delayed_name_removal;
        // The querier's engine runs on the runtime's blocking threads: build it inside.
        let mut stack = rt.block_on(async { Stack::new(data.clone(), delayed) });
        run_script_visiting(&data, &name, &text, &Default::default(), &mut |e| {
            f(&rt, &mut stack, &name, e)
        });
    }
}

#[test]
fn split_and_cached_answers_equal_the_unsplit_answer_on_every_test_file() {
    let (mut ranges, mut instants) = (Tally::default(), Tally::default());
    walk(|rt, stack, name, e| {
        let tally = if e.range.is_some() {
            &mut ranges
        } else {
            &mut instants
        };
        if e.skipped.is_some() {
            tally.skipped += 1;
        }
        rt.block_on(stack.compare(name, &Case::of(e), tally));
    });
    eprintln!("range cases: {ranges:#?}\ninstant cases as ranges: {instants:#?}");
    let mismatches: Vec<&String> = ranges
        .mismatches
        .iter()
        .chain(&instants.mismatches)
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        ranges.cases >= 300 && ranges.compared >= 600 && ranges.cache_checked >= 200,
        "too few range cases compared: {ranges:?}"
    );
    assert!(
        instants.cases >= 1800 && instants.cache_checked >= 1000,
        "too few instant cases compared: {instants:?}"
    );
}

/// Query sharding (`--query-frontend.query-sharding-total-shards`) on the same cases:
/// each sharded three ways per split part, combined by the frontend, equals the
/// unsharded querier's answer (floats within 1e-9 relative).
#[test]
fn sharded_answers_equal_the_unsharded_answer_on_every_test_file() {
    let mut t = ShardTally::default();
    walk(|rt, stack, name, e| {
        rt.block_on(stack.compare_sharded(name, &Case::of(e), &mut t));
    });
    eprintln!("{t:#?}");
    assert!(
        t.mismatches.is_empty(),
        "{} mismatches:\n{}",
        t.mismatches.len(),
        t.mismatches.join("\n")
    );
    assert!(t.sharded >= 100, "too few sharded cases: {t:?}");
}
