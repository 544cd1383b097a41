//! A series whose samples fail to decode fails the query with an error naming the
//! series: storage reports what went wrong, the engine says which series it was.

use strata_promql::{
    Engine, EngineOptions, HistogramSamples, LazySamples, Samples, SelectHints, SelectedSeries,
    Storage, StorageError, StorageSeries,
};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;

struct Broken(fn() -> StorageError);

impl LazySamples for Broken {
    fn decode_into(&self, _: &mut Vec<(i64, f64)>) -> Result<(), StorageError> {
        Err((self.0)())
    }
}

struct St(fn() -> StorageError);

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
        Ok(vec![SelectedSeries {
            labels: Labels::from_pairs([("__name__", "up"), ("job", "a")]),
            samples: Samples::Lazy(Box::new(Broken(self.0))),
            histograms: HistogramSamples::default(),
            resolution: 0,
        }])
    }
}

#[test]
fn decode_errors_name_the_series() {
    let e = Engine::new(EngineOptions::default());
    let st = St(|| StorageError::Unavailable("chunk data: bad varint".into()));
    for q in ["up", "sum(up)", "rate(up[5m])"] {
        let err = e.instant(&st, q, 300_000).unwrap_err().to_string();
        assert!(
            err.contains(r#"series {__name__="up", job="a"}: chunk data: bad varint"#),
            "{q}: {err}"
        );
    }
    // a limit is the query's, not the series': passed on as it is
    let st = St(|| StorageError::Limit("too many chunk bytes".into()));
    let err = e.instant(&st, "up", 300_000).unwrap_err().to_string();
    assert!(
        err.contains("too many chunk bytes") && !err.contains("series {"),
        "{err}"
    );
}
