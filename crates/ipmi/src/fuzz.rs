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
        // A compact discrete record (power supply "PSU 1") beside the full one.
        let mut psu = vec![
            0xFF, 0xFF, 0x05, 0x00, 0x51, 0x02, 0x20, 0x20, 0x00, 0x03, 0x0A,
        ];
        psu.extend([
            0x01, 0x67, 0x40, 0x08, 0x6F, 0x0F, 0x00, 0x0F, 0x00, 0x0F, 0x00, 0x00,
        ]);
        psu.extend([
            0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC5,
        ]);
        psu.extend(b"PSU 1");
        let seeds = [cpu, psu];
        for seed in &seeds {
            for m in mutations(seed, &mut rng, ROUNDS) {
                // As the cache does: the reserved modifiers ipmi-rs-core panics on are skipped.
                if m.len() < 2 || !super::super::sdr::parsable(&m[2..]) {
                    continue;
                }
                // ipmi-rs-core's parser is what the agent feeds BMC bytes to.
                if let Ok(info) = ipmi_rs_core::storage::sdr::SdrRecordInfo::parse(&m) {
                    for s in super::super::sdr::sensor_records(&[info.record]) {
                        for raw in [0u8, 0x7F, 0x80, 0xFF] {
                            let _ = super::super::sdr::convert_for_test(&s, raw);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn record_log_and_boot_answers() {
        use super::super::boot::BootFlags;
        use super::super::sdr::RepositoryInfo;
        use super::super::sel::{SelEntry, SelInfo};
        let mut rng = fastrand::Rng::with_seed(2024);
        let info = [
            0x51, 0x02, 0x00, 0xfe, 0xff, 0xcd, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        ];
        let entry = [
            0x01, 0x00, 0x02, 0x10, 0x32, 0x54, 0x76, 0x20, 0x00, 0x04, 0x0C, 0x07, 0x6F, 0x01,
            0xFF, 0xFF,
        ];
        let flags = [0x01, 0x05, 0xE0, 0x18, 0, 0, 0];
        for m in mutations(&info, &mut rng, ROUNDS) {
            let _ = RepositoryInfo::parse(&m);
            let _ = SelInfo::parse(&m);
        }
        for m in mutations(&entry, &mut rng, ROUNDS) {
            if let Ok(e) = SelEntry::parse(&m) {
                let _ = (e.severity(), e.id());
            }
        }
        for m in mutations(&flags, &mut rng, ROUNDS) {
            let _ = BootFlags::parse(&m);
        }
    }

    /// A BMC answering every request with a mutated valid answer, or garbage.
    struct Hostile {
        rng: std::cell::RefCell<fastrand::Rng>,
        seed: Vec<u8>,
    }

    impl crate::Queries for Hostile {
        async fn batch(
            &self,
            _what: &'static str,
            reqs: &[crate::client::Request],
        ) -> Result<Vec<(u8, Vec<u8>)>, crate::client::IpmiError> {
            let mut rng = self.rng.borrow_mut();
            Ok(reqs
                .iter()
                .map(|_| {
                    let code = *[0u8, 0, 0, 0, 0xC5, 0xCA, 0xCB, 0xFF]
                        .get(rng.usize(0..8))
                        .unwrap_or(&0);
                    let data = mutations(&self.seed, &mut rng, 1).pop().unwrap_or_default();
                    (code, data)
                })
                .collect())
        }

        fn window(&self) -> usize {
            4
        }
    }

    #[test]
    fn record_readers_end_on_any_answers() {
        use futures_lite::future::block_on;
        // A Get SDR answer (next ID, a whole full sensor record), a SEL entry answer, and a
        // repository info answer, mutated: every read ends, with records or an error.
        let sdr_answer = vec![0x02, 0x00, 0x01, 0x00, 0x51, 0x01, 0x05, 1, 2, 3, 4, 5];
        for (i, seed) in [
            sdr_answer,
            vec![
                0x02, 0x00, 0x01, 0x00, 0x02, 0x10, 0x32, 0x54, 0x76, 0x20, 0x00, 0x04, 0x0C, 0x07,
                0x6F, 0x01, 0xFF, 0xFF,
            ],
            vec![
                0x51, 0x02, 0x00, 0xfe, 0xff, 0xcd, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
            ],
        ]
        .into_iter()
        .enumerate()
        {
            for run in 0..100u64 {
                let bmc = Hostile {
                    rng: std::cell::RefCell::new(fastrand::Rng::with_seed(run * 3 + i as u64)),
                    seed: seed.clone(),
                };
                let mut cache = super::super::sdr::SdrCache::new();
                let _ = block_on(cache.refresh(&bmc, std::time::Duration::from_secs(60)));
                let _ = block_on(super::super::sel::read_sel(&bmc));
            }
        }
    }
}
