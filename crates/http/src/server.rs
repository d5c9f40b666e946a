//! Sockets, limits and workers.
//!
//! One thread runs an async executor that accepts connections and reads request heads and
//! bodies; a fixed pool of worker threads runs the handlers. Nothing a client does can pin a
//! thread: a connection waiting for bytes costs a socket and a small buffer, and is bounded by
//! [`Limits`]:
//!
//! - at most `max_connections` open connections; past it the oldest connection still waiting for
//!   a request is closed to make room (so a flood of idle sockets cannot lock out Prometheus),
//!   and when every connection is busy the newcomer gets `503` and is closed;
//! - each read waits at most `read_timeout`, and a whole head must arrive within
//!   `head_deadline` of its first byte (of the accept, for a connection's first request), so a
//!   client trickling a byte at a time gets `408` and is closed;
//! - a head larger than `max_head_bytes` gets `414`/`431`, a body larger than `max_body_bytes`
//!   gets `413`, and the connection is closed;
//! - a keep-alive connection idle for `idle_timeout` is closed; a response that cannot be
//!   written within `write_timeout` is abandoned.
//!
//! A handler that waits on something slow (a BMC) answers with [`Response::deferred`]: its
//! worker is free at once and the connection's task awaits the answer, so a few slow calls
//! never hold up `/metrics` and `/health`.
//!
//! Refused requests are counted in the request metrics with `endpoint="other"`.

use std::collections::BTreeMap;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use crate::head::{head_len, overflow_error, RequestHead};
use crate::middleware::HttpService;
use crate::{Method, Request, Response};
use conduit_runtime::with_timeout;

/// Connection and request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Longest wait for one read while a request is incomplete.
    pub read_timeout: Duration,
    /// Longest time from a request's first byte (or the accept) to its complete head.
    pub head_deadline: Duration,
    /// Longest idle wait for the next request on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Longest time to write one response.
    pub write_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_head_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Handler threads.
    pub workers: usize,
    /// Longest wait for a deferred response (a handler's own bound should end it first).
    pub deferred_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            read_timeout: Duration::from_secs(5),
            head_deadline: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_head_bytes: 8 * 1024,
            max_body_bytes: 1024 * 1024,
            workers: 4,
            deferred_timeout: Duration::from_secs(120),
        }
    }
}

/// How long in-flight requests may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Stops a running server.
#[derive(Debug, Clone)]
pub struct Shutdown(async_channel::Sender<()>);

impl Shutdown {
    /// Asks the server to stop: it stops accepting, lets in-flight requests finish (up to a
    /// grace period) and returns from [`Server::run`].
    pub fn stop(&self) {
        self.0.close();
    }
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    limits: Limits,
    stop_tx: async_channel::Sender<()>,
    stop_rx: async_channel::Receiver<()>,
}

impl Server {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr, limits: Limits) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let (stop_tx, stop_rx) = async_channel::bounded(1);
        Ok(Server {
            listener,
            limits,
            stop_tx,
            stop_rx,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown(self.stop_tx.clone())
    }

    /// Serves until [`Shutdown::stop`] is called, on the calling thread plus `workers` threads.
    pub fn run(self, service: Arc<HttpService>) -> io::Result<()> {
        let listener = Async::new(self.listener)?;
        let (jobs_tx, jobs_rx) = async_channel::bounded::<Job>(self.limits.workers.max(1) * 8);
        let workers = spawn_workers(self.limits.workers.max(1), &service, jobs_rx)?;
        let ctx = Arc::new(Ctx {
            limits: self.limits,
            service,
            jobs: jobs_tx,
            table: Mutex::new(Table::default()),
            stopping: AtomicBool::new(false),
        });
        let ex = smol::LocalExecutor::new();
        future::block_on(ex.run(accept_loop(&ex, &ctx, &listener, &self.stop_rx)));
        drop(ex);
        drop(ctx);
        for w in workers {
            let _ = w.join();
        }
        Ok(())
    }

    /// Runs the server on a thread of its own; for tests and embedding.
    pub fn spawn(self, service: Arc<HttpService>) -> io::Result<(Shutdown, JoinHandle<()>)> {
        let stop = self.shutdown_handle();
        let handle = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                if let Err(e) = self.run(service) {
                    log::error!("http server: {e}");
                }
            })?;
        Ok((stop, handle))
    }
}

struct Job {
    req: Request,
    reply: async_channel::Sender<Response>,
}

fn spawn_workers(
    n: usize,
    service: &Arc<HttpService>,
    jobs: async_channel::Receiver<Job>,
) -> io::Result<Vec<JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let service = service.clone();
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("http-worker-{i}"))
                .spawn(move || {
                    // No catch_unwind: the binaries abort on panic (see conduit-service's
                    // logging), so a handler bug ends the process, logged, for its supervisor
                    // to restart, instead of leaving a half-working one.
                    while let Ok(job) = jobs.recv_blocking() {
                        let resp = service.handle(job.req);
                        let _ = job.reply.send_blocking(resp);
                    }
                })
        })
        .collect()
}

#[derive(Default)]
struct Table {
    next_id: u64,
    // Ordered by id, i.e. by age: eviction takes the oldest idle connection.
    conns: BTreeMap<u64, Entry>,
}

struct Entry {
    idle: bool,
    /// Handed to another protocol (a console WebSocket): never evicted, ended at shutdown.
    upgraded: bool,
    // Dropping the sender wakes the connection's task, which then closes the socket.
    _kill: async_channel::Sender<()>,
}

struct Ctx {
    limits: Limits,
    service: Arc<HttpService>,
    jobs: async_channel::Sender<Job>,
    table: Mutex<Table>,
    stopping: AtomicBool,
}

impl Ctx {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection, evicting the oldest idle one when at the cap.
    fn admit(&self) -> Option<(u64, async_channel::Receiver<()>)> {
        let mut t = self.table();
        if t.conns.len() >= self.limits.max_connections {
            let oldest_idle = t.conns.iter().find(|(_, e)| e.idle).map(|(id, _)| *id)?;
            t.conns.remove(&oldest_idle);
            log::debug!("connection cap reached: closed the oldest idle connection");
        }
        let (tx, rx) = async_channel::bounded(1);
        let id = t.next_id;
        t.next_id += 1;
        t.conns.insert(
            id,
            Entry {
                idle: true,
                upgraded: false,
                _kill: tx,
            },
        );
        Some((id, rx))
    }

    fn set_upgraded(&self, id: u64) {
        if let Some(e) = self.table().conns.get_mut(&id) {
            e.idle = false;
            e.upgraded = true;
        }
    }

    fn set_idle(&self, id: u64, idle: bool) {
        if let Some(e) = self.table().conns.get_mut(&id) {
            e.idle = idle;
        }
    }

    fn remove(&self, id: u64) {
        self.table().conns.remove(&id);
    }
}

async fn accept_loop(
    ex: &smol::LocalExecutor<'_>,
    ctx: &Arc<Ctx>,
    listener: &Async<TcpListener>,
    stop: &async_channel::Receiver<()>,
) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.recv().await;
            None
        })
        .await;
        let Some(accepted) = accepted else { break };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                log::warn!("accept: {e}");
                Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        match ctx.admit() {
            Some((id, kill)) => {
                ex.spawn(connection(ctx.clone(), stream, peer, id, kill))
                    .detach();
            }
            None => {
                ctx.service
                    .record_refused(Method::Other, 503, Duration::ZERO);
                let bytes = Response::text(503, "too many connections\n").to_bytes(1, false, true);
                let write_timeout = ctx.limits.write_timeout.min(Duration::from_secs(1));
                ex.spawn(async move {
                    let _ = with_timeout(write_timeout, (&stream).write_all(&bytes)).await;
                })
                .detach();
            }
        }
    }
    // Shutting down: close idle connections now, give busy ones the grace period.
    ctx.stopping.store(true, Ordering::Relaxed);
    // Upgraded connections (consoles) would never finish on their own: they end now too.
    ctx.table().conns.retain(|_, e| !e.idle && !e.upgraded);
    let until = Instant::now() + SHUTDOWN_GRACE;
    while !ctx.table().conns.is_empty() && Instant::now() < until {
        Timer::after(Duration::from_millis(20)).await;
    }
}

/// Why reading a request ended without one.
enum ReadEnd {
    /// The client closed, went idle, or the connection was evicted: close quietly.
    Closed,
    /// Answer `status` and close.
    Refused { status: u16, method: Method },
}

async fn connection(
    ctx: Arc<Ctx>,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    id: u64,
    kill: async_channel::Receiver<()>,
) {
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        // Evicted (or shutting down) while busy: no further request on this connection, even
        // one already buffered, so the connection cap holds.
        if kill.is_closed() {
            break;
        }
        ctx.set_idle(id, true);
        let started = Instant::now();
        let read = read_request(&ctx.limits, &stream, &mut buf, first);
        let outcome = future::or(read, async {
            let _ = kill.recv().await;
            Err(ReadEnd::Closed)
        })
        .await;
        first = false;
        ctx.set_idle(id, false);
        let (mut req, minor, keep_alive) = match outcome {
            Ok(r) => r,
            Err(ReadEnd::Closed) => break,
            Err(ReadEnd::Refused { status, method }) => {
                log::debug!("refused request from {peer}: {status}");
                ctx.service
                    .record_refused(method, status, started.elapsed());
                let reason = tiny_http::StatusCode(status).default_reason_phrase();
                let bytes = Response::text(status, format!("{reason}\n")).to_bytes(1, false, true);
                if let Some(Ok(())) =
                    with_timeout(ctx.limits.write_timeout, (&stream).write_all(&bytes)).await
                {
                    linger(&stream).await;
                }
                break;
            }
        };
        req.peer = Some(peer);
        let head_only = req.method == Method::Head;
        let (reply_tx, reply_rx) = async_channel::bounded(1);
        if ctx
            .jobs
            .send(Job {
                req,
                reply: reply_tx,
            })
            .await
            .is_err()
        {
            break;
        }
        let Ok(mut resp) = reply_rx.recv().await else {
            break;
        };
        if let Some(later) = resp.deferred.take().and_then(|d| d.take()) {
            // The worker is already free; this connection alone waits (a shutdown ends it).
            let waited = future::or(with_timeout(ctx.limits.deferred_timeout, later), async {
                let _ = kill.recv().await;
                None
            });
            resp = match waited.await {
                Some(r) => r,
                None if kill.is_closed() => break,
                None => Response::text(504, "the handler did not answer in time\n"),
            };
        }
        let upgrade = (resp.status == 101)
            .then(|| resp.upgrade.as_ref().and_then(|u| u.take()))
            .flatten();
        let close = upgrade.is_none() && (!keep_alive || ctx.stopping.load(Ordering::Relaxed));
        let bytes = resp.to_bytes(minor, head_only, close);
        let written = with_timeout(ctx.limits.write_timeout, (&stream).write_all(&bytes)).await;
        if let (Some(take_over), Some(Ok(()))) = (upgrade, &written) {
            // The connection now belongs to its new protocol (still counted against the cap,
            // never evicted as idle): no HTTP deadlines apply. A shutdown ends it.
            ctx.set_upgraded(id);
            future::or(take_over(stream, std::mem::take(&mut buf)), async {
                let _ = kill.recv().await;
            })
            .await;
            ctx.remove(id);
            return;
        }
        if close || !matches!(written, Some(Ok(()))) {
            break;
        }
    }
    ctx.remove(id);
}

/// Closes our side, then reads and discards what the client still sends for a short while.
///
/// Closing a socket with unread input makes the kernel send a reset, which can destroy the error
/// response before the client reads it (a client still sending an oversize head, say).
async fn linger(stream: &Async<TcpStream>) {
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < 1024 * 1024 {
            match (&*stream).read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    with_timeout(Duration::from_millis(500), drain).await;
}

/// Reads more bytes into `buf`, waiting at most until `deadline` (or `idle` when none is set).
async fn read_more(
    limits: &Limits,
    stream: &Async<TcpStream>,
    buf: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> Result<(), ReadEnd> {
    let wait = match deadline {
        Some(d) => limits
            .read_timeout
            .min(d.saturating_duration_since(Instant::now())),
        None => limits.idle_timeout,
    };
    let mut chunk = [0u8; 4096];
    match with_timeout(wait, (&*stream).read(&mut chunk)).await {
        Some(Ok(0)) | Some(Err(_)) => Err(ReadEnd::Closed),
        Some(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        // Nothing started: an idle connection, closed quietly. Something started: too slow.
        None if buf.is_empty() => Err(ReadEnd::Closed),
        None => Err(ReadEnd::Refused {
            status: 408,
            method: Method::Other,
        }),
    }
}

async fn read_request(
    limits: &Limits,
    stream: &Async<TcpStream>,
    buf: &mut Vec<u8>,
    first: bool,
) -> Result<(Request, u8, bool), ReadEnd> {
    let refuse = |status: u16, method: Method| ReadEnd::Refused { status, method };
    let mut deadline = (first || !buf.is_empty()).then(|| Instant::now() + limits.head_deadline);
    let n = loop {
        if let Some(n) = head_len(buf) {
            if n > limits.max_head_bytes {
                return Err(refuse(
                    overflow_error(&buf[..limits.max_head_bytes]).status(),
                    Method::Other,
                ));
            }
            break n;
        }
        if buf.len() > limits.max_head_bytes {
            return Err(refuse(overflow_error(buf).status(), Method::Other));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(refuse(408, Method::Other));
        }
        read_more(limits, stream, buf, deadline).await?;
        deadline.get_or_insert_with(|| Instant::now() + limits.head_deadline);
    };
    let head = RequestHead::parse(&buf[..n]).map_err(|e| refuse(e.status(), Method::Other))?;
    buf.drain(..n);

    if head.header("Transfer-Encoding").is_some() {
        return Err(refuse(411, head.method));
    }
    // One Content-Length, digits only: differing copies or signs are how requests get
    // smuggled past proxies that read them differently.
    let mut lengths = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.as_str());
    let body_len = match lengths.next() {
        None => 0,
        Some(v) => {
            let valid = !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit());
            if !valid || lengths.any(|other| other != v) {
                return Err(refuse(400, head.method));
            }
            v.parse::<usize>().map_err(|_| refuse(400, head.method))?
        }
    };
    if body_len > limits.max_body_bytes {
        return Err(refuse(413, head.method));
    }
    if body_len > buf.len()
        && head
            .header("Expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        if !matches!(
            with_timeout(limits.write_timeout, (&*stream).write_all(cont)).await,
            Some(Ok(()))
        ) {
            return Err(ReadEnd::Closed);
        }
    }
    let body_deadline = Some(Instant::now() + limits.head_deadline);
    while buf.len() < body_len {
        if body_deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(refuse(408, head.method));
        }
        read_more(limits, stream, buf, body_deadline)
            .await
            .map_err(|e| match e {
                ReadEnd::Refused { status, .. } => refuse(status, head.method),
                closed => closed,
            })?;
    }
    let body: Vec<u8> = buf.drain(..body_len).collect();
    let keep_alive = head.keep_alive();
    let minor = head.minor;
    Ok((
        Request {
            method: head.method,
            path: head.path,
            query: head.query,
            headers: head.headers,
            body,
            params: Vec::new(),
            peer: None,
        },
        minor,
        keep_alive,
    ))
}
