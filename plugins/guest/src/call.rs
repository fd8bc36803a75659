//! One ABI call without the WebAssembly around it: input bytes in, answer bytes out.
//! The exports the macros emit are these functions plus memory handling; plugin
//! authors can call them in native tests to run a whole batch through their function.

use alloc::collections::TryReserveError;
use alloc::vec::Vec;
use core::fmt;

use crate::abi::{MalformedInput, code, malformed};
use crate::error::{Error, Result};
use crate::params::Params;
use crate::record::{Record, RecordOut};
use crate::record_list::{EncodeError, RecordList, RecordListWriter};

/// Why a call produced no answer. Each kind has its stable code ([`CallError::code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The plugin's function returned `Err`.
    Plugin(Error),
    /// The host's input did not parse.
    MalformedInput(MalformedInput),
    /// The answer does not fit the ABI or guest memory.
    Encode(EncodeError),
}

impl CallError {
    /// The negative code the export returns (see [`crate::abi::code`]).
    pub const fn code(&self) -> i32 {
        match self {
            CallError::Plugin(_) => code::PLUGIN_ERROR,
            CallError::MalformedInput(_) => code::MALFORMED_INPUT,
            CallError::Encode(EncodeError::TooLarge { .. }) => code::ANSWER_TOO_LARGE,
            CallError::Encode(EncodeError::OutOfMemory) => code::OUT_OF_MEMORY,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Plugin(e) => write!(f, "plugin error: {e}"),
            CallError::MalformedInput(e) => e.fmt(f),
            CallError::Encode(e) => e.fmt(f),
        }
    }
}

impl From<MalformedInput> for CallError {
    fn from(e: MalformedInput) -> Self {
        CallError::MalformedInput(e)
    }
}

impl From<EncodeError> for CallError {
    fn from(e: EncodeError) -> Self {
        CallError::Encode(e)
    }
}

impl From<TryReserveError> for CallError {
    fn from(_: TryReserveError) -> Self {
        CallError::Encode(EncodeError::OutOfMemory)
    }
}

/// Walks every record of `list` in order, handing each to `each` with its position.
/// Fails if the iterator yields fewer records than the list counted, so an internal
/// decoding slip can never drop records silently.
fn for_each_record<'a>(
    list: &RecordList<'a>,
    mut each: impl FnMut(u32, &Record<'a>) -> Result<(), CallError>,
) -> Result<(), CallError> {
    let mut seen = 0usize;
    for (position, record) in (0u32..).zip(list.iter()) {
        each(position, &record)?;
        seen += 1;
    }
    if seen != list.len() {
        return Err(malformed("a record that parsed once failed to decode").into());
    }
    Ok(())
}

/// A `filter` call: `[count:u32][bitmap]`, bit `i` (byte `i / 8`, bit `i % 8`, least
/// significant first) set when `keep` returned `true` for record `i`.
pub fn filter<F>(input: &[u8], keep: F) -> Result<Vec<u8>, CallError>
where
    F: FnMut(&Record<'_>) -> Result<bool>,
{
    let list = RecordList::parse(input)?;
    let answer_len = filter_answer_bytes(&list);
    let mut answer = Vec::new();
    answer.try_reserve_exact(answer_len)?;
    answer.resize(answer_len, 0);
    filter_into(&list, keep, &mut answer)?;
    Ok(answer)
}

/// Bytes of the `filter` answer for `list`: the count and one bit a record.
pub(crate) fn filter_answer_bytes(list: &RecordList<'_>) -> usize {
    4 + list.len().div_ceil(8)
}

/// Writes the `filter` answer for `list` into `answer`, which holds
/// [`filter_answer_bytes`] bytes (any content). The records are the views `list`
/// borrows from the input: nothing is copied, only the bitmap is written.
pub(crate) fn filter_into<F>(
    list: &RecordList<'_>,
    mut keep: F,
    answer: &mut [u8],
) -> Result<(), CallError>
where
    F: FnMut(&Record<'_>) -> Result<bool>,
{
    let (count, bitmap) = answer
        .split_first_chunk_mut::<4>()
        .ok_or(EncodeError::TooLarge {
            what: "a filter answer shorter than its count",
        })?;
    // `RecordList` counts are u32, so this cannot truncate.
    *count = (list.len() as u32).to_le_bytes();
    bitmap.fill(0);
    for_each_record(list, |position, record| {
        if keep(record).map_err(CallError::Plugin)? {
            let i = position as usize;
            if let Some(byte) = bitmap.get_mut(i / 8) {
                *byte |= 1 << (i % 8);
            }
        }
        Ok(())
    })
}

/// A `map` call: a record list with one record per input record, in order.
pub fn map<F>(input: &[u8], mut transform: F) -> Result<Vec<u8>, CallError>
where
    F: FnMut(&Record<'_>) -> Result<RecordOut>,
{
    let list = RecordList::parse(input)?;
    let mut answer = RecordListWriter::new()?;
    for_each_record(&list, |position, record| {
        let out = transform(record).map_err(CallError::Plugin)?;
        Ok(answer.push(position, &out)?)
    })?;
    Ok(answer.finish()?)
}

/// A `filter_map` call: a record list of the records `transform` kept, each naming the
/// input record it replaces (strictly increasing, as the ABI requires).
pub fn filter_map<F>(input: &[u8], mut transform: F) -> Result<Vec<u8>, CallError>
where
    F: FnMut(&Record<'_>) -> Result<Option<RecordOut>>,
{
    let list = RecordList::parse(input)?;
    let mut answer = RecordListWriter::new()?;
    for_each_record(&list, |position, record| {
        if let Some(out) = transform(record).map_err(CallError::Plugin)? {
            answer.push(position, &out)?;
        }
        Ok(())
    })?;
    Ok(answer.finish()?)
}

/// An `array_map` call: a record list of every record `transform` returned, each
/// naming the input record it came from (non-decreasing, as the ABI requires).
pub fn array_map<F>(input: &[u8], mut transform: F) -> Result<Vec<u8>, CallError>
where
    F: FnMut(&Record<'_>) -> Result<Vec<RecordOut>>,
{
    let list = RecordList::parse(input)?;
    let mut answer = RecordListWriter::new()?;
    for_each_record(&list, |position, record| {
        for out in transform(record).map_err(CallError::Plugin)? {
            answer.push(position, &out)?;
        }
        Ok(())
    })?;
    Ok(answer.finish()?)
}

/// An `init` call: parses the parameters and hands them to `setup`.
pub fn init<F>(input: &[u8], setup: F) -> Result<(), CallError>
where
    F: FnOnce(&Params) -> Result<()>,
{
    let params = Params::parse(input)?;
    setup(&params).map_err(CallError::Plugin)
}
