//! Host names as requests carry them (`Host`, `:authority`, SNI), normalised once for
//! every lookup by name: the proxy's route table and the edge's tunnel lookup. Hostile
//! values never reach a table: anything that is not a plausible host name or IP literal
//! is refused here.

use std::net::{IpAddr, Ipv6Addr};

/// Longest DNS name (RFC 1035), without the trailing dot.
pub const MAX_HOST_LEN: usize = 253;
/// Longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;

/// Normalises a `Host` header or SNI value for route lookup: lowercased, `:port` removed,
/// one trailing dot removed, `[v6]` or `[v6]:port` unwrapped to the bare IPv6 address.
/// Returns `None` for anything that is not a plausible hostname or IP literal (empty, empty
/// labels, characters outside letters, digits, `-`, `_`, `.`, a non-numeric port, over-long
/// names), so hostile headers never reach the route table.
pub fn normalize_host(raw: &str) -> Option<String> {
    if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        let ip: Ipv6Addr = v6.parse().ok()?;
        return Some(ip.to_string());
    }
    let host = match raw.split_once(':') {
        // A second colon means an unbracketed IPv6 literal (SNI cannot carry one, but a
        // client might send it in Host).
        Some((_, port)) if port.contains(':') => {
            let ip: Ipv6Addr = raw.parse().ok()?;
            return Some(ip.to_string());
        }
        Some((host, port)) if is_port(port) => host,
        Some(_) => return None,
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    is_hostname(&host).then_some(host)
}

/// `*DIGIT` with at most five digits, as RFC 3986 allows an empty port.
fn is_port(s: &str) -> bool {
    s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Lowercase DNS name or IPv4 literal: non-empty labels of `[a-z0-9_-]`, bounded lengths.
/// Underscores are tolerated because internal names sometimes carry them.
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HOST_LEN
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// The name of a tunnel or of one of its routes, as the edge reads it from a client's
/// request: [`normalize_host`], and a DNS name, never an IP literal (tunnels are reached
/// by name only).
pub fn tunnel_host(raw: &str) -> Option<String> {
    let host = normalize_host(raw)?;
    (host.parse::<IpAddr>().is_err() && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .then_some(host)
}

/// The tunnel domains a normalised host may belong to, in lookup order: the host itself
/// (a tunnel's domain), then the host without its first label (`<route>.<tunnel domain>`)
/// when that still has a dot. Exactly one label is stripped, never more, so a host can
/// only ever reach the tunnel whose domain it is or is directly under.
pub fn tunnel_domains(host: &str) -> impl Iterator<Item = &str> {
    let parent = host
        .split_once('.')
        .map(|(_, parent)| parent)
        .filter(|p| p.contains('.'));
    std::iter::once(host).chain(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_hosts_are_dns_names_only() {
        assert_eq!(
            tunnel_host("AB.Example.com:443").as_deref(),
            Some("ab.example.com")
        );
        assert_eq!(
            tunnel_host("ab.example.com.").as_deref(),
            Some("ab.example.com")
        );
        for refused in [
            "[::1]:443",
            "::1",
            "10.0.0.1",
            "10.0.0.1:443",
            "1.2",
            "a b",
            "",
            ".",
            "a..example.com",
            ".example.com",
            "example.com..",
            "ab.example.com:https",
            "ab.example.com:123456",
            "ab/example.com",
            "ab.example.com@evil.test",
            "ab.exa\u{0}mple.com",
        ] {
            assert_eq!(tunnel_host(refused), None, "{refused:?}");
        }
        let long = format!("{}.example.com", "a".repeat(64));
        assert_eq!(tunnel_host(&long), None, "label over 63");
        let long = ["abcdefghi"; 26].join(".");
        assert_eq!(long.len(), 259);
        assert_eq!(tunnel_host(&long), None, "name over 253");
    }

    #[test]
    fn tunnel_domains_strip_one_label_at_most() {
        fn all(h: &str) -> Vec<&str> {
            tunnel_domains(h).collect()
        }
        assert_eq!(
            all("t1.tunnels.example.com"),
            ["t1.tunnels.example.com", "tunnels.example.com"]
        );
        assert_eq!(
            all("docs.t1.tunnels.example.com"),
            ["docs.t1.tunnels.example.com", "t1.tunnels.example.com"]
        );
        // A single-label parent is never a candidate.
        assert_eq!(all("t1.example"), ["t1.example"]);
        assert_eq!(all("localhost"), ["localhost"]);
    }
}
