//! The embedded store: SQLite in WAL mode, one writer connection and a few readers.
//!
//! Settings, and why:
//! - `journal_mode = WAL`: readers never block the writer or each other.
//! - `synchronous = FULL`: every commit is fsynced before it is acknowledged, so an
//!   acknowledged write survives `kill -9` *and* a power cut (`NORMAL` would survive the first
//!   only, losing the last commits on power loss). The cost is an fsync per write
//!   transaction, which the manager's write rate (logins, inventory changes) easily affords.
//! - `foreign_keys = ON`: references are checked by the database, not trusted to the code.
//! - `busy_timeout = 5000`: a writer waiting for another process's lock (a backup, an operator's
//!   sqlite3 shell) waits up to 5 s, then fails with an error instead of hanging.

pub mod migrations;

use std::fmt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use conduit_store::*;

/// Readers opened at most; more waiters queue.
const MAX_READERS: usize = 4;

/// The SQLite store.
pub struct SqliteStore {
    path: String,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Readers opened so far (idle or lent out).
    opened: Mutex<usize>,
    returned: Condvar,
    observe: QueryObserver,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    /// `":memory:"` is not supported: readers need to see the writer's file.
    pub fn open(path: &Path, observe: QueryObserver) -> StoreResult<SqliteStore> {
        let path_s = path.display().to_string();
        let writer = open_connection(path)
            .map_err(|e| StoreError::Backend(format!("open {path_s}: {e}")))?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| StoreError::Backend(format!("{path_s}: enable WAL: {e}")))?;
        migrate(&writer).map_err(|e| StoreError::Backend(format!("{path_s}: migrate: {e}")))?;
        Ok(SqliteStore {
            path: path_s,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            opened: Mutex::new(0),
            returned: Condvar::new(),
            observe,
        })
    }

    /// The plan SQLite picks for [`Store::servers`] with `f` and `page` (`EXPLAIN QUERY
    /// PLAN`, one line per step), for benchmarks and their readers.
    pub fn servers_plan(&self, f: &ServerFilter, page: &Page) -> StoreResult<String> {
        let (sql, args) = servers_query(f, page);
        self.read(QueryOp::Select, "servers", |c| {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let rows =
                st.query_map(rusqlite::params_from_iter(&args), |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
        })
    }

    /// `PRAGMA integrity_check`: `ok`, or what is wrong.
    pub fn integrity_check(&self) -> StoreResult<String> {
        self.read(QueryOp::Select, "sqlite_master", |c| {
            c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        })
    }

    /// Runs `f` on the writer connection inside one transaction.
    fn write<T>(
        &self,
        op: QueryOp,
        table: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let result = {
            let mut conn = lock(&self.writer);
            conn.transaction().and_then(|tx| {
                let v = f(&tx)?;
                tx.commit()?;
                Ok(v)
            })
        };
        self.finish(op, table, start, result)
    }

    /// Runs `f` on a reader connection.
    fn read<T>(
        &self,
        op: QueryOp,
        table: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let conn = self.take_reader()?;
        let result = f(&conn);
        lock(&self.readers).push(conn);
        self.returned.notify_one();
        self.finish(op, table, start, result)
    }

    fn take_reader(&self) -> StoreResult<Connection> {
        let mut idle = lock(&self.readers);
        loop {
            if let Some(c) = idle.pop() {
                return Ok(c);
            }
            {
                let mut opened = lock(&self.opened);
                if *opened < MAX_READERS {
                    *opened += 1;
                    drop(opened);
                    drop(idle);
                    return open_connection(Path::new(&self.path)).map_err(|e| {
                        *lock(&self.opened) -= 1;
                        StoreError::Backend(format!("open {}: {e}", self.path))
                    });
                }
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn finish<T>(
        &self,
        op: QueryOp,
        table: &'static str,
        start: Instant,
        result: rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let result = result.map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(f, m) if f.code == ErrorCode::ConstraintViolation => {
                StoreError::Conflict(m.unwrap_or_else(|| f.to_string()))
            }
            // another process (a backup, an sqlite3 shell) held the lock past busy_timeout
            rusqlite::Error::SqliteFailure(f, m)
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                StoreError::Unavailable(format!("{table}: {}", m.unwrap_or_else(|| f.to_string())))
            }
            other => StoreError::Backend(format!("{table}: {other}")),
        });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::NotFound) => "not_found",
            Err(StoreError::Conflict(_)) => "conflict",
            Err(StoreError::Backend(_) | StoreError::Unavailable(_)) => "error",
        };
        (self.observe)(op, table, outcome, start.elapsed());
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

/// Applies the migrations past the database's `user_version`, each in its own transaction.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let have: usize = c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if have > migrations::MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database is at schema version {have}, newer than this manager's {}",
            migrations::MIGRATIONS.len()
        )));
    }
    for (i, sql) in migrations::MIGRATIONS.iter().enumerate().skip(have) {
        c.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .inspect_err(|_| {
            let _ = c.execute_batch("ROLLBACK");
        })?;
        log::info!("database schema migrated to version {}", i + 1);
    }
    Ok(())
}

fn role(s: String) -> rusqlite::Result<Role> {
    Role::parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown role {s:?}").into(),
        )
    })
}

const USER_COLS: &str = "id, email, name, role, customer_id, created_at, disabled_at";

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
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

fn server_row(r: &Row<'_>) -> rusqlite::Result<Server> {
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

fn refresh_row(r: &Row<'_>) -> rusqlite::Result<RefreshToken> {
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

fn api_key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
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

fn gateway_row(r: &Row<'_>) -> rusqlite::Result<Gateway> {
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

fn agent_row(r: &Row<'_>) -> rusqlite::Result<Agent> {
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

fn insert_audit_row(c: &Connection, a: &AuditRecord) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT INTO audit (at, actor, actor_kind, action, server_id, customer_id, result, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            a.at,
            a.actor,
            a.actor_kind,
            a.action,
            a.server_id,
            a.customer_id,
            a.result,
            a.detail
        ],
    )
}

fn insert_refresh_row(c: &Connection, t: &RefreshToken) -> rusqlite::Result<usize> {
    c.execute(
        &format!(
            "INSERT INTO refresh_tokens ({REFRESH_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        params![
            t.id,
            t.secret_hash,
            t.family_id,
            t.user_id,
            t.created_at,
            t.expires_at,
            t.spent_at,
            t.revoked_at
        ],
    )
}

/// The page of servers `f` and `page` ask for, as SQL and its arguments. Only the filters
/// given go into the query, so that SQLite plans each shape on its own: a tenant's page walks
/// the (customer_id, id) index instead of every server.
fn servers_query(f: &ServerFilter, page: &Page) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = format!("SELECT {SERVER_COLS} FROM servers WHERE id > ?1");
    let mut args = vec![Value::Text(page.after.clone().unwrap_or_default())];
    for (column, value) in [
        ("customer_id", &f.customer_id),
        ("datacenter", &f.datacenter),
        ("status", &f.status),
        ("agent_id", &f.agent_id),
    ] {
        if let Some(v) = value {
            args.push(Value::Text(v.clone()));
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    if f.unassigned {
        sql.push_str(" AND customer_id IS NULL");
    }
    args.push(Value::Integer(i64::from(page.limit)));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
    (sql, args)
}

/// `Ok(())` when a statement changed a row, `NotFound` otherwise.
fn changed(n: usize) -> rusqlite::Result<()> {
    if n == 0 {
        Err(rusqlite::Error::QueryReturnedNoRows)
    } else {
        Ok(())
    }
}

impl Store for SqliteStore {
    fn connections(&self) -> usize {
        1 + *lock(&self.opened)
    }

    fn create_customer(&self, c: &Customer) -> StoreResult<()> {
        self.write(QueryOp::Insert, "customers", |tx| {
            tx.execute(
                "INSERT INTO customers (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![c.id, c.name, c.created_at],
            )
            .map(drop)
        })
    }

    fn customer(&self, id: &str) -> StoreResult<Customer> {
        self.read(QueryOp::Select, "customers", |c| {
            c.query_row(
                "SELECT id, name, created_at FROM customers WHERE id = ?1",
                [id],
                |r| {
                    Ok(Customer {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )
        })
    }

    fn customers(&self, page: &Page) -> StoreResult<Vec<Customer>> {
        self.read(QueryOp::Select, "customers", |c| {
            let mut st = c.prepare_cached(
                "SELECT id, name, created_at FROM customers WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(
                params![page.after.as_deref().unwrap_or(""), page.limit],
                |r| {
                    Ok(Customer {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )?;
            rows.collect()
        })
    }

    fn create_user(&self, u: &User, password_hash: &str) -> StoreResult<()> {
        self.write(QueryOp::Insert, "users", |tx| {
            tx.execute(
                "INSERT INTO users (id, email, name, password_hash, role, customer_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    u.id,
                    u.email,
                    u.name,
                    password_hash,
                    u.role.as_str(),
                    u.customer_id,
                    u.created_at
                ],
            )
            .map(drop)
        })
    }

    fn user(&self, id: &str) -> StoreResult<User> {
        self.read(QueryOp::Select, "users", |c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_row,
            )
        })
    }

    fn user_by_email(&self, email: &str) -> StoreResult<UserCredentials> {
        self.read(QueryOp::Select, "users", |c| {
            c.query_row(
                &format!("SELECT {USER_COLS}, password_hash FROM users WHERE email = ?1"),
                [email],
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
        self.read(QueryOp::Select, "users", |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {USER_COLS} FROM users WHERE (?1 IS NULL OR customer_id = ?1) \
                 AND id > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let rows = st.query_map(
                params![customer_id, page.after.as_deref().unwrap_or(""), page.limit],
                user_row,
            )?;
            rows.collect()
        })
    }

    fn set_password_hash(&self, user_id: &str, hash: &str) -> StoreResult<()> {
        self.write(QueryOp::Update, "users", |tx| {
            changed(tx.execute(
                "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                params![user_id, hash],
            )?)
        })
    }

    fn update_user(&self, was: &User, u: &User) -> StoreResult<()> {
        let n = self.write(QueryOp::Update, "users", |tx| {
            tx.execute(
                "UPDATE users SET name = ?2, role = ?3, customer_id = ?4, disabled_at = ?5 \
                 WHERE id = ?1 AND name = ?6 AND role = ?7 AND customer_id IS ?8 \
                 AND disabled_at IS ?9",
                params![
                    u.id,
                    u.name,
                    u.role.as_str(),
                    u.customer_id,
                    u.disabled_at,
                    was.name,
                    was.role.as_str(),
                    was.customer_id,
                    was.disabled_at
                ],
            )
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
            changed(tx.execute("DELETE FROM users WHERE id = ?1", [id])?)
        })
    }

    fn revoke_user_refresh(&self, user_id: &str, now: i64) -> StoreResult<u64> {
        self.write(QueryOp::Update, "refresh_tokens", |tx| {
            tx.execute(
                "UPDATE refresh_tokens SET revoked_at = ?2 \
                 WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                params![user_id, now],
            )
            .map(|n| n as u64)
        })
    }

    fn admin_count(&self) -> StoreResult<u64> {
        self.read(QueryOp::Select, "users", |c| {
            c.query_row(
                "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    fn ensure_datacenter(&self, id: &str) -> StoreResult<()> {
        self.write(QueryOp::Insert, "datacenters", |tx| {
            tx.execute("INSERT OR IGNORE INTO datacenters (id) VALUES (?1)", [id])
                .map(drop)
        })
    }

    fn create_server(&self, s: &Server) -> StoreResult<()> {
        self.write(QueryOp::Insert, "servers", |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO datacenters (id) VALUES (?1)",
                [&s.datacenter],
            )?;
            tx.execute(
                &format!(
                    "INSERT INTO servers ({SERVER_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    s.id,
                    s.name,
                    s.datacenter,
                    s.agent_id,
                    s.protocol,
                    s.capabilities,
                    s.customer_id,
                    s.status,
                    s.created_at,
                    s.updated_at
                ],
            )
            .map(drop)
        })
    }

    fn server(&self, id: &str) -> StoreResult<Server> {
        self.read(QueryOp::Select, "servers", |c| {
            c.query_row(
                &format!("SELECT {SERVER_COLS} FROM servers WHERE id = ?1"),
                [id],
                server_row,
            )
        })
    }

    fn servers(&self, f: &ServerFilter, page: &Page) -> StoreResult<Vec<Server>> {
        let (sql, args) = servers_query(f, page);
        self.read(QueryOp::Select, "servers", |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(&args), server_row)?;
            rows.collect()
        })
    }

    fn update_server(&self, s: &Server) -> StoreResult<()> {
        self.write(QueryOp::Update, "servers", |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO datacenters (id) VALUES (?1)",
                [&s.datacenter],
            )?;
            changed(tx.execute(
                "UPDATE servers SET name = ?2, datacenter = ?3, agent_id = ?4, protocol = ?5, \
                 capabilities = ?6, customer_id = ?7, status = ?8, updated_at = ?9 WHERE id = ?1",
                params![
                    s.id,
                    s.name,
                    s.datacenter,
                    s.agent_id,
                    s.protocol,
                    s.capabilities,
                    s.customer_id,
                    s.status,
                    s.updated_at
                ],
            )?)
        })
    }

    fn delete_server(&self, id: &str) -> StoreResult<()> {
        self.write(QueryOp::Delete, "servers", |tx| {
            changed(tx.execute("DELETE FROM servers WHERE id = ?1", [id])?)
        })
    }

    fn server_counts(&self) -> StoreResult<Vec<ServerCount>> {
        self.read(QueryOp::Select, "servers", |c| {
            let mut st = c.prepare_cached(
                "SELECT customer_id, datacenter, status, COUNT(*) FROM servers \
                 GROUP BY customer_id, datacenter, status",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ServerCount {
                    customer_id: r.get(0)?,
                    datacenter: r.get(1)?,
                    status: r.get(2)?,
                    count: r.get::<_, i64>(3)? as u64,
                })
            })?;
            rows.collect()
        })
    }

    fn insert_refresh(&self, t: &RefreshToken) -> StoreResult<()> {
        self.write(QueryOp::Insert, "refresh_tokens", |tx| {
            insert_refresh_row(tx, t).map(drop)
        })
    }

    fn rotate_refresh(&self, id: &str, now: i64, next: &RefreshToken) -> StoreResult<RefreshToken> {
        self.write(QueryOp::Update, "refresh_tokens", |tx| {
            let was = tx.query_row(
                &format!("SELECT {REFRESH_COLS} FROM refresh_tokens WHERE id = ?1"),
                [id],
                refresh_row,
            )?;
            if was.spent_at.is_none() && was.revoked_at.is_none() {
                tx.execute(
                    "UPDATE refresh_tokens SET spent_at = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
                insert_refresh_row(tx, next)?;
            }
            Ok(was)
        })
    }

    fn refresh(&self, id: &str) -> StoreResult<RefreshToken> {
        self.read(QueryOp::Select, "refresh_tokens", |c| {
            c.query_row(
                &format!("SELECT {REFRESH_COLS} FROM refresh_tokens WHERE id = ?1"),
                [id],
                refresh_row,
            )
        })
    }

    fn revoke_family(&self, family_id: &str, now: i64) -> StoreResult<u64> {
        self.write(QueryOp::Update, "refresh_tokens", |tx| {
            tx.execute(
                "UPDATE refresh_tokens SET revoked_at = ?2 \
                 WHERE family_id = ?1 AND revoked_at IS NULL",
                params![family_id, now],
            )
            .map(|n| n as u64)
        })
    }

    fn insert_api_key(&self, k: &ApiKey) -> StoreResult<()> {
        self.write(QueryOp::Insert, "api_keys", |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO api_keys ({API_KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    k.id,
                    k.secret_hash,
                    k.user_id,
                    k.customer_id,
                    k.role.as_str(),
                    k.name,
                    k.created_at,
                    k.revoked_at
                ],
            )
            .map(drop)
        })
    }

    fn api_key(&self, id: &str) -> StoreResult<ApiKey> {
        self.read(QueryOp::Select, "api_keys", |c| {
            c.query_row(
                &format!("SELECT {API_KEY_COLS} FROM api_keys WHERE id = ?1"),
                [id],
                api_key_row,
            )
        })
    }

    fn api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        self.read(QueryOp::Select, "api_keys", |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {API_KEY_COLS} FROM api_keys WHERE user_id = ?1 ORDER BY created_at, id"
            ))?;
            let rows = st.query_map([user_id], api_key_row)?;
            rows.collect()
        })
    }

    fn revoke_api_key(&self, id: &str, now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "api_keys", |tx| {
            changed(tx.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, now],
            )?)
        })
    }

    fn revoke(&self, r: &Revocation) -> StoreResult<()> {
        self.write(QueryOp::Insert, "revocations", |tx| {
            tx.execute(
                // Revoking again moves the time forward (a user revocation covers every
                // token issued up to it) and never back.
                "INSERT INTO revocations (id, kind, revoked_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (kind, id) DO UPDATE SET \
                 revoked_at = max(revoked_at, excluded.revoked_at), \
                 expires_at = max(expires_at, excluded.expires_at)",
                params![r.id, r.kind.as_str(), r.revoked_at, r.expires_at],
            )?;
            let set = "UPDATE access_tokens SET revoked = 1 WHERE";
            match r.kind {
                RevocationKind::Token => {
                    tx.execute(&format!("{set} jti = ?1"), [&r.id])?;
                }
                RevocationKind::Session => {
                    tx.execute(&format!("{set} session_id = ?1"), [&r.id])?;
                }
                RevocationKind::User => {
                    tx.execute(
                        &format!("{set} user_id = ?1 AND issued_at <= ?2"),
                        params![r.id, r.revoked_at],
                    )?;
                }
                RevocationKind::Agent => {}
            }
            Ok(())
        })
    }

    fn record_access_token(&self, t: &AccessToken) -> StoreResult<()> {
        self.write(QueryOp::Insert, "access_tokens", |tx| {
            tx.execute(
                "INSERT INTO access_tokens (jti, session_id, user_id, issued_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.jti, t.session_id, t.user_id, t.issued_at, t.expires_at],
            )
            .map(drop)
        })
    }

    fn active_access_tokens(&self, now: i64) -> StoreResult<u64> {
        self.read(QueryOp::Select, "access_tokens", |c| {
            c.query_row(
                "SELECT count(*) FROM access_tokens WHERE expires_at > ?1 AND revoked = 0",
                [now],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    fn login_failures(&self, keys: &[&str], since_ms: i64) -> StoreResult<Vec<LoginFailures>> {
        self.read(QueryOp::Select, "login_failures", |c| {
            let mut st = c.prepare_cached(
                "SELECT key, failures, last_at_ms FROM login_failures \
                 WHERE key = ?1 AND last_at_ms > ?2",
            )?;
            let mut found = Vec::new();
            for key in keys {
                if let Some(f) = st
                    .query_row(params![key, since_ms], |r| {
                        Ok(LoginFailures {
                            key: r.get(0)?,
                            failures: r.get(1)?,
                            last_at_ms: r.get(2)?,
                        })
                    })
                    .optional()?
                {
                    found.push(f);
                }
            }
            Ok(found)
        })
    }

    fn login_failed(&self, keys: &[&str], at_ms: i64, since_ms: i64) -> StoreResult<()> {
        self.write(QueryOp::Insert, "login_failures", |tx| {
            for key in keys {
                tx.execute(
                    "INSERT INTO login_failures (key, failures, last_at_ms) VALUES (?1, 1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET \
                     failures = CASE WHEN last_at_ms > ?3 THEN failures + 1 ELSE 1 END, \
                     last_at_ms = max(last_at_ms, excluded.last_at_ms)",
                    params![key, at_ms, since_ms],
                )?;
            }
            Ok(())
        })
    }

    fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        self.write(QueryOp::Delete, "login_failures", |tx| {
            tx.execute("DELETE FROM login_failures WHERE key = ?1", [key])
                .map(drop)
        })
    }

    fn revocations(&self, now: i64) -> StoreResult<Vec<Revocation>> {
        self.read(QueryOp::Select, "revocations", |c| {
            let mut st = c.prepare_cached(
                "SELECT id, kind, revoked_at, expires_at FROM revocations \
                 WHERE expires_at > ?1 ORDER BY revoked_at, id",
            )?;
            let rows = st.query_map([now], |r| {
                let kind: String = r.get(1)?;
                Ok(Revocation {
                    id: r.get(0)?,
                    kind: RevocationKind::parse(&kind).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            1,
                            rusqlite::types::Type::Text,
                            format!("unknown revocation kind {kind:?}").into(),
                        )
                    })?,
                    revoked_at: r.get(2)?,
                    expires_at: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read(QueryOp::Select, "signing_keys", |c| {
            let mut st = c.prepare_cached(
                "SELECT kid, pkcs8, created_at, retired_at FROM signing_keys ORDER BY created_at, rowid",
            )?;
            let rows = st.query_map([], |r| {
                Ok(StoredKey {
                    kid: r.get(0)?,
                    pkcs8: r.get(1)?,
                    created_at: r.get(2)?,
                    retired_at: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    fn insert_signing_key(&self, k: &StoredKey) -> StoreResult<()> {
        self.write(QueryOp::Insert, "signing_keys", |tx| {
            tx.execute(
                "INSERT INTO signing_keys (kid, pkcs8, created_at, retired_at) VALUES (?1, ?2, ?3, ?4)",
                params![k.kid, k.pkcs8, k.created_at, k.retired_at],
            )
            .map(drop)
        })
    }

    fn rotate_signing_key(&self, new: &StoredKey, drop_old: bool) -> StoreResult<()> {
        self.write(QueryOp::Insert, "signing_keys", |tx| {
            if drop_old {
                tx.execute("DELETE FROM signing_keys", [])?;
            } else {
                tx.execute(
                    "UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL",
                    [new.created_at],
                )?;
            }
            tx.execute(
                "INSERT INTO signing_keys (kid, pkcs8, created_at, retired_at) VALUES (?1, ?2, ?3, NULL)",
                params![new.kid, new.pkcs8, new.created_at],
            )
            .map(drop)
        })
    }

    fn purge_expired(&self, now: i64, keys_retired_before: i64) -> StoreResult<u64> {
        let revocations = self.write(QueryOp::Delete, "revocations", |tx| {
            tx.execute("DELETE FROM revocations WHERE expires_at <= ?1", [now])
        })?;
        let refresh = self.write(QueryOp::Delete, "refresh_tokens", |tx| {
            tx.execute("DELETE FROM refresh_tokens WHERE expires_at <= ?1", [now])
        })?;
        let access = self.write(QueryOp::Delete, "access_tokens", |tx| {
            tx.execute("DELETE FROM access_tokens WHERE expires_at <= ?1", [now])
        })?;
        let failures = self.write(QueryOp::Delete, "login_failures", |tx| {
            tx.execute(
                "DELETE FROM login_failures WHERE last_at_ms < ?1",
                [(now - LOGIN_FAILURES_KEPT_SECS).saturating_mul(1000)],
            )
        })?;
        let keys = self.write(QueryOp::Delete, "signing_keys", |tx| {
            tx.execute(
                "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?1",
                [keys_retired_before],
            )
        })?;
        Ok((revocations + refresh + access + failures + keys) as u64)
    }

    fn create_gateway(&self, g: &Gateway) -> StoreResult<()> {
        self.write(QueryOp::Insert, "gateways", |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO datacenters (id) VALUES (?1)",
                [&g.datacenter],
            )?;
            tx.execute(
                &format!(
                    "INSERT INTO gateways ({GATEWAY_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    g.id,
                    g.name,
                    g.datacenter,
                    g.credential_id,
                    g.credential_hash,
                    g.address,
                    g.version,
                    g.registered_at,
                    g.last_seen,
                    g.created_at,
                    g.revoked_at
                ],
            )
            .map(drop)
        })
    }

    fn gateway(&self, id: &str) -> StoreResult<Gateway> {
        self.read(QueryOp::Select, "gateways", |c| {
            c.query_row(
                &format!("SELECT {GATEWAY_COLS} FROM gateways WHERE id = ?1"),
                [id],
                gateway_row,
            )
        })
    }

    fn gateway_by_credential(&self, credential_id: &str) -> StoreResult<Gateway> {
        self.read(QueryOp::Select, "gateways", |c| {
            c.query_row(
                &format!("SELECT {GATEWAY_COLS} FROM gateways WHERE credential_id = ?1"),
                [credential_id],
                gateway_row,
            )
        })
    }

    fn gateways(&self) -> StoreResult<Vec<Gateway>> {
        self.read(QueryOp::Select, "gateways", |c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {GATEWAY_COLS} FROM gateways ORDER BY id"))?;
            let rows = st.query_map([], gateway_row)?;
            rows.collect()
        })
    }

    fn gateway_seen(&self, id: &str, address: Option<(&str, &str)>, now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "gateways", |tx| {
            changed(match address {
                Some((address, version)) => tx.execute(
                    "UPDATE gateways SET address = ?2, version = ?3, registered_at = ?4, \
                     last_seen = ?4 WHERE id = ?1",
                    params![id, address, version, now],
                )?,
                None => tx.execute(
                    "UPDATE gateways SET last_seen = ?2 WHERE id = ?1",
                    params![id, now],
                )?,
            })
        })
    }

    fn revoke_gateway(&self, id: &str, now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "gateways", |tx| {
            changed(tx.execute(
                "UPDATE gateways SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, now],
            )?)
        })
    }

    fn create_agent(&self, a: &Agent) -> StoreResult<()> {
        self.write(QueryOp::Insert, "agents", |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO datacenters (id) VALUES (?1)",
                [&a.datacenter],
            )?;
            tx.execute(
                &format!(
                    "INSERT INTO agents ({AGENT_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    a.id,
                    a.name,
                    a.datacenter,
                    a.credential_id,
                    a.credential_hash,
                    a.gateway_id,
                    a.connected,
                    a.last_seen,
                    a.created_at,
                    a.revoked_at
                ],
            )
            .map(drop)
        })
    }

    fn agent(&self, id: &str) -> StoreResult<Agent> {
        self.read(QueryOp::Select, "agents", |c| {
            c.query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE id = ?1"),
                [id],
                agent_row,
            )
        })
    }

    fn agent_by_credential(&self, credential_id: &str) -> StoreResult<Agent> {
        self.read(QueryOp::Select, "agents", |c| {
            c.query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE credential_id = ?1"),
                [credential_id],
                agent_row,
            )
        })
    }

    fn agents(&self, page: &Page) -> StoreResult<Vec<Agent>> {
        self.read(QueryOp::Select, "agents", |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {AGENT_COLS} FROM agents WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st.query_map(
                params![page.after.as_deref().unwrap_or(""), page.limit],
                agent_row,
            )?;
            rows.collect()
        })
    }

    fn report_agents(&self, gateway_id: &str, connected: &[String], now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "agents", |tx| {
            // whoever this gateway reported before and not now has left it
            tx.execute(
                "UPDATE agents SET connected = 0 WHERE gateway_id = ?1",
                [gateway_id],
            )?;
            let mut st = tx.prepare_cached(
                "UPDATE agents SET gateway_id = ?1, connected = 1, last_seen = ?3 \
                 WHERE id = ?2 AND revoked_at IS NULL \
                 AND datacenter = (SELECT datacenter FROM gateways WHERE id = ?1)",
            )?;
            for id in connected {
                st.execute(params![gateway_id, id, now])?;
            }
            Ok(())
        })
    }

    fn revoke_agent(&self, id: &str, now: i64) -> StoreResult<()> {
        self.write(QueryOp::Update, "agents", |tx| {
            changed(tx.execute(
                "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?2), connected = 0 \
                 WHERE id = ?1",
                params![id, now],
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
        self.write(QueryOp::Insert, "audit", |tx| {
            insert_audit_row(tx, a)?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn audit(
        &self,
        customer_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        self.read(QueryOp::Select, "audit", |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, at, actor, actor_kind, action, server_id, customer_id, result, detail \
                 FROM audit WHERE (?1 IS NULL OR customer_id = ?1) AND seq > ?2 \
                 ORDER BY seq LIMIT ?3",
            )?;
            let rows = st.query_map(params![customer_id, after_seq, limit], |r| {
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
            })?;
            rows.collect()
        })
    }
}
