//! The one rule for which address a request comes from: the TCP peer, or — behind proxies the
//! operator says to trust (`COURIER_TRUSTED_PROXIES`) — an entry of `X-Forwarded-For`. Each
//! proxy appends the address it received the request from, so only the entries added by trusted
//! proxies (the rightmost ones) can be believed; whatever a client wrote on the left is ignored.
//! Rate limits key on this address (the api now; the broadcaster can use the same rule).

use std::{fmt, net::IpAddr, str::FromStr};

/// Most `X-Forwarded-For` entries looked at (a longer header is cut, from the left).
const MAX_ENTRIES: usize = 32;

/// Which proxies in front of a service are believed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrustedProxies {
    /// None: the peer is the client, `X-Forwarded-For` is ignored (the default).
    #[default]
    None,
    /// This many proxies always stand in front (e.g. `1` behind one Ingress controller): the
    /// client is the `n`-th `X-Forwarded-For` entry from the right.
    Hops(usize),
    /// Proxies with these addresses: from the right, entries (and the peer) inside these
    /// networks are proxies, and the first one outside is the client.
    Networks(Vec<Network>),
}

/// An IP network, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr =
            address.trim().parse().map_err(|_| format!("'{text}' is not an IP address or CIDR"))?;
        let address = canonical(address);
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{text}': the prefix length must be 0–{max}"))?,
        };
        Ok(Network { address, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// `0` (none), a hop count (`1`), or CIDRs (`10.0.0.0/8,192.168.1.7`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() || text == "0" {
            return Ok(TrustedProxies::None);
        }
        if let Ok(hops) = text.parse::<usize>() {
            if hops > MAX_ENTRIES {
                return Err(format!("at most {MAX_ENTRIES} proxy hops"));
            }
            return Ok(TrustedProxies::Hops(hops));
        }
        let networks = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Network::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies::Networks(networks))
    }
}

impl TrustedProxies {
    /// The client address of a request from `peer` carrying `forwarded_for` (the
    /// `X-Forwarded-For` values, joined by commas when repeated).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        let entries = || -> Vec<Option<IpAddr>> {
            let all: Vec<&str> = forwarded_for.unwrap_or("").split(',').map(str::trim).collect();
            let start = all.len().saturating_sub(MAX_ENTRIES);
            all[start..]
                .iter()
                .filter(|e| !e.is_empty())
                .map(|e| e.parse().ok().map(canonical))
                .collect()
        };
        match self {
            TrustedProxies::None | TrustedProxies::Hops(0) => peer,
            TrustedProxies::Hops(hops) => {
                let entries = entries();
                // The proxy nearest the api appended the rightmost entry. With fewer entries
                // than hops, every entry came from a trusted proxy: the leftmost is the client.
                let index = entries.len().saturating_sub(*hops);
                entries.get(index).copied().flatten().unwrap_or(peer)
            }
            TrustedProxies::Networks(networks) => {
                let trusted = |ip: IpAddr| networks.iter().any(|n| n.contains(ip));
                if !trusted(peer) {
                    return peer;
                }
                let mut client = peer;
                for entry in entries().into_iter().rev() {
                    match entry {
                        Some(ip) if trusted(ip) => client = ip,
                        Some(ip) => return ip,
                        // Garbage where an address should be: stop at the last believable one.
                        None => return client,
                    }
                }
                client
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let none: TrustedProxies = "0".parse().unwrap();
        assert_eq!(none, TrustedProxies::None);
        assert_eq!(none.client(ip("10.0.0.9"), Some("1.2.3.4")), ip("10.0.0.9"));
    }

    #[test]
    fn hops_take_the_entry_the_nearest_trusted_proxy_saw_and_ignore_spoofed_ones() {
        let one: TrustedProxies = "1".parse().unwrap();
        let peer = ip("10.0.0.2"); // the Ingress controller
        // The client wrote a fake leftmost entry; the Ingress appended what it saw.
        assert_eq!(one.client(peer, Some("6.6.6.6, 203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(one.client(peer, Some("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(one.client(peer, None), peer, "no header: the peer");
        assert_eq!(one.client(peer, Some("not-an-ip")), peer);
        let two: TrustedProxies = "2".parse().unwrap();
        assert_eq!(two.client(peer, Some("6.6.6.6, 203.0.113.7, 10.0.0.1")), ip("203.0.113.7"));
    }

    #[test]
    fn networks_skip_trusted_proxies_from_the_right() {
        let nets: TrustedProxies = "10.0.0.0/8, 192.168.1.7".parse().unwrap();
        let peer = ip("10.1.2.3");
        assert_eq!(nets.client(peer, Some("6.6.6.6, 203.0.113.7, 10.9.9.9")), ip("203.0.113.7"));
        assert_eq!(nets.client(peer, Some("192.168.1.7")), ip("192.168.1.7"), "all trusted");
        assert_eq!(nets.client(ip("8.8.8.8"), Some("1.1.1.1")), ip("8.8.8.8"), "untrusted peer");
        assert_eq!(nets.client(ip("::ffff:10.0.0.1"), Some("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(nets.client(peer, Some("1.1.1.1, junk, 10.2.2.2")), ip("10.2.2.2"));
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        for bad in ["10.0.0.0/33", "nope", "::/129", "99"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
        assert!("fd00::/8".parse::<Network>().unwrap().contains(ip("fd12::1")));
        assert!("0.0.0.0/0".parse::<Network>().unwrap().contains(ip("1.2.3.4")));
    }
}
