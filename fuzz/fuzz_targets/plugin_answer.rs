//! A plugin's answer, which the host reads out of the guest's memory after every call:
//! a malicious module can leave any bytes there, with any count and any lengths. The
//! first input byte picks the plugin kind and how many records the batch had; the rest
//! is the answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser itself, not the crate around it: quiver-plugin-host also holds the
// wasmtime sandbox, and an instrumented build of wasmtime and cranelift would add
// minutes to every run of the test command. `abi.rs` uses only `bytes` and
// `quiver-wire`, so it compiles here as it does there.
#[allow(dead_code, reason = "the encoders are the host's, not the target's")]
#[path = "../../runtime/plugin-host/src/abi.rs"]
mod abi;

use abi::{PluginKind, parse_filter, parse_records};

/// The host's records-per-answer bound is configurable; any value shows the check.
const ANSWER_RECORDS_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, answer)) = data.split_first() else {
        return;
    };
    let input_count = usize::from(selector >> 2);
    if let Ok(keep) = parse_filter(answer, input_count) {
        assert_eq!(keep.len(), input_count, "one keep-bit per input record");
    }
    let kind = match selector & 3 {
        0 => PluginKind::Map,
        1 => PluginKind::FilterMap,
        2 => PluginKind::ArrayMap,
        _ => PluginKind::Filter,
    };
    let Ok(records) = parse_records(answer, kind, input_count, ANSWER_RECORDS_MAX) else {
        return;
    };
    assert!(records.len() <= ANSWER_RECORDS_MAX);
    assert!(records.iter().all(|r| (r.source as usize) < input_count));
    let sources: Vec<u32> = records.iter().map(|r| r.source).collect();
    match kind {
        PluginKind::Map => assert!(sources.iter().copied().eq(0..input_count as u32)),
        PluginKind::FilterMap => assert!(sources.windows(2).all(|w| w[0] < w[1])),
        PluginKind::ArrayMap => assert!(sources.windows(2).all(|w| w[0] <= w[1])),
        PluginKind::Filter => panic!("a filter's answer parsed as a record list"),
    }
});
