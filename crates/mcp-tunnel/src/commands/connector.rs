//! `mcp-tunnel connector run --url http://localhost:8080` (SPEC §5).

use std::process::ExitCode;

use mcp_tunnel_connector::{ConnectorConfig, Outcome, RunArgs, TOKEN_ENV};

use crate::logging;

#[derive(Debug, clap::Args)]
pub struct ConnectorArgs {
    #[command(subcommand)]
    command: ConnectorCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConnectorCommand {
    /// Keep outbound connections to the edge and forward every stream to --url.
    Run(RunArgs),
}

pub async fn run(args: ConnectorArgs) -> anyhow::Result<ExitCode> {
    let ConnectorCommand::Run(args) = args.command;
    let mut signals = crate::signals::Signals::install()?;
    logging::init("info", logging::Format::Json);
    let env_token = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty());
    let (config, warnings) = ConnectorConfig::from_args(&args, env_token)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let handle = mcp_tunnel_connector::start(config).await?;
    let drainer = handle.drainer();
    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("draining: the edge stops sending new streams, waiting for in-flight ones");
        drainer.drain();
    });
    match handle.wait().await {
        Outcome::Drained => Ok(ExitCode::SUCCESS),
        Outcome::Archived => {
            tracing::error!("connector stopped: the tunnel is archived");
            Ok(ExitCode::from(3))
        }
    }
}
