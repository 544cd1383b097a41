//! Native histogram chunks: bytes per sample and codec throughput.
//!
//! * `size` (printed before the timed benches): 1,000 series of a request-latency
//!   histogram (schema 3, a log-normal spread of 40–60 observations per 15 s scrape, ~25
//!   populated buckets, 1 in 50 series resets once) appended to a head for 2 h (480
//!   samples each); prints the encoded bytes per sample for the integer and the float
//!   histogram encodings, and for comparison the same data as a classic histogram (12
//!   `le` buckets + `_sum` + `_count` XOR series) in bytes per scrape.
//! * `histogram/append`: integer histogram samples per second into a head.
//! * `histogram/decode`: samples per second decoded to `FloatHistogram`s.
//!
//! `cargo bench -p strata-tsdb --bench histogram -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_tsdb::chunkenc::{Encoding, XorChunk};
use strata_tsdb::head::{Head, HeadOptions, HeadSeriesRef};
use strata_tsdb::histogram::{decode_chunk_float, FloatHistogram, Histogram, Span};
use strata_tsdb::labels::Labels;

const INTERVAL: i64 = 15_000;
const SERIES: usize = 1_000;
const SAMPLES: i64 = 480;
const SCHEMA: i32 = 3;
/// Classic buckets (seconds) of the comparison.
const LE: [f64; 12] = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];

/// One series' cumulative state: absolute counts per native bucket index, plus the
/// classic view of the same observations.
struct Gen {
    buckets: std::collections::BTreeMap<i32, u64>,
    zero: u64,
    count: u64,
    sum: f64,
    classic: [u64; 12],
    reset_at: Option<i64>,
}

impl Gen {
    fn new(rng: &mut SmallRng) -> Gen {
        Gen {
            buckets: Default::default(),
            zero: 0,
            count: 0,
            sum: 0.0,
            classic: [0; 12],
            reset_at: (rng.random_range(0..50) == 0).then(|| rng.random_range(1..SAMPLES)),
        }
    }

    /// Observe one scrape interval's requests; returns the sample as of now.
    fn step(&mut self, rng: &mut SmallRng, i: i64) -> Histogram {
        if self.reset_at == Some(i) {
            *self = Gen {
                reset_at: None,
                ..Gen::new(rng)
            };
        }
        let n = rng.random_range(40..60);
        for _ in 0..n {
            // log-normal around 50 ms
            let z: f64 = (0..6).map(|_| rng.random::<f64>()).sum::<f64>() - 3.0;
            let v = 0.05 * (z * 1.2).exp();
            self.count += 1;
            self.sum += v;
            if v <= 1e-9 {
                self.zero += 1;
            } else {
                // bucket index: upper bound base^idx with base = 2^(2^-schema)
                let idx = (v.log2() * f64::from(1 << SCHEMA)).ceil() as i32;
                *self.buckets.entry(idx).or_default() += 1;
            }
            for (k, le) in LE.iter().enumerate() {
                if v <= *le {
                    self.classic[k] += 1;
                }
            }
        }
        self.sample()
    }

    fn sample(&self) -> Histogram {
        let mut spans: Vec<Span> = Vec::new();
        let mut deltas = Vec::new();
        let (mut last_idx, mut prev) = (None::<i32>, 0i64);
        for (&idx, &c) in &self.buckets {
            match last_idx {
                Some(l) if idx == l + 1 => spans.last_mut().unwrap().length += 1,
                Some(l) => spans.push(Span {
                    offset: idx - l - 1,
                    length: 1,
                }),
                None => spans.push(Span {
                    offset: idx,
                    length: 1,
                }),
            }
            last_idx = Some(idx);
            deltas.push(c as i64 - prev);
            prev = c as i64;
        }
        Histogram {
            schema: SCHEMA,
            zero_threshold: 2f64.powi(-128),
            zero_count: self.zero,
            count: self.count,
            sum: self.sum,
            positive_spans: spans,
            positive_buckets: deltas,
            ..Default::default()
        }
    }
}

struct Data {
    ints: Vec<Vec<Histogram>>,
    classic: Vec<Vec<[f64; 14]>>,
}

fn generate() -> Data {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut ints = Vec::with_capacity(SERIES);
    let mut classic = Vec::with_capacity(SERIES);
    for _ in 0..SERIES {
        let mut g = Gen::new(&mut rng);
        let mut hs = Vec::with_capacity(SAMPLES as usize);
        let mut cs = Vec::with_capacity(SAMPLES as usize);
        for i in 0..SAMPLES {
            hs.push(g.step(&mut rng, i));
            let mut row = [0f64; 14];
            for (k, c) in g.classic.iter().enumerate() {
                row[k] = *c as f64;
            }
            row[12] = g.sum;
            row[13] = g.count as f64;
            cs.push(row);
        }
        ints.push(hs);
        classic.push(cs);
    }
    Data { ints, classic }
}

fn head_with(data: &Data, float: bool) -> (Head, Vec<HeadSeriesRef>) {
    let head = Head::new(HeadOptions::default());
    let mut refs = Vec::new();
    for (i, hs) in data.ints.iter().enumerate() {
        let (r, _) = head.get_or_create(&Labels::from_pairs([
            ("__name__", "http_request_duration_seconds".to_string()),
            ("instance", format!("host-{i}")),
        ]));
        for (k, h) in hs.iter().enumerate() {
            let t = k as i64 * INTERVAL;
            if float {
                head.append_float_histogram_validated(r, t, &h.to_float())
                    .unwrap();
            } else {
                head.append_histogram_validated(r, t, h).unwrap();
            }
        }
        refs.push(r);
    }
    (head, refs)
}

fn size_report(data: &Data) {
    let total = (SERIES as i64 * SAMPLES) as f64;
    for (name, float) in [("histogram", false), ("float histogram", true)] {
        let (head, _) = head_with(data, float);
        let got = head.select(&[], i64::MIN, i64::MAX).unwrap();
        let bytes: usize = got
            .iter()
            .flat_map(|s| &s.chunks)
            .map(|c| c.data.len())
            .sum();
        let chunks: usize = got.iter().map(|s| s.chunks.len()).sum();
        eprintln!(
            "{name} chunks: {:.2} B/sample ({} chunks, {:.0} samples/chunk)",
            bytes as f64 / total,
            chunks,
            total / chunks as f64
        );
    }
    let buckets: usize = data
        .ints
        .iter()
        .map(|hs| hs.last().unwrap().positive_buckets.len())
        .sum();
    eprintln!(
        "populated native buckets per series at the end: {:.1}",
        buckets as f64 / SERIES as f64
    );
    // classic: 14 XOR series per histogram, 120 samples per chunk
    let mut bytes = 0usize;
    for cs in &data.classic {
        for k in 0..14 {
            for part in cs.chunks(120) {
                let mut c = XorChunk::new();
                for (i, row) in part.iter().enumerate() {
                    c.append(i as i64 * INTERVAL, row[k]);
                }
                bytes += c.bytes().len();
            }
        }
    }
    eprintln!(
        "classic histogram (12 le buckets + sum + count as XOR series): {:.2} B/scrape",
        bytes as f64 / total
    );
}

fn benches(c: &mut Criterion, data: &Data) {
    let mut g = c.benchmark_group("histogram");
    g.sample_size(10);
    g.throughput(Throughput::Elements((SERIES as i64 * SAMPLES) as u64));
    g.bench_function("append/1k series x 480 int histograms", |b| {
        b.iter(|| black_box(head_with(data, false)))
    });
    let (head, _) = head_with(data, false);
    let chunks: Vec<_> = head
        .select(&[], i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .flat_map(|s| s.chunks)
        .collect();
    g.bench_function("decode/int chunks to FloatHistogram", |b| {
        let mut out: Vec<(i64, FloatHistogram)> = Vec::new();
        b.iter(|| {
            for c in &chunks {
                out.clear();
                decode_chunk_float(Encoding::Histogram, &c.data, &mut out).unwrap();
                black_box(&out);
            }
        })
    });
    g.finish();
}

fn main() {
    let data = generate();
    size_report(&data);
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &data);
    c.final_summary();
}
