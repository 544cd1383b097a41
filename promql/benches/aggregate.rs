//! Aggregations that need every series at a step (`topk`, `bottomk`), and a streamed one
//! (`sum by`) for scale: 1,000 gauges × 480 samples (2 h at 15 s), a 2 h range query at a
//! 30 s step over `MemStorage`, so the engine's work is what is measured.
//!
//! `cargo bench -p strata-promql --bench aggregate -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata_promql::testing::MemStorage;
use strata_promql::{Engine, EngineOptions};
use strata_tsdb::labels::Labels;

const SERIES: usize = 1_000;
const SAMPLES: i64 = 480;
const STEP: i64 = 15_000;

fn storage() -> MemStorage {
    let st = MemStorage::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..SERIES {
        let pod = format!("pod-{i}");
        let ns = format!("ns-{}", i % 10);
        let labels = Labels::from_pairs([("__name__", "gauge"), ("namespace", &ns), ("pod", &pod)]);
        let samples: Vec<(i64, f64)> = (0..SAMPLES)
            .map(|k| {
                // xorshift: values in 0..100, like loadgen's gauges
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (k * STEP, (x % 10_000) as f64 / 100.0)
            })
            .collect();
        st.add(labels, samples);
    }
    st
}

fn bench(c: &mut Criterion) {
    let st = storage();
    let e = Engine::new(EngineOptions::default());
    let (start, end, step) = (300_000, (SAMPLES - 1) * STEP, 30_000);
    let steps = ((end - start) / step + 1) as u64;
    let mut g = c.benchmark_group("aggregate");
    // points looked at: every series at every step
    g.throughput(Throughput::Elements(SERIES as u64 * steps));
    for q in [
        "topk(5, gauge)",
        "bottomk(5, gauge)",
        "topk by (namespace) (3, gauge)",
        "sum by (namespace) (gauge)",
    ] {
        g.bench_function(BenchmarkId::from_parameter(q), |b| {
            b.iter(|| black_box(e.range(&st, q, start, end, step).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
