//! Other tunnels carrying the same HTTP workload: rathole and bore, both from crates.io,
//! built by `bench/run.sh` into a scratch directory (never committed). Each runs as its
//! server and client process on loopback, exposing the same upstream; the load
//! generator then talks plain HTTP/1.1 to the tunnel's public port, as it does direct.
//! Neither encrypts here (rathole's default TCP transport; bore has none), which is the
//! point of the comparison: mcp-tunnel adds end-to-end TLS on top.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::procs::{Proc, free_port};
use crate::rig::wait_port;

/// One other tunnel, running.
#[derive(Debug)]
pub struct Other {
    pub name: &'static str,
    /// Where clients connect: the tunnel's public port.
    pub addr: SocketAddr,
    pub server: Proc,
    pub client: Proc,
}

/// Where the other tunnels' binaries are: `--tools-dir`, else `/tmp/bench-tools/bin`.
pub fn tool(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    p.is_file().then_some(p)
}

/// rathole: server and client from TOML files; ready once the client logs that its
/// control channel is established.
pub async fn rathole(bin: &Path, work: &Path, upstream: SocketAddr) -> anyhow::Result<Other> {
    let (control, public) = (free_port()?, free_port()?);
    let token = "bench-rathole-token-0123456789";
    let server_toml = work.join("rathole-server.toml");
    let client_toml = work.join("rathole-client.toml");
    std::fs::write(
        &server_toml,
        format!(
            "[server]\nbind_addr = \"127.0.0.1:{control}\"\n[server.services.mcp]\ntoken = \"{token}\"\nbind_addr = \"127.0.0.1:{public}\"\n"
        ),
    )?;
    std::fs::write(
        &client_toml,
        format!(
            "[client]\nremote_addr = \"127.0.0.1:{control}\"\n[client.services.mcp]\ntoken = \"{token}\"\nlocal_addr = \"{upstream}\"\n"
        ),
    )?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--server")
        .arg(&server_toml)
        .env("RUST_LOG", "warn");
    let server = Proc::spawn("rathole server", cmd, &work.join("rathole-server.log"))?;
    wait_port(control, Duration::from_secs(10))
        .await
        .with_context(|| server.output())?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--client")
        .arg(&client_toml)
        .env("RUST_LOG", "info");
    let mut client = Proc::spawn("rathole client", cmd, &work.join("rathole-client.log"))?;
    client
        .wait_lines(0, "Control channel established", 1, Duration::from_secs(10))
        .await?;
    wait_port(public, Duration::from_secs(10)).await?;
    Ok(Other {
        name: "rathole",
        addr: SocketAddr::from(([127, 0, 0, 1], public)),
        server,
        client,
    })
}

/// bore: `bore server` (control port 7835, fixed by bore) and `bore local`; the public
/// port is pinned with `--port` inside the server's allowed range.
pub async fn bore(bin: &Path, work: &Path, upstream: SocketAddr) -> anyhow::Result<Other> {
    let public = free_port()?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["server", "--bind-addr", "127.0.0.1"])
        .args(["--min-port", &public.to_string()])
        .args(["--max-port", &public.to_string()])
        .env("RUST_LOG", "warn");
    let server = Proc::spawn("bore server", cmd, &work.join("bore-server.log"))?;
    wait_port(7835, Duration::from_secs(10))
        .await
        .with_context(|| server.output())?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["local", &upstream.port().to_string()])
        .args(["--local-host", &upstream.ip().to_string()])
        .args(["--to", "127.0.0.1", "--port", &public.to_string()])
        .env("RUST_LOG", "info");
    let mut client = Proc::spawn("bore local", cmd, &work.join("bore-client.log"))?;
    client
        .wait_lines(0, "listening at", 1, Duration::from_secs(10))
        .await?;
    Ok(Other {
        name: "bore",
        addr: SocketAddr::from(([127, 0, 0, 1], public)),
        server,
        client,
    })
}
