//! IPMI over LAN (RMCP+, IPMI 2.0), the agent's own async implementation on ipmi-rs-core's
//! command codecs. One long-lived session per BMC, serialized, re-opened transparently when the
//! BMC forgets it (restart, session timeout).
//!
//! Layers: [`wire`] (bytes) → [`rakp`] (handshake) and [`session`] (established session) →
//! [`client`] (UDP I/O, retransmits) → [`IpmiBmc`] (session reuse) → [`commands`].

#![forbid(unsafe_code)]

pub mod client;
pub mod commands;
pub mod crypto;
#[cfg(test)]
mod fuzz;
pub mod rakp;
pub mod sdr;
pub mod session;
#[cfg(feature = "sol")]
pub mod sol;
pub mod wire;

use std::net::SocketAddr;

use ipmi_rs_core::connection::{IpmiCommand, Message};

use client::{Connection, IpmiError, Timing};
use crypto::CipherSuite;
use rakp::Credentials;

/// One BMC reached over IPMI, with its session kept open between operations.
#[derive(Debug)]
pub struct IpmiBmc {
    addr: SocketAddr,
    suite: CipherSuite,
    creds: Credentials,
    timing: Timing,
    conn: async_lock::Mutex<Option<Connection>>,
}

impl IpmiBmc {
    /// A BMC at `addr`; nothing is sent until the first operation.
    pub fn new(addr: SocketAddr, suite: CipherSuite, creds: Credentials, timing: Timing) -> Self {
        IpmiBmc {
            addr,
            suite,
            creds,
            timing,
            conn: async_lock::Mutex::new(None),
        }
    }

    /// The BMC's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a separate session to this BMC (a SOL console keeps one of its own).
    pub async fn open_dedicated(&self) -> Result<Connection, IpmiError> {
        Connection::open(self.addr, self.suite, self.creds.clone(), self.timing).await
    }

    /// Sends one request on the BMC's session (opening it if needed). When the session looks
    /// dead (no reply), it is closed and, for an idempotent request, re-opened once and the
    /// request retried. A non-idempotent one (chassis control) is not sent twice: its first
    /// copy may have acted although the reply was lost.
    pub async fn request(
        &self,
        what: &'static str,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        idempotent: bool,
    ) -> Result<Vec<u8>, IpmiError> {
        let mut conn = self.conn.lock().await;
        let mut fresh = false;
        loop {
            if conn.is_none() {
                *conn = Some(
                    Connection::open(self.addr, self.suite, self.creds.clone(), self.timing)
                        .await?,
                );
                fresh = true;
            }
            let Some(c) = conn.as_mut() else { continue };
            match c.request(what, netfn, cmd, data).await {
                Err(e) if e.session_suspect() => {
                    // Best effort: frees the BMC's slot if it still knows the session.
                    if let Some(old) = conn.take() {
                        old.close().await;
                    }
                    if fresh || !idempotent {
                        return Err(e);
                    }
                    log::info!("bmc {}: {e}; re-opening the session", self.addr);
                }
                other => return other,
            }
        }
    }

    /// Executes an ipmi-rs-core command that may safely be sent twice (a query).
    pub async fn execute<C: IpmiCommand>(
        &self,
        what: &'static str,
        cmd: C,
    ) -> Result<C::Output, IpmiError> {
        self.command(what, cmd, true).await
    }

    /// Executes a command that must not be sent twice (it changes state: chassis control).
    pub async fn execute_once<C: IpmiCommand>(
        &self,
        what: &'static str,
        cmd: C,
    ) -> Result<C::Output, IpmiError> {
        self.command(what, cmd, false).await
    }

    async fn command<C: IpmiCommand>(
        &self,
        what: &'static str,
        cmd: C,
        idempotent: bool,
    ) -> Result<C::Output, IpmiError> {
        let msg: Message = cmd.into();
        let data = self
            .request(what, msg.netfn_raw(), msg.cmd(), msg.data(), idempotent)
            .await?;
        C::parse_success_response(&data).map_err(|_| IpmiError::Malformed(what))
    }

    /// Closes the session, if one is open (frees the BMC's session slot).
    pub async fn close(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            c.close().await;
        }
    }
}
