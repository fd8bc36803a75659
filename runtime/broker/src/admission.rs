//! Admission: the budgets every connection and request draws on before the broker
//! spends memory or a task on it, so that one client's flood leaves room for others.
//!
//! - Connections: at most `connections_max` in all and `connections_max_per_ip` from
//!   one address, counted when the connection is admitted (before its handshake), so
//!   the limits are never exceeded by handshakes in progress.
//! - Requests: at most `requests_per_address_max` being read or handled from one
//!   address (per connection, QUIC's advertised stream limits bound them), and at most
//!   `requests_per_principal_max` from one authenticated principal over all the
//!   addresses it connects from (anonymous clients share no principal budget: they
//!   would all be one principal, and one could then stop the others).
//! - Request bytes: taken as they arrive, from the address's share
//!   (`request_bytes_per_address_max`) and from the broker-wide budget
//!   (`request_bytes_in_flight_max`). A reader that cannot get bytes stops reading, and
//!   QUIC flow control then holds the sender back; no buffer is ever sized from a
//!   length prefix alone.
//!
//! What it does not do: decide what a request may do (the API table) or time requests
//! out (the endpoint). It has no I/O and no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits admission enforces; see `BrokerConfig` for each one's meaning.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    pub connections_max: usize,
    pub connections_max_per_ip: usize,
    pub requests_per_address_max: usize,
    pub request_bytes_in_flight_max: usize,
    pub request_bytes_per_address_max: usize,
    pub requests_per_principal_max: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    #[error("the broker has {0} connections, its limit (connections_max)")]
    BrokerFull(usize),
    #[error("this address has {0} connections, the limit per address (connections_max_per_ip)")]
    AddressFull(usize),
}

impl ConnectionRefused {
    /// A short stable label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            ConnectionRefused::BrokerFull(_) => "connections_max",
            ConnectionRefused::AddressFull(_) => "connections_max_per_ip",
        }
    }
}

/// One address's share of the budgets, alive while it has connections.
struct AddressShare {
    connections: usize,
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

/// The broker's budgets. One per broker.
pub struct Admission {
    limits: AdmissionLimits,
    bytes: Arc<Semaphore>,
    state: Mutex<Tally>,
    /// Request places of each authenticated principal that has had a request. The
    /// names are authenticated ones (certificates the CA signed, users the controller
    /// keeps), so a client cannot grow this map with names of its own making.
    principals: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A request's place in its principal's share, held until the request is answered.
pub struct PrincipalSlot {
    _permit: OwnedSemaphorePermit,
}

struct Tally {
    connections: usize,
    addresses: HashMap<IpAddr, AddressShare>,
}

/// A connection's place, held for as long as it is open; dropping it frees the place.
pub struct ConnectionTicket {
    admission: Arc<Admission>,
    address: IpAddr,
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

/// A request's place in its address's share; its bytes are added as they arrive.
pub struct RequestSlot {
    _request: OwnedSemaphorePermit,
    /// The place in the sender's principal's share, for authenticated principals.
    pub principal: Option<PrincipalSlot>,
    address_bytes: Arc<Semaphore>,
    broker_bytes: Arc<Semaphore>,
    held: Vec<OwnedSemaphorePermit>,
    held_bytes: usize,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            bytes: Arc::new(Semaphore::new(limits.request_bytes_in_flight_max)),
            limits,
            state: Mutex::new(Tally {
                connections: 0,
                addresses: HashMap::new(),
            }),
            principals: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for a request place in authenticated principal `name`'s share.
    pub async fn principal_slot(&self, name: &str) -> Option<PrincipalSlot> {
        let share = {
            let mut principals = self
                .principals
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let max = self.limits.requests_per_principal_max;
            Arc::clone(
                principals
                    .entry(name.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(max))),
            )
        };
        share
            .acquire_owned()
            .await
            .ok()
            .map(|permit| PrincipalSlot { _permit: permit })
    }

    /// Admits a connection from `address`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<ConnectionTicket, ConnectionRefused> {
        let mut tally = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if tally.connections >= self.limits.connections_max {
            return Err(ConnectionRefused::BrokerFull(tally.connections));
        }
        let limits = self.limits;
        let share = tally
            .addresses
            .entry(address)
            .or_insert_with(|| AddressShare {
                connections: 0,
                requests: Arc::new(Semaphore::new(limits.requests_per_address_max)),
                bytes: Arc::new(Semaphore::new(limits.request_bytes_per_address_max)),
            });
        if share.connections >= limits.connections_max_per_ip {
            return Err(ConnectionRefused::AddressFull(share.connections));
        }
        share.connections += 1;
        let (requests, bytes) = (Arc::clone(&share.requests), Arc::clone(&share.bytes));
        tally.connections += 1;
        Ok(ConnectionTicket {
            admission: Arc::clone(self),
            address,
            requests,
            bytes,
        })
    }

    /// Connections admitted and not yet closed.
    pub fn connections(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .connections
    }

    /// Request bytes currently held, broker-wide.
    pub fn request_bytes(&self) -> usize {
        self.limits.request_bytes_in_flight_max - self.bytes.available_permits()
    }
}

impl Drop for ConnectionTicket {
    fn drop(&mut self) {
        let mut tally = self
            .admission
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tally.connections -= 1;
        if let Some(share) = tally.addresses.get_mut(&self.address) {
            share.connections -= 1;
            if share.connections == 0 {
                tally.addresses.remove(&self.address);
            }
        }
    }
}

impl ConnectionTicket {
    /// Waits for a request place in this address's share.
    pub async fn request_slot(&self, broker_bytes: &Arc<Semaphore>) -> Option<RequestSlot> {
        let request = Arc::clone(&self.requests).acquire_owned().await.ok()?;
        Some(RequestSlot {
            _request: request,
            principal: None,
            address_bytes: Arc::clone(&self.bytes),
            broker_bytes: Arc::clone(broker_bytes),
            held: Vec::new(),
            held_bytes: 0,
        })
    }

    /// The address this connection came from.
    pub fn address(&self) -> IpAddr {
        self.address
    }
}

impl Admission {
    /// The broker-wide byte budget, which request slots draw on.
    pub fn broker_bytes(&self) -> &Arc<Semaphore> {
        &self.bytes
    }
}

impl RequestSlot {
    /// Takes `bytes` more from the address's share and the broker-wide budget, waiting
    /// until both have them. Returns `None` only if a budget was closed.
    pub async fn take_bytes(&mut self, bytes: usize) -> Option<()> {
        let permits = u32::try_from(bytes).ok()?;
        let from_address = Arc::clone(&self.address_bytes)
            .acquire_many_owned(permits)
            .await
            .ok()?;
        let from_broker = Arc::clone(&self.broker_bytes)
            .acquire_many_owned(permits)
            .await
            .ok()?;
        self.held.push(from_address);
        self.held.push(from_broker);
        self.held_bytes += bytes;
        Some(())
    }

    /// Bytes this request holds.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            connections_max: 3,
            connections_max_per_ip: 2,
            requests_per_address_max: 2,
            request_bytes_in_flight_max: 100,
            request_bytes_per_address_max: 60,
            requests_per_principal_max: 2,
        }
    }

    #[tokio::test]
    async fn one_principal_cannot_take_more_than_its_share_from_any_number_of_addresses() {
        let admission = Admission::new(limits());
        let _first = admission
            .principal_slot("User:mallory")
            .await
            .expect("slot");
        let second = admission
            .principal_slot("User:mallory")
            .await
            .expect("slot");
        let third = admission.principal_slot("User:mallory");
        tokio::pin!(third);
        assert!(
            futures_now(&mut third).await.is_none(),
            "mallory's share is spent"
        );
        let _alice = admission
            .principal_slot("User:alice")
            .await
            .expect("alice has her own share");
        drop(second);
        assert!(futures_now(&mut third).await.is_some(), "a place came free");
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));
    const C: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 4));

    #[test]
    fn connections_are_capped_per_address_and_in_all_and_freed_on_drop() {
        let admission = Admission::new(limits());
        let a1 = admission.admit(A).expect("first from A");
        let _a2 = admission.admit(A).expect("second from A");
        assert_eq!(
            admission.admit(A).err(),
            Some(ConnectionRefused::AddressFull(2))
        );
        let _b1 = admission.admit(B).expect("B has its own share");
        assert_eq!(
            admission.admit(C).err(),
            Some(ConnectionRefused::BrokerFull(3))
        );
        drop(a1);
        assert_eq!(admission.connections(), 2);
        let _c1 = admission.admit(C).expect("a place came free");
    }

    #[test]
    fn an_address_share_is_forgotten_with_its_last_connection() {
        let admission = Admission::new(limits());
        drop(admission.admit(A).expect("admitted"));
        let tally = admission.state.lock().expect("not poisoned");
        assert!(tally.addresses.is_empty());
    }

    #[tokio::test]
    async fn one_address_cannot_take_more_than_its_share_of_request_slots_or_bytes() {
        let admission = Admission::new(limits());
        let a = admission.admit(A).expect("admitted");
        let b = admission.admit(B).expect("admitted");
        let bytes = admission.broker_bytes();
        let mut first = a.request_slot(bytes).await.expect("slot");
        assert_eq!(a.address(), A);
        let _second = a.request_slot(bytes).await.expect("slot");
        // A third request from A waits for a slot; B is not held back by A's.
        let third = a.request_slot(bytes);
        tokio::pin!(third);
        assert!(
            futures_now(&mut third).await.is_none(),
            "A's share is spent"
        );
        let mut from_b = b.request_slot(bytes).await.expect("B has its own share");

        first.take_bytes(60).await.expect("A's whole byte share");
        assert_eq!(admission.request_bytes(), 60);
        // B can still take bytes: A holds only its share of the broker's budget.
        from_b.take_bytes(40).await.expect("B's bytes");
        assert_eq!(admission.request_bytes(), 100);
        drop(first);
        assert_eq!(
            admission.request_bytes(),
            40,
            "a finished request gives its bytes back"
        );
    }

    /// Polls a future once: `Some` if it completed.
    async fn futures_now<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = f => Some(out),
            _ = std::future::ready(()) => None,
        }
    }
}
