//! A broker's services assembled in process for unit tests: a single node on a
//! temporary data directory, its controller's RPCs carried in memory, no endpoint and
//! no sockets. Handlers and background logic run against it as they do in a broker.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::state::{BrokerState, StateParts};

/// A single-node broker's services on `dir`, reading time from `clock`, its
/// configuration adjusted by `tweak`; registered with its one-member quorum and
/// leading its partitions, as a started broker is before it accepts.
pub(crate) async fn in_process_broker(
    dir: &std::path::Path,
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut BrokerConfig),
) -> Arc<BrokerState> {
    let mut config = BrokerConfig {
        data_dir: dir.to_owned(),
        ..Default::default()
    };
    tweak(&mut config);
    // The broker's own TLS files, as a start generates them (the join API hands out
    // the CA).
    crate::tls::ensure_generated(&config.data_dir, &crate::join::own_addresses(&config))
        .expect("TLS files");
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let stores = crate::server::open_stores(&config, &metrics, &clock)
        .await
        .expect("stores open");
    let (shutdown, _) = tokio::sync::watch::channel(false);
    let services = crate::cluster::MemberServices::new(
        config.clone(),
        Arc::clone(&stores.topics),
        Arc::clone(&metrics),
        Arc::clone(&clock),
        shutdown.subscribe(),
    );
    let (tasks, groups, peer_health) = (
        Arc::clone(&services.tasks),
        Arc::clone(&services.groups),
        Arc::clone(&services.peer_health),
    );
    let peers = Arc::new(crate::peers::PeerClients::new(
        config.clone(),
        Arc::clone(&peer_health),
        Arc::clone(&clock),
    ));
    let network = quiver_cluster::MemoryNetwork::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9092));
    let (member, advertised) =
        crate::cluster::start_member_on(services, addr, peers, network.transport(1))
            .await
            .expect("controller starts");
    network.register(1, member.controller.rpc_handler());
    let incarnation = crate::cluster::register_single_node(&member, &advertised)
        .await
        .expect("registers");
    crate::cluster::reconcile(&member).await;
    crate::cluster::run(&member, advertised, Some(incarnation)).expect("member runs");
    let state = BrokerState::new(StateParts {
        config,
        clock,
        metrics,
        shutdown,
        tasks,
        topics: stores.topics,
        groups,
        producer_ids: stores.producer_ids,
        offsets: stores.offsets,
        plugins: stores.plugins,
        cluster: member,
        peer_health,
    })
    .expect("state");
    Arc::new(state)
}

/// Waits (at most 10 s) until this broker leads every partition of `topic` in the
/// controller's current epoch, as the reconcile loop brings about after a change.
pub(crate) async fn wait_led(state: &BrokerState, topic: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metadata = state.cluster.controller.metadata();
        let led = metadata.topic(topic).is_some_and(|t| {
            t.partitions.iter().enumerate().all(|(index, p)| {
                state
                    .cluster
                    .replicas
                    .leads(topic, index as u32, p.leader_epoch)
            })
        });
        if led {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} not led here within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
