//! One protocol client for every listener, so a behaviour is written once and run on each
//! transport: TCP and TLS (length-prefixed frames, over `FramedClient`), WebSocket and WebSocket
//! over TLS (one binary message per frame, over `WsClient`). Every wait has a deadline, and every
//! failure names the transport.

use std::fmt;
use std::time::Duration;

use prost::Message as _;
use ringchat_bench::client::password_login;
use ringchat_proto::v1::{self, ErrorCode, KickReason};
use ringchat_proto::{Body, Frame, PROTOCOL_VERSION};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::ws::{Event, FramedClient, Io, WsClient, tls_over};
use super::{PASSWORD, TestServer};

/// How long a reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Kind {
    /// Whether the listener needs a server started with TLS on.
    pub fn needs_tls(self) -> bool {
        matches!(self, Kind::Tls | Kind::Wss)
    }

    /// A server whose listener for this transport is on, with the extra `env` overrides.
    pub fn server(self, env: &[(&str, &str)]) -> TestServer {
        if self.needs_tls() {
            TestServer::start_tls(env)
        } else {
            TestServer::start(env)
        }
    }

    fn addr(self, server: &TestServer) -> std::net::SocketAddr {
        match self {
            Kind::Tcp => server.tcp,
            Kind::Ws => server.ws,
            Kind::Tls => server.tls.expect("TLS listener (start with Kind::server)"),
            Kind::Wss => server.wss.expect("wss listener (start with Kind::server)"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
        })
    }
}

enum Link {
    /// TCP or TLS: 4-byte length prefix + Frame.
    Framed(FramedClient<Box<dyn Io>>),
    /// ws or wss: one binary message per Frame.
    Ws(Box<WsClient>),
}

pub struct AnyClient {
    pub kind: Kind,
    link: Link,
    next_request_id: u64,
}

/// The deadline `timeout` from now.
pub fn deadline(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

impl AnyClient {
    /// Connects (and does the TLS handshake and WebSocket upgrade); panics naming the transport.
    pub async fn connect(server: &TestServer, kind: Kind) -> Self {
        Self::try_connect(server, kind, None)
            .await
            .unwrap_or_else(|e| panic!("{kind}: connecting: {e:#}"))
    }

    /// Connects with a small socket receive buffer, to play a client that reads slowly.
    pub async fn connect_with_recv_buffer(server: &TestServer, kind: Kind, bytes: u32) -> Self {
        Self::try_connect(server, kind, Some(bytes))
            .await
            .unwrap_or_else(|e| panic!("{kind}: connecting: {e:#}"))
    }

    /// Connects, or says why not (refused, TLS handshake or WebSocket upgrade failed).
    pub async fn try_connect(
        server: &TestServer,
        kind: Kind,
        recv_buffer_bytes: Option<u32>,
    ) -> anyhow::Result<Self> {
        let addr = kind.addr(server);
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(bytes) = recv_buffer_bytes {
            socket.set_recv_buffer_size(bytes)?;
        }
        let tcp = tokio::time::timeout(REPLY_TIMEOUT, socket.connect(addr)).await??;
        Self::try_open(server, kind, tcp).await
    }

    /// Connects the socket only: the transport's opening (TLS handshake, WebSocket upgrade) is
    /// left to [`AnyClient::try_open`].
    pub async fn connect_socket(server: &TestServer, kind: Kind) -> tokio::net::TcpStream {
        let addr = kind.addr(server);
        tokio::time::timeout(REPLY_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("{kind}: connect timed out"))
            .unwrap_or_else(|e| panic!("{kind}: connect: {e}"))
    }

    /// The transport's opening on a connected socket: TLS handshake, WebSocket upgrade.
    pub async fn try_open(
        server: &TestServer,
        kind: Kind,
        tcp: tokio::net::TcpStream,
    ) -> anyhow::Result<Self> {
        let addr = kind.addr(server);
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = if kind.needs_tls() {
            let cert = server.cert_pem.as_deref().expect("a TLS server");
            Box::new(tokio::time::timeout(REPLY_TIMEOUT, tls_over(tcp, cert)).await??)
        } else {
            Box::new(tcp)
        };
        let link = match kind {
            Kind::Tcp | Kind::Tls => Link::Framed(FramedClient::new(stream)),
            Kind::Ws | Kind::Wss => {
                let scheme = if kind == Kind::Wss { "wss" } else { "ws" };
                let url = format!("{scheme}://localhost:{}/ws", addr.port());
                let upgrade = WsClient::try_handshake(stream, &url);
                Link::Ws(Box::new(
                    tokio::time::timeout(REPLY_TIMEOUT, upgrade).await??,
                ))
            }
        };
        Ok(Self {
            kind,
            link,
            next_request_id: 1,
        })
    }

    pub async fn send(&mut self, frame: &Frame) {
        self.send_payload(&frame.encode_to_vec()).await;
    }

    /// Sends `body` with a fresh request id; returns the id.
    pub async fn send_body(&mut self, body: Body) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send(&ringchat_proto::frame(request_id, body)).await;
        request_id
    }

    /// Sends `body` with a fresh request id; `None` when the write failed (the server is gone),
    /// for load that runs into a crash.
    pub async fn try_send_body(&mut self, body: Body) -> Option<u64> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let payload = ringchat_proto::frame(request_id, body).encode_to_vec();
        let sent = match &mut self.link {
            Link::Framed(c) => {
                let len = u32::try_from(payload.len()).unwrap();
                let mut bytes = len.to_be_bytes().to_vec();
                bytes.extend_from_slice(&payload);
                c.send_raw(&bytes).await.is_ok()
            }
            Link::Ws(ws) => ws
                .try_send_message(Message::Binary(payload.into()))
                .await
                .is_ok(),
        };
        sent.then_some(request_id)
    }

    /// Sends `payload` where one encoded Frame would go: behind a length prefix on TCP and TLS,
    /// as one binary message on WebSocket. For bad input (garbage, oversize).
    pub async fn send_payload(&mut self, payload: &[u8]) {
        let kind = self.kind;
        match &mut self.link {
            Link::Framed(c) => {
                let len = u32::try_from(payload.len()).unwrap();
                let mut bytes = len.to_be_bytes().to_vec();
                bytes.extend_from_slice(payload);
                c.send_raw(&bytes)
                    .await
                    .unwrap_or_else(|e| panic!("{kind}: send: {e}"));
            }
            Link::Ws(ws) => {
                ws.send_message(Message::Binary(payload.to_vec().into()))
                    .await;
            }
        }
    }

    /// The next frame; `None` when the connection closed (end of stream, a read error, or a
    /// WebSocket close frame). Panics, naming the transport, when nothing came by `deadline`.
    pub async fn recv(&mut self, deadline: Instant) -> Option<Frame> {
        let kind = self.kind;
        let timed_out = format!("{kind}: neither a frame nor a close by the deadline");
        match &mut self.link {
            Link::Framed(c) => c.recv_until(deadline).await.expect(&timed_out),
            Link::Ws(ws) => loop {
                match ws.recv_until(deadline).await {
                    None => panic!("{timed_out}"),
                    Some(Event::Frame(f)) => return Some(f),
                    Some(Event::Close(..)) => return None,
                    Some(Event::Pong(_)) => {}
                    Some(Event::Json(v)) => {
                        panic!("{kind}: a text message to a binary client: {v}")
                    }
                }
            },
        }
    }

    /// Sends a request and waits for its reply, passing over pushes. Panics (naming the
    /// transport and any kick or error that ended the connection) when it closes first.
    pub async fn request(&mut self, body: Body) -> Body {
        let name = ringchat_proto::body_name(&body);
        let id = self.send_body(body).await;
        let until = deadline(REPLY_TIMEOUT);
        let mut last = None;
        loop {
            match self.recv(until).await {
                Some(f) if f.request_id == id => return f.body.expect("a reply with a body"),
                Some(f) => last = f.body,
                None => panic!(
                    "{}: connection closed while waiting for the reply to {name}; last frame: {last:?}",
                    self.kind
                ),
            }
        }
    }

    pub async fn hello(&mut self) -> v1::HelloOk {
        let hello = Body::Hello(v1::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: format!("transport-test-{}", self.kind),
        });
        match self.request(hello).await {
            Body::HelloOk(ok) => ok,
            other => panic!("{}: Hello answered with {other:?}", self.kind),
        }
    }

    /// Hello, register `username` and log in with the password on this connection.
    pub async fn signup(&mut self, username: &str) -> v1::LoginOk {
        self.hello().await;
        let register = Body::Register(v1::Register {
            username: username.into(),
            password: PASSWORD.into(),
            ..Default::default()
        });
        match self.request(register).await {
            Body::RegisterOk(_) => {}
            other => panic!("{}: register {username}: {other:?}", self.kind),
        }
        let device = format!("{username}-{}", self.kind);
        match self
            .request(Body::Login(password_login(username, PASSWORD, &device)))
            .await
        {
            Body::LoginOk(ok) => ok,
            other => panic!("{}: login {username}: {other:?}", self.kind),
        }
    }

    /// An existing user logged in as device `{name}-{kind}` on a fresh connection.
    pub async fn login(server: &TestServer, kind: Kind, name: &str) -> Self {
        let mut c = Self::connect(server, kind).await;
        c.hello().await;
        let device = format!("{name}-{kind}");
        match c
            .request(Body::Login(password_login(name, PASSWORD, &device)))
            .await
        {
            Body::LoginOk(_) => c,
            other => panic!("{kind}: login {name}: {}", describe(Some(&other))),
        }
    }

    /// Every stored message of a conversation, page by page.
    pub async fn sync_all(&mut self, conv: u64) -> Vec<v1::Message> {
        let mut all: Vec<v1::Message> = Vec::new();
        let mut after = 0;
        for _ in 0..100_000 {
            let body = Body::Sync(v1::Sync {
                conversation_id: conv,
                after_seq: after,
                limit: 0,
            });
            let page = match self.request(body).await {
                Body::SyncBatch(b) => b,
                other => panic!(
                    "{}: Sync answered with {}",
                    self.kind,
                    describe(Some(&other))
                ),
            };
            if let Some(last) = page.messages.last() {
                after = last.seq;
            }
            let more = page.has_more;
            all.extend(page.messages);
            if !more {
                return all;
            }
        }
        panic!("{}: Sync of conversation {conv} never ended", self.kind);
    }

    /// A logged-in user on a fresh connection.
    pub async fn user(server: &TestServer, kind: Kind, username: &str) -> (Self, v1::LoginOk) {
        let mut c = Self::connect(server, kind).await;
        let ok = c.signup(username).await;
        (c, ok)
    }

    pub async fn ping(&mut self) -> v1::Pong {
        match self
            .request(Body::Ping(v1::Ping { client_time_ms: 7 }))
            .await
        {
            Body::Pong(p) => p,
            other => panic!("{}: Ping answered with {other:?}", self.kind),
        }
    }

    /// Reads until the connection closes (by `deadline`); returns the body of the last frame
    /// before the close (`None`: closed without one).
    pub async fn last_body_before_close(&mut self, deadline: Instant) -> Option<Body> {
        let mut last = None;
        while let Some(frame) = self.recv(deadline).await {
            last = frame.body;
        }
        last
    }

    /// Reads until the close; asserts the last frame was `Kicked{reason}`.
    pub async fn expect_kicked_then_closed(&mut self, reason: KickReason, deadline: Instant) {
        let kind = self.kind;
        match self.last_body_before_close(deadline).await {
            Some(Body::Kicked(k)) if k.reason == reason as i32 => {}
            other => panic!(
                "{kind}: expected Kicked{{{}}} then close, got {} then close",
                reason.as_str_name(),
                describe(other.as_ref())
            ),
        }
    }

    /// Reads until the close; asserts the last frame was `Error{code}`.
    pub async fn expect_error_then_closed(&mut self, code: ErrorCode, deadline: Instant) {
        let kind = self.kind;
        match self.last_body_before_close(deadline).await {
            Some(Body::Error(e)) if e.code == code as i32 => {}
            other => panic!(
                "{kind}: expected Error{{{}}} then close, got {} then close",
                code.as_str_name(),
                describe(other.as_ref())
            ),
        }
    }
}

/// A body for a failure message, with enum codes by name.
pub fn describe(body: Option<&Body>) -> String {
    match body {
        None => "no frame".to_owned(),
        Some(Body::Kicked(k)) => format!(
            "Kicked{{{}}}",
            KickReason::try_from(k.reason).map_or("?", |r| r.as_str_name())
        ),
        Some(Body::Error(e)) => format!(
            "Error{{{}: {}}}",
            ErrorCode::try_from(e.code).map_or("?", |c| c.as_str_name()),
            e.message
        ),
        Some(other) => ringchat_proto::body_name(other).to_owned(),
    }
}
