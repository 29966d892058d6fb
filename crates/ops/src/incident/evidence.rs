//! The evidence bundle: the window's lines of each log, the window's audit events, and
//! one timeline merging them (plus the incident's own steps), with a manifest of SHA-256
//! digests so later tampering with the bundle shows.

use std::path::{Path, PathBuf};

use mcp_tunnel_control::client::{ApiClient, Method};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::setup_output::write_atomic;
use crate::timefmt::{fmt_ms, line_time_ms};

/// A named log source (`proxy`, `connector`, `edge`, `mcp-server`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSource {
    pub name: String,
    pub path: PathBuf,
}

/// The NAME of a `NAME=…` source flag: letters, digits, '-' or '_' (it labels alerts,
/// timeline lines and evidence file names).
pub(crate) fn check_source_name(flag: &str, arg: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{flag} {arg:?}: NAME must be letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// `name=path`.
pub fn parse_log_source(s: &str) -> Result<LogSource, String> {
    let (name, path) = s.split_once('=').ok_or_else(|| {
        format!("--log {s:?}: expected NAME=FILE, e.g. proxy=/var/log/mcp-proxy.log")
    })?;
    check_source_name("--log", s, name)?;
    Ok(LogSource {
        name: name.to_owned(),
        path: PathBuf::from(path),
    })
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub time_ms: i64,
    pub time: String,
    pub source: String,
    pub level: String,
    pub summary: String,
}

/// What was collected, for the step's record and the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Collected {
    pub files: Vec<(String, String, u64)>,
    pub gaps: Vec<String>,
    pub timeline_entries: usize,
}

/// A log line's summary: level, message and the fields an investigator looks for.
fn summarize(line: &str) -> (String, String) {
    let json = line
        .find('{')
        .and_then(|i| serde_json::from_str::<Value>(&line[i..]).ok());
    let Some(v) = json.filter(Value::is_object) else {
        return (String::new(), line.chars().take(300).collect());
    };
    let level = v["level"].as_str().unwrap_or("").to_ascii_lowercase();
    let mut s = v["message"].as_str().unwrap_or("").to_owned();
    for k in [
        "route",
        "host",
        "method",
        "status",
        "ip",
        "peer",
        "tunnel_id",
        "connIndex",
        "error",
        "reason",
    ] {
        if let Some(f) = v.get(k).filter(|f| !f.is_null()) {
            let f = f
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| f.to_string());
            s.push_str(&format!(" {k}={f}"));
        }
    }
    (level, s)
}

/// Writes `evidence/` under `dir` for `[since, until]` (Unix ms).
pub async fn collect(
    dir: &Path,
    logs: &[LogSource],
    api: Option<&ApiClient>,
    since: i64,
    until: i64,
    extra_timeline: &[TimelineEntry],
) -> Result<Collected, String> {
    let ev = dir.join("evidence");
    std::fs::create_dir_all(ev.join("logs")).map_err(|e| format!("{}: {e}", ev.display()))?;
    let mut c = Collected::default();
    let mut timeline: Vec<TimelineEntry> = extra_timeline.to_vec();
    let in_window = |t: i64| t >= since && t <= until;
    for src in logs {
        let text = match std::fs::read(&src.path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                c.gaps.push(format!(
                    "log {} ({}): {}",
                    src.name,
                    src.path.display(),
                    mcp_tunnel_pki::tls::io_reason(&e)
                ));
                continue;
            }
        };
        let mut kept = String::new();
        let mut undated = 0usize;
        for line in text.lines() {
            match line_time_ms(line) {
                Some(t) if in_window(t) => {
                    kept.push_str(line);
                    kept.push('\n');
                    let (level, summary) = summarize(line);
                    timeline.push(TimelineEntry {
                        time_ms: t,
                        time: fmt_ms(t),
                        source: src.name.clone(),
                        level,
                        summary,
                    });
                }
                Some(_) => {}
                None => {
                    // Undatable lines are kept: evidence is not thrown away on a guess.
                    undated += 1;
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        if undated > 0 {
            c.gaps.push(format!(
                "log {}: {undated} line(s) without a timestamp kept unfiltered",
                src.name
            ));
        }
        let name = format!("logs/{}.log", src.name);
        write_evidence(&ev, &name, kept.as_bytes(), &mut c)?;
    }
    match api {
        None => c.gaps.push("audit events: no API given".into()),
        Some(api) => match api
            .call_text(Method::GET, "/v1/audit_events/export", None)
            .await
        {
            Ok(jsonl) => {
                let mut kept = String::new();
                for line in jsonl.lines() {
                    let Ok(e) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    let t = e["time_ms"].as_i64().unwrap_or(i64::MIN);
                    if !in_window(t) {
                        continue;
                    }
                    kept.push_str(line);
                    kept.push('\n');
                    let mut summary = format!(
                        "{} {} by {}",
                        e["action"].as_str().unwrap_or("?"),
                        e["target"].as_str().unwrap_or("-"),
                        e["actor"].as_str().unwrap_or("?")
                    );
                    if let Some(src) = e["source"].as_str() {
                        summary.push_str(&format!(" from {src}"));
                    }
                    if let Some(r) = e["reason"].as_str() {
                        summary.push_str(&format!(" ({r})"));
                    }
                    timeline.push(TimelineEntry {
                        time_ms: t,
                        time: fmt_ms(t),
                        source: "audit".into(),
                        level: "info".into(),
                        summary,
                    });
                }
                write_evidence(&ev, "audit.jsonl", kept.as_bytes(), &mut c)?;
            }
            Err(e) => c.gaps.push(format!("audit events: {e}")),
        },
    }
    timeline.sort_by(|a, b| (a.time_ms, &a.source).cmp(&(b.time_ms, &b.source)));
    c.timeline_entries = timeline.len();
    let jsonl: String = timeline
        .iter()
        .filter_map(|t| serde_json::to_string(t).ok())
        .map(|l| l + "\n")
        .collect();
    write_evidence(&ev, "timeline.jsonl", jsonl.as_bytes(), &mut c)?;
    let mut md = format!(
        "# Incident timeline\n\nWindow: {} to {}\n\n",
        fmt_ms(since),
        fmt_ms(until)
    );
    if !c.gaps.is_empty() {
        md.push_str("Not collected:\n\n");
        for g in &c.gaps {
            md.push_str(&format!("- {g}\n"));
        }
        md.push('\n');
    }
    md.push_str("| time | source | level | event |\n|---|---|---|---|\n");
    for t in &timeline {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            t.time,
            t.source,
            t.level,
            t.summary.replace('|', "\\|")
        ));
    }
    write_evidence(&ev, "timeline.md", md.as_bytes(), &mut c)?;
    let manifest = serde_json::json!({
        "window": {"since": fmt_ms(since), "until": fmt_ms(until)},
        "files": c.files.iter().map(|(n, h, len)| serde_json::json!({"path": n, "sha256": h, "bytes": len})).collect::<Vec<_>>(),
        "gaps": c.gaps,
    });
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n";
    write_atomic(&ev.join("manifest.json"), text.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    Ok(c)
}

fn write_evidence(ev: &Path, name: &str, bytes: &[u8], c: &mut Collected) -> Result<(), String> {
    // Logs may hold hostnames and addresses of the private network: owner-only.
    write_atomic(&ev.join(name), bytes, 0o600).map_err(|e| e.to_string())?;
    c.files.push((
        name.to_owned(),
        mcp_tunnel_pki::crypto::sha256_hex(bytes),
        bytes.len() as u64,
    ));
    Ok(())
}
