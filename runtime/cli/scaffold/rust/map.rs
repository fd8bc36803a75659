//! {{name}}: a Quiver `map` plugin. Upper-cases every record's value (ASCII letters);
//! the key, the headers and the timestamp stay as they are.

use quiver_plugin::{Record, RecordOut, Result};

/// Called for every record of a batch: the record that replaces it (and keeps its
/// offset).
fn shout(record: &Record) -> Result<RecordOut> {
    let mut out = RecordOut::from(record);
    if let Some(value) = out.value.as_mut() {
        value.make_ascii_uppercase();
    }
    Ok(out)
}

quiver_plugin::map!(shout);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_cases_the_value() {
        let out = shout(&Record::from_value(b"disk full")).expect("maps");
        assert_eq!(out.value.as_deref(), Some(&b"DISK FULL"[..]));
    }
}
