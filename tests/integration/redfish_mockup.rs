//! The agent's Redfish client against sushy-static serving `tests/peers/redfish/mockup` (files
//! after DMTF's public-rackmount1 mockup, DSP2043) over HTTPS, certificate checked against the
//! test's own CA: what sushy-emulator does not serve. sushy-static keeps no sessions (its 204
//! to the session POST carries no token), so the client is on Basic auth here; the request log
//! shows what was sent.

use std::time::Duration;

use conduit_redfish::{RedfishBmc, Tls};
use conduit_tests::sushy::SushyStatic;

fn client(s: &SushyStatic) -> RedfishBmc {
    let ca = Tls::CaPem(std::fs::read(&s.pki.ca).unwrap());
    RedfishBmc::new(s.addr, "admin", "password", ca, Duration::from_secs(10)).expect("client")
}

#[test]
fn power_and_identity_on_basic_auth_when_the_session_post_brings_no_token() {
    let s = SushyStatic::start();
    let r = client(&s);
    assert!(
        r.power_on().expect("power state"),
        "the mockup system is on"
    );
    let info = r.info().expect("info");
    assert_eq!(
        (
            info.manufacturer.as_str(),
            info.model.as_str(),
            info.firmware.as_str()
        ),
        ("Contoso", "3500", "4.20.7")
    );
    let log = s.requests();
    assert!(
        log.contains("\"POST /redfish/v1/SessionService/Sessions HTTP/1.1\" 204"),
        "a session was asked for:\n{log}"
    );
    let basic = format!(
        "Authorization: Basic {}",
        conduit_ws::base64(b"admin:password")
    );
    assert!(log.contains(&basic), "then Basic auth:\n{log}");
    assert!(!log.contains("X-Auth-Token"), "{log}");
    // No session, so nothing to delete (sushy-static would answer a DELETE with 501).
    r.logout().expect("logout");
    assert!(!s.requests().contains("\"DELETE "), "{}", s.requests());
}

#[test]
fn sensors_from_the_chassis_sensors_collection() {
    let s = SushyStatic::start();
    let sensors = client(&s).sensors().expect("sensors");
    let got: Vec<_> = sensors
        .iter()
        .map(|r| (r.name.as_str(), r.value, r.unit, r.state))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Intake Temperature", Some(24.5), "celsius", "ok"),
            ("CPU #1 Temperature", Some(81.0), "celsius", "non_critical"),
            ("Fan Bay #1 Speed", Some(5400.0), "rpm", "ok"),
            ("Power Supply #1 Input Voltage", Some(229.8), "volts", "ok"),
            ("Total Power Consumption", Some(312.5), "watts", "ok"),
            ("Power Supply #2 Input Power", None, "watts", "unavailable"),
        ],
        "the chassis also links a deprecated Thermal resource, which is not read"
    );
    assert!(
        !s.requests().contains("GET /redfish/v1/Chassis/1U/Thermal"),
        "{}",
        s.requests()
    );
}
