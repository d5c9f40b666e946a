//! Boot device override and the event log through the agent, on the same operation path as
//! power (counted in `agent_bmc_operations_total`): the API and the CLI against ipmi_sim, the
//! sushy emulator (boot) and a sushy-static DSP2043-style mockup (LogServices).

use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::sushy::{Sushy, SushyStatic};
use conduit_tests::{agent_cli, agent_cli_ok, get, request, sample, start_component, TempDir};

const TOKEN: &str = "boot-events-token-0123456789";

fn rest(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {TOKEN}");
    let r = request(addr, method, path, &[("Authorization", &auth)], b"");
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

fn counted(addr: std::net::SocketAddr, bmc_type: &str, operation: &str) -> f64 {
    let text = get(addr, "/metrics", &[]).text();
    sample(
        &text,
        "agent_bmc_operations_total",
        &[
            ("bmc_type", bmc_type),
            ("operation", operation),
            ("status", "success"),
        ],
    )
    .unwrap_or(0.0)
}

#[test]
fn ipmi_boot_device_and_event_log() {
    let sim = IpmiSim::start();
    let dir = TempDir::new("agent-boot-sel");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\napi_token = \"{TOKEN}\"\npoll_interval_secs = 3600\n[[bmc]]\nid = \"sim1\"\naddress = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword = \"password\"\n",
            sim.addr.port()
        ),
    )
    .unwrap();
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    assert_eq!(counted(agent.addr, "ipmi", "boot_set"), 0.0);

    // Boot override: API (next boot), then persistent; the simulator's chassis holds it.
    let (status, body) = rest(agent.addr, "POST", "/api/v1/servers/sim1/boot/pxe");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device"], "pxe", "{body}");
    assert_eq!(sim.boot_device(), "pxe");
    let (status, body) = rest(
        agent.addr,
        "POST",
        "/api/v1/servers/sim1/boot/bios?persistent=1",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(sim.boot_device(), "bios");
    let (status, body) = rest(agent.addr, "POST", "/api/v1/servers/sim1/boot/floppy");
    assert_eq!(status, 400, "{body}");
    assert_eq!(counted(agent.addr, "ipmi", "boot_set"), 2.0);
    assert!(counted(agent.addr, "ipmi", "boot_get") >= 2.0);
    // The CLI, same code path.
    let out = agent_cli_ok(&cfg, &["boot", "sim1", "cdrom"]);
    assert!(out.starts_with("cdrom\t"), "{out}");
    assert_eq!(sim.boot_device(), "cdrom");

    // The event log: two system events and an OEM record, read, then cleared.
    sim.console("sel_add 0x20 0x02 0 0 0 0 0x20 0x00 0x04 0x01 0x01 0x01 0x09 0xff 0xff");
    sim.console("sel_add 0x20 0x02 0 0 0 0 0x20 0x00 0x04 0x0c 0x05 0x6f 0x00 0xff 0xff");
    sim.console("sel_add 0x20 0xe0 1 2 3 4 5 6 7 8 9 10 11 12 13");
    let (status, body) = rest(agent.addr, "GET", "/api/v1/servers/sim1/events");
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{body}");
    assert_eq!(events[0]["sensor"], "Temperature #1", "{body}");
    assert_eq!(events[0]["severity"], "critical", "{body}");
    assert!(
        events[0]["event"]
            .as_str()
            .unwrap()
            .starts_with("upper critical going high asserted"),
        "{body}"
    );
    // ipmi_sim's clock counts from its start (never set): no wall-clock time to report.
    assert!(events[0].get("time").is_none(), "{body}");
    assert_eq!(events[1]["severity"], "warning", "{body}");
    assert_eq!(events[2]["sensor"], "oem", "{body}");
    assert_eq!(body["complete"], true);
    let out = agent_cli_ok(&cfg, &["events", "sim1"]);
    assert_eq!(out.lines().count(), 3, "{out}");

    // Clearing is a separate, explicit action.
    let refused = agent_cli(&cfg, &["events", "sim1", "clear"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let (status, body) = rest(agent.addr, "DELETE", "/api/v1/servers/sim1/events");
    assert_eq!(status, 200, "{body}");
    let (_, body) = rest(agent.addr, "GET", "/api/v1/servers/sim1/events");
    assert_eq!(body["events"].as_array().unwrap().len(), 0, "{body}");
    assert_eq!(counted(agent.addr, "ipmi", "sel_clear"), 1.0);
    assert_eq!(counted(agent.addr, "ipmi", "sel_read"), 2.0);
}

fn redfish_agent(dir: &TempDir, port: u16, ca: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\napi_token = \"{TOKEN}\"\npoll_interval_secs = 3600\n[[bmc]]\nid = \"rf1\"\naddress = \"127.0.0.1\"\nport = {port}\nprotocol = \"redfish\"\nusername = \"admin\"\npassword = \"password\"\ntls_ca_file = \"{}\"\n",
            ca.display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn redfish_boot_override_and_log_services() {
    // Boot: sushy-emulator (it keeps every override Continuous, and says so).
    let sushy = Sushy::start();
    let dir = TempDir::new("agent-rf-boot");
    let cfg = redfish_agent(&dir, sushy.addr.port(), &sushy.pki.ca);
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let (status, body) = rest(agent.addr, "POST", "/api/v1/servers/rf1/boot/pxe");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device"], "pxe", "{body}");
    // The emulator does not advertise BiosSetup: refused before anything is sent.
    let (status, body) = rest(agent.addr, "POST", "/api/v1/servers/rf1/boot/bios");
    assert_eq!(status, 400, "{body}");
    assert_eq!(counted(agent.addr, "redfish", "boot_set"), 1.0);

    // The event log: the mockup's SEL, over two pages and a linked entry.
    let mockup = SushyStatic::start();
    let dir2 = TempDir::new("agent-rf-sel");
    let cfg2 = redfish_agent(&dir2, mockup.addr.port(), &mockup.pki.ca);
    let agent2 = start_component("conduit-agent", &["--config", cfg2.to_str().unwrap()]);
    let (status, body) = rest(agent2.addr, "GET", "/api/v1/servers/rf1/events");
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    let severities: Vec<&str> = events
        .iter()
        .map(|e| e["severity"].as_str().unwrap())
        .collect();
    assert_eq!(
        severities,
        ["info", "warning", "critical", "info"],
        "{body}"
    );
    assert_eq!(counted(agent2.addr, "redfish", "sel_read"), 1.0);
    // Clearing posts to the SEL service's ClearLog action.
    let (status, body) = rest(agent2.addr, "DELETE", "/api/v1/servers/rf1/events");
    assert_eq!(status, 200, "{body}");
    let clear = "POST /redfish/v1/Systems/437XR1138R2/LogServices/SEL/Actions/LogService.ClearLog";
    let log = mockup.requests_once(|log| log.contains(clear));
    assert!(log.contains(clear), "{log}");
}
