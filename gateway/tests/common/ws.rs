//! Test clients for the WebSocket and TLS listeners, built on real client libraries:
//! tokio-tungstenite for WebSocket, tokio-rustls for TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use ringchat_proto::{Body, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the server sent.
#[derive(Debug)]
pub enum Event {
    /// A binary message: one protobuf Frame.
    Frame(Frame),
    /// A text message: one Frame in protobuf JSON.
    Json(serde_json::Value),
    Pong(Vec<u8>),
    /// A close frame (code, reason), or 1006 when the stream ended without one.
    Close(u16, String),
}

/// A TLS client config that trusts exactly `cert_pem` (the server's self-signed certificate).
pub fn tls_connector(cert_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr`, checked against `cert_pem` for the name "localhost".
pub async fn tls_connect(
    addr: SocketAddr,
    cert_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tls_over(tcp, cert_pem).await
}

/// The TLS handshake on a connected socket, checked against `cert_pem` for "localhost".
pub async fn tls_over(
    tcp: tokio::net::TcpStream,
    cert_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tls_connector(cert_pem).connect(name, tcp).await
}

pub struct WsClient {
    ws: WebSocketStream<Box<dyn Io>>,
    next_request_id: u64,
}

impl WsClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        Self::handshake(Box::new(tcp), &format!("ws://{addr}/ws")).await
    }

    pub async fn connect_tls(addr: SocketAddr, cert_pem: &str) -> Self {
        let tls = tls_connect(addr, cert_pem).await.expect("TLS handshake");
        Self::handshake(
            Box::new(tls),
            &format!("wss://localhost:{}/ws", addr.port()),
        )
        .await
    }

    async fn handshake(stream: Box<dyn Io>, url: &str) -> Self {
        Self::try_handshake(stream, url)
            .await
            .expect("WebSocket handshake")
    }

    /// The WebSocket upgrade on a connected stream (plain or TLS), for `url` (`ws://…/ws`).
    pub async fn try_handshake(
        stream: Box<dyn Io>,
        url: &str,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let (ws, response) = tokio_tungstenite::client_async(url, stream).await?;
        assert_eq!(response.status(), 101);
        Ok(Self {
            ws,
            next_request_id: 1,
        })
    }

    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends `message`, or says why not (the peer is gone).
    pub async fn try_send_message(
        &mut self,
        message: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(message).await
    }

    /// Sends `body` as a binary message; returns its request id.
    pub async fn send(&mut self, body: Body) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let frame = ringchat_proto::frame(request_id, body);
        self.send_message(Message::Binary(frame.encode_to_vec().into()))
            .await;
        request_id
    }

    pub async fn send_json(&mut self, text: &str) {
        self.send_message(Message::Text(text.into())).await;
    }

    pub async fn recv(&mut self) -> Event {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        self.recv_until(deadline).await.expect("a message in time")
    }

    /// The next event, or `None` when nothing came by `deadline`.
    pub async fn recv_until(&mut self, deadline: tokio::time::Instant) -> Option<Event> {
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            let message = match next {
                None | Some(Err(_)) => return Some(Event::Close(1006, String::new())),
                Some(Ok(m)) => m,
            };
            return Some(match message {
                Message::Binary(b) => Event::Frame(Frame::decode(&b[..]).expect("a Frame")),
                Message::Text(t) => Event::Json(serde_json::from_str(&t).expect("JSON")),
                Message::Pong(p) => Event::Pong(p.to_vec()),
                Message::Close(Some(c)) => Event::Close(c.code.into(), c.reason.to_string()),
                Message::Close(None) => Event::Close(1005, String::new()),
                Message::Ping(_) | Message::Frame(_) => continue,
            });
        }
    }

    /// Sends a binary request and waits for its reply, skipping pushes.
    pub async fn request(&mut self, body: Body) -> Body {
        let id = self.send(body).await;
        loop {
            match self.recv().await {
                Event::Frame(f) if f.request_id == id => return f.body.expect("a body"),
                Event::Frame(_) | Event::Pong(_) => {}
                other => panic!("waiting for reply {id}: {other:?}"),
            }
        }
    }

    /// Sends a JSON request and waits for its JSON reply (by `requestId`), skipping pushes.
    pub async fn request_json(&mut self, text: &str) -> serde_json::Value {
        let sent: serde_json::Value = serde_json::from_str(text).unwrap();
        self.send_json(text).await;
        loop {
            match self.recv().await {
                Event::Json(v) if v["requestId"] == sent["requestId"] => return v,
                Event::Json(_) | Event::Pong(_) => {}
                other => panic!("waiting for {text}: {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame; returns its code and reason and the frames seen.
    pub async fn until_close(&mut self) -> (u16, String, Vec<Event>) {
        let mut seen = Vec::new();
        loop {
            match self.recv().await {
                Event::Close(code, reason) => return (code, reason, seen),
                other => seen.push(other),
            }
        }
    }
}

/// Length-prefixed frames over any stream (for the TLS listener).
pub struct FramedClient<S> {
    pub stream: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FramedClient<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn request(&mut self, request_id: u64, body: Body) -> Body {
        let frame = ringchat_proto::frame(request_id, body);
        let bytes = ringchat_proto::encode_to_bytes(&frame);
        self.stream.write_all(&bytes).await.unwrap();
        loop {
            let f = self.recv().await.expect("a reply before close");
            if f.request_id == request_id {
                return f.body.unwrap();
            }
        }
    }

    /// The next frame, or `None` when the server closed.
    pub async fn recv(&mut self) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        self.recv_until(deadline).await.expect("data in time")
    }

    /// The next frame, `Ok(None)` when the server closed (a read error counts as closed, and
    /// so does an end of stream inside a frame), `Err` when nothing came by `deadline`.
    pub async fn recv_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Frame>, tokio::time::error::Elapsed> {
        loop {
            if let Some(f) = ringchat_proto::decode(&mut self.buf, 1 << 24).unwrap() {
                return Ok(Some(f));
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await?
                .unwrap_or(0);
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
}
