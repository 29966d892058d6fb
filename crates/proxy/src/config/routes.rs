//! Routes: hostname -> upstream and the upstream address form. Host normalisation, shared
//! with the edge, is `mcp_tunnel_net::host`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::ConfigError;
pub use mcp_tunnel_net::host::{is_hostname, normalize_host};

/// Upstream URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// A validated upstream: exactly `scheme://host:port`, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    pub scheme: Scheme,
    /// As written in the config (IPv6 without brackets). Resolved, and checked against the
    /// upstream policy, on every connection.
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// `host:port` with IPv6 bracketed: the `Host` header the upstream would see if called
    /// directly, and the form to dial.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `scheme://host:port`.
impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

/// One configured route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The `routes` key as written, lowercased: a bare subdomain or a full hostname.
    pub name: String,
    pub upstream: Upstream,
}

/// Routes by name, with the tunnel domain used to match bare subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    routes: BTreeMap<String, Route>,
    /// `.<tunnel_domain>`, precomputed for suffix matching.
    domain_suffix: Option<String>,
}

impl RouteTable {
    /// Builds the table from `(key, upstream)` pairs in file order. Keys are lowercased and
    /// validated; a bare key (no dot) needs a tunnel domain; two keys that would answer the
    /// same host are refused rather than resolved by a precedence rule nobody remembers.
    pub(crate) fn build(
        entries: Vec<(String, Upstream)>,
        tunnel_domain: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut routes: BTreeMap<String, Route> = BTreeMap::new();
        for (key, upstream) in entries {
            let name = key.to_ascii_lowercase();
            if !is_hostname(&name) {
                return Err(ConfigError::InvalidRouteName { route: key });
            }
            if !name.contains('.') && tunnel_domain.is_none() {
                return Err(ConfigError::TunnelDomainRequired { route: key });
            }
            if let Some(existing) = routes.get(&name) {
                return Err(ConfigError::DuplicateRoute {
                    first: existing.name.clone(),
                    second: key,
                    host: name,
                });
            }
            routes.insert(name.clone(), Route { name, upstream });
        }
        let table = Self {
            routes,
            domain_suffix: tunnel_domain.map(|d| format!(".{d}")),
        };
        table.check_overlaps()?;
        Ok(table)
    }

    /// With tunnel domain `t.example`, the keys `a` and `a.t.example` both claim the host
    /// `a.t.example`.
    fn check_overlaps(&self) -> Result<(), ConfigError> {
        let Some(suffix) = &self.domain_suffix else {
            return Ok(());
        };
        for name in self.routes.keys() {
            if let Some(short) = name.strip_suffix(suffix.as_str())
                && self.routes.contains_key(short)
            {
                return Err(ConfigError::DuplicateRoute {
                    first: short.to_owned(),
                    second: name.clone(),
                    host: name.clone(),
                });
            }
        }
        Ok(())
    }

    /// The route for an already-normalised host ([`normalize_host`]): an exact match on the
    /// whole host first, then, if the host ends in `.<tunnel_domain>`, the remainder.
    pub fn lookup(&self, host: &str) -> Option<&Route> {
        if let Some(route) = self.routes.get(host) {
            return Some(route);
        }
        let suffix = self.domain_suffix.as_deref()?;
        let sub = host.strip_suffix(suffix)?;
        if sub.is_empty() {
            return None;
        }
        self.routes.get(sub)
    }

    /// Routes sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The tunnel domain used for suffix matching, if any.
    pub fn tunnel_domain(&self) -> Option<&str> {
        self.domain_suffix.as_deref().map(|s| &s[1..])
    }
}

/// Why an upstream value is not `scheme://host:port`.
pub(crate) fn parse_upstream(value: &str) -> Result<Upstream, &'static str> {
    let (scheme, rest) = value
        .split_once("://")
        .ok_or("missing scheme (http:// or https://)")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err("scheme must be http or https"),
    };
    if rest.contains('@') {
        return Err("userinfo is not allowed");
    }
    if rest.contains('/') {
        return Err("a path is not allowed, not even \"/\"");
    }
    if rest.contains('?') {
        return Err("a query is not allowed");
    }
    if rest.contains('#') {
        return Err("a fragment is not allowed");
    }
    let (host, port) = split_authority(rest)?;
    let port = parse_port(port)?;
    Ok(Upstream { scheme, host, port })
}

fn split_authority(rest: &str) -> Result<(String, &str), &'static str> {
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (v6, after) = bracketed
            .split_once(']')
            .ok_or("unterminated IPv6 literal")?;
        let ip: Ipv6Addr = v6.parse().map_err(|_| "invalid IPv6 literal")?;
        let port = after.strip_prefix(':').ok_or("missing port")?;
        return Ok((IpAddr::V6(ip).to_string(), port));
    }
    let (host, port) = rest.rsplit_once(':').ok_or("missing port")?;
    if host.is_empty() {
        return Err("empty host");
    }
    if host.contains(':') {
        return Err("IPv6 addresses must be in brackets");
    }
    if !is_hostname(&host.to_ascii_lowercase()) {
        return Err("invalid host");
    }
    Ok((host.to_owned(), port))
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    if port.is_empty() {
        return Err("missing port");
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return Err("invalid port");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be from 1 to 65535"),
        Ok(p) => Ok(p),
    }
}

/// Hides credentials before an upstream value is echoed into an error (and so into logs).
pub(crate) fn redact_userinfo(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://REDACTED{}", &rest[at..]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn normalisation_is_idempotent(raw in "[A-Za-z0-9.:\\[\\]_-]{0,40}") {
            if let Some(host) = normalize_host(&raw) {
                prop_assert_eq!(normalize_host(&host), Some(host.clone()));
                prop_assert!(!host.ends_with('.'));
                prop_assert!(!host.bytes().any(|b| b.is_ascii_uppercase()));
            }
        }
    }

    fn up(s: &str) -> Upstream {
        parse_upstream(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn upstream_forms() {
        let u = up("http://localhost:8000");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Http, "localhost", 8000)
        );
        assert_eq!(u.to_string(), "http://localhost:8000");
        let u = up("HTTPS://[::1]:443");
        assert_eq!((u.scheme, u.host.as_str()), (Scheme::Https, "::1"));
        assert_eq!(u.authority(), "[::1]:443");
        assert_eq!(u.to_string(), "https://[::1]:443");
        assert_eq!(up("http://Mcp.Internal:80").host, "Mcp.Internal");
        assert_eq!(up("http://10.0.0.5:65535").authority(), "10.0.0.5:65535");
    }

    #[test]
    fn upstream_refusals() {
        let cases = [
            ("http://h", "missing port"),
            ("http://h:", "missing port"),
            ("http://h:80/", "path"),
            ("http://h:80/mcp", "path"),
            ("http://h:80?x=1", "query"),
            ("http://h:80#f", "fragment"),
            ("http://u:p@h:80", "userinfo"),
            ("ftp://h:21", "scheme"),
            ("h:80", "missing scheme"),
            ("http://:80", "empty host"),
            ("http://h:0", "1 to 65535"),
            ("http://h:65536", "1 to 65535"),
            ("http://h:+80", "invalid port"),
            ("http://::1:80", "brackets"),
            ("http://[::1:80", "unterminated"),
            ("http://[::1]", "missing port"),
            ("http://[zz]:80", "invalid IPv6"),
            ("http://h h:80", "invalid host"),
            ("http://h..x:80", "invalid host"),
        ];
        for (value, phrase) in cases {
            let err = parse_upstream(value).expect_err(value);
            assert!(err.contains(phrase), "{value}: {err}");
        }
    }

    #[test]
    fn normalises_hosts() {
        let cases = [
            ("Example.COM", Some("example.com")),
            ("example.com:443", Some("example.com")),
            ("example.com.", Some("example.com")),
            ("example.com.:8443", Some("example.com")),
            ("example.com:", Some("example.com")),
            ("[::1]:8080", Some("::1")),
            ("[::1]", Some("::1")),
            ("[0:0::1]", Some("::1")),
            ("::1", Some("::1")),
            ("10.0.0.1:80", Some("10.0.0.1")),
            ("", None),
            (".", None),
            (":80", None),
            ("example.com..", None),
            ("a..b", None),
            (".a", None),
            ("exa mple", None),
            ("a/b", None),
            ("a@b", None),
            ("h:port", None),
            ("h:123456", None),
            ("[::1]x", None),
            ("[::1]:x", None),
            ("[evil]:80", None),
            ("caf\u{e9}.example", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_host(raw).as_deref(), want, "{raw:?}");
        }
        assert_eq!(normalize_host(&"a".repeat(64)), None);
        assert_eq!(
            normalize_host(&["a"; 127].join(".")).map(|s| s.len()),
            Some(253)
        );
        assert_eq!(normalize_host(&["a"; 128].join(".")), None);
    }

    #[test]
    fn lookup_exact_then_suffix() {
        let entries = vec![
            ("Docs".to_owned(), up("http://10.0.0.1:80")),
            ("api.corp.example".to_owned(), up("http://10.0.0.2:80")),
            ("x.y".to_owned(), up("http://10.0.0.3:80")),
        ];
        let table = RouteTable::build(entries, Some("t1.tunnels.example")).expect("table");
        let name = |h: &str| table.lookup(h).map(|r| r.name.as_str());
        assert_eq!(name("docs.t1.tunnels.example"), Some("docs"));
        assert_eq!(name("docs"), Some("docs"));
        assert_eq!(name("api.corp.example"), Some("api.corp.example"));
        assert_eq!(name("x.y.t1.tunnels.example"), Some("x.y"));
        assert_eq!(name("t1.tunnels.example"), None);
        assert_eq!(name(".t1.tunnels.example"), None);
        assert_eq!(name("docs.t2.tunnels.example"), None);
        assert_eq!(name("docst1.tunnels.example"), None);
        assert_eq!(table.tunnel_domain(), Some("t1.tunnels.example"));
        let names: Vec<_> = table.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["api.corp.example", "docs", "x.y"]);
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_userinfo("http://u:secret@h:80"),
            "http://REDACTED@h:80"
        );
        assert_eq!(redact_userinfo("http://h:80/a@b"), "http://h:80/a@b");
        assert_eq!(redact_userinfo("nonsense"), "nonsense");
    }
}
