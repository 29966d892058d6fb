//! `mcp-tunnel server`: the edge and the API in one process over one store (SQLite by
//! default), and `mcp-tunnel server init`, which bootstraps the data directory.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use mcp_tunnel_control::launch::{self, EDGE_CERT, EDGE_KEY, InitOptions};
use mcp_tunnel_control::replicas::{self, RouterConfig};
use mcp_tunnel_edge::{Edge, EdgeConfig, EdgeListeners, EdgeTls, server_config_from_files};
use mcp_tunnel_net::forwarded::TrustedProxies;
use tokio_util::sync::CancellationToken;

use super::api::{ControlArgs, bind};
use crate::logging;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    command: Option<ServerCommand>,
    #[command(flatten)]
    control: Box<ControlArgs>,
    /// Where connectors connect (TLS, ALPN mcpt/1).
    #[arg(long, default_value = ":7844")]
    connector_listen: String,
    /// Where MCP clients connect (HTTPS/WSS).
    #[arg(long, default_value = ":9443")]
    client_listen: String,
    /// Edge health (/healthz) and metrics (/metrics).
    #[arg(long)]
    edge_admin_listen: Option<String>,
    /// Edge certificate chain; defaults to <data-dir>/edge.pem.
    #[arg(long)]
    edge_tls_cert: Option<PathBuf>,
    /// Edge private key; defaults to <data-dir>/edge.key.
    #[arg(long)]
    edge_tls_key: Option<PathBuf>,
    /// Name of this replica (distinct per replica); random when absent.
    #[arg(long)]
    edge_id: Option<String>,
    /// Replica mode (several servers on one PostgreSQL): the edge's session listener
    /// binds here for peers, and --client-listen forwards each session to the replica
    /// holding a connection of its tunnel.
    #[arg(long)]
    peer_listen: Option<String>,
    /// host:port peers dial to reach --peer-listen; defaults to its bound address.
    #[arg(long, requires = "peer_listen")]
    peer_advertise: Option<String>,
    #[command(flatten)]
    front: super::edge::FrontArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ServerCommand {
    /// Create the organization, default workspace, admin API key, master key and TLS
    /// material. Secrets are printed once; files holding them are mode 0600.
    Init(InitArgs),
    /// Re-issue the server's own certificates (edge.pem, api.pem) from edge-ca.key with
    /// the names they carry, when they are close to expiry. The running server picks them
    /// up within 10 seconds; nothing restarts. Run it daily (cron, systemd timer).
    RenewCerts(RenewCertsArgs),
}

#[derive(Debug, clap::Args)]
struct RenewCertsArgs {
    #[arg(long, env = "MCP_TUNNEL_DATA_DIR", default_value = "mcp-tunnel-data")]
    data_dir: PathBuf,
    /// Renew a certificate with less than this validity left (Go duration).
    #[arg(long, default_value = "720h", value_parser = super::api::duration)]
    renew_before: std::time::Duration,
    /// Renew now, whatever is left.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    #[arg(long, env = "MCP_TUNNEL_DATA_DIR", default_value = "mcp-tunnel-data")]
    data_dir: PathBuf,
    #[arg(long, env = "MCP_TUNNEL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A file holding the PostgreSQL URL on one line (keeps its password out of argv).
    #[arg(long, env = "MCP_TUNNEL_DATABASE_URL_FILE", value_name = "FILE")]
    database_url_file: Option<PathBuf>,
    /// Tunnel domains are <8 chars>.<base-domain>.
    #[arg(long)]
    base_domain: String,
    /// host:port of the edge's connector listener, written into every tunnel token.
    #[arg(long)]
    edge_address: String,
    #[arg(long, default_value = "default")]
    org_name: String,
    /// Extra DNS names or IPs for the API certificate (localhost and 127.0.0.1 always).
    #[arg(long = "api-host")]
    api_hosts: Vec<String>,
    #[arg(long, default_value_t = 10)]
    max_tunnels: u32,
    /// Also write the admin API key to this file (mode 0600), for automation.
    #[arg(long)]
    admin_key_file: Option<PathBuf>,
    /// Also write the console's bootstrap admin password to this file (mode 0600).
    #[arg(long)]
    admin_password_file: Option<PathBuf>,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(ServerCommand::Init(init)) => run_init(init).await,
        Some(ServerCommand::RenewCerts(a)) => {
            let report = mcp_tunnel_control::server_certs::renew(
                &mcp_tunnel_control::server_certs::RenewOptions {
                    data_dir: a.data_dir,
                    renew_before: a.renew_before,
                    force: a.force,
                },
            )?;
            for r in report {
                println!("{r}");
            }
            Ok(ExitCode::SUCCESS)
        }
        None => run_server(args).await,
    }
}

async fn run_init(a: InitArgs) -> anyhow::Result<ExitCode> {
    // The secret files are claimed before anything is initialised: a path that is taken
    // must fail the command while nothing has happened, not after init has made a key
    // that could then be neither written nor made again. An initialised directory is
    // still reported as such first (a re-run names the real reason).
    let config = a.data_dir.join(launch::CONFIG_FILE);
    if config.exists() {
        return Err(launch::LaunchError::AlreadyInitialised {
            path: config.display().to_string(),
        }
        .into());
    }
    // A bad URL file, too, fails before anything is claimed.
    let database_url =
        launch::database_url(a.database_url.as_deref(), a.database_url_file.as_deref())?;
    let key_file = a
        .admin_key_file
        .as_deref()
        .map(|p| SecretFile::claim("--admin-key-file", p))
        .transpose()?;
    let password_file = match a.admin_password_file.as_deref() {
        Some(p) => match SecretFile::claim("--admin-password-file", p) {
            Ok(f) => Some(f),
            Err(e) => {
                key_file.into_iter().for_each(SecretFile::release);
                return Err(e);
            }
        },
        None => None,
    };
    let report = launch::init(&InitOptions {
        data_dir: a.data_dir.clone(),
        database_url,
        org_name: a.org_name.clone(),
        base_domain: a.base_domain.clone(),
        edge_address: a.edge_address.clone(),
        api_hosts: a.api_hosts.clone(),
        max_tunnels_per_org: a.max_tunnels,
    })
    .await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            key_file.into_iter().for_each(SecretFile::release);
            password_file.into_iter().for_each(SecretFile::release);
            return Err(e.into());
        }
    };
    // A secret that cannot be written is printed instead: init has happened and will not
    // make it again.
    let key_written = key_file.is_some_and(|f| f.fill(report.admin_key.expose()));
    let password_written = password_file.is_some_and(|f| f.fill(report.admin_password.expose()));
    let mut out = std::io::stdout().lock();
    writeln!(out, "Initialised {}", a.data_dir.display())?;
    writeln!(out, "organization_id: {}", report.config.organization_id)?;
    writeln!(out, "workspace_id:    {}", report.config.workspace_id)?;
    writeln!(out, "base_domain:     {}", report.config.base_domain)?;
    writeln!(out, "edge_address:    {}", report.config.edge_address)?;
    // A secret written to a file is not also printed: init's output ends up in
    // terminals, CI logs and `docker compose` output.
    match a.admin_key_file.as_ref().filter(|_| key_written) {
        Some(path) => writeln!(
            out,
            "admin API key ({}): written to {} (0600), not printed",
            report.admin_key_id,
            path.display()
        )?,
        None => {
            writeln!(
                out,
                "admin API key ({}), shown once, store it now:",
                report.admin_key_id
            )?;
            writeln!(out, "{}", report.admin_key.expose())?;
        }
    }
    match a.admin_password_file.as_ref().filter(|_| password_written) {
        Some(path) => writeln!(
            out,
            "console sign-in (/console): login {:?}, password written to {} (0600), not printed",
            report.admin_login,
            path.display()
        )?,
        None => {
            writeln!(
                out,
                "console sign-in (/console): login {:?}, password shown once, store it now:",
                report.admin_login
            )?;
            writeln!(out, "{}", report.admin_password.expose())?;
        }
    }
    for f in &report.files {
        writeln!(out, "wrote {}", f.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A file claimed (created empty, mode 0600, never over an existing one) for a secret
/// that does not exist yet.
struct SecretFile {
    flag: &'static str,
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl SecretFile {
    fn claim(flag: &'static str, path: &std::path::Path) -> anyhow::Result<Self> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts
            .open(path)
            .with_context(|| format!("{flag} {}", path.display()))?;
        Ok(Self {
            flag,
            path: path.to_owned(),
            file,
        })
    }

    /// Writes the secret; false (and the file removed) if that failed.
    fn fill(mut self, value: &str) -> bool {
        let written = self
            .file
            .write_all(format!("{value}\n").as_bytes())
            .and_then(|()| self.file.sync_all());
        match written {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "warning: {} {}: {e}; the secret is printed below instead",
                    self.flag,
                    self.path.display()
                );
                let _ = std::fs::remove_file(&self.path);
                false
            }
        }
    }

    /// Gives the path back: nothing was initialised.
    fn release(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn run_server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let mut signals = crate::signals::Signals::install()?;
    logging::init(&args.control.loglevel, logging::Format::Json);
    let proxy_protocol_from = args.front.proxy_protocol_from()?;
    let trusted_proxies = args.control.trusted.parsed()?;
    let stop = CancellationToken::new();
    let store = super::api::start(&args.control, &stop).await?;
    let dir = &args.control.data_dir;
    let cert = args
        .edge_tls_cert
        .clone()
        .unwrap_or_else(|| dir.join(EDGE_CERT));
    let key = args
        .edge_tls_key
        .clone()
        .unwrap_or_else(|| dir.join(EDGE_KEY));
    let tls = server_config_from_files(&cert, &key)?;
    let edge_id = args
        .edge_id
        .clone()
        .unwrap_or_else(|| mcp_tunnel_control::ids::new_id("edge"));
    let stale = store.forget_edge_connections(&edge_id).await?;
    let public = bind("client-listen", &args.client_listen).await?;
    let peer = match &args.peer_listen {
        Some(p) => Some(bind("peer-listen", p).await?),
        None => None,
    };
    let replica_mode = peer.is_some();
    let (client, router_listener) = match peer {
        Some(peer) => (peer, Some(public)),
        None => (public, None),
    };
    let listeners = EdgeListeners {
        connector: bind("connector-listen", &args.connector_listen).await?,
        client,
        admin: match &args.edge_admin_listen {
            Some(a) => Some(bind("edge-admin-listen", a).await?),
            None => None,
        },
    };
    let session_addr = listeners.client.local_addr()?;
    tracing::info!(
        edge_id = %edge_id,
        connector = %listeners.connector.local_addr()?,
        client = %router_listener.as_ref().map(|l| l.local_addr()).transpose()?.unwrap_or(session_addr),
        peer = %if replica_mode { session_addr.to_string() } else { String::new() },
        stale_connections_forgotten = stale,
        "edge listening"
    );
    let edge = Edge::start(
        EdgeConfig {
            edge_id: edge_id.clone(),
            // Behind the router every session comes from the router's address: the
            // router enforces the per-source limit on the real one instead.
            client_auth_failures: if replica_mode {
                u32::MAX
            } else {
                EdgeConfig::default().client_auth_failures
            },
            max_pending_client_handshakes: args.front.max_pending_client_handshakes,
            trusted_proxies: trusted_proxies.clone(),
            proxy_protocol_connectors: proxy_protocol_from.clone(),
            // In replica mode the balancer is in front of the router, which reads the
            // header; the edge's client listener then only hears from routers.
            proxy_protocol_clients: if replica_mode {
                TrustedProxies::none()
            } else {
                proxy_protocol_from.clone()
            },
            ..EdgeConfig::default()
        },
        EdgeTls {
            connector: tls.clone(),
            client: Some(tls.clone()),
        },
        listeners,
        Arc::new(store.clone()),
    );
    // Every server heartbeats, so that the connections of one that died are reaped by
    // whichever starts next (or by its peers); only replicas advertise a peer address.
    let mut advertised = String::new();
    if let Some(public) = router_listener {
        let advertise = match &args.peer_advertise {
            Some(a) => a.clone(),
            None if replicas::advertisable(session_addr.ip()) => session_addr.to_string(),
            None => anyhow::bail!(
                "--peer-listen binds every address: give --peer-advertise host:port for peers"
            ),
        };
        let config = launch::read_config(dir)?;
        let edge_host = config.edge_host()?;
        let router = RouterConfig {
            max_pending: args.front.max_pending_client_handshakes,
            trusted_proxies,
            proxy_protocol_from,
            ..RouterConfig::new(
                edge_id.clone(),
                tls,
                &dir.join(launch::EDGE_CA_CERT),
                &edge_host,
                session_addr,
            )
            .map_err(|e| anyhow::anyhow!("replica router: {e}"))?
        };
        tokio::spawn(replicas::route(
            public,
            store.clone(),
            edge.registry().clone(),
            router,
            stop.clone(),
        ));
        advertised = advertise.clone();
        tracing::info!(%advertise, "replica mode: sessions are forwarded to the replica holding the tunnel");
    }
    tokio::spawn(replicas::heartbeat(
        store.clone(),
        edge_id.clone(),
        advertised,
        stop.clone(),
    ));
    signals.recv().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    stop.cancel();
    let _ = store.forget_edge_connections(&edge_id).await;
    let _ = store.forget_edge(&edge_id).await;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
