//! The controller's stored log as a damaged disk could leave it: CRC-framed entries,
//! then the entry each frame carries. Also the entry payload alone, since random bytes
//! rarely carry a valid CRC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_cluster::storage::frame;
use quiver_cluster::{LogEntry, MetadataCommand};

/// The largest entry frame the log store reads.
const ENTRY_BYTES_MAX: usize = quiver_cluster::storage::ENTRY_BYTES_MAX;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match frame::decode(&data[at..], ENTRY_BYTES_MAX) {
            Ok((payload, used)) => {
                let _ = serde_json::from_slice::<LogEntry>(payload);
                at += used;
            }
            Err(_) => break,
        }
    }
    let _ = serde_json::from_slice::<LogEntry>(data);
    let _ = serde_json::from_slice::<MetadataCommand>(data);
});
