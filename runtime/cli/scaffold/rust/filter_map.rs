//! {{name}}: a Quiver `filter_map` plugin. Drops the records whose value is missing
//! or empty, and upper-cases the value of the others (ASCII letters); keys, headers
//! and timestamps stay as they are.

use quiver_plugin::{Record, RecordOut, Result};

/// Called for every record of a batch: `None` drops it, `Some` replaces it (and
/// keeps its offset).
fn shout_non_empty(record: &Record) -> Result<Option<RecordOut>> {
    if record.value.is_none_or(<[u8]>::is_empty) {
        return Ok(None);
    }
    let mut out = RecordOut::from(record);
    if let Some(value) = out.value.as_mut() {
        value.make_ascii_uppercase();
    }
    Ok(Some(out))
}

quiver_plugin::filter_map!(shout_non_empty);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_empty_values_and_upper_cases_the_rest() {
        assert_eq!(shout_non_empty(&Record::from_value(b"")).expect("runs"), None);
        let out = shout_non_empty(&Record::from_value(b"ok")).expect("runs");
        assert_eq!(out.and_then(|r| r.value).as_deref(), Some(&b"OK"[..]));
    }
}
