//! Consoles over WebSocket: serial (IPMI SOL, `sol.rs`) and graphical (the BMC's VNC, `vnc.rs`).
//!
//! Both upgrade a token-protected `GET` to a WebSocket (subprotocol `binary` when offered) and
//! then leave the HTTP server's short deadlines behind: a console connection lives as long as
//! its viewer, kept alive by pings. Bytes are counted as console payload only (no WebSocket
//! framing, no BMC-side handshake), in counter handles resolved once per session, so the hot
//! path is one atomic add per chunk.

use std::sync::Arc;

use async_io::Async;
use conduit_http::router::Router;
use conduit_http::rpc::check_bearer;
use conduit_http::Request;
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

/// The token from `Authorization: Bearer` or, for browsers (which cannot set headers on a
/// WebSocket), from the `token` query parameter.
pub fn authorized(req: &Request, token: Option<&str>) -> bool {
    if check_bearer(req, token).is_ok() {
        return true;
    }
    let Some(from_query) = req.query_param("token") else {
        return false;
    };
    let mut probe = req.clone();
    probe.headers = vec![("Authorization".into(), format!("Bearer {from_query}"))];
    check_bearer(&probe, token).is_ok()
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

/// Adds the console routes; the SOL hubs run on a `sol-consoles` thread beating
/// `heartbeats`.
pub fn routes(
    router: Router,
    fleet: Arc<Fleet>,
    config: ConsoleConfig,
    token: Option<Arc<str>>,
    heartbeats: &Heartbeats,
) -> std::io::Result<Router> {
    let slots = ConsoleSlots::new(config.max_sessions, config.max_sessions_per_server);
    #[cfg(feature = "sol")]
    let router = {
        let beat = heartbeats.register("sol console executor", job_thread::TICK);
        let thread = JobThread::start("sol-consoles", Some(beat))?;
        sol::routes(
            router,
            fleet.clone(),
            config.clone(),
            token.clone(),
            slots.clone(),
            thread,
        )
    };
    #[cfg(feature = "vnc")]
    let router = vnc::routes(
        router,
        fleet.clone(),
        config.clone(),
        token.clone(),
        slots.clone(),
    );
    let _ = (fleet, token, config, slots, heartbeats);
    Ok(router)
}
