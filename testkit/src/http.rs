//! Tiny blocking HTTP helpers for tests.

use std::time::{Duration, Instant};

/// GET `url`; returns (status, body). Transport errors are returned as `Err`.
pub fn get(url: &str) -> Result<(u16, String), String> {
    get_with(url, &[])
}

/// GET `url` with extra request headers.
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// GET `url` and parse the JSON body, panicking on anything but 200.
pub fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: bad JSON {e}: {body}"))
}

/// Poll `url` until it answers 200 or `timeout` passes; panics with `what` on time-out.
pub fn wait_ready(
    url: &str,
    timeout: Duration,
    what: &str,
    mut alive: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, _)) = get(url) {
            return;
        }
        if let Err(e) = alive() {
            panic!("{what} exited before it was ready: {e}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready at {url} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Percent-encode a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// POST `body` with `headers`; returns (status, body text).
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(u16, String), String> {
    let (status, _, bytes) = post_bytes(url, headers, body)?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// POST `body` with `headers`; returns (status, content type, body bytes).
pub fn post_bytes(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String, Vec<u8>), String> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = match req.send(body) {
        Ok(r) => r,
        // A server may answer (413) and close before the body is sent, as an HTTP
        // server should for a Content-Length over its limit: read that answer.
        Err(e) if e.to_string().contains("Broken pipe") || e.to_string().contains("reset") => {
            return post_early_answer(url, headers, body);
        }
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok((status, content_type, bytes))
}

/// Remote read of the series matching `matchers` in `[start, end]` (ms) as `tenant`
/// (`POST {base}/api/v1/read`, the SAMPLES answer). Panics unless the answer is 200.
pub fn remote_read(
    base: &str,
    tenant: &str,
    start: i64,
    end: i64,
    matchers: Vec<strata_proto::prometheus::LabelMatcher>,
) -> strata_proto::prometheus::ReadResponse {
    let req = strata_proto::prometheus::ReadRequest {
        queries: vec![strata_proto::prometheus::Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers,
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let body = strata_proto::encode_snappy_message(&req);
    let (code, _, bytes) = post_bytes(
        &format!("{base}/api/v1/read"),
        &[("Content-Encoding", "snappy"), ("X-Scope-OrgID", tenant)],
        &body,
    )
    .unwrap();
    assert_eq!(code, 200, "remote read as {tenant}");
    strata_proto::decode_snappy_message(&bytes, 256 << 20).expect("a ReadResponse")
}

/// A tiny exporter on a loopback port serving two fixed `demo_jobs_total` series
/// (`queue="a"` 42, `queue="b"` 7) until the process ends; returns its port.
pub fn exporter() -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "# TYPE demo_jobs_total counter\ndemo_jobs_total{queue=\"a\"} 42\ndemo_jobs_total{queue=\"b\"} 7\n";
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    port
}

/// POST over a plain socket, ignoring write errors, and read whatever the server
/// answered (`Connection: close`).
fn post_early_answer(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String, Vec<u8>), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((status, content_type, body.as_bytes().to_vec()))
}
