//! The load generator's two ways to reach the server: length-prefixed frames over TCP, or one
//! protobuf frame per binary WebSocket message (`/ws`).

use anyhow::{Context, anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use prost::Message as _;
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, Frame, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, password_login};

/// Largest frame the load generator accepts from the server.
const FRAME_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Length-prefixed frames over TCP (`gateway.tcp_listen`).
    Tcp,
    /// Binary WebSocket messages (`gateway.ws_listen`, path /ws).
    Ws,
}

type Ws = WebSocketStream<TcpStream>;

/// A logged-in connection, before it is split for the load loops.
pub enum Link {
    Tcp(Client),
    Ws(Ws),
}

impl Link {
    /// Connects, says hello, registers the name if new, and logs in.
    pub async fn sign_up(
        transport: Transport,
        addr: std::net::SocketAddr,
        username: &str,
        password: &str,
        device_id: &str,
    ) -> anyhow::Result<(Link, u64)> {
        match transport {
            Transport::Tcp => {
                let (client, ok) = Client::connect(addr)
                    .await?
                    .login_or_register(username, password, device_id)
                    .await?;
                Ok((Link::Tcp(client), ok.user_id))
            }
            Transport::Ws => {
                let stream = TcpStream::connect(addr).await.context("connecting")?;
                stream.set_nodelay(true)?;
                let (mut ws, _) =
                    tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
                        .await
                        .context("WebSocket upgrade")?;
                let hello = Body::Hello(v1::Hello {
                    protocol_version: PROTOCOL_VERSION,
                    client_name: "ringchat-bench".into(),
                });
                ws_request(&mut ws, 1, hello).await?;
                let register = Body::Register(v1::Register {
                    username: username.into(),
                    password: password.into(),
                    ..Default::default()
                });
                match ws_request(&mut ws, 2, register).await? {
                    Body::RegisterOk(_) => {}
                    Body::Error(e) if e.code == ErrorCode::UsernameTaken as i32 => {}
                    other => bail!("register {username}: {other:?}"),
                }
                let login = Body::Login(password_login(username, password, device_id));
                match ws_request(&mut ws, 3, login).await? {
                    Body::LoginOk(ok) => Ok((Link::Ws(ws), ok.user_id)),
                    other => bail!("login {username}: {other:?}"),
                }
            }
        }
    }

    pub fn split(self) -> (FrameReader, FrameWriter) {
        match self {
            Link::Tcp(client) => {
                let (stream, leftover) = client.into_parts();
                let (read, write) = stream.into_split();
                (FrameReader::Tcp(read, leftover), FrameWriter::Tcp(write))
            }
            Link::Ws(ws) => {
                let (sink, stream) = ws.split();
                (FrameReader::Ws(stream), FrameWriter::Ws(sink))
            }
        }
    }
}

/// Sends one request and waits for its reply, passing over anything else.
async fn ws_request(ws: &mut Ws, request_id: u64, body: Body) -> anyhow::Result<Body> {
    let frame = Frame {
        request_id,
        body: Some(body),
    };
    ws.send(Message::Binary(frame.encode_to_vec().into()))
        .await?;
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("closed while waiting for reply {request_id}"))??;
        if let Message::Binary(data) = msg {
            let reply = Frame::decode(data)?;
            if reply.request_id == request_id {
                return reply.body.ok_or_else(|| anyhow!("reply without a body"));
            }
        }
    }
}

pub enum FrameWriter {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

impl FrameWriter {
    /// Writes the frames with one syscall (TCP) or one flush (WebSocket).
    pub async fn write(&mut self, frames: &[Frame], scratch: &mut BytesMut) -> anyhow::Result<()> {
        match self {
            FrameWriter::Tcp(w) => {
                scratch.clear();
                for f in frames {
                    ringchat_proto::encode(f, scratch);
                }
                w.write_all(scratch).await?;
            }
            FrameWriter::Ws(sink) => {
                for f in frames {
                    sink.feed(Message::Binary(Bytes::from(f.encode_to_vec())))
                        .await?;
                }
                sink.flush().await?;
            }
        }
        Ok(())
    }
}

pub enum FrameReader {
    Tcp(OwnedReadHalf, BytesMut),
    Ws(SplitStream<Ws>),
}

impl FrameReader {
    /// The next frame already received, without waiting: what is left of the last read batch.
    pub fn next_buffered(&mut self) -> anyhow::Result<Option<Frame>> {
        match self {
            FrameReader::Tcp(_, buf) => Ok(ringchat_proto::decode(buf, FRAME_BYTES_MAX)?),
            FrameReader::Ws(stream) => loop {
                match stream.next().now_or_never() {
                    None | Some(None) | Some(Some(Ok(Message::Close(_)))) => return Ok(None),
                    Some(Some(Err(e))) => return Err(e.into()),
                    Some(Some(Ok(Message::Binary(data)))) => {
                        return Ok(Some(Frame::decode(data)?));
                    }
                    Some(Some(Ok(_))) => {}
                }
            },
        }
    }

    /// The next frame; `None` when the server closed the connection.
    pub async fn next(&mut self) -> anyhow::Result<Option<Frame>> {
        match self {
            FrameReader::Tcp(read, buf) => loop {
                if let Some(frame) = ringchat_proto::decode(buf, FRAME_BYTES_MAX)? {
                    return Ok(Some(frame));
                }
                buf.reserve(64 * 1024);
                if read.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            },
            FrameReader::Ws(stream) => loop {
                match stream.next().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Binary(data))) => return Ok(Some(Frame::decode(data)?)),
                    Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Ok(_)) => {}
                }
            },
        }
    }
}
