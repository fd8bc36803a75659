//! Reading one field out of a JSON record value without building a value tree: a
//! single validating scan, no allocation, borrowed answers.
//!
//! ```
//! use quiver_plugin::json::{self, Path};
//!
//! let path = Path::parse("user.country").expect("a dotted path");
//! let value = br#"{"user":{"country":"FR","id":7},"note":"\u00e9t\u00e9"}"#;
//! let country = json::find(value, &path).expect("the field is there");
//! assert_eq!(country, br#""FR""#);
//! assert!(json::text_equals(country, "FR"));
//! ```
//!
//! [`find`] walks the text once, skipping what is not on the path (strings with their
//! escapes, numbers, literals, nested objects and arrays) while checking it against
//! JSON's grammar (RFC 8259): text that is not JSON, or has anything but whitespace
//! after its value, has no fields, so a malformed record never matches by accident.
//! Where an object repeats a key the last one counts, as in most JSON readers.
//!
//! Strings compare by their decoded text ([`string_equals`], which decodes escapes
//! including `\uXXXX` surrogate pairs as it compares, without allocating); numbers and
//! literals by their text as the record wrote it ([`text_equals`]).
//! [`for_each_member`] walks the members of an object the same way, for a plugin that
//! needs several fields of it.
//!
//! What it does not do: convert numbers (`1.0` is not `1`), decode strings into owned
//! text, or address a member whose name contains a dot. Nesting is bounded by
//! [`DEPTH_MAX`] and paths by [`PATH_SEGMENTS_MAX`].

use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt;
use core::ops::Range;

/// Most levels of objects and arrays [`find`] skips over inside one value (the
/// levels on the path itself count against [`PATH_SEGMENTS_MAX`] instead); text
/// nested deeper has no fields. The scan keeps one bit per open level in a fixed array
/// (128 bytes of stack), so hostile nesting costs neither heap nor recursion.
pub const DEPTH_MAX: usize = 1024;

/// Most segments in a [`Path`]. [`find`] recurses once per segment, so this bounds its
/// stack use.
pub const PATH_SEGMENTS_MAX: usize = 128;

const NESTING_WORDS: usize = DEPTH_MAX / 64;
const _: () = assert!(
    DEPTH_MAX.is_multiple_of(64),
    "the nesting stack is whole u64 words"
);

/// A dotted path to a field: `level`, `user.country`, `items.0.sku`. Each segment
/// names an object member; a segment that is a number also indexes an array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    /// The member name, compared with each key's decoded text.
    name: String,
    /// The array index the segment also names, when it parses as one.
    index: Option<usize>,
}

impl Path {
    /// Parses `user.country`: names joined by single dots, none empty.
    pub fn parse(dotted: &str) -> Result<Self, PathError> {
        let mut segments = Vec::new();
        for name in dotted.split('.') {
            if name.is_empty() {
                return Err(PathError::EmptySegment);
            }
            if segments.len() == PATH_SEGMENTS_MAX {
                return Err(PathError::TooManySegments);
            }
            segments.push(Segment {
                name: name.into(),
                index: name.parse().ok(),
            });
        }
        Ok(Self { segments })
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(|s| s.name.as_str())
    }
}

/// Why a dotted path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path is empty, starts or ends with a dot, or has two dots in a row.
    EmptySegment,
    /// More than [`PATH_SEGMENTS_MAX`] segments.
    TooManySegments,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::EmptySegment => f.write_str("a path segment is empty"),
            PathError::TooManySegments => write!(
                f,
                "a path has more than {PATH_SEGMENTS_MAX} segments (PATH_SEGMENTS_MAX)"
            ),
        }
    }
}

impl core::error::Error for PathError {}

/// The value at `path` in the JSON text `json`, as the text wrote it (a string with
/// its quotes and escapes, a number with its digits, an object or array with its
/// inner whitespace), or `None` when `json` is not JSON or has no such field.
///
/// One pass over the whole text, which it validates as it goes: a later repeat of a
/// key replaces an earlier one, and trailing garbage or a syntax error anywhere means
/// `None`. Keys on the path compare by their decoded text; an object on the path
/// with a key that cannot be decoded (a lone surrogate escape) has no fields, as for a
/// reader that decodes the objects it descends into. (An earlier occurrence of a
/// repeated key is not descended into: only its grammar matters.)
pub fn find<'j>(json: &'j [u8], path: &Path) -> Option<&'j [u8]> {
    let mut scanner = Scanner::new(json);
    scanner.whitespace();
    let found = scanner.value_on_path(&path.segments).ok()?;
    scanner.whitespace();
    match found {
        Lookup::Found(span) if scanner.pos == json.len() => json.get(span),
        _ => None,
    }
}

/// Calls `each(key, value)` for every member of the JSON object `json`, in order:
/// the key's string token (quotes included; compare it with [`string_equals`]) and
/// the value's text as written. Returns whether `json` is a JSON object, with nothing
/// but whitespace after it and every key decodable (no lone surrogate escape).
///
/// One pass, no allocation. `each` is called as the scan goes, before it knows that
/// the text is valid to the end: when this returns `false`, discard what `each` saw.
pub fn for_each_member<'j>(json: &'j [u8], mut each: impl FnMut(&'j [u8], &'j [u8])) -> bool {
    let mut scanner = Scanner::new(json);
    scanner.whitespace();
    let object = scanner.members(&mut each).is_ok();
    scanner.whitespace();
    object && scanner.pos == json.len()
}

/// Whether a value [`find`] returned equals `expected` as text: a string by its
/// decoded text ([`string_equals`]); a number, `true`, `false` or `null` by its text as
/// written (`42` is `42`, `42.0` is not). Objects and arrays never equal text.
pub fn text_equals(value: &[u8], expected: &str) -> bool {
    match value.first() {
        Some(b'"') => string_equals(value, expected),
        Some(b'{' | b'[') | None => false,
        Some(_) => value == expected.as_bytes(),
    }
}

/// Whether the JSON string token `token` (quotes included, as [`find`] returns it)
/// decodes to `expected`. Escapes are decoded as they are compared, `\uXXXX` pairs
/// included, without allocating. A token with an escape JSON does not allow, or a
/// surrogate escape without its pair, equals nothing. Meant for tokens [`find`]
/// validated; other bytes give `false` or an unspecified answer, never a panic.
pub fn string_equals(token: &[u8], expected: &str) -> bool {
    let Some(content) = token
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
    else {
        return false;
    };
    let expected = expected.as_bytes();
    // Every escape is longer than the text it stands for, so lengths alone settle
    // most comparisons without decoding (or looping over) anything.
    match content.len().cmp(&expected.len()) {
        Ordering::Less => false,
        Ordering::Equal => same_bytes(content, expected) && !has_backslash(content),
        Ordering::Greater => decoded_equals(content, expected) == Ok(true),
    }
}

/// The text is not JSON, or nests deeper than [`DEPTH_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Invalid;

type Scan<T> = Result<T, Invalid>;

/// What the rest of a path finds in a value on it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    Missing,
    Found(Range<usize>),
    /// An object on the path has a key that does not decode: nothing can be found in
    /// it, unless a later repeat of the key that led there replaces it.
    Unreadable,
}

/// Compares the content of a string token (between its quotes) with `expected`,
/// decoding escapes. Decodes to the end even after a difference, so that a token
/// with an undecodable escape is `Err` whatever it is compared with.
fn decoded_equals(content: &[u8], expected: &[u8]) -> Scan<bool> {
    let mut equal = true;
    let mut rest = content;
    let mut want = expected;
    loop {
        let run = rest.iter().position(|&b| b == b'\\').unwrap_or(rest.len());
        let (plain, after) = rest.split_at(run);
        match want.split_at_checked(plain.len()) {
            Some((head, tail)) if equal && head == plain => want = tail,
            _ => equal = false,
        }
        let Some(escape) = after.strip_prefix(b"\\") else {
            return Ok(equal && want.is_empty());
        };
        let (decoded, after) = unescape(escape)?;
        let mut utf8 = [0u8; 4];
        let decoded = decoded.encode_utf8(&mut utf8).as_bytes();
        match want.split_at_checked(decoded.len()) {
            Some((head, tail)) if equal && head == decoded => want = tail,
            _ => equal = false,
        }
        rest = after;
    }
}

/// `a == b`, inline and without a loop for up to 8 bytes: keys are short, a call to
/// `memcmp` is a byte loop in WebAssembly, and WebAssembly hosts check for
/// interruption at every loop iteration. Short slices compare as two overlapping
/// words (first and last 4 or 2 bytes).
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    fn head<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
        s.first_chunk::<N>().copied()
    }
    fn tail<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
        s.last_chunk::<N>().copied()
    }
    match a.len() {
        0 => true,
        1 => a.first() == b.first(),
        2..4 => head::<2>(a) == head::<2>(b) && tail::<2>(a) == tail::<2>(b),
        4..=8 => head::<4>(a) == head::<4>(b) && tail::<4>(a) == tail::<4>(b),
        _ => a == b,
    }
}

/// Decodes the escape `escape` starts with (the part after the backslash), and
/// returns the character and what follows it. Surrogates must come in pairs.
fn unescape(escape: &[u8]) -> Scan<(char, &[u8])> {
    let (&kind, rest) = escape.split_first().ok_or(Invalid)?;
    let simple = match kind {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let (unit, rest) = hex4(rest)?;
            return match unit {
                0xD800..=0xDBFF => {
                    let (low, rest) = rest.strip_prefix(b"\\u").ok_or(Invalid).and_then(hex4)?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return Err(Invalid);
                    }
                    let scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    Ok((char::from_u32(scalar).ok_or(Invalid)?, rest))
                }
                // Every other code unit is a scalar value; a lone low surrogate is not.
                unit => Ok((char::from_u32(unit).ok_or(Invalid)?, rest)),
            };
        }
        _ => return Err(Invalid),
    };
    Ok((simple, rest))
}

/// Four hex digits, as the code unit they spell.
fn hex4(bytes: &[u8]) -> Scan<(u32, &[u8])> {
    let (digits, rest) = bytes.split_first_chunk::<4>().ok_or(Invalid)?;
    let mut unit = 0;
    for &digit in digits {
        unit = unit << 4 | char::from(digit).to_digit(16).ok_or(Invalid)?;
    }
    Ok((unit, rest))
}

/// Whether `bytes` holds a backslash: a word at a time, the first word (most
/// values compared) before any loop, for the reason `same_bytes` gives.
#[inline(always)]
fn has_backslash(bytes: &[u8]) -> bool {
    if bytes_equal_to(word_at(bytes, 0), b'\\') != 0 {
        return true;
    }
    (8..bytes.len())
        .step_by(8)
        .any(|at| bytes_equal_to(word_at(bytes, at), b'\\') != 0)
}

/// Marks each byte of `word` equal to `byte` with its high bit, and possibly bytes
/// above a marked one (a borrow runs upwards): the lowest mark is exact, and the
/// mask is zero exactly when no byte equals `byte`.
const fn bytes_equal_to(word: u64, byte: u8) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let diff = word ^ (ONES * byte as u64);
    diff.wrapping_sub(ONES) & !diff & HIGH
}

/// Whether the 8 bytes of `word` (little-endian) hold a byte a string scan must stop
/// at: `"`, `\`, a control character (below 0x20) or a non-ASCII byte. The lowest set
/// bit of the mask marks the first such byte exactly (the borrows that can flag a
/// false byte only run towards higher bytes).
const fn string_stops(word: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let is_control = word.wrapping_sub(ONES * 0x20) & !word;
    bytes_equal_to(word, b'"') | bytes_equal_to(word, b'\\') | (is_control | word) & HIGH
}

/// The high bit of each byte of `word` (little-endian) that is not an ASCII digit.
/// Exact per byte: masking off each byte's high bit first means the addition never
/// carries into the next byte.
const fn non_digits(word: u64) -> u64 {
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // b'0'..=b'9' become 0..=9; adding 0x76 sets the high bit from 10 up.
    let offset = word ^ u64::from_ne_bytes([b'0'; 8]);
    (((offset & LOW7) + u64::from_ne_bytes([0x76; 8])) | offset) & HIGH
}

/// The eight bytes of `json` from `at` as a little-endian word, zero bytes standing
/// in for those past the end. A zero byte stops every word scan (it is a control
/// character, not a digit, not whitespace), so a scan near the end needs no byte
/// loop of its own: it stops at the end and finds nothing there. Loop-free, because
/// WebAssembly hosts check for interruption at every loop iteration.
#[inline(always)]
fn word_at(json: &[u8], at: usize) -> u64 {
    let rest = json.get(at..).unwrap_or_default();
    match rest.first_chunk::<8>() {
        Some(word) => u64::from_le_bytes(*word),
        None => short_word(rest),
    }
}

/// `bytes` (fewer than eight) as a little-endian word padded with zeros, read as two
/// overlapping loads (first and last 4 or 2 bytes: a byte in both has the same value
/// in both, so OR-ing them is exact) instead of a byte loop.
#[inline(always)]
fn short_word(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    if let (Some(head), Some(tail)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        u64::from(u32::from_le_bytes(*head))
            | u64::from(u32::from_le_bytes(*tail)) << (8 * (len - 4))
    } else if let (Some(head), Some(tail)) = (bytes.first_chunk::<2>(), bytes.last_chunk::<2>()) {
        u64::from(u16::from_le_bytes(*head))
            | u64::from(u16::from_le_bytes(*tail)) << (8 * (len - 2))
    } else {
        bytes.first().copied().map_or(0, u64::from)
    }
}

/// The high bit of each byte of `word` (little-endian) that is not JSON whitespace
/// (space, tab, line feed, carriage return). Exact per byte, like [`non_digits`].
const fn non_whitespace(word: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// The high bit of each byte equal to `byte`: a byte is zero after the XOR
    /// exactly when its low seven bits do not carry into the high one and its high
    /// bit is clear (masking the high bits first keeps carries inside each byte).
    const fn equal(word: u64, byte: u8) -> u64 {
        let diff = word ^ (ONES * byte as u64);
        !(((diff & LOW7) + LOW7) | diff) & HIGH
    }
    !(equal(word, b' ') | equal(word, b'\t') | equal(word, b'\n') | equal(word, b'\r')) & HIGH
}

/// The open objects and arrays of one scan, one bit a level (1 = object).
struct Nesting {
    bits: [u64; NESTING_WORDS],
    depth: usize,
}

impl Nesting {
    /// Whether one more level may open, empty or not.
    fn check_room(&self) -> Scan<()> {
        if self.depth < DEPTH_MAX {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// Opens a level; `check_room` said there is room.
    fn push(&mut self, object: bool) {
        let bit = 1u64 << (self.depth % 64);
        if let Some(word) = self.bits.get_mut(self.depth / 64) {
            if object {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
        self.depth += 1;
    }

    /// Whether the innermost open level is an object; `None` when none is open.
    fn top(&self) -> Option<bool> {
        let level = self.depth.checked_sub(1)?;
        let word = self.bits.get(level / 64)?;
        Some(word & (1 << (level % 64)) != 0)
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

struct Scanner<'j> {
    json: &'j [u8],
    /// The next byte to read.
    pos: usize,
}

impl<'j> Scanner<'j> {
    fn new(json: &'j [u8]) -> Self {
        Self { json, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.json.get(self.pos).copied()
    }

    /// Skips whitespace. Compact JSON has none between tokens, so the first byte is
    /// tested before any loop: in WebAssembly, entering a loop costs an interruption
    /// check even when it runs no iteration, and this runs around every token. One
    /// comparison tests it: whitespace bytes are all at most a space, and no token
    /// starts with one; a control byte that is not whitespace goes to the run, which
    /// stops at it and leaves it to the grammar to refuse.
    #[inline(always)]
    fn whitespace(&mut self) {
        if let Some(0..=b' ') = self.peek() {
            self.whitespace_run();
        }
    }

    /// Skips the whitespace at `pos` (indentation, mostly) eight bytes at a time.
    /// Not inlined: it is rare in compact records, and called from every token.
    #[inline(never)]
    fn whitespace_run(&mut self) {
        loop {
            let stops = non_whitespace(word_at(self.json, self.pos));
            if stops != 0 {
                self.pos += (stops.trailing_zeros() / 8) as usize;
                return;
            }
            self.pos += 8;
        }
    }

    /// Consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        if next {
            self.pos += 1;
        }
        next
    }

    fn expect(&mut self, byte: u8) -> Scan<()> {
        if self.eat(byte) { Ok(()) } else { Err(Invalid) }
    }

    /// Consumes `byte` after any whitespace. The byte is tested first: compact JSON
    /// has no whitespace between tokens, so this is one test where skipping
    /// whitespace and then expecting the byte would be two.
    #[inline(always)]
    fn expect_after_whitespace(&mut self, byte: u8) -> Scan<()> {
        if self.eat(byte) {
            return Ok(());
        }
        self.whitespace();
        self.expect(byte)
    }

    /// The next byte after any whitespace (skipped, the byte itself not consumed),
    /// read once when there is no whitespace.
    #[inline(always)]
    fn peek_after_whitespace(&mut self) -> Option<u8> {
        match self.peek() {
            Some(0..=b' ') => {
                self.whitespace_run();
                self.peek()
            }
            next => next,
        }
    }

    /// The value at `pos` (whitespace skipped) when it is on the path: its span when
    /// `path` is used up, else what the rest of the path finds inside it.
    fn value_on_path(&mut self, path: &[Segment]) -> Scan<Lookup> {
        let Some((segment, rest)) = path.split_first() else {
            let start = self.pos;
            self.skip_value()?;
            return Ok(Lookup::Found(start..self.pos));
        };
        match self.peek() {
            Some(b'{') => self.object_on_path(segment, rest),
            Some(b'[') => self.array_on_path(segment, rest),
            _ => self.skip_value().map(|()| Lookup::Missing),
        }
    }

    /// [`Self::value_on_path`] with the end of the path handled here, saving every
    /// lookup a call at its leaf: in WebAssembly a call costs a frame, a stack check
    /// and an interruption check.
    #[inline(always)]
    fn value_on_path_inline(&mut self, path: &[Segment]) -> Scan<Lookup> {
        if path.is_empty() {
            let start = self.pos;
            self.skip_value()?;
            Ok(Lookup::Found(start..self.pos))
        } else {
            self.value_on_path(path)
        }
    }

    fn object_on_path(&mut self, segment: &Segment, rest: &[Segment]) -> Scan<Lookup> {
        self.pos += 1;
        self.whitespace();
        if self.eat(b'}') {
            return Ok(Lookup::Missing);
        }
        let mut found = Lookup::Missing;
        let mut unreadable = false;
        loop {
            let key_start = self.pos;
            let escaped = self.string()?;
            let key = self.json.get(key_start + 1..self.pos - 1).ok_or(Invalid)?;
            let on_path = if escaped {
                decoded_equals(key, segment.name.as_bytes()).unwrap_or_else(|Invalid| {
                    unreadable = true;
                    false
                })
            } else {
                same_bytes(key, segment.name.as_bytes())
            };
            self.expect_after_whitespace(b':')?;
            self.whitespace();
            if on_path {
                // A repeated key replaces what an earlier one found, even with nothing.
                found = self.value_on_path_inline(rest)?;
            } else {
                self.skip_value()?;
            }
            match self.peek_after_whitespace() {
                Some(b',') => {
                    self.pos += 1;
                    self.whitespace();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(if unreadable {
                        Lookup::Unreadable
                    } else {
                        found
                    });
                }
                _ => return Err(Invalid),
            }
        }
    }

    fn array_on_path(&mut self, segment: &Segment, rest: &[Segment]) -> Scan<Lookup> {
        self.pos += 1;
        self.whitespace();
        if self.eat(b']') {
            return Ok(Lookup::Missing);
        }
        let mut found = Lookup::Missing;
        let mut index = 0usize;
        loop {
            if segment.index == Some(index) {
                found = self.value_on_path_inline(rest)?;
            } else {
                self.skip_value()?;
            }
            index = index.saturating_add(1);
            match self.peek_after_whitespace() {
                Some(b',') => {
                    self.pos += 1;
                    self.whitespace();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(found);
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// The object at `pos`, member by member (see [`for_each_member`]).
    fn members(&mut self, each: &mut impl FnMut(&'j [u8], &'j [u8])) -> Scan<()> {
        self.expect(b'{')?;
        self.whitespace();
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            let key_start = self.pos;
            if self.string()? {
                // Decoding against nothing checks that the key decodes at all.
                decoded_equals(
                    self.json.get(key_start + 1..self.pos - 1).ok_or(Invalid)?,
                    b"",
                )?;
            }
            let key = self.json.get(key_start..self.pos).ok_or(Invalid)?;
            self.expect_after_whitespace(b':')?;
            self.whitespace();
            let value_start = self.pos;
            self.skip_value()?;
            each(key, self.json.get(value_start..self.pos).ok_or(Invalid)?);
            match self.peek_after_whitespace() {
                Some(b',') => {
                    self.pos += 1;
                    self.whitespace();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// Skips one value at `pos` (whitespace skipped), checking its grammar.
    #[inline(always)]
    fn skip_value(&mut self) -> Scan<()> {
        match self.peek().ok_or(Invalid)? {
            b'"' => self.string().map(|_| ()),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'{' | b'[' => self.skip_nested(),
            _ => Err(Invalid),
        }
    }

    /// Skips the object or array at `pos`. Iterative: its open levels live in a bit
    /// stack, not on the call stack (made here, so that scalars never pay for it).
    fn skip_nested(&mut self) -> Scan<()> {
        let mut nesting = Nesting {
            bits: [0; NESTING_WORDS],
            depth: 0,
        };
        loop {
            // A value starts here.
            match self.peek().ok_or(Invalid)? {
                b'"' => {
                    self.string()?;
                }
                b'{' => {
                    nesting.check_room()?;
                    self.pos += 1;
                    self.whitespace();
                    if !self.eat(b'}') {
                        nesting.push(true);
                        self.member_name()?;
                        continue;
                    }
                }
                b'[' => {
                    nesting.check_room()?;
                    self.pos += 1;
                    self.whitespace();
                    if !self.eat(b']') {
                        nesting.push(false);
                        continue;
                    }
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(Invalid),
            }
            // A value ended: close the levels it ends, until one goes on.
            loop {
                if nesting.depth == 0 {
                    return Ok(());
                }
                let in_object = nesting.top().ok_or(Invalid)?;
                match self.peek_after_whitespace() {
                    Some(b',') => {
                        self.pos += 1;
                        self.whitespace();
                        if in_object {
                            self.member_name()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {
                        self.pos += 1;
                        nesting.pop();
                    }
                    Some(b']') if !in_object => {
                        self.pos += 1;
                        nesting.pop();
                    }
                    _ => return Err(Invalid),
                }
            }
        }
    }

    /// `"name" :` and the whitespace after it, leaving `pos` at the member's value.
    #[inline(always)]
    fn member_name(&mut self) -> Scan<()> {
        self.string()?;
        self.expect_after_whitespace(b':')?;
        self.whitespace();
        Ok(())
    }

    /// Skips the string token at `pos`, checking that it is one: no control
    /// characters, only JSON's escapes (`\uXXXX` with four hex digits; whether
    /// surrogates pair up matters only when it is decoded), valid UTF-8. Returns
    /// whether it had an escape.
    // Inlined, like the other token scanners: most of a record is tokens, and in
    // WebAssembly a call costs a stack check and a frame each time.
    #[inline(always)]
    fn string(&mut self) -> Scan<bool> {
        let json = self.json;
        if json.get(self.pos) != Some(&b'"') {
            return Err(Invalid);
        }
        let start = self.pos + 1;
        // Most strings are keys and short values whose closing quote is in the
        // first word: settled here, before any loop (WebAssembly hosts check for
        // interruption at every loop iteration, and a record holds many strings).
        let stops = string_stops(word_at(json, start));
        if stops != 0 {
            let end = start + (stops.trailing_zeros() / 8) as usize;
            if json.get(end) == Some(&b'"') {
                self.pos = end + 1;
                return Ok(false);
            }
        }
        self.string_rest(start)
    }

    /// The rest of [`Self::string`], from `i` inside the string: longer strings,
    /// escapes, non-ASCII text and errors.
    #[inline(always)]
    fn string_rest(&mut self, mut i: usize) -> Scan<bool> {
        let json = self.json;
        let mut escaped = false;
        // One loop, not a word loop nested in a byte loop: WebAssembly hosts check
        // for interruption at every loop entry.
        loop {
            // Sixteen bytes an iteration over plain text, which is most of a record:
            // half the iterations (and interruption checks) of one word at a time.
            let mut stops = string_stops(word_at(json, i));
            if stops == 0 {
                i += 8;
                stops = string_stops(word_at(json, i));
                if stops == 0 {
                    i += 8;
                    continue;
                }
            }
            // The first stop byte; past the end (a zero from `word_at`), `get` fails.
            i += (stops.trailing_zeros() / 8) as usize;
            let byte = json.get(i).copied().ok_or(Invalid)?;
            match byte {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    i += match json.get(i + 1).copied().ok_or(Invalid)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'u' => {
                            let digits = json.get(i + 2..i + 6).ok_or(Invalid)?;
                            if !digits.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Invalid);
                            }
                            6
                        }
                        _ => return Err(Invalid),
                    };
                }
                0..=0x1f => return Err(Invalid),
                // Not a stop byte: `string_stops` marks its first stop exactly.
                0x20..=0x7f => i += 1,
                lead => {
                    let width = match lead {
                        0xC2..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        0xF0..=0xF4 => 4,
                        _ => return Err(Invalid),
                    };
                    let sequence = json.get(i..i + width).ok_or(Invalid)?;
                    core::str::from_utf8(sequence).map_err(|_| Invalid)?;
                    i += width;
                }
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    #[inline(always)]
    fn number(&mut self) -> Scan<()> {
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Invalid),
        }
        if self.eat(b'.') {
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    /// Skips ASCII digits, eight at a time (`word_at` pads the end with non-digits).
    /// Most numbers end within the first word, checked before any loop for the same
    /// reason as in `string`.
    #[inline(always)]
    fn digits(&mut self) {
        let stops = non_digits(word_at(self.json, self.pos));
        if stops != 0 {
            self.pos += (stops.trailing_zeros() / 8) as usize;
            return;
        }
        self.pos += 8;
        loop {
            let stops = non_digits(word_at(self.json, self.pos));
            if stops != 0 {
                self.pos += (stops.trailing_zeros() / 8) as usize;
                return;
            }
            self.pos += 8;
        }
    }

    #[inline(always)]
    fn some_digits(&mut self) -> Scan<()> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            Err(Invalid)
        } else {
            Ok(())
        }
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        let end = self.pos + word.len();
        if self.json.get(self.pos..end) == Some(word) {
            self.pos = end;
            Ok(())
        } else {
            Err(Invalid)
        }
    }
}

#[cfg(test)]
mod word_tests {
    use alloc::vec;

    use super::{has_backslash, non_digits, non_whitespace, same_bytes, string_stops, word_at};

    /// Eight bytes with `byte` at `at` among `filler`s, as a little-endian word.
    fn word(filler: u8, byte: u8, at: usize) -> u64 {
        let mut bytes = [filler; 8];
        bytes[at] = byte;
        u64::from_le_bytes(bytes)
    }

    #[test]
    fn non_digits_flags_exactly_the_bytes_that_are_not_digits() {
        for byte in 0..=u8::MAX {
            for at in 0..8 {
                let expected = if byte.is_ascii_digit() {
                    0
                } else {
                    0x80 << (8 * at)
                };
                assert_eq!(
                    non_digits(word(b'7', byte, at)),
                    expected,
                    "{byte:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn non_whitespace_flags_exactly_the_bytes_that_are_not_whitespace() {
        for byte in 0..=u8::MAX {
            for filler in [b' ', b'\t', b'\n', b'\r'] {
                for at in 0..8 {
                    let expected = if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                        0
                    } else {
                        0x80 << (8 * at)
                    };
                    assert_eq!(
                        non_whitespace(word(filler, byte, at)),
                        expected,
                        "{byte:#x} at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn string_stops_marks_the_first_stop_byte_exactly() {
        for byte in 0..=u8::MAX {
            let stop = matches!(byte, b'"' | b'\\' | 0..=0x1f | 0x80..=0xff);
            for at in 0..8 {
                let stops = string_stops(word(b'a', byte, at));
                let first = (stops != 0).then(|| stops.trailing_zeros() / 8);
                assert_eq!(first, stop.then_some(at as u32), "{byte:#x} at {at}");
            }
        }
        // A stop byte followed by others: the lowest mark is still the first.
        assert_eq!(
            string_stops(u64::from_le_bytes(*b"ab\x00\"\\\xffcd")).trailing_zeros() / 8,
            2
        );
    }

    #[test]
    fn word_at_reads_eight_bytes_and_zeros_past_the_end() {
        let text: alloc::vec::Vec<u8> = (1..=20).collect();
        for len in 0..=text.len() {
            let json = &text[..len];
            for at in 0..=len + 9 {
                let mut expected = [0u8; 8];
                for (k, byte) in expected.iter_mut().enumerate() {
                    *byte = json.get(at + k).copied().unwrap_or(0);
                }
                assert_eq!(
                    word_at(json, at),
                    u64::from_le_bytes(expected),
                    "{at} of {len}"
                );
            }
        }
    }

    #[test]
    fn has_backslash_finds_one_at_every_position() {
        for len in 0..=20 {
            let plain = vec![b'a'; len];
            assert!(!has_backslash(&plain), "none in {len}");
            for at in 0..len {
                let mut text = plain.clone();
                text[at] = b'\\';
                assert!(has_backslash(&text), "at {at} of {len}");
                // Bytes one off a backslash are not one.
                text[at] = b'\\' + 1;
                assert!(!has_backslash(&text), "{:?}", text);
                text[at] = b'\\' - 1;
                assert!(!has_backslash(&text), "{:?}", text);
            }
        }
    }

    #[test]
    fn same_bytes_is_slice_equality() {
        let texts: [&[u8]; 12] = [
            b"",
            b"a",
            b"b",
            b"ab",
            b"ba",
            b"abc",
            b"abd",
            b"user",
            b"usex",
            b"country",
            b"countrx",
            b"a key longer than eight bytes",
        ];
        for a in texts {
            for b in texts {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} {b:?}");
            }
        }
        for len in 0..=9 {
            let a = vec![b'x'; len];
            for at in 0..len {
                let mut b = a.clone();
                b[at] = b'y';
                assert!(!same_bytes(&a, &b), "differs at {at} of {len}");
            }
        }
    }
}
