//! The ABI's record list, both ways: [`RecordList`] parses the batch the host wrote,
//! [`RecordListWriter`] encodes the answer of a `map` kind.
//!
//! ```text
//! [count:u32]
//! count times:
//!   [offset_delta:u32][timestamp:i64]
//!   [key_len:i32][key]            key_len = -1 for no key
//!   [value_len:i32][value]        value_len = -1 for no value
//!   [header_count:u32]
//!   header_count times:
//!     [name_len:u32][name]        UTF-8
//!     [value_len:i32][value]      value_len = -1 for no value
//! ```

use alloc::collections::TryReserveError;
use alloc::vec::Vec;
use core::fmt;

use crate::abi::{MalformedInput, RECORD_BYTES_MIN, Reader, malformed};
use crate::record::{Headers, Record, RecordOut};

/// A parsed batch: every record was walked and every length checked, so iterating
/// cannot fail. Borrows the host's bytes; nothing is copied.
#[derive(Clone, Copy, Debug)]
pub struct RecordList<'a> {
    count: u32,
    /// Exactly `count` encoded records.
    encoded: &'a [u8],
}

impl<'a> RecordList<'a> {
    /// Parses and validates a whole record list. Trailing bytes are refused, as the
    /// host refuses them in answers.
    pub fn parse(input: &'a [u8]) -> Result<Self, MalformedInput> {
        let mut reader = Reader::new(input);
        let count = reader.u32("record count is missing")?;
        // Each record takes at least RECORD_BYTES_MIN bytes: a lying count fails here
        // instead of after a long walk.
        let fits = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(RECORD_BYTES_MIN))
            .is_some_and(|bytes| bytes <= reader.remaining());
        if !fits {
            return Err(malformed("record count exceeds what the input can hold"));
        }
        let encoded = reader.rest();
        for _ in 0..count {
            read_record(&mut reader)?;
        }
        if reader.remaining() != 0 {
            return Err(malformed("bytes after the last record"));
        }
        Ok(Self { count, encoded })
    }

    pub const fn len(&self) -> usize {
        self.count as usize
    }

    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> Records<'a> {
        Records {
            left: self.count,
            reader: Reader::new(self.encoded),
        }
    }

    /// Encodes `records` as the host would send them, `offset_delta` being each
    /// record's position: for testing a plugin without a host.
    pub fn encode(records: &[RecordOut]) -> Result<Vec<u8>, EncodeError> {
        let mut writer = RecordListWriter::new()?;
        for (position, record) in (0u32..).zip(records) {
            writer.push(position, record)?;
        }
        writer.finish()
    }
}

impl<'a> IntoIterator for RecordList<'a> {
    type Item = Record<'a>;
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.iter()
    }
}

/// Iterates over a [`RecordList`].
#[derive(Clone, Debug)]
pub struct Records<'a> {
    left: u32,
    reader: Reader<'a>,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        self.left = self.left.checked_sub(1)?;
        // Validated by `RecordList::parse`; the drivers in `call` also count what they
        // were given, so ending early here could not drop records silently.
        read_record(&mut self.reader).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

// Inlined into the parse loop and the iterator: it runs twice per record of every
// batch, and in WebAssembly each call costs a stack check and a frame.
#[inline(always)]
fn read_record<'a>(reader: &mut Reader<'a>) -> Result<Record<'a>, MalformedInput> {
    let offset_delta = reader.u32("offset_delta runs past the end of the input")?;
    let timestamp = reader.i64("timestamp runs past the end of the input")?;
    let key = reader.optional_bytes(
        "key length is missing or negative",
        "key runs past the end of the input",
    )?;
    let value = reader.optional_bytes(
        "value length is missing or negative",
        "value runs past the end of the input",
    )?;
    let header_count = reader.u32("header count runs past the end of the input")?;
    let headers_start = reader.rest();
    for _ in 0..header_count {
        Headers::read_one(reader)?;
    }
    // The reader only moves forward, so what it consumed is a prefix of where it was.
    let encoded = headers_start
        .len()
        .checked_sub(reader.remaining())
        .and_then(|consumed| headers_start.get(..consumed))
        .ok_or(malformed("header bytes out of range"))?;
    Ok(Record {
        offset_delta,
        timestamp,
        key,
        value,
        headers: Headers::new(header_count, encoded),
    })
}

/// Why an answer could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// A field does not fit its ABI length field, or the answer its 32-bit length.
    TooLarge { what: &'static str },
    /// The guest could not allocate the answer.
    OutOfMemory,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { what } => write!(f, "answer too large for the ABI: {what}"),
            EncodeError::OutOfMemory => f.write_str("out of memory encoding the answer"),
        }
    }
}

impl core::error::Error for EncodeError {}

impl From<TryReserveError> for EncodeError {
    fn from(_: TryReserveError) -> Self {
        EncodeError::OutOfMemory
    }
}

/// Encodes a record list one record at a time, growing with `try_reserve` so that
/// running out of memory is an error code rather than an abort.
#[derive(Debug)]
pub struct RecordListWriter {
    out: Vec<u8>,
    count: u32,
}

impl RecordListWriter {
    pub fn new() -> Result<Self, EncodeError> {
        let mut out = Vec::new();
        out.try_reserve(4)?;
        // The count is patched in by `finish`.
        out.extend_from_slice(&0u32.to_le_bytes());
        Ok(Self { out, count: 0 })
    }

    /// Appends `record`, naming input record `offset_delta` as its source. On an
    /// error nothing was appended.
    pub fn push(&mut self, offset_delta: u32, record: &RecordOut) -> Result<(), EncodeError> {
        let count = self.count.checked_add(1).ok_or(EncodeError::TooLarge {
            what: "more than u32::MAX records",
        })?;
        let size = checked_size(record)?;
        self.out.try_reserve(size)?;
        let out = &mut self.out;
        out.extend_from_slice(&offset_delta.to_le_bytes());
        out.extend_from_slice(&record.timestamp.to_le_bytes());
        put_optional(out, record.key.as_deref());
        put_optional(out, record.value.as_deref());
        // `checked_size` proved that this and every length below fit their fields.
        out.extend_from_slice(&(record.headers.len() as u32).to_le_bytes());
        for header in &record.headers {
            out.extend_from_slice(&(header.name.len() as u32).to_le_bytes());
            out.extend_from_slice(header.name.as_bytes());
            put_optional(out, header.value.as_deref());
        }
        self.count = count;
        Ok(())
    }

    /// The encoded list, whose length fits the 32-bit length of a packed answer.
    pub fn finish(mut self) -> Result<Vec<u8>, EncodeError> {
        if u32::try_from(self.out.len()).is_err() {
            return Err(EncodeError::TooLarge {
                what: "an answer over u32::MAX bytes",
            });
        }
        let count = self.count.to_le_bytes();
        if let Some(head) = self.out.get_mut(..4) {
            head.copy_from_slice(&count);
        }
        Ok(self.out)
    }
}

/// `[len:i32][bytes]`, or -1 for `None`; the length was checked by `checked_size`.
fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as i32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
}

/// Bytes `record` takes in a record list, after checking that every length and count
/// fits its ABI field.
fn checked_size(record: &RecordOut) -> Result<usize, EncodeError> {
    const OVERFLOW: EncodeError = EncodeError::TooLarge {
        what: "a record larger than the address space",
    };
    let optional_len = |bytes: &Option<Vec<u8>>, what: &'static str| {
        let len = bytes.as_ref().map_or(0, Vec::len);
        i32::try_from(len)
            .map(|_| len)
            .map_err(|_| EncodeError::TooLarge { what })
    };
    if u32::try_from(record.headers.len()).is_err() {
        return Err(EncodeError::TooLarge {
            what: "more than u32::MAX headers",
        });
    }
    let key_len = optional_len(&record.key, "a key over i32::MAX bytes")?;
    let value_len = optional_len(&record.value, "a value over i32::MAX bytes")?;
    let mut size = RECORD_BYTES_MIN
        .checked_add(key_len)
        .and_then(|s| s.checked_add(value_len))
        .ok_or(OVERFLOW)?;
    for header in &record.headers {
        if u32::try_from(header.name.len()).is_err() {
            return Err(EncodeError::TooLarge {
                what: "a header name over u32::MAX bytes",
            });
        }
        let value_len = optional_len(&header.value, "a header value over i32::MAX bytes")?;
        size = size
            .checked_add(8)
            .and_then(|s| s.checked_add(header.name.len()))
            .and_then(|s| s.checked_add(value_len))
            .ok_or(OVERFLOW)?;
    }
    Ok(size)
}
