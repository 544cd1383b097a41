//! Queries an attacker (or a code generator) can write: nested thousands deep, with
//! overflowing durations, with any UTF-8 in strings, or abandoned mid-evaluation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use strata_promql::testing::MemStorage;
use strata_promql::{
    Engine, EngineOptions, QueryError, SelectHints, Storage, StorageError, StorageSeries, Value,
};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn nested(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

/// `(x)[5m:1m]` inside `max_over_time(…)`, `n` deep.
fn nested_subqueries(n: usize) -> String {
    nested("max_over_time((", "x", ")[5m:1m])", n)
}

fn plus_terms(n: usize) -> String {
    vec!["1"; n].join("+")
}

/// The shapes of the issue, far past the limit, are refused before anything recurses:
/// on a 256 KiB stack (an eighth of a tokio worker's) nothing overflows.
#[test]
fn deep_queries_are_bad_data_naming_the_limit() {
    let h = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let st = MemStorage::new();
            let e = Engine::new(EngineOptions::default());
            for q in [
                plus_terms(1_500),
                nested("abs(", "1", ")", 1_500),
                nested("sum(", "x", ")", 2_000),
                nested_subqueries(1_000),
                nested("(", "1", ")", 100_000),
                nested("-", "1", "", 100_000),
            ] {
                let err = e.instant(&st, &q, 0).unwrap_err();
                assert!(matches!(err, QueryError::BadData(_)), "{err:?}");
                let msg = err.to_string();
                assert!(
                    msg.contains("parse error: expression nested more than 1000 levels deep")
                        && msg.contains("--query.max-depth"),
                    "{msg}"
                );
                assert_eq!(err.http_status(), 400);
            }
        })
        .unwrap();
    h.join().unwrap();
}

/// Queries just under the limit parse and evaluate on a thread with the stack the
/// options ask for (this checks `EngineOptions::stack_size` on this build).
#[test]
fn deepest_accepted_queries_evaluate() {
    let opts = EngineOptions::default();
    let stack = opts.stack_size();
    let h = std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let st = MemStorage::new();
            st.add(l(&[("__name__", "x")]), (0..=10).map(|i| (i * 60_000, 1.0)));
            let e = Engine::new(opts);
            let one = |q: &str| match e.instant(&st, q, 600_000) {
                Ok(r) => r.value,
                Err(e) => panic!("{}: {e}", &q[..40.min(q.len())]),
            };
            assert_eq!(
                one(&plus_terms(1_000)),
                Value::Scalar {
                    t: 600_000,
                    v: 1000.0
                }
            );
            let Value::Vector(v) = one(&nested("abs(", "-x", ")", 998)) else {
                panic!()
            };
            assert_eq!(v[0].v, 1.0);
            let Value::Vector(v) = one(&nested("sum(", "x", ")", 999)) else {
                panic!()
            };
            assert_eq!(v[0].v, 1.0);
            let Value::Vector(v) = one(&nested_subqueries(499)) else {
                panic!()
            };
            assert_eq!(v[0].v, 1.0);
            let x_plus = vec!["x"; 1_000].join(" + ");
            let Value::Vector(v) = one(&x_plus) else {
                panic!()
            };
            assert_eq!(v[0].v, 1000.0);
        })
        .unwrap();
    h.join().unwrap();
}

/// Parse time stays linear in practice: the width of a query is not its depth, so a
/// query of 20,000 short alternatives is accepted (the limit is on depth alone).
#[test]
fn wide_queries_are_not_deep() {
    let st = MemStorage::new();
    st.add(l(&[("__name__", "x"), ("a", "1")]), [(0, 1.0)]);
    let e = Engine::new(EngineOptions::default());
    let q = format!(
        "count(label_replace(x, \"b\", \"{}\", \"a\", \".*\"))",
        "y".repeat(10_000)
    );
    assert!(e.instant(&st, &q, 0).is_ok());
    let alternatives: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
    let q = format!("count(x{{a=~\"{}\"}})", alternatives.join("|"));
    assert!(e.instant(&st, &q, 0).is_ok());
}

#[test]
fn parse_errors_say_what_and_where() {
    let st = MemStorage::new();
    let e = Engine::new(EngineOptions::default());
    let msg = |q: &str| e.instant(&st, q, 0).unwrap_err().to_string();
    assert_eq!(msg("1 +"), "1:4: parse error: unexpected end of input");
    assert_eq!(msg("sum(x"), "1:6: parse error: unclosed left parenthesis");
    assert_eq!(msg("1 + * 2"), "1:5: parse error: unexpected <op:*>");
    assert_eq!(
        msg("rate(x[99999999999999y])"),
        r#"1:8: parse error: duration "99999999999999y" out of range"#
    );
    assert_eq!(
        msg("x offset 9999999999999999999999s"),
        r#"1:10: parse error: duration "9999999999999999999999s" out of range"#
    );
    assert!(!msg("rate(x[5000000000y])").contains("greater than 0"));
    assert!(matches!(
        e.instant(&st, "x[1e300]", 0),
        Err(QueryError::BadData(_))
    ));
}

fn go_quote(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// `holt_winters` (2.x) answers as `double_exponential_smoothing` for any label
    /// value, non-ASCII included.
    #[test]
    fn holt_winters_is_double_exponential_smoothing_for_any_utf8(v in "\\PC{1,12}") {
        let st = MemStorage::new();
        st.add(
            l(&[("__name__", "x"), ("a", &v)]),
            (0..=10).map(|i| (i * 60_000, (i * i) as f64)),
        );
        st.add(l(&[("__name__", "x"), ("a", "other")]), [(600_000, 1.0)]);
        let e = Engine::new(EngineOptions::default());
        let q = |f: &str| {
            let q = format!("{f}(x{{a={}}}[10m], 0.5, 0.5)", go_quote(&v));
            e.instant(&st, &q, 600_000).unwrap().value
        };
        let old = q("holt_winters");
        let Value::Vector(ref s) = old else { panic!() };
        prop_assert_eq!(s.len(), 1);
        prop_assert_eq!(s[0].labels.get("a"), Some(v.as_str()));
        prop_assert_eq!(old, q("double_exponential_smoothing"));
    }
}

/// Storage that raises the query's cancel flag on its first read, as the querier does
/// when the client goes away mid-query.
struct CancelOnRead {
    inner: MemStorage,
    flag: Arc<AtomicBool>,
}

impl Storage for CancelOnRead {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
    ) -> Result<Vec<StorageSeries>, StorageError> {
        self.flag.store(true, Ordering::Relaxed);
        self.inner.select(matchers, mint, maxt, hints)
    }
}

#[test]
fn a_canceled_query_stops() {
    for q in [
        "a",
        "sum(a)",
        "sum(a * 2)",
        "rate(a[5m])",
        "sum by (i) (rate(a[5m]))",
        "max_over_time(a[5m:1s])",
        "a / on(i) a",
        "histogram_quantile(0.9, a)",
    ] {
        let flag = Arc::new(AtomicBool::new(false));
        let st = CancelOnRead {
            inner: MemStorage::new(),
            flag: flag.clone(),
        };
        for i in 0..20 {
            st.inner.add(
                l(&[("__name__", "a"), ("i", &i.to_string())]),
                (0..=1000).map(|k| (k * 1_000, k as f64)),
            );
        }
        let e = Engine::new(EngineOptions::default()).with_cancel(flag);
        let err = e.range(&st, q, 0, 1_000_000, 100).unwrap_err();
        assert!(matches!(err, QueryError::Canceled(_)), "{q}: {err:?}");
        assert_eq!(err.http_status(), 499);
    }
}
