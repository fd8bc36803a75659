//! The acks=all produces a leader holds until the ISR has their records: Kafka's
//! "delayed produce" purgatory, sans-IO. The broker appends a batch, hands the replica
//! a ticket for it ([`crate::Replica::handle_acks_all`]) and awaits the ticket's
//! outcome, which the replica settles on the events that can decide it (the high
//! watermark moving, the ISR or the role changing, a timer) and hands out through
//! [`crate::Replica::poll_acks_all`]. Nothing polls.

use std::collections::VecDeque;

use crate::error::AcksAllError;
use crate::replica::AcksAll;

/// Tickets a replica holds at most: a produce beyond it is refused at once (the
/// broker's request budgets keep far fewer in flight).
pub const ACK_TICKETS_MAX: usize = 100_000;

/// One waiting produce.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiter {
    ticket: u64,
    leader_epoch: u32,
    last_offset: u64,
    deadline_ms: u64,
}

/// The waiting produces of one replica and the outcomes not yet handed out.
#[derive(Debug, Clone, Default)]
pub(crate) struct AckQueue {
    waiting: Vec<Waiter>,
    settled: VecDeque<(u64, Result<(), AcksAllError>)>,
}

impl AckQueue {
    /// Holds `ticket` for the batch ending at `last_offset`, appended in
    /// `leader_epoch`, until `deadline_ms`. The caller settles the queue right after.
    pub(crate) fn wait(
        &mut self,
        ticket: u64,
        leader_epoch: u32,
        last_offset: u64,
        deadline_ms: u64,
    ) {
        if self.waiting.len() >= ACK_TICKETS_MAX {
            self.settled.push_back((
                ticket,
                Err(AcksAllError::TooManyWaiting {
                    max: ACK_TICKETS_MAX,
                }),
            ));
            return;
        }
        self.waiting.push(Waiter {
            ticket,
            leader_epoch,
            last_offset,
            deadline_ms,
        });
    }

    /// Decides every waiting ticket that `outcome` (the replica's answer for an epoch
    /// and a batch's last offset) or the clock can decide at `now_ms`.
    pub(crate) fn settle(
        &mut self,
        now_ms: u64,
        outcome: impl Fn(u32, u64) -> Result<AcksAll, AcksAllError>,
    ) {
        let settled = &mut self.settled;
        self.waiting.retain(|w| {
            let decided = match outcome(w.leader_epoch, w.last_offset) {
                Ok(AcksAll::Acknowledged) => Ok(()),
                Ok(AcksAll::Waiting) if now_ms >= w.deadline_ms => Err(AcksAllError::Timeout {
                    last_offset: w.last_offset,
                }),
                Ok(AcksAll::Waiting) => return true,
                Err(err) => Err(err),
            };
            settled.push_back((w.ticket, decided));
            false
        });
    }

    /// The earliest deadline of a waiting ticket.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.waiting.iter().map(|w| w.deadline_ms).min()
    }

    /// The next decided ticket and its outcome.
    pub(crate) fn poll(&mut self) -> Option<(u64, Result<(), AcksAllError>)> {
        self.settled.pop_front()
    }

    /// Tickets waiting now.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_beyond_the_limit_is_refused_at_once_and_the_others_still_settle() {
        let mut queue = AckQueue::default();
        for ticket in 0..ACK_TICKETS_MAX as u64 {
            queue.wait(ticket, 1, ticket, 1_000);
        }
        queue.wait(u64::MAX, 1, 0, 1_000);
        assert_eq!(
            queue.poll(),
            Some((
                u64::MAX,
                Err(AcksAllError::TooManyWaiting {
                    max: ACK_TICKETS_MAX
                })
            ))
        );
        assert_eq!(queue.len(), ACK_TICKETS_MAX);
        // The high watermark passes the first ten batches: those are acknowledged,
        // the rest wait on.
        queue.settle(5, |_, last| {
            Ok(if last < 10 {
                AcksAll::Acknowledged
            } else {
                AcksAll::Waiting
            })
        });
        let settled: Vec<u64> = std::iter::from_fn(|| queue.poll())
            .map(|(t, _)| t)
            .collect();
        assert_eq!(settled, (0..10).collect::<Vec<_>>());
        assert_eq!(queue.len(), ACK_TICKETS_MAX - 10);
        assert_eq!(queue.next_deadline(), Some(1_000));
    }
}
