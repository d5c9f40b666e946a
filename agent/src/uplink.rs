//! The uplink: the agent dials out to its gateway (nothing reaches into the appliance), over
//! TLS checked against the configured CA, upgrades to a WebSocket (`conduit.uplink.v1`),
//! registers with the credential the manager issued, then heartbeats at the interval the
//! gateway asks (with ±10 % jitter), reports inventory changes and answers the operations the
//! gateway routes here with the API's own dispatcher (same bounds, same metrics).
//!
//! A link that fails, or a gateway that refuses us, makes the agent try the next configured
//! gateway; after a whole round without a registration it waits, doubling from 1 s to at most
//! 60 s (5 min after refusals: a revoked credential must not hammer the gateways), each wait
//! drawn between half and all of that so a site's agents do not reconnect in step. A link
//! that lived a minute resets the wait. A gateway silent for three heartbeat intervals (no
//! ack, no request) is taken for dead.
//!
//! Consoles the gateway brokers: on `OpenConsole` the agent dials a data connection of its
//! own to the same gateway (nothing dials in), mints a one-time ticket for its own console
//! endpoint and splices the data connection to that endpoint on its HTTP listener, so a
//! brokered viewer gets exactly what a local one does (the shared SOL hub, the keyboard, the
//! caps, the byte counters).
//!
//! The thread `uplink` runs its own executor; operations run on `bmc-operations` as for the
//! local API, which keeps working with no gateway at all.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use conduit_api::uplink::{self as up, AgentMessage, Capability, GatewayMessage, ServerEntry};
use conduit_metrics::labels::Status;
use conduit_runtime::with_timeout;
use conduit_uplink::link::{self, Incoming, LinkError, MessageReader, Role};
use conduit_uplink::tls::{rustls::pki_types::ServerName, TlsConnector};
use conduit_ws::{close_code, Opcode};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use conduit_http::rpc::{Code, RpcError};

use crate::api::Dispatcher;
use crate::config::{GatewayAddr, UplinkConfig};
use crate::fleet::Fleet;
use crate::metrics::AgentMetrics;

/// Each step of opening a link (resolve, connect, TLS, upgrade, registration) gets this long.
const STEP: Duration = Duration::from_secs(10);
const MAX_WAIT: Duration = Duration::from_secs(60);
const MAX_WAIT_REFUSED: Duration = Duration::from_secs(300);
/// A link that lived this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(60);
/// Frames queued to the writer.
const QUEUE: usize = 256;

/// A connected byte stream, TLS or plain: one type, so the link's code exists once.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}
type BoxStream = Box<dyn Stream>;

/// How one attempt ended.
#[derive(Debug)]
enum Ended {
    /// Never registered: the `status` label and why.
    Failed(&'static str, String),
    /// The gateway refused the registration.
    Refused(&'static str, String),
    /// A registered link ended.
    Dropped(String),
    /// The agent is stopping.
    Stopped,
}

/// The running uplink.
#[derive(Debug)]
pub struct Uplink {
    stop: async_channel::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Uplink {
    /// Closes the link (telling the gateway) and ends the thread, waiting at most `within`.
    pub fn stop(mut self, within: Duration) {
        self.stop.close();
        if let Some(t) = self.thread.take() {
            let until = Instant::now() + within;
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Mints the path (with a one-time ticket) of a console for one brokered viewer.
pub type TicketFn = dyn Fn(&up::OpenConsole) -> Result<String, RpcError> + Send + Sync;

/// What the uplink needs for the consoles a gateway brokers.
#[allow(missing_debug_implementations)]
pub struct ConsoleDial {
    /// The path (with a one-time ticket) of the agent's own endpoint for one brokered viewer.
    pub ticket: Box<TicketFn>,
    /// Where that endpoint listens (loopback when the agent listens on every address).
    pub local: std::net::SocketAddr,
}

struct Ctx {
    consoles: Option<ConsoleDial>,
    cfg: UplinkConfig,
    fleet: Arc<Fleet>,
    dispatch: Dispatcher,
    metrics: Arc<AgentMetrics>,
    tls: Option<TlsConnector>,
    stop: async_channel::Receiver<()>,
    beat: Arc<conduit_runtime::heartbeat::Heartbeat>,
}

/// Starts the `uplink` thread.
pub fn start(
    cfg: UplinkConfig,
    fleet: Arc<Fleet>,
    dispatch: Dispatcher,
    consoles: Option<ConsoleDial>,
    heartbeats: &conduit_runtime::heartbeat::Heartbeats,
) -> anyhow::Result<Uplink> {
    let tls = match &cfg.ca_pem {
        Some(pem) => Some(TlsConnector::from(
            conduit_uplink::tls::client_config(pem)
                .map_err(|e| anyhow::anyhow!("uplink.ca_file: {e}"))?,
        )),
        None => None,
    };
    let (stop_tx, stop) = async_channel::bounded(1);
    let metrics = fleet.metrics().clone();
    metrics.gateway_connection_status.set(0);
    let ctx = Arc::new(Ctx {
        consoles,
        cfg,
        fleet,
        dispatch,
        metrics,
        tls,
        stop,
        beat: heartbeats.register("uplink", Duration::from_secs(5)),
    });
    let thread = std::thread::Builder::new()
        .name("uplink".into())
        .spawn(move || {
            let ex = Arc::new(smol::Executor::new());
            let ticker = {
                let ctx = ctx.clone();
                ex.spawn(async move {
                    loop {
                        ctx.beat.tick();
                        Timer::after(Duration::from_secs(1)).await;
                    }
                })
            };
            futures_lite::future::block_on(ex.run(ctx.clone().run(ex.clone())));
            drop(ticker);
        })?;
    Ok(Uplink {
        stop: stop_tx,
        thread: Some(thread),
    })
}

/// A wait drawn from [half, all] of `cap`·2^`n` capped — "equal jitter".
fn backoff(n: u32, cap: Duration) -> Duration {
    let full = Duration::from_secs(1)
        .saturating_mul(1u32 << n.min(16))
        .min(cap);
    full.mul_f64(0.5 + 0.5 * random_unit())
}

fn random_unit() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

/// The servers this agent offers, as registered: IPMI or Redfish ones, never a BMC address
/// or credential (a `protocol = "auto"` BMC once detected).
pub fn servers(fleet: &Fleet) -> Vec<ServerEntry> {
    fleet
        .bmcs()
        .iter()
        .filter(|b| b.bmc_type() != "auto")
        .map(|b| {
            let ipmi = b.bmc_type() == "ipmi";
            let mut capabilities = vec![
                Capability::Power,
                Capability::Sensors,
                Capability::Boot,
                Capability::EventLog,
            ];
            if ipmi && cfg!(feature = "sol") {
                capabilities.push(Capability::Sol);
            }
            if cfg!(feature = "vnc") {
                capabilities.push(Capability::Vnc);
            }
            ServerEntry {
                server_id: b.config.id.clone(),
                protocol: b.bmc_type().to_owned(),
                capabilities,
            }
        })
        .collect()
}

impl Ctx {
    fn registration(&self, status: &'static str) {
        self.metrics.gateway_registrations.inc(&Status { status });
    }

    async fn run(self: Arc<Self>, ex: Arc<smol::Executor<'static>>) {
        let mut failures = 0u32;
        let mut refused = false;
        let mut next = 0usize;
        let n = self.cfg.gateways.len();
        loop {
            let gw = self.cfg.gateways[next % n].clone();
            let opened = Instant::now();
            let ended = self.attempt(&gw, &ex).await;
            self.metrics.gateway_connection_status.set(0);
            match ended {
                Ended::Stopped => return,
                Ended::Failed(status, why) => {
                    self.registration(status);
                    log::warn!("uplink to {}: {why}", gw.url);
                    failures += 1;
                }
                Ended::Refused(reason, why) => {
                    self.registration(reason);
                    log::error!(
                        "uplink to {}: registration refused ({reason}): {why}",
                        gw.url
                    );
                    refused = true;
                    failures += 1;
                }
                Ended::Dropped(why) => {
                    log::warn!("uplink to {}: link lost: {why}", gw.url);
                    if opened.elapsed() >= HEALTHY {
                        failures = 0;
                        refused = false;
                    }
                    failures += 1;
                }
            }
            next += 1;
            // Fail over at once down the list; wait only after a whole round went wrong.
            if failures as usize % n == 0 || n == 1 {
                let round = (failures as usize).div_ceil(n) as u32;
                let cap = if refused { MAX_WAIT_REFUSED } else { MAX_WAIT };
                let wait = backoff(round.saturating_sub(1), cap);
                log::info!("uplink: next attempt in {:.1} s", wait.as_secs_f64());
                let stopped = futures_lite::future::or(
                    async {
                        Timer::after(wait).await;
                        false
                    },
                    async {
                        let _ = self.stop.recv().await;
                        true
                    },
                )
                .await;
                if stopped {
                    return;
                }
            }
        }
    }

    async fn attempt(
        self: &Arc<Self>,
        gw: &GatewayAddr,
        ex: &Arc<smol::Executor<'static>>,
    ) -> Ended {
        match self.dial(gw).await {
            Ok(stream) => self.talk(stream, gw, ex).await,
            Err((status, why)) => Ended::Failed(status, why),
        }
    }

    /// A connection to `gw`: resolved, connected and (unless plaintext) TLS checked against
    /// the CA, each step under [`STEP`]. `Err` carries the registration `status` and why.
    async fn dial(&self, gw: &GatewayAddr) -> Result<BoxStream, (&'static str, String)> {
        let target = format!("{}:{}", gw.host, gw.port);
        let resolved = with_timeout(
            STEP,
            smol::unblock(move || target.to_socket_addrs().map(|a| a.collect::<Vec<_>>())),
        )
        .await;
        let addrs = match resolved {
            Some(Ok(a)) if !a.is_empty() => a,
            Some(Ok(_)) => return Err(("connect_failed", format!("{} has no address", gw.host))),
            Some(Err(e)) => return Err(("connect_failed", format!("resolve {}: {e}", gw.host))),
            None => return Err(("timeout", format!("resolving {} timed out", gw.host))),
        };
        let tcp = match with_timeout(STEP, Async::<TcpStream>::connect(addrs[0])).await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(("connect_failed", format!("connect {}: {e}", addrs[0]))),
            None => return Err(("timeout", format!("connect {} timed out", addrs[0]))),
        };
        let _ = tcp.get_ref().set_nodelay(true);
        match (&self.tls, gw.tls) {
            (Some(connector), true) => {
                let Ok(name) = ServerName::try_from(gw.host.clone()) else {
                    return Err(("tls_error", format!("{} is not a TLS server name", gw.host)));
                };
                match with_timeout(STEP, connector.connect(name, tcp)).await {
                    Some(Ok(s)) => Ok(Box::new(s)),
                    Some(Err(e)) => Err(("tls_error", format!("TLS: {e} (is the gateway's certificate issued by uplink.ca_file's CA, for {}?)", gw.host))),
                    None => Err(("timeout", "TLS handshake timed out".into())),
                }
            }
            (None, true) => Err(("tls_error", "no CA configured".into())),
            (_, false) => Ok(Box::new(tcp)),
        }
    }

    async fn talk(
        self: &Arc<Self>,
        mut stream: BoxStream,
        gw: &GatewayAddr,
        ex: &Arc<smol::Executor<'static>>,
    ) -> Ended {
        let started = Instant::now();
        let host = if gw.port == 443 {
            gw.host.clone()
        } else {
            format!("{}:{}", gw.host, gw.port)
        };
        let ua = concat!(
            "User-Agent: conduit-agent/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        );
        let leftover = match with_timeout(
            STEP,
            link::client_handshake(&mut stream, &host, up::PATH, up::SUBPROTOCOL, ua),
        )
        .await
        {
            Some(Ok(rest)) => rest,
            Some(Err(e)) => return Ended::Failed("handshake_failed", e.to_string()),
            None => return Ended::Failed("timeout", "WebSocket upgrade timed out".into()),
        };
        let (read, mut write) = futures_lite::io::split(stream);
        let mut reader = MessageReader::new(read, Role::Client, up::MAX_MESSAGE, leftover);
        let mut inventory = servers(&self.fleet);
        let register = AgentMessage::Register(up::Register {
            version: up::VERSION,
            credential: self.cfg.credential.expose().to_owned(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            datacenter: self.cfg.datacenter.clone(),
            servers: inventory.clone(),
        });
        if let Err(e) = link::send(&mut write, &text(&register)).await {
            return Ended::Failed("handshake_failed", format!("sending the registration: {e}"));
        }
        let answer = with_timeout(STEP, async {
            loop {
                match reader.next().await? {
                    Incoming::Message(m) => return Ok(Some(m)),
                    Incoming::Close(_) => return Ok(None),
                    _ => continue,
                }
            }
        })
        .await;
        let first: Result<Option<Vec<u8>>, LinkError> = match answer {
            Some(r) => r,
            None => return Ended::Failed("timeout", "no answer to the registration".into()),
        };
        let (agent_id, heartbeat) =
            match first.map(|m| m.and_then(|m| GatewayMessage::decode(&m).ok())) {
                Ok(Some(GatewayMessage::Registered {
                    agent_id,
                    heartbeat_secs,
                })) => (agent_id, Duration::from_secs(heartbeat_secs.clamp(1, 3600))),
                Ok(Some(GatewayMessage::Refused { reason, message })) => {
                    return Ended::Refused(reason.as_str(), message)
                }
                Ok(_) => {
                    return Ended::Failed(
                        "handshake_failed",
                        "the gateway did not answer the registration".into(),
                    )
                }
                Err(e) => return Ended::Failed("handshake_failed", e.to_string()),
            };
        self.registration("success");
        self.metrics
            .gateway_registration_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.gateway_connection_status.set(1);
        log::info!(
            "uplink to {}: registered as {agent_id}, heartbeat every {heartbeat:?}",
            gw.url
        );

        let (out, out_rx) = async_channel::bounded::<Vec<u8>>(QUEUE);
        let writer = ex.spawn(async move {
            while let Ok(frame) = out_rx.recv().await {
                let close = frame.first().is_some_and(|b| b & 0x0f == 0x8);
                match with_timeout(Duration::from_secs(30), link::send(&mut write, &frame)).await {
                    Some(Ok(())) if !close => {}
                    _ => break,
                }
            }
            let _ = write.close().await;
        });
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let beats = {
            let (ctx, out, acked) = (self.clone(), out.clone(), acked.clone());
            ex.spawn(async move {
                let mut seq = 0u64;
                loop {
                    Timer::after(heartbeat.mul_f64(0.9 + 0.2 * random_unit())).await;
                    if seq > 0 && acked.load(std::sync::atomic::Ordering::Relaxed) < seq {
                        ctx.metrics
                            .heartbeats_sent
                            .inc(&Status { status: "failure" });
                    }
                    seq += 1;
                    if out
                        .send(text(&AgentMessage::Heartbeat { seq }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        let watcher = {
            let (ctx, out) = (self.clone(), out.clone());
            ex.spawn(async move {
                loop {
                    Timer::after(Duration::from_secs(2)).await;
                    let now = servers(&ctx.fleet);
                    if now != inventory {
                        log::info!("uplink: inventory changed: {} servers", now.len());
                        inventory = now.clone();
                        if out
                            .send(text(&AgentMessage::Servers { servers: now }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            })
        };
        let ended = self
            .serve(&mut reader, &out, &acked, heartbeat, gw, ex)
            .await;
        drop(beats);
        drop(watcher);
        let (code, reason) = match &ended {
            Ended::Stopped => (close_code::NORMAL, "agent stopping"),
            _ => (close_code::NORMAL, "link ended"),
        };
        let _ = out.try_send(link::close_frame(Role::Client, code, reason));
        drop(out);
        let _ = with_timeout(Duration::from_secs(2), writer).await;
        ended
    }

    async fn serve<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        reader: &mut MessageReader<R>,
        out: &async_channel::Sender<Vec<u8>>,
        acked: &std::sync::atomic::AtomicU64,
        heartbeat: Duration,
        gw: &GatewayAddr,
        ex: &Arc<smol::Executor<'static>>,
    ) -> Ended {
        let silent = 3 * heartbeat + Duration::from_secs(2);
        loop {
            enum Event {
                In(Option<Result<Incoming, LinkError>>),
                Stop,
            }
            let event = futures_lite::future::or(
                async { Event::In(with_timeout(silent, reader.next()).await) },
                async {
                    let _ = self.stop.recv().await;
                    Event::Stop
                },
            )
            .await;
            let incoming = match event {
                Event::Stop => return Ended::Stopped,
                Event::In(None) => {
                    return Ended::Dropped(format!("the gateway was silent for {silent:?}"))
                }
                Event::In(Some(Err(e))) => return Ended::Dropped(e.to_string()),
                Event::In(Some(Ok(i))) => i,
            };
            let message = match incoming {
                Incoming::Ping(p) => {
                    let _ = out.try_send(link::frame(Role::Client, Opcode::Pong, &p));
                    continue;
                }
                Incoming::Pong => continue,
                Incoming::Close(code) => {
                    return Ended::Dropped(format!("the gateway closed the link ({code:?})"))
                }
                Incoming::Message(m) => m,
            };
            match GatewayMessage::decode(&message) {
                Ok(GatewayMessage::HeartbeatAck { seq }) => {
                    acked.fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
                    self.metrics
                        .heartbeats_sent
                        .inc(&Status { status: "success" });
                }
                Ok(GatewayMessage::Request(call)) if call.method == up::Method::OpenConsole => {
                    ex.spawn(self.clone().console(gw.clone(), call, out.clone()))
                        .detach();
                }
                Ok(GatewayMessage::Request(call)) => {
                    let answer = self.dispatch.call(call.method, call.body);
                    let out = out.clone();
                    ex.spawn(async move { reply(&out, call.id, answer.await).await })
                        .detach();
                }
                Ok(other) => {
                    return Ended::Dropped(format!("the gateway sent {other:?} out of order"))
                }
                Err(e) => {
                    return Ended::Dropped(format!("malformed message from the gateway: {e}"))
                }
            }
        }
    }
}

impl Ctx {
    /// One brokered console: the data connection and the local endpoint, the answer, then
    /// the splice until either end leaves.
    async fn console(
        self: Arc<Self>,
        gw: GatewayAddr,
        call: up::Call,
        out: async_channel::Sender<Vec<u8>>,
    ) {
        match self.open_console(&gw, &call.body).await {
            Ok((path, remote, local)) => {
                let opened = serde_json::value::to_raw_value(&up::ConsoleOpened { path })
                    .map_err(|e| RpcError::new(Code::Internal, e.to_string()));
                reply(&out, call.id, opened).await;
                // A thread of its own: a busy console never delays the uplink's messages.
                let spawned = std::thread::Builder::new()
                    .name("console-splice".into())
                    .stack_size(SPLICE_STACK)
                    .spawn(move || {
                        conduit_runtime::yield_to_operations();
                        futures_lite::future::block_on(splice(remote, local))
                    });
                if let Err(e) = spawned {
                    log::error!("uplink: no thread for a console: {e}");
                }
            }
            Err(e) => {
                log::info!("uplink: console for the gateway: {}", e.message);
                reply(&out, call.id, Err(e)).await;
            }
        }
    }

    async fn open_console(
        &self,
        gw: &GatewayAddr,
        body: &serde_json::value::RawValue,
    ) -> Result<(String, BoxStream, Async<TcpStream>), RpcError> {
        let Some(dial) = &self.consoles else {
            return Err(RpcError::new(
                Code::Unimplemented,
                "this agent build serves no consoles",
            ));
        };
        let req: up::OpenConsole = serde_json::from_str(body.get())
            .map_err(|e| RpcError::new(Code::InvalidArgument, format!("OpenConsole: {e}")))?;
        if !up::valid_stream_id(&req.stream) {
            return Err(RpcError::new(
                Code::InvalidArgument,
                "OpenConsole: stream must be 43 base64url characters",
            ));
        }
        let unavailable = |why: String| {
            RpcError::new(Code::Unavailable, format!("console data connection: {why}"))
        };
        let mut remote = self.dial(gw).await.map_err(|(_, why)| unavailable(why))?;
        let upgrade = format!(
            "GET {}{} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: {}\r\n\r\n",
            up::STREAM_PATH,
            req.stream,
            gw.host,
            up::STREAM_UPGRADE
        );
        let answered = with_timeout(STEP, async {
            remote.write_all(upgrade.as_bytes()).await?;
            remote.flush().await?;
            stream_answer(&mut remote).await
        })
        .await;
        match answered {
            Some(Ok(true)) => {}
            Some(Ok(false)) => return Err(unavailable("the gateway refused the stream".into())),
            Some(Err(e)) => return Err(unavailable(e.to_string())),
            None => return Err(unavailable("the gateway did not answer".into())),
        }
        let local = match with_timeout(STEP, Async::<TcpStream>::connect(dial.local)).await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(unavailable(format!("the local console endpoint: {e}"))),
            None => return Err(unavailable("the local console endpoint timed out".into())),
        };
        let _ = local.get_ref().set_nodelay(true);
        // Minted last: a failed dial leaves no ticket taking room from local users.
        let path = (dial.ticket)(&req)?;
        Ok((path, remote, local))
    }
}

/// Reads the gateway's answer to a data connection's upgrade, one byte at a time (nothing
/// past its head may be consumed); true for `101`.
async fn stream_answer(s: &mut BoxStream) -> std::io::Result<bool> {
    use futures_lite::AsyncReadExt;
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 1024 {
            return Ok(false);
        }
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Ok(false);
        }
        head.push(b[0]);
    }
    Ok(head.starts_with(b"HTTP/1.1 101 "))
}

/// A splice thread's stack (its buffers are on the heap).
const SPLICE_STACK: usize = 256 * 1024;

/// Copies both ways until either side ends, then drops both: large reads toward the viewer
/// (console output, VNC updates), small ones from it.
async fn splice(remote: BoxStream, local: Async<TcpStream>) {
    let (remote_r, remote_w) = futures_lite::io::split(remote);
    futures_lite::future::or(
        pump(remote_r, &local, 16 * 1024),
        pump(&local, remote_w, 256 * 1024),
    )
    .await;
}

async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, size: usize) {
    use futures_lite::AsyncReadExt;
    let mut buf = vec![0u8; size];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Sends the answer to call `id` (a link gone meanwhile: the gateway already told its caller).
async fn reply(
    out: &async_channel::Sender<Vec<u8>>,
    id: u64,
    answer: Result<Box<serde_json::value::RawValue>, RpcError>,
) {
    let reply = match answer {
        Ok(v) => up::Reply {
            id,
            result: Some(v),
            error: None,
        },
        Err(e) => up::Reply {
            id,
            result: None,
            error: Some(up::ReplyError {
                code: e.code.as_str().into(),
                message: e.message,
            }),
        },
    };
    let _ = out.send(text(&AgentMessage::Response(reply))).await;
}

fn text(m: &AgentMessage) -> Vec<u8> {
    let json = serde_json::to_vec(m).unwrap_or_default();
    link::frame(Role::Client, Opcode::Text, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_their_cap_with_jitter() {
        for n in 0..20 {
            let w = backoff(n, MAX_WAIT);
            let full = Duration::from_secs(1 << n.min(6)).min(MAX_WAIT);
            assert!(w >= full / 2 && w <= full, "{n}: {w:?}");
        }
        assert!(backoff(30, MAX_WAIT_REFUSED) <= MAX_WAIT_REFUSED);
    }
}
