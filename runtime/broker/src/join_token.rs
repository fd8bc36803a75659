//! The join token `quiver cluster init` prints and `--join-token` takes: the cluster
//! CA's fingerprint and the join secret. A leaf, so the configuration parses it
//! without depending on the join protocol (`crate::join`).

/// What every join token starts with; the number is the token's format version.
pub const JOIN_TOKEN_PREFIX: &str = "quiver-join-v1";
/// Bytes of a join secret.
pub const JOIN_SECRET_BYTES: usize = 32;

/// Text that is not a join token, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid join token: {0} (expected {JOIN_TOKEN_PREFIX}:<64 hex digits>:<64 hex digits>, as `quiver cluster init` prints it)"
)]
pub struct InvalidJoinToken(pub String);

/// A join token: the cluster CA's fingerprint and the join secret. Its `Debug` hides
/// the secret; `Display` is the copyable token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub fingerprint: [u8; 32],
    pub(crate) secret: [u8; JOIN_SECRET_BYTES],
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("fingerprint", &hex(&self.fingerprint))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{JOIN_TOKEN_PREFIX}:{}:{}",
            hex(&self.fingerprint),
            hex(&self.secret)
        )
    }
}

impl std::str::FromStr for JoinToken {
    type Err = InvalidJoinToken;

    fn from_str(text: &str) -> Result<Self, InvalidJoinToken> {
        let text = text.trim();
        let mut parts = text.split(':');
        let (Some(prefix), Some(fingerprint), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidJoinToken("not three parts separated by `:`".into()));
        };
        if prefix != JOIN_TOKEN_PREFIX {
            return Err(InvalidJoinToken(format!(
                "it starts with `{}`, not `{JOIN_TOKEN_PREFIX}`",
                prefix.chars().take(32).collect::<String>()
            )));
        }
        Ok(Self {
            fingerprint: unhex(fingerprint)
                .ok_or_else(|| InvalidJoinToken("the fingerprint is not 64 hex digits".into()))?,
            secret: unhex(secret)
                .ok_or_else(|| InvalidJoinToken("the secret is not 64 hex digits".into()))?,
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}
