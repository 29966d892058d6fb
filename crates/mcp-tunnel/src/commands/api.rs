//! `mcp-tunnel api` (SPEC §7): the Tunnels API, the token exchange and the admin and
//! audit endpoints, over HTTPS by default (the official SDKs require https).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use mcp_tunnel_control::ControlStore;
use mcp_tunnel_control::api::{self, ApiState};
use mcp_tunnel_control::http_client::HttpClient;
use mcp_tunnel_control::launch::{self, API_CERT, API_KEY};
use mcp_tunnel_net::listen::parse_listen_addr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::logging;

/// Where the control plane's state is and how the API is served; shared with `server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// Where the API listens (HTTPS unless --plaintext).
    #[arg(long, default_value = ":8443")]
    pub listen: String,
    /// Data directory written by `mcp-tunnel server init` (SQLite database, master key,
    /// config, TLS material).
    #[arg(long, env = "MCP_TUNNEL_DATA_DIR", default_value = "mcp-tunnel-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…); SQLite in the data directory when absent. Prefer
    /// the environment variable: argv is visible to every local user.
    #[arg(long, env = "MCP_TUNNEL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// API certificate chain (PEM); defaults to <data-dir>/api.pem.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// API private key (PEM); defaults to <data-dir>/api.key.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (only behind a TLS-terminating load balancer).
    #[arg(long)]
    pub plaintext: bool,
    /// Non-archived tunnels allowed per organization (overrides the value from init).
    #[arg(long)]
    pub max_tunnels: Option<u32>,
    /// Failed authentications per source address and minute before 429.
    #[arg(long, default_value_t = 30)]
    pub failed_auth_per_minute: u32,
    /// Log level (error, warn, info, debug).
    #[arg(long, default_value = "info")]
    pub loglevel: String,
}

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub control: ControlArgs,
}

/// Opens the store and starts serving the API; returns the store for the edge.
pub async fn start(args: &ControlArgs, stop: &CancellationToken) -> anyhow::Result<ControlStore> {
    let (store, config) = launch::open_store(
        &args.data_dir,
        args.database_url.as_deref(),
        args.max_tunnels,
    )
    .await
    .context("opening the control plane")?;
    let tls = if args.plaintext {
        None
    } else {
        let cert = args
            .tls_cert
            .clone()
            .unwrap_or_else(|| args.data_dir.join(API_CERT));
        let key = args
            .tls_key
            .clone()
            .unwrap_or_else(|| args.data_dir.join(API_KEY));
        Some(mcp_tunnel_edge::server_config_from_files(&cert, &key)?)
    };
    let listener = bind("listen", &args.listen).await?;
    let addr = listener.local_addr()?;
    let state = ApiState::new(
        store.clone(),
        HttpClient::new(None)?,
        args.failed_auth_per_minute,
    );
    let _events = store.listen(stop.clone());
    tracing::info!(
        addr = %addr,
        scheme = if tls.is_some() { "https" } else { "http" },
        database = ?store.db().dialect(),
        organization_id = %config.organization_id,
        "api listening"
    );
    tokio::spawn(api::serve(listener, tls, api::router(state), stop.clone()));
    tokio::spawn(purge_access_tokens(store.clone(), stop.clone()));
    Ok(store)
}

/// Hourly: forget access tokens expired for a day.
async fn purge_access_tokens(store: ControlStore, stop: CancellationToken) {
    loop {
        match store.purge_expired_access_tokens(86_400_000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired access tokens purged"),
            Err(e) => tracing::warn!(error = %e, "purging expired access tokens failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

pub async fn run(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let mut signals = crate::signals::Signals::install()?;
    logging::init(&args.control.loglevel, logging::Format::Json);
    let stop = CancellationToken::new();
    let store = start(&args.control, &stop).await?;
    signals.recv().await;
    tracing::info!("shutting down");
    stop.cancel();
    store.db().close().await;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn bind(flag: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let parsed = parse_listen_addr(addr).with_context(|| format!("--{flag}"))?;
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
