//! `mcp-tunnel rotate token|cert|ca`: rotate a tunnel's credentials without downtime
//! and install them where the stack reads them (setup output directory or Secret).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mcp_tunnel_ops::rotate::{self, Store};
use mcp_tunnel_ops::runbook::{self, StepResult};

use super::doctor::KubeArgs;
use super::teardown::{api_client, parse_duration};
use super::tunnels::ClientArgs;

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    #[command(subcommand)]
    what: What,
    /// The setup output directory.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The setup output Secret (instead of --data-dir).
    #[arg(long, global = true, conflicts_with = "data_dir")]
    secret: Option<String>,
    /// The proxy's admin address (http://127.0.0.1:9091): wait until it serves the new
    /// certificate.
    #[arg(long, global = true)]
    proxy_admin: Option<String>,
    /// How long to wait for the proxy to serve a new certificate (Secrets reach pods
    /// with a delay).
    #[arg(long, global = true, default_value = "120s", value_parser = parse_duration)]
    wait: Duration,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// New tunnel token through the API, installed for the connector.
    Token {
        /// Recorded in the audit event.
        #[arg(long)]
        reason: Option<String>,
    },
    /// New server certificate from the stored CA; the proxy hot-reloads it.
    Cert {
        #[arg(long, default_value = "2160h", value_parser = parse_duration)]
        cert_duration: Duration,
    },
    /// New CA: registered beside the old one, new certificate served, old CA archived.
    Ca {
        #[arg(long, default_value = "2160h", value_parser = parse_duration)]
        cert_duration: Duration,
        /// How long clients may cache the tunnel's CA list: the new CA is registered
        /// this long before the proxy serves a certificate from it (longer than
        /// `connect --refresh-interval`, 60s by default).
        #[arg(long, default_value = "90s", value_parser = parse_duration)]
        propagation: Duration,
    },
}

pub async fn run(a: RotateArgs) -> anyhow::Result<ExitCode> {
    let store = match (&a.data_dir, &a.secret) {
        (Some(d), _) => Store::Dir(d.clone()),
        (None, Some(name)) => Store::Secret {
            kube: a.kube.client()?,
            name: name.clone(),
        },
        (None, None) => {
            anyhow::bail!("pass --data-dir or --secret (where the stack's credentials are)")
        }
    };
    let api = || -> anyhow::Result<mcp_tunnel_control::client::ApiClient> {
        api_client(&a.client)?.ok_or_else(|| {
            anyhow::anyhow!("this rotation needs the API: pass --api-url (and MCP_TUNNEL_API_KEY)")
        })
    };
    let admin = a.proxy_admin.as_deref();
    let results: Vec<StepResult> = match a.what {
        What::Token { reason } => {
            let bin = std::env::current_exe().ok();
            rotate::token(&api()?, &store, reason.as_deref(), bin.as_deref()).await
        }
        What::Cert { cert_duration } => rotate::cert(&store, cert_duration, admin, a.wait).await,
        What::Ca {
            cert_duration,
            propagation,
        } => rotate::ca(&api()?, &store, cert_duration, admin, a.wait, propagation).await,
    };
    if a.client.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", runbook::render(&results));
    }
    Ok(if results.iter().any(StepResult::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
