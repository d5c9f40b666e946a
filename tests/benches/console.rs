//! `cargo bench -p conduit-tests --bench console`: throughput of a long VNC stream from a BMC to
//! a viewer through four relays, same run, same source. Needs the release binaries
//! (`cargo build --release --workspace --bins`), ipmi_sim and Debian's `websockify`. Reports;
//! not a CI gate.
//!
//! The source is a fake VNC server in this process: RFB 3.8, security None, a 1920x1080 32 bpp
//! ServerInit; after ClientInit and the viewer's first message (a FramebufferUpdateRequest) it
//! streams `CONDUIT_BENCH_BYTES` (default 2 GiB) of a repeating pattern in 64 KiB writes. The
//! viewer (also here) does the RFB 3.8 None handshake through the relay, then reads until it has
//! every byte, checking the pattern; it times from the first payload byte to the last. Relays:
//!
//! 1. plain copy loop: this binary re-executed as a minimal TCP relay (two threads, 64 KiB
//!    read/write loops), the lower bound;
//! 2. the agent (`target/release/conduit-agent`) over its WebSocket `/console/vnc/{id}`;
//! 3. `websockify` (Python) over its WebSocket;
//! 4. the gateway and the agent: the viewer's WebSocket at the gateway (a fresh one-time ticket
//!    per run, as the operator of the server's customer), spliced to the agent's console over
//!    the data connection the agent dials (TLS, as in production).
//!
//! Then, through the gateway: the time from a user's request (the ticket call) to the first
//! console byte, against the same at the agent (goal: at most 1.2×); and PowerStatus of the
//! same server over the same uplink, idle and while a stream runs through the gateway (goal:
//! at most 10 ms added at p99) — console bytes travel on their own connection.
//!
//! Measured per relay: MiB/s, % of the copy loop, and CPU seconds per GiB of each hop's process
//! tree (utime+stime from /proc, per pid, before and after; websockify forks per connection),
//! the median of 5 runs in alternating order after a smaller warm-up. Viewer and server CPU are
//! not counted (they run here, on the same cores). The agent's `agent_vnc_bytes_total
//! {direction="bmc_to_viewer"}` must equal the bytes streamed through it, and the gateway's
//! `gateway_websocket_bytes_transmitted_total{type="vnc",direction="outbound"}` those through it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use conduit_tests::bench_site::{BenchSite, AGENT_TOKEN};
use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::rpc_client::Client;
use conduit_tests::stats::{median, pct};
use conduit_tests::{bin_dir, free_port, metric, start_until, tool};
use conduit_tests::{wait_for, workspace_root, Running, TempDir};
use conduit_ws::{encode_client_frame, Opcode};
use serde_json::json;

/// The fake server's write size.
const CHUNK: usize = 64 * 1024;
/// The copy loop's buffer: the same as the agent's relay buffer (`console/vnc.rs`), so the
/// baseline is the same loop minus the agent, not a handicapped one.
const RELAY_BUF: usize = 256 * 1024;
/// Viewer read buffer (and the longest slice checked against the pattern at once).
const BUF: usize = 256 * 1024;
/// The pattern repeats every PERIOD bytes (prime, so it never lines up with the chunks).
const PERIOD: usize = 251;
const TIMEOUT: Duration = Duration::from_secs(30);
/// Runs per relay (the median is reported: a 2-core machine running server, relay and viewer
/// at once is noisy).
const RUNS: usize = 5;
const COPY_ENV: &str = "CONDUIT_BENCH_COPY_TO";
const MIB: f64 = 1024.0 * 1024.0;
const FIX: &str = "run: cargo build --release --workspace --bins";
/// What the viewer receives before the stream: the RFB version, one security type, the
/// SecurityResult and the ServerInit with its name (`bench`).
const HANDSHAKE_TO_VIEWER: u64 = 12 + 2 + 4 + 24 + 5;
/// First-byte probes per path.
const PROBES: usize = 30;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % PERIOD) as u8 ^ 0x5a).collect()
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The fake BMC; each connection streams the byte count `bytes` held when it was accepted.
fn fake_vnc(bytes: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake VNC server");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let n = bytes.load(Ordering::SeqCst);
            std::thread::spawn(move || {
                // A probe leaves after the first byte: not an error worth a line.
                serve(s, n).map_err(|e| {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::BrokenPipe
                    ) {
                        eprintln!("fake VNC: {e}")
                    }
                })
            });
        }
    });
    addr
}

fn serve(mut s: TcpStream, n: u64) -> io::Result<()> {
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let mut buf = [0u8; 12];
    s.write_all(b"RFB 003.008\n")?;
    s.read_exact(&mut buf)?; // the client's version
    s.write_all(&[1, 1])?; // one security type: None
    s.read_exact(&mut buf[..1])?;
    s.write_all(&[0; 4])?; // SecurityResult: OK
    s.read_exact(&mut buf[..1])?; // ClientInit
    let mut init = vec![0x07, 0x80, 0x04, 0x38]; // 1920x1080, 32 bpp true colour, "bench"
    init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    init.extend_from_slice(b"\0\0\0\x05bench");
    s.write_all(&init)?;
    s.read_exact(&mut buf[..10])?; // FramebufferUpdateRequest: go
    let pat = pattern(CHUNK + PERIOD);
    let mut sent = 0u64;
    while sent < n {
        let (at, k) = (
            (sent % PERIOD as u64) as usize,
            (n - sent).min(CHUNK as u64),
        );
        s.write_all(&pat[at..at + k as usize])?;
        sent += k;
    }
    // Stay until the viewer leaves: the bench samples the relay's CPU first.
    while s.read(&mut buf)? > 0 {}
    Ok(())
}

/// The copy-loop relay: this binary run with `COPY_ENV=<server address>`.
fn copy_loop(target: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    eprintln!(
        "copy loop listening on {};",
        listener.local_addr().expect("addr")
    );
    for viewer in listener.incoming().flatten() {
        let Ok(server) = TcpStream::connect_timeout(&target.parse().expect("addr"), TIMEOUT) else {
            continue;
        };
        for s in [&viewer, &server] {
            let _ = s.set_read_timeout(Some(TIMEOUT * 10)); // the viewer is silent meanwhile
            let _ = s.set_write_timeout(Some(TIMEOUT));
        }
        let (Ok(v2), Ok(s2)) = (viewer.try_clone(), server.try_clone()) else {
            continue;
        };
        std::thread::spawn(move || pump(viewer, server));
        std::thread::spawn(move || pump(s2, v2));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; RELAY_BUF];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A viewer: RFB over plain TCP or over a WebSocket (server frames decoded in place).
struct Viewer {
    s: TcpStream,
    ws: bool,
    /// Unread raw bytes are `buf[pos..end]`.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Payload left in the current frame, whether it is data (not a ping), data frames seen.
    left: usize,
    data: bool,
    frames: u64,
}

impl Viewer {
    fn connect(addr: SocketAddr, ws_path: Option<&str>) -> io::Result<Viewer> {
        // websockify prints its address just before it binds: retry for a moment.
        let until = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match TcpStream::connect_timeout(&addr, TIMEOUT) {
                Ok(s) => break s,
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e),
            }
        };
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        let (buf, ws) = (vec![0; BUF], ws_path.is_some());
        let mut v = Viewer {
            s,
            ws,
            buf,
            pos: 0,
            end: 0,
            left: 0,
            data: true,
            frames: 0,
        };
        if let Some(path) = ws_path {
            write!(
                v.s,
                "GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Protocol: binary\r\nAuthorization: Bearer {AGENT_TOKEN}\r\n\r\n"
            )?;
            let head_end = loop {
                if let Some(i) = v.buf[..v.end].windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                v.fill()?;
            };
            let head = String::from_utf8_lossy(&v.buf[..head_end]).into_owned();
            if !head.starts_with("HTTP/1.1 101") {
                return Err(invalid(format!("WebSocket refused: {head}")));
            }
            v.pos = head_end;
        }
        Ok(v)
    }

    /// Reads more raw bytes after `end` (moving the unread ones to the front when full).
    fn fill(&mut self) -> io::Result<()> {
        if self.end == self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            (self.end, self.pos) = (self.end - self.pos, 0);
        }
        let n = self.s.read(&mut self.buf[self.end..])?;
        self.end += n;
        match n {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// The next up to `max` console bytes, in place.
    fn next(&mut self, max: usize) -> io::Result<&[u8]> {
        loop {
            if self.pos == self.end {
                (self.pos, self.end) = (0, 0);
                self.fill()?;
            }
            if !self.ws || self.left > 0 {
                let limit = if self.ws { self.left } else { usize::MAX };
                let (at, n) = (self.pos, (self.end - self.pos).min(max).min(limit));
                self.pos += n;
                self.left = self.left.saturating_sub(n);
                if self.data {
                    return Ok(&self.buf[at..at + n]);
                }
                continue; // a ping's payload
            }
            let h = &self.buf[self.pos..self.end];
            let need = match h.get(1).map(|b| b & 0x7f) {
                Some(126) => 4,
                Some(127) => 10,
                _ => 2,
            };
            if h.len() < need {
                self.fill()?;
                continue;
            }
            self.left = match need {
                4 => usize::from(u16::from_be_bytes([h[2], h[3]])),
                10 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")) as usize,
                _ => usize::from(h[1] & 0x7f),
            };
            if h[1] & 0x80 != 0 || h[0] & 0x0f == 8 {
                return Err(invalid(format!(
                    "a masked or close frame: {:?}",
                    &h[..need]
                )));
            }
            self.data = h[0] & 0x0f <= 2; // continuation, text, binary
            self.frames += u64::from(self.data);
            self.pos += need;
        }
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let more = self.next(n - out.len())?;
            out.extend_from_slice(more);
        }
        Ok(out)
    }

    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match self.ws {
            true => self
                .s
                .write_all(&encode_client_frame(Opcode::Binary, data, [7, 1, 3, 9])),
            false => self.s.write_all(data),
        }
    }

    /// RFB 3.8, security None, shared; then a full-screen FramebufferUpdateRequest.
    fn handshake(&mut self) -> io::Result<()> {
        let version = self.take(12)?;
        self.send(b"RFB 003.008\n")?;
        let n = self.take(1)?[0];
        let types = self.take(usize::from(n))?;
        self.send(&[1])?;
        let result = self.take(4)?;
        self.send(&[1])?;
        let init = self.take(24)?;
        self.take(u32::from_be_bytes(init[20..24].try_into().expect("4 bytes")) as usize)?;
        if version != b"RFB 003.008\n" || !types.contains(&1) || result != [0; 4] {
            return Err(invalid(format!(
                "handshake: {version:?} {types:?} {result:?}"
            )));
        }
        self.send(&[3, 0, 0, 0, 0, 0, 0x07, 0x80, 0x04, 0x38])
    }
}

/// CPU ticks (utime+stime) of each process in `root`'s tree, by pid.
fn tree_ticks(root: u32) -> HashMap<u32, u64> {
    let procs: Vec<(u32, u32, u64)> = (std::fs::read_dir("/proc").into_iter().flatten().flatten())
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // After the name: state, ppid (0 here), …, utime (10), stime (11).
            let f: Vec<u64> = (stat.rsplit_once(')')?.1.split_whitespace().skip(1))
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            Some((pid, *f.first()? as u32, f.get(10)? + f.get(11)?))
        })
        .collect();
    let mut tree = vec![root];
    while let Some(p) = procs
        .iter()
        .find(|p| tree.contains(&p.1) && !tree.contains(&p.0))
    {
        tree.push(p.0);
    }
    procs
        .iter()
        .filter(|p| tree.contains(&p.0))
        .map(|p| (p.0, p.2))
        .collect()
}

/// A relay under test.
struct Relay {
    name: &'static str,
    /// Each hop's process (CPU is counted per hop).
    hops: Vec<(&'static str, u32)>,
    /// Where viewers connect.
    addr: SocketAddr,
    /// The WebSocket path for one viewer (a fresh ticket each, through the gateway), if one.
    path: Option<Box<dyn Fn() -> String + Send + Sync>>,
    /// Whether the stream passes the agent (its byte counter cross-check).
    via_agent: bool,
}

#[derive(Clone)]
struct Run {
    mib_s: f64,
    /// CPU seconds per GiB of each hop.
    cpu_s_per_gib: Vec<f64>,
    frame_kib: f64,
}

/// One viewer through `relay` receiving `n` bytes (`n` is what the server sends).
fn run(relay: &Relay, server_bytes: &AtomicU64, n: u64, clk_tck: f64) -> io::Result<Run> {
    server_bytes.store(n, Ordering::SeqCst);
    let before: Vec<_> = relay.hops.iter().map(|h| tree_ticks(h.1)).collect();
    let path = relay.path.as_ref().map(|p| p());
    let mut v = Viewer::connect(relay.addr, path.as_deref())?;
    v.handshake()?;
    let pat = pattern(BUF + PERIOD);
    let (mut got, mut first) = (0u64, None);
    while got < n {
        let s = v.next((n - got).min(BUF as u64) as usize)?;
        let at = (got % PERIOD as u64) as usize;
        if s != &pat[at..at + s.len()] {
            return Err(invalid(format!("wrong bytes at offset {got}")));
        }
        got += s.len() as u64;
        first.get_or_insert((Instant::now(), got));
    }
    // The rate excludes the first read: timed from its arrival to the last byte's.
    let (start, first_len) = first.expect("n > 0");
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let cpu_s_per_gib = (relay.hops.iter().zip(&before))
        .map(|(h, before)| {
            let ticks: u64 = (tree_ticks(h.1).iter())
                .map(|(p, t)| t - before.get(p).unwrap_or(&0).min(t))
                .sum();
            ticks as f64 / clk_tck / (n as f64 / MIB / 1024.0)
        })
        .collect();
    Ok(Run {
        mib_s: (n - first_len) as f64 / MIB / secs,
        cpu_s_per_gib,
        frame_kib: n as f64 / 1024.0 / v.frames as f64, // infinite for raw TCP
    })
}

fn newest_source(dir: &Path) -> SystemTime {
    let mtime = |e: &std::fs::DirEntry| e.metadata().and_then(|m| m.modified()).ok();
    (std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter_map(|e| match e.path() {
            p if p.is_dir() && !p.ends_with("target") => Some(newest_source(&p)),
            p if p.extension().is_some_and(|x| x == "rs" || x == "toml") => mtime(&e),
            _ => None,
        })
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The processes behind the relays (stopped on drop).
struct Peers {
    copy: Running,
    websockify: Running,
    site: BenchSite,
    _sim: IpmiSim,
}

impl Peers {
    fn logs(&self) -> String {
        format!(
            "copy loop:\n{}\nagent:\n{}\ngateway:\n{}\nwebsockify:\n{}",
            self.copy.log(),
            self.site.agent.proc.log(),
            self.site.gateway.proc.log(),
            self.websockify.log()
        )
    }
}

fn start_relays(server: SocketAddr, dir: &TempDir) -> (Peers, [Relay; 4]) {
    let ready = |l: &str| {
        l.split("listening on ")
            .nth(1)?
            .split(';')
            .next()?
            .parse()
            .ok()
    };
    let mut copy = Command::new(std::env::current_exe().expect("this bench binary"));
    copy.env(COPY_ENV, server.to_string());
    let (copy, copy_addr) = start_until("copy loop", copy, TIMEOUT, ready);

    // The release binaries, checked newer than what they are built from.
    for (name, own) in [
        ("conduit-agent", "agent"),
        ("conduit-gateway", "gateway-lite"),
        ("conduit-manager", "manager-lite"),
    ] {
        let bin = bin_dir().join(name);
        let built = std::fs::metadata(&bin).and_then(|m| m.modified());
        let built = built.unwrap_or_else(|_| panic!("{} is missing; {FIX}", bin.display()));
        let newest = [own, "board", "crates"].map(|c| newest_source(&workspace_root().join(c)));
        assert!(bin_dir().ends_with("release"), "not a release build; {FIX}");
        assert!(
            newest.iter().all(|t| built >= *t),
            "{} is older than its sources; {FIX}",
            bin.display()
        );
    }
    // One server: ipmi_sim for its power, the fake VNC server for its console; the agent
    // serves it directly (its API token) and through the gateway (its uplink).
    let sim = IpmiSim::start();
    let bmc = format!(
        "[[bmc]]\nid = \"bench\"\naddress = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\n\
         password = \"password\"\nvnc_port = {}\n",
        sim.addr.port(),
        server.port()
    );
    let site = BenchSite::start(dir, |_| {}, "poll_interval_secs = 3600", &bmc, &["bench"]);
    let (gw, op) = (site.gateway.addr, site.operator.clone());
    let ticket = move || {
        let mut c = Client::for_package(gw, "conduit.gateway.v1");
        let v = c.ok(
            "GatewayService/CreateConsoleTicket",
            Some(&op),
            json!({"serverId": "bench", "console": "vnc"}),
        );
        v["path"].as_str().expect("a console path").to_owned()
    };

    let ws_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The comparison peer is not part of the test command's installs.
    assert!(
        std::path::Path::new("/usr/bin/websockify").is_file() || which("websockify"),
        "websockify is not installed: apt-get install websockify (Debian 12: 0.10)"
    );
    let mut ws = Command::new(tool("websockify"));
    ws.arg(ws_addr.to_string()).arg(server.to_string());
    let (websockify, ()) = start_until("websockify", ws, TIMEOUT, |l| {
        l.contains("Listen on").then_some(())
    });
    let pid = |c: &Running| c.child.id();
    let (agent_pid, gw_pid) = (pid(&site.agent.proc), pid(&site.gateway.proc));
    let relays = [
        Relay {
            name: "plain copy loop",
            hops: vec![("copy", pid(&copy))],
            addr: copy_addr,
            path: None,
            via_agent: false,
        },
        Relay {
            name: "conduit-agent",
            hops: vec![("agent", agent_pid)],
            addr: site.agent.addr,
            // Bearer header (websockify ignores it): the token never goes in a URL.
            path: Some(Box::new(|| "/console/vnc/bench".to_owned())),
            via_agent: true,
        },
        Relay {
            name: "websockify 0.10",
            hops: vec![("websockify", pid(&websockify))],
            addr: ws_addr,
            path: Some(Box::new(|| "/".to_owned())),
            via_agent: false,
        },
        Relay {
            name: "gateway+agent",
            hops: vec![("gateway", gw_pid), ("agent", agent_pid)],
            addr: site.gateway.addr,
            path: Some(Box::new(ticket)),
            via_agent: true,
        },
    ];
    let peers = Peers {
        copy,
        websockify,
        site,
        _sim: sim,
    };
    (peers, relays)
}

/// From a user's request (the ticket call) to the first console byte: at the agent, then
/// through the gateway, interleaved. Returns the medians in seconds.
fn first_bytes(site: &BenchSite) -> (f64, f64) {
    let open = |addr: SocketAddr, ticket: &mut dyn FnMut() -> String| {
        let t = Instant::now();
        let path = ticket();
        let mut v = Viewer::connect(addr, Some(&path)).expect("a console");
        v.take(1).expect("the first byte");
        t.elapsed().as_secs_f64()
    };
    let mut ac = site.agent_client();
    let mut gc = site.gateway_client();
    let body = json!({"serverId": "bench", "console": "vnc"});
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..PROBES {
        direct.push(open(site.agent.addr, &mut || {
            let v = ac.ok(
                "BmcService/CreateConsoleTicket",
                Some(AGENT_TOKEN),
                body.clone(),
            );
            v["path"].as_str().expect("path").to_owned()
        }));
        through.push(open(site.gateway.addr, &mut || {
            let v = gc.ok(
                "GatewayService/CreateConsoleTicket",
                Some(&site.operator),
                body.clone(),
            );
            v["path"].as_str().expect("path").to_owned()
        }));
    }
    (median(&direct), median(&through))
}

/// PowerStatus through the gateway for `n` calls, or until `until` says stop; latencies in s.
fn power_calls(site: &BenchSite, n: usize, until: &dyn Fn() -> bool) -> Vec<f64> {
    let mut gc = site.gateway_client();
    let body = json!({"serverId": "bench"});
    let mut out = Vec::new();
    while out.len() < n && !until() {
        let t = Instant::now();
        let (s, v) = gc.call("GatewayService/PowerStatus", Some(&site.operator), &body);
        assert_eq!(s, 200, "PowerStatus through the gateway: {v}");
        out.push(t.elapsed().as_secs_f64());
    }
    out
}

fn which(name: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| std::path::Path::new(d).join(name).is_file())
}

fn main() {
    if let Ok(target) = std::env::var(COPY_ENV) {
        return copy_loop(&target);
    }
    let wall = Instant::now();
    let total: u64 = (std::env::var("CONDUIT_BENCH_BYTES").ok())
        .map_or(2 << 30, |v| {
            v.parse().expect("CONDUIT_BENCH_BYTES: a byte count")
        })
        .max(1);
    let warm = total.min(128 << 20);
    let clk_tck = (Command::new("getconf").arg("CLK_TCK").output().ok())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let server_bytes = Arc::new(AtomicU64::new(0));
    let server = fake_vnc(server_bytes.clone());
    let dir = TempDir::new("bench-console");
    let (peers, relays) = start_relays(server, &dir);
    println!(
        "fake VNC server (1920x1080 32 bpp, 64 KiB writes) -> relay -> viewer, all on loopback; \
         {:.0} MiB per run, {RUNS} runs each in alternating order after a {:.0} MiB warm-up; \
         {} cores, CLK_TCK {clk_tck}\n",
        total as f64 / MIB,
        warm as f64 / MIB,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let go = |r: &Relay, n: u64| {
        run(r, &server_bytes, n, clk_tck)
            .unwrap_or_else(|e| panic!("{} run: {e}; logs:\n{}", r.name, peers.logs()))
    };
    // Bytes streamed through the agent, and through the gateway (handshake included).
    let (mut via_agent, mut via_gateway) = (0u64, 0u64);
    let mut count = |i: usize, n: u64| {
        if relays[i].via_agent {
            via_agent += n;
        }
        if i == 3 {
            via_gateway += n + HANDSHAKE_TO_VIEWER;
        }
    };
    for (i, r) in relays.iter().enumerate() {
        go(r, warm);
        count(i, warm);
    }
    let mut runs: [Vec<Run>; 4] = Default::default();
    for round in 0..RUNS {
        for i in [[0, 1, 2, 3], [3, 2, 1, 0]][round % 2] {
            runs[i].push(go(&relays[i], total));
            count(i, total);
        }
    }

    let med =
        |i: usize, f: &dyn Fn(&Run) -> f64| median(&runs[i].iter().map(f).collect::<Vec<_>>());
    let rate = |i: usize| med(i, &|r| r.mib_s);
    println!(
        "{:<16} {:>7} {:>10} {:>24} {:>10}   runs (MiB/s)",
        "relay", "MiB/s", "% of copy", "CPU s/GiB per hop", "frame KiB"
    );
    for (i, r) in relays.iter().enumerate() {
        let each: Vec<String> = runs[i].iter().map(|r| format!("{:.0}", r.mib_s)).collect();
        let frame = med(i, &|r| r.frame_kib);
        let cpu: Vec<String> = (r.hops.iter().enumerate())
            .map(|(h, (name, _))| format!("{name} {:.3}", med(i, &|r| r.cpu_s_per_gib[h])))
            .collect();
        println!(
            "{:<16} {:>7.0} {:>9.1}% {:>24} {:>10}   {}",
            r.name,
            rate(i),
            100.0 * rate(i) / rate(0),
            cpu.join(", "),
            if frame.is_finite() {
                format!("{frame:.1}")
            } else {
                "raw TCP".into()
            },
            each.join(" / ")
        );
    }
    let (of_copy, vs_ws) = (100.0 * rate(1) / rate(0), rate(1) / rate(2));
    let met = |ok: bool| if ok { "MET" } else { "NOT MET" };
    println!(
        "\nverdict: agent at {of_copy:.1}% of the plain copy (goal >= 95%) and {vs_ws:.2}x websockify \
         (goal > 1): goal {}",
        met(of_copy >= 95.0 && vs_ws > 1.0)
    );
    let through = 100.0 * rate(3) / rate(1);
    println!(
        "verdict: through the gateway at {through:.1}% of the agent-direct rate (goal >= 90%): goal {}",
        met(through >= 90.0)
    );

    // The time to the first console byte, and operations beside a stream on the same uplink.
    let site = &peers.site;
    let (direct, gated) = first_bytes(site);
    let ratio = gated / direct;
    println!(
        "\nfirst console byte after the ticket request ({PROBES} each, medians): at the agent \
         {:.2} ms, through the gateway {:.2} ms: {ratio:.2}x (goal <= 1.2x): goal {}",
        direct * 1e3,
        gated * 1e3,
        met(ratio <= 1.2)
    );
    let idle = power_calls(site, 300, &|| false);
    let done = std::sync::atomic::AtomicBool::new(false);
    let loaded = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let r = go(&relays[3], total);
            done.store(true, Ordering::SeqCst);
            r
        });
        // Let the stream get going before measuring.
        std::thread::sleep(Duration::from_millis(200));
        let calls = power_calls(site, usize::MAX, &|| done.load(Ordering::SeqCst));
        let r = stream.join().expect("the stream");
        (calls, r)
    });
    count(3, total);
    let (calls, streamed) = loaded;
    let ms = |v: &[f64], p: f64| pct(v, p) * 1e3;
    let added = ms(&calls, 0.99) - ms(&idle, 0.99);
    println!(
        "PowerStatus through the gateway, same server and uplink: idle p50 {:.2} ms p99 {:.2} ms \
         ({} calls); during a {:.0} MiB/s console stream p50 {:.2} ms p99 {:.2} ms ({} calls): \
         {added:.2} ms added at p99 (goal <= 10 ms): goal {}",
        ms(&idle, 0.5),
        ms(&idle, 0.99),
        idle.len(),
        streamed.mib_s,
        ms(&calls, 0.5),
        ms(&calls, 0.99),
        calls.len(),
        met(added <= 10.0)
    );

    // Cross-checks: the agent and the gateway counted exactly the bytes streamed through them.
    let checks = [
        (
            site.agent.addr,
            "agent_vnc_bytes_total",
            vec![("direction", "bmc_to_viewer")],
            via_agent as f64,
        ),
        (
            site.gateway.addr,
            "gateway_websocket_bytes_transmitted_total",
            vec![("type", "vnc"), ("direction", "outbound")],
            (via_gateway + PROBES as u64 * 12) as f64,
        ),
    ];
    for (addr, family, labels, expected) in checks {
        let counter = || metric(addr, family, &labels);
        let equal = wait_for(TIMEOUT / 10, Duration::from_millis(100), || {
            (counter() == expected).then_some(())
        });
        println!(
            "{family}{labels:?} = {:.0}; streamed {expected:.0}: {}",
            counter(),
            if equal.is_some() { "equal" } else { "MISMATCH" },
        );
        assert!(
            equal.is_some(),
            "{family} disagrees with the bytes streamed"
        );
    }
    println!("wall time {:.1} s", wall.elapsed().as_secs_f64());
}
