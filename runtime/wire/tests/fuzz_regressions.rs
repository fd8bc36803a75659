//! Inputs the fuzz targets (fuzz/) found to fail, kept as tests so each stays fixed.
//! Each file in `tests/fuzz-regressions/` is named after its target and the start of
//! libFuzzer's hash of the input.

use bytes::Bytes;
use quiver_wire::batch::{BATCH_BYTES_MAX, BatchSplitter, decode_records, validate};

/// The `record_batch` target's first property: what validation lets the broker store,
/// a reader can decode.
fn stored_batches_decode(input: &[u8]) {
    for batch in BatchSplitter::new(Bytes::copy_from_slice(input)) {
        let Ok(batch) = batch else { break };
        if validate(&batch, BATCH_BYTES_MAX).is_ok()
            && let Err(e) = decode_records(&batch)
        {
            panic!("a batch validation accepts does not decode: {e}");
        }
    }
}

/// A record header key that is not UTF-8: validation let it be stored, and every
/// reader then refused the batch.
#[test]
fn record_batch_f2e8c065_header_key_not_utf8() {
    stored_batches_decode(include_bytes!("fuzz-regressions/record_batch-f2e8c065"));
}
