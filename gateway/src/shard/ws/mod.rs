//! WebSocket framing: one protobuf `Frame` per binary message, or the same `Frame` in the
//! canonical protobuf JSON mapping per text message. A connection is answered in the format of
//! the last message it sent. Parsing only: the connection loop owns every timer and limit.

pub mod codec;
pub mod http;

use std::cell::OnceCell;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use ringchat_proto::Frame;
use ringchat_proto::v1::{ErrorCode, KickReason};

use super::Close;
use super::framing::{FramingError, Goodbye, Input};
use codec::{
    OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, SERVER_HEADER_BYTES_MAX,
    WsError, close_code,
};

/// Per-connection WebSocket state. Holds no buffer while idle, except a fragmented message being
/// assembled (bounded by `frame_bytes_max`).
#[derive(Default)]
pub(in crate::shard) struct State {
    /// The client speaks JSON (text messages): answer in text too.
    json: bool,
    /// Payload of the latest ping not answered yet (at most `CONTROL_PAYLOAD_MAX` bytes).
    pub pong: Option<Vec<u8>>,
    /// A fragmented message: its opcode and the payload so far.
    message: Option<(u8, BytesMut)>,
}

impl State {
    /// Takes the next WebSocket frame off the front of `buf`.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        frame_bytes_max: usize,
    ) -> Result<Option<Input>, FramingError> {
        let h = match codec::parse_header(buf, frame_bytes_max) {
            Ok(Some(h)) if buf.len() >= h.frame_bytes() => h,
            Ok(_) => return Ok(None),
            Err(e) => return Err(protocol_error(&e)),
        };
        // A client holding a fragmented message open must finish it within the idle timeout,
        // as a partial frame over TCP: nothing counts as liveness until the message is whole
        // (then it is a frame), so neither pings nor more fragments (empty ones cost nothing)
        // can pin its buffer forever.
        let alive = self.message.is_none();
        let payload = h.header_bytes..h.frame_bytes();
        codec::unmask(&mut buf[payload.clone()], h.mask);
        let input = match h.opcode {
            OP_PING => {
                self.pong = Some(buf[payload].to_vec());
                Input::Progress { alive }
            }
            OP_PONG => Input::Progress { alive },
            OP_CLOSE => {
                let code = codec::parse_close(&buf[payload]).map_err(|e| protocol_error(&e))?;
                Input::PeerClosed(code)
            }
            OP_TEXT | OP_BINARY if self.message.is_none() => {
                if h.fin {
                    Input::Frame(self.decode_message(h.opcode, &buf[payload])?)
                } else {
                    self.message = Some((h.opcode, BytesMut::from(&buf[payload])));
                    Input::Progress { alive: false }
                }
            }
            OP_CONTINUATION if self.message.is_some() => {
                let (opcode, message) = self.message.as_mut().expect("checked");
                let len_bytes = (message.len() + payload.len()) as u64;
                if len_bytes > frame_bytes_max as u64 {
                    return Err(protocol_error(&WsError::TooLarge {
                        len_bytes,
                        limit_bytes: frame_bytes_max,
                    }));
                }
                message.extend_from_slice(&buf[payload]);
                let opcode = *opcode;
                if h.fin {
                    let (_, message) = self.message.take().expect("checked");
                    Input::Frame(self.decode_message(opcode, &message)?)
                } else {
                    Input::Progress { alive }
                }
            }
            _ => return Err(protocol_error(&WsError::Fragmentation)),
        };
        buf.advance(h.frame_bytes());
        Ok(Some(input))
    }

    /// A whole message's `Frame`.
    fn decode_message(&mut self, opcode: u8, payload: &[u8]) -> Result<Frame, FramingError> {
        let invalid = |message: String| FramingError {
            code: ErrorCode::BadFrame,
            message,
            ws_close: Some(close_code::INVALID_PAYLOAD),
        };
        if opcode == OP_BINARY {
            self.json = false;
            return Frame::decode(payload)
                .map_err(|e| invalid(format!("not a protobuf Frame: {e}")));
        }
        self.json = true;
        let text = std::str::from_utf8(payload).map_err(|_| invalid(WsError::Utf8.to_string()))?;
        serde_json::from_str(text)
            .map_err(|e| invalid(format!("not a Frame in protobuf JSON: {e}")))
    }

    /// Appends the answer to the latest ping, if one is due.
    pub fn put_pong(&mut self, out: &mut BytesMut) {
        if let Some(payload) = self.pong.take() {
            codec::put_header(out, OP_PONG, payload.len());
            out.put_slice(&payload);
        }
    }

    /// Appends one queued frame (4-byte length + protobuf) as a WebSocket message: binary without
    /// the prefix, or text rendered to JSON. `text`: a fan-out's (`outbound::Fanout`) slot for
    /// its text message, the same for every connection of the shard: the first JSON client
    /// renders it, the others copy it.
    pub fn put_frame(&self, frame: &Bytes, text: Option<&OnceCell<Bytes>>, out: &mut BytesMut) {
        let body = &frame[ringchat_proto::LEN_PREFIX_BYTES..];
        if !self.json {
            codec::put_header(out, OP_BINARY, body.len());
            out.put_slice(body);
            return;
        }
        match text {
            Some(text) => match text.get() {
                Some(rendered) => out.put_slice(rendered),
                None => {
                    let at = out.len();
                    put_text(body, out);
                    // Kept at exactly its length (a frame that did not render: empty): the
                    // shard's budget charges the cached text by its length.
                    let _ = text.set(Bytes::copy_from_slice(&out[at..]));
                }
            },
            None => put_text(body, out),
        }
    }
}

/// Appends `body` (an encoded `Frame`) as a text message of its JSON: nothing if it does not
/// render (logged: we encoded it ourselves, so that is a bug, not client input).
fn put_text(body: &[u8], out: &mut BytesMut) {
    #[cfg(test)]
    JSON_RENDERS.with(|n| n.set(n.get() + 1));
    let decoded = match Frame::decode(body) {
        Ok(f) => f,
        Err(err) => {
            tracing::error!(%err, "an outbound frame does not decode");
            return;
        }
    };
    // Leave room for the longest header, render, then move the JSON next to the real header.
    let at = out.len();
    out.put_bytes(0, SERVER_HEADER_BYTES_MAX);
    if let Err(err) = serde_json::to_writer(BufMut::writer(&mut *out), &decoded) {
        tracing::error!(%err, "an outbound frame does not render as JSON");
        out.truncate(at);
        return;
    }
    let json_bytes = out.len() - at - SERVER_HEADER_BYTES_MAX;
    let (header, header_bytes) = codec::header(OP_TEXT, json_bytes);
    let start = at + SERVER_HEADER_BYTES_MAX - header_bytes;
    out[start..start + header_bytes].copy_from_slice(&header[..header_bytes]);
    out.copy_within(start.., at);
    out.truncate(at + header_bytes + json_bytes);
}

#[cfg(test)]
thread_local! {
    /// Frames rendered to JSON on this thread (a test's: tests run one per thread).
    pub(in crate::shard) static JSON_RENDERS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
impl State {
    /// The state of a connection that speaks JSON.
    pub fn json() -> Self {
        Self {
            json: true,
            ..Self::default()
        }
    }
}

/// A broken WebSocket frame: `Error` with the matching code, and the close code it calls for.
fn protocol_error(e: &WsError) -> FramingError {
    let code = match e {
        WsError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        _ => ErrorCode::BadFrame,
    };
    FramingError {
        code,
        message: e.to_string(),
        ws_close: Some(e.close_code()),
    }
}

/// The close frame's code and reason for how the connection ends.
pub(super) fn close_for(goodbye: Goodbye) -> (u16, &'static str) {
    match goodbye {
        Goodbye::Close(Close::Kick(reason), _) => (kick_close_code(reason), reason.as_str_name()),
        Goodbye::Close(Close::AfterError(code), ws_close) => (
            ws_close.unwrap_or_else(|| error_close_code(code)),
            code.as_str_name(),
        ),
        Goodbye::Close(Close::Refused(code), _) => {
            (close_code::TRY_AGAIN_LATER, code.as_str_name())
        }
        // Not sent (the client is gone: `Conn::finish` says nothing), named for completeness.
        Goodbye::Close(Close::PeerGone, _) => (close_code::NORMAL, ""),
        Goodbye::Echo(code) => (code, ""),
    }
}

/// The close code sent after `Kicked` (the reason text is the kick's name).
fn kick_close_code(reason: KickReason) -> u16 {
    match reason {
        KickReason::ServerShutdown | KickReason::Reconnect => close_code::GOING_AWAY,
        _ => close_code::POLICY_VIOLATION,
    }
}

/// The close code sent after an `Error` that ends the connection.
fn error_close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::FrameTooLarge => close_code::MESSAGE_TOO_BIG,
        ErrorCode::BadFrame => close_code::INVALID_PAYLOAD,
        ErrorCode::ServerFull => close_code::TRY_AGAIN_LATER,
        // At shutdown; a busy server's is `Close::Refused`.
        ErrorCode::Unavailable => close_code::GOING_AWAY,
        ErrorCode::Internal => close_code::INTERNAL_ERROR,
        _ => close_code::POLICY_VIOLATION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::client_frame;

    /// 1001 is for a node going away (a shutdown's kick or UNAVAILABLE); a client turned away
    /// for now, whatever the code, is told 1013 and comes back after `retry_after_ms`.
    #[test]
    fn shutdown_closes_going_away_and_a_refusal_try_again_later() {
        let close = |c| close_for(Goodbye::Close(c, None));
        assert_eq!(
            close(Close::Kick(KickReason::ServerShutdown)),
            (1001, "KICK_REASON_SERVER_SHUTDOWN")
        );
        assert_eq!(
            close(Close::AfterError(ErrorCode::Unavailable)),
            (1001, "ERROR_CODE_UNAVAILABLE")
        );
        assert_eq!(
            close(Close::Refused(ErrorCode::Unavailable)),
            (1013, "ERROR_CODE_UNAVAILABLE")
        );
        assert_eq!(
            close(Close::Refused(ErrorCode::ServerFull)),
            (1013, "ERROR_CODE_SERVER_FULL")
        );
    }

    /// What `decode` makes of each frame in turn, as `Some(alive)` for progress and `None`
    /// for a whole message.
    fn liveness(frames: &[Vec<u8>]) -> Vec<Option<bool>> {
        let mut state = State::default();
        let mut buf = BytesMut::new();
        for f in frames {
            buf.extend_from_slice(f);
        }
        let mut out = Vec::new();
        while let Some(input) = state.decode(&mut buf, 65_536).unwrap() {
            out.push(match input {
                Input::Progress { alive } => Some(alive),
                Input::Frame(_) => None,
                Input::PeerClosed(_) => panic!("no close was sent"),
            });
        }
        out
    }

    #[test]
    fn an_open_fragmented_message_is_no_sign_of_life_until_it_is_whole() {
        let frame = Frame {
            request_id: 7,
            body: Some(ringchat_proto::Body::Ping(ringchat_proto::v1::Ping {
                client_time_ms: 7,
            })),
        }
        .encode_to_vec();
        let (head, tail) = frame.split_at(frame.len() / 2);
        assert_eq!(
            liveness(&[
                client_frame(true, OP_PING, b"p"),
                client_frame(false, OP_BINARY, head),
                client_frame(true, OP_PING, b"p"),
                client_frame(false, OP_CONTINUATION, b""),
                client_frame(false, OP_CONTINUATION, b""),
                client_frame(true, OP_CONTINUATION, tail),
                client_frame(true, OP_PONG, b""),
            ]),
            [
                Some(true),
                Some(false),
                Some(false),
                Some(false),
                Some(false),
                None,
                Some(true)
            ]
        );
    }
}
