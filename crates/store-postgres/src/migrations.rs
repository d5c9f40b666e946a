//! Versioned schema migrations for PostgreSQL, applied in order at start; the
//! `schema_version` table holds one row per version applied.
//!
//! The list is PostgreSQL's own, but version N brings the schema to what SQLite's migration N
//! does (same tables, keys, checks and triggers, in PostgreSQL's dialect), so one number names
//! one schema on both engines. Append only: a released migration is never edited.
//!
//! Dialect: BIGINT for SQLite's INTEGER (PostgreSQL's INTEGER is 32-bit), BYTEA for BLOB,
//! identity columns for AUTOINCREMENT, plpgsql functions raising exceptions (SQLSTATE P0001)
//! for triggers, and `COLLATE "C"` on every key column so that keyset pages order by bytes,
//! like SQLite, whatever the database's collation.

/// Advisory lock held while migrating, so that replicas starting together migrate once.
pub const LOCK_MIGRATE: i64 = 0x636f_6e64_0001;
/// Advisory lock taken by the keep-an-admin trigger (its literal is in migration 3).
pub const LOCK_ADMINS: i64 = 0x636f_6e64_0002;
/// Advisory lock taken by every audit append, so that `seq` order is commit order.
pub const LOCK_AUDIT: i64 = 0x636f_6e64_0003;

/// Creates the version table; run after [`LOCK_MIGRATE`] is held (two concurrent
/// `CREATE TABLE IF NOT EXISTS` can otherwise both try to create it).
pub const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (\
     version BIGINT PRIMARY KEY, \
     applied_at TIMESTAMPTZ NOT NULL DEFAULT now())";

/// The migrations; index + 1 is the version each brings the schema to.
pub const MIGRATIONS: &[&str] = &[
    // 1: identity, tenancy, inventory, audit.
    r#"
CREATE TABLE customers (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT COLLATE "C" PRIMARY KEY,
    email         TEXT COLLATE "C" NOT NULL,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CONSTRAINT users_role CHECK (role IN ('admin', 'operator', 'viewer')),
    customer_id   TEXT COLLATE "C" REFERENCES customers(id) ON DELETE RESTRICT,
    created_at    BIGINT NOT NULL,
    -- an admin belongs to no customer; everyone else to exactly one
    CONSTRAINT users_admin_has_no_customer CHECK ((role = 'admin') = (customer_id IS NULL))
);
-- unique regardless of case, like SQLite's COLLATE NOCASE: under "C", lower() folds ASCII only
CREATE UNIQUE INDEX users_email ON users (lower(email));
CREATE INDEX users_customer ON users (customer_id, id);

CREATE TABLE datacenters (
    id          TEXT COLLATE "C" PRIMARY KEY
);

CREATE TABLE servers (
    id           TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT NOT NULL,
    datacenter   TEXT COLLATE "C" NOT NULL REFERENCES datacenters(id),
    agent_id     TEXT COLLATE "C",
    protocol     TEXT NOT NULL CONSTRAINT servers_protocol CHECK (protocol IN ('ipmi', 'redfish')),
    capabilities TEXT NOT NULL,
    customer_id  TEXT COLLATE "C" REFERENCES customers(id) ON DELETE SET NULL,
    status       TEXT NOT NULL
        CONSTRAINT servers_status CHECK (status IN ('active', 'maintenance', 'offline')),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX servers_customer ON servers (customer_id, id);

CREATE TABLE refresh_tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    secret_hash BYTEA NOT NULL,
    family_id   TEXT COLLATE "C" NOT NULL,
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    spent_at    BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX refresh_family ON refresh_tokens (family_id);
CREATE INDEX refresh_user ON refresh_tokens (user_id);

CREATE TABLE api_keys (
    id          TEXT COLLATE "C" PRIMARY KEY,
    secret_hash BYTEA NOT NULL,
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    customer_id TEXT COLLATE "C" REFERENCES customers(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CONSTRAINT api_keys_role CHECK (role IN ('admin', 'operator', 'viewer')),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    -- an admin key acts for no customer; every other key for exactly one
    CONSTRAINT api_keys_admin_has_no_customer CHECK ((role = 'admin') = (customer_id IS NULL))
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE revocations (
    id          TEXT COLLATE "C" NOT NULL,
    kind        TEXT NOT NULL CONSTRAINT revocations_kind CHECK (kind IN ('token', 'session', 'agent')),
    revoked_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX revocations_expiry ON revocations (expires_at);

CREATE TABLE signing_keys (
    kid         TEXT COLLATE "C" PRIMARY KEY,
    pkcs8       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT,
    -- insertion order, the tie-break SQLite's rowid gives
    ord         BIGINT GENERATED ALWAYS AS IDENTITY
);

CREATE TABLE audit (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    actor_kind  TEXT NOT NULL,
    action      TEXT NOT NULL,
    server_id   TEXT COLLATE "C",
    customer_id TEXT COLLATE "C",
    result      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_customer ON audit (customer_id, seq);
-- append-only, enforced by the database itself (TRUNCATE included: it fires no row trigger)
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"#,
    // 2: gateways and agents, and the credentials an admin issues them.
    r#"
CREATE TABLE gateways (
    id              TEXT COLLATE "C" PRIMARY KEY,
    name            TEXT NOT NULL,
    datacenter      TEXT COLLATE "C" NOT NULL REFERENCES datacenters(id),
    credential_id   TEXT COLLATE "C" NOT NULL UNIQUE,
    credential_hash BYTEA NOT NULL,
    address         TEXT NOT NULL DEFAULT '',
    version         TEXT NOT NULL DEFAULT '',
    registered_at   BIGINT,
    last_seen       BIGINT,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);

CREATE TABLE agents (
    id              TEXT COLLATE "C" PRIMARY KEY,
    name            TEXT NOT NULL,
    datacenter      TEXT COLLATE "C" NOT NULL REFERENCES datacenters(id),
    credential_id   TEXT COLLATE "C" NOT NULL UNIQUE,
    credential_hash BYTEA NOT NULL,
    gateway_id      TEXT COLLATE "C" REFERENCES gateways(id) ON DELETE SET NULL,
    connected       BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen       BIGINT,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);
CREATE INDEX agents_gateway ON agents (gateway_id);
"#,
    // 3: users can be disabled; a revocation can name a user (every token issued to them up
    // to its time).
    r#"
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
-- someone can always log in to administer: the last enabled admin is neither demoted,
-- disabled nor deleted. Under READ COMMITTED two transactions removing the last two admins
-- would each still see the other's; the advisory lock (LOCK_ADMINS) makes the second wait
-- for the first to commit, and its check then runs on a fresh snapshot.
CREATE FUNCTION users_keep_an_admin() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(109330244567042);
    IF NOT EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND disabled_at IS NULL) THEN
        RAISE EXCEPTION 'the last enabled admin stays one';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_keep_an_admin_update AFTER UPDATE ON users FOR EACH ROW
    WHEN (OLD.role = 'admin' AND OLD.disabled_at IS NULL
          AND NOT (NEW.role = 'admin' AND NEW.disabled_at IS NULL))
    EXECUTE FUNCTION users_keep_an_admin();
CREATE TRIGGER users_keep_an_admin_delete AFTER DELETE ON users FOR EACH ROW
    WHEN (OLD.role = 'admin' AND OLD.disabled_at IS NULL)
    EXECUTE FUNCTION users_keep_an_admin();
ALTER TABLE revocations DROP CONSTRAINT revocations_kind,
    ADD CONSTRAINT revocations_kind CHECK (kind IN ('token', 'session', 'agent', 'user'));
"#,
    // 4: state every replica must share: the access tokens issued (counted while live) and
    // the failed-login counts of the throttle.
    r#"
CREATE TABLE access_tokens (
    jti         TEXT COLLATE "C" PRIMARY KEY,
    session_id  TEXT COLLATE "C" NOT NULL,
    user_id     TEXT COLLATE "C" NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_at);
CREATE INDEX access_tokens_session ON access_tokens (session_id);
CREATE INDEX access_tokens_user ON access_tokens (user_id, issued_at);
CREATE TABLE login_failures (
    key         TEXT COLLATE "C" PRIMARY KEY,
    failures    BIGINT NOT NULL CONSTRAINT login_failures_positive CHECK (failures > 0),
    last_at_ms  BIGINT NOT NULL
);
CREATE INDEX login_failures_last ON login_failures (last_at_ms);
"#,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_trigger_takes_the_named_lock() {
        assert_eq!(LOCK_ADMINS, 109_330_244_567_042);
        assert!(MIGRATIONS[2].contains(&format!("pg_advisory_xact_lock({LOCK_ADMINS})")));
    }
}
