//! Log services (`LogService`) and their entries (`LogEntry`): the typed values and pure
//! readers over the service's JSON; the client walks the collections.
//!
//! Entries are untrusted input: every text is bounded (a message to 1024 characters, the rest
//! to 128), a missing or mistyped property is left empty, and a time that is not RFC 3339 is no
//! time. The caller sanitizes the texts for wherever it shows them.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// Whose log it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogScope {
    /// A log service of the system (`/redfish/v1/Systems/{id}/LogServices`).
    System,
    /// A log service of the system's manager, the BMC itself.
    Manager,
}

/// What a log service holds (its `LogEntryType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// `SEL`: the IPMI system event log.
    Sel,
    /// `Event`: Redfish events.
    Event,
    /// `Multiple`: several kinds.
    Multiple,
    /// `OEM`, another kind, or not said.
    Other,
}

/// A log service, as [`crate::RedfishBmc::log_services`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogService {
    /// Whose log.
    pub scope: LogScope,
    /// Its `Id` (untrusted text, bounded).
    pub id: String,
    /// Its `Name` (untrusted text, bounded).
    pub name: String,
    /// What it holds.
    pub kind: LogKind,
    /// Whether it advertises `LogService.ClearLog`.
    pub can_clear: bool,
    /// Its Entries collection.
    pub(crate) entries: String,
    /// Its ClearLog action's target.
    pub(crate) clear: Option<String>,
}

/// An entry's `Severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// `OK`: informational.
    Ok,
    /// `Warning`.
    Warning,
    /// `Critical`.
    Critical,
}

impl Severity {
    /// `ok`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One entry of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its `Id`.
    pub id: String,
    /// When it was logged (`Created`); `None` when not given or not RFC 3339.
    pub created: Option<SystemTime>,
    /// `Severity`; `None` when not given or not one of the three.
    pub severity: Option<Severity>,
    /// `Message`.
    pub message: String,
    /// `MessageId` (a registry key such as `Event.1.0.TempWayTooHot`, or an SEL event code).
    pub message_id: String,
    /// `SensorType` (for SEL entries, the IPMI sensor type: `Temperature`, `Fan`…).
    pub sensor_type: Option<String>,
    /// `SensorNumber`.
    pub sensor_number: Option<u32>,
    /// `Links.OriginOfCondition`: the path of the resource the entry is about.
    pub origin: Option<String>,
}

/// The entries of a log, as far as they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntries {
    /// In the service's order (oldest first on some services, newest first on others).
    pub entries: Vec<LogEntry>,
    /// Whether that is the whole log: false when the bound on entries or pages cut it short.
    pub complete: bool,
}

const MAX_MESSAGE: usize = 1024;
const MAX_TEXT: usize = 128;

fn text(v: &Value, pointer: &str, max: usize) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(|s| s.chars().take(max).collect())
}

/// A log service resource found in the collection of `scope`, if it has an Entries collection.
pub(crate) fn service(scope: LogScope, v: &Value) -> Option<LogService> {
    let entries = v.pointer("/Entries/@odata.id").and_then(Value::as_str)?;
    let clear = v
        .pointer("/Actions/#LogService.ClearLog/target")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let kind = match v.get("LogEntryType").and_then(Value::as_str) {
        Some("SEL") => LogKind::Sel,
        Some("Event") => LogKind::Event,
        Some("Multiple") => LogKind::Multiple,
        _ => LogKind::Other,
    };
    Some(LogService {
        scope,
        id: text(v, "/Id", MAX_TEXT).unwrap_or_default(),
        name: text(v, "/Name", MAX_TEXT).unwrap_or_default(),
        kind,
        can_clear: clear.is_some(),
        entries: entries.to_owned(),
        clear,
    })
}

/// Whether a collection member came expanded (the entry itself) rather than as a link to it.
pub(crate) fn is_expanded(member: &Value) -> bool {
    ["Created", "Message", "MessageId", "Severity", "EntryType"]
        .iter()
        .any(|k| member.get(*k).is_some())
}

/// A `LogEntry` resource.
pub(crate) fn entry(v: &Value) -> LogEntry {
    LogEntry {
        id: text(v, "/Id", MAX_TEXT).unwrap_or_default(),
        created: v.get("Created").and_then(Value::as_str).and_then(rfc3339),
        severity: match v.get("Severity").and_then(Value::as_str) {
            Some("OK") => Some(Severity::Ok),
            Some("Warning") => Some(Severity::Warning),
            Some("Critical") => Some(Severity::Critical),
            _ => None,
        },
        message: text(v, "/Message", MAX_MESSAGE).unwrap_or_default(),
        message_id: text(v, "/MessageId", MAX_TEXT).unwrap_or_default(),
        sensor_type: text(v, "/SensorType", MAX_TEXT),
        sensor_number: v
            .get("SensorNumber")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        origin: text(v, "/Links/OriginOfCondition/@odata.id", MAX_TEXT * 4),
    }
}

/// An RFC 3339 date-time (`2012-03-07T14:44:00Z`, `2015-03-13T04:14:33.25+06:00`), as Redfish
/// writes `Edm.DateTimeOffset`.
pub(crate) fn rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if sep(i, b".") {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, c) in b[i + 1..i + 1 + digits].iter().take(9).enumerate() {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - k as u32);
        }
        i += 1 + digits;
    }
    let offset = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && sep(i + 3, b":") => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    let whole = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(whole)?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(whole)?
    };
    t.checked_add(Duration::from_nanos(u64::from(nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339("2012-03-07T14:44:00Z"), at(1_331_131_440));
        assert_eq!(rfc3339("2012-03-07t14:44:00z"), at(1_331_131_440));
        assert_eq!(rfc3339("2015-03-13T04:14:33+06:00"), at(1_426_198_473));
        assert_eq!(rfc3339("2015-03-12T17:14:33-05:00"), at(1_426_198_473));
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), at(0));
        assert_eq!(rfc3339("2000-02-29T00:00:00Z"), at(951_782_400));
        assert_eq!(
            rfc3339("2012-03-07T14:44:00.25Z"),
            at(1_331_131_440).map(|t| t + Duration::from_millis(250))
        );
        assert_eq!(
            rfc3339("1969-12-31T23:59:59Z"),
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(1))
        );
    }

    #[test]
    fn not_rfc3339_is_no_time() {
        for s in [
            "",
            "2012-03-07",
            "2012-03-07T14:44:00",
            "2012-03-07T14:44Z",
            "2012-13-07T14:44:00Z",
            "2013-02-29T14:44:00Z",
            "2012-03-07T24:00:00Z",
            "2012-03-07T14:44:00+0600",
            "2012-03-07T14:44:00+06:00junk",
            "2012-03-07T14:44:00.Z",
            "2012/03/07T14:44:00Z",
            "+012-03-07T14:44:00Z",
            "２０１２-03-07T14:44:00Z",
        ] {
            assert_eq!(rfc3339(s), None, "{s}");
        }
    }

    #[test]
    fn an_sel_entry() {
        let e = entry(&json!({
            "@odata.id": "/redfish/v1/Systems/1/LogServices/SEL/Entries/1",
            "Id": "1",
            "EntryType": "SEL",
            "Severity": "Critical",
            "Created": "2012-03-07T14:44:00Z",
            "SensorType": "Temperature",
            "SensorNumber": 1,
            "Message": "Temperature threshold exceeded",
            "MessageId": "0x592A28",
            "Links": {"OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/1U/Sensors/CPU1Temp"}}
        }));
        assert_eq!(
            e,
            LogEntry {
                id: "1".into(),
                created: at(1_331_131_440),
                severity: Some(Severity::Critical),
                message: "Temperature threshold exceeded".into(),
                message_id: "0x592A28".into(),
                sensor_type: Some("Temperature".into()),
                sensor_number: Some(1),
                origin: Some("/redfish/v1/Chassis/1U/Sensors/CPU1Temp".into()),
            }
        );
    }

    #[test]
    fn odd_entries_are_read_as_far_as_they_go() {
        let e = entry(&json!({
            "Id": 7,
            "Severity": "Informational",
            "Created": "yesterday",
            "SensorNumber": -1,
            "Message": "x".repeat(5000),
            "MessageId": ["no"],
            "Links": {"OriginOfCondition": "/not/a/link"}
        }));
        assert_eq!(e.id, "");
        assert_eq!((e.severity, e.created, e.sensor_number), (None, None, None));
        assert_eq!(e.message.len(), MAX_MESSAGE);
        assert_eq!((e.message_id.as_str(), e.origin), ("", None));
        assert_eq!(
            entry(&json!({"SensorNumber": 1u64 << 40})).sensor_number,
            None
        );
        assert_eq!(
            entry(&json!({"Severity": "Warning"})).severity,
            Some(Severity::Warning)
        );
    }

    #[test]
    fn log_services_and_their_actions() {
        let s = service(
            LogScope::System,
            &json!({
                "Id": "SEL", "Name": "System Event Log", "LogEntryType": "SEL",
                "Entries": {"@odata.id": "/redfish/v1/Systems/1/LogServices/SEL/Entries"},
                "Actions": {"#LogService.ClearLog": {
                    "target": "/redfish/v1/Systems/1/LogServices/SEL/Actions/LogService.ClearLog"}}
            }),
        )
        .unwrap();
        assert_eq!(
            (s.scope, s.id.as_str(), s.kind, s.can_clear),
            (LogScope::System, "SEL", LogKind::Sel, true)
        );
        let s = service(
            LogScope::Manager,
            &json!({"Id": "Log", "Entries": {"@odata.id": "/e"}}),
        )
        .unwrap();
        assert_eq!(
            (s.kind, s.can_clear, s.clear),
            (LogKind::Other, false, None)
        );
        assert_eq!(service(LogScope::System, &json!({"Id": "Dump"})), None);
    }

    #[test]
    fn members_are_told_from_links() {
        assert!(is_expanded(&json!({"@odata.id": "/e/1", "Message": "m"})));
        assert!(!is_expanded(&json!({"@odata.id": "/e/1"})));
    }
}
