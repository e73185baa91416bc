//! Where a notification may go. The allowlist (`--notify-allow`) names hosts; a name is
//! resolved when a message is sent, every address it resolves to is checked, and the
//! connection goes to a checked address (the HTTP client resolves through this check, so a
//! name cannot resolve to one address for the check and another for the connection).
//! Loopback, private, link-local, shared, unspecified, multicast and documentation addresses
//! are refused unless an allowlist entry names that very address (`http://127.0.0.1:9000`):
//! an allowed name that resolves to an internal service does not reach it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::plugins::HostPattern;

/// Whether an address belongs to this machine, a private network or no one: not a
/// destination for notifications unless named explicitly.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => internal_v4(a),
        IpAddr::V6(a) => internal_v6(a),
    }
}

fn internal_v4(a: Ipv4Addr) -> bool {
    let [first, second, ..] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || first == 0
        // Shared address space (RFC 6598), carrier-grade NAT.
        || (first == 100 && (64..128).contains(&second))
        // Benchmarking (RFC 2544) and reserved (240/4).
        || (first == 198 && (18..20).contains(&second))
        || first >= 240
}

fn internal_v6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        // Unique local (fc00::/7) and link-local (fe80::/10).
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // Documentation (2001:db8::/32).
        || (first == 0x2001 && a.segments()[1] == 0x0db8)
        || a.to_ipv4_mapped().is_some_and(internal_v4)
}

/// The addresses notifications may connect to.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// Internal addresses the allowlist names explicitly.
    named: Arc<[IpAddr]>,
}

impl Destinations {
    pub fn new(allowed: &[HostPattern]) -> Destinations {
        Destinations {
            named: allowed.iter().filter_map(HostPattern::ip).collect(),
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.named.contains(&ip)
    }

    /// A URL whose host is an address (the client resolves nothing for it).
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default();
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(format!(
                "{ip} is an internal address; name it explicitly in --notify-allow to send there"
            ))
        }
    }

    /// Resolves a name now and keeps the addresses it may connect to.
    pub async fn resolve_checked(&self, name: &str) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
            .await
            .map_err(|e| format!("{name} does not resolve: {e}"))?
            .collect();
        let ok: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| self.permits(a.ip()))
            .collect();
        if ok.is_empty() {
            return Err(format!(
                "{name} resolves only to internal addresses ({}); name an address explicitly in --notify-allow to send there",
                found
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(ok)
    }
}

impl Resolve for Destinations {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this
                .resolve_checked(name.as_str())
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_named() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "20.40.60.80", "2606:4700::1111"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
        let d = Destinations::new(&[HostPattern::parse("http://127.0.0.1:*").unwrap()]);
        assert!(d.permits("127.0.0.1".parse().unwrap()));
        assert!(!d.permits("127.0.0.2".parse().unwrap()));
        let url = |u: &str| Url::parse(u).unwrap();
        assert!(d.check_url(&url("http://127.0.0.1:9/x")).is_ok());
        assert!(d.check_url(&url("http://10.0.0.1:9/x")).is_err());
        assert!(d.check_url(&url("http://example.com/x")).is_ok());
    }
}
