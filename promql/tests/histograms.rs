//! Native histograms reaching the engine through the storage interface the read paths
//! use: histogram samples answered lazily (`HistogramSamples::Lazy`, decoded when the
//! engine consumes the series) beside float samples of the same series.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use strata_promql::{
    Engine, EngineOptions, FloatHistogram, HistogramSamples, LazySamples, Samples, SelectHints,
    SelectedSeries, Storage, StorageError, StorageSeries, Value,
};
use strata_tsdb::histogram::{CounterResetHint, Span};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;

/// A counter histogram growing by one observation in bucket 0 per minute, with a
/// counter reset at minute 6; decodes are counted.
struct Lazy {
    decodes: Arc<AtomicUsize>,
}

fn hist(n: f64, hint: CounterResetHint) -> FloatHistogram {
    FloatHistogram {
        counter_reset_hint: hint,
        schema: 0,
        count: n,
        sum: n * 0.5,
        positive_spans: vec![Span {
            offset: 0,
            length: 1,
        }],
        positive_buckets: vec![n],
        ..Default::default()
    }
}

impl LazySamples for Lazy {
    fn decode_into(&self, out: &mut Vec<(i64, f64)>) -> Result<(), StorageError> {
        out.clear();
        Ok(())
    }

    fn decode_histograms_into(
        &self,
        out: &mut Vec<(i64, FloatHistogram)>,
    ) -> Result<(), StorageError> {
        self.decodes.fetch_add(1, Ordering::Relaxed);
        out.clear();
        for i in 0..=10i64 {
            let (n, hint) = match i {
                0..=5 => (i as f64 * 60.0, CounterResetHint::NotCounterReset),
                6 => (0.0, CounterResetHint::CounterReset),
                _ => ((i - 6) as f64 * 60.0, CounterResetHint::NotCounterReset),
            };
            out.push((i * 60_000, hist(n, hint)));
        }
        Ok(())
    }
}

struct St {
    decodes: Arc<AtomicUsize>,
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
        Ok(vec![SelectedSeries {
            labels: Labels::from_pairs([("__name__", "h_seconds")]),
            samples: Samples::Decoded(vec![]),
            histograms: HistogramSamples::Lazy(Box::new(Lazy {
                decodes: self.decodes.clone(),
            })),
            resolution: 0,
        }])
    }
}

#[test]
fn lazy_histograms_are_selected_and_rated() {
    let st = St {
        decodes: Default::default(),
    };
    let e = Engine::new(EngineOptions::default());

    let r = e.instant(&st, "h_seconds", 300_000).unwrap();
    let Value::Vector(v) = r.value else {
        panic!("vector expected")
    };
    assert_eq!(v.len(), 1);
    let h = v[0].h.as_ref().expect("a histogram sample");
    assert_eq!((h.count, h.sum), (300.0, 150.0));

    // One observation a second: after the reset at 6m the rate is back to 1/s.
    let rate = |t: i64| {
        let r = e
            .instant(&st, "histogram_count(rate(h_seconds[3m]))", t)
            .unwrap();
        // The name does not end in _total but the series holds no floats: no info.
        assert!(r.infos.is_empty(), "{:?}", r.infos);
        let Value::Vector(v) = r.value else {
            panic!("vector expected")
        };
        v[0].v
    };
    assert!((rate(540_000) - 1.0).abs() < 1e-9, "rate {}", rate(540_000));
    // Across the reset, Prometheus leaves out the sample before it (its buckets need
    // not match) and extrapolates from 6m: 60 over 2m, stretched to 3m, per 3m.
    assert!((rate(420_000) - 0.5).abs() < 1e-9, "rate {}", rate(420_000));

    // A range query's matrix carries the histograms in `histograms`.
    let r = e.range(&st, "h_seconds * 2", 0, 120_000, 60_000).unwrap();
    let Value::Matrix(m) = r.value else {
        panic!("matrix expected")
    };
    assert!(m[0].samples.is_empty());
    let counts: Vec<f64> = m[0].histograms.iter().map(|p| p.1.count).collect();
    assert_eq!(counts, vec![0.0, 120.0, 240.0]);
    assert!(st.decodes.load(Ordering::Relaxed) >= 3);
}

#[test]
fn float_functions_leave_histograms_out_and_say_so() {
    let st = St {
        decodes: Default::default(),
    };
    let e = Engine::new(EngineOptions::default());
    // abs() is defined on floats: histogram samples are dropped.
    let r = e.instant(&st, "abs(h_seconds)", 300_000).unwrap();
    assert_eq!(r.value, Value::Vector(vec![]));
    // max ignores histograms with Prometheus's info.
    let r = e.instant(&st, "max(h_seconds)", 300_000).unwrap();
    assert_eq!(r.value, Value::Vector(vec![]));
    assert_eq!(
        r.infos,
        vec!["PromQL info: ignored histogram in max aggregation".to_string()]
    );
    // histogram + float is undefined: dropped with an info naming the types.
    let r = e.instant(&st, "h_seconds + 1", 300_000).unwrap();
    assert_eq!(r.value, Value::Vector(vec![]));
    assert_eq!(
        r.infos,
        vec![
            r#"PromQL info: incompatible sample types encountered for binary operator "+": histogram + float"#
                .to_string()
        ]
    );
}
