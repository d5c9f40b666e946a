//! `cargo bench -p conduit-tests --bench ipmi`: the agent's IPMI against ipmitool, same run,
//! same simulator (ipmi_sim), every operation a live round trip to the BMC. Needs `ipmi_sim`
//! and `ipmitool` (Debian `openipmi`, `ipmitool`) and the release binaries
//! (`cargo build --release --bins`). Reports; not a CI gate.
//!
//! - Get Device ID over the agent's reused session vs ipmitool's reused session (`exec` of a
//!   file of `mc info` lines);
//! - chassis power status over the agent's reused session, through the running agent's API,
//!   and as a one-shot `conduit-agent power status` process, vs one-shot
//!   `ipmitool -I lanplus -C 3 chassis power status`;
//! - a BMC of real size at a real BMC's pace (300 SDR records, 250 threshold sensors, every
//!   datagram held 10 ms each way by a relay): the first read of repository and readings, and
//!   a poll on the cached repository, vs `ipmitool -I lanplus sdr list` through the same relay.
//!   `cargo bench -p conduit-tests --bench ipmi -- sdr` runs this part alone (it needs no
//!   release binaries).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use conduit_ipmi::client::Timing;
use conduit_ipmi::commands::GetChassisStatus;
use conduit_ipmi::crypto::CipherSuite;
use conduit_ipmi::rakp::Credentials;
use conduit_ipmi::sdr::{self, Refresh, SdrCache};
use conduit_ipmi::IpmiBmc;
use conduit_tests::ipmi_sim::{self, IpmiSim};
use conduit_tests::udp_delay::UdpDelay;
use conduit_tests::{tool, workspace_root, TempDir};
use futures_lite::future::block_on;
use ipmi_rs_core::app::GetDeviceId;

fn per_op(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e3 / n as f64
}

fn ipmitool(sim: &IpmiSim) -> Command {
    let mut c = Command::new(tool("ipmitool"));
    c.args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(sim.addr.port().to_string())
        .args(["-U", "admin", "-P", "password"]);
    c
}

fn time_processes(n: usize, mut cmd: impl FnMut() -> Command) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let out = cmd().output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    per_op(start.elapsed(), n)
}

fn post(stream: &mut TcpStream, path: &str, token: &str, body: &str) -> Vec<u8> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                assert!(
                    head.starts_with("http/1.1 200"),
                    "{}",
                    String::from_utf8_lossy(&buf)
                );
                return buf;
            }
        }
    }
}

fn admin() -> Credentials {
    Credentials {
        username: b"admin".to_vec(),
        password: b"password".to_vec(),
        privilege: 4,
    }
}

/// The first read (session, repository, readings) and the cached poll of a BMC of 300 SDR
/// records at 20 ms a round trip, ours (several requests outstanding, and one at a time) and
/// ipmitool's `sdr list`.
fn sdr_at_pace() {
    const DELAY: Duration = Duration::from_millis(10);
    let sim = IpmiSim::start_with_emu(&ipmi_sim::large_emu(250, 5));
    let relay = UdpDelay::start(sim.addr, DELAY);
    println!(
        "SDR at a real BMC's pace: 300 records, 250 threshold sensors, {} ms each way",
        DELAY.as_millis()
    );
    let timing = Timing {
        reply_timeout: Duration::from_millis(500),
        retries: 2,
    };
    let mut ours = Vec::new();
    for window in [conduit_ipmi::DEFAULT_WINDOW, 1] {
        let bmc =
            IpmiBmc::new(relay.addr, CipherSuite::Suite3, admin(), timing).with_window(window);
        let (first, polls, get_sdr) = block_on(async {
            let mut cache = SdrCache::new();
            let start = Instant::now();
            let r = cache
                .refresh(&bmc, Duration::from_secs(120))
                .await
                .expect("sdr");
            assert_eq!(r, Refresh::Read);
            let readings = sdr::read_sensors(&bmc, cache.sensors())
                .await
                .expect("readings");
            assert_eq!(readings.len(), 250);
            let first = start.elapsed();
            let mut polls = Vec::new();
            for _ in 0..5 {
                let start = Instant::now();
                let r = cache
                    .refresh(&bmc, Duration::from_secs(120))
                    .await
                    .expect("sdr");
                assert_eq!(r, Refresh::Cached);
                sdr::read_sensors(&bmc, cache.sensors())
                    .await
                    .expect("readings");
                polls.push(start.elapsed());
            }
            bmc.close().await;
            (first, polls, cache.get_sdr_requests())
        });
        let poll = polls.iter().sum::<Duration>() / polls.len() as u32;
        println!(
            "  agent, window {window}: first read {:6.2} s ({get_sdr} Get SDR)   cached poll {:6.3} s",
            first.as_secs_f64(),
            poll.as_secs_f64()
        );
        ours.push((first, poll));
    }
    let mut theirs = Vec::new();
    for _ in 0..2 {
        let start = Instant::now();
        let out = Command::new(tool("ipmitool"))
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
            .arg(relay.addr.port().to_string())
            .args(["-U", "admin", "-P", "password", "sdr", "list"])
            .output()
            .expect("ipmitool");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!(lines >= 250, "ipmitool listed {lines} sensors");
        theirs.push(start.elapsed());
    }
    let ipmitool = theirs.iter().sum::<Duration>() / theirs.len() as u32;
    let (first, poll) = ours[0];
    println!(
        "  ipmitool sdr list:  {:6.2} s every time
           first read {:.2} of ipmitool's time (goal <= 0.33), cached poll {:.3} s (goal <= 1 s)
",
        ipmitool.as_secs_f64(),
        first.as_secs_f64() / ipmitool.as_secs_f64(),
        poll.as_secs_f64()
    );
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "sdr") {
        sdr_at_pace();
        return;
    }
    sdr_at_pace();
    let sim = IpmiSim::start();
    let bmc = IpmiBmc::new(
        sim.addr,
        CipherSuite::Suite3,
        Credentials {
            username: b"admin".to_vec(),
            password: b"password".to_vec(),
            privilege: 4,
        },
        Timing::default(),
    );
    const N: usize = 200;
    println!(
        "ipmi_sim on {}; every operation a live round trip\n",
        sim.addr
    );

    // Get Device ID over reused sessions.
    let ours = block_on(async {
        bmc.execute("get device id", GetDeviceId)
            .await
            .expect("warm up");
        let start = Instant::now();
        for _ in 0..N {
            bmc.execute("get device id", GetDeviceId)
                .await
                .expect("device id");
        }
        per_op(start.elapsed(), N)
    });
    let dir = TempDir::new("bench");
    let script = dir.0.join("mc-info.txt");
    std::fs::write(&script, "mc info\n".repeat(N)).unwrap();
    let start = Instant::now();
    let out = ipmitool(&sim).arg("exec").arg(&script).output().unwrap();
    assert!(out.status.success());
    let theirs = per_op(start.elapsed(), N);
    println!("Get Device ID, reused session:     agent {ours:6.3} ms/op   ipmitool exec {theirs:6.3} ms/op   ratio {:.2}", ours / theirs);

    // Power status over the reused session (ipmi_sim forks its chassis script per query).
    let status = block_on(async {
        let start = Instant::now();
        for _ in 0..50 {
            bmc.execute("chassis status", GetChassisStatus)
                .await
                .expect("status");
        }
        per_op(start.elapsed(), 50)
    });
    block_on(bmc.close());
    let oneshot_ipmitool = time_processes(20, || {
        let mut c = ipmitool(&sim);
        c.args(["chassis", "power", "status"]);
        c
    });
    println!("power status, agent reused session: {status:6.3} ms/op   one-shot ipmitool {oneshot_ipmitool:6.3} ms/op   {:.1}x faster", oneshot_ipmitool / status);

    // Through the running agent (release build), and as a one-shot CLI process.
    let release = workspace_root().join("target/release/conduit-agent");
    assert!(
        release.exists(),
        "build the release binaries first: cargo build --release --bins"
    );
    let token = "bench-token-0123456789";
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\napi_token = \"{token}\"\npoll_interval_secs = 3600\n[[bmc]]\nid = \"sim\"\naddress = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword = \"password\"\n",
            sim.addr.port()
        ),
    )
    .unwrap();
    let cli = time_processes(20, || {
        let mut c = Command::new(&release);
        c.args(["--config", cfg.to_str().unwrap(), "power", "status", "sim"]);
        c
    });
    println!("one-shot process power status:      conduit-agent {cli:6.3} ms   ipmitool {oneshot_ipmitool:6.3} ms");

    let port = conduit_tests::free_port();
    let mut agent = Command::new(&release)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("agent API");
    s.set_nodelay(true).unwrap();
    let path = "/conduit.agent.v1.BmcService/PowerStatus";
    post(&mut s, path, token, r#"{"serverId":"sim"}"#);
    let start = Instant::now();
    for _ in 0..50 {
        post(&mut s, path, token, r#"{"serverId":"sim"}"#);
    }
    let api = per_op(start.elapsed(), 50);
    let _ = agent.kill();
    let _ = agent.wait();
    println!("power status via the agent's API:   {api:6.3} ms/op   one-shot ipmitool {oneshot_ipmitool:6.3} ms/op   {:.1}x faster", oneshot_ipmitool / api);

    // Discovery of a /24 with three live simulators; the other addresses have nothing (the
    // kernel answers port unreachable) or, for 50 of them, swallow the pings.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sims: Vec<IpmiSim> = (1..=3)
        .map(|h| IpmiSim::start_at(std::net::SocketAddr::from(([127, 0, 4, h], port))))
        .collect();
    let _silent: Vec<std::net::UdpSocket> = (100..150)
        .map(|h| {
            std::net::UdpSocket::bind(std::net::SocketAddr::from(([127, 0, 4, h], port))).unwrap()
        })
        .collect();
    let cfg = conduit_agent::config::DiscoveryConfig {
        ranges: vec![conduit_agent::config::Cidr::parse("127.0.4.0/24").unwrap()],
        ipmi_ports: vec![port],
        redfish_ports: vec![conduit_tests::free_port()],
        interval: Duration::from_secs(300),
        probe_timeout: Duration::from_secs(1),
        concurrency: 64,
        max_bmcs: 1024,
    };
    let report = block_on(conduit_agent::discovery::scan(&cfg));
    println!(
        "discovery of a /24 (3 live, 50 silent, 203 empty): {} found in {:.2} s (probe timeout 1 s)",
        report.found.len(),
        report.duration.as_secs_f64()
    );
    drop(sims);
}
