//! The record batch: the unit a producer encodes, the broker stores as is, and a
//! consumer decodes. Wire format = disk format.
//!
//! ```text
//! [base_offset:8][batch_length:4][leader_epoch:4][magic:1][crc32c:4][attributes:2]
//! [last_offset_delta:4][first_timestamp:8][max_timestamp:8][producer_id:8]
//! [producer_epoch:2][base_sequence:4][record_count:4][records:N]
//! ```
//! All integers are big-endian. `batch_length` counts the bytes after itself. The CRC32C
//! covers everything after the crc field, so the broker stamps `base_offset` and
//! `leader_epoch` without recomputing it.
//!
//! Each record, inside the records section (varints are zig-zag, see [`crate::varint`]):
//! ```text
//! [length:varint][attributes:1][timestamp_delta:varint][offset_delta:varint]
//! [key_length:varint][key][value_length:varint][value]
//! [header_count:varint]([key_length:varint][key][value_length:varint][value])*
//! ```
//! A length of -1 is a null key, value or header value.
//!
//! Compression (attribute bits 0-2: 3 = lz4, 4 = zstd) applies to the records section
//! only; the header stays readable. lz4 sections are lz4 blocks prefixed with their
//! decompressed size (u32 little-endian, as `lz4_flex` writes it); zstd sections are
//! zstd frames. Decompression is capped at [`RECORDS_DECOMPRESSED_BYTES_MAX`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::varint::{get_varlong, put_varlong, varlong_len};

/// Bytes of the fixed batch header, up to and including `record_count`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batch_length`'s coverage starts: `base_offset` and `batch_length`.
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
/// The batch format version this crate reads and writes.
pub const BATCH_MAGIC: u8 = 1;
/// The hard ceiling on one batch, whatever a topic allows.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Headers per record; more is a malformed batch.
pub const RECORD_HEADERS_MAX: usize = 1024;
/// `producer_id` of a batch from a producer without idempotence.
pub const NO_PRODUCER_ID: u64 = u64::MAX;
/// `producer_epoch` of a batch from a producer without idempotence.
pub const NO_PRODUCER_EPOCH: u16 = u16::MAX;
/// `base_sequence` of a batch from a producer without idempotence.
pub const NO_SEQUENCE: u32 = u32::MAX;

/// The most bytes a compressed records section may expand to: a bound on what a
/// hostile batch can make the broker or a consumer allocate.
pub const RECORDS_DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(BATCH_HEADER_BYTES < BATCH_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX <= RECORDS_DECOMPRESSED_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX <= u32::MAX as usize);

// Field positions inside the header.
const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const CRC_AT: usize = 17;
const CRC_COVERAGE_AT: usize = 21;

/// Attribute bits 0-2: the compression codec of the records section.
const ATTR_COMPRESSION_MASK: u16 = 0x07;
/// Attribute bit 3: timestamps are the broker's append time rather than the producer's.
pub const ATTR_LOG_APPEND_TIME: u16 = 0x08;
/// Attribute bit 5: a control batch (transaction markers, reserved).
pub const ATTR_CONTROL: u16 = 0x20;

/// Compression codecs; numbers as in Kafka's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None = 0,
    Lz4 = 3,
    Zstd = 4,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!(
                "unknown compression `{other}`: expected none, lz4 or zstd"
            )),
        }
    }
}

/// zstd level: the library's default trades ratio and speed well for record data.
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    fn compress(self, section: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => section.to_vec(),
            Compression::Lz4 => lz4_flex::compress_prepend_size(section),
            // In-memory zstd fails only on allocation failure or a bad level, neither of
            // which a caller can cause; fall back to storing uncompressed would change
            // the attributes, so this is an invariant.
            Compression::Zstd => zstd::bulk::compress(section, ZSTD_LEVEL)
                .expect("in-memory zstd compression succeeds"),
        }
    }

    /// Expands a records section, refusing to grow past the cap.
    fn decompress(self, section: &[u8]) -> Result<Vec<u8>, BatchError> {
        match self {
            Compression::None => Ok(section.to_vec()),
            Compression::Lz4 => {
                let declared = section
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or_else(|| {
                        BatchError::Decompression("lz4 section shorter than its size prefix".into())
                    })?;
                if declared > RECORDS_DECOMPRESSED_BYTES_MAX {
                    return Err(BatchError::Decompression(format!(
                        "lz4 section declares {declared} bytes, over the {RECORDS_DECOMPRESSED_BYTES_MAX}-byte cap"
                    )));
                }
                lz4_flex::decompress_size_prepended(section)
                    .map_err(|e| BatchError::Decompression(e.to_string()))
            }
            Compression::Zstd => zstd::bulk::decompress(section, RECORDS_DECOMPRESSED_BYTES_MAX)
                .map_err(|e| BatchError::Decompression(e.to_string())),
        }
    }
}

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is {got} bytes, shorter than its {BATCH_HEADER_BYTES}-byte header")]
    ShortHeader { got: usize },
    #[error("batch declares {declared} bytes but {available} are present")]
    LengthMismatch { declared: usize, available: usize },
    #[error("batch of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("batch magic {0} is not supported (expected {BATCH_MAGIC})")]
    UnsupportedMagic(u8),
    #[error("batch CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("batch compression codec {0} is not supported")]
    UnsupportedCompression(u16),
    #[error("batch records section does not decompress: {0}")]
    Decompression(String),
    #[error("batch holds no records")]
    Empty,
    #[error(
        "batch offsets run past the largest offset: base {base_offset}, last offset delta {last_offset_delta}"
    )]
    OffsetOverflow {
        base_offset: u64,
        last_offset_delta: u32,
    },
    #[error(
        "batch record count {record_count} disagrees with last offset delta {last_offset_delta}"
    )]
    CountMismatch {
        record_count: u32,
        last_offset_delta: u32,
    },
    #[error("record {index} is malformed: {reason}")]
    MalformedRecord { index: u32, reason: &'static str },
}

/// The fixed header of a batch, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub batch_length: u32,
    pub leader_epoch: u32,
    pub magic: u8,
    pub crc: u32,
    pub attributes: u16,
    pub last_offset_delta: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: u64,
    pub producer_epoch: u16,
    pub base_sequence: u32,
    pub record_count: u32,
}

impl BatchHeader {
    /// Parses the header at the front of `buf`. Checks only that the header fits: use
    /// [`validate`] before trusting the rest.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::ShortHeader { got: buf.len() });
        }
        let mut b = &buf[..BATCH_HEADER_BYTES];
        Ok(Self {
            base_offset: b.get_u64(),
            batch_length: b.get_u32(),
            leader_epoch: b.get_u32(),
            magic: b.get_u8(),
            crc: b.get_u32(),
            attributes: b.get_u16(),
            last_offset_delta: b.get_u32(),
            first_timestamp: b.get_i64(),
            max_timestamp: b.get_i64(),
            producer_id: b.get_u64(),
            producer_epoch: b.get_u16(),
            base_sequence: b.get_u32(),
            record_count: b.get_u32(),
        })
    }

    /// Reads only `batch_length` and returns the whole batch's size in bytes, so a
    /// scanner can step over batches without parsing them.
    pub fn total_bytes_at(buf: &[u8]) -> Option<usize> {
        let field = buf.get(BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4)?;
        let length = u32::from_be_bytes(field.try_into().ok()?);
        Some(BATCH_LENGTH_PREFIX_BYTES + length as usize)
    }

    /// The whole batch's size in bytes.
    pub fn total_bytes(&self) -> usize {
        BATCH_LENGTH_PREFIX_BYTES + self.batch_length as usize
    }

    /// The offset of the batch's last record. Saturates on a header that only
    /// [`BatchHeader::parse`] has seen: the checks refuse batches whose offsets overflow.
    pub fn last_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.last_offset_delta))
    }

    /// The offset after the batch's last record (saturating, as [`BatchHeader::last_offset`]).
    pub fn next_offset(&self) -> u64 {
        self.last_offset().saturating_add(1)
    }

    /// A control batch: consumers advance past it without delivering its records.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// The codec named by the attributes.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        match self.attributes & ATTR_COMPRESSION_MASK {
            0 => Ok(Compression::None),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnsupportedCompression(other)),
        }
    }
}

/// Checks a whole batch: length, magic, CRC, record count, and (when uncompressed) that
/// every record parses. `buf` must be exactly one batch. Run before a batch is stored and
/// after it is read back from disk.
pub fn validate(buf: &[u8], batch_bytes_max: usize) -> Result<BatchHeader, BatchError> {
    let header = validate_framing(buf, batch_bytes_max)?;
    match header.compression()? {
        Compression::None => {
            let section = &buf[BATCH_HEADER_BYTES..];
            walk_records(&header, section, OffsetLayout::Dense, |raw| {
                check_header_keys(section, &raw)
            })?
        }
        codec => {
            let section = codec.decompress(&buf[BATCH_HEADER_BYTES..])?;
            walk_records(&header, &section, OffsetLayout::Dense, |raw| {
                check_header_keys(&section, &raw)
            })?;
        }
    }
    Ok(header)
}

/// A record header's key is a string (a value is any bytes): what every reader
/// decodes, so validation refuses a batch whose key is not UTF-8 before it is stored.
fn check_header_keys(section: &[u8], record: &RawRecord) -> Result<(), &'static str> {
    for (key, _) in &record.headers {
        std::str::from_utf8(&section[key.clone()]).map_err(|_| "header key is not UTF-8")?;
    }
    Ok(())
}

/// Checks length, magic, count and CRC, but not the records section's contents. This is
/// what log recovery needs to tell a torn tail from a whole batch. Offsets must be
/// dense (`record_count` = `last_offset_delta` + 1): the log assigns them by count.
pub fn validate_framing(buf: &[u8], batch_bytes_max: usize) -> Result<BatchHeader, BatchError> {
    let header = check_frame(buf, batch_bytes_max)?;
    if header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::CountMismatch {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Length, magic, CRC and at least one record: what every reader checks. Whether the
/// offsets may have gaps is the caller's rule.
fn check_frame(buf: &[u8], batch_bytes_max: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let limit = batch_bytes_max.min(BATCH_BYTES_MAX);
    if header.total_bytes() > limit {
        return Err(BatchError::TooLarge {
            bytes: header.total_bytes(),
            limit,
        });
    }
    if header.total_bytes() != buf.len() {
        return Err(BatchError::LengthMismatch {
            declared: header.total_bytes(),
            available: buf.len(),
        });
    }
    if header.magic != BATCH_MAGIC {
        return Err(BatchError::UnsupportedMagic(header.magic));
    }
    let computed = crc32c::crc32c(&buf[CRC_COVERAGE_AT..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.record_count == 0 {
        return Err(BatchError::Empty);
    }
    check_offset_span(&header)?;
    Ok(header)
}

/// The offset after the batch must exist: a reader computes every record's offset and
/// its next fetch position from `base_offset` and `last_offset_delta`.
fn check_offset_span(header: &BatchHeader) -> Result<(), BatchError> {
    let next = header
        .base_offset
        .checked_add(u64::from(header.last_offset_delta))
        .and_then(|last| last.checked_add(1));
    match next {
        Some(_) => Ok(()),
        None => Err(BatchError::OffsetOverflow {
            base_offset: header.base_offset,
            last_offset_delta: header.last_offset_delta,
        }),
    }
}

/// Writes the broker-assigned `base_offset` and `leader_epoch` into a batch in place.
/// Both sit before the CRC's coverage, so the CRC stays valid.
pub fn stamp(buf: &mut [u8], base_offset: u64, leader_epoch: u32) {
    assert!(
        buf.len() >= BATCH_HEADER_BYTES,
        "stamp is called on validated batches only"
    );
    buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    buf[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// A record header: a string key and an optional byte value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A record as a producer hands it in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl Record {
    /// A record with only a value, stamped with `timestamp`.
    pub fn from_value(value: impl Into<Bytes>, timestamp: i64) -> Self {
        Self {
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp,
        }
    }

    /// The bytes this record takes in a batch, length prefix included.
    pub fn encoded_len(&self, timestamp_delta: i64, offset_delta: i64) -> usize {
        let body = self.body_len(timestamp_delta, offset_delta);
        varlong_len(body as i64) + body
    }

    fn body_len(&self, timestamp_delta: i64, offset_delta: i64) -> usize {
        let opt = |b: &Option<Bytes>| match b {
            Some(b) => varlong_len(b.len() as i64) + b.len(),
            None => varlong_len(-1),
        };
        let headers: usize = self
            .headers
            .iter()
            .map(|h| varlong_len(h.key.len() as i64) + h.key.len() + opt(&h.value))
            .sum();
        1 + varlong_len(timestamp_delta)
            + varlong_len(offset_delta)
            + opt(&self.key)
            + opt(&self.value)
            + varlong_len(self.headers.len() as i64)
            + headers
    }
}

/// A record read out of a stored batch. Key, value and header values are slices of the
/// batch: decoding copies no payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// Identity of an idempotent producer, written into each batch it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: u64,
    pub producer_epoch: u16,
    pub base_sequence: u32,
}

impl ProducerStamp {
    /// The stamp of a producer without idempotence.
    pub const NONE: Self = Self {
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        base_sequence: NO_SEQUENCE,
    };
}

/// Builds one uncompressed batch from records.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    record_count: u32,
    /// The offset delta the header will carry: the last record's, unless
    /// [`BatchBuilder::span_to`] widened it.
    last_offset_delta: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer: ProducerStamp,
}

impl BatchBuilder {
    pub fn new(producer: ProducerStamp) -> Self {
        let mut buf = BytesMut::with_capacity(4096);
        buf.put_bytes(0, BATCH_HEADER_BYTES);
        Self {
            buf,
            record_count: 0,
            last_offset_delta: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            producer,
        }
    }

    /// Sets the producer identity written at [`BatchBuilder::finish`]: an idempotent
    /// producer assigns the sequence when it seals the batch, not when it starts it.
    pub fn set_producer(&mut self, producer: ProducerStamp) {
        self.producer = producer;
    }

    /// Records pushed so far.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Bytes the batch would take if finished now.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// The batch size after pushing `record`, to decide whether it still fits.
    pub fn encoded_len_with(&self, record: &Record) -> usize {
        let (ts_delta, offset_delta) = self.deltas(record);
        self.buf.len() + record.encoded_len(ts_delta, offset_delta)
    }

    fn deltas(&self, record: &Record) -> (i64, i64) {
        let first = if self.record_count == 0 {
            record.timestamp
        } else {
            self.first_timestamp
        };
        (
            record.timestamp.wrapping_sub(first),
            i64::from(self.record_count),
        )
    }

    /// Appends a record at the next offset.
    pub fn push(&mut self, record: &Record) {
        let (_, offset_delta) = self.deltas(record);
        self.write(record, offset_delta);
    }

    /// Appends a record at `offset_delta` from the batch's base, leaving a gap after the
    /// previous record: for the batches a fetch sends after a plugin removed records.
    /// Such a batch is for readers ([`decode_records`]); [`validate`] refuses it, so it
    /// is never stored. `offset_delta` must be above the previous record's; one that is
    /// not is a caller's bug, refused by every reader.
    pub fn push_at(&mut self, record: &Record, offset_delta: u32) {
        self.write(record, i64::from(offset_delta));
    }

    /// Makes the batch cover offsets up to `last_offset_delta` from its base, past its
    /// last record, so that a reader's next fetch starts after records removed at the
    /// end. Never narrows the batch.
    pub fn span_to(&mut self, last_offset_delta: u32) {
        self.last_offset_delta = self.last_offset_delta.max(last_offset_delta);
    }

    fn write(&mut self, record: &Record, offset_delta: i64) {
        if self.record_count == 0 {
            self.first_timestamp = record.timestamp;
        }
        let (ts_delta, _) = self.deltas(record);
        let body = record.body_len(ts_delta, offset_delta);
        self.buf.reserve(varlong_len(body as i64) + body);
        put_varlong(&mut self.buf, body as i64);
        self.buf.put_u8(0);
        put_varlong(&mut self.buf, ts_delta);
        put_varlong(&mut self.buf, offset_delta);
        put_optional_bytes(&mut self.buf, record.key.as_ref());
        put_optional_bytes(&mut self.buf, record.value.as_ref());
        put_varlong(&mut self.buf, record.headers.len() as i64);
        for header in &record.headers {
            put_varlong(&mut self.buf, header.key.len() as i64);
            self.buf.put_slice(header.key.as_bytes());
            put_optional_bytes(&mut self.buf, header.value.as_ref());
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.record_count += 1;
        // Deltas are u32 in the header; both callers pass values that fit.
        let delta = u32::try_from(offset_delta).unwrap_or(u32::MAX);
        self.last_offset_delta = self.last_offset_delta.max(delta);
    }

    /// Writes the header and CRC and returns the batch, or `None` if it holds no record.
    pub fn finish(self) -> Option<Bytes> {
        self.finish_compressed(Compression::None)
    }

    /// As [`BatchBuilder::finish`], compressing the records section with `codec`.
    pub fn finish_compressed(self, codec: Compression) -> Option<Bytes> {
        self.seal(codec, 0)
    }

    /// As [`BatchBuilder::finish`], marking the batch as a control batch: it takes
    /// offsets like any batch, but consumers step over it instead of delivering its
    /// records. The broker writes one where a batch's records were all removed (by a
    /// plugin) and something must still take their place in the log.
    pub fn finish_control(self) -> Option<Bytes> {
        self.seal(Compression::None, ATTR_CONTROL)
    }

    fn seal(mut self, codec: Compression, flags: u16) -> Option<Bytes> {
        if self.record_count == 0 {
            return None;
        }
        if codec != Compression::None {
            let compressed = codec.compress(&self.buf[BATCH_HEADER_BYTES..]);
            self.buf.truncate(BATCH_HEADER_BYTES);
            self.buf.extend_from_slice(&compressed);
        }
        let batch_length = (self.buf.len() - BATCH_LENGTH_PREFIX_BYTES) as u32;
        let mut header = &mut self.buf[..BATCH_HEADER_BYTES];
        header.put_u64(0);
        header.put_u32(batch_length);
        header.put_u32(0);
        header.put_u8(BATCH_MAGIC);
        header.put_u32(0);
        header.put_u16(codec as u16 | flags);
        header.put_u32(self.last_offset_delta);
        header.put_i64(self.first_timestamp);
        header.put_i64(self.max_timestamp);
        header.put_u64(self.producer.producer_id);
        header.put_u16(self.producer.producer_epoch);
        header.put_u32(self.producer.base_sequence);
        header.put_u32(self.record_count);
        let crc = crc32c::crc32c(&self.buf[CRC_COVERAGE_AT..]);
        self.buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Some(self.buf.freeze())
    }
}

fn put_optional_bytes(buf: &mut BytesMut, bytes: Option<&Bytes>) {
    match bytes {
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.put_slice(b);
        }
        None => put_varlong(buf, -1),
    }
}

/// Decodes every record of one batch. Key, value and headers are slices of `batch`.
///
/// A reader's function: it accepts the batches a fetch may carry, whose offsets may have
/// gaps (a fetch-stage plugin removed records between the survivors, each of which keeps
/// its stored offset) and whose last records may be gone (`last_offset_delta` still
/// spans them, so the next fetch starts after them). Deltas must increase and stay
/// within `last_offset_delta`. What is stored is checked densely by [`validate`].
pub fn decode_records(batch: &Bytes) -> Result<Vec<DecodedRecord>, BatchError> {
    let raw = RawBatch::open(batch)?;
    Ok((0..raw.len()).map(|i| raw.decoded(i)).collect())
}

/// A batch's records located but not copied out: where each record's fields lie in
/// the (decompressed) records section. What a reader that only looks at records, such
/// as a plugin's input, needs without building a [`DecodedRecord`] (and its shared
/// byte handles) per record. Accepts what [`decode_records`] accepts.
#[derive(Debug, Clone)]
pub struct RawBatch {
    header: BatchHeader,
    section: Bytes,
    records: Vec<RawRecord>,
}

impl RawBatch {
    /// Checks `batch` as [`decode_records`] does and locates its records.
    pub fn open(batch: &Bytes) -> Result<Self, BatchError> {
        let header = check_frame(batch, BATCH_BYTES_MAX)?;
        let section = match header.compression()? {
            Compression::None => batch.slice(BATCH_HEADER_BYTES..),
            codec => Bytes::from(codec.decompress(&batch[BATCH_HEADER_BYTES..])?),
        };
        let mut records = Vec::with_capacity(header.record_count.min(65_536) as usize);
        walk_records(&header, &section, OffsetLayout::Gapped, |raw| {
            check_header_keys(&section, &raw)?;
            records.push(raw);
            Ok(())
        })?;
        Ok(Self {
            header,
            section,
            records,
        })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Record `index`'s offset. Panics on an index past [`RawBatch::len`], like a slice.
    pub fn offset(&self, index: usize) -> u64 {
        self.header.base_offset + self.records[index].offset_delta
    }

    /// Record `index`'s fields, borrowed. Panics on an index past [`RawBatch::len`].
    pub fn view(&self, index: usize) -> RecordView<'_> {
        let raw = &self.records[index];
        let bytes = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &self.section[r]);
        RecordView {
            timestamp: self
                .header
                .first_timestamp
                .wrapping_add(raw.timestamp_delta),
            key: bytes(&raw.key),
            value: bytes(&raw.value),
            section: &self.section,
            headers: &raw.headers,
        }
    }

    /// Record `index` as a [`DecodedRecord`] whose bytes share the batch's.
    pub fn decoded(&self, index: usize) -> DecodedRecord {
        let raw = &self.records[index];
        let slice = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| self.section.slice(r));
        let headers = raw
            .headers
            .iter()
            .map(|(k, v)| RecordHeader {
                // Checked to be UTF-8 in `open`.
                key: String::from_utf8_lossy(&self.section[k.clone()]).into_owned(),
                value: slice(v),
            })
            .collect();
        DecodedRecord {
            offset: self.offset(index),
            timestamp: self
                .header
                .first_timestamp
                .wrapping_add(raw.timestamp_delta),
            key: slice(&raw.key),
            value: slice(&raw.value),
            headers,
        }
    }
}

/// One record of a [`RawBatch`], borrowed from its records section.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    section: &'a [u8],
    headers: &'a [RawHeader],
}

impl<'a> RecordView<'a> {
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Each header's name (UTF-8, checked when the batch was opened) and value.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let section = self.section;
        self.headers
            .iter()
            .map(move |(k, v)| (&section[k.clone()], v.clone().map(|v| &section[v])))
    }
}

/// The batch a reader receives when only some of `batch`'s records are sent: the
/// records at the offsets `keep` answers true for (asked in increasing offset order),
/// copied as they are encoded (no re-encoding: each keeps its offset and timestamp
/// delta), under a header with the same base offset, first timestamp and
/// `last_offset_delta`, so the batch spans the same offsets with gaps where records
/// were left out. The records section goes out uncompressed; the producer fields are
/// cleared (a reader has no use for them). `None` when no record is kept.
///
/// The input's CRC is not checked again: the caller decoded `batch` (which checks it)
/// to run the filters. Its records are still walked with every bound checked, so a
/// batch changed since cannot make this read out of bounds.
pub fn retain_records(
    batch: &[u8],
    mut keep: impl FnMut(u64) -> bool,
) -> Result<Option<Bytes>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_bytes() != batch.len() {
        return Err(BatchError::LengthMismatch {
            declared: header.total_bytes(),
            available: batch.len(),
        });
    }
    check_offset_span(&header)?;
    let decompressed;
    let section: &[u8] = match header.compression()? {
        Compression::None => &batch[BATCH_HEADER_BYTES..],
        codec => {
            decompressed = codec.decompress(&batch[BATCH_HEADER_BYTES..])?;
            &decompressed
        }
    };
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + section.len());
    out.put_bytes(0, BATCH_HEADER_BYTES);
    let mut kept = 0u32;
    walk_records(&header, section, OffsetLayout::Gapped, |raw| {
        if keep(header.base_offset + raw.offset_delta) {
            out.extend_from_slice(&section[raw.encoded.clone()]);
            kept += 1;
        }
        Ok(())
    })?;
    if kept == 0 {
        return Ok(None);
    }
    let batch_length = (out.len() - BATCH_LENGTH_PREFIX_BYTES) as u32;
    let mut fields = &mut out[..BATCH_HEADER_BYTES];
    fields.put_u64(header.base_offset);
    fields.put_u32(batch_length);
    fields.put_u32(header.leader_epoch);
    fields.put_u8(BATCH_MAGIC);
    fields.put_u32(0);
    fields.put_u16(header.attributes & !ATTR_COMPRESSION_MASK);
    fields.put_u32(header.last_offset_delta);
    fields.put_i64(header.first_timestamp);
    fields.put_i64(header.max_timestamp);
    fields.put_u64(NO_PRODUCER_ID);
    fields.put_u16(NO_PRODUCER_EPOCH);
    fields.put_u32(NO_SEQUENCE);
    fields.put_u32(kept);
    let crc = crc32c::crc32c(&out[CRC_COVERAGE_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Some(out.freeze()))
}

/// A header's name and value as ranges into the records section.
type RawHeader = (std::ops::Range<usize>, Option<std::ops::Range<usize>>);

/// One record's fields as ranges into the records section.
#[derive(Debug, Clone)]
struct RawRecord {
    /// The whole record as encoded, its length prefix included.
    encoded: std::ops::Range<usize>,
    timestamp_delta: i64,
    offset_delta: u64,
    key: Option<std::ops::Range<usize>>,
    value: Option<std::ops::Range<usize>>,
    headers: Vec<RawHeader>,
}

/// Which offset deltas a batch's records may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OffsetLayout {
    /// 0, 1, 2, ..., `record_count` - 1: what producers send and the log stores.
    Dense,
    /// Strictly increasing, the last at most `last_offset_delta`: a batch some of whose
    /// records were filtered out on the way to a consumer.
    Gapped,
}

/// Walks the records section, checking that each record parses, that offset deltas
/// follow `layout`, and that the section holds exactly `record_count` records.
fn walk_records(
    header: &BatchHeader,
    section: &[u8],
    layout: OffsetLayout,
    mut visit: impl FnMut(RawRecord) -> Result<(), &'static str>,
) -> Result<(), BatchError> {
    let mut pos = 0usize;
    let mut previous_delta: Option<u64> = None;
    for index in 0..header.record_count {
        let malformed = |reason| BatchError::MalformedRecord { index, reason };
        if pos >= section.len() {
            return Err(malformed("record count exceeds the records present"));
        }
        let mut cursor = Cursor { buf: section, pos };
        let length = cursor.varlong().map_err(malformed)?;
        let length = usize::try_from(length).map_err(|_| malformed("negative record length"))?;
        let end = cursor
            .pos
            .checked_add(length)
            .filter(|&e| e <= section.len());
        let end = end.ok_or_else(|| malformed("record length runs past the batch"))?;
        let mut cursor = Cursor {
            buf: &section[..end],
            pos: cursor.pos,
        };
        cursor.skip(1).map_err(malformed)?; // record attributes, unused
        let timestamp_delta = cursor.varlong().map_err(malformed)?;
        let offset_delta = cursor.varlong().map_err(malformed)?;
        let offset_delta = match layout {
            OffsetLayout::Dense if offset_delta != i64::from(index) => {
                return Err(malformed("offset deltas are not dense"));
            }
            OffsetLayout::Dense => u64::from(index),
            OffsetLayout::Gapped => {
                let delta = u64::try_from(offset_delta)
                    .ok()
                    .filter(|&d| d <= u64::from(header.last_offset_delta))
                    .ok_or_else(|| malformed("offset delta outside the batch's span"))?;
                if previous_delta.is_some_and(|p| delta <= p) {
                    return Err(malformed("offset deltas do not increase"));
                }
                delta
            }
        };
        previous_delta = Some(offset_delta);
        let key = cursor.optional_bytes().map_err(malformed)?;
        let value = cursor.optional_bytes().map_err(malformed)?;
        let header_count = cursor.varlong().map_err(malformed)?;
        let header_count = usize::try_from(header_count)
            .ok()
            .filter(|&n| n <= RECORD_HEADERS_MAX)
            .ok_or_else(|| malformed("header count out of range"))?;
        let mut headers = Vec::with_capacity(header_count.min(16));
        for _ in 0..header_count {
            let key = cursor.optional_bytes().map_err(malformed)?;
            let key = key.ok_or_else(|| malformed("null header key"))?;
            let value = cursor.optional_bytes().map_err(malformed)?;
            headers.push((key, value));
        }
        if cursor.pos != end {
            return Err(malformed("record has trailing bytes"));
        }
        visit(RawRecord {
            encoded: pos..end,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        })
        .map_err(malformed)?;
        pos = end;
    }
    if pos != section.len() {
        return Err(BatchError::MalformedRecord {
            index: header.record_count,
            reason: "bytes after the last record",
        });
    }
    Ok(())
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    #[inline]
    fn varlong(&mut self) -> Result<i64, &'static str> {
        let (value, used) = get_varlong(&self.buf[self.pos..]).map_err(|_| "bad varint")?;
        self.pos += used;
        Ok(value)
    }

    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        if self.buf.len() - self.pos < n {
            return Err("record truncated");
        }
        self.pos += n;
        Ok(())
    }

    #[inline]
    fn optional_bytes(&mut self) -> Result<Option<std::ops::Range<usize>>, &'static str> {
        let length = self.varlong()?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| "negative length")?;
        let start = self.pos;
        self.skip(length)?;
        Ok(Some(start..self.pos))
    }
}

/// Splits a buffer of back-to-back batches (a fetch answer, a segment) into batches.
/// Yields an error and stops at the first batch that does not fit in the buffer.
#[derive(Debug, Clone)]
pub struct BatchSplitter {
    rest: Bytes,
}

impl BatchSplitter {
    pub fn new(buf: Bytes) -> Self {
        Self { rest: buf }
    }
}

impl Iterator for BatchSplitter {
    type Item = Result<Bytes, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(total) = BatchHeader::total_bytes_at(&self.rest) else {
            let got = self.rest.len();
            self.rest.clear();
            return Some(Err(BatchError::ShortHeader { got }));
        };
        if total < BATCH_HEADER_BYTES || total > self.rest.len() {
            let available = self.rest.len();
            self.rest.clear();
            return Some(Err(BatchError::LengthMismatch {
                declared: total,
                available,
            }));
        }
        Some(Ok(self.rest.split_to(total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record_strategy() -> impl Strategy<Value = Record> {
        let bytes = || {
            proptest::option::of(
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
            )
        };
        let header = ("[a-z]{0,8}", bytes()).prop_map(|(key, value)| RecordHeader { key, value });
        (
            bytes(),
            bytes(),
            proptest::collection::vec(header, 0..3),
            any::<i64>(),
        )
            .prop_map(|(key, value, headers, timestamp)| Record {
                key,
                value,
                headers,
                timestamp,
            })
    }

    fn build(records: &[Record]) -> Bytes {
        let mut builder = BatchBuilder::new(ProducerStamp::NONE);
        for r in records {
            builder.push(r);
        }
        builder.finish().expect("non-empty")
    }

    #[test]
    fn empty_builder_makes_no_batch() {
        assert!(BatchBuilder::new(ProducerStamp::NONE).finish().is_none());
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let batch = build(&[Record::from_value("a", 10), Record::from_value("b", 12)]);
        let mut stamped = BytesMut::from(&batch[..]);
        stamp(&mut stamped, 1_000, 7);
        let header = validate(&stamped, BATCH_BYTES_MAX).expect("valid after stamping");
        assert_eq!(header.base_offset, 1_000);
        assert_eq!(header.leader_epoch, 7);
        assert_eq!(header.last_offset(), 1_001);
        let records = decode_records(&stamped.freeze()).expect("decodes");
        assert_eq!(records[1].offset, 1_001);
        assert_eq!(records[1].timestamp, 12);
    }

    fn gapped(deltas: &[u32], span: u32) -> Bytes {
        let mut builder = BatchBuilder::new(ProducerStamp::NONE);
        for &delta in deltas {
            let mut record = Record::from_value(format!("at {delta}"), 1_000 + i64::from(delta));
            record.key = Some(Bytes::from(format!("k{delta}")));
            record.headers = vec![RecordHeader {
                key: "h".into(),
                value: Some(Bytes::from(delta.to_string())),
            }];
            builder.push_at(&record, delta);
        }
        builder.span_to(span);
        let mut batch = BytesMut::from(builder.finish().expect("records were pushed"));
        stamp(&mut batch, 100, 3);
        batch.freeze()
    }

    #[test]
    fn gapped_batches_keep_offsets_and_span_for_readers() {
        let batch = gapped(&[1, 4, 5], 9);
        let header = BatchHeader::parse(&batch).expect("header");
        assert_eq!((header.record_count, header.last_offset_delta), (3, 9));
        assert_eq!(
            header.next_offset(),
            110,
            "the next fetch starts past the span"
        );
        let records = decode_records(&batch).expect("readers accept gaps");
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [101, 104, 105]);
        for r in &records {
            let delta = r.offset - 100;
            assert_eq!(r.value.as_deref(), Some(format!("at {delta}").as_bytes()));
            assert_eq!(r.key.as_deref(), Some(format!("k{delta}").as_bytes()));
            assert_eq!(r.timestamp, 1_000 + delta as i64);
            assert_eq!(
                r.headers[0].value.as_deref(),
                Some(delta.to_string().as_bytes())
            );
        }
    }

    #[test]
    fn retained_records_are_the_stored_bytes_with_gaps() {
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut builder = BatchBuilder::new(ProducerStamp {
                producer_id: 4,
                producer_epoch: 1,
                base_sequence: 0,
            });
            for i in 0..10 {
                let mut record = Record::from_value(format!("value {i}"), 7_000 + i);
                record.headers = vec![RecordHeader {
                    key: "i".into(),
                    value: Some(Bytes::from(i.to_string())),
                }];
                builder.push(&record);
            }
            let mut stored = BytesMut::from(builder.finish_compressed(codec).expect("records"));
            stamp(&mut stored, 40, 2);
            let stored = stored.freeze();
            let all = decode_records(&stored).expect("decodes");
            let mut asked = Vec::new();
            let sent = retain_records(&stored, |offset| {
                asked.push(offset);
                offset % 3 == 2
            })
            .expect("valid")
            .expect("some kept");
            assert_eq!(
                asked,
                (40..50).collect::<Vec<_>>(),
                "{codec:?}: asked in order"
            );
            let header = BatchHeader::parse(&sent).expect("header");
            assert_eq!(
                (
                    header.base_offset,
                    header.last_offset_delta,
                    header.record_count
                ),
                (40, 9, 3)
            );
            assert_eq!(
                (header.leader_epoch, header.producer_id),
                (2, NO_PRODUCER_ID)
            );
            assert!(matches!(header.compression(), Ok(Compression::None)));
            let kept: Vec<DecodedRecord> = all.into_iter().filter(|r| r.offset % 3 == 2).collect();
            assert_eq!(decode_records(&sent).expect("a reader accepts it"), kept);
            assert!(
                retain_records(&stored, |_| false).expect("valid").is_none(),
                "nothing kept is no batch"
            );
        }
    }

    /// Found by the `record_batch` fuzz target: a batch at the top of the offset space
    /// made `decode_records` add past `u64::MAX` (a panic with debug assertions, a wrapped
    /// offset without).
    #[test]
    fn offsets_past_the_largest_are_refused() {
        for (base, records) in [(u64::MAX, 1), (u64::MAX - 1, 2), (u64::MAX - 2, 3)] {
            let mut builder = BatchBuilder::new(ProducerStamp::NONE);
            for i in 0..records {
                builder.push(&Record::from_value(format!("v{i}"), 0));
            }
            let mut batch = BytesMut::from(builder.finish().expect("records"));
            stamp(&mut batch, base, 0);
            let batch = batch.freeze();
            assert!(matches!(
                decode_records(&batch),
                Err(BatchError::OffsetOverflow { .. })
            ));
            assert!(validate(&batch, BATCH_BYTES_MAX).is_err());
            assert!(RawBatch::open(&batch).is_err());
            let header = BatchHeader::parse(&batch).expect("header");
            assert_eq!(header.next_offset(), u64::MAX, "saturates, never panics");
        }
        // The last offsets that still have a next one decode.
        let mut builder = BatchBuilder::new(ProducerStamp::NONE);
        builder.push(&Record::from_value("v", 0));
        let mut batch = BytesMut::from(builder.finish().expect("records"));
        stamp(&mut batch, u64::MAX - 1, 0);
        let records = decode_records(&batch.freeze()).expect("decodes");
        assert_eq!(records[0].offset, u64::MAX - 1);
    }

    #[test]
    fn gapped_batches_are_never_valid_to_store() {
        let batch = gapped(&[0, 2], 2);
        assert!(matches!(
            validate(&batch, BATCH_BYTES_MAX),
            Err(BatchError::CountMismatch { .. })
        ));
        // Dense deltas but a span past the last record: also not storable.
        let batch = gapped(&[0, 1], 5);
        assert!(validate(&batch, BATCH_BYTES_MAX).is_err());
        assert!(decode_records(&batch).is_ok());
    }

    #[test]
    fn readers_refuse_deltas_that_repeat_fall_back_or_leave_the_span() {
        for (deltas, span, reason) in [
            (&[2u32, 2][..], 3, "offset deltas do not increase"),
            (&[3, 1][..], 3, "offset deltas do not increase"),
        ] {
            let err = decode_records(&gapped(deltas, span)).expect_err("refused");
            assert!(
                matches!(err, BatchError::MalformedRecord { index: 1, reason: r } if r == reason),
                "{deltas:?}: {err}"
            );
        }
        // A header that claims a narrower span than its records: rewrite the delta and
        // fix the CRC, as a hostile broker could.
        let mut batch = BytesMut::from(&gapped(&[0, 7], 7)[..]);
        batch[23..27].copy_from_slice(&5u32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_COVERAGE_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let err = decode_records(&batch.freeze()).expect_err("refused");
        assert!(
            err.to_string().contains("outside the batch's span"),
            "{err}"
        );
    }

    #[test]
    fn a_flipped_bit_is_a_crc_mismatch() {
        let batch = build(&[Record::from_value("hello", 1)]);
        let mut bad = batch.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert!(matches!(
            validate(&bad, BATCH_BYTES_MAX),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn oversized_batch_is_rejected_before_crc() {
        let batch = build(&[Record::from_value(vec![0u8; 2_000], 1)]);
        assert!(matches!(
            validate(&batch, 1_000),
            Err(BatchError::TooLarge { .. })
        ));
    }

    #[test]
    fn splitter_reports_a_torn_tail() {
        let a = build(&[Record::from_value("x", 1)]);
        let b = build(&[Record::from_value("y", 2)]);
        let mut joined = BytesMut::new();
        joined.extend_from_slice(&a);
        joined.extend_from_slice(&b[..b.len() - 3]);
        let mut split = BatchSplitter::new(joined.freeze());
        assert_eq!(split.next(), Some(Ok(a)));
        assert!(matches!(
            split.next(),
            Some(Err(BatchError::LengthMismatch { .. }))
        ));
        assert_eq!(split.next(), None);
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let mut section = Vec::new();
        section.extend_from_slice(&(u32::MAX).to_le_bytes());
        section.extend_from_slice(&[0u8; 16]);
        assert!(matches!(
            Compression::Lz4.decompress(&section),
            Err(BatchError::Decompression(_))
        ));
        assert!(matches!(
            Compression::Zstd.decompress(&[1, 2, 3]),
            Err(BatchError::Decompression(_))
        ));
    }

    #[test]
    fn compression_shrinks_repetitive_records() {
        let records: Vec<Record> = (0..100)
            .map(|i| Record::from_value(vec![b'a'; 500], i))
            .collect();
        let plain = build(&records);
        for codec in [Compression::Lz4, Compression::Zstd] {
            let mut builder = BatchBuilder::new(ProducerStamp::NONE);
            records.iter().for_each(|r| builder.push(r));
            let packed = builder.finish_compressed(codec).expect("non-empty");
            assert!(
                packed.len() * 4 < plain.len(),
                "{codec:?}: {} vs {}",
                packed.len(),
                plain.len()
            );
            let header = validate(&packed, BATCH_BYTES_MAX).expect("valid");
            assert_eq!(header.compression(), Ok(codec));
            assert_eq!(decode_records(&packed).expect("decodes").len(), 100);
        }
    }

    proptest! {
        #[test]
        fn compressed_batches_round_trip(records in proptest::collection::vec(record_strategy(), 1..10), codec in 0..3u8) {
            let codec = [Compression::None, Compression::Lz4, Compression::Zstd][codec as usize];
            let mut builder = BatchBuilder::new(ProducerStamp::NONE);
            records.iter().for_each(|r| builder.push(r));
            let batch = builder.finish_compressed(codec).expect("non-empty");
            prop_assert!(validate(&batch, BATCH_BYTES_MAX).is_ok());
            let decoded = decode_records(&batch).expect("decodes");
            prop_assert_eq!(decoded.len(), records.len());
            for (d, r) in decoded.iter().zip(&records) {
                prop_assert_eq!(&d.value, &r.value);
                prop_assert_eq!(&d.key, &r.key);
            }
        }

        #[test]
        fn batches_round_trip(records in proptest::collection::vec(record_strategy(), 1..20)) {
            let batch = build(&records);
            let header = validate(&batch, BATCH_BYTES_MAX).expect("builder output is valid");
            prop_assert_eq!(header.record_count as usize, records.len());
            let decoded = decode_records(&batch).expect("decodes");
            for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(d.offset, i as u64);
                prop_assert_eq!(d.timestamp, r.timestamp);
                prop_assert_eq!(&d.key, &r.key);
                prop_assert_eq!(&d.value, &r.value);
                prop_assert_eq!(&d.headers, &r.headers);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = validate(&bytes, BATCH_BYTES_MAX);
            let _ = decode_records(&Bytes::from(bytes.clone()));
            let _ = BatchSplitter::new(Bytes::from(bytes)).count();
        }

        #[test]
        fn corrupted_batches_never_panic(
            records in proptest::collection::vec(record_strategy(), 1..5),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = build(&records).to_vec();
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            // Re-seal the CRC so the record walk itself meets the garbage.
            let crc = crc32c::crc32c(&bytes[CRC_COVERAGE_AT..]);
            bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            let _ = validate(&bytes, BATCH_BYTES_MAX);
            let _ = decode_records(&Bytes::from(bytes));
        }
    }
}
