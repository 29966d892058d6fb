//! doctor's certificate, permission and token-age checks on a setup output directory:
//! each with a failing and a passing fixture.

mod common;

use std::time::SystemTime;

use common::*;
use mcp_tunnel_ops::finding::{Severity, Status};
use mcp_tunnel_pki::generate::Validity;

async fn doctor_dir(dir: &std::path::Path, routes: Option<&str>) -> mcp_tunnel_ops::Report {
    let mut o = opts();
    o.data_dir = Some(dir.to_owned());
    if let Some(body) = routes {
        o.proxy_config = Some(config(dir, body));
    }
    run(&o).await
}

fn dir_with(pki: &Pki) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write_output(d.path(), pki);
    d
}

#[tokio::test]
async fn a_good_output_passes_every_credential_check() {
    let d = dir_with(&good_pki());
    let r = doctor_dir(d.path(), Some("routes:\n  docs: http://10.0.0.5:80\n  full.abcd1234.tunnel.test: http://10.0.0.6:80\n")).await;
    for id in [
        "cert.validity",
        "cert.san",
        "cert.ca",
        "cert.chain",
        "cert.key_match",
        "files.permissions.ca.key",
        "files.permissions.tls.key",
        "files.permissions.tunnel-token",
    ] {
        assert_finding(&r, id, Status::Pass, Severity::High);
    }
    assert_finding(&r, "token.age", Status::Pass, Severity::Medium);
    assert!(!r.has_blocking(), "{}", r.to_table());
}

#[tokio::test]
async fn expired_certificate_fails_high_and_expiring_fails_medium() {
    let now = SystemTime::now();
    let ca = mcp_tunnel_pki::generate::generate_ca(
        "old CA",
        Validity {
            not_before: now - DAY * 60,
            not_after: now + DAY * 365,
        },
    )
    .unwrap();
    let expired = issue(
        &ca,
        &[&format!("*.{DOMAIN}")],
        Validity {
            not_before: now - DAY * 30,
            not_after: now - DAY,
        },
    );
    let d = dir_with(&Pki {
        ca: ca.clone(),
        server: expired,
    });
    let r = doctor_dir(d.path(), None).await;
    let f = assert_finding(&r, "cert.validity", Status::Fail, Severity::High);
    assert!(f.evidence.contains("expired"), "{}", f.evidence);
    assert!(r.has_blocking());
    // The chain itself is fine: only validity is reported.
    assert_finding(&r, "cert.chain", Status::Pass, Severity::High);

    let soon = issue(&ca, &[&format!("*.{DOMAIN}")], DAY * 10);
    let d = dir_with(&Pki { ca, server: soon });
    let r = doctor_dir(d.path(), None).await;
    let f = assert_finding(&r, "cert.validity", Status::Fail, Severity::Medium);
    assert!(
        f.evidence.contains("expires in 9 days") || f.evidence.contains("expires in 10 days"),
        "{}",
        f.evidence
    );
}

#[tokio::test]
async fn san_must_cover_every_route() {
    let ca = ca();
    let narrow = issue(&ca, &[&format!("docs.{DOMAIN}")], DAY * 90);
    let d = dir_with(&Pki { ca, server: narrow });
    let r = doctor_dir(
        d.path(),
        Some("routes:\n  docs: http://10.0.0.5:80\n  wiki: http://10.0.0.6:80\n"),
    )
    .await;
    let f = assert_finding(&r, "cert.san", Status::Fail, Severity::High);
    assert!(
        f.evidence.contains(&format!("wiki.{DOMAIN}"))
            && !f.evidence.contains(&format!("docs.{DOMAIN}, ")),
        "{}",
        f.evidence
    );
    assert!(f.fix.contains(&format!("*.{DOMAIN}")), "{}", f.fix);
    let r = doctor_dir(d.path(), Some("routes:\n  docs: http://10.0.0.5:80\n")).await;
    assert_finding(&r, "cert.san", Status::Pass, Severity::High);
}

#[tokio::test]
async fn certificate_from_another_ca_fails_the_chain() {
    let pki = good_pki();
    let other = ca();
    let d = dir_with(&Pki {
        ca: other,
        server: pki.server,
    });
    let r = doctor_dir(d.path(), None).await;
    let f = assert_finding(&r, "cert.chain", Status::Fail, Severity::High);
    assert!(
        f.evidence
            .contains("must be signed by a CA certificate registered"),
        "{}",
        f.evidence
    );
}

#[tokio::test]
async fn aki_that_does_not_match_the_ca_ski_fails_the_chain() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose,
    };
    let now = SystemTime::now();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "aki test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = (now - DAY).into();
    p.not_after = (now + DAY * 365).into();
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = p.self_signed(&ca_key).unwrap();
    // Same name and key, but the issuer claims another key identifier.
    let mut lying = p.clone();
    lying.key_identifier_method = KeyIdMethod::PreSpecified(vec![0xab; 20]);
    let issuer = Issuer::from_params(&lying, &ca_key);
    let mut lp = CertificateParams::new(vec![format!("*.{DOMAIN}")]).unwrap();
    lp.is_ca = IsCa::ExplicitNoCa;
    lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    lp.use_authority_key_identifier_extension = true;
    lp.not_before = (now - DAY).into();
    lp.not_after = (now + DAY * 90).into();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = lp.signed_by(&leaf_key, &issuer).unwrap();

    let d = tempfile::tempdir().unwrap();
    write_output(d.path(), &good_pki());
    std::fs::write(d.path().join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(d.path().join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(d.path().join("tls.key"), leaf_key.serialize_pem()).unwrap();
    let r = doctor_dir(d.path(), None).await;
    let f = assert_finding(&r, "cert.chain", Status::Fail, Severity::High);
    assert!(
        f.evidence
            .contains("AuthorityKeyIdentifier must match the CA's SubjectKeyIdentifier"),
        "{}",
        f.evidence
    );
    assert!(f.evidence.contains(&"ab".repeat(20)), "{}", f.evidence);
    assert_finding(&r, "cert.key_match", Status::Pass, Severity::High);
}

#[tokio::test]
async fn a_ca_breaking_the_rules_fails() {
    let pki = good_pki();
    let d = dir_with(&pki);
    // A server certificate where the CA should be.
    std::fs::write(d.path().join("ca.crt"), &pki.server.cert_pem).unwrap();
    let r = doctor_dir(d.path(), None).await;
    let f = assert_finding(&r, "cert.ca", Status::Fail, Severity::High);
    assert!(
        f.evidence.contains("BasicConstraints CA:TRUE"),
        "{}",
        f.evidence
    );
}

#[tokio::test]
async fn key_from_another_issuance_fails() {
    let pki = good_pki();
    let d = dir_with(&pki);
    let other = issue(&pki.ca, &[&format!("*.{DOMAIN}")], DAY * 90);
    std::fs::write(d.path().join("tls.key"), other.key_pem.expose()).unwrap();
    let r = doctor_dir(d.path(), None).await;
    assert_finding(&r, "cert.key_match", Status::Fail, Severity::High);
}

#[tokio::test]
async fn readable_keys_and_token_fail() {
    let d = dir_with(&good_pki());
    set_mode(&d.path().join("ca.key"), 0o644);
    set_mode(&d.path().join("tls.key"), 0o640);
    set_mode(&d.path().join("tunnel-token"), 0o604);
    let r = doctor_dir(d.path(), None).await;
    let f = assert_finding(&r, "files.permissions.ca.key", Status::Fail, Severity::High);
    assert!(
        f.evidence.contains("0644") && f.fix.starts_with("chmod 600 "),
        "{f:?}"
    );
    assert_finding(
        &r,
        "files.permissions.tls.key",
        Status::Fail,
        Severity::Medium,
    );
    assert_finding(
        &r,
        "files.permissions.tunnel-token",
        Status::Fail,
        Severity::High,
    );
    set_mode(&d.path().join("ca.key"), 0o400);
    let r = doctor_dir(d.path(), None).await;
    assert_finding(&r, "files.permissions.ca.key", Status::Pass, Severity::High);
}

#[tokio::test]
async fn proxy_key_outside_the_output_is_checked_too() {
    let d = dir_with(&good_pki());
    let other = tempfile::tempdir().unwrap();
    let key = other.path().join("tls.key");
    std::fs::copy(d.path().join("tls.key"), &key).unwrap();
    set_mode(&key, 0o644);
    let cfg = other.path().join("c.yaml");
    std::fs::write(&cfg, format!("listen_addr: \"127.0.0.1:8080\"\ntunnel_domain: {DOMAIN}\ntls:\n  cert_file: {}\n  key_file: {}\nroutes:\n  a: http://10.0.0.1:80\n", d.path().join("tls.crt").display(), key.display())).unwrap();
    let mut o = opts();
    o.data_dir = Some(d.path().to_owned());
    o.proxy_config = Some(cfg);
    let r = run(&o).await;
    assert_finding(
        &r,
        "files.permissions.proxy_tls_key",
        Status::Fail,
        Severity::High,
    );
}

#[tokio::test]
async fn old_token_fails_the_rotation_policy_by_file_time() {
    let d = dir_with(&good_pki());
    let f = std::fs::File::options()
        .write(true)
        .open(d.path().join("tunnel-token"))
        .unwrap();
    f.set_modified(ago(DAY * 100)).unwrap();
    drop(f);
    let mut o = opts();
    o.data_dir = Some(d.path().to_owned());
    o.rotation_days = 90;
    let r = run(&o).await;
    let f = assert_finding(&r, "token.age", Status::Fail, Severity::Medium);
    assert!(
        f.evidence.contains("100 days old") && f.evidence.contains("modification time"),
        "{}",
        f.evidence
    );
    o.rotation_days = 120;
    let r = run(&o).await;
    assert_finding(&r, "token.age", Status::Pass, Severity::Medium);
}
