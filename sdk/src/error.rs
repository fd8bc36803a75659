//! Errors of the client, one type per kind of operation.

use std::path::PathBuf;
use std::time::Duration;

use quiver_wire::ErrorCode;
use quiver_wire::frame::ErrorResponse;

/// Why a connection to the broker could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The configured broker address is not `HOST:PORT`.
    #[error("broker address `{0}` is not HOST:PORT")]
    InvalidAddress(String),
    /// The broker's host name did not resolve.
    #[error("cannot resolve `{host}`: {message}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        message: String,
    },
    /// The CA certificate file could not be read or parsed.
    #[error("cannot read CA certificate {path}: {message}")]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The client certificate or key file could not be read or parsed.
    #[error("cannot read client certificate or key {path}: {message}")]
    ClientCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No CA certificate was configured, so the broker cannot be verified.
    #[error(
        "no CA certificate given: pass --ca-cert (or set QUIVER_CA_CERT) to the broker's tls/ca.pem"
    )]
    NoCaCert,
    /// The TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// No local UDP socket could be opened.
    #[error("cannot open a local UDP socket: {0}")]
    Endpoint(String),
    /// The QUIC handshake failed (unreachable broker, refused certificate).
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why it failed.
        message: String,
    },
    /// The handshake did not finish within `connect_timeout`.
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout {
        /// The address tried.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The broker refused the SCRAM credentials.
    #[error("the broker refused the credentials: {0}")]
    Authentication(String),
}

impl ConnectError {
    /// Whether trying again later can succeed (the broker may be restarting).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ConnectError::Connect { .. }
                | ConnectError::Timeout { .. }
                | ConnectError::Resolve { .. }
        )
    }
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection broke while the request was in flight: it may or may not have
    /// been applied.
    #[error("connection to the broker lost: {0}")]
    ConnectionLost(String),
    /// The broker answered with an error; [`RequestError::code`] gives its stable code.
    #[error("broker answered {0}")]
    Broker(ErrorResponse),
    /// The broker's answer could not be decoded.
    #[error("broker sent a malformed answer: {0}")]
    Protocol(String),
    /// No answer within the request timeout: the request may or may not have been
    /// applied.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request was refused by the client before it was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl RequestError {
    /// Whether the same request, sent again later, can succeed. A lost connection or a
    /// timeout may have applied the request: retrying a produce without idempotence
    /// can then store it twice (at-least-once).
    pub fn is_retriable(&self) -> bool {
        match self {
            RequestError::Connect(e) => e.is_retriable(),
            RequestError::ConnectionLost(_) | RequestError::Timeout(_) => true,
            RequestError::Broker(e) => e.is_retriable(),
            RequestError::Protocol(_) | RequestError::InvalidArgument(_) => false,
        }
    }

    /// The broker's error code, when the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RequestError::Broker(e) => e.code,
            _ => None,
        }
    }
}
