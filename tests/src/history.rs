//! A history of what clients did and saw during a fault test, and a checker that reads
//! it whole, after the network healed, against the partition's final contents.
//!
//! Recorded: every produce attempt (a value with a unique id), every acknowledgement
//! (acks=all, with the offset the leader gave), every failed attempt, every record a
//! consumer was handed, and every broker's view of the partition's leader and epoch
//! over time. The checker asserts:
//! - every acknowledged record is in the final log exactly once, at the offset its
//!   acknowledgement named, and acknowledged records keep the order they were sent in;
//! - no id is stored twice, and nothing is stored that was never sent;
//! - no two brokers were named leader of the partition in the same epoch, and the
//!   epochs stamped on the stored batches never go down along the log;
//! - a record a consumer saw never disappears (same offset, same id in the final log).
//!
//! It does not measure time: the suite asserts that the cluster serves again before a
//! deadline, and prints how long that took.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One thing a client did or saw, with when (since the history began).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A produce of the record with this id was sent (once: ids are never retried).
    Attempt { id: u64, at: Duration },
    /// The record with this id was acknowledged (acks=all) at `offset`.
    Ack { id: u64, offset: u64, at: Duration },
    /// The produce of this id failed; it may or may not be stored.
    Failed {
        id: u64,
        at: Duration,
        error: String,
    },
    /// A consumer was handed the record with this id at `offset`.
    Seen { id: u64, offset: u64, at: Duration },
    /// Broker `observer` named `leader` the partition's leader in `epoch`.
    Leadership {
        observer: u32,
        leader: u32,
        epoch: u32,
        at: Duration,
    },
}

/// A record of the partition's final contents, read after the network healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub id: u64,
    /// The leader epoch stamped on the batch that holds it.
    pub epoch: u32,
}

/// Events in the order they were recorded. Shared by the test's client tasks.
#[derive(Debug)]
pub struct History {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

/// Most events one history keeps: a bound on memory for a run gone wrong. A run that
/// reaches it fails the check rather than checking part of what happened.
pub const HISTORY_EVENTS_MAX: usize = 2_000_000;

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Time since the history began.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn push(&self, event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() <= HISTORY_EVENTS_MAX {
            events.push(event);
        }
    }

    pub fn attempt(&self, id: u64) {
        self.push(Event::Attempt { id, at: self.now() });
    }

    pub fn ack(&self, id: u64, offset: u64) {
        self.push(Event::Ack {
            id,
            offset,
            at: self.now(),
        });
    }

    pub fn failed(&self, id: u64, error: String) {
        self.push(Event::Failed {
            id,
            at: self.now(),
            error,
        });
    }

    pub fn seen(&self, id: u64, offset: u64) {
        self.push(Event::Seen {
            id,
            offset,
            at: self.now(),
        });
    }

    pub fn leadership(&self, observer: u32, leader: u32, epoch: u32) {
        self.push(Event::Leadership {
            observer,
            leader,
            epoch,
            at: self.now(),
        });
    }

    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// When each acknowledgement came, in order.
    pub fn ack_times(&self) -> Vec<Duration> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::Ack { at, .. } => Some(*at),
                _ => None,
            })
            .collect()
    }

    /// The longest time between two acknowledgements (or from `from` to the first one
    /// after it) within `from..to`: how long producers stalled.
    pub fn longest_ack_gap(&self, from: Duration, to: Duration) -> Duration {
        let mut last = from;
        let mut longest = Duration::ZERO;
        for at in self.ack_times() {
            if at < from {
                continue;
            }
            let at = at.min(to);
            longest = longest.max(at.saturating_sub(last));
            last = at;
            if at >= to {
                return longest;
            }
        }
        longest.max(to.saturating_sub(last))
    }

    /// Acknowledgements that came within `from..to`.
    pub fn acks_between(&self, from: Duration, to: Duration) -> usize {
        self.ack_times()
            .iter()
            .filter(|at| **at >= from && **at < to)
            .count()
    }
}

/// What the checker counted, for the test's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub attempts: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub stored: usize,
    pub seen: usize,
    pub epochs: usize,
}

/// Checks `events` against the partition's final contents. Returns what it counted, or
/// every violation found (each a sentence naming the record or epoch).
pub fn check(events: &[Event], stored: &[StoredRecord]) -> Result<Summary, Vec<String>> {
    let mut violations = Vec::new();
    let mut summary = Summary::default();
    if events.len() > HISTORY_EVENTS_MAX {
        violations.push(format!(
            "the history reached its bound of {HISTORY_EVENTS_MAX} events: not all was recorded"
        ));
    }

    let mut attempted = BTreeSet::new();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let mut leaders: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for event in events {
        match event {
            Event::Attempt { id, .. } => {
                if !attempted.insert(*id) {
                    violations.push(format!("id {id} was sent twice (the history is wrong)"));
                }
            }
            Event::Ack { id, offset, .. } => acked.push((*id, *offset)),
            Event::Failed { .. } => summary.failed += 1,
            Event::Seen { id, offset, .. } => {
                if let Some(before) = seen.insert(*offset, *id)
                    && before != *id
                {
                    violations.push(format!(
                        "consumers saw offset {offset} hold id {before} and later id {id}"
                    ));
                }
            }
            Event::Leadership { leader, epoch, .. } => {
                leaders.entry(*epoch).or_default().insert(*leader);
            }
        }
    }
    summary.attempts = attempted.len();
    summary.acknowledged = acked.len();
    summary.stored = stored.len();
    summary.seen = seen.len();
    summary.epochs = leaders.len();

    // The final log: where each id sits, and no id twice.
    let mut at_offset: HashMap<u64, u64> = HashMap::new();
    let mut offsets_of: HashMap<u64, Vec<u64>> = HashMap::new();
    for record in stored {
        at_offset.insert(record.offset, record.id);
        offsets_of.entry(record.id).or_default().push(record.offset);
        if !attempted.contains(&record.id) {
            violations.push(format!(
                "id {} is stored at offset {} but was never sent",
                record.id, record.offset
            ));
        }
    }
    for (id, offsets) in &offsets_of {
        if offsets.len() > 1 {
            violations.push(format!(
                "id {id} is stored {} times: {offsets:?}",
                offsets.len()
            ));
        }
    }
    for window in stored.windows(2) {
        if window[1].offset <= window[0].offset {
            violations.push(format!(
                "the final read went from offset {} back to {}",
                window[0].offset, window[1].offset
            ));
        }
        if window[1].epoch < window[0].epoch {
            violations.push(format!(
                "offset {} was written in epoch {} after offset {} in epoch {}",
                window[1].offset, window[1].epoch, window[0].offset, window[0].epoch
            ));
        }
    }

    // Every acknowledgement: stored once, where it said, in the order sent.
    for (id, offset) in &acked {
        match offsets_of.get(id).map(Vec::as_slice) {
            None | Some([]) => violations.push(format!(
                "acknowledged id {id} (offset {offset}) is lost: not in the final log"
            )),
            Some([only]) if only != offset => violations.push(format!(
                "acknowledged id {id} was acknowledged at offset {offset} but is stored at {only}"
            )),
            _ => {}
        }
        if !attempted.contains(id) {
            violations.push(format!("id {id} was acknowledged but never sent"));
        }
    }
    let mut by_id = acked.clone();
    by_id.sort_unstable();
    for window in by_id.windows(2) {
        let ((id_a, offset_a), (id_b, offset_b)) = (window[0], window[1]);
        if offset_b <= offset_a {
            violations.push(format!(
                "id {id_b} was sent after id {id_a} but acknowledged at offset {offset_b}, not after {offset_a}"
            ));
        }
    }

    // What consumers saw stays.
    for (offset, id) in &seen {
        match at_offset.get(offset) {
            Some(stored_id) if stored_id == id => {}
            Some(other) => violations.push(format!(
                "a consumer saw id {id} at offset {offset}, which now holds id {other}"
            )),
            None => violations.push(format!(
                "a consumer saw id {id} at offset {offset}, which is gone from the final log"
            )),
        }
    }

    // One leader per epoch.
    for (epoch, names) in &leaders {
        if names.len() > 1 {
            violations.push(format!(
                "brokers {names:?} were each named leader in epoch {epoch}"
            ));
        }
    }

    if violations.is_empty() {
        Ok(summary)
    } else {
        Err(violations)
    }
}

/// The value a produce attempt writes for `id`.
pub fn value_of(id: u64) -> String {
    format!("id-{id}")
}

/// The id a stored value carries; `None` for a value no test wrote.
pub fn id_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .strip_prefix("id-")?
        .parse()
        .ok()
}
