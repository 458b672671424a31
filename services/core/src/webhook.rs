//! Where webhook tasks may be delivered: the shape of a webhook URL, the allow-list
//! (`COURIER_WEBHOOK_ALLOWED_URLS`) a URL must match, and which resolved addresses a delivery may
//! connect to (by default never loopback, link-local, private or cluster-internal ones).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

/// Longest accepted webhook URL.
pub const MAX_URL_LEN: usize = 2048;

/// Why a URL cannot be a webhook target (before any allow-list).
pub fn check_url(text: &str) -> Result<Url, String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!("url is longer than {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(text).map_err(|err| format!("url '{text}' is not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("url '{text}' must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("url '{text}' names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs; the signature authenticates the sender.
        return Err("url must not carry credentials (user:password@)".to_owned());
    }
    if url.fragment().is_some() {
        return Err(format!("url '{text}' must not have a #fragment"));
    }
    Ok(url)
}

/// One entry of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `https://hooks.example.com/orders`: same scheme, host and port, and a path under this one.
    Prefix(Url),
    /// `hooks.example.com` (that host) or `*.example.com` (its subdomains), any scheme and port.
    Host(String),
    /// `*.example.com`.
    Subdomains(String),
}

/// The URLs webhooks may be sent to (`COURIER_WEBHOOK_ALLOWED_URLS`: comma-separated URL
/// prefixes and host patterns) and whether deliveries may connect to private addresses.
/// Empty (the default): no webhook is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
    /// Whether a delivery may connect to loopback, link-local and private addresses
    /// (`COURIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS`; `./dev up` sets it for local receivers).
    pub private_networks: bool,
}

impl AllowList {
    /// Parses the comma-separated list (`https://hooks.example.com/`, `hooks.example.com`,
    /// `*.example.com`); blanks are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let entry = if item.contains("://") {
                Entry::Prefix(check_url(item).map_err(|err| format!("allow-list entry: {err}"))?)
            } else if let Some(domain) = item.strip_prefix("*.") {
                Entry::Subdomains(host_pattern(domain)?)
            } else {
                Entry::Host(host_pattern(item)?)
            };
            entries.push(entry);
        }
        Ok(AllowList { entries, private_networks: false })
    }

    /// Also lets deliveries connect to private addresses.
    pub fn with_private_networks(mut self, allowed: bool) -> Self {
        self.private_networks = allowed;
        self
    }

    /// Whether `url` matches an entry.
    pub fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let host = host.to_ascii_lowercase();
        self.entries.iter().any(|entry| match entry {
            Entry::Prefix(prefix) => {
                prefix.scheme() == url.scheme()
                    && prefix.host_str().map(str::to_ascii_lowercase).as_deref() == Some(&host)
                    && prefix.port_or_known_default() == url.port_or_known_default()
                    && under(prefix.path(), url.path())
            }
            Entry::Host(pattern) => *pattern == host,
            Entry::Subdomains(domain) => {
                host.strip_suffix(domain.as_str()).is_some_and(|head| head.ends_with('.'))
            }
        })
    }

    /// Whether a delivery may connect to `address` (after DNS resolution, or an IP literal).
    pub fn may_connect(&self, address: IpAddr) -> bool {
        self.private_networks || is_public(address)
    }
}

fn host_pattern(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if valid {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("allow-list entry '{text}' is neither a URL prefix nor a host pattern"))
    }
}

/// Whether `path` is `prefix` or below it (`/orders` covers `/orders` and `/orders/x`, not
/// `/orders-old`).
fn under(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `address` is on the public internet: not loopback, unspecified, link-local, private
/// (RFC 1918, unique-local), shared (100.64/10, where cluster networks often live), multicast,
/// broadcast or documentation space. IPv4-mapped IPv6 addresses are judged as their IPv4.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 reaches IPv4 space
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        check_url(text).unwrap()
    }

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials() {
        assert!(check_url("https://hooks.example.com/orders").is_ok());
        for bad in [
            "ftp://x/",
            "hooks.example.com",
            "https://user:pw@hooks.example.com/",
            "https://x/#frag",
            "https://",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://x/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn prefixes_match_scheme_host_port_and_path_and_hosts_match_exactly_or_by_subdomain() {
        let list =
            AllowList::parse("https://hooks.example.com/orders, api.partner.io, *.corp.example")
                .unwrap();
        assert!(list.allows(&url("https://hooks.example.com/orders")));
        assert!(list.allows(&url("https://HOOKS.example.com:443/orders/new?x=1")));
        assert!(!list.allows(&url("https://hooks.example.com/orders-old")));
        assert!(!list.allows(&url("http://hooks.example.com/orders")), "scheme");
        assert!(!list.allows(&url("https://hooks.example.com:8443/orders")), "port");
        assert!(!list.allows(&url("https://hooks.example.com.evil.io/orders")));
        assert!(list.allows(&url("http://api.partner.io:9000/x")));
        assert!(!list.allows(&url("http://evilapi.partner.io/x")));
        assert!(list.allows(&url("https://a.b.corp.example/x")));
        assert!(!list.allows(&url("https://corp.example/x")));
        assert!(!list.allows(&url("https://xcorp.example/x")));
        assert!(!AllowList::default().allows(&url("https://hooks.example.com/")), "empty: none");
        assert!(AllowList::parse("not a host!").is_err());
    }

    #[test]
    fn private_loopback_link_local_and_cluster_addresses_are_refused_unless_allowed() {
        let list = AllowList::default();
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!list.may_connect(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"] {
            assert!(list.may_connect(public.parse().unwrap()), "{public}");
        }
        assert!(list.with_private_networks(true).may_connect("127.0.0.1".parse().unwrap()));
    }
}
