//! OTLP metrics → Prometheus series, with Prometheus's translation rules
//! (`otlptranslator` with its default `UnderscoreEscapingWithSuffixes` strategy, label
//! names sanitised with `key_` prefixes and repeated underscores kept):
//!
//! * names: tokens of `[a-zA-Z0-9:]`, the unit as a suffix (`s` → `seconds`, `By` →
//!   `bytes`, `m/s` → `meters_per_second`, `{…}` units dropped), `_total` on monotonic
//!   sums, `_ratio` on gauges of unit `1`;
//! * gauges and non-monotonic sums are gauges, monotonic cumulative sums counters;
//!   delta temporality is refused (as Prometheus without its delta feature flags);
//! * histograms: `_bucket{le}` (cumulative), `_sum`, `_count`; summaries: `{quantile}`,
//!   `_sum`, `_count`; exponential histograms become integer native histograms
//!   (`exponentialToNativeHistogram`, scales above 8 merged down to 8);
//! * `service.namespace`/`service.name` → `job`, `service.instance.id` → `instance`, the
//!   other resource attributes on `target_info` (and promoted to every series when listed
//!   in `--distributor.otel-promote-resource-attributes`);
//! * no recorded value → a staleness marker.

use std::collections::BTreeMap;

use strata_proto::otlp::collector::ExportMetricsServiceRequest;
use strata_proto::otlp::common::{any_value, AnyValue, KeyValue};
use strata_proto::otlp::metrics::{
    exemplar, exponential_histogram_data_point, metric, number_data_point, AggregationTemporality,
    Exemplar as OtlpExemplar, ExponentialHistogramDataPoint, Gauge, NumberDataPoint, ScopeMetrics,
    Sum,
};
use strata_proto::prometheus::{
    metric_metadata::MetricType, Exemplar, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};

/// Prometheus's `defaultZeroThreshold` for exponential histograms (OTLP's own
/// `zero_threshold` is not used, as Prometheus does not).
const DEFAULT_ZERO_THRESHOLD: f64 = 1e-128;

/// Prometheus's staleness marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
/// The lookback delta `target_info` samples are spaced by half of (Prometheus's default).
const LOOKBACK_MS: i64 = 300_000;
/// `DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK`.
const NO_RECORDED_VALUE: u32 = 1;

/// How resource attributes become labels.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Resource attributes copied onto every series (when the series lacks the label).
    pub promote_resource_attributes: Vec<String>,
    /// Keep `service.name`, `service.namespace`, `service.instance.id` on `target_info`.
    pub keep_identifying_resource_attributes: bool,
    /// Label every series with its instrumentation scope (`otel_scope_name`,
    /// `otel_scope_version`, `otel_scope_schema_url`, `otel_scope_<attribute>`), as
    /// Prometheus's `promote_scope_metadata`.
    pub promote_scope_metadata: bool,
}

/// The translation: series for remote write, and what was refused.
#[derive(Debug, Default)]
pub struct Translated {
    pub request: WriteRequest,
    /// Data points not translated.
    pub rejected: u64,
    /// Why, one line per distinct reason (the first few).
    pub errors: Vec<String>,
}

impl Translated {
    fn reject(&mut self, n: usize, why: String) {
        self.rejected += n as u64;
        if self.errors.len() < 8 && !self.errors.contains(&why) {
            self.errors.push(why);
        }
    }
}

const UNITS: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tibibytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("1", ""),
    ("%", "percent"),
];

const PER_UNITS: &[(&str, &str)] = &[
    ("s", "second"),
    ("m", "minute"),
    ("h", "hour"),
    ("d", "day"),
    ("w", "week"),
    ("mo", "month"),
    ("y", "year"),
];

fn lookup<'a>(table: &[(&str, &'a str)], k: &'a str) -> &'a str {
    table.iter().find(|(a, _)| *a == k).map_or(k, |(_, b)| b)
}

/// The unit's suffixes: (main, per), e.g. `m/s` → (`meters`, `per_second`).
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let main = if !main.is_empty() && !main.contains(['{', '}']) {
        lookup(UNITS, main).to_string()
    } else {
        String::new()
    };
    let per = match parts.next().map(str::trim) {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
            format!("per_{}", lookup(PER_UNITS, p))
        }
        _ => String::new(),
    };
    (main, per)
}

fn valid_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// `cleanUpUnit`: invalid characters to `_`, runs of `_` collapsed, no leading `_`.
fn clean_unit(u: &str) -> String {
    let mut out = String::with_capacity(u.len());
    for c in u.chars() {
        let c = if valid_metric_char(c) { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out.trim_start_matches('_').to_string()
}

/// What the name's suffixes depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    MonotonicCounter,
    NonMonotonicCounter,
    Histogram,
    Summary,
}

/// Prometheus's metric name for an OTLP metric (`normalizeName`).
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut tokens: Vec<String> = name
        .split(|c: char| !valid_metric_char(c))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let (main, per) = unit_suffixes(unit);
    let mut main = clean_unit(&main);
    let mut per = clean_unit(&per);
    if tokens.contains(&main) {
        main.clear();
    }
    if per == "per_" {
        per.clear();
    } else {
        per = per.trim_end_matches('_').to_string();
        if tokens.contains(&per) {
            per.clear();
        }
    }
    if !per.is_empty() {
        main = main.trim_end_matches('_').to_string();
    }
    if !main.is_empty() {
        tokens.push(main);
    }
    if !per.is_empty() {
        tokens.push(per);
    }
    if kind == Kind::MonotonicCounter {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if unit == "1" && kind == Kind::Gauge {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    let mut out = tokens.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The unit as metadata shows it (`UnitNamer`): `m/s` → `meters_per_second`.
pub fn unit_name(unit: &str) -> String {
    let (main, per) = unit_suffixes(unit);
    let (main, per) = (clean_unit(&main), clean_unit(&per));
    let u = match (main.is_empty(), per.is_empty()) {
        (false, false) => format!("{main}_{per}"),
        (false, true) => main,
        _ => per,
    };
    u.trim_start_matches('_').trim_end_matches('_').to_string()
}

/// Prometheus's label name for an attribute key (`LabelNamer` with underscore
/// sanitisation and repeated underscores kept); `None` when nothing valid is left.
pub fn label_name(key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    if out.chars().all(|c| c == '_') {
        return None;
    }
    Some(out)
}

/// An attribute value as text (pcommon's `AsString`).
fn value_string(v: &AnyValue) -> String {
    match &v.value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format_float(*d),
        Some(any_value::Value::BytesValue(b)) => base64(b),
        Some(other) => json_value(&Some(other.clone())).to_string(),
    }
}

fn json_value(v: &Option<any_value::Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        None => J::Null,
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => J::from(*d),
        Some(any_value::Value::BytesValue(b)) => J::String(base64(b)),
        Some(any_value::Value::ArrayValue(a)) => {
            J::Array(a.values.iter().map(|v| json_value(&v.value)).collect())
        }
        // string-table references exist only in OTLP profiles
        Some(any_value::Value::StringValueStrindex(_)) => J::Null,
        Some(any_value::Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        json_value(&kv.value.as_ref().and_then(|v| v.value.clone())),
                    )
                })
                .collect(),
        ),
    }
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, with Prometheus's `+Inf`/`-Inf`/`NaN`.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// Labels built from attributes: sanitised names, colliding names' values joined
/// with `;` in key order (as Prometheus does).
fn attribute_labels(attrs: &[KeyValue], skip: &[&str]) -> BTreeMap<String, String> {
    let mut sorted: Vec<(&str, String)> = attrs
        .iter()
        .filter(|kv| !skip.contains(&kv.key.as_str()))
        .map(|kv| {
            (
                kv.key.as_str(),
                kv.value.as_ref().map(value_string).unwrap_or_default(),
            )
        })
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in sorted {
        let Some(name) = label_name(k) else { continue };
        match out.get_mut(&name) {
            Some(existing) if !existing.is_empty() => {
                existing.push(';');
                existing.push_str(&v);
            }
            _ => {
                out.insert(name, v);
            }
        }
    }
    out
}

struct Resource {
    job: Option<String>,
    instance: Option<String>,
    promoted: BTreeMap<String, String>,
}

fn resource_context(attrs: &[KeyValue], settings: &Settings) -> Resource {
    let job = get(attrs, "service.name").map(|n| {
        let n = value_string(n);
        match get(attrs, "service.namespace") {
            Some(ns) => format!("{}/{n}", value_string(ns)),
            None => n,
        }
    });
    let instance = get(attrs, "service.instance.id").map(value_string);
    let promoted_attrs: Vec<KeyValue> = attrs
        .iter()
        .filter(|kv| settings.promote_resource_attributes.contains(&kv.key))
        .cloned()
        .collect();
    Resource {
        job,
        instance,
        promoted: attribute_labels(&promoted_attrs, &[]),
    }
}

/// The scope's labels when `promote_scope_metadata` is on and the scope has a name
/// (Prometheus's rule): its attributes as `otel_scope_<key>`, then name, version and
/// schema URL, which win over attributes of the same name. Empty values make no label.
fn scope_labels(sm: &ScopeMetrics, settings: &Settings) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(scope) = sm
        .scope
        .as_ref()
        .filter(|s| settings.promote_scope_metadata && !s.name.is_empty())
    else {
        return out;
    };
    for kv in &scope.attributes {
        if let Some(name) = label_name(&format!("otel_scope_{}", kv.key)) {
            out.insert(
                name,
                kv.value.as_ref().map(value_string).unwrap_or_default(),
            );
        }
    }
    out.insert("otel_scope_name".into(), scope.name.clone());
    out.insert("otel_scope_version".into(), scope.version.clone());
    out.insert("otel_scope_schema_url".into(), sm.schema_url.clone());
    out
}

/// The labels of one data point: its attributes, then promoted resource attributes it
/// lacks, then the scope's labels, then `job` and `instance`.
fn point_labels(
    attrs: &[KeyValue],
    res: &Resource,
    scope: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut l = attribute_labels(attrs, &[]);
    for (k, v) in &res.promoted {
        if l.get(k).is_none_or(String::is_empty) {
            l.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in scope {
        l.insert(k.clone(), v.clone());
    }
    if let Some(j) = &res.job {
        l.insert("job".into(), j.clone());
    }
    if let Some(i) = &res.instance {
        l.insert("instance".into(), i.clone());
    }
    l
}

fn series(
    name: &str,
    base: &BTreeMap<String, String>,
    extra: Option<(&str, String)>,
    t: i64,
    v: f64,
) -> TimeSeries {
    let mut labels: Vec<Label> = Vec::with_capacity(base.len() + 2);
    labels.push(Label {
        name: "__name__".into(),
        value: name.into(),
    });
    for (k, val) in base {
        if k == "__name__" || extra.as_ref().is_some_and(|(e, _)| e == k) || val.is_empty() {
            continue;
        }
        labels.push(Label {
            name: k.clone(),
            value: val.clone(),
        });
    }
    if let Some((k, val)) = extra {
        labels.push(Label {
            name: k.into(),
            value: val,
        });
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries {
        labels,
        samples: vec![Sample {
            value: v,
            timestamp: t,
        }],
        ..Default::default()
    }
}

fn ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

fn value_or_stale(flags: u32, v: f64) -> f64 {
    if flags & NO_RECORDED_VALUE != 0 {
        f64::from_bits(STALE_NAN)
    } else {
        v
    }
}

fn exemplars(exs: &[OtlpExemplar]) -> Vec<Exemplar> {
    exs.iter()
        .filter_map(|e| {
            let value = match e.value {
                Some(exemplar::Value::AsDouble(d)) => d,
                Some(exemplar::Value::AsInt(i)) => i as f64,
                None => return None,
            };
            let mut labels = Vec::new();
            if !e.trace_id.is_empty() {
                labels.push(Label {
                    name: "trace_id".into(),
                    value: hex(&e.trace_id),
                });
            }
            if !e.span_id.is_empty() {
                labels.push(Label {
                    name: "span_id".into(),
                    value: hex(&e.span_id),
                });
            }
            for kv in &e.filtered_attributes {
                labels.push(Label {
                    name: kv.key.clone(),
                    value: kv.value.as_ref().map(value_string).unwrap_or_default(),
                });
            }
            Some(Exemplar {
                labels,
                value,
                timestamp: ms(e.time_unix_nano),
            })
        })
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn number(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

/// Translate an export request.
pub fn translate(req: &ExportMetricsServiceRequest, settings: &Settings) -> Translated {
    let mut out = Translated::default();
    let mut metadata: BTreeMap<String, MetricMetadata> = BTreeMap::new();
    for rm in &req.resource_metrics {
        let rattrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
        let res = resource_context(rattrs, settings);
        let (mut earliest, mut latest) = (i64::MAX, i64::MIN);
        for sm in &rm.scope_metrics {
            let scope = scope_labels(sm, settings);
            for m in &sm.metrics {
                let Some(data) = &m.data else {
                    continue;
                };
                let (kind, temporality, points) = match data {
                    metric::Data::Gauge(g) => (Kind::Gauge, None, g.data_points.len()),
                    metric::Data::Sum(s) => (
                        if s.is_monotonic {
                            Kind::MonotonicCounter
                        } else {
                            Kind::NonMonotonicCounter
                        },
                        Some(s.aggregation_temporality),
                        s.data_points.len(),
                    ),
                    metric::Data::Histogram(h) => (
                        Kind::Histogram,
                        Some(h.aggregation_temporality),
                        h.data_points.len(),
                    ),
                    metric::Data::Summary(s) => (Kind::Summary, None, s.data_points.len()),
                    metric::Data::ExponentialHistogram(h) => (
                        Kind::Histogram,
                        Some(h.aggregation_temporality),
                        h.data_points.len(),
                    ),
                };
                if temporality.is_some_and(|t| t != AggregationTemporality::Cumulative as i32) {
                    out.reject(
                        points,
                        format!(
                            "invalid temporality and type combination for metric {:?}: only cumulative temporality is accepted",
                            m.name
                        ),
                    );
                    continue;
                }
                let name = metric_name(&m.name, &m.unit, kind);
                if name.is_empty() || name.chars().all(|c| c == '_') {
                    out.reject(
                        points,
                        format!(
                            "normalization for metric {:?} resulted in an invalid name {name:?}",
                            m.name
                        ),
                    );
                    continue;
                }
                let mtype = match kind {
                    Kind::Gauge | Kind::NonMonotonicCounter => MetricType::Gauge,
                    Kind::MonotonicCounter => MetricType::Counter,
                    Kind::Histogram => MetricType::Histogram,
                    Kind::Summary => MetricType::Summary,
                };
                metadata.insert(
                    name.clone(),
                    MetricMetadata {
                        r#type: mtype as i32,
                        metric_family_name: name.clone(),
                        help: m.description.clone(),
                        unit: unit_name(&m.unit),
                    },
                );
                let mut point_errors: Vec<String> = Vec::new();
                let ts = &mut out.request.timeseries;
                let mut seen = |t: i64| {
                    earliest = earliest.min(t);
                    latest = latest.max(t);
                };
                match data {
                    metric::Data::Gauge(Gauge { data_points })
                    | metric::Data::Sum(Sum { data_points, .. }) => {
                        for p in data_points {
                            let t = ms(p.time_unix_nano);
                            seen(t);
                            let base = point_labels(&p.attributes, &res, &scope);
                            let mut s =
                                series(&name, &base, None, t, value_or_stale(p.flags, number(p)));
                            s.exemplars = exemplars(&p.exemplars);
                            ts.push(s);
                        }
                    }
                    metric::Data::Histogram(h) => {
                        for p in &h.data_points {
                            let t = ms(p.time_unix_nano);
                            seen(t);
                            let base = point_labels(&p.attributes, &res, &scope);
                            let v = |x: f64| value_or_stale(p.flags, x);
                            if let Some(sum) = p.sum {
                                ts.push(series(&format!("{name}_sum"), &base, None, t, v(sum)));
                            }
                            ts.push(series(
                                &format!("{name}_count"),
                                &base,
                                None,
                                t,
                                v(p.count as f64),
                            ));
                            let exs = exemplars(&p.exemplars);
                            let mut cumulative = 0u64;
                            let bucket = format!("{name}_bucket");
                            for (i, bound) in p.explicit_bounds.iter().enumerate() {
                                let Some(c) = p.bucket_counts.get(i) else {
                                    break;
                                };
                                cumulative += c;
                                let mut s = series(
                                    &bucket,
                                    &base,
                                    Some(("le", format_float(*bound))),
                                    t,
                                    v(cumulative as f64),
                                );
                                // each exemplar on the first bucket that holds it
                                let lower = i.checked_sub(1).map(|j| p.explicit_bounds[j]);
                                s.exemplars = exs
                                    .iter()
                                    .filter(|e| {
                                        e.value <= *bound && lower.is_none_or(|l| e.value > l)
                                    })
                                    .cloned()
                                    .collect();
                                ts.push(s);
                            }
                            let mut s = series(
                                &bucket,
                                &base,
                                Some(("le", "+Inf".into())),
                                t,
                                v(p.count as f64),
                            );
                            let top = p.explicit_bounds.last().copied();
                            s.exemplars = exs
                                .iter()
                                .filter(|e| top.is_none_or(|b| e.value > b))
                                .cloned()
                                .collect();
                            ts.push(s);
                        }
                    }
                    metric::Data::Summary(sm) => {
                        for p in &sm.data_points {
                            let t = ms(p.time_unix_nano);
                            seen(t);
                            let base = point_labels(&p.attributes, &res, &scope);
                            let v = |x: f64| value_or_stale(p.flags, x);
                            ts.push(series(&format!("{name}_sum"), &base, None, t, v(p.sum)));
                            ts.push(series(
                                &format!("{name}_count"),
                                &base,
                                None,
                                t,
                                v(p.count as f64),
                            ));
                            for q in &p.quantile_values {
                                ts.push(series(
                                    &name,
                                    &base,
                                    Some(("quantile", format_float(q.quantile))),
                                    t,
                                    v(q.value),
                                ));
                            }
                        }
                    }
                    metric::Data::ExponentialHistogram(h) => {
                        for p in &h.data_points {
                            let t = ms(p.time_unix_nano);
                            let hist = match exponential_to_native(p, t) {
                                Ok(hist) => hist,
                                Err(why) => {
                                    point_errors.push(format!("metric {:?}: {why}", m.name));
                                    continue;
                                }
                            };
                            seen(t);
                            let base = point_labels(&p.attributes, &res, &scope);
                            let mut s = series(&name, &base, None, t, 0.0);
                            s.samples.clear();
                            s.histograms.push(hist);
                            s.exemplars = exemplars(&p.exemplars);
                            ts.push(s);
                        }
                    }
                }
                for why in point_errors {
                    out.reject(1, why);
                }
            }
        }
        if earliest <= latest {
            target_info(&mut out, rattrs, &res, settings, earliest, latest);
        }
    }
    out.request.metadata = metadata.into_values().collect();
    out
}

/// `target_info` for a resource with attributes besides the identifying ones: value 1
/// from the earliest to the latest timestamp of its points, every half lookback delta
/// and at the latest.
fn target_info(
    out: &mut Translated,
    attrs: &[KeyValue],
    res: &Resource,
    settings: &Settings,
    earliest: i64,
    latest: i64,
) {
    const IDENTIFYING: [&str; 3] = ["service.namespace", "service.name", "service.instance.id"];
    let non_identifying = attrs
        .iter()
        .filter(|kv| !IDENTIFYING.contains(&kv.key.as_str()))
        .count();
    if non_identifying == 0 {
        return;
    }
    let skip: &[&str] = if settings.keep_identifying_resource_attributes {
        &[]
    } else {
        &IDENTIFYING
    };
    let mut labels = attribute_labels(attrs, skip);
    if let Some(j) = &res.job {
        labels.insert("job".into(), j.clone());
    }
    if let Some(i) = &res.instance {
        labels.insert("instance".into(), i.clone());
    }
    if !labels.contains_key("job") && !labels.contains_key("instance") {
        return;
    }
    let mut s = series("target_info", &labels, None, latest, 1.0);
    s.samples.clear();
    let mut t = earliest;
    while t < latest {
        s.samples.push(Sample {
            value: 1.0,
            timestamp: t,
        });
        t += LOOKBACK_MS / 2;
    }
    s.samples.push(Sample {
        value: 1.0,
        timestamp: latest,
    });
    out.request.timeseries.push(s);
    out.request.metadata.push(MetricMetadata {
        r#type: MetricType::Gauge as i32,
        metric_family_name: "target_info".into(),
        help: "Target metadata".into(),
        unit: String::new(),
    });
}

/// An OTLP exponential histogram point as Prometheus's integer native histogram
/// (`exponentialToNativeHistogram`): scales above 8 are merged down to 8, scales below
/// -4 refused, bucket indexes moved by one (OTLP's bucket 0 is `(1, base]`, Prometheus's
/// `(base^-1, 1]`), the reset hint left unknown, no recorded value → a stale marker.
fn exponential_to_native(
    p: &ExponentialHistogramDataPoint,
    t: i64,
) -> Result<strata_proto::prometheus::Histogram, String> {
    use strata_proto::prometheus::histogram::{Count, ZeroCount};
    if p.scale < -4 {
        return Err(format!(
            "cannot convert exponential to native histogram. Scale must be >= -4, was {}",
            p.scale
        ));
    }
    let scale_down = (p.scale - 8).max(0);
    let layout = |b: &Option<exponential_histogram_data_point::Buckets>| match b {
        Some(b) => buckets_layout(&b.bucket_counts, b.offset, scale_down),
        None => (Vec::new(), Vec::new()),
    };
    let (positive_spans, positive_deltas) = layout(&p.positive);
    let (negative_spans, negative_deltas) = layout(&p.negative);
    let (sum, count) = if p.flags & NO_RECORDED_VALUE != 0 {
        (f64::from_bits(STALE_NAN), STALE_NAN)
    } else {
        (p.sum.unwrap_or(0.0), p.count)
    };
    Ok(strata_proto::prometheus::Histogram {
        count: Some(Count::CountInt(count)),
        sum,
        schema: p.scale.min(8),
        zero_threshold: DEFAULT_ZERO_THRESHOLD,
        zero_count: Some(ZeroCount::ZeroCountInt(p.zero_count)),
        negative_spans,
        negative_deltas,
        positive_spans,
        positive_deltas,
        timestamp: t,
        ..Default::default()
    })
}

/// Dense OTLP buckets (`offset`, counts) as sparse native-histogram spans and deltas,
/// `2^scale_down` buckets merged into one (Prometheus's `convertBucketsLayout`, from
/// client_golang's `makeBuckets`: gaps of up to two empty buckets are filled, longer
/// ones start a new span).
fn buckets_layout(
    counts: &[u64],
    offset: i32,
    scale_down: i32,
) -> (Vec<strata_proto::prometheus::BucketSpan>, Vec<i64>) {
    use strata_proto::prometheus::BucketSpan;
    if counts.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let mut spans = vec![BucketSpan {
        offset: (offset >> scale_down) + 1,
        length: 0,
    }];
    let mut deltas = Vec::new();
    let mut prev = 0i64;
    let mut push = |spans: &mut Vec<BucketSpan>, count: i64| {
        if let Some(last) = spans.last_mut() {
            last.length += 1;
        }
        deltas.push(count - prev);
        prev = count;
    };
    let mut idx = (offset >> scale_down) + 1;
    let mut count = 0i64;
    let fill_gap =
        |spans: &mut Vec<BucketSpan>, gap: i32, push: &mut dyn FnMut(&mut Vec<BucketSpan>, i64)| {
            if gap > 2 {
                spans.push(BucketSpan {
                    offset: gap,
                    length: 0,
                });
            } else {
                for _ in 0..gap {
                    push(spans, 0);
                }
            }
        };
    for (i, c) in counts.iter().enumerate() {
        let next = ((i as i32 + offset) >> scale_down) + 1;
        if next == idx {
            count += *c as i64;
            continue;
        }
        if count == 0 {
            count = *c as i64;
            continue;
        }
        fill_gap(&mut spans, next - idx - 1, &mut push);
        push(&mut spans, count);
        count = *c as i64;
        idx = next;
    }
    let gap = ((counts.len() as i32 + offset - 1) >> scale_down) + 1 - idx;
    fill_gap(&mut spans, gap, &mut push);
    push(&mut spans, count);
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus's `TestConvertBucketsLayout` cases, at scale-downs 0, 1 and 2.
    #[test]
    fn exponential_buckets_become_native_spans_as_prometheus_converts_them() {
        use strata_proto::prometheus::BucketSpan;
        let span = |offset, length| BucketSpan { offset, length };
        // (offset, counts, scale down, spans, deltas)
        type Case<'a> = (i32, &'a [u64], i32, Vec<BucketSpan>, &'a [i64]);
        let cases: &[Case] = &[
            (0, &[4, 3, 2, 1], 0, vec![span(1, 4)], &[4, -1, -1, -1]),
            (0, &[4, 3, 2, 1], 1, vec![span(1, 2)], &[7, -4]),
            (0, &[4, 3, 2, 1], 2, vec![span(1, 1)], &[10]),
            (1, &[4, 3, 2, 1], 0, vec![span(2, 4)], &[4, -1, -1, -1]),
            (1, &[4, 3, 2, 1], 1, vec![span(1, 3)], &[4, 1, -4]),
            (1, &[4, 3, 2, 1], 2, vec![span(1, 2)], &[9, -8]),
            (
                4,
                &[4, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                0,
                vec![span(5, 4), span(12, 1)],
                &[4, -2, -2, 2, -1],
            ),
            (
                4,
                &[4, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                1,
                vec![span(3, 2), span(6, 1)],
                &[6, -4, -1],
            ),
            (
                4,
                &[4, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                2,
                vec![span(2, 1), span(3, 1)],
                &[8, -7],
            ),
        ];
        for (offset, counts, down, spans, deltas) in cases {
            let (s, d) = buckets_layout(counts, *offset, *down);
            assert_eq!(
                (&s, d.as_slice()),
                (spans, *deltas),
                "offset {offset}, scale down {down}"
            );
        }
        assert_eq!(buckets_layout(&[], 3, 0), (Vec::new(), Vec::new()));
    }

    #[test]
    fn exponential_points_above_scale_8_merge_down_and_below_minus_4_are_refused() {
        let p = ExponentialHistogramDataPoint {
            scale: 10,
            count: 10,
            sum: Some(5.0),
            zero_count: 1,
            positive: Some(exponential_histogram_data_point::Buckets {
                offset: 0,
                bucket_counts: vec![4, 3, 2, 0],
            }),
            ..Default::default()
        };
        let h = exponential_to_native(&p, 1000).unwrap();
        assert_eq!(h.schema, 8);
        assert_eq!(h.positive_deltas, vec![9]);
        assert_eq!(h.zero_threshold, 1e-128);
        let low = ExponentialHistogramDataPoint { scale: -5, ..p };
        let e = exponential_to_native(&low, 1000).unwrap_err();
        assert_eq!(
            e,
            "cannot convert exponential to native histogram. Scale must be >= -4, was -5"
        );
    }

    #[test]
    fn names_as_prometheus() {
        // cases from otlptranslator's metric_namer_test.go
        let c = Kind::MonotonicCounter;
        let g = Kind::Gauge;
        assert_eq!(metric_name("system.io", "By", c), "system_io_bytes_total");
        assert_eq!(
            metric_name("system.filesystem.usage", "By", g),
            "system_filesystem_usage_bytes"
        );
        assert_eq!(
            metric_name("system.network.dropped", "{packets}", c),
            "system_network_dropped_total"
        );
        assert_eq!(
            metric_name("system.network.io", "By", c),
            "system_network_io_bytes_total"
        );
        assert_eq!(metric_name("foo.bar", "1", g), "foo_bar_ratio");
        assert_eq!(metric_name("speed", "m/s", g), "speed_meters_per_second");
        assert_eq!(metric_name("requests.total", "1", c), "requests_total");
        assert_eq!(
            metric_name("http.server.duration", "ms", Kind::Histogram),
            "http_server_duration_milliseconds"
        );
        assert_eq!(metric_name("temperature", "Cel", g), "temperature_celsius");
        assert_eq!(metric_name("latency_seconds", "s", g), "latency_seconds");
        assert_eq!(metric_name("2xx", "", g), "_2xx");
        assert_eq!(
            metric_name("queue.size", "{items}", Kind::NonMonotonicCounter),
            "queue_size"
        );
        assert_eq!(metric_name("rate", "1/s", g), "rate_per_second");
        assert_eq!(unit_name("m/s"), "meters_per_second");
        assert_eq!(unit_name("{packets}"), "");
        assert_eq!(unit_name("ms"), "milliseconds");
    }

    #[test]
    fn labels_as_prometheus() {
        assert_eq!(label_name("http.method").as_deref(), Some("http_method"));
        assert_eq!(label_name("0abc").as_deref(), Some("key_0abc"));
        assert_eq!(label_name("_private").as_deref(), Some("key_private"));
        assert_eq!(label_name("__reserved__").as_deref(), Some("__reserved__"));
        assert_eq!(label_name("a..b").as_deref(), Some("a__b"));
        assert_eq!(label_name("..."), None);
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }
}
