//! `mcp-tunnel monitor`: watches the stack's JSON logs and raises alerts on warnings and
//! errors and on unusual traffic: bursts of `IP validation failed`, of `tls handshake
//! failed` and of token rejections, request rates far above a learned baseline, and
//! traffic on a route not seen while learning.
//!
//! Time comes from the log lines' own timestamps, so replaying a recorded stream gives
//! the same alerts as watching it live. The same signals ship as Prometheus rules in the
//! Helm chart (`metrics.prometheusRule`).

pub mod follow;
pub mod metrics;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;
use serde_json::Value;

use crate::timefmt::{fmt_ms, line_time_ms};

/// Thresholds. The defaults alert on the first SSRF attempt and on small bursts of the
/// rest, as the chart's PrometheusRule does.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Sliding window for bursts, in ms.
    pub burst_window_ms: i64,
    /// More than this many `IP validation failed` lines in the window alert.
    pub ip_validation_burst: usize,
    pub tls_handshake_burst: usize,
    pub token_rejection_burst: usize,
    /// Traffic is learned for this long before rate and new-route alerts start.
    pub learn_ms: i64,
    /// Rate buckets, in ms.
    pub bucket_ms: i64,
    /// A bucket with more than `spike_factor` × the baseline (and at least
    /// `spike_min_requests`) requests alerts.
    pub spike_factor: f64,
    pub spike_min_requests: u64,
    /// The same alert is not repeated within this time, in ms.
    pub quiet_ms: i64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            burst_window_ms: 5 * 60_000,
            ip_validation_burst: 0,
            tls_handshake_burst: 5,
            token_rejection_burst: 3,
            learn_ms: 10 * 60_000,
            bucket_ms: 60_000,
            spike_factor: 3.0,
            spike_min_requests: 30,
            quiet_ms: 5 * 60_000,
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub time: String,
    pub alert: String,
    pub severity: &'static str,
    pub source: String,
    pub summary: String,
}

/// The signals a line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Burst {
    IpValidation,
    TlsHandshake,
    TokenRejected,
}

impl Burst {
    fn name(self) -> &'static str {
        match self {
            Self::IpValidation => "burst.ip_validation_failed",
            Self::TlsHandshake => "burst.tls_handshake_failed",
            Self::TokenRejected => "burst.token_rejected",
        }
    }
}

fn classify(msg: &str, v: &Value) -> Option<Burst> {
    if msg.starts_with("IP validation failed") {
        return Some(Burst::IpValidation);
    }
    if msg == "tls handshake failed" {
        return Some(Burst::TlsHandshake);
    }
    let reason = v["reason"].as_str().unwrap_or("").to_ascii_lowercase();
    if msg.starts_with("Tunnel token rejected")
        || (msg == "connector connection refused"
            && (reason.contains("token_rejected") || reason.contains("token rejected")))
    {
        return Some(Burst::TokenRejected);
    }
    None
}

/// The alerting state over every source.
#[derive(Debug)]
pub struct Monitor {
    cfg: MonitorConfig,
    bursts: BTreeMap<Burst, VecDeque<i64>>,
    last_alert: BTreeMap<String, i64>,
    first_ms: Option<i64>,
    routes: BTreeSet<String>,
    bucket_start: Option<i64>,
    bucket_count: u64,
    /// Requests per bucket while learning, then an exponentially weighted average.
    baseline: Option<f64>,
    learn_buckets: Vec<u64>,
    metrics_cfg: metrics::MetricsConfig,
    targets: BTreeMap<String, metrics::Target>,
}

fn alert(t: i64, name: &str, severity: &'static str, source: &str, summary: String) -> Alert {
    Alert {
        time: fmt_ms(t),
        alert: name.into(),
        severity,
        source: source.into(),
        summary,
    }
}

impl Monitor {
    pub fn new(cfg: MonitorConfig) -> Self {
        Self {
            cfg,
            bursts: BTreeMap::new(),
            last_alert: BTreeMap::new(),
            first_ms: None,
            routes: BTreeSet::new(),
            bucket_start: None,
            bucket_count: 0,
            baseline: None,
            learn_buckets: Vec::new(),
            metrics_cfg: metrics::MetricsConfig::default(),
            targets: BTreeMap::new(),
        }
    }

    /// With thresholds for the alerts that come from scraped metrics.
    pub fn with_metrics(mut self, cfg: metrics::MetricsConfig) -> Self {
        self.metrics_cfg = cfg;
        self
    }

    fn learning(&self, t: i64) -> bool {
        self.first_ms.is_none_or(|f| t - f < self.cfg.learn_ms)
    }

    /// Records `a` unless an alert with the same `key` was raised within the quiet time.
    fn raise(&mut self, out: &mut Vec<Alert>, t: i64, key: String, a: Alert) {
        if self
            .last_alert
            .get(&key)
            .is_some_and(|last| t - last < self.cfg.quiet_ms)
        {
            return;
        }
        self.last_alert.insert(key, t);
        out.push(a);
    }

    /// Feeds one line from `source`; returns the alerts it raises. Lines that are not
    /// JSON log records, or carry no time, are ignored.
    pub fn feed(&mut self, source: &str, line: &str) -> Vec<Alert> {
        let mut out = Vec::new();
        let Some(start) = line.find('{') else {
            return out;
        };
        let Ok(v) = serde_json::from_str::<Value>(&line[start..]) else {
            return out;
        };
        let Some(t) = line_time_ms(line) else {
            return out;
        };
        self.first_ms.get_or_insert(t);
        let msg = v["message"].as_str().unwrap_or("").to_owned();
        let level = v["level"].as_str().unwrap_or("").to_ascii_uppercase();
        if let Some(kind) = classify(&msg, &v) {
            self.burst(&mut out, t, kind, source, &msg);
        } else if level == "ERROR" || level == "WARN" {
            let (name, sev) = if level == "ERROR" {
                ("log.error", "critical")
            } else {
                ("log.warning", "warning")
            };
            let mut summary = msg.clone();
            if let Some(e) = v["error"].as_str() {
                summary.push_str(&format!(": {e}"));
            }
            self.raise(
                &mut out,
                t,
                format!("{name}:{source}:{msg}"),
                alert(t, name, sev, source, summary),
            );
        }
        if msg == "request completed" {
            self.request(&mut out, t, source, v["route"].as_str().unwrap_or(""));
        }
        out
    }

    fn burst(&mut self, out: &mut Vec<Alert>, t: i64, kind: Burst, source: &str, msg: &str) {
        let window = self.cfg.burst_window_ms;
        let q = self.bursts.entry(kind).or_default();
        q.push_back(t);
        while q.front().is_some_and(|f| t - f > window) {
            q.pop_front();
        }
        let n = q.len();
        let limit = match kind {
            Burst::IpValidation => self.cfg.ip_validation_burst,
            Burst::TlsHandshake => self.cfg.tls_handshake_burst,
            Burst::TokenRejected => self.cfg.token_rejection_burst,
        };
        if n > limit {
            let sev = if kind == Burst::TlsHandshake {
                "warning"
            } else {
                "critical"
            };
            let what = match kind {
                Burst::IpValidation => {
                    "upstream connections refused by IP validation (SSRF attempt, DNS change or misrouted route)"
                }
                Burst::TlsHandshake => {
                    "inner TLS handshakes failed (probing, or clients that do not trust the CA)"
                }
                Burst::TokenRejected => {
                    "tunnel token rejections (token guessing, or a rotated token not yet deployed)"
                }
            };
            let summary = format!("{n} {what} within {}s; latest: {msg}", window / 1000);
            self.raise(
                out,
                t,
                kind.name().into(),
                alert(t, kind.name(), sev, source, summary),
            );
        }
    }

    fn request(&mut self, out: &mut Vec<Alert>, t: i64, source: &str, route: &str) {
        let learning = self.learning(t);
        if !route.is_empty() && self.routes.insert(route.to_owned()) && !learning {
            self.raise(
                out,
                t,
                format!("traffic.new_route:{route}"),
                alert(
                    t,
                    "traffic.new_route",
                    "warning",
                    source,
                    format!("requests on route {route:?}, not seen while learning"),
                ),
            );
        }
        let bucket = self.cfg.bucket_ms;
        let start = *self.bucket_start.get_or_insert(t - t.rem_euclid(bucket));
        if t - start >= bucket {
            self.close_bucket();
            self.bucket_start = Some(t - t.rem_euclid(bucket));
        }
        self.bucket_count += 1;
        if !learning && let Some(base) = self.baseline {
            let limit = (base * self.cfg.spike_factor).max(self.cfg.spike_min_requests as f64);
            if self.bucket_count as f64 > limit {
                let summary = format!(
                    "{} requests in {}s, over {:.1}x the learned baseline of {base:.1}",
                    self.bucket_count,
                    bucket / 1000,
                    self.cfg.spike_factor
                );
                self.raise(
                    out,
                    t,
                    "traffic.request_spike".into(),
                    alert(t, "traffic.request_spike", "warning", source, summary),
                );
            }
        }
    }

    fn close_bucket(&mut self) {
        let n = self.bucket_count;
        self.bucket_count = 0;
        let learning = self.bucket_start.is_some_and(|s| self.learning(s));
        if learning {
            self.learn_buckets.push(n);
            let sum: u64 = self.learn_buckets.iter().sum();
            self.baseline = Some(sum as f64 / self.learn_buckets.len() as f64);
        } else if let Some(b) = self.baseline {
            // Adapt slowly, so a spike does not become the norm within minutes.
            self.baseline = Some(b * 0.95 + n as f64 * 0.05);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: i64, level: &str, msg: &str, extra: &str) -> String {
        format!(
            r#"{{"timestamp":"{}","level":"{level}","message":"{msg}"{extra}}}"#,
            fmt_ms(t)
        )
    }

    #[test]
    fn first_ssrf_attempt_alerts_once_per_quiet_period() {
        let mut m = Monitor::new(MonitorConfig::default());
        let a = m.feed(
            "proxy",
            &line(
                0,
                "WARN",
                "IP validation failed: 169.254.169.254 is not a private address",
                "",
            ),
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].alert, "burst.ip_validation_failed");
        assert!(
            m.feed(
                "proxy",
                &line(
                    1000,
                    "WARN",
                    "IP validation failed: 127.0.0.1 is not a private address",
                    ""
                )
            )
            .is_empty()
        );
        assert_eq!(
            m.feed(
                "proxy",
                &line(
                    400_000,
                    "WARN",
                    "IP validation failed: 127.0.0.1 is not a private address",
                    ""
                )
            )[0]
            .alert,
            "burst.ip_validation_failed"
        );
    }

    #[test]
    fn handshake_failures_alert_only_as_a_burst() {
        let mut m = Monitor::new(MonitorConfig::default());
        let mut alerts = Vec::new();
        for i in 0..6 {
            alerts.extend(m.feed(
                "proxy",
                &line(
                    i * 1000,
                    "WARN",
                    "tls handshake failed",
                    r#","reason":"bad""#,
                ),
            ));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(
            alerts[0]
                .summary
                .starts_with("6 inner TLS handshakes failed"),
            "{alerts:?}"
        );
        // Spread out, never more than five in five minutes: nothing.
        let mut m = Monitor::new(MonitorConfig::default());
        for i in 0..10 {
            assert!(
                m.feed(
                    "proxy",
                    &line(i * 120_000, "WARN", "tls handshake failed", "")
                )
                .is_empty()
            );
        }
    }

    #[test]
    fn rate_spikes_and_new_routes_after_learning() {
        let cfg = MonitorConfig {
            learn_ms: 600_000,
            bucket_ms: 60_000,
            spike_min_requests: 20,
            ..MonitorConfig::default()
        };
        let mut m = Monitor::new(cfg);
        let mut alerts = Vec::new();
        // Ten minutes of 10 requests a minute on "docs".
        for minute in 0..10 {
            for i in 0..10 {
                alerts.extend(m.feed(
                    "proxy",
                    &line(
                        minute * 60_000 + i * 5000,
                        "INFO",
                        "request completed",
                        r#","route":"docs","status":200"#,
                    ),
                ));
            }
        }
        assert!(alerts.is_empty(), "{alerts:?}");
        // Normal traffic goes on quietly.
        for i in 0..10 {
            alerts.extend(m.feed(
                "proxy",
                &line(
                    600_000 + i * 5000,
                    "INFO",
                    "request completed",
                    r#","route":"docs","status":200"#,
                ),
            ));
        }
        assert!(alerts.is_empty(), "{alerts:?}");
        // A burst of 100 in one minute, and a route never seen.
        for i in 0..100 {
            alerts.extend(m.feed(
                "proxy",
                &line(
                    660_000 + i * 500,
                    "INFO",
                    "request completed",
                    r#","route":"docs","status":200"#,
                ),
            ));
        }
        alerts.extend(m.feed(
            "proxy",
            &line(
                720_500,
                "INFO",
                "request completed",
                r#","route":"admin","status":200"#,
            ),
        ));
        let names: Vec<&str> = alerts.iter().map(|a| a.alert.as_str()).collect();
        assert_eq!(
            names,
            ["traffic.request_spike", "traffic.new_route"],
            "{alerts:?}"
        );
    }

    #[test]
    fn warnings_errors_and_token_rejections() {
        let mut m = Monitor::new(MonitorConfig::default());
        let a = m.feed(
            "connector",
            &line(
                0,
                "ERROR",
                "Tunnel is archived: the edge refuses this tunnel for good; stopping the connector",
                "",
            ),
        );
        assert_eq!(
            (a[0].alert.as_str(), a[0].severity),
            ("log.error", "critical")
        );
        let mut alerts = Vec::new();
        for i in 0..4 {
            alerts.extend(m.feed(
                "edge",
                &line(
                    i,
                    "INFO",
                    "connector connection refused",
                    r#","reason":"rejected: token_rejected","peer":"203.0.113.9:5000""#,
                ),
            ));
        }
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].alert, "burst.token_rejected");
        assert!(m.feed("proxy", "not json").is_empty());
        assert!(
            m.feed("proxy", &line(5, "INFO", "request started", ""))
                .is_empty()
        );
    }
}
