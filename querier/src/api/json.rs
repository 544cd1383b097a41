//! The Prometheus API's JSON, byte for byte as Prometheus writes it, into one `String`
//! (no intermediate values): envelopes, Go's float and string formatting, labels,
//! vectors, matrices.

use super::*;

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
    let mut out = String::with_capacity(data.len() + 40);
    out.push_str(r#"{"status":"success","data":"#);
    out.push_str(data);
    if !warnings.is_empty() {
        out.push_str(r#","warnings":["#);
        for (i, w) in warnings.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(&mut out, w);
        }
        out.push(']');
    }
    out.push('}');
    out
}

/// A JSON string as Prometheus's encoder (jsoniter, standard-library compatible) writes
/// it: `<`, `>`, `&`, U+2028 and U+2029 escaped, control characters as `\u00XX` except
/// `\n`, `\r`, `\t`.
pub fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
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
    // About 32 bytes a point: grow once, not by doubling through a large answer.
    let points = match v {
        Value::Matrix(series) => series.iter().map(|s| s.samples.len() + 4).sum(),
        Value::Vector(samples) => samples.len() * 4,
        _ => 1,
    };
    let mut out = String::with_capacity(256 + points * 32);
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
                out.push_str(r#","value":"#);
                write_point(&mut out, s.t, s.v);
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
                out.push_str(r#","values":["#);
                for (j, &(t, v)) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(&mut out, t, v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    out
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
