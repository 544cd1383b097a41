//! `strata tools loadgen`: a deterministic remote-write load generator, avalanche-like.
//!
//! Series: `--metrics` metric names (a third counters, a third gauges, a third classic
//! histograms with 8 buckets + sum + count), spread over instances and pods until
//! `--series` series exist. Every request is encoded (protobuf + snappy) before the clock
//! starts, so the generator is never the bottleneck; `--url null` measures its ceiling
//! against a built-in endpoint that discards requests. Series are sharded by hash as
//! Prometheus's queue manager does: each shard sends its requests in order, so every
//! series' samples arrive in time order. `--churn` replaces that fraction of series
//! (a new `pod` value) at every scrape, as pods coming and going do.
//!
//! `--native-histograms` sends the histogram metrics as integer native histograms
//! instead (one series each, schema 3, observations spread log-uniformly over about
//! four decades with a rare far outlier, so buckets grow and now and then appear).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_proto::prometheus::{
    histogram::{Count, ZeroCount},
    BucketSpan, Histogram, Label, Sample, TimeSeries, WriteRequest,
};

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Remote-write URL, or `null` for a built-in endpoint that discards requests.
    #[arg(long, default_value = "http://127.0.0.1:9009/api/v1/push")]
    url: String,
    /// Tenant sent as X-Scope-OrgID.
    #[arg(long)]
    tenant: Option<String>,
    /// Remote write protocol: 1.0 (prometheus.WriteRequest) or 2.0
    /// (io.prometheus.write.v2.Request, a symbol table per request).
    #[arg(long, default_value = "1.0", value_parser = ["1.0", "2.0"])]
    protocol: String,
    /// Active series.
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Distinct metric names.
    #[arg(long, default_value_t = 100)]
    metrics: usize,
    /// Scrapes to send: samples per series.
    #[arg(long, default_value_t = 10)]
    scrapes: usize,
    /// Simulated scrape interval (sample spacing); the last scrape is stamped now.
    #[arg(long, default_value = "15s", value_parser = strata_kit::parse_duration_ms)]
    interval: i64,
    /// Concurrent senders (Prometheus's queue shards).
    #[arg(long, default_value_t = 4)]
    shards: usize,
    /// Samples per request (Prometheus's max_samples_per_send).
    #[arg(long, default_value_t = 2000)]
    max_samples_per_send: usize,
    /// Fraction of series replaced by new ones at every scrape (0..1).
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Seed: the same seed and flags give the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Report this process's CPU time and memory over the run (the server under test).
    #[arg(long)]
    measure_pid: Option<u32>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Timestamp of the last scrape in milliseconds since the epoch (default: now). The
    /// same seed, flags and end time give byte-identical requests: two receivers can
    /// be sent the same stream.
    #[arg(long, value_name = "MS")]
    end_time: Option<i64>,
    /// Send the histogram metrics (a third of --metrics) as native histograms (integer
    /// counts, schema 3), one series each, instead of classic bucket series.
    #[arg(long)]
    native_histograms: bool,
}

/// Schema of the generated native histograms: 8 buckets per power of two.
const NATIVE_SCHEMA: i32 = 3;

/// One native histogram series' running state: absolute counts by bucket index.
#[derive(Default, Clone)]
struct NativeState {
    buckets: std::collections::BTreeMap<i32, u64>,
    zero: u64,
    count: u64,
    sum: f64,
}

impl NativeState {
    /// Record `n` observations drawn from `rng`.
    fn observe(&mut self, rng: &mut SmallRng, n: usize) {
        for _ in 0..n {
            let r: f64 = rng.random_range(0.0..1.0);
            let v = if r < 0.01 {
                0.0
            } else if r < 0.02 {
                // rare outliers, far up: new buckets now and then
                0.001 * 2f64.powf(rng.random_range(14.0..20.0))
            } else {
                0.001 * 2f64.powf(rng.random_range(0.0..13.0))
            };
            self.count += 1;
            self.sum += v;
            if v <= 1e-128 {
                self.zero += 1;
            } else {
                // bucket idx holds (2^((idx-1)/8), 2^(idx/8)]
                let idx = (v.log2() * f64::from(1 << NATIVE_SCHEMA)).ceil() as i32;
                *self.buckets.entry(idx).or_default() += 1;
            }
        }
    }

    /// The histogram as remote write sends it: spans over the populated buckets,
    /// delta-encoded counts.
    fn to_proto(&self, t: i64) -> Histogram {
        let mut spans: Vec<BucketSpan> = Vec::new();
        let mut deltas = Vec::with_capacity(self.buckets.len());
        let (mut prev_idx, mut prev_count) = (None::<i32>, 0i64);
        for (&idx, &c) in &self.buckets {
            match (prev_idx, spans.last_mut()) {
                (Some(p), Some(last)) if idx == p + 1 => last.length += 1,
                (Some(p), _) => spans.push(BucketSpan {
                    offset: idx - p - 1,
                    length: 1,
                }),
                (None, _) => spans.push(BucketSpan {
                    offset: idx,
                    length: 1,
                }),
            }
            deltas.push(c as i64 - prev_count);
            prev_count = c as i64;
            prev_idx = Some(idx);
        }
        Histogram {
            count: Some(Count::CountInt(self.count)),
            sum: self.sum,
            schema: NATIVE_SCHEMA,
            zero_threshold: 1e-128,
            zero_count: Some(ZeroCount::ZeroCountInt(self.zero)),
            positive_spans: spans,
            positive_deltas: deltas,
            timestamp: t,
            ..Default::default()
        }
    }
}

const BUCKETS: [&str; 8] = ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"];

/// The static description of one series slot.
pub(crate) struct Slot {
    pub metric: usize,
    /// 0..10 for histograms (8 buckets, sum, count), 0 otherwise.
    pub part: usize,
    pub instance: usize,
    pub pod: usize,
}

pub(crate) fn metric_kind(m: usize) -> usize {
    m % 3 // 0 counter, 1 gauge, 2 histogram
}

pub(crate) fn slots(n: usize, metrics: usize) -> Vec<Slot> {
    slots_with(n, metrics, false)
}

/// [`slots`], with one slot per histogram when they are `native`.
fn slots_with(n: usize, metrics: usize, native: bool) -> Vec<Slot> {
    let mut v = Vec::with_capacity(n);
    let mut combo = 0usize;
    'outer: loop {
        for m in 0..metrics {
            let parts = if metric_kind(m) == 2 && !native {
                10
            } else {
                1
            };
            for part in 0..parts {
                if v.len() == n {
                    break 'outer;
                }
                v.push(Slot {
                    metric: m,
                    part,
                    instance: combo % 50,
                    pod: combo,
                });
            }
        }
        combo += 1;
    }
    v
}

pub(crate) fn labels_for(s: &Slot, generation: usize) -> Vec<Label> {
    let l = |n: &str, v: String| Label {
        name: n.into(),
        value: v,
    };
    let base = format!("loadgen_metric_{}", s.metric);
    let (name, extra) = match (metric_kind(s.metric), s.part) {
        (0, _) => (format!("{base}_total"), None),
        (1, _) => (base, None),
        (_, p) if p < 8 => (format!("{base}_bucket"), Some(l("le", BUCKETS[p].into()))),
        (_, 8) => (format!("{base}_sum"), None),
        _ => (format!("{base}_count"), None),
    };
    // sorted by name, as Prometheus sends them
    let mut v = vec![
        l("__name__", name),
        l("cluster", "bench".into()),
        l(
            "instance",
            format!("10.0.{}.{}:9100", s.instance / 250, s.instance % 250),
        ),
        l("job", "loadgen".into()),
        l("namespace", format!("ns-{}", s.pod % 10)),
        l("pod", format!("pod-{}-{generation}", s.pod)),
    ];
    if let Some(e) = extra {
        v.push(e);
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn shard_of(slot: usize, shards: usize) -> usize {
    // a fixed mix of the slot number, so the layout is stable across runs
    let mut x = slot as u64 ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((x ^ (x >> 31)) % shards as u64) as usize
}

/// Pre-encode every request: `[shard][request]` in send order, with sample counts.
fn encode_all(a: &LoadgenArgs) -> Vec<Vec<(Bytes, usize)>> {
    let slots = slots_with(a.series, a.metrics.max(1), a.native_histograms);
    let native = |s: &Slot| a.native_histograms && metric_kind(s.metric) == 2;
    let mut states: Vec<NativeState> = vec![NativeState::default(); slots.len()];
    let shards = a.shards.max(1);
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let now = a.end_time.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    });
    let start = now - (a.scrapes.saturating_sub(1) as i64) * a.interval;
    let mut generation = vec![0usize; slots.len()];
    let mut values = vec![0f64; slots.len()];
    let mut out: Vec<Vec<(Bytes, usize)>> = vec![Vec::new(); shards];
    let mut pending: Vec<Vec<TimeSeries>> = vec![Vec::new(); shards];
    for scrape in 0..a.scrapes {
        let t = start + scrape as i64 * a.interval;
        if scrape > 0 && a.churn > 0.0 {
            for (i, g) in generation.iter_mut().enumerate() {
                if rng.random_bool(a.churn.min(1.0)) {
                    *g += 1;
                    // a new series starts from nothing
                    states[i] = NativeState::default();
                }
            }
        }
        for (i, s) in slots.iter().enumerate() {
            let sh = shard_of(i, shards);
            if native(s) {
                let n = rng.random_range(0..40);
                states[i].observe(&mut rng, n);
                let mut labels = labels_for(s, generation[i]);
                labels.retain(|l| l.name != "le");
                labels[0].value = format!("loadgen_metric_{}_seconds", s.metric);
                pending[sh].push(TimeSeries {
                    labels,
                    histograms: vec![states[i].to_proto(t)],
                    ..Default::default()
                });
                if pending[sh].len() >= a.max_samples_per_send {
                    let ts = std::mem::take(&mut pending[sh]);
                    let n = ts.len();
                    out[sh].push((encode(a, ts), n));
                }
                continue;
            }
            let v = match metric_kind(s.metric) {
                1 => rng.random_range(0.0..100.0),
                _ => {
                    values[i] += rng.random_range(0..10) as f64 * (s.part as f64 + 1.0);
                    values[i]
                }
            };
            pending[sh].push(TimeSeries {
                labels: labels_for(s, generation[i]),
                samples: vec![Sample {
                    value: v,
                    timestamp: t,
                }],
                ..Default::default()
            });
            if pending[sh].len() >= a.max_samples_per_send {
                let ts = std::mem::take(&mut pending[sh]);
                let n = ts.len();
                out[sh].push((encode(a, ts), n));
            }
        }
        // flush the end of each scrape so every request holds one timestamp
        for sh in 0..shards {
            if !pending[sh].is_empty() {
                let ts = std::mem::take(&mut pending[sh]);
                let n = ts.len();
                out[sh].push((encode(a, ts), n));
            }
        }
    }
    out
}

/// One request body in the protocol asked for.
fn encode(a: &LoadgenArgs, timeseries: Vec<TimeSeries>) -> Bytes {
    let req = WriteRequest {
        timeseries,
        ..Default::default()
    };
    Bytes::from(if a.protocol == "2.0" {
        strata_proto::encode_snappy_message(&strata_proto::write_request_to_v2(&req))
    } else {
        strata_proto::encode_write_request(&req)
    })
}

/// (utime + stime in seconds, VmRSS bytes, VmHWM bytes) of a process.
fn proc_stats(pid: u32) -> anyhow::Result<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid}"))?;
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 of stat; `after` starts at field 3
    let ticks: f64 = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok((ticks / 100.0, kb("VmRSS:"), kb("VmHWM:")))
}

pub fn run(a: &LoadgenArgs) -> anyhow::Result<ExitCode> {
    if a.series == 0 || a.scrapes == 0 {
        bail!("--series and --scrapes must be positive");
    }
    if !(0.0..=1.0).contains(&a.churn) {
        bail!("--churn must be between 0 and 1");
    }
    let t0 = Instant::now();
    let requests = encode_all(a);
    let encoded_bytes: usize = requests.iter().flatten().map(|(b, _)| b.len()).sum();
    let total_requests: usize = requests.iter().map(Vec::len).sum();
    eprintln!(
        "loadgen: encoded {total_requests} requests ({:.1} MiB) for {} series × {} scrapes in {:.1}s",
        encoded_bytes as f64 / (1 << 20) as f64,
        a.series,
        a.scrapes,
        t0.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(send_all(a, requests))
}

async fn null_endpoint() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/api/v1/push",
        axum::routing::post(|body: Bytes| async move {
            drop(body);
            axum::http::StatusCode::NO_CONTENT
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/api/v1/push"))
}

async fn send_all(a: &LoadgenArgs, requests: Vec<Vec<(Bytes, usize)>>) -> anyhow::Result<ExitCode> {
    let url = if a.url == "null" {
        null_endpoint().await?
    } else {
        a.url.clone()
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.shards * 2)
        .build()?;
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let before = match a.measure_pid {
        Some(p) => Some(proc_stats(p)?),
        None => None,
    };
    let start = Instant::now();
    let total = (a.series * a.scrapes) as u64;
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = {
        let (sent, finished) = (sent.clone(), finished.clone());
        tokio::spawn(async move {
            let mut bar = super::progress::Progress::new("loadgen", "samples sent", total);
            while !finished.load(Ordering::Relaxed) {
                bar.set(sent.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            bar.set(sent.load(Ordering::Relaxed));
            bar.finish();
        })
    };
    let (content_type, version) = if a.protocol == "2.0" {
        (
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            "2.0.0",
        )
    } else {
        ("application/x-protobuf", "0.1.0")
    };
    let mut tasks = Vec::new();
    for shard in requests {
        let (client, url, tenant) = (client.clone(), url.clone(), a.tenant.clone());
        let (sent, failed, retried) = (sent.clone(), failed.clone(), retried.clone());
        tasks.push(tokio::spawn(async move {
            for (body, n) in shard {
                let mut backoff = Duration::from_millis(30);
                loop {
                    let mut req = client
                        .post(&url)
                        .header("Content-Encoding", "snappy")
                        .header("Content-Type", content_type)
                        .header("X-Prometheus-Remote-Write-Version", version)
                        .body(body.clone());
                    if let Some(t) = &tenant {
                        req = req.header("X-Scope-OrgID", t);
                    }
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            sent.fetch_add(n as u64, Ordering::Relaxed);
                            break;
                        }
                        // as Prometheus: retry 5xx and 429, drop other 4xx
                        Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {}
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            if failed.fetch_add(n as u64, Ordering::Relaxed) == 0 {
                                eprintln!("loadgen: {status}: {}", text.trim());
                            }
                            break;
                        }
                        Err(e) => {
                            if retried.load(Ordering::Relaxed) == 0 {
                                eprintln!("loadgen: {e}");
                            }
                        }
                    }
                    retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    finished.store(true, Ordering::Relaxed);
    progress.await?;
    let secs = start.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    let mut result = serde_json::json!({
        "url": url,
        "series": a.series,
        "scrapes": a.scrapes,
        "churn": a.churn,
        "samples_sent": sent,
        "samples_failed": failed.load(Ordering::Relaxed),
        "retries": retried.load(Ordering::Relaxed),
        "seconds": secs,
        "samples_per_second": sent as f64 / secs,
    });
    if let (Some(pid), Some((cpu0, _, _))) = (a.measure_pid, before) {
        let (cpu1, rss, hwm) = proc_stats(pid)?;
        let cpu = cpu1 - cpu0;
        result["server_cpu_seconds"] = cpu.into();
        result["server_cpu_seconds_per_million_samples"] = (cpu / (sent as f64 / 1e6)).into();
        result["server_samples_per_cpu_second"] = (sent as f64 / cpu.max(1e-9)).into();
        result["server_rss_bytes"] = rss.into();
        result["server_peak_rss_bytes"] = hwm.into();
    }
    if a.json {
        println!("{result}");
    } else {
        for (k, v) in result.as_object().expect("object") {
            println!("{k:<42} {v}");
        }
    }
    Ok(if failed.load(Ordering::Relaxed) > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
