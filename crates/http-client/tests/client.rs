//! Black-box tests against in-process servers on 127.0.0.1.

use http_client::{Client, Error, Request, Stream, Tls};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

/// Per-connection handler: (connection index, socket, log of (index, request)).
type Handler = fn(usize, TcpStream, &Log);
type Log = Mutex<Vec<(usize, String)>>;

struct Server {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    log: Arc<Log>,
}

impl Server {
    fn requests(&self) -> Vec<(usize, String)> {
        self.log.lock().unwrap().clone()
    }
}

/// Accepts connections forever, one thread each.
fn serve(h: impl Fn(usize, TcpStream, &Log) + Send + Sync + 'static) -> Server {
    let h = Arc::new(h);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (c, lg) = (conns.clone(), log.clone());
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let i = c.fetch_add(1, Ordering::SeqCst);
            let (lg, h) = (lg.clone(), h.clone());
            thread::spawn(move || h(i, s, &lg));
        }
    });
    Server { addr, conns, log }
}

/// Reads one request (head + Content-Length body); None at EOF or error.
fn read_req(s: &mut impl Read) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => buf.push(b[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(buf).ok()?;
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// Handler body: answer every request on the connection with `resp`, logging it.
fn answer_all(i: usize, mut s: TcpStream, log: &Log, resp: &[u8]) {
    while let Some(r) = read_req(&mut s) {
        log.lock().unwrap().push((i, r));
        if s.write_all(resp).is_err() {
            return;
        }
    }
}

/// Handler body: answer one request with `resp`, then close.
fn answer_once(i: usize, mut s: TcpStream, log: &Log, resp: &[u8]) {
    if let Some(r) = read_req(&mut s) {
        log.lock().unwrap().push((i, r));
        let _ = s.write_all(resp);
    }
}

fn client(addr: SocketAddr) -> Client {
    Client::new(addr, None, Tls::Plain, T).unwrap()
}

fn get(c: &Client) -> Result<http_client::Response, Error> {
    c.request(&Request::new("GET", "/x"))
}

/// One-shot: a server that answers one request with `resp` and closes; returns the result.
fn once(resp: &'static [u8], req: Request<'_>) -> Result<http_client::Response, Error> {
    let srv = serve(move |i, s, log| answer_once(i, s, log, resp));
    client(srv.addr).request(&req)
}

#[test]
fn content_length_body_and_request_head() {
    let srv = serve(|i, s, l| {
        answer_all(
            i,
            s,
            l,
            b"HTTP/1.1 200 OK\r\nX-Thing: a b \r\nContent-Length: 5\r\n\r\nhello",
        )
    });
    let c = client(srv.addr);
    assert_eq!(c.scheme(), "http");
    assert_eq!(c.authority(), srv.addr.to_string());
    let r = get(&c).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    assert_eq!(r.header("x-THING"), Some("a b"));
    let r = c
        .request(&Request {
            headers: &[("X-Custom", "1"), ("User-Agent", "agent/2")],
            body: b"abc",
            ..Request::new("POST", "/p?q=1")
        })
        .unwrap();
    assert_eq!(r.body, b"hello");
    c.request(&Request::new("PUT", "/empty")).unwrap();
    let reqs = srv.requests();
    let host = format!("Host: {}\r\n", srv.addr);
    assert_eq!(
        reqs[0].1,
        format!("GET /x HTTP/1.1\r\n{host}User-Agent: conduit\r\n\r\n")
    );
    assert_eq!(
        reqs[1].1,
        format!("POST /p?q=1 HTTP/1.1\r\n{host}X-Custom: 1\r\nUser-Agent: agent/2\r\nContent-Length: 3\r\n\r\nabc")
    );
    assert!(reqs[2].1.ends_with("Content-Length: 0\r\n\r\n"));
}

#[test]
fn host_uses_server_name_and_user_agent_is_settable() {
    let srv = serve(|i, s, l| answer_all(i, s, l, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    let c = Client::new(srv.addr, Some("api.example.test"), Tls::Plain, T)
        .unwrap()
        .with_user_agent("ua/1");
    assert_eq!(
        c.authority(),
        format!("api.example.test:{}", srv.addr.port())
    );
    get(&c).unwrap();
    let r = &srv.requests()[0].1;
    assert!(r.contains(&format!("Host: api.example.test:{}\r\n", srv.addr.port())));
    assert!(r.contains("User-Agent: ua/1\r\n"));
    let v6: SocketAddr = "[::1]:80".parse().unwrap();
    assert_eq!(
        Client::new(v6, None, Tls::Plain, T).unwrap().authority(),
        "[::1]"
    );
    assert!(matches!(
        Client::new(v6, Some("bad name\r\n"), Tls::Plain, T),
        Err(Error::Protocol(_))
    ));
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let srv = serve(|i, s, l| {
        answer_all(
            i,
            s,
            l,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6 ; x=\"y\"\r\n world\r\nA\r\n0123456789\r\n0;end\r\n\
              Trailer-One: 1\r\nTrailer-Two: 2\r\n\r\n",
        )
    });
    let c = client(srv.addr);
    for _ in 0..2 {
        assert_eq!(get(&c).unwrap().body, b"hello world0123456789");
    }
    assert_eq!(
        srv.conns.load(Ordering::SeqCst),
        1,
        "chunked response allows reuse"
    );
}

#[test]
fn read_to_close_body() {
    let r = once(
        b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nuntil the end",
        Request::new("GET", "/"),
    )
    .unwrap();
    assert_eq!(r.body, b"until the end");
    let r = once(b"HTTP/1.0 200 OK\r\n\r\nold", Request::new("GET", "/")).unwrap();
    assert_eq!(r.body, b"old");
}

#[test]
fn keep_alive_reuses_one_connection() {
    let srv =
        serve(|i, s, l| answer_all(i, s, l, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    let c = client(srv.addr);
    get(&c).unwrap();
    get(&c).unwrap();
    c.request(&Request::new("HEAD", "/")).unwrap();
    assert_eq!(srv.conns.load(Ordering::SeqCst), 1);
    assert_eq!(srv.requests().len(), 3);
}

#[test]
fn no_reuse_after_connection_close_or_http10() {
    for resp in [
        &b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ] {
        let srv = serve(move |i, s, l| answer_all(i, s, l, resp));
        let c = client(srv.addr);
        get(&c).unwrap();
        get(&c).unwrap();
        assert_eq!(srv.conns.load(Ordering::SeqCst), 2);
    }
}

/// Connection 0 answers one request, then reads the next and closes without answering.
/// Later connections answer everything.
fn stale_after_one(i: usize, mut s: TcpStream, log: &Log) {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    if i > 0 {
        return answer_all(i, s, log, OK);
    }
    if let Some(r) = read_req(&mut s) {
        log.lock().unwrap().push((i, r));
        s.write_all(OK).unwrap();
    }
    if let Some(r) = read_req(&mut s) {
        log.lock().unwrap().push((i, r));
    }
}

#[test]
fn stale_keep_alive_is_retried_for_get() {
    let srv = serve(stale_after_one);
    let c = client(srv.addr);
    get(&c).unwrap();
    assert_eq!(get(&c).unwrap().body, b"ok");
    let reqs = srv.requests();
    assert_eq!(srv.conns.load(Ordering::SeqCst), 2);
    assert_eq!(reqs.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 0, 1]);
}

#[test]
fn post_never_reuses_and_is_never_retried() {
    // POST goes on a fresh connection even though an idle one exists.
    let srv = serve(stale_after_one);
    let c = client(srv.addr);
    get(&c).unwrap();
    let post = Request {
        body: b"data",
        ..Request::new("POST", "/p")
    };
    c.request(&post).unwrap();
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].0, 1);
    assert!(reqs[1].1.starts_with("POST "));

    // A POST whose connection dies before the response is not sent again.
    let srv = serve(|i, s, l| answer_once(i, s, l, b""));
    let c = client(srv.addr);
    assert!(matches!(c.request(&post), Err(Error::Io(_))));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(srv.conns.load(Ordering::SeqCst), 1);
    assert_eq!(srv.requests().len(), 1);
}

#[test]
fn redirect_is_not_followed() {
    let srv = serve(|i, s, l| {
        answer_all(
            i,
            s,
            l,
            b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
        )
    });
    let r = get(&client(srv.addr)).unwrap();
    assert_eq!((r.status, r.header("location")), (302, Some("/elsewhere")));
    assert_eq!(srv.requests().len(), 1);
}

#[test]
fn no_body_statuses_and_interim_responses() {
    // 204 (even with a bogus Content-Length) has no body; the connection stays usable.
    let srv = serve(|i, s, l| {
        answer_all(
            i,
            s,
            l,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
        )
    });
    let c = client(srv.addr);
    for _ in 0..2 {
        let r = get(&c).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        assert_eq!(r.header("link"), None, "interim headers are not merged");
    }
    assert_eq!(srv.conns.load(Ordering::SeqCst), 1);
    let r = once(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        Request::new("GET", "/"),
    );
    assert_eq!(r.unwrap().body, b"");
    let r = once(
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
        Request::new("HEAD", "/"),
    );
    assert_eq!(r.unwrap().header("content-length"), Some("9"));
    let r = once(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        Request::new("GET", "/"),
    );
    assert_eq!(r.unwrap().status, 101);
}

#[test]
fn oversized_head_and_body_are_too_large() {
    fn big_head() -> &'static [u8] {
        let mut v = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        v.extend(std::iter::repeat_n(b'a', 17 * 1024));
        v.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        v.leak()
    }
    fn many_headers() -> &'static [u8] {
        let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..101 {
            v.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        v.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        v.leak()
    }
    let small = Request {
        max_body: 4,
        ..Request::new("GET", "/")
    };
    let cases: [(&'static [u8], Request); 5] = [
        (big_head(), Request::new("GET", "/")),
        (many_headers(), Request::new("GET", "/")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Request { ..small }),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", Request { ..small }),
        (b"HTTP/1.1 200 OK\r\n\r\nhello", Request { ..small }),
    ];
    for (resp, req) in cases {
        let r = once(resp, req);
        assert!(matches!(r, Err(Error::TooLarge)), "{r:?}");
    }
    let exact = Request {
        max_body: 5,
        ..Request::new("GET", "/")
    };
    assert!(once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", exact).is_ok());
}

#[test]
fn trickling_server_cannot_extend_the_deadline() {
    fn trickle(_: usize, mut s: TcpStream, _: &Log) {
        read_req(&mut s);
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        for b in resp.iter().chain(std::iter::repeat_n(&b'x', 100)) {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    fn silent(_: usize, mut s: TcpStream, _: &Log) {
        read_req(&mut s);
        thread::sleep(Duration::from_secs(3));
    }
    let deadline = Duration::from_millis(500);
    for h in [trickle as Handler, silent] {
        let srv = serve(h);
        let c = Client::new(srv.addr, None, Tls::Plain, deadline).unwrap();
        let start = Instant::now();
        let e = get(&c).unwrap_err();
        let took = start.elapsed();
        assert!(e.is_timeout(), "{e}");
        assert_eq!(e.to_string(), "timed out");
        assert!(
            took >= deadline && took < deadline + Duration::from_millis(300),
            "{took:?}"
        );
    }
}

#[test]
fn unsafe_requests_are_refused_before_sending() {
    let srv = serve(|i, s, l| answer_all(i, s, l, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    let c = client(srv.addr);
    let bad: [&[(&str, &str)]; 5] = [
        &[("X-A", "1\r\nX-Injected: 2")],
        &[("X-A", "1\nX")],
        &[("X-A\r\nX-B", "1")],
        &[("Bad Name", "1")],
        &[("Content-Length", "5")],
    ];
    for headers in bad {
        let r = c.request(&Request {
            headers,
            ..Request::new("GET", "/")
        });
        assert!(matches!(r, Err(Error::Protocol(_))), "{headers:?}");
    }
    for (m, p) in [
        ("GET", "/a b"),
        ("GET", "nope"),
        ("GET", "/\r\n"),
        ("G T", "/"),
        ("", "/"),
    ] {
        assert!(
            matches!(c.request(&Request::new(m, p)), Err(Error::Protocol(_))),
            "{m} {p}"
        );
    }
    let ua = Client::new(srv.addr, None, Tls::Plain, T)
        .unwrap()
        .with_user_agent("a\r\nb: c");
    assert!(matches!(get(&ua), Err(Error::Protocol(_))));
    assert_eq!(srv.conns.load(Ordering::SeqCst), 0, "nothing was sent");
}

#[test]
fn malformed_responses_are_protocol_errors() {
    let cases: [&'static [u8]; 13] = [
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 200OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    ];
    for resp in cases {
        let r = once(resp, Request::new("GET", "/"));
        assert!(
            matches!(r, Err(Error::Protocol(_))),
            "{:?}: {r:?}",
            String::from_utf8_lossy(resp)
        );
    }
    // Agreeing duplicates are fine; chunked wins over Content-Length.
    let r = once(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2, 2\r\n\r\nok",
        Request::new("GET", "/"),
    );
    assert_eq!(r.unwrap().body, b"ok");
    let r = once(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        Request::new("GET", "/"),
    );
    assert_eq!(r.unwrap().body, b"ok");
    // Truncated framed bodies are I/O errors.
    let r = once(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        Request::new("GET", "/"),
    );
    assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
}

// ---------- TLS ----------

mod tls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    pub struct Pki {
        pub ca_pem: String,
        pub chain: Vec<CertificateDer<'static>>,
        pub key: Vec<u8>,
    }

    /// A CA and a server certificate for `sans` signed by it.
    pub fn pki(sans: &[&str]) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        static N: AtomicUsize = AtomicUsize::new(0);
        let ca_name = format!("test ca {}", N.fetch_add(1, Ordering::SeqCst));
        p.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = p.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "server");
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        }
    }

    /// A TLS server answering every request with "ok"; returns its address and connection count.
    pub fn tls_server(
        chain: Vec<CertificateDer<'static>>,
        key: Vec<u8>,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.into()))
                .unwrap();
        let cfg = Arc::new(cfg);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                n2.fetch_add(1, Ordering::SeqCst);
                let cfg = cfg.clone();
                thread::spawn(move || {
                    let mut t = StreamOwned::new(ServerConnection::new(cfg).unwrap(), s);
                    while read_req(&mut t).is_some() {
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if t.write_all(ok).and_then(|_| t.flush()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, n)
    }

    #[test]
    fn tls_with_ca_works_and_keeps_alive() {
        let p = pki(&["127.0.0.1", "localhost"]);
        let (addr, conns) = tls_server(p.chain, p.key);
        let c = Client::new(addr, None, Tls::CaPem(p.ca_pem.clone().into()), T).unwrap();
        assert_eq!(c.scheme(), "https");
        for _ in 0..3 {
            assert_eq!(get(&c).unwrap().body, b"ok");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        let named = Client::new(addr, Some("localhost"), Tls::CaPem(p.ca_pem.into()), T).unwrap();
        assert_eq!(get(&named).unwrap().status, 200);
    }

    #[test]
    fn wrong_ca_or_name_is_a_tls_error() {
        let p = pki(&["127.0.0.1"]);
        let other = pki(&["127.0.0.1"]);
        let (addr, _) = tls_server(p.chain, p.key);
        let c = Client::new(addr, None, Tls::CaPem(other.ca_pem.into()), T).unwrap();
        match get(&c) {
            Err(Error::Tls(m)) => assert!(m.contains("UnknownIssuer"), "{m}"),
            r => panic!("{r:?}"),
        }
        let c = Client::new(addr, Some("other.test"), Tls::CaPem(p.ca_pem.into()), T).unwrap();
        match get(&c) {
            Err(Error::Tls(m)) => assert!(m.contains("not valid for name"), "{m}"),
            r => panic!("{r:?}"),
        }
        // TLS client against a plain HTTP server that answers at once.
        let srv = serve(|_, mut s, _| {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            thread::sleep(Duration::from_millis(500));
        });
        let c = Client::new(srv.addr, None, Tls::Insecure, T).unwrap();
        let r = get(&c);
        assert!(matches!(r, Err(Error::Tls(_))), "{r:?}");
    }

    #[test]
    fn ca_pem_without_certificate_is_rejected() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for pem in [
            &b""[..],
            b"not a pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let r = Client::new(addr, None, Tls::CaPem(pem.to_vec()), T);
            assert!(matches!(r, Err(Error::Tls(_))), "{pem:?}");
        }
    }

    #[test]
    fn insecure_accepts_self_signed() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["example.invalid".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (addr, _) = tls_server(vec![cert.der().clone()], key.serialize_der());
        let c = Client::new(addr, None, Tls::Insecure, T).unwrap();
        assert_eq!(get(&c).unwrap().body, b"ok");
    }

    #[test]
    fn connect_gives_a_usable_stream() {
        let p = pki(&["127.0.0.1"]);
        let (addr, _) = tls_server(p.chain, p.key);
        let c = Client::new(addr, None, Tls::CaPem(p.ca_pem.into()), T).unwrap();
        let mut s = c.connect().unwrap();
        assert!(matches!(s, Stream::Tls(_)));
        s.set_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.flush().unwrap();
        let mut buf = [0u8; 40];
        s.read_exact(&mut buf).unwrap();
        assert!(buf.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}

#[test]
fn client_is_send_and_sync_and_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
    let srv =
        serve(|i, s, l| answer_all(i, s, l, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    let c = Arc::new(client(srv.addr));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || (0..10).for_each(|_| assert_eq!(get(&c).unwrap().body, b"ok")))
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
}

// ---------- fuzz-ish ----------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: [&[u8]; 8] = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nX: y\r\n\r\nto the end",
    b"HTTP/1.1 301 Moved\r\nLocation: /a\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
];

/// Response number `i`: a seed, mutated, or random bytes.
fn fuzz_case(i: usize) -> Vec<u8> {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x1000_0000_01B3));
    if r.below(10) == 0 {
        return (0..r.below(300)).map(|_| r.next() as u8).collect();
    }
    let mut v = SEEDS[r.below(SEEDS.len())].to_vec();
    for _ in 0..r.below(6) {
        let at = r.below(v.len() + 1);
        match r.below(7) {
            0 if at < v.len() => v[at] = r.next() as u8,
            1 => v.insert(at, r.next() as u8),
            2 => v.truncate(at),
            3 => v.splice(at..at, b"\r\n".iter().copied()).for_each(drop),
            4 => v.splice(at..at, b": ;,\t".iter().copied()).for_each(drop),
            5 => {
                let end = (at + r.below(20)).min(v.len());
                let seg = v[at..end].to_vec();
                v.splice(at..at, seg).for_each(drop);
            }
            _ => {
                let end = (at + r.below(8)).min(v.len());
                v.drain(at..end);
            }
        }
    }
    v
}

#[test]
fn fuzzed_responses_never_panic() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = thread::spawn(move || {
        let mut n = 0;
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if read_req(&mut s).is_none() {
                return n; // the final, empty connection ends the server
            }
            let _ = s.write_all(&fuzz_case(n));
            let _ = s.shutdown(Shutdown::Write);
            n += 1;
        }
        n
    });
    let c = Client::new(addr, None, Tls::Plain, Duration::from_secs(2)).unwrap();
    let mut r = Rng(42);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..2000 {
        let method = ["GET", "HEAD", "POST"][r.below(3)];
        let req = Request {
            max_body: [4, 1 << 20][r.below(2)],
            ..Request::new(method, "/")
        };
        match c.request(&req) {
            Ok(resp) => {
                assert!(resp.body.len() <= req.max_body);
                ok += 1
            }
            Err(e) => {
                assert!(
                    !e.is_timeout(),
                    "server always closes; no timeouts expected"
                );
                err += 1
            }
        }
    }
    drop(TcpStream::connect(addr).unwrap());
    let served = server.join().unwrap();
    assert!(served >= 2000, "{served}");
    assert!(ok > 100 && err > 100, "ok {ok} err {err}");
}

#[test]
fn huge_timeout_does_not_overflow() {
    let srv = serve(|i, s, l| answer_all(i, s, l, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    let c = Client::new(srv.addr, None, Tls::Plain, Duration::MAX).unwrap();
    assert_eq!(get(&c).unwrap().status, 200);
    let e = Client::new(srv.addr, None, Tls::Plain, Duration::ZERO).unwrap();
    assert!(get(&e).unwrap_err().is_timeout());
}
