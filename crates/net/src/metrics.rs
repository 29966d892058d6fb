//! A small Prometheus text-format registry.
//!
//! Every role exposes a handful of counters and gauges; a metrics framework would bring
//! a second registry, an exporter and their dependencies for that. Families are typed
//! fields on a per-role struct, so a metric name exists in exactly one place.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// A counter family with a fixed set of label names.
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the series with these label values (in the order of the label names).
    pub fn inc(&self, label_values: &[&str]) {
        self.add(label_values, 1);
    }

    /// Adds `n` to the series. Called per request and per relayed chunk, so an existing
    /// series is found without allocating; only a new series allocates its key.
    pub fn add(&self, label_values: &[&str], n: u64) {
        debug_assert_eq!(label_values.len(), self.labels.len(), "{}", self.name);
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, v)) = values.iter_mut().find(|(k, _)| same(k, label_values)) {
            *v += n;
            return;
        }
        let key: Vec<String> = label_values.iter().map(|v| (*v).to_owned()).collect();
        values.insert(key, n);
    }

    /// The current value of one series (0 when never incremented).
    pub fn get(&self, label_values: &[&str]) -> u64 {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values
            .iter()
            .find(|(k, _)| same(k, label_values))
            .map_or(0, |(_, v)| *v)
    }

    /// Sum over every series.
    pub fn total(&self) -> u64 {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.values().sum()
    }

    pub fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if values.is_empty() && self.labels.is_empty() {
            let _ = writeln!(out, "{} 0", self.name);
        }
        for (key, v) in values.iter() {
            let _ = writeln!(out, "{}{} {v}", self.name, labels(self.labels, key));
        }
    }
}

/// A single gauge.
#[derive(Debug)]
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicI64,
}

impl Gauge {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            value: AtomicI64::new(0),
        }
    }

    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.value.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    pub fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "gauge");
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

fn same(key: &[String], label_values: &[&str]) -> bool {
    key.len() == label_values.len() && key.iter().zip(label_values).all(|(a, b)| a == b)
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (n, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{n}=\"{}\"", escape(v));
    }
    s.push('}');
    s
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A gauge that is incremented now and decremented when dropped.
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a Gauge);

impl<'a> GaugeGuard<'a> {
    pub fn new(g: &'a Gauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let c = CounterVec::new("x_total", "Things.", &["route", "status"]);
        c.inc(&["a\"b", "200"]);
        c.add(&["a\"b", "200"], 2);
        c.inc(&["c", "502"]);
        let g = Gauge::new("y", "Open.");
        {
            let _guard = GaugeGuard::new(&g);
            assert_eq!(g.get(), 1);
        }
        let mut out = String::new();
        c.render(&mut out);
        g.render(&mut out);
        assert!(out.contains("# TYPE x_total counter\n"));
        assert!(out.contains("x_total{route=\"a\\\"b\",status=\"200\"} 3\n"));
        assert!(out.contains("x_total{route=\"c\",status=\"502\"} 1\n"));
        assert!(out.contains("y 0\n"));
        assert_eq!(c.total(), 4);
    }
}
