//! The example plugins on a long-lived instance answer exactly as a fresh instance
//! does, over batches that grow and shrink: the guest SDK resets its per-call arena
//! between calls, grows it for a large batch, and must never let one call's memory
//! leak into another's answer.
//!
//! Ignored by default because CI has no wasm32 toolchain: run after
//! `plugins/build.sh` with `cargo test -p quiver-plugin-host --test example_instances
//! -- --ignored` (or set `QUIVER_PLUGIN_DIST`).

use bytes::Bytes;
use quiver_plugin_host::{Limits, Outcome, PluginEngine};
use quiver_wire::batch::DecodedRecord;

/// JSON objects, arrays, text with an e-mail address and a card number, and values
/// that are not JSON, of varying lengths, so that every example has work to do.
fn batch(records: usize, seed: usize) -> Vec<DecodedRecord> {
    (0..records)
        .map(|i| {
            let j = i + seed;
            let value = match j % 5 {
                0 => format!(
                    r#"{{"id":{j},"user":{{"country":"NO"}},"mail":"a{j}@example.com","list":[1,{j}]}}"#
                ),
                1 => format!(r#"[{j},"x",{{"id":{j}}}]"#),
                2 => format!("ERROR {j} card 4111 1111 1111 1111 {}", "pad ".repeat(j % 40)),
                3 => format!(
                    r#"{{"id":"{j}","user":{{"country":"SE"}},"note":"{}"}}"#,
                    "lorem ".repeat(j % 60)
                ),
                _ => "not json".to_owned(),
            };
            DecodedRecord {
                offset: i as u64,
                timestamp: j as i64,
                key: j.is_multiple_of(3).then(|| Bytes::from(format!("k{j}"))),
                value: Some(Bytes::from(value)),
                headers: Vec::new(),
            }
        })
        .collect()
}

fn same(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Keep(a), Outcome::Keep(b)) => a == b,
        (Outcome::Records(a), Outcome::Records(b)) => format!("{a:?}") == format!("{b:?}"),
        _ => false,
    }
}

#[test]
#[ignore = "needs plugins/build.sh to have built plugins/dist/*.wasm"]
fn a_reused_instance_answers_as_a_fresh_one() {
    let dist = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/dist");
    let dist = std::env::var("QUIVER_PLUGIN_DIST").unwrap_or_else(|_| dist.to_owned());
    let examples: &[(&str, &[(&str, &str)])] = &[
        (
            "json-field-filter",
            &[("field", "user.country"), ("value", "NO")],
        ),
        ("json-project", &[("fields", "id,user,list")]),
        ("json-array-split", &[]),
        ("pii-redact", &[]),
        ("regex-filter", &[("pattern", "ERROR|NO")]),
    ];
    // Records per batch: growing past what the arena holds, then shrinking, twice.
    let sizes = [10, 1_000, 5, 10_000, 3, 0, 4_000, 1, 12_000, 2];
    let engine = PluginEngine::new(Limits::default()).expect("engine");
    for (name, params) in examples {
        let path = format!("{dist}/{name}.wasm");
        let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let plugin = engine.compile(name, &wasm).expect("compiles");
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut reused = engine.instantiate(&plugin, &params).expect("instance");
        for round in 0..2 {
            for (k, &records) in sizes.iter().enumerate() {
                let input = batch(records, k * 7 + round);
                let mut fresh = engine.instantiate(&plugin, &params).expect("instance");
                let expected = fresh.run(&input).expect("a fresh instance runs");
                let answer = reused.run(&input).unwrap_or_else(|e| {
                    panic!("{name}: batch of {records} fails on a reused instance: {e}")
                });
                assert!(
                    same(&answer, &expected),
                    "{name}: batch of {records} (round {round}) differs on a reused instance"
                );
            }
        }
    }
}
