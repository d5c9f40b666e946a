//! Robustness of the parsers that face the network: every parser gets valid messages mutated
//! (bit flips, truncations, extensions, length fields rewritten) and plain random bytes, and
//! must return an error or a value — never panic. A deterministic, stable-toolchain stand-in
//! for coverage-guided fuzzing (cargo-fuzz needs nightly, which this project's machines lack).

use super::crypto::{CipherSuite, SessionKeys};
use super::rakp::{Credentials, Handshake};
use super::session::Session;
use super::wire::*;

/// Variations of `seed`: flips, truncations, appended bytes, overwritten bytes.
pub fn mutations(seed: &[u8], rng: &mut fastrand::Rng, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut m = seed.to_vec();
        match rng.u8(0..5) {
            0 if !m.is_empty() => {
                let i = rng.usize(0..m.len());
                m[i] ^= 1 << rng.u8(0..8);
            }
            1 => m.truncate(rng.usize(0..=m.len())),
            2 => m.extend((0..rng.usize(1..64)).map(|_| rng.u8(..))),
            3 if !m.is_empty() => {
                for _ in 0..rng.usize(1..8) {
                    let i = rng.usize(0..m.len());
                    m[i] = *[0x00, 0xFF, 0x7F, 0x80, rng.u8(..)]
                        .get(rng.usize(0..5))
                        .unwrap_or(&0);
                }
            }
            _ => m = (0..rng.usize(0..128)).map(|_| rng.u8(..)).collect(),
        }
        out.push(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUNDS: usize = 20_000;

    fn keys() -> SessionKeys {
        SessionKeys {
            sik: vec![1; 20],
            k1: vec![2; 20],
            k2: vec![3; 20],
        }
    }

    #[test]
    fn session_packets_and_messages() {
        let mut rng = fastrand::Rng::with_seed(0x1badb002);
        let k = keys();
        let seeds = [
            emit_session_packet(
                PayloadType::Ipmi,
                true,
                7,
                9,
                &k.encrypt([4; 16], b"hello"),
                Some(Integrity {
                    suite: CipherSuite::Suite3,
                    keys: &k,
                }),
            ),
            emit_session_packet(
                PayloadType::OpenSessionResponse,
                false,
                0,
                0,
                &[0; 36],
                None,
            ),
            emit_v15_packet(&emit_request(0x06, 0x38, 1, &[0x8E, 0x04])),
            presence_ping(3).to_vec(),
        ];
        for seed in &seeds {
            for m in mutations(seed, &mut rng, ROUNDS) {
                let _ = SessionPacket::parse(&m, 12);
                let _ = SessionPacket::parse(&m, 16);
                let _ = PresencePong::parse(&m);
                let _ = parse_v15_packet(&m);
                let _ = IpmiResponse::parse(&m);
                let _ = k.decrypt(&m);
                #[cfg(feature = "sol")]
                let _ = super::super::sol::SolPacket::parse(&m);
            }
        }
    }

    #[test]
    fn established_session_open() {
        let mut rng = fastrand::Rng::with_seed(42);
        let est = super::super::rakp::Established {
            suite: CipherSuite::Suite17,
            console_session_id: 0xC0,
            bmc_session_id: 0xB0,
            keys: SessionKeys {
                sik: vec![1; 32],
                k1: vec![2; 32],
                k2: vec![3; 32],
            },
        };
        let mut bmc = Session::new(super::super::rakp::Established {
            console_session_id: 0xB0,
            bmc_session_id: 0xC0,
            ..est.clone()
        });
        let mut us = Session::new(est);
        let seed = bmc.seal(PayloadType::Ipmi, b"a reply from the bmc", [9; 16]);
        for m in mutations(&seed, &mut rng, ROUNDS) {
            let _ = us.open(&m);
        }
    }

    #[test]
    fn handshake_replies() {
        let mut rng = fastrand::Rng::with_seed(7);
        for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
            for _ in 0..2_000 {
                let creds = Credentials {
                    username: b"admin".to_vec(),
                    password: b"pw".to_vec(),
                    privilege: 4,
                };
                let mut h = Handshake::new(suite, creds, 1, [0; 16], 5);
                let (a, i, c) = suite.algorithms();
                let mut osr = vec![5, 0, 4, 0, 1, 0, 0, 0, 2, 0, 0, 0];
                for (kind, alg) in [(0u8, a), (1, i), (2, c)] {
                    osr.extend_from_slice(&[kind, 0, 0, 8, alg, 0, 0, 0]);
                }
                for m in mutations(&osr, &mut rng, 5) {
                    let _ = h.on_open_session_response(&m);
                }
                let rakp2: Vec<u8> = [5u8, 0, 0, 0, 1, 0, 0, 0]
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(0x11, 32 + suite.hmac_len()))
                    .collect();
                for m in mutations(&rakp2, &mut rng, 5) {
                    let _ = h.on_rakp2(&m);
                }
                let rakp4: Vec<u8> = [5u8, 0, 0, 0, 1, 0, 0, 0]
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(0x22, suite.icv_len()))
                    .collect();
                for m in mutations(&rakp4, &mut rng, 1) {
                    let h2 = Handshake::new(
                        suite,
                        Credentials {
                            username: vec![],
                            password: vec![],
                            privilege: 4,
                        },
                        1,
                        [0; 16],
                        5,
                    );
                    let _ = h2.on_rakp4(&m);
                }
            }
        }
    }

    #[test]
    fn sdr_records() {
        let mut rng = fastrand::Rng::with_seed(99);
        let cpu: Vec<u8> = [
            0xFF, 0xFF, 0x00, 0x00, 0x51, 0x01, 0x33, 0x20, 0x00, 0x01, 0x03, 0x01, 0x67, 0x68,
            0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x38, 0x38, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x5a, 0x50, 0x46, 0x00,
            0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0xc8, 0x43, 0x50, 0x55, 0x20, 0x54, 0x65,
            0x6d, 0x70,
        ]
        .to_vec();
        for m in mutations(&cpu, &mut rng, ROUNDS) {
            if m.len() < 2 {
                continue;
            }
            // ipmi-rs-core's parser is what the agent feeds BMC bytes to.
            if let Ok(info) = ipmi_rs_core::storage::sdr::SdrRecordInfo::parse(&m) {
                for s in super::super::sdr::threshold_sensors(&[info.record]) {
                    for raw in [0u8, 0x7F, 0x80, 0xFF] {
                        let _ = super::super::sdr::convert_for_test(&s, raw);
                    }
                }
            }
        }
    }
}
