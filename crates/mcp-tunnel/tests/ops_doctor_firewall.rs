//! `doctor --compose … --host-firewall` reading a real `iptables-save`: rules are loaded
//! with `iptables-restore` into a network namespace of the test's own (`unshare -n`,
//! root), so the host's firewall is never touched. Docker's default DOCKER-USER chain
//! fails the check; an allow-list ending in a drop passes.

use std::path::Path;

use mcp_tunnel_testutil::harness::binary;
use serde_json::Value;

const DOCKER_DEFAULT: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
COMMIT
";

const LIMITED: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A DOCKER-USER -s 172.20.0.0/16 -d 203.0.113.10/32 -p tcp -m tcp --dport 7844 -j ACCEPT
-A DOCKER-USER -s 172.20.0.0/16 -d 10.0.0.5/32 -p tcp -m tcp --dport 8000 -j ACCEPT
-A DOCKER-USER -s 172.20.0.0/16 -m comment --comment \"mcp-tunnel: nothing else\" -j DROP
-A DOCKER-USER -j RETURN
COMMIT
";

/// Runs doctor in a fresh network namespace holding `rules`; returns `network.reach`.
fn reach(rules: &str, dir: &Path) -> Value {
    let file = dir.join("rules");
    std::fs::write(&file, rules).unwrap();
    let compose = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/compose/customer/docker-compose.yaml");
    let script = format!(
        "iptables-restore < '{}' && exec '{}' doctor --json --compose '{}' --host-firewall",
        file.display(),
        binary().display(),
        compose.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) and iptables are installed by .ci/setup");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let found: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "network.reach")
        .collect();
    assert_eq!(found.len(), 1, "{report:#}");
    found[0].clone()
}

#[test]
fn the_docker_user_chain_decides_network_reach() {
    let dir = tempfile::tempdir().unwrap();
    let f = reach(DOCKER_DEFAULT, dir.path());
    assert_eq!(f["status"], "fail", "{f:#}");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .contains("lets every connection through"),
        "{f:#}"
    );
    assert!(f["fix"].as_str().unwrap().contains("DOCKER-USER"), "{f:#}");

    let f = reach(LIMITED, dir.path());
    assert_eq!(f["status"], "pass", "{f:#}");
    let evidence = f["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("this host") && evidence.contains("--dport 7844"),
        "{f:#}"
    );

    // Without a DOCKER-USER chain there is nothing to judge.
    let f = reach("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", dir.path());
    assert_eq!(f["status"], "unknown", "{f:#}");
}
