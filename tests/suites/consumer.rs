//! The SDK consumer and consumer groups against real brokers: committed offsets across
//! a restart, group assignment and failover, fencing, seek by timestamp, and the CLI's
//! group commands.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quiver_sdk::{
    Acks, Client, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode, OffsetReset, Record,
    TopicPartition,
};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, eventually};
use quiver_wire::group::{
    CommittedOffset, DescribeGroupRequest, GroupHeartbeatRequest, OffsetCommitRequest,
};

fn group_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::default()
        .group(group.to_owned())
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .session_timeout(Duration::from_millis(1_500))
}

async fn produce_values(
    client: &Client,
    topic: &str,
    partition: u32,
    values: impl IntoIterator<Item = String>,
) {
    let records: Vec<Record> = values
        .into_iter()
        .map(|v| Record::from_value(v, 1_000))
        .collect();
    for chunk in records.chunks(200) {
        client
            .produce(topic, partition, Acks::All, chunk)
            .await
            .expect("produce");
    }
}

/// Polls until `n` records arrived (bounded).
async fn poll_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    for _ in 0..200 {
        if out.len() >= n {
            break;
        }
        out.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    assert!(out.len() >= n, "expected {n} records, got {}", out.len());
    out
}

fn value(r: &ConsumerRecord) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("resume", 1, 1))
        .await
        .expect("create");
    produce_values(&client, "resume", 0, (0..100).map(|i| format!("r{i}"))).await;

    let mut first = Consumer::new(client.clone(), group_config("g-resume"));
    first.subscribe(&["resume"]).expect("subscribe");
    first.set_max_poll_records(40);
    let got = poll_n(&mut first, 40).await;
    assert_eq!(got.len(), 40);
    assert_eq!(got[0].offset, 0);
    first.commit_sync().await.expect("commit");
    let tp = TopicPartition::new("resume", 0);
    assert_eq!(
        first
            .committed(std::slice::from_ref(&tp))
            .await
            .expect("committed"),
        vec![(tp.clone(), Some(40))]
    );
    drop(first);

    broker.sigterm();
    broker.restart();
    let client = broker.client().await;
    let mut second = Consumer::new(client.clone(), group_config("g-resume"));
    second.subscribe(&["resume"]).expect("subscribe");
    let rest = poll_n(&mut second, 60).await;
    assert_eq!(rest[0].offset, 40, "resumes at the committed offset");
    assert_eq!(value(&rest[0]), "r40");
    assert_eq!(rest.len(), 60);
    second.close().await.expect("close");
}

/// Runs `consumer` until it has seen every partition's end or `rounds` polls passed;
/// returns what it got.
async fn drain(consumer: &mut Consumer, rounds: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        out.extend(
            consumer
                .poll(Duration::from_millis(100))
                .await
                .expect("poll"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shares_partitions_and_takes_over_from_a_dead_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("shared", 6, 1))
        .await
        .expect("create");
    for p in 0..6 {
        produce_values(&client, "shared", p, (0..100).map(|i| format!("p{p}-{i}"))).await;
    }
    let mut members: Vec<Consumer> = (0..3)
        .map(|_| {
            let mut c = Consumer::new(client.clone(), group_config("g-shared"));
            c.subscribe(&["shared"]).expect("subscribe");
            c.set_max_poll_records(10);
            // While the group settles a member may read from partitions it then hands
            // over; committing them on the way out is what keeps the next owner from
            // reading them again.
            c.set_rebalance_listener(CommitOnRevoke);
            c
        })
        .collect();
    // Poll all three until the assignment settles: each partition with exactly one.
    let mut consumed: Vec<Vec<ConsumerRecord>> = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut settled = false;
    for _ in 0..200 {
        for (i, m) in members.iter_mut().enumerate() {
            consumed[i].extend(m.poll(Duration::from_millis(20)).await.expect("poll"));
        }
        let sets: Vec<BTreeSet<TopicPartition>> = members
            .iter()
            .map(|m| m.assignment().into_iter().collect())
            .collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<&TopicPartition> = sets.iter().flatten().collect();
        if total == 6 && union.len() == 6 && sets.iter().all(|s| s.len() == 2) {
            settled = true;
            break;
        }
    }
    assert!(
        settled,
        "three members never settled on two partitions each"
    );
    // Everyone commits what it consumed so far; the third member then reads more
    // without committing and dies.
    for m in members.iter_mut() {
        m.commit_sync().await.expect("commit");
    }
    let dead_committed: BTreeMap<TopicPartition, u64> = members[2]
        .assignment()
        .into_iter()
        .map(|tp| {
            let p = members[2].position(&tp).unwrap_or(0);
            (tp, p)
        })
        .collect();
    consumed[2].extend(drain(&mut members[2], 3).await);
    let dead_position: BTreeMap<TopicPartition, u64> = dead_committed
        .keys()
        .map(|tp| (tp.clone(), members[2].position(tp).unwrap_or(0)))
        .collect();
    let dead = members.pop().expect("three members");
    drop(dead);

    // The survivors take everything over after the session timeout and read to the end.
    let mut rounds = 0;
    loop {
        for (i, m) in members.iter_mut().enumerate() {
            consumed[i].extend(m.poll(Duration::from_millis(50)).await.expect("poll"));
        }
        let owned: usize = members.iter().map(|m| m.assignment().len()).sum();
        let done = owned == 6
            && members
                .iter()
                .all(|m| m.assignment().iter().all(|tp| m.position(tp) == Some(100)));
        if done {
            break;
        }
        rounds += 1;
        assert!(rounds < 600, "survivors never took over and finished");
    }
    let mut seen: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for r in consumed.iter().flatten() {
        *seen.entry((r.partition, r.offset)).or_default() += 1;
    }
    for p in 0..6u32 {
        for o in 0..100u64 {
            let count = seen.get(&(p, o)).copied().unwrap_or(0);
            assert!(count >= 1, "partition {p} offset {o} was skipped");
            let tp = TopicPartition::new("shared", p);
            let redelivery_allowed = match (dead_committed.get(&tp), dead_position.get(&tp)) {
                (Some(committed), Some(position)) => o >= *committed && o < *position,
                _ => false,
            };
            if !redelivery_allowed {
                assert_eq!(
                    count, 1,
                    "partition {p} offset {o} delivered {count} times though it was committed"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_member_cannot_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("fence", 1, 1))
        .await
        .expect("create");
    let join = client
        .call(&GroupHeartbeatRequest {
            group: "g-fence".into(),
            member_id: String::new(),
            member_epoch: 0,
            // Long enough that the two commits below land before it expires on a
            // loaded machine (each is a controller write with an fsync).
            session_timeout_ms: 3_000,
            subscription: Some(vec!["fence".into()]),
            owned: Vec::new(),
        })
        .await
        .expect("join");
    let commit = |epoch: i32| OffsetCommitRequest {
        group: "g-fence".into(),
        member_id: join.member_id.clone(),
        member_epoch: epoch,
        offsets: vec![CommittedOffset {
            topic: "fence".into(),
            partition: 0,
            offset: 0,
            metadata: String::new(),
        }],
    };
    client
        .call(&commit(join.member_epoch))
        .await
        .expect("a live member commits");
    let stale = client
        .call(&commit(join.member_epoch - 1))
        .await
        .expect_err("stale epoch");
    assert_eq!(stale.code(), Some(ErrorCode::StaleMemberEpoch));
    // It stops heartbeating; once its session expires it is a zombie.
    eventually(
        "the member's session expires",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move {
                let described = client
                    .call(&DescribeGroupRequest {
                        group: "g-fence".into(),
                    })
                    .await
                    .ok()?;
                described.members.is_empty().then_some(())
            }
        },
    )
    .await;
    let zombie = client
        .call(&commit(join.member_epoch))
        .await
        .expect_err("zombie commit");
    assert_eq!(zombie.code(), Some(ErrorCode::UnknownMemberId));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_to_timestamp_lands_on_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("times", 1, 1))
        .await
        .expect("create");
    for i in 0..50i64 {
        let record = Record::from_value(format!("t{i}"), 10_000 + i * 1_000);
        client
            .produce("times", 0, Acks::All, &[record])
            .await
            .expect("produce");
    }
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default().auto_commit(false));
    let tp = TopicPartition::new("times", 0);
    consumer.assign([tp.clone()]);
    let position = consumer.seek_to_timestamp(&tp, 22_500).await.expect("seek");
    assert_eq!(
        position, 13,
        "record 13 is the first with timestamp >= 22500 (23000)"
    );
    let records = poll_n(&mut consumer, 1).await;
    assert_eq!(records[0].offset, 13);
    assert_eq!(records[0].timestamp, 23_000);
    assert_eq!(
        consumer.seek_to_timestamp(&tp, 10_000).await.expect("seek"),
        0
    );
    assert_eq!(
        consumer
            .seek_to_timestamp(&tp, 99_000_000)
            .await
            .expect("seek"),
        50,
        "past the end"
    );
    consumer.seek(&tp, 7).expect("seek");
    assert_eq!(poll_n(&mut consumer, 1).await[0].offset, 7);
    consumer.seek(&tp, 0).expect("seek");
    consumer.pause(std::slice::from_ref(&tp));
    assert!(
        consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll")
            .is_empty(),
        "paused"
    );
    assert_eq!(
        consumer.position(&tp),
        Some(0),
        "pausing keeps the position"
    );
    consumer.resume(std::slice::from_ref(&tp));
    assert_eq!(poll_n(&mut consumer, 1).await[0].offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reset_offsets_is_what_the_next_group_consumer_sees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("cli-groups", 1, 1))
        .await
        .expect("create");
    produce_values(&client, "cli-groups", 0, (0..50).map(|i| format!("v{i}"))).await;

    // The CLI consumes in a group and commits what it printed.
    let out = broker.cli(&[
        "consume",
        "cli-groups",
        "--group",
        "g-cli",
        "--from-beginning",
        "--count",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 30);
    assert_eq!(lines[0], "v0");
    let out = broker.cli(&["consume", "cli-groups", "--group", "g-cli", "--count", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("v30"),
        "resumes after the commit"
    );

    let described = broker.cli(&["group", "describe", "g-cli"]);
    assert!(described.status.success());
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(
        text.contains("cli-groups\t0\t35\t50\t15"),
        "committed 35, end 50, lag 15:\n{text}"
    );
    let listed = broker.cli(&["group", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("g-cli"));

    let reset = broker.cli(&[
        "group",
        "reset-offsets",
        "g-cli",
        "--topic",
        "cli-groups",
        "--to-offset",
        "10",
    ]);
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let mut consumer = Consumer::new(client.clone(), group_config("g-cli"));
    consumer.subscribe(&["cli-groups"]).expect("subscribe");
    let records = poll_n(&mut consumer, 1).await;
    assert_eq!(
        records[0].offset, 10,
        "the next consumer starts where reset-offsets put the group"
    );

    // While a member is active, a reset is refused.
    let refused = broker.cli(&[
        "group",
        "reset-offsets",
        "g-cli",
        "--topic",
        "cli-groups",
        "--to-earliest",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("active members"));
    consumer.close().await.expect("close");
    let bad = broker.cli(&[
        "group",
        "reset-offsets",
        "g-cli",
        "--topic",
        "cli-groups",
        "--to-offset",
        "999",
    ]);
    assert!(!bad.status.success(), "an offset past the end is refused");
}

/// Commits what the application read from partitions it is about to lose.
struct CommitOnRevoke;

impl quiver_sdk::RebalanceListener for CommitOnRevoke {
    fn on_partitions_revoked(
        &mut self,
        _revoked: &[TopicPartition],
        positions: &BTreeMap<TopicPartition, u64>,
    ) -> Vec<(TopicPartition, u64)> {
        positions.iter().map(|(tp, p)| (tp.clone(), *p)).collect()
    }
}

/// Records the rebalance callbacks it receives.
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl quiver_sdk::RebalanceListener for Recorder {
    fn on_partitions_revoked(
        &mut self,
        revoked: &[TopicPartition],
        positions: &BTreeMap<TopicPartition, u64>,
    ) -> Vec<(TopicPartition, u64)> {
        let mut log = self.0.lock().expect("lock");
        for tp in revoked {
            log.push(format!("revoked {tp} at {:?}", positions.get(tp)));
        }
        Vec::new()
    }

    fn on_partitions_assigned(
        &mut self,
        assigned: &[TopicPartition],
        _: &mut quiver_sdk::Rebalance,
    ) {
        let mut log = self.0.lock().expect("lock");
        for tp in assigned {
            log.push(format!("assigned {tp}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_async_commits_auto_commit_resets_and_rebalance_callbacks() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("misc", 2, 1))
        .await
        .expect("create");
    for p in 0..2 {
        produce_values(&client, "misc", p, (0..20).map(|i| format!("m{p}-{i}"))).await;
    }

    // auto_offset_reset = error: nothing committed, so the first poll fails.
    let mut strict = Consumer::new(
        client.clone(),
        group_config("g-strict").auto_offset_reset(OffsetReset::Error),
    );
    strict.assign([TopicPartition::new("misc", 0)]);
    assert!(matches!(
        strict.poll(Duration::from_millis(100)).await,
        Err(quiver_sdk::ConsumerError::NoOffset(_))
    ));

    // seek_to_beginning and seek_to_end.
    let tp = TopicPartition::new("misc", 1);
    strict.assign([tp.clone()]);
    assert_eq!(strict.seek_to_end(&tp).await.expect("end"), 20);
    assert_eq!(strict.seek_to_beginning(&tp).await.expect("beginning"), 0);

    // A group member with a listener and auto-commit every 100 ms, read as a stream.
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut member = Consumer::new(
        client.clone(),
        group_config("g-misc")
            .auto_commit(true)
            .auto_commit_interval(Duration::from_millis(100)),
    );
    member.set_rebalance_listener(Recorder(std::sync::Arc::clone(&events)));
    member.subscribe(&["misc"]).expect("subscribe");
    let mut stream = Box::pin(member.into_stream());
    let mut got = Vec::new();
    while got.len() < 40 {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a record within 30 s");
        got.push(next.expect("stream open").expect("record"));
    }
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in &got {
        per_partition.entry(r.partition).or_default().push(r.offset);
    }
    assert_eq!(per_partition.len(), 2);
    for offsets in per_partition.values() {
        assert_eq!(
            offsets,
            &(0..20).collect::<Vec<u64>>(),
            "in order, each once"
        );
    }
    {
        let log = events.lock().expect("lock");
        assert!(
            log.contains(&"assigned misc/0".to_owned())
                && log.contains(&"assigned misc/1".to_owned()),
            "{log:?}"
        );
    }
    // Auto-commit catches up within a few intervals while the stream is polled.
    let observer = Consumer::new(client.clone(), group_config("g-misc"));
    let both = [
        TopicPartition::new("misc", 0),
        TopicPartition::new("misc", 1),
    ];
    let mut committed = Vec::new();
    for _ in 0..100 {
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        committed = observer.committed(&both).await.expect("committed");
        if committed.iter().all(|(_, o)| *o == Some(20)) {
            break;
        }
    }
    assert!(
        committed.iter().all(|(_, o)| *o == Some(20)),
        "auto-commit reached the end: {committed:?}"
    );
    drop(stream);

    // commit_async's future reports the outcome.
    // Five records a poll, so that the partition's 20 come in several.
    let mut manual = Consumer::new(
        client.clone(),
        group_config("g-async")
            .auto_commit(false)
            .max_poll_records(5),
    );
    manual.assign([TopicPartition::new("misc", 0)]);
    let first = poll_n(&mut manual, 5).await;
    assert_eq!(first[0].offset, 0);
    manual.commit_async().await.expect("async commit succeeded");
    let tp0 = TopicPartition::new("misc", 0);
    let position = manual.position(&tp0);
    assert_eq!(
        manual
            .committed(std::slice::from_ref(&tp0))
            .await
            .expect("committed"),
        vec![(tp0.clone(), position)]
    );
    // A commit whose future is dropped unawaited is still sent.
    let second = poll_n(&mut manual, 5).await;
    assert_eq!(second[0].offset, 5);
    let position = manual.position(&tp0);
    assert_eq!(position, Some(10));
    drop(manual.commit_async());
    eventually(
        "the dropped commit_async applied",
        Duration::from_secs(10),
        || async {
            let committed = manual.committed(std::slice::from_ref(&tp0)).await.ok()?;
            (committed == vec![(tp0.clone(), position)]).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_a_missing_topic_fails_the_poll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    let mut consumer = Consumer::new(client.clone(), group_config("g-missing"));
    consumer.subscribe(&["no-such-topic"]).expect("subscribe");
    let mut failure = None;
    for _ in 0..100 {
        match consumer.poll(Duration::from_millis(100)).await {
            Ok(records) => assert!(records.is_empty()),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    match failure {
        Some(quiver_sdk::ConsumerError::Request(err)) => {
            assert_eq!(err.code(), Some(ErrorCode::UnknownTopic))
        }
        other => panic!("expected UNKNOWN_TOPIC from poll, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_an_empty_group_expire_and_a_live_groups_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_with(dir.path(), &[("QUIVER_OFFSETS_RETENTION_MS", "1500")], None);
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("kept", 1, 1))
        .await
        .expect("create");
    produce_values(&client, "kept", 0, (0..20).map(|i| format!("k{i}"))).await;
    let tp = TopicPartition::new("kept", 0);

    // Group "gone" commits and leaves; group "live" commits and stays.
    let mut gone = Consumer::new(client.clone(), group_config("gone"));
    gone.subscribe(&["kept"]).expect("subscribe");
    assert_eq!(poll_n(&mut gone, 20).await.len(), 20);
    gone.commit_sync().await.expect("commit");
    gone.close().await.expect("leave");
    // A long session, so that a slow machine cannot expire the live member (and with
    // it the group's right to its offsets) while the test waits.
    let mut live = Consumer::new(
        client.clone(),
        group_config("live").session_timeout(Duration::from_secs(30)),
    );
    live.subscribe(&["kept"]).expect("subscribe");
    assert_eq!(poll_n(&mut live, 20).await.len(), 20);
    live.commit_sync().await.expect("commit");

    let reader = Consumer::new(client.clone(), group_config("gone"));
    let mut expired = false;
    for _ in 0..100 {
        // The live member keeps heartbeating while the retention passes.
        live.poll(Duration::from_millis(100)).await.expect("poll");
        let committed = reader
            .committed(std::slice::from_ref(&tp))
            .await
            .expect("committed");
        if committed == vec![(tp.clone(), None)] {
            expired = true;
            break;
        }
    }
    assert!(expired, "the empty group's offsets never expired");
    assert_eq!(
        live.committed(std::slice::from_ref(&tp))
            .await
            .expect("committed"),
        vec![(tp.clone(), Some(20))],
        "a group with a member keeps its offsets"
    );
    live.close().await.expect("leave");
}

/// A listener that is `Send` but not `Sync` (it holds a `Cell`), as a Java
/// `ConsumerRebalanceListener` port would be.
struct CountingListener {
    assigned: std::sync::mpsc::Sender<usize>,
    calls: std::cell::Cell<usize>,
}

impl quiver_sdk::RebalanceListener for CountingListener {
    fn on_partitions_assigned(
        &mut self,
        partitions: &[TopicPartition],
        _: &mut quiver_sdk::Rebalance,
    ) {
        self.calls.set(self.calls.get() + 1);
        let _ = self.assigned.send(partitions.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_consumer_polls_and_commits_from_a_spawned_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("spawned", 2, 1))
        .await
        .expect("create");
    for partition in 0..2 {
        produce_values(
            &client,
            "spawned",
            partition,
            (0..50).map(|i| format!("s{i}")),
        )
        .await;
    }
    let (assigned, told) = std::sync::mpsc::channel();
    let mut consumer = Consumer::new(client.clone(), group_config("g-spawned"));
    consumer.set_rebalance_listener(CountingListener {
        assigned,
        calls: std::cell::Cell::new(0),
    });
    consumer.subscribe(&["spawned"]).expect("subscribe");
    let task = tokio::spawn(async move {
        let records = poll_n(&mut consumer, 100).await;
        consumer.commit_sync().await.expect("commit");
        let committed = consumer
            .committed(&[
                TopicPartition::new("spawned", 0),
                TopicPartition::new("spawned", 1),
            ])
            .await
            .expect("committed");
        consumer.close().await.expect("close");
        (records.len(), committed)
    });
    let (count, committed) = task.await.expect("the task ran to its end");
    assert_eq!(count, 100);
    assert!(
        committed.iter().all(|(_, offset)| *offset == Some(50)),
        "{committed:?}"
    );
    assert_eq!(
        told.try_iter().sum::<usize>(),
        2,
        "both partitions assigned"
    );
}

/// Seeks partition 0 to offset 30 and partition 1 to the first record at or after a
/// timestamp, and commits 5 for partition 1, from inside the assignment callback.
struct SeekingListener {
    timestamp_ms: i64,
}

impl quiver_sdk::RebalanceListener for SeekingListener {
    fn on_partitions_assigned(
        &mut self,
        assigned: &[TopicPartition],
        rebalance: &mut quiver_sdk::Rebalance,
    ) {
        for tp in assigned {
            match tp.partition {
                0 => rebalance.seek_to(tp, quiver_sdk::SeekTo::Offset(30)),
                _ => {
                    rebalance.seek_to(tp, quiver_sdk::SeekTo::Timestamp(self.timestamp_ms));
                    rebalance.commit(tp, 5);
                }
            }
        }
    }
}

/// Produces `count` records to `partition`, record `i` stamped `base_ms + i`.
async fn produce_stamped(client: &Client, topic: &str, partition: u32, count: i64, base_ms: i64) {
    let records: Vec<Record> = (0..count)
        .map(|i| Record::from_value(format!("p{partition}-{i}"), base_ms + i))
        .collect();
    client
        .produce(topic, partition, Acks::All, &records)
        .await
        .expect("produce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_listener_seeks_and_commits_the_partitions_it_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("seeking", 2, 1))
        .await
        .expect("create");
    let base_ms = 1_700_000_000_000;
    for partition in 0..2 {
        produce_stamped(&client, "seeking", partition, 50, base_ms).await;
    }
    let mut consumer = Consumer::new(client.clone(), group_config("g-seeking"));
    consumer.set_rebalance_listener(SeekingListener {
        timestamp_ms: base_ms + 42,
    });
    consumer.subscribe(&["seeking"]).expect("subscribe");

    // Waiting for the assignment applies it, listener included, without fetching.
    let assigned = consumer
        .wait_for_assignment(Duration::from_secs(30))
        .await
        .expect("assignment");
    let (p0, p1) = (
        TopicPartition::new("seeking", 0),
        TopicPartition::new("seeking", 1),
    );
    assert_eq!(assigned, [p0.clone(), p1.clone()]);
    assert_eq!(consumer.position(&p0), Some(30), "the listener's seek");
    assert_eq!(consumer.position(&p1), Some(42), "the seek by timestamp");
    let committed = consumer
        .committed(std::slice::from_ref(&p1))
        .await
        .expect("committed");
    assert_eq!(committed, [(p1.clone(), Some(5))], "the listener's commit");

    let records = poll_n(&mut consumer, 28).await;
    let per_partition = |p: u32| -> Vec<u64> {
        records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect()
    };
    assert_eq!(per_partition(0), (30..50).collect::<Vec<_>>());
    assert_eq!(per_partition(1), (42..50).collect::<Vec<_>>());

    // Offsets for times, across partitions, whether assigned or not.
    let found = consumer
        .offsets_for_times(&[
            (p0.clone(), base_ms + 10),
            (p1.clone(), base_ms + 49),
            (p1.clone(), base_ms + 50),
        ])
        .await
        .expect("offsets for times");
    assert_eq!(found.get(&p0), Some(&Some(10)));
    // The same partition twice: the last query wins in the map, and nothing that
    // recent exists.
    assert_eq!(found.get(&p1), Some(&None));
    let found = consumer
        .offsets_for_times(&[(p1.clone(), base_ms + 49)])
        .await
        .expect("offsets for times");
    assert_eq!(found.get(&p1), Some(&Some(49)));
    let unknown = consumer
        .offsets_for_times(&[(TopicPartition::new("seeking", 7), base_ms)])
        .await;
    assert!(
        matches!(&unknown, Err(quiver_sdk::ConsumerError::Request(e)) if e.code() == Some(ErrorCode::UnknownPartition)),
        "{unknown:?}"
    );
    consumer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_an_assignment_that_cannot_come_returns_none_in_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("one-partition", 1, 1))
        .await
        .expect("create");
    let mut first = Consumer::new(client.clone(), group_config("g-crowded"));
    first.subscribe(&["one-partition"]).expect("subscribe");
    let got = first
        .wait_for_assignment(Duration::from_secs(30))
        .await
        .expect("assignment");
    assert_eq!(got, [TopicPartition::new("one-partition", 0)]);
    // A second member of a one-partition group gets nothing while the first stays.
    let mut second = Consumer::new(client.clone(), group_config("g-crowded"));
    second.subscribe(&["one-partition"]).expect("subscribe");
    let none = second
        .wait_for_assignment(Duration::from_secs(2))
        .await
        .expect("no error");
    assert!(none.is_empty(), "{none:?}");
    // Without a group or an assignment there is nothing to wait for.
    let mut alone = Consumer::new(client.clone(), ConsumerConfig::default());
    assert!(
        alone
            .wait_for_assignment(Duration::from_secs(30))
            .await
            .expect("no error")
            .is_empty()
    );
    second.close().await.expect("close");
    first.close().await.expect("close");
}
