//! `mcp-tunnel certs …`: a tunnel's CA certificates through the Tunnels API.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use mcp_tunnel_control::client::Method;
use serde_json::{Value, json};

use super::tunnels::{ClientArgs, fetch_all, print_json, print_table, rows, seg};

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum CertsCommand {
    /// Register a CA certificate (PEM file, or `-` for stdin); at most two per tunnel.
    Add {
        tunnel_id: String,
        pem_file: PathBuf,
    },
    List {
        tunnel_id: String,
        #[arg(long)]
        include_archived: bool,
    },
    Get {
        tunnel_id: String,
        certificate_id: String,
    },
    /// Stop trusting a CA certificate; archiving the last one leaves the tunnel in
    /// needs_certificate.
    Archive {
        tunnel_id: String,
        certificate_id: String,
    },
}

pub async fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let c = args.client.client()?;
    let json_out = args.client.json;
    let base = |t: &str| format!("/v1/tunnels/{}/certificates", seg(t));
    match args.command {
        CertsCommand::Add {
            tunnel_id,
            pem_file,
        } => {
            let pem = if pem_file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&pem_file)
                    .with_context(|| format!("reading {}", pem_file.display()))?
            };
            let v = c
                .call(
                    Method::POST,
                    &base(&tunnel_id),
                    Some(json!({"ca_certificate_pem": pem})),
                )
                .await?;
            print_certs(&[v], json_out)
        }
        CertsCommand::List {
            tunnel_id,
            include_archived,
        } => {
            let all = fetch_all(
                &c,
                &format!(
                    "{}?limit=100&include_archived={include_archived}",
                    base(&tunnel_id)
                ),
            )
            .await?;
            if json_out {
                return print_json(&json!({"data": all}));
            }
            print_certs(&all, false)
        }
        CertsCommand::Get {
            tunnel_id,
            certificate_id,
        } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("{}/{}", base(&tunnel_id), seg(&certificate_id)),
                    None,
                )
                .await?;
            print_certs(&[v], json_out)
        }
        CertsCommand::Archive {
            tunnel_id,
            certificate_id,
        } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("{}/{}/archive", base(&tunnel_id), seg(&certificate_id)),
                    None,
                )
                .await?;
            print_certs(&[v], json_out)
        }
    }
}

fn print_certs(items: &[Value], json_out: bool) -> anyhow::Result<ExitCode> {
    if json_out {
        return print_json(&items[0]);
    }
    let fields = [
        "id",
        "fingerprint",
        "subject",
        "expires_at",
        "created_at",
        "archived_at",
    ];
    print_table(
        &[
            "ID",
            "FINGERPRINT",
            "SUBJECT",
            "EXPIRES",
            "CREATED",
            "ARCHIVED",
        ],
        &rows(items, &fields),
    )
}
