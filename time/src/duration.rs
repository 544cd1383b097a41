//! Prometheus's duration syntax (`model.ParseDuration`): `[0-9]+` and a unit, repeated,
//! units `y w d h m s ms` from largest to smallest, each at most once; `0` alone is
//! allowed. A year is 365 days. The value must fit Go's `time.Duration` (2^63-1 ns,
//! about 292 years) as in Prometheus and Thanos, so every caller can turn it into
//! nanoseconds. [`parse_ms`] is the core; the other parsers are the forms each caller
//! accepts on top of it.

/// Why a duration was refused. Texts follow Prometheus's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration string")]
    Empty,
    #[error("not a valid duration string: {0:?}")]
    Invalid(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("duration out of range: {0:?}")]
    OutOfRange(String),
}

const MS_PER_DAY: u64 = 86_400_000;
/// Units by position: a later unit must be smaller than every earlier one.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * MS_PER_DAY),
    ("w", 7 * MS_PER_DAY),
    ("d", MS_PER_DAY),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// Largest duration in milliseconds: Go's `time.Duration` is an i64 of nanoseconds.
pub const MAX_MS: i64 = i64::MAX / 1_000_000;

/// Prometheus's `model.ParseDuration`, in milliseconds (never negative, at most
/// [`MAX_MS`]).
pub fn parse_ms(s: &str) -> Result<i64, DurationError> {
    match s {
        "0" => return Ok(0),
        "" => return Err(DurationError::Empty),
        _ => {}
    }
    let invalid = || DurationError::Invalid(s.to_string());
    let mut rest = s;
    let mut total: u64 = 0;
    // Index into UNITS after the last unit seen: enforces order and no repeats.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        // Too many digits for u64 is out of range too, but Go reports it as invalid.
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let ulen = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        if ulen == 0 {
            return Err(invalid());
        }
        let unit = &rest[..ulen];
        rest = &rest[ulen..];
        let pos = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(|| {
            DurationError::UnknownUnit {
                unit: unit.to_string(),
                input: s.to_string(),
            }
        })?;
        if pos < next_unit {
            return Err(invalid());
        }
        next_unit = pos + 1;
        total = n
            .checked_mul(UNITS[pos].1)
            .and_then(|v| v.checked_add(total))
            .filter(|&v| v <= MAX_MS as u64)
            .ok_or_else(|| DurationError::OutOfRange(s.to_string()))?;
    }
    Ok(total as i64)
}

/// Flags (`--tsdb.block-duration=2h`): a Prometheus duration, or a plain non-negative
/// number of seconds (`30`, `1.5`) as the flags have always accepted.
pub fn parse_flag_ms(s: &str) -> Result<i64, DurationError> {
    // Only strings that start like a number take the seconds path, so "inf"/"nan"
    // are refused as durations rather than read as floats.
    if s.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        if let Ok(secs) = s.parse::<f64>() {
            let ms = (secs * 1000.0).round();
            if !(0.0..=MAX_MS as f64).contains(&ms) {
                return Err(DurationError::OutOfRange(s.to_string()));
            }
            return Ok(ms as i64);
        }
    }
    parse_ms(s)
}

/// The PromQL test runner's times and durations (`eval instant at -1m`): the flag form
/// with an optional leading `-`.
pub fn parse_signed_ms(s: &str) -> Result<i64, DurationError> {
    match s.strip_prefix('-') {
        Some(body) => parse_flag_ms(body).map(|v| -v),
        None => parse_flag_ms(s),
    }
}

/// Why [`parse_api_ns`] refused a value; the query API words the two cases differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiDurationError {
    /// A float number of seconds that does not fit i64 nanoseconds.
    #[error("duration overflows int64")]
    Overflow,
    #[error(transparent)]
    Invalid(#[from] DurationError),
}

/// The HTTP API's `step`/`timeout` (Prometheus's `parseDuration` in `web/api/v1`):
/// float seconds (any sign) or a Prometheus duration; in nanoseconds.
pub fn parse_api_ns(s: &str) -> Result<i64, ApiDurationError> {
    if let Ok(f) = s.parse::<f64>() {
        let ns = f * 1e9;
        // Go's bounds, as floats: 2^63 itself does not fit.
        if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&ns) {
            return Err(ApiDurationError::Overflow);
        }
        return Ok(ns as i64);
    }
    // parse_ms keeps within MAX_MS, so this cannot overflow.
    Ok(parse_ms(s)? * 1_000_000)
}

/// Milliseconds as Prometheus prints a duration (`model.Duration.String()`: `10m`,
/// `1h30m`, `2h`, `1w`, `1m30s`, `500ms`, `0s`), as Prometheus and Mimir show durations
/// in configuration, errors and `promtool test rules`. Years and weeks only when they
/// divide the rest exactly (`90d`, not `12w6d`). A negative duration gets a `-` (Go
/// prints nothing for one).
pub fn format_ms(ms: i64) -> String {
    use std::fmt::Write;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
    }
    let mut ms = ms.unsigned_abs();
    const D: u64 = 86_400_000;
    for (unit, mult, exact) in [
        ("y", 365 * D, true),
        ("w", 7 * D, true),
        ("d", D, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1000, false),
        ("ms", 1, false),
    ] {
        if exact && !ms.is_multiple_of(mult) {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            write!(out, "{v}{unit}").expect("writing to a String");
            ms -= v * mult;
        }
    }
    out
}

/// Milliseconds as Go's `time.Duration` prints them (`2h0m0s`, `30.002s`, `1ms`), as
/// promtool's and Thanos's block tables show block durations.
pub fn format_go_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    if ms < 1000 {
        return format!("{sign}{ms}ms");
    }
    let h = ms / 3_600_000;
    let m = (ms / 60_000) % 60;
    let s = (ms / 1000) % 60;
    let frac = ms % 1000;
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{sign}{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{sign}{m}m{secs}")
    } else {
        format!("{sign}{secs}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_syntax() {
        assert_eq!(parse_ms("0"), Ok(0));
        assert_eq!(parse_ms("0s"), Ok(0));
        assert_eq!(parse_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_ms("1d12h"), Ok(129_600_000));
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("1m30s"), Ok(90_000));
        assert_eq!(
            parse_ms("1y2w3d4h5m6s7ms"),
            Ok(365 * 86_400_000 + 2 * 604_800_000 + 3 * 86_400_000 + 14_706_007)
        );
        assert_eq!(parse_ms(""), Err(DurationError::Empty));
        for bad in [
            "h", "2", "1.5h", "5m30", "-1m", " 1m", "1m1h", "1s1s", "1ms1s",
        ] {
            assert!(parse_ms(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_ms("1h1h").unwrap_err().to_string(),
            "not a valid duration string: \"1h1h\""
        );
        assert_eq!(
            parse_ms("2x").unwrap_err().to_string(),
            "unknown unit \"x\" in duration \"2x\""
        );
    }

    #[test]
    fn overflow_is_an_error() {
        // 2^63-1 ns is 106751d23h47m16s854ms; one more millisecond is out of range.
        assert_eq!(parse_ms("106751d23h47m16s854ms"), Ok(MAX_MS));
        assert_eq!(
            parse_ms("106751d23h47m16s855ms"),
            Err(DurationError::OutOfRange("106751d23h47m16s855ms".into()))
        );
        assert!(matches!(
            parse_ms("293y"),
            Err(DurationError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_ms("5000000000y"),
            Err(DurationError::OutOfRange(_))
        ));
        assert!(parse_ms("99999999999999999999s").is_err());
        assert!(matches!(
            parse_flag_ms("1e300"),
            Err(DurationError::OutOfRange(_))
        ));
        assert_eq!(parse_api_ns("1e10"), Err(ApiDurationError::Overflow));
        assert_eq!(parse_api_ns("292y"), Ok(292 * 365 * 86_400_000 * 1_000_000));
    }

    #[test]
    fn flag_form() {
        assert_eq!(parse_flag_ms("30"), Ok(30_000));
        assert_eq!(parse_flag_ms("1.5"), Ok(1500));
        assert_eq!(parse_flag_ms("0d"), Ok(0));
        assert_eq!(parse_flag_ms("0ms"), Ok(0));
        assert_eq!(parse_flag_ms("2h"), Ok(7_200_000));
        for bad in ["", "-1", "inf", "nan", "2x"] {
            assert!(parse_flag_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_form() {
        assert_eq!(parse_signed_ms("-1m"), Ok(-60_000));
        assert_eq!(parse_signed_ms("10s"), Ok(10_000));
        assert_eq!(parse_signed_ms("0"), Ok(0));
        assert_eq!(parse_signed_ms("-0"), Ok(0));
        assert_eq!(parse_signed_ms("50"), Ok(50_000));
        assert!(parse_signed_ms("--1m").is_err());
    }

    #[test]
    fn api_form() {
        assert_eq!(parse_api_ns("15"), Ok(15_000_000_000));
        assert_eq!(parse_api_ns("0.5"), Ok(500_000_000));
        assert_eq!(parse_api_ns("-1"), Ok(-1_000_000_000));
        assert_eq!(parse_api_ns("100ms"), Ok(100_000_000));
        assert_eq!(parse_api_ns("1m30s"), Ok(90_000_000_000));
        assert!(matches!(
            parse_api_ns("x"),
            Err(ApiDurationError::Invalid(_))
        ));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_ms(0), "0s");
        assert_eq!(format_go_ms(1), "1ms");
        assert_eq!(format_go_ms(7_200_000), "2h0m0s");
        assert_eq!(format_go_ms(30_002), "30.002s");
        assert_eq!(format_go_ms(90_500), "1m30.5s");
        assert_eq!(format_go_ms(-1500), "-1.5s");
    }

    #[test]
    fn formats_like_prometheus() {
        for (ms, want) in [
            (0, "0s"),
            (500, "500ms"),
            (1, "1ms"),
            (90_000, "1m30s"),
            (600_000, "10m"),
            (5_400_000, "1h30m"),
            (7_200_000, "2h"),
            (30_002, "30s2ms"),
            (86_400_000, "1d"),
            (604_800_000, "1w"),
            (90 * 86_400_000, "90d"),
            (365 * 86_400_000, "1y"),
            (366 * 86_400_000, "366d"),
            (14 * 86_400_000 + 3_600_000, "14d1h"),
            (-90_000, "-1m30s"),
        ] {
            assert_eq!(format_ms(ms), want, "{ms}");
            // what it prints parses back (the negative aside: flags take none)
            if ms > 0 {
                assert_eq!(parse_ms(want), Ok(ms), "{want}");
            }
        }
    }
}
