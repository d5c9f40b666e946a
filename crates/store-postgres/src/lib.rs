//! The shared store: conduit-store's [`Store`] on PostgreSQL 15, for managers running as
//! several replicas over one database.
//!
//! Semantics are SQLite's (`conduit-store-sqlite`), query for query; where replicas could race,
//! the database serializes them:
//! - every write method is one transaction (READ COMMITTED); a serialization failure or
//!   deadlock (40001, 40P01) reruns it once;
//! - `rotate_refresh` locks the token row (`FOR UPDATE`), so one refresh token rotates once;
//! - audit appends hold an advisory lock until commit, so `seq` order is commit order and a
//!   reader paging by `seq > after` never skips a row committed late;
//! - the keep-an-admin trigger takes an advisory lock, so two demotions cannot both pass;
//! - migrations run under an advisory lock, all pending versions in one transaction.
//!
//! Errors: constraint and trigger violations (23505, 23503, 23514, 23502, P0001) are
//! [`StoreError::Conflict`]; a database that cannot be reached (I/O, timeouts, 08*, 57P0x,
//! 57014, 53300, an exhausted pool) is [`StoreError::Unavailable`]; anything else is
//! [`StoreError::Backend`].

pub mod migrations;

use std::fmt;
use std::time::{Duration, Instant};

use conduit_pg::{Config, Conn, Pool, Row, ToSql};
use conduit_store::*;

/// How long a query waits for a pooled connection before failing as unavailable.
const CHECKOUT_WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    /// The database, its password redacted (for logs and `Debug`).
    target: String,
    observe: QueryObserver,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Why a transaction body stopped.
#[derive(Debug)]
enum Fail {
    /// No such row.
    NotFound,
    /// The client or the server failed.
    Pg(conduit_pg::Error),
    /// A row held something this build cannot read.
    Data(String),
}

impl From<conduit_pg::Error> for Fail {
    fn from(e: conduit_pg::Error) -> Self {
        Fail::Pg(e)
    }
}

type Res<T> = Result<T, Fail>;

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`) with at most `pool_size`
    /// connections and applies pending migrations.
    pub fn open(url: &str, pool_size: usize, observe: QueryObserver) -> StoreResult<PgStore> {
        // the error names no part of the URL: it may hold the password
        let config =
            Config::parse(url).map_err(|e| StoreError::Backend(format!("postgres url: {e}")))?;
        PgStore::with_config(config, pool_size, observe)
    }

    /// [`PgStore::open`] with a parsed configuration.
    pub fn with_config(
        config: Config,
        pool_size: usize,
        observe: QueryObserver,
    ) -> StoreResult<PgStore> {
        let target = format!("{config:?}");
        let store = PgStore {
            pool: Pool::new(config, pool_size.max(1)),
            target,
            observe,
        };
        let version = store
            .migrate()
            .map_err(|e| match store_error("schema_version", e) {
                StoreError::Unavailable(m) => {
                    StoreError::Unavailable(format!("{}: migrate: {m}", store.target))
                }
                StoreError::Backend(m) | StoreError::Conflict(m) => {
                    StoreError::Backend(format!("{}: migrate: {m}", store.target))
                }
                StoreError::NotFound => StoreError::Backend(format!("{}: migrate", store.target)),
            })?;
        log::info!("database {} at schema version {version}", store.target);
        Ok(store)
    }

    /// The connection pool, for diagnostics and tests (queries through it are not observed).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies the migrations past the recorded version, all in one transaction under
    /// [`migrations::LOCK_MIGRATE`]; returns the version reached.
    fn migrate(&self) -> Res<usize> {
        let known = migrations::MIGRATIONS.len();
        self.attempt(true, &mut |c| {
            c.execute(
                "SELECT pg_advisory_xact_lock($1::BIGINT)",
                &[&migrations::LOCK_MIGRATE],
            )?;
            c.batch(migrations::VERSION_TABLE)?;
            let have: i64 = c
                .query("SELECT COALESCE(max(version), 0) FROM schema_version", &[])?
                .first()
                .map(|r| r.get::<i64>(0))
                .transpose()?
                .unwrap_or(0);
            let have = usize::try_from(have).map_err(|_| Fail::Data(format!("version {have}")))?;
            if have > known {
                return Err(Fail::Data(format!(
                    "the database is at schema version {have}, newer than this manager's {known}"
                )));
            }
            for (i, sql) in migrations::MIGRATIONS.iter().enumerate().skip(have) {
                c.batch(sql)?;
                let version = i as i64 + 1;
                c.execute(
                    "INSERT INTO schema_version (version) VALUES ($1::BIGINT)",
                    &[&version],
                )?;
                log::info!("database schema migrated to version {version}");
            }
            Ok(known)
        })
    }

    /// Runs `f` as one transaction (`tx`) or as single statements, reporting it to the
    /// observer; a serialization failure or deadlock reruns it once.
    fn run<T>(
        &self,
        op: QueryOp,
        table: &'static str,
        tx: bool,
        mut f: impl FnMut(&mut Conn) -> Res<T>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let mut result = self.attempt(tx, &mut f);
        if matches!(&result, Err(Fail::Pg(e)) if e.is_retryable()) {
            result = self.attempt(tx, &mut f);
        }
        let result = result.map_err(|e| store_error(table, e));
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::NotFound) => "not_found",
            Err(StoreError::Conflict(_)) => "conflict",
            Err(StoreError::Backend(_) | StoreError::Unavailable(_)) => "error",
        };
        (self.observe)(op, table, outcome, start.elapsed());
        result
    }

    fn write<T>(
        &self,
        op: QueryOp,
        table: &'static str,
        f: impl FnMut(&mut Conn) -> Res<T>,
    ) -> StoreResult<T> {
        self.run(op, table, true, f)
    }

    fn read<T>(&self, table: &'static str, f: impl FnMut(&mut Conn) -> Res<T>) -> StoreResult<T> {
        self.run(QueryOp::Select, table, false, f)
    }

    /// One try: a pooled connection, and BEGIN … COMMIT around `f` if `tx` (rolled back on
    /// every error).
    fn attempt<T>(&self, tx: bool, f: &mut impl FnMut(&mut Conn) -> Res<T>) -> Res<T> {
        let mut conn = self.pool.get(CHECKOUT_WAIT)?;
        let c: &mut Conn = &mut conn;
        if !tx {
            return f(c);
        }
        c.batch("BEGIN")?;
        let result = f(c).and_then(|v| {
            c.batch("COMMIT")?;
            Ok(v)
        });
        if result.is_err() {
            // a broken connection fails this too, and the pool drops it
            let _ = c.batch("ROLLBACK");
        }
        result
    }
}

/// Maps a failure of a query on `table`.
fn store_error(table: &str, e: Fail) -> StoreError {
    match e {
        Fail::NotFound => StoreError::NotFound,
        Fail::Data(m) => StoreError::Backend(format!("{table}: {m}")),
        Fail::Pg(e) => match e.code() {
            Some("23505" | "23503" | "23514" | "23502" | "P0001") => {
                StoreError::Conflict(e.to_string())
            }
            code if e.is_unavailable() || code.is_some_and(unavailable_code) => {
                StoreError::Unavailable(format!("{table}: {e}"))
            }
            _ => StoreError::Backend(format!("{table}: {e}")),
        },
    }
}

/// SQLSTATEs that mean the database cannot serve now (connection failures, shutdown,
/// statement timeout, too many connections), not that the query was wrong.
fn unavailable_code(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P0") || code == "57014" || code == "53300"
}

/// The single row `sql` returns, mapped by `f`; `NotFound` when there is none.
fn one<T>(c: &mut Conn, sql: &str, params: &[&dyn ToSql], f: impl Fn(&Row) -> Res<T>) -> Res<T> {
    match c.query(sql, params)?.first() {
        Some(r) => f(r),
        None => Err(Fail::NotFound),
    }
}

/// Every row `sql` returns, mapped by `f`.
fn all<T>(
    c: &mut Conn,
    sql: &str,
    params: &[&dyn ToSql],
    f: impl Fn(&Row) -> Res<T>,
) -> Res<Vec<T>> {
    c.query(sql, params)?.iter().map(f).collect()
}

/// `Ok(())` when a statement changed a row, `NotFound` otherwise.
fn changed(n: u64) -> Res<()> {
    if n == 0 {
        Err(Fail::NotFound)
    } else {
        Ok(())
    }
}

fn count(r: &Row) -> Res<u64> {
    let n: i64 = r.get(0)?;
    u64::try_from(n).map_err(|_| Fail::Data(format!("count {n}")))
}

fn role(s: String) -> Res<Role> {
    Role::parse(&s).ok_or_else(|| Fail::Data(format!("unknown role {s:?}")))
}

fn customer_row(r: &Row) -> Res<Customer> {
    Ok(Customer {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
    })
}

const USER_COLS: &str = "id, email, name, role, customer_id, created_at, disabled_at";

fn user_row(r: &Row) -> Res<User> {
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        role: role(r.get(3)?)?,
        customer_id: r.get(4)?,
        created_at: r.get(5)?,
        disabled_at: r.get(6)?,
    })
}

const SERVER_COLS: &str =
    "id, name, datacenter, agent_id, protocol, capabilities, customer_id, status, created_at, updated_at";

fn server_row(r: &Row) -> Res<Server> {
    Ok(Server {
        id: r.get(0)?,
        name: r.get(1)?,
        datacenter: r.get(2)?,
        agent_id: r.get(3)?,
        protocol: r.get(4)?,
        capabilities: r.get(5)?,
        customer_id: r.get(6)?,
        status: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

const REFRESH_COLS: &str =
    "id, secret_hash, family_id, user_id, created_at, expires_at, spent_at, revoked_at";

fn refresh_row(r: &Row) -> Res<RefreshToken> {
    Ok(RefreshToken {
        id: r.get(0)?,
        secret_hash: r.get(1)?,
        family_id: r.get(2)?,
        user_id: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        spent_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

const API_KEY_COLS: &str =
    "id, secret_hash, user_id, customer_id, role, name, created_at, revoked_at";

fn api_key_row(r: &Row) -> Res<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        secret_hash: r.get(1)?,
        user_id: r.get(2)?,
        customer_id: r.get(3)?,
        role: role(r.get(4)?)?,
        name: r.get(5)?,
        created_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

const GATEWAY_COLS: &str =
    "id, name, datacenter, credential_id, credential_hash, address, version, \
     registered_at, last_seen, created_at, revoked_at";

fn gateway_row(r: &Row) -> Res<Gateway> {
    Ok(Gateway {
        id: r.get(0)?,
        name: r.get(1)?,
        datacenter: r.get(2)?,
        credential_id: r.get(3)?,
        credential_hash: r.get(4)?,
        address: r.get(5)?,
        version: r.get(6)?,
        registered_at: r.get(7)?,
        last_seen: r.get(8)?,
        created_at: r.get(9)?,
        revoked_at: r.get(10)?,
    })
}

const AGENT_COLS: &str = "id, name, datacenter, credential_id, credential_hash, gateway_id, \
     connected, last_seen, created_at, revoked_at";

fn agent_row(r: &Row) -> Res<Agent> {
    Ok(Agent {
        id: r.get(0)?,
        name: r.get(1)?,
        datacenter: r.get(2)?,
        credential_id: r.get(3)?,
        credential_hash: r.get(4)?,
        gateway_id: r.get(5)?,
        connected: r.get(6)?,
        last_seen: r.get(7)?,
        created_at: r.get(8)?,
        revoked_at: r.get(9)?,
    })
}

const AUDIT_COLS: &str =
    "seq, at, actor, actor_kind, action, server_id, customer_id, result, detail";

fn audit_row(r: &Row) -> Res<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        actor_kind: r.get(3)?,
        action: r.get(4)?,
        server_id: r.get(5)?,
        customer_id: r.get(6)?,
        result: r.get(7)?,
        detail: r.get(8)?,
    })
}

fn revocation_row(r: &Row) -> Res<Revocation> {
    let kind: String = r.get(1)?;
    Ok(Revocation {
        id: r.get(0)?,
        kind: RevocationKind::parse(&kind)
            .ok_or_else(|| Fail::Data(format!("unknown revocation kind {kind:?}")))?,
        revoked_at: r.get(2)?,
        expires_at: r.get(3)?,
    })
}

fn signing_key_row(r: &Row) -> Res<StoredKey> {
    Ok(StoredKey {
        kid: r.get(0)?,
        pkcs8: r.get(1)?,
        created_at: r.get(2)?,
        retired_at: r.get(3)?,
    })
}

fn login_failures_row(r: &Row) -> Res<LoginFailures> {
    let failures: i64 = r.get(1)?;
    Ok(LoginFailures {
        key: r.get(0)?,
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        last_at_ms: r.get(2)?,
    })
}

/// Takes the audit lock, then appends `a` and returns its `seq`. The lock, held until commit,
/// is what makes `seq` order commit order: no append can draw a sequence number while an
/// earlier one is uncommitted.
fn insert_audit_row(c: &mut Conn, a: &AuditRecord) -> Res<i64> {
    c.execute(
        "SELECT pg_advisory_xact_lock($1::BIGINT)",
        &[&migrations::LOCK_AUDIT],
    )?;
    one(
        c,
        "INSERT INTO audit (at, actor, actor_kind, action, server_id, customer_id, result, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
        &[
            &a.at,
            &a.actor,
            &a.actor_kind,
            &a.action,
            &a.server_id,
            &a.customer_id,
            &a.result,
            &a.detail,
        ],
        |r| Ok(r.get::<i64>(0)?),
    )
}

fn insert_refresh_row(c: &mut Conn, t: &RefreshToken) -> Res<()> {
    c.execute(
        &format!(
            "INSERT INTO refresh_tokens ({REFRESH_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ),
        &[
            &t.id,
            &t.secret_hash,
            &t.family_id,
            &t.user_id,
            &t.created_at,
            &t.expires_at,
            &t.spent_at,
            &t.revoked_at,
        ],
    )?;
    Ok(())
}

fn ensure_datacenter(c: &mut Conn, id: &str) -> Res<()> {
    c.execute(
        "INSERT INTO datacenters (id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&id],
    )?;
    Ok(())
}

/// The page of servers `f` and `page` ask for, as SQL and its text arguments (the limit is
/// the last parameter). Only the filters given go into the query, so that each shape gets its
/// own plan: a tenant's page walks the (customer_id, id) index.
fn servers_query(f: &ServerFilter, page: &Page) -> (String, Vec<String>) {
    let mut sql = format!("SELECT {SERVER_COLS} FROM servers WHERE id > $1");
    let mut args = vec![page.after.clone().unwrap_or_default()];
    for (column, value) in [
        ("customer_id", &f.customer_id),
        ("datacenter", &f.datacenter),
        ("status", &f.status),
        ("agent_id", &f.agent_id),
    ] {
        if let Some(v) = value {
            args.push(v.clone());
            sql.push_str(&format!(" AND {column} = ${}", args.len()));
        }
    }
    if f.unassigned {
        sql.push_str(" AND customer_id IS NULL");
    }
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", args.len() + 1));
    (sql, args)
}

impl Store for PgStore {
    fn connections(&self) -> usize {
        self.pool.open()
    }

    fn create_customer(&self, c: &Customer) -> StoreResult<()> {
        self.write(QueryOp::Insert, "customers", |tx| {
            tx.execute(
                "INSERT INTO customers (id, name, created_at) VALUES ($1, $2, $3)",
                &[&c.id, &c.name, &c.created_at],
            )?;
            Ok(())
        })
    }

    fn customer(&self, id: &str) -> StoreResult<Customer> {
        self.read("customers", |c| {
            one(
                c,
                "SELECT id, name, created_at FROM customers WHERE id = $1",
                &[&id],
                customer_row,
            )
        })
    }

    fn customers(&self, page: &Page) -> StoreResult<Vec<Customer>> {
        let after = page.after.as_deref().unwrap_or("");
        let limit = i64::from(page.limit);
        self.read("customers", |c| {
            all(
                c,
                "SELECT id, name, created_at FROM customers WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit],
                customer_row,
            )
        })
    }

    fn create_user(&self, u: &User, password_hash: &str) -> StoreResult<()> {
        self.write(QueryOp::Insert, "users", |tx| {
            tx.execute(
                "INSERT INTO users (id, email, name, password_hash, role, customer_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &u.id,
                    &u.email,
                    &u.name,
                    &password_hash,
                    &u.role.as_str(),
                    &u.customer_id,
                    &u.created_at,
                ],
            )?;
            Ok(())
        })
    }

    fn user(&self, id: &str) -> StoreResult<User> {
        self.read("users", |c| {
            one(
                c,
                &format!("SELECT {USER_COLS} FROM users WHERE id = $1"),
                &[&id],
                user_row,
            )
        })
    }

    fn user_by_email(&self, email: &str) -> StoreResult<UserCredentials> {
        self.read("users", |c| {
            // the users_email index's expression; the argument folded the same way (ASCII)
            one(
                c,
                &format!(
                    "SELECT {USER_COLS}, password_hash FROM users \
                     WHERE lower(email) = lower($1::TEXT COLLATE \"C\")"
                ),
                &[&email],
                |r| {
                    Ok(UserCredentials {
                        user: user_row(r)?,
                        password_hash: r.get(7)?,
                    })
                },
            )
        })
    }

    fn users(&self, customer_id: Option<&str>, page: &Page) -> StoreResult<Vec<User>> {
        let after = page.after.as_deref().unwrap_or("");
        let limit = i64::from(page.limit);
        self.read("users", |c| {
            all(
                c,
                &format!(
                    "SELECT {USER_COLS} FROM users WHERE ($1::TEXT IS NULL OR customer_id = $1) \
                     AND id > $2 ORDER BY id LIMIT $3"
                ),
                &[&customer_id, &after, &limit],
                user_row,
            )
        })
    }

    fn set_password_hash(&self, user_id: &str, hash: &str) -> StoreResult<()> {
        self.write(QueryOp::Update, "users", |tx| {
            changed(tx.execute(
                "UPDATE users SET password_hash = $2 WHERE id = $1",
                &[&user_id, &hash],
            )?)
        })
    }

    fn update_user(&self, was: &User, u: &User) -> StoreResult<()> {
        let n = self.write(QueryOp::Update, "users", |tx| {
            Ok(tx.execute(
                "UPDATE users SET name = $2, role = $3, customer_id = $4, disabled_at = $5 \
                 WHERE id = $1 AND name = $6 AND role = $7 \
                 AND customer_id IS NOT DISTINCT FROM $8 AND disabled_at IS NOT DISTINCT FROM $9",
                &[
                    &u.id,
                    &u.name,
                    &u.role.as_str(),
                    &u.customer_id,
                    &u.disabled_at,
                    &was.name,
                    &was.role.as_str(),
                    &was.customer_id,
                    &was.disabled_at,
                ],
            )?)
        })?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "user {} changed since it was read",
                was.id
            )));
        }
        Ok(())
    }

    fn delete_user(&self, id: &str) -> StoreResult<()> {
        self.write(QueryOp::Delete, "users", |tx| {
            changed(tx.execute("DELETE FROM users WHERE id = $1", &[&id])?)
        })
    }

    fn revoke_user_refresh(&self, user_id: &str, now: i64) -> StoreResult<u64> {
        self.write(QueryOp::Update, "refresh_tokens", |tx| {
            // Waits for a rotation in flight on another replica (it holds its row FOR
            // UPDATE): the UPDATE below, a new statement, then sees the token it inserted,
            // which its own snapshot would miss under READ COMMITTED.
            tx.execute(
                "SELECT 1 FROM refresh_tokens WHERE user_id = $1 FOR UPDATE",
                &[&user_id],
            )?;
            Ok(tx.execute(
                "UPDATE refresh_tokens SET revoked_at = $2 \
                 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2",
                &[&user_id, &now],
            )?)
        })
    }

    fn admin_count(&self) -> StoreResult<u64> {
        self.read("users", |c| {
            one(
                c,
                "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL",
                &[],
                count,
            )
        })
    }

    fn ensure_datacenter(&self, id: &str) -> StoreResult<()> {
        self.write(QueryOp::Insert, "datacenters", |tx| {
            ensure_datacenter(tx, id)
        })
    }

    fn create_server(&self, s: &Server) -> StoreResult<()> {
        self.write(QueryOp::Insert, "servers", |tx| {
            ensure_datacenter(tx, &s.datacenter)?;
            tx.execute(
                &format!(
                    "INSERT INTO servers ({SERVER_COLS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                &[
                    &s.id,
                    &s.name,
                    &s.datacenter,
                    &s.agent_id,
                    &s.protocol,
                    &s.capabilities,
                    &s.customer_id,
                    &s.status,
                    &s.created_at,
                    &s.updated_at,
                ],
            )?;
            Ok(())
        })
    }

    fn server(&self, id: &str) -> StoreResult<Server> {
        self.read("servers", |c| {
            one(
                c,
                &format!("SELECT {SERVER_COLS} FROM servers WHERE id = $1"),
                &[&id],
                server_row,
            )
        })
    }

    fn servers(&self, f: &ServerFilter, page: &Page) -> StoreResult<Vec<Server>> {
        let (sql, args) = servers_query(f, page);
        let limit = i64::from(page.limit);
        let mut params: Vec<&dyn ToSql> = args.iter().map(|a| a as &dyn ToSql).collect();
        params.push(&limit);
        self.read("servers", |c| all(c, &sql, &params, server_row))
    }

    fn update_server(&self, s: &Server) -> StoreResult<()> {
        self.write(QueryOp::Update, "servers", |tx| {
            ensure_datacenter(tx, &s.datacenter)?;
            changed(tx.execute(
                "UPDATE servers SET name = $2, datacenter = $3, agent_id = $4, protocol = $5, \
                 capabilities = $6, customer_id = $7, status = $8, updated_at = $9 WHERE id = $1",
                &[
                    &s.id,
                    &s.name,
                    &s.datacenter,
                    &s.agent_id,
                    &s.protocol,
                    &s.capabilities,
                    &s.customer_id,
                    &s.status,
                    &s.updated_at,
                ],
            )?)
        })
    }

    fn delete_server(&self, id: &str) -> StoreResult<()> {
        self.write(QueryOp::Delete, "servers", |tx| {
            changed(tx.execute("DELETE FROM servers WHERE id = $1", &[&id])?)
        })
    }

    fn server_counts(&self) -> StoreResult<Vec<ServerCount>> {
        self.read("servers", |c| {
            all(
                c,
                "SELECT customer_id, datacenter, status, COUNT(*) FROM servers \
                 GROUP BY customer_id, datacenter, status",
                &[],
                |r| {
                    let n: i64 = r.get(3)?;
                    Ok(ServerCount {
                        customer_id: r.get(0)?,
                        datacenter: r.get(1)?,
                        status: r.get(2)?,
                        count: n as u64,
                    })
                },
            )
        })
    }

    fn insert_refresh(&self, t: &RefreshToken) -> StoreResult<()> {
        self.write(QueryOp::Insert, "refresh_tokens", |tx| {
            insert_refresh_row(tx, t)
        })
    }

    fn rotate_refresh(&self, id: &str, now: i64, next: &RefreshToken) -> StoreResult<RefreshToken> {
        self.write(QueryOp::Update, "refresh_tokens", |tx| {
            // the row lock makes a concurrent rotation wait, then read the spent row
            let was = one(
                tx,
                &format!("SELECT {REFRESH_COLS} FROM refresh_tokens WHERE id = $1 FOR UPDATE"),
                &[&id],
                refresh_row,
            )?;
            if was.spent_at.is_none() && was.revoked_at.is_none() {
                tx.execute(
                    "UPDATE refresh_tokens SET spent_at = $2 WHERE id = $1",
                    &[&id, &now],
                )?;
                insert_refresh_row(tx, next)?;
            }
            Ok(was)
        })
    }

    fn refresh(&self, id: &str) -> StoreResult<RefreshToken> {
        self.read("refresh_tokens", |c| {
            one(
                c,
                &format!("SELECT {REFRESH_COLS} FROM refresh_tokens WHERE id = $1"),
                &[&id],
                refresh_row,
            )
        })
    }

    fn revoke_family(&self, family_id: &str, now: i64) -> StoreResult<u64> {
        self.write(QueryOp::Update, "refresh_tokens", |tx| {
            // As in revoke_user_refresh: wait out a rotation in flight, then revoke what it made.
            tx.execute(
                "SELECT 1 FROM refresh_tokens WHERE family_id = $1 FOR UPDATE",
                &[&family_id],
            )?;
            Ok(tx.execute(
                "UPDATE refresh_tokens SET revoked_at = $2 \
                 WHERE family_id = $1 AND revoked_at IS NULL",
                &[&family_id, &now],
            )?)
        })
    }

    fn insert_api_key(&self, k: &ApiKey) -> StoreResult<()> {
        self.write(QueryOp::Insert, "api_keys", |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO api_keys ({API_KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &k.id,
                    &k.secret_hash,
                    &k.user_id,
                    &k.customer_id,
                    &k.role.as_str(),
                    &k.name,
                    &k.created_at,
                    &k.revoked_at,
                ],
            )?;
            Ok(())
        })
    }

    fn api_key(&self, id: &str) -> StoreResult<ApiKey> {
        self.read("api_keys", |c| {
            one(
                c,
                &format!("SELECT {API_KEY_COLS} FROM api_keys WHERE id = $1"),
                &[&id],
                api_key_row,
            )
        })
    }

    fn api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        self.read("api_keys", |c| {
            all(
                c,
                &format!(
                    "SELECT {API_KEY_COLS} FROM api_keys WHERE user_id = $1 ORDER BY created_at, id"
                ),
                &[&user_id],
                api_key_row,
            )
        })
    }

    fn revoke_api_key(&self, id: &str, now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "api_keys", |tx| {
            changed(tx.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id, &now],
            )?)
        })
    }

    fn revoke(&self, r: &Revocation) -> StoreResult<()> {
        self.write(QueryOp::Insert, "revocations", |tx| {
            tx.execute(
                // Revoking again moves the time forward (a user revocation covers every
                // token issued up to it) and never back.
                "INSERT INTO revocations (id, kind, revoked_at, expires_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (kind, id) DO UPDATE SET \
                 revoked_at = GREATEST(revocations.revoked_at, EXCLUDED.revoked_at), \
                 expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at)",
                &[&r.id, &r.kind.as_str(), &r.revoked_at, &r.expires_at],
            )?;
            let set = "UPDATE access_tokens SET revoked = TRUE WHERE";
            match r.kind {
                RevocationKind::Token => {
                    tx.execute(&format!("{set} jti = $1"), &[&r.id])?;
                }
                RevocationKind::Session => {
                    tx.execute(&format!("{set} session_id = $1"), &[&r.id])?;
                }
                RevocationKind::User => {
                    tx.execute(
                        &format!("{set} user_id = $1 AND issued_at <= $2"),
                        &[&r.id, &r.revoked_at],
                    )?;
                }
                RevocationKind::Agent => {}
            }
            Ok(())
        })
    }

    fn revocations(&self, now: i64) -> StoreResult<Vec<Revocation>> {
        self.read("revocations", |c| {
            all(
                c,
                "SELECT id, kind, revoked_at, expires_at FROM revocations \
                 WHERE expires_at > $1 ORDER BY revoked_at, id",
                &[&now],
                revocation_row,
            )
        })
    }

    fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read("signing_keys", |c| {
            all(
                c,
                "SELECT kid, pkcs8, created_at, retired_at FROM signing_keys \
                 ORDER BY created_at, ord",
                &[],
                signing_key_row,
            )
        })
    }

    fn insert_signing_key(&self, k: &StoredKey) -> StoreResult<()> {
        self.write(QueryOp::Insert, "signing_keys", |tx| {
            tx.execute(
                "INSERT INTO signing_keys (kid, pkcs8, created_at, retired_at) \
                 VALUES ($1, $2, $3, $4)",
                &[&k.kid, &k.pkcs8, &k.created_at, &k.retired_at],
            )?;
            Ok(())
        })
    }

    fn rotate_signing_key(&self, new: &StoredKey, drop_old: bool) -> StoreResult<()> {
        self.write(QueryOp::Insert, "signing_keys", |tx| {
            if drop_old {
                tx.execute("DELETE FROM signing_keys", &[])?;
            } else {
                tx.execute(
                    "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL",
                    &[&new.created_at],
                )?;
            }
            tx.execute(
                "INSERT INTO signing_keys (kid, pkcs8, created_at, retired_at) \
                 VALUES ($1, $2, $3, NULL)",
                &[&new.kid, &new.pkcs8, &new.created_at],
            )?;
            Ok(())
        })
    }

    fn record_access_token(&self, t: &AccessToken) -> StoreResult<()> {
        self.write(QueryOp::Insert, "access_tokens", |tx| {
            tx.execute(
                "INSERT INTO access_tokens (jti, session_id, user_id, issued_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &t.jti,
                    &t.session_id,
                    &t.user_id,
                    &t.issued_at,
                    &t.expires_at,
                ],
            )?;
            Ok(())
        })
    }

    fn active_access_tokens(&self, now: i64) -> StoreResult<u64> {
        self.read("access_tokens", |c| {
            one(
                c,
                "SELECT count(*) FROM access_tokens WHERE expires_at > $1 AND NOT revoked",
                &[&now],
                count,
            )
        })
    }

    fn login_failures(&self, keys: &[&str], since_ms: i64) -> StoreResult<Vec<LoginFailures>> {
        self.read("login_failures", |c| {
            let mut found = Vec::new();
            for key in keys {
                match one(
                    c,
                    "SELECT key, failures, last_at_ms FROM login_failures \
                     WHERE key = $1 AND last_at_ms > $2",
                    &[key, &since_ms],
                    login_failures_row,
                ) {
                    Ok(f) => found.push(f),
                    Err(Fail::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(found)
        })
    }

    fn login_failed(&self, keys: &[&str], at_ms: i64, since_ms: i64) -> StoreResult<()> {
        // rows locked in one order, so that two logins counting the same keys cannot deadlock
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        self.write(QueryOp::Insert, "login_failures", |tx| {
            for key in &sorted {
                tx.execute(
                    "INSERT INTO login_failures (key, failures, last_at_ms) VALUES ($1, 1, $2) \
                     ON CONFLICT (key) DO UPDATE SET \
                     failures = CASE WHEN login_failures.last_at_ms > $3 \
                     THEN login_failures.failures + 1 ELSE 1 END, \
                     last_at_ms = GREATEST(login_failures.last_at_ms, EXCLUDED.last_at_ms)",
                    &[key, &at_ms, &since_ms],
                )?;
            }
            Ok(())
        })
    }

    fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        self.write(QueryOp::Delete, "login_failures", |tx| {
            tx.execute("DELETE FROM login_failures WHERE key = $1", &[&key])?;
            Ok(())
        })
    }

    fn purge_expired(&self, now: i64, keys_retired_before: i64) -> StoreResult<u64> {
        let delete = |table: &'static str, sql: &'static str, bound: i64| {
            self.write(QueryOp::Delete, table, move |tx| {
                Ok(tx.execute(sql, &[&bound])?)
            })
        };
        let failures_before = (now - LOGIN_FAILURES_KEPT_SECS).saturating_mul(1000);
        Ok(delete(
            "revocations",
            "DELETE FROM revocations WHERE expires_at <= $1",
            now,
        )? + delete(
            "refresh_tokens",
            "DELETE FROM refresh_tokens WHERE expires_at <= $1",
            now,
        )? + delete(
            "access_tokens",
            "DELETE FROM access_tokens WHERE expires_at <= $1",
            now,
        )? + delete(
            "login_failures",
            "DELETE FROM login_failures WHERE last_at_ms < $1",
            failures_before,
        )? + delete(
            "signing_keys",
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1",
            keys_retired_before,
        )?)
    }

    fn create_gateway(&self, g: &Gateway) -> StoreResult<()> {
        self.write(QueryOp::Insert, "gateways", |tx| {
            ensure_datacenter(tx, &g.datacenter)?;
            tx.execute(
                &format!(
                    "INSERT INTO gateways ({GATEWAY_COLS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &[
                    &g.id,
                    &g.name,
                    &g.datacenter,
                    &g.credential_id,
                    &g.credential_hash,
                    &g.address,
                    &g.version,
                    &g.registered_at,
                    &g.last_seen,
                    &g.created_at,
                    &g.revoked_at,
                ],
            )?;
            Ok(())
        })
    }

    fn gateway(&self, id: &str) -> StoreResult<Gateway> {
        self.read("gateways", |c| {
            one(
                c,
                &format!("SELECT {GATEWAY_COLS} FROM gateways WHERE id = $1"),
                &[&id],
                gateway_row,
            )
        })
    }

    fn gateway_by_credential(&self, credential_id: &str) -> StoreResult<Gateway> {
        self.read("gateways", |c| {
            one(
                c,
                &format!("SELECT {GATEWAY_COLS} FROM gateways WHERE credential_id = $1"),
                &[&credential_id],
                gateway_row,
            )
        })
    }

    fn gateways(&self) -> StoreResult<Vec<Gateway>> {
        self.read("gateways", |c| {
            all(
                c,
                &format!("SELECT {GATEWAY_COLS} FROM gateways ORDER BY id"),
                &[],
                gateway_row,
            )
        })
    }

    fn gateway_seen(&self, id: &str, address: Option<(&str, &str)>, now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "gateways", |tx| {
            changed(match address {
                Some((address, version)) => tx.execute(
                    "UPDATE gateways SET address = $2, version = $3, registered_at = $4, \
                     last_seen = $4 WHERE id = $1",
                    &[&id, &address, &version, &now],
                )?,
                None => tx.execute(
                    "UPDATE gateways SET last_seen = $2 WHERE id = $1",
                    &[&id, &now],
                )?,
            })
        })
    }

    fn revoke_gateway(&self, id: &str, now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "gateways", |tx| {
            changed(tx.execute(
                "UPDATE gateways SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id, &now],
            )?)
        })
    }

    fn create_agent(&self, a: &Agent) -> StoreResult<()> {
        self.write(QueryOp::Insert, "agents", |tx| {
            ensure_datacenter(tx, &a.datacenter)?;
            tx.execute(
                &format!(
                    "INSERT INTO agents ({AGENT_COLS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                &[
                    &a.id,
                    &a.name,
                    &a.datacenter,
                    &a.credential_id,
                    &a.credential_hash,
                    &a.gateway_id,
                    &a.connected,
                    &a.last_seen,
                    &a.created_at,
                    &a.revoked_at,
                ],
            )?;
            Ok(())
        })
    }

    fn agent(&self, id: &str) -> StoreResult<Agent> {
        self.read("agents", |c| {
            one(
                c,
                &format!("SELECT {AGENT_COLS} FROM agents WHERE id = $1"),
                &[&id],
                agent_row,
            )
        })
    }

    fn agent_by_credential(&self, credential_id: &str) -> StoreResult<Agent> {
        self.read("agents", |c| {
            one(
                c,
                &format!("SELECT {AGENT_COLS} FROM agents WHERE credential_id = $1"),
                &[&credential_id],
                agent_row,
            )
        })
    }

    fn agents(&self, page: &Page) -> StoreResult<Vec<Agent>> {
        let after = page.after.as_deref().unwrap_or("");
        let limit = i64::from(page.limit);
        self.read("agents", |c| {
            all(
                c,
                &format!("SELECT {AGENT_COLS} FROM agents WHERE id > $1 ORDER BY id LIMIT $2"),
                &[&after, &limit],
                agent_row,
            )
        })
    }

    fn report_agents(&self, gateway_id: &str, connected: &[String], now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "agents", |tx| {
            // whoever this gateway reported before and not now has left it
            tx.execute(
                "UPDATE agents SET connected = FALSE WHERE gateway_id = $1",
                &[&gateway_id],
            )?;
            for id in connected {
                tx.execute(
                    "UPDATE agents SET gateway_id = $1, connected = TRUE, last_seen = $3 \
                     WHERE id = $2 AND revoked_at IS NULL \
                     AND datacenter = (SELECT datacenter FROM gateways WHERE id = $1)",
                    &[&gateway_id, id, &now],
                )?;
            }
            Ok(())
        })
    }

    fn revoke_agent(&self, id: &str, now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "agents", |tx| {
            changed(tx.execute(
                "UPDATE agents SET revoked_at = COALESCE(revoked_at, $2), connected = FALSE \
                 WHERE id = $1",
                &[&id, &now],
            )?)
        })
    }

    fn append_audits(&self, records: &[AuditRecord]) -> StoreResult<()> {
        self.write(QueryOp::Insert, "audit", |tx| {
            for a in records {
                insert_audit_row(tx, a)?;
            }
            Ok(())
        })
    }

    fn append_audit(&self, a: &AuditRecord) -> StoreResult<i64> {
        self.write(QueryOp::Insert, "audit", |tx| insert_audit_row(tx, a))
    }

    fn audit(
        &self,
        customer_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        let limit = i64::from(limit);
        self.read("audit", |c| {
            all(
                c,
                &format!(
                    "SELECT {AUDIT_COLS} FROM audit \
                     WHERE ($1::TEXT IS NULL OR customer_id = $1) AND seq > $2 \
                     ORDER BY seq LIMIT $3"
                ),
                &[&customer_id, &after_seq, &limit],
                audit_row,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_queries_number_their_parameters_in_order() {
        let f = ServerFilter {
            customer_id: Some("c1".into()),
            status: Some("active".into()),
            unassigned: false,
            ..Default::default()
        };
        let (sql, args) = servers_query(
            &f,
            &Page {
                after: None,
                limit: 5,
            },
        );
        assert_eq!(
            sql,
            format!(
                "SELECT {SERVER_COLS} FROM servers WHERE id > $1 AND customer_id = $2 \
                 AND status = $3 ORDER BY id LIMIT $4"
            )
        );
        assert_eq!(args, ["", "c1", "active"]);
    }

    #[test]
    fn unreachable_databases_read_as_unavailable() {
        for code in ["08006", "57P01", "57014", "53300"] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in ["23505", "42601", "40001"] {
            assert!(!unavailable_code(code), "{code}");
        }
    }
}
