//! A blocking WebSocket client for the gateway's consoles, over the HTTP client's connection
//! (plain or TLS), one thread receiving while another sends. Over plain TCP the two halves
//! are independent sockets. Over TLS they share the connection behind a lock that the receiver
//! takes only once `poll` says bytes are there (or TLS may hold decrypted ones), so a keystroke
//! waits at most for one read already under way.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conduit_ws::{self as ws, Opcode};
use http_client::{Client, Stream};

/// Largest message taken from a console (a VNC framebuffer update can be large).
const MAX_MESSAGE: usize = 16 << 20;
/// Longest head of the server's answer.
const MAX_HEAD: usize = 16 * 1024;
/// A write that takes longer than this ends the console (a dead or stuck link).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Console bytes.
    Binary(Vec<u8>),
    /// A text message.
    Text(String),
    /// The peer closed: its code and reason, if it said.
    Closed(Option<(u16, String)>),
}

/// How opening failed.
#[derive(Debug)]
pub enum OpenError {
    /// The server answered, but not 101: its status and the start of its body.
    Refused(u16, String),
    /// No usable answer.
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Refused(status, body) => write!(f, "HTTP {status}: {}", body.trim()),
            OpenError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for OpenError {}

/// The connection: a plain socket's two halves, or one TLS stream for both.
enum Conn {
    Plain(Mutex<TcpStream>),
    Tls(Mutex<Stream>),
}

impl Conn {
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => {
                let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.write_all(bytes)
            }
            Conn::Tls(s) => {
                let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.write_all(bytes).and_then(|()| s.flush())
            }
        }
    }
}

/// The sending half (cheap to clone).
#[derive(Clone)]
#[allow(missing_debug_implementations)] // a socket
pub struct Sender {
    conn: Arc<Conn>,
}

/// The receiving half.
#[allow(missing_debug_implementations)] // a socket
pub struct Receiver {
    conn: Arc<Conn>,
    /// The socket, for `poll` (and, over plain TCP, for reading).
    socket: TcpStream,
    raw: Vec<u8>,
    message: Vec<u8>,
    fragments: ws::Fragments,
    opcode: Opcode,
    heard: Instant,
}

/// Opens a WebSocket to `path` (with its query) at `client`'s peer, offering `protocol`.
pub fn open(
    client: &Client,
    path: &str,
    protocol: Option<&str>,
) -> Result<(Sender, Receiver), OpenError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| OpenError::Failed(format!("{what}: {e}"));
    let mut stream = client.connect().map_err(|e| failed("connecting", &e))?;
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| failed("the OS random source", &e))?;
    let key = ws::client_key(random);
    let request = ws::client_request(client.authority(), path, &key, protocol);
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| failed("sending the upgrade", &e))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            return Err(OpenError::Failed("the answer's head is too long".into()));
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(OpenError::Failed(
                    "the server closed without answering".into(),
                ))
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(failed("reading the answer", &e)),
        }
    };
    let rest = head.split_off(end);
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| OpenError::Failed("a malformed answer".into()))?;
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
        // The reason is in the body: small, read what came and a little more.
        let mut body = rest;
        let _ = stream.set_timeout(Some(Duration::from_secs(2)));
        if let Ok(n) = stream.read(&mut buf) {
            body.extend_from_slice(&buf[..n]);
        }
        body.truncate(512);
        return Err(OpenError::Refused(
            status,
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    ws::check_server_answer(status, header, &key).map_err(|e| failed("the upgrade", &e))?;
    if protocol.is_some() && header("Sec-WebSocket-Protocol") != protocol {
        return Err(OpenError::Failed(
            "the server did not take the console's subprotocol".into(),
        ));
    }
    let socket = stream
        .tcp()
        .try_clone()
        .map_err(|e| failed("the socket", &e))?;
    stream
        .set_timeout(Some(WRITE_TIMEOUT))
        .map_err(|e| failed("the socket", &e))?;
    let conn = Arc::new(match stream {
        Stream::Plain(s) => {
            socket
                .set_read_timeout(Some(Duration::from_millis(1)))
                .map_err(|e| failed("the socket", &e))?;
            Conn::Plain(Mutex::new(s))
        }
        tls => Conn::Tls(Mutex::new(tls)),
    });
    Ok((
        Sender { conn: conn.clone() },
        Receiver {
            conn,
            socket,
            raw: rest,
            message: Vec::new(),
            fragments: ws::Fragments::default(),
            opcode: Opcode::Binary,
            heard: Instant::now(),
        },
    ))
}

fn mask() -> [u8; 4] {
    let mut m = [0u8; 4];
    // A mask defeats proxies' cache poisoning, not eavesdroppers: a fixed one on failure
    // is harmless, and there is no better answer to give.
    let _ = getrandom::fill(&mut m);
    m
}

impl Sender {
    fn frame(&self, opcode: Opcode, payload: &[u8]) -> io::Result<()> {
        self.conn
            .write_all(&ws::encode_client_frame(opcode, payload, mask()))
    }

    /// Sends console bytes.
    pub fn binary(&self, payload: &[u8]) -> io::Result<()> {
        self.frame(Opcode::Binary, payload)
    }

    /// Sends a text message (the console's control messages).
    pub fn text(&self, payload: &str) -> io::Result<()> {
        self.frame(Opcode::Text, payload.as_bytes())
    }

    /// Sends a close frame with 1000 (normal).
    pub fn close(&self) -> io::Result<()> {
        self.frame(Opcode::Close, &1000u16.to_be_bytes())
    }
}

impl Receiver {
    /// The next message, or `None` when none came within `wait`.
    pub fn recv(&mut self, wait: Duration) -> io::Result<Option<Message>> {
        loop {
            if let Some(m) = self.decode()? {
                return Ok(Some(m));
            }
            if !self.fill(wait)? {
                return Ok(None);
            }
        }
    }

    /// How long since anything, a ping included, came from the peer.
    pub fn quiet_for(&self) -> Duration {
        self.heard.elapsed()
    }

    /// Takes whatever bytes are there, after waiting up to `wait` for some: false when none
    /// came.
    fn fill(&mut self, wait: Duration) -> io::Result<bool> {
        // TLS may hold bytes it decrypted already (with the upgrade's answer, or past a
        // read's end), which `poll` cannot see: take those first.
        if matches!(*self.conn, Conn::Tls(_)) && self.drain()? {
            return Ok(true);
        }
        let mut fds = [rustix::event::PollFd::new(
            &self.socket,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec::try_from(wait).unwrap_or(rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.drain()?;
        // Readable, but nothing decrypted yet (a partial TLS record): not an end.
        Ok(true)
    }

    /// Reads what is there without waiting: whether anything came. The peer closing is an
    /// error once its bytes are taken.
    fn drain(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 16 * 1024];
        let mut got = false;
        let mut read = |r: &mut dyn Read, raw: &mut Vec<u8>| -> io::Result<()> {
            loop {
                match r.read(&mut buf) {
                    Ok(0) if got => return Ok(()),
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        got = true;
                        raw.extend_from_slice(&buf[..n]);
                        if raw.len() > MAX_MESSAGE {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Ok(())
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match &*self.conn {
            // The receive timeout (set at open) ends the read; not non-blocking mode, which
            // the sending half's descriptor would share.
            Conn::Plain(_) => read(&mut self.socket, &mut self.raw)?,
            Conn::Tls(s) => {
                let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                // A short timeout rather than non-blocking: the socket is shared with writes.
                s.tcp().set_read_timeout(Some(Duration::from_millis(1)))?;
                let r = read(&mut *s, &mut self.raw);
                s.tcp().set_read_timeout(Some(WRITE_TIMEOUT))?;
                r?;
            }
        }
        if got {
            self.heard = Instant::now();
        }
        Ok(got)
    }

    fn decode(&mut self) -> io::Result<Option<Message>> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        while let Some((frame, used)) =
            ws::decode_server_frame(&self.raw, MAX_MESSAGE).map_err(|e| bad(e.to_string()))?
        {
            self.raw.drain(..used);
            match frame.opcode {
                Opcode::Ping => {
                    let s = Sender {
                        conn: self.conn.clone(),
                    };
                    s.frame(Opcode::Pong, &frame.payload)?;
                }
                Opcode::Pong => {}
                Opcode::Close => {
                    let said = (frame.payload.len() >= 2).then(|| {
                        (
                            u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
                            String::from_utf8_lossy(&frame.payload[2..]).into_owned(),
                        )
                    });
                    return Ok(Some(Message::Closed(said)));
                }
                op => {
                    let op = self
                        .fragments
                        .data(op, frame.fin)
                        .map_err(|code| bad(format!("fragments out of order ({code})")))?;
                    self.opcode = op;
                    if self.message.len() + frame.payload.len() > MAX_MESSAGE {
                        return Err(bad("a message over 16 MiB".into()));
                    }
                    self.message.extend_from_slice(&frame.payload);
                    if frame.fin {
                        let m = std::mem::take(&mut self.message);
                        return Ok(Some(match self.opcode {
                            Opcode::Text => Message::Text(String::from_utf8_lossy(&m).into_owned()),
                            _ => Message::Binary(m),
                        }));
                    }
                }
            }
        }
        Ok(None)
    }
}
