//! Health roll-ups and power draw out of a service's JSON, as pure functions (the client
//! fetches, these only read): `Status.Health` of the system, its memory and processor
//! summaries, the chassis, its power supplies and fans, and the chassis' power consumption.
//!
//! Untrusted input: a missing or mistyped property is "not reported" (`None`), never an error.

use serde_json::Value;

/// A `Status.Health` value (Redfish `Resource.Health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// `OK`.
    Ok,
    /// `Warning`.
    Warning,
    /// `Critical`.
    Critical,
}

/// A part of the server whose health a service reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The computer system.
    System,
    /// Its chassis.
    Chassis,
    /// The power supplies (the worst of them).
    PowerSupply,
    /// The fans (the worst of them).
    Fan,
    /// Memory (the system's `MemorySummary`).
    Memory,
    /// Processors (the system's `ProcessorSummary`).
    Processor,
}

impl Component {
    /// A bounded label: `system`, `chassis`, `power_supply`, `fan`, `memory`, `processor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::System => "system",
            Component::Chassis => "chassis",
            Component::PowerSupply => "power_supply",
            Component::Fan => "fan",
            Component::Memory => "memory",
            Component::Processor => "processor",
        }
    }
}

/// The health `v` reports at `pointer` (e.g. `/Status/Health`).
fn at(v: &Value, pointer: &str) -> Option<Health> {
    match v.pointer(pointer)?.as_str()? {
        "OK" => Some(Health::Ok),
        "Warning" => Some(Health::Warning),
        "Critical" => Some(Health::Critical),
        _ => None,
    }
}

/// A resource's own health, or else its roll-up.
fn own(v: &Value) -> Option<Health> {
    at(v, "/Status/Health").or_else(|| at(v, "/Status/HealthRollup"))
}

/// A summary's roll-up (it covers every member), or else its own health.
fn rollup(v: &Value) -> Option<Health> {
    at(v, "/Status/HealthRollup").or_else(|| at(v, "/Status/Health"))
}

/// The worst health of the members of `list` that report one; `None` if none does. Absent
/// members (`Status.State` `Absent`) report nothing, whatever their `Health` says.
fn worst(list: Option<&Value>) -> Option<Health> {
    list?
        .as_array()?
        .iter()
        .filter(|m| m.pointer("/Status/State").and_then(Value::as_str) != Some("Absent"))
        .filter_map(own)
        .max()
}

/// Health of the system and of its memory and processor summaries.
pub fn system(sys: &Value) -> Vec<(Component, Health)> {
    [
        (Component::System, own(sys)),
        (Component::Memory, sys.get("MemorySummary").and_then(rollup)),
        (
            Component::Processor,
            sys.get("ProcessorSummary").and_then(rollup),
        ),
    ]
    .into_iter()
    .filter_map(|(c, h)| Some((c, h?)))
    .collect()
}

/// Health of the chassis.
pub fn chassis(ch: &Value) -> Option<Health> {
    own(ch)
}

/// The worst health of a `Power` resource's power supplies.
pub fn power_supplies(power: &Value) -> Option<Health> {
    worst(power.get("PowerSupplies"))
}

/// The worst health of a `Thermal` resource's fans.
pub fn fans(thermal: &Value) -> Option<Health> {
    worst(thermal.get("Fans"))
}

/// The roll-up of a `PowerSubsystem` or `ThermalSubsystem` (the newer model, which has its
/// supplies and fans in collections of their own).
pub fn subsystem(v: &Value) -> Option<Health> {
    rollup(v)
}

/// Watts the chassis draws: the first power control's `PowerConsumedWatts` of a `Power`
/// resource.
pub fn power_watts(power: &Value) -> Option<f64> {
    power
        .get("PowerControl")?
        .as_array()?
        .iter()
        .find_map(|c| c.get("PowerConsumedWatts").and_then(Value::as_f64))
}

/// Watts from an `EnvironmentMetrics` resource (`PowerWatts.Reading`), the newer model.
pub fn environment_watts(env: &Value) -> Option<f64> {
    env.pointer("/PowerWatts/Reading").and_then(Value::as_f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roll_ups_take_the_worst_present_member() {
        let sys = json!({
            "Status": {"Health": "OK", "HealthRollup": "Critical"},
            "MemorySummary": {"Status": {"Health": "OK", "HealthRollup": "Warning"}},
            "ProcessorSummary": {"Status": {"Health": "Sideways"}}
        });
        assert_eq!(
            system(&sys),
            [
                (Component::System, Health::Ok),
                (Component::Memory, Health::Warning)
            ]
        );
        let power = json!({
            "PowerSupplies": [
                {"Status": {"State": "Enabled", "Health": "OK"}},
                {"Status": {"State": "Absent", "Health": "Critical"}},
                {"Status": {"State": "Enabled", "Health": "Warning"}},
                "junk"
            ],
            "PowerControl": [{"Name": "x"}, {"PowerConsumedWatts": 344.5}]
        });
        assert_eq!(power_supplies(&power), Some(Health::Warning));
        assert_eq!(power_watts(&power), Some(344.5));
        assert_eq!(fans(&json!({"Fans": []})), None);
        assert_eq!(fans(&json!({"Fans": "no"})), None);
        assert_eq!(chassis(&json!({"Status": 3})), None);
        assert_eq!(
            environment_watts(&json!({"PowerWatts": {"Reading": 120}})),
            Some(120.0)
        );
        assert_eq!(
            subsystem(&json!({"Status": {"HealthRollup": "Critical"}})),
            Some(Health::Critical)
        );
    }
}
