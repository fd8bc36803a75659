//! The SDK's `Admin` against a real broker: every call, with the stable codes of its
//! refusals; topic configs altered and partitions added through the CLI and the SDK,
//! observed by the broker, producers and a consumer group.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use quiver_sdk::{
    Acks, Admin, AlterConfigOp, Attachment, Client, Consumer, ConsumerConfig, ErrorCode,
    GroupOffset, NewTopic, OffsetReset, OffsetResetTarget, OnError, PluginStage, ProduceError,
    Producer, ProducerConfig, ProducerRecord, Record, RequestError,
};
use quiver_tests::wat::{filter_filling, module as wat};
use quiver_tests::{Broker, eventually};
use quiver_wire::acl::{
    AclBinding, AclDescribeRequest, Operation, PatternType, Permission, ResourceType,
};

#[track_caller]
fn refused<T: std::fmt::Debug>(outcome: Result<T, RequestError>, code: ErrorCode, what: &str) {
    let err = outcome.expect_err(what);
    assert_eq!(err.code(), Some(code), "{what}: {err}");
}

async fn configs_of(admin: &Admin, topic: &str) -> Vec<(String, String)> {
    admin
        .describe_topic_configs(topic)
        .await
        .expect("describe configs")
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn group_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::default()
        .group(group.to_owned())
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .session_timeout(Duration::from_millis(1_500))
}

/// Polls a consumer at most this many times (100 ms each) waiting for a group change.
const POLLS_MAX: usize = 300;

/// Polls `consumer` until the group has assigned it `partitions` partitions.
async fn poll_until_assigned(consumer: &mut Consumer, partitions: usize) {
    for _ in 0..POLLS_MAX {
        consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll");
        if consumer.assignment().len() == partitions {
            return;
        }
    }
    panic!(
        "assigned {:?}, not {partitions} partitions",
        consumer.assignment()
    );
}

async fn produce(client: &Client, topic: &str, partition: u32, values: &[&str]) {
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record::from_value(Bytes::copy_from_slice(v.as_bytes()), 1))
        .collect();
    client
        .produce(topic, partition, Acks::All, &records)
        .await
        .expect("produce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_call_and_its_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let admin = Admin::connect(broker.client_config())
        .await
        .expect("connect");

    admin
        .create_topic(
            NewTopic::new("orders", 1, 1)
                .partitions(3)
                .config("retention.ms", "600000")
                .configs([("segment.bytes", "1048576")]),
        )
        .await
        .expect("create");
    refused(
        admin.create_topic(NewTopic::new("orders", 1, 1)).await,
        ErrorCode::TopicAlreadyExists,
        "a second create",
    );
    refused(
        admin
            .create_topic(NewTopic::new("fresh", 1, 1).config("retention.millis", "5"))
            .await,
        ErrorCode::InvalidConfig,
        "an unknown key",
    );
    refused(
        admin
            .create_topic(NewTopic::new("fresh", 1, 1).replication_factor(2))
            .await,
        ErrorCode::InvalidRequest,
        "more replicas than brokers",
    );
    let names: Vec<String> = admin
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["orders"]);
    let described = admin.describe_topic("orders").await.expect("describe");
    assert_eq!(described.partitions.len(), 3);
    assert_eq!(
        configs_of(&admin, "orders").await,
        pairs(&[
            ("max.message.bytes", "1048576"),
            ("retention.ms", "600000"),
            ("segment.bytes", "1048576")
        ])
    );
    refused(
        admin.describe_topic("missing").await,
        ErrorCode::UnknownTopic,
        "describe a missing topic",
    );

    // Configs: set and remove at once; every refusal leaves them as they were.
    admin
        .alter_topic_configs(
            "orders",
            &[
                AlterConfigOp::set("max.message.bytes", "65536"),
                AlterConfigOp::delete("segment.bytes"),
            ],
        )
        .await
        .expect("alter");
    let altered = pairs(&[("max.message.bytes", "65536"), ("retention.ms", "600000")]);
    assert_eq!(configs_of(&admin, "orders").await, altered);
    for (ops, what) in [
        (
            vec![AlterConfigOp::set("retention.millis", "1")],
            "an unknown key",
        ),
        (
            vec![AlterConfigOp::set("max.message.bytes", "ten")],
            "a value that is no number",
        ),
        (
            vec![AlterConfigOp::set("segment.bytes", "10")],
            "a segment below the minimum",
        ),
        (
            vec![
                AlterConfigOp::set("retention.ms", "1"),
                AlterConfigOp::set("unclean.leader.election.enable", "maybe"),
            ],
            "one bad value among good ones",
        ),
        (
            vec![
                AlterConfigOp::set("retention.ms", "1"),
                AlterConfigOp::delete("retention.ms"),
            ],
            "a key both set and removed",
        ),
        (
            vec![AlterConfigOp::delete("retention.millis")],
            "removing an unknown key",
        ),
        (Vec::new(), "no change at all"),
    ] {
        refused(
            admin.alter_topic_configs("orders", &ops).await,
            ErrorCode::InvalidConfig,
            what,
        );
        assert_eq!(configs_of(&admin, "orders").await, altered, "{what}");
    }
    refused(
        admin
            .alter_topic_configs("missing", &[AlterConfigOp::set("retention.ms", "1")])
            .await,
        ErrorCode::UnknownTopic,
        "alter a missing topic",
    );

    // Partitions: only more, within the limit.
    admin
        .create_partitions("orders", 5)
        .await
        .expect("add partitions");
    assert_eq!(
        admin
            .describe_topic("orders")
            .await
            .expect("describe")
            .partitions
            .len(),
        5
    );
    for (count, what) in [
        (5, "the same count"),
        (2, "fewer"),
        (10_001, "past the partition limit"),
    ] {
        refused(
            admin.create_partitions("orders", count).await,
            ErrorCode::InvalidPartitions,
            what,
        );
    }
    refused(
        admin.create_partitions("missing", 2).await,
        ErrorCode::UnknownTopic,
        "a missing topic",
    );
    let info = admin.describe_topic("orders").await.expect("describe");
    assert_eq!(info.partitions.len(), 5, "refusals changed nothing");

    let status = admin.describe_cluster().await.expect("describe cluster");
    assert_eq!(status.brokers.len(), 1);

    admin.delete_topic("orders").await.expect("delete");
    refused(
        admin.delete_topic("orders").await,
        ErrorCode::UnknownTopic,
        "delete twice",
    );
    assert!(admin.list_topics().await.expect("list").is_empty());
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_call_and_its_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    let admin = Admin::from_client(client.clone());
    admin
        .create_topic(NewTopic::new("events", 2, 1))
        .await
        .expect("create");
    for partition in 0..2 {
        produce(&client, "events", partition, &["a", "b", "c", "d"]).await;
    }

    // Offsets set from outside the group, listed, and reset.
    admin
        .alter_group_offsets(
            "reports",
            &[
                GroupOffset::new("events", 0, 1),
                GroupOffset::new("events", 1, 2),
            ],
        )
        .await
        .expect("alter offsets");
    let listed = admin.list_group_offsets("reports").await.expect("offsets");
    let at = |offsets: &[GroupOffset]| -> Vec<(u32, u64)> {
        offsets.iter().map(|o| (o.partition, o.offset)).collect()
    };
    assert_eq!(at(&listed), [(0, 1), (1, 2)]);
    let groups = admin.list_groups().await.expect("list groups");
    assert!(
        groups
            .iter()
            .any(|g| g.group == "reports" && g.members == 0),
        "{groups:?}"
    );
    for (target, expected) in [
        (OffsetResetTarget::Latest, [(0, 4), (1, 4)]),
        (OffsetResetTarget::Earliest, [(0, 0), (1, 0)]),
        (OffsetResetTarget::Offset(3), [(0, 3), (1, 3)]),
        (OffsetResetTarget::Timestamp(i64::MAX), [(0, 4), (1, 4)]),
    ] {
        let set = admin
            .reset_group_offsets("reports", "events", target)
            .await
            .expect("reset");
        assert_eq!(at(&set), expected, "{target:?}");
        let listed = admin.list_group_offsets("reports").await.expect("offsets");
        assert_eq!(at(&listed), expected, "{target:?} stored");
    }
    let err = admin
        .reset_group_offsets("reports", "events", OffsetResetTarget::Offset(5))
        .await
        .expect_err("past the high watermark");
    assert!(matches!(err, RequestError::InvalidArgument(_)), "{err}");
    refused(
        admin
            .alter_group_offsets("reports", &[GroupOffset::new("events", 7, 0)])
            .await,
        ErrorCode::UnknownPartition,
        "an offset for a partition that does not exist",
    );

    // A group with an active member: described, and neither deleted nor moved.
    let mut member = Consumer::new(client.clone(), group_config("reports"));
    member.subscribe(&["events"]).expect("subscribe");
    poll_until_assigned(&mut member, 2).await;
    let described = admin.describe_group("reports").await.expect("describe");
    assert_eq!(described.group, "reports");
    assert_eq!(described.members.len(), 1);
    assert_eq!(
        described.members[0]
            .assignment
            .iter()
            .map(|tp| tp.partitions.len())
            .sum::<usize>(),
        2
    );
    refused(
        admin.delete_group("reports").await,
        ErrorCode::GroupNotEmpty,
        "delete with a member",
    );
    refused(
        admin
            .reset_group_offsets("reports", "events", OffsetResetTarget::Earliest)
            .await,
        ErrorCode::GroupNotEmpty,
        "reset with a member",
    );
    assert_eq!(
        at(&admin.list_group_offsets("reports").await.expect("offsets")),
        [(0, 4), (1, 4)],
        "refusals changed nothing"
    );
    member.close().await.expect("close");

    // Without members: deleted, and gone.
    admin.delete_group("reports").await.expect("delete group");
    assert!(
        admin
            .list_group_offsets("reports")
            .await
            .expect("offsets")
            .is_empty()
    );
    assert!(
        !admin
            .list_groups()
            .await
            .expect("list")
            .iter()
            .any(|g| g.group == "reports")
    );
    refused(
        admin.delete_group("reports").await,
        ErrorCode::GroupIdNotFound,
        "delete twice",
    );
    refused(
        admin.delete_group("").await,
        ErrorCode::InvalidGroupId,
        "an empty group id",
    );

    // The CLI's group commands go through the same calls.
    admin
        .alter_group_offsets("nightly", &[GroupOffset::new("events", 0, 2)])
        .await
        .expect("alter offsets");
    let out = broker.cli(&["group", "delete", "nightly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = broker.cli(&["group", "delete", "nightly"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GROUP_ID_NOT_FOUND"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plugin_acl_user_and_quota_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let admin = Admin::from_client(broker.client().await);
    admin
        .create_topic(NewTopic::new("logs", 1, 1))
        .await
        .expect("create");

    // Plugins.
    let info = admin
        .upload_plugin("keep-all", Bytes::from(wat(&filter_filling(255))))
        .await
        .expect("upload");
    assert_eq!(info.name, "keep-all");
    refused(
        admin
            .upload_plugin("broken", Bytes::from_static(b"not a module"))
            .await,
        ErrorCode::InvalidPlugin,
        "a module that is no WebAssembly",
    );
    admin
        .attach_plugin(Attachment {
            topic: "logs".into(),
            plugin: "keep-all".into(),
            stage: PluginStage::Fetch,
            params: Vec::new(),
            on_error: OnError::Fail,
        })
        .await
        .expect("attach");
    let (plugins, attachments) = admin.list_plugins().await.expect("list plugins");
    assert_eq!(plugins.len(), 1);
    assert_eq!(attachments.len(), 1);
    refused(
        admin.delete_plugin("keep-all").await,
        ErrorCode::PluginInUse,
        "delete while attached",
    );
    admin
        .detach_plugin("logs", "keep-all")
        .await
        .expect("detach");
    admin.delete_plugin("keep-all").await.expect("delete");
    refused(
        admin.delete_plugin("keep-all").await,
        ErrorCode::UnknownPlugin,
        "delete twice",
    );

    // ACLs.
    let rule = AclBinding {
        principal: "User:alice".into(),
        resource_type: ResourceType::Topic,
        pattern: PatternType::Literal,
        resource_name: "logs".into(),
        operation: Operation::Read,
        permission: Permission::Allow,
    };
    admin
        .create_acls(vec![rule.clone()])
        .await
        .expect("create acls");
    assert_eq!(
        admin
            .describe_acls(AclDescribeRequest::default())
            .await
            .expect("describe acls"),
        std::slice::from_ref(&rule)
    );
    assert_eq!(
        admin.delete_acls(vec![rule.clone()]).await.expect("delete"),
        1
    );
    assert_eq!(admin.delete_acls(vec![rule]).await.expect("delete"), 0);

    // Users.
    admin
        .upsert_user("alice", "a long enough password", 4096)
        .await
        .expect("upsert");
    assert_eq!(
        admin.list_users().await.expect("users"),
        [("alice".to_owned(), 4096)]
    );
    admin.delete_user("alice").await.expect("delete user");
    assert!(admin.list_users().await.expect("users").is_empty());
    refused(
        admin.delete_user("alice").await,
        ErrorCode::InvalidRequest,
        "delete a missing user",
    );

    // Quotas.
    let quota = quiver_wire::quota::Quota {
        produce_bytes_per_sec: Some(1 << 20),
        ..Default::default()
    };
    admin.set_quota("User:alice", quota).await.expect("set");
    assert_eq!(
        admin.list_quotas().await.expect("quotas"),
        [("User:alice".to_owned(), quota)]
    );
    admin
        .set_quota("User:alice", Default::default())
        .await
        .expect("remove");
    assert!(admin.list_quotas().await.expect("quotas").is_empty());
}

/// `max.message.bytes` altered on a topic bounds the batches the broker takes from
/// then on, for raw produces and for producers that learn the topic's metadata;
/// the change survives a restart, and an unknown key changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_config_takes_effect_for_producers_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    let admin = Admin::from_client(client.clone());
    admin
        .create_topic(NewTopic::new("metered", 1, 1))
        .await
        .expect("create");
    let big = Record::from_value(Bytes::from(vec![b'x'; 8 * 1024]), 1);
    client
        .produce("metered", 0, Acks::All, std::slice::from_ref(&big))
        .await
        .expect("8 KiB fits the default limit");

    let out = broker.cli(&[
        "topic",
        "alter",
        "metered",
        "--config",
        "max.message.bytes=4096",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("max.message.bytes=4096"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    refused(
        client
            .produce("metered", 0, Acks::All, std::slice::from_ref(&big))
            .await,
        ErrorCode::BatchTooLarge,
        "8 KiB past the altered limit",
    );
    client
        .produce(
            "metered",
            0,
            Acks::All,
            &[Record::from_value(Bytes::from(vec![b'y'; 1024]), 1)],
        )
        .await
        .expect("1 KiB fits");
    // A producer learns the limit from the topic's metadata and refuses the record
    // before sending it.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let refused_send = producer
        .send(ProducerRecord::new("metered", vec![b'z'; 8 * 1024]))
        .await;
    assert!(
        matches!(
            refused_send,
            Err(ProduceError::RecordTooLarge { limit: 4096, .. })
        ),
        "{:?}",
        refused_send.as_ref().err()
    );
    producer.close().await;

    // An unknown key or a bad value: one clear line with the code, nothing changed.
    for bad in ["max.message.byte=1", "max.message.bytes=-5"] {
        let out = broker.cli(&["topic", "alter", "metered", "--config", bad]);
        assert!(!out.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("INVALID_CONFIG"), "{bad}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let described = broker.cli(&["topic", "describe", "metered"]);
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(text.contains("configs: max.message.bytes=4096\n"), "{text}");
    eventually("the audit line", Duration::from_secs(10), || async {
        let log = broker.stderr();
        log.lines()
            .any(|l| {
                l.contains("quiver::audit")
                    && l.contains("topic_alter_configs")
                    && l.contains("principal")
                    && l.contains("max.message.bytes=4096")
            })
            .then_some(())
    })
    .await;

    client.close().await;
    broker.sigterm();
    broker.restart();
    let client = broker.client().await;
    assert_eq!(
        configs_of(&Admin::from_client(client.clone()), "metered").await,
        pairs(&[("max.message.bytes", "4096")])
    );
    refused(
        client
            .produce("metered", 0, Acks::All, std::slice::from_ref(&big))
            .await,
        ErrorCode::BatchTooLarge,
        "the limit holds after a restart",
    );
}

/// Partitions added with `quiver topic add-partitions` get records from a producer
/// once it refreshes the topic's metadata, and a consumer group is assigned them and
/// reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_partitions_reach_producers_and_a_consumer_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    let admin = Admin::from_client(client.clone());
    admin
        .create_topic(NewTopic::new("growing", 2, 1))
        .await
        .expect("create");
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .metadata_max_age(Duration::from_millis(200))
            .linger(Duration::ZERO),
    );
    let mut consumer = Consumer::new(client.clone(), group_config("growers"));
    consumer.subscribe(&["growing"]).expect("subscribe");
    poll_until_assigned(&mut consumer, 2).await;

    // Refusals first: the count only grows.
    for count in ["2", "1"] {
        let out = broker.cli(&["topic", "add-partitions", "growing", "--partitions", count]);
        assert!(!out.status.success(), "{count}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("INVALID_PARTITIONS"), "{count}: {stderr}");
    }
    let out = broker.cli(&["topic", "add-partitions", "growing", "--partitions", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let described = broker.cli(&["topic", "describe", "growing"]);
    let text = String::from_utf8_lossy(&described.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .count(),
        4,
        "{text}"
    );

    // Keyed records spread over all four partitions once the producer asked again.
    let mut landed = BTreeSet::new();
    for round in 0..200u32 {
        let mut deliveries = Vec::new();
        for key in 0..64u32 {
            let record =
                ProducerRecord::new("growing", format!("v{round}-{key}")).key(format!("k{key}"));
            deliveries.push(producer.send(record).await.expect("send"));
        }
        for delivery in deliveries {
            landed.insert(delivery.await.expect("delivered").partition);
        }
        if landed.contains(&2) && landed.contains(&3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        landed.contains(&2) && landed.contains(&3),
        "records landed only in {landed:?}"
    );
    producer.close().await;

    // The group member is assigned the new partitions and reads what landed there.
    let mut read = BTreeSet::new();
    for _ in 0..POLLS_MAX {
        for record in consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll")
        {
            read.insert(record.partition);
        }
        if read.contains(&2) && read.contains(&3) {
            break;
        }
    }
    assert!(
        read.contains(&2) && read.contains(&3),
        "read only from {read:?}"
    );
    assert_eq!(consumer.assignment().len(), 4);
    consumer.close().await.expect("close");
}
