//! PKI and crypto facade: the one place that hashes, compares secrets, loads keys and
//! builds rustls configurations, all on the aws-lc-rs provider.

pub mod crypto;
pub mod generate;
pub mod jwt;
pub mod reload;
pub mod tls;
pub mod validate;
pub mod verifier;
