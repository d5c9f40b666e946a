//! The agent's own RMCP+ layer against a real BMC implementation (OpenIPMI's ipmi_sim), cipher
//! suite 3: Device ID, chassis power round trips, session reuse across an ipmi_sim restart,
//! wrong credentials, an unreachable BMC, the event log, the boot device override. Under cross/test this is the ARM agent code (qemu)
//! talking to the x86 simulator.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_ipmi::client::{IpmiError, Timing};
use conduit_ipmi::commands::{ChassisControl, GetChassisStatus};
use conduit_ipmi::crypto::CipherSuite;
use conduit_ipmi::rakp::Credentials;
use conduit_ipmi::IpmiBmc;
use conduit_tests::ipmi_sim::{IpmiSim, ADMIN};
use futures_lite::future::block_on;
use ipmi_rs_core::app::GetDeviceId;

fn creds(user: &str, password: &str) -> Credentials {
    Credentials {
        username: user.as_bytes().to_vec(),
        password: password.as_bytes().to_vec(),
        privilege: 4,
    }
}

fn fast() -> Timing {
    Timing {
        reply_timeout: Duration::from_millis(300),
        retries: 2,
    }
}

fn bmc(addr: SocketAddr, user: &str, password: &str) -> IpmiBmc {
    IpmiBmc::new(addr, CipherSuite::Suite3, creds(user, password), fast())
}

#[test]
fn device_id_and_power_round_trip() {
    let sim = IpmiSim::start();
    let b = bmc(sim.addr, ADMIN.0, ADMIN.1);
    block_on(async {
        let id = b
            .execute("get device id", GetDeviceId)
            .await
            .expect("device id");
        // bmc.emu: MontaVista (0x1291 = 4753), product 0x0f02, firmware 9.08.
        assert_eq!(id.manufacturer_id, 0x001291);
        assert_eq!(id.product_id, 0x0f02);
        assert_eq!((id.major_fw_revision, id.minor_fw_revision), (9, 8));

        let st = b
            .execute("chassis status", GetChassisStatus)
            .await
            .expect("status");
        assert!(!st.power_on);
        b.execute_once("power on", ChassisControl::PowerUp)
            .await
            .expect("power on");
        assert!(sim.power(), "chassis script saw power on");
        let st = b
            .execute("chassis status", GetChassisStatus)
            .await
            .expect("status");
        assert!(st.power_on);
        b.execute_once("power off", ChassisControl::PowerDown)
            .await
            .expect("power off");
        assert!(!sim.power());
        assert!(
            !b.execute("chassis status", GetChassisStatus)
                .await
                .unwrap()
                .power_on
        );
        b.close().await;
    });
}

#[test]
fn sdr_repository_and_sensor_readings() {
    use conduit_ipmi::sdr;
    let sim = IpmiSim::start();
    let b = bmc(sim.addr, ADMIN.0, ADMIN.1);
    block_on(async {
        // ipmi_sim refuses whole-record reads (0xCA): this only works chunked.
        let records = sdr::read_repository(&b).await.expect("sdr");
        let sensors = sdr::sensor_records(&records);
        let names: Vec<(&str, &str)> = sensors.iter().map(|s| (s.name.as_str(), s.unit)).collect();
        assert_eq!(names, [("CPU Temp", "celsius"), ("FAN 1", "rpm")]);
        let cpu = sdr::read_sensor(&b, &sensors[0]).await.unwrap();
        assert_eq!((cpu.value, cpu.state), (Some(40.0), "ok"));
        let fan = sdr::read_sensor(&b, &sensors[1]).await.unwrap();
        assert_eq!(fan.value, Some(3000.0));
        // The simulated host heats up past its critical threshold (80).
        sim.console("sensor_set_value 0x20 0 1 0x55 1");
        let cpu = sdr::read_sensor(&b, &sensors[0])
            .await
            .unwrap_or_else(|e| panic!("{e}; ipmi_sim log:\n{}", sim.proc.as_ref().unwrap().log()));
        assert_eq!((cpu.value, cpu.state), (Some(85.0), "critical"));
        b.close().await;
    });
}

#[test]
fn session_survives_a_bmc_restart() {
    let mut sim = IpmiSim::start();
    let b = bmc(sim.addr, ADMIN.0, ADMIN.1);
    block_on(async {
        b.execute("get device id", GetDeviceId)
            .await
            .expect("first");
        sim.restart();
        // A state-changing command is not re-sent on a new session: its first copy may have
        // acted. It fails, and the dead session is gone.
        let err = b
            .execute_once("power on", ChassisControl::PowerUp)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "timeout", "{err}");
        assert!(!sim.power(), "power on was not sent to the restarted BMC");
        let start = Instant::now();
        b.execute("get device id", GetDeviceId)
            .await
            .expect("after restart: session re-opened");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        b.close().await;
    });
}

#[test]
fn wrong_password_is_an_auth_error() {
    let sim = IpmiSim::start();
    let b = bmc(sim.addr, ADMIN.0, "not-the-password");
    let err = block_on(b.execute("get device id", GetDeviceId)).unwrap_err();
    assert_eq!(err.kind(), "auth_failed", "{err}");
    let b = bmc(sim.addr, "nobody", "x");
    let err = block_on(b.execute("get device id", GetDeviceId)).unwrap_err();
    assert!(matches!(err, IpmiError::Handshake(_)), "{err}");
}

#[test]
fn a_cipher_suite_the_bmc_lacks_is_reported_as_such() {
    // ipmi_sim offers suites 0-3 and 6 only; 17 is refused at Open Session.
    let sim = IpmiSim::start();
    let b = IpmiBmc::new(
        sim.addr,
        CipherSuite::Suite17,
        creds(ADMIN.0, ADMIN.1),
        fast(),
    );
    let err = block_on(b.execute("get device id", GetDeviceId)).unwrap_err();
    assert_eq!(err.kind(), "cipher_unsupported", "{err}");
}

#[test]
fn unreachable_and_silent_bmcs_fail_fast_with_distinct_errors() {
    // Nothing listens: loopback answers with ICMP port unreachable.
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let start = Instant::now();
    let err = block_on(bmc(closed, "a", "b").execute("get device id", GetDeviceId)).unwrap_err();
    assert_eq!(err.kind(), "unreachable", "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));

    // A socket that swallows everything: a timeout after the bounded retransmits.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let err =
        block_on(bmc(silent.local_addr().unwrap(), "a", "b").execute("get device id", GetDeviceId))
            .unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn serial_over_lan_both_ways() {
    use conduit_ipmi::client::Connection;
    use conduit_ipmi::sol::SolConsole;
    use std::io::{Read, Write};

    // The host side of the serial port: ipmi_sim connects to it at start.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = IpmiSim::start_with_sol_host(host.local_addr().unwrap());
    host.set_nonblocking(false).unwrap();
    let (mut serial, _) = host.accept().expect("ipmi_sim dials the host side");
    serial
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    block_on(async {
        let conn = Connection::open(
            sim.addr,
            CipherSuite::Suite3,
            creds(ADMIN.0, ADMIN.1),
            fast(),
        )
        .await
        .expect("session");
        let mut sol = SolConsole::activate(conn, 1, Duration::from_millis(500))
            .await
            .expect("activate");
        assert!(sol.activation().inbound_size > 4, "{:?}", sol.activation());

        // Host output reaches the console.
        serial.write_all(b"hello-from-host\r\n").unwrap();
        let mut got = Vec::new();
        let until = Instant::now() + Duration::from_secs(5);
        while !got.ends_with(b"\r\n") && Instant::now() < until {
            got.extend(sol.read(Duration::from_millis(500)).await.expect("read"));
        }
        assert_eq!(got, b"hello-from-host\r\n");

        // Keystrokes reach the host.
        sol.write(b"typed-on-console\r").await.expect("write");
        let mut buf = [0u8; 64];
        let mut typed = Vec::new();
        while !typed.ends_with(b"\r") {
            let n = serial.read(&mut buf).expect("host reads");
            assert!(n > 0, "host side closed");
            typed.extend_from_slice(&buf[..n]);
        }
        assert_eq!(typed, b"typed-on-console\r");
        sol.deactivate().await;
    });
}

#[test]
fn system_event_log_add_read_clear() {
    use conduit_ipmi::commands::Timestamp;
    use conduit_ipmi::sel::{self, SelEntry, Severity};
    let sim = IpmiSim::start();
    let b = bmc(sim.addr, ADMIN.0, ADMIN.1);
    block_on(async {
        let info = sel::sel_info(&b).await.expect("sel info");
        assert_eq!(info.entries, 0);
        assert!(sel::read_sel(&b).await.unwrap().is_empty());

        // ipmi_sim stamps system and timestamped OEM records itself (bytes 1-4 are ignored).
        // Temperature sensor 1: upper critical going high, asserted.
        sim.console("sel_add 0x20 0x02 0 0 0 0 0x20 0x00 0x04 0x01 0x01 0x01 0x09 0xff 0xff");
        // Memory sensor 5: correctable ECC (sensor-specific offset 0).
        sim.console("sel_add 0x20 0x02 0 0 0 0 0x20 0x00 0x04 0x0c 0x05 0x6f 0x00 0xff 0xff");
        // An OEM record without timestamp, kept raw.
        sim.console("sel_add 0x20 0xe0 1 2 3 4 5 6 7 8 9 10 11 12 13");

        let info = sel::sel_info(&b).await.unwrap();
        assert_eq!(info.entries, 3);
        assert_ne!(info.last_addition, Timestamp::UNSPECIFIED);
        let entries = sel::read_sel(&b).await.expect("read sel");
        assert_eq!(entries.len(), 3, "{entries:?}");
        let SelEntry::System(hot) = entries[0] else {
            panic!("{:?}", entries[0])
        };
        assert_eq!(
            (
                hot.sensor_type,
                hot.sensor_number,
                hot.event_type,
                hot.deassertion
            ),
            (0x01, 0x01, 0x01, false)
        );
        assert_eq!((hot.offset(), hot.generator), (0x09, 0x0020));
        assert!(hot.timestamp <= info.last_addition, "{hot:?}");
        assert_eq!(entries[0].severity(), Severity::Critical);
        assert_eq!(entries[1].severity(), Severity::Warning);
        let SelEntry::Oem(oem) = entries[2] else {
            panic!("{:?}", entries[2])
        };
        assert_eq!((oem.record_type, oem.timestamp), (0xE0, None));
        assert_eq!(oem.raw, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);

        sel::clear_sel(&b).await.expect("clear sel");
        let cleared = sel::sel_info(&b).await.unwrap();
        assert_eq!(cleared.entries, 0);
        assert_ne!(cleared.last_erase, info.last_erase);
        assert!(sel::read_sel(&b).await.unwrap().is_empty());
        b.close().await;
    });
}

#[test]
fn boot_device_override_round_trip() {
    use conduit_ipmi::boot::{self, BootDevice, BootOverride, Persistence};
    let sim = IpmiSim::start();
    let b = bmc(sim.addr, ADMIN.0, ADMIN.1);
    // ipmitool, where installed (the test command installs ipmi_sim, not ipmitool), reads the
    // flags back too: an independent parser of what the BMC stored.
    let ipmitool = [
        "/usr/bin/ipmitool",
        "/usr/sbin/ipmitool",
        "/usr/local/bin/ipmitool",
    ]
    .into_iter()
    .map(std::path::Path::new)
    .find(|p| p.is_file());
    if ipmitool.is_none() {
        eprintln!("ipmitool is not installed: boot flags checked by our own read-back only");
    }
    let ipmitool_says = |tool: &std::path::Path| {
        let out = std::process::Command::new(tool)
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
            .arg(sim.addr.port().to_string())
            .args([
                "-U",
                ADMIN.0,
                "-P",
                ADMIN.1,
                "chassis",
                "bootparam",
                "get",
                "5",
            ])
            .output()
            .expect("ipmitool");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    block_on(async {
        // ipmi_sim keeps the device only (its chassis script stores it by name); valid,
        // persistent and EFI read back as clear.
        for (device, persistence, script, ipmitool_text) in [
            (BootDevice::Pxe, Persistence::Persistent, "pxe", "Force PXE"),
            (
                BootDevice::BiosSetup,
                Persistence::NextBoot,
                "bios",
                "Force Boot into BIOS Setup",
            ),
            (BootDevice::Cdrom, Persistence::NextBoot, "cdrom", "CD/DVD"),
            (
                BootDevice::Disk,
                Persistence::Persistent,
                "default",
                "default Hard-Drive",
            ),
        ] {
            let o = BootOverride {
                device,
                persistence,
                efi: false,
            };
            boot::set_boot_override(&b, o).await.expect("set boot");
            assert_eq!(sim.boot_device(), script);
            let flags = boot::boot_flags(&b).await.expect("get boot");
            assert_eq!(flags.boot.device, device);
            if let Some(tool) = ipmitool {
                let said = ipmitool_says(tool);
                assert!(said.contains(ipmitool_text), "{device:?}: {said}");
            }
        }
        b.close().await;
    });
}

/// A wrong password does not use up the BMC's session slots: each refused RAKP 2 is answered
/// with a refusing RAKP 3, so the BMC frees the session at once. ipmi_sim has 63 slots and
/// holds a half-open session until its timeout; more failed logins than that, then a good
/// one, must still get in.
#[test]
fn failed_logins_leave_no_half_open_sessions() {
    let sim = IpmiSim::start();
    block_on(async {
        for _ in 0..70 {
            let b = bmc(sim.addr, ADMIN.0, "not-the-password");
            let err = b.execute("get device id", GetDeviceId).await.unwrap_err();
            assert_eq!(err.kind(), "auth_failed", "{err}");
        }
        let good = bmc(sim.addr, ADMIN.0, ADMIN.1);
        good.execute("get device id", GetDeviceId)
            .await
            .expect("a good login after 70 failed ones");
        good.close().await;
    });
}
