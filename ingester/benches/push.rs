//! Remote-write ingest cost per sample: one request of 2000 series that already exist in
//! the head, one sample each (the steady state of a Prometheus sending every scrape),
//! WAL fsync off so the CPU cost is what is measured.
//!
//! * `ingest`: `push::ingest` on a prost-decoded `WriteRequest`.
//! * `decode+ingest_ref`: borrowing decode of the uncompressed protobuf, then
//!   `push::ingest_ref` (what `POST /api/v1/push` does after snappy).
//! * `decode+ingest_ref v2`: the same request as remote write 2.0 (symbol table).
//! * `unsnappy+decode v1` / `v2`: the body as sent (snappy) to the borrowed view, no
//!   ingest: the protocol's own cost. The compressed sizes are printed.
//!
//! `cargo bench -p strata-ingester --bench push -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strata_ingester::{push, Ingester, IngesterArgs};
use strata_kit::metrics::Registry;
use strata_objstore::Bucket;
use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use strata_proto::Message;

const SERIES: usize = 2000;
const TENANT: &str = "bench";

fn request(t: i64) -> WriteRequest {
    let label = |n: &str, v: String| Label {
        name: n.into(),
        value: v,
    };
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|i| TimeSeries {
                labels: vec![
                    label("__name__", format!("metric_{}", i % 50)),
                    label("instance", format!("host-{}:9100", i % 100)),
                    label("job", "node".into()),
                    label("namespace", format!("ns-{}", i % 10)),
                    label("series_id", i.to_string()),
                ],
                samples: vec![Sample {
                    value: i as f64 + t as f64,
                    timestamp: t,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: IngesterArgs,
}

/// Flags as a user gives them, so the bench follows new flags without edits.
fn open(dir: &std::path::Path) -> Arc<Ingester> {
    use clap::Parser;
    let cli = Cli::parse_from([
        "bench".to_string(),
        format!("--tsdb.path={}", dir.display()),
        "--tsdb.wal-fsync=never".to_string(),
        "--tsdb.ship-interval=1h".to_string(),
        "--ingester.max-global-series-per-user=0".to_string(),
    ]);
    let bucket = Bucket::filesystem(dir.join("bucket")).unwrap();
    Ingester::open(cli.args, bucket, &Registry::new()).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ing = open(dir.path());
    let mut t = 1_700_000_000_000i64;
    // create the series
    let out = push::ingest(&ing, TENANT, request(t)).unwrap();
    assert_eq!(out.accepted_samples, SERIES);

    let mut g = c.benchmark_group("push");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("ingest", |b| {
        b.iter_batched(
            || {
                t += 15_000;
                request(t)
            },
            |req| {
                let out = push::ingest(&ing, TENANT, req).unwrap();
                assert_eq!(out.accepted_samples, SERIES);
                black_box(out)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("decode+ingest_ref", |b| {
        b.iter_batched(
            || {
                t += 15_000;
                request(t).encode_to_vec()
            },
            |raw| {
                let req = strata_proto::decode_write_request_ref(&raw).unwrap();
                let out = push::ingest_ref(&ing, TENANT, &req).unwrap();
                assert_eq!(out.accepted_samples, SERIES);
                black_box(out)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("decode+ingest_ref v2", |b| {
        b.iter_batched(
            || {
                t += 15_000;
                strata_proto::write_request_to_v2(&request(t)).encode_to_vec()
            },
            |raw| {
                let (req, _) = strata_proto::decode_write_v2_ref(&raw).unwrap();
                let out = push::ingest_ref(&ing, TENANT, &req).unwrap();
                assert_eq!(out.accepted_samples, SERIES);
                black_box(out)
            },
            BatchSize::LargeInput,
        )
    });
    let v1 = strata_proto::encode_write_request(&request(t));
    let v2 = strata_proto::encode_snappy_message(&strata_proto::write_request_to_v2(&request(t)));
    eprintln!(
        "snappy bodies of {SERIES} series: 1.0 {} bytes, 2.0 {} bytes",
        v1.len(),
        v2.len()
    );
    let mut buf = Vec::new();
    g.bench_function("unsnappy+decode v1", |b| {
        b.iter(|| {
            strata_proto::decompress_snappy_into(&v1, 64 << 20, &mut buf).unwrap();
            let req = strata_proto::decode_write_request_ref(&buf).unwrap();
            black_box(req.num_samples())
        })
    });
    g.bench_function("unsnappy+decode v2", |b| {
        b.iter(|| {
            strata_proto::decompress_snappy_into(&v2, 64 << 20, &mut buf).unwrap();
            let (req, _) = strata_proto::decode_write_v2_ref(&buf).unwrap();
            black_box(req.num_samples())
        })
    });
    // The second pass for metadata and exemplars (rw_extras), with exemplars wanted:
    // what every 1.0 push pays on top of its decode while exemplar storage is on.
    let raw = request(t).encode_to_vec();
    g.bench_function("decode v1", |b| {
        b.iter(|| black_box(strata_proto::decode_write_request_ref(&raw).unwrap().len()))
    });
    g.bench_function("scan metadata+exemplars v1", |b| {
        b.iter(|| {
            black_box(
                strata_ingester::rw_extras::scan_v1(&raw, true)
                    .exemplars
                    .len(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
