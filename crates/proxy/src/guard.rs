//! The SSRF defence: which addresses the proxy may dial, checked on the addresses actually
//! dialed.
//!
//! A route names an upstream by hostname; the name is resolved on every connect and every
//! resolved address is checked against the policy *before* any socket is opened. The
//! `SocketAddr` that passed the check is the one handed to `connect`: there is no second
//! resolution, so a DNS answer that changes between check and use (rebinding) cannot slip
//! an address past the policy. Nothing is cached for the same reason.
//!
//! Addresses are canonicalised first (`::ffff:127.0.0.1` is `127.0.0.1`), otherwise an
//! IPv4-mapped spelling would bypass an IPv4 allow-list. Only IPv4-mapped addresses are
//! unwrapped: NAT64 (`64:ff9b::/96`), 6to4 and IPv4-compatible forms stay IPv6 and are
//! refused unless an IPv6 range covering them is listed.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::net::TcpStream;

/// Which upstream addresses may be dialed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamPolicy {
    /// Only addresses inside one of these networks. Loopback, link-local (including the
    /// cloud metadata address 169.254.169.254), unspecified, multicast, broadcast, CGNAT and
    /// every IPv6 address are reachable only when a listed network contains them.
    AllowList(Vec<IpNet>),
    /// `upstream.disable_ip_validation: true`: every address is permitted.
    Disabled,
}

impl UpstreamPolicy {
    /// The default allow-list: the RFC 1918 private ranges and nothing else.
    pub fn default_private() -> Self {
        Self::AllowList(
            ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        )
    }

    /// Whether `ip` may be dialed. IPv4-mapped IPv6 addresses are judged as the IPv4 address
    /// they carry, and an IPv4-mapped network in the list (`::ffff:10.0.0.0/104`) is judged
    /// as the IPv4 network it spells, so both spellings give the same answer.
    pub fn permits(&self, ip: IpAddr) -> bool {
        match self {
            Self::Disabled => true,
            Self::AllowList(nets) => {
                let ip = ip.to_canonical();
                nets.iter().any(|net| canonical_net(*net).contains(&ip))
            }
        }
    }
}

/// Rewrites an IPv4-mapped IPv6 network whose prefix lies inside `::ffff:0:0/96` as the IPv4
/// network it covers; anything else is returned unchanged. Candidates are canonicalised
/// before matching, so without this a mapped network could never match anything.
fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else { return net };
    if v6.prefix_len() < 96 {
        return net;
    }
    match v6.network().to_ipv4_mapped() {
        Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
        None => net,
    }
}

/// Turns an upstream host and port into candidate socket addresses. Abstract so tests can
/// script DNS answers (including answers that change between calls).
pub trait Resolver: Send + Sync + 'static {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The operating system's resolver (`getaddrinfo` through tokio). It also accepts numeric
/// spellings such as `2130706433`, `0x7f.1` or `0177.0.0.1`; that is harmless because the
/// addresses it returns are checked like any other answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Why an upstream connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("resolve {host}: no addresses")]
    NoAddresses { host: String },
    /// The exact text is a log contract (SPEC §4.2).
    #[error("IP validation failed: {ip} is not a private address")]
    Rejected { host: String, ip: IpAddr },
    #[error("dial {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("dial {host}: timed out")]
    Timeout { host: String },
}

/// Dials upstreams only at addresses the policy permits.
pub struct GuardedConnector {
    policy: UpstreamPolicy,
    resolver: Arc<dyn Resolver>,
    connect_timeout: Duration,
}

impl fmt::Debug for GuardedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedConnector")
            .field("policy", &self.policy)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl GuardedConnector {
    /// `connect_timeout` bounds one whole `connect`: resolution plus every dial attempt.
    pub fn new(
        policy: UpstreamPolicy,
        resolver: Arc<dyn Resolver>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            policy,
            resolver,
            connect_timeout,
        }
    }

    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// Resolves `host`, checks every answer, then dials the checked addresses in order and
    /// returns the first stream with the address it reached.
    ///
    /// If *any* answer is refused, the whole connect is refused, even when a permitted
    /// address is also present: a mixed answer (one private, one loopback or metadata
    /// address) is the usual shape of a rebinding attack, and dialing "the good one" would
    /// still let the attacker choose, through ordering or failures, which one is reached.
    ///
    /// A host that is an IP literal (brackets allowed for IPv6) is checked without asking
    /// the resolver.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), GuardError> {
        let attempt = self.resolve_checked(host, port);
        let work = async {
            let addrs = attempt.await?;
            dial_in_order(&addrs).await
        };
        tokio::time::timeout(self.connect_timeout, work)
            .await
            .map_err(|_| GuardError::Timeout {
                host: host.to_owned(),
            })?
    }

    /// Resolves `host` and returns the answers (canonicalised, de-duplicated, in resolver
    /// order) if and only if the policy permits all of them.
    pub async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, GuardError> {
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let answers =
            match literal.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => self.resolver.resolve(host, port).await.map_err(|source| {
                    GuardError::Resolve {
                        host: host.to_owned(),
                        source,
                    }
                })?,
            };
        let mut checked: Vec<SocketAddr> = Vec::with_capacity(answers.len());
        for answer in answers {
            // Dial the canonical form: a mapped address would otherwise need a dual-stack
            // socket, and what is dialed must be exactly what was checked.
            let addr = SocketAddr::new(answer.ip().to_canonical(), answer.port());
            if !self.policy.permits(addr.ip()) {
                return Err(GuardError::Rejected {
                    host: host.to_owned(),
                    ip: addr.ip(),
                });
            }
            if !checked.contains(&addr) {
                checked.push(addr);
            }
        }
        if checked.is_empty() {
            return Err(GuardError::NoAddresses {
                host: host.to_owned(),
            });
        }
        Ok(checked)
    }
}

/// Tries each address in order; the error of the last failure is reported.
async fn dial_in_order(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), GuardError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok((stream, *addr)),
            Err(source) => {
                last = Some(GuardError::Connect {
                    addr: *addr,
                    source,
                })
            }
        }
    }
    // `addrs` is never empty (resolve_checked guarantees it); stay total anyway.
    Err(last.unwrap_or_else(|| GuardError::NoAddresses {
        host: String::new(),
    }))
}

/// Parses one `allowed_ips` entry: a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address
/// (`10.1.2.3`, `::1`), which means exactly that address.
pub fn parse_allowed_ip(entry: &str) -> Result<IpNet, String> {
    if entry.contains('/') {
        return entry
            .parse::<IpNet>()
            .map_err(|_| "not a valid CIDR".to_owned());
    }
    match entry.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Ok(IpNet::V4(Ipv4Net::from(v4))),
        Ok(IpAddr::V6(v6)) => Ok(IpNet::V6(Ipv6Net::from(v6))),
        Err(_) => Err("not an IP address or CIDR".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    #[test]
    fn default_is_exactly_rfc1918() {
        let UpstreamPolicy::AllowList(nets) = UpstreamPolicy::default_private() else {
            panic!("default must be an allow-list");
        };
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]);
    }

    #[test]
    fn mapped_networks_match_ipv4_addresses() {
        let policy = UpstreamPolicy::AllowList(vec!["::ffff:10.0.0.0/104".parse().expect("net")]);
        assert!(policy.permits(ip("10.1.2.3")));
        assert!(policy.permits(ip("::ffff:10.1.2.3")));
        assert!(!policy.permits(ip("11.0.0.0")));
        // Shorter prefixes reach outside the mapped range and stay IPv6.
        let wide: IpNet = "::ffff:0:0/95".parse().expect("net");
        assert_eq!(canonical_net(wide), wide);
    }

    #[test]
    fn allowed_ip_entries() {
        assert_eq!(
            parse_allowed_ip("10.1.2.3").expect("ok").to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(parse_allowed_ip("::1").expect("ok").to_string(), "::1/128");
        assert_eq!(
            parse_allowed_ip("fd00::/8").expect("ok").to_string(),
            "fd00::/8"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "localhost",
            "10.0.0.1/",
            "/8",
            " 10.0.0.1",
        ] {
            assert!(parse_allowed_ip(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejection_message_is_the_log_contract() {
        let err = GuardError::Rejected {
            host: "evil.example".into(),
            ip: ip("127.0.0.1"),
        };
        assert_eq!(
            err.to_string(),
            "IP validation failed: 127.0.0.1 is not a private address"
        );
    }
}
