//! The proxy config contract (SPEC §4, §4.1): every load-time error and its wording, every
//! default, and every example config in `examples-config/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_tunnel_net::listen::ListenAddr;
use mcp_tunnel_proxy::config::{
    ConfigError, DEFAULT_CONFIG_PATHS, LogFormat, LogLevel, ProxyConfig, Scheme, normalize_host,
};
use mcp_tunnel_proxy::guard::UpstreamPolicy;

const BASE: &str = "listen_addr: \":8080\"
tunnel_domain: t1.tunnels.example.com
tls:
  cert_file: /tls/server.crt
  key_file: /tls/server.key
";

/// `BASE` plus `extra` (more top-level YAML), with one route unless `extra` has `routes`.
fn yaml(extra: &str) -> String {
    if extra.contains("routes:") {
        format!("{BASE}{extra}")
    } else {
        format!("{BASE}routes:\n  docs: http://10.0.0.5:8000\n{extra}")
    }
}

fn load(text: &str) -> ProxyConfig {
    ProxyConfig::from_yaml(text, None).unwrap_or_else(|e| panic!("should load: {e}\n{text}"))
}

fn error(text: &str) -> String {
    match ProxyConfig::from_yaml(text, None) {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn assert_error_contains(text: &str, phrase: &str) {
    let msg = error(text);
    assert!(msg.contains(phrase), "error {msg:?} lacks {phrase:?}");
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-config")
}

// ---- load-time errors (SPEC §4.1) ----

#[test]
fn routes_as_list_is_refused_with_go_wording() {
    let text = format!("{BASE}routes:\n  - docs: http://10.0.0.5:8000\n  - http://10.0.0.6:80\n");
    assert_eq!(
        error(&text),
        "routes must be a map of name to upstream URL, not a list (cannot unmarshal !!seq into map[string]string)"
    );
    assert!(error(&format!("{BASE}routes: []\n")).starts_with("routes must be a map"));
}

#[test]
fn upstream_not_exactly_scheme_host_port_is_refused() {
    let cases = [
        "http://10.0.0.5",
        "http://10.0.0.5:8000/",
        "http://10.0.0.5:8000/mcp",
        "http://10.0.0.5:8000?x=1",
        "http://10.0.0.5:8000#top",
        "ftp://10.0.0.5:21",
        "ws://10.0.0.5:80",
        "http://:8000",
        "10.0.0.5:8000",
        "http://10.0.0.5:99999",
    ];
    for value in cases {
        let text = format!("{BASE}routes:\n  docs: \"{value}\"\n");
        let want =
            format!("route \"docs\": invalid upstream \"{value}\" (must be scheme://host:port)");
        assert_error_contains(&text, &want);
    }
}

#[test]
fn upstream_userinfo_is_refused_and_redacted() {
    let text = format!("{BASE}routes:\n  docs: http://admin:hunter2@10.0.0.5:8000\n");
    let msg = error(&text);
    assert!(
        msg.contains("route \"docs\": invalid upstream \"http://REDACTED@10.0.0.5:8000\" (must be scheme://host:port)"),
        "{msg}"
    );
    assert!(msg.contains("userinfo"), "{msg}");
    assert!(!msg.contains("hunter2"), "password leaked: {msg}");
}

#[test]
fn null_upstream_names_the_route() {
    assert_error_contains(
        &format!("{BASE}routes:\n  docs:\n"),
        "route \"docs\": invalid upstream \"\" (must be scheme://host:port)",
    );
}

#[test]
fn https_upstream_needs_a_trust_source() {
    let text =
        format!("{BASE}routes:\n  docs: http://10.0.0.5:80\n  secure: https://10.0.0.6:443\n");
    let msg = error(&text);
    for phrase in [
        "route \"secure\"",
        "upstream.tls.ca_file",
        "upstream.tls.include_system_cas",
    ] {
        assert!(msg.contains(phrase), "{msg:?} lacks {phrase:?}");
    }
    // Either source is enough.
    load(&format!("{text}upstream:\n  tls:\n    ca_file: /ca.pem\n"));
    load(&format!(
        "{text}upstream:\n  tls:\n    include_system_cas: true\n"
    ));
}

#[test]
fn allowed_ips_with_validation_disabled_is_refused() {
    let msg = error(&yaml(
        "upstream:\n  allowed_ips: [10.0.0.0/8]\n  disable_ip_validation: true\n",
    ));
    assert!(msg.contains("mutually exclusive"), "{msg}");
    assert!(msg.contains("upstream.allowed_ips") && msg.contains("upstream.disable_ip_validation"));
}

#[test]
fn bad_allowed_ip_names_entry_and_index() {
    for (entry, index) in [("10.0.0.0/33", 1), ("banana", 1), ("10.0.0/8", 1), ("", 1)] {
        let text = yaml(&format!(
            "upstream:\n  allowed_ips:\n    - 10.0.0.0/8\n    - \"{entry}\"\n"
        ));
        assert_error_contains(
            &text,
            &format!("upstream.allowed_ips[{index}]: invalid entry \"{entry}\""),
        );
    }
}

#[test]
fn empty_allowed_ips_is_refused() {
    assert_error_contains(
        &yaml("upstream:\n  allowed_ips: []\n"),
        "upstream.allowed_ips is empty",
    );
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let cases = [
        (
            yaml("listen_adr: \":9090\"\n"),
            "unknown field \"listen_adr\"",
        ),
        (
            yaml("").replace("cert_file", "cert_fil"),
            "unknown field \"tls.cert_fil\"",
        ),
        (
            yaml("upstream:\n  allowed_ip: [10.0.0.0/8]\n"),
            "unknown field \"upstream.allowed_ip\"",
        ),
        (
            yaml("upstream:\n  tls:\n    cafile: /ca.pem\n"),
            "unknown field \"upstream.tls.cafile\"",
        ),
        (
            yaml("limits:\n  max_headers: 10\n"),
            "unknown field \"limits.max_headers\"",
        ),
        (
            yaml("client_auth:\n  ca: /ca.pem\n"),
            "unknown field \"client_auth.ca\"",
        ),
    ];
    for (text, phrase) in cases {
        assert_error_contains(&text, phrase);
    }
    let msg = error(&yaml("limits:\n  max_headers: 10\n"));
    assert!(msg.contains("line 9, column 3"), "location missing: {msg}");
    assert!(
        msg.contains("max_header_bytes"),
        "expected fields missing: {msg}"
    );
}

#[test]
fn required_fields() {
    let full = yaml("");
    let cases = [
        (
            full.replace("listen_addr: \":8080\"\n", ""),
            "listen_addr is required",
        ),
        (
            full.replace("  cert_file: /tls/server.crt\n", ""),
            "tls.cert_file is required",
        ),
        (
            full.replace("  key_file: /tls/server.key\n", ""),
            "tls.key_file is required",
        ),
        (BASE.to_owned(), "routes is required"),
        (
            full.replace("/tls/server.key", "\"\""),
            "tls.key_file is required",
        ),
        (String::new(), "listen_addr is required"),
        (
            yaml("client_auth:\n  ca_file: \"\"\n"),
            "client_auth.ca_file is required",
        ),
    ];
    for (text, phrase) in cases {
        assert_eq!(error(&text), phrase, "{text}");
    }
}

#[test]
fn empty_routes_map_is_refused() {
    assert_eq!(
        error(&format!("{BASE}routes: {{}}\n")),
        "routes must contain at least one route"
    );
}

#[test]
fn bad_durations_name_the_field() {
    let cases = [
        (
            "shutdown_timeout: 30\n",
            "shutdown_timeout: invalid duration \"30\": missing unit",
        ),
        (
            "shutdown_timeout: -5s\n",
            "shutdown_timeout: invalid duration \"-5s\": negative",
        ),
        (
            "shutdown_timeout: soon\n",
            "shutdown_timeout: invalid duration \"soon\"",
        ),
        (
            "upstream:\n  connect_timeout: 5x\n",
            "upstream.connect_timeout: invalid duration \"5x\": unknown unit",
        ),
        (
            "limits:\n  handshake_timeout: \"\"\n",
            "limits.handshake_timeout: invalid duration \"\"",
        ),
        (
            "upstream:\n  connect_timeout: 0s\n",
            "upstream.connect_timeout: must be greater than zero",
        ),
        (
            "limits:\n  handshake_timeout: \"0\"\n",
            "limits.handshake_timeout: must be greater than zero",
        ),
    ];
    for (extra, phrase) in cases {
        assert_error_contains(&yaml(extra), phrase);
    }
    let with_reload = yaml("").replace("  key_file", "  reload_interval: 0s\n  key_file");
    assert_error_contains(
        &with_reload,
        "tls.reload_interval: must be greater than zero",
    );
}

#[test]
fn bad_log_level_lists_allowed_values() {
    assert_error_contains(
        &yaml("log_level: verbose\n"),
        "invalid log_level \"verbose\" (must be one of debug, info, warn, error)",
    );
    assert_error_contains(
        &yaml("log_format: xml\n"),
        "invalid log_format \"xml\" (must be one of json, text)",
    );
}

#[test]
fn bare_route_without_tunnel_domain_is_refused() {
    let text = "listen_addr: \":8080\"\ntls: {cert_file: c, key_file: k}\nroutes:\n  docs: http://10.0.0.5:80\n";
    assert_error_contains(text, "route \"docs\": tunnel_domain is required");
    // The flag supplies it.
    let cfg = ProxyConfig::from_yaml(text, Some("T2.Example.com")).expect("flag supplies domain");
    assert_eq!(cfg.tunnel_domain.as_deref(), Some("t2.example.com"));
}

#[test]
fn bad_route_names_and_overlaps_are_refused() {
    assert_error_contains(
        &format!("{BASE}routes:\n  \"*.docs\": http://10.0.0.5:80\n"),
        "route \"*.docs\": invalid route name",
    );
    assert_error_contains(
        &format!("{BASE}routes:\n  Docs: http://10.0.0.5:80\n  docs: http://10.0.0.6:80\n"),
        "routes \"docs\" and \"docs\" both match host \"docs\"",
    );
    assert_error_contains(
        &format!(
            "{BASE}routes:\n  docs: http://10.0.0.5:80\n  docs.t1.tunnels.example.com: http://10.0.0.6:80\n"
        ),
        "both match host \"docs.t1.tunnels.example.com\"",
    );
}

#[test]
fn other_field_errors() {
    assert_error_contains(
        &yaml("").replace("\":8080\"", "\"8080\""),
        "listen_addr: invalid listen address \"8080\": missing port",
    );
    assert_error_contains(
        &yaml("admin_addr: \"example.com:9091\"\n"),
        "admin_addr: invalid listen address",
    );
    assert_error_contains(
        &yaml("").replace("t1.tunnels.example.com", "bad domain"),
        "invalid tunnel_domain \"bad domain\"",
    );
    assert_error_contains(
        &yaml("limits:\n  max_concurrent_streams: 0\n"),
        "limits.max_concurrent_streams: must be greater than zero",
    );
    assert_error_contains(
        &yaml("limits:\n  max_body_bytes: 0\n"),
        "limits.max_body_bytes: must be greater than zero",
    );
    assert_error_contains(
        &yaml("limits:\n  max_header_bytes: 0\n"),
        "limits.max_header_bytes: must be greater than zero",
    );
    assert_error_contains(&yaml("preserve_host: maybe\n"), "invalid YAML");
    assert_error_contains(
        &format!("{BASE}routes:\n  docs: http://10.0.0.5:80\n  docs: http://10.0.0.6:80\n"),
        "duplicate key \"docs\"",
    );
    assert_error_contains("- just\n- a list\n", "invalid YAML");
    assert_error_contains("listen_addr: [\n", "invalid YAML");
}

#[test]
fn unreadable_file_is_reported_go_style() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let err = ProxyConfig::load(&missing, None).expect_err("missing file");
    assert!(matches!(err, ConfigError::Read(_)));
    assert_eq!(
        err.to_string(),
        format!("open {}: no such file or directory", missing.display())
    );
    let err = ProxyConfig::load(dir.path(), None).expect_err("a directory");
    assert_eq!(
        err.to_string(),
        format!("open {}: is a directory", dir.path().display())
    );

    let denied = dir.path().join("denied.yaml");
    std::fs::write(&denied, yaml("")).expect("write");
    set_mode(&denied, 0o000);
    match ProxyConfig::load(&denied, None) {
        Err(err) => assert_eq!(
            err.to_string(),
            format!("open {}: permission denied", denied.display())
        ),
        // Root ignores file modes; the mapping is still checked below without the OS.
        Ok(_) => assert!(is_root(), "mode 000 file was readable by a non-root user"),
    }
    let from_os = mcp_tunnel_pki::tls::LoadError::Open {
        path: denied.clone(),
        reason: mcp_tunnel_pki::tls::io_reason(&std::io::ErrorKind::PermissionDenied.into()),
    };
    assert_eq!(
        ConfigError::from(from_os).to_string(),
        format!("open {}: permission denied", denied.display())
    );
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml("")).expect("write");
    let cfg = ProxyConfig::load(&path, None).expect("loads");
    assert_eq!(cfg.routes.len(), 1);
    std::fs::write(&path, b"listen_addr: \"\xff\"\n").expect("write");
    assert!(
        ProxyConfig::load(&path, None)
            .expect_err("not utf-8")
            .to_string()
            .contains("not UTF-8")
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn is_root() -> bool {
    // Owner of a freshly created file is the effective user.
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::metadata(dir.path()).expect("stat").uid() == 0
}

// ---- defaults (SPEC §4 table and our extensions) ----

#[test]
fn default_log_level_is_info() {
    assert_eq!(load(&yaml("")).log_level, LogLevel::Info);
    assert_eq!(LogLevel::Info.as_str(), "info");
    assert_eq!(load(&yaml("log_level: WARN\n")).log_level, LogLevel::Warn);
}

#[test]
fn default_log_format_is_json() {
    assert_eq!(load(&yaml("")).log_format, LogFormat::Json);
}

#[test]
fn default_shutdown_timeout_is_30s() {
    assert_eq!(load(&yaml("")).shutdown_timeout, Duration::from_secs(30));
    assert_eq!(
        load(&yaml("shutdown_timeout: \"0\"\n")).shutdown_timeout,
        Duration::ZERO
    );
}

#[test]
fn default_policy_is_rfc1918() {
    assert_eq!(
        load(&yaml("")).upstream.policy,
        UpstreamPolicy::default_private()
    );
    assert_eq!(
        load(&yaml("upstream:\n  disable_ip_validation: true\n"))
            .upstream
            .policy,
        UpstreamPolicy::Disabled
    );
}

#[test]
fn default_upstream_tls_is_empty() {
    let tls = load(&yaml("")).upstream.tls;
    assert_eq!(tls.ca_file, None);
    assert!(!tls.include_system_cas);
}

#[test]
fn default_connect_timeout_is_10s() {
    assert_eq!(
        load(&yaml("")).upstream.connect_timeout,
        Duration::from_secs(10)
    );
}

#[test]
fn default_reload_interval_is_5s() {
    assert_eq!(load(&yaml("")).tls.reload_interval, Duration::from_secs(5));
}

#[test]
fn default_admin_addr_is_loopback_9091() {
    let want: SocketAddr = "127.0.0.1:9091".parse().expect("addr");
    assert_eq!(load(&yaml("")).admin_addr, Some(ListenAddr::Addr(want)));
    assert_eq!(load(&yaml("admin_addr: \"\"\n")).admin_addr, None);
    assert_eq!(load(&yaml("admin_addr: \"off\"\n")).admin_addr, None);
    assert_eq!(
        load(&yaml("admin_addr: \":9999\"\n")).admin_addr,
        Some(ListenAddr::AllInterfaces { port: 9999 })
    );
}

#[test]
fn default_limits() {
    let limits = load(&yaml("")).limits;
    assert_eq!(limits.max_header_bytes, 64 * 1024);
    assert_eq!(limits.max_body_bytes, None);
    assert_eq!(limits.max_concurrent_streams, 100);
    assert_eq!(limits.handshake_timeout, Duration::from_secs(10));
}

#[test]
fn default_client_auth_is_off() {
    assert_eq!(load(&yaml("")).client_auth, None);
}

#[test]
fn default_preserve_host_is_false() {
    assert!(!load(&yaml("")).preserve_host);
}

#[test]
fn default_tunnel_domain_is_none() {
    let text = "listen_addr: \":1\"\ntls: {cert_file: c, key_file: k}\nroutes: {a.example.com: \"http://10.0.0.1:1\"}\n";
    assert_eq!(load(text).tunnel_domain, None);
}

#[test]
fn default_config_paths() {
    assert_eq!(
        DEFAULT_CONFIG_PATHS,
        ["/etc/mcp-gateway/config.yaml", "/etc/mcp-proxy/config.yaml"]
    );
}

// ---- normalisation and routing through a loaded config ----

#[test]
fn tunnel_domain_is_normalised_and_flag_overrides() {
    let text = yaml("").replace("t1.tunnels.example.com", ".T1.Tunnels.Example.COM.");
    assert_eq!(
        load(&text).tunnel_domain.as_deref(),
        Some("t1.tunnels.example.com")
    );
    let cfg = ProxyConfig::from_yaml(&yaml(""), Some("other.example")).expect("override");
    assert_eq!(cfg.tunnel_domain.as_deref(), Some("other.example"));
    assert!(cfg.routes.lookup("docs.other.example").is_some());
    assert!(cfg.routes.lookup("docs.t1.tunnels.example.com").is_none());
    // An empty flag means "not given".
    let cfg = ProxyConfig::from_yaml(&yaml(""), Some("")).expect("empty flag");
    assert_eq!(cfg.tunnel_domain.as_deref(), Some("t1.tunnels.example.com"));
}

#[test]
fn routes_match_normalised_hosts() {
    let cfg = load(&format!(
        "{BASE}routes:\n  Docs: http://10.0.0.5:8000\n  API.corp.example: http://10.0.0.6:9000\n"
    ));
    let route_for = |raw: &str| {
        let host = normalize_host(raw)?;
        cfg.routes.lookup(&host).map(|r| r.upstream.to_string())
    };
    assert_eq!(
        route_for("DOCS.t1.tunnels.example.com.:443").as_deref(),
        Some("http://10.0.0.5:8000")
    );
    assert_eq!(
        route_for("api.corp.example").as_deref(),
        Some("http://10.0.0.6:9000")
    );
    assert_eq!(
        route_for("api.corp.example.t1.tunnels.example.com").as_deref(),
        Some("http://10.0.0.6:9000")
    );
    assert_eq!(route_for("nope.t1.tunnels.example.com"), None);
    let names: Vec<_> = cfg.routes.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["api.corp.example", "docs"]);
}

// ---- example configs ----

#[test]
fn every_example_config_loads() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).expect("examples-config exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            ProxyConfig::load(&path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen.push(
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    seen.sort();
    for required in ["full.yaml", "https-upstream.yaml", "minimal.yaml"] {
        assert!(
            seen.iter().any(|s| s == required),
            "{required} missing from {seen:?}"
        );
    }
}

#[test]
fn full_example_sets_every_field() {
    let cfg = ProxyConfig::load(&examples_dir().join("full.yaml"), None).expect("full.yaml");
    assert_eq!(cfg.listen_addr.to_string(), "0.0.0.0:8443");
    assert_eq!(cfg.log_level, LogLevel::Debug);
    assert_eq!(cfg.log_format, LogFormat::Text);
    assert_eq!(cfg.shutdown_timeout, Duration::from_secs(45));
    assert_eq!(
        cfg.tunnel_domain.as_deref(),
        Some("ab12cd34.tunnels.example.com")
    );
    assert_eq!(
        cfg.tls.cert_file,
        Path::new("/etc/mcp-proxy/tls/server.crt")
    );
    assert_eq!(cfg.tls.key_file, Path::new("/etc/mcp-proxy/tls/server.key"));
    assert_eq!(cfg.tls.reload_interval, Duration::from_secs(10));
    assert_eq!(cfg.routes.len(), 3);
    let billing = cfg
        .routes
        .lookup("billing.ab12cd34.tunnels.example.com")
        .expect("billing");
    assert_eq!(billing.upstream.scheme, Scheme::Https);
    assert_eq!(
        billing.upstream.authority(),
        "billing.internal.example:8443"
    );
    let v6 = cfg
        .routes
        .lookup("mcp.corp.example.com")
        .expect("full-hostname route");
    assert_eq!(v6.upstream.host, "fd00::15");
    assert_eq!(v6.upstream.authority(), "[fd00::15]:9000");
    let UpstreamPolicy::AllowList(nets) = &cfg.upstream.policy else {
        panic!("full.yaml lists allowed_ips");
    };
    let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
    assert_eq!(
        nets,
        ["10.0.0.0/8", "192.168.10.0/24", "172.16.5.4/32", "fd00::/8"]
    );
    assert_eq!(
        cfg.upstream.tls.ca_file.as_deref(),
        Some(Path::new("/etc/mcp-proxy/upstream-ca.pem"))
    );
    assert!(cfg.upstream.tls.include_system_cas);
    assert_eq!(cfg.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(
        cfg.admin_addr.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9191")
    );
    assert_eq!(cfg.limits.max_header_bytes, 32768);
    assert_eq!(cfg.limits.max_body_bytes, Some(10_485_760));
    assert_eq!(cfg.limits.max_concurrent_streams, 50);
    assert_eq!(cfg.limits.handshake_timeout, Duration::from_secs(5));
    assert_eq!(
        cfg.client_auth.map(|c| c.ca_file),
        Some(PathBuf::from("/etc/mcp-proxy/client-ca.pem"))
    );
    assert!(cfg.preserve_host);
}

#[test]
fn minimal_example_uses_bare_routes() {
    let cfg = ProxyConfig::load(&examples_dir().join("minimal.yaml"), None).expect("minimal.yaml");
    assert_eq!(cfg.listen_addr, ListenAddr::AllInterfaces { port: 8080 });
    let route = cfg
        .routes
        .lookup("docs.ab12cd34.tunnels.example.com")
        .expect("docs");
    assert_eq!(route.upstream.to_string(), "http://10.0.0.5:8000");
}
#[test]
fn yaml_errors_quote_the_line_but_never_credentials() {
    assert_eq!(
        error(&yaml("preserve_host: maybe\n")),
        "invalid YAML: invalid boolean at line 8, column 16 (near \"preserve_host: maybe\")"
    );
    let msg = error(&format!(
        "{BASE}routes:\n  docs: [http://u:hunter2@10.0.0.5:80]\n"
    ));
    assert!(msg.starts_with("invalid YAML: "), "{msg}");
    assert!(!msg.contains("hunter2"), "password leaked: {msg}");
    assert_eq!(
        error("listen_addr: ':1'\n---\nlisten_addr: ':2'\n"),
        "invalid YAML: the file must hold a single YAML document (found another at line 3)"
    );
}
