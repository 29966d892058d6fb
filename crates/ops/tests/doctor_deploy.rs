//! doctor's Compose and Helm checks: the repository's own deploy files, and fixtures that
//! fail each check.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mcp_tunnel_ops::finding::{Severity, Status};

fn repo() -> PathBuf {
    mcp_tunnel_testutil::repo_root()
}

const DIGEST: &str = "sha256:6f3c1c2b6d1f5a0d4b2e8c9a7f1e3d5c7b9a1f3e5d7c9b1a3f5e7d9c1b3a5f7e";

/// The shipped compose file in a temp dir with a chosen `.env`.
fn compose_with_env(env: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("docker-compose.yaml");
    std::fs::copy(
        repo().join("deploy/compose/customer/docker-compose.yaml"),
        &p,
    )
    .unwrap();
    std::fs::write(d.path().join(".env"), env).unwrap();
    (d, p)
}

async fn doctor_compose(p: &Path) -> mcp_tunnel_ops::Report {
    let mut o = opts();
    o.compose = Some(p.to_owned());
    run(&o).await
}

#[tokio::test]
async fn compose_images_pinned_by_a_real_digest_pass() {
    let (_d, p) = compose_with_env(&format!("MCP_TUNNEL_DIGEST={DIGEST}\n"));
    let r = doctor_compose(&p).await;
    let f = assert_finding(&r, "images.digest", Status::Pass, Severity::Medium);
    assert!(
        f.evidence
            .contains(&format!("registry.example.com/mcp-tunnel@{DIGEST}")),
        "{}",
        f.evidence
    );
    // The shipped file's hardening and exposure pass as they are.
    assert_finding(&r, "compose.hardening", Status::Pass, Severity::Low);
    assert_finding(&r, "network.proxy_exposure", Status::Pass, Severity::Medium);
    // A host firewall is invisible from here: never a pass.
    assert_finding(&r, "network.reach", Status::Unknown, Severity::Medium);
}

#[tokio::test]
async fn compose_placeholder_missing_or_tagged_images_fail() {
    // The .env.example placeholder.
    let example =
        std::fs::read_to_string(repo().join("deploy/compose/customer/.env.example")).unwrap();
    let (_d, p) = compose_with_env(&example);
    let f = assert_finding(
        &doctor_compose(&p).await,
        "images.digest",
        Status::Fail,
        Severity::Medium,
    );
    assert!(f.evidence.contains("placeholder"), "{}", f.evidence);
    // No digest at all: compose itself would refuse to start.
    let (_d, p) = compose_with_env("");
    let f = assert_finding(
        &doctor_compose(&p).await,
        "images.digest",
        Status::Fail,
        Severity::Medium,
    );
    assert!(
        f.evidence.contains("set MCP_TUNNEL_DIGEST"),
        "{}",
        f.evidence
    );
    // A movable tag.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.yaml");
    std::fs::write(
        &p,
        "services:\n  mcp-proxy:\n    image: registry.example.com/mcp-tunnel:1.2\n",
    )
    .unwrap();
    let f = assert_finding(
        &doctor_compose(&p).await,
        "images.digest",
        Status::Fail,
        Severity::Medium,
    );
    assert!(
        f.evidence
            .contains("mcp-proxy: registry.example.com/mcp-tunnel:1.2 is not pinned"),
        "{}",
        f.evidence
    );
}

#[tokio::test]
async fn compose_without_hardening_or_with_published_ports_fails() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.yaml");
    std::fs::write(
        &p,
        format!("services:\n  mcp-proxy:\n    image: r/m@{DIGEST}\n    user: root\n    ports: [\"8080:8080\"]\n  connector:\n    image: r/m@{DIGEST}\n    user: \"65532:65532\"\n    read_only: true\n    cap_drop: [ALL]\n    security_opt: [\"no-new-privileges:true\"]\n"),
    )
    .unwrap();
    let r = doctor_compose(&p).await;
    let f = assert_finding(&r, "compose.hardening", Status::Fail, Severity::Low);
    assert!(
        f.evidence.contains("mcp-proxy runs as root") && !f.evidence.contains("connector"),
        "{}",
        f.evidence
    );
    let f = assert_finding(&r, "network.proxy_exposure", Status::Fail, Severity::Medium);
    assert!(f.evidence.contains("mcp-proxy"), "{}", f.evidence);
    assert_finding(&r, "images.digest", Status::Pass, Severity::Medium);
}

async fn doctor_helm(values: &str) -> mcp_tunnel_ops::Report {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("values.yaml");
    std::fs::write(&p, values).unwrap();
    let mut o = opts();
    o.helm_values = Some(p);
    run(&o).await
}

#[tokio::test]
async fn helm_chart_defaults_fail_digest_and_egress_and_pass_ingress_policy() {
    let r = doctor_helm("").await;
    assert_finding(&r, "images.digest", Status::Fail, Severity::Medium);
    assert_finding(&r, "network.policy", Status::Pass, Severity::Medium);
    assert_finding(&r, "network.reach", Status::Fail, Severity::Medium);
    assert_finding(&r, "monitoring.alerts", Status::Fail, Severity::Low);
}

#[tokio::test]
async fn helm_hardened_values_pass() {
    let r = doctor_helm(&format!(
        "image:\n  digest: {DIGEST}\nnetworkPolicy:\n  egress:\n    enabled: true\n    edge:\n      cidrs: [203.0.113.10/32]\nmetrics:\n  prometheusRule:\n    enabled: true\n"
    ))
    .await;
    assert_finding(&r, "images.digest", Status::Pass, Severity::Medium);
    assert_finding(&r, "network.policy", Status::Pass, Severity::Medium);
    assert_finding(&r, "network.reach", Status::Pass, Severity::Medium);
    assert_finding(&r, "monitoring.alerts", Status::Pass, Severity::Low);
}

#[tokio::test]
async fn helm_without_network_policy_or_edge_cidrs_fails() {
    let r = doctor_helm("networkPolicy:\n  enabled: false\n").await;
    assert_finding(&r, "network.policy", Status::Fail, Severity::Medium);
    assert_finding(&r, "network.reach", Status::Fail, Severity::Medium);
    let r = doctor_helm("networkPolicy:\n  egress:\n    enabled: true\n").await;
    let f = assert_finding(&r, "network.reach", Status::Fail, Severity::Medium);
    assert!(f.evidence.contains("edge.cidrs is empty"), "{}", f.evidence);
}

#[tokio::test]
async fn helm_gateway_config_is_audited_like_a_proxy_config() {
    let r = doctor_helm("gateway:\n  config:\n    log_level: debug\n    routes:\n      docs: http://10.0.0.5:8000\n    upstream:\n      allowed_ips: [0.0.0.0/0]\n").await;
    assert_finding(&r, "upstream.allowed_ips.any", Status::Fail, Severity::High);
    assert_finding(&r, "logging.level", Status::Fail, Severity::Low);
    // The chart pins the listener to loopback itself: not checked from values.
    assert!(r.get("proxy.listen").is_none());
    let r = doctor_helm("gateway:\n  config:\n    routes:\n      docs: http://10.0.0.5:8000\n    upstream:\n      allowed_ips: [10.0.0.5/32]\n").await;
    assert_finding(&r, "upstream.allowed_ips.any", Status::Pass, Severity::High);
    assert_finding(
        &r,
        "upstream.allowed_ips.breadth",
        Status::Pass,
        Severity::Medium,
    );
}

#[tokio::test]
async fn without_deploy_files_reach_and_images_are_unknown_not_passing() {
    let r = run(&opts()).await;
    assert_finding(&r, "network.reach", Status::Unknown, Severity::Medium);
    assert_finding(&r, "images.digest", Status::Unknown, Severity::Medium);
    assert_finding(&r, "org.sso", Status::Unknown, Severity::Medium);
    assert!(!r.has_blocking());
}
