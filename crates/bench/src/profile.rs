//! `mcp-tunnel-bench profile --role proxy|connector|edge`: the whole path with one role
//! under `valgrind --tool=callgrind`, driven by a fixed workload (so instruction counts
//! repeat from run to run), then stopped with SIGTERM so callgrind writes its file.
//! Read it with `callgrind_annotate --inclusive=yes <file>`. With `--profile-tool dhat`
//! the role runs under DHAT instead, and `--profile-idle N` holds N idle SSE streams at
//! the heap's peak: DHAT's bytes at t-gmax by allocation site are what an idle stream
//! costs, and where.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::rig::{Rig, RigOptions};
use crate::{Args, Conn, bulk, one};

pub async fn run(args: Args, upstream: SocketAddr) -> anyhow::Result<()> {
    let role = args.role.clone();
    anyhow::ensure!(
        ["proxy", "connector", "edge"].contains(&role.as_str()),
        "--role must be proxy, connector or edge, not {role:?}"
    );
    let tool = args.profile_tool.clone();
    anyhow::ensure!(
        ["callgrind", "dhat"].contains(&tool.as_str()),
        "--profile-tool must be callgrind or dhat, not {tool:?}"
    );
    let out = std::env::current_dir()?.join(format!(
        "{tool}.{role}.{}calls.{}mib.{}sessions.{}idle.out",
        args.profile_calls, args.profile_bulk_mib, args.profile_sessions, args.profile_idle
    ));
    let mut rig = Rig::start(RigOptions {
        upstream,
        ha: 4,
        proxy_log_level: args.proxy_log_level.clone(),
        faults: false,
        wrap: Some((
            role.clone(),
            vec![
                "valgrind".into(),
                format!("--tool={tool}"),
                format!("--{tool}-out-file={}", out.display()),
            ],
        )),
    })
    .await?;
    // Session set-up is outside the measured workload only as far as callgrind allows:
    // it counts the whole process, so the workload is sized to dominate start-up.
    let calls = args.profile_calls;
    let t = Instant::now();
    let mut c = Conn::Tunnel(rig.session().await?);
    for _ in 0..calls {
        one(&mut c).await?;
    }
    println!(
        "{calls} sequential tools/call in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..if calls > 0 { 32 } else { 0 } {
        let mut c = Conn::Tunnel(rig.session().await?);
        tasks.push(tokio::spawn(async move {
            for _ in 0..calls / 32 {
                one(&mut c).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "{calls} tools/call at concurrency 32 in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // New sessions, each through a fresh dialer with inner resumption off: both TLS
    // handshakes full, as in the "full handshakes" rate of `all`.
    if args.profile_sessions > 0 {
        let t = Instant::now();
        let inner = rig.inner_tls(false)?;
        for _ in 0..args.profile_sessions {
            let s = rig.session_with(&rig.fresh_dialer()?, &inner).await?;
            one(&mut Conn::Tunnel(s)).await?;
        }
        println!(
            "{} new sessions (full handshakes, one tools/call each) in {:.1} s",
            args.profile_sessions,
            t.elapsed().as_secs_f64()
        );
    }
    if args.profile_idle > 0 {
        let per = args.profile_idle_per_session.max(1);
        let idle = crate::sessions::idle_tunnel(&rig, args.profile_idle, per).await?;
        println!(
            "{} idle SSE streams, {per} per session, held and released ({role}: {} KiB RSS with them)",
            idle.streams,
            idle.rows.iter().find(|r| r.0 == role).map_or(0, |r| r.2)
        );
    }
    let size = args.profile_bulk_mib * 1024 * 1024;
    if size > 0 {
        let mbs = bulk(Conn::Tunnel(rig.session().await?), size).await?;
        println!("bulk {} MiB at {mbs:.0} MB/s", args.profile_bulk_mib);
    }
    let p = match role.as_str() {
        "proxy" => rig.proxy.take(),
        "connector" => rig.connector.take(),
        _ => rig.edge.take(),
    }
    .context("role not running")?;
    p.stop(Duration::from_secs(120)).await;
    println!("{tool} output: {}", out.display());
    Ok(())
}
