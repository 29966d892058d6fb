//! The monitor over recorded log streams: two files merged in time order, a learned
//! request rate, then a spike, a new route, and warnings from another component.

use mcp_tunnel_ops::incident::LogSource;
use mcp_tunnel_ops::monitor::follow::replay;
use mcp_tunnel_ops::monitor::{Monitor, MonitorConfig};
use mcp_tunnel_ops::timefmt::fmt_ms;

fn rec(t: i64, level: &str, msg: &str, route: Option<&str>) -> String {
    let mut v = serde_json::json!({"timestamp": fmt_ms(t), "level": level, "message": msg, "target": "mcp_tunnel_proxy"});
    if let Some(r) = route {
        v["route"] = r.into();
        v["status"] = 200.into();
    }
    v.to_string()
}

#[test]
fn recorded_streams_replay_into_ordered_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_795_600_000_000i64;
    let mut proxy = String::new();
    // Twenty minutes of ~6 requests a minute on two routes.
    for i in 0..120 {
        let route = if i % 2 == 0 { "docs" } else { "wiki" };
        proxy += &rec(t0 + i * 10_000, "INFO", "request completed", Some(route));
        proxy.push('\n');
    }
    // Minute 21: 60 requests on docs, then one on a route never seen.
    for i in 0..60 {
        proxy += &rec(
            t0 + 1_260_000 + i * 900,
            "INFO",
            "request completed",
            Some("docs"),
        );
        proxy.push('\n');
    }
    proxy += &rec(
        t0 + 1_320_500,
        "INFO",
        "request completed",
        Some("internal-admin"),
    );
    proxy.push('\n');
    let mut connector = String::new();
    connector += &rec(
        t0 + 600_000,
        "WARN",
        "connection to the edge lost; reconnecting",
        None,
    );
    connector.push('\n');
    connector += "not a log record\n";
    std::fs::write(dir.path().join("proxy.log"), proxy).unwrap();
    std::fs::write(dir.path().join("connector.log"), connector).unwrap();
    let sources = [
        LogSource {
            name: "proxy".into(),
            path: dir.path().join("proxy.log"),
        },
        LogSource {
            name: "connector".into(),
            path: dir.path().join("connector.log"),
        },
    ];
    let mut m = Monitor::new(MonitorConfig {
        learn_ms: 1_200_000,
        spike_min_requests: 20,
        ..MonitorConfig::default()
    });
    let alerts = replay(&sources, &mut m).unwrap();
    let got: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| (a.alert.as_str(), a.source.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("log.warning", "connector"),
            ("traffic.request_spike", "proxy"),
            ("traffic.new_route", "proxy")
        ],
        "{alerts:#?}"
    );
    assert!(alerts[2].summary.contains("internal-admin"));
    // Replays are deterministic.
    let again = replay(
        &sources,
        &mut Monitor::new(MonitorConfig {
            learn_ms: 1_200_000,
            spike_min_requests: 20,
            ..MonitorConfig::default()
        }),
    )
    .unwrap();
    assert_eq!(again, alerts);
}
