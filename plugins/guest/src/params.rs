//! [`Params`]: the key/value parameters an attachment passes to a plugin's `init`.
//!
//! ```text
//! [count:u32]
//! count times:
//!   [key_len:u32][key][value_len:u32][value]     both UTF-8
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::abi::{MalformedInput, Reader, malformed};

/// The parameters `init` was called with. Owned, so a plugin may keep them in its
/// state after the call (the host's buffer is freed when `init` returns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// In the order the host sent them; a key may repeat, the last one counts.
    entries: Vec<(String, String)>,
}

/// The smallest encoded entry: two empty strings.
const ENTRY_BYTES_MIN: usize = 8;

impl Params {
    /// Parses the ABI's parameter list, checking every length and that keys and
    /// values are UTF-8.
    pub fn parse(input: &[u8]) -> Result<Self, MalformedInput> {
        let mut reader = Reader::new(input);
        let count = reader.u32("parameter count is missing")?;
        let count = usize::try_from(count).map_err(|_| malformed("parameter count"))?;
        // Capped by what the input can hold, so a lying count allocates nothing.
        if count.saturating_mul(ENTRY_BYTES_MIN) > reader.remaining() {
            return Err(malformed("parameter count exceeds what the input can hold"));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let key = reader.str(
                "parameter key length runs past the end of the input",
                "parameter key runs past the end of the input",
                "parameter key is not UTF-8",
            )?;
            let value = reader.str(
                "parameter value length runs past the end of the input",
                "parameter value runs past the end of the input",
                "parameter value is not UTF-8",
            )?;
            entries.push((key.into(), value.into()));
        }
        if reader.remaining() != 0 {
            return Err(malformed("bytes after the last parameter"));
        }
        Ok(Self { entries })
    }

    /// Builds parameters in code: for testing a plugin's `init` without a host.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`; when the key repeats, the last one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&str, ParamError> {
        self.get(key)
            .ok_or_else(|| ParamError::Missing { key: key.into() })
    }

    /// A yes/no parameter: absent is `false`; otherwise `true` or `false`.
    pub fn flag(&self, key: &str) -> Result<bool, ParamError> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ParamError::Invalid {
                key: key.into(),
                value: other.into(),
                expected: "true or false",
            }),
        }
    }

    /// Every entry in the order the host sent them, repeats included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A parameter a plugin needs is missing or has a value it cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    Missing {
        key: String,
    },
    Invalid {
        key: String,
        value: String,
        expected: &'static str,
    },
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Missing { key } => write!(f, "parameter `{key}` is required"),
            ParamError::Invalid {
                key,
                value,
                expected,
            } => write!(f, "parameter `{key}` is `{value}`; expected {expected}"),
        }
    }
}

impl core::error::Error for ParamError {}
