//! Fuzzes handshake frame decoding on both sides, in arbitrary chunkings: no panic, no
//! consumption past one frame, and a decoded Hello must re-encode to the same frame.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_proto::frame::{HEADER_LEN, MAX_PAYLOAD};
use mcp_tunnel_proto::{ClientHandshake, Hello, ProtocolVersion, ServerEvent, ServerHandshake};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let now = Instant::now();
    let timeout = Duration::from_secs(5);

    let mut server = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, timeout);
    let mut consumed = 0;
    for piece in bytes.chunks(chunk) {
        match server.feed(piece, now) {
            Ok(p) => {
                consumed += p.consumed;
                assert!(consumed <= HEADER_LEN + MAX_PAYLOAD);
                if let Some(ServerEvent::Hello { hello, .. }) = p.event {
                    let encoded = hello.encode().expect("decoded hello re-encodes");
                    assert_eq!(&bytes[..consumed], &encoded[..]);
                    break;
                }
            }
            Err(_) => break,
        }
    }

    let hello = Hello {
        versions: ProtocolVersion::SUPPORTED.to_vec(),
        tunnel_id: mcp_tunnel_proto::TunnelId::parse("tnl_fuzz").expect("valid id"),
        secret: mcp_tunnel_proto::token::generate_secret(),
        conn_index: 0,
        instance_id: mcp_tunnel_proto::InstanceId([0; 16]),
        software_version: "fuzz".into(),
    };
    let Ok(mut client) = ClientHandshake::new(&hello, now, timeout) else {
        return;
    };
    for piece in bytes.chunks(chunk) {
        match client.feed(piece, now) {
            Ok(p) if p.event.is_some() => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
