//! `upstream.allowed_ips`, the proxy's SSRF defence: is validation on, does the list
//! allow everything, loopback or the metadata address, and is it wider than the routes
//! need. The narrowest covering list is computed from the routes' literal addresses and
//! what their names resolve to now.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use mcp_tunnel_proxy::ProxyConfig;
use mcp_tunnel_proxy::guard::{Resolver, UpstreamPolicy};

use crate::finding::{Finding, Severity};

/// Where a route's upstream points, as far as doctor could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAddrs {
    pub route: String,
    pub host: String,
    /// Canonical addresses (IPv4-mapped IPv6 unwrapped).
    pub addrs: Vec<IpAddr>,
    /// Why resolution failed, if it did.
    pub error: Option<String>,
}

/// Resolves every route's upstream host (literal addresses need no lookup).
pub async fn route_addrs(config: &ProxyConfig, resolver: &dyn Resolver) -> Vec<RouteAddrs> {
    let mut out = Vec::new();
    for route in config.routes.iter() {
        let host = route.upstream.host.clone();
        let (addrs, error) = match host.parse::<IpAddr>() {
            Ok(ip) => (vec![ip.to_canonical()], None),
            Err(_) => match resolver.resolve(&host, route.upstream.port).await {
                Ok(list) if list.is_empty() => (Vec::new(), Some("no addresses".to_owned())),
                Ok(list) => {
                    let mut v: Vec<IpAddr> = list.iter().map(|a| a.ip().to_canonical()).collect();
                    v.sort();
                    v.dedup();
                    (v, None)
                }
                Err(e) => (Vec::new(), Some(e.to_string())),
            },
        };
        out.push(RouteAddrs {
            route: route.name.clone(),
            host,
            addrs,
            error,
        });
    }
    out
}

/// The narrowest CIDRs covering exactly these addresses: one host route each, merged
/// only where two halves make a whole (never adding an address nobody needs).
pub fn narrowest_cidrs(addrs: &[IpAddr]) -> Vec<IpNet> {
    let hosts: Vec<IpNet> = addrs
        .iter()
        .map(|a| IpNet::from(a.to_canonical()))
        .collect();
    IpNet::aggregate(&hosts)
}

fn fmt_nets(nets: &[IpNet]) -> String {
    let v: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
    format!("[{}]", v.join(", "))
}

fn allowed_nets(policy: &UpstreamPolicy) -> Option<&[IpNet]> {
    match policy {
        UpstreamPolicy::AllowList(n) => Some(n),
        UpstreamPolicy::Disabled => None,
    }
}

/// Every check of this module.
pub fn check(config: &ProxyConfig, routes: &[RouteAddrs]) -> Vec<Finding> {
    let policy = &config.upstream.policy;
    vec![
        check_validation(policy),
        check_any(policy),
        check_special(policy, routes),
        check_breadth(policy, routes),
        check_routes_permitted(policy, routes),
    ]
}

const ID_VALIDATION: &str = "upstream.ip_validation";
const ID_ANY: &str = "upstream.allowed_ips.any";
const ID_SPECIAL: &str = "upstream.allowed_ips.loopback";
const ID_BREADTH: &str = "upstream.allowed_ips.breadth";
const ID_PERMITTED: &str = "upstream.routes_permitted";

fn check_validation(policy: &UpstreamPolicy) -> Finding {
    match policy {
        UpstreamPolicy::Disabled => Finding::fail(
            ID_VALIDATION,
            Severity::High,
            "upstream.disable_ip_validation is true: the proxy dials any address a route resolves to, \
             including loopback and 169.254.169.254",
            "remove upstream.disable_ip_validation and list the MCP servers' addresses in upstream.allowed_ips",
        ),
        UpstreamPolicy::AllowList(_) => Finding::pass(
            ID_VALIDATION,
            Severity::High,
            "IP validation is on: every resolved upstream address is checked at connect time",
        ),
    }
}

fn check_any(policy: &UpstreamPolicy) -> Finding {
    let Some(nets) = allowed_nets(policy) else {
        return Finding::fail(
            ID_ANY,
            Severity::High,
            "IP validation is disabled, which allows every address",
            "enable IP validation (see upstream.ip_validation)",
        );
    };
    let any: Vec<IpNet> = nets
        .iter()
        .filter(|n| n.prefix_len() == 0)
        .copied()
        .collect();
    if any.is_empty() {
        Finding::pass(
            ID_ANY,
            Severity::High,
            "no allow-all range (0.0.0.0/0 or ::/0) in upstream.allowed_ips",
        )
    } else {
        Finding::fail(
            ID_ANY,
            Severity::High,
            format!(
                "upstream.allowed_ips contains {}: every address of that family is allowed",
                fmt_nets(&any)
            ),
            "replace it with the narrowest ranges covering your MCP servers (see upstream.allowed_ips.breadth)",
        )
    }
}

/// Addresses an SSRF aims for: the host itself and the cloud metadata service.
const LOOPBACK_PROBES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];
const METADATA_PROBES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    // AWS's IPv6 metadata endpoint.
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

fn check_special(policy: &UpstreamPolicy, routes: &[RouteAddrs]) -> Finding {
    let needed = |ip: &IpAddr| routes.iter().any(|r| r.addrs.contains(ip));
    let route_loopback: Vec<String> = routes
        .iter()
        .filter(|r| r.addrs.iter().any(|a| a.is_loopback()))
        .map(|r| r.route.clone())
        .collect();
    let metadata: Vec<IpAddr> = METADATA_PROBES
        .into_iter()
        .filter(|ip| policy.permits(*ip) && !needed(ip))
        .collect();
    let loopback: Vec<IpAddr> = LOOPBACK_PROBES
        .into_iter()
        .filter(|ip| policy.permits(*ip) && route_loopback.is_empty())
        .collect();
    if !metadata.is_empty() {
        return Finding::fail(
            ID_SPECIAL,
            Severity::High,
            format!(
                "the proxy may dial the cloud metadata address {}{}",
                metadata
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if loopback.is_empty() {
                    String::new()
                } else {
                    " and loopback".to_owned()
                }
            ),
            "remove link-local and loopback ranges from upstream.allowed_ips; list only your MCP servers",
        );
    }
    if !loopback.is_empty() {
        return Finding::fail(
            ID_SPECIAL,
            Severity::Medium,
            "the proxy may dial loopback (127.0.0.1 / ::1), though no route points there: \
             anything listening on the proxy's host is reachable through the tunnel",
            "remove loopback ranges from upstream.allowed_ips",
        );
    }
    if route_loopback.is_empty() {
        Finding::pass(
            ID_SPECIAL,
            Severity::Medium,
            "neither loopback nor the metadata address is allowed",
        )
    } else {
        Finding::pass(
            ID_SPECIAL,
            Severity::Medium,
            format!(
                "loopback is allowed because route(s) {} point there; the metadata address is not",
                route_loopback.join(", ")
            ),
        )
    }
}

fn check_breadth(policy: &UpstreamPolicy, routes: &[RouteAddrs]) -> Finding {
    let needed: Vec<IpAddr> = routes
        .iter()
        .flat_map(|r| r.addrs.iter().copied())
        .collect();
    let unresolved: Vec<String> = routes
        .iter()
        .filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("{} ({}: {e})", r.route, r.host))
        })
        .collect();
    let proposal = narrowest_cidrs(&needed);
    let fix = if proposal.is_empty() {
        "list only your MCP servers' addresses in upstream.allowed_ips".to_owned()
    } else {
        format!("set upstream.allowed_ips to {}", fmt_nets(&proposal))
    };
    let caveat = if unresolved.is_empty() {
        String::new()
    } else {
        format!("; could not resolve {}", unresolved.join(", "))
    };
    let Some(nets) = allowed_nets(policy) else {
        return Finding::fail(
            ID_BREADTH,
            Severity::Medium,
            format!(
                "IP validation is disabled; the routes need only {}{caveat}",
                fmt_nets(&proposal)
            ),
            fix,
        );
    };
    if needed.is_empty() {
        return Finding::unknown(
            ID_BREADTH,
            Severity::Medium,
            format!("no route address is known, so the needed ranges cannot be computed{caveat}"),
            "make the routes' hostnames resolvable from where doctor runs, or use literal addresses",
        );
    }
    let mut problems = Vec::new();
    let mut severity = Severity::Low;
    if *policy == UpstreamPolicy::default_private() {
        problems.push("upstream.allowed_ips is not set, so the default (all of RFC 1918, about 17.9 million addresses) applies".to_owned());
        severity = Severity::Medium;
    } else {
        for net in nets {
            let inside: Vec<IpAddr> = needed.iter().copied().filter(|a| net.contains(a)).collect();
            if inside.is_empty() {
                problems.push(format!("{net} covers no route"));
                severity = Severity::Medium;
                continue;
            }
            let exact = narrowest_cidrs(&inside);
            if exact.contains(net) {
                continue;
            }
            let host_bits = net.max_prefix_len() - net.prefix_len();
            let spare = if host_bits >= 64 {
                "far more".to_owned()
            } else {
                format!(
                    "{}",
                    (1u128 << host_bits).saturating_sub(inside.len() as u128)
                )
            };
            problems.push(format!(
                "{net} allows {spare} addresses no route needs (routes use {})",
                fmt_nets(&exact)
            ));
            // Up to a /24's worth of spare addresses is loose; more is a real opening.
            if host_bits > 8 {
                severity = Severity::Medium;
            }
        }
    }
    if problems.is_empty() {
        Finding::pass(
            ID_BREADTH,
            Severity::Medium,
            format!(
                "upstream.allowed_ips {} is the narrowest covering the routes{caveat}",
                fmt_nets(nets)
            ),
        )
    } else {
        Finding::fail(
            ID_BREADTH,
            severity,
            format!("{}{caveat}", problems.join("; ")),
            fix,
        )
    }
}

fn check_routes_permitted(policy: &UpstreamPolicy, routes: &[RouteAddrs]) -> Finding {
    let refused: Vec<String> = routes
        .iter()
        .flat_map(|r| {
            r.addrs
                .iter()
                .filter(|a| !policy.permits(**a))
                .map(move |a| format!("{} -> {a}", r.route))
        })
        .collect();
    if refused.is_empty() {
        Finding::pass(
            ID_PERMITTED,
            Severity::Low,
            "every known route address is allowed",
        )
    } else {
        Finding::fail(
            ID_PERMITTED,
            Severity::Low,
            format!(
                "requests will fail with 502 (\"IP validation failed\"): {}",
                refused.join(", ")
            ),
            "add the address to upstream.allowed_ips if the route is right, or fix the route",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn narrowest_merges_only_exact_halves() {
        let got = narrowest_cidrs(&ips(&[
            "10.0.0.5",
            "10.0.0.4",
            "10.0.0.7",
            "::ffff:192.168.1.1",
        ]));
        let s: Vec<String> = got.iter().map(|n| n.to_string()).collect();
        assert_eq!(s, ["10.0.0.4/31", "10.0.0.7/32", "192.168.1.1/32"]);
    }
}
