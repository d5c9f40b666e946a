//! The agent's Redfish client against a real Redfish implementation (sushy-emulator, fake
//! driver) over HTTPS with Basic auth, certificate checked against the test's own CA: power
//! actions and state, identity, thermal sensors, a reset type the BMC advertises but rejects,
//! the cycle fallback, the boot override, wrong credentials, an untrusted certificate, insecure
//! mode. Then the agent binary polling it.

use std::time::Duration;

use conduit_redfish::{
    BootEnabled, BootPersistence, BootSource, BootTarget, Capability, RedfishBmc, RedfishError,
    ResetType, Tls,
};
use conduit_tests::sushy::{other_ca, Sushy};
use conduit_tests::{get, start_component, wait_for, TempDir};

fn client(s: &Sushy, password: &str, tls: Tls) -> RedfishBmc {
    RedfishBmc::new(s.addr, "admin", password, tls, Duration::from_secs(10)).expect("client")
}

fn ca(s: &Sushy) -> Tls {
    Tls::CaPem(std::fs::read(&s.pki.ca).unwrap())
}

#[test]
fn power_identity_and_sensors_over_https() {
    let s = Sushy::start();
    let r = client(&s, "password", ca(&s));
    assert!(
        !r.power_on().expect("power state"),
        "the fake system starts off"
    );
    r.reset(ResetType::On).expect("on");
    assert!(r.power_on().unwrap());
    r.reset(ResetType::ForceOff).expect("off (ForceOff)");
    assert!(!r.power_on().unwrap());
    // PowerCycle is not advertised by sushy: ForceOff, wait for Off, then On.
    r.reset(ResetType::On).unwrap();
    r.power_cycle().expect("cycle via ForceOff + On");
    assert!(r.power_on().unwrap());
    r.reset(ResetType::ForceRestart).expect("ForceRestart");
    r.reset(ResetType::GracefulShutdown)
        .expect("GracefulShutdown");

    // Advertised, but sushy answers 501.
    let err = r.reset(ResetType::Nmi).unwrap_err();
    assert!(
        matches!(
            &err,
            RedfishError::Rejected {
                reset_type: "Nmi",
                status: 501,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("rejected reset type Nmi: HTTP 501"),
        "{err}"
    );

    let info = r.info().expect("info");
    assert_eq!(info.manufacturer, "Sushy Emulator");
    assert_eq!(info.firmware, "1.00");
    let sensors = r.sensors().expect("sensors");
    let cpu = sensors
        .iter()
        .find(|x| x.name == "CPU Temp")
        .expect("CPU Temp");
    assert_eq!((cpu.value, cpu.unit), (Some(41.0), "celsius"));
    assert!(
        sensors
            .iter()
            .any(|x| x.unit == "rpm" && x.value == Some(2100.0)),
        "{sensors:?}"
    );
}

#[test]
fn boot_override_over_https() {
    let s = Sushy::start();
    let r = client(&s, "password", ca(&s));
    let b = r.boot().expect("boot");
    assert_eq!(
        b.target,
        BootSource::Target(BootTarget::Hdd),
        "the fake driver's default"
    );
    assert_eq!(
        b.allowed,
        Some(vec![BootTarget::Pxe, BootTarget::Cd, BootTarget::Hdd]),
        "sushy advertises Pxe, Cd, Hdd and UefiHttp (not one this client sets)"
    );

    r.set_boot(BootTarget::Pxe, BootPersistence::Once)
        .expect("pxe once");
    let b = r.boot().unwrap();
    assert_eq!(b.target, BootSource::Target(BootTarget::Pxe));
    // sushy-emulator ignores BootSourceOverrideEnabled (libvirt has no one-time boot device):
    // every override it reports is Continuous.
    assert_eq!(b.enabled, BootEnabled::Continuous);
    r.set_boot(BootTarget::Cd, BootPersistence::Continuous)
        .expect("cd");
    assert_eq!(r.boot().unwrap().target, BootSource::Target(BootTarget::Cd));

    let err = r
        .set_boot(BootTarget::BiosSetup, BootPersistence::Once)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RedfishError::Unsupported {
                what: Capability::BootTarget,
                value: "BiosSetup",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "boot target BiosSetup is not advertised by the BMC (it allows Pxe, Cd, Hdd, UefiHttp)"
    );
    assert_eq!(
        r.boot().unwrap().target,
        BootSource::Target(BootTarget::Cd),
        "unchanged"
    );
}

#[test]
fn credentials_and_certificates_are_checked() {
    let s = Sushy::start();
    let err = client(&s, "wrong", ca(&s)).power_on().unwrap_err();
    assert_eq!(err.kind(), "auth_failed", "{err}");

    let dir = TempDir::new("other-ca");
    let other = Tls::CaPem(std::fs::read(other_ca(&dir.0)).unwrap());
    let err = client(&s, "password", other).power_on().unwrap_err();
    assert_eq!(err.kind(), "tls_error", "{err}");

    // Explicit insecure mode talks to it anyway.
    assert!(!client(&s, "password", Tls::Insecure).power_on().unwrap());
}

#[test]
fn the_agent_polls_a_redfish_bmc() {
    let s = Sushy::start();
    let dir = TempDir::new("agent-redfish");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\npoll_interval_secs = 0.5\n[[bmc]]\nid = \"rf1\"\naddress = \"127.0.0.1\"\nport = {}\nprotocol = \"redfish\"\nusername = \"admin\"\npassword = \"password\"\ntls_ca_file = \"{}\"\n",
            s.addr.port(),
            s.pki.ca.display()
        ),
    )
    .unwrap();
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let text = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        let t = get(agent.addr, "/metrics", &[]).text();
        t.contains(r#"agent_bmc_sensor_value{server_id="rf1",sensor="CPU Temp",unit="celsius"} 41"#)
            .then_some(t)
    })
    .unwrap_or_else(|| panic!("rf1 not polled:\n{}", agent.proc.log()));
    assert!(
        text.contains(r#"agent_bmc_up{server_id="rf1"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"agent_bmc_power_on{server_id="rf1"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"agent_bmc_operations_total{bmc_type="redfish",operation="power_status",status="success"}"#),
        "{text}"
    );
}

#[test]
fn auto_protocol_detects_ipmi_and_redfish() {
    let rf = Sushy::start();
    let ipmi = conduit_tests::ipmi_sim::IpmiSim::start();
    let nothing = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new("agent-auto");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\npoll_interval_secs = 0.5\noperation_timeout_secs = 2\n\
             [[bmc]]\nid = \"auto-ipmi\"\naddress = \"127.0.0.1\"\nport = {}\nprotocol = \"auto\"\nusername = \"admin\"\npassword = \"password\"\n\
             [[bmc]]\nid = \"auto-rf\"\naddress = \"127.0.0.1\"\nport = {nothing}\nredfish_port = {}\nprotocol = \"auto\"\nusername = \"admin\"\npassword = \"password\"\ntls_ca_file = \"{}\"\n\
             [[bmc]]\nid = \"auto-none\"\naddress = \"127.0.0.1\"\nport = {nothing}\nredfish_port = {}\nprotocol = \"auto\"\nusername = \"admin\"\npassword = \"password\"\n",
            ipmi.addr.port(),
            rf.addr.port(),
            rf.pki.ca.display(),
            conduit_tests::free_port(),
        ),
    )
    .unwrap();
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let text = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        let t = get(agent.addr, "/metrics", &[]).text();
        (t.contains(r#"agent_bmc_up{server_id="auto-ipmi"} 1"#)
            && t.contains(r#"agent_bmc_up{server_id="auto-rf"} 1"#)
            && t.contains(r#"agent_bmc_up{server_id="auto-none"} 0"#))
        .then_some(t)
    })
    .unwrap_or_else(|| panic!("auto BMCs not detected:\n{}", agent.proc.log()));
    for want in [
        r#"agent_bmc_operations_total{bmc_type="ipmi",operation="power_status",status="success"}"#,
        r#"agent_bmc_operations_total{bmc_type="redfish",operation="power_status",status="success"}"#,
        r#"agent_bmc_connection_errors_total{bmc_type="auto",error_type="undetected"}"#,
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
}
