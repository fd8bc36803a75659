//! Runs Quiver's WebAssembly plugins (contract: `plugins/ABI.md`, version 1).
//!
//! What it does: checks an uploaded module (size, no imports, the ABI's exports and
//! version), compiles it once, and runs one guest call per batch in a sandbox with a
//! memory bound and a CPU bound, turning traps, timeouts and malformed answers into
//! [`PluginError`]s. What it does not do (yet): the registry of uploaded plugins,
//! attachments to topics, and the broker's produce and fetch stages; those build on
//! [`PluginEngine`].

pub mod abi;
pub mod sandbox;

pub use abi::{ABI_VERSION, OutputRecord, PluginKind};
pub use sandbox::{Limits, Outcome, Plugin, PluginEngine, PluginError, PluginInstance};
