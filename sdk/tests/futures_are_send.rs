//! Every public future of the SDK is `Send`, so an application can drive a consumer,
//! a producer or a client from `tokio::spawn`. Checked at compile time: a future that
//! stops being `Send` fails to build this test.

use std::time::Duration;

use quiver_sdk::{Client, Consumer, Producer, ProducerRecord, TopicPartition};

fn send<T: Send>(_: T) {}

/// Never called: only compiled.
#[allow(dead_code, clippy::diverging_sub_expression)]
async fn every_public_future_is_send(
    client: Client,
    mut consumer: Consumer,
    producer: Producer,
    tp: TopicPartition,
) {
    send(Client::connect(quiver_sdk::ClientConfig::new(
        "127.0.0.1:1",
        "ca.pem",
    )));
    send(client.list_topics());
    send(client.describe_topic("t"));
    send(client.create_topic("t", 1, 1, &[]));
    send(client.delete_topic("t"));
    send(client.produce("t", 0, quiver_sdk::Acks::All, &[]));
    send(client.fetch("t", 0, 0, &quiver_sdk::FetchOptions::default()));
    send(client.list_offsets("t", 0, quiver_sdk::OffsetSpec::Latest));
    send(client.cluster_status());
    send(client.create_acls(Vec::new()));
    send(client.upsert_user("u", "p", 4096));
    send(client.set_quota("User:u", Default::default()));
    send(client.close());
    send(producer.send(ProducerRecord::new("t", "v")));
    send(producer.flush());
    send(producer.close());
    send(consumer.poll(Duration::ZERO));
    send(consumer.seek_to_beginning(&tp));
    send(consumer.seek_to_end(&tp));
    send(consumer.committed(std::slice::from_ref(&tp)));
    send(consumer.commit_sync());
    send(consumer.wait_for_assignment(Duration::ZERO));
    send(consumer.offsets_for_times(&[(tp.clone(), 0)]));
    send(consumer.close());
}

#[test]
fn a_consumer_is_send_and_sync_with_a_listener_that_is_only_send() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Consumer>();
    send_sync::<Client>();
    send_sync::<Producer>();
}
