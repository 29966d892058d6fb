//! Server-certificate rules: what the client enforces on the proxy during inner TLS.

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::{CertRole, CertRuleError, alg, check_key, check_signature_alg, check_validity, parse};

const ROLE: CertRole = CertRole::Server;

/// Checks a server certificate for `host` against the tunnel's registered CAs, at `now`.
///
/// `intermediates` are the extra certificates the server sent; the rules allow none.
/// `registered_cas` are DER certificates (or [`super::CaInfo`]s).
pub fn validate_server_cert<C: AsRef<[u8]>>(
    leaf_der: &[u8],
    intermediates: &[CertificateDer<'_>],
    registered_cas: &[C],
    host: &str,
    now: i64,
) -> Result<(), CertRuleError> {
    if !intermediates.is_empty() {
        return Err(CertRuleError::IntermediatesPresent {
            count: intermediates.len(),
        });
    }
    if registered_cas.is_empty() {
        return Err(CertRuleError::NoRegisteredCa);
    }
    let leaf = parse(leaf_der, ROLE)?;
    if leaf
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(CertRuleError::ServerIsCa);
    }
    check_key(&leaf, ROLE)?;
    check_signature_alg(&leaf, ROLE)?;
    let ca_der = issuing_ca(&leaf, registered_cas)?;
    let ca = super::validate_ca_der(ca_der, now)
        .map_err(|e| CertRuleError::IssuingCaInvalid(Box::new(e)))?;
    check_aki(&leaf, &ca.subject_key_id)?;
    check_san(&leaf, host)?;
    check_eku(&leaf)?;
    check_validity(&leaf, ROLE, now)?;
    Ok(())
}

/// The registered CA whose subject is the leaf's issuer and whose key signed it.
fn issuing_ca<'c, C: AsRef<[u8]>>(
    leaf: &X509Certificate<'_>,
    registered_cas: &'c [C],
) -> Result<&'c [u8], CertRuleError> {
    registered_cas
        .iter()
        .map(AsRef::as_ref)
        .find(|der| {
            // A registered CA that does not parse cannot have signed anything.
            x509_parser::parse_x509_certificate(der).is_ok_and(|(_, ca)| {
                ca.subject().as_raw() == leaf.issuer().as_raw()
                    && alg::signed_by(leaf, ca.public_key())
            })
        })
        .ok_or_else(|| CertRuleError::UnknownIssuer {
            issuer: leaf.issuer().to_string(),
        })
}

fn check_aki(leaf: &X509Certificate<'_>, ca_ski: &[u8]) -> Result<(), CertRuleError> {
    let aki = leaf
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .filter(|kid| !kid.0.is_empty())
        .ok_or(CertRuleError::MissingAuthorityKeyId)?;
    if aki.0 != ca_ski {
        return Err(CertRuleError::AuthorityKeyIdMismatch {
            aki: hex::encode(aki.0),
            ski: hex::encode(ca_ski),
        });
    }
    Ok(())
}

fn check_san(leaf: &X509Certificate<'_>, host: &str) -> Result<(), CertRuleError> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| CertRuleError::Malformed {
            role: ROLE,
            reason: e.to_string(),
        })?
        .ok_or(CertRuleError::MissingSan)?;
    let names: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Err(CertRuleError::MissingSan);
    }
    if names.iter().any(|pattern| host_matches(pattern, host)) {
        return Ok(());
    }
    Err(CertRuleError::SanMismatch {
        host: host.to_owned(),
        names: names.join(", "),
    })
}

fn check_eku(leaf: &X509Certificate<'_>) -> Result<(), CertRuleError> {
    let eku = leaf
        .extended_key_usage()
        .map_err(|e| CertRuleError::Malformed {
            role: ROLE,
            reason: e.to_string(),
        })?;
    let Some(eku) = eku else {
        return Ok(());
    };
    let e = eku.value;
    if e.server_auth {
        return Ok(());
    }
    let mut found: Vec<String> = [
        (e.any, "anyExtendedKeyUsage"),
        (e.client_auth, "clientAuth"),
        (e.code_signing, "codeSigning"),
        (e.email_protection, "emailProtection"),
        (e.time_stamping, "timeStamping"),
        (e.ocsp_signing, "OCSPSigning"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name.to_owned())
    .collect();
    found.extend(e.other.iter().map(|oid| oid.to_id_string()));
    Err(CertRuleError::EkuNoServerAuth {
        found: if found.is_empty() {
            "nothing".into()
        } else {
            found.join(", ")
        },
    })
}

/// Whether a SAN DNS name covers `host`: equal ignoring case and a trailing dot, or a
/// `*.rest` wildcard standing for exactly one non-empty leftmost label. Partial-label
/// wildcards (`f*.x`) and wildcards over fewer than two labels (`*.com`) never match.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = normalize(pattern);
    let host = normalize(host);
    if host.is_empty() || host.contains('*') {
        return false;
    }
    match pattern.strip_prefix("*.") {
        None => !pattern.contains('*') && pattern == host,
        Some(rest) => {
            if rest.contains('*') || !rest.contains('.') || rest.split('.').any(str::is_empty) {
                return false;
            }
            match host.split_once('.') {
                Some((label, tail)) => !label.is_empty() && tail == rest,
                None => false,
            }
        }
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::host_matches;

    #[test]
    fn wildcard_covers_exactly_one_label() {
        let p = "*.abcd1234.tunnel.example";
        assert!(host_matches(p, "route.abcd1234.tunnel.example"));
        assert!(host_matches(p, "Route.ABCD1234.tunnel.example."));
        assert!(!host_matches(p, "a.route.abcd1234.tunnel.example"));
        assert!(!host_matches(p, "abcd1234.tunnel.example"));
        assert!(!host_matches(p, ".abcd1234.tunnel.example"));
        assert!(!host_matches(
            "*.tunnel.example",
            "route.abcd1234.tunnel.example"
        ));
    }

    #[test]
    fn exact_and_odd_patterns() {
        assert!(host_matches("route.t.example", "ROUTE.t.example"));
        assert!(!host_matches("route.t.example", "other.t.example"));
        assert!(!host_matches("r*.t.example", "route.t.example"));
        assert!(!host_matches("*.com", "example.com"));
        assert!(!host_matches("*.*.t.example", "a.b.t.example"));
        assert!(!host_matches("*.t.example", "*.t.example"));
        assert!(!host_matches("route.t.example", ""));
    }
}
