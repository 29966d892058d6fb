//! Load-time configuration errors. Several messages are contracts (SPEC §4.1): operators and
//! tests search for them verbatim.

use mcp_tunnel_net::duration::DurationError;
use mcp_tunnel_net::listen::ListenAddrError;
use mcp_tunnel_pki::tls::LoadError;

use super::raw::section_of;

/// Why a configuration was refused. Each message names the field (as a dotted path) and the
/// offending value; upstream credentials are redacted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read: `open <path>: permission denied`.
    #[error(transparent)]
    Read(#[from] LoadError),
    #[error("invalid YAML: {message}")]
    Yaml { message: String },
    #[error(
        "unknown field \"{path}\" at line {line}, column {column} (expected one of: {expected})"
    )]
    UnknownField {
        /// Dotted path, e.g. `tls.cert_fil`.
        path: String,
        line: u64,
        column: u64,
        expected: String,
    },
    #[error("duplicate key \"{key}\" at line {line}, column {column}")]
    DuplicateKey { key: String, line: u64, column: u64 },
    #[error("{field} is required")]
    Missing { field: &'static str },
    #[error(
        "routes must be a map of name to upstream URL, not a list (cannot unmarshal !!seq into map[string]string)"
    )]
    RoutesNotMap,
    #[error("routes must contain at least one route")]
    NoRoutes,
    #[error(
        "route \"{route}\": invalid upstream \"{value}\" (must be scheme://host:port): {reason}"
    )]
    InvalidUpstream {
        route: String,
        /// The value with any userinfo replaced by `REDACTED`.
        value: String,
        reason: &'static str,
    },
    #[error(
        "route \"{route}\": invalid route name (must be a subdomain or a full hostname: letters, digits, '-', '_' separated by dots)"
    )]
    InvalidRouteName { route: String },
    #[error(
        "route \"{route}\": tunnel_domain is required when route names are bare subdomains (set tunnel_domain or write the full hostname)"
    )]
    TunnelDomainRequired { route: String },
    #[error("routes \"{first}\" and \"{second}\" both match host \"{host}\"")]
    DuplicateRoute {
        first: String,
        second: String,
        host: String,
    },
    #[error(
        "route \"{route}\": https upstream \"{upstream}\" needs upstream.tls.ca_file or upstream.tls.include_system_cas: true"
    )]
    HttpsWithoutCa { route: String, upstream: String },
    #[error(
        "upstream.allowed_ips and upstream.disable_ip_validation: true are mutually exclusive (remove one)"
    )]
    AllowListWithValidationDisabled,
    #[error(
        "upstream.allowed_ips is empty (omit it for the default private ranges, or set upstream.disable_ip_validation: true)"
    )]
    EmptyAllowList,
    #[error(
        "upstream.allowed_ips[{index}]: invalid entry \"{value}\": {reason} (use a CIDR such as 10.0.0.0/8 or a single address)"
    )]
    BadAllowedIp {
        index: usize,
        value: String,
        reason: String,
    },
    #[error("{field}: {source}")]
    Duration {
        field: &'static str,
        source: DurationError,
    },
    #[error("{field}: must be greater than zero")]
    Zero { field: &'static str },
    #[error("{field}: {source}")]
    ListenAddr {
        field: &'static str,
        source: ListenAddrError,
    },
    #[error("invalid log_level \"{value}\" (must be one of debug, info, warn, error)")]
    LogLevel { value: String },
    #[error("invalid log_format \"{value}\" (must be one of json, text)")]
    LogFormat { value: String },
    #[error(
        "invalid tunnel_domain \"{value}\" (must be a DNS name such as ab12cd34.tunnels.example.com)"
    )]
    TunnelDomain { value: String },
    #[error("{field}: {value} is too large for this platform")]
    TooLarge { field: &'static str, value: u64 },
}

impl ConfigError {
    /// Translates a YAML/serde error. Unknown fields, duplicate keys and extra documents get
    /// our own wording; anything else keeps the parser's message and location, plus the
    /// offending line quoted so a log line alone shows which field is wrong. The parser's
    /// source snippet is dropped: the message must fit one log line.
    pub(super) fn from_yaml(err: &serde_saphyr::Error, text: &str) -> Self {
        let mut inner = err;
        while let serde_saphyr::Error::WithSnippet { error, .. }
        | serde_saphyr::Error::AliasError { error, .. } = inner
        {
            inner = error;
        }
        let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        match inner {
            serde_saphyr::Error::SerdeUnknownField {
                field, expected, ..
            } => {
                let section = section_of(expected);
                let path = if section.is_empty() {
                    field.clone()
                } else {
                    format!("{section}.{field}")
                };
                ConfigError::UnknownField {
                    path,
                    line,
                    column,
                    expected: expected.join(", "),
                }
            }
            serde_saphyr::Error::DuplicateMappingKey { key, .. } => ConfigError::DuplicateKey {
                key: key.clone().unwrap_or_default(),
                line,
                column,
            },
            serde_saphyr::Error::MultipleDocuments { .. } => ConfigError::Yaml {
                message: format!(
                    "the file must hold a single YAML document (found another at line {line})"
                ),
            },
            _ => {
                let mut message = err.without_snippet().to_string();
                if let Some(quoted) = quote_line(text, line) {
                    message.push_str(&format!(" (near {quoted:?})"));
                }
                ConfigError::Yaml { message }
            }
        }
    }
}

/// The trimmed text of 1-based `line`, shortened, or `None` when unavailable or when it might
/// carry credentials (`user:pass@host` in a URL).
fn quote_line(text: &str, line: u64) -> Option<String> {
    const MAX: usize = 60;
    let index = usize::try_from(line.checked_sub(1)?).ok()?;
    let content = text.lines().nth(index)?.trim();
    if content.is_empty() || content.contains('@') {
        return None;
    }
    Some(match content.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &content[..cut]),
        None => content.to_owned(),
    })
}
