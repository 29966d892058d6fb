//! A Compose host's firewall: whether the containers' egress is limited. Compose itself
//! cannot restrict where a container connects; on a Docker host that is the job of the
//! `DOCKER-USER` chain, which Docker evaluates before its own forwarding rules and
//! otherwise leaves as a single `RETURN`. The check reads the `filter` table as
//! `iptables-save` prints it (given as a file, or run on this host) and passes when the
//! chain ends what it does not allow with a catch-all DROP or REJECT that no earlier
//! unconditional rule bypasses.

use std::path::Path;

use crate::finding::{Finding, Severity};

const ID: &str = "network.reach";
const FIX: &str = "limit the stack's egress in the DOCKER-USER chain: allow established traffic, the edge (TCP+UDP \
     7844) and the MCP servers' addresses and ports from the compose network's subnet, then drop the rest, e.g. \
     `iptables -I DOCKER-USER -s SUBNET -j DROP` followed by `iptables -I DOCKER-USER -s SUBNET -d EDGE -p tcp \
     --dport 7844 -j ACCEPT` and `iptables -I DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN`";

/// One `-A DOCKER-USER …` rule: its match arguments and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    text: String,
    matches: Vec<String>,
    target: String,
}

impl Rule {
    fn parse(args: &str) -> Self {
        let words: Vec<&str> = args.split_whitespace().collect();
        let mut matches = Vec::new();
        let mut target = String::new();
        let mut i = 0;
        while i < words.len() {
            match words[i] {
                "-j" | "--jump" | "-g" | "--goto" => {
                    target = words.get(i + 1).copied().unwrap_or("").to_owned();
                    // Target options (e.g. --reject-with) are not matches.
                    break;
                }
                w => matches.push(w.to_owned()),
            }
            i += 1;
        }
        Self {
            text: args.trim().to_owned(),
            matches,
            target,
        }
    }

    /// Matches nothing narrower than "this source": a comment, the source address or
    /// interface. Such a DROP is a default deny for that scope.
    fn is_catch_all(&self) -> bool {
        let mut words = self.matches.iter().map(String::as_str);
        while let Some(w) = words.next() {
            match w {
                "-s" | "--source" | "-i" | "--in-interface" => {
                    words.next();
                }
                "-m" => {
                    if words.next() != Some("comment") {
                        return false;
                    }
                }
                "--comment" => {
                    // The comment text: one word, or a quoted run of words.
                    if let Some(first) = words.next()
                        && first.starts_with('"')
                        && !(first.len() > 1 && first.ends_with('"'))
                    {
                        for w in words.by_ref() {
                            if w.ends_with('"') {
                                break;
                            }
                        }
                    }
                }
                _ => return false,
            }
        }
        true
    }

    fn denies(&self) -> bool {
        matches!(self.target.as_str(), "DROP" | "REJECT")
    }

    fn lets_through(&self) -> bool {
        matches!(self.target.as_str(), "RETURN" | "ACCEPT")
    }
}

/// The `DOCKER-USER` rules of the `filter` table, or `None` when there is no such chain.
fn docker_user(rules: &str) -> Option<Vec<Rule>> {
    let mut in_filter = false;
    let mut declared = false;
    let mut out = Vec::new();
    for line in rules.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
            continue;
        }
        if !in_filter {
            continue;
        }
        if line.starts_with(":DOCKER-USER ") {
            declared = true;
        } else if let Some(args) = line.strip_prefix("-A DOCKER-USER ") {
            declared = true;
            out.push(Rule::parse(args));
        }
    }
    declared.then_some(out)
}

/// Judges `rules` (`iptables-save` output) read from `source`.
pub fn check_rules(rules: &str, source: &str) -> Finding {
    let Some(chain) = docker_user(rules) else {
        return Finding::unknown(
            ID,
            Severity::Medium,
            format!(
                "{source}: no DOCKER-USER chain in the filter table: not a Docker host, or Docker does not manage iptables here, so the stack's egress rules cannot be judged"
            ),
            FIX,
        );
    };
    for (i, rule) in chain.iter().enumerate() {
        if rule.is_catch_all() && rule.lets_through() {
            return Finding::fail(
                ID,
                Severity::Medium,
                format!(
                    "{source}: DOCKER-USER rule {} (`{}`) lets every connection through before any drop: containers can reach any address",
                    i + 1,
                    rule.text
                ),
                FIX,
            );
        }
        if rule.is_catch_all() && rule.denies() {
            let allowed: Vec<&str> = chain[..i]
                .iter()
                .filter(|r| r.lets_through())
                .map(|r| r.text.as_str())
                .collect();
            return Finding::pass(
                ID,
                Severity::Medium,
                format!(
                    "{source}: DOCKER-USER drops what it does not allow (rule {}: `{}`); allowed first: {}",
                    i + 1,
                    rule.text,
                    if allowed.is_empty() {
                        "nothing".to_owned()
                    } else {
                        allowed.join("; ")
                    }
                ),
            );
        }
    }
    Finding::fail(
        ID,
        Severity::Medium,
        format!(
            "{source}: DOCKER-USER has no catch-all DROP or REJECT ({} rule(s)): containers can reach any address",
            chain.len()
        ),
        FIX,
    )
}

/// Reads the rules from a file.
pub fn check_file(path: &Path) -> Finding {
    match std::fs::read_to_string(path) {
        Ok(text) => check_rules(&text, &path.display().to_string()),
        Err(e) => Finding::unknown(
            ID,
            Severity::Medium,
            format!("{}: {}", path.display(), mcp_tunnel_pki::tls::io_reason(&e)),
            "pass the output of `iptables-save -t filter` taken on the Docker host",
        ),
    }
}

/// Runs `iptables-save -t filter` on this host (root, or CAP_NET_ADMIN, is needed).
pub async fn check_host() -> Finding {
    let out = tokio::process::Command::new("iptables-save")
        .args(["-t", "filter"])
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {
            check_rules(&String::from_utf8_lossy(&o.stdout), "this host")
        }
        Ok(o) => Finding::unknown(
            ID,
            Severity::Medium,
            format!(
                "iptables-save failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            "run doctor as root on the Docker host, or pass --firewall-rules FILE",
        ),
        Err(e) => Finding::unknown(
            ID,
            Severity::Medium,
            format!("cannot run iptables-save: {e}"),
            "install iptables, or pass --firewall-rules FILE with the Docker host's `iptables-save -t filter`",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Status;

    fn save(chain: &[&str]) -> String {
        let mut s = String::from(
            "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n-A DOCKER-USER -j DROP\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n",
        );
        for r in chain {
            s.push_str(&format!("-A DOCKER-USER {r}\n"));
        }
        s.push_str("COMMIT\n");
        s
    }

    fn status(rules: &str) -> (Status, String) {
        let f = check_rules(rules, "fixture");
        (f.status, f.evidence)
    }

    #[test]
    fn dockers_default_chain_fails() {
        let (st, ev) = status(&save(&["-j RETURN"]));
        assert_eq!(st, Status::Fail, "{ev}");
        assert!(ev.contains("rule 1 (`-j RETURN`)"), "{ev}");
        let (st, ev) = status(&save(&[]));
        assert_eq!(st, Status::Fail, "{ev}");
        assert!(ev.contains("no catch-all DROP"), "{ev}");
    }

    #[test]
    fn allow_list_then_drop_passes() {
        let (st, ev) = status(&save(&[
            "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
            "-s 172.20.0.0/16 -d 203.0.113.10/32 -p tcp -m tcp --dport 7844 -j ACCEPT",
            "-s 172.20.0.0/16 -d 10.0.0.5/32 -p tcp -m tcp --dport 8000 -j ACCEPT",
            "-s 172.20.0.0/16 -m comment --comment \"mcp-tunnel default deny\" -j DROP",
            "-j RETURN",
        ]));
        assert_eq!(st, Status::Pass, "{ev}");
        assert!(ev.contains("rule 4") && ev.contains("--dport 7844"), "{ev}");
        let (st, _) = status(&save(&[
            "-i br-mcp -j REJECT --reject-with icmp-port-unreachable",
        ]));
        assert_eq!(st, Status::Pass);
    }

    #[test]
    fn drops_that_are_not_catch_all_do_not_count() {
        for narrow in [
            "-m comment --comment \"looks like a deny\" -d 10.9.9.9/32 -j DROP",
            "-d 169.254.169.254/32 -j DROP",
            "-p tcp -m tcp --dport 22 -j DROP",
            "-m conntrack --ctstate INVALID -j DROP",
            "-s 172.20.0.0/16 -j LOG",
        ] {
            let (st, ev) = status(&save(&[narrow, "-j RETURN"]));
            assert_eq!(st, Status::Fail, "{narrow}: {ev}");
        }
        // A deny placed after an unconditional RETURN is never reached.
        let (st, ev) = status(&save(&["-j RETURN", "-s 172.20.0.0/16 -j DROP"]));
        assert_eq!(st, Status::Fail, "{ev}");
        let (st, ev) = status(&save(&["-j ACCEPT", "-j DROP"]));
        assert_eq!(st, Status::Fail, "{ev}");
    }

    #[test]
    fn no_chain_is_unknown_and_other_tables_are_ignored() {
        let (st, ev) = status("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n");
        assert_eq!(st, Status::Unknown, "{ev}");
        // A DOCKER-USER rule in another table is not the filter chain.
        let (st, _) = status("*nat\n-A DOCKER-USER -j DROP\nCOMMIT\n");
        assert_eq!(st, Status::Unknown);
        let (st, _) = status("");
        assert_eq!(st, Status::Unknown);
        let f = check_file(Path::new("/nonexistent/rules"));
        assert_eq!(f.status, Status::Unknown);
    }
}
