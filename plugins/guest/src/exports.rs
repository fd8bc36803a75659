//! The bodies of the ABI exports, compiled for wasm32 only: the buffers the host asks
//! for with `alloc`, the answer kept readable after the call returns, and packing
//! results into the `i64` the host reads. The `#[unsafe(export_name)]` shims the macros
//! emit call these.
//!
//! # Memory: the call arena
//!
//! A call cycle is what the host does per batch (ABI.md, "A call"): one `alloc` (or
//! several) for the input, then `init` or a transformation over it, then the host
//! reads the answer. Everything the SDK itself needs for one cycle, the host's input
//! buffers and a `filter` answer, comes from the *call arena*: one block from the
//! global allocator, handed out by bumping an offset. The block is reset wholesale
//! (the offset goes back to 0; no byte is touched, nothing is freed) when the next
//! cycle starts, which is the first `alloc` after a call returned. So:
//!
//! - an input buffer costs a pointer bump: no `malloc`, no `free`, and no zeroing (the
//!   block was zeroed once when it was made, and bytes written since stay
//!   initialised, so a host that writes less than it asked for leaves old bytes, never
//!   uninitialised memory);
//! - the answer is bumped after the input within the same cycle, so building it never
//!   overwrites the input it is computed from;
//! - the answer stays readable until the guest's next export call, and the host
//!   reads it before making one;
//! - the block grows, only at the start of a cycle when nothing in it is live, to fit
//!   the largest cycle seen (plus room for a filter answer); a buffer that does not
//!   fit mid-cycle comes from the global allocator and is freed at the next reset.
//!
//! What the arena never holds: anything the plugin allocates itself (a `Vec` in its
//! function, what `init` keeps in an `InitCell`), which goes through the ordinary
//! global allocator and is never reset. That is what makes the arena safe without
//! rules a plugin could break: the only pointers into it that plugin code ever sees
//! are the borrowed [`Record`] views of the current call, whose lifetime ends with
//! the call, and the `Params` given to `init` are owned copies. (Making the arena the
//! *global* allocator would make every allocation of a call die with the call, and
//! safe code that keeps one, such as a cache a dependency fills lazily, would read
//! freed memory; the per-record allocations it would save are the ones a filter using
//! [`crate::json`] no longer makes.) The answer of a `map` kind is built in a `Vec` on
//! the global heap, because it grows while it is built, and is freed at the reset.
//!
//! The cycle is tracked ([`Cycle`]) so that an export entered out of turn cannot reset
//! memory in use: `alloc` during a running call answers 0, and a call whose input was
//! not handed out in the open cycle fails with the malformed-input code.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::vec::Vec;
use core::cell::Cell;
use core::ptr::NonNull;

use crate::abi::{self, malformed};
use crate::call::{self, CallError};
use crate::error::Result;
use crate::params::Params;
use crate::record::{Record, RecordOut};
use crate::record_list::{EncodeError, RecordList};

/// Alignment of every buffer the arena hands out: enough for any ABI field.
const BUFFER_ALIGN: usize = 8;
/// The smallest arena block, bytes: one wasm page, enough for a small batch and its
/// answer.
const ARENA_BYTES_MIN: usize = 64 * 1024;
/// Host buffers that may be outstanding in one cycle. The host asks for one per
/// call, so this only stops a runaway host from growing the table without end.
const HOST_BUFFERS_MAX: usize = 64;

/// Guest-global state. Only ever moved in and out whole (`Cell::take`/`set`), so no
/// reference into it exists while other code runs.
struct GuestCell<T>(Cell<T>);

// SAFETY: without the `atomics` target feature a wasm32 module has exactly one thread,
// so nothing is shared across threads. (A threaded build would lose this impl and fail
// to compile rather than race.)
#[cfg(not(target_feature = "atomics"))]
unsafe impl<T> Sync for GuestCell<T> {}

/// Where the instance is in the host's call sequence.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Cycle {
    /// A call returned (or none was made yet): the host may be reading its answer.
    /// The next `alloc` resets the arena.
    #[default]
    Answered,
    /// Buffers were handed out for the next call, which has not started.
    Open,
    /// `init` or a transformation is running over this cycle's buffers.
    Running,
}

/// A buffer handed out this cycle.
#[derive(Clone, Copy)]
struct Buffer {
    ptr: NonNull<u8>,
    len: usize,
}

/// A block from the global allocator, zeroed when made.
#[derive(Clone, Copy)]
struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
}

#[derive(Default)]
struct CallArena {
    cycle: Cycle,
    block: Option<Block>,
    /// Bytes of `block` handed out this cycle.
    used: usize,
    /// The host's buffers of this cycle, so that a call's input can be checked.
    host_buffers: Vec<Buffer>,
    /// Buffers of this cycle that did not fit `block`; freed at the reset.
    overflow: Vec<Block>,
    /// The answer of a `map` kind, on the global heap until the reset.
    answer: Vec<u8>,
}

static ARENA: GuestCell<CallArena> = GuestCell(Cell::new(CallArena {
    cycle: Cycle::Answered,
    block: None,
    used: 0,
    host_buffers: Vec::new(),
    overflow: Vec::new(),
    answer: Vec::new(),
}));

/// Zeroed memory for `layout` (nonzero size) from the global allocator.
fn zeroed_block(layout: Layout) -> Option<Block> {
    // SAFETY: callers pass layouts of nonzero size.
    let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
    Some(Block { ptr, layout })
}

/// A grown block keeps `1 / ANSWER_ROOM_DIVISOR` of the input it was grown for (plus
/// `ANSWER_ROOM_BYTES`) free after it, so that a filter answer is bumped, not
/// allocated: a record takes at least `RECORD_BYTES_MIN` (24) bytes of input and one
/// bit of answer, so the answer is at most 1/192 of its input plus 5 bytes.
const ANSWER_ROOM_DIVISOR: usize = 64;
const ANSWER_ROOM_BYTES: usize = 64;

impl CallArena {
    /// Ends the previous cycle: everything it handed out is dropped at once.
    fn reset(&mut self) {
        self.used = 0;
        self.host_buffers.clear();
        for block in self.overflow.drain(..) {
            // SAFETY: allocated by `zeroed_block` with this layout; draining the list
            // forgets it, so it is freed once.
            unsafe { dealloc(block.ptr.as_ptr(), block.layout) };
        }
        self.answer = Vec::new();
        self.cycle = Cycle::Open;
    }

    /// `len` bytes aligned to [`BUFFER_ALIGN`], disjoint from everything handed out
    /// this cycle; initialised bytes, not necessarily zero.
    fn bump(&mut self, len: usize) -> Option<Buffer> {
        let start = self.used.next_multiple_of(BUFFER_ALIGN);
        // A zero-size allocation is not allowed; and every buffer gets its own address.
        let end = start.checked_add(len.max(1))?;
        if self.block.is_none_or(|b| end > b.layout.size()) && self.used == 0 {
            self.grow(end);
        }
        if let Some(block) = self.block
            && end <= block.layout.size()
        {
            self.used = end;
            // SAFETY: `start..end` lies inside the block.
            let ptr = unsafe { block.ptr.add(start) };
            return Some(Buffer { ptr, len });
        }
        // Mid-cycle the block cannot move (its buffers are live): go around it.
        let layout = Layout::from_size_align(len.max(1), BUFFER_ALIGN).ok()?;
        self.overflow.try_reserve(1).ok()?;
        let block = zeroed_block(layout)?;
        self.overflow.push(block);
        Some(Buffer {
            ptr: block.ptr,
            len,
        })
    }

    /// Replaces the block, empty (`used == 0`), with one of at least `needed` bytes
    /// plus room for a filter answer; twice the old size if that is more, so that
    /// growing batches grow it rarely. The old block is freed first so that its memory
    /// can be part of the new one. If memory is short there is no block, and `bump`
    /// goes around it.
    fn grow(&mut self, needed: usize) {
        let doubled = self.block.map_or(0, |b| b.layout.size().saturating_mul(2));
        if let Some(old) = self.block.take() {
            // SAFETY: `used == 0`, so nothing handed out lives in it; allocated by
            // `zeroed_block` with this layout, and taken out so it is freed once.
            unsafe { dealloc(old.ptr.as_ptr(), old.layout) };
        }
        let Some(want) = (needed / ANSWER_ROOM_DIVISOR)
            .checked_add(ANSWER_ROOM_BYTES)
            .and_then(|room| needed.checked_add(room))
            .map(|w| w.max(ARENA_BYTES_MIN))
        else {
            return;
        };
        self.block = [want.max(doubled), want]
            .into_iter()
            .filter_map(|size| Layout::from_size_align(size, BUFFER_ALIGN).ok())
            .find_map(zeroed_block);
    }
}

/// `quiver_abi_version`.
pub fn abi_version() -> i32 {
    abi::VERSION
}

/// `alloc(size) -> ptr`: `size` bytes aligned to 8 from the call arena, or 0. The
/// first `alloc` after a call returned starts a new cycle, dropping the previous one.
pub fn alloc(size: i32) -> i32 {
    let Ok(size) = usize::try_from(size) else {
        return 0;
    };
    let mut arena = ARENA.0.take();
    let addr = match arena.cycle {
        // Resetting now would pull memory from under the running call.
        Cycle::Running => 0,
        cycle => {
            if cycle == Cycle::Answered {
                arena.reset();
            }
            if arena.host_buffers.len() < HOST_BUFFERS_MAX
                && arena.host_buffers.try_reserve(1).is_ok()
                && let Some(buffer) = arena.bump(size)
            {
                arena.host_buffers.push(buffer);
                buffer.ptr.as_ptr() as usize
            } else {
                0
            }
        }
    };
    ARENA.0.set(arena);
    // wasm32 addresses are 32 bits; the host reads the i32 back as unsigned.
    addr as u32 as i32
}

/// Runs `call` over the `len` bytes the host wrote at `ptr`, which must be a buffer of
/// the open cycle; the cycle is `Running` meanwhile and `Answered` after.
fn with_input<R>(
    ptr: i32,
    len: i32,
    call: impl FnOnce(&[u8]) -> Result<R, CallError>,
) -> Result<R, CallError> {
    let addr = ptr as u32 as usize;
    let mut arena = ARENA.0.take();
    let input = match arena.cycle {
        Cycle::Open => arena
            .host_buffers
            .iter()
            .find(|b| b.ptr.as_ptr() as usize == addr)
            .copied()
            .zip(usize::try_from(len).ok())
            .filter(|(buffer, len)| *len <= buffer.len),
        Cycle::Answered | Cycle::Running => None,
    };
    if input.is_some() {
        arena.cycle = Cycle::Running;
    }
    ARENA.0.set(arena);
    let Some((buffer, len)) = input else {
        return Err(malformed("input is not a buffer from alloc, or is longer than it").into());
    };
    // SAFETY: `alloc` handed out this buffer this cycle with at least `len` bytes of
    // initialised memory (the host wrote them, or they are left from earlier use).
    // Nothing else handed out overlaps it, and the arena is reset only by an `alloc`
    // that starts a later cycle, which cannot happen while this call is `Running`.
    let input = unsafe { core::slice::from_raw_parts(buffer.ptr.as_ptr().cast_const(), len) };
    let result = call(input);
    let mut arena = ARENA.0.take();
    arena.cycle = Cycle::Answered;
    ARENA.0.set(arena);
    result
}

/// Room for an answer in the running call's cycle.
fn bump_answer(len: usize) -> Option<Buffer> {
    let mut arena = ARENA.0.take();
    let buffer = arena.bump(len);
    ARENA.0.set(arena);
    buffer
}

/// Keeps an answer built on the global heap until the next cycle.
fn keep_answer(answer: Vec<u8>) {
    let mut arena = ARENA.0.take();
    arena.answer = answer;
    ARENA.0.set(arena);
}

/// Packs an answer's address and length as `(ptr << 32) | len`.
fn pack(addr: usize, len: usize) -> Result<i64, CallError> {
    let too_large = |what| CallError::Encode(EncodeError::TooLarge { what });
    let addr = u32::try_from(addr).map_err(|_| too_large("an answer beyond 32-bit addresses"))?;
    let len = u32::try_from(len).map_err(|_| too_large("an answer over u32::MAX bytes"))?;
    let packed = ((u64::from(addr) << 32) | u64::from(len)) as i64;
    // An address of 2 GiB or more sets the sign bit, which the host reads as an error
    // code; the host's memory bound keeps answers far below it.
    if packed < 0 {
        return Err(too_large("an answer above 2 GiB"));
    }
    Ok(packed)
}

/// The packed answer or the negative code.
fn packed_or_code(result: Result<i64, CallError>) -> i64 {
    result.unwrap_or_else(|e| i64::from(e.code()))
}

/// `filter`: the bitmap is written straight into the arena, after the input.
pub fn filter<F>(ptr: i32, len: i32, keep: F) -> i64
where
    F: FnMut(&Record<'_>) -> Result<bool>,
{
    packed_or_code(with_input(ptr, len, |input| {
        let list = RecordList::parse(input)?;
        let answer_len = call::filter_answer_bytes(&list);
        let buffer = bump_answer(answer_len).ok_or(EncodeError::OutOfMemory)?;
        // SAFETY: `bump` handed out `answer_len` initialised bytes that overlap nothing
        // else of this cycle (the input included); they stay allocated until the next
        // cycle starts, after the host has read them.
        let answer = unsafe { core::slice::from_raw_parts_mut(buffer.ptr.as_ptr(), answer_len) };
        call::filter_into(&list, keep, answer)?;
        pack(buffer.ptr.as_ptr() as usize, answer_len)
    }))
}

/// The export of a `map` kind: `call` builds the answer on the global heap, which the
/// arena keeps until the next cycle.
fn record_list_answer(
    ptr: i32,
    len: i32,
    call: impl FnOnce(&[u8]) -> Result<Vec<u8>, CallError>,
) -> i64 {
    packed_or_code(with_input(ptr, len, |input| {
        let answer = call(input)?;
        let packed = pack(answer.as_ptr() as usize, answer.len())?;
        keep_answer(answer);
        Ok(packed)
    }))
}

pub fn map<F>(ptr: i32, len: i32, transform: F) -> i64
where
    F: FnMut(&Record<'_>) -> Result<RecordOut>,
{
    record_list_answer(ptr, len, |input| call::map(input, transform))
}

pub fn filter_map<F>(ptr: i32, len: i32, transform: F) -> i64
where
    F: FnMut(&Record<'_>) -> Result<Option<RecordOut>>,
{
    record_list_answer(ptr, len, |input| call::filter_map(input, transform))
}

pub fn array_map<F>(ptr: i32, len: i32, transform: F) -> i64
where
    F: FnMut(&Record<'_>) -> Result<Vec<RecordOut>>,
{
    record_list_answer(ptr, len, |input| call::array_map(input, transform))
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
