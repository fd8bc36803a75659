//! Write Quiver plugins in Rust. A plugin is a function over one record; a macro turns
//! it into a WebAssembly module that speaks the host/guest contract of
//! `plugins/ABI.md` (version 1):
//!
//! ```
//! use quiver_plugin::{Record, Result};
//!
//! fn non_empty(record: &Record) -> Result<bool> {
//!     Ok(record.value.is_some_and(|v| !v.is_empty()))
//! }
//!
//! quiver_plugin::filter!(non_empty);
//! # fn main() {}
//! ```
//!
//! Built with `cargo build --release --target wasm32-unknown-unknown` as a `cdylib`,
//! that is a complete plugin: it exports `memory`, `quiver_abi_version`, `alloc` and
//! `filter`, and imports nothing.
//!
//! What it provides:
//! - [`Record`], a borrowed view of one input record, parsed with every length checked
//!   ([`RecordList`]); [`RecordOut`], an owned record for `map` kinds;
//! - [`Params`] for `init`, and [`InitCell`] to keep what `init` prepared;
//! - [`filter!`], [`map!`], [`filter_map!`], [`array_map!`] and [`init!`], which emit
//!   the exports; [`call`] runs the same logic natively, for tests;
//! - [`Error`]/[`Result`] for the plugin's own failures, and the codes the exports
//!   return ([`abi::code`]);
//! - [`json`], a streaming lookup of one field in a JSON value: one validating pass,
//!   no value tree, no allocation per record.
//!
//! What it does not do: pick an allocator or panic handler for a `std` plugin (std
//! brings both), or talk to the broker (ABI v1 has no imports).
//!
//! # Memory
//!
//! A filter that reads its records in place costs no allocation per batch. The
//! record list the host writes, and a `filter`'s answer bitmap, live in a per-call
//! arena the SDK owns: a buffer costs a pointer bump, and the whole arena is reset,
//! without touching its bytes, when the host starts the next call with `alloc`. A
//! `filter` reads the records as borrowed views of that input (nothing is copied) and
//! writes only the bitmap, placed after the input so that the input is never
//! overwritten.
//!
//! The rule for plugin authors, which the compiler enforces: a [`Record`] (its key,
//! value and headers) borrows the current call's input and cannot be kept after the
//! function returns; copy what must outlive the call (`to_vec()`, `to_owned()`).
//! Everything a plugin allocates itself, in its function or in `init` (what it keeps
//! in an [`InitCell`]), comes from the ordinary global allocator and is never reset
//! or overwritten by the arena; [`Params`] are owned copies. The arena is not the
//! global allocator on purpose: that would free every allocation of a call when the
//! next one starts, including any that safe code had kept (a cache a dependency fills
//! lazily), which is unsound.
//!
//! # Features
//!
//! - `std` (default): the SDK links `std`, as a plugin that uses std does anyway. It
//!   adds no API; it makes [`no_std_runtime!`] a compile error on wasm32, where std
//!   already brings an allocator and a panic handler.
//! - `runtime`: [`no_std_runtime!`] for `#![no_std]` plugins: a global allocator
//!   (dlmalloc, as std uses on wasm32; freed memory is reused, so state kept by `init`
//!   survives later calls) and a panic handler that traps. A no_std plugin depends on
//!   `quiver-plugin` with `default-features = false, features = ["runtime"]`.
//!
//! # Errors
//!
//! A transformation export returns a negative code instead of an answer, and `init`
//! a nonzero one to refuse its parameters: -1 when the plugin's function returned
//! `Err`, -2 when the host's input did not parse, -3 when the answer does not fit the
//! ABI, -4 when the guest ran out of memory for it ([`abi::code`]). A panic aborts,
//! which is a trap for the host: the batch fails, the broker does not.
//!
//! # Native builds
//!
//! Exports, allocator and panic handler are emitted for `target_arch = "wasm32"`
//! only, so a plugin crate also builds and unit-tests natively with `cargo test`.

#![no_std]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod abi;
pub mod call;
mod error;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod exports;
pub mod json;
mod params;
mod record;
mod record_list;
mod state;

pub use abi::MalformedInput;
pub use call::CallError;
pub use error::{Error, Result};
pub use params::{ParamError, Params};
pub use record::{Header, HeaderIter, HeaderOut, Headers, Record, RecordOut};
pub use record_list::{EncodeError, RecordList, RecordListWriter, Records};
pub use state::{AlreadyInitialized, InitCell, NotInitialized};

/// What the macros' expansions name; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::exports;
    /// For expansions in a `#![no_std]` crate, which has no `std::vec` to name.
    pub use alloc::vec::Vec;
    #[cfg(all(target_arch = "wasm32", feature = "runtime"))]
    pub use dlmalloc::GlobalDlmalloc;
}

/// The exports every plugin has besides its transformation.
#[doc(hidden)]
#[macro_export]
macro_rules! __common_exports {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(export_name = "quiver_abi_version")]
        pub extern "C" fn __quiver_abi_version() -> i32 {
            $crate::__private::exports::abi_version()
        }

        #[cfg(target_arch = "wasm32")]
        #[unsafe(export_name = "alloc")]
        pub extern "C" fn __quiver_alloc(size: i32) -> i32 {
            $crate::__private::exports::alloc(size)
        }
    };
}

// The macros below wrap their exports in `const _: () = { ... };` so that the Rust
// names they define cannot clash with the plugin's (a plugin may well call its own
// function `filter` or `init`); `export_name` gives the symbols their ABI names. The
// inner `const _: fn(..) = $f;` checks the function's signature on every target, and
// counts as a use of it where nothing is exported (native builds).

/// Emits a `filter` plugin from `fn(&Record) -> Result<bool>`: `true` keeps the record.
///
/// ```
/// fn keep(record: &quiver_plugin::Record) -> quiver_plugin::Result<bool> {
///     Ok(record.key.is_some())
/// }
/// quiver_plugin::filter!(keep);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! filter {
    ($keep:path $(,)?) => {
        const _: () = {
            const _: for<'r, 'a> fn(&'r $crate::Record<'a>) -> $crate::Result<bool> = $keep;
            $crate::__common_exports!();

            #[cfg(target_arch = "wasm32")]
            #[unsafe(export_name = "filter")]
            pub extern "C" fn __quiver_filter(ptr: i32, len: i32) -> i64 {
                $crate::__private::exports::filter(ptr, len, $keep)
            }
        };
    };
}

/// Emits a `map` plugin from `fn(&Record) -> Result<RecordOut>`: one output record per
/// input record, which keeps the input's offset.
#[macro_export]
macro_rules! map {
    ($transform:path $(,)?) => {
        const _: () = {
            const _: for<'r, 'a> fn(&'r $crate::Record<'a>) -> $crate::Result<$crate::RecordOut> =
                $transform;
            $crate::__common_exports!();

            #[cfg(target_arch = "wasm32")]
            #[unsafe(export_name = "map")]
            pub extern "C" fn __quiver_map(ptr: i32, len: i32) -> i64 {
                $crate::__private::exports::map(ptr, len, $transform)
            }
        };
    };
}

/// Emits a `filter_map` plugin from `fn(&Record) -> Result<Option<RecordOut>>`:
/// `None` drops the record, `Some` replaces it and keeps its offset.
#[macro_export]
macro_rules! filter_map {
    ($transform:path $(,)?) => {
        const _: () = {
            const _: for<'r, 'a> fn(
                &'r $crate::Record<'a>,
            )
                -> $crate::Result<::core::option::Option<$crate::RecordOut>> = $transform;
            $crate::__common_exports!();

            #[cfg(target_arch = "wasm32")]
            #[unsafe(export_name = "filter_map")]
            pub extern "C" fn __quiver_filter_map(ptr: i32, len: i32) -> i64 {
                $crate::__private::exports::filter_map(ptr, len, $transform)
            }
        };
    };
}

/// Emits an `array_map` plugin from `fn(&Record) -> Result<Vec<RecordOut>>`: any
/// number of output records per input record (none drops it).
#[macro_export]
macro_rules! array_map {
    ($transform:path $(,)?) => {
        const _: () = {
            const _: for<'r, 'a> fn(
                &'r $crate::Record<'a>,
            )
                -> $crate::Result<$crate::__private::Vec<$crate::RecordOut>> = $transform;
            $crate::__common_exports!();

            #[cfg(target_arch = "wasm32")]
            #[unsafe(export_name = "array_map")]
            pub extern "C" fn __quiver_array_map(ptr: i32, len: i32) -> i64 {
                $crate::__private::exports::array_map(ptr, len, $transform)
            }
        };
    };
}

/// Emits `init` from `fn(&Params) -> Result<()>`: `Ok` accepts the parameters, `Err`
/// refuses them and the host does not attach the plugin. Keep what it prepares in an
/// [`InitCell`].
#[macro_export]
macro_rules! init {
    ($setup:path $(,)?) => {
        const _: () = {
            const _: for<'p> fn(&'p $crate::Params) -> $crate::Result<()> = $setup;

            #[cfg(target_arch = "wasm32")]
            #[unsafe(export_name = "init")]
            pub extern "C" fn __quiver_init(ptr: i32, len: i32) -> i32 {
                $crate::__private::exports::init(ptr, len, $setup)
            }
        };
    };
}

/// Gives a `#![no_std]` plugin what std would: a global allocator and a panic handler
/// that traps (wasm32 only; native builds link std instead, for tests). Call it once
/// at the crate root; needs the `runtime` feature and not `std`.
#[cfg(all(feature = "runtime", not(feature = "std")))]
#[macro_export]
macro_rules! no_std_runtime {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static QUIVER_GLOBAL_ALLOCATOR: $crate::__private::GlobalDlmalloc =
            $crate::__private::GlobalDlmalloc;

        // A panic cannot unwind across the ABI; trapping fails the batch, and the host
        // drops the instance.
        #[cfg(target_arch = "wasm32")]
        #[panic_handler]
        fn quiver_panic(_: &::core::panic::PanicInfo<'_>) -> ! {
            ::core::arch::wasm32::unreachable()
        }

        #[cfg(not(target_arch = "wasm32"))]
        extern crate std;
    };
}

/// Gives a `#![no_std]` plugin what std would: a global allocator and a panic handler
/// that traps (wasm32 only; native builds link std instead, for tests). Call it once
/// at the crate root; needs the `runtime` feature and not `std`.
#[cfg(all(feature = "runtime", feature = "std"))]
#[macro_export]
macro_rules! no_std_runtime {
    () => {
        #[cfg(target_arch = "wasm32")]
        ::core::compile_error!(
            "no_std_runtime!() is for no_std plugins, but quiver-plugin's `std` feature is on \
             and std brings its own allocator and panic handler: depend on quiver-plugin with \
             `default-features = false, features = [\"runtime\"]`"
        );

        #[cfg(not(target_arch = "wasm32"))]
        extern crate std;
    };
}

/// Gives a `#![no_std]` plugin what std would: a global allocator and a panic handler
/// that traps. Needs quiver-plugin's `runtime` feature.
#[cfg(not(feature = "runtime"))]
#[macro_export]
macro_rules! no_std_runtime {
    () => {
        ::core::compile_error!(
            "no_std_runtime!() needs quiver-plugin's `runtime` feature: depend on it with \
             `default-features = false, features = [\"runtime\"]`"
        );
    };
}

#[cfg(test)]
mod json_tests;
#[cfg(test)]
mod tests;
