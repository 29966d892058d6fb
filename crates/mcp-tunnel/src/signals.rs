//! SIGTERM and SIGINT, listened for from the first line of a long-running command.
//!
//! Installing the handlers late leaves a window in which a SIGTERM (an orchestrator
//! stopping a container that is still starting, `incident` stopping the proxy) takes
//! the default action and kills the process without its shutdown path. Each command
//! therefore installs [`Signals`] before it does anything else and awaits it later.

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed handlers for SIGTERM and SIGINT.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("install the SIGINT handler")?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT (including one received since install).
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
