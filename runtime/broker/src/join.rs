//! Forming a cluster without copying files: join tokens.
//!
//! `quiver cluster init` makes the cluster's CA in a data directory and a join secret
//! beside it, and prints a token: the CA's fingerprint (SHA-256 of its DER) and the
//! secret. A node started with `--join-token` and no certificate of its own
//! ([`prepare`]) asks a seed for the CA certificate, checks it against the token's
//! fingerprint and then the seed's own certificate chain against that CA, and only
//! then proves the secret (an HMAC bound to that TLS connection, never the secret
//! itself; see `quiver_wire::join`) and asks for a broker certificate for its node id
//! that names its own addresses. A seed answers join requests ([`issue`]) only when it
//! holds the CA key and the secret, at most [`JOIN_REQUESTS_PER_MINUTE_MAX`] a minute,
//! and never for a node id a live broker holds.
//!
//! What it does not do: revoke certificates, rotate the CA or the secret, or admit a
//! node under `authentication = "mtls"` alone (that listener refuses a handshake
//! without a certificate before any request).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quiver_wire::ErrorCode;
use quiver_wire::frame::{FRAME_LENGTH_BYTES, RESPONSE_HEAD_BYTES, frame_length, parse_response};
use quiver_wire::join::{
    JOIN_BINDING_BYTES, JOIN_CERT_BYTES_MAX, JOIN_EXPORTER_LABEL, JOIN_PROOF_BYTES,
    JOIN_PROOF_CONTEXT, JoinCaRequest, JoinCaResponse, JoinClusterRequest, JoinClusterResponse,
};
use quiver_wire::message::{ResponseBody, Rpc};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::BrokerConfig;
pub use crate::join_token::{InvalidJoinToken, JOIN_SECRET_BYTES, JOIN_TOKEN_PREFIX, JoinToken};
use crate::join_token::{hex, unhex};
use crate::tls::{self, GeneratedPaths, TlsError};

/// Join requests (either API) one broker answers in a minute; more are refused until
/// the minute ends, so a flood costs the broker little.
pub const JOIN_REQUESTS_PER_MINUTE_MAX: u32 = 60;
/// How long a node keeps trying its seeds before giving up on joining (founding nodes
/// start together, so the one with the CA may come up after the others).
pub const JOIN_WAIT_MAX: Duration = Duration::from_secs(120);
/// How long connecting to one seed may take.
const JOIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one join request may take.
const JOIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two rounds over the seeds.
const JOIN_RETRY: Duration = Duration::from_secs(1);

/// Why joining (or making a token) failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] InvalidJoinToken),
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "{path} is not the CA the join token names (its fingerprint is {local}, the token's {token}): this data directory belongs to another cluster"
    )]
    LocalCaMismatch {
        path: PathBuf,
        local: String,
        token: String,
    },
    #[error(
        "seed {seed} answered with a CA whose fingerprint is {got}, not the join token's {want}: refusing to trust it (a wrong token, or not the cluster's seed)"
    )]
    FingerprintMismatch {
        seed: SocketAddr,
        got: String,
        want: String,
    },
    #[error(
        "seed {seed} presented a certificate the cluster's CA does not vouch for ({reason}): refusing to send it the join proof"
    )]
    SeedCertificate { seed: SocketAddr, reason: String },
    #[error("seed {seed} refused the join: {message} ({code})")]
    Refused {
        seed: SocketAddr,
        code: ErrorCode,
        message: String,
    },
    #[error(
        "a join token needs seeds to ask: set `seeds` to the cluster's nodes (ID@HOST:PORT,...)"
    )]
    NoSeeds,
    #[error("no seed issued a certificate within {JOIN_WAIT_MAX:?}; last: {0}")]
    GaveUp(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JoinError + '_ {
    move |source| JoinError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `DATA_DIR/tls/join.secret`: the join secret in hex, readable by its owner only.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    tls::join_secret_path(data_dir)
}

/// The join secret kept in `data_dir`, if there is one.
pub fn read_secret(data_dir: &Path) -> Result<Option<[u8; JOIN_SECRET_BYTES]>, JoinError> {
    let path = secret_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => unhex(text.trim()).map(Some).ok_or_else(|| JoinError::Io {
            path,
            source: std::io::Error::other("not a join secret (64 hex digits)"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(JoinError::Io { path, source }),
    }
}

fn write_secret(data_dir: &Path, secret: &[u8; JOIN_SECRET_BYTES]) -> Result<(), JoinError> {
    tls::write_private(
        &secret_path(data_dir),
        format!("{}\n", hex(secret)).as_bytes(),
    )?;
    Ok(())
}

/// `quiver cluster init`: makes the cluster's CA in `data_dir/tls` and a join secret
/// unless they are there, and returns the token for them. Returns whether a new CA was
/// made; an existing one is kept (a token printed again names the same CA).
pub fn init_cluster(data_dir: &Path) -> Result<(JoinToken, bool), JoinError> {
    let created = tls::ensure_ca(data_dir)?;
    let secret = match read_secret(data_dir)? {
        Some(secret) => secret,
        None => {
            use ring::rand::SecureRandom;
            let mut secret = [0u8; JOIN_SECRET_BYTES];
            ring::rand::SystemRandom::new()
                .fill(&mut secret)
                .map_err(|_| TlsError::Rustls(rustls::Error::FailedToGetRandomBytes))?;
            write_secret(data_dir, &secret)?;
            secret
        }
    };
    let ca = tls::first_certificate(&GeneratedPaths::in_data_dir(data_dir).ca_cert)?;
    Ok((
        JoinToken {
            fingerprint: tls::fingerprint(&ca),
            secret,
        },
        created,
    ))
}

/// The proof of the secret for `node_id` on the connection whose exported keying
/// material is `binding`.
pub fn proof(secret: &[u8], binding: &[u8], node_id: u32) -> [u8; JOIN_PROOF_BYTES] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(JOIN_PROOF_CONTEXT);
    context.update(binding);
    context.update(&node_id.to_be_bytes());
    let tag = context.sign();
    let mut out = [0u8; JOIN_PROOF_BYTES];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `presented` proves `secret` for `node_id` on this connection (compared in
/// constant time).
pub fn proof_holds(secret: &[u8], binding: &[u8], node_id: u32, presented: &[u8]) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut message = Vec::with_capacity(JOIN_PROOF_CONTEXT.len() + binding.len() + 4);
    message.extend_from_slice(JOIN_PROOF_CONTEXT);
    message.extend_from_slice(binding);
    message.extend_from_slice(&node_id.to_be_bytes());
    ring::hmac::verify(&key, &message, presented).is_ok()
}

/// The channel binding of a QUIC connection: keying material exported from its TLS
/// session, equal at both ends and different for every connection.
pub fn channel_binding(connection: &quinn::Connection) -> Option<[u8; JOIN_BINDING_BYTES]> {
    let mut out = [0u8; JOIN_BINDING_BYTES];
    connection
        .export_keying_material(&mut out, JOIN_EXPORTER_LABEL, b"")
        .ok()?;
    Some(out)
}

/// The seed side's bound on join requests: a count per minute.
#[derive(Default)]
pub struct JoinGate {
    /// `(start of the current minute in ms, requests in it)`.
    window: Mutex<(i64, u32)>,
    /// Refused joins are logged at most once per interval.
    pub refusals: crate::log_limit::LogLimit,
}

impl JoinGate {
    /// Whether one more join request may be answered at `now_ms`.
    pub fn admit(&self, now_ms: i64) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms.saturating_sub(window.0) >= 60_000 {
            *window = (now_ms, 0);
        }
        if window.1 >= JOIN_REQUESTS_PER_MINUTE_MAX {
            return false;
        }
        window.1 += 1;
        true
    }
}

/// Why a seed refused to issue, as the wire carries it.
#[derive(Debug)]
pub struct IssueRefusal {
    pub code: ErrorCode,
    pub message: String,
}

impl IssueRefusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Whether `address` may be named in a certificate: an IP address, or a DNS name of
/// letters, digits, `-` and `.`.
fn valid_address(address: &str) -> bool {
    if address.parse::<IpAddr>().is_ok() {
        return true;
    }
    !address.is_empty()
        && address.len() <= quiver_wire::join::JOIN_ADDRESS_BYTES_MAX
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !address.starts_with(['-', '.'])
}

/// The seed side of a join: checks the proof (bound to `binding`, the requester's
/// connection), the node id (`live` says whether a live broker holds it) and the
/// fields, and signs a broker certificate with the CA in `data_dir`. Returns it (DER).
pub fn issue(
    data_dir: &Path,
    binding: Option<&[u8]>,
    request: &JoinClusterRequest,
    live: Option<String>,
) -> Result<Vec<u8>, IssueRefusal> {
    let secret = read_secret(data_dir)
        .map_err(|e| IssueRefusal::new(ErrorCode::StorageError, e.to_string()))?
        .ok_or_else(|| {
            IssueRefusal::new(
                ErrorCode::InvalidJoinToken,
                "this broker accepts no joins (it holds no join secret): ask the node where `quiver cluster init` ran",
            )
        })?;
    let binding = binding.ok_or_else(|| {
        IssueRefusal::new(
            ErrorCode::InvalidJoinToken,
            "this connection has no TLS channel binding to check a proof against",
        )
    })?;
    if !proof_holds(&secret, binding, request.node_id, &request.proof) {
        return Err(IssueRefusal::new(
            ErrorCode::InvalidJoinToken,
            "the join proof does not match this cluster's join secret (a wrong token, or a proof made for another connection)",
        ));
    }
    if request.node_id == 0 {
        return Err(IssueRefusal::new(
            ErrorCode::InvalidRequest,
            "node id 0 is not a node id",
        ));
    }
    if let Some(holder) = live {
        return Err(IssueRefusal::new(
            ErrorCode::NodeIdInUse,
            format!(
                "node id {} is held by a live broker at {holder}: pick another id, or stop that broker and wait until the cluster fences it",
                request.node_id
            ),
        ));
    }
    if request.addresses.is_empty() {
        return Err(IssueRefusal::new(
            ErrorCode::InvalidRequest,
            "a broker certificate must name at least one address",
        ));
    }
    if let Some(bad) = request.addresses.iter().find(|a| !valid_address(a)) {
        return Err(IssueRefusal::new(
            ErrorCode::InvalidRequest,
            format!(
                "`{}` is neither an IP address nor a DNS name",
                bad.chars().take(64).collect::<String>()
            ),
        ));
    }
    let paths = GeneratedPaths::in_data_dir(data_dir);
    if !paths.ca_key.exists() {
        return Err(IssueRefusal::new(
            ErrorCode::InvalidRequest,
            "this broker does not hold the cluster CA's key: ask the node where `quiver cluster init` ran",
        ));
    }
    tls::issue_broker_certificate(data_dir, &request.csr, &request.addresses).map_err(|e| {
        IssueRefusal::new(
            ErrorCode::InvalidRequest,
            format!("cannot issue a certificate for this request: {e}"),
        )
    })
}

/// The addresses this broker's certificate must name: the address it advertises
/// (its own seed entry) and the one it listens on, when that is a specific one.
pub fn own_addresses(config: &BrokerConfig) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for ip in config
        .seeds
        .iter()
        .filter(|(id, _)| *id == config.node_id)
        .map(|(_, addr)| addr.ip())
        .chain(std::iter::once(config.listen.ip()))
    {
        if !ip.is_unspecified() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Before a broker with a join token starts: when its data directory has no
/// certificate of its own, gets the cluster's CA and a broker certificate from a seed
/// and writes them to `DATA_DIR/tls`. A data directory whose CA is not the token's is
/// refused. Does nothing when the certificate is there.
pub async fn prepare(config: &BrokerConfig, token: &JoinToken) -> Result<(), JoinError> {
    let paths = GeneratedPaths::in_data_dir(&config.data_dir);
    if paths.ca_cert.exists() {
        let local = tls::fingerprint(&tls::first_certificate(&paths.ca_cert)?);
        if local != token.fingerprint {
            return Err(JoinError::LocalCaMismatch {
                path: paths.ca_cert,
                local: hex(&local),
                token: hex(&token.fingerprint),
            });
        }
        // A node with the CA key issues its own certificate; one with a certificate
        // is done.
        if paths.ca_key.exists() || (paths.server_cert.exists() && paths.server_key.exists()) {
            return Ok(());
        }
    }
    let seeds: Vec<SocketAddr> = config
        .seeds
        .iter()
        .filter(|(id, _)| *id != config.node_id)
        .map(|(_, addr)| *addr)
        .collect();
    if seeds.is_empty() {
        return Err(JoinError::NoSeeds);
    }
    let addresses: Vec<String> = own_addresses(config)
        .iter()
        .map(IpAddr::to_string)
        .collect();
    let (csr, key_pem) = tls::signing_request()?;
    let deadline = tokio::time::Instant::now() + JOIN_WAIT_MAX;
    let mut last = String::from("no seed tried");
    loop {
        for seed in &seeds {
            match join_through(*seed, config.node_id, token, &addresses, &csr).await {
                Ok((ca, certificate)) => {
                    let dir = config.data_dir.join("tls");
                    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                    tls::write_private(&paths.server_key, key_pem.as_bytes())?;
                    std::fs::write(&paths.server_cert, tls::certificate_pem(&certificate))
                        .map_err(io(&paths.server_cert))?;
                    write_secret(&config.data_dir, &token.secret)?;
                    // The CA is written last: its presence means the set is complete.
                    std::fs::write(&paths.ca_cert, tls::certificate_pem(&ca))
                        .map_err(io(&paths.ca_cert))?;
                    tracing::info!(
                        %seed,
                        node_id = config.node_id,
                        ?addresses,
                        "joined: the cluster's CA issued this broker's certificate"
                    );
                    return Ok(());
                }
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Retry(why)) => {
                    tracing::info!(%seed, "cannot join through this seed yet: {why}");
                    last = format!("{seed}: {why}");
                }
            }
        }
        if tokio::time::Instant::now() + JOIN_RETRY >= deadline {
            return Err(JoinError::GaveUp(last));
        }
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

/// How one attempt through a seed ended.
enum Attempt {
    /// Try again later or elsewhere (the seed is down, or cannot issue).
    Retry(String),
    /// Stop: the token or the seed is wrong, and trying again changes nothing.
    Fatal(JoinError),
}

/// One join through `seed`: returns the CA and the broker certificate, DER.
async fn join_through(
    seed: SocketAddr,
    node_id: u32,
    token: &JoinToken,
    addresses: &[String],
    csr: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), Attempt> {
    let retry = |what: &str, e: &dyn std::fmt::Display| Attempt::Retry(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let seen = Arc::new(PresentedChain {
        chain: Mutex::new(None),
        provider: Arc::clone(&provider),
    });
    let mut crypto = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| retry("TLS", &e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&seen) as Arc<_>)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![quiver_wire::ALPN.to_vec()];
    let quic =
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(|e| retry("TLS", &e))?;
    let bind: SocketAddr = if seed.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| retry("endpoint", &e))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let server_name = seed.ip().to_string();
    let connecting = endpoint
        .connect(seed, &server_name)
        .map_err(|e| retry("connect", &e))?;
    let connection = tokio::time::timeout(JOIN_CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| Attempt::Retry("connection timed out".into()))?
        .map_err(|e| retry("connect", &e))?;
    let outcome = async {
        // 1. The CA, checked against the token before anything else is trusted.
        let ca: JoinCaResponse = call(&connection, &JoinCaRequest)
            .await
            .map_err(|e| e.attempt(seed))?;
        let got = tls::fingerprint(&ca.ca_cert);
        if got != token.fingerprint {
            return Err(Attempt::Fatal(JoinError::FingerprintMismatch {
                seed,
                got: hex(&got),
                want: hex(&token.fingerprint),
            }));
        }
        // 2. The seed's certificate, checked against that CA and the address dialled.
        let chain = seen
            .chain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Attempt::Retry("the seed presented no certificate".into()))?;
        verify_seed(&ca.ca_cert, &chain, seed)
            .map_err(|reason| Attempt::Fatal(JoinError::SeedCertificate { seed, reason }))?;
        // 3. The proof, bound to this connection, and the certificate.
        let binding = channel_binding(&connection)
            .ok_or_else(|| Attempt::Retry("no TLS channel binding".into()))?;
        let request = JoinClusterRequest {
            node_id,
            addresses: addresses.to_vec(),
            csr: Bytes::copy_from_slice(csr),
            proof: Bytes::copy_from_slice(&proof(&token.secret, &binding, node_id)),
        };
        let issued: JoinClusterResponse = call(&connection, &request)
            .await
            .map_err(|e| e.attempt(seed))?;
        Ok((ca.ca_cert.to_vec(), issued.certificate.to_vec()))
    }
    .await;
    connection.close(0u32.into(), b"joined");
    endpoint.wait_idle().await;
    outcome
}

/// Checks that `chain` (the seed's certificate first) is signed by `ca` and names
/// `seed`'s address.
fn verify_seed(
    ca: &[u8],
    chain: &[CertificateDer<'static>],
    seed: SocketAddr,
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.to_vec()))
        .map_err(|e| format!("the CA cannot be used: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| "no certificate".to_owned())?;
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &ServerName::IpAddress(seed.ip().into()),
            &[],
            UnixTime::now(),
        )
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A join request that failed.
enum CallError {
    Lost(String),
    Broker(Option<ErrorCode>, String),
}

impl CallError {
    fn attempt(self, seed: SocketAddr) -> Attempt {
        match self {
            CallError::Lost(why) => Attempt::Retry(why),
            CallError::Broker(Some(code @ ErrorCode::InvalidJoinToken), message) => {
                Attempt::Fatal(JoinError::Refused {
                    seed,
                    code,
                    message,
                })
            }
            CallError::Broker(code, message) => Attempt::Retry(match code {
                Some(code) => format!("{message} ({code})"),
                None => message,
            }),
        }
    }
}

/// Sends one request on its own stream and reads its answer, within
/// [`JOIN_REQUEST_TIMEOUT`] and at most [`JOIN_CERT_BYTES_MAX`] plus a head.
async fn call<R: Rpc>(
    connection: &quinn::Connection,
    request: &R,
) -> Result<R::Response, CallError> {
    let lost = |e: &dyn std::fmt::Display| CallError::Lost(e.to_string());
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
        send.write_all(&request.encode_frame())
            .await
            .map_err(|e| lost(&e))?;
        let _ = send.finish();
        let mut prefix = [0u8; FRAME_LENGTH_BYTES];
        recv.read_exact(&mut prefix).await.map_err(|e| lost(&e))?;
        let len = frame_length(prefix, RESPONSE_HEAD_BYTES).map_err(|e| lost(&e))?;
        if len > JOIN_CERT_BYTES_MAX + 4096 {
            return Err(CallError::Lost(format!("an answer of {len} bytes")));
        }
        let mut body = BytesMut::zeroed(len);
        recv.read_exact(&mut body).await.map_err(|e| lost(&e))?;
        match parse_response(body.freeze()) {
            Ok(Ok(body)) => R::Response::decode_body(body).map_err(|e| lost(&e)),
            Ok(Err(answer)) => Err(CallError::Broker(answer.code, answer.message)),
            Err(e) => Err(lost(&e)),
        }
    };
    tokio::time::timeout(JOIN_REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| CallError::Lost("the seed did not answer in time".into()))?
}

/// A server certificate verifier for the one moment a joining node cannot verify yet:
/// it keeps the chain the seed presented (checked against the CA once the CA is
/// fetched and matched to the token, before anything is sent that needs trust) and
/// checks the handshake signature with that certificate's key, so the seed holds it.
#[derive(Debug)]
struct PresentedChain {
    chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PresentedChain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain);
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_hides_its_secret_in_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (token, created) = init_cluster(dir.path()).expect("init");
        assert!(created);
        let text = token.to_string();
        assert!(text.starts_with("quiver-join-v1:"), "{text}");
        let parsed: JoinToken = text.parse().expect("parses");
        assert_eq!(parsed, token);
        assert!(!format!("{token:?}").contains(&hex(&token.secret)));
        // Again: the same CA and secret.
        let (again, created) = init_cluster(dir.path()).expect("init again");
        assert!(!created);
        assert_eq!(again, token);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(secret_path(dir.path()))
            .expect("secret")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the secret is its owner's only: {mode:o}");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = format!(
            "{JOIN_TOKEN_PREFIX}:{}:{}",
            "ab".repeat(32),
            "cd".repeat(32)
        );
        assert!(good.parse::<JoinToken>().is_ok());
        for bad in [
            String::new(),
            "quiver-join-v2:aa:bb".to_owned(),
            format!("{JOIN_TOKEN_PREFIX}:{}", "ab".repeat(32)),
            format!(
                "{JOIN_TOKEN_PREFIX}:{}:{}",
                "ab".repeat(31),
                "cd".repeat(32)
            ),
            format!(
                "{JOIN_TOKEN_PREFIX}:{}:{}",
                "zz".repeat(32),
                "cd".repeat(32)
            ),
            format!("{good}:extra"),
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_proof_is_bound_to_its_connection_and_node() {
        let secret = [9u8; 32];
        let binding = [1u8; 32];
        let made = proof(&secret, &binding, 3);
        assert!(proof_holds(&secret, &binding, 3, &made));
        assert!(
            !proof_holds(&secret, &[2u8; 32], 3, &made),
            "replayed elsewhere"
        );
        assert!(!proof_holds(&secret, &binding, 4, &made), "another node id");
        assert!(
            !proof_holds(&[8u8; 32], &binding, 3, &made),
            "another secret"
        );
        assert!(!proof_holds(&secret, &binding, 3, &made[..31]));
    }

    #[test]
    fn the_gate_admits_a_bounded_number_a_minute() {
        let gate = JoinGate::default();
        let admitted = (0..1000).filter(|_| gate.admit(1_000)).count();
        assert_eq!(admitted, JOIN_REQUESTS_PER_MINUTE_MAX as usize);
        assert!(gate.admit(61_000), "a new minute");
    }

    #[test]
    fn a_seed_issues_only_for_the_right_proof_and_a_free_node_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (token, _) = init_cluster(dir.path()).expect("init");
        let binding = [5u8; 32];
        let (csr, _key) = tls::signing_request().expect("csr");
        let mut request = JoinClusterRequest {
            node_id: 2,
            addresses: vec!["10.9.0.2".into()],
            csr: Bytes::from(csr),
            proof: Bytes::copy_from_slice(&proof(&token.secret, &binding, 2)),
        };
        let der = issue(dir.path(), Some(&binding), &request, None).expect("issued");
        assert!(
            tls::certificate_ips(&der).contains(&"10.9.0.2".parse().expect("ip")),
            "the certificate names the node's own address"
        );
        assert_eq!(
            crate::security::Principal::from_certificate(&der),
            Some(crate::security::Principal::Broker)
        );
        let refused = issue(dir.path(), Some(&[6u8; 32]), &request, None).expect_err("replayed");
        assert_eq!(refused.code, ErrorCode::InvalidJoinToken);
        let refused = issue(
            dir.path(),
            Some(&binding),
            &request,
            Some("10.9.0.2:7420".into()),
        )
        .expect_err("in use");
        assert_eq!(refused.code, ErrorCode::NodeIdInUse);
        request.addresses = vec!["bad name!".into()];
        let refused = issue(dir.path(), Some(&binding), &request, None).expect_err("bad name");
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
        request.addresses = vec!["10.9.0.2".into()];
        request.csr = Bytes::from_static(b"not a request");
        let refused = issue(dir.path(), Some(&binding), &request, None).expect_err("bad csr");
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
    }
}
