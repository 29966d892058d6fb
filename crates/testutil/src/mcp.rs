//! The real MCP server of `testdata/mcp_server.py` (PyPI `mcp` 2.x), on an ephemeral port.

use std::time::Duration;

use tokio::process::Command;

use crate::logs::LoggedChild;

/// A running test MCP server; killed on drop.
#[derive(Debug)]
pub struct McpServer {
    pub process: LoggedChild,
    pub port: u16,
}

impl McpServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Serves HTTPS with the given certificate and key files.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::start_with(&[
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ])
        .await
    }

    async fn start_with(args: &[&std::ffi::OsStr]) -> Self {
        let mut cmd = Command::new(crate::python());
        cmd.arg(crate::repo_root().join("testdata/mcp_server.py"));
        cmd.args(args);
        let process = LoggedChild::spawn(cmd);
        let line = process
            .wait_for(Duration::from_secs(60), |l| l.starts_with("PORT "))
            .await;
        let port = line["PORT ".len()..].trim().parse().expect("port number");
        Self { process, port }
    }

    /// `http://127.0.0.1:<port>`
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
