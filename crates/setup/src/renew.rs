//! `setup renew-cert` (SPEC §9): re-sign the server certificate with the CA stored in the
//! output, offline (no API call, so the renewal job needs no credentials and no network
//! but the output's). A no-op while the stored certificate passes the client's rules
//! with more than `--renew-before` left.

use std::fmt;
use std::time::Duration;

use mcp_tunnel_pki::generate::KeyKind;
use mcp_tunnel_pki::validate::fmt_unix;

use crate::error::SetupError;
use crate::keys;
use crate::material::{self, StoredCa, text};
use crate::output::Output;

#[derive(Debug, Clone)]
pub struct RenewOptions {
    pub cert_duration: Duration,
    pub renew_before: Duration,
    pub key_kind: KeyKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewReport {
    /// Enough validity left; nothing written.
    NotDue { not_after: i64 },
    Renewed {
        not_after: i64,
        /// Why: close to expiry, or the stored one is unusable (named).
        why: String,
    },
}

impl fmt::Display for RenewReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDue { not_after } => write!(
                f,
                "server certificate valid until {}: more than --renew-before left, nothing to do",
                fmt_unix(*not_after)
            ),
            Self::Renewed { not_after, why } => write!(
                f,
                "server certificate renewed ({why}): valid until {}",
                fmt_unix(*not_after)
            ),
        }
    }
}

pub async fn renew(output: &Output, o: &RenewOptions) -> Result<RenewReport, SetupError> {
    let stored = output.read().await?;
    let ca = StoredCa::read(&stored)?.ok_or(SetupError::Missing { key: keys::CA_CERT })?;
    let domain = text(&stored, keys::TUNNEL_DOMAIN)?.ok_or(SetupError::Missing {
        key: keys::TUNNEL_DOMAIN,
    })?;
    let why = match material::server_cert_good_until(&stored, &ca, &domain) {
        Ok(not_after) => {
            let left = not_after - material::now();
            if left > o.renew_before.as_secs() as i64 {
                return Ok(RenewReport::NotDue { not_after });
            }
            format!(
                "{}h left, --renew-before is {}h",
                left.max(0) / 3600,
                o.renew_before.as_secs() / 3600
            )
        }
        Err(reason) => format!("the stored one is unusable: {reason}"),
    };
    let cert = ca.issue(&domain, o.cert_duration, o.key_kind)?;
    output.write(&material::server_cert_contents(&cert)).await?;
    Ok(RenewReport::Renewed {
        not_after: cert.not_after,
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::DirOutput;
    use crate::output::Contents;

    fn opts(renew_before_h: u64) -> RenewOptions {
        RenewOptions {
            cert_duration: Duration::from_secs(2160 * 3600),
            renew_before: Duration::from_secs(renew_before_h * 3600),
            key_kind: KeyKind::EcdsaP256,
        }
    }

    #[tokio::test]
    async fn renews_only_when_due_and_with_the_stored_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let out = Output::Dir(DirOutput::new(tmp.path().to_owned()));
        assert!(matches!(
            renew(&out, &opts(720)).await,
            Err(SetupError::Missing { key: "ca.crt" })
        ));
        let ca = StoredCa::generate().unwrap();
        let mut c: Contents = ca.contents();
        c.insert(keys::TUNNEL_DOMAIN.into(), b"ab12cd34.t.example\n".to_vec());
        // A certificate with 10 days left.
        let old = ca
            .issue(
                "ab12cd34.t.example",
                Duration::from_secs(240 * 3600),
                KeyKind::EcdsaP256,
            )
            .unwrap();
        c.extend(material::server_cert_contents(&old));
        out.write(&c).await.unwrap();

        // 10 days left, renew 5 days before: nothing to do, nothing written.
        let r = renew(&out, &opts(120)).await.unwrap();
        assert_eq!(
            r,
            RenewReport::NotDue {
                not_after: old.not_after
            }
        );
        assert_eq!(
            out.read().await.unwrap()[keys::TLS_CERT],
            old.cert_pem.as_bytes()
        );
        // 720h before: due. The new certificate is the stored CA's, for the domain.
        let r = renew(&out, &opts(720)).await.unwrap();
        let RenewReport::Renewed { not_after, why } = r else {
            panic!("not renewed: {r:?}")
        };
        assert!(why.contains("--renew-before"), "{why}");
        assert!(not_after > old.not_after);
        let now = out.read().await.unwrap();
        assert_ne!(now[keys::TLS_CERT], old.cert_pem.as_bytes());
        assert_eq!(
            material::server_cert_good_until(&now, &ca, "ab12cd34.t.example").unwrap(),
            not_after
        );
        // And then not due any more.
        assert!(matches!(
            renew(&out, &opts(720)).await.unwrap(),
            RenewReport::NotDue { .. }
        ));
    }
}
