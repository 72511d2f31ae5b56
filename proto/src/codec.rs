//! Length-prefixed framing: a 4-byte big-endian length `N`, then `N` bytes of one encoded `Frame`.
//!
//! `decode` never allocates for the length check and never consumes a partial frame, so a caller
//! can keep reading into the same buffer and call it again.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::v1::Frame;

/// Size of the length prefix in bytes.
pub const LEN_PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The length prefix announces more than the limit; the stream cannot be resynchronised.
    #[error("frame of {len_bytes} bytes is over the limit of {limit_bytes} bytes")]
    FrameTooLarge {
        len_bytes: usize,
        limit_bytes: usize,
    },
    /// The bytes inside a complete frame are not a valid protobuf `Frame`.
    #[error("frame is not a valid protobuf Frame: {0}")]
    Malformed(#[from] prost::DecodeError),
}

/// Length of the next frame's body if the prefix is complete, checked against the limit.
pub fn peek_len(buf: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, CodecError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX_BYTES>() else {
        return Ok(None);
    };
    let len_bytes = u32::from_be_bytes(*prefix) as usize;
    if len_bytes > frame_bytes_max {
        return Err(CodecError::FrameTooLarge {
            len_bytes,
            limit_bytes: frame_bytes_max,
        });
    }
    Ok(Some(len_bytes))
}

/// Decodes one frame from the front of `buf`.
///
/// `Ok(None)` means more bytes are needed; nothing is consumed. On `Ok(Some)` exactly one frame is
/// consumed. On a malformed frame its bytes are consumed too, so the caller may report and close.
pub fn decode(buf: &mut BytesMut, frame_bytes_max: usize) -> Result<Option<Frame>, CodecError> {
    let Some(len_bytes) = peek_len(buf, frame_bytes_max)? else {
        return Ok(None);
    };
    if buf.len() < LEN_PREFIX_BYTES + len_bytes {
        return Ok(None);
    }
    let decoded = Frame::decode(&buf[LEN_PREFIX_BYTES..LEN_PREFIX_BYTES + len_bytes]);
    buf.advance(LEN_PREFIX_BYTES + len_bytes);
    Ok(Some(decoded?))
}

/// Appends `frame`, length-prefixed, to `dst`.
pub fn encode(frame: &Frame, dst: &mut BytesMut) {
    let len_bytes = frame.encoded_len();
    dst.reserve(LEN_PREFIX_BYTES + len_bytes);
    // A frame we build ourselves is always far below 4 GiB; the limit is checked on the way in.
    dst.put_u32(u32::try_from(len_bytes).expect("frame below 4 GiB"));
    frame
        .encode(dst)
        .expect("reserved capacity covers the frame");
}

/// Encodes `frame` once into shared bytes that can be written to many connections.
pub fn encode_to_bytes(frame: &Frame) -> Bytes {
    let mut dst = BytesMut::with_capacity(LEN_PREFIX_BYTES + frame.encoded_len());
    encode(frame, &mut dst);
    dst.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{self, ErrorCode};
    use crate::{Body, error_frame, frame};

    fn ping(id: u64) -> Frame {
        frame(id, Body::Ping(v1::Ping { client_time_ms: 7 }))
    }

    #[test]
    fn round_trip() {
        let mut buf = BytesMut::new();
        encode(&ping(1), &mut buf);
        encode(&error_frame(2, ErrorCode::BadFrame, "x"), &mut buf);
        assert_eq!(decode(&mut buf, 1024).unwrap(), Some(ping(1)));
        assert_eq!(
            decode(&mut buf, 1024).unwrap(),
            Some(error_frame(2, ErrorCode::BadFrame, "x"))
        );
        assert_eq!(decode(&mut buf, 1024).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_input_is_none_and_consumes_nothing() {
        let full = encode_to_bytes(&ping(9));
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut buf, 1024).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn oversize_prefix_is_rejected_before_the_body_arrives() {
        let mut buf = BytesMut::from(&(2000u32).to_be_bytes()[..]);
        assert_eq!(
            decode(&mut buf, 1024),
            Err(CodecError::FrameTooLarge {
                len_bytes: 2000,
                limit_bytes: 1024
            })
        );
    }

    #[test]
    fn garbage_body_is_malformed_and_consumed() {
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        buf.put_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(CodecError::Malformed(_))
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_frame_decodes_to_default() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(decode(&mut buf, 1024).unwrap(), Some(Frame::default()));
    }
}
