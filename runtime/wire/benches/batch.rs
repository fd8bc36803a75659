//! Hot paths of the batch format: encode, full validation (CRC and record walk), CRC
//! alone, decode, compression. `cargo bench -p quiver-wire`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver_wire::batch::{
    BATCH_BYTES_MAX, BatchBuilder, Compression, ProducerStamp, Record, decode_records, validate,
};

/// A batch of `count` records of `size` bytes, as a producer would send.
fn records(count: usize, size: usize) -> Vec<Record> {
    (0..count)
        .map(|i| {
            Record::from_value(
                Bytes::from(format!("{i:08}").repeat(size / 8)),
                1_700_000_000_000 + i as i64,
            )
        })
        .collect()
}

fn encode(records: &[Record], codec: Compression) -> Bytes {
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    for r in records {
        builder.push(r);
    }
    builder.finish_compressed(codec).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    for (count, size) in [(1000, 100), (500, 1024)] {
        let input = records(count, size);
        let batch = encode(&input, Compression::None);
        let mut group = c.benchmark_group(format!("batch {count}x{size}B"));
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function("encode", |b| {
            b.iter(|| encode(black_box(&input), Compression::None))
        });
        group.bench_function("validate (crc + records)", |b| {
            b.iter(|| validate(black_box(&batch), BATCH_BYTES_MAX))
        });
        group.bench_function("crc32c", |b| {
            b.iter(|| crc32c::crc32c(black_box(&batch[21..])))
        });
        group.bench_function("decode", |b| b.iter(|| decode_records(black_box(&batch))));
        for codec in [Compression::Lz4, Compression::Zstd] {
            let packed = encode(&input, codec);
            group.bench_function(format!("encode {codec:?}"), |b| {
                b.iter(|| encode(black_box(&input), codec))
            });
            group.bench_function(format!("decode {codec:?}"), |b| {
                b.iter(|| decode_records(black_box(&packed)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
