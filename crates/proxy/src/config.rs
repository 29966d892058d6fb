//! The proxy's configuration file (SPEC §4): YAML parsed into raw serde structs, then
//! validated into [`ProxyConfig`], whose fields have real types and defaults filled in.
//!
//! The loader reads only the config file itself; certificate and CA files named in it are
//! opened at start-up by the server, which reports their errors the same way.

mod error;
mod raw;
mod routes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_tunnel_net::duration::parse_duration;
use mcp_tunnel_net::listen::{ListenAddr, parse_listen_addr};

pub use self::error::ConfigError;
use self::raw::{RawConfig, RawLimits, RawRoutes, RawTls, RawUpstream};
pub use self::routes::{Route, RouteTable, Scheme, Upstream, normalize_host};
use self::routes::{is_hostname, parse_upstream, redact_userinfo};
use crate::guard::{UpstreamPolicy, parse_allowed_ip};

/// Where `mcp-tunnel proxy` looks when no `-config` is given, in order.
pub const DEFAULT_CONFIG_PATHS: [&str; 2] =
    ["/etc/mcp-gateway/config.yaml", "/etc/mcp-proxy/config.yaml"];

const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9091";

/// A validated proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen_addr: ListenAddr,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    /// How long in-flight requests may run after SIGTERM. `0` stops at once.
    pub shutdown_timeout: Duration,
    /// Lowercase, without leading or trailing dot. Also held by `routes` for lookups.
    pub tunnel_domain: Option<String>,
    pub tls: TlsFiles,
    pub routes: RouteTable,
    pub upstream: UpstreamConfig,
    /// Health, readiness and metrics listener; `None` when disabled with `""` or `"off"`.
    pub admin_addr: Option<ListenAddr>,
    pub limits: Limits,
    pub client_auth: Option<ClientAuth>,
    /// Send the route host upstream instead of the upstream's own `host:port` (SPEC §4.2).
    pub preserve_host: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// The inner-TLS server certificate and key, polled for changes (SPEC §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Extension `tls.reload_interval`, default 5s.
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub policy: UpstreamPolicy,
    pub tls: UpstreamTls,
    /// Extension `upstream.connect_timeout`, default 10s: resolution plus dialing.
    pub connect_timeout: Duration,
}

/// Trust for `https://` upstreams. At least one source is set whenever a route uses https.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub ca_file: Option<PathBuf>,
    pub include_system_cas: bool,
}

/// Extension `limits.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head accepted from a client, default 64 KiB.
    pub max_header_bytes: usize,
    /// Largest request body, `None` (the default) for unlimited.
    pub max_body_bytes: Option<u64>,
    /// HTTP/2 streams per inner-TLS session, default 100.
    pub max_concurrent_streams: u32,
    /// Inner TLS handshake deadline, default 10s.
    pub handshake_timeout: Duration,
}

/// Extension `client_auth`: require a client certificate issued by this CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub ca_file: PathBuf,
}

impl ProxyConfig {
    /// Reads and validates the file at `path`. `tunnel_domain_override` is the
    /// `-tunnel-domain` flag; an empty value means "not given", as with Go flags.
    pub fn load(path: &Path, tunnel_domain_override: Option<&str>) -> Result<Self, ConfigError> {
        let bytes = mcp_tunnel_pki::tls::read_file(path)?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Yaml {
            message: format!(
                "{}: not UTF-8 (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
        })?;
        Self::from_yaml(&text, tunnel_domain_override)
    }

    /// Parses and validates YAML text. See [`ProxyConfig::load`] for the override.
    pub fn from_yaml(
        text: &str,
        tunnel_domain_override: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::from_yaml(&e, text))?;
        build(raw, tunnel_domain_override)
    }
}

/// Validates field by field in file order, so the first error reported is the first one an
/// operator reading top to bottom would meet.
fn build(raw: RawConfig, tunnel_domain_override: Option<&str>) -> Result<ProxyConfig, ConfigError> {
    let listen_addr = parse_listen_addr(required(raw.listen_addr.as_deref(), "listen_addr")?)
        .map_err(|source| ConfigError::ListenAddr {
            field: "listen_addr",
            source,
        })?;
    let log_level = parse_log_level(raw.log_level.as_deref())?;
    let log_format = parse_log_format(raw.log_format.as_deref())?;
    let shutdown_timeout = duration_or(
        raw.shutdown_timeout.as_deref(),
        "shutdown_timeout",
        DEFAULT_SHUTDOWN_TIMEOUT,
    )?;
    let tunnel_domain = match tunnel_domain_override.filter(|d| !d.is_empty()) {
        Some(flag) => parse_tunnel_domain(flag)?,
        None => parse_tunnel_domain(raw.tunnel_domain.as_deref().unwrap_or(""))?,
    };
    let tls = build_tls(raw.tls.unwrap_or_default())?;
    let routes = build_routes(raw.routes, tunnel_domain.as_deref())?;
    let upstream = build_upstream(raw.upstream.unwrap_or_default())?;
    check_https_trust(&routes, &upstream.tls)?;
    let admin_addr = parse_admin_addr(raw.admin_addr.as_deref())?;
    let limits = build_limits(raw.limits.unwrap_or_default())?;
    let client_auth = match raw.client_auth {
        Some(auth) => Some(ClientAuth {
            ca_file: required(auth.ca_file.as_deref(), "client_auth.ca_file")?.into(),
        }),
        None => None,
    };
    Ok(ProxyConfig {
        listen_addr,
        log_level,
        log_format,
        shutdown_timeout,
        tunnel_domain,
        tls,
        routes,
        upstream,
        admin_addr,
        limits,
        client_auth,
        preserve_host: raw.preserve_host.unwrap_or(false),
    })
}

/// A missing field and an empty string are the same mistake.
fn required<'a>(value: Option<&'a str>, field: &'static str) -> Result<&'a str, ConfigError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::Missing { field })
}

fn duration_or(
    value: Option<&str>,
    field: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v).map_err(|source| ConfigError::Duration { field, source }),
    }
}

/// A duration where zero would mean "fail at once" or "spin": refused.
fn positive_duration_or(
    value: Option<&str>,
    field: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = duration_or(value, field, default)?;
    if d.is_zero() {
        return Err(ConfigError::Zero { field });
    }
    Ok(d)
}

/// Case-insensitive, as Go's slog accepts `INFO`.
fn parse_log_level(value: Option<&str>) -> Result<LogLevel, ConfigError> {
    let Some(v) = value else {
        return Ok(LogLevel::Info);
    };
    Ok(match v.to_ascii_lowercase().as_str() {
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        _ => {
            return Err(ConfigError::LogLevel {
                value: v.to_owned(),
            });
        }
    })
}

fn parse_log_format(value: Option<&str>) -> Result<LogFormat, ConfigError> {
    let Some(v) = value else {
        return Ok(LogFormat::Json);
    };
    Ok(match v.to_ascii_lowercase().as_str() {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        _ => {
            return Err(ConfigError::LogFormat {
                value: v.to_owned(),
            });
        }
    })
}

/// Lowercased, one leading and one trailing dot tolerated; empty means none.
fn parse_tunnel_domain(value: &str) -> Result<Option<String>, ConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    let lower = value.to_ascii_lowercase();
    let trimmed = lower.strip_prefix('.').unwrap_or(&lower);
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if !is_hostname(trimmed) {
        return Err(ConfigError::TunnelDomain {
            value: value.to_owned(),
        });
    }
    Ok(Some(trimmed.to_owned()))
}

fn build_tls(raw: RawTls) -> Result<TlsFiles, ConfigError> {
    Ok(TlsFiles {
        cert_file: required(raw.cert_file.as_deref(), "tls.cert_file")?.into(),
        key_file: required(raw.key_file.as_deref(), "tls.key_file")?.into(),
        reload_interval: positive_duration_or(
            raw.reload_interval.as_deref(),
            "tls.reload_interval",
            DEFAULT_RELOAD_INTERVAL,
        )?,
    })
}

fn build_routes(
    raw: Option<RawRoutes>,
    tunnel_domain: Option<&str>,
) -> Result<RouteTable, ConfigError> {
    let entries = match raw {
        None => return Err(ConfigError::Missing { field: "routes" }),
        Some(RawRoutes::List) => return Err(ConfigError::RoutesNotMap),
        Some(RawRoutes::Map(entries)) if entries.is_empty() => return Err(ConfigError::NoRoutes),
        Some(RawRoutes::Map(entries)) => entries,
    };
    let mut parsed = Vec::with_capacity(entries.len());
    for (route, value) in entries {
        let value = value.unwrap_or_default();
        match parse_upstream(&value) {
            Ok(upstream) => parsed.push((route, upstream)),
            Err(reason) => {
                return Err(ConfigError::InvalidUpstream {
                    route,
                    value: redact_userinfo(&value),
                    reason: if value.is_empty() {
                        "empty value"
                    } else {
                        reason
                    },
                });
            }
        }
    }
    RouteTable::build(parsed, tunnel_domain)
}

fn build_upstream(raw: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let disabled = raw.disable_ip_validation.unwrap_or(false);
    let policy = match (raw.allowed_ips, disabled) {
        (Some(_), true) => return Err(ConfigError::AllowListWithValidationDisabled),
        (None, true) => UpstreamPolicy::Disabled,
        (None, false) => UpstreamPolicy::default_private(),
        // An empty list would refuse every upstream; nobody means that, so say so.
        (Some(list), false) if list.is_empty() => return Err(ConfigError::EmptyAllowList),
        (Some(list), false) => {
            let mut nets = Vec::with_capacity(list.len());
            for (index, entry) in list.iter().enumerate() {
                let net = parse_allowed_ip(entry).map_err(|reason| ConfigError::BadAllowedIp {
                    index,
                    value: entry.clone(),
                    reason,
                })?;
                nets.push(net);
            }
            UpstreamPolicy::AllowList(nets)
        }
    };
    let tls = raw.tls.unwrap_or_default();
    Ok(UpstreamConfig {
        policy,
        tls: UpstreamTls {
            ca_file: tls.ca_file.filter(|f| !f.is_empty()).map(PathBuf::from),
            include_system_cas: tls.include_system_cas.unwrap_or(false),
        },
        connect_timeout: positive_duration_or(
            raw.connect_timeout.as_deref(),
            "upstream.connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
        )?,
    })
}

/// Without a trust source an https upstream could never be verified; failing at load beats
/// failing every request.
fn check_https_trust(routes: &RouteTable, tls: &UpstreamTls) -> Result<(), ConfigError> {
    if tls.ca_file.is_some() || tls.include_system_cas {
        return Ok(());
    }
    match routes.iter().find(|r| r.upstream.scheme == Scheme::Https) {
        Some(route) => Err(ConfigError::HttpsWithoutCa {
            route: route.name.clone(),
            upstream: route.upstream.to_string(),
        }),
        None => Ok(()),
    }
}

fn parse_admin_addr(value: Option<&str>) -> Result<Option<ListenAddr>, ConfigError> {
    let value = value.unwrap_or(DEFAULT_ADMIN_ADDR);
    if value.is_empty() || value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_listen_addr(value)
        .map(Some)
        .map_err(|source| ConfigError::ListenAddr {
            field: "admin_addr",
            source,
        })
}

fn build_limits(raw: RawLimits) -> Result<Limits, ConfigError> {
    let max_header_bytes = match raw.max_header_bytes {
        None => DEFAULT_MAX_HEADER_BYTES,
        Some(0) => {
            return Err(ConfigError::Zero {
                field: "limits.max_header_bytes",
            });
        }
        Some(n) => usize::try_from(n).map_err(|_| ConfigError::TooLarge {
            field: "limits.max_header_bytes",
            value: n,
        })?,
    };
    if raw.max_body_bytes == Some(0) {
        return Err(ConfigError::Zero {
            field: "limits.max_body_bytes",
        });
    }
    let max_concurrent_streams = match raw.max_concurrent_streams {
        None => DEFAULT_MAX_CONCURRENT_STREAMS,
        Some(0) => {
            return Err(ConfigError::Zero {
                field: "limits.max_concurrent_streams",
            });
        }
        Some(n) => n,
    };
    Ok(Limits {
        max_header_bytes,
        max_body_bytes: raw.max_body_bytes,
        max_concurrent_streams,
        handshake_timeout: positive_duration_or(
            raw.handshake_timeout.as_deref(),
            "limits.handshake_timeout",
            DEFAULT_HANDSHAKE_TIMEOUT,
        )?,
    })
}
