//! Session-level figures for `all`: how many new sessions per second each path opens
//! (each used for one tools/call, so every path does the same work), and what 10,000
//! idle SSE streams cost in memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mcp_tunnel_client::edge::EdgeDialer;
use mcp_tunnel_client::{ClientBody, InnerTls, Session};
use mcp_tunnel_pki::generate::KeyKind;

use crate::others::Other;
use crate::procs::{fd_count, rss_kib};
use crate::rig::{DialerFactory, Rig};
use crate::{Conn, direct_conn, one};

/// How a new session is made on one path.
#[derive(Clone)]
pub enum Opener {
    /// A new TCP connection to this address (direct, rathole, bore).
    Tcp(SocketAddr),
    /// A new session through the edge; `fresh` makes a new dialer each time, so the
    /// outer TLS cannot resume either.
    Tunnel {
        dialer: EdgeDialer,
        inner: InnerTls,
        fresh: Option<DialerFactory>,
    },
}

impl Opener {
    async fn open(&self) -> anyhow::Result<(Conn, bool)> {
        Ok(match self {
            Opener::Tcp(a) => (direct_conn(*a).await?, false),
            Opener::Tunnel {
                dialer,
                inner,
                fresh,
            } => {
                let s = match fresh {
                    Some(make) => make()?.open(crate::rig::ROUTE_HOST, inner).await?,
                    None => dialer.open(crate::rig::ROUTE_HOST, inner).await?,
                };
                let resumed = s.resumed();
                (Conn::Tunnel(s), resumed)
            }
        })
    }
}

/// Sessions opened per second, their p50 (open + one call), and the share that resumed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rate {
    pub per_sec: f64,
    pub p50: Duration,
    pub resumed: f64,
}

#[derive(Default)]
struct Tally {
    lat: Vec<Duration>,
    resumed: usize,
    busy: Duration,
}

/// `conc` tasks each open a session, make one tools/call and drop it, for one second.
async fn round(op: &Opener, conc: usize, t: &mut Tally) -> anyhow::Result<()> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut resumed = 0;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let (mut c, r) = op.open().await?;
                one(&mut c).await?;
                lat.push(t0.elapsed());
                resumed += usize::from(r);
            }
            anyhow::Ok((lat, resumed))
        }));
    }
    for task in tasks {
        let (lat, r) = task.await??;
        t.lat.extend(lat);
        t.resumed += r;
    }
    t.busy += start.elapsed();
    Ok(())
}

/// Alternating one-second rounds over `paths` for `secs` rounds.
pub async fn rates(paths: &[Opener], conc: usize, secs: u64) -> anyhow::Result<Vec<Rate>> {
    let mut tallies: Vec<Tally> = paths.iter().map(|_| Tally::default()).collect();
    for op in paths {
        let mut warm = Tally::default();
        round(op, 1, &mut warm).await?;
    }
    for _ in 0..secs.max(1) {
        for (op, t) in paths.iter().zip(tallies.iter_mut()) {
            round(op, conc, t).await?;
        }
    }
    Ok(tallies
        .into_iter()
        .map(|mut t| {
            t.lat.sort();
            let n = t.lat.len().max(1);
            Rate {
                per_sec: t.lat.len() as f64 / t.busy.as_secs_f64(),
                p50: t.lat.get(n / 2).copied().unwrap_or_default(),
                resumed: t.resumed as f64 / n as f64,
            }
        })
        .collect())
}

/// Switches the proxy to a new certificate of `kind` and waits until new sessions get it.
pub async fn serve_cert(rig: &Rig, kind: KeyKind) -> anyhow::Result<()> {
    let fingerprint = rig.rotate_cert(kind)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = rig
            .session_with(&rig.fresh_dialer()?, &rig.inner_tls(false)?)
            .await?;
        if s.peer_fingerprint() == fingerprint {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the proxy did not serve the {kind:?} certificate within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sse_request() -> Request<ClientBody> {
    Request::get("/sse")
        .header("accept", "text/event-stream")
        .body(
            Full::new(Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
        )
        .expect("request")
}

/// Opens a GET stream on `conn` and waits for its first event: the stream is then live
/// end to end and idle from here on.
async fn open_stream(conn: &mut Conn) -> anyhow::Result<Incoming> {
    let resp = conn.send(sse_request()).await?;
    if resp.status() != 200 {
        bail!("SSE: status {}", resp.status());
    }
    let mut body = resp.into_body();
    let frame = body.frame().await.context("SSE ended")??;
    if !frame.data_ref().is_some_and(|d| d.starts_with(b"event:")) {
        bail!("SSE: the first frame is not an event");
    }
    Ok(body)
}

/// Memory of idle SSE streams: one row per process, plus the total.
#[derive(Debug)]
pub struct Idle {
    pub rows: Vec<(String, u64, u64, usize)>, // name, RSS before, RSS after (KiB), fds after
    pub streams: usize,
}

impl Idle {
    pub fn total_after(&self) -> u64 {
        self.rows.iter().map(|r| r.2).sum()
    }
    pub fn total_growth(&self) -> u64 {
        self.rows.iter().map(|r| r.2.saturating_sub(r.1)).sum()
    }
}

fn measure(pids: &[(&str, u32)]) -> Vec<(String, u64, usize)> {
    pids.iter()
        .map(|(n, p)| ((*n).to_owned(), rss_kib(*p), fd_count(*p)))
        .collect()
}

/// `n` SSE streams, `per_session` per session (1: a session each; more: h2 streams
/// multiplexed over one inner-TLS session), opened `conc` at a time, held idle.
pub async fn idle_tunnel(rig: &Rig, n: usize, per_session: usize) -> anyhow::Result<Idle> {
    let pids: Vec<(&str, u32)> = rig.pids().to_vec();
    // A first batch warms allocator pools and lazily built state.
    let mut warm = Vec::new();
    for _ in 0..20 {
        let mut c = Conn::Tunnel(rig.session().await?);
        let b = open_stream(&mut c).await?;
        warm.push((c, b));
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = measure(&pids);
    let sessions = n.div_ceil(per_session);
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    for i in 0..sessions {
        let streams = per_session.min(n - i * per_session);
        let (dialer, inner) = (rig.dialer.clone(), rig.inner.clone());
        let (gate, tx, failed) = (gate.clone(), tx.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let s: Session = dialer.open(crate::rig::ROUTE_HOST, &inner).await?;
            let mut c = Conn::Tunnel(s);
            let mut bodies = Vec::with_capacity(streams);
            for _ in 0..streams {
                match open_stream(&mut c).await {
                    Ok(b) => bodies.push(b),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            let _ = tx.send((c, bodies));
            anyhow::Ok(())
        }));
    }
    drop(tx);
    for t in tasks {
        t.await??;
    }
    let mut held = Vec::new();
    while let Some(x) = rx.recv().await {
        held.push(x);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = measure(&pids);
    let rows = before
        .into_iter()
        .zip(after)
        .map(|(b, a)| (b.0, b.1, a.1, a.2))
        .collect();
    drop(held);
    Ok(Idle { rows, streams: n })
}

/// The same `n` streams through another tunnel, one TCP connection each.
pub async fn idle_other(other: &Other, n: usize) -> anyhow::Result<Idle> {
    let pids = [
        ("server", other.server.pid()),
        ("client", other.client.pid()),
    ];
    let before = measure(&pids);
    let mut held = Vec::with_capacity(n);
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (gate, addr) = (gate.clone(), other.addr);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let mut c = direct_conn(addr).await?;
            let b = open_stream(&mut c).await?;
            anyhow::Ok((c, b))
        }));
    }
    for t in tasks {
        held.push(t.await??);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = measure(&pids);
    let rows = before
        .into_iter()
        .zip(after)
        .map(|(b, a)| (format!("{} {}", other.name, b.0), b.1, a.1, a.2))
        .collect();
    drop(held);
    Ok(Idle { rows, streams: n })
}
