//! Checks that need the control plane: SSO enforcement for the organization, the
//! tunnel's state, whether the local CA is the registered one, and the token's age from
//! the audit log.

use mcp_tunnel_control::client::{ApiClient, ClientError, Method};
use serde_json::Value;

use crate::finding::{Finding, Severity};

/// Where doctor reads the organization's sign-in settings (`sso_required`, bool).
pub const ORGANIZATION_PATH: &str = "/v1/admin/organization";

pub async fn check_sso(api: &ApiClient) -> Finding {
    const ID: &str = "org.sso";
    const FIX: &str = "configure your identity provider (`mcp-tunnel admin organization sso --issuer URL --client-id ID \
         --client-secret-file F`, or the console's Settings page), then `mcp-tunnel admin organization set \
         --sso-required true`: admins who can change tunnels, federation rules and service accounts then sign in \
         through the provider and its session controls, and password sign-in is off";
    match api.call(Method::GET, ORGANIZATION_PATH, None).await {
        Ok(org) => match sso_flag(&org) {
            Some(true) => Finding::pass(
                ID,
                Severity::Medium,
                "the organization enforces SSO for console sign-in",
            ),
            Some(false) => Finding::fail(
                ID,
                Severity::Medium,
                "the organization does not enforce SSO: a bootstrap password or API key is enough to manage tunnels",
                FIX,
            ),
            None => Finding::unknown(
                ID,
                Severity::Medium,
                format!("GET {ORGANIZATION_PATH} has no sso_required field: cannot verify"),
                FIX,
            ),
        },
        Err(ClientError::Api { status: 404, .. })
        | Err(ClientError::Unexpected { status: 404, .. }) => Finding::unknown(
            ID,
            Severity::Medium,
            format!(
                "this API has no organization SSO setting (GET {ORGANIZATION_PATH} → 404): cannot verify, so do not assume SSO is enforced"
            ),
            FIX,
        ),
        Err(ClientError::Api { status: 403, .. }) => Finding::unknown(
            ID,
            Severity::Medium,
            "the API key lacks org:admin, so the organization's settings cannot be read",
            "run doctor with an org:admin key to check SSO",
        ),
        Err(e) => Finding::unknown(
            ID,
            Severity::Medium,
            format!("GET {ORGANIZATION_PATH}: {e}"),
            FIX,
        ),
    }
}

fn sso_flag(org: &Value) -> Option<bool> {
    org.get("sso_required").and_then(Value::as_bool)
}

/// `tunnel.state`: the tunnel the stack serves must be active.
pub async fn check_tunnel(api: &ApiClient, tunnel_id: &str) -> Finding {
    const ID: &str = "tunnel.state";
    match api
        .call(
            Method::GET,
            &format!("/v1/tunnels/{}", seg(tunnel_id)),
            None,
        )
        .await
    {
        Ok(t) => {
            let status = t["status"].as_str().unwrap_or("");
            let conns = t["connections"].as_u64().unwrap_or(0);
            match status {
                "archived" => Finding::fail(
                    ID,
                    Severity::High,
                    format!(
                        "tunnel {tunnel_id} is archived: its token is refused and the stack serves nothing"
                    ),
                    "tear the stack down (mcp-tunnel teardown) or provision a new tunnel (mcp-tunnel incident restore / setup init)",
                ),
                "needs_certificate" => Finding::fail(
                    ID,
                    Severity::High,
                    format!(
                        "tunnel {tunnel_id} has no active CA certificate: the edge refuses client sessions"
                    ),
                    "register the CA: `mcp-tunnel certs add --tunnel-id … --file ca.crt` or re-run setup init",
                ),
                _ => Finding::pass(
                    ID,
                    Severity::High,
                    format!("tunnel {tunnel_id} is {status} with {conns} connector connection(s)"),
                ),
            }
        }
        Err(e) => Finding::unknown(
            ID,
            Severity::High,
            format!("GET /v1/tunnels/{tunnel_id}: {e}"),
            "check --api-url and the API key",
        ),
    }
}

/// `cert.registered`: the local `ca.crt` must be one of the tunnel's active CAs.
pub async fn check_registered_ca(
    api: &ApiClient,
    tunnel_id: &str,
    ca_fingerprint: &str,
) -> Finding {
    const ID: &str = "cert.registered";
    let path = format!("/v1/tunnels/{}/certificates?limit=100", seg(tunnel_id));
    match api.call(Method::GET, &path, None).await {
        Ok(page) => {
            let active: Vec<&str> = page["data"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|c| c["archived_at"].is_null())
                        .filter_map(|c| c["fingerprint"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            if active.contains(&ca_fingerprint) {
                Finding::pass(
                    ID,
                    Severity::High,
                    format!(
                        "ca.crt ({}) is registered for {tunnel_id}",
                        &ca_fingerprint[..16.min(ca_fingerprint.len())]
                    ),
                )
            } else {
                Finding::fail(
                    ID,
                    Severity::High,
                    format!(
                        "ca.crt ({ca_fingerprint}) is not among the tunnel's active CAs [{}]: clients refuse the proxy's certificate",
                        active.join(", ")
                    ),
                    "register it (mcp-tunnel certs add) or re-issue the server certificate from a registered CA",
                )
            }
        }
        Err(e) => Finding::unknown(
            ID,
            Severity::High,
            format!("GET {path}: {e}"),
            "check --api-url and the API key",
        ),
    }
}

/// The newest token-changing audit event of the tunnel: `(action, time, time_ms)`.
/// `None` when the audit log is not readable (no org:admin) or has no such event.
pub async fn token_event(
    api: &ApiClient,
    tunnel_id: &str,
) -> Result<Option<(String, String, i64)>, ClientError> {
    let mut path = "/v1/audit_events?limit=1000".to_owned();
    // Newest first: the first match is the latest rotation (or the creation).
    for _ in 0..100 {
        let page = api.call(Method::GET, &path, None).await?;
        for ev in page["data"].as_array().into_iter().flatten() {
            let action = ev["action"].as_str().unwrap_or("");
            if ev["target"] == tunnel_id
                && matches!(action, "tunnel.rotate_token" | "tunnel.create")
            {
                return Ok(Some((
                    action.to_owned(),
                    ev["time"].as_str().unwrap_or("").to_owned(),
                    ev["time_ms"].as_i64().unwrap_or(0),
                )));
            }
        }
        match page["next_page"].as_str() {
            Some(c) => path = format!("/v1/audit_events?limit=1000&page={c}"),
            None => break,
        }
    }
    Ok(None)
}

/// An id as a path segment: nothing that could change the path.
pub fn seg(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}
