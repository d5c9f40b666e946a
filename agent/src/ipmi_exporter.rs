//! The ipmi_exporter-compatible endpoint: `GET /ipmi?module=…&target=…` answers in
//! prometheus/ipmi_exporter's metric names and labels (1.6), so that scrape configs,
//! dashboards and alerts written for it keep working when the agent replaces it.
//!
//! It answers from the health cache the poller fills, never from the BMC: a scrape costs a
//! lock and an encoding, and a slow or dead BMC cannot slow it. `target` must be one of the
//! agent's configured BMCs (its server id, or its address as `host:port`, or `host` when the
//! port is 623); anything else is refused, so the endpoint cannot be used to probe addresses.
//! `module` is accepted for compatibility and ignored: credentials and what is read come from
//! the agent's configuration. What differs is in docs/metrics.md ("Switching from
//! ipmi_exporter").

use std::fmt::Write;
use std::sync::Arc;

use conduit_http::{Request, Response};

use crate::fleet::{Fleet, SensorReading};
use crate::health::Health;

/// The route's template.
pub const PATH: &str = "/ipmi";

/// FreeIPMI's name of an IPMI sensor type (only IPMI readings carry one).
#[cfg(feature = "ipmi")]
fn type_name(code: u8) -> &'static str {
    conduit_ipmi::sel::sensor_type_name(code)
}

#[cfg(not(feature = "ipmi"))]
fn type_name(_: u8) -> &'static str {
    "N/A"
}

/// A typed family pair of ipmi_exporter: value and state names, and their HELP texts.
struct Typed {
    value: &'static str,
    value_help: &'static str,
    state: &'static str,
    state_help: &'static str,
}

/// The family a reading goes to, by unit, as ipmi_exporter sorts ipmi-sensors' units; the
/// rest (discrete sensors among them) go to the generic `ipmi_sensor_*` pair.
fn typed_family(r: &SensorReading) -> Option<Typed> {
    if r.discrete {
        return None;
    }
    let (value, value_help, state, state_help) = match r.unit {
        // A fan's duty cycle, as a ratio.
        "percent" if r.sensor_type == Some(0x04) => (
            "fan_speed_ratio",
            "Fan speed as a proportion of the maximum speed.",
            "fan_speed_state",
            "Reported state of a fan speed sensor (0=nominal, 1=warning, 2=critical).",
        ),
        "rpm" => (
            "fan_speed_rpm",
            "Fan speed in rotations per minute.",
            "fan_speed_state",
            "Reported state of a fan speed sensor (0=nominal, 1=warning, 2=critical).",
        ),
        "celsius" => (
            "temperature_celsius",
            "Temperature reading in degree Celsius.",
            "temperature_state",
            "Reported state of a temperature sensor (0=nominal, 1=warning, 2=critical).",
        ),
        "amps" => (
            "current_amperes",
            "Current reading in Amperes.",
            "current_state",
            "Reported state of a current sensor (0=nominal, 1=warning, 2=critical).",
        ),
        "volts" => (
            "voltage_volts",
            "Voltage reading in Volts.",
            "voltage_state",
            "Reported state of a voltage sensor (0=nominal, 1=warning, 2=critical).",
        ),
        "watts" => (
            "power_watts",
            "Power reading in Watts.",
            "power_state",
            "Reported state of a power sensor (0=nominal, 1=warning, 2=critical).",
        ),
        _ => return None,
    };
    Some(Typed {
        value,
        value_help,
        state,
        state_help,
    })
}

/// A reading's state as ipmi_exporter reports it: FreeIPMI's default interpretation
/// (`freeipmi_interpret_sensor.conf`) takes a threshold sensor past a non-critical threshold as
/// Nominal, so a warning of the agent's own `agent_bmc_sensor_state` is 0 here, and alerts
/// written as `ipmi_temperature_state > 0` fire as they did. Discrete states are as they are.
fn freeipmi_level(r: &SensorReading) -> Option<u8> {
    match r.level() {
        Some(1) if !r.discrete => Some(0),
        level => level,
    }
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "NaN".to_owned(),
    }
}

/// An exposition being written: each family's HELP and TYPE once, before its first sample,
/// and its samples together (families are kept apart until the end).
#[derive(Default)]
struct Text {
    families: Vec<(&'static str, String)>,
}

impl Text {
    fn sample(&mut self, family: &'static str, help: &str, labels: &str, value: String) {
        let at = match self.families.iter().position(|(f, _)| *f == family) {
            Some(at) => at,
            None => {
                self.families.push((
                    family,
                    format!("# HELP ipmi_{family} {help}\n# TYPE ipmi_{family} gauge\n"),
                ));
                self.families.len() - 1
            }
        };
        let _ = writeln!(self.families[at].1, "ipmi_{family}{labels} {value}");
    }

    fn finish(self) -> String {
        self.families.into_iter().map(|(_, body)| body).collect()
    }
}

/// The exposition for one BMC's cached state (`None`: not polled yet).
pub fn render(health: Option<&Health>) -> String {
    let started = std::time::Instant::now();
    let mut t = Text::default();
    let up_help = "'1' if a scrape of the IPMI device was successful, '0' otherwise.";
    let up = |t: &mut Text, collector: &str, ok: bool| {
        t.sample(
            "up",
            up_help,
            &format!("{{collector=\"{collector}\"}}"),
            u8::from(ok).to_string(),
        );
    };
    let live = health.filter(|h| h.up);
    let status = live.and_then(|h| h.status.as_ref());

    // bmc: identity.
    up(&mut t, "bmc", status.is_some_and(|s| s.identity.is_some()));
    if let Some(i) = status.and_then(|s| s.identity.as_ref()) {
        t.sample(
            "bmc_info",
            "Constant metric with value '1' providing details about the BMC.",
            &format!(
                "{{firmware_revision=\"{}\",manufacturer_id=\"{}\",system_firmware_version=\"N/A\"}}",
                escape(&i.firmware),
                escape(i.manufacturer.strip_prefix("IANA ").unwrap_or(&i.manufacturer))
            ),
            "1".into(),
        );
    }

    // chassis: power state and faults.
    up(
        &mut t,
        "chassis",
        live.is_some_and(|h| h.power_on.is_some()),
    );
    if let Some(on) = live.and_then(|h| h.power_on) {
        t.sample(
            "chassis_power_state",
            "Current power state (1=on, 0=off).",
            "",
            u8::from(on).to_string(),
        );
        for (component, family, help) in [
            (
                "drive",
                "chassis_drive_fault_state",
                "Current drive fault state (1=false, 0=true).",
            ),
            (
                "cooling",
                "chassis_cooling_fault_state",
                "Current Cooling/fan fault state (1=false, 0=true).",
            ),
        ] {
            let level = status.and_then(|s| s.health.iter().find(|(c, _)| *c == component));
            if let Some((_, level)) = level {
                t.sample(family, help, "", u8::from(*level == 0).to_string());
            }
        }
    }

    // ipmi: the sensors.
    up(&mut t, "ipmi", live.is_some_and(|h| !h.sensors.is_empty()));
    for (i, r) in live
        .map_or(&[][..], |h| h.sensors.as_slice())
        .iter()
        .enumerate()
    {
        // ipmi_exporter runs ipmimonitoring, which leaves out sensors without a reading
        // (`--ignore-not-available-sensors`).
        if r.state == "unavailable" {
            continue;
        }
        let id = r.record_id.map_or(i as u64 + 1, u64::from);
        let state = number(freeipmi_level(r).map(f64::from));
        match typed_family(r) {
            Some(f) => {
                let labels = format!("{{id=\"{id}\",name=\"{}\"}}", escape(&r.name));
                let value = match f.value {
                    "fan_speed_ratio" => r.value.map(|v| v / 100.0),
                    _ => r.value,
                };
                t.sample(f.value, f.value_help, &labels, number(value));
                t.sample(f.state, f.state_help, &labels, state);
            }
            None => {
                let kind = r.sensor_type.map_or("N/A", type_name);
                let labels = format!(
                    "{{id=\"{id}\",name=\"{}\",type=\"{}\"}}",
                    escape(&r.name),
                    kind
                );
                t.sample(
                    "sensor_state",
                    "Indicates the severity of the state reported by an IPMI sensor (0=nominal, 1=warning, 2=critical).",
                    &labels,
                    state,
                );
                t.sample(
                    "sensor_value",
                    "Generic data read from an IPMI sensor of unknown type, relying on labels for context.",
                    &labels,
                    number(r.value),
                );
            }
        }
    }

    // sel: the event log's size.
    let entries = status.and_then(|s| s.event_log_entries);
    up(&mut t, "sel", entries.is_some());
    if let Some(n) = entries {
        t.sample(
            "sel_logs_count",
            "Current number of log entries in the SEL.",
            "",
            n.to_string(),
        );
    }
    if let Some(n) = status.and_then(|s| s.event_log_free_bytes) {
        t.sample(
            "sel_free_space_bytes",
            "Current free space remaining for new SEL entries.",
            "",
            n.to_string(),
        );
    }

    // dcmi: power draw.
    let watts = status.and_then(|s| s.power_watts);
    up(&mut t, "dcmi", watts.is_some());
    if let Some(w) = watts {
        t.sample(
            "dcmi_power_consumption_watts",
            "Current power consumption in Watts.",
            "",
            number(Some(w)),
        );
    }
    // What this scrape took: reading the cache, not the BMC.
    t.sample(
        "scrape_duration_seconds",
        "Returns how long the scrape took to complete in seconds.",
        "",
        format!("{:.9}", started.elapsed().as_secs_f64()),
    );
    t.finish()
}

/// The configured BMC `target` names: its server id, `host:port`, or `host` for port 623.
pub fn resolve(fleet: &Fleet, target: &str) -> Option<String> {
    fleet.bmcs().iter().find_map(|b| {
        let addr = b.config.addr;
        let matches = b.config.id == target
            || addr.to_string() == target
            || (addr.port() == 623 && addr.ip().to_string() == target);
        matches.then(|| b.config.id.clone())
    })
}

/// The handler: 400 without a target, 404 for one the agent does not manage.
pub fn handler(fleet: Arc<Fleet>) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    move |req| {
        let Some(target) = req.query_param("target").filter(|t| !t.is_empty()) else {
            return Response::text(400, "missing target parameter: /ipmi?target=<BMC>\n");
        };
        let Some(id) = resolve(&fleet, &target) else {
            // The target is not echoed back: it is the caller's text.
            return Response::text(
                404,
                "unknown target: /ipmi answers only for the agent's configured BMCs (server id or host:port)\n",
            );
        };
        Response::new(200)
            .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .with_body(render(fleet.health().get(&id).as_ref()).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{BmcIdentity, BmcStatus};

    fn reading(
        name: &str,
        unit: &'static str,
        value: Option<f64>,
        state: &'static str,
    ) -> SensorReading {
        SensorReading {
            name: name.into(),
            unit,
            value,
            state,
            record_id: Some(7),
            sensor_type: Some(0x08),
            discrete: unit == "unspecified",
        }
    }

    #[test]
    fn a_cached_bmc_renders_in_ipmi_exporter_names() {
        let h = Health {
            up: true,
            power_on: Some(true),
            last_success: Some(1.0),
            sensors: vec![
                reading("CPU \"Temp\"", "celsius", Some(40.0), "ok"),
                reading("Fan", "rpm", Some(300.0), "non_critical"),
                SensorReading {
                    sensor_type: Some(0x04),
                    ..reading("Duty", "percent", Some(50.0), "ok")
                },
                reading("PSU 2", "unspecified", None, "non_critical"),
                reading("PSU 1", "unspecified", None, "critical"),
                reading("Gone", "volts", None, "unavailable"),
            ],
            status: Some(BmcStatus {
                identity: Some(BmcIdentity {
                    manufacturer: "IANA 4753".into(),
                    product: "0x0f02".into(),
                    firmware: "9.08".into(),
                    ipmi_version: "2.0".into(),
                    serial: String::new(),
                }),
                power_watts: None,
                event_log_entries: Some(3),
                event_log_free_bytes: Some(8000),
                health: vec![("cooling", 2), ("drive", 0)],
            }),
        };
        let text = render(Some(&h));
        // FreeIPMI's type name where IPMI is built in (a Redfish-only agent has none).
        let psu = |line: &str| line.replace("TYPE", type_name(0x08));
        let lines = [
            "ipmi_sensor_state{id=\"7\",name=\"PSU 1\",type=\"TYPE\"} 2",
            "ipmi_sensor_state{id=\"7\",name=\"PSU 2\",type=\"TYPE\"} 1",
            "ipmi_sensor_value{id=\"7\",name=\"PSU 1\",type=\"TYPE\"} NaN",
        ]
        .map(psu);
        for line in lines.iter().map(String::as_str).chain([
            "ipmi_up{collector=\"bmc\"} 1",
            "ipmi_bmc_info{firmware_revision=\"9.08\",manufacturer_id=\"4753\",system_firmware_version=\"N/A\"} 1",
            "ipmi_up{collector=\"dcmi\"} 0",
            "ipmi_chassis_power_state 1",
            "ipmi_chassis_cooling_fault_state 0",
            "ipmi_chassis_drive_fault_state 1",
            "ipmi_temperature_celsius{id=\"7\",name=\"CPU \\\"Temp\\\"\"} 40",
            "ipmi_temperature_state{id=\"7\",name=\"CPU \\\"Temp\\\"\"} 0",
            "ipmi_fan_speed_state{id=\"7\",name=\"Fan\"} 0",
            "ipmi_fan_speed_ratio{id=\"7\",name=\"Duty\"} 0.5",
            "ipmi_sel_logs_count 3",
            "ipmi_sel_free_space_bytes 8000",
        ]) {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        // Without a reading, a sensor is left out, as ipmimonitoring leaves it out.
        assert!(!text.contains("Gone"), "{text}");
        // One HELP and TYPE per family, before its samples.
        assert_eq!(text.matches("# TYPE ipmi_up gauge").count(), 1);
        // Down, or never polled: every collector 0 and nothing else.
        for h in [
            None,
            Some(&Health {
                up: false,
                ..h.clone()
            }),
        ] {
            let text = render(h);
            let samples: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("ipmi_scrape_duration"))
                .collect();
            assert_eq!(samples.len(), 5, "{text}");
            assert!(samples.iter().all(|l| l.ends_with(" 0")), "{text}");
        }
    }
}
