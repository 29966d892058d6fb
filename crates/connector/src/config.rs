//! `connector run` arguments (clap) and the validated configuration built from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mcp_tunnel_net::duration::{DurationError, parse_duration};
use mcp_tunnel_net::listen::{ListenAddr, ListenAddrError, parse_listen_addr};
use mcp_tunnel_pki::crypto::Secret;

use crate::backoff::Backoff;
use crate::origin::{Origin, OriginError};
use crate::token_source::{TokenLoadError, TokenSource};

/// Environment variable holding the tunnel token.
pub const TOKEN_ENV: &str = "TUNNEL_TOKEN";

/// `mcp-tunnel connector run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Origin every stream is replayed against, e.g. http://localhost:8080 (the proxy).
    #[arg(long)]
    pub url: Option<String>,
    /// Connections kept open to the edge.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub ha_connections: u8,
    /// File holding the tunnel token; re-read when it changes. Otherwise $TUNNEL_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The tunnel token itself. Discouraged: process lists leak it; use $TUNNEL_TOKEN.
    #[arg(long)]
    pub token: Option<String>,
    /// CA certificates (PEM) trusted for the edge when the token carries no CA pin.
    #[arg(long)]
    pub edge_ca_file: Option<PathBuf>,
    /// Address for /ready and /metrics, e.g. 127.0.0.1:20241.
    #[arg(long)]
    pub metrics: Option<String>,
    /// How long SIGTERM waits for in-flight streams.
    #[arg(long, default_value = "30s")]
    pub grace_period: String,
    /// Deadline for TCP, TLS and the tunnel handshake with the edge.
    #[arg(long, default_value = "10s", hide = true)]
    pub handshake_timeout: String,
    /// Longest wait between reconnect attempts.
    #[arg(long, default_value = "30s", hide = true)]
    pub max_backoff: String,
}

/// Why the arguments do not make a configuration. Messages name the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no tunnel token: set {TOKEN_ENV} or pass --token-file")]
    NoToken,
    #[error(transparent)]
    Token(#[from] TokenLoadError),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error("--{flag}: {error}")]
    Duration {
        flag: &'static str,
        error: DurationError,
    },
    #[error("--metrics: {0}")]
    Metrics(#[from] ListenAddrError),
}

/// Validated connector settings.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// `None`: every stream is answered 503 "No ingress rules were defined".
    pub origin: Option<Origin>,
    pub ha_connections: u8,
    pub token: TokenSource,
    pub edge_ca_file: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub grace_period: Duration,
    pub handshake_timeout: Duration,
    pub backoff: Backoff,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub stream_window: u32,
    pub connection_window: u32,
    pub token_poll_interval: Duration,
    pub software_version: String,
}

impl ConnectorConfig {
    /// Defaults for everything but the token (for tests and embedding).
    pub fn new(token: TokenSource) -> Self {
        Self {
            origin: None,
            ha_connections: 4,
            token,
            edge_ca_file: None,
            metrics: None,
            grace_period: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            keepalive_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 16_384,
            stream_window: 256 * 1024,
            connection_window: 4 * 1024 * 1024,
            token_poll_interval: Duration::from_secs(1),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Builds the configuration; `env_token` is the value of `TUNNEL_TOKEN`, passed in so
    /// that this stays a pure function. Returns warnings to log (e.g. token on argv).
    pub fn from_args(
        args: &RunArgs,
        env_token: Option<String>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let token = match (&args.token_file, &args.token, env_token) {
            (Some(path), argv, _) => {
                if argv.is_some() {
                    warnings.push("--token ignored because --token-file is set".to_owned());
                }
                let source = TokenSource::File(path.clone());
                source.load()?;
                source
            }
            (None, Some(t), _) => {
                warnings.push(format!(
                    "the tunnel token was passed with --token: process lists expose it; use {TOKEN_ENV} or --token-file"
                ));
                TokenSource::fixed(&Secret::new(t.as_str()), "--token")?
            }
            (None, None, Some(t)) => TokenSource::fixed(&Secret::new(t), TOKEN_ENV)?,
            (None, None, None) => return Err(ConfigError::NoToken),
        };
        let duration = |flag: &'static str, v: &str| {
            parse_duration(v).map_err(|error| ConfigError::Duration { flag, error })
        };
        let mut config = Self::new(token);
        config.origin = args.url.as_deref().map(Origin::parse).transpose()?;
        config.ha_connections = args.ha_connections;
        config.edge_ca_file = args.edge_ca_file.clone();
        config.grace_period = duration("grace-period", &args.grace_period)?;
        config.handshake_timeout = duration("handshake-timeout", &args.handshake_timeout)?;
        config.backoff.max = duration("max-backoff", &args.max_backoff)?;
        config.metrics = match args.metrics.as_deref() {
            None => None,
            Some(s) => match parse_listen_addr(s)? {
                ListenAddr::Addr(a) => Some(a),
                all @ ListenAddr::AllInterfaces { .. } => all.socket_addrs().first().copied(),
            },
        };
        Ok((config, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use mcp_tunnel_proto::{EdgeAddr, TunnelId, TunnelToken};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn token() -> String {
        TunnelToken::generate(
            TunnelId::parse("tnl_t").unwrap(),
            EdgeAddr::parse("edge:7844").unwrap(),
            None,
        )
        .encode()
    }

    fn args(a: &[&str]) -> RunArgs {
        Cli::parse_from(std::iter::once("x").chain(a.iter().copied())).run
    }

    #[test]
    fn defaults_and_env_token() {
        let (c, w) = ConnectorConfig::from_args(&args(&[]), Some(token())).unwrap();
        assert_eq!(c.ha_connections, 4);
        assert_eq!(c.grace_period, Duration::from_secs(30));
        assert!(c.origin.is_none());
        assert!(w.is_empty());
    }

    #[test]
    fn argv_token_warns() {
        let t = token();
        let (_, w) = ConnectorConfig::from_args(&args(&["--token", &t]), None).unwrap();
        assert!(w[0].contains("process lists"), "{w:?}");
    }

    #[test]
    fn errors_name_the_flag() {
        assert!(matches!(
            ConnectorConfig::from_args(&args(&[]), None),
            Err(ConfigError::NoToken)
        ));
        let e = ConnectorConfig::from_args(&args(&["--grace-period", "soon"]), Some(token()))
            .unwrap_err();
        assert!(e.to_string().starts_with("--grace-period:"), "{e}");
        let e =
            ConnectorConfig::from_args(&args(&["--url", "ftp://x"]), Some(token())).unwrap_err();
        assert!(e.to_string().contains("--url"), "{e}");
        let e = ConnectorConfig::from_args(&args(&[]), Some("nope".into())).unwrap_err();
        assert!(e.to_string().contains(TOKEN_ENV), "{e}");
    }

    #[test]
    fn token_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{}\n", token())).unwrap();
        let p = path.to_str().unwrap();
        let (c, _) = ConnectorConfig::from_args(&args(&["--token-file", p]), None).unwrap();
        assert_eq!(c.token.load().unwrap().tunnel_id.as_str(), "tnl_t");
        std::fs::write(&path, "garbage").unwrap();
        assert!(c.token.load().is_err());
    }
}
