//! The guarded HTTP/1.1 server the three components serve `/metrics`, `/health` and their APIs
//! with.
//!
//! tiny_http 0.12 is the HTTP codec here (status lines, headers, response framing), but not the
//! connection loop: its server reads request heads on one unbounded thread per connection, with
//! no limit on head size and no deadline, so an idle or trickling client pins a thread forever
//! and cannot be capped from outside. [`server`] therefore owns the sockets: it accepts and reads
//! heads asynchronously under a connection cap, a per-read timeout, a total head deadline and a
//! size limit, and runs handlers on a fixed pool of worker threads.
//!
//! - [`head`]: parsing a request head into typed values (pure);
//! - [`router`]: route templates and method dispatch (pure);
//! - [`middleware`]: the request and RPC metrics around every handler;
//! - [`rpc`]: the Connect JSON unary dispatcher every component's API uses;
//! - [`upgrade`]: the WebSocket upgrade answer (the codec is `conduit-ws`);
//! - [`server`]: sockets, limits and workers;
//! - [`probe`]: a tiny liveness client (`GET /health` of a local component).
//!
//! Metric definitions and encoding are not here: they are `conduit-metrics`.

#![forbid(unsafe_code)]

pub mod head;
pub mod middleware;
pub mod probe;
pub mod router;
pub mod rpc;
pub mod server;
pub mod ticket;
pub mod upgrade;

use std::net::SocketAddr;

pub use head::Method;

/// A request, as handlers see it: head parsed, body read in full (bounded).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Request method.
    pub method: Method,
    /// Path of the request target, without the query.
    pub path: String,
    /// Query string, without the `?`.
    pub query: Option<String>,
    /// Header fields in arrival order; names as sent.
    pub headers: Vec<(String, String)>,
    /// Request body (empty without `Content-Length`).
    pub body: Vec<u8>,
    /// Values of the route template's `{parameters}`.
    pub params: Vec<(&'static str, String)>,
    /// Client address.
    pub peer: Option<SocketAddr>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of route parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter `name`, percent-decoded (`+` as a space, as forms and
    /// `URLSearchParams` write it). `None` when absent or not valid UTF-8 once decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k)? == name).then(|| percent_decode(v))?
        })
    }
}

/// Decodes `%XX` escapes and `+`; `None` for a broken escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let req = Request {
            query: Some("a=1&token=ab%2Bc%2F%3D%26&sp=a+b&empty&bad=%4".into()),
            ..Request::default()
        };
        assert_eq!(req.query_param("token").as_deref(), Some("ab+c/=&"));
        assert_eq!(req.query_param("a").as_deref(), Some("1"));
        assert_eq!(req.query_param("sp").as_deref(), Some("a b"));
        assert_eq!(req.query_param("empty").as_deref(), Some(""));
        assert_eq!(req.query_param("bad"), None);
        assert_eq!(req.query_param("missing"), None);
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("%ff"), None);
    }
}

/// A response: status, extra headers and a body sent with `Content-Length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra header fields (`Content-Length`, `Date` and `Server` are added when written).
    pub headers: Vec<(&'static str, String)>,
    /// Body; not sent for `HEAD` requests.
    pub body: Vec<u8>,
    /// For a `101 Switching Protocols`: what takes the connection over once the response is
    /// written (a WebSocket relay). It then owns the socket, with no HTTP timeouts.
    pub upgrade: Option<Upgrade>,
    /// The real response, still being computed elsewhere (a BMC operation on the agent's
    /// operations executor): the server's I/O task awaits it, so no worker thread waits.
    pub deferred: Option<Deferred>,
}

/// A response to come: a `Send` future the server awaits on its I/O thread. It must only wait
/// (on a channel, a task running elsewhere), never do the work itself.
pub type DeferredFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// A handle on a [`DeferredFuture`], taken once by the middleware or the server.
#[derive(Clone)]
pub struct Deferred(std::sync::Arc<std::sync::Mutex<Option<DeferredFuture>>>);

impl Deferred {
    /// The future, once.
    pub fn take(&self) -> Option<DeferredFuture> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred(..)")
    }
}

impl PartialEq for Deferred {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Deferred {}

/// A connection's new owner after `101 Switching Protocols`: called with the socket and any
/// bytes the client sent after its request, on the server's I/O thread.
type UpgradeFn = Box<
    dyn FnOnce(
            async_io::Async<std::net::TcpStream>,
            Vec<u8>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        + Send,
>;

/// A handle on an [`UpgradeFn`], taken once by the server.
#[derive(Clone)]
pub struct Upgrade(std::sync::Arc<std::sync::Mutex<Option<UpgradeFn>>>);

impl Upgrade {
    /// Wraps the function that takes the upgraded connection over.
    pub fn new(
        f: impl FnOnce(
                async_io::Async<std::net::TcpStream>,
                Vec<u8>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
            + Send
            + 'static,
    ) -> Self {
        Upgrade(std::sync::Arc::new(std::sync::Mutex::new(Some(Box::new(
            f,
        )))))
    }

    /// The function, once.
    pub(crate) fn take(&self) -> Option<UpgradeFn> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upgrade(..)")
    }
}

impl PartialEq for Upgrade {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Upgrade {}

impl Response {
    /// A response with a status and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            upgrade: None,
            deferred: None,
        }
    }

    /// A response that `later` computes: the handler returns at once and its worker is free;
    /// the connection waits for `later` (status 0 until then, never written).
    pub fn deferred(
        later: impl std::future::Future<Output = Response> + Send + 'static,
    ) -> Response {
        let mut r = Response::new(0);
        r.deferred = Some(Deferred(std::sync::Arc::new(std::sync::Mutex::new(Some(
            Box::pin(later),
        )))));
        r
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status)
            .with_header("Content-Type", "text/plain; charset=utf-8")
            .with_body(body.into().into_bytes())
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(body) {
            Ok(b) => Response::new(status)
                .with_header("Content-Type", "application/json")
                .with_body(b),
            Err(e) => Response::text(500, format!("encode the response: {e}\n")),
        }
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Hands the connection to `upgrade` once this (101) response is written.
    pub fn with_upgrade(mut self, upgrade: Upgrade) -> Self {
        self.upgrade = Some(upgrade);
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Serializes the response with tiny_http's writer: status line, `Date`, `Server`, the
    /// extra headers, `Content-Length`, then the body unless `head_only`.
    pub fn to_bytes(&self, http_minor: u8, head_only: bool, close: bool) -> Vec<u8> {
        let mut r = tiny_http::Response::from_data(self.body.as_slice())
            .with_status_code(self.status)
            // Always Content-Length: bodies are in memory, and clients parse it more simply.
            .with_chunked_threshold(usize::MAX);
        for (name, value) in &self.headers {
            if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                r.add_header(h);
            }
        }
        let mut out = Vec::with_capacity(self.body.len() + 256);
        // Writing into a Vec cannot fail.
        // A 101 names its protocol through tiny_http's upgrade path (which writes `Connection:
        // upgrade` and `Upgrade`, and no length); tiny_http drops those fields otherwise.
        let upgrade = (self.status == 101).then(|| {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Upgrade"))
                .map_or("websocket", |(_, v)| v.as_str())
        });
        let _ = r.raw_print(
            &mut out,
            tiny_http::HTTPVersion(1, http_minor),
            &[],
            true,
            upgrade,
        );
        // tiny_http refuses to set `Connection` itself; it ends the head with an empty line, so
        // the field goes in just before it.
        if close && out.ends_with(b"\r\n\r\n") {
            out.truncate(out.len() - 2);
            out.extend_from_slice(b"Connection: close\r\n\r\n");
        }
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_bytes() {
        let r = Response::text(200, "hello");
        let s = String::from_utf8(r.to_bytes(1, false, true)).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(s.contains("Content-Length: 5\r\n"), "{s}");
        assert!(s.contains("Connection: close\r\n"), "{s}");
        assert!(s.ends_with("\r\n\r\nhello"), "{s}");
        let head = String::from_utf8(r.to_bytes(1, true, false)).unwrap();
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        assert!(head.contains("Content-Length: 5\r\n"), "{head}");
        let ws = Response::new(101)
            .with_header("Upgrade", "websocket")
            .with_header("Sec-WebSocket-Accept", "x");
        let s = String::from_utf8(ws.to_bytes(1, false, false)).unwrap();
        assert!(s.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{s}");
        assert!(
            s.contains("Connection: upgrade\r\n") && s.contains("Upgrade: websocket\r\n"),
            "{s}"
        );
        assert!(!s.contains("Content-Length"), "{s}");
    }
}
