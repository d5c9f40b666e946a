//! A small blocking PostgreSQL client and connection pool, with no knowledge of any schema.
//!
//! # Scope
//!
//! * **Blocking, std only.** A [`Conn`] owns one `std::net::TcpStream`; there is no async
//!   runtime. The wire codec is postgres-protocol's; SCRAM-SHA-256 is our own, on ring.
//! * **Bounded in time.** One deadline (`connect_timeout`, 10 s by default) covers the TCP
//!   connect, the startup and authentication; after that every socket read and write has an I/O
//!   timeout (`io_timeout`, 30 s by default), so no call can hang on a stalled server. A
//!   `statement_timeout` can be sent as a startup parameter so the server bounds queries too.
//!   (Resolving a host name is the OS resolver's and not bounded: use an address where that
//!   matters.)
//! * **Authentication:** trust, cleartext password and SCRAM-SHA-256 without channel binding
//!   (the server's signature is verified); md5 for old servers. Kerberos, GSS and SSPI are
//!   refused with [`Error::Auth`].
//! * **Queries:** [`Conn::query`] and [`Conn::execute`] use the extended protocol with the
//!   unnamed statement and portal: Parse, Bind, Describe, Execute and Sync go out in one write,
//!   one round trip. Parameter types are left to the server to infer, and parameters and results
//!   travel in the text format: see [`ToSql`] and [`FromSql`]. [`Conn::batch`] runs several
//!   statements through the simple query protocol (migrations).
//! * **Errors** say what was being done and never carry the password; a server error leaves the
//!   connection usable, an I/O or protocol error marks it broken ([`Conn::is_broken`]).
//! * **[`Pool`]:** a fixed number of connections, dialed lazily, checked before being lent (a
//!   server restart is noticed without a failed call), returned by a guard.
//! * **Untrusted bytes:** a backend message longer than [`MAX_MESSAGE`] (or shorter than its
//!   header) is a protocol error before anything is allocated for it; no input panics.
//!
//! Not done: TLS (an `SSLRequest` before the startup message, then rustls, could be added),
//! `COPY`, `LISTEN`/`NOTIFY`, the binary format, named prepared statements, query cancellation.

mod config;
mod conn;
mod error;
mod pool;
mod scram;
mod types;

#[cfg(test)]
mod fuzz;

pub use config::Config;
pub use conn::{Conn, TxStatus, MAX_MESSAGE};
pub use error::Error;
pub use pool::{Pool, Pooled};
pub use types::{Column, FromSql, IsNull, Oid, Row, Rows, ToSql};
