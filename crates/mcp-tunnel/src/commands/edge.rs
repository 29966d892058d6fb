//! `mcp-tunnel edge` (SPEC §6): the connector listener, the client listener and the
//! health/metrics listener, backed for now by a static store file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mcp_tunnel_edge::{Edge, EdgeConfig, EdgeListeners, EdgeTls, server_config_from_files};
use mcp_tunnel_net::duration::parse_duration;
use mcp_tunnel_net::forwarded::TrustedProxies;
use mcp_tunnel_net::listen::{ListenAddr, parse_listen_addr};
use tokio::net::TcpListener;

use crate::logging;

#[derive(Debug, clap::Args)]
pub struct EdgeArgs {
    /// Where connectors connect (TLS, ALPN mcpt/1).
    #[arg(long, default_value = ":7844")]
    connector_listen: String,
    /// Where MCP clients connect (HTTPS/WSS).
    #[arg(long, default_value = ":8443")]
    client_listen: String,
    /// Health (/healthz) and Prometheus metrics (/metrics).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Certificate chain (PEM, leaf first, then the CA that tokens pin) for connectors.
    #[arg(long)]
    tls_cert: PathBuf,
    #[arg(long)]
    tls_key: PathBuf,
    /// Certificate for the client listener; defaults to --tls-cert.
    #[arg(long, requires = "client_tls_key")]
    client_tls_cert: Option<PathBuf>,
    #[arg(long, requires = "client_tls_cert")]
    client_tls_key: Option<PathBuf>,
    /// Serve clients plain HTTP (only behind a TLS-terminating load balancer).
    #[arg(long)]
    client_plaintext: bool,
    /// JSON file with tunnels and client keys (see the edge crate's `store_file`).
    #[arg(long)]
    store_file: PathBuf,
    /// Name of this edge replica, sent to connectors.
    #[arg(long, default_value = "edge")]
    edge_id: String,
    /// Deadline for a connector's TLS and tunnel handshake.
    #[arg(long, default_value = "10s")]
    handshake_timeout: String,
    /// Connector handshakes in progress at once.
    #[arg(long, default_value_t = 1024)]
    max_pending_handshakes: usize,
    #[command(flatten)]
    trusted: super::api::TrustedProxyArgs,
    #[command(flatten)]
    front: FrontArgs,
    /// Log level (error, warn, info, debug).
    #[arg(long, default_value = "info")]
    loglevel: String,
}

/// What stands in front of the edge's listeners; shared with `server`.
#[derive(Debug, clap::Args)]
pub struct FrontArgs {
    /// An L4 balancer in front of the connector and client listeners (address or
    /// network, repeatable or comma-separated) that puts a PROXY protocol header (v1 or
    /// v2) before each connection: connections from it must carry one, and its source is
    /// the client for every per-source limit.
    #[arg(
        long = "proxy-protocol-from",
        env = "MCP_TUNNEL_PROXY_PROTOCOL_FROM",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    proxy_protocol_from: Vec<String>,
    /// Client connections before the end of their TLS handshake (with `server` in
    /// replica mode: of their request head) at once; more are closed at once.
    #[arg(long, default_value_t = EdgeConfig::default().max_pending_client_handshakes, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_pending_client_handshakes: usize,
}

impl FrontArgs {
    /// `--proxy-protocol-from`, parsed.
    pub fn proxy_protocol_from(&self) -> anyhow::Result<TrustedProxies> {
        TrustedProxies::parse(&self.proxy_protocol_from)
            .map_err(|e| anyhow::anyhow!("--proxy-protocol-from: {e}"))
    }
}

pub async fn run(args: EdgeArgs) -> anyhow::Result<ExitCode> {
    let mut signals = crate::signals::Signals::install()?;
    logging::init(&args.loglevel, logging::Format::Json);
    let store = mcp_tunnel_edge::store_file::load(&args.store_file)?;
    let connector_tls = server_config_from_files(&args.tls_cert, &args.tls_key)?;
    let client_tls = if args.client_plaintext {
        None
    } else {
        Some(match (&args.client_tls_cert, &args.client_tls_key) {
            (Some(c), Some(k)) => server_config_from_files(c, k)?,
            _ => connector_tls.clone(),
        })
    };
    let trusted_proxies = args.trusted.parsed()?;
    let proxy_protocol_from = args.front.proxy_protocol_from()?;
    let config = EdgeConfig {
        edge_id: args.edge_id.clone(),
        trusted_proxies,
        proxy_protocol_connectors: proxy_protocol_from.clone(),
        proxy_protocol_clients: proxy_protocol_from,
        handshake_timeout: duration("handshake-timeout", &args.handshake_timeout)?,
        max_pending_handshakes: args.max_pending_handshakes,
        max_pending_client_handshakes: args.front.max_pending_client_handshakes,
        ..EdgeConfig::default()
    };
    let listeners = EdgeListeners {
        connector: bind("connector-listen", &args.connector_listen).await?,
        client: bind("client-listen", &args.client_listen).await?,
        admin: match &args.admin_listen {
            Some(a) => Some(bind("admin-listen", a).await?),
            None => None,
        },
    };
    tracing::info!(
        connector = %local(&listeners.connector),
        client = %local(&listeners.client),
        admin = %listeners.admin.as_ref().map(local).unwrap_or_default(),
        "edge listening"
    );
    let edge = Edge::start(
        config,
        EdgeTls {
            connector: connector_tls,
            client: client_tls,
        },
        listeners,
        Arc::new(store),
    );
    signals.recv().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    parse_duration(v).with_context(|| format!("--{flag}"))
}

fn local(l: &TcpListener) -> String {
    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
}

async fn bind(flag: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let parsed: ListenAddr = parse_listen_addr(addr).with_context(|| format!("--{flag}"))?;
    let mut last = None;
    for a in parsed.socket_addrs() {
        match TcpListener::bind(a).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "--{flag}: cannot listen on {addr}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}
