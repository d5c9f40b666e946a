//! ipmi_sim (OpenIPMI's BMC simulator) as a test peer: one instance per test, on its own
//! loopback port, with its own state directory, power state file and telnet console.
//! The MC and sensors come from `tests/peers/ipmi/bmc.emu` (or a generated command file:
//! [`large_emu`]); power and boot device are handled by `tests/peers/ipmi/chassis.sh` writing
//! state files.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{spawn, tool, workspace_root, Running, TempDir};

/// A running ipmi_sim.
#[derive(Debug)]
pub struct IpmiSim {
    /// The process (stopped on drop).
    pub proc: Option<Running>,
    /// RMCP+ address.
    pub addr: SocketAddr,
    /// Its working directory (config, state, power file).
    pub dir: TempDir,
    /// Its telnet command console (ipmi_sim_cmd(5) commands).
    pub console: SocketAddr,
    /// The host side of its serial port: ipmi_sim dials this TCP address (and retries about
    /// every 10 s while nothing listens).
    pub sol_host: SocketAddr,
    /// Its command file (`-f`): the MC, its sensors and SDRs.
    pub emu: PathBuf,
}

/// Credentials configured in the simulator.
pub const ADMIN: (&str, &str) = ("admin", "password");

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("ephemeral UDP port")
}

impl IpmiSim {
    /// Starts a simulator on a free loopback UDP port, powered off.
    pub fn start() -> IpmiSim {
        IpmiSim::start_at(SocketAddr::from(([127, 0, 0, 1], free_udp_port())))
    }

    /// Starts a simulator on `addr` (any loopback address; port 623 needs root).
    pub fn start_at(addr: SocketAddr) -> IpmiSim {
        IpmiSim::start_full(addr, SocketAddr::from(([127, 0, 0, 1], crate::free_port())))
    }

    /// Starts a simulator whose serial port's host side is `sol_host` (bind a listener there
    /// first: ipmi_sim connects at start).
    pub fn start_with_sol_host(sol_host: SocketAddr) -> IpmiSim {
        IpmiSim::start_full(
            SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
            sol_host,
        )
    }

    /// Starts a simulator on a free loopback UDP port whose MC is made by the command file
    /// text `emu` (see [`large_emu`]).
    pub fn start_with_emu(emu: &str) -> IpmiSim {
        IpmiSim::start_from(
            SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
            SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
            Some(emu),
        )
    }

    /// [`IpmiSim::start_with_emu`] whose serial port's host side is `sol_host` (as
    /// [`IpmiSim::start_with_sol_host`]).
    pub fn start_with_emu_and_sol_host(emu: &str, sol_host: SocketAddr) -> IpmiSim {
        IpmiSim::start_from(
            SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
            sol_host,
            Some(emu),
        )
    }

    /// [`IpmiSim::start_with_emu`] on `addr` (a test that points an agent at it first).
    pub fn start_with_emu_at(addr: SocketAddr, emu: &str) -> IpmiSim {
        IpmiSim::start_from(
            addr,
            SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
            Some(emu),
        )
    }

    /// A free loopback UDP address to start a simulator on later.
    pub fn free_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], free_udp_port()))
    }

    fn start_full(addr: SocketAddr, sol_host: SocketAddr) -> IpmiSim {
        IpmiSim::start_from(addr, sol_host, None)
    }

    fn start_from(addr: SocketAddr, sol_host: SocketAddr, emu: Option<&str>) -> IpmiSim {
        let dir = TempDir::new("ipmi-sim");
        let emu = match emu {
            Some(text) => {
                let path = dir.0.join("bmc.emu");
                std::fs::write(&path, text).expect("command file");
                path
            }
            None => workspace_root().join("tests/peers/ipmi/bmc.emu"),
        };
        let mut sim = IpmiSim {
            sol_host,
            proc: None,
            addr,
            dir,
            console: SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
            emu,
        };
        std::fs::write(sim.dir.0.join("power"), "0\n").expect("power file");
        sim.spawn();
        sim
    }

    fn config(&self) -> String {
        let peers = workspace_root().join("tests/peers/ipmi");
        let console = self.console.port();
        let sol = self.sol_host.port();
        format!(
            r#"name "sim{port}"
set_working_mc 0x20
  startlan 1
    addr {ip} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  sol "tcp:127.0.0.1:{sol}" 115200
  chassis_control "{chassis} {dir} 0x20"
  console 127.0.0.1 {console}
user 1  true    ""       ""         user     10        none md2 md5 straight
user 2  true    "admin"  "password" admin    10        none md2 md5 straight
user 3  true    "operator" "operpass" operator 10      none md2 md5 straight
"#,
            port = self.addr.port(),
            ip = self.addr.ip(),
            chassis = peers.join("chassis.sh").display(),
            dir = self.dir.0.display(),
        )
    }

    fn spawn(&mut self) {
        let conf = self.dir.0.join("lan.conf");
        std::fs::write(&conf, self.config()).expect("lan.conf");
        let state = self.dir.0.join("state");
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).expect("state dir");
        let mut cmd = Command::new(tool("ipmi_sim"));
        cmd.arg("-c")
            .arg(&conf)
            .arg("-f")
            .arg(&self.emu)
            .arg("-s")
            .arg(&state)
            .arg("-n"); // no stdin console: required with stdin at /dev/null
                        // ipmi_sim logs nothing when ready: the port is polled instead.
        self.proc = Some(spawn("ipmi_sim", cmd));
        self.wait_ready();
    }

    fn wait_ready(&self) {
        // An ASF Presence Ping gets a Pong once the LAN interface is up.
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let ping = [
            0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x01, 0x00, 0x00,
        ];
        for _ in 0..100 {
            let _ = s.send_to(&ping, self.addr);
            let mut buf = [0u8; 64];
            if s.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!(
            "ipmi_sim on {} did not answer a presence ping within 10 s",
            self.addr
        );
    }

    /// Stops the simulator (its sessions die with it).
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts it again on the same port, with fresh state (power file kept).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs one ipmi_sim_cmd(5) command on the console, e.g.
    /// `sensor_set_value 0x20 0 1 0x55 1` (CPU Temp reads 85 °C).
    pub fn console(&self, command: &str) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.console).expect("ipmi_sim console");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf); // banner and prompt
        s.write_all(format!("{command}\r\n").as_bytes())
            .expect("console write");
        // Read the echo and the next prompt until the console goes quiet: ipmi_sim dies of
        // SIGPIPE if it writes to a console we already closed.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    /// The power state the chassis script holds.
    pub fn power(&self) -> bool {
        std::fs::read_to_string(self.dir.0.join("power"))
            .map(|s| s.trim() == "1")
            .unwrap_or(false)
    }

    /// The device selector the chassis script holds for the next boot (`pxe`, `default`,
    /// `cdrom`, `bios`, `none`; `default` before any was set).
    pub fn boot_device(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("boot"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "default".to_owned())
    }

    /// Path of the simulator's working directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.0.clone()
    }
}

/// The `main_sdr_add` bytes of a full sensor record (type 0x01) for temperature sensor
/// `number` named `name`: threshold based, 1 °C per count, thresholds at 70/80/90 °C. The
/// record ID bytes are 0: ipmi_sim numbers its records itself.
pub fn temperature_sdr(number: u8, name: &str) -> Vec<u8> {
    assert!(name.len() <= 16, "an SDR name holds 16 characters");
    let mut r = vec![
        0x00, 0x00, 0x51, 0x01, 0x00, // header, length set below
        0x20, 0x00, number, 0x03, 0x01, 0x67, 0x68, 0x01,
        0x01, // owner, LUN, number, entity, …
        0x00, 0x00, 0x00, 0x00, 0x38, 0x38, // masks
        0x00, 0x01, 0x00, 0x00, // units: celsius
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, // linear, M = 1, B = 0
        0x00, 0x00, 0x00, 0x00, 0xff, 0x00, // nominal, max, min
        0x5a, 0x50, 0x46, 0x00, 0x00, 0x00, 0x02, 0x02, // thresholds, hystereses
        0x00, 0x00, 0x00, // reserved, OEM
    ];
    r.push(0xC0 | name.len() as u8);
    r.extend_from_slice(name.as_bytes());
    r[4] = (r.len() - 5) as u8;
    r
}

/// An OEM SDR (type 0xC0) of `len` bytes after the header: the kind of record real BMCs carry
/// between their sensors, which a sensor reader has to step over.
pub fn oem_sdr(len: u8) -> Vec<u8> {
    let mut r = vec![0x00, 0x00, 0x51, 0xC0, len];
    r.extend((0..len).map(|i| i.wrapping_mul(7)));
    r
}

/// One `main_sdr_add` command line for the record bytes `sdr`.
pub fn main_sdr_add(sdr: &[u8]) -> String {
    let bytes: Vec<String> = sdr.iter().map(|b| format!("{b:#04x}")).collect();
    format!("main_sdr_add 0x20 {}", bytes.join(" "))
}

/// An ipmi_sim command file for a BMC of real size: `sensors` temperature sensors (numbers
/// 1..=sensors, named `Temp N`, sensor N reading 20 + N % 50 °C), with an OEM record of 24
/// bytes after every `oem_every`-th one (0: none). The MC is the one of
/// tests/peers/ipmi/bmc.emu, SEL included.
pub fn large_emu(sensors: u8, oem_every: u8) -> String {
    let mut e = String::from(
        "# generated by tests/src/ipmi_sim.rs large_emu\n\
         mc_setbmc 0x20\n\
         mc_add 0x20 0x00 no-device-sdrs 0x23 0x09 0x08 0x9f 0x001291 0x0f02\n\
         sel_enable 0x20 1000 0x0a\n",
    );
    for n in 1..=sensors {
        e.push_str(&format!("sensor_add 0x20 0x00 {n:#04x} 0x01 0x01\n"));
        e.push_str(&format!(
            "sensor_set_event_support 0x20 0x00 {n:#04x} enable scanning per-state \
             000000000000000 000000000000000 000000000000000 000000000000000\n"
        ));
        e.push_str(&format!(
            "sensor_set_threshold 0x20 0x00 {n:#04x} settable 111000 0x5a 0x50 0x46 0x00 0x00 0x00\n"
        ));
        e.push_str(&format!(
            "sensor_set_value 0x20 0x00 {n:#04x} {:#04x} 0\n",
            20 + n % 50
        ));
        e.push_str(&main_sdr_add(&temperature_sdr(n, &format!("Temp {n}"))));
        e.push('\n');
        if oem_every != 0 && n % oem_every == 0 {
            e.push_str(&main_sdr_add(&oem_sdr(24)));
            e.push('\n');
        }
    }
    e.push_str("mc_enable 0x20\n");
    e
}
