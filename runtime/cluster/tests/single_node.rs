//! One controller: a one-member quorum on the same code path as a cluster.

mod common;

use std::collections::BTreeMap;

use common::{DEADLINE, TestCluster, addr, create_topic, eventually, register};
use quiver_cluster::metadata::OffsetCommit;
use quiver_cluster::{
    CommandError, Controller, MemoryNetwork, MetadataCommand, MetadataResponse, ProposeError,
    StartError,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_starts_proposes_and_restarts_with_state_intact() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("controller");
    let network = MemoryNetwork::new();

    // Production settings, no seeds: the embedded `quiver serve` case.
    let controller = Controller::start(1, &dir, Vec::new(), network.transport(1))
        .await
        .expect("starts");
    eventually("leadership", || async {
        controller.is_leader().then_some(())
    })
    .await;
    assert_eq!(controller.leader().map(|(id, _)| id), Some(1));

    let answer = controller.propose(register(1)).await.expect("registers");
    let MetadataResponse::BrokerRegistered { broker_epoch, .. } = answer else {
        panic!("unexpected answer {answer:?}");
    };
    let answer = controller
        .propose(create_topic("orders", 3, 1))
        .await
        .expect("creates");
    assert!(
        matches!(answer, MetadataResponse::TopicCreated { ref partitions } if partitions.len() == 3)
    );
    let isr = MetadataCommand::AlterIsr {
        broker_id: 1,
        topic: "orders".to_owned(),
        partition: 0,
        leader_epoch: 0,
        isr_version: 0,
        isr: vec![1],
    };
    controller.propose(isr).await.expect("same ISR is accepted");
    let commit = MetadataCommand::CommitOffsets {
        now_ms: 0,
        group: "billing".to_owned(),
        offsets: vec![OffsetCommit {
            topic: "orders".to_owned(),
            partition: 2,
            offset: 42,
            metadata: "m".to_owned(),
        }],
    };
    controller.propose(commit).await.expect("commits");
    let upload = MetadataCommand::UploadPlugin {
        name: "redact".to_owned(),
        version: "ab12".to_owned(),
        kind: "map".to_owned(),
        size_bytes: 10_000,
        uploaded_ms: 5,
    };
    controller.propose(upload).await.expect("uploads");
    let attach = MetadataCommand::AttachPlugin {
        topic: "orders".to_owned(),
        plugin: "redact".to_owned(),
        stage: "fetch".to_owned(),
        params: vec![("field".to_owned(), "card".to_owned())],
        on_error: "pass".to_owned(),
    };
    controller.propose(attach).await.expect("attaches");

    let before = controller.metadata();
    let version = controller.version();
    assert_eq!(before.topic("orders").map(|t| t.partitions.len()), Some(3));
    assert_eq!(
        before
            .committed_offset("billing", "orders", 2)
            .map(|c| c.offset),
        Some(42)
    );
    assert_eq!(before.broker(1).map(|b| b.epoch), Some(broker_epoch));
    controller.shutdown().await.expect("stops");
    assert!(matches!(
        controller.propose(register(2)).await,
        Err(ProposeError::Unavailable(_))
    ));

    // Same directory; now with itself as the only seed, which changes nothing.
    let controller = Controller::start(1, &dir, vec![(1, addr(1))], network.transport(1))
        .await
        .expect("restarts");
    let mut watch = controller.watch();
    tokio::time::timeout(DEADLINE, watch.wait_for(|v| *v >= version))
        .await
        .expect("replays in time")
        .expect("controller alive");
    assert_eq!(*controller.metadata(), *before);
    // And it leads again and takes new changes.
    let answer = controller
        .propose(create_topic("payments", 1, 1))
        .await
        .expect("creates after restart");
    assert!(matches!(answer, MetadataResponse::TopicCreated { .. }));
    assert!(controller.version() > version);
    controller.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_names_its_error_and_changes_nothing() {
    let cluster = TestCluster::start(&[1]).await;
    let node = cluster.node(1);
    cluster
        .propose_via(1, register(1))
        .await
        .expect("registers");
    let before = node.metadata();
    let error = node
        .propose(create_topic("orders", 1, 2))
        .await
        .expect_err("one broker cannot hold two replicas");
    assert_eq!(
        error,
        ProposeError::Rejected(CommandError::NotEnoughBrokers {
            needed: 2,
            available: 1
        })
    );
    assert_eq!(error.name(), "NOT_ENOUGH_BROKERS");
    assert!(error.retriable());
    assert_eq!(*node.metadata(), *before);

    let huge = MetadataCommand::CreateTopic {
        name: "big".to_owned(),
        partitions: 1,
        replication_factor: 1,
        configs: (0..3_000)
            .map(|i| (format!("k{i}"), "v".repeat(4_000)))
            .collect::<BTreeMap<_, _>>(),
    };
    let error = node.propose(huge).await.expect_err("too large for the log");
    assert!(matches!(error, ProposeError::TooLarge { .. }), "{error:?}");
    assert!(!error.retriable());
    node.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_a_restart_starts_from_one() {
    let mut cluster = TestCluster::start_tuned(&[1], |config| {
        config.snapshot_after_entries = 20;
        config.entries_kept_after_snapshot = 0;
    })
    .await;
    let epoch = match cluster.propose_via(1, register(1)).await {
        Ok(MetadataResponse::BrokerRegistered { broker_epoch, .. }) => broker_epoch,
        other => panic!("unexpected {other:?}"),
    };
    for now_ms in 0..100 {
        let heartbeat = MetadataCommand::BrokerHeartbeat {
            broker_id: 1,
            broker_epoch: epoch,
            now_ms: 2_000 + now_ms,
        };
        cluster.propose_via(1, heartbeat).await.expect("heartbeat");
    }
    let dir = cluster.dir(1);
    eventually("a snapshot and a purged log", || async {
        (dir.join("snapshot").exists() && dir.join("log").join("purged").exists()).then_some(())
    })
    .await;
    let before = cluster.node(1).metadata();
    assert_eq!(before.broker(1).map(|b| b.last_heartbeat_ms), Some(2_099));

    cluster.kill(1).await;
    cluster.start_node(1).await;
    let restored = eventually("the state back", || async {
        let state = cluster.node(1).metadata();
        (state.broker(1).map(|b| b.last_heartbeat_ms) == Some(2_099)).then_some(state)
    })
    .await;
    assert_eq!(*restored, *before);
    cluster.kill(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_never_share_a_directory() {
    let cluster = TestCluster::start(&[1]).await;
    let second =
        Controller::start(1, cluster.dir(1), Vec::new(), cluster.network.transport(1)).await;
    match second {
        Err(StartError::Storage { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::WouldBlock)
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a second controller started on a directory in use"),
    }
    cluster.node(1).shutdown().await.expect("stops");
    // Released: a controller starts there again.
    let again = Controller::start(1, cluster.dir(1), Vec::new(), cluster.network.transport(1))
        .await
        .expect("starts once released");
    again.shutdown().await.expect("stops");
}
