//! Which keys and signature algorithms are strong enough, and signature verification.
//!
//! Verification goes straight to aws-lc-rs rather than through x509-parser's
//! `verify_signature`, which has no P-521 and no ECDSA-with-SHA-512; with our own table
//! every algorithm we accept is also one we can verify.

use aws_lc_rs::signature::{self as sig, VerificationAlgorithm};
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const MGF1: &str = "1.2.840.113549.1.1.8";
/// Smallest and largest RSA moduli we accept; 8192 is aws-lc's verification ceiling.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigAlg {
    RsaPkcs1(Hash),
    RsaPss(Hash),
    Ecdsa(Hash),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa { bits: usize },
    Ec(Curve),
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA {bits} bits"),
            KeyKind::Ec(Curve::P256) => f.write_str("ECDSA P-256"),
            KeyKind::Ec(Curve::P384) => f.write_str("ECDSA P-384"),
            KeyKind::Ec(Curve::P521) => f.write_str("ECDSA P-521"),
        }
    }
}

fn hash_from_oid(oid: &str) -> Option<Hash> {
    match oid {
        "2.16.840.1.101.3.4.2.1" => Some(Hash::Sha256),
        "2.16.840.1.101.3.4.2.2" => Some(Hash::Sha384),
        "2.16.840.1.101.3.4.2.3" => Some(Hash::Sha512),
        _ => None,
    }
}

/// A readable name for signature algorithms people actually meet, else the dotted OID.
fn sig_alg_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.113549.1.1.2" => "md2WithRSAEncryption",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.10040.4.3" => "dsa-with-SHA1",
        "2.16.840.1.101.3.4.3.2" => "dsa-with-SHA256",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        other => return format!("OID {other}"),
    };
    name.to_owned()
}

/// Classifies a certificate's signature algorithm, or names it when it is not allowed.
pub(crate) fn signature_alg(alg: &AlgorithmIdentifier<'_>) -> Result<SigAlg, String> {
    let oid = alg.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.113549.1.1.11" => Ok(SigAlg::RsaPkcs1(Hash::Sha256)),
        "1.2.840.113549.1.1.12" => Ok(SigAlg::RsaPkcs1(Hash::Sha384)),
        "1.2.840.113549.1.1.13" => Ok(SigAlg::RsaPkcs1(Hash::Sha512)),
        "1.2.840.10045.4.3.2" => Ok(SigAlg::Ecdsa(Hash::Sha256)),
        "1.2.840.10045.4.3.3" => Ok(SigAlg::Ecdsa(Hash::Sha384)),
        "1.2.840.10045.4.3.4" => Ok(SigAlg::Ecdsa(Hash::Sha512)),
        RSASSA_PSS => pss_alg(alg),
        other => Err(sig_alg_name(other)),
    }
}

fn pss_alg(alg: &AlgorithmIdentifier<'_>) -> Result<SigAlg, String> {
    let params = alg
        .parameters
        .as_ref()
        .and_then(|p| RsaSsaPssParams::try_from(p).ok())
        .ok_or_else(|| "rsassa-pss without valid parameters".to_owned())?;
    let hash_oid = params.hash_algorithm_oid().to_id_string();
    let Some(hash) = hash_from_oid(&hash_oid) else {
        return Err(format!("rsassa-pss with hash OID {hash_oid}"));
    };
    let mgf_ok = params.mask_gen_algorithm().is_ok_and(|m| {
        m.mgf.to_id_string() == MGF1 && hash_from_oid(&m.hash.to_id_string()) == Some(hash)
    });
    if !mgf_ok {
        return Err("rsassa-pss whose mask generation does not use MGF1 with the same hash".into());
    }
    let want_salt = match hash {
        Hash::Sha256 => 32,
        Hash::Sha384 => 48,
        Hash::Sha512 => 64,
    };
    if params.salt_length() != want_salt || params.trailer_field() != 1 {
        return Err(format!(
            "rsassa-pss with salt length {} (only the digest length is supported)",
            params.salt_length()
        ));
    }
    Ok(SigAlg::RsaPss(hash))
}

/// Classifies a public key, or describes it when it is not allowed.
pub(crate) fn key_kind(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, String> {
    let oid = spki.algorithm.algorithm.to_id_string();
    match oid.as_str() {
        RSA_ENCRYPTION => {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err("an RSA key that cannot be parsed".into());
            };
            let bits = modulus_bits(rsa.modulus);
            if (RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                Ok(KeyKind::Rsa { bits })
            } else {
                Err(format!("RSA {bits} bits"))
            }
        }
        EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => Ok(KeyKind::Ec(Curve::P256)),
                Some("1.3.132.0.34") => Ok(KeyKind::Ec(Curve::P384)),
                Some("1.3.132.0.35") => Ok(KeyKind::Ec(Curve::P521)),
                Some(other) => Err(format!("ECDSA on curve {}", curve_name(other))),
                None => Err("ECDSA with explicit curve parameters".into()),
            }
        }
        "1.3.101.112" => Err("Ed25519".into()),
        "1.3.101.113" => Err("Ed448".into()),
        "1.2.840.10040.4.1" => Err("DSA".into()),
        RSASSA_PSS => Err("an RSA-PSS-only key (rsassa-pss key algorithm)".into()),
        other => Err(format!("key algorithm OID {other}")),
    }
}

fn curve_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.3.1.1" => "P-192 (prime192v1)".into(),
        "1.3.132.0.33" => "P-224 (secp224r1)".into(),
        "1.3.132.0.10" => "secp256k1".into(),
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1".into(),
        other => format!("OID {other}"),
    }
}

fn modulus_bits(modulus: &[u8]) -> usize {
    let trimmed = match modulus.iter().position(|&b| b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

fn verification_alg(alg: SigAlg, key: KeyKind) -> Option<&'static dyn VerificationAlgorithm> {
    use {Curve::*, Hash::*};
    Some(match (alg, key) {
        (SigAlg::RsaPkcs1(Sha256), KeyKind::Rsa { .. }) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (SigAlg::RsaPkcs1(Sha384), KeyKind::Rsa { .. }) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (SigAlg::RsaPkcs1(Sha512), KeyKind::Rsa { .. }) => &sig::RSA_PKCS1_2048_8192_SHA512,
        (SigAlg::RsaPss(Sha256), KeyKind::Rsa { .. }) => &sig::RSA_PSS_2048_8192_SHA256,
        (SigAlg::RsaPss(Sha384), KeyKind::Rsa { .. }) => &sig::RSA_PSS_2048_8192_SHA384,
        (SigAlg::RsaPss(Sha512), KeyKind::Rsa { .. }) => &sig::RSA_PSS_2048_8192_SHA512,
        (SigAlg::Ecdsa(Sha256), KeyKind::Ec(P256)) => &sig::ECDSA_P256_SHA256_ASN1,
        (SigAlg::Ecdsa(Sha384), KeyKind::Ec(P256)) => &sig::ECDSA_P256_SHA384_ASN1,
        (SigAlg::Ecdsa(Sha512), KeyKind::Ec(P256)) => &sig::ECDSA_P256_SHA512_ASN1,
        (SigAlg::Ecdsa(Sha256), KeyKind::Ec(P384)) => &sig::ECDSA_P384_SHA256_ASN1,
        (SigAlg::Ecdsa(Sha384), KeyKind::Ec(P384)) => &sig::ECDSA_P384_SHA384_ASN1,
        (SigAlg::Ecdsa(Sha512), KeyKind::Ec(P384)) => &sig::ECDSA_P384_SHA512_ASN1,
        (SigAlg::Ecdsa(Sha256), KeyKind::Ec(P521)) => &sig::ECDSA_P521_SHA256_ASN1,
        (SigAlg::Ecdsa(Sha384), KeyKind::Ec(P521)) => &sig::ECDSA_P521_SHA384_ASN1,
        (SigAlg::Ecdsa(Sha512), KeyKind::Ec(P521)) => &sig::ECDSA_P521_SHA512_ASN1,
        _ => return None,
    })
}

/// Whether `cert` carries a valid signature by `issuer_key`. Algorithms we do not accept
/// never verify, so callers check strength first to give the better message.
pub(crate) fn signed_by(cert: &X509Certificate<'_>, issuer_key: &SubjectPublicKeyInfo<'_>) -> bool {
    let (Ok(alg), Ok(key)) = (
        signature_alg(&cert.signature_algorithm),
        key_kind(issuer_key),
    ) else {
        return false;
    };
    let Some(valg) = verification_alg(alg, key) else {
        return false;
    };
    // RFC 5280 §4.1.1.2: the outer algorithm must equal the one inside the signed part,
    // or an attacker could swap the label the signature is checked under.
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return false;
    }
    sig::UnparsedPublicKey::new(valg, &issuer_key.subject_public_key.data)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_ignores_sign_byte() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x01, 0x00]), 9);
        assert_eq!(modulus_bits(&[0x00, 0x00]), 0);
        assert_eq!(modulus_bits(&[]), 0);
    }

    #[test]
    fn names_weak_algorithms() {
        assert_eq!(
            sig_alg_name("1.2.840.113549.1.1.5"),
            "sha1WithRSAEncryption"
        );
        assert_eq!(sig_alg_name("1.2.3"), "OID 1.2.3");
    }
}
