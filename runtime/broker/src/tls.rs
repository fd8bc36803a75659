//! TLS material for the QUIC endpoint. On first start with no operator certificate the
//! broker makes its own CA and a server certificate signed by it, under
//! `DATA_DIR/tls/`; clients trust `ca.pem` by path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path} holds no {what}")]
    Missing { path: PathBuf, what: &'static str },
    #[error(
        "{0} exists but the server certificate beside it is missing; remove the tls directory to regenerate both"
    )]
    Incomplete(PathBuf),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads a PEM chain and key.
pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let pem = std::fs::read(cert).map_err(io(cert))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(cert))?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            path: cert.to_owned(),
            what: "certificate",
        });
    }
    let pem = std::fs::read(key).map_err(io(key))?;
    let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(io(key))?
        .ok_or_else(|| TlsError::Missing {
            path: key.to_owned(),
            what: "private key",
        })?;
    Ok(Identity {
        chain,
        key: key_der,
    })
}

/// Paths of the generated material inside a data directory.
pub struct GeneratedPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl GeneratedPaths {
    pub fn in_data_dir(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// Returns the generated server identity, making the CA and certificate on first use.
/// The server certificate names `localhost`, the loopback addresses and `listen_ip`.
pub fn ensure_generated(data_dir: &Path, listen_ip: IpAddr) -> Result<Identity, TlsError> {
    let paths = GeneratedPaths::in_data_dir(data_dir);
    if paths.server_cert.exists() && paths.server_key.exists() {
        return load_identity(&paths.server_cert, &paths.server_key);
    }
    if paths.ca_cert.exists() {
        return Err(TlsError::Incomplete(paths.ca_cert));
    }
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Quiver embedded CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quiver broker");
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    if !listen_ip.is_unspecified() && !ips.contains(&listen_ip) {
        ips.push(listen_ip);
    }
    params
        .subject_alt_names
        .extend(ips.into_iter().map(rcgen::SanType::IpAddress));
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;

    write_private(&paths.ca_key, ca_key.serialize_pem().as_bytes())?;
    write_private(&paths.server_key, key.serialize_pem().as_bytes())?;
    std::fs::write(&paths.server_cert, cert.pem()).map_err(io(&paths.server_cert))?;
    // The CA is written last: its presence means the set is complete.
    std::fs::write(&paths.ca_cert, ca.pem()).map_err(io(&paths.ca_cert))?;
    load_identity(&paths.server_cert, &paths.server_key)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))
}

/// Bytes of the stateless-reset secret.
const RESET_KEY_BYTES: usize = 64;

/// The secret that keys QUIC stateless resets, kept in `DATA_DIR/tls/reset.key` so it
/// survives restarts: a broker that restarts after a crash then answers packets of its
/// previous life's connections with a reset the clients recognise, and they reconnect
/// at once instead of waiting for their idle timeout.
pub fn reset_key(data_dir: &Path) -> Result<ring::hmac::Key, TlsError> {
    let path = data_dir.join("tls").join("reset.key");
    let secret = match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == RESET_KEY_BYTES => bytes,
        Ok(_) => {
            return Err(TlsError::Missing {
                path,
                what: "64-byte reset secret",
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use ring::rand::SecureRandom;
            let mut bytes = vec![0u8; RESET_KEY_BYTES];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| TlsError::Rustls(rustls::Error::FailedToGetRandomBytes))?;
            let dir = data_dir.join("tls");
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            write_private(&path, &bytes)?;
            bytes
        }
        Err(source) => return Err(TlsError::Io { path, source }),
    };
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret))
}

/// The generator of the connection ids this broker hands out, keyed by a value derived
/// from the reset secret, so a restarted broker recognises its predecessor's ids and
/// answers their packets with a stateless reset. Quinn's default generator is keyed per
/// process: a restarted broker dropped old connections' packets as invalid, and clients
/// waited out their idle timeout (about 10 s) before reconnecting.
pub fn connection_ids(reset_key: &ring::hmac::Key) -> quinn_proto::HashedConnectionIdGenerator {
    let derived = ring::hmac::sign(reset_key, b"quiver connection id key");
    let mut key = [0u8; 8];
    key.copy_from_slice(&derived.as_ref()[..8]);
    quinn_proto::HashedConnectionIdGenerator::from_key(u64::from_le_bytes(key))
}

/// The rustls server configuration for QUIC: TLS 1.3 only, ALPN `quiver/1`. With
/// `peer_ca`, a client may present a certificate, which must chain to that CA (the
/// other brokers of the cluster do); clients without one are accepted as clients.
pub fn server_crypto(
    identity: Identity,
    peer_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match peer_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = std::fs::read(path).map_err(io(path))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(cert.map_err(io(path))?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![quiver_wire::ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}
