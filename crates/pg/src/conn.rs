//! One connection: startup and authentication, then queries, each one write and one read of
//! the response up to ReadyForQuery. Socket timeouts bound every operation (the connect
//! deadline during startup, the I/O timeout after), and the reader checks a message's length
//! before it buffers it, so a hostile or broken server can neither hang us nor make us allocate
//! more than it actually sent.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};

use crate::scram::{self, Scram};
use crate::types::{Column, IsNull, Row, Rows, ToSql};
use crate::{Config, Error};

/// The longest backend message accepted (a row or an error); longer is a protocol error.
pub const MAX_MESSAGE: usize = 64 << 20;
/// The most row data one response may hold: each message is bounded by [`MAX_MESSAGE`], and
/// this bounds their sum, so a broken server or proxy streaming rows cannot exhaust memory.
pub const MAX_RESPONSE: usize = 256 << 20;

/// Bytes read from the socket at a time.
const CHUNK: usize = 16 << 10;

/// The byte stream under a connection: a TCP socket, or an in-memory one in tests.
pub(crate) trait Transport: Read + Write + Send {
    /// Bounds each following read and write.
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()>;

    /// Whether an idle connection is still open, checked without blocking: data or EOF on a
    /// connection that owes us nothing means the server closed it or sent a fatal error.
    fn idle_check(&mut self) -> bool {
        true
    }
}

impl Transport for TcpStream {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }

    fn idle_check(&mut self) -> bool {
        if self.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let quiet = matches!(self.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        self.set_nonblocking(false).is_ok() && quiet
    }
}

/// Where the server says the session is, from its last ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Not in a transaction.
    Idle,
    /// In a transaction block.
    InTransaction,
    /// In a failed transaction block: everything but ROLLBACK is refused.
    Failed,
}

/// What a response to a query or batch ended with.
struct Outcome {
    rows: Vec<Row>,
    affected: u64,
    /// The last command tag (`COMMIT`, or `ROLLBACK` for a COMMIT of a failed transaction).
    tag: String,
}

/// A blocking connection to one PostgreSQL server. `Send`, not shared: one caller at a time
/// (the [`Pool`](crate::Pool) lends connections out).
pub struct Conn {
    io: Box<dyn Transport>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Set by an I/O, timeout or protocol failure, or a fatal server error: the session's
    /// state is unknown and the connection must not be used again.
    broken: bool,
    status: TxStatus,
    /// During startup: the connect deadline every operation is bounded by.
    deadline: Option<Instant>,
    /// `host:port`, for error context.
    address: String,
    backend_pid: Option<i32>,
    parameters: Vec<(String, String)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("address", &self.address)
            .field("backend_pid", &self.backend_pid)
            .field("status", &self.status)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects, authenticates and waits for the server to be ready, all within
    /// `config.connect_timeout`.
    pub fn connect(config: &Config) -> Result<Conn, Error> {
        let deadline = Instant::now() + config.connect_timeout;
        let address = config.address();
        let context = || format!("connecting to {address}");
        let addrs = (config.host.as_str(), config.port)
            .to_socket_addrs()
            .map_err(|e| Error::io(format!("resolving {}", config.host), e))?;
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout { context: context() });
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(Error::io(context(), e)),
            (None, None) => {
                let e = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
                return Err(Error::io(context(), e));
            }
        };
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io(context(), e))?;
        let conn = Conn::handshake(Box::new(stream), config, deadline)?;
        log::debug!(
            "connected to {} (backend pid {})",
            config.redacted(),
            conn.backend_pid.unwrap_or(0)
        );
        Ok(conn)
    }

    /// A connection over `io` before startup.
    pub(crate) fn over(io: Box<dyn Transport>, address: String) -> Conn {
        Conn {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            broken: false,
            status: TxStatus::Idle,
            deadline: None,
            address,
            backend_pid: None,
            parameters: Vec::new(),
        }
    }

    /// Startup and authentication over `io`, bounded by `deadline`; then the I/O timeout.
    pub(crate) fn handshake(
        io: Box<dyn Transport>,
        config: &Config,
        deadline: Instant,
    ) -> Result<Conn, Error> {
        let mut c = Conn::over(io, config.address());
        c.deadline = Some(deadline);
        let result = c.startup(config);
        if let Err(e) = result {
            c.broken = true;
            return Err(e);
        }
        c.deadline = None;
        let address = c.address.clone();
        c.io.set_timeout(config.io_timeout)
            .map_err(|e| Error::io(format!("{address}: setting the I/O timeout"), e))?;
        Ok(c)
    }

    fn startup(&mut self, config: &Config) -> Result<(), Error> {
        let statement_timeout = config.statement_timeout.map(|t| t.as_millis().to_string());
        let mut params = vec![
            ("user", config.user.as_str()),
            ("database", config.dbname.as_str()),
            ("client_encoding", "UTF8"),
            ("application_name", config.application_name.as_str()),
            // what FromSql<Vec<u8>> reads, whatever the server's default
            ("bytea_output", "hex"),
        ];
        // A client that gives up (its I/O timeout, a partition) must not leave the server
        // holding locks: a statement stops at statement_timeout and waits for a lock at most
        // as long; an open transaction left idle ends after the client's I/O timeout.
        let idle_ms = config.io_timeout.as_millis().max(1).to_string();
        params.push(("idle_in_transaction_session_timeout", &idle_ms));
        if let Some(ms) = &statement_timeout {
            params.push(("statement_timeout", ms));
            params.push(("lock_timeout", ms));
        }
        frontend::startup_message(params.iter().copied(), &mut self.wbuf)
            .map_err(|e| Error::Config(format!("startup parameters: {e}")))?;
        self.flush("sending the startup message")?;
        self.authenticate(config)?;
        loop {
            match self.recv("waiting for the server to be ready")? {
                backend::Message::BackendKeyData(b) => self.backend_pid = Some(b.process_id()),
                backend::Message::ReadyForQuery(b) => return self.ready(b.status()),
                backend::Message::ErrorResponse(b) => return Err(self.server_error(b.fields())),
                other => return Err(self.unexpected(&other, "starting up")),
            }
        }
    }

    fn authenticate(&mut self, config: &Config) -> Result<(), Error> {
        const DOING: &str = "authenticating";
        loop {
            match self.recv(DOING)? {
                backend::Message::AuthenticationOk => return Ok(()),
                backend::Message::AuthenticationCleartextPassword
                | backend::Message::AuthenticationMd5Password(_)
                    if !config.password_auth =>
                {
                    return Err(Error::Auth(
                        "the server asks for the password itself (cleartext or md5), not \
                         SCRAM-SHA-256: refused, since a server posing as the real one would \
                         get it (allow with auth=password in the URL)"
                            .into(),
                    ));
                }
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(config.password().as_bytes(), &mut self.wbuf)
                        .map_err(|_| Error::Auth("the password holds a NUL byte".into()))?;
                    self.flush(DOING)?;
                }
                backend::Message::AuthenticationSasl(b) => {
                    let mut offered = Vec::new();
                    let mut mechanisms = b.mechanisms();
                    while let Some(m) = mechanisms.next().map_err(Error::protocol)? {
                        offered.push(m.to_string());
                    }
                    if !offered.iter().any(|m| m == scram::MECHANISM) {
                        return Err(Error::Auth(format!(
                            "the server offers {offered:?}, not SCRAM-SHA-256"
                        )));
                    }
                    self.scram(config)?;
                }
                backend::Message::AuthenticationMd5Password(b) => {
                    // legacy servers; the hash is postgres-protocol's (md5 of password+user,
                    // then of that and the salt)
                    let hash = postgres_protocol::authentication::md5_hash(
                        config.user.as_bytes(),
                        config.password().as_bytes(),
                        b.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)
                        .map_err(Error::protocol)?;
                    self.flush(DOING)?;
                }
                backend::Message::AuthenticationKerberosV5
                | backend::Message::AuthenticationScmCredential
                | backend::Message::AuthenticationGss
                | backend::Message::AuthenticationSspi => {
                    return Err(Error::Auth(
                        "the server asks for an authentication method this client does not do \
                         (Kerberos, GSS, SSPI or SCM)"
                            .into(),
                    ))
                }
                backend::Message::ErrorResponse(b) => return Err(self.server_error(b.fields())),
                other => return Err(self.unexpected(&other, DOING)),
            }
        }
    }

    fn scram(&mut self, config: &Config) -> Result<(), Error> {
        const DOING: &str = "authenticating (SCRAM-SHA-256)";
        let mut scram = Scram::new(config.password())?;
        frontend::sasl_initial_response(
            scram::MECHANISM,
            scram.client_first().as_bytes(),
            &mut self.wbuf,
        )
        .map_err(Error::protocol)?;
        self.flush(DOING)?;
        let client_final = match self.recv(DOING)? {
            backend::Message::AuthenticationSaslContinue(b) => scram.client_final(b.data())?,
            backend::Message::ErrorResponse(b) => return Err(self.server_error(b.fields())),
            other => return Err(self.unexpected(&other, DOING)),
        };
        frontend::sasl_response(client_final.as_bytes(), &mut self.wbuf)
            .map_err(Error::protocol)?;
        self.flush(DOING)?;
        match self.recv(DOING)? {
            backend::Message::AuthenticationSaslFinal(b) => scram.verify_server_final(b.data()),
            backend::Message::ErrorResponse(b) => Err(self.server_error(b.fields())),
            other => Err(self.unexpected(&other, DOING)),
        }
    }

    /// Runs one statement with `params` (`$1`, `$2`… in `sql`) and returns its rows and the
    /// count from its command tag. One round trip: Parse, Bind, Describe, Execute and Sync of
    /// the unnamed statement go out together; the server infers the parameters' types.
    pub fn query(&mut self, sql: &str, params: &[&dyn ToSql]) -> Result<Rows, Error> {
        self.usable()?;
        if let Err(e) = self.encode_extended(sql, params) {
            self.wbuf.clear();
            return Err(e);
        }
        self.flush("sending a query")?;
        let out = self.response("reading a query's response", true)?;
        Ok(Rows {
            rows: out.rows,
            affected: out.affected,
        })
    }

    /// [`Conn::query`] for a statement whose rows do not matter: the rows affected.
    pub fn execute(&mut self, sql: &str, params: &[&dyn ToSql]) -> Result<u64, Error> {
        self.query(sql, params).map(|r| r.affected())
    }

    /// Runs `sql`, which may hold several statements separated by `;`, through the simple
    /// query protocol (no parameters, rows discarded): for migrations and `BEGIN`/`COMMIT`.
    /// Outside a transaction block the statements run as one implicit transaction.
    pub fn batch(&mut self, sql: &str) -> Result<(), Error> {
        self.simple(sql).map(drop)
    }

    /// Runs `f` in a transaction: `BEGIN`, then `COMMIT` if `f` succeeds, `ROLLBACK` if it
    /// fails or if a statement in it failed (its error swallowed), which PostgreSQL's COMMIT
    /// would turn into a silent rollback. A failed COMMIT is an error too.
    pub fn transaction<T, E: From<Error>>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        self.batch("BEGIN")?;
        let value = match f(self) {
            Ok(v) => v,
            Err(e) => {
                self.rollback_quietly();
                return Err(e);
            }
        };
        if self.status == TxStatus::Failed {
            self.rollback_quietly();
            return Err(aborted().into());
        }
        match self.simple("COMMIT") {
            Ok(tag) if tag == "COMMIT" => Ok(value),
            Ok(_) => Err(aborted().into()),
            Err(e) => {
                self.rollback_quietly();
                Err(e.into())
            }
        }
    }

    /// Where the session is: idle, in a transaction, in a failed one.
    pub fn transaction_status(&self) -> TxStatus {
        self.status
    }

    /// Whether an earlier error left the session in an unknown state; such a connection
    /// refuses further calls and the pool drops it.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The server process serving this connection.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// A run-time parameter the server reported (`server_version`, `TimeZone`…).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Idle, unbroken, nothing buffered, and the socket neither readable nor closed.
    pub(crate) fn is_idle_alive(&mut self) -> bool {
        !self.broken
            && self.status == TxStatus::Idle
            && self.rbuf.is_empty()
            && self.io.idle_check()
    }

    /// The read buffer's allocation, for the fuzz tests' bound.
    #[cfg(test)]
    pub(crate) fn read_capacity(&self) -> usize {
        self.rbuf.capacity()
    }

    /// Rolls back a transaction left open; a connection that cannot be brought back to idle
    /// is marked broken.
    pub(crate) fn rollback_quietly(&mut self) {
        if !self.broken && self.status != TxStatus::Idle {
            let _ = self.batch("ROLLBACK");
            if self.status != TxStatus::Idle {
                self.broken = true;
            }
        }
    }

    fn simple(&mut self, sql: &str) -> Result<String, Error> {
        self.usable()?;
        if let Err(e) = frontend::query(sql, &mut self.wbuf) {
            self.wbuf.clear();
            return Err(Error::Invalid(e.to_string()));
        }
        self.flush("sending a batch")?;
        self.response("reading a batch's response", false)
            .map(|o| o.tag)
    }

    fn encode_extended(&mut self, sql: &str, params: &[&dyn ToSql]) -> Result<(), Error> {
        if params.len() > usize::from(u16::MAX) {
            return Err(Error::Invalid(format!("{} parameters", params.len())));
        }
        let invalid = |e: io::Error| Error::Invalid(e.to_string());
        // type OID 0 for each: the server infers them from the statement
        frontend::parse("", sql, params.iter().map(|_| 0), &mut self.wbuf).map_err(invalid)?;
        frontend::bind(
            "",
            "",
            std::iter::empty::<i16>(), // every parameter in text
            params.iter(),
            |p, buf| {
                Ok(match p.to_sql(buf) {
                    IsNull::Yes => postgres_protocol::IsNull::Yes,
                    IsNull::No => postgres_protocol::IsNull::No,
                })
            },
            std::iter::empty::<i16>(), // every result column in text
            &mut self.wbuf,
        )
        .map_err(|e| match e {
            frontend::BindError::Conversion(e) => Error::Invalid(e.to_string()),
            frontend::BindError::Serialization(e) => invalid(e),
        })?;
        frontend::describe(b'P', "", &mut self.wbuf).map_err(invalid)?;
        frontend::execute("", 0, &mut self.wbuf).map_err(invalid)?;
        frontend::sync(&mut self.wbuf);
        Ok(())
    }

    /// Reads up to ReadyForQuery. The first server error is kept and returned once the
    /// server is ready again (the connection stays usable); rows are kept if `keep_rows`.
    fn response(&mut self, doing: &'static str, keep_rows: bool) -> Result<Outcome, Error> {
        let mut columns: Arc<[Column]> = Arc::from(Vec::new());
        let mut out = Outcome {
            rows: Vec::new(),
            affected: 0,
            tag: String::new(),
        };
        let mut error = None;
        let mut kept = 0usize;
        loop {
            match self.recv(doing)? {
                backend::Message::ParseComplete
                | backend::Message::BindComplete
                | backend::Message::NoData
                | backend::Message::EmptyQueryResponse
                | backend::Message::CloseComplete => {}
                backend::Message::RowDescription(b) => {
                    columns = self.columns(&b)?;
                }
                backend::Message::DataRow(b) => {
                    let row = self.row(&columns, b)?;
                    if keep_rows && error.is_none() {
                        kept += row.data.len();
                        if kept > MAX_RESPONSE {
                            return Err(self.protocol(format!(
                                "a response of over {MAX_RESPONSE} bytes of rows"
                            )));
                        }
                        out.rows.push(row);
                    }
                }
                backend::Message::CommandComplete(b) => {
                    let tag = b.tag().map_err(|e| self.protocol(e))?;
                    out.affected = tag
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    out.tag = tag.to_string();
                }
                backend::Message::ErrorResponse(b) => {
                    let e = self.server_error(b.fields());
                    if self.broken {
                        return Err(e); // fatal: no ReadyForQuery follows
                    }
                    error.get_or_insert(e);
                }
                backend::Message::ReadyForQuery(b) => {
                    self.ready(b.status())?;
                    return error.map_or(Ok(out), Err);
                }
                other => return Err(self.unexpected(&other, doing)),
            }
        }
    }

    fn columns(&mut self, body: &backend::RowDescriptionBody) -> Result<Arc<[Column]>, Error> {
        let mut fields = body.fields();
        let mut columns = Vec::new();
        while let Some(f) = fields.next().map_err(|e| self.protocol(e))? {
            columns.push(Column {
                name: f.name().to_string(),
                type_oid: f.type_oid(),
            });
        }
        Ok(columns.into())
    }

    fn row(&mut self, columns: &Arc<[Column]>, body: backend::DataRowBody) -> Result<Row, Error> {
        let ranges: Vec<_> = body.ranges().collect().map_err(|e| self.protocol(e))?;
        if ranges.len() != columns.len() {
            return Err(self.protocol(format!(
                "a row of {} fields for {} columns",
                ranges.len(),
                columns.len()
            )));
        }
        Ok(Row {
            columns: columns.clone(),
            data: body.buffer_bytes().clone(),
            ranges,
        })
    }

    fn ready(&mut self, status: u8) -> Result<(), Error> {
        self.status = match status {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            s => return Err(self.protocol(format!("transaction status {s:#04x}"))),
        };
        Ok(())
    }

    /// The server error in `fields`; a FATAL or PANIC one (the server closes the connection
    /// after it) also marks the connection broken.
    fn server_error(&mut self, mut fields: backend::ErrorFields<'_>) -> Error {
        let (mut code, mut message, mut constraint, mut detail) =
            (String::new(), String::new(), None, None);
        let mut severity = String::new();
        loop {
            match fields.next() {
                Ok(Some(f)) => {
                    let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
                    match f.type_() {
                        b'C' => code = v,
                        b'M' => message = v,
                        b'n' => constraint = Some(v),
                        b'D' => detail = Some(v),
                        b'V' => severity = v,
                        b'S' if severity.is_empty() => severity = v,
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => return self.protocol(format!("a malformed error response: {e}")),
            }
        }
        if matches!(severity.as_str(), "FATAL" | "PANIC") {
            self.broken = true;
        }
        Error::Server {
            code,
            message,
            constraint,
            detail,
        }
    }

    /// The next message that is not a notice, a parameter report or a notification.
    fn recv(&mut self, doing: &'static str) -> Result<backend::Message, Error> {
        loop {
            match self.buffered()? {
                Some(backend::Message::NoticeResponse(b)) => {
                    let mut fields = b.fields();
                    while let Ok(Some(f)) = fields.next() {
                        if f.type_() == b'M' {
                            let m = String::from_utf8_lossy(f.value_bytes());
                            log::debug!("{}: server notice: {m}", self.address);
                        }
                    }
                }
                Some(backend::Message::ParameterStatus(b)) => {
                    let (Ok(name), Ok(value)) = (b.name(), b.value()) else {
                        return Err(self.protocol("a malformed parameter status"));
                    };
                    let (name, value) = (name.to_string(), value.to_string());
                    match self.parameters.iter_mut().find(|(n, _)| *n == name) {
                        Some(p) => p.1 = value,
                        None => self.parameters.push((name, value)),
                    }
                }
                Some(backend::Message::NotificationResponse(_)) => {}
                Some(m) => return Ok(m),
                None => self.fill(doing)?,
            }
        }
    }

    /// The next whole message in the read buffer; its length is checked before the message
    /// is buffered in full, so nothing is reserved for bytes that have not arrived.
    fn buffered(&mut self) -> Result<Option<backend::Message>, Error> {
        let Some(header) = self.rbuf.get(..5) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err(self.protocol(format!(
                "a message length of {len} bytes (limit {MAX_MESSAGE})"
            )));
        }
        if self.rbuf.len() <= len {
            return Ok(None);
        }
        match backend::Message::parse(&mut self.rbuf) {
            Ok(m) => Ok(m),
            Err(e) => Err(self.protocol(e)),
        }
    }

    fn fill(&mut self, doing: &'static str) -> Result<(), Error> {
        self.arm(doing)?;
        let mut chunk = [0u8; CHUNK];
        loop {
            match self.io.read(&mut chunk) {
                Ok(0) => {
                    self.broken = true;
                    return Err(Error::Closed {
                        context: format!("{}: {doing}", self.address),
                    });
                }
                Ok(n) => {
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(doing, e)),
            }
        }
    }

    fn flush(&mut self, doing: &'static str) -> Result<(), Error> {
        if let Err(e) = self.arm(doing) {
            self.wbuf.clear();
            return Err(e);
        }
        let r = self.io.write_all(&self.wbuf).and_then(|()| self.io.flush());
        self.wbuf.clear();
        r.map_err(|e| self.fail(doing, e))
    }

    /// During startup, bounds the next operation by what is left of the connect deadline.
    fn arm(&mut self, doing: &'static str) -> Result<(), Error> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.broken = true;
            return Err(Error::Timeout {
                context: format!("{}: {doing}", self.address),
            });
        }
        self.io.set_timeout(left).map_err(|e| self.fail(doing, e))
    }

    fn usable(&self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Closed {
                context: format!("{}: an earlier error broke the connection", self.address),
            });
        }
        Ok(())
    }

    fn fail(&mut self, doing: &str, e: io::Error) -> Error {
        self.broken = true;
        Error::io(format!("{}: {doing}", self.address), e)
    }

    fn protocol(&mut self, m: impl std::fmt::Display) -> Error {
        self.broken = true;
        Error::Protocol(format!("{}: {m}", self.address))
    }

    fn unexpected(&mut self, m: &backend::Message, doing: &str) -> Error {
        let name = match m {
            backend::Message::AuthenticationOk => "AuthenticationOk",
            backend::Message::AuthenticationSasl(_) => "AuthenticationSASL",
            backend::Message::AuthenticationSaslContinue(_) => "AuthenticationSASLContinue",
            backend::Message::AuthenticationSaslFinal(_) => "AuthenticationSASLFinal",
            backend::Message::CopyInResponse(_) => "CopyInResponse (COPY is not supported)",
            backend::Message::CopyOutResponse(_) => "CopyOutResponse (COPY is not supported)",
            backend::Message::CopyData(_) => "CopyData",
            backend::Message::CopyDone => "CopyDone",
            backend::Message::DataRow(_) => "DataRow",
            backend::Message::RowDescription(_) => "RowDescription",
            backend::Message::ReadyForQuery(_) => "ReadyForQuery",
            backend::Message::PortalSuspended => "PortalSuspended",
            backend::Message::ParameterDescription(_) => "ParameterDescription",
            _ => "a message",
        };
        self.protocol(format!("unexpected {name} while {doing}"))
    }
}

/// The error for a transaction a failed statement aborted (PostgreSQL's own SQLSTATE for it).
fn aborted() -> Error {
    Error::Server {
        code: "25P02".into(),
        message: "the transaction was aborted by a failed statement and rolled back".into(),
        constraint: None,
        detail: None,
    }
}

impl Drop for Conn {
    /// Says goodbye (Terminate) so the server logs no "unexpected EOF"; best effort.
    fn drop(&mut self) {
        if !self.broken {
            self.wbuf.clear();
            frontend::terminate(&mut self.wbuf);
            let _ = self.io.write_all(&self.wbuf);
        }
    }
}
