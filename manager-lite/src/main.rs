use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use conduit_service as service;
use manager_lite::metrics::ManagerMetrics;
use manager_lite::store::{Database, Store};

#[global_allocator]
static ALLOC: conduit_metrics::heap::CountingAllocator = conduit_metrics::heap::CountingAllocator;

const INTRO: &str = "\
Usage: conduit-manager [OPTIONS]                 Serve the API, /metrics and /health
       conduit-manager [OPTIONS] init --email E  Create the first admin; the password is read
                                                 from stdin (one line) or --password-file
       conduit-manager [OPTIONS] check           Check the database's integrity (prints ok)
       conduit-manager [OPTIONS] keys list       The token signing keys (which signs, which
                                                 are retired and until when they verify)
       conduit-manager [OPTIONS] keys rotate     A new signing key; managers on this database
                                                 sign with it within 5 s, and the old keys
                                                 verify until their tokens expire (with
                                                 --drop-old they are deleted at once: every
                                                 access token they signed is refused within
                                                 5 s and clients renew with their refresh
                                                 tokens — for a key that may have leaked)
";

const FLAGS: &str = "  --data-dir DIR             Where the manager keeps its database (default
                             ./conduit-manager-data)
  --database FILE|URL        The SQLite database file (default DIR/manager.db), or a
                             PostgreSQL URL postgres://USER@HOST:PORT/DB (several managers
                             on one PostgreSQL share everything; see README)
  --db-password-file FILE    PostgreSQL: the password, read from FILE (one line), so that it
                             is not on the command line; a password in the URL also works
  --db-connections N         PostgreSQL connections this manager opens at most (default 8;
                             1 to 256). SQLite always uses one writer and up to 4 readers
  --demo                     On an empty database, create a demo admin, two customers with
                             an operator and a viewer each, and a few servers; print their
                             random passwords once
  --access-ttl SECS          How long access tokens are valid (default 900; 60 to 86400, or
                             as low as 1 for tests). Refresh tokens renew them
  --session-ttl SECS         How long a login session lasts, however often it is refreshed
                             (default 2592000, 30 days; at least 1)
  --web-assets DIR           The web console's npm packages (xterm.js, noVNC): the
                             node_modules directory of `npm ci --prefix web`; without it
                             the page works but for the consoles
  --email E                  init: the admin's e-mail
  --password-file FILE       init: read the admin's password from FILE instead of stdin
  --drop-old                 keys rotate: delete the old keys instead of retiring them
";

#[derive(Debug, Default)]
struct Flags {
    data_dir: Option<PathBuf>,
    database: Option<String>,
    db_connections: Option<usize>,
    db_password_file: Option<PathBuf>,
    demo: bool,
    access_ttl: Option<u64>,
    session_ttl: Option<u64>,
    email: Option<String>,
    password_file: Option<PathBuf>,
    drop_old: bool,
    web_assets: Option<PathBuf>,
}

impl Flags {
    fn lifetimes(&self) -> manager_lite::tokens::Lifetimes {
        let default = manager_lite::tokens::Lifetimes::default();
        let secs = std::time::Duration::from_secs;
        manager_lite::tokens::Lifetimes {
            access: self.access_ttl.map_or(default.access, secs),
            session: self.session_ttl.map_or(default.session, secs),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| "conduit-manager-data".into())
    }

    fn database(&self) -> anyhow::Result<Database> {
        let mut db = match &self.database {
            Some(spec) => Database::parse(spec),
            None => Database::Sqlite(self.data_dir().join("manager.db")),
        };
        if let Some(file) = &self.db_password_file {
            let Database::Postgres { password, .. } = &mut db else {
                anyhow::bail!("--db-password-file is for a PostgreSQL --database");
            };
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("read --db-password-file {}", file.display()))?;
            *password = Some(text.lines().next().unwrap_or_default().to_owned());
        }
        Ok(db)
    }

    fn open(&self, metrics: std::sync::Arc<ManagerMetrics>) -> anyhow::Result<Arc<dyn Store>> {
        let connections = self
            .db_connections
            .unwrap_or(manager_lite::DEFAULT_DB_CONNECTIONS);
        manager_lite::open_store(&self.database()?, connections, metrics)
    }
}

fn main() -> ExitCode {
    let info = manager_lite::INFO;
    let mut flags = Flags::default();
    let usage = service::usage_full(&info, INTRO, FLAGS);
    let (args, words) = match service::parse_args(&info, &usage, |name, p| {
        match name {
            "data-dir" => flags.data_dir = Some(service::flag_value(name, p)?.into()),
            "database" => flags.database = Some(service::flag_value(name, p)?),
            "db-password-file" => {
                flags.db_password_file = Some(service::flag_value(name, p)?.into())
            }
            "db-connections" => {
                let v = service::flag_value(name, p)?;
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .with_context(|| format!("--db-connections {v:?}: a number from 1 to 256"))?;
                flags.db_connections = Some(n);
            }
            "demo" => flags.demo = true,
            "access-ttl" => {
                let v = service::flag_value(name, p)?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=86_400).contains(s))
                    .with_context(|| format!("--access-ttl {v:?}: seconds from 1 to 86400"))?;
                flags.access_ttl = Some(secs);
            }
            "session-ttl" => {
                let v = service::flag_value(name, p)?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=10 * 365 * 86_400).contains(s))
                    .with_context(|| format!("--session-ttl {v:?}: seconds from 1 to 10 years"))?;
                flags.session_ttl = Some(secs);
            }
            "email" => flags.email = Some(service::flag_value(name, p)?),
            "password-file" => flags.password_file = Some(service::flag_value(name, p)?.into()),
            "drop-old" => flags.drop_old = true,
            "web-assets" => flags.web_assets = Some(service::flag_value(name, p)?.into()),
            _ => return Ok(false),
        }
        Ok(true)
    }) {
        Ok(v) => v,
        Err(code) => return code,
    };
    service::logging::init(info.binary, args.log_level);
    match words.first().map(String::as_str) {
        None => service::exit_with(serve(args, &flags)),
        Some("init") if words.len() == 1 => service::exit_with(init(&flags)),
        Some("check") if words.len() == 1 => service::exit_with(check(&flags)),
        Some("keys") if words.len() == 2 => match words[1].as_str() {
            "list" => service::exit_with(keys_list(&flags)),
            "rotate" => service::exit_with(keys_rotate(&flags)),
            w => service::usage_error(&info, &format!("unknown keys command {w:?}")),
        },
        Some(w) => service::usage_error(&info, &format!("unknown command {w:?}")),
    }
}

fn serve(args: service::ServeArgs, flags: &Flags) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        log::warn!(
            "serving plain HTTP on {}: passwords and tokens cross the network in clear; put a \
             TLS-terminating proxy in front (the manager does not terminate TLS yet)",
            args.listen
        );
    }
    let db = flags.database()?;
    let assets = match &flags.web_assets {
        Some(dir) => {
            let a = manager_lite::web::Assets::load(dir)?;
            let (n, bytes) = a.size();
            log::info!(
                "web console: {n} files of xterm.js and noVNC ({} KiB) from {}",
                bytes / 1024,
                dir.display()
            );
            Some(Arc::new(a))
        }
        None => {
            log::info!("web console without its consoles: no --web-assets");
            None
        }
    };
    let mut built = None;
    let (stack, _metrics) = service::Stack::build(
        manager_lite::INFO,
        args,
        |b| std::sync::Arc::new(ManagerMetrics::register(b)),
        |router, metrics| {
            let mgr = flags
                .open(metrics.clone())
                .and_then(|store| manager_lite::manager(store, metrics.clone(), flags.lifetimes()));
            match mgr {
                Ok(mgr) => {
                    let router = manager_lite::api::routes(router, &mgr);
                    let router = manager_lite::web::routes(router, &mgr, assets.clone());
                    // The API's routes, listed (the shared index is at `/` where the web
                    // console is).
                    let index: String = router.templates().map(|t| format!("{t}\n")).collect();
                    let router = router.route(conduit_http::Method::Get, "/routes", move |_| {
                        conduit_http::Response::text(200, index.clone())
                    });
                    built = Some(Ok(mgr));
                    router
                }
                Err(e) => {
                    built = Some(Err(e));
                    router
                }
            }
        },
    );
    let mgr = built.context("the manager was not built")??;
    log::info!("database: {db}");
    if flags.demo {
        let demo = manager_lite::demo::seed(&mgr).context("seed the demo data")?;
        if demo.users.is_empty() {
            log::info!("demo data already present (passwords were printed when it was created)");
        }
        for (who, email, password) in demo.users {
            println!("demo {who}: {email} / {password}");
        }
        // Component credentials go to files (mode 0600), never to the terminal.
        let dir = flags.data_dir().join("demo-credentials");
        for (id, credential) in demo.credentials {
            let path = dir.join(format!("{id}.credential"));
            write_secret(&path, &credential)
                .with_context(|| format!("write {}", path.display()))?;
            println!("demo credential {id}: {}", path.display());
        }
    }
    manager_lite::spawn_maintenance(&mgr)?;
    stack.serve()
}

/// Writes `secret` to a new file only its owner can read.
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{secret}")
}

fn init(flags: &Flags) -> anyhow::Result<()> {
    let email = flags
        .email
        .as_deref()
        .context("init needs --email (the first admin's e-mail)")?;
    let password = match &flags.password_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("read the password from {}", f.display()))?,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("read the password from stdin")?;
            line
        }
    };
    let password = password.trim_end_matches(['\r', '\n']);
    let db = flags.database()?;
    let metrics = offline_metrics();
    let store = flags.open(metrics.clone())?;
    let mgr = manager_lite::manager(store, metrics, flags.lifetimes())?;
    let id = manager_lite::demo::init_admin(&mgr, email, password)?;
    println!("created admin {email} (user id {id}) in {db}");
    Ok(())
}

/// Metrics for a command that serves none (the store reports to them all the same).
fn offline_metrics() -> std::sync::Arc<ManagerMetrics> {
    std::sync::Arc::new(ManagerMetrics::register(
        &mut conduit_metrics::catalog::CatalogBuilder::new(
            &mut prometheus_client::registry::Registry::default(),
            "manager",
            1000,
        ),
    ))
}

/// The store of an existing database, for the commands that work on one.
fn existing_store(flags: &Flags) -> anyhow::Result<Arc<dyn Store>> {
    if let Database::Sqlite(path) = flags.database()? {
        anyhow::ensure!(path.exists(), "no database at {}", path.display());
    }
    flags.open(offline_metrics())
}

fn keys_list(flags: &Flags) -> anyhow::Result<()> {
    let keys = existing_store(flags)?
        .signing_keys()
        .context("read the signing keys")?;
    let kept = manager_lite::tokens::RETIRED_KEY_VERIFIES.as_secs() as i64;
    let signing = keys.iter().rev().find(|k| k.retired_at.is_none());
    for k in &keys {
        let state = match k.retired_at {
            None if Some(k) == signing => "signs".to_owned(),
            None => "unretired (a newer key signs)".to_owned(),
            Some(at) => format!("retired at {at}, verifies until {}", at + kept),
        };
        println!("{}  created {}  {state}", k.kid, k.created_at);
    }
    Ok(())
}

fn keys_rotate(flags: &Flags) -> anyhow::Result<()> {
    let store = existing_store(flags)?;
    let now = manager_lite::auth::unix_now() as i64;
    let kid = manager_lite::tokens::Tokens::rotate(store.as_ref(), now, flags.drop_old)?;
    if flags.drop_old {
        println!("new signing key {kid}; the old keys are deleted");
    } else {
        println!("new signing key {kid}; the old keys verify until their tokens expire");
    }
    Ok(())
}

fn check(flags: &Flags) -> anyhow::Result<()> {
    let db = match flags.database()? {
        Database::Sqlite(path) => path,
        Database::Postgres { .. } => anyhow::bail!(
            "check verifies a SQLite file; PostgreSQL checks its own pages (data checksums, \
             amcheck)"
        ),
    };
    anyhow::ensure!(db.exists(), "no database at {}", db.display());
    let store =
        manager_lite::store::sqlite::SqliteStore::open(&db, std::sync::Arc::new(|_, _, _, _| {}))?;
    let verdict = store.integrity_check()?;
    println!("{verdict}");
    anyhow::ensure!(
        verdict == "ok",
        "{} failed its integrity check",
        db.display()
    );
    Ok(())
}
