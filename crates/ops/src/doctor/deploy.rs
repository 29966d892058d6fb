//! Deployment artifacts: images pinned by digest, network reach limited (NetworkPolicy
//! in Kubernetes, a host firewall with Compose), the proxy reachable only by the
//! connector, container hardening, alert rules.

use serde_json::Value;

use crate::compose::ComposeFile;
use crate::finding::{Finding, Severity};

/// The chart's own defaults: a values file overrides them, so a key it omits has the
/// chart's value, not "unset".
const CHART_VALUES: &str = include_str!("../../../../deploy/helm/mcp-tunnel/values.yaml");

/// Whether `image` names a digest (`…@sha256:<64 hex>`); a digest of zeros is the
/// documented placeholder, not a pin.
pub fn digest_state(image: &str) -> DigestState {
    let Some((_, digest)) = image.rsplit_once("@sha256:") else {
        return DigestState::Unpinned;
    };
    if digest.len() != 64
        || !digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return DigestState::Unpinned;
    }
    if digest.bytes().all(|b| b == b'0') {
        return DigestState::Placeholder;
    }
    DigestState::Pinned
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestState {
    Pinned,
    Placeholder,
    Unpinned,
}

const DIGEST_FIX: &str = "pin every image by digest (repo@sha256:<digest> from `docker buildx imagetools inspect`), \
     and update it deliberately when a new release is out";

/// Compose: images, hardening, proxy exposure and the firewall note.
pub fn check_compose(c: &ComposeFile, label: &str) -> Vec<Finding> {
    // Services sharing one image are reported together.
    let mut by_image: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    let mut hardening = Vec::new();
    let mut published = Vec::new();
    for (name, svc) in c.services() {
        if let Some(image) = svc.get("image").and_then(Value::as_str) {
            by_image.entry(image).or_default().push(name);
        }
        hardening.extend(hardening_gaps(name, svc));
        if svc
            .get("ports")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty())
        {
            published.push(name.to_owned());
        }
    }
    let mut pinned = Vec::new();
    let mut bad = Vec::new();
    for (image, names) in by_image {
        let who = names.join(", ");
        match c.interpolate(image) {
            Err(e) => bad.push(format!("{who}: image {image:?} cannot be resolved ({e})")),
            Ok(img) => match digest_state(&img) {
                DigestState::Pinned => pinned.push(format!("{who}: {img}")),
                DigestState::Placeholder => {
                    bad.push(format!("{who}: {img} is the all-zero placeholder digest"))
                }
                DigestState::Unpinned => bad.push(format!("{who}: {img} is not pinned by digest")),
            },
        }
    }
    let images = if bad.is_empty() && !pinned.is_empty() {
        Finding::pass(
            "images.digest",
            Severity::Medium,
            format!("{label}: {}", pinned.join("; ")),
        )
    } else if bad.is_empty() {
        Finding::unknown(
            "images.digest",
            Severity::Medium,
            format!("{label}: no service names an image"),
            DIGEST_FIX,
        )
    } else {
        Finding::fail(
            "images.digest",
            Severity::Medium,
            format!("{label}: {}", bad.join("; ")),
            DIGEST_FIX,
        )
    };
    let hard = if hardening.is_empty() {
        Finding::pass(
            "compose.hardening",
            Severity::Low,
            format!(
                "{label}: every service runs non-root, read-only, without capabilities or privilege escalation"
            ),
        )
    } else {
        Finding::fail(
            "compose.hardening",
            Severity::Low,
            format!("{label}: {}", hardening.join("; ")),
            "give every service user: \"65532:65532\", read_only: true, cap_drop: [ALL], security_opt: [\"no-new-privileges:true\"] (as deploy/compose/customer does)",
        )
    };
    let reach = if published.is_empty() {
        Finding::pass(
            "network.proxy_exposure",
            Severity::Medium,
            format!("{label}: no service publishes a port; the tunnel needs no inbound port"),
        )
    } else {
        Finding::fail(
            "network.proxy_exposure",
            Severity::Medium,
            format!(
                "{label}: services publish ports on the host: {}",
                published.join(", ")
            ),
            "remove `ports:`; the connector shares the proxy's network namespace (network_mode: service:mcp-proxy) and dials out",
        )
    };
    let firewall = Finding::unknown(
        "network.reach",
        Severity::Medium,
        format!(
            "{label}: Compose cannot limit egress; whether a host firewall does cannot be seen from here"
        ),
        "run doctor with --host-firewall on the Docker host (or --firewall-rules FILE with its `iptables-save -t filter`) \
         to check it; allow the stack's egress only to the edge (TCP+UDP 7844) and the MCP servers' addresses and \
         ports, with rules in the DOCKER-USER chain matching the compose network's subnet",
    );
    vec![images, hard, reach, firewall]
}

fn hardening_gaps(name: &str, svc: &Value) -> Vec<String> {
    let mut gaps = Vec::new();
    match svc.get("user").and_then(Value::as_str) {
        None => gaps.push(format!("{name} has no user (runs as the image's user)")),
        Some(u) if u == "0" || u.starts_with("0:") || u == "root" => {
            gaps.push(format!("{name} runs as root"))
        }
        Some(_) => {}
    }
    if svc.get("read_only") != Some(&Value::Bool(true)) {
        gaps.push(format!("{name} has a writable root filesystem"));
    }
    let drops_all = svc
        .get("cap_drop")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|c| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case("ALL")))
        });
    if !drops_all {
        gaps.push(format!("{name} keeps capabilities"));
    }
    let nnp = svc
        .get("security_opt")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|o| {
                o.as_str()
                    .is_some_and(|o| o.starts_with("no-new-privileges") && !o.ends_with("false"))
            })
        });
    if !nnp {
        gaps.push(format!("{name} lacks no-new-privileges"));
    }
    gaps
}

/// Helm values merged over the chart's defaults.
pub fn helm_values(user: &Value) -> Value {
    let mut base: Value = serde_saphyr::from_str(CHART_VALUES).unwrap_or(Value::Null);
    merge(&mut base, user);
    base
}

fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

/// Helm: image digest, NetworkPolicy (ingress and egress), alert rules.
pub fn check_helm(values: &Value, label: &str) -> Vec<Finding> {
    let mut v = Vec::new();
    let digest = at(values, "image.digest").as_str().unwrap_or("");
    let repo = at(values, "image.repository").as_str().unwrap_or("");
    v.push(if digest.is_empty() {
        Finding::fail(
            "images.digest",
            Severity::Medium,
            format!("{label}: image.digest is empty, so {repo} is pulled by tag"),
            "set image.digest to sha256:<digest> of the release you run",
        )
    } else {
        match digest_state(&format!("{repo}@{digest}")) {
            DigestState::Pinned => Finding::pass(
                "images.digest",
                Severity::Medium,
                format!("{label}: {repo}@{digest}"),
            ),
            DigestState::Placeholder => Finding::fail(
                "images.digest",
                Severity::Medium,
                format!("{label}: image.digest is the all-zero placeholder"),
                DIGEST_FIX,
            ),
            DigestState::Unpinned => Finding::fail(
                "images.digest",
                Severity::Medium,
                format!("{label}: image.digest {digest:?} is not sha256:<64 lowercase hex>"),
                DIGEST_FIX,
            ),
        }
    });
    let np = at(values, "networkPolicy.enabled")
        .as_bool()
        .unwrap_or(false);
    let ingress = np
        && at(values, "networkPolicy.ingress.enabled")
            .as_bool()
            .unwrap_or(false);
    v.push(if ingress {
        Finding::pass("network.policy", Severity::Medium, format!("{label}: NetworkPolicy denies ingress to the release's pods"))
    } else {
        Finding::fail(
            "network.policy",
            Severity::Medium,
            format!("{label}: networkPolicy.enabled={np}, networkPolicy.ingress.enabled={}: any pod in the cluster can reach the proxy's pod", at(values, "networkPolicy.ingress.enabled")),
            "set networkPolicy.enabled: true and networkPolicy.ingress.enabled: true",
        )
    });
    let egress = np
        && at(values, "networkPolicy.egress.enabled")
            .as_bool()
            .unwrap_or(false);
    let edge_cidrs = at(values, "networkPolicy.egress.edge.cidrs")
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    v.push(if egress && edge_cidrs > 0 {
        Finding::pass("network.reach", Severity::Medium, format!("{label}: egress limited to DNS, the edge ({edge_cidrs} CIDR(s)) and the MCP servers"))
    } else if egress {
        Finding::fail("network.reach", Severity::Medium, format!("{label}: egress policy on but networkPolicy.egress.edge.cidrs is empty: the connector cannot reach the edge"), "list the edge's addresses in networkPolicy.egress.edge.cidrs")
    } else {
        Finding::fail(
            "network.reach",
            Severity::Medium,
            format!("{label}: networkPolicy.egress.enabled is false: the proxy and connector can reach any address"),
            "set networkPolicy.egress.enabled: true with networkPolicy.egress.edge.cidrs (and mcpServers, or rely on upstream.allowed_ips)",
        )
    });
    let rules = at(values, "metrics.prometheusRule.enabled")
        .as_bool()
        .unwrap_or(false);
    v.push(if rules {
        Finding::pass("monitoring.alerts", Severity::Low, format!("{label}: the PrometheusRule with the monitor's alerts is enabled"))
    } else {
        Finding::fail("monitoring.alerts", Severity::Low, format!("{label}: metrics.prometheusRule.enabled is false: nothing alerts on IP-validation failures, handshake failures or token rejections"), "set metrics.prometheusRule.enabled: true (needs the Prometheus Operator), or run `mcp-tunnel monitor`")
    });
    v
}

/// The proxy configuration the chart would render, as YAML: `gateway.config` plus the
/// fields the chart always sets.
pub fn helm_proxy_yaml(values: &Value) -> Option<String> {
    let mut cfg = at(values, "gateway.config").clone();
    let obj = cfg.as_object_mut()?;
    obj.insert("listen_addr".into(), "127.0.0.1:8080".into());
    obj.insert("admin_addr".into(), "0.0.0.0:9091".into());
    obj.insert("tls".into(), serde_json::json!({"cert_file": "/etc/mcp-tunnel/tls/tls.crt", "key_file": "/etc/mcp-tunnel/tls/tls.key"}));
    if obj
        .get("tunnel_domain")
        .and_then(Value::as_str)
        .is_some_and(str::is_empty)
    {
        obj.remove("tunnel_domain");
    }
    if obj
        .get("routes")
        .and_then(Value::as_object)
        .is_some_and(|m| m.is_empty())
    {
        return None;
    }
    serde_json::to_string(&cfg).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let d = "a".repeat(64);
        assert_eq!(
            digest_state(&format!("r/x@sha256:{d}")),
            DigestState::Pinned
        );
        assert_eq!(
            digest_state(&format!("r/x:1@sha256:{}", "0".repeat(64))),
            DigestState::Placeholder
        );
        assert_eq!(digest_state("r/x:1.2"), DigestState::Unpinned);
        assert_eq!(
            digest_state(&format!("r/x@sha256:{}", "A".repeat(64))),
            DigestState::Unpinned
        );
        assert_eq!(digest_state("r/x@sha256:abc"), DigestState::Unpinned);
    }

    #[test]
    fn chart_defaults_apply_under_a_values_file() {
        let v = helm_values(&serde_json::json!({"image": {"digest": "sha256:x"}}));
        assert_eq!(at(&v, "networkPolicy.enabled"), true);
        assert_eq!(
            at(&v, "image.repository"),
            "registry.example.com/mcp-tunnel"
        );
        assert_eq!(at(&v, "image.digest"), "sha256:x");
    }
}
