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

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

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
    let mut v = Vec::with_capacity(n);
    let mut combo = 0usize;
    'outer: loop {
        for m in 0..metrics {
            let parts = if metric_kind(m) == 2 { 10 } else { 1 };
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
    let slots = slots(a.series, a.metrics.max(1));
    let shards = a.shards.max(1);
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let start = now - (a.scrapes.saturating_sub(1) as i64) * a.interval;
    let mut generation = vec![0usize; slots.len()];
    let mut values = vec![0f64; slots.len()];
    let mut out: Vec<Vec<(Bytes, usize)>> = vec![Vec::new(); shards];
    let mut pending: Vec<Vec<TimeSeries>> = vec![Vec::new(); shards];
    for scrape in 0..a.scrapes {
        let t = start + scrape as i64 * a.interval;
        if scrape > 0 && a.churn > 0.0 {
            for g in generation.iter_mut() {
                if rng.random_bool(a.churn.min(1.0)) {
                    *g += 1;
                }
            }
        }
        for (i, s) in slots.iter().enumerate() {
            let v = match metric_kind(s.metric) {
                1 => rng.random_range(0.0..100.0),
                _ => {
                    values[i] += rng.random_range(0..10) as f64 * (s.part as f64 + 1.0);
                    values[i]
                }
            };
            let sh = shard_of(i, shards);
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
