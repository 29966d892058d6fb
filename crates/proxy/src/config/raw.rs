//! The file format as serde sees it: every field optional and stringly typed, unknown fields
//! refused. Validation into real types happens in the parent module, so that every error
//! can name its field in our words rather than the YAML library's.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub listen_addr: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub tunnel_domain: Option<String>,
    pub tls: Option<RawTls>,
    pub routes: Option<RawRoutes>,
    pub upstream: Option<RawUpstream>,
    pub admin_addr: Option<String>,
    pub limits: Option<RawLimits>,
    pub client_auth: Option<RawClientAuth>,
    pub preserve_host: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub allowed_ips: Option<Vec<String>>,
    pub disable_ip_validation: Option<bool>,
    pub tls: Option<RawUpstreamTls>,
    pub connect_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub ca_file: Option<String>,
    pub include_system_cas: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_header_bytes: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub max_concurrent_streams: Option<u32>,
    pub handshake_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientAuth {
    pub ca_file: Option<String>,
}

/// `routes` as written. A YAML list is accepted here and refused during validation, so the
/// error text is ours (a Go-compatible message operators search for) and not the parser's.
#[derive(Debug)]
pub(super) enum RawRoutes {
    /// Entries in file order; a null value stays `None` so the error can name the route.
    Map(Vec<(String, Option<String>)>),
    List,
}

impl<'de> Deserialize<'de> for RawRoutes {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RoutesVisitor)
    }
}

struct RoutesVisitor;

impl<'de> Visitor<'de> for RoutesVisitor {
    type Value = RawRoutes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of route name to upstream URL")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRoutes, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Option<String>>()? {
            entries.push((key, value));
        }
        Ok(RawRoutes::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRoutes, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawRoutes::List)
    }
}

/// The section an unknown field was found in, recognised by the field list serde reports
/// for it. Each section has a field no other section has; the tests in `config_errors.rs`
/// put an unknown field in every section and check the path, so a renamed field that
/// breaks this mapping fails there.
pub(super) fn section_of(expected: &[&str]) -> &'static str {
    let has = |f: &str| expected.contains(&f);
    if has("listen_addr") {
        ""
    } else if has("cert_file") {
        "tls"
    } else if has("allowed_ips") {
        "upstream"
    } else if has("include_system_cas") {
        "upstream.tls"
    } else if has("max_header_bytes") {
        "limits"
    } else if has("ca_file") {
        "client_auth"
    } else {
        ""
    }
}
