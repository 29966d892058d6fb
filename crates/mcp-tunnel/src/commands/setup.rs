//! `mcp-tunnel setup init|renew-cert` (SPEC §9), also reachable as `/setup` in the
//! image. The work is in `mcp-tunnel-setup`; this file is flags and printing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use mcp_tunnel_pki::generate::KeyKind;
use mcp_tunnel_setup::k8s::K8sConfig;
use mcp_tunnel_setup::output::OutputSpec;
use mcp_tunnel_setup::{Credentials, InitOptions, Output, RenewOptions};

#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    #[command(subcommand)]
    command: SetupCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SetupCommand {
    /// Attach to (or create) the tunnel, generate the CA and server certificate,
    /// register the CA, fetch the token, and write it all to the output. Idempotent.
    Init(InitArgs),
    /// Re-sign the server certificate with the stored CA when it is close to expiry.
    /// No API calls.
    RenewCert(RenewArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    mcp_tunnel_net::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn key_kind(s: &str) -> Result<KeyKind, String> {
    mcp_tunnel_setup::material::key_kind(s)
        .ok_or_else(|| format!("{s:?}: expected ecdsa-p256, ecdsa-p384 or rsa-4096"))
}

#[derive(Debug, clap::Args)]
struct OutputArgs {
    /// dir:/path or k8s-secret:NAME (default k8s-secret:mcp-tunnel inside a pod).
    #[arg(long)]
    output: Option<String>,
    /// Validity of the server certificate.
    #[arg(long, default_value = "2160h", value_parser = duration)]
    cert_duration: Duration,
    /// Key of the server certificate: ecdsa-p256, ecdsa-p384 or rsa-4096.
    #[arg(long, default_value = "ecdsa-p256", value_parser = key_kind)]
    key_algorithm: KeyKind,
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Base URL of the Tunnels API.
    #[arg(long, env = "API_URL")]
    api_url: String,
    /// Extra CA certificate (PEM) to trust for the API (a self-hosted control plane's
    /// edge-ca.pem); the system roots and SSL_CERT_FILE are trusted too.
    #[arg(long, env = "API_CA_FILE")]
    api_ca_file: Option<PathBuf>,
    /// Attach to this tunnel (tnl_…) instead of the stored one or a new one.
    #[arg(long, env = "TUNNEL_ID")]
    tunnel_id: Option<String>,
    /// A changed value rotates the token on re-run; an unchanged one never does.
    #[arg(long)]
    token_version: Option<String>,
    /// Display name of a tunnel this run creates.
    #[arg(long)]
    display_name: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, clap::Args)]
struct RenewArgs {
    /// Renew when less than this validity is left.
    #[arg(long, default_value = "720h", value_parser = duration)]
    renew_before: Duration,
    #[command(flatten)]
    output: OutputArgs,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn open_output(given: Option<&str>) -> anyhow::Result<Output> {
    let in_pod = env("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty());
    Ok(OutputSpec::resolve(given, in_pod)?.open(|| K8sConfig::in_cluster(env))?)
}

pub async fn run(args: SetupArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SetupCommand::Init(a) => {
            let output = open_output(a.output.output.as_deref())?;
            let credentials = Credentials::from_env(env)?;
            let tunnel_id = a.tunnel_id.filter(|t| !t.trim().is_empty());
            let report = mcp_tunnel_setup::init(
                &output,
                &credentials,
                &InitOptions {
                    api_url: a.api_url,
                    api_ca_file: a.api_ca_file,
                    tunnel_id,
                    display_name: a.display_name,
                    cert_duration: a.output.cert_duration,
                    token_version: a.token_version.filter(|v| !v.is_empty()),
                    key_kind: a.output.key_algorithm,
                },
            )
            .await
            .context("setup init")?;
            println!("{report}");
        }
        SetupCommand::RenewCert(a) => {
            let output = open_output(a.output.output.as_deref())?;
            let report = mcp_tunnel_setup::renew(
                &output,
                &RenewOptions {
                    cert_duration: a.output.cert_duration,
                    renew_before: a.renew_before,
                    key_kind: a.output.key_algorithm,
                },
            )
            .await
            .context("setup renew-cert")?;
            println!("{report}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
