//! Discovery over loopback ranges: two ipmi_sim BMCs and a sushy-emulator on distinct
//! addresses, an address whose port swallows packets, addresses with nothing listening (ICMP
//! unreachable), and listeners just outside the range that must hear nothing. Then a /24 with
//! one live BMC and many silent ones, in bounded time; then the agent binary's metrics and CLI.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use conduit_agent::config::{Cidr, DiscoveryConfig};
use conduit_agent::discovery::scan;
use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::sushy::Sushy;
use conduit_tests::{agent_cli_ok, get, start_component, wait_for, TempDir};
use futures_lite::future::block_on;

/// The standard IPMI port when we may bind it (root, as CI runs), else a free high port.
fn ipmi_port() -> u16 {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        623
    } else {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

fn ip(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, net, host)
}

fn config(range: &str, ipmi: u16, redfish: u16) -> DiscoveryConfig {
    DiscoveryConfig {
        ranges: vec![Cidr::parse(range).unwrap()],
        ipmi_ports: vec![ipmi],
        redfish_ports: vec![redfish],
        interval: Duration::from_secs(300),
        probe_timeout: Duration::from_secs(1),
        concurrency: 64,
        max_bmcs: 1024,
    }
}

#[test]
fn finds_exactly_the_live_bmcs_and_touches_nothing_outside() {
    let p = ipmi_port();
    let r = conduit_tests::free_port();
    let _bmc2 = IpmiSim::start_at(SocketAddr::from((ip(77, 2), p)));
    let _bmc3 = IpmiSim::start_at(SocketAddr::from((ip(77, 3), p)));
    let _rf4 = Sushy::start_at(SocketAddr::from((ip(77, 4), r)));
    // .5 swallows pings; .6 and .7 have nothing (the kernel answers port unreachable).
    let _silent = UdpSocket::bind((ip(77, 5), p)).unwrap();
    // Just outside the /29: must receive nothing.
    let outside_udp = UdpSocket::bind((ip(77, 8), p)).unwrap();
    outside_udp.set_nonblocking(true).unwrap();
    let outside_tcp = TcpListener::bind((ip(77, 8), r)).unwrap();
    outside_tcp.set_nonblocking(true).unwrap();

    let report = block_on(scan(&config("127.0.77.0/29", p, r)));
    let found: Vec<(Ipv4Addr, &str)> = report.found.iter().map(|f| (f.ip, f.bmc_type())).collect();
    assert_eq!(
        found,
        [
            (ip(77, 2), "ipmi"),
            (ip(77, 3), "ipmi"),
            (ip(77, 4), "redfish")
        ],
        "{report:?}"
    );
    assert!(
        report.duration < Duration::from_secs(5),
        "{:?}",
        report.duration
    );
    assert!(report.found.iter().all(|f| !f.vendor.is_empty()));

    let mut buf = [0u8; 64];
    assert!(
        outside_udp.recv_from(&mut buf).is_err(),
        "a ping reached 127.0.77.8"
    );
    assert!(
        outside_tcp.accept().is_err(),
        "a probe connected to 127.0.77.8"
    );
}

#[test]
fn findings_beyond_the_table_capacity_are_dropped_and_counted() {
    let p = ipmi_port();
    let _a = IpmiSim::start_at(SocketAddr::from((ip(80, 1), p)));
    let _b = IpmiSim::start_at(SocketAddr::from((ip(80, 2), p)));
    let mut cfg = config("127.0.80.0/30", p, conduit_tests::free_port());
    cfg.max_bmcs = 1;
    let report = block_on(scan(&cfg));
    assert_eq!(report.found.len(), 1);
    assert_eq!(report.errors, ["table_full"]);
}

#[test]
fn a_mostly_silent_24_finishes_in_seconds() {
    let p = ipmi_port();
    let r = conduit_tests::free_port();
    let _live = IpmiSim::start_at(SocketAddr::from((ip(78, 10), p)));
    let _silent: Vec<UdpSocket> = (20..60)
        .map(|h| UdpSocket::bind((ip(78, h), p)).unwrap())
        .collect();
    let report = block_on(scan(&config("127.0.78.0/24", p, r)));
    let found: Vec<Ipv4Addr> = report.found.iter().map(|f| f.ip).collect();
    assert_eq!(found, [ip(78, 10)]);
    assert!(
        report.duration < Duration::from_secs(5),
        "a /24 took {:?}",
        report.duration
    );
}

#[test]
fn the_agent_counts_discovered_servers() {
    let p = ipmi_port();
    let r = conduit_tests::free_port();
    let _bmc = IpmiSim::start_at(SocketAddr::from((ip(79, 2), p)));
    let dir = TempDir::new("discovery");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[discovery]\nranges = [\"127.0.79.0/30\"]\nipmi_ports = [{p}]\nredfish_ports = [{r}]\nprobe_timeout_secs = 0.5\n\n[[bmc]]\nid = \"configured\"\naddress = \"127.0.79.200\"\nport = {p}\nusername = \"admin\"\npassword = \"password\"\n"
        ),
    )
    .unwrap();
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let text = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        let t = get(agent.addr, "/metrics", &[]).text();
        t.contains("agent_discovery_cycles_total{status=\"success\"} 1")
            .then_some(t)
    })
    .unwrap_or_else(|| panic!("no discovery cycle:\n{}", agent.proc.log()));
    // The configured BMC (outside the range) and the one found in it.
    assert!(
        text.contains("agent_servers_discovered{bmc_type=\"ipmi\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("agent_servers_discovered{bmc_type=\"redfish\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("agent_discovery_duration_seconds_count 1"),
        "{text}"
    );

    let stdout = agent_cli_ok(&cfg, &["discover"]);
    assert!(
        stdout.starts_with(&format!("127.0.79.2\tipmi\tipmi:{p}\tredfish:-\t")),
        "{stdout}"
    );
}
