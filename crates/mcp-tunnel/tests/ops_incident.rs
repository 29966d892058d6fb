//! `mcp-tunnel incident` end to end on a real edge + API: an interrupted run resumes
//! where it stopped; client keys are revoked, the tunnel archived and a connector with
//! the old token refused; the checklist and evidence bundle are written; `restore`
//! provisions a fresh, working tunnel exactly once.

mod ops_support;

use std::time::Duration;

use mcp_tunnel_control::client::Method;
use mcp_tunnel_control::time::{now_ms, rfc3339_ms};
use mcp_tunnel_testutil::harness::bin;
use mcp_tunnel_testutil::logs::LoggedChild;
use ops_support::ControlPlane;
use serde_json::{Value, json};

#[tokio::test]
async fn breach_response_resumes_revokes_archives_collects_and_restores() {
    let cp = ControlPlane::start(true).await;
    let work = cp.dir.path();
    let out = work.join("setup");
    let tunnel = cp.provision(&out).await;
    let id = tunnel["id"].as_str().unwrap().to_owned();
    let domain = tunnel["domain"].as_str().unwrap().to_owned();
    let api = cp.client();
    let mut key_ids = Vec::new();
    for name in ["agent-a", "agent-b"] {
        let k = api
            .call(
                Method::POST,
                "/v1/admin/client_keys",
                Some(json!({"name": name})),
            )
            .await
            .unwrap();
        key_ids.push(k["id"].as_str().unwrap().to_owned());
    }

    // A live connector with the tunnel's token: archiving must sever it.
    let mut cmd = bin();
    cmd.args([
        "connector",
        "run",
        "--url",
        "http://127.0.0.1:9",
        "--ha-connections",
        "1",
        "--token-file",
    ])
    .arg(out.join("tunnel-token"));
    let connector = LoggedChild::spawn(cmd);
    connector
        .wait_for(Duration::from_secs(20), |l| {
            l.contains("Registered tunnel connection")
        })
        .await;

    // A proxy process to stop, and logs in and around the window.
    let cfg = work.join("proxy.yaml");
    std::fs::write(&cfg, format!("listen_addr: \"127.0.0.1:0\"\nadmin_addr: off\ntunnel_domain: {domain}\ntls:\n  cert_file: {o}/tls.crt\n  key_file: {o}/tls.key\nroutes:\n  docs: http://10.0.0.5:8000\n", o = out.display())).unwrap();
    let mut pcmd = bin();
    pcmd.args(["proxy", "--config"]).arg(&cfg);
    let proxy = LoggedChild::spawn(pcmd);
    proxy
        .wait_for(Duration::from_secs(20), |l| l.contains("route configured"))
        .await;
    let pid_file = work.join("proxy.pid");
    std::fs::write(&pid_file, proxy.child.id().unwrap().to_string()).unwrap();
    let now = now_ms();
    let log = work.join("proxy.log");
    std::fs::write(
        &log,
        format!(
            "{}\n{}\n{}\nplain line without a time\n",
            json!({"timestamp": rfc3339_ms(now - 3 * 3_600_000), "level": "INFO", "message": "request completed", "route": "old"}),
            json!({"timestamp": rfc3339_ms(now - 1_800_000), "level": "WARN", "message": "IP validation failed: 169.254.169.254 is not a private address", "route": "docs"}),
            json!({"timestamp": rfc3339_ms(now - 600_000), "level": "INFO", "message": "request completed", "route": "docs", "status": 200}),
        ),
    )
    .unwrap();
    let dir = work.join("incident");
    let since = rfc3339_ms(now - 3_600_000);
    let start = |api_url: &str| {
        let mut c = bin();
        c.args(["incident", "start", "--yes", "--dir"])
            .arg(&dir)
            .args(["--since", &since, "--data-dir"])
            .arg(&out)
            .arg("--proxy-config")
            .arg(&cfg)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--log")
            .arg(format!("proxy={}", log.display()))
            .args(["--api-url", api_url, "--ca-file"])
            .arg(&cp.ca_file)
            .env("MCP_TUNNEL_API_KEY", &cp.admin_key);
        c
    };

    // 1. Interrupted: the API is unreachable after the stack was stopped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let first = start(&format!("https://{closed}")).output().await.unwrap();
    assert_eq!(
        first.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("incident.json")).unwrap()).unwrap();
    let step = |st: &Value, n: &str| {
        st["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(step(&state, "stop")["status"], "done", "{state:#}");
    assert_eq!(
        step(&state, "revoke_client_access")["status"],
        "failed",
        "{state:#}"
    );
    assert_eq!(step(&state, "archive_tunnel")["status"], "pending");
    // The proxy is gone: SIGTERM, and SIGKILL at once if it has not exited yet (the
    // runbook's default grace is 0s), so its exit status may be either; wait_exit
    // fails if it is still running.
    let _ = proxy.wait_exit(Duration::from_secs(10)).await;

    // 2. Resumed: the stop is not repeated; everything else completes.
    let second = start(&cp.url).output().await.unwrap();
    let text = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("incident.json")).unwrap()).unwrap();
    assert_eq!(step(&state, "stop")["attempts"], 1, "{state:#}");
    assert_eq!(step(&state, "revoke_client_access")["attempts"], 2);
    for n in [
        "revoke_client_access",
        "archive_tunnel",
        "verify_refused",
        "checklist",
        "evidence",
    ] {
        assert_eq!(step(&state, n)["status"], "done", "{n}: {state:#}");
    }
    let verify = step(&state, "verify_refused")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        verify.contains("0 connector connections")
            && verify.contains("a connector with the old token was refused"),
        "{verify}"
    );

    // The API agrees: tunnel archived, both client keys revoked.
    let t = api
        .call(Method::GET, &format!("/v1/tunnels/{id}"), None)
        .await
        .unwrap();
    assert_eq!(t["status"], "archived");
    let keys = api
        .call(Method::GET, "/v1/admin/client_keys", None)
        .await
        .unwrap();
    for kid in &key_ids {
        let k = keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == kid.as_str())
            .unwrap();
        assert!(!k["revoked_at"].is_null(), "{k}");
    }
    // The live connector was severed and stopped for good.
    let (code, logs) = connector.wait_exit(Duration::from_secs(20)).await;
    assert_ne!(code, Some(0));
    assert!(logs.contains("Tunnel is archived"), "{logs}");

    // Checklist: the route, its upstream, the revoked keys, the manual steps.
    let checklist = std::fs::read_to_string(dir.join("checklist.md")).unwrap();
    assert!(
        checklist.contains(&format!("`docs.{domain}` → `http://10.0.0.5:8000`")),
        "{checklist}"
    );
    for kid in &key_ids {
        assert!(checklist.contains(kid.as_str()), "{checklist}");
    }
    assert!(
        checklist.contains("mcp_servers block") && checklist.contains("Anthropic support"),
        "{checklist}"
    );

    // Evidence: only the window's lines (undated ones kept), audit events, timeline, digests.
    let ev = dir.join("evidence");
    let kept = std::fs::read_to_string(ev.join("logs/proxy.log")).unwrap();
    assert!(
        kept.contains("IP validation failed")
            && kept.contains("\"status\":200")
            && !kept.contains("\"route\":\"old\""),
        "{kept}"
    );
    assert!(kept.contains("plain line without a time"));
    let audit = std::fs::read_to_string(ev.join("audit.jsonl")).unwrap();
    for action in ["tunnel.create", "client_key.revoke", "tunnel.archive"] {
        assert!(
            audit.contains(&format!("\"action\":\"{action}\"")),
            "{action}: {audit}"
        );
    }
    let timeline = std::fs::read_to_string(ev.join("timeline.jsonl")).unwrap();
    let times: Vec<i64> = timeline
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["time_ms"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timeline not sorted"
    );
    let md = std::fs::read_to_string(ev.join("timeline.md")).unwrap();
    assert!(
        md.contains("IP validation failed")
            && md.contains("tunnel.archive")
            && md.contains("| incident |"),
        "{md}"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(ev.join("manifest.json")).unwrap()).unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let bytes = std::fs::read(ev.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(
            f["sha256"],
            mcp_tunnel_pki::crypto::sha256_hex(&bytes),
            "{f}"
        );
    }

    // 3. A third run changes nothing.
    let third = start(&cp.url).output().await.unwrap();
    assert_eq!(third.status.code(), Some(0));
    let again: Value =
        serde_json::from_slice(&std::fs::read(dir.join("incident.json")).unwrap()).unwrap();
    assert_eq!(again["steps"], state["steps"]);

    // 4. Restore: a new tunnel with new credentials, once.
    let new_out = work.join("restored");
    let restore = || {
        let mut c = bin();
        c.args(["incident", "restore", "--json", "--dir"])
            .arg(&dir)
            .arg("--output")
            .arg(&new_out)
            .args(["--api-url", &cp.url, "--ca-file"])
            .arg(&cp.ca_file)
            .env("MCP_TUNNEL_API_KEY", &cp.admin_key);
        c
    };
    let r = restore().output().await.unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let rec: Value = serde_json::from_slice(&r.stdout).unwrap();
    let new_id = rec["tunnel_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    let nt = api
        .call(Method::GET, &format!("/v1/tunnels/{new_id}"), None)
        .await
        .unwrap();
    assert_eq!(nt["status"], "active", "{nt}");
    assert_ne!(
        std::fs::read(new_out.join("ca.key")).unwrap(),
        std::fs::read(out.join("ca.key")).unwrap()
    );
    for (name, mode) in [
        ("ca.key", 0o600),
        ("tls.key", 0o600),
        ("tunnel-token", 0o600),
        ("tls.crt", 0o644),
    ] {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(new_out.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            mode,
            "{name}"
        );
    }
    // doctor finds the restored output healthy.
    let d = bin()
        .args(["doctor", "--json", "--data-dir"])
        .arg(&new_out)
        .args(["--api-url", &cp.url, "--ca-file"])
        .arg(&cp.ca_file)
        .env("MCP_TUNNEL_API_KEY", &cp.admin_key)
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&d.stdout).unwrap();
    let by_id = |i: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == i)
            .unwrap()["status"]
            .clone()
    };
    for i in [
        "tunnel.state",
        "cert.registered",
        "cert.chain",
        "cert.san",
        "files.permissions.ca.key",
    ] {
        assert_eq!(by_id(i), "pass", "{i}: {report:#}");
    }
    // Re-running restore reuses the same tunnel.
    let r2 = restore().output().await.unwrap();
    assert_eq!(r2.status.code(), Some(0));
    let rec2: Value = serde_json::from_slice(&r2.stdout).unwrap();
    assert_eq!(rec2["tunnel_id"], new_id.as_str());
    let all = api
        .call(Method::GET, "/v1/tunnels?include_archived=true", None)
        .await
        .unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all:#}");
}

#[tokio::test]
async fn restore_waits_for_the_runbook() {
    let cp = ControlPlane::start(false).await;
    let dir = cp.dir.path().join("incident");
    // Nothing recorded yet.
    let r = bin()
        .args(["incident", "restore", "--dir"])
        .arg(&dir)
        .arg("--output")
        .arg(cp.dir.path().join("new"))
        .args(["--api-url", &cp.url, "--ca-file"])
        .arg(&cp.ca_file)
        .env("MCP_TUNNEL_API_KEY", &cp.admin_key)
        .output()
        .await
        .unwrap();
    assert_ne!(r.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("incident start"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[tokio::test]
async fn compose_logs_are_saved_before_the_stack_goes_down() {
    let work = tempfile::tempdir().unwrap();
    let stub = work.path().join("bin");
    std::fs::create_dir(&stub).unwrap();
    let calls = work.path().join("calls");
    let docker = stub.join("docker");
    // `logs` prints a timestamped line, as `docker compose logs --timestamps` does.
    let line = format!(
        "mcp-proxy-1  | {} {{\"level\":\"WARN\",\"message\":\"tls handshake failed\"}}",
        rfc3339_ms(now_ms() - 60_000)
    );
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\ncase \"$*\" in *' logs '*) echo '{line}';; esac\n",
            calls.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let compose = work.path().join("docker-compose.yaml");
    std::fs::write(&compose, "services: {}\n").unwrap();
    let dir = work.path().join("incident");
    let path = format!(
        "{}:{}",
        stub.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = bin()
        .args([
            "incident",
            "start",
            "--yes",
            "--keep-client-keys",
            "--since",
            "1h",
            "--tunnel-id",
            "tnl_x",
            "--dir",
        ])
        .arg(&dir)
        .arg("--compose")
        .arg(&compose)
        .env("PATH", &path)
        .env_remove("MCP_TUNNEL_API_URL")
        .env_remove("MCP_TUNNEL_CREDENTIALS_FILE")
        .output()
        .await
        .unwrap();
    // No API: the runbook stops at the archive, recorded, after stopping the stack.
    assert_eq!(
        r.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    let got = std::fs::read_to_string(&calls).unwrap();
    let f = compose.display();
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        [
            format!("compose -f {f} logs --no-color --timestamps"),
            format!("compose -f {f} down --timeout 0")
        ]
    );
    assert!(
        std::fs::read_to_string(dir.join("raw/compose.log"))
            .unwrap()
            .contains("tls handshake failed")
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("incident.json")).unwrap()).unwrap();
    let statuses: Vec<&str> = state["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["done", "skipped", "failed", "pending", "pending", "pending"],
        "{state:#}"
    );
    // The saved Compose log is now one of the incident's log sources.
    assert!(
        state["params"]["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "compose"),
        "{state:#}"
    );
}
