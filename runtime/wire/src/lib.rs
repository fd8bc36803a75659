//! Quiver's wire format, shared by the broker and the SDK.
//!
//! What it does: the record batch format (identical on the wire and on disk), the frame
//! that carries every request and response over a QUIC stream, the request and response
//! types, and the error codes a client sees. What it does not do: any I/O. Callers hand
//! it bytes and get bytes back, so tests drive it without sockets.

pub mod batch;
pub mod varint;
