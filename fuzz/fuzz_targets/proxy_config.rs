//! Fuzzes the proxy config loader: any UTF-8 text must yield a config or a typed error,
//! never a panic, and a loaded config must route each of its own route names.
//! Seeds: `cargo fuzz run proxy_config crates/proxy/examples-config`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_proxy::config::{ProxyConfig, normalize_host};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ProxyConfig::from_yaml(text, None) else {
        return;
    };
    assert!(!config.routes.is_empty());
    for route in config.routes.iter() {
        assert_eq!(normalize_host(&route.name).as_deref(), Some(route.name.as_str()));
        let found = config.routes.lookup(&route.name).expect("a route finds itself");
        assert_eq!(found.name, route.name);
        assert!(route.upstream.port > 0);
    }
});
