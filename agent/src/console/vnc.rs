//! Graphical consoles: the agent dials the BMC's VNC/KVM port, performs the BMC side of the RFB
//! handshake itself (`conduit_rfb`: 3.3/3.7/3.8, None or VNC Authentication with the configured
//! `vnc_password`), presents its own security to the viewer (None on the WebSocket, which is
//! authorized before the upgrade; VNC Authentication with a one-time password on a raw
//! listener), replays the BMC's ServerInit and then relays bytes both ways without parsing them.
//!
//! Viewers reach it two ways:
//! - `GET /console/vnc/{server_id}` upgraded to a WebSocket (subprotocol `binary`, as noVNC
//!   asks), allowed by the bearer header or a one-time ticket (`?ticket=`);
//! - `POST /console/vnc/{server_id}/listen` (bearer token) opens a one-shot raw TCP listener on
//!   `[console] vnc_tcp_bind` and an ephemeral port for a native VNC viewer, answered as
//!   `{"address": "127.0.0.1:40123", "password": "…", "expires_in_secs": 30}`. Its first
//!   connection within that time must answer VNC Authentication with that one-time password
//!   before the BMC is dialed; the listener then closes, whatever the outcome.
//!
//! Each viewer gets its own connection to the BMC (shared flag set, so viewers coexist). The
//! handshakes are asynchronous (bounded by `vnc_connect_timeout_secs`); the relay that follows
//! runs on two blocking threads, one per direction, which costs no more CPU per byte than a
//! plain copy loop (`cargo bench -p conduit-tests --bench console`).
//!
//! Counted: `agent_vnc_bytes_total{direction}` — RFB bytes relayed after both handshakes,
//! without WebSocket framing and without the handshakes the agent performs (the replayed
//! ServerInit included): `bmc_to_viewer` as written to the viewer, `viewer_to_bmc` as written
//! to the BMC; one atomic add per chunk on handles resolved once per session.
//! `agent_vnc_sessions_total{server_id}` is the number of relays running.
//! `agent_vnc_connection_errors_total{error_type}`: `timeout`, `refused`, `connect_failed`,
//! `auth_failed`, `unsupported_security`, `server_refused`, `protocol_error` (the BMC side);
//! `viewer_protocol_error`, `viewer_timeout` (a stalled handshake, or no answer to pings for
//! three intervals), `viewer_too_slow` (a write to the viewer stuck for [`WRITE_TIMEOUT`]),
//! `unauthenticated`, `bad_handshake` (the viewer side); `connection_lost` (an I/O error
//! mid-session).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use conduit_http::router::Router;
use conduit_http::{Method, Response, Upgrade};
use conduit_metrics::labels::{Direction, ErrorType, ServerId};
use conduit_runtime::with_timeout;
use conduit_ws::{self as ws, Opcode};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use prometheus_client::metrics::counter::Counter;

use super::slots::{ConsoleSlots, Slot};
use super::{close, close_payload, send, ConsoleAuth, MAX_FRAME, PING_EVERY};
use crate::config::{BmcConfig, ConsoleConfig};
use crate::fleet::Fleet;
use crate::metrics::AgentMetrics;
use conduit_rfb::{
    BmcHandshake, RfbError, ServerInit, ViewerAuthHandshake, ViewerAuthOutcome, ViewerHandshake,
    ViewerOutcome,
};

/// Most raw TCP listeners waiting for a viewer at once.
const MAX_TCP_LISTENERS: usize = 16;
/// Relay buffer: one read from the BMC becomes one WebSocket frame.
const CHUNK: usize = 256 * 1024;
/// Longest a write to a viewer may take (a viewer that stopped reading, not a slow link: at
/// one full chunk per write this allows about 9 KiB/s).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A viewer that has sent nothing, pongs included, for this many ping intervals is gone.
const PINGS_UNANSWERED: u32 = 3;

/// A failure with its `error_type` and what to tell the operator.
#[derive(Debug, Clone)]
pub struct VncError {
    /// The metric label value.
    pub kind: &'static str,
    /// Context: which BMC, what happened.
    pub detail: String,
}

impl std::fmt::Display for VncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The BMC side, handshake done: the stream, what it said, and bytes it sent past ServerInit.
#[derive(Debug)]
pub struct BmcSide {
    /// The connection to the BMC's VNC server.
    pub stream: Async<TcpStream>,
    /// Its ServerInit, to replay.
    pub init: ServerInit,
    /// Session bytes that arrived with the ServerInit.
    pub leftover: Vec<u8>,
}

/// Dials `addr` and performs the client side of the RFB handshake, all within `limit`.
pub async fn connect_bmc(
    addr: SocketAddr,
    password: Option<&[u8]>,
    limit: Duration,
) -> Result<BmcSide, VncError> {
    let run = async {
        let stream = Async::<TcpStream>::connect(addr)
            .await
            .map_err(|e| VncError {
                kind: if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    "refused"
                } else {
                    "connect_failed"
                },
                detail: format!("VNC {addr}: connect: {e}"),
            })?;
        let mut hs = BmcHandshake::new(password);
        let (mut input, mut out) = (Vec::new(), Vec::new());
        let mut chunk = [0u8; 4096];
        loop {
            let step = hs
                .step(&mut input, &mut out)
                .map_err(|e: RfbError| VncError {
                    kind: e.kind(),
                    detail: format!("VNC {addr}: {e}"),
                })?;
            if !out.is_empty() {
                (&stream).write_all(&out).await.map_err(|e| VncError {
                    kind: "connect_failed",
                    detail: format!("VNC {addr}: handshake write: {e}"),
                })?;
                out.clear();
            }
            if let Some(init) = step {
                return Ok(BmcSide {
                    stream,
                    init,
                    leftover: input,
                });
            }
            let n = (&stream).read(&mut chunk).await.map_err(|e| VncError {
                kind: "connect_failed",
                detail: format!("VNC {addr}: handshake read: {e}"),
            })?;
            if n == 0 {
                return Err(VncError {
                    kind: "protocol_error",
                    detail: format!(
                        "VNC {addr}: the server closed the connection during the handshake"
                    ),
                });
            }
            input.extend_from_slice(&chunk[..n]);
        }
    };
    with_timeout(limit, run).await.unwrap_or_else(|| {
        Err(VncError {
            kind: "timeout",
            detail: format!("VNC {addr}: no complete handshake within {limit:?}"),
        })
    })
}

/// How the viewer is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    WebSocket,
    Raw,
}

/// What the viewer sent besides console bytes.
enum Control {
    Pong(Vec<u8>),
    Close(Vec<u8>),
    /// The viewer broke the protocol: close with 1002 and end the session with this error.
    Fail(&'static str),
}

/// The viewer's read half: console bytes out of the transport's framing.
struct Inbound {
    transport: Transport,
    /// Raw bytes read but not yet decoded (WebSocket).
    pending: Vec<u8>,
    /// RFC 6455 fragmentation state of the viewer's messages.
    fragments: ws::Fragments,
}

impl Inbound {
    /// Reads once and appends the console bytes to `out`. `Ok(false)`: the viewer is gone.
    /// Control frames that need an answer go to `replies`.
    async fn read_into(
        &mut self,
        stream: &Async<TcpStream>,
        out: &mut Vec<u8>,
        replies: &mut Vec<Control>,
    ) -> Result<bool, &'static str> {
        let mut chunk = [0u8; 16 * 1024];
        let n = (&*stream).read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return Ok(false);
        }
        self.take(&chunk[..n], out, replies)
    }

    /// Takes bytes read from the viewer: console bytes go to `out`, frames needing an answer
    /// to `replies`. `Ok(false)`: the viewer closed.
    fn take(
        &mut self,
        read: &[u8],
        out: &mut Vec<u8>,
        replies: &mut Vec<Control>,
    ) -> Result<bool, &'static str> {
        match self.transport {
            Transport::Raw => {
                out.extend_from_slice(read);
                Ok(true)
            }
            Transport::WebSocket => {
                self.pending.extend_from_slice(read);
                self.decode(out, replies)
            }
        }
    }

    /// Decodes the whole frames in `pending`, unmasking in place: console bytes are copied
    /// once, into `out` (reused), and `pending` shifts once per read — no allocation per frame.
    fn decode(
        &mut self,
        out: &mut Vec<u8>,
        replies: &mut Vec<Control>,
    ) -> Result<bool, &'static str> {
        let mut at = 0;
        let mut open = true;
        while open {
            let frame = match ws::decode_client_frame_in_place(&mut self.pending[at..], MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return Err("viewer_protocol_error"),
            };
            let payload = &self.pending[at + frame.payload.start..at + frame.payload.end];
            match frame.opcode {
                Opcode::Binary | Opcode::Continuation => {
                    // Binary fragments stream on as they come; out of order is an error.
                    self.fragments
                        .data(frame.opcode, frame.fin)
                        .map_err(|_| "viewer_protocol_error")?;
                    out.extend_from_slice(payload)
                }
                // RFB is binary; a text frame is a confused client.
                Opcode::Text => return Err("viewer_protocol_error"),
                Opcode::Ping => replies.push(Control::Pong(payload.to_vec())),
                Opcode::Pong => {}
                Opcode::Close => {
                    ws::check_close_payload(payload).map_err(|_| "viewer_protocol_error")?;
                    replies.push(Control::Close(payload.to_vec()));
                    open = false;
                }
            }
            at += frame.used;
        }
        self.pending.drain(..at);
        Ok(open)
    }
}

/// The viewer's write half.
#[derive(Clone, Copy)]
struct Outbound<'a> {
    stream: &'a Async<TcpStream>,
    transport: Transport,
}

impl Outbound<'_> {
    async fn write(&self, data: &[u8]) -> bool {
        let write = async {
            match self.transport {
                Transport::Raw => (&*self.stream).write_all(data).await.is_ok(),
                Transport::WebSocket => send(self.stream, Opcode::Binary, data).await,
            }
        };
        with_timeout(WRITE_TIMEOUT, write).await.unwrap_or(false)
    }

    async fn control(&self, c: Control) {
        if self.transport == Transport::WebSocket {
            let _ = with_timeout(WRITE_TIMEOUT, self.control_frame(c)).await;
        }
    }

    async fn control_frame(&self, c: Control) {
        match c {
            Control::Pong(p) => {
                send(self.stream, Opcode::Pong, &p).await;
            }
            Control::Close(p) => {
                send(self.stream, Opcode::Close, &p).await;
            }
            Control::Fail(kind) => close(self.stream, 1002, kind).await,
        }
    }

    async fn close(&self, code: u16, reason: &str) {
        if self.transport == Transport::WebSocket {
            let _ = with_timeout(WRITE_TIMEOUT, close(self.stream, code, reason)).await;
        }
    }
}

/// One running relay in `agent_vnc_sessions_total{server_id}`: counted up when made, down
/// when dropped — also when a shutdown drops the session mid-flight.
struct Active<'a> {
    metrics: &'a AgentMetrics,
    server: ServerId,
}

impl<'a> Active<'a> {
    fn new(metrics: &'a AgentMetrics, server_id: &str) -> Active<'a> {
        let server = ServerId {
            server_id: server_id.to_owned(),
        };
        metrics.vnc_sessions.with(&server, |g| g.inc());
        Active { metrics, server }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.metrics.vnc_sessions.with(&self.server, |g| g.dec());
    }
}

/// How a viewer proves it may use the console before the BMC is dialed.
#[derive(Debug, Clone, Copy)]
enum Gate {
    /// Already allowed (a WebSocket opened with the token or a ticket): security None.
    Open,
    /// A raw listener's viewer: VNC Authentication with the listener's one-time password;
    /// the BMC is dialed only once it has answered the challenge.
    Password([u8; 8]),
}

/// Runs the handshake steps `step` takes with the viewer until one has an outcome: writes
/// what they ask to send, reads more when they need it.
async fn drive<O>(
    stream: &Async<TcpStream>,
    inbound: &mut Inbound,
    from_viewer: &mut Vec<u8>,
    out: &mut Vec<u8>,
    mut step: impl FnMut(&mut Vec<u8>, &mut Vec<u8>) -> Result<Option<O>, RfbError>,
) -> Result<O, &'static str> {
    let viewer = Outbound {
        stream,
        transport: inbound.transport,
    };
    let mut replies = Vec::new();
    loop {
        let stepped = step(from_viewer, out);
        if !out.is_empty() {
            if !viewer.write(out).await {
                return Err("connection_lost");
            }
            out.clear();
        }
        match stepped {
            Ok(Some(outcome)) => return Ok(outcome),
            Ok(None) => {}
            Err(_) => return Err("viewer_protocol_error"),
        }
        let more = inbound.read_into(stream, from_viewer, &mut replies).await;
        for r in replies.drain(..) {
            viewer.control(r).await;
        }
        match more {
            Ok(true) => {}
            Ok(false) => return Err("viewer_closed"),
            Err(kind) => return Err(kind),
        }
    }
}

/// Runs one console session for a viewer: BMC handshake, viewer handshake, relay (for a
/// password gate: viewer authentication first, then the BMC).
async fn session(
    stream: Async<TcpStream>,
    mut inbound: Inbound,
    bmc: BmcConfig,
    config: ConsoleConfig,
    metrics: Arc<AgentMetrics>,
    gate: Gate,
) {
    let error = |kind: &'static str| {
        metrics
            .vnc_connection_errors
            .inc(&ErrorType { error_type: kind });
    };
    let viewer = Outbound {
        stream: &stream,
        transport: inbound.transport,
    };
    let addr = SocketAddr::new(bmc.addr.ip(), bmc.vnc_port);
    let password = bmc.vnc_password.as_ref().map(|p| p.expose().as_bytes());
    let dial = || async {
        let side = connect_bmc(addr, password, config.vnc_connect_timeout).await;
        if let Err(e) = &side {
            log::warn!("bmc {}: {e}", bmc.id);
            error(e.kind);
        }
        side
    };
    // The viewer learns why the BMC side failed through RFB's own failure message.
    let reason = |e: &VncError| format!("conduit agent: {}: {}", e.kind, e.detail);
    let (mut out, mut from_viewer) = (Vec::new(), Vec::new());
    let bmc_side = match gate {
        Gate::Open => {
            let bmc_side = dial().await;
            let mut hs = ViewerHandshake::start(
                bmc_side
                    .as_ref()
                    .map(|b| b.init.raw.clone())
                    .map_err(reason),
                &mut out,
            );
            let handshake = drive(&stream, &mut inbound, &mut from_viewer, &mut out, |i, o| {
                hs.step(i, o)
            });
            let outcome = with_timeout(config.vnc_connect_timeout, handshake)
                .await
                .unwrap_or(Err("viewer_timeout"));
            match (outcome, bmc_side) {
                (Ok(ViewerOutcome::Ready), Ok(b)) => b,
                (Ok(_), Err(e)) => {
                    viewer.close(1011, e.kind).await;
                    return;
                }
                (Ok(ViewerOutcome::Refused), Ok(_)) | (Err("viewer_closed"), _) => return,
                (Err(kind), _) => {
                    error(kind);
                    viewer.close(1002, kind).await;
                    return;
                }
            }
        }
        Gate::Password(one_time) => {
            let mut challenge = [0u8; 16];
            if getrandom::fill(&mut challenge).is_err() {
                // No challenge rather than a guessable one.
                error("rng_failure");
                return;
            }
            let mut hs = ViewerAuthHandshake::with_password(&one_time, challenge, &mut out);
            // A person may be typing the password: the listener's wait, not the dial bound.
            let auth = drive(&stream, &mut inbound, &mut from_viewer, &mut out, |i, o| {
                hs.step(i, o)
            });
            match with_timeout(config.vnc_tcp_accept, auth).await {
                Some(Ok(ViewerAuthOutcome::Authenticated)) => {}
                Some(Ok(ViewerAuthOutcome::AuthFailed)) => {
                    log::warn!(
                        "bmc {}: a VNC viewer failed the listener's password",
                        bmc.id
                    );
                    error("viewer_auth_failed");
                    return;
                }
                Some(Ok(_)) | Some(Err("viewer_closed")) => return,
                Some(Err(kind)) => return error(kind),
                None => return error("viewer_timeout"),
            }
            let bmc_side = dial().await;
            let ready = hs.bmc_ready(
                bmc_side
                    .as_ref()
                    .map(|b| b.init.raw.clone())
                    .map_err(reason),
                &mut out,
            );
            let finish = async {
                if !out.is_empty() && !viewer.write(&out).await {
                    return Err("connection_lost");
                }
                out.clear();
                match ready {
                    Ok(Some(outcome)) => Ok(outcome),
                    Ok(None) => {
                        drive(&stream, &mut inbound, &mut from_viewer, &mut out, |i, o| {
                            hs.step(i, o)
                        })
                        .await
                    }
                    Err(_) => Err("viewer_protocol_error"),
                }
            };
            let outcome = with_timeout(config.vnc_connect_timeout, finish)
                .await
                .unwrap_or(Err("viewer_timeout"));
            match (outcome, bmc_side) {
                (Ok(ViewerAuthOutcome::Ready), Ok(b)) => b,
                (Ok(_), _) | (Err("viewer_closed"), _) => return,
                (Err(kind), _) => return error(kind),
            }
        }
    };
    let (Some(to_viewer), Some(to_bmc)) = (
        metrics.vnc_bytes.handle(&Direction {
            direction: "bmc_to_viewer",
        }),
        metrics.vnc_bytes.handle(&Direction {
            direction: "viewer_to_bmc",
        }),
    ) else {
        return;
    };
    let active = Active::new(&metrics, &bmc.id);
    log::info!(
        "bmc {}: VNC session ({}x{} {:?}) via {addr}",
        bmc.id,
        bmc_side.init.width,
        bmc_side.init.height,
        bmc_side.init.name
    );
    if let Err(kind) = relay(&stream, inbound, from_viewer, bmc_side, to_viewer, to_bmc).await {
        log::info!("bmc {}: VNC session ended: {kind}", bmc.id);
        error(kind);
    }
    drop(active);
}

/// The relay's two threads share these.
struct Shared {
    transport: Transport,
    to_viewer: Counter,
    to_bmc: Counter,
    /// When the viewer last sent anything, in ms since `epoch` (pongs included).
    heard: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
}

impl Shared {
    fn heard_ago(&self) -> Duration {
        let at = Duration::from_millis(self.heard.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(at)
    }
}

/// Shuts both sockets down when dropped: the relay threads' blocking calls return, so a
/// session dropped by a shutdown (or ended by one side) never leaves a thread behind.
struct Closer([TcpStream; 2]);

impl Drop for Closer {
    fn drop(&mut self) {
        for s in &self.0 {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// How often the BMC-side thread looks up from a quiet BMC (control replies, pings).
const TICK: Duration = Duration::from_secs(1);

/// Relays until either side ends, on two blocking threads: after the handshakes a console is
/// a plain byte pump, and a blocking read/write pair per direction is the cheapest one there
/// is (no readiness polling, no executor wake-ups; measured in the console benchmark). Bytes
/// that came with the handshakes go first.
async fn relay(
    viewer: &Async<TcpStream>,
    inbound: Inbound,
    early: Vec<u8>,
    bmc: BmcSide,
    to_viewer: Counter,
    to_bmc: Counter,
) -> Result<(), &'static str> {
    let io = |_| "connection_lost";
    let (v, b) = (viewer.get_ref(), bmc.stream.get_ref());
    // From here on only the threads touch the sockets (blocking mode is per socket, not per
    // handle).
    v.set_nonblocking(false).map_err(io)?;
    b.set_nonblocking(false).map_err(io)?;
    let closer = Closer([v.try_clone().map_err(io)?, b.try_clone().map_err(io)?]);
    let shared = Arc::new(Shared {
        transport: inbound.transport,
        to_viewer,
        to_bmc,
        heard: Default::default(),
        epoch: std::time::Instant::now(),
    });
    let (done_tx, done_rx) = async_channel::bounded::<Result<(), &'static str>>(2);
    let (ctl_tx, ctl_rx) = std::sync::mpsc::sync_channel::<Control>(8);
    let (v_down, b_down) = (v.try_clone().map_err(io)?, b.try_clone().map_err(io)?);
    let (v_up, b_up) = (v.try_clone().map_err(io)?, b.try_clone().map_err(io)?);
    let (sh, done) = (shared.clone(), done_tx.clone());
    let leftover = bmc.leftover;
    std::thread::Builder::new()
        .name("vnc-down".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = done.send_blocking(downstream(&sh, b_down, v_down, &leftover, &ctl_rx));
        })
        .map_err(io)?;
    std::thread::Builder::new()
        .name("vnc-up".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // A viewer's close or protocol error is answered by the other thread, which then
            // ends the session; anything else ends it from here.
            if let Some(end) = upstream(&shared, v_up, b_up, inbound, early, &ctl_tx) {
                let _ = done_tx.send_blocking(end);
            }
        })
        .map_err(io)?;
    let end = done_rx.recv().await.unwrap_or(Err("connection_lost"));
    drop(closer);
    end
}

/// BMC to viewer: one read becomes one frame, its header written in front of the payload.
fn downstream(
    sh: &Shared,
    mut bmc: TcpStream,
    mut viewer: TcpStream,
    leftover: &[u8],
    controls: &std::sync::mpsc::Receiver<Control>,
) -> Result<(), &'static str> {
    use std::io::{Read, Write};
    let ws = sh.transport == Transport::WebSocket;
    let _ = bmc.set_read_timeout(Some(TICK));
    let _ = viewer.set_write_timeout(Some(WRITE_TIMEOUT));
    let frame = |viewer: &mut TcpStream, op: Opcode, payload: &[u8]| {
        if ws {
            viewer.write_all(&ws::encode_server_frame(op, payload))
        } else {
            Ok(())
        }
    };
    let mut buf = vec![0u8; ws::MAX_SERVER_HEADER + CHUNK];
    let mut pending = leftover.len();
    buf[ws::MAX_SERVER_HEADER..ws::MAX_SERVER_HEADER + pending].copy_from_slice(leftover);
    let mut last_ping = std::time::Instant::now();
    loop {
        if pending > 0 {
            let start = if ws {
                ws::put_server_header(Opcode::Binary, pending, &mut buf[..ws::MAX_SERVER_HEADER])
            } else {
                ws::MAX_SERVER_HEADER
            };
            match viewer.write_all(&buf[start..ws::MAX_SERVER_HEADER + pending]) {
                Ok(()) => {
                    sh.to_viewer.inc_by(pending as u64);
                }
                Err(e) if stalled(&e) => return Err("viewer_too_slow"),
                Err(_) => return Ok(()), // the viewer left
            }
            pending = 0;
        }
        while let Ok(c) = controls.try_recv() {
            match c {
                Control::Pong(p) => {
                    let _ = frame(&mut viewer, Opcode::Pong, &p);
                }
                Control::Close(p) => {
                    let _ = frame(&mut viewer, Opcode::Close, &p);
                    return Ok(());
                }
                Control::Fail(kind) => {
                    let _ = frame(&mut viewer, Opcode::Close, &close_payload(1002, kind));
                    return Err(kind);
                }
            }
        }
        match bmc.read(&mut buf[ws::MAX_SERVER_HEADER..]) {
            Ok(0) => {
                let _ = frame(
                    &mut viewer,
                    Opcode::Close,
                    &close_payload(1000, "bmc_closed"),
                );
                return Ok(());
            }
            Ok(n) => pending = n,
            Err(e) if stalled(&e) => {
                if ws && sh.heard_ago() > PING_EVERY * PINGS_UNANSWERED {
                    let _ = frame(
                        &mut viewer,
                        Opcode::Close,
                        &close_payload(1001, "viewer_timeout"),
                    );
                    return Err("viewer_timeout");
                }
                if ws && last_ping.elapsed() >= PING_EVERY {
                    last_ping = std::time::Instant::now();
                    if frame(&mut viewer, Opcode::Ping, b"").is_err() {
                        return Ok(());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = frame(
                    &mut viewer,
                    Opcode::Close,
                    &close_payload(1011, "connection_lost"),
                );
                return Err("connection_lost");
            }
        }
    }
}

/// Viewer to BMC: frames unmasked in place, their payloads written to the BMC. Returns the
/// session's end, or `None` when the other thread ends it (after answering the viewer).
fn upstream(
    sh: &Shared,
    mut viewer: TcpStream,
    mut bmc: TcpStream,
    mut inbound: Inbound,
    early: Vec<u8>,
    controls: &std::sync::mpsc::SyncSender<Control>,
) -> Option<Result<(), &'static str>> {
    use std::io::{Read, Write};
    let _ = bmc.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut data = early;
    let mut replies = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // Frames that arrived together with the handshake come first.
    let mut open = inbound.take(&[], &mut data, &mut replies);
    loop {
        if !data.is_empty() {
            if bmc.write_all(&data).is_err() {
                return Some(Err("connection_lost"));
            }
            sh.to_bmc.inc_by(data.len() as u64);
            data.clear();
        }
        for r in replies.drain(..) {
            let _ = controls.send(r);
        }
        match open {
            Ok(true) => {}
            Ok(false) => return None, // a close: the other thread echoes it and ends
            Err(kind) => {
                let _ = controls.send(Control::Fail(kind));
                return None;
            }
        }
        let n = match viewer.read(&mut chunk) {
            Ok(0) | Err(_) => return Some(Ok(())), // the viewer left
            Ok(n) => n,
        };
        let now = sh.epoch.elapsed().as_millis() as u64;
        sh.heard.store(now, Ordering::Relaxed);
        open = inbound.take(&chunk[..n], &mut data, &mut replies);
    }
}

fn stalled(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The BMC a console request names, once its token checks out; else the answer (401, counted,
/// or 404).
fn admit(
    req: &conduit_http::Request,
    fleet: &Fleet,
    auth: &ConsoleAuth,
    slots: &Arc<ConsoleSlots>,
) -> Result<(Arc<crate::fleet::Bmc>, Slot), Response> {
    let refused = |error_type| {
        fleet
            .metrics()
            .vnc_connection_errors
            .inc(&ErrorType { error_type });
    };
    let id = req.param("server_id").unwrap_or_default();
    if !auth.allows(req, "vnc", id) {
        refused("unauthenticated");
        return Err(Response::text(401, "missing or invalid token or ticket\n"));
    }
    let bmc = fleet
        .get(id)
        .ok_or_else(|| Response::text(404, "no server with that id\n"))?;
    let slot = slots.take(id).map_err(|full| {
        refused("session_limit");
        full.response()
    })?;
    Ok((bmc, slot))
}

/// Adds `GET /console/vnc/{server_id}` and `POST /console/vnc/{server_id}/listen`.
pub fn routes(
    router: Router,
    fleet: Arc<Fleet>,
    config: ConsoleConfig,
    auth: ConsoleAuth,
    slots: Arc<ConsoleSlots>,
) -> Router {
    let listeners = Arc::new(AtomicUsize::new(0));
    let (f2, c2, t2, s2) = (fleet.clone(), config.clone(), auth.clone(), slots.clone());
    router
        .route(Method::Get, "/console/vnc/{server_id}", move |req| {
            let metrics = fleet.metrics().clone();
            let (bmc, slot) = match admit(req, &fleet, &auth, &slots) {
                Ok(admitted) => admitted,
                Err(refused) => return refused,
            };
            let resp = match conduit_http::upgrade::websocket(req, Some("binary")) {
                Ok(r) => r,
                Err(e) => {
                    metrics.vnc_connection_errors.inc(&ErrorType {
                        error_type: "bad_handshake",
                    });
                    return Response::text(400, format!("{e}\n"));
                }
            };
            let (bmc, config) = (bmc.config.clone(), config.clone());
            resp.with_upgrade(Upgrade::new(move |stream, leftover| {
                let inbound = Inbound {
                    transport: Transport::WebSocket,
                    pending: leftover,
                    fragments: ws::Fragments::default(),
                };
                Box::pin(async move {
                    let _slot = slot;
                    session(stream, inbound, bmc, config, metrics, Gate::Open).await
                })
            }))
            .with_header("Cache-Control", "no-store")
        })
        .route(
            Method::Post,
            "/console/vnc/{server_id}/listen",
            move |req| {
                let metrics = f2.metrics().clone();
                let (bmc, slot) = match admit(req, &f2, &t2, &s2) {
                    Ok(admitted) => admitted,
                    Err(refused) => return refused,
                };
                match listen(
                    bmc.config.clone(),
                    c2.clone(),
                    metrics,
                    listeners.clone(),
                    slot,
                ) {
                    Ok((addr, password)) => Response::json(
                        201,
                        &serde_json::json!({
                            "address": addr.to_string(),
                            "password": password,
                            "expires_in_secs": c2.vnc_tcp_accept.as_secs_f64(),
                        }),
                    )
                    .with_header("Cache-Control", "no-store"),
                    Err(ListenError::Random) => {
                        Response::text(500, "no listener: the OS random source failed\n")
                    }
                    Err(ListenError::Busy) => Response::text(
                        503,
                        format!("{MAX_TCP_LISTENERS} VNC listeners are already waiting\n"),
                    ),
                    Err(ListenError::Io(e)) => Response::text(
                        500,
                        format!("bind a VNC listener on {}: {e}\n", c2.vnc_tcp_bind),
                    ),
                }
            },
        )
}

enum ListenError {
    Busy,
    Random,
    Io(std::io::Error),
}

/// Opens a one-shot listener for a native viewer; its thread runs the session.
fn listen(
    bmc: BmcConfig,
    config: ConsoleConfig,
    metrics: Arc<AgentMetrics>,
    waiting: Arc<AtomicUsize>,
    slot: Slot,
) -> Result<(SocketAddr, String), ListenError> {
    // The listener's one-time VNC password: 8 characters a person can type into a viewer's
    // prompt (VNC Authentication uses 8 bytes): 48 bits from the base64url alphabet (64
    // characters, so no bias), good for one connection.
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|_| ListenError::Random)?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let password: [u8; 8] = raw.map(|b| ALPHABET[usize::from(b & 63)]);
    if waiting.fetch_add(1, Ordering::AcqRel) >= MAX_TCP_LISTENERS {
        waiting.fetch_sub(1, Ordering::AcqRel);
        return Err(ListenError::Busy);
    }
    let bound = TcpListener::bind(SocketAddr::new(config.vnc_tcp_bind, 0))
        .and_then(|l| Ok((l.local_addr()?, Async::new(l)?)));
    let (addr, listener) = match bound {
        Ok(b) => b,
        Err(e) => {
            waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ListenError::Io(e));
        }
    };
    let spawned = std::thread::Builder::new()
        .name(format!("vnc-{}", bmc.id))
        .spawn({
            let waiting = waiting.clone();
            move || {
                // Held while the listener waits and for the session it serves.
                let _slot = slot;
                let accepted =
                    smol::block_on(with_timeout(config.vnc_tcp_accept, listener.accept()));
                drop(listener);
                waiting.fetch_sub(1, Ordering::AcqRel);
                match accepted {
                    Some(Ok((stream, peer))) => {
                        log::info!("bmc {}: native VNC viewer from {peer}", bmc.id);
                        let inbound = Inbound {
                            transport: Transport::Raw,
                            pending: Vec::new(),
                            fragments: ws::Fragments::default(),
                        };
                        smol::block_on(session(
                            stream,
                            inbound,
                            bmc,
                            config,
                            metrics,
                            Gate::Password(password),
                        ));
                    }
                    Some(Err(e)) => log::warn!("bmc {}: VNC listener {addr}: {e}", bmc.id),
                    None => log::info!("bmc {}: VNC listener {addr} expired unused", bmc.id),
                }
            }
        });
    if let Err(e) = spawned {
        waiting.fetch_sub(1, Ordering::AcqRel);
        return Err(ListenError::Io(e));
    }
    Ok((addr, String::from_utf8_lossy(&password).into_owned()))
}
