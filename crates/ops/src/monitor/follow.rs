//! Reading log files for the monitor: a replay of whole files merged in time order, or
//! following them as they grow (like `tail -F`: truncation and replacement restart from
//! the top); and scraping metrics endpoints at an interval while following.

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

/// A metrics endpoint to scrape, `NAME=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSource {
    pub name: String,
    pub url: String,
}

/// `name=http(s)://host:port/path`. Credentials in the URL are refused: they would sit
/// in the process list and in every alert that names the target.
pub fn parse_metrics_source(s: &str) -> Result<MetricsSource, String> {
    let (name, url) = s.split_once('=').ok_or_else(|| {
        format!("--metrics {s:?}: expected NAME=URL, e.g. proxy=http://127.0.0.1:9090/metrics")
    })?;
    crate::incident::evidence::check_source_name("--metrics", s, name)?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "--metrics {name}: the URL must start with http:// or https://"
        ));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("--metrics {name}: not a URL: {e}"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "--metrics {name}: credentials in the URL are not accepted (they would show in the process list)"
        ));
    }
    Ok(MetricsSource {
        name: name.to_owned(),
        url: url.to_owned(),
    })
}

/// Scrapes metrics endpoints every `every`.
#[derive(Debug)]
pub struct Scraper {
    pub sources: Vec<MetricsSource>,
    pub every: Duration,
    pub client: mcp_tunnel_control::http_client::HttpClient,
}

impl Scraper {
    async fn scrape(&self, m: &mut Monitor, sink: &mut (dyn FnMut(Alert) + Send)) {
        for src in &self.sources {
            let result = match self
                .client
                .send(http::Method::GET, &src.url, &[], None)
                .await
            {
                Ok(r) if r.status.is_success() => Ok(String::from_utf8_lossy(&r.body).into_owned()),
                Ok(r) => Err(format!("{} answered {}", src.url, r.status)),
                Err(e) => Err(format!("{}: {e}", src.url)),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for a in m.observe_metrics(&src.name, now, result.as_deref().map_err(Clone::clone)) {
                sink(a);
            }
        }
    }
}

/// Follows the files (and scrapes, if given), calling `sink` for each alert, until
/// `stop` resolves.
pub async fn follow(
    sources: &[LogSource],
    from_start: bool,
    scraper: Option<&Scraper>,
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
    let mut next_scrape = tokio::time::Instant::now();
    loop {
        if let Some(s) = scraper
            && tokio::time::Instant::now() >= next_scrape
        {
            next_scrape += s.every;
            tokio::select! {
                _ = &mut stop => return,
                _ = s.scrape(m, sink) => {}
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sources_are_checked() {
        let ok = parse_metrics_source("proxy=http://127.0.0.1:9090/metrics").unwrap();
        assert_eq!(
            (ok.name.as_str(), ok.url.as_str()),
            ("proxy", "http://127.0.0.1:9090/metrics")
        );
        for (arg, why) in [
            ("http://127.0.0.1:9090/metrics", "expected NAME=URL"),
            ("=http://127.0.0.1/metrics", "NAME must be letters"),
            ("a b=http://127.0.0.1/metrics", "NAME must be letters"),
            (
                "proxy=ftp://127.0.0.1/metrics",
                "must start with http:// or https://",
            ),
            (
                "proxy=127.0.0.1:9090/metrics",
                "must start with http:// or https://",
            ),
            (
                "proxy=https://user:pw@10.0.0.1/metrics",
                "credentials in the URL are not accepted",
            ),
            ("proxy=http://[::1/metrics", "not a URL"),
        ] {
            let err = parse_metrics_source(arg).unwrap_err();
            assert!(err.contains(why), "{arg}: {err}");
        }
    }
}
