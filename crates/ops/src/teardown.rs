//! `mcp-tunnel teardown`: decommission a tunnel as the guide's three steps — stop the
//! deployment, archive the tunnel, remove the stored credentials (the setup output
//! directory, or the `mcp-tunnel`, `mcp-tunnel-token` and `mcp-tunnel-cert` Secrets,
//! ignoring missing ones). Every step is idempotent, so a re-run finishes the job.
//!
//! Credentials are removed only after the tunnel is archived (or archiving was skipped
//! on purpose): deleting them first would lose the tunnel id while its token still works.

use std::path::{Path, PathBuf};

use mcp_tunnel_control::client::{ApiClient, ClientError, Method};

use crate::k8s::KubeClient;
use crate::runbook::{StepOutcome, StepResult};
use crate::setup_output::{ALL_ENTRIES, SetupOutput};
use crate::stop::{self, StopTarget};

/// The Secrets the guide names: the managed mode's (named after the release, by default
/// `mcp-tunnel`) and the two of the external mode.
pub const DEFAULT_SECRETS: [&str; 3] = ["mcp-tunnel", "mcp-tunnel-token", "mcp-tunnel-cert"];

#[derive(Debug, Clone, Default)]
pub struct TeardownPlan {
    pub stop: StopTarget,
    /// Explicit, else read from the output.
    pub tunnel_id: Option<String>,
    pub api: Option<ApiClient>,
    /// Leave the tunnel active (archive it elsewhere); credentials are still removed.
    pub skip_archive: bool,
    pub data_dir: Option<PathBuf>,
    pub kube: Option<KubeClient>,
    /// Secrets to delete (with `kube`).
    pub secrets: Vec<String>,
}

impl TeardownPlan {
    /// What will happen, for the confirmation prompt.
    pub fn describe(&self) -> Vec<String> {
        let mut v = Vec::new();
        for f in &self.stop.pid_files {
            v.push(format!("stop the mcp-tunnel process in {}", f.display()));
        }
        if let Some(f) = &self.stop.compose_file {
            v.push(format!("docker compose -f {} down", f.display()));
        }
        if let Some((r, ns)) = &self.stop.helm {
            v.push(format!("helm uninstall {r} -n {ns}"));
        }
        match (self.skip_archive, self.tunnel_id()) {
            (true, _) => v.push("leave the tunnel active (--skip-archive)".into()),
            (false, Some(id)) => v.push(format!(
                "archive tunnel {id} (irreversible: its token and domain stop working)"
            )),
            (false, None) => v.push("archive the tunnel (id not known yet)".into()),
        }
        if let Some(d) = &self.data_dir {
            v.push(format!("delete {} and every credential in it", d.display()));
        }
        if let Some(k) = &self.kube {
            v.push(format!(
                "delete Secrets {} in namespace {}",
                self.secrets.join(", "),
                k.namespace
            ));
        }
        v
    }

    fn tunnel_id(&self) -> Option<String> {
        self.tunnel_id.clone().or_else(|| {
            self.data_dir
                .as_ref()
                .and_then(|d| SetupOutput::read_dir(d).ok())
                .and_then(|o| o.tunnel_id())
        })
    }
}

/// Runs the plan. Stops at a failed archive so credentials are not lost while the
/// tunnel still works.
pub async fn run(plan: &TeardownPlan) -> Vec<StepResult> {
    let mut out = stop::stop(&plan.stop).await;
    let mut tunnel_id = plan.tunnel_id();
    if tunnel_id.is_none()
        && let Some(k) = &plan.kube
    {
        for name in &plan.secrets {
            if let Ok(Some(data)) = k.get_secret(name).await {
                tunnel_id = SetupOutput::from_secret(name, data).tunnel_id();
                if tunnel_id.is_some() {
                    break;
                }
            }
        }
    }
    let archive = if plan.skip_archive {
        StepResult::new(
            "archive the tunnel",
            StepOutcome::Skipped,
            "--skip-archive: the tunnel stays active; archive it in the console",
        )
    } else {
        archive(plan.api.as_ref(), tunnel_id.as_deref()).await
    };
    let stop_here = archive.failed();
    out.push(archive);
    if stop_here {
        out.push(StepResult::new(
            "remove stored credentials",
            StepOutcome::Skipped,
            "not removed while the tunnel may still be active: fix the archive step and re-run (or pass --skip-archive)",
        ));
        return out;
    }
    if let Some(d) = &plan.data_dir {
        out.push(remove_dir(d));
    }
    if let Some(k) = &plan.kube {
        for name in &plan.secrets {
            out.push(match k.delete_secret(name).await {
                Ok(true) => StepResult::new(
                    format!("delete Secret {name}"),
                    StepOutcome::Done,
                    format!("namespace {}", k.namespace),
                ),
                Ok(false) => StepResult::new(
                    format!("delete Secret {name}"),
                    StepOutcome::AlreadyDone,
                    "not found",
                ),
                Err(e) => StepResult::new(
                    format!("delete Secret {name}"),
                    StepOutcome::Failed,
                    e.to_string(),
                ),
            });
        }
    }
    out
}

/// Archives the tunnel; an already archived one is "already done".
pub async fn archive(api: Option<&ApiClient>, tunnel_id: Option<&str>) -> StepResult {
    const STEP: &str = "archive the tunnel";
    let Some(id) = tunnel_id else {
        return StepResult::new(
            STEP,
            StepOutcome::Skipped,
            "no tunnel id (none given and no tunnel-id in the output): nothing to archive",
        );
    };
    let Some(api) = api else {
        return StepResult::new(
            STEP,
            StepOutcome::Failed,
            format!(
                "no API to archive {id} with: pass --api-url (and MCP_TUNNEL_API_KEY), or archive it in the console and pass --skip-archive"
            ),
        );
    };
    let path = format!("/v1/tunnels/{}", crate::doctor::api::seg(id));
    match api.call(Method::GET, &path, None).await {
        Ok(t) if !t["archived_at"].is_null() => {
            return StepResult::new(
                STEP,
                StepOutcome::AlreadyDone,
                format!(
                    "{id} was archived at {}",
                    t["archived_at"].as_str().unwrap_or("?")
                ),
            );
        }
        Ok(_) => {}
        Err(e) => return StepResult::new(STEP, StepOutcome::Failed, format!("GET {path}: {e}")),
    }
    match api
        .call(Method::POST, &format!("{path}/archive"), None)
        .await
    {
        Ok(t) => StepResult::new(
            STEP,
            StepOutcome::Done,
            format!(
                "{id} archived at {}: token refused, connections severed, domain retired",
                t["archived_at"].as_str().unwrap_or("?")
            ),
        ),
        Err(ClientError::Api {
            status, message, ..
        }) => StepResult::new(
            STEP,
            StepOutcome::Failed,
            format!("POST {path}/archive: HTTP {status}: {message}"),
        ),
        Err(e) => StepResult::new(
            STEP,
            StepOutcome::Failed,
            format!("POST {path}/archive: {e}"),
        ),
    }
}

/// Deletes a setup output directory. Refuses a directory that holds none of the setup
/// output's names but other files: a mistyped path must not wipe something else.
pub fn remove_dir(d: &Path) -> StepResult {
    let step = format!("delete {}", d.display());
    let entries = match std::fs::read_dir(d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return StepResult::new(step, StepOutcome::AlreadyDone, "not found");
        }
        Err(e) => {
            return StepResult::new(
                step,
                StepOutcome::Failed,
                mcp_tunnel_pki::tls::io_reason(&e),
            );
        }
    };
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !names.is_empty() && !names.iter().any(|n| ALL_ENTRIES.contains(&n.as_str())) {
        return StepResult::new(
            step,
            StepOutcome::Failed,
            format!(
                "{} does not look like a setup output (none of {}); not deleting it",
                d.display(),
                ALL_ENTRIES.join(", ")
            ),
        );
    }
    match std::fs::remove_dir_all(d) {
        Ok(()) => StepResult::new(
            step,
            StepOutcome::Done,
            format!("removed {} entries", names.len()),
        ),
        Err(e) => StepResult::new(
            step,
            StepOutcome::Failed,
            format!(
                "{} (try as the owner of the files, e.g. sudo)",
                mcp_tunnel_pki::tls::io_reason(&e)
            ),
        ),
    }
}
