//! `mcp-tunnel tunnels …`: the Tunnels API from the command line. Credentials come from
//! `MCP_TUNNEL_API_KEY`/`MCP_TUNNEL_API_URL`, a key file, or a credentials file; output
//! is a table, or the API's JSON with `--json`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use mcp_tunnel_control::client::Method;
use mcp_tunnel_control::client::{self, ApiClient, CredentialsFile};
use mcp_tunnel_pki::crypto::Secret;
use serde_json::{Value, json};

/// How to reach and authenticate to the API; shared by `tunnels`, `certs` and `admin`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Base URL of the API.
    #[arg(long, global = true, env = client::API_URL_ENV)]
    pub api_url: Option<String>,
    /// File holding the API key (the key itself comes from MCP_TUNNEL_API_KEY).
    #[arg(long, global = true)]
    pub api_key_file: Option<PathBuf>,
    /// JSON file with api_url, api_key and ca_file.
    #[arg(long, global = true, env = client::CREDENTIALS_FILE_ENV)]
    pub credentials_file: Option<PathBuf>,
    /// CA certificate(s) to trust for the API's HTTPS, besides the system roots.
    #[arg(long, global = true, env = client::CA_FILE_ENV)]
    pub ca_file: Option<PathBuf>,
    /// Act in this workspace (organization-wide keys only).
    #[arg(long, global = true)]
    pub workspace_id: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        let file = match &self.credentials_file {
            Some(p) => CredentialsFile::load(p)?,
            None => CredentialsFile::default(),
        };
        let key = match (
            std::env::var(client::API_KEY_ENV)
                .ok()
                .filter(|k| !k.is_empty()),
            &self.api_key_file,
            file.api_key,
        ) {
            (Some(k), _, _) => k,
            (None, Some(p), _) => std::fs::read_to_string(p)
                .with_context(|| format!("--api-key-file {}", p.display()))?
                .trim()
                .to_owned(),
            (None, None, Some(k)) => k,
            (None, None, None) => return Err(client::ClientError::NoKey.into()),
        };
        let url = self
            .api_url
            .clone()
            .or(file.api_url)
            .unwrap_or_else(|| client::DEFAULT_API_URL.into());
        let ca = self.ca_file.clone().or(file.ca_file);
        Ok(ApiClient::new(
            &url,
            Secret::new(key),
            ca.as_deref(),
            self.workspace_id.clone(),
        )?)
    }
}

#[derive(Debug, clap::Args)]
pub struct TunnelsArgs {
    #[command(subcommand)]
    command: TunnelsCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum TunnelsCommand {
    /// Create a tunnel (not idempotent).
    Create {
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List tunnels, newest first.
    List {
        #[arg(long)]
        include_archived: bool,
        /// Page size; every page is fetched.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    Get {
        tunnel_id: String,
    },
    /// Archive a tunnel: irreversible; its certificates and token stop working.
    Archive {
        tunnel_id: String,
    },
    /// Print the tunnel token (a credential: prefer `> file` to the terminal).
    RevealToken {
        tunnel_id: String,
    },
    /// Replace the token; connectors need the new one for new connections.
    RotateToken {
        tunnel_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(args: TunnelsArgs) -> anyhow::Result<ExitCode> {
    let c = args.client.client()?;
    let json_out = args.client.json;
    match args.command {
        TunnelsCommand::Create { display_name } => {
            let t = c
                .call(
                    Method::POST,
                    "/v1/tunnels",
                    Some(json!({"display_name": display_name})),
                )
                .await?;
            print_tunnels(&[t], json_out)
        }
        TunnelsCommand::List {
            include_archived,
            limit,
        } => {
            let base = format!("/v1/tunnels?limit={limit}&include_archived={include_archived}");
            let all = fetch_all(&c, &base).await?;
            if json_out {
                return print_json(&json!({"data": all}));
            }
            print_tunnels(&all, false)
        }
        TunnelsCommand::Get { tunnel_id } => {
            let t = c
                .call(
                    Method::GET,
                    &format!("/v1/tunnels/{}", seg(&tunnel_id)),
                    None,
                )
                .await?;
            print_tunnels(&[t], json_out)
        }
        TunnelsCommand::Archive { tunnel_id } => {
            let t = c
                .call(
                    Method::POST,
                    &format!("/v1/tunnels/{}/archive", seg(&tunnel_id)),
                    None,
                )
                .await?;
            print_tunnels(&[t], json_out)
        }
        TunnelsCommand::RevealToken { tunnel_id } => {
            let t = c
                .call(
                    Method::POST,
                    &format!("/v1/tunnels/{}/reveal_token", seg(&tunnel_id)),
                    None,
                )
                .await?;
            print_token(&t, json_out)
        }
        TunnelsCommand::RotateToken { tunnel_id, reason } => {
            let t = c
                .call(
                    Method::POST,
                    &format!("/v1/tunnels/{}/rotate_token", seg(&tunnel_id)),
                    Some(json!({"reason": reason})),
                )
                .await?;
            print_token(&t, json_out)
        }
    }
}

/// Every page of a list endpoint.
pub async fn fetch_all(c: &ApiClient, base: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut path = base.to_owned();
    loop {
        let page = c.call(Method::GET, &path, None).await?;
        out.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_page"].as_str() {
            Some(cursor) => path = format!("{base}&page={cursor}"),
            None => return Ok(out),
        }
    }
}

/// A path segment: ids never contain `/`, `?` or `#`, and anything else is refused by
/// the server anyway; this keeps a typo from reaching another endpoint.
pub fn seg(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

pub fn print_json(v: &Value) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Aligned columns with a header row.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) -> anyhow::Result<ExitCode> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(
        out,
        "{}",
        line(headers.iter().map(|h| h.to_string()).collect())
    )?;
    for r in rows {
        writeln!(out, "{}", line(r.clone()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows of a list of objects, by field name.
pub fn rows(items: &[Value], fields: &[&str]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|i| fields.iter().map(|f| s(&i[*f])).collect())
        .collect()
}

fn print_tunnels(items: &[Value], json_out: bool) -> anyhow::Result<ExitCode> {
    if json_out {
        return print_json(&items[0]);
    }
    let fields = [
        "id",
        "display_name",
        "domain",
        "status",
        "connections",
        "created_at",
        "archived_at",
    ];
    print_table(
        &[
            "ID",
            "NAME",
            "DOMAIN",
            "STATUS",
            "CONNECTIONS",
            "CREATED",
            "ARCHIVED",
        ],
        &rows(items, &fields),
    )
}

fn print_token(t: &Value, json_out: bool) -> anyhow::Result<ExitCode> {
    if json_out {
        return print_json(t);
    }
    // The bare token, so that `> token-file` or `$(…)` works.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", s(&t["tunnel_token"]))?;
    eprintln!("token id: {}", s(&t["id"]));
    Ok(ExitCode::SUCCESS)
}
