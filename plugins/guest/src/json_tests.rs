//! Tests of the streaming JSON lookup: tables of what it finds and refuses, and a
//! seeded comparison with a lookup over serde_json's parser (the json-field-filter
//! example's implementation before the streaming one) as the oracle.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use serde_json::value::RawValue;

use crate::json::{self, DEPTH_MAX, PATH_SEGMENTS_MAX, Path, PathError};

fn found<'j>(json: &'j str, path: &str) -> Option<&'j str> {
    let path = Path::parse(path).expect("a valid path");
    json::find(json.as_bytes(), &path).map(|v| core::str::from_utf8(v).expect("UTF-8"))
}

#[test]
fn find_returns_the_text_of_the_value_as_written() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        (r#"{"a":1}"#, "a", Some("1")),
        (r#" { "a" : -1.5e+3 } "#, "a", Some("-1.5e+3")),
        (r#"{"a":"x\"y"}"#, "a", Some(r#""x\"y""#)),
        (r#"{"a":{"b" : [1, 2]}}"#, "a", Some(r#"{"b" : [1, 2]}"#)),
        (r#"{"a":{"b":[1,{"c":null}]}}"#, "a.b.1.c", Some("null")),
        (r#"{"a":{"b":[1,{"c":null}]}}"#, "a.b.2", None),
        (r#"{"a":{"b":[1,{"c":null}]}}"#, "a.b.x", None),
        (r#"{"a":{"1":true}}"#, "a.1", Some("true")),
        (r#"{"a":[false]}"#, "a.0", Some("false")),
        (r#"{"a":"text"}"#, "a.b", None),
        (r#"{"b":1}"#, "a", None),
        (r#"[1,2,3]"#, "2", Some("3")),
        (r#""a""#, "a", None),
        (r#"{}"#, "a", None),
        (r#"[]"#, "0", None),
        (r#"{"\u0061":1}"#, "a", Some("1")),
        (r#"{"\u00e9t\u00e9":1}"#, "été", Some("1")),
        (r#"{"\ud83d\ude00":2}"#, "😀", Some("2")),
        (r#"{"a\\b":3}"#, r"a\b", Some("3")),
    ];
    for (json, path, expected) in cases {
        assert_eq!(found(json, path), *expected, "{json} at {path}");
    }
}

#[test]
fn the_last_of_a_repeated_key_counts_at_every_level() {
    assert_eq!(found(r#"{"a":1,"a":2}"#, "a"), Some("2"));
    assert_eq!(found(r#"{"a":{"b":1},"a":{"b":2}}"#, "a.b"), Some("2"));
    assert_eq!(
        found(r#"{"a":{"b":1},"a":{"c":2}}"#, "a.b"),
        None,
        "the last `a` has no `b`"
    );
    assert_eq!(found(r#"{"a":{"b":1},"a":5}"#, "a.b"), None);
    assert_eq!(found(r#"{"a":{"b":1,"b":3},"x":0}"#, "a.b"), Some("3"));
    assert_eq!(found(r#"{"\u0061":1,"a":2,"\u0061":3}"#, "a"), Some("3"));
}

/// Text serde_json refuses, each of which must have no fields.
const MALFORMED: &[&str] = &[
    "",
    " ",
    "not json",
    r#"{"a":1"#,
    r#"{"a":1} trailing"#,
    r#"{"a":1}}"#,
    r#"{"a":1,}"#,
    r#"{"a" 1}"#,
    r#"{"a":}"#,
    r#"{a:1}"#,
    r#"{"a":1 "b":2}"#,
    r#"{,"a":1}"#,
    r#"{"a":[1,]}"#,
    r#"{"a":[1 2]}"#,
    r#"{"a":[1}"#,
    r#"{"a":{"b":1]}"#,
    r#"{"a":01}"#,
    r#"{"a":-}"#,
    r#"{"a":1.}"#,
    r#"{"a":.5}"#,
    r#"{"a":1e}"#,
    r#"{"a":1e+}"#,
    r#"{"a":+1}"#,
    r#"{"a":tru}"#,
    r#"{"a":nul}"#,
    r#"{"a":True}"#,
    r#"{"a":"x}"#,
    r#"{"a":"\x"}"#,
    r#"{"a":"\u12"}"#,
    r#"{"a":"\u12G4"}"#,
    "{\"a\":\"tab\there\"}",
    "{\"a\":\"nl\nhere\"}",
    "{\"a\":1,\"z\":\"\u{1}\"}",
    r#"{"a":1}{"a":1}"#,
    r#"{"a":1},"#,
    r#"{"\ud800":1,"a":2}"#,
    r#"{"a":1,"\udc00":2}"#,
];

#[test]
fn text_that_is_not_json_has_no_fields() {
    for json in MALFORMED {
        assert!(
            serde_json::from_str::<&RawValue>(json).is_err()
                || oracle_find(json.as_bytes(), &["a"]).is_none(),
            "the oracle reads {json:?}, so this case tests nothing"
        );
        assert_eq!(found(json, "a"), None, "{json:?}");
    }
    for bytes in [
        &b"{\"a\":\"\xff\"}"[..],
        b"{\"a\":\"\xc3\"}",
        b"{\"a\":\"\xc0\xaf\"}",
        b"{\"a\":\"\xed\xa0\x80\"}",
        b"{\"a\":\"\xf4\x90\x80\x80\"}",
        b"{\"a\":1,\"\xe9\":2}",
        b"\xff",
    ] {
        let path = Path::parse("a").expect("valid");
        assert_eq!(json::find(bytes, &path), None, "{bytes:?}");
    }
}

#[test]
fn a_lone_surrogate_key_makes_an_object_on_the_path_unreadable() {
    // As a parser that decodes every key of the object would find it; off the path,
    // keys are only checked for JSON's escape syntax.
    assert_eq!(found(r#"{"a":{"\ud800":0,"b":1}}"#, "a.b"), None);
    assert_eq!(found(r#"{"a":{"b":1},"z":{"\ud800":0}}"#, "a.b"), Some("1"));
    assert_eq!(found(r#"{"a":"\ud800"}"#, "a"), Some(r#""\ud800""#));
    assert_eq!(
        found(r#"{"a":{"\ud800":0,"b":1},"a":{"b":2}}"#, "a.b"),
        Some("2"),
        "only the last of a repeated key is descended into"
    );
}

#[test]
fn nesting_is_read_to_depth_max_and_no_deeper() {
    let nested = |levels: usize| {
        let mut text = String::from(r#"{"a":1,"deep":"#);
        text.push_str(&"[".repeat(levels));
        text.push_str(&"]".repeat(levels));
        text.push('}');
        text
    };
    // The object holding `deep` is one level; `skip_value` counts the arrays.
    assert_eq!(found(&nested(DEPTH_MAX), "a"), Some("1"));
    assert_eq!(found(&nested(DEPTH_MAX + 1), "a"), None);
    let unbalanced = format!(r#"{{"a":1,"deep":{}{}}}"#, "[".repeat(70), "]".repeat(69));
    assert_eq!(found(&unbalanced, "a"), None);
    let mismatched = format!(
        r#"{{"a":1,"deep":{}{}]}}}}"#,
        "[{\"x\":".repeat(40),
        "}]".repeat(39)
    );
    assert_eq!(found(&mismatched, "a"), None);
    let balanced = format!(
        r#"{{"a":1,"deep":{}0{}}}"#,
        "[{\"x\":".repeat(40),
        "}]".repeat(40)
    );
    assert_eq!(found(&balanced, "a"), Some("1"));
}

#[test]
fn strings_compare_by_their_decoded_text() {
    let cases: &[(&str, &str, bool)] = &[
        (r#""FR""#, "FR", true),
        (r#""FR""#, "fr", false),
        (r#""FR""#, "FRA", false),
        (r#""FRA""#, "FR", false),
        (r#""""#, "", true),
        (r#""\u0046R""#, "FR", true),
        (r#""\u0046\u0052""#, "FR", true),
        (r#""a\"b\\c\/d""#, r#"a"b\c/d"#, true),
        (r#""\b\f\n\r\t""#, "\u{8}\u{c}\n\r\t", true),
        (r#""\u00e9t\u00E9""#, "été", true),
        (r#""été""#, "été", true),
        (r#""\ud83d\ude00!""#, "😀!", true),
        (r#""\uD83D\uDE00""#, "😀", true),
        (r#""\ud83d""#, "\u{fffd}", false),
        (r#""\ude00""#, "\u{fffd}", false),
        (r#""\ud83d\u0041""#, "\u{fffd}A", false),
        (r#""\ud83dx""#, "\u{fffd}x", false),
        (r#""\x""#, "x", false),
        (r#""\u004""#, "@", false),
        ("FR", "FR", false),
        (r#""FR"#, "FR", false),
        ("\"", "", false),
    ];
    for (token, expected, equal) in cases {
        assert_eq!(
            json::string_equals(token.as_bytes(), expected),
            *equal,
            "{token} vs {expected:?}"
        );
    }
    assert!(
        !json::string_equals(br#""a\ud800b""#, "b"),
        "a difference before an undecodable escape is still no match"
    );
}

#[test]
fn text_equals_compares_scalars_as_written_and_never_containers() {
    assert!(json::text_equals(b"42", "42"));
    assert!(!json::text_equals(b"42.0", "42"));
    assert!(json::text_equals(b"true", "true"));
    assert!(json::text_equals(b"null", "null"));
    assert!(json::text_equals(br#""42""#, "42"));
    assert!(!json::text_equals(br#"{"a":1}"#, r#"{"a":1}"#));
    assert!(!json::text_equals(b"[]", "[]"));
    assert!(!json::text_equals(b"", ""));
}

#[test]
fn paths_are_checked() {
    assert_eq!(Path::parse(""), Err(PathError::EmptySegment));
    assert_eq!(Path::parse("a..b"), Err(PathError::EmptySegment));
    assert_eq!(Path::parse(".a"), Err(PathError::EmptySegment));
    assert_eq!(Path::parse("a."), Err(PathError::EmptySegment));
    let longest = vec!["a"; PATH_SEGMENTS_MAX].join(".");
    assert!(Path::parse(&longest).is_ok());
    assert_eq!(
        Path::parse(&format!("{longest}.a")),
        Err(PathError::TooManySegments)
    );
    let path = Path::parse("items.0.sku").expect("valid");
    assert_eq!(path.segments().collect::<Vec<_>>(), ["items", "0", "sku"]);
}

/// `for_each_member` against serde_json reading the text into a map (the
/// json-project example before the streaming reader): both read the same texts as
/// objects, and agree on each key's last value.
fn check_members(text: &[u8], case: u64, seed: u64) {
    let expected = serde_json::from_slice::<BTreeMap<String, &RawValue>>(text).ok();
    let mut members = BTreeMap::new();
    let object = json::for_each_member(text, |key, value| {
        let key: String = serde_json::from_slice(key).expect("a key that decodes");
        members.insert(key, value);
    });
    let shown = String::from_utf8_lossy(text);
    assert_eq!(
        object,
        expected.is_some(),
        "case {case} (seed {seed:#x}): {shown}"
    );
    if let Some(expected) = expected {
        let expected: BTreeMap<String, &[u8]> = expected
            .into_iter()
            .map(|(k, v)| (k, v.get().as_bytes()))
            .collect();
        assert_eq!(members, expected, "case {case} (seed {seed:#x}): {shown}");
    }
}

// The oracle: the json-field-filter example's lookup over serde_json, which parses
// every object on the path into a map (last key wins) and validates the whole text.

fn oracle_find(json: &[u8], path: &[&str]) -> Option<String> {
    let mut node: &RawValue = serde_json::from_slice(json).ok()?;
    for segment in path {
        let text = node.get();
        node = match text.as_bytes().first()? {
            b'{' => serde_json::from_str::<BTreeMap<String, &RawValue>>(text)
                .ok()?
                .remove(*segment)?,
            b'[' => {
                let index: usize = segment.parse().ok()?;
                *serde_json::from_str::<Vec<&RawValue>>(text)
                    .ok()?
                    .get(index)?
            }
            _ => return None,
        };
    }
    Some(node.get().to_owned())
}

fn oracle_text_equals(text: &str, expected: &str) -> bool {
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).is_ok_and(|s| s == expected),
        Some(b'{' | b'[') | None => false,
        Some(_) => text == expected,
    }
}

/// xorshift64*: a seeded generator, so a failure names the case that shows it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Names a key may have, and the spellings of each in JSON.
const KEYS: &[(&str, &[&str])] = &[
    ("a", &[r#""a""#, r#""\u0061""#]),
    ("b", &[r#""b""#, r#""\u0062""#]),
    ("0", &[r#""0""#, r#""\u0030""#]),
    ("1", &[r#""1""#]),
    ("é", &[r#""é""#, r#""\u00e9""#, r#""\u00E9""#]),
    ("😀", &[r#""😀""#, r#""\ud83d\ude00""#]),
    ("a\"", &[r#""a\"""#, r#""a\u0022""#]),
    ("bad", &[r#""\ud800""#, r#""x\udc00""#]),
];

const SCALARS: &[&str] = &[
    "0",
    "-1",
    "12",
    "1.5",
    "1e3",
    "-0.0E+2",
    "true",
    "false",
    "null",
    r#""""#,
    r#""a""#,
    r#""FR""#,
    r#""\u0046R""#,
    r#""\ud83d\ude00""#,
    r#""\ud83d""#,
    r#""tab\tquote\"""#,
    r#""été""#,
    r#""a long string that takes more than one word of eight bytes""#,
];

fn whitespace(rng: &mut Rng, out: &mut String) {
    if rng.below(4) == 0 {
        out.push_str(rng.pick(&[" ", "\n", "\t ", "\r\n  "]));
    }
}

fn value(rng: &mut Rng, depth: usize, out: &mut String) {
    whitespace(rng, out);
    let kind = match depth {
        // Mostly objects at the top, where the paths start.
        0 => [2, 2, 2, 3][rng.below(4)],
        1..4 => rng.below(4),
        _ => 0,
    };
    match kind {
        0 | 1 => out.push_str(rng.pick(SCALARS)),
        2 => {
            out.push('{');
            let members = rng.below(5);
            for i in 0..members {
                if i > 0 {
                    out.push(',');
                }
                whitespace(rng, out);
                // `a` half the time, so that many paths lead somewhere.
                let (_, spellings) = if rng.below(2) == 0 {
                    KEYS[0]
                } else {
                    rng.pick(KEYS)
                };
                out.push_str(rng.pick(spellings));
                whitespace(rng, out);
                out.push(':');
                value(rng, depth + 1, out);
            }
            whitespace(rng, out);
            out.push('}');
        }
        _ => {
            out.push('[');
            let elements = rng.below(4);
            for i in 0..elements {
                if i > 0 {
                    out.push(',');
                }
                value(rng, depth + 1, out);
            }
            whitespace(rng, out);
            out.push(']');
        }
    }
    whitespace(rng, out);
}

/// Breaks JSON text the way a corrupt or hostile record might.
fn mutate(rng: &mut Rng, text: &mut Vec<u8>) {
    const BYTES: &[u8] = b"{}[],:\"\\ 0a-.eE\x01\xff\xc3";
    if text.is_empty() {
        return;
    }
    let at = rng.below(text.len());
    match rng.below(4) {
        0 => {
            text.remove(at);
        }
        1 => text.insert(at, rng.pick(BYTES)),
        2 => text.truncate(at),
        _ => text[at] = rng.pick(BYTES),
    }
}

#[test]
fn find_agrees_with_a_serde_json_lookup_on_generated_text() {
    const CASES: u64 = 20_000;
    const SEED: u64 = 0x05ee_d0ff_1e1d;
    let mut rng = Rng(SEED);
    // `a` and `0` most often, so that many paths lead somewhere.
    let segments = ["a", "a", "a", "b", "0", "0", "1", "é", "😀", "a\"", "x"];
    let (mut matched, mut malformed) = (0, 0);
    for case in 0..CASES {
        let mut text = String::new();
        value(&mut rng, 0, &mut text);
        let mut text = text.into_bytes();
        if rng.below(3) == 0 {
            mutate(&mut rng, &mut text);
        }
        let depth = 1 + rng.below(3);
        let path: Vec<&str> = (0..depth).map(|_| rng.pick(&segments)).collect();
        let parsed = Path::parse(&path.join(".")).expect("valid path");

        let expected = oracle_find(&text, &path);
        let actual = json::find(&text, &parsed);
        let shown = String::from_utf8_lossy(&text);
        assert_eq!(
            actual,
            expected.as_deref().map(str::as_bytes),
            "case {case} (seed {SEED:#x}): {shown} at {path:?}"
        );
        malformed += usize::from(serde_json::from_slice::<&RawValue>(&text).is_err());
        check_members(&text, case, SEED);
        let Some(raw) = expected else { continue };
        matched += 1;
        let decoded = serde_json::from_str::<String>(&raw).ok();
        let candidates = [
            Some(raw.as_str()),
            raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')),
            decoded.as_deref(),
            Some(""),
            Some("FR"),
            Some("😀"),
        ];
        for candidate in candidates.into_iter().flatten() {
            assert_eq!(
                json::text_equals(raw.as_bytes(), candidate),
                oracle_text_equals(&raw, candidate),
                "case {case} (seed {SEED:#x}): {raw} vs {candidate:?}"
            );
        }
    }
    // A generator that never reaches a field, or never breaks the text, checks little.
    assert!(
        matched > CASES as usize / 40,
        "only {matched} cases found a field"
    );
    assert!(
        malformed > CASES as usize / 10,
        "only {malformed} cases were malformed"
    );
}

/// One text checked against the oracle: `find` at `path`, `for_each_member`, and
/// `text_equals` of what was found with its decoded text. Returns whether a field was
/// found, so that a caller can refuse to pass on texts that never had one.
fn agrees_with_the_oracle(text: &[u8], path: &[&str], case: u64) -> bool {
    let parsed = Path::parse(&path.join(".")).expect("valid path");
    let expected = oracle_find(text, path);
    let shown = String::from_utf8_lossy(text);
    assert_eq!(
        json::find(text, &parsed),
        expected.as_deref().map(str::as_bytes),
        "case {case}: {shown} at {path:?}"
    );
    check_members(text, case, 0);
    let Some(raw) = expected else { return false };
    if let Ok(decoded) = serde_json::from_str::<String>(&raw) {
        assert!(
            json::text_equals(raw.as_bytes(), &decoded),
            "case {case}: {raw}"
        );
        let longer = decoded.clone() + "x";
        assert!(
            !json::text_equals(raw.as_bytes(), &longer),
            "case {case}: {raw}"
        );
    }
    true
}

/// The scanner reads strings and digits eight bytes a word. Strings whose closing
/// quote, escape (whole, or straddling two words), non-ASCII character or control
/// character sits at each position of the first three words; shorter than a word,
/// ending the input or followed by more; and every prefix of each text, so that the
/// input also ends inside each word. All checked against the oracle.
#[test]
fn strings_read_the_same_wherever_a_word_boundary_falls() {
    let specials = [
        "",
        "\\\"",
        "\\\\",
        "\\/",
        "\\n",
        "\\u00e9",
        "\\ud83d\\ude00",
        "\\ud83d",
        "é",
        "😀",
        "\u{800}",
        "\u{7f}",
        "\t",
        "\\x",
        "\\u12G4",
        "\\",
    ];
    let (mut case, mut hits) = (0u64, 0usize);
    for special in specials {
        for before in 0..=17 {
            for after in [0, 1, 7, 9] {
                let content = "a".repeat(before) + special + &"b".repeat(after);
                let texts = [
                    (format!("\"{content}\""), "k"),
                    (format!("{{\"k\":\"{content}\"}}"), "k"),
                    (
                        format!("{{\"{content}\":1,\"k\":\"{content}\",\"z\":2}}"),
                        "k",
                    ),
                    (
                        format!("{{\"{content}\" : \"{content}\"}}"),
                        // A path segment cannot be empty.
                        if content.is_empty() { "k" } else { &content },
                    ),
                    (format!("[\"{content}\",[\"{content}\"],1]"), "1"),
                ];
                for (text, path) in &texts {
                    for cut in 0..=text.len() {
                        hits += usize::from(agrees_with_the_oracle(
                            &text.as_bytes()[..cut],
                            &[path],
                            case,
                        ));
                        case += 1;
                    }
                }
            }
        }
    }
    assert!(hits > 1_000, "only {hits} of {case} texts had the field");
}

/// Numbers whose digit runs end at each position of a word, at the end of the input
/// or before more text, and every prefix of each: checked against the oracle.
#[test]
fn numbers_read_the_same_wherever_a_word_boundary_falls() {
    let (mut case, mut hits) = (0u64, 0usize);
    for int in 0..=17 {
        for frac in [0, 1, 8, 9] {
            for exp in [0, 1, 8] {
                let mut number = "-".to_owned() + &"7".repeat(int.max(1));
                if frac > 0 {
                    number += &(".".to_owned() + &"3".repeat(frac));
                }
                if exp > 0 {
                    number += &("e+".to_owned() + &"5".repeat(exp));
                }
                let texts = [
                    number.clone(),
                    format!("{{\"k\":{number}}}"),
                    format!("[{number},{number}]"),
                    format!("{{\"a\":[{number}],\"k\":{number} }}"),
                ];
                for text in &texts {
                    for cut in 0..=text.len() {
                        for path in ["k", "1"] {
                            hits += usize::from(agrees_with_the_oracle(
                                &text.as_bytes()[..cut],
                                &[path],
                                case,
                            ));
                            case += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(hits > 500, "only {hits} of {case} texts had the field");
}

/// Runs of whitespace of every length up to three words, around every token, at the
/// end of the input and cut short: checked against the oracle.
#[test]
fn whitespace_reads_the_same_wherever_a_word_boundary_falls() {
    let (mut case, mut hits) = (0u64, 0usize);
    for len in 0..=17 {
        for unit in [" ", "\n", "\r\n", "\t "] {
            let ws = unit.repeat(len);
            let ws = &ws[..len];
            let text = format!(
                "{ws}{{{ws}\"a\"{ws}:{ws}[{ws}1{ws},{ws}\"x\"{ws}]{ws},{ws}\"k\"{ws}:{ws}true{ws}}}{ws}"
            );
            for cut in 0..=text.len() {
                hits += usize::from(agrees_with_the_oracle(
                    &text.as_bytes()[..cut],
                    &["k"],
                    case,
                ));
                case += 1;
            }
            // A byte that is not whitespace inside a run.
            let broken = format!("{{\"k\":1{ws}\u{b}{ws}}}");
            agrees_with_the_oracle(broken.as_bytes(), &["k"], case);
            case += 1;
        }
    }
    assert!(hits >= 18 * 4, "only {hits} of {case} texts had the field");
}

/// Control bytes that are not JSON whitespace, in every gap between tokens, before
/// the first and after the last: whitespace is tested with one comparison (any byte
/// up to a space), and these must still make the text not JSON.
#[test]
fn control_bytes_between_tokens_are_refused() {
    let tokens = [
        "{", "\"a\"", ":", "[", "1", ",", "\"x\"", "]", ",", "\"k\"", ":", "true", "}",
    ];
    let path = Path::parse("k").expect("a path");
    let mut case = 0;
    for byte in (0..=b' ').filter(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        for gap in 0..=tokens.len() {
            let mut text = Vec::new();
            for (at, token) in tokens.iter().enumerate() {
                if at == gap {
                    text.push(byte);
                }
                text.extend_from_slice(token.as_bytes());
            }
            if gap == tokens.len() {
                text.push(byte);
            }
            assert_eq!(
                json::find(&text, &path),
                None,
                "{byte:#x} before token {gap}"
            );
            assert!(
                !json::for_each_member(&text, |_, _| {}),
                "{byte:#x} before token {gap}"
            );
            agrees_with_the_oracle(&text, &["k"], case);
            case += 1;
        }
    }
    // The same text with real whitespace in every gap has the field.
    assert_eq!(
        json::find(tokens.join(" \t\r\n").as_bytes(), &path),
        Some(&b"true"[..])
    );
}
