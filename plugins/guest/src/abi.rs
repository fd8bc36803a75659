//! The numbers of ABI version 1 (`plugins/ABI.md`) that a guest answers with, and the
//! bounds-checked little-endian reader every decoder in this crate uses.

use core::fmt;

/// The ABI version the exports speak; `quiver_abi_version` returns it.
pub const VERSION: i32 = 1;

/// What a transformation export returns instead of an answer, and what `init`
/// returns instead of 0. The host reports a negative transformation result as
/// `plugin error code -N` and a nonzero `init` as `plugin init refused its parameters
/// (code N)`. Codes are never reused for another meaning.
pub mod code {
    /// The plugin's own function returned `Err` (for any record of the batch: the
    /// ABI has no per-record errors, so the whole batch fails).
    pub const PLUGIN_ERROR: i32 = -1;
    /// The host's input did not parse as a record list (or as parameters for `init`),
    /// or named a buffer that `alloc` did not hand out.
    pub const MALFORMED_INPUT: i32 = -2;
    /// The answer cannot be expressed in the ABI: a key, value or header longer than
    /// its length field allows, more than `u32::MAX` records, or an answer that lies
    /// above 2 GiB (its packed address would read as negative).
    pub const ANSWER_TOO_LARGE: i32 = -3;
    /// The guest could not allocate memory for the answer.
    pub const OUT_OF_MEMORY: i32 = -4;
}

/// The smallest encoded record: offset_delta, timestamp, key and value lengths, and
/// header count, with no key, value or headers.
pub(crate) const RECORD_BYTES_MIN: usize = 4 + 8 + 4 + 4 + 4;

/// Why the host's input was refused: it does not follow the record list or parameter
/// layout of ABI.md. Maps to [`code::MALFORMED_INPUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedInput {
    /// Which field broke the layout, and how.
    pub reason: &'static str,
}

impl fmt::Display for MalformedInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed input: {}", self.reason)
    }
}

impl core::error::Error for MalformedInput {}

pub(crate) const fn malformed(reason: &'static str) -> MalformedInput {
    MalformedInput { reason }
}

/// Reads the ABI's little-endian fields off a byte slice; every read checks that the
/// bytes are there, so a lying length is an error, never a panic.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) const fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The bytes not read yet.
    pub(crate) const fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn take(
        &mut self,
        n: usize,
        what: &'static str,
    ) -> Result<&'a [u8], MalformedInput> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(malformed(what))?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], MalformedInput> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, MalformedInput> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, MalformedInput> {
        self.array(what).map(i32::from_le_bytes)
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, MalformedInput> {
        self.array(what).map(i64::from_le_bytes)
    }

    /// `[len:i32][bytes]`, where -1 means absent and any other negative length is
    /// malformed.
    pub(crate) fn optional_bytes(
        &mut self,
        length: &'static str,
        bytes: &'static str,
    ) -> Result<Option<&'a [u8]>, MalformedInput> {
        match self.i32(length)? {
            -1 => Ok(None),
            len => {
                let len = usize::try_from(len).map_err(|_| malformed(length))?;
                self.take(len, bytes).map(Some)
            }
        }
    }

    /// `[len:u32][UTF-8 bytes]`.
    pub(crate) fn str(
        &mut self,
        length: &'static str,
        text: &'static str,
        not_utf8: &'static str,
    ) -> Result<&'a str, MalformedInput> {
        let len = self.u32(length)?;
        let len = usize::try_from(len).map_err(|_| malformed(length))?;
        core::str::from_utf8(self.take(len, text)?).map_err(|_| malformed(not_utf8))
    }
}
