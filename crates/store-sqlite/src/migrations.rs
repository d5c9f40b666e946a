//! Versioned schema migrations, applied in order at start (SQLite's `user_version` holds the
//! version reached). Append only: a released migration is never edited.

/// The migrations; index + 1 is the version each brings the schema to.
pub const MIGRATIONS: &[&str] = &[
    // 1: identity, tenancy, inventory, audit.
    r#"
CREATE TABLE customers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    customer_id   TEXT REFERENCES customers(id) ON DELETE RESTRICT,
    created_at    INTEGER NOT NULL,
    -- an admin belongs to no customer; everyone else to exactly one
    CHECK ((role = 'admin') = (customer_id IS NULL))
) STRICT;
CREATE INDEX users_customer ON users(customer_id, id);

CREATE TABLE datacenters (
    id          TEXT PRIMARY KEY
) STRICT;

CREATE TABLE servers (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    datacenter   TEXT NOT NULL REFERENCES datacenters(id),
    agent_id     TEXT,
    protocol     TEXT NOT NULL CHECK (protocol IN ('ipmi', 'redfish')),
    capabilities TEXT NOT NULL,
    customer_id  TEXT REFERENCES customers(id) ON DELETE SET NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'maintenance', 'offline')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX servers_customer ON servers(customer_id, id);

CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    family_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    spent_at    INTEGER,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX refresh_family ON refresh_tokens(family_id);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    customer_id TEXT REFERENCES customers(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    -- an admin key acts for no customer; every other key for exactly one
    CHECK ((role = 'admin') = (customer_id IS NULL))
) STRICT;
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE revocations (
    id          TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('token', 'session', 'agent')),
    revoked_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT;
CREATE INDEX revocations_expiry ON revocations(expires_at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    pkcs8       BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
) STRICT;

CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    actor_kind  TEXT NOT NULL,
    action      TEXT NOT NULL,
    server_id   TEXT,
    customer_id TEXT,
    result      TEXT NOT NULL,
    detail      TEXT NOT NULL
) STRICT;
CREATE INDEX audit_customer ON audit(customer_id, seq);
-- append-only, enforced by the database itself
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
    // 2: gateways and agents, and the credentials an admin issues them.
    r#"
CREATE TABLE gateways (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    datacenter      TEXT NOT NULL REFERENCES datacenters(id),
    credential_id   TEXT NOT NULL UNIQUE,
    credential_hash BLOB NOT NULL,
    address         TEXT NOT NULL DEFAULT '',
    version         TEXT NOT NULL DEFAULT '',
    registered_at   INTEGER,
    last_seen       INTEGER,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
) STRICT;

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    datacenter      TEXT NOT NULL REFERENCES datacenters(id),
    credential_id   TEXT NOT NULL UNIQUE,
    credential_hash BLOB NOT NULL,
    gateway_id      TEXT REFERENCES gateways(id) ON DELETE SET NULL,
    connected       INTEGER NOT NULL DEFAULT 0,
    last_seen       INTEGER,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
) STRICT;
CREATE INDEX agents_gateway ON agents(gateway_id);
"#,
    // 3: users can be disabled; a revocation can name a user (every token issued to them up
    // to its time), which needs the kind's CHECK rebuilt.
    r#"
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
-- someone can always log in to administer: the last enabled admin is neither demoted,
-- disabled nor deleted (enforced here, so two admins racing cannot both succeed)
CREATE TRIGGER users_keep_an_admin_update AFTER UPDATE ON users
    WHEN OLD.role = 'admin' AND OLD.disabled_at IS NULL
     AND NOT EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND disabled_at IS NULL)
    BEGIN SELECT RAISE(ABORT, 'the last enabled admin stays one'); END;
CREATE TRIGGER users_keep_an_admin_delete AFTER DELETE ON users
    WHEN OLD.role = 'admin' AND OLD.disabled_at IS NULL
     AND NOT EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND disabled_at IS NULL)
    BEGIN SELECT RAISE(ABORT, 'the last enabled admin stays one'); END;
CREATE TABLE revocations_v3 (
    id          TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('token', 'session', 'agent', 'user')),
    revoked_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT;
INSERT INTO revocations_v3 SELECT id, kind, revoked_at, expires_at FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_v3 RENAME TO revocations;
CREATE INDEX revocations_expiry ON revocations(expires_at);
"#,
    // 4: state every replica must share: the access tokens issued (counted while live) and
    // the failed-login counts of the throttle.
    r#"
CREATE TABLE access_tokens (
    jti TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;
CREATE INDEX access_tokens_expiry ON access_tokens(expires_at);
CREATE INDEX access_tokens_session ON access_tokens(session_id);
CREATE INDEX access_tokens_user ON access_tokens(user_id, issued_at);
CREATE TABLE login_failures (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL CHECK (failures > 0),
    last_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX login_failures_last ON login_failures(last_at_ms);
"#,
];
