//! The steps of `incident start`. Each returns its status and a detail line for the
//! record; each is safe to run again.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mcp_tunnel_control::client::{ApiClient, ClientError, Method};
use mcp_tunnel_proxy::ProxyConfig;
use tokio::io::AsyncReadExt as _;

use super::evidence::{self, LogSource, TimelineEntry};
use super::{IncidentState, Runtime, StepStatus};
use crate::doctor::api::seg;
use crate::runbook::StepOutcome;
use crate::setup_output::{self, SetupOutput, write_atomic};
use crate::timefmt::parse_rfc3339_ms;
use crate::{stop, teardown};

pub(super) async fn run_step(
    name: &str,
    dir: &Path,
    st: &mut IncidentState,
    rt: &Runtime,
) -> (StepStatus, String) {
    match name {
        "stop" => stop_stack(dir, st).await,
        "revoke_client_access" => revoke(st, rt).await,
        "archive_tunnel" => archive(st, rt).await,
        "verify_refused" => verify(st, rt).await,
        "checklist" => checklist(dir, st),
        "evidence" => collect(dir, st, rt).await,
        other => (
            StepStatus::Failed,
            format!("unknown step {other:?} in the state file"),
        ),
    }
}

fn tunnel_id(st: &IncidentState) -> Option<String> {
    st.params.tunnel_id.clone().or_else(|| {
        st.params
            .data_dir
            .as_ref()
            .and_then(|d| SetupOutput::read_dir(d).ok())
            .and_then(|o| o.tunnel_id())
    })
}

fn need_api(rt: &Runtime) -> Result<&ApiClient, (StepStatus, String)> {
    rt.api.as_ref().ok_or((
        StepStatus::Failed,
        "no API: pass --api-url with an org:admin key in MCP_TUNNEL_API_KEY".into(),
    ))
}

async fn stop_stack(dir: &Path, st: &mut IncidentState) -> (StepStatus, String) {
    let target = st.params.stop_target();
    if target.is_empty() {
        return (StepStatus::Skipped, "nothing to stop was named (--pid-file, --compose, --helm-release): stop the deployment yourself".into());
    }
    let mut notes = Vec::new();
    // Compose deletes container logs with the containers: save them first.
    if let Some(file) = &target.compose_file {
        let raw = dir.join("raw");
        let _ = std::fs::create_dir_all(&raw);
        let dest = raw.join("compose.log");
        let r = stop::compose_logs(file, target.compose_project.as_deref(), &dest).await;
        notes.push(format!("{}: {}", r.step, r.detail));
        if r.outcome == StepOutcome::Done && !st.params.logs.iter().any(|l| l.name == "compose") {
            st.params.logs.push(LogSource {
                name: "compose".into(),
                path: dest,
            });
        }
    }
    let results = stop::stop(&target).await;
    let failed = results.iter().any(|r| r.failed());
    notes.extend(
        results
            .iter()
            .map(|r| format!("{} ({}): {}", r.step, r.outcome.as_str(), r.detail)),
    );
    (
        if failed {
            StepStatus::Failed
        } else {
            StepStatus::Done
        },
        notes.join("; "),
    )
}

async fn revoke(st: &mut IncidentState, rt: &Runtime) -> (StepStatus, String) {
    if !st.params.revoke_client_keys {
        return (
            StepStatus::Skipped,
            "--keep-client-keys: client access keys were left active".into(),
        );
    }
    let api = match need_api(rt) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let Some(id) = tunnel_id(st) else {
        return (
            StepStatus::Failed,
            "no tunnel id: pass --tunnel-id or --data-dir".into(),
        );
    };
    let tunnel = match api
        .call(Method::GET, &format!("/v1/tunnels/{}", seg(&id)), None)
        .await
    {
        Ok(t) => t,
        Err(e) => return (StepStatus::Failed, format!("GET tunnel {id}: {e}")),
    };
    let ws = tunnel["workspace_id"].as_str().unwrap_or("").to_owned();
    st.tunnel = Some(tunnel);
    let keys = match api.call(Method::GET, "/v1/admin/client_keys", None).await {
        Ok(k) => k,
        Err(e) => {
            return (
                StepStatus::Failed,
                format!("list client access keys (needs org:admin): {e}"),
            );
        }
    };
    let mut revoked = Vec::new();
    for k in keys["data"].as_array().into_iter().flatten() {
        let kws = k["workspace_id"].as_str();
        // Keys of the tunnel's workspace, and organization-wide keys, can reach it.
        if !k["revoked_at"].is_null() || !(kws.is_none() || kws == Some(ws.as_str())) {
            continue;
        }
        let Some(kid) = k["id"].as_str() else {
            continue;
        };
        match api
            .call(
                Method::POST,
                &format!("/v1/admin/client_keys/{}/revoke", seg(kid)),
                None,
            )
            .await
        {
            Ok(_) => revoked.push(kid.to_owned()),
            Err(e) => {
                return (
                    StepStatus::Failed,
                    format!("revoke {kid}: {e} (revoked so far: {})", revoked.join(", ")),
                );
            }
        }
    }
    st.revoked_client_keys.extend(revoked.iter().cloned());
    st.revoked_client_keys.dedup();
    (
        StepStatus::Done,
        format!(
            "revoked {} client access key(s) of workspace {ws} and the organization: [{}]",
            revoked.len(),
            revoked.join(", ")
        ),
    )
}

async fn archive(st: &mut IncidentState, rt: &Runtime) -> (StepStatus, String) {
    let id = tunnel_id(st);
    if id.is_none() {
        return (
            StepStatus::Failed,
            "no tunnel id: pass --tunnel-id or --data-dir".into(),
        );
    }
    let r = teardown::archive(rt.api.as_ref(), id.as_deref()).await;
    match r.outcome {
        StepOutcome::Done | StepOutcome::AlreadyDone => (StepStatus::Done, r.detail),
        _ => (StepStatus::Failed, r.detail),
    }
}

async fn verify(st: &mut IncidentState, rt: &Runtime) -> (StepStatus, String) {
    let api = match need_api(rt) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let Some(id) = tunnel_id(st) else {
        return (StepStatus::Failed, "no tunnel id".into());
    };
    let path = format!("/v1/tunnels/{}", seg(&id));
    let mut notes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match api.call(Method::GET, &path, None).await {
            Ok(t) if t["status"] == "archived" && t["connections"].as_u64() == Some(0) => {
                notes.push(format!("API: {id} archived with 0 connector connections"));
                st.tunnel = Some(t);
                break;
            }
            Ok(t) if Instant::now() > deadline => {
                return (
                    StepStatus::Failed,
                    format!(
                        "API: {id} is {} with {} connection(s)",
                        t["status"], t["connections"]
                    ),
                );
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => return (StepStatus::Failed, format!("GET {path}: {e}")),
        }
    }
    match api
        .call(Method::POST, &format!("{path}/reveal_token"), None)
        .await
    {
        Err(ClientError::Api { status: 400, .. }) => {
            notes.push("API: the token can no longer be revealed (wiped)".into())
        }
        Ok(_) => {
            return (
                StepStatus::Failed,
                "API still reveals the tunnel token".into(),
            );
        }
        Err(e) => notes.push(format!("API: reveal_token: {e}")),
    }
    let token = st
        .params
        .data_dir
        .as_ref()
        .map(|d| d.join(setup_output::TUNNEL_TOKEN))
        .filter(|p| p.exists());
    match (&rt.connector_bin, token) {
        (Some(bin), Some(token)) => match connector_refused(bin, &token).await {
            Ok(how) => notes.push(format!("edge: {how}")),
            Err(why) => {
                return (
                    StepStatus::Failed,
                    format!("{}; edge: {why}", notes.join("; ")),
                );
            }
        },
        _ => notes.push("edge: not checked (no tunnel-token file in --data-dir)".into()),
    }
    (StepStatus::Done, notes.join("; "))
}

/// Runs a connector with the old token: the edge must refuse it.
async fn connector_refused(bin: &Path, token: &Path) -> Result<String, String> {
    let mut child = tokio::process::Command::new(bin)
        .args([
            "connector",
            "run",
            "--url",
            "http://127.0.0.1:9",
            "--ha-connections",
            "1",
            "--token-file",
        ])
        .arg(token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run the connector check: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), out.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(_)) => break,
            Err(_) => {}
        }
        if text.contains("Registered tunnel connection") {
            let _ = child.kill().await;
            return Err("a connector with the old token was ACCEPTED".into());
        }
        if text.contains("Tunnel is archived") {
            let _ = child.kill().await;
            return Ok("a connector with the old token was refused: tunnel archived".into());
        }
        if text.contains("Tunnel token rejected") {
            let _ = child.kill().await;
            return Ok("a connector with the old token was refused: token rejected".into());
        }
    }
    let _ = child.kill().await;
    Ok("the connector check could not reach the edge within 20s: refusal at the edge is unverified".into())
}

fn checklist(dir: &Path, st: &IncidentState) -> (StepStatus, String) {
    let text = checklist_text(st);
    match write_atomic(&dir.join("checklist.md"), text.as_bytes(), 0o600) {
        Ok(()) => (
            StepStatus::Done,
            format!("wrote {}", dir.join("checklist.md").display()),
        ),
        Err(e) => (StepStatus::Failed, e.to_string()),
    }
}

/// The downstream-credential rotation checklist.
pub fn checklist_text(st: &IncidentState) -> String {
    let domain = st
        .tunnel
        .as_ref()
        .and_then(|t| t["domain"].as_str())
        .unwrap_or("<tunnel domain>");
    let id = tunnel_id(st).unwrap_or_else(|| "<tunnel>".into());
    let mut s = format!(
        "# Incident {}: credentials to rotate\n\nTunnel {id} ({domain}) was archived by this incident; its token, CA registration and domain are dead.\n\n## MCP servers behind the tunnel\n\n",
        st.id
    );
    let routes = st
        .params
        .proxy_config
        .as_ref()
        .and_then(|p| ProxyConfig::load(p, None).ok());
    match routes {
        Some(cfg) => {
            for r in cfg.routes.iter() {
                let host = if r.name.contains('.') { r.name.clone() } else { format!("{}.{domain}", r.name) };
                s.push_str(&format!(
                    "- [ ] `{host}` → `{}`: revoke every OAuth access and refresh token its authorization server issued; rotate any secret the server holds that the tunnel exposed\n",
                    r.upstream
                ));
            }
        }
        None => s.push_str("- [ ] every MCP server that was routed through the tunnel (no proxy config given): revoke the OAuth tokens its authorization server issued\n"),
    }
    s.push_str("\n## The tunnel's own credentials\n\n");
    s.push_str("- [x] tunnel token: invalid (tunnel archived)\n");
    s.push_str("- [ ] CA key `ca.key` and server key `tls.key`: never reuse; `mcp-tunnel incident restore` generates new ones\n");
    if st.revoked_client_keys.is_empty() {
        s.push_str("- [ ] client access keys: none revoked by this incident; revoke any that may have leaked\n");
    } else {
        s.push_str(&format!("- [x] client access keys revoked: {}\n- [ ] issue new client access keys to legitimate clients only after the review\n", st.revoked_client_keys.join(", ")));
    }
    s.push_str("- [ ] API keys, service accounts and federation rules that appear in unexpected audit events (evidence/audit.jsonl): revoke or archive them\n");
    s.push_str("\n## People and clients\n\n");
    s.push_str(&format!("- [ ] remove the tunnel's MCP server URLs (`*.{domain}`) from Managed Agent sessions and from the mcp_servers block of Messages API requests\n"));
    s.push_str("- [ ] report the suspected compromise to the operator of the tunnel service (Anthropic support for the hosted service)\n");
    s.push_str("- [ ] review evidence/timeline.md (proxy, connector, edge and MCP server logs and audit events of the window) before restoring service\n");
    s
}

async fn collect(dir: &Path, st: &IncidentState, rt: &Runtime) -> (StepStatus, String) {
    // The incident's own steps belong on the timeline too.
    let own: Vec<TimelineEntry> = st
        .steps
        .iter()
        .filter_map(|s| {
            let t = parse_rfc3339_ms(s.finished_at.as_deref()?)?;
            Some(TimelineEntry {
                time_ms: t,
                time: s.finished_at.clone()?,
                source: "incident".into(),
                level: "info".into(),
                summary: format!("{}: {:?} {}", s.name, s.status, s.detail),
            })
        })
        .collect();
    let until = st.params.until_ms.unwrap_or_else(crate::timefmt::now_ms);
    match evidence::collect(
        dir,
        &st.params.logs,
        rt.api.as_ref(),
        st.params.since_ms,
        until,
        &own,
    )
    .await
    {
        Ok(c) => {
            let gaps = if c.gaps.is_empty() {
                String::new()
            } else {
                format!("; not collected: {}", c.gaps.join("; "))
            };
            (
                StepStatus::Done,
                format!(
                    "{} file(s), {} timeline entries in {}{gaps}",
                    c.files.len(),
                    c.timeline_entries,
                    dir.join("evidence").display()
                ),
            )
        }
        Err(e) => (StepStatus::Failed, e),
    }
}
