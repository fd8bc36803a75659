//! The physical ceilings the broker's figures are compared with, measured by the same
//! binary on the same machine in the same run:
//!
//! - QUIC: a bare quinn bulk transfer over loopback, one connection and one stream,
//!   with the broker's TLS (rustls, ring, TLS 1.3) and transport settings, 1 MiB chunks;
//! - disk: a sequential write to the given directory followed by one fdatasync, and
//!   the rate of 4 KiB appends each followed by fdatasync (what `flush = always` pays
//!   per group commit).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;

/// Chunk size of the QUIC transfer and the disk write.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Appends in the small-append measurement.
const SMALL_APPENDS: usize = 500;

/// The measured ceilings, in bytes per second (and appends per second).
#[derive(Debug, Clone, Copy)]
pub struct Ceilings {
    pub quic_bytes_per_second: f64,
    pub disk_bytes_per_second: Option<f64>,
    pub small_appends_per_second: Option<f64>,
}

/// A directory for throwaway files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &Path, what: &str) -> anyhow::Result<Self> {
        let dir = parent.join(format!(".quiver-ceiling-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes per second of a bare quinn transfer of `total` bytes over loopback.
pub async fn quic(total: u64) -> anyhow::Result<f64> {
    let scratch = Scratch::new(&std::env::temp_dir(), "tls")?;
    let identity = quiver_broker::tls::ensure_generated(&scratch.0, &[Ipv4Addr::LOCALHOST.into()])?;
    let crypto = quiver_broker::tls::server_crypto(identity, None, false)?;
    let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| anyhow::anyhow!("QUIC TLS setup: {e}"))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
    server_config.transport_config(Arc::new(quiver_broker::server::transport_config(
        &quiver_broker::BrokerConfig::default(),
    )));
    // The broker's and the SDK's sockets, so the ceiling has their kernel buffers too.
    let server = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        quiver_sdk::transport::bind_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?,
        Arc::new(quinn::TokioRuntime),
    )?;
    let addr = server.local_addr()?;
    let receiver = tokio::spawn(async move {
        let connection = server.accept().await.context("no connection")?.await?;
        let mut recv = connection.accept_uni().await?;
        let mut received = 0u64;
        while let Some(chunk) = recv.read_chunk(CHUNK_BYTES, true).await? {
            received += chunk.bytes.len() as u64;
        }
        anyhow::Ok(received)
    });
    let mut config =
        quiver_sdk::ClientConfig::new(addr.to_string(), scratch.0.join("tls").join("ca.pem"));
    config.server_name = Some("localhost".into());
    let client_config = quiver_sdk::tls::quic_client_config(&config)?;
    let mut endpoint =
        quiver_sdk::transport::client_endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    endpoint.set_default_client_config(client_config);
    let connection = endpoint.connect(addr, "localhost")?.await?;
    let chunk = Bytes::from(vec![0x5a_u8; CHUNK_BYTES]);
    let started = Instant::now();
    let mut send = connection.open_uni().await?;
    let mut sent = 0u64;
    while sent < total {
        send.write_chunk(chunk.clone()).await?;
        sent += CHUNK_BYTES as u64;
    }
    send.finish()?;
    let received = receiver.await.context("receiver task")??;
    let elapsed = started.elapsed();
    connection.close(0u32.into(), b"done");
    anyhow::ensure!(received == sent, "sent {sent} bytes but {received} arrived");
    Ok(received as f64 / elapsed.as_secs_f64())
}

/// Bytes per second of writing `total` bytes sequentially and fdatasync'ing once, and
/// 4 KiB appends with fdatasync per second, in `dir`.
pub fn disk(dir: &Path, total: u64) -> anyhow::Result<(f64, f64)> {
    let scratch = Scratch::new(dir, "disk")?;
    let path = scratch.0.join("sequential");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0x5a_u8; CHUNK_BYTES];
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        file.write_all(&chunk)?;
        written += CHUNK_BYTES as u64;
    }
    file.sync_data()?;
    let sequential = written as f64 / started.elapsed().as_secs_f64();
    drop(file);

    let mut file = std::fs::File::create(scratch.0.join("appends"))?;
    let small = vec![0x5a_u8; 4096];
    let started = Instant::now();
    for _ in 0..SMALL_APPENDS {
        file.write_all(&small)?;
        file.sync_data()?;
    }
    let appends = SMALL_APPENDS as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok((sequential, appends))
}

/// Measures every ceiling; the disk ones in `dir`.
pub async fn measure(
    quic_bytes: u64,
    disk_dir: Option<&Path>,
    disk_bytes: u64,
) -> anyhow::Result<Ceilings> {
    let quic_bytes_per_second = quic(quic_bytes).await?;
    let (disk_bytes_per_second, small_appends_per_second) = match disk_dir {
        Some(dir) => {
            let dir = dir.to_owned();
            let (seq, appends) =
                tokio::task::spawn_blocking(move || disk(&dir, disk_bytes)).await??;
            (Some(seq), Some(appends))
        }
        None => (None, None),
    };
    Ok(Ceilings {
        quic_bytes_per_second,
        disk_bytes_per_second,
        small_appends_per_second,
    })
}

/// Prints ceilings as text or one JSON object.
pub fn print(ceilings: &Ceilings, json: bool) {
    let mb = |v: f64| v / 1e6;
    if json {
        let line = serde_json::json!({
            "workload": "ceiling",
            "quic_mb_per_second": mb(ceilings.quic_bytes_per_second),
            "disk_sequential_fdatasync_mb_per_second": ceilings.disk_bytes_per_second.map(mb),
            "disk_4k_append_fdatasync_per_second": ceilings.small_appends_per_second,
        });
        println!("{line}");
        return;
    }
    println!(
        "ceiling: bare quinn, one stream, broker TLS and transport: {:.1} MB/s",
        mb(ceilings.quic_bytes_per_second)
    );
    if let (Some(seq), Some(appends)) = (
        ceilings.disk_bytes_per_second,
        ceilings.small_appends_per_second,
    ) {
        println!(
            "ceiling: disk sequential write + fdatasync: {:.1} MB/s",
            mb(seq)
        );
        println!("ceiling: 4 KiB append + fdatasync: {appends:.0} per second");
    }
}
