//! A cluster formed with `quiver cluster init` and join tokens only: no file is copied
//! between nodes. Each broker listens on its own address (127.0.0.1, .2, .3 here, so
//! each certificate must name its own broker's address), or in network namespaces the
//! test makes itself (10.x addresses on a bridge). A wrong fingerprint is refused
//! before the node trusts the seed; a wrong secret is refused with its code; a node
//! with another CA is named in one warning line and in `quiver cluster status`; and the
//! join API holds against replayed proofs, taken node ids, oversized fields and floods.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quiver_sdk::{Client, ClientConfig, NewTopic, ProducerRecord};
use quiver_tests::{
    Broker, ClientAdmin, Host, RawConn, StartFailure, eventually, free_ports, run_quiver,
};
use quiver_wire::ErrorCode;
use quiver_wire::cluster::ClusterStatusResponse;
use quiver_wire::join::{JoinCaRequest, JoinClusterRequest};
use quiver_wire::message::Rpc;

/// `quiver cluster init --data-dir DIR`: the token it prints.
fn cluster_init(dir: &Path) -> String {
    let out = run_quiver(
        &[
            "cluster".into(),
            "init".into(),
            "--data-dir".into(),
            dir.display().to_string(),
        ],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "cluster init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.starts_with("quiver-join-v1:"), "token: {token}");
    token
}

fn seeds_of(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}@{a}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts node `id` (1-based) of `addrs` on `dir`, with a join token when given.
fn start_node(
    dir: &Path,
    id: usize,
    addrs: &[SocketAddr],
    token: Option<&str>,
    netns: Option<&str>,
) -> Broker {
    let id_text = id.to_string();
    let seeds = seeds_of(addrs);
    let mut env = vec![
        ("QUIVER_NODE_ID", id_text.as_str()),
        ("QUIVER_SEEDS", seeds.as_str()),
    ];
    if let Some(token) = token {
        env.push(("QUIVER_JOIN_TOKEN", token));
    }
    let host = addrs[id - 1].ip();
    if !host.is_loopback() {
        env.push(("QUIVER_ALLOW_ANONYMOUS", "true"));
    }
    let host = Host {
        ip: host,
        netns: netns.map(str::to_owned),
    };
    Broker::try_spawn_on(&host, dir, &env, Some(addrs[id - 1].port()))
        .unwrap_or_else(|failure| panic!("node {id}: {failure}"))
}

async fn status_of(addr: SocketAddr, ca: &Path) -> Option<ClusterStatusResponse> {
    let mut config = ClientConfig::new(addr.to_string(), ca);
    config.connect_timeout = Duration::from_secs(5);
    let client = Client::connect(config).await.ok()?;
    client.admin().describe_cluster().await.ok()
}

/// Waits until the broker at `addr` sees a controller leader and `ids` all active.
async fn wait_formed(addr: SocketAddr, ca: &Path, ids: &[u32]) -> ClusterStatusResponse {
    eventually(
        "a controller leader and every node active",
        Duration::from_secs(90),
        || async {
            status_of(addr, ca).await.filter(|s| {
                s.controller_leader.is_some()
                    && ids
                        .iter()
                        .all(|id| s.brokers.iter().any(|b| b.id == *id && !b.fenced))
            })
        },
    )
    .await
}

/// Forms a three-node cluster at `addrs` from a token alone, replicates a topic across
/// the three and reads every record back through each node. `netns[i]` is node i's
/// namespace, if any.
async fn form_produce_consume(root: &Path, addrs: &[SocketAddr], netns: &[Option<String>]) {
    let dirs: Vec<PathBuf> = (1..=3).map(|id| root.join(format!("node-{id}"))).collect();
    let token = cluster_init(&dirs[0]);
    let ns = |i: usize| netns.get(i).and_then(|n| n.as_deref());
    let mut brokers = vec![start_node(&dirs[0], 1, addrs, None, ns(0))];
    for id in 2..=3 {
        brokers.push(start_node(
            &dirs[id - 1],
            id,
            addrs,
            Some(&token),
            ns(id - 1),
        ));
    }
    let ca = dirs[0].join("tls/ca.pem");
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let tls = dir.join("tls");
        assert_eq!(
            std::fs::read(tls.join("ca.pem")).expect("a joined node holds the CA"),
            std::fs::read(&ca).expect("node 1's CA"),
            "node {} holds the cluster's CA",
            i + 1
        );
        assert!(
            !tls.join("ca.key").exists(),
            "the CA key never leaves node 1"
        );
        assert!(tls.join("server.pem").exists() && tls.join("server.key").exists());
    }
    for broker in &brokers {
        wait_formed(broker.quic_addr, &ca, &[1, 2, 3]).await;
    }
    let issued = brokers[0].stderr();
    for id in [2, 3] {
        assert!(
            issued.contains(&format!("issued a broker certificate for node {id}")),
            "node 1 issued node {id}'s certificate"
        );
    }

    // A client that dials node 2 by its own address checks node 2's certificate
    // against that address.
    let client = Client::connect(ClientConfig::new(addrs[1].to_string(), &ca))
        .await
        .expect("connect to node 2 by its address");
    eventually("the topic created", Duration::from_secs(60), || async {
        match client
            .admin()
            .create_topic(NewTopic::new("joined", 1, 3))
            .await
        {
            Ok(()) => Some(()),
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => Some(()),
            Err(_) => None,
        }
    })
    .await;
    let producer = quiver_tests::small_batch_producer(&client);
    const RECORDS: usize = 300;
    let mut receipts = Vec::new();
    for i in 0..RECORDS {
        let record = ProducerRecord::new("joined", format!("v{i}")).partition(0);
        receipts.push(producer.send(record).await.expect("buffered"));
    }
    for receipt in receipts {
        receipt.await.expect("acknowledged by all three");
    }
    // Every node serves the records once it holds them: read through each.
    for (i, addr) in addrs.iter().enumerate() {
        let reader = Client::connect(ClientConfig::new(addr.to_string(), &ca))
            .await
            .unwrap_or_else(|e| panic!("connect to node {}: {e}", i + 1));
        let values: Vec<String> =
            eventually("every record readable", Duration::from_secs(60), || async {
                let records = quiver_tests::fetch_all(&reader, "joined", 0, 0).await;
                (records.len() == RECORDS).then(|| {
                    records
                        .iter()
                        .map(|r| {
                            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                                .into_owned()
                        })
                        .collect()
                })
            })
            .await;
        let expected: Vec<String> = (0..RECORDS).map(|i| format!("v{i}")).collect();
        assert_eq!(values, expected, "node {}", i + 1);
    }
    let described = client
        .admin()
        .describe_topic("joined")
        .await
        .expect("describe");
    let partition = &described.partitions[0];
    let mut replicas = partition.replicas.clone();
    replicas.sort_unstable();
    assert_eq!(replicas, [1, 2, 3], "replicated across the three");
    eventually("three in sync", Duration::from_secs(60), || async {
        let d = client.admin().describe_topic("joined").await.ok()?;
        (d.partitions[0].isr.len() == 3).then_some(())
    })
    .await;
}

/// Three brokers on 127.0.0.1, .2 and .3: each certificate must name its own broker's
/// address, or the brokers refuse each other (`certificate not valid for name`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_forms_from_join_tokens_alone_on_three_addresses() {
    let root = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(3);
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8 + 1)), ports[i]))
        .collect();
    form_produce_consume(root.path(), &addrs, &[]).await;
}

/// Network namespaces with a bridge between them, removed on drop (even when the
/// test fails).
struct Netns {
    names: Vec<String>,
    bridge_ns: String,
}

impl Netns {
    /// `nodes` namespaces, each with a veth to a bridge in a hub namespace, on
    /// 10.<a>.<b>.0/24; `None` when `ip netns` is not usable here.
    fn create(nodes: usize) -> Option<(Netns, Vec<IpAddr>)> {
        let run = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        let tag = format!(
            "{:x}",
            std::process::id() ^ (rand::random::<u32>() & 0xffff)
        );
        let hub = format!("qjh{tag}");
        if !run(&["netns", "add", &hub]) {
            return None;
        }
        let mut made = Netns {
            names: Vec::new(),
            bridge_ns: hub.clone(),
        };
        let a = 100 + (rand::random::<u8>() % 100);
        let b = rand::random::<u8>();
        let in_hub = |args: &[&str]| {
            let mut all = vec!["netns", "exec", hub.as_str(), "ip"];
            all.extend_from_slice(args);
            run(&all)
        };
        if !(in_hub(&["link", "add", "br0", "type", "bridge"])
            && in_hub(&["link", "set", "br0", "up"])
            && in_hub(&["link", "set", "lo", "up"]))
        {
            return None;
        }
        let mut ips = Vec::new();
        for i in 0..nodes {
            let ns = format!("qjn{tag}{i}");
            if !run(&["netns", "add", &ns]) {
                return None;
            }
            made.names.push(ns.clone());
            let outer = format!("qjv{tag}{i}");
            let ip = format!("10.{a}.{b}.{}", i + 2);
            let in_ns = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
                all.extend_from_slice(args);
                run(&all)
            };
            let ok = in_hub(&[
                "link", "add", &outer, "type", "veth", "peer", "name", "eth0",
            ]) && in_hub(&["link", "set", "eth0", "netns", &ns])
                && in_hub(&["link", "set", &outer, "master", "br0"])
                && in_hub(&["link", "set", &outer, "up"])
                && in_ns(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
                && in_ns(&["link", "set", "eth0", "up"])
                && in_ns(&["link", "set", "lo", "up"]);
            if !ok {
                return None;
            }
            ips.push(ip.parse().expect("an address"));
        }
        Some((made, ips))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.names.iter().chain(std::iter::once(&self.bridge_ns)) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", ns])
                .output();
        }
    }
}

/// The same on real (non-loopback) addresses, each broker in its own network
/// namespace, with the test's clients in a fourth. Skipped where `ip netns` is not
/// available (scripts/test.sh installs iproute2; creating namespaces needs root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_forms_from_join_tokens_alone_across_network_namespaces() {
    let Some((namespaces, ips)) = Netns::create(4) else {
        eprintln!(
            "SKIPPED: `ip netns` is not usable here (needs iproute2 and root); the loopback variant still runs"
        );
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(3);
    let addrs: Vec<SocketAddr> = (0..3).map(|i| SocketAddr::new(ips[i], ports[i])).collect();
    let netns: Vec<Option<String>> = namespaces.names[..3]
        .iter()
        .map(|n| Some(n.clone()))
        .collect();
    // The test's own clients run in the fourth namespace: this process enters it on a
    // thread of its own, so the SDK's sockets live there.
    let client_ns = namespaces.names[3].clone();
    let root_path = root.path().to_owned();
    let outcome = std::thread::spawn(move || {
        enter_netns(&client_ns);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(form_produce_consume(&root_path, &addrs, &netns));
    })
    .join();
    drop(namespaces);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Moves the calling thread into network namespace `name`.
fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/var/run/netns/{name}")).expect("namespace file");
    // SAFETY: setns on a descriptor we hold, for this thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {name}");
}

/// A token for the cluster in `dir` with its fingerprint or its secret replaced.
fn altered(token: &str, fingerprint: Option<&str>, secret: Option<&str>) -> String {
    let parts: Vec<&str> = token.split(':').collect();
    format!(
        "{}:{}:{}",
        parts[0],
        fingerprint.unwrap_or(parts[1]),
        secret.unwrap_or(parts[2])
    )
}

fn loopback_addrs(n: usize) -> Vec<SocketAddr> {
    free_ports(n)
        .into_iter()
        .enumerate()
        .map(|(i, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8 + 1)), port))
        .collect()
}

/// Starts node 2 of `addrs` in `dir` with join token `token`, which must fail;
/// panics with `why` if it started.
fn refused_join(dir: &Path, addrs: &[SocketAddr], token: &str, why: &str) -> StartFailure {
    let seeds = seeds_of(addrs);
    let host = Host {
        ip: addrs[1].ip(),
        netns: None,
    };
    let env = [
        ("QUIVER_NODE_ID", "2"),
        ("QUIVER_SEEDS", seeds.as_str()),
        ("QUIVER_JOIN_TOKEN", token),
    ];
    Broker::try_spawn_on(&host, dir, &env, Some(addrs[1].port()))
        .err()
        .expect(why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_fingerprint_is_refused_before_anything_is_trusted() {
    let root = tempfile::tempdir().expect("tempdir");
    let addrs = loopback_addrs(2);
    let token = cluster_init(&root.path().join("node-1"));
    let other = cluster_init(&root.path().join("elsewhere"));
    let other_fingerprint = other.split(':').nth(1).expect("a fingerprint");
    let seed = start_node(&root.path().join("node-1"), 1, &addrs, None, None);

    let dir = root.path().join("node-2");
    let wrong = altered(&token, Some(other_fingerprint), None);
    let failure = refused_join(
        &dir,
        &addrs,
        &wrong,
        "a node with the wrong fingerprint does not start",
    );
    assert!(
        failure.stderr.contains("refusing to trust it")
            && failure.stderr.contains(other_fingerprint),
        "{failure}"
    );
    assert!(
        !dir.join("tls/ca.pem").exists(),
        "nothing of the seed's was kept"
    );
    assert!(!dir.join("tls/server.pem").exists());
    assert!(!dir.join("tls/join.secret").exists());
    // The seed answered the CA request and never saw a join proof.
    assert!(seed.metric("quiver_requests_total{api=\"join_ca\"}") >= 1.0);
    assert_eq!(
        seed.metric("quiver_requests_total{api=\"join_cluster\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_join_secret_is_refused_with_its_code() {
    let root = tempfile::tempdir().expect("tempdir");
    let addrs = loopback_addrs(2);
    let token = cluster_init(&root.path().join("node-1"));
    let seed = start_node(&root.path().join("node-1"), 1, &addrs, None, None);
    let dir = root.path().join("node-2");
    let wrong = altered(&token, None, Some(&"5a".repeat(32)));
    let failure = refused_join(
        &dir,
        &addrs,
        &wrong,
        "a node with the wrong secret does not start",
    );
    assert!(failure.stderr.contains("INVALID_JOIN_TOKEN"), "{failure}");
    assert!(!dir.join("tls/server.pem").exists());
    assert!(!dir.join("tls/ca.pem").exists());
    eventually(
        "the seed logs the refusal",
        Duration::from_secs(10),
        || async { seed.stderr().contains("join refused").then_some(()) },
    )
    .await;
}

/// Lines of `log` that warn about `peer` for `reason`.
fn warnings_about(log: &str, peer: u32, reason: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(&format!("cannot reach node {peer} at")) && l.contains(reason))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_ca_is_named_in_one_warning_and_in_cluster_status() {
    let root = tempfile::tempdir().expect("tempdir");
    let addrs = loopback_addrs(3);
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|i| root.path().join(format!("node-{i}")))
        .collect();
    let token = cluster_init(&dirs[0]);
    let one = start_node(&dirs[0], 1, &addrs, None, None);
    let two = start_node(&dirs[1], 2, &addrs, Some(&token), None);
    let ca = dirs[0].join("tls/ca.pem");
    // Node 3 was started without the token: it made a CA of its own.
    let three = start_node(&dirs[2], 3, &addrs, None, None);
    assert_ne!(
        std::fs::read(dirs[2].join("tls/ca.pem")).expect("node 3's CA"),
        std::fs::read(&ca).expect("the cluster's CA")
    );
    let different = "certificate signed by a different CA";

    // Node 3 is a founding voter of the cluster's membership but not the founder: it
    // waits to hear from the leader, which cannot reach it. So it knows no leader, and
    // it is the leader's side that names the mismatch.
    let status = status_of(three.quic_addr, &dirs[2].join("tls/ca.pem"))
        .await
        .expect("node 3 answers with its own CA");
    assert_eq!(status.controller_leader, None, "{status:?}");

    // The cluster's leader cannot reach node 3, and says why: in its status and in one
    // warning line, however many attempts failed.
    let (leader, leader_ca) = eventually(
        "the leader lists node 3 as unreachable",
        Duration::from_secs(90),
        || async {
            for broker in [&one, &two] {
                if let Some(s) = status_of(broker.quic_addr, &ca).await
                    && s.unreachable
                        .iter()
                        .any(|p| p.id == 3 && p.reason.contains(different))
                {
                    return Some((broker, ca.clone()));
                }
            }
            None
        },
    )
    .await;
    let out = leader.cli(&["cluster", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("node 3 at {}: {different}", addrs[2])),
        "{text}"
    );
    assert_eq!(warnings_about(&leader.stderr(), 3, different), 1);
    assert!(leader_ca.exists());
    // Nodes 1 and 2 still form a quorum and serve.
    wait_formed(one.quic_addr, &ca, &[1, 2]).await;
}

/// `[status:2]` of one answer, and its body.
async fn raw_call(conn: &RawConn, frame: Bytes) -> (u16, Bytes) {
    conn.round_trip(&frame).await.expect("an answer")
}

fn secret_of(dir: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(dir.join("tls/join.secret")).expect("join secret");
    let text = text.trim();
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).expect("hex"))
        .collect()
}

fn binding(conn: &RawConn) -> [u8; 32] {
    let mut out = [0u8; 32];
    conn.conn
        .export_keying_material(&mut out, quiver_wire::join::JOIN_EXPORTER_LABEL, b"")
        .expect("exporter");
    out
}

fn proof(secret: &[u8], binding: &[u8], node_id: u32) -> Bytes {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut message = quiver_wire::join::JOIN_PROOF_CONTEXT.to_vec();
    message.extend_from_slice(binding);
    message.extend_from_slice(&node_id.to_be_bytes());
    Bytes::copy_from_slice(ring::hmac::sign(&key, &message).as_ref())
}

fn csr() -> Bytes {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    Bytes::from(params.serialize_request(&key).expect("csr").der().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_api_holds_against_attackers() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("node-1");
    cluster_init(&dir);
    let broker = Broker::start(&dir);
    let ca = broker.ca_cert();
    let secret = secret_of(&dir);
    let anonymous = RawConn::connect(broker.quic_addr, &ca).await;

    // The CA is public: anyone may fetch it.
    let (status, _) = raw_call(&anonymous, JoinCaRequest.encode_frame()).await;
    assert_eq!(status, 0);

    let join = |node_id: u32, proof: Bytes| {
        JoinClusterRequest {
            node_id,
            addresses: vec!["127.0.0.7".into()],
            csr: csr(),
            proof,
        }
        .encode_frame()
    };
    let code = |status: u16| ErrorCode::from_code(status);

    // A guessed proof.
    let (status, body) = raw_call(&anonymous, join(7, Bytes::from(vec![0u8; 32]))).await;
    assert_eq!(
        code(status),
        Some(ErrorCode::InvalidJoinToken),
        "{}",
        quiver_tests::error_message(&body)
    );

    // A proof made on one connection, replayed on another.
    let other = RawConn::connect(broker.quic_addr, &ca).await;
    let made_elsewhere = proof(&secret, &binding(&other), 7);
    let (status, _) = raw_call(&anonymous, join(7, made_elsewhere.clone())).await;
    assert_eq!(
        code(status),
        Some(ErrorCode::InvalidJoinToken),
        "a replayed proof"
    );
    // A proof for another node id.
    let for_eight = proof(&secret, &binding(&anonymous), 8);
    let (status, _) = raw_call(&anonymous, join(7, for_eight)).await;
    assert_eq!(
        code(status),
        Some(ErrorCode::InvalidJoinToken),
        "another node's proof"
    );

    // The live broker's own id.
    let (status, body) =
        raw_call(&anonymous, join(1, proof(&secret, &binding(&anonymous), 1))).await;
    assert_eq!(
        code(status),
        Some(ErrorCode::NodeIdInUse),
        "{}",
        quiver_tests::error_message(&body)
    );

    // Huge fields are refused before anything is read into memory beyond their caps.
    let mut huge = BytesMut::new();
    huge.put_u32(0); // frame length, set below
    huge.put_u16(quiver_wire::ApiKey::JoinCluster.code());
    huge.put_u16(0);
    huge.put_u32(7);
    huge.put_u32(1_000_000); // addresses
    let len = (huge.len() - 4) as u32;
    huge[..4].copy_from_slice(&len.to_be_bytes());
    let (status, _) = raw_call(&anonymous, huge.freeze()).await;
    assert_ne!(status, 0, "a million addresses");
    let mut long_name = JoinClusterRequest {
        node_id: 7,
        addresses: vec!["a".repeat(300)],
        csr: csr(),
        proof: proof(&secret, &binding(&anonymous), 7),
    };
    let (status, _) = raw_call(&anonymous, long_name.encode_frame()).await;
    assert_ne!(status, 0, "a 300-byte name");
    long_name.addresses = vec!["not a name!".into()];
    let (status, _) = raw_call(&anonymous, long_name.encode_frame()).await;
    assert_eq!(
        code(status),
        Some(ErrorCode::InvalidRequest),
        "a name that is neither"
    );

    // The proof for this connection and a free node id: issued, naming the address
    // asked for and nothing else the requester chose.
    let (status, body) =
        raw_call(&anonymous, join(7, proof(&secret, &binding(&anonymous), 7))).await;
    assert_eq!(status, 0, "{}", quiver_tests::error_message(&body));
    // Nothing of the refused ones was issued.
    let log = broker.stderr();
    assert_eq!(
        log.matches("issued a broker certificate for node").count(),
        1,
        "{log}"
    );

    // A flood: answered up to the gate's bound, then refused, and the broker serves on.
    let mut refused = 0;
    for _ in 0..80 {
        let (status, _) = raw_call(&other, JoinCaRequest.encode_frame()).await;
        if code(status) == Some(ErrorCode::Timeout) {
            refused += 1;
        }
    }
    assert!(refused > 0, "the flood met the gate");
    let client = broker.client().await;
    client
        .admin()
        .list_topics()
        .await
        .expect("the broker serves on");
}
