//! Block write throughput in samples per second: 10k series × 120 samples (one chunk
//! each), written as a complete block (chunks, index, tombstones, meta.json, fsyncs and
//! the final rename) into a temporary directory.
//!
//! * `pre-encoded`: chunks are XOR-encoded before the measurement; measures the
//!   `BlockWriter` alone.
//! * `with-encode`: includes cutting and XOR-encoding the samples with `ChunkCutter`.
//!
//! `cargo bench -p strata-tsdb --bench block_write -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_tsdb::block::BlockWriter;
use strata_tsdb::chunkenc::{ChunkCutter, EncodedChunk};
use strata_tsdb::labels::Labels;

const SERIES: usize = 10_000;
const SAMPLES: usize = 120;
const RANGE: i64 = 2 * 3600 * 1000;

fn labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", format!("metric_{}", i % 100)),
        ("instance", format!("host-{}:9100", i % 500)),
        ("job", ["node", "api", "db"][i % 3].to_string()),
        ("series_id", i.to_string()),
    ])
}

fn samples(rng: &mut SmallRng) -> Vec<(i64, f64)> {
    let mut t = 1_700_000_000_000i64;
    let mut v = 0.0;
    (0..SAMPLES)
        .map(|_| {
            t += 15_000 + rng.random_range(-20..=20);
            v += rng.random_range(0..50) as f64;
            (t, v)
        })
        .collect()
}

fn encode(s: &[(i64, f64)]) -> Vec<EncodedChunk> {
    let mut c = ChunkCutter::new(RANGE);
    for (t, v) in s {
        c.append(*t, *v);
    }
    c.finish()
}

fn bench(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(1);
    let input: Vec<(Labels, Vec<(i64, f64)>)> = (0..SERIES)
        .map(|i| (labels(i), samples(&mut rng)))
        .collect();
    let encoded: Vec<(Labels, Vec<EncodedChunk>)> =
        input.iter().map(|(l, s)| (l.clone(), encode(s))).collect();
    let dir = tempfile::tempdir().unwrap();

    let mut g = c.benchmark_group("block_write");
    g.sample_size(10);
    g.throughput(Throughput::Elements((SERIES * SAMPLES) as u64));
    g.bench_function("pre-encoded/10k series x 120 samples", |b| {
        b.iter_batched(
            || encoded.clone(),
            |encoded| {
                let mut w = BlockWriter::new(dir.path(), ulid::Ulid::new()).unwrap();
                for (l, chunks) in encoded {
                    w.add_series(l, chunks).unwrap();
                }
                let meta = w.finish(None).unwrap();
                std::fs::remove_dir_all(dir.path().join(meta.ulid.to_string())).unwrap();
                black_box(meta)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("with-encode/10k series x 120 samples", |b| {
        b.iter(|| {
            let mut w = BlockWriter::new(dir.path(), ulid::Ulid::new()).unwrap();
            for (l, s) in &input {
                w.add_series(l.clone(), encode(s)).unwrap();
            }
            let meta = w.finish(None).unwrap();
            std::fs::remove_dir_all(dir.path().join(meta.ulid.to_string())).unwrap();
            black_box(meta)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
