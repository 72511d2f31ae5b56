//! WebSocket framing (RFC 6455), server side: parses masked client frames in the read buffer
//! and writes unmasked server frames. Pure: bytes in, headers out, no I/O, no allocation.

use bytes::{BufMut, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest payload of a control frame (ping, pong, close).
pub const CONTROL_PAYLOAD_MAX: usize = 125;
/// Largest header the server writes: 2 bytes + 8-byte extended length.
pub const SERVER_HEADER_BYTES_MAX: usize = 10;

/// Close codes (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsError {
    #[error("client frames must be masked")]
    Unmasked,
    #[error("reserved bits are set but no extension was negotiated")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("control frames must be unfragmented and at most 125 bytes")]
    BadControl,
    #[error("message of {len_bytes} bytes is over the limit of {limit_bytes} bytes")]
    TooLarge { len_bytes: u64, limit_bytes: usize },
    #[error("continuation frame without a message, or a new message inside a fragmented one")]
    Fragmentation,
    #[error("text message is not valid UTF-8")]
    Utf8,
    #[error("close frame payload is malformed")]
    BadClose,
}

impl WsError {
    /// The close code a server sends for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::TooLarge { .. } => close_code::MESSAGE_TOO_BIG,
            WsError::Utf8 => close_code::INVALID_PAYLOAD,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    pub header_bytes: usize,
    pub payload_bytes: usize,
}

impl Header {
    pub fn frame_bytes(&self) -> usize {
        self.header_bytes + self.payload_bytes
    }
}

/// Parses the header at the front of `buf`. `Ok(None)`: more bytes needed. A payload above
/// `payload_bytes_max` is rejected as soon as its length is known, before it arrives.
pub fn parse_header(buf: &[u8], payload_bytes_max: usize) -> Result<Option<Header>, WsError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(WsError::Opcode(opcode));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10)
        }
        n => (u64::from(n), 2),
    };
    let control = opcode & 0x8 != 0;
    if control && (!fin || len > CONTROL_PAYLOAD_MAX as u64) {
        return Err(WsError::BadControl);
    }
    if len > payload_bytes_max as u64 {
        return Err(WsError::TooLarge {
            len_bytes: len,
            limit_bytes: payload_bytes_max,
        });
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    at += 4;
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_bytes: at,
        // Below payload_bytes_max, which is a usize.
        payload_bytes: len as usize,
    }))
}

/// Unmasks a payload in place.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Appends the header of one unfragmented, unmasked server frame.
pub fn put_header(dst: &mut BytesMut, opcode: u8, payload_bytes: usize) {
    let (header, len) = header(opcode, payload_bytes);
    dst.put_slice(&header[..len]);
}

/// The header of one unfragmented, unmasked server frame, on the stack: its first `len` bytes.
pub fn header(opcode: u8, payload_bytes: usize) -> ([u8; SERVER_HEADER_BYTES_MAX], usize) {
    let mut h = [0u8; SERVER_HEADER_BYTES_MAX];
    h[0] = 0x80 | opcode;
    let len = if payload_bytes < 126 {
        h[1] = payload_bytes as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_bytes) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(payload_bytes as u64).to_be_bytes());
        10
    };
    (h, len)
}

/// Appends a whole close frame; `reason` is cut to fit a control frame.
pub fn put_close(dst: &mut BytesMut, code: u16, reason: &str) {
    let mut end = reason.len().min(CONTROL_PAYLOAD_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    put_header(dst, OP_CLOSE, 2 + end);
    dst.put_u16(code);
    dst.put_slice(&reason.as_bytes()[..end]);
}

/// Reads the code of a client's close payload (unmasked); an empty payload is 1005 (no code),
/// answered with 1000.
pub fn parse_close(payload: &[u8]) -> Result<u16, WsError> {
    match payload {
        [] => Ok(close_code::NORMAL),
        [_] => Err(WsError::BadClose),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid || std::str::from_utf8(reason).is_err() {
                return Err(WsError::BadClose);
            }
            Ok(code)
        }
    }
}

/// A client's (masked) frame, for tests.
#[cfg(test)]
pub(super) fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unmasks_every_length_form() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut bytes = client_frame(true, OP_BINARY, &payload);
            let h = parse_header(&bytes, 100_000).unwrap().unwrap();
            assert_eq!(h.payload_bytes, len);
            assert_eq!(h.frame_bytes(), bytes.len());
            for cut in 0..h.header_bytes {
                assert_eq!(parse_header(&bytes[..cut], 100_000), Ok(None), "cut {cut}");
            }
            let p = &mut bytes[h.header_bytes..];
            unmask(p, h.mask);
            assert_eq!(p, &payload[..]);
        }
    }

    #[test]
    fn rejects_bad_frames() {
        let mut unmasked = client_frame(true, OP_TEXT, b"hi");
        unmasked[1] &= 0x7F;
        assert_eq!(parse_header(&unmasked, 10), Err(WsError::Unmasked));
        let mut rsv = client_frame(true, OP_TEXT, b"hi");
        rsv[0] |= 0x40;
        assert_eq!(parse_header(&rsv, 10), Err(WsError::ReservedBits));
        assert_eq!(
            parse_header(&client_frame(true, 0x3, b""), 10),
            Err(WsError::Opcode(3))
        );
        assert_eq!(
            parse_header(&client_frame(false, OP_PING, b""), 10),
            Err(WsError::BadControl)
        );
        let big = client_frame(true, OP_BINARY, &[0; 300]);
        assert_eq!(
            parse_header(&big[..4], 200),
            Err(WsError::TooLarge {
                len_bytes: 300,
                limit_bytes: 200
            }),
            "rejected on the length alone"
        );
    }

    #[test]
    fn server_frames_and_close_payloads() {
        let mut dst = BytesMut::new();
        put_header(&mut dst, OP_BINARY, 70_000);
        assert_eq!(&dst[..], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        for (len, want) in [
            (125, &[0x81, 125][..]),
            (126, &[0x81, 126, 0, 126][..]),
            (65_535, &[0x81, 126, 0xFF, 0xFF][..]),
        ] {
            let (h, n) = header(OP_TEXT, len);
            assert_eq!(&h[..n], want, "{len}");
        }
        dst.clear();
        dst.clear();
        put_close(&mut dst, 1008, &"x".repeat(200));
        assert_eq!(dst.len(), 2 + CONTROL_PAYLOAD_MAX);
        assert_eq!(&dst[2..4], &1008u16.to_be_bytes());
        assert_eq!(parse_close(&[]), Ok(1000));
        assert_eq!(parse_close(&[0x03, 0xE8, b'o', b'k']), Ok(1000));
        assert_eq!(parse_close(&[0x03]), Err(WsError::BadClose));
        assert_eq!(parse_close(&1005u16.to_be_bytes()), Err(WsError::BadClose));
    }
}
