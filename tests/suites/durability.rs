//! kill -9 durability: whatever the broker acknowledged with acks=all survives a SIGKILL.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quiver_sdk::{Acks, Client, ClientConfig, Record, RequestError};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, eventually, fetch_all, now_ms, padded_value, seeded_rng, wait_visible};

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
