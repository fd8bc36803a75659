//! Plugin costs: the JSON field filter example as WebAssembly through the sandbox,
//! against the same source compiled natively into this benchmark, over one batch of
//! 1,000 JSON records of about 100 bytes; and the instantiation a failed instance
//! costs, with the pooling allocator.
//!
//! `./plugins/build.sh json-field-filter && cargo bench -p quiver-plugin-host --bench plugins`
//!
//! Both sides get the same input: the ABI's record list, which the host encodes for
//! every call. The native side runs the example's `keep` through the guest SDK's
//! `call::filter`, the code path the macro wraps in the wasm export. The
//! `filter_ratio` bench measures the same two sides in alternating rounds and prints
//! their ratio.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver_plugin_host::abi::encode_records;
use quiver_plugin_host::{Limits, Outcome, PluginEngine};

mod json_filter_batch;

use json_filter_batch::{KEPT, RECORDS, json_field_filter, params, records};

fn bench(c: &mut Criterion) {
    let (_, wasm) = json_filter_batch::wasm();
    let engine = PluginEngine::new(Limits::default()).expect("engine");
    let plugin = engine
        .compile("json-field-filter", &wasm)
        .expect("compiles");
    let input = records();

    let mut group = c.benchmark_group(format!("json field filter, {RECORDS} records"));
    group.throughput(Throughput::Elements(RECORDS as u64));
    let mut instance = engine.instantiate(&plugin, &params()).expect("instance");
    match instance.run(&input).expect("runs") {
        Outcome::Keep(keep) => assert_eq!(keep.iter().filter(|k| **k).count(), KEPT),
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
    assert_eq!(kept as usize, KEPT, "native and wasm agree");
    group.bench_function("native", |b| {
        b.iter(|| {
            let list = encode_records(black_box(&input));
            quiver_plugin::call::filter(&list, json_field_filter::keep).expect("native filter")
        })
    });
    group.finish();
    eprintln!(
        "input: {RECORDS} records, {} value bytes",
        json_filter_batch::value_bytes(&input)
    );

    let mut group = c.benchmark_group("instances");
    group.bench_function("instantiate + init (pooling allocator)", |b| {
        b.iter(|| engine.instantiate(&plugin, &params()).expect("instance"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
