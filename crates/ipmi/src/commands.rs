//! Chassis commands, added through ipmi-rs-core's public `IpmiCommand` trait (the crate has
//! none); Get Device ID comes from ipmi-rs-core itself.

use ipmi_rs_core::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

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
    /// Power fault.
    pub power_fault: bool,
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
        Ok(ChassisStatus {
            power_on: current & 0x01 != 0,
            power_overload: current & 0x02 != 0,
            power_fault: current & 0x08 != 0,
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
    fn chassis_status_bits() {
        let s = GetChassisStatus::parse_success_response(&[0x01, 0x00, 0x40]).unwrap();
        assert!(s.power_on && !s.power_fault);
        assert!(GetChassisStatus::parse_success_response(&[0x01]).is_err());
        let m: Message = ChassisControl::SoftShutdown.into();
        assert_eq!(
            (m.netfn_raw(), m.cmd(), m.data()),
            (0x00, 0x02, &[0x05][..])
        );
    }
}
