//! What a follower's fetch carries, and what the leader answers.
//!
//! The round trip is described in the crate documentation.

use crate::leader_epoch::EpochEndOffset;

/// The offsets and epoch of one stored batch, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRange {
    pub base_offset: u64,
    /// Offset of the batch's last record (`base_offset + last_offset_delta`).
    pub last_offset: u64,
    pub leader_epoch: u32,
}

/// A follower's fetch (Kafka's replica Fetch request with KIP-320's epochs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    /// The fetching follower.
    pub replica_id: u32,
    /// Where to send it: the leader the follower was told about.
    pub leader: u32,
    /// The epoch the follower believes current; the leader refuses any other.
    pub leader_epoch: u32,
    /// The follower's log end offset: the first offset it wants.
    pub fetch_offset: u64,
    /// The epoch of the follower's last record, `None` for an empty log. The leader
    /// checks that its own log holds this epoch up to `fetch_offset`.
    pub last_fetched_epoch: Option<u32>,
    /// Pairs the response with this request on the follower; local only, not sent
    /// on the wire and ignored by the leader.
    pub fetch_id: u64,
}

/// The leader's answer to a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReply {
    /// Send whole batches from `fetch_offset` up to `log_end_offset` (as many as the
    /// fetch's byte limit allows; at least the first), and `high_watermark`.
    Records {
        fetch_offset: u64,
        log_end_offset: u64,
        high_watermark: u64,
    },
    /// Send no records: the follower's log stops agreeing with ours no later than
    /// `diverging.end_offset` (Kafka's diverging epoch, KIP-320/KIP-595).
    Diverging {
        diverging: EpochEndOffset,
        high_watermark: u64,
    },
}

/// What a follower received for its fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResponse<'a> {
    /// The leader's batches, in offset order, as parsed from their headers.
    Records {
        high_watermark: u64,
        batches: &'a [BatchRange],
    },
    /// The leader's [`FetchReply::Diverging`].
    Diverging {
        diverging: EpochEndOffset,
        high_watermark: u64,
    },
}
