//! One replica of one partition: its role, its view of its own log, and (as leader)
//! its view of the followers.

use std::collections::VecDeque;

use crate::ack_queue::AckQueue;
use crate::config::{FETCH_RESPONSE_BATCHES_MAX, OUTPUTS_MAX, REPLICAS_MAX, ReplicaConfig};
use crate::error::{
    AcksAllError, AssignmentError, BecomeFollowerError, BecomeLeaderError, FetchResponseError,
    FollowerFetchError, IsrUpdateError, LocalAppendError, RecoverError,
};
use crate::fetch::{BatchRange, FetchReply, FetchRequest, FetchResponse};
use crate::isr::{FollowerProgress, Isr, IsrCommit, IsrProposal, PendingProposal};
use crate::leader_epoch::{EpochEndOffset, LeaderEpochCache};

/// What the broker found in the partition's log when it (re)opened it. Everything else
/// the state machine knows lives in memory and starts over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredLog {
    /// The first offset still stored (retention may have removed earlier ones).
    pub log_start_offset: u64,
    /// The offset the next record gets.
    pub log_end_offset: u64,
    /// The epoch history rebuilt from the stored batch headers
    /// ([`LeaderEpochCache::record`] for every batch, in order).
    pub epochs: LeaderEpochCache,
    /// A high watermark known to be committed, if the broker keeps one (Kafka
    /// checkpoints it); 0 is always safe, consumers then wait for the first fetch.
    pub high_watermark: u64,
}

impl RecoveredLog {
    /// A partition with no records yet.
    pub fn empty() -> Self {
        Self {
            log_start_offset: 0,
            log_end_offset: 0,
            epochs: LeaderEpochCache::new(),
            high_watermark: 0,
        }
    }
}

/// A replica's role, as the controller last assigned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No role yet (just opened): it neither fetches nor serves fetches.
    Unassigned,
    Leader {
        leader_epoch: u32,
    },
    Follower {
        leader: u32,
        leader_epoch: u32,
    },
}

/// Work for the broker, drained with [`Replica::poll_output`] after every call and
/// carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Remove every record at offset `to` or above (a follower whose log diverged from
    /// the leader's). `to` is the end of an epoch both logs share, so it falls on a
    /// batch boundary of a log written by this protocol.
    Truncate { to: u64 },
    /// Append the fetched batch with this range, exactly as received. Emitted once per
    /// accepted batch of a fetch response, in order; batches of the response without
    /// one were not accepted and must not be appended.
    Append(BatchRange),
    /// Send this proposal to the controller; its answer goes to
    /// [`Replica::handle_isr_committed`]. A proposal already queued is replaced.
    ProposeIsr(IsrProposal),
    /// The high watermark is now this: consumers may read below it, and acks=all
    /// produces it passed can be answered ([`Replica::acks_all_outcome`]). Only the
    /// newest value is kept, after the log operations it depends on.
    HighWatermark(u64),
}

/// The answer to "can this acks=all produce be acknowledged?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksAll {
    /// The high watermark passed the batch and enough replicas are in sync.
    Acknowledged,
    /// Not yet: ask again when the high watermark moves (or give up on a timeout).
    Waiting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LeaderState {
    leader_epoch: u32,
    /// Log end offset when this replica became leader: where its epoch starts.
    epoch_start_offset: u64,
    replicas: Vec<u32>,
    /// Every replica but this one, in `replicas` order.
    followers: Vec<FollowerProgress>,
    isr: Isr,
}

impl LeaderState {
    fn progress(&self, replica: u32) -> Option<&FollowerProgress> {
        self.followers.iter().find(|p| p.replica == replica)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlightFetch {
    request: FetchRequest,
    deadline_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FollowerState {
    leader: u32,
    leader_epoch: u32,
    in_flight: Option<InFlightFetch>,
    /// No fetch is sent before this time (back-off after a failure).
    next_fetch_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RoleState {
    Unassigned,
    Leader(LeaderState),
    Follower(FollowerState),
}

/// The replication state machine of one partition replica (Kafka's model: pull-based
/// followers, ISR, high watermark, leader epochs). Sans-IO: events come in through
/// `become_*` and `handle_*` with the current time, work goes out through `poll_*`.
#[derive(Debug, Clone)]
pub struct Replica {
    replica_id: u32,
    config: ReplicaConfig,
    log_end_offset: u64,
    high_watermark: u64,
    epochs: LeaderEpochCache,
    role: RoleState,
    outputs: VecDeque<Output>,
    next_fetch_id: u64,
    /// Acks=all produces waiting for the ISR.
    acks: AckQueue,
    /// The latest time an event brought, for settling the acks of events that bring
    /// none (a local append).
    now_ms: u64,
}

impl Replica {
    /// Replaces the settings (a topic config change, such as `min.insync.replicas`);
    /// they apply from the next event. Invalid settings change nothing.
    pub fn set_config(&mut self, config: ReplicaConfig) -> Result<(), crate::error::ConfigError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// A replica over a log the broker opened, with no role until the controller's
    /// first word.
    pub fn new(
        replica_id: u32,
        config: ReplicaConfig,
        log: RecoveredLog,
    ) -> Result<Self, RecoverError> {
        config.validate()?;
        let RecoveredLog {
            log_start_offset,
            log_end_offset,
            epochs,
            high_watermark,
        } = log;
        if high_watermark > log_end_offset {
            return Err(RecoverError::HighWatermarkBeyondLogEnd {
                high_watermark,
                log_end_offset,
            });
        }
        if let Some(entry) = epochs
            .entries()
            .iter()
            .find(|e| e.start_offset >= log_end_offset)
        {
            return Err(RecoverError::EpochBeyondLogEnd {
                leader_epoch: entry.leader_epoch,
                start_offset: entry.start_offset,
                log_end_offset,
            });
        }
        if log_start_offset < log_end_offset && epochs.latest_epoch().is_none() {
            return Err(RecoverError::MissingEpochHistory { log_end_offset });
        }
        Ok(Self {
            replica_id,
            config,
            log_end_offset,
            high_watermark,
            epochs,
            role: RoleState::Unassigned,
            outputs: VecDeque::new(),
            next_fetch_id: 0,
            acks: AckQueue::default(),
            now_ms: 0,
        })
    }

    // ---------------------------------------------------------------- role changes

    /// The controller made this replica the leader of `leader_epoch`, with the given
    /// committed ISR (version 0 of this epoch) and replica set. The epoch starts at the
    /// current log end offset. The high watermark is kept (it is committed) and moves
    /// on once every ISR member has fetched in this epoch.
    pub fn become_leader(
        &mut self,
        leader_epoch: u32,
        isr: &[u32],
        replicas: &[u32],
        now_ms: u64,
    ) -> Result<(), BecomeLeaderError> {
        // A leader's epoch must be newer than any in its log: it starts at our log end.
        self.check_newer_epoch(leader_epoch, false)
            .map_err(|current| BecomeLeaderError::StaleLeaderEpoch {
                current,
                received: leader_epoch,
            })?;
        check_assignment(self.replica_id, replicas, isr)?;
        self.epochs.assign(leader_epoch, self.log_end_offset);
        let followers = replicas
            .iter()
            .filter(|&&r| r != self.replica_id)
            .map(|&r| FollowerProgress::new(r, isr.contains(&r), now_ms))
            .collect();
        self.role = RoleState::Leader(LeaderState {
            leader_epoch,
            epoch_start_offset: self.log_end_offset,
            replicas: replicas.to_vec(),
            followers,
            isr: Isr {
                committed: in_replica_order(replicas, isr),
                version: 0,
                pending: None,
            },
        });
        self.maybe_advance_high_watermark();
        self.settle_acks(now_ms);
        Ok(())
    }

    /// The controller made `leader` the leader of `leader_epoch` and this replica its
    /// follower. Nothing is truncated here: the first fetch finds out whether this log
    /// diverges, and where (KIP-101/KIP-279), so records the leader also has are kept.
    pub fn become_follower(
        &mut self,
        leader: u32,
        leader_epoch: u32,
        now_ms: u64,
    ) -> Result<(), BecomeFollowerError> {
        if leader == self.replica_id {
            return Err(BecomeFollowerError::SelfAsLeader {
                replica: self.replica_id,
            });
        }
        // The log may already hold the leader's epoch (a restart within it).
        self.check_newer_epoch(leader_epoch, true)
            .map_err(|current| BecomeFollowerError::StaleLeaderEpoch {
                current,
                received: leader_epoch,
            })?;
        // A former leader's own epoch entry has no records if it wrote none; reporting
        // it as the last fetched epoch would only cost a round trip.
        let cut = self.epochs.truncate_from_end(self.log_end_offset);
        if cut < self.log_end_offset {
            self.truncate_log(cut);
        }
        self.role = RoleState::Follower(FollowerState {
            leader,
            leader_epoch,
            in_flight: None,
            next_fetch_ms: now_ms,
        });
        self.settle_acks(now_ms);
        Ok(())
    }

    /// Epochs only move forward: a role for an epoch not newer than the current one,
    /// or older than what the log holds (or as old, unless `log_epoch_allowed`), is a
    /// delayed or mistaken message.
    fn check_newer_epoch(&self, received: u32, log_epoch_allowed: bool) -> Result<(), u32> {
        if let Some(current) = self.leader_epoch()
            && received <= current
        {
            return Err(current);
        }
        match self.epochs.latest_epoch() {
            Some(latest) if received < latest || (received == latest && !log_epoch_allowed) => {
                Err(latest)
            }
            _ => Ok(()),
        }
    }

    // ---------------------------------------------------------------- leader side

    /// The leader's broker appended `batch` (stamped with the leader epoch) at the end
    /// of its log.
    pub fn handle_local_append(&mut self, batch: BatchRange) -> Result<(), LocalAppendError> {
        let RoleState::Leader(leader) = &self.role else {
            return Err(LocalAppendError::NotLeader);
        };
        if batch.leader_epoch != leader.leader_epoch {
            return Err(LocalAppendError::EpochMismatch {
                leader_epoch: leader.leader_epoch,
                batch_epoch: batch.leader_epoch,
            });
        }
        if batch.base_offset != self.log_end_offset {
            return Err(LocalAppendError::NotAtLogEnd {
                base_offset: batch.base_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        if batch.last_offset < batch.base_offset {
            return Err(LocalAppendError::EmptyRange {
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
            });
        }
        self.log_end_offset = batch.last_offset + 1;
        self.maybe_advance_high_watermark();
        self.settle_acks(self.now_ms);
        Ok(())
    }

    /// A follower's fetch reached this leader. Checks the follower's log against ours
    /// through its last fetched epoch; if they agree up to `fetch_offset`, records the
    /// follower's progress (which may move the high watermark or propose adding it to
    /// the ISR) and tells the broker what to send.
    pub fn handle_follower_fetch(
        &mut self,
        request: &FetchRequest,
        now_ms: u64,
    ) -> Result<FetchReply, FollowerFetchError> {
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(FollowerFetchError::NotLeader);
        };
        let current = leader.leader_epoch;
        if request.leader_epoch < current {
            return Err(FollowerFetchError::FencedLeaderEpoch {
                current,
                received: request.leader_epoch,
            });
        }
        if request.leader_epoch > current {
            return Err(FollowerFetchError::UnknownLeaderEpoch {
                current,
                received: request.leader_epoch,
            });
        }
        let Some(progress) = leader
            .followers
            .iter_mut()
            .find(|p| p.replica == request.replica_id)
        else {
            return Err(FollowerFetchError::UnknownReplica {
                replica: request.replica_id,
            });
        };
        match request.last_fetched_epoch {
            Some(last_fetched_epoch) => {
                let ours = self
                    .epochs
                    .end_offset_for_epoch(last_fetched_epoch, self.log_end_offset)
                    .expect("a leader's history holds at least its own epoch");
                // Our log does not hold the follower's last epoch, or holds less of it:
                // the follower must cut its log before it may fetch.
                if ours.leader_epoch < last_fetched_epoch || ours.end_offset < request.fetch_offset
                {
                    return Ok(FetchReply::Diverging {
                        diverging: ours,
                        high_watermark: self.high_watermark,
                    });
                }
            }
            None if request.fetch_offset > self.log_end_offset => {
                return Err(FollowerFetchError::OffsetOutOfRange {
                    fetch_offset: request.fetch_offset,
                    log_end_offset: self.log_end_offset,
                });
            }
            None => {}
        }
        progress.record_fetch(request.fetch_offset, self.log_end_offset, now_ms);
        self.maybe_expand_isr(request.replica_id, now_ms);
        self.maybe_advance_high_watermark();
        self.settle_acks(now_ms);
        Ok(FetchReply::Records {
            fetch_offset: request.fetch_offset,
            log_end_offset: self.log_end_offset,
            high_watermark: self.high_watermark,
        })
    }

    /// The controller's ISR for this partition: after a proposal of ours, or a change
    /// of its own. Applied if it is for our epoch and newer than what we hold; it
    /// settles any pending proposal either way.
    pub fn handle_isr_committed(
        &mut self,
        commit: &IsrCommit,
        now_ms: u64,
    ) -> Result<(), IsrUpdateError> {
        let replica_id = self.replica_id;
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(IsrUpdateError::NotLeader);
        };
        if commit.leader_epoch != leader.leader_epoch {
            return Err(IsrUpdateError::LeaderEpochMismatch {
                current: leader.leader_epoch,
                received: commit.leader_epoch,
            });
        }
        if commit.version <= leader.isr.version {
            return Err(IsrUpdateError::StaleVersion {
                current: leader.isr.version,
                received: commit.version,
            });
        }
        check_assignment(replica_id, &leader.replicas, &commit.isr)?;
        leader.isr = Isr {
            committed: in_replica_order(&leader.replicas, &commit.isr),
            version: commit.version,
            pending: None,
        };
        self.maybe_advance_high_watermark();
        self.maybe_shrink_isr(now_ms);
        self.settle_acks(now_ms);
        Ok(())
    }

    /// Whether a produce with acks=all may be appended at `now_ms`: this replica leads,
    /// the committed ISR has at least `min_insync_replicas` members, and so many of
    /// them are still live (caught up within `replica_lag_max_ms`, the leader always).
    ///
    /// The second test answers NOT_ENOUGH_REPLICAS as soon as the leader sees its
    /// followers gone, without waiting for the controller to commit the ISR shrink:
    /// when the controller quorum went down with the followers, that shrink never
    /// commits, and refusing a write is always safe.
    pub fn can_accept_acks_all(&self, now_ms: u64) -> Result<(), AcksAllError> {
        if !matches!(self.role, RoleState::Leader(_)) {
            return Err(AcksAllError::NotLeader);
        }
        // The live members are a subset of the committed ISR, so this covers both.
        let live = self.live_isr_size(now_ms);
        if live < self.config.min_insync_replicas {
            return Err(AcksAllError::NotEnoughReplicas {
                isr_size: live,
                min_insync_replicas: self.config.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// Holds `ticket` for an acks=all produce whose batch, appended in `leader_epoch`,
    /// ends at `last_offset`, until the ISR has it or `deadline_ms` passes; its outcome
    /// comes out of [`Self::poll_acks_all`] (at once, when it is decided already).
    /// Settled on every event that can decide it: the high watermark passing the batch
    /// (acknowledged; `NotEnoughReplicas` if the committed ISR is below
    /// `min_insync_replicas` by then), the epoch ending (`LeaderEpochEnded`), the live
    /// ISR falling below the minimum while it waits (`NotEnoughReplicas`), the deadline
    /// (`Timeout`).
    pub fn handle_acks_all(
        &mut self,
        ticket: u64,
        leader_epoch: u32,
        last_offset: u64,
        deadline_ms: u64,
        now_ms: u64,
    ) {
        self.acks
            .wait(ticket, leader_epoch, last_offset, deadline_ms);
        self.settle_acks(now_ms);
    }

    /// The next decided acks=all ticket and its outcome.
    pub fn poll_acks_all(&mut self) -> Option<(u64, Result<(), AcksAllError>)> {
        self.acks.poll()
    }

    /// Acks=all produces waiting now.
    pub fn acks_waiting(&self) -> usize {
        self.acks.len()
    }

    fn settle_acks(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if self.acks.len() == 0 {
            return;
        }
        let mut acks = std::mem::take(&mut self.acks);
        acks.settle(now_ms, |epoch, last| {
            self.acks_all_outcome(epoch, last, now_ms)
        });
        self.acks = acks;
    }

    /// Members of the committed ISR that are live at `now_ms`: the leader, and each
    /// follower that was caught up within `replica_lag_max_ms` (the test
    /// [`Self::maybe_shrink_isr`] applies before proposing to remove one).
    fn live_isr_size(&self, now_ms: u64) -> usize {
        let RoleState::Leader(leader) = &self.role else {
            return 0;
        };
        self.live_isr_members(leader, now_ms).count()
    }

    /// The committed ISR without the followers that have not caught up for longer
    /// than `replica_lag_max_ms`.
    fn live_isr_members<'a>(
        &'a self,
        leader: &'a LeaderState,
        now_ms: u64,
    ) -> impl Iterator<Item = u32> + 'a {
        let lag_max_ms = self.config.replica_lag_max_ms;
        leader.isr.committed.iter().copied().filter(move |&member| {
            member == self.replica_id
                || leader
                    .progress(member)
                    .is_some_and(|p| now_ms.saturating_sub(p.last_caught_up_ms) <= lag_max_ms)
        })
    }

    /// Whether an acks=all produce appended in `leader_epoch` and ending at
    /// `last_offset` can be answered at `now_ms`. It fails once the epoch is over (the
    /// records may have been replaced since); as in Kafka, if the ISR shrank below
    /// `min_insync_replicas` by the time the high watermark passed it; and, while it
    /// waits, once fewer than `min_insync_replicas` ISR members are live (Kafka's
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND: the batch may still commit later, and an
    /// idempotent retry finds it).
    pub fn acks_all_outcome(
        &self,
        leader_epoch: u32,
        last_offset: u64,
        now_ms: u64,
    ) -> Result<AcksAll, AcksAllError> {
        let RoleState::Leader(leader) = &self.role else {
            return Err(AcksAllError::LeaderEpochEnded { leader_epoch });
        };
        if leader.leader_epoch != leader_epoch {
            return Err(AcksAllError::LeaderEpochEnded { leader_epoch });
        }
        if self.high_watermark <= last_offset {
            let live = self.live_isr_size(now_ms);
            if live < self.config.min_insync_replicas {
                return Err(AcksAllError::NotEnoughReplicas {
                    isr_size: live,
                    min_insync_replicas: self.config.min_insync_replicas,
                });
            }
            return Ok(AcksAll::Waiting);
        }
        let isr_size = leader.isr.committed.len();
        if isr_size < self.config.min_insync_replicas {
            return Err(AcksAllError::NotEnoughReplicas {
                isr_size,
                min_insync_replicas: self.config.min_insync_replicas,
            });
        }
        Ok(AcksAll::Acknowledged)
    }

    fn maybe_advance_high_watermark(&mut self) {
        let RoleState::Leader(leader) = &self.role else {
            return;
        };
        let mut smallest = self.log_end_offset;
        for member in leader.isr.maximal() {
            if member == self.replica_id {
                continue;
            }
            match leader.progress(member).and_then(|p| p.log_end_offset) {
                Some(end) => smallest = smallest.min(end),
                // Not fetched in this epoch yet: where it stands is unknown.
                None => return,
            }
        }
        // Never backwards: what was below the high watermark stays committed.
        if smallest > self.high_watermark {
            self.set_high_watermark(smallest);
        }
    }

    /// Kafka's `maybeExpandIsr`, run when `replica` fetched: propose adding it once it
    /// reached the high watermark and the start of this epoch.
    fn maybe_expand_isr(&mut self, replica: u32, now_ms: u64) {
        let RoleState::Leader(leader) = &self.role else {
            return;
        };
        if leader.isr.pending.is_some() || leader.isr.committed.contains(&replica) {
            return;
        }
        let Some(end) = leader.progress(replica).and_then(|p| p.log_end_offset) else {
            return;
        };
        if end >= self.high_watermark && end >= leader.epoch_start_offset {
            let mut isr = leader.isr.committed.clone();
            isr.push(replica);
            let isr = in_replica_order(&leader.replicas, &isr);
            self.propose_isr(isr, now_ms);
        }
    }

    /// Kafka's ISR expiration: propose removing members that have not caught up to the
    /// log end for longer than `replica_lag_max_ms`.
    fn maybe_shrink_isr(&mut self, now_ms: u64) {
        let RoleState::Leader(leader) = &self.role else {
            return;
        };
        if leader.isr.pending.is_some() {
            return;
        }
        let isr: Vec<u32> = self.live_isr_members(leader, now_ms).collect();
        if isr.len() < leader.isr.committed.len() {
            self.propose_isr(isr, now_ms);
        }
    }

    fn propose_isr(&mut self, isr: Vec<u32>, now_ms: u64) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let proposal = IsrProposal {
            leader_epoch: leader.leader_epoch,
            base_version: leader.isr.version,
            isr: isr.clone(),
        };
        leader.isr.pending = Some(PendingProposal {
            isr,
            sent_at_ms: now_ms,
        });
        self.push_output(Output::ProposeIsr(proposal));
    }

    // ---------------------------------------------------------------- follower side

    /// The next fetch to send, if one is due: a follower keeps exactly one in flight,
    /// gives it up after `fetch_timeout_ms`, and waits `fetch_backoff_ms` after a
    /// failure. None while log operations from the last response wait in the outputs.
    pub fn poll_fetch(&mut self, now_ms: u64) -> Option<FetchRequest> {
        self.expire_fetch(now_ms);
        if self
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Append(_) | Output::Truncate { .. }))
        {
            return None;
        }
        let RoleState::Follower(follower) = &mut self.role else {
            return None;
        };
        if follower.in_flight.is_some() || now_ms < follower.next_fetch_ms {
            return None;
        }
        let request = FetchRequest {
            replica_id: self.replica_id,
            leader: follower.leader,
            leader_epoch: follower.leader_epoch,
            fetch_offset: self.log_end_offset,
            last_fetched_epoch: self.epochs.latest_epoch(),
            fetch_id: self.next_fetch_id,
        };
        self.next_fetch_id += 1;
        follower.in_flight = Some(InFlightFetch {
            request,
            deadline_ms: now_ms.saturating_add(self.config.fetch_timeout_ms),
        });
        Some(request)
    }

    /// The leader answered `request` (the one [`Self::poll_fetch`] gave). Records are
    /// checked whole before any is taken: they must continue the log without a gap,
    /// with epochs that never go backwards nor past the leader's. A divergence is
    /// resolved as Kafka's follower does: cut at the end of the last epoch both logs
    /// share (`min(our end, leader's end)` when we know the leader's epoch, else the
    /// end of our largest epoch below it and ask again); never blindly at the high
    /// watermark.
    pub fn handle_fetch_response(
        &mut self,
        request: &FetchRequest,
        response: FetchResponse<'_>,
        now_ms: u64,
    ) -> Result<(), FetchResponseError> {
        let leader_epoch = self.take_in_flight(request)?;
        let result = match response {
            FetchResponse::Records {
                high_watermark,
                batches,
            } => self.append_fetched(leader_epoch, batches, high_watermark),
            FetchResponse::Diverging {
                diverging,
                high_watermark,
            } => self.truncate_diverging(leader_epoch, diverging, high_watermark),
        };
        if let RoleState::Follower(follower) = &mut self.role {
            follower.next_fetch_ms = match result {
                Ok(()) => now_ms,
                Err(_) => now_ms.saturating_add(self.config.fetch_backoff_ms),
            };
        }
        result
    }

    /// `request` failed (the leader refused it, or the connection broke): back off and
    /// fetch again.
    pub fn handle_fetch_error(
        &mut self,
        request: &FetchRequest,
        now_ms: u64,
    ) -> Result<(), FetchResponseError> {
        self.take_in_flight(request)?;
        if let RoleState::Follower(follower) = &mut self.role {
            follower.next_fetch_ms = now_ms.saturating_add(self.config.fetch_backoff_ms);
        }
        Ok(())
    }

    /// The broker could not store the fetched batch starting at `base_offset` (its
    /// disk is full, say): the log still ends there. The appends queued after it are
    /// dropped, the epochs they brought forgotten, the high watermark capped at what is
    /// stored, and the next fetch, after the usual backoff, asks for `base_offset`
    /// again: replication resumes by itself once appends succeed. Meanwhile this
    /// replica falls behind and the leader's lag rule takes it out of the ISR, as for
    /// any slow follower.
    pub fn handle_append_failed(&mut self, base_offset: u64, now_ms: u64) {
        if base_offset >= self.log_end_offset {
            return;
        }
        self.outputs
            .retain(|o| !matches!(o, Output::Append(batch) if batch.base_offset >= base_offset));
        self.log_end_offset = base_offset;
        let cut = self.epochs.truncate_from_end(base_offset);
        if cut < base_offset {
            self.truncate_log(cut);
        } else if self.high_watermark > base_offset {
            self.set_high_watermark(base_offset);
        }
        if let RoleState::Follower(follower) = &mut self.role {
            follower.next_fetch_ms = now_ms.saturating_add(self.config.fetch_backoff_ms);
        }
    }

    /// Ends the fetch in flight if `request` is it, returning the leader epoch.
    fn take_in_flight(&mut self, request: &FetchRequest) -> Result<u32, FetchResponseError> {
        let RoleState::Follower(follower) = &mut self.role else {
            return Err(FetchResponseError::Stale);
        };
        match &follower.in_flight {
            Some(in_flight) if in_flight.request == *request => {
                follower.in_flight = None;
                Ok(follower.leader_epoch)
            }
            _ => Err(FetchResponseError::Stale),
        }
    }

    fn append_fetched(
        &mut self,
        leader_epoch: u32,
        batches: &[BatchRange],
        leader_high_watermark: u64,
    ) -> Result<(), FetchResponseError> {
        let batches = &batches[..batches.len().min(FETCH_RESPONSE_BATCHES_MAX)];
        let mut expected = self.log_end_offset;
        let mut latest = self.epochs.latest_epoch();
        for batch in batches {
            if batch.base_offset != expected {
                return Err(FetchResponseError::NotContiguous {
                    expected,
                    base_offset: batch.base_offset,
                });
            }
            if batch.last_offset < batch.base_offset {
                return Err(FetchResponseError::EmptyRange {
                    base_offset: batch.base_offset,
                    last_offset: batch.last_offset,
                });
            }
            if let Some(latest) = latest.filter(|&l| batch.leader_epoch < l) {
                return Err(FetchResponseError::EpochRegression {
                    latest,
                    received: batch.leader_epoch,
                });
            }
            if batch.leader_epoch > leader_epoch {
                return Err(FetchResponseError::EpochAheadOfLeader {
                    leader_epoch,
                    received: batch.leader_epoch,
                });
            }
            expected = batch.last_offset + 1;
            latest = Some(batch.leader_epoch);
        }
        for &batch in batches {
            self.epochs.assign(batch.leader_epoch, batch.base_offset);
            self.log_end_offset = batch.last_offset + 1;
            self.push_output(Output::Append(batch));
        }
        self.learn_high_watermark(leader_high_watermark);
        Ok(())
    }

    fn truncate_diverging(
        &mut self,
        leader_epoch: u32,
        diverging: EpochEndOffset,
        leader_high_watermark: u64,
    ) -> Result<(), FetchResponseError> {
        if diverging.leader_epoch > leader_epoch {
            return Err(FetchResponseError::EpochAheadOfLeader {
                leader_epoch,
                received: diverging.leader_epoch,
            });
        }
        let ours = self
            .epochs
            .end_offset_for_epoch(diverging.leader_epoch, self.log_end_offset);
        let to = match ours {
            // Both logs hold this epoch: they agree up to the shorter of the two.
            Some(ours) if ours.leader_epoch == diverging.leader_epoch => {
                ours.end_offset.min(diverging.end_offset)
            }
            // We never saw the leader's epoch: everything after our largest epoch below
            // it is suspect; the next fetch reports that epoch and narrows it down.
            Some(ours) => ours.end_offset,
            None => diverging.end_offset,
        }
        .min(self.log_end_offset);
        if to >= self.log_end_offset {
            return Err(FetchResponseError::NoDivergence {
                leader_epoch: diverging.leader_epoch,
                end_offset: diverging.end_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let cut = self.epochs.truncate_from_end(to);
        self.truncate_log(cut);
        self.learn_high_watermark(leader_high_watermark);
        Ok(())
    }

    /// Cuts the log at `to` (the epoch history is already cut). The high watermark
    /// follows only if the cut went below it, which happens only if the controller
    /// elected a leader without every committed record (an unclean election).
    fn truncate_log(&mut self, to: u64) {
        self.log_end_offset = to;
        self.push_output(Output::Truncate { to });
        if self.high_watermark > to {
            self.set_high_watermark(to);
        }
    }

    /// A follower's high watermark is the leader's, capped by its own log end (it
    /// cannot vouch for records it lacks). It never goes back: whatever was below it
    /// is committed and every future leader holds it.
    fn learn_high_watermark(&mut self, leader_high_watermark: u64) {
        let candidate = leader_high_watermark.min(self.log_end_offset);
        if candidate > self.high_watermark {
            self.set_high_watermark(candidate);
        }
    }

    fn expire_fetch(&mut self, now_ms: u64) {
        let backoff_ms = self.config.fetch_backoff_ms;
        if let RoleState::Follower(follower) = &mut self.role
            && follower
                .in_flight
                .as_ref()
                .is_some_and(|f| now_ms >= f.deadline_ms)
        {
            follower.in_flight = None;
            follower.next_fetch_ms = now_ms.saturating_add(backoff_ms);
        }
    }

    // ---------------------------------------------------------------- timers, outputs

    /// Runs the timers due at `now_ms`: a follower gives up a fetch past its deadline;
    /// a leader re-sends an unanswered ISR proposal and proposes removing followers
    /// that lag.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.expire_fetch(now_ms);
        self.settle_acks(now_ms);
        let retry_ms = self.config.isr_proposal_retry_ms;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        match &mut leader.isr.pending {
            Some(pending) if now_ms.saturating_sub(pending.sent_at_ms) >= retry_ms => {
                pending.sent_at_ms = now_ms;
                let proposal = IsrProposal {
                    leader_epoch: leader.leader_epoch,
                    base_version: leader.isr.version,
                    isr: pending.isr.clone(),
                };
                self.push_output(Output::ProposeIsr(proposal));
            }
            Some(_) => {}
            None => self.maybe_shrink_isr(now_ms),
        }
    }

    /// The earliest time at which [`Self::handle_timeout`] or [`Self::poll_fetch`] has
    /// something to do; `None` when only an incoming event can change anything.
    pub fn poll_timeout(&self) -> Option<u64> {
        let role = self.role_timeout();
        match (role, self.acks.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest timer of the role (fetch deadlines, ISR proposals and lag).
    fn role_timeout(&self) -> Option<u64> {
        match &self.role {
            RoleState::Unassigned => None,
            RoleState::Follower(follower) => Some(
                follower
                    .in_flight
                    .as_ref()
                    .map_or(follower.next_fetch_ms, |f| f.deadline_ms),
            ),
            RoleState::Leader(leader) => match &leader.isr.pending {
                Some(pending) => Some(
                    pending
                        .sent_at_ms
                        .saturating_add(self.config.isr_proposal_retry_ms),
                ),
                None => leader
                    .isr
                    .committed
                    .iter()
                    .filter_map(|&member| leader.progress(member))
                    .map(|p| {
                        p.last_caught_up_ms
                            .saturating_add(self.config.replica_lag_max_ms)
                            .saturating_add(1)
                    })
                    .min(),
            },
        }
    }

    /// The next piece of work for the broker, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn push_output(&mut self, output: Output) {
        // Only the newest proposal and high watermark matter. The high watermark is
        // kept last, so the broker never publishes it before the records under it.
        let high_watermark_last = matches!(self.outputs.back(), Some(Output::HighWatermark(_)));
        match output {
            Output::HighWatermark(_) => {
                if high_watermark_last {
                    self.outputs.pop_back();
                }
                self.outputs.push_back(output);
            }
            Output::ProposeIsr(_) | Output::Append(_) | Output::Truncate { .. } => {
                if matches!(output, Output::ProposeIsr(_)) {
                    self.outputs.retain(|o| !matches!(o, Output::ProposeIsr(_)));
                }
                let at = self.outputs.len() - usize::from(high_watermark_last);
                self.outputs.insert(at, output);
            }
        }
        debug_assert!(self.outputs.len() <= OUTPUTS_MAX, "outputs not drained");
    }

    fn set_high_watermark(&mut self, high_watermark: u64) {
        debug_assert!(high_watermark <= self.log_end_offset);
        self.high_watermark = high_watermark;
        self.push_output(Output::HighWatermark(high_watermark));
    }

    // ---------------------------------------------------------------- queries

    /// This replica's broker id.
    pub fn replica_id(&self) -> u32 {
        self.replica_id
    }

    /// The role the controller last assigned.
    pub fn role(&self) -> Role {
        match &self.role {
            RoleState::Unassigned => Role::Unassigned,
            RoleState::Leader(l) => Role::Leader {
                leader_epoch: l.leader_epoch,
            },
            RoleState::Follower(f) => Role::Follower {
                leader: f.leader,
                leader_epoch: f.leader_epoch,
            },
        }
    }

    /// The epoch of the current role, if any.
    pub fn leader_epoch(&self) -> Option<u32> {
        match &self.role {
            RoleState::Unassigned => None,
            RoleState::Leader(l) => Some(l.leader_epoch),
            RoleState::Follower(f) => Some(f.leader_epoch),
        }
    }

    /// The offset the next record gets, counting every append and truncation emitted
    /// so far.
    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }

    /// Consumers read only below this offset.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// The committed ISR, for a leader.
    pub fn isr(&self) -> Option<&[u32]> {
        match &self.role {
            RoleState::Leader(l) => Some(&l.isr.committed),
            _ => None,
        }
    }

    /// The leader-epoch history of the log.
    pub fn epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }
}

/// The controller's replica set and ISR must be small, without duplicates, hold this
/// replica, and the ISR must be a subset that holds the leader (this replica, when
/// called for a leader).
fn check_assignment(leader: u32, replicas: &[u32], isr: &[u32]) -> Result<(), AssignmentError> {
    if replicas.len() > REPLICAS_MAX {
        return Err(AssignmentError::TooManyReplicas {
            count: replicas.len(),
            max: REPLICAS_MAX,
        });
    }
    for list in [replicas, isr] {
        for (i, r) in list.iter().enumerate() {
            if list[..i].contains(r) {
                return Err(AssignmentError::DuplicateReplica { replica: *r });
            }
        }
    }
    if !replicas.contains(&leader) {
        return Err(AssignmentError::SelfNotAReplica { replica: leader });
    }
    if !isr.contains(&leader) {
        return Err(AssignmentError::LeaderNotInIsr { leader });
    }
    if let Some(&stranger) = isr.iter().find(|r| !replicas.contains(r)) {
        return Err(AssignmentError::IsrMemberNotAReplica { replica: stranger });
    }
    Ok(())
}

/// `members` sorted as they appear in `replicas`, so equal sets compare equal.
fn in_replica_order(replicas: &[u32], members: &[u32]) -> Vec<u32> {
    replicas
        .iter()
        .copied()
        .filter(|r| members.contains(r))
        .collect()
}

#[cfg(test)]
mod tests;
