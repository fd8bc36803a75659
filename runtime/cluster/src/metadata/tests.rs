//! The state machine on its own: commands in, answers and state out.

use std::collections::BTreeMap;

use super::*;

fn register(id: BrokerId) -> MetadataCommand {
    MetadataCommand::RegisterBroker {
        broker_id: id,
        incarnation: u64::from(id) * 100,
        address: format!("10.0.0.{id}:7420"),
        now_ms: 1_000,
    }
}

fn create(name: &str, partitions: u32, rf: u16) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.to_owned(),
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
    }
}

fn alter(
    broker: BrokerId,
    topic: &str,
    epoch: u32,
    version: u32,
    isr: &[BrokerId],
) -> MetadataCommand {
    MetadataCommand::AlterIsr {
        broker_id: broker,
        topic: topic.to_owned(),
        partition: 0,
        leader_epoch: epoch,
        isr_version: version,
        isr: isr.to_vec(),
    }
}

fn fence(id: BrokerId) -> MetadataCommand {
    MetadataCommand::FenceBroker { broker_id: id }
}

fn elect(topic: &str) -> MetadataCommand {
    MetadataCommand::ElectLeader {
        topic: topic.to_owned(),
        partition: 0,
    }
}

#[track_caller]
fn ok(state: &mut MetadataState, command: MetadataCommand) -> MetadataResponse {
    let answer = state.apply(&command);
    state.check_invariants().expect("invariants hold");
    answer.unwrap_or_else(|e| panic!("{} refused: {e}", command.kind()))
}

/// Applies a command that must be refused and checks that it changed nothing.
#[track_caller]
fn refused(state: &mut MetadataState, command: MetadataCommand) -> CommandError {
    let before = state.clone();
    let error = match state.apply(&command) {
        Ok(answer) => panic!("{} accepted: {answer:?}", command.kind()),
        Err(e) => e,
    };
    assert_eq!(
        *state,
        before,
        "a refused {} changed the state",
        command.kind()
    );
    error
}

fn cluster(brokers: u32) -> MetadataState {
    let mut state = MetadataState::new();
    for id in 1..=brokers {
        ok(&mut state, register(id));
    }
    state
}

fn partition(state: &MetadataState, topic: &str) -> PartitionRecord {
    state.partition(topic, 0).expect("partition exists").clone()
}

#[test]
fn create_topic_assigns_replicas_round_robin_over_unfenced_brokers() {
    let mut state = cluster(3);
    let MetadataResponse::TopicCreated { partitions } = ok(&mut state, create("a", 3, 2)) else {
        panic!("wrong answer");
    };
    let replicas: Vec<Vec<BrokerId>> = partitions.iter().map(|p| p.replicas.clone()).collect();
    assert_eq!(replicas, vec![vec![1, 2], vec![2, 3], vec![3, 1]]);
    for p in &partitions {
        assert_eq!(p.leader, p.replicas.first().copied());
        assert_eq!(p.leader_epoch, 0);
        assert_eq!(p.isr, p.replicas);
    }
    // The next topic starts one broker further, so leaders spread.
    ok(&mut state, create("b", 1, 1));
    assert_eq!(partition(&state, "b").replicas, vec![2]);

    // Fenced brokers get no replicas.
    ok(&mut state, fence(2));
    ok(&mut state, create("c", 2, 2));
    for p in &state.topic("c").expect("created").partitions {
        assert!(!p.replicas.contains(&2), "{p:?}");
    }
}

#[test]
fn create_topic_refusals() {
    let mut state = cluster(2);
    ok(&mut state, create("a", 1, 1));
    assert_eq!(
        refused(&mut state, create("a", 1, 1)).name(),
        "TOPIC_ALREADY_EXISTS"
    );
    assert_eq!(
        refused(&mut state, create("b", 1, 3)),
        CommandError::NotEnoughBrokers {
            needed: 3,
            available: 2
        }
    );
    assert_eq!(
        refused(&mut state, create("b", 0, 1)).name(),
        "INVALID_PARTITIONS"
    );
    assert_eq!(
        refused(
            &mut state,
            create("b", limits::PARTITIONS_PER_TOPIC_MAX + 1, 1)
        )
        .name(),
        "INVALID_PARTITIONS"
    );
    assert_eq!(
        refused(&mut state, create("b", 1, 0)).name(),
        "INVALID_REPLICATION_FACTOR"
    );
    for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
        assert_eq!(
            refused(&mut state, create(bad, 1, 1)).name(),
            "INVALID_TOPIC_NAME"
        );
    }
    let mut configs = BTreeMap::new();
    configs.insert(UNCLEAN_LEADER_ELECTION_CONFIG.to_owned(), "yes".to_owned());
    let error = refused(
        &mut state,
        MetadataCommand::CreateTopic {
            name: "b".to_owned(),
            partitions: 1,
            replication_factor: 1,
            configs,
        },
    );
    assert_eq!(error.name(), "INVALID_CONFIG");
    // No brokers at all.
    assert_eq!(
        refused(&mut MetadataState::new(), create("b", 1, 1)).name(),
        "NOT_ENOUGH_BROKERS"
    );
}

#[test]
fn registration_is_idempotent_per_incarnation_and_heartbeats_check_the_epoch() {
    let mut state = MetadataState::new();
    let MetadataResponse::BrokerRegistered { broker_epoch, .. } = ok(&mut state, register(1))
    else {
        panic!("wrong answer");
    };
    // A retry answers the same epoch and changes nothing.
    let before = state.clone();
    assert_eq!(
        ok(&mut state, register(1)),
        MetadataResponse::BrokerRegistered {
            broker_epoch,
            leaders_elected: 0
        }
    );
    assert_eq!(state, before);

    // A restart (new incarnation) gets a new epoch; the old one is stale.
    let restarted = MetadataCommand::RegisterBroker {
        broker_id: 1,
        incarnation: 7,
        address: "10.0.0.1:7420".to_owned(),
        now_ms: 2_000,
    };
    let MetadataResponse::BrokerRegistered {
        broker_epoch: next, ..
    } = ok(&mut state, restarted)
    else {
        panic!("wrong answer");
    };
    assert!(next > broker_epoch);
    let stale = MetadataCommand::BrokerHeartbeat {
        broker_id: 1,
        broker_epoch,
        now_ms: 3_000,
    };
    assert_eq!(refused(&mut state, stale).name(), "STALE_BROKER_EPOCH");
    let current = MetadataCommand::BrokerHeartbeat {
        broker_id: 1,
        broker_epoch: next,
        now_ms: 3_000,
    };
    ok(&mut state, current);
    assert_eq!(state.broker(1).map(|b| b.last_heartbeat_ms), Some(3_000));

    let unknown = MetadataCommand::BrokerHeartbeat {
        broker_id: 9,
        broker_epoch: 0,
        now_ms: 0,
    };
    assert_eq!(refused(&mut state, unknown), CommandError::UnknownBroker(9));
    for bad in ["", "host", ":7420", "host:", "host:99999", "a b:1"] {
        let command = MetadataCommand::RegisterBroker {
            broker_id: 2,
            incarnation: 1,
            address: bad.to_owned(),
            now_ms: 0,
        };
        assert_eq!(
            refused(&mut state, command).name(),
            "INVALID_BROKER_ADDRESS"
        );
    }
}

#[test]
fn stale_alter_isr_is_rejected() {
    let mut state = cluster(3);
    ok(&mut state, create("t", 1, 3));
    // Leader 1 at epoch 0, version 0, shrinks the ISR: version 1.
    ok(&mut state, alter(1, "t", 0, 0, &[1, 2]));
    assert_eq!(partition(&state, "t").isr_version, 1);
    // A delayed copy of the same proposal finds its base version gone.
    assert_eq!(
        refused(&mut state, alter(1, "t", 0, 0, &[1, 2])),
        CommandError::StaleIsrVersion {
            current: 1,
            given: 0
        }
    );
    // Broker 1 loses leadership: the epoch moves on, the version starts again.
    ok(&mut state, fence(1));
    let p = partition(&state, "t");
    assert_eq!((p.leader, p.leader_epoch, p.isr_version), (Some(2), 1, 0));

    // The old leader, in its old epoch, is fenced off.
    assert_eq!(
        refused(&mut state, alter(1, "t", 0, 1, &[1, 2, 3])),
        CommandError::FencedLeaderEpoch {
            current: 1,
            given: 0
        }
    );
    // A replica that is not the leader, in the current epoch.
    assert_eq!(
        refused(&mut state, alter(3, "t", 1, 0, &[2, 3])),
        CommandError::NotLeader {
            broker: 3,
            leader: Some(2)
        }
    );
    // An epoch from the future.
    assert_eq!(
        refused(&mut state, alter(2, "t", 2, 0, &[2])).name(),
        "UNKNOWN_LEADER_EPOCH"
    );
    let unknown_partition = MetadataCommand::AlterIsr {
        broker_id: 2,
        topic: "t".to_owned(),
        partition: 1,
        leader_epoch: 1,
        isr_version: 0,
        isr: vec![2],
    };
    assert_eq!(
        refused(&mut state, unknown_partition).name(),
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    // The current leader, epoch and version, but an ISR that breaks a rule: the ISR
    // stays and the decision takes the next version, so the proposal cannot apply
    // later. Broker 1 is fenced and cannot rejoin.
    let mut version = 0;
    for (isr, reason) in [
        (&[][..], "INVALID_ISR"),
        (&[3], "INVALID_ISR"),
        (&[2, 2], "INVALID_ISR"),
        (&[2, 4], "INVALID_ISR"),
        (&[1, 2], "INELIGIBLE_REPLICA"),
    ] {
        let before = partition(&state, "t");
        let MetadataResponse::IsrAltered {
            partition: after,
            refusal,
        } = ok(&mut state, alter(2, "t", 1, version, isr))
        else {
            panic!("wrong answer");
        };
        assert_eq!(refusal.map(|e| e.name()), Some(reason), "{isr:?}");
        assert_eq!(after.isr, before.isr);
        assert_eq!(after.isr_version, version + 1);
        version += 1;
    }

    // A valid proposal: order follows the assignment, the version moves, the
    // leader epoch does not.
    let MetadataResponse::IsrAltered {
        partition: after,
        refusal,
    } = ok(&mut state, alter(2, "t", 1, version, &[3, 2]))
    else {
        panic!("wrong answer");
    };
    assert_eq!(refusal, None);
    assert_eq!(after.isr, vec![2, 3]);
    assert_eq!((after.leader_epoch, after.isr_version), (1, version + 1));
}

#[test]
fn election_chooses_from_the_isr_only() {
    let mut state = cluster(3);
    ok(&mut state, create("t", 1, 3));
    assert_eq!(partition(&state, "t").replicas, vec![1, 2, 3]);
    // Broker 2 falls out of the ISR.
    ok(&mut state, alter(1, "t", 0, 0, &[1, 3]));
    // Broker 1 dies: 2 is preferred over 3 but not in sync, so 3 leads.
    ok(&mut state, fence(1));
    let p = partition(&state, "t");
    assert_eq!(
        (p.leader, p.leader_epoch, p.isr.clone()),
        (Some(3), 1, vec![3])
    );

    // An explicit election keeps 3: it is the only eligible ISR member.
    let MetadataResponse::LeaderElected {
        partition: p,
        changed,
    } = ok(&mut state, elect("t"))
    else {
        panic!("wrong answer");
    };
    assert!(!changed);
    assert_eq!((p.leader, p.leader_epoch), (Some(3), 1));

    // 3 dies too: nobody in the ISR is left, and unclean election is off, so the
    // partition has no leader rather than electing out-of-sync broker 2.
    ok(&mut state, fence(3));
    let p = partition(&state, "t");
    assert_eq!(
        (p.leader, p.leader_epoch, p.isr.clone()),
        (None, 2, vec![3])
    );
    let MetadataResponse::LeaderElected { changed, .. } = ok(&mut state, elect("t")) else {
        panic!("wrong answer");
    };
    assert!(!changed);

    // 3 comes back (heartbeat in its epoch): the leaderless partition elects it.
    let epoch = state.broker(3).map(|b| b.epoch).expect("registered");
    let answer = ok(
        &mut state,
        MetadataCommand::BrokerHeartbeat {
            broker_id: 3,
            broker_epoch: epoch,
            now_ms: 5_000,
        },
    );
    assert_eq!(
        answer,
        MetadataResponse::HeartbeatAccepted {
            unfenced: true,
            leaders_elected: 1
        }
    );
    let p = partition(&state, "t");
    assert_eq!((p.leader, p.leader_epoch), (Some(3), 3));
}

#[test]
fn explicit_election_moves_leadership_to_the_preferred_replica() {
    let mut state = cluster(2);
    ok(&mut state, create("t", 1, 2));
    ok(&mut state, fence(1));
    assert_eq!(partition(&state, "t").leader, Some(2));
    ok(&mut state, MetadataCommand::UnfenceBroker { broker_id: 1 });
    // Broker 1 is unfenced but left the ISR; the leader has to add it back first.
    assert_eq!(partition(&state, "t").isr, vec![2]);
    let MetadataResponse::LeaderElected { changed, .. } = ok(&mut state, elect("t")) else {
        panic!("wrong answer");
    };
    assert!(!changed);
    ok(&mut state, alter(2, "t", 1, 0, &[1, 2]));
    let MetadataResponse::LeaderElected {
        partition: p,
        changed,
    } = ok(&mut state, elect("t"))
    else {
        panic!("wrong answer");
    };
    assert!(changed);
    assert_eq!((p.leader, p.leader_epoch), (Some(1), 2));
}

#[test]
fn fenced_broker_leaves_the_isr_but_never_empties_it() {
    let mut state = cluster(3);
    ok(&mut state, create("t", 1, 3));
    let MetadataResponse::BrokerFenced {
        leaders_changed,
        isrs_shrunk,
    } = ok(&mut state, fence(1))
    else {
        panic!("wrong answer");
    };
    assert_eq!((leaders_changed, isrs_shrunk), (1, 1));
    let p = partition(&state, "t");
    assert_eq!((p.leader, p.isr.clone()), (Some(2), vec![2, 3]));

    ok(&mut state, fence(3));
    let p = partition(&state, "t");
    assert_eq!(
        (p.leader, p.isr.clone(), p.leader_epoch),
        (Some(2), vec![2], 1)
    );

    // The last member stays in the ISR even when fenced.
    ok(&mut state, fence(2));
    let p = partition(&state, "t");
    assert_eq!(
        (p.leader, p.isr.clone(), p.leader_epoch),
        (None, vec![2], 2)
    );

    // Fencing again is a no-op.
    let before = state.clone();
    assert_eq!(
        ok(&mut state, fence(2)),
        MetadataResponse::BrokerFenced {
            leaders_changed: 0,
            isrs_shrunk: 0
        }
    );
    assert_eq!(state, before);

    // Broker 1 returns, but it is not in the ISR: still no leader.
    ok(&mut state, MetadataCommand::UnfenceBroker { broker_id: 1 });
    assert_eq!(partition(&state, "t").leader, None);
    // Broker 2, the last ISR member, returns and leads again.
    assert_eq!(
        ok(&mut state, MetadataCommand::UnfenceBroker { broker_id: 2 }),
        MetadataResponse::BrokerUnfenced { leaders_elected: 1 }
    );
    let p = partition(&state, "t");
    assert_eq!((p.leader, p.leader_epoch), (Some(2), 3));
    assert_eq!(
        refused(&mut state, fence(9)),
        CommandError::UnknownBroker(9)
    );
}

#[test]
fn unclean_election_takes_any_unfenced_replica() {
    let mut state = cluster(2);
    let mut configs = BTreeMap::new();
    configs.insert(UNCLEAN_LEADER_ELECTION_CONFIG.to_owned(), "true".to_owned());
    ok(
        &mut state,
        MetadataCommand::CreateTopic {
            name: "t".to_owned(),
            partitions: 1,
            replication_factor: 2,
            configs,
        },
    );
    ok(&mut state, alter(1, "t", 0, 0, &[1]));
    ok(&mut state, fence(1));
    let p = partition(&state, "t");
    assert_eq!(
        (p.leader, p.isr.clone(), p.leader_epoch),
        (Some(2), vec![2], 1)
    );
}

#[test]
fn delete_topic_drops_its_attachments_and_offsets() {
    let mut state = cluster(1);
    ok(&mut state, create("t", 2, 1));
    ok(&mut state, create("u", 1, 1));
    ok(&mut state, create("__consumer_offsets", 1, 1));
    ok(&mut state, upload("p", "aa"));
    ok(&mut state, attach("t", "p"));
    ok(&mut state, attach("u", "p"));
    ok(
        &mut state,
        commit("g", &[("t", 0, 5), ("t", 1, 6), ("u", 0, 7)]),
    );

    ok(
        &mut state,
        MetadataCommand::DeleteTopic {
            name: "t".to_owned(),
        },
    );
    assert!(state.topic("t").is_none());
    assert_eq!(state.attachments().len(), 1);
    assert_eq!(state.offsets().len(), 1);
    assert_eq!(
        state.committed_offset("g", "u", 0).map(|c| c.offset),
        Some(7)
    );

    let again = MetadataCommand::DeleteTopic {
        name: "t".to_owned(),
    };
    assert_eq!(refused(&mut state, again).name(), "UNKNOWN_TOPIC");
    let internal = MetadataCommand::DeleteTopic {
        name: "__consumer_offsets".to_owned(),
    };
    assert_eq!(refused(&mut state, internal).name(), "INTERNAL_TOPIC");
}

fn upload(name: &str, version: &str) -> MetadataCommand {
    MetadataCommand::UploadPlugin {
        name: name.to_owned(),
        version: version.to_owned(),
        kind: "filter".to_owned(),
        size_bytes: 1_024,
        uploaded_ms: 42,
    }
}

fn attach(topic: &str, plugin: &str) -> MetadataCommand {
    MetadataCommand::AttachPlugin {
        topic: topic.to_owned(),
        plugin: plugin.to_owned(),
        stage: "produce".to_owned(),
        params: vec![("k".to_owned(), "v".to_owned())],
        on_error: "skip".to_owned(),
    }
}

fn commit(group: &str, offsets: &[(&str, u32, u64)]) -> MetadataCommand {
    MetadataCommand::CommitOffsets {
        now_ms: 0,
        group: group.to_owned(),
        offsets: offsets
            .iter()
            .map(|(topic, partition, offset)| OffsetCommit {
                topic: (*topic).to_owned(),
                partition: *partition,
                offset: *offset,
                metadata: String::new(),
            })
            .collect(),
    }
}

#[test]
fn a_plugin_is_deleted_only_when_no_topic_has_it_attached() {
    let mut state = cluster(1);
    ok(&mut state, create("t", 1, 1));
    ok(&mut state, upload("p", "aa"));
    ok(&mut state, attach("t", "p"));
    let before = state.clone();
    let refused_delete = refused(
        &mut state,
        MetadataCommand::DeletePlugin {
            name: "p".to_owned(),
        },
    );
    assert_eq!(refused_delete.name(), "PLUGIN_ATTACHED");
    assert!(
        refused_delete.to_string().contains("`t`"),
        "{refused_delete}"
    );
    assert_eq!(state, before, "a refused delete changes nothing");
    ok(
        &mut state,
        MetadataCommand::DetachPlugin {
            topic: "t".to_owned(),
            plugin: "p".to_owned(),
        },
    );
    assert_eq!(
        ok(
            &mut state,
            MetadataCommand::DeletePlugin {
                name: "p".to_owned()
            }
        ),
        MetadataResponse::PluginDeleted
    );
    assert!(state.plugins().is_empty());
    let again = MetadataCommand::DeletePlugin {
        name: "p".to_owned(),
    };
    assert_eq!(refused(&mut state, again).name(), "UNKNOWN_PLUGIN");
}

#[test]
fn plugins_upload_attach_detach() {
    let mut state = cluster(1);
    ok(&mut state, create("t", 1, 1));
    assert_eq!(
        ok(&mut state, upload("p", "aa")),
        MetadataResponse::PluginUploaded {
            previous_version: None
        }
    );
    assert_eq!(
        ok(&mut state, upload("p", "bb")),
        MetadataResponse::PluginUploaded {
            previous_version: Some("aa".to_owned())
        }
    );
    assert_eq!(
        state.plugins().get("p").map(|p| p.version.as_str()),
        Some("bb")
    );
    assert_eq!(
        refused(&mut state, upload("p q", "aa")).name(),
        "INVALID_PLUGIN"
    );
    assert_eq!(
        refused(&mut state, upload("p", "")).name(),
        "INVALID_PLUGIN"
    );

    assert_eq!(
        refused(&mut state, attach("nope", "p")).name(),
        "UNKNOWN_TOPIC"
    );
    assert_eq!(
        refused(&mut state, attach("t", "nope")).name(),
        "UNKNOWN_PLUGIN"
    );
    let mut bad = attach("t", "p");
    if let MetadataCommand::AttachPlugin { stage, .. } = &mut bad {
        *stage = "consume".to_owned();
    }
    assert_eq!(refused(&mut state, bad).name(), "INVALID_ATTACHMENT");
    for on_error in ["retry", "dead-letter:", "dead-letter:t", "dead-letter:a b"] {
        let mut bad = attach("t", "p");
        if let MetadataCommand::AttachPlugin { on_error: o, .. } = &mut bad {
            *o = on_error.to_owned();
        }
        assert_eq!(
            refused(&mut state, bad).name(),
            "INVALID_ATTACHMENT",
            "{on_error}"
        );
    }

    let attach_with = |i: usize| {
        let mut command = attach("t", "p");
        if let MetadataCommand::AttachPlugin { params, .. } = &mut command {
            params.push(("i".to_owned(), i.to_string()));
        }
        command
    };
    ok(&mut state, attach_with(0));
    // A retried attachment, identical to the first, is not a second one.
    let once = state.clone();
    assert_eq!(
        ok(&mut state, attach_with(0)),
        MetadataResponse::PluginAttached
    );
    assert_eq!(state, once);
    for i in 1..limits::ATTACHMENTS_PER_TOPIC_MAX {
        ok(&mut state, attach_with(i));
    }
    assert_eq!(
        refused(&mut state, attach_with(limits::ATTACHMENTS_PER_TOPIC_MAX)).name(),
        "TOO_MANY_ATTACHMENTS"
    );
    assert_eq!(
        state.attachments_of("t").count(),
        limits::ATTACHMENTS_PER_TOPIC_MAX
    );

    let detach = MetadataCommand::DetachPlugin {
        topic: "t".to_owned(),
        plugin: "p".to_owned(),
    };
    assert_eq!(
        ok(&mut state, detach.clone()),
        MetadataResponse::PluginDetached {
            removed: limits::ATTACHMENTS_PER_TOPIC_MAX as u32
        }
    );
    assert_eq!(refused(&mut state, detach).name(), "NOT_ATTACHED");
}

#[test]
fn offset_commits_are_all_or_nothing() {
    let mut state = cluster(1);
    ok(&mut state, create("t", 2, 1));
    ok(&mut state, commit("g", &[("t", 0, 10), ("t", 1, 20)]));
    ok(&mut state, commit("h", &[("t", 0, 1)]));
    assert_eq!(
        refused(&mut state, commit("g", &[("t", 0, 11), ("t", 2, 1)])).name(),
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        state.committed_offset("g", "t", 0).map(|c| c.offset),
        Some(10)
    );
    assert_eq!(
        refused(&mut state, commit("", &[("t", 0, 1)])).name(),
        "INVALID_OFFSET_COMMIT"
    );
    let group: Vec<u64> = state.group_offsets("g").map(|(_, c)| c.offset).collect();
    assert_eq!(group, vec![10, 20]);

    let too_long = MetadataCommand::CommitOffsets {
        now_ms: 0,
        group: "g".to_owned(),
        offsets: vec![OffsetCommit {
            topic: "t".to_owned(),
            partition: 0,
            offset: 1,
            metadata: "m".repeat(limits::OFFSET_METADATA_BYTES_MAX + 1),
        }],
    };
    assert_eq!(
        refused(&mut state, too_long).name(),
        "INVALID_OFFSET_COMMIT"
    );
}

#[test]
fn offsets_are_bounded() {
    let mut state = cluster(1);
    let per_commit = limits::OFFSETS_PER_COMMIT_MAX;
    ok(&mut state, create("t", per_commit as u32, 1));
    let all: Vec<(&str, u32, u64)> = (0..per_commit as u32).map(|p| ("t", p, 1)).collect();
    for g in 0..limits::OFFSETS_MAX / per_commit {
        state
            .apply(&commit(&format!("g{g}"), &all))
            .expect("under the limit");
    }
    assert_eq!(state.offsets().len(), limits::OFFSETS_MAX);
    // Updating existing offsets is fine; one more key is not.
    ok(&mut state, commit("g0", &[("t", 0, 2)]));
    assert_eq!(
        refused(&mut state, commit("new", &[("t", 0, 1)])),
        CommandError::TooManyOffsets {
            max: limits::OFFSETS_MAX
        }
    );
}

#[test]
fn state_round_trips_through_json() {
    let mut state = cluster(3);
    ok(&mut state, create("t", 3, 2));
    ok(&mut state, upload("p", "aa"));
    ok(&mut state, attach("t", "p"));
    ok(&mut state, commit("g", &[("t", 0, 10)]));
    ok(&mut state, fence(2));
    let json = serde_json::to_vec(&state).expect("serialises");
    let back: MetadataState = serde_json::from_slice(&json).expect("deserialises");
    assert_eq!(back, state);
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_command(rng: &mut Rng, state: &MetadataState) -> MetadataCommand {
    let broker = rng.below(6) as BrokerId; // 0 and 5 are never registered below
    let topic = format!("t{}", rng.below(4));
    let partition = rng.below(3) as u32;
    match rng.below(10) {
        0 => MetadataCommand::RegisterBroker {
            broker_id: 1 + rng.below(4) as BrokerId,
            incarnation: rng.below(3),
            address: "h:1".to_owned(),
            now_ms: rng.below(10_000),
        },
        1 => MetadataCommand::BrokerHeartbeat {
            broker_id: broker,
            broker_epoch: state.broker(broker).map_or(0, |b| b.epoch) + rng.below(2),
            now_ms: rng.below(10_000),
        },
        2 => fence(broker),
        3 => MetadataCommand::UnfenceBroker { broker_id: broker },
        4 => {
            let mut configs = BTreeMap::new();
            if rng.below(2) == 0 {
                configs.insert(UNCLEAN_LEADER_ELECTION_CONFIG.to_owned(), "true".to_owned());
            }
            MetadataCommand::CreateTopic {
                name: topic,
                partitions: 1 + rng.below(3) as u32,
                replication_factor: 1 + rng.below(4) as u16,
                configs,
            }
        }
        5 => MetadataCommand::DeleteTopic { name: topic },
        6 | 7 => {
            // Mostly well-formed requests from the real leader, sometimes not.
            let current = state.partition(&topic, partition).cloned();
            let (sender, epoch, mut isr) = match &current {
                Some(p) if rng.below(4) != 0 => (
                    p.leader.unwrap_or(broker),
                    p.leader_epoch,
                    p.replicas
                        .iter()
                        .copied()
                        .filter(|_| rng.below(3) != 0)
                        .collect::<Vec<_>>(),
                ),
                _ => (broker, rng.below(3) as u32, vec![broker]),
            };
            if rng.below(3) != 0 && !isr.contains(&sender) {
                isr.push(sender);
            }
            let version =
                current.as_ref().map_or(0, |p| p.isr_version) + u32::from(rng.below(5) == 0);
            MetadataCommand::AlterIsr {
                broker_id: sender,
                topic,
                partition,
                leader_epoch: epoch,
                isr_version: version,
                isr,
            }
        }
        8 => MetadataCommand::ElectLeader { topic, partition },
        _ => commit("g", &[(topic.as_str(), partition, rng.below(100))]),
    }
}

/// Random command sequences: every answer keeps the invariants (leader in ISR, ISR
/// in replicas and never empty, leaders unfenced), a refusal changes nothing, leader
/// epochs never go back, and a replay of the same log reaches the same state.
#[test]
fn random_commands_keep_the_invariants() {
    let seed = std::env::var("QUIVER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0FC0_FFEE_u64);
    println!("seed {seed} (set QUIVER_SEED to replay)");
    let mut rng = Rng(seed | 1);
    let mut state = MetadataState::new();
    let mut log = Vec::new();
    let mut accepted: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut leader_changes = 0;
    // Applied and refused-but-versioned ISR proposals.
    let mut isr_decisions: BTreeMap<bool, u32> = BTreeMap::new();
    for step in 0..5_000 {
        let command = random_command(&mut rng, &state);
        let before = state.clone();
        match state.apply(&command) {
            Ok(answer) => {
                *accepted.entry(command.kind()).or_default() += 1;
                if matches!(
                    answer,
                    MetadataResponse::LeaderElected { changed: true, .. }
                ) || matches!(
                    answer,
                    MetadataResponse::BrokerFenced {
                        leaders_changed: 1..,
                        ..
                    }
                ) {
                    leader_changes += 1;
                }
                if let MetadataResponse::IsrAltered { refusal, .. } = &answer {
                    *isr_decisions.entry(refusal.is_none()).or_default() += 1;
                }
            }
            Err(_) => assert_eq!(
                state, before,
                "step {step}: refused {command:?} changed the state"
            ),
        }
        if let Err(broken) = state.check_invariants() {
            panic!("seed {seed} step {step}: {command:?} broke an invariant: {broken}");
        }
        for (name, topic) in state.topics() {
            let Some(old) = before.topic(name) else {
                continue;
            };
            for (p, (new, old)) in topic.partitions.iter().zip(&old.partitions).enumerate() {
                assert!(
                    (new.leader_epoch, new.isr_version) >= (old.leader_epoch, old.isr_version),
                    "seed {seed} step {step}: {name}/{p} epoch or version went back"
                );
                if new.isr != old.isr {
                    assert!(
                        (new.leader_epoch, new.isr_version) > (old.leader_epoch, old.isr_version),
                        "seed {seed} step {step}: {name}/{p} ISR changed without a new version"
                    );
                }
                if new.leader != old.leader {
                    assert!(
                        new.leader_epoch > old.leader_epoch,
                        "leader change without epoch bump"
                    );
                }
            }
        }
        log.push(command);
    }
    // Refuse to pass vacuously: the run must have exercised the interesting paths.
    for kind in [
        "create_topic",
        "alter_isr",
        "fence_broker",
        "broker_heartbeat",
        "commit_offsets",
    ] {
        assert!(
            accepted.get(kind).copied().unwrap_or(0) > 10,
            "seed {seed}: few {kind}: {accepted:?}"
        );
    }
    println!(
        "accepted {accepted:?}, leader changes {leader_changes}, ISR decisions {isr_decisions:?}"
    );
    assert!(
        isr_decisions.values().all(|n| *n > 10),
        "seed {seed}: ISR decisions {isr_decisions:?}"
    );
    assert!(
        leader_changes > 10,
        "seed {seed}: only {leader_changes} leader changes"
    );

    // Determinism: replaying the log gives the same state.
    let mut replay = MetadataState::new();
    for command in &log {
        let _ = replay.apply(command);
    }
    assert_eq!(replay, state);
}

#[test]
fn a_restarted_leader_leads_again_only_in_a_new_epoch() {
    // A single node: it is its partitions' only replica.
    let mut state = cluster(1);
    ok(&mut state, create("solo", 1, 1));
    let before = state.partition("solo", 0).expect("partition").clone();
    assert_eq!(before.leader, Some(1));
    let restart = MetadataCommand::RegisterBroker {
        broker_id: 1,
        incarnation: 999,
        address: "10.0.0.1:7420".to_owned(),
        now_ms: 2_000,
    };
    ok(&mut state, restart);
    let after = state.partition("solo", 0).expect("partition");
    assert_eq!(after.leader, Some(1), "the only replica leads again");
    assert!(
        after.leader_epoch > before.leader_epoch,
        "epoch {} after {}",
        after.leader_epoch,
        before.leader_epoch
    );

    // Three brokers: a restarted leader hands its partition to another ISR member.
    let mut state = cluster(3);
    ok(&mut state, create("trio", 1, 3));
    let before = state.partition("trio", 0).expect("partition").clone();
    let leader = before.leader.expect("a leader");
    let restart = MetadataCommand::RegisterBroker {
        broker_id: leader,
        incarnation: 4242,
        address: format!("10.0.0.{leader}:7420"),
        now_ms: 2_000,
    };
    ok(&mut state, restart);
    let after = state.partition("trio", 0).expect("partition");
    assert_ne!(after.leader, Some(leader), "another ISR member leads");
    assert!(
        !after.isr.contains(&leader),
        "the restarted broker catches up first"
    );
    assert!(after.leader_epoch > before.leader_epoch);
}

#[test]
fn a_restart_that_draws_its_last_incarnation_again_still_leads_in_a_new_epoch() {
    // Two starts of a single-node broker on one address. Its incarnations were
    // `now_ms ^ pid`: these starts, 2 113 ms and 2 113 pids apart (a loaded machine's
    // process churn), drew the same number.
    let (first_ms, first_pid) = (1_767_033_094_445_u64, 119_813_u64);
    let (second_ms, second_pid) = (1_767_033_096_558_u64, 121_926_u64);
    let incarnation = first_ms ^ first_pid;
    assert_eq!(second_ms ^ second_pid, incarnation);
    let register = |now_ms: u64| MetadataCommand::RegisterBroker {
        broker_id: 1,
        incarnation,
        address: "127.0.0.1:7420".to_owned(),
        now_ms,
    };

    let mut state = MetadataState::new();
    let MetadataResponse::BrokerRegistered { broker_epoch, .. } =
        ok(&mut state, register(first_ms))
    else {
        panic!("wrong answer");
    };
    // Until its first heartbeat, the same registration again is a retry.
    let registered = state.clone();
    assert_eq!(
        ok(&mut state, register(first_ms + 20)),
        MetadataResponse::BrokerRegistered {
            broker_epoch,
            leaders_elected: 0
        }
    );
    assert_eq!(state, registered);
    let heartbeat = |broker_epoch: u64, now_ms: u64| MetadataCommand::BrokerHeartbeat {
        broker_id: 1,
        broker_epoch,
        now_ms,
    };
    ok(&mut state, heartbeat(broker_epoch, first_ms + 30));
    ok(&mut state, create("solo", 1, 1));
    let before = partition(&state, "solo");
    assert_eq!((before.leader, before.leader_epoch), (Some(1), 0));

    // kill -9; the next process registers under the same number.
    let MetadataResponse::BrokerRegistered {
        broker_epoch: next, ..
    } = ok(&mut state, register(second_ms))
    else {
        panic!("wrong answer");
    };
    assert!(next > broker_epoch, "a restart gets a new broker epoch");
    let after = partition(&state, "solo");
    assert_eq!(after.leader, Some(1), "the only replica leads again");
    assert!(
        after.leader_epoch > before.leader_epoch,
        "its log holds epoch {}, so it can lead only a newer one, not {}",
        before.leader_epoch,
        after.leader_epoch
    );
    assert_eq!(
        refused(&mut state, heartbeat(broker_epoch, second_ms + 1)).name(),
        "STALE_BROKER_EPOCH"
    );
    ok(&mut state, heartbeat(next, second_ms + 1));
}

#[test]
fn an_adopted_topic_starts_at_the_epochs_its_logs_need() {
    let mut state = cluster(1);
    let adopt = MetadataCommand::AdoptTopic {
        name: "old".to_owned(),
        configs: BTreeMap::new(),
        leader_epochs: vec![0, 7],
    };
    ok(&mut state, adopt.clone());
    let epochs: Vec<(Option<BrokerId>, u32)> = (0..2)
        .map(|p| {
            let record = state.partition("old", p).expect("partition");
            (record.leader, record.leader_epoch)
        })
        .collect();
    assert_eq!(epochs, [(Some(1), 0), (Some(1), 7)]);
    assert!(matches!(
        refused(&mut state, adopt),
        CommandError::TopicExists(_)
    ));
}

#[test]
fn offsets_of_groups_without_members_expire_after_retention() {
    let mut state = cluster(1);
    ok(&mut state, create("t", 2, 1));
    let at = |group: &str, partition: u32, now_ms: u64| MetadataCommand::CommitOffsets {
        group: group.to_owned(),
        offsets: vec![OffsetCommit {
            topic: "t".to_owned(),
            partition,
            offset: 5,
            metadata: String::new(),
        }],
        now_ms,
    };
    ok(&mut state, at("idle", 0, 1_000));
    ok(&mut state, at("idle", 1, 9_000));
    ok(&mut state, at("busy", 0, 1_000));
    let keep = vec!["busy".to_owned()];
    assert!(state.offsets_expire_before(5_000, &keep));
    assert!(!state.offsets_expire_before(500, &keep));
    let expire = MetadataCommand::ExpireOffsets {
        before_ms: 5_000,
        keep_groups: keep.clone(),
    };
    assert_eq!(
        ok(&mut state, expire),
        MetadataResponse::OffsetsExpired { count: 1 }
    );
    assert!(
        state.committed_offset("idle", "t", 0).is_none(),
        "old and idle"
    );
    assert!(state.committed_offset("idle", "t", 1).is_some(), "recent");
    assert!(
        state.committed_offset("busy", "t", 0).is_some(),
        "a live group keeps its own"
    );
    assert!(!state.offsets_expire_before(5_000, &keep));
}

#[test]
fn produce_stage_dead_letter_cycles_are_refused_in_log_order() {
    let mut state = cluster(1);
    for topic in ["a", "b", "c", "d"] {
        ok(&mut state, create(topic, 1, 1));
    }
    ok(&mut state, upload("p", "aa"));
    let dead_letter = |topic: &str, stage: &str, target: &str| MetadataCommand::AttachPlugin {
        topic: topic.to_owned(),
        plugin: "p".to_owned(),
        stage: stage.to_owned(),
        params: Vec::new(),
        on_error: format!("dead-letter:{target}"),
    };
    ok(&mut state, dead_letter("a", "produce", "b"));
    ok(&mut state, dead_letter("b", "produce", "c"));
    // c -> a closes a -> b -> c -> a: refused even though whoever proposed it may have
    // checked an older view.
    assert_eq!(
        refused(&mut state, dead_letter("c", "produce", "a")).name(),
        "DEAD_LETTER_CYCLE"
    );
    // Fetch-stage dead letters hold no partition lock: no cycle to fear.
    ok(&mut state, dead_letter("c", "fetch", "a"));
    // A shorter cycle is one too; an edge that leads elsewhere is not.
    assert_eq!(
        refused(&mut state, dead_letter("c", "produce", "b")).name(),
        "DEAD_LETTER_CYCLE"
    );
    ok(&mut state, dead_letter("c", "produce", "d"));
    assert!(state.dead_letter_leads_back("c", "a"));
    assert!(!state.dead_letter_leads_back("a", "c"));
}

fn acl(
    principal: &str,
    topic: &str,
    permission: quiver_wire::acl::Permission,
) -> quiver_wire::acl::AclBinding {
    quiver_wire::acl::AclBinding {
        principal: principal.to_owned(),
        resource_type: quiver_wire::acl::ResourceType::Topic,
        pattern: quiver_wire::acl::PatternType::Literal,
        resource_name: topic.to_owned(),
        operation: quiver_wire::acl::Operation::Write,
        permission,
    }
}

#[test]
fn acls_are_added_once_removed_exactly_and_survive_a_snapshot() {
    use quiver_wire::acl::Permission;
    let mut state = MetadataState::new();
    let allow = acl("User:alice", "orders", Permission::Allow);
    let deny = acl("User:*", "orders", Permission::Deny);
    assert_eq!(
        ok(
            &mut state,
            MetadataCommand::CreateAcls {
                bindings: vec![allow.clone(), deny.clone(), allow.clone()]
            }
        ),
        MetadataResponse::AclsCreated { added: 2 }
    );
    assert_eq!(
        ok(
            &mut state,
            MetadataCommand::CreateAcls {
                bindings: vec![allow.clone()]
            }
        ),
        MetadataResponse::AclsCreated { added: 0 }
    );
    let json = serde_json::to_vec(&state).expect("serialises");
    let restored: MetadataState = serde_json::from_slice(&json).expect("deserialises");
    assert_eq!(restored, state);
    assert!(restored.check_invariants().is_ok());

    let mut other = allow.clone();
    other.operation = quiver_wire::acl::Operation::Read;
    assert_eq!(
        ok(
            &mut state,
            MetadataCommand::DeleteAcls {
                bindings: vec![other, deny.clone()]
            }
        ),
        MetadataResponse::AclsDeleted { removed: 1 }
    );
    assert_eq!(state.acls().cloned().collect::<Vec<_>>(), vec![allow]);
}

#[test]
fn an_invalid_acl_changes_nothing() {
    use quiver_wire::acl::Permission;
    let mut state = MetadataState::new();
    let good = acl("User:alice", "orders", Permission::Allow);
    let bad = acl("alice", "orders", Permission::Allow);
    let before = state.clone();
    let err = refused(
        &mut state,
        MetadataCommand::CreateAcls {
            bindings: vec![good, bad],
        },
    );
    assert_eq!(err.name(), "INVALID_ACL");
    assert_eq!(state, before);
}

#[test]
fn a_snapshot_from_before_acls_reads_with_none() {
    let state = cluster(1);
    let mut json: serde_json::Value = serde_json::to_value(&state).expect("serialises");
    let map = json.as_object_mut().expect("an object");
    map.remove("acls");
    map.remove("producer_claims");
    map.remove("next_claim_sequence");
    let restored: MetadataState = serde_json::from_value(json).expect("old snapshot reads");
    assert_eq!(restored.acls().count(), 0);
    assert_eq!(restored, state);
}

#[test]
fn a_producer_id_belongs_to_the_first_principal_that_claims_it() {
    let mut state = MetadataState::new();
    let claim = |id: u64, who: &str| MetadataCommand::ClaimProducerId {
        producer_id: id,
        principal: who.to_owned(),
    };
    assert_eq!(
        ok(&mut state, claim(7, "User:alice")),
        MetadataResponse::ProducerIdClaimed { evicted: None }
    );
    // A retry of the same claim is answered the same.
    assert_eq!(
        ok(&mut state, claim(7, "User:alice")),
        MetadataResponse::ProducerIdClaimed { evicted: None }
    );
    let before = state.clone();
    assert_eq!(
        refused(&mut state, claim(7, "User:mallory")).name(),
        "PRODUCER_ID_NOT_OWNED"
    );
    assert_eq!(state, before);
    assert_eq!(state.producer_owner(7), Some("User:alice"));
    assert_eq!(state.producer_owner(8), None);
}

#[test]
fn a_principal_past_its_claim_limit_loses_its_own_oldest_claim_only() {
    let mut state = MetadataState::new();
    let claim = |id: u64, who: &str| MetadataCommand::ClaimProducerId {
        producer_id: id,
        principal: who.to_owned(),
    };
    ok(&mut state, claim(1_000_000, "User:bob"));
    let max = limits::PRODUCER_CLAIMS_PER_PRINCIPAL_MAX as u64;
    for id in 0..max {
        ok(&mut state, claim(id, "User:alice"));
    }
    assert_eq!(
        ok(&mut state, claim(max, "User:alice")),
        MetadataResponse::ProducerIdClaimed { evicted: Some(0) }
    );
    assert_eq!(state.producer_owner(0), None);
    assert_eq!(state.producer_owner(max), Some("User:alice"));
    assert_eq!(state.producer_owner(1_000_000), Some("User:bob"));
}

#[test]
fn users_are_stored_as_keys_and_checked() {
    let record = UserRecord {
        salt: vec![1; 16],
        iterations: 4096,
        stored_key: vec![2; 32],
        server_key: vec![3; 32],
    };
    let mut state = MetadataState::new();
    let upsert = |name: &str, record: &UserRecord| MetadataCommand::UpsertUser {
        name: name.to_owned(),
        record: record.clone(),
    };
    assert_eq!(
        ok(&mut state, upsert("alice", &record)),
        MetadataResponse::UserUpserted { created: true }
    );
    assert_eq!(
        ok(&mut state, upsert("alice", &record)),
        MetadataResponse::UserUpserted { created: false }
    );
    let before = state.clone();
    let mut weak = record.clone();
    weak.iterations = 1;
    assert_eq!(
        refused(&mut state, upsert("bob", &weak)).name(),
        "INVALID_USER"
    );
    let mut short = record.clone();
    short.stored_key.pop();
    assert_eq!(
        refused(&mut state, upsert("bob", &short)).name(),
        "INVALID_USER"
    );
    assert_eq!(
        refused(&mut state, upsert("", &record)).name(),
        "INVALID_USER"
    );
    assert_eq!(state, before);
    assert_eq!(
        refused(
            &mut state,
            MetadataCommand::DeleteUser { name: "bob".into() }
        )
        .name(),
        "UNKNOWN_USER"
    );
    ok(
        &mut state,
        MetadataCommand::DeleteUser {
            name: "alice".into(),
        },
    );
    assert!(state.users().is_empty());
}

#[test]
fn a_principals_quota_overrides_the_default_and_an_empty_one_removes_it() {
    let mut state = MetadataState::new();
    let set = |principal: &str, produce: Option<u64>| MetadataCommand::SetQuota {
        principal: principal.to_owned(),
        record: QuotaRecord {
            produce_bytes_per_sec: produce,
            fetch_bytes_per_sec: None,
            request_percent: None,
        },
    };
    ok(&mut state, set("User:*", Some(1_000)));
    ok(&mut state, set("User:batch", Some(10)));
    assert_eq!(
        state
            .quota_of("User:batch")
            .and_then(|q| q.produce_bytes_per_sec),
        Some(10)
    );
    assert_eq!(
        state
            .quota_of("User:other")
            .and_then(|q| q.produce_bytes_per_sec),
        Some(1_000)
    );
    let before = state.clone();
    assert_eq!(
        refused(&mut state, set("batch", Some(1))).name(),
        "INVALID_QUOTA"
    );
    assert_eq!(
        refused(&mut state, set("User:x", Some(0))).name(),
        "INVALID_QUOTA"
    );
    assert_eq!(state, before);
    assert_eq!(
        ok(&mut state, set("User:batch", None)),
        MetadataResponse::QuotaSet { removed: true }
    );
    assert_eq!(
        state
            .quota_of("User:batch")
            .and_then(|q| q.produce_bytes_per_sec),
        Some(1_000)
    );
}

fn alter_configs(name: &str, set: &[(&str, &str)], delete: &[&str]) -> MetadataCommand {
    MetadataCommand::AlterTopicConfigs {
        name: name.to_owned(),
        set: set
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        delete: delete.iter().map(|k| (*k).to_owned()).collect(),
    }
}

#[test]
fn altering_configs_sets_and_removes_all_or_nothing() {
    let mut state = cluster(1);
    ok(&mut state, create("t", 1, 1));
    let MetadataResponse::TopicConfigsAltered { configs } = ok(
        &mut state,
        alter_configs(
            "t",
            &[("retention.ms", "1000"), ("segment.bytes", "4096")],
            &[],
        ),
    ) else {
        panic!("wrong answer");
    };
    assert_eq!(configs.len(), 2);
    ok(
        &mut state,
        alter_configs("t", &[("retention.ms", "2000")], &["segment.bytes"]),
    );
    let configs = &state.topic("t").expect("exists").configs;
    assert_eq!(
        configs.iter().collect::<Vec<_>>(),
        [(&"retention.ms".to_owned(), &"2000".to_owned())]
    );
    assert_eq!(
        refused(
            &mut state,
            alter_configs("u", &[("retention.ms", "1")], &[])
        )
        .name(),
        "UNKNOWN_TOPIC"
    );
    assert_eq!(
        refused(
            &mut state,
            alter_configs("t", &[("retention.ms", "1")], &["retention.ms"])
        )
        .name(),
        "INVALID_CONFIG"
    );
    assert_eq!(
        refused(
            &mut state,
            alter_configs(
                "t",
                &[
                    ("retention.ms", "5"),
                    (UNCLEAN_LEADER_ELECTION_CONFIG, "maybe")
                ],
                &[]
            )
        )
        .name(),
        "INVALID_CONFIG"
    );
}

#[test]
fn created_partitions_are_assigned_like_a_new_topics_and_counts_only_grow() {
    let mut state = cluster(3);
    ok(&mut state, create("t", 2, 2));
    let create_partitions = |partitions: u32| MetadataCommand::CreatePartitions {
        name: "t".to_owned(),
        partitions,
    };
    let MetadataResponse::PartitionsCreated { partitions } = ok(&mut state, create_partitions(5))
    else {
        panic!("wrong answer");
    };
    assert_eq!(partitions.len(), 3);
    let topic = state.topic("t").expect("exists");
    assert_eq!(topic.partitions.len(), 5);
    for p in &topic.partitions {
        assert_eq!(p.replicas.len(), 2, "{p:?}");
        assert_eq!(p.leader, p.replicas.first().copied());
        assert_eq!(p.isr, p.replicas);
    }
    // New partitions' leaders spread over the brokers as at creation.
    let leaders: std::collections::BTreeSet<_> =
        partitions.iter().filter_map(|p| p.leader).collect();
    assert_eq!(leaders.len(), 3, "{partitions:?}");
    for same_or_fewer in [5, 4, 0] {
        assert_eq!(
            refused(&mut state, create_partitions(same_or_fewer)).name(),
            "PARTITION_COUNT_NOT_INCREASED"
        );
    }
    assert_eq!(
        refused(
            &mut state,
            create_partitions(limits::PARTITIONS_PER_TOPIC_MAX + 1)
        )
        .name(),
        "INVALID_PARTITIONS"
    );
    assert_eq!(
        refused(
            &mut state,
            MetadataCommand::CreatePartitions {
                name: "missing".to_owned(),
                partitions: 3
            }
        )
        .name(),
        "UNKNOWN_TOPIC"
    );
    ok(&mut state, fence(2));
    ok(&mut state, fence(3));
    assert_eq!(
        refused(&mut state, create_partitions(6)).name(),
        "NOT_ENOUGH_BROKERS"
    );
}

#[test]
fn deleting_a_group_forgets_its_offsets_only() {
    let mut state = cluster(1);
    ok(&mut state, create("t", 2, 1));
    for group in ["g", "h"] {
        ok(
            &mut state,
            MetadataCommand::CommitOffsets {
                group: group.to_owned(),
                offsets: (0..2)
                    .map(|partition| OffsetCommit {
                        topic: "t".to_owned(),
                        partition,
                        offset: 7,
                        metadata: String::new(),
                    })
                    .collect(),
                now_ms: 1,
            },
        );
    }
    let delete = |group: &str| MetadataCommand::DeleteGroup {
        group: group.to_owned(),
    };
    assert_eq!(
        ok(&mut state, delete("g")),
        MetadataResponse::GroupDeleted { offsets: 2 }
    );
    assert_eq!(state.group_offsets("g").count(), 0);
    assert_eq!(state.group_offsets("h").count(), 2);
    assert_eq!(
        refused(&mut state, delete("g")).name(),
        "GROUP_ID_NOT_FOUND"
    );
}
