//! The uplink's transport: what both ends of the agent-to-gateway connection need below the
//! messages (which live in `conduit_api::uplink`).
//!
//! - [`link`]: WebSocket messages over any async byte stream — the client's opening handshake,
//!   a reader that reassembles fragments, answers nothing itself and bounds every message, and
//!   frame encoding for either role.
//! - [`tls`]: the rustls configurations: the agent trusts exactly the configured CA; the
//!   gateway presents its certificate chain.
//!
//! No sockets are opened here and no clock is read: callers bring the stream and the deadlines.

pub mod link;
pub mod tls;
