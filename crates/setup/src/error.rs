//! Why setup failed. Every message names what to fix; none carries a secret.

use mcp_tunnel_control::client::ClientError;

use crate::k8s::K8sError;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--output {0:?}: expected dir:/path or k8s-secret:NAME")]
    OutputSpec(String),
    #[error(
        "--output is required outside Kubernetes: dir:/path or k8s-secret:NAME (inside a pod it defaults to k8s-secret:mcp-tunnel)"
    )]
    NoOutput,
    #[error("{0}")]
    Credentials(String),
    #[error("workload identity token exchange failed: {0}")]
    Exchange(String),
    #[error("Tunnels API: {step}: {source}")]
    Api {
        step: &'static str,
        #[source]
        source: ClientError,
    },
    #[error("Tunnels API: {step}: unexpected answer: {reason}")]
    ApiShape { step: &'static str, reason: String },
    #[error(
        "tunnel {tunnel_id} is archived: an archived tunnel cannot be reused; empty the output (or set TUNNEL_ID to another tunnel) to provision anew"
    )]
    TunnelArchived { tunnel_id: String },
    #[error(
        "tunnel {tunnel_id} already has two active CA certificates ({ids}): revoke one first (`mcp-tunnel certs archive {tunnel_id} <id>` or the console), then re-run setup"
    )]
    SlotsFull { tunnel_id: String, ids: String },
    #[error(
        "the stored CA (fingerprint {fingerprint}) was revoked for tunnel {tunnel_id} (certificate {cert_id} archived): setup does not re-register a revoked CA; remove ca.crt and ca.key from the output to generate a new one"
    )]
    CaRevoked {
        tunnel_id: String,
        fingerprint: String,
        cert_id: String,
    },
    #[error("the output holds {key} but it is unusable: {reason}")]
    Stored { key: &'static str, reason: String },
    #[error("the output has no {key}: run `mcp-tunnel setup init` first")]
    Missing { key: &'static str },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(transparent)]
    K8s(#[from] K8sError),
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] mcp_tunnel_pki::generate::GenError),
}

impl SetupError {
    pub(crate) fn api(step: &'static str) -> impl FnOnce(ClientError) -> Self {
        move |source| Self::Api { step, source }
    }
}
