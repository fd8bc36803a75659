//! WAT plugins written from `plugins/ABI.md`, shared by the host's tests.

#![allow(dead_code)]

use bytes::Bytes;
use quiver_wire::batch::DecodedRecord;

/// The parts every plugin needs: memory, version, a bump allocator reset per call.
pub const PRELUDE: &str = r#"
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "quiver_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $size)))
    (local.get $p))
"#;

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

/// Keeps records 0, 2, 4, ...: writes `[count][0x55 bytes]` after the input.
pub const KEEP_EVEN: &str = r#"
  (func (export "filter") (param $ptr i32) (param $len i32) (result i64)
    (local $count i32) (local $out i32) (local $bytes i32)
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $out (global.get $bump))
    (i32.store (local.get $out) (local.get $count))
    (local.set $bytes (i32.shr_u (i32.add (local.get $count) (i32.const 7)) (i32.const 3)))
    (memory.fill (i32.add (local.get $out) (i32.const 4)) (i32.const 0x55) (local.get $bytes))
    (global.set $bump (i32.const 1024))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.const 4) (local.get $bytes)))))
"#;

/// Answers the input record list unchanged: a map that keeps every record.
pub const IDENTITY_MAP: &str = r#"
  (func (export "map") (param $ptr i32) (param $len i32) (result i64)
    (global.set $bump (i32.const 1024))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))
"#;
