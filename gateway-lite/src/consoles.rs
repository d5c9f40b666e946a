//! Consoles through the gateway: a user's WebSocket at `/console/{sol|vnc}/{server_id}`,
//! spliced to the console endpoint of the agent serving the server.
//!
//! 1. `GatewayService.CreateConsoleTicket` (bearer token): the caller's right to the server
//!    is decided as for any operation (viewers watch, operators type; VNC needs an operator,
//!    since the agent's VNC has no view-only mode), and a one-time ticket (30 s) is minted
//!    bound to that caller, console and server. Browsers cannot put a token on a WebSocket;
//!    the token never appears in a URL.
//! 2. The upgrade redeems the ticket (a browser's `Origin` must be the gateway's own or one
//!    of `--console-origin`), checks the caps (per user, per server, in all), answers 101.
//! 3. It asks the agent over the uplink (`OpenConsole`, naming a random stream id); the agent
//!    dials a data connection of its own to the uplink listener (`/uplink/stream/{id}`), and
//!    answers with its console path. Console bytes never share the control link.
//! 4. The gateway opens the agent's console WebSocket over the data connection and then
//!    passes bytes both ways as they come, frames intact (the viewer's masked frames are what
//!    the agent reads, the agent's what the viewer reads), following the frame headers to
//!    count payload bytes and messages ([`FrameScanner`]).
//!
//! A session ends when either side leaves; when the uplink drops; when the user's right ends
//! (the token, its login session or the user revoked, the server changing hands — checked
//! every second against what the manager last said, so within the revocation bound); when
//! the session's user or an admin closes it (`CloseSession`); or after `--console-idle-secs`
//! without a message from the viewer. The viewer is told why in a close frame (sent between
//! two of the agent's frames). Each session leaves an audit record (who, server, console,
//! start, end, bytes each way, why it ended).

use std::cell::Cell;
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use conduit_api::agent::{CreateConsoleTicketRequest, CreateConsoleTicketResponse};
use conduit_api::gateway::{self as gw, GATEWAY_SERVICE};
use conduit_api::manager::GatewayAuditRecord;
use conduit_api::uplink::{self as up, Capability};
use conduit_auth::Role;
use conduit_http::router::Router;
use conduit_http::rpc::{decode_body, unary_raw, Code, RpcError};
use conduit_http::ticket::Tickets;
use conduit_http::{Method, Request, Response, Upgrade};
use conduit_runtime::with_timeout;
use conduit_uplink::link;
use conduit_ws::close_code;
use conduit_ws::scan::FrameScanner;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::agents::{Agents, Failure};
use crate::api::unix_now;
use crate::audit::Outbox;
use crate::metrics::{
    ConsoleScope, Flow, GatewayMetrics, SessionLabels, SessionOperation, TypeLabel, WebSocketError,
};
use crate::trust::{Caller, Trust};
use crate::web_origins::WebOrigins;

/// A data connection from an agent, TLS or plain.
pub trait DataStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> DataStream for S {}
type Data = Box<dyn DataStream>;
/// A data connection as it arrived: the stream, and the bytes read past its upgrade.
type Arrived = (Data, Vec<u8>);

/// How long a console ticket is valid: long enough to open the URL it came with.
const TICKET_TTL: Duration = Duration::from_secs(30);
/// The agent's answer to OpenConsole, and its data connection, must come within this.
const OPEN_WITHIN: Duration = Duration::from_secs(15);
/// A write to either side that takes longer ends the session (a peer that stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once a session is ending, the agent gets this long to finish the frame it is sending.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often a live session checks its uplink, its user's right and its idle time.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Relay read sizes: toward the viewer (console output, VNC updates), and from it.
const CHUNK_OUT: usize = 256 * 1024;
const CHUNK_IN: usize = 16 * 1024;
/// A session thread's stack (its buffers are on the heap).
const SESSION_STACK: usize = 512 * 1024;

/// The caps and the idle timeout.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sessions one user may hold at once.
    pub per_user: usize,
    /// Sessions on one server at once.
    pub per_server: usize,
    /// Sessions at this gateway at once.
    pub total: usize,
    /// A viewer that sends no message for this long is closed (`idle_timeout`).
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_user: 4,
            per_server: 8,
            total: 64,
            idle: Duration::from_secs(3600),
        }
    }
}

/// What a ticket carries to the upgrade.
#[derive(Debug, Clone)]
struct Ticketed {
    caller: Caller,
    watch: bool,
}

/// One live session.
#[derive(Debug)]
struct Live {
    info: gw::Session,
    customer_id: String,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    close: async_channel::Sender<&'static str>,
}

/// A session's place among the live ones, from the caps' check to its end; given back on
/// drop (also when the upgrade never happens: the client left before its 101).
struct Seat {
    consoles: Arc<Consoles>,
    live: Arc<Live>,
    closed: async_channel::Receiver<&'static str>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut all = lock(&self.consoles.live);
        all.remove(&self.live.info.session_id);
        self.consoles.publish_busiest(&all);
    }
}

/// The consoles of this gateway.
#[derive(Debug)]
pub struct Consoles {
    trust: Arc<Trust>,
    agents: Arc<Agents>,
    metrics: Arc<GatewayMetrics>,
    outbox: Arc<Outbox>,
    limits: Limits,
    origins: Arc<WebOrigins>,
    tickets: Tickets<Ticketed>,
    /// Data connections asked of agents and not yet arrived, by stream id.
    pending: Mutex<HashMap<String, async_channel::Sender<Arrived>>>,
    live: Mutex<HashMap<String, Arc<Live>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kind_label(kind: &str) -> &'static str {
    if kind == "vnc" {
        "vnc"
    } else {
        "sol"
    }
}

impl Consoles {
    /// The consoles, with `limits`; browsers may open them from `origins`' pages.
    pub fn new(
        trust: Arc<Trust>,
        agents: Arc<Agents>,
        metrics: Arc<GatewayMetrics>,
        outbox: Arc<Outbox>,
        limits: Limits,
        origins: Arc<WebOrigins>,
    ) -> Arc<Consoles> {
        for (scope, limit) in [
            ("user", limits.per_user),
            ("server", limits.per_server),
            ("total", limits.total),
        ] {
            metrics
                .console_session_limit
                .with(&ConsoleScope { scope }, |g| g.set(limit as i64));
            metrics
                .console_sessions_busiest
                .with(&ConsoleScope { scope }, |g| g.set(0));
        }
        Arc::new(Consoles {
            trust,
            agents,
            metrics,
            outbox,
            limits,
            origins,
            tickets: Tickets::new(TICKET_TTL, 1024),
            pending: Mutex::default(),
            live: Mutex::default(),
        })
    }

    fn error(&self, kind: &str, error_type: &'static str) {
        self.metrics.websocket_errors.inc(&WebSocketError {
            r#type: kind_label(kind),
            error_type,
        });
    }

    fn operation(&self, operation: &'static str, kind: &str, status: &'static str) {
        self.metrics.session_operations.inc(&SessionOperation {
            operation,
            r#type: kind_label(kind),
            status,
        });
    }

    fn caller(&self, req: &Request) -> Result<Caller, RpcError> {
        crate::api::caller(&self.trust, &self.metrics, req)
    }

    /// `CreateConsoleTicket`.
    fn ticket(&self, req: &Request) -> Result<CreateConsoleTicketResponse, RpcError> {
        let caller = self.caller(req)?;
        let r: CreateConsoleTicketRequest = decode_body(req)?;
        let capability = match r.console.as_str() {
            "sol" => Capability::Sol,
            "vnc" => Capability::Vnc,
            _ => {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    "console must be sol or vnc",
                ))
            }
        };
        if !conduit_api::valid_id(&r.server_id) {
            return Err(RpcError::new(
                Code::InvalidArgument,
                "serverId: 1–64 of letters, digits and . - _ :",
            ));
        }
        self.trust.authorize(&caller, &r.server_id, false)?;
        let watch = caller.claims.role == Role::Viewer;
        if watch && capability == Capability::Vnc {
            return Err(RpcError::new(
                Code::PermissionDenied,
                "viewers watch serial consoles; the graphical console needs an operator (it has no view-only mode yet)",
            ));
        }
        let reach = self
            .agents
            .reach(&r.server_id, self.trust.agent_of(&r.server_id).as_deref());
        if reach.is_some_and(|r| !r.capabilities.contains(&capability)) {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                format!("server {} offers no {} console", r.server_id, r.console),
            ));
        }
        let scope = format!("{}/{}", r.console, r.server_id);
        let ticket = self
            .tickets
            .mint_with(&scope, Ticketed { caller, watch })
            .map_err(|e| e.to_rpc(TICKET_TTL))?;
        Ok(CreateConsoleTicketResponse {
            path: format!("/console/{scope}?ticket={ticket}"),
            ticket,
            expires_in_secs: TICKET_TTL.as_secs_f64(),
        })
    }

    /// A seat among the live sessions for `caller` on `server`, taken under the caps (per
    /// user, per server, in all) in one lock: a session counts from here, not from when its
    /// agent answers, so a burst of upgrades cannot pass the caps together. `Err` names the
    /// cap.
    fn reserve(
        self: &Arc<Self>,
        caller: &Caller,
        server: &str,
        kind: &str,
        watch: bool,
    ) -> Result<Seat, &'static str> {
        let id = conduit_auth::random_id(16).map_err(|_| "internal")?;
        let (close, closed) = async_channel::bounded(1);
        let user = &caller.claims.sub;
        let mut live = lock(&self.live);
        if live.len() >= self.limits.total {
            return Err("gateway");
        }
        if live.values().filter(|l| &l.info.user_id == user).count() >= self.limits.per_user {
            return Err("user");
        }
        if live.values().filter(|l| l.info.server_id == server).count() >= self.limits.per_server {
            return Err("server");
        }
        let seat = Arc::new(Live {
            info: gw::Session {
                session_id: id.clone(),
                server_id: server.to_owned(),
                console: kind_label(kind).to_owned(),
                user_id: user.clone(),
                watch,
                started_at: unix_now() as i64,
                bytes_in: 0,
                bytes_out: 0,
            },
            customer_id: self.trust.owner_of(server),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            close,
        });
        live.insert(id, seat.clone());
        self.publish_busiest(&live);
        Ok(Seat {
            consoles: self.clone(),
            live: seat,
            closed,
        })
    }

    fn publish_busiest(&self, live: &HashMap<String, Arc<Live>>) {
        let mut users: HashMap<&str, i64> = HashMap::new();
        let mut servers: HashMap<&str, i64> = HashMap::new();
        for l in live.values() {
            *users.entry(&l.info.user_id).or_default() += 1;
            *servers.entry(&l.info.server_id).or_default() += 1;
        }
        for (scope, n) in [
            ("user", users.values().max().copied().unwrap_or(0)),
            ("server", servers.values().max().copied().unwrap_or(0)),
            ("total", live.len() as i64),
        ] {
            self.metrics
                .console_sessions_busiest
                .with(&ConsoleScope { scope }, |g| g.set(n));
        }
    }

    /// The `GET /console/{kind}/{id}` upgrade.
    fn open(self: &Arc<Self>, req: &Request) -> Response {
        let kind = req.param("kind").unwrap_or_default().to_owned();
        let server = req.param("id").unwrap_or_default().to_owned();
        if kind != "sol" && kind != "vnc" {
            return Response::text(
                404,
                "consoles are /console/sol/{id} and /console/vnc/{id}\n",
            );
        }
        if !self.origins.may_open_consoles(req) {
            self.error(&kind, "origin");
            return Response::text(403, "this origin may not open consoles here\n");
        }
        let ticketed = req
            .query_param("ticket")
            .and_then(|t| self.tickets.redeem_value(&t, &format!("{kind}/{server}")));
        let Some(t) = ticketed else {
            self.error(&kind, "unauthenticated");
            return Response::text(
                401,
                "missing or spent ticket: get one from GatewayService.CreateConsoleTicket\n",
            );
        };
        if let Err(why) = self.trust.still_allowed(&t.caller, &server) {
            self.error(&kind, "unauthenticated");
            return Response::text(403, format!("{why}\n"));
        }
        let resp = match conduit_http::upgrade::websocket(req, Some("binary")) {
            Ok(r) => r,
            Err(e) => {
                self.error(&kind, "bad_handshake");
                return Response::text(400, format!("{e}\n"));
            }
        };
        let seat = match self.reserve(&t.caller, &server, &kind, t.watch) {
            Ok(seat) => seat,
            Err(scope) => {
                self.error(&kind, "session_limit");
                self.operation("create", &kind, "resource_exhausted");
                return Response::text(
                    429,
                    format!("too many console sessions for this {scope}: close one first\n"),
                )
                .with_header("Retry-After", "5");
            }
        };
        let takeover = req.query_param("mode").as_deref() == Some("takeover");
        let me = self.clone();
        resp.with_upgrade(Upgrade::new(move |stream, leftover| {
            Box::pin(async move {
                // Each session relays on a thread of its own: a busy stream neither waits
                // behind nor delays the HTTP I/O thread's requests, or another console.
                let (done_tx, done) = async_channel::bounded::<()>(1);
                let spawned = std::thread::Builder::new()
                    .name("console".into())
                    .stack_size(SESSION_STACK)
                    .spawn(move || {
                        conduit_runtime::yield_to_operations();
                        futures_lite::future::block_on(
                            me.session(stream, leftover, kind, server, t, takeover, seat),
                        );
                        drop(done_tx);
                    });
                match spawned {
                    Ok(_) => {
                        let _ = done.recv().await;
                    }
                    Err(e) => log::error!("no thread for a console session: {e}"),
                }
            })
        }))
        .with_header("Cache-Control", "no-store")
    }

    /// A data connection for `stream` arrived: hands it to its session. False when no session
    /// asked for it (a late, repeated or forged id).
    pub fn deliver(&self, stream: &str, data: Data, leftover: Vec<u8>) -> bool {
        match lock(&self.pending).remove(stream) {
            Some(tx) => tx.try_send((data, leftover)).is_ok(),
            None => false,
        }
    }

    /// Whether a data connection for `stream` is awaited.
    pub fn awaits(&self, stream: &str) -> bool {
        lock(&self.pending).contains_key(stream)
    }

    #[allow(clippy::too_many_arguments)]
    async fn session(
        self: Arc<Self>,
        viewer: Async<TcpStream>,
        viewer_leftover: Vec<u8>,
        kind: String,
        server: String,
        t: Ticketed,
        takeover: bool,
        seat: Seat,
    ) {
        let k = kind_label(&kind);
        let conns = TypeLabel { r#type: k };
        self.metrics.websocket_connections.with(&conns, |g| g.inc());
        let asked = Instant::now();
        match self.connect(&kind, &server, &t, takeover).await {
            Err((error_type, status, why)) => {
                self.error(&kind, error_type);
                self.operation("create", &kind, status);
                log::info!("console {kind} {server} for {}: {why}", t.caller.claims.sub);
                close(&viewer, 1011, error_type).await;
            }
            Ok((data, agent_leftover)) => {
                self.operation("create", &kind, "ok");
                (self.metrics.session_creation_duration)
                    .observe(&conns, asked.elapsed().as_secs_f64());
                self.run(
                    viewer,
                    viewer_leftover,
                    data,
                    agent_leftover,
                    &kind,
                    &server,
                    t,
                    seat,
                )
                .await;
            }
        }
        self.metrics.websocket_connections.with(&conns, |g| g.dec());
    }

    /// Asks the agent for the console and opens its WebSocket over the data connection.
    async fn connect(
        &self,
        kind: &str,
        server: &str,
        t: &Ticketed,
        takeover: bool,
    ) -> Result<(Data, Vec<u8>), (&'static str, &'static str, String)> {
        let assigned = self.trust.agent_of(server);
        let (agent_id, uplink) = self
            .agents
            .route(server, assigned.as_deref())
            .map_err(|e| ("agent_unavailable", "unavailable", e.message))?;
        let stream = conduit_auth::random_id(32)
            .map_err(|_| ("internal", "internal", "no random stream id".to_owned()))?;
        let (tx, rx) = async_channel::bounded(1);
        lock(&self.pending).insert(stream.clone(), tx);
        let request = up::OpenConsole {
            server_id: server.to_owned(),
            console: kind.to_owned(),
            stream: stream.clone(),
            watch: t.watch,
            takeover: takeover && !t.watch,
        };
        let body = serde_json::value::to_raw_value(&request).unwrap_or_default();
        let answer = uplink
            .call(up::Method::OpenConsole, body, OPEN_WITHIN)
            .await;
        let opened = async {
            let reply = answer.map_err(|f| match f {
                Failure::Timeout => (
                    "timeout",
                    "deadline_exceeded",
                    format!("agent {agent_id} did not answer"),
                ),
                _ => (
                    "agent_unavailable",
                    "unavailable",
                    format!("the uplink to agent {agent_id} failed"),
                ),
            })?;
            let path = match (reply.result, reply.error) {
                (Some(v), None) => {
                    serde_json::from_str::<up::ConsoleOpened>(v.get())
                        .map_err(|e| {
                            (
                                "agent_refused",
                                "internal",
                                format!("agent {agent_id}: {e}"),
                            )
                        })?
                        .path
                }
                (_, Some(e)) => return Err(("agent_refused", code_word(&e.code), e.message)),
                (None, None) => {
                    return Err(("agent_refused", "internal", "an empty answer".into()))
                }
            };
            let (mut data, leftover) = with_timeout(OPEN_WITHIN, rx.recv())
                .await
                .and_then(Result::ok)
                .ok_or((
                    "timeout",
                    "deadline_exceeded",
                    format!("agent {agent_id} dialed no data connection"),
                ))?;
            if !leftover.is_empty() {
                return Err((
                    "agent_refused",
                    "internal",
                    "bytes before the console opened".into(),
                ));
            }
            let rest = with_timeout(
                OPEN_WITHIN,
                link::client_handshake(&mut data, "agent", &path, "binary", ""),
            )
            .await
            .ok_or((
                "timeout",
                "deadline_exceeded",
                "the agent's console did not open".into(),
            ))?
            .map_err(|e| {
                (
                    "agent_refused",
                    "unavailable",
                    format!("agent {agent_id}'s console: {e}"),
                )
            })?;
            Ok((data, rest))
        }
        .await;
        lock(&self.pending).remove(&stream);
        opened
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        viewer: Async<TcpStream>,
        viewer_leftover: Vec<u8>,
        data: Data,
        agent_leftover: Vec<u8>,
        kind: &str,
        server: &str,
        t: Ticketed,
        seat: Seat,
    ) {
        let k = kind_label(kind);
        let live = seat.live.clone();
        let (id, started_at) = (live.info.session_id.clone(), live.info.started_at);
        let close_rx = seat.closed.clone();
        let labels = SessionLabels {
            r#type: k,
            customer_id: live.customer_id.clone(),
        };
        self.metrics.sessions.with(&labels, |g| g.inc());
        let started = Instant::now();
        let assigned = self.trust.agent_of(server);
        let uplink = self
            .agents
            .route(server, assigned.as_deref())
            .ok()
            .map(|(_, l)| l);
        let last_input = Cell::new(Instant::now());
        let watchdog = async {
            loop {
                let closed =
                    futures_lite::future::or(async { close_rx.recv().await.ok() }, async {
                        Timer::after(CHECK_EVERY).await;
                        None
                    })
                    .await;
                if let Some(why) = closed {
                    return why;
                }
                if uplink.as_ref().is_none_or(|l| l.is_closed()) {
                    return "link_dropped";
                }
                if let Err(why) = self.trust.still_allowed(&t.caller, server) {
                    return why;
                }
                if last_input.get().elapsed() >= self.limits.idle {
                    return "idle_timeout";
                }
            }
        };
        let flow_in = Flow {
            r#type: k,
            direction: "inbound",
        };
        let flow_out = Flow {
            r#type: k,
            direction: "outbound",
        };
        let relay = Relay {
            bytes_in: self.metrics.websocket_bytes.handle(&flow_in),
            messages_in: self.metrics.websocket_messages.handle(&flow_in),
            bytes_out: self.metrics.websocket_bytes.handle(&flow_out),
            messages_out: self.metrics.websocket_messages.handle(&flow_out),
            live: &live,
            last_input: &last_input,
        };
        let why = relay
            .run(&viewer, viewer_leftover, data, agent_leftover, watchdog)
            .await;
        if let Some(e) = why.error() {
            self.error(kind, e);
        }
        self.operation("close", kind, why.word());
        drop(seat);
        self.metrics.sessions.with(&labels, |g| g.dec());
        let secs = started.elapsed().as_secs_f64();
        self.metrics
            .session_duration
            .observe(&TypeLabel { r#type: k }, secs);
        let (bytes_in, bytes_out) = (
            live.bytes_in.load(Ordering::Relaxed),
            live.bytes_out.load(Ordering::Relaxed),
        );
        let record = GatewayAuditRecord {
            at: started_at,
            actor: t.caller.claims.sub.clone(),
            action: format!("console.{k}"),
            server_id: server.to_owned(),
            result: why.word().to_owned(),
            detail: format!(
                "session {id}, {}, {secs:.0} s, ended {}, {bytes_in} bytes from the viewer, {bytes_out} bytes to it",
                if t.watch { "watching" } else { "typing" },
                unix_now()
            ),
        };
        let outbox = self.outbox.clone();
        if let Err(e) = smol::unblock(move || outbox.append(&record)).await {
            log::error!("audit outbox: {e}: console session {id} on {server} lost");
        }
        log::info!(
            "console {k} {server} of {}: ended ({}) after {secs:.0} s",
            t.caller.claims.sub,
            why.word()
        );
    }

    fn list(&self, req: &Request) -> Result<gw::ListSessionsResponse, RpcError> {
        let caller = self.caller(req)?;
        let _: gw::ListSessionsRequest = decode_body(req)?;
        let admin = caller.is_site_admin();
        let mut sessions: Vec<gw::Session> = lock(&self.live)
            .values()
            .filter(|l| admin || l.info.user_id == caller.claims.sub)
            .map(|l| gw::Session {
                bytes_in: l.bytes_in.load(Ordering::Relaxed),
                bytes_out: l.bytes_out.load(Ordering::Relaxed),
                ..l.info.clone()
            })
            .collect();
        sessions.sort_by(|a, b| (a.started_at, &a.session_id).cmp(&(b.started_at, &b.session_id)));
        Ok(gw::ListSessionsResponse { sessions })
    }

    fn close_session(&self, req: &Request) -> Result<gw::CloseSessionResponse, RpcError> {
        let caller = self.caller(req)?;
        let r: gw::CloseSessionRequest = decode_body(req)?;
        let admin = caller.is_site_admin();
        let live = lock(&self.live).get(&r.session_id).cloned();
        match live {
            Some(l) if admin || l.info.user_id == caller.claims.sub => {
                let _ = l.close.try_send(if admin {
                    "closed_by_admin"
                } else {
                    "closed_by_user"
                });
                Ok(gw::CloseSessionResponse {})
            }
            _ => Err(RpcError::new(Code::NotFound, "no such session")),
        }
    }
}

/// A Connect code from an agent's answer, as a `status` label (a fixed set).
fn code_word(code: &str) -> &'static str {
    Code::parse(code).map_or("unknown", Code::as_str)
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The viewer closed or went away.
    Viewer,
    /// The agent's console ended.
    Agent,
    /// The gateway ended it (the watchdog's word).
    Ended(&'static str),
    /// A side broke the protocol or stalled: the error type.
    Failed(&'static str),
}

impl End {
    fn word(self) -> &'static str {
        match self {
            End::Viewer => "viewer_left",
            End::Agent => "agent_ended",
            End::Ended(w) | End::Failed(w) => w,
        }
    }

    fn error(self) -> Option<&'static str> {
        match self {
            End::Failed(e) => Some(e),
            _ => None,
        }
    }

    fn close_code(self) -> u16 {
        match self {
            End::Ended("closed_by_admin" | "closed_by_user" | "idle_timeout") => close_code::NORMAL,
            End::Ended("access_revoked" | "trust_expired") => close_code::POLICY,
            // 1011: the server side of the console failed (the agent, its link)
            _ => 1011,
        }
    }
}

/// The byte pump of one session and its counters.
struct Relay<'a> {
    bytes_in: Option<prometheus_client::metrics::counter::Counter>,
    messages_in: Option<prometheus_client::metrics::counter::Counter>,
    bytes_out: Option<prometheus_client::metrics::counter::Counter>,
    messages_out: Option<prometheus_client::metrics::counter::Counter>,
    live: &'a Live,
    last_input: &'a Cell<Instant>,
}

fn add(c: &Option<prometheus_client::metrics::counter::Counter>, n: u64) {
    if let (Some(c), true) = (c, n > 0) {
        c.inc_by(n);
    }
}

impl Relay<'_> {
    async fn run(
        &self,
        viewer: &Async<TcpStream>,
        viewer_leftover: Vec<u8>,
        data: Data,
        agent_leftover: Vec<u8>,
        watchdog: impl std::future::Future<Output = &'static str>,
    ) -> End {
        let (mut from_agent, mut to_agent) = futures_lite::io::split(data);
        let mut scan_in = FrameScanner::new(true);
        let mut scan_out = FrameScanner::new(false);
        let stop: Cell<Option<&'static str>> = Cell::new(None);
        // When the stop came: the agent then gets [`STOP_GRACE`] in all to finish its frame.
        let stopped_at: Cell<Option<Instant>> = Cell::new(None);
        let grace_left = || {
            stopped_at
                .get()
                .map(|t| STOP_GRACE.saturating_sub(t.elapsed()))
        };
        // Whether what the viewer received so far ends between two frames (a write cut short
        // leaves it inside one: no close frame can follow then).
        let clean = Cell::new(true);
        let (stopping_tx, stopping) = async_channel::bounded::<()>(1);
        let upstream = async {
            let mut buf = viewer_leftover;
            let mut filled = buf.len();
            buf.resize(filled.max(CHUNK_IN), 0);
            loop {
                if stop.get().is_some() {
                    // Nothing more of the viewer's reaches the BMC once the session is ending.
                    return std::future::pending::<End>().await;
                }
                let chunk = &buf[..filled];
                if !chunk.is_empty() {
                    let (b, m) = (scan_in.payload_bytes, scan_in.messages);
                    if scan_in.feed(chunk).is_err() {
                        return End::Failed("protocol");
                    }
                    let sent = with_timeout(WRITE_TIMEOUT, async {
                        to_agent.write_all(chunk).await?;
                        to_agent.flush().await
                    })
                    .await;
                    match sent {
                        Some(Ok(())) => {}
                        Some(Err(_)) => return End::Agent,
                        None => return End::Failed("agent_too_slow"),
                    }
                    let (db, dm) = (scan_in.payload_bytes - b, scan_in.messages - m);
                    if dm > 0 {
                        self.last_input.set(Instant::now());
                    }
                    add(&self.bytes_in, db);
                    add(&self.messages_in, dm);
                    self.live.bytes_in.fetch_add(db, Ordering::Relaxed);
                }
                filled = match (&*viewer).read(&mut buf).await {
                    Ok(0) | Err(_) => return End::Viewer,
                    Ok(n) => n,
                };
            }
        };
        let downstream = async {
            enum Got {
                Read(std::io::Result<usize>),
                Stopping,
                Late,
            }
            let mut buf = agent_leftover;
            let mut filled = buf.len();
            buf.resize(filled.max(CHUNK_OUT), 0);
            loop {
                let mut rest: &[u8] = &buf[..filled];
                while !rest.is_empty() {
                    // Once asked to stop, forward only up to the end of the current frame,
                    // so that the close frame starts a frame of its own.
                    let before = (scan_out.payload_bytes, scan_out.messages);
                    let n = if stop.get().is_some() {
                        if scan_out.at_boundary() {
                            break;
                        }
                        scan_out.feed_to_boundary(rest)
                    } else {
                        scan_out.feed(rest).map(|()| rest.len())
                    };
                    let Ok(n) = n else {
                        return End::Failed("protocol");
                    };
                    clean.set(false);
                    let limit = grace_left().unwrap_or(WRITE_TIMEOUT);
                    match with_timeout(limit, (&*viewer).write_all(&rest[..n])).await {
                        Some(Ok(())) => {}
                        Some(Err(_)) => return End::Viewer,
                        None if stop.get().is_some() => {
                            return End::Ended(stop.get().unwrap_or("closed"))
                        }
                        None => return End::Failed("viewer_too_slow"),
                    }
                    clean.set(scan_out.at_boundary());
                    let db = scan_out.payload_bytes - before.0;
                    add(&self.bytes_out, db);
                    add(&self.messages_out, scan_out.messages - before.1);
                    self.live.bytes_out.fetch_add(db, Ordering::Relaxed);
                    rest = &rest[n..];
                }
                if let Some(why) = stop.get() {
                    if scan_out.at_boundary() {
                        return End::Ended(why);
                    }
                }
                let got = match grace_left() {
                    Some(left) => match with_timeout(left, from_agent.read(&mut buf)).await {
                        Some(r) => Got::Read(r),
                        None => Got::Late,
                    },
                    None => {
                        futures_lite::future::or(
                            async { Got::Read(from_agent.read(&mut buf).await) },
                            async {
                                let _ = stopping.recv().await;
                                Got::Stopping
                            },
                        )
                        .await
                    }
                };
                filled = match got {
                    Got::Stopping => 0,
                    Got::Late => return End::Ended(stop.get().unwrap_or("closed")),
                    Got::Read(Ok(0)) | Got::Read(Err(_)) => return End::Agent,
                    Got::Read(Ok(n)) => n,
                };
            }
        };
        let watched = async {
            let why = watchdog.await;
            stopped_at.set(Some(Instant::now()));
            stop.set(Some(why));
            let _ = stopping_tx.try_send(());
            std::future::pending::<End>().await
        };
        let end =
            futures_lite::future::or(futures_lite::future::or(upstream, downstream), watched).await;
        // A viewer that sent a close frame left of its own accord, however the pump noticed.
        let end = if scan_in.closed { End::Viewer } else { end };
        // No close frame after one passed already (the agent's), nor inside a frame.
        let told = matches!(end, End::Viewer) || scan_out.closed;
        if !told && clean.get() {
            close(viewer, end.close_code(), end.word()).await;
        }
        end
    }
}

/// Sends a close frame to the viewer (best effort, 1 s).
async fn close(viewer: &Async<TcpStream>, code: u16, reason: &str) {
    let frame = link::close_frame(link::Role::Server, code, reason);
    let _ = with_timeout(Duration::from_secs(1), (&*viewer).write_all(&frame)).await;
}

/// Adds the console routes: the WebSocket upgrade and the session RPCs.
pub fn routes(router: Router, consoles: &Arc<Consoles>) -> Router {
    let rpc = consoles.metrics.rpc.clone();
    let origins = consoles.origins.clone();
    let (c1, c2, c3, c4) = (
        consoles.clone(),
        consoles.clone(),
        consoles.clone(),
        consoles.clone(),
    );
    let router = router.route(Method::Get, "/console/{kind}/{id}", move |req| c1.open(req));
    let router = origins.route(
        router,
        "/conduit.gateway.v1.GatewayService/CreateConsoleTicket",
        unary_raw(
            GATEWAY_SERVICE,
            "CreateConsoleTicket",
            rpc.clone(),
            move |req| {
                let r = c2.ticket(req);
                Box::pin(async move { r })
            },
        ),
    );
    let router = origins.route(
        router,
        "/conduit.gateway.v1.GatewayService/ListSessions",
        unary_raw(GATEWAY_SERVICE, "ListSessions", rpc.clone(), move |req| {
            let r = c3.list(req);
            Box::pin(async move { r })
        }),
    );
    origins.route(
        router,
        "/conduit.gateway.v1.GatewayService/CloseSession",
        unary_raw(GATEWAY_SERVICE, "CloseSession", rpc, move |req| {
            let r = c4.close_session(req);
            Box::pin(async move { r })
        }),
    )
}
