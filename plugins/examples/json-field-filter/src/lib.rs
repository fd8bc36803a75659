//! A `filter` plugin: keeps records whose value is JSON with a field equal to a given
//! value. Parameters: `field`, a dotted path (`user.country`; a number indexes an
//! array: `items.0.sku`), and `value`. Strings compare by their decoded text; numbers,
//! `true`, `false` and `null` by their text as the record wrote it (`1.0` is not `1`).
//! Objects and arrays never match. Values that are not JSON, or lack the field, are
//! dropped: a filter decides, it does not fail the batch.
//!
//! Each value is read with the SDK's streaming lookup (`quiver_plugin::json`): one
//! validating pass over the text, no value tree and no allocation per record.

use quiver_plugin::json::{self, Path, PathError};
use quiver_plugin::{Error, InitCell, Params, Record, Result};

/// What `init` parsed from the parameters.
#[derive(Debug)]
struct Condition {
    path: Path,
    value: String,
}

static CONDITION: InitCell<Condition> = InitCell::new();

impl Condition {
    fn from_params(params: &Params) -> Result<Self> {
        let field = params.require("field")?;
        let path = Path::parse(field).map_err(|e| match e {
            PathError::EmptySegment => Error::new(format!(
                "parameter `field` is `{field}`; expected names joined by single dots"
            )),
            PathError::TooManySegments => Error::new(format!("parameter `field`: {e}")),
        })?;
        let value = params.require("value")?.to_owned();
        Ok(Self { path, value })
    }

    fn matches(&self, value: &[u8]) -> bool {
        json::find(value, &self.path).is_some_and(|found| json::text_equals(found, &self.value))
    }
}

pub fn init(params: &Params) -> Result<()> {
    CONDITION.set(Condition::from_params(params)?)?;
    Ok(())
}

pub fn keep(record: &Record) -> Result<bool> {
    let condition = CONDITION.require()?;
    Ok(record.value.is_some_and(|v| condition.matches(v)))
}

quiver_plugin::init!(init);
quiver_plugin::filter!(keep);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin::{RecordList, RecordOut, call};

    fn condition(field: &str, value: &str) -> Condition {
        Condition::from_params(&Params::from_pairs([("field", field), ("value", value)]))
            .expect("valid parameters")
    }

    #[test]
    fn strings_compare_by_their_decoded_text() {
        let c = condition("user.country", "FR");
        assert!(c.matches(br#"{"user":{"country":"FR","id":1}}"#));
        assert!(c.matches(br#" { "user" : { "country" : "\u0046R" } } "#));
        assert!(!c.matches(br#"{"user":{"country":"fr"}}"#));
        assert!(!c.matches(br#"{"user":{"country":["FR"]}}"#));
        assert!(!c.matches(br#"{"user":"FR"}"#));
        assert!(!c.matches(br#"{"country":"FR"}"#));
    }

    #[test]
    fn numbers_booleans_and_null_compare_as_written() {
        assert!(condition("n", "42").matches(br#"{"n":42}"#));
        assert!(!condition("n", "42").matches(br#"{"n":42.0}"#));
        assert!(condition("n", "1e3").matches(br#"{"n":1e3}"#));
        assert!(!condition("n", "42").matches(br#"{"n":"42x"}"#));
        assert!(
            condition("n", "42").matches(br#"{"n":"42"}"#),
            "a string 42 is text 42"
        );
        assert!(condition("ok", "true").matches(br#"{"ok":true}"#));
        assert!(!condition("ok", "true").matches(br#"{"ok":false}"#));
        assert!(condition("gone", "null").matches(br#"{"gone":null}"#));
    }

    #[test]
    fn a_numeric_segment_indexes_an_array() {
        let c = condition("items.1.sku", "B");
        assert!(c.matches(br#"{"items":[{"sku":"A"},{"sku":"B"}]}"#));
        assert!(!c.matches(br#"{"items":[{"sku":"A"}]}"#));
        assert!(
            condition("items.1.sku", "C").matches(br#"{"items":{"1":{"sku":"C"}}}"#),
            "in an object, a numeric segment names a member"
        );
    }

    #[test]
    fn the_last_of_a_repeated_key_counts() {
        assert!(condition("a", "2").matches(br#"{"a":1,"a":2}"#));
    }

    #[test]
    fn values_that_are_not_json_do_not_match() {
        let c = condition("a", "1");
        for value in [
            &b"not json"[..],
            b"{\"a\":1",
            b"{\"a\":1} trailing",
            b"",
            b"\xff",
        ] {
            assert!(!c.matches(value), "{value:?}");
        }
    }

    #[test]
    fn a_repeated_parent_replaces_what_the_earlier_one_held() {
        assert!(!condition("a.b", "1").matches(br#"{"a":{"b":1},"a":{"c":1}}"#));
        assert!(condition("a.b", "2").matches(br#"{"a":{"b":1},"a":{"b":2}}"#));
    }

    #[test]
    fn parameters_are_checked() {
        let refused = |pairs: &[(&str, &str)]| {
            Condition::from_params(&Params::from_pairs(pairs.iter().copied())).is_err()
        };
        assert!(refused(&[("value", "x")]), "no field");
        assert!(refused(&[("field", "a")]), "no value");
        assert!(
            refused(&[("field", "a..b"), ("value", "x")]),
            "empty segment"
        );
        assert!(refused(&[("field", ""), ("value", "x")]), "empty field");
        assert!(
            !refused(&[("field", "a"), ("value", "")]),
            "an empty value is a value"
        );
    }

    #[test]
    fn the_filter_keeps_matching_records_of_a_batch() {
        init(&Params::from_pairs([
            ("field", "level"),
            ("value", "error"),
        ]))
        .expect("init");
        let values = [
            Some(r#"{"level":"error","msg":"disk"}"#),
            Some(r#"{"level":"info"}"#),
            None,
            Some("plain text"),
            Some(r#"{"level":"error"}"#),
        ];
        let batch: Vec<RecordOut> = values
            .iter()
            .map(|v| RecordOut {
                value: v.map(|s| s.as_bytes().to_vec()),
                ..RecordOut::default()
            })
            .collect();
        let input = RecordList::encode(&batch).expect("encodes");
        let answer = call::filter(&input, keep).expect("answers");
        assert_eq!(answer, [5, 0, 0, 0, 0b1_0001]);
    }
}
