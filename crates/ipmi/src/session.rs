//! An established RMCP+ session, pure: it seals outgoing payloads (sequence number,
//! AES-CBC-128, AuthCode) and opens incoming datagrams (session ID, AuthCode, replay window,
//! decryption). Any payload type: IPMI messages now, SOL later.

use super::rakp::{constant_time_eq, Established};
use super::wire::{emit_session_packet, Integrity, PayloadType, SessionPacket, WireError};

/// Why an incoming datagram was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Malformed bytes.
    Wire(WireError),
    /// Addressed to another session.
    OtherSession(u32),
    /// Not authenticated, or the AuthCode does not match.
    BadAuthCode,
    /// A sequence number already seen or too old.
    Replay(u32),
    /// Encrypted payload that does not decrypt.
    BadCiphertext,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Wire(e) => e.fmt(f),
            OpenError::OtherSession(id) => write!(f, "packet for another session ({id:#010x})"),
            OpenError::BadAuthCode => f.write_str("bad or missing AuthCode"),
            OpenError::Replay(s) => write!(f, "replayed or stale sequence number {s}"),
            OpenError::BadCiphertext => f.write_str("payload does not decrypt"),
        }
    }
}

impl std::error::Error for OpenError {}

/// How far below the highest sequence number a late packet is still accepted (IPMI 2.0 §6.12.13
/// asks for at least 8).
const WINDOW: u32 = 32;

/// An established session.
#[derive(Debug)]
pub struct Session {
    est: Established,
    out_seq: u32,
    in_highest: u32,
    in_seen: u64,
}

impl Session {
    /// A session from a completed handshake.
    pub fn new(est: Established) -> Self {
        Session {
            est,
            out_seq: 0,
            in_highest: 0,
            in_seen: 0,
        }
    }

    /// The BMC's session ID (for Close Session).
    pub fn bmc_session_id(&self) -> u32 {
        self.est.bmc_session_id
    }

    /// Seals `plain` into a datagram: next sequence number (never 0, wrapping to 1), payload
    /// encrypted with `iv`, AuthCode appended.
    pub fn seal(&mut self, payload_type: PayloadType, plain: &[u8], iv: [u8; 16]) -> Vec<u8> {
        self.out_seq = self.out_seq.checked_add(1).unwrap_or(1);
        let cipher = self.est.keys.encrypt(iv, plain);
        emit_session_packet(
            payload_type,
            true,
            self.est.bmc_session_id,
            self.out_seq,
            &cipher,
            Some(Integrity {
                suite: self.est.suite,
                keys: &self.est.keys,
            }),
        )
    }

    /// Opens a datagram from the BMC: checks it is for this session, authenticated with our
    /// key, not a replay, and decrypts it.
    pub fn open(&mut self, datagram: &[u8]) -> Result<(PayloadType, Vec<u8>), OpenError> {
        let suite = self.est.suite;
        let p = SessionPacket::parse(datagram, suite.icv_len()).map_err(OpenError::Wire)?;
        if p.session_id != self.est.console_session_id {
            return Err(OpenError::OtherSession(p.session_id));
        }
        if !p.authenticated
            || !constant_time_eq(p.auth_code, &self.est.keys.auth_code(suite, p.signed))
        {
            return Err(OpenError::BadAuthCode);
        }
        self.accept_sequence(p.sequence)?;
        let payload = if p.encrypted {
            self.est
                .keys
                .decrypt(p.payload)
                .ok_or(OpenError::BadCiphertext)?
        } else {
            p.payload.to_vec()
        };
        Ok((p.payload_type, payload))
    }

    fn accept_sequence(&mut self, seq: u32) -> Result<(), OpenError> {
        if seq == 0 {
            return Err(OpenError::Replay(seq));
        }
        if seq > self.in_highest {
            let shift = seq - self.in_highest;
            self.in_seen = if shift >= 64 {
                0
            } else {
                self.in_seen << shift
            };
            self.in_seen |= 1;
            self.in_highest = seq;
            return Ok(());
        }
        let age = self.in_highest - seq;
        if age >= WINDOW || self.in_seen & (1 << age) != 0 {
            return Err(OpenError::Replay(seq));
        }
        self.in_seen |= 1 << age;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{CipherSuite, SessionKeys};

    fn pair(suite: CipherSuite) -> (Session, Session) {
        let keys = SessionKeys {
            sik: vec![1; 20],
            k1: vec![2; 20],
            k2: vec![3; 20],
        };
        let console = Established {
            suite,
            console_session_id: 0xC0,
            bmc_session_id: 0xB0,
            keys: keys.clone(),
        };
        // The BMC's view: the roles of the two IDs swap.
        let bmc = Established {
            suite,
            console_session_id: 0xB0,
            bmc_session_id: 0xC0,
            keys,
        };
        (Session::new(console), Session::new(bmc))
    }

    #[test]
    fn seal_then_open_both_suites() {
        for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
            let (mut us, mut bmc) = pair(suite);
            for i in 0..5u8 {
                let d = us.seal(PayloadType::Ipmi, &[i; 9], [i; 16]);
                assert_eq!(bmc.open(&d), Ok((PayloadType::Ipmi, vec![i; 9])));
            }
            let d = bmc.seal(PayloadType::Sol, b"console", [9; 16]);
            assert_eq!(us.open(&d), Ok((PayloadType::Sol, b"console".to_vec())));
        }
    }

    #[test]
    fn rejects_replays_tampering_and_strangers() {
        let (mut us, mut bmc) = pair(CipherSuite::Suite3);
        let d1 = bmc.seal(PayloadType::Ipmi, b"a", [0; 16]);
        let d2 = bmc.seal(PayloadType::Ipmi, b"b", [0; 16]);
        assert!(us.open(&d2).is_ok());
        assert!(us.open(&d1).is_ok(), "late but in window");
        assert_eq!(us.open(&d1), Err(OpenError::Replay(1)));
        let mut t = bmc.seal(PayloadType::Ipmi, b"c", [0; 16]);
        t[20] ^= 0x01;
        assert_eq!(us.open(&t), Err(OpenError::BadAuthCode));
        let (mut other, _) = pair(CipherSuite::Suite3);
        let d = other.seal(PayloadType::Ipmi, b"x", [0; 16]);
        assert_eq!(us.open(&d), Err(OpenError::OtherSession(0xB0)));
    }

    #[test]
    fn old_sequence_numbers_fall_out_of_the_window() {
        let (mut us, _) = pair(CipherSuite::Suite3);
        us.accept_sequence(100).unwrap();
        assert_eq!(
            us.accept_sequence(100 - WINDOW),
            Err(OpenError::Replay(100 - WINDOW))
        );
        us.accept_sequence(99).unwrap();
        us.accept_sequence(200).unwrap();
        assert!(us.accept_sequence(99).is_err());
    }
}
