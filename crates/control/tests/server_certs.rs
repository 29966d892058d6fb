//! `server renew-certs`: renews only what is due, keeps the names, signs with the edge CA,
//! replaces files whole, and refuses (changing nothing) when it cannot do all of it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_tunnel_control::launch::{self, InitOptions};
use mcp_tunnel_control::server_certs::{Outcome, RenewError, RenewOptions, renew};
use mcp_tunnel_pki::generate::{self, KeyKind};
use mcp_tunnel_pki::tls;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const DAY: u64 = 86_400;

async fn data_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("data");
    launch::init(&InitOptions {
        data_dir: dir.clone(),
        database_url: None,
        org_name: "test".into(),
        base_domain: "tunnels.test".into(),
        edge_address: "edge.tunnels.test:7844".into(),
        api_hosts: vec!["api.tunnels.test".into(), "192.0.2.10".into()],
        max_tunnels_per_org: 10,
    })
    .await
    .unwrap();
    dir
}

fn opts(dir: &Path, renew_before_days: u64, force: bool) -> RenewOptions {
    RenewOptions {
        data_dir: dir.to_owned(),
        renew_before: Duration::from_secs(renew_before_days * DAY),
        force,
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn cert_files(dir: &Path) -> Vec<Vec<u8>> {
    ["edge.pem", "edge.key", "api.pem", "api.key"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect()
}

#[tokio::test]
async fn not_due_changes_nothing_and_due_renews_with_the_same_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(tmp.path()).await;
    let before = cert_files(&dir);
    let report = renew(&opts(&dir, 30, false)).unwrap();
    assert!(
        report
            .iter()
            .all(|r| matches!(r.outcome, Outcome::NotDue { .. })),
        "{report:?}"
    );
    assert_eq!(
        cert_files(&dir),
        before,
        "nothing written when nothing is due"
    );

    // A year minus a little is left: a renew-before of 400 days makes both due.
    let old_edge = tls::summary(&certs(&dir.join("edge.pem"))[0]).unwrap();
    let report = renew(&opts(&dir, 400, false)).unwrap();
    assert_eq!(report.len(), 2);
    let after = cert_files(&dir);
    for (i, r) in report.iter().enumerate() {
        let Outcome::Renewed { was, not_after } = r.outcome else {
            panic!("{r:?}");
        };
        assert!(not_after >= was, "{r}");
        let written = tls::summary(&certs(&dir.join(r.file))[0]).unwrap();
        assert_eq!(not_after, written.not_after, "{r}: reports what it wrote");
        assert_ne!(after[2 * i], before[2 * i], "{} rewritten", r.file);
        assert_ne!(after[2 * i + 1], before[2 * i + 1], "{}: a new key", r.file);
    }
    let ca = certs(&dir.join("edge-ca.pem")).remove(0);
    let ca_sum = tls::summary(&ca).unwrap();
    for (file, key, names) in [
        (
            "edge.pem",
            "edge.key",
            vec!["edge.tunnels.test", "*.tunnels.test"],
        ),
        (
            "api.pem",
            "api.key",
            vec!["localhost", "127.0.0.1", "api.tunnels.test", "192.0.2.10"],
        ),
    ] {
        let chain = certs(&dir.join(file));
        assert_eq!(chain.len(), 2, "{file}: leaf and CA");
        assert_eq!(chain[1], ca, "{file}: the CA follows the leaf");
        let leaf = tls::summary(&chain[0]).unwrap();
        assert_eq!(leaf.names, names, "{file}: the same names");
        assert_eq!(leaf.issuer, ca_sum.subject, "{file}: issued by the edge CA");
        // The pair loads (key matches certificate), and the key file stays private.
        tls::load_certified_key(&dir.join(file), &dir.join(key)).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join(key))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    assert!(
        tls::summary(&certs(&dir.join("edge.pem"))[0])
            .unwrap()
            .not_before
            >= old_edge.not_before
    );
    // No temporary file left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".renew"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn refusals_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(tmp.path()).await;
    let before = cert_files(&dir);

    // The CA key moved away (as the docs suggest between renewals).
    std::fs::rename(dir.join("edge-ca.key"), tmp.path().join("edge-ca.key")).unwrap();
    let e = renew(&opts(&dir, 30, true)).unwrap_err();
    assert!(matches!(e, RenewError::NoCaKey { .. }), "{e}");
    assert!(e.to_string().contains("edge-ca.key is missing"), "{e}");
    // Not due: no key needed, nothing refused.
    renew(&opts(&dir, 30, false)).unwrap();
    std::fs::rename(tmp.path().join("edge-ca.key"), dir.join("edge-ca.key")).unwrap();
    assert_eq!(cert_files(&dir), before);

    // A damaged api.pem: refused naming it, and edge.pem (due) is not renewed either.
    let good_api = std::fs::read(dir.join("api.pem")).unwrap();
    for damaged in [
        &b""[..],
        b"not pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        std::fs::write(dir.join("api.pem"), damaged).unwrap();
        let e = renew(&opts(&dir, 30, true)).unwrap_err();
        assert!(matches!(e, RenewError::Unreadable { .. }), "{e}");
        assert!(e.to_string().contains("api.pem"), "{e}");
        assert_eq!(std::fs::read(dir.join("edge.pem")).unwrap(), before[0]);
        assert_eq!(std::fs::read(dir.join("edge.key")).unwrap(), before[1]);
    }
    std::fs::write(dir.join("api.pem"), &good_api).unwrap();

    // Not a data directory.
    let e = renew(&opts(&tmp.path().join("nowhere"), 30, true)).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
    assert_eq!(cert_files(&dir), before);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(tmp.path()).await;
    // The operator put a certificate from their own (say, public) CA in api.pem.
    let other = generate::generate_ca("someone else", Duration::from_secs(400 * DAY)).unwrap();
    let theirs = generate::issue_server_cert(
        &other.cert_pem,
        other.key_pem.expose(),
        &["api.example.com".to_owned()],
        Duration::from_secs(5 * DAY),
        KeyKind::EcdsaP256,
    )
    .unwrap();
    std::fs::write(dir.join("api.pem"), &theirs.cert_pem).unwrap();
    std::fs::write(dir.join("api.key"), theirs.key_pem.expose()).unwrap();
    let edge_before = std::fs::read(dir.join("edge.pem")).unwrap();
    let report = renew(&opts(&dir, 30, true)).unwrap();
    let api = report.iter().find(|r| r.file == "api.pem").unwrap();
    assert_eq!(api.outcome, Outcome::Foreign);
    assert!(api.to_string().contains("left alone"), "{api}");
    assert_eq!(
        std::fs::read_to_string(dir.join("api.pem")).unwrap(),
        theirs.cert_pem
    );
    assert_ne!(std::fs::read(dir.join("edge.pem")).unwrap(), edge_before);
}

#[tokio::test]
async fn renewal_stops_at_an_expiring_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(tmp.path()).await;
    // Swap in a CA with 12 hours left and leaves it issued.
    let ca = generate::generate_ca("mcp-tunnel edge CA", Duration::from_secs(12 * 3600)).unwrap();
    std::fs::write(dir.join("edge-ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("edge-ca.key"), ca.key_pem.expose()).unwrap();
    for (file, key, name) in [
        ("edge.pem", "edge.key", "edge.tunnels.test"),
        ("api.pem", "api.key", "localhost"),
    ] {
        let leaf = generate::issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &[name.to_owned()],
            Duration::from_secs(3600),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        std::fs::write(dir.join(file), format!("{}{}", leaf.cert_pem, ca.cert_pem)).unwrap();
        std::fs::write(dir.join(key), leaf.key_pem.expose()).unwrap();
    }
    let before = cert_files(&dir);
    let e = renew(&opts(&dir, 30, false)).unwrap_err();
    assert!(matches!(e, RenewError::CaExpiring { .. }), "{e}");
    assert!(e.to_string().contains("pin this CA"), "{e}");
    assert_eq!(cert_files(&dir), before);
}
