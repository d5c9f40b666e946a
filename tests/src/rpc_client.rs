//! A keep-alive Connect JSON client for benchmarks: one connection reused across calls, so
//! that what is timed is the call and not the TCP handshake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

use crate::parse_response;

const TIMEOUT: Duration = Duration::from_secs(30);

/// One kept-alive connection to a Connect JSON server.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    package: &'static str,
    s: Option<TcpStream>,
}

impl Client {
    /// A client of the manager's services (`/conduit.manager.v1.…`).
    pub fn new(addr: SocketAddr) -> Client {
        Client::for_package(addr, "conduit.manager.v1")
    }

    /// A client of another package's services (`conduit.gateway.v1`, `conduit.agent.v1`).
    pub fn for_package(addr: SocketAddr, package: &'static str) -> Client {
        Client {
            addr,
            package,
            s: None,
        }
    }

    fn connect(&mut self) -> &mut TcpStream {
        self.s.get_or_insert_with(|| {
            let s = TcpStream::connect_timeout(&self.addr, TIMEOUT).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            s
        })
    }

    /// One call: `(status, raw body)`. A kept-alive connection the server closed meanwhile is
    /// reopened once (nothing of the request was read then).
    pub fn call_raw(&mut self, method: &str, token: Option<&str>, body: &str) -> (u16, Vec<u8>) {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!(
            "POST /{}.{method} HTTP/1.1\r\nHost: bench\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.package,
            body.len()
        );
        for attempt in 0..2 {
            match self.exchange(req.as_bytes()) {
                Ok(Some(r)) => return r,
                Ok(None) if attempt == 0 => self.s = None,
                Ok(None) => panic!("{method}: the server closed the connection"),
                Err(e) => panic!("{method}: {e}"),
            }
        }
        unreachable!()
    }

    fn exchange(&mut self, req: &[u8]) -> std::io::Result<Option<(u16, Vec<u8>)>> {
        let s = self.connect();
        s.write_all(req)?;
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        let (head_end, len) = loop {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return match buf.is_empty() {
                    true => Ok(None),
                    false => Err(std::io::ErrorKind::UnexpectedEof.into()),
                };
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                let len: usize = (head.lines())
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                break (i + 4, len);
            }
        };
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let r = parse_response(&buf).map_err(std::io::Error::other)?;
        if r.header("Connection").is_some_and(|v| v.contains("close")) {
            self.s = None;
        }
        Ok(Some((r.status, r.body)))
    }

    pub fn call(&mut self, method: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let (status, raw) = self.call_raw(method, token, &body.to_string());
        (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
    }

    pub fn ok(&mut self, method: &str, token: Option<&str>, body: Value) -> Value {
        let (status, v) = self.call(method, token, &body);
        assert_eq!(status, 200, "{method} {body}: {v}");
        v
    }

    pub fn login(&mut self, email: &str, password: &str) -> (u16, Value) {
        let body = json!({"email": email, "password": password});
        self.call("AuthService/Login", None, &body)
    }
}
