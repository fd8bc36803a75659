//! The byte layouts of plugin ABI version 1 (`plugins/ABI.md`): the record list the
//! host writes into the guest, the parameters, and the answers it reads back. Pure
//! functions over bytes; every length read from a guest is checked before use.

use bytes::Bytes;
use quiver_wire::batch::{DecodedRecord, RecordHeader, RecordView};

/// The ABI version this host speaks.
pub const ABI_VERSION: i32 = 1;

/// What a plugin does with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Filter,
    Map,
    FilterMap,
    ArrayMap,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] = [
        PluginKind::Filter,
        PluginKind::Map,
        PluginKind::FilterMap,
        PluginKind::ArrayMap,
    ];

    /// The export that implements it.
    pub const fn export(self) -> &'static str {
        match self {
            PluginKind::Filter => "filter",
            PluginKind::Map => "map",
            PluginKind::FilterMap => "filter_map",
            PluginKind::ArrayMap => "array_map",
        }
    }
}

/// Why a guest's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin answer malformed: {0}")]
pub struct AnswerError(pub String);

fn malformed(reason: impl Into<String>) -> AnswerError {
    AnswerError(reason.into())
}

/// Writes ABI fields into a slice sized by [`encoded_len`]: the record list goes
/// straight into the guest's memory, without a buffer of its own to copy from.
struct SliceWriter<'a> {
    rest: &'a mut [u8],
}

impl SliceWriter<'_> {
    /// Writes `bytes`; the slice was sized for everything written, so a write past it
    /// is a bug in [`encoded_len`], reported rather than panicking.
    fn put(&mut self, bytes: &[u8]) -> Result<(), RecordListTooShort> {
        let rest = std::mem::take(&mut self.rest);
        let (head, tail) = rest
            .split_at_mut_checked(bytes.len())
            .ok_or(RecordListTooShort)?;
        head.copy_from_slice(bytes);
        self.rest = tail;
        Ok(())
    }

    fn put_optional(&mut self, bytes: Option<&[u8]>) -> Result<(), RecordListTooShort> {
        match bytes {
            Some(b) => {
                self.put(&(b.len() as i32).to_le_bytes())?;
                self.put(b)
            }
            None => self.put(&(-1i32).to_le_bytes()),
        }
    }
}

/// The buffer given to [`encode_records_into`] is shorter than [`encoded_len`] said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record list buffer shorter than the records")]
pub struct RecordListTooShort;

/// A record as the record list carries it: what the host can encode for a guest, from
/// a decoded record or straight from a stored batch ([`RecordView`]).
pub trait AbiRecord {
    fn timestamp(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> Option<&[u8]>;
    fn header_count(&self) -> usize;
    /// Each header's UTF-8 name and value.
    fn headers(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)>;
}

impl AbiRecord for DecodedRecord {
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn header_count(&self) -> usize {
        self.headers.len()
    }
    fn headers(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.headers
            .iter()
            .map(|h| (h.key.as_bytes(), h.value.as_deref()))
    }
}

impl AbiRecord for RecordView<'_> {
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
    fn key(&self) -> Option<&[u8]> {
        self.key
    }
    fn value(&self) -> Option<&[u8]> {
        self.value
    }
    fn header_count(&self) -> usize {
        RecordView::header_count(self)
    }
    fn headers(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        RecordView::headers(self)
    }
}

/// Bytes of a record in the list besides its key, value and headers.
const RECORD_FIXED_BYTES: usize = 4 + 8 + 4 + 4 + 4;

/// Bytes of the ABI record list for `records`.
pub fn encoded_len(records: &[impl AbiRecord]) -> usize {
    4 + records
        .iter()
        .map(|r| {
            // offset_delta, timestamp, key and value lengths, header count
            RECORD_FIXED_BYTES
                + r.key().map_or(0, <[u8]>::len)
                + r.value().map_or(0, <[u8]>::len)
                + r.headers()
                    .map(|(k, v)| 8 + k.len() + v.map_or(0, <[u8]>::len))
                    .sum::<usize>()
        })
        .sum::<usize>()
}

/// Encodes records as the ABI's record list into `out`, which holds exactly
/// [`encoded_len`] bytes; `offset_delta` is each record's position.
pub fn encode_records_into(
    records: &[impl AbiRecord],
    out: &mut [u8],
) -> Result<(), RecordListTooShort> {
    let mut w = SliceWriter { rest: out };
    w.put(&(records.len() as u32).to_le_bytes())?;
    for (i, r) in records.iter().enumerate() {
        w.put(&(i as u32).to_le_bytes())?;
        w.put(&r.timestamp().to_le_bytes())?;
        w.put_optional(r.key())?;
        w.put_optional(r.value())?;
        w.put(&(r.header_count() as u32).to_le_bytes())?;
        for (key, value) in r.headers() {
            w.put(&(key.len() as u32).to_le_bytes())?;
            w.put(key)?;
            w.put_optional(value)?;
        }
    }
    Ok(())
}

/// Encodes records as the ABI's record list; `offset_delta` is each record's position.
pub fn encode_records(records: &[impl AbiRecord]) -> Vec<u8> {
    let mut out = vec![0; encoded_len(records)];
    // Sized by encoded_len, so it always fits.
    let _ = encode_records_into(records, &mut out);
    out
}

/// Encodes `init` parameters.
pub fn encode_params(params: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(params.len() as u32).to_le_bytes());
    for (k, v) in params {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// A record a plugin produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// The input record it replaces or came from.
    pub source: u32,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], AnswerError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end =
            end.ok_or_else(|| malformed(format!("{what} runs past the end of the answer")))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, AnswerError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &str) -> Result<i64, AnswerError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    fn optional(&mut self, what: &str) -> Result<Option<Bytes>, AnswerError> {
        let len = self.u32(what)? as i32;
        if len == -1 {
            return Ok(None);
        }
        let len =
            usize::try_from(len).map_err(|_| malformed(format!("{what} has a negative length")))?;
        Ok(Some(Bytes::copy_from_slice(self.take(len, what)?)))
    }
}

/// Parses a `filter` answer: one keep-bit per input record.
pub fn parse_filter(answer: &[u8], input_count: usize) -> Result<Vec<bool>, AnswerError> {
    let mut c = Cursor {
        buf: answer,
        pos: 0,
    };
    let count = c.u32("count")? as usize;
    if count != input_count {
        return Err(malformed(format!(
            "filter answered for {count} records, the batch has {input_count}"
        )));
    }
    let bitmap = c.take(count.div_ceil(8), "bitmap")?;
    if c.pos != answer.len() {
        return Err(malformed("bytes after the bitmap"));
    }
    Ok((0..count)
        .map(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
        .collect())
}

/// Parses a record list answer and checks it against the kind's rules.
pub fn parse_records(
    answer: &[u8],
    kind: PluginKind,
    input_count: usize,
    records_max: usize,
) -> Result<Vec<OutputRecord>, AnswerError> {
    let mut c = Cursor {
        buf: answer,
        pos: 0,
    };
    let count = c.u32("count")? as usize;
    if count > records_max {
        return Err(malformed(format!(
            "{count} records, over the limit of {records_max}"
        )));
    }
    // Each record takes at least 24 bytes: no allocation sized by a lying count.
    if count.saturating_mul(24) > answer.len() {
        return Err(malformed(format!(
            "{count} records cannot fit in {} bytes",
            answer.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let source = c.u32("offset_delta")?;
        let timestamp = c.i64("timestamp")?;
        let key = c.optional("key")?;
        let value = c.optional("value")?;
        let header_count = c.u32("header count")? as usize;
        let mut headers = Vec::with_capacity(header_count.min(64));
        for _ in 0..header_count {
            let name_len = c.u32("header name")? as usize;
            let name = std::str::from_utf8(c.take(name_len, "header name")?)
                .map_err(|_| malformed("header name is not UTF-8"))?
                .to_owned();
            let value = c.optional("header value")?;
            headers.push(RecordHeader { key: name, value });
        }
        out.push(OutputRecord {
            source,
            timestamp,
            key,
            value,
            headers,
        });
    }
    if c.pos != answer.len() {
        return Err(malformed("bytes after the last record"));
    }
    let in_range = out.iter().all(|r| (r.source as usize) < input_count);
    if !in_range {
        return Err(malformed(
            "a record names an input record the batch does not have",
        ));
    }
    match kind {
        PluginKind::Map => {
            if out.len() != input_count
                || out.iter().enumerate().any(|(i, r)| r.source as usize != i)
            {
                return Err(malformed(
                    "map must answer one record per input record, in order",
                ));
            }
        }
        PluginKind::FilterMap => {
            if out.windows(2).any(|w| w[0].source >= w[1].source) {
                return Err(malformed(
                    "filter_map records must name strictly increasing input records",
                ));
            }
        }
        PluginKind::ArrayMap => {
            if out.windows(2).any(|w| w[0].source > w[1].source) {
                return Err(malformed(
                    "array_map records must name non-decreasing input records",
                ));
            }
        }
        PluginKind::Filter => return Err(malformed("a filter answers with a bitmap")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> DecodedRecord {
        DecodedRecord {
            offset: 0,
            timestamp: 7,
            key: None,
            value: Some(Bytes::from(value.to_owned())),
            headers: vec![RecordHeader {
                key: "h".into(),
                value: None,
            }],
        }
    }

    #[test]
    fn a_record_list_round_trips_as_a_map_answer() {
        let input = vec![record("a"), record("bb")];
        let encoded = encode_records(&input);
        let out = parse_records(&encoded, PluginKind::Map, 2, 10).expect("parses");
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].value.as_deref(), Some(&b"bb"[..]));
        assert_eq!(out[1].headers[0].key, "h");
        assert!(
            parse_records(&encoded, PluginKind::Map, 3, 10).is_err(),
            "count must match for map"
        );
        assert!(
            parse_records(&encoded[..encoded.len() - 1], PluginKind::Map, 2, 10).is_err(),
            "truncated"
        );
        assert!(
            parse_records(&encoded, PluginKind::ArrayMap, 2, 1).is_err(),
            "over the record limit"
        );
    }

    #[test]
    fn filter_bitmaps() {
        assert_eq!(
            parse_filter(&[3, 0, 0, 0, 0b101], 3),
            Ok(vec![true, false, true])
        );
        assert!(parse_filter(&[3, 0, 0, 0, 0b101], 4).is_err());
        assert!(parse_filter(&[3, 0, 0, 0], 3).is_err());
        assert!(parse_filter(&[3, 0, 0, 0, 1, 9], 3).is_err());
    }

    #[test]
    fn lying_counts_do_not_allocate() {
        let answer = [0xff, 0xff, 0xff, 0x7f];
        assert!(parse_records(&answer, PluginKind::ArrayMap, 1, usize::MAX).is_err());
    }
}
