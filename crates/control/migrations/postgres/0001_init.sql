-- Schema of the control plane (PostgreSQL). Keep in step with ../sqlite/0001_init.sql.
-- Times are Unix milliseconds. Rows are never deleted: archived tunnels keep their domain.

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    audit_head BYTEA NOT NULL,
    audit_count BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE workspaces (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    is_default BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    archived_at BIGINT
);

CREATE TABLE tunnels (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    display_name TEXT,
    domain TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    archived_at BIGINT,
    token_id TEXT NOT NULL UNIQUE,
    token_hash BYTEA NOT NULL,
    token_sealed BYTEA NOT NULL,
    token_created_at BIGINT NOT NULL
);
CREATE INDEX tunnels_org ON tunnels(org_id, archived_at);

CREATE TABLE certificates (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tunnel_id TEXT NOT NULL REFERENCES tunnels(id),
    fingerprint TEXT NOT NULL,
    subject TEXT NOT NULL,
    pem TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    archived_at BIGINT
);
CREATE INDEX certificates_tunnel ON certificates(tunnel_id, archived_at);

CREATE TABLE service_accounts (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    archived_at BIGINT
);

CREATE TABLE credentials (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    workspace_id TEXT,
    name TEXT NOT NULL,
    secret_hash BYTEA NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE federation_issuers (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    issuer_url TEXT NOT NULL,
    jwks_json TEXT,
    jwks_url TEXT,
    created_at BIGINT NOT NULL,
    archived_at BIGINT
);

CREATE TABLE federation_rules (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    issuer_id TEXT NOT NULL REFERENCES federation_issuers(id),
    name TEXT NOT NULL,
    subject TEXT NOT NULL,
    audience TEXT NOT NULL,
    service_account_id TEXT NOT NULL REFERENCES service_accounts(id),
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    scope TEXT NOT NULL,
    token_lifetime_seconds BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    archived_at BIGINT
);

CREATE TABLE connections (
    connection_id TEXT PRIMARY KEY,
    tunnel_id TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    conn_index BIGINT NOT NULL,
    peer TEXT NOT NULL,
    registered_at BIGINT NOT NULL
);
CREATE INDEX connections_tunnel ON connections(tunnel_id);

CREATE TABLE audit_events (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    chain_index BIGINT NOT NULL,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT,
    details TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    UNIQUE (org_id, chain_index)
);
