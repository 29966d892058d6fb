//! Is OAuth required by each route's MCP server? An unauthenticated MCP `initialize`
//! must get `401` with `WWW-Authenticate: Bearer … resource_metadata="…"`, and that
//! protected-resource metadata (RFC 9728) must name an authorization server, as the MCP
//! authorization spec requires.

use std::time::Duration;

use http::Method;
use mcp_tunnel_control::http_client::{HttpClient, HttpError};
use serde_json::Value;

use crate::finding::{Finding, Severity};

/// One upstream to probe.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub route: String,
    /// `scheme://host:port`
    pub origin: String,
    /// Whether doctor may send a request to it (loopback, or `--probe-upstreams`).
    pub allowed: bool,
}

const PROTOCOL_VERSION: &str = "2025-06-18";

fn id(route: &str) -> String {
    format!("oauth.{route}")
}

const FIX_NO_AUTH: &str = "configure the MCP server to require OAuth per the MCP authorization spec \
     (PyPI mcp: MCPServer(token_verifier=…, auth=AuthSettings(issuer_url=…, resource_server_url=…)); \
     it then answers 401 with WWW-Authenticate and serves /.well-known/oauth-protected-resource)";

/// Probes `target` at `path` (the MCP endpoint, e.g. `/mcp`).
pub async fn probe(http: &HttpClient, target: &ProbeTarget, path: &str) -> Finding {
    let fid = id(&target.route);
    if !target.allowed {
        return Finding::unknown(
            fid,
            Severity::High,
            format!(
                "route {} -> {} was not probed: it is not on loopback",
                target.route, target.origin
            ),
            "re-run with --probe-upstreams from a host that can reach the MCP server (doctor sends one unauthenticated initialize)",
        );
    }
    let url = format!("{}{path}", target.origin);
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                   "clientInfo": {"name": "mcp-tunnel-doctor", "version": env!("CARGO_PKG_VERSION")}}
    });
    let headers = [
        ("accept", "application/json, text/event-stream".to_owned()),
        ("mcp-protocol-version", PROTOCOL_VERSION.to_owned()),
    ];
    let resp = match http
        .send(
            Method::POST,
            &url,
            &headers,
            Some(body.to_string().into_bytes()),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Finding::unknown(
                fid,
                Severity::High,
                format!("POST {url}: {e}"),
                "check that the MCP server is running and reachable from here",
            );
        }
    };
    let status = resp.status.as_u16();
    if resp.status.is_success() {
        // Close the session the server just opened for us.
        if let Some(sid) = resp
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            let _ = http
                .send(
                    Method::DELETE,
                    &url,
                    &[("mcp-session-id", sid.to_owned())],
                    None,
                )
                .await;
        }
        return Finding::fail(
            fid,
            Severity::High,
            format!(
                "route {}: an unauthenticated initialize to {url} was answered {status}: the MCP server requires no credentials",
                target.route
            ),
            FIX_NO_AUTH,
        );
    }
    if status == 404 || status == 405 {
        return Finding::unknown(
            fid,
            Severity::High,
            format!("POST {url} answered {status}: no MCP endpoint at {path}"),
            "pass --mcp-path with the server's MCP endpoint path",
        );
    }
    if status != 401 {
        return Finding::unknown(
            fid,
            Severity::High,
            format!("POST {url} answered {status}, expected 401 for a request without credentials"),
            FIX_NO_AUTH,
        );
    }
    let www = resp
        .headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.trim_start().to_ascii_lowercase().starts_with("bearer"))
        .map(str::to_owned);
    let Some(www) = www else {
        return Finding::fail(
            fid,
            Severity::Medium,
            format!(
                "POST {url} answered 401 without a WWW-Authenticate: Bearer challenge: MCP clients cannot discover how to authorize"
            ),
            FIX_NO_AUTH,
        );
    };
    let candidates = metadata_urls(&www, &target.origin, path);
    let mut tried = Vec::new();
    for meta_url in &candidates {
        match fetch_metadata(http, meta_url, &target.origin).await {
            Ok(meta) => {
                return match validate_metadata(&meta) {
                    Ok(servers) => Finding::pass(
                        fid,
                        Severity::High,
                        format!(
                            "route {}: 401 with {www:?}; protected-resource metadata at {meta_url} names resource {} and authorization server(s) {servers}",
                            target.route, meta["resource"]
                        ),
                    ),
                    Err(why) => Finding::fail(
                        fid,
                        Severity::Medium,
                        format!(
                            "route {}: 401, but the metadata at {meta_url} {why}",
                            target.route
                        ),
                        FIX_NO_AUTH,
                    ),
                };
            }
            Err(e) => tried.push(format!("{meta_url}: {e}")),
        }
    }
    Finding::fail(
        fid,
        Severity::Medium,
        format!(
            "route {}: 401 with {www:?}, but no protected-resource metadata was found ({})",
            target.route,
            tried.join("; ")
        ),
        "serve RFC 9728 metadata and name it in WWW-Authenticate's resource_metadata (the SDK does when AuthSettings.resource_server_url is set)",
    )
}

/// `resource_metadata` from the challenge, then the well-known locations the MCP spec
/// has clients fall back to.
pub fn metadata_urls(www_authenticate: &str, origin: &str, path: &str) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(u) = auth_param(www_authenticate, "resource_metadata") {
        v.push(u);
    }
    let path = path.trim_end_matches('/');
    if !path.is_empty() {
        v.push(format!(
            "{origin}/.well-known/oauth-protected-resource{path}"
        ));
    }
    v.push(format!("{origin}/.well-known/oauth-protected-resource"));
    v.dedup();
    v
}

/// A parameter of a `WWW-Authenticate` challenge (quoted or token form).
pub fn auth_param(header: &str, name: &str) -> Option<String> {
    let lower = header.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(name) {
        let start = from + pos;
        from = start + name.len();
        let before_ok = start == 0 || matches!(lower.as_bytes()[start - 1], b' ' | b',' | b'\t');
        let rest = header[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let rest = rest[1..].trim_start();
        if let Some(q) = rest.strip_prefix('"') {
            return q.find('"').map(|end| q[..end].to_owned());
        }
        let end = rest.find([',', ' ']).unwrap_or(rest.len());
        return Some(rest[..end].to_owned());
    }
    None
}

/// GETs the metadata. A URL naming the public route host is often unreachable from
/// inside the network; then the same path is tried on the upstream itself.
async fn fetch_metadata(http: &HttpClient, url: &str, origin: &str) -> Result<Value, String> {
    let get = |u: String| async move {
        let r = http
            .send(
                Method::GET,
                &u,
                &[("accept", "application/json".to_owned())],
                None,
            )
            .await?;
        Ok::<_, HttpError>(r)
    };
    let resp = match get(url.to_owned()).await {
        Ok(r) => r,
        Err(e @ (HttpError::Connect { .. } | HttpError::Tls { .. } | HttpError::Timeout(_))) => {
            let path = url
                .splitn(4, '/')
                .nth(3)
                .map(|p| format!("/{p}"))
                .unwrap_or_default();
            match get(format!("{origin}{path}")).await {
                Ok(r) => r,
                Err(_) => return Err(e.to_string()),
            }
        }
        Err(e) => return Err(e.to_string()),
    };
    if !resp.status.is_success() {
        return Err(format!("HTTP {}", resp.status.as_u16()));
    }
    serde_json::from_slice(&resp.body).map_err(|e| format!("not JSON ({e})"))
}

fn validate_metadata(meta: &Value) -> Result<String, String> {
    if !meta.get("resource").is_some_and(Value::is_string) {
        return Err("has no \"resource\"".into());
    }
    let servers: Vec<&str> = meta
        .get("authorization_servers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if servers.is_empty() {
        return Err("names no authorization_servers".into());
    }
    Ok(servers.join(", "))
}

/// A client for the probes: the upstream CA bundle (if any) plus system roots, short
/// timeout.
pub fn client(ca_file: Option<&std::path::Path>) -> Result<HttpClient, HttpError> {
    Ok(HttpClient::new(ca_file)?.with_timeout(Duration::from_secs(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_params() {
        let h = r#"Bearer error="invalid_token", error_description="Authentication required", resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp""#;
        assert_eq!(
            auth_param(h, "resource_metadata").as_deref(),
            Some("http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(auth_param(h, "error").as_deref(), Some("invalid_token"));
        assert_eq!(
            auth_param("Bearer realm=x, scope=y", "scope").as_deref(),
            Some("y")
        );
        assert_eq!(auth_param("Bearer", "resource_metadata"), None);
        let urls = metadata_urls("Bearer", "http://h:1", "/mcp");
        assert_eq!(
            urls,
            [
                "http://h:1/.well-known/oauth-protected-resource/mcp",
                "http://h:1/.well-known/oauth-protected-resource"
            ]
        );
    }
}
