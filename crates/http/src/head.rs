//! HTTP/1.x request heads: find the end of a head in a buffer, parse it into typed values.
//!
//! Pure functions over bytes; the server decides what to do with each [`HeadError`].

/// A request method. Anything outside the standard verbs is [`Method::Other`], so that a client
/// inventing methods cannot create metric series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Method {
    /// GET
    #[default]
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// PATCH
    Patch,
    /// OPTIONS
    Options,
    /// CONNECT
    Connect,
    /// TRACE
    Trace,
    /// Any other token.
    Other,
}

impl Method {
    /// Maps a request-line token to a method (case-sensitive, as HTTP methods are).
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }

    /// The method as a label value and in `Allow` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
            Method::Other => "OTHER",
        }
    }
}

impl conduit_metrics::catalog::LabelName for Method {
    fn label_name(&self) -> &'static str {
        self.as_str()
    }
}
conduit_metrics::impl_label_value!(Method);

/// Why a head was refused; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The request line alone exceeds the head limit.
    UriTooLong,
    /// The head exceeds the size or header-count limit.
    HeadersTooLarge,
    /// The request line is malformed.
    BadRequestLine,
    /// A header line is malformed.
    BadHeader,
    /// Not HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
}

impl HeadError {
    /// The status code the server answers with before closing the connection.
    pub fn status(self) -> u16 {
        match self {
            HeadError::UriTooLong => 414,
            HeadError::HeadersTooLarge => 431,
            HeadError::BadRequestLine | HeadError::BadHeader => 400,
            HeadError::UnsupportedVersion => 505,
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadError::UriTooLong => "request line too long",
            HeadError::HeadersTooLarge => "request head too large",
            HeadError::BadRequestLine => "malformed request line",
            HeadError::BadHeader => "malformed header line",
            HeadError::UnsupportedVersion => "unsupported HTTP version",
        })
    }
}

impl std::error::Error for HeadError {}

/// Most header fields one request may carry.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// Query, without the `?`.
    pub query: Option<String>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
}

/// The length of the head at the start of `buf` (through its empty line), if complete.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

/// Classifies an over-long incomplete head: is the request line itself still unfinished?
pub fn overflow_error(buf: &[u8]) -> HeadError {
    if buf.contains(&b'\n') {
        HeadError::HeadersTooLarge
    } else {
        HeadError::UriTooLong
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl RequestHead {
    /// Parses a complete head (as delimited by [`head_len`]).
    pub fn parse(head: &[u8]) -> Result<RequestHead, HeadError> {
        let text = std::str::from_utf8(head).map_err(|_| HeadError::BadHeader)?;
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let line = lines.next().ok_or(HeadError::BadRequestLine)?;
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HeadError::BadRequestLine);
        };
        if !is_token(method) {
            return Err(HeadError::BadRequestLine);
        }
        let minor = match version {
            "HTTP/1.1" => 1,
            "HTTP/1.0" => 0,
            v if v.starts_with("HTTP/") => return Err(HeadError::UnsupportedVersion),
            _ => return Err(HeadError::BadRequestLine),
        };
        if !(target.starts_with('/') || target == "*")
            || target.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(HeadError::BadRequestLine);
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        let mut headers = Vec::new();
        for line in lines {
            if line.is_empty() {
                break;
            }
            if headers.len() == MAX_HEADERS {
                return Err(HeadError::HeadersTooLarge);
            }
            let (name, value) = line.split_once(':').ok_or(HeadError::BadHeader)?;
            let value = value.trim_matches(|c| c == ' ' || c == '\t');
            if !is_token(name) || value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(HeadError::BadHeader);
            }
            headers.push((name.to_owned(), value.to_owned()));
        }
        Ok(RequestHead {
            method: Method::from_token(method),
            path,
            query,
            minor,
            headers,
        })
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client asked to keep the connection open after this request.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("Connection").map(|v| v.to_ascii_lowercase());
        match (self.minor, conn.as_deref()) {
            (_, Some(c)) if c.contains("close") => false,
            (0, Some(c)) => c.contains("keep-alive"),
            (0, None) => false,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_len(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_len(b""), None);
    }

    #[test]
    fn parses_a_head() {
        let h = RequestHead::parse(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept:  text/plain \r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/metrics");
        assert_eq!(h.query.as_deref(), Some("x=1"));
        assert_eq!(h.header("accept"), Some("text/plain"));
        assert!(h.keep_alive());
    }

    #[test]
    fn unknown_methods_are_other() {
        let h = RequestHead::parse(b"BREW /pot HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(h.method, Method::Other);
    }

    #[test]
    fn refuses_malformed_heads() {
        for (bytes, err) in [
            (&b"GET /\r\n\r\n"[..], HeadError::BadRequestLine),
            (b"GET  / HTTP/1.1\r\n\r\n", HeadError::BadRequestLine),
            (b"GET x HTTP/1.1\r\n\r\n", HeadError::BadRequestLine),
            (b"G(T / HTTP/1.1\r\n\r\n", HeadError::BadRequestLine),
            (b"GET / HTTP/2.0\r\n\r\n", HeadError::UnsupportedVersion),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", HeadError::BadHeader),
            (
                b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                HeadError::BadHeader,
            ),
            (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", HeadError::BadHeader),
            (b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n", HeadError::BadHeader),
        ] {
            assert_eq!(
                RequestHead::parse(bytes),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            RequestHead::parse(many.as_bytes()),
            Err(HeadError::HeadersTooLarge)
        );
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |s: &str| RequestHead::parse(s.as_bytes()).unwrap().keep_alive();
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    /// Mutated and random heads never panic the parser (a stable-toolchain fuzz smoke test).
    #[test]
    fn mutated_heads_never_panic() {
        let seed =
            b"POST /api/v1/servers/n7?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let mut m = seed.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % m.len().max(1);
                match next() % 4 {
                    0 => m[i] = next() as u8,
                    1 => m.truncate(i),
                    2 => m.insert(i, [b'\r', b'\n', b':', b' ', 0xFF][(next() % 5) as usize]),
                    _ => m.extend_from_slice(b"X: y\r\n"),
                }
                if m.is_empty() {
                    break;
                }
            }
            if let Some(n) = head_len(&m) {
                let _ = RequestHead::parse(&m[..n]).map(|h| h.keep_alive());
            }
            let _ = RequestHead::parse(&m);
            let _ = overflow_error(&m);
        }
    }

    #[test]
    fn overflow_classification() {
        assert_eq!(overflow_error(b"GET /aaaa"), HeadError::UriTooLong);
        assert_eq!(
            overflow_error(b"GET / HTTP/1.1\r\nX: aaa"),
            HeadError::HeadersTooLarge
        );
    }
}
