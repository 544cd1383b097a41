//! The Prometheus API's JSON, byte for byte as Prometheus writes it, into one `String`
//! (no intermediate values): envelopes, Go's float and string formatting, labels,
//! vectors, matrices.

use super::*;
use strata_promql::FloatHistogram;

/// `{"status":"error","errorType":…,"error":…}`.
pub fn error_body(error_type: &str, message: &str) -> String {
    let mut out = String::from(r#"{"status":"error","errorType":"#);
    write_str(&mut out, error_type);
    out.push_str(r#","error":"#);
    write_str(&mut out, message);
    out.push('}');
    out
}

/// `{"status":"success","data":<data>}` plus `"warnings"` when there are any.
pub fn success_body(data: &str, warnings: &[String]) -> String {
    success_body_annotated(data, warnings, &[])
}

/// [`success_body`] with PromQL's info annotations as Prometheus 3 answers them
/// (`"infos"` after `"warnings"`, each left out when empty).
pub fn success_body_annotated(data: &str, warnings: &[String], infos: &[String]) -> String {
    let mut out = String::with_capacity(data.len() + 40);
    success_start(&mut out);
    out.push_str(data);
    success_end(&mut out, warnings, infos);
    out
}

/// `{"status":"success","data":` — the caller writes `data`, then [`success_end`].
pub fn success_start(out: &mut String) {
    out.push_str(r#"{"status":"success","data":"#);
}

/// Closes a [`success_start`] envelope: `"warnings"` and `"infos"` when there are any.
pub fn success_end(out: &mut String, warnings: &[String], infos: &[String]) {
    for (name, list) in [("warnings", warnings), ("infos", infos)] {
        if list.is_empty() {
            continue;
        }
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":[");
        for (i, w) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(out, w);
        }
        out.push(']');
    }
    out.push('}');
}

/// A JSON string as Prometheus's encoder (jsoniter, standard-library compatible) writes
/// it: `<`, `>`, `&`, U+2028 and U+2029 escaped, control characters as `\u00XX` except
/// `\n`, `\r`, `\t`.
pub fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs of bytes needing no escape are copied whole: label names and values rarely
    // hold any, and pushing char by char was most of a small answer's encoding.
    let b = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let esc: Option<&str> = match c {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            b'<' | b'>' | b'&' | 0..=0x1f => None,
            // U+2028 and U+2029 (E2 80 A8/A9), escaped as Go's encoder does
            0xe2 if b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xa8 | 0xa9)) => {
                out.push_str(&s[start..i]);
                out.push_str(if b[i + 2] == 0xa8 {
                    "\\u2028"
                } else {
                    "\\u2029"
                });
                i += 3;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                out.push_str("\\u00");
                out.push(HEX[(c >> 4) as usize] as char);
                out.push(HEX[(c & 0xf) as usize] as char);
            }
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A sample value as Prometheus prints it (`jsonutil.MarshalValue`): Go's
/// `strconv.FormatFloat(v, 'f', -1, 64)`, switching to `'e'` below 1e-6 and from 1e21
/// in magnitude; `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    let mut s = String::with_capacity(24);
    write_value(&mut s, v);
    s
}

/// [`format_value`] appended to `out`. Every point of every answer goes through here:
/// the shortest digits come from `ryu` (no allocation), then are laid out as Go does.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        return out.push_str("NaN");
    }
    if v.is_infinite() {
        return out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    }
    if v.is_sign_negative() {
        out.push('-');
    }
    if v == 0.0 {
        return out.push('0');
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(v.abs());
    // ryu prints `d.ddd`, `0.000ddd` or `d.ddde±x`: collect the significant digits and
    // the decimal exponent `k` with value = 0.digits × 10^k.
    let (mant, exp) = match s.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let mut digits = [0u8; 24];
    let mut n = 0;
    let mut k = exp;
    let mut seen_point = false;
    let mut leading = true;
    for &b in mant.as_bytes() {
        if b == b'.' {
            seen_point = true;
            continue;
        }
        if leading && b == b'0' {
            // Leading zeros after the point shift the exponent.
            if seen_point {
                k -= 1;
            }
            continue;
        }
        leading = false;
        digits[n] = b;
        n += 1;
        if !seen_point {
            k += 1;
        }
    }
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    let digits = std::str::from_utf8(&digits[..n]).unwrap_or("0");
    let abs = v.abs();
    if !(1e-6..1e21).contains(&abs) {
        // Go's 'e': d[.ddd]e±XX, at least two exponent digits.
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = k - 1;
        out.push_str(if e < 0 { "e-" } else { "e+" });
        let e = e.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        push_u64(out, e as u64);
        return;
    }
    if k <= 0 {
        out.push_str("0.");
        for _ in 0..-k {
            out.push('0');
        }
        out.push_str(digits);
    } else if k as usize >= n {
        out.push_str(digits);
        for _ in 0..k as usize - n {
            out.push('0');
        }
    } else {
        out.push_str(&digits[..k as usize]);
        out.push('.');
        out.push_str(&digits[k as usize..]);
    }
}

/// A timestamp (ms) as Prometheus prints it: seconds with the milliseconds as three
/// decimals, none when whole (`jsonutil.MarshalTimestamp`).
pub fn write_ts(out: &mut String, t: i64) {
    let neg = t < 0;
    let t = t.unsigned_abs();
    if neg {
        out.push('-');
    }
    push_u64(out, t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let digit = |d: u64| b'0' + (d % 10) as u8;
        let digits = [b'.', digit(frac / 100), digit(frac / 10), digit(frac)];
        out.push_str(std::str::from_utf8(&digits).unwrap_or(""));
    }
}

/// Decimal digits of `x` without `fmt` (timestamps of every point go through here).
pub(super) fn push_u64(out: &mut String, mut x: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&b[i..]).unwrap_or(""));
}

pub(super) fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_ts(out, t);
    out.push_str(",\"");
    write_value(out, v);
    out.push_str("\"]");
}

/// A native histogram as Prometheus's `jsonutil.MarshalHistogram` writes it:
/// `{"count":"…","sum":"…","buckets":[[boundary_rule,"lower","upper","count"],…]}`,
/// populated buckets only, `buckets` left out when none; the boundary rule is 0 (upper
/// inclusive), 1 (lower inclusive), 2 (neither) or 3 (both).
pub fn write_histogram(out: &mut String, h: &FloatHistogram) {
    out.push_str(r#"{"count":""#);
    write_value(out, h.count);
    out.push_str(r#"","sum":""#);
    write_value(out, h.sum);
    out.push('"');
    let mut found = false;
    for b in strata_promql::histogram::all_buckets(h) {
        if b.count == 0.0 {
            continue;
        }
        out.push_str(if found { "," } else { r#","buckets":["# });
        found = true;
        let rule = match (b.lower_inclusive, b.upper_inclusive) {
            (true, true) => '3',
            (true, false) => '1',
            (false, true) => '0',
            (false, false) => '2',
        };
        out.push('[');
        out.push(rule);
        for v in [b.lower, b.upper, b.count] {
            out.push_str(",\"");
            write_value(out, v);
            out.push('"');
        }
        out.push(']');
    }
    if found {
        out.push(']');
    }
    out.push('}');
}

/// `[t,{histogram}]`.
fn write_hpoint(out: &mut String, t: i64, h: &FloatHistogram) {
    out.push('[');
    write_ts(out, t);
    out.push(',');
    write_histogram(out, h);
    out.push(']');
}

/// `{"name":"value",…}` in label order.
pub fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, l) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &l.name);
        out.push(':');
        write_str(out, &l.value);
    }
    out.push('}');
}

/// `{"resultType":…,"result":…}` for a query result.
pub fn value_json(v: &Value) -> String {
    let mut out = String::new();
    write_value_json(&mut out, v);
    out
}

/// Bytes [`write_value_json`] is likely to write: about 32 a point, so a large answer
/// grows its buffer once, not by doubling.
pub fn value_json_capacity(v: &Value) -> usize {
    let points: usize = match v {
        Value::Matrix(series) => series.iter().map(|s| s.samples.len() + 4).sum(),
        Value::Vector(samples) => samples.len() * 4,
        _ => 1,
    };
    256 + points * 32
}

/// [`value_json`] appended to `buf` (after an envelope's start: the answer is written
/// once, never copied into its envelope).
pub fn write_value_json(buf: &mut String, v: &Value) {
    let mut out = std::mem::take(buf); // moved, not copied, and put back below
    out.reserve(value_json_capacity(v));
    out.push_str(r#"{"resultType":""#);
    out.push_str(v.result_type());
    out.push_str(r#"","result":"#);
    match v {
        Value::Scalar { t, v } => write_point(&mut out, *t, *v),
        Value::String { t, s } => {
            out.push('[');
            write_ts(&mut out, *t);
            out.push(',');
            write_str(&mut out, s);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                match &s.h {
                    None => {
                        out.push_str(r#","value":"#);
                        write_point(&mut out, s.t, s.v);
                    }
                    Some(h) => {
                        out.push_str(r#","histogram":"#);
                        write_hpoint(&mut out, s.t, h);
                    }
                }
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                // Prometheus leaves out `values` of a histogram-only series and
                // `histograms` of a float-only one.
                if !s.samples.is_empty() || s.histograms.is_empty() {
                    out.push_str(r#","values":["#);
                    for (j, &(t, v)) in s.samples.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        write_point(&mut out, t, v);
                    }
                    out.push(']');
                }
                if !s.histograms.is_empty() {
                    out.push_str(r#","histograms":["#);
                    for (j, (t, h)) in s.histograms.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        write_hpoint(&mut out, *t, h);
                    }
                    out.push(']');
                }
                out.push('}');
            }
            out.push(']');
        }
    }
    out.push('}');
    *buf = out;
}

pub(super) fn string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(&mut out, s);
    }
    out.push(']');
    out
}

/// Go's `strconv.Quote` for the ASCII parameter names used here.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::new();
    let _ = strata_tsdb::labels::go_quote(&mut out, s);
    out
}

#[cfg(test)]
mod histogram_tests {
    use super::*;
    use strata_promql::{RangeSeries, VectorSample};
    use strata_tsdb::histogram::Span;

    /// `{{schema:0 count:9 sum:-2.5 z_bucket:1 z_bucket_w:0.001 buckets:[2 3] n_buckets:[3]}}`
    fn sample() -> FloatHistogram {
        FloatHistogram {
            schema: 0,
            count: 9.0,
            sum: -2.5,
            zero_count: 1.0,
            zero_threshold: 0.001,
            positive_spans: vec![Span {
                offset: 0,
                length: 3,
            }],
            // An empty bucket is left out of the JSON.
            positive_buckets: vec![2.0, 0.0, 3.0],
            negative_spans: vec![Span {
                offset: 1,
                length: 1,
            }],
            negative_buckets: vec![3.0],
            ..Default::default()
        }
    }

    /// The bytes Prometheus's `jsonutil.MarshalHistogram` writes: buckets from the
    /// lowest value up, negative ones lower-inclusive (1), the zero bucket closed (3),
    /// positive ones upper-inclusive (0).
    #[test]
    fn vector_histogram_sample_is_prometheus_json() {
        let v = Value::Vector(vec![VectorSample {
            labels: Labels::from_pairs([("__name__", "h")]),
            t: 1_700_000_000_500,
            v: 0.0,
            h: Some(Box::new(sample())),
        }]);
        assert_eq!(
            value_json(&v),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"h"},"histogram":[1700000000.500,{"count":"9","sum":"-2.5","buckets":[[1,"-2","-1","3"],[3,"-0.001","0.001","1"],[0,"0.5","1","2"],[0,"2","4","3"]]}]}]}"#
        );
    }

    #[test]
    fn matrix_histograms_beside_values() {
        let only_h = FloatHistogram {
            count: 0.0,
            sum: 0.0,
            ..Default::default()
        };
        let m = Value::Matrix(vec![
            RangeSeries {
                labels: Labels::from_pairs([("a", "1")]),
                samples: vec![(1000, 1.0)],
                histograms: vec![(2000, only_h.clone())],
            },
            RangeSeries {
                labels: Labels::from_pairs([("a", "2")]),
                samples: vec![],
                histograms: vec![(3000, only_h)],
            },
        ]);
        assert_eq!(
            value_json(&m),
            r#"{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[1,"1"]],"histograms":[[2,{"count":"0","sum":"0"}]]},{"metric":{"a":"2"},"histograms":[[3,{"count":"0","sum":"0"}]]}]}"#
        );
    }

    #[test]
    fn infos_follow_warnings() {
        assert_eq!(
            success_body_annotated("[]", &["w".into()], &["i".into()]),
            r#"{"status":"success","data":[],"warnings":["w"],"infos":["i"]}"#
        );
        assert_eq!(
            success_body_annotated("[]", &[], &["i".into()]),
            r#"{"status":"success","data":[],"infos":["i"]}"#
        );
    }
}

#[cfg(test)]
mod tests {
    use super::write_str;

    #[test]
    fn strings_are_escaped_as_go_encodes_them() {
        let cases = [
            ("", r#""""#),
            ("plain value-1.2_x", r#""plain value-1.2_x""#),
            ("a<b>&\"c\"\n", r#""a\u003cb\u003e\u0026\"c\"\n""#),
            ("\\\r\t\u{0}\u{1f}", r#""\\\r\t\u0000\u001f""#),
            ("x\u{2028}y\u{2029}", r#""x\u2028y\u2029""#),
            // other characters starting with E2 80 pass through unescaped
            ("\u{2026}\u{2030}é日本", "\"\u{2026}\u{2030}é日本\""),
            ("<", r#""\u003c""#),
        ];
        for (input, want) in cases {
            let mut out = String::from("prefix:");
            write_str(&mut out, input);
            assert_eq!(out, format!("prefix:{want}"), "{input:?}");
        }
    }
}
