//! `mcp-tunnel teardown`: stop the stack, archive the tunnel, remove the stored
//! credentials (data directory or Secrets). Asks for confirmation unless `--yes`;
//! idempotent, so a re-run completes an interrupted teardown.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use mcp_tunnel_ops::runbook;
use mcp_tunnel_ops::stop::StopTarget;
use mcp_tunnel_ops::teardown::{self, DEFAULT_SECRETS, TeardownPlan};

use super::doctor::KubeArgs;
use super::tunnels::ClientArgs;

/// How the stack runs, for `teardown` and `incident`.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// A file holding the pid of an mcp-tunnel process (repeatable).
    #[arg(long)]
    pub pid_file: Vec<PathBuf>,
    /// The stack's Compose file (`docker compose -f FILE down`).
    #[arg(long)]
    pub compose: Option<PathBuf>,
    /// The Compose project name, if not the file's.
    #[arg(long)]
    pub compose_project: Option<String>,
    /// The Helm release to uninstall (in --namespace).
    #[arg(long)]
    pub helm_release: Option<String>,
    /// How long processes get to stop after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stop_timeout: std::time::Duration,
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    mcp_tunnel_net::duration::parse_duration(s).map_err(|e| e.to_string())
}

impl StackArgs {
    pub fn target(&self, namespace: Option<&str>) -> StopTarget {
        StopTarget {
            pid_files: self.pid_file.clone(),
            compose_file: self.compose.clone(),
            compose_project: self.compose_project.clone(),
            helm: self
                .helm_release
                .clone()
                .map(|r| (r, namespace.unwrap_or("default").to_owned())),
            grace: self.stop_timeout,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct TeardownArgs {
    #[command(flatten)]
    stack: StackArgs,
    /// The setup output directory to delete.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Delete the Secrets mcp-tunnel, mcp-tunnel-token and mcp-tunnel-cert (missing ones
    /// are ignored).
    #[arg(long)]
    k8s_secrets: bool,
    /// Another Secret to delete, e.g. the one named after a release (repeatable).
    #[arg(long)]
    secret: Vec<String>,
    /// The tunnel to archive, when the output does not name it.
    #[arg(long)]
    tunnel_id: Option<String>,
    /// Do not archive the tunnel (you archive it in the console).
    #[arg(long)]
    skip_archive: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: TeardownArgs) -> anyhow::Result<ExitCode> {
    let mut secrets: Vec<String> = Vec::new();
    if args.k8s_secrets {
        secrets.extend(DEFAULT_SECRETS.iter().map(|s| s.to_string()));
    }
    secrets.extend(args.secret.iter().cloned());
    let kube = if secrets.is_empty() {
        None
    } else {
        Some(args.kube.client()?)
    };
    let api = if args.skip_archive {
        None
    } else {
        api_client(&args.client)?
    };
    let plan = TeardownPlan {
        stop: args.stack.target(args.kube.namespace.as_deref()),
        tunnel_id: args.tunnel_id.clone(),
        api,
        skip_archive: args.skip_archive,
        data_dir: args.data_dir.clone(),
        kube,
        secrets,
    };
    if !args.yes && !confirm("Tear down this tunnel?", &plan.describe())? {
        eprintln!("teardown: nothing done");
        return Ok(ExitCode::FAILURE);
    }
    let results = teardown::run(&plan).await;
    if args.client.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", runbook::render(&results));
    }
    Ok(if results.iter().any(|r| r.failed()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The API client when an API is configured (flag, environment or credentials file).
pub fn api_client(c: &ClientArgs) -> anyhow::Result<Option<mcp_tunnel_control::client::ApiClient>> {
    if c.api_url.is_none() && c.credentials_file.is_none() {
        return Ok(None);
    }
    Ok(Some(c.client()?))
}

/// Shows `plan` and asks; refuses when nobody can answer.
pub fn confirm(question: &str, plan: &[String]) -> anyhow::Result<bool> {
    let mut err = std::io::stderr().lock();
    writeln!(err, "{question} This will:")?;
    for line in plan {
        writeln!(err, "  - {line}")?;
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to proceed without confirmation: stdin is not a terminal (pass --yes)"
        );
    }
    write!(err, "Type 'yes' to continue: ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim().eq_ignore_ascii_case("yes"))
}
