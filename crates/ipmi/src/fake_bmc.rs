//! Tests: a BMC on a loopback UDP socket that runs the RMCP+ handshake for real (cipher suite 3,
//! user `admin`/`password`) and answers Set Session Privilege, Get Device ID and Close Session,
//! keeping count of the sessions it holds: what shows whether a console left one behind.
//!
//! Like a real BMC (and ipmi_sim), it allocates a session for every Open Session Request and
//! keeps it until Close Session: a test that times sessions out is not needed to find a leak.
//! A test can hold its reply to the next request of a kind (it goes out on
//! [`FakeBmc::release`]) or lose it, to cancel a console at an exact step of the handshake.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::crypto::CipherSuite;
use crate::rakp::{Credentials, Established, Handshake};
use crate::session::Session;
use crate::wire::{emit_response, emit_session_packet, PayloadType, SessionPacket};

/// A request the fake was sent, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Got {
    OpenSession,
    Rakp1,
    Rakp3,
    SetPrivilege,
    GetDeviceId,
    CloseSession,
    Other,
}

/// Where one of the fake's sessions stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Open Session Response sent: allocated, not authenticated (half-open).
    Opened,
    /// RAKP 2 sent.
    Rakp2,
    /// RAKP 3 taken, RAKP 4 sent: active.
    Active,
}

const SUITE: CipherSuite = CipherSuite::Suite3;
const GUID: [u8; 16] = [0xA5; 16];

struct BmcSession {
    phase: Phase,
    console_sid: u32,
    tag: u8,
    rm: [u8; 16],
    // From RAKP 1 on.
    hs: Option<Handshake>,
    // Once active.
    session: Option<Session>,
}

#[derive(Default)]
struct State {
    got: Vec<Got>,
    sessions: HashMap<u32, BmcSession>,
    next_sid: u32,
    activated: usize,
    closed: usize,
    hold: Option<Got>,
    held: Vec<(Vec<u8>, SocketAddr)>,
    lose: Option<Got>,
}

/// A running fake BMC; stops on drop.
pub(crate) struct FakeBmc {
    /// Where consoles send.
    pub(crate) addr: SocketAddr,
    sock: UdpSocket,
    shared: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeBmc").field("addr", &self.addr).finish()
    }
}

/// The credentials the fake knows.
pub(crate) fn admin() -> Credentials {
    Credentials {
        username: b"admin".to_vec(),
        password: b"password".to_vec(),
        privilege: 4,
    }
}

impl FakeBmc {
    pub(crate) fn start() -> FakeBmc {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("fake bmc socket");
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let addr = sock.local_addr().expect("address");
        let shared = Arc::new(Mutex::new(State {
            next_sid: 0x0B00_0001,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sock, shared, stop) = (
                sock.try_clone().expect("clone"),
                shared.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || serve(sock, shared, stop))
        };
        FakeBmc {
            addr,
            sock,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reply to the next request of kind `got` waits for [`FakeBmc::release`].
    pub(crate) fn hold(&self, got: Got) {
        self.state().hold = Some(got);
    }

    /// Sends the held reply.
    pub(crate) fn release(&self) {
        let held = std::mem::take(&mut self.state().held);
        for (d, to) in held {
            let _ = self.sock.send_to(&d, to);
        }
    }

    /// The reply to the next request of kind `got` is lost.
    pub(crate) fn lose(&self, got: Got) {
        self.state().lose = Some(got);
    }

    /// What it was sent, in order.
    pub(crate) fn got(&self) -> Vec<Got> {
        self.state().got.clone()
    }

    /// How many requests of kind `got` it was sent.
    pub(crate) fn count(&self, got: Got) -> usize {
        self.state().got.iter().filter(|&&g| g == got).count()
    }

    /// Resolves once it has been sent a request of kind `got` (for racing a console's future
    /// against: `futures_lite::future::or`).
    pub(crate) async fn sent(&self, got: Got) {
        while self.count(got) == 0 {
            async_io::Timer::after(Duration::from_millis(1)).await;
        }
    }

    /// The sessions it holds now (half-open or active), by phase.
    pub(crate) fn sessions(&self) -> Vec<Phase> {
        self.state().sessions.values().map(|s| s.phase).collect()
    }

    /// Sessions it activated (RAKP 3 taken), ever.
    pub(crate) fn activated(&self) -> usize {
        self.state().activated
    }

    /// Sessions closed by Close Session, ever.
    pub(crate) fn closed(&self) -> usize {
        self.state().closed
    }
}

impl Drop for FakeBmc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn serve(sock: UdpSocket, shared: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
        let Some((got, reply)) = answer(&mut st, &buf[..n]) else {
            continue;
        };
        st.got.push(got);
        if st.lose == Some(got) {
            st.lose = None;
        } else if st.hold == Some(got) {
            st.hold = None;
            st.held.push((reply, from));
        } else {
            let _ = sock.send_to(&reply, from);
        }
    }
}

fn unauth(pt: PayloadType, payload: &[u8]) -> Vec<u8> {
    emit_session_packet(pt, false, 0, 0, payload, None)
}

/// What a datagram is, and the reply to it (`None`: ignored, as a BMC ignores strangers).
fn answer(st: &mut State, d: &[u8]) -> Option<(Got, Vec<u8>)> {
    let p = SessionPacket::parse(d, SUITE.icv_len()).ok()?;
    let r = p.payload;
    match p.payload_type {
        PayloadType::OpenSessionRequest if r.len() >= 32 => {
            let (tag, console_sid) = (r[0], le32(&r[4..8]));
            let bmc_sid = st.next_sid;
            st.next_sid += 1;
            st.sessions.insert(
                bmc_sid,
                BmcSession {
                    phase: Phase::Opened,
                    console_sid,
                    tag,
                    rm: [0; 16],
                    hs: None,
                    session: None,
                },
            );
            let (a, i, c) = SUITE.algorithms();
            let mut osr = vec![tag, 0, r[1], 0];
            osr.extend_from_slice(&console_sid.to_le_bytes());
            osr.extend_from_slice(&bmc_sid.to_le_bytes());
            for (k, alg) in [(0u8, a), (1, i), (2, c)] {
                osr.extend_from_slice(&[k, 0, 0, 8, alg, 0, 0, 0]);
            }
            Some((
                Got::OpenSession,
                unauth(PayloadType::OpenSessionResponse, &osr),
            ))
        }
        PayloadType::Rakp1 if r.len() >= 28 => {
            let bmc_sid = le32(&r[4..8]);
            let s = st.sessions.get_mut(&bmc_sid)?;
            s.rm.copy_from_slice(&r[8..24]);
            let name = r.get(28..28 + usize::from(r[27]))?.to_vec();
            let creds = Credentials {
                username: name,
                privilege: r[24] & 0x0F,
                ..admin()
            };
            let rc = [0x5C; 16];
            let hs = Handshake::new(SUITE, creds, s.console_sid, s.rm, s.tag)
                .bmc_side(bmc_sid, rc, GUID);
            let mut rakp2 = vec![s.tag, 0, 0, 0];
            rakp2.extend_from_slice(&s.console_sid.to_le_bytes());
            rakp2.extend_from_slice(&rc);
            rakp2.extend_from_slice(&GUID);
            rakp2.extend_from_slice(&hs.rakp2_code());
            s.hs = Some(hs);
            s.phase = Phase::Rakp2;
            Some((Got::Rakp1, unauth(PayloadType::Rakp2, &rakp2)))
        }
        PayloadType::Rakp3 if r.len() >= 8 => {
            let bmc_sid = le32(&r[4..8]);
            let s = st.sessions.get_mut(&bmc_sid)?;
            let keys = s.hs.as_ref()?.keys();
            let mut icv = SUITE.hmac(&keys.sik, &[&s.rm, &bmc_sid.to_le_bytes(), &GUID]);
            icv.truncate(SUITE.icv_len());
            let mut rakp4 = vec![s.tag, 0, 0, 0];
            rakp4.extend_from_slice(&s.console_sid.to_le_bytes());
            rakp4.extend_from_slice(&icv);
            // The BMC's view of the session: the two IDs swap roles.
            s.session = Some(Session::new(Established {
                suite: SUITE,
                console_session_id: bmc_sid,
                bmc_session_id: s.console_sid,
                keys,
            }));
            let newly = s.phase != Phase::Active;
            s.phase = Phase::Active;
            if newly {
                st.activated += 1;
            }
            Some((Got::Rakp3, unauth(PayloadType::Rakp4, &rakp4)))
        }
        PayloadType::Ipmi if p.authenticated => {
            let bmc_sid = p.session_id;
            let s = st.sessions.get_mut(&bmc_sid)?;
            let session = s.session.as_mut()?;
            let (_, m) = session.open(d).ok()?;
            if m.len() < 7 {
                return None;
            }
            let (netfn, cmd, data) = (m[1] >> 2, m[5], &m[6..m.len() - 1]);
            let (got, completion, out) = match (netfn, cmd) {
                (0x06, 0x3B) => (Got::SetPrivilege, 0, vec![data.first()? & 0x0F]),
                (0x06, 0x01) => (
                    Got::GetDeviceId,
                    0,
                    vec![
                        0x20, 0x81, 0x09, 0x08, 0x02, 0x9F, 0x91, 0x12, 0x00, 0x02, 0x0F,
                    ],
                ),
                (0x06, 0x3C) => (Got::CloseSession, 0, Vec::new()),
                _ => (Got::Other, 0xC1, Vec::new()),
            };
            let reply = session.seal(
                PayloadType::Ipmi,
                &emit_response(&m, completion, &out),
                [0x11; 16],
            );
            if got == Got::CloseSession && data.len() >= 4 && le32(data) == bmc_sid {
                st.sessions.remove(&bmc_sid);
                st.closed += 1;
            }
            Some((got, reply))
        }
        _ => None,
    }
}
