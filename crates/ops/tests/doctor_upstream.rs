//! doctor's proxy-config checks: each with a failing and a passing fixture.

mod common;

use common::*;
use mcp_tunnel_ops::finding::{Severity, Status};

async fn doctor_config(body: &str) -> mcp_tunnel_ops::Report {
    doctor_config_resolving(body, &TableResolver::default()).await
}

async fn doctor_config_resolving(body: &str, r: &TableResolver) -> mcp_tunnel_ops::Report {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.proxy_config = Some(config(dir.path(), body));
    run_with(&o, r).await
}

const TWO_ROUTES: &str = "routes:\n  a: http://10.0.0.4:8000\n  b: http://10.0.0.5:8000\n";

#[tokio::test]
async fn config_that_does_not_load_is_high_and_blocks() {
    let r = doctor_config("routes:\n  - a\n").await;
    let f = assert_finding(&r, "proxy.config", Status::Fail, Severity::High);
    assert!(
        f.evidence.contains("routes must be a map"),
        "{}",
        f.evidence
    );
    assert!(r.has_blocking());
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [10.0.0.4/31]\n"
    ))
    .await;
    assert_finding(&r, "proxy.config", Status::Pass, Severity::High);
}

#[tokio::test]
async fn disabled_ip_validation_fails_high() {
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  disable_ip_validation: true\n"
    ))
    .await;
    let f = assert_finding(&r, "upstream.ip_validation", Status::Fail, Severity::High);
    assert!(f.fix.contains("allowed_ips"));
    assert!(r.has_blocking());
    // Everything is reachable, so the related checks fail too, with the narrow proposal.
    assert_finding(&r, "upstream.allowed_ips.any", Status::Fail, Severity::High);
    let b = get(&r, "upstream.allowed_ips.breadth");
    assert!(b.fix.contains("[10.0.0.4/31]"), "{}", b.fix);
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [10.0.0.4/31]\n"
    ))
    .await;
    assert_finding(&r, "upstream.ip_validation", Status::Pass, Severity::High);
}

#[tokio::test]
async fn allow_all_ranges_fail_high() {
    for any in ["0.0.0.0/0", "::/0"] {
        let r = doctor_config(&format!(
            "{TWO_ROUTES}upstream:\n  allowed_ips: [\"{any}\", 10.0.0.4/31]\n"
        ))
        .await;
        let f = assert_finding(&r, "upstream.allowed_ips.any", Status::Fail, Severity::High);
        assert!(f.evidence.contains(any), "{}", f.evidence);
    }
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [10.0.0.4/31]\n"
    ))
    .await;
    assert_finding(&r, "upstream.allowed_ips.any", Status::Pass, Severity::High);
}

#[tokio::test]
async fn loopback_and_metadata_in_the_list_fail() {
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [127.0.0.0/8, 10.0.0.4/31]\n"
    ))
    .await;
    let f = assert_finding(
        &r,
        "upstream.allowed_ips.loopback",
        Status::Fail,
        Severity::Medium,
    );
    assert!(f.evidence.contains("loopback"), "{}", f.evidence);
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [169.254.0.0/16, 10.0.0.4/31]\n"
    ))
    .await;
    let f = assert_finding(
        &r,
        "upstream.allowed_ips.loopback",
        Status::Fail,
        Severity::High,
    );
    assert!(f.evidence.contains("169.254.169.254"), "{}", f.evidence);
    // IPv4-mapped spelling of the same thing is caught too.
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [\"::ffff:127.0.0.1/128\", 10.0.0.4/31]\n"
    ))
    .await;
    assert_finding(
        &r,
        "upstream.allowed_ips.loopback",
        Status::Fail,
        Severity::Medium,
    );

    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [10.0.0.4/31]\n"
    ))
    .await;
    assert_finding(
        &r,
        "upstream.allowed_ips.loopback",
        Status::Pass,
        Severity::Medium,
    );
    // A route that targets loopback needs it: not a finding.
    let r = doctor_config(
        "routes:\n  local: http://127.0.0.1:9000\nupstream:\n  allowed_ips: [127.0.0.1/32]\n",
    )
    .await;
    let f = assert_finding(
        &r,
        "upstream.allowed_ips.loopback",
        Status::Pass,
        Severity::Medium,
    );
    assert!(f.evidence.contains("local"), "{}", f.evidence);
}

#[tokio::test]
async fn ranges_wider_than_the_routes_fail_with_the_narrowest_proposed() {
    // The RFC 1918 default.
    let r = doctor_config(TWO_ROUTES).await;
    let f = assert_finding(
        &r,
        "upstream.allowed_ips.breadth",
        Status::Fail,
        Severity::Medium,
    );
    assert!(f.evidence.contains("default"), "{}", f.evidence);
    assert_eq!(f.fix, "set upstream.allowed_ips to [10.0.0.4/31]");
    // A /8 around two hosts.
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [10.0.0.0/8]\n"
    ))
    .await;
    let f = assert_finding(
        &r,
        "upstream.allowed_ips.breadth",
        Status::Fail,
        Severity::Medium,
    );
    assert!(
        f.evidence
            .contains("10.0.0.0/8 allows 16777214 addresses no route needs"),
        "{}",
        f.evidence
    );
    // A /24: loose, low.
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [10.0.0.0/24]\n"
    ))
    .await;
    assert_finding(
        &r,
        "upstream.allowed_ips.breadth",
        Status::Fail,
        Severity::Low,
    );
    // A range no route uses.
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [10.0.0.4/31, 192.168.9.0/24]\n"
    ))
    .await;
    let f = assert_finding(
        &r,
        "upstream.allowed_ips.breadth",
        Status::Fail,
        Severity::Medium,
    );
    assert!(
        f.evidence.contains("192.168.9.0/24 covers no route"),
        "{}",
        f.evidence
    );
    // Exactly what the routes need: host routes, or the merged /31.
    for list in ["[10.0.0.4/31]", "[10.0.0.4, 10.0.0.5/32]"] {
        let r = doctor_config(&format!("{TWO_ROUTES}upstream:\n  allowed_ips: {list}\n")).await;
        assert_finding(
            &r,
            "upstream.allowed_ips.breadth",
            Status::Pass,
            Severity::Medium,
        );
    }
}

#[tokio::test]
async fn route_names_are_resolved_for_the_proposal() {
    let res = TableResolver::with("docs.internal", &["10.1.2.3", "10.1.2.9"]);
    let r = doctor_config_resolving(
        "routes:\n  docs: http://docs.internal:8000\nupstream:\n  allowed_ips: [10.1.0.0/16]\n",
        &res,
    )
    .await;
    let f = assert_finding(
        &r,
        "upstream.allowed_ips.breadth",
        Status::Fail,
        Severity::Medium,
    );
    assert_eq!(
        f.fix,
        "set upstream.allowed_ips to [10.1.2.3/32, 10.1.2.9/32]"
    );
    // Unresolvable: cannot compute, says so instead of passing.
    let r = doctor_config(
        "routes:\n  docs: http://nowhere.internal:8000\nupstream:\n  allowed_ips: [10.1.0.0/16]\n",
    )
    .await;
    let f = assert_finding(
        &r,
        "upstream.allowed_ips.breadth",
        Status::Unknown,
        Severity::Medium,
    );
    assert!(f.evidence.contains("nowhere.internal"), "{}", f.evidence);
}

#[tokio::test]
async fn routes_outside_the_list_are_reported() {
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [10.0.0.4/32]\n"
    ))
    .await;
    let f = assert_finding(&r, "upstream.routes_permitted", Status::Fail, Severity::Low);
    assert!(f.evidence.contains("b -> 10.0.0.5"), "{}", f.evidence);
    let r = doctor_config(&format!(
        "{TWO_ROUTES}upstream:\n  allowed_ips: [10.0.0.4/31]\n"
    ))
    .await;
    assert_finding(&r, "upstream.routes_permitted", Status::Pass, Severity::Low);
}

#[tokio::test]
async fn debug_logging_fails_low() {
    let r = doctor_config(&format!("log_level: debug\n{TWO_ROUTES}")).await;
    assert_finding(&r, "logging.level", Status::Fail, Severity::Low);
    let r = doctor_config(&format!("log_level: warn\n{TWO_ROUTES}")).await;
    assert_finding(&r, "logging.level", Status::Pass, Severity::Low);
}

#[tokio::test]
async fn proxy_listening_beyond_loopback_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    let body = |listen: &str, admin: &str| {
        format!(
            "listen_addr: \"{listen}\"\nadmin_addr: \"{admin}\"\ntls:\n  cert_file: /x/tls.crt\n  key_file: /x/tls.key\nroutes:\n  a.example.com: http://10.0.0.4:80\n"
        )
    };
    let mut o = opts();
    o.proxy_config = Some(p.clone());
    std::fs::write(&p, body(":8080", "0.0.0.0:9091")).unwrap();
    let r = run(&o).await;
    assert_finding(&r, "proxy.listen", Status::Fail, Severity::Medium);
    assert_finding(&r, "proxy.admin_listen", Status::Fail, Severity::Low);
    std::fs::write(&p, body("127.0.0.1:8080", "127.0.0.1:9091")).unwrap();
    let r = run(&o).await;
    assert_finding(&r, "proxy.listen", Status::Pass, Severity::Medium);
    assert!(r.get("proxy.admin_listen").is_none());
}
