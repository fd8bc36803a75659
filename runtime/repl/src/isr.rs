//! The leader's in-sync replica set: what the controller committed, what the leader
//! proposed and is waiting on, and how far each follower has come.
//!
//! The rules, and why:
//! - The high watermark is the smallest log end offset over the *maximal* ISR: the
//!   committed ISR together with the members of a pending proposal. Until the
//!   controller answers, the leader cannot know which of the two the controller holds,
//!   and the controller may elect any member of the set it holds. A member being
//!   removed still counts until the removal is committed; a member being added counts
//!   from the moment it is proposed, so that on commit it already holds everything
//!   below the high watermark. (Counting it only after commit would let the high
//!   watermark pass records it lacks while the controller already lists it as
//!   electable.)
//! - acks=all's `min_insync_replicas` is checked against the committed ISR, the set the
//!   controller elects from.
//! - A follower leaves the ISR when it has not caught up to the leader's log end offset
//!   for `replica_lag_max_ms`; it joins when its log end offset reaches both the high
//!   watermark and the start of the leader's epoch (it has fetched in this epoch, so
//!   anything it had that diverged is gone).

/// A leader's request to the controller to change the ISR (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// The proposing leader's epoch: the controller refuses other epochs.
    pub leader_epoch: u32,
    /// The version of the committed ISR this proposal replaces: the controller refuses
    /// a proposal based on any other version.
    pub base_version: u32,
    /// The proposed ISR, leader included.
    pub isr: Vec<u32>,
}

/// The ISR the controller holds, sent to the leader after every change and as the
/// answer to every proposal.
///
/// Versions count ISR changes within one leader epoch, starting at 0 with
/// [`crate::Replica::become_leader`]. The controller's contract:
/// - it applies a proposal only if `leader_epoch` and `base_version` match its own, and
///   then commits it as `base_version + 1`;
/// - a proposal it refuses although both match (say, it adds a fenced broker) is
///   answered by committing the unchanged ISR as a new version, so that no delayed
///   copy of the refused proposal can be applied later, behind the leader's back;
/// - it may change the ISR on its own (fencing a broker), as a new version.
///
/// The leader counts a proposal's members toward the high watermark until it sees a
/// version newer than the proposal's base: only then does it know what was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrCommit {
    pub leader_epoch: u32,
    pub version: u32,
    pub isr: Vec<u32>,
}

/// What the leader knows of one follower, learned from its fetches in this epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FollowerProgress {
    pub(crate) replica: u32,
    /// The follower's log end offset (its last fetch offset); `None` until it fetched
    /// in this epoch. While a member of the maximal ISR has none, the high watermark
    /// stays where it is.
    pub(crate) log_end_offset: Option<u64>,
    /// The last time the follower was known to have reached the leader's log end.
    pub(crate) last_caught_up_ms: u64,
    last_fetch_leader_log_end_offset: Option<u64>,
    last_fetch_ms: u64,
}

impl FollowerProgress {
    /// A new leader trusts its ISR members to be caught up as of now and gives the
    /// others no credit (Kafka's `resetReplicaState`).
    pub(crate) fn new(replica: u32, in_isr: bool, now_ms: u64) -> Self {
        Self {
            replica,
            log_end_offset: None,
            last_caught_up_ms: if in_isr { now_ms } else { 0 },
            last_fetch_leader_log_end_offset: None,
            last_fetch_ms: 0,
        }
    }

    /// Records a fetch from `fetch_offset` while the leader's log ended at
    /// `leader_log_end_offset`. Reaching the leader's end now counts as caught up now;
    /// reaching the end the leader had at the previous fetch counts as caught up at that
    /// previous fetch (Kafka's rule: a follower that keeps pace with a busy leader never
    /// quite reaches its end, yet is in sync).
    pub(crate) fn record_fetch(
        &mut self,
        fetch_offset: u64,
        leader_log_end_offset: u64,
        now_ms: u64,
    ) {
        if fetch_offset >= leader_log_end_offset {
            self.last_caught_up_ms = self.last_caught_up_ms.max(now_ms);
        } else if self
            .last_fetch_leader_log_end_offset
            .is_some_and(|previous_end| fetch_offset >= previous_end)
        {
            self.last_caught_up_ms = self.last_caught_up_ms.max(self.last_fetch_ms);
        }
        self.log_end_offset = Some(fetch_offset);
        self.last_fetch_leader_log_end_offset = Some(leader_log_end_offset);
        self.last_fetch_ms = now_ms;
    }
}

/// A proposal sent to the controller and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingProposal {
    pub(crate) isr: Vec<u32>,
    pub(crate) sent_at_ms: u64,
}

/// The leader's view of the ISR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Isr {
    pub(crate) committed: Vec<u32>,
    pub(crate) version: u32,
    pub(crate) pending: Option<PendingProposal>,
}

impl Isr {
    /// The committed ISR and the members of the pending proposal: the set the high
    /// watermark must wait for.
    pub(crate) fn maximal(&self) -> impl Iterator<Item = u32> + '_ {
        let proposed = self
            .pending
            .iter()
            .flat_map(|p| p.isr.iter())
            .filter(|r| !self.committed.contains(r));
        self.committed.iter().chain(proposed).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaching_the_leader_end_is_caught_up_now() {
        let mut p = FollowerProgress::new(2, false, 0);
        p.record_fetch(10, 10, 500);
        assert_eq!(p.last_caught_up_ms, 500);
        assert_eq!(p.log_end_offset, Some(10));
    }

    #[test]
    fn keeping_pace_counts_as_caught_up_at_the_previous_fetch() {
        let mut p = FollowerProgress::new(2, true, 100);
        p.record_fetch(5, 10, 200); // behind, first fetch: no credit
        assert_eq!(p.last_caught_up_ms, 100);
        p.record_fetch(10, 14, 300); // reached where the leader was at 200
        assert_eq!(p.last_caught_up_ms, 200);
        p.record_fetch(12, 20, 400); // did not reach 14
        assert_eq!(p.last_caught_up_ms, 200);
    }

    #[test]
    fn maximal_isr_is_the_union_of_committed_and_proposed() {
        let mut isr = Isr {
            committed: vec![1, 2],
            version: 0,
            pending: None,
        };
        assert_eq!(isr.maximal().collect::<Vec<_>>(), vec![1, 2]);
        isr.pending = Some(PendingProposal {
            isr: vec![1, 3],
            sent_at_ms: 0,
        });
        assert_eq!(isr.maximal().collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
