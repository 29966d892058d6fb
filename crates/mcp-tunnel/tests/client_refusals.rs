//! The client refuses every proxy certificate SPEC §8 forbids, through a real proxy
//! process, with an error that names the failed rule: one signed by an unregistered CA,
//! one sent with an intermediate, one whose SAN does not cover the route host, and an
//! expired one. The proxy swaps certificates by hot reload between the cases, so the
//! same listener serves each; a valid certificate at the end is accepted again, which
//! shows the refusals come from the certificates and not from a broken harness.
//! (A CA archived a moment ago is refused through `connect`: connect_mcp_sdk.rs.)

use std::time::{Duration, SystemTime};

use mcp_tunnel_pki::generate::{self, GeneratedCert, KeyKind, Validity};
use mcp_tunnel_testutil::harness::{DOMAIN, ProxyHarness};
use mcp_tunnel_testutil::mcp::McpServer;

const DAY: Duration = Duration::from_secs(86_400);

fn issue(ca: &GeneratedCert, sans: &[String], validity: Validity) -> GeneratedCert {
    generate::issue_server_cert(
        &ca.cert_pem,
        ca.key_pem.expose(),
        sans,
        validity,
        KeyKind::EcdsaP256,
    )
    .unwrap()
}

/// Installs `chain_pem` and `key_pem` as the proxy's pair (each file replaced
/// atomically) and waits until the proxy has loaded `leaf`.
async fn install(h: &ProxyHarness, chain_pem: &str, key_pem: &str, leaf: &GeneratedCert) {
    for (path, text) in [(&h.pki.key_file, key_pem), (&h.pki.cert_file, chain_pem)] {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    h.proxy
        .wait_for(Duration::from_secs(10), |l| {
            l.contains("certificate reloaded") && l.contains(&leaf.fingerprint)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forbidden_proxy_certificate_is_refused_naming_the_rule() {
    let server = McpServer::start().await;
    let h = ProxyHarness::start(&format!(
        "routes:\n  mcp: {}\nupstream:\n  allowed_ips: [\"127.0.0.1/32\"]\n",
        server.origin()
    ))
    .await;
    // What the client trusts: the tunnel's registered CA, and nothing else.
    let tls = h.tls();
    let ca = &h.pki.ca;
    let wildcard = vec![format!("*.{DOMAIN}")];
    let now = SystemTime::now();

    let stranger = generate::generate_ca("unregistered CA", 30 * DAY).unwrap();
    let from_stranger = issue(&stranger, &wildcard, (7 * DAY).into());
    let good = issue(ca, &wildcard, (7 * DAY).into());
    let other_name = issue(ca, &["*.zzzz9999.tunnel.test".into()], (7 * DAY).into());
    let expired = issue(
        ca,
        &wildcard,
        Validity {
            not_before: now - 10 * DAY,
            not_after: now - DAY,
        },
    );
    // The leaf followed by a CA certificate in the chain: even the registered CA is an
    // intermediate there, and the rules allow none.
    let with_intermediate = issue(ca, &wildcard, (7 * DAY).into());
    let chain = format!("{}{}", with_intermediate.cert_pem, stranger.cert_pem);

    let cases: [(&str, String, &GeneratedCert, &str); 4] = [
        (
            "unregistered CA",
            from_stranger.cert_pem.clone(),
            &from_stranger,
            "must be signed by a CA certificate registered for this tunnel",
        ),
        (
            "intermediate in the chain",
            chain,
            &with_intermediate,
            "intermediate certificates are not allowed",
        ),
        (
            "SAN for another tunnel",
            other_name.cert_pem.clone(),
            &other_name,
            "SubjectAltName must cover \"mcp.abcd1234.tunnel.test\"",
        ),
        (
            "expired",
            expired.cert_pem.clone(),
            &expired,
            "server certificate has expired",
        ),
    ];
    for (case, chain_pem, leaf, rule) in cases {
        install(&h, &chain_pem, leaf.key_pem.expose(), leaf).await;
        let err = match h.try_session("mcp", &tls).await {
            Ok(_) => panic!("{case}: the client accepted the proxy's certificate"),
            Err(e) => e,
        };
        assert!(
            matches!(err, mcp_tunnel_client::ClientError::Tls(_)),
            "{case}: {err}"
        );
        let message = err.to_string();
        assert!(message.contains(rule), "{case}: {message}");
    }

    install(&h, &good.cert_pem, good.key_pem.expose(), &good).await;
    let mut mcp = h.mcp("mcp").await;
    mcp.initialize().await.unwrap();
}
