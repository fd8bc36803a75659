//! A record batch from anywhere: a producer (validated before it is stored), a fetch
//! answer (decoded by the SDK, gaps allowed), a stored batch read for a plugin
//! (located in place, survivors copied out). Compressed sections included: the codec
//! is in the attributes, and decompression is capped.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use quiver_wire::batch::{
    BATCH_BYTES_MAX, BatchHeader, BatchSplitter, RawBatch, decode_records, retain_records,
    validate,
};

fuzz_target!(|data: &[u8]| {
    for batch in BatchSplitter::new(Bytes::copy_from_slice(data)) {
        let Ok(batch) = batch else { break };
        let stored = validate(&batch, BATCH_BYTES_MAX).is_ok();
        let decoded = decode_records(&batch);
        // What can be stored can be read.
        assert!(!stored || decoded.is_ok(), "a valid batch failed to decode");
        if let Ok(raw) = RawBatch::open(&batch) {
            let records = decoded.expect("RawBatch and decode_records accept alike");
            assert_eq!(raw.len(), records.len());
            for (i, record) in records.iter().enumerate() {
                assert_eq!(&raw.decoded(i), record);
            }
            let mut every_other = false;
            let kept = retain_records(&batch, |_| {
                every_other = !every_other;
                every_other
            });
            if let Ok(Some(sent)) = kept {
                let header = BatchHeader::parse(&sent).expect("a header was written");
                assert_eq!(header.base_offset, raw.header().base_offset);
                let again = decode_records(&sent).expect("what is sent decodes");
                assert_eq!(again.len(), records.len().div_ceil(2));
            }
        }
    }
});
