//! Structured logs: JSON lines on stdout by default (one object per event, fields at the
//! top level, `message` holding the event name), or human-readable text.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init(level: &str, format: Format) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Our crates at `level`; dependencies only at warn, so a debug log stays readable.
        EnvFilter::new(format!("warn,mcp_tunnel={level},mcp_tunnel_proxy={level},mcp_tunnel_connector={level},mcp_tunnel_edge={level},mcp_tunnel_client={level},mcp_tunnel_control={level}"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        Format::Text => builder.with_ansi(false).try_init(),
    };
}
