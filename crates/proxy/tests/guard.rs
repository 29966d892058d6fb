//! The SSRF guard, from the outside: which addresses are refused, that refusal happens
//! before any dial, and that every connect resolves afresh.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use mcp_tunnel_proxy::guard::{GuardError, GuardedConnector, Resolver, UpstreamPolicy};
use proptest::prelude::*;
use tokio::net::TcpListener;

type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Answers each call with the next scripted answer (the last one repeats), counting calls.
struct ScriptedResolver {
    answers: Vec<Vec<IpAddr>>,
    calls: AtomicUsize,
    asked: Mutex<Vec<String>>,
}

impl ScriptedResolver {
    fn new(answers: Vec<Vec<&str>>) -> Arc<Self> {
        Arc::new(Self {
            answers: answers
                .into_iter()
                .map(|a| a.into_iter().map(ip).collect())
                .collect(),
            calls: AtomicUsize::new(0),
            asked: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Resolver for ScriptedResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.asked
            .lock()
            .expect("lock")
            .push(format!("{host}:{port}"));
        let answer = self
            .answers
            .get(n)
            .or(self.answers.last())
            .cloned()
            .unwrap_or_default();
        Box::pin(async move {
            Ok(answer
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect())
        })
    }
}

/// A resolver that fails like an NXDOMAIN.
struct FailingResolver;

impl Resolver for FailingResolver {
    fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> ResolveFuture<'a> {
        Box::pin(async { Err(io::Error::new(io::ErrorKind::NotFound, "no such host")) })
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("test IP {s}"))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|_| panic!("test net {s}"))
}

fn connector(policy: UpstreamPolicy, resolver: Arc<dyn Resolver>) -> GuardedConnector {
    GuardedConnector::new(policy, resolver, Duration::from_secs(5))
}

fn assert_rejected(result: Result<impl Sized, GuardError>, want_ip: &str) {
    match result {
        Err(GuardError::Rejected { ip: got, .. }) => assert_eq!(got, ip(want_ip)),
        Err(other) => panic!("expected rejection of {want_ip}, got {other}"),
        Ok(_) => panic!("expected rejection of {want_ip}, got a connection"),
    }
}

/// Addresses outside RFC 1918, each a known SSRF target or bypass spelling.
const REFUSED_BY_DEFAULT: &[&str] = &[
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "255.255.255.255",
    "224.0.0.1",
    "239.255.255.250",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "8.8.8.8",
    "1.1.1.1",
    "9.255.255.255",
    "11.0.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.167.255.255",
    "192.169.0.0",
    "198.18.0.1",
    "240.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00::10",
    "ff02::1",
    "2001:4860:4860::8888",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:8.8.8.8",
    "::ffff:0.0.0.0",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "::7f00:1",
    "::a00:1",
    "2002:7f00:1::",
    "::ffff:0:a00:1",
];

const PERMITTED_BY_DEFAULT: &[&str] = &[
    "10.0.0.0",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.0",
    "172.20.1.1",
    "172.31.255.255",
    "192.168.0.0",
    "192.168.255.255",
    "::ffff:10.0.0.1",
    "::ffff:172.31.255.255",
    "::ffff:192.168.1.1",
];

#[test]
fn default_policy_refuses_everything_outside_rfc1918() {
    let policy = UpstreamPolicy::default_private();
    for addr in REFUSED_BY_DEFAULT {
        assert!(!policy.permits(ip(addr)), "{addr} must be refused");
    }
    for addr in PERMITTED_BY_DEFAULT {
        assert!(policy.permits(ip(addr)), "{addr} must be permitted");
    }
}

#[tokio::test]
async fn connect_refuses_every_default_outsider_without_dialing() {
    let guard = connector(
        UpstreamPolicy::default_private(),
        ScriptedResolver::new(vec![]),
    );
    for addr in REFUSED_BY_DEFAULT {
        // Port 9 (discard) on public addresses: if the check let one through, the dial would
        // hang or fail with Connect instead of returning Rejected at once.
        let want = ip(addr).to_canonical().to_string();
        assert_rejected(guard.connect(addr, 9).await, &want);
    }
}

#[tokio::test]
async fn resolved_names_are_checked_too() {
    for addr in REFUSED_BY_DEFAULT {
        let resolver = ScriptedResolver::new(vec![vec![addr]]);
        let guard = connector(UpstreamPolicy::default_private(), resolver.clone());
        let want = ip(addr).to_canonical().to_string();
        assert_rejected(guard.connect("upstream.internal", 9).await, &want);
        assert_eq!(resolver.calls(), 1);
    }
}

#[tokio::test]
async fn rebinding_between_connects_is_caught() {
    // The first answer passes the check (checked without dialing: only loopback is dialed
    // in tests); the second is loopback and must be refused.
    let resolver = ScriptedResolver::new(vec![vec!["10.0.0.1"], vec!["127.0.0.1"]]);
    let guard = connector(UpstreamPolicy::default_private(), resolver.clone());
    let first = guard.resolve_checked("rebind.example", 80).await;
    assert_eq!(
        first.expect("first answer is private"),
        vec!["10.0.0.1:80".parse::<SocketAddr>().expect("addr")]
    );
    assert_rejected(guard.connect("rebind.example", 80).await, "127.0.0.1");
    assert_eq!(resolver.calls(), 2, "every connect must resolve again");
    assert_eq!(
        *resolver.asked.lock().expect("lock"),
        ["rebind.example:80", "rebind.example:80"]
    );
}

#[tokio::test]
async fn rebinding_between_real_connects_is_caught() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let resolver = ScriptedResolver::new(vec![vec!["127.0.0.1"], vec!["127.0.0.2"]]);
    let guard = connector(
        UpstreamPolicy::AllowList(vec![net("127.0.0.1/32")]),
        resolver,
    );
    guard
        .connect("flip.example", port)
        .await
        .expect("first answer is listed");
    listener.accept().await.expect("accepted");
    assert_rejected(guard.connect("flip.example", port).await, "127.0.0.2");
}

#[tokio::test]
async fn one_bad_answer_refuses_the_whole_connect() {
    let resolver = ScriptedResolver::new(vec![vec!["10.0.0.1", "169.254.169.254", "10.0.0.2"]]);
    let guard = connector(UpstreamPolicy::default_private(), resolver);
    assert_rejected(guard.connect("mixed.example", 80).await, "169.254.169.254");
}

#[tokio::test]
async fn mapped_answer_is_judged_as_ipv4() {
    let resolver = ScriptedResolver::new(vec![vec!["::ffff:127.0.0.1"]]);
    let guard = connector(UpstreamPolicy::default_private(), resolver);
    let err = guard
        .connect("mapped.example", 80)
        .await
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "IP validation failed: 127.0.0.1 is not a private address"
    );
}

#[tokio::test]
async fn empty_answer_and_resolver_failure_are_errors() {
    let guard = connector(
        UpstreamPolicy::default_private(),
        ScriptedResolver::new(vec![vec![]]),
    );
    assert!(matches!(
        guard.connect("empty.example", 80).await,
        Err(GuardError::NoAddresses { .. })
    ));
    let guard = connector(UpstreamPolicy::default_private(), Arc::new(FailingResolver));
    let err = guard.connect("nx.example", 80).await.expect_err("fails");
    assert!(matches!(err, GuardError::Resolve { .. }), "{err}");
    assert!(err.to_string().contains("nx.example"), "{err}");
}

#[tokio::test]
async fn ip_literals_skip_the_resolver() {
    let resolver = ScriptedResolver::new(vec![vec!["10.0.0.1"]]);
    let guard = connector(UpstreamPolicy::default_private(), resolver.clone());
    assert_rejected(guard.connect("127.0.0.1", 80).await, "127.0.0.1");
    assert_rejected(guard.connect("[::1]", 80).await, "::1");
    assert_eq!(resolver.calls(), 0);
}

#[tokio::test]
async fn explicit_loopback_entry_permits_a_real_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let resolver = ScriptedResolver::new(vec![vec!["127.0.0.1"]]);
    let guard = connector(
        UpstreamPolicy::AllowList(vec![net("127.0.0.1/32")]),
        resolver,
    );
    let accept = tokio::spawn(async move { listener.accept().await.map(|(_, peer)| peer) });
    let (stream, addr) = guard
        .connect("loopback.example", port)
        .await
        .expect("loopback is listed");
    assert_eq!(addr, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    let peer = accept.await.expect("join").expect("accept");
    assert_eq!(stream.local_addr().expect("local"), peer);
}

#[tokio::test]
async fn mapped_answer_dials_the_ipv4_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let resolver = ScriptedResolver::new(vec![vec!["::ffff:127.0.0.1"]]);
    let guard = connector(
        UpstreamPolicy::AllowList(vec![net("127.0.0.0/8")]),
        resolver,
    );
    let (_stream, addr) = guard.connect("m.example", port).await.expect("connects");
    assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    listener.accept().await.expect("accepted");
}

#[tokio::test]
async fn dials_checked_addresses_in_order_and_falls_through() {
    // Holding 127.0.0.1:P means no wildcard listener can hold P, so 127.0.0.2:P refuses.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let resolver = ScriptedResolver::new(vec![vec!["127.0.0.2", "127.0.0.1"]]);
    let guard = connector(
        UpstreamPolicy::AllowList(vec![net("127.0.0.0/8")]),
        resolver,
    );
    let (_stream, addr) = guard
        .connect("two.example", port)
        .await
        .expect("second works");
    assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
    listener.accept().await.expect("accepted");
}

#[tokio::test]
async fn connection_refused_reports_the_address() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let guard = connector(
        UpstreamPolicy::AllowList(vec![net("127.0.0.1/32")]),
        ScriptedResolver::new(vec![]),
    );
    match guard.connect("127.0.0.1", addr.port()).await {
        Err(GuardError::Connect { addr: got, .. }) => assert_eq!(got, addr),
        other => panic!("expected Connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn slow_resolution_times_out() {
    struct Stalled;
    impl Resolver for Stalled {
        fn resolve<'a>(&'a self, _h: &'a str, _p: u16) -> ResolveFuture<'a> {
            Box::pin(std::future::pending())
        }
    }
    let guard = GuardedConnector::new(
        UpstreamPolicy::default_private(),
        Arc::new(Stalled),
        Duration::from_millis(50),
    );
    let err = guard
        .connect("slow.example", 80)
        .await
        .expect_err("times out");
    assert!(matches!(err, GuardError::Timeout { .. }), "{err}");
}

#[test]
fn allow_list_edges() {
    let policy = UpstreamPolicy::AllowList(vec![net("10.0.0.0/8"), net("fd00::/8")]);
    assert!(policy.permits(ip("10.255.255.255")));
    assert!(!policy.permits(ip("11.0.0.0")));
    assert!(policy.permits(ip("fd12::1")));
    assert!(!policy.permits(ip("fe00::1")));
    // A custom list replaces the default entirely.
    assert!(!policy.permits(ip("192.168.1.1")));
    let only_metadata = UpstreamPolicy::AllowList(vec![net("169.254.169.254/32")]);
    assert!(only_metadata.permits(ip("169.254.169.254")));
    assert!(!only_metadata.permits(ip("169.254.169.253")));
    let cgnat = UpstreamPolicy::AllowList(vec![net("100.64.0.0/10")]);
    assert!(cgnat.permits(ip("100.64.0.1")));
    assert!(!cgnat.permits(ip("100.128.0.0")));
}

#[test]
fn disabled_permits_everything() {
    let policy = UpstreamPolicy::Disabled;
    for addr in REFUSED_BY_DEFAULT.iter().chain(PERMITTED_BY_DEFAULT) {
        assert!(policy.permits(ip(addr)), "{addr}");
    }
}

#[test]
fn empty_allow_list_permits_nothing() {
    let policy = UpstreamPolicy::AllowList(vec![]);
    assert!(!policy.permits(ip("10.0.0.1")));
    assert!(!policy.permits(IpAddr::V6(Ipv6Addr::LOCALHOST)));
}

fn arb_ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

proptest! {
    #[test]
    fn outside_the_list_is_refused(addr in arb_ipv4(), prefix in 0u8..=32, base in arb_ipv4()) {
        let list = IpNet::V4(ipnet::Ipv4Net::new(base, prefix).expect("prefix <= 32"));
        let policy = UpstreamPolicy::AllowList(vec![list]);
        let inside = list.contains(&IpAddr::V4(addr));
        prop_assert_eq!(policy.permits(IpAddr::V4(addr)), inside);
        prop_assert_eq!(policy.permits(IpAddr::V6(addr.to_ipv6_mapped())), inside);
    }

    #[test]
    fn mapped_v6_matches_v4_under_default(addr in arb_ipv4()) {
        let policy = UpstreamPolicy::default_private();
        prop_assert_eq!(
            policy.permits(IpAddr::V6(addr.to_ipv6_mapped())),
            policy.permits(IpAddr::V4(addr))
        );
        prop_assert_eq!(policy.permits(IpAddr::V4(addr)), addr.is_private());
    }

    #[test]
    fn no_ipv6_outside_mapped_is_permitted_by_default(bits in any::<u128>()) {
        let v6 = Ipv6Addr::from(bits);
        prop_assume!(v6.to_ipv4_mapped().is_none());
        prop_assert!(!UpstreamPolicy::default_private().permits(IpAddr::V6(v6)));
    }
}
