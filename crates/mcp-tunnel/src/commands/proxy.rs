//! `mcp-tunnel proxy -config FILE [-tunnel-domain D]` (SPEC §4).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use mcp_tunnel_proxy::Proxy;
use mcp_tunnel_proxy::config::{DEFAULT_CONFIG_PATHS, LogFormat, ProxyConfig};

use crate::logging;
use crate::signals::Signals;

#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// YAML configuration file (also `-config`). Defaults to the first existing of
    /// /etc/mcp-gateway/config.yaml and /etc/mcp-proxy/config.yaml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `tunnel_domain` from the file (also `-tunnel-domain`).
    #[arg(long)]
    tunnel_domain: Option<String>,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::install()?;
    let path = match args.config {
        Some(p) => p,
        None => DEFAULT_CONFIG_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "no configuration: pass -config FILE (looked for {})",
                    DEFAULT_CONFIG_PATHS.join(", ")
                )
            })?,
    };
    let config = match ProxyConfig::load(&path, args.tunnel_domain.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            // Before the config is read there is no configured logger: log in the
            // default format so log collectors see it too.
            logging::init("info", logging::Format::Json);
            tracing::error!(config = %path.display(), error = %e, "invalid configuration");
            anyhow::bail!("{}: {e}", path.display());
        }
    };
    let format = match config.log_format {
        LogFormat::Json => logging::Format::Json,
        LogFormat::Text => logging::Format::Text,
    };
    logging::init(config.log_level.as_str(), format);
    let shutdown_timeout = config.shutdown_timeout;
    let proxy = Proxy::new(config)?;
    let running = proxy.start().await?;
    signals.recv().await;
    tracing::info!(timeout = ?shutdown_timeout, "shutting down, waiting for in-flight requests");
    if running.shutdown(shutdown_timeout).await {
        tracing::info!("shutdown complete");
    } else {
        tracing::warn!("shutdown timeout reached with requests still in flight");
    }
    Ok(ExitCode::SUCCESS)
}
