//! Postings list set operations, in input elements per second (the sum of the input
//! lists' lengths).
//!
//! `cargo bench -p strata-tsdb --bench postings -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_tsdb::postings::{intersect, intersect_many, merge, without};

/// `n` sorted distinct refs spread over `[0, universe)`.
fn list(rng: &mut SmallRng, n: usize, universe: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n * 11 / 10)
        .map(|_| rng.random_range(0..universe))
        .collect();
    v.sort_unstable();
    v.dedup();
    v.truncate(n);
    v
}

fn bench(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(7);
    const U: u64 = 4_000_000;
    let big = list(&mut rng, 1_000_000, U);
    let big2 = list(&mut rng, 1_000_000, U);
    let mid = list(&mut rng, 100_000, U);
    let small = list(&mut rng, 10_000, U);

    let mut g = c.benchmark_group("postings");
    for (name, a, b) in [
        ("intersect/1M x 1M", &big, &big2),
        ("intersect/1M x 10k", &big, &small),
        ("intersect/1M x 100k", &big, &mid),
    ] {
        g.throughput(Throughput::Elements((a.len() + b.len()) as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |bch| {
            bch.iter(|| black_box(intersect(black_box(a), black_box(b))))
        });
    }

    let several = [&big, &big2, &mid, &small];
    let total: usize = several.iter().map(|l| l.len()).sum();
    g.throughput(Throughput::Elements(total as u64));
    g.bench_function(
        BenchmarkId::from_parameter("intersect_many/1M,1M,100k,10k"),
        |bch| bch.iter(|| black_box(intersect_many(black_box(&several)))),
    );

    let several = [&big, &big2, &mid];
    let total: usize = several.iter().map(|l| l.len()).sum();
    g.throughput(Throughput::Elements(total as u64));
    g.bench_function(BenchmarkId::from_parameter("merge/1M,1M,100k"), |bch| {
        bch.iter(|| black_box(merge(black_box(&several))))
    });

    // A regex over many label values: 1000 lists of 1000.
    let many: Vec<Vec<u64>> = (0..1000).map(|_| list(&mut rng, 1000, U)).collect();
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function(BenchmarkId::from_parameter("merge/1000 x 1k"), |bch| {
        bch.iter(|| black_box(merge(black_box(&many))))
    });

    g.throughput(Throughput::Elements((big.len() + mid.len()) as u64));
    g.bench_function(BenchmarkId::from_parameter("without/1M - 100k"), |bch| {
        bch.iter(|| black_box(without(black_box(&big), black_box(&mid))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
