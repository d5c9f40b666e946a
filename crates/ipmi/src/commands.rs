//! Chassis commands, added through ipmi-rs-core's public `IpmiCommand` trait (the crate has
//! none); Get Device ID comes from ipmi-rs-core itself. Also the typed values several
//! commands share ([`Timestamp`]).

use std::time::{Duration, SystemTime};

use ipmi_rs_core::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

/// An IPMI timestamp (IPMI 2.0 §37): seconds since 1970-01-01 UTC, or, at or below
/// [`Timestamp::INIT_LIMIT`], seconds since the BMC started (its clock was not set yet).
/// Kept raw: repository and log timestamps are compared for equality more than read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u32);

impl Timestamp {
    /// "Unspecified": the BMC has no such time (nothing added or erased yet).
    pub const UNSPECIFIED: Timestamp = Timestamp(0xFFFF_FFFF);
    /// Values up to this one count from the BMC's initialization, not from 1970.
    pub const INIT_LIMIT: u32 = 0x2000_0000;

    /// From four little-endian bytes.
    pub fn from_le(b: [u8; 4]) -> Timestamp {
        Timestamp(u32::from_le_bytes(b))
    }

    /// The wall-clock time, when this is one (not unspecified, not relative to the BMC's
    /// start).
    pub fn to_system_time(self) -> Option<SystemTime> {
        if self == Timestamp::UNSPECIFIED || self.0 <= Timestamp::INIT_LIMIT {
            return None;
        }
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(self.0)))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0xFFFF_FFFF => f.write_str("unspecified"),
            s if s <= Timestamp::INIT_LIMIT => write!(f, "{s} s after BMC start"),
            s => write!(f, "{s} s since 1970"),
        }
    }
}

/// Get Chassis Status (Chassis netFn, 0x01).
#[derive(Debug, Clone, Copy)]
pub struct GetChassisStatus;

/// The parts of Get Chassis Status the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    /// System power is on.
    pub power_on: bool,
    /// Power overload.
    pub power_overload: bool,
    /// Main power fault, or a fault in power control (current power state bits 3, 4).
    pub power_fault: bool,
    /// Power interlock active (bit 2): a cover open cut the power.
    pub power_interlock: bool,
    /// Drive fault (misc chassis state, bit 2).
    pub drive_fault: bool,
    /// Cooling or fan fault (misc chassis state, bit 3): IPMI has one bit for both.
    pub cooling_fault: bool,
}

impl From<GetChassisStatus> for Message {
    fn from(_: GetChassisStatus) -> Message {
        Message::new_request(NetFn::Chassis, 0x01, Vec::new())
    }
}

impl IpmiCommand for GetChassisStatus {
    type Output = ChassisStatus;
    type Error = NotEnoughData;

    fn parse_success_response(data: &[u8]) -> Result<ChassisStatus, NotEnoughData> {
        let current = *data.first().ok_or(NotEnoughData)?;
        if data.len() < 3 {
            return Err(NotEnoughData);
        }
        let misc = data[2];
        Ok(ChassisStatus {
            power_on: current & 0x01 != 0,
            power_overload: current & 0x02 != 0,
            power_fault: current & 0x18 != 0,
            power_interlock: current & 0x04 != 0,
            drive_fault: misc & 0x04 != 0,
            cooling_fault: misc & 0x08 != 0,
        })
    }
}

/// Chassis Control actions (Chassis netFn, 0x02).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisControl {
    /// Power down (hard off).
    PowerDown,
    /// Power up.
    PowerUp,
    /// Power cycle.
    PowerCycle,
    /// Hard reset.
    HardReset,
    /// Pulse a diagnostic interrupt (NMI) to the host.
    DiagnosticInterrupt,
    /// Soft shutdown via ACPI overtemperature emulation.
    SoftShutdown,
}

impl ChassisControl {
    fn code(self) -> u8 {
        match self {
            ChassisControl::PowerDown => 0x00,
            ChassisControl::PowerUp => 0x01,
            ChassisControl::PowerCycle => 0x02,
            ChassisControl::HardReset => 0x03,
            ChassisControl::DiagnosticInterrupt => 0x04,
            ChassisControl::SoftShutdown => 0x05,
        }
    }
}

impl From<ChassisControl> for Message {
    fn from(c: ChassisControl) -> Message {
        Message::new_request(NetFn::Chassis, 0x02, vec![c.code()])
    }
}

impl IpmiCommand for ChassisControl {
    type Output = ();
    type Error = NotEnoughData;

    fn parse_success_response(_: &[u8]) -> Result<(), NotEnoughData> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = Timestamp::from_le([0x00, 0x00, 0x00, 0x60]);
        assert_eq!(
            t.to_system_time(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(0x6000_0000))
        );
        assert_eq!(Timestamp(973).to_system_time(), None);
        assert_eq!(Timestamp(973).to_string(), "973 s after BMC start");
        assert_eq!(Timestamp::UNSPECIFIED.to_system_time(), None);
        assert_eq!(Timestamp::UNSPECIFIED.to_string(), "unspecified");
    }

    #[test]
    fn chassis_status_bits() {
        let s = GetChassisStatus::parse_success_response(&[0x01, 0x00, 0x40]).unwrap();
        assert!(s.power_on && !s.power_fault && !s.drive_fault && !s.cooling_fault);
        let s = GetChassisStatus::parse_success_response(&[0x10, 0x00, 0x0C]).unwrap();
        assert!(!s.power_on && s.power_fault && s.drive_fault && s.cooling_fault);
        assert!(GetChassisStatus::parse_success_response(&[0x01]).is_err());
        let m: Message = ChassisControl::SoftShutdown.into();
        assert_eq!(
            (m.netfn_raw(), m.cmd(), m.data()),
            (0x00, 0x02, &[0x05][..])
        );
    }
}
