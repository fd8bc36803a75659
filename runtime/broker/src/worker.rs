//! Short blocking work (a write to the page cache, a segment roll) run from async code.

/// Runs short blocking work (a write to the page cache, a segment roll) without
/// stalling other tasks on this worker.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
