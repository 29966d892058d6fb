//! `mcp-tunnel teardown` end to end: a real proxy process stopped through its pid file,
//! the tunnel archived on a real control plane, the setup output deleted; a re-run is a
//! no-op; nothing happens without confirmation; credentials survive a failed archive.

mod ops_support;

use std::path::Path;
use std::time::Duration;

use mcp_tunnel_control::client::Method;
use mcp_tunnel_testutil::harness::bin;
use mcp_tunnel_testutil::logs::LoggedChild;
use ops_support::ControlPlane;

/// A proxy serving the output's certificate; returns it and its pid file.
async fn proxy(out: &Path, work: &Path) -> (LoggedChild, std::path::PathBuf) {
    let cfg = work.join("proxy.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen_addr: \"127.0.0.1:0\"\nadmin_addr: \"127.0.0.1:0\"\ntls:\n  cert_file: {o}/tls.crt\n  key_file: {o}/tls.key\nroutes:\n  docs.example.com: http://10.0.0.5:80\n",
            o = out.display()
        ),
    )
    .unwrap();
    let mut cmd = bin();
    cmd.args(["proxy", "--config"]).arg(&cfg);
    let p = LoggedChild::spawn(cmd);
    p.wait_for(Duration::from_secs(20), |l| l.contains("route configured"))
        .await;
    let pid_file = work.join("proxy.pid");
    std::fs::write(&pid_file, p.child.id().unwrap().to_string()).unwrap();
    (p, pid_file)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test]
async fn teardown_stops_archives_deletes_and_is_idempotent() {
    let cp = ControlPlane::start(false).await;
    let out = cp.dir.path().join("setup");
    let tunnel = cp.provision(&out).await;
    let id = tunnel["id"].as_str().unwrap();
    let (proxy, pid_file) = proxy(&out, cp.dir.path()).await;
    let pid = proxy.child.id().unwrap();

    // Without --yes and without a terminal: refused, nothing touched.
    let refused = bin()
        .args(["teardown", "--data-dir"])
        .arg(&out)
        .arg("--pid-file")
        .arg(&pid_file)
        .args(["--api-url", &cp.url, "--ca-file"])
        .arg(&cp.ca_file)
        .env("MCP_TUNNEL_API_KEY", &cp.admin_key)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--yes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(out.exists() && alive(pid));

    let teardown = || {
        let mut c = bin();
        c.args(["teardown", "--yes", "--data-dir"])
            .arg(&out)
            .arg("--pid-file")
            .arg(&pid_file)
            .args(["--api-url", &cp.url, "--ca-file"])
            .arg(&cp.ca_file)
            .env("MCP_TUNNEL_API_KEY", &cp.admin_key);
        c
    };
    let first = teardown().output().await.unwrap();
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(!alive(pid), "proxy still running:\n{text}");
    assert!(
        text.contains("stopped process") && text.contains("SIGTERM"),
        "{text}"
    );
    assert!(!out.exists(), "{text}");
    let t = cp
        .client()
        .call(Method::GET, &format!("/v1/tunnels/{id}"), None)
        .await
        .unwrap();
    assert_eq!(t["status"], "archived", "{t}");
    // The proxy shut down as on any SIGTERM (graceful, exit 0).
    let (code, _) = proxy.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));

    // Again: everything already done. The tunnel id went with the output, so the
    // archive step is given it explicitly this time.
    let second = teardown()
        .args(["--tunnel-id", id, "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    let steps: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let outcomes: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["already_done", "already_done", "already_done"],
        "{steps:#}"
    );
}

#[tokio::test]
async fn credentials_stay_when_the_tunnel_cannot_be_archived() {
    let cp = ControlPlane::start(false).await;
    let out = cp.dir.path().join("setup");
    cp.provision(&out).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = bin()
        .args(["teardown", "--yes", "--data-dir"])
        .arg(&out)
        .args(["--api-url", &format!("https://{closed}")])
        .env("MCP_TUNNEL_API_KEY", &cp.admin_key)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAILED")
            && text.contains("not removed while the tunnel may still be active"),
        "{text}"
    );
    assert!(out.join("tunnel-token").exists());
}

#[tokio::test]
async fn compose_stacks_are_stopped_with_docker_compose_down() {
    let work = tempfile::tempdir().unwrap();
    let stub = work.path().join("bin");
    std::fs::create_dir(&stub).unwrap();
    let calls = work.path().join("calls");
    let docker = stub.join("docker");
    std::fs::write(
        &docker,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let compose = work.path().join("docker-compose.yaml");
    std::fs::write(&compose, "services: {}\n").unwrap();
    let path = format!(
        "{}:{}",
        stub.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = bin()
        .args([
            "teardown",
            "--yes",
            "--skip-archive",
            "--stop-timeout",
            "10s",
            "--compose",
        ])
        .arg(&compose)
        .env("PATH", &path)
        .output()
        .await
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    let got = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        got.trim(),
        format!("compose -f {} down --timeout 10", compose.display())
    );
}

#[tokio::test]
async fn helm_releases_are_uninstalled() {
    let work = tempfile::tempdir().unwrap();
    let stub = work.path().join("bin");
    std::fs::create_dir(&stub).unwrap();
    let calls = work.path().join("calls");
    let helm = stub.join("helm");
    std::fs::write(
        &helm,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        stub.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = bin()
        .args([
            "teardown",
            "--yes",
            "--skip-archive",
            "--helm-release",
            "mcp-tunnel",
            "-n",
            "mcp-tunnel",
        ])
        .env("PATH", &path)
        .output()
        .await
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap().trim(),
        "uninstall mcp-tunnel -n mcp-tunnel --ignore-not-found"
    );
}
