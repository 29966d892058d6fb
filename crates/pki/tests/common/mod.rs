//! Helpers shared by the pki integration tests: the `openssl` CLI in a tempdir, and rcgen
//! for certificates openssl 3.0 cannot make (explicit past validity, odd AKIs).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub const DOMAIN: &str = "abcd1234.tunnel.example";
pub const HOST: &str = "route.abcd1234.tunnel.example";
const DAY: Duration = Duration::from_secs(86_400);

pub fn now() -> i64 {
    unix(SystemTime::now())
}

pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The `openssl` CLI run in its own tempdir with a minimal config, so the machine's
/// openssl.cnf cannot add extensions behind the test's back.
pub struct Openssl {
    dir: tempfile::TempDir,
}

impl Openssl {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("min.cnf"),
            "[req]\ndistinguished_name = dn\n[dn]\n",
        )
        .expect("write openssl config");
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs openssl with `args` (file names are relative to the tempdir); panics with its
    /// stderr on failure so a broken recipe is obvious.
    pub fn run(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .env("OPENSSL_CONF", self.path("min.cnf"))
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read openssl output")
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write file");
    }

    /// A private key: `rsa:1024`, `rsa:2048`, `ec:prime256v1`, `ec:secp256k1`, `ed25519`.
    pub fn key(&self, name: &str, spec: &str) -> String {
        let file = format!("{name}.key");
        match spec.split_once(':') {
            Some(("rsa", bits)) => self.run(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
                "-out",
                &file,
            ]),
            Some(("ec", curve)) => self.run(&[
                "ecparam", "-name", curve, "-genkey", "-noout", "-out", &file,
            ]),
            _ => self.run(&["genpkey", "-algorithm", spec, "-out", &file]),
        }
        file
    }

    /// A self-signed certificate by `req -x509` with exactly the `-addext` extensions given.
    pub fn self_signed(
        &self,
        name: &str,
        key_file: &str,
        digest: &[&str],
        exts: &[&str],
    ) -> String {
        let out = format!("{name}.crt");
        let subj = format!("/CN={name}");
        let mut args = vec![
            "req", "-x509", "-key", key_file, "-out", &out, "-days", "30", "-subj", &subj,
        ];
        args.extend_from_slice(digest);
        for e in exts {
            args.push("-addext");
            args.push(e);
        }
        self.run(&args);
        self.read(&out)
    }

    /// A certificate for a new `key_spec` key, signed by `ca` via `x509 -req -extfile`.
    pub fn issue(&self, name: &str, ca: &str, key_spec: &str, days: &str, extfile: &str) -> String {
        let key = self.key(name, key_spec);
        let csr = format!("{name}.csr");
        let out = format!("{name}.crt");
        let ext = format!("{name}.ext");
        self.write(&ext, extfile);
        self.run(&[
            "req",
            "-new",
            "-key",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &out,
            "-days",
            days,
            "-sha256",
            "-extfile",
            &ext,
        ]);
        self.read(&out)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The CA extensions of the documented recipe.
pub const CA_EXTS: [&str; 3] = [
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign",
    "subjectKeyIdentifier=hash",
];

/// The SPEC §8 openssl recipe: an RSA-2048 CA named `ca` (files `ca.key`, `ca.crt`).
pub fn recipe_ca(ossl: &Openssl) -> String {
    let key = ossl.key("ca", "rsa:2048");
    ossl.self_signed("ca", &key, &["-sha256"], &CA_EXTS)
}

/// The recipe's server certificate extfile for `san`.
pub fn server_extfile(san: &str) -> String {
    format!("subjectAltName=DNS:{san}\nauthorityKeyIdentifier=keyid\nextendedKeyUsage=serverAuth\n")
}

/// An rcgen CA with a key and the params it was made from (for issuing).
pub struct TestCa {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub der: Vec<u8>,
    pub pem: String,
}

impl TestCa {
    pub fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

pub fn params(cn: &str, from: SystemTime, to: SystemTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.remove(DnType::CommonName);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = from.into();
    p.not_after = to.into();
    p
}

/// A good rcgen CA (valid yesterday to in a year) after `tweak`.
pub fn rcgen_ca(cn: &str, tweak: impl FnOnce(&mut CertificateParams)) -> TestCa {
    let now = SystemTime::now();
    let mut p = params(cn, now - DAY, now + 365 * DAY);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    tweak(&mut p);
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-sign");
    TestCa {
        der: cert.der().to_vec(),
        pem: cert.pem(),
        params: p,
        key,
    }
}

/// A good rcgen server certificate for `sans` signed by `issuer`, after `tweak`.
/// Returns (DER, PKCS#8 key DER).
pub fn rcgen_leaf(
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    sans: &[&str],
    tweak: impl FnOnce(&mut CertificateParams),
) -> (Vec<u8>, Vec<u8>) {
    let now = SystemTime::now();
    let mut p = params("leaf", now - DAY, now + 30 * DAY);
    p.subject_alt_names =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("sans")
            .subject_alt_names;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    tweak(&mut p);
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("sign");
    (cert.der().to_vec(), key.serialize_der())
}

pub fn days(n: u64) -> Duration {
    DAY * n as u32
}

/// DER of the single certificate in `pem`.
pub fn der_of(pem: &str) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate PEM")
        .to_vec()
}
