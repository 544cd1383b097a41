//! A small metrics registry that speaks the Prometheus text exposition format 0.0.4.
//!
//! Each component builds a struct of its metrics from the [`Registry`] it is handed (no
//! globals), keeps the handles, and the hot path is then one atomic add:
//!
//! ```
//! use strata_kit::metrics::{Counter, CounterVec, Registry};
//!
//! struct IngestMetrics {
//!     samples: Counter,
//!     rejected: CounterVec,
//! }
//!
//! impl IngestMetrics {
//!     fn new(reg: &Registry) -> Self {
//!         Self {
//!             samples: reg.counter("strata_ingester_samples_total", "Samples ingested."),
//!             rejected: reg.counter_vec(
//!                 "strata_ingester_rejected_samples_total",
//!                 "Samples rejected, by reason.",
//!                 &["reason"],
//!             ),
//!         }
//!     }
//! }
//!
//! let reg = Registry::new();
//! let m = IngestMetrics::new(&reg);
//! m.samples.inc_by(3);
//! let too_old = m.rejected.with(&["too_old"]); // keep this handle on the hot path
//! too_old.inc();
//! assert!(reg.encode().contains("strata_ingester_rejected_samples_total{reason=\"too_old\"} 1\n"));
//! ```
//!
//! Registration checks names and panics on a mistake, as Prometheus's `MustRegister`
//! does: names start with `strata_` (process metrics excepted), counters end in `_total`,
//! label names are valid and not reserved, and a name is registered once.
//!
//! Why not the official `prometheus-client` crate: measured side by side
//! (`bench/metrics`, BENCHMARKS.md "Metrics registry"), it is no faster on the hot path
//! and slower on label look-ups and large scrapes, it writes OpenMetrics only where
//! our scrapes and tests use text format 0.0.4, and it would not enforce the naming
//! rules above. Revisit for exemplars or native histograms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Prefix every Strata metric name must carry.
pub const PREFIX: &str = "strata_";

/// Content type of [`Registry::encode`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Default histogram buckets for request latencies in seconds (Thanos's HTTP buckets).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.3, 0.6, 1.0, 3.0, 6.0, 9.0, 20.0, 30.0, 60.0, 90.0, 120.0,
];

/// A set of metric families, rendered together on `/metrics`. Cloning is cheap and
/// clones share the same families.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<String, Arc<dyn Collect>>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("Registry")
            .field("families", &names)
            .finish()
    }
}

/// Something that renders one metric family in the text format.
trait Collect: Send + Sync {
    fn encode(&self, out: &mut String);
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the `process_*` metrics already registered; what a binary wants.
    pub fn with_process_metrics() -> Self {
        let reg = Self::new();
        reg.register_process_metrics();
        reg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<dyn Collect>>> {
        self.families.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, name: &str, family: Arc<dyn Collect>) {
        let mut families = self.lock();
        assert!(
            !families.contains_key(name),
            "metric {name:?} registered twice"
        );
        families.insert(name.to_string(), family);
    }

    /// Register a counter without labels.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        self.counter_vec(name, help, &[]).with(&[])
    }

    /// Register a counter with the given label names.
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        assert!(
            name.ends_with("_total"),
            "counter {name:?} must end in _total"
        );
        CounterVec(self.family(
            name,
            help,
            Kind::Counter,
            labels,
            Arc::new(CounterCore::default),
        ))
    }

    /// Register a gauge without labels.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.gauge_vec(name, help, &[]).with(&[])
    }

    /// Register a gauge with the given label names.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        GaugeVec(self.family(
            name,
            help,
            Kind::Gauge,
            labels,
            Arc::new(GaugeCore::default),
        ))
    }

    /// Register a gauge whose value `f` computes at scrape time (e.g. a queue length owned
    /// elsewhere). `f` must be cheap and must not touch this registry.
    pub fn gauge_fn(&self, name: &str, help: &str, f: impl Fn() -> f64 + Send + Sync + 'static) {
        check_name(name, true);
        let family = GaugeFnFamily {
            name: name.to_string(),
            help: help.to_string(),
            f: Box::new(f),
        };
        self.register(name, Arc::new(family));
    }

    /// Register a histogram without labels. `buckets` are the upper bounds (`le`),
    /// strictly increasing; `+Inf` is implicit.
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.histogram_vec(name, help, buckets, &[]).with(&[])
    }

    /// Register a histogram with the given label names.
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        let mut bounds: Vec<f64> = buckets.to_vec();
        if bounds.last() == Some(&f64::INFINITY) {
            bounds.pop();
        }
        assert!(
            !bounds.is_empty(),
            "histogram {name:?} needs at least one bucket"
        );
        assert!(
            bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram {name:?} buckets must be finite and strictly increasing: {buckets:?}"
        );
        assert!(
            !labels.contains(&"le"),
            "histogram {name:?} cannot have a label named le"
        );
        let bounds: Arc<[f64]> = bounds.into();
        HistogramVec(self.family(
            name,
            help,
            Kind::Histogram,
            labels,
            Arc::new(move || HistogramCore::new(bounds.clone())),
        ))
    }

    fn family<C: Sample + 'static>(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[&str],
        make: Arc<dyn Fn() -> C + Send + Sync>,
    ) -> Arc<Family<C>> {
        check_name(name, true);
        for (i, l) in labels.iter().enumerate() {
            assert!(
                is_label_name(l),
                "metric {name:?}: invalid label name {l:?}"
            );
            assert!(
                !l.starts_with("__"),
                "metric {name:?}: label names starting with __ are reserved"
            );
            assert!(
                !labels[..i].contains(l),
                "metric {name:?}: duplicate label name {l:?}"
            );
        }
        let family = Arc::new(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            label_names: labels.iter().map(|s| s.to_string()).collect(),
            children: RwLock::new(BTreeMap::new()),
            make,
        });
        self.register(name, family.clone());
        family
    }

    /// Register `process_cpu_seconds_total`, `process_resident_memory_bytes`,
    /// `process_virtual_memory_bytes`, `process_start_time_seconds`, `process_open_fds`
    /// and `process_max_fds`, read from `/proc/self` at scrape time (Linux only; elsewhere
    /// they are absent).
    pub fn register_process_metrics(&self) {
        self.register("process_", Arc::new(ProcessCollector));
    }

    /// Render every family in the text exposition format 0.0.4, families sorted by name.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.encode_into(&mut out);
        out
    }

    /// Like [`Registry::encode`], appending to `out`.
    pub fn encode_into(&self, out: &mut String) {
        let families: Vec<Arc<dyn Collect>> = self.lock().values().cloned().collect();
        for f in families {
            f.encode(out);
        }
    }
}

fn check_name(name: &str, strata: bool) {
    assert!(is_metric_name(name), "invalid metric name {name:?}");
    if strata {
        assert!(
            name.starts_with(PREFIX),
            "metric name {name:?} must start with {PREFIX}"
        );
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: its description and a child per label-value combination.
struct Family<C> {
    name: String,
    help: String,
    kind: Kind,
    label_names: Vec<String>,
    children: RwLock<BTreeMap<Vec<String>, Arc<C>>>,
    make: Arc<dyn Fn() -> C + Send + Sync>,
}

impl<C> Family<C> {
    fn with(&self, values: &[&str]) -> Arc<C> {
        assert_eq!(
            values.len(),
            self.label_names.len(),
            "metric {:?} has labels {:?}, got values {values:?}",
            self.name,
            self.label_names
        );
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        if let Some(c) = self
            .children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        let mut children = self.children.write().unwrap_or_else(|e| e.into_inner());
        children
            .entry(key)
            .or_insert_with(|| Arc::new((self.make)()))
            .clone()
    }
}

impl<C: Sample> Collect for Family<C> {
    fn encode(&self, out: &mut String) {
        let children = self.children.read().unwrap_or_else(|e| e.into_inner());
        // A family without children yet still announces itself (HELP and TYPE, no
        // samples: valid exposition), so rules and dashboards can be checked against
        // /metrics before the first error is ever counted.
        write_header(out, &self.name, &self.help, self.kind.as_str());
        for (values, child) in children.iter() {
            let labels: Vec<(&str, &str)> = self
                .label_names
                .iter()
                .map(String::as_str)
                .zip(values.iter().map(String::as_str))
                .collect();
            child.encode(&self.name, &labels, out);
        }
    }
}

/// Render the samples of one child.
trait Sample: Send + Sync {
    fn encode(&self, name: &str, labels: &[(&str, &str)], out: &mut String);
}

fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\n');
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    extra: Option<(&str, &str)>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        for (i, (k, v)) in labels.iter().chain(extra.iter()).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Format a float as Prometheus parsers accept it (`+Inf`, `-Inf`, `NaN`, else the
/// shortest representation that round-trips).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// An f64 in an `AtomicU64`, added to with a compare-and-swap loop.
#[derive(Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    fn add(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
}

#[derive(Default)]
struct CounterCore {
    ints: AtomicU64,
    floats: AtomicF64,
}

impl CounterCore {
    fn value(&self) -> f64 {
        self.ints.load(Ordering::Relaxed) as f64 + self.floats.get()
    }
}

impl Sample for CounterCore {
    fn encode(&self, name: &str, labels: &[(&str, &str)], out: &mut String) {
        let floats = self.floats.get();
        let value = if floats == 0.0 {
            self.ints.load(Ordering::Relaxed).to_string() // exact beyond 2^53
        } else {
            format_value(self.value())
        };
        write_sample(out, name, "", labels, None, &value);
    }
}

/// A monotonically increasing counter. Cloning gives another handle to the same value.
#[derive(Clone)]
pub struct Counter(Arc<CounterCore>);

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.ints.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.ints.fetch_add(n, Ordering::Relaxed);
    }

    /// Add a non-negative float (e.g. seconds); negative or NaN values are ignored.
    pub fn inc_by_f64(&self, v: f64) {
        if v > 0.0 {
            self.0.floats.add(v);
        }
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        self.0.value()
    }
}

#[derive(Default)]
struct GaugeCore(AtomicF64);

impl Sample for GaugeCore {
    fn encode(&self, name: &str, labels: &[(&str, &str)], out: &mut String) {
        write_sample(out, name, "", labels, None, &format_value(self.0.get()));
    }
}

/// A value that goes up and down. Cloning gives another handle to the same value.
#[derive(Clone)]
pub struct Gauge(Arc<GaugeCore>);

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Gauge").field(&self.get()).finish()
    }
}

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0 .0.set(v);
    }

    pub fn add(&self, v: f64) {
        self.0 .0.add(v);
    }

    pub fn sub(&self, v: f64) {
        self.0 .0.add(-v);
    }

    pub fn inc(&self) {
        self.add(1.0);
    }

    pub fn dec(&self) {
        self.add(-1.0);
    }

    pub fn get(&self) -> f64 {
        self.0 .0.get()
    }
}

struct HistogramCore {
    bounds: Arc<[f64]>,
    /// Per-bucket (not cumulative) counts; the last slot is the `+Inf` overflow.
    counts: Box<[AtomicU64]>,
    sum: AtomicF64,
}

impl HistogramCore {
    fn new(bounds: Arc<[f64]>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            counts,
            sum: AtomicF64::default(),
        }
    }
}

impl Sample for HistogramCore {
    fn encode(&self, name: &str, labels: &[(&str, &str)], out: &mut String) {
        // `_count` is the sum of the buckets read here, so it always equals `+Inf`.
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => format_value(*b),
                None => "+Inf".to_string(),
            };
            write_sample(
                out,
                name,
                "_bucket",
                labels,
                Some(("le", &le)),
                &cumulative.to_string(),
            );
        }
        write_sample(
            out,
            name,
            "_sum",
            labels,
            None,
            &format_value(self.sum.get()),
        );
        write_sample(out, name, "_count", labels, None, &cumulative.to_string());
    }
}

/// A histogram with fixed buckets. Cloning gives another handle to the same histogram.
#[derive(Clone)]
pub struct Histogram(Arc<HistogramCore>);

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .finish()
    }
}

impl Histogram {
    /// Record one observation; it lands in the first bucket whose bound is `>= v`.
    pub fn observe(&self, v: f64) {
        let i = self.0.bounds.partition_point(|b| *b < v);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum.add(v);
    }

    /// Record the seconds elapsed since `start`.
    pub fn observe_since(&self, start: Instant) {
        self.observe(start.elapsed().as_secs_f64());
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of observations so far.
    pub fn sum(&self) -> f64 {
        self.0.sum.get()
    }
}

macro_rules! vec_type {
    ($(#[$doc:meta])* $vec:ident, $core:ident, $handle:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $vec(Arc<Family<$core>>);

        impl std::fmt::Debug for $vec {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($vec))
                    .field("name", &self.0.name)
                    .field("labels", &self.0.label_names)
                    .finish()
            }
        }

        impl $vec {
            /// The child for these label values (in label-name order), created on first
            /// use. This takes a lock and allocates: keep the handle where it is hot.
            ///
            /// # Panics
            ///
            /// If the number of values differs from the number of label names.
            pub fn with(&self, values: &[&str]) -> $handle {
                $handle(self.0.with(values))
            }

            /// Drop the child for these label values, e.g. when a tenant goes away.
            pub fn remove(&self, values: &[&str]) {
                let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
                self.0.children.write().unwrap_or_else(|e| e.into_inner()).remove(&key);
            }
        }
    };
}

vec_type!(
    /// A family of [`Counter`]s told apart by label values.
    CounterVec,
    CounterCore,
    Counter
);
vec_type!(
    /// A family of [`Gauge`]s told apart by label values.
    GaugeVec,
    GaugeCore,
    Gauge
);
vec_type!(
    /// A family of [`Histogram`]s told apart by label values.
    HistogramVec,
    HistogramCore,
    Histogram
);

type GaugeFnBox = Box<dyn Fn() -> f64 + Send + Sync>;

struct GaugeFnFamily {
    name: String,
    help: String,
    f: GaugeFnBox,
}

impl Collect for GaugeFnFamily {
    fn encode(&self, out: &mut String) {
        write_header(out, &self.name, &self.help, "gauge");
        write_sample(out, &self.name, "", &[], None, &format_value((self.f)()));
    }
}

/// The standard `process_*` metrics, read from `/proc` at scrape time.
struct ProcessCollector;

/// Clock ticks per second of `/proc/<pid>/stat` times: USER_HZ, 100 on every mainstream
/// Linux architecture.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Default, PartialEq)]
struct ProcStat {
    cpu_seconds: f64,
    start_ticks: u64,
    virtual_bytes: u64,
}

/// Parse `/proc/self/stat`. The command name is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_proc_stat(s: &str) -> Option<ProcStat> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field N is f[N - 3].
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start_ticks: u64 = f.get(19)?.parse().ok()?;
    let virtual_bytes: u64 = f.get(20)?.parse().ok()?;
    Some(ProcStat {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        start_ticks,
        virtual_bytes,
    })
}

/// `VmRSS:` of `/proc/self/status`, in bytes (the kernel reports kB).
fn parse_status_rss(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn parse_btime(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// Soft "Max open files" of `/proc/self/limits`.
fn parse_max_fds(s: &str) -> Option<f64> {
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(f64::INFINITY)
    } else {
        soft.parse().ok()
    }
}

impl Collect for ProcessCollector {
    fn encode(&self, out: &mut String) {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let stat = read("/proc/self/stat").and_then(|s| parse_proc_stat(&s));
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            write_header(out, name, help, "gauge");
            write_sample(out, name, "", &[], None, &format_value(v));
        };
        if let Some(st) = &stat {
            let name = "process_cpu_seconds_total";
            write_header(
                out,
                name,
                "Total user and system CPU time spent in seconds.",
                "counter",
            );
            write_sample(out, name, "", &[], None, &format_value(st.cpu_seconds));
        }
        if let Some(n) = read("/proc/self/limits").and_then(|s| parse_max_fds(&s)) {
            gauge(
                out,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                n,
            );
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let n = dir.count() as f64;
            gauge(
                out,
                "process_open_fds",
                "Number of open file descriptors.",
                n,
            );
        }
        if let Some(rss) = read("/proc/self/status").and_then(|s| parse_status_rss(&s)) {
            gauge(
                out,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss as f64,
            );
        }
        if let (Some(st), Some(btime)) = (&stat, read("/proc/stat").and_then(|s| parse_btime(&s))) {
            let start = btime as f64 + st.start_ticks as f64 / USER_HZ;
            gauge(
                out,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                start,
            );
        }
        if let Some(st) = &stat {
            gauge(
                out,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                st.virtual_bytes as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> (Registry, Counter, CounterVec, Gauge, HistogramVec) {
        let reg = Registry::new();
        let c = reg.counter("strata_test_events_total", "Events seen.");
        let cv = reg.counter_vec(
            "strata_test_errors_total",
            "Errors by reason.\nSecond \\ line.",
            &["reason"],
        );
        let g = reg.gauge("strata_test_temperature_celsius", "Current temperature.");
        let h = reg.histogram_vec(
            "strata_test_duration_seconds",
            "Duration.",
            &[0.1, 1.0],
            &["op"],
        );
        (reg, c, cv, g, h)
    }

    #[test]
    fn exposition_is_exact() {
        let (reg, c, cv, g, h) = small();
        c.inc_by(3);
        cv.with(&["b\"a\\d\nx"]).inc();
        cv.with(&["a"]).inc_by(2);
        g.set(-1.5);
        let read = h.with(&["read"]);
        read.observe(0.1); // le is inclusive
        read.observe(0.5);
        read.observe(7.0);
        let _unused = reg.gauge_vec("strata_test_unused", "Never set.", &["x"]);
        reg.gauge_fn("strata_test_queue_length", "Queued items.", || 4.0);
        let want = r#"# HELP strata_test_duration_seconds Duration.
# TYPE strata_test_duration_seconds histogram
strata_test_duration_seconds_bucket{op="read",le="0.1"} 1
strata_test_duration_seconds_bucket{op="read",le="1"} 2
strata_test_duration_seconds_bucket{op="read",le="+Inf"} 3
strata_test_duration_seconds_sum{op="read"} 7.6
strata_test_duration_seconds_count{op="read"} 3
# HELP strata_test_errors_total Errors by reason.\nSecond \\ line.
# TYPE strata_test_errors_total counter
strata_test_errors_total{reason="a"} 2
strata_test_errors_total{reason="b\"a\\d\nx"} 1
# HELP strata_test_events_total Events seen.
# TYPE strata_test_events_total counter
strata_test_events_total 3
# HELP strata_test_queue_length Queued items.
# TYPE strata_test_queue_length gauge
strata_test_queue_length 4
# HELP strata_test_temperature_celsius Current temperature.
# TYPE strata_test_temperature_celsius gauge
strata_test_temperature_celsius -1.5
# HELP strata_test_unused Never set.
# TYPE strata_test_unused gauge
"#;
        assert_eq!(reg.encode(), want);
    }

    #[test]
    fn handles_are_shared() {
        let (reg, c, cv, _g, h) = small();
        let a1 = cv.with(&["x"]);
        let a2 = cv.with(&["x"]);
        a1.inc();
        a2.inc();
        assert_eq!(a1.get(), 2.0);
        c.clone().inc();
        c.inc_by_f64(0.5);
        assert_eq!(c.get(), 1.5);
        assert!(reg.encode().contains("strata_test_events_total 1.5\n"));
        let hh = h.with(&["w"]);
        hh.observe(f64::INFINITY);
        assert_eq!(h.with(&["w"]).count(), 1);
        cv.remove(&["x"]);
        assert!(!reg.encode().contains("reason=\"x\""));
    }

    #[test]
    #[should_panic(expected = "must start with strata_")]
    fn prefix_required() {
        Registry::new().gauge("foo_bar", "x");
    }

    #[test]
    #[should_panic(expected = "must end in _total")]
    fn counters_end_in_total() {
        Registry::new().counter("strata_requests", "x");
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn no_duplicates() {
        let reg = Registry::new();
        reg.gauge("strata_x", "x");
        reg.clone().gauge("strata_x", "x");
    }

    #[test]
    #[should_panic(expected = "invalid label name")]
    fn label_names_checked() {
        Registry::new().gauge_vec("strata_x", "x", &["a-b"]);
    }

    #[test]
    #[should_panic(expected = "has labels")]
    fn label_arity_checked() {
        Registry::new()
            .gauge_vec("strata_x", "x", &["a"])
            .with(&["1", "2"]);
    }

    #[test]
    fn proc_parsers() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 \
                    5000 123456789 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let st = parse_proc_stat(stat).unwrap();
        assert_eq!(
            st,
            ProcStat {
                cpu_seconds: 3.0,
                start_ticks: 5000,
                virtual_bytes: 123456789
            }
        );
        assert_eq!(
            parse_status_rss("Name:\tx\nVmRSS:\t   1234 kB\n"),
            Some(1234 * 1024)
        );
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_present() {
        let text = Registry::with_process_metrics().encode();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        let start: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "start {start}, now {now}"
        );
    }

    /// Runs `promtool check metrics` over a registry with every kind of metric. Skipped
    /// when promtool is missing, unless CI is set: then a missing promtool fails.
    #[test]
    fn promtool_accepts_exposition() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let promtool = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
        let child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CI").is_none() =>
            {
                eprintln!("skipping: promtool not found");
                return;
            }
            Err(e) => panic!("cannot run {promtool:?}: {e}"),
        };
        let (reg, c, cv, g, h) = small();
        reg.register_process_metrics();
        c.inc();
        cv.with(&["a \"quoted\" value"]).inc();
        g.set(f64::NAN);
        h.with(&["read"]).observe(0.3);
        let text = reg.encode();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
            "promtool check metrics failed ({}):\n{stdout}{stderr}\n--- input ---\n{text}",
            out.status
        );
    }
}
