//! Authentication inside the TLS connection (SCRAM-SHA-256), and the users it knows.
//!
//! A client without a certificate authenticates with two `SaslAuthenticate` requests
//! on one connection: its client-first message, answered by the server-first message,
//! then its client-final message, answered by the server-final message (RFC 5802). The
//! principal then holds for the rest of the connection. Users are kept by the
//! controller as salted, iterated keys (never the password): `UserUpsert` carries what
//! the client derived from the password, as Kafka's `AlterUserScramCredentials` does.
//!
//! Layouts as in [`crate::message`]: strings `[length:2][utf8]`, byte fields
//! `[length:4][bytes]`, arrays `[count:4][elements]`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::codec::{DecodeError, Reader, WriteExt, take_bytes};
use crate::message::{Empty, ResponseBody, Rpc};

/// The one mechanism this build speaks.
pub const SCRAM_SHA_256: &str = crate::scram::SCRAM_MECHANISM;
/// Longest user name.
pub const USER_NAME_BYTES_MAX: usize = 256;
/// Longest SASL message either side sends.
pub const SASL_MESSAGE_BYTES_MAX: usize = 1024;
/// Longest salt a credential may carry.
pub const SALT_BYTES_MAX: usize = 64;
/// Users the cluster keeps.
pub const USERS_MAX: usize = 10_000;

/// One step of an authentication: `[mechanism:string][message:string]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateRequest {
    pub mechanism: String,
    pub message: String,
}

/// `[message:string]`: the server's next message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateResponse {
    pub message: String,
}

fn bounded_string(
    r: &mut Reader<'_>,
    what: &'static str,
    max: usize,
) -> Result<String, DecodeError> {
    let text = r.string(what)?;
    if text.len() > max {
        return Err(DecodeError::TooLong {
            what,
            len: text.len(),
            max,
        });
    }
    Ok(text)
}

impl Rpc for SaslAuthenticateRequest {
    const API: ApiKey = ApiKey::SaslAuthenticate;
    type Response = SaslAuthenticateResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.mechanism);
        buf.put_string(&self.message);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            mechanism: bounded_string(&mut r, "mechanism", 64)?,
            message: bounded_string(&mut r, "message", SASL_MESSAGE_BYTES_MAX)?,
        };
        r.finish()?;
        Ok(out)
    }
}

impl ResponseBody for SaslAuthenticateResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.message);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let message = bounded_string(&mut r, "message", SASL_MESSAGE_BYTES_MAX)?;
        r.finish()?;
        Ok(Self { message })
    }
}

/// A SCRAM credential as stored: `[salt:bytes][iterations:4][stored_key:bytes][server_key:bytes]`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub salt: Bytes,
    pub iterations: u32,
    pub stored_key: Bytes,
    pub server_key: Bytes,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Creates or replaces user `name`: `[name:string][credential]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserUpsertRequest {
    pub name: String,
    pub credential: StoredCredential,
}

impl Rpc for UserUpsertRequest {
    const API: ApiKey = ApiKey::UserUpsert;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.name);
        buf.put_u32(self.credential.salt.len() as u32);
        buf.put_slice(&self.credential.salt);
        buf.put_u32(self.credential.iterations);
        buf.put_u32(self.credential.stored_key.len() as u32);
        buf.put_slice(&self.credential.stored_key);
        buf.put_u32(self.credential.server_key.len() as u32);
        buf.put_slice(&self.credential.server_key);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let name = bounded_string(&mut r, "name", USER_NAME_BYTES_MAX)?;
        let consumed = r.consumed();
        let mut rest = body.freeze().slice(consumed..);
        let salt = take_bytes(&mut rest, "salt", SALT_BYTES_MAX)?;
        let mut r = Reader::new(&rest);
        let iterations = r.u32("iterations")?;
        let mut rest = rest.slice(r.consumed()..);
        let stored_key = take_bytes(&mut rest, "stored_key", 32)?;
        let server_key = take_bytes(&mut rest, "server_key", 32)?;
        Reader::new(&rest).finish()?;
        Ok(Self {
            name,
            credential: StoredCredential {
                salt,
                iterations,
                stored_key,
                server_key,
            },
        })
    }
}

/// Deletes user `name`: `[name:string]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDeleteRequest {
    pub name: String,
}

impl Rpc for UserDeleteRequest {
    const API: ApiKey = ApiKey::UserDelete;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.name);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let name = bounded_string(&mut r, "name", USER_NAME_BYTES_MAX)?;
        r.finish()?;
        Ok(Self { name })
    }
}

/// Lists users. Empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserListRequest;

impl Rpc for UserListRequest {
    const API: ApiKey = ApiKey::UserList;
    type Response = UserListResponse;

    fn encode_body(&self, _buf: &mut BytesMut) {}

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Reader::new(&body).finish()?;
        Ok(UserListRequest)
    }
}

/// `[users:array<[name:string][iterations:4]>]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserListResponse {
    pub users: Vec<(String, u32)>,
}

impl ResponseBody for UserListResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_array_len(self.users.len());
        for (name, iterations) in &self.users {
            buf.put_string(name);
            buf.put_u32(*iterations);
        }
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let n = r.array_len("users", USERS_MAX, 6)?;
        let users = (0..n)
            .map(|_| Ok((r.string("name")?, r.u32("iterations")?)))
            .collect::<Result<_, DecodeError>>()?;
        r.finish()?;
        Ok(Self { users })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let upsert = UserUpsertRequest {
            name: "alice".into(),
            credential: StoredCredential {
                salt: Bytes::from_static(&[7; 16]),
                iterations: 4096,
                stored_key: Bytes::from_static(&[1; 32]),
                server_key: Bytes::from_static(&[2; 32]),
            },
        };
        let mut buf = BytesMut::new();
        upsert.encode_body(&mut buf);
        assert_eq!(
            UserUpsertRequest::decode_body(buf).expect("decodes"),
            upsert
        );

        let step = SaslAuthenticateRequest {
            mechanism: SCRAM_SHA_256.into(),
            message: "n,,n=alice,r=abc".into(),
        };
        let mut buf = BytesMut::new();
        step.encode_body(&mut buf);
        assert_eq!(
            SaslAuthenticateRequest::decode_body(buf).expect("decodes"),
            step
        );

        let list = UserListResponse {
            users: vec![("alice".into(), 4096), ("bob".into(), 8192)],
        };
        let mut buf = BytesMut::new();
        list.encode_body(&mut buf);
        assert_eq!(
            UserListResponse::decode_body(buf.freeze()).expect("decodes"),
            list
        );
    }

    #[test]
    fn an_oversized_key_is_refused() {
        let mut buf = BytesMut::new();
        buf.put_string("alice");
        buf.put_u32(16);
        buf.put_slice(&[0; 16]);
        buf.put_u32(4096);
        buf.put_u32(33);
        buf.put_slice(&[0; 33]);
        assert!(matches!(
            UserUpsertRequest::decode_body(buf),
            Err(DecodeError::TooLong {
                what: "stored_key",
                ..
            })
        ));
    }
}
