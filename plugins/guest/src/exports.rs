//! The bodies of the ABI exports, compiled for wasm32 only: the buffers the host asks
//! for with `alloc`, the answer kept alive until the next call, and packing results
//! into the `i64` the host reads. The `#[unsafe(export_name)]` shims the macros emit
//! call these.
//!
//! Memory, as ABI.md asks: a buffer from `alloc` belongs to the guest again once the
//! call that used it returns, so every outstanding host buffer is freed at the end of
//! each `init` or transformation call. An answer must stay readable after the call
//! returns, so it is kept until the start of the next transformation call.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::vec::Vec;
use core::cell::Cell;

use crate::abi::{self, malformed};
use crate::call::{self, CallError};
use crate::error::Result;
use crate::params::Params;
use crate::record::{Record, RecordOut};
use crate::record_list::EncodeError;

/// Alignment of every buffer `alloc` hands out: enough for any ABI field.
const HOST_BUFFER_ALIGN: usize = 8;
/// Host buffers that may be outstanding at once. The host asks for one per call, so
/// this only stops a runaway host from growing the table without end.
const HOST_BUFFERS_MAX: usize = 64;

/// Guest-global state. Only ever moved in and out whole (`Cell::take`/`set`), so no
/// reference into it exists while other code runs.
struct GuestCell<T>(Cell<T>);

// SAFETY: without the `atomics` target feature a wasm32 module has exactly one thread,
// so nothing is shared across threads. (A threaded build would lose this impl and fail
// to compile rather than race.)
#[cfg(not(target_feature = "atomics"))]
unsafe impl<T> Sync for GuestCell<T> {}

#[derive(Clone, Copy)]
struct HostBuffer {
    addr: usize,
    layout: Layout,
}

static HOST_BUFFERS: GuestCell<Vec<HostBuffer>> = GuestCell(Cell::new(Vec::new()));
static ANSWER: GuestCell<Vec<u8>> = GuestCell(Cell::new(Vec::new()));

/// `quiver_abi_version`.
pub fn abi_version() -> i32 {
    abi::VERSION
}

/// `alloc(size) -> ptr`: `size` zeroed bytes aligned to 8, or 0. Zeroed so that the
/// buffer is initialised memory as far as Rust is concerned even if the host writes
/// less than it asked for.
pub fn alloc(size: i32) -> i32 {
    let Ok(size) = usize::try_from(size) else {
        return 0;
    };
    // A zero-size allocation is not allowed; the host never asks for one anyway.
    let Ok(layout) = Layout::from_size_align(size.max(1), HOST_BUFFER_ALIGN) else {
        return 0;
    };
    let mut buffers = HOST_BUFFERS.0.take();
    let mut addr = 0;
    if buffers.len() < HOST_BUFFERS_MAX && buffers.try_reserve(1).is_ok() {
        // SAFETY: `layout` has a nonzero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if !ptr.is_null() {
            addr = ptr as usize;
            buffers.push(HostBuffer { addr, layout });
        }
    }
    HOST_BUFFERS.0.set(buffers);
    // wasm32 addresses are 32 bits; the host reads the i32 back as unsigned.
    addr as u32 as i32
}

/// Runs `call` over the `len` bytes the host wrote at `ptr`, then frees every host
/// buffer (the one used included).
fn with_input<R>(
    ptr: i32,
    len: i32,
    call: impl FnOnce(&[u8]) -> Result<R, CallError>,
) -> Result<R, CallError> {
    let addr = ptr as u32 as usize;
    let buffers = HOST_BUFFERS.0.take();
    let found = buffers.iter().find(|b| b.addr == addr).copied();
    HOST_BUFFERS.0.set(buffers);
    let result = match (found, usize::try_from(len)) {
        (Some(buffer), Ok(len)) if len <= buffer.layout.size() => {
            // SAFETY: `alloc` handed out this buffer with at least `len` bytes, zeroed
            // and then written by the host; it stays allocated until
            // `free_host_buffers` below, after the last use of `input`.
            let input = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
            call(input)
        }
        _ => Err(malformed("input is not a buffer from alloc, or is longer than it").into()),
    };
    free_host_buffers();
    result
}

fn free_host_buffers() {
    for buffer in HOST_BUFFERS.0.take() {
        // SAFETY: `alloc` allocated it with this layout and recorded it once; taking
        // the table removes the record, so it cannot be freed twice.
        unsafe { dealloc(buffer.addr as *mut u8, buffer.layout) };
    }
}

/// Keeps `answer` alive until the next call and packs `(ptr << 32) | len`.
fn publish(answer: Vec<u8>) -> Result<i64, CallError> {
    let too_large = |what| CallError::Encode(EncodeError::TooLarge { what });
    let addr = u32::try_from(answer.as_ptr() as usize)
        .map_err(|_| too_large("an answer beyond 32-bit addresses"))?;
    let len =
        u32::try_from(answer.len()).map_err(|_| too_large("an answer over u32::MAX bytes"))?;
    let packed = ((u64::from(addr) << 32) | u64::from(len)) as i64;
    // An address of 2 GiB or more sets the sign bit, which the host reads as an error
    // code; the host's memory bound keeps answers far below it.
    if packed < 0 {
        return Err(too_large("an answer above 2 GiB"));
    }
    ANSWER.0.set(answer);
    Ok(packed)
}

/// The result of a transformation export: the packed answer or a negative code.
fn answer(ptr: i32, len: i32, call: impl FnOnce(&[u8]) -> Result<Vec<u8>, CallError>) -> i64 {
    // The previous answer was read by the host when that call returned.
    drop(ANSWER.0.take());
    match with_input(ptr, len, call).and_then(publish) {
        Ok(packed) => packed,
        Err(e) => i64::from(e.code()),
    }
}

pub fn filter<F>(ptr: i32, len: i32, keep: F) -> i64
where
    F: FnMut(&Record<'_>) -> Result<bool>,
{
    answer(ptr, len, |input| call::filter(input, keep))
}

pub fn map<F>(ptr: i32, len: i32, transform: F) -> i64
where
    F: FnMut(&Record<'_>) -> Result<RecordOut>,
{
    answer(ptr, len, |input| call::map(input, transform))
}

pub fn filter_map<F>(ptr: i32, len: i32, transform: F) -> i64
where
    F: FnMut(&Record<'_>) -> Result<Option<RecordOut>>,
{
    answer(ptr, len, |input| call::filter_map(input, transform))
}

pub fn array_map<F>(ptr: i32, len: i32, transform: F) -> i64
where
    F: FnMut(&Record<'_>) -> Result<Vec<RecordOut>>,
{
    answer(ptr, len, |input| call::array_map(input, transform))
}

/// `init(ptr, len) -> i32`: 0 when `setup` accepted the parameters, else a code.
pub fn init<F>(ptr: i32, len: i32, setup: F) -> i32
where
    F: FnOnce(&Params) -> Result<()>,
{
    match with_input(ptr, len, |input| call::init(input, setup)) {
        Ok(()) => 0,
        Err(e) => e.code(),
    }
}
