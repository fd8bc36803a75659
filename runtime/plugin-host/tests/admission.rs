//! Admission: a module whose shape exceeds a limit is refused before it is compiled,
//! with one message naming the limit, what was found and the limit's value.

mod common;

use common::synth;
use common::{PRELUDE, keep_even, module, wat_module};
use quiver_plugin_host::admission::{self, ModuleExcess};
use quiver_plugin_host::{Limits, PluginEngine, PluginError, PluginKind};

fn engine(limits: Limits) -> PluginEngine {
    PluginEngine::new(limits).expect("engine")
}

/// A plugin of `count` functions in all (3 of them the ABI's), each filler tiny.
fn plugin_of_functions(count: usize) -> Vec<u8> {
    let filler = synth::body(0, &[0x20, 0, 0x0b]);
    synth::plugin(&vec![filler; count - 3], 0)
}

#[test]
fn a_module_of_100000_functions_is_refused_before_compiling() {
    let wasm = plugin_of_functions(100_000);
    let limits = Limits::default();
    let expected = "module declares 100000 functions; the limit (module_functions_max) is 10000";
    // Admission alone (no compiler involved) refuses it...
    let err = admission::admit(&wasm, &limits).expect_err("refused");
    assert_eq!(err.to_string(), expected);
    assert_eq!(
        err,
        PluginError::ModuleLimit {
            found: ModuleExcess::Functions(100_000),
            limit: 10_000
        }
    );
    // ... and an upload gets the same refusal.
    let err = engine(limits)
        .compile("many", &wasm)
        .err()
        .expect("refused");
    assert_eq!(err.to_string(), expected);
    assert_eq!(err.kind(), "refused");
}

#[test]
fn a_module_at_the_function_limit_is_accepted() {
    let limits = Limits::default();
    let wasm = plugin_of_functions(limits.module_functions_max);
    let shape = admission::admit(&wasm, &limits).expect("admitted");
    assert_eq!(shape.functions, limits.module_functions_max as u64);
    let plugin = engine(limits).compile("many", &wasm).expect("compiles");
    assert_eq!(plugin.kind, PluginKind::Filter);
    let over = plugin_of_functions(limits.module_functions_max + 1);
    assert!(matches!(
        admission::admit(&over, &limits),
        Err(PluginError::ModuleLimit {
            found: ModuleExcess::Functions(_),
            ..
        })
    ));
}

/// A WAT plugin (keep-even) with `extra` fields added to the module.
fn with(extra: &str) -> Vec<u8> {
    module(&format!("{} {extra}", keep_even()))
}

/// The prelude's memory declaration, replaced by `memory`.
fn with_memory(memory: &str) -> Vec<u8> {
    wat_module(&format!(
        "(module {} {})",
        PRELUDE.replace(r#"(memory (export "memory") 2)"#, memory),
        keep_even()
    ))
}

#[test]
fn each_shape_limit_refuses_with_its_name_what_was_found_and_its_value() {
    let big_body = synth::body(0, &synth::arithmetic_code(200));
    let big_body_len = big_body.len();
    let small_limits = |f: fn(&mut Limits)| {
        let mut limits = Limits::default();
        f(&mut limits);
        limits
    };
    let code_bytes = admission::admit(
        &synth::plugin(std::slice::from_ref(&big_body), 0),
        &Limits::default(),
    )
    .expect("admitted with the defaults")
    .code_bytes;
    let cases: Vec<(Limits, Vec<u8>, String)> = vec![
        (
            small_limits(|l| l.function_body_bytes_max = 100),
            synth::plugin(std::slice::from_ref(&big_body), 0),
            format!(
                "function 3 has a body of {big_body_len} bytes; the limit (function_body_bytes_max) is 100"
            ),
        ),
        (
            small_limits(|l| l.function_locals_max = 10),
            synth::plugin(&[synth::body(11, &[0x20, 0, 0x0b])], 0),
            "function 3 declares 11 locals; the limit (function_locals_max) is 10".into(),
        ),
        (
            small_limits(|l| l.function_local_blocks_max = 10),
            // A loop and 4 blocks; 2 locals and 1 parameter.
            synth::plugin(
                &[synth::body(2, &synth::locals_across_blocks_code(2, 4, 64))],
                0,
            ),
            "function 3 has 5 blocks and 3 locals counting its parameters (15 local-blocks); \
             the limit (function_local_blocks_max) is 10"
                .into(),
        ),
        (
            small_limits(|l| l.code_bytes_max = 100),
            synth::plugin(std::slice::from_ref(&big_body), 0),
            format!("module has {code_bytes} bytes of code; the limit (code_bytes_max) is 100"),
        ),
        (
            small_limits(|l| l.module_types_max = 2),
            synth::plugin(&[], 0),
            "module declares 3 types; the limit (module_types_max) is 2".into(),
        ),
        (
            small_limits(|l| l.module_globals_max = 1),
            with("(global i32 (i32.const 0))"),
            "module declares 2 globals; the limit (module_globals_max) is 1".into(),
        ),
        (
            small_limits(|l| l.module_exports_max = 3),
            with(""),
            "module declares 4 exports; the limit (module_exports_max) is 3".into(),
        ),
        (
            Limits::default(),
            with("(table 1 funcref) (table 1 funcref)"),
            "module declares 2 tables; the limit (module_tables_max) is 1".into(),
        ),
        (
            Limits::default(),
            with("(table 20001 funcref)"),
            "table 0 starts with 20001 elements; the limit (table_elements_max) is 20000".into(),
        ),
        (
            Limits::default(),
            with("(memory 1)"),
            "module declares 2 memories; the limit (module_memories_max) is 1".into(),
        ),
        (
            Limits::default(),
            with_memory(r#"(memory (export "memory") 257)"#),
            "memory 0 starts at 16842752 bytes; the limit (memory_bytes_max) is 16777216".into(),
        ),
        (
            small_limits(|l| l.module_element_segments_max = 1),
            with("(table 4 funcref) (elem (i32.const 0) 0) (elem (i32.const 1) 0)"),
            "module declares 2 element segments; the limit (module_element_segments_max) is 1"
                .into(),
        ),
        (
            small_limits(|l| l.element_items_max = 2),
            with("(table 4 funcref) (elem (i32.const 0) 0 0 0)"),
            "module's element segments hold 3 items; the limit (element_items_max) is 2".into(),
        ),
        (
            small_limits(|l| l.module_data_segments_max = 1),
            with(r#"(data (i32.const 0) "a") (data (i32.const 8) "b")"#),
            "module declares 2 data segments; the limit (module_data_segments_max) is 1".into(),
        ),
        (
            small_limits(|l| l.data_bytes_max = 4),
            with(r#"(data (i32.const 0) "hello")"#),
            "module's data segments hold 5 bytes; the limit (data_bytes_max) is 4".into(),
        ),
        (
            Limits::default(),
            with_memory(r#"(memory (export "memory") i64 2)"#),
            "plugin declares a 64-bit memory; ABI v1 allows only 32-bit, unshared memories and tables"
                .into(),
        ),
        (
            Limits::default(),
            with_memory(r#"(memory (export "memory") 2 2 shared)"#),
            "plugin declares a shared memory; ABI v1 allows only 32-bit, unshared memories and tables"
                .into(),
        ),
    ];
    for (limits, wasm, expected) in cases {
        let err = admission::admit(&wasm, &limits).expect_err(&expected);
        assert_eq!(err.to_string(), expected);
        assert_eq!(err.kind(), "refused", "{expected}");
        let upload = engine(limits).compile("shape", &wasm).err();
        assert_eq!(
            upload.as_ref(),
            Some(&err),
            "an upload gets the same refusal"
        );
    }
}

#[test]
fn imports_are_refused_by_admission() {
    let wasm = wat_module(&format!(
        r#"(module (import "env" "now" (func (result i64))) {PRELUDE} {})"#,
        keep_even()
    ));
    assert_eq!(
        admission::admit(&wasm, &Limits::default()),
        Err(PluginError::Import {
            module: "env".into(),
            name: "now".into()
        })
    );
}

#[test]
fn the_test_modules_pass_with_room_under_the_defaults() {
    let limits = Limits::default();
    for (what, wasm) in [
        ("keep-even", with("")),
        ("identity map", module(common::IDENTITY_MAP)),
        ("fill filter", module(&common::filter_filling(0xff))),
    ] {
        let shape = admission::admit(&wasm, &limits).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(shape.functions >= 3, "{what}: {shape:?}");
        assert!(
            shape.memory_initial_bytes_largest > 0,
            "{what}: the memory was seen"
        );
    }
}

#[test]
fn an_upload_in_the_text_format_is_admitted_and_compiled() {
    let text = format!("(module {PRELUDE} {})", keep_even());
    let plugin = engine(Limits::default())
        .compile("text", text.as_bytes())
        .expect("compiles");
    assert_eq!(plugin.kind, PluginKind::Filter);
    let err = engine(Limits::default())
        .compile("junk", b"(module (func")
        .err()
        .expect("refused");
    assert!(matches!(err, PluginError::Invalid(_)), "{err}");
}

/// The example plugins, after `plugins/build.sh` built them into `plugins/dist/`.
/// Ignored by default because CI has no wasm32 toolchain; fails when none were built.
#[test]
#[ignore = "needs plugins/build.sh to have built plugins/dist/*.wasm"]
fn the_example_plugins_pass_the_default_limits() {
    let dist = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/dist");
    let dist = std::env::var("QUIVER_PLUGIN_DIST").unwrap_or_else(|_| dist.to_owned());
    let mut seen = 0;
    let engine = engine(Limits::default());
    for entry in std::fs::read_dir(&dist).expect("plugins/dist exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        let wasm = std::fs::read(&path).expect("readable");
        let shape = admission::admit(&wasm, &Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        println!("{}: {} bytes, {shape:?}", path.display(), wasm.len());
        engine
            .compile("example", &wasm)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen > 0, "no .wasm in {dist}");
}
