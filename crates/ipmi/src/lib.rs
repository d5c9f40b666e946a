//! IPMI over LAN (RMCP+, IPMI 2.0), the agent's own async implementation on ipmi-rs-core's
//! command codecs. One long-lived session per BMC, serialized, re-opened transparently when the
//! BMC forgets it (restart, session timeout).
//!
//! Layers: [`wire`] (bytes) → [`rakp`] (handshake) and [`session`] (established session) →
//! [`client`] (UDP I/O, retransmits, batches kept by [`pipeline`]) → [`IpmiBmc`] (session
//! reuse) → [`commands`], [`sdr`] (repository and sensors), [`sel`] (event log), [`status`]
//! (identity, event log size, DCMI power), [`boot`] (boot device override), `sol` (feature
//! `sol`: Serial over LAN).

#![forbid(unsafe_code)]

pub mod boot;
pub mod client;
pub mod commands;
pub mod crypto;
#[cfg(test)]
mod fake_bmc;
#[cfg(test)]
mod fuzz;
pub mod pipeline;
pub mod rakp;
pub mod sdr;
pub mod sel;
pub mod session;
#[cfg(feature = "sol")]
pub mod sol;
pub mod status;
pub mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipmi_rs_core::connection::{IpmiCommand, Message};

use client::{Connection, IpmiError, Request, Timing};
use crypto::CipherSuite;
use rakp::Credentials;

/// One BMC reached over IPMI, with its session kept open between operations.
#[derive(Debug)]
pub struct IpmiBmc {
    addr: SocketAddr,
    suite: CipherSuite,
    creds: Credentials,
    timing: Timing,
    // Requests a batch may have outstanding at once; 1 once the BMC showed it cannot cope.
    window: AtomicUsize,
    conn: async_lock::Mutex<Option<Connection>>,
    // Set by `retire`: operations still running on this handle open no new session.
    retired: std::sync::atomic::AtomicBool,
}

/// Requests a batch ([`IpmiBmc::request_batch`]) has outstanding at once unless
/// [`IpmiBmc::with_window`] says otherwise: the most the session sequence window allows
/// ([`pipeline::MAX_WINDOW`]). At 20 ms a round trip that reads 300 sensors in under a second;
/// a BMC that cannot take them makes its sessions fall back to one at a time after one lost
/// reply.
pub const DEFAULT_WINDOW: usize = pipeline::MAX_WINDOW;

impl IpmiBmc {
    /// A BMC at `addr`; nothing is sent until the first operation.
    pub fn new(addr: SocketAddr, suite: CipherSuite, creds: Credentials, timing: Timing) -> Self {
        IpmiBmc {
            addr,
            suite,
            creds,
            timing,
            window: AtomicUsize::new(DEFAULT_WINDOW),
            conn: async_lock::Mutex::new(None),
            retired: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Lets batches have up to `window` requests outstanding (1 to [`pipeline::MAX_WINDOW`];
    /// 1 sends one at a time).
    pub fn with_window(self, window: usize) -> Self {
        self.window
            .store(window.clamp(1, pipeline::MAX_WINDOW), Ordering::Relaxed);
        self
    }

    /// Requests a batch has outstanding at once now: the configured window, or 1 once the BMC
    /// dropped a request or answered busy with several outstanding.
    pub fn window(&self) -> usize {
        self.window.load(Ordering::Relaxed)
    }

    /// The per-request timeouts and retransmits of this BMC's session.
    pub fn timing(&self) -> Timing {
        self.timing
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
                if self.retired.load(Ordering::Relaxed) {
                    return Err(IpmiError::Retired);
                }
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

    /// Sends queries (requests that may safely be sent twice) with several outstanding on the
    /// BMC's session (see [`pipeline`]); returns each one's completion code and data, in order.
    /// A batch that times out on a session that was not fresh is sent again, whole, on a new
    /// session, as [`IpmiBmc::request`] does for one idempotent request.
    pub async fn request_batch(
        &self,
        what: &'static str,
        reqs: &[Request],
    ) -> Result<Vec<(u8, Vec<u8>)>, IpmiError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.lock().await;
        let mut fresh = false;
        loop {
            if conn.is_none() {
                if self.retired.load(Ordering::Relaxed) {
                    return Err(IpmiError::Retired);
                }
                *conn = Some(
                    Connection::open(self.addr, self.suite, self.creds.clone(), self.timing)
                        .await?,
                );
                fresh = true;
            }
            let Some(c) = conn.as_mut() else { continue };
            let mut window = self.window();
            let r = c.request_batch(what, reqs, &mut window).await;
            if window < self.window() {
                log::info!(
                    "bmc {}: {what}: the BMC does not take several requests at once; \
                     one at a time from now on",
                    self.addr
                );
                self.window.store(window, Ordering::Relaxed);
            }
            match r {
                Err(e) if e.session_suspect() => {
                    if let Some(old) = conn.take() {
                        old.close().await;
                    }
                    if fresh {
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

    /// Closes the session, if one is open (frees the BMC's session slot), and waits until the
    /// sessions of opens to this BMC that were cancelled half-way are closed too (see
    /// [`Connection::open`]; each within its [`Timing`]): what a stopping agent calls last.
    pub async fn close(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            c.close().await;
        }
        client::cancelled_opens_closed(self.addr).await;
    }

    /// Closes the session for good: operations still running on this handle (the BMC left
    /// the inventory or was replaced) fail with [`IpmiError::Retired`] instead of opening a
    /// session nobody would close.
    pub async fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.close().await;
    }
}

/// What the readers of records (SDR repository, SEL) need from a BMC: batches of queries,
/// several outstanding at once. [`IpmiBmc`] is one; tests use fakes answering from byte
/// arrays.
// The agent's executors are single-threaded: the futures need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Queries {
    /// [`IpmiBmc::request_batch`].
    async fn batch(
        &self,
        what: &'static str,
        reqs: &[Request],
    ) -> Result<Vec<(u8, Vec<u8>)>, IpmiError>;

    /// How many requests the session has outstanding at once ([`IpmiBmc::window`]).
    fn window(&self) -> usize;
}

impl Queries for IpmiBmc {
    async fn batch(
        &self,
        what: &'static str,
        reqs: &[Request],
    ) -> Result<Vec<(u8, Vec<u8>)>, IpmiError> {
        self.request_batch(what, reqs).await
    }

    fn window(&self) -> usize {
        IpmiBmc::window(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_bmc::{admin, FakeBmc, Got};
    use futures_lite::future::{block_on, or};
    use ipmi_rs_core::app::GetDeviceId;
    use std::time::Duration;

    fn patient() -> Timing {
        Timing {
            reply_timeout: Duration::from_secs(2),
            retries: 1,
        }
    }

    #[test]
    fn close_waits_for_the_sessions_of_cancelled_opens() {
        let fake = FakeBmc::start();
        let bmc = IpmiBmc::new(fake.addr, CipherSuite::Suite3, admin(), patient());
        // The operation is dropped while the session's RAKP 4 is on its way.
        fake.hold(Got::Rakp3);
        let cancelled = block_on(or(
            async { Some(bmc.execute("get device id", GetDeviceId).await) },
            async {
                fake.sent(Got::Rakp3).await;
                None
            },
        ));
        assert!(cancelled.is_none(), "{cancelled:?}");
        // The next operation opens a session of its own meanwhile.
        block_on(bmc.execute("get device id", GetDeviceId)).unwrap();
        assert_eq!(fake.count(Got::OpenSession), 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                fake.release();
            });
            block_on(bmc.close());
            assert_eq!(fake.sessions(), [], "{:?}", fake.got());
            assert_eq!((fake.activated(), fake.closed()), (2, 2));
        });
    }
}
