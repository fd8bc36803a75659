//! [`InitCell`]: where a plugin keeps what `init` prepared (a compiled regex, parsed
//! parameters) for the calls that follow.

use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// A value set once (in `init`) and read by every later call; usable as a `static`.
///
/// ```
/// use quiver_plugin::{InitCell, Params, Record, Result};
///
/// static NEEDLE: InitCell<String> = InitCell::new();
///
/// fn init(params: &Params) -> Result<()> {
///     NEEDLE.set(params.require("needle")?.to_owned())?;
///     Ok(())
/// }
///
/// fn keep(record: &Record) -> Result<bool> {
///     let needle = NEEDLE.require()?;
///     Ok(record.value.is_some_and(|v| v.windows(needle.len()).any(|w| w == needle.as_bytes())))
/// }
/// # init(&Params::from_pairs([("needle", "b")])).expect("init");
/// # assert!(keep(&Record::from_value(b"abc")).expect("runs"));
/// ```
///
/// A WebAssembly instance is single-threaded and each instance has its own memory, so
/// every instance starts empty and `init` fills it once. The cell never blocks: it is
/// built on one atomic state byte, which keeps it sound on multi-threaded native
/// targets too (where plugin tests run). A `set` that races another loses and errs.
pub struct InitCell<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the thread that moved `state` from EMPTY to
// WRITING, and read only after `state` is READY (Release store, Acquire load), after
// which it is never written again. Sharing the cell shares `&T` (needs `T: Sync`), and
// the value may be dropped on another thread than the one that set it (`T: Send`).
unsafe impl<T: Send + Sync> Sync for InitCell<T> {}

impl<T> InitCell<T> {
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Stores `value`, once. A second `set` fails and drops its value.
    pub fn set(&self, value: T) -> Result<(), AlreadyInitialized> {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Acquire)
            .is_err()
        {
            return Err(AlreadyInitialized);
        }
        // SAFETY: winning EMPTY -> WRITING makes this the only writer, and no reader
        // looks at the value until READY is published below.
        unsafe { (*self.value.get()).write(value) };
        self.state.store(READY, Ordering::Release);
        Ok(())
    }

    /// The value, once `set` has completed.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) == READY {
            // SAFETY: READY is stored only after the value was written, and it is
            // never written again while the cell lives.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }

    /// The value, or an error for a call that came before `init` finished.
    pub fn require(&self) -> Result<&T, NotInitialized> {
        self.get().ok_or(NotInitialized)
    }
}

impl<T> Default for InitCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for InitCell<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() == READY {
            // SAFETY: READY means the value was written; `&mut self` means no one
            // else can see it any more.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for InitCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InitCell").field(&self.get()).finish()
    }
}

/// `InitCell::set` was called on a cell that already holds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyInitialized;

impl fmt::Display for AlreadyInitialized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("plugin state was already initialised")
    }
}

impl core::error::Error for AlreadyInitialized {}

/// A call read plugin state before `init` set it (a plugin that keeps state must
/// export `init`, and the host calls it before any batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotInitialized;

impl fmt::Display for NotInitialized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("plugin state read before init")
    }
}

impl core::error::Error for NotInitialized {}
