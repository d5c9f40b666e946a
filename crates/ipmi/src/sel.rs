//! The System Event Log (IPMI 2.0 §31): Get SEL Info, the whole log read entry by entry,
//! Clear SEL, and each entry parsed into a typed value.
//!
//! # Reading
//!
//! Entries form a chain like SDR records (each Get SEL Entry answer names the next ID), and a
//! log holds up to a few thousand. Each round is one batch ([`IpmiBmc::request_batch`]): the
//! entry the chain names next and, once its ID is known, the IDs after it, which most BMCs
//! number consecutively; a guess counts only once the chain reaches it, and a few misses in a
//! row stop guessing. Whole entries are asked for (16 bytes, reservation 0: a whole-record
//! read needs none). The loop ends at the end of the chain, at an entry seen before, or after
//! [`MAX_ENTRIES`].
//!
//! # Severity
//!
//! [`SystemEvent::severity`] reads the event the way an operator would sort it:
//!
//! - a deassertion (the condition went away) is [`Severity::Info`];
//! - threshold events (event type 0x01): crossing a non-critical threshold is
//!   [`Severity::Warning`], a critical or non-recoverable one [`Severity::Critical`];
//! - the generic "severity" states (event type 0x07): to non-critical is a warning, to
//!   critical or non-recoverable critical, back to OK, monitor and informational info;
//!   predictive failure (0x04) and limit exceeded (0x05) asserted are warnings;
//! - sensor-specific events (event type 0x6F) by sensor type and offset, for the ones that
//!   say a part failed or is failing: processor (IERR, thermal trip, configuration error
//!   critical; FRB failures, throttling warnings), power supply (failure, input lost critical;
//!   predictive failure, configuration error warnings), memory (uncorrectable ECC, parity,
//!   scrub failure, configuration error, critical overtemperature critical; correctable ECC,
//!   its logging limit, device disabled, throttled warnings), critical interrupt (bus errors
//!   critical, front-panel NMI warning), chipset errors critical, OS critical stop critical,
//!   watchdog (resets, power down or cycle critical; expiry, pre-timeout interrupt warnings),
//!   chassis intrusion warning, event log full or almost full warning;
//! - everything else (presence, state changes, OEM event types) is info.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::client::{IpmiError, Request};
use super::commands::Timestamp;
use super::sdr::query;
use super::{IpmiBmc, Queries};

const NETFN_STORAGE: u8 = 0x0A;
const CMD_GET_SEL_INFO: u8 = 0x40;
const CMD_RESERVE_SEL: u8 = 0x42;
const CMD_GET_SEL_ENTRY: u8 = 0x43;
const CMD_CLEAR_SEL: u8 = 0x47;
const CC_NOT_PRESENT: u8 = 0xCB;
const CC_RESERVATION_CANCELLED: u8 = 0xC5;
/// Most entries read from one log: a loop guard (a 64 KiB log holds 4096).
pub const MAX_ENTRIES: usize = 8192;
/// Erase-status polls of a Clear SEL before giving up, and the pause between them.
const ERASE_POLLS: u32 = 50;
const ERASE_POLL_EVERY: Duration = Duration::from_millis(100);

/// Get SEL Info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelInfo {
    /// SEL version (0x51).
    pub version: u8,
    /// Entries in the log.
    pub entries: u16,
    /// Free space in bytes.
    pub free_bytes: u16,
    /// When an entry was last added.
    pub last_addition: Timestamp,
    /// When the log was last erased.
    pub last_erase: Timestamp,
    /// Operation support bits (bit 7: overflow; 3: delete, 2: partial add, 1: reserve,
    /// 0: get allocation info supported).
    pub operations: u8,
}

impl SelInfo {
    /// Parses the response data (after the completion code).
    pub fn parse(d: &[u8]) -> Result<SelInfo, IpmiError> {
        if d.len() < 14 {
            return Err(IpmiError::Malformed("get sel info"));
        }
        Ok(SelInfo {
            version: d[0],
            entries: u16::from_le_bytes([d[1], d[2]]),
            free_bytes: u16::from_le_bytes([d[3], d[4]]),
            last_addition: Timestamp::from_le([d[5], d[6], d[7], d[8]]),
            last_erase: Timestamp::from_le([d[9], d[10], d[11], d[12]]),
            operations: d[13],
        })
    }

    /// Events were dropped because the log was full.
    pub fn overflow(&self) -> bool {
        self.operations & 0x80 != 0
    }

    /// The BMC supports Reserve SEL.
    pub fn supports_reserve(&self) -> bool {
        self.operations & 0x02 != 0
    }
}

/// How much an event matters; see the module docs for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Nothing to act on (a deassertion, a state change, presence, OEM).
    Info,
    /// Degraded or about to fail: a non-critical threshold, correctable errors.
    Warning,
    /// Failed, or out of safe limits: critical and non-recoverable thresholds, uncorrectable
    /// errors, critical stops.
    Critical,
}

impl Severity {
    /// A bounded label: `info`, `warning`, `critical`.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The name of an IPMI sensor type (IPMI 2.0 table 42-3), spelt as FreeIPMI's tools print it
/// (ipmi-sensors' "Type" column, which ipmi_exporter puts in its `type` label): `OEM
/// Reserved` for OEM codes, `Reserved` beyond the table.
pub fn sensor_type_name(code: u8) -> &'static str {
    const NAMES: [&str; 0x2D] = [
        "Reserved",
        "Temperature",
        "Voltage",
        "Current",
        "Fan",
        "Physical Security",
        "Platform Security",
        "Processor",
        "Power Supply",
        "Power Unit",
        "Cooling Device",
        "Other Units Based Sensor",
        "Memory",
        "Drive Slot",
        "POST Memory Resize",
        "System Firmware Progress",
        "Event Logging Disabled",
        "Watchdog 1",
        "System Event",
        "Critical Interrupt",
        "Button/Switch",
        "Module/Board",
        "Microcontroller/Coprocessor",
        "Add In Card",
        "Chassis",
        "Chip Set",
        "Other FRU",
        "Cable/Interconnect",
        "Terminator",
        "System Boot Initiated",
        "Boot Error",
        "OS Boot",
        "OS Critical Stop",
        "Slot/Connector",
        "System ACPI Power State",
        "Watchdog 2",
        "Platform Alert",
        "Entity Presence",
        "Monitor ASIC/IC",
        "LAN",
        "Management Subsystem Health",
        "Battery",
        "Session Audit",
        "Version Change",
        "FRU State",
    ];
    match code {
        0xC0..=0xFF => "OEM Reserved",
        c => NAMES.get(usize::from(c)).copied().unwrap_or("Reserved"),
    }
}

impl SystemEvent {
    /// What happened, in words: the threshold crossed for threshold sensors (table 42-2),
    /// else the event type and offset; then whether it was asserted or deasserted.
    pub fn describe(&self) -> String {
        const THRESHOLDS: [&str; 12] = [
            "lower non-critical going low",
            "lower non-critical going high",
            "lower critical going low",
            "lower critical going high",
            "lower non-recoverable going low",
            "lower non-recoverable going high",
            "upper non-critical going low",
            "upper non-critical going high",
            "upper critical going low",
            "upper critical going high",
            "upper non-recoverable going low",
            "upper non-recoverable going high",
        ];
        let what = match (self.event_type, THRESHOLDS.get(usize::from(self.offset()))) {
            (0x01, Some(t)) => (*t).to_owned(),
            (t, _) => format!("event type {t:#04x} offset {}", self.offset()),
        };
        let dir = if self.deassertion {
            "deasserted"
        } else {
            "asserted"
        };
        format!("{what} {dir}")
    }
}

/// A system event record (record type 0x02).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemEvent {
    /// Record ID.
    pub id: u16,
    /// When the BMC logged it.
    pub timestamp: Timestamp,
    /// Generator ID: slave address or software ID (bits 7:0) and channel, LUN (bits 15:8).
    pub generator: u16,
    /// Event message format revision (0x04 for IPMI 2.0).
    pub evm_revision: u8,
    /// Sensor type (IPMI 2.0 table 42-3: 0x01 temperature, 0x07 processor, 0x0C memory, …).
    pub sensor_type: u8,
    /// Sensor number.
    pub sensor_number: u8,
    /// The event was a deassertion (the condition ended).
    pub deassertion: bool,
    /// Event/reading type (0x01 threshold, 0x02-0x0C generic, 0x6F sensor-specific, 0x70-0x7F
    /// OEM).
    pub event_type: u8,
    /// Event data 1 to 3 (data 1 bits 3:0: the offset, the state that changed).
    pub event_data: [u8; 3],
}

impl SystemEvent {
    /// The event offset (event data 1 bits 3:0): which threshold or state.
    pub fn offset(&self) -> u8 {
        self.event_data[0] & 0x0F
    }

    /// How much the event matters; see the module docs.
    pub fn severity(&self) -> Severity {
        if self.deassertion {
            return Severity::Info;
        }
        state_severity(self.event_type, self.sensor_type, self.offset())
    }
}

/// How much it matters that state `offset` of a sensor is asserted, by its event/reading type
/// and sensor type (see the module docs): what a SEL event's assertion says, and what a
/// discrete sensor's current reading says for each state it has asserted.
pub fn state_severity(event_type: u8, sensor_type: u8, offset: u8) -> Severity {
    use Severity::*;
    match event_type {
        0x01 => match offset {
            0x0 | 0x1 | 0x6 | 0x7 => Warning,
            0x2..=0x5 | 0x8..=0xB => Critical,
            _ => Info,
        },
        0x07 => match offset {
            0x1 | 0x4 => Warning,
            0x2 | 0x3 | 0x5 | 0x6 => Critical,
            _ => Info,
        },
        0x04 | 0x05 if offset == 0x1 => Warning,
        0x6F => sensor_specific(sensor_type, offset),
        _ => Info,
    }
}

fn sensor_specific(sensor_type: u8, offset: u8) -> Severity {
    use Severity::*;
    match (sensor_type, offset) {
        // Physical security: general chassis intrusion.
        (0x05, 0x0) => Warning,
        // Processor: IERR, thermal trip, configuration error; FRB1-3, throttled.
        (0x07, 0x0 | 0x1 | 0x5) => Critical,
        (0x07, 0x2..=0x4 | 0xA) => Warning,
        // Power supply: failure, input lost (AC/DC or out of range); predictive failure,
        // configuration error.
        (0x08, 0x1 | 0x3..=0x5) => Critical,
        (0x08, 0x2 | 0x6) => Warning,
        // Memory: uncorrectable ECC, parity, scrub failed, configuration error, critical
        // overtemperature; correctable ECC, device disabled, logging limit, throttled.
        (0x0C, 0x1..=0x3 | 0x7 | 0xA) => Critical,
        (0x0C, 0x0 | 0x4 | 0x5 | 0x9) => Warning,
        // Event logging: log full, almost full.
        (0x10, 0x4 | 0x5) => Warning,
        // Critical interrupt: front-panel NMI; bus and PCI errors.
        (0x13, 0x0) => Warning,
        (0x13, _) => Critical,
        // Chipset errors.
        (0x19, _) => Critical,
        // OS stop: critical stop during boot or at run time (panic, blue screen).
        (0x20, 0x0 | 0x1) => Critical,
        // Watchdog 2: expired (status only), pre-timeout interrupt; reset, power down, cycle.
        (0x23, 0x0 | 0x8) => Warning,
        (0x23, 0x1..=0x3) => Critical,
        _ => Info,
    }
}

/// An OEM or unknown record, kept raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OemRecord {
    /// Record ID.
    pub id: u16,
    /// Record type: 0xC0-0xDF OEM timestamped, 0xE0-0xFF OEM non-timestamped; other types
    /// are not defined by IPMI 2.0.
    pub record_type: u8,
    /// The timestamp of a timestamped OEM record (0xC0-0xDF).
    pub timestamp: Option<Timestamp>,
    /// The 13 bytes after the record type (for a timestamped one: timestamp, manufacturer
    /// ID, OEM data).
    pub raw: [u8; 13],
}

/// One SEL entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelEntry {
    /// A standard system event.
    System(SystemEvent),
    /// Anything else, raw.
    Oem(OemRecord),
}

impl SelEntry {
    /// Parses the 16 bytes of an entry.
    pub fn parse(r: &[u8]) -> Result<SelEntry, IpmiError> {
        let r: &[u8; 16] = r
            .get(..16)
            .and_then(|r| r.try_into().ok())
            .ok_or(IpmiError::Malformed("get sel entry"))?;
        let id = u16::from_le_bytes([r[0], r[1]]);
        let ts = Timestamp::from_le([r[3], r[4], r[5], r[6]]);
        if r[2] == 0x02 {
            return Ok(SelEntry::System(SystemEvent {
                id,
                timestamp: ts,
                generator: u16::from_le_bytes([r[7], r[8]]),
                evm_revision: r[9],
                sensor_type: r[10],
                sensor_number: r[11],
                deassertion: r[12] & 0x80 != 0,
                event_type: r[12] & 0x7F,
                event_data: [r[13], r[14], r[15]],
            }));
        }
        let mut raw = [0u8; 13];
        raw.copy_from_slice(&r[3..]);
        Ok(SelEntry::Oem(OemRecord {
            id,
            record_type: r[2],
            timestamp: (0xC0..=0xDF).contains(&r[2]).then_some(ts),
            raw,
        }))
    }

    /// The record ID.
    pub fn id(&self) -> u16 {
        match self {
            SelEntry::System(e) => e.id,
            SelEntry::Oem(o) => o.id,
        }
    }

    /// The severity: a system event's ([`SystemEvent::severity`]); OEM records are info.
    pub fn severity(&self) -> Severity {
        match self {
            SelEntry::System(e) => e.severity(),
            SelEntry::Oem(_) => Severity::Info,
        }
    }
}

/// Get SEL Info.
pub async fn sel_info(q: &impl Queries) -> Result<SelInfo, IpmiError> {
    SelInfo::parse(&query(q, "get sel info", NETFN_STORAGE, CMD_GET_SEL_INFO, &[]).await?)
}

/// Reserve SEL: a reservation for Clear SEL (and partial reads).
pub async fn reserve_sel(q: &impl Queries) -> Result<[u8; 2], IpmiError> {
    let r = query(q, "reserve sel", NETFN_STORAGE, CMD_RESERVE_SEL, &[]).await?;
    r.get(..2)
        .map(|b| [b[0], b[1]])
        .ok_or(IpmiError::Malformed("reserve sel"))
}

/// Reads every entry of the log, oldest first; see the module docs.
pub async fn read_sel(q: &impl Queries) -> Result<Vec<SelEntry>, IpmiError> {
    let what = "get sel entry";
    let mut cursor = 0u16;
    let mut fetched: BTreeMap<u16, (u16, SelEntry)> = BTreeMap::new();
    let mut absent = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut entries = Vec::new();
    let mut misses = 0;
    let window = q.window().max(1);
    // Each round takes an entry or learns a guess is wrong (bounded by MAX_ENTRIES guesses).
    for _ in 0..3 * MAX_ENTRIES {
        // The next ID the chain names, then guesses after it (not while the first ID is
        // unknown: ID 0 means "the first entry", whatever its ID).
        let mut ids = vec![(cursor, false)];
        if cursor != 0 && misses < 2 * window {
            let mut id = cursor;
            while ids.len() < window && id < 0xFFFE {
                id += 1;
                if !fetched.contains_key(&id) && !absent.contains(&id) {
                    ids.push((id, true));
                }
            }
        }
        let reqs: Vec<Request> = ids
            .iter()
            .map(|&(id, _)| {
                let [lo, hi] = id.to_le_bytes();
                Request {
                    netfn: NETFN_STORAGE,
                    cmd: CMD_GET_SEL_ENTRY,
                    data: vec![0, 0, lo, hi, 0, 0xFF],
                }
            })
            .collect();
        for (&(id, guess), (code, data)) in ids.iter().zip(q.batch(what, &reqs).await?) {
            match code {
                0 => {}
                // Nothing at ID 0: the log is empty.
                CC_NOT_PRESENT if id == 0 && entries.is_empty() => return Ok(entries),
                _ if guess => {
                    absent.insert(id);
                    misses += 1;
                    continue;
                }
                code => return Err(IpmiError::Completion { what, code }),
            }
            if data.len() < 18 {
                return Err(IpmiError::Malformed(what));
            }
            let next = u16::from_le_bytes([data[0], data[1]]);
            if guess {
                misses = 0;
            }
            fetched.insert(id, (next, SelEntry::parse(&data[2..])?));
        }
        while let Some((next, entry)) = fetched.remove(&cursor) {
            if !seen.insert(entry.id()) || entries.len() >= MAX_ENTRIES {
                return Ok(entries);
            }
            // Asked for as ID 0, the first entry may have been guessed under its own ID.
            fetched.remove(&entry.id());
            entries.push(entry);
            if next == 0xFFFF || next == cursor {
                return Ok(entries);
            }
            cursor = next;
        }
    }
    Err(IpmiError::Malformed(what))
}

/// Clears the log: reserves it, initiates the erase, then polls the erase status until the
/// BMC says it is complete (at most 50 polls, 100 ms apart). A reservation cancelled while
/// polling (some BMCs cancel it when the erase ends) is renewed.
pub async fn clear_sel(bmc: &IpmiBmc) -> Result<(), IpmiError> {
    let what = "clear sel";
    let clear =
        |reservation: [u8; 2], op: u8| [reservation[0], reservation[1], b'C', b'L', b'R', op];
    let mut reservation = reserve_sel(bmc).await?;
    // Not sent twice on a new session: a BMC that took the first copy would refuse the
    // second's reservation, and the failure would hide that the log is clear.
    let r = bmc
        .request(
            what,
            NETFN_STORAGE,
            CMD_CLEAR_SEL,
            &clear(reservation, 0xAA),
            false,
        )
        .await?;
    if erase_done(&r)? {
        return Ok(());
    }
    for _ in 0..ERASE_POLLS {
        async_io::Timer::after(ERASE_POLL_EVERY).await;
        match bmc
            .request(
                what,
                NETFN_STORAGE,
                CMD_CLEAR_SEL,
                &clear(reservation, 0x00),
                true,
            )
            .await
        {
            Ok(r) if erase_done(&r)? => return Ok(()),
            Ok(_) => {}
            Err(IpmiError::Completion {
                code: CC_RESERVATION_CANCELLED,
                ..
            }) => reservation = reserve_sel(bmc).await?,
            Err(e) => return Err(e),
        }
    }
    Err(IpmiError::Timeout("clear sel: erase still in progress"))
}

/// Whether a Clear SEL answer says the erase is complete (bits 3:0 = 1).
fn erase_done(r: &[u8]) -> Result<bool, IpmiError> {
    let b = r.first().ok_or(IpmiError::Malformed("clear sel"))?;
    Ok(b & 0x0F == 0x01)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_type_names() {
        assert_eq!(sensor_type_name(0x01), "Temperature");
        assert_eq!(sensor_type_name(0x08), "Power Supply");
        assert_eq!(sensor_type_name(0x2C), "FRU State");
        assert_eq!(sensor_type_name(0x2D), "Reserved");
        assert_eq!(sensor_type_name(0xC5), "OEM Reserved");
    }
    use futures_lite::future::block_on;
    use std::cell::{Cell, RefCell};

    fn event(id: u16, sensor_type: u8, dir_type: u8, data1: u8) -> [u8; 16] {
        let [lo, hi] = id.to_le_bytes();
        [
            lo,
            hi,
            0x02,
            0x10,
            0x32,
            0x54,
            0x76,
            0x20,
            0x00,
            0x04,
            sensor_type,
            0x07,
            dir_type,
            data1,
            0xFF,
            0xFF,
        ]
    }

    #[test]
    fn system_event_records_parse() {
        // Upper critical going high on temperature sensor 7, asserted.
        let e = SelEntry::parse(&event(0x0102, 0x01, 0x01, 0x59)).unwrap();
        let SelEntry::System(s) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            s,
            SystemEvent {
                id: 0x0102,
                timestamp: Timestamp(0x7654_3210),
                generator: 0x0020,
                evm_revision: 0x04,
                sensor_type: 0x01,
                sensor_number: 0x07,
                deassertion: false,
                event_type: 0x01,
                event_data: [0x59, 0xFF, 0xFF],
            }
        );
        assert_eq!(s.offset(), 0x9);
        assert_eq!(e.severity(), Severity::Critical);
        // The same, deasserted.
        let e = SelEntry::parse(&event(1, 0x01, 0x81, 0x59)).unwrap();
        assert_eq!(e.severity(), Severity::Info);
        assert!(SelEntry::parse(&event(1, 1, 1, 1)[..15]).is_err());
    }

    #[test]
    fn oem_records_are_kept_raw() {
        let mut r = [0u8; 16];
        r[..3].copy_from_slice(&[0x05, 0x00, 0xC1]);
        r[3..7].copy_from_slice(&0x6000_0000u32.to_le_bytes());
        r[7..].copy_from_slice(&[0x57, 0x01, 0x00, 1, 2, 3, 4, 5, 6]);
        let SelEntry::Oem(o) = SelEntry::parse(&r).unwrap() else {
            panic!()
        };
        assert_eq!(o.record_type, 0xC1);
        assert_eq!(o.timestamp, Some(Timestamp(0x6000_0000)));
        assert_eq!(o.raw[..], r[3..]);
        r[2] = 0xE0;
        let e = SelEntry::parse(&r).unwrap();
        assert!(matches!(
            e,
            SelEntry::Oem(OemRecord {
                timestamp: None,
                ..
            })
        ));
        assert_eq!((e.id(), e.severity()), (5, Severity::Info));
    }

    #[test]
    fn severities() {
        use Severity::*;
        let sev = |sensor_type, dir_type, data1| {
            SelEntry::parse(&event(1, sensor_type, dir_type, data1))
                .unwrap()
                .severity()
        };
        // Thresholds: lower non-critical going low, upper non-critical going high; lower
        // critical, upper non-recoverable.
        assert_eq!(sev(0x01, 0x01, 0x00), Warning);
        assert_eq!(sev(0x01, 0x01, 0x07), Warning);
        assert_eq!(sev(0x01, 0x01, 0x02), Critical);
        assert_eq!(sev(0x01, 0x01, 0x0B), Critical);
        // Memory: correctable ECC, uncorrectable ECC; presence.
        assert_eq!(sev(0x0C, 0x6F, 0x00), Warning);
        assert_eq!(sev(0x0C, 0x6F, 0x01), Critical);
        assert_eq!(sev(0x0C, 0x6F, 0x06), Info);
        // Power supply failure; processor IERR; OS critical stop; log cleared.
        assert_eq!(sev(0x08, 0x6F, 0x01), Critical);
        assert_eq!(sev(0x07, 0x6F, 0x00), Critical);
        assert_eq!(sev(0x20, 0x6F, 0x01), Critical);
        assert_eq!(sev(0x10, 0x6F, 0x02), Info);
        // Generic severity states; predictive failure asserted; OEM event type.
        assert_eq!(sev(0x04, 0x07, 0x01), Warning);
        assert_eq!(sev(0x04, 0x07, 0x02), Critical);
        assert_eq!(sev(0x04, 0x07, 0x00), Info);
        assert_eq!(sev(0x08, 0x04, 0x01), Warning);
        assert_eq!(sev(0x01, 0x70, 0x01), Info);
        assert_eq!(Critical.label(), "critical");
        assert!(Critical > Warning && Warning > Info);
    }

    #[test]
    fn sel_info_parses() {
        // ipmi_sim with an empty log of 1000 entries.
        let d = [
            0x51, 0x00, 0x00, 0x80, 0x3e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a,
        ];
        let i = SelInfo::parse(&d).unwrap();
        assert_eq!((i.entries, i.free_bytes), (0, 16000));
        assert_eq!(i.last_addition, Timestamp::UNSPECIFIED);
        assert!(i.supports_reserve() && !i.overflow());
        assert!(SelInfo::parse(&d[..10]).is_err());
    }

    /// A log in-process: Get SEL Entry from its entries (IDs as given).
    struct Fake {
        entries: Vec<[u8; 16]>,
        reads: Cell<usize>,
        batches: RefCell<Vec<usize>>,
    }

    impl Queries for Fake {
        async fn batch(
            &self,
            _what: &'static str,
            reqs: &[Request],
        ) -> Result<Vec<(u8, Vec<u8>)>, IpmiError> {
            self.batches.borrow_mut().push(reqs.len());
            Ok(reqs
                .iter()
                .map(|r| {
                    assert_eq!((r.netfn, r.cmd), (NETFN_STORAGE, CMD_GET_SEL_ENTRY));
                    self.reads.set(self.reads.get() + 1);
                    let id = u16::from_le_bytes([r.data[2], r.data[3]]);
                    let at = if id == 0 {
                        (!self.entries.is_empty()).then_some(0)
                    } else {
                        self.entries
                            .iter()
                            .position(|e| u16::from_le_bytes([e[0], e[1]]) == id)
                    };
                    let Some(at) = at else {
                        return (CC_NOT_PRESENT, vec![]);
                    };
                    let next = self
                        .entries
                        .get(at + 1)
                        .map_or(0xFFFF, |e| u16::from_le_bytes([e[0], e[1]]));
                    let mut out = next.to_le_bytes().to_vec();
                    out.extend_from_slice(&self.entries[at]);
                    (0, out)
                })
                .collect())
        }

        fn window(&self) -> usize {
            8
        }
    }

    fn fake(ids: impl IntoIterator<Item = u16>) -> Fake {
        Fake {
            entries: ids.into_iter().map(|id| event(id, 1, 1, 7)).collect(),
            reads: Cell::new(0),
            batches: RefCell::new(Vec::new()),
        }
    }

    #[test]
    fn a_long_log_is_read_in_batches() {
        let f = fake(1..=100);
        let entries = block_on(read_sel(&f)).unwrap();
        let ids: Vec<u16> = entries.iter().map(SelEntry::id).collect();
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
        // One alone (ID 0), then 8 a batch; a few guesses past the end.
        assert!(
            f.batches.borrow().len() <= 1 + 100 / 8 + 1,
            "{:?}",
            f.batches
        );
        assert!(f.reads.get() <= 100 + 8 + 1, "{}", f.reads.get());
    }

    #[test]
    fn gaps_empty_logs_and_loops() {
        // IDs with gaps (entries deleted): guesses miss, then stop.
        let f = fake((1..=30).map(|i| i * 3));
        let ids: Vec<u16> = block_on(read_sel(&f))
            .unwrap()
            .iter()
            .map(SelEntry::id)
            .collect();
        assert_eq!(ids, (1..=30).map(|i| i * 3).collect::<Vec<_>>());
        assert!(f.reads.get() < 30 * 3, "{}", f.reads.get());
        assert!(block_on(read_sel(&fake([]))).unwrap().is_empty());
        // Entry 2 names entry 1 as its next.
        let f = fake([1, 2, 1]);
        assert_eq!(block_on(read_sel(&f)).unwrap().len(), 2);
    }
}
