//! `mcp-tunnel quickstart`: the whole system from one command, as the README runs it.

use std::path::Path;
use std::time::{Duration, Instant};

use mcp_tunnel_testutil::harness::bin;
use mcp_tunnel_testutil::logs::LoggedChild;
use serde_json::Value;

async fn quickstart_check(dir: &Path) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        bin()
            .args(["quickstart", "--check", "--dir"])
            .arg(dir)
            .output(),
    )
    .await
    .expect("quickstart --check timed out")
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn state(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("quickstart.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_calls_the_sample_tool_through_the_whole_path_and_reruns_reuse_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let (ok, stdout, stderr) = quickstart_check(&dir).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("client -> edge -> connector -> proxy -> MCP server: add(2, 3) = 5"),
        "{stdout}"
    );
    let s = state(&dir);
    let id = s["tunnel_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tnl_"));
    assert!(stdout.contains(&id) && stdout.contains(s["route_url"].as_str().unwrap()));
    assert!(stdout.contains("Ctrl-C"), "{stdout}");
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [
            "client-key",
            "admin-api-key",
            "reader-api-key",
            "stack/tunnel-token",
        ] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
    // The edge and the connector never saw the tool's answer: only ciphertext crossed.
    let server_log = std::fs::read_to_string(dir.join("logs/server.log")).unwrap();
    assert!(!server_log.contains("mcp-tunnel-quickstart-sample"));

    // Again in the same directory: the same tunnel, nothing provisioned anew.
    let (ok, stdout, stderr) = quickstart_check(&dir).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(state(&dir)["tunnel_id"], id.as_str());
    let setup_log = std::fs::read_to_string(dir.join("logs/setup.log")).unwrap();
    assert!(
        setup_log.contains("reused") && setup_log.contains("unchanged"),
        "{setup_log}"
    );

    // A stage that fails is named: the edge's connector port is taken.
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("server/config.json")).unwrap())
            .unwrap();
    let _taken = std::net::TcpListener::bind(config["edge_address"].as_str().unwrap()).unwrap();
    let (ok, _, stderr) = quickstart_check(&dir).await;
    assert!(!ok);
    assert!(
        stderr.contains("quickstart failed at stage \"server\""),
        "{stderr}"
    );
}

/// Runs `quickstart` (staying up) and stops it with SIGINT, as Ctrl-C does.
struct Running {
    child: LoggedChild,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(pid) = self.child.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

async fn wait_file_contains(path: &Path, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said {needle:?}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn call_echo(s: &Value, text: &str) -> String {
    let key = std::fs::read_to_string(s["client_key_file"].as_str().unwrap()).unwrap();
    let out = bin()
        .arg("call")
        .arg(s["route_url"].as_str().unwrap())
        .args(["--edge", s["edge_clients"].as_str().unwrap()])
        .args(["--edge-ca-file", s["edge_ca_file"].as_str().unwrap()])
        .args(["--ca-file", s["tunnel_ca_file"].as_str().unwrap()])
        .args(["--tool", "echo", "--args"])
        .arg(format!("{{\"text\": \"{text}\"}}"))
        .env("MCP_TUNNEL_CLIENT_KEY", key.trim())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_quickstart_takes_a_token_rotation_and_a_renewed_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let mut cmd = bin();
    cmd.args(["quickstart", "--dir"]).arg(&dir);
    let q = Running {
        child: LoggedChild::spawn(cmd),
    };
    q.child
        .wait_for(Duration::from_secs(120), |l| l.contains("Press Ctrl-C"))
        .await;
    let s = state(&dir);
    assert_eq!(call_echo(&s, "before").await, "before");
    // The local endpoint `connect` serves for the user's own MCP client.
    let local = s["local_endpoint"].as_str().unwrap();
    let http = mcp_tunnel_control::http_client::HttpClient::new(None).unwrap();
    let resp = http
        .send(
            "POST".parse().unwrap(),
            local,
            &[("accept", "application/json, text/event-stream".to_owned())],
            Some(
                br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#
                    .to_vec(),
            ),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "3", "{v}");

    // setup init with a new token version: the connector re-reads the token file.
    let stack = dir.join("stack");
    let admin = std::fs::read_to_string(dir.join("admin-api-key")).unwrap();
    let out = bin()
        .args(["setup", "init", "--output"])
        .arg(format!("dir:{}", stack.display()))
        .args(["--token-version", "2"])
        .env("API_URL", s["api_url"].as_str().unwrap())
        .env("API_CA_FILE", s["api_ca_file"].as_str().unwrap())
        .env("API_TOKEN", admin.trim())
        .env_remove("TUNNEL_ID")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("rotated"),
        "{stdout}"
    );
    wait_file_contains(
        &dir.join("logs/connector.log"),
        "tunnel token file changed",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(call_echo(&s, "after rotation").await, "after rotation");

    // renew-cert (forced by a window longer than the certificate): the proxy reloads it.
    let out = bin()
        .args(["setup", "renew-cert", "--output"])
        .arg(format!("dir:{}", stack.display()))
        .args(["--renew-before", "100000h"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("renewed"),
        "{stdout}"
    );
    let leaf = mcp_tunnel_pki::tls::load_certs(&stack.join("tls.crt")).unwrap();
    let fingerprint = mcp_tunnel_pki::crypto::sha256_hex(&leaf[0]);
    wait_file_contains(
        &dir.join("logs/proxy.log"),
        &fingerprint,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(call_echo(&s, "after renewal").await, "after renewal");
    drop(q);
}
