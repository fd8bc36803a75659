//! What compiling the largest modules the default limits accept costs: wall time,
//! peak resident memory during the compile, and resident memory after it (which the
//! engine gives back to the operating system). A measurement, not a test of speed:
//! ignored by default, and it asserts only that each module is accepted and that
//! compiling again and again does not keep growing the process. Run it alone:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-helper cargo test --release -p quiver-plugin-host \
//!     --test compile_cost -- --ignored --nocapture
//! ```
//!
//! `QUIVER_COMPILE_COST_ONLY=<text>` keeps the modules whose name contains it; the
//! example plugins in `plugins/dist` (or `QUIVER_PLUGIN_DIST`) are measured too.
//! Linux only: it reads `/proc/self/status` and resets the peak with
//! `/proc/self/clear_refs`.

mod common;

use std::time::{Duration, Instant};

use common::synth;
use quiver_plugin_host::admission;
use quiver_plugin_host::{Limits, PluginEngine};

/// Compiles of each module.
const ROUNDS: usize = 3;

/// A `/proc/self/status` field, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resets VmHWM (peak resident memory) to the current resident memory.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The synthetic modules at the default limits: each pushes one cost driver as far
/// as the limits let it.
fn largest_modules(limits: &Limits) -> Vec<(String, Vec<u8>)> {
    let body_max = limits.function_body_bytes_max;
    // Room under code_bytes_max for the section's own header and the ABI functions.
    let code_max = limits.code_bytes_max - 1024;
    let functions = limits.module_functions_max - 3;
    let big = code_max / body_max;
    let local_blocks = limits.function_local_blocks_max;
    // A filler has one parameter besides its locals.
    // (The generated loop is one block more.)
    let at_product = |locals: u32| (local_blocks / (locals as usize + 1) - 1, locals);
    let (blocks_1k, locals_1k) = at_product(1024);
    let (blocks_few, locals_few) = at_product(40);
    vec![
        (
            "one largest body, call_indirect".to_owned(),
            synth::plugin(
                &synth::fillers(1, body_max, code_max, 0, synth::call_indirect_code),
                1,
            ),
        ),
        (
            "most functions, arithmetic".to_owned(),
            synth::plugin(
                &synth::fillers(functions, body_max, code_max, 0, synth::arithmetic_code),
                0,
            ),
        ),
        (
            "most functions, call_indirect".to_owned(),
            synth::plugin(
                &synth::fillers(functions, body_max, code_max, 0, synth::call_indirect_code),
                1,
            ),
        ),
        (
            "largest bodies, arithmetic".to_owned(),
            synth::plugin(
                &synth::fillers(big, body_max, code_max, 0, synth::arithmetic_code),
                0,
            ),
        ),
        (
            "largest bodies, call_indirect".to_owned(),
            synth::plugin(
                &synth::fillers(big, body_max, code_max, 0, synth::call_indirect_code),
                1,
            ),
        ),
        (
            format!("largest bodies, {locals_1k} locals x {blocks_1k} blocks"),
            synth::plugin(
                &synth::fillers(big, body_max, code_max, locals_1k, |bytes| {
                    synth::locals_across_blocks_code(locals_1k, blocks_1k, bytes)
                }),
                0,
            ),
        ),
        (
            format!("largest bodies, {locals_few} locals x {blocks_few} blocks"),
            synth::plugin(
                &synth::fillers(big, body_max, code_max, locals_few, |bytes| {
                    synth::locals_across_blocks_code(locals_few, blocks_few, bytes)
                }),
                0,
            ),
        ),
    ]
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture, alone, in release"]
fn compiling_the_largest_accepted_modules() {
    let limits = Limits::default();
    let only = std::env::var("QUIVER_COMPILE_COST_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let mut modules: Vec<(String, Vec<u8>)> = largest_modules(&limits)
        .into_iter()
        .filter(|(name, _)| wanted(name))
        .collect();
    let dist = std::env::var("QUIVER_PLUGIN_DIST")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/dist").to_owned());
    if let Ok(entries) = std::fs::read_dir(&dist) {
        for path in entries.flatten().map(|e| e.path()) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            if name.ends_with(".wasm") && wanted(&name) {
                modules.push((name, std::fs::read(&path).expect("readable")));
            }
        }
    }
    // Measure every compile to its end, however long it takes.
    let engine = PluginEngine::new(Limits {
        compile_time_max: Duration::from_secs(3600),
        ..limits
    })
    .expect("engine");
    println!(
        "{:<44} {:>8} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "module", "bytes", "round", "compile", "rss0 MiB", "peak MiB", "rss1 MiB"
    );
    let baseline = status_kib("VmRSS:");
    let mut rss_after = Vec::new();
    for (name, wasm) in &modules {
        let started = Instant::now();
        let shape = admission::admit(wasm, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        let admitted = started.elapsed();
        println!("  {name}: admitted in {admitted:?}: {shape:?}");
        for round in 0..ROUNDS {
            let before = status_kib("VmRSS:");
            reset_peak();
            let started = Instant::now();
            let plugin = engine
                .compile(name, wasm)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let took = started.elapsed();
            let peak = status_kib("VmHWM:");
            drop(plugin);
            let after = status_kib("VmRSS:");
            println!(
                "{name:<44} {:>8} {round:>5} {:>7.0}ms {:>9.1} {:>9.1} {:>9.1}",
                wasm.len(),
                took.as_secs_f64() * 1000.0,
                mib(before),
                mib(peak),
                mib(after)
            );
            rss_after.push(after);
        }
    }
    // Refusals cost little: the largest text upload (parsed to a binary before it
    // is read) and a binary of 100,000 functions.
    let text_function = "(func (param i32) (result i32) (local.get 0))\n";
    let text_functions = (limits.module_bytes_max - 64) / text_function.len();
    let text = format!("(module {})", text_function.repeat(text_functions));
    let filler = synth::body(0, &[0x20, 0, 0x0b]);
    let binary = synth::plugin(&vec![filler; 100_000 - 3], 0);
    let refusals: Vec<(String, &[u8])> = vec![
        (format!("text, {text_functions} functions"), text.as_bytes()),
        ("binary, 100000 functions".to_owned(), &binary[..]),
    ];
    let refusals: Vec<_> = refusals.into_iter().filter(|(n, _)| wanted(n)).collect();
    assert!(
        !modules.is_empty() || !refusals.is_empty(),
        "nothing to measure"
    );
    for (name, upload) in refusals {
        reset_peak();
        let started = Instant::now();
        let refused = engine.compile(&name, upload).err();
        let took = started.elapsed();
        let peak = status_kib("VmHWM:");
        println!(
            "{name:<44} {:>8} {:>5} {:>7.0}ms {:>9} {:>9.1} {:>9.1}  refused: {}",
            upload.len(),
            "-",
            took.as_secs_f64() * 1000.0,
            "",
            mib(peak),
            mib(status_kib("VmRSS:")),
            refused.map(|e| e.to_string()).unwrap_or_default()
        );
    }
    // Compile memory is given back: after every compile the process holds at most
    // 64 MiB more than before the first (allocator arenas keep some free memory).
    let most = rss_after.iter().copied().max().unwrap_or(0);
    assert!(
        most <= baseline + 64 * 1024,
        "resident memory grew from {:.1} to {:.1} MiB",
        mib(baseline),
        mib(most)
    );
}
