//! Fuzzes CA registration: any bytes, as PEM text and as DER, must yield a `CaInfo` or a
//! rule error, never a panic; what is accepted must honour the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_pki::validate::{MAX_CA_PEM_BYTES, validate_ca_der, validate_ca_pem};

/// A fixed clock keeps crashes reproducible; the `ok_*` seeds are valid then
/// (crates/pki/tests/fuzz_corpus.rs checks that).
const NOW: i64 = 1_893_456_000; // 2030-01-01T00:00:00Z

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match validate_ca_pem(&text, NOW) {
        Ok(info) => {
            assert!(text.len() <= MAX_CA_PEM_BYTES);
            assert_eq!(info.fingerprint.len(), 64);
            assert!(info.not_before <= NOW && NOW <= info.not_after);
        }
        Err(e) => drop(e.to_string()),
    }
    // DER directly, so mutations reach the X.509 parser without the base64 barrier.
    if let Err(e) = validate_ca_der(data, NOW) {
        drop(e.to_string());
    }
});
