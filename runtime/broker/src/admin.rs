//! The admin HTTP listener: `/metrics` (Prometheus text), `/health` (the process is
//! alive) and `/ready` (recovery is done and the QUIC endpoint accepts).
//!
//! A deliberately small HTTP/1.1 responder: GET and HEAD on three paths, one request
//! per connection, the request head capped at [`REQUEST_HEAD_BYTES_MAX`] and read within
//! [`REQUEST_READ_TIMEOUT`]. Anything more belongs behind a real proxy.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use std::collections::BTreeMap;

use crate::metrics::{BrokerFacts, ReplicaHealth};
use crate::state::BrokerState;

/// The most bytes of request line and headers read before answering 431.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// How long a client gets to send its request head.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once; more wait in the accept queue.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;

/// Per topic, the replica health this broker reports, from the controller's metadata.
fn replica_health(state: &BrokerState) -> BTreeMap<String, ReplicaHealth> {
    let member = &state.cluster;
    let metadata = member.controller.metadata();
    let controller_leader = member.controller.is_leader();
    metadata
        .topics()
        .iter()
        .map(|(name, topic)| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| (p.leader, p.replicas.len(), p.isr.len()));
            let health =
                ReplicaHealth::of_partitions(state.config.node_id, controller_leader, partitions);
            (name.clone(), health)
        })
        .collect()
}

/// Serves until the broker's shutdown signal fires.
pub async fn serve(listener: TcpListener, state: Arc<BrokerState>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS_MAX));
    let mut shutdown = state.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(%err, "admin accept failed");
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(err) = answer(stream, &state).await {
                tracing::debug!(%err, "admin request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, state: &BrokerState) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let complete = tokio::time::timeout(REQUEST_READ_TIMEOUT, async {
        loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok::<bool, std::io::Error>(true);
            }
            if head.len() >= REQUEST_HEAD_BYTES_MAX {
                return Ok(false);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            head.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    if !complete {
        return respond(
            &mut stream,
            431,
            "text/plain",
            "request head too large or incomplete\n",
            false,
        )
        .await;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain",
            "only GET and HEAD\n",
            head_only,
        )
        .await;
    }
    match path {
        "/health" => respond(&mut stream, 200, "text/plain", "ok\n", head_only).await,
        "/ready" => {
            if state.ready.load(Ordering::Acquire) {
                respond(&mut stream, 200, "text/plain", "ready\n", head_only).await
            } else {
                respond(&mut stream, 503, "text/plain", "not ready\n", head_only).await
            }
        }
        "/metrics" if !state.metrics.enabled => {
            let body = "metrics are disabled (metrics = false)\n";
            respond(&mut stream, 404, "text/plain", body, head_only).await
        }
        "/metrics" => {
            let broker = BrokerFacts {
                node_id: state.config.node_id,
                group_lag: group_lag(state),
                group_members: group_members(state),
                data_dir: &state.config.data_dir,
                plugins_registered: state.plugins.registry.plugin_count(),
                plugin_loads_from_cache: state
                    .plugins
                    .registry
                    .loads
                    .from_cache
                    .load(std::sync::atomic::Ordering::Relaxed),
                plugin_loads_compiled: state
                    .plugins
                    .registry
                    .loads
                    .compiled
                    .load(std::sync::atomic::Ordering::Relaxed),
                request_bytes_in_flight: state.admission.request_bytes(),
                replica_health: replica_health(state),
            };
            let topics: Vec<_> = state.topics.all().iter().map(|t| t.sample()).collect();
            let body = state.metrics.render(&topics, broker);
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found: try /metrics, /health or /ready\n",
                head_only,
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Lag per group and topic: high watermark minus committed offset, over the
/// partitions the group committed that this broker leads (each partition's lag is
/// reported once in a cluster, by its leader, which knows its high watermark).
fn group_lag(state: &BrokerState) -> Vec<(String, String, u64)> {
    let mut lag: std::collections::BTreeMap<(String, String), u64> =
        std::collections::BTreeMap::new();
    let member = &state.cluster;
    let metadata = member.controller.metadata();
    for (key, committed) in metadata.offsets() {
        let leads = metadata
            .partition(&key.topic, key.partition)
            .is_some_and(|p| p.leader == Some(member.broker_id));
        if !leads {
            continue;
        }
        let Some(topic) = state.topics.get(&key.topic) else {
            continue;
        };
        let Some(partition) = topic.partitions.get(key.partition as usize) else {
            continue;
        };
        let behind = partition.high_watermark().saturating_sub(committed.offset);
        *lag.entry((key.group.clone(), key.topic.clone()))
            .or_default() += behind;
    }
    lag.into_iter().map(|((g, t), l)| (g, t, l)).collect()
}

/// Live members per group: those this broker coordinates, and every group with
/// committed offsets at 0 so that a group without members still shows.
fn group_members(state: &BrokerState) -> Vec<(String, u32)> {
    let mut members: std::collections::BTreeMap<String, u32> =
        crate::offsets::OffsetView(state.cluster.controller.metadata())
            .groups()
            .into_iter()
            .map(|g| (g, 0))
            .collect();
    let live = state
        .groups
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .list();
    members.extend(live);
    members.into_iter().collect()
}
