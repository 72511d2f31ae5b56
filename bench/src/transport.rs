//! The load generator's two ways to reach the server: length-prefixed frames over TCP, or one
//! protobuf frame per binary WebSocket message (`/ws`).

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use prost::Message as _;
use ringchat_proto::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Client;

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

/// A WebSocket to the server's `/ws`.
pub type Ws = WebSocketStream<TcpStream>;

/// A logged-in connection (see [`crate::signup`]), before it is split for the load loops.
pub enum Link {
    Tcp(Client),
    Ws(Ws),
}

impl Link {
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
