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
//! - [`metrics`]: the request metrics middleware;
//! - [`server`]: sockets, limits and workers.

pub mod client;
pub mod head;
pub mod metrics;
pub mod router;
pub mod server;

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
}

impl Response {
    /// A response with a status and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status)
            .with_header("Content-Type", "text/plain; charset=utf-8")
            .with_body(body.into().into_bytes())
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
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
        let _ = r.raw_print(
            &mut out,
            tiny_http::HTTPVersion(1, http_minor),
            &[],
            true,
            None,
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
    }
}
