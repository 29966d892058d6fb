//! SPEC §8 server-certificate rules: the openssl recipe accepted, bad certificates
//! refused with the right rule, and what `generate` issues accepted.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use mcp_tunnel_pki::generate::{self, KeyKind};
use mcp_tunnel_pki::validate::{
    CaInfo, CertRole, CertRuleError, validate_ca_pem, validate_server_cert,
};
use rustls_pki_types::CertificateDer;

fn check<C: AsRef<[u8]>>(leaf: &[u8], cas: &[C], host: &str) -> Result<(), CertRuleError> {
    validate_server_cert(leaf, &[], cas, host, now())
}

fn refused(res: Result<(), CertRuleError>, matches: impl Fn(&CertRuleError) -> bool, text: &str) {
    let e = res.expect_err("a bad server certificate was accepted");
    assert!(matches(&e), "wrong rule: {e:?}");
    let msg = e.to_string();
    assert!(msg.contains(text), "message {msg:?} lacks {text:?}");
}

/// The recipe CA plus an openssl-issued server certificate with `extfile`.
fn recipe_pair(extfile: &str) -> (Openssl, Vec<u8>, Vec<u8>) {
    let ossl = Openssl::new();
    let ca = recipe_ca(&ossl);
    let leaf = ossl.issue("srv", "ca", "rsa:2048", "90", extfile);
    (ossl, der_of(&ca), der_of(&leaf))
}

#[test]
fn documented_openssl_recipe_is_accepted() {
    let (ossl, ca, leaf) = recipe_pair(&server_extfile(&format!("*.{DOMAIN}")));
    let info: CaInfo = validate_ca_pem(&ossl.read("ca.crt"), now()).unwrap();
    validate_server_cert(&leaf, &[], &[&info], HOST, now()).expect("recipe server cert");
    check(&leaf, &[ca], "other-route.abcd1234.tunnel.example").expect("any route");
}

#[test]
fn exact_san_and_absent_eku_are_accepted() {
    let ext = format!("subjectAltName=DNS:{HOST}\nauthorityKeyIdentifier=keyid\n");
    let (_ossl, ca, leaf) = recipe_pair(&ext);
    check(&leaf, std::slice::from_ref(&ca), HOST).expect("exact SAN, no EKU");
    refused(
        check(&leaf, &[ca], "other.abcd1234.tunnel.example"),
        |e| matches!(e, CertRuleError::SanMismatch { .. }),
        "SubjectAltName must cover \"other.abcd1234.tunnel.example\"",
    );
}

#[test]
fn wrong_san_is_refused() {
    let (_ossl, ca, leaf) = recipe_pair(&server_extfile("*.zzzz9999.tunnel.example"));
    refused(
        check(&leaf, &[ca], HOST),
        |e| matches!(e, CertRuleError::SanMismatch { host, names } if host == HOST && names == "*.zzzz9999.tunnel.example"),
        "server certificate SubjectAltName must cover",
    );
}

#[test]
fn wildcard_covers_only_one_label() {
    // `*.tunnel.example` would have to cover `route.abcd1234`: two labels.
    let (_o, ca, leaf) = recipe_pair(&server_extfile("*.tunnel.example"));
    refused(
        check(&leaf, &[ca], HOST),
        |e| matches!(e, CertRuleError::SanMismatch { .. }),
        "a wildcard covers exactly one label",
    );
    let (_o, ca, leaf) = recipe_pair(&server_extfile(&format!("*.{DOMAIN}")));
    refused(
        check(&leaf, &[ca], &format!("deeper.{HOST}")),
        |e| matches!(e, CertRuleError::SanMismatch { .. }),
        "exactly one label",
    );
}

#[test]
fn missing_san_is_refused() {
    let (_o, ca, leaf) = recipe_pair("authorityKeyIdentifier=keyid\nextendedKeyUsage=serverAuth\n");
    refused(
        check(&leaf, &[ca], HOST),
        |e| *e == CertRuleError::MissingSan,
        "must have a SubjectAltName extension",
    );
}

#[test]
fn intermediates_are_refused() {
    let (_o, ca, leaf) = recipe_pair(&server_extfile(&format!("*.{DOMAIN}")));
    let chain = [CertificateDer::from(ca.clone())];
    refused(
        validate_server_cert(&leaf, &chain, &[ca], HOST, now()),
        |e| *e == CertRuleError::IntermediatesPresent { count: 1 },
        "intermediate certificates are not allowed",
    );
}

#[test]
fn unregistered_ca_is_refused() {
    let (_o, _ca, leaf) = recipe_pair(&server_extfile(&format!("*.{DOMAIN}")));
    let other = Openssl::new();
    let other_ca = der_of(&recipe_ca(&other)); // same subject "CN=ca", other key
    refused(
        check(&leaf, &[other_ca], HOST),
        |e| matches!(e, CertRuleError::UnknownIssuer { issuer } if issuer == "CN=ca"),
        "must be signed by a CA certificate registered for this tunnel",
    );
    refused(
        validate_server_cert(&leaf, &[], &[] as &[Vec<u8>], HOST, now()),
        |e| *e == CertRuleError::NoRegisteredCa,
        "no CA certificate is registered",
    );
}

#[test]
fn second_registered_ca_is_used_during_rotation() {
    let (_o, ca, leaf) = recipe_pair(&server_extfile(&format!("*.{DOMAIN}")));
    let unrelated = rcgen_ca("old", |_| {}).der;
    check(&leaf, &[unrelated, ca], HOST).expect("signed by the second slot");
}

#[test]
fn client_auth_only_eku_is_refused() {
    let ext = format!(
        "subjectAltName=DNS:*.{DOMAIN}\nauthorityKeyIdentifier=keyid\nextendedKeyUsage=clientAuth\n"
    );
    let (_o, ca, leaf) = recipe_pair(&ext);
    refused(
        check(&leaf, &[ca], HOST),
        |e| matches!(e, CertRuleError::EkuNoServerAuth { found } if found == "clientAuth"),
        "ExtendedKeyUsage must include serverAuth (it has: clientAuth)",
    );
}

#[test]
fn missing_aki_is_refused() {
    let ca = rcgen_ca("ca", |_| {});
    let (leaf, _) = rcgen_leaf(&ca.issuer(), &[HOST], |p| {
        p.use_authority_key_identifier_extension = false;
    });
    refused(
        check(&leaf, &[&ca.der], HOST),
        |e| *e == CertRuleError::MissingAuthorityKeyId,
        "must have an AuthorityKeyIdentifier",
    );
}

#[test]
fn aki_mismatch_is_refused() {
    let ca = rcgen_ca("ca", |_| {});
    // The same key and name, but an issuer claiming another key identifier.
    let mut lying = ca.params.clone();
    lying.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![0xab; 20]);
    let issuer = rcgen::Issuer::from_params(&lying, &ca.key);
    let (leaf, _) = rcgen_leaf(&issuer, &[HOST], |_| {});
    refused(
        check(&leaf, &[&ca.der], HOST),
        |e| matches!(e, CertRuleError::AuthorityKeyIdMismatch { aki, .. } if *aki == "ab".repeat(20)),
        "AuthorityKeyIdentifier must match the CA's SubjectKeyIdentifier",
    );
}

#[test]
fn expired_and_not_yet_valid_are_refused() {
    let ca = rcgen_ca("ca", |_| {});
    let t = SystemTime::now();
    let (old, _) = rcgen_leaf(&ca.issuer(), &[HOST], |p| {
        p.not_before = (t - days(30)).into();
        p.not_after = (t - days(1)).into();
    });
    refused(
        check(&old, &[&ca.der], HOST),
        |e| {
            matches!(
                e,
                CertRuleError::Expired {
                    role: CertRole::Server,
                    ..
                }
            )
        },
        "server certificate has expired",
    );
    let (young, _) = rcgen_leaf(&ca.issuer(), &[HOST], |p| {
        p.not_before = (t + days(1)).into();
        p.not_after = (t + days(30)).into();
    });
    refused(
        check(&young, &[&ca.der], HOST),
        |e| {
            matches!(
                e,
                CertRuleError::NotYetValid {
                    role: CertRole::Server,
                    ..
                }
            )
        },
        "server certificate is not valid yet",
    );
}

#[test]
fn expired_issuing_ca_is_refused_by_name() {
    let t = SystemTime::now();
    let ca = rcgen_ca("ca", |p| p.not_after = (t + days(1)).into());
    let (leaf, _) = rcgen_leaf(&ca.issuer(), &[HOST], |_| {});
    let later = now() + 2 * 86_400;
    refused(
        validate_server_cert(&leaf, &[], &[&ca.der], HOST, later),
        |e| matches!(e, CertRuleError::IssuingCaInvalid(inner) if matches!(**inner, CertRuleError::Expired { role: CertRole::Ca, .. })),
        "the registered CA that signed the server certificate is not acceptable: CA certificate has expired",
    );
}

#[test]
fn ca_certificate_as_server_certificate_is_refused() {
    let ca = rcgen_ca("ca", |_| {});
    let (leaf, _) = rcgen_leaf(&ca.issuer(), &[HOST], |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    });
    refused(
        check(&leaf, &[&ca.der], HOST),
        |e| *e == CertRuleError::ServerIsCa,
        "must not be a CA certificate",
    );
}

#[test]
fn weak_server_key_and_signature_are_refused() {
    let ossl = Openssl::new();
    let ca = der_of(&recipe_ca(&ossl));
    let leaf = der_of(&ossl.issue("weak", "ca", "rsa:1024", "30", &server_extfile(HOST)));
    refused(
        check(&leaf, std::slice::from_ref(&ca), HOST),
        |e| {
            matches!(
                e,
                CertRuleError::WeakKey {
                    role: CertRole::Server,
                    ..
                }
            )
        },
        "server certificate key must be RSA of at least 2048 bits",
    );
    // Signed by the recipe CA, but with SHA-1.
    ossl.key("s1", "rsa:2048");
    ossl.write("s1.ext", &server_extfile(HOST));
    ossl.run(&[
        "req", "-new", "-key", "s1.key", "-out", "s1.csr", "-subj", "/CN=s1",
    ]);
    ossl.run(&[
        "x509",
        "-req",
        "-in",
        "s1.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "s1.crt",
        "-days",
        "30",
        "-sha1",
        "-extfile",
        "s1.ext",
    ]);
    refused(
        check(&der_of(&ossl.read("s1.crt")), &[ca], HOST),
        |e| matches!(e, CertRuleError::WeakSignature { role: CertRole::Server, found } if found == "sha1WithRSAEncryption"),
        "server certificate signature algorithm must be SHA-256 or stronger",
    );
}

#[test]
fn generated_certificates_interoperate() {
    let ca = generate::generate_ca("tunnel CA", generate::DEFAULT_CA_VALIDITY).unwrap();
    let info = validate_ca_pem(&ca.cert_pem, now()).unwrap();
    let sans = vec![format!("*.{DOMAIN}")];
    for kind in [KeyKind::EcdsaP256, KeyKind::EcdsaP384, KeyKind::Rsa2048] {
        let leaf = generate::issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &sans,
            Duration::from_secs(3600),
            kind,
        )
        .unwrap();
        validate_server_cert(&leaf.cert_der, &[], &[&info], HOST, now())
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
    // A client certificate is not a server certificate.
    let client = generate::issue_client_cert(
        &ca.cert_pem,
        ca.key_pem.expose(),
        "agent",
        Duration::from_secs(3600),
        KeyKind::EcdsaP256,
    )
    .unwrap();
    refused(
        validate_server_cert(&client.cert_der, &[], &[&info], HOST, now()),
        |e| *e == CertRuleError::MissingSan,
        "SubjectAltName",
    );
}

#[test]
fn generate_can_issue_from_an_openssl_ca() {
    // `setup renew-cert` and `rotate cert` re-sign with a stored CA, which may be the
    // operator's own openssl-made one (SEC1 EC key with an EC PARAMETERS block first).
    let ossl = Openssl::new();
    ossl.run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-out",
        "ca.key",
    ]);
    let ca_pem = ossl.self_signed("ca", "ca.key", &["-sha256"], &CA_EXTS);
    let key_pem = ossl.read("ca.key");
    assert!(key_pem.contains("EC PARAMETERS"));
    let leaf = generate::issue_server_cert(
        &ca_pem,
        &key_pem,
        &[format!("*.{DOMAIN}")],
        Duration::from_secs(3600),
        KeyKind::EcdsaP256,
    )
    .unwrap();
    check(&leaf.cert_der, &[der_of(&ca_pem)], HOST).unwrap();
}
