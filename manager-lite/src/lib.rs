//! manager-lite: the control plane — identity, tenancy, inventory and audit.
//!
//! Layers: [`store`] (rows, one interface, SQLite) ← [`tokens`] and [`identity`] (keys,
//! passwords, throttle) ← [`auth`] (logins, the caller check) ← [`api`] (the Connect services)
//! ← the binary, which wires them to the shared HTTP stack. Blocking work runs on [`work`]
//! pools, never on the HTTP workers.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod demo;
pub mod gateways;
pub mod identity;
pub mod metrics;
pub mod store;
pub mod tokens;
pub mod web;
pub mod work;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use conduit_service::ComponentInfo;

use crate::metrics::{ManagerMetrics, QueryKind, QueryLabels};
use crate::store::{QueryObserver, Store};

/// What the manager is, for the shared service code.
pub const INFO: ComponentInfo = ComponentInfo {
    prefix: "manager",
    binary: "conduit-manager",
    default_port: 8080,
    about: "Conduit manager-lite: users, customers, servers, gateways and tokens",
};

/// The observer that turns every store query into `manager_db_*` samples.
pub fn query_observer(metrics: Arc<ManagerMetrics>) -> QueryObserver {
    Arc::new(move |op, table, status, took: Duration| {
        let operation = op.as_str();
        metrics.db_queries.inc(&QueryLabels {
            operation,
            table,
            status,
        });
        metrics
            .db_query_duration
            .observe(&QueryKind { operation, table }, took.as_secs_f64());
    })
}

/// How long a PostgreSQL statement (or its wait for a lock) may take unless the URL says
/// (`?statement_timeout=MS`).
pub const PG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);

/// PostgreSQL connections a manager opens by default (`--db-connections`).
pub const DEFAULT_DB_CONNECTIONS: usize = 8;

/// Opens the store of `db` (creating a SQLite file's directory; applying pending migrations),
/// reporting to `metrics`; a PostgreSQL pool holds at most `connections`.
pub fn open_store(
    db: &store::Database,
    connections: usize,
    metrics: Arc<ManagerMetrics>,
) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match db {
        store::Database::Sqlite(path) => Arc::new(open_sqlite(path, metrics.clone())?),
        store::Database::Postgres { url, password } => {
            let mut config =
                conduit_pg::Config::parse(url).map_err(|e| anyhow::anyhow!("--database: {e}"))?;
            if let Some(p) = password {
                config.set_password(p.as_str());
            }
            // No manager query takes long: one that does is stuck behind a lock or a sick
            // server, and is better cancelled (the caller gets `unavailable`) than waited on.
            config.statement_timeout.get_or_insert(PG_STATEMENT_TIMEOUT);
            let observer = query_observer(metrics.clone());
            Arc::new(
                store::postgres::PgStore::with_config(config, connections, observer)
                    .with_context(|| format!("open the database {db}"))?,
            )
        }
    };
    metrics.db_connections.set(store.connections() as i64);
    Ok(store)
}

fn open_sqlite(
    path: &Path,
    metrics: Arc<ManagerMetrics>,
) -> anyhow::Result<store::sqlite::SqliteStore> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // The database holds the signing keys and every hash: readable by the manager's user only.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create the data directory {}", dir.display()))?;
    }
    let store = store::sqlite::SqliteStore::open(path, query_observer(metrics))
        .with_context(|| format!("open the database {}", path.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let f = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if f.exists() {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restrict {}", f.display()))?;
        }
    }
    Ok(store)
}

/// The manager on `store`: keys loaded, pools started, gauges set from the rows; what it
/// issues lives `lifetimes`.
pub fn manager(
    store: Arc<dyn Store>,
    metrics: Arc<ManagerMetrics>,
    lifetimes: tokens::Lifetimes,
) -> anyhow::Result<Arc<api::Manager>> {
    let tokens = tokens::Tokens::load(store.as_ref(), auth::unix_now() as i64, lifetimes)?;
    let mgr = Arc::new(api::Manager {
        auth: auth::Auth {
            store,
            tokens,
            passwords: identity::password::Passwords::default(),
            throttle: identity::throttle::Throttle::default(),
            metrics,
        },
        pools: work::Pools::start().context("start the work pools")?,
        server_series: Default::default(),
        gateway_series: Default::default(),
        gateway_addresses: Default::default(),
    });
    mgr.auth.passwords.prepare();
    mgr.refresh_server_gauge();
    mgr.refresh_gateway_gauge();
    Ok(mgr)
}

/// What changes with time alone or on another replica, every [`tokens::KEY_RELOAD`]: the
/// gauges (access tokens expire, gateways fall silent, the store opens readers as load comes,
/// another manager on the same PostgreSQL changes servers), the signing keys
/// (another process may have rotated them), and rows that can no longer matter (expired
/// revocations and refresh tokens, keys retired past every token they signed), purged once
/// a minute.
pub fn spawn_maintenance(mgr: &Arc<api::Manager>) -> std::io::Result<()> {
    const PURGE_EVERY: u32 = 12;
    let weak = Arc::downgrade(mgr);
    std::thread::Builder::new()
        .name("maintenance".into())
        .spawn(move || {
            let mut round = 0u32;
            while let Some(mgr) = weak.upgrade() {
                let now = auth::unix_now();
                let (m, store) = (&mgr.auth.metrics, mgr.auth.store.as_ref());
                mgr.auth.refresh_active_tokens(now);
                m.db_connections.set(store.connections() as i64);
                // another replica may have changed the rows these count
                mgr.refresh_server_gauge();
                mgr.refresh_gateway_gauge();
                if let Err(e) = mgr.auth.tokens.reload_keys(store, now as i64) {
                    log::warn!("reloading the signing keys: {e:#}");
                }
                if round % PURGE_EVERY == 0 {
                    let kept = tokens::RETIRED_KEY_VERIFIES.as_secs();
                    match store.purge_expired(now as i64, now.saturating_sub(kept) as i64) {
                        Ok(0) => {}
                        Ok(n) => log::info!("purged {n} expired rows"),
                        Err(e) => log::warn!("purging expired rows: {e}"),
                    }
                }
                round = round.wrapping_add(1);
                drop(mgr);
                std::thread::sleep(tokens::KEY_RELOAD);
            }
        })
        .map(drop)
}
