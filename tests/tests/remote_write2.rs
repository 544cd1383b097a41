//! Remote write 2.0 (`io.prometheus.write.v2.Request`) on the real binary: `strata tools
//! loadgen --protocol 2.0` sends it and every series arrives as with 1.0; answers carry
//! the `X-Prometheus-Remote-Write-*-Written` headers; an unknown `proto` is a 415; mutated
//! requests get a 4xx, never a 5xx, and the server keeps serving. (Prometheus 2.42
//! cannot send 2.0, which came with Prometheus 3.)

use std::process::Command;

use strata_proto::Message;
use strata_testkit::http::{encode, get_json, post_bytes};
use strata_testkit::procs::strata_bin;
use strata_testkit::strata::{series, write_request, StrataProc};

const V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

fn count(s: &StrataProc, tenant: &str, q: &str) -> f64 {
    let (code, body) = strata_testkit::http::get_with(
        &format!("{}/api/v1/query?query={}", s.url(), encode(q)),
        &[("X-Scope-OrgID", tenant)],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"][0]["value"][1]
        .as_str()
        .map_or(0.0, |x| x.parse().unwrap())
}

/// POST with curl to see the answer's headers: (status, lowercased head).
fn post_head(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, body).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--data-binary"])
        .arg(format!("@{}", f.display()))
        .args(["-H", &format!("Content-Type: {content_type}")])
        .args(["-H", "Content-Encoding: snappy", url])
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

#[test]
fn remote_write_2_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let s = StrataProc::start_all(tmp.path(), &[]);
    let push = format!("{}/api/v1/push", s.url());

    // the same load in 1.0 and in 2.0, to two tenants: the same series arrive
    for (protocol, tenant) in [("1.0", "v1"), ("2.0", "v2")] {
        let out = Command::new(strata_bin())
            .args(["tools", "loadgen", "--url", &push, "--tenant", tenant])
            .args([
                "--protocol",
                protocol,
                "--series",
                "300",
                "--scrapes",
                "3",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["samples_sent"], 900, "{report}");
        assert_eq!(report["samples_failed"], 0, "{report}");
    }
    let q = r#"count({__name__=~".+"})"#;
    assert_eq!(count(&s, "v2", q), 300.0);
    assert_eq!(count(&s, "v1", q), count(&s, "v2", q));
    // Every sample: the raw range vector (count_over_time would drop __name__, and
    // loadgen's metrics share their other labels, which Prometheus 3 refuses to sum).
    let (code, body) = strata_testkit::http::get_with(
        &format!(
            "{}/api/v1/query?query={}",
            s.url(),
            encode(r#"{__name__=~".+"}[1h]"#)
        ),
        &[("X-Scope-OrgID", "v2")],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let samples: usize = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["values"].as_array().unwrap().len())
        .sum();
    assert_eq!(samples, 900);

    // the written counts in the answer's headers
    let req = write_request(vec![
        series(
            &[("__name__", "a"), ("x", "1")],
            &[(1_000, 1.0), (2_000, 2.0)],
        ),
        series(&[("__name__", "b")], &[(1_000, 3.0)]),
    ]);
    let body = strata_proto::encode_snappy_message(&strata_proto::write_request_to_v2(&req));
    let (status, head) = post_head(&push, V2, &body);
    assert!((200..300).contains(&status), "{head}");
    assert!(
        head.contains("x-prometheus-remote-write-samples-written: 3"),
        "{head}"
    );
    assert!(
        head.contains("x-prometheus-remote-write-histograms-written: 0"),
        "{head}"
    );
    assert!(
        head.contains("x-prometheus-remote-write-exemplars-written: 0"),
        "{head}"
    );

    // an unknown message: 415, so a sender falls back to 1.0
    let (status, head) = post_head(
        &push,
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        &body,
    );
    assert_eq!(status, 415, "{head}");

    // a reference outside the symbol table: 400 naming it
    let mut bad = strata_proto::write_request_to_v2(&req);
    bad.timeseries[0].labels_refs[1] = 999;
    let (code, _, text) = post_bytes(
        &push,
        &[("Content-Type", V2), ("Content-Encoding", "snappy")],
        &strata_proto::encode_snappy_message(&bad),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("label reference 999 is out of range"),
        "{text}"
    );

    // mutated requests: a 4xx each, never a 5xx, and the server stays up
    let raw = strata_proto::write_request_to_v2(&req).encode_to_vec();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut m = raw.clone();
        let at = (seed as usize) % m.len();
        m[at] = (seed >> 32) as u8;
        if seed.is_multiple_of(3) {
            m.truncate((seed >> 40) as usize % m.len());
        }
        let body = snap::raw::Encoder::new().compress_vec(&m).unwrap();
        let (code, _, text) = post_bytes(
            &push,
            &[("Content-Type", V2), ("Content-Encoding", "snappy")],
            &body,
        )
        .unwrap();
        assert!(code < 500, "{code}: {}", String::from_utf8_lossy(&text));
    }
    assert_eq!(
        get_json(&format!("{}/api/v1/query?query=1", s.url()))["status"],
        "success"
    );
}
