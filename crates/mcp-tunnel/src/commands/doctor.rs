//! `mcp-tunnel doctor`: audits a deployment against the security guide (SPEC §10) and
//! prints one finding per check; exit status 1 when a high-severity check fails.

use std::path::PathBuf;
use std::process::ExitCode;

use mcp_tunnel_ops::doctor::{self, DoctorOptions, FirewallSource};
use mcp_tunnel_ops::k8s::{KubeClient, KubeOptions};
use mcp_tunnel_proxy::guard::SystemResolver;

use super::tunnels::ClientArgs;

/// Where a Kubernetes API server is; shared by `doctor`, `teardown` and `incident`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Kubernetes API server URL (default: the in-cluster service).
    #[arg(long)]
    pub kube_api_url: Option<String>,
    /// Bearer token file for the Kubernetes API (default: the pod's service account).
    #[arg(long)]
    pub kube_token_file: Option<PathBuf>,
    /// CA bundle of the Kubernetes API server.
    #[arg(long)]
    pub kube_ca_file: Option<PathBuf>,
    /// Namespace of the Secrets (default: the pod's, else `default`).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

impl KubeArgs {
    pub fn client(&self) -> anyhow::Result<KubeClient> {
        Ok(KubeClient::new(&KubeOptions {
            api_url: self.kube_api_url.clone(),
            token_file: self.kube_token_file.clone(),
            ca_file: self.kube_ca_file.clone(),
            namespace: self.namespace.clone(),
        })?)
    }
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The proxy's configuration file.
    #[arg(long, alias = "config")]
    proxy_config: Option<PathBuf>,
    /// The proxy's -tunnel-domain, if it overrides the config.
    #[arg(long)]
    tunnel_domain: Option<String>,
    /// The setup output directory (tunnel-id, tunnel-token, ca.crt, tls.crt, …).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The setup output as a Kubernetes Secret (instead of --data-dir).
    #[arg(long, conflicts_with = "data_dir")]
    secret: Option<String>,
    /// The tunnel's CA certificate, when it is not in the setup output.
    #[arg(long)]
    tunnel_ca_file: Option<PathBuf>,
    /// The Compose file of the stack.
    #[arg(long)]
    compose: Option<PathBuf>,
    /// Check the Docker host's egress rules (the DOCKER-USER chain) by running
    /// `iptables-save` here; needs root on the host that runs the stack.
    #[arg(long, conflicts_with = "firewall_rules")]
    host_firewall: bool,
    /// Check the egress rules in this file (`iptables-save -t filter` taken on the
    /// Docker host).
    #[arg(long)]
    firewall_rules: Option<PathBuf>,
    /// The Helm values file of the release.
    #[arg(long)]
    helm_values: Option<PathBuf>,
    /// Token rotation policy: a token older than this many days fails.
    #[arg(long, default_value_t = 90)]
    rotation_days: u32,
    /// Certificates with fewer days left fail (medium).
    #[arg(long, default_value_t = 30)]
    cert_warn_days: i64,
    /// Also send the OAuth probe to upstreams that are not on loopback.
    #[arg(long)]
    probe_upstreams: bool,
    /// Path of the MCP endpoint on each upstream.
    #[arg(long, default_value = "/mcp")]
    mcp_path: String,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let api = if args.client.api_url.is_some() || args.client.credentials_file.is_some() {
        match args.client.client() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("doctor: the API checks are skipped: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let kube = match &args.secret {
        Some(_) => Some(args.kube.client()?),
        None => None,
    };
    let opts = DoctorOptions {
        proxy_config: args.proxy_config,
        tunnel_domain: args.tunnel_domain,
        data_dir: args.data_dir,
        secret: args.secret,
        kube,
        ca_file: args.tunnel_ca_file,
        compose: args.compose,
        firewall: match (args.host_firewall, args.firewall_rules) {
            (true, _) => Some(FirewallSource::Host),
            (false, Some(f)) => Some(FirewallSource::File(f)),
            (false, None) => None,
        },
        helm_values: args.helm_values,
        api,
        rotation_days: args.rotation_days,
        cert_warn_days: args.cert_warn_days,
        probe_upstreams: args.probe_upstreams,
        mcp_path: args.mcp_path,
        ..DoctorOptions::default()
    };
    let report = doctor::run(&opts, &SystemResolver).await;
    if args.client.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(if report.has_blocking() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
