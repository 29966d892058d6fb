//! What a check reports: one [`Finding`] per check, gathered in a [`Report`] that prints
//! as a table for people or as JSON for machines.

use std::fmt::Write as _;

use serde::Serialize;

/// How bad a failing check is. Ordered: `High` sorts first in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
            Self::Info => "info",
        }
    }
}

/// The outcome of a check. `Unknown` means the check could not look (no input, peer
/// unreachable, feature missing in the API): never read it as passing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Fail,
    Unknown,
    Pass,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "FAIL",
            Self::Unknown => "UNKNOWN",
            Self::Pass => "PASS",
        }
    }
}

/// One check's result. `fix` is empty for passing checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier, e.g. `upstream.allowed_ips.any`.
    pub id: String,
    pub severity: Severity,
    pub status: Status,
    /// What was looked at and what was seen.
    pub evidence: String,
    /// What to do about it.
    pub fix: String,
}

impl Finding {
    pub fn pass(id: impl Into<String>, severity: Severity, evidence: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            severity,
            status: Status::Pass,
            evidence: evidence.into(),
            fix: String::new(),
        }
    }

    pub fn fail(
        id: impl Into<String>,
        severity: Severity,
        evidence: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            severity,
            status: Status::Fail,
            evidence: evidence.into(),
            fix: fix.into(),
        }
    }

    pub fn unknown(
        id: impl Into<String>,
        severity: Severity,
        evidence: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            severity,
            status: Status::Unknown,
            evidence: evidence.into(),
            fix: fix.into(),
        }
    }

    /// A failing high finding makes `doctor` exit non-zero.
    pub fn is_blocking(&self) -> bool {
        self.status == Status::Fail && self.severity == Severity::High
    }
}

/// Counts per status, for the summary line and the JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub unknown: usize,
    pub high_failures: usize,
}

/// Every finding of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    pub fn extend(&mut self, fs: impl IntoIterator<Item = Finding>) {
        self.findings.extend(fs);
    }

    /// The finding with this id, if the check ran.
    pub fn get(&self, id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.id == id)
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for f in &self.findings {
            match f.status {
                Status::Pass => s.pass += 1,
                Status::Fail => s.fail += 1,
                Status::Unknown => s.unknown += 1,
            }
            if f.is_blocking() {
                s.high_failures += 1;
            }
        }
        s
    }

    /// Whether any high-severity check failed.
    pub fn has_blocking(&self) -> bool {
        self.findings.iter().any(Finding::is_blocking)
    }

    /// Failures first (worst severity first), then unknowns, then passes; stable by id.
    pub fn sorted(&self) -> Vec<&Finding> {
        let mut v: Vec<&Finding> = self.findings.iter().collect();
        v.sort_by(|a, b| (a.status, a.severity, &a.id).cmp(&(b.status, b.severity, &b.id)));
        v
    }

    /// `{"findings": [...], "summary": {...}}`, findings in [`Report::sorted`] order.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "findings": self.sorted(),
            "summary": self.summary(),
        })
    }

    /// A table for a terminal: status, severity, id and evidence on one line, the fix
    /// indented below it.
    pub fn to_table(&self) -> String {
        let rows = self.sorted();
        let id_w = rows.iter().map(|f| f.id.len()).max().unwrap_or(2).max(2);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<7}  {:<6}  {:<id_w$}  EVIDENCE",
            "STATUS", "SEV", "ID"
        );
        for f in rows {
            let _ = writeln!(
                out,
                "{:<7}  {:<6}  {:<id_w$}  {}",
                f.status.as_str(),
                f.severity.as_str(),
                f.id,
                f.evidence
            );
            if !f.fix.is_empty() && f.status != Status::Pass {
                let _ = writeln!(out, "{:<7}  {:<6}  {:<id_w$}  fix: {}", "", "", "", f.fix);
            }
        }
        let s = self.summary();
        let _ = writeln!(
            out,
            "\n{} passed, {} failed ({} high), {} could not be checked",
            s.pass, s.fail, s.high_failures, s.unknown
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failing_high_findings_block() {
        let mut r = Report::default();
        r.push(Finding::pass("a", Severity::High, "ok"));
        r.push(Finding::unknown("b", Severity::High, "?", "look"));
        r.push(Finding::fail("c", Severity::Medium, "bad", "fix it"));
        assert!(!r.has_blocking());
        r.push(Finding::fail("d", Severity::High, "worse", "fix it now"));
        assert!(r.has_blocking());
        let s = r.summary();
        assert_eq!((s.pass, s.fail, s.unknown, s.high_failures), (1, 2, 1, 1));
        let order: Vec<&str> = r.sorted().iter().map(|f| f.id.as_str()).collect();
        assert_eq!(order, ["d", "c", "b", "a"]);
        let table = r.to_table();
        assert!(table.contains("fix: fix it now"), "{table}");
        assert_eq!(r.to_json()["findings"][0]["severity"], "high");
        assert_eq!(r.to_json()["findings"][0]["status"], "fail");
    }
}
