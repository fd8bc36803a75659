//! Messages between brokers of a cluster and about the cluster: the controllers' Raft
//! RPCs, carried opaquely, and the cluster status an operator asks for.
//!
//! Layouts as in [`crate::message`]: strings `[length:2][utf8]`, arrays
//! `[count:4][elements]`, byte fields `[length:4][bytes]`, integers big-endian.

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::codec::{DecodeError, Reader, WriteExt, take_bytes};
use crate::message::{ResponseBody, Rpc};

/// The largest controller RPC payload (the controller's own cap is 16 MiB).
pub const CONTROLLER_RPC_BYTES_MAX: usize = 16 * 1024 * 1024 + 64 * 1024;
/// Brokers one status answer lists.
pub const CLUSTER_BROKERS_MAX: usize = 10_000;

/// One Raft RPC from a controller to another: `[payload:bytes]`, the controller's own
/// encoding. The answer has the same shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRpcRequest {
    pub payload: Bytes,
}

fn put_payload(buf: &mut BytesMut, payload: &Bytes) {
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
}

fn take_payload(mut body: Bytes) -> Result<Bytes, DecodeError> {
    let payload = take_bytes(&mut body, "payload", CONTROLLER_RPC_BYTES_MAX)?;
    Reader::new(&body).finish()?;
    Ok(payload)
}

impl Rpc for ControllerRpcRequest {
    const API: ApiKey = ApiKey::ControllerRpc;
    type Response = ControllerRpcResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        put_payload(buf, &self.payload);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Ok(Self {
            payload: take_payload(body.freeze())?,
        })
    }
}

/// The answer to a [`ControllerRpcRequest`]: `[payload:bytes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRpcResponse {
    pub payload: Bytes,
}

impl ResponseBody for ControllerRpcResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        put_payload(buf, &self.payload);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        Ok(Self {
            payload: take_payload(body)?,
        })
    }
}

/// Asks a broker what it knows of its cluster. Empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterStatusRequest;

impl Rpc for ClusterStatusRequest {
    const API: ApiKey = ApiKey::ClusterStatus;
    type Response = ClusterStatusResponse;
    fn encode_body(&self, _buf: &mut BytesMut) {}
    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Reader::new(&body).finish()?;
        Ok(ClusterStatusRequest)
    }
}

/// One broker as the controller's metadata records it:
/// `[id:4][address:string][fenced:1][broker_epoch:8]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerStatus {
    pub id: u32,
    pub address: String,
    /// Missed its heartbeats (or stopped): it leads nothing and is in no ISR.
    pub fenced: bool,
    pub broker_epoch: u64,
}

/// A peer this broker cannot reach: `[id:4][address:string][reason:string]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreachablePeer {
    pub id: u32,
    pub address: String,
    /// Why, in words: "certificate signed by a different CA", "timed out", ...
    pub reason: String,
}

/// The version of ClusterStatus whose answer lists unreachable peers.
pub const CLUSTER_STATUS_UNREACHABLE_VERSION: u16 = 1;

/// `[node_id:4][mode:string][leader:8 (u64::MAX: none)][leader_address:string][term:8]
/// [voters:array<4>][brokers:array<BrokerStatus>][under_replicated:4]
/// [unreachable:array<UnreachablePeer>]` (version 1; version 0 ends before
/// `unreachable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatusResponse {
    /// The broker that answered.
    pub node_id: u32,
    /// `cluster` (a controller quorum) or `standalone` (a single broker without one).
    pub mode: String,
    /// The controller leader's node id, if one is known.
    pub controller_leader: Option<u64>,
    pub controller_leader_address: String,
    /// The controller's Raft term as this broker last saw it.
    pub term: u64,
    pub voters: Vec<u32>,
    pub brokers: Vec<BrokerStatus>,
    /// Partitions with fewer in-sync replicas than assigned ones.
    pub under_replicated_partitions: u32,
    /// The other brokers this one last failed to reach, and why.
    pub unreachable: Vec<UnreachablePeer>,
}

impl ClusterStatusResponse {
    /// The answer frame for a request of `version`: without the unreachable peers
    /// before version 1, for clients of earlier builds.
    pub fn encode_frame_for(&self, version: u16) -> Bytes {
        let mut buf = crate::frame::begin_response(64);
        self.encode_v0(&mut buf);
        if version >= CLUSTER_STATUS_UNREACHABLE_VERSION {
            self.encode_unreachable(&mut buf);
        }
        crate::frame::seal_frame(&mut buf, 0);
        buf.freeze()
    }

    fn encode_unreachable(&self, buf: &mut BytesMut) {
        buf.put_array_len(self.unreachable.len());
        for peer in &self.unreachable {
            buf.put_u32(peer.id);
            buf.put_string(&peer.address);
            buf.put_string(&peer.reason);
        }
    }

    fn encode_v0(&self, buf: &mut BytesMut) {
        buf.put_u32(self.node_id);
        buf.put_string(&self.mode);
        buf.put_u64(self.controller_leader.unwrap_or(u64::MAX));
        buf.put_string(&self.controller_leader_address);
        buf.put_u64(self.term);
        buf.put_array_len(self.voters.len());
        for v in &self.voters {
            buf.put_u32(*v);
        }
        buf.put_array_len(self.brokers.len());
        for b in &self.brokers {
            buf.put_u32(b.id);
            buf.put_string(&b.address);
            buf.put_bool(b.fenced);
            buf.put_u64(b.broker_epoch);
        }
        buf.put_u32(self.under_replicated_partitions);
    }
}

impl ResponseBody for ClusterStatusResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        self.encode_v0(buf);
        self.encode_unreachable(buf);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let node_id = r.u32("node_id")?;
        let mode = r.string("mode")?;
        let leader = r.u64("controller_leader")?;
        let controller_leader_address = r.string("controller_leader_address")?;
        let term = r.u64("term")?;
        let n = r.array_len("voters", CLUSTER_BROKERS_MAX, 4)?;
        let voters = (0..n).map(|_| r.u32("voter")).collect::<Result<_, _>>()?;
        let n = r.array_len("brokers", CLUSTER_BROKERS_MAX, 15)?;
        let brokers = (0..n)
            .map(|_| {
                Ok(BrokerStatus {
                    id: r.u32("id")?,
                    address: r.string("address")?,
                    fenced: r.bool("fenced")?,
                    broker_epoch: r.u64("broker_epoch")?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        let under_replicated_partitions = r.u32("under_replicated_partitions")?;
        let n = r.array_len("unreachable", CLUSTER_BROKERS_MAX, 8)?;
        let unreachable = (0..n)
            .map(|_| {
                Ok(UnreachablePeer {
                    id: r.u32("id")?,
                    address: r.string("address")?,
                    reason: r.string("reason")?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        r.finish()?;
        Ok(Self {
            node_id,
            mode,
            controller_leader: (leader != u64::MAX).then_some(leader),
            controller_leader_address,
            term,
            voters,
            brokers,
            under_replicated_partitions,
            unreachable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        let status = ClusterStatusResponse {
            node_id: 2,
            mode: "cluster".into(),
            controller_leader: Some(1),
            controller_leader_address: "127.0.0.1:7420".into(),
            term: 4,
            voters: vec![1, 2, 3],
            brokers: vec![BrokerStatus {
                id: 3,
                address: "127.0.0.1:7440".into(),
                fenced: true,
                broker_epoch: 9,
            }],
            under_replicated_partitions: 0,
            unreachable: vec![UnreachablePeer {
                id: 3,
                address: "10.0.0.3:7420".into(),
                reason: "certificate signed by a different CA".into(),
            }],
        };
        let mut buf = BytesMut::new();
        status.encode_body(&mut buf);
        assert_eq!(
            ClusterStatusResponse::decode_body(buf.freeze()).expect("decodes"),
            status
        );
        let none = ClusterStatusResponse {
            controller_leader: None,
            ..status
        };
        let mut buf = BytesMut::new();
        none.encode_body(&mut buf);
        assert_eq!(
            ClusterStatusResponse::decode_body(buf.freeze()).expect("decodes"),
            none
        );
    }

    #[test]
    fn rpc_payload_round_trips_and_is_bounded() {
        let request = ControllerRpcRequest {
            payload: Bytes::from_static(b"{\"Vote\":{}}"),
        };
        let mut buf = BytesMut::new();
        request.encode_body(&mut buf);
        assert_eq!(
            ControllerRpcRequest::decode_body(buf).expect("decodes"),
            request
        );
        let mut lying = BytesMut::new();
        lying.put_u32(u32::MAX);
        assert!(ControllerRpcRequest::decode_body(lying).is_err());
    }
}

/// A follower broker's fetch from the partition leader (Kafka's replica fetch with
/// KIP-320's epochs): `[topic:string][partition:4][replica_id:4][leader_epoch:4]
/// [fetch_offset:8][last_fetched_epoch:4 (u32::MAX: empty log)][max_bytes:4][max_wait_ms:4]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchRequest {
    pub topic: String,
    pub partition: u32,
    pub replica_id: u32,
    pub leader_epoch: u32,
    pub fetch_offset: u64,
    pub last_fetched_epoch: Option<u32>,
    pub max_bytes: u32,
    pub max_wait_ms: u32,
}

impl Rpc for ReplicaFetchRequest {
    const API: ApiKey = ApiKey::ReplicaFetch;
    type Response = ReplicaFetchResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.topic);
        buf.put_u32(self.partition);
        buf.put_u32(self.replica_id);
        buf.put_u32(self.leader_epoch);
        buf.put_u64(self.fetch_offset);
        buf.put_u32(self.last_fetched_epoch.unwrap_or(u32::MAX));
        buf.put_u32(self.max_bytes);
        buf.put_u32(self.max_wait_ms);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            topic: r.string("topic")?,
            partition: r.u32("partition")?,
            replica_id: r.u32("replica_id")?,
            leader_epoch: r.u32("leader_epoch")?,
            fetch_offset: r.u64("fetch_offset")?,
            last_fetched_epoch: Some(r.u32("last_fetched_epoch")?).filter(|e| *e != u32::MAX),
            max_bytes: r.u32("max_bytes")?,
            max_wait_ms: r.u32("max_wait_ms")?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// The leader's answer: `[kind:1]`, then for records (0)
/// `[high_watermark:8][log_end_offset:8][batches:bytes]`, for a divergence (1)
/// `[leader_epoch:4][end_offset:8][high_watermark:8]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaFetchResponse {
    /// Stored batches from the fetch offset, back to back, exactly as the leader holds
    /// them.
    Records {
        high_watermark: u64,
        log_end_offset: u64,
        batches: Bytes,
    },
    /// The follower's log stops agreeing with the leader's no later than `end_offset`
    /// of `leader_epoch`.
    Diverging {
        leader_epoch: u32,
        end_offset: u64,
        high_watermark: u64,
    },
}

impl ReplicaFetchResponse {
    /// The frame of a records answer up to and including its batches' length, so the
    /// leader sends the stored batches after it as separate chunks, never copying them.
    pub fn encode_records_head(
        high_watermark: u64,
        log_end_offset: u64,
        batches_len: usize,
    ) -> Bytes {
        let mut buf = crate::frame::begin_response(21);
        buf.put_u8(0);
        buf.put_u64(high_watermark);
        buf.put_u64(log_end_offset);
        buf.put_u32(batches_len as u32);
        crate::frame::seal_frame(&mut buf, batches_len);
        buf.freeze()
    }
}

impl ResponseBody for ReplicaFetchResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        match self {
            ReplicaFetchResponse::Records {
                high_watermark,
                log_end_offset,
                batches,
            } => {
                buf.put_u8(0);
                buf.put_u64(*high_watermark);
                buf.put_u64(*log_end_offset);
                buf.put_u32(batches.len() as u32);
                buf.put_slice(batches);
            }
            ReplicaFetchResponse::Diverging {
                leader_epoch,
                end_offset,
                high_watermark,
            } => {
                buf.put_u8(1);
                buf.put_u32(*leader_epoch);
                buf.put_u64(*end_offset);
                buf.put_u64(*high_watermark);
            }
        }
    }

    fn decode_body(mut body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        match r.u8("kind")? {
            0 => {
                let high_watermark = r.u64("high_watermark")?;
                let log_end_offset = r.u64("log_end_offset")?;
                let consumed = r.consumed();
                bytes::Buf::advance(&mut body, consumed);
                let batches = take_bytes(&mut body, "batches", crate::frame::FRAME_BYTES_MAX)?;
                Reader::new(&body).finish()?;
                Ok(ReplicaFetchResponse::Records {
                    high_watermark,
                    log_end_offset,
                    batches,
                })
            }
            1 => {
                let out = ReplicaFetchResponse::Diverging {
                    leader_epoch: r.u32("leader_epoch")?,
                    end_offset: r.u64("end_offset")?,
                    high_watermark: r.u64("high_watermark")?,
                };
                r.finish()?;
                Ok(out)
            }
            other => Err(DecodeError::InvalidValue {
                what: "replica fetch kind",
                value: other.into(),
            }),
        }
    }
}

#[cfg(test)]
mod replica_fetch_tests {
    use super::*;

    #[test]
    fn replica_fetch_round_trips() {
        let request = ReplicaFetchRequest {
            topic: "t".into(),
            partition: 1,
            replica_id: 2,
            leader_epoch: 3,
            fetch_offset: 40,
            last_fetched_epoch: None,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        };
        let mut buf = BytesMut::new();
        request.encode_body(&mut buf);
        assert_eq!(
            ReplicaFetchRequest::decode_body(buf).expect("decodes"),
            request
        );
        for response in [
            ReplicaFetchResponse::Records {
                high_watermark: 5,
                log_end_offset: 9,
                batches: Bytes::from_static(b"batch bytes"),
            },
            ReplicaFetchResponse::Diverging {
                leader_epoch: 2,
                end_offset: 7,
                high_watermark: 5,
            },
        ] {
            let mut buf = BytesMut::new();
            response.encode_body(&mut buf);
            assert_eq!(
                ReplicaFetchResponse::decode_body(buf.freeze()).expect("decodes"),
                response
            );
        }
        // The head plus the batches as chunks is the same frame.
        let batches = Bytes::from_static(b"batch bytes");
        let whole = ReplicaFetchResponse::Records {
            high_watermark: 5,
            log_end_offset: 9,
            batches: batches.clone(),
        }
        .encode_frame();
        let mut chunked =
            BytesMut::from(&ReplicaFetchResponse::encode_records_head(5, 9, batches.len())[..]);
        chunked.extend_from_slice(&batches);
        assert_eq!(chunked.freeze(), whole);
    }
}
