//! The quickstart's child processes: this same binary in another role, its output in a
//! log file, and a way to wait for a JSON log line (or for the child dying first).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

/// A child whose stdout and stderr go to `log`. Killed when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    pub log: PathBuf,
    child: Child,
}

/// This binary, to run the other roles with.
pub fn me() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find this program's own path")
}

pub fn command(args: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(me()?);
    cmd.args(args);
    // The children log JSON; our own terminal output stays readable.
    cmd.env_remove("RUST_LOG");
    Ok(cmd)
}

/// A fresh log file; the previous run's is kept beside it as `<name>.previous.log`, so
/// a line that log waits for is always this run's.
fn log_file(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    if path.exists() {
        let _ = std::fs::rename(path, path.with_extension("previous.log"));
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let g = f.try_clone()?;
    Ok((Stdio::from(f), Stdio::from(g)))
}

impl Proc {
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let (out, err) = log_file(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {name}"))?;
        Ok(Self { name, log, child })
    }

    /// Waits until a JSON log line with `message` appears; fails, quoting the end of
    /// the log, if the process exits first or `timeout` passes.
    pub async fn wait_for(&mut self, message: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = find(&self.log, message) {
                return Ok(v);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "the {} exited ({status}) before logging {message:?}; end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 15)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} did not log {message:?} within {timeout:?}; end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Runs a short command to its end, output appended to `log`.
pub async fn run_to_end(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<()> {
    let (out, err) = log_file(log)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let status = tokio::time::timeout(Duration::from_secs(120), cmd.status())
        .await
        .with_context(|| format!("{name} did not finish within 2 minutes"))?
        .with_context(|| format!("cannot run {name}"))?;
    if !status.success() {
        bail!(
            "{name} failed ({status}); end of {}:\n{}",
            log.display(),
            tail(log, 15)
        );
    }
    Ok(())
}

fn find(log: &Path, message: &str) -> Option<Value> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == message)
}

pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
