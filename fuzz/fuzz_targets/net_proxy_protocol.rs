//! Fuzzes the PROXY protocol header (v1 and v2) that an L4 balancer named with
//! `--proxy-protocol-from` puts before each connection to the edge, ahead of TLS. Two
//! readers must agree on every input: `parse` over a buffer and `read_header` over a
//! stream. Whatever they accept, they accept alike, as the same header and the same
//! length, and the stream reader leaves every byte after it unread (the TLS stream).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_net::proxy_protocol::{V1_MAX, V2_MAX_BLOCK, parse, read_header};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    let mut rest = data;
    let read = runtime().block_on(read_header(&mut rest));
    match (&parsed, &read) {
        (Ok((h, n)), Ok(r)) => {
            assert_eq!(h, r);
            assert_eq!(rest.len(), data.len() - n, "the stream reader took {} bytes, not {n}", data.len() - rest.len());
            assert!(*n <= V1_MAX.max(16 + V2_MAX_BLOCK));
        }
        (Ok(p), Err(e)) => panic!("parse accepted {p:?}, the stream reader refused: {e}"),
        (Err(e), Ok(r)) => panic!("the stream reader accepted {r:?}, parse refused: {e}"),
        (Err(_), Err(_)) => {}
    }
});
