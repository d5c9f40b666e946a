//! The bytes on UDP 623: the RMCP header, ASF presence ping/pong, the IPMI v2.0 (RMCP+)
//! session wrapper, and IPMI LAN messages with their checksums.
//!
//! Parsing takes untrusted datagrams and never panics; emitting builds what we send. Session
//! state (keys, sequence numbers) lives in [`super::session`].

use super::crypto::{CipherSuite, SessionKeys};

/// What is wrong with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its headers or its length fields say.
    Truncated,
    /// Not RMCP version 1.0 (0x06).
    NotRmcp,
    /// An RMCP class other than the one expected.
    UnexpectedClass(u8),
    /// An IPMI session authentication type other than RMCP+ (0x06).
    NotRmcpPlus(u8),
    /// Integrity pad or next-header bytes are wrong.
    BadTrailer,
    /// An IPMI message checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => f.write_str("truncated packet"),
            WireError::NotRmcp => f.write_str("not an RMCP packet"),
            WireError::UnexpectedClass(c) => write!(f, "unexpected RMCP class {c:#04x}"),
            WireError::NotRmcpPlus(a) => {
                write!(f, "not an RMCP+ session packet (auth type {a:#04x})")
            }
            WireError::BadTrailer => f.write_str("bad integrity trailer"),
            WireError::BadChecksum => f.write_str("bad IPMI message checksum"),
        }
    }
}

impl std::error::Error for WireError {}

const RMCP_VERSION: u8 = 0x06;
/// RMCP message class: ASF.
pub const CLASS_ASF: u8 = 0x06;
/// RMCP message class: IPMI.
pub const CLASS_IPMI: u8 = 0x07;
const AUTH_RMCP_PLUS: u8 = 0x06;
const ASF_IANA: [u8; 4] = [0x00, 0x00, 0x11, 0xBE];

/// RMCP+ payload types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PayloadType {
    /// An IPMI message.
    Ipmi = 0x00,
    /// Serial over LAN.
    Sol = 0x01,
    /// RMCP+ Open Session Request.
    OpenSessionRequest = 0x10,
    /// RMCP+ Open Session Response.
    OpenSessionResponse = 0x11,
    /// RAKP Message 1.
    Rakp1 = 0x12,
    /// RAKP Message 2.
    Rakp2 = 0x13,
    /// RAKP Message 3.
    Rakp3 = 0x14,
    /// RAKP Message 4.
    Rakp4 = 0x15,
}

impl PayloadType {
    /// From the low six bits of the payload type byte.
    pub fn from_bits(b: u8) -> Option<PayloadType> {
        Some(match b & 0x3F {
            0x00 => PayloadType::Ipmi,
            0x01 => PayloadType::Sol,
            0x10 => PayloadType::OpenSessionRequest,
            0x11 => PayloadType::OpenSessionResponse,
            0x12 => PayloadType::Rakp1,
            0x13 => PayloadType::Rakp2,
            0x14 => PayloadType::Rakp3,
            0x15 => PayloadType::Rakp4,
            _ => return None,
        })
    }
}

/// Builds an ASF Presence Ping (discovery of IPMI-capable BMCs).
pub fn presence_ping(tag: u8) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&[RMCP_VERSION, 0x00, 0xFF, CLASS_ASF]);
    p[4..8].copy_from_slice(&ASF_IANA);
    p[8] = 0x80; // Presence Ping
    p[9] = tag;
    p
}

/// A parsed ASF Presence Pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresencePong {
    /// Message tag, echoing the ping's.
    pub tag: u8,
    /// The responder supports IPMI.
    pub ipmi: bool,
}

impl PresencePong {
    /// Parses a Presence Pong datagram.
    pub fn parse(d: &[u8]) -> Result<PresencePong, WireError> {
        if d.len() < 12 {
            return Err(WireError::Truncated);
        }
        if d[0] != RMCP_VERSION {
            return Err(WireError::NotRmcp);
        }
        if d[3] != CLASS_ASF || d[4..8] != ASF_IANA || d[8] != 0x40 {
            return Err(WireError::UnexpectedClass(d[3]));
        }
        let len = d[11] as usize;
        let data = d.get(12..12 + len).ok_or(WireError::Truncated)?;
        Ok(PresencePong {
            tag: d[9],
            ipmi: data.get(8).is_some_and(|e| e & 0x80 != 0),
        })
    }
}

/// A parsed RMCP+ session packet, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPacket<'a> {
    /// Payload type.
    pub payload_type: PayloadType,
    /// The payload is encrypted.
    pub encrypted: bool,
    /// The packet carries an AuthCode.
    pub authenticated: bool,
    /// Session ID (the receiver's).
    pub session_id: u32,
    /// Session sequence number.
    pub sequence: u32,
    /// Payload bytes (still encrypted when `encrypted`).
    pub payload: &'a [u8],
    /// Bytes the AuthCode covers (auth type through next header); empty if unauthenticated.
    pub signed: &'a [u8],
    /// The AuthCode; empty if unauthenticated.
    pub auth_code: &'a [u8],
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl<'a> SessionPacket<'a> {
    /// Parses a datagram; `icv_len` is the session's AuthCode length (for authenticated ones).
    pub fn parse(d: &'a [u8], icv_len: usize) -> Result<SessionPacket<'a>, WireError> {
        if d.len() < 4 {
            return Err(WireError::Truncated);
        }
        if d[0] != RMCP_VERSION {
            return Err(WireError::NotRmcp);
        }
        if d[3] & 0x1F != CLASS_IPMI {
            return Err(WireError::UnexpectedClass(d[3]));
        }
        let s = &d[4..];
        if s.is_empty() {
            return Err(WireError::Truncated);
        }
        if s[0] != AUTH_RMCP_PLUS {
            return Err(WireError::NotRmcpPlus(s[0]));
        }
        if s.len() < 12 {
            return Err(WireError::Truncated);
        }
        let pt = s[1];
        let payload_type = PayloadType::from_bits(pt).ok_or(WireError::Truncated)?;
        let len = u16::from_le_bytes([s[10], s[11]]) as usize;
        let payload = s.get(12..12 + len).ok_or(WireError::Truncated)?;
        let authenticated = pt & 0x40 != 0;
        let (signed, auth_code) = if authenticated {
            let rest = &s[12 + len..];
            if rest.len() < icv_len + 2 {
                return Err(WireError::Truncated);
            }
            let trailer_end = rest.len() - icv_len;
            let pad_len = rest[trailer_end - 2] as usize;
            if rest[trailer_end - 1] != 0x07 || pad_len + 2 != trailer_end {
                return Err(WireError::BadTrailer);
            }
            if rest[..pad_len].iter().any(|&b| b != 0xFF) {
                return Err(WireError::BadTrailer);
            }
            (&s[..12 + len + trailer_end], &rest[trailer_end..])
        } else {
            (&s[..0], &s[..0])
        };
        Ok(SessionPacket {
            payload_type,
            encrypted: pt & 0x80 != 0,
            authenticated,
            session_id: le32(&s[2..6]),
            sequence: le32(&s[6..10]),
            payload,
            signed,
            auth_code,
        })
    }
}

/// Integrity protection for an outgoing packet.
#[derive(Debug, Clone, Copy)]
pub struct Integrity<'k> {
    /// The session's suite.
    pub suite: CipherSuite,
    /// The session's keys.
    pub keys: &'k SessionKeys,
}

/// Builds an RMCP+ session packet. `payload` is already encrypted when `encrypted` is set.
pub fn emit_session_packet(
    payload_type: PayloadType,
    encrypted: bool,
    session_id: u32,
    sequence: u32,
    payload: &[u8],
    integrity: Option<Integrity>,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(payload.len() + 48);
    p.extend_from_slice(&[RMCP_VERSION, 0x00, 0xFF, CLASS_IPMI, AUTH_RMCP_PLUS]);
    let mut pt = payload_type as u8;
    if encrypted {
        pt |= 0x80;
    }
    if integrity.is_some() {
        pt |= 0x40;
    }
    p.push(pt);
    p.extend_from_slice(&session_id.to_le_bytes());
    p.extend_from_slice(&sequence.to_le_bytes());
    p.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    p.extend_from_slice(payload);
    if let Some(i) = integrity {
        // Pad so that auth type … next header is a multiple of four bytes.
        let covered = p.len() - 4 + 2;
        let pad = (4 - covered % 4) % 4;
        p.extend(std::iter::repeat_n(0xFF, pad));
        p.push(pad as u8);
        p.push(0x07);
        let code = i.keys.auth_code(i.suite, &p[4..]);
        p.extend_from_slice(&code);
    }
    p
}

/// Builds a session-less IPMI v1.5 packet (authentication type none) around an IPMI message:
/// what discovery sends before any session exists.
pub fn emit_v15_packet(msg: &[u8]) -> Vec<u8> {
    let mut p = vec![RMCP_VERSION, 0x00, 0xFF, CLASS_IPMI, 0x00];
    p.extend_from_slice(&[0; 8]); // session sequence and id: none
    p.push(msg.len() as u8);
    p.extend_from_slice(msg);
    p
}

/// The IPMI message inside a session-less IPMI v1.5 packet.
pub fn parse_v15_packet(d: &[u8]) -> Result<&[u8], WireError> {
    if d.len() < 14 {
        return Err(WireError::Truncated);
    }
    if d[0] != RMCP_VERSION {
        return Err(WireError::NotRmcp);
    }
    if d[3] & 0x1F != CLASS_IPMI {
        return Err(WireError::UnexpectedClass(d[3]));
    }
    if d[4] != 0x00 {
        return Err(WireError::NotRmcpPlus(d[4]));
    }
    let len = d[13] as usize;
    d.get(14..14 + len).ok_or(WireError::Truncated)
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The remote console's software ID, as requester address.
pub const CONSOLE_ADDR: u8 = 0x81;
/// The BMC's responder address.
pub const BMC_ADDR: u8 = 0x20;

/// Builds an IPMI LAN request message to the BMC.
pub fn emit_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(7 + data.len());
    m.extend_from_slice(&[BMC_ADDR, netfn << 2]);
    m.push(checksum(&m[..2]));
    m.extend_from_slice(&[CONSOLE_ADDR, (rq_seq & 0x3F) << 2, cmd]);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

/// Tests: the BMC's response message to request message `req` (as [`emit_request`] builds
/// it).
#[cfg(test)]
pub(crate) fn emit_response(req: &[u8], completion: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![CONSOLE_ADDR, req[1] + 4];
    m.push(checksum(&m));
    m.extend_from_slice(&[BMC_ADDR, req[4], req[5], completion]);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

/// A parsed IPMI LAN response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiResponse<'a> {
    /// Response netFn (request netFn + 1).
    pub netfn: u8,
    /// Requester sequence number it answers.
    pub rq_seq: u8,
    /// Command it answers.
    pub cmd: u8,
    /// Completion code.
    pub completion: u8,
    /// Response data after the completion code.
    pub data: &'a [u8],
}

impl<'a> IpmiResponse<'a> {
    /// Parses a response message, checking both checksums.
    pub fn parse(m: &'a [u8]) -> Result<IpmiResponse<'a>, WireError> {
        if m.len() < 8 {
            return Err(WireError::Truncated);
        }
        if checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
            return Err(WireError::BadChecksum);
        }
        Ok(IpmiResponse {
            netfn: m[1] >> 2,
            rq_seq: m[4] >> 2,
            cmd: m[5],
            completion: m[6],
            data: &m[7..m.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_device_id_request_bytes() {
        // ipmitool's Get Device ID (netFn App, cmd 0x01), rqSeq 1.
        assert_eq!(
            emit_request(0x06, 0x01, 0x01, &[]),
            [0x20, 0x18, 0xC8, 0x81, 0x04, 0x01, 0x7A]
        );
    }

    #[test]
    fn response_checksums() {
        let ok = [0x81, 0x1C, 0x63, 0x20, 0x04, 0x01, 0x00, 0x20, 0xBB];
        let r = IpmiResponse::parse(&ok).unwrap();
        assert_eq!((r.netfn, r.rq_seq, r.cmd, r.completion), (0x07, 1, 0x01, 0));
        assert_eq!(r.data, &[0x20]);
        let mut bad = ok;
        bad[7] ^= 1;
        assert_eq!(IpmiResponse::parse(&bad), Err(WireError::BadChecksum));
        assert_eq!(IpmiResponse::parse(&ok[..5]), Err(WireError::Truncated));
    }

    #[test]
    fn unauthenticated_session_packet_round_trip() {
        let p = emit_session_packet(
            PayloadType::OpenSessionRequest,
            false,
            0,
            0,
            &[1, 2, 3],
            None,
        );
        let s = SessionPacket::parse(&p, 12).unwrap();
        assert_eq!(s.payload_type, PayloadType::OpenSessionRequest);
        assert!(!s.authenticated && !s.encrypted);
        assert_eq!(s.payload, &[1, 2, 3]);
    }

    #[test]
    fn authenticated_packet_pads_to_four_and_signs() {
        let keys = SessionKeys {
            sik: vec![1; 20],
            k1: vec![2; 20],
            k2: vec![3; 20],
        };
        let i = Integrity {
            suite: CipherSuite::Suite3,
            keys: &keys,
        };
        for len in 0..8 {
            let payload = vec![0xAB; len];
            let p = emit_session_packet(PayloadType::Ipmi, false, 0x1234, 7, &payload, Some(i));
            let s = SessionPacket::parse(&p, 12).unwrap();
            assert_eq!(s.signed.len() % 4, 0);
            assert_eq!(s.payload, &payload[..]);
            assert_eq!((s.session_id, s.sequence), (0x1234, 7));
            assert_eq!(
                s.auth_code,
                &keys.auth_code(CipherSuite::Suite3, s.signed)[..]
            );
        }
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        let keys = SessionKeys {
            sik: vec![1; 20],
            k1: vec![2; 20],
            k2: vec![3; 20],
        };
        let i = Integrity {
            suite: CipherSuite::Suite17,
            keys: &keys,
        };
        let good = emit_session_packet(PayloadType::Ipmi, false, 1, 1, &[9; 10], Some(i));
        for cut in 0..good.len() {
            let _ = SessionPacket::parse(&good[..cut], 16);
        }
        let mut bad = good.clone();
        let nh = bad.len() - 17;
        bad[nh] = 0x06;
        assert_eq!(SessionPacket::parse(&bad, 16), Err(WireError::BadTrailer));
        assert_eq!(
            SessionPacket::parse(&[0x06, 0, 0xFF, 0x07, 0x00], 16),
            Err(WireError::NotRmcpPlus(0))
        );
        assert_eq!(
            SessionPacket::parse(&[0x05, 0, 0xFF, 0x07], 16),
            Err(WireError::NotRmcp)
        );
    }

    #[test]
    fn v15_packets() {
        let msg = emit_request(0x06, 0x38, 0, &[0x8E, 0x04]);
        let p = emit_v15_packet(&msg);
        assert_eq!(parse_v15_packet(&p), Ok(&msg[..]));
        assert_eq!(parse_v15_packet(&p[..16]), Err(WireError::Truncated));
    }

    #[test]
    fn presence_ping_and_pong() {
        assert_eq!(
            presence_ping(5),
            [0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x05, 0x00, 0x00]
        );
        let pong = [
            0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x40, 0x05, 0x00, 0x10, 0x00, 0x00,
            0x11, 0xBE, 0x00, 0x00, 0x00, 0x00, 0x81, 0x00, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(
            PresencePong::parse(&pong),
            Ok(PresencePong { tag: 5, ipmi: true })
        );
        assert_eq!(PresencePong::parse(&pong[..20]), Err(WireError::Truncated));
    }
}
