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
/// The server certificate names `localhost`, the loopback addresses and every address
/// of `names` (the broker's listen and advertised addresses, each broker its own), and
/// carries the broker identity ([`BROKER_IDENTITY_URI`]) that other brokers check.
/// A server certificate that lacks the identity (made by an earlier build) or one of
/// `names` is issued again from the CA beside it, when its key is there. A CA without
/// a server certificate (`quiver cluster init`) issues one.
pub fn ensure_generated(data_dir: &Path, names: &[IpAddr]) -> Result<Identity, TlsError> {
    let paths = GeneratedPaths::in_data_dir(data_dir);
    if paths.server_cert.exists() && paths.server_key.exists() {
        let pem = std::fs::read(&paths.server_cert).map_err(io(&paths.server_cert))?;
        let identity = crate::security::pem_carries_broker_identity(&pem);
        let named = pem_names_ips(&pem);
        let missing: Vec<IpAddr> = names
            .iter()
            .copied()
            .filter(|ip| !ip.is_unspecified() && !named.contains(ip))
            .collect();
        if (!identity || !missing.is_empty()) && paths.ca_key.exists() {
            let ca = DataDirCa::load(&paths)?;
            let (cert, key) = ca.issue(broker_params(&ip_names(names))?)?;
            write_private(&paths.server_key, key.as_bytes())?;
            std::fs::write(&paths.server_cert, cert).map_err(io(&paths.server_cert))?;
            tracing::info!(
                path = %paths.server_cert.display(),
                ?missing,
                "issued the broker certificate again with the broker identity and every address of this broker"
            );
        } else if !missing.is_empty() {
            tracing::warn!(
                path = %paths.server_cert.display(),
                ?missing,
                "this broker's certificate does not name all of its addresses, and the CA key is not here to issue another: brokers that dial those addresses will refuse it"
            );
        }
        return load_identity(&paths.server_cert, &paths.server_key);
    }
    if paths.ca_cert.exists() {
        if !paths.ca_key.exists() {
            return Err(TlsError::Incomplete(paths.ca_cert));
        }
        let ca = DataDirCa::load(&paths)?;
        let (cert, key) = ca.issue(broker_params(&ip_names(names))?)?;
        write_private(&paths.server_key, key.as_bytes())?;
        std::fs::write(&paths.server_cert, cert).map_err(io(&paths.server_cert))?;
        return load_identity(&paths.server_cert, &paths.server_key);
    }
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let ca = DataDirCa::generate()?;
    let (cert, key) = ca.issue(broker_params(&ip_names(names))?)?;

    write_private(&paths.ca_key, ca.key.serialize_pem().as_bytes())?;
    write_private(&paths.server_key, key.as_bytes())?;
    std::fs::write(&paths.server_cert, cert).map_err(io(&paths.server_cert))?;
    // The CA is written last: its presence means the set is complete.
    std::fs::write(&paths.ca_cert, ca.cert.pem()).map_err(io(&paths.ca_cert))?;
    load_identity(&paths.server_cert, &paths.server_key)
}

/// Makes the cluster's CA in `data_dir/tls` unless one is there (`quiver cluster
/// init`); returns whether it made one. A CA certificate without its key cannot
/// sign for joining nodes and is refused.
pub fn ensure_ca(data_dir: &Path) -> Result<bool, TlsError> {
    let paths = GeneratedPaths::in_data_dir(data_dir);
    if paths.ca_cert.exists() {
        if !paths.ca_key.exists() {
            return Err(TlsError::Missing {
                path: paths.ca_key,
                what: "CA key beside ca.pem (run `quiver cluster init` where the cluster's CA key is)",
            });
        }
        DataDirCa::load(&paths)?;
        return Ok(false);
    }
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let ca = DataDirCa::generate()?;
    write_private(&paths.ca_key, ca.key.serialize_pem().as_bytes())?;
    std::fs::write(&paths.ca_cert, ca.cert.pem()).map_err(io(&paths.ca_cert))?;
    Ok(true)
}

/// The first certificate of a PEM file, DER.
pub fn first_certificate(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(io(path))?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .ok_or_else(|| TlsError::Missing {
            path: path.to_owned(),
            what: "certificate",
        })?
        .map_err(io(path))
}

/// The SHA-256 of a certificate's DER: what a join token pins the CA by.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Signs a broker certificate for a joining node with the CA in `data_dir`: the
/// public key of `csr` (DER), `addresses` and the loopback names as its names, and the
/// broker identity. Nothing else of the request reaches the certificate. Returns DER.
pub fn issue_broker_certificate(
    data_dir: &Path,
    csr: &[u8],
    addresses: &[String],
) -> Result<Vec<u8>, TlsError> {
    let paths = GeneratedPaths::in_data_dir(data_dir);
    let ca = DataDirCa::load(&paths)?;
    let der = rustls::pki_types::CertificateSigningRequestDer::from(csr);
    let mut request = rcgen::CertificateSigningRequestParams::from_der(&der)?;
    request.params = broker_params(addresses)?;
    let cert = request.signed_by(&ca.cert, &ca.key)?;
    Ok(cert.der().to_vec())
}

/// A new key and a certificate signing request for it, for a joining node: the
/// request's own fields do not matter (the CA names the certificate). Returns the
/// request (DER) and the key (PEM).
pub fn signing_request() -> Result<(Vec<u8>, String), TlsError> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let request = params.serialize_request(&key)?;
    Ok((request.der().to_vec(), key.serialize_pem()))
}

/// PEM text of one DER certificate.
pub fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The IP addresses a PEM certificate names.
fn pem_names_ips(pem: &[u8]) -> Vec<IpAddr> {
    let Some(Ok(der)) = rustls_pemfile::certs(&mut &pem[..]).next() else {
        return Vec::new();
    };
    certificate_ips(&der)
}

/// The IP addresses a DER certificate names.
pub fn certificate_ips(der: &[u8]) -> Vec<IpAddr> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn ip_names(ips: &[IpAddr]) -> Vec<String> {
    ips.iter()
        .filter(|ip| !ip.is_unspecified())
        .map(IpAddr::to_string)
        .collect()
}

/// A broker certificate's contents: `localhost`, the loopback addresses and
/// `addresses` (IP addresses or DNS names) as the names clients dial, and the broker
/// identity.
fn broker_params(addresses: &[String]) -> Result<rcgen::CertificateParams, TlsError> {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quiver broker");
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let mut dns: Vec<String> = vec!["localhost".to_owned()];
    for address in addresses {
        match address.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {}
            Ok(ip) => {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            Err(_) => {
                if !dns.contains(address) {
                    params.subject_alt_names.push(rcgen::SanType::DnsName(
                        rcgen::Ia5String::try_from(address.as_str())?,
                    ));
                    dns.push(address.clone());
                }
            }
        }
    }
    params
        .subject_alt_names
        .extend(ips.into_iter().map(rcgen::SanType::IpAddress));
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(rcgen::Ia5String::try_from(
            crate::security::BROKER_IDENTITY_URI,
        )?));
    Ok(params)
}

/// The CA kept in a data directory (`tls/ca.pem` and `tls/ca.key`).
struct DataDirCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl DataDirCa {
    /// A new CA: a self-signed certificate that may sign certificates.
    fn generate() -> Result<Self, TlsError> {
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
        let key = rcgen::KeyPair::generate()?;
        let cert = ca_params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    fn load(paths: &GeneratedPaths) -> Result<Self, TlsError> {
        let cert_pem = std::fs::read_to_string(&paths.ca_cert).map_err(io(&paths.ca_cert))?;
        let key_pem = std::fs::read_to_string(&paths.ca_key).map_err(io(&paths.ca_key))?;
        let key = rcgen::KeyPair::from_pem(&key_pem)?;
        // rcgen signs with a certificate object; one rebuilt from the CA's own fields
        // and key names the same issuer and verifies against the same public key.
        let params = rcgen::CertificateParams::from_ca_cert_pem(&cert_pem)?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// Signs `params` with a new key; returns the certificate and key as PEM.
    fn issue(&self, params: rcgen::CertificateParams) -> Result<(String, String), TlsError> {
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Longest validity `quiver cert issue` gives a client certificate.
pub const CLIENT_CERT_DAYS_MAX: u32 = 3_650;

/// Signs a client certificate for `User:<name>` with the CA in `data_dir` (`quiver cert
/// issue`), valid for `days`. It never carries the broker identity. Returns the
/// certificate and its key as PEM.
pub fn issue_client_certificate(
    data_dir: &Path,
    name: &str,
    days: u32,
) -> Result<(String, String), TlsError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(TlsError::Rustls(rustls::Error::General(format!(
            "`{name}` cannot name a user: 1 to 256 printable characters"
        ))));
    }
    if days == 0 || days > CLIENT_CERT_DAYS_MAX {
        return Err(TlsError::Rustls(rustls::Error::General(format!(
            "{days} days: a certificate is valid for 1 to {CLIENT_CERT_DAYS_MAX} days"
        ))));
    }
    let paths = GeneratedPaths::in_data_dir(data_dir);
    if !paths.ca_key.exists() {
        return Err(TlsError::Missing {
            path: paths.ca_key,
            what: "CA key (run `quiver serve` once with this data directory, or point --data-dir at the broker's)",
        });
    }
    let ca = DataDirCa::load(&paths)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    ca.issue(params)
}

/// Writes a secret (a private key) readable by its owner only (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
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

/// Where a broker that can issue join tokens keeps the cluster's join secret.
pub fn join_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("join.secret")
}

/// The server side of SCRAM exchanges. An unknown user's answer carries a salt derived
/// from its name with a secret, so it looks like a known user's; the secret comes from
/// the cluster's join secret when this broker holds it (every broker of a cluster
/// formed with join tokens does), else from the CA key (every broker of a cluster
/// whose TLS files were copied holds it), so the brokers answer an unknown name alike;
/// else from this broker's reset secret (stable across restarts).
pub fn scram_server(data_dir: &Path) -> Result<quiver_wire::scram::ScramServer, TlsError> {
    let paths = GeneratedPaths::in_data_dir(data_dir);
    let join_secret = join_secret_path(data_dir);
    let source = match std::fs::read(&join_secret).or_else(|_| std::fs::read(&paths.ca_key)) {
        Ok(key) => key,
        Err(_) => {
            let path = data_dir.join("tls").join("reset.key");
            reset_key(data_dir)?;
            std::fs::read(&path).map_err(io(&path))?
        }
    };
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"quiver scram unknown-user salt");
    context.update(&source);
    let secret = context.finish();
    quiver_wire::scram::ScramServer::with_key(
        secret.as_ref(),
        quiver_wire::scram::SCRAM_ITERATIONS_DEFAULT,
    )
    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))
}

/// The rustls server configuration for QUIC: TLS 1.3 only, ALPN `quiver/1`. With
/// `peer_ca`, a client may present a certificate, which must chain to that CA (the
/// other brokers of the cluster do, and clients under mTLS); with
/// `client_cert_required`, a connection without one fails its handshake.
pub fn server_crypto(
    identity: Identity,
    peer_ca: Option<&Path>,
    client_cert_required: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match peer_ca {
        None if client_cert_required => {
            return Err(TlsError::Missing {
                path: PathBuf::from("tls_ca"),
                what: "CA to verify client certificates (authentication = \"mtls\")",
            });
        }
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
            );
            let verifier = if client_cert_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::{Principal, pem_carries_broker_identity};

    fn leaf(path: &Path) -> Vec<u8> {
        let pem = std::fs::read(path).expect("read");
        rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .expect("a certificate")
            .expect("parses")
            .to_vec()
    }

    /// Whether `cert` was signed by the CA in `ca_pem`.
    fn signed_by(cert: &Path, ca_pem: &Path) -> bool {
        let ca = leaf(ca_pem);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca).expect("CA parses");
        let der = leaf(cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("cert parses");
        cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    #[test]
    fn a_generated_broker_certificate_carries_the_broker_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_generated(dir.path(), &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).expect("generated");
        let paths = GeneratedPaths::in_data_dir(dir.path());
        let pem = std::fs::read(&paths.server_cert).expect("read");
        assert!(pem_carries_broker_identity(&pem));
        assert!(signed_by(&paths.server_cert, &paths.ca_cert));
    }

    #[test]
    fn a_broker_certificate_from_an_earlier_build_is_issued_again_with_the_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_generated(dir.path(), &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).expect("generated");
        let paths = GeneratedPaths::in_data_dir(dir.path());
        // What earlier builds wrote: the same names, no broker identity.
        let ca = DataDirCa::load(&paths).expect("CA");
        let mut old = broker_params(&[]).expect("params");
        old.subject_alt_names
            .retain(|name| !matches!(name, rcgen::SanType::URI(_)));
        let (cert, key) = ca.issue(old).expect("issued");
        std::fs::write(&paths.server_cert, cert).expect("write");
        std::fs::write(&paths.server_key, key).expect("write");
        assert!(!pem_carries_broker_identity(
            &std::fs::read(&paths.server_cert).expect("read")
        ));

        ensure_generated(dir.path(), &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).expect("upgraded");
        let pem = std::fs::read(&paths.server_cert).expect("read");
        assert!(pem_carries_broker_identity(&pem));
        assert!(signed_by(&paths.server_cert, &paths.ca_cert));
    }

    #[test]
    fn a_client_certificate_names_its_user_and_is_never_a_brokers() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_generated(dir.path(), &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).expect("generated");
        let (cert, _key) = issue_client_certificate(dir.path(), "alice", 30).expect("issued");
        let path = dir.path().join("alice.pem");
        std::fs::write(&path, &cert).expect("write");
        assert_eq!(
            Principal::from_certificate(&leaf(&path)),
            Some(Principal::User("User:alice".into()))
        );
        assert!(!pem_carries_broker_identity(cert.as_bytes()));
        assert!(signed_by(
            &path,
            &GeneratedPaths::in_data_dir(dir.path()).ca_cert
        ));

        assert!(issue_client_certificate(dir.path(), "alice", 0).is_err());
        assert!(issue_client_certificate(dir.path(), "", 30).is_err());
        let empty = tempfile::tempdir().expect("tempdir");
        let err = issue_client_certificate(empty.path(), "alice", 30).expect_err("no CA");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }
}
