//! A cluster of controllers in one process, over the in-memory transport.
//!
//! Waits are bounded by generous deadlines and only ever wait for a condition; no
//! test asserts on how long anything took.

#![allow(dead_code)] // each test file uses part of it

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use quiver_cluster::{
    Controller, ControllerConfig, MemoryNetwork, MetadataCommand, MetadataResponse, ProposeError,
    StartError,
};
use tempfile::TempDir;

/// How long any wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn addr(id: u64) -> String {
    format!("127.0.0.1:{}", 7_400 + id)
}

/// Settings for tests: quick elections, small snapshots so they happen.
pub fn config(id: u64, dir: PathBuf, seeds: Vec<(u64, String)>) -> ControllerConfig {
    let mut config = ControllerConfig::new(id, dir, seeds);
    config.advertised_addr = Some(addr(id));
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout_min = Duration::from_millis(400);
    config.election_timeout_max = Duration::from_millis(800);
    config.propose_timeout = Duration::from_secs(5);
    config
}

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct TestCluster {
    pub network: MemoryNetwork,
    pub root: TempDir,
    pub seeds: Vec<(u64, String)>,
    pub nodes: BTreeMap<u64, Controller>,
    /// Applied to every config before a node starts.
    pub tune: fn(&mut ControllerConfig),
}

fn no_tuning(_: &mut ControllerConfig) {}

impl TestCluster {
    /// Starts the founding controllers `ids`, each with all of them as seeds.
    pub async fn start(ids: &[u64]) -> Self {
        Self::start_tuned(ids, no_tuning).await
    }

    pub async fn start_tuned(ids: &[u64], tune: fn(&mut ControllerConfig)) -> Self {
        let mut cluster = Self {
            network: MemoryNetwork::new(),
            root: tempfile::tempdir().expect("tempdir"),
            seeds: ids.iter().map(|id| (*id, addr(*id))).collect(),
            nodes: BTreeMap::new(),
            tune,
        };
        for id in ids {
            cluster.start_node(*id).await;
        }
        cluster
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("controller-{id}"))
    }

    /// Starts (or restarts) controller `id` on its directory.
    pub async fn start_node(&mut self, id: u64) {
        self.start_node_with_seeds(id, self.seeds.clone()).await;
    }

    pub async fn start_node_with_seeds(&mut self, id: u64, seeds: Vec<(u64, String)>) {
        let mut config = config(id, self.dir(id), seeds);
        (self.tune)(&mut config);
        self.start_configured(id, config).await;
    }

    /// Restarts controller `id` on its directory, listening at `addr` from now on
    /// (its own seed entry names `addr`; the others' seeds are not touched).
    pub async fn start_node_moved(&mut self, id: u64, addr: &str) {
        let seeds: Vec<(u64, String)> = self
            .seeds
            .iter()
            .map(|(seed, at)| {
                (
                    *seed,
                    if *seed == id {
                        addr.to_owned()
                    } else {
                        at.clone()
                    },
                )
            })
            .collect();
        let mut config = config(id, self.dir(id), seeds);
        config.advertised_addr = Some(addr.to_owned());
        (self.tune)(&mut config);
        self.network.move_to(id, addr);
        self.start_configured(id, config).await;
    }

    async fn start_configured(&mut self, id: u64, config: ControllerConfig) {
        // A crashed (dropped) controller releases its directory once its tasks end.
        let controller = eventually("the directory to be free", || async {
            match Controller::start_with(config.clone(), self.network.transport(id)).await {
                Ok(controller) => Some(controller),
                Err(StartError::Storage { source, .. })
                    if source.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    None
                }
                Err(e) => panic!("controller {id} does not start: {e}"),
            }
        })
        .await;
        self.network.register(id, controller.rpc_handler());
        self.nodes.insert(id, controller);
    }

    /// Stops controller `id` as if its process died: it is gone from the network
    /// and its directory is released.
    pub async fn kill(&mut self, id: u64) {
        let controller = self.nodes.remove(&id).expect("node is running");
        self.network.unregister(id);
        controller.shutdown().await.expect("shuts down");
    }

    /// Drops controller `id` without shutting it down, as a crash would: openraft
    /// stops once the last handle is gone.
    pub fn crash(&mut self, id: u64) {
        self.network.unregister(id);
        drop(self.nodes.remove(&id).expect("node is running"));
    }

    pub fn node(&self, id: u64) -> &Controller {
        self.nodes.get(&id).expect("node is running")
    }

    /// Waits until every running node names the same running leader, which itself
    /// claims leadership, and returns it.
    pub async fn leader(&self) -> u64 {
        self.leader_among(&self.nodes.keys().copied().collect::<Vec<_>>())
            .await
    }

    /// Like [`TestCluster::leader`], considering only `ids` (say, the connected side
    /// of a partition).
    pub async fn leader_among(&self, ids: &[u64]) -> u64 {
        eventually("an agreed leader", || async {
            let mut named = ids.iter().map(|id| self.node(*id).leader().map(|(l, _)| l));
            let first = named.next()??;
            if !named.all(|l| l == Some(first)) || !ids.contains(&first) {
                return None;
            }
            self.node(first).is_leader().then_some(first)
        })
        .await
    }

    /// Proposes through node `via`, retrying while there is no leader yet.
    pub async fn propose_via(
        &self,
        via: u64,
        command: MetadataCommand,
    ) -> Result<MetadataResponse, ProposeError> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match self.node(via).propose(command.clone()).await {
                Err(ProposeError::NotLeader { .. }) | Err(ProposeError::Timeout)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                answer => return answer,
            }
        }
    }

    /// Waits until every running node has applied the same version and holds the
    /// same metadata, and returns that version.
    pub async fn converged(&self) -> u64 {
        eventually("all nodes to apply the same state", || async {
            let mut nodes = self.nodes.values();
            let first = nodes.next()?;
            let (version, state) = (first.version(), first.metadata());
            nodes
                .all(|n| n.version() == version && *n.metadata() == *state)
                .then_some(version)
        })
        .await
    }
}

pub fn register(id: u32) -> MetadataCommand {
    MetadataCommand::RegisterBroker {
        broker_id: id,
        incarnation: 1,
        address: addr(u64::from(id)),
        now_ms: 1_000,
    }
}

pub fn create_topic(name: &str, partitions: u32, replication_factor: u16) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.to_owned(),
        partitions,
        replication_factor,
        configs: BTreeMap::new(),
    }
}
