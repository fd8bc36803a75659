//! Plugin costs: the JSON field filter example as WebAssembly through the sandbox,
//! against the same source compiled natively into this benchmark, over one batch of
//! 1,000 JSON records of about 100 bytes; and the instantiation a failed instance
//! costs, with the pooling allocator.
//!
//! `./plugins/build.sh json-field-filter && cargo bench -p quiver-plugin-host`
//!
//! Both sides get the same input: the ABI's record list, which the host encodes for
//! every call. The native side runs the example's `keep` through the guest SDK's
//! `call::filter`, the code path the macro wraps in the wasm export.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver_plugin_host::abi::encode_records;
use quiver_plugin_host::{Limits, Outcome, PluginEngine};
use quiver_wire::batch::DecodedRecord;

#[allow(
    dead_code,
    unused_imports,
    reason = "the example's exports and tests are not used here"
)]
#[path = "../../../plugins/examples/json-field-filter/src/lib.rs"]
mod json_field_filter;

const RECORDS: usize = 1_000;

/// ~100-byte JSON records, one in four from the country the filter keeps.
fn records() -> Vec<DecodedRecord> {
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

fn params() -> Vec<(String, String)> {
    vec![
        ("field".to_owned(), "user.country".to_owned()),
        ("value".to_owned(), "NO".to_owned()),
    ]
}

fn bench(c: &mut Criterion) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/dist/json-field-filter.wasm");
    let wasm = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run ./plugins/build.sh json-field-filter first",
            path.display()
        )
    });
    let engine = PluginEngine::new(Limits::default()).expect("engine");
    let plugin = engine
        .compile("json-field-filter", &wasm)
        .expect("compiles");
    let input = records();
    let bytes: usize = input
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Bytes::len))
        .sum();

    let mut group = c.benchmark_group(format!("json field filter, {RECORDS} records"));
    group.throughput(Throughput::Elements(RECORDS as u64));
    let mut instance = engine.instantiate(&plugin, &params()).expect("instance");
    match instance.run(&input).expect("runs") {
        Outcome::Keep(keep) => assert_eq!(keep.iter().filter(|k| **k).count(), RECORDS / 4),
        other => panic!("a filter answers keep-bits, got {other:?}"),
    }
    group.bench_function("wasm", |b| {
        b.iter(|| instance.run(black_box(&input)).expect("runs"))
    });

    let encoded_params = quiver_plugin_host::abi::encode_params(&params());
    quiver_plugin::call::init(&encoded_params, json_field_filter::init).expect("native init");
    let answer = quiver_plugin::call::filter(&encode_records(&input), json_field_filter::keep)
        .expect("native filter");
    let kept: u32 = answer[4..].iter().map(|b| b.count_ones()).sum();
    assert_eq!(kept as usize, RECORDS / 4, "native and wasm agree");
    group.bench_function("native", |b| {
        b.iter(|| {
            let list = encode_records(black_box(&input));
            quiver_plugin::call::filter(&list, json_field_filter::keep).expect("native filter")
        })
    });
    group.finish();
    eprintln!("input: {RECORDS} records, {bytes} value bytes");

    let mut group = c.benchmark_group("instances");
    group.bench_function("instantiate + init (pooling allocator)", |b| {
        b.iter(|| engine.instantiate(&plugin, &params()).expect("instance"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
