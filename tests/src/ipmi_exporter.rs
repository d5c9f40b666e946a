//! Debian's `prometheus-ipmi-exporter` (prometheus/ipmi_exporter 1.6, FreeIPMI underneath) as
//! a test peer: one instance per test on its own loopback port, with a module `sim` for
//! ipmi_sim's admin user. FreeIPMI caches SDRs under the user's home from passwd (not
//! `$HOME`), keyed by host:port; the exporter passes `--sdr-cache-recreate`, and each test's
//! simulator has a port of its own.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::{start_until, tool, Running, TempDir};

/// A running exporter.
#[derive(Debug)]
pub struct IpmiExporter {
    /// The process (stopped on drop).
    pub proc: Running,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its config.
    pub dir: TempDir,
}

/// The module every test scrapes with: ipmi_sim's credentials, every collector.
pub const MODULE: &str = "sim";

impl IpmiExporter {
    /// Starts the exporter on a free loopback port.
    pub fn start() -> IpmiExporter {
        let dir = TempDir::new("ipmi-exporter");
        let config = dir.0.join("ipmi_exporter.yml");
        std::fs::write(
            &config,
            "modules:\n  sim:\n    user: admin\n    pass: password\n    driver: LAN_2_0\n    \
             privilege: admin\n    workaround_flags: [opensesspriv]\n    \
             collectors: [bmc, ipmi, chassis, sel, dcmi]\n",
        )
        .expect("exporter config");
        let port = crate::free_port();
        let mut cmd = Command::new(tool("prometheus-ipmi-exporter"));
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let (proc, addr) = start_until(
            "prometheus-ipmi-exporter",
            cmd,
            Duration::from_secs(10),
            move |line| {
                line.contains("Listening on")
                    .then(|| SocketAddr::from(([127, 0, 0, 1], port)))
            },
        );
        IpmiExporter { proc, addr, dir }
    }

    /// The path of a scrape of `target` (`host:port`).
    pub fn path(target: SocketAddr) -> String {
        format!("/ipmi?module={MODULE}&target={target}")
    }
}
