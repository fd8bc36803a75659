//! A `filter_map` plugin: turns each JSON object value into an object with only the
//! fields named by `fields` (comma-separated top-level names), in that order; fields
//! the record lacks are left out. Field values are copied as the record wrote them
//! (numbers keep their digits), without insignificant whitespace.
//!
//! A value that is not a JSON object (another JSON type, not JSON, or no value) is
//! dropped by default, so consumers only ever see projected objects; `non_object=keep`
//! passes such records through unchanged, and `non_object=fail` fails the batch
//! (code -1), leaving the decision to the attachment's `on_error` policy.
//!
//! Each value is read with the SDK's streaming JSON reader (`quiver_plugin::json`):
//! one validating pass over the object's members, no map of its keys.

use quiver_plugin::json;
use quiver_plugin::{Error, InitCell, ParamError, Params, Record, RecordOut, Result};

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
                fields.push((name.to_owned(), json_string(name)));
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
    fn project(&self, value: &[u8]) -> Option<Vec<u8>> {
        // Each listed field's value; a repeated key: the last one counts, as in most
        // JSON readers.
        let mut found: Vec<Option<&[u8]>> = vec![None; self.fields.len()];
        let object = json::for_each_member(value, |key, member| {
            for (slot, (name, _)) in found.iter_mut().zip(&self.fields) {
                if json::string_equals(key, name) {
                    *slot = Some(member);
                }
            }
        });
        if !object {
            return None;
        }
        let mut out = Vec::with_capacity(value.len().min(4096));
        out.push(b'{');
        for ((_, key), member) in self.fields.iter().zip(found) {
            let Some(member) = member else {
                continue;
            };
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            write_compact(member, &mut out);
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

/// `name` as a JSON string token, escaped as serde_json writes it: `"` and `\`, and
/// control characters (short forms where JSON has them).
fn json_string(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Copies valid JSON text without the whitespace between tokens.
fn write_compact(json: &[u8], out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
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
    fn the_last_of_a_repeated_key_counts() {
        assert_eq!(
            projected("a", r#"{"a":1,"b":2,"\u0061":3}"#).as_deref(),
            Some(r#"{"a":3}"#)
        );
    }

    #[test]
    fn field_names_are_encoded_as_serde_json_writes_them() {
        let cases = [
            ("plain", r#""plain""#),
            ("say \"hi\"", r#""say \"hi\"""#),
            ("back\\slash", r#""back\\slash""#),
            (
                "tab\tnew\nline\u{1}\u{1f}",
                r#""tab\tnew\nline\u0001\u001f""#,
            ),
            ("été/😀", r#""été/😀""#),
        ];
        for (name, encoded) in cases {
            assert_eq!(json_string(name), encoded, "{name:?}");
            assert!(
                json::string_equals(encoded.as_bytes(), name),
                "{encoded} decodes to {name:?}"
            );
        }
    }

    #[test]
    fn only_objects_are_projected() {
        for json in [
            "[1,2]",
            "\"a\"",
            "3",
            "null",
            "not json",
            "{\"a\":1",
            "",
            "{\"a\":1} x",
            "{\"a\":1,}",
            "{\"\\ud800\":1,\"a\":2}",
        ] {
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
