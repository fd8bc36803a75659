//! Quiver's replication state machine for one partition replica, in Kafka's model:
//! followers pull from the leader, the leader keeps the in-sync replica set (ISR) and
//! the high watermark, and leader epochs tell a rejoining replica where its log
//! diverged (KIP-101, KIP-279, KIP-320).
//!
//! What it does:
//! - tracks the replica's role (leader or follower of an epoch, as the controller
//!   assigns it), its log end offset, high watermark and leader-epoch history
//!   ([`LeaderEpochCache`]);
//! - as follower: decides when to fetch ([`Replica::poll_fetch`]), checks what comes
//!   back, and says which batches to append and where to truncate ([`Output`]);
//! - as leader: checks each follower's log against its own through the follower's last
//!   fetched epoch, answers with records or with the point of divergence, tracks each
//!   follower's progress, moves the high watermark, and proposes ISR changes to the
//!   controller ([`Output::ProposeIsr`]), applying them only once committed;
//! - answers acks=all questions ([`Replica::can_accept_acks_all`],
//!   [`Replica::acks_all_outcome`]).
//!
//! What it does not do: I/O of any kind. It never reads or writes the log (the broker
//! does, as told by [`Output`]), never sends a message, never reads a clock (every call
//! takes `now_ms`), and starts no thread or timer ([`Replica::poll_timeout`] says when
//! to call back). It does not elect leaders or store the ISR: the controller does, and
//! tells the replica through [`Replica::become_leader`], [`Replica::become_follower`]
//! and [`Replica::handle_isr_committed`]. It does not model retention (a fetch below the
//! leader's log start is the log's `OffsetOutOfRange`), unclean election, or a replica
//! set changing under a leader (reassignment): the controller starts a new epoch.
//!
//! # Driving it from the broker
//!
//! | broker event | call |
//! |---|---|
//! | log opened at startup | [`Replica::new`] with a [`RecoveredLog`] |
//! | controller: you lead epoch E | [`Replica::become_leader`] |
//! | controller: follow L in epoch E | [`Replica::become_follower`] |
//! | controller: ISR committed (answer or own change) | [`Replica::handle_isr_committed`] |
//! | acks=all produce arrives (before appending) | [`Replica::can_accept_acks_all`] |
//! | produce appended on the leader | [`Replica::handle_local_append`] |
//! | high watermark moved, acks=all produce waiting | [`Replica::acks_all_outcome`] |
//! | follower fetch arrived at the leader | [`Replica::handle_follower_fetch`] |
//! | our fetch was answered / failed | [`Replica::handle_fetch_response`] / [`Replica::handle_fetch_error`] |
//! | timer fired ([`Replica::poll_timeout`]) | [`Replica::handle_timeout`] |
//! | after each of the above | [`Replica::poll_fetch`], then [`Replica::poll_output`] until `None` |
//!
//! What to do with each [`Output`], in order: [`Output::Truncate`] cut the log;
//! [`Output::Append`] append that batch of the fetch response as received;
//! [`Output::ProposeIsr`] send it to the controller; [`Output::HighWatermark`] publish
//! it to consumers and wake waiting acks=all produces.
//!
//! Appends of fetched data are emitted, not confirmed: the state machine counts an
//! [`Output::Append`] as done when it emits it, so the broker must perform every
//! output, in order, before the next call. If it cannot (the disk failed), the
//! partition goes out of service and the replica is rebuilt from what is on disk.
//! The leader's own appends go the other way: the broker appends (stamping the batch
//! with [`Replica::leader_epoch`]) and then reports it, because the broker assigns the
//! offsets.
//!
//! # A fetch round trip
//!
//! 1. follower: [`Replica::poll_fetch`] gives a [`FetchRequest`] (at most one in
//!    flight, given up after `fetch_timeout_ms`); the broker sends it to
//!    `request.leader` and keeps it to pair with the answer;
//! 2. leader: [`Replica::handle_follower_fetch`] checks that its log holds the
//!    follower's last fetched epoch up to the fetch offset. If so it records the
//!    follower's progress and answers [`FetchReply::Records`]: the broker reads whole
//!    batches from `fetch_offset` up to `log_end_offset` (bounded by its byte limit)
//!    and sends them with the high watermark. If not, [`FetchReply::Diverging`]
//!    carries the leader's end of that epoch;
//! 3. follower: the broker parses the batch headers into [`BatchRange`]s and calls
//!    [`Replica::handle_fetch_response`] with the kept request. Records must continue
//!    the log exactly; a divergence becomes an [`Output::Truncate`] at the end of the
//!    last epoch both logs share (`min(own end, leader's end)` when the follower knows
//!    the leader's epoch, else the end of its own largest epoch below it, and the next
//!    fetch narrows it down) and never at the high watermark.
//!
//! # High watermark and ISR rules
//!
//! - Leader: high watermark = the smallest log end offset over the *maximal* ISR (the
//!   committed ISR plus the members of a pending proposal), and never lower than
//!   before. A new leader keeps its high watermark until every member has fetched in
//!   its epoch. While a removal is pending the member still counts; an added member
//!   counts from the moment it is proposed, so that when the controller commits it,
//!   it already holds everything below the high watermark and is safe to elect.
//! - Shrink: an ISR member that has not caught up to the leader's log end for
//!   `replica_lag_max_ms` (checked in [`Replica::handle_timeout`]). Expand: a follower
//!   whose fetch offset reaches the high watermark and the start of the leader's epoch
//!   (checked on its fetch). Either is an [`Output::ProposeIsr`]; the committed ISR
//!   changes only in [`Replica::handle_isr_committed`], and the contract the controller
//!   must keep is on [`IsrCommit`].
//! - acks=all needs the committed ISR to have `min_insync_replicas` members when the
//!   produce arrives and when the high watermark passes it.
//! - Follower: high watermark = the leader's, capped by its own log end, never lower
//!   than before.

mod ack_queue;
mod config;
mod error;
mod fetch;
mod isr;
mod leader_epoch;
mod replica;

pub use ack_queue::ACK_TICKETS_MAX;
pub use config::{
    EPOCH_ENTRIES_MAX, FETCH_RESPONSE_BATCHES_MAX, OUTPUTS_MAX, REPLICAS_MAX, ReplicaConfig,
};
pub use error::{
    AcksAllError, AssignmentError, BecomeFollowerError, BecomeLeaderError, ConfigError,
    EpochHistoryError, FetchResponseError, FollowerFetchError, IsrUpdateError, LocalAppendError,
    RecoverError,
};
pub use fetch::{BatchRange, FetchReply, FetchRequest, FetchResponse};
pub use isr::{IsrCommit, IsrProposal};
pub use leader_epoch::{EpochEndOffset, EpochEntry, LeaderEpochCache};
pub use replica::{AcksAll, Output, RecoveredLog, Replica, Role};
