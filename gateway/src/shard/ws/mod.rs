//! WebSocket on top of a framed connection: one protobuf `Frame` per binary message, or the same
//! `Frame` in the canonical protobuf JSON mapping per text message. A connection is answered in
//! the format of the last message it sent.

pub mod codec;
pub mod http;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use ringchat_proto::Frame;
use ringchat_proto::v1::{ErrorCode, KickReason};

use super::framed::{Conn, End};
use codec::{
    OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, SERVER_HEADER_BYTES_MAX,
    WsError, close_code,
};

/// Per-connection WebSocket state. Holds no buffer while idle, except a fragmented message being
/// assembled (bounded by `frame_bytes_max`).
#[derive(Default)]
pub(in crate::shard) struct State {
    /// The client speaks JSON (text messages): answer in text too.
    pub json: bool,
    /// Payload of the latest ping not answered yet.
    pub pong: Option<Vec<u8>>,
    /// A fragmented message: its opcode and the payload so far.
    pub message: Option<(u8, BytesMut)>,
}

/// Handles every complete WebSocket frame at the front of `buf`.
pub(in crate::shard) async fn handle_input(conn: &mut Conn, buf: &mut BytesMut) -> Result<(), End> {
    let limit = conn.session.shard.limits.frame_bytes_max;
    loop {
        if conn.session.shared.close.get().is_some() {
            return Ok(());
        }
        let h = match codec::parse_header(buf, limit) {
            Ok(Some(h)) if buf.len() >= h.frame_bytes() => h,
            Ok(_) => return Ok(()),
            Err(e) => return protocol_error(conn, &e),
        };
        // A client holding a fragmented message open must finish it within the idle timeout:
        // only data frames count as liveness then, so pings cannot pin its buffer forever.
        if conn.ws.message.is_none() || matches!(h.opcode, OP_TEXT | OP_BINARY | OP_CONTINUATION) {
            conn.seen();
        }
        let payload = h.header_bytes..h.frame_bytes();
        codec::unmask(&mut buf[payload.clone()], h.mask);
        match h.opcode {
            OP_PING => conn.ws.pong = Some(buf[payload].to_vec()),
            OP_PONG => {}
            OP_CLOSE => {
                return match codec::parse_close(&buf[payload]) {
                    Ok(code) => Err(End::PeerClosed(Some(code))),
                    Err(e) => protocol_error(conn, &e),
                };
            }
            OP_TEXT | OP_BINARY if conn.ws.message.is_none() => {
                if h.fin {
                    let decoded = decode(conn, h.opcode, &buf[payload]);
                    buf.advance(h.frame_bytes());
                    deliver(conn, decoded).await?;
                    continue;
                }
                conn.ws.message = Some((h.opcode, BytesMut::from(&buf[payload])));
            }
            OP_CONTINUATION if conn.ws.message.is_some() => {
                let (opcode, message) = conn.ws.message.as_mut().expect("checked");
                let len_bytes = (message.len() + payload.len()) as u64;
                if len_bytes > limit as u64 {
                    let e = WsError::TooLarge {
                        len_bytes,
                        limit_bytes: limit,
                    };
                    return protocol_error(conn, &e);
                }
                message.extend_from_slice(&buf[payload]);
                let opcode = *opcode;
                if h.fin {
                    let (_, message) = conn.ws.message.take().expect("checked");
                    let decoded = decode(conn, opcode, &message);
                    buf.advance(h.frame_bytes());
                    deliver(conn, decoded).await?;
                    continue;
                }
            }
            _ => return protocol_error(conn, &WsError::Fragmentation),
        }
        buf.advance(h.frame_bytes());
    }
}

/// A message's `Frame`, or the error that closes the connection.
fn decode(conn: &mut Conn, opcode: u8, payload: &[u8]) -> Result<Frame, String> {
    if opcode == OP_BINARY {
        conn.ws.json = false;
        return Frame::decode(payload).map_err(|e| format!("not a protobuf Frame: {e}"));
    }
    conn.ws.json = true;
    let text = std::str::from_utf8(payload).map_err(|_| WsError::Utf8.to_string())?;
    serde_json::from_str(text).map_err(|e| format!("not a Frame in protobuf JSON: {e}"))
}

async fn deliver(conn: &mut Conn, decoded: Result<Frame, String>) -> Result<(), End> {
    match decoded {
        Ok(frame) => conn.on_frame(frame).await,
        Err(message) => {
            super::framed::set_close_code(conn, close_code::INVALID_PAYLOAD);
            conn.session.fail(0, ErrorCode::BadFrame, message);
            Ok(())
        }
    }
}

/// Reports a broken frame with an `Error` and a close (the session then ends).
fn protocol_error(conn: &mut Conn, e: &WsError) -> Result<(), End> {
    let code = match e {
        WsError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        _ => ErrorCode::BadFrame,
    };
    super::framed::set_close_code(conn, e.close_code());
    conn.session.fail(0, code, e.to_string());
    Ok(())
}

/// Appends the answer to the latest ping, if one is due.
pub(in crate::shard) fn put_pong(state: &mut State, out: &mut BytesMut) {
    if let Some(payload) = state.pong.take() {
        codec::put_header(out, OP_PONG, payload.len());
        out.put_slice(&payload);
    }
}

/// Appends one queued frame (4-byte length + protobuf) as a WebSocket message: binary without
/// the prefix, or text rendered to JSON for this connection.
pub(in crate::shard) fn put_frame(state: &State, frame: &Bytes, out: &mut BytesMut) {
    let body = &frame[ringchat_proto::LEN_PREFIX_BYTES..];
    if !state.json {
        codec::put_header(out, OP_BINARY, body.len());
        out.put_slice(body);
        return;
    }
    let decoded = match Frame::decode(body) {
        Ok(f) => f,
        Err(err) => {
            // We encoded it ourselves: a failure here is a bug, not client input.
            tracing::error!(%err, "an outbound frame does not decode");
            return;
        }
    };
    // Leave room for the longest header, render, then move the JSON next to the real header.
    let at = out.len();
    out.put_bytes(0, SERVER_HEADER_BYTES_MAX);
    if let Err(err) = serde_json::to_writer(out.writer_ref(), &decoded) {
        tracing::error!(%err, "an outbound frame does not render as JSON");
        out.truncate(at);
        return;
    }
    let json_bytes = out.len() - at - SERVER_HEADER_BYTES_MAX;
    let mut header = BytesMut::new();
    codec::put_header(&mut header, OP_TEXT, json_bytes);
    let start = at + SERVER_HEADER_BYTES_MAX - header.len();
    out[start..start + header.len()].copy_from_slice(&header);
    out.copy_within(start.., at);
    out.truncate(at + header.len() + json_bytes);
}

/// `std::io::Write` into a `BytesMut` without giving it up.
trait WriterRef {
    fn writer_ref(&mut self) -> bytes::buf::Writer<&mut BytesMut>;
}

impl WriterRef for BytesMut {
    fn writer_ref(&mut self) -> bytes::buf::Writer<&mut BytesMut> {
        BufMut::writer(self)
    }
}

/// The close code sent after `Kicked` (the reason text is the kick's name).
pub(in crate::shard) fn kick_close_code(reason: KickReason) -> u16 {
    match reason {
        KickReason::ServerShutdown => close_code::GOING_AWAY,
        _ => close_code::POLICY_VIOLATION,
    }
}

/// The close code sent after an `Error` that ends the connection.
pub(in crate::shard) fn error_close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::FrameTooLarge => close_code::MESSAGE_TOO_BIG,
        ErrorCode::BadFrame => close_code::INVALID_PAYLOAD,
        ErrorCode::ServerFull => close_code::TRY_AGAIN_LATER,
        ErrorCode::Unavailable => close_code::GOING_AWAY,
        ErrorCode::Internal => close_code::INTERNAL_ERROR,
        _ => close_code::POLICY_VIOLATION,
    }
}
