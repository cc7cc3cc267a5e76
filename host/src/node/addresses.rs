//! This node's IP addresses, for a backend's `node` import (finding its own machine at a cloud
//! provider by address instead of guessing).

use std::net::IpAddr;

/// The node's interface addresses, loopback and link-local left out, deduplicated and sorted.
pub fn addresses() -> Vec<String> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut found: Vec<IpAddr> = interfaces
        .filter_map(|i| i.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
            IpAddr::V6(v6) => {
                !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
            }
        })
        .collect();
    found.sort();
    found.dedup();
    found.into_iter().map(|ip| ip.to_string()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_loopback_among_the_addresses() {
        let found = super::addresses();
        assert!(
            !found.iter().any(|a| a == "127.0.0.1" || a == "::1"),
            "{found:?}"
        );
    }
}
