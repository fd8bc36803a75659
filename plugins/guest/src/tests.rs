//! Host-side tests of the ABI layouts. Inputs are encoded here straight from ABI.md
//! (not with the crate's own writer), and answers are checked byte for byte.

use alloc::borrow::ToOwned;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::abi::code;
use crate::{
    CallError, Error, HeaderOut, InitCell, NotInitialized, ParamError, Params, Record, RecordList,
    RecordOut, Result, call,
};

/// One input record as the host describes it.
struct In<'a> {
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

fn value(v: &str) -> In<'_> {
    In {
        timestamp: 1_000,
        key: None,
        value: Some(v.as_bytes()),
        headers: Vec::new(),
    }
}

fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
}

/// The record list of ABI.md, with the given offset_deltas.
fn encode(records: &[(u32, &In<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (delta, r) in records {
        out.extend_from_slice(&delta.to_le_bytes());
        out.extend_from_slice(&r.timestamp.to_le_bytes());
        put_optional(&mut out, r.key);
        put_optional(&mut out, r.value);
        out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
        for (name, value) in &r.headers {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            put_optional(&mut out, *value);
        }
    }
    out
}

/// A batch as the host sends it: offset_delta is the position.
fn batch(records: &[In<'_>]) -> Vec<u8> {
    let numbered: Vec<(u32, &In<'_>)> = (0u32..).zip(records).collect();
    encode(&numbered)
}

fn mixed_batch() -> Vec<u8> {
    batch(&[
        In {
            timestamp: -5,
            key: Some(b"k0"),
            value: Some(b"hello"),
            headers: vec![
                ("trace", Some(b"abc")),
                ("empty", None),
                ("trace", Some(b"")),
            ],
        },
        In {
            timestamp: i64::MAX,
            key: Some(b""),
            value: None,
            headers: Vec::new(),
        },
        In {
            timestamp: 0,
            key: None,
            value: Some(b""),
            headers: Vec::new(),
        },
    ])
}

#[test]
fn a_record_list_parses_into_views_of_every_field() {
    let input = mixed_batch();
    let list = RecordList::parse(&input).expect("parses");
    assert_eq!(list.len(), 3);
    let records: Vec<Record<'_>> = list.iter().collect();
    assert_eq!(records.len(), 3);

    let first = &records[0];
    assert_eq!(first.offset_delta, 0);
    assert_eq!(first.timestamp, -5);
    assert_eq!(first.key, Some(&b"k0"[..]));
    assert_eq!(first.value, Some(&b"hello"[..]));
    let headers: Vec<(&str, Option<&[u8]>)> =
        first.headers.iter().map(|h| (h.name, h.value)).collect();
    assert_eq!(
        headers,
        vec![
            ("trace", Some(&b"abc"[..])),
            ("empty", None),
            ("trace", Some(&b""[..]))
        ]
    );
    assert_eq!(first.headers.len(), 3);
    assert_eq!(
        first.headers.get("trace").map(|h| h.value),
        Some(Some(&b"abc"[..])),
        "get finds the first of a repeated name"
    );
    assert!(first.headers.get("missing").is_none());

    // An empty key or value is not an absent one.
    assert_eq!(records[1].offset_delta, 1);
    assert_eq!(records[1].timestamp, i64::MAX);
    assert_eq!(records[1].key, Some(&b""[..]));
    assert_eq!(records[1].value, None);
    assert!(records[1].headers.is_empty());
    assert_eq!(records[2].key, None);
    assert_eq!(records[2].value, Some(&b""[..]));
}

#[test]
fn an_empty_batch_parses() {
    let input = batch(&[]);
    assert_eq!(input, [0, 0, 0, 0]);
    let list = RecordList::parse(&input).expect("parses");
    assert!(list.is_empty());
    assert_eq!(list.iter().count(), 0);
}

#[test]
fn every_truncation_of_a_record_list_is_refused() {
    let input = mixed_batch();
    for cut in 0..input.len() {
        assert!(
            RecordList::parse(&input[..cut]).is_err(),
            "a list cut to {cut} of {} bytes parsed",
            input.len()
        );
    }
}

#[test]
fn malformed_record_lists_are_refused_with_a_reason() {
    let reason = |bytes: &[u8]| RecordList::parse(bytes).expect_err("refused").reason;

    let mut trailing = mixed_batch();
    trailing.push(0);
    assert_eq!(reason(&trailing), "bytes after the last record");

    // count = u32::MAX with 4 bytes behind it.
    assert_eq!(
        reason(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        "record count exceeds what the input can hold"
    );

    // A key length of -2: only -1 means "no key".
    let mut negative_key = batch(&[value("v")]);
    negative_key[16..20].copy_from_slice(&(-2i32).to_le_bytes());
    assert_eq!(reason(&negative_key), "key length is missing or negative");

    // A value length of i32::MIN.
    let mut negative_value = batch(&[value("v")]);
    negative_value[20..24].copy_from_slice(&i32::MIN.to_le_bytes());
    assert_eq!(
        reason(&negative_value),
        "value length is missing or negative"
    );

    // A value length pointing past the end.
    let mut long_value = batch(&[value("v")]);
    long_value[20..24].copy_from_slice(&1_000i32.to_le_bytes());
    assert_eq!(reason(&long_value), "value runs past the end of the input");

    // A header name that is not UTF-8.
    let mut bad_name = batch(&[In {
        headers: vec![("\u{e9}", None)],
        ..value("v")
    }]);
    let at = bad_name.len() - 4 - 2; // the name's two UTF-8 bytes, before its value length
    bad_name[at] = 0xff;
    assert_eq!(reason(&bad_name), "header name is not UTF-8");

    // A header count larger than the headers present.
    let mut many_headers = batch(&[value("v")]);
    let at = many_headers.len() - 4;
    many_headers[at..].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(
        reason(&many_headers),
        "header name length runs past the end of the input"
    );
}

fn keep_every_third(record: &Record<'_>) -> Result<bool> {
    Ok(record.offset_delta.is_multiple_of(3))
}

#[test]
fn a_filter_answers_with_a_count_and_an_lsb_first_bitmap() {
    let records: Vec<In<'_>> = (0..10).map(|_| value("x")).collect();
    let answer = call::filter(&batch(&records), keep_every_third).expect("answers");
    // Records 0, 3, 6, 9 stay: byte 0 has bits 0, 3, 6; byte 1 has bit 1 (9 % 8).
    assert_eq!(answer, [10, 0, 0, 0, 0b0100_1001, 0b0000_0010]);

    let eight: Vec<In<'_>> = (0..8).map(|_| value("x")).collect();
    let answer = call::filter(&batch(&eight), |_| Ok(true)).expect("answers");
    assert_eq!(
        answer,
        [8, 0, 0, 0, 0xff],
        "8 records need exactly one byte"
    );

    let answer = call::filter(&batch(&[]), |_| Ok(true)).expect("answers");
    assert_eq!(answer, [0, 0, 0, 0], "no records, no bitmap bytes");
}

#[test]
fn the_filter_bitmap_follows_record_positions_not_input_offset_deltas() {
    // The ABI says offset_delta is the position; the answer's bits are positional
    // either way, so a host that numbered differently still gets a sound answer.
    let a = value("a");
    let b = value("b");
    let input = encode(&[(7, &a), (7, &b)]);
    let answer = call::filter(&input, |r| Ok(r.value == Some(b"b"))).expect("answers");
    assert_eq!(answer, [2, 0, 0, 0, 0b10]);
}

fn shout(record: &Record<'_>) -> Result<RecordOut> {
    let value = record.value.map(<[u8]>::to_ascii_uppercase);
    let out = RecordOut::from(record).with_header("shouted", "yes");
    Ok(match value {
        Some(v) => out.with_value(v),
        None => out,
    })
}

#[test]
fn a_map_answers_with_a_record_list_in_input_order() {
    let input = mixed_batch();
    let answer = call::map(&input, shout).expect("answers");
    let expected = batch(&[
        In {
            timestamp: -5,
            key: Some(b"k0"),
            value: Some(b"HELLO"),
            headers: vec![
                ("trace", Some(b"abc")),
                ("empty", None),
                ("trace", Some(b"")),
                ("shouted", Some(b"yes")),
            ],
        },
        In {
            timestamp: i64::MAX,
            key: Some(b""),
            value: None,
            headers: vec![("shouted", Some(b"yes"))],
        },
        In {
            timestamp: 0,
            key: None,
            value: Some(b""),
            headers: vec![("shouted", Some(b"yes"))],
        },
    ]);
    assert_eq!(answer, expected);
}

#[test]
fn a_filter_map_names_the_input_records_it_keeps() {
    let records: Vec<In<'_>> = ["a", "b", "c", "d", "e"].into_iter().map(value).collect();
    let answer = call::filter_map(&batch(&records), |r| {
        Ok((r.offset_delta % 2 == 0).then(|| RecordOut::from(r).with_key("even")))
    })
    .expect("answers");
    let even = |v: &'static str| In {
        key: Some(b"even"),
        ..value(v)
    };
    let (a, c, e) = (even("a"), even("c"), even("e"));
    assert_eq!(answer, encode(&[(0, &a), (2, &c), (4, &e)]));

    let none = call::filter_map(&batch(&records), |_| Ok(None)).expect("answers");
    assert_eq!(none, [0, 0, 0, 0]);
}

#[test]
fn an_array_map_repeats_the_source_offset_delta_of_each_output() {
    let records: Vec<In<'_>> = ["zero", "one", "two"].into_iter().map(value).collect();
    // Record i becomes i copies: none for record 0.
    let answer = call::array_map(&batch(&records), |r| {
        Ok((0..r.offset_delta)
            .map(|n| RecordOut::from(r).with_value(n.to_string()))
            .collect())
    })
    .expect("answers");
    let (one_0, two_0, two_1) = (value("0"), value("0"), value("1"));
    assert_eq!(answer, encode(&[(1, &one_0), (2, &two_0), (2, &two_1)]));
}

#[test]
fn record_list_encode_round_trips_through_parse() {
    let out = vec![
        RecordOut::default()
            .with_timestamp(42)
            .with_key("k")
            .with_value("v")
            .with_header("h", "1"),
        RecordOut {
            headers: vec![HeaderOut {
                name: "null".into(),
                value: None,
            }],
            ..RecordOut::default()
        },
    ];
    let encoded = RecordList::encode(&out).expect("encodes");
    let list = RecordList::parse(&encoded).expect("parses");
    let back: Vec<RecordOut> = list.iter().map(|r| RecordOut::from(&r)).collect();
    assert_eq!(back, out);
    let deltas: Vec<u32> = list.iter().map(|r| r.offset_delta).collect();
    assert_eq!(deltas, [0, 1]);
}

#[test]
fn a_plugin_error_fails_the_batch_with_code_minus_1() {
    let input = batch(&[value("ok"), value("bad")]);
    let err = call::filter(&input, |r| {
        if r.value == Some(b"bad") {
            Err(Error::new("cannot judge this record"))
        } else {
            Ok(true)
        }
    })
    .expect_err("fails");
    assert_eq!(
        err,
        CallError::Plugin(Error::new("cannot judge this record"))
    );
    assert_eq!(err.code(), -1);
    assert_eq!(code::PLUGIN_ERROR, -1);
}

#[test]
fn malformed_input_fails_every_kind_with_code_minus_2() {
    let truncated = &mixed_batch()[..10];
    let codes = [
        call::filter(truncated, |_| Ok(true)).map(drop),
        call::map(truncated, |r| Ok(RecordOut::from(r))).map(drop),
        call::filter_map(truncated, |_| Ok(None)).map(drop),
        call::array_map(truncated, |_| Ok(Vec::new())).map(drop),
        call::init(truncated, |_| Ok(())),
    ]
    .map(|result| result.err().map(|e| e.code()));
    assert_eq!(codes, [Some(code::MALFORMED_INPUT); 5]);
    assert_eq!(code::MALFORMED_INPUT, -2);
}

#[test]
fn error_codes_are_distinct_and_never_reused() {
    // Retired codes stay retired: a new meaning gets a new number.
    assert_eq!(
        [
            code::PLUGIN_ERROR,
            code::MALFORMED_INPUT,
            code::ANSWER_TOO_LARGE,
            code::OUT_OF_MEMORY
        ],
        [-1, -2, -3, -4]
    );
    assert_eq!(
        CallError::Encode(crate::EncodeError::TooLarge { what: "x" }).code(),
        code::ANSWER_TOO_LARGE
    );
    assert_eq!(
        CallError::Encode(crate::EncodeError::OutOfMemory).code(),
        code::OUT_OF_MEMORY
    );
}

fn params_input(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

#[test]
fn params_parse_and_answer_get_require_and_flag() {
    let input = params_input(&[
        (b"field", b"user.country"),
        (b"invert", b"true"),
        (b"field", b"last.wins"),
        (b"empty", b""),
    ]);
    let params = Params::parse(&input).expect("parses");
    assert_eq!(params.len(), 4);
    assert_eq!(params.get("field"), Some("last.wins"));
    assert_eq!(params.get("empty"), Some(""));
    assert_eq!(params.get("missing"), None);
    assert_eq!(params.require("invert"), Ok("true"));
    assert_eq!(
        params.require("pattern"),
        Err(ParamError::Missing {
            key: "pattern".into()
        })
    );
    assert_eq!(params.flag("invert"), Ok(true));
    assert_eq!(params.flag("absent"), Ok(false));
    assert!(matches!(
        params.flag("field"),
        Err(ParamError::Invalid { .. })
    ));
    assert_eq!(Params::parse(&params_input(&[])), Ok(Params::default()));
}

#[test]
fn malformed_params_are_refused() {
    let good = params_input(&[(b"k", b"v")]);
    for cut in 0..good.len() {
        assert!(Params::parse(&good[..cut]).is_err(), "cut to {cut}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(Params::parse(&trailing).is_err());
    assert!(Params::parse(&params_input(&[(b"k", b"\xff")])).is_err());
    assert!(
        Params::parse(&[0xff, 0xff, 0xff, 0xff]).is_err(),
        "lying count"
    );
}

#[test]
fn init_hands_parsed_params_to_the_plugin_and_reports_refusal() {
    let input = params_input(&[(b"pattern", b"a+")]);
    let mut seen = String::new();
    call::init(&input, |p| {
        seen = p.require("pattern")?.to_owned();
        Ok(())
    })
    .expect("accepts");
    assert_eq!(seen, "a+");
    let refused = call::init(&params_input(&[]), |p| {
        p.require("pattern").map(drop).map_err(Error::from)
    });
    assert_eq!(refused.err().map(|e| e.code()), Some(code::PLUGIN_ERROR));
}

#[test]
fn an_init_cell_is_set_once_and_read_after() {
    let cell: InitCell<String> = InitCell::new();
    assert_eq!(cell.get(), None);
    assert_eq!(cell.require(), Err(NotInitialized));
    cell.set("ready".into()).expect("first set");
    assert!(cell.set("again".into()).is_err(), "second set");
    assert_eq!(cell.get().map(String::as_str), Some("ready"));
    assert_eq!(cell.require().map(String::as_str), Ok("ready"));
}

#[test]
fn record_out_builders_replace_what_they_name() {
    let input = mixed_batch();
    let list = RecordList::parse(&input).expect("parses");
    let first = list.iter().next().expect("a record");
    let out = RecordOut::from(&first)
        .with_header("trace", "new")
        .without_key()
        .without_value()
        .with_timestamp(9);
    assert_eq!(out.timestamp, 9);
    assert_eq!(out.key, None);
    assert_eq!(out.value, None);
    let names: Vec<(&str, Option<&[u8]>)> = out
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_deref()))
        .collect();
    assert_eq!(names, [("empty", None), ("trace", Some(&b"new"[..]))]);
}

#[test]
fn errors_convert_with_their_sources() {
    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl core::fmt::Display for Outer {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("outer")
        }
    }
    impl core::fmt::Display for Inner {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("inner")
        }
    }
    impl core::error::Error for Outer {
        fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl core::error::Error for Inner {}
    assert_eq!(Error::from(Outer(Inner)).message(), "outer: inner");
    assert_eq!(
        Error::from(ParamError::Missing { key: "k".into() }).message(),
        "parameter `k` is required"
    );
}

// The macros expand natively too (exports are wasm32-only): this checks that they
// accept the documented signatures, including functions named like the exports.
mod macro_signatures {
    use crate::{Params, Record, RecordOut, Result};
    use alloc::vec::Vec;

    fn filter(_: &Record) -> Result<bool> {
        Ok(true)
    }
    fn map(r: &Record) -> Result<RecordOut> {
        Ok(RecordOut::from(r))
    }
    fn filter_map(_: &Record) -> Result<Option<RecordOut>> {
        Ok(None)
    }
    fn array_map(_: &Record) -> Result<Vec<RecordOut>> {
        Ok(Vec::new())
    }
    fn init(_: &Params) -> Result<()> {
        Ok(())
    }

    crate::filter!(filter);
    crate::map!(self::map);
    crate::filter_map!(filter_map);
    crate::array_map!(array_map);
    crate::init!(init);
}
