//! Graphical consoles through the agent, against two independent RFB servers: TigerVNC
//! (`Xtigervnc`, VNC Authentication) and QEMU's VNC server (None). A viewer speaks security
//! None to the agent and never sees the BMC's password; ServerInit is the BMC's; a full
//! framebuffer update arrives; the byte counters equal what the viewer sent and received.
//! Also: the raw TCP listener with a real third-party client (vncdotool), a wrong BMC password,
//! a BMC that is not listening, malformed viewer frames, and noVNC in headless Chromium.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use conduit_tests::vnc::{handshake, view, Handshake, Link, VncServer, PASSWORD};
use conduit_tests::{
    console_ticket_path, get, metric, request, start_component, venv_bin, wait_for, workspace_root,
    Component, TempDir,
};

const TOKEN: &str = "vnc-console-token-0123456789";

/// An agent whose BMCs are the given VNC servers (`id`, port, password).
fn agent(dir: &TempDir, bmcs: &[(&str, u16, Option<&str>)]) -> Component {
    let mut cfg = format!("[agent]\napi_token = \"{TOKEN}\"\npoll_interval_secs = 3600\n");
    cfg.push_str("[console]\nvnc_connect_timeout_secs = 5\nvnc_tcp_accept_secs = 10\n");
    for (id, port, password) in bmcs {
        // IPMI port 9 (discard): nothing answers there, and nothing here needs IPMI.
        cfg.push_str(&format!(
            "[[bmc]]\nid = \"{id}\"\naddress = \"127.0.0.1\"\nport = 9\nusername = \"admin\"\n\
             password = \"password\"\nvnc_port = {port}\n"
        ));
        if let Some(p) = password {
            cfg.push_str(&format!("vnc_password = \"{p}\"\n"));
        }
    }
    let path = dir.0.join("agent.toml");
    std::fs::write(&path, cfg).unwrap();
    // A short HTTP read timeout: consoles must outlive it.
    start_component(
        "conduit-agent",
        &[
            "--config",
            path.to_str().unwrap(),
            "--http.read-timeout",
            "1",
        ],
    )
}

fn bytes(agent: SocketAddr, direction: &str) -> f64 {
    metric(agent, "agent_vnc_bytes_total", &[("direction", direction)])
}

fn errors(agent: SocketAddr, kind: &str) -> f64 {
    metric(
        agent,
        "agent_vnc_connection_errors_total",
        &[("error_type", kind)],
    )
}

fn sessions(agent: SocketAddr, id: &str) -> f64 {
    metric(agent, "agent_vnc_sessions_total", &[("server_id", id)])
}

#[test]
fn tigervnc_with_vnc_auth_through_the_websocket() {
    let tiger = VncServer::tiger(true);
    let dir = TempDir::new("vnc-tiger");
    let agent = agent(&dir, &[("tiger", tiger.addr.port(), Some(PASSWORD))]);

    // The API token is never taken from a URL.
    let (_, status) = Link::try_websocket(agent.addr, &format!("/console/vnc/tiger?token={TOKEN}"));
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let (_, status) = Link::try_websocket(agent.addr, "/console/vnc/tiger?ticket=not-a-ticket");
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    assert_eq!(errors(agent.addr, "unauthenticated"), 2.0);

    let mut link = Link::websocket(
        agent.addr,
        &console_ticket_path(agent.addr, TOKEN, "vnc", "tiger"),
    );
    let screen = view(&mut link);
    assert_eq!((screen.width, screen.height), (1024, 768));
    assert!(
        screen.name.contains("tiger") || !screen.name.is_empty(),
        "{}",
        screen.name
    );
    // Idle past the HTTP read timeout: still attached.
    std::thread::sleep(Duration::from_millis(1500));
    let late = link.drain(Duration::from_millis(300));
    assert_eq!(sessions(agent.addr, "tiger"), 1.0);
    // The counters hold exactly the RFB bytes after the handshakes, each way.
    assert_eq!(bytes(agent.addr, "viewer_to_bmc"), screen.sent as f64);
    assert_eq!(
        bytes(agent.addr, "bmc_to_viewer"),
        (screen.received + late.len()) as f64
    );
    drop(link);
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            (sessions(agent.addr, "tiger") == 0.0).then_some(())
        })
        .is_some(),
        "the session gauge returns to 0 when the viewer leaves"
    );
}

#[test]
fn wrong_bmc_password_is_an_auth_failure_the_viewer_can_read() {
    let tiger = VncServer::tiger(true);
    let dir = TempDir::new("vnc-wrong");
    let agent = agent(
        &dir,
        &[
            ("wrong", tiger.addr.port(), Some("not-it")),
            ("nopass", tiger.addr.port(), None),
            ("down", conduit_tests::free_port(), None),
        ],
    );
    for (id, kind) in [
        ("wrong", "auth_failed"),
        ("nopass", "auth_failed"),
        ("down", "refused"),
    ] {
        let mut link = Link::websocket(
            agent.addr,
            &console_ticket_path(agent.addr, TOKEN, "vnc", id),
        );
        match handshake(&mut link) {
            Handshake::Refused(why) => assert!(why.contains(kind), "{id}: {why}"),
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(errors(agent.addr, "auth_failed"), 2.0);
    assert_eq!(errors(agent.addr, "refused"), 1.0);
    assert_eq!(sessions(agent.addr, "wrong"), 0.0);
}

#[test]
fn qemu_through_the_websocket_and_the_raw_listener() {
    let qemu = VncServer::qemu();
    let dir = TempDir::new("vnc-qemu");
    let agent = agent(&dir, &[("qemu", qemu.addr.port(), None)]);

    let mut link = Link::websocket(
        agent.addr,
        &console_ticket_path(agent.addr, TOKEN, "vnc", "qemu"),
    );
    let screen = view(&mut link);
    assert_eq!(
        (screen.width, screen.height),
        (720, 400),
        "SeaBIOS text mode"
    );
    assert!(screen.name.starts_with("QEMU"), "{}", screen.name);
    assert!(screen.non_black() > 500, "SeaBIOS text is on the screen");

    // A malformed frame (unmasked) ends this viewer's session with a counted error.
    link.send_raw(&conduit_ws::encode_server_frame(
        conduit_ws::Opcode::Binary,
        b"x",
    ));
    link.drain(Duration::from_millis(500));
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            (errors(agent.addr, "viewer_protocol_error") == 1.0).then_some(())
        })
        .is_some()
    );
    assert_eq!(sessions(agent.addr, "qemu"), 0.0);

    // The raw listener, for native viewers: a token-protected POST opens it.
    let r = request(agent.addr, "POST", "/console/vnc/qemu/listen", &[], b"");
    assert_eq!(r.status, 401);
    let r = request(
        agent.addr,
        "POST",
        "/console/vnc/qemu/listen",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let body: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    let listen: SocketAddr = body["address"].as_str().unwrap().parse().unwrap();
    let password = body["password"].as_str().unwrap().to_owned();
    assert_eq!(password.len(), 8, "{body}");
    assert!(listen.ip().is_loopback());
    // vncdotool, a third-party RFB client, takes a screenshot through it, with the
    // listener's one-time password (VNC Authentication).
    let png = dir.0.join("qemu.png");
    let out = Command::new(venv_bin("vncdo"))
        .args(["-s", &format!("{}::{}", listen.ip(), listen.port())])
        .args(["--password", &password])
        .args(["--timeout", "20", "capture"])
        .arg(&png)
        .output()
        .expect("run vncdo");
    assert!(
        out.status.success(),
        "vncdo through the raw listener: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::metadata(&png).unwrap().len() > 1000,
        "a real screenshot"
    );
    // One-shot: the listener is gone after its viewer.
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            std::net::TcpStream::connect(listen).is_err().then_some(())
        })
        .is_some(),
        "the listener closes after its one viewer"
    );
    let text = get(agent.addr, "/metrics", &[]).text();
    assert!(text.contains("agent_vnc_bytes_total"), "{text}");

    // A console in use does not hold up a clean stop (no waiting out the grace period).
    let mut agent = agent;
    let mut link = Link::websocket(
        agent.addr,
        &console_ticket_path(agent.addr, TOKEN, "vnc", "qemu"),
    );
    assert!(matches!(handshake(&mut link), Handshake::Ready(..)));
    let started = std::time::Instant::now();
    let status = agent.proc.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped in {:?} with a console open",
        started.elapsed()
    );
}

/// noVNC (npm `@novnc/novnc`) in headless Debian Chromium through the agent's WebSocket shows
/// QEMU's SeaBIOS screen: the check takes a screenshot and fails when it is blank.
#[test]
fn novnc_in_chromium_shows_the_screen() {
    let novnc = workspace_root().join("tests/peers/novnc");
    assert!(
        novnc.join("node_modules/@novnc/novnc").is_dir(),
        "{}: node modules missing: scripts/test installs them (ensure_novnc)",
        novnc.display()
    );
    let qemu = VncServer::qemu();
    let dir = TempDir::new("vnc-novnc");
    let agent = agent(&dir, &[("qemu", qemu.addr.port(), None)]);
    let png = dir.0.join("novnc.png");
    let url = format!(
        "ws://{}{}",
        agent.addr,
        console_ticket_path(agent.addr, TOKEN, "vnc", "qemu")
    );
    let out = Command::new(conduit_tests::tool("node"))
        .arg(novnc.join("check.mjs"))
        .arg(&url)
        .arg(&png)
        .arg("20000")
        .output()
        .expect("run node");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "noVNC check failed: {report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(v["connected"], true);
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(720), Some(400))
    );
    assert!(v["non_black_pixels"].as_u64().unwrap() > 500, "{report}");
    assert!(Path::new(&png).is_file());
    // noVNC asks for compressed encodings: far fewer bytes than Raw, but not none.
    assert!(bytes(agent.addr, "bmc_to_viewer") > 1_000.0);
}

/// The raw listener's viewer must answer VNC Authentication with the listener's one-time
/// password before the BMC is dialed: a stranger who connects first (wrong response, or
/// asking for security None) gets a failure and the BMC never sees a connection.
#[test]
fn the_raw_listener_takes_only_its_requester() {
    use std::io::{Read, Write};
    // The "BMC": a listener that counts who connects to it.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let dir = TempDir::new("vnc-listener-auth");
    let agent = agent(&dir, &[("trap", trap.local_addr().unwrap().port(), None)]);
    let open = || {
        let r = request(
            agent.addr,
            "POST",
            "/console/vnc/trap/listen",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            b"",
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let body: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        body["address"]
            .as_str()
            .unwrap()
            .parse::<SocketAddr>()
            .unwrap()
    };
    let greet = |addr: SocketAddr| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut version = [0u8; 12];
        s.read_exact(&mut version).unwrap();
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut types = [0u8; 2];
        s.read_exact(&mut types).unwrap();
        assert_eq!(
            types,
            [1, 2],
            "one security type offered: VNC Authentication"
        );
        s
    };

    // A wrong response to the challenge.
    let mut s = greet(open());
    s.write_all(&[2]).unwrap();
    let mut challenge = [0u8; 16];
    s.read_exact(&mut challenge).unwrap();
    s.write_all(&[0u8; 16]).unwrap();
    let mut result = Vec::new();
    let _ = s.read_to_end(&mut result);
    assert_eq!(&result[..4], &[0, 0, 0, 1], "SecurityResult failed");
    assert!(String::from_utf8_lossy(&result[8..]).contains("authentication failed"));

    // Security None, which the listener does not offer.
    let mut s = greet(open());
    s.write_all(&[1]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no challenge, no session: {rest:?}");

    std::thread::sleep(Duration::from_millis(300));
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the BMC was dialed for a viewer that never authenticated"
    );
    assert_eq!(
        metric(
            agent.addr,
            "agent_vnc_connection_errors_total",
            &[("error_type", "viewer_auth_failed")]
        ),
        1.0
    );
}
