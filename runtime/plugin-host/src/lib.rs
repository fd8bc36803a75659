//! Runs Quiver's WebAssembly plugins (contract: `plugins/ABI.md`, version 1).
//!
//! - [`admission`]: checks an uploaded module's shape (functions, code size, locals,
//!   tables, memories, data, ...) against [`Limits`] before anything is compiled.
//! - [`sandbox`]: checks an uploaded module (size, no imports, the ABI's exports and
//!   version), compiles it (one compile at a time, under a time budget), and runs one
//!   guest call per batch with a memory bound and a CPU bound, turning traps, timeouts
//!   and malformed answers into [`PluginError`]s.
//! - [`cpu_time`]: the CPU time of the thread running a guest, which bounds each call.
//! - [`registry`]: the plugins a broker knows by name and version, their attachments
//!   to topics, the on-disk compile cache, and pools of initialised instances.
//! - [`chain`]: runs a topic's attached plugins over one batch, applies each
//!   attachment's `on_error`, and rebuilds batches for the log or for a consumer.
//!
//! No async and no network here: the broker calls these from blocking tasks. Threads
//! of its own: each engine's epoch ticker, and one thread per compile.

pub mod abi;
pub mod admission;
pub mod chain;
pub mod cpu_time;
pub mod registry;
pub mod sandbox;

pub use abi::{ABI_VERSION, OutputRecord, PluginKind};
pub use admission::{ModuleExcess, ModuleShape};
pub use chain::{ChainOutcome, ChainRun, StepReport, run_chain};
pub use cpu_time::{OsThreadCpuClock, ThreadCpuClock};
pub use registry::{Registry, RegistryError, Step};
pub use sandbox::{Limits, Outcome, Plugin, PluginEngine, PluginError, PluginInstance};
