//! Three controllers: elections, replication, failover, catch-up, partitions.

mod common;

use common::{TestCluster, addr, create_topic, eventually, register};
use quiver_cluster::{CommandError, MetadataCommand, MetadataResponse, ProposeError};

fn alter_isr(broker: u32, topic: &str, leader_epoch: u32, isr: &[u32]) -> MetadataCommand {
    MetadataCommand::AlterIsr {
        broker_id: broker,
        topic: topic.to_owned(),
        partition: 0,
        leader_epoch,
        isr_version: 0,
        isr: isr.to_vec(),
    }
}

fn elect(topic: &str) -> MetadataCommand {
    MetadataCommand::ElectLeader {
        topic: topic.to_owned(),
        partition: 0,
    }
}

fn follower(cluster: &TestCluster, leader: u64) -> u64 {
    cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_replicate_metadata() {
    let cluster = TestCluster::start(&[1, 2, 3]).await;
    let leader = cluster.leader().await;
    assert_eq!(
        cluster.nodes.values().filter(|n| n.is_leader()).count(),
        1,
        "exactly one leader"
    );
    let status = cluster.node(leader).status();
    assert_eq!(status.voters.len(), 3);
    assert_eq!(status.leader, Some((leader, addr(leader))));

    // Proposals through a follower are forwarded to the leader.
    let via = follower(&cluster, leader);
    for id in 1..=3 {
        cluster
            .propose_via(via, register(id))
            .await
            .expect("registers");
    }
    let created = cluster
        .propose_via(via, create_topic("orders", 1, 3))
        .await
        .expect("creates");
    let MetadataResponse::TopicCreated { partitions } = created else {
        panic!("unexpected answer {created:?}");
    };
    let p = &partitions[0];
    assert_eq!(p.isr.len(), 3);
    let partition_leader = p.leader.expect("a leader");
    let out_of_sync = p.replicas[1];

    // The partition leader shrinks the ISR; an outdated request is refused.
    let shrunk: Vec<u32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != out_of_sync)
        .collect();
    let answer = cluster
        .propose_via(via, alter_isr(partition_leader, "orders", 0, &shrunk))
        .await
        .expect("alters");
    assert!(
        matches!(answer, MetadataResponse::IsrAltered { ref partition, refusal: None } if partition.isr == shrunk)
    );
    let error = cluster
        .propose_via(leader, alter_isr(partition_leader, "orders", 7, &shrunk))
        .await
        .expect_err("an epoch from nowhere");
    assert_eq!(error.name(), "UNKNOWN_LEADER_EPOCH");
    let error = cluster
        .propose_via(leader, alter_isr(out_of_sync, "orders", 0, &p.replicas))
        .await
        .expect_err("only the leader alters the ISR");
    assert_eq!(
        error,
        ProposeError::Rejected(CommandError::NotLeader {
            broker: out_of_sync,
            leader: Some(partition_leader)
        })
    );

    // The preferred replica is in sync: an explicit election keeps it.
    let answer = cluster
        .propose_via(via, elect("orders"))
        .await
        .expect("elects");
    assert!(matches!(
        answer,
        MetadataResponse::LeaderElected { changed: false, .. }
    ));

    // The partition leader's broker is fenced: leadership moves inside the ISR,
    // never to the out-of-sync replica, and the epoch moves.
    cluster
        .propose_via(
            via,
            MetadataCommand::FenceBroker {
                broker_id: partition_leader,
            },
        )
        .await
        .expect("fences");
    // The old leader, in its old epoch, can no longer change the ISR.
    let error = cluster
        .propose_via(via, alter_isr(partition_leader, "orders", 0, &shrunk))
        .await
        .expect_err("stale epoch");
    assert_eq!(error.name(), "FENCED_LEADER_EPOCH");

    let version = cluster.converged().await;
    for node in cluster.nodes.values() {
        let p = node
            .metadata()
            .partition("orders", 0)
            .cloned()
            .expect("exists");
        let new_leader = p.leader.expect("an ISR member took over");
        assert_ne!(new_leader, partition_leader);
        assert_ne!(new_leader, out_of_sync);
        assert_eq!(p.leader_epoch, 1);
        assert!(!p.isr.contains(&partition_leader));
        assert_eq!(node.version(), version);
    }
    for id in [1, 2, 3] {
        cluster.node(id).shutdown().await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_elects_another_and_it_rejoins() {
    let mut cluster = TestCluster::start(&[1, 2, 3]).await;
    let old = cluster.leader().await;
    for id in 1..=3 {
        cluster
            .propose_via(old, register(id))
            .await
            .expect("registers");
    }
    cluster
        .propose_via(old, create_topic("before", 2, 3))
        .await
        .expect("creates");
    cluster.converged().await;

    cluster.crash(old);
    let new = cluster.leader().await;
    assert_ne!(new, old);
    // Metadata changes go on with two of three.
    cluster
        .propose_via(follower(&cluster, new), create_topic("after", 1, 2))
        .await
        .expect("creates with a new leader");
    let answer = cluster
        .propose_via(
            new,
            MetadataCommand::FenceBroker {
                broker_id: old as u32,
            },
        )
        .await
        .expect("fences the dead broker");
    assert!(matches!(answer, MetadataResponse::BrokerFenced { .. }));
    let state = cluster.node(new).metadata();
    for p in &state.topic("before").expect("kept").partitions {
        assert_ne!(p.leader, Some(old as u32));
        assert!(!p.isr.contains(&(old as u32)));
    }

    // The old leader restarts from its directory and catches up from the log.
    cluster.start_node(old).await;
    cluster.converged().await;
    assert!(cluster.node(old).metadata().topic("after").is_some());
    assert!(!cluster.node(old).is_leader());
    for id in [1, 2, 3] {
        cluster.node(id).shutdown().await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_from_a_snapshot() {
    let mut cluster = TestCluster::start_tuned(&[1, 2, 3], |config| {
        config.snapshot_after_entries = 10;
        config.entries_kept_after_snapshot = 0;
    })
    .await;
    let leader = cluster.leader().await;
    let behind = follower(&cluster, leader);
    cluster
        .propose_via(leader, register(1))
        .await
        .expect("registers");
    cluster.converged().await;
    cluster.kill(behind).await;

    // Enough changes that the leader snapshots and purges what `behind` lacks.
    for i in 0..40 {
        cluster
            .propose_via(leader, create_topic(&format!("t{i}"), 1, 1))
            .await
            .expect("creates");
    }
    let leader_dir = cluster.dir(leader);
    eventually("the leader to purge its log", || async {
        leader_dir.join("log").join("purged").exists().then_some(())
    })
    .await;

    cluster.start_node(behind).await;
    cluster.converged().await;
    let state = cluster.node(behind).metadata();
    assert_eq!(state.topics().len(), 40);
    // It got there through a snapshot: its own snapshot file is the leader's.
    assert!(cluster.dir(behind).join("snapshot").exists());
    for id in [1, 2, 3] {
        cluster.node(id).shutdown().await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_is_replaced_and_follows_after_healing() {
    let cluster = TestCluster::start(&[1, 2, 3]).await;
    let old = cluster.leader().await;
    cluster
        .propose_via(old, register(1))
        .await
        .expect("registers");
    cluster.converged().await;

    cluster.network.isolate(old);
    let rest: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != old)
        .collect();
    let new = cluster.leader_among(&rest).await;
    assert_ne!(new, old);
    cluster
        .propose_via(new, create_topic("during", 1, 1))
        .await
        .expect("the majority goes on");
    // The cut-off node cannot commit anything.
    let error = cluster
        .node(old)
        .propose(create_topic("lost", 1, 1))
        .await
        .expect_err("no quorum");
    assert!(error.retriable(), "{error:?}");

    cluster.network.heal(old);
    cluster.converged().await;
    let state = cluster.node(old).metadata();
    assert!(state.topic("during").is_some());
    assert!(state.topic("lost").is_none());
    assert_eq!(cluster.leader().await, new);
    for id in [1, 2, 3] {
        cluster.node(id).shutdown().await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_a_running_controller_later() {
    let mut cluster = TestCluster::start_tuned(&[], |_| {}).await;
    cluster.start_node_with_seeds(1, Vec::new()).await;
    cluster
        .propose_via(1, register(1))
        .await
        .expect("registers");
    // Nodes 2 and 3 know a member but are not founders: they wait to be added.
    for id in [2, 3] {
        cluster.start_node_with_seeds(id, vec![(1, addr(1))]).await;
        assert!(cluster.node(id).leader().is_none());
        cluster
            .node(1)
            .add_voter(id, addr(id))
            .await
            .expect("joins");
    }
    cluster.converged().await;
    assert_eq!(cluster.node(3).status().voters.len(), 3);
    assert!(cluster.node(3).metadata().broker(1).is_some());

    // Three voters now: losing the founder leaves a quorum.
    cluster.kill(1).await;
    let leader = cluster.leader().await;
    assert_ne!(leader, 1);
    cluster
        .propose_via(leader, create_topic("orders", 1, 1))
        .await
        .expect("creates");
    for id in [2, 3] {
        cluster.node(id).shutdown().await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_at_another_address_is_followed_there() {
    let mut cluster = TestCluster::start(&[1, 2, 3]).await;
    let leader = cluster.leader().await;
    for id in 1..=3 {
        cluster
            .propose_via(leader, register(id))
            .await
            .expect("registers");
    }
    let moved = follower(&cluster, leader);
    let new_addr = "127.0.0.1:7499";
    cluster.crash(moved);
    cluster.start_node_moved(moved, new_addr).await;
    // Its new registration names the new address, and reaches the leader as any
    // proposal does (the leader's address did not change).
    cluster
        .propose_via(
            moved,
            MetadataCommand::RegisterBroker {
                broker_id: moved as u32,
                incarnation: 2,
                address: new_addr.to_owned(),
                now_ms: 2_000,
            },
        )
        .await
        .expect("registers at the new address");
    // The broker's membership loop asks on every heartbeat tick; only a leader acts.
    eventually("every node to know the new address", || async {
        for node in cluster.nodes.values() {
            let _ = node.follow_moved_members().await;
        }
        cluster
            .nodes
            .values()
            .all(|n| {
                n.status()
                    .voters
                    .iter()
                    .any(|(id, at)| *id == moved && at == new_addr)
            })
            .then_some(())
    })
    .await;
    // With the third node gone the quorum needs the moved one, at its new address.
    let now = cluster.leader().await;
    let third = (1..=3)
        .find(|id| *id != moved && *id != now)
        .expect("a third node");
    cluster.crash(third);
    cluster
        .propose_via(moved, create_topic("after-move", 1, 2))
        .await
        .expect("commits with the moved node");
    for id in [now, moved] {
        cluster.node(id).shutdown().await.expect("stops");
    }
}

/// Heartbeats reach the leader's failure detector, through a follower too, and
/// write nothing to the Raft log unless they change the metadata; a broker that stops
/// heartbeating is named for fencing by the leader alone, after its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_stay_out_of_the_log_and_silence_is_timed_on_the_leader() {
    const SESSION: std::time::Duration = std::time::Duration::from_millis(400);
    const BEAT: std::time::Duration = std::time::Duration::from_secs(5);
    let cluster = TestCluster::start(&[1, 2, 3]).await;
    let leader = cluster.leader().await;
    let via = follower(&cluster, leader);
    let mut epochs = std::collections::BTreeMap::new();
    for id in 1..=3 {
        match cluster.propose_via(via, register(id)).await {
            Ok(MetadataResponse::BrokerRegistered { broker_epoch, .. }) => {
                epochs.insert(id, broker_epoch);
            }
            other => panic!("registration: {other:?}"),
        }
    }
    // The first heartbeat of a registration is a change (the registration is then
    // known to have been answered): logged once.
    for (&id, &epoch) in &epochs {
        cluster
            .node(via)
            .heartbeat(id, epoch, BEAT)
            .await
            .expect("first heartbeat");
    }
    let version = cluster.converged().await;
    for _ in 0..20 {
        for (&id, &epoch) in &epochs {
            match cluster.node(via).heartbeat(id, epoch, BEAT).await {
                Ok(MetadataResponse::HeartbeatAccepted {
                    unfenced: false, ..
                }) => {}
                other => panic!("heartbeat of broker {id}: {other:?}"),
            }
        }
    }
    assert_eq!(
        cluster.converged().await,
        version,
        "60 heartbeats wrote to the controller's log"
    );

    // A heartbeat of another registration is refused, and changes nothing.
    match cluster.node(via).heartbeat(1, epochs[&1] + 100, BEAT).await {
        Err(ProposeError::Rejected(CommandError::StaleBrokerEpoch { .. })) => {}
        other => panic!("a stale epoch was answered {other:?}"),
    }
    match cluster.node(via).heartbeat(9, 0, BEAT).await {
        Err(ProposeError::Rejected(CommandError::UnknownBroker(9))) => {}
        other => panic!("an unknown broker was answered {other:?}"),
    }

    // Brokers 1 and 2 keep heartbeating, broker 3 falls silent: only the leader
    // names it, once its session has passed.
    let silent = eventually("the silent broker named", || async {
        for id in [1, 2] {
            let _ = cluster.node(via).heartbeat(id, epochs[&id], BEAT).await;
        }
        tokio::time::sleep(SESSION / 4).await;
        let named = cluster.node(leader).brokers_to_fence(SESSION);
        (!named.is_empty()).then_some(named)
    })
    .await;
    assert_eq!(silent, vec![3]);
    assert!(
        cluster.node(via).brokers_to_fence(SESSION).is_empty(),
        "a follower named brokers to fence"
    );

    // Fenced, broker 3's next heartbeat unfences it: a change, so logged.
    cluster
        .propose_via(via, MetadataCommand::FenceBroker { broker_id: 3 })
        .await
        .expect("fenced");
    let fenced_version = cluster.converged().await;
    match cluster.node(via).heartbeat(3, epochs[&3], BEAT).await {
        Ok(MetadataResponse::HeartbeatAccepted { unfenced: true, .. }) => {}
        other => panic!("the fenced broker's heartbeat: {other:?}"),
    }
    assert!(cluster.converged().await > fenced_version);
    assert!(
        cluster
            .node(leader)
            .metadata()
            .broker(3)
            .is_some_and(|b| !b.fenced)
    );
}
