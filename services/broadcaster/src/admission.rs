//! Who may open a WebSocket: the process-wide connection cap and the cap per client address,
//! counted by a [`Permit`] that each accepted socket holds until it ends.
//!
//! The client address comes from [`client_address`], the one place that decides it.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::http::HeaderMap;
use courier_core::client_addr::TrustedProxies;

/// The client address a connection is counted under: the TCP peer, or the `X-Forwarded-For`
/// entry the trusted proxies vouch for (`COURIER_TRUSTED_PROXIES`, the api's one rule in
/// `courier_core::client_addr`).
pub fn client_address(trusted: &TrustedProxies, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    trusted.client_of(peer.ip(), headers)
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The process holds `COURIER_WS_MAX_CONNECTIONS` (503).
    ProcessFull,
    /// This address holds `COURIER_MAX_CONNECTIONS_PER_ADDRESS` (429).
    AddressFull,
}

/// Open connections, in total and per client address.
#[derive(Debug)]
pub struct Connections {
    total: AtomicU64,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    /// 0: no limit.
    max_per_address: usize,
}

/// One counted connection; dropping it uncounts it.
#[derive(Debug)]
pub struct Permit {
    connections: Arc<Connections>,
    address: IpAddr,
}

impl Connections {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Connections {
            total: AtomicU64::new(0),
            per_address: Mutex::new(HashMap::new()),
            max_total,
            max_per_address,
        })
    }

    /// Open connections right now.
    pub fn open(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts a connection from `address` if both caps allow it.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Permit, Refused> {
        let open = self.total.fetch_add(1, Ordering::Relaxed);
        if open as usize >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::ProcessFull);
        }
        let mut per_address = self.lock();
        let held = per_address.entry(address).or_insert(0);
        if self.max_per_address > 0 && *held >= self.max_per_address {
            if *held == 0 {
                per_address.remove(&address);
            }
            drop(per_address);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::AddressFull);
        }
        *held += 1;
        Ok(Permit { connections: self.clone(), address })
    }

    /// Connections held by `address`.
    pub fn held_by(&self, address: IpAddr) -> usize {
        self.lock().get(&address).copied().unwrap_or(0)
    }

    /// Addresses with at least one open connection (the map never keeps idle entries).
    pub fn addresses(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.per_address.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut per_address = self.connections.lock();
        if let Some(held) = per_address.get_mut(&self.address) {
            *held -= 1;
            if *held == 0 {
                per_address.remove(&self.address);
            }
        }
        drop(per_address);
        self.connections.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn each_address_gets_its_share_and_a_freed_slot_is_reusable() {
        let connections = Connections::new(10, 2);
        let a1 = connections.admit(ip(1)).unwrap();
        let _a2 = connections.admit(ip(1)).unwrap();
        assert_eq!(connections.admit(ip(1)).unwrap_err(), Refused::AddressFull);
        let _b = connections.admit(ip(2)).expect("another address is not affected");
        assert_eq!(connections.open(), 3, "a refusal is not counted");
        drop(a1);
        let _a3 = connections.admit(ip(1)).expect("a freed slot is reusable");
        assert_eq!(connections.held_by(ip(1)), 2);
    }

    #[test]
    fn the_process_cap_applies_to_all_addresses_and_zero_means_no_per_address_cap() {
        let connections = Connections::new(3, 0);
        let permits: Vec<Permit> =
            (0..3).map(|_| connections.admit(ip(1)).expect("no per-address cap")).collect();
        assert_eq!(connections.admit(ip(2)).unwrap_err(), Refused::ProcessFull);
        assert_eq!(connections.held_by(ip(2)), 0);
        drop(permits);
        assert_eq!((connections.open(), connections.addresses()), (0, 0), "nothing left over");
    }

    #[test]
    fn the_client_address_follows_the_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.7, 203.0.113.9".parse().unwrap());
        let peer: SocketAddr = "192.0.2.1:5555".parse().unwrap();
        let none = TrustedProxies::None;
        assert_eq!(client_address(&none, peer, &headers), IpAddr::from([192, 0, 2, 1]));
        let one_hop: TrustedProxies = "1".parse().unwrap();
        // The spoofable leftmost entry is ignored: the one the Ingress appended counts.
        assert_eq!(client_address(&one_hop, peer, &headers), IpAddr::from([203, 0, 113, 9]));
    }
}
