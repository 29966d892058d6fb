//! `mcp-tunnel rotate token|cert|ca`: credential rotation without downtime.
//!
//! - token: rotate through the API, write the new token where the connector reads it
//!   (its token file is re-read on change; established connections stay), then prove
//!   the edge accepts it with a short-lived canary connector.
//! - cert: re-sign the server certificate with the stored CA; the proxy hot-reloads it.
//! - ca: register a new CA in the tunnel's second slot (clients then trust both), issue
//!   the server certificate from it, wait until the proxy serves it, and only then
//!   archive the old CA, so no handshake ever meets a certificate its client distrusts.
//!
//! The setup output is a directory (SPEC §9 layout) or a Kubernetes Secret.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcp_tunnel_control::client::{ApiClient, Method};
use mcp_tunnel_control::http_client::HttpClient;
use mcp_tunnel_pki::generate::{self, GeneratedCert, KeyKind};
use serde_json::json;

use crate::doctor::api::seg;
use crate::k8s::KubeClient;
use crate::runbook::{StepOutcome, StepResult};
use crate::setup_output::{self as so, SetupOutput, write_atomic};

/// Where the stack's credentials live.
#[derive(Debug, Clone)]
pub enum Store {
    Dir(PathBuf),
    Secret { kube: KubeClient, name: String },
}

impl Store {
    pub async fn read(&self) -> Result<SetupOutput, String> {
        match self {
            Self::Dir(d) => SetupOutput::read_dir(d).map_err(|e| e.to_string()),
            Self::Secret { kube, name } => match kube.get_secret(name).await {
                Ok(Some(data)) => Ok(SetupOutput::from_secret(name, data)),
                Ok(None) => Err(format!("Secret {name} does not exist")),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    /// Writes entries; in a directory each atomically, keys and token 0600, in the
    /// given order (a key before its certificate, so the pair the proxy polls never
    /// names a key that is not there yet).
    pub async fn write(&self, entries: &[(&str, &[u8])]) -> Result<(), String> {
        match self {
            Self::Dir(d) => {
                for (name, bytes) in entries {
                    let mode = if so::SECRET_ENTRIES.contains(name) {
                        0o600
                    } else {
                        0o644
                    };
                    write_atomic(&d.join(name), bytes, mode).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Self::Secret { kube, name } => kube
                .update_secret_data(name, entries)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

fn need(out: &SetupOutput, name: &str) -> Result<String, String> {
    out.text(name)
        .ok_or_else(|| format!("{} has no {name}", out.source))
}

/// Reads the setup output and the entries `names`, or the failed step naming every
/// missing entry at once.
async fn read_entries<const N: usize>(
    store: &Store,
    names: [&str; N],
) -> Result<(SetupOutput, [String; N]), StepResult> {
    let failed = |e: String| StepResult::new("read the setup output", StepOutcome::Failed, e);
    let out = store.read().await.map_err(failed)?;
    let found = names.map(|n| need(&out, n));
    let missing: Vec<String> = found.iter().filter_map(|r| r.clone().err()).collect();
    if !missing.is_empty() {
        return Err(failed(missing.join("; ")));
    }
    Ok((out, found.map(|r| r.unwrap_or_default())))
}

/// Rotates the token and installs it. `canary_bin` (the `mcp-tunnel` binary) proves the
/// edge accepts the new token.
pub async fn token(
    api: &ApiClient,
    store: &Store,
    reason: Option<&str>,
    canary_bin: Option<&Path>,
) -> Vec<StepResult> {
    let mut r = Vec::new();
    let out = match store.read().await {
        Ok(o) => o,
        Err(e) => {
            return vec![StepResult::new(
                "read the setup output",
                StepOutcome::Failed,
                e,
            )];
        }
    };
    let Some(id) = out.tunnel_id() else {
        return vec![StepResult::new(
            "read the setup output",
            StepOutcome::Failed,
            format!("{} has no tunnel-id", out.source),
        )];
    };
    let t = match api
        .call(
            Method::POST,
            &format!("/v1/tunnels/{}/rotate_token", seg(&id)),
            Some(
                json!({"reason": reason.unwrap_or("scheduled rotation (mcp-tunnel rotate token)")}),
            ),
        )
        .await
    {
        Ok(t) => t,
        Err(e) => {
            return vec![StepResult::new(
                "rotate the token",
                StepOutcome::Failed,
                e.to_string(),
            )];
        }
    };
    let Some(token) = t["tunnel_token"].as_str() else {
        return vec![StepResult::new(
            "rotate the token",
            StepOutcome::Failed,
            "no tunnel_token in the response",
        )];
    };
    r.push(StepResult::new(
        "rotate the token",
        StepOutcome::Done,
        format!(
            "new token {} (established connections keep working)",
            t["id"].as_str().unwrap_or("?")
        ),
    ));
    match store
        .write(&[(so::TUNNEL_TOKEN, format!("{token}\n").as_bytes())])
        .await
    {
        Ok(()) => r.push(StepResult::new(
            "install the token",
            StepOutcome::Done,
            format!(
                "{}/{} (the connector re-reads it)",
                out.source,
                so::TUNNEL_TOKEN
            ),
        )),
        Err(e) => {
            r.push(StepResult::new("install the token", StepOutcome::Failed, format!("{e}: new connections fail until the token is installed; `mcp-tunnel tunnels reveal-token {id}` prints it")));
            return r;
        }
    }
    if let (Some(bin), Store::Dir(d)) = (canary_bin, store) {
        r.push(canary(bin, &d.join(so::TUNNEL_TOKEN)).await);
    }
    r
}

/// A one-connection connector with the new token: registered means accepted.
async fn canary(bin: &Path, token: &Path) -> StepResult {
    use tokio::io::AsyncReadExt as _;
    const STEP: &str = "check the new token at the edge";
    let child = tokio::process::Command::new(bin)
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
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return StepResult::new(
                STEP,
                StepOutcome::Skipped,
                format!("cannot run the canary: {e}"),
            );
        }
    };
    let Some(mut out) = child.stdout.take() else {
        return StepResult::new(STEP, StepOutcome::Skipped, "no canary output");
    };
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        if Instant::now() > deadline {
            break StepResult::new(
                STEP,
                StepOutcome::Skipped,
                "the edge did not answer within 20s: unverified",
            );
        }
        match tokio::time::timeout(Duration::from_millis(200), out.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                break StepResult::new(STEP, StepOutcome::Failed, "the canary connector exited");
            }
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
        if text.contains("Registered tunnel connection") {
            break StepResult::new(
                STEP,
                StepOutcome::Done,
                "a connector with the new token registered",
            );
        }
        if text.contains("Tunnel token rejected") || text.contains("Tunnel is archived") {
            break StepResult::new(STEP, StepOutcome::Failed, "the edge refused the new token");
        }
    };
    let _ = child.kill().await;
    result
}

fn issue(
    ca_pem: &str,
    ca_key: &str,
    domain: &str,
    duration: Duration,
) -> Result<GeneratedCert, String> {
    generate::issue_server_cert(
        ca_pem,
        ca_key,
        &[format!("*.{domain}")],
        duration,
        KeyKind::EcdsaP256,
    )
    .map_err(|e| e.to_string())
}

/// Waits until the proxy's `/metrics` reports `not_after` for its certificate.
async fn wait_served(admin: Option<&str>, not_after: i64, timeout: Duration) -> StepResult {
    const STEP: &str = "wait for the proxy to serve it";
    let Some(admin) = admin else {
        // Two reload polls of the proxy's default 5s interval, at most `timeout`.
        let pause = timeout.min(Duration::from_secs(12));
        tokio::time::sleep(pause).await;
        return StepResult::new(
            STEP,
            StepOutcome::Skipped,
            format!(
                "no --proxy-admin: waited {}s for the reload, unverified",
                pause.as_secs()
            ),
        );
    };
    let http = match HttpClient::new(None) {
        Ok(h) => h.with_timeout(Duration::from_secs(5)),
        Err(e) => return StepResult::new(STEP, StepOutcome::Failed, e.to_string()),
    };
    let url = format!("{}/metrics", admin.trim_end_matches('/'));
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(resp) = http.send(Method::GET, &url, &[], None).await {
            let text = String::from_utf8_lossy(&resp.body);
            if let Some(v) = text
                .lines()
                .find_map(|l| l.strip_prefix("mcp_proxy_certificate_not_after_seconds "))
            {
                seen = v.trim().to_owned();
                if v.trim().parse::<f64>().is_ok_and(|x| x as i64 == not_after) {
                    return StepResult::new(
                        STEP,
                        StepOutcome::Done,
                        format!("the proxy serves the new certificate (not_after {not_after})"),
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    StepResult::new(
        STEP,
        StepOutcome::Failed,
        format!("{url} still reports not_after {seen:?}, expected {not_after}"),
    )
}

/// Re-signs the server certificate with the stored CA.
pub async fn cert(
    store: &Store,
    duration: Duration,
    proxy_admin: Option<&str>,
    wait: Duration,
) -> Vec<StepResult> {
    let (out, [ca, key, domain]) =
        match read_entries(store, [so::CA_CERT, so::CA_KEY, so::TUNNEL_DOMAIN]).await {
            Ok(v) => v,
            Err(step) => return vec![step],
        };
    let new = match issue(&ca, &key, &domain, duration) {
        Ok(c) => c,
        Err(e) => {
            return vec![StepResult::new(
                "issue the server certificate",
                StepOutcome::Failed,
                e,
            )];
        }
    };
    let mut r = vec![StepResult::new(
        "issue the server certificate",
        StepOutcome::Done,
        format!(
            "*.{domain}, valid until {}",
            mcp_tunnel_pki::validate::fmt_unix(new.not_after)
        ),
    )];
    if let Err(e) = store
        .write(&[
            (so::TLS_KEY, new.key_pem.expose().as_bytes()),
            (so::TLS_CERT, new.cert_pem.as_bytes()),
        ])
        .await
    {
        r.push(StepResult::new("install it", StepOutcome::Failed, e));
        return r;
    }
    r.push(StepResult::new(
        "install it",
        StepOutcome::Done,
        format!("{}/{{tls.key,tls.crt}}", out.source),
    ));
    r.push(wait_served(proxy_admin, new.not_after, wait).await);
    r
}

/// Replaces the CA with no handshake failing: new CA registered beside the old, server
/// certificate from the new CA, served, then the old CA archived.
pub async fn ca(
    api: &ApiClient,
    store: &Store,
    duration: Duration,
    proxy_admin: Option<&str>,
    wait: Duration,
    propagation: Duration,
) -> Vec<StepResult> {
    let (out, [id, domain, old_ca]) =
        match read_entries(store, [so::TUNNEL_ID, so::TUNNEL_DOMAIN, so::CA_CERT]).await {
            Ok(v) => v,
            Err(step) => return vec![step],
        };
    let old_fp = match mcp_tunnel_pki::validate::validate_ca_pem(
        &format!("{old_ca}\n"),
        crate::timefmt::now_ms() / 1000,
    ) {
        Ok(i) => i.fingerprint,
        Err(e) => {
            return vec![StepResult::new(
                "read the current CA",
                StepOutcome::Failed,
                e.to_string(),
            )];
        }
    };
    let mut r = Vec::new();
    let new_ca = match generate::generate_ca(
        &format!("mcp-tunnel CA for {domain}"),
        generate::DEFAULT_CA_VALIDITY,
    ) {
        Ok(c) => c,
        Err(e) => {
            return vec![StepResult::new(
                "generate a new CA",
                StepOutcome::Failed,
                e.to_string(),
            )];
        }
    };
    let base = format!("/v1/tunnels/{}/certificates", seg(&id));
    match api
        .call(
            Method::POST,
            &base,
            Some(json!({"ca_certificate_pem": new_ca.cert_pem})),
        )
        .await
    {
        Ok(c) => r.push(StepResult::new(
            "register the new CA",
            StepOutcome::Done,
            format!(
                "{} in the second slot; clients now accept both CAs",
                c["id"].as_str().unwrap_or("?")
            ),
        )),
        Err(e) => {
            r.push(StepResult::new(
                "register the new CA",
                StepOutcome::Failed,
                format!(
                    "{e} (both slots full? archive the unused CA first: mcp-tunnel certs archive)"
                ),
            ));
            return r;
        }
    }
    // Clients that cache the tunnel's CA list must see the new CA before the proxy
    // presents a certificate from it.
    if !propagation.is_zero() {
        tokio::time::sleep(propagation).await;
        r.push(StepResult::new(
            "let clients learn the new CA",
            StepOutcome::Done,
            format!("waited {}s", propagation.as_secs()),
        ));
    }
    let leaf = match issue(&new_ca.cert_pem, new_ca.key_pem.expose(), &domain, duration) {
        Ok(c) => c,
        Err(e) => {
            r.push(StepResult::new(
                "issue the server certificate",
                StepOutcome::Failed,
                e,
            ));
            return r;
        }
    };
    // The CA first (a crash here leaves both CAs registered and the old leaf served:
    // still working), then key before certificate.
    let entries: [(&str, &[u8]); 4] = [
        (so::CA_KEY, new_ca.key_pem.expose().as_bytes()),
        (so::CA_CERT, new_ca.cert_pem.as_bytes()),
        (so::TLS_KEY, leaf.key_pem.expose().as_bytes()),
        (so::TLS_CERT, leaf.cert_pem.as_bytes()),
    ];
    if let Err(e) = store.write(&entries).await {
        r.push(StepResult::new(
            "install the new CA and certificate",
            StepOutcome::Failed,
            e,
        ));
        return r;
    }
    r.push(StepResult::new(
        "install the new CA and certificate",
        StepOutcome::Done,
        out.source.clone(),
    ));
    let served = wait_served(proxy_admin, leaf.not_after, wait).await;
    let ok = served.outcome == StepOutcome::Done || served.outcome == StepOutcome::Skipped;
    r.push(served);
    if !ok {
        r.push(StepResult::new(
            "archive the old CA",
            StepOutcome::Skipped,
            "kept: the proxy does not serve the new certificate yet",
        ));
        return r;
    }
    let page = match api
        .call(Method::GET, &format!("{base}?limit=100"), None)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            r.push(StepResult::new(
                "archive the old CA",
                StepOutcome::Failed,
                e.to_string(),
            ));
            return r;
        }
    };
    let old = page["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["fingerprint"] == old_fp.as_str() && c["archived_at"].is_null());
    match old.and_then(|c| c["id"].as_str()) {
        None => r.push(StepResult::new(
            "archive the old CA",
            StepOutcome::AlreadyDone,
            "not registered (any more)",
        )),
        Some(cid) => match api
            .call(Method::POST, &format!("{base}/{}/archive", seg(cid)), None)
            .await
        {
            Ok(_) => r.push(StepResult::new(
                "archive the old CA",
                StepOutcome::Done,
                format!("{cid} ({})", &old_fp[..16]),
            )),
            Err(e) => r.push(StepResult::new(
                "archive the old CA",
                StepOutcome::Failed,
                e.to_string(),
            )),
        },
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_entries_are_named_together_and_nothing_is_issued() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(so::TUNNEL_DOMAIN),
            "abcd1234.tunnels.test\n",
        )
        .unwrap();
        let steps = cert(
            &Store::Dir(dir.path().to_owned()),
            Duration::from_secs(3600),
            None,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(steps[0].outcome, StepOutcome::Failed);
        let detail = &steps[0].detail;
        assert!(
            detail.contains(&format!("has no {}", so::CA_CERT))
                && detail.contains(&format!("has no {}", so::CA_KEY))
                && !detail.contains(so::TUNNEL_DOMAIN),
            "{detail}"
        );
        assert!(!dir.path().join(so::TLS_CERT).exists());
    }
}
