//! A partition directory after a crash or a damaged disk: arbitrary bytes as the
//! active segment and its offset index. Opening must recover what is whole or refuse
//! with an error, and whatever it then serves must be readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_log::{LogConfig, PartitionLog};

fuzz_target!(|data: &[u8]| {
    // The first two bytes say where the index's bytes start.
    let Some((split, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*split)).min(rest.len());
    let (log, index) = rest.split_at(split);
    let Ok(dir) = tempfile::tempdir() else { return };
    let base = dir.path().join("00000000000000000000");
    if std::fs::write(base.with_extension("log"), log).is_err()
        || std::fs::write(base.with_extension("index"), index).is_err()
    {
        return;
    }
    let Ok((partition, _report)) = PartitionLog::open(dir.path(), LogConfig::default(), 0) else {
        return;
    };
    let start = partition.log_start_offset();
    let end = partition.log_end_offset();
    if start < end {
        let _ = partition.read(start, 1 << 20, end);
    }
});
