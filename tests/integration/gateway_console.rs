//! Consoles through the gateway, as real binaries: a manager, a gateway, an agent behind its
//! uplink and an ipmi_sim BMC whose serial port the test holds. A customer's operator types
//! into the serial console through the gateway and sees the host's echo; a viewer of the same
//! customer watches the same session and cannot type; another customer's user gets no ticket;
//! a ticket works once, for its own console; a foreign page's origin is refused. The gateway's
//! byte counters match the bytes each viewer sent and received exactly, and the agent's; an
//! admin's CloseSession and a logout end sessions with the reason said; every session leaves
//! an audit record; the session metrics gain samples only when sessions happen.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::ws_client::Link;
use conduit_tests::*;
use serde_json::{json, Value};

use crate::gateway_uplink::{eventually, metric, Site};
use crate::manager_api::call;

fn ticket(site: &Site, gw: &Component, token: &str, console: &str) -> (u16, Value) {
    site.gw(
        gw,
        "CreateConsoleTicket",
        Some(token),
        json!({"serverId": "s1", "console": console}),
    )
}

fn path(v: &Value) -> String {
    v["path"].as_str().expect("a console path").to_owned()
}

fn gauge(gw: &Component, family: &str, labels: &[(&str, &str)]) -> f64 {
    metric(gw.addr, family, labels).unwrap_or(0.0)
}

/// What the host side of the serial port reads within `wait`.
fn host_reads(serial: &mut std::net::TcpStream, wait: Duration) -> Vec<u8> {
    serial.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = serial.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn a_serial_console_through_the_gateway_is_shared_counted_audited_and_ends_with_its_right() {
    let mut site = Site::new("gw-console");
    // Pulls every 3 s: a logout reaches the gateway within seconds. One console per user.
    site.gateway_flags = ["--trust-ttl", "9", "--console-max-per-user", "1"]
        .map(String::from)
        .into();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let (mut serial, _) = host.accept().expect("ipmi_sim dials the host side");
    let port = free_port();
    let gw = site.gateway("gw1", port, true);
    let cred = site.credential("AgentService", "agentId", "ag1");
    let agent = site.agent(
        "ag1",
        sim.addr,
        &[format!("ws://127.0.0.1:{port}")],
        &cred,
        &site.pki.ca,
    );
    site.assign_reported("s1", "ag1");
    site.wait_online(&gw, "s1");

    // Before any console: no session series.
    for family in [
        "gateway_sessions_total",
        "gateway_session_operations_total",
        "gateway_session_creation_duration_seconds_count",
    ] {
        assert_eq!(
            metric(gw.addr, family, &[("type", "sol")]),
            None,
            "{family}"
        );
    }
    assert_eq!(
        gauge(&gw, "gateway_console_session_limit", &[("scope", "user")]),
        1.0
    );

    // Who gets a ticket.
    let (s, v) = ticket(&site, &gw, &site.globex_operator, "sol");
    assert_eq!(s, 404, "another customer's server is not found: {v}");
    let (s, v) = ticket(&site, &gw, &site.acme_viewer, "vnc");
    assert_eq!(s, 403, "a viewer gets no graphical console: {v}");
    let (s, v) = ticket(&site, &gw, "not-a-token", "sol");
    assert_eq!(s, 401, "{v}");
    // A ticket works once, for its own console, from the gateway's own or no origin.
    let (s, v) = ticket(&site, &gw, &site.acme_operator, "sol");
    assert_eq!(s, 200, "{v}");
    let spent = path(&v);
    let wrong = spent.replace("/console/sol/", "/console/vnc/");
    let (_, status) = Link::try_websocket(gw.addr, &wrong);
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let (_, status) = Link::try_websocket(gw.addr, &spent);
    assert!(status.starts_with("HTTP/1.1 401"), "used up: {status}");
    let (_, v) = ticket(&site, &gw, &site.acme_operator, "sol");
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        path(&v),
        gw.addr
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 403", "a foreign page's origin");
    assert_eq!(
        gauge(
            &gw,
            "gateway_websocket_errors_total",
            &[("type", "sol"), ("error_type", "origin")]
        ),
        1.0
    );

    // The operator types; the host reads it and answers; the operator sees the echo.
    let (_, v) = ticket(&site, &gw, &site.acme_operator, "sol");
    let mut op = Link::websocket(gw.addr, &path(&v));
    eventually("the session is up", Duration::from_secs(15), || {
        (gauge(
            &gw,
            "gateway_sessions_total",
            &[("type", "sol"), ("customer_id", &site.acme)],
        ) == 1.0)
            .then_some(())
    });
    op.send(b"hello\r");
    let mut typed = Vec::new();
    eventually(
        "the host reads the keystrokes",
        Duration::from_secs(10),
        || {
            typed.extend(host_reads(&mut serial, Duration::from_millis(200)));
            (typed == b"hello\r").then_some(())
        },
    );
    serial.write_all(b"echo: hello\r\n").unwrap();
    op.wait_for("echo: hello", 0);
    // The operator's second console is past the per-user cap.
    let (_, v) = ticket(&site, &gw, &site.acme_operator, "sol");
    let (_, status) = Link::try_websocket(gw.addr, &path(&v));
    assert!(status.starts_with("HTTP/1.1 429"), "{status}");
    assert_eq!(
        gauge(
            &gw,
            "gateway_websocket_errors_total",
            &[("type", "sol"), ("error_type", "session_limit")]
        ),
        1.0
    );

    // A viewer of the same customer watches the same session and cannot type.
    let (s, v) = ticket(&site, &gw, &site.acme_viewer, "sol");
    assert_eq!(s, 200, "{v}");
    let mut viewer = Link::websocket(gw.addr, &path(&v));
    eventually("two sessions", Duration::from_secs(15), || {
        (gauge(
            &gw,
            "gateway_sessions_total",
            &[("type", "sol"), ("customer_id", &site.acme)],
        ) == 2.0)
            .then_some(())
    });
    assert_eq!(
        gauge(
            &gw,
            "gateway_console_sessions_busiest",
            &[("scope", "server")]
        ),
        2.0
    );
    serial.write_all(b"to both\r\n").unwrap();
    op.wait_for("to both", 0);
    viewer.wait_for("to both", 0);
    viewer.send(b"x");
    viewer.send_frame(conduit_ws::Opcode::Text, br#"{"type":"takeover"}"#);
    viewer.wait_for("you are watching", 0);
    assert!(
        host_reads(&mut serial, Duration::from_millis(500)).is_empty(),
        "a viewer's keystrokes never reach the host"
    );
    op.send(b"ok\r");
    let mut more = Vec::new();
    eventually("the operator still types", Duration::from_secs(10), || {
        more.extend(host_reads(&mut serial, Duration::from_millis(200)));
        (more == b"ok\r").then_some(())
    });

    // Sessions are listed to their users, all of them to an admin.
    let (_, mine) = site.gw(&gw, "ListSessions", Some(&site.acme_operator), json!({}));
    assert_eq!(mine["sessions"].as_array().unwrap().len(), 1, "{mine}");
    let (_, all) = site.gw(&gw, "ListSessions", Some(&site.admin), json!({}));
    let all = all["sessions"].as_array().unwrap().clone();
    assert_eq!(all.len(), 2);
    let viewer_session = all
        .iter()
        .find(|s| s["watch"] == true)
        .expect("the viewer's session")["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = site.gw(
        &gw,
        "CloseSession",
        Some(&site.acme_operator),
        json!({"sessionId": viewer_session}),
    );
    assert_eq!(
        s, 404,
        "another user's session is not the operator's to close"
    );
    let (s, v) = site.gw(
        &gw,
        "CloseSession",
        Some(&site.admin),
        json!({"sessionId": viewer_session}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(viewer.wait_close(), (1000, "closed_by_admin".into()));

    // The operator logs out: the session is bound to that login and ends with it.
    let (s, v) = call(
        site.manager.addr,
        "/conduit.manager.v1.AuthService/Logout",
        Some(&site.acme_operator),
        &json!({}),
    );
    assert_eq!(s, 200, "{v}");
    let mut closed = None;
    eventually(
        "the logout ends the console",
        Duration::from_secs(20),
        || {
            op.poll(Duration::from_millis(200));
            closed = op.closed.clone();
            closed.is_some().then_some(())
        },
    );
    assert_eq!(closed, Some((1008, "access_revoked".into())));
    op.drain(Duration::from_millis(200));
    viewer.drain(Duration::from_millis(200));

    // Exact counts: what the two viewers sent (keystrokes and the takeover request) and
    // received, and what the agent counted for the BMC.
    eventually("the sessions ended", Duration::from_secs(10), || {
        (gauge(
            &gw,
            "gateway_sessions_total",
            &[("type", "sol"), ("customer_id", &site.acme)],
        ) == 0.0)
            .then_some(())
    });
    let sent = (b"hello\r".len() + b"ok\r".len() + 1 + br#"{"type":"takeover"}"#.len()) as f64;
    let flow = |d| {
        gauge(
            &gw,
            "gateway_websocket_bytes_transmitted_total",
            &[("type", "sol"), ("direction", d)],
        )
    };
    assert_eq!(flow("inbound"), sent);
    assert_eq!(flow("outbound"), (op.got.len() + viewer.got.len()) as f64);
    let messages = gauge(
        &gw,
        "gateway_websocket_messages_total",
        &[("type", "sol"), ("direction", "inbound")],
    );
    assert_eq!(messages, 4.0);
    assert_eq!(
        metric(
            agent.addr,
            "agent_sol_bytes_total",
            &[("direction", "viewer_to_bmc")]
        ),
        Some((b"hello\r".len() + b"ok\r".len()) as f64),
        "the agent counts what reached the BMC: the operator's keystrokes"
    );
    for (status, n) in [
        ("ok", 2.0),
        ("closed_by_admin", 0.0),
        ("access_revoked", 0.0),
    ] {
        let op_label = if status == "ok" { "create" } else { "close" };
        let got = gauge(
            &gw,
            "gateway_session_operations_total",
            &[("operation", op_label), ("type", "sol"), ("status", status)],
        );
        assert_eq!(
            got,
            if status == "ok" { n } else { 1.0 },
            "{op_label} {status}"
        );
    }
    assert_eq!(
        gauge(
            &gw,
            "gateway_session_duration_seconds_count",
            &[("type", "sol")]
        ),
        2.0
    );

    // Each session left an audit record at the manager.
    let record = site.audited("console.sol");
    assert!(
        record["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("bytes"),
        "{record}"
    );
    drop(agent);
}

#[test]
fn a_graphical_console_through_the_gateway_matches_the_agent_byte_for_byte() {
    use conduit_tests::vnc::{handshake, view, Handshake, VncServer, PASSWORD};
    let site = Site::new("gw-vnc");
    let tiger = VncServer::tiger(true);
    let sim = IpmiSim::start();
    let bmc = format!(
        "{}vnc_port = {}\nvnc_password = \"{PASSWORD}\"\n",
        crate::gateway_uplink::ipmi_bmc("s1", sim.addr),
        tiger.addr.port()
    );
    let (gw, agent) = site.acme_s1_behind(&bmc);
    assert_eq!(
        metric(gw.addr, "gateway_sessions_total", &[("type", "vnc")]),
        None
    );

    let (s, v) = ticket(&site, &gw, &site.acme_operator, "vnc");
    assert_eq!(s, 200, "{v}");
    let mut link = Link::websocket(gw.addr, &path(&v));
    let screen = view(&mut link);
    assert_eq!((screen.width, screen.height), (1024, 768));
    let late = link.drain(Duration::from_millis(300));
    let flow = |d| {
        gauge(
            &gw,
            "gateway_websocket_bytes_transmitted_total",
            &[("type", "vnc"), ("direction", d)],
        )
    };
    // What the viewer sent: RFB's version, security type and ClientInit, then its requests.
    let sent = 12 + 1 + 1 + screen.sent;
    assert_eq!(flow("inbound"), sent as f64);
    assert_eq!(flow("outbound"), link.got.len() as f64);
    // The agent counts the RFB bytes after its handshakes; the gateway, every payload byte.
    let agent_bytes = |d| metric(agent.addr, "agent_vnc_bytes_total", &[("direction", d)]);
    assert_eq!(agent_bytes("viewer_to_bmc"), Some(screen.sent as f64));
    let after_handshake = screen.received + late.len();
    assert_eq!(agent_bytes("bmc_to_viewer"), Some(after_handshake as f64));
    assert_eq!(
        link.got.len() - after_handshake,
        12 + 1 + 1 + 4 + 24 + screen.name.len(),
        "the rest is the viewer's handshake"
    );
    assert_eq!(
        gauge(
            &gw,
            "gateway_sessions_total",
            &[("type", "vnc"), ("customer_id", &site.acme)]
        ),
        1.0
    );
    drop(link);
    eventually(
        "the viewer's leaving ends the session",
        Duration::from_secs(10),
        || {
            (gauge(
                &gw,
                "gateway_session_operations_total",
                &[
                    ("operation", "close"),
                    ("type", "vnc"),
                    ("status", "viewer_left"),
                ],
            ) == 1.0)
                .then_some(())
        },
    );

    // The agent goes away mid-session: the viewer is told.
    let (_, v) = ticket(&site, &gw, &site.acme_operator, "vnc");
    let mut link = Link::websocket(gw.addr, &path(&v));
    assert!(matches!(handshake(&mut link), Handshake::Ready(..)));
    drop(agent);
    let (code, why) = link.wait_close();
    assert_eq!(code, 1011);
    assert!(why == "agent_ended" || why == "link_dropped", "{why}");
}
