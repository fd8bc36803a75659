//! Primitive readers and writers for frame bodies. Every length read off the wire is
//! checked against the bytes present and a named limit before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Elements in one array field (brokers, topics, partitions, configs, replicas).
pub const ARRAY_LEN_MAX: usize = 100_000;
/// Bytes in one string field.
pub const STRING_BYTES_MAX: usize = u16::MAX as usize;

/// Why a frame body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame ends inside field `{0}`")]
    Truncated(&'static str),
    #[error("field `{what}` declares {len} elements or bytes, more than the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("field `{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("field `{what}` has invalid value {value}")]
    InvalidValue { what: &'static str, value: i64 },
    #[error("{0} unexpected bytes after the body")]
    TrailingBytes(usize),
    #[error("unknown API key {0}")]
    UnknownApi(u16),
    #[error("API {api} does not support version {version}")]
    UnsupportedVersion { api: u16, version: u16 },
}

/// Reads fields from the front of a body.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    consumed: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, consumed: 0 }
    }

    /// Bytes read so far.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated(what))
        } else {
            Ok(())
        }
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        self.consumed += 1;
        Ok(self.buf.get_u8())
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        self.consumed += 2;
        Ok(self.buf.get_u16())
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        self.consumed += 4;
        Ok(self.buf.get_u32())
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        self.consumed += 8;
        Ok(self.buf.get_u64())
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.need(8, what)?;
        self.consumed += 8;
        Ok(self.buf.get_i64())
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidValue {
                what,
                value: other.into(),
            }),
        }
    }

    /// `[length:2][utf8:length]`
    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(what)?);
        self.need(len, what)?;
        let text =
            std::str::from_utf8(&self.buf[..len]).map_err(|_| DecodeError::InvalidUtf8(what))?;
        let text = text.to_owned();
        self.buf.advance(len);
        self.consumed += len;
        Ok(text)
    }

    /// `[count:4]`, capped by `max` and by the bytes left (each element takes at least
    /// `min_element_bytes`), so a hostile count cannot make the caller allocate.
    pub fn array_len(
        &mut self,
        what: &'static str,
        max: usize,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let len = self.u32(what)? as usize;
        let max = max.min(ARRAY_LEN_MAX);
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        if len.saturating_mul(min_element_bytes.max(1)) > self.buf.len() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(len)
    }

    /// Fails unless the body has been read to its end.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

/// Writers for the same primitives.
pub trait WriteExt: BufMut {
    /// `[length:2][utf8:length]`. Strings longer than [`STRING_BYTES_MAX`] are a caller
    /// bug: callers validate names before encoding.
    fn put_string(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let len = bytes.len().min(STRING_BYTES_MAX);
        self.put_u16(len as u16);
        self.put_slice(&bytes[..len]);
    }

    fn put_bool(&mut self, value: bool) {
        self.put_u8(u8::from(value));
    }

    fn put_array_len(&mut self, len: usize) {
        self.put_u32(len as u32);
    }
}

impl<T: BufMut + ?Sized> WriteExt for T {}

/// Reads the `[length:4]` of a byte field at the front of `body` and checks it
/// against `max` and the bytes that follow; returns the checked length.
fn byte_field_len(body: &[u8], what: &'static str, max: usize) -> Result<usize, DecodeError> {
    let prefix: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(DecodeError::Truncated(what))?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(DecodeError::TooLong { what, len, max });
    }
    if body.len() - 4 < len {
        return Err(DecodeError::Truncated(what));
    }
    Ok(len)
}

/// Splits `[length:4][bytes:length]` off the front of `body` without copying.
pub fn take_bytes(body: &mut Bytes, what: &'static str, max: usize) -> Result<Bytes, DecodeError> {
    let len = byte_field_len(body, what, max)?;
    body.advance(4);
    Ok(body.split_to(len))
}

/// As [`take_bytes`], for a mutable body (the broker stamps produced batches in place).
pub fn take_bytes_mut(
    body: &mut BytesMut,
    what: &'static str,
    max: usize,
) -> Result<BytesMut, DecodeError> {
    let len = byte_field_len(body, what, max)?;
    body.advance(4);
    Ok(body.split_to(len))
}
