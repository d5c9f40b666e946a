//! The agent's Redfish client against sushy-static serving `tests/peers/redfish/mockup` (files
//! after DMTF's public-rackmount1 mockup, DSP2043) over HTTPS, certificate checked against the
//! test's own CA: what sushy-emulator does not serve. sushy-static keeps no sessions (its 204
//! to the session POST carries no token), so the client is on Basic auth here; the request log
//! shows what was sent.

use std::time::{Duration, UNIX_EPOCH};

use conduit_redfish::{
    BootEnabled, BootPersistence, BootSource, BootTarget, Capability, LogEntry, LogKind, LogScope,
    RedfishBmc, RedfishError, Severity, Tls,
};
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
    let basic = format!(
        "Authorization: Basic {}",
        conduit_base64::encode(b"admin:password")
    );
    let log = s.requests_once(|log| log.matches(&basic).count() >= 2);
    assert!(
        log.contains("\"POST /redfish/v1/SessionService/Sessions HTTP/1.1\" 204"),
        "a session was asked for:\n{log}"
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

#[test]
fn event_logs_of_the_system_and_its_manager() {
    let s = SushyStatic::start();
    let r = client(&s);
    let services = r.log_services().expect("log services");
    let found: Vec<_> = services
        .iter()
        .map(|l| (l.scope, l.id.as_str(), l.kind, l.can_clear))
        .collect();
    assert_eq!(
        found,
        vec![
            (LogScope::System, "SEL", LogKind::Sel, true),
            (LogScope::Manager, "Log", LogKind::Event, false),
        ]
    );

    // Two pages (the second by its ?$skiptoken= link), the last entry only linked.
    let sel = r.log_entries(&services[0]).expect("SEL entries");
    assert!(sel.complete);
    let got: Vec<_> = sel
        .entries
        .iter()
        .map(|e| {
            (
                e.id.as_str(),
                e.severity,
                e.sensor_type.as_deref(),
                e.sensor_number,
                e.message_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "1",
                Some(Severity::Ok),
                Some("System Event"),
                Some(16),
                "0x6F0116"
            ),
            (
                "2",
                Some(Severity::Warning),
                Some("Temperature"),
                Some(2),
                "0x010701"
            ),
            (
                "3",
                Some(Severity::Critical),
                Some("Power Supply"),
                Some(41),
                "0x6F0800"
            ),
            ("4", Some(Severity::Ok), Some("Fan"), Some(48), "0x040101"),
        ]
    );
    let secs = |e: &LogEntry| {
        e.created
            .expect("created")
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    // 2024-05-01T11:30:00+02:00 and 2024-05-01T10:15:45.5Z.
    assert_eq!(secs(&sel.entries[1]), 1_714_555_800.0);
    assert_eq!(secs(&sel.entries[2]), 1_714_558_545.5);
    let lost = &sel.entries[2];
    assert_eq!(lost.message, "Power supply #2 presence lost");
    assert_eq!(
        lost.origin.as_deref(),
        Some("/redfish/v1/Chassis/1U/Sensors/PS2InputPower")
    );

    let mgr = r.log_entries(&services[1]).expect("manager entries");
    assert_eq!(mgr.entries.len(), 1);
    assert_eq!(mgr.entries[0].message, "The BMC was reset by a watchdog");

    // The manager's log has no ClearLog: refused without asking.
    let err = r.clear_log(&services[1]).unwrap_err();
    assert!(
        matches!(
            err,
            RedfishError::Unsupported {
                what: Capability::ClearLog,
                ..
            }
        ),
        "{err:?}"
    );
    // sushy-static answers every POST with 204 (and clears nothing): the request is what is
    // checked here; the fake service in conduit-redfish's tests checks the outcome.
    r.clear_log(&services[0]).expect("clear the SEL");
    let post = "\"POST /redfish/v1/Systems/437XR1138R2/LogServices/SEL/Actions/LogService.ClearLog HTTP/1.1\" 204";
    let log = s.requests_once(|log| log.contains(post) && log.contains("Data: b'{}'"));
    assert!(log.contains(post), "{log}");
    assert!(log.contains("Data: b'{}'"), "{log}");
    assert_eq!(
        log.matches("\"POST ").count(),
        2,
        "the session POST and ClearLog: {log}"
    );
}

#[test]
fn a_once_boot_override_read_and_the_patch_on_the_wire() {
    let s = SushyStatic::start();
    let r = client(&s);
    // sushy-emulator reports every override Continuous; the mockup has a one-time one.
    let b = r.boot().expect("boot");
    assert_eq!(
        (b.enabled, b.target),
        (BootEnabled::Once, BootSource::Target(BootTarget::Pxe))
    );
    assert_eq!(
        b.allowed,
        Some(vec![
            BootTarget::Pxe,
            BootTarget::Cd,
            BootTarget::Hdd,
            BootTarget::BiosSetup
        ])
    );
    r.set_boot(BootTarget::BiosSetup, BootPersistence::Once)
        .expect("PATCH answered 204");
    let log = s.requests_once(|log| {
        log.contains("\"PATCH /redfish/v1/Systems/437XR1138R2 HTTP/1.1\" 204")
            && log.contains("Data: b'{\"Boot\"")
    });
    assert!(
        log.contains("\"PATCH /redfish/v1/Systems/437XR1138R2 HTTP/1.1\" 204"),
        "{log}"
    );
    // sushy-static prints a request's headers and body, then its access line.
    let at = log
        .find("Data: b'{\"Boot\"")
        .unwrap_or_else(|| panic!("no PATCH body:\n{log}"));
    let headers = log[..at].rsplit("HTTP/1.1\" ").next().unwrap_or_default();
    assert!(
        headers.contains("Content-Type: application/json"),
        "{headers}"
    );
    let data = log[at..].lines().next().unwrap_or_default();
    for part in [
        r#""BootSourceOverrideTarget":"BiosSetup""#,
        r#""BootSourceOverrideEnabled":"Once""#,
    ] {
        assert!(data.contains(part), "{data}");
    }
}

#[test]
fn status_identity_health_and_power_draw_from_the_newer_model() {
    use conduit_redfish::health::{Component, Health};
    let s = SushyStatic::start();
    let st = client(&s).status().expect("status");
    assert_eq!(
        (st.info.serial.as_str(), st.info.firmware.as_str()),
        ("437XR1138R2", "4.20.7")
    );
    let mut health = st.health.clone();
    health.sort_by_key(|(c, _)| c.as_str());
    assert_eq!(
        health,
        [
            (Component::Chassis, Health::Ok),
            (Component::Fan, Health::Ok),
            (Component::Memory, Health::Warning),
            (Component::PowerSupply, Health::Critical),
            (Component::Processor, Health::Ok),
            (Component::System, Health::Ok),
        ]
    );
    assert_eq!(st.power_watts, Some(312.5), "from EnvironmentMetrics");
}

#[test]
fn the_agent_publishes_a_redfish_bmcs_identity_health_power_and_log_size() {
    use conduit_tests::{get, sample, start_component, wait_for, TempDir};
    let s = SushyStatic::start();
    let dir = TempDir::new("agent-mockup");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\npoll_interval_secs = 0.5\n[[bmc]]\nid = \"rf1\"\naddress = \"127.0.0.1\"\n\
             port = {}\nprotocol = \"redfish\"\nusername = \"admin\"\npassword = \"password\"\n\
             tls_ca_file = \"{}\"\n",
            s.addr.port(),
            s.pki.ca.display()
        ),
    )
    .unwrap();
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let rf1 = [("server_id", "rf1")];
    let text = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        let t = get(agent.addr, "/metrics", &[]).text();
        sample(&t, "agent_bmc_event_log_entries", &rf1).map(|_| t)
    })
    .unwrap_or_else(|| panic!("rf1's status not published:\n{}", agent.proc.log()));
    // The SEL's Members@odata.count (the log GetEventLog reads: the SEL when there is one).
    assert_eq!(
        sample(&text, "agent_bmc_event_log_entries", &rf1),
        Some(4.0),
        "{text}"
    );
    assert_eq!(sample(&text, "agent_bmc_event_log_free_bytes", &rf1), None);
    assert_eq!(
        sample(&text, "agent_bmc_power_consumption_watts", &rf1),
        Some(312.5)
    );
    assert_eq!(
        sample(
            &text,
            "agent_bmc_info",
            &[
                ("server_id", "rf1"),
                ("manufacturer", "Contoso"),
                ("product", "3500"),
                ("firmware", "4.20.7"),
                ("serial", "437XR1138R2"),
            ]
        ),
        Some(1.0),
        "{text}"
    );
    for (component, level) in [
        ("system", 0.0),
        ("chassis", 0.0),
        ("memory", 1.0),
        ("processor", 0.0),
        ("power_supply", 2.0),
        ("fan", 0.0),
    ] {
        assert_eq!(
            sample(
                &text,
                "agent_bmc_health",
                &[("server_id", "rf1"), ("component", component)]
            ),
            Some(level),
            "{component}: {text}"
        );
    }
    // Sensor states from Status.Health, next to the values (the CPU sensor says Warning).
    let state = |sensor| {
        sample(
            &text,
            "agent_bmc_sensor_state",
            &[("server_id", "rf1"), ("sensor", sensor)],
        )
    };
    assert_eq!(state("CPU #1 Temperature"), Some(1.0), "{text}");
    assert_eq!(state("Intake Temperature"), Some(0.0), "{text}");
}
