//! Identifiers: prefixed random ids (`tnl_…`, `tcrt_…`), tunnel domain labels, UUIDs, and
//! opaque credentials.

use mcp_tunnel_pki::crypto::{self, Secret};

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const LOWER_ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Characters after an id's prefix: 22 base-62 characters carry ~131 bits.
const ID_BODY_LEN: usize = 22;

/// Random characters from `alphabet`, without modulo bias.
fn random_chars(alphabet: &[u8], n: usize) -> String {
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in crypto::random_bytes(n * 2) {
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// A new id with the given prefix, e.g. `new_id("tnl")` → `tnl_01Hk…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_chars(ALNUM, ID_BODY_LEN))
}

/// The first label of a tunnel domain: 8 lowercase letters or digits.
pub fn new_domain_label() -> String {
    random_chars(LOWER_ALNUM, 8)
}

/// A random (version 4) UUID in its canonical lowercase form.
pub fn new_uuid() -> String {
    let mut b = crypto::random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `s` looks like a canonical UUID (any version).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

/// What kind of bearer credential a string is, told by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A Tunnels API key created by an admin (`mtk_…`).
    ApiKey,
    /// An access token minted by the workload-identity exchange (`mtat_…`).
    AccessToken,
    /// A client access key for the edge (`mtck_…`).
    ClientKey,
}

impl CredentialKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::ApiKey => "mtk_",
            Self::AccessToken => "mtat_",
            Self::ClientKey => "mtck_",
        }
    }

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::AccessToken => "access_token",
            Self::ClientKey => "client_key",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "api_key" => Some(Self::ApiKey),
            "access_token" => Some(Self::AccessToken),
            "client_key" => Some(Self::ClientKey),
            _ => None,
        }
    }

    /// The id prefix of the credential's record (never the secret's prefix).
    pub fn id_prefix(self) -> &'static str {
        match self {
            Self::ApiKey => "akey",
            Self::AccessToken => "atok",
            Self::ClientKey => "ckey",
        }
    }
}

/// A fresh credential: prefix + 43 base-62 characters (~256 bits).
pub fn new_credential(kind: CredentialKind) -> Secret {
    Secret::new(format!("{}{}", kind.prefix(), random_chars(ALNUM, 43)))
}

/// Hash under which a credential is stored and looked up. Credentials are high-entropy,
/// so a fast hash is right and a lookup by hash leaks nothing useful through timing.
pub fn credential_hash(secret: &str) -> Vec<u8> {
    crypto::sha256(secret.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let id = new_id("tnl");
        assert!(id.starts_with("tnl_") && id.len() == 4 + ID_BODY_LEN);
        assert!(mcp_tunnel_proto::TunnelId::parse(&id).is_ok());
        let label = new_domain_label();
        assert_eq!(label.len(), 8);
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        let u = new_uuid();
        assert!(is_uuid(&u), "{u}");
        assert_eq!(&u[14..15], "4");
        assert!(!is_uuid("not-a-uuid"));
        let k = new_credential(CredentialKind::ApiKey);
        assert!(k.expose().starts_with("mtk_") && k.expose().len() == 47);
        assert_ne!(new_id("x"), new_id("x"));
    }
}
