//! The master key and AES-256-GCM sealing of tunnel tokens at rest (aws-lc-rs).
//!
//! A sealed value is `nonce (12 bytes) || ciphertext || tag`, with the tunnel id as
//! associated data, so a ciphertext copied onto another tunnel's row does not open.

use std::fmt;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mcp_tunnel_pki::crypto;

/// Bytes in a master key.
pub const MASTER_KEY_LEN: usize = 32;

/// Why a master key or a sealed value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("master key must be base64 of exactly {MASTER_KEY_LEN} bytes")]
    BadMasterKey,
    #[error("cannot read master key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("sealed value does not open with this master key (wrong key, or the data was altered)")]
    Open,
}

/// The key that encrypts tunnel tokens. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut k = [0u8; MASTER_KEY_LEN];
        k.copy_from_slice(&crypto::random_bytes(MASTER_KEY_LEN));
        Self(k)
    }

    /// Parses the base64 form (surrounding whitespace ignored).
    pub fn from_base64(s: &str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(s.trim().as_bytes())
            .map_err(|_| SealError::BadMasterKey)?;
        let arr: [u8; MASTER_KEY_LEN] = bytes.try_into().map_err(|_| SealError::BadMasterKey)?;
        Ok(Self(arr))
    }

    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let text = std::fs::read_to_string(path).map_err(|e| SealError::Read {
            path: path.display().to_string(),
            reason: mcp_tunnel_pki::tls::io_reason(&e),
        })?;
        Self::from_base64(&text)
    }

    /// The base64 form, for writing to a 0600 file once.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn key(&self) -> LessSafeKey {
        // A 32-byte key is always accepted by AES-256-GCM.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("AES-256 key length"))
    }

    /// Encrypts `plaintext`, bound to `context` (the tunnel id).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&crypto::random_bytes(NONCE_LEN));
        let mut buf = plaintext.to_vec();
        self.key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM sealing of a short buffer");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Decrypts what [`seal`](Self::seal) produced for the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = ct.to_vec();
        let plain = self
            .key()
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = MasterKey::generate();
        let sealed = k.seal("tnl_a", b"eyJsecret");
        assert!(!sealed.windows(9).any(|w| w == b"eyJsecret"));
        assert_eq!(k.open("tnl_a", &sealed).unwrap(), b"eyJsecret");
        assert!(k.open("tnl_b", &sealed).is_err(), "bound to the tunnel id");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(k.open("tnl_a", &bad).is_err());
        assert!(MasterKey::generate().open("tnl_a", &sealed).is_err());
        let again = MasterKey::from_base64(&k.to_base64()).unwrap();
        assert_eq!(again.open("tnl_a", &sealed).unwrap(), b"eyJsecret");
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(!format!("{k:?}").contains(&k.to_base64()));
    }
}
