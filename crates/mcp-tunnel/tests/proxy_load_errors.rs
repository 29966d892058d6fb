//! Every load-time error of SPEC §4.1, through the real binary: non-zero exit and a
//! message on stderr that names the problem. Nothing is listened on.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use mcp_tunnel_testutil::logs::LoggedChild;
use mcp_tunnel_testutil::pki::TestPki;

struct Case {
    dir: tempfile::TempDir,
    pki: TestPki,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path(), DOMAIN);
        Self { dir, pki }
    }

    fn tls(&self) -> String {
        format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n",
            self.pki.cert_file.display(),
            self.pki.key_file.display()
        )
    }

    /// Runs the proxy on `yaml` and returns (exit code, all output).
    async fn run(&self, yaml: &str) -> (Option<i32>, String) {
        let path = self.dir.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut cmd = bin();
        cmd.arg("proxy").arg("-config").arg(&path);
        LoggedChild::spawn(cmd)
            .wait_exit(Duration::from_secs(20))
            .await
    }

    async fn expect_error(&self, yaml: &str, phrase: &str) {
        let (code, out) = self.run(yaml).await;
        assert_eq!(
            code,
            Some(1),
            "expected failure for:\n{yaml}\noutput:\n{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("error: ") && l.contains(phrase)),
            "stderr lacks {phrase:?}:\n{out}"
        );
    }
}

const BASE: &str =
    "listen_addr: \"127.0.0.1:0\"\nadmin_addr: off\ntunnel_domain: abcd1234.tunnel.test\n";

#[tokio::test]
async fn routes_as_a_list() {
    let c = Case::new();
    c.expect_error(
        &format!("{BASE}{}routes:\n  - http://10.0.0.1:80\n", c.tls()),
        "routes must be a map of name to upstream URL, not a list (cannot unmarshal !!seq into map[string]string)",
    )
    .await;
}

#[tokio::test]
async fn upstreams_that_are_not_scheme_host_port() {
    let c = Case::new();
    for bad in [
        "http://10.0.0.1",
        "http://10.0.0.1:80/mcp",
        "http://10.0.0.1:80/",
        "http://10.0.0.1:80?x=1",
        "http://user:pw@10.0.0.1:80",
        "ftp://10.0.0.1:21",
        "10.0.0.1:80",
        "http://:80",
    ] {
        c.expect_error(
            &format!("{BASE}{}routes:\n  docs: \"{bad}\"\n", c.tls()),
            "invalid upstream",
        )
        .await;
        let (_, out) = c
            .run(&format!("{BASE}{}routes:\n  docs: \"{bad}\"\n", c.tls()))
            .await;
        assert!(
            out.contains("(must be scheme://host:port)") && out.contains("docs"),
            "{out}"
        );
    }
}

#[tokio::test]
async fn https_upstream_without_a_trust_anchor() {
    let c = Case::new();
    c.expect_error(
        &format!("{BASE}{}routes:\n  docs: https://10.0.0.1:443\n", c.tls()),
        "ca_file",
    )
    .await;
}

#[tokio::test]
async fn allowed_ips_with_validation_disabled() {
    let c = Case::new();
    c.expect_error(
        &format!(
            "{BASE}{}routes:\n  docs: http://10.0.0.1:80\nupstream:\n  allowed_ips: [10.0.0.0/8]\n  disable_ip_validation: true\n",
            c.tls()
        ),
        "mutually exclusive",
    )
    .await;
}

#[tokio::test]
async fn bad_cidr() {
    let c = Case::new();
    for bad in ["10.0.0.0/33", "10.0.0", "not-an-ip", "::1/129"] {
        c.expect_error(
            &format!(
                "{BASE}{}routes:\n  docs: http://10.0.0.1:80\nupstream:\n  allowed_ips: [\"{bad}\"]\n",
                c.tls()
            ),
            bad,
        )
        .await;
    }
}

/// Root reads any file whatever its mode, so as root the proxy is run as `nobody`
/// (util-linux `setpriv`) to see the permission check the way an operator would.
fn proxy_as_unprivileged(config: &std::path::Path) -> tokio::process::Command {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let mut cmd = if is_root {
        let mut c = tokio::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_mcp-tunnel"));
        c
    } else {
        bin()
    };
    cmd.arg("proxy").arg("-config").arg(config);
    cmd
}

#[tokio::test]
async fn unreadable_key() {
    let c = Case::new();
    let dir = c.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in [&c.pki.cert_file, &c.pki.key_file] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let key = dir.join("locked.key");
    std::fs::copy(&c.pki.key_file, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{BASE}tls:\n  cert_file: {}\n  key_file: {}\nroutes:\n  docs: http://10.0.0.1:80\n",
            c.pki.cert_file.display(),
            key.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = LoggedChild::spawn(proxy_as_unprivileged(&config))
        .wait_exit(Duration::from_secs(20))
        .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("open {}: permission denied", key.display())),
        "{out}"
    );

    // A missing file names the file too.
    let missing = dir.join("missing.key");
    let yaml = format!(
        "{BASE}tls:\n  cert_file: {}\n  key_file: {}\nroutes:\n  docs: http://10.0.0.1:80\n",
        c.pki.cert_file.display(),
        missing.display()
    );
    let (code, out) = c.run(&yaml).await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains(&format!(
            "open {}: no such file or directory",
            missing.display()
        )),
        "{out}"
    );
}

#[tokio::test]
async fn unknown_fields_are_rejected() {
    let c = Case::new();
    c.expect_error(
        &format!(
            "{BASE}{}routes:\n  docs: http://10.0.0.1:80\nupstream:\n  alowed_ips: [10.0.0.0/8]\n",
            c.tls()
        ),
        "alowed_ips",
    )
    .await;
    c.expect_error(
        &format!(
            "{BASE}{}routes:\n  docs: http://10.0.0.1:80\nlisten_adress: \":1\"\n",
            c.tls()
        ),
        "listen_adress",
    )
    .await;
}

#[tokio::test]
async fn a_missing_config_file_and_the_defaults() {
    let c = Case::new();
    let mut cmd = bin();
    cmd.arg("proxy")
        .arg("--config")
        .arg(c.dir.path().join("nope.yaml"));
    let (code, out) = LoggedChild::spawn(cmd)
        .wait_exit(Duration::from_secs(20))
        .await;
    assert_eq!(code, Some(1));
    assert!(out.contains("no such file or directory"), "{out}");
}

#[tokio::test]
async fn a_valid_config_starts_and_logs_each_route() {
    let c = Case::new();
    let path = c.dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "{BASE}{}routes:\n  docs: http://10.0.0.1:80\n  wiki: http://10.0.0.2:80\n",
            c.tls()
        ),
    )
    .unwrap();
    let mut cmd = bin();
    cmd.arg("proxy")
        .arg("-config")
        .arg(&path)
        .arg("-tunnel-domain")
        .arg("zzzz9999.tunnel.test");
    let p = LoggedChild::spawn(cmd);
    p.wait_for(Duration::from_secs(20), |l| {
        l.contains("\"proxy listening\"")
    })
    .await;
    let routes = p.logs_with_message("route configured");
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0]["route"], "docs");
    assert_eq!(routes[0]["upstream"], "http://10.0.0.1:80");
    p.terminate();
    let (code, _) = p.wait_exit(Duration::from_secs(40)).await;
    assert_eq!(code, Some(0));
}
