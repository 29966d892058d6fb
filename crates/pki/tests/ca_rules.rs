//! SPEC §8 CA rules: a battery of bad CA certificates, each refused with the right rule,
//! and the documented openssl recipe accepted.

mod common;

use common::*;
use mcp_tunnel_pki::validate::{CertRole, CertRuleError, MAX_CA_PEM_BYTES, validate_ca_pem};

/// Asserts `pem` is refused by the rule `matches`, with `text` in the message.
fn refused(pem: &str, matches: impl Fn(&CertRuleError) -> bool, text: &str) {
    refused_at(pem, now(), matches, text);
}

fn refused_at(pem: &str, at: i64, matches: impl Fn(&CertRuleError) -> bool, text: &str) {
    match validate_ca_pem(pem, at) {
        Ok(info) => panic!("accepted a bad CA: {info:?}"),
        Err(e) => {
            assert!(matches(&e), "wrong rule: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(text), "message {msg:?} lacks {text:?}");
        }
    }
}

const BC_RULE: &str = "CA certificate must have BasicConstraints CA:TRUE marked critical";

#[test]
fn documented_openssl_recipe_is_accepted() {
    let ossl = Openssl::new();
    let pem = recipe_ca(&ossl);
    let info = validate_ca_pem(&pem, now()).expect("recipe CA accepted");
    assert_eq!(info.key, "RSA 2048 bits");
    assert_eq!(info.subject, "CN=ca");
    assert_eq!(
        info.fingerprint,
        mcp_tunnel_pki::crypto::sha256_hex(&der_of(&pem))
    );
    assert_eq!(info.fingerprint.len(), 64);
    assert_eq!(info.subject_key_id.len(), 20);
    assert!(info.not_after - info.not_before >= 30 * 86_400 - 1);
}

#[test]
fn other_strong_keys_and_signatures_are_accepted() {
    let ossl = Openssl::new();
    for (name, spec, digest) in [
        ("p256", "ec:prime256v1", vec!["-sha256"]),
        ("p384", "ec:secp384r1", vec!["-sha384"]),
        ("p521", "ec:secp521r1", vec!["-sha512"]),
        ("rsa4096", "rsa:4096", vec!["-sha512"]),
        (
            "pss",
            "rsa:2048",
            vec![
                "-sha256",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ],
        ),
    ] {
        let key = ossl.key(name, spec);
        let pem = ossl.self_signed(name, &key, &digest, &CA_EXTS);
        validate_ca_pem(&pem, now()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn ca_false_is_refused() {
    let ossl = Openssl::new();
    let key = ossl.key("k", "rsa:2048");
    let pem = ossl.self_signed(
        "leafish",
        &key,
        &["-sha256"],
        &[
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,keyCertSign",
            "subjectKeyIdentifier=hash",
        ],
    );
    refused(&pem, |e| matches!(e, CertRuleError::NotCa { .. }), BC_RULE);
    refused(&pem, |_| true, "CA:FALSE");
}

#[test]
fn basic_constraints_not_critical_is_refused() {
    let ossl = Openssl::new();
    let key = ossl.key("k", "rsa:2048");
    let pem = ossl.self_signed(
        "nc",
        &key,
        &["-sha256"],
        &[
            "basicConstraints=CA:TRUE",
            "keyUsage=critical,keyCertSign",
            "subjectKeyIdentifier=hash",
        ],
    );
    refused(
        &pem,
        |e| *e == CertRuleError::BasicConstraintsNotCritical,
        "BasicConstraints is not marked critical",
    );
}

#[test]
fn no_extensions_at_all_is_refused() {
    let ossl = Openssl::new();
    let key = ossl.key("k", "rsa:2048");
    let pem = ossl.self_signed("bare", &key, &["-sha256"], &[]);
    refused(
        &pem,
        |e| matches!(e, CertRuleError::NotCa { .. }),
        "BasicConstraints is missing",
    );
}

#[test]
fn missing_subject_key_identifier_is_refused() {
    let ossl = Openssl::new();
    let key = ossl.key("k", "rsa:2048");
    let pem = ossl.self_signed(
        "noski",
        &key,
        &["-sha256"],
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign",
            "subjectKeyIdentifier=none",
        ],
    );
    refused(
        &pem,
        |e| *e == CertRuleError::MissingSubjectKeyId,
        "CA certificate must have a SubjectKeyIdentifier extension",
    );
}

#[test]
fn missing_key_usage_is_refused() {
    let ossl = Openssl::new();
    let key = ossl.key("k", "rsa:2048");
    let pem = ossl.self_signed(
        "noku",
        &key,
        &["-sha256"],
        &[
            "basicConstraints=critical,CA:TRUE",
            "subjectKeyIdentifier=hash",
        ],
    );
    refused(
        &pem,
        |e| *e == CertRuleError::MissingKeyUsage,
        "KeyUsage is missing",
    );
}

#[test]
fn key_usage_without_key_cert_sign_is_refused() {
    let ossl = Openssl::new();
    let key = ossl.key("k", "rsa:2048");
    let pem = ossl.self_signed(
        "nosign",
        &key,
        &["-sha256"],
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,digitalSignature,cRLSign",
            "subjectKeyIdentifier=hash",
        ],
    );
    refused(
        &pem,
        |e| matches!(e, CertRuleError::KeyUsageNoCertSign { .. }),
        "KeyUsage must include keyCertSign (it has: Digital Signature, CRL Sign)",
    );
}

/// Weak or unsupported keys, each made by openssl with otherwise perfect CA extensions.
#[test]
fn weak_keys_are_refused() {
    let ossl = Openssl::new();
    for (name, spec, found) in [
        ("rsa1024", "rsa:1024", "found RSA 1024 bits"),
        (
            "p192",
            "ec:prime192v1",
            "found ECDSA on curve P-192 (prime192v1)",
        ),
        ("k1", "ec:secp256k1", "found ECDSA on curve secp256k1"),
        ("ed", "ed25519", "found Ed25519"),
    ] {
        let key = ossl.key(name, spec);
        let digest: &[&str] = if spec == "ed25519" { &[] } else { &["-sha256"] };
        let pem = ossl.self_signed(name, &key, digest, &CA_EXTS);
        refused(
            &pem,
            |e| {
                matches!(
                    e,
                    CertRuleError::WeakKey {
                        role: CertRole::Ca,
                        ..
                    }
                )
            },
            found,
        );
        refused(
            &pem,
            |_| true,
            "key must be RSA of at least 2048 bits or ECDSA on P-256",
        );
    }
}

#[test]
fn weak_signatures_are_refused() {
    let ossl = Openssl::new();
    for (name, spec, digest, found) in [
        ("sha1", "rsa:2048", "-sha1", "found sha1WithRSAEncryption"),
        ("md5", "rsa:2048", "-md5", "found md5WithRSAEncryption"),
        (
            "sha224",
            "rsa:2048",
            "-sha224",
            "found sha224WithRSAEncryption",
        ),
        ("ecsha1", "ec:prime256v1", "-sha1", "found ecdsa-with-SHA1"),
    ] {
        let key = ossl.key(name, spec);
        let pem = ossl.self_signed(name, &key, &[digest], &CA_EXTS);
        refused(
            &pem,
            |e| {
                matches!(
                    e,
                    CertRuleError::WeakSignature {
                        role: CertRole::Ca,
                        ..
                    }
                )
            },
            found,
        );
        refused(
            &pem,
            |_| true,
            "signature algorithm must be SHA-256 or stronger",
        );
    }
}

#[test]
fn intermediate_that_is_not_self_signed_is_refused() {
    let ossl = Openssl::new();
    recipe_ca(&ossl);
    let ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n\
               subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
    let pem = ossl.issue("inter", "ca", "rsa:2048", "30", ext);
    refused(
        &pem,
        |e| *e == CertRuleError::SelfSignatureInvalid,
        "must be self-signed",
    );
}

#[test]
fn tampered_signature_is_refused() {
    let ca = rcgen_ca("tampered", |_| {});
    let mut der = ca.der.clone();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    refused(
        &pem_of(&der),
        |e| *e == CertRuleError::SelfSignatureInvalid,
        "self-signed",
    );
}

#[test]
fn server_certificate_is_refused_as_ca() {
    let ossl = Openssl::new();
    recipe_ca(&ossl);
    let pem = ossl.issue(
        "srv",
        "ca",
        "rsa:2048",
        "30",
        &server_extfile(&format!("*.{DOMAIN}")),
    );
    refused(
        &pem,
        |e| matches!(e, CertRuleError::NotCa { .. }),
        "BasicConstraints is missing",
    );
}

#[test]
fn expired_and_not_yet_valid_are_refused() {
    let expired = rcgen_ca("old", |p| {
        let now = std::time::SystemTime::now();
        p.not_before = (now - days(400)).into();
        p.not_after = (now - days(1)).into();
    });
    refused(
        &expired.pem,
        |e| {
            matches!(
                e,
                CertRuleError::Expired {
                    role: CertRole::Ca,
                    ..
                }
            )
        },
        "CA certificate has expired: notAfter was ",
    );
    let future = rcgen_ca("future", |p| {
        let now = std::time::SystemTime::now();
        p.not_before = (now + days(1)).into();
        p.not_after = (now + days(400)).into();
    });
    refused(
        &future.pem,
        |e| {
            matches!(
                e,
                CertRuleError::NotYetValid {
                    role: CertRole::Ca,
                    ..
                }
            )
        },
        "CA certificate is not valid yet",
    );
}

#[test]
fn validity_bounds_are_inclusive() {
    let ossl = Openssl::new();
    let pem = recipe_ca(&ossl);
    let info = validate_ca_pem(&pem, now()).unwrap();
    assert!(validate_ca_pem(&pem, info.not_before).is_ok());
    assert!(validate_ca_pem(&pem, info.not_after).is_ok());
    refused_at(
        &pem,
        info.not_after + 1,
        |e| matches!(e, CertRuleError::Expired { .. }),
        "expired",
    );
    refused_at(
        &pem,
        info.not_before - 1,
        |e| matches!(e, CertRuleError::NotYetValid { .. }),
        "not valid yet",
    );
}

#[test]
fn unknown_critical_extension_is_refused() {
    let ca = rcgen_ca("crit", |p| {
        let mut ext = rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x05, 0x00],
        );
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    });
    refused(
        &ca.pem,
        |e| {
            matches!(
                e,
                CertRuleError::Malformed {
                    role: CertRole::Ca,
                    ..
                }
            )
        },
        "unsupported critical extension 1.3.6.1.4.1.99999.1",
    );
}

// ---- PEM-level refusals ----

#[test]
fn two_certificates_in_one_pem_are_refused() {
    let ossl = Openssl::new();
    let pem = recipe_ca(&ossl);
    let other = rcgen_ca("other", |_| {}).pem;
    refused(
        &format!("{pem}{other}"),
        |e| *e == CertRuleError::CertificateCount { count: 2 },
        "exactly one certificate (found 2)",
    );
}

#[test]
fn appended_private_keys_are_refused() {
    let ossl = Openssl::new();
    let pem = recipe_ca(&ossl);
    let pkcs8 = ossl.read("ca.key");
    assert!(pkcs8.contains("BEGIN PRIVATE KEY"));
    ossl.run(&["pkey", "-in", "ca.key", "-traditional", "-out", "trad.key"]);
    ossl.run(&[
        "pkey", "-in", "ca.key", "-aes256", "-passout", "pass:x", "-out", "enc.key",
    ]);
    let ec = ossl.key("ec", "ec:prime256v1");
    for (key, label) in [
        (pkcs8, "PRIVATE KEY"),
        (ossl.read("trad.key"), "RSA PRIVATE KEY"),
        (ossl.read("enc.key"), "ENCRYPTED PRIVATE KEY"),
        (ossl.read(&ec), "EC PRIVATE KEY"),
    ] {
        for text in [format!("{pem}{key}"), format!("{key}{pem}")] {
            refused(
                &text,
                |e| matches!(e, CertRuleError::PrivateKeyPresent { label: l } if l == label),
                "must not contain a private key",
            );
        }
    }
}

#[test]
fn ec_parameters_block_is_refused() {
    let ossl = Openssl::new();
    let pem = recipe_ca(&ossl);
    ossl.run(&["ecparam", "-name", "prime256v1", "-out", "params.pem"]);
    let params = ossl.read("params.pem");
    refused(
        &format!("{params}{pem}"),
        |e| matches!(e, CertRuleError::UnexpectedBlock { label } if label == "EC PARAMETERS"),
        "must contain only a CERTIFICATE block (found a \"EC PARAMETERS\" block)",
    );
}

#[test]
fn certificate_request_block_is_refused() {
    let ossl = Openssl::new();
    let key = ossl.key("k", "rsa:2048");
    ossl.run(&[
        "req", "-new", "-key", &key, "-subj", "/CN=x", "-out", "x.csr",
    ]);
    refused(
        &ossl.read("x.csr"),
        |e| matches!(e, CertRuleError::UnexpectedBlock { label } if label == "CERTIFICATE REQUEST"),
        "CERTIFICATE REQUEST",
    );
}

#[test]
fn oversized_input_is_refused() {
    let ossl = Openssl::new();
    let pem = recipe_ca(&ossl);
    let padded = format!("{pem}{}", "\n".repeat(MAX_CA_PEM_BYTES + 1 - pem.len()));
    refused(
        &padded,
        |e| matches!(e, CertRuleError::TooLarge { len } if *len == MAX_CA_PEM_BYTES + 1),
        "must be at most 8192 bytes",
    );
    // Exactly at the limit is fine: the rule is "at most".
    let at_limit = format!("{pem}{}", "\n".repeat(MAX_CA_PEM_BYTES - pem.len()));
    assert!(validate_ca_pem(&at_limit, now()).is_ok());
}

#[test]
fn non_pem_inputs_are_refused() {
    refused(
        "",
        |e| *e == CertRuleError::Empty,
        "CA certificate PEM is empty",
    );
    refused(" \n\r\n", |e| *e == CertRuleError::Empty, "empty");
    refused(
        "this is not a certificate",
        |e| matches!(e, CertRuleError::NotPem { .. }),
        "must be PEM text",
    );
    let ossl = Openssl::new();
    let pem = recipe_ca(&ossl);
    ossl.run(&["x509", "-in", "ca.crt", "-text", "-out", "text.pem"]);
    refused(
        &ossl.read("text.pem"),
        |e| matches!(e, CertRuleError::NotPem { .. }),
        "no PEM block found where the text starts",
    );
    refused(
        &pem.replace("-----END CERTIFICATE-----", ""),
        |e| matches!(e, CertRuleError::NotPem { .. }),
        "no matching END line",
    );
}

#[test]
fn garbage_base64_is_refused() {
    refused(
        "-----BEGIN CERTIFICATE-----\nnot*base64@all\n-----END CERTIFICATE-----\n",
        |e| *e == CertRuleError::BadBase64,
        "not valid base64",
    );
}

#[test]
fn base64_that_is_not_a_certificate_is_refused() {
    refused(
        &pem_of(b"hello, world"),
        |e| {
            matches!(
                e,
                CertRuleError::Malformed {
                    role: CertRole::Ca,
                    ..
                }
            )
        },
        "CA certificate is not a valid X.509 certificate",
    );
    let mut der = rcgen_ca("trailing", |_| {}).der;
    der.extend_from_slice(&[0, 0]);
    refused(
        &pem_of(&der),
        |e| matches!(e, CertRuleError::Malformed { .. }),
        "trailing data after the certificate",
    );
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}
