//! Serial over LAN (RMCP+ payload type 1) on the agent's own session layer: the SOL packet
//! codec (pure) and a console on a dedicated session — Activate Payload, character data with
//! sequence numbers, acknowledgements and retransmits, Deactivate Payload.
//!
//! This is the foundation the console proxy (WebSocket viewers, takeover, reconnect, byte
//! metrics) builds on.
//!
//! # Sending characters (IPMI 2.0 §15.9)
//!
//! Characters go out in packets of at most the BMC's inbound size, each with the next
//! sequence number (1..=15), and the BMC acknowledges each packet with the number of
//! characters it accepted:
//!
//! - **No answer**: the same packet (same sequence number, so a BMC that got it but whose
//!   acknowledgement was lost does not take it twice) is resent after the reply timeout;
//!   three sends without an answer are [`IpmiError::Timeout`] (`timeout`).
//! - **Partial acknowledgement** (fewer characters accepted than sent): the rest goes out in a
//!   new packet with a new sequence number, as ipmitool does.
//! - **NACK**, or an acknowledgement accepting nothing: the BMC's buffer is full (the host's
//!   serial port is flow-controlled). The unaccepted characters are resent in a new packet
//!   after a pause of [`NACK_FIRST_BACKOFF`] (50 ms), doubling up to [`NACK_MAX_BACKOFF`]
//!   (500 ms), or earlier when the BMC says it has room again. These answers do not use up
//!   the three sends allowed for silence. A BMC that accepts no character for
//!   [`FLOW_CONTROL_LIMIT`] (30 s) ends the write with [`SolError::FlowControl`]
//!   (`sol_flow_control`).
//!
//! [`SolConsole::write`] reports how many characters the BMC accepted, also when it fails
//! part way, so the byte counters count exactly what reached the BMC.
//!
//! # Receiving
//!
//! Every packet from the BMC with a sequence number is acknowledged, character data or not (a
//! status-only packet left unacknowledged would be resent by the BMC); a resent packet is
//! acknowledged again but its characters are kept once. A packet with the "SOL deactivating"
//! status ends the console with [`SolError::Deactivated`] (`sol_deactivated`), once the
//! characters received before it have been read.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::client::{Connection, IpmiError};
use super::wire::{PayloadType, WireError};

/// Deactivate-then-activate rounds a forced activation tries before giving up.
const FORCE_ROUNDS: u32 = 3;

/// Operation bits a console sends (IPMI 2.0 table 15-2).
pub mod op {
    /// The packet refuses (NACKs) the acknowledged one: resend later.
    pub const NACK: u8 = 0x40;
    /// Generate a serial BREAK.
    pub const BREAK: u8 = 0x10;
}

/// BMC status bits (IPMI 2.0 table 15-3).
pub mod status {
    /// The BMC refuses the acknowledged packet for now.
    pub const NACK: u8 = 0x40;
    /// The BMC is deactivating SOL.
    pub const DEACTIVATING: u8 = 0x10;
}

/// Sends of one packet without any answer before the write fails with a timeout.
const SEND_TRIES: u32 = 3;
/// The first pause before resending characters the BMC refused (NACK, or none accepted).
pub const NACK_FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The pause doubles with every refusal in a row, up to this.
pub const NACK_MAX_BACKOFF: Duration = Duration::from_millis(500);
/// A write fails with [`SolError::FlowControl`] when the BMC has accepted no character for
/// this long: the host has not read its serial port for that long. (A write that keeps
/// progressing, however slowly, e.g. a paste into a 9600-baud console, goes on.)
pub const FLOW_CONTROL_LIMIT: Duration = Duration::from_secs(30);

/// One SOL packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolPacket {
    /// Packet sequence number, 1..=15; 0 for an acknowledgement-only packet.
    pub seq: u8,
    /// Sequence number acknowledged (or refused), 0 for none.
    pub ack: u8,
    /// Characters accepted from the acknowledged packet.
    pub accepted: u8,
    /// Operation (console to BMC) or status (BMC to console) bits.
    pub flags: u8,
    /// Character data.
    pub data: Vec<u8>,
}

impl SolPacket {
    /// Parses a SOL payload (already decrypted).
    pub fn parse(p: &[u8]) -> Result<SolPacket, WireError> {
        if p.len() < 4 {
            return Err(WireError::Truncated);
        }
        Ok(SolPacket {
            seq: p[0] & 0x0F,
            ack: p[1] & 0x0F,
            accepted: p[2],
            flags: p[3],
            data: p[4..].to_vec(),
        })
    }

    /// The payload bytes.
    pub fn emit(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(4 + self.data.len());
        p.extend_from_slice(&[self.seq & 0x0F, self.ack & 0x0F, self.accepted, self.flags]);
        p.extend_from_slice(&self.data);
        p
    }
}

/// Sizes and port the BMC gave at activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activation {
    /// Largest payload the BMC accepts from us.
    pub inbound_size: u16,
    /// Largest payload the BMC sends.
    pub outbound_size: u16,
    /// UDP port for the payload (usually the session's).
    pub port: u16,
}

/// Why an active console stopped working; [`SolError::kind`] is the metric's `error_type`.
#[derive(Debug)]
pub enum SolError {
    /// The session failed: no answer, a socket error, ….
    Ipmi(IpmiError),
    /// The BMC accepted no character for [`FLOW_CONTROL_LIMIT`] (it kept answering NACK).
    FlowControl,
    /// The BMC deactivated SOL (a packet with the "SOL deactivating" status).
    Deactivated,
}

impl SolError {
    /// A bounded label value for metrics: the IPMI error kinds, `sol_flow_control`,
    /// `sol_deactivated`.
    pub fn kind(&self) -> &'static str {
        match self {
            SolError::Ipmi(e) => e.kind(),
            SolError::FlowControl => "sol_flow_control",
            SolError::Deactivated => "sol_deactivated",
        }
    }
}

impl From<IpmiError> for SolError {
    fn from(e: IpmiError) -> SolError {
        SolError::Ipmi(e)
    }
}

impl std::fmt::Display for SolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SolError::Ipmi(e) => e.fmt(f),
            SolError::FlowControl => write!(
                f,
                "sol data: the BMC accepted no character for {} s (flow control)",
                FLOW_CONTROL_LIMIT.as_secs()
            ),
            SolError::Deactivated => f.write_str("sol: the BMC deactivated SOL"),
        }
    }
}

impl std::error::Error for SolError {}

/// A [`SolConsole::write`] that failed, maybe part way.
#[derive(Debug)]
pub struct WriteError {
    /// Characters the BMC accepted before the failure.
    pub accepted: usize,
    /// The failure.
    pub error: SolError,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} characters accepted)", self.error, self.accepted)
    }
}

impl std::error::Error for WriteError {}

/// The session a console runs on: a [`Connection`] (or, in tests, a fake BMC).
// The consoles run on a single-threaded executor: the futures need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// [`Connection::request_keeping`].
    async fn request_keeping(
        &mut self,
        what: &'static str,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        others: Option<&mut Vec<(PayloadType, Vec<u8>)>>,
    ) -> Result<(u8, Vec<u8>), IpmiError>;
    /// [`Connection::send_sealed`].
    async fn send_sealed(&mut self, pt: PayloadType, plain: &[u8]) -> Result<(), IpmiError>;
    /// [`Connection::recv_sealed`].
    async fn recv_sealed(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<(PayloadType, Vec<u8>)>, IpmiError>;
    /// [`Connection::bmc_session_id`].
    fn bmc_session_id(&self) -> u32;
    /// [`Connection::use_payload_port`].
    fn use_payload_port(&mut self, port: u16) -> Result<(), IpmiError>;
    /// [`Connection::close`].
    async fn close(self);
}

impl Transport for Connection {
    async fn request_keeping(
        &mut self,
        what: &'static str,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        others: Option<&mut Vec<(PayloadType, Vec<u8>)>>,
    ) -> Result<(u8, Vec<u8>), IpmiError> {
        Connection::request_keeping(self, what, netfn, cmd, data, others).await
    }

    async fn send_sealed(&mut self, pt: PayloadType, plain: &[u8]) -> Result<(), IpmiError> {
        Connection::send_sealed(self, pt, plain).await
    }

    async fn recv_sealed(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<(PayloadType, Vec<u8>)>, IpmiError> {
        Connection::recv_sealed(self, deadline).await
    }

    fn bmc_session_id(&self) -> u32 {
        Connection::bmc_session_id(self)
    }

    fn use_payload_port(&mut self, port: u16) -> Result<(), IpmiError> {
        Connection::use_payload_port(self, port)
    }

    async fn close(self) {
        Connection::close(self).await
    }
}

/// Sends one IPMI request on `conn`; the response data after a zero completion code.
async fn request<C: Transport>(
    conn: &mut C,
    what: &'static str,
    cmd: u8,
    data: &[u8],
) -> Result<Vec<u8>, IpmiError> {
    let (code, data) = conn
        .request_keeping(what, NETFN_APP, cmd, data, None)
        .await?;
    if code != 0 {
        return Err(IpmiError::Completion { what, code });
    }
    Ok(data)
}

/// Pauses before resending refused characters; see the module docs.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    max: Duration,
    limit: Duration,
}

const BACKOFF: Backoff = Backoff {
    first: NACK_FIRST_BACKOFF,
    max: NACK_MAX_BACKOFF,
    limit: FLOW_CONTROL_LIMIT,
};

/// An active SOL console on its own RMCP+ session.
#[derive(Debug)]
pub struct SolConsole<C: Transport = Connection> {
    conn: C,
    instance: u8,
    activation: Activation,
    next_seq: u8,
    last_in_seq: u8,
    received: VecDeque<Vec<u8>>,
    reply_timeout: Duration,
    backoff: Backoff,
    // The BMC said it is deactivating SOL.
    deactivated: bool,
}

const NETFN_APP: u8 = 0x06;
const CMD_ACTIVATE_PAYLOAD: u8 = 0x48;
const CMD_DEACTIVATE_PAYLOAD: u8 = 0x49;
const CMD_GET_PAYLOAD_INSTANCE_INFO: u8 = 0x4B;

/// Completion code of Activate Payload when the instance is already active (IPMI 2.0 24.1):
/// another session holds the console.
pub const PAYLOAD_ALREADY_ACTIVE: u8 = 0x80;

/// Whether `e` says SOL is held by another session (Activate Payload refused with
/// [`PAYLOAD_ALREADY_ACTIVE`]).
pub fn in_use(e: &IpmiError) -> bool {
    matches!(
        e,
        IpmiError::Completion {
            what: "activate payload",
            code: PAYLOAD_ALREADY_ACTIVE
        }
    )
}

impl<C: Transport> SolConsole<C> {
    /// Activates SOL instance `instance` on `conn` (a session of its own), encrypted and
    /// authenticated. Fails with [`in_use`] when another session holds it.
    pub async fn activate(
        conn: C,
        instance: u8,
        reply_timeout: Duration,
    ) -> Result<SolConsole<C>, IpmiError> {
        SolConsole::activate_with(conn, instance, reply_timeout, false).await
    }

    /// [`SolConsole::activate`]; with `force`, an instance held by another session (another
    /// tool, or a session of ours the BMC still thinks alive) is deactivated first and then
    /// activated for us. The session is closed when activation fails.
    pub async fn activate_with(
        mut conn: C,
        instance: u8,
        reply_timeout: Duration,
        force: bool,
    ) -> Result<SolConsole<C>, IpmiError> {
        let mut r = activate_payload(&mut conn, instance).await;
        // Forcing: deactivate the holder's payload, then activate ours. A holder that
        // reconnects by itself (another agent) can slip in between: try a few rounds.
        let mut rounds = if force { FORCE_ROUNDS } else { 0 };
        while rounds > 0 && r.as_ref().is_err_and(in_use) {
            rounds -= 1;
            let data = [0x01, instance, 0, 0, 0, 0];
            r = match request(
                &mut conn,
                "deactivate payload",
                CMD_DEACTIVATE_PAYLOAD,
                &data,
            )
            .await
            {
                Ok(_) => activate_payload(&mut conn, instance).await,
                Err(e) => Err(e),
            };
        }
        let checked = r.and_then(|r| {
            if r.len() >= 10 {
                Ok(r)
            } else {
                Err(IpmiError::Malformed("activate payload"))
            }
        });
        let r = match checked {
            Ok(r) => r,
            Err(e) => {
                // Frees the BMC's session slot: a console retrying activation must not use
                // them up.
                conn.close().await;
                return Err(e);
            }
        };
        let le = |i: usize| u16::from_le_bytes([r[i], r[i + 1]]);
        let activation = Activation {
            inbound_size: le(4),
            outbound_size: le(6),
            port: le(8),
        };
        // The BMC may serve the payload on a port other than the session's: SOL packets go
        // there (on the BMC's address), IPMI requests stay on the session's port.
        if let Err(e) = conn.use_payload_port(activation.port) {
            let _ = deactivate_payload(&mut conn, instance).await;
            conn.close().await;
            return Err(e);
        }
        Ok(SolConsole::new(conn, instance, activation, reply_timeout))
    }

    fn new(
        conn: C,
        instance: u8,
        activation: Activation,
        reply_timeout: Duration,
    ) -> SolConsole<C> {
        SolConsole {
            conn,
            instance,
            activation,
            next_seq: 1,
            last_in_seq: 0,
            received: VecDeque::new(),
            reply_timeout,
            backoff: BACKOFF,
            deactivated: false,
        }
    }

    /// Whether the session still holds the console: one request on it (Get Payload Instance
    /// Info), which also keeps the session from timing out on the BMC. `Ok(false)` when the
    /// BMC names another session as the holder (a forced takeover by another tool). A BMC
    /// that refuses the command (completion code) still answered: the session lives.
    /// Console data arriving meanwhile is acknowledged and kept for [`SolConsole::read`];
    /// [`SolError::Deactivated`] once the BMC said it deactivated SOL and that data is read.
    pub async fn check(&mut self) -> Result<bool, SolError> {
        self.ended()?;
        let mut others = Vec::new();
        let r = self
            .conn
            .request_keeping(
                "get payload instance info",
                NETFN_APP,
                CMD_GET_PAYLOAD_INSTANCE_INFO,
                &[0x01, self.instance],
                Some(&mut others),
            )
            .await;
        for (pt, payload) in others {
            if pt == PayloadType::Sol {
                self.take(&payload).await?;
            }
        }
        let (code, data) = r?;
        if code != 0 || data.len() < 4 {
            return Ok(true);
        }
        let holder = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        Ok(holder == self.conn.bmc_session_id())
    }

    /// What the BMC said at activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// [`SolError::Deactivated`] once the BMC deactivated SOL and the characters it sent
    /// before have been read.
    fn ended(&self) -> Result<(), SolError> {
        if self.deactivated && self.received.is_empty() {
            return Err(SolError::Deactivated);
        }
        Ok(())
    }

    async fn ack(&mut self, pkt: &SolPacket) -> Result<(), IpmiError> {
        let ack = SolPacket {
            seq: 0,
            ack: pkt.seq,
            accepted: pkt.data.len().min(255) as u8,
            flags: 0,
            data: Vec::new(),
        };
        self.conn.send_sealed(PayloadType::Sol, &ack.emit()).await
    }

    /// Takes one incoming SOL packet: acknowledges every packet with a sequence number
    /// (character data or only a status change), keeps new data (a resent packet is
    /// acknowledged again but not kept twice), notes a deactivating BMC. Returns the packet.
    async fn take(&mut self, payload: &[u8]) -> Result<Option<SolPacket>, IpmiError> {
        let Ok(pkt) = SolPacket::parse(payload) else {
            return Ok(None);
        };
        if pkt.seq != 0 {
            self.ack(&pkt).await?;
            if pkt.seq != self.last_in_seq {
                self.last_in_seq = pkt.seq;
                if !pkt.data.is_empty() {
                    self.received.push_back(pkt.data.clone());
                }
            }
        }
        if pkt.flags & status::DEACTIVATING != 0 {
            self.deactivated = true;
        }
        Ok(Some(pkt))
    }

    /// Sends characters to the host; see the module docs for retransmits, partial
    /// acknowledgements and NACKs. Returns how many the BMC accepted: all of them, or, in the
    /// error, those it accepted before the write failed.
    pub async fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        let mut accepted = 0;
        match self.deliver(data, 0, &mut accepted).await {
            Ok(()) => Ok(accepted),
            Err(error) => Err(WriteError { accepted, error }),
        }
    }

    /// Sends a serial BREAK to the host.
    pub async fn send_break(&mut self) -> Result<(), SolError> {
        self.deliver(&[], op::BREAK, &mut 0).await
    }

    /// Sends `data` (none for a BREAK), adding the characters the BMC accepts to `accepted`.
    async fn deliver(
        &mut self,
        mut data: &[u8],
        flags: u8,
        accepted: &mut usize,
    ) -> Result<(), SolError> {
        if self.deactivated {
            return Err(SolError::Deactivated);
        }
        let chunk = usize::from(self.activation.inbound_size.max(5))
            .saturating_sub(4)
            .clamp(1, 255);
        let mut backoff = self.backoff.first;
        let mut progress = Instant::now();
        loop {
            let part = &data[..data.len().min(chunk)];
            let (seq, reply) = self.send_packet(part, flags).await?;
            let took = usize::from(reply.accepted).min(part.len());
            let refused = reply.flags & status::NACK != 0;
            *accepted += took;
            data = &data[took..];
            if self.deactivated {
                return Err(SolError::Deactivated);
            }
            if took > 0 {
                progress = Instant::now();
                backoff = self.backoff.first;
            }
            // A packet without characters (a BREAK) is done when not refused; characters
            // when all are accepted (a NACK then only says the buffer is now full).
            let done = if part.is_empty() {
                !refused
            } else {
                took == part.len()
            };
            if done && data.is_empty() {
                return Ok(());
            }
            if refused || took == 0 {
                if progress.elapsed() >= self.backoff.limit {
                    return Err(SolError::FlowControl);
                }
                self.pause(backoff, seq).await?;
                backoff = (backoff * 2).min(self.backoff.max);
            }
        }
    }

    /// Sends one packet with the next sequence number, resent while unanswered; returns its
    /// sequence number and the BMC's acknowledgement (or NACK) of it.
    async fn send_packet(&mut self, data: &[u8], flags: u8) -> Result<(u8, SolPacket), SolError> {
        let seq = self.next_seq;
        self.next_seq = if seq >= 15 { 1 } else { seq + 1 };
        let pkt = SolPacket {
            seq,
            ack: 0,
            accepted: 0,
            flags,
            data: data.to_vec(),
        }
        .emit();
        for _ in 0..SEND_TRIES {
            self.conn.send_sealed(PayloadType::Sol, &pkt).await?;
            let deadline = Instant::now() + self.reply_timeout;
            while let Some((pt, payload)) = self.conn.recv_sealed(deadline).await? {
                if pt != PayloadType::Sol {
                    continue;
                }
                if let Some(reply) = self.take(&payload).await? {
                    if reply.ack == seq {
                        return Ok((seq, reply));
                    }
                }
            }
        }
        Err(IpmiError::Timeout("sol data").into())
    }

    /// Waits `delay` before resending refused characters, taking console output meanwhile;
    /// ends early when the BMC acknowledges packet `seq` again without a NACK (it has room
    /// again, as ipmi_sim says once its buffer drains).
    async fn pause(&mut self, delay: Duration, seq: u8) -> Result<(), SolError> {
        let deadline = Instant::now() + delay;
        while let Some((pt, payload)) = self.conn.recv_sealed(deadline).await? {
            if pt != PayloadType::Sol {
                continue;
            }
            if let Some(p) = self.take(&payload).await? {
                if p.ack == seq && p.flags & status::NACK == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Characters from the host: what has arrived, or what arrives within `wait`.
    pub async fn read(&mut self, wait: Duration) -> Result<Vec<u8>, SolError> {
        if let Some(d) = self.received.pop_front() {
            return Ok(d);
        }
        self.ended()?;
        let deadline = Instant::now() + wait;
        while let Some((pt, payload)) = self.conn.recv_sealed(deadline).await? {
            if pt == PayloadType::Sol {
                self.take(&payload).await?;
                if let Some(d) = self.received.pop_front() {
                    return Ok(d);
                }
                self.ended()?;
            }
        }
        Ok(Vec::new())
    }

    /// Deactivates SOL and closes the session.
    pub async fn deactivate(mut self) {
        let _ = deactivate_payload(&mut self.conn, self.instance).await;
        self.conn.close().await;
    }

    /// Closes the session without deactivating SOL: for a console whose instance another
    /// session has taken (deactivating would throw that one off).
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// Sends Deactivate Payload for SOL `instance`.
async fn deactivate_payload<C: Transport>(conn: &mut C, instance: u8) -> Result<(), IpmiError> {
    let data = [0x01, instance, 0, 0, 0, 0];
    request(conn, "deactivate payload", CMD_DEACTIVATE_PAYLOAD, &data)
        .await
        .map(drop)
}

/// Sends Activate Payload for SOL `instance`; returns the response data.
async fn activate_payload<C: Transport>(conn: &mut C, instance: u8) -> Result<Vec<u8>, IpmiError> {
    // Aux data: encryption and authentication on, serial alerts deferred while active.
    let data = [0x01, instance, 0xC4, 0, 0, 0];
    request(conn, "activate payload", CMD_ACTIVATE_PAYLOAD, &data).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    type Script = Box<dyn FnMut(&SolPacket) -> Vec<SolPacket>>;

    /// A BMC in-process: what the console sends is recorded, and each SOL packet is answered
    /// with what `script` returns for it.
    struct FakeBmc {
        sent: Vec<(Instant, SolPacket)>,
        inbox: VecDeque<SolPacket>,
        script: Script,
    }

    impl Transport for FakeBmc {
        async fn request_keeping(
            &mut self,
            _what: &'static str,
            _netfn: u8,
            _cmd: u8,
            _data: &[u8],
            others: Option<&mut Vec<(PayloadType, Vec<u8>)>>,
        ) -> Result<(u8, Vec<u8>), IpmiError> {
            if let Some(o) = others {
                o.extend(self.inbox.drain(..).map(|p| (PayloadType::Sol, p.emit())));
            }
            Ok((0, self.bmc_session_id().to_le_bytes().to_vec()))
        }

        async fn send_sealed(&mut self, pt: PayloadType, plain: &[u8]) -> Result<(), IpmiError> {
            assert_eq!(pt, PayloadType::Sol);
            let p = SolPacket::parse(plain).unwrap();
            self.inbox.extend((self.script)(&p));
            self.sent.push((Instant::now(), p));
            Ok(())
        }

        async fn recv_sealed(
            &mut self,
            deadline: Instant,
        ) -> Result<Option<(PayloadType, Vec<u8>)>, IpmiError> {
            if let Some(p) = self.inbox.pop_front() {
                return Ok(Some((PayloadType::Sol, p.emit())));
            }
            async_io::Timer::at(deadline).await;
            Ok(None)
        }

        fn bmc_session_id(&self) -> u32 {
            0xB0
        }

        fn use_payload_port(&mut self, _port: u16) -> Result<(), IpmiError> {
            Ok(())
        }

        async fn close(self) {}
    }

    impl FakeBmc {
        /// The data packets (not acknowledgements) the console sent.
        fn data_packets(&self) -> Vec<&SolPacket> {
            self.sent
                .iter()
                .map(|(_, p)| p)
                .filter(|p| p.seq != 0)
                .collect()
        }

        /// The gaps between the console's data packets.
        fn gaps(&self) -> Vec<Duration> {
            let at: Vec<Instant> = self
                .sent
                .iter()
                .filter(|(_, p)| p.seq != 0)
                .map(|(t, _)| *t)
                .collect();
            at.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    /// A console on a fake BMC taking `inbound` bytes per payload (4 of them the header);
    /// short timeouts and backoff.
    fn console(inbound: u16, script: Script) -> SolConsole<FakeBmc> {
        let bmc = FakeBmc {
            sent: Vec::new(),
            inbox: VecDeque::new(),
            script,
        };
        let activation = Activation {
            inbound_size: inbound,
            outbound_size: inbound,
            port: 623,
        };
        let mut c = SolConsole::new(bmc, 1, activation, Duration::from_millis(20));
        c.backoff = Backoff {
            first: Duration::from_millis(5),
            max: Duration::from_millis(20),
            limit: Duration::from_millis(300),
        };
        c
    }

    /// The BMC's answer to packet `seq`.
    fn answer(seq: u8, accepted: usize, flags: u8) -> SolPacket {
        SolPacket {
            seq: 0,
            ack: seq,
            accepted: accepted as u8,
            flags,
            data: Vec::new(),
        }
    }

    /// A write's accepted count and outcome.
    fn written(r: Result<usize, WriteError>) -> (usize, Result<(), SolError>) {
        match r {
            Ok(n) => (n, Ok(())),
            Err(e) => (e.accepted, Err(e.error)),
        }
    }

    fn text(n: usize) -> Vec<u8> {
        (0..n).map(|i| b'a' + (i % 26) as u8).collect()
    }

    #[test]
    fn a_partial_acknowledgement_sends_the_rest_in_a_new_packet() {
        let mut first = true;
        let mut c = console(
            204,
            Box::new(move |p| {
                if p.seq == 0 {
                    return vec![];
                }
                let took = if std::mem::take(&mut first) {
                    50
                } else {
                    p.data.len()
                };
                vec![answer(p.seq, took, 0)]
            }),
        );
        let data = text(200);
        let (accepted, r) = written(block_on(c.write(&data)));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(accepted, 200);
        let sent = c.conn.data_packets();
        assert_eq!(sent.len(), 2);
        assert_eq!((sent[0].seq, &sent[0].data[..]), (1, &data[..]));
        // The 150 characters the BMC did not take, once, under a new sequence number.
        assert_eq!((sent[1].seq, &sent[1].data[..]), (2, &data[50..]));
    }

    #[test]
    fn a_write_failing_part_way_counts_what_the_bmc_accepted() {
        // 28 characters a packet; the BMC takes the first packet, 10 of the second, then
        // goes silent.
        let mut answers = vec![Some(28), Some(10)].into_iter();
        let mut c = console(
            32,
            Box::new(move |p| match (p.seq, answers.next().flatten()) {
                (0, _) | (_, None) => vec![],
                (seq, Some(took)) => vec![answer(seq, took, 0)],
            }),
        );
        let (accepted, r) = written(block_on(c.write(&text(100))));
        assert_eq!(accepted, 38);
        assert_eq!(r.unwrap_err().kind(), "timeout");
        // The unanswered packet (the 18 characters left of the second) was sent three
        // times, under one sequence number.
        let sent = c.conn.data_packets();
        let seqs: Vec<u8> = sent.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 3, 3]);
        assert_eq!(sent[4].data, text(100)[38..66]);
    }

    #[test]
    fn refusals_back_off_and_do_not_use_up_the_retries() {
        // Five refusals in a row (NACKs, and an acknowledgement accepting nothing), then the
        // BMC takes everything.
        let mut answers = vec![
            (0, status::NACK),
            (0, status::NACK),
            (0, 0),
            (0, status::NACK),
            (0, status::NACK),
        ]
        .into_iter();
        let mut c = console(
            204,
            Box::new(move |p| {
                if p.seq == 0 {
                    return vec![];
                }
                let (took, flags) = answers.next().unwrap_or((p.data.len(), 0));
                vec![answer(p.seq, took, flags)]
            }),
        );
        let data = text(20);
        let (accepted, r) = written(block_on(c.write(&data)));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(accepted, 20);
        let sent = c.conn.data_packets();
        assert_eq!(sent.len(), 6);
        for (i, p) in sent.iter().enumerate() {
            assert_eq!(p.seq, i as u8 + 1, "a new packet each time");
            assert_eq!(p.data, data);
        }
        // 5 ms, doubling, capped at 20 ms.
        let ms = [5, 10, 20, 20, 20];
        for (gap, ms) in c.conn.gaps().into_iter().zip(ms) {
            assert!(gap >= Duration::from_millis(ms), "{gap:?} < {ms} ms");
        }
    }

    #[test]
    fn a_bmc_with_a_small_buffer_gets_every_character_once() {
        // Like ipmi_sim: a 32-byte buffer the host drains by 7 bytes per packet received,
        // characters accepted as far as they fit, the NACK bit set while the buffer is full,
        // a resent packet (same sequence number) acknowledged again but not taken twice.
        #[derive(Default)]
        struct Bmc {
            buffer: Vec<u8>,
            host: Vec<u8>,
            last: (u8, usize),
            nacks: usize,
        }
        let bmc = std::rc::Rc::new(std::cell::RefCell::new(Bmc::default()));
        let state = bmc.clone();
        let mut c = console(
            32,
            Box::new(move |p| {
                let bmc = &mut *state.borrow_mut();
                let n = bmc.buffer.len().min(7);
                bmc.host.extend(bmc.buffer.drain(..n));
                if p.seq == 0 {
                    return vec![];
                }
                if p.seq != bmc.last.0 {
                    let took = p.data.len().min(32 - bmc.buffer.len());
                    bmc.buffer.extend_from_slice(&p.data[..took]);
                    bmc.last = (p.seq, took);
                }
                let full = if bmc.buffer.len() == 32 {
                    bmc.nacks += 1;
                    status::NACK
                } else {
                    0
                };
                vec![answer(p.seq, bmc.last.1, full)]
            }),
        );
        let data = text(1000);
        let (accepted, r) = written(block_on(c.write(&data)));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(accepted, 1000);
        let bmc = bmc.borrow();
        assert!(bmc.nacks > 0, "the buffer filled up");
        assert_eq!([&bmc.host[..], &bmc.buffer[..]].concat(), data);
    }

    #[test]
    fn a_bmc_with_room_again_ends_the_pause() {
        // ipmi_sim acknowledges the refused packet again, without the NACK, once its buffer
        // drained.
        let mut nack = true;
        let mut c = console(
            204,
            Box::new(move |p| match p.seq {
                0 => vec![],
                seq if std::mem::take(&mut nack) => {
                    vec![answer(seq, 0, status::NACK), answer(seq, 0, 0)]
                }
                seq => vec![answer(seq, p.data.len(), 0)],
            }),
        );
        c.backoff.first = Duration::from_secs(5);
        let started = Instant::now();
        let (accepted, r) = written(block_on(c.write(b"go")));
        assert!(r.is_ok() && accepted == 2, "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(c.conn.data_packets().len(), 2);
    }

    #[test]
    fn a_bmc_refusing_for_too_long_is_flow_control() {
        let mut c = console(
            204,
            Box::new(|p| match p.seq {
                0 => vec![],
                seq => vec![answer(seq, 0, status::NACK)],
            }),
        );
        let started = Instant::now();
        let (accepted, r) = written(block_on(c.write(b"stuck")));
        let e = r.unwrap_err();
        assert!(matches!(e, SolError::FlowControl), "{e:?}");
        assert_eq!(e.kind(), "sol_flow_control");
        assert_eq!(accepted, 0);
        assert!(started.elapsed() >= Duration::from_millis(300));
        // Far more than the three sends allowed for silence.
        assert!(c.conn.data_packets().len() > 10);
    }

    #[test]
    fn a_refused_break_is_sent_again() {
        let mut nack = true;
        let mut c = console(
            204,
            Box::new(move |p| match p.seq {
                0 => vec![],
                seq if std::mem::take(&mut nack) => vec![answer(seq, 0, status::NACK)],
                seq => vec![answer(seq, 0, 0)],
            }),
        );
        block_on(c.send_break()).unwrap();
        let sent = c.conn.data_packets();
        assert_eq!(sent.len(), 2);
        assert!(sent
            .iter()
            .all(|p| p.flags == op::BREAK && p.data.is_empty()));
        assert_ne!(sent[0].seq, sent[1].seq);
    }

    #[test]
    fn every_packet_from_the_bmc_is_acknowledged_its_data_kept_once() {
        let mut c = console(32, Box::new(|_| vec![]));
        let from_bmc = |seq, flags, data: &[u8]| SolPacket {
            seq,
            ack: 0,
            accepted: 0,
            flags,
            data: data.to_vec(),
        };
        c.conn.inbox.extend([
            // A status change only (character transfer unavailable), no data.
            from_bmc(3, 0x20, b""),
            from_bmc(4, 0, b"hi"),
            // Resent: our acknowledgement was lost.
            from_bmc(4, 0, b"hi"),
            // An acknowledgement-only packet is not acknowledged.
            answer(9, 0, 0),
        ]);
        assert_eq!(block_on(c.read(Duration::from_millis(10))).unwrap(), b"hi");
        assert!(block_on(c.read(Duration::from_millis(10)))
            .unwrap()
            .is_empty());
        let acks: Vec<(u8, u8, u8)> = c
            .conn
            .sent
            .iter()
            .map(|(_, p)| (p.seq, p.ack, p.accepted))
            .collect();
        assert_eq!(acks, [(0, 3, 0), (0, 4, 2), (0, 4, 2)]);
    }

    #[test]
    fn a_deactivating_bmc_ends_the_console_after_its_last_output() {
        let mut c = console(32, Box::new(|_| vec![]));
        c.conn.inbox.push_back(SolPacket {
            seq: 5,
            ack: 0,
            accepted: 0,
            flags: status::DEACTIVATING,
            data: b"bye".to_vec(),
        });
        assert_eq!(block_on(c.read(Duration::from_millis(10))).unwrap(), b"bye");
        // Acknowledged like any packet.
        assert_eq!(c.conn.sent[0].1, answer(5, 3, 0));
        let e = block_on(c.read(Duration::from_millis(10))).unwrap_err();
        assert!(matches!(e, SolError::Deactivated), "{e:?}");
        assert_eq!(e.kind(), "sol_deactivated");
        assert!(matches!(block_on(c.check()), Err(SolError::Deactivated)));
        let (accepted, r) = written(block_on(c.write(b"x")));
        assert_eq!(accepted, 0);
        assert!(matches!(r, Err(SolError::Deactivated)));
        assert_eq!(c.conn.sent.len(), 1, "nothing sent after");
    }

    #[test]
    fn deactivating_while_a_write_is_acknowledged() {
        let mut c = console(
            32,
            Box::new(|p| match p.seq {
                0 => vec![],
                seq => vec![answer(seq, p.data.len(), status::DEACTIVATING)],
            }),
        );
        let (accepted, r) = written(block_on(c.write(&text(40))));
        // The first packet was accepted; the rest cannot go.
        assert_eq!(accepted, 28);
        assert!(matches!(r, Err(SolError::Deactivated)), "{r:?}");
    }

    #[test]
    fn check_finds_the_holder_and_takes_output() {
        let mut c = console(32, Box::new(|_| vec![]));
        c.conn.inbox.push_back(SolPacket {
            seq: 1,
            ack: 0,
            accepted: 0,
            flags: 0,
            data: b"out".to_vec(),
        });
        assert!(block_on(c.check()).unwrap());
        assert_eq!(block_on(c.read(Duration::ZERO)).unwrap(), b"out");
    }

    #[test]
    fn sol_goes_to_the_port_the_activation_names() {
        use crate::crypto::{CipherSuite, SessionKeys};
        use crate::rakp::Established;
        use crate::session::Session;
        use crate::wire::{emit_response, SessionPacket};
        use std::net::UdpSocket;

        let est = |console, bmc| Established {
            suite: CipherSuite::Suite3,
            console_session_id: console,
            bmc_session_id: bmc,
            keys: SessionKeys {
                sik: vec![1; 20],
                k1: vec![2; 20],
                k2: vec![3; 20],
            },
        };
        // The BMC: IPMI on one socket, SOL on another, whose port it names at activation.
        let ipmi = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sol = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sol_port = sol.local_addr().unwrap().port();
        for s in [&ipmi, &sol] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        }
        let sock = async_io::Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
        sock.get_ref().connect(ipmi.local_addr().unwrap()).unwrap();
        let timing = crate::client::Timing {
            reply_timeout: Duration::from_millis(300),
            retries: 1,
        };
        let conn = Connection::for_test(sock, est(0xC0, 0xB0), timing);
        let mut bmc = Session::new(est(0xB0, 0xC0));
        let bmc_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let mut log = Vec::new();
            // Activate Payload, on the session's port.
            let (n, from) = ipmi.recv_from(&mut buf).unwrap();
            let (pt, req) = bmc.open(&buf[..n]).unwrap();
            log.push(format!("ipmi {pt:?} cmd {:#04x}", req[5]));
            let mut data = vec![0, 0, 0, 0, 0x20, 0, 0x20, 0];
            data.extend_from_slice(&sol_port.to_le_bytes());
            data.extend_from_slice(&[0xFF, 0xFF]);
            let out = bmc.seal(PayloadType::Ipmi, &emit_response(&req, 0, &data), [5; 16]);
            ipmi.send_to(&out, from).unwrap();
            // Characters, on the payload port: acknowledged, and output sent back.
            let (n, from) = sol.recv_from(&mut buf).unwrap();
            let (pt, p) = bmc.open(&buf[..n]).unwrap();
            let p = SolPacket::parse(&p).unwrap();
            log.push(format!("sol {pt:?} seq {} {:?}", p.seq, p.data));
            for reply in [
                answer(p.seq, p.data.len(), 0),
                SolPacket {
                    seq: 1,
                    ack: 0,
                    accepted: 0,
                    flags: 0,
                    data: b"hi".to_vec(),
                },
            ] {
                let out = bmc.seal(PayloadType::Sol, &reply.emit(), [6; 16]);
                sol.send_to(&out, from).unwrap();
            }
            // The console's acknowledgement of the output, on the payload port too.
            let (n, _) = sol.recv_from(&mut buf).unwrap();
            let (_, p) = bmc.open(&buf[..n]).unwrap();
            let p = SolPacket::parse(&p).unwrap();
            log.push(format!("sol ack {} accepted {}", p.ack, p.accepted));
            // Deactivate Payload, on the session's port; nothing else came there.
            let (n, from) = ipmi.recv_from(&mut buf).unwrap();
            let (pt, req) = bmc.open(&buf[..n]).unwrap();
            log.push(format!("ipmi {pt:?} cmd {:#04x}", req[5]));
            let out = bmc.seal(PayloadType::Ipmi, &emit_response(&req, 0, &[]), [5; 16]);
            ipmi.send_to(&out, from).unwrap();
            // Close Session (one try).
            if let Ok(n) = ipmi.recv(&mut buf) {
                let p = SessionPacket::parse(&buf[..n], 12).unwrap();
                log.push(format!("ipmi {:?} (close)", p.payload_type));
            }
            log
        });
        block_on(async {
            let mut c = SolConsole::activate(conn, 1, Duration::from_millis(300))
                .await
                .expect("activate");
            assert_eq!(c.activation().port, sol_port);
            assert_eq!(c.write(b"x").await.expect("write"), 1);
            assert_eq!(c.read(Duration::from_secs(2)).await.unwrap(), b"hi");
            c.deactivate().await;
        });
        let log = bmc_thread.join().unwrap();
        assert_eq!(
            log,
            [
                "ipmi Ipmi cmd 0x48",
                "sol Sol seq 1 [120]",
                "sol ack 1 accepted 2",
                "ipmi Ipmi cmd 0x49",
                "ipmi Ipmi (close)",
            ]
        );
    }

    #[test]
    fn packet_round_trip() {
        let p = SolPacket {
            seq: 3,
            ack: 2,
            accepted: 5,
            flags: op::BREAK,
            data: b"hi".to_vec(),
        };
        assert_eq!(p.emit(), [0x03, 0x02, 0x05, 0x10, b'h', b'i']);
        assert_eq!(SolPacket::parse(&p.emit()), Ok(p));
        assert_eq!(SolPacket::parse(&[1, 2, 3]), Err(WireError::Truncated));
        // Reserved high bits of the sequence fields are ignored.
        assert_eq!(SolPacket::parse(&[0xF1, 0xE0, 0, 0]).unwrap().seq, 1);
    }
}
