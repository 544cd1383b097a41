//! XOR chunk encode/decode throughput on realistic series, in samples per second.
//!
//! `cargo bench -p strata-tsdb --bench xor -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_tsdb::chunkenc::{XorChunk, XorIter, SAMPLES_PER_CHUNK};

/// Chunks per benchmark iteration.
const CHUNKS: usize = 100;

type Series = Vec<Vec<(i64, f64)>>;

/// A counter scraped every 15s with a few ms of jitter, increasing by small integers.
fn counter(rng: &mut SmallRng) -> Series {
    let mut t = 1_700_000_000_000i64;
    let mut v = 1_000.0;
    (0..CHUNKS)
        .map(|_| {
            (0..SAMPLES_PER_CHUNK)
                .map(|_| {
                    t += 15_000 + rng.random_range(-20..=20);
                    v += rng.random_range(0..50) as f64;
                    (t, v)
                })
                .collect()
        })
        .collect()
}

/// A gauge with arbitrary float values (worst case for the value encoding).
fn gauge(rng: &mut SmallRng) -> Series {
    let mut t = 1_700_000_000_000i64;
    (0..CHUNKS)
        .map(|_| {
            (0..SAMPLES_PER_CHUNK)
                .map(|_| {
                    t += 15_000 + rng.random_range(-20..=20);
                    (t, rng.random::<f64>() * 100.0)
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(42);
    let cases = [("counter", counter(&mut rng)), ("gauge", gauge(&mut rng))];
    let samples = (CHUNKS * SAMPLES_PER_CHUNK) as u64;

    let mut g = c.benchmark_group("xor_encode");
    g.throughput(Throughput::Elements(samples));
    for (name, series) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut bytes = 0;
                for chunk in series {
                    let mut c = XorChunk::new();
                    for &(t, v) in chunk {
                        c.append(t, v);
                    }
                    bytes += black_box(c.bytes()).len();
                }
                bytes
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("xor_decode");
    g.throughput(Throughput::Elements(samples));
    for (name, series) in &cases {
        let encoded: Vec<Vec<u8>> = series
            .iter()
            .map(|chunk| {
                let mut c = XorChunk::new();
                for &(t, v) in chunk {
                    c.append(t, v);
                }
                c.into_bytes()
            })
            .collect();
        let bytes: usize = encoded.iter().map(Vec::len).sum();
        eprintln!("{name}: {:.2} bytes/sample", bytes as f64 / samples as f64);
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut acc_t = 0i64;
                let mut acc_v = 0u64;
                for data in &encoded {
                    for (t, v) in XorIter::new(black_box(data)) {
                        acc_t = acc_t.wrapping_add(t);
                        acc_v ^= v.to_bits();
                    }
                }
                (acc_t, acc_v)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
