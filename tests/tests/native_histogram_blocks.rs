//! Native histogram chunks in blocks against the real Prometheus 2.42: the server opens
//! a block our head wrote and answers the histograms we put in, `promtool tsdb analyze`
//! reads it, and a block Prometheus 2.42 compacted from remote-written histograms reads
//! back in our block reader, its chunks re-encoding to the same bytes with our appender.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strata_proto::prometheus as pb;
use strata_testkit::http::post;
use strata_testkit::poll;
use strata_testkit::procs::{promtool, run, Prometheus};
use strata_tsdb::block::Block;
use strata_tsdb::chunkenc::Encoding;
use strata_tsdb::head::{Head, HeadOptions};
use strata_tsdb::histogram::{
    CounterResetHeader, CounterResetHint, FloatHistogram, Histogram, HistogramChunk, HistogramIter,
    Span,
};
use strata_tsdb::labels::Labels;

const H: i64 = 60 * 60 * 1000;
const STEP: i64 = 30_000;

/// 2 h aligned, in 2023: far enough back for any retention logic to leave alone with
/// the harness's 100y retention.
fn t0() -> i64 {
    (1_700_000_000_000 / (2 * H)) * (2 * H)
}

fn deltas(abs: &[i64]) -> Vec<i64> {
    let mut prev = 0;
    abs.iter()
        .map(|a| {
            let d = a - prev;
            prev = *a;
            d
        })
        .collect()
}

/// The `i`th sample of a counter histogram: a reset at i = 80, a third positive bucket
/// from i = 50 on (the chunk is re-coded), a negative bucket and a zero bucket. Counts
/// are consistent: count = zero + positive + negative.
fn counter(i: i64) -> Histogram {
    let k = if i >= 80 { i - 80 } else { i };
    let mut pos = vec![2 * k, 3 * k];
    let mut spans = vec![Span {
        offset: -1,
        length: 2,
    }];
    if (50..80).contains(&i) {
        pos.push(k);
        spans.push(Span {
            offset: 2,
            length: 1,
        });
    }
    let neg = vec![k];
    let zero = k as u64;
    Histogram {
        schema: 1,
        zero_threshold: 2f64.powi(-128),
        zero_count: zero,
        count: zero + pos.iter().chain(&neg).sum::<i64>() as u64,
        sum: 0.25 * k as f64,
        positive_buckets: deltas(&pos),
        positive_spans: spans,
        negative_buckets: deltas(&neg),
        negative_spans: vec![Span {
            offset: 0,
            length: 1,
        }],
        ..Default::default()
    }
}

/// A gauge float histogram going up and down.
fn gauge(i: i64) -> FloatHistogram {
    let v = ((i * 37) % 11) as f64 + 0.5;
    FloatHistogram {
        counter_reset_hint: CounterResetHint::Gauge,
        schema: 0,
        count: 3.0 * v,
        sum: -v,
        zero_count: 0.0,
        positive_spans: vec![Span {
            offset: 2,
            length: 3,
        }],
        positive_buckets: vec![v, v, v],
        ..Default::default()
    }
}

fn json_f64(v: &serde_json::Value) -> f64 {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .parse()
        .unwrap()
}

fn empty_config() -> &'static str {
    "global:\n  scrape_interval: 1h\n"
}

#[test]
fn prometheus_2_42_reads_our_histogram_block() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prom");
    let t0 = t0();
    let head = Head::new(HeadOptions::default());
    let (c, _) = head.get_or_create(&Labels::from_pairs([("__name__", "nh_counter")]));
    let (g, _) = head.get_or_create(&Labels::from_pairs([("__name__", "nh_gauge")]));
    let (f, _) = head.get_or_create(&Labels::from_pairs([("__name__", "plain")]));
    let n = 200; // 100 min
    for i in 0..n {
        let t = t0 + i * STEP;
        head.append_histogram(c, t, &counter(i)).unwrap();
        head.append_float_histogram(g, t, &gauge(i)).unwrap();
        head.append(f, t, i as f64).unwrap();
    }
    let meta = head
        .write_block(&data, t0, t0 + 2 * H, None)
        .unwrap()
        .unwrap();
    assert_eq!(meta.stats.num_histogram_samples, 2 * n as u64);
    // the counter reset started a chunk with the reset header
    let blk = Block::open(&data.join(meta.ulid.to_string())).unwrap();
    let mut headers = Vec::new();
    for s in blk.select(&[], i64::MIN, i64::MAX).unwrap() {
        let s = s.unwrap();
        for cm in &s.chunks {
            let (enc, bytes) = blk.chunks().chunk(cm.chunk_ref).unwrap();
            if enc == Encoding::Histogram {
                headers.push(CounterResetHeader::of(bytes));
            }
        }
    }
    assert!(
        headers.contains(&CounterResetHeader::CounterReset),
        "{headers:?}"
    );
    drop(blk);

    let mut prom = Prometheus::start(
        &data,
        empty_config(),
        &["--enable-feature=native-histograms"],
    );
    for i in [0, 1, 49, 50, 51, 79, 80, 81, 150, n - 1] {
        let t = t0 + i * STEP;
        let want = counter(i);
        let r = prom.query("nh_counter", t);
        assert_eq!(r.as_array().unwrap().len(), 1, "{r}");
        let hv = &r[0]["histogram"];
        assert_eq!(hv[0].as_f64().unwrap() * 1000.0, t as f64, "{r}");
        let body = &hv[1];
        assert_eq!(json_f64(&body["count"]), want.count as f64, "i={i}: {r}");
        assert_eq!(json_f64(&body["sum"]), want.sum, "i={i}: {r}");
        // the buckets Prometheus lists (non-empty ones) add up to the count
        let listed: f64 = body["buckets"]
            .as_array()
            .map_or(0.0, |b| b.iter().map(|b| json_f64(&b[3])).sum());
        assert_eq!(listed, want.count as f64, "i={i}: {r}");
        let r = prom.query("histogram_count(nh_counter)", t);
        assert_eq!(json_f64(&r[0]["value"][1]), want.count as f64, "{r}");

        let wg = gauge(i);
        let r = prom.query("histogram_sum(nh_gauge)", t);
        assert_eq!(json_f64(&r[0]["value"][1]), wg.sum, "i={i}: {r}");
        let r = prom.query("nh_gauge", t);
        let listed: f64 = r[0]["histogram"][1]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| json_f64(&b[3]))
            .sum();
        assert_eq!(listed, wg.count, "i={i}: {r}");
        let r = prom.query("plain", t);
        assert_eq!(json_f64(&r[0]["value"][1]), i as f64);
    }
    // rate over the reset: Prometheus's counter-reset handling sees our chunks' data
    let r = prom.query("histogram_count(rate(nh_counter[5m]))", t0 + 90 * STEP);
    assert!(json_f64(&r[0]["value"][1]) > 0.0, "{r}");
    prom.stop();

    let out = run(Command::new(promtool())
        .args(["tsdb", "analyze"])
        .arg(&data)
        .arg(meta.ulid.to_string()));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool tsdb analyze failed: {text}");
    assert!(text.contains("Series: 3"), "{text}");
}

fn pb_hist(t: i64, h: &Histogram) -> pb::Histogram {
    let spans = |s: &[Span]| {
        s.iter()
            .map(|s| pb::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    pb::Histogram {
        count: Some(pb::histogram::Count::CountInt(h.count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(pb::histogram::ZeroCount::ZeroCountInt(h.zero_count)),
        negative_spans: spans(&h.negative_spans),
        negative_deltas: h.negative_buckets.clone(),
        positive_spans: spans(&h.positive_spans),
        positive_deltas: h.positive_buckets.clone(),
        timestamp: t,
        ..Default::default()
    }
}

/// (bucket index, count) of the non-empty buckets.
fn nonzero(spans: &[Span], counts: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::new();
    let (mut idx, mut k) = (0i32, 0usize);
    for (n, s) in spans.iter().enumerate() {
        idx += s.offset + if n == 0 { 0 } else { 1 };
        for j in 0..s.length {
            if j > 0 {
                idx += 1;
            }
            if counts[k] != 0.0 {
                out.push((idx, counts[k]));
            }
            k += 1;
        }
        if s.length == 0 {
            idx -= 1;
        }
    }
    out
}

/// The block directories (ULID names with a `meta.json`) under `dir`.
fn blocks_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.join("meta.json").exists()
                        && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.len() == 26 && n.chars().all(|c| c.is_ascii_alphanumeric())
                        })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn we_read_histogram_blocks_prometheus_2_42_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prom");
    let prom = Prometheus::start(
        &data,
        empty_config(),
        &[
            "--enable-feature=native-histograms",
            "--web.enable-remote-write-receiver",
        ],
    );
    // 4 h of samples every 30 s: the head spans more than 1.5 block ranges, so
    // Prometheus compacts its first 2 h into a block right after the write.
    let t0 = t0();
    let n = 4 * H / STEP;
    let sent: Vec<(i64, Histogram)> = (0..n).map(|i| (t0 + i * STEP, counter(i % 120))).collect();
    let req = pb::WriteRequest {
        timeseries: vec![pb::TimeSeries {
            labels: vec![pb::Label {
                name: "__name__".into(),
                value: "rw_hist".into(),
            }],
            histograms: sent.iter().map(|(t, h)| pb_hist(*t, h)).collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let body = strata_proto::encode_write_request(&req);
    let (status, text) = post(
        &format!("{}/api/v1/write", prom.url()),
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ],
        &body,
    )
    .unwrap();
    assert!(status < 300, "remote write: {status} {text}");
    let blocks = poll(
        "Prometheus to compact a block",
        Duration::from_secs(120),
        || {
            let b = blocks_in(&data);
            (!b.is_empty()).then_some(b)
        },
    );
    let blk = Block::open(&blocks[0]).unwrap();
    let (mint, maxt) = (blk.meta().min_time, blk.meta().max_time);
    assert_eq!(mint, t0);
    let mut got = Vec::new();
    let mut chunks = 0;
    for s in blk.select(&[], i64::MIN, i64::MAX).unwrap() {
        let s = s.unwrap();
        assert_eq!(s.labels.get("__name__"), Some("rw_hist"));
        got.extend(blk.histograms(&s, i64::MIN, i64::MAX).unwrap());
        for cm in &s.chunks {
            let (enc, theirs) = blk.chunks().chunk(cm.chunk_ref).unwrap();
            assert_eq!(enc, Encoding::Histogram);
            // our appender, fed the chunk's samples, writes the same bytes (2.42's bit
            // writer may leave one extra zero byte after a byte-aligned last write)
            let mut ours = HistogramChunk::new();
            let mut it = HistogramIter::new(theirs);
            let mut h = Histogram::default();
            while let Some(t) = it.next_into(&mut h) {
                ours.append(None, t, &h);
            }
            assert!(it.err().is_none(), "{:?}", it.err());
            ours.set_counter_reset_header(CounterResetHeader::of(theirs));
            let ob = ours.bytes();
            assert!(
                theirs == ob
                    || (theirs.len() == ob.len() + 1
                        && theirs[..ob.len()] == *ob
                        && theirs[ob.len()] == 0),
                "chunk {chunks} differs:\n theirs {theirs:?}\n ours   {ob:?}"
            );
            chunks += 1;
        }
    }
    assert!(chunks >= 2, "{chunks} chunks");
    let want: Vec<_> = sent
        .iter()
        .filter(|(t, _)| *t >= mint && *t < maxt)
        .collect();
    assert_eq!(got.len(), want.len());
    for ((gt, gh), (wt, wh)) in got.iter().zip(want) {
        assert_eq!(gt, wt);
        // a re-coded chunk lists new (empty) buckets in earlier samples too
        let w = wh.to_float();
        assert_eq!(
            (gh.schema, gh.count, gh.sum, gh.zero_count),
            (w.schema, w.count, w.sum, w.zero_count),
            "at {gt}"
        );
        assert_eq!(
            nonzero(&gh.positive_spans, &gh.positive_buckets),
            nonzero(&w.positive_spans, &w.positive_buckets),
            "at {gt}"
        );
        assert_eq!(
            nonzero(&gh.negative_spans, &gh.negative_buckets),
            nonzero(&w.negative_spans, &w.negative_buckets),
            "at {gt}"
        );
    }
    drop(prom);
}
