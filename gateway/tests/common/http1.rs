//! A small HTTP/1.1 client over a real socket (plain or TLS) for the files API on the
//! WebSocket listeners: keep-alive (several requests on one connection), `Content-Length` and
//! chunked response bodies, and bodies streamed to a sink so a big download is never held.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ws::{Io, tls_connect};

/// Time one read may take before the test fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response head read.
const HEAD_BYTES_MAX: usize = 64 * 1024;

pub struct Http1 {
    io: Box<dyn Io>,
    buf: BytesMut,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The head of a response whose body is read apart.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Http1 {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::try_connect(addr).await.expect("connect")
    }

    /// [`Self::connect`] for a server that may be gone (killed): the error instead of a panic.
    pub async fn try_connect(addr: SocketAddr) -> std::io::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Self::over(Box::new(tcp)))
    }

    pub async fn connect_tls(addr: SocketAddr, cert_pem: &str) -> Self {
        let tls = tls_connect(addr, cert_pem).await.expect("TLS handshake");
        Self::over(Box::new(tls))
    }

    /// Plain when `cert_pem` is `None`.
    pub async fn connect_to(addr: SocketAddr, cert_pem: Option<&str>) -> Self {
        match cert_pem {
            Some(pem) => Self::connect_tls(addr, pem).await,
            None => Self::connect(addr).await,
        }
    }

    pub fn over(io: Box<dyn Io>) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// Writes a request head (and `body_len` as its `Content-Length`, if any).
    pub async fn send_head(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body_len: Option<usize>,
    ) -> std::io::Result<()> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(n) = body_len {
            head.push_str(&format!("Content-Length: {n}\r\n"));
        }
        head.push_str("\r\n");
        self.io.write_all(head.as_bytes()).await?;
        self.io.flush().await
    }

    pub async fn send_body(&mut self, body: &[u8]) -> std::io::Result<()> {
        self.io.write_all(body).await?;
        self.io.flush().await
    }

    /// One request and its whole response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let len = (method != "GET" || !body.is_empty()).then_some(body.len());
        self.send_head(method, path, token, headers, len).await?;
        if !body.is_empty() {
            self.send_body(body).await?;
        }
        self.read_response(method == "HEAD").await
    }

    pub async fn read_response(&mut self, head_only: bool) -> std::io::Result<Response> {
        let mut body = Vec::new();
        let head = self
            .read_response_into(head_only, |chunk| body.extend_from_slice(chunk))
            .await?;
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// Reads a response, handing its body to `sink` piece by piece.
    pub async fn read_response_into(
        &mut self,
        head_only: bool,
        mut sink: impl FnMut(&[u8]),
    ) -> std::io::Result<Head> {
        let head = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let head = Head {
                        status: resp.code.unwrap_or(0),
                        headers: resp
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_owned(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                    };
                    self.buf.advance(n);
                    break head;
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > HEAD_BYTES_MAX {
                        return Err(std::io::Error::other("response head too large"));
                    }
                    self.fill().await?;
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        };
        if head_only || head.status == 204 || head.status == 304 || head.status < 200 {
            return Ok(head);
        }
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let line = self.line().await?;
                let size_text = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|e| std::io::Error::other(format!("chunk size {line:?}: {e}")))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                self.body_bytes(size, &mut sink).await?;
                if !self.line().await?.is_empty() {
                    return Err(std::io::Error::other("no CRLF after a chunk"));
                }
            }
        } else if let Some(len) = head.header("content-length") {
            let len: usize = len.trim().parse().map_err(std::io::Error::other)?;
            self.body_bytes(len, &mut sink).await?;
        } else {
            // Until the server closes.
            loop {
                if !self.buf.is_empty() {
                    sink(&self.buf);
                    self.buf.clear();
                }
                if self.read_some().await? == 0 {
                    break;
                }
            }
        }
        Ok(head)
    }

    /// True once the server has closed (or reset) the connection; false if it sent more, or
    /// nothing within [`READ_TIMEOUT`].
    pub async fn closed_by_server(&mut self) -> bool {
        match self.read_some().await {
            Ok(n) => n == 0,
            Err(e) => e.kind() != std::io::ErrorKind::TimedOut,
        }
    }

    async fn body_bytes(
        &mut self,
        mut len: usize,
        sink: &mut impl FnMut(&[u8]),
    ) -> std::io::Result<()> {
        while len > 0 {
            if self.buf.is_empty() {
                self.fill().await?;
            }
            let n = len.min(self.buf.len());
            sink(&self.buf[..n]);
            self.buf.advance(n);
            len -= n;
        }
        Ok(())
    }

    async fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.advance(at + 2);
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.read_some().await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn read_some(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        match tokio::time::timeout(READ_TIMEOUT, self.io.read_buf(&mut self.buf)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// Closes the write side (the server sees the end of the request stream).
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}
