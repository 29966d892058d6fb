//! Benchmarks of the tunnel path against a direct connection, measured in the same run:
//! - `all`: every figure of docs/PERFORMANCE.md's main table in one run — tools/call at
//!   concurrency 1/32/256, bulk, new-session rates (ECDSA and RSA-4096, resumed or not),
//!   10,000 idle SSE streams, connector start and reconnect — beside direct, rathole and
//!   bore (`bench/run.sh` builds those and runs this);
//! - `soak`: steady traffic through the whole path for `--duration` while faults are
//!   injected (docs/RELIABILITY.md);
//! - `upstream`: the minimal MCP responder alone, as a process (the soak restarts it);
//! - `proxy`: a small MCP `tools/call` and a bulk download straight to the upstream (the
//!   baseline) and through the real `mcp-tunnel proxy` process (WebSocket + inner TLS);
//! - `tunnel`: the same through the whole path (client → edge → connector → proxy), plus
//!   memory per idle session in each process and connector start-to-ready time.
//!
//! The upstream is a minimal MCP responder written here on hyper, so the figures show our
//! cost rather than a Python server's. Build in release mode:
//! `cargo build --release -p mcp-tunnel -p mcp-tunnel-bench`, then
//! `target/release/mcp-tunnel-bench proxy` or `… tunnel`.

mod all;
mod faultproxy;
mod others;
mod procs;
mod profile;
mod rig;
mod sessions;
mod soak;
mod tunnel;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::Request;
use http_body_util::{BodyExt, Full};
use mcp_tunnel_client::{ClientBody, InnerTls, Session, Target};
use mcp_tunnel_testutil::logs::LoggedChild;
use mcp_tunnel_testutil::pki::TestPki;
use tokio::net::TcpStream;

pub(crate) const DOMAIN: &str = "bench000.tunnel.test";
const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":40,"b":2}}}"#;

#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// What to run: `all`, `soak`, `profile`, `proxy`, `tunnel` or `upstream`.
    #[arg(default_value = "proxy")]
    pub(crate) what: String,
    /// Idle sessions opened for the memory measurement (`tunnel`: 1000; `all`: 10000).
    #[arg(long)]
    pub(crate) idle_sessions: Option<usize>,
    /// The parts of `all` to run, comma-separated: calls, bulk, sessions, idle, connector
    /// (every part when not given).
    #[arg(long, value_delimiter = ',')]
    pub(crate) sections: Vec<String>,
    /// Where rathole and bore binaries are (`all`).
    #[arg(long, default_value = "/tmp/bench-tools/bin")]
    pub(crate) tools_dir: PathBuf,
    /// The proxy's log level in `all` and `soak` (`info` is what deployments run).
    #[arg(long, default_value = "info")]
    pub(crate) proxy_log_level: String,
    /// Sessions opened at once in the new-session rate (`all`).
    #[arg(long, default_value_t = 4)]
    pub(crate) session_concurrency: usize,
    /// How long the soak runs, Go-style (`10m`, `60s`).
    #[arg(long, default_value = "10m")]
    pub(crate) duration: String,
    /// Requests per second the soak's clients send, in total.
    #[arg(long, default_value_t = 400)]
    pub(crate) rate: u32,
    /// The role `profile` runs under callgrind: `proxy`, `connector` or `edge`.
    #[arg(long, default_value = "proxy")]
    pub(crate) role: String,
    /// tools/call requests of the profile's workload (sequential, then at concurrency 32).
    #[arg(long, default_value_t = 3200)]
    pub(crate) profile_calls: usize,
    /// New sessions (full handshakes, one tools/call each) of the profile's workload.
    #[arg(long, default_value_t = 0)]
    pub(crate) profile_sessions: usize,
    /// Bulk response of the profile's workload, in MiB.
    #[arg(long, default_value_t = 32)]
    pub(crate) profile_bulk_mib: u64,
    /// Idle SSE streams the profile's workload opens and holds (memory: use with
    /// `--profile-tool dhat`, whose bytes at the heap's peak are the idle streams' cost).
    #[arg(long, default_value_t = 0)]
    pub(crate) profile_idle: usize,
    /// Idle SSE streams per tunnel session in `--profile-idle` (1: a session each).
    #[arg(long, default_value_t = 1)]
    pub(crate) profile_idle_per_session: usize,
    /// The valgrind tool `profile` runs the role under: `callgrind` (instructions) or
    /// `dhat` (heap: bytes alive at the peak, by allocation site).
    #[arg(long, default_value = "callgrind")]
    pub(crate) profile_tool: String,
    /// Keep the soak's process logs (their directory is printed) instead of deleting them.
    #[arg(long)]
    pub(crate) keep_logs: bool,
    /// Where `upstream` and `relay` listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) listen: SocketAddr,
    /// Where `relay` forwards each connection.
    #[arg(long)]
    pub(crate) to: Option<SocketAddr>,
    /// Seconds per latency/throughput phase.
    #[arg(long, default_value_t = 5)]
    pub(crate) seconds: u64,
    /// Size of the bulk response, in MiB.
    #[arg(long, default_value_t = 100)]
    pub(crate) bulk_mib: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if ![
        "all", "soak", "profile", "proxy", "tunnel", "upstream", "relay",
    ]
    .contains(&args.what.as_str())
    {
        bail!(
            "unknown benchmark {:?} (available: all, soak, profile, proxy, tunnel, upstream, relay)",
            args.what
        );
    }
    if args.what == "relay" {
        let to = args.to.context("relay needs --to ADDR")?;
        // The proxy's runtime shape: tokio's multi-threaded scheduler, default workers.
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(relay(args.listen, to));
    }
    if args.what == "upstream" {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async move {
            let addr = upstream::start_on(args.listen).await?;
            println!("UPSTREAM {addr}");
            std::future::pending::<anyhow::Result<()>>().await
        });
    }
    // The upstream gets its own thread and runtime so the load generator does not
    // starve it; the proxy is its own process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let addr = upstream::start().await;
            tx.send(addr).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let upstream = rx.recv()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match args.what.as_str() {
        "tunnel" => return rt.block_on(tunnel::run(args, upstream)),
        "all" => return rt.block_on(all::run(args)),
        "soak" => return rt.block_on(soak::run(args)),
        "profile" => return rt.block_on(profile::run(args, upstream)),
        _ => {}
    }
    rt.block_on(run(args, upstream))
}

/// A TCP relay that does nothing but copy: the proxy's hops and runtime with none of its
/// work (no WebSocket, no TLS, no HTTP), as the floor any proxy process adds.
async fn relay(listen: SocketAddr, to: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("RELAY {}", listener.local_addr()?);
    loop {
        let (mut client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await else {
                return;
            };
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

/// Starts `relay` as its own process in front of `to`.
async fn start_relay(to: SocketAddr) -> anyhow::Result<(LoggedChild, SocketAddr)> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("relay").arg("--to").arg(to.to_string());
    let child = LoggedChild::spawn(cmd);
    for _ in 0..200 {
        if let Some(addr) = child
            .lines()
            .iter()
            .find_map(|l| l.strip_prefix("RELAY ")?.parse().ok())
        {
            return Ok((child, addr));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("relay did not start:\n{}", child.lines().join("\n"))
}

fn proxy_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("mcp-tunnel");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p mcp-tunnel)",
            bin.display()
        );
    }
    Ok(bin)
}

async fn run(args: Args, upstream: SocketAddr) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::new(dir.path(), DOMAIN);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen_addr: \"127.0.0.1:0\"\nadmin_addr: off\nlog_level: warn\ntunnel_domain: {DOMAIN}\ntls:\n  cert_file: {}\n  key_file: {}\nroutes:\n  mcp: http://{upstream}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\nlimits:\n  max_concurrent_streams: 1000\n",
            pki.cert_file.display(),
            pki.key_file.display()
        ),
    )?;
    let mut cmd = tokio::process::Command::new(proxy_binary()?);
    cmd.arg("proxy").arg("-config").arg(&config);
    let proxy = LoggedChild::spawn(cmd);
    let proxy_addr = wait_listening(&proxy).await?;
    let proxy_pid = proxy.child.id().unwrap_or(0);
    let (relay, relay_addr) = start_relay(upstream).await?;
    let relay_pid = relay.child.id().unwrap_or(0);
    let tls = InnerTls::trusting(&[pki.ca_der()])?;
    let secs = Duration::from_secs(args.seconds);

    println!("# mcp-tunnel proxy benchmark");
    println!();
    println!("machine: {} cores, {}", num_cpus(), cpu_model());
    println!(
        "upstream: minimal MCP responder (hyper, HTTP/1.1) on 127.0.0.1; proxy: release `mcp-tunnel proxy` process"
    );
    println!();
    println!(
        "\"proxy CPU\" and \"bench CPU\": user + system CPU time per request of the proxy (or relay) process and of this process (load generator and responder), from /proc. The plain TCP relay is a process of this binary on the proxy's runtime that only copies bytes: the floor of any proxy's extra hop."
    );
    println!();
    println!(
        "| case | path | req/s | p50 µs | p99 µs | vs direct | proxy CPU µs/req | bench CPU µs/req |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (conc, label) in [
        (1usize, "tools/call, concurrency 1"),
        (32, "tools/call, concurrency 32"),
    ] {
        let pools = vec![
            Pool::new(conc, || direct_conn(upstream)).await?,
            Pool::new(conc, || direct_conn(relay_addr))
                .await?
                .watching([relay_pid]),
            Pool::new(conc, || proxy_conn(proxy_addr, tls.http1_only()))
                .await?
                .watching([proxy_pid]),
            Pool::new(conc, || proxy_conn(proxy_addr, tls.clone()))
                .await?
                .watching([proxy_pid]),
        ];
        let [direct, via_relay, via_h1, via_h2]: [Stats; 4] = compare(pools, secs)
            .await?
            .try_into()
            .map_err(|_| anyhow::anyhow!("four paths"))?;
        row(label, "direct", &direct, None);
        row(
            label,
            "plain TCP relay (copies only)",
            &via_relay,
            Some(&direct),
        );
        row(label, "proxy, inner HTTP/1.1", &via_h1, Some(&direct));
        row(label, "proxy, inner h2", &via_h2, Some(&direct));
        ceiling(
            label,
            &direct,
            &[
                ("plain TCP relay", &via_relay),
                ("inner HTTP/1.1", &via_h1),
                ("inner h2", &via_h2),
            ],
        );
    }
    println!();
    println!("| bulk {} MiB | MB/s | vs direct |", args.bulk_mib);
    println!("|---|---:|---:|");
    let size = args.bulk_mib * 1024 * 1024;
    // Best of three alternating transfers each.
    let (mut direct, mut via) = (0f64, 0f64);
    for _ in 0..3 {
        direct = direct.max(bulk(direct_conn(upstream).await?, size).await?);
        via = via.max(bulk(proxy_conn(proxy_addr, tls.http1_only()).await?, size).await?);
    }
    println!("| direct | {direct:.0} | 1.00 |");
    println!(
        "| proxy (WebSocket + inner TLS) | {via:.0} | {:.2} |",
        via / direct
    );
    drop(proxy);
    drop(relay);
    Ok(())
}

async fn wait_listening(proxy: &LoggedChild) -> anyhow::Result<SocketAddr> {
    // The proxy logs its address at info; the bench config asks for warn to keep logging
    // off the hot path, so read it from /proc instead.
    let pid = proxy.child.id().context("proxy pid")?;
    for _ in 0..200 {
        if let Some(addr) = listening_port(pid) {
            return Ok(addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("proxy did not start:\n{}", proxy.lines().join("\n"))
}

/// The first TCP listener owned by `pid`, from /proc.
fn listening_port(pid: u32) -> Option<SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in tcp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
            let port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            return Some(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    None
}

/// Something that sends requests: a plain HTTP/1.1 connection or a tunnel session.
pub(crate) enum Conn {
    Direct(hyper::client::conn::http1::SendRequest<ClientBody>),
    Tunnel(Session),
}

impl Conn {
    async fn send(
        &mut self,
        req: Request<ClientBody>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        Ok(match self {
            Conn::Direct(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Conn::Tunnel(s) => s.send(req).await?,
        })
    }
}

pub(crate) async fn direct_conn(addr: SocketAddr) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(Conn::Direct(sender))
}

async fn proxy_conn(addr: SocketAddr, tls: InnerTls) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let target = Target::new(addr.to_string(), format!("mcp.{DOMAIN}"));
    Ok(Conn::Tunnel(Session::open(tcp, &target, &tls).await?))
}

fn call_request() -> Request<ClientBody> {
    Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            Full::new(Bytes::from_static(CALL.as_bytes()))
                .map_err(|n| match n {})
                .boxed_unsync(),
        )
        .unwrap()
}

pub(crate) struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time per request of the processes the pool watches (the tunnel's own), and of
    /// the load generator, both from /proc: contention barely moves them.
    tunnel_cpu: Option<Duration>,
    client_cpu: Duration,
}

/// `conc` connections, each sending tools/call back to back for `secs` (after a warm-up).
/// A pool of warmed connections for one path.
pub(crate) struct Pool {
    conns: Vec<Conn>,
    latencies: Vec<Duration>,
    busy: Duration,
    /// Processes whose CPU time counts as the path's (empty: none, as for direct).
    watch: Vec<u32>,
    watched_cpu: Duration,
    own_cpu: Duration,
}

impl Pool {
    pub(crate) async fn new<F, Fut>(conc: usize, connect: F) -> anyhow::Result<Self>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Conn>>,
    {
        let mut conns = Vec::new();
        for _ in 0..conc {
            let mut c = connect().await?;
            for _ in 0..50 {
                one(&mut c).await?; // warm-up: TLS, pools, allocator
            }
            conns.push(c);
        }
        Ok(Self {
            conns,
            latencies: Vec::new(),
            busy: Duration::ZERO,
            watch: Vec::new(),
            watched_cpu: Duration::ZERO,
            own_cpu: Duration::ZERO,
        })
    }

    /// Counts these processes' CPU time as the path's.
    pub(crate) fn watching(mut self, pids: impl IntoIterator<Item = u32>) -> Self {
        self.watch = pids.into_iter().filter(|p| *p != 0).collect();
        self
    }

    /// Every connection sends tools/call back to back for `secs`.
    async fn round(&mut self, secs: Duration) -> anyhow::Result<()> {
        let watched = procs::cpu_time(&self.watch);
        let own = procs::cpu_time(&[std::process::id()]);
        let start = Instant::now();
        let deadline = start + secs;
        let mut tasks = Vec::new();
        for mut c in self.conns.drain(..) {
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    one(&mut c).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok((c, lat))
            }));
        }
        for t in tasks {
            let (c, lat) = t.await??;
            self.conns.push(c);
            self.latencies.extend(lat);
        }
        self.busy += start.elapsed();
        self.watched_cpu += procs::cpu_time(&self.watch).saturating_sub(watched);
        self.own_cpu += procs::cpu_time(&[std::process::id()]).saturating_sub(own);
        Ok(())
    }

    fn stats(mut self) -> Stats {
        self.latencies.sort();
        let all = &self.latencies;
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        let per_req = |d: Duration| d / all.len().max(1) as u32;
        Stats {
            rps: all.len() as f64 / self.busy.as_secs_f64(),
            p50: pct(0.50),
            p99: pct(0.99),
            tunnel_cpu: (!self.watch.is_empty()).then(|| per_req(self.watched_cpu)),
            client_cpu: per_req(self.own_cpu),
        }
    }
}

/// Measures the paths in alternating one-second rounds for `secs` each in total, so that
/// whatever else the machine does affects them alike; the baseline is the first.
pub(crate) async fn compare(mut pools: Vec<Pool>, secs: Duration) -> anyhow::Result<Vec<Stats>> {
    let rounds = secs.as_secs().max(1);
    for _ in 0..rounds {
        for p in pools.iter_mut() {
            p.round(Duration::from_secs(1)).await?;
        }
    }
    Ok(pools.into_iter().map(Pool::stats).collect())
}

pub(crate) async fn one(c: &mut Conn) -> anyhow::Result<()> {
    let resp = c.send(call_request()).await?;
    if resp.status() != 200 {
        bail!("status {}", resp.status());
    }
    let body = resp.into_body().collect().await?.to_bytes();
    if !body.windows(4).any(|w| w == b"\"42\"") {
        bail!("unexpected answer {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

pub(crate) async fn bulk(mut c: Conn, size: u64) -> anyhow::Result<f64> {
    let req = Request::get(format!("/bytes?size={size}")).body(
        Full::new(Bytes::new())
            .map_err(|n| match n {})
            .boxed_unsync(),
    )?;
    let start = Instant::now();
    let resp = c.send(req).await?;
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            n += d.len() as u64;
        }
    }
    if n != size {
        bail!("bulk: got {n} of {size} bytes");
    }
    Ok(n as f64 / start.elapsed().as_secs_f64() / 1e6)
}

pub(crate) fn row(case: &str, path: &str, s: &Stats, base: Option<&Stats>) {
    let ratio = base.map_or(1.0, |b| s.rps / b.rps);
    println!(
        "| {case} | {path} | {:.0} | {} | {} | {ratio:.2} | {} | {} |",
        s.rps,
        s.p50.as_micros(),
        s.p99.as_micros(),
        s.tunnel_cpu
            .map_or("–".into(), |d| d.as_micros().to_string()),
        s.client_cpu.as_micros(),
    );
    if let Some(b) = base {
        println!(
            "| {case} | ↳ added p50 | | +{} | +{} | | | |",
            s.p50.as_micros() as i128 - b.p50.as_micros() as i128,
            s.p99.as_micros() as i128 - b.p99.as_micros() as i128
        );
    }
}

/// When the machine is CPU-bound (every process shares the same cores), requests/s
/// scale with the inverse of the CPU spent per request on the whole path, so the ratio
/// to direct cannot exceed direct's CPU per request over the path's. The second figure
/// is that bound with a proxy that costs nothing: what the client's own WebSocket and
/// inner TLS leave for the proxy.
fn ceiling(case: &str, direct: &Stats, paths: &[(&str, &Stats)]) {
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let base = micros(direct.client_cpu);
    for (name, s) in paths {
        let proxy = s.tunnel_cpu.map_or(0.0, micros);
        let bench = micros(s.client_cpu);
        println!(
            "| {case} | ↳ {name}: CPU-bound ceiling vs direct | | | | {:.2} | with a free proxy: {:.2} | |",
            base / (bench + proxy),
            base / bench
        );
    }
}

pub(crate) fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
