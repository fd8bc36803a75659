//! Every public future of the SDK is `Send`, so an application can drive a consumer,
//! a producer or a client from `tokio::spawn`. Checked at compile time: a future that
//! stops being `Send` fails to build this test.

use std::time::Duration;

use quiver_sdk::{
    Admin, AlterConfigOp, Client, Consumer, GroupOffset, NewTopic, OffsetResetTarget, Producer,
    ProducerRecord, TopicPartition,
};

fn send<T: Send>(_: T) {}

/// Never called: only compiled.
#[allow(dead_code, clippy::diverging_sub_expression)]
async fn every_public_future_is_send(
    client: Client,
    admin: Admin,
    mut consumer: Consumer,
    producer: Producer,
    tp: TopicPartition,
) {
    send(Client::connect(quiver_sdk::ClientConfig::new(
        "127.0.0.1:1",
        "ca.pem",
    )));
    send(Admin::connect(quiver_sdk::ClientConfig::new(
        "127.0.0.1:1",
        "ca.pem",
    )));
    send(admin.list_topics());
    send(admin.describe_topic("t"));
    send(admin.create_topic(NewTopic::new("t", 1, 1)));
    send(admin.delete_topic("t"));
    send(admin.create_partitions("t", 2));
    send(admin.describe_topic_configs("t"));
    send(admin.alter_topic_configs("t", &[AlterConfigOp::delete("retention.ms")]));
    send(admin.describe_cluster());
    send(admin.list_groups());
    send(admin.describe_group("g"));
    send(admin.delete_group("g"));
    send(admin.list_group_offsets("g"));
    send(admin.alter_group_offsets("g", &[GroupOffset::new("t", 0, 0)]));
    send(admin.reset_group_offsets("g", "t", OffsetResetTarget::Earliest));
    send(admin.upload_plugin("p", Vec::new()));
    send(admin.list_plugins());
    send(admin.detach_plugin("t", "p"));
    send(admin.delete_plugin("p"));
    send(admin.create_acls(Vec::new()));
    send(admin.delete_acls(Vec::new()));
    send(admin.upsert_user("u", "p", 4096));
    send(admin.delete_user("u"));
    send(admin.list_users());
    send(admin.set_quota("User:u", Default::default()));
    send(admin.list_quotas());
    send(admin.close());
    send(client.produce("t", 0, quiver_sdk::Acks::All, &[]));
    send(client.fetch("t", 0, 0, &quiver_sdk::FetchOptions::default()));
    send(client.list_offsets("t", 0, quiver_sdk::OffsetSpec::Latest));
    send(client.close());
    send(producer.send(ProducerRecord::new("t", "v")));
    send(producer.flush());
    send(producer.close());
    send(consumer.poll(Duration::ZERO));
    send(consumer.seek_to_beginning(&tp));
    send(consumer.seek_to_end(&tp));
    send(consumer.committed(std::slice::from_ref(&tp)));
    send(consumer.commit_sync());
    send(consumer.commit_async());
    send(consumer.wait_for_assignment(Duration::ZERO));
    send(consumer.offsets_for_times(&[(tp.clone(), 0)]));
    send(consumer.close());
}

#[test]
fn a_consumer_is_send_and_sync_with_a_listener_that_is_only_send() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Consumer>();
    send_sync::<Client>();
    send_sync::<Admin>();
    send_sync::<Producer>();
}
