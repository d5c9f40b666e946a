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

/// A clean stop deletes the Redfish session the agent created: sushy-emulator has no
/// SessionService, so a minimal one here (plain HTTP, `scheme = "http"`) records the DELETE.
#[test]
fn sigterm_deletes_the_redfish_session() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut len, mut token) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (n, v) = h.split_once(':').unwrap_or((h, ""));
                        match n.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap(),
                            "x-auth-token" => token = v.trim().to_owned(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let mut parts = line.split_whitespace();
                    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    log.lock()
                        .unwrap()
                        .push(format!("{method} {path} token={token}"));
                    let sessions = "/redfish/v1/SessionService/Sessions";
                    let (status, extra, json) = match (method, path) {
                        ("GET", "/redfish/v1") | ("GET", "/redfish/v1/") => (
                            200,
                            String::new(),
                            format!(
                                r#"{{"Systems":{{"@odata.id":"/redfish/v1/Systems"}},"SessionService":{{"@odata.id":"/redfish/v1/SessionService"}},"Links":{{"Sessions":{{"@odata.id":"{sessions}"}}}}}}"#
                            ),
                        ),
                        ("POST", p) if p == sessions => (
                            201,
                            format!("X-Auth-Token: tok-1\r\nLocation: {sessions}/1\r\n"),
                            r#"{"Id":"1"}"#.to_owned(),
                        ),
                        ("GET", "/redfish/v1/Systems") if token == "tok-1" => (
                            200,
                            String::new(),
                            r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/1"}]}"#.to_owned(),
                        ),
                        ("GET", "/redfish/v1/Systems/1") if token == "tok-1" => (
                            200,
                            String::new(),
                            r#"{"Id":"1","PowerState":"On"}"#.to_owned(),
                        ),
                        ("DELETE", p) if p == format!("{sessions}/1") => {
                            (204, String::new(), String::new())
                        }
                        ("GET", _) if token != "tok-1" => (401, String::new(), "{}".to_owned()),
                        _ => (404, String::new(), "{}".to_owned()),
                    };
                    let reason = match status {
                        200 => "OK",
                        201 => "Created",
                        204 => "No Content",
                        401 => "Unauthorized",
                        _ => "Not Found",
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{json}",
                        json.len()
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let dir = TempDir::new("agent-rf-logout");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!("[agent]\npoll_interval_secs = 0.5\n[[bmc]]\nid = \"rf1\"\naddress = \"127.0.0.1\"\nport = {port}\nprotocol = \"redfish\"\nscheme = \"http\"\nusername = \"admin\"\npassword = \"password\"\n"),
    )
    .unwrap();
    let mut agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        get(agent.addr, "/metrics", &[])
            .text()
            .contains(r#"agent_bmc_up{server_id="rf1"} 1"#)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "rf1 not polled: {:?}\n{}",
            seen.lock().unwrap(),
            agent.proc.log()
        )
    });
    let logins = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("POST"))
        .count();
    assert_eq!(logins, 1, "{:?}", seen.lock().unwrap());
    assert!(!seen.lock().unwrap().iter().any(|l| l.starts_with("DELETE")));
    let status = agent.proc.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|l| l == "DELETE /redfish/v1/SessionService/Sessions/1 token=tok-1"),
        "{seen:?}"
    );
}
