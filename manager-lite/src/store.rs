//! The manager's storage: the interface every service uses (`conduit-store`) and the engines
//! the binary can open (`open_store` in the crate root opens a [`Database`]).

pub use conduit_store::*;
pub use conduit_store_postgres as postgres;
pub use conduit_store_sqlite as sqlite;

use std::fmt;
use std::path::PathBuf;

/// Where the manager's rows live, as `--database` names it.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An embedded SQLite file: one manager.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user:password@host:port/db`): any number of replicas;
    /// the password may come apart (`--db-password-file`) to stay off the command line.
    Postgres {
        /// The URL.
        url: String,
        /// The password, if not in the URL.
        password: Option<String>,
    },
}

impl Database {
    /// `--database`: a `postgres://` or `postgresql://` URL, else a SQLite file path.
    pub fn parse(spec: &str) -> Database {
        let scheme = spec.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
            Database::Postgres {
                url: spec.to_owned(),
                password: None,
            }
        } else {
            Database::Sqlite(spec.into())
        }
    }
}

/// For logs and errors: a PostgreSQL URL without its password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "SQLite {}", p.display()),
            Database::Postgres { url, .. } => {
                // the URL may hold the password: only a parsed one is shown, redacted
                match conduit_pg::Config::parse(url) {
                    Ok(c) => write!(f, "PostgreSQL {}", c.redacted()),
                    Err(_) => f.write_str("PostgreSQL (a URL that does not parse)"),
                }
            }
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
