//! The manager's storage: typed rows and the one interface every query goes through.
//!
//! Services see [`Store`] only; each engine implements it in its own crate
//! (`conduit-store-sqlite`, the embedded default, and `conduit-store-postgres`). Every
//! implementation reports each query to a [`QueryObserver`] (operation, table, outcome,
//! duration): that is what drives the `manager_db_*` families, without the store knowing
//! about Prometheus.
//!
//! Ids are chosen by the caller (random, see `conduit_auth::secret`); times are unix seconds.

use std::fmt;
use std::time::Duration;

/// A user's role: a platform `admin`, or an `operator` or `viewer` of one customer (the same
/// type the access tokens carry).
pub use conduit_auth::Role;

/// A customer (tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Id.
    pub id: String,
    /// Display name, verbatim.
    pub name: String,
    /// Created, unix seconds.
    pub created_at: i64,
}

/// A user, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: String,
    /// E-mail as given (unique regardless of case).
    pub email: String,
    /// Display name, verbatim.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The customer of an operator or viewer; `None` for an admin.
    pub customer_id: Option<String>,
    /// Created, unix seconds.
    pub created_at: i64,
    /// Disabled since, unix seconds: such a user logs in with nothing.
    pub disabled_at: Option<i64>,
}

/// A user with what a login checks.
#[derive(Clone)]
pub struct UserCredentials {
    /// The user.
    pub user: User,
    /// argon2id PHC string.
    pub password_hash: String,
}

impl fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A server (a BMC reached through an agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Id (also the agent's server id).
    pub id: String,
    /// Display name, verbatim.
    pub name: String,
    /// Datacenter id.
    pub datacenter: String,
    /// The agent that reaches it, once known.
    pub agent_id: Option<String>,
    /// `ipmi` or `redfish`.
    pub protocol: String,
    /// What it can do (`power`, `sensors`, `sol`, `vnc`, …), comma-separated.
    pub capabilities: String,
    /// Owning customer; `None` while unassigned.
    pub customer_id: Option<String>,
    /// `active`, `maintenance` or `offline`.
    pub status: String,
    /// Created, unix seconds.
    pub created_at: i64,
    /// Last changed, unix seconds.
    pub updated_at: i64,
}

/// Which servers a list walks.
#[derive(Debug, Clone, Default)]
pub struct ServerFilter {
    /// Only this customer's (the tenancy bound for non-admins).
    pub customer_id: Option<String>,
    /// Only those with no customer.
    pub unassigned: bool,
    /// Only this datacenter's.
    pub datacenter: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only this agent's.
    pub agent_id: Option<String>,
}

/// A page: up to `limit` rows with ids after `after` (keyset paging: stable under inserts).
#[derive(Debug, Clone)]
pub struct Page {
    /// Exclusive lower bound of the ids.
    pub after: Option<String>,
    /// At most this many rows.
    pub limit: u32,
}

/// How many servers one owner has in one datacenter with one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCount {
    /// Owner; `None` for unassigned.
    pub customer_id: Option<String>,
    /// Datacenter.
    pub datacenter: String,
    /// Status.
    pub status: String,
    /// How many.
    pub count: u64,
}

/// A refresh token row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// Public lookup id.
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    /// The login session this token belongs to: every rotation stays in it.
    pub family_id: String,
    /// Owner.
    pub user_id: String,
    /// Issued, unix seconds.
    pub created_at: i64,
    /// Expires, unix seconds.
    pub expires_at: i64,
    /// When it was exchanged for its successor.
    pub spent_at: Option<i64>,
    /// When its family was revoked (logout, reuse).
    pub revoked_at: Option<i64>,
}

/// An API key row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Public lookup id.
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    /// The user who created it.
    pub user_id: String,
    /// Customer it acts for (`None`: platform).
    pub customer_id: Option<String>,
    /// Role it acts with (at most its creator's).
    pub role: Role,
    /// Label, verbatim.
    pub name: String,
    /// Created, unix seconds.
    pub created_at: i64,
    /// Revoked, unix seconds.
    pub revoked_at: Option<i64>,
}

/// An access token as issued: counted while it is unexpired and unrevoked, the same on every
/// replica (`manager_active_tokens`). The token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// Its `jti`.
    pub jti: String,
    /// Its `sid`: the login session or API key it belongs to.
    pub session_id: String,
    /// Its `sub`.
    pub user_id: String,
    /// Its `iat`, unix seconds.
    pub issued_at: i64,
    /// Its `exp`, unix seconds.
    pub expires_at: i64,
}

/// Failed logins counted under one key (an account, or a client network): the throttle's
/// state, in the store so that every replica throttles alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailures {
    /// The key.
    pub key: String,
    /// Failures since the count started.
    pub failures: u32,
    /// The last failure, unix milliseconds.
    pub last_at_ms: i64,
}

/// How long a failure count is kept after its last failure (longer than any throttle window).
pub const LOGIN_FAILURES_KEPT_SECS: i64 = 3600;

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// One access token, by `jti`.
    Token,
    /// Every access token of a login session, by `sid`.
    Session,
    /// An agent credential, by its id.
    Agent,
    /// Every access token of a user (by `sub`) issued at or before `revoked_at`: their role,
    /// customer, password or standing changed.
    User,
}

impl RevocationKind {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Token => "token",
            RevocationKind::Session => "session",
            RevocationKind::Agent => "agent",
            RevocationKind::User => "user",
        }
    }

    /// The kind a stored label names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "token" => Some(RevocationKind::Token),
            "session" => Some(RevocationKind::Session),
            "agent" => Some(RevocationKind::Agent),
            "user" => Some(RevocationKind::User),
            _ => None,
        }
    }
}

/// A revocation, kept until what it names would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The token id, session id or agent credential id.
    pub id: String,
    /// What `id` names.
    pub kind: RevocationKind,
    /// Revoked, unix seconds.
    pub revoked_at: i64,
    /// Dropped from the list after this, unix seconds.
    pub expires_at: i64,
}

/// An Ed25519 signing key as stored (the private key travels with the database, so that every
/// replica signs with the same keys).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// PKCS#8 document.
    pub pkcs8: Vec<u8>,
    /// Created, unix seconds.
    pub created_at: i64,
    /// No longer signs after this (still verifies until its tokens expire).
    pub retired_at: Option<i64>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// One audit record: who did what to which server, when, with what result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Sequence number (assigned by the store; 0 when appending).
    pub seq: i64,
    /// When, unix seconds.
    pub at: i64,
    /// Who: a user id, API key id or gateway id.
    pub actor: String,
    /// `user`, `api_key`, `gateway`.
    pub actor_kind: String,
    /// What: `power.cycle`, `boot.set`, `console.sol`, `server.assign`, …
    pub action: String,
    /// Which server, when the action is on one.
    pub server_id: Option<String>,
    /// The customer the server belonged to then (for tenant-scoped listing).
    pub customer_id: Option<String>,
    /// `ok` or the error code.
    pub result: String,
    /// Free text, verbatim (never secrets).
    pub detail: String,
}

/// A gateway (one per site), as its credential row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Id.
    pub id: String,
    /// Display name, verbatim.
    pub name: String,
    /// The datacenter it serves.
    pub datacenter: String,
    /// Public id of its credential.
    pub credential_id: String,
    /// SHA-256 of the credential's secret.
    pub credential_hash: Vec<u8>,
    /// Where users reach it, as it registered (`https://host:port`).
    pub address: String,
    /// Its version, as it registered.
    pub version: String,
    /// Last Register, unix seconds.
    pub registered_at: Option<i64>,
    /// Last Register or Heartbeat, unix seconds.
    pub last_seen: Option<i64>,
    /// Created, unix seconds.
    pub created_at: i64,
    /// Revoked, unix seconds.
    pub revoked_at: Option<i64>,
}

/// An agent, as its credential row and its last reported link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Id.
    pub id: String,
    /// Display name, verbatim.
    pub name: String,
    /// Its datacenter.
    pub datacenter: String,
    /// Public id of its credential.
    pub credential_id: String,
    /// SHA-256 of the credential's secret.
    pub credential_hash: Vec<u8>,
    /// The gateway it is connected to now (as gateways report).
    pub gateway_id: Option<String>,
    /// Whether that gateway reports it connected.
    pub connected: bool,
    /// Last report, unix seconds.
    pub last_seen: Option<i64>,
    /// Created, unix seconds.
    pub created_at: i64,
    /// Revoked, unix seconds.
    pub revoked_at: Option<i64>,
}

/// What went wrong in the store.
#[derive(Debug)]
pub enum StoreError {
    /// No such row.
    NotFound,
    /// A unique key or reference was violated (e.g. an e-mail already taken).
    Conflict(String),
    /// The database failed (corruption, a bug, a refused statement).
    Backend(String),
    /// The database cannot be reached or is busy past its timeouts; the same call may
    /// succeed later (the API answers `unavailable`).
    Unavailable(String),
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Conflict(m) => write!(f, "conflict: {m}"),
            StoreError::Backend(m) => write!(f, "database: {m}"),
            StoreError::Unavailable(m) => write!(f, "database unavailable: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Store result.
pub type StoreResult<T> = Result<T, StoreError>;

/// The kind of a query, as `manager_db_queries_total{operation}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOp {
    /// SELECT.
    Select,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
}

impl QueryOp {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryOp::Select => "select",
            QueryOp::Insert => "insert",
            QueryOp::Update => "update",
            QueryOp::Delete => "delete",
        }
    }
}

/// Told about every query: `(operation, table, outcome, duration)`; outcome is `ok`,
/// `not_found`, `conflict` or `error`.
pub type QueryObserver =
    std::sync::Arc<dyn Fn(QueryOp, &'static str, &'static str, Duration) + Send + Sync>;

/// The manager's storage. Every method is one transaction.
pub trait Store: Send + Sync + fmt::Debug {
    /// Open connections now (`manager_db_connections`).
    fn connections(&self) -> usize;

    /// Creates a customer.
    fn create_customer(&self, c: &Customer) -> StoreResult<()>;
    /// One customer.
    fn customer(&self, id: &str) -> StoreResult<Customer>;
    /// A page of customers by id.
    fn customers(&self, page: &Page) -> StoreResult<Vec<Customer>>;

    /// Creates a user; `Conflict` when the e-mail is taken (in any case).
    fn create_user(&self, u: &User, password_hash: &str) -> StoreResult<()>;
    /// A user by id.
    fn user(&self, id: &str) -> StoreResult<User>;
    /// A user and its hash by e-mail (any case).
    fn user_by_email(&self, email: &str) -> StoreResult<UserCredentials>;
    /// A page of users, all or one customer's.
    fn users(&self, customer_id: Option<&str>, page: &Page) -> StoreResult<Vec<User>>;
    /// Replaces a user's password hash (a rehash on login, a password change).
    fn set_password_hash(&self, user_id: &str, hash: &str) -> StoreResult<()>;
    /// Changes a user's name, role, customer and standing (the e-mail and id stay) from `was`
    /// to `now`: a [`StoreError::Conflict`] if the row is no longer `was`.
    fn update_user(&self, was: &User, now: &User) -> StoreResult<()>;
    /// Deletes a user, with their refresh tokens and API keys.
    fn delete_user(&self, id: &str) -> StoreResult<()>;
    /// Revokes every refresh token of a user at `now` (their sessions end at the next
    /// refresh); how many were live.
    fn revoke_user_refresh(&self, user_id: &str, now: i64) -> StoreResult<u64>;
    /// How many enabled admins exist (first-run set-up creates one when there is none).
    fn admin_count(&self) -> StoreResult<u64>;

    /// Creates a datacenter (idempotent: an existing id is fine).
    fn ensure_datacenter(&self, id: &str) -> StoreResult<()>;

    /// Creates a server.
    fn create_server(&self, s: &Server) -> StoreResult<()>;
    /// One server.
    fn server(&self, id: &str) -> StoreResult<Server>;
    /// A page of servers matching `filter`.
    fn servers(&self, filter: &ServerFilter, page: &Page) -> StoreResult<Vec<Server>>;
    /// Replaces a server's mutable fields (name, status, capabilities, agent, protocol,
    /// datacenter, customer), stamping `updated_at`.
    fn update_server(&self, s: &Server) -> StoreResult<()>;
    /// Deletes a server.
    fn delete_server(&self, id: &str) -> StoreResult<()>;
    /// Server counts by owner, datacenter and status, for `manager_servers_total`.
    fn server_counts(&self) -> StoreResult<Vec<ServerCount>>;

    /// Stores a new refresh token.
    fn insert_refresh(&self, t: &RefreshToken) -> StoreResult<()>;
    /// Spends refresh token `id` at `now` and stores its successor, atomically; returns the
    /// spent row as it was before (so the caller sees a reuse: `spent_at` or `revoked_at`
    /// already set, in which case nothing was stored).
    fn rotate_refresh(&self, id: &str, now: i64, next: &RefreshToken) -> StoreResult<RefreshToken>;
    /// A refresh token row.
    fn refresh(&self, id: &str) -> StoreResult<RefreshToken>;
    /// Revokes every token of a family at `now`; returns how many were live.
    fn revoke_family(&self, family_id: &str, now: i64) -> StoreResult<u64>;

    /// Stores an API key.
    fn insert_api_key(&self, k: &ApiKey) -> StoreResult<()>;
    /// One API key.
    fn api_key(&self, id: &str) -> StoreResult<ApiKey>;
    /// API keys of a user.
    fn api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>>;
    /// Revokes an API key at `now`.
    fn revoke_api_key(&self, id: &str, now: i64) -> StoreResult<()>;

    /// Adds a revocation (idempotent; again, it moves its time forward, never back), and in
    /// the same transaction stops counting the access tokens it covers.
    fn revoke(&self, r: &Revocation) -> StoreResult<()>;
    /// Every revocation not yet expired at `now`.
    fn revocations(&self, now: i64) -> StoreResult<Vec<Revocation>>;

    /// Every signing key.
    fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Stores a signing key.
    fn insert_signing_key(&self, k: &StoredKey) -> StoreResult<()>;
    /// Stores `new` and, in the same transaction, retires every other unretired key at
    /// `new.created_at` — or deletes every other key if `drop_old`.
    fn rotate_signing_key(&self, new: &StoredKey, drop_old: bool) -> StoreResult<()>;
    /// Records an access token as issued.
    fn record_access_token(&self, t: &AccessToken) -> StoreResult<()>;
    /// Access tokens unexpired at `now` that no revocation covers.
    fn active_access_tokens(&self, now: i64) -> StoreResult<u64>;

    /// The failure counts under `keys` whose last failure is after `since_ms`.
    fn login_failures(&self, keys: &[&str], since_ms: i64) -> StoreResult<Vec<LoginFailures>>;
    /// Counts one failed login at `at_ms` under each of `keys`, in one transaction; a count
    /// whose last failure is at or before `since_ms` starts again from one.
    fn login_failed(&self, keys: &[&str], at_ms: i64, since_ms: i64) -> StoreResult<()>;
    /// Forgets the failures under `key` (its login succeeded).
    fn clear_login_failures(&self, key: &str) -> StoreResult<()>;

    /// Deletes what can no longer matter at `now`: expired revocations, refresh and access
    /// tokens, failure counts older than [`LOGIN_FAILURES_KEPT_SECS`], and signing keys
    /// retired before `keys_retired_before`; how many rows went.
    fn purge_expired(&self, now: i64, keys_retired_before: i64) -> StoreResult<u64>;

    /// Creates a gateway with its credential.
    fn create_gateway(&self, g: &Gateway) -> StoreResult<()>;
    /// A gateway by id.
    fn gateway(&self, id: &str) -> StoreResult<Gateway>;
    /// A gateway by its credential's public id.
    fn gateway_by_credential(&self, credential_id: &str) -> StoreResult<Gateway>;
    /// Every gateway.
    fn gateways(&self) -> StoreResult<Vec<Gateway>>;
    /// Records a Register (`registered = true`) or Heartbeat at `now`.
    fn gateway_seen(&self, id: &str, address: Option<(&str, &str)>, now: i64) -> StoreResult<()>;
    /// Revokes a gateway's credential.
    fn revoke_gateway(&self, id: &str, now: i64) -> StoreResult<()>;

    /// Creates an agent with its credential.
    fn create_agent(&self, a: &Agent) -> StoreResult<()>;
    /// An agent by id.
    fn agent(&self, id: &str) -> StoreResult<Agent>;
    /// An agent by its credential's public id.
    fn agent_by_credential(&self, credential_id: &str) -> StoreResult<Agent>;
    /// A page of agents.
    fn agents(&self, page: &Page) -> StoreResult<Vec<Agent>>;
    /// Gateway `gateway_id`'s report: these agents are connected to it now, and no others.
    fn report_agents(&self, gateway_id: &str, connected: &[String], now: i64) -> StoreResult<()>;
    /// Revokes an agent's credential.
    fn revoke_agent(&self, id: &str, now: i64) -> StoreResult<()>;

    /// Appends audit records in one transaction: all or none.
    fn append_audits(&self, records: &[AuditRecord]) -> StoreResult<()>;
    /// Appends an audit record; returns its sequence number.
    fn append_audit(&self, r: &AuditRecord) -> StoreResult<i64>;
    /// Audit records after `after_seq`, oldest first, all or one customer's.
    fn audit(
        &self,
        customer_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;
}
