//! Go-style single-dash long flags (`-config FILE`), as the reference system's users type
//! them, rewritten to clap's `--config FILE` before parsing.

use std::ffi::OsString;

/// Long flags that may be spelled with one dash.
const GO_STYLE_FLAGS: &[&str] = &["config", "tunnel-domain", "token", "token-file", "url"];

/// Invoked as `setup` (the image links `/setup` to the binary), act as `mcp-tunnel setup`.
fn dispatch_on_name(mut args: Vec<OsString>) -> Vec<OsString> {
    let called_as_setup = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "setup");
    if called_as_setup {
        args[0] = OsString::from("mcp-tunnel");
        args.insert(1, OsString::from("setup"));
    }
    args
}

pub fn go_style(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let args = dispatch_on_name(args.into_iter().collect());
    let mut out = Vec::new();
    let mut rest_is_positional = false;
    for arg in args {
        if rest_is_positional {
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest_is_positional = true;
            out.push(arg);
            continue;
        }
        let rewritten = s
            .strip_prefix('-')
            .filter(|rest| !rest.starts_with('-'))
            .and_then(|rest| {
                let name = rest.split('=').next().unwrap_or(rest);
                GO_STYLE_FLAGS.contains(&name).then(|| format!("--{rest}"))
            });
        out.push(rewritten.map(OsString::from).unwrap_or(arg));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        go_style(args.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn called_as_setup_means_the_setup_command() {
        assert_eq!(
            run(&["/setup", "init", "-config", "x"]),
            ["mcp-tunnel", "setup", "init", "--config", "x"]
        );
        assert_eq!(
            run(&["/usr/bin/mcp-tunnel", "proxy"]),
            ["/usr/bin/mcp-tunnel", "proxy"]
        );
    }

    #[test]
    fn rewrites_known_single_dash_flags_only() {
        assert_eq!(
            run(&[
                "mcp-tunnel",
                "proxy",
                "-config",
                "a.yaml",
                "-tunnel-domain=x.example"
            ]),
            [
                "mcp-tunnel",
                "proxy",
                "--config",
                "a.yaml",
                "--tunnel-domain=x.example"
            ]
        );
        assert_eq!(
            run(&["p", "-h", "-v", "--config", "b"]),
            ["p", "-h", "-v", "--config", "b"]
        );
        assert_eq!(run(&["p", "--", "-config"]), ["p", "--", "-config"]);
        assert_eq!(run(&["p", "-unknown"]), ["p", "-unknown"]);
    }
}
