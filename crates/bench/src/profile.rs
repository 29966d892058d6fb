//! `mcp-tunnel-bench profile --role proxy|connector|edge`: the whole path with one role
//! under `valgrind --tool=callgrind`, driven by a fixed workload (so instruction counts
//! repeat from run to run), then stopped with SIGTERM so callgrind writes its file.
//! Read it with `callgrind_annotate --inclusive=yes <file>`.

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
    let out = std::env::current_dir()?.join(format!(
        "callgrind.{role}.{}calls.{}mib.{}sessions.out",
        args.profile_calls, args.profile_bulk_mib, args.profile_sessions
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
                "--tool=callgrind".into(),
                format!("--callgrind-out-file={}", out.display()),
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
    println!("callgrind output: {}", out.display());
    Ok(())
}
