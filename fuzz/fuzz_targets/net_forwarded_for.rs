//! Fuzzes the reading of `X-Forwarded-For` behind trusted proxies, which decides whose
//! failed-authentication budget a request spends and what the audit log records.
//! Arbitrary header values from an arbitrary peer, with a fixed set of trusted networks:
//! no panic, and the answer is what an independent right-to-left reading gives:
//! - an untrusted peer is its own client whatever it sends;
//! - otherwise the answer is the peer or an address that occurs in the headers;
//! - every entry right of the chosen one is a trusted proxy, and the chosen one is not
//!   trusted unless the walk ran out (no more entries, an entry that is no address, or
//!   the hop bound).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_net::forwarded::{MAX_HOPS, TrustedProxies};

fn trusted() -> &'static TrustedProxies {
    static T: OnceLock<TrustedProxies> = OnceLock::new();
    T.get_or_init(|| {
        TrustedProxies::parse(&["10.0.0.0/8", "192.168.1.1", "fd00::/8", "::1"]).unwrap()
    })
}

/// The entries as a reader would split them: all header lines in order, by commas.
fn entries(values: &[&[u8]]) -> Vec<Vec<u8>> {
    values
        .iter()
        .flat_map(|v| v.split(|b| *b == b','))
        .map(<[u8]>::to_vec)
        .collect()
}

fn address(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let inner = s.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let peer = if data[0] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(data[1], data[2], data[3], data[4]))
    } else {
        let mut b = [0u8; 16];
        b.copy_from_slice(&data[1..17]);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    // Header lines separated by newlines (which a real header value cannot hold).
    let values: Vec<&[u8]> = data[17..].split(|b| *b == b'\n').collect();
    let t = trusted();
    let got = t.client(peer, values.iter().copied());

    let peer = peer.to_canonical();
    if !t.contains(peer) {
        assert_eq!(got, peer, "an untrusted peer must be its own client");
        return;
    }
    // Independent reading: walk from the right.
    let all = entries(&values);
    let mut hop = peer;
    let mut expected = None;
    for (walked, e) in all.iter().rev().enumerate() {
        if walked == MAX_HOPS {
            break;
        }
        match address(e) {
            None => break,
            Some(ip) if !t.contains(ip) => {
                expected = Some(ip);
                break;
            }
            Some(ip) => hop = ip,
        }
    }
    let expected = expected.unwrap_or(hop);
    assert_eq!(got, expected, "entries {all:?}");
    assert!(got == peer || all.iter().any(|e| address(e) == Some(got)));
});
