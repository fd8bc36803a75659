//! kill -9 durability: whatever the broker acknowledged with acks=all survives a SIGKILL.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quiver_sdk::{Acks, Client, ClientConfig, Record, RequestError};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, eventually, fetch_all, now_ms, padded_value, seeded_rng, wait_visible};
use quiver_wire::acl::{
    AclBinding, AclDescribeRequest, Operation, PatternType, Permission, ResourceType,
};

const PARTITIONS: u32 = 3;
const RECORDS_PER_BATCH: usize = 20;
const ACKS_BEFORE_KILL: usize = 300;
const ACKS_AFTER_RESTART: usize = 60;

#[derive(Debug, Clone)]
struct Acked {
    partition: u32,
    base_offset: u64,
    values: Vec<Bytes>,
    after_restart: bool,
}

struct Shared {
    acked: Mutex<Vec<Acked>>,
    ack_count: AtomicUsize,
    retries: AtomicUsize,
    stop: AtomicBool,
    restarted: AtomicBool,
}

async fn connect(config: &ClientConfig, shared: &Shared) -> Option<Client> {
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return None;
        }
        match Client::connect(config.clone()).await {
            Ok(client) => return Some(client),
            Err(e) if e.is_retriable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("connect failed for good: {e}"),
        }
    }
}

/// Sends acks=all batches to `partition` until told to stop, retrying retriable errors
/// (on a fresh connection when the old one is dead), and records every acknowledgement.
async fn producer(
    task: usize,
    partition: u32,
    config: ClientConfig,
    shared: Arc<Shared>,
    seed: u64,
) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Some(mut client) = connect(&config, &shared).await else {
        return;
    };
    let mut seq = 0u64;
    'batches: while !shared.stop.load(Ordering::Acquire) {
        let values: Vec<Bytes> = (0..RECORDS_PER_BATCH)
            .map(|i| padded_value(&format!("t{task}-s{seq}-r{i}-"), 80, &mut rng))
            .collect();
        seq += 1;
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record::from_value(v.clone(), now_ms()))
            .collect();
        loop {
            // Sample before sending: an ack counts as after the restart only if the
            // whole request was sent to the restarted broker.
            let after_restart = shared.restarted.load(Ordering::Acquire);
            match client.produce("dur", partition, Acks::All, &records).await {
                Ok(Some(receipt)) => {
                    shared.acked.lock().expect("lock").push(Acked {
                        partition,
                        base_offset: receipt.base_offset,
                        values,
                        after_restart,
                    });
                    shared.ack_count.fetch_add(1, Ordering::AcqRel);
                    break;
                }
                Ok(None) => panic!("acks=all got no answer"),
                Err(e) if e.is_retriable() => {
                    shared.retries.fetch_add(1, Ordering::AcqRel);
                    if shared.stop.load(Ordering::Acquire) {
                        break 'batches;
                    }
                    if matches!(
                        e,
                        RequestError::ConnectionLost(_)
                            | RequestError::Timeout(_)
                            | RequestError::Connect(_)
                    ) {
                        match connect(&config, &shared).await {
                            Some(c) => client = c,
                            None => break 'batches,
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Err(e) => panic!("produce to partition {partition} failed for good: {e}"),
            }
        }
    }
}

/// A producer sends acks=all batches continuously; after a few hundred acks the broker
/// is SIGKILLed and restarted on the same port, the producer carries on for a while;
/// then every acknowledged record is found at its acknowledged offset with its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let admin = broker.client().await;
    admin
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("dur", PARTITIONS, 1))
        .await
        .expect("create topic");
    admin.close().await;

    let mut rng = seeded_rng("acknowledged_records_survive_kill_9");
    let shared = Arc::new(Shared {
        acked: Mutex::new(Vec::new()),
        ack_count: AtomicUsize::new(0),
        retries: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        restarted: AtomicBool::new(false),
    });
    let mut config = broker.client_config();
    config.request_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    let mut producers = Vec::new();
    for task in 0..PARTITIONS as usize {
        producers.push(tokio::spawn(producer(
            task,
            task as u32,
            config.clone(),
            Arc::clone(&shared),
            rand::Rng::r#gen(&mut rng),
        )));
    }

    eventually(
        "a few hundred acknowledgements",
        Duration::from_secs(120),
        || {
            let n = shared.ack_count.load(Ordering::Acquire);
            async move { (n >= ACKS_BEFORE_KILL).then_some(()) }
        },
    )
    .await;
    broker.kill9();
    let acked_at_kill = shared.ack_count.load(Ordering::Acquire);
    eprintln!("killed the broker after {acked_at_kill} acknowledged batches");
    broker.restart();
    shared.restarted.store(true, Ordering::Release);

    eventually(
        "the producer to get acknowledgements from the restarted broker",
        Duration::from_secs(90),
        || {
            let n = shared
                .acked
                .lock()
                .expect("lock")
                .iter()
                .filter(|a| a.after_restart)
                .count();
            async move { (n >= ACKS_AFTER_RESTART).then_some(()) }
        },
    )
    .await;
    shared.stop.store(true, Ordering::Release);
    for p in producers {
        tokio::time::timeout(Duration::from_secs(60), p)
            .await
            .expect("producer stops")
            .expect("producer task");
    }
    eprintln!(
        "{} acknowledged batches, {} retried sends",
        shared.ack_count.load(Ordering::Acquire),
        shared.retries.load(Ordering::Acquire)
    );

    let acked = shared.acked.lock().expect("lock").clone();
    let client = broker.client().await;
    for p in 0..PARTITIONS {
        let end = acked
            .iter()
            .filter(|a| a.partition == p)
            .map(|a| a.base_offset + a.values.len() as u64)
            .max()
            .unwrap_or(0);
        wait_visible(&client, "dur", p, end).await;
    }
    let mut stored: BTreeMap<u32, BTreeMap<u64, Bytes>> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let records = fetch_all(&client, "dur", p, 0).await;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                r.offset, i as u64,
                "partition {p}: offsets dense from 0 after recovery"
            );
        }
        stored.insert(
            p,
            records
                .into_iter()
                .map(|r| (r.offset, r.value.expect("value")))
                .collect(),
        );
    }
    let mut claimed: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for (n, batch) in acked.iter().enumerate() {
        let partition = &stored[&batch.partition];
        for (i, value) in batch.values.iter().enumerate() {
            let offset = batch.base_offset + i as u64;
            if let Some(other) = claimed.insert((batch.partition, offset), n) {
                panic!(
                    "partition {} offset {offset} was acknowledged twice: batches {other} and {n} \
                     (an acknowledged offset was handed out again after the crash)",
                    batch.partition
                );
            }
            assert_eq!(
                partition.get(&offset),
                Some(value),
                "acknowledged record lost or changed: partition {} offset {offset} \
                 (batch acknowledged {} the restart)",
                batch.partition,
                if batch.after_restart {
                    "after"
                } else {
                    "before"
                }
            );
        }
    }
}

/// A data directory that fills up: produces are refused with the retriable
/// STORAGE_FULL and nothing of them is stored, fetches go on, a metadata change waits
/// for space instead of failing the controller, and once space returns a producer's
/// retries get through and the partition holds every record exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_until_space_returns() {
    let fs = match quiver_tests::SmallFilesystem::mount(48 * 1024 * 1024) {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("SKIPPED: a small file system cannot be mounted here: {reason}");
            return;
        }
    };
    let broker = Broker::start(&fs.path().join("data"));
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("full", 1, 1))
        .await
        .expect("create topic");
    let value = |i: usize| Bytes::from(format!("{i:05}-{}", "x".repeat(4000)));
    let mut stored = Vec::new();
    for i in 0..20 {
        client
            .produce(
                "full",
                0,
                Acks::All,
                &[Record::from_value(value(i), now_ms())],
            )
            .await
            .expect("produce before the disk fills");
        stored.push(value(i));
    }

    // An idempotent producer, its id obtained while there is space.
    let producer = quiver_sdk::Producer::new(
        client.clone(),
        quiver_sdk::ProducerConfig::default()
            .acks(Acks::All)
            .delivery_timeout(Duration::from_secs(120)),
    );
    let first = producer
        .send(quiver_sdk::ProducerRecord::new("full", value(20)).partition(0))
        .await
        .expect("enqueued")
        .await
        .expect("delivered before the disk fills");
    assert_eq!(first.offset, Some(20));
    stored.push(value(20));

    let filled = fs.fill("filler");
    assert!(filled > 0, "the filler took the free space");
    // Larger than a page, so it cannot fit in the segment's last, partly used page.
    let big = Bytes::from(vec![b'b'; 256 * 1024]);
    let end_before = fetch_all(&client, "full", 0, 0).await.len();
    for attempt in 0..3 {
        match client
            .produce(
                "full",
                0,
                Acks::All,
                &[Record::from_value(big.clone(), now_ms())],
            )
            .await
        {
            Err(e) => {
                assert_eq!(
                    e.code(),
                    Some(quiver_sdk::ErrorCode::StorageFull),
                    "attempt {attempt}: {e}"
                );
                assert!(e.is_retriable(), "STORAGE_FULL is retriable");
            }
            Ok(receipt) => panic!("attempt {attempt}: stored on a full disk: {receipt:?}"),
        }
    }
    assert!(
        broker.metric("quiver_request_errors_total{api=\"produce\",code=\"STORAGE_FULL\"}") >= 3.0,
        "refusals are counted"
    );
    // Nothing of the refused batches is stored, and fetches are served.
    let read = fetch_all(&client, "full", 0, 0).await;
    assert_eq!(read.len(), end_before);
    let values: Vec<Bytes> = read.iter().filter_map(|r| r.value.clone()).collect();
    assert_eq!(
        values, stored,
        "what was stored before the disk filled is intact"
    );

    // A metadata change waits for space: its request gives up, the controller stays
    // up. (Rules with long names, so that the controller's log entry needs pages the
    // full file system cannot give.)
    let rules: Vec<AclBinding> = (0..100)
        .map(|i| AclBinding {
            principal: format!("User:tenant-{i}"),
            resource_type: ResourceType::Topic,
            pattern: PatternType::Literal,
            resource_name: format!("{i:03}-{}", "t".repeat(300)),
            operation: Operation::Read,
            permission: Permission::Allow,
        })
        .collect();
    let mut short = broker.client_config();
    short.request_timeout = Duration::from_secs(2);
    let impatient = Client::connect(short).await.expect("connect");
    let created = impatient.admin().create_acls(rules.clone()).await;
    assert!(
        created.as_ref().is_err_and(RequestError::is_retriable),
        "a metadata change on a full disk fails retriably: {created:?}"
    );

    // A producer keeps retrying through the refusals...
    let delivery = producer
        .send(quiver_sdk::ProducerRecord::new("full", big.clone()).partition(0))
        .await
        .expect("enqueued");
    let refused_before =
        broker.metric("quiver_request_errors_total{api=\"produce\",code=\"STORAGE_FULL\"}");
    eventually(
        "the producer's attempts are refused",
        Duration::from_secs(60),
        || async {
            (broker.metric("quiver_request_errors_total{api=\"produce\",code=\"STORAGE_FULL\"}")
                > refused_before)
                .then_some(())
        },
    )
    .await;
    // ...and gets through once space returns, without a restart.
    std::fs::remove_file(fs.path().join("filler")).expect("free the space");
    let receipt = delivery.await.expect("delivered once space returned");
    assert_eq!(
        receipt.offset,
        Some(stored.len() as u64),
        "right after the stored records"
    );
    stored.push(big.clone());
    producer.close().await;

    let values: Vec<Bytes> = fetch_all(&client, "full", 0, 0)
        .await
        .into_iter()
        .filter_map(|r| r.value)
        .collect();
    assert_eq!(values.len(), stored.len(), "each record exactly once");
    assert_eq!(values, stored, "in order");
    // The controller wrote the rules once it had room, and takes changes again.
    eventually(
        "the rules made while full exist",
        Duration::from_secs(60),
        || async {
            let stored = client
                .admin()
                .describe_acls(AclDescribeRequest::default())
                .await
                .ok()?;
            (stored.len() == rules.len()).then_some(())
        },
    )
    .await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("made-after", 1, 1))
        .await
        .expect("metadata changes work again");
    impatient.close().await;
    client.close().await;
}
