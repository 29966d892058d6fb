//! Child processes whose output goes to a file rather than into memory: a benchmark or
//! a soak makes millions of requests, and a per-request log line kept in the load
//! generator's memory would become the thing being measured. Also /proc readings (RSS,
//! open descriptors) and the machine's description.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A running child whose stdout and stderr are appended to `log`; killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The whole log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Current length of the log, to look only at what comes after it.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Waits until `n` lines after `mark` contain `needle`; returns the first such line.
    pub async fn wait_lines(
        &mut self,
        mark: u64,
        needle: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read(&self.log).unwrap_or_default();
            let from = (mark as usize).min(text.len());
            let text = String::from_utf8_lossy(&text[from..]).into_owned();
            let hits: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
            if hits.len() >= n {
                return Ok(hits[0].to_owned());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited ({status}):\n{}", self.name, tail(&text, 40));
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {n} × {needle:?} not seen within {timeout:?}:\n{}",
                    self.name,
                    tail(&text, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let pid = self.pid();
        if pid != 0 {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// SIGKILL, as a crash or an OOM kill would end it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The field `field` of a JSON log line.
pub fn json_field(line: &str, field: &str) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(line).context("log line is not JSON")?;
    v[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {field} in {line}"))
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of a process.
/// User plus system CPU time of these processes so far (all their threads), from
/// /proc/<pid>/stat; a process that is gone counts nothing.
pub fn cpu_time(pids: &[u32]) -> Duration {
    // Clock ticks per second: 100 on every Linux this runs on (sysconf(_SC_CLK_TCK)).
    const TICK: Duration = Duration::from_millis(10);
    pids.iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // Fields after the command name (which may hold spaces) end at the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: u32 = f.get(11)?.parse().ok()?;
            let stime: u32 = f.get(12)?.parse().ok()?;
            Some(TICK * (utime + stime))
        })
        .sum()
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The soft limit on open files of this process (children inherit it).
pub fn nofile_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

/// A loopback port that was free a moment ago. Roles that are restarted during a run
/// need a port that stays theirs, so it is chosen here rather than by the kernel at bind.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One line describing the machine: cores, CPU model, kernel, memory, load.
pub fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let load = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "nproc {}, {model}, kernel {kernel}, {mem_gib:.0} GiB, load average at start {load}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )
}

/// The minimal MCP responder as its own process (`mcp-tunnel-bench upstream`), so it
/// can be killed and restarted, and its sockets do not count against the load
/// generator's open-file limit.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    proc: Option<Proc>,
    log: std::path::PathBuf,
}

impl Upstream {
    pub async fn start(addr: SocketAddr, dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut u = Self {
            addr,
            proc: None,
            log: dir.join("upstream.log"),
        };
        u.spawn().await?;
        Ok(u)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.args(["upstream", "--listen", &self.addr.to_string()]);
        let mark = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let mut proc = Proc::spawn("upstream", cmd, &self.log)?;
        proc.wait_lines(mark, "UPSTREAM ", 1, Duration::from_secs(10))
            .await?;
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGKILL, then a new process on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.proc.take() {
            p.kill().await;
        }
        self.spawn().await
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }
}
