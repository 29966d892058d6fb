//! The monitor's second input: the stack's Prometheus endpoints (proxy admin
//! `/metrics`, connector `--metrics`, edge admin). Logs say what happened; metrics say
//! what state the stack is in, which a log line may never announce: a process that
//! stopped answering, a connector with no live link, a certificate about to expire, a
//! rising share of 5xx. Counters that logs also report (IP validation, inner TLS
//! handshakes, token rejections) feed the same burst windows as log lines, but only
//! when no logs are followed, so one event is never counted twice.

use std::collections::BTreeMap;

use super::{Alert, Burst, Monitor, alert};
use crate::timefmt::fmt_ms;

/// One sample of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses Prometheus text exposition. Comments and blank lines are skipped; a line that
/// is not a valid sample is an error naming its number, so a scrape of something that
/// is not a metrics endpoint (an HTML page, a proxy's error) is reported as such.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without '='")?;
            let key = rest[..eq].trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err("bad label name");
            }
            rest = rest[eq + 1..]
                .trim_start()
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value"),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err("bad escape in label value"),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = rest[end + 1..].trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("expected ',' or '}' after a label");
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|_| "value is not a number")?,
    };
    // An optional timestamp, then nothing.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing fields");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Thresholds for the state-based alerts.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// A server certificate expiring within this many ms alerts.
    pub cert_expiry_warning_ms: i64,
    /// More upstream errors than this between two scrapes alert.
    pub upstream_errors: u64,
    /// A share of 5xx above this between two scrapes alerts ...
    pub error_ratio: f64,
    /// ... when at least this many requests were answered.
    pub error_ratio_min_requests: u64,
    /// Counters that logs also carry feed the burst windows (no logs followed).
    pub counters_feed_bursts: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            cert_expiry_warning_ms: 7 * 86_400_000,
            upstream_errors: 5,
            error_ratio: 0.5,
            error_ratio_min_requests: 20,
            counters_feed_bursts: false,
        }
    }
}

/// What the monitor remembers of one scrape target.
#[derive(Debug, Default)]
pub(super) struct Target {
    up: Option<bool>,
    /// Counter values of the last good scrape, by series.
    last: BTreeMap<String, f64>,
}

fn series(s: &Sample) -> String {
    let mut key = s.name.clone();
    for (k, v) in &s.labels {
        key.push_str(&format!("|{k}={v}"));
    }
    key
}

/// Sum of the increases since the last scrape of the series `pick` selects. A counter
/// that went down was reset (the process restarted): its new value is the increase.
fn increase(
    samples: &[Sample],
    last: &BTreeMap<String, f64>,
    pick: impl Fn(&Sample) -> bool,
) -> u64 {
    samples
        .iter()
        .filter(|s| pick(s))
        .map(|s| match last.get(&series(s)) {
            Some(&before) if s.value >= before => s.value - before,
            Some(_) => s.value,
            // First sight of a series after the first scrape: all of it is new.
            None if !last.is_empty() => s.value,
            None => 0.0,
        })
        .sum::<f64>() as u64
}

fn sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = false;
    let total = samples
        .iter()
        .filter(|s| s.name == name)
        .inspect(|_| found = true)
        .map(|s| s.value)
        .sum();
    found.then_some(total)
}

impl Monitor {
    /// Takes one scrape of `source` at `t` (unix ms): its body, or why it failed.
    pub fn observe_metrics(
        &mut self,
        source: &str,
        t: i64,
        scrape: Result<&str, String>,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        let samples = match scrape.and_then(parse) {
            Ok(s) => s,
            Err(e) => {
                let target = self.targets.entry(source.to_owned()).or_default();
                if target.up != Some(false) {
                    target.up = Some(false);
                    self.last_alert
                        .remove(&format!("metrics.recovered:{source}"));
                    self.raise(
                        &mut out,
                        t,
                        format!("metrics.down:{source}"),
                        alert(
                            t,
                            "metrics.target_down",
                            "critical",
                            source,
                            format!("cannot scrape {source}'s metrics: {e}"),
                        ),
                    );
                }
                return out;
            }
        };
        let mut target = self.targets.remove(source).unwrap_or_default();
        let first = target.last.is_empty();
        if target.up == Some(false) {
            self.last_alert.remove(&format!("metrics.down:{source}"));
            out.push(alert(
                t,
                "metrics.target_recovered",
                "info",
                source,
                format!("{source}'s metrics answer again"),
            ));
        }
        target.up = Some(true);
        self.state_alerts(&mut out, t, source, &samples);
        if !first {
            self.counter_alerts(&mut out, t, source, &samples, &target.last);
        }
        target.last = samples.iter().map(|s| (series(s), s.value)).collect();
        self.targets.insert(source.to_owned(), target);
        out
    }

    fn state_alerts(&mut self, out: &mut Vec<Alert>, t: i64, source: &str, samples: &[Sample]) {
        if sum(samples, "mcpt_connector_ha_connections") == Some(0.0) {
            self.raise(
                out,
                t,
                format!("availability.connector_disconnected:{source}"),
                alert(
                    t,
                    "availability.connector_disconnected",
                    "critical",
                    source,
                    "the connector has no live connection to the edge: the tunnel serves nothing"
                        .into(),
                ),
            );
        }
        let not_after = samples
            .iter()
            .filter(|s| s.name == "mcp_proxy_certificate_not_after_seconds")
            .map(|s| s.value)
            .fold(f64::INFINITY, f64::min);
        if not_after.is_finite() {
            let end = (not_after * 1000.0) as i64;
            let (name, sev, summary) = if end <= t {
                (
                    "cert.expired",
                    "critical",
                    format!("the proxy's server certificate expired at {}", fmt_ms(end)),
                )
            } else {
                (
                    "cert.expiring",
                    "warning",
                    format!(
                        "the proxy's server certificate expires at {} ({} h left) and was not renewed",
                        fmt_ms(end),
                        (end - t) / 3_600_000
                    ),
                )
            };
            if end - t < self.metrics_cfg.cert_expiry_warning_ms {
                self.raise(
                    out,
                    t,
                    format!("{name}:{source}"),
                    alert(t, name, sev, source, summary),
                );
            }
        }
    }

    fn counter_alerts(
        &mut self,
        out: &mut Vec<Alert>,
        t: i64,
        source: &str,
        samples: &[Sample],
        last: &BTreeMap<String, f64>,
    ) {
        let rejected = increase(samples, last, |s| {
            s.name == "mcp_proxy_certificate_reloads_total" && s.label("result") == Some("rejected")
        });
        if rejected > 0 {
            self.raise(
                out,
                t,
                format!("cert.reload_rejected:{source}"),
                alert(
                    t,
                    "cert.reload_rejected",
                    "warning",
                    source,
                    format!(
                        "{rejected} new server certificate(s) rejected; the proxy keeps serving the old one"
                    ),
                ),
            );
        }
        let upstream = increase(samples, last, |s| {
            s.name == "mcp_proxy_upstream_errors_total"
        });
        if upstream > self.metrics_cfg.upstream_errors {
            self.raise(
                out,
                t,
                format!("upstream.errors:{source}"),
                alert(
                    t,
                    "upstream.errors",
                    "warning",
                    source,
                    format!(
                        "{upstream} requests failed reaching an MCP server since the last scrape"
                    ),
                ),
            );
        }
        let total = increase(samples, last, |s| s.name == "mcp_proxy_requests_total");
        let failed = increase(samples, last, |s| {
            s.name == "mcp_proxy_requests_total"
                && s.label("status").is_some_and(|c| c.starts_with('5'))
        });
        if total >= self.metrics_cfg.error_ratio_min_requests
            && failed as f64 > total as f64 * self.metrics_cfg.error_ratio
        {
            self.raise(
                out,
                t,
                format!("traffic.error_ratio:{source}"),
                alert(
                    t,
                    "traffic.error_ratio",
                    "warning",
                    source,
                    format!("{failed} of {total} requests answered 5xx since the last scrape"),
                ),
            );
        }
        if !self.metrics_cfg.counters_feed_bursts {
            return;
        }
        let bursts = [
            (
                Burst::IpValidation,
                increase(samples, last, |s| {
                    s.name == "mcp_proxy_ip_validation_rejections_total"
                }),
                "IP validation failed (from metrics)",
            ),
            (
                Burst::TlsHandshake,
                increase(samples, last, |s| {
                    s.name == "mcp_proxy_tls_handshake_failures_total"
                }),
                "tls handshake failed (from metrics)",
            ),
            (
                Burst::TokenRejected,
                increase(samples, last, |s| {
                    (s.name == "mcpt_connector_connect_failures_total"
                        && s.label("reason") == Some("token_rejected"))
                        || (s.name == "mcpt_edge_connector_handshakes_total"
                            && s.label("result") == Some("token_rejected"))
                }),
                "Tunnel token rejected (from metrics)",
            ),
        ];
        for (kind, n, what) in bursts {
            for _ in 0..n.min(10_000) {
                self.burst(out, t, kind, source, what);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::MonitorConfig;

    #[test]
    fn parses_the_exposition_format() {
        let s = parse(
            "# HELP x y\n# TYPE x counter\nx_total 3\nm{a=\"1\",b=\"q\\\"uote\\\\\"} 2.5 1700000000000\n\ng{} +Inf\n",
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[1].labels[1], ("b".into(), "q\"uote\\".into()));
        assert_eq!(s[1].value, 2.5);
        assert!(s[2].value.is_infinite());
    }

    #[test]
    fn refuses_what_is_not_the_exposition_format() {
        for (text, why) in [
            ("<html>", "no metric name"),
            ("x", "no value"),
            ("x abc", "value is not a number"),
            ("x{a=1} 2", "label value not quoted"),
            ("x{a=\"1} 2", "unterminated label value"),
            ("x{a=\"1\" b=\"2\"} 2", "expected ',' or '}' after a label"),
            ("x 1 2 3", "trailing fields"),
            ("x{a=\"\\t\"} 1", "bad escape in label value"),
            ("9x 1", "no metric name"),
        ] {
            let err = parse(&format!("ok 1\n{text}\n")).unwrap_err();
            assert_eq!(err, format!("line 2: {why}"), "{text}");
        }
    }

    fn monitor(feed: bool) -> Monitor {
        let mut m = Monitor::new(MonitorConfig::default());
        m.metrics_cfg.counters_feed_bursts = feed;
        m
    }

    const HOUR: i64 = 3_600_000;

    #[test]
    fn down_then_recovered_alerts_once_each() {
        let mut m = monitor(false);
        let a = m.observe_metrics("proxy", 0, Err("connection refused".into()));
        assert_eq!(a[0].alert, "metrics.target_down");
        assert!(
            m.observe_metrics("proxy", 1000, Err("connection refused".into()))
                .is_empty()
        );
        let a = m.observe_metrics("proxy", 2000, Ok("x 1\n"));
        assert_eq!(a[0].alert, "metrics.target_recovered");
        assert!(m.observe_metrics("proxy", 3000, Ok("x 1\n")).is_empty());
        // Down again right away: reported again, not swallowed by the quiet time.
        let a = m.observe_metrics("proxy", 4000, Ok("<html>"));
        assert_eq!(a[0].alert, "metrics.target_down");
        assert!(a[0].summary.contains("line 1: no metric name"), "{a:?}");
    }

    #[test]
    fn disconnected_connector_and_certificate_expiry() {
        let mut m = monitor(false);
        let t = 1_700_000_000_000;
        let secs = |ms: i64| ms / 1000;
        let a = m.observe_metrics("connector", t, Ok("mcpt_connector_ha_connections 0\n"));
        assert_eq!(a[0].alert, "availability.connector_disconnected");
        assert!(
            m.observe_metrics("c2", t, Ok("mcpt_connector_ha_connections 4\n"))
                .is_empty()
        );
        let body = |end: i64| format!("mcp_proxy_certificate_not_after_seconds {}\n", secs(end));
        assert!(
            m.observe_metrics("proxy", t, Ok(&body(t + 30 * 24 * HOUR)))
                .is_empty()
        );
        let a = m.observe_metrics("p2", t, Ok(&body(t + 48 * HOUR)));
        assert_eq!(
            (a[0].alert.as_str(), a[0].severity),
            ("cert.expiring", "warning")
        );
        assert!(a[0].summary.contains("(48 h left)"), "{a:?}");
        let a = m.observe_metrics("p3", t, Ok(&body(t - HOUR)));
        assert_eq!(
            (a[0].alert.as_str(), a[0].severity),
            ("cert.expired", "critical")
        );
    }

    #[test]
    fn counters_alert_on_increase_not_on_their_first_value() {
        let mut m = monitor(false);
        let scrape = |rej: u32, up: u32, ok: u32, err: u32| {
            format!(
                "mcp_proxy_certificate_reloads_total{{result=\"rejected\"}} {rej}\nmcp_proxy_upstream_errors_total{{route=\"docs\",kind=\"connect\"}} {up}\nmcp_proxy_requests_total{{route=\"docs\",status=\"200\"}} {ok}\nmcp_proxy_requests_total{{route=\"docs\",status=\"502\"}} {err}\n"
            )
        };
        // Large totals at the first scrape are history, not news.
        assert!(
            m.observe_metrics("proxy", 0, Ok(&scrape(3, 100, 1000, 900)))
                .is_empty()
        );
        assert!(
            m.observe_metrics("proxy", 1, Ok(&scrape(3, 105, 1100, 900)))
                .is_empty()
        );
        let a = m.observe_metrics("proxy", 2, Ok(&scrape(4, 112, 1105, 930)));
        let names: Vec<&str> = a.iter().map(|a| a.alert.as_str()).collect();
        assert_eq!(
            names,
            [
                "cert.reload_rejected",
                "upstream.errors",
                "traffic.error_ratio"
            ],
            "{a:?}"
        );
        // A restarted proxy starts its counters at zero: not a negative increase.
        assert!(
            m.observe_metrics("proxy", 3, Ok(&scrape(0, 0, 5, 0)))
                .is_empty()
        );
    }

    #[test]
    fn log_signals_come_from_counters_only_without_logs() {
        let body = |n: u32| {
            format!(
                "mcp_proxy_ip_validation_rejections_total{{route=\"docs\"}} {n}\nmcpt_edge_connector_handshakes_total{{result=\"token_rejected\"}} {n}\n"
            )
        };
        let mut with_logs = monitor(false);
        with_logs.observe_metrics("proxy", 0, Ok(&body(0)));
        assert!(
            with_logs
                .observe_metrics("proxy", 1, Ok(&body(5)))
                .is_empty()
        );

        let mut without = monitor(true);
        without.observe_metrics("proxy", 0, Ok(&body(0)));
        let a = without.observe_metrics("proxy", 1, Ok(&body(5)));
        let names: Vec<&str> = a.iter().map(|a| a.alert.as_str()).collect();
        assert_eq!(
            names,
            ["burst.ip_validation_failed", "burst.token_rejected"],
            "{a:?}"
        );
    }
}
