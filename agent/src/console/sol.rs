//! Serial consoles over WebSocket: `GET /console/sol/{server_id}` upgrades to a WebSocket
//! (subprotocol `binary` when offered) on the server's console hub ([`hub`]): one SOL
//! session per server, shared by all of its viewers.
//!
//! # Viewers and the keyboard
//!
//! Every viewer sees all console output. One viewer holds the keyboard: the first to arrive,
//! then whoever takes it; when the holder leaves, the longest-connected viewer gets it. Input
//! from the others is dropped, and they are told so once with a status line.
//!
//! # Protocol
//!
//! - BINARY frames, both ways: console bytes (what xterm.js reads and writes).
//! - TEXT frames from the viewer: one JSON control message each,
//!   - `{"type":"takeover"}`: take the keyboard;
//!   - `{"type":"break"}`: send a serial BREAK to the host (keyboard holder only).
//!
//!   Anything else gets a status line saying it was ignored. The agent sends no TEXT frames.
//! - Query parameters on connect (besides `token`): `mode=takeover` or `takeover=1` takes
//!   the keyboard on arrival; `force=1` takes SOL over when another session (another tool)
//!   holds it: the agent deactivates that session's payload, then activates its own. Without
//!   it, such a console is closed with reason `sol_in_use`. (`true` and `yes` work for `1`.)
//!   A forced activation tries up to three deactivate-then-activate rounds, in case the
//!   holder reconnects in between. Force applies to the hub's next activation only (its first, or the next reconnect while
//!   the link is down); joining a console that is up changes nothing, and a console forced
//!   out later by another tool does not force its way back.
//! - Status lines are agent-generated text inside the console stream, on lines of their own:
//!   `\r\n[conduit: …]\r\n` — the keyboard passing, the SOL link lost and reconnecting
//!   (with the delay), reconnected (output the host sent meanwhile was dropped by the BMC).
//! - Close frames: 1011 with the error type as the reason when SOL cannot be opened (e.g.
//!   `sol_in_use`, `timeout`, `auth_failed`), 1008 `viewer_too_slow`, 1008
//!   `viewer_timeout`, 1002 for a malformed frame.
//! - Pings go to a viewer that has been sent nothing, or has sent nothing, for 30 s (at most
//!   one every 30 s). A viewer heard nothing from, not even a pong, for 3 × 30 s has
//!   vanished: it is closed with `viewer_timeout`.
//! - Every write to a viewer is bounded: a viewer that takes more than 10 s
//!   ([`WRITE_TIMEOUT`]) to take one frame (console output, a status line, a pong, a ping) is
//!   closed with `viewer_too_slow`, as is one whose queue of console output fills up
//!   ([`hub::VIEWER_QUEUE`]); close frames get 1 s.
//!
//! # Links and the session log
//!
//! A hub connects when its first viewer arrives; if that fails, its viewers are closed.
//! A quiet session is checked every 3 s (Get Payload Instance Info, which also keeps it
//! alive on the BMC and tells when another session took SOL: `sol_deactivated`, as is a SOL
//! packet saying the BMC is deactivating SOL). When a live session fails, the viewers stay
//! and the hub reconnects with backoff (0.5 s, doubling, capped at `[console]
//! sol_reconnect_max_secs`) for as long as viewers remain; keystrokes meanwhile are dropped.
//! One second after the last viewer left, SOL is deactivated; a viewer arriving while that
//! is under way (a reloaded page) gets a new session as soon as it is done, not `sol_in_use`.
//! With `[console] sol_log_dir`, the console output and the link status lines go to
//! `<dir>/<server_id>.log` ([`session_log`]); keyboard notes to single viewers do not.
//!
//! # Metrics
//!
//! - `agent_sol_bytes_total{direction}`: console payload bytes, without WebSocket framing,
//!   the SOL/RMCP+ envelope or status lines. `bmc_to_viewer` is counted once per chunk
//!   received from the BMC on a live session, however many viewers it is fanned out to (also
//!   none, during the linger); `viewer_to_bmc` once accepted by the BMC. One atomic add on a
//!   counter handle resolved when the hub starts: no lock, no allocation.
//! - `agent_sol_sessions_total{server_id}`: live SOL sessions to BMCs (1 per server with
//!   viewers and a working link), not viewers.
//! - `agent_sol_reconnections_total{server_id,status}`: every reconnect attempt, `success`
//!   or `failure` (failed attempts are counted here only, not as errors).
//! - `agent_sol_errors_total{error_type}`: `unauthenticated`, `bad_handshake`,
//!   `protocol_error` (per viewer); once per event, `sol_in_use` and the IPMI error kinds
//!   (`timeout`, `unreachable`, `auth_failed`, …) for a failed first activation or a lost
//!   link, `sol_deactivated` (SOL taken by another session, or deactivated by the BMC),
//!   `sol_flow_control` (the BMC accepted no keystroke for 30 s: its buffer full, the
//!   host's serial port flow-controlled; the link is then reconnected), `viewer_too_slow`
//!   and `viewer_timeout` (per viewer), `log_write` (per failed write), `internal` (the
//!   console thread could not start).

pub mod held;
pub mod hub;
pub mod session_log;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::TrySendError;
use async_io::{Async, Timer};
use conduit_http::router::Router;
use conduit_http::{Method, Response, Upgrade};
use conduit_metrics::labels::ErrorType;
use conduit_runtime::with_timeout;
use conduit_ws::{self as ws, close_code, Opcode};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use super::slots::ConsoleSlots;
use super::{close, send, ConsoleAuth, MAX_FRAME, PING_EVERY};
use crate::config::ConsoleConfig;
use crate::fleet::Fleet;
use crate::metrics::AgentMetrics;
use conduit_runtime::job_thread::JobThread;
use held::Held;
use hub::{Command, Ending, Hubs, Viewer, TOO_SLOW};

/// Commands decoded from a viewer and not yet taken by its hub; reading from the viewer
/// pauses at this many.
const PENDING_COMMANDS: usize = 16;
/// Retry interval for commands while the hub's queue is full.
const COMMAND_RETRY: Duration = Duration::from_millis(10);
/// Bound on writing the close frame to a viewer being ended.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A viewer that takes longer than this to take one frame (console output, a pong, a ping, a
/// status line) is too slow: it is closed with `viewer_too_slow`, as is one that lets its
/// output queue fill up ([`hub::VIEWER_QUEUE`]).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A viewer heard nothing from (not even a pong) for this many ping intervals has vanished.
const PINGS_UNANSWERED: u32 = 3;

/// How a viewer that answered no ping for [`PINGS_UNANSWERED`] intervals is ended.
const UNRESPONSIVE: Ending = Ending {
    code: 1008,
    reason: "viewer_timeout",
};
/// How a viewer that did not take a frame within [`WRITE_TIMEOUT`] is ended.
const TOO_SLOW_ENDING: Ending = Ending {
    code: 1008,
    reason: TOO_SLOW,
};

/// How a viewer ends when its hub went away without saying why (it should not happen).
const INTERNAL: Ending = Ending {
    code: 1011,
    reason: "internal",
};

/// Adds `GET /console/sol/{server_id}`.
pub fn routes(
    router: Router,
    fleet: Arc<Fleet>,
    config: ConsoleConfig,
    auth: ConsoleAuth,
    slots: Arc<ConsoleSlots>,
    thread: JobThread,
    held: Held,
) -> (Router, Arc<Hubs>) {
    let hubs = Arc::new(Hubs::new(fleet.clone(), config, thread, held));
    let registry = hubs.clone();
    let router = router.route(Method::Get, "/console/sol/{server_id}", move |req| {
        let metrics = fleet.metrics().clone();
        let error = |e: &'static str| {
            metrics.sol_errors.inc(&ErrorType { error_type: e });
        };
        let id = req.param("server_id").unwrap_or_default().to_owned();
        if !auth.allows(req, "sol", &id) {
            error("unauthenticated");
            return Response::text(401, "missing or invalid token or ticket\n");
        }
        if fleet.get(&id).is_none_or(|b| b.ipmi().is_none()) {
            return Response::text(404, "no IPMI server with that id\n");
        };
        let resp = match conduit_http::upgrade::websocket(req, Some("binary")) {
            Ok(r) => r,
            Err(e) => {
                error("bad_handshake");
                return Response::text(400, format!("{e}\n"));
            }
        };
        let slot = match slots.take(&id) {
            Ok(s) => s,
            Err(full) => {
                error("session_limit");
                return full.response();
            }
        };
        let (takeover, force, watch) = mode(req);
        // Joined before the 101 goes out: a viewer sees the console from the moment its
        // WebSocket is open (a client that leaves at once just drops its seat).
        let attached = hubs.attach(&id, takeover, force, watch);
        resp.with_upgrade(Upgrade::new(move |stream, leftover| {
            Box::pin(async move {
                let _slot = slot;
                match attached {
                    Ok(viewer) => relay(stream, leftover, viewer, &metrics, TIMING).await,
                    Err(error_type) => {
                        metrics.sol_errors.inc(&ErrorType { error_type });
                        close(&stream, 1011, error_type).await;
                    }
                }
            })
        }))
        .with_header("Cache-Control", "no-store")
    });
    (router, registry)
}

/// `(takeover, force, watch)` from the query: `mode=takeover` or `takeover=1`; `force=1`;
/// `mode=watch` (never the keyboard).
fn mode(req: &conduit_http::Request) -> (bool, bool, bool) {
    let flag = |name| req.query_param(name).is_some_and(|v| yes(&v));
    let mode = req.query_param("mode");
    let takeover = mode.as_deref() == Some("takeover") || flag("takeover");
    let watch = mode.as_deref() == Some("watch");
    (takeover && !watch, flag("force"), watch)
}

fn yes(v: &str) -> bool {
    matches!(v, "1" | "true" | "yes")
}

/// A control message from a viewer (a TEXT frame).
fn control(id: u64, text: &[u8]) -> Option<Command> {
    let msg: serde_json::Value = serde_json::from_slice(text).ok()?;
    match msg.get("type")?.as_str()? {
        "takeover" => Some(Command::Takeover(id)),
        "break" => Some(Command::Break(id)),
        _ => None,
    }
}

/// A message being received in fragments.
/// What woke the viewer's task up.
enum Event {
    Stop,
    Output(Result<Arc<[u8]>, async_channel::RecvError>),
    Read(std::io::Result<usize>),
    Timer,
}

/// The relay's timeouts.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Ping interval ([`PING_EVERY`]).
    ping_every: Duration,
    /// [`WRITE_TIMEOUT`].
    write: Duration,
}

const TIMING: Timing = Timing {
    ping_every: PING_EVERY,
    write: WRITE_TIMEOUT,
};

/// When to ping a viewer, and when to give up on it: a ping goes to a viewer that has been
/// sent nothing, or has sent nothing, for a ping interval (at most one per interval); a
/// viewer heard nothing from for [`PINGS_UNANSWERED`] intervals is gone.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    every: Duration,
    sent: Instant,
    heard: Instant,
    pinged: Option<Instant>,
}

/// What [`Liveness`] says is due.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Ping,
    Gone,
    /// Nothing until then.
    At(Instant),
}

impl Liveness {
    fn new(every: Duration, now: Instant) -> Liveness {
        Liveness {
            every,
            sent: now,
            heard: now,
            pinged: None,
        }
    }

    fn due(&self, now: Instant) -> Due {
        let gone_at = self.heard + self.every * PINGS_UNANSWERED;
        if now >= gone_at {
            return Due::Gone;
        }
        let quiet_since = self.pinged.map_or(self.heard, |p| p.max(self.heard));
        let ping_at = (self.sent + self.every).min(quiet_since + self.every);
        if now >= ping_at {
            Due::Ping
        } else {
            Due::At(ping_at.min(gone_at))
        }
    }
}

/// Why a frame did not reach the viewer.
enum Unwritten {
    /// The connection failed: the viewer went away.
    Gone,
    /// The viewer is too slow; it ends so.
    End(Ending),
}

/// Writes `frame` to the viewer, within `limit` (else the viewer is too slow), and stops at
/// once when the hub finds the viewer too slow.
async fn write_frame(
    stream: &Async<std::net::TcpStream>,
    frame: &[u8],
    viewer: &Viewer,
    limit: Duration,
    metrics: &AgentMetrics,
) -> Result<(), Unwritten> {
    let write = async {
        (&*stream)
            .write_all(frame)
            .await
            .map_err(|_| Unwritten::Gone)
    };
    let hub_gave_up = async {
        let _ = viewer.stop.recv().await;
        match viewer.ending.get() {
            Some(e) if e.reason == TOO_SLOW => Err(Unwritten::End(*e)),
            _ => future::pending().await,
        }
    };
    let timeout = async {
        Timer::after(limit).await;
        Err(Unwritten::End(end_here(viewer, TOO_SLOW_ENDING, metrics)))
    };
    future::or(write, future::or(hub_gave_up, timeout)).await
}

/// Ends a viewer from its side with `ending`, counted (unless the hub ended it first: then
/// that ending). The hub drops its seat.
fn end_here(viewer: &Viewer, ending: Ending, metrics: &AgentMetrics) -> Ending {
    if viewer.ending.set(ending).is_ok() {
        metrics.sol_errors.inc(&ErrorType {
            error_type: ending.reason,
        });
    }
    viewer.output.close();
    viewer.ending.get().copied().unwrap_or(ending)
}

/// Relays one viewer: its frames to the hub as commands, the hub's output to it. Every write
/// to the viewer is bounded: [`Timing::write`], or [`CLOSE_TIMEOUT`] for a close frame.
async fn relay(
    stream: Async<std::net::TcpStream>,
    mut inbuf: Vec<u8>,
    viewer: Viewer,
    metrics: &AgentMetrics,
    timing: Timing,
) {
    let mut chunk = vec![0u8; 16 * 1024];
    // One frame buffer for the connection: no allocation per forwarded chunk once grown.
    let mut frame = Vec::with_capacity(512);
    let mut pending: VecDeque<Command> = VecDeque::new();
    // RFC 6455 fragmentation; a text (control) message is gathered whole, then checked.
    let mut fragments = ws::Fragments::default();
    let mut text = Vec::new();
    let mut live = Liveness::new(timing.ping_every, Instant::now());
    let protocol_error = |code: u16| {
        metrics.sol_errors.inc(&ErrorType {
            error_type: "protocol_error",
        });
        // Closed with the code only, like before: the error type is for the metric.
        Some(Ending { code, reason: "" })
    };
    let end: Option<Ending> = 'relay: loop {
        // Whole frames from the viewer, while the hub keeps up.
        while pending.len() < PENDING_COMMANDS {
            let (f, used) = match ws::decode_client_frame(&inbuf, MAX_FRAME) {
                Ok(None) => break,
                Ok(Some(decoded)) => decoded,
                Err(_) => break 'relay protocol_error(1002),
            };
            inbuf.drain(..used);
            // A frame for the viewer, if this one asks for one.
            match f.opcode {
                Opcode::Binary | Opcode::Text | Opcode::Continuation => {
                    let kind = match fragments.data(f.opcode, f.fin) {
                        Ok(kind) => kind,
                        Err(code) => break 'relay protocol_error(code),
                    };
                    if kind == Opcode::Binary {
                        if !f.payload.is_empty() {
                            pending.push_back(Command::Input(viewer.id, f.payload));
                        }
                        continue;
                    }
                    // Text: a control message, whole before it is read.
                    if text.len() + f.payload.len() > MAX_FRAME {
                        break 'relay protocol_error(close_code::TOO_BIG);
                    }
                    text.extend_from_slice(&f.payload);
                    if !f.fin {
                        continue;
                    }
                    let message = std::mem::take(&mut text);
                    if std::str::from_utf8(&message).is_err() {
                        break 'relay protocol_error(close_code::INVALID_DATA);
                    }
                    match control(viewer.id, &message) {
                        Some(c) => {
                            pending.push_back(c);
                            continue;
                        }
                        None => {
                            let line = b"\r\n[conduit: unknown control message ignored]\r\n";
                            ws::encode_server_frame_into(Opcode::Binary, line, &mut frame);
                        }
                    }
                }
                Opcode::Pong => continue,
                Opcode::Ping => ws::encode_server_frame_into(Opcode::Pong, &f.payload, &mut frame),
                Opcode::Close => {
                    if let Err(code) = ws::check_close_payload(&f.payload) {
                        break 'relay protocol_error(code);
                    }
                    // The echo, bounded like every close frame; then the viewer is done.
                    with_timeout(CLOSE_TIMEOUT, send(&stream, Opcode::Close, &f.payload)).await;
                    break 'relay None;
                }
            }
            match write_frame(&stream, &frame, &viewer, timing.write, metrics).await {
                Ok(()) => live.sent = Instant::now(),
                Err(Unwritten::Gone) => break 'relay None,
                Err(Unwritten::End(e)) => break 'relay Some(e),
            }
        }
        // Hand commands over without waiting on the hub.
        while let Some(c) = pending.pop_front() {
            match viewer.commands.try_send(c) {
                Ok(()) => {}
                Err(TrySendError::Full(c)) => {
                    pending.push_front(c);
                    break;
                }
                // The hub is gone; its reason comes through `output`.
                Err(TrySendError::Closed(_)) => pending.clear(),
            }
        }
        let now = Instant::now();
        if pending.len() >= PENDING_COMMANDS {
            // Not reading from the viewer: its silence says nothing.
            live.heard = now;
        }
        // Checked on every round, so that a stream of console output cannot put it off.
        let next_due = match live.due(now) {
            Due::Gone => break Some(end_here(&viewer, UNRESPONSIVE, metrics)),
            Due::Ping => {
                ws::encode_server_frame_into(Opcode::Ping, b"", &mut frame);
                match write_frame(&stream, &frame, &viewer, timing.write, metrics).await {
                    Ok(()) => {
                        let now = Instant::now();
                        live.sent = now;
                        live.pinged = Some(now);
                    }
                    Err(Unwritten::Gone) => break None,
                    Err(Unwritten::End(e)) => break Some(e),
                }
                continue;
            }
            Due::At(t) => t,
        };
        let wake = if pending.is_empty() {
            next_due.saturating_duration_since(now)
        } else {
            COMMAND_RETRY
        };
        let read = async {
            if pending.len() >= PENDING_COMMANDS {
                return future::pending().await;
            }
            Event::Read((&stream).read(&mut chunk).await)
        };
        let event = future::or(
            async {
                let _ = viewer.stop.recv().await;
                Event::Stop
            },
            future::or(
                async { Event::Output(viewer.output.recv().await) },
                future::or(read, async {
                    Timer::after(wake).await;
                    Event::Timer
                }),
            ),
        )
        .await;
        match event {
            Event::Stop => {
                let ending = viewer.ending.get().copied();
                if ending.is_some_and(|e| e.reason != TOO_SLOW) {
                    // The hub ended (its seat is gone): what it said last goes out first.
                    while let Ok(data) = viewer.output.try_recv() {
                        ws::encode_server_frame_into(Opcode::Binary, &data, &mut frame);
                        let mut to = &stream;
                        let written = with_timeout(CLOSE_TIMEOUT, to.write_all(&frame)).await;
                        if !matches!(written, Some(Ok(()))) {
                            break;
                        }
                    }
                }
                break Some(ending.unwrap_or(INTERNAL));
            }
            Event::Output(Ok(data)) => {
                ws::encode_server_frame_into(Opcode::Binary, &data, &mut frame);
                // A viewer that stopped reading is let go as soon as the hub gives up on it,
                // or when one chunk takes too long.
                match write_frame(&stream, &frame, &viewer, timing.write, metrics).await {
                    Ok(()) => live.sent = Instant::now(),
                    Err(Unwritten::Gone) => break None,
                    Err(Unwritten::End(e)) => break Some(e),
                }
            }
            Event::Output(Err(_)) => break Some(viewer.ending.get().copied().unwrap_or(INTERNAL)),
            Event::Read(Ok(0) | Err(_)) => break None, // the viewer went away
            Event::Read(Ok(n)) => {
                live.heard = Instant::now();
                inbuf.extend_from_slice(&chunk[..n]);
            }
            // Pings and the liveness check come round at the top of the loop.
            Event::Timer => {}
        }
    };
    if let Some(e) = end {
        // Counted where it was decided; the viewer may not be reading any more.
        with_timeout(CLOSE_TIMEOUT, close(&stream, e.code, e.reason)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_metrics::catalog::CatalogBuilder;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::OnceLock;

    fn metrics() -> AgentMetrics {
        let mut registry = prometheus_client::registry::Registry::default();
        AgentMetrics::register(&mut CatalogBuilder::new(&mut registry, "agent", 100))
    }

    fn errors(metrics: &AgentMetrics, error_type: &'static str) -> u64 {
        metrics
            .sol_errors
            .with(&ErrorType { error_type }, |c| c.get())
            .unwrap_or(0)
    }

    /// A relay's viewer connection (both ends) and its seat at a hub that does nothing.
    struct Seat {
        client: TcpStream,
        stream: Async<TcpStream>,
        viewer: Viewer,
        output: async_channel::Sender<Arc<[u8]>>,
        _stop: async_channel::Sender<()>,
        _commands: async_channel::Receiver<Command>,
        ending: Arc<OnceLock<Ending>>,
    }

    fn seat() -> Seat {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let stream = Async::new(listener.accept().unwrap().0).unwrap();
        let (output, output_rx) = async_channel::bounded(hub::VIEWER_QUEUE);
        let (stop, stop_rx) = async_channel::bounded(1);
        let (commands, commands_rx) = async_channel::bounded(16);
        let ending = Arc::new(OnceLock::new());
        Seat {
            client,
            stream,
            viewer: Viewer {
                id: 1,
                output: output_rx,
                stop: stop_rx,
                ending: ending.clone(),
                commands,
            },
            output,
            _stop: stop,
            _commands: commands_rx,
            ending,
        }
    }

    /// Runs the relay of `seat` to its end.
    fn run(seat: Seat, metrics: &AgentMetrics, timing: Timing) -> (TcpStream, Option<Ending>) {
        let Seat {
            client,
            stream,
            viewer,
            ending,
            ..
        } = seat;
        async_io::block_on(relay(stream, Vec::new(), viewer, metrics, timing));
        (client, ending.get().copied())
    }

    /// The frames a viewer received until the connection closed or went quiet.
    fn received(client: &mut TcpStream) -> Vec<(Opcode, Vec<u8>)> {
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = client.read(&mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut frames = Vec::new();
        while let Ok(Some((f, used))) = ws::decode_server_frame(&buf, 1 << 20) {
            buf.drain(..used);
            frames.push((f.opcode, f.payload));
        }
        frames
    }

    /// A masked client frame (zero mask) with FIN as given: `opcode` 0 continuation, 1 text,
    /// 2 binary, 8 close.
    fn raw_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut f = vec![
            u8::from(fin) << 7 | opcode,
            0x80 | payload.len() as u8,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    /// The close code a relay answers `frames` with.
    fn close_code_for(frames: &[Vec<u8>]) -> (u16, u64) {
        let seat = seat();
        let metrics = metrics();
        let mut client = seat.client.try_clone().unwrap();
        for f in frames {
            client.write_all(f).unwrap();
        }
        let timing = Timing {
            ping_every: Duration::from_secs(3600),
            write: Duration::from_secs(1),
        };
        let (mut client, _) = run(seat, &metrics, timing);
        let frames = received(&mut client);
        let (op, payload) = frames.last().expect("a close frame");
        assert_eq!(*op, Opcode::Close, "{frames:?}");
        (
            u16::from_be_bytes([payload[0], payload[1]]),
            errors(&metrics, "protocol_error"),
        )
    }

    #[test]
    fn fragmentation_and_utf8_follow_rfc_6455() {
        // A binary frame inside a fragmented text message; a continuation of nothing.
        let text_then_binary = [raw_frame(false, 1, b"{\"ty"), raw_frame(true, 2, b"x")];
        assert_eq!(close_code_for(&text_then_binary), (1002, 1));
        assert_eq!(close_code_for(&[raw_frame(true, 0, b"x")]), (1002, 1));
        // A text message that is not UTF-8, whole or split inside a character.
        assert_eq!(
            close_code_for(&[raw_frame(true, 1, b"\xC3\x28")]),
            (1007, 1)
        );
        let split = [
            raw_frame(false, 1, b"\xE2\x82"),
            raw_frame(true, 0, b"\xAC\xFF"),
        ];
        assert_eq!(close_code_for(&split), (1007, 1));
        // A close frame with a reason that is not UTF-8.
        assert_eq!(
            close_code_for(&[raw_frame(true, 8, b"\x03\xE8\xFF")]),
            (1007, 1)
        );
        // A fragmented control message with a ping between its fragments is fine: the
        // viewer then leaves with a normal close, echoed.
        let fine = [
            raw_frame(false, 1, b"{\"type\":"),
            raw_frame(true, 9, b"p"),
            raw_frame(true, 0, b"\"nope\"}"),
            raw_frame(true, 8, b"\x03\xE8bye"),
        ];
        assert_eq!(close_code_for(&fine), (1000, 0));
    }

    #[test]
    fn a_viewer_pinging_but_never_reading_is_dropped_not_waited_for() {
        let seat = seat();
        let metrics = metrics();
        let mut client = seat.client.try_clone().unwrap();
        // Pings until the agent stops reading them (its pongs not going out).
        let flood = std::thread::spawn(move || {
            client
                .set_write_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let pings = ws::encode_client_frame(Opcode::Ping, &[7; 125], [1, 2, 3, 4]).repeat(512);
            let mut sent = 0;
            while sent < 256 << 20 && client.write_all(&pings).is_ok() {
                sent += pings.len();
            }
        });
        let timing = Timing {
            ping_every: Duration::from_secs(3600),
            write: Duration::from_millis(300),
        };
        let started = Instant::now();
        let (_client, ending) = run(seat, &metrics, timing);
        assert_eq!(ending, Some(TOO_SLOW_ENDING));
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(errors(&metrics, "viewer_too_slow"), 1);
        flood.join().unwrap();
    }

    #[test]
    fn console_output_a_viewer_does_not_take_ends_it_without_more_output() {
        let seat = seat();
        let metrics = metrics();
        // More than the socket buffers hold, and then nothing: the hub's queue never fills
        // up again, the write has to time out.
        let chunk: Arc<[u8]> = Arc::from(vec![b'x'; 64 * 1024]);
        while seat.output.try_send(chunk.clone()).is_ok() {}
        let output = seat.output.clone();
        let timing = Timing {
            ping_every: Duration::from_secs(3600),
            write: Duration::from_millis(300),
        };
        let (_client, ending) = run(seat, &metrics, timing);
        assert_eq!(ending, Some(TOO_SLOW_ENDING));
        assert_eq!(errors(&metrics, "viewer_too_slow"), 1);
        // The hub sees the seat gone.
        assert!(output.is_closed());
    }

    #[test]
    fn a_viewer_answering_no_ping_is_dropped() {
        let seat = seat();
        let metrics = metrics();
        let timing = Timing {
            ping_every: Duration::from_millis(100),
            write: Duration::from_secs(10),
        };
        let started = Instant::now();
        let (mut client, ending) = run(seat, &metrics, timing);
        assert_eq!(ending, Some(UNRESPONSIVE));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(errors(&metrics, "viewer_timeout"), 1);
        let frames = received(&mut client);
        let pings = frames.iter().filter(|(op, _)| *op == Opcode::Ping).count();
        assert_eq!(pings, 2, "{frames:?}");
        let (op, payload) = frames.last().unwrap();
        assert_eq!(*op, Opcode::Close);
        assert_eq!(payload[..], *b"\x03\xf0viewer_timeout");
    }

    #[test]
    fn a_viewer_answering_pings_stays() {
        let seat = seat();
        let metrics = metrics();
        let mut client = seat.client.try_clone().unwrap();
        // Answers every ping for a second, then leaves.
        let viewer = std::thread::spawn(move || {
            client
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let until = Instant::now() + Duration::from_secs(1);
            let (mut buf, mut chunk, mut pings) = (Vec::new(), [0u8; 4096], 0);
            while Instant::now() < until {
                if let Ok(n) = client.read(&mut chunk) {
                    buf.extend_from_slice(&chunk[..n]);
                }
                while let Ok(Some((f, used))) = ws::decode_server_frame(&buf, 1 << 20) {
                    buf.drain(..used);
                    if f.opcode == Opcode::Ping {
                        pings += 1;
                        let pong = ws::encode_client_frame(Opcode::Pong, &f.payload, [9; 4]);
                        client.write_all(&pong).unwrap();
                    }
                }
            }
            client.shutdown(std::net::Shutdown::Both).unwrap();
            pings
        });
        let timing = Timing {
            ping_every: Duration::from_millis(100),
            write: Duration::from_secs(10),
        };
        let (_client, ending) = run(seat, &metrics, timing);
        // It left by itself.
        assert_eq!(ending, None);
        assert!(viewer.join().unwrap() >= 5);
        assert_eq!(errors(&metrics, "viewer_timeout"), 0);
    }

    #[test]
    fn pings_go_to_quiet_viewers_and_silent_ones_are_given_up() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new(s(30), t0);
        assert_eq!(l.due(t0), Due::At(t0 + s(30)));
        // Output flowing, the viewer silent: pinged after an interval all the same.
        l.sent = t0 + s(29);
        assert_eq!(l.due(t0 + s(30)), Due::Ping);
        (l.sent, l.pinged) = (t0 + s(30), Some(t0 + s(30)));
        // At most one ping an interval.
        l.sent = t0 + s(59);
        assert_eq!(l.due(t0 + s(45)), Due::At(t0 + s(60)));
        assert_eq!(l.due(t0 + s(60)), Due::Ping);
        (l.sent, l.pinged) = (t0 + s(60), Some(t0 + s(60)));
        // Nothing heard for three intervals: gone.
        assert_eq!(l.due(t0 + s(89)), Due::At(t0 + s(90)));
        assert_eq!(l.due(t0 + s(90)), Due::Gone);
        // A pong (anything) heard: alive; the next ping an interval after the last one.
        l.heard = t0 + s(61);
        l.sent = t0 + s(89);
        assert_eq!(l.due(t0 + s(90)), Due::At(t0 + s(91)));
        // A chatty viewer sent nothing gets a ping an interval after the last frame sent.
        let mut l = Liveness::new(s(30), t0);
        l.heard = t0 + s(29);
        assert_eq!(l.due(t0 + s(30)), Due::Ping);
    }

    #[test]
    fn query_parameters() {
        let req = |q: &str| conduit_http::Request {
            query: Some(q.into()),
            ..Default::default()
        };
        assert_eq!(
            mode(&req("ticket=abc&mode=takeover&force=1")),
            (true, true, false)
        );
        assert_eq!(mode(&req("takeover=yes")), (true, false, false));
        assert_eq!(
            mode(&req("takeover&force=0&mode=view")),
            (false, false, false)
        );
        assert_eq!(mode(&req("mode=watch&takeover=1")), (false, false, true));
        assert!(yes("1") && yes("true") && yes("yes"));
        assert!(!yes("") && !yes("0") && !yes("false"));
    }

    #[test]
    fn control_messages() {
        assert!(matches!(
            control(7, br#"{"type":"takeover"}"#),
            Some(Command::Takeover(7))
        ));
        assert!(matches!(
            control(7, br#"{"type":"break","extra":1}"#),
            Some(Command::Break(7))
        ));
        for bad in [
            &b"{}"[..],
            b"{\"type\":1}",
            b"[]",
            b"takeover",
            b"\xff",
            b"",
        ] {
            assert!(control(7, bad).is_none(), "{bad:?}");
        }
    }
}
