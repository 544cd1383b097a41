//! WAL write path: Samples record encoding, framed writes with `FsyncPolicy::Never`
//! (samples per second), and the cost of one fsync'd record (`FsyncPolicy::Always`).
//!
//! `cargo bench -p strata-tsdb --bench wal -- --warm-up-time 1 --measurement-time 3`
//!
//! Files go under Cargo's target tmp dir (a real disk; fsync on tmpfs costs nothing).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_tsdb::wal::{FsyncPolicy, Record, Wal, WalOptions, DEFAULT_SEGMENT_SIZE};

/// Samples per record: a remote-write request of a typical size.
const SAMPLES: usize = 2000;

/// One scrape of `SAMPLES` series with sequential refs and jittered timestamps.
fn request(rng: &mut SmallRng) -> Vec<(u64, i64, f64)> {
    let t0 = 1_700_000_000_000i64;
    (0..SAMPLES)
        .map(|i| {
            (
                10_000 + i as u64,
                t0 + rng.random_range(0..50),
                rng.random_range(0..1_000_000) as f64,
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(7);
    let entries = request(&mut rng);
    let rec = Record::Samples { entries: &entries };
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();

    let mut g = c.benchmark_group("wal");
    g.throughput(Throughput::Elements(SAMPLES as u64));
    let mut buf = Vec::with_capacity(64 << 10);
    g.bench_function("encode_samples", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&rec).encode(&mut buf);
            black_box(buf.len())
        })
    });

    let mut wal = Wal::open(
        tmp.path().join("never"),
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::Never,
        },
    )
    .unwrap();
    g.bench_function("log_samples_fsync_never", |b| {
        b.iter(|| {
            wal.log(black_box(&rec)).unwrap();
            if wal.size() > 1 << 30 {
                // keep the disk bounded: an empty checkpoint drops every segment
                wal.checkpoint(std::iter::empty()).unwrap();
            }
        })
    });
    drop(wal);

    let small: Vec<(u64, i64, f64)> = entries[..10].to_vec();
    let small = Record::Samples { entries: &small };
    let mut wal = Wal::open(
        tmp.path().join("always"),
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::Always,
        },
    )
    .unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("log_10_samples_fsync_always", |b| {
        b.iter(|| wal.log(black_box(&small)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
