//! How a node joins a cluster with a join token (`quiver serve --join-token`): it asks
//! a seed for the cluster's CA certificate ([`JoinCaRequest`]), checks it against the
//! token's fingerprint and the seed's own certificate against it, and only then proves
//! the token's secret and asks for a broker certificate for its node id
//! ([`JoinClusterRequest`]).
//!
//! The proof never carries the secret: it is an HMAC-SHA256 keyed by the secret over
//! [`JOIN_PROOF_CONTEXT`], the TLS connection's exported keying material
//! ([`JOIN_EXPORTER_LABEL`]) and the node id, so a proof seen on one connection is
//! worthless on another (no replay) and names the node it was made for.
//!
//! Layouts as in [`crate::message`]: strings `[length:2][utf8]`, arrays
//! `[count:4][elements]`, byte fields `[length:4][bytes]`, integers big-endian.

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::codec::{DecodeError, Reader, WriteExt, take_bytes};
use crate::message::{ResponseBody, Rpc};

/// The label of the TLS exporter (RFC 8446 section 7.5) both ends derive the proof's
/// channel binding from.
pub const JOIN_EXPORTER_LABEL: &[u8] = b"EXPORTER-quiver-join-v1";
/// Bytes of exported keying material the proof covers.
pub const JOIN_BINDING_BYTES: usize = 32;
/// What the proof's HMAC covers first, so it is never valid for anything else.
pub const JOIN_PROOF_CONTEXT: &[u8] = b"quiver join proof v1";
/// Bytes of a proof (an HMAC-SHA256).
pub const JOIN_PROOF_BYTES: usize = 32;
/// Addresses one broker certificate may name.
pub const JOIN_ADDRESSES_MAX: usize = 16;
/// The longest address (an IP address or a DNS name) a certificate may name, in bytes.
pub const JOIN_ADDRESS_BYTES_MAX: usize = 253;
/// The largest certificate signing request a join may carry, in bytes (an ECDSA P-256
/// request is about 300).
pub const JOIN_CSR_BYTES_MAX: usize = 4 * 1024;
/// The largest certificate an answer may carry, in bytes.
pub const JOIN_CERT_BYTES_MAX: usize = 16 * 1024;

/// Asks a broker for its cluster's CA certificate. Empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JoinCaRequest;

impl Rpc for JoinCaRequest {
    const API: ApiKey = ApiKey::JoinCa;
    type Response = JoinCaResponse;
    fn encode_body(&self, _buf: &mut BytesMut) {}
    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Reader::new(&body).finish()?;
        Ok(JoinCaRequest)
    }
}

/// `[ca_cert:bytes]`: the CA certificate, DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinCaResponse {
    pub ca_cert: Bytes,
}

impl ResponseBody for JoinCaResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(self.ca_cert.len() as u32);
        buf.put_slice(&self.ca_cert);
    }

    fn decode_body(mut body: Bytes) -> Result<Self, DecodeError> {
        let ca_cert = take_bytes(&mut body, "ca_cert", JOIN_CERT_BYTES_MAX)?;
        Reader::new(&body).finish()?;
        Ok(Self { ca_cert })
    }
}

/// Asks for a broker certificate: `[node_id:4][addresses:array<string>][csr:bytes]
/// [proof:bytes]`. The certificate names `addresses` (IP addresses or DNS names, the
/// ones other brokers and clients dial) and takes its public key from `csr` (DER);
/// nothing else of the request reaches the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClusterRequest {
    pub node_id: u32,
    pub addresses: Vec<String>,
    pub csr: Bytes,
    pub proof: Bytes,
}

impl Rpc for JoinClusterRequest {
    const API: ApiKey = ApiKey::JoinCluster;
    type Response = JoinClusterResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(self.node_id);
        buf.put_array_len(self.addresses.len());
        for address in &self.addresses {
            buf.put_string(address);
        }
        buf.put_u32(self.csr.len() as u32);
        buf.put_slice(&self.csr);
        buf.put_u32(self.proof.len() as u32);
        buf.put_slice(&self.proof);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut body = body.freeze();
        let mut r = Reader::new(&body);
        let node_id = r.u32("node_id")?;
        let n = r.array_len("addresses", JOIN_ADDRESSES_MAX, 2)?;
        let addresses = (0..n)
            .map(|_| {
                let address = r.string("address")?;
                if address.len() > JOIN_ADDRESS_BYTES_MAX {
                    return Err(DecodeError::InvalidValue {
                        what: "address length",
                        value: address.len() as i64,
                    });
                }
                Ok(address)
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let consumed = r.consumed();
        bytes::Buf::advance(&mut body, consumed);
        let csr = take_bytes(&mut body, "csr", JOIN_CSR_BYTES_MAX)?;
        let proof = take_bytes(&mut body, "proof", JOIN_PROOF_BYTES)?;
        Reader::new(&body).finish()?;
        Ok(Self {
            node_id,
            addresses,
            csr,
            proof,
        })
    }
}

/// `[certificate:bytes]`: the broker certificate, DER, signed by the cluster's CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClusterResponse {
    pub certificate: Bytes,
}

impl ResponseBody for JoinClusterResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(self.certificate.len() as u32);
        buf.put_slice(&self.certificate);
    }

    fn decode_body(mut body: Bytes) -> Result<Self, DecodeError> {
        let certificate = take_bytes(&mut body, "certificate", JOIN_CERT_BYTES_MAX)?;
        Reader::new(&body).finish()?;
        Ok(Self { certificate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_messages_round_trip() {
        let request = JoinClusterRequest {
            node_id: 3,
            addresses: vec!["10.0.0.3".into(), "node3.example".into()],
            csr: Bytes::from_static(b"csr der"),
            proof: Bytes::from(vec![7u8; JOIN_PROOF_BYTES]),
        };
        let mut buf = BytesMut::new();
        request.encode_body(&mut buf);
        assert_eq!(
            JoinClusterRequest::decode_body(buf).expect("decodes"),
            request
        );
        let answer = JoinCaResponse {
            ca_cert: Bytes::from_static(b"ca der"),
        };
        let mut buf = BytesMut::new();
        answer.encode_body(&mut buf);
        assert_eq!(
            JoinCaResponse::decode_body(buf.freeze()).expect("decodes"),
            answer
        );
    }

    #[test]
    fn oversized_join_fields_are_refused_before_allocating() {
        let mut base = JoinClusterRequest {
            node_id: 3,
            addresses: vec!["10.0.0.3".into()],
            csr: Bytes::from_static(b"csr"),
            proof: Bytes::from(vec![0u8; JOIN_PROOF_BYTES]),
        };
        let encode = |r: &JoinClusterRequest| {
            let mut buf = BytesMut::new();
            r.encode_body(&mut buf);
            buf
        };
        base.addresses = vec!["a".into(); JOIN_ADDRESSES_MAX + 1];
        assert!(JoinClusterRequest::decode_body(encode(&base)).is_err());
        base.addresses = vec!["a".repeat(JOIN_ADDRESS_BYTES_MAX + 1)];
        assert!(JoinClusterRequest::decode_body(encode(&base)).is_err());
        base.addresses = vec!["10.0.0.3".into()];
        base.csr = Bytes::from(vec![0u8; JOIN_CSR_BYTES_MAX + 1]);
        assert!(JoinClusterRequest::decode_body(encode(&base)).is_err());
        base.csr = Bytes::from_static(b"csr");
        base.proof = Bytes::from(vec![0u8; JOIN_PROOF_BYTES + 1]);
        assert!(JoinClusterRequest::decode_body(encode(&base)).is_err());
        let mut lying = BytesMut::new();
        lying.put_u32(3);
        lying.put_u32(u32::MAX);
        assert!(JoinClusterRequest::decode_body(lying).is_err());
    }
}
