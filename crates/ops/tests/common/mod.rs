//! Fixtures for the doctor tests: a setup output directory with run-time certificates,
//! proxy configs, a scripted resolver, and a one-line way to run doctor and pick a
//! finding.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use mcp_tunnel_ops::doctor::{self, DoctorOptions};
use mcp_tunnel_ops::finding::{Finding, Report, Severity, Status};
use mcp_tunnel_pki::generate::{self, GeneratedCert, KeyKind, Validity};
use mcp_tunnel_proxy::guard::Resolver;

pub const DOMAIN: &str = "abcd1234.tunnel.test";
pub const DAY: Duration = Duration::from_secs(86_400);

/// Names resolved from a fixed table; anything else is NXDOMAIN.
#[derive(Debug, Default)]
pub struct TableResolver(pub BTreeMap<String, Vec<SocketAddr>>);

impl TableResolver {
    pub fn with(name: &str, ips: &[&str]) -> Self {
        let mut t = BTreeMap::new();
        t.insert(
            name.to_owned(),
            ips.iter()
                .map(|i| SocketAddr::new(i.parse().unwrap(), 0))
                .collect(),
        );
        Self(t)
    }
}

impl Resolver for TableResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move {
            self.0
                .get(host)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    }
}

/// A CA and a server certificate for `*.DOMAIN` valid for `days`.
pub struct Pki {
    pub ca: GeneratedCert,
    pub server: GeneratedCert,
}

pub fn ca() -> GeneratedCert {
    generate::generate_ca("doctor test CA", DAY * 365).unwrap()
}

pub fn issue(ca: &GeneratedCert, sans: &[&str], validity: impl Into<Validity>) -> GeneratedCert {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    generate::issue_server_cert(
        &ca.cert_pem,
        ca.key_pem.expose(),
        &sans,
        validity,
        KeyKind::EcdsaP256,
    )
    .unwrap()
}

pub fn good_pki() -> Pki {
    let ca = ca();
    let server = issue(&ca, &[&format!("*.{DOMAIN}")], DAY * 90);
    Pki { ca, server }
}

/// Writes a SPEC §9 output: every file 0600 (certificates 0644).
pub fn write_output(dir: &Path, pki: &Pki) {
    let w = |name: &str, body: &str, mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        set_mode(&p, mode);
    };
    w("tunnel-id", "tnl_doctortest\n", 0o644);
    w("tunnel-domain", &format!("{DOMAIN}\n"), 0o644);
    w("tunnel-token", "eyJ0ZXN0IjoidG9rZW4ifQ\n", 0o600);
    w("ca.crt", &pki.ca.cert_pem, 0o644);
    w("ca.key", pki.ca.key_pem.expose(), 0o600);
    w("tls.crt", &pki.server.cert_pem, 0o644);
    w("tls.key", pki.server.key_pem.expose(), 0o600);
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A proxy config with `body` (routes, upstream, …) after the fixed fields.
pub fn config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("config.yaml");
    let text = format!(
        "listen_addr: \"127.0.0.1:8080\"\ntunnel_domain: {DOMAIN}\ntls:\n  cert_file: {d}/tls.crt\n  key_file: {d}/tls.key\n{body}",
        d = dir.display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

pub fn opts() -> DoctorOptions {
    DoctorOptions::default()
}

pub async fn run(o: &DoctorOptions) -> Report {
    doctor::run(o, &TableResolver::default()).await
}

pub async fn run_with(o: &DoctorOptions, r: &TableResolver) -> Report {
    doctor::run(o, r).await
}

/// The finding `id`, asserting it exists.
pub fn get<'a>(r: &'a Report, id: &str) -> &'a Finding {
    r.get(id)
        .unwrap_or_else(|| panic!("no finding {id}; got:\n{}", r.to_table()))
}

#[track_caller]
pub fn assert_finding(r: &Report, id: &str, status: Status, severity: Severity) -> Finding {
    let f = get(r, id).clone();
    assert_eq!(
        (f.status, f.severity),
        (status, severity),
        "{id}: {f:#?}\n{}",
        r.to_table()
    );
    f
}

pub fn ago(d: Duration) -> SystemTime {
    SystemTime::now() - d
}
