//! Postings list set operations, in input elements per second (the sum of the input
//! lists' lengths; some also on `u32` lists, as the head holds them); and
//! `postings_for_matchers` over a block index of 100k series (loadgen's layout: 100
//! metric names) for the regex matchers of issue 12's bench.
//!
//! `cargo bench -p strata-tsdb --bench postings -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_tsdb::index::{ChunkMeta, IndexReader, IndexWriter};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::{MatchOp, Matcher};
use strata_tsdb::postings::{intersect, intersect_many, merge, postings_for_matchers, without};

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

    // The head's lists hold u32 refs while every ref fits: the same shapes in u32.
    let narrow = |l: &Vec<u64>| l.iter().map(|&r| r as u32).collect::<Vec<u32>>();
    let (big32, big2_32, mid32, small32) =
        (narrow(&big), narrow(&big2), narrow(&mid), narrow(&small));
    for (name, a, b) in [
        ("intersect/1M x 1M u32", &big32, &big2_32),
        ("intersect/1M x 10k u32", &big32, &small32),
    ] {
        g.throughput(Throughput::Elements((a.len() + b.len()) as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |bch| {
            bch.iter(|| black_box(intersect(black_box(a), black_box(b))))
        });
    }
    let several = [&big32, &big2_32, &mid32];
    let total: usize = several.iter().map(|l| l.len()).sum();
    g.throughput(Throughput::Elements(total as u64));
    g.bench_function(BenchmarkId::from_parameter("merge/1M,1M,100k u32"), |bch| {
        bch.iter(|| black_box(merge(black_box(&several))))
    });
    g.finish();
}

/// A block index of `n` series: 100 metric names, 10 namespaces, one pod each.
fn index(n: usize) -> IndexReader {
    let mut series: Vec<Labels> = (0..n)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", format!("metric_{}_bucket", i % 100).as_str()),
                ("job", "loadgen"),
                ("namespace", format!("ns-{}", i % 10).as_str()),
                ("pod", format!("pod-{i}").as_str()),
            ])
        })
        .collect();
    series.sort();
    let mut syms = std::collections::BTreeSet::new();
    for s in &series {
        for l in s {
            syms.insert(l.name.to_string());
            syms.insert(l.value.to_string());
        }
    }
    let mut w = IndexWriter::new(Vec::new(), "index", &syms).unwrap();
    for (i, s) in series.iter().enumerate() {
        w.add_series(s, &[ChunkMeta::new(0, 1, 8 + i as u64 * 16)])
            .unwrap();
    }
    IndexReader::new(bytes::Bytes::from(w.finish().unwrap()), "index").unwrap()
}

fn matchers(c: &mut Criterion) {
    let ir = index(100_000);
    let mut g = c.benchmark_group("postings_for_matchers");
    g.throughput(Throughput::Elements(100_000));
    for (name, pattern) in [
        ("__name__=~\".+\" (100k series)", ".+"),
        (
            "__name__=~\"metric_.*_bucket\" (100k series)",
            "metric_.*_bucket",
        ),
        ("__name__=~\"metric_1.*\" (11k series)", "metric_1.*"),
    ] {
        let ms = [Matcher::new(MatchOp::RegexMatch, "__name__", pattern).unwrap()];
        g.bench_function(BenchmarkId::from_parameter(name), |bch| {
            bch.iter(|| black_box(postings_for_matchers(black_box(&ir), &ms).unwrap()))
        });
        // before: every matching value's list read and merged
        g.bench_function(
            BenchmarkId::from_parameter(format!("{name}, merged per value")),
            |bch| {
                bch.iter(|| {
                    let lists: Vec<Vec<u64>> = ir
                        .label_values("__name__")
                        .unwrap()
                        .into_iter()
                        .filter(|v| ms[0].matches(v))
                        .map(|v| ir.postings("__name__", v).unwrap())
                        .collect();
                    black_box(merge(&lists))
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench, matchers);
criterion_main!(benches);
