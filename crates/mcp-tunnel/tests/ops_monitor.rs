//! `mcp-tunnel monitor` against live attack traffic (SSRF attempts and bad handshakes at
//! a running proxy, followed from its growing log file), and a recorded stream of token
//! guessing at a real edge, replayed.

mod ops_support;

use std::io::Write as _;
use std::time::Duration;

use mcp_tunnel_client::InnerTls;
use mcp_tunnel_control::client::Method;
use mcp_tunnel_testutil::harness::{ProxyHarness, bin, get};
use mcp_tunnel_testutil::logs::LoggedChild;
use ops_support::ControlPlane;

#[tokio::test]
async fn live_ssrf_attempts_and_bad_handshakes_raise_alerts() {
    let h =
        ProxyHarness::start_at_level("routes:\n  meta: http://169.254.169.254:80\n", "info").await;
    let log = h.dir.path().join("proxy.log");
    std::fs::write(&log, "").unwrap();
    let mut cmd = bin();
    cmd.args(["monitor", "--duration", "30s", "--log"])
        .arg(format!("proxy={}", log.display()));
    let monitor = LoggedChild::spawn(cmd);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SSRF: a route pointing at the cloud metadata service.
    let mut s = h.session("meta").await;
    let (status, _, _) = get(&mut s, "/latest/meta-data/").await;
    assert_eq!(status, 502);
    // Bad handshakes: clients that do not trust the proxy's CA.
    let other =
        mcp_tunnel_pki::generate::generate_ca("attacker", Duration::from_secs(3600)).unwrap();
    let wrong = InnerTls::trusting(&[other.cert_der.clone().into()]).unwrap();
    for _ in 0..6 {
        assert!(h.try_session("meta", &wrong).await.is_err());
    }
    // Ship the proxy's log lines into the file the monitor follows, as a log shipper
    // would (appending what is new); the monitor started at the empty file's end.
    let ship = |n: usize| {
        let lines = h.proxy.lines();
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for l in &lines[n..] {
            writeln!(f, "{l}").unwrap();
        }
        lines.len()
    };
    let mut n = 0;
    for _ in 0..100 {
        n = ship(n);
        let out = monitor.lines().join("\n");
        if out.contains("burst.ip_validation_failed") && out.contains("burst.tls_handshake_failed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ssrf = monitor
        .wait_for(Duration::from_secs(10), |l| {
            l.contains("burst.ip_validation_failed")
        })
        .await;
    assert!(
        ssrf.contains("169.254.169.254") && ssrf.contains("\"severity\":\"critical\""),
        "{ssrf}"
    );
    let tls = monitor
        .wait_for(Duration::from_secs(10), |l| {
            l.contains("burst.tls_handshake_failed")
        })
        .await;
    assert!(tls.contains("6 inner TLS handshakes failed"), "{tls}");
}

#[tokio::test]
async fn recorded_token_guessing_at_the_edge_is_replayed_into_an_alert() {
    let cp = ControlPlane::start(true).await;
    let out = cp.dir.path().join("setup");
    let t = cp.provision(&out).await;
    let id = t["id"].as_str().unwrap();
    // The token on disk is now stale: every connection attempt is a wrong token.
    cp.client()
        .call(
            Method::POST,
            &format!("/v1/tunnels/{id}/rotate_token"),
            None,
        )
        .await
        .unwrap();
    let mut cmd = bin();
    cmd.args([
        "connector",
        "run",
        "--url",
        "http://127.0.0.1:9",
        "--ha-connections",
        "4",
        "--token-file",
    ])
    .arg(out.join("tunnel-token"));
    let connector = LoggedChild::spawn(cmd);
    for _ in 0..200 {
        if cp
            .process
            .lines()
            .iter()
            .filter(|l| l.contains("connector connection refused") && l.contains("token_rejected"))
            .count()
            >= 4
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(connector);
    let edge_log = cp.dir.path().join("edge.log");
    std::fs::write(&edge_log, cp.process.lines().join("\n") + "\n").unwrap();
    let r = bin()
        .args(["monitor", "--replay", "--log"])
        .arg(format!("edge={}", edge_log.display()))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.status.code(), Some(1), "{text}");
    let alert: serde_json::Value = serde_json::from_str(
        text.lines()
            .find(|l| l.contains("burst.token_rejected"))
            .unwrap_or_else(|| panic!("{text}")),
    )
    .unwrap();
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["source"], "edge");

    // A quiet stream replays without alerts (exit 0).
    let quiet = cp.dir.path().join("quiet.log");
    std::fs::write(
        &quiet,
        cp.process
            .lines()
            .iter()
            .filter(|l| l.contains("\"api listening\""))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let r = bin()
        .args(["monitor", "--replay", "--log"])
        .arg(format!("api={}", quiet.display()))
        .output()
        .await
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
}

/// `monitor --metrics` alone (no logs): a scrape target that is down, a connector whose
/// token the edge rejects (no live link, and the rejections counted), a proxy whose
/// certificate expires within the warning window, and an SSRF attempt seen through the
/// proxy's IP-validation counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_raise_state_and_counter_alerts() {
    let cp = ControlPlane::start(true).await;
    let out = cp.dir.path().join("setup");
    let t = cp.provision(&out).await;
    let id = t["id"].as_str().unwrap();
    cp.client()
        .call(
            Method::POST,
            &format!("/v1/tunnels/{id}/rotate_token"),
            None,
        )
        .await
        .unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let connector_metrics = free();
    let mut cmd = bin();
    cmd.args([
        "connector",
        "run",
        "--url",
        "http://127.0.0.1:9",
        "--ha-connections",
        "2",
        "--metrics",
        &connector_metrics.to_string(),
        "--token-file",
    ])
    .arg(out.join("tunnel-token"));
    let _connector = LoggedChild::spawn(cmd);
    // The monitor's first scrape must find the connector up: only `gone` is down. (On a
    // loaded machine the connector's listener can come up after the first scrape.)
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(connector_metrics)
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the connector's metrics listener never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The harness's server certificate is valid for 7 days.
    let h =
        ProxyHarness::start_at_level("routes:\n  meta: http://169.254.169.254:80\n", "info").await;
    let gone = free();
    let mut cmd = bin();
    cmd.args(["monitor", "--duration", "60s", "--scrape-interval", "300ms"])
        .args(["--cert-expiry-warning", "240h", "--metrics"])
        .arg(format!("proxy=http://{}/metrics", h.admin))
        .arg("--metrics")
        .arg(format!("connector=http://{connector_metrics}/metrics"))
        .arg("--metrics")
        .arg(format!("gone=http://{gone}/metrics"));
    let monitor = LoggedChild::spawn(cmd);
    let down = monitor
        .wait_for(Duration::from_secs(20), |l| {
            l.contains("metrics.target_down")
        })
        .await;
    assert!(down.contains("\"source\":\"gone\""), "{down}");
    // And the connector, which is up, is never reported down.
    assert!(
        !monitor
            .lines()
            .iter()
            .any(|l| l.contains("metrics.target_down") && l.contains("\"source\":\"connector\"")),
        "{}",
        monitor.lines().join("\n")
    );
    let expiring = monitor
        .wait_for(Duration::from_secs(20), |l| l.contains("cert.expiring"))
        .await;
    assert!(expiring.contains("\"source\":\"proxy\""), "{expiring}");
    let dead = monitor
        .wait_for(Duration::from_secs(20), |l| {
            l.contains("availability.connector_disconnected")
        })
        .await;
    assert!(dead.contains("\"severity\":\"critical\""), "{dead}");

    // After the first scrape: an SSRF attempt shows up as a counter increase.
    let mut s = h.session("meta").await;
    let (status, _, _) = get(&mut s, "/latest/meta-data/").await;
    assert_eq!(status, 502);
    let ssrf = monitor
        .wait_for(Duration::from_secs(20), |l| {
            l.contains("burst.ip_validation_failed")
        })
        .await;
    assert!(ssrf.contains("from metrics"), "{ssrf}");
    // The connector keeps retrying with backoff; each rejection is counted.
    monitor
        .wait_for(Duration::from_secs(40), |l| {
            l.contains("burst.token_rejected")
        })
        .await;
    // Each state alert once, not once per scrape.
    let lines = monitor.lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("metrics.target_down"))
            .count(),
        1,
        "{lines:#?}"
    );
}
