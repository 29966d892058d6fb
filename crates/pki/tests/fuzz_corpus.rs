//! The committed fuzz seeds mean what their names say: `ok_*` are accepted and `bad_*`
//! refused by the intended rule, at the fuzz target's fixed clock. Inputs a fuzzing
//! campaign added (named by libFuzzer: the SHA-1 of their content) carry no claim.

use std::path::PathBuf;

use mcp_tunnel_pki::validate::{CertRuleError, validate_ca_der, validate_ca_pem};

/// Must equal `NOW` in fuzz/fuzz_targets/pki_validate_ca.rs.
const FUZZ_NOW: i64 = 1_893_456_000;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/pki_validate_ca");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("fuzz corpus directory")
        .map(|e| {
            let path = e.expect("dir entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read seed"))
        })
        .filter(|(name, _)| !is_found_input(name))
        .collect();
    out.sort();
    out
}

/// libFuzzer names what it keeps by the SHA-1 of the content.
fn is_found_input(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn seeds_have_their_named_outcome() {
    let seeds = corpus();
    assert!(seeds.len() >= 5, "corpus went missing: {seeds:?}");
    for (name, bytes) in seeds {
        let result = if name.ends_with(".der") {
            validate_ca_der(&bytes, FUZZ_NOW)
        } else {
            validate_ca_pem(
                std::str::from_utf8(&bytes).expect("PEM seed is text"),
                FUZZ_NOW,
            )
        };
        match (name.split('_').next(), result) {
            (Some("ok"), Ok(_)) => {}
            (Some("bad"), Err(e)) => {
                let intended = match name.as_str() {
                    "bad_two_certs.pem" => {
                        matches!(e, CertRuleError::CertificateCount { count: 2 })
                    }
                    "bad_ec_parameters.pem" => matches!(e, CertRuleError::UnexpectedBlock { .. }),
                    "bad_ca_false.pem" => matches!(e, CertRuleError::NotCa { .. }),
                    "bad_sha1.pem" => matches!(e, CertRuleError::WeakSignature { .. }),
                    "bad_private_key.pem" => matches!(e, CertRuleError::PrivateKeyPresent { .. }),
                    other => panic!("no expectation for seed {other}"),
                };
                assert!(intended, "{name}: refused for the wrong reason: {e}");
            }
            (_, result) => panic!("{name}: unexpected outcome {result:?}"),
        }
    }
}
