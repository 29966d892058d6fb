//! A userspace fault injector: a TCP relay between two roles that can add latency and
//! jitter, emulate packet loss, stall (blackhole) every connection, and drop a chosen
//! connection. This machine's kernel has no `netem` qdisc, so the faults that `tc` would
//! inject on a link are injected here instead, on loopback.
//!
//! Loss is emulated as TCP makes it visible to an application: a lost segment is
//! retransmitted after the retransmission timeout, so with probability `loss` a chunk
//! is held back by `loss_penalty` (200 ms, Linux's minimum RTO) and everything behind it
//! waits. Order is always kept, and delayed chunks are pipelined (a chunk's delay starts
//! when it is read), so latency does not cap throughput the way a per-chunk sleep would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The faults currently applied to every relayed byte.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Added one-way delay.
    pub delay: Duration,
    /// Up to this much more, uniformly at random, per chunk.
    pub jitter: Duration,
    /// Probability that a chunk is "lost" and so held back by `loss_penalty`.
    pub loss: f64,
    pub loss_penalty: Duration,
    /// Nothing is forwarded while set (a partition without resets).
    pub stalled: bool,
}

struct Shared {
    faults: watch::Sender<Faults>,
    conns: Mutex<BTreeMap<u64, JoinHandle<()>>>,
    next: AtomicU64,
    rng: AtomicU64,
}

/// A running relay; stops accepting and drops every connection on drop.
pub struct FaultProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on `listen` (port 0 for any) and relays every connection to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let shared = Arc::new(Shared {
            faults: watch::channel(Faults::default()).0,
            conns: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let id = s.next.fetch_add(1, Ordering::Relaxed);
                let s2 = s.clone();
                let task = tokio::spawn(async move {
                    relay(down, target, &s2).await;
                    s2.conns.lock().unwrap().remove(&id);
                });
                s.conns.lock().unwrap().insert(id, task);
            }
        });
        Ok(Self {
            addr,
            target,
            shared,
            accept,
        })
    }

    pub fn set(&self, faults: Faults) {
        self.shared.faults.send_replace(faults);
    }

    /// Drops the oldest relayed connection (both of its sockets close); whether one was.
    pub fn drop_oldest(&self) -> bool {
        let first = {
            let mut conns = self.shared.conns.lock().unwrap();
            let key = conns.keys().next().copied();
            key.and_then(|k| conns.remove(&k))
        };
        match first {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, t) in std::mem::take(&mut *self.shared.conns.lock().unwrap()) {
            t.abort();
        }
    }
}

async fn relay(down: TcpStream, target: SocketAddr, s: &Arc<Shared>) {
    let Ok(up) = TcpStream::connect(target).await else {
        return;
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    // When either direction ends, the whole connection goes, as a TCP relay's would.
    tokio::select! {
        _ = pipe(dr, uw, s.clone()) => {}
        _ = pipe(ur, dw, s.clone()) => {}
    }
}

/// One direction: a reader stamps each chunk with the time it may leave, a writer sends
/// it then, in order.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    s: Arc<Shared>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(256);
    let mut faults = s.faults.subscribe();
    let rng = s.clone();
    // The reader owns the sender: when the source closes, the writer drains what is
    // queued and then passes the close on (a borrowed sender would keep it waiting).
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let f = *faults.borrow_and_update();
            let mut due = Instant::now() + f.delay;
            if !f.jitter.is_zero() {
                due += f.jitter.mul_f64(random(&rng.rng));
            }
            if f.loss > 0.0 && random(&rng.rng) < f.loss {
                due += f.loss_penalty;
            }
            due = due.max(last);
            last = due;
            if tx
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let writer = async {
        let mut faults = s.faults.subscribe();
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            while faults.borrow_and_update().stalled {
                if faults.changed().await.is_err() {
                    return;
                }
            }
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// xorshift64*, in [0, 1): enough to spread jitter and loss, no dependency needed.
fn random(state: &AtomicU64) -> f64 {
    let mut x = state.load(Ordering::Relaxed);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.store(x, Ordering::Relaxed);
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> (TcpStream, Duration) {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let t = Instant::now();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        (c, t.elapsed())
    }

    #[tokio::test]
    async fn delay_applies_each_way_and_drop_closes_the_connection() {
        let p = FaultProxy::start("127.0.0.1:0".parse().unwrap(), echo().await)
            .await
            .unwrap();
        p.set(Faults {
            delay: Duration::from_millis(50),
            ..Faults::default()
        });
        let (mut c, rtt) = round_trip(p.addr).await;
        // Two relay hops of 50 ms each (request and echo).
        assert!(rtt >= Duration::from_millis(100), "rtt {rtt:?}");
        assert_eq!(p.shared.conns.lock().unwrap().len(), 1);
        assert!(p.drop_oldest());
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the dropped connection is closed");
    }

    #[tokio::test]
    async fn a_close_by_the_target_reaches_the_client() {
        // A target that answers and then closes, as a stopped edge does.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"bye").await.unwrap();
        });
        let p = FaultProxy::start("127.0.0.1:0".parse().unwrap(), target)
            .await
            .unwrap();
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
            .await
            .expect("the close is passed on, not held")
            .unwrap();
        assert_eq!(got, b"bye");
    }

    #[tokio::test]
    async fn a_stall_holds_bytes_until_lifted() {
        let p = FaultProxy::start("127.0.0.1:0".parse().unwrap(), echo().await)
            .await
            .unwrap();
        let stalled = Faults {
            stalled: true,
            ..Faults::default()
        };
        p.set(stalled);
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut b))
                .await
                .is_err(),
            "nothing passes a stalled link"
        );
        p.set(Faults::default());
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b, b"ping");
    }
}
