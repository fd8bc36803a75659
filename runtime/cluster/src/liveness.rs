//! Which brokers the controller leader has heard from lately: the failure detector
//! behind fencing.
//!
//! Kept on the leader, in memory, out of the Raft log (as KRaft's
//! `BrokerHeartbeatManager`): a heartbeat that changes nothing writes nothing, and
//! silence is measured on the leader's own monotonic clock, so brokers' wall clocks
//! (which differ across hosts, and jump) play no part in deciding who is dead.
//!
//! Sans-IO: every method takes the instant it happens at, so tests drive it with
//! instants of their own. A new term starts every session afresh: a controller that
//! has just become leader knows nothing of who spoke to its predecessor, so it gives
//! every broker one whole session before it may fence it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::metadata::{BrokerId, MetadataState};

/// Brokers tracked at most; a heartbeat from a broker beyond it is answered (the log
/// decides who is registered) but not remembered, which errs toward fencing it.
pub const TRACKED_BROKERS_MAX: usize = 100_000;

/// The leader's record of its brokers' sessions.
#[derive(Debug)]
pub struct Liveness {
    /// The term these sessions belong to, and when this controller first acted as
    /// its leader.
    term: Option<(u64, Instant)>,
    /// Each broker's registration epoch and when it was last heard from in it.
    sessions: HashMap<BrokerId, Session>,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    broker_epoch: u64,
    last_contact: Instant,
}

impl Liveness {
    /// A record that knows no term yet.
    pub fn new() -> Self {
        Self {
            term: None,
            sessions: HashMap::new(),
        }
    }

    /// Starts afresh at `now` if `term` is not the one the sessions belong to.
    fn enter(&mut self, term: u64, now: Instant) {
        if self.term.is_none_or(|(known, _)| known != term) {
            self.term = Some((term, now));
            self.sessions.clear();
        }
    }

    /// Broker `broker_id`, registered as `broker_epoch`, was heard from at `now` by
    /// the leader of `term`. A heartbeat of an older registration than the one known
    /// (delayed in the network) is ignored: epochs only grow.
    pub fn heard(&mut self, term: u64, broker_id: BrokerId, broker_epoch: u64, now: Instant) {
        self.enter(term, now);
        if self
            .sessions
            .get(&broker_id)
            .is_some_and(|known| known.broker_epoch > broker_epoch)
        {
            return;
        }
        if self.sessions.len() >= TRACKED_BROKERS_MAX && !self.sessions.contains_key(&broker_id) {
            return;
        }
        self.sessions.insert(
            broker_id,
            Session {
                broker_epoch,
                last_contact: now,
            },
        );
    }

    /// The unfenced brokers of `metadata` not heard from for longer than
    /// `session_timeout` at `now`, as the leader of `term` sees it. A broker first
    /// seen here (registered or re-registered since the last call, or new to this
    /// leader) starts its session now rather than being fenced for a silence this
    /// leader did not witness.
    pub fn silent(
        &mut self,
        term: u64,
        metadata: &MetadataState,
        now: Instant,
        session_timeout: Duration,
    ) -> Vec<BrokerId> {
        self.enter(term, now);
        let mut silent = Vec::new();
        for (&broker_id, record) in metadata.brokers() {
            if record.fenced {
                continue;
            }
            let session = match self.sessions.get(&broker_id) {
                Some(session) if session.broker_epoch == record.epoch => *session,
                _ => {
                    self.heard(term, broker_id, record.epoch, now);
                    continue;
                }
            };
            if now.saturating_duration_since(session.last_contact) > session_timeout {
                silent.push(broker_id);
            }
        }
        // Brokers the metadata no longer holds (or holds fenced) need no session.
        self.sessions
            .retain(|id, _| metadata.broker(*id).is_some_and(|record| !record.fenced));
        silent
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{MetadataCommand, MetadataResponse};

    const SESSION: Duration = Duration::from_secs(10);

    fn registered(brokers: &[BrokerId]) -> MetadataState {
        let mut state = MetadataState::default();
        for &broker_id in brokers {
            let command = MetadataCommand::RegisterBroker {
                broker_id,
                incarnation: u64::from(broker_id),
                address: format!("127.0.0.1:{}", 9000 + broker_id),
                now_ms: 0,
            };
            match state.apply(&command) {
                Ok(MetadataResponse::BrokerRegistered { .. }) => {}
                other => panic!("registration refused: {other:?}"),
            }
        }
        state
    }

    fn epoch(state: &MetadataState, broker_id: BrokerId) -> u64 {
        state
            .broker(broker_id)
            .map(|b| b.epoch)
            .expect("registered")
    }

    #[test]
    fn a_broker_heard_within_its_session_is_not_silent() {
        let state = registered(&[1, 2]);
        let start = Instant::now();
        let mut liveness = Liveness::new();
        assert!(liveness.silent(1, &state, start, SESSION).is_empty());
        for second in 1..=30 {
            let now = start + Duration::from_secs(second);
            liveness.heard(1, 1, epoch(&state, 1), now);
            liveness.heard(1, 2, epoch(&state, 2), now);
            assert!(liveness.silent(1, &state, now, SESSION).is_empty());
        }
    }

    #[test]
    fn a_broker_silent_for_longer_than_its_session_is_named() {
        let state = registered(&[1, 2]);
        let start = Instant::now();
        let mut liveness = Liveness::new();
        assert!(liveness.silent(1, &state, start, SESSION).is_empty());
        let later = start + SESSION + Duration::from_millis(1);
        liveness.heard(1, 1, epoch(&state, 1), later);
        assert_eq!(liveness.silent(1, &state, later, SESSION), vec![2]);
        // Exactly one session is not yet longer than it.
        let mut fresh = Liveness::new();
        assert!(fresh.silent(1, &state, start, SESSION).is_empty());
        assert!(fresh.silent(1, &state, start + SESSION, SESSION).is_empty());
    }

    #[test]
    fn a_new_term_gives_every_broker_a_whole_session() {
        let state = registered(&[1, 2]);
        let start = Instant::now();
        let mut liveness = Liveness::new();
        assert!(liveness.silent(1, &state, start, SESSION).is_empty());
        // Leading again in term 2 long after: what term 1 heard (nothing) is not
        // held against anyone.
        let elected = start + SESSION * 5;
        assert!(liveness.silent(2, &state, elected, SESSION).is_empty());
        let before_session_end = elected + SESSION;
        assert!(
            liveness
                .silent(2, &state, before_session_end, SESSION)
                .is_empty()
        );
        let after = elected + SESSION + Duration::from_millis(1);
        assert_eq!(liveness.silent(2, &state, after, SESSION), vec![1, 2]);
    }

    #[test]
    fn a_heartbeat_of_an_older_registration_does_not_keep_the_new_one_alive() {
        let mut state = registered(&[1]);
        let start = Instant::now();
        let mut liveness = Liveness::new();
        let old_epoch = epoch(&state, 1);
        liveness.heard(1, 1, old_epoch, start);
        // The broker restarts and registers again: a new epoch.
        let again = MetadataCommand::RegisterBroker {
            broker_id: 1,
            incarnation: 77,
            address: "127.0.0.1:9001".to_owned(),
            now_ms: 0,
        };
        assert!(matches!(
            state.apply(&again),
            Ok(MetadataResponse::BrokerRegistered { .. })
        ));
        assert_ne!(epoch(&state, 1), old_epoch);
        // Its new session starts when the leader first sees the new registration.
        let seen = start + SESSION * 2;
        assert!(liveness.silent(1, &state, seen, SESSION).is_empty());
        // A delayed heartbeat of the old epoch does not count for the new one.
        liveness.heard(1, 1, old_epoch, seen + SESSION);
        let after = seen + SESSION + Duration::from_millis(1);
        assert_eq!(
            liveness.silent(1, &state, after, SESSION),
            vec![1],
            "a heartbeat of the old registration kept the new one alive"
        );
    }

    #[test]
    fn fenced_brokers_are_never_named() {
        let mut state = registered(&[1, 2]);
        assert!(matches!(
            state.apply(&MetadataCommand::FenceBroker { broker_id: 2 }),
            Ok(MetadataResponse::BrokerFenced { .. })
        ));
        let start = Instant::now();
        let mut liveness = Liveness::new();
        assert!(liveness.silent(1, &state, start, SESSION).is_empty());
        let later = start + SESSION * 3;
        assert_eq!(liveness.silent(1, &state, later, SESSION), vec![1]);
    }
}
