//! Scenarios for one or two replicas, driven by hand. The seeded simulation in
//! `tests/simulation.rs` covers the combinations.

use super::*;
use crate::{ConfigError, EpochEntry};

const LAG_MAX_MS: u64 = 100;
const FETCH_TIMEOUT_MS: u64 = 50;
const BACKOFF_MS: u64 = 20;
const RETRY_MS: u64 = 80;

fn config() -> ReplicaConfig {
    ReplicaConfig {
        replica_lag_max_ms: LAG_MAX_MS,
        fetch_timeout_ms: FETCH_TIMEOUT_MS,
        fetch_backoff_ms: BACKOFF_MS,
        isr_proposal_retry_ms: RETRY_MS,
        min_insync_replicas: 2,
    }
}

/// A replica whose log holds, in order, `count` records of each `(epoch, count)`.
fn replica(id: u32, log: &[(u32, u64)]) -> Replica {
    let mut epochs = LeaderEpochCache::new();
    let mut end = 0;
    for &(epoch, count) in log {
        epochs.record(epoch, end).expect("ascending epochs");
        end += count;
    }
    Replica::new(
        id,
        config(),
        RecoveredLog {
            log_start_offset: 0,
            log_end_offset: end,
            epochs,
            high_watermark: 0,
        },
    )
    .expect("valid log")
}

/// Replica 1 leading epoch `leader_epoch` of replicas 1 and 2 (both in the ISR), and
/// replica 2 following it, from the given logs.
fn pair(
    leader_log: &[(u32, u64)],
    follower_log: &[(u32, u64)],
    leader_epoch: u32,
) -> (Replica, Replica) {
    let mut leader = replica(1, leader_log);
    let mut follower = replica(2, follower_log);
    leader
        .become_leader(leader_epoch, &[1, 2], &[1, 2], 0)
        .expect("leader");
    follower
        .become_follower(1, leader_epoch, 0)
        .expect("follower");
    (leader, follower)
}

/// Three empty replicas: 1 leading epoch 1 with all three in the ISR, 2 and 3
/// following.
fn trio() -> (Replica, Replica, Replica) {
    let mut leader = replica(1, &[]);
    let mut f2 = replica(2, &[]);
    let mut f3 = replica(3, &[]);
    leader
        .become_leader(1, &[1, 2, 3], &[1, 2, 3], 0)
        .expect("leader");
    f2.become_follower(1, 1, 0).expect("follower");
    f3.become_follower(1, 1, 0).expect("follower");
    (leader, f2, f3)
}

fn drain(replica: &mut Replica) -> Vec<Output> {
    std::iter::from_fn(|| replica.poll_output()).collect()
}

/// The batches a leader's log holds from `from` to its end: one per epoch run, read
/// off its epoch history (these tests never need finer batches).
fn batches_from(leader: &Replica, from: u64) -> Vec<BatchRange> {
    let entries = leader.epochs().entries();
    let end = leader.log_end_offset();
    let mut batches = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let next = entries.get(i + 1).map_or(end, |e| e.start_offset);
        let base = entry.start_offset.max(from);
        if base < next {
            batches.push(BatchRange {
                base_offset: base,
                last_offset: next - 1,
                leader_epoch: entry.leader_epoch,
            });
        }
    }
    batches
}

/// One fetch round trip from `follower` to `leader`; returns the follower's outputs.
fn fetch_once(leader: &mut Replica, follower: &mut Replica, now_ms: u64) -> Vec<Output> {
    let request = follower.poll_fetch(now_ms).expect("a fetch is due");
    let reply = leader
        .handle_follower_fetch(&request, now_ms)
        .expect("fetch accepted");
    match reply {
        FetchReply::Records {
            fetch_offset,
            high_watermark,
            ..
        } => {
            let batches = batches_from(leader, fetch_offset);
            follower.handle_fetch_response(
                &request,
                FetchResponse::Records {
                    high_watermark,
                    batches: &batches,
                },
                now_ms,
            )
        }
        FetchReply::Diverging {
            diverging,
            high_watermark,
        } => follower.handle_fetch_response(
            &request,
            FetchResponse::Diverging {
                diverging,
                high_watermark,
            },
            now_ms,
        ),
    }
    .expect("response accepted");
    drain(follower)
}

fn append(leader: &mut Replica, records: u64) {
    let base_offset = leader.log_end_offset();
    let leader_epoch = leader.leader_epoch().expect("has a role");
    leader
        .handle_local_append(BatchRange {
            base_offset,
            last_offset: base_offset + records - 1,
            leader_epoch,
        })
        .expect("leader append");
}

fn truncations(outputs: &[Output]) -> Vec<u64> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Truncate { to } => Some(*to),
            _ => None,
        })
        .collect()
}

fn proposals(outputs: &[Output]) -> Vec<Vec<u32>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ProposeIsr(p) => Some(p.isr.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn follower_with_a_lagging_high_watermark_keeps_records_the_leader_has() {
    // KIP-101's first scenario: the follower has records beyond its high watermark that
    // the new leader also has. Truncating to the high watermark would lose them.
    let (mut leader, mut follower) = pair(&[(1, 10)], &[(1, 10)], 2);
    append(&mut leader, 3);
    let outputs = fetch_once(&mut leader, &mut follower, 1);
    assert!(truncations(&outputs).is_empty(), "{outputs:?}");
    assert_eq!(follower.log_end_offset(), 13);
}

#[test]
fn divergent_follower_cuts_at_the_end_of_the_shared_epoch() {
    // The follower led epoch 2 and wrote records nobody fetched; the leader of epoch 3
    // never saw epoch 2.
    let (mut leader, mut follower) = pair(&[(1, 5)], &[(1, 5), (2, 4)], 3);
    append(&mut leader, 2);
    let outputs = fetch_once(&mut leader, &mut follower, 1);
    assert_eq!(truncations(&outputs), vec![5]);
    assert_eq!(follower.log_end_offset(), 5);
    assert_eq!(follower.epochs().latest_epoch(), Some(1));
    // The next fetch agrees and takes epoch 3's records.
    let outputs = fetch_once(&mut leader, &mut follower, 2);
    assert!(outputs.contains(&Output::Append(BatchRange {
        base_offset: 5,
        last_offset: 6,
        leader_epoch: 3
    })));
    assert_eq!(follower.log_end_offset(), 7);
}

#[test]
fn divergence_is_narrowed_over_several_fetches() {
    // Each log holds an epoch the other never saw (KIP-279).
    let (mut leader, mut follower) = pair(&[(1, 3), (2, 3)], &[(1, 3), (3, 5)], 4);
    append(&mut leader, 1);
    // Leader: epoch 3 unknown, floor is 2 ending at 6. Follower: no epoch 2, so it
    // cuts after its epoch 1 and asks again.
    let outputs = fetch_once(&mut leader, &mut follower, 1);
    assert_eq!(truncations(&outputs), vec![3]);
    let outputs = fetch_once(&mut leader, &mut follower, 2);
    assert!(truncations(&outputs).is_empty());
    assert_eq!(follower.log_end_offset(), 7);
    assert_eq!(
        follower.epochs().entries(),
        &[
            EpochEntry {
                leader_epoch: 1,
                start_offset: 0
            },
            EpochEntry {
                leader_epoch: 2,
                start_offset: 3
            },
            EpochEntry {
                leader_epoch: 4,
                start_offset: 6
            },
        ]
    );
}

#[test]
fn follower_ahead_within_the_same_epoch_cuts_to_the_leader_end() {
    let (mut leader, mut follower) = pair(&[(1, 4)], &[(1, 6)], 2);
    let outputs = fetch_once(&mut leader, &mut follower, 1);
    assert_eq!(truncations(&outputs), vec![4]);
}

#[test]
fn high_watermark_waits_for_every_isr_member_to_fetch_in_the_epoch() {
    let (mut leader, mut f2, mut f3) = trio();
    append(&mut leader, 5);
    assert_eq!(leader.high_watermark(), 0);
    fetch_once(&mut leader, &mut f2, 1);
    fetch_once(&mut leader, &mut f2, 2);
    assert_eq!(leader.high_watermark(), 0, "replica 3 has not fetched");
    fetch_once(&mut leader, &mut f3, 3);
    assert_eq!(leader.high_watermark(), 0, "replica 3 fetched from 0");
    fetch_once(&mut leader, &mut f3, 4);
    assert_eq!(leader.high_watermark(), 5);
    // The followers learn it on their next fetch, capped by their own log end.
    fetch_once(&mut leader, &mut f2, 5);
    assert_eq!(f2.high_watermark(), 5);
    assert!(leader.high_watermark() <= leader.log_end_offset());
}

#[test]
fn a_proposed_member_holds_the_high_watermark_until_refused() {
    let mut leader = replica(1, &[]);
    let mut f2 = replica(2, &[]);
    let mut f3 = replica(3, &[]);
    leader
        .become_leader(1, &[1, 2], &[1, 2, 3], 0)
        .expect("leader");
    f2.become_follower(1, 1, 0).expect("follower");
    f3.become_follower(1, 1, 0).expect("follower");
    append(&mut leader, 4);
    fetch_once(&mut leader, &mut f2, 1);
    fetch_once(&mut leader, &mut f2, 1);
    assert_eq!(leader.high_watermark(), 4);
    // Replica 3 reaches the high watermark: proposed.
    fetch_once(&mut leader, &mut f3, 2);
    fetch_once(&mut leader, &mut f3, 3);
    assert_eq!(proposals(&drain(&mut leader)), vec![vec![1, 2, 3]]);
    // While pending, replica 3 counts: the high watermark stops at its log end even
    // though replica 2, the committed ISR, has everything.
    append(&mut leader, 4);
    fetch_once(&mut leader, &mut f2, 4);
    fetch_once(&mut leader, &mut f2, 5);
    assert_eq!(leader.high_watermark(), 4);
    // The controller refuses (committing the unchanged ISR as a new version): replica 3
    // no longer counts.
    leader
        .handle_isr_committed(
            &IsrCommit {
                leader_epoch: 1,
                version: 1,
                isr: vec![1, 2],
            },
            6,
        )
        .expect("newer version");
    assert_eq!(leader.high_watermark(), 8);
}

#[test]
fn a_member_being_removed_holds_the_high_watermark_until_committed() {
    let (mut leader, mut f2, mut f3) = trio();
    fetch_once(&mut leader, &mut f3, 1);
    append(&mut leader, 4);
    // Replica 2 keeps fetching; replica 3 goes silent past the lag limit.
    for now in (10..=LAG_MAX_MS + 10).step_by(10) {
        fetch_once(&mut leader, &mut f2, now);
        leader.handle_timeout(now);
    }
    assert_eq!(proposals(&drain(&mut leader)), vec![vec![1, 2]]);
    assert_eq!(leader.high_watermark(), 0, "replica 3 still counts");
    assert_eq!(leader.isr(), Some(&[1, 2, 3][..]));
    leader
        .handle_isr_committed(
            &IsrCommit {
                leader_epoch: 1,
                version: 1,
                isr: vec![1, 2],
            },
            LAG_MAX_MS + 20,
        )
        .expect("commit");
    assert_eq!(leader.isr(), Some(&[1, 2][..]));
    assert_eq!(leader.high_watermark(), 4);
}

#[test]
fn stale_isr_commits_are_ignored() {
    let mut leader = replica(1, &[]);
    leader
        .become_leader(5, &[1, 2], &[1, 2, 3], 0)
        .expect("leader");
    let commit = |leader_epoch, version, isr: &[u32]| IsrCommit {
        leader_epoch,
        version,
        isr: isr.to_vec(),
    };
    assert_eq!(
        leader.handle_isr_committed(&commit(4, 3, &[1]), 0),
        Err(IsrUpdateError::LeaderEpochMismatch {
            current: 5,
            received: 4
        })
    );
    leader
        .handle_isr_committed(&commit(5, 2, &[1, 2, 3]), 0)
        .expect("newer");
    assert_eq!(
        leader.handle_isr_committed(&commit(5, 1, &[1]), 0),
        Err(IsrUpdateError::StaleVersion {
            current: 2,
            received: 1
        })
    );
    assert_eq!(leader.isr(), Some(&[1, 2, 3][..]));
    assert!(matches!(
        leader.handle_isr_committed(&commit(5, 3, &[2, 3]), 0),
        Err(IsrUpdateError::Assignment(
            AssignmentError::LeaderNotInIsr { .. }
        ))
    ));
}

#[test]
fn unanswered_proposals_are_resent_and_timers_are_reported() {
    let mut leader = replica(1, &[]);
    leader
        .become_leader(1, &[1, 2], &[1, 2], 0)
        .expect("leader");
    assert_eq!(leader.poll_timeout(), Some(LAG_MAX_MS + 1));
    leader.handle_timeout(LAG_MAX_MS + 1);
    assert_eq!(proposals(&drain(&mut leader)), vec![vec![1]]);
    assert_eq!(leader.poll_timeout(), Some(LAG_MAX_MS + 1 + RETRY_MS));
    leader.handle_timeout(LAG_MAX_MS + RETRY_MS);
    assert!(drain(&mut leader).is_empty());
    leader.handle_timeout(LAG_MAX_MS + 1 + RETRY_MS);
    let resent = drain(&mut leader);
    assert_eq!(
        resent,
        vec![Output::ProposeIsr(IsrProposal {
            leader_epoch: 1,
            base_version: 0,
            isr: vec![1]
        })]
    );
}

#[test]
fn acks_all_needs_the_high_watermark_and_enough_replicas() {
    let mut leader = replica(1, &[]);
    let mut f2 = replica(2, &[]);
    assert_eq!(leader.can_accept_acks_all(3), Err(AcksAllError::NotLeader));
    leader
        .become_leader(1, &[1, 2], &[1, 2], 0)
        .expect("leader");
    f2.become_follower(1, 1, 0).expect("follower");
    leader.can_accept_acks_all(3).expect("two in sync");
    append(&mut leader, 3);
    assert_eq!(leader.acks_all_outcome(1, 2, 3), Ok(AcksAll::Waiting));
    fetch_once(&mut leader, &mut f2, 1);
    fetch_once(&mut leader, &mut f2, 2);
    assert_eq!(leader.acks_all_outcome(1, 2, 3), Ok(AcksAll::Acknowledged));
    assert_eq!(
        leader.acks_all_outcome(0, 2, 3),
        Err(AcksAllError::LeaderEpochEnded { leader_epoch: 0 })
    );
    leader
        .handle_isr_committed(
            &IsrCommit {
                leader_epoch: 1,
                version: 1,
                isr: vec![1],
            },
            3,
        )
        .expect("shrink");
    let not_enough = AcksAllError::NotEnoughReplicas {
        isr_size: 1,
        min_insync_replicas: 2,
    };
    assert_eq!(leader.can_accept_acks_all(3), Err(not_enough.clone()));
    assert_eq!(leader.acks_all_outcome(1, 2, 3), Err(not_enough));
    leader.become_follower(2, 2, 4).expect("deposed");
    assert_eq!(
        leader.acks_all_outcome(1, 2, 3),
        Err(AcksAllError::LeaderEpochEnded { leader_epoch: 1 })
    );
}

#[test]
fn one_fetch_in_flight_and_late_answers_are_stale() {
    let mut follower = replica(2, &[]);
    assert_eq!(follower.poll_fetch(0), None, "no role yet");
    follower.become_follower(1, 1, 0).expect("follower");
    let first = follower.poll_fetch(0).expect("due");
    assert_eq!(first.leader, 1);
    assert_eq!(first.last_fetched_epoch, None);
    assert_eq!(follower.poll_fetch(10), None, "one in flight");
    assert_eq!(follower.poll_timeout(), Some(FETCH_TIMEOUT_MS));
    // Timed out: backs off, then fetches again under a new id.
    assert_eq!(follower.poll_fetch(FETCH_TIMEOUT_MS), None);
    assert_eq!(follower.poll_timeout(), Some(FETCH_TIMEOUT_MS + BACKOFF_MS));
    let second = follower
        .poll_fetch(FETCH_TIMEOUT_MS + BACKOFF_MS)
        .expect("due again");
    assert_ne!(first.fetch_id, second.fetch_id);
    let batches = [BatchRange {
        base_offset: 0,
        last_offset: 0,
        leader_epoch: 1,
    }];
    let response = FetchResponse::Records {
        high_watermark: 1,
        batches: &batches,
    };
    assert_eq!(
        follower.handle_fetch_response(&first, response, 80),
        Err(FetchResponseError::Stale)
    );
    assert_eq!(follower.log_end_offset(), 0);
    follower
        .handle_fetch_response(&second, response, 80)
        .expect("current");
    assert_eq!(
        drain(&mut follower),
        vec![Output::Append(batches[0]), Output::HighWatermark(1)]
    );
    // An error answer backs off.
    let third = follower.poll_fetch(80).expect("due");
    follower.handle_fetch_error(&third, 81).expect("current");
    assert_eq!(follower.poll_fetch(81 + BACKOFF_MS - 1), None);
    assert!(follower.poll_fetch(81 + BACKOFF_MS).is_some());
}

#[test]
fn malformed_responses_change_nothing() {
    let mut follower = replica(2, &[(1, 3)]);
    follower.become_follower(1, 2, 0).expect("follower");
    let cases: [(&[BatchRange], FetchResponseError); 4] = [
        (
            &[BatchRange {
                base_offset: 4,
                last_offset: 5,
                leader_epoch: 2,
            }],
            FetchResponseError::NotContiguous {
                expected: 3,
                base_offset: 4,
            },
        ),
        (
            &[BatchRange {
                base_offset: 3,
                last_offset: 4,
                leader_epoch: 0,
            }],
            FetchResponseError::EpochRegression {
                latest: 1,
                received: 0,
            },
        ),
        (
            &[BatchRange {
                base_offset: 3,
                last_offset: 4,
                leader_epoch: 3,
            }],
            FetchResponseError::EpochAheadOfLeader {
                leader_epoch: 2,
                received: 3,
            },
        ),
        (
            &[
                BatchRange {
                    base_offset: 3,
                    last_offset: 4,
                    leader_epoch: 2,
                },
                BatchRange {
                    base_offset: 5,
                    last_offset: 4,
                    leader_epoch: 2,
                },
            ],
            FetchResponseError::EmptyRange {
                base_offset: 5,
                last_offset: 4,
            },
        ),
    ];
    let mut now = 0;
    for (batches, expected) in cases {
        let request = follower.poll_fetch(now).expect("due");
        let response = FetchResponse::Records {
            high_watermark: 5,
            batches,
        };
        assert_eq!(
            follower.handle_fetch_response(&request, response, now),
            Err(expected)
        );
        assert_eq!(follower.log_end_offset(), 3);
        assert_eq!(follower.high_watermark(), 0);
        assert!(drain(&mut follower).is_empty());
        now += BACKOFF_MS;
    }
}

#[test]
fn leader_refuses_fetches_from_other_epochs_and_strangers() {
    let mut leader = replica(1, &[]);
    let request = |replica_id, leader_epoch| FetchRequest {
        replica_id,
        leader: 1,
        leader_epoch,
        fetch_offset: 0,
        last_fetched_epoch: None,
        fetch_id: 0,
    };
    assert_eq!(
        leader.handle_follower_fetch(&request(2, 3), 0),
        Err(FollowerFetchError::NotLeader)
    );
    leader.become_leader(3, &[1], &[1, 2], 0).expect("leader");
    assert_eq!(
        leader.handle_follower_fetch(&request(2, 2), 0),
        Err(FollowerFetchError::FencedLeaderEpoch {
            current: 3,
            received: 2
        })
    );
    assert_eq!(
        leader.handle_follower_fetch(&request(2, 4), 0),
        Err(FollowerFetchError::UnknownLeaderEpoch {
            current: 3,
            received: 4
        })
    );
    assert_eq!(
        leader.handle_follower_fetch(&request(9, 3), 0),
        Err(FollowerFetchError::UnknownReplica { replica: 9 })
    );
    let mut ahead = request(2, 3);
    ahead.fetch_offset = 1;
    assert_eq!(
        leader.handle_follower_fetch(&ahead, 0),
        Err(FollowerFetchError::OffsetOutOfRange {
            fetch_offset: 1,
            log_end_offset: 0
        })
    );
}

#[test]
fn roles_only_move_to_newer_epochs() {
    let mut r = replica(1, &[(4, 2)]);
    assert_eq!(
        r.become_follower(2, 3, 0),
        Err(BecomeFollowerError::StaleLeaderEpoch {
            current: 4,
            received: 3
        })
    );
    let mut fresh = replica(1, &[(4, 2)]);
    assert_eq!(
        fresh.become_leader(4, &[1], &[1, 2], 0),
        Err(BecomeLeaderError::StaleLeaderEpoch {
            current: 4,
            received: 4
        }),
        "a leader's epoch must be newer than its log's"
    );
    r.become_follower(2, 4, 0)
        .expect("following in the log's own epoch is fine");
    assert_eq!(
        r.become_leader(4, &[1], &[1, 2], 0),
        Err(BecomeLeaderError::StaleLeaderEpoch {
            current: 4,
            received: 4
        })
    );
    assert_eq!(
        r.become_follower(1, 5, 0),
        Err(BecomeFollowerError::SelfAsLeader { replica: 1 })
    );
    assert_eq!(
        r.become_leader(5, &[2], &[1, 2], 0),
        Err(BecomeLeaderError::Assignment(
            AssignmentError::LeaderNotInIsr { leader: 1 }
        ))
    );
    assert_eq!(
        r.become_leader(5, &[1, 3], &[1, 2], 0),
        Err(BecomeLeaderError::Assignment(
            AssignmentError::IsrMemberNotAReplica { replica: 3 }
        ))
    );
    assert_eq!(
        r.become_leader(5, &[1], &[1, 2, 1], 0),
        Err(BecomeLeaderError::Assignment(
            AssignmentError::DuplicateReplica { replica: 1 }
        ))
    );
    let many: Vec<u32> = (0..=REPLICAS_MAX as u32).collect();
    assert!(matches!(
        r.become_leader(5, &[1], &many, 0),
        Err(BecomeLeaderError::Assignment(
            AssignmentError::TooManyReplicas { .. }
        ))
    ));
    assert_eq!(
        r.role(),
        Role::Follower {
            leader: 2,
            leader_epoch: 4
        }
    );
    r.become_leader(5, &[1], &[1, 2], 0).expect("newer");
    assert_eq!(r.role(), Role::Leader { leader_epoch: 5 });
}

#[test]
fn a_former_leader_that_wrote_nothing_reports_its_last_written_epoch() {
    let mut r = replica(1, &[(1, 3)]);
    r.become_leader(2, &[1], &[1, 2], 0).expect("leader");
    assert_eq!(r.epochs().latest_epoch(), Some(2));
    r.become_follower(2, 3, 1).expect("follower");
    assert!(
        drain(&mut r)
            .iter()
            .all(|o| !matches!(o, Output::Truncate { .. }))
    );
    let request = r.poll_fetch(1).expect("due");
    assert_eq!(request.last_fetched_epoch, Some(1));
    assert_eq!(request.fetch_offset, 3);
}

#[test]
fn follower_high_watermark_is_capped_by_its_log_and_never_goes_back() {
    let mut leader = replica(1, &[(1, 10)]);
    let mut follower = replica(2, &[(1, 4)]);
    leader.become_leader(2, &[1], &[1, 2], 0).expect("leader");
    follower.become_follower(1, 2, 0).expect("follower");
    let request = follower.poll_fetch(0).expect("due");
    let reply = leader.handle_follower_fetch(&request, 0).expect("ok");
    assert_eq!(
        reply,
        FetchReply::Records {
            fetch_offset: 4,
            log_end_offset: 10,
            high_watermark: 10
        }
    );
    // Only part of the range arrives (the fetch's byte limit).
    let batches = [BatchRange {
        base_offset: 4,
        last_offset: 6,
        leader_epoch: 1,
    }];
    follower
        .handle_fetch_response(
            &request,
            FetchResponse::Records {
                high_watermark: 10,
                batches: &batches,
            },
            1,
        )
        .expect("ok");
    assert_eq!(follower.high_watermark(), 7);
    drain(&mut follower);
    let request = follower.poll_fetch(1).expect("due");
    follower
        .handle_fetch_response(
            &request,
            FetchResponse::Records {
                high_watermark: 3,
                batches: &[],
            },
            2,
        )
        .expect("ok");
    assert_eq!(follower.high_watermark(), 7);
}

#[test]
fn the_high_watermark_output_comes_after_the_records_and_is_coalesced() {
    let mut follower = replica(2, &[]);
    follower.become_follower(1, 1, 0).expect("follower");
    let request = follower.poll_fetch(0).expect("due");
    let batches = [
        BatchRange {
            base_offset: 0,
            last_offset: 1,
            leader_epoch: 1,
        },
        BatchRange {
            base_offset: 2,
            last_offset: 2,
            leader_epoch: 1,
        },
    ];
    follower
        .handle_fetch_response(
            &request,
            FetchResponse::Records {
                high_watermark: 3,
                batches: &batches,
            },
            0,
        )
        .expect("ok");
    assert_eq!(follower.poll_fetch(0), None, "log operations not drained");
    assert_eq!(
        drain(&mut follower),
        vec![
            Output::Append(batches[0]),
            Output::Append(batches[1]),
            Output::HighWatermark(3)
        ]
    );
}

#[test]
fn recovered_logs_are_checked() {
    let mut epochs = LeaderEpochCache::new();
    epochs.record(1, 0).expect("first");
    epochs.record(2, 5).expect("second");
    let log = |log_end_offset, high_watermark, epochs: &LeaderEpochCache| RecoveredLog {
        log_start_offset: 0,
        log_end_offset,
        epochs: epochs.clone(),
        high_watermark,
    };
    assert_eq!(
        Replica::new(1, config(), log(6, 7, &epochs)).err(),
        Some(RecoverError::HighWatermarkBeyondLogEnd {
            high_watermark: 7,
            log_end_offset: 6
        })
    );
    assert_eq!(
        Replica::new(1, config(), log(5, 0, &epochs)).err(),
        Some(RecoverError::EpochBeyondLogEnd {
            leader_epoch: 2,
            start_offset: 5,
            log_end_offset: 5
        })
    );
    assert_eq!(
        Replica::new(1, config(), log(5, 0, &LeaderEpochCache::new())).err(),
        Some(RecoverError::MissingEpochHistory { log_end_offset: 5 })
    );
    let bad = ReplicaConfig {
        min_insync_replicas: 0,
        ..config()
    };
    assert!(matches!(
        Replica::new(1, bad, RecoveredLog::empty()),
        Err(RecoverError::Config(ConfigError::MinInsyncReplicas { .. }))
    ));
    Replica::new(1, config(), log(6, 6, &epochs)).expect("valid");
}

#[test]
fn acks_all_is_refused_once_the_followers_went_silent_before_the_isr_shrinks() {
    let mut leader = replica(1, &[]);
    leader
        .become_leader(1, &[1, 2, 3], &[1, 2, 3], 0)
        .expect("leader");
    // A new leader credits its ISR members as caught up now.
    leader.can_accept_acks_all(LAG_MAX_MS).expect("ISR trusted");
    append(&mut leader, 3);
    assert_eq!(
        leader.acks_all_outcome(1, 2, LAG_MAX_MS),
        Ok(AcksAll::Waiting)
    );

    // Neither follower fetched: past replica_lag_max only the leader is live, and
    // the committed ISR (no controller committed a shrink) still names all three.
    let silent = LAG_MAX_MS + 1;
    assert_eq!(leader.isr(), Some(&[1, 2, 3][..]));
    let not_enough = AcksAllError::NotEnoughReplicas {
        isr_size: 1,
        min_insync_replicas: 2,
    };
    assert_eq!(leader.can_accept_acks_all(silent), Err(not_enough.clone()));
    assert_eq!(leader.acks_all_outcome(1, 2, silent), Err(not_enough));
    assert_eq!(leader.high_watermark(), 0, "nothing was committed");
}

#[test]
fn one_live_follower_is_enough_for_a_minimum_of_two() {
    // Follower 3 never fetches.
    let (mut leader, mut f2, _f3) = trio();
    append(&mut leader, 3);
    fetch_once(&mut leader, &mut f2, LAG_MAX_MS);
    fetch_once(&mut leader, &mut f2, LAG_MAX_MS + 10);
    // Follower 3 is silent but 1 and 2 are live: acks=all is still accepted.
    leader
        .can_accept_acks_all(LAG_MAX_MS + 20)
        .expect("two live ISR members");
}

#[test]
fn a_follower_whose_append_failed_fetches_the_batch_again() {
    let (mut leader, mut follower) = pair(&[(1, 10)], &[(1, 2)], 2);
    let request = follower.poll_fetch(0).expect("due");
    leader.handle_follower_fetch(&request, 0).expect("ok");
    let batches = [
        BatchRange {
            base_offset: 2,
            last_offset: 5,
            leader_epoch: 1,
        },
        BatchRange {
            base_offset: 6,
            last_offset: 9,
            leader_epoch: 1,
        },
    ];
    follower
        .handle_fetch_response(
            &request,
            FetchResponse::Records {
                high_watermark: 8,
                batches: &batches,
            },
            1,
        )
        .expect("ok");
    assert_eq!(follower.high_watermark(), 8);
    // The broker stores the first batch; the second finds the disk full.
    assert_eq!(follower.poll_output(), Some(Output::Append(batches[0])));
    assert_eq!(follower.poll_output(), Some(Output::Append(batches[1])));
    follower.handle_append_failed(6, 1);
    assert_eq!(follower.log_end_offset(), 6);
    assert_eq!(follower.high_watermark(), 6, "capped at what is stored");
    assert_eq!(drain(&mut follower), [Output::HighWatermark(6)]);
    assert_eq!(follower.poll_fetch(1), None, "backs off first");
    let again = follower
        .poll_fetch(1 + BACKOFF_MS)
        .expect("due after the backoff");
    assert_eq!(again.fetch_offset, 6);
}

#[test]
fn a_failed_append_drops_the_appends_queued_after_it() {
    let (mut leader, mut follower) = pair(&[(1, 3), (2, 3)], &[], 3);
    let request = follower.poll_fetch(0).expect("due");
    leader.handle_follower_fetch(&request, 0).expect("ok");
    let batches = [
        BatchRange {
            base_offset: 0,
            last_offset: 2,
            leader_epoch: 1,
        },
        BatchRange {
            base_offset: 3,
            last_offset: 5,
            leader_epoch: 2,
        },
    ];
    follower
        .handle_fetch_response(
            &request,
            FetchResponse::Records {
                high_watermark: 0,
                batches: &batches,
            },
            1,
        )
        .expect("ok");
    // The first append fails: the second, queued behind it, must not run.
    assert_eq!(follower.poll_output(), Some(Output::Append(batches[0])));
    follower.handle_append_failed(0, 1);
    assert_eq!(drain(&mut follower), []);
    assert_eq!(follower.log_end_offset(), 0);
    assert_eq!(
        follower.epochs().latest_epoch(),
        None,
        "epoch 2's start forgotten"
    );
    let again = follower.poll_fetch(1 + BACKOFF_MS).expect("due");
    assert_eq!((again.fetch_offset, again.last_fetched_epoch), (0, None));
}

fn acked(replica: &mut Replica) -> Vec<(u64, Result<(), AcksAllError>)> {
    std::iter::from_fn(|| replica.poll_acks_all()).collect()
}

#[test]
fn an_acks_all_ticket_is_settled_when_the_high_watermark_passes_its_batch() {
    let (mut leader, mut f2) = pair(&[], &[], 1);
    append(&mut leader, 3);
    leader.handle_acks_all(7, 1, 2, 1_000, 1);
    append(&mut leader, 2);
    leader.handle_acks_all(8, 1, 4, 1_000, 1);
    assert!(acked(&mut leader).is_empty(), "nothing replicated yet");
    assert_eq!(leader.acks_waiting(), 2);
    // The deadline is a timer.
    assert!(leader.poll_timeout().is_some_and(|t| t <= 1_000));
    // The first fetch tells the leader where the follower stands (offset 0), the
    // second that it has everything: the high watermark passes both batches.
    fetch_once(&mut leader, &mut f2, 2);
    assert!(acked(&mut leader).is_empty());
    fetch_once(&mut leader, &mut f2, 3);
    assert_eq!(acked(&mut leader), vec![(7, Ok(())), (8, Ok(()))]);
    assert_eq!(leader.acks_waiting(), 0);
}

#[test]
fn a_ticket_already_decided_is_settled_at_once() {
    // A single-replica ISR: the local append moves the high watermark itself.
    let mut leader = replica(1, &[]);
    let mut config = config();
    config.min_insync_replicas = 1;
    leader.set_config(config).expect("config");
    leader.become_leader(1, &[1], &[1], 0).expect("leader");
    append(&mut leader, 2);
    leader.handle_acks_all(1, 1, 1, 1_000, 5);
    assert_eq!(acked(&mut leader), vec![(1, Ok(()))]);
    // A ticket for an epoch that is over fails at once.
    leader.handle_acks_all(2, 0, 1, 1_000, 5);
    assert_eq!(
        acked(&mut leader),
        vec![(2, Err(AcksAllError::LeaderEpochEnded { leader_epoch: 0 }))]
    );
}

#[test]
fn waiting_tickets_fail_on_deposition_isr_loss_and_their_deadline() {
    // Deposed: every waiting ticket of the epoch fails.
    let (mut leader, _f2) = pair(&[], &[], 1);
    append(&mut leader, 1);
    leader.handle_acks_all(1, 1, 0, 1_000, 1);
    leader.become_follower(2, 2, 2).expect("deposed");
    assert_eq!(
        acked(&mut leader),
        vec![(1, Err(AcksAllError::LeaderEpochEnded { leader_epoch: 1 }))]
    );

    // The followers go silent past replica_lag_max: the live ISR is below the
    // minimum, so waiting longer cannot help.
    let mut leader = replica(1, &[]);
    leader
        .become_leader(1, &[1, 2, 3], &[1, 2, 3], 0)
        .expect("leader");
    append(&mut leader, 1);
    leader.handle_acks_all(2, 1, 0, 10_000, 1);
    leader.handle_timeout(LAG_MAX_MS / 2);
    assert!(
        acked(&mut leader).is_empty(),
        "the followers may still be live"
    );
    leader.handle_timeout(LAG_MAX_MS + 1);
    assert_eq!(
        acked(&mut leader),
        vec![(
            2,
            Err(AcksAllError::NotEnoughReplicas {
                isr_size: 1,
                min_insync_replicas: 2
            })
        )]
    );

    // Live followers that do not catch up in time: the deadline decides.
    let (mut leader, mut f2, _f3) = trio();
    append(&mut leader, 1);
    leader.handle_acks_all(3, 1, 0, 30, 1);
    assert_eq!(leader.poll_timeout(), Some(30));
    // Follower 2 fetches (live) but only ever from offset 0: the high watermark
    // stays below the batch while 3 is in the ISR and has not fetched.
    fetch_once(&mut leader, &mut f2, 10);
    leader.handle_timeout(29);
    assert!(acked(&mut leader).is_empty());
    leader.handle_timeout(30);
    assert_eq!(
        acked(&mut leader),
        vec![(3, Err(AcksAllError::Timeout { last_offset: 0 }))]
    );
}
