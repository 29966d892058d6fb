//! `incident restore`: a fresh tunnel with new credentials (CA, server certificate,
//! token) written in the setup output layout (SPEC §9) to a new directory. The new
//! tunnel's id is recorded before anything else, so an interrupted restore resumes with
//! the same tunnel instead of creating a second one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_tunnel_control::client::{ApiClient, Method};
use mcp_tunnel_pki::generate::{self, KeyKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{IncidentError, IncidentState, StepStatus};
use crate::doctor::api::seg;
use crate::setup_output::{self as so, SetupOutput, write_atomic};
use crate::timefmt::{fmt_ms, now_ms};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// New setup output directory (must not hold another tunnel's output).
    pub output: PathBuf,
    pub display_name: Option<String>,
    pub cert_duration: Duration,
    /// Restore even though `incident start` has not finished.
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub tunnel_id: String,
    pub domain: String,
    pub output: PathBuf,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub ca_fingerprint: Option<String>,
}

fn err(s: impl Into<String>) -> IncidentError {
    IncidentError::State(s.into())
}

pub async fn restore(
    dir: &Path,
    o: &RestoreOptions,
    api: &ApiClient,
) -> Result<RestoreRecord, IncidentError> {
    let mut st = IncidentState::load(dir)?.ok_or_else(|| {
        err(format!(
            "no incident in {} (run `incident start` first)",
            dir.display()
        ))
    })?;
    if !st.started_fully() && !o.force {
        let pending: Vec<&str> = st
            .steps
            .iter()
            .filter(|s| !matches!(s.status, StepStatus::Done | StepStatus::Skipped))
            .map(|s| s.name.as_str())
            .collect();
        return Err(err(format!(
            "incident start has not finished (pending: {}): finish it, review the evidence, then restore (or pass --force)",
            pending.join(", ")
        )));
    }
    if let Some(r) = &st.restore
        && r.output != o.output
    {
        return Err(err(format!(
            "this incident is restoring into {}; pass that --output",
            r.output.display()
        )));
    }
    std::fs::create_dir_all(&o.output).map_err(|e| err(format!("{}: {e}", o.output.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&o.output, std::fs::Permissions::from_mode(0o700));
    }
    let existing = SetupOutput::read_dir(&o.output).map_err(|e| err(e.to_string()))?;
    if st.restore.is_none() && existing.tunnel_id().is_some() {
        return Err(err(format!(
            "{} already holds the output of tunnel {}: choose an empty directory",
            o.output.display(),
            existing.tunnel_id().unwrap_or_default()
        )));
    }
    // 1. The tunnel, recorded at once.
    let mut rec = match st.restore.clone() {
        Some(r) => r,
        None => {
            let name = o
                .display_name
                .clone()
                .unwrap_or_else(|| format!("restored after {}", st.id));
            let t = api
                .call(
                    Method::POST,
                    "/v1/tunnels",
                    Some(json!({"display_name": name})),
                )
                .await
                .map_err(|e| err(format!("create tunnel: {e}")))?;
            let r = RestoreRecord {
                tunnel_id: t["id"].as_str().unwrap_or_default().to_owned(),
                domain: t["domain"].as_str().unwrap_or_default().to_owned(),
                output: o.output.clone(),
                started_at: fmt_ms(now_ms()),
                completed_at: None,
                ca_fingerprint: None,
            };
            st.restore = Some(r.clone());
            st.save(dir)?;
            r
        }
    };
    let out = &o.output;
    let write = |name: &str, body: &str, mode: u32| {
        write_atomic(&out.join(name), body.as_bytes(), mode).map_err(|e| err(e.to_string()))
    };
    write(so::TUNNEL_ID, &format!("{}\n", rec.tunnel_id), 0o644)?;
    write(so::TUNNEL_DOMAIN, &format!("{}\n", rec.domain), 0o644)?;
    // 2. A new CA (never the compromised one), unless this restore already made it.
    let current = SetupOutput::read_dir(out).map_err(|e| err(e.to_string()))?;
    let (ca_pem, ca_key) = match (current.text(so::CA_CERT), current.entries.get(so::CA_KEY)) {
        (Some(c), Some(k)) => (c + "\n", String::from_utf8_lossy(&k.bytes).into_owned()),
        _ => {
            let ca = generate::generate_ca(
                &format!("mcp-tunnel CA for {}", rec.domain),
                generate::DEFAULT_CA_VALIDITY,
            )
            .map_err(|e| err(e.to_string()))?;
            write(so::CA_KEY, ca.key_pem.expose(), 0o600)?;
            write(so::CA_CERT, &ca.cert_pem, 0o644)?;
            (ca.cert_pem.clone(), ca.key_pem.expose().to_owned())
        }
    };
    let ca_info = mcp_tunnel_pki::validate::validate_ca_pem(&ca_pem, now_ms() / 1000)
        .map_err(|e| err(e.to_string()))?;
    // 3. Registered with the new tunnel (once).
    let certs = api
        .call(
            Method::GET,
            &format!("/v1/tunnels/{}/certificates?limit=100", seg(&rec.tunnel_id)),
            None,
        )
        .await
        .map_err(|e| err(format!("list certificates: {e}")))?;
    let registered =
        certs["data"].as_array().into_iter().flatten().any(|c| {
            c["fingerprint"] == ca_info.fingerprint.as_str() && c["archived_at"].is_null()
        });
    if !registered {
        api.call(
            Method::POST,
            &format!("/v1/tunnels/{}/certificates", seg(&rec.tunnel_id)),
            Some(json!({"ca_certificate_pem": ca_pem})),
        )
        .await
        .map_err(|e| err(format!("register CA: {e}")))?;
    }
    rec.ca_fingerprint = Some(ca_info.fingerprint.clone());
    // 4. A server certificate for every route of the new domain.
    if !current.entries.contains_key(so::TLS_CERT)
        || !current.entries.contains_key(so::TLS_KEY)
        || current.text(so::CA_CERT).is_none()
    {
        let cert = generate::issue_server_cert(
            &ca_pem,
            &ca_key,
            &[format!("*.{}", rec.domain)],
            o.cert_duration,
            KeyKind::EcdsaP256,
        )
        .map_err(|e| err(e.to_string()))?;
        write(so::TLS_KEY, cert.key_pem.expose(), 0o600)?;
        write(so::TLS_CERT, &cert.cert_pem, 0o644)?;
    }
    // 5. The token.
    let token = api
        .call(
            Method::POST,
            &format!("/v1/tunnels/{}/reveal_token", seg(&rec.tunnel_id)),
            None,
        )
        .await
        .map_err(|e| err(format!("reveal token: {e}")))?;
    let token = token["tunnel_token"]
        .as_str()
        .ok_or_else(|| err("reveal token: no tunnel_token in the response"))?;
    write(so::TUNNEL_TOKEN, &format!("{token}\n"), 0o600)?;
    rec.completed_at = Some(fmt_ms(now_ms()));
    st.restore = Some(rec.clone());
    st.save(dir)?;
    Ok(rec)
}
