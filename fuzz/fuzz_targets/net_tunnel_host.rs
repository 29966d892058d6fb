//! Fuzzes how the edge (and the replica router) pick a tunnel from a client's `Host`:
//! `tunnel_host` then the lookup order of `tunnel_domains`, against a fixed table of
//! tunnel domains. No panic; a host that is accepted is a lowercase DNS name (no port, no
//! trailing dot, no IP literal) and reads back as itself; and a host only ever reaches
//! the tunnel whose domain it is or, by exactly one more label, a route under it — never
//! a tunnel further up, a sibling, or one whose name merely ends the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_net::host::{MAX_HOST_LEN, tunnel_domains, tunnel_host};

const TUNNELS: [&str; 4] = [
    "t1.tunnels.example.com",
    "docs.t1.tunnels.example.com",
    "t2.tunnels.example.com",
    "x-t1.tunnels.example.com",
];

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let Some(host) = tunnel_host(&raw) else {
        return;
    };
    assert!(!host.is_empty() && host.len() <= MAX_HOST_LEN);
    assert!(host.bytes().all(|b| b.is_ascii_lowercase()
        || b.is_ascii_digit()
        || b == b'-'
        || b == b'_'
        || b == b'.'));
    assert!(!host.ends_with('.') && !host.starts_with('.') && !host.contains(".."));
    assert!(host.parse::<std::net::IpAddr>().is_err(), "IP literal {host}");
    assert_eq!(tunnel_host(&host).as_deref(), Some(host.as_str()), "idempotent");

    let domains: Vec<&str> = tunnel_domains(&host).collect();
    assert!(!domains.is_empty() && domains.len() <= 2);
    assert_eq!(domains[0], host);
    let chosen = domains.iter().find(|d| TUNNELS.contains(d));
    if let Some(tunnel) = chosen {
        if *tunnel != host {
            let label = host
                .strip_suffix(tunnel)
                .and_then(|l| l.strip_suffix('.'))
                .expect("a route host ends with .<tunnel domain>");
            assert!(!label.is_empty() && !label.contains('.'), "{host} → {tunnel}");
        }
    }
});
