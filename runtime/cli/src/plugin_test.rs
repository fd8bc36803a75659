//! `quiver plugin test`: runs a plugin over records read from a file or stdin, under
//! the broker's default limits and without a broker, and prints what comes out.
//!
//! Records come in one of two forms, chosen with `--format`, or by default from the
//! first non-blank input line ([`RecordFormat::detect`]): a JSON object with a `value`
//! and no field but the record's (`key`, `value`, `headers`, `timestamp`, and the
//! `topic`, `partition`, `offset` of `quiver consume --format json`) means the JSON
//! form; anything else the value form. A plain value that happens to be such an object
//! needs `--format value`.
//! - `value` (default): each input line is a record's value; each record out is
//!   printed as its value on its own line.
//! - `json`: each input line is a JSON object
//!   `{"key":..,"value":..,"headers":{..},"timestamp":..}` (every field optional; the
//!   `topic`, `partition` and `offset` that `quiver consume --format json` prints are
//!   accepted and ignored, so consumed records can be fed back); each record out is
//!   printed as `{"offset":..,"timestamp":..,"key":..,"value":..,"headers":{..}}`,
//!   where `offset` is the position of the input record it came from (0, 1, 2, ...).
//!
//! What this does not do: run a chain of plugins, or the broker's fetch-stage batch
//! rebuilding. Input is cut into batches of [`TEST_BATCH_RECORDS`] records, one call each.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use bytes::Bytes;
use quiver_plugin_host::{Limits, Outcome, PluginEngine};
use quiver_sdk::{DecodedRecord, RecordHeader};

/// Input records passed to the plugin in one call, as one batch would be.
pub const TEST_BATCH_RECORDS: usize = 10_000;
/// The longest input line accepted as one record, as for `quiver produce`.
const LINE_BYTES_MAX: usize = 1024 * 1024;

/// How `plugin test` reads and prints records, as asked on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatChoice {
    /// The JSON form if the first non-blank line is a JSON record, else values.
    Auto,
    /// One value per line, in and out.
    Value,
    /// One JSON object per line, in and out.
    Json,
}

/// The fields a JSON record line may carry.
const JSON_RECORD_FIELDS: [&str; 7] = [
    "key",
    "value",
    "headers",
    "timestamp",
    "topic",
    "partition",
    "offset",
];

/// How `plugin test` reads and prints records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    /// One value per line, in and out.
    Value,
    /// One JSON object per line, in and out: key, value, headers, timestamp.
    Json,
}

impl RecordFormat {
    /// The form a first input line is in: JSON when it is an object with a `value` and
    /// only record fields.
    pub fn detect(first_line: &[u8]) -> Self {
        let record_like =
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(first_line)
                .is_ok_and(|fields| {
                    fields.contains_key("value")
                        && fields
                            .keys()
                            .all(|k| JSON_RECORD_FIELDS.contains(&k.as_str()))
                });
        if record_like { Self::Json } else { Self::Value }
    }
}

/// One input line in the JSON form. Unknown fields are refused, so a typo
/// (`header` for `headers`) is an error rather than a record without headers.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    headers: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    timestamp: Option<i64>,
    // What `quiver consume --format json` prints besides: accepted, not used.
    #[serde(default, rename = "topic")]
    _topic: serde_json::Value,
    #[serde(default, rename = "partition")]
    _partition: serde_json::Value,
    #[serde(default, rename = "offset")]
    _offset: serde_json::Value,
}

/// Runs the plugin in `file` over the records of `input` (stdin when `None`),
/// printing to stdout what it keeps or makes.
pub fn run(
    file: &std::path::Path,
    input: Option<&std::path::Path>,
    params: &[(String, String)],
    choice: FormatChoice,
) -> anyhow::Result<()> {
    let mut format = match choice {
        FormatChoice::Auto => None,
        FormatChoice::Value => Some(RecordFormat::Value),
        FormatChoice::Json => Some(RecordFormat::Json),
    };
    let module = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let engine = PluginEngine::new(Limits::default())?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let plugin = engine
        .compile(&name, &module)
        .with_context(|| format!("{} is not a usable plugin", file.display()))?;
    let mut instance = engine.instantiate(&plugin, params)?;
    let reader: Box<dyn BufRead> = match input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut batch = Vec::with_capacity(TEST_BATCH_RECORDS);
    let mut offset = 0u64;
    let mut lines = reader.split(b'\n');
    let mut line_number = 0u64;
    loop {
        let line = lines.next().transpose().context("cannot read input")?;
        let done = line.is_none();
        if let Some(mut line) = line {
            line_number += 1;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > LINE_BYTES_MAX {
                bail!(
                    "input line {line_number} is {} bytes, over the {LINE_BYTES_MAX}-byte limit",
                    line.len()
                );
            }
            if format.is_none() && !line.iter().all(u8::is_ascii_whitespace) {
                format = Some(RecordFormat::detect(&line));
            }
            let line_format = format.unwrap_or(RecordFormat::Value);
            if let Some(record) = parse_line(line, line_format, offset, now)
                .with_context(|| format!("input line {line_number}"))?
            {
                batch.push(record);
                offset += 1;
            }
        }
        if batch.len() == TEST_BATCH_RECORDS || (done && !batch.is_empty()) {
            let base = offset - batch.len() as u64;
            match instance.run(&batch) {
                Ok(Outcome::Keep(keep)) => {
                    for (record, kept) in batch.iter().zip(keep) {
                        if kept {
                            write_record(&mut out, format.unwrap_or(RecordFormat::Value), record)?;
                        }
                    }
                }
                Ok(Outcome::Records(records)) => {
                    for record in records {
                        let record = DecodedRecord {
                            offset: base + u64::from(record.source),
                            timestamp: record.timestamp,
                            key: record.key,
                            value: record.value,
                            headers: record.headers,
                        };
                        write_record(&mut out, format.unwrap_or(RecordFormat::Value), &record)?;
                    }
                }
                Err(err) => bail!("plugin failed on records {base}..{offset}: {err}"),
            }
            batch.clear();
        }
        if done {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

/// The record one input line describes; `None` for a blank line in the JSON form.
fn parse_line(
    line: Vec<u8>,
    format: RecordFormat,
    offset: u64,
    now: i64,
) -> anyhow::Result<Option<DecodedRecord>> {
    match format {
        RecordFormat::Value => Ok(Some(DecodedRecord {
            offset,
            timestamp: now,
            key: None,
            value: Some(Bytes::from(line)),
            headers: Vec::new(),
        })),
        RecordFormat::Json => {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            let json: JsonRecord = serde_json::from_slice(&line).context(
                "not a JSON record {\"key\":..,\"value\":..,\"headers\":{..},\"timestamp\":..}",
            )?;
            let headers = json
                .headers
                .into_iter()
                .map(|(key, value)| match value {
                    serde_json::Value::String(s) => Ok(RecordHeader {
                        key,
                        value: Some(Bytes::from(s)),
                    }),
                    serde_json::Value::Null => Ok(RecordHeader { key, value: None }),
                    other => bail!("header `{key}` is {other}; a header value is a string or null"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Some(DecodedRecord {
                offset,
                timestamp: json.timestamp.unwrap_or(now),
                key: json.key.map(Bytes::from),
                value: json.value.map(Bytes::from),
                headers,
            }))
        }
    }
}

fn text(bytes: Option<&Bytes>) -> serde_json::Value {
    match bytes {
        Some(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        None => serde_json::Value::Null,
    }
}

/// Prints one record in `format`: the JSON form has the fields, in the order, of
/// `quiver consume --format json` without `topic` and `partition`.
fn write_record(
    out: &mut impl Write,
    format: RecordFormat,
    record: &DecodedRecord,
) -> std::io::Result<()> {
    match format {
        RecordFormat::Value => {
            out.write_all(record.value.as_deref().unwrap_or_default())?;
        }
        RecordFormat::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = record
                .headers
                .iter()
                .map(|h| (h.key.clone(), text(h.value.as_ref())))
                .collect();
            let line = serde_json::json!({
                "offset": record.offset,
                "timestamp": record.timestamp,
                "key": text(record.key.as_ref()),
                "value": text(record.value.as_ref()),
                "headers": headers,
            });
            serde_json::to_writer(&mut *out, &line)?;
        }
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_tells_json_records_from_values() {
        for (line, expected) in [
            (r#"{"value":"a"}"#, RecordFormat::Json),
            (
                r#"{"key":"k","value":null,"headers":{"h":"1"},"timestamp":5}"#,
                RecordFormat::Json,
            ),
            (
                r#"{"topic":"t","partition":0,"offset":3,"timestamp":1,"key":null,"value":"v","headers":{}}"#,
                RecordFormat::Json,
            ),
            // JSON values that are not records: a filter's usual input.
            (r#"{"user":{"country":"NO"}}"#, RecordFormat::Value),
            (r#"{"value":"a","country":"NO"}"#, RecordFormat::Value),
            (r#"{"key":"k"}"#, RecordFormat::Value),
            (r#"["value"]"#, RecordFormat::Value),
            ("ERROR disk full", RecordFormat::Value),
            ("", RecordFormat::Value),
        ] {
            assert_eq!(RecordFormat::detect(line.as_bytes()), expected, "{line}");
        }
    }

    fn json(line: &str) -> anyhow::Result<Option<DecodedRecord>> {
        parse_line(line.as_bytes().to_vec(), RecordFormat::Json, 7, 99)
    }

    #[test]
    fn a_json_line_carries_key_value_headers_and_timestamp() {
        let record = json(r#"{"key":"k","value":"v","headers":{"a":"1","b":null},"timestamp":5}"#)
            .expect("parses")
            .expect("a record");
        assert_eq!(record.offset, 7);
        assert_eq!(record.timestamp, 5);
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(
            record.headers,
            vec![
                RecordHeader {
                    key: "a".into(),
                    value: Some(Bytes::from_static(b"1"))
                },
                RecordHeader {
                    key: "b".into(),
                    value: None
                },
            ]
        );
        let bare = json(r#"{"value":"only"}"#)
            .expect("parses")
            .expect("a record");
        assert_eq!(bare.timestamp, 99, "no timestamp: now");
        assert_eq!(bare.key, None);
        assert!(bare.headers.is_empty());
        assert!(
            json("   ").expect("blank").is_none(),
            "blank lines are skipped"
        );
    }

    #[test]
    fn what_consume_prints_is_accepted_and_mistakes_are_refused() {
        let consumed = r#"{"topic":"t","partition":0,"offset":3,"timestamp":1,"key":null,"value":"x","headers":{}}"#;
        assert!(json(consumed).expect("parses").is_some());
        let typo = json(r#"{"value":"x","header":{"a":"1"}}"#).expect_err("refused");
        assert!(
            format!("{typo:#}").contains("unknown field `header`"),
            "{typo:#}"
        );
        let number = json(r#"{"value":"x","headers":{"a":1}}"#).expect_err("refused");
        assert!(
            format!("{number:#}").contains("header `a` is 1"),
            "{number:#}"
        );
        assert!(json("plain text").is_err());
    }

    #[test]
    fn a_record_prints_as_its_value_or_as_json() {
        let record = DecodedRecord {
            offset: 2,
            timestamp: 10,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![RecordHeader {
                key: "h".into(),
                value: Some(Bytes::from_static(b"x")),
            }],
        };
        let mut out = Vec::new();
        write_record(&mut out, RecordFormat::Value, &record).expect("write");
        write_record(&mut out, RecordFormat::Json, &record).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            "v\n{\"offset\":2,\"timestamp\":10,\"key\":\"k\",\"value\":\"v\",\"headers\":{\"h\":\"x\"}}\n"
        );
    }
}
