//! What an operational step reports: done now, already done (re-runs are idempotent),
//! skipped on purpose, or failed.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Done,
    AlreadyDone,
    Skipped,
    Failed,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::AlreadyDone => "already done",
            Self::Skipped => "skipped",
            Self::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    pub step: String,
    pub outcome: StepOutcome,
    pub detail: String,
}

impl StepResult {
    pub fn new(step: impl Into<String>, outcome: StepOutcome, detail: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            outcome,
            detail: detail.into(),
        }
    }

    pub fn failed(&self) -> bool {
        self.outcome == StepOutcome::Failed
    }
}

/// One line per step, for a terminal.
pub fn render(results: &[StepResult]) -> String {
    let w = results
        .iter()
        .map(|r| r.outcome.as_str().len())
        .max()
        .unwrap_or(4);
    results
        .iter()
        .map(|r| format!("{:<w$}  {}: {}\n", r.outcome.as_str(), r.step, r.detail))
        .collect()
}
