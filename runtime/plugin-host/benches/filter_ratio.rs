//! WebAssembly against native for the same filter: the JSON field filter example
//! keeping one record in four, run inside the real host (the sandbox with the default
//! `Limits`: pooling allocator, memory and CPU bounds) and compiled natively into this
//! binary, on the same batches. Prints records/s for both and wasm / native.
//!
//! `./plugins/build.sh json-field-filter && cargo bench -p quiver-plugin-host --bench filter_ratio`
//!
//! The two sides run in alternating rounds (which one goes first alternates too) so
//! that a neighbour's load on a shared machine falls on both, and the summary takes
//! the median round of each. Each side does what a fetch through the filter costs:
//! the wasm side is `PluginInstance::run` (encode the ABI record list, copy it into
//! the guest, call `filter`, read the bitmap); the native side encodes the same record
//! list and runs the example's `keep` through the guest SDK's `call::filter`, the code
//! the `filter!` macro wraps in the wasm export. A plain binary rather than criterion:
//! the number wanted is one ratio measured in one sitting.

use std::hint::black_box;
use std::time::{Duration, Instant};

use quiver_plugin_host::abi::{encode_params, encode_records};
use quiver_plugin_host::{Limits, Outcome, PluginEngine, PluginInstance};
use quiver_wire::batch::DecodedRecord;

mod json_filter_batch;

use json_filter_batch::{KEPT, RECORDS, json_field_filter, params, records};

/// Rounds of each side; the summary is the median round.
const ROUNDS: usize = 15;
/// How long one side runs batches in one round.
const ROUND_TIME: Duration = Duration::from_millis(300);
/// Runs before the first round, so that neither side pays for first-touch page faults
/// or cold caches inside a measurement.
const WARM_UP_TIME: Duration = Duration::from_millis(500);

/// The filter's keep-bits for one batch, natively.
fn native(input: &[DecodedRecord]) -> Vec<u8> {
    let list = encode_records(input);
    quiver_plugin::call::filter(&list, json_field_filter::keep).expect("native filter")
}

fn wasm(instance: &mut PluginInstance, input: &[DecodedRecord]) -> Vec<bool> {
    match instance.run(input).expect("the plugin runs") {
        Outcome::Keep(keep) => keep,
        other => panic!("a filter answers keep-bits, got {other:?}"),
    }
}

/// Records per second of `run` over batches of [`RECORDS`], for `time` at least.
fn rate(time: Duration, mut run: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut batches = 0u64;
    while started.elapsed() < time {
        run();
        batches += 1;
    }
    (batches * RECORDS as u64) as f64 / started.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let (path, module) = json_filter_batch::wasm();
    let engine = PluginEngine::new(Limits::default()).expect("engine");
    let plugin = engine
        .compile("json-field-filter", &module)
        .expect("compiles");
    let mut instance = engine.instantiate(&plugin, &params()).expect("instance");
    quiver_plugin::call::init(&encode_params(&params()), json_field_filter::init)
        .expect("native init");
    let input = records();

    // Both sides must answer the same, or the comparison means nothing.
    let from_wasm = wasm(&mut instance, &input);
    let answer = native(&input);
    let from_native: Vec<bool> = (0..RECORDS)
        .map(|i| answer[4 + i / 8] & (1 << (i % 8)) != 0)
        .collect();
    assert_eq!(
        from_wasm, from_native,
        "wasm and native keep the same records"
    );
    assert_eq!(from_wasm.iter().filter(|k| **k).count(), KEPT);

    rate(WARM_UP_TIME, || {
        drop(black_box(wasm(&mut instance, black_box(&input))))
    });
    rate(WARM_UP_TIME, || drop(black_box(native(black_box(&input)))));

    let mut wasm_rates = Vec::with_capacity(ROUNDS);
    let mut native_rates = Vec::with_capacity(ROUNDS);
    let mut ratios = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let mut wasm_side = || {
            rate(ROUND_TIME, || {
                drop(black_box(wasm(&mut instance, black_box(&input))))
            })
        };
        let native_side = || rate(ROUND_TIME, || drop(black_box(native(black_box(&input)))));
        let (w, n) = if round % 2 == 0 {
            let w = wasm_side();
            (w, native_side())
        } else {
            let n = native_side();
            (wasm_side(), n)
        };
        wasm_rates.push(w);
        native_rates.push(n);
        ratios.push(w / n);
    }

    let ratio_min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let ratio_max = ratios.iter().copied().fold(0.0, f64::max);
    let wasm_median = median(&mut wasm_rates);
    let native_median = median(&mut native_rates);
    let ratio_median = median(&mut ratios);
    println!(
        "json-field-filter ({}), {RECORDS} records of {} value bytes a batch, keeping {KEPT}; \
         {ROUNDS} alternating rounds of {} ms a side, medians:",
        path.display(),
        json_filter_batch::value_bytes(&input),
        ROUND_TIME.as_millis()
    );
    println!("  wasm   {:>12.0} records/s", wasm_median);
    println!("  native {:>12.0} records/s", native_median);
    println!(
        "  wasm / native {:.3} (median of the per-round ratios; rounds ranged {:.3} to {:.3})",
        ratio_median, ratio_min, ratio_max
    );
}
