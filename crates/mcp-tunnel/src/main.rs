//! `mcp-tunnel`: every role of the system as a subcommand of one binary (SPEC §2).

mod argv;
mod commands;
mod logging;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mcp-tunnel",
    version,
    about = "MCP tunnels: reach private MCP servers with no inbound port"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Terminate inner TLS, route by hostname and forward to private MCP servers.
    Proxy(commands::proxy::ProxyArgs),
    /// Outbound-only connections to the edge, forwarding streams to the proxy.
    Connector(commands::connector::ConnectorArgs),
    /// Accept connectors and client sessions, relay bytes (operator side).
    Edge(commands::edge::EdgeArgs),
    /// One-shot MCP call through a tunnel session (list tools, or call one).
    Call(commands::call::CallArgs),
    /// GET a local health endpoint; exit 0 on 2xx (for images without a shell).
    Healthcheck(commands::healthcheck::HealthcheckArgs),
    /// The Tunnels API, token exchange, admin and audit endpoints (operator side).
    Api(commands::api::ApiArgs),
    /// Edge and API in one process over one store; `server init` bootstraps it.
    Server(commands::server::ServerArgs),
    /// Create, list, archive tunnels; reveal and rotate their tokens (Tunnels API).
    Tunnels(commands::tunnels::TunnelsArgs),
    /// Add, list, archive a tunnel's CA certificates (Tunnels API).
    Certs(commands::certs::CertsArgs),
    /// Workspaces, service accounts, federation, keys and the audit log (org:admin).
    Admin(commands::admin::AdminArgs),
    /// Provision the customer's stack: tunnel, CA, server certificate, token (SPEC §9).
    Setup(commands::setup::SetupArgs),
    /// The whole system on this machine, proving a tool call end to end.
    Quickstart(commands::quickstart::QuickstartArgs),
    /// A local plain-HTTP endpoint for any MCP client, into a tunnel's route.
    Connect(commands::connect::ConnectArgs),
    /// Audit a deployment against the security guide; exit 1 on a high finding.
    Doctor(commands::doctor::DoctorArgs),
    /// Stop the stack, archive the tunnel, delete its stored credentials.
    Teardown(commands::teardown::TeardownArgs),
    /// Breach response: stop, revoke, archive, checklist, evidence; then restore.
    Incident(commands::incident::IncidentArgs),
    /// Follow the stack's logs and alert on warnings, errors and unusual traffic.
    Monitor(commands::monitor::MonitorArgs),
    /// Rotate the tunnel token, server certificate or CA without downtime.
    Rotate(commands::rotate::RotateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(argv::go_style(std::env::args_os()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Proxy(args) => commands::proxy::run(args).await,
            Command::Connector(args) => commands::connector::run(args).await,
            Command::Edge(args) => commands::edge::run(args).await,
            Command::Call(args) => commands::call::run(args).await,
            Command::Healthcheck(args) => commands::healthcheck::run(args).await,
            Command::Api(args) => commands::api::run(args).await,
            Command::Server(args) => commands::server::run(args).await,
            Command::Tunnels(args) => commands::tunnels::run(args).await,
            Command::Certs(args) => commands::certs::run(args).await,
            Command::Admin(args) => commands::admin::run(args).await,
            Command::Setup(args) => commands::setup::run(args).await,
            Command::Quickstart(args) => commands::quickstart::run(args).await,
            Command::Connect(args) => commands::connect::run(args).await,
            Command::Doctor(args) => commands::doctor::run(args).await,
            Command::Teardown(args) => commands::teardown::run(args).await,
            Command::Incident(args) => commands::incident::run(args).await,
            Command::Monitor(args) => commands::monitor::run(args).await,
            Command::Rotate(args) => commands::rotate::run(args).await,
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "exiting");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Tasks still running may log while the runtime stops; then every line still
    // queued for stdout goes out before the process ends.
    drop(runtime);
    logging::flush();
    code
}
