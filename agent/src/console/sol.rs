//! Serial consoles over WebSocket: `GET /console/sol/{server_id}` upgrades to a WebSocket
//! (subprotocol `binary` when offered) relaying the BMC's Serial over LAN both ways, on a SOL
//! session of its own.
//!
//! Counted: `agent_sol_bytes_total{direction}` — console payload bytes relayed, without
//! WebSocket framing or the SOL/RMCP+ envelope: `bmc_to_viewer` as sent to the viewer,
//! `viewer_to_bmc` as accepted by the BMC. Counting is one atomic add on a counter handle
//! resolved once per session (no lock on the hot path). `agent_sol_sessions_total{server_id}`
//! is the number of active SOL relays; `agent_sol_errors_total{error_type}` counts failures.
//!
//! This first version relays one viewer per WebSocket; several viewers of one console (one
//! writer, takeover), reconnecting to the BMC, and session logs are still to come.

pub mod session_log;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Async;
use conduit_http::http::router::Router;
use conduit_http::http::{Method, Response, Upgrade};
use conduit_http::labels::{Direction, ErrorType, ServerId};
use conduit_http::ws::{self, Opcode};
use futures_lite::{future, AsyncReadExt};

use super::{authorized, close, send, MAX_FRAME, PING_EVERY};
use crate::bmc::Fleet;
use crate::config::ConsoleConfig;
use crate::ipmi::sol::SolConsole;
use crate::metrics::AgentMetrics;

/// Adds `GET /console/sol/{server_id}`.
pub fn routes(
    router: Router,
    fleet: Arc<Fleet>,
    config: ConsoleConfig,
    token: Option<Arc<str>>,
) -> Router {
    let _ = config;
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
        let fleet = fleet.clone();
        resp.with_upgrade(Upgrade::new(move |stream, leftover| {
            Box::pin(async move {
                let Some(ipmi) = fleet.ipmi(&id) else { return };
                let metrics = fleet.metrics().clone();
                match ipmi.open_dedicated().await {
                    Ok(conn) => {
                        match SolConsole::activate(conn, 1, Duration::from_millis(500)).await {
                            Ok(sol) => relay(stream, leftover, sol, &id, &metrics).await,
                            Err(e) => fail(&stream, &metrics, e.kind()).await,
                        }
                    }
                    Err(e) => fail(&stream, &metrics, e.kind()).await,
                }
            })
        }))
        .with_header("Cache-Control", "no-store")
        .with_header("X-Conduit-Bmc", ipmi.addr().to_string())
    })
}

/// Closes the WebSocket with `error_type` as the reason, and counts it.
async fn fail(
    stream: &Async<std::net::TcpStream>,
    metrics: &AgentMetrics,
    error_type: &'static str,
) {
    metrics.sol_errors.inc(&ErrorType { error_type });
    close(stream, 1011, error_type).await;
}

/// What woke the relay up.
enum Event {
    Viewer(std::io::Result<usize>),
    Bmc(Result<Vec<u8>, crate::ipmi::client::IpmiError>),
}

async fn relay(
    stream: Async<std::net::TcpStream>,
    mut inbuf: Vec<u8>,
    mut sol: SolConsole,
    server_id: &str,
    metrics: &AgentMetrics,
) {
    let server = ServerId {
        server_id: server_id.to_owned(),
    };
    let (Some(to_viewer), Some(to_bmc)) = (
        metrics.sol_bytes.handle(&Direction {
            direction: "bmc_to_viewer",
        }),
        metrics.sol_bytes.handle(&Direction {
            direction: "viewer_to_bmc",
        }),
    ) else {
        return;
    };
    metrics.sol_sessions.with(&server, |g| g.inc());
    let mut chunk = vec![0u8; 16 * 1024];
    let mut last_ping = Instant::now();
    let end: Option<&'static str> = 'relay: loop {
        // Whole frames from the viewer first.
        loop {
            match ws::decode_client_frame(&inbuf, MAX_FRAME) {
                Ok(None) => break,
                Ok(Some((frame, used))) => {
                    inbuf.drain(..used);
                    match frame.opcode {
                        Opcode::Binary | Opcode::Text | Opcode::Continuation => {
                            if let Err(e) = sol.write(&frame.payload).await {
                                break 'relay Some(e.kind());
                            }
                            to_bmc.inc_by(frame.payload.len() as u64);
                        }
                        Opcode::Ping => {
                            send(&stream, Opcode::Pong, &frame.payload).await;
                        }
                        Opcode::Pong => {}
                        Opcode::Close => {
                            send(&stream, Opcode::Close, &frame.payload).await;
                            break 'relay None;
                        }
                    }
                }
                Err(_) => {
                    let _ = send(&stream, Opcode::Close, &1002u16.to_be_bytes()).await;
                    break 'relay Some("protocol_error");
                }
            }
        }
        // Then whichever comes first: more from the viewer, or console output.
        let from_viewer = async { Event::Viewer((&stream).read(&mut chunk).await) };
        let from_bmc = async { Event::Bmc(sol.read(Duration::from_millis(250)).await) };
        match future::or(from_viewer, from_bmc).await {
            Event::Viewer(Ok(0)) | Event::Viewer(Err(_)) => break None, // the viewer went away
            Event::Viewer(Ok(n)) => inbuf.extend_from_slice(&chunk[..n]),
            Event::Bmc(Ok(data)) if data.is_empty() => {
                if last_ping.elapsed() >= PING_EVERY {
                    last_ping = Instant::now();
                    if !send(&stream, Opcode::Ping, b"").await {
                        break None;
                    }
                }
            }
            Event::Bmc(Ok(data)) => {
                if !send(&stream, Opcode::Binary, &data).await {
                    break None;
                }
                to_viewer.inc_by(data.len() as u64);
            }
            Event::Bmc(Err(e)) => break Some(e.kind()),
        }
    };
    if let Some(e) = end {
        fail(&stream, metrics, e).await;
    }
    metrics.sol_sessions.with(&server, |g| g.dec());
    sol.deactivate().await;
}
