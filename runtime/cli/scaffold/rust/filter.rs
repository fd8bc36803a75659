//! {{name}}: a Quiver `filter` plugin. Keeps the records whose value starts with the
//! parameter `prefix` (`ERROR` when the attachment gives no parameters).

use quiver_plugin::{InitCell, Params, Record, Result};

/// What a kept record's value starts with, set once by `init`.
static PREFIX: InitCell<Vec<u8>> = InitCell::new();

/// Runs once per instance, before its first batch, with the attachment's parameters
/// (an empty list when there are none). An `Err` refuses them: the attach fails.
fn init(params: &Params) -> Result<()> {
    let prefix = params.get("prefix").unwrap_or("ERROR");
    PREFIX.set(prefix.as_bytes().to_vec())?;
    Ok(())
}

/// Called for every record of a batch: `true` keeps it.
fn keep(record: &Record) -> Result<bool> {
    Ok(starts_with(record.value, PREFIX.require()?))
}

fn starts_with(value: Option<&[u8]>, prefix: &[u8]) -> bool {
    value.is_some_and(|v| v.starts_with(prefix))
}

quiver_plugin::init!(init);
quiver_plugin::filter!(keep);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_values_with_the_prefix() {
        assert!(starts_with(Some(b"ERROR disk full"), b"ERROR"));
        assert!(!starts_with(Some(b"INFO ok"), b"ERROR"));
        assert!(!starts_with(None, b"ERROR"), "a record without a value");
    }
}
