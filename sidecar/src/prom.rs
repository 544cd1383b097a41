//! Talking to the Prometheus next to the sidecar: its external labels and block-duration
//! flags, readiness, and remote read with streamed XOR chunks.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use strata_proto::prometheus::{
    read_request, ChunkedReadResponse, LabelMatcher, Query, ReadRequest,
};
use strata_proto::Message;

use crate::{Error, Result};

#[derive(Clone)]
pub struct PromClient {
    base: String,
    http: reqwest::Client,
}

impl PromClient {
    pub fn new(url: &str) -> Result<Self> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(Error::Config(format!(
                "--prometheus.url {url:?} must start with http:// (https needs a TLS build)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Prometheus(e.to_string()))?;
        Ok(PromClient { base, http })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let r = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| Error::Prometheus(format!("GET {url}: {e}")))?;
        let status = r.status();
        let body = r
            .text()
            .await
            .map_err(|e| Error::Prometheus(format!("GET {url}: {e}")))?;
        if !status.is_success() {
            return Err(Error::Prometheus(format!("GET {url}: {status}: {body}")));
        }
        serde_json::from_str(&body)
            .map_err(|e| Error::Prometheus(format!("GET {url}: bad JSON: {e}")))
    }

    /// `global.external_labels` from `/api/v1/status/config`.
    pub async fn external_labels(&self) -> Result<BTreeMap<String, String>> {
        let v = self.get_json("/api/v1/status/config").await?;
        let yaml = v["data"]["yaml"]
            .as_str()
            .ok_or_else(|| Error::Prometheus("/api/v1/status/config has no data.yaml".into()))?;
        let cfg: yaml_serde::Value = yaml_serde::from_str(yaml)
            .map_err(|e| Error::Prometheus(format!("Prometheus's config does not parse: {e}")))?;
        let mut out = BTreeMap::new();
        if let Some(m) = cfg
            .get("global")
            .and_then(|g| g.get("external_labels"))
            .and_then(|e| e.as_mapping())
        {
            for (k, v) in m {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    out.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    /// The values of `--storage.tsdb.min-block-duration` and `max-block-duration`.
    pub async fn block_durations(&self) -> Result<(String, String)> {
        let v = self.get_json("/api/v1/status/flags").await?;
        let get = |k: &str| v["data"][k].as_str().unwrap_or("").to_string();
        Ok((
            get("storage.tsdb.min-block-duration"),
            get("storage.tsdb.max-block-duration"),
        ))
    }

    /// Whether `/-/ready` answers 200.
    pub async fn ready(&self) -> bool {
        match self
            .http
            .get(format!("{}/-/ready", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Remote read one query with the `STREAMED_XOR_CHUNKS` response type; returns the
    /// decoded frames.
    pub async fn read_chunked(
        &self,
        start_ms: i64,
        end_ms: i64,
        matchers: Vec<LabelMatcher>,
    ) -> Result<Vec<ChunkedReadResponse>> {
        let req = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: start_ms,
                end_timestamp_ms: end_ms,
                matchers,
                hints: None,
            }],
            accepted_response_types: vec![read_request::ResponseType::StreamedXorChunks as i32],
        };
        let body = strata_proto::encode_snappy_message(&req);
        let url = format!("{}/api/v1/read", self.base);
        let r = self
            .http
            .post(&url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Read-Version", "0.1.0")
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Prometheus(format!("remote read {url}: {e}")))?;
        let status = r.status();
        if !status.is_success() {
            let text = r.text().await.unwrap_or_default();
            return Err(Error::Prometheus(format!(
                "remote read {url}: {status}: {}",
                text.trim()
            )));
        }
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !ct.starts_with("application/x-streamed-protobuf") {
            return Err(Error::Prometheus(format!(
                "remote read {url}: expected a streamed response, got content type {ct:?} (Prometheus older than 2.13?)"
            )));
        }
        let mut stream = r.bytes_stream();
        let mut buf = bytes::BytesMut::new();
        let mut out = Vec::new();
        loop {
            while let Some((frame, used)) = next_frame(&buf)? {
                out.push(frame);
                buf.advance(used);
            }
            match stream.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(Error::Prometheus(format!("remote read {url}: {e}"))),
                None => break,
            }
        }
        if !buf.is_empty() {
            return Err(Error::Prometheus(format!(
                "remote read {url}: stream ended inside a frame ({} bytes left)",
                buf.len()
            )));
        }
        Ok(out)
    }
}

/// One frame of a streamed remote-read response: `uvarint len | crc32c BE | message`.
/// `Ok(None)` when `buf` does not hold a whole frame yet.
pub fn next_frame(buf: &[u8]) -> Result<Option<(ChunkedReadResponse, usize)>> {
    let mut len: u64 = 0;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        i += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(Error::Prometheus("remote read: bad frame length".into()));
        }
    }
    let len = len as usize;
    if len > 256 << 20 {
        return Err(Error::Prometheus(format!(
            "remote read: frame of {len} bytes is too large"
        )));
    }
    if buf.len() < i + 4 + len {
        return Ok(None);
    }
    let want = u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let data = &buf[i + 4..i + 4 + len];
    let got = crc32c::crc32c(data);
    if want != got {
        return Err(Error::Prometheus(format!(
            "remote read: frame checksum mismatch (stored {want:08x}, computed {got:08x})"
        )));
    }
    let msg = ChunkedReadResponse::decode(Bytes::copy_from_slice(data))
        .map_err(|e| Error::Prometheus(format!("remote read: bad frame: {e}")))?;
    Ok(Some((msg, i + 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::prometheus::{ChunkedSeries, Label};

    fn frame(msg: &ChunkedReadResponse) -> Vec<u8> {
        let data = msg.encode_to_vec();
        let mut out = Vec::new();
        let mut n = data.len() as u64;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(&crc32c::crc32c(&data).to_be_bytes());
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn frames_decode_incrementally() {
        let msg = ChunkedReadResponse {
            chunked_series: vec![ChunkedSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                chunks: vec![],
            }],
            query_index: 0,
        };
        let mut all = frame(&msg);
        all.extend(frame(&msg));
        let one = frame(&msg).len();
        assert!(next_frame(&all[..one - 1]).unwrap().is_none());
        let (m, used) = next_frame(&all).unwrap().unwrap();
        assert_eq!(used, one);
        assert_eq!(m, msg);
        let mut bad = frame(&msg);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(next_frame(&bad)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }
}
