//! The I/O edge of IPMI over LAN: one UDP socket per BMC, the RMCP+ handshake driven over it,
//! requests with timeouts and bounded retransmits, Set Session Privilege and Close Session.
//!
//! All protocol logic is in [`super::rakp`], [`super::session`] and [`super::wire`]; this
//! module moves datagrams and keeps time. An open cancelled half-way is finished and its
//! session closed on a short-lived thread (see [`Connection::open`]).

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_io::Async;
use conduit_runtime::with_timeout;

use super::crypto::CipherSuite;
use super::rakp::{Credentials, Established, Handshake, HandshakeError, Step};
use super::session::Session;
use super::wire::{emit_request, emit_session_packet, IpmiResponse, PayloadType, SessionPacket};

/// Timeouts of one BMC's requests.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Wait for a reply before retransmitting.
    pub reply_timeout: Duration,
    /// Retransmits after the first send.
    pub retries: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            reply_timeout: Duration::from_millis(700),
            retries: 2,
        }
    }
}

/// What went wrong talking to a BMC; [`IpmiError::kind`] is the metric's `error_type`.
#[derive(Debug)]
pub enum IpmiError {
    /// No reply within the timeout and retransmits.
    Timeout(&'static str),
    /// The BMC's host refused the datagrams (ICMP port unreachable) or the network is down.
    Unreachable(std::io::Error),
    /// The handshake failed.
    Handshake(HandshakeError),
    /// The BMC answered a command with a non-zero completion code.
    Completion {
        /// The command.
        what: &'static str,
        /// Completion code.
        code: u8,
    },
    /// A reply that cannot be understood.
    Malformed(&'static str),
    /// A local socket error.
    Io(std::io::Error),
    /// The OS random source failed: no session ID, RAKP random or IV could be drawn.
    Rng(getrandom::Error),
    /// The BMC handle was retired ([`crate::IpmiBmc::retire`]): no new session is opened.
    Retired,
}

impl IpmiError {
    /// A bounded label value for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            IpmiError::Timeout(_) => "timeout",
            IpmiError::Unreachable(_) => "unreachable",
            IpmiError::Handshake(h) if h.is_auth() => "auth_failed",
            IpmiError::Handshake(h) if h.is_cipher() => "cipher_unsupported",
            IpmiError::Handshake(_) => "handshake_failed",
            IpmiError::Completion { .. } => "completion_code",
            IpmiError::Malformed(_) => "malformed_reply",
            IpmiError::Io(_) => "io",
            IpmiError::Rng(_) => "rng_failure",
            IpmiError::Retired => "retired",
        }
    }

    /// Whether the session itself looks dead (the BMC restarted or timed it out): no reply,
    /// or one that does not belong to it. A completion code is an answer, so the session
    /// works.
    pub fn session_suspect(&self) -> bool {
        matches!(self, IpmiError::Timeout(_) | IpmiError::Malformed(_))
    }
}

impl std::fmt::Display for IpmiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpmiError::Timeout(step) => write!(f, "{step}: no reply (timed out)"),
            IpmiError::Unreachable(e) => write!(f, "unreachable: {e}"),
            IpmiError::Handshake(h) => h.fmt(f),
            IpmiError::Completion { what, code } => {
                write!(f, "{what}: completion code {code:#04x}")
            }
            IpmiError::Malformed(step) => write!(f, "{step}: malformed reply"),
            IpmiError::Io(e) => write!(f, "socket: {e}"),
            IpmiError::Rng(e) => write!(f, "random source: {e}"),
            IpmiError::Retired => f.write_str("removed from the inventory: no new session"),
        }
    }
}

impl std::error::Error for IpmiError {}

fn io_error(e: std::io::Error) -> IpmiError {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused | HostUnreachable | NetworkUnreachable => IpmiError::Unreachable(e),
        _ => IpmiError::Io(e),
    }
}

/// Random bytes from the OS (session IDs, RAKP randoms, IVs). There is no fallback: a
/// predictable session ID, RAKP random or IV would weaken the session, so an operation that
/// needs one fails ([`IpmiError::Rng`], `rng_failure`) instead.
pub fn random<const N: usize>() -> Result<[u8; N], IpmiError> {
    let mut b = [0u8; N];
    fill_random(&mut b).map_err(IpmiError::Rng)?;
    Ok(b)
}

#[cfg(not(test))]
fn fill_random(b: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(b)
}

#[cfg(test)]
thread_local! {
    /// Tests: the OS source fails once this many more draws have been made (`None`: never).
    static RNG_FAILS_AFTER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Tests: makes the random source of this thread fail after `draws` more draws (`None`
/// restores it).
#[cfg(test)]
pub(crate) fn fail_random_after(draws: Option<usize>) {
    RNG_FAILS_AFTER.with(|c| c.set(draws));
}

#[cfg(test)]
fn fill_random(b: &mut [u8]) -> Result<(), getrandom::Error> {
    match RNG_FAILS_AFTER.with(|c| c.get()) {
        Some(0) => Err(getrandom::Error::UNEXPECTED),
        Some(n) => {
            RNG_FAILS_AFTER.with(|c| c.set(Some(n - 1)));
            getrandom::fill(b)
        }
        None => getrandom::fill(b),
    }
}

/// Whether something at `addr` answers an RMCP/ASF presence ping as an IPMI BMC (two tries
/// within `timeout`). Session-less: no credentials are sent.
pub async fn presence(addr: SocketAddr, timeout: Duration) -> bool {
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(sock) = Async::<UdpSocket>::bind(bind) else {
        return false;
    };
    if sock.get_ref().connect(addr).is_err() {
        return false;
    }
    let timing = Timing {
        reply_timeout: timeout / 2,
        retries: 1,
    };
    // The tag only pairs a pong with its ping (nothing secret rests on it, and the ping is
    // session-less), so it needs no OS randomness.
    let tag = fastrand::u8(..);
    exchange(
        &sock,
        timing,
        "presence ping",
        || Ok(super::wire::presence_ping(tag).to_vec()),
        |d| {
            super::wire::PresencePong::parse(d)
                .ok()
                .filter(|p| p.ipmi && p.tag == tag)
        },
    )
    .await
    .is_ok()
}

/// One IPMI request of a batch ([`Connection::request_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Network function (request).
    pub netfn: u8,
    /// Command.
    pub cmd: u8,
    /// Request data.
    pub data: Vec<u8>,
}

/// An open RMCP+ session with one BMC.
#[derive(Debug)]
pub struct Connection {
    sock: Async<UdpSocket>,
    // Where payloads other than IPMI messages go when the BMC named a port of its own for
    // them at activation (see `use_payload_port`).
    payload_sock: Option<Async<UdpSocket>>,
    session: Session,
    timing: Timing,
    rq_seq: u8,
}

async fn recv_until(
    sock: &Async<UdpSocket>,
    deadline: Instant,
    buf: &mut [u8],
) -> Option<std::io::Result<usize>> {
    let wait = deadline.saturating_duration_since(Instant::now());
    with_timeout(wait, sock.recv(buf)).await
}

/// Sends `datagram` and waits for a reply `accept` takes, retransmitting on timeouts.
async fn exchange<T>(
    sock: &Async<UdpSocket>,
    timing: Timing,
    step: &'static str,
    datagram: impl FnMut() -> Result<Vec<u8>, IpmiError>,
    accept: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, IpmiError> {
    exchange_from(sock, timing, step, &mut Tries::default(), datagram, accept).await
}

/// How far one exchange has got: copies sent, and until when the reply to the last one is
/// waited for. Kept outside [`exchange_from`] so that a handshake step cut short (its future
/// dropped) is resumed where it stood: the reply to a copy already sent is waited for before
/// another goes out, as each Open Session Request may cost the BMC a session slot.
#[derive(Debug, Clone, Copy, Default)]
struct Tries {
    sent: u32,
    deadline: Option<Instant>,
}

/// [`exchange`] from where `tries` stands.
async fn exchange_from<T>(
    sock: &Async<UdpSocket>,
    timing: Timing,
    step: &'static str,
    tries: &mut Tries,
    mut datagram: impl FnMut() -> Result<Vec<u8>, IpmiError>,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, IpmiError> {
    let mut buf = vec![0u8; 2048];
    loop {
        if let Some(deadline) = tries.deadline {
            while let Some(got) = recv_until(sock, deadline, &mut buf).await {
                let n = got.map_err(io_error)?;
                // Anything else (a late reply to an earlier try, a stranger) is ignored.
                if let Some(v) = accept(&buf[..n]) {
                    return Ok(v);
                }
            }
        }
        if tries.sent > timing.retries {
            return Err(IpmiError::Timeout(step));
        }
        let d = datagram()?;
        // Counted before the send completes: a send cut short may have gone out.
        tries.sent += 1;
        tries.deadline = Some(Instant::now() + timing.reply_timeout);
        sock.send(&d).await.map_err(io_error)?;
        tries.deadline = Some(Instant::now() + timing.reply_timeout);
    }
}

/// RMCP+ status codes we send in a refusing RAKP 3 (IPMI 2.0 table 13-15).
const STATUS_INVALID_SESSION_ID: u8 = 0x02;
const STATUS_INVALID_INTEGRITY_CHECK: u8 = 0x0F;

/// The RMCP+ handshake of a session being opened, on the socket it runs on: our message in
/// flight (`request`), the BMC's answer it waits for (`step`) and how far that exchange has
/// got. Pure data between awaits, so that a cancelled open can be carried on elsewhere.
#[derive(Debug)]
struct Handshaking {
    sock: Async<UdpSocket>,
    timing: Timing,
    hs: Handshake,
    step: Step,
    request: Vec<u8>,
    tries: Tries,
}

impl Handshaking {
    /// A handshake with `addr` about to send its Open Session Request.
    fn start(
        addr: SocketAddr,
        suite: CipherSuite,
        creds: Credentials,
        timing: Timing,
    ) -> Result<Handshaking, IpmiError> {
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = Async::<UdpSocket>::bind(bind).map_err(IpmiError::Io)?;
        sock.get_ref().connect(addr).map_err(io_error)?;
        let console_sid = u32::from_le_bytes(random::<4>()?).max(1);
        let hs = Handshake::new(suite, creds, console_sid, random()?, random::<1>()?[0]);
        let request = hs.open_session_request();
        Ok(Handshaking {
            sock,
            timing,
            hs,
            step: Step::OpenSession,
            request,
            tries: Tries::default(),
        })
    }

    /// Whether the BMC may hold a session for it: once an Open Session Request may have gone
    /// out.
    fn bmc_may_hold_session(&self) -> bool {
        self.step != Step::OpenSession || self.tries.sent > 0
    }

    /// Sends our message (again on timeouts) until the BMC answers, and takes the answer: the
    /// established session after RAKP 4; `None` before (our next message is due then).
    async fn step(&mut self) -> Result<Option<Established>, IpmiError> {
        let (sends, wants, name) = match self.step {
            Step::OpenSession => (
                PayloadType::OpenSessionRequest,
                PayloadType::OpenSessionResponse,
                "open session",
            ),
            Step::Rakp2 => (PayloadType::Rakp1, PayloadType::Rakp2, "rakp1"),
            Step::Rakp4 => (PayloadType::Rakp3, PayloadType::Rakp4, "rakp3"),
        };
        let request = &self.request;
        let reply = exchange_from(
            &self.sock,
            self.timing,
            name,
            &mut self.tries,
            || Ok(emit_session_packet(sends, false, 0, 0, request, None)),
            |d| unauth_payload(d, wants),
        )
        .await?;
        let (next, request) = match self.step {
            Step::OpenSession => (Step::Rakp2, self.hs.on_open_session_response(&reply)),
            Step::Rakp2 => {
                let rakp3 = self.hs.on_rakp2(&reply);
                // A RAKP 2 we cannot accept (a wrong password, most often): say so in a RAKP 3,
                // once, so that the BMC frees the session now (IPMI 2.0 §13.22). A BMC error
                // status in RAKP 2 means it freed the session itself.
                let refusal = match &rakp3 {
                    Err(HandshakeError::BadPassword) => Some(STATUS_INVALID_INTEGRITY_CHECK),
                    Err(HandshakeError::Malformed(_)) => Some(STATUS_INVALID_SESSION_ID),
                    _ => None,
                };
                if let Some(status) = refusal {
                    let packet = emit_session_packet(
                        PayloadType::Rakp3,
                        false,
                        0,
                        0,
                        &self.hs.rakp3_refusal(status),
                        None,
                    );
                    let _ = with_timeout(self.timing.reply_timeout, self.sock.send(&packet)).await;
                }
                (Step::Rakp4, rakp3)
            }
            Step::Rakp4 => {
                return self
                    .hs
                    .on_rakp4(&reply)
                    .map(Some)
                    .map_err(IpmiError::Handshake)
            }
        };
        self.request = request.map_err(IpmiError::Handshake)?;
        self.step = next;
        self.tries = Tries::default();
        Ok(None)
    }
}

/// Where an open stands, from the Open Session Request to Set Session Privilege.
#[derive(Debug)]
enum Opening {
    /// The RAKP handshake.
    Handshake(Handshaking),
    /// Active on the BMC (RAKP 4 checked); Set Session Privilege under way.
    Active(Connection),
    /// Handed over (to the caller or to a reaper), or failed: nothing left here to close.
    Settled,
}

impl Opening {
    /// Drives the handshake on from where it stands to an active session. A failure settles
    /// the opening (see [`Connection::open`] for what the BMC is left with then).
    async fn activate(&mut self) -> Result<&mut Connection, IpmiError> {
        while let Opening::Handshake(h) = self {
            match h.step().await {
                Ok(None) => {}
                Ok(Some(est)) => {
                    if let Opening::Handshake(h) = std::mem::replace(self, Opening::Settled) {
                        *self = Opening::Active(Connection::new(h.sock, est, h.timing));
                    }
                }
                Err(e) => {
                    *self = Opening::Settled;
                    return Err(e);
                }
            }
        }
        match self {
            Opening::Active(c) => Ok(c),
            // Only a failure (returned above) or a hand-over settles an opening.
            _ => Err(IpmiError::Malformed("open session")),
        }
    }

    /// Whether the BMC may hold a session for it that we can name (and so close).
    fn bmc_may_hold_session(&self) -> bool {
        match self {
            Opening::Handshake(h) => h.bmc_may_hold_session(),
            Opening::Active(_) => true,
            Opening::Settled => false,
        }
    }

    /// Hands the session over, once active; the opening is settled after.
    fn settle(&mut self) -> Option<Connection> {
        match std::mem::replace(self, Opening::Settled) {
            Opening::Active(c) => Some(c),
            _ => None,
        }
    }
}

/// [`Connection::open`]'s hold on its [`Opening`]. Dropped before the opening settled (the
/// open's future was dropped: its caller was cancelled), it hands the opening to [`reap`].
#[derive(Debug)]
struct Unsettled {
    addr: SocketAddr,
    opening: Opening,
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let opening = std::mem::replace(&mut self.opening, Opening::Settled);
        if opening.bmc_may_hold_session() {
            reap(self.addr, opening);
        }
    }
}

/// BMC addresses with sessions of cancelled opens still being closed: one entry a session.
static REAPING: Mutex<Vec<SocketAddr>> = Mutex::new(Vec::new());

fn reaping() -> MutexGuard<'static, Vec<SocketAddr>> {
    REAPING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A session of a cancelled open to this BMC, being closed ([`REAPING`] lists it meanwhile).
struct Reaping(SocketAddr);

impl Reaping {
    fn register(addr: SocketAddr) -> Reaping {
        reaping().push(addr);
        Reaping(addr)
    }
}

impl Drop for Reaping {
    fn drop(&mut self) {
        let mut r = reaping();
        if let Some(i) = r.iter().position(|a| *a == self.0) {
            r.swap_remove(i);
        }
    }
}

/// A reaper's stack: one handshake step and a Close Session need little.
const REAPER_STACK: usize = 256 * 1024;

/// Carries `opening` (its caller gone) on to an active session and closes that, on a thread
/// of its own. A thread, not a task: the caller's executor may be the one going away (a stop),
/// this is rare (a cancel mid-handshake), and it lives no longer than the opening's
/// [`Timing`] allows (the rest of the handshake, one Close Session try).
fn reap(addr: SocketAddr, mut opening: Opening) {
    let reaping = Reaping::register(addr);
    let spawned = std::thread::Builder::new()
        .name("ipmi-reaper".into())
        .stack_size(REAPER_STACK)
        .spawn(move || {
            let _reaping = reaping;
            async_io::block_on(async {
                match opening.activate().await {
                    Ok(_) => {
                        if let Some(conn) = opening.settle() {
                            conn.close().await;
                            log::debug!("bmc {addr}: closed the session of a cancelled open");
                        }
                    }
                    Err(e) => {
                        log::debug!("bmc {addr}: cancelled open: {e}; no session left to close")
                    }
                }
            });
        });
    if let Err(e) = spawned {
        // The closure, and `reaping` with it, is dropped: nothing is waited for.
        log::warn!(
            "bmc {addr}: the session of a cancelled open is left to the BMC's timeout \
             (no thread to close it: {e})"
        );
    }
}

/// Waits until the sessions that opens to `addr` cancelled so far left on the BMC are closed
/// (see [`Connection::open`]). Each is bounded by its own [`Timing`]: the rest of the
/// handshake and one Close Session try. [`super::IpmiBmc::close`] waits for this.
pub async fn cancelled_opens_closed(addr: SocketAddr) {
    while reaping().contains(&addr) {
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
}

impl Connection {
    /// Opens a session: handshake, then Set Session Privilege to the requested level.
    ///
    /// # Cancellation
    ///
    /// Dropping the future (its caller was cancelled: an operation deadline, a stop) does not
    /// leave the BMC holding a session for nobody; real BMCs have 4 to 16 slots. Once an Open
    /// Session Request may have gone out, the drop hands the socket and the handshake's state
    /// to a short-lived thread that carries the handshake on from where it stood (a reply
    /// already asked for is waited for before asking again, so no second slot is taken) and
    /// closes the session (Close Session). That thread is bounded by `timing`: the rest of the
    /// handshake's tries and one Close Session try. [`super::IpmiBmc::close`] (and
    /// [`cancelled_opens_closed`]) wait for it.
    ///
    /// Left to the BMC's own session timeout, whether cancelled or not, are the sessions we
    /// cannot close:
    /// - one whose Open Session Response never arrived: the BMC may have allocated a session
    ///   we cannot name. That includes the first request's session when only a resent
    ///   request's response arrives (BMCs like ipmi_sim allocate one per request);
    /// - one whose handshake failed partway. An RMCP+ status in RAKP 2 or 4 means the BMC
    ///   dropped the session itself (as the spec asks); a RAKP 2 or 4 we reject (wrong
    ///   password, bad integrity check) leaves us no keys the BMC would take a Close Session
    ///   with; no RAKP 4 after every try leaves us unsure the BMC has a session at all.
    ///
    /// A session that activated but could not be raised to the privilege asked for is closed
    /// before the error is returned.
    pub async fn open(
        addr: SocketAddr,
        suite: CipherSuite,
        creds: Credentials,
        timing: Timing,
    ) -> Result<Connection, IpmiError> {
        let privilege = creds.privilege & 0x0F;
        let mut open = Unsettled {
            addr,
            opening: Opening::Handshake(Handshaking::start(addr, suite, creds, timing)?),
        };
        let conn = open.opening.activate().await?;
        // Sessions start at User level; raise to what was asked for (App, Set Session Privilege).
        let raised = conn
            .request("set session privilege", 0x06, 0x3B, &[privilege])
            .await;
        let conn = open
            .opening
            .settle()
            .ok_or(IpmiError::Malformed("open session"))?;
        match raised {
            Ok(_) => Ok(conn),
            Err(e) => {
                // Closed now rather than left to the BMC's timeout.
                conn.close().await;
                Err(e)
            }
        }
    }

    fn new(sock: Async<UdpSocket>, est: Established, timing: Timing) -> Connection {
        Connection {
            sock,
            payload_sock: None,
            session: Session::new(est),
            timing,
            rq_seq: 0,
        }
    }

    /// Sends one IPMI request and returns the response data (after a zero completion code).
    pub async fn request(
        &mut self,
        what: &'static str,
        netfn: u8,
        cmd: u8,
        data: &[u8],
    ) -> Result<Vec<u8>, IpmiError> {
        let (code, data) = self.request_raw(what, netfn, cmd, data).await?;
        if code != 0 {
            return Err(IpmiError::Completion { what, code });
        }
        Ok(data)
    }

    /// Sends one IPMI request; returns the completion code and response data.
    pub async fn request_raw(
        &mut self,
        what: &'static str,
        netfn: u8,
        cmd: u8,
        data: &[u8],
    ) -> Result<(u8, Vec<u8>), IpmiError> {
        self.request_keeping(what, netfn, cmd, data, None).await
    }

    /// [`Connection::request_raw`] on a session that also carries other payloads (an active
    /// SOL console): payloads of other types that arrive while waiting for the response are
    /// kept in `others`, in order, instead of being dropped.
    pub async fn request_keeping(
        &mut self,
        what: &'static str,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        mut others: Option<&mut Vec<(PayloadType, Vec<u8>)>>,
    ) -> Result<(u8, Vec<u8>), IpmiError> {
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        let seq = self.rq_seq;
        let msg = emit_request(netfn, cmd, seq, data);
        let session = &mut self.session;
        // Each retransmit is a new packet with a new session sequence number; the IPMI rqSeq
        // stays the same so a late reply to the first try still matches.
        let cell = std::cell::RefCell::new(session);
        exchange(
            &self.sock,
            self.timing,
            what,
            || Ok(cell.borrow_mut().seal(PayloadType::Ipmi, &msg, random()?)),
            |d| {
                let (pt, payload) = cell.borrow_mut().open(d).ok()?;
                if pt != PayloadType::Ipmi {
                    if let Some(o) = others.as_deref_mut() {
                        o.push((pt, payload));
                    }
                    return None;
                }
                let r = IpmiResponse::parse(&payload).ok()?;
                (r.rq_seq == seq && r.cmd == cmd && r.netfn == netfn + 1)
                    .then(|| (r.completion, r.data.to_vec()))
            },
        )
        .await
    }

    /// Sends `reqs` with up to `window` of them outstanding at once (see [`super::pipeline`]);
    /// returns each one's completion code and response data, in order. Fails with
    /// [`IpmiError::Timeout`] when one stays unanswered after its retransmits. `window` is
    /// lowered to 1 when the BMC drops a request or answers "node busy": keep it for the next
    /// batch.
    pub async fn request_batch(
        &mut self,
        what: &'static str,
        reqs: &[Request],
        window: &mut usize,
    ) -> Result<Vec<(u8, Vec<u8>)>, IpmiError> {
        use super::pipeline::{Pipeline, NODE_BUSY};
        let mut pipe = Pipeline::new(reqs.len(), *window, self.timing);
        let mut replies: Vec<Option<(u8, Vec<u8>)>> = vec![None; reqs.len()];
        let mut buf = vec![0u8; 2048];
        let outcome = loop {
            let rq_seq = &mut self.rq_seq;
            let due = pipe.poll(Instant::now(), || {
                *rq_seq = (*rq_seq + 1) & 0x3F;
                *rq_seq
            });
            let due = match due {
                Ok(due) => due,
                Err(_) => break Err(IpmiError::Timeout(what)),
            };
            for (i, seq) in due {
                let r = &reqs[i];
                let msg = emit_request(r.netfn, r.cmd, seq, &r.data);
                let d = self.session.seal(PayloadType::Ipmi, &msg, random()?);
                self.sock.send(&d).await.map_err(io_error)?;
            }
            if pipe.is_done() {
                break Ok(());
            }
            let Some(deadline) = pipe.deadline() else {
                continue;
            };
            // Take every reply that arrives before the next deadline, then poll again (a
            // reply frees a place in the window).
            let Some(got) = recv_until(&self.sock, deadline, &mut buf).await else {
                continue;
            };
            let n = got.map_err(io_error)?;
            let Ok((PayloadType::Ipmi, payload)) = self.session.open(&buf[..n]) else {
                continue;
            };
            let Ok(r) = IpmiResponse::parse(&payload) else {
                continue;
            };
            let Some(i) = pipe.in_flight(r.rq_seq) else {
                continue; // a late copy of one already answered
            };
            if r.cmd != reqs[i].cmd || r.netfn != reqs[i].netfn + 1 {
                continue;
            }
            if r.completion == NODE_BUSY && pipe.busy(i) {
                continue;
            }
            replies[i] = Some((r.completion, r.data.to_vec()));
            pipe.answered(i);
        };
        *window = pipe.window();
        outcome?;
        Ok(replies.into_iter().flatten().collect())
    }

    /// Sends payloads other than IPMI messages (SOL) to `port` on the BMC's address from now
    /// on, and takes them from there: the port Activate Payload answered with (IPMI 2.0
    /// §24.1), when it is not the session's. They go from a socket of their own, connected to
    /// that port, so that the BMC's answers (to that socket's address) are let in; IPMI
    /// messages stay on the session's socket. 0 or the session's port undoes it.
    pub fn use_payload_port(&mut self, port: u16) -> Result<(), IpmiError> {
        let peer = self.sock.get_ref().peer_addr().map_err(IpmiError::Io)?;
        if port == 0 || port == peer.port() {
            self.payload_sock = None;
            return Ok(());
        }
        let bind: SocketAddr = if peer.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = Async::<UdpSocket>::bind(bind).map_err(IpmiError::Io)?;
        sock.get_ref()
            .connect(SocketAddr::new(peer.ip(), port))
            .map_err(io_error)?;
        self.payload_sock = Some(sock);
        Ok(())
    }

    /// Sends one payload of any type, sealed (encrypted and authenticated) on the session; a
    /// payload other than an IPMI message to the payload port, if the BMC named one.
    pub async fn send_sealed(&mut self, pt: PayloadType, plain: &[u8]) -> Result<(), IpmiError> {
        let d = self.session.seal(pt, plain, random()?);
        let sock = match &self.payload_sock {
            Some(p) if pt != PayloadType::Ipmi => p,
            _ => &self.sock,
        };
        sock.send(&d).await.map_err(io_error)?;
        Ok(())
    }

    /// The next valid payload of this session before `deadline`, or `None` at the deadline,
    /// from the session's port or the payload port. Datagrams that do not open (other
    /// sessions, bad AuthCode, replays) are skipped.
    pub async fn recv_sealed(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<(PayloadType, Vec<u8>)>, IpmiError> {
        let mut buf = vec![0u8; 2048];
        let mut pbuf = vec![0u8; 2048];
        loop {
            let got = match &self.payload_sock {
                None => recv_until(&self.sock, deadline, &mut buf)
                    .await
                    .map(|r| (r, false)),
                Some(p) => {
                    futures_lite::future::or(
                        async {
                            recv_until(&self.sock, deadline, &mut buf)
                                .await
                                .map(|r| (r, false))
                        },
                        async { recv_until(p, deadline, &mut pbuf).await.map(|r| (r, true)) },
                    )
                    .await
                }
            };
            let Some((got, payload_port)) = got else {
                return Ok(None);
            };
            let n = got.map_err(io_error)?;
            let d = if payload_port { &pbuf[..n] } else { &buf[..n] };
            if let Ok(opened) = self.session.open(d) {
                return Ok(Some(opened));
            }
        }
    }

    /// The session ID the BMC assigned to this session (what it reports as the owner of a
    /// payload activated on it).
    pub fn bmc_session_id(&self) -> u32 {
        self.session.bmc_session_id()
    }

    /// Closes the session on the BMC (frees its session slot). Best effort: one try.
    pub async fn close(mut self) {
        self.timing.retries = 0;
        let id = self.session.bmc_session_id().to_le_bytes();
        let _ = self.request("close session", 0x06, 0x3C, &id).await;
    }
}

#[cfg(test)]
impl Connection {
    /// Tests: a connection on `sock` (connected to a fake BMC) with an established session.
    pub(crate) fn for_test(
        sock: Async<UdpSocket>,
        est: crate::rakp::Established,
        timing: Timing,
    ) -> Connection {
        Connection::new(sock, est, timing)
    }
}

/// The payload of an unauthenticated handshake reply of the expected type.
fn unauth_payload(d: &[u8], want: PayloadType) -> Option<Vec<u8>> {
    let p = SessionPacket::parse(d, 0).ok()?;
    (p.payload_type == want && !p.authenticated).then(|| p.payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SessionKeys;
    use crate::rakp::Established;
    use futures_lite::future::block_on;

    /// A socket standing in for the BMC, and one connected to it for the console.
    fn pair() -> (UdpSocket, Async<UdpSocket>) {
        let bmc = UdpSocket::bind("127.0.0.1:0").unwrap();
        bmc.set_nonblocking(true).unwrap();
        let sock = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
        sock.get_ref().connect(bmc.local_addr().unwrap()).unwrap();
        (bmc, sock)
    }

    fn nothing_sent(bmc: &UdpSocket) -> bool {
        let mut buf = [0u8; 512];
        matches!(bmc.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    fn creds() -> Credentials {
        Credentials {
            username: b"admin".to_vec(),
            password: b"password".to_vec(),
            privilege: 4,
        }
    }

    #[test]
    fn a_failing_random_source_is_an_error_not_a_weak_session() {
        fail_random_after(Some(0));
        let e = random::<16>().unwrap_err();
        fail_random_after(None);
        assert_eq!(e.kind(), "rng_failure");
        assert!(!e.session_suspect());
        assert!(e.to_string().starts_with("random source: "), "{e}");
        assert!(random::<16>().is_ok());
    }

    #[test]
    fn the_handshake_fails_before_sending_without_randomness() {
        // Session ID (draw 0), RAKP random (1), tag (2): each one missing fails the open.
        for draws in 0..3 {
            let bmc = UdpSocket::bind("127.0.0.1:0").unwrap();
            bmc.set_nonblocking(true).unwrap();
            fail_random_after(Some(draws));
            let r = block_on(Connection::open(
                bmc.local_addr().unwrap(),
                CipherSuite::Suite3,
                creds(),
                Timing::default(),
            ));
            fail_random_after(None);
            let e = r.unwrap_err();
            assert_eq!(e.kind(), "rng_failure", "draw {draws}: {e}");
            assert!(nothing_sent(&bmc), "draw {draws}");
        }
    }

    fn keys() -> SessionKeys {
        SessionKeys {
            sik: vec![1; 20],
            k1: vec![2; 20],
            k2: vec![3; 20],
        }
    }

    /// A console's connection on `sock` and the BMC's view of the same session.
    fn established(sock: Async<UdpSocket>, timing: Timing) -> (Connection, Session) {
        let console = Established {
            suite: CipherSuite::Suite3,
            console_session_id: 0xC0,
            bmc_session_id: 0xB0,
            keys: keys(),
        };
        let bmc = Established {
            suite: CipherSuite::Suite3,
            console_session_id: 0xB0,
            bmc_session_id: 0xC0,
            keys: keys(),
        };
        (
            Connection::for_test(sock, console, timing),
            Session::new(bmc),
        )
    }

    use crate::wire::emit_response as response;

    #[test]
    fn a_batch_matches_replies_out_of_order_and_resends_a_lost_one() {
        let (bmc_sock, sock) = pair();
        // Generous for qemu-user, where a slow moment must not look like a lost reply.
        let timing = Timing {
            reply_timeout: Duration::from_millis(400),
            retries: 3,
        };
        let (mut conn, mut bmc) = established(sock, timing);
        // The BMC: request k (its data byte) is answered with [k * 10]; the answer to 0 waits
        // for 1's, and the first copy of 2 is lost. It answers every other copy (a slow run
        // may retransmit more than the lost one) and stays until the client is done, so that
        // no retransmit meets a closed port.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let bmc_thread = std::thread::spawn(move || {
            bmc_sock.set_nonblocking(false).unwrap();
            bmc_sock
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut buf = [0u8; 512];
            let mut held = None;
            let mut seen = Vec::new();
            while done_rx.try_recv().is_err() {
                let Ok((n, from)) = bmc_sock.recv_from(&mut buf) else {
                    continue;
                };
                let (_, req) = bmc.open(&buf[..n]).unwrap();
                let k = req[6];
                seen.push(k);
                if k == 2 && seen.iter().filter(|&&s| s == 2).count() == 1 {
                    continue;
                }
                let out = bmc.seal(PayloadType::Ipmi, &response(&req, 0, &[k * 10]), [7; 16]);
                if k == 0 {
                    held = Some(out);
                    continue;
                }
                bmc_sock.send_to(&out, from).unwrap();
                if k == 1 {
                    if let Some(h) = held.take() {
                        bmc_sock.send_to(&h, from).unwrap();
                    }
                }
            }
            seen
        });
        let reqs: Vec<Request> = (0..6u8)
            .map(|k| Request {
                netfn: 0x0A,
                cmd: 0x23,
                data: vec![k],
            })
            .collect();
        let mut window = 4;
        let replies = block_on(conn.request_batch("get sdr", &reqs, &mut window)).unwrap();
        let want: Vec<(u8, Vec<u8>)> = (0..6u8).map(|k| (0, vec![k * 10])).collect();
        assert_eq!(replies, want);
        assert_eq!(window, 1, "a lost reply: one at a time from now on");
        done_tx.send(()).unwrap();
        let seen = bmc_thread.join().unwrap();
        assert!((0..6u8).all(|k| seen.contains(&k)), "{seen:?}");
        assert!(
            seen.iter().filter(|&&k| k == 2).count() >= 2,
            "the lost one was resent: {seen:?}"
        );
    }

    #[test]
    fn a_batch_request_never_answered_times_out() {
        let (_bmc, sock) = pair();
        let timing = Timing {
            reply_timeout: Duration::from_millis(30),
            retries: 1,
        };
        let (mut conn, _) = established(sock, timing);
        let reqs = vec![
            Request {
                netfn: 0x04,
                cmd: 0x2D,
                data: vec![1],
            };
            3
        ];
        let e = block_on(conn.request_batch("get sensor reading", &reqs, &mut 2)).unwrap_err();
        assert_eq!(e.kind(), "timeout");
        assert_eq!(e.to_string(), "get sensor reading: no reply (timed out)");
    }

    #[test]
    fn no_iv_no_packet() {
        let (bmc, sock) = pair();
        let (mut conn, _) = established(sock, Timing::default());
        fail_random_after(Some(0));
        let r = block_on(conn.request("get device id", 0x06, 0x01, &[]));
        let s = block_on(conn.send_sealed(PayloadType::Sol, b"x"));
        fail_random_after(None);
        assert_eq!(r.unwrap_err().kind(), "rng_failure");
        assert_eq!(s.unwrap_err().kind(), "rng_failure");
        assert!(nothing_sent(&bmc));
    }

    use crate::fake_bmc::{admin, FakeBmc, Got, Phase};

    /// Long enough that nothing is resent while the fake holds a reply.
    fn patient() -> Timing {
        Timing {
            reply_timeout: Duration::from_secs(2),
            retries: 1,
        }
    }

    /// Runs `Connection::open` against `bmc` until the fake has been sent a `got`, then drops
    /// it there: the caller was cancelled.
    fn cancel_open_at(bmc: &FakeBmc, got: Got, timing: Timing) {
        let open = Connection::open(bmc.addr, CipherSuite::Suite3, admin(), timing);
        let done = block_on(futures_lite::future::or(
            async { Some(open.await) },
            async {
                bmc.sent(got).await;
                None
            },
        ));
        assert!(done.is_none(), "the open ended before the cancel: {done:?}");
    }

    /// Waits until the sessions of opens cancelled on `bmc` are closed, at most 5 s.
    fn settled(bmc: &FakeBmc) {
        let closed = block_on(with_timeout(
            Duration::from_secs(5),
            cancelled_opens_closed(bmc.addr),
        ));
        assert!(closed.is_some(), "still closing: {:?}", bmc.got());
    }

    #[test]
    fn an_open_cancelled_at_any_step_leaves_no_session_on_the_bmc() {
        // The cancel lands while the console waits for the Open Session Response (the BMC has
        // allocated the session), RAKP 2, RAKP 4, or the answer to Set Session Privilege (the
        // session is active); the BMC's reply goes out after it.
        for step in [Got::OpenSession, Got::Rakp1, Got::Rakp3, Got::SetPrivilege] {
            let bmc = FakeBmc::start();
            bmc.hold(step);
            cancel_open_at(&bmc, step, patient());
            bmc.release();
            settled(&bmc);
            let seen = bmc.got();
            assert_eq!(bmc.sessions(), [], "{step:?}: {seen:?}");
            assert_eq!(bmc.activated(), 1, "{step:?}: {seen:?}");
            assert_eq!(bmc.closed(), 1, "{step:?}: {seen:?}");
            assert_eq!(bmc.count(Got::OpenSession), 1, "{step:?}: {seen:?}");
        }
    }

    #[test]
    fn a_cancelled_open_whose_reply_was_lost_resends_its_message() {
        let bmc = FakeBmc::start();
        bmc.lose(Got::Rakp1);
        let timing = Timing {
            reply_timeout: Duration::from_millis(100),
            retries: 2,
        };
        cancel_open_at(&bmc, Got::Rakp1, timing);
        settled(&bmc);
        let seen = bmc.got();
        assert_eq!(bmc.count(Got::Rakp1), 2, "{seen:?}");
        assert_eq!(bmc.count(Got::OpenSession), 1, "{seen:?}");
        assert_eq!((bmc.activated(), bmc.closed()), (1, 1), "{seen:?}");
        assert_eq!(bmc.sessions(), [], "{seen:?}");
    }

    #[test]
    fn a_lost_open_session_response_leaves_the_session_nobody_can_name() {
        // The resent Open Session Request gets a session of its own (as from ipmi_sim): that
        // one is closed; the first stays half-open until the BMC times it out.
        let bmc = FakeBmc::start();
        bmc.lose(Got::OpenSession);
        let timing = Timing {
            reply_timeout: Duration::from_millis(100),
            retries: 2,
        };
        cancel_open_at(&bmc, Got::OpenSession, timing);
        settled(&bmc);
        let seen = bmc.got();
        assert_eq!(bmc.count(Got::OpenSession), 2, "{seen:?}");
        assert_eq!((bmc.activated(), bmc.closed()), (1, 1), "{seen:?}");
        assert_eq!(bmc.sessions(), [Phase::Opened], "{seen:?}");
    }

    #[test]
    fn an_open_dropped_before_it_ran_sends_nothing() {
        let bmc = FakeBmc::start();
        drop(Connection::open(
            bmc.addr,
            CipherSuite::Suite3,
            admin(),
            patient(),
        ));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(bmc.got(), []);
    }

    #[test]
    fn an_open_that_returned_leaves_its_session_to_the_caller() {
        let bmc = FakeBmc::start();
        let conn = block_on(Connection::open(
            bmc.addr,
            CipherSuite::Suite3,
            admin(),
            patient(),
        ))
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(bmc.sessions(), [Phase::Active]);
        assert_eq!(bmc.closed(), 0);
        block_on(conn.close());
        assert_eq!(bmc.sessions(), []);
        assert_eq!(bmc.got().last(), Some(&Got::CloseSession));
    }

    #[test]
    fn a_session_that_cannot_be_raised_to_its_privilege_is_closed() {
        let bmc = FakeBmc::start();
        bmc.lose(Got::SetPrivilege);
        let timing = Timing {
            reply_timeout: Duration::from_millis(100),
            retries: 0,
        };
        let e = block_on(Connection::open(
            bmc.addr,
            CipherSuite::Suite3,
            admin(),
            timing,
        ))
        .unwrap_err();
        assert_eq!(e.to_string(), "set session privilege: no reply (timed out)");
        assert_eq!(bmc.sessions(), [], "{:?}", bmc.got());
        assert_eq!(bmc.closed(), 1);
    }
}
