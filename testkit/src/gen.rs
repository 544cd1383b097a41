//! Deterministic, seeded synthetic data in the OpenMetrics text format: counters (with
//! resets), gauges (with NaN and huge values), and classic histograms, jittered
//! timestamps. The same seed gives the same file.

use std::fmt::Write;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone)]
pub struct GenSpec {
    pub seed: u64,
    /// At least this many series are produced.
    pub min_series: usize,
    pub start_ms: i64,
    pub duration_ms: i64,
    pub interval_ms: i64,
    /// ± jitter in ms applied to every timestamp (must stay below interval/2).
    pub jitter_ms: i64,
    /// Gauges now and then take values near ±1e300 and ±1e-12. Off for comparisons with
    /// Prometheus 2.42, whose Kahan sums overflow to NaN where 3.x gives ±Inf.
    pub extremes: bool,
}

impl Default for GenSpec {
    fn default() -> Self {
        GenSpec {
            seed: 42,
            min_series: 1000,
            // a fixed, 2h-aligned start keeps block layouts stable across runs
            start_ms: 1_700_000_000_000 - 1_700_000_000_000 % 7_200_000,
            duration_ms: 3 * 3600 * 1000,
            interval_ms: 60_000,
            jitter_ms: 500,
            extremes: true,
        }
    }
}

/// Timestamps of one series: a regular grid with jitter, strictly increasing. Every
/// timestamp is even (with an even `start_ms` and `interval_ms`), so queries evaluated at
/// odd milliseconds never have a sample on a window edge, where Prometheus 2.42 (closed
/// windows) and 3.x (left-open windows) differ.
fn timestamps(spec: &GenSpec, rng: &mut SmallRng) -> Vec<i64> {
    let offset = rng.random_range(0..spec.interval_ms / 2) * 2;
    let mut out = Vec::new();
    let mut t = spec.start_ms + offset;
    while t < spec.start_ms + spec.duration_ms {
        let half = spec.jitter_ms / 2;
        let j = if half > 0 {
            rng.random_range(-half..=half) * 2
        } else {
            0
        };
        out.push(t + j);
        t += spec.interval_ms;
    }
    out
}

fn ts_str(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn labels_str(pairs: &[(&str, String)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write!(
            s,
            "{k}=\"{}\"",
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        )
        .unwrap();
    }
    s.push('}');
    s
}

/// Generate an OpenMetrics document. Returns the text and the number of series.
pub fn openmetrics(spec: &GenSpec) -> (String, usize) {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let mut out = String::new();
    let mut series = 0usize;
    // 8 counters + 2 gauges + 2 × 8 histogram series per instance
    let instances = spec.min_series.div_ceil(26).max(1);

    // Counters: 4 methods × 2 codes per instance, with an occasional reset.
    out.push_str("# HELP http_requests Requests served.\n# TYPE http_requests counter\n");
    for inst in 0..instances {
        for method in ["GET", "POST", "PUT", "DELETE"] {
            for code in ["200", "500"] {
                let lbls = labels_str(&[
                    ("instance", format!("host-{inst}:9100")),
                    ("job", "api".into()),
                    ("method", method.into()),
                    ("code", code.into()),
                ]);
                let mut v = rng.random_range(0.0..1e6f64).floor();
                for t in timestamps(spec, &mut rng) {
                    if rng.random_ratio(1, 200) {
                        v = 0.0;
                    }
                    v += rng.random_range(0..100) as f64;
                    writeln!(out, "http_requests_total{lbls} {v} {}", ts_str(t)).unwrap();
                }
                series += 1;
            }
        }
    }

    // Gauges: 2 per instance; floats of every magnitude, with NaN now and then.
    out.push_str("# HELP temperature_celsius A gauge.\n# TYPE temperature_celsius gauge\n");
    for inst in 0..instances {
        for zone in ["cpu", "disk \"sda\""] {
            let lbls = labels_str(&[
                ("instance", format!("host-{inst}:9100")),
                ("zone", zone.into()),
            ]);
            for t in timestamps(spec, &mut rng) {
                let v: f64 = match rng.random_range(0..50) {
                    0 => f64::NAN,
                    1 if spec.extremes => rng.random_range(-1e300..1e300),
                    2 if spec.extremes => rng.random_range(-1e-12..1e-12),
                    _ => rng.random_range(-40.0..120.0),
                };
                let vs = if v.is_nan() {
                    "NaN".to_string()
                } else {
                    format!("{v:e}")
                };
                writeln!(out, "temperature_celsius{lbls} {vs} {}", ts_str(t)).unwrap();
            }
            series += 1;
        }
    }

    // Classic histograms: 6 buckets + sum + count per instance and handler.
    let les = ["0.005", "0.05", "0.5", "1", "5", "+Inf"];
    out.push_str(
        "# HELP request_duration_seconds Latency.\n# TYPE request_duration_seconds histogram\n",
    );
    for inst in 0..instances {
        for handler in ["/", "/api"] {
            let base = vec![
                ("instance", format!("host-{inst}:9100")),
                ("handler", handler.to_string()),
            ];
            let ts = timestamps(spec, &mut rng);
            let mut counts = vec![0u64; les.len()];
            let mut sum = 0.0f64;
            let mut rows: Vec<(i64, Vec<u64>, f64)> = Vec::new();
            for &t in &ts {
                let n = rng.random_range(0..20);
                for _ in 0..n {
                    let obs: f64 = rng.random_range(0.0..6.0f64).powi(3) / 40.0;
                    sum += obs;
                    for (i, le) in les.iter().enumerate() {
                        let bound: f64 = if *le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap()
                        };
                        if obs <= bound {
                            counts[i] += 1;
                        }
                    }
                }
                rows.push((t, counts.clone(), sum));
            }
            for (i, le) in les.iter().enumerate() {
                let mut l = base.clone();
                l.push(("le", le.to_string()));
                let lbls = labels_str(&l);
                for (t, c, _) in &rows {
                    writeln!(
                        out,
                        "request_duration_seconds_bucket{lbls} {} {}",
                        c[i],
                        ts_str(*t)
                    )
                    .unwrap();
                }
                series += 1;
            }
            let lbls = labels_str(&base);
            for (t, _, s) in &rows {
                writeln!(out, "request_duration_seconds_sum{lbls} {s} {}", ts_str(*t)).unwrap();
            }
            for (t, c, _) in &rows {
                writeln!(
                    out,
                    "request_duration_seconds_count{lbls} {} {}",
                    c[les.len() - 1],
                    ts_str(*t)
                )
                .unwrap();
            }
            series += 2;
        }
    }
    out.push_str("# EOF\n");
    (out, series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_big_enough() {
        let spec = GenSpec {
            duration_ms: 600_000,
            ..GenSpec::default()
        };
        let (a, n) = openmetrics(&spec);
        let (b, _) = openmetrics(&spec);
        assert_eq!(a, b);
        assert!(n >= 1000, "{n}");
        assert!(a.ends_with("# EOF\n"));
    }
}
