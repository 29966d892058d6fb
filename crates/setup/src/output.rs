//! Where setup keeps what it provisions: `dir:/path` (one file per key) or
//! `k8s-secret:NAME` (one data key per key, in the pod's namespace).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::dir::DirOutput;
use crate::error::SetupError;
use crate::k8s::{K8sConfig, K8sSecret};

/// Key -> bytes, for the keys of [`crate::keys`] that are present.
pub type Contents = BTreeMap<String, Vec<u8>>;

/// The Secret name `--output` defaults to inside a pod (SPEC §9).
pub const DEFAULT_SECRET: &str = "mcp-tunnel";

/// A parsed `--output`, before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    Dir(PathBuf),
    Secret(String),
}

impl OutputSpec {
    pub fn parse(spec: &str) -> Result<Self, SetupError> {
        let bad = || SetupError::OutputSpec(spec.to_owned());
        if let Some(path) = spec.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Self::Dir(PathBuf::from(path)));
        }
        if let Some(name) = spec.strip_prefix("k8s-secret:") {
            if !valid_secret_name(name) {
                return Err(bad());
            }
            return Ok(Self::Secret(name.to_owned()));
        }
        Err(bad())
    }

    /// `--output` when given; else `k8s-secret:mcp-tunnel` inside a pod (the service
    /// host variable Kubernetes sets in every container); else an error.
    pub fn resolve(given: Option<&str>, in_pod: bool) -> Result<Self, SetupError> {
        match given {
            Some(s) => Self::parse(s),
            None if in_pod => Ok(Self::Secret(DEFAULT_SECRET.to_owned())),
            None => Err(SetupError::NoOutput),
        }
    }

    /// Opens the output; a Secret needs the in-cluster configuration.
    pub fn open(
        self,
        k8s: impl FnOnce() -> Result<K8sConfig, crate::k8s::K8sError>,
    ) -> Result<Output, SetupError> {
        Ok(match self {
            Self::Dir(path) => Output::Dir(DirOutput::new(path)),
            Self::Secret(name) => Output::Secret(K8sSecret::new(k8s()?, name)?),
        })
    }
}

/// A DNS-1123 subdomain, as Kubernetes requires of Secret names.
fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// An opened output.
#[derive(Debug)]
pub enum Output {
    Dir(DirOutput),
    Secret(K8sSecret),
}

impl Output {
    /// What is stored now (only the keys setup knows).
    pub async fn read(&self) -> Result<Contents, SetupError> {
        match self {
            Self::Dir(d) => d.read(),
            Self::Secret(s) => Ok(s.read().await?),
        }
    }

    /// Stores `changes`, leaving every other key as it is. Each key is replaced
    /// atomically; keys whose value is unchanged are not rewritten.
    pub async fn write(&self, changes: &Contents) -> Result<(), SetupError> {
        if changes.is_empty() {
            return Ok(());
        }
        match self {
            Self::Dir(d) => d.write(changes),
            Self::Secret(s) => Ok(s.write(changes).await?),
        }
    }

    /// For messages: `dir:/path` or `k8s-secret:namespace/name`.
    pub fn describe(&self) -> String {
        match self {
            Self::Dir(d) => format!("dir:{}", d.path().display()),
            Self::Secret(s) => format!("k8s-secret:{}", s.describe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            OutputSpec::parse("dir:/data").unwrap(),
            OutputSpec::Dir("/data".into())
        );
        assert_eq!(
            OutputSpec::parse("k8s-secret:mcp-tunnel").unwrap(),
            OutputSpec::Secret("mcp-tunnel".into())
        );
        for bad in [
            "",
            "dir:",
            "/data",
            "k8s-secret:",
            "k8s-secret:Upper",
            "s3:x",
        ] {
            assert!(OutputSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            OutputSpec::resolve(None, true).unwrap(),
            OutputSpec::Secret("mcp-tunnel".into())
        );
        assert!(matches!(
            OutputSpec::resolve(None, false),
            Err(SetupError::NoOutput)
        ));
    }
}
