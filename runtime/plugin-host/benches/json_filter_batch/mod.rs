//! The input both plugin benchmarks use: the JSON field filter example
//! (`field=user.country`, `value=NO`) over a batch of JSON records of about 100 bytes,
//! one in four from the country the filter keeps; the example's WebAssembly build
//! from `plugins/dist`, and the same source compiled natively into the benchmark.

use std::path::PathBuf;

use bytes::Bytes;
use quiver_wire::batch::DecodedRecord;

#[allow(
    dead_code,
    unused_imports,
    reason = "the example's exports and tests are not used here"
)]
#[path = "../../../../plugins/examples/json-field-filter/src/lib.rs"]
pub mod json_field_filter;

/// Records in one batch: what a fetch of ~100 KiB of small JSON records carries.
pub const RECORDS: usize = 1_000;

/// ~100-byte JSON records, one in four from the country the filter keeps.
pub fn records() -> Vec<DecodedRecord> {
    let countries = ["NO", "SE", "DK", "FI"];
    (0..RECORDS)
        .map(|i| {
            let value = format!(
                r#"{{"id":"{i:06}","user":{{"country":"{}","tier":"gold"}},"amount":{}.{:02},"note":"lorem ipsum dolor sit amet"}}"#,
                countries[i % 4],
                i * 7 % 1000,
                i % 100
            );
            DecodedRecord {
                offset: i as u64,
                timestamp: 1_700_000_000_000 + i as i64,
                key: None,
                value: Some(Bytes::from(value)),
                headers: Vec::new(),
            }
        })
        .collect()
}

/// Records the filter keeps out of [`records`].
pub const KEPT: usize = RECORDS / 4;

pub fn params() -> Vec<(String, String)> {
    vec![
        ("field".to_owned(), "user.country".to_owned()),
        ("value".to_owned(), "NO".to_owned()),
    ]
}

/// Total value bytes of a batch.
pub fn value_bytes(records: &[DecodedRecord]) -> usize {
    records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Bytes::len))
        .sum()
}

/// The example's WebAssembly module: `plugins/dist/json-field-filter.wasm`, or the
/// same file under `QUIVER_PLUGIN_DIST` (as the tests read it).
pub fn wasm() -> (PathBuf, Vec<u8>) {
    let dist = std::env::var_os("QUIVER_PLUGIN_DIST").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist"),
        PathBuf::from,
    );
    let path = dist.join("json-field-filter.wasm");
    let wasm = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run ./plugins/build.sh json-field-filter first",
            path.display()
        )
    });
    (path, wasm)
}
