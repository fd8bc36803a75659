//! Seed corpora for the fuzz targets, made with the encoders the broker and SDK use,
//! so each target starts from inputs that reach deep into its decoder.

use std::path::Path;

#[allow(dead_code, reason = "only the encoder is used")]
#[path = "../../runtime/plugin-host/src/abi.rs"]
mod abi;

use bytes::{Bytes, BytesMut};
use quiver_wire::batch::{
    BatchBuilder, Compression, ProducerStamp, Record, RecordHeader, stamp,
};
use quiver_wire::message::{
    Acks, ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest, Rpc,
};

fn batch(base: u64, count: usize, codec: Compression, gapped: bool) -> Bytes {
    let mut builder = BatchBuilder::new(ProducerStamp {
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: 0,
    });
    for i in 0..count {
        let mut record = Record::from_value(format!("value {i}"), 1_700_000_000_000 + i as i64);
        record.key = (i % 2 == 0).then(|| Bytes::from(format!("key {i}")));
        record.headers = vec![RecordHeader {
            key: "h".into(),
            value: Some(Bytes::from_static(b"v")),
        }];
        if gapped {
            builder.push_at(&record, (i * 2) as u32);
        } else {
            builder.push(&record);
        }
    }
    if gapped {
        builder.span_to((count * 2) as u32);
    }
    let mut out = BytesMut::from(builder.finish_compressed(codec).expect("records"));
    stamp(&mut out, base, 1);
    out.freeze()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

/// A frame without its 4-byte length prefix, as the targets take it.
fn body_of(frame: &Bytes) -> &[u8] {
    &frame[4..]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");

    let batches = root.join("record_batch");
    write(&batches, "plain", &batch(0, 3, Compression::None, false));
    write(&batches, "lz4", &batch(10, 5, Compression::Lz4, false));
    write(&batches, "zstd", &batch(20, 5, Compression::Zstd, false));
    write(&batches, "gapped", &batch(30, 4, Compression::None, true));
    let two = [batch(0, 2, Compression::None, false), batch(2, 2, Compression::None, false)].concat();
    write(&batches, "two", &two);

    let requests = root.join("request_frame");
    write(&requests, "api_versions", body_of(&ApiVersionsRequest.encode_frame()));
    write(&requests, "metadata", body_of(&MetadataRequest { topics: Some(vec!["orders".into()]) }.encode_frame()));
    let fetch = FetchRequest {
        topic: "orders".into(),
        partition: 0,
        offset: 5,
        max_wait_ms: 100,
        min_bytes: 1,
        max_bytes: 1 << 20,
        plugin: None,
    };
    write(&requests, "fetch", body_of(&fetch.encode_frame()));
    let produce = ProduceRequest {
        topic: "orders".into(),
        partition: 0,
        acks: Acks::All,
        timeout_ms: 1000,
        batch: BytesMut::from(&batch(0, 2, Compression::None, false)[..]),
    };
    write(&requests, "produce", body_of(&produce.encode_frame()));

    // Responses: the first byte picks the decoder, then the status and body.
    let responses = root.join("response_frame");
    write(&responses, "error", &[0, 0, 3, 0, 0, 0, 4, b'g', b'o', b'n', b'e']);
    write(&responses, "empty_ok", &[4, 0, 0]);

    let segments = root.join("segment_recovery");
    let log = [
        batch(0, 3, Compression::None, false),
        batch(3, 2, Compression::Zstd, false),
    ]
    .concat();
    let mut seed = (log.len() as u16).to_le_bytes().to_vec();
    seed.extend_from_slice(&log);
    write(&segments, "two_batches_no_index", &seed);
    let mut torn = (log.len() as u16 - 7).to_le_bytes().to_vec();
    torn.extend_from_slice(&log[..log.len() - 7]);
    write(&segments, "torn_tail", &torn);

    let controller = root.join("controller_frame");
    let mut framed = Vec::new();
    quiver_cluster::storage::frame::encode(br#"{"log_id":{"leader_id":{"term":1,"node_id":1},"index":1},"payload":"Blank"}"#, &mut framed);
    write(&controller, "blank_entry", &framed);
    write(&controller, "command", br#"{"CreateTopic":{"name":"orders","partitions":1,"replication_factor":1}}"#);

    // A plugin answer: the selector byte (input count << 2 | kind), then the answer.
    let answers = root.join("plugin_answer");
    let records: Vec<_> = (0..3)
        .map(|i| quiver_wire::batch::DecodedRecord {
            offset: i,
            timestamp: 1_700_000_000_000,
            key: (i == 1).then(|| Bytes::from_static(b"k")),
            value: Some(Bytes::from(format!("value {i}"))),
            headers: vec![RecordHeader {
                key: "h".into(),
                value: (i != 2).then(|| Bytes::from_static(b"v")),
            }],
        })
        .collect();
    let list = abi::encode_records(&records);
    for (name, kind) in [("map", 0u8), ("filter_map", 1), ("array_map", 2)] {
        write(&answers, name, &[&[3 << 2 | kind][..], &list].concat());
    }
    write(&answers, "filter", &[3 << 2 | 3, 3, 0, 0, 0, 0b101]);
}
