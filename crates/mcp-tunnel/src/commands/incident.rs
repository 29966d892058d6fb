//! `mcp-tunnel incident start|restore|status`: the breach-response runbook as one
//! resumable, recorded procedure (state in `<dir>/incident.json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mcp_tunnel_ops::incident::{self, IncidentState, Params, RestoreOptions, Runtime};
use mcp_tunnel_ops::timefmt;

use super::teardown::{api_client, confirm, parse_duration};
use super::tunnels::ClientArgs;

#[derive(Debug, clap::Args)]
pub struct IncidentArgs {
    #[command(subcommand)]
    command: IncidentCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum IncidentCommand {
    /// Stop, revoke client access, archive and verify, write the checklist, collect
    /// evidence. Re-run to continue after an interruption.
    Start(Box<StartArgs>),
    /// Provision a fresh tunnel and credentials into a new setup output directory.
    Restore(RestoreArgs),
    /// Show the recorded steps.
    Status {
        /// The incident directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    /// The incident directory (state, checklist, evidence).
    #[arg(long)]
    dir: PathBuf,
    /// Start of the suspected window: RFC 3339, or a duration before now (e.g. 24h).
    #[arg(long)]
    since: String,
    /// End of the window (default: when the evidence is collected).
    #[arg(long)]
    until: Option<String>,
    /// The compromised tunnel (default: tunnel-id in --data-dir).
    #[arg(long)]
    tunnel_id: Option<String>,
    /// The setup output directory of the stack.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The proxy's configuration (its routes go into the checklist).
    #[arg(long)]
    proxy_config: Option<PathBuf>,
    /// A log to collect, NAME=FILE (proxy, connector, edge, mcp-server…); repeatable.
    #[arg(long = "log", value_parser = incident::parse_log_source)]
    logs: Vec<incident::LogSource>,
    /// A file holding the pid of an mcp-tunnel process to stop (repeatable).
    #[arg(long)]
    pid_file: Vec<PathBuf>,
    /// The stack's Compose file: logs saved, then `down --timeout 0`.
    #[arg(long)]
    compose: Option<PathBuf>,
    #[arg(long)]
    compose_project: Option<String>,
    /// The Helm release to uninstall.
    #[arg(long)]
    helm_release: Option<String>,
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Grace for stopping processes (the guide stops at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    stop_timeout: Duration,
    /// Do not revoke the workspace's client access keys.
    #[arg(long)]
    keep_client_keys: bool,
    #[arg(long, short = 'y')]
    yes: bool,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    #[arg(long)]
    dir: PathBuf,
    /// New setup output directory.
    #[arg(long)]
    output: PathBuf,
    #[arg(long)]
    display_name: Option<String>,
    #[arg(long, default_value = "2160h", value_parser = parse_duration)]
    cert_duration: Duration,
    /// Restore before `incident start` has finished.
    #[arg(long)]
    force: bool,
}

pub async fn run(args: IncidentArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        IncidentCommand::Start(s) => start(*s, &args.client).await,
        IncidentCommand::Restore(r) => restore(r, &args.client).await,
        IncidentCommand::Status { dir } => match IncidentState::load(&dir)? {
            Some(st) => {
                print_state(&st, args.client.json)?;
                Ok(ExitCode::SUCCESS)
            }
            None => anyhow::bail!("no incident in {}", dir.display()),
        },
    }
}

async fn start(a: StartArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let now = timefmt::now_ms();
    let since = timefmt::parse_since(&a.since, now).map_err(anyhow::Error::msg)?;
    let until = match &a.until {
        Some(u) => Some(timefmt::parse_since(u, now).map_err(anyhow::Error::msg)?),
        None => None,
    };
    anyhow::ensure!(until.is_none_or(|u| since <= u), "--since is after --until");
    let params = Params {
        since_ms: since,
        until_ms: until,
        tunnel_id: a.tunnel_id,
        data_dir: a.data_dir.map(absolute),
        proxy_config: a.proxy_config.map(absolute),
        pid_files: a.pid_file.into_iter().map(absolute).collect(),
        compose_file: a.compose.map(absolute),
        compose_project: a.compose_project,
        helm: a.helm_release.map(|r| (r, a.namespace.clone())),
        grace_secs: a.stop_timeout.as_secs(),
        logs: a
            .logs
            .into_iter()
            .map(|mut l| {
                l.path = absolute(l.path);
                l
            })
            .collect(),
        revoke_client_keys: !a.keep_client_keys,
    };
    if !a.yes {
        let resumed = IncidentState::load(&a.dir)?.is_some();
        let mut plan = vec![
            "stop the deployment".to_owned(),
            if params.revoke_client_keys {
                "revoke every client access key of the tunnel's workspace (and organization-wide ones)".into()
            } else {
                "keep client access keys".into()
            },
            "archive the tunnel (irreversible) and verify it is refused".into(),
            "write the credential-rotation checklist and collect evidence".into(),
        ];
        if resumed {
            plan.insert(
                0,
                format!("continue the incident recorded in {}", a.dir.display()),
            );
        }
        if !confirm("Respond to a suspected breach?", &plan)? {
            eprintln!("incident: nothing done");
            return Ok(ExitCode::FAILURE);
        }
    }
    let rt = Runtime {
        api: api_client(c)?,
        connector_bin: std::env::current_exe().ok(),
    };
    let result = incident::start(&a.dir, params, &rt).await;
    let st = IncidentState::load(&a.dir)?;
    if let Some(st) = &st {
        print_state(st, c.json)?;
    }
    match result {
        Ok(_) => {
            if !c.json {
                println!(
                    "\nNext: work through {}/checklist.md, review {}/evidence/timeline.md, then `mcp-tunnel incident restore --dir {} --output <new dir>`.",
                    a.dir.display(),
                    a.dir.display(),
                    a.dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("incident: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn restore(r: RestoreArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let api = api_client(c)?.ok_or_else(|| {
        anyhow::anyhow!("restore needs the API: pass --api-url (and MCP_TUNNEL_API_KEY)")
    })?;
    let rec = incident::restore(
        &r.dir,
        &RestoreOptions {
            output: absolute(r.output),
            display_name: r.display_name,
            cert_duration: r.cert_duration,
            force: r.force,
        },
        &api,
    )
    .await?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(&rec)?);
    } else {
        println!(
            "new tunnel {} ({}) with a new CA, server certificate and token in {}",
            rec.tunnel_id,
            rec.domain,
            rec.output.display()
        );
        println!(
            "Next: set tunnel_domain: {} in the proxy config (Helm: gateway.config.tunnel_domain, or tunnel.id: {}), point the stack at the new directory, start it, and run `mcp-tunnel doctor`.",
            rec.domain, rec.tunnel_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Recorded paths must survive a re-run from another working directory.
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn print_state(st: &IncidentState, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(st)?);
        return Ok(());
    }
    let until = st
        .params
        .until_ms
        .map(timefmt::fmt_ms)
        .unwrap_or_else(|| "evidence collection".into());
    println!(
        "incident {} (window {} to {until})",
        st.id,
        timefmt::fmt_ms(st.params.since_ms)
    );
    for s in &st.steps {
        let status = format!("{:?}", s.status).to_lowercase();
        println!("  {:<8} {:<22} {}", status, s.name, s.detail);
    }
    if let Some(r) = &st.restore {
        println!(
            "  restore: tunnel {} ({}) in {}{}",
            r.tunnel_id,
            r.domain,
            r.output.display(),
            if r.completed_at.is_some() {
                ""
            } else {
                " (not finished)"
            }
        );
    }
    Ok(())
}
