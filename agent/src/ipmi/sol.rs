//! Serial over LAN (RMCP+ payload type 1) on the agent's own session layer: the SOL packet
//! codec (pure) and a console on a dedicated session — Activate Payload, character data with
//! sequence numbers, acknowledgements and retransmits, Deactivate Payload.
//!
//! This is the foundation the console proxy (WebSocket viewers, takeover, reconnect, byte
//! metrics) builds on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::client::{Connection, IpmiError};
use super::wire::{PayloadType, WireError};

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

/// An active SOL console on its own RMCP+ session.
#[derive(Debug)]
pub struct SolConsole {
    conn: Connection,
    instance: u8,
    activation: Activation,
    next_seq: u8,
    last_in_seq: u8,
    received: VecDeque<Vec<u8>>,
    reply_timeout: Duration,
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

impl SolConsole {
    /// Activates SOL instance `instance` on `conn` (a session of its own), encrypted and
    /// authenticated. Fails with [`in_use`] when another session holds it.
    pub async fn activate(
        conn: Connection,
        instance: u8,
        reply_timeout: Duration,
    ) -> Result<SolConsole, IpmiError> {
        SolConsole::activate_with(conn, instance, reply_timeout, false).await
    }

    /// [`SolConsole::activate`]; with `force`, an instance held by another session (another
    /// tool, or a session of ours the BMC still thinks alive) is deactivated first and then
    /// activated for us. The session is closed when activation fails.
    pub async fn activate_with(
        mut conn: Connection,
        instance: u8,
        reply_timeout: Duration,
        force: bool,
    ) -> Result<SolConsole, IpmiError> {
        let mut r = activate_payload(&mut conn, instance).await;
        if force && r.as_ref().is_err_and(in_use) {
            let data = [0x01, instance, 0, 0, 0, 0];
            r = match conn
                .request(
                    "deactivate payload",
                    NETFN_APP,
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
        Ok(SolConsole {
            conn,
            instance,
            activation,
            next_seq: 1,
            last_in_seq: 0,
            received: VecDeque::new(),
            reply_timeout,
        })
    }

    /// Whether the session still holds the console: one request on it (Get Payload Instance
    /// Info), which also keeps the session from timing out on the BMC. `Ok(false)` when the
    /// BMC names another session as the holder (a forced takeover by another tool). A BMC
    /// that refuses the command (completion code) still answered: the session lives.
    /// Console data arriving meanwhile is acknowledged and kept for [`SolConsole::read`].
    pub async fn check(&mut self) -> Result<bool, IpmiError> {
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

    /// Takes one incoming SOL packet: acknowledges character data, keeps new data (a resent
    /// packet is acknowledged again but not kept twice). Returns the packet.
    async fn take(&mut self, payload: &[u8]) -> Result<Option<SolPacket>, IpmiError> {
        let Ok(pkt) = SolPacket::parse(payload) else {
            return Ok(None);
        };
        if pkt.seq != 0 && !pkt.data.is_empty() {
            self.ack(&pkt).await?;
            if pkt.seq != self.last_in_seq {
                self.last_in_seq = pkt.seq;
                self.received.push_back(pkt.data.clone());
            }
        }
        Ok(Some(pkt))
    }

    /// Sends characters to the host (split to the BMC's inbound size), each packet resent
    /// until acknowledged (three tries).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), IpmiError> {
        let chunk = usize::from(self.activation.inbound_size.max(5))
            .saturating_sub(4)
            .clamp(1, 255);
        for part in data.chunks(chunk) {
            self.send_packet(part.to_vec(), 0).await?;
        }
        Ok(())
    }

    /// Sends a serial BREAK to the host.
    pub async fn send_break(&mut self) -> Result<(), IpmiError> {
        self.send_packet(Vec::new(), op::BREAK).await
    }

    async fn send_packet(&mut self, data: Vec<u8>, flags: u8) -> Result<(), IpmiError> {
        let seq = self.next_seq;
        self.next_seq = if seq >= 15 { 1 } else { seq + 1 };
        let pkt = SolPacket {
            seq,
            ack: 0,
            accepted: 0,
            flags,
            data,
        };
        for _ in 0..3 {
            self.conn.send_sealed(PayloadType::Sol, &pkt.emit()).await?;
            let deadline = Instant::now() + self.reply_timeout;
            while let Some((pt, payload)) = self.conn.recv_sealed(deadline).await? {
                if pt != PayloadType::Sol {
                    continue;
                }
                if let Some(reply) = self.take(&payload).await? {
                    if reply.ack == seq && reply.flags & status::NACK == 0 {
                        return Ok(());
                    }
                }
            }
        }
        Err(IpmiError::Timeout("sol data"))
    }

    /// Characters from the host: what has arrived, or what arrives within `wait`.
    pub async fn read(&mut self, wait: Duration) -> Result<Vec<u8>, IpmiError> {
        if let Some(d) = self.received.pop_front() {
            return Ok(d);
        }
        let deadline = Instant::now() + wait;
        while let Some((pt, payload)) = self.conn.recv_sealed(deadline).await? {
            if pt == PayloadType::Sol {
                self.take(&payload).await?;
                if let Some(d) = self.received.pop_front() {
                    return Ok(d);
                }
            }
        }
        Ok(Vec::new())
    }

    /// Deactivates SOL and closes the session.
    pub async fn deactivate(mut self) {
        let data = [0x01, self.instance, 0, 0, 0, 0];
        let _ = self
            .conn
            .request(
                "deactivate payload",
                NETFN_APP,
                CMD_DEACTIVATE_PAYLOAD,
                &data,
            )
            .await;
        self.conn.close().await;
    }

    /// Closes the session without deactivating SOL: for a console whose instance another
    /// session has taken (deactivating would throw that one off).
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// Sends Activate Payload for SOL `instance`; returns the response data.
async fn activate_payload(conn: &mut Connection, instance: u8) -> Result<Vec<u8>, IpmiError> {
    // Aux data: encryption and authentication on, serial alerts deferred while active.
    let data = [0x01, instance, 0xC4, 0, 0, 0];
    conn.request("activate payload", NETFN_APP, CMD_ACTIVATE_PAYLOAD, &data)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
