//! Plugins written in WAT straight from `plugins/ABI.md`: well-behaved ones, and hostile
//! ones that must be refused at upload or contained at run time.

mod common;

use common::{IDENTITY_MAP, PRELUDE, keep_even, module, records, wat_module};
use quiver_plugin_host::{Limits, Outcome, PluginEngine, PluginError, PluginKind};

/// Whether a run's error is the one a hostile case must produce.
type Expected = fn(&PluginError) -> bool;

fn engine() -> PluginEngine {
    PluginEngine::new(Limits {
        call_time_max: std::time::Duration::from_millis(50),
        ..Limits::default()
    })
    .expect("engine")
}

#[test]
fn a_wat_filter_and_map_written_from_the_abi_run() {
    let engine = engine();
    let filter = engine
        .compile("keep-even", &module(&keep_even()))
        .expect("compiles");
    assert_eq!(filter.kind, PluginKind::Filter);
    let mut instance = engine.instantiate(&filter, &[]).expect("instance");
    for n in [1, 5, 8, 9, 100] {
        let outcome = instance.run(&records(n)).expect("runs");
        let expected: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
        assert_eq!(outcome, Outcome::Keep(expected), "{n} records");
    }
    let map = engine
        .compile("identity", &module(IDENTITY_MAP))
        .expect("compiles");
    let mut instance = engine.instantiate(&map, &[]).expect("instance");
    let input = records(3);
    match instance.run(&input).expect("runs") {
        Outcome::Records(out) => {
            assert_eq!(out.len(), 3);
            assert_eq!(out[2].value, input[2].value);
            assert_eq!(out[2].key, input[2].key);
            assert_eq!(out[2].timestamp, input[2].timestamp);
        }
        other => panic!("a map answers records, got {other:?}"),
    }
}

#[test]
fn modules_breaking_the_contract_are_refused_at_upload() {
    let keep_even = keep_even();
    let engine = engine();
    let refuse = |wasm: Vec<u8>| engine.compile("bad", &wasm).err().expect("refused");
    let wasi = wat_module(&format!(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) {PRELUDE} {keep_even})"#
    ));
    assert_eq!(
        refuse(wasi),
        PluginError::Import {
            module: "wasi_snapshot_preview1".into(),
            name: "fd_write".into()
        }
    );
    let wrong_version = wat_module(&format!(
        "(module {} {keep_even})",
        PRELUDE.replace(
            "(func (export \"quiver_abi_version\") (result i32) (i32.const 1))",
            "(func (export \"quiver_abi_version\") (result i32) (i32.const 2))"
        )
    ));
    assert_eq!(refuse(wrong_version), PluginError::AbiVersion(2));
    assert!(
        matches!(refuse(module("")), PluginError::Kind(_)),
        "no transformation"
    );
    assert!(
        matches!(
            refuse(module(&format!("{keep_even} {IDENTITY_MAP}"))),
            PluginError::Kind(_)
        ),
        "two"
    );
    let no_alloc = wat_module(&format!(
        r#"(module (memory (export "memory") 1) (global $bump (mut i32) (i32.const 0))
             (func (export "quiver_abi_version") (result i32) (i32.const 1)) {keep_even})"#
    ));
    assert_eq!(refuse(no_alloc), PluginError::MissingExport("alloc"));
    assert!(matches!(
        refuse(b"not wasm at all".to_vec()),
        PluginError::Invalid(_)
    ));
    let small = PluginEngine::new(Limits {
        module_bytes_max: 16,
        ..Limits::default()
    })
    .expect("engine");
    assert!(matches!(
        small.compile("big", &module(&keep_even)),
        Err(PluginError::TooLarge { .. })
    ));
}

#[test]
fn hostile_plugins_are_contained_and_the_engine_keeps_serving() {
    let engine = engine();
    let good = engine
        .compile("keep-even", &module(&keep_even()))
        .expect("compiles");
    let cases: Vec<(&str, String, Expected)> = vec![
        (
            "infinite loop",
            r#"(func (export "filter") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#.into(),
            |e| matches!(e, PluginError::Timeout(_)),
        ),
        (
            "memory bomb",
            r#"(func (export "filter") (param i32 i32) (result i64)
                 (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                 unreachable)"#
                .into(),
            |e| matches!(e, PluginError::Trap(_)),
        ),
        (
            "trap",
            r#"(func (export "filter") (param i32 i32) (result i64) unreachable)"#.into(),
            |e| matches!(e, PluginError::Trap(_)),
        ),
        (
            "out-of-bounds answer",
            r#"(func (export "filter") (param i32 i32) (result i64) (i64.const 0x7fff000000000064))"#.into(),
            |e| matches!(e, PluginError::OutOfBounds),
        ),
        (
            "garbage answer",
            r#"(func (export "filter") (param $p i32) (param $l i32) (result i64)
                 (i32.store (i32.const 8) (i32.const 999999))
                 (i64.const 0x0000000800000008))"#
                .into(),
            |e| matches!(e, PluginError::Answer(_)),
        ),
        (
            "guest error",
            r#"(func (export "filter") (param i32 i32) (result i64) (i64.const -7))"#.into(),
            |e| *e == PluginError::Guest(-7),
        ),
    ];
    for (what, body, expected) in cases {
        let plugin = engine
            .compile(what, &module(&body))
            .unwrap_or_else(|e| panic!("{what} compiles: {e}"));
        let mut instance = engine.instantiate(&plugin, &[]).expect("instance");
        let err = instance.run(&records(4)).expect_err(what);
        assert!(expected(&err), "{what}: got {err}");
        assert!(
            instance.memory_bytes() <= engine.limits().memory_bytes_max,
            "{what}: memory bound held"
        );
        // The engine and other plugins are unaffected.
        let mut fresh = engine.instantiate(&good, &[]).expect("fresh instance");
        assert_eq!(
            fresh.run(&records(2)).expect("still serving"),
            Outcome::Keep(vec![true, false]),
            "after {what}"
        );
    }
}

#[test]
fn init_gets_the_parameters_and_may_refuse_them() {
    let keep_even = keep_even();
    let engine = engine();
    // Accepts exactly one parameter.
    let init = r#"(func (export "init") (param $p i32) (param $l i32) (result i32)
                    (global.set $bump (i32.const 1024))
                    (i32.ne (i32.load (local.get $p)) (i32.const 1)))"#;
    let plugin = engine
        .compile("init", &module(&format!("{init} {keep_even}")))
        .expect("compiles");
    let one = [("field".to_owned(), "status".to_owned())];
    let mut ok = engine
        .instantiate(&plugin, &one)
        .expect("one parameter is accepted");
    assert!(ok.run(&records(3)).is_ok());
    let two = [
        ("a".to_owned(), "1".to_owned()),
        ("b".to_owned(), "2".to_owned()),
    ];
    assert_eq!(
        engine.instantiate(&plugin, &two).err(),
        Some(PluginError::InitRefused(1))
    );
}
