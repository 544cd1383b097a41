//! The head: append throughput and memory per active series.
//!
//! * `memory` (printed before the timed benches): creates `STRATA_HEAD_BENCH_SERIES`
//!   (default 1,000,000) series with realistic labels (8 labels, 50 metric names,
//!   instance/job/pod/namespace/...), appends 250 samples to each at a 15 s interval
//!   (two closed chunks and an open one, as an ingester holds ~1 h after a cut), and
//!   prints the process RSS growth and `Head::approx_memory_bytes()` per series, and the
//!   RSS growth once every series' chunks were read (and how much of it is the chunk
//!   files' mapped pages, `RssFile`).
//! * `head/append`: samples per second appending to 100k existing series, 10 samples
//!   each per iteration, one thread.
//! * `head/get_or_create`: series lookups per second for existing series.
//! * `head_ooo/*`: with a 1 h out-of-order window, 30 samples per series into 10k fresh
//!   series, in order, or the newest first and the other 29 shuffled (out of order).
//! * `head_select/*`: selecting 1,000 series × 480 samples (2 h at 15 s) of a head of
//!   50,000 with their chunks, as a query over a 2-hour head does (`select`, and `select_refs` then
//!   `series_chunks` per series as the ingester's Store API streams them, and
//!   `series_chunks` alone: the chunks without the labels).
//!
//! `STRATA_HEAD_BENCH_SAMPLES` (default 250) sets the samples per series of `memory`
//! (480 for a 2-hour head at 15 s).
//!
//! The heads of `memory` and `head_select` write their closed chunks to chunk files in
//! a temporary directory, as an ingester's head does; `STRATA_HEAD_BENCH_IN_MEMORY=1`
//! keeps them in memory (a head without a directory) to compare.
//!
//! `cargo bench -p strata-tsdb --bench head -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_tsdb::head::{Head, HeadOptions, HeadSeriesRef};
use strata_tsdb::labels::Labels;

const INTERVAL: i64 = 15_000;

/// A head as the ingester has it: closed chunks in `chunks_head/` under `dir`, unless
/// `STRATA_HEAD_BENCH_IN_MEMORY` is set.
fn bench_head(dir: &tempfile::TempDir) -> Head {
    if std::env::var_os("STRATA_HEAD_BENCH_IN_MEMORY").is_some() {
        return Head::new(HeadOptions::default());
    }
    Head::open(HeadOptions {
        chunks_dir: Some(dir.path().join("chunks_head")),
        ..HeadOptions::default()
    })
    .expect("chunk files in a temporary directory")
}

/// Labels of a Kubernetes-scraped series: 8 labels, 50 metric names.
fn labels(i: usize) -> Labels {
    let pod = i / 50;
    Labels::from_pairs([
        ("__name__", format!("app_metric_{}_total", i % 50)),
        ("cluster", "prod-eu-west-1".to_string()),
        ("namespace", format!("team-{}", pod % 40)),
        ("job", format!("{}/service-{}", "team", pod % 200)),
        (
            "instance",
            format!(
                "10.{}.{}.{}:8080",
                pod >> 16 & 255,
                pod >> 8 & 255,
                pod & 255
            ),
        ),
        (
            "pod",
            format!("service-{}-7d9f8b{:05x}-x{:04}", pod % 200, pod, pod % 9973),
        ),
        ("container", "app".to_string()),
        (
            "code",
            ["200", "404", "500", "503", "301"][i % 5].to_string(),
        ),
    ])
}

/// Per-series value model: busy counters (40%), slow counters (30%), 0/1 gauges (20%),
/// two-decimal gauges (10%); half the series have a few ms of timestamp jitter.
struct Gen {
    kind: u8,
    v: f64,
    jitter: bool,
}

impl Gen {
    fn new(i: usize) -> Gen {
        Gen {
            kind: match i % 10 {
                0..=3 => 0,
                4..=6 => 3,
                7 | 8 => 1,
                _ => 2,
            },
            v: 0.0,
            jitter: i & 1 == 0,
        }
    }

    fn next(&mut self, rng: &mut SmallRng, t: i64) -> (i64, f64) {
        self.v = match self.kind {
            0 => self.v + rng.random_range(0..20) as f64,
            1 => f64::from(u8::from(rng.random_range(0..50) != 0)),
            3 => self.v + f64::from(u8::from(rng.random_range(0..10) == 0)),
            _ => (rng.random_range(0..100_000) as f64) / 100.0,
        };
        let t = if self.jitter {
            t + rng.random_range(0..4)
        } else {
            t
        };
        (t, self.v)
    }
}

fn rss_bytes() -> usize {
    status_bytes("VmRSS:")
}

/// A `/proc/self/status` field in bytes (`RssFile:`: mapped file pages, such as the head's
/// chunk files once read).
fn status_bytes(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// glibc's `struct mallinfo2`.
    #[repr(C)]
    pub struct MallInfo2 {
        pub arena: usize,
        pub ordblks: usize,
        pub smblks: usize,
        pub hblks: usize,
        pub hblkhd: usize,
        pub usmblks: usize,
        pub fsmblks: usize,
        pub uordblks: usize,
        pub fordblks: usize,
        pub keepcost: usize,
    }
    extern "C" {
        pub fn mallinfo2() -> MallInfo2;
        pub fn malloc_trim(pad: usize) -> i32;
    }
}

/// glibc's bytes in use and free in its arenas, over the whole process.
fn malloc_in_use_and_free() -> Option<(usize, usize)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let m = unsafe { glibc::mallinfo2() };
        Some((m.uordblks + m.hblkhd, m.fordblks))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        glibc::malloc_trim(0);
    }
}

fn memory_report() {
    let n: usize = std::env::var("STRATA_HEAD_BENCH_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let samples: i64 = std::env::var("STRATA_HEAD_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    // The bench's own vectors are allocated first and subtracted below; each label set
    // is built just before its lookup and freed right after (as a request's would be).
    let mut rng = SmallRng::seed_from_u64(1);
    let mut gens: Vec<Gen> = (0..n).map(Gen::new).collect();
    let mut refs: Vec<HeadSeriesRef> = Vec::with_capacity(n);
    let dir = tempfile::tempdir().unwrap();
    let before = rss_bytes();
    let start = Instant::now();
    let head = bench_head(&dir);
    refs.extend((0..n).map(|i| head.get_or_create(&labels(i)).0));
    let created = start.elapsed();
    let start = Instant::now();
    for k in 0..samples {
        for (r, g) in refs.iter().zip(gens.iter_mut()) {
            let (t, v) = g.next(&mut rng, k * INTERVAL);
            head.append(*r, t, v).unwrap();
        }
    }
    let appended = start.elapsed();
    // `refs` was reserved untouched before `before`; its pages became resident since
    let refs_bytes = refs.capacity() * std::mem::size_of::<HeadSeriesRef>();
    let rss = rss_bytes()
        .saturating_sub(before)
        .saturating_sub(refs_bytes);
    drop(gens);
    let mem = head.memory_usage();
    let stats = head.stats(1);
    let per = |b: usize| b as f64 / n as f64;
    println!(
        "head memory: {n} series x {samples} samples ({} chunks): \
         RSS delta {:.0} B/series, approx_memory_bytes {:.0} B/series \
         (chunk data {:.0}, series {:.0}, index {:.0}); chunk data on disk {:.0} \
         B/series (in memory and on disk {:.2} B/sample); \
         created {:.0} series/s, appended {:.2} M samples/s",
        stats.chunk_count,
        per(rss),
        per(mem.total()),
        per(mem.chunk_bytes),
        per(mem.series_bytes),
        per(mem.index_bytes),
        per(mem.disk_chunk_bytes),
        (mem.chunk_bytes + mem.disk_chunk_bytes) as f64 / (n as f64 * samples as f64),
        n as f64 / created.as_secs_f64(),
        (n as f64 * samples as f64) / appended.as_secs_f64() / 1e6,
    );
    if let Some((used, free)) = malloc_in_use_and_free() {
        // what glibc kept of what the appends freed, and what a trim (as the ingester's
        // every 10 s) cannot return: holes in pages still partly in use
        trim_heap();
        println!(
            "head heap: malloc in use {:.0} B/series, free kept {:.0} B/series; \
             RSS delta after malloc_trim(0) {:.0} B/series",
            per(used),
            per(free),
            per(rss_bytes()
                .saturating_sub(before)
                .saturating_sub(refs_bytes)),
        );
    }
    // a pass over every sample, as a WAL checkpoint makes: chunks copied with `pread`,
    // so the chunk files' pages stay out of RSS
    let file_before = status_bytes("RssFile:");
    let start = Instant::now();
    let mut samples_seen = 0usize;
    head.for_each_sample_since(0, |_, s| samples_seen += s.len())
        .unwrap();
    let passed = start.elapsed();
    assert_eq!(samples_seen, n * samples as usize);
    println!(
        "head memory after a checkpoint's pass over every sample: RSS delta {:.0} B/series, \
         of which mapped file pages {:.0} B/series (pass in {:.2} s)",
        per(rss_bytes()
            .saturating_sub(before)
            .saturating_sub(refs_bytes)),
        per(status_bytes("RssFile:").saturating_sub(file_before)),
        passed.as_secs_f64()
    );
    // a read may leave state behind (shared chunk bytes keep a reference count; the
    // chunk files' mapped pages count in RSS as file pages)
    let start = Instant::now();
    for r in &refs {
        black_box(head.series_chunks(*r, 0, i64::MAX).unwrap());
    }
    let read = start.elapsed();
    let rss_read = rss_bytes()
        .saturating_sub(before)
        .saturating_sub(refs_bytes);
    let file_read = status_bytes("RssFile:").saturating_sub(file_before);
    println!(
        "head memory after reading every series' chunks once: RSS delta {:.0} B/series, \
         of which mapped file pages {:.0} B/series (read in {:.2} s)",
        per(rss_read),
        per(file_read),
        read.as_secs_f64()
    );
    black_box(&head);
}

fn benches(c: &mut Criterion) {
    const SERIES: usize = 100_000;
    const PER_ITER: i64 = 10;
    let mut g = c.benchmark_group("head");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SERIES as u64 * PER_ITER as u64));
    let all: Vec<Labels> = (0..SERIES).map(labels).collect();
    // One head reused across iterations: each appends the next 10 samples per series.
    let head = Head::new(HeadOptions::default());
    let refs: Vec<HeadSeriesRef> = all.iter().map(|l| head.get_or_create(l).0).collect();
    let mut gens: Vec<Gen> = (0..SERIES).map(Gen::new).collect();
    let mut rng = SmallRng::seed_from_u64(2);
    let mut k = 0i64;
    g.bench_function("append/100k series x 10 samples", |b| {
        b.iter(|| {
            for _ in 0..PER_ITER {
                for (r, gen) in refs.iter().zip(gens.iter_mut()) {
                    let (t, v) = gen.next(&mut rng, k * INTERVAL);
                    head.append(*r, t, v).unwrap();
                }
                k += 1;
            }
        })
    });
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("get_or_create/100k existing", |b| {
        b.iter(|| {
            for l in &all {
                black_box(head.get_or_create(l));
            }
        })
    });
    g.bench_function("get_or_create/100k new", |b| {
        b.iter_batched(
            || Head::new(HeadOptions::default()),
            |h| {
                for l in &all {
                    black_box(h.get_or_create(l));
                }
                h
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Append cost of out-of-order samples against in-order ones, same samples.
fn ooo_benches(c: &mut Criterion) {
    const SERIES: usize = 10_000;
    const PER_SERIES: usize = 30;
    let all: Vec<Labels> = (0..SERIES).map(labels).collect();
    let mut rng = SmallRng::seed_from_u64(3);
    let samples: Vec<Vec<(i64, f64)>> = (0..SERIES)
        .map(|i| {
            let mut gen = Gen::new(i);
            (0..PER_SERIES as i64)
                .map(|k| gen.next(&mut rng, k * INTERVAL))
                .collect()
        })
        .collect();
    // the newest first, then the rest in a random order
    let shuffled: Vec<Vec<(i64, f64)>> = samples
        .iter()
        .map(|s| {
            let (newest, rest) = s.split_last().unwrap();
            let mut rest = rest.to_vec();
            for i in (1..rest.len()).rev() {
                rest.swap(i, rng.random_range(0..=i));
            }
            std::iter::once(*newest).chain(rest).collect()
        })
        .collect();
    let fresh = || {
        let h = Head::new(HeadOptions {
            out_of_order_time_window_ms: 60 * 60 * 1000,
            ..HeadOptions::default()
        });
        let refs: Vec<HeadSeriesRef> = all.iter().map(|l| h.get_or_create(l).0).collect();
        (h, refs)
    };
    let mut g = c.benchmark_group("head_ooo");
    g.sample_size(10);
    g.throughput(Throughput::Elements((SERIES * PER_SERIES) as u64));
    for (name, input) in [
        ("in-order/10k series x 30", &samples),
        ("out-of-order/10k series x 30", &shuffled),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                fresh,
                |(h, refs)| {
                    for (r, s) in refs.iter().zip(input) {
                        for &(t, v) in s {
                            h.append(*r, t, v).unwrap();
                        }
                    }
                    h
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Selecting 1,000 series of a 2-hour head of 50,000 (one metric name of 50, so the
/// chunks read are spread over a head larger than the caches): what a query over the
/// head pays before decoding.
fn select_benches(c: &mut Criterion) {
    const SERIES: usize = 50_000;
    const SAMPLES: i64 = 480;
    let dir = tempfile::tempdir().unwrap();
    let head = bench_head(&dir);
    let refs: Vec<HeadSeriesRef> = (0..SERIES)
        .map(|i| head.get_or_create(&labels(i)).0)
        .collect();
    let mut gens: Vec<Gen> = (0..SERIES).map(Gen::new).collect();
    let mut rng = SmallRng::seed_from_u64(4);
    for k in 0..SAMPLES {
        for (r, g) in refs.iter().zip(gens.iter_mut()) {
            let (t, v) = g.next(&mut rng, k * INTERVAL);
            head.append(*r, t, v).unwrap();
        }
    }
    let maxt = SAMPLES * INTERVAL;
    let one_name = [strata_tsdb::matcher::Matcher::equal(
        "__name__",
        "app_metric_7_total",
    )];
    let mut g = c.benchmark_group("head_select");
    g.sample_size(20);
    g.throughput(Throughput::Elements((SERIES / 50) as u64 * SAMPLES as u64));
    g.bench_function("select/1k of 50k series x 480", |b| {
        b.iter(|| black_box(head.select(&one_name, 0, maxt).unwrap()))
    });
    let selected: Vec<HeadSeriesRef> = head
        .select_refs(&one_name, 0, maxt)
        .into_iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(selected.len(), SERIES / 50);
    g.bench_function("series_chunks/1k of 50k series x 480", |b| {
        b.iter(|| {
            for r in &selected {
                black_box(head.series_chunks(*r, 0, maxt).unwrap());
            }
        })
    });
    g.bench_function("select_refs+series_chunks/1k of 50k series x 480", |b| {
        b.iter(|| {
            for (r, _) in head.select_refs(&one_name, 0, maxt) {
                black_box(head.series_chunks(r, 0, maxt).unwrap());
            }
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    if std::env::var_os("STRATA_HEAD_BENCH_SELECT_ONLY").is_some() {
        select_benches(&mut c);
        c.final_summary();
        return;
    }
    memory_report();
    select_benches(&mut c);
    ooo_benches(&mut c);
    benches(&mut c);
    c.final_summary();
}
