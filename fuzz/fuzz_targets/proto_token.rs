//! Fuzzes tunnel token parsing: any input must yield a token or a typed error, and a
//! parsed token must survive an encode/parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_proto::TunnelToken;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = TunnelToken::parse(s) {
        let again = TunnelToken::parse(&token.encode()).expect("encoded token must parse");
        assert_eq!(again, token);
    }
});
