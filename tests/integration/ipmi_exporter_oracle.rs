//! An oracle nobody here wrote: Debian's prometheus-ipmi-exporter (FreeIPMI) and the agent
//! read the same ipmi_sim BMC (four sensors of three types, threshold and discrete, and a
//! SEL), and every value the exporter reports is held against the agent's own families and
//! against the agent's ipmi_exporter-compatible `/ipmi` endpoint, before and after the BMC's
//! state changes. The agent's new families show no samples before the BMC answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use conduit_reference::parse_exposition;
use conduit_tests::ipmi_exporter::IpmiExporter;
use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::{get, start_component, wait_for, workspace_root, TempDir};

/// `(family, sorted labels) → value` of an exposition, without the scrape's own timing.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

fn samples(text: &str, prefix: &str) -> Samples {
    let mut out = Samples::new();
    for (name, f) in parse_exposition(text).expect("a valid exposition") {
        if !name.starts_with(prefix) || name == "ipmi_scrape_duration_seconds" {
            continue;
        }
        for s in f.samples {
            let mut labels = s.labels.clone();
            labels.sort();
            out.insert((s.name.clone(), labels), s.value);
        }
    }
    out
}

/// Equal, both NaN, or within ipmi-sensors' printed precision (two decimals).
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 0.005
}

fn scrape(addr: SocketAddr, path: &str) -> String {
    let r = get(addr, path, &[]);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.text()
}

/// The agent's sample of `family` for sensor `name`, if any.
fn agent_sensor(agent: &Samples, family: &str, name: &str) -> Option<f64> {
    agent
        .iter()
        .find(|((f, l), _)| {
            f == family
                && l.iter().any(|(k, v)| k == "sensor" && v == name)
                && l.iter().any(|(k, v)| k == "server_id" && v == "sim1")
        })
        .map(|(_, v)| *v)
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// Every value of the exporter's scrape that the agent's families carry, mismatches listed;
/// empty when they agree.
fn against_agent(exporter: &Samples, agent: &Samples) -> Vec<String> {
    fn check(wrong: &mut Vec<String>, what: String, theirs: f64, ours: Option<f64>) {
        if !ours.is_some_and(|o| same(o, theirs)) {
            wrong.push(format!("{what}: exporter {theirs}, agent {ours:?}"));
        }
    }
    let mut wrong = Vec::new();
    let server = |f: &str| {
        agent
            .iter()
            .find(|((n, l), _)| n == f && label(l, "server_id") == "sim1")
            .map(|(_, v)| *v)
    };
    for ((family, labels), &v) in exporter {
        let name = label(labels, "name");
        match family.as_str() {
            "ipmi_temperature_celsius" | "ipmi_fan_speed_rpm" | "ipmi_voltage_volts" => check(
                &mut wrong,
                format!("{family} {name}"),
                v,
                agent_sensor(agent, "agent_bmc_sensor_value", name),
            ),
            // FreeIPMI's default interpretation takes a non-critical threshold crossed as
            // Nominal; the agent's own family says warning (1), as IPMI does.
            "ipmi_temperature_state" | "ipmi_fan_speed_state" | "ipmi_voltage_state" => check(
                &mut wrong,
                format!("{family} {name}"),
                v,
                agent_sensor(agent, "agent_bmc_sensor_state", name).map(|l| {
                    if l == 1.0 {
                        0.0
                    } else {
                        l
                    }
                }),
            ),
            "ipmi_sensor_state" => check(
                &mut wrong,
                format!("{family} {name}"),
                v,
                agent_sensor(agent, "agent_bmc_sensor_state", name),
            ),
            // A discrete sensor has no value: NaN there, no series here.
            "ipmi_sensor_value" => {
                if !v.is_nan() || agent_sensor(agent, "agent_bmc_sensor_value", name).is_some() {
                    wrong.push(format!("{family} {name}: a value for a discrete sensor"));
                }
            }
            "ipmi_chassis_power_state" => {
                check(&mut wrong, family.clone(), v, server("agent_bmc_power_on"))
            }
            "ipmi_sel_logs_count" => check(
                &mut wrong,
                family.clone(),
                v,
                server("agent_bmc_event_log_entries"),
            ),
            "ipmi_sel_free_space_bytes" => check(
                &mut wrong,
                family.clone(),
                v,
                server("agent_bmc_event_log_free_bytes"),
            ),
            "ipmi_bmc_info" => {
                let info = agent
                    .keys()
                    .find(|(n, l)| n == "agent_bmc_info" && label(l, "server_id") == "sim1");
                let Some((_, ours)) = info else {
                    wrong.push("ipmi_bmc_info: no agent_bmc_info".into());
                    continue;
                };
                // FreeIPMI names the enterprise ("MontaVista Software, Inc. (4753)").
                let number = label(labels, "manufacturer_id")
                    .rsplit_once('(')
                    .map(|(_, n)| n.trim_end_matches(')'))
                    .unwrap_or("");
                if label(ours, "firmware") != label(labels, "firmware_revision")
                    || label(ours, "manufacturer") != format!("IANA {number}")
                {
                    wrong.push(format!("ipmi_bmc_info {labels:?} vs agent {ours:?}"));
                }
            }
            "ipmi_up" => {
                let c = label(labels, "collector");
                // dcmi: ipmi_sim has no DCMI (0xC1): 0 there, no power series here.
                let ours = match c {
                    "dcmi" => server("agent_bmc_power_consumption_watts").is_some(),
                    _ => server("agent_bmc_up") == Some(1.0),
                };
                if f64::from(u8::from(ours)) != v {
                    wrong.push(format!(
                        "ipmi_up{{collector={c}}}: exporter {v}, agent {ours}"
                    ));
                }
            }
            other => wrong.push(format!("{other}: not compared (unknown to this test)")),
        }
    }
    wrong
}

/// The exporter's scrape against the agent's `/ipmi`: the same samples, but for what is
/// documented to differ (bmc_info's `manufacturer_id`) and the families only the agent has.
fn against_endpoint(exporter: &Samples, ours: &Samples) -> Vec<String> {
    let mut wrong = Vec::new();
    let key = |(f, l): &(String, Vec<(String, String)>)| {
        let l: Vec<_> = l
            .iter()
            .filter(|(k, _)| !(f == "ipmi_bmc_info" && k == "manufacturer_id"))
            .cloned()
            .collect();
        (f.clone(), l)
    };
    let ours: BTreeMap<_, _> = ours.iter().map(|(k, v)| (key(k), *v)).collect();
    for (k, v) in exporter {
        match ours.get(&key(k)) {
            Some(o) if same(*o, *v) => {}
            o => wrong.push(format!("{k:?}: exporter {v}, /ipmi {o:?}")),
        }
    }
    let extra = [
        "ipmi_chassis_drive_fault_state",
        "ipmi_chassis_cooling_fault_state",
    ];
    for k in ours.keys() {
        if !extra.contains(&k.0.as_str()) && !exporter.keys().any(|e| key(e) == *k) {
            wrong.push(format!("{k:?}: only on /ipmi"));
        }
    }
    wrong
}

#[test]
fn the_agent_reports_what_ipmi_exporter_reports_of_the_same_bmc() {
    let emu = std::fs::read_to_string(workspace_root().join("tests/peers/ipmi/exporter.emu"))
        .expect("exporter.emu");
    // The agent first, pointed at an address where no BMC answers yet.
    let bmc = IpmiSim::free_addr();
    let dir = TempDir::new("oracle");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\npoll_interval_secs = 0.5\noperation_timeout_secs = 1\n\
             ipmi_exporter_endpoint = true\n\n\
             [[bmc]]\nid = \"sim1\"\naddress = \"127.0.0.1\"\nport = {}\n\
             username = \"admin\"\npassword = \"password\"\n",
            bmc.port()
        ),
    )
    .unwrap();
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let fresh = [
        "agent_bmc_sensor_state",
        "agent_bmc_info",
        "agent_bmc_event_log_entries",
        "agent_bmc_event_log_free_bytes",
        "agent_bmc_health",
    ];
    let down = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let m = samples(&scrape(agent.addr, "/metrics"), "agent_bmc_");
        m.iter()
            .any(|((f, _), v)| f == "agent_bmc_up" && *v == 0.0)
            .then_some(m)
    })
    .expect("the agent polls the absent BMC");
    for f in fresh {
        assert!(
            !down.keys().any(|(n, _)| n == f),
            "{f} has samples before the BMC answered"
        );
    }
    // Unknown targets are refused, known ones answered; nothing is probed.
    let unknown = get(agent.addr, "/ipmi?module=x&target=127.0.0.1:1", &[]);
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(get(agent.addr, "/ipmi", &[]).status, 400);

    let sim = IpmiSim::start_with_emu_at(bmc, &emu);
    std::fs::write(sim.dir.0.join("power"), "1\n").unwrap();
    let exporter = IpmiExporter::start();
    let path = IpmiExporter::path(sim.addr);

    // Both views agree, now and after each change on the BMC. The agent polls every 0.5 s,
    // the exporter reads on every scrape: wait until the two meet.
    let agree = |step: &str, expect: &dyn Fn(&Samples) -> bool| {
        let mut last = (Vec::new(), Vec::new(), String::new());
        let met = wait_for(Duration::from_secs(20), Duration::from_millis(300), || {
            let theirs_text = scrape(exporter.addr, &path);
            let theirs = samples(&theirs_text, "ipmi_");
            let agent_m = samples(&scrape(agent.addr, "/metrics"), "agent_bmc_");
            let ours = samples(
                &scrape(agent.addr, &format!("/ipmi?module=sim&target={}", sim.addr)),
                "ipmi_",
            );
            last = (
                against_agent(&theirs, &agent_m),
                against_endpoint(&theirs, &ours),
                theirs_text,
            );
            (expect(&theirs) && last.0.is_empty() && last.1.is_empty()).then_some(())
        });
        assert!(
            met.is_some(),
            "{step}: the agent does not report what ipmi_exporter does\n\
             against the agent's families: {:#?}\nagainst /ipmi: {:#?}\nexporter:\n{}",
            last.0,
            last.1,
            last.2
        );
    };
    let value = |s: &Samples, family: &str, name: &str| {
        s.iter()
            .find(|((f, l), _)| f == family && (name.is_empty() || label(l, "name") == name))
            .map(|(_, v)| *v)
    };
    agree("at first", &|s| {
        value(s, "ipmi_temperature_celsius", "CPU Temp") == Some(40.0)
            && value(s, "ipmi_sensor_state", "PSU 1") == Some(0.0)
            && value(s, "ipmi_sel_logs_count", "") == Some(3.0)
            && value(s, "ipmi_chassis_power_state", "") == Some(1.0)
            && value(s, "ipmi_voltage_volts", "12V Rail") == Some(12.0)
    });

    // The host overheats, the fan slows, the rail sags under its lower non-critical
    // threshold, the power supply fails, an event is logged and the server is powered off.
    sim.console("sensor_set_value 0x20 0 1 0x55 1");
    sim.console("sensor_set_value 0x20 0 2 0x28 1");
    sim.console("sensor_set_value 0x20 0 3 0xb8 1");
    sim.console("sensor_set_bit 0x20 0 4 1 1 0");
    sim.console(
        "sel_add 0x20 0x02 0x00 0x00 0x00 0x60 0x20 0x00 0x04 0x07 0x05 0x6f 0x00 0xff 0xff",
    );
    std::fs::write(sim.dir.0.join("power"), "0\n").unwrap();
    agree("after the changes", &|s| {
        value(s, "ipmi_temperature_state", "CPU Temp") == Some(2.0)
            && value(s, "ipmi_fan_speed_rpm", "FAN 1") == Some(2000.0)
            && value(s, "ipmi_voltage_volts", "12V Rail") == Some(11.04)
            && value(s, "ipmi_sensor_state", "PSU 1") == Some(2.0)
            && value(s, "ipmi_sel_logs_count", "") == Some(4.0)
            && value(s, "ipmi_chassis_power_state", "") == Some(0.0)
    });

    // The agent's own view has what the exporter has not: the rail's warning, the IPMI
    // version, and the chassis fault bits (ipmi_sim reports none).
    let m = samples(&scrape(agent.addr, "/metrics"), "agent_bmc_");
    assert_eq!(
        agent_sensor(&m, "agent_bmc_sensor_state", "12V Rail"),
        Some(1.0),
        "a rail under its lower non-critical threshold is a warning"
    );
    let info = m
        .keys()
        .find(|(n, _)| n == "agent_bmc_info")
        .expect("agent_bmc_info");
    assert_eq!(label(&info.1, "ipmi_version"), "2.0");
    for c in ["power", "cooling", "drive"] {
        let h = m
            .iter()
            .find(|((n, l), _)| n == "agent_bmc_health" && label(l, "component") == c);
        assert_eq!(h.map(|(_, v)| *v), Some(0.0), "agent_bmc_health {c}");
    }
    drop(agent);
}
