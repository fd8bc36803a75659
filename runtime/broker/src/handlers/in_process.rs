//! The handlers driven through the API table against a broker's services assembled
//! in process (`crate::testing`): what each API family answers, and what it refuses
//! to a caller that may not call it, without starting a process or opening a socket.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quiver_wire::ErrorCode;
use quiver_wire::batch::{BatchBuilder, BatchHeader, ProducerStamp, Record};
use quiver_wire::cluster::{ClusterStatusResponse, ControllerRpcRequest};
use quiver_wire::frame::{FRAME_LENGTH_BYTES, parse_response};
use quiver_wire::message::{
    Acks, CreateTopicRequest, DeleteTopicRequest, FetchRequest, FetchResponse,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetSpec, ProduceRequest, ProduceResponse, Request, ResponseBody,
};

use super::{Call, Outgoing, RequestError, route};
use crate::clock::{Clock, SystemClock};
use crate::security::{ConnectionIdentity, Principal};
use crate::state::BrokerState;

/// One in-process broker and a temporary data directory that outlives it.
struct Harness {
    state: Arc<BrokerState>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(tweak: impl FnOnce(&mut crate::config::BrokerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let state = crate::testing::in_process_broker(dir.path(), clock, tweak).await;
        Self { state, _dir: dir }
    }

    /// `request` from `principal`, through the API table: access, authorisation,
    /// then the handler.
    async fn call_as(&self, principal: Principal, request: Request) -> Result<Bytes, RequestError> {
        let connection = ConnectionIdentity::new(principal.clone());
        let call = Call {
            state: &self.state,
            answered: true,
            principal: &principal,
            connection: &connection,
            version: request.api_key().versions().1,
        };
        match route(request, &call).await? {
            Outgoing::Frame(frame) => Ok(body(frame)),
            Outgoing::Chunks(chunks) => {
                let mut frame = BytesMut::new();
                for chunk in chunks {
                    frame.extend_from_slice(&chunk);
                }
                Ok(body(frame.freeze()))
            }
            Outgoing::Nothing => Ok(Bytes::new()),
        }
    }

    async fn call(&self, request: Request) -> Result<Bytes, RequestError> {
        self.call_as(Principal::Anonymous, request).await
    }

    /// The decoded answer to `request` from `principal`, which must be served.
    async fn ask_as<R: ResponseBody>(
        &self,
        principal: Principal,
        request: Request,
        what: &str,
    ) -> R {
        let body = self
            .call_as(principal, request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {} {}", e.code.name(), e.message));
        R::decode_body(body).unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    async fn ask<R: ResponseBody>(&self, request: Request, what: &str) -> R {
        self.ask_as(Principal::Anonymous, request, what).await
    }

    async fn create_topic(&self, name: &str, partitions: u32) {
        self.call(create(name, partitions))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {} {}", e.code.name(), e.message));
        crate::testing::wait_led(&self.state, name).await;
    }

    async fn stop(self) {
        let _ = self.state.shutdown.send(true);
        self.state
            .cluster
            .controller
            .shutdown()
            .await
            .expect("controller stops");
    }
}

/// The body of a response frame (length prefix included) that is not an error.
fn body(frame: Bytes) -> Bytes {
    let prefix: [u8; FRAME_LENGTH_BYTES] = frame[..FRAME_LENGTH_BYTES]
        .try_into()
        .expect("a length prefix");
    assert_eq!(
        u32::from_be_bytes(prefix) as usize,
        frame.len() - FRAME_LENGTH_BYTES,
        "the frame is whole"
    );
    match parse_response(frame.slice(FRAME_LENGTH_BYTES..)).expect("a response frame") {
        Ok(body) => body,
        Err(error) => panic!("an error frame: {error:?}"),
    }
}

fn batch(values: &[&str]) -> BytesMut {
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    for value in values {
        builder.push(&Record::from_value(value.to_string(), 1_700_000_000_000));
    }
    BytesMut::from(builder.finish().expect("a batch").as_ref())
}

/// A one-replica topic of `partitions` partitions.
fn create(name: &str, partitions: u32) -> Request {
    Request::CreateTopic(CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: 1,
        configs: Vec::new(),
    })
}

fn produce(topic: &str, partition: u32, batch: BytesMut) -> Request {
    Request::Produce(ProduceRequest {
        topic: topic.into(),
        partition,
        acks: Acks::All,
        timeout_ms: 5_000,
        batch,
    })
}

fn fetch(topic: &str, offset: u64) -> Request {
    Request::Fetch(FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset,
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1024 * 1024,
        plugin: None,
    })
}

fn latest(topic: &str) -> Request {
    Request::ListOffsets(ListOffsetsRequest {
        topic: topic.into(),
        partition: 0,
        spec: OffsetSpec::Latest,
    })
}

fn refused(outcome: Result<Bytes, RequestError>) -> ErrorCode {
    match outcome {
        Ok(_) => panic!("answered, where a refusal was due"),
        Err(err) => err.code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_stores_a_batch_and_fetch_returns_the_same_bytes() {
    let broker = Harness::start(|_| {}).await;
    broker.create_topic("orders", 1).await;
    let sent = batch(&["a", "b", "c"]);
    let first = broker
        .ask::<ProduceResponse>(produce("orders", 0, sent.clone()), "produced")
        .await;
    assert_eq!(first.base_offset, 0);
    let second = broker
        .ask::<ProduceResponse>(produce("orders", 0, batch(&["d"])), "produced")
        .await;
    assert_eq!(second.base_offset, 3);

    let fetched = broker
        .ask::<FetchResponse>(fetch("orders", 0), "fetched")
        .await;
    assert_eq!(fetched.high_watermark, 4);
    let header = BatchHeader::parse(&fetched.batches).expect("a stored batch");
    assert_eq!((header.base_offset, header.record_count), (0, 3));
    // Stored as sent but for the offsets and epoch the broker stamps: the records
    // after the header are the producer's bytes.
    let records_at = quiver_wire::batch::BATCH_HEADER_BYTES;
    assert_eq!(
        &fetched.batches[records_at..header.total_bytes()],
        &sent[records_at..],
        "the stored records are the bytes the producer sent"
    );
    let end = broker
        .ask::<ListOffsetsResponse>(latest("orders"), "listed")
        .await;
    assert_eq!((end.offset, end.log_end_offset), (Some(4), 4));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_refusals_name_their_cause_and_store_nothing() {
    let broker = Harness::start(|_| {}).await;
    broker.create_topic("orders", 2).await;
    assert_eq!(
        refused(broker.call(produce("nowhere", 0, batch(&["x"]))).await),
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        refused(broker.call(produce("orders", 7, batch(&["x"]))).await),
        ErrorCode::UnknownPartition
    );
    let mut corrupt = batch(&["x", "y"]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        refused(broker.call(produce("orders", 0, corrupt)).await),
        ErrorCode::CorruptBatch
    );
    assert_eq!(
        refused(
            broker
                .call(produce("orders", 0, BytesMut::from(&b"short"[..])))
                .await
        ),
        ErrorCode::CorruptBatch
    );
    let end = broker
        .ask::<ListOffsetsResponse>(latest("orders"), "listed")
        .await;
    assert_eq!(end.log_end_offset, 0, "a refused produce stored nothing");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_once_listed_and_deleted() {
    let broker = Harness::start(|_| {}).await;
    broker.create_topic("views", 3).await;
    let again = broker.call(create("views", 1)).await;
    assert_eq!(refused(again), ErrorCode::TopicAlreadyExists);
    let bad_name = broker.call(create("../escape", 1)).await;
    assert_eq!(refused(bad_name), ErrorCode::InvalidTopicName);

    let listed = broker
        .ask::<MetadataResponse>(
            Request::Metadata(MetadataRequest { topics: None }),
            "metadata",
        )
        .await;
    let views = listed
        .topics
        .iter()
        .find(|t| t.name == "views")
        .expect("listed");
    assert_eq!(views.partitions.len(), 3);
    assert!(
        views
            .partitions
            .iter()
            .all(|p| p.leader == 1 && p.isr == [1])
    );
    assert!(
        listed.topics.iter().all(|t| !t.name.starts_with("__")),
        "internal topics are not listed"
    );

    broker
        .call(Request::DeleteTopic(DeleteTopicRequest {
            name: "views".into(),
        }))
        .await
        .expect("deleted");
    assert!(broker.state.topics.get("views").is_none());
    assert_eq!(
        refused(broker.call(produce("views", 0, batch(&["x"]))).await),
        ErrorCode::UnknownTopic
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_on_a_principal_without_a_rule_is_refused_and_a_super_user_served() {
    let broker = Harness::start(|config| {
        config.authorization_acl = true;
        config.super_users = vec!["User:admin".into()];
    })
    .await;
    let admin = Principal::User("User:admin".into());
    assert_eq!(
        refused(
            broker
                .call_as(Principal::User("User:mallory".into()), create("owned", 1))
                .await
        ),
        ErrorCode::TopicAuthorizationFailed
    );
    assert!(broker.state.topics.get("owned").is_none());
    broker
        .call_as(admin.clone(), create("owned", 1))
        .await
        .expect("a super user creates");
    crate::testing::wait_led(&broker.state, "owned").await;
    for stranger in [Principal::Anonymous, Principal::User("User:mallory".into())] {
        assert_eq!(
            refused(
                broker
                    .call_as(stranger.clone(), produce("owned", 0, batch(&["x"])))
                    .await
            ),
            ErrorCode::TopicAuthorizationFailed
        );
        assert_eq!(
            refused(broker.call_as(stranger.clone(), fetch("owned", 0)).await),
            ErrorCode::TopicAuthorizationFailed
        );
        // Listings leave out what the principal may not describe.
        let seen = broker
            .ask_as::<MetadataResponse>(
                stranger,
                Request::Metadata(MetadataRequest { topics: None }),
                "metadata",
            )
            .await;
        assert!(seen.topics.iter().all(|t| t.name != "owned"));
    }
    broker
        .call_as(admin, produce("owned", 0, batch(&["x"])))
        .await
        .expect("a super user produces");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_are_distinct_and_owned_by_their_principal() {
    let broker = Harness::start(|_| {}).await;
    broker.create_topic("ledger", 1).await;
    let alice = Principal::User("User:alice".into());
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let answer = broker
            .ask_as::<InitProducerIdResponse>(
                alice.clone(),
                Request::InitProducerId(Default::default()),
                "an id",
            )
            .await;
        assert!(
            ids.insert(answer.producer_id),
            "{} handed out twice",
            answer.producer_id
        );
    }
    let owned = *ids.first().expect("an id");
    let stamped = |principal_sequence: u32| {
        let mut builder = BatchBuilder::new(ProducerStamp {
            producer_id: owned,
            producer_epoch: 0,
            base_sequence: principal_sequence,
        });
        builder.push(&Record::from_value("x", 1_700_000_000_000));
        BytesMut::from(builder.finish().expect("a batch").as_ref())
    };
    // Another principal cannot write under alice's id.
    let mallory = Principal::User("User:mallory".into());
    assert_eq!(
        refused(
            broker
                .call_as(mallory, produce("ledger", 0, stamped(0)))
                .await
        ),
        ErrorCode::ProducerIdNotOwned
    );
    broker
        .call_as(alice, produce("ledger", 0, stamped(0)))
        .await
        .expect("the owner writes");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_describes_the_one_member_quorum() {
    let broker = Harness::start(|_| {}).await;
    let status = broker
        .ask::<ClusterStatusResponse>(Request::ClusterStatus(Default::default()), "status")
        .await;
    assert_eq!(status.node_id, 1);
    assert_eq!(status.controller_leader, Some(1));
    assert_eq!(status.voters, vec![1]);
    assert!(status.brokers.iter().any(|b| b.id == 1 && !b.fenced));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_reaches_a_broker_peer_api_whatever_its_principal() {
    let broker = Harness::start(|_| {}).await;
    broker.create_topic("orders", 1).await;
    let replica_fetch = || {
        Request::ReplicaFetch(quiver_wire::cluster::ReplicaFetchRequest {
            topic: "orders".into(),
            partition: 0,
            replica_id: 2,
            leader_epoch: 0,
            fetch_offset: 0,
            last_fetched_epoch: None,
            max_bytes: 1024,
            max_wait_ms: 0,
        })
    };
    let module = || {
        Request::PluginModule(quiver_wire::plugin::PluginModuleRequest {
            version: "p-1".into(),
        })
    };
    let controller_rpc = || {
        Request::ControllerRpc(ControllerRpcRequest {
            payload: Bytes::from_static(b"{}"),
        })
    };
    for client in [Principal::Anonymous, Principal::User("User:admin".into())] {
        for request in [controller_rpc(), replica_fetch(), module()] {
            assert_eq!(
                refused(broker.call_as(client.clone(), request).await),
                ErrorCode::ClusterAuthorizationFailed
            );
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_is_not_webassembly_is_refused_and_nothing_is_registered() {
    let broker = Harness::start(|_| {}).await;
    let upload = Request::PluginUpload(quiver_wire::plugin::PluginUploadRequest {
        name: "junk".into(),
        module: Bytes::from_static(b"not a module"),
    });
    assert_eq!(refused(broker.call(upload).await), ErrorCode::InvalidPlugin);
    let listed = broker
        .ask::<quiver_wire::plugin::PluginListResponse>(
            Request::PluginList(Default::default()),
            "listed",
        )
        .await;
    assert!(listed.plugins.is_empty(), "{:?}", listed.plugins);
    assert!(
        broker
            .state
            .cluster
            .controller
            .metadata()
            .plugins()
            .is_empty()
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_commits_offsets_and_a_stranger_cannot() {
    use quiver_wire::group::{
        CommittedOffset, GroupHeartbeatRequest, GroupHeartbeatResponse, OffsetCommitRequest,
        OffsetFetchRequest, OffsetFetchResponse,
    };
    let broker = Harness::start(|_| {}).await;
    broker.create_topic("events", 2).await;
    let joined = broker
        .ask::<GroupHeartbeatResponse>(
            Request::GroupHeartbeat(GroupHeartbeatRequest {
                group: "billing".into(),
                member_id: String::new(),
                member_epoch: 0,
                session_timeout_ms: 10_000,
                subscription: Some(vec!["events".into()]),
                owned: Vec::new(),
            }),
            "joined",
        )
        .await;
    assert!(!joined.member_id.is_empty());
    let commit = |member_id: &str, member_epoch: i32| {
        Request::OffsetCommit(OffsetCommitRequest {
            group: "billing".into(),
            member_id: member_id.into(),
            member_epoch,
            offsets: vec![CommittedOffset {
                topic: "events".into(),
                partition: 1,
                offset: 42,
                metadata: "m".into(),
            }],
        })
    };
    assert_eq!(
        refused(
            broker
                .call(commit("someone-else", joined.member_epoch))
                .await
        ),
        ErrorCode::UnknownMemberId
    );
    broker
        .call(commit(&joined.member_id, joined.member_epoch))
        .await
        .expect("the member commits");
    let fetched = broker
        .ask::<OffsetFetchResponse>(
            Request::OffsetFetch(OffsetFetchRequest {
                group: "billing".into(),
                partitions: None,
            }),
            "fetched",
        )
        .await;
    let committed: Vec<(String, u32, u64)> = fetched
        .offsets
        .into_iter()
        .filter_map(|(topic, partition, c)| c.map(|c| (topic, partition, c.offset)))
        .collect();
    assert_eq!(committed, vec![("events".to_owned(), 1, 42)]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_granted_by_a_super_user_lets_its_principal_in_until_it_is_deleted() {
    use quiver_wire::acl::{
        AclBinding, AclCreateRequest, AclDeleteRequest, AclDescribeRequest, AclDescribeResponse,
        Operation, PatternType, Permission, ResourceType,
    };
    let broker = Harness::start(|config| {
        config.authorization_acl = true;
        config.super_users = vec!["User:admin".into()];
    })
    .await;
    let admin = Principal::User("User:admin".into());
    let alice = Principal::User("User:alice".into());
    broker
        .call_as(admin.clone(), create("audit", 1))
        .await
        .expect("created");
    crate::testing::wait_led(&broker.state, "audit").await;
    let write_audit = AclBinding {
        principal: "User:alice".into(),
        resource_type: ResourceType::Topic,
        pattern: PatternType::Literal,
        resource_name: "audit".into(),
        operation: Operation::Write,
        permission: Permission::Allow,
    };
    let grant = || {
        Request::AclCreate(AclCreateRequest {
            bindings: vec![write_audit.clone()],
        })
    };
    // Granting is the cluster's to alter: alice cannot grant herself.
    assert_eq!(
        refused(broker.call_as(alice.clone(), grant()).await),
        ErrorCode::ClusterAuthorizationFailed
    );
    assert_eq!(
        refused(
            broker
                .call_as(alice.clone(), produce("audit", 0, batch(&["x"])))
                .await
        ),
        ErrorCode::TopicAuthorizationFailed
    );
    broker
        .call_as(admin.clone(), grant())
        .await
        .expect("granted");
    broker
        .call_as(alice.clone(), produce("audit", 0, batch(&["x"])))
        .await
        .expect("alice writes with her rule");
    let described = broker
        .ask_as::<AclDescribeResponse>(
            admin.clone(),
            Request::AclDescribe(AclDescribeRequest {
                principal: Some("User:alice".into()),
                resource_type: None,
                resource_name: None,
            }),
            "described",
        )
        .await;
    assert_eq!(described.bindings, vec![write_audit.clone()]);
    broker
        .call_as(
            admin,
            Request::AclDelete(AclDeleteRequest {
                bindings: vec![write_audit],
            }),
        )
        .await
        .expect("deleted");
    assert_eq!(
        refused(
            broker
                .call_as(alice, produce("audit", 0, batch(&["y"])))
                .await
        ),
        ErrorCode::TopicAuthorizationFailed
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_and_partitions_change_through_the_controller_and_bad_ones_change_nothing() {
    use quiver_wire::message::{AlterTopicConfigsRequest, CreatePartitionsRequest};
    let broker = Harness::start(|_| {}).await;
    broker.create_topic("metrics", 1).await;
    broker
        .call(Request::AlterTopicConfigs(AlterTopicConfigsRequest {
            name: "metrics".into(),
            set: vec![("retention.ms".into(), "60000".into())],
            delete: Vec::new(),
        }))
        .await
        .expect("altered");
    let held = |key: &str| {
        broker
            .state
            .topics
            .get("metrics")
            .and_then(|t| t.configs.get(key).cloned())
    };
    assert_eq!(held("retention.ms").as_deref(), Some("60000"));
    let bad = broker
        .call(Request::AlterTopicConfigs(AlterTopicConfigsRequest {
            name: "metrics".into(),
            set: vec![("retention.ms".into(), "soon".into())],
            delete: Vec::new(),
        }))
        .await;
    assert_eq!(refused(bad), ErrorCode::InvalidConfig);
    assert_eq!(held("retention.ms").as_deref(), Some("60000"), "unchanged");

    broker
        .call(Request::CreatePartitions(CreatePartitionsRequest {
            name: "metrics".into(),
            partitions: 3,
        }))
        .await
        .expect("grown");
    crate::testing::wait_led(&broker.state, "metrics").await;
    broker
        .call(produce("metrics", 2, batch(&["on the new partition"])))
        .await
        .expect("the new partition takes records");
    let shrink = broker
        .call(Request::CreatePartitions(CreatePartitionsRequest {
            name: "metrics".into(),
            partitions: 2,
        }))
        .await;
    assert_eq!(refused(shrink), ErrorCode::InvalidPartitions);
    assert_eq!(
        broker
            .state
            .topics
            .get("metrics")
            .map(|t| t.partitions.len()),
        Some(3)
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_quotas_are_the_cluster_alterers_to_set_and_take_effect_for_their_principal() {
    use quiver_wire::quota::{Quota, QuotaListResponse, QuotaSetRequest};
    use quiver_wire::sasl::{
        StoredCredential, UserDeleteRequest, UserListResponse, UserUpsertRequest,
    };
    let broker = Harness::start(|config| {
        config.authorization_acl = true;
        config.super_users = vec!["User:admin".into()];
    })
    .await;
    let admin = Principal::User("User:admin".into());
    let mallory = Principal::User("User:mallory".into());
    let derived = quiver_wire::scram::ScramCredential::new("correct horse", 4096).expect("derived");
    let upsert = || {
        Request::UserUpsert(UserUpsertRequest {
            name: "alice".into(),
            credential: StoredCredential {
                salt: Bytes::from(derived.salt.clone()),
                iterations: derived.iterations,
                stored_key: Bytes::copy_from_slice(&derived.stored_key),
                server_key: Bytes::copy_from_slice(&derived.server_key),
            },
        })
    };
    let quota = || {
        Request::QuotaSet(QuotaSetRequest {
            principal: "User:alice".into(),
            quota: Quota {
                produce_bytes_per_sec: Some(1024),
                fetch_bytes_per_sec: None,
                request_percent: None,
            },
        })
    };
    for request in [upsert(), quota()] {
        assert_eq!(
            refused(broker.call_as(mallory.clone(), request).await),
            ErrorCode::ClusterAuthorizationFailed
        );
    }
    assert!(
        broker
            .state
            .cluster
            .controller
            .metadata()
            .users()
            .is_empty()
    );
    broker
        .call_as(admin.clone(), upsert())
        .await
        .expect("user set");
    broker
        .call_as(admin.clone(), quota())
        .await
        .expect("quota set");
    let users = broker
        .ask_as::<UserListResponse>(
            admin.clone(),
            Request::UserList(Default::default()),
            "listed",
        )
        .await;
    assert_eq!(users.users, vec![("alice".to_owned(), 4096)]);
    let quotas = broker
        .ask_as::<QuotaListResponse>(
            admin.clone(),
            Request::QuotaList(Default::default()),
            "listed",
        )
        .await;
    assert_eq!(quotas.quotas.len(), 1);
    assert_eq!(quotas.quotas[0].1.produce_bytes_per_sec, Some(1024));
    broker
        .call_as(
            admin.clone(),
            Request::UserDelete(UserDeleteRequest {
                name: "alice".into(),
            }),
        )
        .await
        .expect("deleted");
    assert!(
        broker
            .state
            .cluster
            .controller
            .metadata()
            .users()
            .is_empty()
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_apis_give_out_the_public_ca_and_refuse_a_proof_without_the_secret() {
    use quiver_wire::join::{JoinCaResponse, JoinClusterRequest};
    let broker = Harness::start(|_| {}).await;
    let ca = broker
        .ask::<JoinCaResponse>(Request::JoinCa(Default::default()), "the CA")
        .await;
    let pem = std::fs::read(broker.state.config.data_dir.join("tls").join("ca.pem"))
        .expect("the CA file");
    let on_disk = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("a certificate")
        .expect("PEM");
    assert_eq!(
        ca.ca_cert.as_ref(),
        on_disk.as_ref(),
        "the CA as stored, in DER"
    );
    let join = broker
        .call(Request::JoinCluster(JoinClusterRequest {
            node_id: 7,
            addresses: vec!["127.0.0.1:9999".into()],
            csr: Bytes::from_static(b"not a csr"),
            proof: Bytes::from(vec![0u8; 32]),
        }))
        .await;
    assert_eq!(refused(join), ErrorCode::InvalidJoinToken);
    assert!(
        broker
            .state
            .cluster
            .controller
            .metadata()
            .broker(7)
            .is_none(),
        "a refused join registered nothing"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_listed_described_and_deleted_only_when_empty() {
    use quiver_wire::group::{
        DeleteGroupRequest, DescribeGroupRequest, GroupHeartbeatRequest, GroupHeartbeatResponse,
        ListGroupsResponse,
    };
    let broker = Harness::start(|_| {}).await;
    broker.create_topic("events", 1).await;
    let heartbeat = |member_id: String, member_epoch: i32| {
        Request::GroupHeartbeat(GroupHeartbeatRequest {
            group: "audit".into(),
            member_id,
            member_epoch,
            session_timeout_ms: 10_000,
            subscription: Some(vec!["events".into()]),
            owned: Vec::new(),
        })
    };
    let joined = broker
        .ask::<GroupHeartbeatResponse>(heartbeat(String::new(), 0), "joined")
        .await;
    let listed = broker
        .ask::<ListGroupsResponse>(Request::ListGroups(Default::default()), "listed")
        .await;
    assert_eq!(listed.groups, vec![("audit".to_owned(), 1)]);
    broker
        .call(Request::DescribeGroup(DescribeGroupRequest {
            group: "audit".into(),
        }))
        .await
        .expect("described");
    let delete = || {
        Request::DeleteGroup(DeleteGroupRequest {
            group: "audit".into(),
        })
    };
    assert_eq!(
        refused(broker.call(delete()).await),
        ErrorCode::GroupNotEmpty
    );
    broker
        .call(Request::OffsetCommit(
            quiver_wire::group::OffsetCommitRequest {
                group: "audit".into(),
                member_id: joined.member_id.clone(),
                member_epoch: joined.member_epoch,
                offsets: vec![quiver_wire::group::CommittedOffset {
                    topic: "events".into(),
                    partition: 0,
                    offset: 5,
                    metadata: String::new(),
                }],
            },
        ))
        .await
        .expect("committed");
    broker
        .call(heartbeat(
            joined.member_id,
            quiver_wire::group::LEAVE_GROUP_EPOCH,
        ))
        .await
        .expect("left");
    broker
        .call(delete())
        .await
        .expect("an empty group is deleted, its offsets with it");
    assert!(
        broker
            .state
            .cluster
            .controller
            .metadata()
            .offsets()
            .is_empty()
    );
    assert_eq!(
        refused(broker.call(delete()).await),
        ErrorCode::GroupIdNotFound
    );
    broker.stop().await;
}
