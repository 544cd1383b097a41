//! Remote read: a real Prometheus 2.42 with Strata as its `remote_read` endpoint answers
//! queries from data only Strata holds (its own config, nothing else changed), over
//! instant and range queries, with Strata's HA dedup applied; bad requests get a 400
//! naming what was wrong.

use strata_proto::prometheus::{
    label_matcher, read_request, ChunkedReadResponse, LabelMatcher, Query, ReadRequest,
};
use strata_proto::Message;
use strata_testkit::http::{encode, get_json, post, post_bytes};
use strata_testkit::procs::Prometheus;
use strata_testkit::strata::{series, write_request, StrataProc};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn prometheus_reads_strata_through_remote_read() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &["--tsdb.ship-interval=1h", "--query.replica-label=replica"],
    );
    // Ten minutes of an HA pair's samples that only Strata has.
    let t0 = (now_ms() - 15 * 60_000) / 1000 * 1000;
    let pts: Vec<(i64, f64)> = (0..40).map(|i| (t0 + i * 15_000, i as f64)).collect();
    let req = write_request(vec![
        series(
            &[
                ("__name__", "legacy_jobs_total"),
                ("queue", "a"),
                ("replica", "r1"),
            ],
            &pts,
        ),
        series(
            &[
                ("__name__", "legacy_jobs_total"),
                ("queue", "a"),
                ("replica", "r2"),
            ],
            &pts,
        ),
        series(
            &[("__name__", "legacy_jobs_total"), ("queue", "b")],
            &pts[..10],
        ),
    ]);
    assert_eq!(strata.push(None, &req).0, 200);

    let cfg = format!(
        "global:\n  scrape_interval: 1h\nremote_read:\n  - url: {}/api/v1/read\n    read_recent: true\n",
        strata.url()
    );
    let prom = Prometheus::start(&tmp.path().join("prom"), &cfg, &[]);

    // Instant: both queues, the pair deduplicated to one series without `replica`.
    let at = (t0 + 39 * 15_000) as f64 / 1000.0;
    let v = get_json(&format!(
        "{}/api/v1/query?query={}&time={at}",
        prom.url(),
        encode("legacy_jobs_total")
    ));
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "queue b ended long before: {v}");
    assert_eq!(result[0]["metric"]["queue"], "a", "{v}");
    assert!(result[0]["metric"].get("replica").is_none(), "{v}");
    assert_eq!(result[0]["value"][1], "39", "{v}");

    // Range: every sample of queue b, computed by Prometheus's engine over Strata's data.
    let v = get_json(&format!(
        "{}/api/v1/query_range?query={}&start={}&end={at}&step=15",
        prom.url(),
        encode("legacy_jobs_total{queue=\"b\"} * 2"),
        t0 / 1000
    ));
    let values = v["data"]["result"][0]["values"].as_array().unwrap().clone();
    assert!(values.len() >= 10, "{v}");
    assert_eq!(values[9][1], "18", "{v}");

    // A client preferring streamed chunks (Prometheus 3, Thanos) gets them: frames of
    // XOR chunks, CRC-checked, holding the same deduplicated samples.
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: t0,
            end_timestamp_ms: t0 + 40 * 15_000,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Eq as i32,
                name: "__name__".into(),
                value: "legacy_jobs_total".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![
            read_request::ResponseType::StreamedXorChunks as i32,
            read_request::ResponseType::Samples as i32,
        ],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let (code, ct, bytes) = post_bytes(
        &format!("{}/api/v1/read", strata.url()),
        &[("Content-Encoding", "snappy")],
        &body,
    )
    .unwrap();
    assert_eq!(code, 200);
    let resp = (ct, bytes);
    assert!(
        resp.0
            .starts_with("application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"),
        "{}",
        resp.0
    );
    let mut buf = &resp.1[..];
    type Series = (Vec<(String, String)>, Vec<(i64, f64)>);
    let mut got: Vec<Series> = Vec::new();
    while !buf.is_empty() {
        let (mut len, mut i) = (0usize, 0usize);
        loop {
            let b = buf[i];
            len |= usize::from(b & 0x7f) << (7 * i);
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let crc = u32::from_be_bytes(buf[i..i + 4].try_into().unwrap());
        let msg = &buf[i + 4..i + 4 + len];
        assert_eq!(crc32c::crc32c(msg), crc, "frame checksum");
        let frame = ChunkedReadResponse::decode(msg).unwrap();
        assert_eq!(frame.query_index, 0);
        for s in frame.chunked_series {
            let labels = s
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            let mut samples = Vec::new();
            for c in &s.chunks {
                samples.extend(strata_tsdb::chunkenc::XorIter::new(&c.data));
            }
            got.push((labels, samples));
        }
        buf = &buf[i + 4 + len..];
    }
    let want_a: Vec<(i64, f64)> = pts.clone();
    assert_eq!(got.len(), 2, "queue a (deduplicated) and queue b: {got:?}");
    let a = got
        .iter()
        .find(|(l, _)| l.contains(&("queue".into(), "a".into())))
        .unwrap();
    assert!(!a.0.iter().any(|(n, _)| n == "replica"), "{:?}", a.0);
    assert_eq!(a.1, want_a);
    let b = got
        .iter()
        .find(|(l, _)| l.contains(&("queue".into(), "b".into())))
        .unwrap();
    assert_eq!(b.1, pts[..10].to_vec());

    // Bad requests say what was wrong.
    let url = format!("{}/api/v1/read", strata.url());
    let (code, body) = post(&url, &[("Content-Encoding", "snappy")], b"not snappy").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("snappy"), "{body}");
    let (code, body) = post(
        &url,
        &[],
        &snap::raw::Encoder::new()
            .compress_vec(b"\xff\xff\xff")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("read request"), "{body}");
}

/// Over `--storage.remote.read-sample-limit` Prometheus gets its own error text from
/// Strata (and shows it to its user); within it the same query answers.
#[test]
fn prometheus_sees_the_remote_read_sample_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1h",
            "--storage.remote.read-sample-limit=30",
        ],
    );
    let t0 = (now_ms() - 15 * 60_000) / 1000 * 1000;
    let pts: Vec<(i64, f64)> = (0..40).map(|i| (t0 + i * 15_000, i as f64)).collect();
    let req = write_request(vec![
        series(&[("__name__", "limited"), ("i", "1")], &pts),
        series(&[("__name__", "limited"), ("i", "2")], &pts[..20]),
    ]);
    assert_eq!(strata.push(None, &req).0, 200);
    let cfg = format!(
        "global:\n  scrape_interval: 1h\nremote_read:\n  - url: {}/api/v1/read\n    read_recent: true\n",
        strata.url()
    );
    let prom = Prometheus::start(&tmp.path().join("prom"), &cfg, &[]);
    let at = (t0 + 39 * 15_000) as f64 / 1000.0;
    let range = |sel: &str| {
        let url = format!(
            "{}/api/v1/query?query={}&time={at}",
            prom.url(),
            encode(&format!("count_over_time({sel}[15m])"))
        );
        strata_testkit::http::get(&url).unwrap()
    };
    // 60 samples in the range: refused, whichever way Prometheus reports it.
    let (_, body) = range("limited");
    assert!(body.contains("exceeded sample limit (30)"), "{body}");
    // 20 samples: answered.
    let (code, body) = range("limited{i=\"2\"}");
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("exceeded"), "{body}");
    assert!(body.contains("\"20\""), "{body}");
}

/// `VmRSS` or `VmHWM` of `pid` in bytes.
fn proc_bytes(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// The probe, scaled down: 20 queries in one request over every series. A
/// `SAMPLES` request is refused once the samples of its queries pass the limit (before
/// the rest are fetched), and a streamed one is answered in frames of at most
/// `--storage.remote.read-max-bytes-in-frame`, one query held at a time; neither grows
/// the resident set by much (whole, the answer is over a gigabyte in memory).
#[test]
fn remote_read_of_many_queries_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(
        &tmp.path().join("strata"),
        &[
            "--tsdb.ship-interval=1h",
            "--storage.remote.read-sample-limit=1000000",
            "--storage.remote.read-max-bytes-in-frame=65536",
        ],
    );
    let (n_series, n_samples) = (10_000usize, 60i64);
    let t0 = (now_ms() - 20 * 60_000) / 1000 * 1000;
    for batch in 0..5 {
        let ts = (batch * n_series / 5..(batch + 1) * n_series / 5)
            .map(|i| {
                let pts: Vec<(i64, f64)> = (0..n_samples)
                    .map(|j| (t0 + j * 15_000, (i as i64 * j) as f64))
                    .collect();
                series(&[("__name__", "wide"), ("i", &format!("{i:05}"))], &pts)
            })
            .collect();
        let (code, body) = s.push(None, &write_request(ts));
        assert!(code < 300, "{code} {body}");
    }
    let read = |streamed: bool| {
        let query = Query {
            start_timestamp_ms: t0,
            end_timestamp_ms: t0 + n_samples * 15_000,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Eq as i32,
                name: "__name__".into(),
                value: "wide".into(),
            }],
            hints: None,
        };
        let req = ReadRequest {
            queries: vec![query; 20],
            accepted_response_types: if streamed {
                vec![read_request::ResponseType::StreamedXorChunks as i32]
            } else {
                vec![read_request::ResponseType::Samples as i32]
            },
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        post_bytes(
            &format!("{}/api/v1/read", s.url()),
            &[("Content-Encoding", "snappy")],
            &body,
        )
        .unwrap()
    };
    let pid = s.proc.child.id();
    let bound = 300u64 << 20;
    for streamed in [false, true] {
        let before = proc_bytes(pid, "VmRSS:");
        // Reset the high-water mark to the current resident set.
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
        let (code, _, body) = read(streamed);
        let growth = proc_bytes(pid, "VmHWM:").saturating_sub(before);
        assert!(
            growth < bound,
            "streamed={streamed}: resident set grew {} MB",
            growth >> 20
        );
        if !streamed {
            assert_eq!(code, 400);
            assert_eq!(
                String::from_utf8_lossy(&body),
                "exceeded sample limit (1000000)"
            );
            continue;
        }
        assert_eq!(code, 200);
        let (mut frames, mut samples, mut buf) = (0usize, 0usize, &body[..]);
        let mut per_query = vec![0usize; 20];
        while !buf.is_empty() {
            let (len, n) = strata_tsdb::varint::uvarint(buf).unwrap();
            let len = len as usize;
            assert!(len <= 65536, "frame of {len} bytes");
            let msg = &buf[n + 4..n + 4 + len];
            let frame = ChunkedReadResponse::decode(msg).unwrap();
            assert_eq!(frame.chunked_series.len(), 1);
            per_query[frame.query_index as usize] += 1;
            for c in &frame.chunked_series[0].chunks {
                samples += strata_tsdb::chunkenc::XorIter::new(&c.data).count();
            }
            frames += 1;
            buf = &buf[n + 4 + len..];
        }
        assert_eq!(per_query, vec![n_series; 20], "{frames} frames");
        assert_eq!(samples, 20 * n_series * n_samples as usize);
    }
}
