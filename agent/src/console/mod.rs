//! Consoles over WebSocket: serial (IPMI SOL, `sol.rs`) and graphical (the BMC's VNC, `vnc.rs`).
//!
//! Both upgrade a `GET` to a WebSocket (subprotocol `binary` when offered), allowed by the API
//! token or a one-time ticket ([`ConsoleAuth`]), and then leave the HTTP server's short
//! deadlines behind: a console connection lives as long as
//! its viewer, kept alive by pings. Bytes are counted as console payload only (no WebSocket
//! framing, no BMC-side handshake), in counter handles resolved once per session, so the hot
//! path is one atomic add per chunk.

use std::sync::Arc;

use async_io::Async;
use conduit_api::agent::{CreateConsoleTicketRequest, CreateConsoleTicketResponse, BMC_SERVICE};
use conduit_http::router::Router;
use conduit_http::rpc::{check_bearer, unary, Code, RpcError};
use conduit_http::ticket::Tickets;
use conduit_http::{Method, Request, Response};
use conduit_ws::{self as ws, Opcode};
use futures_lite::AsyncWriteExt;

use crate::config::ConsoleConfig;
use crate::fleet::Fleet;
use conduit_runtime::heartbeat::Heartbeats;
#[cfg(feature = "sol")]
use conduit_runtime::job_thread::{self, JobThread};
use slots::ConsoleSlots;

pub mod slots;
#[cfg(feature = "sol")]
pub mod sol;
#[cfg(feature = "vnc")]
pub mod vnc;

/// Largest WebSocket frame a viewer may send (keystrokes, pointer events, pastes; not files).
pub const MAX_FRAME: usize = 64 * 1024;
/// Keep-alive ping to an idle viewer.
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Who may open a console: a holder of the API token (`Authorization: Bearer`: the CLI,
/// scripts), or of a one-time ticket minted by one (`?ticket=`: browsers, which cannot set
/// headers on a WebSocket). The token itself is never accepted in a URL.
#[derive(Debug, Clone)]
pub struct ConsoleAuth {
    token: Option<Arc<str>>,
    tickets: Arc<Tickets>,
}

/// How long a console ticket is valid: long enough to open the URL it came with.
pub const TICKET_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// Unredeemed tickets at most (a client minting without opening cannot grow memory).
const MAX_TICKETS: usize = 256;

impl ConsoleAuth {
    /// Tickets for holders of `token`.
    pub fn new(token: Option<Arc<str>>) -> ConsoleAuth {
        ConsoleAuth {
            token,
            tickets: Arc::new(Tickets::new(TICKET_TTL, MAX_TICKETS)),
        }
    }

    /// Whether `req` may open console `kind` (`sol`, `vnc`) of `server`; a ticket it carries
    /// is used up either way.
    pub fn allows(&self, req: &Request, kind: &str, server: &str) -> bool {
        if check_bearer(req, self.token.as_deref()).is_ok() {
            return true;
        }
        req.query_param("ticket")
            .is_some_and(|t| self.tickets.redeem(&t, &scope(kind, server)))
    }
}

fn scope(kind: &str, server: &str) -> String {
    format!("{kind}/{server}")
}

/// The consoles this build has.
const KINDS: &[&str] = &[
    #[cfg(feature = "sol")]
    "sol",
    #[cfg(feature = "vnc")]
    "vnc",
];

fn mint(
    auth: &ConsoleAuth,
    fleet: &Fleet,
    server: &str,
    kind: &str,
) -> Result<CreateConsoleTicketResponse, RpcError> {
    if !KINDS.contains(&kind) {
        return Err(RpcError::new(
            Code::InvalidArgument,
            format!("unknown console {kind:?}: {}", KINDS.join(" or ")),
        ));
    }
    let Some(bmc) = fleet.get(server) else {
        return Err(RpcError::new(
            Code::NotFound,
            format!("no server {server:?} in the inventory"),
        ));
    };
    if kind == "sol" && bmc.config.protocol == crate::config::Protocol::Redfish {
        return Err(RpcError::new(
            Code::FailedPrecondition,
            format!("server {server:?} is a Redfish BMC: no serial console over IPMI SOL"),
        ));
    }
    let ticket = auth
        .tickets
        .mint(&scope(kind, server))
        .map_err(|e| e.to_rpc(TICKET_TTL))?;
    Ok(CreateConsoleTicketResponse {
        path: format!("/console/{kind}/{server}?ticket={ticket}"),
        ticket,
        expires_in_secs: auth.tickets.ttl().as_secs_f64(),
    })
}

/// `CreateConsoleTicket` (Connect) and `POST /api/v1/servers/{id}/console/{kind}/ticket`,
/// both behind the API token.
fn ticket_routes(router: Router, fleet: Arc<Fleet>, auth: ConsoleAuth) -> Router {
    let (f2, a2) = (fleet.clone(), auth.clone());
    let token = auth.token.clone();
    router
        .route(
            Method::Post,
            "/conduit.agent.v1.BmcService/CreateConsoleTicket",
            unary(
                BMC_SERVICE,
                "CreateConsoleTicket",
                token.clone(),
                fleet.metrics().rpc.clone(),
                move |r: CreateConsoleTicketRequest| mint(&auth, &fleet, &r.server_id, &r.console),
            ),
        )
        .route(
            Method::Post,
            "/api/v1/servers/{id}/console/{kind}/ticket",
            move |req| {
                let minted = check_bearer(req, token.as_deref()).and_then(|()| {
                    mint(
                        &a2,
                        &f2,
                        req.param("id").unwrap_or_default(),
                        req.param("kind").unwrap_or_default(),
                    )
                });
                match minted {
                    Ok(t) => Response::json(201, &t).with_header("Cache-Control", "no-store"),
                    Err(e) => e.response(),
                }
            },
        )
}

/// Sends one unmasked (server) frame; false when the viewer is gone.
pub async fn send(stream: &Async<std::net::TcpStream>, op: Opcode, payload: &[u8]) -> bool {
    (&*stream)
        .write_all(&ws::encode_server_frame(op, payload))
        .await
        .is_ok()
}

/// Closes the WebSocket with status `code` and `reason` (a short error type).
pub async fn close(stream: &Async<std::net::TcpStream>, code: u16, reason: &str) {
    send(stream, Opcode::Close, &close_payload(code, reason)).await;
}

/// A Close frame's payload: the status code, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// The consoles, for a clean stop and for the uplink's brokered consoles.
#[derive(Debug)]
pub struct Consoles {
    #[cfg(feature = "sol")]
    hubs: Option<Arc<sol::hub::Hubs>>,
    auth: ConsoleAuth,
    fleet: Arc<Fleet>,
}

impl Consoles {
    /// The path, with a one-time ticket, of console `kind` of `server` for a viewer the
    /// gateway brokers (`watch`: never holds the keyboard; `takeover`: takes it on arrival).
    pub fn ticket_path(
        &self,
        server: &str,
        kind: &str,
        watch: bool,
        takeover: bool,
    ) -> Result<String, RpcError> {
        let mut path = mint(&self.auth, &self.fleet, server, kind)?.path;
        if watch {
            path.push_str("&mode=watch");
        } else if takeover {
            path.push_str("&mode=takeover");
        }
        Ok(path)
    }

    /// Ends the consoles of `servers` (their configuration changed, or they left the
    /// inventory); the others go on. (A VNC session holds its own connection to the BMC and
    /// ends with its viewer.)
    pub fn end(&self, servers: &[String]) {
        #[cfg(feature = "sol")]
        if let Some(h) = &self.hubs {
            for s in servers {
                h.end(s);
            }
        }
        let _ = servers;
    }

    /// Ends every console within `within`: SOL deactivated, sessions closed. (VNC sessions
    /// end with their connections, which the HTTP server closes.)
    pub fn shutdown(&self, within: std::time::Duration) {
        #[cfg(feature = "sol")]
        if let Some(h) = &self.hubs {
            h.shutdown(within);
        }
        let _ = within;
    }
}

/// Adds the console routes; the SOL hubs run on a `sol-consoles` thread beating
/// `heartbeats`, and remember the payloads they hold under `state_dir`.
pub fn routes(
    router: Router,
    fleet: Arc<Fleet>,
    config: ConsoleConfig,
    token: Option<Arc<str>>,
    heartbeats: &Heartbeats,
    state_dir: Option<&std::path::Path>,
) -> std::io::Result<(Router, Consoles)> {
    let slots = ConsoleSlots::new(config.max_sessions, config.max_sessions_per_server);
    let auth = ConsoleAuth::new(token);
    let router = ticket_routes(router, fleet.clone(), auth.clone());
    #[allow(unused_mut)]
    let mut consoles = Consoles {
        #[cfg(feature = "sol")]
        hubs: None,
        auth: auth.clone(),
        fleet: fleet.clone(),
    };
    #[cfg(feature = "sol")]
    let router = {
        let beat = heartbeats.register("sol console executor", job_thread::BEAT_PERIOD);
        let thread = JobThread::start("sol-consoles", Some(beat))?;
        let (router, hubs) = sol::routes(
            router,
            fleet.clone(),
            config.clone(),
            auth.clone(),
            slots.clone(),
            thread,
            sol::held::Held::new(state_dir),
        );
        consoles.hubs = Some(hubs);
        router
    };
    #[cfg(feature = "vnc")]
    let router = vnc::routes(
        router,
        fleet.clone(),
        config.clone(),
        auth.clone(),
        slots.clone(),
    );
    let _ = (fleet, auth, config, slots, heartbeats, state_dir);
    Ok((router, consoles))
}
