//! `conduit`, the command line of users and admins, as a library: the binary (`main.rs`)
//! parses the command line and calls [`commands`].
//!
//! - [`session`]: the login kept in the user's config directory (mode 0600) and its refresh.
//! - [`client`]: calls to the manager, and to the gateway the manager says reaches a server.
//! - [`websocket`]: a blocking WebSocket client (the gateway's consoles).
//! - [`escape`]: the console's `~` escapes, as a pure state machine.
//! - [`terminal`]: raw mode restored on every exit path; a password read without echo.
//! - [`console`]: SOL in the terminal. [`vnc`]: a guarded local listener for a native viewer.
//! - [`output`]: tables and `--output json`.
#![forbid(unsafe_code)]

pub mod client;
pub mod commands;
pub mod console;
pub mod escape;
pub mod output;
pub mod session;
pub mod terminal;
pub mod vnc;
pub mod websocket;
