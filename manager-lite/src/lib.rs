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

/// Opens the SQLite store at `path` (creating its directory), reporting to `metrics`.
pub fn open_store(path: &Path, metrics: Arc<ManagerMetrics>) -> anyhow::Result<Arc<dyn Store>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // The database holds the signing keys and every hash: readable by the manager's user only.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create the data directory {}", dir.display()))?;
    }
    let store = store::sqlite::SqliteStore::open(path, query_observer(metrics.clone()))
        .with_context(|| format!("open the database {}", path.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let f = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if f.exists() {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restrict {}", f.display()))?;
        }
    }
    metrics.db_connections.set(store.connections() as i64);
    Ok(Arc::new(store))
}

/// The manager on `store`: keys loaded, pools started, gauges set from the rows; access tokens
/// valid `access_ttl`.
pub fn manager(
    store: Arc<dyn Store>,
    metrics: Arc<ManagerMetrics>,
    access_ttl: Duration,
) -> anyhow::Result<Arc<api::Manager>> {
    let tokens = tokens::Tokens::load(store.as_ref(), auth::unix_now() as i64, access_ttl)?;
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
    });
    mgr.auth.passwords.prepare();
    mgr.refresh_server_gauge();
    mgr.refresh_gateway_gauge();
    Ok(mgr)
}

/// Keeps the time-driven gauges true: access tokens expire and gateways fall silent without
/// any call, and the store opens reader connections as load comes.
pub fn spawn_maintenance(mgr: &Arc<api::Manager>) -> std::io::Result<()> {
    let weak = Arc::downgrade(mgr);
    std::thread::Builder::new()
        .name("maintenance".into())
        .spawn(move || {
            while let Some(mgr) = weak.upgrade() {
                let m = &mgr.auth.metrics;
                m.active_tokens
                    .set(mgr.auth.tokens.active_count(auth::unix_now()));
                m.db_connections.set(mgr.auth.store.connections() as i64);
                // `up` turns `down` with time alone
                mgr.refresh_gateway_gauge();
                drop(mgr);
                std::thread::sleep(Duration::from_secs(5));
            }
        })
        .map(drop)
}
