//! `setup init` (SPEC §9): make the output describe a working tunnel stack, changing only
//! what is missing or stale, so that re-running it is safe at any point:
//!
//! 1. Tunnel: `--tunnel-id`, else the id already stored, else a new tunnel. Never a
//!    second one: the new id is written before anything else can fail.
//! 2. CA: the stored one, unless the output had none or the tunnel id changed; a new CA
//!    is written before it is registered, so a crash never leaves a registered CA whose
//!    key is lost. Registered when the tunnel does not list it; both slots full is an
//!    error asking to revoke one; a revoked (archived) stored CA is never re-registered.
//! 3. Server certificate: kept while it passes the client's rules for this CA and
//!    domain with margin left (the smaller of 720h and half of `--cert-duration`), else
//!    issued anew.
//! 4. Token: fetched when none is stored for this tunnel; rotated only when
//!    `--token-version` differs from the stored version; otherwise left alone (and not
//!    revealed again, which would add an audit event per run).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use mcp_tunnel_control::client::ApiClient;
use mcp_tunnel_pki::generate::KeyKind;
use mcp_tunnel_proto::TunnelToken;
use serde_json::{Value, json};

use crate::auth::Credentials;
use crate::error::SetupError;
use crate::keys;
use crate::material::{self, StoredCa, text};
use crate::output::{Contents, Output};

/// What `init` needs besides the output and credentials.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub api_url: String,
    /// Extra CA (PEM) to trust for the API's certificate.
    pub api_ca_file: Option<PathBuf>,
    pub tunnel_id: Option<String>,
    /// Name of a tunnel created by this run.
    pub display_name: Option<String>,
    pub cert_duration: Duration,
    pub token_version: Option<String>,
    pub key_kind: KeyKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelAction {
    Created,
    /// The id stored in the output.
    Reused,
    /// The id given with `--tunnel-id`/`TUNNEL_ID`.
    Attached,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaAction {
    Generated {
        certificate_id: String,
    },
    /// The stored CA, registered again because the tunnel did not list it.
    Registered {
        certificate_id: String,
    },
    Kept {
        certificate_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertAction {
    Issued { not_after: i64, why: String },
    Kept { not_after: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAction {
    Fetched,
    Rotated {
        from: String,
        to: String,
    },
    Kept,
    /// A version given for the first time over an existing token: recorded, not rotated.
    VersionRecorded,
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub output: String,
    pub tunnel_id: String,
    pub domain: String,
    pub tunnel: TunnelAction,
    pub ca: CaAction,
    pub server_cert: CertAction,
    pub token: TokenAction,
    /// Keys whose stored value changed.
    pub changed: Vec<String>,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tunnel = match self.tunnel {
            TunnelAction::Created => "created",
            TunnelAction::Reused => "reused (stored in the output)",
            TunnelAction::Attached => "attached (TUNNEL_ID)",
        };
        writeln!(f, "tunnel:             {} {tunnel}", self.tunnel_id)?;
        writeln!(f, "tunnel domain:      {}", self.domain)?;
        let ca = match &self.ca {
            CaAction::Generated { certificate_id } => {
                format!("generated (ECDSA P-256, 5 years) and registered as {certificate_id}")
            }
            CaAction::Registered { certificate_id } => {
                format!("stored CA registered as {certificate_id}")
            }
            CaAction::Kept { certificate_id } => format!("kept ({certificate_id})"),
        };
        writeln!(f, "CA:                 {ca}")?;
        let cert = match &self.server_cert {
            CertAction::Issued { not_after, why } => format!(
                "issued, valid until {} ({why})",
                mcp_tunnel_pki::validate::fmt_unix(*not_after)
            ),
            CertAction::Kept { not_after } => format!(
                "kept, valid until {}",
                mcp_tunnel_pki::validate::fmt_unix(*not_after)
            ),
        };
        writeln!(f, "server certificate: {cert}")?;
        let token = match &self.token {
            TokenAction::Fetched => "fetched".to_owned(),
            TokenAction::Rotated { from, to } => {
                format!("rotated (token version {from} -> {to})")
            }
            TokenAction::Kept => "kept".to_owned(),
            TokenAction::VersionRecorded => {
                "kept; token version recorded (no earlier version: not rotated)".to_owned()
            }
        };
        writeln!(f, "tunnel token:       {token}")?;
        if self.changed.is_empty() {
            write!(f, "{}: unchanged", self.output)
        } else {
            write!(f, "{}: wrote {}", self.output, self.changed.join(", "))
        }
    }
}

/// A tunnel as the API returns it.
struct Tunnel {
    id: String,
    domain: String,
}

fn tunnel_from(step: &'static str, v: &Value) -> Result<Tunnel, SetupError> {
    let field = |name: &str| {
        v[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SetupError::ApiShape {
                step,
                reason: format!("the tunnel has no {name}"),
            })
    };
    let tunnel = Tunnel {
        id: field("id")?,
        domain: field("domain")?,
    };
    if !v["archived_at"].is_null() || v["status"] == "archived" {
        return Err(SetupError::TunnelArchived {
            tunnel_id: tunnel.id,
        });
    }
    Ok(tunnel)
}

async fn find_tunnel(
    api: &ApiClient,
    given: Option<&str>,
    stored: Option<&str>,
    display_name: Option<&str>,
) -> Result<(Tunnel, TunnelAction), SetupError> {
    let get = |id: String| async move {
        let step = "get tunnel";
        let v = api
            .call(Method::GET, &format!("/v1/tunnels/{id}"), None)
            .await
            .map_err(SetupError::api(step))?;
        tunnel_from(step, &v)
    };
    match (given, stored) {
        (Some(g), s) => {
            let action = if s == Some(g) {
                TunnelAction::Reused
            } else {
                TunnelAction::Attached
            };
            Ok((get(g.to_owned()).await?, action))
        }
        (None, Some(s)) => Ok((get(s.to_owned()).await?, TunnelAction::Reused)),
        (None, None) => {
            let step = "create tunnel";
            let body = json!({"display_name": display_name.unwrap_or("mcp-tunnel setup")});
            let v = api
                .call(Method::POST, "/v1/tunnels", Some(body))
                .await
                .map_err(SetupError::api(step))?;
            Ok((tunnel_from(step, &v)?, TunnelAction::Created))
        }
    }
}

/// Makes sure the tunnel lists `ca` as an active certificate; returns its id and
/// whether it was registered now.
async fn register_ca(
    api: &ApiClient,
    tunnel_id: &str,
    ca: &StoredCa,
) -> Result<(String, bool), SetupError> {
    let step = "list certificates";
    let page = api
        .call(
            Method::GET,
            &format!("/v1/tunnels/{tunnel_id}/certificates?include_archived=true&limit=1000"),
            None,
        )
        .await
        .map_err(SetupError::api(step))?;
    let certs = page["data"].as_array().ok_or(SetupError::ApiShape {
        step,
        reason: "no data array".into(),
    })?;
    let ours: Vec<&Value> = certs
        .iter()
        .filter(|c| c["fingerprint"].as_str() == Some(ca.fingerprint.as_str()))
        .collect();
    if let Some(active) = ours.iter().find(|c| c["archived_at"].is_null()) {
        return Ok((active["id"].as_str().unwrap_or_default().to_owned(), false));
    }
    if let Some(revoked) = ours.first() {
        return Err(SetupError::CaRevoked {
            tunnel_id: tunnel_id.to_owned(),
            fingerprint: ca.fingerprint.clone(),
            cert_id: revoked["id"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let active: Vec<&str> = certs
        .iter()
        .filter(|c| c["archived_at"].is_null())
        .filter_map(|c| c["id"].as_str())
        .collect();
    if active.len() >= 2 {
        return Err(SetupError::SlotsFull {
            tunnel_id: tunnel_id.to_owned(),
            ids: active.join(", "),
        });
    }
    let step = "register CA certificate";
    let v = api
        .call(
            Method::POST,
            &format!("/v1/tunnels/{tunnel_id}/certificates"),
            Some(json!({"ca_certificate_pem": ca.cert_pem})),
        )
        .await
        .map_err(SetupError::api(step))?;
    let id = v["id"].as_str().ok_or(SetupError::ApiShape {
        step,
        reason: "the certificate has no id".into(),
    })?;
    Ok((id.to_owned(), true))
}

async fn token_call(
    api: &ApiClient,
    tunnel_id: &str,
    rotate: Option<String>,
) -> Result<String, SetupError> {
    let (step, path, body) = match rotate {
        None => ("reveal token", "reveal_token", None),
        Some(reason) => (
            "rotate token",
            "rotate_token",
            Some(json!({"reason": reason})),
        ),
    };
    let v = api
        .call(
            Method::POST,
            &format!("/v1/tunnels/{tunnel_id}/{path}"),
            body,
        )
        .await
        .map_err(SetupError::api(step))?;
    v["tunnel_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or(SetupError::ApiShape {
            step,
            reason: "no tunnel_token in the answer".into(),
        })
}

/// Stores `changes`, remembering which keys really changed.
struct Writer<'a> {
    output: &'a Output,
    stored: Contents,
    changed: Vec<String>,
}

impl Writer<'_> {
    async fn put(&mut self, changes: Contents) -> Result<(), SetupError> {
        let changes: Contents = changes
            .into_iter()
            .filter(|(k, v)| self.stored.get(k) != Some(v))
            .collect();
        self.output.write(&changes).await?;
        for (k, v) in changes {
            if !self.changed.contains(&k) {
                self.changed.push(k.clone());
            }
            self.stored.insert(k, v);
        }
        Ok(())
    }
}

fn one(key: &str, value: impl Into<Vec<u8>>) -> Contents {
    Contents::from([(key.to_owned(), value.into())])
}

/// Runs `setup init` against `output`.
pub async fn init(
    output: &Output,
    credentials: &Credentials,
    o: &InitOptions,
) -> Result<InitReport, SetupError> {
    let stored = output.read().await?;
    let stored_id = text(&stored, keys::TUNNEL_ID)?;
    let api = credentials
        .client(&o.api_url, o.api_ca_file.as_deref())
        .await?;
    let (tunnel, tunnel_action) = find_tunnel(
        &api,
        o.tunnel_id.as_deref(),
        stored_id.as_deref(),
        o.display_name.as_deref(),
    )
    .await?;
    let id_changed = stored_id.as_deref().is_some_and(|s| s != tunnel.id);
    let mut w = Writer {
        output,
        stored,
        changed: Vec::new(),
    };
    let mut identity = one(keys::TUNNEL_ID, tunnel.id.clone());
    identity.extend(one(keys::TUNNEL_DOMAIN, tunnel.domain.clone()));
    w.put(identity).await?;

    // The CA.
    let stored_ca = if id_changed {
        None
    } else {
        StoredCa::read(&w.stored)?
    };
    let (ca, generated) = match stored_ca {
        Some(ca) => (ca, false),
        None => (StoredCa::generate()?, true),
    };
    if generated {
        w.put(ca.contents()).await?;
    }
    let (certificate_id, registered) = register_ca(&api, &tunnel.id, &ca).await?;
    let ca_action = match (generated, registered) {
        (true, _) => CaAction::Generated { certificate_id },
        (false, true) => CaAction::Registered { certificate_id },
        (false, false) => CaAction::Kept { certificate_id },
    };

    // The server certificate.
    let margin = (o.cert_duration / 2).min(Duration::from_secs(720 * 3600));
    let cert_action = match material::server_cert_good_until(&w.stored, &ca, &tunnel.domain) {
        Ok(not_after) if not_after - material::now() > margin.as_secs() as i64 => {
            CertAction::Kept { not_after }
        }
        verdict => {
            let why = match verdict {
                Ok(_) => "the stored one was close to expiry".to_owned(),
                Err(_) if !w.stored.contains_key(keys::TLS_CERT) => "none was stored".to_owned(),
                Err(reason) => format!("the stored one is unusable: {reason}"),
            };
            let cert = ca.issue(&tunnel.domain, o.cert_duration, o.key_kind)?;
            w.put(material::server_cert_contents(&cert)).await?;
            CertAction::Issued {
                not_after: cert.not_after,
                why,
            }
        }
    };

    // The token.
    let stored_token = text(&w.stored, keys::TUNNEL_TOKEN)?
        .filter(|_| !id_changed)
        .filter(|t| TunnelToken::parse(t).is_ok_and(|t| t.tunnel_id.as_str() == tunnel.id));
    let stored_version = if id_changed {
        None
    } else {
        text(&w.stored, keys::TOKEN_VERSION)?
    };
    let token_action = match (stored_token, &o.token_version, stored_version) {
        (None, version, _) => {
            let token = token_call(&api, &tunnel.id, None).await?;
            let mut c = one(keys::TUNNEL_TOKEN, token + "\n");
            if let Some(v) = version {
                c.extend(one(keys::TOKEN_VERSION, v.clone() + "\n"));
            }
            w.put(c).await?;
            TokenAction::Fetched
        }
        (Some(_), Some(wanted), Some(had)) if *wanted != had => {
            let reason = format!("mcp-tunnel setup: token version {had} -> {wanted}");
            let token = token_call(&api, &tunnel.id, Some(reason)).await?;
            let mut c = one(keys::TUNNEL_TOKEN, token + "\n");
            c.extend(one(keys::TOKEN_VERSION, wanted.clone() + "\n"));
            w.put(c).await?;
            TokenAction::Rotated {
                from: had,
                to: wanted.clone(),
            }
        }
        (Some(_), Some(wanted), None) => {
            w.put(one(keys::TOKEN_VERSION, wanted.clone() + "\n"))
                .await?;
            TokenAction::VersionRecorded
        }
        (Some(_), _, _) => TokenAction::Kept,
    };

    Ok(InitReport {
        output: output.describe(),
        tunnel_id: tunnel.id,
        domain: tunnel.domain,
        tunnel: tunnel_action,
        ca: ca_action,
        server_cert: cert_action,
        token: token_action,
        changed: w.changed,
    })
}
