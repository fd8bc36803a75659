//! [`Error`]: what a plugin's own function returns when it cannot handle a batch.

use alloc::string::{String, ToString};
use core::fmt;

/// The error a plugin's function returns. The host sees only the code
/// ([`crate::abi::code::PLUGIN_ERROR`]): ABI v1 carries no message. The message is for
/// the plugin's own tests, and for a later ABI that can log.
///
/// Any [`core::error::Error`] converts into it, so `?` works on `serde_json`, `regex`,
/// [`crate::ParamError`] and the like. For that reason `Error` itself does not
/// implement `core::error::Error` (the two impls would overlap), as with `anyhow`.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Error").field(&self.message).finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: core::error::Error> From<E> for Error {
    /// Keeps the error's message and those of its sources, joined by ": ".
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        // Bounded: a source chain that loops would otherwise never end.
        for _ in 0..SOURCES_MAX {
            let Some(cause) = source else { break };
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self { message }
    }
}

/// How many sources of an error are kept in its message.
const SOURCES_MAX: usize = 8;
