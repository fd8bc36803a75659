//! A network a test makes for itself, so that links between brokers can be cut while
//! clients still reach every broker.
//!
//! Each broker runs in its own network namespace with one veth into a bridge that lives
//! in a "switch" namespace; a last veth joins the test's own namespace to the same
//! bridge, so the test process (the clients) reaches every broker at its 10.x address.
//! A link between two brokers is cut by a static neighbour entry on each side that
//! points the other's address at a MAC address nobody has: frames leave, the bridge
//! floods them, nobody takes them. Nothing answers, nothing is refused: the link goes
//! silent, as a dropped cable would (this kernel has neither netem nor netfilter).
//!
//! Everything is named after a tag unique to the process and the network, so tests run
//! in parallel; [`Network`]'s `Drop` removes the namespaces and the host's veth, on a
//! panic too. A route in the test's namespace sends any other 10.x packet nowhere
//! (`unreachable 10.0.0.0/8`, a high metric): a client that outlives its network never
//! sends to a 10.x address beyond this machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::shaper::Shaper;
use crate::{Broker, Host};

/// The MAC address a cut link's neighbour entries point at: locally administered, and
/// never given to an interface here.
const NOWHERE_MAC: &str = "02:00:5e:00:de:ad";
/// The QUIC port every broker listens on (each has its own address, so one port fits).
pub const BROKER_PORT: u16 = 9100;
/// Most nodes a network holds (addresses `.1` to `.N`, the host at `.254`).
pub const NODES_MAX: usize = 16;

static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Why the test cannot make its network.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `ip ARGS` and returns its stdout, or why it failed.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS` where failure means the test cannot go on.
fn ip_must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// A bridge, `nodes` namespaces on it, and the test's namespace on it too.
pub struct Network {
    tag: String,
    /// 10.A.B.0/24.
    prefix: [u8; 3],
    nodes: usize,
    /// Pairs of nodes whose link is cut, smaller index first.
    cut: Mutex<std::collections::BTreeSet<(usize, usize)>>,
}

impl Network {
    /// Makes the network, or says why it cannot (`ip netns` missing, not root).
    pub fn create(nodes: usize) -> Result<Network, Unavailable> {
        assert!((1..=NODES_MAX).contains(&nodes), "1..={NODES_MAX} nodes");
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Unavailable("network namespaces need root".into()));
        }
        ip(&["netns", "list"]).map_err(Unavailable)?;
        // Never a 10.x packet past this machine, whatever outlives the network.
        ip(&[
            "route",
            "replace",
            "unreachable",
            "10.0.0.0/8",
            "metric",
            "4000",
        ])
        .map_err(Unavailable)?;
        let serial = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("qf{:05x}{:x}", pid & 0xf_ffff, serial & 0xf);
        // 10.A.B.0/24 from the pid and the serial, skipping any prefix in use.
        let used = ip(&["-o", "-4", "addr", "show"]).map_err(Unavailable)?;
        let start = (pid.wrapping_mul(16).wrapping_add(serial)) as usize;
        let prefix = (0..60_000usize)
            .map(|i| {
                let n = (start + i) % 60_000;
                [10u8, 100 + (n / 250) as u8 % 150, (n % 250) as u8 + 1]
            })
            .find(|p| !used.contains(&format!("inet {}.{}.{}.", p[0], p[1], p[2])))
            .ok_or_else(|| Unavailable("no free 10.x prefix".into()))?;
        let network = Network {
            tag,
            prefix,
            nodes,
            cut: Mutex::new(Default::default()),
        };
        network.build().map_err(Unavailable)?;
        Ok(network)
    }

    fn build(&self) -> Result<(), String> {
        let switch = self.switch_ns();
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for node in 0..self.nodes {
            let ns = self.netns(node);
            let inner = format!("{}n{node:x}", self.tag);
            let outer = format!("{}s{node:x}", self.tag);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "netns", &switch])?;
            ip(&["-n", &switch, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &outer, "up"])?;
            let addr = format!("{}/24", self.ip(node));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let host = self.host_if();
        let host_peer = format!("{}hp", self.tag);
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", &host_peer,
        ])?;
        ip(&["link", "set", &host_peer, "netns", &switch])?;
        ip(&["-n", &switch, "link", "set", &host_peer, "master", "br0"])?;
        ip(&["-n", &switch, "link", "set", &host_peer, "up"])?;
        let addr = format!("{}/24", self.host_ip());
        ip(&["addr", "add", &addr, "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        Ok(())
    }

    fn switch_ns(&self) -> String {
        format!("{}-sw", self.tag)
    }

    fn host_if(&self) -> String {
        format!("{}h", self.tag)
    }

    /// The namespace of node `node` (0-based).
    pub fn netns(&self, node: usize) -> String {
        format!("{}-n{node}", self.tag)
    }

    /// Node `node`'s address.
    pub fn ip(&self, node: usize) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, node as u8 + 1)
    }

    /// The test process's address on the network.
    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 254)
    }

    /// Where a broker on node `node` runs.
    pub fn host(&self, node: usize) -> Host {
        Host {
            netns: Some(self.netns(node)),
            ip: IpAddr::V4(self.ip(node)),
        }
    }

    /// The QUIC address of the broker on node `node`.
    pub fn broker_addr(&self, node: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip(node)), BROKER_PORT)
    }

    fn inner_if(&self, node: usize) -> String {
        format!("{}n{node:x}", self.tag)
    }

    /// A [`Shaper`] in every node's namespace, through which each node sends to the
    /// others: links pass datagrams on at once until a test gives them a shape.
    pub fn shapers(&self) -> Result<Vec<Shaper>, Unavailable> {
        (0..self.nodes)
            .map(|node| {
                let peers: Vec<Ipv4Addr> = (0..self.nodes)
                    .filter(|n| *n != node)
                    .map(|n| self.ip(n))
                    .collect();
                let tun = format!("{}t{node:x}", self.tag);
                Shaper::start(&self.netns(node), &tun, self.ip(node), &peers).map_err(Unavailable)
            })
            .collect()
    }

    /// Silences the link between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        assert_ne!(a, b);
        for (from, to) in [(a, b), (b, a)] {
            let to_ip = self.ip(to).to_string();
            ip_must(&[
                "-n",
                &self.netns(from),
                "neigh",
                "replace",
                &to_ip,
                "lladdr",
                NOWHERE_MAC,
                "nud",
                "permanent",
                "dev",
                &self.inner_if(from),
            ]);
        }
        self.cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((a.min(b), a.max(b)));
    }

    /// Restores the link between `a` and `b`: the neighbour entries go, and the next
    /// packet resolves the real address again.
    pub fn heal(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let to_ip = self.ip(to).to_string();
            // Absent already is fine: the link is whole.
            let _ = ip(&[
                "-n",
                &self.netns(from),
                "neigh",
                "del",
                &to_ip,
                "dev",
                &self.inner_if(from),
            ]);
        }
        self.cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(a.min(b), a.max(b)));
    }

    /// Cuts `node` from every other node (clients still reach it).
    pub fn isolate(&self, node: usize) {
        for other in (0..self.nodes).filter(|o| *o != node) {
            self.cut(node, other);
        }
    }

    /// Cuts every link between a node of `side` and a node outside it.
    pub fn split(&self, side: &[usize]) {
        for a in side {
            for b in (0..self.nodes).filter(|b| !side.contains(b)) {
                self.cut(*a, b);
            }
        }
    }

    /// Restores every cut link.
    pub fn heal_all(&self) {
        let cut: Vec<(usize, usize)> = self
            .cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        for (a, b) in cut {
            self.heal(a, b);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Removing a namespace removes the veth ends inside it, and so their peers.
        let _ = ip(&["link", "del", &self.host_if()]);
        for node in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.netns(node)]);
        }
        let _ = ip(&["netns", "del", &self.switch_ns()]);
    }
}

/// Writes one CA and one broker certificate naming every address in `ips` (and
/// localhost) into `DIR/tls/` of each of `data_dirs`, as a broker would have generated
/// them, so brokers on different addresses verify each other and clients verify any.
pub fn write_cluster_tls(data_dirs: &[&Path], ips: &[IpAddr]) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Quiver test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    names.extend(ips.iter().map(ToString::to_string));
    let mut params = rcgen::CertificateParams::new(names).expect("broker params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quiver broker");
    params.subject_alt_names.push(rcgen::SanType::URI(
        rcgen::Ia5String::try_from("urn:quiver:broker").expect("URI"),
    ));
    let key = rcgen::KeyPair::generate().expect("broker key");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("broker certificate");
    for dir in data_dirs {
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        std::fs::write(tls.join("ca.key"), ca_key.serialize_pem()).expect("ca.key");
        std::fs::write(tls.join("server.key"), key.serialize_pem()).expect("server.key");
        std::fs::write(tls.join("server.pem"), cert.pem()).expect("server.pem");
        std::fs::write(tls.join("ca.pem"), ca.pem()).expect("ca.pem");
    }
}

/// Brokers on their own nodes of a [`Network`]. Brokers are dropped (killed) before the
/// network is removed.
pub struct NetCluster {
    pub brokers: Vec<Broker>,
    pub network: Network,
    pub root: tempfile::TempDir,
}

impl NetCluster {
    /// Starts `nodes` brokers founding one cluster, each in its namespace, with `env`
    /// on every broker. `Err` when the network cannot be made here.
    pub fn start(nodes: usize, env: &[(&str, &str)]) -> Result<NetCluster, Unavailable> {
        let network = Network::create(nodes)?;
        let root = tempfile::tempdir().expect("tempdir");
        let dirs: Vec<_> = (1..=nodes)
            .map(|id| root.path().join(format!("node-{id}")))
            .collect();
        let ips: Vec<IpAddr> = (0..nodes).map(|n| IpAddr::V4(network.ip(n))).collect();
        write_cluster_tls(&dirs.iter().map(|d| d.as_path()).collect::<Vec<_>>(), &ips);
        let seeds = (0..nodes)
            .map(|n| format!("{}@{}", n + 1, network.broker_addr(n)))
            .collect::<Vec<_>>()
            .join(",");
        let brokers = (0..nodes)
            .map(|n| {
                let id = (n + 1).to_string();
                let mut all = vec![
                    ("QUIVER_NODE_ID", id.as_str()),
                    ("QUIVER_SEEDS", seeds.as_str()),
                    // The listeners are on 10.x addresses the test's namespaces alone
                    // reach; the test's clients are anonymous.
                    ("QUIVER_ALLOW_ANONYMOUS", "true"),
                ];
                all.extend_from_slice(env);
                Broker::start_on(&network.host(n), &dirs[n], &all, Some(BROKER_PORT))
            })
            .collect();
        Ok(NetCluster {
            brokers,
            network,
            root,
        })
    }

    /// A client config for broker `node` (0-based) with a short request timeout, so a
    /// client facing a silent broker moves on.
    pub fn client_config(
        &self,
        node: usize,
        request_timeout: Duration,
    ) -> quiver_sdk::ClientConfig {
        let mut config = self.brokers[node].client_config();
        config.request_timeout = request_timeout;
        config.connect_timeout = request_timeout;
        config
    }
}
