//! Hot paths of the partition log: append (page cache, no fsync), read from the sealed
//! (mapped) and active segments, offset and timestamp lookups. `cargo bench -p quiver-log`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use quiver_log::{LogConfig, PartitionLog};
use quiver_wire::batch::{BatchBuilder, ProducerStamp, Record};

const RECORDS_PER_BATCH: usize = 100;
const RECORD_BYTES: usize = 1024;

fn batch(first_timestamp: i64) -> BytesMut {
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    let value = Bytes::from(vec![b'q'; RECORD_BYTES]);
    for i in 0..RECORDS_PER_BATCH {
        builder.push(&Record {
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
            timestamp: first_timestamp + i as i64,
        });
    }
    BytesMut::from(&builder.finish().unwrap_or_default()[..])
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 * 1024 * 1024,
        ..LogConfig::default()
    }
}

fn bench(c: &mut Criterion) {
    let template = batch(0);
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Bytes(template.len() as u64));
    group.bench_function("append 100 x 1 KiB batch", |b| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), config(), 0).expect("open");
        b.iter_batched(
            || template.clone(),
            |batch| log.append(batch, 0, 0).expect("append"),
            BatchSize::SmallInput,
        );
    });

    // A log of about 64 MiB: several sealed (mapped) segments and an active one.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), config(), 0).expect("open");
    for i in 0..600i64 {
        log.append(batch(i * 1_000), 0, 0).expect("append");
    }
    let end = log.log_end_offset();
    group.bench_function("read 1 MiB from a sealed segment", |b| {
        b.iter(|| log.read(black_box(1_000), 1024 * 1024, end).expect("read"))
    });
    group.bench_function("read the newest batch (tail cache)", |b| {
        b.iter(|| log.read(black_box(end - 1), 1, end).expect("read"))
    });
    group.bench_function("offset for timestamp", |b| {
        b.iter(|| {
            log.offset_for_timestamp(black_box(333_333))
                .expect("lookup")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
