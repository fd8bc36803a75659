//! WAT plugins written from `plugins/ABI.md`, shared by the host's tests.

#![allow(dead_code)]

pub mod synth;

use bytes::Bytes;
use quiver_wire::batch::DecodedRecord;

/// The parts every plugin needs: memory, version, a bump allocator reset per call.
/// Shared with the black-box tests (`tests/suites`).
pub const PRELUDE: &str = include_str!("../../../../plugins/testdata/prelude.wat");

/// A filter whose bitmap bytes are all `fill` (`plugins/testdata/fill-filter.wat`).
pub fn filter_filling(fill: u8) -> String {
    include_str!("../../../../plugins/testdata/fill-filter.wat").replace("FILL", &fill.to_string())
}

/// Keeps records 0, 2, 4, ...: answers `[count][0x55 bytes]`.
pub fn keep_even() -> String {
    filter_filling(0x55)
}

pub fn module(body: &str) -> Vec<u8> {
    wat_module(&format!("(module {PRELUDE} {body})"))
}

pub fn wat_module(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

pub fn records(n: usize) -> Vec<DecodedRecord> {
    (0..n)
        .map(|i| DecodedRecord {
            offset: 100 + i as u64,
            timestamp: 1_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: Vec::new(),
        })
        .collect()
}

/// Answers the input record list unchanged: a map that keeps every record.
pub const IDENTITY_MAP: &str = r#"
  (func (export "map") (param $ptr i32) (param $len i32) (result i64)
    (global.set $bump (i32.const 1024))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))
"#;
