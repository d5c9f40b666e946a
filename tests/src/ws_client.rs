//! A console client for the tests: a WebSocket (subprotocol `binary`, masked client frames)
//! or a plain TCP stream, keeping every console byte received and the close frame.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use conduit_ws::{decode_server_frame, encode_client_frame, Opcode};

/// A connection to one of the agent's consoles.
#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
    websocket: bool,
    /// Raw bytes not yet decoded (WebSocket).
    raw: Vec<u8>,
    /// Every console byte received (BINARY payloads, or the TCP stream).
    pub got: Vec<u8>,
    /// How much of `got` [`Link::read_exact`] and [`Link::drain`] consumed.
    taken: usize,
    /// Text messages received, whole (the gateway uplink's; consoles send none).
    pub texts: Vec<String>,
    /// The close frame's code and reason, once received.
    pub closed: Option<(u16, String)>,
    /// The stream ended.
    pub ended: bool,
}

impl Link {
    /// Opens a WebSocket to `path`; panics unless the answer is 101 with subprotocol `binary`.
    pub fn websocket(agent: SocketAddr, path: &str) -> Link {
        let (link, status) = Link::try_websocket(agent, path);
        assert!(status.starts_with("HTTP/1.1 101"), "{path}: {status}");
        assert!(
            status.contains("Sec-WebSocket-Protocol: binary"),
            "{status}"
        );
        link
    }

    /// Opens a WebSocket and returns the response head, whatever it is.
    pub fn try_websocket(agent: SocketAddr, path: &str) -> (Link, String) {
        Link::try_websocket_with(agent, path, "binary")
    }

    /// [`Link::try_websocket`] offering subprotocol `protocol`.
    pub fn try_websocket_with(agent: SocketAddr, path: &str, protocol: &str) -> (Link, String) {
        let mut s = TcpStream::connect(agent).expect("connect to the agent");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => break,
            }
        }
        (
            Link::new(s, true),
            String::from_utf8_lossy(&head).into_owned(),
        )
    }

    /// A plain TCP connection (the agent's raw VNC listener).
    pub fn tcp(addr: SocketAddr) -> Link {
        let s = TcpStream::connect(addr).expect("connect to the listener");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Link::new(s, false)
    }

    fn new(stream: TcpStream, websocket: bool) -> Link {
        Link {
            stream,
            websocket,
            raw: Vec::new(),
            got: Vec::new(),
            texts: Vec::new(),
            taken: 0,
            closed: None,
            ended: false,
        }
    }

    /// Sends one frame (a WebSocket) with `op`, or the bytes as they are (TCP).
    pub fn send_frame(&mut self, op: Opcode, payload: &[u8]) {
        if self.websocket {
            self.send_raw(&encode_client_frame(op, payload, [1, 2, 3, 4]));
        } else {
            self.send_raw(payload);
        }
    }

    /// Sends console bytes.
    pub fn send(&mut self, data: &[u8]) {
        self.send_frame(Opcode::Binary, data);
    }

    /// Sends bytes as they are (malformed frames).
    pub fn send_raw(&mut self, data: &[u8]) {
        self.stream.write_all(data).unwrap();
    }

    /// One read, waiting at most `wait`; false once the stream ended or a close arrived.
    pub fn poll(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.ended = true,
            Ok(n) if !self.websocket => self.got.extend_from_slice(&chunk[..n]),
            Ok(n) => self.raw.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => self.ended = true,
        }
        while let Ok(Some((frame, used))) = decode_server_frame(&self.raw, 1 << 24) {
            self.raw.drain(..used);
            match frame.opcode {
                Opcode::Binary | Opcode::Continuation => self.got.extend_from_slice(&frame.payload),
                Opcode::Text => self
                    .texts
                    .push(String::from_utf8_lossy(&frame.payload).into_owned()),
                Opcode::Close => {
                    let p = &frame.payload;
                    let code = p
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    let why = String::from_utf8_lossy(p.get(2..).unwrap_or_default());
                    self.closed = Some((code, why.into_owned()));
                }
                _ => {}
            }
        }
        !self.ended && self.closed.is_none()
    }

    /// The next `n` console bytes, waiting up to 10 s between reads (`None` if the stream
    /// ended or stalled first).
    pub fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut last = Instant::now();
        while self.got.len() - self.taken < n {
            let had = self.got.len();
            let open = self.poll(Duration::from_millis(200));
            if self.got.len() > had {
                last = Instant::now();
            } else if !open || last.elapsed() > Duration::from_secs(10) {
                return None;
            }
        }
        self.taken += n;
        Some(self.got[self.taken - n..self.taken].to_vec())
    }

    /// Whatever arrives until `quiet` passes without anything new.
    pub fn drain(&mut self, quiet: Duration) -> Vec<u8> {
        loop {
            let had = self.got.len();
            let open = self.poll(quiet);
            if self.got.len() == had || !open {
                break;
            }
        }
        let rest = self.got[self.taken..].to_vec();
        self.taken = self.got.len();
        rest
    }

    /// Waits until the console showed `needle` after position `from` of [`Link::got`];
    /// returns the position just past it.
    pub fn wait_for(&mut self, needle: &str, from: usize) -> usize {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = &self.got[from.min(self.got.len())..];
            if let Some(at) = seen
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                return from + at + needle.len();
            }
            assert!(
                Instant::now() < until && self.poll(Duration::from_millis(50)),
                "the console did not show {needle:?}; it showed {:?}, closed {:?}",
                String::from_utf8_lossy(&self.got),
                self.closed
            );
        }
    }

    /// Waits for the agent's close frame.
    pub fn wait_close(&mut self) -> (u16, String) {
        let until = Instant::now() + Duration::from_secs(15);
        while self.closed.is_none()
            && Instant::now() < until
            && self.poll(Duration::from_millis(50))
        {}
        self.closed.clone().unwrap_or_else(|| {
            panic!(
                "no close frame; the console showed {:?}",
                String::from_utf8_lossy(&self.got)
            )
        })
    }

    /// The console text received so far (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.got).into_owned()
    }
}
