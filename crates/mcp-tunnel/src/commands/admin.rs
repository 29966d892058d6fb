//! `mcp-tunnel admin …`: the organization's identities, keys, sign-in settings, console
//! users and audit log, through the admin endpoints (an `org:admin` key is needed), plus
//! offline checking of an audit export.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use mcp_tunnel_control::client::ApiClient;
use mcp_tunnel_control::client::Method;
use serde_json::{Value, json};

use super::tunnels::{ClientArgs, print_json, print_table, rows, seg};

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Workspaces (`wrkspc_…`).
    #[command(subcommand)]
    Workspaces(Simple),
    /// Service accounts (`svac_…`) that federation rules act as.
    #[command(subcommand)]
    ServiceAccounts(Simple),
    /// Federation issuers (`fdis_…`): issuer URL and its keys.
    #[command(subcommand)]
    Issuers(Issuers),
    /// Federation rules (`fdrl_…`).
    #[command(subcommand)]
    Rules(Rules),
    /// Tunnels API keys (shown once at creation).
    #[command(subcommand)]
    ApiKeys(Keys),
    /// Client access keys for MCP clients (`workspace:use_tunnels`).
    #[command(subcommand)]
    ClientKeys(Keys),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(Audit),
    /// The organization's sign-in settings: SSO provider and `sso_required`.
    #[command(subcommand)]
    Organization(Organization),
    /// People who sign in to the console, and their roles.
    #[command(subcommand)]
    Users(Users),
}

#[derive(Debug, clap::Subcommand)]
enum Organization {
    /// Id, name, whether SSO is configured and whether it is required.
    Show,
    /// Make SSO mandatory (password sign-in off) or optional.
    Set {
        #[arg(long, action = clap::ArgAction::Set)]
        sso_required: bool,
    },
    /// Configure the OIDC provider the console signs people in with.
    Sso {
        /// Issuer URL, exactly as the ID tokens' `iss`.
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        client_id: String,
        /// File holding the client secret (required the first time; kept otherwise).
        #[arg(long)]
        client_secret_file: Option<PathBuf>,
        /// E-mail domain allowed to sign in (repeatable; none: any domain).
        #[arg(long = "allowed-domain")]
        allowed_domains: Vec<String>,
        /// Role of an unknown user of an allowed domain on first sign-in (owner, admin,
        /// developer or none).
        #[arg(long, default_value = "none")]
        auto_provision_role: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum Users {
    List,
    /// Add a user who signs in through SSO (matched by verified e-mail).
    Create {
        #[arg(long)]
        login: String,
        /// owner, admin or developer.
        #[arg(long, default_value = "developer")]
        role: String,
    },
    /// Change a user's role, or disable/enable it.
    Update {
        id: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
enum Simple {
    List,
    Create { name: String },
    Archive { id: String },
}

#[derive(Debug, clap::Subcommand)]
enum Issuers {
    List,
    Create {
        /// Exactly as the tokens' `iss` claim.
        #[arg(long)]
        issuer_url: String,
        /// JWKS document (JSON file) given inline.
        #[arg(long, conflicts_with = "jwks_url")]
        jwks_file: Option<PathBuf>,
        /// Where to fetch the JWKS (https, or http on loopback).
        #[arg(long)]
        jwks_url: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    Archive {
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum Rules {
    List,
    Create {
        #[arg(long)]
        issuer_id: String,
        /// Compared byte for byte with the token's `sub`.
        #[arg(long)]
        subject: String,
        /// Compared byte for byte with the token's `aud`.
        #[arg(long)]
        audience: String,
        #[arg(long)]
        service_account_id: String,
        /// Defaults to the default workspace.
        #[arg(long = "rule-workspace-id")]
        rule_workspace_id: Option<String>,
        #[arg(long, default_value = "workspace:manage_tunnels")]
        scope: String,
        /// 60 to 86400.
        #[arg(long, default_value_t = 3600)]
        token_lifetime_seconds: i64,
        #[arg(long)]
        name: Option<String>,
    },
    Archive {
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum Keys {
    List,
    Create {
        #[arg(long)]
        name: String,
        /// admin, owner or developer (API keys only).
        #[arg(long, conflicts_with = "scope")]
        role: Option<String>,
        /// Explicit scopes (API keys only), repeatable.
        #[arg(long)]
        scope: Vec<String>,
        /// Bind the key to a workspace (else organization-wide / default workspace).
        #[arg(long = "key-workspace-id")]
        key_workspace_id: Option<String>,
        #[arg(long)]
        expires_in_seconds: Option<i64>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum Audit {
    /// Newest events first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The whole log as JSONL, oldest first.
    Export {
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Recompute the chain on the server, or offline for an exported JSONL file.
    Verify {
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    if let AdminCommand::Audit(Audit::Verify { file: Some(f) }) = &args.command {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        return report_verification(
            serde_json::to_value(mcp_tunnel_control::store::verify_jsonl(&text))?,
            args.client.json,
        );
    }
    let c = args.client.client()?;
    let j = args.client.json;
    match args.command {
        AdminCommand::Workspaces(cmd) => {
            simple(
                &c,
                "/v1/admin/workspaces",
                cmd,
                &["id", "name", "is_default", "created_at"],
                j,
            )
            .await
        }
        AdminCommand::ServiceAccounts(cmd) => {
            simple(
                &c,
                "/v1/admin/service_accounts",
                cmd,
                &["id", "name", "created_at", "archived_at"],
                j,
            )
            .await
        }
        AdminCommand::Issuers(cmd) => issuers(&c, cmd, j).await,
        AdminCommand::Rules(cmd) => rules(&c, cmd, j).await,
        AdminCommand::ApiKeys(cmd) => keys(&c, "/v1/admin/api_keys", cmd, j).await,
        AdminCommand::ClientKeys(cmd) => keys(&c, "/v1/admin/client_keys", cmd, j).await,
        AdminCommand::Audit(cmd) => audit(&c, cmd, j).await,
        AdminCommand::Organization(cmd) => organization(&c, cmd, j).await,
        AdminCommand::Users(cmd) => users(&c, cmd, j).await,
    }
}

async fn organization(c: &ApiClient, cmd: Organization, j: bool) -> anyhow::Result<ExitCode> {
    let path = "/v1/admin/organization";
    let org = match cmd {
        Organization::Show => c.call(Method::GET, path, None).await?,
        Organization::Set { sso_required } => {
            c.call(
                Method::POST,
                path,
                Some(json!({"sso_required": sso_required})),
            )
            .await?
        }
        Organization::Sso {
            issuer,
            client_id,
            client_secret_file,
            allowed_domains,
            auto_provision_role,
        } => {
            let secret = match client_secret_file {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("--client-secret-file {}", f.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            let body = json!({"issuer": issuer, "client_id": client_id, "client_secret": secret,
                "allowed_domains": allowed_domains, "auto_provision_role": auto_provision_role});
            c.call(Method::POST, &format!("{path}/sso"), Some(body))
                .await?
        }
    };
    if j {
        return print_json(&org);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "organization:  {} ({})",
        org["id"].as_str().unwrap_or(""),
        org["name"].as_str().unwrap_or("")
    )?;
    writeln!(out, "sso_configured: {}", org["sso_configured"])?;
    writeln!(out, "sso_required:   {}", org["sso_required"])?;
    if let Some(sso) = org["sso"].as_object() {
        for k in [
            "issuer",
            "client_id",
            "allowed_domains",
            "auto_provision_role",
        ] {
            writeln!(out, "  {k}: {}", sso.get(k).cloned().unwrap_or(Value::Null))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn users(c: &ApiClient, cmd: Users, j: bool) -> anyhow::Result<ExitCode> {
    let path = "/v1/admin/users";
    let fields = [
        "id",
        "login",
        "role",
        "password_login",
        "disabled_at",
        "last_login_at",
    ];
    match cmd {
        Users::List => show(&list(c, path).await?, &fields, j),
        Users::Create { login, role } => show(
            &[c.call(
                Method::POST,
                path,
                Some(json!({"login": login, "role": role})),
            )
            .await?],
            &fields,
            j,
        ),
        Users::Update {
            id,
            role,
            disable,
            enable,
        } => {
            let disabled = (disable || enable).then_some(disable);
            let body = json!({"role": role, "disabled": disabled});
            show(
                &[
                    c.call(Method::POST, &format!("{path}/{}", seg(&id)), Some(body))
                        .await?,
                ],
                &fields,
                j,
            )
        }
    }
}

fn show(items: &[Value], fields: &[&str], json_out: bool) -> anyhow::Result<ExitCode> {
    if json_out {
        return print_json(&json!({"data": items}));
    }
    let headers: Vec<String> = fields.iter().map(|f| f.to_uppercase()).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    print_table(&headers, &rows(items, fields))
}

async fn list(c: &ApiClient, path: &str) -> anyhow::Result<Vec<Value>> {
    Ok(c.call(Method::GET, path, None).await?["data"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

async fn simple(
    c: &ApiClient,
    path: &str,
    cmd: Simple,
    fields: &[&str],
    j: bool,
) -> anyhow::Result<ExitCode> {
    match cmd {
        Simple::List => show(&list(c, path).await?, fields, j),
        Simple::Create { name } => show(
            &[c.call(Method::POST, path, Some(json!({"name": name})))
                .await?],
            fields,
            j,
        ),
        Simple::Archive { id } => {
            if path.ends_with("workspaces") {
                anyhow::bail!("workspaces cannot be archived from the CLI");
            }
            print_json(
                &c.call(Method::POST, &format!("{path}/{}/archive", seg(&id)), None)
                    .await?,
            )
        }
    }
}

async fn issuers(c: &ApiClient, cmd: Issuers, j: bool) -> anyhow::Result<ExitCode> {
    let path = "/v1/admin/federation/issuers";
    let fields = [
        "id",
        "name",
        "issuer_url",
        "jwks_url",
        "created_at",
        "archived_at",
    ];
    match cmd {
        Issuers::List => show(&list(c, path).await?, &fields, j),
        Issuers::Create {
            issuer_url,
            jwks_file,
            jwks_url,
            name,
        } => {
            let jwks = match jwks_file {
                Some(f) => Some(
                    serde_json::from_str::<Value>(&std::fs::read_to_string(&f)?)
                        .with_context(|| format!("{} is not JSON", f.display()))?,
                ),
                None => None,
            };
            let body =
                json!({"issuer_url": issuer_url, "jwks": jwks, "jwks_url": jwks_url, "name": name});
            show(&[c.call(Method::POST, path, Some(body)).await?], &fields, j)
        }
        Issuers::Archive { id } => show(
            &[
                c.call(Method::POST, &format!("{path}/{}/archive", seg(&id)), None)
                    .await?,
            ],
            &fields,
            j,
        ),
    }
}

async fn rules(c: &ApiClient, cmd: Rules, j: bool) -> anyhow::Result<ExitCode> {
    let path = "/v1/admin/federation/rules";
    let fields = [
        "id",
        "issuer_id",
        "subject",
        "audience",
        "service_account_id",
        "workspace_id",
        "scope",
        "token_lifetime_seconds",
        "archived_at",
    ];
    match cmd {
        Rules::List => show(&list(c, path).await?, &fields, j),
        Rules::Create {
            issuer_id,
            subject,
            audience,
            service_account_id,
            rule_workspace_id,
            scope,
            token_lifetime_seconds,
            name,
        } => {
            let body = json!({"issuer_id": issuer_id, "subject": subject, "audience": audience,
                "service_account_id": service_account_id, "workspace_id": rule_workspace_id, "scope": scope,
                "token_lifetime_seconds": token_lifetime_seconds, "name": name});
            show(&[c.call(Method::POST, path, Some(body)).await?], &fields, j)
        }
        Rules::Archive { id } => show(
            &[
                c.call(Method::POST, &format!("{path}/{}/archive", seg(&id)), None)
                    .await?,
            ],
            &fields,
            j,
        ),
    }
}

async fn keys(c: &ApiClient, path: &str, cmd: Keys, j: bool) -> anyhow::Result<ExitCode> {
    let fields = [
        "id",
        "name",
        "scopes",
        "workspace_id",
        "created_at",
        "expires_at",
        "revoked_at",
    ];
    match cmd {
        Keys::List => show(&list(c, path).await?, &fields, j),
        Keys::Create {
            name,
            role,
            scope,
            key_workspace_id,
            expires_in_seconds,
        } => {
            let scopes = (!scope.is_empty()).then_some(scope);
            let body = json!({"name": name, "role": role, "scopes": scopes, "workspace_id": key_workspace_id,
                "expires_in_seconds": expires_in_seconds});
            let created = c.call(Method::POST, path, Some(body)).await?;
            if j {
                return print_json(&created);
            }
            show(std::slice::from_ref(&created), &fields, false)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "key (shown once): {}",
                created["key"].as_str().unwrap_or("")
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Keys::Revoke { id } => show(
            &[
                c.call(Method::POST, &format!("{path}/{}/revoke", seg(&id)), None)
                    .await?,
            ],
            &fields,
            j,
        ),
    }
}

async fn audit(c: &ApiClient, cmd: Audit, j: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        Audit::List { limit } => {
            let page = c
                .call(
                    Method::GET,
                    &format!("/v1/audit_events?limit={limit}"),
                    None,
                )
                .await?;
            let items = page["data"].as_array().cloned().unwrap_or_default();
            show(
                &items,
                &["time", "actor", "action", "target", "source", "reason"],
                j,
            )
        }
        Audit::Export { output } => {
            let text = c
                .call_text(Method::GET, "/v1/audit_events/export", None)
                .await?;
            match output {
                Some(p) => {
                    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?
                }
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Audit::Verify { .. } => report_verification(
            c.call(Method::GET, "/v1/audit_events/verify", None).await?,
            j,
        ),
    }
}

/// Prints the verification; exits non-zero when the chain is broken.
fn report_verification(v: Value, j: bool) -> anyhow::Result<ExitCode> {
    if j {
        print_json(&v)?;
    } else {
        let mut out = std::io::stdout().lock();
        if v["valid"] == true {
            writeln!(out, "audit chain valid: {} events", v["events"])?;
        } else {
            writeln!(
                out,
                "audit chain BROKEN after {} good events: {}",
                v["events"],
                v["error"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(if v["valid"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
