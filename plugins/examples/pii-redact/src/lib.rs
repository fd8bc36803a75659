//! A `map` plugin that redacts personal data in record values: e-mail addresses
//! become `[email]`, payment card numbers become `[card]`, and the record gets a header
//! `redacted` with how many it replaced (`0` included, so consumers can tell a record
//! went through the plugin).
//!
//! `#![no_std]` + `alloc`, with a hand-written byte scanner instead of a regex engine:
//! this example shows the SDK's no_std path, and stays small (see README.md). Values
//! need not be UTF-8; what it recognises is ASCII. It does not find addresses with
//! non-ASCII characters, or card numbers written with other separators.

#![no_std]

extern crate alloc;

quiver_plugin::no_std_runtime!();

use alloc::string::ToString;
use alloc::vec::Vec;

use quiver_plugin::{Record, RecordOut, Result};

/// What an e-mail address is replaced with.
pub const EMAIL_MASK: &[u8] = b"[email]";
/// What a card number is replaced with.
pub const CARD_MASK: &[u8] = b"[card]";
/// The header that counts the replacements.
pub const REDACTED_HEADER: &str = "redacted";

/// Card numbers have 13 to 19 digits (ISO/IEC 7812).
const CARD_DIGITS_MIN: usize = 13;
const CARD_DIGITS_MAX: usize = 19;

fn redact_record(record: &Record) -> Result<RecordOut> {
    // The value is replaced, so copy everything else and not the value.
    let (value, count) = match record.value {
        Some(value) => {
            let redacted = redact(value);
            (Some(redacted.text), redacted.count)
        }
        None => (None, 0),
    };
    let out = RecordOut {
        value,
        ..RecordOut::from(&Record {
            value: None,
            ..*record
        })
    };
    Ok(out.with_header(REDACTED_HEADER, count.to_string()))
}

quiver_plugin::map!(redact_record);

/// A value with its personal data replaced.
#[derive(Debug, PartialEq, Eq)]
pub struct Redacted {
    pub text: Vec<u8>,
    /// E-mail addresses and card numbers replaced.
    pub count: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Email,
    Card,
}

/// A stretch of the input to replace: `start..end`.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
    kind: Kind,
}

/// Replaces every e-mail address and Luhn-valid card number in `text`.
pub fn redact(text: &[u8]) -> Redacted {
    let emails = email_spans(text);
    let cards = card_spans(text, &emails);
    let mut spans: Vec<Span> = emails.into_iter().chain(cards).collect();
    spans.sort_unstable_by_key(|s| s.start);

    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for span in &spans {
        out.extend_from_slice(text.get(at..span.start).unwrap_or_default());
        out.extend_from_slice(match span.kind {
            Kind::Email => EMAIL_MASK,
            Kind::Card => CARD_MASK,
        });
        at = span.end;
    }
    out.extend_from_slice(text.get(at..).unwrap_or_default());
    Redacted {
        text: out,
        count: spans.len(),
    }
}

/// Characters of an address's local part: the common unquoted subset.
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// Addresses `local@domain.tld`, in order and not overlapping. The domain needs at
/// least two labels, none empty, and a top-level label of two or more letters; a
/// trailing `.` or `-` (end of a sentence) is not part of it.
fn email_spans(text: &[u8]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut searched_to = 0;
    let mut at = 0;
    while let Some(offset) = text
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == b'@'))
    {
        let sign = at + offset;
        at = sign + 1;
        // The local part runs left from '@', but not into an earlier address.
        let mut start = sign;
        while start > searched_to && text.get(start - 1).is_some_and(|&b| is_local(b)) {
            start -= 1;
        }
        while text.get(start) == Some(&b'.') && start < sign {
            start += 1;
        }
        if start == sign {
            continue;
        }
        let mut end = sign + 1;
        while text.get(end).is_some_and(|&b| is_domain(b)) {
            end += 1;
        }
        while end > sign + 1 && text.get(end - 1).is_some_and(|&b| b == b'.' || b == b'-') {
            end -= 1;
        }
        let Some(domain) = text.get(sign + 1..end) else {
            continue;
        };
        if is_domain_name(domain) {
            spans.push(Span {
                start,
                end,
                kind: Kind::Email,
            });
            searched_to = end;
            at = end;
        }
    }
    spans
}

fn is_domain_name(domain: &[u8]) -> bool {
    let mut labels = domain.split(|&b| b == b'.');
    let Some(tld) = labels.next_back() else {
        return false;
    };
    let mut count = 1;
    for label in labels {
        if label.is_empty() {
            return false;
        }
        count += 1;
    }
    count >= 2 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)
}

/// A run of digit groups separated by single spaces or dashes: `start..end` of each
/// group.
fn digit_groups(text: &[u8], start: usize) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut at = start;
    loop {
        let group_start = at;
        while text.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        groups.push((group_start, at));
        let separated = matches!(text.get(at), Some(b' ' | b'-'))
            && text.get(at + 1).is_some_and(u8::is_ascii_digit);
        if !separated {
            return groups;
        }
        at += 1;
    }
}

/// Card numbers outside `emails`: 13 to 19 digits, grouped by single spaces or
/// dashes, passing the Luhn check, not touching other letters or digits. In a longer
/// run of groups (a card followed by a year, two cards in a row) each leftmost,
/// longest stretch of whole groups that is a card counts; one unbroken run of more
/// than 19 digits is a long number, not a card.
fn card_spans(text: &[u8], emails: &[Span]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut emails = emails.iter().peekable();
    let mut at = 0;
    while at < text.len() {
        if let Some(email) = emails.peek()
            && at >= email.start
        {
            at = at.max(email.end);
            emails.next();
            continue;
        }
        let starts_run = text.get(at).is_some_and(u8::is_ascii_digit)
            && (at == 0 || text.get(at - 1).is_some_and(|b| !is_word(*b)));
        if !starts_run {
            at += 1;
            continue;
        }
        let groups = digit_groups(text, at);
        let run_end = groups.last().map_or(at, |g| g.1);
        at = run_end.max(at + 1);
        if text.get(run_end).is_some_and(|&b| is_word(b)) {
            continue;
        }
        // A run that reaches into an address is the address's, not a card.
        let limit = emails.peek().map_or(usize::MAX, |e| e.start);
        let mut first = 0;
        while first < groups.len() {
            match longest_card(text, &groups[first..]) {
                Some(taken) => {
                    let (start, end) = (groups[first].0, groups[first + taken - 1].1);
                    if end <= limit {
                        spans.push(Span {
                            start,
                            end,
                            kind: Kind::Card,
                        });
                    }
                    first += taken;
                }
                None => first += 1,
            }
        }
    }
    spans
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// How many leading `groups` form the longest card number, if any do.
fn longest_card(text: &[u8], groups: &[(usize, usize)]) -> Option<usize> {
    let mut digits = 0;
    let mut best = None;
    for (taken, &(start, end)) in groups.iter().enumerate() {
        digits += end - start;
        if digits > CARD_DIGITS_MAX {
            break;
        }
        if digits >= CARD_DIGITS_MIN {
            let last = groups.get(..=taken).unwrap_or_default();
            if luhn_valid(
                last.iter()
                    .filter_map(|&(s, e)| text.get(s..e))
                    .flatten()
                    .copied(),
            ) {
                best = Some(taken + 1);
            }
        }
    }
    best
}

/// The Luhn checksum: from the rightmost digit, double every second one.
fn luhn_valid(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.rev().enumerate() {
        let d = u32::from(d - b'0');
        sum += if i % 2 == 1 {
            let doubled = d * 2;
            if doubled > 9 { doubled - 9 } else { doubled }
        } else {
            d
        };
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use quiver_plugin::{RecordList, call};

    fn redacted(text: &str) -> (String, usize) {
        let r = redact(text.as_bytes());
        (
            String::from_utf8(r.text).expect("UTF-8 in, UTF-8 out"),
            r.count,
        )
    }

    #[test]
    fn emails_are_replaced() {
        assert_eq!(
            redacted("write to ann.lee+news@mail.example.co.uk today"),
            ("write to [email] today".into(), 1)
        );
        assert_eq!(
            redacted("a@b.io, c_d@e-f.org."),
            ("[email], [email].".into(), 2)
        );
        assert_eq!(redacted("<x@y.com>"), ("<[email]>".into(), 1));
    }

    #[test]
    fn things_that_are_not_emails_stay() {
        for text in [
            "@handle",
            "user@localhost",
            "user@host.c",
            "user@host..com",
            "user@.com",
            "a @ b.com",
            "price: 5@3.50",
            "trailing@",
        ] {
            assert_eq!(redacted(text), (text.into(), 0), "{text}");
        }
    }

    #[test]
    fn luhn_valid_cards_are_replaced_with_or_without_separators() {
        assert_eq!(
            redacted("card 4111111111111111 ok"),
            ("card [card] ok".into(), 1)
        );
        assert_eq!(
            redacted("card 4111 1111 1111 1111."),
            ("card [card].".into(), 1)
        );
        assert_eq!(
            redacted("amex 3782-822463-10005"),
            ("amex [card]".into(), 1)
        );
        // 19 digits, Luhn-valid.
        assert_eq!(redacted("6011000990139424000 x").1, 0, "not Luhn-valid");
        assert_eq!(redacted("4000000000000000006").1, 1, "19 digits");
    }

    #[test]
    fn a_card_followed_by_more_digit_groups_is_still_found() {
        assert_eq!(
            redacted("4111 1111 1111 1111 2029"),
            ("[card] 2029".into(), 1)
        );
        assert_eq!(
            redacted("4111 1111 1111 1111 5500 0000 0000 0004"),
            ("[card] [card]".into(), 2)
        );
    }

    #[test]
    fn numbers_that_are_not_cards_stay() {
        for text in [
            "4111111111111112",     // fails Luhn
            "411111111111",         // 12 digits
            "41111111111111111111", // 20 digits in one run
            "id4111111111111111",   // glued to a word
            "4111111111111111abc",  // glued to a word
            "4111  1111 1111 1111", // double space splits the groups
            "phone +1 555 0100",
        ] {
            assert_eq!(redacted(text), (text.into(), 0), "{text}");
        }
    }

    #[test]
    fn digits_inside_an_address_belong_to_the_address() {
        assert_eq!(
            redacted("4111111111111111@example.com"),
            ("[email]".into(), 1)
        );
    }

    #[test]
    fn values_that_are_not_utf8_are_scanned_as_bytes() {
        let mut value = b"\xff\xfe a@b.com \x80".to_vec();
        let r = redact(&value);
        assert_eq!(r.text, b"\xff\xfe [email] \x80");
        assert_eq!(r.count, 1);
        value.clear();
        assert_eq!(
            redact(&value),
            Redacted {
                text: Vec::new(),
                count: 0
            }
        );
    }

    #[test]
    fn the_map_replaces_the_value_and_counts_in_a_header() {
        let input = RecordList::encode(&[
            RecordOut::default()
                .with_key("k")
                .with_timestamp(7)
                .with_header("redacted", "stale")
                .with_value("mail a@b.com, card 4111-1111-1111-1111"),
            RecordOut::default().with_timestamp(8),
        ])
        .expect("encodes");
        let answer = call::map(&input, redact_record).expect("answers");
        let out: Vec<RecordOut> = RecordList::parse(&answer)
            .expect("a record list")
            .iter()
            .map(|r| RecordOut::from(&r))
            .collect();
        assert_eq!(
            out,
            [
                RecordOut::default()
                    .with_key("k")
                    .with_timestamp(7)
                    .with_value("mail [email], card [card]")
                    .with_header("redacted", "2"),
                RecordOut::default()
                    .with_timestamp(8)
                    .with_header("redacted", "0"),
            ]
        );
    }
}
