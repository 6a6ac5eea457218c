//! The SSRF guard: outbound requests (webhooks, pre-send hooks) must not reach private,
//! loopback, link-local or other internal addresses, unless the operator allowed the network
//! (`gateway.webhooks.allow_networks`). Names are checked after DNS resolution, and the
//! connection goes to the very addresses that were checked, so DNS rebinding cannot slip by.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Which addresses outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

/// A request refused by the guard.
#[derive(Debug, thiserror::Error)]
#[error("blocked by the SSRF guard: {0}")]
pub struct Blocked(pub String);

fn internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
        || o[0] >= 240 // reserved
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64: may map to anything
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0) // v4-compatible
}

/// Whether `ip` is an address the public Internet does not route to.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

impl Guard {
    /// A guard allowing `networks` (CIDR, or single addresses) besides public addresses.
    /// Entries are checked by the config already; a bad one is ignored here.
    pub fn new(networks: &[String]) -> Self {
        let allow = networks
            .iter()
            .filter_map(|n| {
                n.parse::<IpNet>()
                    .ok()
                    .or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect();
        Self { allow }
    }

    /// Whether a request may go to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Checks the host of a URL when it is an address (names are checked by the resolver).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Blocked> {
        let Some(ip) = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok())
        else {
            return Ok(());
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Blocked(format!(
                "{ip} is a private, loopback or otherwise internal address (the operator may allow it in gateway.webhooks.allow_networks)"
            )))
        }
    }
}

/// A DNS resolver that drops internal addresses the guard does not allow.
pub(crate) struct GuardedResolver(pub Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok: Vec<SocketAddr> = all
                .iter()
                .filter(|a| guard.permits(a.ip()))
                .copied()
                .collect();
            if ok.is_empty() {
                let ips: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Blocked(format!(
                    "{host} resolves to internal addresses only ({}); the operator may allow them in gateway.webhooks.allow_networks",
                    ips.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let g = Guard::new(&[]);
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!g.permits(a.parse().unwrap()), "{a} must be refused");
        }
        for a in ["93.184.216.34", "2606:2800:220:1::1", "1.1.1.1"] {
            assert!(g.permits(a.parse().unwrap()), "{a} is public");
        }
        let g = Guard::new(&["127.0.0.0/8".into(), "10.0.0.5".into()]);
        assert!(g.permits("127.0.0.1".parse().unwrap()));
        assert!(g.permits("10.0.0.5".parse().unwrap()));
        assert!(!g.permits("10.0.0.6".parse().unwrap()));
    }
}
