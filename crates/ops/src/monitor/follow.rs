//! Reading log files for the monitor: a replay of whole files merged in time order, or
//! following them as they grow (like `tail -F`: truncation and replacement restart from
//! the top).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use super::{Alert, Monitor};
use crate::incident::LogSource;
use crate::timefmt::line_time_ms;

/// Feeds every line of every file, merged by timestamp (undated lines keep their
/// place after the line before them), and returns the alerts.
pub fn replay(sources: &[LogSource], m: &mut Monitor) -> Result<Vec<Alert>, String> {
    let mut lines: Vec<(i64, usize, String, String)> = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let text = std::fs::read_to_string(&src.path).map_err(|e| {
            format!(
                "{}: {}",
                src.path.display(),
                mcp_tunnel_pki::tls::io_reason(&e)
            )
        })?;
        let mut last = i64::MIN;
        for l in text.lines() {
            let t = line_time_ms(l).unwrap_or(last);
            last = t;
            lines.push((t, i, src.name.clone(), l.to_owned()));
        }
    }
    // Stable: lines of one file keep their order at equal times.
    lines.sort_by_key(|(t, i, _, _)| (*t, *i));
    Ok(lines
        .iter()
        .flat_map(|(_, _, name, l)| m.feed(name, l))
        .collect())
}

struct Tail {
    name: String,
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
    partial: String,
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    Some(meta.ino())
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> Option<u64> {
    None
}

impl Tail {
    /// New complete lines since the last call.
    fn poll(&mut self) -> Vec<String> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Vec::new();
        };
        if meta.len() < self.offset || inode(&meta) != self.inode {
            // Truncated, or rotated to a new file.
            self.offset = 0;
            self.partial.clear();
            self.inode = inode(&meta);
        }
        if meta.len() == self.offset {
            return Vec::new();
        }
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            out.push(self.partial[..i].to_owned());
            self.partial.drain(..=i);
        }
        out
    }
}

/// Follows the files, calling `sink` for each alert, until `stop` resolves.
pub async fn follow(
    sources: &[LogSource],
    from_start: bool,
    m: &mut Monitor,
    sink: &mut (dyn FnMut(Alert) + Send),
    stop: impl std::future::Future<Output = ()>,
) {
    let mut tails: Vec<Tail> = sources
        .iter()
        .map(|s| {
            let meta = std::fs::metadata(&s.path).ok();
            Tail {
                name: s.name.clone(),
                path: s.path.clone(),
                offset: if from_start {
                    0
                } else {
                    meta.as_ref().map_or(0, |m| m.len())
                },
                inode: meta.as_ref().and_then(inode),
                partial: String::new(),
            }
        })
        .collect();
    tokio::pin!(stop);
    loop {
        for t in &mut tails {
            for line in t.poll() {
                for a in m.feed(&t.name, &line) {
                    sink(a);
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
