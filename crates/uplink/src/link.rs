//! WebSocket messages (RFC 6455) over an async byte stream, for the uplink's two ends.

use std::io;

use conduit_ws::{self as ws, close_code, Fragments, Opcode, WsError};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Which end we are: clients mask what they send and expect unmasked frames back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The agent.
    Client,
    /// The gateway.
    Server,
}

/// What ended a link or refused a handshake.
#[derive(Debug)]
pub enum LinkError {
    /// The socket failed.
    Io(io::Error),
    /// The peer closed the connection without a close frame.
    Eof,
    /// The peer broke the protocol; the close code to send, and why.
    Protocol(u16, &'static str),
    /// A message over the limit.
    TooLarge,
    /// The opening handshake failed.
    Handshake(String),
}

impl LinkError {
    /// A short word for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::Io(_) => "io",
            LinkError::Eof => "eof",
            LinkError::Protocol(..) => "protocol",
            LinkError::TooLarge => "too_large",
            LinkError::Handshake(_) => "handshake",
        }
    }
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Io(e) => write!(f, "i/o: {e}"),
            LinkError::Eof => f.write_str("connection closed"),
            LinkError::Protocol(_, why) => write!(f, "protocol error: {why}"),
            LinkError::TooLarge => f.write_str("message too large"),
            LinkError::Handshake(why) => write!(f, "websocket handshake: {why}"),
        }
    }
}

impl std::error::Error for LinkError {}

impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> Self {
        LinkError::Io(e)
    }
}

impl From<WsError> for LinkError {
    fn from(e: WsError) -> Self {
        match e {
            WsError::TooLarge => LinkError::TooLarge,
            WsError::Unmasked => LinkError::Protocol(close_code::PROTOCOL_ERROR, "unmasked frame"),
            WsError::Reserved => LinkError::Protocol(close_code::PROTOCOL_ERROR, "reserved bits"),
            WsError::BadControl => {
                LinkError::Protocol(close_code::PROTOCOL_ERROR, "malformed control frame")
            }
            WsError::BadHandshake(why) => LinkError::Handshake(why.into()),
        }
    }
}

/// What the reader hands up.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text or binary message.
    Message(Vec<u8>),
    /// A ping: the caller answers it with a pong of this payload.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame (its code, if it had a valid one).
    Close(Option<u16>),
}

/// Reads whole messages from the peer.
#[derive(Debug)]
pub struct MessageReader<R> {
    inner: R,
    role: Role,
    max: usize,
    buf: Vec<u8>,
    fragments: Fragments,
    message: Vec<u8>,
    /// Bytes of wire read (frames and all), for the byte counters.
    pub bytes_read: u64,
}

/// How much is asked of the stream per read inside a frame.
const READ_CHUNK: usize = 8 * 1024;
/// How much is asked of the stream per read between frames: an idle link (thousands of them
/// at a gateway) then keeps a small buffer, and a heartbeat fits.
const IDLE_CHUNK: usize = 512;

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// A reader over `inner`, starting with bytes already read past a handshake.
    pub fn new(inner: R, role: Role, max_message: usize, already: Vec<u8>) -> Self {
        MessageReader {
            inner,
            role,
            max: max_message,
            buf: already,
            fragments: Fragments::default(),
            message: Vec::new(),
            bytes_read: 0,
        }
    }

    /// Changes the largest message accepted from now on (a gateway takes a smaller first
    /// message, before the peer has authenticated).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max = max_message;
    }

    /// The next message or control frame. Cancel-safe: dropping the future between reads
    /// loses nothing already read (a caller may race it against a timer or a shutdown).
    pub async fn next(&mut self) -> Result<Incoming, LinkError> {
        loop {
            let decoded = match self.role {
                Role::Server => ws::decode_client_frame(&self.buf, self.max)?,
                Role::Client => ws::decode_server_frame(&self.buf, self.max)?,
            };
            let Some((frame, used)) = decoded else {
                self.fill().await?;
                continue;
            };
            self.buf.drain(..used);
            if self.buf.is_empty() && self.buf.capacity() > IDLE_CHUNK {
                // A message bigger than a heartbeat passed: an idle link (thousands of them
                // at a gateway) keeps no more than the next small read needs.
                self.buf = Vec::new();
            }
            match frame.opcode {
                Opcode::Ping => return Ok(Incoming::Ping(frame.payload)),
                Opcode::Pong => return Ok(Incoming::Pong),
                Opcode::Close => {
                    let code = ws::check_close_payload(&frame.payload)
                        .ok()
                        .and_then(|()| frame.payload.get(..2))
                        .map(|c| u16::from_be_bytes([c[0], c[1]]));
                    return Ok(Incoming::Close(code));
                }
                data => {
                    self.fragments
                        .data(data, frame.fin)
                        .map_err(|code| LinkError::Protocol(code, "fragments out of order"))?;
                    if self.message.len() + frame.payload.len() > self.max {
                        return Err(LinkError::TooLarge);
                    }
                    if self.message.is_empty() && frame.fin {
                        return Ok(Incoming::Message(frame.payload));
                    }
                    self.message.extend_from_slice(&frame.payload);
                    if frame.fin {
                        return Ok(Incoming::Message(std::mem::take(&mut self.message)));
                    }
                }
            }
        }
    }

    async fn fill(&mut self) -> Result<(), LinkError> {
        let chunk = if self.buf.is_empty() {
            IDLE_CHUNK
        } else {
            READ_CHUNK
        };
        // Grow and shrink back within one poll, so that no await point leaves the buffer
        // holding unread zeros if the future is dropped.
        let n = futures_lite::future::poll_fn(|cx| {
            let len = self.buf.len();
            self.buf.resize(len + chunk, 0);
            let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut self.buf[len..]);
            let got = match &polled {
                std::task::Poll::Ready(Ok(n)) => *n,
                _ => 0,
            };
            self.buf.truncate(len + got);
            polled
        })
        .await;
        match n? {
            0 => Err(LinkError::Eof),
            n => {
                self.bytes_read += n as u64;
                Ok(())
            }
        }
    }
}

/// One frame as `role` sends it (a client masks with fresh random bytes).
pub fn frame(role: Role, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    match role {
        Role::Server => ws::encode_server_frame(opcode, payload),
        Role::Client => {
            let mut mask = [0u8; 4];
            // A predictable mask only weakens a defence meant for browsers' proxies: an OS
            // without randomness still gets a working (if guessable) mask.
            let _ = getrandom::fill(&mut mask);
            ws::encode_client_frame(opcode, payload, mask)
        }
    }
}

/// A close frame with `code` and a short reason.
pub fn close_frame(role: Role, code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // Control frames carry at most 125 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(role, Opcode::Close, &payload)
}

/// The longest handshake answer read.
const MAX_ANSWER: usize = 8 * 1024;

/// The client's opening handshake on `stream`: the upgrade request for `path` on `host` with
/// `extra` header lines (each `Name: value\r\n`), then the server's answer checked, including
/// the subprotocol. Returns the bytes that followed the answer (the start of the first frame).
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
    protocol: &str,
    extra: &str,
) -> Result<Vec<u8>, LinkError> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random)
        .map_err(|e| LinkError::Handshake(format!("no random key: {e}")))?;
    let key = ws::client_key(random);
    let mut request = ws::client_request(host, path, &key, Some(protocol));
    request.insert_str(request.len() - 2, extra);
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_ANSWER {
            return Err(LinkError::Handshake("answer head too long".into()));
        }
        let len = buf.len();
        buf.resize(len + 1024, 0);
        let n = stream.read(&mut buf[len..]).await?;
        buf.truncate(len + n);
        if n == 0 {
            return Err(LinkError::Handshake("closed before answering".into()));
        }
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| LinkError::Handshake("answer is not text".into()))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 ").or(l.strip_prefix("HTTP/1.0 ")))
        .and_then(|l| l.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LinkError::Handshake("malformed status line".into()))?;
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    if status != 101 {
        return Err(LinkError::Handshake(format!("gateway answered {status}")));
    }
    ws::check_server_answer(status, header, &key)?;
    if header("Sec-WebSocket-Protocol") != Some(protocol) {
        return Err(LinkError::Handshake(format!(
            "gateway did not agree to {protocol}"
        )));
    }
    Ok(buf.split_off(end))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The server's `101 Switching Protocols` answer for an accepted upgrade.
pub fn switching_protocols(accepted: &ws::Accepted) -> String {
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accepted.accept
    );
    if let Some(p) = &accepted.protocol {
        head.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Writes one frame and flushes it.
pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(role: Role, wire: Vec<u8>, max: usize) -> Vec<Result<Incoming, String>> {
        smol::block_on(async {
            let mut r = MessageReader::new(futures_lite::io::Cursor::new(wire), role, max, vec![]);
            let mut out = Vec::new();
            loop {
                match r.next().await {
                    Err(LinkError::Eof) => return out,
                    Err(e) => {
                        out.push(Err(e.kind().to_owned()));
                        return out;
                    }
                    Ok(m) => out.push(Ok(m)),
                }
            }
        })
    }

    #[test]
    fn fragments_are_reassembled_around_control_frames() {
        let mut wire = ws::encode_client_frame(Opcode::Text, b"{\"a\":", [1, 2, 3, 4]);
        wire[0] &= 0x7f; // not fin
        wire.extend(ws::encode_client_frame(Opcode::Ping, b"p", [5; 4]));
        wire.extend(ws::encode_client_frame(Opcode::Continuation, b"1}", [9; 4]));
        wire.extend(frame(Role::Client, Opcode::Text, b"x"));
        let got = read_all(Role::Server, wire, 64);
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Ping(b"p".to_vec())),
                Ok(Incoming::Message(b"{\"a\":1}".to_vec())),
                Ok(Incoming::Message(b"x".to_vec())),
            ]
        );
    }

    #[test]
    fn bad_frames_end_the_link_with_a_reason() {
        // unmasked from a client
        let got = read_all(
            Role::Server,
            ws::encode_server_frame(Opcode::Text, b"x"),
            64,
        );
        assert_eq!(got, vec![Err("protocol".into())]);
        // a continuation with nothing open
        let got = read_all(
            Role::Server,
            ws::encode_client_frame(Opcode::Continuation, b"x", [1; 4]),
            64,
        );
        assert_eq!(got, vec![Err("protocol".into())]);
        // too large in one frame, and too large across fragments
        let got = read_all(
            Role::Server,
            frame(Role::Client, Opcode::Text, &[b'a'; 65]),
            64,
        );
        assert_eq!(got, vec![Err("too_large".into())]);
        let mut wire = frame(Role::Client, Opcode::Text, &[b'a'; 40]);
        wire[0] &= 0x7f;
        wire.extend(frame(Role::Client, Opcode::Continuation, &[b'a'; 40]));
        assert_eq!(
            read_all(Role::Server, wire, 64),
            vec![Err("too_large".into())]
        );
    }

    /// Gives one byte per read, and `Pending` before each.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        ready: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            let Some(&b) = self.data.get(self.pos) else {
                return std::task::Poll::Ready(Ok(0));
            };
            self.pos += 1;
            buf[0] = b;
            std::task::Poll::Ready(Ok(1))
        }
    }

    #[test]
    fn a_reader_dropped_mid_read_loses_nothing() {
        let mut wire = frame(Role::Client, Opcode::Text, b"{\"a\":");
        wire[0] &= 0x7f;
        wire.extend(frame(Role::Client, Opcode::Continuation, b"1}"));
        wire.extend(frame(Role::Client, Opcode::Text, b"hb"));
        let trickle = Trickle {
            data: wire,
            pos: 0,
            ready: false,
        };
        let mut r = MessageReader::new(trickle, Role::Server, 64, vec![]);
        let mut got = Vec::new();
        // Every `next` future is polled once and dropped, as a race against a timer would.
        for _ in 0..1000 {
            match smol::block_on(futures_lite::future::poll_once(r.next())) {
                None => continue,
                Some(Ok(m)) => got.push(m),
                Some(Err(LinkError::Eof)) => break,
                Some(Err(e)) => panic!("{e}"),
            }
        }
        assert_eq!(
            got,
            vec![
                Incoming::Message(b"{\"a\":1}".to_vec()),
                Incoming::Message(b"hb".to_vec())
            ]
        );
    }

    #[test]
    fn a_reader_survives_any_bytes() {
        // Random wire: always a message, a control frame, an error or the end — never a panic.
        let mut state = 0x2545_f491_u32;
        for round in 0..2000 {
            let len = (round % 97) as usize;
            let wire: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            for role in [Role::Client, Role::Server] {
                let _ = read_all(role, wire.clone(), 32);
            }
        }
    }

    #[test]
    fn close_reasons_are_cut_at_a_character() {
        let f = close_frame(Role::Server, 1008, &"é".repeat(100));
        let (frame, _) = ws::decode_server_frame(&f, 125).unwrap().unwrap();
        assert!(frame.payload.len() <= 125);
        assert!(ws::check_close_payload(&frame.payload).is_ok());
    }
}
