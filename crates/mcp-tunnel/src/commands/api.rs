//! `mcp-tunnel api` (SPEC §7): the Tunnels API, the token exchange, the admin and
//! audit endpoints and the web console (`/console`), over HTTPS by default (the official
//! SDKs require https).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use mcp_tunnel_control::ControlStore;
use mcp_tunnel_control::api::console::ConsoleConfig;
use mcp_tunnel_control::api::{self, ApiState};
use mcp_tunnel_control::http_client::HttpClient;
use mcp_tunnel_control::launch::{self, API_CERT, API_KEY};
use mcp_tunnel_control::store::SessionLimits;
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
    /// A file holding the PostgreSQL URL on one line (e.g. a mounted secret): the way to
    /// keep its password out of argv and the environment.
    #[arg(long, env = "MCP_TUNNEL_DATABASE_URL_FILE", value_name = "FILE")]
    pub database_url_file: Option<PathBuf>,
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
    /// Connections the API serves at once; more wait in the listen backlog.
    #[arg(long, default_value_t = api::ConnLimits::default().total as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Connections one source address may hold open; more are closed at once.
    #[arg(long, default_value_t = api::ConnLimits::default().per_source as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_source: u32,
    #[command(flatten)]
    pub trusted: TrustedProxyArgs,
    /// Log level (error, warn, info, debug).
    #[arg(long, default_value = "info")]
    pub loglevel: String,
    /// The console's external URL (e.g. https://console.example.com) when it is reached
    /// through a proxy: used for the OIDC redirect URI and the same-origin check.
    /// Defaults to the request's Host with the scheme the API is served with.
    #[arg(long, env = "MCP_TUNNEL_CONSOLE_URL")]
    pub console_url: Option<String>,
    /// A console session ends after this long without a request (Go duration).
    #[arg(long, default_value = "30m", value_parser = duration)]
    pub console_idle_timeout: Duration,
    /// A console session ends this long after sign-in, active or not (Go duration).
    #[arg(long, default_value = "12h", value_parser = duration)]
    pub console_session_lifetime: Duration,
}

/// Reverse proxies whose `X-Forwarded-For` is read; shared by `api`, `server` and `edge`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustedProxyArgs {
    /// A reverse proxy or TLS-terminating balancer in front of this process's listeners
    /// (address or network, repeatable or comma-separated) whose X-Forwarded-For names
    /// the client: the per-source limits on failed authentication (and the API's audit
    /// `source`) then see the client, not the proxy. X-Forwarded-For from anyone else is
    /// ignored.
    #[arg(
        long = "trusted-proxy",
        env = "MCP_TUNNEL_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    trusted_proxies: Vec<String>,
}

impl TrustedProxyArgs {
    /// `--trusted-proxy`, parsed.
    pub fn parsed(&self) -> anyhow::Result<api::TrustedProxies> {
        api::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("--trusted-proxy: {e}"))
    }
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    mcp_tunnel_net::duration::parse_duration(s)
        .map_err(|e| e.to_string())
        .and_then(|d| {
            if d.is_zero() {
                Err("must be positive".into())
            } else {
                Ok(d)
            }
        })
}

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub control: ControlArgs,
}

/// Opens the store and starts serving the API; returns the store for the edge.
pub async fn start(args: &ControlArgs, stop: &CancellationToken) -> anyhow::Result<ControlStore> {
    let trusted_proxies = args.trusted.parsed()?;
    let database_url = launch::database_url(
        args.database_url.as_deref(),
        args.database_url_file.as_deref(),
    )?;
    let (store, config) =
        launch::open_store(&args.data_dir, database_url.as_deref(), args.max_tunnels)
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
        trusted_proxies = %trusted_proxies,
        "api listening"
    );
    if let Some(u) = &args.console_url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        anyhow::bail!("--console-url {u:?}: must be an http(s) URL");
    }
    let limits = SessionLimits {
        idle: args.console_idle_timeout,
        absolute: args.console_session_lifetime,
    };
    let console = ConsoleConfig {
        org_id: config.organization_id.clone(),
        https: match &args.console_url {
            Some(u) => u.starts_with("https://"),
            None => tls.is_some(),
        },
        public_url: args.console_url.clone(),
        limits,
    };
    let router = api::router_with_console(state, console);
    let serve = api::ServeOptions {
        limits: api::ConnLimits {
            total: args.max_connections as usize,
            per_source: args.max_connections_per_source as usize,
        },
        trusted_proxies,
    };
    tokio::spawn(api::serve_with(listener, tls, router, stop.clone(), serve));
    tokio::spawn(purge_access_tokens(store.clone(), stop.clone()));
    tokio::spawn(purge_sessions(store.clone(), limits, stop.clone()));
    Ok(store)
}

/// Every few minutes: forget console sessions past their timeouts.
async fn purge_sessions(store: ControlStore, limits: SessionLimits, stop: CancellationToken) {
    loop {
        if let Err(e) = store.purge_sessions(limits).await {
            tracing::warn!(error = %e, "purging console sessions failed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(api::console::PURGE_EVERY) => {}
        }
    }
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
    store.close().await;
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
