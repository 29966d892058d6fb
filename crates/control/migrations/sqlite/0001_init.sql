-- Schema of the control plane (SQLite). Keep in step with ../postgres/0001_init.sql.
-- Times are Unix milliseconds. Rows are never deleted: archived tunnels keep their domain.

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    audit_head BLOB NOT NULL,
    audit_count INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE workspaces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    archived_at INTEGER
);

CREATE TABLE tunnels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    display_name TEXT,
    domain TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    archived_at INTEGER,
    token_id TEXT NOT NULL UNIQUE,
    token_hash BLOB NOT NULL,
    token_sealed BLOB NOT NULL,
    token_created_at INTEGER NOT NULL
);
CREATE INDEX tunnels_org ON tunnels(org_id, archived_at);

CREATE TABLE certificates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tunnel_id TEXT NOT NULL REFERENCES tunnels(id),
    fingerprint TEXT NOT NULL,
    subject TEXT NOT NULL,
    pem TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    archived_at INTEGER
);
CREATE INDEX certificates_tunnel ON certificates(tunnel_id, archived_at);

CREATE TABLE service_accounts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    archived_at INTEGER
);

CREATE TABLE credentials (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    workspace_id TEXT,
    name TEXT NOT NULL,
    secret_hash BLOB NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);

CREATE TABLE federation_issuers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    issuer_url TEXT NOT NULL,
    jwks_json TEXT,
    jwks_url TEXT,
    created_at INTEGER NOT NULL,
    archived_at INTEGER
);

CREATE TABLE federation_rules (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    issuer_id TEXT NOT NULL REFERENCES federation_issuers(id),
    name TEXT NOT NULL,
    subject TEXT NOT NULL,
    audience TEXT NOT NULL,
    service_account_id TEXT NOT NULL REFERENCES service_accounts(id),
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    scope TEXT NOT NULL,
    token_lifetime_seconds INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    archived_at INTEGER
);

CREATE TABLE connections (
    connection_id TEXT PRIMARY KEY,
    tunnel_id TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    conn_index INTEGER NOT NULL,
    peer TEXT NOT NULL,
    registered_at INTEGER NOT NULL
);
CREATE INDEX connections_tunnel ON connections(tunnel_id);

CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    chain_index INTEGER NOT NULL,
    time INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT,
    details TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    UNIQUE (org_id, chain_index)
);
