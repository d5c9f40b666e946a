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
//!   Force applies to the hub's next activation only (its first, or the next reconnect while
//!   the link is down); joining a console that is up changes nothing, and a console forced
//!   out later by another tool does not force its way back.
//! - Status lines are agent-generated text inside the console stream, on lines of their own:
//!   `\r\n[conduit: …]\r\n` — the keyboard passing, the SOL link lost and reconnecting
//!   (with the delay), reconnected (output the host sent meanwhile was dropped by the BMC).
//! - Close frames: 1011 with the error type as the reason when SOL cannot be opened (e.g.
//!   `sol_in_use`, `timeout`, `auth_failed`), 1008 `viewer_too_slow`, 1002 for a malformed
//!   frame. Pings go to a viewer that has been sent nothing for 30 s.
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
//!   `sol_flow_control` (the BMC
//!   accepted no keystroke for 30 s: its buffer full, the host's serial port flow-controlled;
//!   the link is then reconnected), `viewer_too_slow` (per viewer),
//!   `log_write` (per failed write), `internal` (the console thread could not start).

pub mod hub;
pub mod session_log;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::TrySendError;
use async_io::{Async, Timer};
use conduit_http::http::router::Router;
use conduit_http::http::{Method, Response, Upgrade};
use conduit_http::labels::ErrorType;
use conduit_http::ws::{self, Opcode};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use super::{authorized, close, send, MAX_FRAME, PING_EVERY};
use crate::bmc::Fleet;
use crate::config::ConsoleConfig;
use crate::metrics::AgentMetrics;
use hub::{Command, Ending, Hubs, Viewer, TOO_SLOW};

/// Commands decoded from a viewer and not yet taken by its hub; reading from the viewer
/// pauses at this many.
const PENDING_COMMANDS: usize = 16;
/// Retry interval for commands while the hub's queue is full.
const COMMAND_RETRY: Duration = Duration::from_millis(10);
/// Bound on writing the close frame to a viewer being ended.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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
    token: Option<Arc<str>>,
) -> Router {
    let hubs = Arc::new(Hubs::new(fleet.clone(), config));
    router.route(Method::Get, "/console/sol/{server_id}", move |req| {
        let metrics = fleet.metrics().clone();
        let error = |e: &'static str| {
            metrics.sol_errors.inc(&ErrorType { error_type: e });
        };
        if !authorized(req, token.as_deref()) {
            error("unauthenticated");
            return Response::text(401, "missing or invalid token\n");
        }
        let id = req.param("server_id").unwrap_or_default().to_owned();
        let Some(ipmi) = fleet.ipmi(&id) else {
            return Response::text(404, "no IPMI server with that id\n");
        };
        let resp = match ws::handshake(req, Some("binary")) {
            Ok(r) => r,
            Err(e) => {
                error("bad_handshake");
                return Response::text(400, format!("{e}\n"));
            }
        };
        let query = req.query.as_deref().unwrap_or_default();
        let takeover = query_value(query, "mode") == Some("takeover")
            || query_value(query, "takeover").is_some_and(yes);
        let force = query_value(query, "force").is_some_and(yes);
        let hubs = hubs.clone();
        resp.with_upgrade(Upgrade::new(move |stream, leftover| {
            Box::pin(async move {
                match hubs.attach(&id, takeover, force) {
                    Ok(viewer) => relay(stream, leftover, viewer, &metrics).await,
                    Err(error_type) => {
                        metrics.sol_errors.inc(&ErrorType { error_type });
                        close(&stream, 1011, error_type).await;
                    }
                }
            })
        }))
        .with_header("Cache-Control", "no-store")
        .with_header("X-Conduit-Bmc", ipmi.addr().to_string())
    })
}

/// The value of query parameter `name` (not percent-decoded: the values used are words).
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find_map(|(k, v)| (k == name).then_some(v))
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
enum Partial {
    Binary,
    Text(Vec<u8>),
}

/// What woke the viewer's task up.
enum Event {
    Stop,
    Output(Result<Arc<[u8]>, async_channel::RecvError>),
    Read(std::io::Result<usize>),
    Timer,
}

/// Relays one viewer: its frames to the hub as commands, the hub's output to it.
async fn relay(
    stream: Async<std::net::TcpStream>,
    mut inbuf: Vec<u8>,
    viewer: Viewer,
    metrics: &AgentMetrics,
) {
    let mut chunk = vec![0u8; 16 * 1024];
    // One frame buffer for the connection: no allocation per forwarded chunk once grown.
    let mut frame = Vec::with_capacity(512);
    let mut pending: VecDeque<Command> = VecDeque::new();
    let mut partial: Option<Partial> = None;
    let mut last_sent = Instant::now();
    let end: Option<Ending> = 'relay: loop {
        // Whole frames from the viewer, while the hub keeps up.
        while pending.len() < PENDING_COMMANDS {
            let (f, used) = match ws::decode_client_frame(&inbuf, MAX_FRAME) {
                Ok(None) => break,
                Ok(Some(decoded)) => decoded,
                Err(_) => {
                    let _ = send(&stream, Opcode::Close, &1002u16.to_be_bytes()).await;
                    metrics.sol_errors.inc(&ErrorType {
                        error_type: "protocol_error",
                    });
                    break 'relay None;
                }
            };
            inbuf.drain(..used);
            let op = match (f.opcode, &mut partial) {
                (Opcode::Continuation, Some(Partial::Binary)) => Opcode::Binary,
                (Opcode::Continuation, Some(Partial::Text(buf))) => {
                    if buf.len() + f.payload.len() > MAX_FRAME {
                        let _ = send(&stream, Opcode::Close, &1009u16.to_be_bytes()).await;
                        metrics.sol_errors.inc(&ErrorType {
                            error_type: "protocol_error",
                        });
                        break 'relay None;
                    }
                    buf.extend_from_slice(&f.payload);
                    Opcode::Text
                }
                (Opcode::Continuation, None) => {
                    let _ = send(&stream, Opcode::Close, &1002u16.to_be_bytes()).await;
                    metrics.sol_errors.inc(&ErrorType {
                        error_type: "protocol_error",
                    });
                    break 'relay None;
                }
                (Opcode::Text, _) => {
                    partial = Some(Partial::Text(f.payload.clone()));
                    Opcode::Text
                }
                (op, _) => op,
            };
            match op {
                Opcode::Binary => {
                    partial = (!f.fin).then_some(Partial::Binary);
                    if !f.payload.is_empty() {
                        pending.push_back(Command::Input(viewer.id, f.payload));
                    }
                }
                Opcode::Text if f.fin => {
                    let Some(Partial::Text(text)) = partial.take() else {
                        continue;
                    };
                    match control(viewer.id, &text) {
                        Some(c) => pending.push_back(c),
                        None => {
                            let line = b"\r\n[conduit: unknown control message ignored]\r\n";
                            ws::encode_server_frame_into(Opcode::Binary, line, &mut frame);
                            if (&stream).write_all(&frame).await.is_err() {
                                break 'relay None;
                            }
                        }
                    }
                }
                Opcode::Text | Opcode::Continuation => {}
                Opcode::Ping => {
                    send(&stream, Opcode::Pong, &f.payload).await;
                }
                Opcode::Pong => {}
                Opcode::Close => {
                    send(&stream, Opcode::Close, &f.payload).await;
                    break 'relay None;
                }
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
        let wake = if pending.is_empty() {
            (last_sent + PING_EVERY).saturating_duration_since(Instant::now())
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
                        let write = async { (&stream).write_all(&frame).await.is_ok() };
                        let timeout = async {
                            Timer::after(CLOSE_TIMEOUT).await;
                            false
                        };
                        if !future::or(write, timeout).await {
                            break;
                        }
                    }
                }
                break Some(ending.unwrap_or(INTERNAL));
            }
            Event::Output(Ok(data)) => {
                ws::encode_server_frame_into(Opcode::Binary, &data, &mut frame);
                // A viewer that stopped reading is let go as soon as the hub gives up on it.
                let too_slow = async {
                    let _ = viewer.stop.recv().await;
                    if viewer.ending.get().is_some_and(|e| e.reason == TOO_SLOW) {
                        return false;
                    }
                    future::pending().await
                };
                let write = async { (&stream).write_all(&frame).await.is_ok() };
                if !future::or(write, too_slow).await {
                    break viewer.ending.get().copied();
                }
                last_sent = Instant::now();
            }
            Event::Output(Err(_)) => break Some(viewer.ending.get().copied().unwrap_or(INTERNAL)),
            Event::Read(Ok(0) | Err(_)) => break None, // the viewer went away
            Event::Read(Ok(n)) => inbuf.extend_from_slice(&chunk[..n]),
            Event::Timer => {
                if last_sent.elapsed() >= PING_EVERY {
                    if !send(&stream, Opcode::Ping, b"").await {
                        break None;
                    }
                    last_sent = Instant::now();
                }
            }
        }
    };
    if let Some(e) = end {
        // Counted by the hub; the viewer may not be reading any more.
        future::or(close(&stream, e.code, e.reason), async {
            Timer::after(CLOSE_TIMEOUT).await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let q = "token=abc&mode=takeover&force=1&flag";
        assert_eq!(query_value(q, "token"), Some("abc"));
        assert_eq!(query_value(q, "mode"), Some("takeover"));
        assert_eq!(query_value(q, "force"), Some("1"));
        assert_eq!(query_value(q, "flag"), Some(""));
        assert_eq!(query_value(q, "takeover"), None);
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
