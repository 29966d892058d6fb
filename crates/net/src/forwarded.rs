//! The client's address behind reverse proxies we were told to trust.
//!
//! A request's TCP peer is its client unless the peer is one of the configured trusted
//! proxies. Then the client is read from `X-Forwarded-For`, walking from the right (the
//! entry the nearest proxy added) over further trusted proxies to the first address that
//! is not one of them. Everything left of that address was written by someone we do not
//! trust and is never read, so a client cannot choose its own address by sending the
//! header itself. An entry that is not an address stops the walk at the last proxy that
//! was trusted, which then counts as the client.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// At most this many `X-Forwarded-For` entries are examined, right to left.
pub const MAX_HOPS: usize = 32;

/// Networks whose connections may say who their client is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// Why a trusted-proxy entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedProxyError {
    #[error("{0:?} is not an IP address or network (e.g. 10.0.0.0/8, 192.0.2.7, fd00::/8)")]
    Malformed(String),
    #[error(
        "{0:?} would trust every address, so any client could choose its own source address; name the proxies' networks"
    )]
    Everyone(String),
}

impl TrustedProxies {
    /// No proxy trusted: every request's source is its TCP peer.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses networks (`10.0.0.0/8`) or single addresses (`192.0.2.7`, `::1`); empty
    /// entries (an unset variable, a trailing comma) are skipped.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, TrustedProxyError> {
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let e = e.as_ref().trim();
            if e.is_empty() {
                continue;
            }
            let net = match e.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => match e.parse::<IpAddr>() {
                    Ok(a) => IpNet::from(a),
                    Err(_) => return Err(TrustedProxyError::Malformed(e.to_owned())),
                },
            };
            if net.prefix_len() == 0 {
                return Err(TrustedProxyError::Everyone(e.to_owned()));
            }
            nets.push(net.trunc());
        }
        Ok(Self { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` (IPv4-mapped IPv6 read as IPv4) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with these `X-Forwarded-For`
    /// header values (in the order received).
    pub fn client<'a, I>(&self, peer: IpAddr, forwarded_for: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: DoubleEndedIterator,
    {
        let mut hop = peer.to_canonical();
        if !self.contains(hop) {
            return hop;
        }
        let entries = forwarded_for
            .into_iter()
            .rev()
            .flat_map(|v| v.rsplit(|b| *b == b','))
            .take(MAX_HOPS);
        for entry in entries {
            let Some(ip) = parse_entry(entry) else {
                return hop;
            };
            if !self.contains(ip) {
                return ip;
            }
            hop = ip;
        }
        hop
    }
}

impl TrustedProxies {
    /// [`TrustedProxies::client`] with the `X-Forwarded-For` lines of `headers`.
    pub fn client_of(&self, peer: IpAddr, headers: &hyper::HeaderMap) -> IpAddr {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes());
        self.client(peer, forwarded)
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`) or in brackets, surrounded by optional spaces.
fn parse_entry(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim_matches([' ', '\t']);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(nets).unwrap()
    }

    fn client(t: &TrustedProxies, peer: &str, headers: &[&str]) -> IpAddr {
        t.client(ip(peer), headers.iter().map(|h| h.as_bytes()))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(client(&t, "192.0.2.9", &["10.1.1.1"]), ip("192.0.2.9"));
        assert_eq!(
            client(&t, "192.0.2.9", &["198.51.100.1, 10.0.0.1"]),
            ip("192.0.2.9")
        );
        assert_eq!(client(&t, "192.0.2.9", &[]), ip("192.0.2.9"));
        let none = TrustedProxies::none();
        assert_eq!(client(&none, "10.0.0.1", &["198.51.100.1"]), ip("10.0.0.1"));
    }

    #[test]
    fn a_trusted_peer_names_the_client_it_saw() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client(&t, "10.0.0.5", &["198.51.100.1"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client(&t, "10.0.0.5", &[" 198.51.100.1 "]),
            ip("198.51.100.1")
        );
        assert_eq!(client(&t, "10.0.0.5", &["2001:db8::7"]), ip("2001:db8::7"));
    }

    #[test]
    fn what_the_client_wrote_itself_is_never_read() {
        // The client sent "X-Forwarded-For: 10.9.9.9, 203.0.113.5"; the proxy appended
        // the address it saw. Only the proxy's entry counts.
        let t = trusted(&["10.0.0.0/8"]);
        let h = ["10.9.9.9, 203.0.113.5, 198.51.100.1"];
        assert_eq!(client(&t, "10.0.0.5", &h), ip("198.51.100.1"));
        // Spread over several header lines, the last line is the nearest proxy's.
        let h = ["10.9.9.9", "203.0.113.5", "198.51.100.1"];
        assert_eq!(client(&t, "10.0.0.5", &h), ip("198.51.100.1"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_to_the_first_untrusted_address() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.1"]);
        let h = ["203.0.113.5, 198.51.100.1, 192.168.1.1, 10.2.2.2"];
        assert_eq!(client(&t, "10.0.0.5", &h), ip("198.51.100.1"));
    }

    #[test]
    fn a_chain_of_only_trusted_proxies_ends_at_the_farthest_of_them() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client(&t, "10.0.0.5", &["10.3.3.3, 10.2.2.2"]),
            ip("10.3.3.3")
        );
        // A trusted peer that sends no header is its own client.
        assert_eq!(client(&t, "10.0.0.5", &[]), ip("10.0.0.5"));
    }

    #[test]
    fn an_entry_that_is_not_an_address_stops_at_the_last_trusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        for bad in [
            "unknown",
            "",
            " ",
            "198.51.100.1.5",
            "_hidden",
            "198.51.100.1:99999",
            "[198.51.100.1]",
            "1.2.3.4/8",
            "\u{ff}",
        ] {
            let h = [format!("203.0.113.5, {bad}")];
            let got = t.client(ip("10.0.0.5"), h.iter().map(|s| s.as_bytes()));
            assert_eq!(got, ip("10.0.0.5"), "entry {bad:?}");
            let h = [format!("203.0.113.5, {bad}, 10.2.2.2")];
            let got = t.client(ip("10.0.0.5"), h.iter().map(|s| s.as_bytes()));
            assert_eq!(got, ip("10.2.2.2"), "entry {bad:?} behind a trusted hop");
        }
        // Invalid UTF-8 too.
        let got = t.client(ip("10.0.0.5"), [&b"203.0.113.5, \xff\xfe"[..]]);
        assert_eq!(got, ip("10.0.0.5"));
    }

    #[test]
    fn ports_and_brackets_are_accepted() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client(&t, "10.0.0.5", &["198.51.100.1:4711"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client(&t, "10.0.0.5", &["[2001:db8::1]:4711"]),
            ip("2001:db8::1")
        );
        assert_eq!(
            client(&t, "10.0.0.5", &["[2001:db8::1]"]),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_read_as_ipv4() {
        let t = trusted(&["10.0.0.0/8"]);
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        assert_eq!(
            client(&t, "::ffff:10.0.0.5", &["198.51.100.1"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client(&t, "10.0.0.5", &["::ffff:198.51.100.1"]),
            ip("198.51.100.1")
        );
        // A mapped trusted address inside the chain is still trusted.
        assert_eq!(
            client(&t, "10.0.0.5", &["198.51.100.1, ::ffff:10.2.2.2"]),
            ip("198.51.100.1")
        );
        let untrusted = TrustedProxies::none();
        assert_eq!(client(&untrusted, "::ffff:192.0.2.1", &[]), ip("192.0.2.1"));
    }

    #[test]
    fn the_walk_is_bounded() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut chain = vec!["198.51.100.1".to_owned()];
        chain.extend((0..MAX_HOPS).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)));
        let h = [chain.join(",")];
        // The untrusted address lies beyond MAX_HOPS trusted ones: the walk stops at
        // the farthest trusted hop it examined.
        let got = t.client(ip("10.0.0.5"), h.iter().map(|s| s.as_bytes()));
        assert!(t.contains(got), "{got}");
        chain.remove(1);
        let h = [chain.join(",")];
        let got = t.client(ip("10.0.0.5"), h.iter().map(|s| s.as_bytes()));
        assert_eq!(got, ip("198.51.100.1"));
    }

    #[test]
    fn trusted_entries_are_validated() {
        assert_eq!(
            TrustedProxies::parse(&["10.0.0.0/8", " 192.0.2.7 ", "fd00::/8", "::1"])
                .unwrap()
                .to_string(),
            "10.0.0.0/8,192.0.2.7/32,fd00::/8,::1/128"
        );
        // Host bits are dropped: 10.1.2.3/8 is 10.0.0.0/8.
        assert_eq!(trusted(&["10.1.2.3/8"]).to_string(), "10.0.0.0/8");
        assert!(TrustedProxies::parse(&["", " "]).unwrap().is_empty());
        for bad in [
            "ten",
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/129",
            "10.0.0.0/8/8",
            "*",
        ] {
            assert_eq!(
                TrustedProxies::parse(&[bad]),
                Err(TrustedProxyError::Malformed(bad.trim().to_owned())),
                "{bad:?}"
            );
        }
        for everyone in ["0.0.0.0/0", "::/0", "10.0.0.0/0"] {
            let e = TrustedProxies::parse(&[everyone]).unwrap_err();
            assert_eq!(e, TrustedProxyError::Everyone(everyone.to_owned()));
            assert!(e.to_string().contains("any client could choose"), "{e}");
        }
    }
}
