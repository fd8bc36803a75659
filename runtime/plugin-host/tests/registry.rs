//! The registry: persistence across reopen, the compile cache, replacing a version,
//! attachments in order, and a chain applying each attachment's `on_error`.

mod common;

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use common::{IDENTITY_MAP, keep_even, module, records};
use quiver_plugin_host::chain::{ChainOutcome, run_chain};
use quiver_plugin_host::{Limits, PluginEngine, Registry, RegistryError};
use quiver_wire::batch::{
    BatchBuilder, Compression, ProducerStamp, RawBatch, Record, RecordHeader, decode_records, stamp,
};
use quiver_wire::plugin::{Attachment, OnError, PluginStage};

/// Traps on every call.
const TRAP: &str = r#"
  (func (export "filter") (param i32 i32) (result i64) unreachable)
"#;

fn open(dir: &std::path::Path) -> Registry {
    Registry::open(dir, PluginEngine::new(Limits::default()).expect("engine")).expect("opens")
}

fn attach(registry: &Registry, plugin: &str, stage: PluginStage, on_error: OnError) {
    registry
        .attach(Attachment {
            topic: "orders".into(),
            plugin: plugin.into(),
            stage,
            params: Vec::new(),
            on_error,
        })
        .expect("attaches");
}

#[test]
fn plugins_and_attachments_survive_reopen_and_load_from_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = {
        let registry = open(dir.path());
        let info = registry
            .upload("keep-even", &module(&keep_even()), 1_000)
            .expect("uploads");
        assert_eq!(info.kind, "filter");
        assert_eq!(info.version.len(), 64);
        attach(&registry, "keep-even", PluginStage::Fetch, OnError::Skip);
        assert_eq!(registry.loads.compiled.load(Ordering::Relaxed), 1);
        info
    };
    let registry = open(dir.path());
    let (plugins, attachments) = registry.list();
    assert_eq!(plugins, vec![first]);
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].on_error, OnError::Skip);
    assert_eq!(registry.loads.from_cache.load(Ordering::Relaxed), 1);
    assert_eq!(registry.loads.compiled.load(Ordering::Relaxed), 0);
    let steps = registry.chain("orders", PluginStage::Fetch).expect("chain");
    let run = run_chain(&registry, &steps, PluginStage::Fetch, records(4));
    match run.outcome {
        ChainOutcome::Kept(kept) => {
            assert_eq!(
                kept.iter().map(|r| r.offset).collect::<Vec<_>>(),
                [100, 102]
            );
        }
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn a_cache_file_wasmtime_refuses_is_rebuilt_from_the_module() {
    let dir = tempfile::tempdir().expect("tempdir");
    let version = open(dir.path())
        .upload("keep-even", &module(&keep_even()), 1)
        .expect("uploads")
        .version;
    let cache = dir.path().join("compiled").join(format!("{version}.cwasm"));
    std::fs::write(&cache, b"not machine code").expect("overwrite");
    let registry = open(dir.path());
    assert_eq!(registry.loads.compiled.load(Ordering::Relaxed), 1);
    assert_ne!(std::fs::read(&cache).expect("cache"), b"not machine code");
}

#[test]
fn uploading_under_a_name_replaces_its_version_for_the_next_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = open(dir.path());
    registry
        .upload("view", &module(&keep_even()), 1)
        .expect("uploads");
    attach(&registry, "view", PluginStage::Fetch, OnError::Fail);
    let before = registry.chain("orders", PluginStage::Fetch).expect("chain");
    let v2 = registry
        .upload("view", &module(IDENTITY_MAP), 2)
        .expect("replaces");
    assert_eq!(registry.list().0.len(), 1);
    let after = registry.chain("orders", PluginStage::Fetch).expect("chain");
    assert_eq!(after[0].version, v2.version);
    assert_ne!(before[0].version, after[0].version);
    // A chain resolved before the upload still finishes with the version it holds.
    let run = run_chain(&registry, &before, PluginStage::Fetch, records(2));
    assert!(matches!(run.outcome, ChainOutcome::Kept(ref r) if r.len() == 1));
    let run = run_chain(&registry, &after, PluginStage::Fetch, records(2));
    assert!(matches!(run.outcome, ChainOutcome::Records(ref r) if r.len() == 2));
}

#[test]
fn chains_run_in_order_and_apply_on_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = open(dir.path());
    registry
        .upload("keep-even", &module(&keep_even()), 1)
        .expect("uploads");
    registry.upload("trap", &module(TRAP), 1).expect("uploads");

    attach(&registry, "trap", PluginStage::Produce, OnError::Pass);
    attach(&registry, "keep-even", PluginStage::Produce, OnError::Fail);
    let steps = registry
        .chain("orders", PluginStage::Produce)
        .expect("chain");
    let run = run_chain(&registry, &steps, PluginStage::Produce, records(4));
    assert!(matches!(run.outcome, ChainOutcome::Kept(ref r) if r.len() == 2));
    assert_eq!(run.reports.len(), 2);
    assert_eq!(run.reports[0].error, Some("trap"));

    registry.detach("orders", "trap").expect("detaches");
    registry.detach("orders", "keep-even").expect("detaches");
    for (policy, expected) in [
        (OnError::Fail, "failed"),
        (OnError::Skip, "skipped"),
        (OnError::DeadLetter("orders-dlq".into()), "dead-letter"),
    ] {
        attach(&registry, "keep-even", PluginStage::Fetch, OnError::Fail);
        attach(&registry, "trap", PluginStage::Fetch, policy);
        let steps = registry.chain("orders", PluginStage::Fetch).expect("chain");
        let run = run_chain(&registry, &steps, PluginStage::Fetch, records(4));
        let got = match &run.outcome {
            ChainOutcome::Failed { plugin, .. } if plugin == "trap" => "failed",
            ChainOutcome::Skipped { plugin, .. } if plugin == "trap" => "skipped",
            ChainOutcome::DeadLetter { topic, headers, .. } if topic == "orders-dlq" => {
                assert!(headers.iter().any(|h| h.key == "quiver.plugin.error"));
                "dead-letter"
            }
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(got, expected);
        registry.detach("orders", "trap").expect("detaches");
        registry.detach("orders", "keep-even").expect("detaches");
    }
}

#[test]
fn bad_requests_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = open(dir.path());
    assert!(matches!(
        registry.upload("bad/name", &module(&keep_even()), 1),
        Err(RegistryError::InvalidName(_))
    ));
    assert!(matches!(
        registry.upload("junk", b"not wasm", 1),
        Err(RegistryError::Plugin(_))
    ));
    let err = registry
        .attach(Attachment {
            topic: "orders".into(),
            plugin: "missing".into(),
            stage: PluginStage::Fetch,
            params: Vec::new(),
            on_error: OnError::Fail,
        })
        .expect_err("unknown plugin");
    assert_eq!(err.to_string(), "no plugin named `missing` is registered");
    registry
        .upload("keep-even", &module(&keep_even()), 1)
        .expect("uploads");
    assert!(matches!(
        registry.attach(Attachment {
            topic: "orders".into(),
            plugin: "keep-even".into(),
            stage: PluginStage::Produce,
            params: Vec::new(),
            on_error: OnError::DeadLetter("orders".into()),
        }),
        Err(RegistryError::DeadLetterLoop(_))
    ));
    assert!(matches!(
        registry.detach("orders", "keep-even"),
        Err(RegistryError::NotAttached { .. })
    ));
    assert!(registry.list().1.is_empty());
}

/// The files under `dir` (relative names), sorted.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for sub in ["modules", "compiled"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            for entry in entries {
                let entry = entry.expect("entry");
                names.push(format!("{sub}/{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    names.sort();
    names
}

#[test]
fn replaced_and_removed_versions_leave_no_files_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = open(dir.path());
    let first = registry
        .upload("filter", &module(&keep_even()), 1_000)
        .expect("uploads");
    let other = registry
        .upload("other", &module(&keep_even()), 1_000)
        .expect("uploads the same module under another name");
    assert_eq!(first.version, other.version);
    let second = registry
        .upload("filter", &module(&common::filter_filling(7)), 2_000)
        .expect("replaces");
    // The first version is still `other`'s: its files stay.
    let both = files_under(dir.path());
    assert_eq!(both.len(), 4, "{both:?}");
    assert!(both.iter().any(|f| f.contains(&first.version)));
    assert!(both.iter().any(|f| f.contains(&second.version)));

    registry.remove("filter").expect("removes");
    let left = files_under(dir.path());
    assert!(
        left.iter().all(|f| f.contains(&first.version)),
        "a removed version's files are gone: {left:?}"
    );
    registry.remove("other").expect("removes");
    assert_eq!(files_under(dir.path()), Vec::<String>::new());
}

#[test]
fn a_stored_plugin_refused_by_tighter_limits_is_left_out_and_the_registry_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let registry = open(dir.path());
        registry
            .upload("filter", &module(&keep_even()), 1_000)
            .expect("uploads");
    }
    // No compile cache (another build's engine settings): the module is checked and
    // compiled again at open.
    std::fs::remove_dir_all(dir.path().join("compiled")).expect("remove the cache");
    let tight = Limits {
        module_functions_max: 1,
        ..Limits::default()
    };
    let registry = Registry::open(dir.path(), PluginEngine::new(tight).expect("engine"))
        .expect("the registry opens although a stored plugin is now over a limit");
    assert_eq!(registry.plugin_count(), 0, "the refused plugin is left out");
    drop(registry);
    let registry = open(dir.path());
    assert_eq!(
        registry.plugin_count(),
        1,
        "it stays stored, and loads again under limits that admit it"
    );
}

/// The records of `records(n)`-like input as one stored batch at offset 100, with a
/// header on every record and a compressed records section when `codec` says so.
fn stored_batch(n: usize, codec: Compression) -> Bytes {
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    for i in 0..n {
        builder.push(&Record {
            key: (i % 3 != 0).then(|| Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: vec![RecordHeader {
                key: "n".into(),
                value: (i % 2 == 0).then(|| Bytes::from(i.to_string())),
            }],
            timestamp: 1_000 + i as i64,
        });
    }
    let mut batch = BytesMut::from(builder.finish_compressed(codec).expect("records"));
    stamp(&mut batch, 100, 1);
    batch.freeze()
}

/// A chain reading records straight from their stored batch answers as it does over
/// decoded records: filters narrow the batch, a map after them sees only survivors,
/// every field intact.
#[test]
fn chains_over_stored_records_answer_as_over_decoded_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = open(dir.path());
    registry
        .upload("keep-even", &module(&keep_even()), 1)
        .expect("uploads");
    registry
        .upload("identity", &module(IDENTITY_MAP), 1)
        .expect("uploads");
    attach(&registry, "keep-even", PluginStage::Fetch, OnError::Fail);
    let filters = registry.chain("orders", PluginStage::Fetch).expect("chain");
    attach(&registry, "keep-even", PluginStage::Fetch, OnError::Fail);
    let two_filters = registry.chain("orders", PluginStage::Fetch).expect("chain");
    attach(&registry, "identity", PluginStage::Fetch, OnError::Fail);
    let filters_then_map = registry.chain("orders", PluginStage::Fetch).expect("chain");
    for codec in [Compression::None, Compression::Zstd] {
        let batch = stored_batch(9, codec);
        for (steps, kept) in [
            (&filters, vec![100, 102, 104, 106, 108]),
            (&two_filters, vec![100, 104, 108]),
            (&filters_then_map, vec![100, 104, 108]),
        ] {
            let stored = RawBatch::open(&batch).expect("opens");
            let decoded = decode_records(&batch).expect("decodes");
            let from_stored = run_chain(&registry, steps, PluginStage::Fetch, stored).outcome;
            let from_decoded = run_chain(&registry, steps, PluginStage::Fetch, decoded).outcome;
            let (a, b) = match (from_stored, from_decoded) {
                (ChainOutcome::Kept(a), ChainOutcome::Kept(b))
                | (ChainOutcome::Records(a), ChainOutcome::Records(b)) => (a, b),
                other => panic!("outcomes differ: {other:?}"),
            };
            assert_eq!(a, b, "{} steps, {codec:?}", steps.len());
            assert_eq!(a.iter().map(|r| r.offset).collect::<Vec<_>>(), kept);
            let all = decode_records(&batch).expect("decodes");
            for r in &a {
                assert_eq!(r, &all[(r.offset - 100) as usize], "fields intact");
            }
        }
    }
}
