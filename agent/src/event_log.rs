//! BMC event logs in one shape ([`LogEvent`]), whichever protocol they came from: the IPMI SEL
//! entries and Redfish log entries are converted here, and which Redfish log services make up
//! "the event log" is decided here.

use crate::fleet::LogEvent;

/// An IPMI SEL entry as a [`LogEvent`].
#[cfg(feature = "ipmi")]
pub fn from_sel(e: &conduit_ipmi::sel::SelEntry) -> LogEvent {
    use conduit_ipmi::sel::{sensor_type_name, SelEntry};
    let unix = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    };
    match e {
        SelEntry::System(s) => LogEvent {
            id: s.id.to_string(),
            time: unix(s.timestamp.to_system_time()),
            sensor: format!("{} #{}", sensor_type_name(s.sensor_type), s.sensor_number),
            event: s.describe(),
            severity: e.severity().label(),
        },
        SelEntry::Oem(o) => LogEvent {
            id: o.id.to_string(),
            time: unix(o.timestamp.and_then(|t| t.to_system_time())),
            sensor: "oem".into(),
            event: format!(
                "OEM record type {:#04x}: {}",
                o.record_type,
                o.raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            severity: e.severity().label(),
        },
    }
}

/// A Redfish log entry as a [`LogEvent`]: `OK` is `info`.
#[cfg(feature = "redfish")]
pub fn from_redfish(e: &conduit_redfish::LogEntry) -> LogEvent {
    use conduit_redfish::Severity;
    let sensor = match (&e.sensor_type, e.sensor_number) {
        (Some(t), Some(n)) => format!("{t} #{n}"),
        (Some(t), None) => t.clone(),
        (None, Some(n)) => format!("#{n}"),
        (None, None) => e.origin.clone().unwrap_or_default(),
    };
    let event = match (e.message.is_empty(), e.message_id.is_empty()) {
        (false, _) => e.message.clone(),
        (true, false) => e.message_id.clone(),
        (true, true) => String::new(),
    };
    LogEvent {
        id: e.id.clone(),
        time: e
            .created
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
        sensor,
        event,
        severity: match e.severity {
            Some(Severity::Ok) => "info",
            Some(Severity::Warning) => "warning",
            Some(Severity::Critical) => "critical",
            None => "unknown",
        },
    }
}

/// The Redfish log services that are the event log: those of kind SEL (the system's or the
/// BMC's), else every log service of the system.
#[cfg(feature = "redfish")]
pub fn event_services(all: Vec<conduit_redfish::LogService>) -> Vec<conduit_redfish::LogService> {
    use conduit_redfish::{LogKind, LogScope};
    if all.iter().any(|s| s.kind == LogKind::Sel) {
        all.into_iter().filter(|s| s.kind == LogKind::Sel).collect()
    } else {
        all.into_iter()
            .filter(|s| s.scope == LogScope::System)
            .collect()
    }
}
