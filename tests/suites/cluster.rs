//! Three brokers founding a cluster on 127.0.0.1: the controller quorum forms over the
//! brokers' QUIC listeners, every broker registers and heartbeats, a controller leader
//! killed with -9 is replaced, the new leader fences the dead broker (a metadata change
//! committed after the failover), and the broker rejoins when it restarts.

use std::time::Duration;

use quiver_sdk::{Acks, ErrorCode, Record};
use quiver_tests::ClientAdmin;
use quiver_tests::{
    Broker, CLUSTER_NODES as NODES, clock_offset_library, eventually, free_ports, start_cluster,
    start_cluster_each,
};
use quiver_wire::cluster::ClusterStatusResponse;

async fn status(broker: &Broker) -> Option<ClusterStatusResponse> {
    let client = quiver_sdk::Client::connect(broker.client_config())
        .await
        .ok()?;
    client.admin().describe_cluster().await.ok()
}

/// The status once `ready` holds for it, polled from `broker`.
async fn wait_for(
    broker: &Broker,
    what: &str,
    ready: impl Fn(&ClusterStatusResponse) -> bool,
) -> ClusterStatusResponse {
    eventually(what, Duration::from_secs(60), || {
        let ready = &ready;
        async move { status(broker).await.filter(|s| ready(s)) }
    })
    .await
}

/// `(leader, replicas)` of every partition of `topic`, as `broker` describes it.
async fn leaders_of(broker: &Broker, topic: &str) -> Vec<(u32, Vec<u32>)> {
    let client = broker.client().await;
    let described = client
        .admin()
        .describe_topic(topic)
        .await
        .expect("describe");
    described
        .partitions
        .iter()
        .map(|p| (p.leader, p.replicas.clone()))
        .collect()
}

/// Creates `topic` through the controller and checks that a second create is refused.
async fn create_once(client: &quiver_sdk::Client, topic: &str, partitions: u32, replicas: u16) {
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new(topic, partitions, replicas))
        .await
        .expect("create through the controller");
    let err = client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new(topic, 1, 1))
        .await
        .expect_err("a second create");
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists), "{err}");
}

/// Waits until `broker` sees a controller leader and all founding brokers active.
async fn wait_formed(broker: &Broker) -> ClusterStatusResponse {
    wait_for(
        broker,
        "a controller leader and three active brokers",
        |s| s.controller_leader.is_some() && (1..=NODES).all(|id| active(s, id)),
    )
    .await
}

fn active(status: &ClusterStatusResponse, id: u32) -> bool {
    status.brokers.iter().any(|b| b.id == id && !b.fenced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_broker_cluster_survives_losing_its_controller_leader() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut brokers = start_cluster(root.path(), &[]);

    let formed = wait_for(
        &brokers[1],
        "a controller leader and three active brokers",
        |s| {
            s.mode == "cluster"
                && s.controller_leader.is_some()
                && s.voters == [1, 2, 3]
                && (1..=NODES).all(|id| active(s, id))
        },
    )
    .await;
    for broker in &brokers {
        let seen = wait_for(broker, "every node sees the same leader", |s| {
            s.controller_leader == formed.controller_leader
        })
        .await;
        assert_eq!(seen.brokers.len(), NODES as usize);
    }

    // Topics go through the controller: created on one node, placed on all three,
    // served by their leader only.
    let client = brokers[1].client().await;
    create_once(&client, "placed", 3, 3).await;
    wait_topic_everywhere(&brokers, "placed").await;
    let err = client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("too-wide", 1, 4))
        .await
        .expect_err("more replicas than brokers");
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    let placed = leaders_of(&brokers[2], "placed").await;
    let mut leaders: Vec<u32> = placed.iter().map(|(leader, _)| *leader).collect();
    leaders.sort_unstable();
    assert_eq!(leaders, [1, 2, 3], "leaders spread round-robin");
    for (_, replicas) in &placed {
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3]);
    }
    let (partition, leader) = placed
        .iter()
        .enumerate()
        .find_map(|(p, (leader, _))| (*leader != 2).then_some((p as u32, *leader)))
        .expect("a partition node 2 does not lead");
    // Node 2 refuses a produce for a partition it does not lead, naming the leader...
    let mut builder =
        quiver_wire::batch::BatchBuilder::new(quiver_wire::batch::ProducerStamp::NONE);
    builder.push(&Record::from_value("x", 0));
    let batch = builder.finish().expect("one record");
    let frame = quiver_wire::message::ProduceRequest {
        topic: "placed".into(),
        partition,
        acks: Acks::Leader,
        timeout_ms: 5_000,
        batch: bytes::BytesMut::from(batch.as_ref()),
    };
    let err = client
        .send_frame(quiver_wire::message::Rpc::encode_frame(&frame))
        .await
        .expect_err("node 2 does not lead it");
    assert_eq!(err.code(), Some(ErrorCode::NotLeader), "{err}");
    assert!(
        err.to_string().contains(&format!("led by node {leader}")),
        "{err}"
    );
    // ...and the SDK, bootstrapped on node 2, finds the leader through the metadata.
    let receipt = client
        .produce(
            "placed",
            partition,
            Acks::Leader,
            &[Record::from_value("x", 0)],
        )
        .await
        .expect("routed to the leader")
        .expect("acks=leader answers");
    assert_eq!(receipt.base_offset, 0);

    // Kill the controller leader; the two others elect a new one, which fences it.
    let old_leader = formed.controller_leader.expect("a leader") as u32;
    let old_index = (old_leader - 1) as usize;
    brokers[old_index].kill9();
    let survivor_index = (old_index + 1) % NODES as usize;
    let after = wait_for(
        &brokers[survivor_index],
        "a new controller leader fencing the old one",
        |s| {
            s.controller_leader
                .is_some_and(|l| l != u64::from(old_leader))
                && s.brokers.iter().any(|b| b.id == old_leader && b.fenced)
        },
    )
    .await;
    assert!(
        after.term > formed.term,
        "a new term: {after:?} after {formed:?}"
    );
    // The partitions it led moved to the other replicas, and it left every ISR.
    let survivor_client = brokers[survivor_index].client().await;
    let moved = eventually(
        "its partitions led by others",
        Duration::from_secs(30),
        || {
            let client = survivor_client.clone();
            async move {
                let topic = client.admin().describe_topic("placed").await.ok()?;
                topic
                    .partitions
                    .iter()
                    .all(|p| p.leader != old_leader && !p.isr.contains(&old_leader))
                    .then_some(topic)
            }
        },
    )
    .await;
    assert_eq!(moved.partitions.len(), 3);

    // Back from the dead, it registers again and is unfenced.
    brokers[old_index].restart();
    let rejoined = wait_for(
        &brokers[survivor_index],
        "the restarted broker active again",
        |s| active(s, old_leader),
    )
    .await;
    let epoch_before = formed
        .brokers
        .iter()
        .find(|b| b.id == old_leader)
        .map(|b| b.broker_epoch);
    let epoch_after = rejoined
        .brokers
        .iter()
        .find(|b| b.id == old_leader)
        .map(|b| b.broker_epoch);
    assert!(
        epoch_after > epoch_before,
        "a restart registers with a new broker epoch"
    );
    let restarted = wait_for(
        &brokers[old_index],
        "the restarted node follows the leader",
        |s| s.controller_leader == rejoined.controller_leader,
    )
    .await;
    assert_eq!(restarted.voters, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_is_a_one_member_quorum_on_the_cluster_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let first = status(&broker).await.expect("status");
    assert_eq!(first.mode, "cluster");
    assert_eq!(first.voters, [1]);
    assert_eq!(first.controller_leader, Some(1), "it leads its own quorum");
    assert!(
        active(&first, 1),
        "registered before it answered: {first:?}"
    );
    let out = broker.cli(&["cluster", "status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("controller leader: node 1"), "{text}");

    // The controller's RPCs are for brokers (a certificate from the cluster's CA): a
    // client cannot add a voter to this quorum, nor fetch as a replica.
    let client = broker.client().await;
    let err = client
        .call(&quiver_wire::cluster::ControllerRpcRequest {
            payload: bytes::Bytes::from_static(b"{}"),
        })
        .await
        .expect_err("a client is no broker");
    assert_eq!(
        err.code(),
        Some(ErrorCode::ClusterAuthorizationFailed),
        "{err}"
    );
    let err = client
        .call(&quiver_wire::plugin::PluginModuleRequest {
            version: "00".into(),
        })
        .await
        .expect_err("a client is no broker");
    assert_eq!(
        err.code(),
        Some(ErrorCode::ClusterAuthorizationFailed),
        "{err}"
    );

    // Topics live in the controller's metadata: a partition has a leader, an epoch and
    // an ISR like any replicated one, and a restart elects it again in a new epoch.
    let client = broker.client().await;
    create_once(&client, "solo", 1, 1).await;
    send_all(&client, "solo", "s", 100).await;
    let described = client
        .admin()
        .describe_topic("solo")
        .await
        .expect("describe");
    let before = described.partitions[0].clone();
    assert_eq!((before.leader, before.isr.clone()), (1, vec![1]));
    broker.kill9();
    broker.restart();
    let client = broker.client().await;
    send_all(&client, "solo", "t", 10).await;
    let after = client
        .admin()
        .describe_topic("solo")
        .await
        .expect("describe");
    let after = &after.partitions[0];
    assert!(
        after.leader_epoch > before.leader_epoch,
        "{after:?} after {before:?}"
    );
    assert_eq!(after.high_watermark, 110);
    let again = status(&broker).await.expect("status");
    assert_eq!(again.voters, [1]);
    assert!(again.term >= first.term);
}

/// The legacy record of one committed offset in `__consumer_offsets`, as brokers
/// before the controller wrote it: `[version:1][group][topic][partition:4]` ->
/// `[offset:8][metadata]`, strings length-prefixed (u16).
fn legacy_offset_record(group: &str, topic: &str, partition: u32, offset: u64) -> Record {
    let mut key = vec![1u8];
    for text in [group, topic] {
        key.extend_from_slice(&(text.len() as u16).to_be_bytes());
        key.extend_from_slice(text.as_bytes());
    }
    key.extend_from_slice(&partition.to_be_bytes());
    let mut value = offset.to_be_bytes().to_vec();
    value.extend_from_slice(&0u16.to_be_bytes());
    Record {
        key: Some(bytes::Bytes::from(key)),
        value: Some(bytes::Bytes::from(value)),
        headers: Vec::new(),
        timestamp: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_without_a_controller_is_adopted_whole() {
    use quiver_wire::plugin::{Attachment, OnError, PluginStage};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new("kept", 2, 1)
                .configs::<String, String>([("retention.ms".into(), "600000".into())]),
        )
        .await
        .expect("create");
    send_all(&client, "kept", "k", 300).await;
    let module = quiver_tests::wat::module(&quiver_tests::wat::filter_filling(255));
    let info = client
        .admin()
        .upload_plugin("keep-all", bytes::Bytes::from(module))
        .await
        .expect("upload");
    client
        .admin()
        .attach_plugin(Attachment {
            topic: "kept".into(),
            plugin: "keep-all".into(),
            stage: PluginStage::Fetch,
            params: Vec::new(),
            on_error: OnError::Fail,
        })
        .await
        .expect("attach");
    // A commit an earlier build kept in the internal offsets topic.
    client
        .produce(
            "__consumer_offsets",
            0,
            Acks::All,
            &[legacy_offset_record("legacy", "kept", 0, 120)],
        )
        .await
        .expect("legacy commit");
    broker.sigterm();
    // What an earlier build left: no controller, no adoption marker.
    std::fs::remove_dir_all(dir.path().join("controller")).expect("drop the controller");
    let marker = dir.path().join("metadata").join("adopted-by-controller");
    std::fs::remove_file(&marker).expect("drop the marker");
    broker.restart();
    assert!(marker.exists(), "adoption is recorded");

    let client = broker.client().await;
    let described = client
        .admin()
        .describe_topic("kept")
        .await
        .expect("topic adopted");
    assert_eq!(described.partitions.len(), 2);
    assert!(
        described
            .configs
            .iter()
            .any(|(k, v)| k == "retention.ms" && v == "600000"),
        "{:?}",
        described.configs
    );
    let values = quiver_tests::fetch_all(&client, "kept", 0, 0).await;
    assert_eq!(values.len(), 300, "every record kept");
    let (plugins, attachments) = client.admin().list_plugins().await.expect("plugins");
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0].version, info.version);
    assert_eq!(attachments.len(), 1);
    let reader = quiver_sdk::Consumer::new(client.clone(), group_config("legacy"));
    let tp = quiver_sdk::TopicPartition::new("kept", 0);
    let committed = reader
        .committed(std::slice::from_ref(&tp))
        .await
        .expect("committed");
    assert_eq!(
        committed,
        vec![(tp, Some(120))],
        "the legacy commit adopted"
    );

    // Adopted once: a topic deleted afterwards stays deleted across a restart.
    client.admin().delete_topic("kept").await.expect("delete");
    broker.sigterm();
    broker.restart();
    let client = broker.client().await;
    let err = client
        .admin()
        .describe_topic("kept")
        .await
        .expect_err("deleted for good");
    assert!(
        err.code() == Some(ErrorCode::UnknownTopic)
            || matches!(err, quiver_sdk::RequestError::Protocol(_)),
        "{err}"
    );
}

/// Three brokers founding a cluster with `env` added; returns them with their data
/// directories under `root`.
/// Checks that every replica holds the leader's log byte for byte, and returns the
/// values stored, in offset order.
async fn identical_logs_and_values(
    brokers: &[Broker],
    leader_index: usize,
    topic: &str,
) -> Vec<String> {
    let reference = log_bytes(&brokers[leader_index], topic);
    for broker in brokers {
        assert!(
            log_bytes(broker, topic) == reference,
            "replicas hold byte-identical logs"
        );
    }
    let client = brokers[leader_index].client().await;
    quiver_tests::fetch_all(&client, topic, 0, 0)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

/// Every byte of a replica's log files, in segment order.
fn log_bytes(broker: &Broker, topic: &str) -> Vec<u8> {
    let mut files = broker.log_files(topic, 0);
    files.sort();
    files
        .iter()
        .flat_map(|f| std::fs::read(f).expect("read segment"))
        .collect()
}

/// Waits until every started broker serves `topic` with a leader for each partition:
/// a create answers once the broker that took it applied it, and the others follow
/// the controller's log a moment later.
async fn wait_topic_everywhere(brokers: &[Broker], topic: &str) {
    for broker in brokers.iter().filter(|b| b.is_started()) {
        eventually(
            "every broker serves the topic",
            Duration::from_secs(60),
            || async {
                let client = quiver_sdk::Client::connect(broker.client_config())
                    .await
                    .ok()?;
                let described = client.admin().describe_topic(topic).await.ok()?;
                described
                    .partitions
                    .iter()
                    .all(|p| p.leader != u32::MAX)
                    .then_some(())
            },
        )
        .await;
    }
}

/// How many replicas of `topic`'s first partition `broker` lists as in sync.
async fn in_sync_replicas(broker: &Broker, topic: &str) -> usize {
    first_partition(broker, topic)
        .await
        .map_or(0, |p| p.isr.len())
}

/// `topic`'s first partition as `broker` describes it; `None` while it cannot.
async fn first_partition(
    broker: &Broker,
    topic: &str,
) -> Option<quiver_wire::message::PartitionInfo> {
    let client = quiver_sdk::Client::connect(broker.client_config())
        .await
        .ok()?;
    let described = client.admin().describe_topic(topic).await.ok()?;
    described.partitions.into_iter().next()
}

/// `(leader, leader epoch, log end, high watermark)` of `topic`'s first partition.
async fn partition_view(broker: &Broker, topic: &str) -> Option<(u32, u32, u64, u64)> {
    let p = first_partition(broker, topic).await?;
    Some((p.leader, p.leader_epoch, p.log_end_offset, p.high_watermark))
}

async fn send_all(client: &quiver_sdk::Client, topic: &str, prefix: &str, count: u32) {
    let producer = quiver_tests::small_batch_producer(client);
    let mut receipts = Vec::new();
    for i in 0..count {
        let record = quiver_sdk::ProducerRecord::new(topic, format!("{prefix}-{i}")).partition(0);
        receipts.push(producer.send(record).await.expect("buffered"));
    }
    for receipt in receipts {
        receipt.await.expect("acknowledged by acks=all");
    }
}

/// Waits until every live broker in `nodes` holds the leader's whole log, replicated.
async fn wait_replicated(brokers: &[Broker], nodes: &[usize], topic: &str, end: u64) {
    for &n in nodes {
        eventually("the replica caught up", Duration::from_secs(60), || async {
            partition_view(&brokers[n], topic)
                .await
                .filter(|(_, _, leo, hw)| *leo == end && *hw == end)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_partition_keeps_every_acknowledged_record_across_a_leader_kill() {
    let root = tempfile::tempdir().expect("tempdir");
    // Long enough that a follower slowed by a loaded machine stays in the ISR (the
    // acks=all sends below must not be refused), short enough for the last phase.
    let mut brokers = start_cluster(root.path(), &[("QUIVER_REPLICA_LAG_MAX_MS", "5000")]);
    wait_formed(&brokers[0]).await;
    let client = brokers[0].client().await;
    client
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new("rep", 1, 3)
                .configs::<String, String>([("min.insync.replicas".into(), "2".into())]),
        )
        .await
        .expect("create");
    wait_topic_everywhere(&brokers, "rep").await;
    let (leader, epoch, _, _) = partition_view(&brokers[0], "rep").await.expect("described");
    let leader_index = (leader - 1) as usize;
    send_all(&brokers[leader_index].client().await, "rep", "first", 3000).await;
    let (_, _, end, _) = partition_view(&brokers[leader_index], "rep")
        .await
        .expect("leader view");
    assert_eq!(end, 3000);
    wait_replicated(&brokers, &[0, 1, 2], "rep", end).await;
    let reference = log_bytes(&brokers[leader_index], "rep");
    for broker in &brokers {
        assert!(
            log_bytes(broker, "rep") == reference,
            "replicas hold byte-identical logs"
        );
    }

    // The leader dies; a follower from the ISR takes over in a new epoch and keeps
    // taking acks=all writes with the two replicas left.
    brokers[leader_index].kill9();
    let survivor = (leader_index + 1) % NODES as usize;
    let (new_leader, new_epoch, _, _) =
        eventually("a new leader", Duration::from_secs(60), || async {
            partition_view(&brokers[survivor], "rep")
                .await
                .filter(|(l, e, _, _)| *l != leader && *l != u32::MAX && *e > epoch)
        })
        .await;
    let new_index = (new_leader - 1) as usize;
    send_all(&brokers[new_index].client().await, "rep", "second", 1000).await;

    // The old leader comes back as a follower and catches up.
    brokers[leader_index].restart();
    wait_replicated(&brokers, &[0, 1, 2], "rep", 4000).await;
    let values = identical_logs_and_values(&brokers, new_index, "rep").await;
    let expected: Vec<String> = (0..3000)
        .map(|i| format!("first-{i}"))
        .chain((0..1000).map(|i| format!("second-{i}")))
        .collect();
    assert_eq!(
        values, expected,
        "every acknowledged record exactly once, in order"
    );
    assert!(new_epoch > epoch);

    // With both followers gone (and the controller quorum with them, so no ISR shrink
    // can commit) no acks=all write is acknowledged: once the leader has not heard
    // from its followers for replica_lag_max it refuses with NOT_ENOUGH_REPLICAS (or,
    // once its lease on the lost quorum runs out, NOT_LEADER), before that the
    // produce waits and times out. All are retriable; none
    // makes anything visible. Leadership may have moved since (on a loaded machine a
    // broker can miss its session timeout and be fenced): find the leader all three
    // agree on now, and keep it.
    let new_index = eventually("an agreed leader", Duration::from_secs(60), || async {
        let mut leaders = Vec::new();
        for broker in brokers.iter() {
            leaders.push(partition_view(broker, "rep").await?.0);
        }
        let first = *leaders.first()?;
        (first != u32::MAX && leaders.iter().all(|l| *l == first)).then_some((first - 1) as usize)
    })
    .await;
    for (i, broker) in brokers.iter_mut().enumerate() {
        if i != new_index {
            broker.kill9();
        }
    }
    let mut config = brokers[new_index].client_config();
    config.request_timeout = Duration::from_secs(3);
    let client = quiver_sdk::Client::connect(config).await.expect("connect");
    // Bounded by time, not attempts: on a loaded machine each attempt may wait out
    // the client's timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    loop {
        let err = client
            .produce("rep", 0, Acks::All, &[Record::from_value("late", 0)])
            .await
            .expect_err("no acks=all without the followers");
        // NOT_LEADER: the leader's lease ran out first (it lost the quorum too).
        if matches!(
            err.code(),
            Some(ErrorCode::NotEnoughReplicas | ErrorCode::NotLeader)
        ) {
            break;
        }
        assert!(
            matches!(
                err.code(),
                Some(ErrorCode::Timeout | ErrorCode::NotEnoughReplicasAfterAppend)
            ) || matches!(err, quiver_sdk::RequestError::Timeout(_)),
            "only a timeout or a refusal after the append may come before NOT_ENOUGH_REPLICAS or NOT_LEADER: {err} (after {seen:?})"
        );
        seen.push(err.to_string());
        assert!(
            std::time::Instant::now() < deadline,
            "the leader never answered NOT_ENOUGH_REPLICAS or NOT_LEADER: {seen:?}"
        );
    }
    // Cut off from the controller quorum, the leader stops acting as one within a
    // session: another broker may be leading the partition by then, so even
    // acks=leader writes are refused (retriable NOT_LEADER). Whatever it took before
    // that stays invisible: the high watermark cannot move without the ISR.
    eventually(
        "the isolated leader refuses acks=leader",
        Duration::from_secs(60),
        || async {
            match client
                .produce(
                    "rep",
                    0,
                    Acks::Leader,
                    &[Record::from_value("leader-only", 0)],
                )
                .await
            {
                Err(e) if e.code() == Some(ErrorCode::NotLeader) => Some(()),
                _ => None,
            }
        },
    )
    .await;
    let (_, _, _, high_watermark) = partition_view(&brokers[new_index], "rep")
        .await
        .expect("leader view");
    assert_eq!(
        high_watermark, 4000,
        "the unacknowledged record is not visible"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_leaves_the_isr_and_rejoins_when_it_resumes() {
    let root = tempfile::tempdir().expect("tempdir");
    let brokers = start_cluster(root.path(), &[("QUIVER_REPLICA_LAG_MAX_MS", "1500")]);
    wait_formed(&brokers[0]).await;
    let client = brokers[0].client().await;
    client
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new("paused", 1, 3)
                .configs::<String, String>([("min.insync.replicas".into(), "2".into())]),
        )
        .await
        .expect("create");
    wait_topic_everywhere(&brokers, "paused").await;
    let (leader, _, _, _) = partition_view(&brokers[0], "paused")
        .await
        .expect("described");
    let leader_index = (leader - 1) as usize;
    let follower_index = (leader_index + 1) % NODES as usize;
    let follower = follower_index as u32 + 1;
    let leader_client = brokers[leader_index].client().await;
    send_all(&leader_client, "paused", "before", 500).await;
    // Healthy: every broker reads 0 (each partition counts only on its leader).
    let under_replicated =
        |b: &Broker| b.metric("quiver_under_replicated_partitions{topic=\"paused\"}");
    eventually(
        "a healthy topic reads 0 everywhere",
        Duration::from_secs(30),
        || {
            let all_zero = brokers.iter().all(|b| under_replicated(b) == 0.0);
            async move { all_zero.then_some(()) }
        },
    )
    .await;

    brokers[follower_index].sigstop();
    // acks=all keeps working with the two others once the ISR drops the paused one.
    send_all(&leader_client, "paused", "during", 500).await;
    let isr = |c: quiver_sdk::Client| async move {
        let described = c.admin().describe_topic("paused").await.ok()?;
        Some(described.partitions.first()?.isr.clone())
    };
    eventually(
        "the paused follower out of the ISR",
        Duration::from_secs(60),
        || {
            let c = leader_client.clone();
            async move { isr(c).await.filter(|isr| !isr.contains(&follower)) }
        },
    )
    .await;
    // The leader reports the partition; the other running follower does not.
    eventually(
        "the leader reports it under-replicated",
        Duration::from_secs(30),
        || {
            let v = under_replicated(&brokers[leader_index]);
            async move { (v == 1.0).then_some(()) }
        },
    )
    .await;
    let other = 3 - leader_index - follower_index;
    assert_eq!(under_replicated(&brokers[other]), 0.0);

    brokers[follower_index].sigcont();
    eventually(
        "the follower back in the ISR",
        Duration::from_secs(60),
        || {
            let c = leader_client.clone();
            async move { isr(c).await.filter(|isr| isr.len() == 3) }
        },
    )
    .await;
    wait_replicated(&brokers, &[0, 1, 2], "paused", 1000).await;
    eventually(
        "healthy again: 0 everywhere",
        Duration::from_secs(30),
        || {
            let all_zero = brokers.iter().all(|b| under_replicated(b) == 0.0);
            async move { all_zero.then_some(()) }
        },
    )
    .await;
    let reference = log_bytes(&brokers[leader_index], "paused");
    assert!(log_bytes(&brokers[follower_index], "paused") == reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_keeps_exactly_once_while_the_leader_is_killed_ten_times() {
    const KILLS: usize = 10;
    let root = tempfile::tempdir().expect("tempdir");
    let mut brokers = start_cluster(
        root.path(),
        &[
            ("QUIVER_REPLICA_LAG_MAX_MS", "2000"),
            ("QUIVER_BROKER_SESSION_TIMEOUT_MS", "2000"),
        ],
    );
    wait_formed(&brokers[0]).await;
    let admin = brokers[0].client().await;
    admin
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new("chaos", 1, 3)
                .configs::<String, String>([("min.insync.replicas".into(), "2".into())]),
        )
        .await
        .expect("create");
    wait_topic_everywhere(&brokers, "chaos").await;

    // A producer bootstrapped on node 1 that keeps sending until told to stop; the SDK
    // follows the leader through metadata and retries what failed.
    let mut config = brokers[0].client_config();
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(5);
    let client = quiver_sdk::Client::connect(config).await.expect("connect");
    let producer = quiver_sdk::Producer::new(
        client,
        quiver_sdk::ProducerConfig::default()
            .acks(Acks::All)
            .linger(Duration::from_millis(2))
            .batch_bytes(2 * 1024)
            .delivery_timeout(Duration::from_secs(120))
            .retry_backoff(Duration::from_millis(50))
            .retry_backoff_max(Duration::from_millis(500)),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (producer, stop) = (producer.clone(), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            let mut i = 0u64;
            // Bounded in count as well as in time.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 200_000 {
                let record =
                    quiver_sdk::ProducerRecord::new("chaos", format!("k-{i}")).partition(0);
                receipts.push((i, producer.send(record).await.expect("buffered")));
                i += 1;
                if i.is_multiple_of(50) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let mut acknowledged = Vec::new();
            for (i, receipt) in receipts {
                if receipt.await.is_ok() {
                    acknowledged.push(i);
                }
            }
            (i, acknowledged)
        })
    };

    let mut epoch = 0;
    for kill in 0..KILLS {
        let (leader, leader_epoch, _, _) =
            eventually("a leader in a new epoch", Duration::from_secs(60), || {
                let views = brokers
                    .iter()
                    .filter(|b| b.is_started())
                    .collect::<Vec<_>>();
                async move {
                    for broker in views {
                        // Killing a leader whose ISR is itself would leave no broker
                        // to elect (unclean election is off): wait for a follower,
                        // the one restarted last round among them, to be in sync.
                        if let Some(view) = partition_view(broker, "chaos").await
                            && view.0 != u32::MAX
                            && view.1 >= epoch
                            && in_sync_replicas(broker, "chaos").await >= 2
                        {
                            return Some(view);
                        }
                    }
                    None
                }
            })
            .await;
        epoch = leader_epoch + 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let index = (leader - 1) as usize;
        brokers[index].kill9();
        eprintln!("kill {kill}: node {leader} (epoch {leader_epoch})");
        // Back once the others moved on, as a follower that catches up.
        let others: Vec<usize> = (0..NODES as usize).filter(|i| *i != index).collect();
        eventually("leadership moved", Duration::from_secs(60), || {
            let b = &brokers[others[0]];
            async move {
                partition_view(b, "chaos")
                    .await
                    .filter(|(l, e, _, _)| *l != leader && *e > leader_epoch)
            }
        })
        .await;
        brokers[index].restart();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.flush().await;
    let (sent, acknowledged) = sender.await.expect("sender");
    assert!(
        acknowledged.len() > 1_000,
        "only {} of {sent} acknowledged",
        acknowledged.len()
    );

    let (leader, _, end, _) = eventually("a settled leader", Duration::from_secs(60), || async {
        partition_view(&brokers[0], "chaos")
            .await
            .filter(|(l, _, _, _)| *l != u32::MAX)
    })
    .await;
    let leader_index = (leader - 1) as usize;
    let (_, _, end, _) = partition_view(&brokers[leader_index], "chaos")
        .await
        .map_or((0, 0, end, 0), |v| v);
    wait_replicated(&brokers, &[0, 1, 2], "chaos", end).await;
    let stored = identical_logs_and_values(&brokers, leader_index, "chaos").await;
    let mut seen = std::collections::HashSet::new();
    for value in &stored {
        assert!(seen.insert(value.clone()), "{value} stored twice");
    }
    for i in &acknowledged {
        assert!(seen.contains(&format!("k-{i}")), "acknowledged k-{i} lost");
    }
    // Order per producer is kept: stored values are increasing.
    let numbers: Vec<u64> = stored
        .iter()
        .filter_map(|v| v.strip_prefix("k-")?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "records out of order"
    );
    eprintln!(
        "{KILLS} leader kills: {sent} sent, {} acknowledged, {} stored",
        acknowledged.len(),
        stored.len()
    );
}

fn group_config(group: &str) -> quiver_sdk::ConsumerConfig {
    quiver_sdk::ConsumerConfig::default()
        .group(group.to_owned())
        .auto_commit(false)
        .auto_offset_reset(quiver_sdk::OffsetReset::Earliest)
        .session_timeout(Duration::from_millis(1_500))
}

/// The version of plugin `name` and the attachments `broker`'s own registry holds.
async fn registry_of(
    broker: &Broker,
    name: &str,
) -> Option<(String, Vec<quiver_wire::plugin::Attachment>)> {
    let client = quiver_sdk::Client::connect(broker.client_config())
        .await
        .ok()?;
    let (plugins, attachments) = client.admin().list_plugins().await.ok()?;
    let version = plugins.into_iter().find(|p| p.name == name)?.version;
    Some((version, attachments))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_offsets_and_plugins_are_the_clusters_not_one_brokers() {
    use quiver_wire::plugin::{Attachment, OnError, PluginStage};
    let root = tempfile::tempdir().expect("tempdir");
    let mut brokers = start_cluster(root.path(), &[]);
    let formed = wait_formed(&brokers[0]).await;
    let leader_id = formed.controller_leader.expect("a leader") as u32;
    let leader_index = (leader_id - 1) as usize;
    let others: Vec<usize> = (0..NODES as usize).filter(|i| *i != leader_index).collect();
    let (a, b) = (others[0], others[1]);
    let client_a = brokers[a].client().await;
    let client_b = brokers[b].client().await;
    client_a
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("evens", 1, 3))
        .await
        .expect("create evens");
    client_a
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("orders", 2, 3))
        .await
        .expect("create orders");
    wait_topic_everywhere(&brokers, "evens").await;
    wait_topic_everywhere(&brokers, "orders").await;

    // A plugin uploaded on one broker and attached on another runs on every broker:
    // the controller holds its version, and brokers without the module fetch it.
    let module = quiver_tests::wat::module(&quiver_tests::wat::filter_filling(0x55));
    let info = client_a
        .admin()
        .upload_plugin("evens", bytes::Bytes::from(module))
        .await
        .expect("upload on one broker");
    client_b
        .admin()
        .attach_plugin(Attachment {
            topic: "evens".into(),
            plugin: "evens".into(),
            stage: PluginStage::Produce,
            params: Vec::new(),
            on_error: OnError::Fail,
        })
        .await
        .expect("attach on another");
    for broker in &brokers {
        let (version, attachments) = eventually(
            "every broker holds the plugin and its attachment",
            Duration::from_secs(30),
            || async {
                registry_of(broker, "evens")
                    .await
                    .filter(|(_, attachments)| attachments.len() == 1)
            },
        )
        .await;
        assert_eq!(version, info.version);
        assert_eq!(attachments[0].topic, "evens");
    }
    let records: Vec<Record> = (0..10)
        .map(|i| Record::from_value(format!("v{i}"), 0))
        .collect();
    client_b
        .produce("evens", 0, Acks::All, &records)
        .await
        .expect("produce through the leader's plugin");
    // (The bootstrap broker's own view of the end offset moves once it replicated.)
    let kept: Vec<String> = eventually(
        "the records the plugin kept are visible",
        Duration::from_secs(30),
        || async {
            let records = quiver_tests::fetch_all(&client_b, "evens", 0, 0).await;
            (!records.is_empty()).then_some(records)
        },
    )
    .await
    .iter()
    .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
    .collect();
    assert_eq!(kept, ["v0", "v2", "v4", "v6", "v8"]);

    // Two members of one group, bootstrapped on different brokers, share the topic:
    // one coordinator (the controller leader) serves them both.
    for p in 0..2 {
        let values: Vec<Record> = (0..50)
            .map(|i| Record::from_value(format!("p{p}-{i}"), 0))
            .collect();
        client_a
            .produce("orders", p, Acks::All, &values)
            .await
            .expect("produce orders");
    }
    let mut members = [
        quiver_sdk::Consumer::new(client_a.clone(), group_config("g")),
        quiver_sdk::Consumer::new(client_b.clone(), group_config("g")),
    ];
    for m in members.iter_mut() {
        m.subscribe(&["orders"]).expect("subscribe");
    }
    let mut consumed = 0;
    let mut settled = false;
    for _ in 0..400 {
        for m in members.iter_mut() {
            consumed += m.poll(Duration::from_millis(25)).await.expect("poll").len();
        }
        let one_each = members.iter().all(|m| m.assignment().len() == 1);
        let done = members
            .iter()
            .all(|m| m.assignment().iter().all(|tp| m.position(tp) == Some(50)));
        if one_each && done {
            settled = true;
            break;
        }
    }
    assert!(
        settled,
        "two members on different brokers never split the two partitions"
    );
    assert!(consumed >= 100, "{consumed} records consumed");
    for m in members.iter_mut() {
        m.commit_sync()
            .await
            .expect("commit through the coordinator");
    }
    for mut m in members {
        m.close().await.expect("leave the group");
    }

    // The controller leader dies: committed offsets and the registry live on.
    brokers[leader_index].kill9();
    wait_for(&brokers[a], "a new controller leader", |s| {
        s.controller_leader
            .is_some_and(|l| l != u64::from(leader_id))
    })
    .await;
    let tps = [
        quiver_sdk::TopicPartition::new("orders", 0),
        quiver_sdk::TopicPartition::new("orders", 1),
    ];
    let reader = quiver_sdk::Consumer::new(brokers[b].client().await, group_config("g"));
    let committed = eventually(
        "the new coordinator answers the committed offsets",
        Duration::from_secs(30),
        || async { reader.committed(&tps).await.ok() },
    )
    .await;
    assert_eq!(
        committed,
        vec![(tps[0].clone(), Some(50)), (tps[1].clone(), Some(50))],
        "offsets committed before the failover"
    );

    // A new version uploaded while the old leader is down reaches it when it returns,
    // even with the uploader gone by then: an upload is answered once another broker
    // holds the module.
    let replacement = quiver_tests::wat::module(&quiver_tests::wat::filter_filling(255));
    let second = client_b
        .admin()
        .upload_plugin("evens", bytes::Bytes::from(replacement))
        .await
        .expect("upload with two of three brokers");
    assert_ne!(second.version, info.version);
    brokers[b].kill9();
    brokers[leader_index].restart();
    let (version, attachments) = eventually(
        "the restarted broker installs the new version",
        Duration::from_secs(60),
        || async {
            registry_of(&brokers[leader_index], "evens")
                .await
                .filter(|(version, _)| *version == second.version)
        },
    )
    .await;
    assert_eq!(version, second.version);
    assert_eq!(attachments.len(), 1, "attachments survive the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_later_joins_the_running_cluster() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut brokers = start_cluster(root.path(), &[]);
    wait_formed(&brokers[0]).await;

    // Node 4 knows one member only and is not among the founding seeds.
    let dir = root.path().join("node-4");
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    for file in ["ca.pem", "ca.key", "server.pem", "server.key"] {
        std::fs::copy(root.path().join("node-1/tls").join(file), tls.join(file)).expect("copy tls");
    }
    let seed = format!("1@{}", brokers[0].client_config().broker);
    let port = free_ports(1)[0];
    brokers.push(Broker::start_with(
        &dir,
        &[("QUIVER_NODE_ID", "4"), ("QUIVER_SEEDS", seed.as_str())],
        Some(port),
    ));
    let joined = wait_for(&brokers[1], "four voters, four active brokers", |s| {
        s.voters == [1, 2, 3, 4] && (1..=4).all(|id| active(s, id))
    })
    .await;
    assert!(joined.controller_leader.is_some());

    // The new broker takes replicas: four replicas fit now.
    let client = brokers[1].client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("wide", 1, 4))
        .await
        .expect("four replicas on four brokers");
    wait_topic_everywhere(&brokers, "wide").await;
    send_all(&client, "wide", "w", 500).await;
    wait_replicated(&brokers, &[0, 1, 2, 3], "wide", 500).await;
    let values = identical_logs_and_values(&brokers, 1, "wide").await;
    assert_eq!(values.len(), 500);

    // Restarted, it is a voter already and asks nobody.
    brokers[3].sigterm();
    brokers[3].restart();
    let again = wait_for(&brokers[3], "the joined node back in the quorum", |s| {
        s.voters == [1, 2, 3, 4] && active(s, 4) && s.controller_leader.is_some()
    })
    .await;
    assert_eq!(again.brokers.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_another_port_keeps_its_place() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut brokers = start_cluster(root.path(), &[]);
    let formed = wait_formed(&brokers[0]).await;
    let leader = formed.controller_leader.expect("a leader") as usize - 1;
    let moved = (leader + 1) % NODES as usize;
    let moved_id = moved as u32 + 1;

    // The operator moves one node to another port and names it so in its seeds.
    let port = free_ports(1)[0];
    let new_addr = format!("127.0.0.1:{port}");
    let seeds: Vec<String> = brokers
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let at = if i == moved {
                new_addr.clone()
            } else {
                b.quic_addr.to_string()
            };
            format!("{}@{at}", i + 1)
        })
        .collect();
    let seeds = seeds.join(",");
    brokers[moved].restart_moved(port, &[("QUIVER_SEEDS", seeds.as_str())]);
    let status = wait_for(
        &brokers[leader],
        "the moved broker registered at its new port",
        |s| {
            s.brokers
                .iter()
                .any(|b| b.id == moved_id && b.address == new_addr && !b.fenced)
        },
    )
    .await;
    assert_eq!(status.voters, [1, 2, 3]);

    // With the third node down the controller quorum needs the moved node, reached at
    // its new port: metadata changes go on, and its replicas take the writes.
    let current = wait_formed(&brokers[moved]).await;
    let now = current.controller_leader.expect("a leader") as usize - 1;
    let third = (0..NODES as usize)
        .find(|i| *i != moved && *i != now)
        .expect("a third node");
    brokers[third].kill9();
    let client = brokers[moved].client().await;
    eventually(
        "a topic created with one node down",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                match client
                    .admin()
                    .create_topic(quiver_sdk::NewTopic::new("after-move", 1, 2))
                    .await
                {
                    Ok(()) => Some(()),
                    Err(err) if err.code() == Some(ErrorCode::TopicAlreadyExists) => Some(()),
                    Err(_) => None,
                }
            }
        },
    )
    .await;
    for index in [now, moved] {
        eventually(
            "the topic on both live brokers",
            Duration::from_secs(60),
            || async {
                let client = quiver_sdk::Client::connect(brokers[index].client_config())
                    .await
                    .ok()?;
                client
                    .admin()
                    .describe_topic("after-move")
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }
}

/// Partitions added to a replicated topic are placed like a new topic's (leaders
/// spread, every replica in sync) and replicated; configs altered through one broker
/// hold on every broker, whichever leads a partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_partitions_are_replicated_and_altered_configs_hold_on_every_broker() {
    use quiver_sdk::AlterConfigOp;
    let root = tempfile::tempdir().expect("tempdir");
    let brokers = start_cluster(root.path(), &[]);
    wait_formed(&brokers[0]).await;
    let client = brokers[1].client().await;
    create_once(&client, "widening", 1, 3).await;
    wait_topic_everywhere(&brokers, "widening").await;
    let admin = client.admin();
    admin
        .create_partitions("widening", 4)
        .await
        .expect("add partitions");
    admin
        .alter_topic_configs(
            "widening",
            &[AlterConfigOp::set("max.message.bytes", "4096")],
        )
        .await
        .expect("alter");
    let wanted = [("max.message.bytes".to_owned(), "4096".to_owned())];
    for broker in &brokers {
        eventually(
            "four replicated partitions and the new config everywhere",
            Duration::from_secs(60),
            || async {
                let client = quiver_sdk::Client::connect(broker.client_config())
                    .await
                    .ok()?;
                let described = client.admin().describe_topic("widening").await.ok()?;
                (described.configs == wanted
                    && described.partitions.len() == 4
                    && described
                        .partitions
                        .iter()
                        .all(|p| p.leader != u32::MAX && p.isr.len() == 3))
                .then_some(())
            },
        )
        .await;
    }
    let leaders: std::collections::BTreeSet<u32> = leaders_of(&brokers[0], "widening")
        .await
        .into_iter()
        .skip(1)
        .map(|(leader, _)| leader)
        .collect();
    assert_eq!(
        leaders.len(),
        3,
        "new partitions' leaders spread: {leaders:?}"
    );

    // acks=all on every new partition: each is led and followed.
    let producer = quiver_sdk::Producer::new(client.clone(), quiver_sdk::ProducerConfig::default());
    let mut receipts = Vec::new();
    for partition in 1..4 {
        let record = quiver_sdk::ProducerRecord::new("widening", format!("p{partition}"))
            .partition(partition);
        receipts.push(producer.send(record).await.expect("buffered"));
    }
    for receipt in receipts {
        receipt.await.expect("acknowledged by acks=all");
    }
    producer.close().await;
    for broker in &brokers {
        for partition in 1..4 {
            assert!(
                !broker.log_files("widening", partition).is_empty(),
                "{} holds widening/{partition}",
                broker.data_dir.display()
            );
        }
    }
    // The altered limit holds on whichever broker leads each partition.
    let big = Record::from_value(bytes::Bytes::from(vec![b'x'; 8 * 1024]), 1);
    for partition in 0..4 {
        let err = client
            .produce("widening", partition, Acks::All, std::slice::from_ref(&big))
            .await
            .expect_err("past max.message.bytes");
        assert_eq!(
            err.code(),
            Some(ErrorCode::BatchTooLarge),
            "{partition}: {err}"
        );
    }
}

/// Fencing is timed by the controller leader's monotonic clock, not by the brokers'
/// wall clocks. Broker 2's wall clock runs 4 minutes behind and broker 3's an hour
/// ahead (an `LD_PRELOAD` shim). Broker 2 heartbeats and is never fenced; broker 3,
/// killed, is fenced a session later. (When heartbeats carried the broker's clock
/// into the Raft log, broker 2 looked silent for 4 minutes at every heartbeat and was
/// fenced each time, and broker 3's heartbeats, stamped an hour ahead, kept it
/// unfenced for an hour after it died.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_is_timed_by_the_controller_not_by_brokers_wall_clocks() {
    const SESSION_MS: u64 = 2_000;
    let root = tempfile::tempdir().expect("tempdir");
    let library = clock_offset_library(root.path());
    let preload = library.to_str().expect("utf-8 path");
    let session = SESSION_MS.to_string();
    let mut brokers = start_cluster_each(
        root.path(),
        &[("QUIVER_BROKER_SESSION_TIMEOUT_MS", &session)],
        &[
            &[],
            &[
                ("LD_PRELOAD", preload),
                ("QUIVER_TEST_CLOCK_OFFSET_MS", "-240000"),
            ],
            &[
                ("LD_PRELOAD", preload),
                ("QUIVER_TEST_CLOCK_OFFSET_MS", "3600000"),
            ],
        ],
    );
    wait_formed(&brokers[0]).await;

    // Five sessions of watching, from every broker: broker 2 is never fenced.
    let watch_until = std::time::Instant::now() + Duration::from_millis(SESSION_MS * 5);
    let mut looks = 0;
    while std::time::Instant::now() < watch_until {
        for broker in &brokers {
            if let Some(status) = status(broker).await {
                looks += 1;
                assert!(
                    active(&status, 2),
                    "broker 2 (clock 4 min behind) fenced while heartbeating: {status:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(looks > 10, "the cluster answered {looks} status requests");

    // Broker 3 dies: it is fenced within a few sessions, whatever its clock said.
    brokers[2].kill9();
    wait_for(&brokers[0], "broker 3 fenced after it died", |s| {
        s.brokers.iter().any(|b| b.id == 3 && b.fenced)
    })
    .await;
    assert!(active(&status(&brokers[0]).await.expect("status"), 2));
}

/// A produce-stage plugin runs before the partition's replica lock, so a slow one
/// holds up only its own request: the follower fetches of its partition, and other
/// produces to it, go on meanwhile. The plugin spins until its CPU bound (3 s here)
/// on a batch larger than 4 KiB; a small record produced with acks=all half a second
/// after such a batch is acknowledged (replicated by the followers' fetches) while the
/// large batch is still in the plugin. (When the chain ran under the replica lock,
/// the small record waited for the large one's plugin to give up, and so did every
/// follower fetch of the partition.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_produce_stage_plugin_holds_up_neither_follower_fetches_nor_other_produces() {
    const SPIN_ABOVE_BYTES: usize = 4096;
    let root = tempfile::tempdir().expect("tempdir");
    let brokers = start_cluster(root.path(), &[("QUIVER_PLUGIN_CALL_MS_MAX", "3000")]);
    wait_formed(&brokers[0]).await;
    let admin_client = brokers[0].client().await;
    admin_client
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new("spun", 1, 3)
                .configs::<String, String>([("min.insync.replicas".into(), "3".into())]),
        )
        .await
        .expect("create");
    wait_topic_everywhere(&brokers, "spun").await;
    // The keep-every-record filter, spinning first when its input is large.
    let count_line = "(local.set $count (i32.load (local.get $ptr)))";
    let spin = quiver_tests::wat::filter_filling(255).replace(
        count_line,
        &format!(
            "(if (i32.gt_u (local.get $len) (i32.const {SPIN_ABOVE_BYTES})) \
               (then (loop $spin (br $spin)))) {count_line}"
        ),
    );
    assert!(spin.contains("$spin"), "the filter's template changed");
    admin_client
        .admin()
        .upload_plugin("spin", bytes::Bytes::from(quiver_tests::wat::module(&spin)))
        .await
        .expect("upload");
    admin_client
        .admin()
        .attach_plugin(quiver_sdk::Attachment {
            topic: "spun".into(),
            plugin: "spin".into(),
            stage: quiver_sdk::PluginStage::Produce,
            params: Vec::new(),
            on_error: quiver_sdk::OnError::Fail,
        })
        .await
        .expect("attach");
    let (leader, _, _, _) = partition_view(&brokers[0], "spun")
        .await
        .expect("described");
    let leader_client = brokers[(leader - 1) as usize].client().await;
    // Attached everywhere, and small records pass it replicated, before the race.
    eventually(
        "the plugin attached on the leader",
        Duration::from_secs(60),
        || {
            let c = leader_client.clone();
            async move {
                let producer = quiver_tests::small_batch_producer(&c);
                let record = quiver_sdk::ProducerRecord::new("spun", "warm").partition(0);
                let receipt = producer.send(record).await.ok()?;
                receipt.await.ok()
            }
        },
    )
    .await;

    let spinning = quiver_tests::small_batch_producer(&leader_client);
    let large =
        quiver_sdk::ProducerRecord::new("spun", "x".repeat(SPIN_ABOVE_BYTES * 2)).partition(0);
    let large_receipt = tokio::spawn(spinning.send(large).await.expect("buffered"));
    // Long enough for the large batch to reach the plugin; if it were not there yet,
    // the small record would simply pass first and prove nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let producer = quiver_tests::small_batch_producer(&leader_client);
    let small = quiver_sdk::ProducerRecord::new("spun", "small").partition(0);
    producer
        .send(small)
        .await
        .expect("buffered")
        .await
        .expect("the small record acknowledged by all three replicas");
    assert!(
        !large_receipt.is_finished(),
        "the large batch left the plugin before the small record was acknowledged"
    );
    let refused = large_receipt
        .await
        .expect("joined")
        .expect_err("the spinning batch is refused");
    match refused {
        quiver_sdk::ProduceError::Fatal(err) => {
            assert_eq!(err.code(), Some(ErrorCode::PluginFailed), "{err}")
        }
        other => panic!("the spinning batch failed otherwise: {other}"),
    }
}
