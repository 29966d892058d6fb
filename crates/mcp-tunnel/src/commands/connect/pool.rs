//! Inner-TLS sessions to one route, reused across requests. An h2 session (what the
//! proxy offers first) is shared: concurrent requests run as its streams, up to
//! `streams_per_session` each, so a client holding many long SSE streams costs the tunnel
//! a few sessions rather than one per stream. An HTTP/1.1 session is leased to one
//! request and goes back to the pool only once the response body has been read to its
//! end. A closed session is dropped and a new one opened. The tunnel's registered CAs can
//! be replaced at run time: the pool then forgets its sessions, so no new request travels
//! over trust that was withdrawn.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// An h2 session that takes concurrent requests, and how many it carries now.
#[derive(Debug)]
struct Shared {
    generation: u64,
    session: Session,
    streams: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub struct Pool {
    dialer: EdgeDialer,
    route_host: String,
    trust: Mutex<Trust>,
    /// HTTP/1.1 sessions waiting for a request.
    idle: Mutex<Vec<(u64, Session)>>,
    /// h2 sessions, shared by concurrent requests.
    shared: Mutex<Vec<Shared>>,
    max_idle: usize,
    /// Requests carried at once by one h2 session; at most the proxy's
    /// `limits.max_concurrent_streams`, or requests beyond it wait for a stream to end.
    streams_per_session: usize,
    /// How long to keep trying to open a session while the tunnel is unreachable.
    open_timeout: Duration,
    /// Held while opening a session as long as sessions multiplex, so a burst of
    /// requests shares the session the first of them opens instead of opening one each.
    opening: tokio::sync::Mutex<()>,
    /// The last session opened negotiated HTTP/1.1: opens then run in parallel.
    http1: AtomicBool,
}

/// A session checked out of the pool, with the trust generation it was made under.
#[derive(Debug)]
pub struct Lease {
    pub session: Session,
    generation: u64,
    pub reused: bool,
    /// For a shared h2 session: this request's place among its streams, freed on drop.
    stream: Option<StreamSlot>,
}

#[derive(Debug)]
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    pub fn new(
        dialer: EdgeDialer,
        route_host: String,
        tls: InnerTls,
        max_idle: usize,
        streams_per_session: usize,
        open_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            dialer,
            route_host,
            trust: Mutex::new(Trust { tls, generation: 0 }),
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(Vec::new()),
            max_idle,
            streams_per_session: streams_per_session.max(1),
            open_timeout,
            opening: tokio::sync::Mutex::new(()),
            http1: AtomicBool::new(false),
        })
    }

    /// New trust (the tunnel's CAs changed): idle sessions are closed.
    pub fn set_trust(&self, tls: InnerTls) {
        let mut t = self.trust.lock().unwrap_or_else(|p| p.into_inner());
        t.tls = tls;
        t.generation += 1;
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        // Requests already in flight finish on their sessions; no new one starts there.
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn current(&self) -> (InnerTls, u64) {
        let t = self.trust.lock().unwrap_or_else(|p| p.into_inner());
        (t.tls.clone(), t.generation)
    }

    /// A stream on a shared h2 session with room, an idle HTTP/1.1 session, or a new one.
    pub async fn checkout(&self) -> Result<Lease, ClientError> {
        let (_, generation) = self.current();
        if let Some(lease) = self.share(generation) {
            return Ok(lease);
        }
        loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some((g, session)) if g == generation && session.is_open() => {
                    return Ok(Lease {
                        session,
                        generation: g,
                        reused: true,
                        stream: None,
                    });
                }
                Some(_) => continue,
                None => break,
            }
        }
        self.open().await
    }

    /// A stream on the least busy shared session with room. Closed sessions, sessions of
    /// older trust, and unused ones beyond `max_idle` leave the list here.
    fn share(&self, generation: u64) -> Option<Lease> {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut unused = 0;
        shared.retain(|s| {
            if s.generation != generation || !s.session.is_open() {
                return false;
            }
            if s.streams.load(Ordering::Acquire) > 0 {
                return true;
            }
            unused += 1;
            unused <= self.max_idle.max(1)
        });
        let s = shared
            .iter()
            .filter(|s| s.streams.load(Ordering::Acquire) < self.streams_per_session)
            .min_by_key(|s| s.streams.load(Ordering::Acquire))?;
        Some(Lease {
            session: s.session.share()?,
            generation,
            reused: true,
            stream: Some(StreamSlot::take(&s.streams)),
        })
    }

    /// Opens a session, retrying while the tunnel is briefly unreachable (a connector
    /// reconnecting, the edge restarting). Certificate refusals are not retried. A new
    /// h2 session joins the shared ones, this request being its first stream.
    pub async fn open(&self) -> Result<Lease, ClientError> {
        // One budget for waiting on another request's open and for our own: while the
        // tunnel is unreachable, requests queued here must not wait a timeout each.
        let deadline = Instant::now() + self.open_timeout;
        let _opening = if self.http1.load(Ordering::Acquire) {
            None
        } else {
            match tokio::time::timeout_at(deadline.into(), self.opening.lock()).await {
                Ok(guard) => {
                    // Another request may have opened a session with room meanwhile.
                    if let Some(lease) = self.share(self.current().1) {
                        return Ok(lease);
                    }
                    Some(guard)
                }
                // Out of time behind another open: one attempt of our own.
                Err(_) => None,
            }
        };
        let mut lease = self.dial(deadline).await?;
        self.http1
            .store(lease.session.protocol() == "http/1.1", Ordering::Release);
        if let Some(handle) = lease.session.share() {
            let streams = Arc::new(AtomicUsize::new(0));
            lease.stream = Some(StreamSlot::take(&streams));
            let (_, generation) = self.current();
            if lease.generation == generation {
                self.shared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Shared {
                        generation,
                        session: handle,
                        streams,
                    });
            }
        }
        Ok(lease)
    }

    /// Opens a session, retrying until `deadline` (at least one attempt).
    async fn dial(&self, deadline: Instant) -> Result<Lease, ClientError> {
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
                        stream: None,
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

    /// Returns a session whose last response was read to its end. A shared session's
    /// stream is simply released.
    pub fn give_back(&self, lease: Lease) {
        if lease.stream.is_some() {
            return;
        }
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
