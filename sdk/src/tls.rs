//! TLS for the client side of QUIC: trust the broker's CA, speak ALPN `quiver/1`,
//! TLS 1.3 only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::client::ClientConfig;
use crate::error::ConnectError;

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no PEM private key in the file".into())
}

/// Builds quinn's client configuration from a [`ClientConfig`].
pub fn quic_client_config(config: &ClientConfig) -> Result<quinn::ClientConfig, ConnectError> {
    let ca_path = config.ca_cert.as_ref().ok_or(ConnectError::NoCaCert)?;
    let ca_error = |message: String| ConnectError::CaCert {
        path: ca_path.clone(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca_path).map_err(ca_error)? {
        roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut crypto = match &config.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert).map_err(|message| ConnectError::ClientCert {
                path: cert.clone(),
                message,
            })?;
            let key_der = read_key(key).map_err(|message| ConnectError::ClientCert {
                path: key.clone(),
                message,
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| ConnectError::Tls(e.to_string()))?
        }
    };
    crypto.alpn_protocols = vec![quiver_wire::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    // Keep-alives hold the connection open between a consumer's polls.
    transport.keep_alive_interval(Some(Duration::from_secs(2)));
    // A broker that vanished without a restart is noticed after this long; a restarted
    // one resets old connections at once (its stateless-reset key persists).
    if let Ok(idle) = Duration::from_secs(10).try_into() {
        transport.max_idle_timeout(Some(idle));
    }
    // The broker's window sizes, for the same reason (see its `transport_config`).
    transport.stream_receive_window(quinn::VarInt::from_u32(4 * 1024 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(16 * 1024 * 1024));
    transport.send_window(16 * 1024 * 1024);
    transport.max_concurrent_bidi_streams(0u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    client.transport_config(Arc::new(transport));
    Ok(client)
}
