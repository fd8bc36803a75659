//! Network faults on a real three-broker cluster: each broker in its own network
//! namespace, links between brokers cut silently while the test's clients still reach
//! every broker (see `quiver_tests::netfault`). A producer (acks=all, one record per
//! request, every id sent once), a consumer and an observer of every broker's metadata
//! record a history; after the network heals, the checker (`quiver_tests::history`)
//! reads it whole against the partition's final contents.
//!
//! Scenarios: the partition leader cut from the controller majority but reachable by
//! producers; the controller leader cut off; a follower whose link flaps; a split where
//! no broker reaches another. Each prints how long the cluster took to serve again
//! once the network healed (measured, never asserted). Skipped, with a message, where
//! network namespaces cannot be made (not root, no `ip netns`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quiver_sdk::{Acks, Client, FetchOptions, Record};
use quiver_tests::history::{self, Event, History, StoredRecord};
use quiver_tests::netfault::NetCluster;
use quiver_tests::shaper::{Shape, ShapeCounts, Shaper};
use quiver_tests::{Broker, ClientAdmin, eventually};
use quiver_wire::cluster::ClusterStatusResponse;
use quiver_wire::message::PartitionInfo;

const NODES: usize = 3;
const TOPIC: &str = "faults";
const PARTITIONS: u32 = 3;
/// A request to a silent broker gives up after this, so clients move on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the cluster gets to serve again once the network healed.
const SERVE_AGAIN_MAX: Duration = Duration::from_secs(60);
/// How long any settling wait may take before the test gives up.
const SETTLE_MAX: Duration = Duration::from_secs(90);

/// The cluster, or `None` (with a message) where this machine cannot make namespaces.
fn start(test: &str) -> Option<NetCluster> {
    match NetCluster::start(NODES, &[]) {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            eprintln!("[{test}] SKIPPED: cannot make network namespaces here: {why}");
            None
        }
    }
}

async fn client(cluster: &NetCluster, node: usize) -> Option<Client> {
    Client::connect(cluster.client_config(node, REQUEST_TIMEOUT))
        .await
        .ok()
}

async fn status(cluster: &NetCluster, node: usize) -> Option<ClusterStatusResponse> {
    client(cluster, node)
        .await?
        .admin()
        .describe_cluster()
        .await
        .ok()
}

/// `broker`'s view of partition `partition`.
async fn view(cluster: &NetCluster, node: usize, partition: u32) -> Option<PartitionInfo> {
    let topic = client(cluster, node)
        .await?
        .admin()
        .describe_topic(TOPIC)
        .await
        .ok()?;
    topic
        .partitions
        .into_iter()
        .find(|p| p.partition == partition)
}

/// Waits for a formed cluster and a topic whose partitions all have a leader and a full
/// ISR on every broker; returns the controller leader (0-based) and the partitions as
/// node 0 sees them.
async fn settle(cluster: &NetCluster, create: bool) -> (usize, Vec<PartitionInfo>) {
    let formed = eventually(
        "a controller leader, three active brokers",
        SETTLE_MAX,
        || async {
            let s = status(cluster, 0).await?;
            let all =
                (1..=NODES as u32).all(|id| s.brokers.iter().any(|b| b.id == id && !b.fenced));
            (all && s.controller_leader.is_some()).then_some(s)
        },
    )
    .await;
    if create {
        let admin = client(cluster, 0).await.expect("client");
        eventually("the topic created", SETTLE_MAX, || async {
            match admin
                .admin()
                .create_topic(
                    quiver_sdk::NewTopic::new(TOPIC, PARTITIONS, NODES as u16)
                        .config("min.insync.replicas", "2"),
                )
                .await
            {
                Ok(()) => Some(()),
                Err(e) if e.code() == Some(quiver_sdk::ErrorCode::TopicAlreadyExists) => Some(()),
                Err(_) => None,
            }
        })
        .await;
    }
    let partitions = eventually(
        "every partition led, its ISR full, on every broker",
        SETTLE_MAX,
        || async {
            let mut first: Option<Vec<PartitionInfo>> = None;
            for node in 0..NODES {
                let topic = client(cluster, node)
                    .await?
                    .admin()
                    .describe_topic(TOPIC)
                    .await
                    .ok()?;
                let ok = topic.partitions.len() == PARTITIONS as usize
                    && topic
                        .partitions
                        .iter()
                        .all(|p| p.leader != u32::MAX && p.isr.len() == NODES);
                if !ok {
                    return None;
                }
                match &first {
                    None => first = Some(topic.partitions),
                    Some(seen) => {
                        let same = seen
                            .iter()
                            .zip(&topic.partitions)
                            .all(|(a, b)| (a.leader, a.leader_epoch) == (b.leader, b.leader_epoch));
                        if !same {
                            return None;
                        }
                    }
                }
            }
            first
        },
    )
    .await;
    let leader = formed.controller_leader.expect("a leader") as usize - 1;
    // The status read above may be older than the topic: read it again.
    let now = status(cluster, 0)
        .await
        .and_then(|s| s.controller_leader)
        .map_or(leader, |l| l as usize - 1);
    (now, partitions)
}

/// The producer, the consumer and the metadata observers, writing one history.
struct Workload {
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts producing to and consuming `partition` through clients bootstrapped on
    /// node `bootstrap`, and watching every broker's view of it.
    async fn start(cluster: &NetCluster, partition: u32, bootstrap: usize) -> Workload {
        let history = Arc::new(History::new());
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();

        let producer = client(cluster, bootstrap).await.expect("producer client");
        let (h, s) = (Arc::clone(&history), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut id = 0u64;
            while !s.load(Ordering::Relaxed) {
                h.attempt(id);
                let record = Record::from_value(history::value_of(id), 0);
                match producer
                    .produce(TOPIC, partition, Acks::All, &[record])
                    .await
                {
                    Ok(Some(receipt)) => h.ack(id, receipt.base_offset),
                    Ok(None) => h.failed(id, "acks=all answered nothing".into()),
                    Err(e) => {
                        h.failed(id, e.to_string());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                id += 1;
            }
        }));

        let consumer = client(cluster, bootstrap).await.expect("consumer client");
        let (h, s) = (Arc::clone(&history), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let options = FetchOptions::default()
                .max_wait(Duration::from_millis(200))
                .min_bytes(1)
                .max_bytes(1024 * 1024);
            let mut next = 0u64;
            while !s.load(Ordering::Relaxed) {
                match consumer.fetch(TOPIC, partition, next, &options).await {
                    Ok(fetched) => {
                        for record in &fetched.records {
                            let id = record.value.as_deref().and_then(history::id_of);
                            if let Some(id) = id {
                                h.seen(id, record.offset);
                            }
                        }
                        next = next.max(fetched.next_offset);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));

        for node in 0..NODES {
            let config = cluster.client_config(node, REQUEST_TIMEOUT);
            let (h, s) = (Arc::clone(&history), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut observer: Option<Client> = None;
                while !s.load(Ordering::Relaxed) {
                    if observer.is_none() {
                        observer = Client::connect(config.clone()).await.ok();
                    }
                    if let Some(c) = &observer {
                        match c.admin().describe_topic(TOPIC).await {
                            Ok(topic) => {
                                if let Some(p) =
                                    topic.partitions.iter().find(|p| p.partition == partition)
                                    && p.leader != u32::MAX
                                {
                                    h.leadership(node as u32 + 1, p.leader, p.leader_epoch);
                                }
                            }
                            Err(_) => observer = None,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }));
        }
        Workload {
            history,
            stop,
            tasks,
        }
    }

    /// Waits until at least `n` more records were acknowledged.
    async fn acknowledged(&self, n: usize) {
        let before = self.history.ack_times().len();
        eventually("records acknowledged", SETTLE_MAX, || async {
            (self.history.ack_times().len() >= before + n).then_some(())
        })
        .await;
    }

    /// Waits for the first acknowledgement after `since` (bounded by
    /// [`SERVE_AGAIN_MAX`]) and returns how long after `since` it came.
    async fn serves_again(&self, since: Duration) -> Duration {
        eventually(
            "an acknowledgement after the network healed",
            SERVE_AGAIN_MAX,
            || async {
                self.history
                    .ack_times()
                    .into_iter()
                    .find(|at| *at >= since)
                    .map(|at| at - since)
            },
        )
        .await
    }

    async fn stop(self) -> Arc<History> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            // Each loop ends within one request timeout of the flag.
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 4, task).await;
        }
        self.history
    }
}

/// The partition's whole contents, read from its leader once every broker agrees on it
/// and its ISR is full again.
async fn final_read(cluster: &NetCluster, partition: u32) -> Vec<StoredRecord> {
    let (leader, end) = eventually("a settled partition after healing", SETTLE_MAX, || async {
        let mut agreed: Option<(u32, u32, u64)> = None;
        for node in 0..NODES {
            let p = view(cluster, node, partition).await?;
            if p.leader == u32::MAX || p.isr.len() != NODES {
                return None;
            }
            let here = (p.leader, p.leader_epoch);
            match agreed {
                None => agreed = Some((p.leader, p.leader_epoch, 0)),
                Some((l, e, _)) if (l, e) == here => {}
                Some(_) => return None,
            }
        }
        let (leader, _, _) = agreed?;
        let at_leader = view(cluster, leader as usize - 1, partition).await?;
        (at_leader.high_watermark == at_leader.log_end_offset)
            .then_some((leader as usize - 1, at_leader.high_watermark))
    })
    .await;
    let reader = client(cluster, leader).await.expect("reader");
    let options = FetchOptions::default()
        .max_wait(Duration::from_millis(100))
        .min_bytes(1)
        .max_bytes(4 * 1024 * 1024);
    let mut stored = Vec::new();
    let mut offset = 0;
    while offset < end {
        let fetched = reader
            .fetch_batches(TOPIC, partition, offset, &options)
            .await
            .unwrap_or_else(|e| panic!("final read at {offset}: {e}"));
        let mut next = offset;
        for batch in quiver_wire::batch::BatchSplitter::new(fetched.batches) {
            let batch = batch.expect("a whole batch");
            let header = quiver_wire::batch::BatchHeader::parse(&batch).expect("a header");
            next = next.max(header.next_offset());
            for record in quiver_wire::batch::decode_records(&batch).expect("records") {
                if record.offset < offset || record.offset >= end {
                    continue;
                }
                let id = record
                    .value
                    .as_deref()
                    .and_then(history::id_of)
                    .unwrap_or_else(|| panic!("offset {} holds no id", record.offset));
                stored.push(StoredRecord {
                    offset: record.offset,
                    id,
                    epoch: header.leader_epoch,
                });
            }
        }
        assert!(next > offset, "the final read made no progress at {offset}");
        offset = next;
    }
    stored
}

/// Stops the workload, reads the partition and checks the history; panics listing
/// every violation.
async fn stop_and_check(
    test: &str,
    cluster: &NetCluster,
    workload: Workload,
    partition: u32,
) -> Arc<History> {
    let history = workload.stop().await;
    let stored = final_read(cluster, partition).await;
    match history::check(&history.events(), &stored) {
        Ok(summary) => eprintln!("[{test}] history checked: {summary:?}"),
        Err(violations) => panic!(
            "[{test}] {} violations:\n{}",
            violations.len(),
            violations.join("\n")
        ),
    }
    history
}

/// The broker (0-based) that `partition`'s leader is, per `partitions`.
fn leader_of(partitions: &[PartitionInfo], partition: u32) -> usize {
    partitions[partition as usize].leader as usize - 1
}

/// A partition whose leader is not node `node`.
fn partition_not_led_by(partitions: &[PartitionInfo], node: usize) -> u32 {
    (0..PARTITIONS)
        .find(|p| leader_of(partitions, *p) != node)
        .expect("three partitions spread over three brokers")
}

/// Whatever broker in `brokers` has died is reported with its stderr.
fn all_running(brokers: &mut [Broker]) {
    for (i, broker) in brokers.iter_mut().enumerate() {
        assert!(
            broker.is_running(),
            "broker {} exited:\n{}",
            i + 1,
            broker.stderr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_leader_cut_from_the_controller_majority() {
    let test = "partition_leader_cut_from_the_controller_majority";
    let Some(mut cluster) = start(test) else {
        return;
    };
    let (controller, partitions) = settle(&cluster, true).await;
    // A partition led by a broker that is not the controller leader.
    let partition = partition_not_led_by(&partitions, controller);
    let isolated = leader_of(&partitions, partition);
    let old_epoch = partitions[partition as usize].leader_epoch;
    // The clients bootstrap on the broker that will be cut: the one whose metadata
    // goes stale.
    let workload = Workload::start(&cluster, partition, isolated).await;
    workload.acknowledged(20).await;

    let cut_at = workload.history.now();
    cluster.network.isolate(isolated);
    eprintln!(
        "[{test}] cut node {} (leads partition {partition}, epoch {old_epoch})",
        isolated + 1
    );
    // The majority elects another leader; producers must find it while the old one is
    // still cut off.
    let majority: Vec<usize> = (0..NODES).filter(|n| *n != isolated).collect();
    let moved = eventually("the majority elects another leader", SETTLE_MAX, || async {
        let p = view(&cluster, majority[0], partition).await?;
        (p.leader != u32::MAX && p.leader as usize - 1 != isolated && p.leader_epoch > old_epoch)
            .then_some(p)
    })
    .await;
    let elected_at = workload.history.now();
    eprintln!(
        "[{test}] node {} leads in epoch {} after {:?}",
        moved.leader,
        moved.leader_epoch,
        elected_at - cut_at
    );
    // Producers write through the new leader before the network heals.
    let resumed = eventually(
        "an acknowledgement through the new leader while the old one is cut off",
        SETTLE_MAX,
        || async {
            workload
                .history
                .ack_times()
                .into_iter()
                .find(|at| *at > elected_at)
                .map(|at| at - cut_at)
        },
    )
    .await;
    eprintln!("[{test}] producers resumed {resumed:?} after the cut");
    workload.acknowledged(20).await;
    // The old leader stops acting as one while still cut off: a write sent to it
    // directly (acks=leader, which it could acknowledge alone) is refused with
    // NOT_LEADER, not taken into a log the majority has moved past.
    eventually("the isolated broker refuses writes", SETTLE_MAX, || async {
        let direct = client(&cluster, isolated).await?;
        let mut builder =
            quiver_wire::batch::BatchBuilder::new(quiver_wire::batch::ProducerStamp::NONE);
        builder.push(&Record::from_value("not an id", 0));
        let batch = builder.finish()?;
        let frame = quiver_wire::message::ProduceRequest {
            topic: TOPIC.into(),
            partition,
            acks: Acks::Leader,
            timeout_ms: 1_000,
            batch: bytes::BytesMut::from(batch.as_ref()),
        };
        let answer = direct
            .send_frame(quiver_wire::message::Rpc::encode_frame(&frame))
            .await;
        match answer {
            Err(e) if e.code() == Some(quiver_sdk::ErrorCode::NotLeader) => Some(()),
            Ok(_) => panic!("the isolated broker took a write while cut off from the controller"),
            Err(_) => None,
        }
    })
    .await;

    let healed_at = workload.history.now();
    cluster.network.heal_all();
    let recovery = workload.serves_again(healed_at).await;
    eprintln!("[{test}] serves again {recovery:?} after the network healed");
    workload.acknowledged(10).await;
    let history = stop_and_check(test, &cluster, workload, partition).await;
    eprintln!(
        "[{test}] longest stall during the cut: {:?}",
        history.longest_ack_gap(cut_at, healed_at)
    );
    all_running(&mut cluster.brokers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_leader_cut_off() {
    let test = "controller_leader_cut_off";
    let Some(mut cluster) = start(test) else {
        return;
    };
    let (controller, partitions) = settle(&cluster, true).await;
    // A partition whose leader stays connected to the majority.
    let partition = partition_not_led_by(&partitions, controller);
    let healthy = leader_of(&partitions, partition);
    let epoch = partitions[partition as usize].leader_epoch;
    let workload = Workload::start(&cluster, partition, healthy).await;
    workload.acknowledged(20).await;

    let cut_at = workload.history.now();
    cluster.network.isolate(controller);
    eprintln!(
        "[{test}] cut the controller leader, node {}; partition {partition} led by node {} in epoch {epoch}",
        controller + 1,
        healthy + 1
    );
    let majority: Vec<usize> = (0..NODES).filter(|n| *n != controller).collect();
    eventually(
        "a new controller leader in the majority",
        SETTLE_MAX,
        || async {
            let s = status(&cluster, majority[0]).await?;
            s.controller_leader
                .filter(|l| *l as usize - 1 != controller)
                .map(|_| ())
        },
    )
    .await;
    // The new controller fences the cut broker (it stops heartbeating) and shrinks the
    // ISR; the partition's leader, healthy all along, keeps leading.
    eventually(
        "the cut broker fenced and out of the ISR",
        SETTLE_MAX,
        || async {
            let p = view(&cluster, healthy, partition).await?;
            (!p.isr.contains(&(controller as u32 + 1))).then_some(())
        },
    )
    .await;
    workload.acknowledged(20).await;

    let healed_at = workload.history.now();
    cluster.network.heal_all();
    let recovery = workload.serves_again(healed_at).await;
    eprintln!("[{test}] serves again {recovery:?} after the network healed");
    workload.acknowledged(10).await;
    let history = stop_and_check(test, &cluster, workload, partition).await;
    eprintln!(
        "[{test}] longest stall during the cut: {:?}",
        history.longest_ack_gap(cut_at, healed_at)
    );
    // A healthy partition leader is never deposed by a controller change: every epoch
    // any broker named for the partition is led by the same broker.
    let leaders: std::collections::BTreeSet<(u32, u32)> = history
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Leadership { leader, epoch, .. } => Some((*epoch, *leader)),
            _ => None,
        })
        .collect();
    assert!(
        leaders.iter().all(|(_, l)| *l as usize == healthy + 1),
        "partition {partition}'s healthy leader, node {}, was deposed: (epoch, leader) seen {leaders:?}",
        healthy + 1
    );
    all_running(&mut cluster.brokers);
}

/// The partition the scenarios that do not pick one by its leader run on.
const PARTITION_UNDER_TEST: u32 = 0;

/// A settled cluster's workload on [`PARTITION_UNDER_TEST`], bootstrapped on its
/// leader, once 20 records were acknowledged.
async fn steady_workload(cluster: &NetCluster) -> Workload {
    let (_, partitions) = settle(cluster, true).await;
    let leader = leader_of(&partitions, PARTITION_UNDER_TEST);
    let workload = Workload::start(cluster, PARTITION_UNDER_TEST, leader).await;
    workload.acknowledged(20).await;
    workload
}

/// Down and up periods of the flapping link, and how many times it goes down.
const FLAP_DOWN: Duration = Duration::from_secs(2);
const FLAP_UP: Duration = Duration::from_secs(2);
const FLAPS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_to_one_follower() {
    let test = "a_flapping_link_to_one_follower";
    let Some(mut cluster) = start(test) else {
        return;
    };
    let (controller, partitions) = settle(&cluster, true).await;
    // A partition led by the controller leader, so that only the follower's link
    // flaps: the controller majority stays whole.
    let partition = (0..PARTITIONS)
        .find(|p| leader_of(&partitions, *p) == controller)
        .expect("three partitions spread over three brokers");
    let leader = controller;
    let follower = (0..NODES).find(|n| *n != leader).expect("a follower");
    let workload = Workload::start(&cluster, partition, leader).await;
    workload.acknowledged(20).await;

    let started = workload.history.now();
    let mut windows = Vec::new();
    for flap in 0..FLAPS {
        let down = workload.history.now();
        cluster.network.cut(leader, follower);
        tokio::time::sleep(FLAP_DOWN).await;
        cluster.network.heal(leader, follower);
        let up = workload.history.now();
        tokio::time::sleep(FLAP_UP).await;
        let end = workload.history.now();
        let acks = workload.history.acks_between(down, end);
        eprintln!(
            "[{test}] flap {flap}: {acks} acknowledgements over {:?} down + {:?} up; longest stall {:?}",
            up - down,
            end - up,
            workload.history.longest_ack_gap(down, end)
        );
        windows.push((down, end));
    }
    let healed_at = workload.history.now();
    let recovery = workload.serves_again(healed_at).await;
    eprintln!("[{test}] serves again {recovery:?} after the last flap");
    workload.acknowledged(10).await;
    let history = stop_and_check(test, &cluster, workload, partition).await;
    let stall = history.longest_ack_gap(started, healed_at);
    eprintln!("[{test}] longest stall while flapping: {stall:?}");
    // Replication recovers from an outage in about the outage's length: acknowledgements
    // resume in every up period, before the link goes down again. (A follower that
    // waited on its old connection's retransmission timer stalled 2.7-6.7 s here.)
    assert!(
        stall < FLAP_DOWN + FLAP_UP,
        "acks=all acknowledgements stopped for {stall:?} while the follower's link flapped \
         {FLAP_DOWN:?} down, {FLAP_UP:?} up: replication did not recover within an up period"
    );
    all_running(&mut cluster.brokers);
}

/// How each direction of every broker-to-broker link is shaped in the datagram
/// scenario: a few milliseconds of delay with up to 30 ms of jitter (so datagrams
/// overtake each other), one in ten sent twice, one in fifty lost.
const SHAPE: Shape = Shape {
    delay: Duration::from_millis(5),
    jitter: Duration::from_millis(30),
    duplicate_per_mille: 100,
    drop_per_mille: 20,
};
/// How long the links stay shaped.
const SHAPED_FOR: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_duplicated_reordered_and_lost_datagrams_between_brokers() {
    let test = "delayed_duplicated_reordered_and_lost_datagrams_between_brokers";
    let Some(mut cluster) = start(test) else {
        return;
    };
    let shapers = match cluster.network.shapers() {
        Ok(shapers) => shapers,
        Err(why) => {
            eprintln!("[{test}] SKIPPED: cannot route through a TUN device here: {why}");
            return;
        }
    };
    let workload = steady_workload(&cluster).await;
    let partition = PARTITION_UNDER_TEST;

    let started = workload.history.now();
    for (from, shaper) in shapers.iter().enumerate() {
        for to in (0..NODES).filter(|n| *n != from) {
            shaper.set(cluster.network.ip(from), cluster.network.ip(to), SHAPE);
        }
    }
    tokio::time::sleep(SHAPED_FOR).await;
    let ended = workload.history.now();
    for shaper in &shapers {
        shaper.clear();
    }
    let acks = workload.history.acks_between(started, ended);
    let counts = shapers
        .iter()
        .map(Shaper::counts)
        .fold(ShapeCounts::default(), |a, c| ShapeCounts {
            seen: a.seen + c.seen,
            reordered: a.reordered + c.reordered,
            duplicated: a.duplicated + c.duplicated,
            dropped: a.dropped + c.dropped,
        });
    eprintln!(
        "[{test}] {acks} acknowledgements over {SHAPED_FOR:?} of shaped links ({counts:?}); longest stall {:?}",
        workload.history.longest_ack_gap(started, ended)
    );
    // The faults happened...
    assert!(
        counts.reordered > 0 && counts.duplicated > 0 && counts.dropped > 0,
        "the shapers reordered, duplicated and dropped datagrams: {counts:?}"
    );
    // ...and replication went on through them: acks=all needs the followers' fetches.
    assert!(
        acks > 0,
        "no acks=all acknowledgement while datagrams between brokers were delayed, duplicated, reordered and lost"
    );
    workload.acknowledged(10).await;
    stop_and_check(test, &cluster, workload, partition).await;
    drop(shapers);
    all_running(&mut cluster.brokers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_where_no_broker_reaches_another() {
    let test = "a_split_where_no_broker_reaches_another";
    let Some(mut cluster) = start(test) else {
        return;
    };
    let workload = steady_workload(&cluster).await;
    let partition = PARTITION_UNDER_TEST;

    let cut_at = workload.history.now();
    for node in 0..NODES {
        cluster.network.isolate(node);
    }
    // No majority anywhere: the controller cannot commit, no ISR can shrink.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let healed_at = workload.history.now();
    cluster.network.heal_all();
    let recovery = workload.serves_again(healed_at).await;
    eprintln!("[{test}] serves again {recovery:?} after the network healed");
    workload.acknowledged(10).await;
    let history = stop_and_check(test, &cluster, workload, partition).await;
    eprintln!(
        "[{test}] acknowledgements during the split: {}",
        history.acks_between(cut_at + REQUEST_TIMEOUT, healed_at)
    );
    all_running(&mut cluster.brokers);
}

/// A history every invariant holds for, and its final log.
fn clean_history() -> (Vec<Event>, Vec<StoredRecord>) {
    let at = Duration::ZERO;
    let mut events = Vec::new();
    let mut stored = Vec::new();
    for id in 0..10u64 {
        events.push(Event::Attempt { id, at });
        events.push(Event::Ack { id, offset: id, at });
        events.push(Event::Seen { id, offset: id, at });
        stored.push(StoredRecord {
            offset: id,
            id,
            epoch: if id < 5 { 1 } else { 2 },
        });
    }
    events.push(Event::Leadership {
        observer: 1,
        leader: 1,
        epoch: 1,
        at,
    });
    events.push(Event::Leadership {
        observer: 2,
        leader: 2,
        epoch: 2,
        at,
    });
    (events, stored)
}

#[test]
fn the_checker_fails_a_history_that_lost_an_acknowledged_record() {
    let (events, stored) = clean_history();
    history::check(&events, &stored).expect("the clean history passes");

    // A copy of the final log without acknowledged id 4 (seen by the consumer too).
    let lost: Vec<StoredRecord> = stored.iter().copied().filter(|r| r.id != 4).collect();
    let violations = history::check(&events, &lost).expect_err("a lost record is caught");
    assert!(
        violations
            .iter()
            .any(|v| v.contains("acknowledged id 4") && v.contains("lost")),
        "{violations:?}"
    );
    assert!(
        violations.iter().any(|v| v.contains("a consumer saw id 4")),
        "{violations:?}"
    );
}

#[test]
fn the_checker_fails_duplicates_reordering_and_two_leaders_in_one_epoch() {
    let (events, stored) = clean_history();

    // Id 3 stored again at the end.
    let mut twice = stored.clone();
    twice.push(StoredRecord {
        offset: 10,
        id: 3,
        epoch: 2,
    });
    let violations = history::check(&events, &twice).expect_err("a duplicate is caught");
    assert!(
        violations
            .iter()
            .any(|v| v.contains("id 3 is stored 2 times")),
        "{violations:?}"
    );

    // Ids 6 and 7 swapped in the log: both acknowledgements now point elsewhere.
    let mut swapped = stored.clone();
    swapped[6].id = 7;
    swapped[7].id = 6;
    let violations = history::check(&events, &swapped).expect_err("reordering is caught");
    assert!(
        violations.iter().any(
            |v| v.contains("acknowledged id 6 was acknowledged at offset 6 but is stored at 7")
        ),
        "{violations:?}"
    );

    // Two brokers named leader in epoch 2.
    let mut two_leaders = events.clone();
    two_leaders.push(Event::Leadership {
        observer: 3,
        leader: 3,
        epoch: 2,
        at: Duration::ZERO,
    });
    let violations =
        history::check(&two_leaders, &stored).expect_err("two leaders in one epoch are caught");
    assert!(
        violations.iter().any(|v| v.contains("leader in epoch 2")),
        "{violations:?}"
    );

    // An epoch going down along the log.
    let mut backwards = stored.clone();
    backwards[8].epoch = 1;
    let violations = history::check(&events, &backwards).expect_err("an older epoch is caught");
    assert!(
        violations
            .iter()
            .any(|v| v.contains("in epoch 1 after offset 7 in epoch 2")),
        "{violations:?}"
    );

    // A record acknowledged out of send order.
    let mut out_of_order = events.clone();
    for e in out_of_order.iter_mut() {
        if let Event::Ack { id, offset, .. } = e
            && *id == 2
        {
            *offset = 20;
        }
    }
    let violations =
        history::check(&out_of_order, &stored).expect_err("out-of-order acknowledgements");
    assert!(
        violations.iter().any(|v| v.contains("sent after id 2")),
        "{violations:?}"
    );
}
