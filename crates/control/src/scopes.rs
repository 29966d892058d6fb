//! Scopes carried by API keys, access tokens and client keys.

/// Create, archive, reveal and rotate tunnels and certificates of a workspace.
pub const MANAGE_TUNNELS: &str = "workspace:manage_tunnels";
/// Read tunnels and certificates (the developer role).
pub const READ_TUNNELS: &str = "workspace:read_tunnels";
/// Open client sessions through the edge (client access keys).
pub const USE_TUNNELS: &str = mcp_tunnel_edge::store::USE_TUNNELS_SCOPE;
/// Manage the organization: workspaces, service accounts, federation, keys, audit log.
pub const ORG_ADMIN: &str = "org:admin";

/// Every scope a credential may carry.
pub const ALL: &[&str] = &[MANAGE_TUNNELS, READ_TUNNELS, USE_TUNNELS, ORG_ADMIN];

/// Scopes of a role name: `admin`/`owner` manage, `developer` reads.
pub fn for_role(role: &str) -> Option<Vec<String>> {
    match role {
        "admin" | "owner" => Some(vec![ORG_ADMIN.into(), MANAGE_TUNNELS.into()]),
        "developer" => Some(vec![READ_TUNNELS.into()]),
        _ => None,
    }
}

/// Parses a space- or comma-separated scope list, refusing unknown scopes.
pub fn parse(list: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for s in list.split([' ', ',']).filter(|s| !s.is_empty()) {
        if !ALL.contains(&s) {
            return Err(format!("unknown scope {s:?} (known: {})", ALL.join(", ")));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    if out.is_empty() {
        return Err("at least one scope is required".into());
    }
    Ok(out)
}
