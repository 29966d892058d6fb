//! The soak of docs/RELIABILITY.md, one minute long: ignored by default (it needs a
//! minute and both binaries built), run with
//! `cargo test -p mcp-tunnel-bench --test soak_short -- --ignored`.
//! Faults are injected into steady traffic; no request may be lost.

use std::process::Command;

#[test]
#[ignore = "one minute of fault injection; run by hand or with bench/run.sh soak"]
fn a_one_minute_soak_loses_no_request() {
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-tunnel-bench"))
        .args(["soak", "--duration", "60s", "--rate", "100"])
        .output()
        .expect("run the soak");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "soak failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .find(|l| l.starts_with("soak: "))
        .unwrap_or_else(|| panic!("no summary line:\n{text}"));
    assert!(summary.contains(" 0 lost"), "{summary}\n{text}");
}
