//! A serial console through the agent: a WebSocket viewer on `/console/sol/{server_id}`, the
//! agent's SOL session to ipmi_sim, and the test holding the serial port's host side. Bytes go
//! both ways and are counted exactly; a viewer idle for longer than the HTTP read timeout is
//! not cut off; a bad token, an unknown server and a malformed frame are refused and counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use conduit_http::reference::parse_exposition;
use conduit_http::ws::{decode_server_frame, encode_client_frame, Opcode};
use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::{get, start_component, TempDir};

const TOKEN: &str = "console-token-0123456789";

fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    let fams = parse_exposition(text).unwrap();
    fams.get(family)
        .and_then(|f| {
            f.samples.iter().find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
        })
        .map_or(0.0, |s| s.value)
}

/// Opens a WebSocket; returns the stream and the status line.
fn connect(agent: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(agent).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: binary\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed during the handshake");
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// Reads binary frames until `want` bytes of payload arrived.
fn read_payload(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut payload = Vec::new();
    let mut chunk = [0u8; 4096];
    while payload.len() < want {
        while let Ok(Some((frame, used))) = decode_server_frame(&buf, 1 << 20) {
            buf.drain(..used);
            if frame.opcode == Opcode::Binary {
                payload.extend_from_slice(&frame.payload);
            }
        }
        if payload.len() >= want {
            break;
        }
        let n = s.read(&mut chunk).expect("frames from the agent");
        assert!(n > 0, "agent closed the console");
        buf.extend_from_slice(&chunk[..n]);
    }
    payload
}

#[test]
fn serial_console_through_the_agent() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let (mut serial, _) = host.accept().expect("ipmi_sim dials the host side");
    serial
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let dir = TempDir::new("console");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\napi_token = \"{TOKEN}\"\npoll_interval_secs = 3600\n[[bmc]]\nid = \"sim1\"\naddress = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword = \"password\"\n",
            sim.addr.port()
        ),
    )
    .unwrap();
    // A short HTTP read timeout: the console must outlive it.
    let agent = start_component(
        "conduit-agent",
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--http.read-timeout",
            "1",
        ],
    );

    let (_, status) = connect(agent.addr, "/console/sol/sim1?token=wrong-token-0123456");
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let (_, status) = connect(agent.addr, &format!("/console/sol/nope?token={TOKEN}"));
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    let (mut ws, status) = connect(agent.addr, &format!("/console/sol/sim1?token={TOKEN}"));
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    assert!(
        status.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{status}"
    );
    assert!(
        status.contains("Sec-WebSocket-Protocol: binary"),
        "{status}"
    );

    // Give the agent a moment to activate SOL, then the host talks.
    std::thread::sleep(Duration::from_millis(500));
    let from_host = b"login: ".repeat(40); // 280 bytes, more than one SOL packet
    serial.write_all(&from_host).unwrap();
    assert_eq!(read_payload(&mut ws, from_host.len()), from_host);

    // Idle for longer than the HTTP read timeout: still connected.
    std::thread::sleep(Duration::from_millis(1500));
    let typed = b"root\r";
    ws.write_all(&encode_client_frame(Opcode::Binary, typed, [7, 7, 7, 7]))
        .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 64];
    let until = Instant::now() + Duration::from_secs(5);
    while got.len() < typed.len() && Instant::now() < until {
        let n = serial.read(&mut b).unwrap();
        got.extend_from_slice(&b[..n]);
    }
    assert_eq!(got, typed);

    let text = get(agent.addr, "/metrics", &[]).text();
    assert_eq!(
        sample(&text, "agent_sol_sessions_total", &[("server_id", "sim1")]),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "agent_sol_bytes_total",
            &[("direction", "bmc_to_viewer")]
        ),
        from_host.len() as f64
    );
    assert_eq!(
        sample(
            &text,
            "agent_sol_bytes_total",
            &[("direction", "viewer_to_bmc")]
        ),
        typed.len() as f64
    );
    assert_eq!(
        sample(
            &text,
            "agent_sol_errors_total",
            &[("error_type", "unauthenticated")]
        ),
        1.0
    );

    // An unmasked frame is a protocol error: the session ends, counted, the agent lives on.
    ws.write_all(&conduit_http::ws::encode_server_frame(Opcode::Binary, b"x"))
        .unwrap();
    let mut rest = Vec::new();
    let _ = ws.read_to_end(&mut rest);
    let until = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let t = get(agent.addr, "/metrics", &[]).text();
        if sample(&t, "agent_sol_sessions_total", &[("server_id", "sim1")]) == 0.0
            || Instant::now() > until
        {
            break t;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        sample(&text, "agent_sol_sessions_total", &[("server_id", "sim1")]),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "agent_sol_errors_total",
            &[("error_type", "protocol_error")]
        ),
        1.0
    );
}
