//! `mcp-tunnel-bench tunnel`: the whole path (client → edge → connector → proxy →
//! upstream), every role a release `mcp-tunnel` process, against a direct connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use mcp_tunnel_client::Session;
use mcp_tunnel_testutil::harness::bin;
use mcp_tunnel_testutil::logs::LoggedChild;
use mcp_tunnel_testutil::stack::Stack;

use crate::{Args, Conn, Pool, bulk, compare, cpu_model, direct_conn, num_cpus, row};

async fn tunnel_conn(stack: &Stack) -> anyhow::Result<Conn> {
    Ok(Conn::Tunnel(stack.session("mcp").await?))
}

pub async fn run(args: Args, upstream: SocketAddr) -> anyhow::Result<()> {
    let origin = format!("http://{upstream}");
    let stack =
        Stack::start_with(&origin, "limits:\n  max_concurrent_streams: 1000\n", &[], 4).await;
    let secs = Duration::from_secs(args.seconds);

    println!("# mcp-tunnel whole-path benchmark");
    println!();
    println!("machine: {} cores, {}", num_cpus(), cpu_model());
    println!(
        "path: client → edge → connector (4 links) → proxy → minimal MCP responder, each a release process, logs at info"
    );
    println!();
    println!(
        "| case | path | req/s | p50 µs | p99 µs | vs direct | tunnel CPU µs/req | bench CPU µs/req |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (conc, label) in [
        (1usize, "tools/call, concurrency 1"),
        (32, "tools/call, concurrency 32"),
    ] {
        let pools = vec![
            Pool::new(conc, || direct_conn(upstream)).await?,
            Pool::new(conc, || tunnel_conn(&stack)).await?,
        ];
        let [direct, via]: [crate::Stats; 2] = compare(pools, secs)
            .await?
            .try_into()
            .map_err(|_| anyhow::anyhow!("two paths"))?;
        row(label, "direct", &direct, None);
        row(label, "whole tunnel path", &via, Some(&direct));
    }
    println!();
    println!("| bulk {} MiB | MB/s | vs direct |", args.bulk_mib);
    println!("|---|---:|---:|");
    let size = args.bulk_mib * 1024 * 1024;
    // Best of three alternating transfers each.
    let (mut direct, mut via) = (0f64, 0f64);
    for _ in 0..3 {
        direct = direct.max(bulk(direct_conn(upstream).await?, size).await?);
        via = via.max(bulk(tunnel_conn(&stack).await?, size).await?);
    }
    println!("| direct | {direct:.0} | 1.00 |");
    println!("| whole tunnel path | {via:.0} | {:.2} |", via / direct);

    idle_memory(&stack, args.idle_sessions.unwrap_or(1000)).await?;
    start_to_ready(&stack).await?;
    Ok(())
}

/// RSS of a process, from /proc.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS missing")
}

/// Opens `n` sessions, each used once and then left idle, and reports how much each
/// process grew per session.
async fn idle_memory(stack: &Stack, n: usize) -> anyhow::Result<()> {
    let procs = [
        ("edge", stack.edge.child.id().context("edge pid")?),
        (
            "connector",
            stack.connector.child.id().context("connector pid")?,
        ),
        ("proxy", stack.proxy.proxy.child.id().context("proxy pid")?),
    ];
    // Warm allocator pools and lazily built state with a first batch.
    let mut warm = Vec::new();
    for _ in 0..100 {
        warm.push(use_once(stack.session("mcp").await?).await?);
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<u64> = procs
        .iter()
        .map(|(_, p)| rss_kib(*p))
        .collect::<Result<_, _>>()?;
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(use_once(stack.session("mcp").await?).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<u64> = procs
        .iter()
        .map(|(_, p)| rss_kib(*p))
        .collect::<Result<_, _>>()?;
    println!();
    println!(
        "| {n} idle sessions (WebSocket + inner TLS + HTTP/1.1, one request each) | RSS growth | per session |"
    );
    println!("|---|---:|---:|");
    let mut total = 0u64;
    for (i, (name, _)) in procs.iter().enumerate() {
        let grew = after[i].saturating_sub(before[i]);
        total += grew;
        println!(
            "| {name} | {} KiB | {:.1} KiB |",
            grew,
            grew as f64 / n as f64
        );
    }
    println!(
        "| all three | {total} KiB | {:.1} KiB |",
        total as f64 / n as f64
    );
    drop(sessions);
    Ok(())
}

async fn use_once(s: Session) -> anyhow::Result<Conn> {
    let mut c = Conn::Tunnel(s);
    crate::one(&mut c).await?;
    Ok(c)
}

/// A second connector for the same tunnel: time from spawn until all four links are
/// registered with the edge.
async fn start_to_ready(stack: &Stack) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut cmd = bin();
    cmd.args(["connector", "run", "--url"])
        .arg(format!("http://{}", stack.proxy.addr))
        .args(["--ha-connections", "4"])
        .arg("--token-file")
        .arg(&stack.token_file);
    let connector = LoggedChild::spawn(cmd);
    while connector
        .logs_with_message("Registered tunnel connection")
        .len()
        < 4
    {
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("connector not ready:\n{}", connector.lines().join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!();
    println!(
        "connector start to 4 registered links: {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}
