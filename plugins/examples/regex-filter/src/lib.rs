//! A `filter` plugin: keeps records whose value matches a regular expression
//! (`pattern`, in the syntax of the `regex` crate), or with `invert=true` those whose
//! value does not. The pattern is compiled once in `init`; a missing or invalid
//! pattern makes `init` refuse, so the plugin is never attached with it.
//!
//! Values are matched as UTF-8 text, byte by byte: Unicode classes and `.` match
//! valid UTF-8 only, so a value with stray non-UTF-8 bytes can still match the
//! literal parts around them. A record without a value never matches.

use quiver_plugin::{Error, InitCell, Params, Record, Result};
use regex::bytes::{Regex, RegexBuilder};

/// The compiled program may take this much memory: one instance has 16 MiB in all.
const REGEX_BYTES_MAX: usize = 2 * 1024 * 1024;
/// The lazy DFA's cache, per instance.
const DFA_CACHE_BYTES_MAX: usize = 2 * 1024 * 1024;

struct Matcher {
    regex: Regex,
    invert: bool,
}

static MATCHER: InitCell<Matcher> = InitCell::new();

impl Matcher {
    fn from_params(params: &Params) -> Result<Self> {
        let pattern = params.require("pattern")?;
        let regex = RegexBuilder::new(pattern)
            .size_limit(REGEX_BYTES_MAX)
            .dfa_size_limit(DFA_CACHE_BYTES_MAX)
            .build()
            .map_err(|e| Error::new(format!("parameter `pattern` is not a valid regex: {e}")))?;
        Ok(Self {
            regex,
            invert: params.flag("invert")?,
        })
    }

    fn keeps(&self, value: Option<&[u8]>) -> bool {
        value.is_some_and(|v| self.regex.is_match(v)) != self.invert
    }
}

fn init(params: &Params) -> Result<()> {
    MATCHER.set(Matcher::from_params(params)?)?;
    Ok(())
}

fn keep(record: &Record) -> Result<bool> {
    Ok(MATCHER.require()?.keeps(record.value))
}

quiver_plugin::init!(init);
quiver_plugin::filter!(keep);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin::{RecordList, RecordOut, call};

    fn matcher(pairs: &[(&str, &str)]) -> Result<Matcher> {
        Matcher::from_params(&Params::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn keeps_values_that_match() {
        let m = matcher(&[("pattern", r"^ERROR\b")]).expect("valid");
        assert!(m.keeps(Some(b"ERROR disk full")));
        assert!(!m.keeps(Some(b"ERRORS")));
        assert!(!m.keeps(Some(b"info: ERROR later")));
        assert!(!m.keeps(None), "no value, no match");
    }

    #[test]
    fn invert_keeps_the_others() {
        let m = matcher(&[("pattern", "debug"), ("invert", "true")]).expect("valid");
        assert!(!m.keeps(Some(b"a debug line")));
        assert!(m.keeps(Some(b"an info line")));
        assert!(
            m.keeps(None),
            "no value does not match, so inverted it stays"
        );
        let m = matcher(&[("pattern", "debug"), ("invert", "false")]).expect("valid");
        assert!(m.keeps(Some(b"a debug line")));
    }

    #[test]
    fn unicode_classes_and_case_folding_work() {
        let m = matcher(&[("pattern", r"(?i)^café \w+ \d$")]).expect("valid");
        assert!(
            m.keeps(Some("CAFÉ Éric ٣".as_bytes())),
            "Unicode word, digit, case"
        );
        assert!(!m.keeps(Some("CAFE Eric 3".as_bytes())), "E is not É");
    }

    #[test]
    fn values_that_are_not_utf8_match_around_the_bad_bytes() {
        let m = matcher(&[("pattern", "id=[0-9]+")]).expect("valid");
        assert!(m.keeps(Some(b"\xff\xfe id=42")));
        let dot = matcher(&[("pattern", "^.$")]).expect("valid");
        assert!(
            !dot.keeps(Some(b"\xff")),
            ". matches a UTF-8 character only"
        );
    }

    #[test]
    fn init_refuses_bad_parameters() {
        assert!(matcher(&[]).is_err(), "no pattern");
        assert!(matcher(&[("pattern", "(unclosed")]).is_err(), "invalid");
        assert!(
            matcher(&[("pattern", "a"), ("invert", "yes")]).is_err(),
            "invert not a bool"
        );
        assert!(
            matcher(&[("pattern", r"\w{1000}{1000}")]).is_err(),
            "over the size limit"
        );
        let refused = call::init(&params_input(&[("pattern", "(")]), init);
        assert_eq!(refused.err().map(|e| e.code()), Some(-1));
    }

    fn params_input(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    #[test]
    fn the_filter_keeps_matching_records_of_a_batch() {
        call::init(&params_input(&[("pattern", "^user-[0-9]+$")]), init).expect("init");
        let batch: Vec<RecordOut> = ["user-1", "user-x", "user-22", "admin-3"]
            .into_iter()
            .map(|v| RecordOut::default().with_value(v))
            .collect();
        let input = RecordList::encode(&batch).expect("encodes");
        assert_eq!(
            call::filter(&input, keep).expect("answers"),
            [4, 0, 0, 0, 0b0101]
        );
    }
}
