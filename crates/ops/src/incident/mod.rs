//! `mcp-tunnel incident`: the guide's breach response as one resumable, recorded
//! procedure. `start` stops the deployment, revokes client access, archives the tunnel
//! and verifies it is refused, writes the downstream-credential checklist, and collects
//! the window's logs and audit events into an evidence bundle; `restore` provisions a
//! fresh tunnel and credentials.
//!
//! Everything lives in the incident directory: `incident.json` records the parameters
//! and every step (status, times, attempts, detail) and is rewritten atomically after
//! each step, so a run interrupted anywhere continues where it stopped. No secret is
//! written there: the API key comes from the environment on every run.

pub mod evidence;
mod restore;
mod steps;

use std::path::{Path, PathBuf};

use mcp_tunnel_control::client::ApiClient;
use serde::{Deserialize, Serialize};

pub use evidence::{LogSource, parse_log_source};
pub use restore::{RestoreOptions, restore};

use crate::setup_output::write_atomic;
use crate::stop::StopTarget;
use crate::timefmt::{fmt_ms, now_ms};

pub const STATE_FILE: &str = "incident.json";

/// The steps of `start`, in order.
pub const STEPS: [&str; 6] = [
    "stop",
    "revoke_client_access",
    "archive_tunnel",
    "verify_refused",
    "checklist",
    "evidence",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Done,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub detail: String,
}

/// What `start` was asked to do; fixed at the first run so a resumed run does the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub since_ms: i64,
    /// End of the window; `None`: until the evidence is collected, so the response's
    /// own actions (revocations, the archive) are in the bundle too.
    pub until_ms: Option<i64>,
    pub tunnel_id: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub proxy_config: Option<PathBuf>,
    pub pid_files: Vec<PathBuf>,
    pub compose_file: Option<PathBuf>,
    pub compose_project: Option<String>,
    pub helm: Option<(String, String)>,
    pub grace_secs: u64,
    pub logs: Vec<LogSource>,
    pub revoke_client_keys: bool,
}

/// The whole record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentState {
    pub id: String,
    pub created_at: String,
    pub params: Params,
    pub steps: Vec<StepRecord>,
    /// Client access keys this incident revoked.
    #[serde(default)]
    pub revoked_client_keys: Vec<String>,
    /// The tunnel that was archived (and its domain, for the checklist).
    #[serde(default)]
    pub tunnel: Option<serde_json::Value>,
    #[serde(default)]
    pub restore: Option<restore::RestoreRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("{0}")]
    State(String),
    #[error("step {step} failed: {detail} (fix it and run `incident start` again to continue)")]
    StepFailed { step: String, detail: String },
}

impl IncidentState {
    pub fn load(dir: &Path) -> Result<Option<Self>, IncidentError> {
        let p = dir.join(STATE_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| IncidentError::State(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IncidentError::State(format!(
                "{}: {}",
                p.display(),
                mcp_tunnel_pki::tls::io_reason(&e)
            ))),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), IncidentError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| IncidentError::State(e.to_string()))?
            + "\n";
        write_atomic(&dir.join(STATE_FILE), text.as_bytes(), 0o600)
            .map_err(|e| IncidentError::State(e.to_string()))
    }

    fn new(params: Params) -> Self {
        let now = now_ms();
        Self {
            id: format!("inc-{}", fmt_ms(now).replace([':', '-', '.'], "")),
            created_at: fmt_ms(now),
            params,
            steps: STEPS
                .iter()
                .map(|n| StepRecord {
                    name: (*n).into(),
                    status: StepStatus::Pending,
                    attempts: 0,
                    started_at: None,
                    finished_at: None,
                    detail: String::new(),
                })
                .collect(),
            revoked_client_keys: Vec::new(),
            tunnel: None,
            restore: None,
        }
    }

    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Every `start` step finished (done or skipped on purpose).
    pub fn started_fully(&self) -> bool {
        self.steps
            .iter()
            .all(|s| matches!(s.status, StepStatus::Done | StepStatus::Skipped))
    }
}

/// Credentials and tools for a run; never persisted.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub api: Option<ApiClient>,
    /// The `mcp-tunnel` binary, for the connector check of `verify_refused`.
    pub connector_bin: Option<PathBuf>,
}

impl Params {
    pub fn stop_target(&self) -> StopTarget {
        StopTarget {
            pid_files: self.pid_files.clone(),
            compose_file: self.compose_file.clone(),
            compose_project: self.compose_project.clone(),
            helm: self.helm.clone(),
            grace: std::time::Duration::from_secs(self.grace_secs),
        }
    }
}

/// Runs (or resumes) `start` in `dir`. `params` are used only when the incident is new;
/// an existing one continues with its recorded parameters.
pub async fn start(
    dir: &Path,
    params: Params,
    rt: &Runtime,
) -> Result<IncidentState, IncidentError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        IncidentError::State(format!(
            "{}: {}",
            dir.display(),
            mcp_tunnel_pki::tls::io_reason(&e)
        ))
    })?;
    set_private(dir);
    let mut state = match IncidentState::load(dir)? {
        Some(s) => s,
        None => {
            let s = IncidentState::new(params);
            s.save(dir)?;
            s
        }
    };
    for i in 0..state.steps.len() {
        if matches!(
            state.steps[i].status,
            StepStatus::Done | StepStatus::Skipped
        ) {
            continue;
        }
        let name = state.steps[i].name.clone();
        state.steps[i].attempts += 1;
        state.steps[i].started_at = Some(fmt_ms(now_ms()));
        state.save(dir)?;
        let (status, detail) = steps::run_step(&name, dir, &mut state, rt).await;
        let rec = &mut state.steps[i];
        rec.status = status;
        rec.detail = detail.clone();
        rec.finished_at = Some(fmt_ms(now_ms()));
        state.save(dir)?;
        if status == StepStatus::Failed {
            return Err(IncidentError::StepFailed { step: name, detail });
        }
    }
    Ok(state)
}

#[cfg(unix)]
fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn set_private(_dir: &Path) {}
