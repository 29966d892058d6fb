//! Shared test helpers: certificates made at run time, real peer processes (the PyPI
//! `mcp` server, our own binary) with their logs captured, and ephemeral ports only.

pub mod harness;
pub mod logs;
pub mod mcp;
pub mod pki;
pub mod stack;

use std::path::PathBuf;

/// A loopback port free at the moment of asking (for a child that must be told one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The Python interpreter that has the `mcp` SDK: `MCP_TUNNEL_PYTHON`, else the repo's
/// `.venv` (which `.ci/run` creates). A missing interpreter fails the test loudly.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MCP_TUNNEL_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run .ci/run (or `python3 -m venv .venv && .venv/bin/pip install -r testdata/requirements.txt`)",
        venv.display()
    );
    venv
}
