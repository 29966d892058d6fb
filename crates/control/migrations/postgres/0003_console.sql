-- The console (SPEC §7.3): people who sign in, their sessions, pending OIDC sign-ins and
-- the organization's SSO settings. Keep in step with ../sqlite/0003_console.sql.

ALTER TABLE organizations ADD COLUMN sso_required BIGINT NOT NULL DEFAULT 0;

-- One OIDC provider per organization. The client secret is sealed under the master key.
CREATE TABLE sso_configs (
    org_id TEXT PRIMARY KEY REFERENCES organizations(id),
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret_sealed BYTEA NOT NULL,
    allowed_domains TEXT NOT NULL,
    auto_provision_role TEXT,
    updated_at BIGINT NOT NULL
);

-- `login` is the verified e-mail address for SSO users (lowercase), or a name such as
-- `admin` for the bootstrap password user. `password_hash` is a PBKDF2 string or NULL.
CREATE TABLE users (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    login TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT,
    created_at BIGINT NOT NULL,
    disabled_at BIGINT,
    last_login_at BIGINT,
    UNIQUE (org_id, login)
);

-- Only the SHA-256 of a session id is stored.
CREATE TABLE console_sessions (
    id_hash BYTEA PRIMARY KEY,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    method TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions(user_id);

-- An OIDC sign-in between the redirect to the provider and its callback.
CREATE TABLE console_logins (
    state_hash BYTEA PRIMARY KEY,
    org_id TEXT NOT NULL,
    nonce_sealed BYTEA NOT NULL,
    verifier_sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
