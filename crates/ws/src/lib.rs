//! WebSocket (RFC 6455), the pieces both console proxies (agent) and the gateway's streams
//! use: the opening handshakes (server and client side) and the frame codec. Pure: bytes in,
//! values or bytes out; no sockets, no HTTP serving (`conduit-http` turns [`Accepted`] into its
//! 101 response).
//!
//! Frames from clients must be masked (§5.1); frames we send are not. Payloads are bounded
//! by the caller's limit: an oversized frame is an error before any of it is buffered.

pub mod scan;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a handshake or a frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// Not a valid WebSocket upgrade request.
    BadHandshake(&'static str),
    /// A frame from a client without a mask.
    Unmasked,
    /// Reserved bits or opcodes used.
    Reserved,
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControl,
    /// A frame larger than the limit.
    TooLarge,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::BadHandshake(why) => write!(f, "websocket handshake: {why}"),
            WsError::Unmasked => f.write_str("unmasked client frame"),
            WsError::Reserved => f.write_str("reserved bits or opcode"),
            WsError::BadControl => f.write_str("malformed control frame"),
            WsError::TooLarge => f.write_str("frame too large"),
        }
    }
}

impl std::error::Error for WsError {}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    conduit_base64::encode(&h.finalize())
}

/// A valid upgrade request, as the server answers it: `Sec-WebSocket-Accept` and the chosen
/// subprotocol. The HTTP layer turns it into the `101 Switching Protocols` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept`.
    pub accept: String,
    /// `Sec-WebSocket-Protocol`, when the client offered the one we speak.
    pub protocol: Option<String>,
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Validates a client's opening handshake (§4.2.1): `is_get` and the request's header lookup
/// (case-insensitive names). When the client offers subprotocols, `protocol` (e.g. `binary`,
/// what noVNC asks for) is chosen if offered.
pub fn accept<'h>(
    is_get: bool,
    header: impl Fn(&str) -> Option<&'h str>,
    protocol: Option<&str>,
) -> Result<Accepted, WsError> {
    if !is_get {
        return Err(WsError::BadHandshake("method is not GET"));
    }
    if !has_token(header("Upgrade"), "websocket") || !has_token(header("Connection"), "upgrade") {
        return Err(WsError::BadHandshake("not an upgrade to websocket"));
    }
    if header("Sec-WebSocket-Version").map(str::trim) != Some("13") {
        return Err(WsError::BadHandshake("unsupported version"));
    }
    let key = header("Sec-WebSocket-Key").ok_or(WsError::BadHandshake("no key"))?;
    Ok(Accepted {
        accept: accept_key(key),
        protocol: protocol
            .filter(|p| has_token(header("Sec-WebSocket-Protocol"), p))
            .map(str::to_owned),
    })
}

/// The client's opening handshake (§4.1): the request head for `path` on `host`, with `key`
/// (16 random bytes, base64; see [`client_key`]) and an optional subprotocol.
pub fn client_request(host: &str, path: &str, key: &str, protocol: Option<&str>) -> String {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    );
    if let Some(p) = protocol {
        head.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A `Sec-WebSocket-Key` from 16 bytes the caller drew from the OS random source.
pub fn client_key(random: [u8; 16]) -> String {
    conduit_base64::encode(&random)
}

/// Checks the server's answer to [`client_request`]: status 101, the upgrade headers and the
/// accept value for `key`.
pub fn check_server_answer<'h>(
    status: u16,
    header: impl Fn(&str) -> Option<&'h str>,
    key: &str,
) -> Result<(), WsError> {
    if status != 101 {
        return Err(WsError::BadHandshake("server did not switch protocols"));
    }
    if !has_token(header("Upgrade"), "websocket") || !has_token(header("Connection"), "upgrade") {
        return Err(WsError::BadHandshake("not an upgrade to websocket"));
    }
    if header("Sec-WebSocket-Accept").map(str::trim) != Some(accept_key(key).as_str()) {
        return Err(WsError::BadHandshake("wrong Sec-WebSocket-Accept"));
    }
    Ok(())
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Last fragment of its message.
    pub fin: bool,
    /// Opcode.
    pub opcode: Opcode,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Decodes one client frame from the start of `buf`: `Ok(None)` when more bytes are needed,
/// else the frame and how many bytes it took. Client frames must be masked; payloads over
/// `max_payload` are refused as soon as the header says so.
pub fn decode_client_frame(
    buf: &[u8],
    max_payload: usize,
) -> Result<Option<(Frame, usize)>, WsError> {
    decode(buf, max_payload, true)
}

/// Decodes one server frame (unmasked), for clients and tests.
pub fn decode_server_frame(
    buf: &[u8],
    max_payload: usize,
) -> Result<Option<(Frame, usize)>, WsError> {
    decode(buf, max_payload, false)
}

/// A frame located in a buffer: its header fields and where its payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRef {
    /// Last fragment of its message.
    pub fin: bool,
    /// Opcode.
    pub opcode: Opcode,
    /// The payload's range in the buffer (unmasked in place for client frames).
    pub payload: std::ops::Range<usize>,
    /// Bytes the whole frame takes from the start of the buffer.
    pub used: usize,
}

/// Like [`decode_client_frame`], without copying: the payload is unmasked where it lies in
/// `buf` and returned as a range, so a relay allocates nothing per frame.
pub fn decode_client_frame_in_place(
    buf: &mut [u8],
    max_payload: usize,
) -> Result<Option<FrameRef>, WsError> {
    let Some((frame, mask)) = locate(buf, max_payload, true)? else {
        return Ok(None);
    };
    if let Some(m) = mask {
        for (i, b) in buf[frame.payload.clone()].iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Ok(Some(frame))
}

fn decode(buf: &[u8], max_payload: usize, masked: bool) -> Result<Option<(Frame, usize)>, WsError> {
    let Some((f, mask)) = locate(buf, max_payload, masked)? else {
        return Ok(None);
    };
    let mut payload = buf[f.payload.clone()].to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Ok(Some((
        Frame {
            fin: f.fin,
            opcode: f.opcode,
            payload,
        },
        f.used,
    )))
}

/// A frame found in a buffer, with its mask key (client frames).
type Located = (FrameRef, Option<[u8; 4]>);

/// Parses a frame header and checks the whole frame is in `buf`: the frame and its mask key.
fn locate(buf: &[u8], max_payload: usize, masked: bool) -> Result<Option<Located>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::Reserved)?;
    let fin = b0 & 0x80 != 0;
    if (b1 & 0x80 != 0) != masked {
        return Err(WsError::Unmasked);
    }
    let mut pos = 2;
    let len = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            pos = 4;
            u64::from(u16::from_be_bytes([b[0], b[1]]))
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            pos = 10;
            u64::from_be_bytes(b.try_into().map_err(|_| WsError::Reserved)?)
        }
        n => u64::from(n),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(WsError::BadControl);
    }
    if len > max_payload as u64 {
        return Err(WsError::TooLarge);
    }
    let len = len as usize;
    let mask = if masked {
        let Some(m) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        pos += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    if buf.len() < pos + len {
        return Ok(None);
    }
    Ok(Some((
        FrameRef {
            fin,
            opcode,
            payload: pos..pos + len,
            used: pos + len,
        },
        mask,
    )))
}

/// A frame header without a mask key: the bytes and how many of them are used.
fn header_bytes(opcode: Opcode, len: usize, mask: bool) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode.bits();
    let m = if mask { 0x80 } else { 0 };
    match len {
        0..=125 => {
            h[1] = m | len as u8;
            (h, 2)
        }
        126..=0xFFFF => {
            h[1] = m | 126;
            h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            (h, 4)
        }
        _ => {
            h[1] = m | 127;
            h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            (h, 10)
        }
    }
}

fn header(opcode: Opcode, len: usize, mask: bool, out: &mut Vec<u8>) {
    let (h, n) = header_bytes(opcode, len, mask);
    out.extend_from_slice(&h[..n]);
}

/// Writes the header of a final, unmasked (server) frame carrying `payload_len` bytes into the
/// end of `room` (at most [`MAX_SERVER_HEADER`] bytes) and returns where it starts: a relay
/// reads its payload right after `room` and sends both with one write, without copying.
pub fn put_server_header(opcode: Opcode, payload_len: usize, room: &mut [u8]) -> usize {
    let (h, n) = header_bytes(opcode, payload_len, false);
    let start = room.len() - n;
    room[start..].copy_from_slice(&h[..n]);
    start
}

/// Longest server frame header.
pub const MAX_SERVER_HEADER: usize = 10;

/// Encodes one final, unmasked (server) frame.
pub fn encode_server_frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    header(opcode, payload.len(), false, &mut out);
    out.extend_from_slice(payload);
    out
}

/// Encodes one final, unmasked (server) frame into `out` (cleared first): a relay reusing one
/// buffer per connection allocates nothing per frame once the buffer has grown.
pub fn encode_server_frame_into(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    header(opcode, payload.len(), false, out);
    out.extend_from_slice(payload);
}

/// Encodes one final, masked (client) frame with `mask`.
pub fn encode_client_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    header(opcode, payload.len(), true, &mut out);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The close codes a relay answers protocol violations with (RFC 6455 §7.4.1).
pub mod close_code {
    /// A normal end.
    pub const NORMAL: u16 = 1000;
    /// A protocol error: bad framing, fragmentation out of order.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Data inconsistent with its type: a text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
    /// A message that breaks the application's rules (out of order, not allowed).
    pub const POLICY: u16 = 1008;
}

/// Which message a connection's data frames belong to: the fragmentation rules of RFC 6455
/// §5.4. A message is one Text or Binary frame, then Continuation frames until one has FIN set;
/// control frames may come in between (they are not data and are not fed here). A
/// Continuation with no message open, or a new Text/Binary while one is open, is a protocol
/// error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fragments {
    open: Option<Opcode>,
}

impl Fragments {
    /// Feeds one data frame (`opcode` Text, Binary or Continuation, in arrival order); returns
    /// the type of the message its payload belongs to (Text or Binary), or the close code.
    pub fn data(&mut self, opcode: Opcode, fin: bool) -> Result<Opcode, u16> {
        let kind = match (opcode, self.open) {
            (Opcode::Continuation, Some(kind)) => kind,
            (Opcode::Text | Opcode::Binary, None) => opcode,
            _ => return Err(close_code::PROTOCOL_ERROR),
        };
        self.open = (!fin).then_some(kind);
        Ok(kind)
    }
}

/// Checks a Close frame's payload (§5.5.1, §7.4): empty, or a code we may receive and a UTF-8
/// reason. `Err` is the close code to answer with.
pub fn check_close_payload(payload: &[u8]) -> Result<(), u16> {
    match payload {
        [] => Ok(()),
        [_] => Err(close_code::PROTOCOL_ERROR),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                Err(close_code::PROTOCOL_ERROR)
            } else if std::str::from_utf8(reason).is_err() {
                Err(close_code::INVALID_DATA)
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragmentation_rules() {
        let mut f = Fragments::default();
        assert_eq!(f.data(Opcode::Text, false), Ok(Opcode::Text));
        assert_eq!(f.data(Opcode::Continuation, false), Ok(Opcode::Text));
        // A new message inside one: refused.
        assert_eq!(f.clone().data(Opcode::Binary, true), Err(1002));
        assert_eq!(f.data(Opcode::Continuation, true), Ok(Opcode::Text));
        assert_eq!(
            f.data(Opcode::Continuation, true),
            Err(1002),
            "nothing open"
        );
        assert_eq!(f.data(Opcode::Binary, true), Ok(Opcode::Binary));
        assert_eq!(f.data(Opcode::Binary, false), Ok(Opcode::Binary));
        assert_eq!(f.data(Opcode::Text, true), Err(1002));
    }

    #[test]
    fn close_payloads() {
        assert_eq!(check_close_payload(b""), Ok(()));
        assert_eq!(check_close_payload(&[0x03, 0xE8]), Ok(())); // 1000
        assert_eq!(check_close_payload(&[0x03]), Err(1002));
        assert_eq!(check_close_payload(&[0x03, 0xED]), Err(1002)); // 1005 is never sent
        assert_eq!(check_close_payload(&[0x03, 0xE8, 0xC3, 0x28]), Err(1007));
        assert_eq!(check_close_payload(&[0x0F, 0xA0, b'o', b'k']), Ok(())); // 4000
    }

    #[test]
    fn in_place_decoding_matches_the_copying_decoder() {
        let mut stream = Vec::new();
        for (i, len) in [0usize, 5, 125, 126, 70_000].into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            stream.extend(encode_client_frame(
                Opcode::Binary,
                &payload,
                [9, 8, 7, i as u8],
            ));
        }
        let mut copy = stream.clone();
        while let Some((frame, used)) = decode_client_frame(&copy, 1 << 20).unwrap() {
            let mut head = stream[..used].to_vec();
            let r = decode_client_frame_in_place(&mut head, 1 << 20)
                .unwrap()
                .unwrap();
            assert_eq!((r.used, r.opcode, r.fin), (used, frame.opcode, frame.fin));
            assert_eq!(head[r.payload], frame.payload[..]);
            stream.drain(..used);
            copy.drain(..used);
        }
        assert!(copy.is_empty());
        // Incomplete and refused frames behave the same way.
        let f = encode_client_frame(Opcode::Binary, &[1; 300], [1, 2, 3, 4]);
        assert_eq!(
            decode_client_frame_in_place(&mut f[..200].to_vec(), 1 << 20),
            Ok(None)
        );
        assert_eq!(
            decode_client_frame_in_place(&mut f.clone(), 100),
            Err(WsError::TooLarge)
        );
    }

    #[test]
    fn header_in_place_matches_the_encoder() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 100_000] {
            let payload = vec![0xA5u8; len];
            let mut buf = vec![0u8; MAX_SERVER_HEADER + len];
            buf[MAX_SERVER_HEADER..].copy_from_slice(&payload);
            let start = put_server_header(Opcode::Binary, len, &mut buf[..MAX_SERVER_HEADER]);
            assert_eq!(
                buf[start..],
                encode_server_frame(Opcode::Binary, &payload)[..]
            );
        }
    }

    #[test]
    fn rfc6455_accept_key() {
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn server_accepts_and_client_checks() {
        let key = client_key(*b"the sample nonce");
        assert_eq!(key, "dGhlIHNhbXBsZSBub25jZQ==");
        let head = client_request("bmc:8090", "/console/sol/n1", &key, Some("binary"));
        let headers: Vec<(&str, &str)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(": "))
            .collect();
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let a = accept(true, lookup, Some("binary")).unwrap();
        assert_eq!(a.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(a.protocol.as_deref(), Some("binary"));
        assert_eq!(accept(true, lookup, Some("text")).unwrap().protocol, None);
        assert_eq!(
            accept(false, lookup, None),
            Err(WsError::BadHandshake("method is not GET"))
        );
        let no_key = |name: &str| lookup(name).filter(|_| name != "Sec-WebSocket-Key");
        assert_eq!(
            accept(true, no_key, None),
            Err(WsError::BadHandshake("no key"))
        );

        let answer = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        let reply = |name: &str| {
            answer
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        assert_eq!(check_server_answer(101, reply, &key), Ok(()));
        assert!(check_server_answer(200, reply, &key).is_err());
        assert_eq!(
            check_server_answer(101, reply, "AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(WsError::BadHandshake("wrong Sec-WebSocket-Accept"))
        );
    }

    #[test]
    fn frames_round_trip_at_every_length_boundary() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let c = encode_client_frame(Opcode::Binary, &payload, [1, 2, 3, 4]);
            let (f, used) = decode_client_frame(&c, 1 << 20).unwrap().unwrap();
            assert_eq!((f.opcode, f.fin, used), (Opcode::Binary, true, c.len()));
            assert_eq!(f.payload, payload);
            // Any prefix asks for more bytes, never errs or panics.
            for cut in [0, 1, 2, 3, c.len() / 2, c.len() - 1] {
                assert_eq!(
                    decode_client_frame(&c[..cut.min(c.len())], 1 << 20),
                    Ok(None),
                    "cut {cut} of {len}"
                );
            }
            let s = encode_server_frame(Opcode::Binary, &payload);
            assert_eq!(
                decode_server_frame(&s, 1 << 20).unwrap().unwrap().0.payload,
                payload
            );
            let mut reused = b"left over".to_vec();
            encode_server_frame_into(Opcode::Binary, &payload, &mut reused);
            assert_eq!(reused, s);
        }
    }

    #[test]
    fn refuses_bad_frames() {
        let unmasked = encode_server_frame(Opcode::Text, b"hi");
        assert_eq!(decode_client_frame(&unmasked, 100), Err(WsError::Unmasked));
        let big = encode_client_frame(Opcode::Binary, &[0; 200], [0; 4]);
        assert_eq!(decode_client_frame(&big, 100), Err(WsError::TooLarge));
        let mut rsv = encode_client_frame(Opcode::Binary, b"x", [0; 4]);
        rsv[0] |= 0x40;
        assert_eq!(decode_client_frame(&rsv, 100), Err(WsError::Reserved));
        let long_ping = encode_client_frame(Opcode::Ping, &[0; 126], [0; 4]);
        assert_eq!(
            decode_client_frame(&long_ping, 1000),
            Err(WsError::BadControl)
        );
        // A 64-bit length beyond the limit is refused from the header alone.
        let huge = [0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(decode_client_frame(&huge, 1 << 20), Err(WsError::TooLarge));
    }

    #[test]
    fn mutated_frames_never_panic() {
        let seed = encode_client_frame(Opcode::Binary, b"some console bytes", [9, 8, 7, 6]);
        let mut x = 0x9E3779B97F4A7C15u64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut m = seed.clone();
            let i = (x as usize) % m.len();
            m[i] = (x >> 32) as u8;
            m.truncate(((x >> 40) as usize) % (m.len() + 1));
            let _ = decode_client_frame(&m, 1024);
            let _ = decode_server_frame(&m, 1024);
            let _ = decode_client_frame_in_place(&mut m, 1024);
        }
    }
}
