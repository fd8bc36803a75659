//! The UDP sockets under the client's and the broker's QUIC endpoints.
//!
//! Linux gives a UDP socket about 208 KiB of receive buffer by default. A QUIC sender
//! with a window of several MiB overruns that within a fraction of a millisecond when
//! the receiving process is off its core, and every datagram the kernel drops is a
//! loss to the congestion controller, which then halves its window. Both ends ask for
//! larger buffers; the kernel caps the request at `net.core.rmem_max` and
//! `net.core.wmem_max` (raise those for more).

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Receive and send buffer requested for every QUIC socket: a few milliseconds of a
/// 10 Gbit/s path, and more than one stream's flow-control window.
pub const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// A UDP socket bound to `addr` with [`UDP_BUFFER_BYTES`] of kernel buffer requested
/// each way (the kernel may grant less; the socket works with whatever it grants). A
/// wildcard IPv6 address also reaches IPv4 peers where the platform allows.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6()
        && let Err(err) = socket.set_only_v6(false)
    {
        tracing::debug!(%err, "UDP socket stays IPv6-only");
    }
    // A smaller grant is not an error: the socket works, only with more drops at bursts.
    if let Err(err) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(%err, "UDP receive buffer left at the kernel's default");
    }
    if let Err(err) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(%err, "UDP send buffer left at the kernel's default");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A client-only QUIC endpoint on a socket from [`bind_udp`].
pub fn client_endpoint(addr: SocketAddr) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        bind_udp(addr)?,
        std::sync::Arc::new(quinn::TokioRuntime),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_get_more_than_the_default_buffer() {
        let socket = bind_udp(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let granted = Socket::from(socket).recv_buffer_size().expect("read back");
        let plain = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let default = Socket::from(plain).recv_buffer_size().expect("read back");
        // The request is capped at net.core.rmem_max (reported doubled); only where
        // that cap is above the default can a larger buffer be granted.
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map(|max| max * 2);
        match cap {
            Some(cap) if cap > default => {
                assert!(granted > default, "granted {granted}, default {default}")
            }
            _ => assert!(granted >= default, "granted {granted}, default {default}"),
        }
    }

    #[test]
    fn an_address_in_use_is_an_error() {
        let first = bind_udp(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let taken = first.local_addr().expect("address");
        assert!(bind_udp(taken).is_err());
    }
}
