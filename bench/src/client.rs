//! A small async client for the ringchat protocol over TCP.
//!
//! Replies are matched by `request_id`; frames the server sends on its own (pushes, receipts,
//! kicks) that arrive while waiting for a reply are kept in order for `next_event`.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::BytesMut;
use ringchat_proto::v1::{self, ErrorCode, login};
use ringchat_proto::{Body, Frame, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::ToSocketAddrs;

/// Largest frame this client accepts from a server.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Default time to wait for any one reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    next_request_id: u64,
    events: VecDeque<Frame>,
    pub reply_timeout: Duration,
    /// The ping interval the server asked for in `HelloOk` (see [`crate::heartbeat`]).
    pub heartbeat: Option<Duration>,
}

/// An `Error` body returned by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError(pub v1::Error);

impl ServerError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::try_from(self.0.code).unwrap_or(ErrorCode::Unspecified)
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code().as_str_name(), self.0.message)
    }
}

impl std::error::Error for ServerError {}

impl Client {
    pub async fn connect(addr: impl ToSocketAddrs) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        Ok(Self::from_stream(stream))
    }

    /// Connects from `source` when given (see [`tcp_connect_from`]).
    pub async fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<Self> {
        Ok(Self::from_stream(tcp_connect_from(addr, source).await?))
    }

    /// Connects with a small receive buffer, to play a client that reads slowly.
    pub async fn connect_with_recv_buffer(
        addr: SocketAddr,
        recv_buffer_bytes: u32,
    ) -> anyhow::Result<Self> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_recv_buffer_size(recv_buffer_bytes)?;
        let stream = socket.connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        Ok(Self::from_stream(stream))
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            next_request_id: 1,
            events: VecDeque::new(),
            reply_timeout: REPLY_TIMEOUT,
            heartbeat: None,
        }
    }

    /// Sends a frame with a fresh request id and returns the id.
    pub async fn send(&mut self, body: Body) -> anyhow::Result<u64> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send_frame(&Frame {
            request_id,
            body: Some(body),
        })
        .await?;
        Ok(request_id)
    }

    pub async fn send_frame(&mut self, frame: &Frame) -> anyhow::Result<()> {
        self.write_buf.clear();
        ringchat_proto::encode(frame, &mut self.write_buf);
        self.stream.write_all(&self.write_buf).await?;
        Ok(())
    }

    /// Writes raw bytes, for tests of bad input.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Next frame from the socket; `None` when the server closed the connection.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if let Some(frame) = ringchat_proto::decode(&mut self.read_buf, FRAME_BYTES_MAX)? {
                return Ok(Some(frame));
            }
            self.read_buf.reserve(1024);
            let n = self.stream.read_buf(&mut self.read_buf).await?;
            if n == 0 {
                if self.read_buf.is_empty() {
                    return Ok(None);
                }
                bail!("connection closed inside a frame");
            }
        }
    }

    /// Next frame, within the reply timeout.
    pub async fn recv_timeout(&mut self) -> anyhow::Result<Option<Frame>> {
        tokio::time::timeout(self.reply_timeout, self.recv())
            .await
            .map_err(|_| anyhow!("no frame within {:?}", self.reply_timeout))?
    }

    /// Sends a request and waits for the frame that answers it.
    pub async fn request(&mut self, body: Body) -> anyhow::Result<Body> {
        let request_id = self.send(body).await?;
        self.reply_to(request_id).await
    }

    /// Waits for the reply to `request_id`, keeping server-initiated frames for `next_event`.
    pub async fn reply_to(&mut self, request_id: u64) -> anyhow::Result<Body> {
        // Replies to pipelined requests may arrive out of order and be parked already.
        if let Some(i) = self.events.iter().position(|f| f.request_id == request_id) {
            let frame = self.events.remove(i).expect("index from position");
            return frame.body.ok_or_else(|| anyhow!("reply without a body"));
        }
        loop {
            let frame = self
                .recv_timeout()
                .await?
                .ok_or_else(|| anyhow!("connection closed while waiting for reply {request_id}"))?;
            if frame.request_id == request_id {
                return frame.body.ok_or_else(|| anyhow!("reply without a body"));
            }
            if let Some(Body::Kicked(k)) = &frame.body {
                bail!("kicked while waiting for reply: {k:?}");
            }
            self.events.push_back(frame);
        }
    }

    /// The next frame not yet taken as a reply: server-initiated ones (request id 0) and replies
    /// nobody waited for.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Frame>> {
        if let Some(frame) = self.events.pop_front() {
            return Ok(Some(frame));
        }
        self.recv_timeout().await
    }

    /// [`Self::next_event`] with no timeout: for a listener that waits as long as the run.
    pub async fn next_event_untimed(&mut self) -> anyhow::Result<Option<Frame>> {
        if let Some(frame) = self.events.pop_front() {
            return Ok(Some(frame));
        }
        self.recv().await
    }

    /// The socket and any bytes read but not yet decoded, for a caller that takes over the
    /// connection (the load generator's hot loops).
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.read_buf)
    }

    /// Frames already received but not yet taken.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    pub async fn hello(&mut self) -> anyhow::Result<v1::HelloOk> {
        match self
            .request(Body::Hello(v1::Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: "ringchat-bench".into(),
            }))
            .await?
        {
            Body::HelloOk(ok) => {
                self.heartbeat = Some(Duration::from_millis(ok.heartbeat_interval_ms.into()));
                Ok(ok)
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn register(
        &mut self,
        username: &str,
        password: &str,
    ) -> anyhow::Result<Result<u64, ServerError>> {
        let body = self
            .request(Body::Register(v1::Register {
                username: username.into(),
                password: password.into(),
                ..Default::default()
            }))
            .await?;
        match body {
            Body::RegisterOk(ok) => Ok(Ok(ok.user_id)),
            Body::Error(e) => Ok(Err(ServerError(e))),
            other => Err(unexpected(other)),
        }
    }

    pub async fn login(
        &mut self,
        login: v1::Login,
    ) -> anyhow::Result<Result<v1::LoginOk, ServerError>> {
        match self.request(Body::Login(login)).await? {
            Body::LoginOk(ok) => Ok(Ok(ok)),
            Body::Error(e) => Ok(Err(ServerError(e))),
            other => Err(unexpected(other)),
        }
    }

    /// A login carrying `Login.resume`: its `LoginOk`, then the frames the resume sent with the
    /// login's request id (the `SyncBatch` of each conversation with news, and the closing
    /// `Resumed`). Pushes met meanwhile stay for `next_event`.
    pub async fn login_resume(
        &mut self,
        login: v1::Login,
    ) -> anyhow::Result<Result<Resumed, ServerError>> {
        let request_id = self.send(Body::Login(login)).await?;
        let ok = match self.reply_to(request_id).await? {
            Body::LoginOk(ok) => ok,
            Body::Error(e) => return Ok(Err(ServerError(e))),
            other => return Err(unexpected(other)),
        };
        let mut batches = Vec::new();
        loop {
            match self.reply_to(request_id).await? {
                Body::SyncBatch(batch) => batches.push(batch),
                Body::Resumed(done) => {
                    return Ok(Ok(Resumed {
                        login: ok,
                        batches,
                        done,
                    }));
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    pub async fn login_password(
        &mut self,
        username: &str,
        password: &str,
        device_id: &str,
    ) -> anyhow::Result<Result<v1::LoginOk, ServerError>> {
        self.login(password_login(username, password, device_id))
            .await
    }

    pub async fn login_token(
        &mut self,
        user_id: u64,
        token: &str,
        device_id: &str,
    ) -> anyhow::Result<Result<v1::LoginOk, ServerError>> {
        self.login(v1::Login {
            account: Some(login::Account::UserId(user_id)),
            credential: Some(login::Credential::Token(token.into())),
            device_id: device_id.into(),
            platform: v1::Platform::Desktop as i32,
            ..Default::default()
        })
        .await
    }

    pub async fn ping(&mut self) -> anyhow::Result<v1::Pong> {
        match self
            .request(Body::Ping(v1::Ping { client_time_ms: 1 }))
            .await?
        {
            Body::Pong(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Hello, register (if the name is new) and log in with the password.
    pub async fn signup(
        addr: impl ToSocketAddrs,
        username: &str,
        password: &str,
        device_id: &str,
    ) -> anyhow::Result<(Self, v1::LoginOk)> {
        let c = Self::connect(addr).await?;
        c.signup_on(username, password, device_id).await
    }

    /// Hello, register if the name is new (a taken name is refused before any hashing), then
    /// log in. Registering first keeps new names from counting as failed logins.
    pub async fn login_or_register(
        self,
        username: &str,
        password: &str,
        device_id: &str,
    ) -> anyhow::Result<(Self, v1::LoginOk)> {
        self.signup_on(username, password, device_id).await
    }

    async fn signup_on(
        mut self,
        username: &str,
        password: &str,
        device_id: &str,
    ) -> anyhow::Result<(Self, v1::LoginOk)> {
        self.hello().await?;
        let mut c = self;
        match c.register(username, password).await? {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::UsernameTaken => {}
            Err(e) => bail!("register {username}: {e}"),
        }
        let ok = c
            .login_password(username, password, device_id)
            .await?
            .map_err(|e| anyhow!("login {username}: {e}"))?;
        Ok((c, ok))
    }
}

impl Client {
    pub async fn send_text(
        &mut self,
        to_user_id: u64,
        client_msg_id: &str,
        text: &str,
    ) -> anyhow::Result<Result<v1::SendAck, ServerError>> {
        match self
            .request(text_message(to_user_id, client_msg_id, text))
            .await?
        {
            Body::SendAck(ack) => Ok(Ok(ack)),
            Body::Error(e) => Ok(Err(ServerError(e))),
            other => Err(unexpected(other)),
        }
    }

    pub async fn sync(
        &mut self,
        conversation_id: u64,
        after_seq: u64,
        limit: u32,
    ) -> anyhow::Result<v1::SyncBatch> {
        let body = Body::Sync(v1::Sync {
            conversation_id,
            after_seq,
            limit,
        });
        match self.request(body).await? {
            Body::SyncBatch(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Every message after `after_seq`, page by page.
    pub async fn sync_all(
        &mut self,
        conversation_id: u64,
        after_seq: u64,
    ) -> anyhow::Result<Vec<v1::Message>> {
        let mut all: Vec<v1::Message> = Vec::new();
        let mut after = after_seq;
        loop {
            let page = self.sync(conversation_id, after, 0).await?;
            if let Some(last) = page.messages.last() {
                after = last.seq;
            }
            all.extend(page.messages);
            if !page.has_more {
                return Ok(all);
            }
        }
    }

    /// Catches up as after a login or a `SyncNeeded`: every conversation of the first
    /// `Conversations` page whose `max_seq` is past what `known` (conversation → highest seq
    /// held) says is synced after it; `known` moves on. Returns the new messages.
    pub async fn catch_up(
        &mut self,
        known: &mut std::collections::HashMap<u64, u64>,
    ) -> anyhow::Result<Vec<v1::Message>> {
        let mut out = Vec::new();
        for c in self.conversations().await? {
            let have = known.get(&c.conversation_id).copied().unwrap_or(0);
            if c.max_seq > have {
                let got = self.sync_all(c.conversation_id, have).await?;
                if let Some(last) = got.last() {
                    known.insert(c.conversation_id, last.seq);
                }
                out.extend(got);
            }
        }
        Ok(out)
    }

    pub async fn history(
        &mut self,
        conversation_id: u64,
        before_seq: u64,
        limit: u32,
    ) -> anyhow::Result<v1::HistoryBatch> {
        let body = Body::History(v1::History {
            conversation_id,
            before_seq,
            limit,
        });
        match self.request(body).await? {
            Body::HistoryBatch(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    pub async fn conversations(&mut self) -> anyhow::Result<Vec<v1::Conversation>> {
        match self
            .request(Body::Conversations(v1::Conversations::default()))
            .await?
        {
            Body::ConversationList(l) => Ok(l.conversations),
            other => Err(unexpected(other)),
        }
    }

    pub async fn read(&mut self, conversation_id: u64, seq: u64) -> anyhow::Result<v1::CursorOk> {
        let body = Body::Read(v1::Read {
            conversation_id,
            seq,
        });
        match self.request(body).await? {
            Body::CursorOk(ok) => Ok(ok),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delivery_ack(
        &mut self,
        conversation_id: u64,
        seq: u64,
    ) -> anyhow::Result<v1::CursorOk> {
        let body = Body::DeliveryAck(v1::DeliveryAck {
            conversation_id,
            seq,
        });
        match self.request(body).await? {
            Body::CursorOk(ok) => Ok(ok),
            other => Err(unexpected(other)),
        }
    }

    pub async fn recall(
        &mut self,
        conversation_id: u64,
        seq: u64,
    ) -> anyhow::Result<Result<v1::RecallOk, ServerError>> {
        let body = Body::Recall(v1::Recall {
            conversation_id,
            seq,
        });
        match self.request(body).await? {
            Body::RecallOk(ok) => Ok(Ok(ok)),
            Body::Error(e) => Ok(Err(ServerError(e))),
            other => Err(unexpected(other)),
        }
    }

    /// The next `SyncNeeded` (cluster mode: pushes for this session may have been lost),
    /// handing every push met on the way to `pushed`.
    pub async fn next_sync_needed(
        &mut self,
        pushed: &mut Vec<v1::Message>,
    ) -> anyhow::Result<v1::SyncNeeded> {
        loop {
            let frame = self
                .next_event()
                .await?
                .ok_or_else(|| anyhow!("connection closed while waiting for SyncNeeded"))?;
            match frame.body {
                Some(Body::SyncNeeded(s)) => return Ok(s),
                Some(Body::Push(p)) => pushed.extend(p.message),
                Some(Body::Kicked(k)) => bail!("kicked while waiting for SyncNeeded: {k:?}"),
                _ => {}
            }
        }
    }

    /// The next pushed message, passing over other server-initiated frames (receipts, typing).
    pub async fn next_push(&mut self) -> anyhow::Result<v1::Message> {
        loop {
            let frame = self
                .next_event()
                .await?
                .ok_or_else(|| anyhow!("connection closed while waiting for a push"))?;
            match frame.body {
                Some(Body::Push(p)) => {
                    return p.message.ok_or_else(|| anyhow!("push without a message"));
                }
                Some(Body::Kicked(k)) => bail!("kicked while waiting for a push: {k:?}"),
                _ => {}
            }
        }
    }
}

/// What a login with `Login.resume` got.
#[derive(Debug, Clone)]
pub struct Resumed {
    pub login: v1::LoginOk,
    /// One per conversation with news, in the order sent.
    pub batches: Vec<v1::SyncBatch>,
    pub done: v1::Resumed,
}

/// A TCP connection with no Nagle delay, bound to `source` when given (connections beyond one
/// address's ephemeral ports need several).
pub async fn tcp_connect_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding source address {ip}"))?;
    }
    let stream = socket.connect(addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A `Send` of UTF-8 text.
pub fn text_message(to_user_id: u64, client_msg_id: &str, text: &str) -> Body {
    Body::Send(v1::Send {
        client_msg_id: client_msg_id.into(),
        to_user_id,
        content_type: v1::ContentType::Text as i32,
        content: bytes::Bytes::copy_from_slice(text.as_bytes()),
        ..Default::default()
    })
}

/// The conversation id both sides of a 1:1 chat share.
pub fn conversation_id(a: u64, b: u64) -> u64 {
    (a.min(b) << 32) | a.max(b)
}

pub fn password_login(username: &str, password: &str, device_id: &str) -> v1::Login {
    v1::Login {
        account: Some(login::Account::Username(username.into())),
        credential: Some(login::Credential::Password(password.into())),
        device_id: device_id.into(),
        platform: v1::Platform::Desktop as i32,
        ..Default::default()
    }
}

fn unexpected(body: Body) -> anyhow::Error {
    match body {
        Body::Error(e) => anyhow!("server error: {}", ServerError(e)),
        other => anyhow!("unexpected reply: {}", ringchat_proto::body_name(&other)),
    }
}
