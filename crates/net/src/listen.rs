//! Go-style listen addresses (`":8080"`, `"127.0.0.1:8080"`, `"[::1]:8080"`), as written in
//! configuration files inherited from a Go system.
//!
//! Only literal addresses and `localhost` are accepted: resolving other names at start-up
//! would make the bound interface depend on DNS, which is never what an operator means.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where to listen. Validated: a value of this type always names a port and a concrete host
/// choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// Empty host (`":8080"`): every interface, IPv6 and IPv4.
    AllInterfaces { port: u16 },
    /// One address, including explicit wildcards such as `0.0.0.0:8080`.
    Addr(SocketAddr),
}

/// Why a listen address was refused. Messages quote the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenAddrError {
    #[error("invalid listen address \"{input}\": missing port (use host:port or :port)")]
    MissingPort { input: String },
    #[error("invalid listen address \"{input}\": port must be a number from 0 to 65535")]
    BadPort { input: String },
    #[error(
        "invalid listen address \"{input}\": host must be an IP address, \"localhost\" or empty"
    )]
    BadHost { input: String },
}

impl ListenAddr {
    /// The port to listen on (0 asks the OS for an ephemeral one).
    pub fn port(&self) -> u16 {
        match self {
            Self::AllInterfaces { port } => *port,
            Self::Addr(addr) => addr.port(),
        }
    }

    /// Socket addresses to try binding, in order. For all interfaces the IPv6 wildcard comes
    /// first (on Linux it usually also accepts IPv4) and the IPv4 wildcard is the fallback for
    /// hosts without IPv6.
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        match self {
            Self::AllInterfaces { port } => vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), *port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port),
            ],
            Self::Addr(addr) => vec![*addr],
        }
    }
}

/// Prints the Go form: `:8080`, `127.0.0.1:8080`, `[::1]:8080`.
impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllInterfaces { port } => write!(f, ":{port}"),
            Self::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

/// Parses `host:port` where host is empty (all interfaces), an IPv4 literal, a bracketed
/// IPv6 literal, or `localhost` (127.0.0.1). The port is required; 0 means ephemeral.
pub fn parse_listen_addr(input: &str) -> Result<ListenAddr, ListenAddrError> {
    let bad_host = || ListenAddrError::BadHost {
        input: input.to_owned(),
    };
    let (host, port) = if let Some(rest) = input.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad_host)?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| ListenAddrError::MissingPort {
                input: input.to_owned(),
            })?;
        let ip: Ipv6Addr = v6.parse().map_err(|_| bad_host())?;
        (Some(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = input
            .rsplit_once(':')
            .ok_or_else(|| ListenAddrError::MissingPort {
                input: input.to_owned(),
            })?;
        let ip = match host {
            "" => None,
            h if h.eq_ignore_ascii_case("localhost") => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            // An unbracketed IPv6 literal leaves a colon in the host part.
            h if h.contains(':') => return Err(bad_host()),
            h => Some(IpAddr::V4(h.parse().map_err(|_| bad_host())?)),
        };
        (ip, port)
    };
    let port = parse_port(port).ok_or_else(|| ListenAddrError::BadPort {
        input: input.to_owned(),
    })?;
    Ok(match host {
        None => ListenAddr::AllInterfaces { port },
        Some(ip) => ListenAddr::Addr(SocketAddr::new(ip, port)),
    })
}

/// Decimal digits only: `u16::from_str` would also take a leading `+`.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test socket address")
    }

    #[test]
    fn parses_accepted_forms() {
        let cases = [
            (":8080", ListenAddr::AllInterfaces { port: 8080 }),
            (":0", ListenAddr::AllInterfaces { port: 0 }),
            ("127.0.0.1:8080", ListenAddr::Addr(sa("127.0.0.1:8080"))),
            ("0.0.0.0:8080", ListenAddr::Addr(sa("0.0.0.0:8080"))),
            ("[::1]:8080", ListenAddr::Addr(sa("[::1]:8080"))),
            ("[::]:65535", ListenAddr::Addr(sa("[::]:65535"))),
            ("localhost:9091", ListenAddr::Addr(sa("127.0.0.1:9091"))),
            ("LocalHost:1", ListenAddr::Addr(sa("127.0.0.1:1"))),
        ];
        for (input, want) in cases {
            assert_eq!(parse_listen_addr(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn refuses_bad_forms() {
        type Check = fn(&ListenAddrError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, ListenAddrError::MissingPort { .. })),
            ("8080", |e| matches!(e, ListenAddrError::MissingPort { .. })),
            ("127.0.0.1", |e| {
                matches!(e, ListenAddrError::MissingPort { .. })
            }),
            ("[::1]", |e| {
                matches!(e, ListenAddrError::MissingPort { .. })
            }),
            (":", |e| matches!(e, ListenAddrError::BadPort { .. })),
            (":65536", |e| matches!(e, ListenAddrError::BadPort { .. })),
            (":+80", |e| matches!(e, ListenAddrError::BadPort { .. })),
            (":http", |e| matches!(e, ListenAddrError::BadPort { .. })),
            (":-1", |e| matches!(e, ListenAddrError::BadPort { .. })),
            ("::1:8080", |e| matches!(e, ListenAddrError::BadHost { .. })),
            ("[::1:8080", |e| {
                matches!(e, ListenAddrError::BadHost { .. })
            }),
            ("[10.0.0.1]:80", |e| {
                matches!(e, ListenAddrError::BadHost { .. })
            }),
            ("example.com:80", |e| {
                matches!(e, ListenAddrError::BadHost { .. })
            }),
            ("*:80", |e| matches!(e, ListenAddrError::BadHost { .. })),
            ("256.0.0.1:80", |e| {
                matches!(e, ListenAddrError::BadHost { .. })
            }),
        ];
        for (input, check) in cases {
            let err = parse_listen_addr(input).expect_err(input);
            assert!(check(&err), "{input:?} gave {err:?}");
            assert!(err.to_string().contains(&format!("\"{input}\"")), "{err}");
        }
    }

    #[test]
    fn displays_go_form_and_round_trips() {
        for input in [":8080", "127.0.0.1:80", "[::1]:8080", "0.0.0.0:0"] {
            let addr = parse_listen_addr(input).expect("valid");
            assert_eq!(addr.to_string(), input);
            assert_eq!(parse_listen_addr(&addr.to_string()), Ok(addr));
        }
    }

    #[test]
    fn all_interfaces_tries_v6_then_v4() {
        let addr = ListenAddr::AllInterfaces { port: 8080 };
        assert_eq!(
            addr.socket_addrs(),
            vec![sa("[::]:8080"), sa("0.0.0.0:8080")]
        );
        assert_eq!(addr.port(), 8080);
        let one = ListenAddr::Addr(sa("127.0.0.1:1"));
        assert_eq!(one.socket_addrs(), vec![sa("127.0.0.1:1")]);
    }
}
