//! Readings out of a chassis' sensor resources, as pure functions over the service's JSON (the
//! client fetches, these only read): a `Sensor` resource of the chassis' Sensors collection (the
//! current model, Redfish 2020.3 on: one resource per reading, with its `ReadingType` and UCUM
//! `ReadingUnits`), or the older `Thermal` and `Power` resources (arrays of temperatures, fans
//! and power controls).
//!
//! Everything here is untrusted input: a missing or mistyped property gives a reading without a
//! value or a default name, never an error or a panic. Names are the service's text as is; the
//! caller sanitizes them for its labels.

use serde_json::Value;

/// A reading from one of the chassis' sensors.
#[derive(Debug, Clone, PartialEq)]
pub struct RedfishReading {
    /// Sensor name as the service reports it.
    pub name: String,
    /// Value, in `unit`.
    pub value: Option<f64>,
    /// One of the agent's sensor units (`docs/metrics.md`): `celsius`, `fahrenheit`, `kelvin`,
    /// `volts`, `amps`, `watts`, `joules`, `rpm`, `hertz`, `percent`, `unspecified` (the
    /// service gave none) or `other` (one outside that set).
    pub unit: &'static str,
    /// From the sensor's `Status.Health`: `ok`, `non_critical` (Warning), `critical`, or
    /// `unavailable` without a reading (none given, or the sensor is absent or offline).
    pub state: &'static str,
}

fn health(sensor: &Value, has_value: bool) -> &'static str {
    if !has_value {
        return "unavailable";
    }
    match sensor.pointer("/Status/Health").and_then(Value::as_str) {
        Some("Warning") => "non_critical",
        Some("Critical") => "critical",
        _ => "ok",
    }
}

fn name(sensor: &Value, keys: &[&str], default: &str) -> String {
    keys.iter()
        .find_map(|k| sensor.get(*k).and_then(Value::as_str))
        .unwrap_or(default)
        .to_owned()
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Temperatures and fans of a `Thermal` resource.
pub(crate) fn thermal(t: &Value) -> Vec<RedfishReading> {
    let mut out = Vec::new();
    for s in list(t, "Temperatures") {
        let value = s.get("ReadingCelsius").and_then(Value::as_f64);
        out.push(RedfishReading {
            name: name(s, &["Name"], "temperature"),
            value,
            unit: "celsius",
            state: health(s, value.is_some()),
        });
    }
    for s in list(t, "Fans") {
        let value = s.get("Reading").and_then(Value::as_f64);
        out.push(RedfishReading {
            name: name(s, &["Name", "FanName"], "fan"),
            value,
            unit: if s.get("ReadingUnits").and_then(Value::as_str) == Some("Percent") {
                "percent"
            } else {
                "rpm"
            },
            state: health(s, value.is_some()),
        });
    }
    out
}

/// Power consumption of a `Power` resource's power controls.
pub(crate) fn power(p: &Value) -> Vec<RedfishReading> {
    list(p, "PowerControl")
        .iter()
        .map(|s| {
            let value = s.get("PowerConsumedWatts").and_then(Value::as_f64);
            RedfishReading {
                name: name(s, &["Name"], "power"),
                value,
                unit: "watts",
                state: health(s, value.is_some()),
            }
        })
        .collect()
}

/// The agent's unit for a `Sensor`'s `ReadingUnits` (UCUM, as the Sensor schema writes them),
/// or for its `ReadingType` when it gives no units, and the factor that brings the reading to
/// that unit (energy in kWh is reported in joules, as IPMI's is).
fn unit(units: Option<&str>, reading_type: Option<&str>) -> (&'static str, f64) {
    match units {
        Some("Cel") => ("celsius", 1.0),
        Some("[degF]") => ("fahrenheit", 1.0),
        Some("K") => ("kelvin", 1.0),
        Some("V") => ("volts", 1.0),
        Some("mV") => ("volts", 1e-3),
        Some("A") => ("amps", 1.0),
        Some("mA") => ("amps", 1e-3),
        Some("W") => ("watts", 1.0),
        Some("kW") => ("watts", 1e3),
        Some("J") => ("joules", 1.0),
        Some("W.h") => ("joules", 3.6e3),
        Some("kW.h") => ("joules", 3.6e6),
        Some("RPM" | "{rev}/min") => ("rpm", 1.0),
        Some("%") => ("percent", 1.0),
        Some("Hz") => ("hertz", 1.0),
        Some(_) => ("other", 1.0),
        None => match reading_type {
            Some("Temperature") => ("celsius", 1.0),
            Some("Voltage") => ("volts", 1.0),
            Some("Current") => ("amps", 1.0),
            Some("Power") => ("watts", 1.0),
            Some("EnergyJoules") => ("joules", 1.0),
            Some("EnergyWh") => ("joules", 3.6e3),
            Some("EnergykWh") => ("joules", 3.6e6),
            Some("Rotational") => ("rpm", 1.0),
            Some("Frequency") => ("hertz", 1.0),
            Some("Percent" | "Humidity") => ("percent", 1.0),
            Some(_) => ("other", 1.0),
            None => ("unspecified", 1.0),
        },
    }
}

/// Whether a sensor's `Status.State` says its reading means nothing now (a last value may
/// still be in `Reading`).
fn offline(sensor: &Value) -> bool {
    matches!(
        sensor.pointer("/Status/State").and_then(Value::as_str),
        Some("Absent" | "Disabled" | "UnavailableOffline" | "StandbyOffline")
    )
}

/// A `Sensor` resource (a member of a chassis' Sensors collection).
pub(crate) fn sensor(s: &Value) -> RedfishReading {
    let (unit, factor) = unit(
        s.get("ReadingUnits").and_then(Value::as_str),
        s.get("ReadingType").and_then(Value::as_str),
    );
    let value = if offline(s) {
        None
    } else {
        s.get("Reading").and_then(Value::as_f64).map(|v| v * factor)
    };
    RedfishReading {
        name: name(s, &["Name", "Id"], "sensor"),
        value,
        unit,
        state: health(s, value.is_some()),
    }
}

/// Whether a collection member came expanded (the sensor itself) rather than as a link to it.
pub(crate) fn is_expanded(member: &Value) -> bool {
    member.get("Reading").is_some() || member.get("ReadingType").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thermal_temperatures_and_fans() {
        let t = json!({
            "Temperatures": [
                {"Name": "CPU Temp", "ReadingCelsius": 41, "Status": {"Health": "OK"}},
                {"Name": "Inlet", "ReadingCelsius": null, "Status": {"State": "Absent"}},
                {"ReadingCelsius": 90.5, "Status": {"Health": "Critical"}}
            ],
            "Fans": [
                {"FanName": "Fan 1", "Reading": 2100, "ReadingUnits": "RPM"},
                {"Name": "Fan 2", "Reading": 40, "ReadingUnits": "Percent", "Status": {"Health": "Warning"}}
            ]
        });
        let r = thermal(&t);
        let row = |r: &RedfishReading| (r.name.clone(), r.value, r.unit, r.state);
        assert_eq!(
            r.iter().map(row).collect::<Vec<_>>(),
            vec![
                ("CPU Temp".into(), Some(41.0), "celsius", "ok"),
                ("Inlet".into(), None, "celsius", "unavailable"),
                ("temperature".into(), Some(90.5), "celsius", "critical"),
                ("Fan 1".into(), Some(2100.0), "rpm", "ok"),
                ("Fan 2".into(), Some(40.0), "percent", "non_critical"),
            ]
        );
    }

    #[test]
    fn mistyped_thermal_and_power_give_nothing_rather_than_an_error() {
        assert!(thermal(&json!({"Temperatures": "hot", "Fans": {"a": 1}})).is_empty());
        assert!(power(&json!({"PowerControl": 7})).is_empty());
        let r = power(&json!({"PowerControl": [{"PowerConsumedWatts": "212"}]}));
        assert_eq!(
            (r[0].name.as_str(), r[0].value, r[0].state),
            ("power", None, "unavailable")
        );
    }

    #[test]
    fn sensor_resources_with_units_types_and_states() {
        let r = |v: serde_json::Value| {
            let r = sensor(&v);
            (r.name, r.value, r.unit, r.state)
        };
        assert_eq!(
            r(
                json!({"Id": "CPU1Temp", "Name": "CPU #1", "ReadingType": "Temperature",
                     "ReadingUnits": "Cel", "Reading": 81, "Status": {"State": "Enabled", "Health": "Warning"}})
            ),
            ("CPU #1".into(), Some(81.0), "celsius", "non_critical")
        );
        assert_eq!(
            r(
                json!({"Id": "FanBay1", "ReadingType": "Rotational", "ReadingUnits": "RPM", "Reading": 5400})
            ),
            ("FanBay1".into(), Some(5400.0), "rpm", "ok")
        );
        assert_eq!(
            r(json!({"Name": "PS1 Vin", "ReadingType": "Voltage", "Reading": 229.8})),
            ("PS1 Vin".into(), Some(229.8), "volts", "ok"),
            "no units: the reading type's"
        );
        assert_eq!(
            r(
                json!({"Name": "PS1 Energy", "ReadingType": "EnergykWh", "ReadingUnits": "kW.h", "Reading": 2.5})
            ),
            ("PS1 Energy".into(), Some(9.0e6), "joules", "ok")
        );
        assert_eq!(
            r(
                json!({"Name": "Fan %", "ReadingUnits": "%", "Reading": 40, "Status": {"Health": "Critical"}})
            ),
            ("Fan %".into(), Some(40.0), "percent", "critical")
        );
        assert_eq!(
            r(
                json!({"Name": "Airflow", "ReadingType": "AirFlow", "ReadingUnits": "[ft_i]3/min", "Reading": 12})
            ),
            ("Airflow".into(), Some(12.0), "other", "ok")
        );
        assert_eq!(
            r(json!({"Reading": 1})),
            ("sensor".into(), Some(1.0), "unspecified", "ok")
        );
    }

    #[test]
    fn absent_offline_or_null_sensors_have_no_value() {
        for s in [
            json!({"Name": "PS2", "ReadingUnits": "W", "Reading": null, "Status": {"State": "Absent"}}),
            json!({"Name": "PS2", "ReadingUnits": "W", "Reading": 300, "Status": {"State": "Absent"}}),
            json!({"Name": "PS2", "ReadingUnits": "W", "Reading": 300, "Status": {"State": "UnavailableOffline", "Health": "Critical"}}),
            json!({"Name": "PS2", "ReadingUnits": "W", "Reading": "300"}),
            json!({"Name": "PS2", "ReadingUnits": "W"}),
        ] {
            let r = sensor(&s);
            assert_eq!(
                (r.value, r.unit, r.state),
                (None, "watts", "unavailable"),
                "{s}"
            );
        }
    }

    #[test]
    fn members_are_told_from_links() {
        assert!(is_expanded(&json!({"@odata.id": "/x", "Reading": null})));
        assert!(!is_expanded(&json!({"@odata.id": "/x"})));
    }
}
