//! {{name}}: a Quiver `array_map` plugin. Splits each record's value at every comma:
//! one record per part, each with the key, headers and timestamp of the record it
//! came from. A record without a value gives none.

use quiver_plugin::{Record, RecordOut, Result};

/// Called for every record of a batch: the records that replace it (none drops it).
fn split_commas(record: &Record) -> Result<Vec<RecordOut>> {
    let Some(value) = record.value else {
        return Ok(Vec::new());
    };
    let template = RecordOut::from(record);
    Ok(value
        .split(|b| *b == b',')
        .map(|part| template.clone().with_value(part))
        .collect())
}

quiver_plugin::array_map!(split_commas);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_per_part() {
        let parts = split_commas(&Record::from_value(b"a,b,")).expect("splits");
        let values: Vec<_> = parts.iter().map(|r| r.value.as_deref()).collect();
        assert_eq!(values, [Some(&b"a"[..]), Some(&b"b"[..]), Some(&b""[..])]);
    }
}
