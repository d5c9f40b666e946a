//! RFB (the VNC protocol, RFC 6143) handshakes, without I/O: the agent is the *client* of the
//! BMC's VNC server ([`BmcHandshake`]: versions 3.3/3.7/3.8, security None or VNC
//! Authentication) and the *server* of its own viewers, in all three versions, in one of two
//! ways:
//! - [`ViewerHandshake`] offers security None only, for viewers already authenticated by
//!   other means (the WebSocket upgrade): the BMC is dialed first and its ServerInit (or the
//!   reason it failed) is given at the start;
//! - [`ViewerAuthHandshake`] offers VNC Authentication only, against a one-time password and
//!   a challenge the caller supplies (the crate has no randomness), for viewers that arrive
//!   unauthenticated (the raw TCP listener): it reports [`ViewerAuthOutcome::Authenticated`]
//!   and waits, and only then is the BMC dialed and its result given
//!   ([`ViewerAuthHandshake::bmc_ready`]).
//!
//! Either way the BMC's ServerInit is replayed, and a viewer never needs the BMC's VNC
//! password.
//!
//! All three are stepped state machines: the caller feeds the bytes it read, sends what they
//! ask it to send and reads more when they need more, so the logic is tested (and fuzzed)
//! without sockets. After the handshakes the agent relays bytes opaquely: it does not parse RFB
//! messages, which keeps the proxy compatible with every encoding.

#![forbid(unsafe_code)]

use std::fmt;

/// An RFB protocol version the agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 3.3: the server picks the security type.
    V3_3,
    /// 3.7: the client picks; no SecurityResult after None.
    V3_7,
    /// 3.8: the client picks; SecurityResult always, with a reason on failure.
    V3_8,
}

impl Version {
    /// The 12-byte ProtocolVersion message.
    pub fn message(self) -> &'static [u8; 12] {
        match self {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        }
    }

    /// Parses a ProtocolVersion message and maps it to the version to use, as RFC 6143 §7.1.1
    /// says: unknown minors count as 3.3, anything newer than 3.8 (Apple's 3.889) as 3.8.
    pub fn parse(msg: &[u8]) -> Result<Version, RfbError> {
        let bad =
            || RfbError::Protocol(format!("not an RFB version message: {:?}", printable(msg)));
        if msg.len() != 12 || &msg[..4] != b"RFB " || msg[7] != b'.' || msg[11] != b'\n' {
            return Err(bad());
        }
        let num = |b: &[u8]| -> Option<u32> {
            b.iter().try_fold(0u32, |acc, d| {
                d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
            })
        };
        let (Some(major), Some(minor)) = (num(&msg[4..7]), num(&msg[8..11])) else {
            return Err(bad());
        };
        Ok(match (major, minor) {
            (3, 7) => Version::V3_7,
            (3, m) if m >= 8 => Version::V3_8,
            (m, _) if m > 3 => Version::V3_8,
            (3, _) => Version::V3_3,
            _ => return Err(bad()),
        })
    }

    fn text(self) -> &'static str {
        match self {
            Version::V3_3 => "3.3",
            Version::V3_7 => "3.7",
            Version::V3_8 => "3.8",
        }
    }
}

/// Security types the agent knows.
pub const SECURITY_NONE: u8 = 1;
/// VNC Authentication (DES challenge-response).
pub const SECURITY_VNC_AUTH: u8 = 2;

/// Longest desktop name or failure reason accepted from a peer (RFC 6143 sets no bound).
pub const MAX_TEXT: usize = 4096;

/// Why a handshake failed; [`RfbError::kind`] is the metric's `error_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RfbError {
    /// The BMC refused the password (or needs one and none is configured).
    AuthFailed(String),
    /// The BMC offers only security types the agent does not speak.
    UnsupportedSecurity(Vec<u8>),
    /// The BMC refused the connection with a reason (e.g. too many clients).
    Refused(String),
    /// Bytes that break the protocol.
    Protocol(String),
}

impl RfbError {
    /// The `error_type` label value.
    pub fn kind(&self) -> &'static str {
        match self {
            RfbError::AuthFailed(_) => "auth_failed",
            RfbError::UnsupportedSecurity(_) => "unsupported_security",
            RfbError::Refused(_) => "server_refused",
            RfbError::Protocol(_) => "protocol_error",
        }
    }
}

impl fmt::Display for RfbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RfbError::AuthFailed(r) => write!(f, "VNC authentication failed: {r}"),
            RfbError::UnsupportedSecurity(t) => {
                write!(f, "no supported security type (offered {t:?}; the agent speaks None and VNC Authentication)")
            }
            RfbError::Refused(r) => write!(f, "the VNC server refused the connection: {r}"),
            RfbError::Protocol(r) => write!(f, "RFB protocol error: {r}"),
        }
    }
}

impl std::error::Error for RfbError {}

fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned()
}

/// The DES response to a VNC Authentication challenge: the password (first 8 bytes, zero
/// padded) with each byte's bits mirrored is the key, and the 16-byte challenge is encrypted
/// as two ECB blocks. (The mirroring is a historical quirk of the original VNC code.)
pub fn vnc_auth_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    use des::cipher::generic_array::GenericArray;
    use des::cipher::{BlockEncrypt, KeyInit};
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = des::Des::new(GenericArray::from_slice(&key));
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    out
}

/// What the BMC's VNC server told us, ready to be replayed to viewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInit {
    /// Framebuffer width.
    pub width: u16,
    /// Framebuffer height.
    pub height: u16,
    /// Desktop name (lossy UTF-8).
    pub name: String,
    /// The message exactly as received (pixel format included).
    pub raw: Vec<u8>,
    /// The version spoken with the BMC.
    pub version: Version,
    /// The security type used with the BMC.
    pub security: u8,
}

impl ServerInit {
    /// Parses a whole ServerInit from the start of `buf`: `Ok(None)` when more is needed.
    pub fn parse(
        buf: &[u8],
        version: Version,
        security: u8,
    ) -> Result<Option<ServerInit>, RfbError> {
        if buf.len() < 24 {
            return Ok(None);
        }
        let name_len = u32::from_be_bytes([buf[20], buf[21], buf[22], buf[23]]) as usize;
        if name_len > MAX_TEXT {
            return Err(RfbError::Protocol(format!(
                "desktop name of {name_len} bytes"
            )));
        }
        let Some(name) = buf.get(24..24 + name_len) else {
            return Ok(None);
        };
        Ok(Some(ServerInit {
            width: u16::from_be_bytes([buf[0], buf[1]]),
            height: u16::from_be_bytes([buf[2], buf[3]]),
            name: String::from_utf8_lossy(name).into_owned(),
            raw: buf[..24 + name_len].to_vec(),
            version,
            security,
        }))
    }
}

/// Reads a u32-length-prefixed string (a failure reason) from the start of `buf`.
fn reason(buf: &[u8]) -> Result<Option<(String, usize)>, RfbError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_TEXT {
        return Err(RfbError::Protocol(format!("failure reason of {len} bytes")));
    }
    Ok(buf.get(4..4 + len).map(|r| {
        let text = String::from_utf8_lossy(r).trim_end_matches('\0').to_owned();
        (text, 4 + len)
    }))
}

fn u32_at(buf: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(..4)?.try_into().ok()?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BmcState {
    Version,
    /// 3.3: the server's chosen type; 3.7/3.8: the list.
    Security(Version),
    /// The server's failure reason after it offered no type.
    SecurityFailure(Version),
    Challenge(Version),
    /// SecurityResult; `u8` is the security type used.
    Result(Version, u8),
    ResultReason,
    ServerInit(Version, u8),
    Done,
}

/// The agent's side of a handshake with a BMC's VNC server.
///
/// Call [`BmcHandshake::step`] with everything read so far (it consumes what it used) and an
/// output buffer; send the output; read more until it returns the [`ServerInit`]. Bytes left
/// in the input after that belong to the session.
pub struct BmcHandshake {
    password: Option<Vec<u8>>,
    state: BmcState,
}

impl fmt::Debug for BmcHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcHandshake")
            .field("state", &self.state)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl BmcHandshake {
    /// A handshake that answers VNC Authentication with `password` when given.
    pub fn new(password: Option<&[u8]>) -> BmcHandshake {
        BmcHandshake {
            password: password.map(<[u8]>::to_vec),
            state: BmcState::Version,
        }
    }

    /// Advances as far as `input` allows. Returns the ServerInit once complete.
    pub fn step(
        &mut self,
        input: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Option<ServerInit>, RfbError> {
        loop {
            let used = match self.state.clone() {
                BmcState::Version => {
                    let Some(msg) = input.get(..12) else {
                        return Ok(None);
                    };
                    let v = Version::parse(msg)?;
                    out.extend_from_slice(v.message());
                    self.state = BmcState::Security(v);
                    12
                }
                BmcState::Security(Version::V3_3) => {
                    let Some(t) = u32_at(input) else {
                        return Ok(None);
                    };
                    self.state = match t {
                        0 => BmcState::SecurityFailure(Version::V3_3),
                        1 => BmcState::ServerInit(Version::V3_3, SECURITY_NONE),
                        2 => self.choose_vnc_auth(Version::V3_3)?,
                        other => {
                            return Err(RfbError::UnsupportedSecurity(vec![other.min(255) as u8]))
                        }
                    };
                    if self.state == BmcState::ServerInit(Version::V3_3, SECURITY_NONE) {
                        out.push(1); // ClientInit: shared, so the BMC keeps its other viewers
                    }
                    4
                }
                BmcState::Security(v) => {
                    let Some(&n) = input.first() else {
                        return Ok(None);
                    };
                    if n == 0 {
                        self.state = BmcState::SecurityFailure(v);
                        1
                    } else {
                        let Some(types) = input.get(1..1 + usize::from(n)) else {
                            return Ok(None);
                        };
                        let offered = |t| types.contains(&t);
                        self.state = if self.password.is_some() && offered(SECURITY_VNC_AUTH) {
                            out.push(SECURITY_VNC_AUTH);
                            BmcState::Challenge(v)
                        } else if offered(SECURITY_NONE) {
                            out.push(SECURITY_NONE);
                            if v == Version::V3_8 {
                                BmcState::Result(v, SECURITY_NONE)
                            } else {
                                out.push(1);
                                BmcState::ServerInit(v, SECURITY_NONE)
                            }
                        } else if offered(SECURITY_VNC_AUTH) {
                            return Err(RfbError::AuthFailed(
                                "the BMC asks for VNC Authentication and no vnc_password is configured".into(),
                            ));
                        } else {
                            return Err(RfbError::UnsupportedSecurity(types.to_vec()));
                        };
                        1 + usize::from(n)
                    }
                }
                BmcState::SecurityFailure(_) => {
                    let Some((why, used)) = reason(input)? else {
                        return Ok(None);
                    };
                    input.drain(..used);
                    return Err(RfbError::Refused(why));
                }
                BmcState::Challenge(v) => {
                    let Some(challenge) = input.get(..16) else {
                        return Ok(None);
                    };
                    let challenge: &[u8; 16] = challenge
                        .try_into()
                        .map_err(|_| RfbError::Protocol("challenge".into()))?;
                    let password = self.password.as_deref().unwrap_or_default();
                    out.extend_from_slice(&vnc_auth_response(password, challenge));
                    self.state = BmcState::Result(v, SECURITY_VNC_AUTH);
                    16
                }
                BmcState::Result(v, security) => {
                    let Some(result) = u32_at(input) else {
                        return Ok(None);
                    };
                    match (result, v) {
                        (0, _) => {
                            out.push(1);
                            self.state = BmcState::ServerInit(v, security);
                        }
                        (_, Version::V3_8) => self.state = BmcState::ResultReason,
                        _ => {
                            return Err(RfbError::AuthFailed(
                                "the BMC refused the VNC password".into(),
                            ))
                        }
                    }
                    4
                }
                BmcState::ResultReason => {
                    let Some((why, used)) = reason(input)? else {
                        return Ok(None);
                    };
                    input.drain(..used);
                    return Err(RfbError::AuthFailed(why));
                }
                BmcState::ServerInit(v, security) => {
                    let Some(init) = ServerInit::parse(input, v, security)? else {
                        return Ok(None);
                    };
                    input.drain(..init.raw.len());
                    self.state = BmcState::Done;
                    return Ok(Some(init));
                }
                BmcState::Done => {
                    return Err(RfbError::Protocol("handshake already complete".into()))
                }
            };
            input.drain(..used);
        }
    }

    fn choose_vnc_auth(&self, v: Version) -> Result<BmcState, RfbError> {
        if self.password.is_none() {
            return Err(RfbError::AuthFailed(
                "the BMC asks for VNC Authentication and no vnc_password is configured".into(),
            ));
        }
        Ok(BmcState::Challenge(v))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ViewerState {
    Version,
    /// 3.7/3.8: the viewer's choice of security type.
    Choice(Version),
    ClientInit(Version),
    Done,
}

/// The agent's side of a handshake with a viewer: security None, then the BMC's ServerInit
/// (or, when the BMC side failed, a failure with its reason, which viewers show to the user).
/// Only for viewers authenticated before the handshake; [`ViewerAuthHandshake`] is the one
/// for viewers that must prove a password first.
#[derive(Debug)]
pub struct ViewerHandshake {
    state: ViewerState,
    bmc: Result<Vec<u8>, String>,
}

/// How the viewer handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewerOutcome {
    /// ServerInit sent: relay from here.
    Ready,
    /// The failure reason was sent: close after writing the output.
    Refused,
}

impl ViewerHandshake {
    /// The first bytes to send (the agent's version, 3.8) and the handshake that follows,
    /// given the BMC's ServerInit bytes or the reason the BMC side failed.
    pub fn start(bmc: Result<Vec<u8>, String>, out: &mut Vec<u8>) -> ViewerHandshake {
        out.extend_from_slice(Version::V3_8.message());
        ViewerHandshake {
            state: ViewerState::Version,
            bmc,
        }
    }

    /// Advances as far as `input` allows.
    pub fn step(
        &mut self,
        input: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Option<ViewerOutcome>, RfbError> {
        loop {
            let used = match self.state.clone() {
                ViewerState::Version => {
                    let Some(msg) = input.get(..12) else {
                        return Ok(None);
                    };
                    let v = Version::parse(msg)?;
                    input.drain(..12);
                    match (&self.bmc, v) {
                        (Err(why), Version::V3_3) => {
                            out.extend_from_slice(&0u32.to_be_bytes());
                            put_reason(why, out);
                            self.state = ViewerState::Done;
                            return Ok(Some(ViewerOutcome::Refused));
                        }
                        (Err(why), _) => {
                            out.push(0);
                            put_reason(why, out);
                            self.state = ViewerState::Done;
                            return Ok(Some(ViewerOutcome::Refused));
                        }
                        (Ok(_), Version::V3_3) => {
                            out.extend_from_slice(&u32::from(SECURITY_NONE).to_be_bytes());
                            self.state = ViewerState::ClientInit(v);
                        }
                        (Ok(_), v) => {
                            out.extend_from_slice(&[1, SECURITY_NONE]);
                            self.state = ViewerState::Choice(v);
                        }
                    }
                    0
                }
                ViewerState::Choice(v) => {
                    let Some(&t) = input.first() else {
                        return Ok(None);
                    };
                    if t != SECURITY_NONE {
                        return Err(RfbError::Protocol(format!(
                            "the viewer chose security type {t}, offered only None ({})",
                            v.text()
                        )));
                    }
                    if v == Version::V3_8 {
                        out.extend_from_slice(&0u32.to_be_bytes());
                    }
                    self.state = ViewerState::ClientInit(v);
                    1
                }
                ViewerState::ClientInit(_) => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    // The shared flag is the BMC connection's business, already set.
                    input.drain(..1);
                    let init = self
                        .bmc
                        .as_ref()
                        .map_err(|e| RfbError::Protocol(e.clone()))?;
                    out.extend_from_slice(init);
                    self.state = ViewerState::Done;
                    return Ok(Some(ViewerOutcome::Ready));
                }
                ViewerState::Done => {
                    return Err(RfbError::Protocol("handshake already complete".into()))
                }
            };
            input.drain(..used);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthState {
    Version,
    /// 3.7/3.8: the viewer's choice; only VNC Authentication was offered.
    Choice(Version),
    /// The viewer's 16-byte response to the challenge.
    Response(Version),
    /// Authenticated; nothing more is sent until the caller reports the BMC side.
    AwaitBmc(Version),
    /// SecurityResult OK sent: the viewer's ClientInit, then the BMC's ServerInit.
    ClientInit,
    Done,
}

/// The agent's side of a handshake with a viewer who must prove it knows a one-time password:
/// VNC Authentication (security type 2, the only type offered) against a challenge the caller
/// supplies, and only then the BMC's ServerInit — so the BMC is dialed only for a viewer that
/// has authenticated.
///
/// The sequence, with the usual step/send/read loop of [`ViewerHandshake`]:
/// 1. [`ViewerAuthHandshake::with_password`] writes the version (3.8);
/// 2. [`step`](Self::step) until it returns an outcome: [`ViewerAuthOutcome::AuthFailed`]
///    (write the output, close) or [`ViewerAuthOutcome::Authenticated`] (nothing has been
///    sent about the result yet: the viewer waits for its SecurityResult);
/// 3. dial the BMC, then [`bmc_ready`](Self::bmc_ready) with its ServerInit bytes or the
///    reason it failed: a failure gives [`ViewerAuthOutcome::Refused`] (write, close);
///    success writes SecurityResult OK and returns `Ok(None)`;
/// 4. step again (the viewer's ClientInit) until [`ViewerAuthOutcome::Ready`]: relay from
///    there, bytes left in the input first.
///
/// A call in the wrong state (`step` while waiting for `bmc_ready`, `bmc_ready` twice or
/// before authentication, anything after an outcome that ends the handshake) is an
/// [`RfbError::Protocol`]. Every error ends the handshake: later calls fail too.
pub struct ViewerAuthHandshake {
    state: AuthState,
    challenge: [u8; 16],
    /// The only response accepted; the password itself is not kept.
    expected: [u8; 16],
    /// The BMC's ServerInit, between `bmc_ready` and the viewer's ClientInit.
    server_init: Vec<u8>,
}

impl fmt::Debug for ViewerAuthHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewerAuthHandshake")
            .field("state", &self.state)
            .field("expected", &"<redacted>")
            .finish()
    }
}

/// How far a [`ViewerAuthHandshake`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerAuthOutcome {
    /// The viewer's response is right: dial the BMC, then call
    /// [`ViewerAuthHandshake::bmc_ready`].
    Authenticated,
    /// The viewer's response is wrong: SecurityResult failed (with the reason
    /// "authentication failed" for 3.8) is in the output. Write it and close; count it apart
    /// from protocol errors.
    AuthFailed,
    /// ServerInit sent: relay from here.
    Ready,
    /// The BMC side failed after the viewer authenticated: SecurityResult failed (with the
    /// reason for 3.8; RFB 3.3 and 3.7 have no place for one) is in the output. Write it and
    /// close.
    Refused,
}

/// The reason a 3.8 viewer is shown for a wrong password.
pub const AUTH_FAILED_REASON: &str = "authentication failed";

impl ViewerAuthHandshake {
    /// The first bytes to send (the agent's version, 3.8) and the handshake that follows,
    /// accepting only the VNC Authentication response for `password` (its first 8 bytes, as
    /// VNC uses) to `challenge`. The challenge is sent as given: take it fresh from a
    /// cryptographic random source for every connection (the crate does no I/O and has no
    /// randomness of its own).
    pub fn with_password(
        password: &[u8],
        challenge: [u8; 16],
        out: &mut Vec<u8>,
    ) -> ViewerAuthHandshake {
        out.extend_from_slice(Version::V3_8.message());
        ViewerAuthHandshake {
            state: AuthState::Version,
            challenge,
            expected: vnc_auth_response(password, &challenge),
            server_init: Vec::new(),
        }
    }

    /// Advances as far as `input` allows (it consumes what it used).
    pub fn step(
        &mut self,
        input: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Option<ViewerAuthOutcome>, RfbError> {
        let r = self.advance(input, out);
        if r.is_err() {
            self.state = AuthState::Done;
        }
        r
    }

    fn advance(
        &mut self,
        input: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Option<ViewerAuthOutcome>, RfbError> {
        loop {
            let used = match self.state {
                AuthState::Version => {
                    let Some(msg) = input.get(..12) else {
                        return Ok(None);
                    };
                    let v = Version::parse(msg)?;
                    if v == Version::V3_3 {
                        // 3.3: the server chooses, and the challenge follows at once.
                        out.extend_from_slice(&u32::from(SECURITY_VNC_AUTH).to_be_bytes());
                        out.extend_from_slice(&self.challenge);
                        self.state = AuthState::Response(v);
                    } else {
                        out.extend_from_slice(&[1, SECURITY_VNC_AUTH]);
                        self.state = AuthState::Choice(v);
                    }
                    12
                }
                AuthState::Choice(v) => {
                    let Some(&t) = input.first() else {
                        return Ok(None);
                    };
                    if t != SECURITY_VNC_AUTH {
                        return Err(RfbError::Protocol(format!(
                            "the viewer chose security type {t}, offered only VNC Authentication ({})",
                            v.text()
                        )));
                    }
                    out.extend_from_slice(&self.challenge);
                    self.state = AuthState::Response(v);
                    1
                }
                AuthState::Response(v) => {
                    let Some(response) = input.get(..16) else {
                        return Ok(None);
                    };
                    let right = response
                        .try_into()
                        .is_ok_and(|r: &[u8; 16]| ct_eq(r, &self.expected));
                    input.drain(..16);
                    if right {
                        self.state = AuthState::AwaitBmc(v);
                        return Ok(Some(ViewerAuthOutcome::Authenticated));
                    }
                    put_security_failure(v, AUTH_FAILED_REASON, out);
                    self.state = AuthState::Done;
                    return Ok(Some(ViewerAuthOutcome::AuthFailed));
                }
                AuthState::AwaitBmc(_) => {
                    return Err(RfbError::Protocol(
                        "step while waiting for bmc_ready".into(),
                    ))
                }
                AuthState::ClientInit => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    // The shared flag is the BMC connection's business, already set.
                    input.drain(..1);
                    out.extend_from_slice(&std::mem::take(&mut self.server_init));
                    self.state = AuthState::Done;
                    return Ok(Some(ViewerAuthOutcome::Ready));
                }
                AuthState::Done => {
                    return Err(RfbError::Protocol("handshake already complete".into()))
                }
            };
            input.drain(..used);
        }
    }

    /// Reports the BMC side once the viewer has authenticated: its ServerInit bytes (replayed
    /// to the viewer after its ClientInit) or the reason it failed (shown to 3.8 viewers,
    /// truncated to [`MAX_TEXT`] bytes). Success writes SecurityResult OK and returns
    /// `Ok(None)`: go on stepping. Failure returns [`ViewerAuthOutcome::Refused`].
    pub fn bmc_ready(
        &mut self,
        bmc: Result<Vec<u8>, String>,
        out: &mut Vec<u8>,
    ) -> Result<Option<ViewerAuthOutcome>, RfbError> {
        let AuthState::AwaitBmc(v) = self.state else {
            let when = if self.state == AuthState::Done {
                "after the handshake ended"
            } else {
                "before the viewer authenticated"
            };
            self.state = AuthState::Done;
            return Err(RfbError::Protocol(format!("bmc_ready {when}")));
        };
        match bmc {
            Ok(init) => {
                out.extend_from_slice(&0u32.to_be_bytes());
                self.server_init = init;
                self.state = AuthState::ClientInit;
                Ok(None)
            }
            Err(why) => {
                put_security_failure(v, &why, out);
                self.state = AuthState::Done;
                Ok(Some(ViewerAuthOutcome::Refused))
            }
        }
    }
}

/// SecurityResult failed, with the reason where the version has room for one (3.8).
fn put_security_failure(v: Version, why: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&1u32.to_be_bytes());
    if v == Version::V3_8 {
        put_reason(why, out);
    }
}

/// Compares two responses in a time that does not depend on where they differ, so a viewer
/// learns nothing from how fast a wrong guess is refused.
fn ct_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

fn put_reason(why: &str, out: &mut Vec<u8>) {
    let why = &why.as_bytes()[..why.len().min(MAX_TEXT)];
    out.extend_from_slice(&(why.len() as u32).to_be_bytes());
    out.extend_from_slice(why);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a BMC handshake against a scripted server: `script` is the server's bytes in the
    /// order it sends them; returns what the client sent and the outcome.
    fn run(
        password: Option<&[u8]>,
        script: &[&[u8]],
    ) -> (Vec<u8>, Result<Option<ServerInit>, RfbError>) {
        let mut hs = BmcHandshake::new(password);
        let (mut input, mut out) = (Vec::new(), Vec::new());
        let mut result = Ok(None);
        for chunk in script {
            input.extend_from_slice(chunk);
            result = hs.step(&mut input, &mut out);
            if !matches!(result, Ok(None)) {
                break;
            }
        }
        (out, result)
    }

    fn server_init(name: &str) -> Vec<u8> {
        let mut b = vec![0x04, 0x00, 0x03, 0x00]; // 1024x768
        b.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b
    }

    #[test]
    fn versions() {
        assert_eq!(Version::parse(b"RFB 003.008\n"), Ok(Version::V3_8));
        assert_eq!(Version::parse(b"RFB 003.007\n"), Ok(Version::V3_7));
        assert_eq!(Version::parse(b"RFB 003.003\n"), Ok(Version::V3_3));
        assert_eq!(Version::parse(b"RFB 003.005\n"), Ok(Version::V3_3)); // unknown minor
        assert_eq!(Version::parse(b"RFB 003.889\n"), Ok(Version::V3_8)); // Apple
        assert_eq!(Version::parse(b"RFB 004.001\n"), Ok(Version::V3_8));
        for bad in [
            &b"RFB 002.000\n"[..],
            b"HTTP/1.1 200",
            b"RFB 003.00x\n",
            b"RFB 003.008",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vnc_auth_known_answer() {
        // openssl enc -des-ecb -nopad -provider legacy -K <mirrored "password"> on the
        // challenge 00 01 .. 0f (see tests/kat/vnc_auth.sh).
        let challenge: [u8; 16] = std::array::from_fn(|i| i as u8);
        let got = vnc_auth_response(b"password", &challenge);
        assert_eq!(hex(&got), "b866924125c8eebb9debc1db61c538e2");
        // Only the first 8 bytes count.
        assert_eq!(vnc_auth_response(b"password-and-more", &challenge), got);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn v38_vnc_auth_then_server_init() {
        let challenge = [7u8; 16];
        let (sent, r) = run(
            Some(b"password"),
            &[
                b"RFB 003.008\n",
                &[2, 1, 2],
                &challenge,
                &0u32.to_be_bytes(),
                &server_init("tiger1"),
            ],
        );
        let init = r.unwrap().unwrap();
        assert_eq!(
            (init.width, init.height, init.name.as_str()),
            (1024, 768, "tiger1")
        );
        assert_eq!(init.raw, server_init("tiger1"));
        let mut want = b"RFB 003.008\n".to_vec();
        want.push(2);
        want.extend_from_slice(&vnc_auth_response(b"password", &challenge));
        want.push(1); // ClientInit shared
        assert_eq!(sent, want);
    }

    #[test]
    fn v38_none_has_a_security_result() {
        let (sent, r) = run(
            None,
            &[
                b"RFB 003.008\n",
                &[1, 1],
                &0u32.to_be_bytes(),
                &server_init("q"),
            ],
        );
        assert_eq!(r.unwrap().unwrap().security, SECURITY_NONE);
        assert_eq!(sent, b"RFB 003.008\n\x01\x01");
    }

    #[test]
    fn v37_none_has_no_security_result() {
        let (sent, r) = run(None, &[b"RFB 003.007\n", &[1, 1], &server_init("q")]);
        assert_eq!(r.unwrap().unwrap().version, Version::V3_7);
        assert_eq!(sent, b"RFB 003.007\n\x01\x01");
    }

    #[test]
    fn v33_server_chooses() {
        let (sent, r) = run(
            None,
            &[b"RFB 003.003\n", &1u32.to_be_bytes(), &server_init("old")],
        );
        assert_eq!(r.unwrap().unwrap().name, "old");
        assert_eq!(sent, b"RFB 003.003\n\x01");
        let challenge = [9u8; 16];
        let (sent, r) = run(
            Some(b"secret"),
            &[
                b"RFB 003.003\n",
                &2u32.to_be_bytes(),
                &challenge,
                &0u32.to_be_bytes(),
                &server_init("old"),
            ],
        );
        assert!(r.unwrap().is_some());
        assert_eq!(&sent[12..28], &vnc_auth_response(b"secret", &challenge));
        // A 3.3 failure has no reason string.
        let (_, r) = run(
            Some(b"wrong"),
            &[
                b"RFB 003.003\n",
                &2u32.to_be_bytes(),
                &challenge,
                &1u32.to_be_bytes(),
            ],
        );
        assert_eq!(r.unwrap_err().kind(), "auth_failed");
    }

    #[test]
    fn failures_carry_the_servers_reason() {
        let mut failed = 1u32.to_be_bytes().to_vec();
        failed.extend_from_slice(&22u32.to_be_bytes());
        failed.extend_from_slice(b"Authentication failure");
        let (_, r) = run(
            Some(b"wrong"),
            &[b"RFB 003.008\n", &[1, 2], &[0; 16], &failed],
        );
        assert_eq!(
            r,
            Err(RfbError::AuthFailed("Authentication failure".into()))
        );

        let mut refused = vec![0u8];
        refused.extend_from_slice(&8u32.to_be_bytes());
        refused.extend_from_slice(b"too many");
        let (_, r) = run(None, &[b"RFB 003.008\n", &refused]);
        assert_eq!(r, Err(RfbError::Refused("too many".into())));
        assert_eq!(r.unwrap_err().kind(), "server_refused");

        let (_, r) = run(None, &[b"RFB 003.008\n", &[1, 2]]);
        assert_eq!(r.unwrap_err().kind(), "auth_failed"); // needs a password, none configured
        let (_, r) = run(None, &[b"RFB 003.008\n", &[2, 19, 16]]);
        assert_eq!(r, Err(RfbError::UnsupportedSecurity(vec![19, 16])));
        let (_, r) = run(None, &[b"SSH-2.0-OpenSSH\n"]);
        assert_eq!(r.unwrap_err().kind(), "protocol_error");
        let mut huge = server_init("");
        huge[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        let (_, r) = run(
            None,
            &[b"RFB 003.008\n", &[1, 1], &0u32.to_be_bytes(), &huge],
        );
        assert_eq!(r.unwrap_err().kind(), "protocol_error");
    }

    #[test]
    fn byte_at_a_time_is_the_same() {
        let mut script: Vec<u8> = b"RFB 003.008\n".to_vec();
        script.extend_from_slice(&[2, 1, 2]);
        script.extend_from_slice(&[3; 16]);
        script.extend_from_slice(&0u32.to_be_bytes());
        script.extend_from_slice(&server_init("x"));
        script.extend_from_slice(b"FRAMEBUFFER");
        let mut hs = BmcHandshake::new(Some(b"pw"));
        let (mut input, mut out) = (Vec::new(), Vec::new());
        let mut done = None;
        for b in &script {
            input.push(*b);
            if let Some(init) = hs.step(&mut input, &mut out).unwrap() {
                done = Some(init);
                break;
            }
        }
        assert_eq!(done.unwrap().name, "x");
        // Extra bytes that arrive with the ServerInit stay in the input for the relay.
        let mut hs = BmcHandshake::new(None);
        let mut input = b"RFB 003.007\n\x01\x01".to_vec();
        input.extend_from_slice(&server_init("y"));
        input.extend_from_slice(b"rest");
        assert!(hs.step(&mut input, &mut Vec::new()).unwrap().is_some());
        assert_eq!(input, b"rest");
    }

    fn viewer(
        bmc: Result<Vec<u8>, String>,
        script: &[&[u8]],
    ) -> (Vec<u8>, Result<Option<ViewerOutcome>, RfbError>) {
        let mut out = Vec::new();
        let mut hs = ViewerHandshake::start(bmc, &mut out);
        let mut input = Vec::new();
        let mut result = Ok(None);
        for chunk in script {
            input.extend_from_slice(chunk);
            result = hs.step(&mut input, &mut out);
            if !matches!(result, Ok(None)) {
                break;
            }
        }
        (out, result)
    }

    #[test]
    fn viewers_get_none_and_the_replayed_server_init() {
        let init = server_init("tiger1");
        let (out, r) = viewer(Ok(init.clone()), &[b"RFB 003.008\n", &[1], &[1]]);
        assert!(matches!(r, Ok(Some(ViewerOutcome::Ready))));
        let mut want = b"RFB 003.008\n\x01\x01\0\0\0\0".to_vec();
        want.extend_from_slice(&init);
        assert_eq!(out, want);

        let (out, _) = viewer(Ok(init.clone()), &[b"RFB 003.007\n", &[1], &[0]]);
        let mut want = b"RFB 003.008\n\x01\x01".to_vec();
        want.extend_from_slice(&init);
        assert_eq!(out, want);

        let (out, _) = viewer(Ok(init.clone()), &[b"RFB 003.003\n", &[1]]);
        let mut want = b"RFB 003.008\n\0\0\0\x01".to_vec();
        want.extend_from_slice(&init);
        assert_eq!(out, want);

        // A viewer insisting on VNC Authentication is refused.
        let (_, r) = viewer(Ok(init), &[b"RFB 003.008\n", &[2]]);
        assert_eq!(r.unwrap_err().kind(), "protocol_error");
    }

    #[test]
    fn viewers_see_why_the_bmc_side_failed() {
        let (out, r) = viewer(Err("VNC authentication failed".into()), &[b"RFB 003.008\n"]);
        assert_eq!(r, Ok(Some(ViewerOutcome::Refused)));
        let mut want = b"RFB 003.008\n\0".to_vec();
        want.extend_from_slice(&25u32.to_be_bytes());
        want.extend_from_slice(b"VNC authentication failed");
        assert_eq!(out, want);
        let (out, _) = viewer(Err("x".into()), &[b"RFB 003.003\n"]);
        assert_eq!(&out[12..], b"\0\0\0\0\0\0\0\x01x");
    }

    /// What a run of a [`ViewerAuthHandshake`] produced.
    #[derive(Debug)]
    struct AuthRun {
        out: Vec<u8>,
        outcomes: Vec<ViewerAuthOutcome>,
        error: Option<RfbError>,
    }

    /// Runs a password viewer handshake, feeding `chunks` one after the other and answering
    /// `Authenticated` with `bmc` at once, as the agent does once it has dialed the BMC.
    fn auth_viewer(
        password: &[u8],
        challenge: [u8; 16],
        bmc: Result<Vec<u8>, String>,
        chunks: &[&[u8]],
    ) -> AuthRun {
        let mut out = Vec::new();
        let mut hs = ViewerAuthHandshake::with_password(password, challenge, &mut out);
        let (mut input, mut outcomes, mut bmc) = (Vec::new(), Vec::new(), Some(bmc));
        let mut error = None;
        'feed: for chunk in chunks {
            input.extend_from_slice(chunk);
            loop {
                let step = match hs.step(&mut input, &mut out) {
                    Ok(Some(ViewerAuthOutcome::Authenticated)) => {
                        outcomes.push(ViewerAuthOutcome::Authenticated);
                        hs.bmc_ready(bmc.take().expect("authenticated once"), &mut out)
                    }
                    Ok(None) => break,
                    other => other,
                };
                match step {
                    Ok(None) => {}
                    Ok(Some(o)) => {
                        outcomes.push(o);
                        break 'feed;
                    }
                    Err(e) => {
                        error = Some(e);
                        break 'feed;
                    }
                }
            }
        }
        AuthRun {
            out,
            outcomes,
            error,
        }
    }

    /// The known answer of `vnc_auth_known_answer`: "password" on the challenge 00..0f.
    fn kat() -> ([u8; 16], Vec<u8>) {
        let response = "b866924125c8eebb9debc1db61c538e2";
        let response = (0..32)
            .step_by(2)
            .map(|i| u8::from_str_radix(&response[i..i + 2], 16).unwrap())
            .collect();
        (std::array::from_fn(|i| i as u8), response)
    }

    const VERSIONS: [&[u8; 12]; 3] = [b"RFB 003.008\n", b"RFB 003.007\n", b"RFB 003.003\n"];

    /// A viewer's bytes: its version, its choice (not in 3.3), `response`, ClientInit.
    fn auth_script<'a>(version: &'a [u8; 12], response: &'a [u8]) -> Vec<&'a [u8]> {
        let mut s: Vec<&[u8]> = vec![version];
        if version != b"RFB 003.003\n" {
            s.push(&[2]);
        }
        s.extend([response, &[1][..]]);
        s
    }

    /// What the agent sends up to and including the challenge.
    fn auth_offer(version: &[u8; 12], challenge: &[u8; 16]) -> Vec<u8> {
        let mut want = b"RFB 003.008\n".to_vec();
        if version == b"RFB 003.003\n" {
            want.extend_from_slice(&2u32.to_be_bytes()); // the server's choice
        } else {
            want.extend_from_slice(&[1, 2]); // VNC Authentication only
        }
        want.extend_from_slice(challenge);
        want
    }

    #[test]
    fn password_viewers_get_the_replayed_server_init_in_every_version() {
        let (challenge, response) = kat();
        let init = server_init("tiger1");
        for version in VERSIONS {
            let run = auth_viewer(
                b"password",
                challenge,
                Ok(init.clone()),
                &auth_script(version, &response),
            );
            assert_eq!(run.error, None, "{version:?}");
            assert_eq!(
                run.outcomes,
                [ViewerAuthOutcome::Authenticated, ViewerAuthOutcome::Ready]
            );
            let mut want = auth_offer(version, &challenge);
            want.extend_from_slice(&0u32.to_be_bytes()); // SecurityResult OK
            want.extend_from_slice(&init);
            assert_eq!(run.out, want, "{version:?}");
        }
        // Only the first 8 bytes of the password count, as in VNC.
        let run = auth_viewer(
            b"password-and-more",
            challenge,
            Ok(init),
            &auth_script(b"RFB 003.008\n", &response),
        );
        assert_eq!(run.outcomes.last(), Some(&ViewerAuthOutcome::Ready));
    }

    #[test]
    fn nothing_is_said_about_the_result_until_the_bmc_is_ready() {
        let (challenge, response) = kat();
        let mut out = Vec::new();
        let mut hs = ViewerAuthHandshake::with_password(b"password", challenge, &mut out);
        let mut input = b"RFB 003.008\n\x02".to_vec();
        input.extend_from_slice(&response);
        assert_eq!(
            hs.step(&mut input, &mut out),
            Ok(Some(ViewerAuthOutcome::Authenticated))
        );
        assert_eq!(out, auth_offer(b"RFB 003.008\n", &challenge));
        assert!(input.is_empty());
        out.clear();
        let init = server_init("q");
        assert_eq!(hs.bmc_ready(Ok(init.clone()), &mut out), Ok(None));
        assert_eq!(out, 0u32.to_be_bytes());
        out.clear();
        assert_eq!(hs.step(&mut input, &mut out), Ok(None)); // the ClientInit is still to come
        let mut input = b"\x01session".to_vec();
        assert_eq!(
            hs.step(&mut input, &mut out),
            Ok(Some(ViewerAuthOutcome::Ready))
        );
        assert_eq!(out, init);
        assert_eq!(input, b"session"); // for the relay
    }

    #[test]
    fn a_wrong_response_gets_security_result_failed() {
        let (challenge, right) = kat();
        let mut last_bit = right.clone();
        last_bit[15] ^= 1;
        let wrong = [
            vnc_auth_response(b"passwore", &challenge).to_vec(),
            last_bit,
            challenge.to_vec(),
            vec![0; 16],
        ];
        for version in VERSIONS {
            for response in &wrong {
                let run = auth_viewer(
                    b"password",
                    challenge,
                    Ok(server_init("never")),
                    &auth_script(version, response),
                );
                assert_eq!(run.error, None);
                assert_eq!(run.outcomes, [ViewerAuthOutcome::AuthFailed]);
                let mut want = auth_offer(version, &challenge);
                want.extend_from_slice(&[0, 0, 0, 1]);
                if version == b"RFB 003.008\n" {
                    want.extend_from_slice(&[0, 0, 0, 21]);
                    want.extend_from_slice(b"authentication failed");
                }
                assert_eq!(run.out, want, "{version:?}");
            }
        }
    }

    #[test]
    fn a_viewer_must_choose_vnc_authentication() {
        let challenge = [5u8; 16];
        for version in [b"RFB 003.008\n", b"RFB 003.007\n"] {
            for choice in [SECURITY_NONE, 0, 16, 19, 255] {
                let mut out = Vec::new();
                let mut hs = ViewerAuthHandshake::with_password(b"pw", challenge, &mut out);
                let mut input = version.to_vec();
                input.push(choice);
                let r = hs.step(&mut input, &mut out);
                assert_eq!(r.unwrap_err().kind(), "protocol_error", "{choice}");
                // No challenge went out, and the handshake stays failed.
                assert_eq!(out, b"RFB 003.008\n\x01\x02");
                input = vec![2];
                input.extend_from_slice(&vnc_auth_response(b"pw", &challenge));
                assert!(hs.step(&mut input, &mut out).is_err());
                assert!(hs.bmc_ready(Ok(server_init("x")), &mut out).is_err());
                assert_eq!(out, b"RFB 003.008\n\x01\x02");
            }
        }
    }

    #[test]
    fn a_bmc_failure_after_authentication_reaches_the_viewer() {
        let (challenge, response) = kat();
        let why = "conduit agent: timeout: VNC 10.0.4.17:5900: connect timed out";
        for version in VERSIONS {
            let run = auth_viewer(
                b"password",
                challenge,
                Err(why.into()),
                &auth_script(version, &response),
            );
            assert_eq!(run.error, None);
            assert_eq!(
                run.outcomes,
                [ViewerAuthOutcome::Authenticated, ViewerAuthOutcome::Refused]
            );
            let mut want = auth_offer(version, &challenge);
            want.extend_from_slice(&[0, 0, 0, 1]);
            if version == b"RFB 003.008\n" {
                want.extend_from_slice(&(why.len() as u32).to_be_bytes());
                want.extend_from_slice(why.as_bytes());
            }
            assert_eq!(run.out, want, "{version:?}");
        }
        // Reasons are bounded as the BMC's own are.
        let run = auth_viewer(
            b"password",
            challenge,
            Err("x".repeat(3 * MAX_TEXT)),
            &auth_script(b"RFB 003.008\n", &response),
        );
        let tail = auth_offer(b"RFB 003.008\n", &challenge).len() + 4;
        assert_eq!(run.out[tail..tail + 4], (MAX_TEXT as u32).to_be_bytes()[..]);
        assert_eq!(run.out.len(), tail + 4 + MAX_TEXT);
    }

    #[test]
    fn password_handshakes_split_anywhere_are_the_same() {
        let (challenge, right) = kat();
        let wrong = [0u8; 16];
        for version in VERSIONS {
            for response in [&right[..], &wrong] {
                for bmc in [Ok(server_init("split")), Err("down".to_owned())] {
                    let script = auth_script(version, response).concat();
                    let whole = auth_viewer(b"password", challenge, bmc.clone(), &[&script]);
                    assert_eq!(whole.error, None);
                    let mut runs: Vec<AuthRun> = (0..=script.len())
                        .map(|i| {
                            let (a, b) = script.split_at(i);
                            auth_viewer(b"password", challenge, bmc.clone(), &[a, b])
                        })
                        .collect();
                    let bytes: Vec<&[u8]> = script.chunks(1).collect();
                    runs.push(auth_viewer(b"password", challenge, bmc.clone(), &bytes));
                    for run in runs {
                        assert_eq!(run.error, None);
                        assert_eq!(run.outcomes, whole.outcomes, "{version:?}");
                        assert_eq!(run.out, whole.out, "{version:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn password_handshake_calls_in_the_wrong_state_are_errors() {
        let (challenge, response) = kat();
        let fresh =
            |out: &mut Vec<u8>| ViewerAuthHandshake::with_password(b"password", challenge, out);
        let good = auth_script(b"RFB 003.008\n", &response).concat();

        // bmc_ready before authentication sends nothing and ends the handshake: it cannot
        // stand in for the password.
        let mut out = Vec::new();
        let mut hs = fresh(&mut out);
        out.clear();
        assert!(hs.bmc_ready(Ok(server_init("x")), &mut out).is_err());
        assert!(hs.step(&mut good.clone(), &mut out).is_err());
        assert!(out.is_empty());

        // Stepping while the BMC is dialed, bmc_ready twice, anything after Ready or after a
        // wrong password.
        let mut hs = fresh(&mut out);
        let mut input = good[..29].to_vec(); // version, choice, response
        assert_eq!(
            hs.step(&mut input, &mut out),
            Ok(Some(ViewerAuthOutcome::Authenticated))
        );
        assert!(hs.step(&mut vec![1], &mut out).is_err());
        assert!(hs.bmc_ready(Ok(server_init("x")), &mut out).is_err());

        let mut hs = fresh(&mut out);
        let mut input = good.clone();
        assert_eq!(
            hs.step(&mut input, &mut out),
            Ok(Some(ViewerAuthOutcome::Authenticated))
        );
        assert_eq!(hs.bmc_ready(Ok(server_init("x")), &mut out), Ok(None));
        assert!(hs.bmc_ready(Ok(server_init("x")), &mut out).is_err());

        let mut hs = fresh(&mut out);
        let mut input = good.clone();
        assert!(hs.step(&mut input, &mut out).is_ok());
        assert_eq!(hs.bmc_ready(Ok(server_init("x")), &mut out), Ok(None));
        assert_eq!(
            hs.step(&mut input, &mut out),
            Ok(Some(ViewerAuthOutcome::Ready))
        );
        assert!(hs.step(&mut vec![1], &mut out).is_err());
        assert!(hs.bmc_ready(Err("x".into()), &mut out).is_err());

        let mut hs = fresh(&mut out);
        let mut input = b"RFB 003.008\n\x02".to_vec();
        input.extend_from_slice(&[0; 16]);
        assert_eq!(
            hs.step(&mut input, &mut out),
            Ok(Some(ViewerAuthOutcome::AuthFailed))
        );
        let before = out.len();
        assert!(hs.bmc_ready(Ok(server_init("x")), &mut out).is_err());
        assert!(hs.step(&mut input, &mut out).is_err());
        assert_eq!(out.len(), before);
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let prefixes: [&[u8]; 4] = [b"", b"RFB 003.008\n", b"RFB 003.007\n", b"RFB 003.003\n"];
        for i in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut input = prefixes[i % 4].to_vec();
            input.extend((0..len).map(|_| next() as u8));
            let mut hs = BmcHandshake::new(if i % 2 == 0 { Some(b"pw") } else { None });
            let _ = hs.step(&mut input.clone(), &mut Vec::new());
            let mut out = Vec::new();
            let mut v = ViewerHandshake::start(Ok(vec![0; 24]), &mut out);
            let _ = v.step(&mut input, &mut out);
        }

        // The password handshake, fed in random chunks, with bmc_ready called at random
        // points (mostly wrong ones): never a panic, never past the password without it, and
        // never more output than one handshake's worth.
        for i in 0..20_000 {
            let challenge: [u8; 16] = std::array::from_fn(|_| next() as u8);
            let right = vnc_auth_response(b"pw", &challenge);
            let version = VERSIONS[i % 3];
            let script = auth_script(version, &right);
            // Nothing, the version, the version and the choice, all up to the response.
            let kept = [0, 1, script.len() - 2, script.len() - 1][(i / 3) % 4];
            let knows = kept == script.len() - 1;
            let mut input = script[..kept].concat();
            let len = (next() % 64) as usize;
            input.extend((0..len).map(|_| next() as u8));

            let mut out = Vec::new();
            let mut hs = ViewerAuthHandshake::with_password(b"pw", challenge, &mut out);
            let (mut fed, mut rest, mut authenticated) = (Vec::new(), &input[..], false);
            while !rest.is_empty() {
                let n = (1 + next() % 8).min(rest.len() as u64) as usize;
                fed.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if next() % 16 == 0 {
                    let _ = hs.bmc_ready(Ok(server_init("early")), &mut out);
                }
                if let Ok(Some(ViewerAuthOutcome::Authenticated)) = hs.step(&mut fed, &mut out) {
                    authenticated = true;
                    let bmc = if next() % 2 == 0 {
                        Ok(server_init("x"))
                    } else {
                        Err("down".to_owned())
                    };
                    let _ = hs.bmc_ready(bmc, &mut out);
                }
            }
            assert!(
                knows || !authenticated,
                "authenticated without the password"
            );
            assert!(out.len() <= 128, "{} bytes out", out.len());
        }
    }
}
