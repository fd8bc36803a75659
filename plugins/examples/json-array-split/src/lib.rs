//! An `array_map` plugin: a record whose value is a JSON array becomes one record per
//! element, each with the element as compact JSON and the input's timestamp, key and
//! headers. An empty array becomes no records. Any other value (another JSON type, not
//! JSON, or no value) passes through as one unchanged record. No parameters.
//!
//! Elements are copied as the record wrote them (numbers keep their digits, objects
//! their key order), without insignificant whitespace.

use quiver_plugin::{Record, RecordOut, Result};
use serde_json::value::RawValue;

fn split(record: &Record) -> Result<Vec<RecordOut>> {
    let elements = record
        .value
        .and_then(|v| serde_json::from_slice::<Vec<&RawValue>>(v).ok());
    let Some(elements) = elements else {
        return Ok(vec![RecordOut::from(record)]);
    };
    // Everything but the value, copied once rather than once per element.
    let base = RecordOut::from(&Record {
        value: None,
        ..*record
    });
    Ok(elements
        .into_iter()
        .map(|element| {
            let mut value = Vec::with_capacity(element.get().len());
            write_compact(element.get(), &mut value);
            base.clone().with_value(value)
        })
        .collect())
}

quiver_plugin::array_map!(split);

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

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin::{RecordList, call};

    fn values(out: &[RecordOut]) -> Vec<Option<&str>> {
        out.iter()
            .map(|r| {
                r.value
                    .as_deref()
                    .map(|v| std::str::from_utf8(v).expect("UTF-8"))
            })
            .collect()
    }

    fn split_value(value: Option<&str>) -> Vec<RecordOut> {
        let record = Record {
            value: value.map(str::as_bytes),
            ..Record::from_value(b"")
        };
        split(&record).expect("never fails")
    }

    #[test]
    fn an_array_becomes_one_record_per_element() {
        let out = split_value(Some(r#"[ {"b": 1, "a": [1, 2]}, "x y", 3.10, null, [] ]"#));
        assert_eq!(
            values(&out),
            [
                Some(r#"{"b":1,"a":[1,2]}"#),
                Some(r#""x y""#),
                Some("3.10"),
                Some("null"),
                Some("[]"),
            ]
        );
    }

    #[test]
    fn an_empty_array_becomes_no_records() {
        assert!(split_value(Some("[]")).is_empty());
        assert!(split_value(Some(" [ ] ")).is_empty());
    }

    #[test]
    fn anything_else_passes_through_unchanged() {
        for value in [
            Some(r#"{"a":[1]}"#),
            Some("\"[1]\""),
            Some("[1,"),
            Some("text"),
            Some(""),
            None,
        ] {
            assert_eq!(values(&split_value(value)), [value], "{value:?}");
        }
    }

    #[test]
    fn elements_keep_the_timestamp_key_and_headers_of_their_record() {
        let batch = [
            RecordOut::default()
                .with_timestamp(5)
                .with_key("k")
                .with_header("h", "v")
                .with_value("[1,2]"),
            RecordOut::default().with_value("[]"),
            RecordOut::default().with_value("plain"),
        ];
        let input = RecordList::encode(&batch).expect("encodes");
        let answer = call::array_map(&input, split).expect("answers");
        let list = RecordList::parse(&answer).expect("a record list");
        let out: Vec<(u32, RecordOut)> = list
            .iter()
            .map(|r| (r.offset_delta, RecordOut::from(&r)))
            .collect();
        let element = |v: &str| {
            RecordOut::default()
                .with_timestamp(5)
                .with_key("k")
                .with_header("h", "v")
                .with_value(v)
        };
        assert_eq!(
            out,
            [
                (0, element("1")),
                (0, element("2")),
                (2, RecordOut::default().with_value("plain")),
            ]
        );
    }
}
