//! Security as an attacker meets it: clients without a certificate, or with one from
//! another CA, are refused under mTLS; a client certificate from the cluster's own CA
//! is no broker certificate; with `authorization = "acl"` every API refuses a principal
//! without the rule it needs (and serves one with it); a client cannot write under
//! another's producer id; a routable listener needs authentication or an explicit
//! allow; an ACL added through one broker of a cluster holds on the others.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use quiver_sdk::{Acks, Client, ErrorCode, FetchOptions, Record, RequestError};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, eventually, run_quiver};
use quiver_wire::ApiKey;
use quiver_wire::acl::{
    AclBinding, AclDescribeRequest, Operation, PatternType, Permission, ResourceType,
};

/// The settings of a broker that authenticates with mTLS and authorises with ACLs,
/// `User:admin` its super user.
const LOCKED_DOWN: &[(&str, &str)] = &[
    ("QUIVER_AUTHENTICATION", "mtls"),
    ("QUIVER_AUTHORIZATION", "acl"),
    ("QUIVER_SUPER_USERS", "User:admin"),
];

/// A client certificate and key for `User:<name>`, signed with `quiver cert issue` by
/// the CA in `data_dir`.
fn issue(data_dir: &Path, name: &str, out: &Path) -> (PathBuf, PathBuf) {
    let output = run_quiver(
        &[
            "cert".into(),
            "issue".into(),
            name.into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ],
        None,
        &[],
    );
    assert!(
        output.status.success(),
        "cert issue {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("User:{name}")), "{stdout}");
    // The CLI names the files after the user, other characters than [A-Za-z0-9._-]
    // made `_`.
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        out.join(format!("{file}.pem")),
        out.join(format!("{file}.key")),
    )
}

async fn connect_as(broker: &Broker, cert: Option<&(PathBuf, PathBuf)>) -> Result<Client, String> {
    let mut config = broker.client_config();
    config.client_cert = cert.cloned();
    config.connect_timeout = Duration::from_secs(5);
    let client = Client::connect(config).await.map_err(|e| e.to_string())?;
    // The handshake's last word (the server refusing the certificate) may arrive after
    // the client thinks it is connected: a first request settles it.
    client
        .admin()
        .list_topics()
        .await
        .map(|_| client)
        .map_err(|e| e.to_string())
}

async fn client_as(broker: &Broker, cert: &(PathBuf, PathBuf)) -> Client {
    connect_as(broker, Some(cert))
        .await
        .unwrap_or_else(|e| panic!("{} cannot connect: {e}", cert.0.display()))
}

/// A broker started with [`LOCKED_DOWN`] settings, and a client for each of `users`
/// (certificates issued into `certs`), in order.
async fn locked_down(dir: &Path, certs: &Path, users: &[&str]) -> (Broker, Vec<Client>) {
    let broker = Broker::start_with(dir, LOCKED_DOWN, None);
    let mut clients = Vec::new();
    for user in users {
        clients.push(client_as(&broker, &issue(&broker.data_dir, user, certs)).await);
    }
    (broker, clients)
}

fn rule(
    principal: &str,
    resource_type: ResourceType,
    name: &str,
    operation: Operation,
) -> AclBinding {
    AclBinding {
        principal: principal.into(),
        resource_type,
        pattern: PatternType::Literal,
        resource_name: name.into(),
        operation,
        permission: Permission::Allow,
    }
}

fn is_authorization_failure(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(
            ErrorCode::TopicAuthorizationFailed
                | ErrorCode::GroupAuthorizationFailed
                | ErrorCode::ClusterAuthorizationFailed
                | ErrorCode::PluginAuthorizationFailed
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mtls_only_certificates_from_the_clusters_ca_get_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_with(dir.path(), &[("QUIVER_AUTHENTICATION", "mtls")], None);
    let alice = issue(&broker.data_dir, "alice", certs.path());

    // Another CA: a second broker's data directory makes its own.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Broker::start(other_dir.path());
    let foreign_certs = tempfile::tempdir().expect("tempdir");
    let forged = issue(&other.data_dir, "alice", foreign_certs.path());
    drop(other);

    let anonymous = connect_as(&broker, None).await;
    assert!(anonymous.is_err(), "a client without a certificate got in");
    let foreign = connect_as(&broker, Some(&forged)).await;
    assert!(
        foreign.is_err(),
        "a certificate from another CA naming the same user got in"
    );

    let client = client_as(&broker, &alice).await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("mine", 1, 1))
        .await
        .expect("an authenticated client works as before");
    client
        .produce("mine", 0, Acks::Leader, &[Record::from_value(&b"v"[..], 1)])
        .await
        .expect("produce");

    // The CLI takes the same certificate; without one it is refused.
    let alice_cert = alice.0.display().to_string();
    let alice_key = alice.1.display().to_string();
    let listed = broker.cli(&[
        "topic",
        "list",
        "--client-cert",
        &alice_cert,
        "--client-key",
        &alice_key,
    ]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("mine"));
    assert!(!broker.cli(&["topic", "list"]).status.success());

    eventually(
        "authentication failures counted",
        Duration::from_secs(10),
        || async {
            (broker.metric("quiver_authentication_failures_total{mechanism=\"mtls\"}") >= 2.0)
                .then_some(())
        },
    )
    .await;
    eventually("the refusal logged", Duration::from_secs(10), || async {
        broker
            .stderr()
            .contains("authentication failed")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_the_clusters_ca_is_no_broker_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_with(dir.path(), &[("QUIVER_AUTHENTICATION", "mtls")], None);
    // Named like the brokers' own certificates, signed by the same CA.
    let impostor = issue(&broker.data_dir, "quiver broker", certs.path());
    let client = client_as(&broker, &impostor).await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("t", 1, 1))
        .await
        .expect("create");
    let refusals = [
        client
            .call(&quiver_wire::cluster::ControllerRpcRequest {
                payload: Bytes::from_static(b"{}"),
            })
            .await
            .map(drop),
        client
            .call(&quiver_wire::cluster::ReplicaFetchRequest {
                topic: "t".into(),
                partition: 0,
                replica_id: 2,
                leader_epoch: 0,
                fetch_offset: 0,
                last_fetched_epoch: None,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
            })
            .await
            .map(drop),
        client
            .call(&quiver_wire::plugin::PluginModuleRequest {
                version: "00".into(),
            })
            .await
            .map(drop),
    ];
    for refused in refusals {
        let err = refused.expect_err("a client certificate is not a broker's");
        assert_eq!(
            err.code(),
            Some(ErrorCode::ClusterAuthorizationFailed),
            "{err}"
        );
    }
}

/// One call of `api` that needs nothing to exist beyond the topic `orders`, the topic
/// `doomed` and the group `g`.
async fn attempt(client: &Client, api: ApiKey) -> Result<(), RequestError> {
    use quiver_wire::group::*;
    use quiver_wire::message::*;
    use quiver_wire::plugin::*;
    match api {
        ApiKey::ApiVersions => client.call(&ApiVersionsRequest).await.map(drop),
        ApiKey::Metadata => client.admin().list_topics().await.map(drop),
        ApiKey::Produce => client
            .produce(
                "orders",
                0,
                Acks::Leader,
                &[Record::from_value(&b"x"[..], 1)],
            )
            .await
            .map(drop),
        ApiKey::Fetch => client
            .fetch_batches(
                "orders",
                0,
                0,
                &FetchOptions::default().max_wait(Duration::ZERO),
            )
            .await
            .map(drop),
        ApiKey::ListOffsets => client
            .list_offsets("orders", 0, OffsetSpec::Latest)
            .await
            .map(drop),
        ApiKey::CreateTopic => {
            client
                .admin()
                .create_topic(quiver_sdk::NewTopic::new("created", 1, 1))
                .await
        }
        ApiKey::DeleteTopic => client.admin().delete_topic("doomed").await,
        ApiKey::InitProducerId => client.call(&InitProducerIdRequest).await.map(drop),
        ApiKey::OffsetCommit => client
            .call(&OffsetCommitRequest {
                group: "g".into(),
                member_id: String::new(),
                member_epoch: -1,
                offsets: vec![CommittedOffset {
                    topic: "orders".into(),
                    partition: 0,
                    offset: 0,
                    metadata: String::new(),
                }],
            })
            .await
            .map(drop),
        ApiKey::OffsetFetch => client
            .call(&OffsetFetchRequest {
                group: "g".into(),
                partitions: None,
            })
            .await
            .map(drop),
        ApiKey::GroupHeartbeat => client
            .call(&GroupHeartbeatRequest {
                group: "g".into(),
                member_id: String::new(),
                member_epoch: 0,
                session_timeout_ms: 10_000,
                subscription: Some(vec!["orders".into()]),
                owned: Vec::new(),
            })
            .await
            .map(drop),
        ApiKey::ListGroups => client.call(&ListGroupsRequest).await.map(drop),
        ApiKey::DescribeGroup => client
            .call(&DescribeGroupRequest { group: "g".into() })
            .await
            .map(drop),
        ApiKey::PluginUpload => client
            .admin()
            .upload_plugin("p", Bytes::from_static(b"\0asm\x01\0\0\0"))
            .await
            .map(drop),
        ApiKey::PluginList => client.admin().list_plugins().await.map(drop),
        ApiKey::PluginAttach => {
            client
                .admin()
                .attach_plugin(Attachment {
                    topic: "orders".into(),
                    plugin: "p".into(),
                    stage: PluginStage::Fetch,
                    params: Vec::new(),
                    on_error: OnError::Fail,
                })
                .await
        }
        ApiKey::PluginDetach => client.admin().detach_plugin("orders", "p").await,
        ApiKey::PluginDelete => client.admin().delete_plugin("p").await,
        ApiKey::ClusterStatus => client.admin().describe_cluster().await.map(drop),
        ApiKey::AclCreate => {
            client
                .admin()
                .create_acls(vec![rule(
                    "User:bob",
                    ResourceType::Topic,
                    "x",
                    Operation::Read,
                )])
                .await
        }
        ApiKey::AclDelete => client
            .admin()
            .delete_acls(vec![rule(
                "User:bob",
                ResourceType::Topic,
                "x",
                Operation::Read,
            )])
            .await
            .map(drop),
        ApiKey::AclDescribe => client
            .admin()
            .describe_acls(AclDescribeRequest::default())
            .await
            .map(drop),
        ApiKey::SaslAuthenticate => client
            .call(&quiver_wire::sasl::SaslAuthenticateRequest {
                mechanism: quiver_wire::sasl::SCRAM_SHA_256.into(),
                message: "n,,n=bob,r=abcdefghijklmnop".into(),
            })
            .await
            .map(drop),
        ApiKey::UserUpsert => {
            client
                .admin()
                .upsert_user("bob", "a long password", 4096)
                .await
        }
        ApiKey::UserDelete => client.admin().delete_user("bob").await,
        ApiKey::UserList => client.admin().list_users().await.map(drop),
        ApiKey::QuotaSet => {
            client
                .admin()
                .set_quota(
                    "User:bob",
                    quiver_wire::quota::Quota {
                        produce_bytes_per_sec: Some(1 << 30),
                        ..Default::default()
                    },
                )
                .await
        }
        ApiKey::QuotaList => client.admin().list_quotas().await.map(drop),
        ApiKey::AlterTopicConfigs => {
            client
                .admin()
                .alter_topic_configs(
                    "orders",
                    &[quiver_sdk::AlterConfigOp::set("retention.ms", "600000")],
                )
                .await
        }
        ApiKey::CreatePartitions => client.admin().create_partitions("orders", 2).await,
        ApiKey::DeleteGroup => client.admin().delete_group("g").await,
        ApiKey::ControllerRpc => client
            .call(&quiver_wire::cluster::ControllerRpcRequest {
                payload: Bytes::from_static(b"{}"),
            })
            .await
            .map(drop),
        ApiKey::ReplicaFetch => client
            .call(&quiver_wire::cluster::ReplicaFetchRequest {
                topic: "orders".into(),
                partition: 0,
                replica_id: 2,
                leader_epoch: 0,
                fetch_offset: 0,
                last_fetched_epoch: None,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
            })
            .await
            .map(drop),
        ApiKey::PluginModule => client
            .call(&PluginModuleRequest {
                version: "00".into(),
            })
            .await
            .map(drop),
        ApiKey::JoinCa => client
            .call(&quiver_wire::join::JoinCaRequest)
            .await
            .map(drop),
        ApiKey::JoinCluster => client
            .call(&quiver_wire::join::JoinClusterRequest {
                node_id: 9,
                addresses: vec!["127.0.0.9".into()],
                csr: Bytes::from_static(b"not a request"),
                proof: Bytes::from(vec![0u8; 32]),
            })
            .await
            .map(drop),
    }
}

/// What `api` needs, as the rules that grant it to `principal`, and the code a
/// principal without them gets. `None`: the API needs nothing (it answers, filtered).
fn grants(api: ApiKey, principal: &str) -> Option<(Vec<AclBinding>, Option<ErrorCode>)> {
    use Operation::*;
    use ResourceType::*;
    let topic = |op| rule(principal, Topic, "orders", op);
    let group = |op| rule(principal, Group, "g", op);
    let cluster = |op| rule(principal, Cluster, "cluster", op);
    let topic_denied = Some(ErrorCode::TopicAuthorizationFailed);
    let group_denied = Some(ErrorCode::GroupAuthorizationFailed);
    let cluster_denied = Some(ErrorCode::ClusterAuthorizationFailed);
    Some(match api {
        ApiKey::ApiVersions
        | ApiKey::Metadata
        | ApiKey::ListGroups
        | ApiKey::ClusterStatus
        | ApiKey::SaslAuthenticate
        | ApiKey::JoinCa
        | ApiKey::JoinCluster => return None,
        ApiKey::Produce => (vec![topic(Write)], topic_denied),
        ApiKey::Fetch => (vec![topic(Read)], topic_denied),
        ApiKey::ListOffsets => (vec![topic(Describe)], topic_denied),
        ApiKey::CreateTopic => (
            vec![rule(principal, Topic, "created", Create)],
            topic_denied,
        ),
        ApiKey::DeleteTopic => (vec![rule(principal, Topic, "doomed", Delete)], topic_denied),
        ApiKey::InitProducerId => (vec![cluster(IdempotentWrite)], cluster_denied),
        ApiKey::OffsetCommit => (vec![group(Read), topic(Read)], group_denied),
        ApiKey::OffsetFetch => (vec![group(Describe)], group_denied),
        ApiKey::GroupHeartbeat => (vec![group(Read)], group_denied),
        ApiKey::DescribeGroup => (vec![group(Describe)], group_denied),
        ApiKey::PluginUpload | ApiKey::PluginDelete => (vec![cluster(Alter)], cluster_denied),
        ApiKey::PluginList | ApiKey::AclDescribe => (vec![cluster(Describe)], cluster_denied),
        ApiKey::PluginAttach | ApiKey::PluginDetach => (vec![topic(Alter)], topic_denied),
        ApiKey::AclCreate | ApiKey::AclDelete | ApiKey::UserUpsert | ApiKey::UserDelete => {
            (vec![cluster(Alter)], cluster_denied)
        }
        ApiKey::UserList | ApiKey::QuotaList => (vec![cluster(Describe)], cluster_denied),
        ApiKey::QuotaSet => (vec![cluster(Alter)], cluster_denied),
        ApiKey::AlterTopicConfigs | ApiKey::CreatePartitions => (vec![topic(Alter)], topic_denied),
        ApiKey::DeleteGroup => (vec![group(Delete)], group_denied),
        // No rule opens the brokers' own APIs to a client.
        ApiKey::ControllerRpc | ApiKey::ReplicaFetch | ApiKey::PluginModule => {
            (vec![cluster(All)], None)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_refuses_a_principal_without_its_rule_and_serves_one_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let (broker, clients) =
        locked_down(dir.path(), certs.path(), &["admin", "alice", "mallory"]).await;
    let [admin, alice, mallory] = clients.try_into().ok().expect("one client per user");
    admin
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("orders", 1, 1))
        .await
        .expect("super user creates");

    for api in ApiKey::ALL {
        if api == ApiKey::DeleteTopic {
            admin
                .admin()
                .create_topic(quiver_sdk::NewTopic::new("doomed", 1, 1))
                .await
                .expect("create doomed");
        }
        let Some((needed, denied)) = grants(api, "User:alice") else {
            // Needs no rule: answered, or refused for another reason (SCRAM is off on
            // this broker), never for authorisation.
            // A join without a proof of the join secret is refused as such.
            if let Err(err) = attempt(&mallory, api).await {
                assert!(!is_authorization_failure(err.code()), "{api:?}: {err}");
                assert!(
                    api == ApiKey::SaslAuthenticate
                        || (api == ApiKey::JoinCluster
                            && err.code() == Some(ErrorCode::InvalidJoinToken)),
                    "{api:?} needs no rule: {err}"
                );
            }
            continue;
        };
        let refused = attempt(&mallory, api)
            .await
            .expect_err(&format!("{api:?} without a rule"));
        let expected = denied.unwrap_or(ErrorCode::ClusterAuthorizationFailed);
        assert_eq!(refused.code(), Some(expected), "{api:?}: {refused}");
        assert!(
            refused.to_string().contains("User:mallory") || denied.is_none(),
            "{api:?} names the principal: {refused}"
        );

        admin
            .admin()
            .create_acls(needed.clone())
            .await
            .expect("grant");
        let outcome = attempt(&alice, api).await;
        match denied {
            Some(_) => {
                if let Err(err) = &outcome {
                    assert!(
                        !is_authorization_failure(err.code()),
                        "{api:?} with {needed:?}: {err}"
                    );
                }
            }
            None => assert_eq!(
                outcome.expect_err("brokers only").code(),
                Some(ErrorCode::ClusterAuthorizationFailed),
                "{api:?}"
            ),
        }
        admin.admin().delete_acls(needed).await.expect("revoke");
        // Revoked: the next request is refused again.
        if denied.is_some() && api != ApiKey::CreateTopic && api != ApiKey::DeleteTopic {
            let again = attempt(&alice, api).await.expect_err("revoked");
            assert!(is_authorization_failure(again.code()), "{api:?}: {again}");
        }
    }

    // Listings leave out what the principal may not describe, and naming a topic one
    // may not describe answers alike whether it exists or not.
    let names: Vec<String> = mallory
        .admin()
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.is_empty(), "mallory sees {names:?}");
    let existing = mallory
        .admin()
        .describe_topic("orders")
        .await
        .expect_err("hidden");
    let missing = mallory
        .admin()
        .describe_topic("no-such-topic")
        .await
        .expect_err("hidden");
    assert_eq!(existing.code(), Some(ErrorCode::TopicAuthorizationFailed));
    assert_eq!(missing.code(), existing.code());
    assert!(
        broker.metric(
            "quiver_authorization_denials_total{operation=\"write\",resource_type=\"topic\"}"
        ) >= 1.0
    );

    // Administrative changes leave an audit line naming the principal.
    eventually("audit lines", Duration::from_secs(10), || async {
        let log = broker.stderr();
        (log.contains("quiver::audit")
            && log.contains("User:admin")
            && log.contains("acl_create")
            && log.contains("topic_create"))
        .then_some(())
    })
    .await;
}

/// Kafka's model for the operators' topic changes: altering configs and adding
/// partitions need `alter` on the topic, deleting a group `delete` on the group. A
/// principal that may only describe is refused with the stable codes and changes
/// nothing; one with the rules is served, and the audit names it. A client without a
/// certificate does not get in at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_changes_and_group_deletion_need_their_rules() {
    use quiver_sdk::{AlterConfigOp, GroupOffset, NewTopic};
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let (broker, clients) =
        locked_down(dir.path(), certs.path(), &["admin", "alice", "mallory"]).await;
    let [admin, alice, mallory] = clients.try_into().ok().expect("one client per user");
    let admin = admin.admin();
    admin
        .create_topic(NewTopic::new("orders", 2, 1))
        .await
        .expect("super user creates");
    admin
        .alter_group_offsets("billing", &[GroupOffset::new("orders", 0, 0)])
        .await
        .expect("super user commits");
    admin
        .create_acls(vec![
            rule(
                "User:mallory",
                ResourceType::Topic,
                "orders",
                Operation::Describe,
            ),
            rule(
                "User:mallory",
                ResourceType::Group,
                "billing",
                Operation::Describe,
            ),
        ])
        .await
        .expect("grant describe");

    let unchanged = || async {
        let info = admin.describe_topic("orders").await.expect("describe");
        // Only the effective max.message.bytes every topic reports: nothing was set.
        assert_eq!(
            info.configs,
            [("max.message.bytes".to_owned(), "1048576".to_owned())]
        );
        assert_eq!(info.partitions.len(), 2);
        assert_eq!(
            admin
                .list_group_offsets("billing")
                .await
                .expect("offsets")
                .len(),
            1
        );
    };
    let mallory = mallory.admin();
    let err = mallory
        .alter_topic_configs("orders", &[AlterConfigOp::set("retention.ms", "1")])
        .await
        .expect_err("describe is not alter");
    assert_eq!(
        err.code(),
        Some(ErrorCode::TopicAuthorizationFailed),
        "{err}"
    );
    assert!(err.to_string().contains("User:mallory"), "{err}");
    let err = mallory
        .create_partitions("orders", 3)
        .await
        .expect_err("describe is not alter");
    assert_eq!(
        err.code(),
        Some(ErrorCode::TopicAuthorizationFailed),
        "{err}"
    );
    let err = mallory
        .delete_group("billing")
        .await
        .expect_err("describe is not delete");
    assert_eq!(
        err.code(),
        Some(ErrorCode::GroupAuthorizationFailed),
        "{err}"
    );
    unchanged().await;

    // Read and write on the topic are not alter either.
    let alice = alice.admin();
    admin
        .create_acls(vec![
            rule("User:alice", ResourceType::Topic, "orders", Operation::Read),
            rule(
                "User:alice",
                ResourceType::Topic,
                "orders",
                Operation::Write,
            ),
        ])
        .await
        .expect("grant read and write");
    let err = alice
        .create_partitions("orders", 3)
        .await
        .expect_err("read and write are not alter");
    assert_eq!(
        err.code(),
        Some(ErrorCode::TopicAuthorizationFailed),
        "{err}"
    );
    unchanged().await;

    admin
        .create_acls(vec![
            rule(
                "User:alice",
                ResourceType::Topic,
                "orders",
                Operation::Alter,
            ),
            rule(
                "User:alice",
                ResourceType::Group,
                "billing",
                Operation::Delete,
            ),
        ])
        .await
        .expect("grant alter and delete");
    alice
        .alter_topic_configs("orders", &[AlterConfigOp::set("retention.ms", "600000")])
        .await
        .expect("alter with the rule");
    alice
        .create_partitions("orders", 3)
        .await
        .expect("add partitions with the rule");
    alice
        .delete_group("billing")
        .await
        .expect("delete with the rule");
    let info = admin.describe_topic("orders").await.expect("describe");
    assert_eq!(
        info.configs,
        [
            ("max.message.bytes".to_owned(), "1048576".to_owned()),
            ("retention.ms".to_owned(), "600000".to_owned())
        ]
    );
    assert_eq!(info.partitions.len(), 3);
    assert!(
        admin
            .list_group_offsets("billing")
            .await
            .expect("offsets")
            .is_empty()
    );
    eventually(
        "audit lines naming alice",
        Duration::from_secs(10),
        || async {
            let log = broker.stderr();
            let audited = |action: &str| {
                log.lines().any(|l| {
                    l.contains("quiver::audit") && l.contains("User:alice") && l.contains(action)
                })
            };
            (audited("topic_alter_configs")
                && audited("topic_add_partitions")
                && audited("group_delete"))
            .then_some(())
        },
    )
    .await;

    // No certificate: no connection, so no change either.
    assert!(
        connect_as(&broker, None).await.is_err(),
        "an anonymous client got in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_beats_allow_prefixes_match_and_super_users_bypass() {
    use Operation::*;
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let (broker, clients) =
        locked_down(dir.path(), certs.path(), &["admin", "alice", "carol"]).await;
    let [admin, alice, carol] = clients.try_into().ok().expect("one client per user");
    for topic in ["orders-eu", "orders-us", "payments"] {
        admin
            .admin()
            .create_topic(quiver_sdk::NewTopic::new(topic, 1, 1))
            .await
            .expect("create");
    }
    let mut prefixed = rule("User:alice", ResourceType::Topic, "orders-", Write);
    prefixed.pattern = PatternType::Prefixed;
    let mut deny = rule("User:alice", ResourceType::Topic, "orders-us", Write);
    deny.permission = Permission::Deny;
    let everyone = rule("User:*", ResourceType::Topic, "payments", Read);
    admin
        .admin()
        .create_acls(vec![prefixed, deny, everyone])
        .await
        .expect("rules");
    let produce = |client: &Client, topic: &'static str| {
        let client = client.clone();
        async move {
            client
                .produce(topic, 0, Acks::Leader, &[Record::from_value(&b"v"[..], 1)])
                .await
        }
    };
    produce(&alice, "orders-eu")
        .await
        .expect("the prefixed rule allows");
    let denied = produce(&alice, "orders-us").await.expect_err("deny wins");
    assert_eq!(denied.code(), Some(ErrorCode::TopicAuthorizationFailed));
    let denied = produce(&alice, "payments").await.expect_err("no rule");
    assert_eq!(denied.code(), Some(ErrorCode::TopicAuthorizationFailed));
    // `User:*` reads payments, for carol too; write is still nobody's.
    carol
        .fetch_batches(
            "payments",
            0,
            0,
            &FetchOptions::default().max_wait(Duration::ZERO),
        )
        .await
        .expect("User:* reads");
    assert!(produce(&carol, "payments").await.is_err());
    // The super user needs no rule, even where a deny names another principal.
    produce(&admin, "orders-us").await.expect("super user");

    let listed = admin
        .admin()
        .describe_acls(AclDescribeRequest {
            principal: Some("User:alice".into()),
            ..AclDescribeRequest::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Through the CLI: the same rules, and an invalid one refused before it is sent.
    let admin_cert = certs.path().join("admin.pem").display().to_string();
    let admin_key = certs.path().join("admin.key").display().to_string();
    let auth = [
        "--client-cert",
        admin_cert.as_str(),
        "--client-key",
        admin_key.as_str(),
    ];
    let mut args = vec!["acl", "list", "--principal", "User:alice"];
    args.extend(auth);
    let out = broker.cli(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("orders-us") && text.contains("deny"),
        "{text}"
    );
    let mut args = vec![
        "acl",
        "add",
        "--principal",
        "User:carol",
        "--topic",
        "orders-eu",
        "--operation",
        "read,describe",
    ];
    args.extend(auth);
    assert!(broker.cli(&args).status.success());
    let mut args = vec![
        "acl",
        "add",
        "--principal",
        "carol",
        "--topic",
        "t",
        "--operation",
        "read",
    ];
    args.extend(auth);
    let out = broker.cli(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("User:"));
    carol
        .list_offsets("orders-eu", 0, quiver_wire::message::OffsetSpec::Latest)
        .await
        .expect("carol's new rule applies to her next request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_id_read_from_a_fetched_batch_cannot_be_written_under() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let (_broker, clients) =
        locked_down(dir.path(), certs.path(), &["admin", "alice", "mallory"]).await;
    let [admin, alice, mallory] = clients.try_into().ok().expect("one client per user");
    admin
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("ledger", 1, 1))
        .await
        .expect("create");
    // Both may write and read the topic: the attack needs no more than that.
    let mut rules = Vec::new();
    for who in ["User:alice", "User:mallory"] {
        for op in [Operation::Write, Operation::Read] {
            rules.push(rule(who, ResourceType::Topic, "ledger", op));
        }
    }
    admin.admin().create_acls(rules).await.expect("rules");

    let producer = quiver_sdk::Producer::new(
        alice.clone(),
        quiver_sdk::ProducerConfig::default().acks(Acks::All),
    );
    let send = |n: u32| {
        let producer = &producer;
        async move {
            producer
                .send(quiver_sdk::ProducerRecord::new("ledger", format!("alice-{n}")).partition(0))
                .await
                .expect("queued")
                .await
                .expect("delivered")
        }
    };
    send(0).await;

    // Mallory reads the victim's producer id, epoch and sequence off the stored batch.
    let fetched = mallory
        .fetch_batches("ledger", 0, 0, &FetchOptions::default())
        .await
        .expect("fetch");
    let header = quiver_wire::batch::BatchHeader::parse(&fetched.batches).expect("a batch");
    assert_ne!(header.producer_id, quiver_wire::batch::NO_PRODUCER_ID);
    let mut forged = quiver_wire::batch::BatchBuilder::new(quiver_wire::batch::ProducerStamp {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence + header.record_count,
    });
    forged.push(&Record::from_value(&b"forged"[..], 1));
    let forged = forged.finish().expect("a batch");
    let refused = mallory
        .produce_batch("ledger", 0, Acks::All, forged)
        .await
        .expect_err("another principal's producer id");
    assert_eq!(
        refused.code(),
        Some(ErrorCode::ProducerIdNotOwned),
        "{refused}"
    );

    // The victim's next records are stored, none taken for duplicates.
    for n in 1..=3 {
        send(n).await;
    }
    producer.close().await;
    let values: Vec<String> = quiver_tests::fetch_all(&alice, "ledger", 0, 0)
        .await
        .into_iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(values, ["alice-0", "alice-1", "alice-2", "alice-3"]);
}

/// Runs `quiver serve` in a network namespace of its own whose only addresses are
/// loopback and 10.1.2.3, listening on the latter, with `extra` flags and `env`;
/// returns whether it started and its stderr. `unshare -rn` needs no privilege beyond
/// user namespaces, and no traffic leaves the namespace.
fn serve_on_a_routable_address(
    data_dir: &Path,
    extra: &str,
    env: &[(&str, &str)],
) -> (bool, String) {
    let script = format!(
        "ip link set lo up && ip addr add 10.1.2.3/32 dev lo && exec {} serve --data-dir {} --listen 10.1.2.3:0 --admin-listen 127.0.0.1:0 {extra}",
        quiver_tests::quiver_bin().display(),
        data_dir.display()
    );
    // A user namespace too where the kernel allows one (no privilege needed), else a
    // network namespace alone (as root).
    let with_user = std::process::Command::new("unshare")
        .args(["-rn", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let flags = if with_user { "-rn" } else { "-n" };
    let mut command = std::process::Command::new("unshare");
    command
        .args([flags, "sh", "-c", &script])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("QUIVER_") {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("unshare runs (util-linux)");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut started = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let done = line.contains("listening on");
        lines.push(line);
        if done {
            started = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        lines.push(line);
    }
    (started, lines.join("\n"))
}

#[test]
fn a_routable_listener_needs_authentication_or_an_explicit_allow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (started, log) = serve_on_a_routable_address(dir.path(), "", &[]);
    assert!(!started, "an anonymous broker started on 10.1.2.3:\n{log}");
    let refusal: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(refusal.len(), 1, "{log}");
    assert!(
        refusal[0].contains("`authentication`") && refusal[0].contains("allow_anonymous"),
        "{log}"
    );

    let (started, log) = serve_on_a_routable_address(dir.path(), "--allow-anonymous", &[]);
    assert!(started, "--allow-anonymous did not start:\n{log}");
    assert!(
        log.contains("WARN") && log.contains("allow_anonymous"),
        "{log}"
    );

    let (started, log) =
        serve_on_a_routable_address(dir.path(), "", &[("QUIVER_AUTHENTICATION", "mtls")]);
    assert!(started, "mTLS on a routable address did not start:\n{log}");
    assert!(!log.contains("allow_anonymous"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_added_through_one_broker_holds_on_every_broker() {
    let root = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let brokers = quiver_tests::start_cluster(root.path(), LOCKED_DOWN);
    let admin_cert = issue(&brokers[0].data_dir, "admin", certs.path());
    let alice_cert = issue(&brokers[0].data_dir, "alice", certs.path());
    let admin = client_as(&brokers[0], &admin_cert).await;
    eventually("the topic is created", Duration::from_secs(60), || async {
        match admin
            .admin()
            .create_topic(quiver_sdk::NewTopic::new("shared", 1, 3))
            .await
        {
            Ok(()) => Some(()),
            Err(err) if err.code() == Some(ErrorCode::TopicAlreadyExists) => Some(()),
            Err(_) => None,
        }
    })
    .await;
    for broker in &brokers[1..] {
        let alice = client_as(broker, &alice_cert).await;
        let err = alice
            .admin()
            .describe_topic("shared")
            .await
            .expect_err("no rule yet");
        assert_eq!(err.code(), Some(ErrorCode::TopicAuthorizationFailed));
    }
    admin
        .admin()
        .create_acls(vec![rule(
            "User:alice",
            ResourceType::Topic,
            "shared",
            Operation::Describe,
        )])
        .await
        .expect("rule through broker 1");
    for broker in &brokers[1..] {
        let alice = client_as(broker, &alice_cert).await;
        eventually(
            "the rule reaches the broker",
            Duration::from_secs(30),
            || async { alice.admin().describe_topic("shared").await.ok() },
        )
        .await;
        let refused = alice
            .produce(
                "shared",
                0,
                Acks::Leader,
                &[Record::from_value(&b"v"[..], 1)],
            )
            .await
            .expect_err("describe is not write");
        assert!(is_authorization_failure(refused.code()), "{refused}");
    }
}

/// Runs `quiver ARGS --broker ADDR --ca-cert CA` against `broker` with `env`.
fn quiver_with_env(broker: &Broker, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut full: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    full.extend([
        "--broker".to_owned(),
        broker.quic_addr.to_string(),
        "--ca-cert".to_owned(),
        broker.ca_cert().display().to_string(),
    ]);
    run_quiver(&full, None, env)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, read whole.
fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                stack.push(entry.path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_users_get_in_with_their_password_and_nobody_learns_who_exists() {
    const PASSWORD: &str = "correct horse battery staple";
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_with(
        dir.path(),
        &[
            ("QUIVER_AUTHENTICATION", "mtls,scram"),
            ("QUIVER_AUTHORIZATION", "acl"),
            ("QUIVER_SUPER_USERS", "User:admin"),
        ],
        None,
    );
    let admin_cert = issue(&broker.data_dir, "admin", certs.path());
    let admin = client_as(&broker, &admin_cert).await;
    admin
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("notes", 1, 1))
        .await
        .expect("create");
    admin
        .admin()
        .upsert_user("alice", PASSWORD, 4096)
        .await
        .expect("user through the SDK");
    admin
        .admin()
        .create_acls(vec![rule(
            "User:alice",
            ResourceType::Topic,
            "notes",
            Operation::Write,
        )])
        .await
        .expect("rule");

    let login = |user: &str, password: &str| {
        let mut config = broker.client_config();
        config.scram = Some(quiver_sdk::ScramLogin {
            user: user.into(),
            password: password.into(),
        });
        config
    };
    let alice = Client::connect(login("alice", PASSWORD))
        .await
        .expect("the right password");
    alice
        .produce(
            "notes",
            0,
            Acks::Leader,
            &[Record::from_value(&b"v"[..], 1)],
        )
        .await
        .expect("alice writes under her own name");
    let refused = alice
        .admin()
        .delete_topic("notes")
        .await
        .expect_err("no rule");
    assert!(refused.to_string().contains("User:alice"), "{refused}");

    let Err(wrong) = Client::connect(login("alice", "guess")).await else {
        panic!("a wrong password got in");
    };
    let Err(unknown) = Client::connect(login("nobody", PASSWORD)).await else {
        panic!("an unknown user got in");
    };
    assert!(
        matches!(wrong, quiver_sdk::ConnectError::Authentication(_)),
        "{wrong}"
    );
    assert_eq!(
        wrong.to_string(),
        unknown.to_string(),
        "the answers tell an unknown user from a wrong password"
    );

    // Without a certificate or a password only the hello is answered.
    let mut anonymous = broker.client_config();
    anonymous.connect_timeout = Duration::from_secs(5);
    let anonymous = Client::connect(anonymous).await.expect("the handshake");
    anonymous
        .call(&quiver_wire::message::ApiVersionsRequest)
        .await
        .expect("hello");
    let err = anonymous
        .admin()
        .list_topics()
        .await
        .expect_err("not authenticated");
    assert_eq!(err.code(), Some(ErrorCode::AuthenticationFailed), "{err}");

    // The CLI logs in with the password from the environment; the user list shows
    // names and iterations only; the controller's files never hold the password.
    let admin_cert_path = admin_cert.0.display().to_string();
    let admin_key_path = admin_cert.1.display().to_string();
    let out = quiver_with_env(
        &broker,
        &[
            "user",
            "create",
            "carol",
            "--client-cert",
            &admin_cert_path,
            "--client-key",
            &admin_key_path,
        ],
        &[("QUIVER_PASSWORD", "carol's own password")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list_as_admin = |password: &'static str| {
        quiver_with_env(
            &broker,
            &["user", "list", "--user", "admin"],
            &[("QUIVER_PASSWORD", password)],
        )
    };
    assert!(
        !list_as_admin("no such password").status.success(),
        "admin has no password, only a certificate"
    );
    admin
        .admin()
        .upsert_user("admin", "admin's password", 4096)
        .await
        .expect("admin password");
    let out = list_as_admin("admin's password");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("alice\t4096") && text.contains("carol"),
        "{text}"
    );
    let stored = all_bytes_under(&broker.data_dir.join("controller"));
    assert!(!stored.is_empty());
    for secret in [PASSWORD, "carol's own password", "admin's password"] {
        assert!(!contains(&stored, secret.as_bytes()), "`{secret}` stored");
    }

    eventually(
        "SCRAM failures counted",
        Duration::from_secs(10),
        || async {
            (broker.metric("quiver_authentication_failures_total{mechanism=\"scram\"}") >= 2.0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_quota_is_throttled_and_another_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_with(dir.path(), LOCKED_DOWN, None);
    let admin_cert = issue(&broker.data_dir, "admin", certs.path());
    let admin = client_as(&broker, &admin_cert).await;
    let alice = client_as(&broker, &issue(&broker.data_dir, "alice", certs.path())).await;
    let bob = client_as(&broker, &issue(&broker.data_dir, "bob", certs.path())).await;
    admin
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("metered", 1, 1))
        .await
        .expect("create");
    admin
        .admin()
        .create_acls(vec![
            rule(
                "User:alice",
                ResourceType::Topic,
                "metered",
                Operation::Write,
            ),
            rule("User:bob", ResourceType::Topic, "metered", Operation::Write),
        ])
        .await
        .expect("rules");
    // 1,000 bytes per second over the 10-second window: a 12 KB batch is 2 s over.
    admin
        .admin()
        .set_quota(
            "User:alice",
            quiver_wire::quota::Quota {
                produce_bytes_per_sec: Some(1_000),
                ..Default::default()
            },
        )
        .await
        .expect("quota");
    let batch = || {
        let mut builder =
            quiver_wire::batch::BatchBuilder::new(quiver_wire::batch::ProducerStamp::NONE);
        builder.push(&Record::from_value(vec![b'x'; 12_000], 1));
        builder.finish().expect("a batch")
    };
    let answered = |client: Client| async move {
        client
            .produce_batch("metered", 0, Acks::Leader, batch())
            .await
            .expect("a throttled produce is still stored")
            .expect("an answer")
            .throttle_time_ms
    };
    let alice_told = answered(alice.clone()).await;
    let bob_told = answered(bob.clone()).await;
    // The answer tells the client how long to wait: about 2 s (12 KB at 1,000 B/s is
    // 12 s of quota, the window covers 10).
    assert!(alice_told > 0, "alice's answer carries no throttle time");
    assert_eq!(bob_told, 0, "bob has no quota");
    let alice_throttled =
        broker.metric("quiver_throttle_seconds_total{principal=\"User:alice\",quota=\"produce\"}");
    assert!(alice_throttled > 0.0, "alice was not throttled");
    assert_eq!(
        broker.metric("quiver_throttle_seconds_total{principal=\"User:bob\",quota=\"produce\"}"),
        0.0,
        "bob has no quota"
    );

    let admin_cert_path = admin_cert.0.display().to_string();
    let admin_key_path = admin_cert.1.display().to_string();
    let auth = [
        "--client-cert",
        admin_cert_path.as_str(),
        "--client-key",
        admin_key_path.as_str(),
    ];
    let mut args = vec!["quota", "list"];
    args.extend(auth);
    let out = broker.cli(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("User:alice\t1000\t-\t-"),
        "{text}"
    );
    // A quota without limits removes it; a zero rate is refused.
    let mut args = vec![
        "quota",
        "set",
        "--principal",
        "User:alice",
        "--produce-bytes-per-sec",
        "0",
    ];
    args.extend(auth);
    assert!(!broker.cli(&args).status.success());
    let mut args = vec!["quota", "set", "--principal", "User:alice"];
    args.extend(auth);
    assert!(broker.cli(&args).status.success());
    assert!(admin.admin().list_quotas().await.expect("list").is_empty());
}
