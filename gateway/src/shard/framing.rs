//! How bytes become client frames and frames become bytes, per listener: 4-byte length-prefixed
//! protobuf (TCP, TLS) or WebSocket messages (ws, wss). A framing layer only parses and writes
//! bytes; every timer, limit and close decision stays in the connection loop (conn.rs).

use std::cell::OnceCell;

use bytes::{Bytes, BytesMut};
use ringchat_proto::Frame;
use ringchat_proto::codec::{self, CodecError};
use ringchat_proto::v1::ErrorCode;

use super::Close;
use super::ws;

/// What the framing layer took off the front of the input.
pub(super) enum Input {
    /// A complete client frame.
    Frame(Frame),
    /// Bytes that carry no frame (a WebSocket control frame or fragment); `alive` says whether
    /// they count as liveness.
    Progress { alive: bool },
    /// The peer's WebSocket close: answer with this code, then close.
    PeerClosed(u16),
}

/// Input that breaks the framing: the client gets `Error{code}` and the connection closes.
#[derive(Debug)]
pub(super) struct FramingError {
    pub code: ErrorCode,
    pub message: String,
    /// The WebSocket close code, when it says more than `code` does.
    pub ws_close: Option<u16>,
}

impl From<CodecError> for FramingError {
    fn from(e: CodecError) -> Self {
        let code = match e {
            CodecError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            CodecError::Malformed(_) => ErrorCode::BadFrame,
        };
        Self {
            code,
            message: e.to_string(),
            ws_close: None,
        }
    }
}

/// How a connection's bytes are framed.
pub(super) enum Framing {
    /// 4-byte big-endian length + protobuf `Frame`.
    LenPrefixed,
    /// One `Frame` per WebSocket message, after an HTTP upgrade. Boxed: only WebSocket
    /// connections pay for its state.
    WebSocket(Box<ws::State>),
}

impl Framing {
    pub fn websocket() -> Self {
        Self::WebSocket(Box::default())
    }

    /// Whether the connection opens with an HTTP request (upgrade, or a page).
    pub fn opens_with_http(&self) -> bool {
        matches!(self, Self::WebSocket(_))
    }

    /// Takes the next unit off the front of `buf`; `Ok(None)` when more bytes are needed.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        frame_bytes_max: usize,
    ) -> Result<Option<Input>, FramingError> {
        match self {
            Self::LenPrefixed => Ok(codec::decode(buf, frame_bytes_max)?.map(Input::Frame)),
            Self::WebSocket(state) => state.decode(buf, frame_bytes_max),
        }
    }

    /// Appends one queued frame (encoded with its length prefix); `text`: a shared frame's slot
    /// for its WebSocket text message (`ws::State::put_frame`).
    pub fn put_frame(&self, frame: &Bytes, text: Option<&OnceCell<Bytes>>, out: &mut BytesMut) {
        match self {
            Self::LenPrefixed => out.extend_from_slice(frame),
            Self::WebSocket(state) => state.put_frame(frame, text, out),
        }
    }

    /// Whether a control reply (a WebSocket pong) waits to be written.
    pub fn has_control(&self) -> bool {
        matches!(self, Self::WebSocket(state) if state.pong.is_some())
    }

    /// Appends any waiting control reply.
    pub fn put_control(&mut self, out: &mut BytesMut) {
        if let Self::WebSocket(state) = self {
            state.put_pong(out);
        }
    }

    /// Appends the framing's own goodbye (a WebSocket close frame) for how the connection ends.
    pub fn put_goodbye(&self, goodbye: Goodbye, out: &mut BytesMut) {
        if let Self::WebSocket(_) = self {
            let (code, reason) = ws::close_for(goodbye);
            ws::codec::put_close(out, code, reason);
        }
    }
}

/// Why the server says goodbye, for framings that say it in their own terms.
#[derive(Debug, Clone, Copy)]
pub(super) enum Goodbye {
    Close(Close, Option<u16>),
    /// Echo of the peer's close.
    Echo(u16),
}
