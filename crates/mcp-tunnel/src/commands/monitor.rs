//! `mcp-tunnel monitor`: follows the stack's JSON logs and scrapes its metrics, and
//! prints an alert per line (JSON) on warnings, errors, unusual traffic and unhealthy
//! state. `--replay` reads recorded logs to the end and exits (1 if anything alerted).

use std::process::ExitCode;
use std::time::Duration;

use mcp_tunnel_ops::incident::{LogSource, parse_log_source};
use mcp_tunnel_ops::monitor::follow::{MetricsSource, Scraper, parse_metrics_source};
use mcp_tunnel_ops::monitor::metrics::MetricsConfig;
use mcp_tunnel_ops::monitor::{self, Monitor, MonitorConfig};

use super::teardown::parse_duration;

#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    /// A log to follow, NAME=FILE (proxy, connector, edge…); repeatable.
    #[arg(long = "log", value_parser = parse_log_source, required_unless_present = "metrics")]
    logs: Vec<LogSource>,
    /// A Prometheus endpoint to scrape, NAME=URL (proxy admin /metrics, connector
    /// --metrics, edge admin); repeatable. Without --log, the counters of IP validation,
    /// handshake and token failures stand in for the log lines.
    #[arg(long = "metrics", value_parser = parse_metrics_source, conflicts_with = "replay")]
    metrics: Vec<MetricsSource>,
    /// How often the metrics endpoints are scraped.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    scrape_interval: Duration,
    /// Alert when the proxy's server certificate expires within this time.
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    cert_expiry_warning: Duration,
    /// Read the files from the start and exit at their end (recorded streams).
    #[arg(long)]
    replay: bool,
    /// When following, start at the beginning of the files instead of their end.
    #[arg(long)]
    from_start: bool,
    /// Window for bursts.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    burst_window: Duration,
    /// More `IP validation failed` lines than this in the window alert.
    #[arg(long, default_value_t = 0)]
    ip_validation_burst: usize,
    #[arg(long, default_value_t = 5)]
    tls_handshake_burst: usize,
    #[arg(long, default_value_t = 3)]
    token_rejection_burst: usize,
    /// Learn normal traffic for this long before rate and new-route alerts.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    learn: Duration,
    /// A minute with more requests than this multiple of the baseline alerts.
    #[arg(long, default_value_t = 3.0)]
    spike_factor: f64,
    /// Stop following after this long (default: until interrupted).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
}

pub async fn run(a: MonitorArgs) -> anyhow::Result<ExitCode> {
    let ms = |d: Duration| d.as_millis() as i64;
    let cfg = MonitorConfig {
        burst_window_ms: ms(a.burst_window),
        ip_validation_burst: a.ip_validation_burst,
        tls_handshake_burst: a.tls_handshake_burst,
        token_rejection_burst: a.token_rejection_burst,
        learn_ms: ms(a.learn),
        spike_factor: a.spike_factor,
        ..MonitorConfig::default()
    };
    let mut m = Monitor::new(cfg).with_metrics(MetricsConfig {
        cert_expiry_warning_ms: ms(a.cert_expiry_warning),
        counters_feed_bursts: a.logs.is_empty(),
        ..MetricsConfig::default()
    });
    let scraper = if a.metrics.is_empty() {
        None
    } else {
        Some(Scraper {
            sources: a.metrics.clone(),
            every: a.scrape_interval,
            client: mcp_tunnel_control::http_client::HttpClient::new(None)?
                .with_timeout(a.scrape_interval.min(Duration::from_secs(10))),
        })
    };
    if a.replay {
        let alerts = monitor::follow::replay(&a.logs, &mut m).map_err(anyhow::Error::msg)?;
        for al in &alerts {
            println!("{}", serde_json::to_string(al)?);
        }
        return Ok(if alerts.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let stop = async move {
        match a.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let mut sink = |al: monitor::Alert| {
        if let Ok(s) = serde_json::to_string(&al) {
            println!("{s}");
        }
    };
    monitor::follow::follow(
        &a.logs,
        a.from_start,
        scraper.as_ref(),
        &mut m,
        &mut sink,
        stop,
    )
    .await;
    Ok(ExitCode::SUCCESS)
}
