//! A `filter_map` plugin: turns each JSON object value into an object with only the
//! fields named by `fields` (comma-separated top-level names), in that order; fields
//! the record lacks are left out. Field values are copied as the record wrote them
//! (numbers keep their digits), without insignificant whitespace.
//!
//! A value that is not a JSON object (another JSON type, not JSON, or no value) is
//! dropped by default, so consumers only ever see projected objects; `non_object=keep`
//! passes such records through unchanged, and `non_object=fail` fails the batch
//! (code -1), leaving the decision to the attachment's `on_error` policy.

use std::collections::BTreeMap;

use quiver_plugin::{Error, InitCell, ParamError, Params, Record, RecordOut, Result};
use serde_json::value::RawValue;

/// What to do with a record whose value is not a JSON object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NonObject {
    Drop,
    Keep,
    Fail,
}

#[derive(Debug)]
struct Projection {
    /// Field names as given, each with its JSON-encoded key (`"name"`), in order.
    fields: Vec<(String, String)>,
    non_object: NonObject,
}

static PROJECTION: InitCell<Projection> = InitCell::new();

impl Projection {
    fn from_params(params: &Params) -> Result<Self> {
        let list = params.require("fields")?;
        let mut fields: Vec<(String, String)> = Vec::new();
        for name in list.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(Error::new(format!(
                    "parameter `fields` is `{list}`; expected field names separated by commas"
                )));
            }
            // Naming a field twice would write a duplicate key.
            if fields.iter().all(|(known, _)| known != name) {
                fields.push((name.to_owned(), serde_json::to_string(name)?));
            }
        }
        let non_object = match params.get("non_object") {
            None | Some("drop") => NonObject::Drop,
            Some("keep") => NonObject::Keep,
            Some("fail") => NonObject::Fail,
            Some(other) => {
                return Err(ParamError::Invalid {
                    key: "non_object".into(),
                    value: other.into(),
                    expected: "drop, keep or fail",
                }
                .into());
            }
        };
        Ok(Self { fields, non_object })
    }

    /// The projected object, or `None` when `json` is not a JSON object.
    fn project(&self, json: &[u8]) -> Option<Vec<u8>> {
        // A repeated key: the last one counts, as in most JSON readers.
        let object: BTreeMap<String, &RawValue> = serde_json::from_slice(json).ok()?;
        let mut out = Vec::with_capacity(json.len().min(4096));
        out.push(b'{');
        for (name, key) in &self.fields {
            let Some(value) = object.get(name) else {
                continue;
            };
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            write_compact(value.get(), &mut out);
        }
        out.push(b'}');
        Some(out)
    }

    fn apply(&self, record: &Record) -> Result<Option<RecordOut>> {
        if let Some(projected) = record.value.and_then(|v| self.project(v)) {
            return Ok(Some(
                RecordOut::from(&Record {
                    value: None,
                    ..*record
                })
                .with_value(projected),
            ));
        }
        match self.non_object {
            NonObject::Drop => Ok(None),
            NonObject::Keep => Ok(Some(RecordOut::from(record))),
            NonObject::Fail => Err(Error::new("record value is not a JSON object")),
        }
    }
}

/// Copies valid JSON text without the whitespace between tokens.
fn write_compact(json: &str, out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        out.push(b);
    }
}

fn init(params: &Params) -> Result<()> {
    PROJECTION.set(Projection::from_params(params)?)?;
    Ok(())
}

fn project(record: &Record) -> Result<Option<RecordOut>> {
    PROJECTION.require()?.apply(record)
}

quiver_plugin::init!(init);
quiver_plugin::filter_map!(project);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin::{RecordList, call};

    fn projection(pairs: &[(&str, &str)]) -> Result<Projection> {
        Projection::from_params(&Params::from_pairs(pairs.iter().copied()))
    }

    fn projected(fields: &str, json: &str) -> Option<String> {
        let p = projection(&[("fields", fields)]).expect("valid");
        p.project(json.as_bytes())
            .map(|v| String::from_utf8(v).expect("UTF-8"))
    }

    #[test]
    fn keeps_the_listed_fields_in_the_listed_order() {
        assert_eq!(
            projected("b, a", r#"{"a":1,"b":{"x": [1, 2]},"c":3}"#).as_deref(),
            Some(r#"{"b":{"x":[1,2]},"a":1}"#)
        );
    }

    #[test]
    fn missing_fields_are_left_out() {
        assert_eq!(
            projected("a,z", r#"{"a":"x"}"#).as_deref(),
            Some(r#"{"a":"x"}"#)
        );
        assert_eq!(projected("z", r#"{"a":"x"}"#).as_deref(), Some("{}"));
    }

    #[test]
    fn values_are_copied_as_written_except_whitespace() {
        assert_eq!(
            projected("n,s", "{\"n\" : 1.50e2 , \"s\" : \"a  \\\" b\\\\\" }").as_deref(),
            Some(r#"{"n":1.50e2,"s":"a  \" b\\"}"#)
        );
        assert_eq!(
            projected("big", r#"{"big":123456789012345678901234567890}"#).as_deref(),
            Some(r#"{"big":123456789012345678901234567890}"#),
            "no float rounding"
        );
    }

    #[test]
    fn names_that_need_escaping_are_escaped() {
        assert_eq!(
            projected("say \"hi\"", r#"{"say \"hi\"":true}"#).as_deref(),
            Some(r#"{"say \"hi\"":true}"#)
        );
    }

    #[test]
    fn only_objects_are_projected() {
        for json in ["[1,2]", "\"a\"", "3", "null", "not json", "{\"a\":1", ""] {
            assert_eq!(projected("a", json), None, "{json}");
        }
    }

    #[test]
    fn non_objects_are_dropped_kept_or_fail_as_configured() {
        let text = RecordOut::default().with_key("k").with_value("plain text");
        let input = RecordList::encode(std::slice::from_ref(&text)).expect("encodes");
        let record = RecordList::parse(&input)
            .expect("parses")
            .iter()
            .next()
            .expect("one record");
        let apply = |policy: &str| {
            projection(&[("fields", "a"), ("non_object", policy)])
                .expect("valid")
                .apply(&record)
        };
        assert_eq!(apply("drop"), Ok(None));
        assert_eq!(apply("keep"), Ok(Some(text)));
        assert!(apply("fail").is_err());
        assert!(projection(&[("fields", "a"), ("non_object", "explode")]).is_err());
    }

    #[test]
    fn parameters_are_checked() {
        assert!(projection(&[]).is_err(), "no fields");
        assert!(projection(&[("fields", "a,,b")]).is_err(), "empty name");
        assert!(projection(&[("fields", " ")]).is_err(), "blank");
        let p = projection(&[("fields", "a, b ,a")]).expect("valid");
        let names: Vec<&str> = p.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"], "trimmed, repeats once");
    }

    #[test]
    fn the_plugin_projects_a_batch_and_drops_the_rest() {
        init(&Params::from_pairs([("fields", "id")])).expect("init");
        let batch = [
            RecordOut::default()
                .with_value(r#"{"id":1,"secret":"x"}"#)
                .with_header("h", "v"),
            RecordOut::default().with_value("[]"),
            RecordOut::default()
                .with_value(r#"{"id":3}"#)
                .with_timestamp(9),
        ];
        let input = RecordList::encode(&batch).expect("encodes");
        let answer = call::filter_map(&input, project).expect("answers");
        let list = RecordList::parse(&answer).expect("a record list");
        let out: Vec<(u32, RecordOut)> = list
            .iter()
            .map(|r| (r.offset_delta, RecordOut::from(&r)))
            .collect();
        assert_eq!(
            out,
            [
                (
                    0,
                    RecordOut::default()
                        .with_value(r#"{"id":1}"#)
                        .with_header("h", "v")
                ),
                (
                    2,
                    RecordOut::default()
                        .with_value(r#"{"id":3}"#)
                        .with_timestamp(9)
                ),
            ]
        );
    }
}
