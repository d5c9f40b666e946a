//! A small blocking HTTP/1.1 client for one peer, over plain TCP or TLS (rustls + ring).
//!
//! # Contract
//!
//! * A [`Client`] talks to exactly one peer (a [`SocketAddr`] plus a server name used for SNI,
//!   certificate checks and the `Host` header). It is `Send + Sync` and keeps at most one idle
//!   keep-alive connection.
//! * Every request has one deadline, `timeout` from the moment [`Client::request`] is called. It
//!   bounds connect, TLS handshake, every write and every read: before each socket operation the
//!   socket timeout is set to the time that remains, so a peer that trickles bytes cannot extend
//!   it. Passing the deadline gives [`Error::Timeout`].
//! * Requests: `Host` and `User-Agent` are sent unless the caller supplies them; `Content-Length`
//!   is sent when the body is non-empty and always for `POST`, `PUT` and `PATCH`. Caller headers
//!   are sent verbatim in order. Header names must be tokens; names or values containing CR, LF
//!   or NUL, a method that is not a token, or a path that does not start with `/` or contains
//!   spaces or control bytes are refused with [`Error::Protocol`] before anything is sent. The
//!   client owns message framing: caller `Content-Length` / `Transfer-Encoding` headers are
//!   refused too. `Expect: 100-continue` is not waited for; the body is sent at once.
//! * Responses: status line `HTTP/1.0` or `HTTP/1.1`; header names are matched case-insensitively;
//!   obs-fold, control bytes in values and malformed lines are [`Error::Protocol`]. The head
//!   (including skipped interim responses) is limited to 16 KiB and 100 header lines, and the
//!   body to [`Request::max_body`]; beyond that [`Error::TooLarge`]. Interim `1xx` responses are
//!   skipped, except `101 Switching Protocols`, which is returned as is (use [`Client::connect`]
//!   to speak another protocol). `HEAD`, `1xx`, `204` and `304` responses have no body.
//!   Otherwise the body is framed by `Transfer-Encoding: chunked` (chunk extensions ignored,
//!   trailers validated and discarded), else by `Content-Length` (duplicates must agree, else
//!   [`Error::Protocol`]), else it is read until the peer closes. If both `Transfer-Encoding` and
//!   `Content-Length` are present, chunked wins and the connection is not reused. Any
//!   transfer-coding other than exactly `chunked` is [`Error::Protocol`]. Header values are
//!   decoded as UTF-8, lossily. Over TLS, a close without `close_notify` ends a read-to-close
//!   body normally (most servers do this); for framed bodies it is a truncation error.
//! * Redirects are never followed: `3xx` responses are returned to the caller.
//! * Keep-alive: a connection is kept after an `HTTP/1.1` response without `Connection: close`
//!   whose body was framed by length or chunks and fully read, with no extra bytes pending.
//!   An idle connection with pending bytes or a close from the peer is discarded before use.
//!   Any error drops the connection. Only idempotent methods (`GET`, `HEAD`, `PUT`, `DELETE`,
//!   `OPTIONS`, `TRACE`) reuse the idle connection; if that attempt fails with an I/O error
//!   before any response byte arrived, it is retried once on a fresh connection (same deadline).
//!   Every other method (`POST`, `PATCH`, ...) always goes on a fresh connection and is never
//!   retried, so it is never sent twice; its connection may be kept for later requests.
//! * TLS: [`Tls::CaPem`] trusts exactly the given CA certificates (a PEM with none is an error
//!   in [`Client::new`]); [`Tls::Insecure`] accepts any certificate for any name but still checks
//!   the handshake signatures. Certificate and handshake failures are [`Error::Tls`].
//! * No input from the peer can cause a panic.
#![forbid(unsafe_code)]

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::{fmt, str};

const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_CHUNK_LINE: usize = 4096;

/// How to secure the connection.
#[derive(Debug, Clone)]
pub enum Tls {
    /// TLS, trusting only the CA certificates in this PEM data.
    CaPem(Vec<u8>),
    /// TLS without certificate or name verification (handshake signatures are still checked).
    Insecure,
    /// Plain HTTP over TCP.
    Plain,
}

/// Errors. `Display` gives short lowercase messages.
#[derive(Debug)]
pub enum Error {
    /// TCP connect failed (other than by the deadline).
    Connect(io::Error),
    /// TLS configuration, certificate or handshake failure.
    Tls(String),
    /// The request deadline passed.
    Timeout,
    /// Read or write failed, or the peer closed early.
    Io(io::Error),
    /// Malformed response, or a request that cannot be sent safely.
    Protocol(&'static str),
    /// Response head over 16 KiB or 100 headers, or body over `max_body`.
    TooLarge,
}

impl Error {
    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect: {e}"),
            Error::Tls(m) => write!(f, "tls: {m}"),
            Error::Timeout => f.write_str("timed out"),
            Error::Io(e) => write!(f, "io: {e}"),
            Error::Protocol(m) => write!(f, "protocol: {m}"),
            Error::TooLarge => f.write_str("response too large"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) | Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

fn io_err(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout,
        _ => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(t) => Error::Tls(t.to_string()),
            None => Error::Io(e),
        },
    }
}

fn eof() -> Error {
    Error::Io(io::ErrorKind::UnexpectedEof.into())
}

/// A request. `path` is origin-form (`/a?b`).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// Largest accepted response body, in bytes.
    pub max_body: usize,
}

impl<'a> Request<'a> {
    /// A request with no headers, no body and `max_body` of 1 MiB.
    pub const fn new(method: &'a str, path: &'a str) -> Self {
        Request {
            method,
            path,
            headers: &[],
            body: &[],
            max_body: 1 << 20,
        }
    }
}

/// A final response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'h>(h: &'h [(String, String)], name: &str) -> Option<&'h str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A connected socket, plain or TLS (handshake done).
#[allow(missing_debug_implementations)] // rustls' stream; never logged
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    /// Sets the socket read and write timeouts (`None`: block forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(t)?;
        self.tcp().set_write_timeout(t)
    }

    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, Error> {
        let r = match self {
            Stream::Plain(s) => Timed(s, deadline).read(buf),
            Stream::Tls(t) => {
                let t = &mut **t;
                rustls::Stream::new(&mut t.conn, &mut Timed(&t.sock, deadline)).read(buf)
            }
        };
        match r {
            // TLS close without close_notify: treat as end of stream; framing catches truncation.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            r => r.map_err(io_err),
        }
    }

    fn write_by(&mut self, data: &[u8], deadline: Instant) -> Result<(), Error> {
        match self {
            Stream::Plain(s) => Timed(s, deadline).write_all(data),
            Stream::Tls(t) => {
                let t = &mut **t;
                let mut io = Timed(&t.sock, deadline);
                let mut s = rustls::Stream::new(&mut t.conn, &mut io);
                s.write_all(data).and_then(|_| s.flush())
            }
        }
        .map_err(io_err)
    }

    /// True if nothing is pending on the idle connection: no bytes (buffered in rustls or on
    /// the socket), no close, no error. Consumes a pending byte, so a `false` stream is spoilt.
    fn idle_ok(&mut self) -> bool {
        let blocked =
            |r: io::Result<usize>| matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        if let Stream::Tls(t) = self {
            if !blocked(t.conn.reader().read(&mut [0u8; 1])) {
                return false;
            }
        }
        let s = self.tcp();
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        let r = s.peek(&mut [0u8; 1]);
        s.set_nonblocking(false).is_ok() && blocked(r)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// A socket whose every operation is bounded by the deadline.
struct Timed<'a>(&'a TcpStream, Instant);

/// Time left before `deadline`; `TimedOut` once it has passed.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(io::ErrorKind::TimedOut.into()),
    }
}

fn would_block_to_timeout<T>(r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut.into(),
        _ => e,
    })
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.set_read_timeout(Some(remaining(self.1)?))?;
        would_block_to_timeout(self.0.read(buf))
    }
}

impl Write for Timed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.set_write_timeout(Some(remaining(self.1)?))?;
        would_block_to_timeout(self.0.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Certificate "verifier" for [`Tls::Insecure`]: accepts any certificate, checks signatures.
#[derive(Debug)]
struct AnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn tls_config(tls: Tls) -> Result<Option<Arc<ClientConfig>>, Error> {
    let terr = |e: rustls::Error| Error::Tls(e.to_string());
    let provider = rustls::crypto::ring::default_provider();
    let algs = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(terr)?;
    let config = match tls {
        Tls::Plain => return Ok(None),
        Tls::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(algs))),
        Tls::CaPem(pem) => {
            // A CA file may hold entries rustls cannot use (an old or odd certificate): those
            // are skipped, as long as one certificate is usable.
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(
                CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok),
            );
            if roots.is_empty() {
                return Err(Error::Tls("no certificate in ca pem".into()));
            }
            builder.with_root_certificates(roots)
        }
    };
    Ok(Some(Arc::new(config.with_no_client_auth())))
}

/// A blocking HTTP/1.1 client for one peer.
#[allow(missing_debug_implementations)] // holds a connection; callers print their own context
pub struct Client {
    addr: SocketAddr,
    name: ServerName<'static>,
    authority: String,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
    user_agent: String,
    // The idle keep-alive connection and when it went idle.
    idle: Mutex<Option<(Stream, Instant)>>,
}

/// How long an idle connection is kept: past that, a middlebox may have dropped it silently
/// (no FIN), and a request on it would wait out its whole deadline.
const MAX_IDLE: Duration = Duration::from_secs(10);

impl Client {
    /// `server_name` is used for SNI, certificate checks and `Host` (`None`: the IP address);
    /// a name that is neither a DNS name nor an IP address is [`Error::Protocol`].
    /// `timeout` is the whole-request deadline (connect + TLS + write + read). TLS settings are
    /// checked here: a bad or certificate-less CA PEM is [`Error::Tls`]. No I/O is done.
    pub fn new(
        addr: SocketAddr,
        server_name: Option<&str>,
        tls: Tls,
        timeout: Duration,
    ) -> Result<Client, Error> {
        let name = match server_name {
            Some(n) => ServerName::try_from(n.to_owned())
                .map_err(|_| Error::Protocol("invalid server name"))?,
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let host = match &name {
            ServerName::IpAddress(ip) => match std::net::IpAddr::from(*ip) {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            },
            other => other.to_str().into_owned(),
        };
        let tls = tls_config(tls)?;
        let default_port = if tls.is_some() { 443 } else { 80 };
        let authority = match addr.port() {
            p if p == default_port => host,
            p => format!("{host}:{p}"),
        };
        Ok(Client {
            addr,
            name,
            authority,
            tls,
            timeout,
            user_agent: "conduit".into(),
            idle: Mutex::new(None),
        })
    }

    /// Replaces the default `User-Agent` ("conduit").
    pub fn with_user_agent(mut self, user_agent: &str) -> Client {
        self.user_agent = user_agent.into();
        self
    }

    /// "http" or "https".
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The `Host` header value: name or IP, with the port unless it is the scheme's default.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// A fresh connection, TLS handshake done, for speaking another protocol (e.g. after an
    /// HTTP upgrade written by the caller). Connect and handshake are bounded by the client's
    /// timeout; the returned socket has read and write timeouts equal to it.
    pub fn connect(&self) -> Result<Stream, Error> {
        let s = self.open(self.deadline())?;
        s.set_timeout(Some(self.timeout).filter(|t| !t.is_zero()))
            .map_err(Error::Io)?;
        Ok(s)
    }

    /// Now plus the timeout (a huge timeout saturates at about a year).
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.timeout)
            .unwrap_or(now + Duration::from_secs(1 << 25))
    }

    fn open(&self, deadline: Instant) -> Result<Stream, Error> {
        let rem = remaining(deadline).map_err(|_| Error::Timeout)?;
        let tcp = TcpStream::connect_timeout(&self.addr, rem).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout,
            _ => Error::Connect(e),
        })?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let mut conn = ClientConnection::new(config.clone(), self.name.clone())
            .map_err(|e| Error::Tls(e.to_string()))?;
        let r = conn.complete_io(&mut Timed(&tcp, deadline));
        match r.map_err(io_err) {
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(Error::Tls("connection closed during handshake".into()))
            }
            Err(e) => Err(e),
            Ok(_) if conn.is_handshaking() => Err(Error::Tls("handshake did not complete".into())),
            Ok(_) => Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))),
        }
    }

    /// Sends one request and reads the final response. See the crate docs for the rules.
    pub fn request(&self, req: &Request<'_>) -> Result<Response, Error> {
        let deadline = self.deadline();
        let head = self.head(req)?;
        let idempotent = matches!(
            req.method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        );
        if idempotent {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).take();
            let fresh_enough = idle.filter(|(_, since)| since.elapsed() < MAX_IDLE);
            if let Some(mut s) = fresh_enough.and_then(|(mut s, _)| s.idle_ok().then_some(s)) {
                match exchange(&mut s, req, &head, deadline) {
                    Ok((resp, reuse)) => return Ok(self.keep(s, reuse, resp)),
                    Err((Error::Io(_), false)) => {} // stale connection: retry once, fresh
                    Err((e, _)) => return Err(e),
                }
            }
        }
        let mut s = self.open(deadline)?;
        let (resp, reuse) = exchange(&mut s, req, &head, deadline).map_err(|(e, _)| e)?;
        Ok(self.keep(s, reuse, resp))
    }

    fn keep(&self, s: Stream, reuse: bool, resp: Response) -> Response {
        if reuse {
            *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = Some((s, Instant::now()));
        }
        resp
    }

    fn head(&self, req: &Request<'_>) -> Result<Vec<u8>, Error> {
        if !is_token(req.method) {
            return Err(Error::Protocol("invalid method"));
        }
        if !req.path.starts_with('/') || req.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Error::Protocol("invalid path"));
        }
        let has = |n: &str| req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if has("content-length") || has("transfer-encoding") {
            return Err(Error::Protocol("framing headers are set by the client"));
        }
        let mut h = format!("{} {} HTTP/1.1\r\n", req.method, req.path).into_bytes();
        let mut add = |n: &str, v: &str| {
            if !is_token(n) || v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(Error::Protocol("invalid header"));
            }
            h.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            Ok(())
        };
        if !has("host") {
            add("Host", &self.authority)?;
        }
        if !has("user-agent") {
            add("User-Agent", &self.user_agent)?;
        }
        for (n, v) in req.headers {
            add(n, v)?;
        }
        if !req.body.is_empty() || matches!(req.method, "POST" | "PUT" | "PATCH") {
            add("Content-Length", &req.body.len().to_string())?;
        }
        h.extend_from_slice(b"\r\n");
        Ok(h)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn has_token(h: &[(String, String)], name: &str, token: &str) -> bool {
    h.iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Writes the request and reads the response. The error carries whether any response byte came.
fn exchange(
    s: &mut Stream,
    req: &Request<'_>,
    head: &[u8],
    deadline: Instant,
) -> Result<(Response, bool), (Error, bool)> {
    let mut w = |d: &[u8]| s.write_by(d, deadline).map_err(|e| (e, false));
    if req.body.len() <= 16 * 1024 {
        w(&[head, req.body].concat())?;
    } else {
        w(head)?;
        w(req.body)?;
    }
    let mut c = Conn {
        s,
        deadline,
        buf: Vec::new(),
        pos: 0,
        got: false,
    };
    let r = read_response(&mut c, req);
    let got = c.got;
    let (resp, reuse) = r.map_err(|e| (e, got))?;
    let close = has_token(&resp.headers, "connection", "close")
        || req.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection")
                && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        });
    Ok((resp, reuse && !close && c.pos == c.buf.len()))
}

/// Buffered reader over a stream, bounded by the deadline.
struct Conn<'a> {
    s: &'a mut Stream,
    deadline: Instant,
    buf: Vec<u8>,
    pos: usize,
    got: bool,
}

impl Conn<'_> {
    /// Reads more bytes into the buffer; 0 at end of stream.
    fn fill(&mut self) -> Result<usize, Error> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let old = self.buf.len();
        self.buf.resize(old + 8192, 0);
        let r = self.s.read_by(&mut self.buf[old..], self.deadline);
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        self.got |= n > 0;
        r
    }

    /// One line without its LF (and CR), charged against `budget`.
    fn line(&mut self, budget: &mut usize) -> Result<Vec<u8>, Error> {
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                if i >= *budget {
                    return Err(Error::TooLarge);
                }
                *budget -= i + 1;
                let line = avail[..i]
                    .strip_suffix(b"\r")
                    .unwrap_or(&avail[..i])
                    .to_vec();
                self.pos += i + 1;
                return Ok(line);
            }
            if avail.len() >= *budget {
                return Err(Error::TooLarge);
            }
            if self.fill()? == 0 {
                return Err(eof());
            }
        }
    }

    /// Appends exactly `n` bytes to `out`.
    fn take(&mut self, out: &mut Vec<u8>, mut n: usize) -> Result<(), Error> {
        while n > 0 {
            if self.pos == self.buf.len() && self.fill()? == 0 {
                return Err(eof());
            }
            let k = n.min(self.buf.len() - self.pos);
            out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            n -= k;
        }
        Ok(())
    }
}

fn parse_status(l: &[u8]) -> Result<(bool, u16), Error> {
    const BAD: Error = Error::Protocol("malformed status line");
    let v11 = match l.get(..9) {
        Some(b"HTTP/1.1 ") => true,
        Some(b"HTTP/1.0 ") => false,
        _ => return Err(BAD),
    };
    let code = l
        .get(9..12)
        .filter(|d| d.iter().all(u8::is_ascii_digit))
        .ok_or(BAD)?;
    let status = code.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
    let reason_ok = l.get(12..).is_none_or(|r| {
        (r.is_empty() || r[0] == b' ') && r.iter().all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
    });
    if status < 100 || !reason_ok {
        return Err(BAD);
    }
    Ok((v11, status))
}

fn parse_header(l: &[u8]) -> Result<(String, String), Error> {
    const BAD: Error = Error::Protocol("malformed header");
    let colon = l.iter().position(|&b| b == b':').ok_or(BAD)?;
    let name = str::from_utf8(&l[..colon]).map_err(|_| BAD)?;
    if !is_token(name) {
        return Err(BAD); // includes obs-fold (leading whitespace) and space before the colon
    }
    let value = l[colon + 1..].trim_ascii();
    if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(BAD);
    }
    Ok((name.to_owned(), String::from_utf8_lossy(value).into_owned()))
}

fn read_head(c: &mut Conn<'_>, budget: &mut usize) -> Result<Vec<(String, String)>, Error> {
    let mut headers = Vec::new();
    loop {
        let l = c.line(budget)?;
        if l.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(Error::TooLarge);
        }
        headers.push(parse_header(&l)?);
    }
}

fn content_length(h: &[(String, String)]) -> Result<Option<u64>, Error> {
    let mut len = None;
    for v in h
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in v.1.split(',') {
            let part = part.trim();
            let bad = part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit());
            let n = part.parse::<u64>().ok().filter(|_| !bad);
            match (n, len) {
                (None, _) => return Err(Error::Protocol("invalid content-length")),
                (Some(n), Some(l)) if n != l => {
                    return Err(Error::Protocol("conflicting content-length"))
                }
                (n, _) => len = n,
            }
        }
    }
    Ok(len)
}

/// Reads the final response; the flag says whether its framing allows reuse.
fn read_response(c: &mut Conn<'_>, req: &Request<'_>) -> Result<(Response, bool), Error> {
    let mut budget = MAX_HEAD;
    let (v11, status, headers) = loop {
        let (v11, status) = parse_status(&c.line(&mut budget)?)?;
        let headers = read_head(c, &mut budget)?;
        if status >= 200 || status == 101 {
            break (v11, status, headers);
        }
    };
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if req.method == "HEAD" || status < 200 || status == 204 || status == 304 {
        return Ok((resp, v11 && status != 101));
    }
    let max = req.max_body;
    let mut codings = resp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim);
    match (codings.next(), codings.next()) {
        (None, _) => {}
        (Some(t), None) if t.eq_ignore_ascii_case("chunked") => {
            resp.body = read_chunked(c, max)?;
            let cl = header(&resp.headers, "content-length").is_some();
            return Ok((resp, v11 && !cl));
        }
        _ => return Err(Error::Protocol("unsupported transfer-encoding")),
    }
    if let Some(n) = content_length(&resp.headers)? {
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= max)
            .ok_or(Error::TooLarge)?;
        resp.body.reserve(n.min(64 * 1024));
        c.take(&mut resp.body, n)?;
        return Ok((resp, v11));
    }
    loop {
        let avail = c.buf.len() - c.pos;
        if resp.body.len() + avail > max {
            return Err(Error::TooLarge);
        }
        resp.body.extend_from_slice(&c.buf[c.pos..]);
        c.pos = c.buf.len();
        if c.fill()? == 0 {
            return Ok((resp, false));
        }
    }
}

fn read_chunked(c: &mut Conn<'_>, max: usize) -> Result<Vec<u8>, Error> {
    const BAD: Error = Error::Protocol("malformed chunk");
    let mut body = Vec::new();
    loop {
        let line = c.line(&mut { MAX_CHUNK_LINE })?;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || !matches!(line.get(digits), None | Some(b';' | b' ' | b'\t')) {
            return Err(BAD);
        }
        let hex = str::from_utf8(&line[..digits]).map_err(|_| BAD)?;
        let size = u64::from_str_radix(hex, 16).map_err(|_| BAD)?;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= max - body.len());
        c.take(&mut body, size.ok_or(Error::TooLarge)?)?;
        match c.line(&mut 2) {
            Ok(l) if l.is_empty() => {}
            Ok(_) | Err(Error::TooLarge) => return Err(BAD),
            Err(e) => return Err(e),
        }
    }
    read_head(c, &mut { MAX_HEAD })?; // trailers: validated, discarded
    Ok(body)
}
