//! The targets: one per decoder of untrusted bytes, each with seeds made by the real
//! encoders and a dictionary of the format's tokens.

use std::path::Path;

use bytes::Bytes;
use prost::Message;
use strata_promql::testing::MemStorage;
use strata_promql::{Engine, EngineOptions};
use strata_proto::prometheus::{
    Label, LabelMatcher, Query, ReadRequest, Sample, TimeSeries, WriteRequest,
};
use strata_tsdb::chunkenc::{Encoding, XorChunk, XorIter};
use strata_tsdb::chunks::{parse_chunk, ParsedChunk};
use strata_tsdb::downsample::{AggrChunk, AggrType};
use strata_tsdb::index::{ChunkMeta, IndexReader, IndexWriter};
use strata_tsdb::labels::{Interner, Labels};
use strata_tsdb::meta::BlockMeta;
use strata_tsdb::wal::{Record, RecordKind, RecordOwned};

use crate::{error_signal, ok_signal, Target};

/// Decoded remote write bodies are refused past this (the ingester's default is larger;
/// a small limit keeps fuzzing fast and still exercises the check).
const MAX_DECODED: usize = 1 << 20;

pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "remote_write_v1",
            run: remote_write_v1,
            seeds: seeds_rw1,
            dict: &[b"\x0a", b"\x12", b"\x1a", b"__name__", b"\x09", b"\x10"],
            max_len: 1 << 14,
        },
        Target {
            name: "remote_write_v1_proto",
            run: remote_write_v1_proto,
            seeds: seeds_rw1_raw,
            dict: &[
                b"\x0a",
                b"\x12",
                b"\x1a",
                b"\x22",
                b"__name__",
                b"\x09",
                b"\x10",
            ],
            max_len: 1 << 14,
        },
        Target {
            name: "remote_write_v2_proto",
            run: remote_write_v2_proto,
            seeds: seeds_rw2_raw,
            dict: &[
                b"\x0a", b"\x12", b"\x1a", b"\x22", b"\x2a", b"\x32", b"\x09", b"\x10",
            ],
            max_len: 1 << 14,
        },
        Target {
            name: "remote_read",
            run: remote_read,
            seeds: seeds_read,
            dict: &[b"\x0a", b"\x12", b"\x1a", b"\x08", b"\x10"],
            max_len: 1 << 12,
        },
        Target {
            name: "promql",
            run: promql,
            seeds: seeds_promql,
            dict: PROMQL_DICT,
            max_len: 512,
        },
        Target {
            name: "index",
            run: index,
            seeds: seeds_index,
            dict: &[b"\xba\xaa\xd7\x00", b"\x02", b"\x00\x00\x00\x00"],
            max_len: 1 << 14,
        },
        Target {
            name: "chunk",
            run: chunk,
            seeds: seeds_chunk,
            dict: &[b"\x01", b"\xff", b"\x00\x78", b"\x00\x00"],
            max_len: 1 << 12,
        },
        Target {
            name: "chunk_segment",
            run: chunk_segment,
            seeds: seeds_chunk_segment,
            dict: &[b"\x85\xbd\x40\xdd", b"\x01", b"\x7f"],
            max_len: 1 << 13,
        },
        Target {
            name: "wal_record",
            run: wal_record,
            seeds: seeds_wal_record,
            dict: &[b"\x01", b"\x02", b"__name__"],
            max_len: 1 << 12,
        },
        Target {
            name: "histogram_chunk",
            run: histogram_chunk,
            seeds: seeds_histogram_chunk,
            dict: &[
                b"\x02",
                b"\x03",
                b"\x00\x03",
                b"\xff\xc0",
                b"\x00\x00\x00\x00",
            ],
            max_len: 1 << 12,
        },
        Target {
            name: "otlp",
            run: otlp,
            seeds: seeds_otlp,
            dict: &[
                b"\"dataPoints\"",
                b"\"exponentialHistogram\"",
                b"\"histogram\"",
                b"\"bucketCounts\"",
                b"\"explicitBounds\"",
                b"\"scale\"",
                b"\"offset\"",
                b"\"aggregationTemporality\"",
                b"\"attributes\"",
                b"\"timeUnixNano\"",
                b"\"-1\"",
                b"1e400",
                b"\x0a",
                b"\x12",
                b"\x1a",
            ],
            // Output grows with the product of the input's parts (scope attributes are
            // copied onto every point's series), so grown inputs made the encode and
            // read-back of the translation dominate: at 4 KiB the rate fell from
            // ≈ 7,600 to ≈ 100 inputs/s. 1 KiB still holds several resources, metrics
            // of every type, points and buckets.
            max_len: 1 << 10,
        },
        Target {
            name: "wal_segment",
            run: wal_segment,
            seeds: seeds_wal_segment,
            dict: &[b"\x01", b"\x02", b"\x40", b"\x00\x00\x00\x00", b"__name__"],
            max_len: 1 << 12,
        },
        Target {
            name: "store_frame",
            run: store_frame,
            seeds: seeds_store_frame,
            dict: &[b"\x0a", b"\x12", b"\x1a", b"\x08\x01", b"\x08\x02", b"\x22"],
            max_len: 1 << 12,
        },
        Target {
            name: "meta_json",
            run: meta_json,
            seeds: seeds_meta,
            dict: &[
                b"\"ulid\"",
                b"\"minTime\"",
                b"\"maxTime\"",
                b"\"compaction\"",
                b"\"sources\"",
                b"\"thanos\"",
                b"\"downsample\"",
                b"\"resolution\"",
                b"\"version\"",
                b"{",
                b"}",
                b"[",
                b"]",
                b"-9223372036854775808",
                b"1e400",
                b"null",
            ],
            max_len: 4096,
        },
    ]
}

fn sig<T, E: std::fmt::Display>(r: Result<T, E>, ok: impl FnOnce(T) -> u64) -> u64 {
    match r {
        Ok(v) => ok(v),
        Err(e) => error_signal(&e),
    }
}

// --- remote write / read -----------------------------------------------------------

fn sample_request() -> WriteRequest {
    let ts = |name: &str, job: &str, vals: &[(i64, f64)]| TimeSeries {
        labels: vec![
            Label {
                name: "__name__".into(),
                value: name.into(),
            },
            Label {
                name: "job".into(),
                value: job.into(),
            },
        ],
        samples: vals
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    };
    WriteRequest {
        timeseries: vec![
            ts("up", "node", &[(1000, 1.0), (16000, 0.0)]),
            ts("http_requests_total", "api", &[(1000, 5.0)]),
        ],
        ..Default::default()
    }
}

/// A snappy body through the ingester's path: bounded decompression, then the
/// borrowing decoder (falling back to prost where it does), then every series read.
fn remote_write_v1(data: &[u8]) -> u64 {
    let mut buf = Vec::new();
    if let Err(e) = strata_proto::decompress_snappy_into(data, MAX_DECODED, &mut buf) {
        return error_signal(&e);
    }
    remote_write_v1_proto(&buf)
}

fn remote_write_v1_proto(raw: &[u8]) -> u64 {
    match strata_proto::decode_write_request_ref(raw) {
        Ok(req) => {
            let mut n = 0u64;
            for (labels, samples) in req.iter() {
                n += labels.len() as u64 + samples.len() as u64;
            }
            ok_signal(&[1, req.len().min(4) as u64, n.min(8)])
        }
        Err(e) => {
            // the ingester asks prost when the fast decoder declines
            let p = WriteRequest::decode(raw);
            error_signal(&e) ^ u64::from(p.is_ok())
        }
    }
}

fn seeds_rw1_raw() -> Vec<Vec<u8>> {
    vec![sample_request().encode_to_vec(), Vec::new()]
}

fn seeds_rw1() -> Vec<Vec<u8>> {
    vec![strata_proto::encode_write_request(&sample_request())]
}

fn remote_write_v2_proto(raw: &[u8]) -> u64 {
    sig(strata_proto::decode_write_v2_ref(raw), |(req, extras)| {
        let mut n = 0u64;
        for (labels, samples) in req.iter() {
            n += labels.len() as u64 + samples.len() as u64;
        }
        ok_signal(&[
            2,
            req.len().min(4) as u64,
            n.min(8),
            extras.exemplars.min(3) as u64,
        ])
    })
}

fn seeds_rw2_raw() -> Vec<Vec<u8>> {
    vec![strata_proto::write_request_to_v2(&sample_request()).encode_to_vec()]
}

fn remote_read(data: &[u8]) -> u64 {
    sig(
        strata_proto::decode_snappy_message::<ReadRequest>(data, MAX_DECODED),
        |r| ok_signal(&[3, r.queries.len().min(4) as u64]),
    )
}

fn seeds_read() -> Vec<Vec<u8>> {
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: 60_000,
            matchers: vec![LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: "up".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![1],
    };
    vec![strata_proto::encode_snappy_message(&req)]
}

// --- PromQL ------------------------------------------------------------------------

const PROMQL_DICT: &[&[u8]] = &[
    b"sum",
    b"rate(",
    b"by (job)",
    b"without",
    b"[5m]",
    b"[1h:1m]",
    b"offset 1m",
    b"@ 100",
    b"topk(",
    b"histogram_quantile(",
    b"label_replace(",
    b"count_values(",
    b"quantile_over_time(",
    b"{job=~\"a.*\"}",
    b"{__name__=~\".+\"}",
    b" and ",
    b" or ",
    b" unless ",
    b" on(job) ",
    b" group_left ",
    b"==bool",
    b"^",
    b"%",
    b"atan2",
    b"-",
    b"(",
    b")",
    b"1e308",
    b"NaN",
    b"Inf",
    b"\"",
    b"`",
    b",",
];

fn seeds_promql() -> Vec<Vec<u8>> {
    [
        "up",
        "sum by (job) (rate(http_requests_total[5m]))",
        "topk(2, up) or vector(1)",
        "histogram_quantile(0.9, sum by (le) (rate(req_bucket[5m])))",
        "label_replace(up, \"x\", \"$1\", \"job\", \"(.*)\")",
        "max_over_time(up[10m:1m]) offset 1m",
        "count_values(\"v\", up)",
        "up == bool 1",
        "-up ^ 2 % 3",
        "sort_desc(quantile(0.5, up))",
        "absent(nope{job=\"x\"})",
        "predict_linear(up[5m], 60)",
        "time() - timestamp(up)",
        "up @ 100",
        "sum(up) / on() group_left count(up)",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn promql_storage() -> &'static (MemStorage, Engine) {
    static S: std::sync::OnceLock<(MemStorage, Engine)> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let st = MemStorage::new();
        for (name, job, k) in [
            ("up", "node", 1.0),
            ("up", "api", 0.0),
            ("http_requests_total", "api", 3.0),
        ] {
            st.add(
                Labels::from_pairs([("__name__", name), ("job", job)]),
                (0..40).map(|i| (i * 15_000, k * i as f64)),
            );
        }
        for le in ["0.1", "1", "+Inf"] {
            st.add(
                Labels::from_pairs([("__name__", "req_bucket"), ("le", le)]),
                (0..40).map(|i| (i * 15_000, i as f64)),
            );
        }
        let engine = Engine::new(EngineOptions {
            max_samples: 100_000,
            timeout: std::time::Duration::from_millis(200),
            max_depth: 64,
            ..EngineOptions::default()
        });
        (st, engine)
    })
}

/// Parse and evaluate, instant and range, over a small storage. Must run on a thread
/// with [`EngineOptions::stack_size`] of stack (the fuzzer's threads have it).
fn promql(data: &[u8]) -> u64 {
    let Ok(q) = std::str::from_utf8(data) else {
        return 2;
    };
    let (st, engine) = promql_storage();
    let a = engine.instant(st, q, 300_000);
    let b = engine.range(st, q, 0, 600_000, 60_000);
    let shape = |r: &Result<strata_promql::QueryResult, strata_promql::QueryError>| match r {
        Ok(v) => ok_signal(&[v.value.result_type().len() as u64]),
        Err(e) => error_signal(e),
    };
    shape(&a).rotate_left(1) ^ shape(&b)
}

// --- blocks ------------------------------------------------------------------------

fn index(data: &[u8]) -> u64 {
    let r = match IndexReader::new(Bytes::copy_from_slice(data), "index") {
        Ok(r) => r,
        Err(e) => return error_signal(&e),
    };
    let mut steps = 0u64;
    let walk = || -> strata_tsdb::Result<u64> {
        for s in r.symbols().take(64) {
            s?;
        }
        let names: Vec<String> = r
            .label_names()
            .iter()
            .take(16)
            .map(|s| s.to_string())
            .collect();
        let mut n = 0u64;
        for name in &names {
            for v in r.label_values(name)?.iter().take(16) {
                for p in r.postings(name, v)?.into_iter().take(16) {
                    let (labels, chunks) = r.series(p)?;
                    n += labels.len() as u64 + chunks.len() as u64;
                }
            }
        }
        r.all_postings()?;
        Ok(n)
    };
    match walk() {
        Ok(n) => {
            steps += n.min(16);
            ok_signal(&[4, steps])
        }
        Err(e) => error_signal(&e) ^ 4,
    }
}

fn seeds_index() -> Vec<Vec<u8>> {
    let series = [
        Labels::from_pairs([("__name__", "up"), ("job", "api")]),
        Labels::from_pairs([("__name__", "up"), ("job", "node")]),
    ];
    let mut syms: Vec<String> = series
        .iter()
        .flat_map(|l| {
            l.iter()
                .flat_map(|x| [x.name.to_string(), x.value.to_string()])
        })
        .collect();
    syms.sort_unstable();
    syms.dedup();
    let mut w = IndexWriter::new(Vec::new(), "index", syms).expect("index writer");
    for (i, l) in series.iter().enumerate() {
        w.add_series(l, &[ChunkMeta::new(0, 1000, 8 + i as u64 * 100)])
            .expect("add series");
    }
    vec![w.finish().expect("finish index")]
}

/// Chunk data as stored in a block: first byte the encoding, then the data.
fn chunk(data: &[u8]) -> u64 {
    let Some((&e, body)) = data.split_first() else {
        return 3;
    };
    match Encoding::from_u8(e) {
        Some(Encoding::Xor) | None => {
            let mut it = XorIter::new(body);
            let mut n = 0u64;
            for _ in it.by_ref() {
                n += 1;
            }
            match it.err() {
                Some(e) => error_signal(&e),
                None => ok_signal(&[5, n.min(130)]),
            }
        }
        Some(Encoding::Aggr) => sig(AggrChunk::new(body), |c| {
            let mut n = 0;
            for t in [
                AggrType::Count,
                AggrType::Sum,
                AggrType::Min,
                AggrType::Max,
                AggrType::Counter,
            ] {
                match c.samples(t) {
                    Ok(v) => n += v.len(),
                    Err(e) => return error_signal(&e),
                }
            }
            ok_signal(&[6, n.min(130) as u64])
        }),
        Some(other) => ok_signal(&[7, other as u64]),
    }
}

fn seeds_chunk() -> Vec<Vec<u8>> {
    let mut c = XorChunk::new();
    for i in 0..130 {
        c.append(i * 15_000 + (i % 3), (i as f64).sin() * 100.0);
    }
    let mut xor = vec![Encoding::Xor as u8];
    xor.extend_from_slice(c.bytes());
    let aggr_body =
        strata_tsdb::downsample::encode_aggr([Some(&c), Some(&c), None, Some(&c), Some(&c)]);
    let mut aggr = vec![Encoding::Aggr as u8];
    aggr.extend_from_slice(&aggr_body);
    vec![xor, aggr]
}

/// A chunk segment file's bytes after its header: chunks parsed one after another.
fn chunk_segment(data: &[u8]) -> u64 {
    let mut off = 0usize;
    let mut n = 0u64;
    while off < data.len() && n < 64 {
        match parse_chunk(&data[off..], Path::new("000001"), off as u64) {
            Ok(ParsedChunk::Chunk(enc, range)) => {
                n += 1;
                let mut c = vec![enc as u8];
                c.extend_from_slice(&data[off..][range.clone()]);
                chunk(&c);
                off += range.end + 4;
            }
            Ok(ParsedChunk::Needs(k)) => return ok_signal(&[8, n.min(4), k.min(32)]),
            Err(e) => return error_signal(&e),
        }
    }
    ok_signal(&[8, n.min(4)])
}

fn seeds_chunk_segment() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for c in seeds_chunk() {
        let body = &c[..];
        prost::encoding::encode_varint((body.len() - 1) as u64, &mut out);
        out.extend_from_slice(body);
        out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    }
    vec![out]
}

fn wal_record(data: &[u8]) -> u64 {
    let Some((&k, payload)) = data.split_first() else {
        return 9;
    };
    let Some(kind) = RecordKind::from_u8(k) else {
        return 10;
    };
    let mut interner = Interner::new();
    sig(RecordOwned::decode(kind, payload, &mut interner), |r| {
        let mut again = Vec::new();
        r.encode(&mut again);
        // what decodes must encode back to the same record
        // (compared as bytes: NaN values make the records themselves unequal)
        let back =
            RecordOwned::decode(kind, &again, &mut interner).expect("re-encoded record decodes");
        let mut twice = Vec::new();
        back.encode(&mut twice);
        assert_eq!(
            twice, again,
            "record changed by an encode/decode round trip"
        );
        ok_signal(&[11, k as u64])
    })
}

fn seeds_wal_record() -> Vec<Vec<u8>> {
    let l = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
    let mut series = vec![RecordKind::Series as u8];
    Record::Series {
        entries: &[(1, &l), (7, &l)],
    }
    .encode(&mut series);
    let mut samples = vec![RecordKind::Samples as u8];
    Record::Samples {
        entries: &[(1, 1000, 1.5), (7, 2000, f64::NAN), (1, -5, 0.0)],
    }
    .encode(&mut samples);
    vec![series, samples]
}

fn meta_json(data: &[u8]) -> u64 {
    sig(BlockMeta::from_json(data, Path::new("meta.json")), |m| {
        ok_signal(&[12, m.compaction.level as u64, m.resolution().min(3) as u64])
    })
}

fn seeds_meta() -> Vec<Vec<u8>> {
    let m = BlockMeta::new(ulid::Ulid::from_parts(1_700_000_000_000, 42), 0, 7_200_000);
    vec![m.to_json()]
}

// --- native histograms, OTLP, WAL segments, Store API frames -------------------------

/// Prometheus's own bytes for an integer and a float histogram chunk (the tsdb tests
/// check ours equal them).
const HISTOGRAM_CHUNK: &[u8] = &[
    0, 3, 0, 116, 70, 71, 143, 162, 177, 64, 50, 102, 102, 102, 102, 102, 102, 140, 188, 125, 19,
    142, 204, 241, 153, 153, 153, 153, 153, 156, 72, 223, 73, 62, 52, 64,
];
const HISTOGRAM_CHUNK_NEG: &[u8] = &[
    0, 3, 0, 0, 156, 99, 104, 199, 11, 252, 0, 3, 23, 159, 202, 208, 1, 54, 0, 32, 0, 0, 0, 0, 0,
    4, 101, 240, 117, 49, 38, 176, 184, 146, 142, 19, 127, 246, 136,
];
const FLOAT_HISTOGRAM_CHUNK: &[u8] = &[
    0, 3, 0, 116, 70, 71, 143, 161, 0, 80, 0, 0, 0, 0, 0, 0, 255, 192, 0, 0, 0, 0, 0, 1, 0, 201,
    153, 153, 153, 153, 153, 152, 255, 192, 0, 0, 0, 0, 0, 1, 0, 32, 0, 0, 0, 0, 0, 3, 199, 209,
    168, 77, 194, 95, 255, 217, 158, 51, 51, 51, 51, 51, 51, 194, 95, 255, 214, 22, 137, 164, 159,
    30, 192, 114,
];

/// A native histogram chunk: first byte the encoding (2 integer, 3 float), then the
/// data, decoded by both read paths (the iterators and `decode_chunk_float`).
pub(crate) fn histogram_chunk(data: &[u8]) -> u64 {
    use strata_tsdb::histogram::{decode_chunk_float, FloatHistogramIter, HistogramIter};
    let Some((&e, body)) = data.split_first() else {
        return 13;
    };
    let enc = if e & 1 == 0 {
        Encoding::Histogram
    } else {
        Encoding::FloatHistogram
    };
    let n = match enc {
        Encoding::Histogram => {
            let mut it = HistogramIter::new(body);
            let n = it.by_ref().count();
            if let Some(e) = it.err() {
                return error_signal(e);
            }
            n
        }
        _ => {
            let mut it = FloatHistogramIter::new(body);
            let n = it.by_ref().count();
            if let Some(e) = it.err() {
                return error_signal(e);
            }
            n
        }
    };
    let mut out = Vec::new();
    sig(decode_chunk_float(enc, body, &mut out), |()| {
        ok_signal(&[14, enc as u64, n.min(130) as u64, out.len().min(130) as u64])
    })
}

fn seeds_histogram_chunk() -> Vec<Vec<u8>> {
    let with = |e: Encoding, b: &[u8]| [&[e as u8][..], b].concat();
    vec![
        with(Encoding::Histogram, HISTOGRAM_CHUNK),
        with(Encoding::Histogram, HISTOGRAM_CHUNK_NEG),
        with(Encoding::FloatHistogram, FLOAT_HISTOGRAM_CHUNK),
    ]
}

/// An OTLP metrics body (protobuf, or JSON when it starts with `{`), decoded and
/// translated with Prometheus's rules as `/otlp/v1/metrics` does.
fn otlp(data: &[u8]) -> u64 {
    use strata_ingester::otlp::{json, translate};
    let req = if data.first() == Some(&b'{') {
        json::decode(data)
    } else {
        strata_proto::otlp::collector::ExportMetricsServiceRequest::decode(data)
            .map_err(|e| e.to_string())
    };
    sig(req, |req| {
        let settings = translate::Settings {
            promote_resource_attributes: vec!["service.name".into(), "host.name".into()],
            keep_identifying_resource_attributes: true,
            promote_scope_metadata: true,
        };
        let t = translate::translate(&req, &settings);
        // what the translation makes must be a remote write body the push path reads
        // back whole (`/otlp/v1/metrics` hands it to `ingest_v1_raw`, which decodes it
        // with the borrowed decoder; prost's owned decode cost most of this target)
        let raw = t.request.encode_to_vec();
        let back =
            strata_proto::decode_write_request_ref(&raw).expect("translated request decodes");
        assert_eq!(
            back.len(),
            t.request.timeseries.len(),
            "series lost in the round trip"
        );
        ok_signal(&[
            15,
            t.request.timeseries.len().min(16) as u64,
            t.rejected.min(16),
            t.errors.len() as u64,
        ])
    })
}

const OTLP_JSON: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}},{"key":"service.instance.id","value":{"stringValue":"i-1"}},{"key":"host.name","value":{"stringValue":"h"}}]},
"scopeMetrics":[{"scope":{"name":"lib","version":"1.0"},"metrics":[
{"name":"rpc.latency","unit":"s","summary":{"dataPoints":[{"timeUnixNano":"1700000000000000000","count":"4","sum":2.0,"quantileValues":[{"quantile":0.5,"value":0.4}],"attributes":[{"key":"0rpc","value":{"stringValue":"x"}}]}]}},
{"name":"bytes.sent","unit":"By","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"startTimeUnixNano":"1690000000000000000","timeUnixNano":"1700000000000000000","asInt":"1024"}]}},
{"name":"jobs.done","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"timeUnixNano":"1700000000000000000","asInt":"1"}]}},
{"name":"temp","unit":"Cel","gauge":{"dataPoints":[{"timeUnixNano":"1700000000000000000","asDouble":21.5,"flags":1}]}},
{"name":"latency","unit":"ms","histogram":{"aggregationTemporality":2,"dataPoints":[{"timeUnixNano":"1700000000000000000","count":"3","sum":6.0,"bucketCounts":["1","1","1"],"explicitBounds":[1.0,5.0]}]}},
{"name":"size","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[{"timeUnixNano":"1700000000000000000","count":"3","sum":6.0,"scale":0,"zeroCount":"1","positive":{"offset":0,"bucketCounts":["1","1"]},"negative":{"offset":-2,"bucketCounts":["0"]}}]}}
]}]}]}"#;

fn seeds_otlp() -> Vec<Vec<u8>> {
    let req = strata_ingester::otlp::json::decode(OTLP_JSON.as_bytes()).expect("seed decodes");
    vec![OTLP_JSON.as_bytes().to_vec(), req.encode_to_vec()]
}

thread_local! {
    static WAL_DIR: tempfile::TempDir = tempfile::tempdir().expect("temporary WAL directory");
}

/// A whole WAL segment file replayed from disk (frames, compression, checksums, torn
/// tails); a second replay after any repair must read the same records cleanly.
fn wal_segment(data: &[u8]) -> u64 {
    use strata_tsdb::wal::replay;
    WAL_DIR.with(|d| {
        // one segment file, rewritten for each input (replay never adds files)
        let dir = d.path().to_path_buf();
        std::fs::write(dir.join("00000000"), data).expect("write segment");
        let mut interner = Interner::new();
        sig(replay(&dir, &mut interner, |_| Ok(())), |first| {
            let again = replay(&dir, &mut interner, |_| Ok(()))
                .expect("a replayed (and repaired) WAL replays again");
            assert_eq!(
                again.records, first.records,
                "a second replay reads other records"
            );
            ok_signal(&[
                16,
                first.records.min(8),
                first.truncated.is_some() as u64,
                first.skipped_unknown_version.min(2),
                first.skipped_unknown_kind.min(2),
            ])
        })
    })
}

fn seeds_wal_segment() -> Vec<Vec<u8>> {
    use strata_tsdb::wal::{Wal, WalCompression, WalOptions};
    let l = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
    let mut out = Vec::new();
    for compression in [
        WalCompression::None,
        WalCompression::Snappy,
        WalCompression::Zstd,
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = WalOptions {
            compression,
            ..WalOptions::default()
        };
        let mut w = Wal::open(tmp.path(), opts).expect("open WAL");
        w.log(&Record::Series {
            entries: &[(1, &l), (7, &l)],
        })
        .expect("log series");
        w.log(&Record::Samples {
            entries: &[(1, 1000, 1.5), (7, 2000, 2.5), (1, 3000, 0.0)],
        })
        .expect("log samples");
        drop(w);
        for e in std::fs::read_dir(tmp.path()).expect("read WAL dir") {
            let p = e.expect("entry").path();
            if p.is_file() {
                let b = std::fs::read(&p).expect("read segment");
                if !b.is_empty() {
                    out.push(b);
                }
            }
        }
    }
    out
}

/// A Store API `SeriesResponse` frame as a querier receives it: protobuf, then each
/// chunk by its Thanos encoding number (XOR 0, histogram 1, float histogram 2) and the
/// downsampled aggregates as XOR.
fn store_frame(data: &[u8]) -> u64 {
    use strata_proto::store::{series_response, SeriesResponse};
    sig(SeriesResponse::decode(data), |r| match r.result {
        Some(series_response::Result::Series(s)) => {
            let _ = Labels::from_pairs(s.labels.iter().map(|l| (&l.name, &l.value)));
            let mut sigs = vec![17, s.chunks.len().min(4) as u64];
            for c in s.chunks.iter().take(8) {
                let parts = [&c.raw, &c.count, &c.sum, &c.min, &c.max, &c.counter];
                for (i, part) in parts.into_iter().enumerate() {
                    let Some(p) = part else { continue };
                    let enc = match (i, p.r#type) {
                        (0, 1) => Encoding::Histogram,
                        (0, 2) => Encoding::FloatHistogram,
                        _ => Encoding::Xor,
                    };
                    let mut framed = vec![enc as u8];
                    framed.extend_from_slice(&p.data);
                    sigs.push(
                        match enc {
                            Encoding::Xor => chunk(&framed),
                            _ => histogram_chunk(&framed),
                        } & 0xff,
                    );
                }
            }
            ok_signal(&sigs)
        }
        Some(series_response::Result::Warning(_)) => 18,
        Some(series_response::Result::Hints(_)) => 19,
        None => 20,
    })
}

fn seeds_store_frame() -> Vec<Vec<u8>> {
    use strata_proto::store::{chunk, series_response, AggrChunk, Chunk, Series, SeriesResponse};
    let raw = |t: chunk::Encoding, data: &[u8]| Chunk {
        r#type: t as i32,
        data: Bytes::copy_from_slice(data),
        hash: 0,
    };
    let xor = seeds_chunk().remove(0);
    let series = Series {
        labels: vec![Label {
            name: "__name__".into(),
            value: "up".into(),
        }],
        chunks: vec![
            AggrChunk {
                min_time: 0,
                max_time: 1_935_000,
                raw: Some(raw(chunk::Encoding::Xor, &xor[1..])),
                ..Default::default()
            },
            AggrChunk {
                min_time: 1000,
                max_time: 3000,
                raw: Some(raw(chunk::Encoding::Histogram, HISTOGRAM_CHUNK)),
                ..Default::default()
            },
            AggrChunk {
                min_time: 1000,
                max_time: 3000,
                raw: Some(raw(chunk::Encoding::FloatHistogram, FLOAT_HISTOGRAM_CHUNK)),
                count: Some(raw(chunk::Encoding::Xor, &xor[1..])),
                ..Default::default()
            },
        ],
    };
    let r = SeriesResponse {
        result: Some(series_response::Result::Series(series)),
    };
    vec![r.encode_to_vec()]
}
