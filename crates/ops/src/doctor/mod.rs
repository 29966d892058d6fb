//! `mcp-tunnel doctor`: audits a deployment against every practice of the security
//! guide (SPEC §10) and reports one [`Finding`] per check.
//!
//! Inputs are all optional; a check whose input is missing reports `unknown` rather than
//! passing. Nothing here changes the deployment: the only requests sent are the API's
//! reads and, for the OAuth check, one unauthenticated MCP `initialize` per upstream
//! (to loopback upstreams, or all with `probe_upstreams`).

pub mod api;
pub mod certs;
pub mod deploy;
pub mod files;
pub mod firewall;
pub mod oauth;
pub mod upstream;

use std::path::PathBuf;
use std::time::SystemTime;

use mcp_tunnel_control::client::ApiClient;
use mcp_tunnel_net::listen::ListenAddr;
use mcp_tunnel_proxy::ProxyConfig;
use mcp_tunnel_proxy::config::LogLevel;
use mcp_tunnel_proxy::guard::Resolver;

use crate::compose::ComposeFile;
use crate::finding::{Finding, Report, Severity};
use crate::k8s::KubeClient;
use crate::setup_output::{self, SetupOutput};

/// What to audit. Every field is optional input.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub proxy_config: Option<PathBuf>,
    /// `-tunnel-domain` as given to the proxy, if it overrides the config.
    pub tunnel_domain: Option<String>,
    /// The setup output directory (SPEC §9).
    pub data_dir: Option<PathBuf>,
    /// Or the setup output Secret, read through `kube`.
    pub secret: Option<String>,
    pub kube: Option<KubeClient>,
    /// The tunnel CA certificate when it is not in the setup output.
    pub ca_file: Option<PathBuf>,
    pub compose: Option<PathBuf>,
    /// Where the Docker host's firewall rules come from, for `network.reach`.
    pub firewall: Option<FirewallSource>,
    pub helm_values: Option<PathBuf>,
    pub api: Option<ApiClient>,
    /// Token rotation policy in days.
    pub rotation_days: u32,
    /// Certificates with fewer days left fail.
    pub cert_warn_days: i64,
    /// Probe upstreams that are not on loopback too.
    pub probe_upstreams: bool,
    /// Path of the MCP endpoint on each upstream.
    pub mcp_path: String,
    pub now: SystemTime,
}

/// Where `network.reach` reads a Docker host's firewall from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallSource {
    /// The output of `iptables-save -t filter`, saved to a file.
    File(PathBuf),
    /// `iptables-save` run here (doctor runs on the Docker host).
    Host,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            proxy_config: None,
            tunnel_domain: None,
            data_dir: None,
            secret: None,
            kube: None,
            ca_file: None,
            compose: None,
            firewall: None,
            helm_values: None,
            api: None,
            rotation_days: 90,
            cert_warn_days: 30,
            probe_upstreams: false,
            mcp_path: "/mcp".into(),
            now: SystemTime::now(),
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs every check whose inputs are present.
pub async fn run(o: &DoctorOptions, resolver: &dyn Resolver) -> Report {
    let mut r = Report::default();
    let output = load_output(o, &mut r).await;
    let helm = load_helm(o, &mut r);
    let domain_hint = o
        .tunnel_domain
        .clone()
        .or_else(|| output.as_ref().and_then(SetupOutput::tunnel_domain));
    let config = load_config(o, helm.as_ref(), domain_hint.as_deref(), &mut r);
    let from_helm = o.proxy_config.is_none() && helm.is_some();
    let domain = config
        .as_ref()
        .and_then(|c| c.tunnel_domain.clone())
        .or(domain_hint);

    if let Some(c) = &config {
        let routes = upstream::route_addrs(c, resolver).await;
        r.extend(upstream::check(c, &routes));
        r.extend(check_proxy(c, from_helm));
        check_oauth(o, c, &mut r).await;
    }
    check_certs(
        o,
        config.as_ref(),
        output.as_ref(),
        domain.as_deref(),
        &mut r,
    );
    if let Some(out) = &output {
        r.extend(files::check_output(out));
    }
    if let Some(c) = &config
        && !from_helm
    {
        let same = output
            .as_ref()
            .and_then(|out| out.entries.get(setup_output::TLS_KEY))
            .and_then(|e| e.path.as_ref())
            .is_some_and(|p| same_file(p, &c.tls.key_file));
        if !same && c.tls.key_file.exists() {
            r.push(files::check_file("proxy_tls_key", &c.tls.key_file));
        }
    }
    let firewall = match &o.firewall {
        None => None,
        Some(FirewallSource::File(p)) => Some(firewall::check_file(p)),
        Some(FirewallSource::Host) => Some(firewall::check_host().await),
    };
    if let Some(path) = &o.compose {
        match ComposeFile::load(path) {
            Ok(cf) => r.extend(
                deploy::check_compose(&cf, &path.display().to_string())
                    .into_iter()
                    // The rules themselves say more than the compose file's note.
                    .filter(|f| firewall.is_none() || f.id != "network.reach"),
            ),
            Err(e) => r.push(Finding::fail(
                "compose.file",
                Severity::Medium,
                e.to_string(),
                "fix the compose file",
            )),
        }
    }
    if let (Some(values), Some(path)) = (&helm, &o.helm_values) {
        r.extend(deploy::check_helm(values, &path.display().to_string()));
    }
    let no_deployment = o.compose.is_none() && o.helm_values.is_none();
    if let Some(f) = firewall {
        r.push(f);
    } else if no_deployment {
        r.push(Finding::unknown(
            "network.reach",
            Severity::Medium,
            "no --compose or --helm-values given: the proxy's and connector's network reach cannot be checked",
            "pass the deployment's compose file or Helm values",
        ));
    }
    if no_deployment {
        r.push(Finding::unknown(
            "images.digest",
            Severity::Medium,
            "no --compose or --helm-values given: image pinning cannot be checked",
            "pass the deployment's compose file or Helm values",
        ));
    }
    check_api(o, output.as_ref(), &mut r).await;
    r
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

async fn load_output(o: &DoctorOptions, r: &mut Report) -> Option<SetupOutput> {
    if let Some(dir) = &o.data_dir {
        return match SetupOutput::read_dir(dir) {
            Ok(out) => Some(out),
            Err(e) => {
                r.push(Finding::fail(
                    "setup.output",
                    Severity::High,
                    e.to_string(),
                    "pass the directory setup init wrote (--data-dir)",
                ));
                None
            }
        };
    }
    let (Some(name), Some(kube)) = (&o.secret, &o.kube) else {
        return None;
    };
    match kube.get_secret(name).await {
        Ok(Some(data)) => Some(SetupOutput::from_secret(name, data)),
        Ok(None) => {
            r.push(Finding::fail(
                "setup.output",
                Severity::High,
                format!("Secret {}/{name} does not exist", kube.namespace),
                "run setup init (the chart's setup Job) or name the right Secret",
            ));
            None
        }
        Err(e) => {
            r.push(Finding::unknown(
                "setup.output",
                Severity::High,
                e.to_string(),
                "check --kube-api-url, the token and RBAC (get secrets)",
            ));
            None
        }
    }
}

fn load_helm(o: &DoctorOptions, r: &mut Report) -> Option<serde_json::Value> {
    let path = o.helm_values.as_ref()?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            r.push(Finding::fail(
                "helm.values",
                Severity::Medium,
                format!("{}: {}", path.display(), mcp_tunnel_pki::tls::io_reason(&e)),
                "pass a readable values file",
            ));
            return None;
        }
    };
    match serde_saphyr::from_str::<serde_json::Value>(&text) {
        Ok(v) if v.is_null() => Some(deploy::helm_values(&serde_json::json!({}))),
        Ok(v) => Some(deploy::helm_values(&v)),
        Err(e) => {
            r.push(Finding::fail(
                "helm.values",
                Severity::Medium,
                format!("{}: invalid YAML: {e}", path.display()),
                "fix the values file",
            ));
            None
        }
    }
}

fn load_config(
    o: &DoctorOptions,
    helm: Option<&serde_json::Value>,
    domain: Option<&str>,
    r: &mut Report,
) -> Option<ProxyConfig> {
    if let Some(path) = &o.proxy_config {
        return match ProxyConfig::load(path, o.tunnel_domain.as_deref()) {
            Ok(c) => {
                r.push(Finding::pass(
                    "proxy.config",
                    Severity::High,
                    format!("{} loads and validates", path.display()),
                ));
                Some(c)
            }
            Err(e) => {
                r.push(Finding::fail(
                    "proxy.config",
                    Severity::High,
                    format!("{}: {e}", path.display()),
                    "fix the configuration: the proxy refuses to start with it",
                ));
                None
            }
        };
    }
    let yaml = deploy::helm_proxy_yaml(helm?)?;
    // Managed mode takes the tunnel domain from the Secret: use what we know, else a
    // stand-in so bare route names still validate.
    let domain = domain.unwrap_or("tunnel.invalid");
    match ProxyConfig::from_yaml(&yaml, Some(domain)) {
        Ok(c) => Some(c),
        Err(e) => {
            r.push(Finding::fail(
                "proxy.config",
                Severity::High,
                format!("gateway.config in the Helm values: {e}"),
                "fix gateway.config: the proxy refuses to start with it",
            ));
            None
        }
    }
}

fn is_loopback_listen(a: &ListenAddr) -> bool {
    match a {
        ListenAddr::AllInterfaces { .. } => false,
        ListenAddr::Addr(s) => s.ip().is_loopback(),
    }
}

fn check_proxy(c: &ProxyConfig, from_helm: bool) -> Vec<Finding> {
    let mut v = Vec::new();
    v.push(if c.log_level == LogLevel::Debug {
        Finding::fail(
            "logging.level",
            Severity::Low,
            "log_level is debug: verbose logs in production bury the warnings monitoring must see",
            "set log_level: info (or warn)",
        )
    } else {
        Finding::pass(
            "logging.level",
            Severity::Low,
            format!("log_level is {}", c.log_level.as_str()),
        )
    });
    if !from_helm {
        v.push(if is_loopback_listen(&c.listen_addr) {
            Finding::pass("proxy.listen", Severity::Medium, format!("listen_addr {} is loopback: only the connector beside it can connect", c.listen_addr))
        } else {
            Finding::fail(
                "proxy.listen",
                Severity::Medium,
                format!("listen_addr {} accepts connections from the network; only the connector needs it", c.listen_addr),
                "listen on 127.0.0.1:8080 and run the connector in the proxy's network namespace (as deploy/compose does)",
            )
        });
        if let Some(admin) = &c.admin_addr
            && !is_loopback_listen(admin)
        {
            v.push(Finding::fail(
                "proxy.admin_listen",
                Severity::Low,
                format!("admin_addr {admin} serves /metrics to the network"),
                "bind admin_addr to 127.0.0.1 unless a scraper outside the host needs it (then firewall it)",
            ));
        }
    }
    v
}

async fn check_oauth(o: &DoctorOptions, c: &ProxyConfig, r: &mut Report) {
    let http = match oauth::client(c.upstream.tls.ca_file.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            r.push(Finding::unknown(
                "oauth",
                Severity::High,
                format!("cannot build an HTTP client: {e}"),
                "check upstream.tls.ca_file",
            ));
            return;
        }
    };
    for route in c.routes.iter() {
        let host = &route.upstream.host;
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback());
        let target = oauth::ProbeTarget {
            route: route.name.clone(),
            origin: route.upstream.to_string(),
            allowed: loopback || o.probe_upstreams,
        };
        r.push(oauth::probe(&http, &target, &o.mcp_path).await);
    }
}

/// Full hostnames clients use for the routes.
pub fn route_hosts(c: &ProxyConfig, domain: Option<&str>) -> Vec<String> {
    c.routes
        .iter()
        .filter_map(|rt| {
            if rt.name.contains('.') {
                Some(rt.name.clone())
            } else {
                domain.map(|d| format!("{}.{d}", rt.name))
            }
        })
        .collect()
}

fn check_certs(
    o: &DoctorOptions,
    c: Option<&ProxyConfig>,
    out: Option<&SetupOutput>,
    domain: Option<&str>,
    r: &mut Report,
) {
    let from_output = out.and_then(|out| {
        let cert = out.entries.get(setup_output::TLS_CERT)?;
        Some((
            format!("{}/{}", out.source, setup_output::TLS_CERT),
            cert.bytes.clone(),
            out.entries
                .get(setup_output::TLS_KEY)
                .map(|k| k.bytes.clone()),
        ))
    });
    let from_config = || {
        let c = c?;
        let cert = std::fs::read(&c.tls.cert_file).ok()?;
        Some((
            c.tls.cert_file.display().to_string(),
            cert,
            std::fs::read(&c.tls.key_file).ok(),
        ))
    };
    let Some((label, cert_pem, key_pem)) = from_output.or_else(from_config) else {
        if out.is_some() || c.is_some() {
            r.push(Finding::unknown(
                "cert.validity",
                Severity::High,
                "no readable server certificate (tls.crt in the setup output or tls.cert_file)",
                "run doctor where the certificate is readable, or pass --data-dir",
            ));
        }
        return;
    };
    let ca_pem = match &o.ca_file {
        Some(p) => std::fs::read(p).ok(),
        None => out
            .and_then(|o| o.entries.get(setup_output::CA_CERT))
            .map(|e| e.bytes.clone()),
    };
    let hosts = c.map(|c| route_hosts(c, domain)).unwrap_or_default();
    r.extend(certs::check(&certs::CertInputs {
        cert_label: label,
        cert_pem,
        key_pem,
        ca_pem,
        hosts,
        tunnel_domain: domain.map(str::to_owned),
        now: unix(o.now),
        warn_days: o.cert_warn_days,
    }));
}

async fn check_api(o: &DoctorOptions, out: Option<&SetupOutput>, r: &mut Report) {
    let tunnel_id = out.and_then(SetupOutput::tunnel_id);
    let Some(api) = &o.api else {
        r.push(Finding::unknown(
            "org.sso",
            Severity::Medium,
            "no --api-url given: SSO enforcement cannot be checked",
            "pass --api-url and an org:admin key in MCP_TUNNEL_API_KEY",
        ));
        token_age_from_file(o, out, r);
        return;
    };
    r.push(api::check_sso(api).await);
    let Some(id) = tunnel_id else {
        token_age_from_file(o, out, r);
        return;
    };
    r.push(api::check_tunnel(api, &id).await);
    if let Some(ca) = out.and_then(|o| o.entries.get(setup_output::CA_CERT))
        && let Ok(der) = certs_first_der(&ca.bytes)
    {
        let fp = mcp_tunnel_pki::crypto::sha256_hex(&der);
        r.push(api::check_registered_ca(api, &id, &fp).await);
    }
    match api::token_event(api, &id).await {
        Ok(Some((action, time, ms))) => {
            let age = unix(o.now) - ms / 1000;
            r.push(files::token_age(
                age,
                &files::TokenAgeSource::Audit { action, time },
                o.rotation_days,
            ));
        }
        _ => token_age_from_file(o, out, r),
    }
}

fn certs_first_der(pem: &[u8]) -> Result<Vec<u8>, ()> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .map(|c| c.to_vec())
        .ok_or(())
}

fn token_age_from_file(o: &DoctorOptions, out: Option<&SetupOutput>, r: &mut Report) {
    let entry = out.and_then(|o| o.entries.get(setup_output::TUNNEL_TOKEN));
    match entry.and_then(|e| Some((e.modified?, e.path.clone()?))) {
        Some((mtime, path)) => r.push(files::token_age(
            files::age_of(mtime, o.now),
            &files::TokenAgeSource::FileMtime { path: path.display().to_string() },
            o.rotation_days,
        )),
        None => r.push(Finding::unknown(
            "token.age",
            Severity::Medium,
            "the token's age is unknown: no audit log (pass --api-url with an org:admin key) and no tunnel-token file",
            "pass --api-url, or --data-dir with the setup output",
        )),
    }
}
