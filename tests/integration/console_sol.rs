//! Serial consoles through the agent: WebSocket viewers on `/console/sol/{server_id}`, the
//! agent's SOL session to ipmi_sim, and the test holding the serial port's host side. Bytes go
//! both ways and are counted exactly; a viewer idle for longer than the HTTP read timeout is
//! not cut off; a bad token, an unknown server and a malformed frame are refused and counted.
//! Several viewers share one session and one keyboard; the console rides out a BMC restart;
//! SOL held by another session is refused unless forced; the console is logged.
//!
//! ipmi_sim dials the host side (again after a restart) and dies of SIGPIPE if that socket is
//! closed while it writes: [`SerialHost`] accepts every connection and keeps draining them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::ws_client::Link;
use conduit_tests::{
    console_ticket_path, get, request, start_component, wait_for, Component, TempDir,
};
use conduit_ws::Opcode;

const TOKEN: &str = "console-token-0123456789";

fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    conduit_tests::sample(text, family, labels).unwrap_or(0.0)
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

    // The API token is never taken from a URL; a ticket is, once, for its own console.
    let (_, status) = Link::try_websocket(agent.addr, &format!("/console/sol/sim1?token={TOKEN}"));
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let (_, status) = Link::try_websocket(agent.addr, "/console/sol/sim1?ticket=00ff");
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let auth = format!("Bearer {TOKEN}");
    let nope = request(
        agent.addr,
        "POST",
        "/api/v1/servers/nope/console/sol/ticket",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(nope.status, 404, "{}", nope.text());
    let unauthenticated = request(
        agent.addr,
        "POST",
        "/api/v1/servers/sim1/console/sol/ticket",
        &[],
        b"",
    );
    assert_eq!(unauthenticated.status, 401);
    let vnc_ticket = console_ticket_path(agent.addr, TOKEN, "vnc", "sim1");
    let (_, status) = Link::try_websocket(
        agent.addr,
        &vnc_ticket.replace("/console/vnc/", "/console/sol/"),
    );
    assert!(
        status.starts_with("HTTP/1.1 401"),
        "a VNC ticket opened SOL: {status}"
    );

    let path = console_ticket_path(agent.addr, TOKEN, "sol", "sim1");
    let (mut ws, status) = Link::try_websocket(agent.addr, &path);
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    let (_, again) = Link::try_websocket(agent.addr, &path);
    assert!(
        again.starts_with("HTTP/1.1 401"),
        "a ticket worked twice: {again}"
    );
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
    assert_eq!(ws.read_exact(from_host.len()).unwrap(), from_host);

    // Idle for longer than the HTTP read timeout: still connected.
    std::thread::sleep(Duration::from_millis(1500));
    let typed = b"root\r";
    ws.send(typed);
    let mut got = Vec::new();
    let mut b = [0u8; 64];
    let until = Instant::now() + Duration::from_secs(5);
    while got.len() < typed.len() && Instant::now() < until {
        let n = serial.read(&mut b).unwrap();
        got.extend_from_slice(&b[..n]);
    }
    assert_eq!(got, typed);

    // Keystrokes count once the BMC acknowledges them, which can be after the host has them:
    // scrape until they are (the assertions below stay exact).
    let keys_counted = |t: &String| {
        sample(
            t,
            "agent_sol_bytes_total",
            &[("direction", "viewer_to_bmc")],
        ) == typed.len() as f64
    };
    let text = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        Some(get(agent.addr, "/metrics", &[]).text()).filter(keys_counted)
    })
    .unwrap_or_else(|| get(agent.addr, "/metrics", &[]).text());
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
        // The token in the URL, a made-up ticket, a VNC ticket, a used-up ticket.
        4.0
    );

    // An unmasked frame is a protocol error: the session ends, counted, the agent lives on.
    ws.send_raw(&conduit_ws::encode_server_frame(Opcode::Binary, b"x"));
    assert_eq!(ws.wait_close().0, 1002);
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

/// The host side of ipmi_sim's serial port: accepts every connection ipmi_sim makes (again
/// after a restart), keeps reading all of them, writes to the newest.
struct SerialHost {
    received: Arc<Mutex<Vec<u8>>>,
    current: Arc<Mutex<Option<TcpStream>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SerialHost {
    fn start(listener: TcpListener) -> SerialHost {
        listener.set_nonblocking(true).unwrap();
        let host = SerialHost {
            received: Arc::default(),
            current: Arc::default(),
            connections: Arc::default(),
            stop: Arc::default(),
        };
        let (received, current, connections, stop) = (
            host.received.clone(),
            host.current.clone(),
            host.connections.clone(),
            host.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                let mut reader = s.try_clone().unwrap();
                *current.lock().unwrap() = Some(s);
                connections.fetch_add(1, Ordering::Relaxed);
                let received = received.clone();
                std::thread::spawn(move || {
                    let mut b = [0u8; 4096];
                    while let Ok(n @ 1..) = reader.read(&mut b) {
                        received.lock().unwrap().extend_from_slice(&b[..n]);
                    }
                });
            }
        });
        host
    }

    /// Waits for ipmi_sim's `n`th connection.
    fn wait_connections(&self, n: usize) {
        assert!(
            wait_for(Duration::from_secs(15), Duration::from_millis(20), || {
                (self.connections.load(Ordering::Relaxed) >= n).then_some(())
            })
            .is_some(),
            "ipmi_sim did not dial the host side ({n})"
        );
    }

    /// The host prints `data` on its serial port.
    fn write(&self, data: &[u8]) {
        let mut current = self.current.lock().unwrap();
        current
            .as_mut()
            .expect("ipmi_sim connected")
            .write_all(data)
            .unwrap();
    }

    /// What the host received from the console so far.
    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until the host received something ending with `tail`.
    fn wait_received(&self, tail: &[u8]) -> Vec<u8> {
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            let r = self.received();
            r.ends_with(tail).then_some(r)
        })
        .unwrap_or_else(|| {
            panic!(
                "host did not receive {:?}; got {:?}",
                String::from_utf8_lossy(tail),
                String::from_utf8_lossy(&self.received())
            )
        })
    }
}

impl Drop for SerialHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An agent with one BMC, `sim1`, and `extra` config lines (sections after `[[bmc]]`).
fn agent_for(sim: &IpmiSim, dir: &TempDir, extra: &str) -> Component {
    // Each agent a state directory of its own: one agent's SOL markers are not another's.
    agent_with_state(sim, dir, &format!("state-{}", next()), extra)
}

/// An agent keeping its state (the SOL payloads it holds) in `dir/state`.
fn agent_with_state(sim: &IpmiSim, dir: &TempDir, state: &str, extra: &str) -> Component {
    let cfg = dir.0.join(format!("agent-{}.toml", next()));
    std::fs::write(
        &cfg,
        format!(
            "[agent]\napi_token = \"{TOKEN}\"\npoll_interval_secs = 3600\nstate_dir = \"{state}\"\n[[bmc]]\nid = \"sim1\"\naddress = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword = \"password\"\n{extra}",
            sim.addr.port()
        ),
    )
    .unwrap();
    start_component("conduit-agent", &["--config", cfg.to_str().unwrap()])
}

fn next() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn metric(agent: &Component, family: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&get(agent.addr, "/metrics", &[]).text(), family, labels)
}

/// Waits until `agent_sol_sessions_total{server_id="sim1"}` is `n`.
fn wait_sessions(agent: &Component, n: f64) {
    let ok = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        (metric(agent, "agent_sol_sessions_total", &[("server_id", "sim1")]) == n).then_some(())
    });
    assert!(
        ok.is_some(),
        "agent_sol_sessions_total never reached {n}; agent log:\n{}",
        agent.proc.log()
    );
}

fn console_path(addr: std::net::SocketAddr, query: &str) -> String {
    format!("{}{query}", console_ticket_path(addr, TOKEN, "sol", "sim1"))
}

#[test]
fn viewers_share_one_session_and_one_keyboard() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let serial = SerialHost::start(host);
    serial.wait_connections(1);
    let dir = TempDir::new("console-share");
    let agent = agent_for(&sim, &dir, "");

    let mut a = Link::websocket(agent.addr, &console_path(agent.addr, ""));
    wait_sessions(&agent, 1.0);
    let mut b = Link::websocket(agent.addr, &console_path(agent.addr, ""));

    // Both see the host's output.
    serial.write(b"hello-both\r\n");
    a.wait_for("hello-both\r\n", 0);
    let mut b_at = b.wait_for("hello-both\r\n", 0);

    // The first viewer holds the keyboard; the second is told (once) that its input is dropped.
    a.send(b"from-a\r");
    serial.wait_received(b"from-a\r");
    b.send(b"from-b\r");
    b_at = b.wait_for("read-only", b_at);
    b.send(b"again-b\r");
    a.send(b"a2\r");
    serial.wait_received(b"a2\r");

    // The second takes the keyboard: its keystrokes arrive, the first's do not.
    b.send_frame(Opcode::Text, br#"{"type":"takeover"}"#);
    b.wait_for("[conduit: you have the keyboard]", b_at);
    let a_at = a.wait_for("another viewer took the keyboard", 0);
    b.send(b"from-b2\r");
    serial.wait_received(b"from-b2\r");
    a.send(b"lost-a\r");
    b.send(b"b3\r");
    serial.wait_received(b"b3\r");

    // A third joins with ?mode=takeover and takes it on arrival.
    let mut c = Link::websocket(agent.addr, &console_path(agent.addr, "&mode=takeover"));
    c.wait_for("[conduit: you have the keyboard]", 0);
    b.wait_for("another viewer took the keyboard", b_at);
    c.send(b"from-c\r");
    assert_eq!(
        serial.wait_received(b"from-c\r"),
        b"from-a\ra2\rfrom-b2\rb3\rfrom-c\r"
    );
    // Status lines are for the viewer concerned only, never console output.
    assert!(!String::from_utf8_lossy(&a.got[a_at..]).contains("read-only"));

    // A quiet console stays up: the keepalive (every 3 s) finds the session still ours.
    std::thread::sleep(Duration::from_millis(3500));
    c.poll(Duration::from_millis(50));
    assert!(
        !String::from_utf8_lossy(&c.got).contains("SOL link"),
        "{}",
        String::from_utf8_lossy(&c.got)
    );

    // One session for three viewers; output counted once per chunk from the BMC, input once
    // accepted; status lines not at all.
    let text = get(agent.addr, "/metrics", &[]).text();
    assert!(!text.contains("agent_sol_reconnections_total{"), "{text}");
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
        b"hello-both\r\n".len() as f64
    );
    assert_eq!(
        sample(
            &text,
            "agent_sol_bytes_total",
            &[("direction", "viewer_to_bmc")]
        ),
        b"from-a\ra2\rfrom-b2\rb3\rfrom-c\r".len() as f64
    );

    // When the last viewer leaves, SOL is deactivated (after the linger).
    drop((a, b, c));
    wait_sessions(&agent, 0.0);
}

#[test]
fn viewers_ride_out_a_bmc_restart() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let serial = SerialHost::start(host);
    serial.wait_connections(1);
    let dir = TempDir::new("console-restart");
    let agent = agent_for(&sim, &dir, "[console]\nsol_reconnect_max_secs = 1\n");

    let mut a = Link::websocket(agent.addr, &console_path(agent.addr, ""));
    wait_sessions(&agent, 1.0);
    let mut b = Link::websocket(agent.addr, &console_path(agent.addr, ""));
    serial.write(b"before\r\n");
    let a_at = a.wait_for("before\r\n", 0);
    let b_at = b.wait_for("before\r\n", 0);

    // The BMC goes away: the viewers stay and are told.
    sim.stop();
    let a_at = a.wait_for("[conduit: SOL link to sim1 lost (", a_at);
    let b_at = b.wait_for("[conduit: SOL link to sim1 lost (", b_at);
    a.wait_for("reconnecting in 0.5s]\r\n", a_at);
    // Attempts fail while it is down.
    a.wait_for("[conduit: reconnecting to sim1 failed (", a_at);
    wait_sessions(&agent, 0.0);

    sim.restart();
    serial.wait_connections(2);
    let a_at = a.wait_for("[conduit: reconnected to sim1; output the host sent while no SOL session was active was dropped by the BMC]\r\n", a_at);
    let b_at = b.wait_for("[conduit: reconnected to sim1;", b_at);
    wait_sessions(&agent, 1.0);

    // Both ways again, on the new session.
    serial.write(b"after\r\n");
    a.wait_for("after\r\n", a_at);
    b.wait_for("after\r\n", b_at);
    a.send(b"typed-after\r");
    serial.wait_received(b"typed-after\r");

    let text = get(agent.addr, "/metrics", &[]).text();
    let reconnections = |status| {
        sample(
            &text,
            "agent_sol_reconnections_total",
            &[("server_id", "sim1"), ("status", status)],
        )
    };
    assert_eq!(reconnections("success"), 1.0, "{text}");
    assert!(reconnections("failure") >= 1.0, "{text}");
    // Status lines are not console bytes.
    assert_eq!(
        sample(
            &text,
            "agent_sol_bytes_total",
            &[("direction", "bmc_to_viewer")]
        ),
        b"before\r\nafter\r\n".len() as f64
    );
    assert!(
        sample(
            &text,
            "agent_sol_errors_total",
            &[("error_type", "unreachable")]
        ) + sample(
            &text,
            "agent_sol_errors_total",
            &[("error_type", "timeout")]
        ) >= 1.0,
        "{text}"
    );
}

#[test]
fn sol_held_by_another_session_is_refused_unless_forced() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let serial = SerialHost::start(host);
    serial.wait_connections(1);
    let dir = TempDir::new("console-force");
    // Two agents on one BMC: the first one's console holds SOL.
    // (A reconnect cap of 2 s: the first agent retries unforced, and each retry could slip
    // into the gap between the forcing side's deactivate and activate on a loaded machine.)
    let first = agent_for(&sim, &dir, "[console]\nsol_reconnect_max_secs = 2\n");
    let second = agent_for(&sim, &dir, "");
    let mut holder = Link::websocket(first.addr, &console_path(first.addr, ""));
    wait_sessions(&first, 1.0);
    // A viewer asking for force joins the first agent's console while it is up: that
    // changes nothing, also not later.
    let mut late = Link::websocket(first.addr, &console_path(first.addr, "&force=1"));
    serial.write(b"seen-by-both\r\n");
    holder.wait_for("seen-by-both\r\n", 0);
    late.wait_for("seen-by-both\r\n", 0);

    // Without force: refused, said, counted.
    let mut refused = Link::websocket(second.addr, &console_path(second.addr, ""));
    assert_eq!(refused.wait_close(), (1011, "sol_in_use".to_owned()));
    refused.wait_for("in use by another session; connect with ?force=1", 0);
    assert_eq!(
        metric(
            &second,
            "agent_sol_errors_total",
            &[("error_type", "sol_in_use")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &second,
            "agent_sol_sessions_total",
            &[("server_id", "sim1")]
        ),
        0.0
    );

    // With force: the second agent takes SOL over, both ways.
    let mut forced = Link::websocket(second.addr, &console_path(second.addr, "&force=1"));
    wait_sessions(&second, 1.0);
    serial.write(b"to-the-new-holder\r\n");
    forced.wait_for("to-the-new-holder\r\n", 0);
    forced.send(b"from-forced\r");
    assert_eq!(serial.wait_received(b"from-forced\r"), b"from-forced\r");

    // The first agent notices it lost the payload and says so, then cannot get it back.
    let at = holder.wait_for("[conduit: SOL link to sim1 lost (sol_deactivated)", 0);
    holder.wait_for("[conduit: reconnecting to sim1 failed (sol_in_use)", at);
    late.wait_for("[conduit: reconnecting to sim1 failed (sol_in_use)", 0);
    // The second agent keeps SOL.
    forced.send(b"still-forced\r");
    serial.wait_received(b"from-forced\rstill-forced\r");
    assert!(!String::from_utf8_lossy(&forced.got).contains("SOL link"));
    assert!(!String::from_utf8_lossy(&holder.got).contains("to-the-new-holder"));
    assert_eq!(
        metric(
            &first,
            "agent_sol_errors_total",
            &[("error_type", "sol_deactivated")]
        ),
        1.0
    );
    assert!(
        metric(
            &first,
            "agent_sol_reconnections_total",
            &[("server_id", "sim1"), ("status", "failure")]
        ) >= 1.0
    );
    assert_eq!(
        metric(&first, "agent_sol_sessions_total", &[("server_id", "sim1")]),
        0.0
    );
}

#[test]
fn session_log_records_the_console_and_rotates() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let serial = SerialHost::start(host);
    serial.wait_connections(1);
    let dir = TempDir::new("console-log");
    let logs = dir.0.join("sol-logs");
    let agent = agent_for(
        &sim,
        &dir,
        &format!(
            "[console]\nsol_log_dir = \"{}\"\nsol_log_max_bytes = 64\nsol_log_keep = 2\n",
            logs.display()
        ),
    );
    let mut v = Link::websocket(agent.addr, &console_path(agent.addr, ""));
    wait_sessions(&agent, 1.0);
    let lines: Vec<u8> = (0..10)
        .flat_map(|i| format!("boot line {i:02}\r\n").into_bytes())
        .collect(); // 140 bytes: more than two files of 64
    serial.write(&lines);
    v.wait_for("boot line 09\r\n", 0);

    let read = |name: &str| std::fs::read(logs.join(name)).unwrap_or_default();
    let (current, one, two) = (read("sim1.log"), read("sim1.log.1"), read("sim1.log.2"));
    for f in [&current, &one, &two] {
        assert!(f.len() <= 64, "{}", String::from_utf8_lossy(f));
    }
    assert!(!one.is_empty() && !two.is_empty(), "rotated");
    assert!(!logs.join("sim1.log.3").exists());
    // Oldest first, the files hold the console's output in order, nothing else.
    let all = [two, one, current].concat();
    assert_eq!(all, lines, "{}", String::from_utf8_lossy(&all));
}

#[test]
fn a_paste_reaches_the_host_once_and_is_counted_exactly() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let serial = SerialHost::start(host);
    serial.wait_connections(1);
    let dir = TempDir::new("console-paste");
    let agent = agent_for(&sim, &dir, "");
    let mut v = Link::websocket(agent.addr, &console_path(agent.addr, ""));
    wait_sessions(&agent, 1.0);
    // One frame, many SOL packets (ipmi_sim takes 28 characters a packet into a 32-byte
    // buffer): partially accepted packets are completed, nothing is doubled.
    let paste: Vec<u8> = (0..4096u32)
        .map(|i| b'a' + (i % 26) as u8)
        .chain(*b"\r")
        .collect();
    v.send(&paste);
    assert_eq!(serial.wait_received(b"\r"), paste);
    assert_eq!(
        metric(
            &agent,
            "agent_sol_bytes_total",
            &[("direction", "viewer_to_bmc")]
        ),
        paste.len() as f64
    );
}

#[test]
fn a_viewer_coming_back_finds_a_working_console() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let serial = SerialHost::start(host);
    serial.wait_connections(1);
    let dir = TempDir::new("console-return");
    let agent = agent_for(&sim, &dir, "");
    // A browser tab reloaded at different moments: while the console lingers (1 s after the
    // last viewer left), while it is being deactivated, after.
    for (round, pause_ms) in [0, 700, 1000, 1200, 1400, 1700].into_iter().enumerate() {
        let mut v = Link::websocket(agent.addr, &console_path(agent.addr, ""));
        // Output reaches the viewer once its console is up (the BMC drops it before).
        let marker = format!("round-{round}\r\n");
        let until = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&v.got).contains(&marker) {
            assert!(
                Instant::now() < until && v.poll(Duration::from_millis(50)),
                "round {round}: no console; saw {:?}, closed {:?}",
                String::from_utf8_lossy(&v.got),
                v.closed
            );
            serial.write(marker.as_bytes());
            std::thread::sleep(Duration::from_millis(100));
            v.poll(Duration::from_millis(50));
        }
        let typed = format!("typed-{round}\r");
        v.send(typed.as_bytes());
        serial.wait_received(typed.as_bytes());
        drop(v);
        std::thread::sleep(Duration::from_millis(pause_ms));
    }
    for error_type in ["sol_in_use", "timeout"] {
        assert_eq!(
            metric(
                &agent,
                "agent_sol_errors_total",
                &[("error_type", error_type)]
            ),
            0.0,
            "{error_type}"
        );
    }
}

/// SIGTERM with a console open: the agent tells the viewer, deactivates SOL and closes its
/// sessions, and exits within 5 s; another tool then activates SOL without force.
#[test]
fn sigterm_deactivates_sol_and_exits_within_five_seconds() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let serial = SerialHost::start(host);
    serial.wait_connections(1);
    let dir = TempDir::new("console-sigterm");
    let mut first = agent_for(&sim, &dir, "");
    let mut viewer = Link::websocket(first.addr, &console_path(first.addr, ""));
    wait_sessions(&first, 1.0);
    serial.write(b"before-stop\r\n");
    viewer.wait_for("before-stop\r\n", 0);

    let started = Instant::now();
    let status = first.proc.terminate(Duration::from_secs(10));
    let took = started.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        first.proc.log()
    );
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    assert!(
        first
            .proc
            .log()
            .contains("consoles and BMC sessions closed"),
        "{}",
        first.proc.log()
    );

    // SOL is free: an agent with no memory of it (no marker, no force) activates it.
    let second = agent_for(&sim, &dir, "");
    let mut next = Link::websocket(second.addr, &console_path(second.addr, ""));
    wait_sessions(&second, 1.0);
    serial.write(b"after-stop\r\n");
    next.wait_for("after-stop\r\n", 0);
}

/// `kill -9` with a console open leaves SOL active on the BMC. An agent that is not its
/// owner is refused (`sol_in_use`); the restarted agent (same state directory) takes its own
/// stale payload back without being asked to force.
#[test]
fn after_kill_9_the_restarted_agent_gets_its_console_back() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let serial = SerialHost::start(host);
    serial.wait_connections(1);
    let dir = TempDir::new("console-kill9");
    let mut crashed = agent_with_state(&sim, &dir, "state-owner", "");
    let mut viewer = Link::websocket(crashed.addr, &console_path(crashed.addr, ""));
    wait_sessions(&crashed, 1.0);
    serial.write(b"before-crash\r\n");
    viewer.wait_for("before-crash\r\n", 0);
    crashed.proc.kill9();

    // The payload is still active on the BMC: a stranger is refused.
    let stranger = agent_for(&sim, &dir, "");
    let mut refused = Link::websocket(stranger.addr, &console_path(stranger.addr, ""));
    assert_eq!(refused.wait_close(), (1011, "sol_in_use".to_owned()));

    // The owner, restarted, gets it back without force.
    let restarted = agent_with_state(&sim, &dir, "state-owner", "");
    let mut back = Link::websocket(restarted.addr, &console_path(restarted.addr, ""));
    wait_sessions(&restarted, 1.0);
    serial.write(b"after-restart\r\n");
    back.wait_for("after-restart\r\n", 0);
    back.send(b"typed-after-restart\r");
    serial.wait_received(b"typed-after-restart\r");
    assert!(
        restarted.proc.log().contains("taking back the payload"),
        "{}",
        restarted.proc.log()
    );
    assert_eq!(
        metric(
            &restarted,
            "agent_sol_errors_total",
            &[("error_type", "sol_in_use")]
        ),
        0.0
    );
}

/// SIGHUP reloads the inventory and its secrets: an unchanged BMC keeps its console (not a
/// byte lost, no notice), a BMC whose password changed is polled with the new one, a removed
/// one leaves no series, an added one is polled; a file that does not load changes nothing.
#[test]
fn sighup_reloads_the_inventory_and_keeps_unchanged_consoles() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    let serial = SerialHost::start(host);
    serial.wait_connections(1);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("console-sighup");
    let cfg = dir.0.join("agent.toml");
    let bmc = |id: &str, port: u16, password: &str| {
        format!("[[bmc]]\nid = \"{id}\"\naddress = \"127.0.0.1\"\nport = {port}\nusername = \"admin\"\npassword = \"{password}\"\n")
    };
    let head = format!(
        "[agent]\napi_token = \"{TOKEN}\"\npoll_interval_secs = 0.5\noperation_timeout_secs = 2\n"
    );
    let p = sim.addr.port();
    std::fs::write(
        &cfg,
        format!(
            "{head}{}{}{}",
            bmc("sim1", p, "password"),
            bmc("sim2", p, "password"),
            bmc("gone", p, "password")
        ),
    )
    .unwrap();
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let up = |id: &str| {
        conduit_tests::sample(
            &get(agent.addr, "/metrics", &[]).text(),
            "agent_bmc_up",
            &[("server_id", id)],
        )
    };
    let until = |what: &str, f: &dyn Fn() -> bool| {
        assert!(
            wait_for(Duration::from_secs(15), Duration::from_millis(100), || f()
                .then_some(()))
            .is_some(),
            "{what}; log:\n{}",
            agent.proc.log()
        );
    };
    until("all three up", &|| {
        ["sim1", "sim2", "gone"]
            .iter()
            .all(|id| up(id) == Some(1.0))
    });
    let mut viewer = Link::websocket(agent.addr, &console_path(agent.addr, ""));
    wait_sessions(&agent, 1.0);
    serial.write(b"before-reload\r\n");
    viewer.wait_for("before-reload\r\n", 0);

    // sim2's password changes (now wrong), `gone` goes, `silent3` comes.
    std::fs::write(
        &cfg,
        format!(
            "{head}{}{}{}",
            bmc("sim1", p, "password"),
            bmc("sim2", p, "not-the-password"),
            bmc("silent3", silent.local_addr().unwrap().port(), "password")
        ),
    )
    .unwrap();
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &agent.proc.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    hup();
    until("the reload logged", &|| {
        agent.proc.log().contains("reloaded ")
    });
    until("sim2 down with its new password", &|| {
        up("sim2") == Some(0.0)
    });
    until("silent3 polled", &|| up("silent3") == Some(0.0));
    until("gone has no series", &|| up("gone").is_none());
    let text = get(agent.addr, "/metrics", &[]).text();
    assert!(!text.contains(r#"server_id="gone""#), "{text}");
    assert_eq!(up("sim1"), Some(1.0));

    // The console of the unchanged BMC never noticed.
    serial.write(b"after-reload\r\n");
    let at = viewer.wait_for("after-reload\r\n", 0);
    assert!(
        !String::from_utf8_lossy(&viewer.got[..at]).contains("[conduit:"),
        "{}",
        String::from_utf8_lossy(&viewer.got)
    );
    viewer.send(b"typed-after-reload\r");
    serial.wait_received(b"typed-after-reload\r");
    assert_eq!(
        metric(&agent, "agent_sol_sessions_total", &[("server_id", "sim1")]),
        1.0
    );

    // A broken file: refused, said, nothing changes.
    std::fs::write(&cfg, "[agent\nnot toml").unwrap();
    hup();
    until("the refusal logged", &|| {
        agent.proc.log().contains("still running the configuration")
    });
    assert_eq!(up("sim1"), Some(1.0));
    assert_eq!(up("silent3"), Some(0.0));
}
