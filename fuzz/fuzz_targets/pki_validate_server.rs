//! Fuzzes the client's server-certificate check: any DER leaf, checked against a real
//! registered CA, must be accepted or refused with a rule error, never panic.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_pki::generate::{self, KeyKind};
use mcp_tunnel_pki::validate::validate_server_cert;

struct Fixture {
    ca_der: Vec<u8>,
    leaf_der: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca =
            generate::generate_ca("fuzz CA", generate::DEFAULT_CA_VALIDITY).expect("generate CA");
        let leaf = generate::issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &["*.abcd1234.tunnel.example".to_owned()],
            Duration::from_secs(86_400),
            KeyKind::EcdsaP256,
        )
        .expect("issue leaf");
        Fixture {
            ca_der: ca.cert_der,
            leaf_der: leaf.cert_der,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let now = wall_clock();
    // Arbitrary bytes as the leaf, and as the registered CA for the good leaf.
    for (leaf, ca) in [(data, f.ca_der.as_slice()), (f.leaf_der.as_slice(), data)] {
        if let Err(e) = validate_server_cert(leaf, &[], &[ca], "route.abcd1234.tunnel.example", now)
        {
            drop(e.to_string());
        }
    }
});

/// The wall clock: the fixture is generated at run time, so it is valid now.
fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
