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
    let mut resp = req.send(body).map_err(|e| e.to_string())?;
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
