//! Range-query answers as the frontend holds them: read from a querier's JSON without a
//! value per point (timestamps as integers, every value's text in one buffer per
//! series), cut to a time range, merged across parts, and written back in Prometheus's
//! JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::split::write_seconds;

/// One series' points of one kind: times in ms and each value's JSON text, back to back
/// in `text` (`ends[i]` is where value `i` ends). Float values are kept without their
/// quotes, histograms as their JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Points {
    pub ts: Vec<i64>,
    ends: Vec<u32>,
    text: String,
}

impl Points {
    fn push(&mut self, t: i64, v: &str) {
        self.ts.push(t);
        self.text.push_str(v);
        self.ends.push(self.text.len() as u32);
    }

    fn value(&self, i: usize) -> &str {
        let from = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[from..self.ends[i] as usize]
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Append a float value, written as Prometheus writes one (Go's shortest `'f'`
    /// form, `NaN`, `+Inf`, `-Inf`).
    pub fn push_float(&mut self, t: i64, v: f64) {
        use std::fmt::Write;
        self.ts.push(t);
        if v.is_nan() {
            self.text.push_str("NaN");
        } else if v.is_infinite() {
            self.text.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            // Rust's shortest round-trip digits, never an exponent: Go's 'f', -1.
            let _ = write!(self.text, "{v}");
        }
        self.ends.push(self.text.len() as u32);
    }

    /// Value `i` read as a float (NaN if it is not one: a histogram's points).
    pub fn float(&self, i: usize) -> f64 {
        match self.value(i) {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Append the points of `o` within `[start, end]`.
    fn extend_range(&mut self, o: &Points, start: i64, end: i64) {
        let a = o.ts.partition_point(|&t| t < start);
        let b = o.ts.partition_point(|&t| t <= end);
        for i in a..b {
            self.push(o.ts[i], o.value(i));
        }
    }

    fn bytes(&self) -> usize {
        self.ts.len() * 12 + self.text.len()
    }
}

/// One series: its labels (sorted, as Prometheus writes them) and its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub metric: Arc<BTreeMap<String, String>>,
    pub floats: Points,
    pub histograms: Points,
}

/// The matrix of one answered range, with what the querier said beside it.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    pub series: Vec<Series>,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    /// `data.stats` of the answer, when the querier gave one.
    pub stats: Option<Value>,
}

/// Why a part's answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot decode a querier's answer: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a querier answered a range query with result type {0:?}")]
    ResultType(String),
    #[error("a querier answered with status {0:?}")]
    Status(String),
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    infos: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Vec<SeriesIn>,
    #[serde(default)]
    stats: Option<Value>,
}

#[derive(Deserialize)]
struct SeriesIn {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Points,
    #[serde(default)]
    histograms: Points,
}

impl<'de> Deserialize<'de> for Points {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Points;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of [time, value] pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Points, A::Error> {
                let mut p = Points::default();
                while seq.next_element_seed(PointSeed(&mut p))?.is_some() {}
                Ok(p)
            }
        }
        d.deserialize_seq(V)
    }
}

/// Reads one `[t, value]` pair straight into a [`Points`].
struct PointSeed<'a>(&'a mut Points);

impl<'de> DeserializeSeed<'de> for PointSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PointSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a [time, value] pair")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let t: f64 = seq
            .next_element()?
            .ok_or_else(|| A::Error::custom("a point without a time"))?;
        let ms = (t * 1000.0).round() as i64;
        seq.next_element_seed(ValueSeed(self.0, ms))?
            .ok_or_else(|| A::Error::custom("a point without a value"))
    }
}

/// Reads a point's value into a [`Points`]: a float's string as it is, a histogram
/// object as its JSON.
struct ValueSeed<'a>(&'a mut Points, i64);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value string or a histogram")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push(self.1, v);
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.0.push(self.1, &v.to_string());
        Ok(())
    }
}

/// Read a querier's `query_range` answer.
pub fn decode(body: &[u8]) -> Result<Matrix, DecodeError> {
    let env: Envelope = serde_json::from_slice(body)?;
    if env.status != "success" {
        return Err(DecodeError::Status(env.status));
    }
    let data = env
        .data
        .ok_or_else(|| DecodeError::Status("success without data".into()))?;
    if data.result_type != "matrix" {
        return Err(DecodeError::ResultType(data.result_type));
    }
    Ok(Matrix {
        series: data
            .result
            .into_iter()
            .map(|s| Series {
                metric: Arc::new(s.metric),
                floats: s.values,
                histograms: s.histograms,
            })
            .collect(),
        warnings: env.warnings,
        infos: env.infos,
        stats: data.stats,
    })
}

impl Matrix {
    /// The points within `[start, end]`; series left without points are dropped.
    pub fn cut(&self, start: i64, end: i64) -> Vec<Series> {
        self.series
            .iter()
            .filter_map(|s| {
                let mut o = Series {
                    metric: s.metric.clone(),
                    floats: Points::default(),
                    histograms: Points::default(),
                };
                o.floats.extend_range(&s.floats, start, end);
                o.histograms.extend_range(&s.histograms, start, end);
                (!o.floats.is_empty() || !o.histograms.is_empty()).then_some(o)
            })
            .collect()
    }

    /// Approximate bytes held, for the cache's size bound.
    pub fn bytes(&self) -> usize {
        self.series
            .iter()
            .map(|s| {
                96 + s.floats.bytes()
                    + s.histograms.bytes()
                    + s.metric
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 48)
                        .sum::<usize>()
            })
            .sum()
    }
}

/// Concatenates series of consecutive, non-overlapping time ranges, given in time
/// order; the result is sorted by labels as Prometheus sorts a matrix.
#[derive(Debug, Default)]
pub struct Merger {
    index: HashMap<Arc<BTreeMap<String, String>>, usize>,
    series: Vec<Series>,
}

impl Merger {
    pub fn add(&mut self, part: Vec<Series>) {
        for s in part {
            match self.index.get(&s.metric) {
                Some(&i) => {
                    let into = &mut self.series[i];
                    append(&mut into.floats, &s.floats);
                    append(&mut into.histograms, &s.histograms);
                }
                None => {
                    self.index.insert(s.metric.clone(), self.series.len());
                    self.series.push(s);
                }
            }
        }
    }

    pub fn finish(mut self) -> Vec<Series> {
        self.series.sort_by(|a, b| a.metric.cmp(&b.metric));
        self.series
    }
}

fn append(into: &mut Points, from: &Points) {
    into.extend_range(from, i64::MIN, i64::MAX);
}

/// Sum the statistics of parts: numbers add up (`peakSamples` takes the largest),
/// objects merge key by key, and per-source lists (`sources`) merge by source name.
pub fn merge_stats(into: &mut Value, part: &Value) {
    match (into, part) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) if k == "peakSamples" => {
                        if v.as_f64() > slot.as_f64() {
                            *slot = v.clone();
                        }
                    }
                    Some(slot) => merge_stats(slot, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a @ Value::Number(_), Value::Number(b)) => {
            let n = match (a.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) => Value::from(x + y),
                _ => serde_json::Number::from_f64(
                    a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0),
                )
                .map_or(Value::Null, Value::Number),
            };
            *a = n;
        }
        (Value::Array(a), Value::Array(b)) => {
            for item in b {
                let name = item.get("source");
                match a
                    .iter_mut()
                    .find(|x| name.is_some() && x.get("source") == name)
                {
                    Some(slot) => merge_stats(slot, item),
                    None => a.push(item.clone()),
                }
            }
        }
        _ => {}
    }
}

/// Write `{"status":"success","data":{"resultType":"matrix","result":[…]…}…}`, with
/// `stats` inside `data` when given, then warnings and infos when there are any.
pub fn encode(
    series: &[Series],
    stats: Option<&Value>,
    warnings: &[String],
    infos: &[String],
) -> String {
    let points: usize = series
        .iter()
        .map(|s| s.floats.len() + s.histograms.len())
        .sum();
    let mut out = String::with_capacity(64 + series.len() * 128 + points * 24);
    out.push_str(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        out.push_str(&serde_json::to_string(&*s.metric).unwrap_or_else(|_| "{}".into()));
        if !s.floats.is_empty() {
            out.push_str(r#","values":["#);
            write_points(&mut out, &s.floats, true);
            out.push(']');
        }
        if !s.histograms.is_empty() {
            out.push_str(r#","histograms":["#);
            write_points(&mut out, &s.histograms, false);
            out.push(']');
        }
        out.push('}');
    }
    out.push(']');
    if let Some(st) = stats {
        out.push_str(r#","stats":"#);
        out.push_str(&st.to_string());
    }
    out.push('}');
    for (name, list) in [("warnings", warnings), ("infos", infos)] {
        if !list.is_empty() {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            out.push_str(&serde_json::to_string(list).unwrap_or_else(|_| "[]".into()));
        }
    }
    out.push('}');
    out
}

fn write_points(out: &mut String, p: &Points, quoted: bool) {
    for i in 0..p.len() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        write_seconds(out, p.ts[i]);
        out.push(',');
        if quoted {
            out.push('"');
        }
        out.push_str(p.value(i));
        if quoted {
            out.push('"');
        }
        out.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{"__name__":"up","job":"a"},"values":[[1.5,"1"],[3,"NaN"]]},
        {"metric":{"job":"b"},"values":[[1.5,"2"]]}],
        "stats":{"timings":{"evalTotalTime":0.5},"samples":{"totalQueryableSamples":3,"peakSamples":4},
        "strata":{"seriesFetched":2,"sources":[{"source":"bucket","seriesFetched":2}]}}},
        "warnings":["w1"]}"#;
    const B: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{"job":"b"},"values":[[4.5,"+Inf"]]},
        {"metric":{"job":"c"},"values":[[5,"7"]]}],
        "stats":{"timings":{"evalTotalTime":0.25},"samples":{"totalQueryableSamples":2,"peakSamples":9},
        "strata":{"seriesFetched":2,"sources":[{"source":"bucket","seriesFetched":1},{"source":"head","seriesFetched":1}]}}}}"#;

    #[test]
    fn parts_merge_into_one_sorted_matrix_with_summed_stats() {
        let (a, b) = (decode(A.as_bytes()).unwrap(), decode(B.as_bytes()).unwrap());
        let mut m = Merger::default();
        m.add(a.cut(0, 4000));
        m.add(b.cut(4000, 9000));
        let series = m.finish();
        let mut stats = a.stats.clone().unwrap();
        merge_stats(&mut stats, b.stats.as_ref().unwrap());
        let out = encode(&series, Some(&stats), &a.warnings, &[]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let r = &v["data"]["result"];
        assert_eq!(
            r[0]["metric"],
            serde_json::json!({"__name__":"up","job":"a"})
        );
        assert_eq!(r[0]["values"], serde_json::json!([[1.5, "1"], [3, "NaN"]]));
        assert_eq!(
            r[1]["values"],
            serde_json::json!([[1.5, "2"], [4.5, "+Inf"]])
        );
        assert_eq!(r[2]["metric"]["job"], "c");
        let st = &v["data"]["stats"];
        assert_eq!(st["samples"]["totalQueryableSamples"], 5);
        assert_eq!(st["samples"]["peakSamples"], 9);
        assert_eq!(st["timings"]["evalTotalTime"], 0.75);
        assert_eq!(st["strata"]["sources"][0]["seriesFetched"], 3);
        assert_eq!(st["strata"]["sources"][1]["source"], "head");
        assert_eq!(v["warnings"], serde_json::json!(["w1"]));
        assert!(out.contains(r#"[1.500,"1"],[3,"NaN"]"#), "{out}");
    }

    #[test]
    fn cut_keeps_only_the_range() {
        let a = decode(A.as_bytes()).unwrap();
        let c = a.cut(2000, 3000);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].floats.ts, vec![3000]);
        assert!(matches!(
            decode(br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#),
            Err(DecodeError::ResultType(_))
        ));
    }
}
