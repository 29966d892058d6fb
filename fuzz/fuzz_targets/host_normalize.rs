//! Fuzzes host normalisation and route lookup, which see every client's SNI and Host
//! header: no panic, normalisation is idempotent, and its output is lowercase ASCII without
//! a port or trailing dot.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_proxy::config::{ProxyConfig, normalize_host};

const CONFIG: &str = "listen_addr: \":8080\"
tunnel_domain: t1.tunnels.example.com
tls: {cert_file: c, key_file: k}
routes:
  docs: http://10.0.0.5:8000
  a.b: http://10.0.0.6:8000
  api.corp.example: http://[fd00::1]:9000
";

fn config() -> &'static ProxyConfig {
    static CONFIG_CELL: OnceLock<ProxyConfig> = OnceLock::new();
    CONFIG_CELL.get_or_init(|| ProxyConfig::from_yaml(CONFIG, None).expect("fixed config loads"))
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let Some(host) = normalize_host(&raw) else {
        return;
    };
    assert!(host.is_ascii() && !host.is_empty());
    assert!(!host.bytes().any(|b| b.is_ascii_uppercase()));
    assert!(!host.ends_with('.'));
    assert_eq!(normalize_host(&host).as_deref(), Some(host.as_str()), "idempotent");
    if let Some(route) = config().routes.lookup(&host) {
        assert!(host == route.name || host.ends_with(".t1.tunnels.example.com"));
    }
});
