//! The inner-TLS server certificate and the tunnel CA, against the rules of SPEC §8
//! (through `mcp_tunnel_pki::validate`, the same code the API and the client run): CA
//! rules, validity and expiry window, SAN coverage of every route, AKI/issuer/EKU, and
//! that the key belongs to the certificate.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use mcp_tunnel_pki::validate::{self, CertRuleError, fmt_unix, host_matches};

use crate::finding::{Finding, Severity};

/// What the certificate checks look at.
#[derive(Debug, Clone)]
pub struct CertInputs {
    /// Where the material came from, for evidence (`/data/tls.crt`, `k8s-secret:x/tls.crt`).
    pub cert_label: String,
    pub cert_pem: Vec<u8>,
    pub key_pem: Option<Vec<u8>>,
    pub ca_pem: Option<Vec<u8>>,
    /// Full hostnames clients will use (`<route>.<tunnel domain>` or full route keys).
    pub hosts: Vec<String>,
    pub tunnel_domain: Option<String>,
    /// Unix seconds.
    pub now: i64,
    /// Fewer days than this before notAfter is a finding.
    pub warn_days: i64,
}

pub fn check(i: &CertInputs) -> Vec<Finding> {
    let leaf = match first_cert(&i.cert_pem) {
        Ok(der) => der,
        Err(reason) => {
            return vec![Finding::fail(
                "cert.validity",
                Severity::High,
                format!("{}: {reason}", i.cert_label),
                "re-issue the server certificate (mcp-tunnel setup renew-cert)",
            )];
        }
    };
    let mut out = vec![check_validity(i, &leaf), check_san(i, &leaf)];
    out.push(check_ca(i));
    out.push(check_chain(i, &leaf));
    out.push(check_key(i, &leaf));
    out
}

fn first_cert(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    let mut it = CertificateDer::pem_slice_iter(pem);
    match it.next() {
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => Err(format!("not a PEM certificate ({e})")),
        None => Err("no PEM certificate found".into()),
    }
}

fn days(secs: i64) -> i64 {
    secs.div_euclid(86_400)
}

fn check_validity(i: &CertInputs, leaf: &[u8]) -> Finding {
    const ID: &str = "cert.validity";
    let (nb, na) = match mcp_tunnel_pki::tls::validity(leaf) {
        Ok(v) => v,
        Err(e) => {
            return Finding::fail(
                ID,
                Severity::High,
                format!("{}: cannot parse ({e})", i.cert_label),
                RENEW,
            );
        }
    };
    if i.now < nb {
        return Finding::fail(
            ID,
            Severity::High,
            format!("{} is not valid until {}", i.cert_label, fmt_unix(nb)),
            "check the clock of the host that issued it, then re-issue",
        );
    }
    if i.now >= na {
        return Finding::fail(
            ID,
            Severity::High,
            format!(
                "{} expired at {}: clients refuse every handshake",
                i.cert_label,
                fmt_unix(na)
            ),
            RENEW,
        );
    }
    let left = days(na - i.now);
    if left < i.warn_days {
        return Finding::fail(
            ID,
            Severity::Medium,
            format!(
                "{} expires in {left} days ({}), under the {}-day window",
                i.cert_label,
                fmt_unix(na),
                i.warn_days
            ),
            "renew now and check that the renewal job runs (Helm: the cert-renew CronJob; Compose: `docker compose run --rm renew-cert` from cron)",
        );
    }
    Finding::pass(
        ID,
        Severity::High,
        format!(
            "{} valid until {} ({left} days)",
            i.cert_label,
            fmt_unix(na)
        ),
    )
}

const RENEW: &str =
    "renew it: `mcp-tunnel setup renew-cert --output …` (or `mcp-tunnel rotate cert`)";

/// DNS names of the SubjectAltName extension.
pub fn san_names(leaf: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let san = cert.subject_alternative_name().map_err(|e| e.to_string())?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

fn check_san(i: &CertInputs, leaf: &[u8]) -> Finding {
    const ID: &str = "cert.san";
    let names = match san_names(leaf) {
        Ok(n) => n,
        Err(e) => {
            return Finding::fail(ID, Severity::High, format!("{}: {e}", i.cert_label), RENEW);
        }
    };
    let mut wanted = i.hosts.clone();
    if wanted.is_empty()
        && let Some(d) = &i.tunnel_domain
    {
        // Without routes, any route host must be covered: probe one.
        wanted.push(format!("route.{d}"));
    }
    if wanted.is_empty() {
        return Finding::unknown(
            ID,
            Severity::High,
            format!(
                "{} has SANs [{}] but no route or tunnel domain is known",
                i.cert_label,
                names.join(", ")
            ),
            "pass --proxy-config or --data-dir so doctor knows the route hosts",
        );
    }
    let uncovered: Vec<&String> = wanted
        .iter()
        .filter(|h| !names.iter().any(|n| host_matches(n, h)))
        .collect();
    let want_san = i
        .tunnel_domain
        .as_ref()
        .map(|d| format!("*.{d}"))
        .unwrap_or_else(|| "each route host".into());
    if uncovered.is_empty() {
        Finding::pass(
            ID,
            Severity::High,
            format!("SANs [{}] cover {}", names.join(", "), wanted.join(", ")),
        )
    } else {
        Finding::fail(
            ID,
            Severity::High,
            format!(
                "{} SANs [{}] do not cover {}: clients refuse the handshake for those routes",
                i.cert_label,
                names.join(", "),
                uncovered
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("re-issue the server certificate with SAN {want_san}"),
        )
    }
}

fn ca_der(i: &CertInputs) -> Option<Result<CertificateDer<'static>, String>> {
    i.ca_pem.as_ref().map(|p| first_cert(p))
}

fn check_ca(i: &CertInputs) -> Finding {
    const ID: &str = "cert.ca";
    let Some(pem) = &i.ca_pem else {
        return Finding::unknown(
            ID,
            Severity::High,
            "no CA certificate given (ca.crt)",
            "pass --data-dir (with ca.crt) or --ca-file",
        );
    };
    let text = String::from_utf8_lossy(pem);
    match validate::validate_ca_pem(&text, i.now) {
        Ok(info) => {
            let left = days(info.not_after - i.now);
            if left < i.warn_days {
                Finding::fail(
                    ID,
                    Severity::Medium,
                    format!(
                        "CA {} expires in {left} days ({})",
                        info.subject,
                        fmt_unix(info.not_after)
                    ),
                    "rotate the CA: `mcp-tunnel rotate ca` (new CA in the second slot, then archive the old)",
                )
            } else {
                Finding::pass(
                    ID,
                    Severity::High,
                    format!(
                        "CA {} ({}, {}) meets SPEC §8, valid until {}",
                        info.subject,
                        info.key,
                        &info.fingerprint[..16],
                        fmt_unix(info.not_after)
                    ),
                )
            }
        }
        Err(e) => Finding::fail(
            ID,
            Severity::High,
            format!("CA certificate: {e}"),
            "generate a new CA that meets the rules (mcp-tunnel setup init on an empty output, or the documented openssl recipe) and register it",
        ),
    }
}

/// Issuer, AKI = CA SKI, key and signature strength, EKU: checked with the leaf's own
/// SAN and a time inside its validity, so only chain problems show here (validity and
/// SAN have their own findings).
fn check_chain(i: &CertInputs, leaf: &[u8]) -> Finding {
    const ID: &str = "cert.chain";
    let ca = match ca_der(i) {
        None => {
            return Finding::unknown(
                ID,
                Severity::High,
                "no CA certificate to check the server certificate against",
                "pass --data-dir (with ca.crt) or --ca-file",
            );
        }
        Some(Err(e)) => {
            return Finding::fail(
                ID,
                Severity::High,
                format!("CA certificate: {e}"),
                "fix ca.crt",
            );
        }
        Some(Ok(c)) => c,
    };
    let host = san_names(leaf)
        .ok()
        .and_then(|n| n.into_iter().next())
        .map(|n| n.replace('*', "doctor"))
        .unwrap_or_else(|| "doctor.invalid".into());
    let Ok((nb, na)) = mcp_tunnel_pki::tls::validity(leaf) else {
        return Finding::fail(
            ID,
            Severity::High,
            format!("{} cannot be parsed", i.cert_label),
            RENEW,
        );
    };
    // A moment both certificates are valid at, as near now as possible; validity has
    // its own findings.
    let (cnb, cna) = mcp_tunnel_pki::tls::validity(&ca).unwrap_or((nb, na));
    let (lo, hi) = (nb.max(cnb), na.min(cna));
    let at = if lo <= hi { i.now.clamp(lo, hi) } else { i.now };
    let ski = validate::validate_ca_der(&ca, at)
        .map(|c| hex::encode(c.subject_key_id))
        .unwrap_or_default();
    match validate::validate_server_cert(leaf, &[], &[ca.as_ref()], &host, at) {
        Ok(()) => Finding::pass(
            ID,
            Severity::High,
            format!(
                "{} is signed by the CA, AKI matches its SKI {ski}, EKU serverAuth",
                i.cert_label
            ),
        ),
        Err(CertRuleError::SanMismatch { .. } | CertRuleError::MissingSan) => Finding::pass(
            ID,
            Severity::High,
            format!(
                "{} is signed by the CA and its AKI matches the SKI {ski}",
                i.cert_label
            ),
        ),
        Err(e) => Finding::fail(
            ID,
            Severity::High,
            format!("{}: {e}", i.cert_label),
            "re-issue the server certificate from the registered CA (mcp-tunnel setup renew-cert signs with the stored ca.key)",
        ),
    }
}

fn check_key(i: &CertInputs, leaf: &CertificateDer<'static>) -> Finding {
    const ID: &str = "cert.key_match";
    let Some(key_pem) = &i.key_pem else {
        return Finding::unknown(
            ID,
            Severity::High,
            "no private key given (tls.key)",
            "pass --data-dir or --proxy-config",
        );
    };
    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(k) => k,
        Err(e) => {
            return Finding::fail(
                ID,
                Severity::High,
                format!("the private key is not PEM: {e}"),
                RENEW,
            );
        }
    };
    let provider = mcp_tunnel_pki::tls::provider();
    let signing = match provider.key_provider.load_private_key(key) {
        Ok(k) => k,
        Err(e) => {
            return Finding::fail(
                ID,
                Severity::High,
                format!("unsupported private key: {e}"),
                RENEW,
            );
        }
    };
    let ck = rustls::sign::CertifiedKey::new(vec![leaf.clone()], signing);
    match ck.keys_match() {
        Ok(()) => Finding::pass(
            ID,
            Severity::High,
            "the private key belongs to the certificate",
        ),
        Err(_) => Finding::fail(
            ID,
            Severity::High,
            format!(
                "the private key does not belong to {}: the proxy refuses to start or keeps the old pair",
                i.cert_label
            ),
            "write tls.crt and tls.key from the same issuance",
        ),
    }
}
