//! `mcp-tunnel-bench soak`: steady MCP tools/call traffic through the whole path for
//! `--duration` while faults are injected one after another: a tunnel link dropped,
//! latency and jitter, loss, a partition of the tunnel links, an edge restart, a
//! connector kill, an upstream restart, token rotation and certificate rotation. Every
//! link goes through a [`FaultProxy`] (userspace: this kernel has no netem).
//!
//! Each client worker paces its share of `--rate`; a request that fails is retried on a
//! new session with backoff for up to 30 s, and counts as lost after that. Afterwards:
//! requests sent, attempts failed, requests retried and lost, recovery time per fault,
//! and RSS and open descriptors of every process across the run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use mcp_tunnel_pki::generate::KeyKind;
use tokio::sync::mpsc;

use crate::faultproxy::Faults;
use crate::procs::{Upstream, fd_count, free_port, machine, rss_kib};
use crate::rig::{Rig, RigOptions};
use crate::{Args, Conn, one};

const WORKERS: usize = 16;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const GIVE_UP: Duration = Duration::from_secs(30);

/// One attempt at one request.
struct Event {
    worker: usize,
    start: Instant,
    end: Instant,
    error: Option<String>,
    /// For a success: how many attempts the request took.
    attempts: u32,
    lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    DropLink,
    Latency,
    Loss,
    Partition,
    EdgeRestart,
    ConnectorKill,
    UpstreamRestart,
    TokenRotation,
    CertRotation,
}

const ALL: [Fault; 9] = [
    Fault::DropLink,
    Fault::Latency,
    Fault::Loss,
    Fault::Partition,
    Fault::EdgeRestart,
    Fault::ConnectorKill,
    Fault::UpstreamRestart,
    Fault::TokenRotation,
    Fault::CertRotation,
];

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::DropLink => "one connector→edge connection dropped (the relay closes it)",
            Fault::Latency => {
                "+20 ms ±10 ms jitter each way on client→edge, connector→edge and proxy→upstream (10 s, or half a short slot)"
            }
            Fault::Loss => {
                "2% of chunks held back 200 ms (a retransmission) on client→edge and connector→edge (10 s, or half a short slot)"
            }
            Fault::Partition => {
                "connector→edge links blackholed (no bytes, no resets) (5 s, or a quarter of a short slot)"
            }
            Fault::EdgeRestart => "edge SIGTERM, then started again on the same ports",
            Fault::ConnectorKill => "connector SIGKILL, then a new connector started",
            Fault::UpstreamRestart => "MCP server SIGKILL, then started again on the same port",
            Fault::TokenRotation => {
                "new tunnel token into the connector's token file and the edge's store; edge restarted to load it"
            }
            Fault::CertRotation => "new proxy certificate (same CA) written; proxy hot-reloads it",
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let total = mcp_tunnel_net::duration::parse_duration(&args.duration)
        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    let updir = tempfile::tempdir()?;
    let up_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut upstream = Upstream::start(up_addr, updir.path()).await?;
    let mut rig = Rig::start(RigOptions {
        upstream: up_addr,
        ha: 4,
        proxy_log_level: args.proxy_log_level.clone(),
        faults: true,
        wrap: None,
    })
    .await?;
    println!("# mcp-tunnel-bench soak --duration {}", args.duration);
    println!();
    println!("machine: {}", machine());
    println!(
        "traffic: {WORKERS} clients, {} tools/call per second in total, each through its own session (client → edge → connector → proxy → MCP responder process); every link through a userspace fault relay",
        args.rate
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut workers = Vec::new();
    let interval = Duration::from_secs_f64(WORKERS as f64 / f64::from(args.rate.max(1)));
    for w in 0..WORKERS {
        let (dialer, inner, stop, tx) = (
            rig.dialer.clone(),
            rig.inner.clone(),
            stop.clone(),
            tx.clone(),
        );
        workers.push(tokio::spawn(worker(w, dialer, inner, interval, stop, tx)));
    }
    drop(tx);
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(e) = rx.recv().await {
            all.push(e);
        }
        all
    });

    let begin = Instant::now();
    let warm = Duration::from_secs(15).min(total / 6);
    tokio::time::sleep(warm).await;
    let mut samples = Samples::default();
    samples.take(&rig, &upstream, "after warm-up");
    // Faults share what is left, leaving a quiet tail to see the path settle.
    let tail = Duration::from_secs(10).min(total / 6);
    let budget = total.saturating_sub(warm + tail);
    // About 20 s per fault; a short run still goes through all nine, in shorter slots.
    let n = ((budget.as_secs() / 20) as usize)
        .max(((budget.as_secs() / 4) as usize).min(ALL.len()))
        .max(1);
    let slot = budget / n as u32;
    // Latency and loss last up to 10 s (a partition half that), within the slot.
    let hold = (slot / 2).min(Duration::from_secs(10));
    let mut log = Vec::new();
    for i in 0..n {
        let fault = ALL[i % ALL.len()];
        let slot_end = Instant::now() + slot;
        let t = Instant::now();
        // A failed injection (a role that did not come back) is reported, not fatal:
        // what the clients saw afterwards is the finding.
        let (t0, healed, note) = inject(fault, hold, &mut rig, &mut upstream)
            .await
            .unwrap_or_else(|e| (t, Instant::now(), format!("injection failed: {e:#}")));
        eprintln!("[{:>4.0} s] {fault:?}: {note}", (t0 - begin).as_secs_f64());
        log.push((fault, t0, healed, note));
        tokio::time::sleep_until(slot_end.into()).await;
        samples.take(&rig, &upstream, &format!("after {fault:?}"));
    }
    tokio::time::sleep_until((begin + total).into()).await;
    samples.take(&rig, &upstream, "end, under traffic");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let events = collector.await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    samples.take(&rig, &upstream, "end, traffic stopped");
    report(&events, &log, &samples, begin);
    if args.keep_logs {
        drop(upstream);
        let dir = rig.dir.path().to_owned();
        std::mem::forget(rig.dir);
        println!();
        println!("logs kept in {}", dir.display());
    }
    Ok(())
}

/// Injects `fault`; returns when it began, when the fault itself ended (the path may
/// still be recovering), and a note (e.g. links re-registered after so long).
async fn inject(
    fault: Fault,
    hold_for: Duration,
    rig: &mut Rig,
    upstream: &mut Upstream,
) -> anyhow::Result<(Instant, Instant, String)> {
    let links = rig.links.as_ref().context("fault links")?;
    let t0 = Instant::now();
    let mut note = String::new();
    let hold = |f: Faults, on: &[&crate::faultproxy::FaultProxy]| {
        for l in on {
            l.set(f);
        }
    };
    match fault {
        Fault::DropLink => {
            let mark = rig.connector_mark();
            links.tunnel.drop_oldest();
            let d = rig.wait_registered(mark, 1, GIVE_UP).await?;
            note = format!("link re-registered after {} ms", d.as_millis());
        }
        Fault::Latency | Fault::Loss | Fault::Partition => {
            let (f, on, hold_for): (Faults, Vec<_>, Duration) = match fault {
                Fault::Latency => (
                    Faults {
                        delay: Duration::from_millis(20),
                        jitter: Duration::from_millis(10),
                        ..Faults::default()
                    },
                    vec![&links.client, &links.tunnel, &links.upstream],
                    hold_for,
                ),
                Fault::Loss => (
                    Faults {
                        loss: 0.02,
                        loss_penalty: Duration::from_millis(200),
                        ..Faults::default()
                    },
                    vec![&links.client, &links.tunnel],
                    hold_for,
                ),
                _ => (
                    Faults {
                        stalled: true,
                        ..Faults::default()
                    },
                    vec![&links.tunnel],
                    hold_for / 2,
                ),
            };
            hold(f, &on);
            tokio::time::sleep(hold_for).await;
            hold(Faults::default(), &on);
        }
        Fault::EdgeRestart | Fault::TokenRotation => {
            if fault == Fault::TokenRotation {
                rig.rotate_token()?;
            }
            let mark = rig.connector_mark();
            if let Some(edge) = rig.edge.take() {
                edge.stop(Duration::from_secs(10)).await;
            }
            rig.start_edge().await?;
            let d = rig.wait_registered(mark, rig.opts.ha, GIVE_UP).await?;
            note = format!(
                "4 links re-registered {} ms after the new edge listened",
                d.as_millis()
            );
        }
        Fault::ConnectorKill => {
            if let Some(c) = rig.connector.take() {
                c.kill().await;
            }
            let t = Instant::now();
            rig.start_connector().await?;
            note = format!(
                "new connector: 4 links registered {} ms after spawn",
                t.elapsed().as_millis()
            );
        }
        Fault::UpstreamRestart => {
            upstream.restart().await?;
        }
        Fault::CertRotation => {
            let fp = rig.rotate_cert(KeyKind::EcdsaP256)?;
            let deadline = Instant::now() + GIVE_UP;
            loop {
                if let Ok(s) = rig.session().await
                    && s.peer_fingerprint() == fp
                {
                    note = format!(
                        "new sessions got the new certificate after {} ms",
                        t0.elapsed().as_millis()
                    );
                    break;
                }
                if Instant::now() > deadline {
                    note = "the new certificate was not served within 30 s".into();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok((t0, Instant::now(), note))
}

async fn worker(
    w: usize,
    dialer: mcp_tunnel_client::edge::EdgeDialer,
    inner: mcp_tunnel_client::InnerTls,
    interval: Duration,
    stop: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut session: Option<Conn> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let first = Instant::now();
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(20);
        loop {
            attempts += 1;
            let start = Instant::now();
            let result = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
                if session.is_none() {
                    let s = dialer.open(crate::rig::ROUTE_HOST, &inner).await?;
                    session = Some(Conn::Tunnel(s));
                }
                one(session.as_mut().expect("session")).await
            })
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("attempt timed out after 10 s")));
            let end = Instant::now();
            match result {
                Ok(()) => {
                    let _ = tx.send(Event {
                        worker: w,
                        start,
                        end,
                        error: None,
                        attempts,
                        lost: false,
                    });
                    break;
                }
                Err(e) => {
                    session = None;
                    let lost = first.elapsed() > GIVE_UP || stop.load(Ordering::Relaxed);
                    let _ = tx.send(Event {
                        worker: w,
                        start,
                        end,
                        error: Some(format!("{e:#}")),
                        attempts,
                        lost,
                    });
                    if lost {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

#[derive(Default)]
struct Samples {
    /// (label, seconds since start, role, pid, RSS KiB, fds)
    rows: Vec<(String, f64, &'static str, u32, u64, usize)>,
    start: Option<Instant>,
}

impl Samples {
    fn take(&mut self, rig: &Rig, upstream: &Upstream, label: &str) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let mut pids = rig.pids().to_vec();
        pids.push(("upstream", upstream.pid()));
        pids.push(("load generator", std::process::id()));
        for (role, pid) in pids {
            self.rows.push((
                label.to_owned(),
                start.elapsed().as_secs_f64(),
                role,
                pid,
                rss_kib(pid),
                fd_count(pid),
            ));
        }
    }
}

fn pct(v: &mut [Duration], p: f64) -> u128 {
    if v.is_empty() {
        return 0;
    }
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_millis()
}

fn report(
    events: &[Event],
    log: &[(Fault, Instant, Instant, String)],
    samples: &Samples,
    begin: Instant,
) {
    let ok: Vec<&Event> = events.iter().filter(|e| e.error.is_none()).collect();
    let failed = events.len() - ok.len();
    let lost = events.iter().filter(|e| e.lost).count();
    let retried = ok.iter().filter(|e| e.attempts > 1).count();
    println!();
    println!("## Requests");
    println!();
    println!(
        "| requests sent | succeeded | succeeded after a retry | lost (no success within 30 s of retries) | failed attempts |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {retried} | {lost} | {failed} |",
        ok.len() + lost,
        ok.len()
    );
    // One line for scripts and the short soak test.
    println!();
    println!(
        "soak: {} sent, {} succeeded, {retried} retried, {lost} lost, {failed} failed attempts",
        ok.len() + lost,
        ok.len()
    );
    println!();
    println!("## Faults");
    println!();
    println!(
        "Recovery: from the end of the fault (for a restart: when the old process was gone) until every client has completed a request that started after it; it includes the clients' retry backoff (20 ms doubling to 1 s) and pacing."
    );
    println!();
    println!(
        "| t s | fault | failed attempts | retried | lost | recovery ms | p99 ms in window | note |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---|");
    for (i, (fault, t0, healed, note)) in log.iter().enumerate() {
        let until = log.get(i + 1).map_or(Instant::now(), |n| n.1);
        let window: Vec<&Event> = events
            .iter()
            .filter(|e| e.start >= *t0 && e.start < until)
            .collect();
        let failed = window.iter().filter(|e| e.error.is_some()).count();
        let lost = window.iter().filter(|e| e.lost).count();
        let retried = window
            .iter()
            .filter(|e| e.error.is_none() && e.attempts > 1)
            .count();
        let mut lat: Vec<Duration> = window
            .iter()
            .filter(|e| e.error.is_none())
            .map(|e| e.end - e.start)
            .collect();
        let mut per_worker: BTreeMap<usize, Instant> = BTreeMap::new();
        for e in events
            .iter()
            .filter(|e| e.error.is_none() && e.start >= *healed)
        {
            per_worker
                .entry(e.worker)
                .and_modify(|t| *t = (*t).min(e.end))
                .or_insert(e.end);
        }
        let recovery = if per_worker.len() == WORKERS {
            per_worker
                .values()
                .max()
                .map_or("–".into(), |t| (*t - *healed).as_millis().to_string())
        } else {
            format!("not all ({}/{WORKERS})", per_worker.len())
        };
        println!(
            "| {:.0} | {} | {failed} | {retried} | {lost} | {recovery} | {} | {note} |",
            (*t0 - begin).as_secs_f64(),
            fault.describe(),
            pct(&mut lat, 0.99),
        );
    }
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for e in events.iter().filter_map(|e| e.error.as_ref()) {
        *errors.entry(e.chars().take(120).collect()).or_default() += 1;
    }
    println!();
    println!("Failed attempts by error:");
    println!();
    for (e, n) in &errors {
        println!("- {n} × {e}");
    }
    println!();
    println!("## Processes (RSS KiB / open fds)");
    println!();
    println!("| sample | t s | role | pid | RSS KiB | fds |");
    println!("|---|---:|---|---:|---:|---:|");
    for (label, t, role, pid, rss, fds) in &samples.rows {
        println!("| {label} | {t:.0} | {role} | {pid} | {rss} | {fds} |");
    }
}
