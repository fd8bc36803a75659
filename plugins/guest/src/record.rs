//! Records as a plugin sees them: [`Record`], a borrowed view into the batch the host
//! wrote, and [`RecordOut`], an owned record a `map` kind answers with.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::abi::Reader;

/// One input record, borrowed from the batch the host wrote into guest memory. Every
/// length was checked when the batch was parsed ([`crate::RecordList::parse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Position of the record in the input batch (0, 1, 2, ...).
    pub offset_delta: u32,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

impl<'a> Record<'a> {
    /// A record with only a value: handy in tests of a plugin's function.
    pub const fn from_value(value: &'a [u8]) -> Self {
        Self {
            offset_delta: 0,
            timestamp: 0,
            key: None,
            value: Some(value),
            headers: Headers::EMPTY,
        }
    }
}

/// One header of an input record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: Option<&'a [u8]>,
}

/// The headers of an input record, in the order the producer wrote them (names may
/// repeat). Decoded on demand from the batch's bytes, which were validated when the
/// batch was parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    count: u32,
    /// Exactly `count` encoded headers.
    encoded: &'a [u8],
}

impl<'a> Headers<'a> {
    /// No headers.
    pub const EMPTY: Headers<'static> = Headers {
        count: 0,
        encoded: &[],
    };

    /// `encoded` must hold exactly `count` headers that [`Headers::read_one`] accepts;
    /// the record list parser checks that before building a view.
    pub(crate) const fn new(count: u32, encoded: &'a [u8]) -> Self {
        Self { count, encoded }
    }

    /// Reads one `[name_len:u32][name][value_len:i32][value]` header.
    pub(crate) fn read_one(
        reader: &mut Reader<'a>,
    ) -> Result<Header<'a>, crate::abi::MalformedInput> {
        let name = reader.str(
            "header name length runs past the end of the input",
            "header name runs past the end of the input",
            "header name is not UTF-8",
        )?;
        let value = reader.optional_bytes(
            "header value length is missing or negative",
            "header value runs past the end of the input",
        )?;
        Ok(Header { name, value })
    }

    pub const fn len(&self) -> usize {
        self.count as usize
    }

    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            left: self.count,
            reader: Reader::new(self.encoded),
        }
    }

    /// The first header called `name`.
    pub fn get(&self, name: &str) -> Option<Header<'a>> {
        self.iter().find(|h| h.name == name)
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = Header<'a>;
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// Iterates over [`Headers`].
#[derive(Clone, Debug)]
pub struct HeaderIter<'a> {
    left: u32,
    reader: Reader<'a>,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        self.left = self.left.checked_sub(1)?;
        // The bytes were validated at parse time, so this cannot fail; if it ever did,
        // ending early is safer than a panic inside the guest.
        Headers::read_one(&mut self.reader).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

/// A record a `map`, `filter_map` or `array_map` plugin answers with. Start from the
/// input record (`RecordOut::from(record)`, which copies its timestamp, key, value and
/// headers) and change what the plugin changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordOut {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<HeaderOut>,
}

/// One header of an output record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderOut {
    pub name: String,
    pub value: Option<Vec<u8>>,
}

impl RecordOut {
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn without_key(mut self) -> Self {
        self.key = None;
        self
    }

    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn without_value(mut self) -> Self {
        self.value = None;
        self
    }

    /// Sets header `name` to `value`: headers of that name are removed first, so the
    /// record ends with exactly one, appended after the others.
    pub fn with_header(self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let name = name.into();
        let mut out = self.without_header(&name);
        out.headers.push(HeaderOut {
            name,
            value: Some(value.into()),
        });
        out
    }

    /// Removes every header called `name`.
    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|h| h.name != name);
        self
    }
}

impl From<&Record<'_>> for RecordOut {
    fn from(record: &Record<'_>) -> Self {
        Self {
            timestamp: record.timestamp,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record
                .headers
                .iter()
                .map(|h| HeaderOut {
                    name: h.name.into(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect(),
        }
    }
}
