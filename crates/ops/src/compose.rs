//! Just enough of Docker Compose to audit a file: YAML into JSON values, and variable
//! interpolation (`${VAR}`, `${VAR:-default}`, `${VAR:?error}`, …) from the environment
//! and the `.env` file beside it, as `docker compose` itself does.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: invalid YAML: {reason}")]
    Yaml { path: String, reason: String },
}

/// A parsed compose file with the variables it may use.
#[derive(Debug, Clone)]
pub struct ComposeFile {
    pub doc: Value,
    pub vars: BTreeMap<String, String>,
}

impl ComposeFile {
    /// Reads `path` and the `.env` beside it; the process environment wins over `.env`,
    /// as with `docker compose`.
    pub fn load(path: &Path) -> Result<Self, ComposeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ComposeError::Read {
            path: path.display().to_string(),
            reason: mcp_tunnel_pki::tls::io_reason(&e),
        })?;
        let mut vars = BTreeMap::new();
        if let Some(dir) = path.parent()
            && let Ok(env) = std::fs::read_to_string(dir.join(".env"))
        {
            vars.extend(parse_dotenv(&env));
        }
        vars.extend(std::env::vars());
        Self::parse(&text, vars).map_err(|reason| ComposeError::Yaml {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn parse(text: &str, vars: BTreeMap<String, String>) -> Result<Self, String> {
        let doc: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        Ok(Self { doc, vars })
    }

    /// `(name, service)` pairs.
    pub fn services(&self) -> Vec<(&str, &Value)> {
        self.doc
            .get("services")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
            .unwrap_or_default()
    }

    /// A string field with variables substituted.
    pub fn interpolate(&self, s: &str) -> Result<String, String> {
        interpolate(s, &self.vars)
    }
}

/// `KEY=VALUE` lines; `#` comments, blank lines and an `export ` prefix allowed; one
/// level of matching quotes removed.
pub fn parse_dotenv(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.insert(k.trim().to_owned(), v.to_owned());
    }
    out
}

/// Compose's interpolation. An unset required variable (`:?`/`?`) is an error carrying
/// its message, as `docker compose` would refuse to start.
pub fn interpolate(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let ch = s[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8().max(1);
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let start = i + 2;
                let mut depth = 1;
                let mut j = start;
                while j < b.len() && depth > 0 {
                    match b[j] {
                        b'{' => depth += 1,
                        b'}' => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                }
                if depth != 0 {
                    return Err(format!("unterminated ${{ in {s:?}"));
                }
                out.push_str(&expand(&s[start..j - 1], vars)?);
                i = j;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                out.push_str(vars.get(&s[start..j]).map(String::as_str).unwrap_or(""));
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn expand(inner: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let name_end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_end);
    let val = vars.get(name);
    let set = val.is_some();
    let non_empty = val.is_some_and(|v| !v.is_empty());
    let value = val.cloned().unwrap_or_default();
    let (op, arg) = if let Some(a) = rest.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = rest.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = rest.strip_prefix(":+") {
        (":+", a)
    } else if let Some(a) = rest.strip_prefix('-') {
        ("-", a)
    } else if let Some(a) = rest.strip_prefix('?') {
        ("?", a)
    } else if let Some(a) = rest.strip_prefix('+') {
        ("+", a)
    } else if rest.is_empty() {
        ("", "")
    } else {
        return Err(format!("invalid interpolation ${{{inner}}}"));
    };
    let arg = || interpolate(arg, vars);
    Ok(match op {
        "" => value,
        ":-" => {
            if non_empty {
                value
            } else {
                arg()?
            }
        }
        "-" => {
            if set {
                value
            } else {
                arg()?
            }
        }
        ":?" => {
            if non_empty {
                value
            } else {
                return Err(format!("{name}: {}", arg()?));
            }
        }
        "?" => {
            if set {
                value
            } else {
                return Err(format!("{name}: {}", arg()?));
            }
        }
        ":+" => {
            if non_empty {
                arg()?
            } else {
                String::new()
            }
        }
        _ => {
            if set {
                arg()?
            } else {
                String::new()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn interpolation_forms() {
        let v = vars(&[("A", "x"), ("E", "")]);
        assert_eq!(interpolate("${A}/$A/$$A", &v).unwrap(), "x/x/$A");
        assert_eq!(interpolate("${E:-d}|${E-d}|${U-d}", &v).unwrap(), "d||d");
        assert_eq!(interpolate("${U:-${A}y}", &v).unwrap(), "xy");
        assert_eq!(interpolate("${A:+on}${E:+on}", &v).unwrap(), "on");
        let e = interpolate("img@${D:?set D to the digest}", &v).unwrap_err();
        assert_eq!(e, "D: set D to the digest");
        assert!(interpolate("${A", &v).is_err());
    }

    #[test]
    fn dotenv() {
        let m = parse_dotenv("# c\nA=1\nexport B=\"two\"\n\nC='3'\nbad\n");
        assert_eq!(m, vars(&[("A", "1"), ("B", "two"), ("C", "3")]));
    }

    #[test]
    fn merge_keys_and_anchors() {
        let text = "x-h: &h\n  read_only: true\nservices:\n  a:\n    <<: *h\n    image: i\n";
        let c = ComposeFile::parse(text, BTreeMap::new()).unwrap();
        let (name, svc) = c.services()[0];
        assert_eq!(name, "a");
        assert_eq!(svc["read_only"], true, "{svc}");
    }
}
