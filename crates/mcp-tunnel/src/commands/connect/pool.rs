//! Inner-TLS sessions to one route, reused across requests. A session goes back to the
//! pool only once a response body has been read to its end (an HTTP/1.1 connection is
//! reusable only then); a closed one is dropped and a new one opened. The tunnel's
//! registered CAs can be replaced at run time: the pool then forgets its sessions, so no
//! request travels over trust that was withdrawn.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use mcp_tunnel_client::edge::EdgeDialer;
use mcp_tunnel_client::{ClientError, InnerTls, Session};

#[derive(Debug)]
struct Trust {
    tls: InnerTls,
    /// Bumped on every change, so sessions made under older trust are not reused.
    generation: u64,
}

#[derive(Debug)]
pub struct Pool {
    dialer: EdgeDialer,
    route_host: String,
    trust: Mutex<Trust>,
    idle: Mutex<Vec<(u64, Session)>>,
    max_idle: usize,
    /// How long to keep trying to open a session while the tunnel is unreachable.
    open_timeout: Duration,
}

/// A session checked out of the pool, with the trust generation it was made under.
#[derive(Debug)]
pub struct Lease {
    pub session: Session,
    generation: u64,
    pub reused: bool,
}

impl Pool {
    pub fn new(
        dialer: EdgeDialer,
        route_host: String,
        tls: InnerTls,
        max_idle: usize,
        open_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            dialer,
            route_host,
            trust: Mutex::new(Trust { tls, generation: 0 }),
            idle: Mutex::new(Vec::new()),
            max_idle,
            open_timeout,
        })
    }

    /// New trust (the tunnel's CAs changed): idle sessions are closed.
    pub fn set_trust(&self, tls: InnerTls) {
        let mut t = self.trust.lock().unwrap_or_else(|p| p.into_inner());
        t.tls = tls;
        t.generation += 1;
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn current(&self) -> (InnerTls, u64) {
        let t = self.trust.lock().unwrap_or_else(|p| p.into_inner());
        (t.tls.clone(), t.generation)
    }

    /// An open idle session, or a new one.
    pub async fn checkout(&self) -> Result<Lease, ClientError> {
        let (_, generation) = self.current();
        loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some((g, session)) if g == generation && session.is_open() => {
                    return Ok(Lease {
                        session,
                        generation: g,
                        reused: true,
                    });
                }
                Some(_) => continue,
                None => break,
            }
        }
        self.open().await
    }

    /// Opens a session, retrying while the tunnel is briefly unreachable (a connector
    /// reconnecting, the edge restarting). Certificate refusals are not retried.
    pub async fn open(&self) -> Result<Lease, ClientError> {
        let deadline = Instant::now() + self.open_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let (tls, generation) = self.current();
            match self.dialer.open(&self.route_host, &tls).await {
                Ok(session) => {
                    tracing::debug!(
                        resumed = session.resumed(),
                        protocol = session.protocol(),
                        "tunnel session opened"
                    );
                    return Ok(Lease {
                        session,
                        generation,
                        reused: false,
                    });
                }
                Err(e) if retryable(&e) && Instant::now() + delay < deadline => {
                    tracing::info!(error = %e, "tunnel unreachable, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Returns a session whose last response was read to its end.
    pub fn give_back(&self, lease: Lease) {
        let (_, generation) = self.current();
        if lease.generation != generation || !lease.session.is_open() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((lease.generation, lease.session));
        }
    }
}

/// Whether opening again may succeed without anything changing on our side.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect(_) | ClientError::WebSocket(_) | ClientError::Http(_) => true,
        // 502/503/504: no live connector yet, a replica away; 4xx are final.
        ClientError::Refused { status, .. } => *status >= 500,
        ClientError::Tls(_) | ClientError::ServerName(_) | ClientError::Config(_) => false,
    }
}

/// A response body that hands its session back to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

impl PooledBody {
    pub fn new(inner: Incoming, lease: Lease, pool: Arc<Pool>) -> Self {
        Self {
            inner,
            lease: Some(lease),
            pool,
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // The server may stop polling once the body says it has ended.
        let ended = matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream();
        if ended && let Some(lease) = self.lease.take() {
            self.pool.give_back(lease);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
