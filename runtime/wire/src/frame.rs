//! Frames: the envelope of every request and response. One request and its response
//! travel on their own QUIC bidirectional stream, so a frame needs no request id.
//!
//! ```text
//! request:  [frame_length:4][api_key:2][api_version:2][body:frame_length-4]
//! response: [frame_length:4][status:2][body:frame_length-2]
//! ```
//! `frame_length` counts the bytes after itself. A response `status` of 0 is success
//! and the body is the API's response; any other status is an [`ErrorCode`] and the
//! body is `[message:string]`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::codec::{DecodeError, Reader, WriteExt};
use crate::error::ErrorCode;

/// The largest frame either side accepts. Bounds what a peer can make us buffer.
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bytes of the length prefix.
pub const FRAME_LENGTH_BYTES: usize = 4;
/// Bytes of a request head after the length: api key and version.
pub const REQUEST_HEAD_BYTES: usize = 4;
/// Bytes of a response head after the length: the status.
pub const RESPONSE_HEAD_BYTES: usize = 2;
/// The longest error message a response carries; longer ones are cut.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4096;

/// Why a frame's length prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {FRAME_BYTES_MAX} bytes")]
    TooLarge(usize),
    #[error("frame of {got} bytes is shorter than its {need}-byte head")]
    TooShort { got: usize, need: usize },
}

/// Reads a length prefix and checks it against [`FRAME_BYTES_MAX`] and the head size,
/// before the caller allocates for the body.
pub fn frame_length(
    prefix: [u8; FRAME_LENGTH_BYTES],
    head_bytes: usize,
) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(len));
    }
    if len < head_bytes {
        return Err(FrameError::TooShort {
            got: len,
            need: head_bytes,
        });
    }
    Ok(len)
}

/// A request frame after its length prefix was read: api, version, body.
#[derive(Debug)]
pub struct RequestFrame {
    pub api_key: u16,
    pub api_version: u16,
    pub body: BytesMut,
}

impl RequestFrame {
    /// Splits the head off a frame (the bytes after the length prefix).
    pub fn parse(mut frame: BytesMut) -> Result<Self, FrameError> {
        if frame.len() < REQUEST_HEAD_BYTES {
            return Err(FrameError::TooShort {
                got: frame.len(),
                need: REQUEST_HEAD_BYTES,
            });
        }
        let head = frame.split_to(REQUEST_HEAD_BYTES);
        Ok(Self {
            api_key: u16::from_be_bytes([head[0], head[1]]),
            api_version: u16::from_be_bytes([head[2], head[3]]),
            body: frame,
        })
    }
}

/// Starts a request frame: writes a placeholder length and the head. Finish with
/// [`seal_frame`] once the body is written.
pub fn begin_request(api: ApiKey, version: u16, body_hint: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(FRAME_LENGTH_BYTES + REQUEST_HEAD_BYTES + body_hint);
    buf.put_u32(0);
    buf.put_u16(api.code());
    buf.put_u16(version);
    buf
}

/// Starts a successful response frame.
pub fn begin_response(body_hint: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(FRAME_LENGTH_BYTES + RESPONSE_HEAD_BYTES + body_hint);
    buf.put_u32(0);
    buf.put_u16(0);
    buf
}

/// Writes the length prefix of a frame begun with `begin_*`, counting `trailing` bytes
/// the caller sends after `buf` without copying them in (fetched batches, a produced
/// batch).
pub fn seal_frame(buf: &mut BytesMut, trailing: usize) {
    let len = buf.len() - FRAME_LENGTH_BYTES + trailing;
    assert!(
        len <= FRAME_BYTES_MAX,
        "callers bound bodies below FRAME_BYTES_MAX"
    );
    buf[..FRAME_LENGTH_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The code, or `None` for a number this version of the crate does not know.
    pub code: Option<ErrorCode>,
    pub raw_code: u16,
    pub message: String,
}

impl ErrorResponse {
    /// Encodes a whole error frame.
    pub fn encode(code: ErrorCode, message: &str) -> Bytes {
        let mut cut = message.len().min(ERROR_MESSAGE_BYTES_MAX);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut buf = BytesMut::with_capacity(16 + cut);
        buf.put_u32(0);
        buf.put_u16(code.code());
        buf.put_string(&message[..cut]);
        seal_frame(&mut buf, 0);
        buf.freeze()
    }

    /// Whether retrying can help. Unknown codes are treated as fatal.
    pub fn is_retriable(&self) -> bool {
        self.code.is_some_and(ErrorCode::is_retriable)
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{}: {}", code.name(), self.message),
            None => write!(f, "error code {}: {}", self.raw_code, self.message),
        }
    }
}

/// A response frame after its length prefix: either the body of a success or an error.
pub fn parse_response(mut frame: Bytes) -> Result<Result<Bytes, ErrorResponse>, DecodeError> {
    if frame.len() < RESPONSE_HEAD_BYTES {
        return Err(DecodeError::Truncated("status"));
    }
    let head = frame.split_to(RESPONSE_HEAD_BYTES);
    let status = u16::from_be_bytes([head[0], head[1]]);
    if status == 0 {
        return Ok(Ok(frame));
    }
    let mut reader = Reader::new(&frame);
    let message = reader.string("error message")?;
    reader.finish()?;
    Ok(Err(ErrorResponse {
        code: ErrorCode::from_code(status),
        raw_code: status,
        message,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_is_capped_before_allocation() {
        let too_big = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        assert_eq!(
            frame_length(too_big, 4),
            Err(FrameError::TooLarge(FRAME_BYTES_MAX + 1))
        );
        assert_eq!(
            frame_length(2u32.to_be_bytes(), 4),
            Err(FrameError::TooShort { got: 2, need: 4 })
        );
        assert_eq!(frame_length(10u32.to_be_bytes(), 4), Ok(10));
    }

    #[test]
    fn error_frames_round_trip_and_cut_long_messages() {
        let long = "é".repeat(ERROR_MESSAGE_BYTES_MAX);
        let frame = ErrorResponse::encode(ErrorCode::UnknownTopic, &long);
        let body = frame.slice(FRAME_LENGTH_BYTES..);
        let err = parse_response(body)
            .expect("decodes")
            .expect_err("is an error");
        assert_eq!(err.code, Some(ErrorCode::UnknownTopic));
        assert!(err.message.len() <= ERROR_MESSAGE_BYTES_MAX);
        assert!(!err.is_retriable());
    }
}
