//! Request lines as Go's HTTP server takes them. People type PromQL into curl without
//! encoding it (`curl 'localhost:9009/api/v1/query?query=up{job="api"}'`): Prometheus
//! answers, but hyper's parser refuses a raw `"`, `<` or `>` in the request target
//! with a bare 400 before any handler runs. This reader percent-encodes exactly those
//! bytes in each request line; headers and bodies pass through untouched.
//!
//! To find the next request line on a kept-alive connection it follows the framing:
//! headers end at an empty line, then `Content-Length` bytes of body. A chunked body is
//! not followed: the rest of that connection passes through unchanged.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections read through [`LenientIo`].
#[derive(Debug)]
pub(super) struct LenientListener(pub TcpListener);

impl axum::serve::Listener for LenientListener {
    type Io = LenientIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (LenientIo::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Where in a request the next byte read belongs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    /// The request line (or blank lines before it).
    Line,
    /// A header line: how many of its bytes were kept in `header`.
    Headers,
    /// This many body bytes are still to come.
    Body(u64),
    /// Framing not followed (chunked body): pass everything through.
    Opaque,
}

/// Longest header line prefix kept to read `Content-Length`/`Transfer-Encoding`.
const HEADER_KEEP: usize = 128;
const SCRATCH: usize = 16 << 10;

/// A stream whose request lines are made acceptable to hyper; see the module doc.
#[derive(Debug)]
pub struct LenientIo<S> {
    inner: S,
    part: Part,
    /// The request line being read has more than line breaks.
    line_seen: bool,
    /// The current header line's first bytes.
    header: Vec<u8>,
    content_length: u64,
    chunked: bool,
    /// Bytes transformed but not yet handed to the reader.
    out: Vec<u8>,
    out_pos: usize,
    scratch: Box<[u8]>,
}

impl<S> LenientIo<S> {
    pub fn new(inner: S) -> Self {
        LenientIo {
            inner,
            part: Part::Line,
            line_seen: false,
            header: Vec::with_capacity(HEADER_KEEP),
            content_length: 0,
            chunked: false,
            out: Vec::new(),
            out_pos: 0,
            scratch: vec![0; SCRATCH].into_boxed_slice(),
        }
    }

    /// Append `input`, transformed, to `out`.
    fn transform(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match self.part {
                Part::Opaque => {
                    self.out.extend_from_slice(input);
                    return;
                }
                Part::Body(left) => {
                    let n = (left.min(input.len() as u64)) as usize;
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.part = if left == n as u64 {
                        Part::Line
                    } else {
                        Part::Body(left - n as u64)
                    };
                }
                Part::Line => {
                    let end = input.iter().position(|&b| b == b'\n');
                    let line = &input[..end.map_or(input.len(), |i| i + 1)];
                    // blank lines before a request line stay in this state
                    self.line_seen |= line.iter().any(|&b| b != b'\r' && b != b'\n');
                    for &b in line {
                        match b {
                            b'"' => self.out.extend_from_slice(b"%22"),
                            b'<' => self.out.extend_from_slice(b"%3C"),
                            b'>' => self.out.extend_from_slice(b"%3E"),
                            _ => self.out.push(b),
                        }
                    }
                    input = &input[line.len()..];
                    if end.is_some() && self.line_seen {
                        self.line_seen = false;
                        self.part = Part::Headers;
                        self.header.clear();
                        self.content_length = 0;
                        self.chunked = false;
                    }
                }
                Part::Headers => {
                    let end = input.iter().position(|&b| b == b'\n');
                    let line = &input[..end.map_or(input.len(), |i| i + 1)];
                    self.out.extend_from_slice(line);
                    let room = HEADER_KEEP.saturating_sub(self.header.len());
                    self.header.extend_from_slice(&line[..line.len().min(room)]);
                    input = &input[line.len()..];
                    if end.is_some() {
                        self.header_done();
                    }
                }
            }
        }
    }

    /// A header line ended: note the framing it sets, or start the body.
    fn header_done(&mut self) {
        let line = self.header.trim_ascii();
        if line.is_empty() {
            self.part = if self.chunked {
                Part::Opaque
            } else if self.content_length > 0 {
                Part::Body(self.content_length)
            } else {
                Part::Line
            };
            return;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                    Some(n) => self.content_length = n,
                    // hyper refuses it; stop following this connection
                    None => self.chunked = true,
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                self.chunked = true;
            }
        }
        self.header.clear();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LenientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.out_pos == this.out.len() {
            if this.part == Part::Opaque {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut scratch = std::mem::take(&mut this.scratch);
            let mut rb = ReadBuf::new(&mut scratch);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let filled = rb.filled().len();
            let result = match polled {
                Poll::Ready(Ok(())) => {
                    this.out.clear();
                    this.out_pos = 0;
                    this.transform(&scratch[..filled]);
                    Ok(())
                }
                Poll::Ready(Err(e)) => Err(e),
                Poll::Pending => {
                    this.scratch = scratch;
                    return Poll::Pending;
                }
            };
            this.scratch = scratch;
            result?;
        }
        let n = (this.out.len() - this.out_pos).min(buf.remaining());
        buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
        this.out_pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LenientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut io = LenientIo::new(());
        for c in chunks {
            io.transform(c);
        }
        io.out
    }

    #[test]
    fn encodes_quotes_in_request_lines_only() {
        let req: &[u8] = b"GET /q?query=up{a=\"<x>\"} HTTP/1.1\r\nX: \"y\"\r\n\r\n";
        let want: &[u8] = b"GET /q?query=up{a=%22%3Cx%3E%22} HTTP/1.1\r\nX: \"y\"\r\n\r\n";
        assert_eq!(run(&[req]), want);
        // the same split at every byte
        for i in 0..req.len() {
            assert_eq!(run(&[&req[..i], &req[i..]]), want, "split at {i}");
        }
    }

    #[test]
    fn follows_content_length_to_the_next_request() {
        let req: &[u8] =
            b"POST /a HTTP/1.1\r\ncontent-length: 5\r\n\r\n\"<>\"xGET /b?\" HTTP/1.1\r\n\r\n";
        let want: &[u8] =
            b"POST /a HTTP/1.1\r\ncontent-length: 5\r\n\r\n\"<>\"xGET /b?%22 HTTP/1.1\r\n\r\n";
        for i in 0..req.len() {
            assert_eq!(run(&[&req[..i], &req[i..]]), want, "split at {i}");
        }
    }

    #[test]
    fn chunked_bodies_pass_through() {
        let req: &[u8] =
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\"\r\n0\r\n\r\nGET /\" HTTP/1.1\r\n";
        assert_eq!(run(&[req]), req);
    }
}
