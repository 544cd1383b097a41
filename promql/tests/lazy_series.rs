//! How the engine reads lazily decoded series: a series whose samples fail to decode
//! fails the query with an error naming the series (storage reports what went wrong,
//! the engine says which series it was), and an instant selector at one time asks for
//! each series' newest sample only.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use strata_promql::{
    Engine, EngineOptions, HistogramSamples, LazySamples, Samples, SelectHints, SelectedSeries,
    Storage, StorageError, StorageSeries, Value,
};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;

struct Broken(fn() -> StorageError);

impl LazySamples for Broken {
    fn decode_into(&self, _: &mut Vec<(i64, f64)>) -> Result<(), StorageError> {
        Err((self.0)())
    }
}

/// Series `up{job=…}`, one per job, each read through the `LazySamples` `make` gives.
struct St {
    jobs: &'static [&'static str],
    make: Box<dyn Fn() -> Box<dyn LazySamples> + Send + Sync>,
}

impl Storage for St {
    fn select(
        &self,
        _: &[Matcher],
        _: i64,
        _: i64,
        _: &SelectHints,
    ) -> Result<Vec<StorageSeries>, StorageError> {
        unreachable!("the engine calls select_lazy")
    }

    fn select_lazy(
        &self,
        _: &[Matcher],
        _: i64,
        _: i64,
        _: &SelectHints,
    ) -> Result<Vec<SelectedSeries>, StorageError> {
        Ok(self
            .jobs
            .iter()
            .map(|job| SelectedSeries {
                labels: Labels::from_pairs([("__name__", "up"), ("job", job)]),
                samples: Samples::Lazy((self.make)()),
                histograms: HistogramSamples::default(),
                resolution: 0,
            })
            .collect())
    }
}

#[test]
fn decode_errors_name_the_series() {
    let e = Engine::new(EngineOptions::default());
    let broken = |e: fn() -> StorageError| St {
        jobs: &["a"],
        make: Box::new(move || Box::new(Broken(e))),
    };
    let st = broken(|| StorageError::Unavailable("chunk data: bad varint".into()));
    for q in ["up", "sum(up)", "rate(up[5m])"] {
        let err = e.instant(&st, q, 300_000).unwrap_err().to_string();
        assert!(
            err.contains(r#"series {__name__="up", job="a"}: chunk data: bad varint"#),
            "{q}: {err}"
        );
    }
    // a limit is the query's, not the series': passed on as it is
    let st = broken(|| StorageError::Limit("too many chunk bytes".into()));
    let err = e.instant(&st, "up", 300_000).unwrap_err().to_string();
    assert!(
        err.contains("too many chunk bytes") && !err.contains("series {"),
        "{err}"
    );
}

/// One sample a minute for 20 minutes; counts how it is read.
struct Counting {
    full: Arc<AtomicUsize>,
    last: Arc<AtomicUsize>,
}

impl LazySamples for Counting {
    fn decode_into(&self, out: &mut Vec<(i64, f64)>) -> Result<(), StorageError> {
        self.full.fetch_add(1, Relaxed);
        out.clear();
        out.extend((0..20).map(|i| (i * 60_000, i as f64)));
        Ok(())
    }

    fn decode_last_into(
        &self,
        out: &mut Vec<(i64, f64)>,
        lo: i64,
        hi: i64,
    ) -> Result<(), StorageError> {
        self.last.fetch_add(1, Relaxed);
        out.clear();
        // newest minute sample in [lo, hi]
        let t = hi.div_euclid(60_000).min(19) * 60_000;
        if t >= lo && t >= 0 {
            out.push((t, (t / 60_000) as f64));
        }
        Ok(())
    }
}

#[test]
fn instant_selectors_read_only_the_newest_sample() {
    let e = Engine::new(EngineOptions::default());
    let (full, last) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let st = St {
        jobs: &["a", "b"],
        make: {
            let (full, last) = (full.clone(), last.clone());
            Box::new(move || {
                Box::new(Counting {
                    full: full.clone(),
                    last: last.clone(),
                })
            })
        },
    };
    let reads = || (full.swap(0, Relaxed), last.swap(0, Relaxed));
    let value = |v: Value| match v {
        Value::Vector(v) => v.iter().map(|s| s.v).collect::<Vec<_>>(),
        v => panic!("vector expected, got {v:?}"),
    };
    // at 10m30s the newest sample is 10m's; 25m is past the lookback of the last (19m)
    assert_eq!(
        value(e.instant(&st, "up", 630_000).unwrap().value),
        [10.0, 10.0]
    );
    assert_eq!(reads(), (0, 2));
    assert_eq!(
        value(e.instant(&st, "count(up)", 630_000).unwrap().value),
        [2.0]
    );
    assert_eq!(reads(), (0, 2));
    assert_eq!(
        value(e.instant(&st, "timestamp(up)", 630_000).unwrap().value),
        [600.0, 600.0]
    );
    assert_eq!(reads(), (0, 2));
    assert!(value(e.instant(&st, "up", 25 * 60_000).unwrap().value).is_empty());
    assert_eq!(reads(), (0, 2));
    // a range selector and a range query read everything
    assert_eq!(
        value(
            e.instant(&st, "sum(count_over_time(up[5m]))", 630_000)
                .unwrap()
                .value
        ),
        [10.0]
    );
    assert_eq!(reads(), (2, 0));
    let r = e.range(&st, "up", 0, 600_000, 60_000).unwrap();
    assert!(matches!(r.value, Value::Matrix(ref m) if m.len() == 2 && m[0].samples.len() == 11));
    assert_eq!(reads(), (2, 0));
}
