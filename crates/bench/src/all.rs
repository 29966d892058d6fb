//! `mcp-tunnel-bench all`: every figure of issue 9 in one run, each path beside direct
//! and beside rathole and bore carrying the same HTTP workload on the same machine.
//! Paths are measured in alternating one-second rounds, so load from anything else
//! running hits them alike.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mcp_tunnel_pki::generate::KeyKind;

use crate::others::{self, Other};
use crate::procs::{Upstream, cpu_time, free_port, machine, nofile_limit};
use crate::rig::{REGISTERED, Rig, RigOptions};
use crate::sessions::{self, Idle, Opener, Rate};
use crate::{Args, Conn, Pool, Stats, bulk, compare, direct_conn};

fn opts(args: &Args, upstream: SocketAddr) -> RigOptions {
    RigOptions {
        upstream,
        ha: 4,
        proxy_log_level: args.proxy_log_level.clone(),
        faults: false,
        wrap: None,
    }
}

const SECTIONS: [&str; 5] = ["calls", "bulk", "sessions", "idle", "connector"];

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(s) = args
        .sections
        .iter()
        .find(|s| !SECTIONS.contains(&s.as_str()))
    {
        anyhow::bail!("unknown section {s:?} (available: {})", SECTIONS.join(", "));
    }
    let updir = tempfile::tempdir()?;
    let up = Upstream::start(
        SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        updir.path(),
    )
    .await?;
    let upstream = up.addr;
    println!("# mcp-tunnel-bench all");
    println!();
    println!("machine: {}", machine());
    println!(
        "mcp-tunnel: client → edge → connector (4 links) → proxy (log level {}) → minimal MCP responder (hyper, one thread, its own process); every role a release process; inner TLS 1.3 to the proxy, h2 unless noted",
        args.proxy_log_level
    );
    let rig = Rig::start(opts(&args, upstream)).await?;
    let mut others = Vec::new();
    for (name, start) in [("rathole", 0), ("bore", 1)] {
        let Some(bin) = others::tool(&args.tools_dir, name) else {
            println!(
                "{name}: not found in {} (bench/run.sh builds it): left out",
                args.tools_dir.display()
            );
            continue;
        };
        let work = rig.dir.path();
        let o = if start == 0 {
            others::rathole(&bin, work, upstream).await
        } else {
            others::bore(&bin, work, upstream).await
        };
        match o {
            Ok(o) => others.push(o),
            Err(e) => println!("{name}: could not start: {e:#}"),
        }
    }
    println!(
        "others: {} (plain TCP tunnels, no encryption), version from crates.io",
        others.iter().map(|o| o.name).collect::<Vec<_>>().join(", ")
    );
    let part = |name: &str| args.sections.is_empty() || args.sections.iter().any(|s| s == name);
    if part("calls") {
        calls(&args, &rig, &others, upstream).await?;
    }
    if part("bulk") {
        bulk_all(&args, &rig, &others, &up).await?;
    }
    if part("sessions") {
        session_rates(&args, &rig, &others, upstream).await?;
    }
    drop(rig);
    if part("idle") {
        idle(&args, &others, upstream).await?;
    }
    drop(others);
    if part("connector") {
        connector_times(&args, upstream).await?;
    }
    drop(up);
    Ok(())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

async fn calls(
    args: &Args,
    rig: &Rig,
    others: &[Other],
    upstream: SocketAddr,
) -> anyhow::Result<()> {
    println!();
    println!("## MCP tools/call");
    println!();
    println!(
        "\"tunnel CPU\": user + system CPU time per request of the tunnel's own processes (mcp-tunnel: edge, connector, proxy; rathole and bore: server and client), from /proc; \"client CPU\": the load generator's (for mcp-tunnel it runs outer TLS, WebSocket and inner TLS too). Both barely move with machine load."
    );
    println!();
    println!(
        "| concurrency | path | req/s | p50 µs | p99 µs | vs direct | vs rathole | vs bore | tunnel CPU µs/req | client CPU µs/req |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let h1 = rig.inner.http1_only();
    for conc in [1usize, 32, 256] {
        let mut names = vec!["direct".to_owned()];
        let mut pools = vec![Pool::new(conc, || direct_conn(upstream)).await?];
        for o in others {
            names.push(o.name.to_owned());
            pools.push(
                Pool::new(conc, || direct_conn(o.addr))
                    .await?
                    .watching([o.server.pid(), o.client.pid()]),
            );
        }
        let tunnel_pids = rig.pids().map(|(_, p)| p);
        names.push("mcp-tunnel (inner h2)".into());
        pools.push(
            Pool::new(conc, || async { Ok(Conn::Tunnel(rig.session().await?)) })
                .await?
                .watching(tunnel_pids),
        );
        names.push("mcp-tunnel (inner HTTP/1.1)".into());
        pools.push(
            Pool::new(conc, || async {
                Ok(Conn::Tunnel(rig.session_with(&rig.dialer, &h1).await?))
            })
            .await?
            .watching(tunnel_pids),
        );
        let stats = compare(pools, Duration::from_secs(args.seconds)).await?;
        let find = |n: &str| names.iter().position(|x| x == n).map(|i| &stats[i]);
        let base = &stats[0];
        for (name, s) in names.iter().zip(&stats) {
            let vs = |o: Option<&Stats>| o.map_or("–".into(), |o| ratio(s.rps, o.rps));
            println!(
                "| {conc} | {name} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                s.rps,
                s.p50.as_micros(),
                s.p99.as_micros(),
                ratio(s.rps, base.rps),
                vs(find("rathole")),
                vs(find("bore")),
                s.tunnel_cpu
                    .map_or("–".into(), |d| d.as_micros().to_string()),
                s.client_cpu.as_micros(),
            );
        }
        let tunnel = find("mcp-tunnel (inner h2)").expect("tunnel row");
        println!(
            "| {conc} | ↳ mcp-tunnel (h2) added p50 over direct | | +{} µs | | | | | | |",
            tunnel.p50.as_micros() as i128 - base.p50.as_micros() as i128
        );
    }
    Ok(())
}

/// One path's best bulk transfer, and the CPU each side spent during it.
#[derive(Default, Clone, Copy)]
struct BulkRun {
    mbs: f64,
    /// Cores kept busy during the transfer (CPU time / wall time): the tunnel's own
    /// processes, this load generator, the upstream responder.
    tunnel: f64,
    client: f64,
    upstream: f64,
}

async fn bulk_measured(
    c: Conn,
    size: u64,
    tunnel_pids: &[u32],
    upstream_pid: u32,
) -> anyhow::Result<BulkRun> {
    let me = [std::process::id()];
    let before = [
        cpu_time(tunnel_pids),
        cpu_time(&me),
        cpu_time(&[upstream_pid]),
    ];
    let start = Instant::now();
    let mbs = bulk(c, size).await?;
    let wall = start.elapsed().as_secs_f64();
    let busy =
        |after: Duration, before: Duration| after.saturating_sub(before).as_secs_f64() / wall;
    Ok(BulkRun {
        mbs,
        tunnel: busy(cpu_time(tunnel_pids), before[0]),
        client: busy(cpu_time(&me), before[1]),
        upstream: busy(cpu_time(&[upstream_pid]), before[2]),
    })
}

async fn bulk_all(
    args: &Args,
    rig: &Rig,
    others: &[Other],
    upstream: &Upstream,
) -> anyhow::Result<()> {
    let size = args.bulk_mib * 1024 * 1024;
    println!();
    println!(
        "## Bulk: one {} MiB response, best of 3 alternating transfers",
        args.bulk_mib
    );
    println!();
    println!(
        "\"cores busy\": CPU time (user + system, /proc, 10 ms ticks) during the best transfer divided by its wall time, for the tunnel's own processes, the load generator (for mcp-tunnel it opens outer TLS, WebSocket and inner TLS too) and the upstream responder. Their sum against the machine's {} cores says whether the transfer was CPU-bound.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| path | MB/s | vs direct | vs rathole | vs bore | cores busy: tunnel | client | upstream | total |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut names = vec!["direct"];
    names.extend(others.iter().map(|o| o.name));
    names.push("mcp-tunnel (inner HTTP/1.1)");
    names.push("mcp-tunnel (inner h2)");
    let tunnel_pids = rig.pids().map(|(_, p)| p);
    let up = upstream.pid();
    let mut best = vec![BulkRun::default(); names.len()];
    let mut keep = |i: usize, r: BulkRun| {
        if r.mbs > best[i].mbs {
            best[i] = r;
        }
    };
    for _ in 0..3 {
        keep(
            0,
            bulk_measured(direct_conn(upstream.addr).await?, size, &[], up).await?,
        );
        for (i, o) in others.iter().enumerate() {
            let pids = [o.server.pid(), o.client.pid()];
            keep(
                1 + i,
                bulk_measured(direct_conn(o.addr).await?, size, &pids, up).await?,
            );
        }
        let n = others.len();
        let h1 = rig.inner.http1_only();
        let s = rig.session_with(&rig.dialer, &h1).await?;
        keep(
            1 + n,
            bulk_measured(Conn::Tunnel(s), size, &tunnel_pids, up).await?,
        );
        let s = rig.session().await?;
        keep(
            2 + n,
            bulk_measured(Conn::Tunnel(s), size, &tunnel_pids, up).await?,
        );
    }
    let find = |n: &str| names.iter().position(|x| *x == n).map(|i| best[i].mbs);
    for (name, r) in names.iter().zip(&best) {
        let vs = |o: Option<f64>| o.map_or("–".into(), |o| ratio(r.mbs, o));
        let tunnel = if *name == "direct" {
            "–".to_owned()
        } else {
            format!("{:.2}", r.tunnel)
        };
        println!(
            "| {name} | {:.0} | {} | {} | {} | {tunnel} | {:.2} | {:.2} | {:.2} |",
            r.mbs,
            ratio(r.mbs, best[0].mbs),
            vs(find("rathole")),
            vs(find("bore")),
            r.client,
            r.upstream,
            r.tunnel + r.client + r.upstream,
        );
    }
    Ok(())
}

async fn session_rates(
    args: &Args,
    rig: &Rig,
    others: &[Other],
    upstream: SocketAddr,
) -> anyhow::Result<()> {
    println!();
    println!(
        "## New sessions: open + one tools/call + close, {} at a time",
        args.session_concurrency
    );
    println!();
    println!(
        "mcp-tunnel: TCP + outer TLS to the edge + WebSocket + inner TLS to the proxy (h2). \"resumed\": one dialer and one inner-TLS config shared by all sessions, so both TLS layers may resume; \"full\": a new dialer each time and inner resumption off, so both handshakes are full. Direct, rathole and bore: a new TCP connection."
    );
    println!();
    println!(
        "| proxy certificate | path | sessions/s | p50 ms | resumed | vs direct | vs rathole | vs bore |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for kind in [KeyKind::EcdsaP256, KeyKind::Rsa4096] {
        sessions::serve_cert(rig, kind).await?;
        let label = match kind {
            KeyKind::Rsa4096 => "RSA-4096",
            _ => "ECDSA P-256",
        };
        let mut names = vec!["direct".to_owned()];
        let mut paths = vec![Opener::Tcp(upstream)];
        for o in others {
            names.push(o.name.to_owned());
            paths.push(Opener::Tcp(o.addr));
        }
        names.push("mcp-tunnel, resumed".into());
        paths.push(Opener::Tunnel {
            dialer: rig.fresh_dialer()?,
            inner: rig.inner_tls(true)?,
            fresh: None,
        });
        names.push("mcp-tunnel, full handshakes".into());
        paths.push(Opener::Tunnel {
            dialer: rig.fresh_dialer()?,
            inner: rig.inner_tls(false)?,
            fresh: Some(rig.dialer_factory()),
        });
        let r = sessions::rates(&paths, args.session_concurrency, args.seconds).await?;
        let find = |n: &str| names.iter().position(|x| x == n).map(|i| r[i]);
        for (name, x) in names.iter().zip(&r) {
            let vs = |o: Option<Rate>| o.map_or("–".into(), |o| ratio(x.per_sec, o.per_sec));
            println!(
                "| {label} | {name} | {:.0} | {:.2} | {:.0}% | {} | {} | {} |",
                x.per_sec,
                x.p50.as_secs_f64() * 1e3,
                x.resumed * 100.0,
                ratio(x.per_sec, r[0].per_sec),
                vs(find("rathole")),
                vs(find("bore"))
            );
        }
    }
    sessions::serve_cert(rig, KeyKind::EcdsaP256).await?;
    Ok(())
}

fn idle_rows(idle: &Idle) {
    for (name, before, after, fds) in &idle.rows {
        println!(
            "| {name} | {} | {} | {} | {:.1} | {fds} |",
            before / 1024,
            after / 1024,
            after.saturating_sub(*before) / 1024,
            after.saturating_sub(*before) as f64 / idle.streams as f64
        );
    }
    println!(
        "| **total** | | **{} MiB** | {} | {:.1} | |",
        idle.total_after() / 1024,
        idle.total_growth() / 1024,
        idle.total_growth() as f64 / idle.streams as f64
    );
}

async fn idle(args: &Args, others: &[Other], upstream: SocketAddr) -> anyhow::Result<()> {
    let want = args.idle_sessions.unwrap_or(10_000);
    // With a session per stream the proxy holds two descriptors per stream (the
    // connector's connection and the upstream's), and so do rathole's and bore's
    // clients; the hard open-file limit here (20000, not raisable in this container)
    // caps those runs just under 10,000.
    let limit = nofile_limit() as usize;
    let per_session_n = want.min(limit.saturating_sub(100) / 2);
    println!();
    println!("## {want} idle SSE streams (MCP GET streams that sent one event, then stay quiet)");
    println!();
    println!(
        "RSS of each process once all streams are open; \"before\" is after a warm-up of 20 streams on a fresh stack."
    );
    if per_session_n < want {
        println!(
            "Open-file limit {limit}: runs that need two descriptors per stream in one process measure {per_session_n} streams; per-stream figures carry over."
        );
    }
    for (title, per, n) in [
        (
            "one tunnel session per stream (what 10,000 separate MCP clients cost)",
            1usize,
            per_session_n,
        ),
        (
            "100 h2 streams per inner-TLS session (what `mcp-tunnel connect` does for one MCP client's streams: up to --streams-per-session 100 per session; 100 sessions)",
            100,
            want,
        ),
    ] {
        let rig = Rig::start(opts(args, upstream)).await?;
        let started = Instant::now();
        let r = sessions::idle_tunnel(&rig, n, per).await?;
        println!();
        println!(
            "### mcp-tunnel, {n} streams, {title}; opened in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        println!();
        println!(
            "| process | RSS before MiB | RSS after MiB | growth MiB | KiB per stream | fds |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        idle_rows(&r);
    }
    for o in others {
        let r = sessions::idle_other(o, per_session_n).await?;
        println!();
        println!(
            "### {}, {per_session_n} streams, one TCP connection each",
            o.name
        );
        println!();
        println!(
            "| process | RSS before MiB | RSS after MiB | growth MiB | KiB per stream | fds |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        idle_rows(&r);
    }
    Ok(())
}

async fn connector_times(args: &Args, upstream: SocketAddr) -> anyhow::Result<()> {
    let mut rig = Rig::start(opts(args, upstream)).await?;
    println!();
    println!("## Connector start-to-ready and reconnect (4 links)");
    println!();
    println!(
        "| run | connector start → 4 links registered ms | edge restart: new edge listening → 4 links re-registered ms | edge stop → first tools/call through the new edge ms |"
    );
    println!("|---:|---:|---:|---:|");
    for run in 1..=3 {
        // A second connector for the same tunnel, from spawn.
        let log = rig.dir.path().join(format!("connector-extra-{run}.log"));
        let started = Instant::now();
        let mut extra = rig.spawn_connector(&log)?;
        extra
            .wait_lines(0, REGISTERED, 4, Duration::from_secs(30))
            .await?;
        let ready = started.elapsed();
        extra.stop(Duration::from_secs(5)).await;

        let edge = rig.edge.take().expect("edge running");
        let mark = rig.connector_mark();
        let stopped = Instant::now();
        edge.stop(Duration::from_secs(10)).await;
        rig.start_edge().await?;
        let listening = Instant::now();
        rig.wait_registered(mark, 4, Duration::from_secs(30))
            .await?;
        let relinked = listening.elapsed();
        let first = loop {
            if let Ok(s) = rig.session().await {
                let mut c = Conn::Tunnel(s);
                if crate::one(&mut c).await.is_ok() {
                    break stopped.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!(
            "| {run} | {} | {} | {} |",
            ready.as_millis(),
            relinked.as_millis(),
            first.as_millis()
        );
    }
    Ok(())
}
