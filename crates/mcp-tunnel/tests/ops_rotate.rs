//! `mcp-tunnel rotate token|cert|ca` with zero downtime, under continuous traffic through
//! the whole path: client → edge (real control plane) → connector → proxy → PyPI `mcp`
//! server. Every session fetches the tunnel's active CAs from the API, as a client
//! verifying against the registered CAs does; not one may fail.

mod ops_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mcp_tunnel_client::InnerTls;
use mcp_tunnel_client::edge::EdgeDialer;
use mcp_tunnel_control::client::{ApiClient, Method};
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_testutil::harness::{bin, get};
use mcp_tunnel_testutil::logs::LoggedChild;
use ops_support::ControlPlane;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

struct Rig {
    cp: ControlPlane,
    out: std::path::PathBuf,
    id: String,
    domain: String,
    _mcp: LoggedChild,
    proxy: LoggedChild,
    admin: String,
    connector: LoggedChild,
    dialer: EdgeDialer,
}

async fn active_cas(api: &ApiClient, id: &str) -> Vec<CertificateDer<'static>> {
    let page = api
        .call(Method::GET, &format!("/v1/tunnels/{id}/certificates"), None)
        .await
        .unwrap();
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["archived_at"].is_null())
        .map(|c| {
            CertificateDer::from_pem_slice(c["ca_certificate_pem"].as_str().unwrap().as_bytes())
                .unwrap()
        })
        .collect()
}

impl Rig {
    async fn start() -> Self {
        let cp = ControlPlane::start(true).await;
        let out = cp.dir.path().join("setup");
        let t = cp.provision(&out).await;
        let id = t["id"].as_str().unwrap().to_owned();
        let domain = t["domain"].as_str().unwrap().to_owned();
        let mut m = tokio::process::Command::new(mcp_tunnel_testutil::python());
        m.arg(mcp_tunnel_testutil::repo_root().join("testdata/mcp_server.py"));
        let mcp = LoggedChild::spawn(m);
        let port: u16 = mcp
            .wait_for(Duration::from_secs(60), |l| l.starts_with("PORT "))
            .await[5..]
            .trim()
            .parse()
            .unwrap();
        let cfg = cp.dir.path().join("proxy.yaml");
        std::fs::write(
            &cfg,
            format!(
                "listen_addr: \"127.0.0.1:0\"\nadmin_addr: \"127.0.0.1:0\"\nlog_level: info\ntunnel_domain: {domain}\ntls:\n  cert_file: {o}/tls.crt\n  key_file: {o}/tls.key\n  reload_interval: 200ms\nroutes:\n  mcp: http://127.0.0.1:{port}\nupstream:\n  allowed_ips: [127.0.0.1/32]\n",
                o = out.display()
            ),
        )
        .unwrap();
        let mut p = bin();
        p.args(["proxy", "--config"]).arg(&cfg);
        let proxy = LoggedChild::spawn(p);
        let line = proxy
            .wait_for(Duration::from_secs(20), |l| {
                l.contains("\"proxy listening\"")
            })
            .await;
        let v: Value = serde_json::from_str(&line).unwrap();
        let listen = v["listen_addr"].as_str().unwrap().to_owned();
        let admin = format!(
            "http://{}",
            v["admin_addr"]
                .as_str()
                .unwrap()
                .trim_start_matches("Some(")
                .trim_end_matches(')')
        );
        let mut c = bin();
        c.args([
            "connector",
            "run",
            "--ha-connections",
            "2",
            "--url",
            &format!("http://{listen}"),
            "--token-file",
        ])
        .arg(out.join("tunnel-token"));
        let connector = LoggedChild::spawn(c);
        for _ in 0..200 {
            if connector
                .lines()
                .iter()
                .filter(|l| l.contains("Registered tunnel connection"))
                .count()
                >= 2
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let key = cp
            .client()
            .call(
                Method::POST,
                "/v1/admin/client_keys",
                Some(json!({"name": "rotation test"})),
            )
            .await
            .unwrap();
        let edge_cas = mcp_tunnel_pki::tls::load_certs(&cp.ca_file).unwrap();
        let dialer = EdgeDialer::new(
            cp.client_addr(),
            &domain,
            &edge_cas,
            Secret::new(key["key"].as_str().unwrap()),
        )
        .unwrap();
        Self {
            cp,
            out,
            id,
            domain,
            _mcp: mcp,
            proxy,
            admin,
            connector,
            dialer,
        }
    }

    /// Sessions back to back until `stop`: (succeeded, failures with their errors).
    fn traffic(&self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
        let api = self.cp.client();
        let id = self.id.clone();
        let host = format!("mcp.{}", self.domain);
        let dialer = self.dialer.clone();
        tokio::spawn(async move {
            let ok = AtomicUsize::new(0);
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let tls = InnerTls::trusting(&active_cas(&api, &id).await).unwrap();
                match dialer.open(&host, &tls).await {
                    Ok(mut s) => {
                        let (status, _, _) = get(&mut s, "/headers").await;
                        if status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failures.push(format!("status {status}"));
                        }
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (ok.load(Ordering::Relaxed), failures)
        })
    }

    fn rotate(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = bin();
        c.arg("rotate")
            .args(args)
            .arg("--data-dir")
            .arg(&self.out)
            .args([
                "--proxy-admin",
                &self.admin,
                "--api-url",
                &self.cp.url,
                "--ca-file",
            ])
            .arg(&self.cp.ca_file)
            .env("MCP_TUNNEL_API_KEY", &self.cp.admin_key);
        c
    }
}

async fn under_traffic(rig: &Rig, args: &[&str]) -> String {
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = rig.traffic(stop.clone());
    // A session opened before the rotation and used after it.
    let tls = InnerTls::trusting(&active_cas(&rig.cp.client(), &rig.id).await).unwrap();
    let mut long = rig
        .dialer
        .open(&format!("mcp.{}", rig.domain), &tls)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = rig.rotate(args).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = traffic.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} sessions failed during `rotate {}`: {failures:?}\n{text}",
        failures.len(),
        ok + failures.len(),
        args.join(" ")
    );
    assert!(ok >= 10, "only {ok} sessions ran");
    let (status, _, _) = get(&mut long, "/headers").await;
    assert_eq!(status, 200, "the session opened before the rotation broke");
    text
}

#[tokio::test]
async fn rotations_under_continuous_traffic_lose_nothing() {
    let rig = Rig::start().await;
    let conns = |rig: &Rig| {
        let api = rig.cp.client();
        let id = rig.id.clone();
        async move {
            api.call(Method::GET, &format!("/v1/tunnels/{id}"), None)
                .await
                .unwrap()["connections"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(conns(&rig).await, 2);

    // Token: the API rotates it, the file is replaced, the connector's links stay, and a
    // canary proves the edge takes the new token.
    let old_token = std::fs::read_to_string(rig.out.join("tunnel-token")).unwrap();
    let text = under_traffic(&rig, &["token", "--reason", "scheduled"]).await;
    assert!(
        text.contains("a connector with the new token registered"),
        "{text}"
    );
    assert_ne!(
        std::fs::read_to_string(rig.out.join("tunnel-token")).unwrap(),
        old_token
    );
    rig.connector
        .wait_for(Duration::from_secs(10), |l| {
            l.contains("tunnel token file changed")
        })
        .await;

    // Server certificate: re-signed by the same CA, hot-reloaded.
    let old_cert = std::fs::read(rig.out.join("tls.crt")).unwrap();
    let text = under_traffic(&rig, &["cert"]).await;
    assert!(
        text.contains("the proxy serves the new certificate"),
        "{text}"
    );
    assert_ne!(std::fs::read(rig.out.join("tls.crt")).unwrap(), old_cert);

    // CA: new CA beside the old, new certificate served, old CA archived.
    let old_ca = std::fs::read_to_string(rig.out.join("ca.crt")).unwrap();
    let text = under_traffic(&rig, &["ca", "--propagation", "1s"]).await;
    assert!(
        text.contains("let clients learn the new CA") && text.contains("archive the old CA"),
        "{text}"
    );
    let cas = active_cas(&rig.cp.client(), &rig.id).await;
    assert_eq!(cas.len(), 1);
    let new_ca = std::fs::read_to_string(rig.out.join("ca.crt")).unwrap();
    assert_ne!(new_ca, old_ca);
    assert_eq!(
        cas[0].as_ref(),
        CertificateDer::from_pem_slice(new_ca.as_bytes())
            .unwrap()
            .as_ref()
    );
    // A client that trusts only the old CA is now refused.
    let old_only =
        InnerTls::trusting(&[CertificateDer::from_pem_slice(old_ca.as_bytes()).unwrap()]).unwrap();
    assert!(
        rig.dialer
            .open(&format!("mcp.{}", rig.domain), &old_only)
            .await
            .is_err()
    );
    // doctor agrees with the result.
    let d = bin()
        .args(["doctor", "--json", "--data-dir"])
        .arg(&rig.out)
        .args(["--api-url", &rig.cp.url, "--ca-file"])
        .arg(&rig.cp.ca_file)
        .env("MCP_TUNNEL_API_KEY", &rig.cp.admin_key)
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&d.stdout).unwrap();
    for i in ["cert.registered", "cert.chain", "token.age"] {
        let f = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == i)
            .unwrap();
        assert_eq!(f["status"], "pass", "{f}");
    }
    let _ = &rig.proxy;
}
