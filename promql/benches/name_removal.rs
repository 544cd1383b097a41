//! The cost of dropping `__name__` where a function or operator drops it (Prometheus 3's
//! default) against delaying it to the query's end
//! (`--enable-feature=promql-delayed-name-removal`): 1,000 gauges × 480 samples (2 h at
//! 15 s), a 2 h range query at a 30 s step over `MemStorage`.
//!
//! `cargo bench -p strata-promql --bench name_removal -- --warm-up-time 1 --measurement-time 3`

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
    for i in 0..SERIES {
        let pod = format!("pod-{i}");
        let ns = format!("ns-{}", i % 10);
        let labels = Labels::from_pairs([
            ("__name__", "requests_total"),
            ("namespace", &ns),
            ("pod", &pod),
        ]);
        let samples: Vec<(i64, f64)> = (0..SAMPLES)
            .map(|k| (k * STEP, (k * (i as i64 % 7 + 1)) as f64))
            .collect();
        st.add(labels, samples);
    }
    st
}

fn bench(c: &mut Criterion) {
    let st = storage();
    let (start, end, step) = (300_000, (SAMPLES - 1) * STEP, 30_000);
    let steps = ((end - start) / step + 1) as u64;
    let mut g = c.benchmark_group("name_removal");
    g.throughput(Throughput::Elements(SERIES as u64 * steps));
    for delayed in [false, true] {
        let e = Engine::new(EngineOptions {
            delayed_name_removal: delayed,
            ..EngineOptions::default()
        });
        let mode = if delayed { "delayed" } else { "immediate" };
        for q in [
            "rate(requests_total[5m])",
            "sum by (namespace) (rate(requests_total[5m]))",
            "abs(abs(requests_total * 2))",
        ] {
            g.bench_function(BenchmarkId::new(mode, q), |b| {
                b.iter(|| black_box(e.range(&st, q, start, end, step).unwrap()))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
