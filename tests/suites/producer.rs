//! The SDK producer against real brokers: acks, retries across a kill -9, idempotence,
//! callbacks, fatal errors, compression, bounded memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use quiver_sdk::{
    Acks, BlockingProducer, Compression, ErrorCode, ProduceError, Producer, ProducerConfig,
    ProducerRecord,
};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, eventually, fetch_all};

fn config(idempotence: bool) -> ProducerConfig {
    ProducerConfig::default()
        .acks(Acks::All)
        .idempotence(idempotence)
        .linger(Duration::from_millis(2))
        .batch_bytes(8 * 1024)
        .delivery_timeout(Duration::from_secs(60))
        .retry_backoff(Duration::from_millis(20))
        .retry_backoff_max(Duration::from_millis(200))
}

/// Sends `total` records `seq-<i>` round-robin over `partitions`, kills the broker with
/// -9 once a third are acknowledged, restarts it, and waits for every delivery.
/// Returns the values per partition as stored.
async fn send_through_a_kill(
    idempotence: bool,
    topic: &str,
) -> (HashMap<u32, Vec<String>>, u64, Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new(topic, 2, 1))
        .await
        .expect("create");
    let producer = Producer::new(client.clone(), config(idempotence));
    let total = 6_000u64;
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let sender = {
        let producer = producer.clone();
        let (acked, failed, topic) = (Arc::clone(&acked), Arc::clone(&failed), topic.to_owned());
        let first_error = Arc::clone(&first_error);
        tokio::spawn(async move {
            for i in 0..total {
                let record = ProducerRecord::new(topic.clone(), format!("seq-{i}"))
                    .partition((i % 2) as u32);
                let (acked, failed) = (Arc::clone(&acked), Arc::clone(&failed));
                let first_error = Arc::clone(&first_error);
                producer
                    .send_with_callback(record, move |r| match r {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .expect("lock")
                                .get_or_insert(e.to_string());
                        }
                    })
                    .await;
                if i % 500 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    eventually(
        "a third of the records acknowledged",
        Duration::from_secs(60),
        || {
            let acked = Arc::clone(&acked);
            async move { (acked.load(Ordering::Relaxed) >= total / 3).then_some(()) }
        },
    )
    .await;
    broker.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart();
    sender.await.expect("sender task");
    producer.flush().await;
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no record may fail: the broker came back within the timeout; first error: {:?}",
        first_error.lock().expect("lock")
    );
    assert_eq!(
        acked.load(Ordering::Relaxed),
        total,
        "every record acknowledged exactly once"
    );
    let reader = broker.client().await;
    let mut stored = HashMap::new();
    for partition in 0..2 {
        let values = fetch_all(&reader, topic, partition, 0)
            .await
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned())
            .collect();
        stored.insert(partition, values);
    }
    (stored, total, broker, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_keeps_exactly_once_and_order_across_a_kill9() {
    let (stored, total, _broker, _dir) = send_through_a_kill(true, "exactly-once").await;
    for partition in 0..2u32 {
        let expected: Vec<String> = (0..total)
            .filter(|i| i % 2 == u64::from(partition))
            .map(|i| format!("seq-{i}"))
            .collect();
        let got = &stored[&partition];
        assert_eq!(
            got.len(),
            expected.len(),
            "partition {partition}: every record exactly once"
        );
        assert!(
            got == &expected,
            "partition {partition}: records in send order, no duplicates"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotence_retries_are_at_least_once() {
    let (stored, total, _broker, _dir) = send_through_a_kill(false, "at-least-once").await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for values in stored.values() {
        for v in values {
            *counts.entry(v.as_str()).or_default() += 1;
        }
    }
    for i in 0..total {
        let key = format!("seq-{i}");
        assert!(
            counts.get(key.as_str()).copied().unwrap_or(0) >= 1,
            "{key} lost"
        );
    }
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "at-least-once: {duplicates} duplicate records after a kill -9 (allowed without idempotence)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_fire_exactly_once_also_when_the_broker_never_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("gone", 1, 1))
        .await
        .expect("create");
    let producer = Producer::new(
        client.clone(),
        config(true).delivery_timeout(Duration::from_secs(2)),
    );
    let first = producer
        .send(ProducerRecord::new("gone", "before"))
        .await
        .expect("queued");
    first.await.expect("delivered while the broker runs");
    broker.kill9();
    let total = 500usize;
    let calls: Arc<Vec<AtomicU32>> = Arc::new((0..total).map(|_| AtomicU32::new(0)).collect());
    let timeouts = Arc::new(AtomicU32::new(0));
    let failures = Arc::new(AtomicU32::new(0));
    for i in 0..total {
        let (calls, timeouts, failures) = (
            Arc::clone(&calls),
            Arc::clone(&timeouts),
            Arc::clone(&failures),
        );
        producer
            .send_with_callback(
                ProducerRecord::new("gone", format!("r{i}")),
                move |result| {
                    calls[i].fetch_add(1, Ordering::Relaxed);
                    match result {
                        Err(ProduceError::Timeout { .. }) => {
                            timeouts.fetch_add(1, Ordering::Relaxed);
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        // Later batches of the partition cannot keep their order once
                        // an earlier one timed out.
                        Err(ProduceError::OrderingLost { .. }) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("record {i}: expected a delivery failure, got {other:?}"),
                    }
                },
            )
            .await;
    }
    producer.flush().await;
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(c.load(Ordering::Relaxed), 1, "callback of record {i}");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed) as usize,
        total,
        "every record fails"
    );
    assert!(
        timeouts.load(Ordering::Relaxed) > 0,
        "the first batch fails with the delivery timeout"
    );
    assert_eq!(producer.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_fail_at_once_and_an_oversized_record_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new("small", 1, 1)
                .configs::<String, String>([("max.message.bytes".into(), "2048".into())]),
        )
        .await
        .expect("create");
    let producer = Producer::new(client.clone(), config(true));

    let unknown = producer
        .send(ProducerRecord::new("no-such-topic", "x"))
        .await;
    match unknown {
        Err(ProduceError::Metadata { source, .. }) => {
            assert_eq!(source.code(), Some(ErrorCode::UnknownTopic))
        }
        Err(other) => panic!("expected an unknown-topic error, got {other}"),
        Ok(_) => panic!("expected an unknown-topic error, got a queued record"),
    }

    let mut deliveries = Vec::new();
    for i in 0..10 {
        let value = if i == 4 {
            "x".repeat(4000)
        } else {
            format!("fits-{i}")
        };
        match producer.send(ProducerRecord::new("small", value)).await {
            Ok(delivery) => deliveries.push((i, delivery)),
            Err(ProduceError::RecordTooLarge { size, limit }) => {
                assert_eq!(i, 4, "only the oversized record is refused");
                assert!(size > limit);
            }
            Err(other) => panic!("record {i}: {other}"),
        }
    }
    assert_eq!(deliveries.len(), 9);
    for (i, delivery) in deliveries {
        delivery.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
    }
    let stored = fetch_all(&client, "small", 0, 0).await;
    assert_eq!(stored.len(), 9);

    // A broker-side fatal error (the topic vanished after the producer cached it) is
    // reported as such, long before the 60 s delivery timeout could pass.
    client.admin().delete_topic("small").await.expect("delete");
    let delivery = producer
        .send(ProducerRecord::new("small", "late"))
        .await
        .expect("queued from cache");
    match delivery.await {
        Err(ProduceError::Fatal(err)) => assert_eq!(err.code(), Some(ErrorCode::UnknownTopic)),
        other => panic!("expected a fatal UNKNOWN_TOPIC, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_zstd_and_plain_batches_mix_in_one_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("mixed", 1, 1))
        .await
        .expect("create");
    let mut expected = Vec::new();
    for (round, codec) in [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Lz4,
    ]
    .into_iter()
    .enumerate()
    {
        let producer = Producer::new(client.clone(), config(true).compression(codec));
        let mut deliveries = Vec::new();
        for i in 0..300 {
            let value = format!("{codec:?}-{round}-{i}-{}", "payload ".repeat(i % 7));
            expected.push(value.clone());
            deliveries.push(
                producer
                    .send(ProducerRecord::new("mixed", value).key(format!("k{i}")))
                    .await
                    .expect("queued"),
            );
        }
        for d in deliveries {
            d.await.expect("delivered");
        }
    }
    let stored: Vec<String> = fetch_all(&client, "mixed", 0, 0)
        .await
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(stored.len(), expected.len(), "record count");
    if let Some(i) = stored.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!(
            "first difference at record {i}: stored {:?}, expected {:?}",
            stored[i], expected[i]
        );
    }
    // The zstd and lz4 batches are stored compressed: the partition is smaller than
    // the values alone.
    let raw: usize = expected.iter().map(String::len).sum();
    let on_disk: u64 = broker
        .log_files("mixed", 0)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        on_disk < raw as u64,
        "stored {on_disk} bytes for {raw} bytes of values"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_facing_a_stopped_broker_stops_accepting_when_its_buffer_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("stalled", 1, 1))
        .await
        .expect("create");
    let buffer_bytes = 64 * 1024;
    let producer = Producer::new(
        client.clone(),
        config(true)
            .buffer_bytes(buffer_bytes)
            .delivery_timeout(Duration::from_secs(30)),
    );
    producer
        .send(ProducerRecord::new("stalled", "warm-up"))
        .await
        .expect("queued")
        .await
        .expect("delivered");
    // A record whose receipt resolved is no longer pending.
    assert_eq!(producer.pending(), 0);
    broker.kill9();
    let value = "v".repeat(1000);
    let mut accepted = 0usize;
    let refused = loop {
        match producer
            .try_send(ProducerRecord::new("stalled", value.clone()))
            .await
        {
            Ok(_delivery) => accepted += 1,
            Err(ProduceError::BufferFull(bytes)) => break bytes,
            Err(other) => panic!("unexpected: {other}"),
        }
        assert!(
            accepted <= buffer_bytes / 1000,
            "accepted {accepted} records of 1000 bytes into a {buffer_bytes}-byte buffer"
        );
    };
    assert_eq!(refused, buffer_bytes);
    assert!(
        accepted > 10,
        "the buffer holds some records before refusing ({accepted})"
    );
    assert_eq!(producer.pending(), accepted as u64);
}

#[test]
fn the_blocking_producer_serves_synchronous_callers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        broker
            .client()
            .await
            .admin()
            .create_topic(quiver_sdk::NewTopic::new("sync", 1, 1))
            .await
            .expect("create");
    });
    let producer =
        BlockingProducer::connect(broker.client_config(), config(true)).expect("connect");
    let first = producer
        .send(ProducerRecord::new("sync", "one"))
        .expect("delivered");
    let second = producer
        .send(ProducerRecord::new("sync", "two"))
        .expect("delivered");
    assert_eq!(first.offset, Some(0));
    assert_eq!(second.offset, Some(1));
    let called = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&called);
    producer.send_with_callback(ProducerRecord::new("sync", "three"), move |r| {
        assert_eq!(r.expect("delivered").offset, Some(2));
        seen.fetch_add(1, Ordering::Relaxed);
    });
    producer.flush();
    assert_eq!(called.load(Ordering::Relaxed), 1);
}

/// After its broker restarts, a producer resumes without waiting for its old
/// connection's idle timeout: the restarted broker recognises the old connection ids
/// (keyed by its persistent reset secret) and answers their packets with a stateless
/// reset, so the client learns at once that the connection is gone and reconnects.
/// Before, the restarted broker dropped those packets as invalid and the producer
/// stalled about 10 s; the delivery timeout here is shorter than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_resumes_promptly_after_its_broker_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("restarted", 1, 1))
        .await
        .expect("create");
    let producer = Producer::new(
        client.clone(),
        config(true).delivery_timeout(Duration::from_secs(5)),
    );
    producer
        .send(ProducerRecord::new("restarted", "before"))
        .await
        .expect("accepted")
        .await
        .expect("delivered before the restart");
    broker.restart();
    // Ready: a fresh client is served.
    let fresh = broker.client().await;
    fresh
        .admin()
        .list_topics()
        .await
        .expect("the restarted broker serves");
    producer
        .send(ProducerRecord::new("restarted", "after"))
        .await
        .expect("accepted")
        .await
        .expect("delivered after the restart, within the delivery timeout");
    let stored = fetch_all(&fresh, "restarted", 0, 0).await;
    assert_eq!(stored.len(), 2);
}
