//! The controller's disk: Raft log, vote and snapshots in one directory.
//!
//! ```text
//! DIR/
//!   LOCK                         flock'd while a controller uses DIR
//!   vote                         the Raft vote (term, voted-for), replaced atomically
//!   committed                    the last committed log id, replaced atomically
//!   snapshot                     the last snapshot: metadata frame + state frame
//!   log/
//!     purged                     the last purged log id, replaced atomically
//!     00000000000000000000.log   segments of framed entries, named by first index
//!     00000000000000004096.log
//! ```
//!
//! Every file is made of frames (`[length:4][crc32c:4][payload]`, see [`frame`])
//! holding JSON. [`LogStore`] implements openraft's `RaftLogStorage` and
//! [`StateMachineStore`] its `RaftStateMachine` (the storage-v2 API).

pub mod frame;
mod log_store;
mod state_machine;

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;

pub use log_store::{
    ENTRY_BYTES_MAX, LogReader, LogRecovery, LogStore, SEGMENT_BYTES_MAX, SEGMENT_ENTRIES_MAX,
};
pub use state_machine::{
    AppliedView, SNAPSHOT_BYTES_MAX, SnapshotBuilder, SnapshotBytes, StateMachineStore,
};

const LOCK_FILE: &str = "LOCK";

/// An exclusive lock on a controller directory, so two controllers never share one.
/// Released when the last holder (the controller and its storage) drops it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, failing at once if it is locked.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another controller", dir.display()),
            )),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
