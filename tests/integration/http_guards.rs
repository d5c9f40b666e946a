//! Bad requests, slow and idle clients, and connection floods against a live component: each gets
//! a clear status (or a quiet close) and a counted metric, and the server keeps answering.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use conduit_reference::parse_exposition;
use conduit_tests::{get, parse_response, raw_exchange, request, start_component, Component};

const READ_TIMEOUT: f64 = 0.5;
const HEAD_DEADLINE: f64 = 1.5;
const MAX_CONNECTIONS: usize = 8;

fn guarded() -> Component {
    start_component(
        "conduit-agent",
        &[
            "--http.read-timeout",
            &READ_TIMEOUT.to_string(),
            "--http.head-deadline",
            &HEAD_DEADLINE.to_string(),
            "--http.max-connections",
            &MAX_CONNECTIONS.to_string(),
            "--http.workers",
            "2",
        ],
    )
}

/// The agent: its HTTP server is the one shipped on the appliance (and run under qemu).
/// Value of `agent_http_requests_total{...}` with exactly these labels (0 when absent).
fn requests_counted(addr: SocketAddr, method: &str, endpoint: &str, status: &str) -> f64 {
    let text = get(addr, "/metrics", &[]).text();
    let fams = parse_exposition(&text).expect("exposition parses");
    fams["agent_http_requests_total"]
        .samples
        .iter()
        .find(|s| {
            let l = |k: &str| {
                s.labels
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
            };
            l("method") == Some(method)
                && l("endpoint") == Some(endpoint)
                && l("status_code") == Some(status)
        })
        .map_or(0.0, |s| s.value)
}

fn series_count(addr: SocketAddr) -> usize {
    let text = get(addr, "/metrics", &[]).text();
    let fams = parse_exposition(&text).expect("exposition parses");
    fams["agent_http_requests_total"].samples.len()
        + fams["agent_http_request_duration_seconds"].samples.len()
}

#[test]
fn unknown_paths_are_404_under_one_series() {
    let c = guarded();
    assert_eq!(get(c.addr, "/nope", &[]).status, 404);
    series_count(c.addr); // the scrape itself adds its own series once
    let before = series_count(c.addr);
    for i in 0..200 {
        let path = format!("/random/{i}/{}", i * 7919);
        assert_eq!(get(c.addr, &path, &[]).status, 404);
    }
    assert_eq!(series_count(c.addr), before, "random paths created series");
    assert!(requests_counted(c.addr, "GET", "other", "404") >= 201.0);
}

#[test]
fn wrong_and_invented_methods_are_405() {
    let c = guarded();
    let r = request(c.addr, "POST", "/metrics", &[], b"x=1");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    let r = request(c.addr, "BREW", "/health", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(requests_counted(c.addr, "POST", "/metrics", "405"), 1.0);
    assert_eq!(requests_counted(c.addr, "OTHER", "/health", "405"), 1.0);
}

#[test]
fn oversize_and_malformed_heads_get_4xx_and_a_closed_connection() {
    let c = guarded();
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000));
    let many_headers = format!(
        "GET /metrics HTTP/1.1\r\n{}\r\n",
        (0..40)
            .map(|i| format!("X-Filler-{i}: {}\r\n", "b".repeat(500)))
            .collect::<String>()
    );
    for (req, want) in [
        (long_line.as_str(), 414),
        (many_headers.as_str(), 431),
        ("GET /metrics HTTP/1.1\r\nbad header line\r\n\r\n", 400),
        ("GARBAGE\r\n\r\n", 400),
        ("GET /metrics HTTP/3.0\r\n\r\n", 505),
        (
            "POST /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            413,
        ),
        (
            "POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            411,
        ),
        (
            "POST /metrics HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            400,
        ),
        (
            "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
            400,
        ),
    ] {
        // read_to_end returning means the server closed the connection.
        let raw = raw_exchange(c.addr, req.as_bytes()).expect("exchange");
        let resp = parse_response(&raw).expect("a response");
        assert_eq!(resp.status, want, "{}", &req[..req.len().min(60)]);
        assert_eq!(resp.header("Connection"), Some("close"));
    }
    assert_eq!(requests_counted(c.addr, "OTHER", "other", "414"), 1.0);
    assert_eq!(requests_counted(c.addr, "OTHER", "other", "431"), 1.0);
    assert_eq!(requests_counted(c.addr, "OTHER", "other", "400"), 2.0);
    assert_eq!(requests_counted(c.addr, "POST", "other", "413"), 1.0);
    assert_eq!(requests_counted(c.addr, "POST", "other", "400"), 2.0);
    // Still serving.
    assert_eq!(get(c.addr, "/health", &[]).status, 200);
}

#[test]
fn idle_client_is_closed_after_the_read_timeout() {
    let c = guarded();
    let mut s = TcpStream::connect(c.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .expect("server closes the idle connection");
    let took = start.elapsed().as_secs_f64();
    assert!(buf.is_empty(), "idle close is quiet: {buf:?}");
    assert!(
        (READ_TIMEOUT * 0.8..READ_TIMEOUT + 2.0).contains(&took),
        "closed after {took:.2}s"
    );
}

#[test]
fn trickling_client_gets_408_at_the_head_deadline() {
    let c = guarded();
    let mut s = TcpStream::connect(c.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let mut got = Vec::new();
    // One byte every 0.2 s: each read beats the 0.5 s read timeout, the head never completes.
    for b in b"X-Slow: ".iter().cycle().take(100) {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        let mut chunk = [0u8; 512];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed().as_secs_f64();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.read_to_end(&mut got);
    let resp = parse_response(&got).expect("a 408 response");
    assert_eq!(resp.status, 408);
    assert!(
        (HEAD_DEADLINE * 0.8..HEAD_DEADLINE + 2.5).contains(&took),
        "cut off after {took:.2}s"
    );
    assert_eq!(requests_counted(c.addr, "OTHER", "other", "408"), 1.0);
}

#[test]
fn a_flood_of_idle_connections_does_not_lock_out_scrapes() {
    let c = guarded();
    let flood: Vec<TcpStream> = (0..MAX_CONNECTIONS * 4)
        .map(|_| TcpStream::connect(c.addr).expect("connect"))
        .collect();
    // Half of them start a request and stall.
    for mut s in flood.iter().step_by(2) {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
    }
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        let start = Instant::now();
        let r = get(c.addr, "/metrics", &[]);
        assert_eq!(r.status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "scrape took {:?}",
            start.elapsed()
        );
    }
    // Threads do not grow with connections: main, the signal thread, the HTTP executor, two
    // workers, and the agent's operations and SOL console threads.
    let text = get(c.addr, "/metrics", &[]).text();
    let threads = parse_exposition(&text).unwrap()["process_threads"].samples[0].value;
    assert!(threads <= 7.0, "{threads} threads");
    drop(flood);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let c = guarded();
    let mut s = TcpStream::connect(c.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
}

#[test]
fn sigterm_stops_cleanly() {
    let mut c = guarded();
    assert_eq!(get(c.addr, "/health", &[]).status, 200);
    let status = c
        .proc
        .terminate(Duration::from_secs(5))
        .expect("exits within 5 s");
    assert!(status.success(), "{status:?}\n{}", c.proc.log());
    assert!(c.proc.log().contains("stopped"), "{}", c.proc.log());
}
