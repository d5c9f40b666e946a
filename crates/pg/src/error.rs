//! One error type for the client and the pool, classified the way callers act on it:
//! [`Error::is_unavailable`] (try later, maybe elsewhere), [`Error::is_retryable`] (run the
//! transaction again), the rest (a bug or a bad request).

use std::fmt;
use std::io;
use std::time::Duration;

/// What went wrong, with what was being done. No variant carries the password.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The URL or configuration is unusable.
    Config(String),
    /// A socket operation failed.
    Io {
        /// What was being done ("connecting to 10.0.0.5:5432", "reading a response").
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// The connect deadline or the I/O timeout passed.
    Timeout {
        /// What was being done.
        context: String,
    },
    /// The server closed the connection, or an earlier error broke it.
    Closed {
        /// What was being done.
        context: String,
    },
    /// The server sent something this client cannot follow; the connection is broken.
    Protocol(String),
    /// Authentication failed on our side (an unsupported method, a forged server signature).
    /// A password the server refuses arrives as [`Error::Server`] with SQLSTATE 28P01.
    Auth(String),
    /// The server answered with an ErrorResponse; the connection is still usable.
    Server {
        /// The SQLSTATE, e.g. `23505`.
        code: String,
        /// The primary message.
        message: String,
        /// The constraint violated, if the server named one.
        constraint: Option<String>,
        /// The detail line, if any.
        detail: Option<String>,
    },
    /// A column could not be read as the requested Rust type (or was NULL).
    Conversion(String),
    /// The query or a parameter cannot be encoded (a NUL byte, too many parameters); nothing
    /// was sent.
    Invalid(String),
    /// Every pooled connection stayed in use for the whole wait.
    PoolExhausted {
        /// The pool's size.
        size: usize,
        /// How long the caller waited.
        waited: Duration,
    },
}

impl Error {
    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The constraint a server error names (unique, foreign key, check…).
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Error::Server { constraint, .. } => constraint.as_deref(),
            _ => None,
        }
    }

    /// The database cannot serve now: the network, timeouts, a closed connection, an
    /// exhausted pool, or a server that is shutting down, starting up, overloaded, or that
    /// cancelled the statement (`statement_timeout`).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Io { .. }
            | Error::Timeout { .. }
            | Error::Closed { .. }
            | Error::PoolExhausted { .. } => true,
            Error::Server { code, .. } => {
                code.starts_with("08")
                    || matches!(
                        code.as_str(),
                        "57P01" | "57P02" | "57P03" | "57014" | "53300"
                    )
            }
            _ => false,
        }
    }

    /// Running the same transaction again may succeed: a serialization failure or a deadlock.
    pub fn is_retryable(&self) -> bool {
        matches!(self.code(), Some("40001" | "40P01"))
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout { context },
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Error::Closed {
                context: format!("{context} ({source})"),
            },
            _ => Error::Io { context, source },
        }
    }

    pub(crate) fn protocol(m: impl fmt::Display) -> Error {
        Error::Protocol(m.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => write!(f, "postgres configuration: {m}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Timeout { context } => write!(f, "{context}: timed out"),
            Error::Closed { context } => write!(f, "{context}: connection closed"),
            Error::Protocol(m) => write!(f, "postgres protocol error: {m}"),
            Error::Auth(m) => write!(f, "postgres authentication: {m}"),
            Error::Server {
                code,
                message,
                constraint,
                detail,
            } => {
                write!(f, "{message} (SQLSTATE {code}")?;
                if let Some(c) = constraint {
                    write!(f, ", constraint {c}")?;
                }
                f.write_str(")")?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                Ok(())
            }
            Error::Conversion(m) => write!(f, "column conversion: {m}"),
            Error::Invalid(m) => write!(f, "invalid query: {m}"),
            Error::PoolExhausted { size, waited } => write!(
                f,
                "connection pool exhausted: all {size} connections stayed in use for {waited:?}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> Error {
        Error::Server {
            code: code.into(),
            message: "m".into(),
            constraint: None,
            detail: None,
        }
    }

    #[test]
    fn classification() {
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "57014", "53300",
        ] {
            assert!(server(code).is_unavailable(), "{code}");
        }
        for code in ["23505", "40001", "P0001", "28P01", "42601"] {
            assert!(!server(code).is_unavailable(), "{code}");
        }
        assert!(server("40001").is_retryable() && server("40P01").is_retryable());
        assert!(!server("23505").is_retryable());
        let t = Error::io("reading", io::ErrorKind::WouldBlock.into());
        assert!(matches!(t, Error::Timeout { .. }) && t.is_unavailable());
        let c = Error::io("reading", io::ErrorKind::UnexpectedEof.into());
        assert!(matches!(c, Error::Closed { .. }) && c.is_unavailable());
        assert!(!Error::Protocol("x".into()).is_unavailable());
    }

    #[test]
    fn display_reads_as_one_line() {
        let e = Error::Server {
            code: "23505".into(),
            message: "duplicate key value violates unique constraint \"t_pkey\"".into(),
            constraint: Some("t_pkey".into()),
            detail: Some("Key (id)=(1) already exists.".into()),
        };
        assert_eq!(
            e.to_string(),
            "duplicate key value violates unique constraint \"t_pkey\" (SQLSTATE 23505, \
             constraint t_pkey): Key (id)=(1) already exists."
        );
        assert_eq!(e.code(), Some("23505"));
        assert_eq!(e.constraint(), Some("t_pkey"));
    }
}
