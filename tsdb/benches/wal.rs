//! WAL write path: Samples record encoding and decoding (replay's varint loop), framed writes with `FsyncPolicy::Never`
//! (samples per second) under each compression, and the cost of one fsync'd record
//! (`FsyncPolicy::Always`). Prints the WAL bytes per sample of each compression for a
//! scrape-like load (counters and gauges, one timestamp per scrape) before measuring.
//!
//! `cargo bench -p strata-tsdb --bench wal -- --warm-up-time 1 --measurement-time 3`
//!
//! Files go under Cargo's target tmp dir (a real disk; fsync on tmpfs costs nothing).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_tsdb::labels::Interner;
use strata_tsdb::wal::{
    FsyncPolicy, Record, RecordKind, RecordOwned, Wal, WalCompression, WalOptions,
    DEFAULT_SEGMENT_SIZE,
};

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

/// Scrape `k` of `SAMPLES` series as remote write sends it: one timestamp, counters that
/// grow by small integers, gauges with a few significant digits, some constant series.
fn scrape(rng: &mut SmallRng, k: i64, state: &mut [f64]) -> Vec<(u64, i64, f64)> {
    let t = 1_700_000_000_000i64 + k * 15_000 + rng.random_range(0..5);
    state
        .iter_mut()
        .enumerate()
        .map(|(i, v)| {
            match i % 4 {
                0 | 1 => *v += rng.random_range(0..100) as f64,
                2 => *v = (rng.random_range(0..10_000) as f64) / 100.0,
                _ => {}
            }
            (10_000 + i as u64, t, *v)
        })
        .collect()
}

const COMPRESSIONS: [(&str, WalCompression); 3] = [
    ("none", WalCompression::None),
    ("snappy", WalCompression::Snappy),
    ("zstd", WalCompression::Zstd),
];

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
    buf.clear();
    rec.encode(&mut buf);
    let payload = buf.clone();
    let mut interner = Interner::default();
    g.bench_function("decode_samples", |b| {
        b.iter(|| {
            RecordOwned::decode(RecordKind::Samples, black_box(&payload), &mut interner).unwrap()
        })
    });

    // 240 scrapes (1 h at 15 s) of the realistic load
    let mut state: Vec<f64> = (0..SAMPLES).map(|i| (i * 1000) as f64).collect();
    let scrapes: Vec<Vec<(u64, i64, f64)>> =
        (0..240).map(|k| scrape(&mut rng, k, &mut state)).collect();
    for (name, compression) in COMPRESSIONS {
        let mut wal = Wal::open(
            tmp.path().join(format!("size-{name}")),
            WalOptions {
                segment_size: DEFAULT_SEGMENT_SIZE,
                fsync: FsyncPolicy::Never,
                compression,
            },
        )
        .unwrap();
        for s in &scrapes {
            wal.log(&Record::Samples { entries: s }).unwrap();
        }
        println!(
            "wal bytes/sample {name}: {:.2}",
            wal.bytes_written() as f64 / (scrapes.len() * SAMPLES) as f64
        );
    }

    for (name, compression) in COMPRESSIONS {
        let mut wal = Wal::open(
            tmp.path().join(format!("never-{name}")),
            WalOptions {
                segment_size: DEFAULT_SEGMENT_SIZE,
                fsync: FsyncPolicy::Never,
                compression,
            },
        )
        .unwrap();
        let mut k = 0;
        g.bench_function(format!("log_scrape_fsync_never_{name}"), |b| {
            b.iter(|| {
                k = (k + 1) % scrapes.len();
                let rec = Record::Samples {
                    entries: &scrapes[k],
                };
                wal.log(black_box(&rec)).unwrap();
                if wal.size() > 1 << 30 {
                    // keep the disk bounded: an empty checkpoint drops every segment
                    wal.checkpoint(std::iter::empty()).unwrap();
                }
            })
        });
    }

    let small: Vec<(u64, i64, f64)> = entries[..10].to_vec();
    let small = Record::Samples { entries: &small };
    let mut wal = Wal::open(
        tmp.path().join("always"),
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::Always,
            compression: WalCompression::None,
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
