//! Quiver's wire format, shared by the broker and the SDK.
//!
//! What it does: the record batch format (identical on the wire and on disk), the frame
//! that carries every request and response over a QUIC stream, the request and response
//! types, the error codes a client sees, and topic name rules. What it does not do: any
//! I/O. Callers hand it bytes and get bytes back, so tests drive it without sockets.

pub mod acl;
pub mod api;
pub mod batch;
pub mod cluster;
pub mod codec;
pub mod error;
pub mod frame;
pub mod group;
pub mod join;
pub mod message;
pub mod plugin;
pub mod quota;
pub mod sasl;
pub mod scram;
pub mod topic;
pub mod varint;

pub use api::ApiKey;
pub use error::ErrorCode;

/// The ALPN protocol id of Quiver's QUIC connections.
pub const ALPN: &[u8] = b"quiver/1";
