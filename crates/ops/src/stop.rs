//! Stopping the customer's stack: local processes from pid files, a Compose project,
//! or a Helm release, each through the tool an operator would use by hand.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::runbook::{StepOutcome, StepResult};

/// What runs the stack.
#[derive(Debug, Clone, Default)]
pub struct StopTarget {
    /// Files holding the pid of an `mcp-tunnel` process (proxy, connector).
    pub pid_files: Vec<PathBuf>,
    pub compose_file: Option<PathBuf>,
    pub compose_project: Option<String>,
    /// `(release, namespace)`.
    pub helm: Option<(String, String)>,
    /// How long a process gets after SIGTERM (Compose: `down --timeout`).
    pub grace: Duration,
}

impl StopTarget {
    pub fn is_empty(&self) -> bool {
        self.pid_files.is_empty() && self.compose_file.is_none() && self.helm.is_none()
    }
}

/// Stops everything named; each target is one result.
pub async fn stop(t: &StopTarget) -> Vec<StepResult> {
    let mut out = Vec::new();
    for f in &t.pid_files {
        out.push(stop_pid_file(f, t.grace).await);
    }
    if let Some(file) = &t.compose_file {
        out.push(compose_down(file, t.compose_project.as_deref(), t.grace).await);
    }
    if let Some((release, ns)) = &t.helm {
        out.push(helm_uninstall(release, ns).await);
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

async fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// SIGTERM, wait for the grace period, then SIGKILL. A pid file pointing at a process
/// that is not `mcp-tunnel` (a stale file whose pid was reused) is refused.
pub async fn stop_pid_file(file: &Path, grace: Duration) -> StepResult {
    let step = format!("stop pid file {}", file.display());
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return StepResult::new(step, StepOutcome::AlreadyDone, "no pid file");
        }
        Err(e) => {
            return StepResult::new(
                step,
                StepOutcome::Failed,
                mcp_tunnel_pki::tls::io_reason(&e),
            );
        }
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return StepResult::new(
            step,
            StepOutcome::Failed,
            format!("not a pid: {:?}", text.trim()),
        );
    };
    if !alive(pid) {
        let _ = std::fs::remove_file(file);
        return StepResult::new(
            step,
            StepOutcome::AlreadyDone,
            format!("process {pid} is not running"),
        );
    }
    let cmd = cmdline(pid);
    if !cmd.contains("mcp-tunnel") {
        return StepResult::new(
            step,
            StepOutcome::Failed,
            format!(
                "process {pid} is not mcp-tunnel ({cmd:?}): the pid file is stale; not signalling it"
            ),
        );
    }
    signal(pid, "-TERM").await;
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let how = if alive(pid) {
        signal(pid, "-KILL").await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        "SIGKILL after the grace period"
    } else {
        "SIGTERM"
    };
    if alive(pid) {
        return StepResult::new(
            step,
            StepOutcome::Failed,
            format!("process {pid} is still running"),
        );
    }
    let _ = std::fs::remove_file(file);
    StepResult::new(
        step,
        StepOutcome::Done,
        format!("stopped process {pid} ({how})"),
    )
}

/// `docker compose -f FILE [-p P] down --timeout N`.
pub async fn compose_down(file: &Path, project: Option<&str>, grace: Duration) -> StepResult {
    let mut args: Vec<String> = vec!["compose".into(), "-f".into(), file.display().to_string()];
    if let Some(p) = project {
        args.extend(["-p".into(), p.into()]);
    }
    args.extend([
        "down".into(),
        "--timeout".into(),
        grace.as_secs().to_string(),
    ]);
    run_tool("docker", &args, "stop the Compose stack").await
}

/// `helm uninstall RELEASE -n NS --ignore-not-found`.
pub async fn helm_uninstall(release: &str, ns: &str) -> StepResult {
    let args: Vec<String> = ["uninstall", release, "-n", ns, "--ignore-not-found"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    run_tool("helm", &args, "uninstall the Helm release").await
}

async fn run_tool(tool: &str, args: &[String], what: &str) -> StepResult {
    let shown = format!("{tool} {}", args.join(" "));
    match Command::new(tool).args(args).output().await {
        Ok(o) if o.status.success() => StepResult::new(what, StepOutcome::Done, shown),
        Ok(o) => StepResult::new(
            what,
            StepOutcome::Failed,
            format!(
                "{shown} exited {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ),
        Err(e) => StepResult::new(
            what,
            StepOutcome::Failed,
            format!(
                "cannot run {tool} ({}); run `{shown}` yourself",
                mcp_tunnel_pki::tls::io_reason(&e)
            ),
        ),
    }
}

/// Runs `docker compose logs` into `dest` before the stack goes away (Compose deletes
/// container logs with the containers).
pub async fn compose_logs(file: &Path, project: Option<&str>, dest: &Path) -> StepResult {
    let mut args: Vec<String> = vec!["compose".into(), "-f".into(), file.display().to_string()];
    if let Some(p) = project {
        args.extend(["-p".into(), p.into()]);
    }
    args.extend(["logs".into(), "--no-color".into(), "--timestamps".into()]);
    match Command::new("docker").args(&args).output().await {
        Ok(o) if o.status.success() => match std::fs::write(dest, &o.stdout) {
            Ok(()) => StepResult::new(
                "save Compose logs",
                StepOutcome::Done,
                format!("{} bytes to {}", o.stdout.len(), dest.display()),
            ),
            Err(e) => StepResult::new(
                "save Compose logs",
                StepOutcome::Failed,
                mcp_tunnel_pki::tls::io_reason(&e),
            ),
        },
        Ok(o) => StepResult::new(
            "save Compose logs",
            StepOutcome::Failed,
            String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        ),
        Err(e) => StepResult::new(
            "save Compose logs",
            StepOutcome::Failed,
            format!("cannot run docker: {}", mcp_tunnel_pki::tls::io_reason(&e)),
        ),
    }
}
