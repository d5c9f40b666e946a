//! The uplink listener: agents dial in (TLS unless `--uplink-plaintext`), upgrade to a
//! WebSocket with the `conduit.uplink.v1` subprotocol and register; then the link carries
//! heartbeats, inventory updates and operations until it ends.
//!
//! Runs on its own executor thread (`uplinks`), apart from the HTTP server: uplinks are not
//! under the HTTP connection cap but under `--max-agents`, and at most [`MAX_OPENING`]
//! connections are between accept and a finished registration at once (TLS, upgrade, a first
//! message of at most [`up::MAX_REGISTRATION`], the credential check), so a reconnect storm or
//! unauthenticated peers can neither starve heartbeats nor hold more than
//! `MAX_OPENING × MAX_REGISTRATION` of memory. Every step of the
//! opening has a deadline; anything malformed, oversized or out of order ends that link with a
//! counted `gateway_websocket_errors_total{type="uplink"}`, never the gateway.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Async;
use conduit_api::manager as m;
use conduit_api::uplink::{self as up, AgentMessage, GatewayMessage, Refusal};
use conduit_http::head::{head_len, RequestHead};
use conduit_http::Method;
use conduit_runtime::with_timeout;
use conduit_uplink::link::{self, Incoming, LinkError, MessageReader, Role};
use conduit_uplink::tls::TlsAcceptor;
use conduit_ws::{close_code, Opcode};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::agents::{Agents, Answered, Link};
use crate::consoles::Consoles;
use crate::manager_link::{CallError, ManagerLink};
use crate::metrics::{Flow, GatewayMetrics, TypeLabel, WebSocketError};
use crate::trust::Trust;
use conduit_metrics::labels::{DatacenterStatus, ErrorType};

/// TLS, the WebSocket upgrade and the registration message must all arrive within this of
/// the accept (one deadline: an opening connection holds a [`MAX_OPENING`] permit).
const OPENING: Duration = Duration::from_secs(10);
/// Connections opening (not yet registered) at once; one more is refused at accept, not
/// queued, so that idle connections cannot pile up in front of real agents.
pub const MAX_OPENING: usize = 128;
/// Largest upgrade request head.
const MAX_HEAD: usize = 8 * 1024;
const UPLINK: &str = "uplink";

/// Everything a link needs.
#[allow(missing_debug_implementations)]
pub struct Uplinks {
    /// The registry.
    pub agents: Arc<Agents>,
    /// Credentials vouched for.
    pub trust: Arc<Trust>,
    /// For VerifyAgent.
    pub manager: Arc<ManagerLink>,
    /// Metrics.
    pub metrics: Arc<GatewayMetrics>,
    /// `None`: plaintext (explicitly configured).
    pub tls: Option<TlsAcceptor>,
    /// This gateway's datacenter (from its registration at the manager).
    pub datacenter: Arc<std::sync::RwLock<String>>,
    /// Most links at once.
    pub max_links: usize,
    /// Where consoles' data connections go.
    pub consoles: Arc<Consoles>,
    open: AtomicUsize,
    opening: Arc<async_lock::Semaphore>,
}

impl Uplinks {
    /// The listener's shared state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        agents: Arc<Agents>,
        trust: Arc<Trust>,
        manager: Arc<ManagerLink>,
        metrics: Arc<GatewayMetrics>,
        tls: Option<TlsAcceptor>,
        datacenter: Arc<std::sync::RwLock<String>>,
        max_links: usize,
        consoles: Arc<Consoles>,
    ) -> Arc<Self> {
        Arc::new(Uplinks {
            agents,
            trust,
            manager,
            metrics,
            tls,
            datacenter,
            max_links,
            consoles,
            open: AtomicUsize::new(0),
            opening: Arc::new(async_lock::Semaphore::new(MAX_OPENING)),
        })
    }

    fn error(&self, error_type: &'static str) {
        self.metrics.websocket_errors.inc(&WebSocketError {
            r#type: UPLINK,
            error_type,
        });
    }

    fn flow(&self, direction: &'static str, bytes: u64, messages: u64) {
        let f = Flow {
            r#type: UPLINK,
            direction,
        };
        if bytes > 0 {
            self.metrics.websocket_bytes.inc_by(&f, bytes);
        }
        if messages > 0 {
            self.metrics.websocket_messages.inc_by(&f, messages);
        }
    }

    fn registration(&self, datacenter: String, status: &'static str) {
        self.metrics
            .agent_registrations
            .inc(&DatacenterStatus { datacenter, status });
    }

    fn own_datacenter(&self) -> String {
        self.datacenter
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Accepts uplinks on `listener` until the executor stops.
    pub async fn serve(
        self: Arc<Self>,
        listener: Async<TcpListener>,
        ex: Arc<smol::Executor<'static>>,
    ) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("uplink accept: {e}");
                    async_io::Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_links {
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.error("capacity");
                log::warn!("uplink from {peer}: refused, {} links open", self.max_links);
                continue;
            }
            let Some(permit) = self.opening.try_acquire_arc() else {
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.error("opening_limit");
                log::debug!("uplink from {peer}: refused, {MAX_OPENING} connections opening");
                continue;
            };
            let _ = stream.get_ref().set_nodelay(true);
            let me = self.clone();
            ex.spawn(async move {
                me.clone().connection(stream, peer, permit).await;
                me.open.fetch_sub(1, Ordering::AcqRel);
            })
            .detach();
        }
    }

    /// `permit` is released once registered (or when the connection ends first).
    async fn connection(
        self: Arc<Self>,
        tcp: Async<std::net::TcpStream>,
        peer: std::net::SocketAddr,
        permit: async_lock::SemaphoreGuardArc,
    ) {
        let opening = Opening {
            deadline: Instant::now() + OPENING,
            _permit: permit,
        };
        match self.tls.clone() {
            Some(acceptor) => {
                let tls = with_timeout(opening.left(), acceptor.accept(tcp)).await;
                match tls {
                    Some(Ok(stream)) => self.websocket(stream, peer, opening).await,
                    Some(Err(e)) => {
                        self.error("tls");
                        log::debug!("uplink from {peer}: TLS: {e}");
                    }
                    None => self.error("timeout"),
                }
            }
            None => self.websocket(tcp, peer, opening).await,
        }
    }

    async fn websocket<S>(
        self: &Arc<Self>,
        mut stream: S,
        peer: std::net::SocketAddr,
        opening: Opening,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let opened = with_timeout(opening.left(), upgrade(&mut stream, &self.consoles)).await;
        let leftover = match opened {
            Some(Ok(Opened::Link(rest))) => rest,
            Some(Ok(Opened::Stream(id, rest))) => {
                // A console's data connection: its session takes it from here.
                drop(opening);
                if !self.consoles.deliver(&id, Box::new(stream), rest) {
                    log::info!("uplink from {peer}: a console stream that no session awaits");
                }
                return;
            }
            Some(Err(why)) => {
                self.error("handshake");
                log::info!("uplink from {peer}: {why}");
                let body = format!("{why}\n");
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                return;
            }
            None => {
                self.error("timeout");
                return;
            }
        };
        let (read, write) = futures_lite::io::split(stream);
        let mut reader = MessageReader::new(read, Role::Server, up::MAX_REGISTRATION, leftover);
        let conn = self.agents.next_conn();
        let (link, out, kill) = Link::new(conn);
        let writer = {
            let me = self.clone();
            let link = link.clone();
            smol::spawn(async move {
                me.write_loop(write, out).await;
                // A peer that stops reading must not keep its link (and its calls) alive.
                link.close("the agent stopped reading");
            })
        };
        let conns = TypeLabel { r#type: UPLINK };
        self.metrics.websocket_connections.with(&conns, |g| g.inc());
        let ended = self.link(&mut reader, &link, kill, peer, opening).await;
        let (code, reason) = match &ended {
            Ok(why) => (close_code::NORMAL, *why),
            Err(e) => {
                self.error(e.kind_label());
                log::info!("uplink from {peer}: {e}");
                (e.close_code(), e.short())
            }
        };
        self.flow("inbound", reader.bytes_read, 0);
        // Whatever ended the link, its calls in flight end now as outcome-unknown (a link
        // replaced by a newer one is no longer in the registry for `detach` to fail them).
        link.fail_all();
        link.send(link::close_frame(Role::Server, code, reason));
        // the writer drains what is queued, the close last; then the socket is dropped
        let _ = with_timeout(Duration::from_secs(2), writer).await;
        self.metrics.websocket_connections.with(&conns, |g| g.dec());
    }

    async fn write_loop<W: AsyncWrite + Unpin>(
        &self,
        mut w: W,
        out: async_channel::Receiver<Vec<u8>>,
    ) {
        while let Ok(frame) = out.recv().await {
            let is_close = frame.first().is_some_and(|b| b & 0x0f == 0x8);
            let sent = with_timeout(Duration::from_secs(30), link::send(&mut w, &frame)).await;
            match sent {
                Some(Ok(())) => self.flow(
                    "outbound",
                    frame.len() as u64,
                    u64::from(!is_close && frame.first().is_some_and(|b| b & 0x0f == 0x1)),
                ),
                Some(Err(_)) | None => {
                    self.error("write");
                    break;
                }
            }
            if is_close {
                break;
            }
        }
        let _ = w.close().await;
    }

    /// The registration, then the link's life. `Ok` is a normal end, with its reason.
    async fn link<R: AsyncRead + Unpin>(
        &self,
        reader: &mut MessageReader<R>,
        link: &Arc<Link>,
        kill: async_channel::Receiver<&'static str>,
        peer: std::net::SocketAddr,
        opening: Opening,
    ) -> Result<&'static str, End> {
        let first = match with_timeout(opening.left(), reader.next()).await {
            None => return Err(End::Timeout),
            Some(Err(e)) => return Err(End::Link(e)),
            Some(Ok(Incoming::Message(m))) => m,
            Some(Ok(_)) => return Err(End::OutOfOrder("a control frame before registering")),
        };
        self.flow("inbound", 0, 1);
        let agent = match self.register(&first).await {
            Ok(ok) => ok,
            Err((reason, message)) => {
                log::warn!(
                    "uplink from {peer}: registration refused ({}): {message}",
                    reason.as_str()
                );
                self.registration(self.own_datacenter(), reason.as_str());
                send_json(link, &GatewayMessage::Refused { reason, message });
                return Ok("registration refused");
            }
        };
        let (info, reg) = agent;
        drop(opening);
        reader.set_max_message(up::MAX_MESSAGE);
        let agent_id = info.agent_id.clone();
        if let Some(old) = self.agents.attach(&info, reg.servers, link.clone()) {
            old.close("replaced by a newer connection of the same agent");
        }
        self.registration(info.datacenter.clone(), "success");
        log::info!(
            "agent {agent_id} ({}) registered from {peer}",
            reg.agent_version
        );
        let hb = self.agents.policy().heartbeat;
        send_json(
            link,
            &GatewayMessage::Registered {
                agent_id: agent_id.clone(),
                heartbeat_secs: hb.as_secs().max(1),
            },
        );
        let result = self.run(reader, link, &kill, &agent_id).await;
        self.agents.detach(&agent_id, link.conn);
        log::info!("agent {agent_id}: uplink ended");
        result
    }

    async fn run<R: AsyncRead + Unpin>(
        &self,
        reader: &mut MessageReader<R>,
        link: &Arc<Link>,
        kill: &async_channel::Receiver<&'static str>,
        agent_id: &str,
    ) -> Result<&'static str, End> {
        // The sweeper closes a silent link after twice the stale time; this is the backstop.
        let idle = 2 * self.agents.policy().stale_after + Duration::from_secs(5);
        let mut late = 0u64;
        loop {
            enum Event {
                In(Option<Result<Incoming, LinkError>>),
                Kill(&'static str),
            }
            let event = futures_lite::future::or(
                async { Event::In(with_timeout(idle, reader.next()).await) },
                async { Event::Kill(kill.recv().await.unwrap_or("closed")) },
            )
            .await;
            let incoming = match event {
                Event::Kill(why) => return Ok(why),
                Event::In(None) => return Err(End::Timeout),
                Event::In(Some(Err(e))) => return Err(End::Link(e)),
                Event::In(Some(Ok(i))) => i,
            };
            let bytes = std::mem::take(&mut reader.bytes_read);
            self.flow("inbound", bytes, 0);
            match incoming {
                Incoming::Ping(p) => {
                    link.send(link::frame(Role::Server, Opcode::Pong, &p));
                }
                Incoming::Pong => {}
                Incoming::Close(_) => return Ok("agent closed"),
                Incoming::Message(m) => {
                    self.flow("inbound", 0, 1);
                    let msg = AgentMessage::decode(&m).map_err(|_| End::Malformed)?;
                    match msg {
                        AgentMessage::Heartbeat { seq } => {
                            if !self.agents.heartbeat(agent_id, link.conn) {
                                return Ok("replaced");
                            }
                            send_json(link, &GatewayMessage::HeartbeatAck { seq });
                        }
                        AgentMessage::Servers { servers } => {
                            up::check_servers(&servers).map_err(|_| End::Malformed)?;
                            if !self.agents.set_servers(agent_id, link.conn, servers) {
                                return Ok("replaced");
                            }
                        }
                        AgentMessage::Response(reply) => match link.answer(reply) {
                            Answered::Delivered => {}
                            Answered::Late => {
                                // Its caller already got deadline_exceeded; the agent is slow.
                                self.metrics.proxy_errors.inc(&ErrorType {
                                    error_type: "late_reply",
                                });
                                late += 1;
                                if late == 1 {
                                    log::info!("agent {agent_id}: a reply after its call timed out (further ones on this link are counted, not logged)");
                                }
                            }
                            Answered::Unknown => {
                                return Err(End::OutOfOrder("a response to no request"));
                            }
                        },
                        AgentMessage::Register(_) => {
                            return Err(End::OutOfOrder("a second registration"))
                        }
                    }
                }
            }
        }
    }

    /// Checks a registration: version, shape, servers, credential.
    async fn register(
        &self,
        first: &[u8],
    ) -> Result<(m::AgentInfo, up::Register), (Refusal, String)> {
        match up::registration_version(first) {
            Some(v) if v.major == up::VERSION.major => {}
            Some(v) => {
                return Err((
                    Refusal::Version,
                    format!(
                        "uplink protocol {}.{} is not spoken here: this gateway speaks {}.x",
                        v.major,
                        v.minor,
                        up::VERSION.major
                    ),
                ))
            }
            None => {
                return Err((
                    Refusal::Malformed,
                    "the first message must be a registration with a version".into(),
                ))
            }
        }
        let reg = match AgentMessage::decode(first) {
            Ok(AgentMessage::Register(r)) => r,
            _ => return Err((Refusal::Malformed, "malformed registration".into())),
        };
        up::check_servers(&reg.servers).map_err(|e| (Refusal::Malformed, e))?;
        if reg.agent_version.len() > 64 || reg.datacenter.len() > 64 {
            return Err((
                Refusal::Malformed,
                "agentVersion and datacenter: at most 64 bytes".into(),
            ));
        }
        let unknown = || {
            (
                Refusal::Unauthenticated,
                "unknown, revoked or other-datacenter agent credential".to_owned(),
            )
        };
        if let Some(info) = self.trust.vouched(&reg.credential) {
            return Ok((info, reg));
        }
        let manager = self.manager.clone();
        let cred = reg.credential.clone();
        match smol::unblock(move || manager.verify_agent(&cred)).await {
            Ok(Some(info)) if !self.trust.agent_revoked(&info.agent_id) => {
                self.trust.vouch(&reg.credential, info.clone());
                Ok((info, reg))
            }
            Ok(_) => {
                self.trust.unvouch(&reg.credential);
                Err(unknown())
            }
            Err(CallError::Refused { .. }) => Err(unknown()),
            Err(CallError::Unreachable(why) | CallError::Unanswered(why)) => {
                log::warn!("verifying an agent credential: {why}");
                Err((
                    Refusal::Unavailable,
                    "the gateway cannot check credentials now: retry later".into(),
                ))
            }
        }
    }
}

/// A connection between accept and registration: its deadline, and its place among the
/// [`MAX_OPENING`].
struct Opening {
    deadline: Instant,
    _permit: async_lock::SemaphoreGuardArc,
}

impl Opening {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

fn send_json(link: &Link, msg: &GatewayMessage) {
    let json = serde_json::to_vec(msg).unwrap_or_default();
    link.send(link::frame(Role::Server, Opcode::Text, &json));
}

/// How a link ended abnormally.
#[derive(Debug)]
enum End {
    Link(LinkError),
    Timeout,
    Malformed,
    OutOfOrder(&'static str),
}

impl End {
    fn kind_label(&self) -> &'static str {
        match self {
            End::Link(e) => e.kind(),
            End::Timeout => "timeout",
            End::Malformed => "malformed",
            End::OutOfOrder(_) => "out_of_order",
        }
    }

    fn close_code(&self) -> u16 {
        match self {
            End::Link(LinkError::TooLarge) => close_code::TOO_BIG,
            End::Link(LinkError::Protocol(code, _)) => *code,
            End::Malformed => close_code::INVALID_DATA,
            End::OutOfOrder(_) => close_code::POLICY,
            _ => close_code::NORMAL,
        }
    }

    fn short(&self) -> &'static str {
        match self {
            End::Link(LinkError::TooLarge) => "message too large",
            End::Link(_) => "link error",
            End::Timeout => "timed out",
            End::Malformed => "malformed message",
            End::OutOfOrder(why) => why,
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Link(e) => write!(f, "{e}"),
            End::Timeout => f.write_str("timed out"),
            End::Malformed => f.write_str("malformed message"),
            End::OutOfOrder(why) => write!(f, "out of order: {why}"),
        }
    }
}

/// What an opening connection is.
enum Opened {
    /// An agent's control link; the bytes read past the upgrade.
    Link(Vec<u8>),
    /// The data connection of a console session: its stream id, the bytes read past the head.
    Stream(String, Vec<u8>),
}

/// Reads the upgrade request and answers 101: to the uplink's WebSocket, or to the raw stream
/// of a console that a session awaits.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    consoles: &Consoles,
) -> Result<Opened, String> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(n) = head_len(&buf) {
            break n;
        }
        if buf.len() >= MAX_HEAD {
            return Err("request head too large".into());
        }
        let len = buf.len();
        buf.resize(len + 1024, 0);
        let n = s.read(&mut buf[len..]).await.map_err(|e| e.to_string())?;
        buf.truncate(len + n);
        if n == 0 {
            return Err("closed during the upgrade".into());
        }
    };
    let head = RequestHead::parse(&buf[..end]).map_err(|e| e.to_string())?;
    if let Some(id) = head.path.strip_prefix(up::STREAM_PATH) {
        let upgrade = head.header("Upgrade").unwrap_or_default();
        if head.method != Method::Get || !upgrade.eq_ignore_ascii_case(up::STREAM_UPGRADE) {
            return Err(format!("console streams upgrade to {}", up::STREAM_UPGRADE));
        }
        if !up::valid_stream_id(id) || !consoles.awaits(id) {
            return Err("no console awaits this stream".into());
        }
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {}\r\n\r\n",
            up::STREAM_UPGRADE
        );
        s.write_all(answer.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        return Ok(Opened::Stream(id.to_owned(), buf.split_off(end)));
    }
    if head.path != up::PATH {
        return Err(format!("agents dial {}", up::PATH));
    }
    let accepted = conduit_ws::accept(
        head.method == Method::Get,
        |n| head.header(n),
        Some(up::SUBPROTOCOL),
    )
    .map_err(|e| e.to_string())?;
    if accepted.protocol.is_none() {
        return Err(format!("the subprotocol must be {}", up::SUBPROTOCOL));
    }
    s.write_all(link::switching_protocols(&accepted).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    Ok(Opened::Link(buf.split_off(end)))
}
