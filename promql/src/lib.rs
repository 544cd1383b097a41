//! PromQL evaluation for Strata. Expressions are parsed by the `promql-parser` crate and
//! evaluated here over any [`Storage`]: the querier's fan-out over Store API endpoints
//! and the bucket, or an in-memory storage in tests (`testing` and the `promqltest`
//! runner exist only with the `testing` feature, which the release binary never enables).
//!
//! The interface below is the contract between the engine and the querier; the engine
//! lives in the modules it declares.

use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;

pub use strata_tsdb::histogram::FloatHistogram;

/// One series as storage returns it: labels and samples sorted by time (milliseconds).
/// Stale markers (`0x7ff0000000000002` NaN) are kept: the engine interprets them.
///
/// Float samples and native histogram samples are kept apart, as Prometheus's `FPoint`
/// and `HPoint`: a series may change type over time, but a timestamp holds one or the
/// other. A histogram whose `sum` is the stale NaN is a stale marker.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StorageSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
    /// Native histogram samples sorted by time (integer histograms converted with
    /// [`strata_tsdb::histogram::Histogram::to_float`]).
    pub histograms: Vec<(i64, FloatHistogram)>,
    /// 0 for raw samples; else the (coarsest) resolution in ms of the downsampled
    /// aggregates among them, each stamped at the end of its window. `rate` and
    /// `increase` then measure from the last point before a range (see
    /// [`functions::downsampled_rate`]).
    pub resolution: i64,
}

/// Samples of one series still encoded (e.g. XOR chunks, possibly from several sources
/// and replicas): the engine decodes them only when it consumes the series, one series
/// at a time, into a buffer it reuses, so a query holds the encoded data of its
/// selectors plus one decoded series instead of every decoded sample.
pub trait LazySamples: Send + Sync {
    /// Replaces `out`'s contents with the series' samples, sorted by time and unique.
    /// Samples outside the selected range may be included (the engine trims).
    fn decode_into(&self, out: &mut Vec<(i64, f64)>) -> Result<(), StorageError>;

    /// Replaces `out`'s contents with the series' newest sample with a timestamp in
    /// `[lo, hi]` (nothing when there is none): all an instant vector selector
    /// evaluated at one time reads. The default decodes everything.
    fn decode_last_into(
        &self,
        out: &mut Vec<(i64, f64)>,
        lo: i64,
        hi: i64,
    ) -> Result<(), StorageError> {
        self.decode_into(out)?;
        match newest_in(out, lo, hi) {
            Some(i) => {
                out.swap(0, i);
                out.truncate(1);
            }
            None => out.clear(),
        }
        Ok(())
    }

    /// Replaces `out`'s contents with the series' native histogram samples, sorted by
    /// time and unique (and never at a timestamp [`LazySamples::decode_into`] answers).
    /// Samples outside the selected range may be included. The default: none.
    fn decode_histograms_into(
        &self,
        out: &mut Vec<(i64, FloatHistogram)>,
    ) -> Result<(), StorageError> {
        out.clear();
        Ok(())
    }
}

/// A series' samples as [`Storage::select_lazy`] answers them.
pub enum Samples {
    Decoded(Vec<(i64, f64)>),
    Lazy(Box<dyn LazySamples>),
}

impl std::fmt::Debug for Samples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Samples::Decoded(v) => write!(f, "Decoded({} samples)", v.len()),
            Samples::Lazy(_) => f.write_str("Lazy"),
        }
    }
}

impl Samples {
    /// The samples into `out` (replacing its contents); decoded ones are copied.
    pub fn decode_into(&self, out: &mut Vec<(i64, f64)>) -> Result<(), StorageError> {
        match self {
            Samples::Decoded(v) => {
                out.clear();
                out.extend_from_slice(v);
                Ok(())
            }
            Samples::Lazy(l) => l.decode_into(out),
        }
    }
}

/// Native histogram samples of one series as [`Storage::select_lazy`] answers them.
#[derive(Default)]
pub enum HistogramSamples {
    /// None (the float-only case costs nothing).
    #[default]
    None,
    Decoded(Vec<(i64, FloatHistogram)>),
    /// Decoded when the engine consumes the series, by
    /// [`LazySamples::decode_histograms_into`] (one object may serve floats and
    /// histograms: share it with an `Arc` or decode both from the same chunks).
    Lazy(Box<dyn LazySamples>),
}

impl std::fmt::Debug for HistogramSamples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistogramSamples::None => f.write_str("None"),
            HistogramSamples::Decoded(v) => write!(f, "Decoded({} histograms)", v.len()),
            HistogramSamples::Lazy(_) => f.write_str("Lazy"),
        }
    }
}

impl HistogramSamples {
    pub fn is_none(&self) -> bool {
        matches!(self, HistogramSamples::None)
    }

    /// The histogram samples into `out` (replacing its contents).
    pub fn decode_into(&self, out: &mut Vec<(i64, FloatHistogram)>) -> Result<(), StorageError> {
        match self {
            HistogramSamples::None => {
                out.clear();
                Ok(())
            }
            HistogramSamples::Decoded(v) => {
                out.clear();
                out.extend_from_slice(v);
                Ok(())
            }
            HistogramSamples::Lazy(l) => l.decode_histograms_into(out),
        }
    }
}

/// One series as [`Storage::select_lazy`] answers it: [`StorageSeries`] whose samples
/// may still be encoded.
#[derive(Debug)]
pub struct SelectedSeries {
    pub labels: Labels,
    pub samples: Samples,
    /// The series' native histogram samples ([`HistogramSamples::None`] for a float
    /// series).
    pub histograms: HistogramSamples,
    /// As [`StorageSeries::resolution`].
    pub resolution: i64,
}

impl From<StorageSeries> for SelectedSeries {
    fn from(s: StorageSeries) -> Self {
        SelectedSeries {
            labels: s.labels,
            samples: Samples::Decoded(s.samples),
            histograms: if s.histograms.is_empty() {
                HistogramSamples::None
            } else {
                HistogramSamples::Decoded(s.histograms)
            },
            resolution: s.resolution,
        }
    }
}

/// Hints the engine passes to storage about one selector, so storage can pick
/// downsampled data or skip work (Thanos's `SelectHints`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelectHints {
    /// Query range start/end in ms (after offset/@ and lookback/range widening).
    pub start: i64,
    pub end: i64,
    /// Evaluation step in ms (0 for instant queries).
    pub step: i64,
    /// Range of the enclosing range-vector selector in ms (0 for instant selectors).
    pub range: i64,
    /// Function the selector is an argument of, e.g. `rate`, `max_over_time`.
    pub func: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data could not be read; the query fails with an `execution` error.
    #[error("{0}")]
    Unavailable(String),
    /// Too much data for the query's limits.
    #[error("{0}")]
    Limit(String),
}

/// The index of the newest of time-sorted samples `v` with a timestamp in `[lo, hi]`.
pub fn newest_in<T>(v: &[(i64, T)], lo: i64, hi: i64) -> Option<usize> {
    let end = v.partition_point(|p| p.0 <= hi);
    end.checked_sub(1).filter(|&i| v[i].0 >= lo)
}

impl StorageError {
    /// The error of reading one series' samples, naming the series (storage need not
    /// keep a copy of every series' labels only for its errors); limits pass unchanged.
    pub fn of_series(self, labels: &Labels) -> StorageError {
        match self {
            StorageError::Unavailable(m) => {
                StorageError::Unavailable(format!("series {labels}: {m}"))
            }
            e => e,
        }
    }
}

/// Where the engine reads series from.
pub trait Storage: Send + Sync {
    /// Every series matching all `matchers` with samples in `[mint, maxt]` (inclusive),
    /// sorted by labels, samples outside the range may be included (the engine trims).
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
    ) -> Result<Vec<StorageSeries>, StorageError>;

    /// [`Storage::select`] with samples that may stay encoded until the engine consumes
    /// each series (what the engine calls). The default decodes eagerly via `select`.
    fn select_lazy(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
    ) -> Result<Vec<SelectedSeries>, StorageError> {
        Ok(self
            .select(matchers, mint, maxt, hints)?
            .into_iter()
            .map(SelectedSeries::from)
            .collect())
    }

    /// Warnings gathered while answering (e.g. a store that did not answer under a
    /// partial-response strategy); drained by the engine after evaluation.
    fn take_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

mod engine;
mod eval;
pub mod functions;
pub mod histogram;
#[cfg(any(test, feature = "testing"))]
pub mod promqltest;
mod scan;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub use engine::Engine;

/// Engine settings (Prometheus's flag names in brackets).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample [`--query.lookback-delta`].
    pub lookback_delta_ms: i64,
    /// Samples a query may hold in memory at once [`--query.max-samples`].
    pub max_samples: usize,
    /// Wall-clock limit for one query [`--query.timeout`].
    pub timeout: std::time::Duration,
    /// Deepest expression tree accepted, counting brackets and operators
    /// [`--query.max-depth`]. Parsing and evaluation recurse per level: the thread
    /// running a query needs [`EngineOptions::stack_size`] of stack.
    pub max_depth: usize,
    /// Keep `__name__` on series that functions and operators mark for dropping until
    /// the query's end, then drop it [`--enable-feature=promql-delayed-name-removal`].
    /// Off (Prometheus 3's default), the name goes where it is dropped, and two series
    /// that then share a label set fail there: `sum by (__name__) (rate(..))` over two
    /// metrics is one `{}` group, not an error.
    pub delayed_name_removal: bool,
}

impl EngineOptions {
    /// Stack a thread evaluating queries under these options needs: parsing,
    /// evaluating and dropping a tree `max_depth` deep, with room for the rest.
    pub fn stack_size(&self) -> usize {
        (8 << 20) + self.max_depth.saturating_mul(STACK_PER_LEVEL)
    }
}

/// Upper bound of the stack one tree level takes in the parser, the evaluator and the
/// tree's drop, measured on an unoptimised build (which uses the most).
const STACK_PER_LEVEL: usize = 32 << 10;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: std::time::Duration::from_secs(120),
            max_depth: 1000,
            delayed_name_removal: false,
        }
    }
}

/// One element of an instant vector: a float `v`, or a native histogram `h` (then `v`
/// is 0 and meaningless).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VectorSample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
    pub h: Option<Box<FloatHistogram>>,
}

/// One series of a range result (matrix): float points and histogram points, each
/// sorted by time (Prometheus's `floats` and `histograms`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
    pub histograms: Vec<(i64, FloatHistogram)>,
}

/// A query's result, in Prometheus's four result types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, s: String },
    Vector(Vec<VectorSample>),
    Matrix(Vec<RangeSeries>),
}

impl Value {
    /// Prometheus's `resultType`.
    pub fn result_type(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    /// Prometheus's annotations: warnings (`PromQL warning: …`, and storage's) and
    /// infos (`PromQL info: …`), the API's `warnings` and `infos`.
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    /// What the evaluation read and how long it took (Prometheus's `stats=all`).
    pub stats: QueryStats,
}

/// Prometheus's query statistics (`util/stats`): the engine's timings and samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryStats {
    /// Samples read, per step: a vector selector's point at each step, each sample of a
    /// range selector's window at each step (`totalQueryableSamples`).
    pub total_queryable_samples: u64,
    /// Most samples held at once at the points the engine checks `--query.max-samples`
    /// (`peakSamples`).
    pub peak_samples: u64,
    /// Parsing and checking the expression (`queryPreparationTime`).
    pub preparation: std::time::Duration,
    /// Evaluating it, storage reads included (`innerEvalTime`).
    pub inner_eval: std::time::Duration,
    /// Sorting the result (`resultSortTime`).
    pub result_sort: std::time::Duration,
    /// All of the above (`evalTotalTime`).
    pub eval_total: std::time::Duration,
}

/// Why a query failed, mapped to Prometheus's API error types.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The expression does not parse or is not valid (`bad_data`, 400).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed, e.g. many-to-many matching (`execution`, 422).
    #[error("{0}")]
    Execution(String),
    /// `--query.max-samples` was hit (`execution`, 422).
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// `--query.timeout` was hit (`timeout`, 503).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The caller went away (`canceled`, 499).
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl QueryError {
    /// Prometheus's `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::BadData(_) => "bad_data",
            QueryError::Execution(_) | QueryError::TooManySamples => "execution",
            QueryError::Timeout(_) => "timeout",
            QueryError::Canceled(_) => "canceled",
            QueryError::Storage(StorageError::Limit(_)) => "execution",
            QueryError::Storage(StorageError::Unavailable(_)) => "execution",
        }
    }

    /// The HTTP status Prometheus answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            QueryError::BadData(_) => 400,
            QueryError::Timeout(_) => 503,
            QueryError::Canceled(_) => 499,
            _ => 422,
        }
    }
}
