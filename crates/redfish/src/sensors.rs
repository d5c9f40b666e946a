//! Readings out of a chassis' sensor resources, as pure functions over the service's JSON (the
//! client fetches, these only read): the older `Thermal` and `Power` resources (arrays of
//! temperatures, fans and power controls).
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
    /// One of the agent's sensor units: `celsius`, `rpm`, `percent` or `watts`.
    pub unit: &'static str,
    /// From the sensor's `Status.Health`: `ok`, `non_critical` (Warning), `critical`, or
    /// `unavailable` without a reading.
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
}
