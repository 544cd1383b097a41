//! Engine-level tests: vector matching errors, limits, range/instant consistency.

use std::time::Duration;

use strata_promql::testing::MemStorage;
use strata_promql::{Engine, EngineOptions, QueryError, Value};
use strata_tsdb::labels::Labels;

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn storage() -> MemStorage {
    let st = MemStorage::new();
    let pts = |v: f64| (0..=10).map(move |i| (i * 60_000, v * i as f64));
    st.add(l(&[("__name__", "a"), ("job", "x"), ("i", "0")]), pts(1.0));
    st.add(l(&[("__name__", "a"), ("job", "x"), ("i", "1")]), pts(2.0));
    st.add(l(&[("__name__", "b"), ("job", "x")]), pts(3.0));
    st.add(l(&[("__name__", "b"), ("job", "y")]), pts(4.0));
    st
}

#[test]
fn many_to_many_is_an_error() {
    let st = storage();
    let e = Engine::new(EngineOptions::default());
    let err = e.instant(&st, "b + on(job) a", 600_000).unwrap_err();
    assert!(matches!(err, QueryError::Execution(_)));
    let msg = err.to_string();
    assert!(
        msg.contains(
            "found duplicate series for the match group {job=\"x\"} on the right hand-side"
        ),
        "{msg}"
    );
    assert!(msg.ends_with(
        "many-to-many matching not allowed: matching labels must be unique on one side"
    ));
    assert_eq!(err.http_status(), 422);
}

#[test]
fn one_to_one_needs_group_left() {
    let st = storage();
    let e = Engine::new(EngineOptions::default());
    let err = e.instant(&st, "a + on(job) b", 600_000).unwrap_err();
    assert_eq!(
        err.to_string(),
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
    );
    let r = e.instant(&st, "a + on(job) group_left b", 600_000).unwrap();
    let Value::Vector(v) = r.value else { panic!() };
    assert_eq!(v.len(), 2);
    let v0 = v.iter().find(|s| s.labels.get("i") == Some("0")).unwrap();
    assert_eq!(v0.v, 10.0 + 30.0);
    assert_eq!(v0.labels.get("__name__"), None);
}

#[test]
fn range_query_is_sorted_and_matches_instant() {
    let st = storage();
    let e = Engine::new(EngineOptions::default());
    let q = "sum by (job) (rate(a[5m])) * 60 or rate(b[3m])";
    let r = e.range(&st, q, 0, 600_000, 30_000).unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert!(m.windows(2).all(|w| w[0].labels < w[1].labels));
    for s in &m {
        for &(t, v) in &s.samples {
            let Value::Vector(iv) = e.instant(&st, q, t).unwrap().value else {
                panic!()
            };
            let x = iv.iter().find(|x| x.labels == s.labels).unwrap();
            assert!((x.v - v).abs() < 1e-9);
        }
    }
}

#[test]
fn too_many_samples() {
    let st = storage();
    let e = Engine::new(EngineOptions {
        max_samples: 5,
        ..Default::default()
    });
    let err = e.range(&st, "a", 0, 600_000, 60_000).unwrap_err();
    assert!(matches!(err, QueryError::TooManySamples));
    let err = e.instant(&st, "a[10m]", 600_000).unwrap_err();
    assert!(matches!(err, QueryError::TooManySamples));
}

#[test]
fn timeout() {
    let st = storage();
    let e = Engine::new(EngineOptions {
        timeout: Duration::from_nanos(1),
        ..Default::default()
    });
    let err = e
        .range(
            &st,
            "max_over_time(rate(a[5m:1s])[1h:1s])",
            0,
            3_600_000,
            1_000,
        )
        .unwrap_err();
    assert!(
        matches!(err, QueryError::Timeout("query execution")),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 503);
}

#[test]
fn bad_queries() {
    let st = storage();
    let e = Engine::new(EngineOptions::default());
    assert!(matches!(
        e.instant(&st, "sum(", 0),
        Err(QueryError::BadData(_))
    ));
    assert!(matches!(
        e.range(&st, "a[5m]", 0, 60_000, 10_000),
        Err(QueryError::BadData(_))
    ));
    let r = e.instant(&st, "a[2m]", 600_000).unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert_eq!(m[0].samples, vec![(540_000, 9.0), (600_000, 10.0)]);
}

#[test]
fn runaway_queries_fail_cleanly() {
    let st = storage();
    let e = Engine::new(EngineOptions {
        max_samples: 10_000,
        timeout: Duration::MAX,
        ..Default::default()
    });
    assert!(matches!(
        e.range(&st, "1", 0, i64::MAX / 2, 1),
        Err(QueryError::TooManySamples)
    ));
    assert!(matches!(
        e.instant(&st, "max_over_time(a[100y:1ms])", 600_000),
        Err(QueryError::TooManySamples)
    ));
    // sort/limit helpers on empty input
    assert!(e.instant(&st, "sort(nonexistent)", 0).is_ok());
}

/// Aggregations straight over a selector (accumulated per group and step, or, past
/// 4M group×step cells, the general path) answer exactly as the general path does
/// over the same series (`x + 0` is not a plain selector), for every streamed operator
/// and for series with gaps, NaNs and stale markers.
#[test]
fn streamed_aggregations_match_the_general_path() {
    let st = MemStorage::new();
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let value = |k: i64, i: i64| match (k * 31 + i) % 1009 {
        0 => f64::NAN,
        1 => stale,
        r => (r as f64).sin() * 1e3 + i as f64 / 3.0,
    };
    // 60 dense series in 7 groups.
    for i in 0..60 {
        let pts: Vec<(i64, f64)> = (0..800)
            .filter(|k| (k + i) % 97 != 0) // gaps
            .map(|k| (k * 15_000 + (i % 5) * 1000, value(k, i)))
            .collect();
        st.add(
            l(&[
                ("__name__", "x"),
                ("g", &(i % 7).to_string()),
                ("i", &i.to_string()),
            ]),
            pts,
        );
    }
    // 2,100 sparse series, a group each: 2,100 × 2,001 steps is over 4M cells.
    for i in 0..2_100 {
        let pts: Vec<(i64, f64)> = (0..10)
            .map(|k| ((k * 200 + i % 200) * 15_000, value(k, i)))
            .collect();
        st.add(l(&[("__name__", "y"), ("i", &i.to_string())]), pts);
    }
    let e = Engine::new(EngineOptions {
        max_samples: usize::MAX,
        ..EngineOptions::default()
    });
    let same = |a: &str, b: &str| {
        let ra = e.range(&st, a, 0, 2_000 * 15_000, 15_000).unwrap().value;
        let rb = e.range(&st, b, 0, 2_000 * 15_000, 15_000).unwrap().value;
        let (Value::Matrix(ma), Value::Matrix(mb)) = (ra, rb) else {
            panic!()
        };
        assert!(!ma.is_empty(), "{a}");
        assert_eq!(ma.len(), mb.len(), "{a}");
        for (x, y) in ma.iter().zip(&mb) {
            assert_eq!(x.labels, y.labels, "{a}");
            assert_eq!(x.samples.len(), y.samples.len(), "{a} {}", x.labels);
            for (p, q) in x.samples.iter().zip(&y.samples) {
                assert_eq!(p.0, q.0, "{a}");
                assert!(
                    p.1.to_bits() == q.1.to_bits() || (p.1.is_nan() && q.1.is_nan()),
                    "{a} {} at {}: {} vs {}",
                    x.labels,
                    p.0,
                    p.1,
                    q.1
                );
            }
        }
    };
    for op in ["sum", "avg", "count", "group", "min", "max"] {
        same(&format!("{op} by (g) (x)"), &format!("{op} by (g) (x + 0)"));
        same(
            &format!("{op} without (i) (x)"),
            &format!("{op} without (i) (x + 0)"),
        );
        same(&format!("{op} by (i) (y)"), &format!("{op} by (i) (y + 0)"));
        // Over range functions too (names dropped by rate, kept by last_over_time).
        for f in ["rate(x[5m])", "last_over_time(x[1m])"] {
            same(
                &format!("{op} by (g) ({f})"),
                &format!("{op} by (g) ({f} + 0)"),
            );
        }
    }
    same("sum by (i) (rate(y[1h]))", "sum by (i) (rate(y[1h]) + 0)");
    same(
        "max without (i) (irate(x[1m]))",
        "max without (i) (irate(x[1m]) + 0)",
    );
    // `without` drops the name whether last_over_time kept it or not.
    same(
        "sum without (i) (last_over_time(x[1m]))",
        "sum without (i) (last_over_time(x[1m]) + 0)",
    );
}
