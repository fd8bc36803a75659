//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's SHA-256), sans-IO.
//!
//! What it does: the four messages of a SCRAM exchange, for the client and for the
//! server, and the credential a server stores in place of a password. What it does not
//! do: channel binding (Quiver runs SCRAM inside TLS, so the GS2 header is always
//! `n,,`), authorization identities, SASLprep (usernames and passwords are used as
//! their UTF-8 bytes), or any I/O: callers move the strings.
//!
//! The exchange, each step consuming the state of the previous one:
//!
//! ```
//! use quiver_wire::scram::{ScramClient, ScramCredential, ScramServer, SCRAM_ITERATIONS_DEFAULT};
//!
//! # fn main() -> Result<(), quiver_wire::scram::ScramError> {
//! let stored = ScramCredential::new("pencil", SCRAM_ITERATIONS_DEFAULT)?;
//! let server = ScramServer::new()?; // build once, share
//!
//! let (client, client_first) = ScramClient::new("user", "pencil")?;
//! let (server_first_state, server_first) =
//!     server.handle_client_first(&client_first, |name| (name == "user").then(|| stored.clone()))?;
//! let (client_final_state, client_final) = client.handle_server_first(&server_first)?;
//! let (user, server_final) = server_first_state.handle_client_final(&client_final)?;
//! client_final_state.handle_server_final(&server_final)?;
//! assert_eq!(user, "user");
//! # Ok(())
//! # }
//! ```
//!
//! A server answers an unknown user as it answers a known one (a salt derived from the
//! name, the default iteration count) and fails only at the last step, with
//! [`ScramError::BadProof`] exactly as for a wrong password, so the exchange does not
//! tell whether a user exists.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

/// The SASL mechanism name.
pub const SCRAM_MECHANISM: &str = "SCRAM-SHA-256";
/// The fewest PBKDF2 iterations either side accepts (RFC 7677's minimum).
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;
/// The most PBKDF2 iterations either side accepts, bounding the work a peer can ask for.
pub const SCRAM_ITERATIONS_MAX: u32 = 100_000;
/// The iterations [`ScramServer::new`] announces for unknown users. Create stored
/// credentials with the same count, or unknown users stand out.
pub const SCRAM_ITERATIONS_DEFAULT: u32 = SCRAM_ITERATIONS_MIN;
/// The length of the salt [`ScramCredential::new`] draws.
pub const SCRAM_SALT_BYTES: usize = 16;
/// The longest SCRAM message either side accepts or produces.
pub const SCRAM_MESSAGE_BYTES_MAX: usize = 1024;
/// The longest username, in bytes of UTF-8, before escaping.
pub const SCRAM_USERNAME_BYTES_MAX: usize = 256;

/// The GS2 header of an exchange without channel binding, and its base64 (`c=`).
const GS2_HEADER: &str = "n,,";
const GS2_HEADER_BASE64: &str = "biws";
/// Random bytes in a nonce; base64 makes them 24 printable characters.
const NONCE_RANDOM_BYTES: usize = 18;
/// Attribute names RFC 5802 defines; an extension may not reuse them.
const RESERVED_ATTRIBUTES: &[u8] = b"acemnprsiv";
const KEY_BYTES: usize = 32;

/// Why a SCRAM step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The message does not follow RFC 5802's grammar (missing or misplaced attribute,
    /// bad base64, bad characters).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The message is longer than [`SCRAM_MESSAGE_BYTES_MAX`].
    #[error("SCRAM message longer than {SCRAM_MESSAGE_BYTES_MAX} bytes")]
    MessageTooLong,
    /// The username is empty, too long, has a control character or a bad `=` escape.
    #[error("invalid SCRAM username: {0}")]
    InvalidUsername(&'static str),
    /// The client asked for channel binding (GS2 flag `y` or `p=`).
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    /// The message uses a feature this implementation refuses (authorization identity,
    /// mandatory extension `m=`).
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    /// The server's nonce does not extend the client's, or the client's final nonce is
    /// not the combined one.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// An iteration count outside [`SCRAM_ITERATIONS_MIN`]..=[`SCRAM_ITERATIONS_MAX`].
    #[error("SCRAM iteration count outside {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}")]
    IterationsOutOfRange,
    /// Authentication failed: wrong password or unknown user (deliberately the same).
    #[error("SCRAM authentication failed")]
    BadProof,
    /// The server's signature is wrong: it does not know the credential.
    #[error("SCRAM server signature mismatch")]
    BadServerSignature,
    /// The server ended the exchange with `e=VALUE`.
    #[error("SCRAM server error: {0}")]
    ServerError(String),
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
}

impl ScramError {
    /// The server-final message (`e=VALUE`, RFC 5802 section 7) a server may send when
    /// [`ScramServerFirst::handle_client_final`] fails with this error.
    pub fn server_final_message(&self) -> String {
        let value = match self {
            ScramError::BadProof => "invalid-proof",
            ScramError::Malformed(_) | ScramError::MessageTooLong => "invalid-encoding",
            ScramError::InvalidUsername(_) => "invalid-username-encoding",
            ScramError::ChannelBinding => "channel-binding-not-supported",
            _ => "other-error",
        };
        format!("e={value}")
    }
}

/// What a server stores for a user instead of the password (RFC 5802 section 3).
///
/// `PartialEq` is not constant-time; do not use it to check secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; KEY_BYTES],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; KEY_BYTES],
}

impl ScramCredential {
    /// Derives a credential with a fresh random salt of [`SCRAM_SALT_BYTES`].
    pub fn new(password: &str, iterations: u32) -> Result<Self, ScramError> {
        let mut salt = [0u8; SCRAM_SALT_BYTES];
        fill_random(&mut salt)?;
        Self::from_salt(password, &salt, iterations)
    }

    /// Derives a credential with the given salt (non-empty).
    pub fn from_salt(password: &str, salt: &[u8], iterations: u32) -> Result<Self, ScramError> {
        if salt.is_empty() {
            return Err(ScramError::Malformed("empty salt"));
        }
        let keys = derive_keys(password.as_bytes(), salt, iterations)?;
        Ok(ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        })
    }
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("salt", &BASE64.encode(&self.salt))
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// The client before the server's first message. Holds the password until then.
pub struct ScramClient {
    password: String,
    client_nonce: String,
    client_first_bare: String,
}

impl ScramClient {
    /// Starts an exchange: returns the state and the client-first message to send.
    pub fn new(username: &str, password: &str) -> Result<(Self, String), ScramError> {
        Self::with_nonce(username, password, random_nonce()?)
    }

    fn with_nonce(
        username: &str,
        password: &str,
        client_nonce: String,
    ) -> Result<(Self, String), ScramError> {
        check_username(username)?;
        if !valid_nonce(&client_nonce) {
            return Err(ScramError::Malformed("invalid nonce"));
        }
        let client_first_bare = format!("n={},r={client_nonce}", escape_username(username));
        let client_first = format!("{GS2_HEADER}{client_first_bare}");
        check_message(&client_first)?;
        let client = ScramClient {
            password: password.to_owned(),
            client_nonce,
            client_first_bare,
        };
        Ok((client, client_first))
    }

    /// Takes the server-first message; returns the state and the client-final message.
    /// Runs PBKDF2 with the server's salt and iteration count (bounded).
    pub fn handle_server_first(
        self,
        server_first: &str,
    ) -> Result<(ScramClientFinal, String), ScramError> {
        check_message(server_first)?;
        let mut parts = server_first.split(',');
        let nonce = attribute(parts.next(), b'r', "expected nonce r=")?;
        if !valid_nonce(nonce) {
            return Err(ScramError::Malformed("invalid nonce"));
        }
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = attribute(parts.next(), b's', "expected salt s=")?;
        let salt = decode_base64(salt, "invalid base64 in salt")?;
        if salt.is_empty() {
            return Err(ScramError::Malformed("empty salt"));
        }
        let iterations =
            parse_iterations(attribute(parts.next(), b'i', "expected iterations i=")?)?;
        check_extensions(parts)?;

        let keys = derive_keys(self.password.as_bytes(), &salt, iterations)?;
        let without_proof = format!("c={GS2_HEADER_BASE64},r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &keys.stored_key),
            auth_message.as_bytes(),
        );
        let proof = xor(&keys.client_key, signature.as_ref());
        let client_final = format!("{without_proof},p={}", BASE64.encode(proof));
        check_message(&client_final)?;
        let state = ScramClientFinal {
            server_key: hmac::Key::new(hmac::HMAC_SHA256, &keys.server_key),
            auth_message,
        };
        Ok((state, client_final))
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

/// The client after sending its final message, waiting for the server's signature.
#[derive(Clone)]
pub struct ScramClientFinal {
    server_key: hmac::Key,
    auth_message: String,
}

impl ScramClientFinal {
    /// Takes the server-final message: `Ok` only if it carries the right server
    /// signature (`v=`); `e=VALUE` becomes [`ScramError::ServerError`].
    pub fn handle_server_final(self, server_final: &str) -> Result<(), ScramError> {
        check_message(server_final)?;
        let mut parts = server_final.split(',');
        let first = parts.next().unwrap_or_default();
        if let Some(value) = first.strip_prefix("e=") {
            return Err(ScramError::ServerError(value.to_owned()));
        }
        let signature = attribute(Some(first), b'v', "expected verifier v= or error e=")?;
        let signature = decode_base64(signature, "invalid base64 in server signature")?;
        check_extensions(parts)?;
        hmac::verify(&self.server_key, self.auth_message.as_bytes(), &signature)
            .map_err(|_| ScramError::BadServerSignature)
    }
}

impl fmt::Debug for ScramClientFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClientFinal").finish_non_exhaustive()
    }
}

/// The server side: keys for answering unknown users. Build once and share (cheap to
/// clone); every exchange starts with [`ScramServer::handle_client_first`].
#[derive(Clone)]
pub struct ScramServer {
    /// Derives the salt and keys of unknown users, so they are stable per name.
    fake_key: hmac::Key,
    /// Keys the constant-time comparison of proofs.
    compare_key: hmac::Key,
    fake_iterations: u32,
}

impl ScramServer {
    /// A server whose answers for unknown users come from a random key drawn once per
    /// process (stable across instances, not across restarts) and
    /// [`SCRAM_ITERATIONS_DEFAULT`].
    pub fn new() -> Result<Self, ScramError> {
        Self::build(process_fake_key()?, SCRAM_ITERATIONS_DEFAULT)
    }

    /// A server whose answers for unknown users come from `secret` (at least 16 bytes,
    /// e.g. from the broker's configuration, so they survive restarts) and
    /// `fake_iterations`, which should be the iterations of the stored credentials.
    pub fn with_key(secret: &[u8], fake_iterations: u32) -> Result<Self, ScramError> {
        if secret.len() < 16 {
            return Err(ScramError::Malformed("server secret shorter than 16 bytes"));
        }
        Self::build(secret, fake_iterations)
    }

    fn build(secret: &[u8], fake_iterations: u32) -> Result<Self, ScramError> {
        check_iterations(fake_iterations)?;
        let mut compare = [0u8; KEY_BYTES];
        fill_random(&mut compare)?;
        Ok(ScramServer {
            fake_key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            compare_key: hmac::Key::new(hmac::HMAC_SHA256, &compare),
            fake_iterations,
        })
    }

    /// Takes the client-first message and looks the user up with `lookup` (given the
    /// unescaped username); returns the state and the server-first message. An unknown
    /// user gets a plausible answer and fails at the final step like a wrong password.
    pub fn handle_client_first(
        &self,
        client_first: &str,
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ScramServerFirst, String), ScramError> {
        self.first_with_nonce(client_first, lookup, &random_nonce()?)
    }

    fn first_with_nonce(
        &self,
        client_first: &str,
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        server_nonce: &str,
    ) -> Result<(ScramServerFirst, String), ScramError> {
        check_message(client_first)?;
        let (flag, rest) = client_first
            .split_once(',')
            .ok_or(ScramError::Malformed("missing GS2 header"))?;
        match flag {
            "n" => {}
            "y" => return Err(ScramError::ChannelBinding),
            _ if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("invalid channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("missing GS2 header"))?;
        match authzid {
            "" => {}
            _ if authzid.starts_with("a=") => {
                return Err(ScramError::Unsupported("authorization identity"));
            }
            _ => return Err(ScramError::Malformed("invalid authorization identity")),
        }
        let mut parts = bare.split(',');
        let username = unescape_username(attribute(parts.next(), b'n', "expected username n=")?)?;
        let client_nonce = attribute(parts.next(), b'r', "expected nonce r=")?;
        if !valid_nonce(client_nonce) {
            return Err(ScramError::Malformed("invalid nonce"));
        }
        check_extensions(parts)?;

        let (credential, known) = match lookup(&username) {
            Some(credential) => (credential, true),
            None => (self.fake_credential(&username), false),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        check_message(&server_first)?;
        let state = ScramServerFirst {
            auth_prefix: format!("{bare},{server_first},"),
            username,
            credential,
            known,
            nonce,
            compare_key: self.compare_key.clone(),
        };
        Ok((state, server_first))
    }

    /// What an unknown user looks like: a salt and keys derived from the name, so
    /// repeated attempts see the same salt as they would for a real user.
    fn fake_credential(&self, username: &str) -> ScramCredential {
        let derive = |label: &[u8]| {
            let mut ctx = hmac::Context::with_key(&self.fake_key);
            ctx.update(label);
            ctx.update(username.as_bytes());
            to_key(ctx.sign().as_ref())
        };
        let salt = derive(b"quiver-scram-fake-salt\0");
        ScramCredential {
            salt: salt[..SCRAM_SALT_BYTES].to_vec(),
            iterations: self.fake_iterations,
            stored_key: derive(b"quiver-scram-fake-stored-key\0"),
            server_key: derive(b"quiver-scram-fake-server-key\0"),
        }
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("fake_iterations", &self.fake_iterations)
            .finish_non_exhaustive()
    }
}

/// The server after sending its first message, waiting for the client's proof.
pub struct ScramServerFirst {
    username: String,
    credential: ScramCredential,
    known: bool,
    nonce: String,
    /// `client-first-bare "," server-first ","`: the auth message minus the client's
    /// final message without proof.
    auth_prefix: String,
    compare_key: hmac::Key,
}

impl ScramServerFirst {
    /// The username the client claims (unescaped); not yet authenticated.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Takes the client-final message and checks the proof in constant time; returns
    /// the authenticated username and the server-final message to send. A wrong
    /// password and an unknown user both fail with [`ScramError::BadProof`].
    pub fn handle_client_final(self, client_final: &str) -> Result<(String, String), ScramError> {
        check_message(client_final)?;
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("expected proof p= last"))?;
        if proof.contains(',') {
            return Err(ScramError::Malformed("expected proof p= last"));
        }
        let mut parts = without_proof.split(',');
        let binding = attribute(parts.next(), b'c', "expected channel binding c=")?;
        if decode_base64(binding, "invalid base64 in channel binding")? != GS2_HEADER.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding does not match the GS2 header",
            ));
        }
        let nonce = attribute(parts.next(), b'r', "expected nonce r=")?;
        if nonce != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        check_extensions(parts)?;
        let proof = decode_base64(proof, "invalid base64 in proof")?;
        if proof.len() != KEY_BYTES {
            return Err(ScramError::Malformed("proof is not 32 bytes"));
        }

        let auth_message = format!("{}{without_proof}", self.auth_prefix);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.credential.stored_key),
            auth_message.as_bytes(),
        );
        let client_key = xor(&proof, signature.as_ref());
        let candidate = digest::digest(&digest::SHA256, &client_key);
        // Constant time: compare MACs of both values under a random key.
        let expected = hmac::sign(&self.compare_key, &self.credential.stored_key);
        let matches =
            hmac::verify(&self.compare_key, candidate.as_ref(), expected.as_ref()).is_ok();
        if !(matches & self.known) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.credential.server_key),
            auth_message.as_bytes(),
        );
        Ok((
            self.username,
            format!("v={}", BASE64.encode(server_signature.as_ref())),
        ))
    }
}

impl fmt::Debug for ScramServerFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServerFirst")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

struct DerivedKeys {
    client_key: [u8; KEY_BYTES],
    stored_key: [u8; KEY_BYTES],
    server_key: [u8; KEY_BYTES],
}

/// SaltedPassword and the keys RFC 5802 section 3 derives from it.
fn derive_keys(password: &[u8], salt: &[u8], iterations: u32) -> Result<DerivedKeys, ScramError> {
    let iterations = check_iterations(iterations)?;
    let mut salted = [0u8; KEY_BYTES];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = to_key(hmac::sign(&key, b"Client Key").as_ref());
    Ok(DerivedKeys {
        client_key,
        stored_key: to_key(digest::digest(&digest::SHA256, &client_key).as_ref()),
        server_key: to_key(hmac::sign(&key, b"Server Key").as_ref()),
    })
}

fn check_iterations(iterations: u32) -> Result<NonZeroU32, ScramError> {
    if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&iterations) {
        return Err(ScramError::IterationsOutOfRange);
    }
    NonZeroU32::new(iterations).ok_or(ScramError::IterationsOutOfRange)
}

/// `i=` value: a positive decimal without leading zeros, within bounds.
fn parse_iterations(value: &str) -> Result<u32, ScramError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || value.starts_with('0') {
        return Err(ScramError::Malformed("invalid iteration count"));
    }
    if value.len() > 10 {
        return Err(ScramError::IterationsOutOfRange);
    }
    let iterations = value
        .parse::<u64>()
        .map_err(|_| ScramError::Malformed("invalid iteration count"))?;
    let iterations = u32::try_from(iterations).map_err(|_| ScramError::IterationsOutOfRange)?;
    check_iterations(iterations)?;
    Ok(iterations)
}

fn check_message(message: &str) -> Result<(), ScramError> {
    if message.len() > SCRAM_MESSAGE_BYTES_MAX {
        return Err(ScramError::MessageTooLong);
    }
    if message.contains('\0') {
        return Err(ScramError::Malformed("NUL character"));
    }
    Ok(())
}

/// The value of the attribute `name` in `part` (`name=value`); `m=` is refused.
fn attribute<'a>(
    part: Option<&'a str>,
    name: u8,
    expected: &'static str,
) -> Result<&'a str, ScramError> {
    let part = part.ok_or(ScramError::Malformed(expected))?;
    match part.as_bytes() {
        [b'm', b'=', ..] => Err(ScramError::Unsupported("mandatory extension")),
        [n, b'=', ..] if *n == name => Ok(&part[2..]),
        _ => Err(ScramError::Malformed(expected)),
    }
}

/// Trailing optional extensions: `ALPHA=value`, ignored unless they reuse a defined
/// attribute (`m=` is refused as unsupported).
fn check_extensions<'a>(parts: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for part in parts {
        match part.as_bytes() {
            [b'm', b'=', ..] => return Err(ScramError::Unsupported("mandatory extension")),
            [name, b'=', _, ..]
                if name.is_ascii_alphabetic() && !RESERVED_ATTRIBUTES.contains(name) => {}
            _ => return Err(ScramError::Malformed("invalid or repeated attribute")),
        }
    }
    Ok(())
}

/// RFC 5802 nonce characters: printable ASCII except `,`.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn check_username(username: &str) -> Result<(), ScramError> {
    if username.is_empty() {
        return Err(ScramError::InvalidUsername("empty"));
    }
    if username.len() > SCRAM_USERNAME_BYTES_MAX {
        return Err(ScramError::InvalidUsername("too long"));
    }
    if username.chars().any(char::is_control) {
        return Err(ScramError::InvalidUsername("control character"));
    }
    Ok(())
}

/// `saslname`: `,` becomes `=2C` and `=` becomes `=3D`.
fn escape_username(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

fn unescape_username(escaped: &str) -> Result<String, ScramError> {
    let mut username = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        username.push_str(&rest[..at]);
        match rest.get(at + 1..at + 3) {
            Some("2C") => username.push(','),
            Some("3D") => username.push('='),
            _ => return Err(ScramError::InvalidUsername("invalid = escape")),
        }
        rest = rest.get(at + 3..).unwrap_or_default();
    }
    username.push_str(rest);
    check_username(&username)?;
    Ok(username)
}

fn decode_base64(value: &str, what: &'static str) -> Result<Vec<u8>, ScramError> {
    BASE64
        .decode(value)
        .map_err(|_| ScramError::Malformed(what))
}

fn xor(a: &[u8], b: &[u8]) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// The first 32 bytes of a SHA-256 output (always exactly 32).
fn to_key(bytes: &[u8]) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

fn fill_random(dest: &mut [u8]) -> Result<(), ScramError> {
    SystemRandom::new()
        .fill(dest)
        .map_err(|_| ScramError::Random)
}

fn random_nonce() -> Result<String, ScramError> {
    let mut bytes = [0u8; NONCE_RANDOM_BYTES];
    fill_random(&mut bytes)?;
    Ok(BASE64.encode(bytes))
}

/// The key [`ScramServer::new`] derives unknown users from, drawn once per process so
/// every instance answers an unknown name the same way.
fn process_fake_key() -> Result<&'static [u8; KEY_BYTES], ScramError> {
    static KEY: OnceLock<[u8; KEY_BYTES]> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key);
    }
    let mut key = [0u8; KEY_BYTES];
    fill_random(&mut key)?;
    Ok(KEY.get_or_init(|| key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

    fn rfc_credential() -> ScramCredential {
        static CREDENTIAL: OnceLock<ScramCredential> = OnceLock::new();
        CREDENTIAL
            .get_or_init(|| {
                let salt = BASE64.decode(RFC_SALT).expect("salt");
                ScramCredential::from_salt("pencil", &salt, 4096).expect("credential")
            })
            .clone()
    }

    fn rfc_client(password: &str) -> (ScramClient, String) {
        ScramClient::with_nonce("user", password, RFC_CLIENT_NONCE.to_owned()).expect("client")
    }

    fn lookup_user(cred: &ScramCredential) -> impl FnOnce(&str) -> Option<ScramCredential> + '_ {
        move |name| (name == "user").then(|| cred.clone())
    }

    /// Server state after the RFC client-first, and the server-first message.
    fn rfc_server_first(server: &ScramServer) -> (ScramServerFirst, String) {
        let cred = rfc_credential();
        let (_, client_first) = rfc_client("pencil");
        server
            .first_with_nonce(&client_first, lookup_user(&cred), RFC_SERVER_NONCE)
            .expect("server first")
    }

    #[test]
    fn scram_rfc7677_vector() {
        let server = ScramServer::new().expect("server");
        let cred = rfc_credential();
        let (client, client_first) = rfc_client("pencil");
        assert_eq!(client_first, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");

        let (server_state, server_first) = server
            .first_with_nonce(&client_first, lookup_user(&cred), RFC_SERVER_NONCE)
            .expect("server first");
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        assert_eq!(server_state.username(), "user");

        let (client_state, client_final) = client
            .handle_server_first(&server_first)
            .expect("client final");
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );

        let (user, server_final) = server_state
            .handle_client_final(&client_final)
            .expect("server final");
        assert_eq!(user, "user");
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        client_state
            .handle_server_final(&server_final)
            .expect("verified");
    }

    /// Runs a whole exchange; the server's error if it refuses the proof.
    fn exchange(
        server: &ScramServer,
        user: &str,
        password: &str,
        stored: Option<(&str, &ScramCredential)>,
    ) -> Result<String, ScramError> {
        let (client, client_first) = ScramClient::new(user, password)?;
        let (server_state, server_first) = server.handle_client_first(&client_first, |name| {
            stored.and_then(|(n, c)| (n == name).then(|| c.clone()))
        })?;
        let (client_state, client_final) = client.handle_server_first(&server_first)?;
        let (name, server_final) = server_state.handle_client_final(&client_final)?;
        client_state.handle_server_final(&server_final)?;
        Ok(name)
    }

    #[test]
    fn scram_round_trip_with_random_salt() {
        let server = ScramServer::new().expect("server");
        let cred = ScramCredential::new("correct horse", SCRAM_ITERATIONS_DEFAULT).expect("cred");
        assert_eq!(cred.salt.len(), SCRAM_SALT_BYTES);
        let again = ScramCredential::new("correct horse", SCRAM_ITERATIONS_DEFAULT).expect("cred");
        assert_ne!(cred.salt, again.salt);
        assert_eq!(
            exchange(&server, "alice", "correct horse", Some(("alice", &cred))),
            Ok("alice".to_owned())
        );
    }

    #[test]
    fn scram_username_escaping_round_trip() {
        let server = ScramServer::new().expect("server");
        let user = "a,b=c,=";
        let cred = ScramCredential::new("pw", SCRAM_ITERATIONS_DEFAULT).expect("cred");
        let (_, client_first) = ScramClient::new(user, "pw").expect("client");
        assert!(client_first.starts_with("n,,n=a=2Cb=3Dc=2C=3D,r="));
        assert_eq!(
            exchange(&server, user, "pw", Some((user, &cred))),
            Ok(user.to_owned())
        );
        assert_eq!(unescape_username("=3D=2C"), Ok("=,".to_owned()));
    }

    #[test]
    fn scram_wrong_password_fails() {
        let server = ScramServer::new().expect("server");
        let cred = ScramCredential::new("right", SCRAM_ITERATIONS_DEFAULT).expect("cred");
        let err = exchange(&server, "alice", "wrong", Some(("alice", &cred))).expect_err("refused");
        assert_eq!(err, ScramError::BadProof);
        assert_eq!(err.server_final_message(), "e=invalid-proof");
    }

    /// Splits a server-first into (nonce length, salt bytes, iterations).
    fn shape(server_first: &str) -> (usize, Vec<u8>, String) {
        let parts: Vec<&str> = server_first.split(',').collect();
        assert_eq!(parts.len(), 3, "{server_first}");
        let nonce = parts[0].strip_prefix("r=").expect("r=");
        let salt = BASE64
            .decode(parts[1].strip_prefix("s=").expect("s="))
            .expect("salt");
        let iterations = parts[2].strip_prefix("i=").expect("i=").to_owned();
        (nonce.len(), salt, iterations)
    }

    #[test]
    fn scram_unknown_user_looks_like_wrong_password() {
        let server = ScramServer::new().expect("server");
        let cred = ScramCredential::new("right", SCRAM_ITERATIONS_DEFAULT).expect("cred");
        let stored = Some(("alice", &cred));

        let unknown = exchange(&server, "mallory", "anything", stored).expect_err("refused");
        let wrong = exchange(&server, "alice", "wrong", stored).expect_err("refused");
        assert_eq!(unknown, wrong);
        assert_eq!(unknown.server_final_message(), wrong.server_final_message());
        // Even the right password of another user does not get an unknown name in.
        assert_eq!(
            exchange(&server, "mallory", "right", stored),
            Err(ScramError::BadProof)
        );

        let first = |srv: &ScramServer, user: &str| {
            let (_, client_first) = ScramClient::new(user, "x").expect("client");
            srv.handle_client_first(&client_first, |n| (n == "alice").then(|| cred.clone()))
                .expect("server first")
                .1
        };
        let known = shape(&first(&server, "alice"));
        let fake = shape(&first(&server, "mallory"));
        assert_eq!(known.0, fake.0);
        assert_eq!(known.1.len(), fake.1.len());
        assert_eq!(known.2, fake.2);
        // Stable per name, across attempts and instances, like a real salt.
        let other_instance = ScramServer::new().expect("server");
        assert_eq!(fake.1, shape(&first(&server, "mallory")).1);
        assert_eq!(fake.1, shape(&first(&other_instance, "mallory")).1);
        assert_ne!(fake.1, shape(&first(&server, "mallory2")).1);

        // A keyed server announces its configured iterations for unknown users.
        let keyed = ScramServer::with_key(&[7u8; 32], 8192).expect("server");
        let keyed_fake = shape(&first(&keyed, "mallory"));
        assert_eq!(keyed_fake.2, "8192");
        assert_eq!(
            keyed_fake.1,
            shape(&first(
                &ScramServer::with_key(&[7u8; 32], 8192).expect("server"),
                "mallory"
            ))
            .1
        );
        assert!(ScramServer::with_key(&[7u8; 8], 8192).is_err());
        assert_eq!(
            ScramServer::with_key(&[7u8; 32], 1).err(),
            Some(ScramError::IterationsOutOfRange)
        );
    }

    #[test]
    fn scram_tampered_server_signature_fails() {
        let server = ScramServer::new().expect("server");
        let (server_state, server_first) = rfc_server_first(&server);
        let (client, _) = rfc_client("pencil");
        let (client_state, client_final) =
            client.handle_server_first(&server_first).expect("final");
        let (_, server_final) = server_state.handle_client_final(&client_final).expect("ok");
        let good = server_final.clone();

        let mut tampered = server_final.into_bytes();
        tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(
            client_state.clone().handle_server_final(&tampered),
            Err(ScramError::BadServerSignature)
        );
        // 31 bytes of valid base64.
        let short = format!("v={}", BASE64.encode([0u8; 31]));
        assert_eq!(
            client_state.clone().handle_server_final(&short),
            Err(ScramError::BadServerSignature)
        );
        for (msg, want) in [
            (
                "v=!!!!",
                ScramError::Malformed("invalid base64 in server signature"),
            ),
            (
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
                ScramError::Malformed("invalid base64 in server signature"),
            ),
            (
                "",
                ScramError::Malformed("expected verifier v= or error e="),
            ),
            (
                "x=1",
                ScramError::Malformed("expected verifier v= or error e="),
            ),
            (
                "e=invalid-proof",
                ScramError::ServerError("invalid-proof".to_owned()),
            ),
        ] {
            assert_eq!(
                client_state.clone().handle_server_final(msg),
                Err(want),
                "{msg}"
            );
        }
        assert_eq!(
            client_state
                .clone()
                .handle_server_final(&format!("{good},m=x")),
            Err(ScramError::Unsupported("mandatory extension"))
        );
        assert_eq!(
            client_state
                .clone()
                .handle_server_final(&format!("{good},x=ext")),
            Ok(())
        );
        assert_eq!(client_state.handle_server_final(&good), Ok(()));
    }

    #[test]
    fn scram_server_rejects_malformed_client_first() {
        let server = ScramServer::new().expect("server");
        let long_user = "u".repeat(SCRAM_USERNAME_BYTES_MAX + 1);
        let long_first = format!("n,,n=user,r={}", "x".repeat(SCRAM_MESSAGE_BYTES_MAX));
        let cases: Vec<(String, ScramError)> = vec![
            ("".into(), ScramError::Malformed("missing GS2 header")),
            ("n".into(), ScramError::Malformed("missing GS2 header")),
            ("n,".into(), ScramError::Malformed("missing GS2 header")),
            ("n,,".into(), ScramError::Malformed("expected username n=")),
            (
                "n,,r=abc".into(),
                ScramError::Malformed("expected username n="),
            ),
            (
                "n,,n=user".into(),
                ScramError::Malformed("expected nonce r="),
            ),
            (
                "n,,n=user,r=".into(),
                ScramError::Malformed("invalid nonce"),
            ),
            (
                "n,,n=user,s=abc".into(),
                ScramError::Malformed("expected nonce r="),
            ),
            ("y,,n=user,r=abc".into(), ScramError::ChannelBinding),
            (
                "p=tls-exporter,,n=user,r=abc".into(),
                ScramError::ChannelBinding,
            ),
            (
                "x,,n=user,r=abc".into(),
                ScramError::Malformed("invalid channel binding flag"),
            ),
            (
                "n,a=admin,n=user,r=abc".into(),
                ScramError::Unsupported("authorization identity"),
            ),
            (
                "n,x,n=user,r=abc".into(),
                ScramError::Malformed("invalid authorization identity"),
            ),
            (
                "n,,m=ext,n=user,r=abc".into(),
                ScramError::Unsupported("mandatory extension"),
            ),
            (
                "n,,n=user,r=abc,m=ext".into(),
                ScramError::Unsupported("mandatory extension"),
            ),
            (
                "n,,n=user,r=abc,junk".into(),
                ScramError::Malformed("invalid or repeated attribute"),
            ),
            (
                "n,,n=user,r=abc,r=def".into(),
                ScramError::Malformed("invalid or repeated attribute"),
            ),
            (
                "n,,n=user,r=abc,x=".into(),
                ScramError::Malformed("invalid or repeated attribute"),
            ),
            (
                "n,,n=us=2cer,r=abc".into(),
                ScramError::InvalidUsername("invalid = escape"),
            ),
            (
                "n,,n=us=41er,r=abc".into(),
                ScramError::InvalidUsername("invalid = escape"),
            ),
            (
                "n,,n=user=,r=abc".into(),
                ScramError::InvalidUsername("invalid = escape"),
            ),
            (
                "n,,n=user=2,r=abc".into(),
                ScramError::InvalidUsername("invalid = escape"),
            ),
            ("n,,n=,r=abc".into(), ScramError::InvalidUsername("empty")),
            (
                "n,,n=us\ter,r=abc".into(),
                ScramError::InvalidUsername("control character"),
            ),
            (
                format!("n,,n={long_user},r=abc"),
                ScramError::InvalidUsername("too long"),
            ),
            (
                "n,,n=user,r=a\u{e9}b".into(),
                ScramError::Malformed("invalid nonce"),
            ),
            (
                "n,,n=user,r=abc\0".into(),
                ScramError::Malformed("NUL character"),
            ),
            (long_first, ScramError::MessageTooLong),
        ];
        for (msg, want) in cases {
            let got = server.handle_client_first(&msg, |_| None).map(|(_, m)| m);
            assert_eq!(got, Err(want), "{msg:?}");
        }
        // A well-formed extension is ignored.
        assert!(
            server
                .handle_client_first("n,,n=user,r=abc,x=ext", |_| None)
                .is_ok()
        );
        // A username of exactly the limit is fine.
        let max_user = ",".repeat(SCRAM_USERNAME_BYTES_MAX);
        let (state, _) = server
            .handle_client_first(
                &format!("n,,n={},r=abc", escape_username(&max_user)),
                |_| None,
            )
            .expect("max username");
        assert_eq!(state.username(), max_user);
    }

    #[test]
    fn scram_client_rejects_malformed_server_first() {
        let good = format!("r={RFC_CLIENT_NONCE}{RFC_SERVER_NONCE},s={RFC_SALT},i=4096");
        let nonce = format!("r={RFC_CLIENT_NONCE}{RFC_SERVER_NONCE}");
        let cases: Vec<(String, ScramError)> = vec![
            ("".into(), ScramError::Malformed("expected nonce r=")),
            (
                format!("s={RFC_SALT},i=4096"),
                ScramError::Malformed("expected nonce r="),
            ),
            (
                format!("{nonce},i=4096"),
                ScramError::Malformed("expected salt s="),
            ),
            (
                format!("{nonce},s={RFC_SALT}"),
                ScramError::Malformed("expected iterations i="),
            ),
            (
                format!("{nonce},s=!!!!,i=4096"),
                ScramError::Malformed("invalid base64 in salt"),
            ),
            (
                format!("{nonce},s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096"),
                ScramError::Malformed("invalid base64 in salt"),
            ),
            (
                format!("{nonce},s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096"),
                ScramError::Malformed("invalid base64 in salt"),
            ),
            (
                format!("{nonce},s=,i=4096"),
                ScramError::Malformed("empty salt"),
            ),
            (
                format!("r=someoneelse,s={RFC_SALT},i=4096"),
                ScramError::NonceMismatch,
            ),
            (
                format!("r=X{RFC_CLIENT_NONCE}abc,s={RFC_SALT},i=4096"),
                ScramError::NonceMismatch,
            ),
            (
                format!("r={RFC_CLIENT_NONCE},s={RFC_SALT},i=4096"),
                ScramError::NonceMismatch,
            ),
            (
                format!("r=rOprNGfwEbe,s={RFC_SALT},i=4096"),
                ScramError::NonceMismatch,
            ),
            (
                format!("r={RFC_CLIENT_NONCE}a,b,s={RFC_SALT},i=4096"),
                ScramError::Malformed("expected salt s="),
            ),
            (
                format!("{nonce},s={RFC_SALT},i=1"),
                ScramError::IterationsOutOfRange,
            ),
            (
                format!("{nonce},s={RFC_SALT},i=4095"),
                ScramError::IterationsOutOfRange,
            ),
            (
                format!("{nonce},s={RFC_SALT},i=100001"),
                ScramError::IterationsOutOfRange,
            ),
            (
                format!("{nonce},s={RFC_SALT},i=1000000000"),
                ScramError::IterationsOutOfRange,
            ),
            (
                format!("{nonce},s={RFC_SALT},i=4294967296"),
                ScramError::IterationsOutOfRange,
            ),
            (
                format!("{nonce},s={RFC_SALT},i=99999999999999999999999"),
                ScramError::IterationsOutOfRange,
            ),
            (
                format!("{nonce},s={RFC_SALT},i=04096"),
                ScramError::Malformed("invalid iteration count"),
            ),
            (
                format!("{nonce},s={RFC_SALT},i=-4096"),
                ScramError::Malformed("invalid iteration count"),
            ),
            (
                format!("{nonce},s={RFC_SALT},i=+4096"),
                ScramError::Malformed("invalid iteration count"),
            ),
            (
                format!("{nonce},s={RFC_SALT},i="),
                ScramError::Malformed("invalid iteration count"),
            ),
            (
                format!("{nonce},s={RFC_SALT},i=4096 "),
                ScramError::Malformed("invalid iteration count"),
            ),
            (
                format!("m=ext,{good}"),
                ScramError::Unsupported("mandatory extension"),
            ),
            (
                format!("{good},m=ext"),
                ScramError::Unsupported("mandatory extension"),
            ),
            (
                format!("{good},s=again"),
                ScramError::Malformed("invalid or repeated attribute"),
            ),
            (
                format!("{good},{}", "x".repeat(SCRAM_MESSAGE_BYTES_MAX)),
                ScramError::MessageTooLong,
            ),
        ];
        for (msg, want) in cases {
            let got = rfc_client("pencil")
                .0
                .handle_server_first(&msg)
                .map(|(_, m)| m);
            assert_eq!(got, Err(want), "{msg:?}");
        }
        assert!(
            rfc_client("pencil")
                .0
                .handle_server_first(&format!("{good},x=ext"))
                .is_ok()
        );
    }

    #[test]
    fn scram_server_rejects_malformed_client_final() {
        let server = ScramServer::new().expect("server");
        let (_, server_first) = rfc_server_first(&server);
        let (_, client_final) = rfc_client("pencil")
            .0
            .handle_server_first(&server_first)
            .expect("final");
        let (without_proof, proof) = client_final.rsplit_once(",p=").expect("proof");
        let nonce = format!("{RFC_CLIENT_NONCE}{RFC_SERVER_NONCE}");
        let mut flipped = BASE64.decode(proof).expect("proof");
        flipped[0] ^= 1;
        let cases: Vec<(String, ScramError)> = vec![
            ("".into(), ScramError::Malformed("expected proof p= last")),
            (
                without_proof.to_owned(),
                ScramError::Malformed("expected proof p= last"),
            ),
            (
                format!("{client_final},x=ext"),
                ScramError::Malformed("expected proof p= last"),
            ),
            (
                format!("r={nonce},p={proof}"),
                ScramError::Malformed("expected channel binding c="),
            ),
            (
                format!("c=biws,p={proof}"),
                ScramError::Malformed("expected nonce r="),
            ),
            (
                format!("c=eSws,r={nonce},p={proof}"),
                ScramError::Malformed("channel binding does not match the GS2 header"),
            ),
            (
                format!("c=bi!s,r={nonce},p={proof}"),
                ScramError::Malformed("invalid base64 in channel binding"),
            ),
            (
                format!("c=biws,r={RFC_CLIENT_NONCE},p={proof}"),
                ScramError::NonceMismatch,
            ),
            (
                format!("c=biws,r={nonce}x,p={proof}"),
                ScramError::NonceMismatch,
            ),
            (
                format!("c=biws,r={nonce},p=!!!"),
                ScramError::Malformed("invalid base64 in proof"),
            ),
            (
                format!("c=biws,r={nonce},p="),
                ScramError::Malformed("proof is not 32 bytes"),
            ),
            (
                format!("c=biws,r={nonce},p={}", BASE64.encode([1u8; 31])),
                ScramError::Malformed("proof is not 32 bytes"),
            ),
            (
                format!("c=biws,r={nonce},p={}", BASE64.encode(&flipped)),
                ScramError::BadProof,
            ),
            (
                format!("c=biws,r={nonce},p={proof},p={proof}"),
                ScramError::Malformed("invalid or repeated attribute"),
            ),
            (
                format!("c=biws,r={nonce},m=x,p={proof}"),
                ScramError::Unsupported("mandatory extension"),
            ),
            // An extension the proof did not cover changes the auth message.
            (
                format!("c=biws,r={nonce},x=ext,p={proof}"),
                ScramError::BadProof,
            ),
            (
                format!("{client_final}{}", "A".repeat(SCRAM_MESSAGE_BYTES_MAX)),
                ScramError::MessageTooLong,
            ),
        ];
        for (msg, want) in cases {
            let (state, _) = rfc_server_first(&server);
            let got = state.handle_client_final(&msg);
            assert_eq!(got, Err(want), "{msg:?}");
        }
        let (state, _) = rfc_server_first(&server);
        assert!(state.handle_client_final(&client_final).is_ok());
    }

    #[test]
    fn scram_credential_and_client_inputs() {
        assert_eq!(
            ScramCredential::new("pw", 1).err(),
            Some(ScramError::IterationsOutOfRange)
        );
        assert_eq!(
            ScramCredential::new("pw", SCRAM_ITERATIONS_MAX + 1).err(),
            Some(ScramError::IterationsOutOfRange)
        );
        assert_eq!(
            ScramCredential::from_salt("pw", &[], 4096).err(),
            Some(ScramError::Malformed("empty salt"))
        );
        let cred = rfc_credential();
        let debug = format!("{cred:?}");
        assert!(
            debug.contains("<redacted>") && debug.contains(RFC_SALT),
            "{debug}"
        );
        assert!(
            !debug.contains(&format!("{:?}", cred.stored_key)),
            "{debug}"
        );

        let (client, _) = ScramClient::new("user", "hunter2").expect("client");
        assert!(!format!("{client:?}").contains("hunter2"));
        assert_eq!(
            ScramClient::new("", "pw").err(),
            Some(ScramError::InvalidUsername("empty"))
        );
        assert_eq!(
            ScramClient::new(&"u".repeat(SCRAM_USERNAME_BYTES_MAX + 1), "pw").err(),
            Some(ScramError::InvalidUsername("too long"))
        );
        assert_eq!(
            ScramClient::new("a\nb", "pw").err(),
            Some(ScramError::InvalidUsername("control character"))
        );
        // A username that needs every byte of escaping still fits a message.
        assert!(ScramClient::new(&",".repeat(SCRAM_USERNAME_BYTES_MAX), "pw").is_ok());
    }

    /// splitmix64: a deterministic source for the no-panic loop.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random inputs, every truncation of `valid`, and single-byte mutations of it.
    fn inputs(rng: &mut Rng, valid: &str) -> Vec<String> {
        const ALPHABET: &[u8] = b",=nrspicvemaxyz0123456789+/AZaz%$!\0\xc3\xa9\xff";
        let mut out = Vec::new();
        for _ in 0..200 {
            let len = rng.below(80);
            let bytes: Vec<u8> = if rng.below(2) == 0 {
                (0..len)
                    .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                    .collect()
            } else {
                (0..len).map(|_| rng.next() as u8).collect()
            };
            match std::str::from_utf8(&bytes) {
                Ok(s) => out.push(s.to_owned()),
                Err(_) => out.push(String::from_utf8_lossy(&bytes).into_owned()),
            }
        }
        for end in 0..valid.len() {
            if let Some(prefix) = valid.get(..end) {
                out.push(prefix.to_owned());
            }
            if let Some(suffix) = valid.get(end..) {
                out.push(suffix.to_owned());
            }
        }
        for _ in 0..200 {
            let mut bytes = valid.as_bytes().to_vec();
            let at = rng.below(bytes.len());
            bytes[at] = ALPHABET[rng.below(ALPHABET.len())];
            if let Ok(s) = String::from_utf8(bytes) {
                out.push(s);
            }
        }
        out.push(format!("{valid}{valid}"));
        out.push(valid.repeat(SCRAM_MESSAGE_BYTES_MAX / valid.len().max(1) + 1));
        out
    }

    #[test]
    fn scram_handlers_never_panic() {
        let mut rng = Rng(0x5eed);
        let server = ScramServer::new().expect("server");
        let cred = rfc_credential();
        let (client, client_first) = rfc_client("pencil");
        let (_, server_first) = rfc_server_first(&server);
        let (client_state, client_final) =
            client.handle_server_first(&server_first).expect("final");
        let (_, server_final) = rfc_server_first(&server)
            .0
            .handle_client_final(&client_final)
            .expect("server final");

        for msg in inputs(&mut rng, &client_first) {
            let _ = server.handle_client_first(&msg, |n| (n == "user").then(|| cred.clone()));
        }
        for msg in inputs(&mut rng, &server_first) {
            let _ = rfc_client("pencil").0.handle_server_first(&msg);
        }
        for msg in inputs(&mut rng, &client_final) {
            let result = rfc_server_first(&server).0.handle_client_final(&msg);
            assert!(result.is_err() || msg == client_final, "accepted {msg:?}");
        }
        for msg in inputs(&mut rng, &server_final) {
            let result = client_state.clone().handle_server_final(&msg);
            assert!(result.is_err() || msg == server_final, "accepted {msg:?}");
        }
    }
}
