//! The one error type for certificate rule violations.

use std::fmt;

/// Which certificate a rule applies to, so one message template serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    Ca,
    Server,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertRole::Ca => "CA certificate",
            CertRole::Server => "server certificate",
        })
    }
}

/// A certificate broke one of the rules of SPEC §8. Each message names the rule in
/// plain words, because operators read it in API errors, `doctor` and TLS failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertRuleError {
    #[error("CA certificate PEM must be at most {max} bytes (got {len} bytes)", max = super::MAX_CA_PEM_BYTES)]
    TooLarge { len: usize },
    #[error("CA certificate PEM is empty")]
    Empty,
    #[error(
        "CA certificate must be PEM text with one -----BEGIN CERTIFICATE----- block ({reason})"
    )]
    NotPem { reason: String },
    #[error(
        "CA certificate PEM must not contain a private key (found a {label:?} block): \
         register only the certificate and keep the key secret"
    )]
    PrivateKeyPresent { label: String },
    #[error("CA certificate PEM must contain only a CERTIFICATE block (found a {label:?} block)")]
    UnexpectedBlock { label: String },
    #[error("CA certificate PEM must contain exactly one certificate (found {count})")]
    CertificateCount { count: usize },
    #[error("CA certificate PEM block is not valid base64")]
    BadBase64,
    #[error("{role} is not a valid X.509 certificate: {reason}")]
    Malformed { role: CertRole, reason: String },
    #[error("CA certificate must have BasicConstraints CA:TRUE marked critical ({found})")]
    NotCa { found: &'static str },
    #[error(
        "CA certificate must have BasicConstraints CA:TRUE marked critical \
         (BasicConstraints is not marked critical)"
    )]
    BasicConstraintsNotCritical,
    #[error("CA certificate must have a SubjectKeyIdentifier extension")]
    MissingSubjectKeyId,
    #[error(
        "CA certificate must have a KeyUsage extension that includes keyCertSign (KeyUsage is missing)"
    )]
    MissingKeyUsage,
    #[error("CA certificate KeyUsage must include keyCertSign (it has: {found})")]
    KeyUsageNoCertSign { found: String },
    #[error("{role} is not valid yet: notBefore is {}, now is {}", fmt_unix(*not_before), fmt_unix(*now))]
    NotYetValid {
        role: CertRole,
        not_before: i64,
        now: i64,
    },
    #[error("{role} has expired: notAfter was {}, now is {}", fmt_unix(*not_after), fmt_unix(*now))]
    Expired {
        role: CertRole,
        not_after: i64,
        now: i64,
    },
    #[error(
        "{role} key must be RSA of at least 2048 bits or ECDSA on P-256, P-384 or P-521 (found {found})"
    )]
    WeakKey { role: CertRole, found: String },
    #[error(
        "{role} signature algorithm must be SHA-256 or stronger, with RSA or ECDSA (found {found})"
    )]
    WeakSignature { role: CertRole, found: String },
    #[error("CA certificate must be self-signed: its signature does not verify with its own key")]
    SelfSignatureInvalid,
    #[error(
        "server certificate must be signed directly by a registered CA: \
         intermediate certificates are not allowed (got {count})"
    )]
    IntermediatesPresent { count: usize },
    #[error("no CA certificate is registered for this tunnel")]
    NoRegisteredCa,
    #[error(
        "server certificate must be signed by a CA certificate registered for this tunnel \
         (issuer {issuer:?} is not one of them)"
    )]
    UnknownIssuer { issuer: String },
    #[error("the registered CA that signed the server certificate is not acceptable: {0}")]
    IssuingCaInvalid(Box<CertRuleError>),
    #[error("server certificate must not be a CA certificate (it has BasicConstraints CA:TRUE)")]
    ServerIsCa,
    #[error(
        "server certificate must have an AuthorityKeyIdentifier extension with a key identifier"
    )]
    MissingAuthorityKeyId,
    #[error(
        "server certificate AuthorityKeyIdentifier must match the CA's SubjectKeyIdentifier \
         (AKI {aki}, CA SKI {ski})"
    )]
    AuthorityKeyIdMismatch { aki: String, ski: String },
    #[error("server certificate must have a SubjectAltName extension with DNS names")]
    MissingSan,
    #[error(
        "server certificate SubjectAltName must cover {host:?} (it has: {names}); \
         a wildcard covers exactly one label"
    )]
    SanMismatch { host: String, names: String },
    #[error("server certificate ExtendedKeyUsage must include serverAuth (it has: {found})")]
    EkuNoServerAuth { found: String },
}

/// `2024-01-02T03:04:05Z` for Unix seconds, without pulling in a date crate.
pub fn fmt_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_unix_time() {
        assert_eq!(fmt_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(fmt_unix(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(fmt_unix(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(fmt_unix(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn messages_name_the_rule() {
        let e = CertRuleError::BasicConstraintsNotCritical;
        assert_eq!(
            e.to_string(),
            "CA certificate must have BasicConstraints CA:TRUE marked critical \
             (BasicConstraints is not marked critical)"
        );
        let e = CertRuleError::Expired {
            role: CertRole::Server,
            not_after: 0,
            now: 60,
        };
        assert!(e.to_string().starts_with("server certificate has expired"));
    }
}
