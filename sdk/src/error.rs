//! Errors of the client, one type per kind of operation.

use std::path::PathBuf;
use std::time::Duration;

use quiver_wire::ErrorCode;
use quiver_wire::frame::ErrorResponse;

/// Why a connection to the broker could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("broker address `{0}` is not HOST:PORT")]
    InvalidAddress(String),
    #[error("cannot resolve `{host}`: {message}")]
    Resolve { host: String, message: String },
    #[error("cannot read CA certificate {path}: {message}")]
    CaCert { path: PathBuf, message: String },
    #[error("cannot read client certificate or key {path}: {message}")]
    ClientCert { path: PathBuf, message: String },
    #[error(
        "no CA certificate given: pass --ca-cert (or set QUIVER_CA_CERT) to the broker's tls/ca.pem"
    )]
    NoCaCert,
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot open a local UDP socket: {0}")]
    Endpoint(String),
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
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
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("connection to the broker lost: {0}")]
    ConnectionLost(String),
    #[error("broker answered {0}")]
    Broker(ErrorResponse),
    #[error("broker sent a malformed answer: {0}")]
    Protocol(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
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
