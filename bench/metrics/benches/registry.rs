//! Strata's registry (`strata_kit::metrics`) against the official `prometheus-client`:
//! the hot-path operations and the scrape (encoding many label sets).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;
use prometheus_client::registry::Registry as PcRegistry;
use std::hint::black_box;
use strata_kit::metrics::{Registry, LATENCY_BUCKETS};

type Labels = Vec<(String, String)>;

fn hot_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("hot_path");
    let reg = Registry::new();
    let ours = reg.counter("strata_b_total", "b");
    g.bench_function("counter_inc/strata", |b| b.iter(|| ours.inc()));
    let theirs = PcCounter::<u64>::default();
    g.bench_function("counter_inc/prometheus_client", |b| b.iter(|| theirs.inc()));

    let h = reg.histogram("strata_h_seconds", "h", LATENCY_BUCKETS);
    g.bench_function("histogram_observe/strata", |b| {
        b.iter(|| h.observe(black_box(0.42)))
    });
    let ph = PcHistogram::new(LATENCY_BUCKETS.iter().copied());
    g.bench_function("histogram_observe/prometheus_client", |b| {
        b.iter(|| ph.observe(black_box(0.42)))
    });

    // Looking a label set up on every increment (code that does not keep the handle).
    let vec = reg.counter_vec("strata_v_total", "v", &["tenant", "reason"]);
    g.bench_function("labelled_inc/strata", |b| {
        b.iter(|| vec.with(&[black_box("team-a"), "too_old"]).inc())
    });
    let fam = Family::<Labels, PcCounter>::default();
    g.bench_function("labelled_inc/prometheus_client", |b| {
        b.iter(|| {
            fam.get_or_create(&vec![
                ("tenant".to_string(), black_box("team-a").to_string()),
                ("reason".to_string(), "too_old".to_string()),
            ])
            .inc();
        })
    });
    g.finish();
}

fn scrape(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for series in [100usize, 10_000] {
        let reg = Registry::new();
        let cv = reg.counter_vec("strata_c_total", "c", &["tenant", "code"]);
        let hv = reg.histogram_vec("strata_h_seconds", "h", LATENCY_BUCKETS, &["tenant"]);
        let mut pc = PcRegistry::default();
        let pcv = Family::<Labels, PcCounter>::default();
        let phv = Family::<Labels, PcHistogram>::new_with_constructor(|| {
            PcHistogram::new(LATENCY_BUCKETS.iter().copied())
        });
        pc.register("strata_c", "c", pcv.clone());
        pc.register("strata_h_seconds", "h", phv.clone());
        for i in 0..series {
            let tenant = format!("tenant-{i}");
            cv.with(&[&tenant, "200"]).inc();
            pcv.get_or_create(&vec![
                ("tenant".into(), tenant.clone()),
                ("code".into(), "200".into()),
            ])
            .inc();
            // One histogram per 10 counters: latency by tenant is coarser.
            if i % 10 == 0 {
                hv.with(&[&tenant]).observe(0.5);
                phv.get_or_create(&vec![("tenant".into(), tenant.clone())])
                    .observe(0.5);
            }
        }
        g.bench_with_input(BenchmarkId::new("strata", series), &series, |b, _| {
            let mut out = String::new();
            b.iter(|| {
                out.clear();
                reg.encode_into(&mut out);
                black_box(out.len())
            })
        });
        g.bench_with_input(
            BenchmarkId::new("prometheus_client", series),
            &series,
            |b, _| {
                let mut out = String::new();
                b.iter(|| {
                    out.clear();
                    encode(&mut out, &pc).unwrap();
                    black_box(out.len())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, hot_path, scrape);
criterion_main!(benches);
