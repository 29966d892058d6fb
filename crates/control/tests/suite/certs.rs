//! Certificate endpoints: the CA rules of SPEC §8 surfacing in 400s, two per tunnel,
//! archive back to needs_certificate.

use std::process::Command;

use serde_json::json;

use crate::common::{Backend, Harness, error_of, good_ca};

const OPENSSL_CNF: &str = "[req]
distinguished_name = dn
prompt = no
[dn]
CN = Test CA
[recipe]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[nocrit]
basicConstraints = CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[noski]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = none
[nocertsign]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
[notca]
basicConstraints = critical,CA:FALSE
keyUsage = critical,keyCertSign
subjectKeyIdentifier = hash
";

/// A self-signed certificate made by the openssl CLI: (cert PEM, key PEM).
fn openssl(section: &str, extra: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cnf = dir.path().join("ca.cnf");
    std::fs::write(&cnf, OPENSSL_CNF).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let mut args = vec![
        "req",
        "-x509",
        "-config",
        cnf.to_str().unwrap(),
        "-extensions",
        section,
        "-nodes",
        "-days",
        "30",
    ];
    if !extra.contains(&"-newkey") {
        args.extend(["-newkey", "rsa:2048"]);
    }
    args.extend(extra);
    args.extend([
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let out = Command::new("openssl")
        .args(&args)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

pub async fn certificate_lifecycle(b: Backend) {
    let h = Harness::start(b).await;
    let t = h.create_tunnel("certs").await;
    let id = t["id"].as_str().unwrap();
    let path = format!("/v1/tunnels/{id}/certificates");
    let (recipe, _) = openssl("recipe", &[]);
    let c1 = h
        .admin("POST", &path, Some(json!({"ca_certificate_pem": recipe})))
        .await;
    assert_eq!(c1["type"], "tunnel_certificate");
    assert!(c1["id"].as_str().unwrap().starts_with("tcrt_"));
    assert_eq!(c1["tunnel_id"], id);
    let fp = c1["fingerprint"].as_str().unwrap();
    assert!(
        fp.len() == 64
            && fp
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert!(c1["expires_at"].as_str().is_some() && c1["archived_at"].is_null());
    assert!(
        c1["ca_certificate_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(
        h.admin("GET", &format!("/v1/tunnels/{id}"), None).await["status"],
        "active"
    );

    error_of(
        &h.call(
            Some(&h.admin),
            "POST",
            &path,
            Some(json!({"ca_certificate_pem": recipe})),
        )
        .await,
        400,
        "invalid_request_error",
    );
    let c2 = h
        .admin(
            "POST",
            &path,
            Some(json!({"ca_certificate_pem": good_ca("second")})),
        )
        .await;
    let msg = error_of(
        &h.call(
            Some(&h.admin),
            "POST",
            &path,
            Some(json!({"ca_certificate_pem": good_ca("third")})),
        )
        .await,
        400,
        "invalid_request_error",
    );
    assert!(msg.contains("2 non-archived"), "{msg}");

    let c1_id = c1["id"].as_str().unwrap();
    let got = h.admin("GET", &format!("{path}/{c1_id}"), None).await;
    assert_eq!(got["fingerprint"], c1["fingerprint"]);
    let list = h.admin("GET", &path, None).await;
    let ids: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![c2["id"].clone(), c1["id"].clone()],
        "newest first"
    );

    let a = h
        .admin("POST", &format!("{path}/{c1_id}/archive"), None)
        .await;
    assert!(a["archived_at"].as_str().is_some());
    let again = h
        .admin("POST", &format!("{path}/{c1_id}/archive"), None)
        .await;
    assert_eq!(a["archived_at"], again["archived_at"]);
    h.admin(
        "POST",
        &path,
        Some(json!({"ca_certificate_pem": good_ca("third")})),
    )
    .await;
    let c2_id = c2["id"].as_str().unwrap();
    h.admin("POST", &format!("{path}/{c2_id}/archive"), None)
        .await;
    let list = h
        .admin("GET", &format!("{path}?include_archived=true"), None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    // Archive the last active one: back to needs_certificate.
    let last = h.admin("GET", &path, None).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.admin("POST", &format!("{path}/{last}/archive"), None)
        .await;
    assert_eq!(
        h.admin("GET", &format!("/v1/tunnels/{id}"), None).await["status"],
        "needs_certificate"
    );
    error_of(
        &h.call(Some(&h.admin), "GET", &format!("{path}/tcrt_missing"), None)
            .await,
        404,
        "not_found_error",
    );

    // Archiving the tunnel archives its certificates and refuses new ones.
    h.admin(
        "POST",
        &path,
        Some(json!({"ca_certificate_pem": good_ca("fourth")})),
    )
    .await;
    h.admin("POST", &format!("/v1/tunnels/{id}/archive"), None)
        .await;
    let list = h.admin("GET", &path, None).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    error_of(
        &h.call(
            Some(&h.admin),
            "POST",
            &path,
            Some(json!({"ca_certificate_pem": good_ca("fifth")})),
        )
        .await,
        400,
        "invalid_request_error",
    );
}

pub async fn certificate_refusals_name_the_rule(b: Backend) {
    let h = Harness::start(b).await;
    let t = h.create_tunnel("bad").await;
    let path = format!("/v1/tunnels/{}/certificates", t["id"].as_str().unwrap());
    let good = good_ca("good");
    let (recipe, recipe_key) = openssl("recipe", &[]);
    let expired = mcp_tunnel_pki::generate::generate_ca(
        "old",
        mcp_tunnel_pki::generate::Validity {
            not_before: std::time::SystemTime::now() - std::time::Duration::from_secs(86_400 * 10),
            not_after: std::time::SystemTime::now() - std::time::Duration::from_secs(86_400),
        },
    )
    .unwrap()
    .cert_pem;
    let mut cases: Vec<(&str, String, &str)> = vec![
        (
            "private key",
            format!("{recipe}{recipe_key}"),
            "must not contain a private key",
        ),
        (
            "two certificates",
            format!("{good}{recipe}"),
            "exactly one certificate",
        ),
        (
            "too large",
            format!("{good}{}", " ".repeat(9000)),
            "at most 8192 bytes",
        ),
        ("empty", String::new(), "empty"),
        ("garbage", "hello".into(), "PEM"),
        ("expired", expired, "has expired"),
    ];
    let (nocrit, _) = openssl("nocrit", &[]);
    cases.push((
        "basicConstraints not critical",
        nocrit,
        "BasicConstraints CA:TRUE marked critical",
    ));
    let (notca, _) = openssl("notca", &[]);
    cases.push(("CA:FALSE", notca, "BasicConstraints CA:TRUE"));
    let (noski, _) = openssl("noski", &[]);
    cases.push(("no SKI", noski, "SubjectKeyIdentifier"));
    let (nocertsign, _) = openssl("nocertsign", &[]);
    cases.push(("no keyCertSign", nocertsign, "keyCertSign"));
    let (rsa1024, _) = openssl("recipe", &["-newkey", "rsa:1024"]);
    cases.push(("RSA 1024", rsa1024, "at least 2048 bits"));
    let (sha1, _) = openssl("recipe", &["-sha1"]);
    cases.push(("SHA-1", sha1, "SHA-256 or stronger"));
    for (name, pem, expect) in cases {
        let got = h
            .call(
                Some(&h.admin),
                "POST",
                &path,
                Some(json!({"ca_certificate_pem": pem})),
            )
            .await;
        let msg = error_of(&got, 400, "invalid_request_error");
        assert!(
            msg.contains(expect),
            "{name}: {msg:?} should mention {expect:?}"
        );
    }
    let missing = h.call(Some(&h.admin), "POST", &path, Some(json!({}))).await;
    assert!(error_of(&missing, 400, "invalid_request_error").contains("ca_certificate_pem"));
    // Nothing was registered, nothing audited.
    assert!(
        h.admin("GET", &path, None).await["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(!h.actions().await.iter().any(|a| a == "certificate.create"));
    // The documented recipe is accepted.
    h.admin("POST", &path, Some(json!({"ca_certificate_pem": recipe})))
        .await;
}
